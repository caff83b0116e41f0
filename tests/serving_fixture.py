"""Models for the serving tests (a test helper, not part of maas).

The tests against real servers (test_serving_server.py,
test_serving_hostile.py) and benchmarks/serve.py save real model files:
:func:`save_model` builds a ``maas.Sequential`` MLP with seeded weights and
writes it with ``maas.saving.save_to_repository`` as
``REPO/<name>/<version>/model.maas``, which the server loads with its
default loader (``maas.load_model``), as a user's server does.
:func:`load_slow` is that loader plus a sleep per forward pass, for the
drain tests. :func:`reference` is the float64 NumPy forward pass.

The in-process tests of test_serving_app.py also use a loader hook of
their own: :func:`save_version` writes only ``weights.npz``, which
:func:`load_npz` turns into a Sequential model whose predict replays a traced plan (:class:`PlanMLP`) or eager
ops (:class:`EagerMLP`); one of those tests checks that such a folder,
with no model.maas, is reported as not ready by the default loader.
"""
from __future__ import annotations

import os
import time

import numpy as np

import maas

IN, HIDDEN, OUT = 4, 16, 3


def weights(seed: int, n_in: int = IN, hidden: int = HIDDEN, n_out: int = OUT) -> dict:
    rng = np.random.default_rng(seed)
    return {"w1": rng.normal(0, 0.5, (n_in, hidden)).astype(np.float32),
            "b1": rng.normal(0, 0.1, hidden).astype(np.float32),
            "w2": rng.normal(0, 0.5, (hidden, n_out)).astype(np.float32),
            "b2": rng.normal(0, 0.1, n_out).astype(np.float32)}


class EagerMLP:
    """dense -> relu -> dense -> softmax with maas's eager ops."""

    def __init__(self, w):
        self.w = {k: maas.Variable(v) for k, v in w.items()}
        self.input_shape = (None, w["w1"].shape[0])
        self.output_shape = (None, w["w2"].shape[1])

    def predict(self, x, verbose=0):
        w = self.w
        h = maas.ops.relu(maas.ops.dense(maas.tensor(np.asarray(x, np.float32)), w["w1"], w["b1"]))
        return np.asarray(maas.ops.softmax(maas.ops.dense(h, w["w2"], w["b2"])))


class PlanMLP:
    """The same network as a Sequential model: its predict replays a traced
    plan, one C call per forward pass."""

    def __init__(self, w, delay: float = 0.0):
        self.model = maas.Sequential([
            maas.Input((w["w1"].shape[0],)), maas.layers.Dense(w["w1"].shape[1], activation="relu"),
            maas.layers.Dense(w["w2"].shape[1], activation="softmax")])
        self.model.set_weights([w[k] for k in ("w1", "b1", "w2", "b2")])
        self.input_shape = (None, w["w1"].shape[0])
        self.output_shape = (None, w["w2"].shape[1])
        self.delay = delay

    def predict(self, x, verbose=0):
        if self.delay:
            time.sleep(self.delay)  # to hold requests in flight (drain tests)
        return self.model.predict(np.asarray(x, np.float32), batch_size=max(len(x), 1), verbose=0)


def save_version(repo: str, name: str, version: int, seed: int, config: dict | None = None) -> str:
    """Writes REPO/name/version/weights.npz, renaming a hidden folder into
    place so that a polling server never sees it half-written."""
    import json

    mdir = os.path.join(repo, name)
    os.makedirs(mdir, exist_ok=True)
    if config is not None:
        with open(os.path.join(mdir, "config.json"), "w") as f:
            json.dump(config, f)
    tmp = os.path.join(mdir, f".tmp-{version}")
    os.makedirs(tmp, exist_ok=True)
    np.savez(os.path.join(tmp, "weights.npz"), **weights(seed))
    final = os.path.join(mdir, str(version))
    os.rename(tmp, final)
    return final


def build_model(seed: int, n_in: int = IN, hidden: int = HIDDEN, n_out: int = OUT):
    """The network of :func:`weights` as a maas.Sequential model."""
    w = weights(seed, n_in, hidden, n_out)
    model = maas.Sequential([maas.Input((n_in,), name="input"),
                             maas.layers.Dense(hidden, activation="relu"),
                             maas.layers.Dense(n_out, activation="softmax")], name=f"mlp{seed}")
    model.set_weights([w["w1"], w["b1"], w["w2"], w["b2"]])
    return model


def save_model(repo: str, name: str, version: int, seed: int, config: dict | None = None,
               **sizes) -> str:
    """Saves :func:`build_model` as REPO/name/version/model.maas (atomically,
    by ``maas.saving.save_to_repository``); returns the file's path."""
    import json

    if config is not None:
        os.makedirs(os.path.join(repo, name), exist_ok=True)
        with open(os.path.join(repo, name, "config.json"), "w") as f:
            json.dump(config, f)
    return maas.saving.save_to_repository(build_model(seed, **sizes), repo, name, version)


class SlowModel:
    """A loaded model whose every forward pass first sleeps."""

    def __init__(self, model, delay: float):
        self.model = model
        self.delay = delay
        self.inputs = model.inputs
        self.outputs = model.outputs

    def predict(self, x, verbose=0):
        time.sleep(self.delay)
        return self.model.predict(x, verbose=0)


def load_slow(path: str):
    """The default loader (``maas.load_model`` of ``path/model.maas``), each
    forward pass delayed by ``MAAS_TEST_DELAY`` seconds (default 0.5)."""
    from maas.serving.model import default_loader

    return SlowModel(default_loader(path), float(os.environ.get("MAAS_TEST_DELAY", "0.5") or 0.5))


def load_npz(path: str):
    """The loader hook: a version folder (or .npz file) -> a PlanMLP.
    ``MAAS_TEST_EAGER=1`` gives the eager-ops model instead;
    ``MAAS_TEST_DELAY=seconds`` slows each forward pass."""
    f = os.path.join(path, "weights.npz") if os.path.isdir(path) else path
    with np.load(f) as z:
        w = {k: z[k] for k in z.files}
    if os.environ.get("MAAS_TEST_EAGER") == "1":
        return EagerMLP(w)
    return PlanMLP(w, float(os.environ.get("MAAS_TEST_DELAY", "0") or 0))


def reference(seed: int, x) -> np.ndarray:
    """float64 NumPy forward pass of the same network, for checking."""
    w = {k: v.astype(np.float64) for k, v in weights(seed).items()}
    h = np.maximum(np.asarray(x, np.float64) @ w["w1"] + w["b1"], 0)
    z = h @ w["w2"] + w["b2"]
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------- real servers
TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes whose process group is ``pgid``."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(rest[2]) == pgid and rest[0] not in ("Z", "X"):
            out.append(int(d))
    return out


class Server:
    """``maas serve REPO`` in a subprocess on a free loopback port, in a
    process group of its own, ready when this returns. Readiness is polled
    until a generous deadline (a booting worker on a busy machine may take
    seconds, and may time a request out), catching every request error.
    :meth:`stop` always ends the whole group (master and workers), with
    SIGKILL after a grace period; use it in a ``finally`` (or as a context
    manager)."""

    BOOT_SECONDS = 120.0

    def __init__(self, repo, tmp, dev=False, extra=(), env=None, server=None):
        import subprocess
        import sys

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.audit = os.path.join(tmp, f"audit-{self.port}.jsonl")
        e = dict(os.environ)
        e.pop("MAAS_SERVING_LOADER", None)  # the default loader: maas.load_model
        e.update({"PYTHONPATH": os.pathsep.join([ROOT, TESTS]),
                  "PROMETHEUS_MULTIPROC_DIR": os.path.join(tmp, f"prom-{self.port}")})
        e.update(env or {})
        args = [sys.executable, "-m", "maas.serving.cli", repo, "--port", str(self.port),
                "--workers", "2", "--audit-log", self.audit, *extra]
        if server:
            args += ["--server", server]
        if dev:
            args.append("--dev")
        self.log = open(os.path.join(tmp, f"server-{self.port}.log"), "w+")
        self.proc = subprocess.Popen(args, env=e, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self):
        import requests

        deadline = time.monotonic() + self.BOOT_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + self.output())
            try:
                if requests.get(self.url + "/v2/health/ready", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not become ready in {self.BOOT_SECONDS:g} s:\n" + self.output())

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def worker_pids(self) -> list[int]:
        """The master's children (gunicorn and granian workers)."""
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                return sorted(int(p) for p in f.read().split())
        except OSError:
            return []

    def group(self) -> list[int]:
        """The live (not zombie) processes of the server's process group."""
        return group_members(self.proc.pid)

    def group_alive(self) -> bool:
        return bool(self.group())

    def stop(self, grace: float = 20.0):
        import signal
        import subprocess

        try:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    self.proc.wait(grace)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            try:  # whatever is left of the group (a worker whose master died, say)
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if self.proc.poll() is None:
                self.proc.wait()
            deadline = time.monotonic() + 10  # SIGKILL is delivered asynchronously
            while self.group() and time.monotonic() < deadline:
                time.sleep(0.05)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
