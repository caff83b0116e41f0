"""Stateful metrics with Keras 3's names: ``update_state(y_true, y_pred,
sample_weight=None)``, ``result()``, ``reset_state()``. Updates are
vectorized NumPy over the batch (metrics are bookkeeping, not training).

>>> import maas, numpy as np
>>> m = maas.metrics.SparseCategoricalAccuracy()
>>> m.update_state([1, 0], np.array([[0.1, 0.9], [0.2, 0.8]]))
>>> float(m.result())
0.5
"""
from __future__ import annotations

import numpy as np


def _np(x):
    return np.asarray(x, dtype=np.float32) if not isinstance(x, np.ndarray) else x


def _weights(sample_weight, n):
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, np.float64).reshape(-1)
    if w.size == 1 and n != 1:
        w = np.full(n, float(w[0]))
    if w.size != n:
        raise ValueError(f"sample_weight has {w.size} values for a batch of {n} samples")
    return w


def _match(y_true, y_pred):
    """y_true reshaped to y_pred's shape when they hold the same number of values."""
    y_true, y_pred = _np(y_true), _np(y_pred)
    if y_true.shape != y_pred.shape and y_true.size == y_pred.size:
        y_true = y_true.reshape(y_pred.shape)
    return y_true, y_pred


# -- per-sample functions (Keras's metric functions)
def binary_accuracy(y_true, y_pred, threshold=0.5):
    y_true, y_pred = _match(y_true, y_pred)
    r = (y_true == (y_pred > threshold)).astype(np.float32)
    return r.mean(axis=-1) if r.ndim > 1 else r


def categorical_accuracy(y_true, y_pred):
    y_true, y_pred = _np(y_true), _np(y_pred)
    return (np.argmax(y_true, -1) == np.argmax(y_pred, -1)).astype(np.float32)


def sparse_categorical_accuracy(y_true, y_pred):
    y_pred = _np(y_pred)
    y_true = np.asarray(y_true).reshape(y_pred.shape[:-1])
    return (y_true == np.argmax(y_pred, -1)).astype(np.float32)


def _in_top_k(labels, y_pred, k):
    y_pred = _np(y_pred)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    target = np.take_along_axis(y_pred, labels[:, None], axis=-1)
    return ((y_pred > target).sum(axis=-1) < k).astype(np.float32)


def top_k_categorical_accuracy(y_true, y_pred, k=5):
    return _in_top_k(np.argmax(_np(y_true), -1), y_pred, k)


def sparse_top_k_categorical_accuracy(y_true, y_pred, k=5):
    return _in_top_k(y_true, y_pred, k)


def mean_squared_error(y_true, y_pred):
    y_true, y_pred = _match(y_true, y_pred)
    d = (y_true - y_pred) ** 2
    return d.mean(axis=-1) if d.ndim > 1 else d


def mean_absolute_error(y_true, y_pred):
    y_true, y_pred = _match(y_true, y_pred)
    d = np.abs(y_true - y_pred)
    return d.mean(axis=-1) if d.ndim > 1 else d


class Metric:
    """Base class of stateful metrics."""

    def __init__(self, name=None, dtype=None):
        from .layers.base import _snake
        self.name = name or _snake(type(self).__name__)
        self.reset_state()

    def reset_state(self):
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None):
        raise NotImplementedError

    def result(self):
        raise NotImplementedError

    def __call__(self, y_true, y_pred, sample_weight=None):
        self.update_state(y_true, y_pred, sample_weight)
        return self.result()

    def get_config(self):
        return {"name": self.name, "dtype": "float32"}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}>"


class Mean(Metric):
    """The (weighted) mean of the values given to update_state(values)."""

    def reset_state(self):
        self.total, self.count = 0.0, 0.0

    def update_state(self, values, sample_weight=None):
        v = np.asarray(values, np.float64).reshape(-1)
        w = _weights(sample_weight, v.size)
        if w is None:
            self.total += float(v.sum())
            self.count += v.size
        else:
            self.total += float((v * w).sum())
            self.count += float(w.sum())

    def result(self):
        return np.float32(self.total / self.count) if self.count else np.float32(0.0)


class Sum(Metric):
    def reset_state(self):
        self.total = 0.0

    def update_state(self, values, sample_weight=None):
        v = np.asarray(values, np.float64).reshape(-1)
        w = _weights(sample_weight, v.size)
        self.total += float(v.sum() if w is None else (v * w).sum())

    def result(self):
        return np.float32(self.total)


class MeanMetricWrapper(Mean):
    """The weighted mean of a per-sample function ``fn(y_true, y_pred)``."""

    def __init__(self, fn, name=None, dtype=None, **kwargs):
        self._fn, self._fn_kwargs = fn, kwargs
        super().__init__(name=name or fn.__name__)

    def update_state(self, y_true, y_pred, sample_weight=None):
        values = self._fn(y_true, y_pred, **self._fn_kwargs)
        if sample_weight is not None:
            sw = np.asarray(sample_weight, np.float64)
            if values.ndim > 1:
                values = values.reshape(values.shape[0], -1).mean(axis=1)
            sample_weight = sw.reshape(-1)
        super().update_state(values, sample_weight)

    def get_config(self):
        return {"name": self.name, "dtype": "float32", **self._fn_kwargs}


def _wrapper(fn, default_name, **defaults):
    def __init__(self, name=default_name, dtype=None, **kwargs):
        MeanMetricWrapper.__init__(self, fn, name=name, **{**defaults, **kwargs})

    return __init__


class BinaryAccuracy(MeanMetricWrapper):
    """Fraction of predictions (> threshold) equal to the 0/1 labels."""
    __init__ = _wrapper(binary_accuracy, "binary_accuracy", threshold=0.5)


class Accuracy(MeanMetricWrapper):
    """Fraction of predictions exactly equal to the labels."""
    __init__ = _wrapper(lambda t, p: (_match(t, p)[0] == _match(t, p)[1]).astype(np.float32), "accuracy")


class CategoricalAccuracy(MeanMetricWrapper):
    __init__ = _wrapper(categorical_accuracy, "categorical_accuracy")


class SparseCategoricalAccuracy(MeanMetricWrapper):
    __init__ = _wrapper(sparse_categorical_accuracy, "sparse_categorical_accuracy")


class TopKCategoricalAccuracy(MeanMetricWrapper):
    __init__ = _wrapper(top_k_categorical_accuracy, "top_k_categorical_accuracy", k=5)


class SparseTopKCategoricalAccuracy(MeanMetricWrapper):
    __init__ = _wrapper(sparse_top_k_categorical_accuracy, "sparse_top_k_categorical_accuracy", k=5)


class MeanSquaredError(MeanMetricWrapper):
    __init__ = _wrapper(mean_squared_error, "mean_squared_error")


class MeanAbsoluteError(MeanMetricWrapper):
    __init__ = _wrapper(mean_absolute_error, "mean_absolute_error")


class RootMeanSquaredError(MeanMetricWrapper):
    __init__ = _wrapper(mean_squared_error, "root_mean_squared_error")

    def result(self):
        return np.float32(np.sqrt(self.total / self.count)) if self.count else np.float32(0.0)


class _Confusion(Metric):
    """True/false positives/negatives at a threshold, over all values (as
    Keras's Precision and Recall: labels and predictions are flattened)."""

    def __init__(self, thresholds=None, top_k=None, class_id=None, name=None, dtype=None):
        self.thresholds = 0.5 if thresholds is None else thresholds
        if not isinstance(self.thresholds, (int, float)):
            raise NotImplementedError(f"{type(self).__name__}: only one threshold is supported")
        self.top_k, self.class_id = top_k, class_id
        super().__init__(name=name)

    def reset_state(self):
        self.tp = self.fp = self.fn = self.tn = 0.0

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = _match(y_true, y_pred)
        if self.top_k is not None:
            kth = -np.sort(-y_pred, axis=-1)[..., self.top_k - 1:self.top_k]
            pred = y_pred >= kth
        else:
            pred = y_pred > self.thresholds
        true = y_true > 0.5
        if self.class_id is not None:
            pred, true = pred[..., self.class_id], true[..., self.class_id]
        w = 1.0
        if sample_weight is not None:
            sw = np.asarray(sample_weight, np.float64).reshape(-1)
            w = np.broadcast_to(sw.reshape((-1,) + (1,) * (true.ndim - 1)), true.shape)
        self.tp += float(np.sum(w * (pred & true)))
        self.fp += float(np.sum(w * (pred & ~true)))
        self.fn += float(np.sum(w * (~pred & true)))
        self.tn += float(np.sum(w * (~pred & ~true)))

    def get_config(self):
        return {"name": self.name, "thresholds": self.thresholds, "top_k": self.top_k,
                "class_id": self.class_id}


class Precision(_Confusion):
    """tp / (tp + fp) at ``thresholds`` (default 0.5)."""

    def result(self):
        d = self.tp + self.fp
        return np.float32(self.tp / d) if d else np.float32(0.0)


class Recall(_Confusion):
    """tp / (tp + fn) at ``thresholds`` (default 0.5)."""

    def result(self):
        d = self.tp + self.fn
        return np.float32(self.tp / d) if d else np.float32(0.0)


class FBetaScore(Metric):
    """Keras 3's F-beta over (batch, classes): ``average`` None (per class),
    "micro", "macro" or "weighted"; ``threshold`` None takes each row's argmax."""

    def __init__(self, average=None, beta=1.0, threshold=None, name="fbeta_score", dtype=None):
        if average not in (None, "micro", "macro", "weighted"):
            raise ValueError("Invalid `average` argument value. Expected one of: "
                             f"[None, 'micro', 'macro', 'weighted']. Received: average={average!r}")
        self.average, self.beta, self.threshold = average, float(beta), threshold
        super().__init__(name=name)

    def reset_state(self):
        self.tp = self.fp = self.fn = self.support = None

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = _match(y_true, y_pred)
        if y_pred.ndim == 1:
            y_true, y_pred = y_true[:, None], y_pred[:, None]
        if self.threshold is None:
            pred = (y_pred == y_pred.max(axis=-1, keepdims=True))
        else:
            pred = y_pred > self.threshold
        true = y_true > 0.5
        w = np.ones((true.shape[0], 1)) if sample_weight is None else \
            np.asarray(sample_weight, np.float64).reshape(-1, 1)
        tp, fp, fn = ((pred & true) * w).sum(0), ((pred & ~true) * w).sum(0), ((~pred & true) * w).sum(0)
        sup = (true * w).sum(0)
        if self.tp is None:
            self.tp, self.fp, self.fn, self.support = tp, fp, fn, sup
        else:
            self.tp, self.fp, self.fn, self.support = self.tp + tp, self.fp + fp, self.fn + fn, self.support + sup

    def result(self):
        if self.tp is None:
            return np.float32(0.0)
        tp, fp, fn = self.tp, self.fp, self.fn
        if self.average == "micro":
            tp, fp, fn = tp.sum(), fp.sum(), fn.sum()
        b2 = self.beta ** 2
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
            r = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
            f = np.where(b2 * p + r > 0, (1 + b2) * p * r / (b2 * p + r), 0.0)
        if self.average == "macro":
            f = f.mean()
        elif self.average == "weighted":
            s = self.support
            f = (f * s).sum() / s.sum() if s.sum() else 0.0
        return np.asarray(f, np.float32)

    def get_config(self):
        return {"name": self.name, "average": self.average, "beta": self.beta,
                "threshold": self.threshold}


class F1Score(FBetaScore):
    """F1 (beta = 1), Keras 3's F1Score."""

    def __init__(self, average=None, threshold=None, name="f1_score", dtype=None):
        super().__init__(average=average, beta=1.0, threshold=threshold, name=name)

    def get_config(self):
        return {"name": self.name, "average": self.average, "threshold": self.threshold}


class AUC(Metric):
    """Area under the ROC (or PR) curve from confusion counts at
    ``num_thresholds`` thresholds, Keras's interpolation."""

    def __init__(self, num_thresholds=200, curve="ROC", summation_method="interpolation",
                 name=None, dtype=None, thresholds=None, multi_label=False, num_labels=None,
                 label_weights=None, from_logits=False):
        if curve not in ("ROC", "PR"):
            raise ValueError(f'Invalid AUC curve value: "{curve}". Expected values are ["ROC", "PR"]')
        if num_thresholds <= 1:
            raise ValueError(f"Argument `num_thresholds` must be an integer > 1. "
                             f"Received: num_thresholds={num_thresholds}")
        self.num_thresholds, self.curve, self.summation_method = int(num_thresholds), curve, summation_method
        self.from_logits = from_logits
        eps = 1e-7
        inner = [(i + 1) / (self.num_thresholds - 1) for i in range(self.num_thresholds - 2)]
        self._thresholds = np.array([0.0 - eps] + inner + [1.0 + eps], np.float64)
        super().__init__(name=name or "auc")

    def reset_state(self):
        n = self.num_thresholds
        self.tp, self.fp, self.tn, self.fn = (np.zeros(n) for _ in range(4))

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = _match(y_true, y_pred)
        pred = y_pred.astype(np.float64).reshape(-1)
        if self.from_logits:
            pred = 1 / (1 + np.exp(-pred))
        true = y_true.reshape(-1) > 0.5
        w = np.ones_like(pred) if sample_weight is None else np.broadcast_to(
            np.asarray(sample_weight, np.float64).reshape((-1,) + (1,) * (y_pred.ndim - 1)),
            y_pred.shape).reshape(-1)
        # pred > thresholds[j] exactly for j < idx
        idx = np.searchsorted(self._thresholds, pred, side="left")
        n = self.num_thresholds
        pos = np.bincount(idx, weights=w * true, minlength=n + 1)
        neg = np.bincount(idx, weights=w * ~true, minlength=n + 1)
        above_pos = np.cumsum(pos[::-1])[::-1][1:]   # count with idx > j
        above_neg = np.cumsum(neg[::-1])[::-1][1:]
        self.tp += above_pos
        self.fp += above_neg
        self.fn += pos.sum() - above_pos
        self.tn += neg.sum() - above_neg

    def result(self):
        tp, fp, tn, fn = self.tp, self.fp, self.tn, self.fn
        if self.curve == "PR" and self.summation_method == "interpolation":
            dtp = tp[:-1] - tp[1:]
            p = tp + fp
            dp = p[:-1] - p[1:]
            with np.errstate(divide="ignore", invalid="ignore"):
                slope = np.where(dp > 0, dtp / np.maximum(dp, 1e-300), 0.0)
                intercept = tp[1:] - slope * p[1:]
                ratio = np.where((p[:-1] > 0) & (p[1:] > 0), p[:-1] / np.maximum(p[1:], 1e-300), 1.0)
                denom = np.maximum(tp[1:] + fn[1:], 0)
                inc = np.where(denom > 0, slope * (dtp + intercept * np.log(ratio)) / np.where(denom > 0, denom, 1), 0.0)
            return np.float32(inc.sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            tpr = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
            if self.curve == "ROC":
                x = np.where(fp + tn > 0, fp / (fp + tn), 0.0)
                y = tpr
            else:
                x = tpr
                y = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        if self.summation_method == "minoring":
            h = np.minimum(y[:-1], y[1:])
        elif self.summation_method == "majoring":
            h = np.maximum(y[:-1], y[1:])
        else:
            h = (y[:-1] + y[1:]) / 2.0
        return np.float32(np.sum((x[:-1] - x[1:]) * h))

    def get_config(self):
        return {"name": self.name, "num_thresholds": self.num_thresholds, "curve": self.curve,
                "summation_method": self.summation_method, "from_logits": self.from_logits}


_FUNCTIONS = {
    "binary_accuracy": binary_accuracy, "categorical_accuracy": categorical_accuracy,
    "sparse_categorical_accuracy": sparse_categorical_accuracy,
    "top_k_categorical_accuracy": top_k_categorical_accuracy,
    "sparse_top_k_categorical_accuracy": sparse_top_k_categorical_accuracy,
    "mean_squared_error": mean_squared_error, "mse": mean_squared_error,
    "mean_absolute_error": mean_absolute_error, "mae": mean_absolute_error,
}
_CLASSES = {c.__name__: c for c in (
    Mean, Sum, Accuracy, BinaryAccuracy, CategoricalAccuracy, SparseCategoricalAccuracy,
    TopKCategoricalAccuracy, SparseTopKCategoricalAccuracy, MeanSquaredError, MeanAbsoluteError,
    RootMeanSquaredError, Precision, Recall, FBetaScore, F1Score, AUC)}
_SNAKE = {"precision": Precision, "recall": Recall, "auc": AUC, "f1_score": F1Score,
          "root_mean_squared_error": RootMeanSquaredError, "rmse": RootMeanSquaredError}


def get(identifier):
    """A metric from its Keras name, class name, function or itself.
    ("accuracy" depends on the loss and is resolved by ``compile``.)"""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        return identifier()
    if callable(identifier):
        return MeanMetricWrapper(identifier, name=getattr(identifier, "__name__", "metric"))
    if isinstance(identifier, str):
        if identifier in _FUNCTIONS:
            return MeanMetricWrapper(_FUNCTIONS[identifier], name=identifier)
        if identifier in _SNAKE:
            m = _SNAKE[identifier]()
            m.name = identifier
            return m
        if identifier in _CLASSES:
            return _CLASSES[identifier]()
    if isinstance(identifier, dict):
        return _CLASSES[identifier["class_name"]].from_config(identifier.get("config", {}))
    names = sorted(set(_FUNCTIONS) | set(_SNAKE) | {"accuracy", "acc"})
    raise ValueError(f"Could not interpret metric identifier: {identifier!r}; valid names are: "
                     f"{', '.join(names)}, or a maas.metrics.Metric")


def accuracy_for(loss, y_pred_shape, y_true_shape=None, name="accuracy") -> Metric:
    """The accuracy Keras picks for ``metrics=["accuracy"]`` given the loss
    and the shapes of the predictions and labels."""
    from . import losses as L
    lname = getattr(loss, "name", None) or getattr(loss, "__name__", "")
    if isinstance(loss, str):
        lname = loss
    if lname in ("binary_crossentropy", "binary_focal_crossentropy") or (y_pred_shape and y_pred_shape[-1] == 1):
        return BinaryAccuracy(name=name)
    if lname == "categorical_crossentropy":
        return CategoricalAccuracy(name=name)
    if lname == "sparse_categorical_crossentropy":
        return SparseCategoricalAccuracy(name=name)
    del L
    if y_true_shape is not None and tuple(y_true_shape) == tuple(y_pred_shape):
        return CategoricalAccuracy(name=name)
    return SparseCategoricalAccuracy(name=name)
