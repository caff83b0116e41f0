"""The plan path: a model's whole training step (forward, loss, backward,
regularization, clipping, optimizer update) or forward pass as one C call
over a compiled plan, with every buffer allocated once.

``compile_plan(model)`` returns a :class:`CompiledPlan` for models the plan
supports (a chain of Dense, Activation, Dropout, Flatten and Reshape layers
ending in a built-in loss, with SGD, Adam, AdamW or RMSprop) and None for
others, which then train on the eager path (GradientTape). Both paths run
the same kernels and share the optimizer's state.

>>> import numpy as np, maas
>>> from maas.engine import build_plan
>>> w, b = maas.Variable(np.ones((3, 2)) * 0.1), maas.Variable(np.zeros(2))
>>> opt = maas.optimizers.SGD(0.1)
>>> plan = build_plan(3, [("dense", w, b), ("activation", "relu")], "mse", opt)
>>> loss = plan.train_step(np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32))
>>> round(loss, 4)
0.09
"""
from __future__ import annotations

import numpy as np

from .. import _core, losses as _losses, optimizers as _optimizers, random as _random

__all__ = ["CompiledPlan", "build_plan", "compile_plan", "Unsupported"]


class Unsupported(Exception):
    """A part of the model that the plan cannot compile (the eager path runs it)."""


_c = _core
# activation name -> (unary op, alpha); softmax handled apart
_UNARY = {
    "relu": (_c.U_RELU, 0.0), "sigmoid": (_c.U_SIGMOID, 0.0), "tanh": (_c.U_TANH, 0.0),
    "elu": (_c.U_ELU, 1.0), "gelu": (_c.U_GELU, 0.0), "leaky_relu": (_c.U_LEAKY_RELU, 0.2),
    "softplus": (_c.U_SOFTPLUS, 0.0), "silu": (_c.U_SILU, 0.0), "swish": (_c.U_SILU, 0.0),
    "relu6": (_c.U_RELU6, 0.0), "exponential": (_c.U_EXP, 0.0),
}
_LOSSES = {
    _losses.mean_squared_error: _c.L_MSE, _losses.mean_absolute_error: _c.L_MAE,
    _losses.binary_crossentropy: _c.L_BCE, _losses.categorical_crossentropy: _c.L_CCE,
    _losses.sparse_categorical_crossentropy: _c.L_SCCE, _losses.hinge: _c.L_HINGE,
}
_LOSS_CLASSES = {
    _losses.MeanSquaredError: _c.L_MSE, _losses.MeanAbsoluteError: _c.L_MAE,
    _losses.BinaryCrossentropy: _c.L_BCE, _losses.CategoricalCrossentropy: _c.L_CCE,
    _losses.SparseCategoricalCrossentropy: _c.L_SCCE, _losses.Hinge: _c.L_HINGE,
}


def _activation(plan, fn):
    name = fn if isinstance(fn, str) else getattr(fn, "__name__", None)
    if fn is None or name == "linear":
        return
    if name == "softmax":
        plan.add_softmax(False)
    elif name == "log_softmax":
        plan.add_softmax(True)
    elif name in _UNARY:
        op, alpha = _UNARY[name]
        plan.add_unary(op, alpha)
    else:
        raise Unsupported(f"activation {fn!r}")


def _loss(loss):
    if isinstance(loss, str):
        loss = _losses.get(loss)
    if isinstance(loss, _losses.Loss):
        op = _LOSS_CLASSES.get(type(loss))
        if op is None or loss.reduction != "sum_over_batch_size" or getattr(loss, "label_smoothing", 0):
            raise Unsupported(f"loss {loss!r}")
        return op, bool(getattr(loss, "from_logits", False))
    if loss in _LOSSES:
        return _LOSSES[loss], False
    raise Unsupported(f"loss {loss!r}")


def _reg(r):
    if r is None:
        return 0.0, 0.0
    if hasattr(r, "l1") or hasattr(r, "l2"):
        return float(getattr(r, "l1", 0.0) or 0.0), float(getattr(r, "l2", 0.0) or 0.0)
    raise Unsupported(f"regularizer {r!r}")


def _slot_names(opt):
    if isinstance(opt, _optimizers.Adam):  # AdamW too
        return ("momentum", "velocity", "velocity_hat" if opt.amsgrad else None)
    if isinstance(opt, _optimizers.SGD):
        return ("momentum" if opt.momentum else None, None, None)
    if isinstance(opt, _optimizers.RMSprop):
        return ("velocity", "average_gradient" if opt.centered else None,
                "momentum" if opt.momentum else None)
    raise Unsupported(f"optimizer {opt!r}")


def _optimizer_config(opt):
    common = dict(weight_decay=float(opt.weight_decay or 0.0), clipnorm=float(opt.clipnorm or 0.0),
                  clipvalue=float(opt.clipvalue or 0.0),
                  global_clipnorm=float(opt.global_clipnorm or 0.0))
    if isinstance(opt, _optimizers.Adam):
        return dict(kind=_c.OPT_ADAM, beta_1=opt.beta_1, beta_2=opt.beta_2, epsilon=opt.epsilon,
                    amsgrad=opt.amsgrad, **common)
    if isinstance(opt, _optimizers.SGD):
        return dict(kind=_c.OPT_SGD, momentum=opt.momentum, nesterov=opt.nesterov, **common)
    if isinstance(opt, _optimizers.RMSprop):
        return dict(kind=_c.OPT_RMSPROP, rho=opt.rho, momentum=opt.momentum, epsilon=opt.epsilon,
                    centered=opt.centered, **common)
    raise Unsupported(f"optimizer {opt!r}")


class CompiledPlan:
    """A compiled plan bound to an optimizer; see :func:`build_plan`."""

    def __init__(self, plan, optimizer, loss_op, in_features, variables, has_dropout=False):
        self._plan = plan
        self.has_dropout = has_dropout
        self.optimizer = optimizer
        self.loss_op = loss_op
        self.in_features = in_features
        self.variables = variables

    def _x(self, x):
        x = np.asarray(x, dtype=np.float32)
        return np.ascontiguousarray(x.reshape(x.shape[0], -1)) if x.ndim != 2 else x

    def _y(self, y):
        y = np.asarray(y, dtype=np.float32)
        return np.ascontiguousarray(y.reshape(y.shape[0], -1) if y.ndim > 1 or self.loss_op != _c.L_SCCE else y)

    def train_step(self, x, y, sample_weight=None) -> float:
        """One training step on a batch; returns the batch's loss (with
        regularization terms), and advances the optimizer's iterations."""
        opt = self.optimizer
        lr = opt.learning_rate
        opt.iterations += 1
        # draw a random stream only for dropout, as the eager Dropout layer does,
        # so that shuffling downstream sees the same sequence on both paths
        seed, stream = _random.next_stream() if self.has_dropout else (0, 0)
        sw = None if sample_weight is None else np.ascontiguousarray(sample_weight, dtype=np.float32)
        return self._plan.train_step(self._x(x), self._y(y), sw, lr, opt.iterations, seed, stream)

    def outputs(self):
        """The last training batch's predictions as an ndarray."""
        return self._plan.last_output()

    def predict(self, x, batch_size: int = 1024):
        """The forward pass (dropout off) over all rows of x, in chunks."""
        return self._plan.predict(self._x(x), int(batch_size))


def build_plan(in_features: int, steps, loss, optimizer) -> CompiledPlan:
    """Compiles a chain of steps. Each step is one of
    ``("dense", kernel, bias_or_None[, trainable, kernel_regularizer, bias_regularizer])``,
    ``("activation", name_or_function)``, ``("dropout", rate)``; each reads
    the previous step's output. Graphs name values: ``("use", key)`` makes
    the next step read the value ``key`` (``"input"`` is x), ``("mark",
    key)`` names the last step's output, ``("merge", op, key_a, key_b)``
    with op "add", "subtract", "multiply" or "concatenate" (feature axis).
    Raises :class:`Unsupported` for anything the plan cannot run."""
    plan = _c.Plan(int(in_features))
    names = _slot_names(optimizer)
    variables, has_dropout = [], False
    values = {"input": -1}
    merges = {"add": 0, "subtract": 1, "multiply": 2, "concatenate": 3}
    for spec in steps:
        kind = spec[0]
        if kind == "use":
            plan.set_input(values[spec[1]])
        elif kind == "mark":
            values[spec[1]] = plan.cursor
        elif kind == "merge":
            if spec[1] not in merges:
                raise Unsupported(f"merge {spec[1]!r}")
            plan.add_merge(merges[spec[1]], values[spec[2]], values[spec[3]])
        elif kind == "dense":
            kernel, bias = spec[1], spec[2]
            trainable = bool(spec[3]) if len(spec) > 3 else True
            kr = _reg(spec[4] if len(spec) > 4 else None)
            br = _reg(spec[5] if len(spec) > 5 else None)

            def slots(v):
                if not trainable or v is None:
                    return None
                return tuple(optimizer.slot(v, n) if n else None for n in names)

            decay = (bool(optimizer._decay_for(kernel)),
                     bool(bias is not None and optimizer._decay_for(bias)))
            plan.add_dense(kernel, bias, trainable, kr + br, slots(kernel), slots(bias), decay)
            variables += [kernel] + ([bias] if bias is not None else [])
        elif kind == "activation":
            _activation(plan, spec[1])
        elif kind == "dropout":
            if spec[1] > 0:
                plan.add_dropout(float(spec[1]))
                has_dropout = True
        else:
            raise Unsupported(f"step {kind!r}")
    loss_op, from_logits = _loss(loss)
    plan.set_loss(loss_op, from_logits)
    plan.set_optimizer(**_optimizer_config(optimizer))
    return CompiledPlan(plan, optimizer, loss_op, int(in_features), variables, has_dropout)


def compile_plan(model):
    """A CompiledPlan for a compiled, built model, or None when some part of
    it is not supported by plans (the model then trains eagerly)."""
    from ._layers import model_steps

    if getattr(model, "run_eagerly", False) or getattr(model, "_loss_weights", None) is not None \
            or isinstance(getattr(model, "loss", None), (dict, list, tuple)):
        return None
    try:
        in_features, steps = model_steps(model)
        return build_plan(in_features, steps, model.loss, model.optimizer)
    except Unsupported:
        return None
