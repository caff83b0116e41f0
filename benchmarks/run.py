"""The maas engine benchmark: maas against NumPy and PyTorch, in one run.

    PYTHONPATH=. python benchmarks/run.py [--quick] [--threads N] [--repeats R]

Prints Markdown tables (matmul GFLOP/s, dense forward/backward time, MLP
training-step throughput). Every figure is the median of `--repeats`
repeats; each repeat runs enough inner iterations to last about
`--min-time` seconds, after warmups. Ratios compare maas with the
alternative measured in the same run (see ../shared/DESIGN.md, Benchmarks).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import numpy as np


# ---------------------------------------------------------------- timing

def calibrate(fn, min_time: float, warmup: int = 3) -> int:
    """Warms fn up and returns how many calls last about `min_time`."""
    for _ in range(warmup):
        fn()
    inner = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        dt = time.perf_counter() - t0
        if dt >= min_time / 4 or inner >= 1 << 20:
            break
        inner *= 4
    return max(1, int(round(inner * min_time / max(dt, 1e-9))))


def compare(fns: dict, repeats: int, min_time: float, settle: float) -> dict:
    """Median seconds per call of each fn. The repeats are interleaved (a
    repeat of each fn in turn) so that a burst of load from other processes
    on a shared machine hits every contender alike, and each block starts
    after `settle` seconds of idleness so that the previous library's idle
    threads (OpenBLAS spins ~0.1 s after a call) have gone to sleep."""
    inner = {}
    for name, fn in fns.items():
        time.sleep(settle)
        inner[name] = calibrate(fn, min_time)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            time.sleep(settle)
            fn()  # one untimed call: wakes the thread pools
            n = inner[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            times[name].append((time.perf_counter() - t0) / n)
    return {name: statistics.median(ts) for name, ts in times.items()}


def table(headers, rows) -> str:
    out = ["| " + " | ".join(headers) + " |",
           "|" + "|".join("---:" if i else "---" for i in range(len(headers))) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


# ---------------------------------------------------------------- machine

def lscpu() -> dict:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    info = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            info[k.strip()] = v.strip()
    return info


def cpu_ghz(info: dict):
    for key in ("CPU max MHz", "CPU MHz"):
        if key in info:
            try:
                return float(info[key]) / 1000.0
            except ValueError:
                pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":")[1]) / 1000.0
    except OSError:
        pass
    m = re.search(r"@\s*([\d.]+)\s*GHz", info.get("Model name", ""))
    return float(m.group(1)) if m else None


def peak_gflops(info: dict, cores: int):
    """cores x GHz x single-precision FLOPs/cycle (from the vector ISA: two
    FMA pipes of 8 floats = 32 with AVX2+FMA, 64 with AVX-512)."""
    flags = info.get("Flags", "").split()
    ghz = cpu_ghz(info)
    if not flags or ghz is None:
        return None, "unknown (no clock or ISA flags readable)"
    if "avx512f" in flags:
        fpc = 64
    elif "avx2" in flags and "fma" in flags:
        fpc = 32
    elif "avx" in flags:
        fpc = 16
    else:
        fpc = 8
    peak = cores * ghz * fpc
    return peak, f"~{peak:.0f} GFLOP/s fp32 ({cores} cores x {ghz:.2f} GHz x {fpc} FLOPs/cycle; " \
                 f"the clock is the nominal one the OS reports, boost and sharing not counted)"


# ---------------------------------------------------------------- benchmarks

def bench_matmul(args, maas, torch):
    sizes = [256, 512] if args.quick else [256, 512, 1024, 2048]
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        ma, mb = maas.tensor(a), maas.tensor(b)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        flops = 2.0 * n ** 3
        r = compare({"maas": lambda: maas.ops.matmul(ma, mb), "numpy": lambda: a @ b,
                     "torch": lambda: torch.mm(ta, tb)}, args.repeats, args.min_time, args.settle)
        t_m, t_n, t_t = r["maas"], r["numpy"], r["torch"]
        g_m, g_n, g_t = flops / t_m / 1e9, flops / t_n / 1e9, flops / t_t / 1e9
        rows.append([n, f"{g_m:.1f}", f"{g_n:.1f}", f"{g_t:.1f}", f"{g_m / g_n:.2f}",
                     f"{g_m / g_t:.2f}"])
    return table(["n", "maas GFLOP/s", "NumPy GFLOP/s", "torch GFLOP/s", "maas/NumPy",
                  "maas/torch"], rows)


def bench_dense(args, maas, torch):
    import torch.nn.functional as F
    batches = [1, 32] if args.quick else [1, 32, 128, 1024]
    C, U = 784, 256
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((C, U), dtype=np.float32) * 0.05)
    bias = np.zeros(U, np.float32)
    mw, mb = maas.Variable(w), maas.Variable(bias)
    tw = torch.tensor(w.T.copy(), requires_grad=True)  # F.linear takes (out, in)
    tbias = torch.tensor(bias, requires_grad=True)
    rows = []
    for n in batches:
        x = rng.standard_normal((n, C), dtype=np.float32)
        mx = maas.tensor(x)
        tx = torch.tensor(x, requires_grad=True)

        def m_fwd():
            return maas.ops.dense(mx, mw, mb)

        def m_fb():
            with maas.GradientTape() as tape:
                tape.watch(mx)
                y = maas.ops.dense(mx, mw, mb)
            return tape.gradient(y, [mx, mw, mb])

        def t_fwd():
            with torch.no_grad():
                return F.linear(tx, tw, tbias)

        def t_fb():
            tx.grad = tw.grad = tbias.grad = None
            y = F.linear(tx, tw, tbias)
            y.backward(torch.ones_like(y))  # d sum(y), as tape.gradient(y) computes

        r = compare({"f_m": m_fwd, "f_t": t_fwd}, args.repeats, args.min_time, args.settle)
        f_m, f_t = r["f_m"], r["f_t"]
        r = compare({"b_m": m_fb, "b_t": t_fb}, args.repeats, args.min_time, args.settle)
        b_m, b_t = r["b_m"], r["b_t"]
        rows.append([n, f"{f_m * 1e6:.1f}", f"{f_t * 1e6:.1f}", f"{f_t / f_m:.2f}",
                     f"{b_m * 1e6:.1f}", f"{b_t * 1e6:.1f}", f"{b_t / b_m:.2f}"])
    return table(["batch", "maas fwd µs", "torch fwd µs", "speedup fwd (torch/maas)",
                  "maas fwd+bwd µs", "torch fwd+bwd µs", "speedup fwd+bwd (torch/maas)"], rows)


def make_mlp_data(n, rng):
    x = rng.standard_normal((n, 784), dtype=np.float32)
    y = rng.integers(0, 10, size=n).astype(np.int64)
    return x, y


def init_weights(rng):
    sizes = [(784, 256), (256, 128), (128, 10)]
    ws = []
    for fan_in, fan_out in sizes:
        lim = np.sqrt(6.0 / (fan_in + fan_out))
        ws.append((rng.uniform(-lim, lim, (fan_in, fan_out)).astype(np.float32),
                   np.zeros(fan_out, np.float32)))
    return ws


def bench_train(args, maas, torch):
    import torch.nn as nn
    import torch.nn.functional as F
    batches = [1, 32] if args.quick else [1, 32, 128, 1024]
    rng = np.random.default_rng(2)
    ws = init_weights(rng)
    rows = []
    for n in batches:
        x, y = make_mlp_data(n, rng)
        # ---- maas
        params = []
        for w, b in ws:
            params += [maas.Variable(w.copy()), maas.Variable(b.copy())]
        opt = maas.optimizers.Adam(learning_rate=1e-3)
        mx, my = maas.tensor(x), y.astype(np.float32)
        ops, losses = maas.ops, maas.losses

        def m_step():
            with maas.GradientTape() as tape:
                h = ops.relu(ops.dense(mx, params[0], params[1]))
                h = ops.relu(ops.dense(h, params[2], params[3]))
                logits = ops.dense(h, params[4], params[5])
                loss = losses.sparse_categorical_crossentropy(my, logits, from_logits=True).mean()
            grads = tape.gradient(loss, params)
            opt.apply_gradients(zip(grads, params))
            return loss

        # ---- torch
        model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                              nn.Linear(128, 10))
        with torch.no_grad():
            for layer, (w, b) in zip([model[0], model[2], model[4]], ws):
                layer.weight.copy_(torch.from_numpy(w.T.copy()))
                layer.bias.copy_(torch.from_numpy(b))
        topt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)

        def t_step():
            topt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(tx), ty)
            loss.backward()
            topt.step()
            return loss

        # one step each, to check that both compute the same loss
        l_m, l_t = float(m_step().numpy()), float(t_step().item())
        if abs(l_m - l_t) > 1e-3 * max(1.0, abs(l_t)):
            print(f"warning: batch {n}: first-step losses differ: maas {l_m} torch {l_t}",
                  file=sys.stderr)
        r = compare({"maas": m_step, "torch": t_step}, args.repeats, args.min_time, args.settle)
        s_m, s_t = r["maas"], r["torch"]
        rows.append([n, f"{n / s_m:,.0f}", f"{n / s_t:,.0f}", f"{s_t / s_m:.2f}",
                     f"{s_m * 1e6:.0f}", f"{s_t * 1e6:.0f}"])
    return table(["batch", "maas samples/s", "torch samples/s", "maas/torch",
                  "maas µs/step", "torch µs/step"], rows)


# ---------------------------------------------------------------- main

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a fast smoke run (fewer sizes, repeats)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="threads for maas, OpenBLAS and torch (default: all cores)")
    p.add_argument("--repeats", type=int, default=None, help="repeats per figure (median)")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds per repeat (default 0.1, 0.02 with --quick)")
    p.add_argument("--settle", type=float, default=0.15,
                   help="idle seconds before each timed block (lets other pools sleep)")
    p.add_argument("--only", choices=["matmul", "dense", "train"], action="append",
                   help="run only these tables (repeatable)")
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    if args.min_time is None:
        args.min_time = 0.02 if args.quick else 0.1
    if args.quick:
        args.settle = min(args.settle, 0.02)

    import maas
    import torch

    maas.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    try:  # NumPy's own OpenBLAS gets the same thread count
        import threadpoolctl
        threadpoolctl.threadpool_limits(limits=args.threads, user_api="blas")
        np_threads = str(args.threads)
    except ImportError:
        np_threads = "its default (threadpoolctl not installed)"

    info = lscpu()
    cores = os.cpu_count() or 1
    _, peak_text = peak_gflops(info, cores)
    blas = maas._core.blas_info()
    print("# maas engine benchmark\n")
    print(f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"- machine: {info.get('Model name', platform.processor() or 'unknown')}, "
          f"{cores} logical CPUs ({info.get('Core(s) per socket', '?')} cores/socket x "
          f"{info.get('Socket(s)', '?')} sockets, {info.get('Thread(s) per core', '?')} "
          f"threads/core){', ' + info['Hypervisor vendor'] + ' VM' if 'Hypervisor vendor' in info else ''}")
    print(f"- rough peak: {peak_text}")
    print(f"- threads: {args.threads} (maas.get_num_threads()={maas.get_num_threads()}, "
          f"torch.get_num_threads()={torch.get_num_threads()}, NumPy BLAS {np_threads})")
    print(f"- Python {platform.python_version()}, NumPy {np.__version__}, torch {torch.__version__}, "
          f"maas {maas.__version__}")
    print(f"- maas BLAS: {blas['config'].strip()} (threads {blas['num_threads']})")
    try:
        npcfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        print(f"- NumPy BLAS: {npcfg.get('openblas configuration', npcfg.get('name'))}")
    except Exception:  # noqa: BLE001  (older NumPy)
        pass
    print(f"- each figure: median of {args.repeats} interleaved repeats of ~{args.min_time * 1e3:.0f} ms"
          f" after warmups, {args.settle * 1e3:.0f} ms idle before each{' (--quick)' if args.quick else ''}")
    try:
        print(f"- load average at start: {os.getloadavg()[0]:.2f} (other processes share the machine)")
    except OSError:
        pass
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
                                      "OPENBLAS_NUM_THREADS") if k in os.environ}
    if env:
        print(f"- environment: {env}")
    print()
    sections = args.only or ["matmul", "dense", "train"]
    if "matmul" in sections:
        print("## matmul, float32 square (GFLOP/s, higher is better)\n")
        print(bench_matmul(args, maas, torch), "\n", flush=True)
    if "dense" in sections:
        print("## dense 784->256 (µs per call, lower is better; speedup > 1 means maas is faster)\n")
        print("fwd+bwd: maas GradientTape + tape.gradient to x, W, b; "
              "torch F.linear + .backward()\n")
        print(bench_dense(args, maas, torch), "\n", flush=True)
    if "train" in sections:
        print("## training step, MLP 784-256-128-10, Adam 1e-3 (samples/s, higher is better)\n")
        print(bench_train(args, maas, torch), "\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
