"""Magnitude pruning during training, as TF Model Optimization does it.

``prune_low_magnitude(model, pruning_schedule=PolynomialDecay(...))`` gives
a copy of the model whose Dense layers are wrapped in
:class:`PruneLowMagnitude`: each holds a mask (a non-trainable weight) and
computes with ``kernel * mask``, so the mask is part of the traced training
step and of its compiled plan, and the kernel's gradient is zero where the
mask is. The :class:`UpdatePruningStep` callback advances the schedule in
``fit``: at each pruning step the smallest-magnitude weights are masked
until the schedule's sparsity is reached, and after every batch the masked
weights are written back as zeros (Adam's momentum would move them).
``strip_pruning(model)`` gives the plain model, its kernels holding the
zeros; saved, its mostly-zero weights take a bitmask plus their values.
``to_sparse(model)`` turns Dense layers of at least 95% zeros into
inference-only :class:`SparseDense` layers (a CSR kernel); measured here it
beats the dense GEMM only at that sparsity and at large batches (see
SPARSE_MIN), so it is opt-in and nothing else uses it.

>>> import numpy as np, maas
>>> from maas import pruning
>>> model = maas.Sequential([maas.Input((8,)), maas.layers.Dense(32), maas.layers.Dense(2)])
>>> pruned = pruning.prune_low_magnitude(
...     model, pruning_schedule=pruning.ConstantSparsity(0.75, begin_step=0, frequency=1))
>>> pruned.compile(optimizer="adam", loss="mse")
>>> x, y = np.ones((16, 8), np.float32), np.zeros((16, 2), np.float32)
>>> _ = pruned.fit(x, y, epochs=1, verbose=0, callbacks=[pruning.UpdatePruningStep()])
>>> plain = pruning.strip_pruning(pruned)
>>> float((np.asarray(plain.layers[0].kernel) == 0).mean())
0.75
"""
from __future__ import annotations

import numpy as np

from .. import _core
from .. import activations as _activations
from ..callbacks import Callback
from ..layers.base import Layer
from ..layers.core import Dense
from ..tensor import Tensor as _Tensor

__all__ = ["PolynomialDecay", "ConstantSparsity", "PruningSchedule", "prune_low_magnitude",
           "PruneLowMagnitude", "UpdatePruningStep", "strip_pruning", "get_sparsity",
           "SparseDense", "to_sparse", "SPARSE_MIN"]


class PruningSchedule:
    """``schedule(step) -> (should_prune, sparsity)``, TF-MOT's interface."""

    def __init__(self, begin_step=0, end_step=-1, frequency=100):
        if begin_step < 0 or (end_step != -1 and end_step < begin_step) or frequency <= 0:
            raise ValueError(f"{type(self).__name__}: need 0 <= begin_step <= end_step (or "
                             f"end_step=-1) and frequency > 0, received begin_step={begin_step}, "
                             f"end_step={end_step}, frequency={frequency}")
        self.begin_step, self.end_step, self.frequency = int(begin_step), int(end_step), int(frequency)

    def _should_prune(self, step):
        in_range = step >= self.begin_step and (self.end_step == -1 or step <= self.end_step)
        return in_range and (step - self.begin_step) % self.frequency == 0

    def get_config(self):
        return {"begin_step": self.begin_step, "end_step": self.end_step,
                "frequency": self.frequency}


def _check_sparsity(name, v):
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{name} must be in [0, 1), received {name}={v!r}")
    return float(v)


class ConstantSparsity(PruningSchedule):
    """The same sparsity at every pruning step from ``begin_step``."""

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        super().__init__(begin_step, end_step, frequency)
        self.target_sparsity = _check_sparsity("target_sparsity", target_sparsity)

    def __call__(self, step):
        return self._should_prune(step), self.target_sparsity

    def get_config(self):
        return {**super().get_config(), "target_sparsity": self.target_sparsity}


class PolynomialDecay(PruningSchedule):
    """TF-MOT's schedule: from ``initial_sparsity`` at ``begin_step`` to
    ``final_sparsity`` at ``end_step``,
    ``s(t) = final + (initial - final) * (1 - (t - begin) / (end - begin)) ** power``,
    pruning every ``frequency`` steps.

    >>> s = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100, frequency=10)
    >>> [round(s(t)[1], 3) for t in (0, 50, 100)]
    [0.0, 0.7, 0.8]
    """

    def __init__(self, initial_sparsity, final_sparsity, begin_step, end_step, power=3,
                 frequency=100):
        if end_step == -1 or end_step <= begin_step:
            raise ValueError(f"PolynomialDecay: end_step must be after begin_step, received "
                             f"begin_step={begin_step}, end_step={end_step}")
        super().__init__(begin_step, end_step, frequency)
        self.initial_sparsity = _check_sparsity("initial_sparsity", initial_sparsity)
        self.final_sparsity = _check_sparsity("final_sparsity", final_sparsity)
        self.power = power

    def __call__(self, step):
        t = min(max(step, self.begin_step), self.end_step)
        frac = (t - self.begin_step) / (self.end_step - self.begin_step)
        s = self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1 - frac) ** self.power
        return self._should_prune(step) or step == self.end_step, float(s)

    def get_config(self):
        return {**super().get_config(), "initial_sparsity": self.initial_sparsity,
                "final_sparsity": self.final_sparsity, "power": self.power}


class PruneLowMagnitude(Layer):
    """Wraps a Dense layer: computes with ``kernel * mask``; the mask is a
    non-trainable weight that :class:`UpdatePruningStep` updates. Other
    layer types can be pruned by giving them this contract (a ``kernel``
    and a call on it); only Dense is wrapped by default."""

    def __init__(self, layer, pruning_schedule=None, **kwargs):
        if not isinstance(layer, Dense):
            raise ValueError(f"prune_low_magnitude: cannot prune layer {layer.name!r} "
                             f"({type(layer).__name__}): maas prunes Dense kernels only")
        kwargs.setdefault("name", f"prune_low_magnitude_{layer.name}")
        super().__init__(**kwargs)
        self.layer = layer
        self.pruning_schedule = pruning_schedule or ConstantSparsity(0.5, 0)
        self.mask = None

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.mask = self.add_weight(shape=tuple(self.layer.kernel.shape), initializer="ones",
                                    trainable=False, name="mask")
        self.built = True

    def call(self, inputs):
        d = self.layer
        out = _core.dense(inputs, d.kernel * self.mask, d.bias)
        return out if d.activation is _activations.linear else d.activation(out)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def update_mask(self, sparsity):
        """Masks the ``sparsity`` fraction of smallest-magnitude weights
        (ties broken by position, so the count is exact)."""
        w = np.asarray(self.layer.kernel)
        k = int(round(sparsity * w.size))
        mask = np.ones(w.size, np.float32)
        if k:
            order = np.argsort(np.abs(w).reshape(-1), kind="stable")
            mask[order[:k]] = 0.0
        self.mask.assign(mask.reshape(w.shape))
        self.apply_mask()

    def apply_mask(self):
        self.layer.kernel.assign(self.masked_kernel())

    def masked_kernel(self) -> np.ndarray:
        """The kernel with +0.0 where the mask is 0."""
        return np.where(np.asarray(self.mask) != 0, np.asarray(self.layer.kernel), np.float32(0))


def _pruned_layers(model):
    return [l for l in model._flatten_layers(include_self=False) if isinstance(l, PruneLowMagnitude)]


def prune_low_magnitude(to_prune, pruning_schedule=None, schedule=None, **kwargs):
    """A copy of the model (same weights) whose Dense layers are wrapped in
    :class:`PruneLowMagnitude` (TF-MOT's function; ``schedule=`` is an alias
    of ``pruning_schedule=``). Train it with ``callbacks=[UpdatePruningStep()]``."""
    from ..models.cloning import clone_model

    if kwargs:
        raise TypeError(f"prune_low_magnitude: unsupported arguments {sorted(kwargs)} "
                        f"(block_size and pruning_policy are not implemented)")
    sched = pruning_schedule if pruning_schedule is not None else schedule
    sched = sched or ConstantSparsity(0.5, 0)
    pairs = []

    def clone(layer):
        new = type(layer).from_config(layer.get_config())
        pairs.append((layer, new))
        return PruneLowMagnitude(new, sched) if isinstance(layer, Dense) and \
            getattr(layer, "quantization_config", None) is None else new

    out = clone_model(to_prune, clone_function=clone)
    for old, new in pairs:
        if old.weights:
            if not new.weights and getattr(old, "_build_shape", None) is not None:
                new.build(old._build_shape)
            new.set_weights(old.get_weights())
    if not _pruned_layers(out):
        raise ValueError(f"prune_low_magnitude: model {to_prune.name!r} has no Dense layer to prune")
    return out


class UpdatePruningStep(Callback):
    """Advances the pruning schedules during ``fit`` (TF-MOT's callback):
    before each batch, masks the smallest weights when the schedule says
    so; after each batch, writes zeros back where the masks are 0."""

    def __init__(self):
        super().__init__()
        self.step = -1

    def on_train_begin(self, logs=None):
        if not _pruned_layers(self.model):
            raise ValueError("UpdatePruningStep: the model has no pruned layers; wrap it with "
                             "maas.pruning.prune_low_magnitude first")

    def on_train_batch_begin(self, batch, logs=None):
        self.step += 1
        for layer in _pruned_layers(self.model):
            should, sparsity = layer.pruning_schedule(self.step)
            if should:
                layer.update_mask(sparsity)

    def on_train_batch_end(self, batch, logs=None):
        for layer in _pruned_layers(self.model):
            layer.apply_mask()


def strip_pruning(model):
    """The plain model: each PruneLowMagnitude replaced by its Dense, whose
    kernel holds the masked weights (zeros included)."""
    from ..models.cloning import clone_model

    pairs = []

    def clone(layer):
        src = layer.layer if isinstance(layer, PruneLowMagnitude) else layer
        new = type(src).from_config(src.get_config())
        pairs.append((layer, new))
        return new

    out = clone_model(model, clone_function=clone)
    for old, new in pairs:
        if isinstance(old, PruneLowMagnitude):
            w = [old.masked_kernel()] + \
                ([np.asarray(old.layer.bias)] if old.layer.bias is not None else [])
            new.set_weights(w)
        elif old.weights:
            new.set_weights(old.get_weights())
    return out


def get_sparsity(model) -> dict:
    """The fraction of exact zeros of each Dense kernel, by layer name."""
    out = {}
    for layer in model._flatten_layers(include_self=False):
        k = layer.layer.kernel if isinstance(layer, PruneLowMagnitude) else getattr(layer, "kernel", None)
        if k is not None and k.dtype == "float32":
            out[layer.name] = float((np.asarray(k) == 0).mean())
    return out


# ------------------------------------------------------- sparse inference

#: below this sparsity the dense GEMM wins on this CPU (benchmarks/quantize.py,
#: 4096x4096: at 80% both scipy's CSR and maas's spdense lose to OpenBLAS; at
#: 95% spdense wins at batch 64 (1.1-2.8x) but still loses at batch 1, where
#: scipy's CSR wins 2-3x: convert for batched inference only)
SPARSE_MIN = 0.95


class _FixedWeight(_Tensor):
    """A non-trainable integer weight (CSR indices), saved with its dtype."""

    def __new__(cls, value, dtype, name):
        self = super().__new__(cls, np.asarray(value, dtype), copy=True, dtype=dtype)
        self.name, self.path = name, name
        self._declared_trainable, self._regularizer = False, None
        return self

    def __init__(self, *args, **kwargs):
        pass

    @property
    def trainable(self):
        return False

    @trainable.setter
    def trainable(self, value):
        pass

    def assign(self, value):
        np.asarray(self)[...] = np.asarray(value)
        return self


class SparseDense(Layer):
    """An inference-only Dense whose kernel is held in CSR (of kernel^T:
    ``rowptr`` int64, ``cols`` int32, ``values`` float32), computed by the
    C op ``spdense``; :func:`to_sparse` makes them from pruned kernels. Not
    trainable (fine-tune the Dense model, then convert)."""

    def __init__(self, units, nnz, activation=None, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.units, self.nnz, self.use_bias = int(units), int(nnz), bool(use_bias)
        self.activation = _activations.get(activation)
        self.trainable = False

    def build(self, input_shape):
        self.in_dim = int(input_shape[-1])
        self.rowptr = _FixedWeight(np.zeros(self.units + 1, np.int64), "int64", "rowptr")
        self.cols = _FixedWeight(np.zeros(self.nnz, np.int32), "int32", "cols")
        self.values = self.add_weight(shape=(self.nnz,), initializer="zeros", trainable=False,
                                      name="values")
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", trainable=False,
                                    name="bias") if self.use_bias else None
        for w in (self.rowptr, self.cols):
            w.path = f"{self.name}/{w.name}"
        self._weights_own = [self.rowptr, self.cols, self.values] + \
            ([self.bias] if self.bias is not None else [])
        self.built = True

    def set_kernel(self, kernel, bias=None):
        """Fills the CSR from a dense (in, units) kernel with exactly nnz nonzeros."""
        kt = np.ascontiguousarray(np.asarray(kernel, np.float32).T)
        nz = kt.view(np.uint32) != 0
        counts = nz.sum(1)
        if int(counts.sum()) != self.nnz:
            raise ValueError(f"SparseDense {self.name!r}: the kernel has {int(counts.sum())} "
                             f"nonzeros, the layer {self.nnz}")
        self.rowptr.assign(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
        self.cols.assign(np.nonzero(nz)[1].astype(np.int32))
        self.values.assign(kt[nz])
        if bias is not None and self.bias is not None:
            self.bias.assign(bias)

    def call(self, inputs):
        ins = [inputs, self.rowptr, self.cols, self.values] + ([self.bias] if self.bias is not None else [])
        out = _core.op(_core.OP_SPDENSE, ins, int(self.bias is not None))
        return out if self.activation is _activations.linear else self.activation(out)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "nnz": self.nnz,
                "activation": _activations.serialize(self.activation), "use_bias": self.use_bias}


def to_sparse(model, min_sparsity: float = SPARSE_MIN):
    """A copy of a (stripped) model for inference in which each Dense whose
    kernel has at least ``min_sparsity`` zeros is a :class:`SparseDense`
    (CSR kernel); the others stay Dense. Outputs match the dense model to
    float32 rounding (another summation order)."""
    from ..models.cloning import clone_model

    pairs = []

    def clone(layer):
        if isinstance(layer, Dense) and layer.kernel is not None and \
                getattr(layer, "quantization_config", None) is None:
            k = np.asarray(layer.kernel)
            nnz = int((k.view(np.uint32) != 0).sum())
            if 1.0 - nnz / k.size >= min_sparsity:
                cfg = layer.get_config()
                new = SparseDense(layer.units, nnz, activation=cfg["activation"],
                                  use_bias=layer.use_bias, name=layer.name)
                pairs.append((layer, new, True))
                return new
        new = type(layer).from_config(layer.get_config())
        pairs.append((layer, new, False))
        return new

    out = clone_model(model, clone_function=clone)
    for old, new, sparse in pairs:
        if sparse:
            if not new.built:
                new.build((None, old.kernel.shape[0]))
            new.set_kernel(old.kernel, None if old.bias is None else np.asarray(old.bias))
        elif old.weights:
            new.set_weights(old.get_weights())
    return out


def _register():
    from ..layers import _CLASSES

    _CLASSES.setdefault("SparseDense", SparseDense)


_register()
