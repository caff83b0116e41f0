"""Callbacks with Keras's hook names, and the ones Keras ships.

>>> import maas
>>> stop = maas.callbacks.EarlyStopping(monitor="val_loss", patience=3,
...                                     restore_best_weights=True)
"""
from __future__ import annotations

import csv
import math
import os
import sys
import time
import warnings

import numpy as np


class Callback:
    """Base class: override any of the ``on_*`` hooks; ``self.model`` is set
    by fit/evaluate/predict."""

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None): ...
    def on_train_end(self, logs=None): ...
    def on_epoch_begin(self, epoch, logs=None): ...
    def on_epoch_end(self, epoch, logs=None): ...
    def on_train_batch_begin(self, batch, logs=None): ...
    def on_train_batch_end(self, batch, logs=None): ...
    def on_test_begin(self, logs=None): ...
    def on_test_end(self, logs=None): ...
    def on_test_batch_begin(self, batch, logs=None): ...
    def on_test_batch_end(self, batch, logs=None): ...
    def on_predict_begin(self, logs=None): ...
    def on_predict_end(self, logs=None): ...
    def on_predict_batch_begin(self, batch, logs=None): ...
    def on_predict_batch_end(self, batch, logs=None): ...


class CallbackList(Callback):
    """Calls every hook on a list of callbacks."""

    def __init__(self, callbacks=None, model=None, **params):
        super().__init__()
        self.callbacks = list(callbacks or [])
        if model is not None:
            for c in self.callbacks:
                c.set_model(model)
        for c in self.callbacks:
            c.set_params(params)

    def append(self, cb):
        self.callbacks.append(cb)

    def _hook(name, indexed):
        # every hook gets a logs dict, never None, as Keras's CallbackList passes
        if indexed:
            def f(self, index, logs=None):
                logs = logs if logs is not None else {}
                for c in self.callbacks:
                    getattr(c, name)(index, logs)
        else:
            def f(self, logs=None):
                logs = logs if logs is not None else {}
                for c in self.callbacks:
                    getattr(c, name)(logs)
        f.__name__ = name
        return f

    for _n in ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
               "on_train_batch_begin", "on_train_batch_end", "on_test_begin", "on_test_end",
               "on_test_batch_begin", "on_test_batch_end", "on_predict_begin", "on_predict_end",
               "on_predict_batch_begin", "on_predict_batch_end"):
        locals()[_n] = _hook(_n, "batch" in _n or "epoch" in _n)
    del _n, _hook


class History(Callback):
    """Records the logs of every epoch: ``history.history["loss"]`` etc.
    ``fit`` returns it."""

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)
        if self.model is not None:
            self.model.history = self


def _fmt_value(v):
    v = float(v)
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4):
        return f"{v:.4e}"
    return f"{v:.4f}"


def _fmt_time(seconds):
    if seconds >= 3600:
        return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"
    if seconds >= 60:
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
    return f"{int(round(seconds))}s"


def _fmt_per_step(seconds):
    if seconds >= 1:
        return f"{seconds:.0f}s/step"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms/step"
    return f"{seconds * 1e6:.0f}us/step"


class Progbar:
    """Keras's progress bar: with ``verbose=1`` one line updated in place
    (``\\r``, which terminals and Jupyter both honour) showing steps, a bar,
    the ETA (then the total time), the time per step and the metrics;
    ``verbose=2`` prints the line once, at the end."""

    def __init__(self, target, width=20, verbose=1, interval=0.05, stream=None):
        self.target, self.width, self.verbose, self.interval = target, width, verbose, interval
        self.stream = stream
        self._start = time.perf_counter()
        self._last_update = 0.0
        self._prev_len = 0
        self._values = {}

    def _out(self):
        return self.stream or sys.stdout

    def update(self, current, values=None, finalize=None):
        if values:
            self._values = dict(values)
        if finalize is None:
            finalize = self.target is not None and current >= self.target
        now = time.perf_counter()
        elapsed = now - self._start
        per_step = elapsed / current if current else 0.0
        metrics = "".join(f" - {k}: {_fmt_value(v)}" for k, v in sorted(self._values.items())
                          if np.ndim(v) == 0)
        if self.verbose == 1:
            if not finalize and now - self._last_update < self.interval:
                return
            self._last_update = now
            if self.target is not None:
                digits = len(str(self.target))
                done = int(self.width * current / self.target) if self.target else self.width
                bar = f"{current:>{digits}}/{self.target} " + "━" * done + "─" * (self.width - done)
            else:
                bar = f"{current}/Unknown"
            if finalize:
                timing = f" {_fmt_time(elapsed)} {_fmt_per_step(per_step)}"
            else:
                eta = per_step * (self.target - current) if self.target else 0.0
                timing = f" {_fmt_time(eta)} {_fmt_per_step(per_step)}"
            line = bar + timing + metrics
            pad = " " * max(0, self._prev_len - len(line))
            self._prev_len = len(line)
            self._out().write("\r" + line + pad + ("\n" if finalize else ""))
            self._out().flush()
        elif self.verbose == 2 and finalize:
            steps = f"{current}/{self.target}" if self.target else f"{current}"
            self._out().write(f"{steps} - {_fmt_time(elapsed)} - {_fmt_per_step(per_step)}{metrics}\n")
            self._out().flush()


class ProgbarLogger(Callback):
    """Prints the progress bar (verbose=1) or one line per epoch (verbose=2);
    fit adds it when verbose is not 0."""

    def __init__(self, verbose=1):
        super().__init__()
        self.verbose = verbose
        self._bar = None
        self._mode = "train"

    def _steps(self):
        return self.params.get("steps")

    def on_train_begin(self, logs=None):
        self._mode = "train"

    def on_epoch_begin(self, epoch, logs=None):
        self._mode = "train"
        epochs = self.params.get("epochs", 1)
        print(f"Epoch {epoch + 1}/{epochs}", flush=True)
        self._bar = Progbar(self._steps(), verbose=self.verbose)
        self._seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self._seen = batch + 1
        if self._bar is not None:
            self._bar.update(batch + 1, logs, finalize=False)

    def on_epoch_end(self, epoch, logs=None):
        if self._bar is not None:
            self._bar.update(self._seen, logs, finalize=True)
            self._bar = None

    def on_test_begin(self, logs=None):
        if self._bar is None:  # a standalone evaluate()
            self._mode = "test"
            self._bar = Progbar(self.params.get("steps"), verbose=self.verbose)
            self._seen = 0

    def on_test_batch_end(self, batch, logs=None):
        if self._mode == "test" and self._bar is not None:
            self._seen = batch + 1
            self._bar.update(batch + 1, logs, finalize=False)

    def on_test_end(self, logs=None):
        if self._mode == "test" and self._bar is not None:
            self._bar.update(self._seen, logs, finalize=True)
            self._bar = None

    def on_predict_begin(self, logs=None):
        self._mode = "predict"
        self._bar = Progbar(self.params.get("steps"), verbose=self.verbose)
        self._seen = 0

    def on_predict_batch_end(self, batch, logs=None):
        self._seen = batch + 1
        if self._bar is not None:
            self._bar.update(batch + 1, None, finalize=False)

    def on_predict_end(self, logs=None):
        if self._bar is not None:
            self._bar.update(self._seen, None, finalize=True)
            self._bar = None


class EarlyStopping(Callback):
    """Stops training when ``monitor`` has stopped improving for
    ``patience`` epochs; with ``restore_best_weights`` the model gets the
    weights of its best epoch back."""

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            warnings.warn(f"EarlyStopping mode {mode} is unknown, fallback to auto mode.")
            mode = "auto"
        self.monitor, self.patience, self.verbose = monitor, int(patience), verbose
        self.baseline, self.restore_best_weights = baseline, restore_best_weights
        self.start_from_epoch = start_from_epoch
        self.min_delta = abs(min_delta)
        if mode == "auto":
            mode = "max" if ("acc" in monitor or monitor.endswith("auc") or "precision" in monitor
                             or "recall" in monitor or "f1" in monitor) else "min"
        self.mode = mode
        self._better = (lambda a, b: a < b - self.min_delta) if mode == "min" else \
            (lambda a, b: a > b + self.min_delta)

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_weights = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.monitor)
        if current is None:
            warnings.warn(f"Early stopping conditioned on metric `{self.monitor}` which is not "
                          f"available. Available metrics are: {','.join((logs or {}).keys())}")
            return
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
        self.wait += 1
        if self._better(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._better(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


class LearningRateScheduler(Callback):
    """Sets ``optimizer.learning_rate = schedule(epoch, lr)`` at each epoch's start."""

    def __init__(self, schedule, verbose=0):
        super().__init__()
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        opt = self.model.optimizer
        try:
            lr = self.schedule(epoch, float(opt.learning_rate))
        except TypeError:
            lr = self.schedule(epoch)
        if not isinstance(lr, (float, int, np.floating, np.integer)):
            raise ValueError(f'The output of the "schedule" function should be a float. Got: {lr}')
        opt.learning_rate = float(lr)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {float(lr)}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


class ReduceLROnPlateau(Callback):
    """Multiplies the learning rate by ``factor`` when ``monitor`` has not
    improved for ``patience`` epochs."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto",
                 min_delta=1e-4, cooldown=0, min_lr=0.0, **kwargs):
        super().__init__()
        if factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau does not support a factor >= 1.0. "
                             f"Received factor={factor}")
        self.monitor, self.factor, self.patience, self.verbose = monitor, float(factor), patience, verbose
        self.min_delta, self.cooldown, self.min_lr = min_delta, cooldown, min_lr
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        self.mode = mode
        self._reset()

    def _reset(self):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = 0
        self.cooldown_counter = 0

    def _better(self, a, b):
        return a < b - self.min_delta if self.mode == "min" else a > b + self.min_delta

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["learning_rate"] = float(self.model.optimizer.learning_rate)
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(f"Learning rate reduction is conditioned on metric `{self.monitor}` which "
                          f"is not available. Available metrics are: {','.join(logs.keys())}.")
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._better(current, self.best):
            self.best = current
            self.wait = 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                old = float(self.model.optimizer.learning_rate)
                if old > self.min_lr:
                    new = max(old * self.factor, self.min_lr)
                    self.model.optimizer.learning_rate = new
                    if self.verbose > 0:
                        print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new}.")
                    self.cooldown_counter = self.cooldown
                    self.wait = 0


class CSVLogger(Callback):
    """Writes one CSV row per epoch: ``epoch`` then the logs, sorted by name."""

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.filename, self.sep, self.append = os.fspath(filename), separator, append
        self.keys = None
        self._file = None

    def on_train_begin(self, logs=None):
        exists = self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        self._file = open(self.filename, "a" if self.append else "w", newline="")
        self._has_header = exists
        self.keys = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
            self._writer = csv.DictWriter(self._file, fieldnames=["epoch"] + self.keys,
                                          delimiter=self.sep)
            if not self._has_header:
                self._writer.writeheader()
        row = {"epoch": epoch}
        row.update({k: logs.get(k, "NA") for k in self.keys})
        self._writer.writerow(row)
        self._file.flush()

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()
            self._file = None


class TerminateOnNaN(Callback):
    """Stops training as soon as the loss is NaN or infinite."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True


class LambdaCallback(Callback):
    """A callback from functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``."""

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None,
                 on_train_end=None, on_train_batch_begin=None, on_train_batch_end=None, **kwargs):
        super().__init__()
        hooks = dict(on_epoch_begin=on_epoch_begin, on_epoch_end=on_epoch_end,
                     on_train_begin=on_train_begin, on_train_end=on_train_end,
                     on_train_batch_begin=on_train_batch_begin,
                     on_train_batch_end=on_train_batch_end, **kwargs)
        for name, fn in hooks.items():
            if fn is not None:
                setattr(self, name, fn)


class ModelCheckpoint(Callback):
    """Saves the model (or its weights) at the end of each epoch.

    ``filepath`` may hold ``str.format`` fields filled from the epoch
    (1-based) and the logs, e.g. ``"ckpt-{epoch:02d}-{val_loss:.3f}.maas"``.
    With ``save_best_only`` the file is written only when ``monitor``
    improves (``mode`` "min", "max", or "auto" from the metric's name).

    >>> cb = maas.callbacks.ModelCheckpoint("best.maas", monitor="val_loss", save_best_only=True)
    """

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False,
                 save_weights_only=False, mode="auto", save_freq="epoch", initial_value_threshold=None):
        super().__init__()
        if save_freq != "epoch":
            raise ValueError(f"ModelCheckpoint: only save_freq='epoch' is supported, received {save_freq!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"ModelCheckpoint: mode must be 'auto', 'min' or 'max', received {mode!r}")
        self.filepath, self.monitor, self.verbose = str(filepath), monitor, verbose
        self.save_best_only, self.save_weights_only = save_best_only, save_weights_only
        if mode == "auto":
            mode = "max" if ("acc" in monitor or monitor.endswith("auc") or "precision" in monitor
                             or "recall" in monitor or "f1" in monitor) else "min"
        self.mode = mode
        default = math.inf if mode == "min" else -math.inf
        self.best = default if initial_value_threshold is None else initial_value_threshold

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None:
                warnings.warn(f"Can save best model only with {self.monitor} available; "
                              f"available metrics are: {','.join(logs)}")
                return
            better = current < self.best if self.mode == "min" else current > self.best
            if not better:
                return
            if self.verbose > 0:
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to "
                      f"{current:.5f}, saving model to {path}")
            self.best = current
        elif self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: saving model to {path}")
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)
