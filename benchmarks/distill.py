"""Does distillation help on digits? A 64-unit student (half the 128-unit
teacher's width) distilled with maas.distillation.Distiller against the
same student (same initial weights, same epochs, same batches) trained
alone, over several seeds and (temperature, alpha) settings.

    python benchmarks/distill.py [--seeds 5] [--epochs 8] [--fraction 1.0]

Per seed: a teacher (seed s; 128 units, 15 epochs unless
``--teacher-width``/``--teacher-epochs`` say otherwise); the student's initial
weights from seed 100 + s, shared by the alone run and every distilled run
of that seed. Prints a markdown table: mean and standard deviation of test
accuracy (360 test rows: one row is 0.28 points) and the paired difference
distilled - alone, with the number of seeds where distillation won / tied /
lost. ``--fraction`` trains the students (not the teacher) on a stratified
part of the training rows.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import maas
from maas.distillation import Distiller


def net(hidden, seed):
    maas.utils.set_random_seed(seed)
    return maas.Sequential([maas.Input((64,)), maas.layers.Dense(hidden, activation="relu"),
                            maas.layers.Dense(10)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--fraction", type=float, default=1.0)
    ap.add_argument("--teacher-width", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3, help="the students' Adam learning rate")
    ap.add_argument("--teacher-epochs", type=int, default=15)
    ap.add_argument("--settings", default="1:0.1,3:0.1,10:0.1,3:0.5,10:0.5")
    a = ap.parse_args()
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.2, random_state=0,
                                          stratify=d.target)
    if a.fraction < 1.0:
        xs, _, ys, _ = train_test_split(xtr, ytr, train_size=a.fraction, random_state=0,
                                        stratify=ytr)
    else:
        xs, ys = xtr, ytr
    settings = [tuple(float(v) for v in s.split(":")) for s in a.settings.split(",")]
    sce = maas.losses.SparseCategoricalCrossentropy(from_logits=True)

    def acc(m):
        return float((m.predict(xte, verbose=0).argmax(1) == yte).mean())

    tname = f"teacher({a.teacher_width}, {a.teacher_epochs} epochs)"
    rows = {tname: [], "student(64) alone": []}
    rows.update({f"distilled T={t:g} alpha={al:g}": [] for t, al in settings})
    t0 = time.time()
    for s in range(a.seeds):
        teacher = net(a.teacher_width, s)
        teacher.compile(optimizer="adam", loss=sce)
        maas.utils.set_random_seed(1000 + s)
        teacher.fit(xtr, ytr, epochs=a.teacher_epochs, batch_size=32, verbose=0)
        rows[tname].append(acc(teacher))
        init = net(64, 100 + s).get_weights()

        def student():
            m = net(64, 100 + s)
            m.set_weights(init)
            return m
        alone = student()
        alone.compile(optimizer=maas.optimizers.Adam(a.lr), loss=sce)
        maas.utils.set_random_seed(2000 + s)   # the same shuffles for every student of seed s
        alone.fit(xs, ys, epochs=a.epochs, batch_size=32, verbose=0)
        rows["student(64) alone"].append(acc(alone))
        for t, al in settings:
            st = student()
            dist = Distiller(student=st, teacher=teacher, temperature=t, alpha=al)
            dist.compile(optimizer=maas.optimizers.Adam(a.lr), student_loss_fn=sce,
                         distillation_loss_fn=maas.losses.KLDivergence())
            maas.utils.set_random_seed(2000 + s)
            dist.fit(xs, ys, epochs=a.epochs, batch_size=32, verbose=0)
            rows[f"distilled T={t:g} alpha={al:g}"].append(acc(st))
    base = rows["student(64) alone"]
    print(f"# digits, {a.seeds} seeds, {a.epochs} epochs, lr {a.lr:g}, students on {len(xs)} rows, "
          f"load {os.getloadavg()[0]:.1f}, {time.time() - t0:.0f} s")
    print("| model | mean acc | std | min | max | distilled - alone (mean) | won/tied/lost |")
    print("|---|---|---|---|---|---|---|")
    for k, v in rows.items():
        diff = [p - q for p, q in zip(v, base)]
        wtl = (f"{sum(d > 0 for d in diff)}/{sum(d == 0 for d in diff)}/{sum(d < 0 for d in diff)}"
               if k.startswith("distilled") else "")
        dm = f"{statistics.mean(diff) * 100:+.2f} pts" if k.startswith("distilled") else ""
        print(f"| {k} | {statistics.mean(v):.4f} | {statistics.pstdev(v):.4f} | {min(v):.4f} | "
              f"{max(v):.4f} | {dm} | {wtl} |")


if __name__ == "__main__":
    main()
