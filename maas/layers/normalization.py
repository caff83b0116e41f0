"""LayerNormalization, BatchNormalization, GroupNormalization (Keras 3's
names, arguments and defaults), each one C op forward and one backward.

>>> import numpy as np, maas
>>> x = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
>>> y = np.asarray(maas.layers.LayerNormalization()(x))
>>> bool(np.allclose(y.mean(-1), 0, atol=1e-6))
True
"""
from __future__ import annotations

import numpy as np

from .. import _core
from .. import initializers as _initializers
from .. import regularizers as _regularizers
from .base import Layer
from .core import _fmt


def _axes(axis, ndim, layer):
    """Sorted non-negative axes of a rank-`ndim` input (Keras's `axis`)."""
    axes = [axis] if isinstance(axis, (int, np.integer)) else list(axis)
    if not axes or any(isinstance(a, bool) or not isinstance(a, (int, np.integer)) for a in axes):
        raise TypeError(f"{type(layer).__name__} {layer.name!r}: axis must be an int or a list "
                        f"of ints, received axis={axis!r}")
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"{type(layer).__name__} {layer.name!r}: axis {a} is out of bounds "
                             f"for an input of rank {ndim}, received axis={axis!r}")
        a = int(a) % ndim
        if a in out:
            raise ValueError(f"{type(layer).__name__} {layer.name!r}: duplicate axis {a} in "
                             f"axis={axis!r}")
        out.append(a)
    return sorted(out)


def _no_constraint(layer, **constraints):
    for k, v in constraints.items():
        if v is not None:
            raise ValueError(f"{type(layer).__name__}: {k}={v!r}: maas does not apply weight "
                             "constraints yet; leave it None")


def _float(name, value, lo=None, layer="layer"):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{layer}: {name} must be a number, received {name}={value!r}") from None
    if lo is not None and not v >= lo:
        raise ValueError(f"{layer}: {name} must be >= {lo}, received {name}={value!r}")
    return v


class LayerNormalization(Layer):
    """Normalizes each sample over ``axis`` (the last by default):
    ``(x - mean) / sqrt(var + epsilon) * gamma + beta``, with the biased
    variance, as Keras does. ``rms_scaling=True`` skips the centring and the
    offset: ``x / sqrt(mean(x**2) + epsilon) * gamma``.

    ``axis`` may be a list of axes; they must be consecutive (``[1, 2, 3]``),
    and gamma and beta span them (Keras's shapes).

    >>> ln = maas.layers.LayerNormalization(epsilon=1e-12)
    >>> ln(np.ones((2, 3, 4), np.float32)).shape
    (2, 3, 4)
    >>> [w.name for w in ln.weights], tuple(ln.gamma.shape)
    (['gamma', 'beta'], (4,))
    """

    supports_masking = True   # Keras 3: the input's mask passes through

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, rms_scaling=False,
                 beta_initializer="zeros", gamma_initializer="ones", beta_regularizer=None,
                 gamma_regularizer=None, beta_constraint=None, gamma_constraint=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(axis, (list, tuple)):
            axis = [int(a) for a in axis]
        elif isinstance(axis, (int, np.integer)) and not isinstance(axis, bool):
            axis = int(axis)
        else:
            raise TypeError(f"LayerNormalization: axis must be an int or a list of ints, "
                            f"received axis={axis!r}")
        self.axis = axis
        self.epsilon = _float("epsilon", epsilon, 0.0, "LayerNormalization")
        self.center, self.scale, self.rms_scaling = bool(center), bool(scale), bool(rms_scaling)
        self.beta_initializer = _initializers.get(beta_initializer)
        self.gamma_initializer = _initializers.get(gamma_initializer)
        self.beta_regularizer = _regularizers.get(beta_regularizer)
        self.gamma_regularizer = _regularizers.get(gamma_regularizer)
        _no_constraint(self, beta_constraint=beta_constraint, gamma_constraint=gamma_constraint)
        self.beta_constraint = self.gamma_constraint = None
        self.gamma = self.beta = None

    def build(self, input_shape):
        shape = tuple(input_shape)
        axes = _axes(self.axis, len(shape), self)
        if axes != list(range(axes[0], axes[-1] + 1)):
            raise ValueError(f"LayerNormalization {self.name!r}: axis={self.axis!r} on inputs of "
                             f"shape {_fmt(shape)}: maas normalizes over consecutive axes only")
        if any(shape[a] is None for a in axes):
            raise ValueError(f"LayerNormalization {self.name!r}: the normalized axes {axes} of "
                             f"input shape {_fmt(shape)} must be known")
        self._axes, self._rank = axes, len(shape)
        param = self._param = tuple(int(shape[a]) for a in axes)
        if self.scale or self.rms_scaling:
            self.gamma = self.add_weight(shape=param, initializer=self.gamma_initializer,
                                         regularizer=self.gamma_regularizer, name="gamma")
        if self.center and not self.rms_scaling:
            self.beta = self.add_weight(shape=param, initializer=self.beta_initializer,
                                        regularizer=self.beta_regularizer, name="beta")
        self.built = True

    def _check_input(self, x):
        shape = tuple(x.shape)
        if len(shape) != self._rank or tuple(shape[a] for a in self._axes) != self._param:
            raise ValueError(
                f"Input 0 of layer \"{self.name}\" is incompatible with the layer: expected "
                f"rank {self._rank} with axes {self._axes} of sizes {list(self._param)}, but "
                f"received input with shape {_fmt(shape)}")

    def call(self, inputs):
        ins = [inputs] + [w for w in (self.gamma, self.beta) if w is not None]
        return _core.op(_core.OP_LAYERNORM, ins, self._axes[0], len(self._axes), self.epsilon,
                        int(self.gamma is not None), int(self.beta is not None),
                        int(self.rms_scaling))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale, "rms_scaling": self.rms_scaling,
                "beta_initializer": _initializers.serialize(self.beta_initializer),
                "gamma_initializer": _initializers.serialize(self.gamma_initializer),
                "beta_regularizer": _regularizers.serialize(self.beta_regularizer),
                "gamma_regularizer": _regularizers.serialize(self.gamma_regularizer),
                "beta_constraint": None, "gamma_constraint": None}


class BatchNormalization(Layer):
    """Normalizes each channel (``axis``, the last by default) with the
    batch's mean and biased variance in training, and with the moving
    statistics at inference; Keras 3's layer.

    In training the op itself updates the non-trainable ``moving_mean`` and
    ``moving_variance`` in place, ``moving = moving * momentum + batch * (1 -
    momentum)``, once per forward, on the eager path and in a compiled plan
    alike. A layer with ``trainable=False`` runs in inference mode even in
    training, as Keras's does (the usual way to fine-tune with frozen
    statistics).

    >>> bn = maas.layers.BatchNormalization(momentum=0.9)
    >>> x = np.arange(8, dtype=np.float32).reshape(4, 2)
    >>> _ = bn(x, training=True)
    >>> np.asarray(bn.moving_mean)     # 0.9 * 0 + 0.1 * [3, 4]
    array([0.3, 0.4], dtype=float32)
    >>> [w.name for w in bn.weights]
    ['gamma', 'beta', 'moving_mean', 'moving_variance']
    """

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones",
                 moving_mean_initializer="zeros", moving_variance_initializer="ones",
                 beta_regularizer=None, gamma_regularizer=None, beta_constraint=None,
                 gamma_constraint=None, synchronized=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"BatchNormalization: axis must be an int, received axis={axis!r}")
        self.axis = int(axis)
        self.momentum = _float("momentum", momentum, 0.0, "BatchNormalization")
        if self.momentum > 1.0:
            raise ValueError(f"BatchNormalization: momentum must be in [0, 1], received "
                             f"momentum={momentum!r}")
        self.epsilon = _float("epsilon", epsilon, 0.0, "BatchNormalization")
        self.center, self.scale = bool(center), bool(scale)
        self.beta_initializer = _initializers.get(beta_initializer)
        self.gamma_initializer = _initializers.get(gamma_initializer)
        self.moving_mean_initializer = _initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = _initializers.get(moving_variance_initializer)
        self.beta_regularizer = _regularizers.get(beta_regularizer)
        self.gamma_regularizer = _regularizers.get(gamma_regularizer)
        _no_constraint(self, beta_constraint=beta_constraint, gamma_constraint=gamma_constraint)
        self.synchronized = bool(synchronized)
        self.gamma = self.beta = self.moving_mean = self.moving_variance = None

    def build(self, input_shape):
        shape = tuple(input_shape)
        if not shape:
            raise ValueError(f"BatchNormalization {self.name!r}: inputs need at least one "
                             f"dimension, received input shape {_fmt(shape)}")
        self._ax = _axes(self.axis, len(shape), self)[0]
        self._rank = len(shape)
        c = shape[self._ax]
        if c is None:
            raise ValueError(f"BatchNormalization {self.name!r}: axis {self.axis} of input shape "
                             f"{_fmt(shape)} must be known")
        if self.scale:
            self.gamma = self.add_weight(shape=(c,), initializer=self.gamma_initializer,
                                         regularizer=self.gamma_regularizer, name="gamma")
        if self.center:
            self.beta = self.add_weight(shape=(c,), initializer=self.beta_initializer,
                                        regularizer=self.beta_regularizer, name="beta")
        self.moving_mean = self.add_weight(shape=(c,), initializer=self.moving_mean_initializer,
                                           trainable=False, name="moving_mean")
        self.moving_variance = self.add_weight(shape=(c,),
                                               initializer=self.moving_variance_initializer,
                                               trainable=False, name="moving_variance")
        self.built = True

    def _check_input(self, x):
        shape = tuple(x.shape)
        c = self.moving_mean.shape[0]
        if len(shape) != self._rank or shape[self._ax] != c:
            raise ValueError(
                f"Input 0 of layer \"{self.name}\" is incompatible with the layer: expected "
                f"rank {self._rank} with axis {self.axis} of size {c}, but received input with "
                f"shape {_fmt(shape)}")

    def call(self, inputs, training=None, mask=None):
        if mask is not None:
            raise ValueError(f"BatchNormalization {self.name!r}: masked statistics are not "
                             "supported by maas yet (call it without a mask)")
        train = bool(training) and self.trainable
        ins = [inputs, self.moving_mean, self.moving_variance] + \
            [w for w in (self.gamma, self.beta) if w is not None]
        return _core.op(_core.OP_BATCHNORM, ins, int(train), self.momentum, self.epsilon,
                        int(self.gamma is not None), int(self.beta is not None), self._ax)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "momentum": self.momentum,
                "epsilon": self.epsilon, "center": self.center, "scale": self.scale,
                "beta_initializer": _initializers.serialize(self.beta_initializer),
                "gamma_initializer": _initializers.serialize(self.gamma_initializer),
                "moving_mean_initializer": _initializers.serialize(self.moving_mean_initializer),
                "moving_variance_initializer":
                    _initializers.serialize(self.moving_variance_initializer),
                "beta_regularizer": _regularizers.serialize(self.beta_regularizer),
                "gamma_regularizer": _regularizers.serialize(self.gamma_regularizer),
                "beta_constraint": None, "gamma_constraint": None,
                "synchronized": self.synchronized}


class GroupNormalization(Layer):
    """Splits the channels (last axis) into ``groups`` groups and normalizes
    each sample's group over its spatial positions and channels, then scales
    and shifts per channel (Keras 3's layer; ``groups=-1`` is instance
    normalization, ``groups=1`` layer normalization over all but the batch).

    >>> gn = maas.layers.GroupNormalization(groups=2)
    >>> gn(np.random.default_rng(0).normal(size=(2, 5, 5, 4)).astype(np.float32)).shape
    (2, 5, 5, 4)
    """

    supports_masking = True   # Keras 3: the input's mask passes through

    def __init__(self, groups=32, axis=-1, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones", beta_regularizer=None,
                 gamma_regularizer=None, beta_constraint=None, gamma_constraint=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or \
                (groups <= 0 and groups != -1):
            raise ValueError(f"GroupNormalization: groups must be a positive integer (or -1), "
                             f"received groups={groups!r}")
        self.groups, self.axis = int(groups), axis
        self.epsilon = _float("epsilon", epsilon, 0.0, "GroupNormalization")
        self.center, self.scale = bool(center), bool(scale)
        self.beta_initializer = _initializers.get(beta_initializer)
        self.gamma_initializer = _initializers.get(gamma_initializer)
        self.beta_regularizer = _regularizers.get(beta_regularizer)
        self.gamma_regularizer = _regularizers.get(gamma_regularizer)
        _no_constraint(self, beta_constraint=beta_constraint, gamma_constraint=gamma_constraint)
        self.gamma = self.beta = None

    def build(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) < 2:
            raise ValueError(f"GroupNormalization {self.name!r}: inputs need a batch and a "
                             f"channel axis, received input shape {_fmt(shape)}")
        if _axes(self.axis, len(shape), self) != [len(shape) - 1]:
            raise ValueError(f"GroupNormalization {self.name!r}: maas supports the channels-last "
                             f"axis only (axis=-1), received axis={self.axis!r}")
        c = shape[-1]
        if c is None:
            raise ValueError(f"GroupNormalization {self.name!r}: axis -1 of input shape "
                             f"{_fmt(shape)} should have a defined dimension")
        groups = c if self.groups == -1 else self.groups
        if groups > c:
            raise ValueError(f"GroupNormalization {self.name!r}: number of groups ({groups}) "
                             f"cannot be more than the number of channels ({c}) of input shape "
                             f"{_fmt(shape)}")
        if c % groups:
            raise ValueError(f"GroupNormalization {self.name!r}: number of groups ({groups}) must "
                             f"divide the number of channels ({c}) of input shape {_fmt(shape)}")
        self._groups, self._rank = groups, len(shape)
        if self.scale:
            self.gamma = self.add_weight(shape=(c,), initializer=self.gamma_initializer,
                                         regularizer=self.gamma_regularizer, name="gamma")
        if self.center:
            self.beta = self.add_weight(shape=(c,), initializer=self.beta_initializer,
                                        regularizer=self.beta_regularizer, name="beta")
        self._channels = c
        self.built = True

    def _check_input(self, x):
        shape = tuple(x.shape)
        if len(shape) != self._rank or shape[-1] != self._channels:
            raise ValueError(
                f"Input 0 of layer \"{self.name}\" is incompatible with the layer: expected "
                f"rank {self._rank} with axis -1 of size {self._channels}, but received input "
                f"with shape {_fmt(shape)}")

    def call(self, inputs):
        ins = [inputs] + [w for w in (self.gamma, self.beta) if w is not None]
        return _core.op(_core.OP_GROUPNORM, ins, self._groups, self.epsilon,
                        int(self.gamma is not None), int(self.beta is not None))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "axis": self.axis,
                "epsilon": self.epsilon, "center": self.center, "scale": self.scale,
                "beta_initializer": _initializers.serialize(self.beta_initializer),
                "gamma_initializer": _initializers.serialize(self.gamma_initializer),
                "beta_regularizer": _regularizers.serialize(self.beta_regularizer),
                "gamma_regularizer": _regularizers.serialize(self.gamma_regularizer),
                "beta_constraint": None, "gamma_constraint": None}
