"""Transcendental activations on 4M float32: maas against NumPy (SciPy's
special functions where NumPy has none) and PyTorch.

    PYTHONPATH=. flock /tmp/maas-bench.lock python benchmarks/transcendentals.py \
        [--n 4194304] [--repeats 7] [--min-time 0.2] [--threads 2]

Each framework runs in its own subprocess (thread pools of two runtimes in
one process distort both), with the thread count given, and maas also with
one thread, and PyTorch with one thread (NumPy's ufuncs are single-threaded);
and maas with one thread on its scalar libm path (MAAS_ISA=portable), the
code maas ran before vectorizing, for reference.
The subprocesses run in `--rounds` rounds (every framework once per round),
so that a burst of load from other processes on a shared machine is spread
over all of them; every figure is the median over rounds x `--repeats`
repeats of the time per call, each repeat running enough calls to last
`--min-time` seconds. The ratio
column is maas (all threads) over the faster of NumPy and PyTorch (all
threads): below 1 means maas is faster. Prints a Markdown table, and a
second one of the single-thread runs in CPU time of the calling thread
(which does not count the time spent waiting for a core on a loaded
machine).

The cases (inputs uniform in [-5, 5], a fresh output array per call, as a
user's code allocates):
  exp, tanh, sigmoid          NumPy: np.exp, np.tanh, scipy.special.expit
  gelu (exact, erf)           NumPy: 0.5 x (1 + scipy.special.erf(x / sqrt 2))
  gelu (tanh approximation)   NumPy: the formula with np.tanh
  gelu exact fwd+bwd          maas: GradientTape + gradient of sum(gelu(x));
                              torch: autograd, y.backward(ones);
                              NumPy: forward, then cdf + x pdf by hand
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

CASES = ["exp", "tanh", "sigmoid", "gelu_erf", "gelu_tanh", "gelu_erf_fwd_bwd"]
LABELS = {
    "exp": "exp", "tanh": "tanh", "sigmoid": "sigmoid", "gelu_erf": "gelu (exact, erf)",
    "gelu_tanh": "gelu (tanh approx.)", "gelu_erf_fwd_bwd": "gelu exact fwd+bwd",
}


def timeit(fn, repeats: int, min_time: float) -> tuple:
    """Wall-clock and calling-thread CPU seconds per call, per repeat."""
    for _ in range(3):
        fn()
    inner, dt = 1, 0.0
    while True:
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        dt = time.perf_counter() - t0
        if dt >= min_time / 4:
            break
        inner *= 2
    inner = max(1, int(round(inner * min_time / max(dt, 1e-9))))
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
        cpu.append((time.thread_time() - c0) / inner)
    return times, cpu


def worker(framework: str, threads: int, n: int, repeats: int, min_time: float) -> dict:
    import numpy as np

    x = np.random.default_rng(0).uniform(-5, 5, n).astype(np.float32)
    fns = {}
    if framework == "maas":
        import maas
        from maas import ops

        maas._core.set_num_threads(threads)
        t = maas.tensor(x)

        def fwd_bwd():
            v = maas.tensor(x, requires_grad=True)
            with maas.GradientTape() as tape:
                s = ops.gelu(v, approximate=False).sum()
            return tape.gradient(s, v)

        fns = {"exp": lambda: ops.exp(t), "tanh": lambda: ops.tanh(t),
               "sigmoid": lambda: ops.sigmoid(t),
               "gelu_erf": lambda: ops.gelu(t, approximate=False),
               "gelu_tanh": lambda: ops.gelu(t, approximate=True), "gelu_erf_fwd_bwd": fwd_bwd}
        version = maas.__version__ if hasattr(maas, "__version__") else "0.1.0"
    elif framework == "numpy":
        from scipy import special

        c = math.sqrt(2 / math.pi)

        def gelu_erf(v):
            return 0.5 * v * (1 + special.erf(v * np.float32(math.sqrt(0.5))))

        def gelu_tanh(v):
            return 0.5 * v * (1 + np.tanh(np.float32(c) * (v + np.float32(0.044715) * v * v * v)))

        def fwd_bwd():
            y = gelu_erf(x)
            cdf = 0.5 * (1 + special.erf(x * np.float32(math.sqrt(0.5))))
            pdf = np.exp(np.float32(-0.5) * x * x) * np.float32(1 / math.sqrt(2 * math.pi))
            return y, cdf + x * pdf

        fns = {"exp": lambda: np.exp(x), "tanh": lambda: np.tanh(x),
               "sigmoid": lambda: special.expit(x), "gelu_erf": lambda: gelu_erf(x),
               "gelu_tanh": lambda: gelu_tanh(x), "gelu_erf_fwd_bwd": fwd_bwd}
        import scipy
        version = f"NumPy {np.__version__}, SciPy {scipy.__version__}"
    elif framework == "torch":
        import torch
        import torch.nn.functional as F

        torch.set_num_threads(threads)
        t = torch.from_numpy(x)

        def fwd_bwd():
            v = t.detach().requires_grad_(True)
            y = F.gelu(v, approximate="none")
            y.backward(torch.ones_like(y))
            return v.grad

        fns = {"exp": lambda: torch.exp(t), "tanh": lambda: torch.tanh(t),
               "sigmoid": lambda: torch.sigmoid(t),
               "gelu_erf": lambda: F.gelu(t, approximate="none"),
               "gelu_tanh": lambda: F.gelu(t, approximate="tanh"), "gelu_erf_fwd_bwd": fwd_bwd}
        version = torch.__version__
    else:
        raise SystemExit(f"unknown framework {framework!r}")
    times, cpu = {}, {}
    for name in CASES:
        times[name], cpu[name] = timeit(fns[name], repeats, min_time)
    return {"version": version, "times": times, "cpu": cpu}


def run_worker(framework, threads, args, isa=None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if isa:
        env["MAAS_ISA"] = isa
    cmd = [sys.executable, __file__, "--worker", framework, "--threads", str(threads),
           "--n", str(args.n), "--repeats", str(args.repeats), "--min-time", str(args.min_time)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def lscpu_model() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor()
    for line in text.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4 * 1024 * 1024)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=0.2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.threads, args.n, args.repeats, args.min_time)))
        return

    T = args.threads
    runs = {
        f"maas {T}T": ("maas", T, None), "maas 1T": ("maas", 1, None), "NumPy": ("numpy", 1, None),
        f"torch {T}T": ("torch", T, None), "torch 1T": ("torch", 1, None),
        # the scalar libm path (what maas ran before vecmath), for reference
        "maas 1T libm": ("maas", 1, "portable"),
    }
    res = {}
    for _ in range(args.rounds):
        for name, (fw, th, isa_) in runs.items():
            r = run_worker(fw, th, args, isa_)
            if name not in res:
                res[name] = r
            else:
                for case in CASES:
                    res[name]["times"][case] += r["times"][case]
                    res[name]["cpu"][case] += r["cpu"][case]
    for r in res.values():
        r["times"] = {case: statistics.median(ts) for case, ts in r["times"].items()}
        r["cpu"] = {case: statistics.median(ts) for case, ts in r["cpu"].items()}
    isa = os.environ.get("MAAS_ISA", "auto: AVX2+FMA if the CPU has them")
    load = os.getloadavg()
    print(f"## Transcendentals, {args.n:,} float32 (`benchmarks/transcendentals.py`)\n")
    print(f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
          f"machine: `lscpu` model name \"{lscpu_model()}\", {os.cpu_count()} cores; "
          f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    print(f"- Python {platform.python_version()}, {res['NumPy']['version']}, "
          f"torch {res[f'torch {T}T']['version']}, maas {res[f'maas {T}T']['version']} "
          f"(MAAS_ISA={isa})")
    print(f"- median of {args.rounds} rounds x {args.repeats} repeats of >= {args.min_time} s "
          f"each; ms per call; "
          f"ratio = maas {T}T / min(NumPy, torch {T}T), below 1 is maas faster; "
          f"1T ratio = maas 1T / min(NumPy, torch 1T)\n")
    cols = [c for c in runs if c != "maas 1T libm"]
    print("| case | " + " | ".join(f"{c} ms" for c in cols) + f" | ratio ({T}T) | ratio (1T) |")
    print("|---|" + "---:|" * (len(cols) + 2))
    for case in CASES:
        t = {c: res[c]["times"][case] * 1e3 for c in cols}
        best = min(t["NumPy"], t[f"torch {T}T"])
        best1 = min(t["NumPy"], t["torch 1T"])
        print(f"| {LABELS[case]} | " + " | ".join(f"{t[c]:.2f}" for c in cols) +
              f" | {t[f'maas {T}T'] / best:.2f} | {t['maas 1T'] / best1:.2f} |")
    # One thread's CPU time does not count the time the thread waited for a
    # core, so on a shared machine it measures the kernels where wall-clock
    # time measures the load.
    one = ["maas 1T", "NumPy", "torch 1T", "maas 1T libm"]
    print(f"\nSingle thread, CPU time of the calling thread (ms per call, median; "
          f"ratio = maas / min(NumPy, torch); maas 1T libm is MAAS_ISA=portable, the "
          f"scalar libm path):\n")
    print("| case | " + " | ".join(f"{c} ms" for c in one) + " | ratio |")
    print("|---|" + "---:|" * (len(one) + 1))
    for case in CASES:
        t = {c: res[c]["cpu"][case] * 1e3 for c in one}
        print(f"| {LABELS[case]} | " + " | ".join(f"{t[c]:.2f}" for c in one) +
              f" | {t['maas 1T'] / min(t['NumPy'], t['torch 1T']):.2f} |")


if __name__ == "__main__":
    main()
