"""compile / fit / evaluate / predict, shared by every model.

One training step is :meth:`Trainer.train_step`. When ``maas.engine`` is
available and supports the model, ``compile_plan(model)`` gives a plan whose
``train_step`` runs forward, loss, backward and the optimizer update in one
C call; otherwise the step runs eagerly under a GradientTape.
"""
from __future__ import annotations

import inspect
import math
import warnings

import numpy as np

from .. import callbacks as callbacks_module
from .. import distribution as _dist
from .. import engine as _engine
from .. import losses as losses_module
from .. import metrics as metrics_module
from .. import optimizers as optimizers_module
from .. import random as _random
from ..autodiff import GradientTape
from ..errors import NotFittedError
from ..layers.base import _flatten, _map
from ..tensor import Tensor
from ..utils import pack_x_y_sample_weight, unpack_x_y_sample_weight
from ..utils import data_adapters as _data_adapters

_LOSS_CLASSES = {
    losses_module.mean_squared_error: losses_module.MeanSquaredError,
    losses_module.mean_absolute_error: losses_module.MeanAbsoluteError,
    losses_module.binary_crossentropy: losses_module.BinaryCrossentropy,
    losses_module.categorical_crossentropy: losses_module.CategoricalCrossentropy,
    losses_module.sparse_categorical_crossentropy: losses_module.SparseCategoricalCrossentropy,
    losses_module.hinge: losses_module.Hinge,
}


class _FunctionLoss(losses_module.Loss):
    """A loss function ``fn(y_true, y_pred) -> per-sample losses`` as a Loss."""

    def __init__(self, fn, name=None):
        super().__init__(name=name or getattr(fn, "__name__", "loss"))
        self.fn = fn

    def call(self, y_true, y_pred):
        out = self.fn(y_true, y_pred)
        return out if isinstance(out, Tensor) else Tensor(np.asarray(out, np.float32))


def _resolve_loss(identifier):
    if identifier is None:
        return None
    if isinstance(identifier, losses_module.Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, losses_module.Loss):
        return identifier()
    if isinstance(identifier, (str, dict)):
        fn = losses_module.get(identifier)  # raises, listing the valid names
        if isinstance(fn, losses_module.Loss):
            return fn
        return _LOSS_CLASSES[fn]()
    if callable(identifier):
        cls = _LOSS_CLASSES.get(identifier)
        return cls() if cls is not None else _FunctionLoss(identifier)
    raise ValueError(f"Could not interpret loss identifier: {identifier!r}")


def _to_array(x, what="x"):
    if isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.c_contiguous:
        return x
    if isinstance(x, Tensor):
        return np.asarray(x)
    try:
        a = np.asarray(x)
    except Exception as e:
        raise TypeError(f"{what}: could not convert {type(x).__name__} to an array ({e})") from None
    if a.dtype == object or a.dtype.kind not in "fiub":
        raise TypeError(f"{what} must be numeric (NumPy arrays, lists of numbers or maas tensors); "
                        f"received data of dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _is_iterable_data(x):
    """A generator or iterable of batches (not an array, list or tensor)."""
    if x is None or isinstance(x, (np.ndarray, Tensor, list, tuple, dict, str, bytes)):
        return False
    return hasattr(x, "__iter__") or hasattr(x, "__next__")


def _structure(x, what):
    """A flat list of float32 arrays from x (one array, a list/tuple of arrays, or a dict)."""
    if isinstance(x, dict):
        return {k: _to_array(v, what) for k, v in x.items()}
    if isinstance(x, (list, tuple)) and x and all(isinstance(e, (np.ndarray, Tensor)) for e in x):
        return [_to_array(e, what) for e in x]
    return [_to_array(x, what)]


def _unpack(data):
    if isinstance(data, (list, tuple)):
        if len(data) == 2:
            return data[0], data[1], None
        if len(data) == 3:
            return data[0], data[1], data[2]
        if len(data) == 1:
            return data[0], None, None
    return data, None, None


def _pythonify_logs(logs):
    """Keras's log values: nested dicts (a CompileMetrics result) flattened,
    scalars as Python floats."""
    out = {}
    for k, v in (logs or {}).items():
        if isinstance(v, dict):
            out.update(_pythonify_logs(v))
            continue
        try:
            v = float(np.asarray(v)) if np.ndim(np.asarray(v)) == 0 else np.asarray(v)
        except (TypeError, ValueError):
            pass
        out[k] = v
    return out


def _batch_size_of(x):
    for a in _flatten(x):
        if a is not None and np.ndim(a):
            return int(np.shape(a)[0])
    return 1


class CompileMetrics(metrics_module.Metric):
    """The metrics passed to ``compile(metrics=..., weighted_metrics=...)``,
    as one entry of ``model.metrics`` named ``compile_metrics`` (Keras 3's
    container): ``update_state(y, y_pred, sample_weight)`` updates each of
    them on its output, ``result()`` is a dict of their results, and
    ``.metrics`` lists them."""

    def __init__(self):
        self._entries = []     # (output index, metric, weighted)
        self._split = None     # (y, y_pred) -> (list of labels, list of predictions)
        super().__init__(name="compile_metrics")

    @property
    def metrics(self) -> list:
        return [m for _, m, _ in self._entries]

    def reset_state(self):
        for _, m, _ in getattr(self, "_entries", []):
            m.reset_state()

    def update_state(self, y_true, y_pred, sample_weight=None):
        if self._split is None:
            raise ValueError("compile_metrics is updated before the model has seen data: call "
                             "fit/evaluate (or train_on_batch) once so the metrics know the outputs")
        ys, preds = self._split(y_true, y_pred)
        for i, m, weighted in self._entries:
            m.update_state(ys[i], np.asarray(preds[i]), sample_weight if weighted else None)

    def result(self):
        return {m.name: m.result() for _, m, _ in self._entries}

    def get_config(self):
        return {"name": self.name}


class Trainer:
    """compile/fit/evaluate/predict and their batch-level forms, with Keras
    3's hooks: ``train_step(data)``, ``test_step(data)``,
    ``predict_step(data)``, ``compute_loss(x, y, y_pred, sample_weight,
    training)``, ``compute_metrics(x, y, y_pred, sample_weight)``,
    ``metrics`` and ``reset_metrics()``. Override them as the Keras guide
    "Customizing what happens in fit()" does (with ``maas.GradientTape`` for
    the tape):

    >>> class CustomModel(maas.Model):
    ...     def train_step(self, data):
    ...         x, y, sample_weight = maas.utils.unpack_x_y_sample_weight(data)
    ...         with maas.GradientTape() as tape:
    ...             y_pred = self(x, training=True)
    ...             loss = self.compute_loss(y=y, y_pred=y_pred, sample_weight=sample_weight)
    ...         grads = tape.gradient(loss, self.trainable_variables)
    ...         self.optimizer.apply(grads, self.trainable_variables)
    ...         for metric in self.metrics:
    ...             if metric.name == "loss":
    ...                 metric.update_state(loss)
    ...             else:
    ...                 metric.update_state(y, y_pred, sample_weight=sample_weight)
    ...         return {m.name: m.result() for m in self.metrics}

    A model whose steps or ``compute_loss`` are overridden, or that has dict
    inputs or outputs, ``add_loss`` or a layer called with an explicit
    ``training=``, trains on the eager path; ``model.eager_reason`` says why
    (None when ``maas.engine`` may compile the step into a plan).
    """

    def __init__(self):
        self.optimizer = None
        self.loss = None
        self.compiled = False
        self.stop_training = False
        self.history = None
        self._compiled_train_fn = None
        self._compiled_predict_fn = None
        self._plan = None
        self._plan_checked = False
        self.eager_reason = None

    # -- compile
    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None,
                weighted_metrics=None, run_eagerly=False, steps_per_execution=1,
                jit_compile="auto", auto_scale_loss=True):
        """Configures training: the optimizer, the loss(es) and the metrics.
        ``loss``, ``loss_weights`` and ``metrics`` may be dicts keyed by
        output name (the keys of a dict of outputs).

        >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
        ...               metrics=["accuracy"])
        """
        self.optimizer = optimizers_module.get(optimizer)
        self.loss = loss
        self._loss_spec = loss
        self._loss_weights = loss_weights
        self._metric_spec = metrics
        self._weighted_metric_spec = weighted_metrics
        self.run_eagerly = bool(run_eagerly)
        # resolve now so that an unknown loss name fails at compile(), as in Keras
        if isinstance(loss, dict):
            self._losses_by_name = {k: _resolve_loss(v) for k, v in loss.items()}
        elif isinstance(loss, (list, tuple)):
            self._losses_list = [_resolve_loss(v) for v in loss]
        else:
            self._loss_single = _resolve_loss(loss)
        for spec in (metrics, weighted_metrics):
            for m in _flatten(spec) if spec is not None else []:
                if m is not None and not (isinstance(m, str) and m in ("accuracy", "acc")):
                    metrics_module.get(m)  # fail early on unknown names
        self._compile_losses = None
        # internal trackers are set untracked: model.metrics lists them in Keras's order
        object.__setattr__(self, "_compile_metrics",
                           CompileMetrics() if metrics is not None or weighted_metrics is not None
                           else None)
        object.__setattr__(self, "_output_loss_trackers", [])
        object.__setattr__(self, "_loss_tracker", metrics_module.Mean(name="loss"))
        self.compiled = True
        self._plan = None
        self._plan_checked = False
        self._compiled_train_fn = None
        self._compiled_predict_fn = None
        self.eager_reason = None

    def _assert_compiled(self, method):
        if not getattr(self, "compiled", False):
            raise NotFittedError(
                f"You must call `compile()` before using the model (here, before calling "
                f"`{method}()`), e.g. model.compile(optimizer='adam', "
                "loss='sparse_categorical_crossentropy', metrics=['accuracy'])")

    def _n_outputs(self):
        if getattr(self, "_is_graph_network", False):
            return len(self.outputs)
        return None

    def _output_names_or_default(self, n):
        names = getattr(self, "_output_names", None)
        if names and len(names) == n:
            return names
        keys = getattr(self, "_dict_output_keys", None)   # a subclassed call() returning a dict
        if keys and len(keys) == n:
            return keys
        return [f"output_{i}" for i in range(n)]

    def _pred_list(self, y_pred):
        """The model's predictions as a list in output order (dicts by key)."""
        if isinstance(y_pred, dict):
            names = self._output_names_or_default(len(y_pred))
            if set(names) != set(y_pred):
                names = list(y_pred)
            return [y_pred[k] for k in names]
        return list(y_pred) if isinstance(y_pred, (list, tuple)) else [y_pred]

    def _true_list(self, y, n):
        """Labels as a list matching the outputs (dicts by output name)."""
        if y is None:
            return [None] * n
        if isinstance(y, dict):
            names = self._output_names_or_default(n)
            missing = [k for k in names if k not in y]
            if missing and len(y) == n and n == 1:
                return list(y.values())
            return [y.get(k) for k in names]
        if isinstance(y, (list, tuple)) and n > 1:
            return list(y)
        return [y]

    def _split_y(self, y, y_pred):
        preds = self._pred_list(y_pred)
        return self._true_list(y, len(preds)), preds

    def _resolve_compile(self, y_true, y_pred):
        """Resolves per-output losses and metrics once the outputs are known."""
        if isinstance(y_pred, dict) and not getattr(self, "_output_names", None) and \
                set(getattr(self, "_dict_output_keys", None) or ()) != set(y_pred):
            self._dict_output_keys = list(y_pred)
        preds = self._pred_list(y_pred)
        n = len(preds)
        names = self._output_names_or_default(n)
        spec = self._loss_spec
        if isinstance(spec, dict):
            losses = [self._losses_by_name.get(nm) for nm in names]
            missing = set(self._losses_by_name) - set(names)
            if missing:
                raise ValueError(f"compile(loss=...) names outputs {sorted(missing)} that the model "
                                 f"does not have; its outputs are {names}")
        elif isinstance(spec, (list, tuple)):
            if len(self._losses_list) != n:
                raise ValueError(f"compile(loss=[...]) has {len(self._losses_list)} losses but the "
                                 f"model has {n} outputs; pass one loss per output")
            losses = list(self._losses_list)
        else:
            losses = [self._loss_single] * n
        lw = self._loss_weights
        if lw is None:
            weights = [1.0] * n
        elif isinstance(lw, dict):
            unknown = set(lw) - set(names)
            if unknown:
                raise ValueError(f"compile(loss_weights=...) names outputs {sorted(unknown)} that "
                                 f"the model does not have; its outputs are {names}")
            weights = [float(lw.get(nm, 1.0)) for nm in names]
        else:
            weights = [float(w) for w in (lw if isinstance(lw, (list, tuple)) else [lw])]
            if len(weights) != n:
                raise ValueError(f"loss_weights has {len(weights)} entries for {n} outputs")
        self._compile_losses = list(zip(losses, weights))
        ys = self._true_list(y_true, n)
        object.__setattr__(self, "_output_loss_trackers",
                           [metrics_module.Mean(name=f"{nm}_loss") if l is not None else None
                            for nm, l in zip(names, losses)] if n > 1 else [])
        # metrics per output
        ms = []
        for spec_m, weighted in ((self._metric_spec, False), (self._weighted_metric_spec, True)):
            if spec_m is None:
                continue
            if isinstance(spec_m, dict):
                unknown = set(spec_m) - set(names)
                if unknown:
                    raise ValueError(f"compile(metrics=...) names outputs {sorted(unknown)} that "
                                     f"the model does not have; its outputs are {names}")
                per = [spec_m.get(nm, []) for nm in names]
            elif n > 1 and isinstance(spec_m, (list, tuple)) and spec_m and \
                    all(isinstance(e, (list, tuple)) or e is None for e in spec_m):
                per = [e or [] for e in spec_m]
            else:
                per = [spec_m] * n
            for i, mlist in enumerate(per):
                mlist = mlist if isinstance(mlist, (list, tuple)) else [mlist]
                for m in mlist:
                    if m is None:
                        continue
                    if isinstance(m, str) and m in ("accuracy", "acc"):
                        yshape = tuple(np.shape(ys[i])) if ys[i] is not None else None
                        metric = metrics_module.accuracy_for(
                            losses[i], tuple(np.shape(preds[i])), yshape, name=m)
                    else:
                        metric = metrics_module.get(m)
                        if n > 1 and metric in [x[1] for x in ms]:
                            metric = type(metric).from_config(metric.get_config())
                    if n > 1:
                        metric.name = f"{names[i]}_{metric.name}"
                    ms.append((i, metric, weighted))
        if self._compile_metrics is None:
            object.__setattr__(self, "_compile_metrics", CompileMetrics())
        self._compile_metrics._entries = ms
        self._compile_metrics._split = self._split_y
        if not ms and self._metric_spec is None and self._weighted_metric_spec is None:
            object.__setattr__(self, "_compile_metrics", None)

    @property
    def metrics(self) -> list:
        """Keras's order: the loss tracker, the compiled metrics (one
        ``compile_metrics`` entry), the per-output loss trackers, then the
        Metric objects assigned as attributes of the model and its layers."""
        out = []
        if getattr(self, "compiled", False):
            if getattr(self, "_loss_tracker", None) is not None:
                out.append(self._loss_tracker)
            if getattr(self, "_compile_metrics", None) is not None:
                out.append(self._compile_metrics)
            out += [t for t in getattr(self, "_output_loss_trackers", []) if t is not None]
        out += self.__dict__.get("_metrics", [])
        for layer in self._flatten_layers(include_self=False):
            if not isinstance(layer, Trainer):
                out += layer.__dict__.get("_metrics", [])
        return out

    @property
    def metrics_names(self) -> list:
        return [m.name for m in self.metrics]

    def reset_metrics(self):
        for m in self.metrics:
            m.reset_state()

    def get_metrics_result(self) -> dict:
        """The results of ``self.metrics`` as a dict (a container's dict merged in)."""
        out = {}
        for m in self.metrics:
            r = m.result()
            if isinstance(r, dict):
                out.update(r)
            else:
                out[m.name] = r
        return _pythonify_logs(out)

    # -- losses
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The total loss of a batch: the compiled losses (times their
        ``loss_weights``) plus ``self.losses`` (``add_loss`` and
        regularization losses, each summed to a scalar), as Keras 3 computes
        it. Override it to change the loss; ``fit`` calls it inside the tape.

        >>> class MyModel(maas.Model):
        ...     def compute_loss(self, x, y, y_pred, sample_weight, training=True):
        ...         return maas.ops.mean((y_pred - y) ** 2) + 1e-3 * maas.ops.sum(y_pred ** 2)
        """
        if self._compile_losses is None and y_pred is not None:
            self._resolve_compile(y, y_pred)
        total = None
        if self._compile_losses and any(l is not None for l, _ in self._compile_losses):
            preds = self._pred_list(y_pred)
            ys = self._true_list(y, len(preds))
            names = self._output_names_or_default(len(preds))
            trackers = getattr(self, "_output_loss_trackers", [])
            n = _batch_size_of(preds[0])
            for i, ((loss, w), yt, yp) in enumerate(zip(self._compile_losses, ys, preds)):
                if loss is None:
                    continue
                if yt is None:
                    raise ValueError(f"The model has a loss for output {names[i]!r} but no labels "
                                     "were given for it: pass y to fit/evaluate (a dict keyed by "
                                     "output name for a dict of outputs)")
                value = loss(yt, yp, sample_weight)
                if i < len(trackers) and trackers[i] is not None:
                    # the unweighted loss of each output, as Keras 3 records it
                    # (while a step is traced, maas.engine records it after
                    # each replay instead: reading the value would end the trace)
                    if _engine.tracing():
                        _engine.defer_update(trackers[i], value, n)
                    else:
                        trackers[i].update_state([float(np.asarray(value))], sample_weight=[n])
                if w != 1.0:
                    value = value * w
                total = value if total is None else total + value
        for r in self.losses:
            if not isinstance(r, Tensor):
                r = Tensor(np.asarray(r, np.float32))
            if r.ndim:
                r = r.sum()
            total = r if total is None else total + r
        if total is None:
            raise ValueError("No loss to compute. Provide a `loss` argument in `compile()`, e.g. "
                             "model.compile(optimizer='adam', loss='mse'), or call add_loss() in "
                             "a layer's call()")
        return total

    def _compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """compute_loss, for overrides without Keras 3.3's ``training`` argument too."""
        try:
            params = inspect.signature(self.compute_loss).parameters
            has_training = "training" in params or any(p.kind == p.VAR_KEYWORD
                                                       for p in params.values())
        except (TypeError, ValueError):
            has_training = True
        if has_training:
            return self.compute_loss(x, y, y_pred, sample_weight, training=training)
        return self.compute_loss(x, y, y_pred, sample_weight)

    def compute_metrics(self, x, y, y_pred, sample_weight=None) -> dict:
        """Updates the compiled metrics and returns the results of
        ``self.metrics`` as a dict (the logs of the step)."""
        if getattr(self, "_compile_metrics", None) is not None and self._compile_metrics._entries:
            self._compile_metrics.update_state(y, y_pred, sample_weight)
        return self.get_metrics_result()

    def _check_labels(self, ys, preds):
        """A ValueError that says what to do when labels do not fit the loss."""
        for (loss, _), y, p in zip(self._compile_losses, ys, preds):
            if loss is None or y is None:
                continue
            name = getattr(loss, "name", "")
            yshape, pshape = tuple(np.shape(y)), tuple(p.shape)
            width = pshape[-1] if len(pshape) > 1 else 1
            msg = None
            if name == "sparse_categorical_crossentropy":
                if len(yshape) > 1 and yshape[1:] != (1,):
                    msg = (f"sparse_categorical_crossentropy takes integer class labels of shape "
                           f"(n,); these look one-hot. Use loss='categorical_crossentropy' for "
                           f"one-hot labels, or pass y.argmax(axis=1)")
            elif name == "categorical_crossentropy":
                if yshape[1:] != pshape[1:]:
                    msg = (f"categorical_crossentropy takes one-hot labels of shape (n, {width}). "
                           f"For integer labels use loss='sparse_categorical_crossentropy', or "
                           f"convert them with maas.utils.to_categorical(y, {width})")
            elif name in ("binary_crossentropy", "hinge", "mean_squared_error",
                          "mean_absolute_error"):
                per = int(np.prod(yshape[1:])) if len(yshape) > 1 else 1
                if per != int(np.prod(pshape[1:])) if len(pshape) > 1 else per != 1:
                    hint = ""
                    if name == "binary_crossentropy" and width == 1 and per > 1:
                        hint = (" For one-hot labels of several classes use a Dense(classes, "
                                "activation='softmax') output with loss='categorical_crossentropy'.")
                    elif width > 1 and per == 1:
                        hint = (" For integer class labels use "
                                "loss='sparse_categorical_crossentropy'.")
                    msg = f"{name} needs labels with one value per output unit.{hint}"
            if msg:
                raise ValueError(f"Labels of shape {yshape} do not fit loss='{name}' with model "
                                 f"outputs of shape {(None,) + pshape[1:]}: {msg}")


    # -- steps
    def train_step(self, data):
        """One training step on a batch ``data`` (``x``, ``(x, y)`` or ``(x,
        y, sample_weight)``, see :func:`maas.utils.unpack_x_y_sample_weight`);
        returns the logs, a dict of metric results. Runs as one C call over
        a compiled plan when the engine supports the model, eagerly under a
        GradientTape otherwise."""
        x, y, sample_weight = unpack_x_y_sample_weight(data)
        if self._compiled_train_fn is not None:
            loss_value = float(self._compiled_train_fn(x, y, sample_weight))
            y_pred = self._plan.outputs()
        else:
            tv = self.trainable_variables
            with GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                          training=True)
            if tv:
                grads = tape.gradient(loss, tv)
                self.optimizer.apply_gradients(zip(grads, tv))
            else:
                warnings.warn("The model does not have any trainable weights.", stacklevel=2)
            loss_value = float(np.asarray(loss))
        self._loss_tracker.update_state([loss_value], sample_weight=[_batch_size_of(x)])
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def test_step(self, data):
        """One evaluation step on a batch ``data``; returns the logs."""
        x, y, sample_weight = unpack_x_y_sample_weight(data)
        # a predict plan returns outputs only: a model whose call adds losses
        # (add_loss) runs eagerly here, so that self.losses are this batch's
        y_pred = self(x, training=False) if self.losses else self._predict_batch(x)
        loss = self._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                  training=False)
        self._loss_tracker.update_state([float(np.asarray(loss))],
                                        sample_weight=[_batch_size_of(x)])
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def predict_step(self, data):
        """The model's outputs on a batch ``data`` (its x)."""
        x, _, _ = unpack_x_y_sample_weight(data)
        return self._predict_batch(x)

    def _predict_batch(self, x):
        if self._compiled_predict_fn is not None:
            return self._compiled_predict_fn(x)
        return self(x, training=False)

    def _custom(self, *names):
        """The names among ``names`` that the model's class overrides."""
        cls = type(self)
        return [n for n in names if getattr(cls, n, None) is not getattr(Trainer, n)]

    def _eager_reason(self):
        """Why the model must train eagerly (None when the engine may trace
        it): a step the user wrote takes the place of the traced one. An
        overridden call() or compute_loss, dict inputs and outputs, explicit
        training arguments and add_loss are all traced (maas.engine); a trace
        that reads values falls back to eager by itself, with a warning."""
        custom = self._custom("train_step", "test_step", "predict_step")
        if custom:
            return f"{custom[0]} is overridden"
        return None

    def _maybe_plan(self):
        if self._plan_checked:
            return
        self._plan_checked = True
        self.eager_reason = self._eager_reason()
        if self.eager_reason is not None:
            return
        try:
            from .. import engine
        except ImportError:
            return
        try:
            plan = engine.compile_plan(self)
        except NotImplementedError:
            plan = None
        if plan is not None:
            self._plan = plan
            self._compiled_train_fn = plan.train_step
            self._compiled_predict_fn = plan.predict

    def _y_optional(self):
        """fit/evaluate may go without y: a custom step, or no compiled loss (add_loss)."""
        return bool(self._custom("train_step", "test_step", "compute_loss")) or \
            self._loss_spec is None

    # -- data
    def _prepare_xy(self, x, y, sample_weight, what="fit"):
        xs = _structure(x, "x")
        if isinstance(xs, dict):
            nested = getattr(self, "_nested_inputs", None)
            names = (list(nested) if isinstance(nested, dict)   # Model(inputs={"a": ...}) by key
                     else [t._keras_history[0].name for t in getattr(self, "inputs", [])])
            try:
                xs = [xs[nm] for nm in names]
            except KeyError as e:
                raise ValueError(f"x is a dict without the input {e}; the model's inputs are "
                                 f"{names}") from None
        ys = None
        if y is not None:
            ys = _structure(y, "y")
            if isinstance(ys, dict):
                names = self._output_names_or_default(len(ys))
                if not getattr(self, "_output_names", None) and not set(names) <= set(ys):
                    # a subclassed model: its outputs are named by the keys of y
                    self._dict_output_keys = names = list(ys)
                missing = [nm for nm in names if nm not in ys]
                if missing:
                    raise ValueError(f"y is a dict without the output(s) {missing}; the model's "
                                     f"outputs are {names}")
                ys = [ys[nm] for nm in names]
        sw = None if sample_weight is None else _to_array(sample_weight, "sample_weight").reshape(-1)
        sizes = {"x": [len(a) for a in xs]}
        if ys is not None:
            sizes["y"] = [len(a) for a in ys]
        if sw is not None:
            sizes["sample_weight"] = [len(sw)]
        all_sizes = {s for v in sizes.values() for s in v}
        if len(all_sizes) > 1:
            desc = " ".join(f"{k} sizes: {', '.join(map(str, v))}" for k, v in sizes.items())
            raise ValueError(f"Data cardinality is ambiguous: {desc}. Make sure all arrays contain "
                             f"the same number of samples (one label per row of x).")
        return xs, ys, sw

    def _model_input(self, xs):
        if len(xs) == 1 and len(getattr(self, "inputs", [None]) or [None]) <= 1:
            return xs[0]
        return list(xs)


    def _ensure_ready(self, xs, ys, sw, check=True):
        """Builds the model on the first rows, resolves losses and metrics,
        checks the labels, and compiles the plan when the engine has one."""
        if self._compile_losses is not None and not check:
            return
        nothing_to_resolve = self._loss_spec is None and self._metric_spec is None and \
            self._weighted_metric_spec is None
        if nothing_to_resolve and self._custom("train_step"):
            # the user's train_step does it all (it may not even define call())
            if self._compile_losses is None:
                self._compile_losses = []
            return
        probe = self._model_input([a[:2] for a in xs])
        from ..layers.recurrent import stateless_probe   # stateful RNNs: not a batch
        with stateless_probe():
            y_pred = self(probe, training=False)
        ys_probe = [a[:2] for a in ys] if ys else None
        if self._compile_losses is None:
            self._resolve_compile(ys_probe if ys_probe is None or len(ys_probe) > 1
                                  else ys_probe[0], y_pred)
        if ys:
            preds = self._pred_list(y_pred)
            if len(ys) != len(preds):
                raise ValueError(f"The model has {len(preds)} outputs but y holds {len(ys)} "
                                 "arrays; pass one label array per output")
            self._check_labels(ys, preds)

    def _class_sample_weight(self, ys, sw, class_weight):
        if class_weight is None:
            return sw
        y = ys[0]
        labels = np.argmax(y, axis=-1) if y.ndim > 1 and y.shape[-1] > 1 else np.round(y.reshape(len(y), -1)[:, 0]).astype(np.int64)
        n_cls = int(max(max(class_weight) + 1, labels.max() + 1))
        table = np.ones(n_cls, np.float32)
        for k, v in class_weight.items():
            table[int(k)] = float(v)
        w = table[labels]
        return w if sw is None else (sw * w).astype(np.float32)

    @staticmethod
    def _array_batches(arrays, batch_size, perm=None, steps=None):
        n = len(arrays[0])
        nb = math.ceil(n / batch_size)
        if steps is not None:
            nb = min(nb, steps)
        for b in range(nb):
            if perm is None:
                sl = slice(b * batch_size, (b + 1) * batch_size)
                yield [a[sl] if a is not None else None for a in arrays]
            else:
                idx = perm[b * batch_size:(b + 1) * batch_size]
                yield [a[idx] if a is not None else None for a in arrays]


    # -- fit
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None,
            sample_weight=None, initial_epoch=0, steps_per_epoch=None, validation_steps=None,
            validation_batch_size=None, validation_freq=1):
        """Trains the model; returns a :class:`maas.callbacks.History`.
        Each batch goes to ``self.train_step(data)`` as ``x``, ``(x, y)`` or
        ``(x, y, sample_weight)``.

        >>> history = model.fit(x_train, y_train, epochs=10, validation_split=0.1)
        >>> history.history["val_accuracy"][-1]
        """
        self._assert_compiled("fit")
        dp = _dist.active()
        if dp is not None and not self.__dict__.get("_dp_inside"):
            return self._dp_call("fit", self.fit, x=x, y=y, batch_size=batch_size, epochs=epochs,
                                 verbose=verbose, callbacks=callbacks,
                                 validation_split=validation_split, validation_data=validation_data,
                                 shuffle=shuffle, class_weight=class_weight,
                                 sample_weight=sample_weight, initial_epoch=initial_epoch,
                                 steps_per_epoch=steps_per_epoch, validation_steps=validation_steps,
                                 validation_batch_size=validation_batch_size,
                                 validation_freq=validation_freq)
        if verbose == "auto":
            verbose = 1
        if dp is not None and not dp.is_chief:
            verbose = 0
        if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size <= 0):
            raise ValueError(f"batch_size must be a positive integer, received batch_size={batch_size!r}")
        batch_size = int(batch_size or 32)
        x = _data_adapters.adapt(x, shuffle=shuffle, steps_per_epoch=steps_per_epoch)
        validation_data = _data_adapters.adapt(validation_data)
        generator = _is_iterable_data(x)
        if generator:
            if y is not None:
                raise ValueError("When x is a generator or an iterable of batches, y must be None: "
                                 "the batches yield (x, y) or (x, y, sample_weight)")
            if validation_split:
                raise ValueError("validation_split is only supported for arrays; with a generator "
                                 "pass validation_data=(x_val, y_val)")
        else:
            if x is None:
                raise ValueError("fit() needs training data: fit(x, y, ...)")
            if y is None and not self._y_optional():
                raise ValueError("fit(x, y): y (the labels) is missing; pass y, or a generator of "
                                 "(x, y) batches as x")
            xs, ys, sw = self._prepare_xy(x, y, sample_weight)
            ys = ys or []
            sw = self._class_sample_weight(ys, sw, class_weight)
            if validation_split and validation_data is None:
                if not 0 < validation_split < 1:
                    raise ValueError(f"validation_split must be in (0, 1), received "
                                     f"validation_split={validation_split}")
                n = len(xs[0])
                split_at = int(math.floor(n * (1.0 - validation_split)))
                if split_at == 0 or split_at == n:
                    raise ValueError(f"validation_split={validation_split} leaves no training or no "
                                     f"validation rows out of {n}")
                validation_data = ([a[split_at:] for a in xs], [a[split_at:] for a in ys],
                                   None if sw is None else sw[split_at:])
                xs, ys = [a[:split_at] for a in xs], [a[:split_at] for a in ys]
                sw = None if sw is None else sw[:split_at]
                val_prepared = True
            else:
                val_prepared = False
            self._ensure_ready(xs, ys, sw)
            n = len(xs[0])
            steps = math.ceil(n / batch_size)
            if steps_per_epoch is not None:
                steps = min(steps, int(steps_per_epoch))
        if validation_data is not None and not generator and not val_prepared or \
                (generator and validation_data is not None):
            val = validation_data
            if not _is_iterable_data(val):
                vx, vy, vsw = _unpack(val)
                vxs, vys, vsw = self._prepare_xy(vx, vy, vsw)
                val = (vxs, vys or [], vsw)
        elif validation_data is not None:
            val = validation_data
        else:
            val = None

        self._maybe_plan()
        history = callbacks_module.History()
        cbs = list(callbacks or [])
        if verbose:
            cbs.append(callbacks_module.ProgbarLogger(verbose=verbose))
        cbs.append(history)
        if dp is not None:
            cbs = dp.filter_callbacks(cbs)
        params = {"verbose": verbose, "epochs": epochs,
                  "steps": (steps if not generator else
                            (steps_per_epoch or (len(x) if hasattr(x, "__len__") else None)))}
        cb = callbacks_module.CallbackList(cbs, model=self, **params)
        self.stop_training = False
        cb.on_train_begin({})
        # a callback may move the start (BackupAndRestore resuming a killed run), as in Keras
        initial_epoch, self._initial_epoch = getattr(self, "_initial_epoch", None) or initial_epoch, None
        if dp is not None:  # rank 0's weights (and what its callbacks restored), everywhere
            initial_epoch = int(dp.comm.bcast(initial_epoch, root=0))
            if not generator:
                dp.sync_weights(self)
        gen_iter = None
        logs = {}
        epoch_logs = {}
        for epoch in range(initial_epoch, epochs):
            self.reset_metrics()
            cb.on_epoch_begin(epoch, {})
            if generator:
                if steps_per_epoch is not None:
                    gen_iter = gen_iter or iter(x)
                    source = (next(gen_iter, None) for _ in range(int(steps_per_epoch)))
                else:
                    source = iter(x)
                seen = 0
                for step, data in enumerate(source):
                    if data is None:
                        break
                    bx, by, bsw = _unpack(data)
                    bxs, bys, bsw = self._prepare_xy(bx, by, bsw)
                    if by is None and not self._y_optional():
                        raise ValueError("The generator must yield (x, y) or (x, y, sample_weight) batches")
                    bys = bys or []
                    bsw = self._class_sample_weight(bys, bsw, class_weight)
                    if dp is not None:
                        part = dp.shard(bxs + bys + [bsw])
                        if part is None:
                            continue
                        bxs, bys, bsw = part[:len(bxs)], part[len(bxs):len(bxs) + len(bys)], part[-1]
                    if self._compile_losses is None or step == 0 and epoch == initial_epoch:
                        self._ensure_ready(bxs, bys, bsw)
                        self._maybe_plan()
                        if dp is not None:
                            dp.sync_weights(self)
                    cb.on_train_batch_begin(step, {})
                    logs = self._dp_step(dp, bxs, bys, bsw)
                    cb.on_train_batch_end(step, logs)
                    seen += 1
                    if self.stop_training:
                        break
                if seen == 0:
                    warnings.warn("Your input ran out of data; interrupting training. Make sure "
                                  "the generator can produce steps_per_epoch * epochs batches, or "
                                  "pass an iterable that can be iterated once per epoch.")
                    break
            else:
                if not shuffle:
                    perm = None
                elif dp is not None:  # rank 0's order on every rank
                    perm = dp.permutation(len(xs[0]), _random.numpy_rng())
                else:
                    perm = _random.numpy_rng().permutation(len(xs[0]))
                arrays = xs + ys + [sw]
                nx, ny = len(xs), len(ys)
                for step, batch in enumerate(self._array_batches(arrays, batch_size, perm, steps)):
                    if dp is not None and (batch := dp.shard(batch)) is None:
                        continue
                    cb.on_train_batch_begin(step, {})
                    bx, by, bsw = batch[:nx], batch[nx:nx + ny], batch[-1]
                    logs = self._dp_step(dp, bx, by, bsw)
                    cb.on_train_batch_end(step, logs)
                    if self.stop_training:
                        break
            epoch_logs = dict(logs)
            if val is not None and (epoch + 1) % validation_freq == 0:
                val_logs = self._evaluate_prepared(val, validation_batch_size or batch_size,
                                                   validation_steps)
                epoch_logs.update({"val_" + k: v for k, v in val_logs.items()})
            cb.on_epoch_end(epoch, epoch_logs)
            if self.stop_training:
                break
        cb.on_train_end(epoch_logs)
        self.history = history
        return history

    def _dp_call(self, what, fn, **kwargs):
        """Runs fit/evaluate/predict once more inside the distribution's
        guard (an exception on one rank aborts them all)."""
        dp = _dist.active()
        self._dp_inside = True
        try:
            with dp.guard(what):
                return fn(**kwargs)
        finally:
            self._dp_inside = False

    def _dp_step(self, dp, xs, ys, sw):
        """One training step; with a distribution, the gradients are summed
        over the ranks and the logs hold every rank's metrics."""
        if dp is None:
            return self._run_step(self.train_step, xs, ys, sw)
        with dp.step():
            logs = self._run_step(self.train_step, xs, ys, sw)
        dp.sync_state(self)
        return self._dp_logs(dp, logs)

    def _dp_logs(self, dp, logs):
        with dp.global_metrics(self):
            logs = {**logs, **_pythonify_logs(self.get_metrics_result())}
        return logs

    def _run_step(self, step_fn, xs, ys, sw):
        """Packs a batch as Keras does and runs one step; returns Python logs."""
        y = (ys[0] if len(ys) == 1 else list(ys)) if ys else None
        data = pack_x_y_sample_weight(self._model_input(xs), y, sw)
        logs = step_fn(data)
        if logs is not None and not isinstance(logs, dict):
            raise TypeError(f"{step_fn.__name__}() must return a dict of logs (metric name -> "
                            f"value), as in Keras; it returned {type(logs).__name__}")
        return _pythonify_logs(logs)

    def _evaluate_prepared(self, val, batch_size, steps=None, cb=None):
        dp = _dist.active()
        logs = self._evaluate_local(dp, val, batch_size, steps, cb)
        return logs if dp is None else self._dp_logs(dp, logs)

    def _evaluate_local(self, dp, val, batch_size, steps=None, cb=None):
        self.reset_metrics()
        logs = {}
        if _is_iterable_data(val):
            batches = (self._prepare_xy(*_unpack(d)) for d in val)
            for step, (bxs, bys, bsw) in enumerate(batches):
                if steps is not None and step >= steps:
                    break
                bys = bys or []
                if dp is not None:
                    part = dp.shard(bxs + bys + [bsw])
                    if part is None:
                        continue
                    bxs, bys, bsw = part[:len(bxs)], part[len(bxs):len(bxs) + len(bys)], part[-1]
                if self._compile_losses is None:
                    self._ensure_ready(bxs, bys, bsw)
                if cb:
                    cb.on_test_batch_begin(step, {})
                logs = self._run_step(self.test_step, bxs, bys, bsw)
                if cb:
                    cb.on_test_batch_end(step, logs)
            return logs
        xs, ys, sw = val
        nx, ny = len(xs), len(ys)
        if dp is not None:  # one contiguous part of the data per rank
            lo, hi = dp.bounds(len(xs[0]))
            xs, ys = [a[lo:hi] for a in xs], [a[lo:hi] for a in ys]
            sw = None if sw is None else sw[lo:hi]
            if hi == lo:
                return logs
        for step, batch in enumerate(self._array_batches(xs + ys + [sw], batch_size, None, steps)):
            if cb:
                cb.on_test_batch_begin(step, {})
            bx, by, bsw = batch[:nx], batch[nx:nx + ny], batch[-1]
            logs = self._run_step(self.test_step, bx, by, bsw)
            if cb:
                cb.on_test_batch_end(step, logs)
        return logs

    def _ordered(self, logs, return_dict):
        """evaluate's return value: the logs, or their values in the order of
        ``self.metrics`` (a container's metrics in place), as Keras orders them."""
        if return_dict:
            return logs
        names = []
        for m in self.metrics:
            names += [s.name for s in m.metrics] if isinstance(m, CompileMetrics) else [m.name]
        values = [logs[k] for k in names if k in logs]
        values += [logs[k] for k in sorted(logs) if k not in names]
        return values[0] if len(values) == 1 else values

    # -- evaluate
    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None,
                 steps=None, callbacks=None, return_dict=False):
        """The loss and metrics on data: a scalar (loss only), a list
        [loss, *metrics], or a dict with return_dict=True. Each batch goes
        to ``self.test_step(data)``."""
        self._assert_compiled("evaluate")
        dp = _dist.active()
        if dp is not None and not self.__dict__.get("_dp_inside"):
            return self._dp_call("evaluate", self.evaluate, x=x, y=y, batch_size=batch_size,
                                 verbose=verbose, sample_weight=sample_weight, steps=steps,
                                 callbacks=callbacks, return_dict=return_dict)
        if verbose == "auto":
            verbose = 1
        if dp is not None and not dp.is_chief:
            verbose = 0
        batch_size = int(batch_size or 32)
        x = _data_adapters.adapt(x)
        if _is_iterable_data(x):
            val = x
            nsteps = steps or (len(x) if hasattr(x, "__len__") else None)
        else:
            if y is None and not self._y_optional():
                raise ValueError("evaluate(x, y): y (the labels) is missing")
            xs, ys, sw = self._prepare_xy(x, y, sample_weight)
            ys = ys or []
            self._ensure_ready(xs, ys, sw)
            if dp is not None:
                dp.sync_weights(self)
            val = (xs, ys, sw)
            nsteps = math.ceil(len(xs[0]) / batch_size)
            if steps is not None:
                nsteps = min(nsteps, steps)
        cbs = list(callbacks or [])
        if verbose:
            cbs.append(callbacks_module.ProgbarLogger(verbose=verbose))
        if dp is not None:
            cbs = dp.filter_callbacks(cbs)
        cb = callbacks_module.CallbackList(cbs, model=self, verbose=verbose, epochs=1, steps=nsteps)
        cb.on_test_begin({})
        logs = self._evaluate_prepared(val, batch_size, steps, cb)
        cb.on_test_end(logs)
        return self._ordered(logs, return_dict)

    # -- predict
    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Model outputs as NumPy arrays, computed in batches (training=False)
        by ``self.predict_step(data)``: one array, a list, or a dict for a
        model with a dict of outputs."""
        dp = _dist.active()
        if dp is not None and not self.__dict__.get("_dp_inside"):
            return self._dp_call("predict", self.predict, x=x, batch_size=batch_size,
                                 verbose=verbose, steps=steps, callbacks=callbacks)
        if verbose == "auto":
            verbose = 1
        if dp is not None and not dp.is_chief:
            verbose = 0
        batch_size = int(batch_size or 32)
        x = _data_adapters.adapt(x)
        if dp is not None and _is_iterable_data(x):
            raise NotImplementedError("predict under maas.distribution.DataParallel takes arrays; "
                                      "a generator would be read whole by every rank")
        if _is_iterable_data(x):
            def gen():
                for data in x:
                    bx, _, _ = _unpack(data)
                    yield self._prepare_xy(bx, None, None, "predict")[0]
            batches = gen()
            nsteps = steps or (len(x) if hasattr(x, "__len__") else None)
        else:
            xs, _, _ = self._prepare_xy(x, None, None, "predict")
            if dp is not None:  # one contiguous part per rank, gathered at the end
                if not self.built:  # build here, so every rank predicts with rank 0's weights
                    self(self._model_input([a[:1] for a in xs]), training=False)
                dp.sync_weights(self)
                lo, hi = dp.bounds(len(xs[0]))
                xs = [a[lo:hi] for a in xs]
            nsteps = math.ceil(len(xs[0]) / batch_size)
            if steps is not None:
                nsteps = min(nsteps, steps)
            batches = self._array_batches(xs, batch_size, None, steps)
        if self._compiled_predict_fn is None and not self._plan_checked and self.built:
            self._maybe_plan()  # predict runs from a plan before any fit too (BN folded)
        cbs = list(callbacks or [])
        if verbose:
            cbs.append(callbacks_module.ProgbarLogger(verbose=verbose))
        if dp is not None:
            cbs = dp.filter_callbacks(cbs)
        cb = callbacks_module.CallbackList(cbs, model=self, verbose=verbose, epochs=1, steps=nsteps)
        cb.on_predict_begin({})
        outs = []
        for step, bx in enumerate(batches):
            if steps is not None and step >= steps:
                break
            cb.on_predict_batch_begin(step, {})
            out = self.predict_step(pack_x_y_sample_weight(self._model_input(bx)))
            outs.append(_map(np.asarray, out))
            cb.on_predict_batch_end(step, {"outputs": out})
        cb.on_predict_end({})
        if dp is not None:
            return dp.gather(_concat_outputs(outs) if outs else None)
        if not outs:
            raise ValueError("predict() received no data (an empty x or generator)")
        return _concat_outputs(outs)

    # -- batch-level
    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        """One gradient update on one batch; returns the loss (and metrics)."""
        self._assert_compiled("train_on_batch")
        if y is None and not self._y_optional():
            raise ValueError("train_on_batch(x, y): y (the labels) is missing")
        xs, ys, sw = self._prepare_xy(x, y, sample_weight)
        ys = ys or []
        sw = self._class_sample_weight(ys, sw, class_weight)
        if self._compile_losses is None:
            self._ensure_ready(xs, ys, sw)
            self._maybe_plan()
        logs = self._run_step(self.train_step, xs, ys, sw)
        return self._ordered(logs, return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        """The loss (and metrics) on one batch, without updating the weights."""
        self._assert_compiled("test_on_batch")
        xs, ys, sw = self._prepare_xy(x, y, sample_weight)
        ys = ys or []
        if self._compile_losses is None:
            self._ensure_ready(xs, ys, sw)
        self.reset_metrics()
        logs = self._run_step(self.test_step, xs, ys, sw)
        return self._ordered(logs, return_dict)

    def predict_on_batch(self, x):
        """The model's outputs on one batch, as NumPy arrays."""
        xs, _, _ = self._prepare_xy(x, None, None)
        out = self.predict_step(pack_x_y_sample_weight(self._model_input(xs)))
        return _map(np.array, out)


def _concat_outputs(outs):
    first = outs[0]
    if isinstance(first, dict):
        return {k: np.concatenate([o[k] for o in outs]) for k in first}
    if isinstance(first, (list, tuple)):
        return [np.concatenate([o[i] for o in outs]) for i in range(len(first))]
    return np.concatenate(outs)
