"""Data-parallel training cost on this machine, and a model of it across machines.

    python benchmarks/distributed.py            # launches mpiexec -n 1, 2, 4 in turn

For the MLP 784-256-128-10 (and any model given by --model), each run
measures on rank 0: the median time of a training step (forward, backward,
the all-reduce, the update) and the time of the all-reduce inside it, the
bytes reduced per step, and the step time without any distribution. On 2
cores, 4 ranks are oversubscribed: the figures show the cost of the
collective on shared memory, not scaling.

The model across machines: a ring all-reduce of B bytes over p machines
takes about  T(p) = 2 (p-1)/p * B / bandwidth + 2 (p-1) * latency,  and a
step of global batch N takes  compute(N/p) + T(p), compute measured here per
row. Communication stops dominating when compute(N/p) > T(p).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def build(maas, kind):
    if kind == "mlp":
        m = maas.Sequential([maas.Input((784,)), maas.layers.Dense(256, activation="relu"),
                             maas.layers.Dense(128, activation="relu"), maas.layers.Dense(10)])
        shape = (784,)
    else:
        raise SystemExit(f"unknown model {kind}")
    m.compile(optimizer=maas.optimizers.SGD(0.01, momentum=0.9),
              loss=maas.losses.SparseCategoricalCrossentropy(from_logits=True))
    return m, shape


def worker(args):
    import maas
    dist = maas.distribution
    dp = dist.DataParallel() if args.ranks > 1 else None
    if dp is not None:
        dist.set_distribution(dp)
    maas.utils.set_random_seed(0)
    model, shape = build(maas, args.model)
    rng = np.random.default_rng(0)
    n = args.batch * args.steps
    x = rng.standard_normal((n,) + shape, dtype=np.float32)
    y = rng.integers(0, 10, n)
    reduce_times = []
    if dp is not None:
        inner = dp.reduce_flat

        def timed(flat):
            t = time.perf_counter()
            inner(flat)
            reduce_times.append(time.perf_counter() - t)
        dp.reduce_flat = timed
    step_times = []

    class Timer(maas.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.t = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            step_times.append(time.perf_counter() - self.t)

    model.fit(x, y, batch_size=args.batch, epochs=1, verbose=0, shuffle=False,
              callbacks=[Timer()])
    nbytes = 4 * sum(int(np.asarray(v).size) for v in model.trainable_variables)
    skip = min(3, len(step_times) // 4)   # the first steps trace the plan
    out = {"ranks": args.ranks, "batch": args.batch, "bytes": nbytes,
           "step": statistics.median(step_times[skip:]),
           "reduce": statistics.median(reduce_times[skip:]) if reduce_times else 0.0,
           "eager_reason": model.eager_reason}
    if dp is None or dp.rank == 0:
        with open(args.out, "w") as f:
            json.dump(out, f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--batch", type=int, default=256, help="global batch")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--ranks", type=int, default=0, help="(internal) this run's rank count")
    ap.add_argument("--out", default="")
    ap.add_argument("--bandwidth", type=float, default=10e9 / 8, help="bytes/s between machines")
    ap.add_argument("--latency", type=float, default=20e-6, help="seconds per message")
    args = ap.parse_args()
    if args.ranks:
        return worker(args)
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or "mpiexec"
    rows = []
    for p in (1, 2, 4):
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            env = dict(os.environ, OMP_NUM_THREADS="1")
            cmd = [mpiexec, "-n", str(p), sys.executable, __file__, "--model", args.model,
                   "--batch", str(args.batch), "--steps", str(args.steps), "--ranks", str(p),
                   "--out", f.name]
            subprocess.run(cmd, check=True, env=env, timeout=1800)
            rows.append(json.load(open(f.name)))
    load = os.getloadavg()
    print(f"# {args.model}, global batch {args.batch}, 1 thread per rank, load {load[0]:.1f} "
          f"(2 cores: 4 ranks are oversubscribed)")
    print("| ranks | rows/rank | step ms | all-reduce ms | all-reduce share | bytes/step |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        share = r["reduce"] / r["step"] if r["step"] else 0
        print(f"| {r['ranks']} | {args.batch // r['ranks']} | {1e3 * r['step']:.2f} | "
              f"{1e3 * r['reduce']:.3f} | {100 * share:.1f}% | {r['bytes']:,} |")
    # the model across machines: compute per row from the one-rank run
    per_row = rows[0]["step"] / args.batch
    B = rows[0]["bytes"]
    print(f"\nModel: ring all-reduce T(p) = 2(p-1)/p * {B:,} B / {args.bandwidth / 1e9:.2f} GB/s "
          f"+ 2(p-1) * {args.latency * 1e6:.0f} us; compute {per_row * 1e6:.2f} us/row (measured, "
          f"1 rank).")
    print("| machines | T(p) ms | step ms at global batch 256 | 1024 | 4096 | batch/machine where compute = T(p) |")
    print("|---|---|---|---|---|---|")
    for p in (2, 4, 8, 16, 64):
        t = 2 * (p - 1) / p * B / args.bandwidth + 2 * (p - 1) * args.latency
        steps = [1e3 * (per_row * n / p + t) for n in (256, 1024, 4096)]
        print(f"| {p} | {1e3 * t:.3f} | {steps[0]:.2f} | {steps[1]:.2f} | {steps[2]:.2f} | "
              f"{t / per_row:.0f} |")


if __name__ == "__main__":
    main()
