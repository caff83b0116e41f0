"""The plan path: one step of a model's own ``call()`` traced on the tape and
frozen into a compiled plan, then replayed as one C call per step.

``compile_plan(model)`` returns a :class:`CompiledPlan` for a compiled model.
Its first training step for a batch shape runs eagerly under a tape that
records every op (the trace); the recorded nodes become a plan whose buffers
are the trace's own tensors, and every later step of that shape is one C
call with the GIL released: the forward pass, the loss, the backward pass
into the parameters' gradients, clipping and the optimizer update. Any model
whose ``call()`` is made of maas ops gets it: Sequential, functional
(several inputs and outputs, shared layers, loss weights), subclassed models
and custom layers. A weight used twice is one parameter whose gradients add.

The trace stands for the step only when Python did not look at a value: a
``call()`` that reads a tensor into Python (``float(x)``, ``x.numpy()``,
``if x.sum() > 0``) or writes a tensor in place makes the plan fall back to
the eager path, with a warning that says why (as ``tf.function`` warns when it
retraces). Both paths run the same kernels in the same order: same bits.

>>> import numpy as np, maas
>>> model = maas.Sequential([maas.Input((3,)), maas.layers.Dense(2)])
>>> model.compile(optimizer="sgd", loss="mse")
>>> plan = compile_plan(model)
>>> x, y = np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32)
>>> first, second = plan.train_step(x, y), plan.train_step(x, y)   # traced, then replayed
>>> plan.traced_shapes()
1
"""
from __future__ import annotations

import warnings

import numpy as np

from .. import _core, distribution as _dist, optimizers as _optimizers, random as _random
from .._core import Tensor
from ..autodiff import _flatten, _pack

__all__ = ["CompiledPlan", "compile_plan", "trace", "tracing", "defer_update", "defer_assign"]

_active: list = []   # the traces recording on this thread, innermost last


def tracing() -> bool:
    """True while a step is being traced into a plan: code that would read a
    value (a metric update) should :func:`defer_update` it instead."""
    return bool(_active)


def defer_update(metric, value, weight) -> None:
    """``metric.update_state([float(value)], sample_weight=[weight])`` after
    the traced step and after every replay of it (value: a scalar Tensor of
    the trace)."""
    _active[-1].deferred.append((metric, value, weight))

def defer_assign(variable, value) -> None:
    """``variable.assign(value)`` after the traced step and after every replay
    of it (value: a Tensor of the trace, kept as an output of the plan). A
    stateful recurrent layer carries its states across batches this way: the
    write happens after the step, so the plan never writes in place."""
    _active[-1].assigns.append((variable, value))


def _apply_assigns(assigns):
    for var, value in assigns:
        _core.assign(var, value, 0)


def _assign_outputs(outs, assigns):
    """The tensors of the deferred assigns that are not outputs already."""
    have = {id(o) for o in outs}
    return [v for _, v in assigns if id(v) not in have]


# Predict plans fold each inference BatchNormalization into the Conv2D or
# Dense that feeds it (maas_plan_fold_batchnorm): one pass over the
# activations less per pair. False keeps the plan as traced (for comparisons).
FOLD_BATCHNORM = True

_MAX_PLANS = 8  # batch shapes kept per model and direction (fit's last batch is the usual second)


def _arrays(x):
    """The arrays of a batch (one, a list, or a dict) as C-contiguous arrays
    of their own dtype (float64 becomes float32, as tensors do)."""
    out = []
    for a in _flatten(x, []):
        a = np.asarray(a)
        if a.dtype == np.float64:
            a = a.astype(np.float32)
        out.append(np.ascontiguousarray(a))
    return out


def _signature(arrays):
    return tuple((a.shape, a.dtype.str) for a in arrays)


class trace:
    """A context that records every op on its placeholders and notes what a
    plan cannot replay. ``reason`` is None when the trace stands for the
    step; ``providers`` gives the (seed, stream) of each random op."""

    def __init__(self, placeholders):
        self.tape = _core.Tape()
        for p in placeholders:
            self.tape.watch(p)
        self.reason = None
        self.deferred = []
        self.assigns = []

    def __enter__(self):
        self._log = _random._begin_trace()
        _core.trace_begin()
        self.tape.push()
        _active.append(self)
        return self

    def __exit__(self, *exc):
        _active.remove(self)
        self.tape.pop()
        self.reason = _core.trace_end()
        self.providers = _random._end_trace(self._log)
        return False

    def freeze(self, inputs, outputs, loss, params):
        """(plan, None), or (None, why the traced step cannot be frozen)."""
        if self.reason is not None:
            return None, self.reason
        try:
            plan = _core.Plan(self.tape, inputs, outputs, loss, params)
        except ValueError as e:
            return None, f"the traced graph cannot be frozen ({e})"
        if plan.num_random != len(self.providers):
            return None, ("a random op outside the graph from the inputs to the "
                          + ("loss" if loss is not None else "outputs"))
        return plan, None

    def apply_deferred(self, values=None):
        """Runs the deferred metric updates with the traced values, or with
        ``values`` (a replay's copies of them)."""
        for k, (metric, value, weight) in enumerate(self.deferred):
            v = float(np.asarray(value if values is None else values[k]))
            metric.update_state([v], sample_weight=[weight])


class _Traced:
    """One frozen step: the plan, what fills it, and how its outputs nest."""

    def __init__(self, plan, providers, structure, params, fused):
        self.plan, self.providers, self.structure = plan, providers, structure
        self.params, self.fused = params, fused
        self.storage = _core.core_ids(params) if params else ()

    deferred = ()   # (metric, weight) of each deferred update, whose values end the outputs
    assigns = ()    # (variable, traced tensor) of each deferred assign (defer_assign)
    n_assign_outs = 0   # the outputs after the deferred values that only keep assigns alive

    def keys(self):
        return [k for p in self.providers for k in p()]

    def outputs(self):
        outs = self.plan.outputs()
        if self.n_assign_outs:
            outs = outs[:-self.n_assign_outs]
        nd = len(self.deferred)
        if nd:
            for (metric, weight), v in zip(self.deferred, outs[-nd:]):
                metric.update_state([float(v)], sample_weight=[weight])
            outs = outs[:-nd]
        return _pack(self.structure, outs, [0])


_FUSED = {_optimizers.SGD: _core.OPT_SGD, _optimizers.Adam: _core.OPT_ADAM,
          _optimizers.RMSprop: _core.OPT_RMSPROP}
_SLOTS = {_core.OPT_SGD: lambda o: ("momentum" if o.momentum else None, None, None),
          _core.OPT_ADAM: lambda o: ("momentum", "velocity", "velocity_hat" if o.amsgrad else None),
          _core.OPT_RMSPROP: lambda o: ("velocity", "average_gradient" if o.centered else None,
                                        "momentum" if o.momentum else None)}


def _fused_kind(opt):
    """The plan's own update for the optimizers whose arithmetic it repeats
    exactly (SGD, Adam, AdamW, RMSprop, unless a subclass changes it)."""
    for cls in type(opt).__mro__:
        if cls in _FUSED:
            base = cls
            break
    else:
        return None
    for name in ("update_step", "apply", "apply_gradients", "_clip"):
        if getattr(type(opt), name) is not getattr(base if name == "update_step" else
                                                   _optimizers.Optimizer, name):
            return None
    return _FUSED[base]


def _set_optimizer(plan, opt, params, kind):
    names = _SLOTS[kind](opt)
    slots = [opt.slot(v, n) if n else None for v in params for n in names]
    decay = [bool(opt._decay_for(v)) for v in params]
    cfg = dict(weight_decay=float(opt.weight_decay or 0.0), clipnorm=float(opt.clipnorm or 0.0),
               clipvalue=float(opt.clipvalue or 0.0),
               global_clipnorm=float(opt.global_clipnorm or 0.0))
    if kind == _core.OPT_ADAM:
        cfg.update(beta_1=opt.beta_1, beta_2=opt.beta_2, epsilon=opt.epsilon, amsgrad=opt.amsgrad)
    elif kind == _core.OPT_SGD:
        cfg.update(momentum=opt.momentum, nesterov=opt.nesterov)
    else:
        cfg.update(rho=opt.rho, momentum=opt.momentum, epsilon=opt.epsilon, centered=opt.centered)
    plan.set_optimizer(kind, slots, decay, **cfg)


def _unique(variables):
    seen, out = set(), []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


class CompiledPlan:
    """Traces and replays a compiled model's steps (see the module doc).

    ``train_step(x, y, sample_weight)`` returns the batch's loss and
    advances the optimizer; ``outputs()`` gives the last training batch's
    predictions; ``predict(x)`` the forward pass (training=False). When a
    trace cannot stand for the model, the step completes eagerly, a warning
    says why, and ``eager_reason`` holds it; the model then trains eagerly.
    """

    def __init__(self, model):
        self.model = model
        self._train: dict = {}
        self._predict: dict = {}
        self._last = None
        self._last_eager = None
        self.eager_reason = None
        self.predict_eager_reason = None

    def traced_shapes(self) -> int:
        """The number of batch shapes with a frozen training plan."""
        return sum(t is not None for t in self._train.values())

    # -- training
    def train_step(self, x, y, sample_weight=None) -> float:
        xs, ys = _arrays(x), ([] if y is None else _arrays(y))
        sw = None if sample_weight is None else _arrays(sample_weight)
        data = xs + ys + (sw or [])
        key = (len(xs), len(ys), _signature(data))
        tr = self._train.get(key)
        if tr is not None and tr.params and _core.core_ids(tr.params) != tr.storage:
            self._train.clear()   # a variable was given new memory (loading): trace anew
            self._predict.clear()
            tr = None
        if tr is None:
            if len(self._train) >= _MAX_PLANS:
                self._train.clear()
            return self._trace_train(key, x, y, xs, ys, sw)
        opt = self.model.optimizer
        keys = tr.keys()
        self._last, self._last_eager = tr, None
        dp = _dist.active()
        if dp is not None:  # backward, the gradients summed over the ranks, then the update
            loss = tr.plan.run(data, keys)
            tr.plan.backward()
            self._dp_update(dp, tr.plan, tr.params, tr.fused)
            _apply_assigns(tr.assigns)
            return loss
        if tr.fused is not None:
            lr = opt.learning_rate
            opt.iterations += 1
            loss = tr.plan.run(data, keys, lr, opt.iterations, True)
            _apply_assigns(tr.assigns)
            return loss
        loss = tr.plan.run(data, keys)
        tr.plan.backward()
        opt.apply_gradients(zip(tr.plan.grads(), tr.params))
        _apply_assigns(tr.assigns)
        return loss

    def _trace_train(self, key, x, y, xs, ys, sw):
        model, opt = self.model, self.model.optimizer
        ph = [Tensor(a, copy=True) for a in xs + ys + (sw or [])]
        px, py = ph[:len(xs)], ph[len(xs):len(xs) + len(ys)]
        psw = ph[-1] if sw else None
        xin = _pack(x, px, [0]) if isinstance(x, (list, tuple, dict)) else px[0]
        yin = None if y is None else _pack(y, py, [0]) if isinstance(y, (list, tuple, dict)) else py[0]
        params = _unique(model.trainable_variables)
        with trace(ph) as t:
            y_pred = model(xin, training=True)
            loss = model.compute_loss(xin, yin, y_pred, psw)
        if not isinstance(loss, Tensor):
            raise TypeError(f"compute_loss returned {type(loss).__name__}, not a maas Tensor")
        outs = _flatten(y_pred, [])
        # the values of deferred metric updates (per-output losses) are outputs too
        parts = [v for _, v, _ in t.deferred]
        keep = _assign_outputs(outs + parts, t.assigns)
        plan, reason = t.freeze(ph, outs + parts + keep, loss, params)
        if plan is None:
            return self._eager_after_trace(t, loss, params, y_pred, reason)
        kind = _fused_kind(opt)
        if kind is not None:
            _set_optimizer(plan, opt, params, kind)
        tr = _Traced(plan, t.providers, y_pred if not isinstance(y_pred, Tensor) else 0,
                     params, kind)
        tr.deferred = [(m, w) for m, _, w in t.deferred]  # applied by outputs(), from the buffers
        tr.assigns, tr.n_assign_outs = list(t.assigns), len(keep)
        self._train[key] = tr
        self._last, self._last_eager = tr, None
        value = float(loss.item())
        dp = _dist.active()
        if dp is not None:
            plan.backward()
            self._dp_update(dp, plan, params, kind)
        elif kind is not None:
            lr = opt.learning_rate
            opt.iterations += 1
            plan.backward(True, lr, opt.iterations)
        else:
            plan.backward()
            opt.apply_gradients(zip(plan.grads(), params))
        _apply_assigns(tr.assigns)
        return value

    def _dp_update(self, dp, plan, params, fused):
        """Sums the plan's flat gradient buffer over the ranks (one
        all-reduce, in place), then applies the optimizer's update."""
        opt = self.model.optimizer
        dp.reduce_flat(plan.flat_grad())
        if fused is not None:
            opt.iterations += 1
            plan.update(opt.learning_rate, opt.iterations)
        else:
            opt.apply_gradients(zip(plan.grads(), params))

    def _eager_after_trace(self, t, loss, params, y_pred, reason):
        """Completes a traced step eagerly and switches the model to the
        eager path."""
        t.apply_deferred()
        grads = t.tape.gradient(loss, params)
        self.model.optimizer.apply_gradients(zip(grads, params))
        _apply_assigns(t.assigns)
        self.eager_reason = self.model.eager_reason = reason
        warnings.warn(f"maas: {type(self.model).__name__}.fit runs on the eager path (one C call "
                      f"per op) because its step cannot be compiled into a plan: {reason}",
                      RuntimeWarning, stacklevel=4)
        model = self.model
        model._compiled_train_fn = None
        self._last, self._last_eager = None, y_pred
        return float(loss.item())

    def outputs(self):
        """The last training batch's predictions (NumPy copies, nested as the
        model's outputs)."""
        if self._last_eager is not None:
            return self._last_eager
        return self._last.outputs()

    # -- inference
    def predict(self, x, batch_size: int | None = None):
        """The forward pass (training=False) on a batch, from a plan traced
        for its shape (at most a few shapes are kept; others run eagerly)."""
        xs = _arrays(x)
        key = _signature(xs)
        tr = self._predict.get(key)
        if tr is not None:
            tr.plan.run(xs, tr.keys())
            _apply_assigns(tr.assigns)
            return tr.outputs()
        if len(self._predict) >= _MAX_PLANS:
            return self.model(x, training=False)
        ph = [Tensor(a, copy=True) for a in xs]
        xin = _pack(x, ph, [0]) if isinstance(x, (list, tuple, dict)) else ph[0]
        with trace(ph) as t:
            y = self.model(xin, training=False)
        outs = _flatten(y, [])
        keep = _assign_outputs(outs, t.assigns)
        plan, reason = t.freeze(ph, outs + keep, None, [])
        _apply_assigns(t.assigns)
        if reason is not None:
            self.predict_eager_reason = reason
            self.model._compiled_predict_fn = None
            return y
        tr = self._predict[key] = _Traced(plan, t.providers, y if not isinstance(y, Tensor) else 0,
                                          [], None)
        tr.assigns, tr.n_assign_outs = list(t.assigns), len(keep)
        # inference BatchNormalization folded into the conv/dense before it
        # (the plan refolds whenever a weight's version moves: fit, assign,
        # load_weights); the first answer then comes from the folded plan too.
        # Not for a plan that carries states (a second run would advance them).
        if FOLD_BATCHNORM and not tr.assigns and plan.fold_batchnorm():
            plan.run(xs, tr.keys())
            return tr.outputs()
        # copies: the traced tensors are the plan's buffers, rewritten by every run
        return _pack(y, [np.array(o) for o in outs], [0]) if not isinstance(y, Tensor) \
            else np.array(y)


def compile_plan(model):
    """A CompiledPlan for a compiled model, or None when it must run eagerly
    (``run_eagerly=True``)."""
    if getattr(model, "run_eagerly", False):
        return None
    return CompiledPlan(model)
