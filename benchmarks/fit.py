"""fit() on a 784-256-128-10 MLP: maas vs a PyTorch training loop vs Keras 3,
measured side by side in one run (samples per second, median of repeats).

    python benchmarks/fit.py [--quick] [--threads N]

Keras runs only when `keras` and a backend (tensorflow-cpu) import; the
table says so otherwise. Data: 8,192 random rows with a fixed seed (the
shapes of MNIST; the speed does not depend on the values).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np


def data(n=8192, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 784), dtype=np.float32)
    y = rng.integers(0, 10, n)
    return x, y


def bench_maas(x, y, batch, epochs, repeats):
    import maas

    times = []
    for r in range(repeats):
        maas.utils.set_random_seed(r)
        model = maas.Sequential([maas.Input((784,)), maas.layers.Dense(256, activation="relu"),
                                 maas.layers.Dense(128, activation="relu"), maas.layers.Dense(10)])
        model.compile(optimizer=maas.optimizers.Adam(1e-3),
                      loss=maas.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x[:batch * 2], y[:batch * 2], batch_size=batch, epochs=1, verbose=0)  # warm-up
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, shuffle=True)
        times.append(time.perf_counter() - t0)
    return len(x) * epochs / statistics.median(times), getattr(model, "_compiled_train_fn", None) is not None


def bench_torch(x, y, batch, epochs, repeats):
    import torch
    import torch.nn.functional as F

    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    times = []
    for r in range(repeats):
        torch.manual_seed(r)
        model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(),
                                    torch.nn.Linear(256, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def epoch():
            perm = torch.randperm(len(xt))
            for i in range(0, len(xt), batch):
                idx = perm[i:i + batch]
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(xt[idx]), yt[idx])
                loss.backward()
                opt.step()

        t0 = time.perf_counter()
        for _ in range(epochs):
            epoch()
        times.append(time.perf_counter() - t0)
    return len(x) * epochs / statistics.median(times)


def bench_keras(x, y, batch, epochs, repeats):
    try:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import keras
    except Exception as e:  # noqa: BLE001
        return None, f"not installed ({type(e).__name__})"
    times = []
    for r in range(repeats):
        keras.utils.set_random_seed(r)
        model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(256, activation="relu"),
                                  keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10)])
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x[:batch * 2], y[:batch * 2], batch_size=batch, epochs=1, verbose=0)
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, shuffle=True)
        times.append(time.perf_counter() - t0)
    return len(x) * epochs / statistics.median(times), f"keras {keras.__version__} ({keras.backend.backend()})"


def run_one(framework, batch, rows, epochs, repeats, threads):
    """Measures one framework at one batch size in this process."""
    if framework == "maas":
        import maas

        maas.set_num_threads(threads)
        x, y = data(rows)
        rate, planned = bench_maas(x, y, batch, epochs, repeats)
        return {"rate": rate, "note": "" if planned else " (eager)"}
    if framework == "torch":
        import torch

        torch.set_num_threads(threads)
        x, y = data(rows)
        return {"rate": bench_torch(x, y, batch, epochs, repeats), "note": ""}
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(threads))
    x, y = data(rows)
    rate, note = bench_keras(x, y, batch, epochs, repeats)
    return {"rate": rate, "note": note}


def measure(framework, python, batch, args):
    """Runs run_one in a fresh interpreter, so that no two runtimes' thread
    pools share a process."""
    cmd = [python, os.path.abspath(__file__), "--child", framework, "--batch", str(batch),
           "--rows", str(args.rows), "--epochs", str(args.epochs), "--repeats", str(args.repeats),
           "--threads", str(args.threads)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return {"rate": None, "note": f"failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keras-python", default=sys.executable,
                    help="the interpreter that has keras and tensorflow-cpu (e.g. another venv)")
    ap.add_argument("--no-keras", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--rows", type=int, default=8192)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.batch, args.rows, args.epochs, args.repeats, args.threads)))
        return
    if args.quick:
        args.rows, args.epochs, args.repeats = 2048, 1, 1
    print(f"fit, MLP 784-256-128-10, Adam, {args.rows} rows x {args.epochs} epochs, {args.threads} threads, "
          f"median of {args.repeats}, each framework in its own process\n")
    print("| batch | maas samples/s | PyTorch samples/s | Keras samples/s | maas/PyTorch | maas/Keras |")
    print("|---|---|---|---|---|---|")
    keras_note = ""
    for batch in (32, 128):
        m = measure("maas", sys.executable, batch, args)
        t = measure("torch", sys.executable, batch, args)
        k = {"rate": None, "note": "skipped"} if args.no_keras else measure("keras", args.keras_python, batch, args)
        keras_note = k["note"]
        fmt = lambda r: f"{r['rate']:,.0f}" if r["rate"] else r["note"]
        ratio = lambda a, b: f"{a['rate'] / b['rate']:.2f}x" if a["rate"] and b["rate"] else "-"
        print(f"| {batch} | {fmt(m)}{m['note'] if m['rate'] else ''} | {fmt(t)} | {fmt(k)} | "
              f"{ratio(m, t)} | {ratio(m, k)} |")
    if keras_note:
        print(f"\nKeras: {keras_note}")


if __name__ == "__main__":
    main()
