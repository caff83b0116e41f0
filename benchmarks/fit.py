"""fit() on a 784-256-128-10 MLP: maas vs a PyTorch training loop vs Keras 3,
measured side by side in one run (samples per second, median of repeats).

    python benchmarks/fit.py [--quick] [--threads N]

Keras runs only when `keras` and a backend (tensorflow-cpu) import; the
table says so otherwise. Data: 8,192 random rows with a fixed seed (the
shapes of MNIST; the speed does not depend on the values).
"""
from __future__ import annotations

import argparse
import os
import statistics
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


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-keras", action="store_true")
    args = ap.parse_args()
    import torch

    import maas

    maas.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    x, y = data(2048 if args.quick else 8192)
    epochs = 1 if args.quick else 2
    print(f"fit, MLP 784-256-128-10, Adam, {len(x)} rows x {epochs} epochs, {args.threads} threads, "
          f"median of {args.repeats}\n")
    print("| batch | maas samples/s | PyTorch samples/s | Keras samples/s | maas/PyTorch | maas/Keras |")
    print("|---|---|---|---|---|---|")
    for batch in (32, 128):
        m, planned = bench_maas(x, y, batch, epochs, args.repeats)
        t = bench_torch(x, y, batch, epochs, args.repeats)
        k, note = (None, "skipped") if args.no_keras else bench_keras(x, y, batch, epochs, args.repeats)
        kcol = f"{k:,.0f}" if k else note
        kr = f"{m / k:.2f}x" if k else "-"
        print(f"| {batch} | {m:,.0f}{'' if planned else ' (eager)'} | {t:,.0f} | {kcol} | {m / t:.2f}x | {kr} |")


if __name__ == "__main__":
    main()
