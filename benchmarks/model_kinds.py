"""fit() speed of one network written three ways: Sequential, a two-input
functional model, and a subclassed model (MLP 784-256-128-10, Adam), as the
ratio to the Sequential figure, in one process (the same framework: only the
model kind changes). Before the traced engine the subclassed and two-input
models trained eagerly (0.86x); the target is 0.95x or better.

    python benchmarks/model_kinds.py [--rows 8192] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import maas

L = maas.layers


def sequential():
    return maas.Sequential([maas.Input((784,)), L.Dense(256, activation="relu"),
                            L.Dense(128, activation="relu"), L.Dense(10)])


def two_inputs():
    a, b = maas.Input((392,)), maas.Input((392,))
    h = L.Concatenate()([a, b])
    h = L.Dense(128, activation="relu")(L.Dense(256, activation="relu")(h))
    return maas.Model([a, b], L.Dense(10)(h))


class Subclassed(maas.Model):
    def __init__(self):
        super().__init__()
        self.d1, self.d2, self.d3 = L.Dense(256, activation="relu"), L.Dense(128, activation="relu"), L.Dense(10)

    def call(self, x):
        return self.d3(self.d2(self.d1(x)))


KINDS = {"sequential": sequential, "functional-2-inputs": two_inputs, "subclassed": Subclassed}


def run(kind, x, y, batch, repeats):
    rates = []
    for r in range(repeats):
        maas.utils.set_random_seed(r)
        model = KINDS[kind]()
        model.compile(optimizer=maas.optimizers.Adam(1e-3),
                      loss=maas.losses.SparseCategoricalCrossentropy(from_logits=True))
        xs = [x[:, :392], x[:, 392:]] if kind == "functional-2-inputs" else x
        warm = [a[:batch * 2] for a in xs] if isinstance(xs, list) else xs[:batch * 2]
        model.fit(warm, y[:batch * 2], batch_size=batch, epochs=1, verbose=0)  # traces
        t = time.perf_counter()
        model.fit(xs, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
        rates.append(len(y) / (time.perf_counter() - t))
        assert model._plan is not None and model._plan.eager_reason is None, kind
    return statistics.median(rates)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.random((args.rows, 784), dtype=np.float32)
    y = rng.integers(0, 10, args.rows)
    print(f"fit, MLP 784-256-128-10, Adam, {args.rows} rows, {maas.get_num_threads()} threads, "
          f"median of {args.repeats}\n")
    print("| batch | model | samples/s | / Sequential |\n|---|---|---|---|")
    for batch in (32, 128):
        base = None
        for kind in KINDS:
            rate = run(kind, x, y, batch, args.repeats)
            base = base or rate
            print(f"| {batch} | {kind} | {rate:,.0f} | {rate / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
