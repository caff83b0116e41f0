"""maas's own predict path against ONNX Runtime on the exported file.

    python benchmarks/export_onnx.py [--threads 2]

(Not named onnx.py: a script of that name would shadow the onnx package.)

The digits MLP (64-256-128-10, trained briefly) is saved as a maas file and
exported to ONNX; each runtime then answers batches of 1 and 128 rows in its
own process (same thread count), and the medians are compared. maas is
timed through ``model.predict_on_batch`` (the compiled forward plan, one C
call) and through ``model(x)`` (one C call per op); ONNX Runtime through
``InferenceSession.run`` (CPU provider, graph optimizations on).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def bench(fn, repeats, inner):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t) / inner)
    return statistics.median(times)


def run_maas(path, threads):
    import maas
    maas.set_num_threads(threads)
    model = maas.load_model(path)
    out = {}
    for n in (1, 128):
        x = np.random.default_rng(n).standard_normal((n, 64)).astype(np.float32)
        out[f"plan_{n}"] = bench(lambda: model.predict_on_batch(x), 15, 200 if n == 1 else 50)
        out[f"eager_{n}"] = bench(lambda: model(x, training=False), 15, 200 if n == 1 else 50)
    return out


def run_ort(path, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    out = {}
    for n in (1, 128):
        x = np.random.default_rng(n).standard_normal((n, 64)).astype(np.float32)
        out[f"ort_{n}"] = bench(lambda: s.run(None, {name: x}), 15, 200 if n == 1 else 50)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", choices=["maas", "ort"])
    ap.add_argument("--path")
    args = ap.parse_args()
    if args.child:
        fn = run_maas if args.child == "maas" else run_ort
        print(json.dumps(fn(args.path, args.threads)))
        return
    import maas
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    maas.utils.set_random_seed(0)
    m = maas.Sequential([maas.Input((64,)), maas.layers.Dense(256, activation="relu"),
                         maas.layers.Dense(128, activation="relu"),
                         maas.layers.Dense(10, activation="softmax")])
    m.compile("adam", "sparse_categorical_crossentropy")
    m.fit((x / 16).astype("float32"), y, epochs=2, verbose=0)
    d = tempfile.mkdtemp()
    m.save(os.path.join(d, "m.maas"))
    m.export(os.path.join(d, "m.onnx"))
    res = {}
    for child, path in (("maas", "m.maas"), ("ort", "m.onnx")):
        r = subprocess.run([sys.executable, __file__, "--child", child, "--path",
                            os.path.join(d, path), "--threads", str(args.threads)],
                           capture_output=True, text=True, check=True)
        res.update(json.loads(r.stdout.strip().splitlines()[-1]))
    import onnxruntime
    print(f"# digits MLP 64-256-128-10, {args.threads} threads, load {os.getloadavg()[0]:.1f}, "
          f"onnxruntime {onnxruntime.__version__}, maas {maas.__version__}")
    print("| batch | maas plan us | maas eager us | ONNX Runtime us | plan / ORT speed |")
    print("|---|---|---|---|---|")
    for n in (1, 128):
        p, e, o = res[f"plan_{n}"], res[f"eager_{n}"], res[f"ort_{n}"]
        print(f"| {n} | {1e6 * p:.1f} | {1e6 * e:.1f} | {1e6 * o:.1f} | {o / p:.2f}x |")


if __name__ == "__main__":
    main()
