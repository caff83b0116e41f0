"""Preprocessing layers (Keras 3's names, arguments and defaults;
channels_last): Rescaling, Normalization (with ``adapt()``), and image
augmentation that runs only in training: RandomFlip, RandomTranslation,
RandomRotation, RandomCrop.

The augmentations draw their random numbers with maas's counter-based
generator (the ``random`` op, keyed by the layer's seed and a count of its
calls, or by the global stream without a seed), and resample the images in
one C op (``transform2d``), so a compiled training plan draws anew on every
step exactly as the eager path does. Called with ``training=False`` (as
``predict`` does), they return their inputs (RandomCrop: a centre crop).

>>> import numpy as np, maas
>>> aug = maas.Sequential([maas.layers.RandomFlip("horizontal", seed=1),
...                        maas.layers.RandomRotation(0.1, seed=2)])
>>> x = np.random.default_rng(0).random((4, 8, 8, 3)).astype(np.float32)
>>> aug(x, training=True).shape
(4, 8, 8, 3)
>>> bool((np.asarray(aug(x)) == x).all())     # inference: unchanged
True
"""
from __future__ import annotations

import math

import numpy as np

from .. import _core
from .. import random as _random
from ..tensor import Tensor
from .base import Layer
from .core import _fmt

_FILL = {"constant": 0, "reflect": 1, "wrap": 2, "nearest": 3, "mirror": 4}
_INTERP = {"nearest": 0, "bilinear": 1}


class Rescaling(Layer):
    """``inputs * scale + offset`` (``scale`` and ``offset`` numbers, or
    per-channel lists).

    >>> maas.layers.Rescaling(1 / 255)(np.full((1, 2), 255.0)).numpy()
    array([[1., 1.]], dtype=float32)
    """

    supports_masking = True   # Keras 3: the input's mask passes through

    def __init__(self, scale, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.offset = scale, offset
        self._s = Tensor(np.asarray(scale, np.float32))
        self._o = Tensor(np.asarray(offset, np.float32))
        self.built = True

    def call(self, inputs):
        return inputs * self._s + self._o

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        as_json = (lambda v: np.asarray(v).tolist() if not isinstance(v, (int, float)) else v)
        return {**super().get_config(), "scale": as_json(self.scale), "offset": as_json(self.offset)}


class Normalization(Layer):
    """``(inputs - mean) / sqrt(variance)`` per feature (``axis``, the last
    by default; ``axis=None`` one mean and variance for everything), with
    the statistics given (``mean=``, ``variance=``) or learned by
    :meth:`adapt`, which stores them as the non-trainable weights ``mean``
    and ``variance`` (saved with the model). ``invert=True`` undoes the
    normalization.

    >>> norm = maas.layers.Normalization()
    >>> norm.adapt(np.array([[0.0, 10.0], [2.0, 30.0]], np.float32))
    >>> np.asarray(norm(np.array([[1.0, 20.0]], np.float32)))
    array([[0., 0.]], dtype=float32)
    """

    supports_masking = True   # Keras 3: the input's mask passes through

    def __init__(self, axis=-1, mean=None, variance=None, invert=False, **kwargs):
        super().__init__(**kwargs)
        if axis is None:
            axis = ()
        elif isinstance(axis, (int, np.integer)) and not isinstance(axis, bool):
            axis = (int(axis),)
        else:
            axis = tuple(int(a) for a in axis)
        self.axis = axis
        if (mean is None) != (variance is None):
            raise ValueError(f"Normalization: when setting values directly, both `mean` and "
                             f"`variance` must be set. Received: mean={mean!r} and "
                             f"variance={variance!r}")
        self.input_mean, self.input_variance = mean, variance
        self.invert = bool(invert)
        self.mean = self.variance = None
        self._const = None

    def _keep(self, ndim):
        keep = []
        for a in self.axis:
            if not -ndim <= a < ndim:
                raise ValueError(f"Normalization {self.name!r}: axis {a} is out of bounds for "
                                 f"inputs of rank {ndim}, received axis={self.axis}")
            keep.append(a % ndim)
        if 0 in keep and ndim > 1:
            raise ValueError(f"Normalization {self.name!r}: the batch axis 0 cannot be a "
                             f"feature axis, received axis={self.axis}")
        return sorted(set(keep))

    def build(self, input_shape):
        shape = tuple(input_shape)
        self._ndim = len(shape)
        self._kept = self._keep(len(shape))
        for a in self._kept:
            if shape[a] is None:
                raise ValueError(f"Normalization {self.name!r}: axis {a} of input shape "
                                 f"{_fmt(shape)} must be known")
        self._wshape = tuple(int(shape[a]) for a in self._kept)
        self._bshape = tuple(int(shape[a]) if a in self._kept else 1 for a in range(len(shape)))
        if self.input_mean is None:
            self.mean = self.add_weight(shape=self._wshape, initializer="zeros", trainable=False,
                                        name="mean")
            self.variance = self.add_weight(shape=self._wshape, initializer="ones",
                                            trainable=False, name="variance")
        else:
            m = np.broadcast_to(np.asarray(self.input_mean, np.float32), self._wshape)
            v = np.broadcast_to(np.asarray(self.input_variance, np.float32), self._wshape)
            self._const = (Tensor(np.ascontiguousarray(m).reshape(self._bshape)),
                           Tensor(np.ascontiguousarray(v).reshape(self._bshape)))
        self.built = True

    def adapt(self, data, batch_size=None, steps=None) -> None:
        """Computes the mean and (biased) variance of ``data`` (an array, or
        an iterable of batches, or of (x, y) pairs) over every axis but the
        feature axes, in float64, and stores them."""
        batches = [data] if isinstance(data, (np.ndarray, Tensor)) else data
        count, mean, m2 = 0, None, None
        for k, batch in enumerate(batches):
            if steps is not None and k >= steps:
                break
            if isinstance(batch, tuple) and len(batch) in (2, 3):
                batch = batch[0]   # (x, y) or (x, y, sample_weight) from a dataset
            x = np.asarray(batch, np.float64)
            if not self.built:
                self.build((None,) + x.shape[1:])
            if self.input_mean is not None:
                raise ValueError(f"Normalization {self.name!r}: adapt() cannot be called when the "
                                 "mean and variance were given to the constructor")
            if x.ndim != self._ndim:
                raise ValueError(f"Normalization {self.name!r}: adapt() data of shape {x.shape} "
                                 f"does not have the rank {self._ndim} the layer was built for")
            red = tuple(a for a in range(x.ndim) if a not in self._kept)
            n = int(np.prod([x.shape[a] for a in red])) if red else 1
            bm = x.mean(axis=red) if red else x
            bv = x.var(axis=red) if red else np.zeros_like(x)
            if mean is None:
                count, mean, m2 = n, bm, bv * n
            else:   # Chan's parallel merge of (count, mean, M2)
                delta = bm - mean
                tot = count + n
                mean = mean + delta * (n / tot)
                m2 = m2 + bv * n + delta ** 2 * (count * n / tot)
                count = tot
        if mean is None:
            raise ValueError(f"Normalization {self.name!r}: adapt() received no data")
        self.mean.assign(np.asarray(mean, np.float32).reshape(self._wshape))
        self.variance.assign(np.asarray(m2 / count, np.float32).reshape(self._wshape))

    def _stats(self):
        if self._const is not None:
            return self._const
        from .. import ops
        return ops.reshape(self.mean, self._bshape), ops.reshape(self.variance, self._bshape)

    def call(self, inputs):
        from .. import ops
        mean, var = self._stats()
        std = ops.maximum(ops.sqrt(var), 1e-7)   # Keras's backend.epsilon()
        if self.invert:
            return mean + inputs * std
        return (inputs - mean) / std

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        as_json = (lambda v: None if v is None else np.asarray(v).tolist())
        axis = self.axis[0] if len(self.axis) == 1 else (None if not self.axis else list(self.axis))
        return {**super().get_config(), "axis": axis, "mean": as_json(self.input_mean),
                "variance": as_json(self.input_variance), "invert": self.invert}


# ------------------------------------------------------------ augmentation


def _factor(value, name, cls, bound=1.0):
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        lo, hi = -abs(float(value)), abs(float(value))
    else:
        try:
            lo, hi = (float(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(f"{cls}: {name} must be a float or a tuple of 2 floats, received "
                             f"{name}={value!r}") from None
    if lo > hi or (bound is not None and (abs(lo) > bound or abs(hi) > bound)):
        raise ValueError(f"{cls}: {name} must be in [-{bound}, {bound}] with lower <= upper, "
                         f"received {name}={value!r}")
    return lo, hi


def _choice(value, options, name, cls):
    if value not in options:
        raise ValueError(f"{cls}: unknown {name} {value!r}; expected one of {sorted(options)}")
    return value


class _Augment(Layer):
    """Shared: seeded draws through the random op, one transform2d call."""

    def __init__(self, seed=None, data_format=None, **kwargs):
        super().__init__(**kwargs)
        if data_format not in (None, "channels_last"):
            raise ValueError(f"{type(self).__name__}: maas supports data_format='channels_last' "
                             f"only, received data_format={data_format!r}")
        self.seed = seed
        self.data_format = "channels_last"
        self._calls = 0
        self.built = True

    def _next_key(self):
        self._calls += 1
        return int(self.seed), self._calls

    def _uniform(self, shape):
        """Uniform [0, 1) values of `shape`, drawn anew on every call (and on
        every replay of a plan)."""
        provider = _random.next_stream if self.seed is None else self._next_key
        s, stream = _random.draw_key(provider)
        return _core.op(_core.OP_RANDOM, (), s, stream, 0, 0.0, 1.0, tuple(shape))

    def _check_input(self, x):
        shape = tuple(x.shape)
        if len(shape) not in (3, 4):
            raise ValueError(f"Input 0 of layer \"{self.name}\" is incompatible with the layer: "
                             f"expected images of ndim=4 (batch, height, width, channels) or 3 "
                             f"(one image), found ndim={len(shape)}. Full shape received: "
                             f"{_fmt(shape)}")

    def call(self, inputs, training=True):
        if inputs.ndim == 3:   # one image, as Keras accepts
            from .. import ops
            y = self._call4(ops.reshape(inputs, (1,) + tuple(inputs.shape)), training)
            return ops.reshape(y, tuple(y.shape[1:]))
        return self._call4(inputs, training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def _transform(self, x, kind, params, fill="reflect", interp="bilinear", fill_value=0.0,
                   flags=0, out=None):
        oh, ow = out or (x.shape[1], x.shape[2])
        return _core.op(_core.OP_TRANSFORM2D, [x, params], kind, oh, ow, _INTERP[interp],
                        _FILL[fill], float(fill_value), flags)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed, "data_format": self.data_format}


class RandomFlip(_Augment):
    """Flips each image left-right and/or up-down with probability 1/2 each
    (``mode``: "horizontal", "vertical" or "horizontal_and_vertical"), in
    training only.

    >>> flip = maas.layers.RandomFlip("horizontal", seed=0)
    >>> x = np.arange(4, dtype=np.float32).reshape(1, 1, 4, 1)
    >>> sorted({tuple(np.asarray(flip(x, training=True)).ravel().tolist()) for _ in range(20)})
    [(0.0, 1.0, 2.0, 3.0), (3.0, 2.0, 1.0, 0.0)]
    """

    def __init__(self, mode="horizontal_and_vertical", seed=None, data_format=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        self.mode = _choice(mode, {"horizontal", "vertical", "horizontal_and_vertical"}, "mode",
                            "RandomFlip")

    def _call4(self, inputs, training):
        if not training:
            return inputs
        flags = {"horizontal": 1, "vertical": 2, "horizontal_and_vertical": 3}[self.mode]
        u = self._uniform((inputs.shape[0], 2))
        return self._transform(inputs, 3, u, flags=flags)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


class RandomTranslation(_Augment):
    """Shifts each image by a random fraction of its height and width:
    ``height_factor`` / ``width_factor`` a float f (a shift in [-f, f]) or
    (lower, upper); positive values move the content down / right. The
    uncovered area follows ``fill_mode`` ("reflect", "wrap", "nearest",
    "constant" with ``fill_value``, "mirror").

    >>> maas.layers.RandomTranslation(0.2, 0.2, seed=3)(np.ones((2, 5, 5, 1)), training=True).shape
    (2, 5, 5, 1)
    """

    def __init__(self, height_factor, width_factor, fill_mode="reflect", interpolation="bilinear",
                 seed=None, fill_value=0.0, data_format=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        as_cfg = (lambda v: list(v) if isinstance(v, (list, tuple)) else v)   # JSON's form
        self.height_factor = as_cfg(height_factor)
        self.width_factor = as_cfg(width_factor)
        self._h = _factor(height_factor, "height_factor", "RandomTranslation")
        self._w = _factor(width_factor, "width_factor", "RandomTranslation")
        self.fill_mode = _choice(fill_mode, _FILL, "fill_mode", "RandomTranslation")
        self.interpolation = _choice(interpolation, _INTERP, "interpolation", "RandomTranslation")
        self.fill_value = float(fill_value)
        self._consts = {}

    def _call4(self, inputs, training):
        if not training:
            return inputs
        n, h, w, _ = inputs.shape
        key = (h, w)
        if key not in self._consts:
            span = np.array([[(self._w[1] - self._w[0]) * w, (self._h[1] - self._h[0]) * h]], np.float32)
            low = np.array([[self._w[0] * w, self._h[0] * h]], np.float32)
            self._consts[key] = (Tensor(span), Tensor(low))
        span, low = self._consts[key]
        shift = self._uniform((n, 2)) * span + low      # (dx, dy) in pixels
        return self._transform(inputs, 2, shift, self.fill_mode, self.interpolation,
                               self.fill_value)

    def get_config(self):
        return {**super().get_config(), "height_factor": self.height_factor,
                "width_factor": self.width_factor, "fill_mode": self.fill_mode,
                "interpolation": self.interpolation, "fill_value": self.fill_value}


class RandomRotation(_Augment):
    """Rotates each image about its centre by a random angle: ``factor`` a
    float f (an angle in [-f, f] * 2 pi) or (lower, upper); positive values
    rotate counter-clockwise. Fill and interpolation as RandomTranslation.

    >>> maas.layers.RandomRotation(0.25, seed=4)(np.ones((2, 6, 6, 3)), training=True).shape
    (2, 6, 6, 3)
    """

    def __init__(self, factor, fill_mode="reflect", interpolation="bilinear", seed=None,
                 fill_value=0.0, value_range=(0, 255), data_format=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        self.factor = list(factor) if isinstance(factor, (list, tuple)) else factor
        self._f = _factor(factor, "factor", "RandomRotation", bound=None)
        self.fill_mode = _choice(fill_mode, _FILL, "fill_mode", "RandomRotation")
        self.interpolation = _choice(interpolation, _INTERP, "interpolation", "RandomRotation")
        self.fill_value = float(fill_value)
        self.value_range = tuple(value_range)
        two_pi = 2.0 * math.pi
        self._span = Tensor(np.full((1, 1), (self._f[1] - self._f[0]) * two_pi, np.float32))
        self._low = Tensor(np.full((1, 1), self._f[0] * two_pi, np.float32))

    def _call4(self, inputs, training):
        if not training:
            return inputs
        angle = self._uniform((inputs.shape[0], 1)) * self._span + self._low
        return self._transform(inputs, 1, angle, self.fill_mode, self.interpolation,
                               self.fill_value)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "fill_mode": self.fill_mode,
                "interpolation": self.interpolation, "fill_value": self.fill_value,
                "value_range": list(self.value_range)}


class RandomCrop(_Augment):
    """Crops a random ``height`` x ``width`` window (one offset per batch,
    as Keras) in training; at inference (or when the input is smaller than
    the window) the centre window of the target aspect ratio, resized
    bilinearly to (height, width) when needed.

    >>> crop = maas.layers.RandomCrop(4, 4, seed=5)
    >>> crop(np.ones((2, 6, 7, 3)), training=True).shape, crop(np.ones((2, 6, 7, 3))).shape
    ((2, 4, 4, 3), (2, 4, 4, 3))
    """

    def __init__(self, height, width, seed=None, data_format=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        for name, v in (("height", height), ("width", width)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"RandomCrop: {name} must be a positive integer, received "
                                 f"{name}={v!r}")
        self.height, self.width = int(height), int(width)

    def compute_output_shape(self, input_shape):
        if len(input_shape) == 3:
            return (self.height, self.width, input_shape[-1])
        return (input_shape[0], self.height, self.width, input_shape[-1])

    def _call4(self, inputs, training):
        n, h, w, _ = inputs.shape
        th, tw = self.height, self.width
        if training and h >= th and w >= tw:
            u = self._uniform((1, 2))
            return self._transform(inputs, 4, u, out=(th, tw))
        if h >= th and w >= tw:   # the centre crop
            top, left = (h - th) // 2, (w - tw) // 2
            return _core.op(_core.OP_PAD2D, [inputs], -top, -(h - th - top), -left,
                            -(w - tw - left))
        # smaller than the window: Keras's smart resize (centre crop of the
        # target aspect ratio, then a bilinear resize)
        ch = max(min(h, int(float(w * th) / tw)), 1)
        cw = max(min(w, int(float(h * tw) / th)), 1)
        top, left = int(float(h - ch) / 2), int(float(w - cw) / 2)
        x = inputs
        if (ch, cw) != (h, w):
            x = _core.op(_core.OP_PAD2D, [x], -top, -(h - ch - top), -left, -(w - cw - left))
        return _core.op(_core.OP_RESIZE2D, [x], th, tw, 1)

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width}
