"""What every explanation method shares: the model as a batched function
(one compiled plan per chunk shape, one C call per chunk of perturbed rows),
its gradient with respect to the input (a compiled plan whose "parameter" is
the input placeholder: the forward pass, ``sum(y * onehot(target))`` and the
backward pass into the input, for every row and step of a chunk at once),
and the checks of ``target``, ``baselines`` and ``feature_mask``.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from ..errors import MaasError

__all__ = ["ExplainArgumentError", "NoGradientError", "Evaluator", "as_evaluator"]

DEFAULT_MAX_BATCH = 4096   # rows per C call of a perturbation method
_MAX_FLOATS = 1 << 23      # and at most this many input floats per call
_MAX_PLANS = 6


class ExplainArgumentError(MaasError, ValueError):
    """An argument of an explanation method is out of range or of the wrong
    shape; the message names it."""


class NoGradientError(MaasError, TypeError):
    """A gradient method was asked of a model with no gradient with respect
    to its input (a plain function, integer inputs, a quantized model)."""


_local = threading.local()


class count_rows:
    """A context counting the model rows evaluated on this thread (``.rows``)."""

    def __enter__(self):
        self.rows = 0
        self._prev = getattr(_local, "counter", None)
        _local.counter = self
        return self

    def __exit__(self, *exc):
        _local.counter = self._prev
        return False


def _count(n):
    c = getattr(_local, "counter", None)
    if c is not None:
        c.rows += n


def _copy(a):
    return np.array(a, dtype=np.float32, copy=True)


class Evaluator:
    """A model as ``f(x) -> (n, k)`` float32 and ``grad(x, sel) -> (f(x),
    d sum(f(x) * sel) / dx)``, both chunked into C calls of at most
    ``max_batch`` rows, the last chunk padded so that one plan serves every
    chunk. Thread-safe (a lock around each plan's run)."""

    def __init__(self, model, max_batch: int | None = None):
        from ..serving.model import ServedModel

        self.model = model
        self.max_batch = int(max_batch or DEFAULT_MAX_BATCH)
        self._lock = threading.RLock()
        self._plans: OrderedDict = OrderedDict()
        self.kind = "maas"
        self.no_grad_reason = None
        self.fn = None
        obj = model
        if isinstance(model, ServedModel):
            obj = getattr(model, "source_object", None)
            if obj is None or not _is_maas_model(obj):
                self.kind, self.fn = "function", model.predict
                self.no_grad_reason = (f"it is served from {type(obj).__name__ if obj is not None else 'a function'},"
                                       f" not a maas model")
                return
        if _is_maas_model(obj):
            self.model = obj
            dt = _input_dtype(obj)
            if dt is not None and not np.issubdtype(dt, np.floating):
                self.no_grad_reason = f"its input is {np.dtype(dt).name}, not a float"
            return
        if callable(getattr(obj, "predict", None)) or callable(obj):
            self.kind = "function"
            p = getattr(obj, "predict", None)
            if callable(p):
                def fn(x, _p=p):
                    try:
                        return _p(x, verbose=0)
                    except TypeError as e:
                        if "verbose" not in str(e):
                            raise
                        return _p(x)
                self.fn = fn
            else:
                self.fn = obj
            self.no_grad_reason = f"it is a {type(obj).__name__}, not a maas model (no tape or plan to differentiate)"
            return
        raise TypeError(f"model must be a maas model, a ServedModel or a callable, received "
                        f"{type(model).__name__}")

    # ---------------------------------------------------------------- plans
    def _plan(self, key, shape, dtype, n_out):
        """The forward plan (``n_out`` None) or the gradient plan (the
        target selector has ``n_out`` columns) for inputs of ``shape``."""
        from .. import engine
        from .._core import Tensor

        tr = self._plans.get(key)
        if tr is not None:
            self._plans.move_to_end(key)
            return tr
        x0 = np.zeros(shape, dtype)
        ph = [Tensor(x0, copy=True)]
        with_grad = n_out is not None
        if with_grad:
            ph.append(Tensor(np.zeros((shape[0], n_out), np.float32), copy=True))
        with engine.trace(ph) as t:
            y = self.model(ph[0], training=False)
            if isinstance(y, (list, tuple, dict)):
                raise ExplainArgumentError("model: maas.explain explains single-output models; "
                                           "this one returns several outputs")
            loss = None
            if with_grad:
                loss = (_reshape2(y) * ph[1]).sum()
        plan, reason = t.freeze(ph, [y], loss, [ph[0]] if with_grad else [])
        if plan is None:
            tr = ("eager", reason)
        else:
            if with_grad and not plan.grads() or with_grad and plan.grads()[0] is None:
                raise NoGradientError(f"model: its output does not depend differentiably on its input"
                                      f" ({type(self.model).__name__}); use a perturbation method "
                                      f"(KernelShap, Occlusion, FeatureAblation, Lime)")
            tr = ("plan", plan, t.providers)
        self._plans[key] = tr
        while len(self._plans) > _MAX_PLANS:
            self._plans.popitem(last=False)
        return tr

    _nout: dict

    def n_outputs(self, shape):
        """Outputs per row (the flattened output of a one-row forward)."""
        cache = self.__dict__.setdefault("_nout", {})
        k = tuple(shape[1:])
        if k not in cache:
            y = self.predict(np.zeros((1,) + k, np.float32))
            cache[k] = int(y.shape[1])
        return cache[k]

    # -------------------------------------------------------------- forward
    def _chunk(self, x):
        per = max(1, int(np.prod(x.shape[1:])))
        return max(1, min(len(x), self.max_batch, _MAX_FLOATS // per))

    def predict(self, x) -> np.ndarray:
        """f(x) as float32 (n, k), in C calls of at most ``max_batch`` rows."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        n = len(x)
        _count(n)
        if self.kind == "function":
            outs = [np.asarray(self.fn(x[i:i + self._chunk(x)]), np.float32)
                    for i in range(0, n, self._chunk(x))]
            return _reshape2(np.concatenate(outs)) if outs else np.zeros((0, 1), np.float32)
        c = self._chunk(x)
        out = None
        with self._lock:
            for i in range(0, n, c):
                xb = x[i:i + c]
                m = len(xb)
                if m < c:
                    xb = np.concatenate([xb, np.zeros((c - m,) + x.shape[1:], np.float32)])
                y = self._run(("f", xb.shape), xb, None)
                if out is None:
                    out = np.empty((n, y.shape[1]), np.float32)
                out[i:i + m] = y[:m]
        return out

    def _run(self, key, xb, sel):
        tr = self._plan(key, xb.shape, np.float32, None if sel is None else sel.shape[1])
        if tr[0] == "eager":
            return self._eager(xb, sel)
        _, plan, providers = tr
        keys = [k for p in providers for k in p()] if providers else None
        plan.run([xb] if sel is None else [xb, sel], keys)
        y = _reshape2(plan.outputs()[0])
        if sel is None:
            return y
        plan.backward()
        return y, _copy(plan.grads()[0])

    def _eager(self, xb, sel):
        from .. import GradientTape, tensor

        xt = tensor(xb)
        if sel is None:
            return _reshape2(np.asarray(self.model(xt, training=False), np.float32))
        with GradientTape() as tape:
            tape.watch(xt)
            y = self.model(xt, training=False)
            loss = (_reshape2(y) * tensor(sel)).sum()
        g = tape.gradient(loss, xt)
        if g is None:
            raise NoGradientError("model: its output does not depend differentiably on its input; "
                                  "use a perturbation method (KernelShap, Occlusion, FeatureAblation, Lime)")
        return _reshape2(np.asarray(y, np.float32)), _copy(g)

    # ------------------------------------------------------------- gradient
    def require_grad(self, method: str):
        if self.no_grad_reason is not None:
            raise NoGradientError(f"model: {method} needs the gradient of the model's output with "
                                  f"respect to its input, and this model has none: "
                                  f"{self.no_grad_reason}; use a perturbation method (KernelShap, "
                                  f"Occlusion, FeatureAblation, Lime)")

    def grad(self, x, target, batch_size: int | None = None):
        """(f(x) (n, k), d f(x)[i, target[i]] / d x[i]) for every row i."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        n = len(x)
        _count(n)
        k = self.n_outputs(x.shape)
        c = min(self._chunk(x), int(batch_size)) if batch_size else self._chunk(x)
        ys = np.empty((n, k), np.float32)
        gs = np.empty_like(x)
        target = np.asarray(target)
        with self._lock:
            for i in range(0, n, c):
                xb = x[i:i + c]
                m = len(xb)
                sel = np.zeros((c, k), np.float32)
                sel[np.arange(m), target[i:i + m]] = 1.0
                if m < c:
                    xb = np.concatenate([xb, np.zeros((c - m,) + x.shape[1:], np.float32)])
                y, g = self._run(("g", xb.shape), xb, sel)
                ys[i:i + m] = y[:m]
                gs[i:i + m] = g[:m]
        return ys, gs


def _reshape2(y):
    if isinstance(y, np.ndarray):
        return y.reshape(len(y), -1) if y.ndim != 2 else y
    if len(y.shape) == 2:
        return y
    from .. import ops

    return ops.reshape(y, (y.shape[0], -1))


def _is_maas_model(obj) -> bool:
    from ..layers.base import Layer

    return isinstance(obj, Layer)


def _input_dtype(model):
    inputs = getattr(model, "inputs", None)
    try:
        if inputs:
            return np.dtype(getattr(inputs[0], "dtype", "float32") or "float32")
    except TypeError:
        return None
    return None


def as_evaluator(model, max_batch=None) -> Evaluator:
    return model if isinstance(model, Evaluator) else Evaluator(model, max_batch)


# ------------------------------------------------------------------ checks
def as_input(x, name="inputs") -> np.ndarray:
    a = np.asarray(x)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise ExplainArgumentError(f"{name} must be a numeric array, received dtype {a.dtype}")
    if a.ndim < 2:
        raise ExplainArgumentError(f"{name} must be a batch (rows first) of at least 2 dimensions, "
                                   f"received shape {a.shape}; add a batch axis with x[None]")
    if len(a) == 0:
        raise ExplainArgumentError(f"{name} has no rows")
    return np.ascontiguousarray(a, dtype=np.float32)


def resolve_target(target, y: np.ndarray) -> np.ndarray:
    """One output index per row: ``target`` an int, a sequence of one per
    row, or None (the predicted class; 0 for a single output)."""
    n, k = y.shape
    if target is None:
        return np.zeros(n, np.int64) if k == 1 else np.argmax(y, axis=1).astype(np.int64)
    t = np.asarray(target)
    if t.dtype == bool or not np.issubdtype(t.dtype, np.integer):
        raise ExplainArgumentError(f"target must be an output index (an int) or one per row, "
                                   f"received {target!r}")
    if t.ndim == 0:
        t = np.full(n, int(t), np.int64)
    elif t.shape != (n,):
        raise ExplainArgumentError(f"target must be one int or one per row ({n}), received shape "
                                   f"{t.shape}")
    bad = (t < 0) | (t >= k)
    if bad.any():
        raise ExplainArgumentError(f"target {int(t[bad][0])} is out of range: the model has {k} "
                                   f"output{'s' if k != 1 else ''} (indices 0..{k - 1})")
    return t.astype(np.int64)


def resolve_baselines(baselines, x: np.ndarray, name="baselines") -> np.ndarray:
    """Baselines broadcast to ``x``'s shape: None (zeros), a scalar, one
    row ``x.shape[1:]`` or ``(1,) + x.shape[1:]``, or one per row."""
    if baselines is None:
        return np.zeros_like(x)
    b = np.asarray(baselines, dtype=np.float32)
    if b.ndim == 0:
        return np.full_like(x, float(b))
    if b.shape == x.shape[1:]:
        b = b[None]
    if b.shape == (1,) + x.shape[1:] or b.shape == x.shape:
        return np.ascontiguousarray(np.broadcast_to(b, x.shape), dtype=np.float32)
    raise ExplainArgumentError(f"{name} must be a scalar or have the inputs' shape {x.shape} (or "
                               f"one row, {x.shape[1:]}), received shape {b.shape}")


def resolve_mask(feature_mask, x: np.ndarray):
    """(mask (n, *x.shape[1:]) of int group ids, shared: bool) ; None means
    one group per feature."""
    if feature_mask is None:
        m = np.arange(int(np.prod(x.shape[1:])), dtype=np.int64).reshape(x.shape[1:])
        return m[None], True
    m = np.asarray(feature_mask)
    if not np.issubdtype(m.dtype, np.integer):
        raise ExplainArgumentError(f"feature_mask must hold integer group ids, received dtype {m.dtype}")
    if m.shape == x.shape[1:]:
        m = m[None]
    if m.shape == (1,) + x.shape[1:]:
        return m.astype(np.int64), True
    if m.shape == x.shape:
        return m.astype(np.int64), False
    raise ExplainArgumentError(f"feature_mask must have the inputs' shape {x.shape} or one row's "
                               f"{x.shape[1:]}, received shape {m.shape}")
