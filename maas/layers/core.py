"""Dense, Activation, Dropout, Flatten, Reshape."""
from __future__ import annotations

import math

import numpy as np

from .. import _core
from .. import activations as _activations
from .. import initializers as _initializers
from .. import ops
from .. import random as _random
from .. import regularizers as _regularizers
from ..tensor import Tensor
from .base import Layer


def _positive_int(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, received {name}={value!r}")
    return int(value)


class Dense(Layer):
    """A densely connected layer: ``activation(inputs @ kernel + bias)``.

    >>> layer = maas.layers.Dense(4, activation="relu")
    >>> layer(np.ones((2, 3), np.float32)).shape
    (2, 4)
    """

    supports_masking = True   # Keras 3: the input's mask passes through

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, **kwargs):
        quantization_config = kwargs.pop("quantization_config", None)  # maas.quantization
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.quantization_config = quantization_config
        self.units = _positive_int("units", units)
        self.activation = _activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializers.get(kernel_initializer)
        self.bias_initializer = _initializers.get(bias_initializer)
        self.kernel_regularizer = _regularizers.get(kernel_regularizer)
        self.bias_regularizer = _regularizers.get(bias_regularizer)
        self.kernel = self.bias = None

    def build(self, input_shape):
        in_dim = input_shape[-1]
        if in_dim is None:
            raise ValueError(f"Dense layer {self.name!r}: the last dimension of the inputs must be "
                             f"known, received input_shape={tuple(input_shape)}")
        if self.quantization_config is not None:
            return _quantization().build_dense(self, in_dim)
        self.kernel = self.add_weight(shape=(in_dim, self.units), initializer=self.kernel_initializer,
                                      regularizer=self.kernel_regularizer, name="kernel")
        if self.use_bias:
            self.bias = self.add_weight(shape=(self.units,), initializer=self.bias_initializer,
                                        regularizer=self.bias_regularizer, name="bias")
        self.built = True

    def _check_input(self, x):
        shape = tuple(x.shape)
        in_dim = self._q_in_dim if self.quantization_config is not None else self.kernel.shape[0]
        if not shape or shape[-1] != in_dim:
            raise ValueError(
                f"Input 0 of layer \"{self.name}\" is incompatible with the layer: expected axis -1 "
                f"of input shape to have value {in_dim}, but received input with "
                f"shape {_fmt(shape)}")

    def call(self, inputs):
        if self.quantization_config is not None:
            out = _quantization().dense_call(self, inputs)
        else:
            out = _core.dense(inputs, self.kernel, self.bias)
        act = self.activation
        return out if act is _activations.linear else act(out)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "activation": _activations.serialize(self.activation), "use_bias": self.use_bias,
                "kernel_initializer": _initializers.serialize(self.kernel_initializer),
                "bias_initializer": _initializers.serialize(self.bias_initializer),
                "kernel_regularizer": _regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": _regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": _regularizers.serialize(self.activity_regularizer),
                **({"quantization_config": dict(self.quantization_config)}
                   if self.quantization_config is not None else {})}

    def quantize(self, mode, type_check=True):
        """Quantizes the built layer to int8 in place (Keras's ``Dense.quantize``;
        see :mod:`maas.quantization`).

        >>> layer = maas.layers.Dense(4); _ = layer(np.ones((1, 3), np.float32))
        >>> layer.quantize("int8"); layer.kernel.dtype
        'int8'
        """
        _quantization().quantize_dense(self, mode)


def _quantization():
    from .. import quantization

    return quantization


def _fmt(shape):
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


class Activation(Layer):
    """Applies an activation: ``Activation("relu")``."""

    supports_masking = True   # Keras 3: the input's mask passes through

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = _activations.get(activation)
        self.built = True

    def call(self, inputs):
        return self.activation(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "activation": _activations.serialize(self.activation)}


class Dropout(Layer):
    """Zeroes a fraction ``rate`` of the inputs during training (scaling the
    rest by 1/(1-rate)); the identity otherwise.

    ``noise_shape`` is the shape of the mask, broadcast over the inputs
    (``None`` entries take the input's size): ``noise_shape=(None, 1, 64)``
    on ``(batch, steps, 64)`` inputs drops the same features at every step.

    >>> layer = maas.layers.Dropout(0.5, noise_shape=(None, 1, 4), seed=1)
    >>> out = np.asarray(layer(np.ones((2, 3, 4), np.float32), training=True))
    >>> bool((out == out[:, :1, :]).all())   # the same mask along axis 1
    True
    """

    supports_masking = True   # Keras 3: the input's mask passes through

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ValueError(f"Invalid value received for argument `rate`. Expected a float value "
                             f"between 0 and 1. Received: rate={rate!r}")
        if noise_shape is not None:
            if not isinstance(noise_shape, (list, tuple)) or any(
                    d is not None and (not isinstance(d, (int, np.integer)) or d <= 0)
                    for d in noise_shape):
                raise ValueError(f"Dropout: noise_shape must be a tuple of positive integers or "
                                 f"None, received noise_shape={noise_shape!r}")
            noise_shape = tuple(None if d is None else int(d) for d in noise_shape)
        self.rate, self.noise_shape, self.seed = float(rate), noise_shape, seed
        self._calls = 0
        self.built = True

    def _mask_shape(self, shape):
        ns = self.noise_shape
        if len(ns) != len(shape):
            raise ValueError(f"Dropout {self.name!r}: noise_shape={ns} must have one entry per "
                             f"axis of the inputs, received inputs of shape {tuple(shape)}")
        out = tuple(s if d is None else d for d, s in zip(ns, shape))
        for d, s in zip(out, shape):
            if d != s and d != 1:
                raise ValueError(f"Dropout {self.name!r}: noise_shape={ns} does not broadcast to "
                                 f"inputs of shape {tuple(shape)} (each entry must be None, 1 or "
                                 "the input's size)")
        return out

    def _drop(self, x):
        if self.seed is None:
            return _random.dropout(x, self.rate)
        seed, stream = _random.draw_key(self._next_key)
        return _core.dropout(x, self.rate, seed, stream)

    def _next_key(self):
        """(seed, stream) of this layer's next call: its own seed, counted calls."""
        self._calls += 1
        return int(self.seed), self._calls

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        if self.rate >= 1:
            return inputs * 0.0
        if self.noise_shape is None:
            return self._drop(inputs)
        shape = self._mask_shape(tuple(inputs.shape))
        if shape == tuple(inputs.shape):
            return self._drop(inputs)
        # the mask is dropout of ones (0 or 1/(1-rate)), broadcast over the inputs
        mask = self._drop(Tensor(np.ones(shape, np.float32)))
        return inputs * mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate,
                "noise_shape": None if self.noise_shape is None else list(self.noise_shape),
                "seed": self.seed}


class Flatten(Layer):
    """(batch, ...) -> (batch, prod(...))."""

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = data_format
        self.built = True

    def call(self, inputs):
        return ops.reshape(inputs, (inputs.shape[0], -1))

    def compute_output_shape(self, input_shape):
        rest = input_shape[1:]
        n = None if any(d is None for d in rest) else math.prod(rest)
        return (input_shape[0], n)

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}


class Reshape(Layer):
    """Reshapes each sample to ``target_shape`` (one entry may be -1)."""

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        self.target_shape = tuple(int(d) for d in target_shape)
        if sum(d == -1 for d in self.target_shape) > 1 or any(d == 0 or d < -1 for d in self.target_shape):
            raise ValueError(f"Reshape: target_shape must be positive integers with at most one -1, "
                             f"received target_shape={self.target_shape}")
        self.built = True

    def _resolve(self, rest):
        if -1 not in self.target_shape:
            n = math.prod(self.target_shape)
            if None not in rest and math.prod(rest) != n:
                raise ValueError(f"Reshape {self.name!r}: total size of the input per sample "
                                 f"{math.prod(rest)} (shape {tuple(rest)}) cannot be reshaped to "
                                 f"target_shape={self.target_shape}")
            return self.target_shape
        if None in rest:
            return tuple(None if d == -1 else d for d in self.target_shape)
        known = math.prod(d for d in self.target_shape if d != -1)
        total = math.prod(rest)
        if total % known:
            raise ValueError(f"Reshape {self.name!r}: cannot reshape {tuple(rest)} to "
                             f"target_shape={self.target_shape}")
        return tuple(total // known if d == -1 else d for d in self.target_shape)

    def call(self, inputs):
        return ops.reshape(inputs, (inputs.shape[0],) + self._resolve(tuple(inputs.shape[1:])))

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self._resolve(tuple(input_shape[1:]))

    def get_config(self):
        return {**super().get_config(), "target_shape": list(self.target_shape)}
