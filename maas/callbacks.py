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

    _chief_only = True  # under maas.distribution only rank 0 writes or prints

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

    _chief_only = True  # under maas.distribution only rank 0 writes or prints

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

    _chief_only = True  # under maas.distribution only rank 0 writes or prints

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False,
                 save_weights_only=False, mode="auto", save_freq="epoch", initial_value_threshold=None):
        super().__init__()
        if save_freq != "epoch" and not (isinstance(save_freq, int) and not isinstance(save_freq, bool)
                                         and save_freq > 0):
            raise ValueError(f"Unrecognized save_freq: {save_freq!r}. Expected save_freq are "
                             f"'epoch' or positive integer values (a number of batches)")
        self.save_freq = save_freq
        self._batch_counter = _BatchCounter(save_freq)
        self._current_epoch = 0
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

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._batch_counter.due(batch):
            self._save(self._current_epoch, batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch, None, logs)

    def _save(self, epoch, batch, logs):
        logs = logs or {}
        fields = dict(logs) if batch is None or "batch" in logs else {**logs, "batch": batch + 1}
        path = self.filepath.format(epoch=epoch + 1, **fields)
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


class _BatchCounter:
    """Keras's batch-level save logic: due every ``save_freq`` batches,
    counting across epochs (the batch index restarts at 0 each epoch)."""

    def __init__(self, save_freq):
        self.save_freq = save_freq
        self._since = 0
        self._last = 0

    def due(self, batch) -> bool:
        if self.save_freq == "epoch":
            return False
        self._since += batch + 1 if batch <= self._last else batch - self._last
        self._last = batch
        if self._since >= self.save_freq:
            self._since = 0
            return True
        return False


class BackupAndRestore(Callback):
    """Backs up the training state so that a killed ``fit`` resumes where
    the last backup left it, as ``keras.callbacks.BackupAndRestore``.

    The backup (``backup_dir/latest.backup.safetensors``, written atomically)
    holds the weights, the optimizer's state and iteration count, the epoch
    to resume at, and maas's random-number state, so that a resumed run
    shuffles and drops out as the uninterrupted one would have: with
    ``save_freq="epoch"`` it ends with the same weights, bit for bit. With
    ``save_freq=N`` a backup is written every N batches and, as in Keras,
    a resumed run restarts the epoch it was in (from the weights of the
    backup). ``fit`` deletes the backup when it finishes, unless
    ``delete_checkpoint=False``. Give each training run its own folder.

    >>> cb = maas.callbacks.BackupAndRestore("/tmp/backup")
    >>> model.fit(x, y, epochs=10, callbacks=[cb])  # doctest: +SKIP
    """

    FILENAME = "latest.backup.safetensors"

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint=True):
        super().__init__()
        if not backup_dir:
            raise ValueError("Empty `backup_dir` argument passed")
        if save_freq != "epoch" and not (isinstance(save_freq, int) and not isinstance(save_freq, bool)
                                         and save_freq > 0):
            raise ValueError(f"Invalid value for argument `save_freq`. Received: "
                             f"save_freq={save_freq}. Expected either 'epoch' or an integer value.")
        self.backup_dir = os.fspath(backup_dir)
        self.save_freq, self.delete_checkpoint = save_freq, bool(delete_checkpoint)
        self._path = os.path.join(self.backup_dir, self.FILENAME)
        self._counter = _BatchCounter(save_freq)
        self._current_epoch = 0

    def on_train_begin(self, logs=None):
        if not self.model.weights:
            raise ValueError("To use the BackupAndRestore callback, you model must be built "
                             f"before you call `fit()`. Model {self.model} is unbuilt. You can "
                             "build it beforehand by calling it on a batch of data.")
        self._counter = _BatchCounter(self.save_freq)
        if os.path.exists(self._path):
            self._restore()

    def _restore(self):
        import json

        from . import random as _random
        from .saving import load_tensors
        from .saving.model_file import weight_names

        tensors, meta = load_tensors(self._path, mmap=False, verify=True)
        try:
            state = json.loads(meta["maas.backup"])
        except (KeyError, ValueError):
            raise ValueError(f"{self._path} is not a BackupAndRestore backup; remove it or give "
                             f"the callback another backup_dir") from None
        named = weight_names(self.model)
        names = state["weights"]
        problems = [] if len(names) == len(named) else [
            f"the backup holds {len(names)} weights, the model {len(named)}"]
        for i, ((_, w), saved) in enumerate(zip(named, names)):
            t = tensors.get(f"weights/{i}")
            if t is None or tuple(t.shape) != tuple(w.shape):
                problems.append(f"{saved}: shape {None if t is None else tuple(t.shape)} in the "
                                f"backup, {tuple(w.shape)} in the model")
        if problems:
            raise ValueError(f"{self._path} does not match this model ({'; '.join(problems)}): "
                             f"it was written by another training run; remove it or use another "
                             f"backup_dir")
        opt = getattr(self.model, "optimizer", None)
        for i, (_, w) in enumerate(named):
            w.assign(tensors[f"weights/{i}"])
            if opt is not None:
                prefix = f"optimizer/{i}/"
                for key, value in tensors.items():
                    if key.startswith(prefix):
                        opt.slot(w, key[len(prefix):]).assign(value)
        if opt is not None:
            opt.iterations = int(state["iterations"])
        _random._state.update(seed=int(state["seed"]), stream=int(state["stream"]))
        self._current_epoch = int(state["epoch"])
        self.model._initial_epoch = self._current_epoch

    def on_epoch_end(self, epoch, logs=None):
        self._current_epoch = epoch + 1
        if self.save_freq == "epoch":
            self._save(batch=0)

    def on_train_batch_end(self, batch, logs=None):
        if self._counter.due(batch):
            self._save(batch=batch + 1)

    def _save(self, batch):
        import json

        from . import distribution as _dist
        from . import random as _random
        if not _dist.is_chief():  # every rank restores; rank 0 alone writes
            return
        from .saving import save_tensors
        from .saving.model_file import weight_names

        named = weight_names(self.model)
        opt = getattr(self.model, "optimizer", None)
        tensors = {}
        for i, (_, w) in enumerate(named):
            tensors[f"weights/{i}"] = w
            for slot, value in (opt._slots.get(id(w), {}) if opt is not None else {}).items():
                if slot != "__var__":
                    tensors[f"optimizer/{i}/{slot}"] = value
        state = {"epoch": self._current_epoch, "batch": batch,
                 "iterations": int(opt.iterations) if opt is not None else 0,
                 "seed": _random._state["seed"], "stream": _random._state["stream"],
                 "weights": [n for n, _ in named]}
        os.makedirs(self.backup_dir, exist_ok=True)
        save_tensors(self._path, tensors, {"maas.backup": json.dumps(state)})

    def on_train_end(self, logs=None):
        from . import distribution as _dist
        if self.delete_checkpoint and _dist.is_chief() and os.path.exists(self._path):
            os.unlink(self._path)
            try:
                os.rmdir(self.backup_dir)  # only when nothing else is in it
            except OSError:
                pass


class TensorBoard(Callback):
    """Writes TensorBoard event files, as ``keras.callbacks.TensorBoard``:
    ``log_dir/train`` gets ``epoch_<metric>`` scalars (and
    ``epoch_learning_rate``) at each epoch's end, ``log_dir/validation`` the
    ``val_`` ones under the same tags, so TensorBoard draws both on one
    chart; ``update_freq="batch"`` or N adds ``batch_<metric>`` every N
    batches (step: the batch count since fit began); ``histogram_freq=N``
    adds a histogram of every weight every N epochs. Needs the
    ``tensorboard`` package (``pip install tensorboard``), whose own event
    writer writes the files; ``tensorboard --logdir log_dir`` shows them.

    >>> cb = maas.callbacks.TensorBoard(log_dir="logs")
    >>> model.fit(x, y, epochs=5, validation_split=0.1, callbacks=[cb])  # doctest: +SKIP
    """

    _chief_only = True  # under maas.distribution only rank 0 writes or prints

    def __init__(self, log_dir="logs", histogram_freq=0, write_graph=True, write_images=False,
                 write_steps_per_second=False, update_freq="epoch", profile_batch=0,
                 embeddings_freq=0, embeddings_metadata=None):
        super().__init__()
        if update_freq != "epoch" and update_freq != "batch" and not (
                isinstance(update_freq, int) and update_freq > 0):
            raise ValueError(f"update_freq must be 'epoch', 'batch' or a positive integer, "
                             f"received update_freq={update_freq!r}")
        for arg, value in (("write_images", write_images), ("profile_batch", profile_batch),
                           ("embeddings_freq", embeddings_freq)):
            if value:
                raise ValueError(f"TensorBoard({arg}={value!r}) is not supported by maas: it "
                                 f"writes scalars and weight histograms; leave {arg} at its "
                                 f"default")
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = int(histogram_freq)
        self.write_graph = write_graph  # there is no TensorFlow graph to write; accepted, unused
        self.write_steps_per_second = bool(write_steps_per_second)
        self.update_freq = 1 if update_freq == "batch" else update_freq
        self._writers = {}
        self._train_step = 0

    @staticmethod
    def _proto():
        try:
            from tensorboard.compat.proto import event_pb2, summary_pb2
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
        except ImportError:
            raise ImportError("maas.callbacks.TensorBoard writes with the tensorboard package: "
                              "pip install tensorboard (or pip install 'maas[tensorboard]')") from None
        return event_pb2, summary_pb2, EventFileWriter

    def _writer(self, name):
        if name not in self._writers:
            _, _, EventFileWriter = self._proto()
            self._writers[name] = EventFileWriter(os.path.join(self.log_dir, name))
        return self._writers[name]

    def _write(self, name, step, scalars=(), histograms=()):
        event_pb2, summary_pb2, _ = self._proto()
        values = [summary_pb2.Summary.Value(tag=tag, simple_value=float(v)) for tag, v in scalars]
        for tag, array in histograms:
            a = np.asarray(array, np.float64).ravel()
            counts, edges = np.histogram(a, bins=30) if a.size else (np.zeros(0), np.zeros(1))
            histo = summary_pb2.HistogramProto(
                min=float(a.min()) if a.size else 0.0, max=float(a.max()) if a.size else 0.0,
                num=float(a.size), sum=float(a.sum()), sum_squares=float((a * a).sum()),
                bucket_limit=[float(e) for e in edges[1:]], bucket=[float(c) for c in counts])
            values.append(summary_pb2.Summary.Value(tag=tag, histo=histo))
        if values:
            self._writer(name).add_event(event_pb2.Event(
                wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values)))

    def on_train_begin(self, logs=None):
        self._proto()  # fail before training when tensorboard is missing
        self._train_step = 0
        self._epoch_start = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.time()
        self._epoch_steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self._train_step += 1
        self._epoch_steps = batch + 1
        if self.update_freq != "epoch" and self._train_step % self.update_freq == 0:
            self._write("train", self._train_step,
                        [(f"batch_{k}", v) for k, v in (logs or {}).items() if np.ndim(v) == 0])

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        train = [(f"epoch_{k}", v) for k, v in logs.items()
                 if not k.startswith("val_") and np.ndim(v) == 0]
        opt = getattr(self.model, "optimizer", None)
        if opt is not None and "learning_rate" not in logs:
            train.append(("epoch_learning_rate", float(opt.learning_rate)))
        if self.write_steps_per_second:
            elapsed = max(time.time() - self._epoch_start, 1e-9)
            train.append(("epoch_steps_per_second", self._epoch_steps / elapsed))
        hist = []
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            from .saving.model_file import weight_names

            hist = [(name, np.asarray(w)) for name, w in weight_names(self.model)]
        self._write("train", epoch, train, hist)
        self._write("validation", epoch, [(f"epoch_{k[4:]}", v) for k, v in logs.items()
                                          if k.startswith("val_") and np.ndim(v) == 0])
        for w in self._writers.values():
            w.flush()

    def on_train_end(self, logs=None):
        for w in self._writers.values():
            w.close()
        self._writers = {}
