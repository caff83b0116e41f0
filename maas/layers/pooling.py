"""Pooling layers (Keras 3's names, arguments and defaults; channels_last):
MaxPooling1D/2D, AveragePooling1D/2D, GlobalAveragePooling1D/2D,
GlobalMaxPooling1D/2D. The windowed ones are one C op each way (max pooling
saves its argmax for the backward); 1-D pooling is the 2-D op on a
(batch, 1, steps, channels) view.

>>> import numpy as np, maas
>>> x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
>>> np.asarray(maas.layers.MaxPooling2D()(x))[0, :, :, 0]
array([[ 5.,  7.],
       [13., 15.]], dtype=float32)
"""
from __future__ import annotations

import numpy as np

from .. import _core
from .. import ops
from .base import Layer
from .core import _fmt


def _tuple(value, n, name, cls, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value),) * n
    try:
        t = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        t = ()
    if len(t) != n or any(v <= 0 for v in t) or any(isinstance(v, bool) for v in value):
        raise ValueError(f"{cls}: {name} must be a positive integer or a tuple of {n} positive "
                         f"integers, received {name}={value!r}")
    return t


def _padding(padding, cls):
    p = str(padding).lower() if isinstance(padding, str) else padding
    if p not in ("valid", "same"):
        raise ValueError(f"{cls}: padding must be 'valid' or 'same', received padding={padding!r}")
    return p


def _data_format(df, cls):
    if df not in (None, "channels_last"):
        raise ValueError(f"{cls}: maas supports data_format='channels_last' only, received "
                         f"data_format={df!r}")
    return "channels_last"


def _out_len(n, k, s, padding):
    if n is None:
        return None
    if padding == "same":
        return (n + s - 1) // s
    return (n - k) // s + 1 if n >= k else 0


class _Pooling(Layer):
    _rank = 2
    _kind = 0

    def __init__(self, pool_size, strides=None, padding="valid", data_format=None, name=None,
                 **kwargs):
        super().__init__(name=name, **kwargs)
        cls = type(self).__name__
        self.pool_size = _tuple(pool_size, self._rank, "pool_size", cls)
        self.strides = _tuple(strides, self._rank, "strides", cls, allow_none=True) or self.pool_size
        self.padding = _padding(padding, cls)
        self.data_format = _data_format(data_format, cls)
        self.built = True

    def _spatial(self, shape):
        shape = tuple(shape)
        if len(shape) != self._rank + 2:
            raise ValueError(
                f"Input 0 of layer \"{self.name}\" is incompatible with the layer: expected "
                f"ndim={self._rank + 2} (batch, {'steps' if self._rank == 1 else 'rows, cols'}, "
                f"channels), found ndim={len(shape)}. Full shape received: {_fmt(shape)}")
        sp = shape[1:-1]
        if self.padding == "valid":
            for n, k in zip(sp, self.pool_size):
                if n is not None and n < k:
                    raise ValueError(
                        f"{type(self).__name__} \"{self.name}\": pool_size={self.pool_size} is "
                        f"larger than the input's spatial size {tuple(sp)} (input shape "
                        f"{_fmt(shape)}) with padding=\"valid\": use padding=\"same\" or a "
                        "smaller pool_size")
        return sp

    def _check_input(self, x):
        self._spatial(x.shape)

    def compute_output_shape(self, input_shape):
        sp = self._spatial(input_shape)
        out = tuple(_out_len(n, k, s, self.padding)
                    for n, k, s in zip(sp, self.pool_size, self.strides))
        return (input_shape[0],) + out + (input_shape[-1],)

    def call(self, inputs):
        same = int(self.padding == "same")
        if self._rank == 2:
            return _core.op(_core.OP_POOL2D, [inputs], self._kind, self.pool_size[0],
                            self.pool_size[1], self.strides[0], self.strides[1], same)
        n, steps, c = inputs.shape
        x4 = ops.reshape(inputs, (n, 1, steps, c))
        y = _core.op(_core.OP_POOL2D, [x4], self._kind, 1, self.pool_size[0], 1,
                     self.strides[0], same)
        return ops.reshape(y, (n, y.shape[2], c))

    def get_config(self):
        ps, st = self.pool_size, self.strides
        return {**super().get_config(), "pool_size": list(ps), "strides": list(st),
                "padding": self.padding, "data_format": self.data_format}


class MaxPooling2D(_Pooling):
    """The maximum of each ``pool_size`` window, moved by ``strides``
    (default: ``pool_size``); ``padding="same"`` keeps ``ceil(size /
    stride)`` outputs (padding never wins).

    >>> maas.layers.MaxPooling2D((3, 3), strides=2, padding="same")(np.ones((1, 7, 7, 2))).shape
    (1, 4, 4, 2)
    """

    _rank, _kind = 2, 0

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None,
                 name=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, name, **kwargs)


class AveragePooling2D(_Pooling):
    """The mean of each window; with ``padding="same"`` the positions outside
    the input are not counted (TensorFlow's and Keras's behaviour).

    >>> maas.layers.AveragePooling2D()(np.ones((1, 4, 4, 1))).shape
    (1, 2, 2, 1)
    """

    _rank, _kind = 2, 1

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None,
                 name=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, name, **kwargs)


class MaxPooling1D(_Pooling):
    """Max pooling over the steps of (batch, steps, features) inputs.

    >>> maas.layers.MaxPooling1D(2)(np.ones((2, 5, 3))).shape
    (2, 2, 3)
    """

    _rank, _kind = 1, 0

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, name=None,
                 **kwargs):
        super().__init__(pool_size, strides, padding, data_format, name, **kwargs)


class AveragePooling1D(_Pooling):
    """Average pooling over the steps of (batch, steps, features) inputs.

    >>> maas.layers.AveragePooling1D(2, padding="same")(np.ones((2, 5, 3))).shape
    (2, 3, 3)
    """

    _rank, _kind = 1, 1

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, name=None,
                 **kwargs):
        super().__init__(pool_size, strides, padding, data_format, name, **kwargs)


class _GlobalPooling(Layer):
    _rank = 2
    _max = False

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self.data_format = _data_format(data_format, type(self).__name__)
        self.keepdims = bool(keepdims)
        self.built = True

    def _check_input(self, x):
        shape = tuple(x.shape)
        if len(shape) != self._rank + 2:
            raise ValueError(
                f"Input 0 of layer \"{self.name}\" is incompatible with the layer: expected "
                f"ndim={self._rank + 2}, found ndim={len(shape)}. Full shape received: "
                f"{_fmt(shape)}")

    def call(self, inputs, mask=None):
        shape = tuple(inputs.shape)
        n, c = shape[0], shape[-1]
        flat = ops.reshape(inputs, (n, -1, c)) if self._rank != 1 else inputs
        if mask is not None and not self._max:
            # Keras's masked average over the valid steps (1-D)
            m = ops.reshape(ops.cast(mask, "float32"), (n, -1, 1))
            y = ops.sum(flat * m, axis=1) / ops.maximum(ops.sum(m, axis=1), 1e-12)
        else:
            y = ops.max(flat, axis=1) if self._max else ops.mean(flat, axis=1)
        if self.keepdims:
            y = ops.reshape(y, (n,) + (1,) * self._rank + (c,))
        return y

    def compute_output_shape(self, input_shape):
        if self.keepdims:
            return (input_shape[0],) + (1,) * self._rank + (input_shape[-1],)
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format, "keepdims": self.keepdims}


class GlobalAveragePooling2D(_GlobalPooling):
    """The mean over rows and columns: (batch, h, w, c) -> (batch, c), or
    (batch, 1, 1, c) with ``keepdims=True``.

    >>> maas.layers.GlobalAveragePooling2D(keepdims=True)(np.ones((2, 3, 3, 4))).shape
    (2, 1, 1, 4)
    """

    _rank, _max = 2, False


class GlobalMaxPooling2D(_GlobalPooling):
    """The maximum over rows and columns (the gradient goes to the first
    maximum).

    >>> maas.layers.GlobalMaxPooling2D()(np.ones((2, 3, 3, 4))).shape
    (2, 4)
    """

    _rank, _max = 2, True


class GlobalAveragePooling1D(_GlobalPooling):
    """The mean over the steps: (batch, steps, features) -> (batch,
    features); a mask (batch, steps) averages the unmasked steps only.

    >>> maas.layers.GlobalAveragePooling1D()(np.ones((2, 5, 3))).shape
    (2, 3)
    """

    _rank, _max = 1, False


class GlobalMaxPooling1D(_GlobalPooling):
    """The maximum over the steps.

    >>> maas.layers.GlobalMaxPooling1D(keepdims=True)(np.ones((2, 5, 3))).shape
    (2, 1, 3)
    """

    _rank, _max = 1, True


# Keras's aliases
MaxPool1D, MaxPool2D = MaxPooling1D, MaxPooling2D
AvgPool1D, AvgPool2D = AveragePooling1D, AveragePooling2D
GlobalAvgPool1D, GlobalAvgPool2D = GlobalAveragePooling1D, GlobalAveragePooling2D
GlobalMaxPool1D, GlobalMaxPool2D = GlobalMaxPooling1D, GlobalMaxPooling2D
