"""Reshaping layers (Keras 3's names, arguments and defaults; channels_last):
ZeroPadding1D/2D, Cropping1D/2D, UpSampling1D/2D (nearest, bilinear),
Permute, RepeatVector, and the spatial dropouts SpatialDropout1D/2D.

Padding and cropping are one C op (``pad2d``, a negative amount crops),
resizing another (``resize2d``), permutation a third (``permute``); each
has its backward, so models built from them train on the compiled plan.

>>> import numpy as np, maas
>>> x = np.ones((1, 2, 2, 1), np.float32)
>>> maas.layers.ZeroPadding2D(1)(x).shape
(1, 4, 4, 1)
>>> maas.layers.UpSampling2D(2, interpolation="bilinear")(x).shape
(1, 4, 4, 1)
"""
from __future__ import annotations

import numpy as np

from .. import _core
from .. import ops
from ..tensor import Tensor
from .base import Layer
from .core import Dropout, _fmt


def _data_format(df, cls):
    if df not in (None, "channels_last"):
        raise ValueError(f"{cls}: maas supports data_format='channels_last' only, received "
                         f"data_format={df!r}")
    return "channels_last"


def _nonneg_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0


def _pairs(value, n, name, cls):
    """((before, after),) * n from an int, n ints, or n pairs (Keras's forms)."""
    try:
        if _nonneg_int(value):
            return ((int(value), int(value)),) * n
        value = tuple(value)
        if n == 1 and len(value) == 2 and all(_nonneg_int(v) for v in value):
            return ((int(value[0]), int(value[1])),)
        if len(value) == n and all(_nonneg_int(v) for v in value):
            return tuple((int(v), int(v)) for v in value)
        if len(value) == n and all(len(p) == 2 and all(_nonneg_int(v) for v in p) for p in value):
            return tuple((int(p[0]), int(p[1])) for p in value)
    except TypeError:
        pass
    forms = "an int, a tuple of 2 ints" if n == 1 else \
        "an int, a tuple of 2 ints, or a tuple of 2 tuples of 2 ints"
    raise ValueError(f"{cls}: {name} should be {forms} (all >= 0), received {name}={value!r}")


def _rank_check(layer, x, rank):
    shape = tuple(x.shape) if not isinstance(x, tuple) else x
    if len(shape) != rank:
        raise ValueError(f"Input 0 of layer \"{layer.name}\" is incompatible with the layer: "
                         f"expected ndim={rank}, found ndim={len(shape)}. Full shape received: "
                         f"{_fmt(shape)}")
    return shape


def _as4d(x):
    """(N, L, C) -> a (N, 1, L, C) view."""
    n, steps, c = x.shape
    return ops.reshape(x, (n, 1, steps, c))


def _from4d(y):
    return ops.reshape(y, (y.shape[0], y.shape[2], y.shape[3]))


class _PadCrop(Layer):
    _rank = 2
    _sign = 1     # +1 pads, -1 crops

    def _amounts(self):
        raise NotImplementedError

    def _check_input(self, x):
        self.compute_output_shape(tuple(x.shape))

    def compute_output_shape(self, input_shape):
        shape = _rank_check(self, tuple(input_shape), self._rank + 2)
        out = list(shape)
        for d, (b, e) in enumerate(self._amounts()):
            n = shape[1 + d]
            if n is None:
                continue
            out[1 + d] = n + self._sign * (b + e)
            if out[1 + d] <= 0 and self._sign < 0:
                raise ValueError(
                    f"{type(self).__name__} \"{self.name}\": cropping {self._amounts()[d]} on "
                    f"axis {1 + d} of input shape {_fmt(shape)} leaves nothing (the axis has "
                    f"{n} entries); crop less")
        return tuple(out)

    def call(self, inputs):
        p = [(self._sign * b, self._sign * e) for b, e in self._amounts()]
        if self._rank == 2:
            return _core.op(_core.OP_PAD2D, [inputs], p[0][0], p[0][1], p[1][0], p[1][1])
        return _from4d(_core.op(_core.OP_PAD2D, [_as4d(inputs)], 0, 0, p[0][0], p[0][1]))


class ZeroPadding2D(_PadCrop):
    """Adds rows and columns of zeros: ``padding`` is an int, (rows, cols),
    or ((top, bottom), (left, right)).

    >>> maas.layers.ZeroPadding2D(((1, 0), (2, 3)))(np.ones((1, 2, 2, 1))).shape
    (1, 3, 7, 1)
    """

    def __init__(self, padding=(1, 1), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.padding = _pairs(padding, 2, "padding", "ZeroPadding2D")
        self.data_format = _data_format(data_format, "ZeroPadding2D")
        self.built = True

    def _amounts(self):
        return self.padding

    def get_config(self):
        return {**super().get_config(), "padding": [list(p) for p in self.padding],
                "data_format": self.data_format}


class ZeroPadding1D(_PadCrop):
    """Adds zero steps at the start and end of (batch, steps, features).

    >>> maas.layers.ZeroPadding1D((1, 2))(np.ones((2, 3, 4))).shape
    (2, 6, 4)
    """

    _rank = 1

    def __init__(self, padding=1, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.padding = _pairs(padding, 1, "padding", "ZeroPadding1D")[0]
        self.data_format = _data_format(data_format, "ZeroPadding1D")
        self.built = True

    def _amounts(self):
        return (self.padding,)

    def get_config(self):
        return {**super().get_config(), "padding": list(self.padding),
                "data_format": self.data_format}


class Cropping2D(_PadCrop):
    """Removes rows and columns at the borders: ``cropping`` is an int,
    (rows, cols), or ((top, bottom), (left, right)).

    >>> maas.layers.Cropping2D(((1, 0), (0, 2)))(np.ones((1, 4, 5, 1))).shape
    (1, 3, 3, 1)
    """

    _sign = -1

    def __init__(self, cropping=((0, 0), (0, 0)), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.cropping = _pairs(cropping, 2, "cropping", "Cropping2D")
        self.data_format = _data_format(data_format, "Cropping2D")
        self.built = True

    def _amounts(self):
        return self.cropping

    def get_config(self):
        return {**super().get_config(), "cropping": [list(p) for p in self.cropping],
                "data_format": self.data_format}


class Cropping1D(_PadCrop):
    """Removes steps at the start and end of (batch, steps, features).

    >>> maas.layers.Cropping1D((1, 1))(np.ones((2, 5, 3))).shape
    (2, 3, 3)
    """

    _rank, _sign = 1, -1

    def __init__(self, cropping=(1, 1), **kwargs):
        super().__init__(**kwargs)
        self.cropping = _pairs(cropping, 1, "cropping", "Cropping1D")[0]
        self.built = True

    def _amounts(self):
        return (self.cropping,)

    def get_config(self):
        return {**super().get_config(), "cropping": list(self.cropping)}


class UpSampling2D(Layer):
    """Repeats rows and columns ``size`` times (``interpolation="nearest"``)
    or resizes bilinearly at half-pixel centres (``"bilinear"``, as Keras's
    ``ops.image.resize`` and PyTorch's ``align_corners=False``).

    >>> np.asarray(maas.layers.UpSampling2D((1, 2))(np.array([[[[1.0], [2.0]]]])))[0, 0, :, 0]
    array([1., 1., 2., 2.], dtype=float32)
    """

    def __init__(self, size=(2, 2), data_format=None, interpolation="nearest", **kwargs):
        super().__init__(**kwargs)
        if _nonneg_int(size):
            size = (int(size), int(size))
        size = tuple(size) if isinstance(size, (list, tuple)) else ()
        if len(size) != 2 or not all(_nonneg_int(s) and s > 0 for s in size):
            raise ValueError(f"UpSampling2D: size must be a positive integer or a tuple of 2 "
                             f"positive integers, received size={size!r}")
        if interpolation not in ("nearest", "bilinear"):
            raise ValueError(f"UpSampling2D: interpolation must be 'nearest' or 'bilinear' (the "
                             f"ones maas implements), received interpolation={interpolation!r}")
        self.size = (int(size[0]), int(size[1]))
        self.data_format = _data_format(data_format, "UpSampling2D")
        self.interpolation = interpolation
        self.built = True

    def _check_input(self, x):
        _rank_check(self, tuple(x.shape), 4)

    def compute_output_shape(self, input_shape):
        s = _rank_check(self, tuple(input_shape), 4)
        return (s[0], None if s[1] is None else s[1] * self.size[0],
                None if s[2] is None else s[2] * self.size[1], s[3])

    def call(self, inputs):
        _, h, w, _ = inputs.shape
        return _core.op(_core.OP_RESIZE2D, [inputs], h * self.size[0], w * self.size[1],
                        int(self.interpolation == "bilinear"))

    def get_config(self):
        return {**super().get_config(), "size": list(self.size), "data_format": self.data_format,
                "interpolation": self.interpolation}


class UpSampling1D(Layer):
    """Repeats each step ``size`` times: (batch, steps, features) ->
    (batch, steps * size, features).

    >>> maas.layers.UpSampling1D(3)(np.ones((2, 4, 5))).shape
    (2, 12, 5)
    """

    def __init__(self, size=2, **kwargs):
        super().__init__(**kwargs)
        if not (_nonneg_int(size) and size > 0):
            raise ValueError(f"UpSampling1D: size must be a positive integer, received size={size!r}")
        self.size = int(size)
        self.built = True

    def _check_input(self, x):
        _rank_check(self, tuple(x.shape), 3)

    def compute_output_shape(self, input_shape):
        s = _rank_check(self, tuple(input_shape), 3)
        return (s[0], None if s[1] is None else s[1] * self.size, s[2])

    def call(self, inputs):
        y = _core.op(_core.OP_RESIZE2D, [_as4d(inputs)], 1, inputs.shape[1] * self.size, 0)
        return _from4d(y)

    def get_config(self):
        return {**super().get_config(), "size": self.size}


class Permute(Layer):
    """Permutes the non-batch axes: ``dims`` is a permutation of 1..rank-1
    (Keras's convention, the batch axis stays first).

    >>> maas.layers.Permute((2, 1))(np.ones((4, 10, 64))).shape
    (4, 64, 10)
    """

    def __init__(self, dims, **kwargs):
        super().__init__(**kwargs)
        try:
            dims = tuple(int(d) for d in dims)
        except (TypeError, ValueError):
            raise ValueError(f"Permute: dims must be a tuple of ints, received dims={dims!r}") from None
        if sorted(dims) != list(range(1, len(dims) + 1)):
            raise ValueError(f"Invalid permutation argument `dims` for Permute Layer. The set of "
                             f"indices in `dims` must be consecutive and start from 1. Received "
                             f"dims={dims}")
        self.dims = dims
        self.built = True

    def _check_input(self, x):
        _rank_check(self, tuple(x.shape), len(self.dims) + 1)

    def compute_output_shape(self, input_shape):
        s = _rank_check(self, tuple(input_shape), len(self.dims) + 1)
        return (s[0],) + tuple(s[d] for d in self.dims)

    def call(self, inputs):
        return _core.op(_core.OP_PERMUTE, [inputs], (0,) + self.dims)

    def get_config(self):
        return {**super().get_config(), "dims": list(self.dims)}


class RepeatVector(Layer):
    """Repeats a (batch, features) input ``n`` times: (batch, n, features).

    >>> maas.layers.RepeatVector(3)(np.ones((2, 5))).shape
    (2, 3, 5)
    """

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        if not (_nonneg_int(n) and n > 0):
            raise ValueError(f"RepeatVector: n must be a positive integer, received n={n!r}")
        self.n = int(n)
        self._zeros = None
        self.built = True

    def _check_input(self, x):
        _rank_check(self, tuple(x.shape), 2)

    def compute_output_shape(self, input_shape):
        s = _rank_check(self, tuple(input_shape), 2)
        return (s[0], self.n, s[1])

    def call(self, inputs):
        n, f = inputs.shape
        if self._zeros is None:
            self._zeros = Tensor(np.zeros((1, self.n, 1), np.float32))
        # a broadcast add: its backward sums the n copies' gradients
        return ops.reshape(inputs, (n, 1, f)) + self._zeros

    def get_config(self):
        return {**super().get_config(), "n": self.n}


class SpatialDropout2D(Dropout):
    """Drops whole feature maps: one keep/drop draw per (sample, channel),
    shared by every row and column, in training only; seeded draws repeat.

    >>> sd = maas.layers.SpatialDropout2D(0.5, seed=1)
    >>> y = np.asarray(sd(np.ones((2, 3, 3, 4), np.float32), training=True))
    >>> bool((y == y[:, :1, :1, :]).all())   # the same mask over the image
    True
    """

    _rank = 2

    def __init__(self, rate, data_format=None, seed=None, **kwargs):
        kwargs.pop("noise_shape", None)
        super().__init__(rate, noise_shape=(None,) + (1,) * self._rank + (None,), seed=seed,
                         **kwargs)
        self.data_format = _data_format(data_format, type(self).__name__)

    def _check_input(self, x):
        _rank_check(self, tuple(x.shape), self._rank + 2)

    def get_config(self):
        config = super().get_config()
        config.pop("noise_shape", None)
        if self._rank == 2:
            config["data_format"] = self.data_format
        return config


class SpatialDropout1D(SpatialDropout2D):
    """Drops whole channels of (batch, steps, channels) inputs, one draw per
    (sample, channel), in training only.

    >>> maas.layers.SpatialDropout1D(0.5, seed=2)(np.ones((2, 5, 3)), training=True).shape
    (2, 5, 3)
    """

    _rank = 1

    def __init__(self, rate, seed=None, **kwargs):
        kwargs.pop("data_format", None)
        super().__init__(rate, seed=seed, **kwargs)
