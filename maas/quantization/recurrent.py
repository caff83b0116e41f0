"""int8 for the recurrent layers' input projections (beyond Keras, which
quantizes Dense, EinsumDense and Embedding only).

``model.quantize("int8")`` on a model with ``SimpleRNN``/``LSTM``/``GRU``
layers (Bidirectional's too) quantizes each layer's input kernel (features,
gates x units) symmetrically per output channel (abs-max, float32 scales,
as Dense's) and runs the projection of every step as ONE int8 GEMM through
the qdense op: x (batch, steps, features) is quantized per row (each step
of each sample, by its abs-max; or by a calibrated scale), multiplied by the
packed int8 kernel, rescaled. The rnn op then takes that projection as its
input (``projected``): the recurrent matmul, the gates and the backward
through time stay float32.

Error bound. For a step row x with scale ``sx = 127 / max|x|`` and a kernel
column w with ``sw = 127 / max|w|``, rounding moves each of ``x_q`` and
``w_q`` by at most 1/2, so the projection's error is at most
``|x|_1 max|w| / 254 + |w|_1 max|x| / 254 + K / (4 sx sw)`` (K features)
per gate pre-activation; the gates are Lipschitz (sigmoid 1/4, tanh 1), and
tests/test_quantization_recurrent.py checks the projection against that
bound and the layer's outputs within it.

>>> import numpy as np, maas
>>> m = maas.Sequential([maas.Input((5, 3)), maas.layers.LSTM(4), maas.layers.Dense(1)])
>>> x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
>>> before = m.predict(x, verbose=0)
>>> m.quantize("int8")
>>> m.layers[0].kernel.dtype
'int8'
>>> bool(np.abs(m.predict(x, verbose=0) - before).max() < 0.05)
True
"""
from __future__ import annotations

import numpy as np

from . import (Int8Weight, _check_mode, _check_quantizable, pack_kernel, qdense, quantize_kernel,
               register_quantizer, unpack_kernel)

__all__ = ["quantize_recurrent", "build_recurrent", "projection", "int8_recurrent_kernel",
           "projection_error_bound"]


def _gu(layer) -> int:
    return layer._gates * layer.units


def _int8_weights(layer, in_dim, config):
    """The int8 input kernel (zeros; loading or quantize_recurrent fills it)
    and its scales, in Keras's weight order: kernel, recurrent_kernel,
    [bias], kernel_scale, [input_scale]."""
    gu = _gu(layer)
    layer.quantization_config = dict(config)
    layer._q_in_dim = int(in_dim)
    blocks = (gu + 15) // 16
    row = ((in_dim + 3) // 4) * 64 + 64
    layer.kernel = Int8Weight(np.zeros((blocks, row), np.int8), name="kernel")
    layer.kernel_scale = layer.add_weight(shape=(gu,), initializer="ones", trainable=False,
                                          name="kernel_scale")
    layer.input_scale = None
    if config.get("activation") == "static":
        layer.input_scale = layer.add_weight(shape=(), initializer="ones", trainable=False,
                                             name="input_scale")


def _retrack(layer):
    own = [layer.kernel, layer.recurrent_kernel] + \
        ([layer.bias] if layer.bias is not None else []) + [layer.kernel_scale]
    if layer.input_scale is not None:
        own.append(layer.input_scale)
    layer.kernel.path = f"{layer.name}/kernel"
    layer._weights_own = own


def quantize_recurrent(layer, mode="int8", input_scale=None) -> None:
    """Quantizes a built SimpleRNN/LSTM/GRU's input kernel in place."""
    _check_mode(mode)
    _check_quantizable(layer, "kernel")
    kernel = np.asarray(layer.kernel)
    q, scale = quantize_kernel(kernel)
    config = {"mode": mode, "activation": "dynamic" if input_scale is None else "static"}
    _int8_weights(layer, kernel.shape[0], config)
    layer.kernel = Int8Weight(np.asarray(pack_kernel(q)), name="kernel")
    layer.kernel_scale.assign(scale)
    if input_scale is not None:
        layer.input_scale.assign(np.float32(input_scale))
    _retrack(layer)


def build_recurrent(layer, in_dim) -> None:
    """The build of a recurrent layer whose config says it is quantized
    (loading a quantized model): the float recurrent kernel and bias, the
    int8 input kernel and its scales."""
    gu = _gu(layer)
    layer.recurrent_kernel = layer.add_weight(shape=(layer.units, gu),
                                              initializer=layer.recurrent_initializer,
                                              regularizer=layer.recurrent_regularizer,
                                              name="recurrent_kernel")
    layer.bias = None
    if layer.use_bias:
        bs = layer._bias_shape()
        layer.bias = layer.add_weight(shape=bs, initializer=layer._bias_initial(bs),
                                      regularizer=layer.bias_regularizer, name="bias")
    _int8_weights(layer, in_dim, layer.quantization_config)
    _retrack(layer)


def projection(layer, x):
    """x (batch, steps, features) @ the int8 input kernel, rescaled: one
    qdense call over every step (each row quantized by its own abs-max, or
    by the calibrated input scale)."""
    return qdense(x, layer.kernel, layer.kernel_scale, None,
                  layer.input_scale if layer.input_scale is not None else None)


def int8_recurrent_kernel(layer) -> np.ndarray:
    """A quantized recurrent layer's int8 input kernel (features, gates x
    units), Keras's layout."""
    if getattr(layer, "quantization_config", None) is None:
        raise ValueError(f"layer {layer.name!r} is not quantized: call model.quantize('int8')")
    return unpack_kernel(layer.kernel, layer._q_in_dim, _gu(layer))


def projection_error_bound(x, kernel) -> np.ndarray:
    """The bound on |int8 projection - float projection| per (row, column)
    for dynamic per-row quantization of x (rows: the last axis's vectors)
    and per-column quantization of the kernel (see the module doc)."""
    x = np.asarray(x, np.float64).reshape(-1, np.shape(kernel)[0])
    w = np.asarray(kernel, np.float64)
    ax = np.abs(x).max(1, keepdims=True)
    aw = np.abs(w).max(0, keepdims=True)
    k = w.shape[0]
    return (np.abs(x).sum(1, keepdims=True) * aw / 254.0 + np.abs(w).sum(0, keepdims=True) * ax
            / 254.0 + k * ax * aw / (4 * 127.0 * 127.0))


def _register():
    from ..layers.recurrent import _RNN

    register_quantizer(_RNN, quantize_recurrent)


_register()
