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
from . import ops as _ops
from .tensor import Tensor, convert_to_tensor

_c = _core
EPSILON = 1e-7  # keras.backend.epsilon()


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


# -- losses composed from maas ops (each op one C call, recorded on the tape;
#    y_true is data: no gradient flows to it, as with the fused kernels above)

def _pair(name, y_true, y_pred):
    """(y_true as float32 NumPy, y_pred as a Tensor) of the same shape, after
    Keras's squeeze_or_expand_to_same_rank (a trailing 1 on either side)."""
    y_pred = convert_to_tensor(y_pred)
    y = np.asarray(y_true, dtype=np.float32)
    ps = tuple(y_pred.shape)
    if y.ndim == len(ps) + 1 and y.shape[-1] == 1:
        if len(ps) == 1:  # a rank-1 side is expanded, else the trailing 1 squeezed
            y_pred = y_pred.reshape(ps + (1,))
            ps = ps + (1,)
        else:
            y = y.reshape(y.shape[:-1])
    elif len(ps) == y.ndim + 1 and ps[-1] == 1:
        if y.ndim == 1:
            y = y.reshape(y.shape + (1,))
        else:
            y_pred = y_pred.reshape(ps[:-1])
            ps = ps[:-1]
    if y.shape != ps:
        raise ValueError(f"{name}: y_true shape {y.shape} does not match y_pred shape {ps}")
    if not ps:
        raise ValueError(f"{name}: y_pred must have at least 1 dimension, got shape ()")
    return y, y_pred


def _hinge_labels(y):
    """Keras's convert_binary_labels_to_hinge: 0/1 labels become -1/1."""
    return 2.0 * y - 1.0 if np.all((y == 0) | (y == 1)) else y


def huber(y_true, y_pred, delta: float = 1.0):
    """mean(0.5 e**2 if |e| <= delta else delta * |e| - 0.5 * delta**2, axis=-1),
    e = y_pred - y_true.

    >>> round(float(maas.losses.huber([[0.0, 1.0]], [[0.6, 0.4]])[0]), 4)
    0.18
    """
    y, p = _pair("huber", y_true, y_pred)
    a = _ops.abs(p - y)
    q = _ops.minimum(a, float(delta))  # |e| up to delta: the quadratic part
    return (0.5 * (q * q) + float(delta) * (a - q)).mean(axis=-1)


def log_cosh(y_true, y_pred):
    """mean(log(cosh(y_pred - y_true)), axis=-1), as x + softplus(-2x) - log(2)
    (stable for large errors)."""
    y, p = _pair("log_cosh", y_true, y_pred)
    x = p - y
    return (x + _ops.softplus(x * -2.0) - float(np.log(2.0))).mean(axis=-1)


def kl_divergence(y_true, y_pred):
    """sum(y_true * log(y_true / y_pred), axis=-1), both clipped to [1e-7, 1]."""
    y, p = _pair("kl_divergence", y_true, y_pred)
    y = np.clip(y, EPSILON, 1.0)
    p = _ops.clip(p, EPSILON, 1.0)
    return (y * np.log(y) - y * _ops.log(p)).sum(axis=-1)


def poisson(y_true, y_pred):
    """mean(y_pred - y_true * log(y_pred + 1e-7), axis=-1)."""
    y, p = _pair("poisson", y_true, y_pred)
    return (p - y * _ops.log(p + EPSILON)).mean(axis=-1)


def _l2_normalize_np(x, axis):
    return x / np.sqrt(np.maximum(np.sum(x * x, axis=axis, keepdims=True), EPSILON * EPSILON))


def cosine_similarity(y_true, y_pred, axis: int = -1):
    """-sum(l2_normalize(y_true) * l2_normalize(y_pred), axis): -1 for the same
    direction, 0 when either vector is zero."""
    y, p = _pair("cosine_similarity", y_true, y_pred)
    yn = _l2_normalize_np(y, axis).astype(np.float32)
    ss = _ops.maximum((p * p).sum(axis=axis, keepdims=True), EPSILON * EPSILON)
    return -((p / _ops.sqrt(ss)) * yn).sum(axis=axis)


def squared_hinge(y_true, y_pred):
    """mean(max(1 - y_true * y_pred, 0) ** 2, axis=-1); 0/1 labels become -1/1."""
    y, p = _pair("squared_hinge", y_true, y_pred)
    m = _ops.maximum(1.0 - p * _hinge_labels(y), 0.0)
    return (m * m).mean(axis=-1)


def categorical_hinge(y_true, y_pred):
    """max(max((1 - y_true) * y_pred) - sum(y_true * y_pred) + 1, 0) over the
    last axis, for one-hot y_true."""
    y, p = _pair("categorical_hinge", y_true, y_pred)
    pos = (p * y).sum(axis=-1)
    neg = _ops.max(p * (1.0 - y), axis=-1)
    return _ops.maximum(neg - pos + 1.0, 0.0)


def mean_absolute_percentage_error(y_true, y_pred):
    """100 * mean(|y_true - y_pred| / max(|y_true|, 1e-7), axis=-1)."""
    y, p = _pair("mean_absolute_percentage_error", y_true, y_pred)
    scale = (100.0 / np.maximum(np.abs(y), EPSILON)).astype(np.float32)
    return (_ops.abs(p - y) * scale).mean(axis=-1)


def mean_squared_logarithmic_error(y_true, y_pred):
    """mean((log(max(y_pred, 1e-7) + 1) - log(max(y_true, 1e-7) + 1)) ** 2, axis=-1)."""
    y, p = _pair("mean_squared_logarithmic_error", y_true, y_pred)
    second = np.log(np.maximum(y, EPSILON) + 1.0).astype(np.float32)
    d = _ops.log(_ops.maximum(p, EPSILON) + 1.0) - second
    return (d * d).mean(axis=-1)


def binary_focal_crossentropy(y_true, y_pred, apply_class_balancing: bool = False,
                              alpha: float = 0.25, gamma: float = 2.0, from_logits: bool = False,
                              label_smoothing: float = 0.0, axis: int = -1):
    """Focal BCE (Lin et al., 2018), Keras's formula: the elementwise BCE times
    (1 - p_t) ** gamma, p_t = y p + (1 - y)(1 - p); with class balancing also
    times alpha (class 1) or 1 - alpha (class 0); mean over the last axis.

    >>> y, p = [[0, 1]], [[0.1, 0.7]]
    >>> float(maas.losses.binary_focal_crossentropy(y, p, gamma=0.0)[0]) == \\
    ...     float(maas.losses.binary_crossentropy(y, p)[0])
    True
    """
    _check_axis(axis, "binary_focal_crossentropy")
    y, p = _pair("binary_focal_crossentropy", y_true, y_pred)
    if label_smoothing:
        y = y * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        p = _ops.sigmoid(p)
    shape = tuple(p.shape)
    # the C kernel's BCE (clipped at 1e-7) per element: a mean over a last axis of 1
    bce = _c.loss(_c.L_BCE, y.reshape(shape + (1,)), p.reshape(shape + (1,)), False)
    one_minus_pt = p * (1.0 - 2.0 * y) + y  # 1 - (y p + (1 - y)(1 - p))
    focal = bce * _ops.power(one_minus_pt, float(gamma)) if gamma != 0 else bce
    if apply_class_balancing:
        focal = focal * (y * alpha + (1.0 - y) * (1.0 - alpha)).astype(np.float32)
    return focal.mean(axis=-1)


def categorical_focal_crossentropy(y_true, y_pred, alpha: float = 0.25, gamma: float = 2.0,
                                   from_logits: bool = False, label_smoothing: float = 0.0,
                                   axis: int = -1):
    """Focal CCE, Keras's formula: rows renormalised and clipped to [1e-7,
    1 - 1e-7], then sum(alpha * (1 - p) ** gamma * -y log p, axis=-1)."""
    _check_axis(axis, "categorical_focal_crossentropy")
    y, p = _pair("categorical_focal_crossentropy", y_true, y_pred)
    if label_smoothing:
        y = y * (1.0 - label_smoothing) + label_smoothing / y.shape[-1]
    if from_logits:
        p = _ops.softmax(p, axis=-1)
    out = _ops.clip(p / p.sum(axis=-1, keepdims=True), EPSILON, 1.0 - EPSILON)
    cce = _ops.log(out) * (-y)
    weight = _ops.power(1.0 - out, float(gamma)) * float(alpha) if gamma != 0 else float(alpha)
    return (cce * weight).sum(axis=-1)


mse = MSE = mean_squared_error
mae = MAE = mean_absolute_error
mape = MAPE = mean_absolute_percentage_error
msle = MSLE = mean_squared_logarithmic_error
kld = KLD = kullback_leibler_divergence = kl_divergence
logcosh = log_cosh
bce = BCE = binary_crossentropy


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


class _Wrapper(Loss):
    """A Loss over a per-sample function ``fn(y_true, y_pred, **kwargs)``; the
    kwargs are the class's config."""

    fn = None

    def __init__(self, name, reduction, **kwargs):
        super().__init__(name, reduction)
        self._fn_kwargs = kwargs
        for k, v in kwargs.items():
            setattr(self, k, v)

    def call(self, y_true, y_pred):
        return type(self).fn(y_true, y_pred, **self._fn_kwargs)

    def get_config(self):
        return {**super().get_config(), **self._fn_kwargs}


class Huber(_Wrapper):
    """>>> loss = maas.losses.Huber(delta=1.0)
    >>> round(float(loss([[0.0, 1.0], [0.0, 0.0]], [[0.6, 0.4], [0.4, 0.6]])), 3)
    0.155
    """
    fn = staticmethod(huber)

    def __init__(self, delta=1.0, reduction="sum_over_batch_size", name="huber_loss"):
        super().__init__(name, reduction, delta=delta)


class LogCosh(_Wrapper):
    fn = staticmethod(log_cosh)

    def __init__(self, reduction="sum_over_batch_size", name="log_cosh"):
        super().__init__(name, reduction)


class KLDivergence(_Wrapper):
    fn = staticmethod(kl_divergence)

    def __init__(self, reduction="sum_over_batch_size", name="kl_divergence"):
        super().__init__(name, reduction)


class Poisson(_Wrapper):
    fn = staticmethod(poisson)

    def __init__(self, reduction="sum_over_batch_size", name="poisson"):
        super().__init__(name, reduction)


class CosineSimilarity(_Wrapper):
    fn = staticmethod(cosine_similarity)

    def __init__(self, axis=-1, reduction="sum_over_batch_size", name="cosine_similarity"):
        super().__init__(name, reduction, axis=axis)


class SquaredHinge(_Wrapper):
    fn = staticmethod(squared_hinge)

    def __init__(self, reduction="sum_over_batch_size", name="squared_hinge"):
        super().__init__(name, reduction)


class CategoricalHinge(_Wrapper):
    fn = staticmethod(categorical_hinge)

    def __init__(self, reduction="sum_over_batch_size", name="categorical_hinge"):
        super().__init__(name, reduction)


class MeanAbsolutePercentageError(_Wrapper):
    """>>> loss = maas.losses.MeanAbsolutePercentageError()
    >>> round(float(loss([100.0, 200.0, 300.0], [90.0, 210.0, 310.0])), 4)
    6.1111
    """
    fn = staticmethod(mean_absolute_percentage_error)

    def __init__(self, reduction="sum_over_batch_size", name="mean_absolute_percentage_error"):
        super().__init__(name, reduction)


class MeanSquaredLogarithmicError(_Wrapper):
    fn = staticmethod(mean_squared_logarithmic_error)

    def __init__(self, reduction="sum_over_batch_size", name="mean_squared_logarithmic_error"):
        super().__init__(name, reduction)


class BinaryFocalCrossentropy(_Wrapper):
    fn = staticmethod(binary_focal_crossentropy)

    def __init__(self, apply_class_balancing=False, alpha=0.25, gamma=2.0, from_logits=False,
                 label_smoothing=0.0, axis=-1, reduction="sum_over_batch_size",
                 name="binary_focal_crossentropy"):
        super().__init__(name, reduction, apply_class_balancing=apply_class_balancing, alpha=alpha,
                         gamma=gamma, from_logits=from_logits, label_smoothing=label_smoothing,
                         axis=axis)


class CategoricalFocalCrossentropy(_Wrapper):
    fn = staticmethod(categorical_focal_crossentropy)

    def __init__(self, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction="sum_over_batch_size", name="categorical_focal_crossentropy"):
        super().__init__(name, reduction, alpha=alpha, gamma=gamma, from_logits=from_logits,
                         label_smoothing=label_smoothing, axis=axis)


_BY_NAME = {
    "mean_squared_error": mean_squared_error, "mse": mean_squared_error, "MSE": mean_squared_error,
    "mean_absolute_error": mean_absolute_error, "mae": mean_absolute_error, "MAE": mean_absolute_error,
    "binary_crossentropy": binary_crossentropy, "bce": binary_crossentropy, "BCE": binary_crossentropy,
    "categorical_crossentropy": categorical_crossentropy,
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
    "hinge": hinge,
    "huber": huber, "log_cosh": log_cosh, "logcosh": log_cosh,
    "kl_divergence": kl_divergence, "kld": kl_divergence, "KLD": kl_divergence,
    "kullback_leibler_divergence": kl_divergence, "poisson": poisson,
    "cosine_similarity": cosine_similarity, "squared_hinge": squared_hinge,
    "categorical_hinge": categorical_hinge,
    "mean_absolute_percentage_error": mean_absolute_percentage_error,
    "mape": mean_absolute_percentage_error, "MAPE": mean_absolute_percentage_error,
    "mean_squared_logarithmic_error": mean_squared_logarithmic_error,
    "msle": mean_squared_logarithmic_error, "MSLE": mean_squared_logarithmic_error,
    "binary_focal_crossentropy": binary_focal_crossentropy,
    "categorical_focal_crossentropy": categorical_focal_crossentropy,
}
_CLASSES = {c.__name__: c for c in (MeanSquaredError, MeanAbsoluteError, BinaryCrossentropy,
                                     CategoricalCrossentropy, SparseCategoricalCrossentropy, Hinge,
                                     Huber, LogCosh, KLDivergence, Poisson, CosineSimilarity,
                                     SquaredHinge, CategoricalHinge, MeanAbsolutePercentageError,
                                     MeanSquaredLogarithmicError, BinaryFocalCrossentropy,
                                     CategoricalFocalCrossentropy)}


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
