"""LSTM training step: maas against PyTorch's nn.LSTM and Keras 3 on JAX, each in its own process.

    flock /tmp/maas-bench.lock python benchmarks/rnn.py [--threads N] [--repeats R]
        [--keras-python /tmp/rnn-venv/bin/python]

The model is the issue's: LSTM(128) over 50 steps, batch 64 (32 input
features), then Dense(1), MSE loss, Adam; one step is forward, loss,
backward and the optimizer update. maas runs it through its compiled plan
(``train_on_batch``: one C call per step); PyTorch 2.13 on CPU (its LSTM
kernels through oneDNN/MKL where it uses them) with the same thread count.
Each framework runs in a child process of its own (so neither one's thread
pools or allocator state touch the other); each reports the median of
``--repeats`` timed blocks. Keras 3 on JAX runs from a separate virtualenv
(``python -m venv /tmp/rnn-venv && /tmp/rnn-venv/bin/pip install keras jax``:
no torch in it), the same model through ``train_on_batch`` (jit-compiled by
Keras's JAX trainer), XLA's CPU threads limited to ``--threads``; it is
skipped when that interpreter is missing. Prints a Markdown table with the
ratios rival time / maas time (> 1: maas faster).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

B, T, F, U = 64, 50, 32, 128


def timed(step, repeats: int, min_time: float) -> float:
    for _ in range(3):
        step()
    inner = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(inner):
            step()
        dt = time.perf_counter() - t0
        if dt >= min_time / 4 or inner >= 4096:
            break
        inner *= 2
    inner = max(1, int(round(inner * min_time / max(dt, 1e-9))))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            step()
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times)


def data():
    import numpy as np
    r = np.random.default_rng(0)
    return r.normal(size=(B, T, F)).astype(np.float32), r.normal(size=(B, 1)).astype(np.float32)


def run_maas(threads: int, repeats: int, min_time: float) -> dict:
    import maas
    maas.set_num_threads(threads)
    maas.utils.set_random_seed(0)
    x, y = data()
    model = maas.Sequential([maas.Input((T, F)), maas.layers.LSTM(U), maas.layers.Dense(1)])
    model.compile(optimizer=maas.optimizers.Adam(1e-3), loss="mse")
    sec = timed(lambda: model.train_on_batch(x, y), repeats, min_time)
    assert model.eager_reason is None, model.eager_reason
    return {"seconds": sec, "version": maas.__version__}


def run_torch(threads: int, repeats: int, min_time: float) -> dict:
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x, y = (torch.tensor(a) for a in data())

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(F, U, batch_first=True)
            self.head = torch.nn.Linear(U, 1)

        def forward(self, v):
            _, (h, _) = self.lstm(v)
            return self.head(h[0])

    net = Net()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    loss_fn = torch.nn.MSELoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()

    sec = timed(step, repeats, min_time)
    return {"seconds": sec, "version": torch.__version__,
            "mkldnn": bool(torch.backends.mkldnn.is_available())}


def run_keras(threads: int, repeats: int, min_time: float) -> dict:
    os.environ["KERAS_BACKEND"] = "jax"
    import jax
    import keras
    keras.utils.set_random_seed(0)
    x, y = data()
    model = keras.Sequential([keras.Input((T, F)), keras.layers.LSTM(U), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    sec = timed(lambda: model.train_on_batch(x, y), repeats, min_time)
    return {"seconds": sec, "version": keras.__version__, "jax": jax.__version__,
            "backend": keras.backend.backend()}


def child(framework: str, args, python=None) -> dict:
    cmd = [python or sys.executable, __file__, "--child", framework, "--threads", str(args.threads),
           "--repeats", str(args.repeats), "--min-time", str(args.min_time)]
    env = dict(os.environ)
    if framework == "keras":   # XLA's CPU thread pools, as the others' thread counts
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=" +
                            ("true" if args.threads > 1 else "false") +
                            f" intra_op_parallelism_threads={args.threads}").strip()
        env.pop("PYTHONPATH", None)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--child", choices=["maas", "torch", "keras"])
    ap.add_argument("--keras-python", default="/tmp/rnn-venv/bin/python",
                    help="an interpreter with keras and jax installed (no torch needed)")
    args = ap.parse_args()
    if args.child:
        fn = {"maas": run_maas, "torch": run_torch, "keras": run_keras}[args.child]
        print(json.dumps(fn(args.threads, args.repeats, args.min_time)))
        return
    m = child("maas", args)
    t = child("torch", args)
    k = child("keras", args, args.keras_python) if os.path.exists(args.keras_python) else None
    cpu = platform.processor() or platform.machine()
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name"))
    except (OSError, StopIteration):
        pass
    print(f"LSTM({U}) train step, {T} steps, batch {B}, {F} features, Adam, "
          f"{args.threads} threads, median of {args.repeats}; {cpu}, {os.cpu_count()} cpus; "
          f"maas {m['version']}, torch {t['version']} (mkldnn available: {t['mkldnn']}); " +
          (f"Keras {k['version']} on JAX {k['jax']} ({k['backend']})" if k else
           "Keras 3 on JAX: no interpreter at --keras-python, not measured") + "\n")
    print("| framework | ms / step | its time / maas's |")
    print("|---|---:|---:|")
    print(f"| maas (compiled plan) | {m['seconds'] * 1e3:.2f} | 1.00x |")
    print(f"| torch nn.LSTM | {t['seconds'] * 1e3:.2f} | {t['seconds'] / m['seconds']:.2f}x |")
    if k:
        print(f"| Keras 3 on JAX (jit) | {k['seconds'] * 1e3:.2f} | "
              f"{k['seconds'] / m['seconds']:.2f}x |")


if __name__ == "__main__":
    main()
