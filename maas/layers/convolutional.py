"""Conv1D, Conv2D, DepthwiseConv2D, SeparableConv2D, Conv2DTranspose.

Keras 3's names, arguments and defaults, ``data_format="channels_last"``
only (inputs ``(batch, height, width, channels)``; ``(batch, steps,
channels)`` for Conv1D). Kernels are stored as Keras stores them:
``(kernel_h, kernel_w, in_channels / groups, filters)`` (Conv2DTranspose:
``(kernel_h, kernel_w, filters, in_channels)``), so Keras weights load as
they are. Each layer is one C op (csrc/ops/conv.c), on the tape and in a
compiled plan.

>>> import maas, numpy as np
>>> layer = maas.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")
>>> layer(np.ones((2, 9, 9, 3), np.float32)).shape
(2, 5, 5, 8)
"""
from __future__ import annotations

import numpy as np

from .. import _core
from .. import activations as _activations
from .. import initializers as _initializers
from .. import ops
from .. import regularizers as _regularizers
from .base import Layer, unique_name
from .base import _ctx as _base_ctx

_PAD = {"valid": 0, "same": 1, "causal": 2}
# True: training convolutions keep the whole batch's im2col columns (up to
# 128 MB a layer, csrc/ops/conv.c CONV_KEEP_CAP) for a one-GEMM weight
# gradient without a second im2col. Off by default: on Zen 3 it measured no
# faster than the chunked, cache-resident columns (benchmarks/RESULTS.md).
KEEP_COLUMNS = False


def _fmt(shape):
    shape = tuple(shape)
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _tuple(name, value, n, allow_zero=False):
    """Keras's standardize_tuple: an int or n ints, each positive (or >= 0)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        value = (int(value),) * n
    try:
        value = tuple(value)
    except TypeError:
        value = None
    low = 0 if allow_zero else 1
    if (value is None or len(value) != n or any(
            isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < low
            for v in value)):
        raise ValueError(f"The `{name}` argument must be a tuple of {n} integers "
                         f"{'>= 0' if allow_zero else '> 0'} (or one integer), received {name}={value!r}")
    return tuple(int(v) for v in value)


def _no_constraint(layer_name, **constraints):
    for arg, value in constraints.items():
        if value is not None:
            raise NotImplementedError(
                f"{layer_name}: {arg}={value!r}: weight constraints are not supported by maas yet; "
                f"leave {arg}=None (apply the constraint after fit with layer.set_weights)")


def _data_format(layer_name, data_format):
    if data_format in (None, "channels_last"):
        return "channels_last"
    if data_format == "channels_first":
        raise ValueError(f"{layer_name}: data_format=\"channels_first\" is not supported: maas "
                         f"runs NHWC only. Give inputs as (batch, height, width, channels) "
                         f"(np.transpose(x, (0, 2, 3, 1))) and use data_format=\"channels_last\"")
    raise ValueError(f"{layer_name}: data_format must be \"channels_last\" or \"channels_first\", "
                     f"received data_format={data_format!r}")


def _conv_out(length, k, s, d, padding):
    if length is None:
        return None
    keff = (k - 1) * d + 1
    if padding == "same":
        return -(-length // s)
    if padding == "causal":
        return (length - 1) // s + 1
    return (length - keff) // s + 1 if length >= keff else -1


def _deconv_out(length, k, s, d, padding, output_padding):
    """Keras's deconv_output_length."""
    if length is None:
        return None
    keff = (k - 1) * d + 1
    if output_padding is None:
        return length * s + max(keff - s, 0) if padding == "valid" else length * s
    pad = keff // 2 if padding == "same" else 0
    return (length - 1) * s + keff - 2 * pad + output_padding


def _deconv_pad_before(k, s, d, padding, output_padding):
    """The rows cropped before the output (PyTorch's ConvTranspose2d padding)
    that give Keras's placement (its JAX backend's padding arguments)."""
    keff = (k - 1) * d + 1
    if padding == "valid":
        return 0
    pad_len = s + keff - 2 if output_padding is None else keff + keff % 2 - 2 + output_padding
    left = min(pad_len // 2 + pad_len % 2, keff - 1)
    return keff - 1 - left


class _BaseConv(Layer):
    """What the convolution layers share: argument checks, the input check,
    weights, get_config."""

    rank = 2
    _keras_name = "conv"

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None,
                 dilation_rate=1, groups=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, name=None, **kwargs):
        quantization_config = kwargs.pop("quantization_config", None)  # maas.quantization.conv
        super().__init__(name=name or unique_name(self._keras_name),
                         activity_regularizer=activity_regularizer, **kwargs)
        self.quantization_config = quantization_config
        cls = type(self).__name__
        n = self.rank
        if filters is not None:
            if isinstance(filters, (bool, np.bool_)) or not isinstance(filters, (int, np.integer)) or filters <= 0:
                raise ValueError(f"Invalid value for argument `filters`. Expected a strictly "
                                 f"positive value. Received filters={filters!r}.")
            filters = int(filters)
        self.filters = filters
        self.kernel_size = _tuple("kernel_size", kernel_size, n)
        self.strides = _tuple("strides", strides, n)
        self.dilation_rate = _tuple("dilation_rate", dilation_rate, n)
        if not isinstance(padding, str) or padding.lower() not in (
                ("valid", "same", "causal") if n == 1 and cls == "Conv1D" else ("valid", "same")):
            allowed = "'valid', 'same' or 'causal'" if cls == "Conv1D" else "'valid' or 'same'"
            raise ValueError(f"{cls}: padding must be {allowed}, received padding={padding!r}")
        self.padding = padding.lower()
        self.data_format = _data_format(cls, data_format)
        if isinstance(groups, (bool, np.bool_)) or not isinstance(groups, (int, np.integer)) or groups <= 0:
            raise ValueError(f"{cls}: groups must be a positive integer, received groups={groups!r}")
        self.groups = int(groups)
        if filters is not None and filters % self.groups:
            raise ValueError(f"The number of filters must be evenly divisible by the number of "
                             f"groups. Received: groups={self.groups}, filters={filters}.")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(f"{cls}: `strides > 1` is not compatible with `dilation_rate > 1`. "
                             f"Received strides={self.strides} and "
                             f"dilation_rate={self.dilation_rate}")
        self.activation = _activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializers.get(kernel_initializer)
        self.bias_initializer = _initializers.get(bias_initializer)
        self.kernel_regularizer = _regularizers.get(kernel_regularizer)
        self.bias_regularizer = _regularizers.get(bias_regularizer)
        _no_constraint(cls, kernel_constraint=kernel_constraint, bias_constraint=bias_constraint)
        self.kernel_constraint = self.bias_constraint = None
        self.kernel = self.bias = None

    # -- checks

    def _channels(self, input_shape):
        """Checks rank, channels and sizes; returns the channel count."""
        shape = tuple(input_shape)
        want = self.rank + 2
        if len(shape) != want:
            raise ValueError(f"Input 0 of layer \"{self.name}\" is incompatible with the layer: "
                             f"expected ndim={want}, found ndim={len(shape)}. Full shape "
                             f"received: {_fmt(shape)}")
        ch = shape[-1]
        if ch is None:
            raise ValueError(f"{type(self).__name__} layer \"{self.name}\": the channel dimension "
                             f"of the inputs must be known, received input_shape={_fmt(shape)}")
        if self._groups_of(ch) and ch % self._groups_of(ch):
            raise ValueError(f"{type(self).__name__} layer \"{self.name}\": the number of input "
                             f"channels must be evenly divisible by the number of groups. Received "
                             f"groups={self.groups}, but the input has {ch} channels (full input "
                             f"shape is {_fmt(shape)})")
        if self.padding == "valid" and not self._transposed:
            for i, (length, k, d) in enumerate(zip(shape[1:-1], self.kernel_size, self.dilation_rate)):
                if length is not None and length < (k - 1) * d + 1:
                    raise ValueError(
                        f"{type(self).__name__} layer \"{self.name}\": computed output size would "
                        f"be negative: the kernel of size {self.kernel_size} (dilation_rate="
                        f"{self.dilation_rate}) is larger than the input of shape {_fmt(shape)} "
                        f"with padding=\"valid\" (spatial axis {i + 1} has {length}). Use "
                        f"padding=\"same\" or a smaller kernel_size")
        return int(ch)

    _transposed = False

    def _groups_of(self, channels):
        return self.groups

    def _check_input(self, x):
        if self.built:
            self._channels(x.shape)
            if x.shape[-1] != self._in_channels:
                raise ValueError(f"Input 0 of layer \"{self.name}\" is incompatible with the layer: "
                                 f"expected axis -1 of input shape to have value "
                                 f"{self._in_channels}, but received input with shape {_fmt(x.shape)}")

    def _act(self, out):
        act = self.activation
        return out if act is _activations.linear else act(out)

    def _bias_weight(self, n):
        if self.use_bias:
            self.bias = self.add_weight(shape=(n,), initializer=self.bias_initializer,
                                        regularizer=self.bias_regularizer, name="bias")

    def _op(self, x, kernel, bias, strides, dilation, groups, padding=None):
        ins = [x, kernel] if bias is None else [x, kernel, bias]
        # training with KEEP_COLUMNS: the op keeps the whole batch's columns
        keep = int(KEEP_COLUMNS and bool(getattr(_base_ctx, "training", None)) and self.trainable)
        return _core.op(_core.OP_CONV2D, ins, strides[0], strides[1], dilation[0], dilation[1],
                        _PAD[padding or self.padding], groups, keep)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding, "data_format": self.data_format,
                "dilation_rate": self.dilation_rate, "groups": self.groups,
                "activation": _activations.serialize(self.activation), "use_bias": self.use_bias,
                "kernel_initializer": _initializers.serialize(self.kernel_initializer),
                "bias_initializer": _initializers.serialize(self.bias_initializer),
                "kernel_regularizer": _regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": _regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": _regularizers.serialize(self.activity_regularizer),
                "kernel_constraint": None, "bias_constraint": None,
                **({"quantization_config": dict(self.quantization_config)}
                   if self.quantization_config is not None else {})}

    def quantize(self, mode, type_check=True):
        """Quantizes the built layer to int8 in place (Conv1D/Conv2D; the
        others refuse saying why). See :mod:`maas.quantization.conv`."""
        _qconv().quantize_conv(self, mode)


def _qconv():
    from ..quantization import conv

    return conv


class Conv2D(_BaseConv):
    """2-D convolution over ``(batch, height, width, channels)`` inputs.

    ``kernel`` has shape ``(kernel_h, kernel_w, channels // groups, filters)``;
    ``padding="same"`` pads as TensorFlow does (the odd row or column at the
    bottom or right).

    >>> layer = maas.layers.Conv2D(4, (3, 3), padding="same")
    >>> layer(np.ones((1, 6, 6, 2), np.float32)).shape
    (1, 6, 6, 4)
    >>> layer.kernel.shape
    (3, 3, 2, 4)
    """

    rank = 2
    _keras_name = "conv2d"

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), groups=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(filters, kernel_size, strides, padding, data_format, dilation_rate, groups,
                         activation, use_bias, kernel_initializer, bias_initializer,
                         kernel_regularizer, bias_regularizer, activity_regularizer,
                         kernel_constraint, bias_constraint, **kwargs)

    def build(self, input_shape):
        ch = self._channels(input_shape)
        if self.quantization_config is not None:
            return _qconv().build_conv(self, ch)
        self._in_channels = ch
        self.kernel = self.add_weight(shape=self.kernel_size + (ch // self.groups, self.filters),
                                      initializer=self.kernel_initializer,
                                      regularizer=self.kernel_regularizer, name="kernel")
        self._bias_weight(self.filters)
        self.built = True

    def call(self, inputs):
        if self.quantization_config is not None:
            return self._act(_qconv().conv_call(self, inputs))
        return self._act(self._op(inputs, self.kernel, self.bias, self.strides, self.dilation_rate,
                                  self.groups))

    def compute_output_shape(self, input_shape):
        s = tuple(input_shape)
        spatial = tuple(_conv_out(n, k, st, d, self.padding) for n, k, st, d in
                        zip(s[1:-1], self.kernel_size, self.strides, self.dilation_rate))
        return (s[0],) + spatial + (self.filters,)


class Conv1D(Conv2D):
    """1-D convolution over ``(batch, steps, channels)`` inputs (the H = 1
    case of Conv2D's kernel); ``padding="causal"`` pads the start only.

    >>> layer = maas.layers.Conv1D(4, 3, padding="causal")
    >>> layer(np.ones((2, 10, 3), np.float32)).shape
    (2, 10, 4)
    """

    rank = 1
    _keras_name = "conv1d"

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None,
                 dilation_rate=1, groups=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(filters, kernel_size, strides, padding, data_format, dilation_rate, groups,
                         activation, use_bias, kernel_initializer, bias_initializer,
                         kernel_regularizer, bias_regularizer, activity_regularizer,
                         kernel_constraint, bias_constraint, **kwargs)

    def call(self, inputs):
        if self.quantization_config is not None:
            return self._act(_qconv().conv_call(self, inputs))
        n, w, c = inputs.shape
        k = self.kernel.shape
        x = ops.reshape(inputs, (n, 1, w, c))
        kern = ops.reshape(self.kernel, (1,) + tuple(k))
        out = self._op(x, kern, self.bias, (1, self.strides[0]), (1, self.dilation_rate[0]),
                       self.groups)
        return self._act(ops.reshape(out, (n, out.shape[2], self.filters)))


class DepthwiseConv2D(_BaseConv):
    """Depthwise 2-D convolution: each input channel convolved with its own
    ``depth_multiplier`` filters; ``depthwise_kernel`` has shape
    ``(kernel_h, kernel_w, channels, depth_multiplier)``; the output has
    ``channels * depth_multiplier`` channels (channel ``c * depth_multiplier
    + m``), as in Keras.

    >>> layer = maas.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")
    >>> layer(np.ones((1, 5, 5, 4), np.float32)).shape
    (1, 5, 5, 8)
    """

    _keras_name = "depthwise_conv2d"

    def __init__(self, kernel_size, strides=(1, 1), padding="valid", depth_multiplier=1,
                 data_format=None, dilation_rate=(1, 1), activation=None, use_bias=True,
                 depthwise_initializer="glorot_uniform", bias_initializer="zeros",
                 depthwise_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 depthwise_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(None, kernel_size, strides, padding, data_format, dilation_rate, 1,
                         activation, use_bias, depthwise_initializer, bias_initializer,
                         depthwise_regularizer, bias_regularizer, activity_regularizer,
                         depthwise_constraint, bias_constraint, **kwargs)
        if isinstance(depth_multiplier, (bool, np.bool_)) or not isinstance(
                depth_multiplier, (int, np.integer)) or depth_multiplier <= 0:
            raise ValueError(f"Invalid value for argument `depth_multiplier`. Expected a strictly "
                             f"positive value. Received depth_multiplier={depth_multiplier!r}.")
        self.depth_multiplier = int(depth_multiplier)
        self.depthwise_initializer = self.kernel_initializer
        self.depthwise_regularizer = self.kernel_regularizer
        self.depthwise_kernel = None

    def _groups_of(self, channels):
        return 0

    def build(self, input_shape):
        ch = self._channels(input_shape)
        self._in_channels = ch
        self.depthwise_kernel = self.add_weight(
            shape=self.kernel_size + (ch, self.depth_multiplier),
            initializer=self.depthwise_initializer, regularizer=self.depthwise_regularizer,
            name="kernel")
        self.kernel = self.depthwise_kernel  # Keras 3 names it both ways
        self._bias_weight(ch * self.depth_multiplier)
        self.built = True

    def _depthwise(self, x, bias):
        kh, kw, c, m = self.depthwise_kernel.shape
        kern = ops.reshape(self.depthwise_kernel, (kh, kw, 1, c * m))
        return self._op(x, kern, bias, self.strides, self.dilation_rate, c)

    def call(self, inputs):
        return self._act(self._depthwise(inputs, self.bias))

    def compute_output_shape(self, input_shape):
        s = tuple(input_shape)
        spatial = tuple(_conv_out(n, k, st, d, self.padding) for n, k, st, d in
                        zip(s[1:-1], self.kernel_size, self.strides, self.dilation_rate))
        return (s[0],) + spatial + (s[-1] * self.depth_multiplier,)

    def get_config(self):
        c = super().get_config()
        for k in ("filters", "groups", "kernel_initializer", "kernel_regularizer",
                  "kernel_constraint"):
            c.pop(k)
        c.update(depth_multiplier=self.depth_multiplier,
                 depthwise_initializer=_initializers.serialize(self.depthwise_initializer),
                 depthwise_regularizer=_regularizers.serialize(self.depthwise_regularizer),
                 depthwise_constraint=None)
        return c


class SeparableConv2D(DepthwiseConv2D):
    """A depthwise convolution followed by a pointwise (1x1) one:
    ``depthwise_kernel`` ``(kernel_h, kernel_w, channels, depth_multiplier)``,
    ``pointwise_kernel`` ``(1, 1, channels * depth_multiplier, filters)``,
    the bias and activation after the pointwise step, as in Keras.

    >>> layer = maas.layers.SeparableConv2D(6, 3, padding="same")
    >>> layer(np.ones((1, 5, 5, 4), np.float32)).shape
    (1, 5, 5, 6)
    """

    _keras_name = "separable_conv2d"

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), depth_multiplier=1, activation=None, use_bias=True,
                 depthwise_initializer="glorot_uniform", pointwise_initializer="glorot_uniform",
                 bias_initializer="zeros", depthwise_regularizer=None, pointwise_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, depthwise_constraint=None,
                 pointwise_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(kernel_size, strides, padding, depth_multiplier, data_format,
                         dilation_rate, activation, use_bias, depthwise_initializer,
                         bias_initializer, depthwise_regularizer, bias_regularizer,
                         activity_regularizer, depthwise_constraint, bias_constraint, **kwargs)
        _no_constraint("SeparableConv2D", pointwise_constraint=pointwise_constraint)
        if isinstance(filters, (bool, np.bool_)) or not isinstance(filters, (int, np.integer)) or filters <= 0:
            raise ValueError(f"Invalid value for argument `filters`. Expected a strictly "
                             f"positive value. Received filters={filters!r}.")
        self.filters = int(filters)
        self.pointwise_initializer = _initializers.get(pointwise_initializer)
        self.pointwise_regularizer = _regularizers.get(pointwise_regularizer)
        self.pointwise_kernel = None

    def build(self, input_shape):
        ch = self._channels(input_shape)
        self._in_channels = ch
        self.depthwise_kernel = self.add_weight(
            shape=self.kernel_size + (ch, self.depth_multiplier),
            initializer=self.depthwise_initializer, regularizer=self.depthwise_regularizer,
            name="depthwise_kernel")
        self.pointwise_kernel = self.add_weight(
            shape=(1, 1, ch * self.depth_multiplier, self.filters),
            initializer=self.pointwise_initializer, regularizer=self.pointwise_regularizer,
            name="pointwise_kernel")
        self._bias_weight(self.filters)
        self.built = True

    def call(self, inputs):
        h = self._depthwise(inputs, None)
        return self._act(self._op(h, self.pointwise_kernel, self.bias, (1, 1), (1, 1), 1,
                                  padding="valid"))

    def compute_output_shape(self, input_shape):
        return super().compute_output_shape(input_shape)[:-1] + (self.filters,)

    def get_config(self):
        c = super().get_config()
        c.update(filters=self.filters,
                 pointwise_initializer=_initializers.serialize(self.pointwise_initializer),
                 pointwise_regularizer=_regularizers.serialize(self.pointwise_regularizer),
                 pointwise_constraint=None)
        return c


class Conv2DTranspose(_BaseConv):
    """Transposed 2-D convolution (the gradient of Conv2D with respect to its
    input): ``kernel`` has shape ``(kernel_h, kernel_w, filters, channels)``;
    the output size is Keras's: ``valid``: ``in * s + max(k - s, 0)``,
    ``same``: ``in * s``, or ``(in - 1) * s + k - 2 * pad + output_padding``
    when ``output_padding`` is given (``pad = k // 2`` for ``same``).

    >>> layer = maas.layers.Conv2DTranspose(3, 3, strides=2, padding="same")
    >>> layer(np.ones((1, 4, 4, 2), np.float32)).shape
    (1, 8, 8, 3)
    """

    _keras_name = "conv2d_transpose"
    _transposed = True

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", output_padding=None,
                 data_format=None, dilation_rate=(1, 1), activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(filters, kernel_size, strides, padding, data_format, dilation_rate, 1,
                         activation, use_bias, kernel_initializer, bias_initializer,
                         kernel_regularizer, bias_regularizer, activity_regularizer,
                         kernel_constraint, bias_constraint, **kwargs)
        if output_padding is not None:
            output_padding = _tuple("output_padding", output_padding, 2, allow_zero=True)
            for p, s in zip(output_padding, self.strides):
                if p >= s:
                    raise ValueError(f"Conv2DTranspose: strides must be greater than output "
                                     f"padding. Received strides={self.strides}, "
                                     f"output_padding={output_padding}.")
        self.output_padding = output_padding

    def _groups_of(self, channels):
        return 0

    def _ops(self, i):
        return None if self.output_padding is None else self.output_padding[i]

    def build(self, input_shape):
        ch = self._channels(input_shape)
        self._in_channels = ch
        self.kernel = self.add_weight(shape=self.kernel_size + (self.filters, ch),
                                      initializer=self.kernel_initializer,
                                      regularizer=self.kernel_regularizer, name="kernel")
        self._bias_weight(self.filters)
        self.built = True

    def call(self, inputs):
        _, h, w, _ = inputs.shape
        args = []
        for i, n in enumerate((h, w)):
            k, s, d = self.kernel_size[i], self.strides[i], self.dilation_rate[i]
            args.append((_deconv_pad_before(k, s, d, self.padding, self._ops(i)),
                         _deconv_out(n, k, s, d, self.padding, self._ops(i))))
        (pt, oh), (pl, ow) = args
        if oh < 1 or ow < 1:
            raise ValueError(f"Conv2DTranspose layer \"{self.name}\": the output would be empty "
                             f"for inputs of shape {_fmt(inputs.shape)}")
        ins = [inputs, self.kernel] if self.bias is None else [inputs, self.kernel, self.bias]
        out = _core.op(_core.OP_CONV2D_TRANSPOSE, ins, self.strides[0], self.strides[1],
                       self.dilation_rate[0], self.dilation_rate[1], pt, pl, oh, ow)
        return self._act(out)

    def compute_output_shape(self, input_shape):
        s = tuple(input_shape)
        spatial = tuple(_deconv_out(n, k, st, d, self.padding, self._ops(i)) for i, (n, k, st, d)
                        in enumerate(zip(s[1:-1], self.kernel_size, self.strides, self.dilation_rate)))
        return (s[0],) + spatial + (self.filters,)

    def get_config(self):
        c = super().get_config()
        c.pop("groups")
        c["output_padding"] = self.output_padding
        return c


Convolution1D = Conv1D
Convolution2D = Conv2D
Convolution2DTranspose = Conv2DTranspose
