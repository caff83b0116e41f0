"""Convolutional networks: maas vs PyTorch (channels_last), in one run.

    flock /tmp/maas-bench.lock python benchmarks/cnn.py [--threads 2] [--repeats 3] [--quick]

Cases (images per second, median of repeats, each framework and case in its
own process):
  * the issue's small CNN (conv32-conv32-pool-conv64-conv64-pool-dense512-
    dense10 on 32x32x3, 3x3 "same" convolutions, ReLU, SGD momentum 0.9):
    training and inference at batch 128 and 32;
  * ResNet-18 with the CIFAR stem (maas.applications.ResNet18(stem="cifar"),
    the same network in torch.nn) training at batch 32.
Useful GFLOP/s counts 2 flops per multiply-add of the convolutions and
dense layers (training: 3x the forward), against the machine's SGEMM peak
measured in the same run (maas's GEMM and torch.mm on 2048^3). A profile
times each layer of the small CNN alone (forward; forward + backward) in
both frameworks, which says which kernel holds a miss back.

Keras 3 on TensorFlow or JAX runs only if `keras` and a backend import; on
this machine they are not installed, and the table says so.
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

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# ------------------------------------------------------------------ models


def small_cnn_spec():
    """(kind, params) per layer of the issue's small CNN, for the FLOP count."""
    return [("conv", 32, 32, 3, 32), ("conv", 32, 32, 32, 32), ("pool",), ("conv", 16, 16, 32, 64),
            ("conv", 16, 16, 64, 64), ("pool",), ("dense", 8 * 8 * 64, 512), ("dense", 512, 10)]


def small_cnn_macs():
    m = 0
    for s in small_cnn_spec():
        if s[0] == "conv":
            _, h, w, cin, cout = s
            m += h * w * cin * cout * 9
        elif s[0] == "dense":
            m += s[1] * s[2]
    return m


def resnet18_cifar_macs():
    m = 32 * 32 * 3 * 64 * 9
    hw, cin = 32, 64
    for stage, c in enumerate((64, 128, 256, 512)):
        for b in range(2):
            stride = 2 if stage > 0 and b == 0 else 1
            out = hw // stride
            m += out * out * cin * c * 9 + out * out * c * c * 9
            if stride != 1 or cin != c:
                m += out * out * cin * c
            hw, cin = out, c
    return m + 512 * 10


def maas_small_cnn():
    import maas

    L = maas.layers
    return maas.Sequential([
        maas.Input((32, 32, 3)),
        L.Conv2D(32, 3, padding="same", activation="relu"),
        L.Conv2D(32, 3, padding="same", activation="relu"),
        L.MaxPooling2D(2),
        L.Conv2D(64, 3, padding="same", activation="relu"),
        L.Conv2D(64, 3, padding="same", activation="relu"),
        L.MaxPooling2D(2),
        L.Flatten(),
        L.Dense(512, activation="relu"),
        L.Dense(10)])


def torch_small_cnn():
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(8 * 8 * 64, 512), nn.ReLU(), nn.Linear(512, 10))


def torch_resnet18_cifar():
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, c, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c)
            self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c)
            self.down = None
            if stride != 1 or cin != c:
                self.down = nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c))

        def forward(self, x):
            h = self.bn2(self.conv2(self.bn1(self.conv1(x)).relu()))
            return (h + (x if self.down is None else self.down(x))).relu()

    layers = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    cin = 64
    for stage, c in enumerate((64, 128, 256, 512)):
        for b in range(2):
            layers.append(Block(cin, c, 2 if stage > 0 and b == 0 else 1))
            cin = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 10)]
    return nn.Sequential(*layers)


def data(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 32, 32, 3), dtype=np.float32), rng.integers(0, 10, n)


# ------------------------------------------------------------------ workers


def run_maas(case, batch, steps, repeats, nofold=False):
    import maas
    import maas.engine

    maas.engine.FOLD_BATCHNORM = not nofold

    model_fn = maas_small_cnn if case.startswith("cnn") else (
        lambda: maas.applications.ResNet18(input_shape=(32, 32, 3), classes=10, stem="cifar",
                                           classifier_activation=None))
    x, y = data(batch * steps)
    times = []
    maas.utils.set_random_seed(0)
    model = model_fn()
    model.compile(optimizer=maas.optimizers.SGD(0.01, momentum=0.9),
                  loss=maas.losses.SparseCategoricalCrossentropy(from_logits=True))
    train = case.endswith("train")
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        if train:
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
        else:
            model.predict(x, batch_size=batch, verbose=0)
        if r:  # the first run traces and allocates the plan: a warm-up
            times.append(time.perf_counter() - t0)
    return {"img_s": len(x) / statistics.median(times), "eager_reason": model.eager_reason}


def run_torch(case, batch, steps, repeats):
    import torch

    torch.manual_seed(0)
    model = torch_small_cnn() if case.startswith("cnn") else torch_resnet18_cifar()
    model = model.to(memory_format=torch.channels_last)
    x, y = data(batch * steps)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    yt = torch.from_numpy(y.astype(np.int64))
    train = case.endswith("train")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        if train:
            model.train()
            for i in range(steps):
                xb, yb = xt[i * batch:(i + 1) * batch], yt[i * batch:(i + 1) * batch]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(xb), yb)
                loss.backward()
                opt.step()
        else:
            model.eval()
            with torch.inference_mode():
                for i in range(steps):
                    model(xt[i * batch:(i + 1) * batch])
        if r:
            times.append(time.perf_counter() - t0)
    return {"img_s": len(x) / statistics.median(times)}


def run_peak():
    import maas
    import torch

    n = 2048
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    ta = maas.tensor(a)
    out = {}
    for name, fn in (("maas", lambda: maas.ops.matmul(ta, ta)),
                     ("torch", lambda: torch.mm(torch.from_numpy(a), torch.from_numpy(a)))):
        fn()
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        out[name] = 2 * n ** 3 / min(ts) / 1e9
    return out


def run_profile(batch, repeats):
    """Each layer of the small CNN alone at its input shape: forward, and
    forward + backward (gradient of sum(out * R) to the input and weights)."""
    import maas
    import torch

    model = maas_small_cnn()
    tmodel = torch_small_cnn().to(memory_format=torch.channels_last)
    tlayers = [m for m in tmodel if not isinstance(m, torch.nn.ReLU)]
    rng = np.random.default_rng(0)
    x = rng.random((batch, 32, 32, 3), dtype=np.float32)
    rows = []
    for layer, tl in zip(model.layers, tlayers):
        out = np.asarray(layer(x))
        R = rng.random(out.shape, dtype=np.float32)
        xt, Rt = maas.tensor(x), maas.tensor(R)

        def fwd():
            layer(xt)

        def fwd_bwd():
            with maas.GradientTape() as tape:
                tape.watch(xt)
                loss = (layer(xt) * Rt).sum()
            tape.gradient(loss, [xt] + list(layer.trainable_weights))

        if x.ndim == 4:
            tx = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
            tR = torch.from_numpy(R).permute(0, 3, 1, 2) if R.ndim == 4 else torch.from_numpy(R)
        else:
            tx, tR = torch.from_numpy(x), torch.from_numpy(R)
        if isinstance(tl, torch.nn.Flatten):  # NHWC flatten order differs; the cost does not
            tR = torch.from_numpy(R)
        tx.requires_grad_(True)

        def tfwd():
            with torch.no_grad():
                tl(tx)

        def tfwd_bwd():
            tx.grad = None
            for p in tl.parameters():
                p.grad = None
            (tl(tx) * tR).sum().backward()

        def best(fn):
            fn()
            ts = []
            for _ in range(max(repeats, 5)):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            return 1e3 * statistics.median(ts)

        rows.append({"layer": type(layer).__name__, "shape": list(x.shape),
                     "maas_fwd_ms": best(fwd), "maas_fwd_bwd_ms": best(fwd_bwd),
                     "torch_fwd_ms": best(tfwd), "torch_fwd_bwd_ms": best(tfwd_bwd)})
        x = out
    return rows


CASES = {  # name: (batch, steps)
    "cnn_b128_train": (128, 8),
    "cnn_b32_train": (32, 16),
    "cnn_b128_infer": (128, 16),
    "cnn_b32_infer": (32, 32),
    "resnet18_b32_train": (32, 4),
    "resnet18_b32_infer": (32, 8),
}


def worker(args):
    import torch

    torch.set_num_threads(args.threads)
    import maas

    maas.set_num_threads(args.threads)
    if args.worker == "peak":
        res = run_peak()
    elif args.worker == "profile":
        res = run_profile(args.batch, args.repeats)
    else:
        batch, steps = CASES[args.case]
        if args.quick:
            steps = max(2, steps // 4)
        if args.worker == "maas":
            res = run_maas(args.case, batch, steps, args.repeats, args.nofold)
        else:
            res = run_torch(args.case, batch, steps, args.repeats)
    print(json.dumps(res))


def spawn(*argv):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *argv], capture_output=True,
                         text=True, env=env, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def keras_available():
    try:
        import importlib.util

        return importlib.util.find_spec("keras") is not None and (
            importlib.util.find_spec("tensorflow") is not None or importlib.util.find_spec("jax") is not None)
    except Exception:
        return False


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--worker")
    p.add_argument("--case")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--nofold", action="store_true",
                   help="(worker) predict plans keep BatchNormalization unfolded")
    args = p.parse_args()
    if args.worker:
        return worker(args)
    common = ["--threads", str(args.threads), "--repeats", str(args.repeats)] + (["--quick"] if args.quick else [])
    import torch

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads; "
          f"torch {torch.__version__}; load average {os.getloadavg()[0]:.1f} at start")
    peak = spawn("--worker", "peak", *common)
    print(f"SGEMM peak (2048^3): maas {peak['maas']:.1f} GFLOP/s, torch.mm {peak['torch']:.1f} GFLOP/s")
    if not keras_available():
        print("Keras 3 (TensorFlow / JAX backends): not installed here; not measured")
    macs = {"cnn": small_cnn_macs(), "resnet18": resnet18_cifar_macs()}
    rows = []
    print("| case | maas img/s | PyTorch channels_last img/s | maas / PyTorch | maas useful GFLOP/s | % of SGEMM peak | PyTorch GFLOP/s |")
    print("|---|---|---|---|---|---|---|")
    for case in CASES:
        m = spawn("--worker", "maas", "--case", case, *common)
        t = spawn("--worker", "torch", "--case", case, *common)
        flops = 2 * macs[case.split("_")[0]] * (3 if case.endswith("train") else 1)
        gm, gt = m["img_s"] * flops / 1e9, t["img_s"] * flops / 1e9
        row = dict(case=case, maas=m["img_s"], torch=t["img_s"], ratio=m["img_s"] / t["img_s"],
                   maas_gflops=gm, torch_gflops=gt, peak=peak["maas"], eager_reason=m["eager_reason"])
        rows.append(row)
        print(f"| {case} | {m['img_s']:.0f} | {t['img_s']:.0f} | {row['ratio']:.2f}x | {gm:.1f} | "
              f"{100 * gm / peak['maas']:.0f}% | {gt:.1f} |" + (f" eager: {m['eager_reason']}" if m["eager_reason"] else ""),
              flush=True)
    # BatchNormalization folding: ResNet-18's predict with and without it
    fold = {"img_s": next(r["maas"] for r in rows if r["case"] == "resnet18_b32_infer")}
    nofold = spawn("--worker", "maas", "--case", "resnet18_b32_infer", "--nofold", *common)
    print(f"\nResNet-18 predict b32: BN folded {fold['img_s']:.0f} img/s (the table's row), "
          f"unfolded {nofold['img_s']:.0f} img/s: folding {fold['img_s'] / nofold['img_s']:.2f}x")
    prof = spawn("--worker", "profile", "--batch", "128", *common)
    print("\nPer layer of the small CNN at batch 128, alone (median ms):")
    print("| layer | input | maas fwd | torch fwd | maas fwd+bwd | torch fwd+bwd |")
    print("|---|---|---|---|---|---|")
    for r in prof:
        print(f"| {r['layer']} | {tuple(r['shape'])} | {r['maas_fwd_ms']:.2f} | {r['torch_fwd_ms']:.2f} | "
              f"{r['maas_fwd_bwd_ms']:.2f} | {r['torch_fwd_bwd_ms']:.2f} |")
    print(f"# load average {os.getloadavg()[0]:.1f} at the end (other engineers' builds and tests shared the machine)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"peak": peak, "rows": rows, "profile": prof,
                       "fold": {"folded": fold, "unfolded": nofold}}, f, indent=1)


if __name__ == "__main__":
    main()
