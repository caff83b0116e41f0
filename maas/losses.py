"""Losses as Keras has them: functions that return the per-sample loss, and
classes that weight and reduce it. The kernels are fused in C (the
``from_logits`` paths are stable for any logit size).

>>> import maas, numpy as np
>>> y = np.array([0, 2]); logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 2.0]], np.float32)
>>> maas.losses.sparse_categorical_crossentropy(y, logits, from_logits=True).shape
(2,)
>>> loss = maas.losses.SparseCategoricalCrossentropy(from_logits=True)
>>> round(float(loss(y, logits)), 4)
0.2395
"""
from __future__ import annotations

import numpy as np

from . import _core
from .tensor import Tensor, convert_to_tensor

_c = _core


def _check_axis(axis, name):
    if axis not in (-1, None):
        raise NotImplementedError(f"{name}: only axis=-1 (the last axis) is supported, "
                                  f"received axis={axis}")


def mean_squared_error(y_true, y_pred):
    """mean((y_true - y_pred) ** 2, axis=-1)"""
    return _c.loss(_c.L_MSE, y_true, y_pred)


def mean_absolute_error(y_true, y_pred):
    """mean(abs(y_true - y_pred), axis=-1)"""
    return _c.loss(_c.L_MAE, y_true, y_pred)


def binary_crossentropy(y_true, y_pred, from_logits: bool = False,
                        label_smoothing: float = 0.0, axis: int = -1):
    """mean(-(y log p + (1 - y) log(1 - p)), axis=-1); p clipped to
    [1e-7, 1 - 1e-7] unless from_logits."""
    _check_axis(axis, "binary_crossentropy")
    if label_smoothing:
        y_true = np.asarray(y_true, np.float32) * (1.0 - label_smoothing) + 0.5 * label_smoothing
    return _c.loss(_c.L_BCE, y_true, y_pred, bool(from_logits))


def categorical_crossentropy(y_true, y_pred, from_logits: bool = False,
                             label_smoothing: float = 0.0, axis: int = -1):
    """-sum(y log p, axis=-1) for one-hot (or soft) labels."""
    _check_axis(axis, "categorical_crossentropy")
    if label_smoothing:
        y = np.asarray(y_true, np.float32)
        y_true = y * (1.0 - label_smoothing) + label_smoothing / y.shape[-1]
    return _c.loss(_c.L_CCE, y_true, y_pred, bool(from_logits))


def sparse_categorical_crossentropy(y_true, y_pred, from_logits: bool = False,
                                    ignore_class=None, axis: int = -1):
    """-log p[label] for integer labels in [0, classes).

    Integer labels (int32, int64, int8, uint8 tensors or arrays) are read as
    they are, without a pass through float; float labels are accepted when
    every value is a whole number (else IntegerLabelError, both a TypeError
    and a ValueError)."""
    _check_axis(axis, "sparse_categorical_crossentropy")
    if ignore_class is not None:
        raise NotImplementedError("sparse_categorical_crossentropy: ignore_class is not supported yet")
    return _c.scce_int(y_true, y_pred, bool(from_logits))


def hinge(y_true, y_pred):
    """mean(max(1 - y_true * y_pred, 0), axis=-1); labels 0/1 become -1/1."""
    return _c.loss(_c.L_HINGE, y_true, y_pred)


mse = MSE = mean_squared_error
mae = MAE = mean_absolute_error


class Loss:
    """Base class: ``__call__(y_true, y_pred, sample_weight=None)`` weights the
    per-sample losses of ``call`` and reduces them.

    reduction: "sum_over_batch_size" (Keras's default: the weighted sum over
    the number of elements), "sum", "mean" (the weighted mean), or "none".
    """

    reductions = ("sum_over_batch_size", "sum", "mean", "none", None)

    def __init__(self, name: str | None = None, reduction: str | None = "sum_over_batch_size"):
        if reduction not in self.reductions:
            raise ValueError(f"invalid reduction {reduction!r}; expected one of "
                             f"{[r for r in self.reductions if r]}")
        self.name = name or _snake(type(self).__name__)
        self.reduction = reduction

    def call(self, y_true, y_pred) -> Tensor:
        raise NotImplementedError

    def __call__(self, y_true, y_pred, sample_weight=None) -> Tensor:
        losses = self.call(y_true, y_pred)
        return reduce_weighted(losses, sample_weight, self.reduction)

    def get_config(self) -> dict:
        return {"name": self.name, "reduction": self.reduction}

    @classmethod
    def from_config(cls, config: dict) -> "Loss":
        return cls(**config)


def reduce_weighted(losses, sample_weight=None, reduction="sum_over_batch_size"):
    """Applies sample weights to per-sample losses and reduces them."""
    if sample_weight is not None:
        w = convert_to_tensor(sample_weight)
        if w.ndim > losses.ndim:
            w = w.reshape(losses.shape)
        losses = losses * w
    if reduction in ("none", None):
        return losses
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean" and sample_weight is not None:
        # the weighted mean: divide by the total weight over the losses' shape
        total = float(np.sum(np.broadcast_to(np.asarray(w), losses.shape)))
        return losses.sum() / max(total, 1e-12)
    return losses.mean()


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


class MeanSquaredError(Loss):
    def __init__(self, reduction="sum_over_batch_size", name="mean_squared_error"):
        super().__init__(name, reduction)

    def call(self, y_true, y_pred):
        return mean_squared_error(y_true, y_pred)


class MeanAbsoluteError(Loss):
    def __init__(self, reduction="sum_over_batch_size", name="mean_absolute_error"):
        super().__init__(name, reduction)

    def call(self, y_true, y_pred):
        return mean_absolute_error(y_true, y_pred)


class BinaryCrossentropy(Loss):
    """>>> maas.losses.BinaryCrossentropy(from_logits=True)([1.0], [20.0]).item() < 1e-6
    True"""

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction="sum_over_batch_size", name="binary_crossentropy"):
        super().__init__(name, reduction)
        self.from_logits, self.label_smoothing, self.axis = from_logits, label_smoothing, axis

    def call(self, y_true, y_pred):
        return binary_crossentropy(y_true, y_pred, self.from_logits, self.label_smoothing, self.axis)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits,
                "label_smoothing": self.label_smoothing, "axis": self.axis}


class CategoricalCrossentropy(BinaryCrossentropy):
    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction="sum_over_batch_size", name="categorical_crossentropy"):
        super().__init__(from_logits, label_smoothing, axis, reduction, name)

    def call(self, y_true, y_pred):
        return categorical_crossentropy(y_true, y_pred, self.from_logits, self.label_smoothing, self.axis)


class SparseCategoricalCrossentropy(Loss):
    def __init__(self, from_logits=False, ignore_class=None, reduction="sum_over_batch_size",
                 name="sparse_categorical_crossentropy"):
        super().__init__(name, reduction)
        self.from_logits, self.ignore_class = from_logits, ignore_class

    def call(self, y_true, y_pred):
        return sparse_categorical_crossentropy(y_true, y_pred, self.from_logits, self.ignore_class)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits,
                "ignore_class": self.ignore_class}


class Hinge(Loss):
    def __init__(self, reduction="sum_over_batch_size", name="hinge"):
        super().__init__(name, reduction)

    def call(self, y_true, y_pred):
        return hinge(y_true, y_pred)


_BY_NAME = {
    "mean_squared_error": mean_squared_error, "mse": mean_squared_error,
    "mean_absolute_error": mean_absolute_error, "mae": mean_absolute_error,
    "binary_crossentropy": binary_crossentropy,
    "categorical_crossentropy": categorical_crossentropy,
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
    "hinge": hinge,
}
_CLASSES = {c.__name__: c for c in (MeanSquaredError, MeanAbsoluteError, BinaryCrossentropy,
                                     CategoricalCrossentropy, SparseCategoricalCrossentropy, Hinge)}


def get(identifier):
    """A loss from its Keras name, class name, config dict, or itself."""
    if identifier is None or callable(identifier):
        return identifier
    if isinstance(identifier, dict):
        return _CLASSES[identifier["class_name"]].from_config(identifier.get("config", {}))
    if isinstance(identifier, str):
        if identifier in _BY_NAME:
            return _BY_NAME[identifier]
        if identifier in _CLASSES:
            return _CLASSES[identifier]()
    names = sorted(set(_BY_NAME) | set(_CLASSES))
    raise ValueError(f"unknown loss {identifier!r}; valid names are: {', '.join(names)}")
