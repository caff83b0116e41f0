"""One rank of the data-parallel tests (tests/test_distribution.py): run as
``mpiexec -n 2 python tests/mpi_worker.py SCENARIO OUTDIR [OPTIMIZER]``, or
imported and run in one process (``run(..., distributed=False)``) for the
reference. Each rank writes what it saw to OUTDIR/rank<r>.json and its final
weights to OUTDIR/rank<r>.npz."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sys

import numpy as np


def data():
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    return (x / 16).astype("float32"), y.astype("int64")


def weights_hash(model) -> str:
    h = hashlib.sha256()
    for v in model.weights:
        h.update(np.ascontiguousarray(np.asarray(v)).tobytes())
    return h.hexdigest()


def make_model(maas, optimizer, custom_step=False):
    if custom_step == "cnn":     # digits as 8x8x1 images
        model = maas.Sequential([maas.Input((8, 8, 1)), maas.layers.Conv2D(8, 3, activation="relu"),
                                 maas.layers.MaxPooling2D(), maas.layers.Flatten(),
                                 maas.layers.Dense(10)])
    elif custom_step == "lstm":  # digits as 8 steps of 8 pixels
        model = maas.Sequential([maas.Input((8, 8)), maas.layers.LSTM(16), maas.layers.Dense(10)])
    elif custom_step == "bn":
        model = maas.Sequential([maas.Input((64,)), maas.layers.Dense(32),
                                 maas.layers.BatchNormalization(), maas.layers.Activation("relu"),
                                 maas.layers.Dense(10)])
    elif custom_step:
        class Custom(maas.Model):
            """A model with its own train_step (the eager path under a tape)."""

            def __init__(self):
                super().__init__()
                self.d1 = maas.layers.Dense(32, activation="relu")
                self.d2 = maas.layers.Dense(10)

            def call(self, x, training=False):
                return self.d2(self.d1(x))

            def train_step(self, data):
                x, y = data
                with maas.GradientTape() as tape:
                    loss = self.compute_loss(x, y, self(x, training=True))
                tv = self.trainable_variables
                self.optimizer.apply_gradients(zip(tape.gradient(loss, tv), tv))
                self._loss_tracker.update_state([float(np.asarray(loss))],
                                                sample_weight=[len(x)])
                return {"loss": self._loss_tracker.result()}

        model = Custom()
        model(np.zeros((1, 64), np.float32))
    else:
        model = maas.Sequential([maas.Input((64,)), maas.layers.Dense(32, activation="relu"),
                                 maas.layers.Dense(10)])
    opt = {"sgd": lambda: maas.optimizers.SGD(0.05, momentum=0.9),
           "adam": lambda: maas.optimizers.Adam(1e-3),
           "adagrad": lambda: maas.optimizers.Adagrad(0.05)}[optimizer]()
    model.compile(optimizer=opt,
                  loss=maas.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=None if custom_step in (True, "custom") else ["accuracy"])
    return model


def run(scenario, outdir, optimizer="adam", distributed=True):
    import maas
    from maas import callbacks as cbm

    maas.utils.set_random_seed(7)
    dp = None
    if distributed:
        dp = maas.distribution.DataParallel()
        maas.distribution.set_distribution(dp)
    rank = dp.rank if dp else 0
    x, y = data()
    kind = optimizer if optimizer in ("custom", "cnn", "lstm", "bn") else False
    if kind == "cnn":
        x = x.reshape(-1, 8, 8, 1)
    elif kind == "lstm":
        x = x.reshape(-1, 8, 8)
    xt, yt, xv, yv = x[:1000], y[:1000], x[1000:1400], y[1000:1400]
    custom = kind == "custom"
    model = make_model(maas, "adam" if kind in ("cnn", "lstm", "bn") else
                       "sgd" if custom else optimizer, custom_step=kind)
    hashes = []
    record = cbm.LambdaCallback(on_epoch_end=lambda e, logs: hashes.append(weights_hash(model)))
    out = {"rank": rank}
    if scenario == "train":
        cbs = [record, cbm.CSVLogger(os.path.join(outdir, "log.csv"))]
        if not custom:  # (the subclass is not registered for saving)
            cbs.append(cbm.ModelCheckpoint(os.path.join(outdir, "ckpt.maas")))
        hist = model.fit(xt, yt, batch_size=64, epochs=3, verbose=1 if distributed else 0,
                         validation_data=(xv, yv), callbacks=cbs)
        out["history"] = hist.history
        out["hashes"] = hashes
        out["evaluate"] = model.evaluate(x[1400:], y[1400:], verbose=0, return_dict=True)
        out["eager_reason"] = model.eager_reason
        pred = model.predict(x[1400:], batch_size=50, verbose=0)
        out["moving"] = [float(np.asarray(v).sum()) for v in model.weights if "moving" in v.name]
        if pred is not None:
            np.save(os.path.join(outdir, f"pred_{'rank%d' % rank if distributed else 'one'}.npy"), pred)
    elif scenario == "earlystop":
        stop = cbm.EarlyStopping(monitor="val_loss", min_delta=1e9, patience=1)
        hist = model.fit(xt, yt, batch_size=64, epochs=10, verbose=0,
                         validation_data=(xv, yv), callbacks=[record, stop])
        out["epochs"] = len(hist.history["loss"])
        out["hashes"] = hashes
    elif scenario == "resume":  # continue from a checkpoint another run wrote
        model = maas.load_model(os.path.join(outdir, "ckpt.maas"))
        out["start_hash"] = weights_hash(model)
        model.fit(xt, yt, batch_size=64, epochs=1, verbose=0, shuffle=False)
        out["hashes"] = [weights_hash(model)]
        model.save(os.path.join(outdir, f"resumed_{'dp' if distributed else 'one'}.maas"))
    elif scenario in ("fail-exception", "fail-kill"):
        def boom(batch, logs):
            if rank == 1 and batch == 3:
                if scenario == "fail-kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise RuntimeError("a callback failed on rank 1")
        model.fit(xt, yt, batch_size=64, epochs=50, verbose=0,
                  callbacks=[cbm.LambdaCallback(on_train_batch_end=boom)])
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    tag = f"rank{rank}" if distributed else "one"
    np.savez(os.path.join(outdir, f"{tag}.npz"), *[np.asarray(v) for v in model.weights])
    with open(os.path.join(outdir, f"{tag}.json"), "w") as f:
        json.dump(out, f, default=float)
    return out


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2], *(sys.argv[3:4] or []))
