"""int8 inference: maas int8 against maas float32, PyTorch 2.13's
quantize_dynamic and ONNX Runtime's quantize_dynamic, on an MLP
1024-4096-4096-1024 (100 MB in float32) at batch 1 and 64; and a sparse
kernel (scipy CSR) against the dense GEMM at 80% and 95% sparsity.

    flock /tmp/maas-bench.lock python benchmarks/quantize.py [--threads 2] [--repeats 7]

Each framework runs in its own process (so that thread pools and memory do
not mix); for the MLP all six are loaded at once and timed in rounds, one
block (>= 0.15 s) each per round, the order rotated, so that the machine's
load changes hit all of them alike; each reports the median time per
forward over `--repeats` rounds and its peak RSS (VmHWM) after loading and
running the model. maas's models are loaded from model files as `maas
serve` loads them (mmap).
Prints Markdown tables.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

SIZES = (1024, 4096, 4096, 1024)
BATCHES = (1, 64)


def weights(seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for a, b in zip(SIZES[:-1], SIZES[1:]):
        out.append((rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(np.float32))
        out.append((rng.standard_normal(b) * 0.01).astype(np.float32))
    return out


def median_ms(fn, x, repeats):
    for _ in range(5):
        fn(x)
    inner = max(1, int(0.15 / max(_once(fn, x), 1e-6)))
    ts = []
    for _ in range(repeats):
        time.sleep(0.05)
        t = time.perf_counter()
        for _ in range(inner):
            fn(x)
        ts.append((time.perf_counter() - t) / inner)
    return float(np.median(ts) * 1e3)


def _once(fn, x):
    t = time.perf_counter()
    fn(x)
    return time.perf_counter() - t


def rss_mb():
    """This process's peak RSS (VmHWM: ru_maxrss would include the parent's
    peak, which Linux carries across fork and exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ----------------------------------------------------------------- workers

def build_maas_files(tmp):
    import maas

    model = maas.Sequential([maas.Input((SIZES[0],))] + [
        maas.layers.Dense(u, activation="relu" if i < len(SIZES) - 2 else None)
        for i, u in enumerate(SIZES[1:])])
    model.set_weights(weights())
    f32 = os.path.join(tmp, "f32.maas")
    model.save(f32)
    model.quantize("int8")
    i8 = os.path.join(tmp, "int8.maas")
    model.save(i8)
    return {"f32": f32, "int8": i8, "f32_bytes": os.path.getsize(f32),
            "int8_bytes": os.path.getsize(i8)}


def load_fn(kind, threads, path):
    """The forward function of one framework's model (loaded in this process)."""
    if kind.startswith("maas"):
        import maas

        maas.set_num_threads(threads)
        model = maas.load_model(path)
        return lambda x: model.predict_on_batch(x)   # noqa: E731  (the plan, one C call)
    if kind.startswith("torch"):
        import torch

        torch.set_num_threads(threads)
        layers = []
        w = weights()
        for i in range(0, len(w), 2):
            lin = torch.nn.Linear(*w[i].shape)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w[i].T.copy()))
                lin.bias.copy_(torch.from_numpy(w[i + 1]))
            layers += [lin, torch.nn.ReLU()] if i + 2 < len(w) else [lin]
        net = torch.nn.Sequential(*layers).eval()
        if kind == "torch_int8":
            net = torch.ao.quantization.quantize_dynamic(net, {torch.nn.Linear}, dtype=torch.qint8)

        def fn(x):
            with torch.inference_mode():
                return net(torch.from_numpy(x))
        return fn
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})   # noqa: E731


def worker(kind, threads, repeats, path):
    x_all = np.random.default_rng(1).standard_normal((64, SIZES[0])).astype(np.float32)
    fn = load_fn(kind, threads, path)
    out = {b: median_ms(fn, np.ascontiguousarray(x_all[:b]), repeats) for b in BATCHES}
    return {"ms": out, "rss_mb": rss_mb()}


def serve_worker(kind, threads, path):
    """Loads the model, then times one block per request read from stdin
    ("<batch>" -> ms per forward; "rss" -> peak RSS), so that the parent
    can interleave the frameworks block by block."""
    x_all = np.random.default_rng(1).standard_normal((64, SIZES[0])).astype(np.float32)
    fn = load_fn(kind, threads, path)
    inner = {}
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "rss":
            print(json.dumps(rss_mb()), flush=True)
            continue
        b = int(cmd)
        x = np.ascontiguousarray(x_all[:b])
        if b not in inner:          # warm-up, and forwards per block of >= 0.15 s
            for _ in range(5):
                fn(x)
            inner[b] = max(1, int(0.15 / max(_once(fn, x), 1e-6)))
        t = time.perf_counter()
        for _ in range(inner[b]):
            fn(x)
        print(json.dumps((time.perf_counter() - t) / inner[b] * 1e3), flush=True)


def run_interleaved(args, kinds):
    """Every framework in its own process, all loaded at once; then `repeats`
    rounds, each timing one block per framework and batch (the order rotated
    each round): a change of the machine's load hits all of them alike, so
    the ratios of the medians hold even on a busy machine."""
    procs = {}
    try:
        for k, p in kinds.items():
            procs[k] = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--threads", str(args.threads),
                 "--serve", k, "--path", p], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                text=True, env=os.environ)
            if procs[k].stdout.readline().strip() != "ready":
                raise RuntimeError(f"{k}: the worker did not start")
        times = {k: {b: [] for b in BATCHES} for k in kinds}
        names = list(kinds)

        def ask(k, cmd):
            procs[k].stdin.write(cmd + "\n")
            procs[k].stdin.flush()
            return json.loads(procs[k].stdout.readline())

        for r in range(args.repeats):
            order = names[r % len(names):] + names[:r % len(names)]
            for b in BATCHES:
                for k in order:
                    time.sleep(0.02)
                    times[k][b].append(ask(k, str(b)))
        return {k: {"ms": {str(b): float(np.median(v)) for b, v in times[k].items()},
                    "rss_mb": ask(k, "rss")} for k in names}
    finally:
        for p in procs.values():
            p.stdin.close()
            p.wait(timeout=60)


def build_onnx(tmp):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    w = weights()
    nodes, inits = [], []
    prev = "x"
    for i in range(0, len(w), 2):
        inits += [numpy_helper.from_array(w[i], f"w{i}"), numpy_helper.from_array(w[i + 1], f"b{i}")]
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]))
        prev = f"a{i}"
        if i + 2 < len(w):
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["n", SIZES[0]])], [helper.make_tensor_value_info(
            prev, TensorProto.FLOAT, ["n", SIZES[-1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    f32 = os.path.join(tmp, "f32.onnx")
    onnx.save(model, f32)
    i8 = os.path.join(tmp, "int8.onnx")
    quantize_dynamic(f32, i8, weight_type=QuantType.QInt8)
    return f32, i8


def sparse_worker(threads, repeats):
    """scipy CSR (x @ W computed as (W^T x^T)^T with W^T in CSR) against
    the dense OpenBLAS GEMM through maas, on a 4096x4096 kernel."""
    import scipy.sparse as sp

    import maas

    maas.set_num_threads(threads)
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4096, 4096)).astype(np.float32)
    res = {}
    for sparsity in (0.8, 0.95):
        ws = np.where(rng.random(w.shape) < sparsity, np.float32(0), w)
        wt = sp.csr_matrix(ws.T)
        kt = maas.tensor(ws)
        csr = [maas.tensor(wt.indptr.astype(np.int64)), maas.tensor(wt.indices.astype(np.int32)),
               maas.tensor(wt.data.astype(np.float32))]
        for b in BATCHES:
            x = rng.standard_normal((b, 4096)).astype(np.float32)
            xt = maas.tensor(x)
            dense = median_ms(lambda v: maas.ops.matmul(v, kt), xt, repeats)
            scipy_ms = median_ms(lambda v: (wt @ v.T).T, x, repeats)
            ours = median_ms(lambda v: maas._core.op(maas._core.OP_SPDENSE, [v] + csr, 0), xt, repeats)
            got = np.asarray(maas._core.op(maas._core.OP_SPDENSE, [xt] + csr, 0))
            np.testing.assert_allclose(got, np.asarray(maas.ops.matmul(xt, kt)), rtol=1e-3, atol=1e-3)
            res[f"{sparsity}/{b}"] = {"dense_ms": dense, "csr_ms": scipy_ms, "spdense_ms": ours}
    return res


# ------------------------------------------------------------------- main

def run_child(args, extra):
    cmd = [sys.executable, os.path.abspath(__file__), "--threads", str(args.threads),
           "--repeats", str(args.repeats)] + extra
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
    if out.returncode:
        raise RuntimeError(f"{extra}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    if "--cnn" in sys.argv[1:]:   # the digits CNN section (cnn_main, below)
        return cnn_main(sys.argv[1:])
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--worker")
    ap.add_argument("--serve")
    ap.add_argument("--path")
    ap.add_argument("--skip-sparse", action="store_true")
    args = ap.parse_args()
    if args.worker == "sparse":
        print(json.dumps(sparse_worker(args.threads, args.repeats)))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.threads, args.repeats, args.path)))
        return
    if args.serve:
        serve_worker(args.serve, args.threads, args.path)
        return
    import maas

    with tempfile.TemporaryDirectory() as tmp:
        files = build_maas_files(tmp)
        of32, oi8 = build_onnx(tmp)
        kinds = {"maas_f32": files["f32"], "maas_int8": files["int8"], "torch_f32": "",
                 "torch_int8": "", "ort_f32": of32, "ort_int8": oi8}
        res = run_interleaved(args, kinds)
    print(f"\n## int8 inference — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} vCPUs, load "
          f"average {os.getloadavg()[0]:.1f} at the end; maas int8 paths {maas.quantization.supported_isas()} "
          f"(best used); {args.threads} threads; median of {args.repeats} blocks of >= 0.15 s; "
          f"each framework in its own process, all loaded at once, their blocks interleaved. maas model files: float32 "
          f"{files['f32_bytes'] / 1e6:.1f} MB, int8 {files['int8_bytes'] / 1e6:.1f} MB "
          f"({files['int8_bytes'] / files['f32_bytes']:.3f}x).\n")
    print("| batch | maas f32 ms | maas int8 ms | torch f32 | torch int8 | ORT f32 | ORT int8 | "
          "maas int8 vs maas f32 | vs torch int8 | vs ORT int8 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for b in BATCHES:
        m = {k: v["ms"][str(b)] for k, v in res.items()}
        print(f"| {b} | {m['maas_f32']:.3f} | {m['maas_int8']:.3f} | {m['torch_f32']:.3f} | "
              f"{m['torch_int8']:.3f} | {m['ort_f32']:.3f} | {m['ort_int8']:.3f} | "
              f"{m['maas_f32'] / m['maas_int8']:.2f}x | {m['torch_int8'] / m['maas_int8']:.2f}x | "
              f"{m['ort_int8'] / m['maas_int8']:.2f}x |")
    print("\nPeak RSS (MB, the process after loading and running the model): " + ", ".join(
        f"{k} {v['rss_mb']:.0f}" for k, v in res.items()))
    if not args.skip_sparse:
        sp = run_child(args, ["--worker", "sparse"])
        print("\nSparse (scipy CSR, maas spdense) against dense (maas matmul, OpenBLAS), 4096x4096 float32 kernel:\n")
        print("| sparsity | batch | dense ms | scipy CSR ms | maas spdense ms | spdense vs dense |")
        print("|---|---|---|---|---|---|")
        for k, v in sp.items():
            s, b = k.split("/")
            print(f"| {float(s):.0%} | {b} | {v['dense_ms']:.3f} | {v['csr_ms']:.3f} | "
                  f"{v['spdense_ms']:.3f} | {v['dense_ms'] / v['spdense_ms']:.2f}x |")


# ------------------------------------------------------------ digits CNN
# `python benchmarks/quantize.py --cnn`: the digits CNN (8x8x1, the test
# suite's tests/test_quantization_conv.py) at batch 1 and 128: maas int8
# (dynamic, and static with calibrated scales) against maas float32,
# PyTorch's eager-mode static quantization (torch.ao.quantization fuse /
# prepare / convert, x86 backend: FBGEMM) and ONNX Runtime's quantize_dynamic
# and quantize_static (QDQ) of the same trained weights; each in its own
# process, accuracy on the digits test split beside the times.

CNN_BATCHES = (1, 128)


def cnn_data():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
    return train_test_split(x, d.target, test_size=0.2, random_state=0, stratify=d.target)


def cnn_build_files(tmp):
    import maas

    L = maas.layers
    xtr, xte, ytr, yte = cnn_data()
    maas.utils.set_random_seed(0)
    model = maas.Sequential([
        maas.Input((8, 8, 1)),
        L.Conv2D(32, 3, padding="same"), L.BatchNormalization(), L.Activation("relu"),
        L.MaxPooling2D(),
        L.Conv2D(64, 3, padding="same", activation="relu"), L.MaxPooling2D(),
        L.Conv2D(128, 3, padding="same", activation="relu"),
        L.Flatten(), L.Dense(256, activation="relu"), L.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(xtr, ytr, epochs=5, batch_size=32, verbose=0)
    files = {"f32": os.path.join(tmp, "cnn_f32.maas"), "int8": os.path.join(tmp, "cnn_int8.maas"),
             "int8_static": os.path.join(tmp, "cnn_int8_static.maas"),
             "onnx_f32": os.path.join(tmp, "cnn_f32.onnx"), "npz": os.path.join(tmp, "cnn.npz")}
    model.save(files["f32"], include_optimizer=False)
    model.export(files["onnx_f32"], format="onnx")
    maas.quantization.quantize(model, "int8").save(files["int8"], include_optimizer=False)
    maas.quantization.quantize(model, "int8", calibration_data=xtr[:256]).save(
        files["int8_static"], include_optimizer=False)
    np.savez(files["npz"], *[np.asarray(w) for w in model.get_weights()],
             eps=np.float32(model.layers[1].epsilon))
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    pre = os.path.join(tmp, "cnn_f32_pre.onnx")   # constant-folded (kernels as initializers)
    quant_pre_process(files["onnx_f32"], pre)
    files["onnx_int8"] = os.path.join(tmp, "cnn_int8_dyn.onnx")
    quantize_dynamic(pre, files["onnx_int8"], weight_type=QuantType.QInt8)

    class Reader(CalibrationDataReader):
        def __init__(self, name):
            self.rows = iter([{name: xtr[i:i + 32]} for i in range(0, 256, 32)])

        def get_next(self):
            return next(self.rows, None)

    import onnxruntime as ort
    name = ort.InferenceSession(files["onnx_f32"], providers=["CPUExecutionProvider"]) \
        .get_inputs()[0].name
    files["onnx_int8_static"] = os.path.join(tmp, "cnn_int8_static.onnx")
    quantize_static(pre, files["onnx_int8_static"], Reader(name),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True)
    sizes = {k: os.path.getsize(v) for k, v in files.items() if k != "npz"}
    return files, sizes


def cnn_torch_net(npz, quantized, xcal):
    """The same CNN in PyTorch (NCHW): Keras's kernels transposed, the
    Flatten order (h, w, c) folded into the first Dense's rows; quantized:
    conv+bn+relu, conv+relu, linear+relu fused, then prepare, calibrate on
    256 training images and convert (eager mode, the x86 backend)."""
    import torch
    import torch.ao.quantization as tq
    from torch import nn

    z = np.load(npz)
    w = [z[f"arr_{i}"] for i in range(len(z.files) - 1)]
    eps = float(z["eps"])

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
            self.c1, self.bn = nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32, eps=eps)
            self.r1, self.p1 = nn.ReLU(), nn.MaxPool2d(2)
            self.c2, self.r2, self.p2 = nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
            self.c3, self.r3 = nn.Conv2d(64, 128, 3, padding=1), nn.ReLU()
            self.f1, self.r4 = nn.Linear(512, 256), nn.ReLU()
            self.f2 = nn.Linear(256, 10)

        def forward(self, x):
            x = self.quant(x)
            x = self.p1(self.r1(self.bn(self.c1(x))))
            x = self.p2(self.r2(self.c2(x)))
            x = self.r3(self.c3(x))
            x = self.r4(self.f1(torch.flatten(x, 1)))
            return torch.softmax(self.dequant(self.f2(x)), dim=1)

    net = Net()
    with torch.no_grad():
        k = iter(w)
        for conv in (net.c1,):
            conv.weight.copy_(torch.from_numpy(next(k).transpose(3, 2, 0, 1).copy()))
            conv.bias.copy_(torch.from_numpy(next(k)))
        g, b, mean, var = next(k), next(k), next(k), next(k)
        net.bn.weight.copy_(torch.from_numpy(g))
        net.bn.bias.copy_(torch.from_numpy(b))
        net.bn.running_mean.copy_(torch.from_numpy(mean))
        net.bn.running_var.copy_(torch.from_numpy(var))
        for conv in (net.c2, net.c3):
            conv.weight.copy_(torch.from_numpy(next(k).transpose(3, 2, 0, 1).copy()))
            conv.bias.copy_(torch.from_numpy(next(k)))
        w1 = next(k)   # rows in (h, w, c) order -> (c, h, w)
        w1 = w1.reshape(2, 2, 128, 256).transpose(2, 0, 1, 3).reshape(512, 256)
        net.f1.weight.copy_(torch.from_numpy(w1.T.copy()))
        net.f1.bias.copy_(torch.from_numpy(next(k)))
        net.f2.weight.copy_(torch.from_numpy(next(k).T.copy()))
        net.f2.bias.copy_(torch.from_numpy(next(k)))
    net.eval()
    if quantized:
        torch.backends.quantized.engine = "x86"
        net.qconfig = tq.get_default_qconfig("x86")
        tq.fuse_modules(net, [["c1", "bn", "r1"], ["c2", "r2"], ["c3", "r3"], ["f1", "r4"]],
                        inplace=True)
        tq.prepare(net, inplace=True)
        with torch.inference_mode():
            for i in range(0, len(xcal), 32):
                net(torch.from_numpy(xcal[i:i + 32].transpose(0, 3, 1, 2).copy()))
        tq.convert(net, inplace=True)
    return net


def cnn_worker(kind, threads, repeats, files):
    xtr, xte, _, yte = cnn_data()
    if kind.startswith("maas"):
        import maas

        maas.set_num_threads(threads)
        model = maas.load_model(files[{"maas_f32": "f32", "maas_int8": "int8",
                                       "maas_int8_static": "int8_static"}[kind]])
        fn = lambda x: np.asarray(model.predict_on_batch(x))   # noqa: E731
        prep = lambda x: x   # noqa: E731
    elif kind.startswith("torch"):
        import torch

        torch.set_num_threads(threads)
        net = cnn_torch_net(files["npz"], kind == "torch_int8_static", xtr[:256])

        def fn(x):
            with torch.inference_mode():
                return net(x).numpy()
        prep = lambda x: torch.from_numpy(x.transpose(0, 3, 1, 2).copy())   # noqa: E731
    else:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(files[{"ort_f32": "onnx_f32", "ort_int8": "onnx_int8",
                                           "ort_int8_static": "onnx_int8_static"}[kind]], so,
                                    providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        fn = lambda x: sess.run(None, {name: x})[0]   # noqa: E731
        prep = lambda x: x   # noqa: E731
    acc = float((np.concatenate([fn(prep(np.ascontiguousarray(xte[i:i + 128])))
                                 for i in range(0, len(xte), 128)]).argmax(1) == yte).mean())
    out = {b: median_ms(fn, prep(np.ascontiguousarray(xte[:b])), repeats) for b in CNN_BATCHES}
    return {"ms": out, "acc": acc, "rss_mb": rss_mb()}


CNN_KINDS = ("maas_f32", "maas_int8", "maas_int8_static", "torch_f32", "torch_int8_static",
             "ort_f32", "ort_int8", "ort_int8_static")


def cnn_main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--cnn", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--cnn-worker")
    ap.add_argument("--files")
    args = ap.parse_args(argv)
    if args.cnn_worker:
        print(json.dumps(cnn_worker(args.cnn_worker, args.threads, args.repeats,
                                    json.loads(args.files))))
        return
    import maas

    with tempfile.TemporaryDirectory() as tmp:
        files, sizes = cnn_build_files(tmp)
        res = {}
        for k in CNN_KINDS:
            cmd = [sys.executable, os.path.abspath(__file__), "--cnn", "--threads",
                   str(args.threads), "--repeats", str(args.repeats), "--cnn-worker", k,
                   "--files", json.dumps(files)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
            if out.returncode:
                raise RuntimeError(f"{k}: {out.stderr[-2000:]}")
            res[k] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\n## int8 digits CNN — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} vCPUs, load "
          f"average {os.getloadavg()[0]:.1f} at the end; maas int8 paths "
          f"{maas.quantization.supported_isas()} (best used); {args.threads} threads; median of "
          f"{args.repeats} blocks of >= 0.15 s; each framework in its own process. CNN: "
          f"Conv2D(32)+BN+ReLU, pool, Conv2D(64), pool, Conv2D(128), Dense(256), Dense(10) on "
          f"8x8x1 digits, trained 5 epochs. Files: maas float32 {sizes['f32']} B, int8 "
          f"{sizes['int8']} B ({sizes['int8'] / sizes['f32']:.3f}x); ONNX float32 "
          f"{sizes['onnx_f32']} B, ORT int8 dynamic {sizes['onnx_int8']} B, static "
          f"{sizes['onnx_int8_static']} B.\n")
    names = {"maas_f32": "maas f32", "maas_int8": "maas int8 (dynamic)",
             "maas_int8_static": "maas int8 (static)", "torch_f32": "torch f32",
             "torch_int8_static": "torch int8 (eager static, x86/fbgemm)", "ort_f32": "ORT f32",
             "ort_int8": "ORT int8 quantize_dynamic", "ort_int8_static": "ORT int8 quantize_static (QDQ)"}
    print("| model | accuracy | " + " | ".join(f"batch {b} ms" for b in CNN_BATCHES) + " | "
          + " | ".join(f"maas int8 dyn / static vs this, batch {b}" for b in CNN_BATCHES)
          + " | peak RSS MB |")
    print("|---|---|" + "---|" * (2 * len(CNN_BATCHES)) + "---|")
    for k in CNN_KINDS:
        r = res[k]
        ms = [r["ms"][str(b)] for b in CNN_BATCHES]
        ratios = [f"{r['ms'][str(b)] / res['maas_int8']['ms'][str(b)]:.2f}x / "
                  f"{r['ms'][str(b)] / res['maas_int8_static']['ms'][str(b)]:.2f}x"
                  for b in CNN_BATCHES]
        print(f"| {names[k]} | {r['acc']:.4f} | " + " | ".join(f"{m:.3f}" for m in ms) + " | "
              + " | ".join(ratios) + f" | {r['rss_mb']:.0f} |")
    print("\n(ratios > 1: maas int8 is faster than that row.)")


if __name__ == "__main__":
    main()
