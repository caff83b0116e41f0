"""Stateful metrics with Keras 3's names: ``update_state(y_true, y_pred,
sample_weight=None)``, ``result()``, ``reset_state()``. A metric's state is
held in non-trainable maas Variables made with ``add_variable`` (Keras's
pattern: a subclass calls ``super().__init__()`` first, then adds its
variables); ``reset_state()`` zeroes them. Updates are vectorized NumPy over
the batch (metrics are bookkeeping, not training).

>>> import maas, numpy as np
>>> m = maas.metrics.SparseCategoricalAccuracy()
>>> m.update_state([1, 0], np.array([[0.1, 0.9], [0.2, 0.8]]))
>>> float(m.result())
0.5
"""
from __future__ import annotations

import numpy as np

from . import losses as _losses
from .tensor import Variable

EPSILON = 1e-7  # keras.backend.epsilon()
NEG_INF = -1e10  # Keras's value for predictions outside the top k


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
    """Base class of stateful metrics. A subclass calls ``super().__init__()``
    first, then makes its state with ``add_variable``; the default
    ``reset_state()`` sets every variable to zeros.

    >>> class Count(maas.metrics.Metric):
    ...     def __init__(self, name="count"):
    ...         super().__init__(name=name)
    ...         self.n = self.add_variable(shape=(), initializer="zeros", name="n")
    ...     def update_state(self, values, sample_weight=None):
    ...         self.n.assign_add(float(np.size(values)))
    ...     def result(self):
    ...         return np.float32(np.asarray(self.n))
    >>> c = Count(); c.update_state([1, 2, 3]); float(c.result())
    3.0
    """

    def __init__(self, name=None, dtype=None):
        from .layers.base import _snake
        self.name = name or _snake(type(self).__name__)
        self._variables: list = []

    def _check_super_called(self):
        if "_variables" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: you forgot to call `super().__init__()` "
                               f"in the `__init__()` method. Go add it!")

    def add_variable(self, shape, initializer="zeros", dtype=None, aggregation="sum", name=None):
        """A non-trainable float32 Variable of ``shape`` holding metric state,
        initialised by ``initializer`` (a name such as "zeros", an
        Initializer, or a value) and tracked in ``variables``."""
        self._check_super_called()
        if dtype not in (None, "float32", np.float32, "int", "int32", "int64"):
            raise TypeError(f"add_variable: metric variables are float32, received dtype={dtype!r}")
        shape = tuple(shape) if isinstance(shape, (tuple, list)) else ((shape,) if shape else ())
        if initializer is None or isinstance(initializer, str):
            from . import initializers
            init = initializers.get(initializer or "zeros")
            value = np.asarray(init(shape, "float32"), np.float32).reshape(shape)
        elif callable(initializer):
            value = np.asarray(initializer(shape, "float32"), np.float32).reshape(shape)
        else:
            value = np.broadcast_to(np.asarray(initializer, np.float32), shape)
        if aggregation not in ("sum", "mean", "only_first_replica", "none"):
            raise ValueError(f"add_variable: aggregation must be 'sum', 'mean', "
                             f"'only_first_replica' or 'none', received aggregation={aggregation!r}")
        v = Variable(np.array(value, np.float32), trainable=False,
                     name=f"{self.name}/{name or 'variable'}")
        self._variables.append(v)
        # how a data-parallel run combines this state over the processes
        self.__dict__.setdefault("_aggregations", {})[id(v)] = aggregation
        return v

    def add_weight(self, shape=(), initializer=None, dtype=None, name=None):
        """Keras's alias of :meth:`add_variable`."""
        return self.add_variable(shape=shape, initializer=initializer, dtype=dtype, name=name)

    @property
    def variables(self) -> list:
        """The metric's state variables."""
        return list(self.__dict__.get("_variables", []))

    def reset_state(self):
        """Sets every state variable to zeros (as Keras does)."""
        for v in self.variables:
            v.assign(0.0)

    def update_state(self, y_true, y_pred, sample_weight=None):
        raise NotImplementedError

    def result(self):
        raise NotImplementedError

    def __call__(self, y_true, y_pred, sample_weight=None):
        self._check_super_called()
        self.update_state(y_true, y_pred, sample_weight)
        return self.result()

    def get_config(self):
        return {"name": self.name, "dtype": "float32"}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}>"


def _val(v):
    """A state variable's value as a float64 NumPy array."""
    return np.asarray(v, np.float64)


def _divide_no_nan(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b != 0, a / np.where(b != 0, b, 1.0), 0.0)


class Mean(Metric):
    """The (weighted) mean of the values given to update_state(values)."""

    def __init__(self, name="mean", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, values, sample_weight=None):
        v = np.asarray(values, np.float64).reshape(-1)
        w = _weights(sample_weight, v.size)
        if w is None:
            self.total.assign_add(float(v.sum()))
            self.count.assign_add(float(v.size))
        else:
            self.total.assign_add(float((v * w).sum()))
            self.count.assign_add(float(w.sum()))

    def result(self):
        return np.float32(_divide_no_nan(_val(self.total), _val(self.count)))


class Sum(Metric):
    def __init__(self, name="sum", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, values, sample_weight=None):
        v = np.asarray(values, np.float64).reshape(-1)
        w = _weights(sample_weight, v.size)
        self.total.assign_add(float(v.sum() if w is None else (v * w).sum()))

    def result(self):
        return np.float32(_val(self.total))


class MeanMetricWrapper(Mean):
    """The weighted mean of a per-sample function ``fn(y_true, y_pred)``."""

    def __init__(self, fn, name=None, dtype=None, **kwargs):
        super().__init__(name=name or fn.__name__)
        self._fn, self._fn_kwargs = fn, kwargs

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
        return np.float32(np.sqrt(_divide_no_nan(_val(self.total), _val(self.count))))


def _to_list(x):
    return list(x) if isinstance(x, (list, tuple, np.ndarray)) else [x]


def _parse_thresholds(thresholds, default):
    if thresholds is not None:
        bad = [t for t in _to_list(thresholds) if t is None or t < 0 or t > 1]
        if bad:
            raise ValueError(f"Threshold values must be in [0, 1]. Received: {bad}")
    return [float(t) for t in _to_list(default if thresholds is None else thresholds)]


def _evenly_distributed(thresholds):
    n = len(thresholds)
    return n >= 3 and np.allclose(thresholds, np.arange(n, dtype=np.float32) / (n - 1), atol=EPSILON)


def _filter_top_k(x, k):
    """x where an entry is among its row's k largest, NEG_INF elsewhere."""
    idx = np.argsort(-x, axis=-1, kind="stable")[..., :k]
    mask = np.zeros(x.shape, bool)
    np.put_along_axis(mask, idx, True, axis=-1)
    return np.where(mask, x, NEG_INF)


def _confusion_counts(y_true, y_pred, thresholds, top_k=None, class_id=None, sample_weight=None):
    """Keras's update_confusion_matrix_variables: weighted (tp, fp, tn, fn)
    per threshold, a prediction being positive when > threshold and a label
    when nonzero; all values of the batch count (flattened)."""
    y_true, y_pred = _match(y_true, y_pred)
    y_pred = y_pred.astype(np.float64)
    if y_true.ndim == y_pred.ndim + 1 and y_true.shape[-1] == 1:
        y_true = y_true.reshape(y_true.shape[:-1])
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true shape {y_true.shape} does not match y_pred shape {y_pred.shape}")
    w = np.ones(y_pred.shape)
    if sample_weight is not None:
        sw = np.asarray(sample_weight, np.float64)
        if sw.ndim < y_pred.ndim:
            sw = sw.reshape(sw.shape + (1,) * (y_pred.ndim - sw.ndim))
        w = np.broadcast_to(sw, y_pred.shape)
    if top_k is not None:
        y_pred = _filter_top_k(y_pred, top_k)
    if class_id is not None:
        if y_pred.ndim == 1:
            raise ValueError("When class_id is provided, y_pred must be a 2D array with shape "
                             f"(num_samples, num_classes), found shape: {y_pred.shape}")
        y_true, y_pred, w = y_true[..., class_id], y_pred[..., class_id], w[..., class_id]
    if _evenly_distributed(thresholds):
        y_pred = np.clip(y_pred, 0.0, 1.0)
    pred = y_pred.reshape(-1)
    label = y_true.reshape(-1) != 0
    w = w.reshape(-1)
    t = np.asarray(thresholds, np.float64)
    order = np.argsort(t, kind="stable")
    ts = t[order]
    # pred > ts[j] exactly for j < idx (the number of sorted thresholds below pred)
    idx = np.searchsorted(ts, pred, side="left")
    n = len(ts)
    pos = np.bincount(idx, weights=w * label, minlength=n + 1)
    neg = np.bincount(idx, weights=w * ~label, minlength=n + 1)
    # pred <= ts[j] exactly for idx <= j: sums from both ends, no cancellation
    tp, fp, tn, fn = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    tp[order] = np.cumsum(pos[::-1])[::-1][1:]
    fp[order] = np.cumsum(neg[::-1])[::-1][1:]
    fn[order] = np.cumsum(pos)[:n]
    tn[order] = np.cumsum(neg)[:n]
    return tp, fp, tn, fn


class _ConfusionMatrixConditionCount(Metric):
    _cond = None  # "tp", "fp", "tn" or "fn"

    def __init__(self, thresholds=None, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.init_thresholds = thresholds
        self.thresholds = _parse_thresholds(thresholds, 0.5)
        self.accumulator = self.add_variable(shape=(len(self.thresholds),), initializer="zeros",
                                             name="accumulator")

    def update_state(self, y_true, y_pred, sample_weight=None):
        tp, fp, tn, fn = _confusion_counts(y_true, y_pred, self.thresholds, sample_weight=sample_weight)
        self.accumulator.assign_add({"tp": tp, "fp": fp, "tn": tn, "fn": fn}[self._cond])

    def result(self):
        a = np.asarray(self.accumulator, np.float32)
        return a[0] if len(self.thresholds) == 1 else a.copy()

    def get_config(self):
        return {**super().get_config(), "thresholds": self.init_thresholds}


class TruePositives(_ConfusionMatrixConditionCount):
    """The weighted count of predictions > threshold whose label is nonzero,
    per threshold (``thresholds``: a float or a list; default 0.5)."""
    _cond = "tp"


class FalsePositives(_ConfusionMatrixConditionCount):
    _cond = "fp"


class TrueNegatives(_ConfusionMatrixConditionCount):
    _cond = "tn"


class FalseNegatives(_ConfusionMatrixConditionCount):
    _cond = "fn"


class _PrecisionRecall(Metric):
    _second = None  # "false_positives" (precision) or "false_negatives" (recall)

    def __init__(self, thresholds=None, top_k=None, class_id=None, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.init_thresholds = thresholds
        self.top_k, self.class_id = top_k, class_id
        self.thresholds = _parse_thresholds(thresholds, 0.5 if top_k is None else NEG_INF)
        n = len(self.thresholds)
        self.true_positives = self.add_variable(shape=(n,), initializer="zeros", name="true_positives")
        setattr(self, self._second, self.add_variable(shape=(n,), initializer="zeros", name=self._second))

    def update_state(self, y_true, y_pred, sample_weight=None):
        tp, fp, _, fn = _confusion_counts(y_true, y_pred, self.thresholds, self.top_k, self.class_id,
                                          sample_weight)
        self.true_positives.assign_add(tp)
        getattr(self, self._second).assign_add(fp if self._second == "false_positives" else fn)

    def result(self):
        tp = _val(self.true_positives)
        r = np.asarray(_divide_no_nan(tp, tp + _val(getattr(self, self._second))), np.float32)
        return r[0] if len(self.thresholds) == 1 else r

    def get_config(self):
        return {**super().get_config(), "thresholds": self.init_thresholds, "top_k": self.top_k,
                "class_id": self.class_id}


class Precision(_PrecisionRecall):
    """tp / (tp + fp) at each of ``thresholds`` (default 0.5; a list gives one
    value per threshold); ``top_k`` counts only each row's k largest
    predictions, ``class_id`` one column.

    >>> m = maas.metrics.Precision(thresholds=[0.3, 0.7])
    >>> m.update_state([0, 1, 1, 1], [0.4, 0.2, 0.8, 0.9]); m.result().tolist()
    [0.6666666865348816, 1.0]
    """
    _second = "false_positives"


class Recall(_PrecisionRecall):
    """tp / (tp + fn) at each of ``thresholds`` (default 0.5)."""
    _second = "false_negatives"


class _SensitivitySpecificityBase(Metric):
    def __init__(self, value, num_thresholds=200, class_id=None, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        if num_thresholds <= 0:
            raise ValueError(f"Argument `num_thresholds` must be an integer > 0. "
                             f"Received: num_thresholds={num_thresholds}")
        self.value, self.class_id = value, class_id
        if num_thresholds == 1:
            self.thresholds = [0.5]
        else:
            self.thresholds = [0.0] + [(i + 1) / (num_thresholds - 1)
                                       for i in range(num_thresholds - 2)] + [1.0]
        n = len(self.thresholds)
        for var in ("true_positives", "false_positives", "true_negatives", "false_negatives"):
            setattr(self, var, self.add_variable(shape=(n,), initializer="zeros", name=var))

    def update_state(self, y_true, y_pred, sample_weight=None):
        tp, fp, tn, fn = _confusion_counts(y_true, y_pred, self.thresholds, class_id=self.class_id,
                                           sample_weight=sample_weight)
        self.true_positives.assign_add(tp)
        self.false_positives.assign_add(fp)
        self.true_negatives.assign_add(tn)
        self.false_negatives.assign_add(fn)

    def _rates(self):
        tp, fp, tn, fn = (_val(v) for v in (self.true_positives, self.false_positives,
                                             self.true_negatives, self.false_negatives))
        return {"recall": _divide_no_nan(tp, tp + fn), "precision": _divide_no_nan(tp, tp + fp),
                "specificity": _divide_no_nan(tn, tn + fp)}

    def _max_under_constraint(self, constrained, dependent):
        r = self._rates()
        feasible = r[constrained] >= self.value
        return np.float32(np.max(np.where(feasible, r[dependent], 0.0), initial=0.0))

    def get_config(self):
        return {**super().get_config(), "num_thresholds": self.num_thresholds, "class_id": self.class_id}


def _check_unit(arg, v):
    if v < 0 or v > 1:
        raise ValueError(f"Argument `{arg}` must be in the range [0, 1]. Received: {arg}={v}")


class PrecisionAtRecall(_SensitivitySpecificityBase):
    """The best precision over ``num_thresholds`` thresholds in [0, 1] among
    those where recall >= ``recall``."""

    def __init__(self, recall, num_thresholds=200, class_id=None, name=None, dtype=None):
        _check_unit("recall", recall)
        self.recall, self.num_thresholds = recall, num_thresholds
        super().__init__(recall, num_thresholds, class_id, name, dtype)

    def result(self):
        return self._max_under_constraint("recall", "precision")

    def get_config(self):
        return {**super().get_config(), "recall": self.recall}


class RecallAtPrecision(_SensitivitySpecificityBase):
    """The best recall among the thresholds where precision >= ``precision``."""

    def __init__(self, precision, num_thresholds=200, class_id=None, name=None, dtype=None):
        _check_unit("precision", precision)
        self.precision, self.num_thresholds = precision, num_thresholds
        super().__init__(precision, num_thresholds, class_id, name, dtype)

    def result(self):
        return self._max_under_constraint("precision", "recall")

    def get_config(self):
        return {**super().get_config(), "precision": self.precision}


class SensitivityAtSpecificity(_SensitivitySpecificityBase):
    """The best sensitivity (recall) where specificity >= ``specificity``."""

    def __init__(self, specificity, num_thresholds=200, class_id=None, name=None, dtype=None):
        _check_unit("specificity", specificity)
        self.specificity, self.num_thresholds = specificity, num_thresholds
        super().__init__(specificity, num_thresholds, class_id, name, dtype)

    def result(self):
        return self._max_under_constraint("specificity", "recall")

    def get_config(self):
        return {**super().get_config(), "specificity": self.specificity}


class SpecificityAtSensitivity(_SensitivitySpecificityBase):
    """The best specificity where sensitivity (recall) >= ``sensitivity``."""

    def __init__(self, sensitivity, num_thresholds=200, class_id=None, name=None, dtype=None):
        _check_unit("sensitivity", sensitivity)
        self.sensitivity, self.num_thresholds = sensitivity, num_thresholds
        super().__init__(sensitivity, num_thresholds, class_id, name, dtype)

    def result(self):
        return self._max_under_constraint("recall", "specificity")

    def get_config(self):
        return {**super().get_config(), "sensitivity": self.sensitivity}


class FBetaScore(Metric):
    """Keras 3's F-beta over (batch, classes): ``average`` None (per class),
    "micro", "macro" or "weighted"; ``threshold`` None takes each row's argmax."""

    def __init__(self, average=None, beta=1.0, threshold=None, name="fbeta_score", dtype=None):
        if average not in (None, "micro", "macro", "weighted"):
            raise ValueError("Invalid `average` argument value. Expected one of: "
                             f"[None, 'micro', 'macro', 'weighted']. Received: average={average!r}")
        super().__init__(name=name)
        self.average, self.beta, self.threshold = average, float(beta), threshold
        self.tp = self.fp = self.fn = self.support = None  # built on the first batch (classes)

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
            c = (true.shape[-1],)
            self.tp, self.fp, self.fn, self.support = (
                self.add_variable(shape=c, initializer="zeros", name=n)
                for n in ("true_positives", "false_positives", "false_negatives", "support"))
        elif self.tp.shape[0] != true.shape[-1]:
            raise ValueError(f"{self.name}: this metric has {self.tp.shape[0]} classes, the batch has "
                             f"{true.shape[-1]}")
        self.tp.assign_add(tp)
        self.fp.assign_add(fp)
        self.fn.assign_add(fn)
        self.support.assign_add(sup)

    def result(self):
        if self.tp is None:
            return np.float32(0.0)
        tp, fp, fn = _val(self.tp), _val(self.fp), _val(self.fn)
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
            s = _val(self.support)
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
        n = self.num_thresholds
        self.true_positives, self.false_positives, self.true_negatives, self.false_negatives = (
            self.add_variable(shape=(n,), initializer="zeros", name=v)
            for v in ("true_positives", "false_positives", "true_negatives", "false_negatives"))

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
        self.true_positives.assign_add(above_pos)
        self.false_positives.assign_add(above_neg)
        self.false_negatives.assign_add(pos.sum() - above_pos)
        self.true_negatives.assign_add(neg.sum() - above_neg)

    def result(self):
        tp, fp, tn, fn = (_val(v) for v in (self.true_positives, self.false_positives,
                                             self.true_negatives, self.false_negatives))
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


# -- losses as metrics (Keras's probabilistic, hinge and regression metrics)

def _loss_fn(fn, name):
    def f(y_true, y_pred, **kwargs):
        return np.asarray(fn(_np(y_true), _np(y_pred), **kwargs), np.float64)
    f.__name__ = name
    f.__doc__ = fn.__doc__
    return f


binary_crossentropy = _loss_fn(_losses.binary_crossentropy, "binary_crossentropy")
categorical_crossentropy = _loss_fn(_losses.categorical_crossentropy, "categorical_crossentropy")
hinge = _loss_fn(_losses.hinge, "hinge")
squared_hinge = _loss_fn(_losses.squared_hinge, "squared_hinge")
categorical_hinge = _loss_fn(_losses.categorical_hinge, "categorical_hinge")
kl_divergence = _loss_fn(_losses.kl_divergence, "kl_divergence")
poisson = _loss_fn(_losses.poisson, "poisson")
log_cosh = _loss_fn(_losses.log_cosh, "log_cosh")
mean_absolute_percentage_error = _loss_fn(_losses.mean_absolute_percentage_error,
                                          "mean_absolute_percentage_error")
mean_squared_logarithmic_error = _loss_fn(_losses.mean_squared_logarithmic_error,
                                          "mean_squared_logarithmic_error")


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, ignore_class=None, axis=-1):
    y_pred = _np(y_pred)
    return np.asarray(_losses.sparse_categorical_crossentropy(
        np.asarray(y_true), y_pred, from_logits=from_logits, ignore_class=ignore_class, axis=axis),
        np.float64)


def cosine_similarity(y_true, y_pred, axis=-1):
    """sum(l2_normalize(y_true) * l2_normalize(y_pred), axis) (1 for the same
    direction; the loss of the same name is its negative)."""
    y_true, y_pred = _match(y_true, y_pred)
    y, p = y_true.astype(np.float64), y_pred.astype(np.float64)

    def norm(x):
        return x / np.sqrt(np.maximum(np.sum(x * x, axis=axis, keepdims=True), EPSILON * EPSILON))
    return np.sum(norm(y) * norm(p), axis=axis)


def pearson_correlation(y_true, y_pred, axis=-1):
    """Keras's per-sample Pearson correlation over ``axis`` (a 1-D batch is one
    sample: the correlation of the whole batch)."""
    y_true, y_pred = _match(y_true, y_pred)
    y, p = y_true.astype(np.float64), y_pred.astype(np.float64)
    yn = y - y.mean(axis=axis, keepdims=True)
    pn = p - p.mean(axis=axis, keepdims=True)
    yn = yn / yn.std(axis=axis, keepdims=True)
    pn = pn / pn.std(axis=axis, keepdims=True)
    return np.mean(yn * pn, axis=axis)


class _LossMetric(MeanMetricWrapper):
    """A MeanMetricWrapper of the class's ``_fn``; its keyword arguments are
    its config."""
    _fn = None

    def __init__(self, name, dtype=None, **kwargs):
        MeanMetricWrapper.__init__(self, type(self)._fn, name=name, **kwargs)
        for k, v in kwargs.items():
            setattr(self, k, v)

    def get_config(self):
        return {"name": self.name, "dtype": "float32", **self._fn_kwargs}


class BinaryCrossentropy(_LossMetric):
    """The mean binary crossentropy (Keras's loss formula) over the batches."""
    _fn = staticmethod(binary_crossentropy)

    def __init__(self, name="binary_crossentropy", dtype=None, from_logits=False, label_smoothing=0):
        super().__init__(name, dtype, from_logits=from_logits, label_smoothing=label_smoothing)


class CategoricalCrossentropy(_LossMetric):
    """The mean categorical crossentropy over the batches."""
    _fn = staticmethod(categorical_crossentropy)

    def __init__(self, name="categorical_crossentropy", dtype=None, from_logits=False,
                 label_smoothing=0, axis=-1):
        super().__init__(name, dtype, from_logits=from_logits, label_smoothing=label_smoothing, axis=axis)


class SparseCategoricalCrossentropy(_LossMetric):
    """The mean sparse categorical crossentropy over the batches."""
    _fn = staticmethod(sparse_categorical_crossentropy)

    def __init__(self, name="sparse_categorical_crossentropy", dtype=None, from_logits=False,
                 ignore_class=None, axis=-1):
        super().__init__(name, dtype, from_logits=from_logits, ignore_class=ignore_class, axis=axis)


class Hinge(_LossMetric):
    """The mean hinge loss (0/1 labels become -1/1)."""
    _fn = staticmethod(hinge)

    def __init__(self, name="hinge", dtype=None):
        super().__init__(name, dtype)


class SquaredHinge(_LossMetric):
    """The mean squared hinge loss."""
    _fn = staticmethod(squared_hinge)

    def __init__(self, name="squared_hinge", dtype=None):
        super().__init__(name, dtype)


class CategoricalHinge(_LossMetric):
    """The mean categorical hinge loss."""
    _fn = staticmethod(categorical_hinge)

    def __init__(self, name="categorical_hinge", dtype=None):
        super().__init__(name, dtype)


class KLDivergence(_LossMetric):
    """The mean Kullback-Leibler divergence."""
    _fn = staticmethod(kl_divergence)

    def __init__(self, name="kl_divergence", dtype=None):
        super().__init__(name, dtype)


class Poisson(_LossMetric):
    """The mean Poisson loss."""
    _fn = staticmethod(poisson)

    def __init__(self, name="poisson", dtype=None):
        super().__init__(name, dtype)


class LogCoshError(_LossMetric):
    """The mean log(cosh(y_pred - y_true)) (Keras's default name "logcosh")."""
    _fn = staticmethod(log_cosh)

    def __init__(self, name="logcosh", dtype=None):
        super().__init__(name, dtype)


class MeanAbsolutePercentageError(_LossMetric):
    """The mean absolute percentage error."""
    _fn = staticmethod(mean_absolute_percentage_error)

    def __init__(self, name="mean_absolute_percentage_error", dtype=None):
        super().__init__(name, dtype)


class MeanSquaredLogarithmicError(_LossMetric):
    """The mean squared logarithmic error."""
    _fn = staticmethod(mean_squared_logarithmic_error)

    def __init__(self, name="mean_squared_logarithmic_error", dtype=None):
        super().__init__(name, dtype)


class CosineSimilarity(_LossMetric):
    """The mean cosine similarity of labels and predictions over ``axis``.

    >>> m = maas.metrics.CosineSimilarity()
    >>> m.update_state([[0.0, 1.0], [1.0, 1.0]], [[1.0, 0.0], [1.0, 1.0]]); round(float(m.result()), 4)
    0.5
    """
    _fn = staticmethod(cosine_similarity)

    def __init__(self, name="cosine_similarity", dtype=None, axis=-1):
        super().__init__(name, dtype, axis=axis)


class PearsonCorrelation(_LossMetric):
    """The mean of Keras's per-sample Pearson correlation over ``axis``."""
    _fn = staticmethod(pearson_correlation)

    def __init__(self, name="pearson_correlation", dtype=None, axis=-1):
        super().__init__(name, dtype, axis=axis)


class R2Score(Metric):
    """The coefficient of determination over (batch, outputs) data, as
    sklearn's r2_score: ``class_aggregation`` "uniform_average",
    "variance_weighted_average" or None (one score per output);
    ``num_regressors`` > 0 gives the adjusted R^2.

    >>> m = maas.metrics.R2Score()
    >>> m.update_state(np.array([[1.0], [4.0], [3.0]]), np.array([[2.0], [4.0], [4.0]]))
    >>> round(float(m.result()), 4)
    0.5714
    """

    def __init__(self, class_aggregation="uniform_average", num_regressors=0, name="r2_score",
                 dtype=None):
        super().__init__(name=name, dtype=dtype)
        valid = (None, "uniform_average", "variance_weighted_average")
        if class_aggregation not in valid:
            raise ValueError(f"Invalid value for argument `class_aggregation`. Expected one of {valid}. "
                             f"Received: class_aggregation={class_aggregation}")
        if num_regressors < 0:
            raise ValueError("Invalid value for argument `num_regressors`. Expected a value >= 0. "
                             f"Received: num_regressors={num_regressors}")
        self.class_aggregation, self.num_regressors = class_aggregation, num_regressors
        self.num_samples = self.add_variable(shape=(), initializer="zeros", name="num_samples")
        self._built = False

    def _build(self, y_shape, p_shape):
        if len(p_shape) != 2 or len(y_shape) != 2:
            raise ValueError("R2Score expects 2D inputs with shape (batch_size, output_dim). Received "
                             f"input shapes: y_pred.shape={p_shape} and y_true.shape={y_shape}.")
        c = (p_shape[-1],)
        self.squared_sum = self.add_variable(shape=c, initializer="zeros", name="squared_sum")
        self.sum = self.add_variable(shape=c, initializer="zeros", name="sum")
        self.total_mse = self.add_variable(shape=c, initializer="zeros", name="residual")
        self.count = self.add_variable(shape=c, initializer="zeros", name="count")
        self._built = True

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = _match(y_true, y_pred)
        y, p = y_true.astype(np.float64), y_pred.astype(np.float64)
        if not self._built:
            self._build(y.shape, p.shape)
        if y.shape != p.shape or y.ndim != 2 or y.shape[1] != self.sum.shape[0]:
            raise ValueError(f"R2Score: y_true shape {y.shape} and y_pred shape {p.shape} must both be "
                             f"(batch_size, {self.sum.shape[0]})")
        sw = np.ones(y.shape) if sample_weight is None else np.asarray(sample_weight, np.float64)
        if sw.ndim == 1:
            sw = sw[:, None]
        sw = np.broadcast_to(sw, y.shape)
        wy = y * sw
        self.sum.assign_add(wy.sum(0))
        self.squared_sum.assign_add((y * wy).sum(0))
        self.total_mse.assign_add(((y - p) ** 2 * sw).sum(0))
        self.count.assign_add(sw.sum(0))
        self.num_samples.assign_add(float(np.sum(np.any(sw != 0, axis=-1))))

    def result(self):
        if not self._built:
            return np.float32(0.0)
        s, ss, res, cnt = _val(self.sum), _val(self.squared_sum), _val(self.total_mse), _val(self.count)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = s / cnt
            total = ss - s * mean
            raw = 1 - res / total
        raw = np.where(np.isinf(raw), 0.0, raw)
        if self.class_aggregation == "uniform_average":
            r2 = np.mean(raw)
        elif self.class_aggregation == "variance_weighted_average":
            r2 = np.sum(total * raw) / np.sum(total)
        else:
            r2 = raw
        n, k = float(np.asarray(self.num_samples)), self.num_regressors
        if k != 0:
            import warnings
            if k > n - 1:
                warnings.warn("More independent predictors than datapoints in adjusted R2 score. "
                              "Falling back to standard R2 score.", stacklevel=2)
            elif k == n - 1:
                warnings.warn("Division by zero in Adjusted R2 score. Falling back to standard R2 score.",
                              stacklevel=2)
            else:
                r2 = 1 - (1 - r2) * (n - 1) / (n - k - 1)
        return np.asarray(r2, np.float32)

    def get_config(self):
        return {**super().get_config(), "class_aggregation": self.class_aggregation,
                "num_regressors": self.num_regressors}


class IoU(Metric):
    """Intersection over union of the classes in ``target_class_ids``, from a
    (num_classes, num_classes) confusion matrix accumulated over the batches
    (rows: labels, columns: predictions); classes with no label and no
    prediction are left out of the mean."""

    def __init__(self, num_classes, target_class_ids, name=None, dtype=None, ignore_class=None,
                 sparse_y_true=True, sparse_y_pred=True, axis=-1):
        super().__init__(name=name, dtype=dtype)
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, received num_classes={num_classes!r}")
        if max(target_class_ids) >= num_classes:
            raise ValueError(f"Target class id {max(target_class_ids)} is out of range, which is "
                             f"[0, {num_classes}).")
        self.num_classes, self.target_class_ids = int(num_classes), list(target_class_ids)
        # Keras's default dtype here is "int": sample weights are cast (truncated) to
        # integers; dtype="float32" keeps fractional weights
        self._int_weights = dtype in (None, "int", "int32", "int64")
        self._iou_dtype = dtype or "int"
        self.ignore_class, self.sparse_y_true, self.sparse_y_pred = ignore_class, sparse_y_true, sparse_y_pred
        self.axis = axis
        self.total_cm = self.add_variable(shape=(self.num_classes, self.num_classes), initializer="zeros",
                                          name="total_confusion_matrix")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
        if not self.sparse_y_true:
            y_true = np.argmax(y_true, axis=self.axis)
        if not self.sparse_y_pred:
            y_pred = np.argmax(y_pred, axis=self.axis)
        t, p = y_true.reshape(-1).astype(np.int64), y_pred.reshape(-1).astype(np.int64)
        if t.size != p.size:
            raise ValueError(f"{self.name}: {t.size} labels for {p.size} predictions")
        w = np.ones(t.size) if sample_weight is None else np.broadcast_to(
            np.asarray(sample_weight, np.float64).reshape(-1), t.shape)
        if self._int_weights and sample_weight is not None and np.any(w != np.trunc(w)):
            import warnings
            warnings.warn("You are passing weight as `float`, but dtype is `int`. This may result in an "
                          "incorrect weight due to type casting Consider using integer weights "
                          "(or dtype='float32').", stacklevel=2)
            w = np.trunc(w)
        C = self.num_classes
        ok = (t >= 0) & (t < C) & (p >= 0) & (p < C)
        if self.ignore_class is not None:
            ok &= t != self.ignore_class
        cm = np.bincount(t[ok] * C + p[ok], weights=w[ok], minlength=C * C).reshape(C, C)
        self.total_cm.assign_add(cm)

    def result(self):
        cm = _val(self.total_cm)
        tp = np.diag(cm)
        denom = (cm.sum(0) + cm.sum(1) - tp)[self.target_class_ids]
        tp = tp[self.target_class_ids]
        valid = denom > 1e-9
        iou = np.where(valid, tp / (denom + EPSILON), 0.0)
        return np.float32(np.sum(iou) / (np.sum(valid) + EPSILON))

    def get_config(self):
        return {**super().get_config(), "dtype": self._iou_dtype, "num_classes": self.num_classes,
                "target_class_ids": self.target_class_ids, "ignore_class": self.ignore_class,
                "sparse_y_true": self.sparse_y_true, "sparse_y_pred": self.sparse_y_pred, "axis": self.axis}


class MeanIoU(IoU):
    """The mean IoU over all ``num_classes`` classes (Keras's MeanIoU): labels
    and predictions are class ids, or one-hot/scores with
    ``sparse_y_true``/``sparse_y_pred`` False. As in Keras, the default
    dtype ("int") truncates fractional sample weights (with a warning); pass
    ``dtype="float32"`` to keep them.

    >>> m = maas.metrics.MeanIoU(num_classes=2)
    >>> m.update_state([0, 0, 1, 1], [0, 1, 0, 1]); round(float(m.result()), 4)
    0.3333
    """

    def __init__(self, num_classes, name=None, dtype=None, ignore_class=None, sparse_y_true=True,
                 sparse_y_pred=True, axis=-1):
        super().__init__(num_classes, list(range(num_classes)) if isinstance(num_classes, (int, np.integer))
                         and num_classes > 0 else [0], name=name, dtype=dtype, ignore_class=ignore_class,
                         sparse_y_true=sparse_y_true, sparse_y_pred=sparse_y_pred, axis=axis)

    def get_config(self):
        cfg = super().get_config()
        del cfg["target_class_ids"]
        return cfg


_FUNCTIONS = {
    "binary_accuracy": binary_accuracy, "categorical_accuracy": categorical_accuracy,
    "sparse_categorical_accuracy": sparse_categorical_accuracy,
    "top_k_categorical_accuracy": top_k_categorical_accuracy,
    "sparse_top_k_categorical_accuracy": sparse_top_k_categorical_accuracy,
    "mean_squared_error": mean_squared_error, "mse": mean_squared_error,
    "mean_absolute_error": mean_absolute_error, "mae": mean_absolute_error,
    "binary_crossentropy": binary_crossentropy, "categorical_crossentropy": categorical_crossentropy,
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy, "hinge": hinge,
    "squared_hinge": squared_hinge, "categorical_hinge": categorical_hinge,
    "kl_divergence": kl_divergence, "poisson": poisson, "log_cosh": log_cosh, "logcosh": log_cosh,
    "mean_absolute_percentage_error": mean_absolute_percentage_error,
    "mape": mean_absolute_percentage_error,
    "mean_squared_logarithmic_error": mean_squared_logarithmic_error,
    "msle": mean_squared_logarithmic_error,
    "cosine_similarity": cosine_similarity, "pearson_correlation": pearson_correlation,
}
_CLASSES = {c.__name__: c for c in (
    Mean, Sum, Accuracy, BinaryAccuracy, CategoricalAccuracy, SparseCategoricalAccuracy,
    TopKCategoricalAccuracy, SparseTopKCategoricalAccuracy, MeanSquaredError, MeanAbsoluteError,
    RootMeanSquaredError, Precision, Recall, FBetaScore, F1Score, AUC,
    TruePositives, FalsePositives, TrueNegatives, FalseNegatives, PrecisionAtRecall,
    RecallAtPrecision, SensitivityAtSpecificity, SpecificityAtSensitivity,
    BinaryCrossentropy, CategoricalCrossentropy, SparseCategoricalCrossentropy, Hinge, SquaredHinge,
    CategoricalHinge, KLDivergence, Poisson, LogCoshError, MeanAbsolutePercentageError,
    MeanSquaredLogarithmicError, CosineSimilarity, PearsonCorrelation, R2Score, IoU, MeanIoU)}
_SNAKE = {"precision": Precision, "recall": Recall, "auc": AUC, "f1_score": F1Score,
          "root_mean_squared_error": RootMeanSquaredError, "rmse": RootMeanSquaredError,
          "r2_score": R2Score, "true_positives": TruePositives, "false_positives": FalsePositives,
          "true_negatives": TrueNegatives, "false_negatives": FalseNegatives}


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
