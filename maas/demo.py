"""``maas demo``: the main job as a newcomer meets it. Trains an MLP on
scikit-learn's bundled digits, saves it into ./models/digits/<next version>/,
starts the server on 127.0.0.1:8080 (gunicorn, 2 workers), sends it one real
request, prints the answer and a curl line to paste, and serves until Ctrl-C.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np


def _train():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    import maas

    maas.utils.set_random_seed(0)
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, d.target, test_size=0.2, random_state=0,
                                                        stratify=d.target)
    model = maas.Sequential([maas.Input((64,), name="pixels"), maas.layers.Dense(128, activation="relu"),
                             maas.layers.Dense(10, activation="softmax")], name="digits")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=20, batch_size=32, verbose=2)
    _, acc = model.evaluate(x_test, y_test, verbose=0)
    print(f"test accuracy: {acc:.4f}")
    return model, x_test, y_test


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server did not become ready within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    import argparse

    import maas

    ap = argparse.ArgumentParser(prog="maas demo", description=__doc__)
    ap.add_argument("--repo", default="models", help="model repository folder (default ./models)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-wait", action="store_true", help="exit after the first answer (for tests)")
    a = ap.parse_args(argv)

    model, x_test, y_test = _train()
    path = maas.saving.save_to_repository(model, a.repo, "digits")
    print(f"saved {path}")
    from .cli import child_argv, child_env

    # not plain `python -m maas`: from a source checkout that would import the
    # checkout's maas/ (no built _core) instead of the installed package
    args = ["serve", a.repo, "--host", a.host, "--port", str(a.port), "--workers", str(a.workers)]
    print("starting: maas", " ".join(args))
    proc = subprocess.Popen(child_argv("maas", *args), env=child_env())
    url = f"http://{a.host}:{a.port}"
    try:
        _wait_ready(url, proc)
        body = json.dumps({"instances": x_test[:1].tolist(), "classes": True}).encode()
        req = urllib.request.Request(url + "/models/digits/predict", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            answer = json.loads(r.read())
        print(f"\nasked for the class of one test digit (label {int(y_test[0])}); the server answered:")
        print(json.dumps({"classes": answer.get("classes"), "model": answer.get("model"),
                          "version": answer.get("version")}))
        row = ", ".join(f"{v:g}" for v in x_test[0])
        print("\ntry it yourself:")
        print(f"curl -s {url}/models/digits/predict -H 'Content-Type: application/json' "
              f"-d '{{\"instances\": [[{row}]], \"classes\": true}}'")
        print(f"\nserving {url} (Open Inference Protocol at /v2, TF Serving at /v1); Ctrl-C stops")
        if a.no_wait:
            return 0
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0 if proc.returncode in (0, -signal.SIGTERM, None) or a.no_wait else proc.returncode


if __name__ == "__main__":
    sys.exit(main())
