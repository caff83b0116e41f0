"""What deterministic GEMMs cost: maas's own split of each product over its
threads (OpenBLAS single-threaded inside, the default) against OpenBLAS's
own threading (maas.set_deterministic(False)), in one run, interleaved.

    PYTHONPATH=. python benchmarks/determinism.py [--threads N] [--repeats R] [--quick]

Tables: raw SGEMM (maas.ops.matmul, GFLOP/s) at a few shapes, and fit() of
the 784-256-128-10 MLP (samples/s) at batch 32 and 128. Each figure is the
median of interleaved repeats (on, off, on, off, ...), so a burst of load
from other processes hits both alike; the best (fastest) repeat is shown too,
the least disturbed one on a shared machine. Ratios on/off > 1 mean
deterministic mode is faster.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import calibrate, lscpu, table  # noqa: E402


def interleaved(maas, fn, repeats, min_time, settle):
    """Median seconds per call of fn with deterministic mode on and off."""
    import statistics
    import time

    inner = {}
    for det in (True, False):
        maas.set_deterministic(det)
        time.sleep(settle)
        inner[det] = calibrate(fn, min_time)
    n = min(inner.values())
    times = {True: [], False: []}
    for _ in range(repeats):
        for det in (True, False):
            maas.set_deterministic(det)
            time.sleep(settle)
            fn()  # wakes the pools
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            times[det].append((time.perf_counter() - t0) / n)
    maas.set_deterministic(True)
    return (statistics.median(times[True]), statistics.median(times[False]),
            min(times[True]), min(times[False]))


SHAPES = [  # (M, K, N, transpose_a, what)
    (32, 784, 256, False, "dense fwd, batch 32"),
    (32, 256, 128, False, "dense fwd 2nd layer, batch 32 (mid-size)"),
    (128, 784, 256, False, "dense fwd, batch 128"),
    (128, 256, 128, False, "dense fwd 2nd layer, batch 128"),
    (784, 128, 256, True, "dW = x^T g, batch 128"),
    (512, 512, 512, False, "square 512"),
    (1024, 1024, 1024, False, "square 1024"),
]


def bench_sgemm(args, maas):
    rng = np.random.default_rng(0)
    rows = []
    for m, k, n, ta, what in SHAPES[:4] if args.quick else SHAPES:
        a = maas.tensor(rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32))
        b = maas.tensor(rng.standard_normal((k, n), dtype=np.float32))
        blocks, over_rows = maas._core.gemm_split(m, n, k, maas._core.gemm_max_blocks())
        on, off, on_b, off_b = interleaved(maas, lambda: maas.ops.matmul(a, b, transpose_a=ta),
                                           args.repeats, args.min_time, args.settle)
        gf = 2.0 * m * n * k / 1e9
        rows.append([f"{m}x{k} @ {k}x{n}{' (A^T)' if ta else ''}", what,
                     f"{blocks} {'row' if over_rows else 'column'} blocks"
                     if blocks > 1 else "1 call", f"{gf / on:.1f}", f"{gf / off:.1f}",
                     f"{off / on:.2f}", f"{gf / on_b:.1f}", f"{gf / off_b:.1f}", f"{off_b / on_b:.2f}"])
    return table(["product (M x K @ K x N)", "where", "deterministic split", "on GFLOP/s",
                  "off GFLOP/s", "on/off speed", "best on", "best off", "best on/off"], rows)


def bench_fit(args, maas):
    rng = np.random.default_rng(1)
    n = 1024 if args.quick else 4096
    x = rng.random((n, 784), dtype=np.float32)
    y = rng.integers(0, 10, n)
    rows = []
    for batch in (32, 128):
        maas.utils.set_random_seed(0)
        model = maas.Sequential([maas.Input((784,)), maas.layers.Dense(256, activation="relu"),
                                 maas.layers.Dense(128, activation="relu"), maas.layers.Dense(10)])
        model.compile(optimizer=maas.optimizers.Adam(1e-3),
                      loss=maas.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x[:batch * 2], y[:batch * 2], batch_size=batch, epochs=1, verbose=0)

        def epoch():
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)

        on, off, on_b, off_b = interleaved(maas, epoch, args.repeats, args.min_time, args.settle)
        steps = -(-n // batch)
        rows.append([batch, f"{n / on:,.0f}", f"{n / off:,.0f}", f"{on / steps * 1e6:.0f}",
                     f"{off / steps * 1e6:.0f}", f"{(on / off - 1) * 100:+.1f}%",
                     f"{on_b / steps * 1e6:.0f}", f"{off_b / steps * 1e6:.0f}",
                     f"{(on_b / off_b - 1) * 100:+.1f}%"])
    compiled = getattr(model, "_compiled_train_fn", None) is not None
    return table(["batch", "on samples/s", "off samples/s", "on µs/step", "off µs/step",
                  "cost of on", "best on µs", "best off µs", "best: cost of on"], rows), compiled


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--min-time", type=float, default=None)
    p.add_argument("--settle", type=float, default=0.15)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 15)
    args.min_time = args.min_time or (0.05 if args.quick else 0.15)

    import maas

    maas.set_num_threads(args.threads)
    info = lscpu()
    print("# deterministic GEMMs: cost against OpenBLAS's own threading\n")
    print(f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"- machine: `lscpu` model \"{info.get('Model name', '?')}\" (family "
          f"{info.get('CPU family', '?')}, model {info.get('Model', '?')}), {os.cpu_count()} logical "
          f"CPUs, {info.get('Core(s) per socket', '?')} cores/socket"
          f"{', ' + info['Hypervisor vendor'] + ' VM' if 'Hypervisor vendor' in info else ''}")
    print(f"- Python {platform.python_version()}, NumPy {np.__version__}, maas {maas.__version__}, "
          f"BLAS {maas._core.blas_info()['config'].strip()}")
    print(f"- threads: {maas.get_num_threads()}; each figure the median of {args.repeats} "
          f"interleaved repeats of ~{args.min_time * 1e3:.0f} ms")
    try:
        print(f"- load average at start: {os.getloadavg()[0]:.2f} (other processes share the machine)")
    except OSError:
        pass
    print("\n## raw SGEMM (maas.ops.matmul)\n")
    print(bench_sgemm(args, maas), "\n", flush=True)
    t, compiled = bench_fit(args, maas)
    print(f"## fit(), MLP 784-256-128-10, Adam, 1 epoch per repeat (compiled plan: {compiled})\n")
    print(t, "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
