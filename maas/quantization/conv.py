"""int8 Conv1D and Conv2D: Keras 3's int8 semantics extended to convolutions.

``layer.quantize("int8")`` (or ``model.quantize("int8")``) replaces a built
Conv1D/Conv2D's float32 kernel ``(kernel_h, kernel_w, channels // groups,
filters)`` by int8 weights quantized symmetrically per output channel
(abs-max over the kernel's first three axes, Keras's ``abs_max_quantize``)
with float32 scales ``kernel_scale (filters,)``; both are non-trainable
weights, saved as ``I8`` and ``F32`` in the model file. At run time the C op
``qconv2d`` (csrc/ops/qconv.c) builds the im2col matrix, quantizes each of
its rows (one output pixel's receptive field) by its own abs-max, or by a
calibrated scale (``model.quantize("int8", calibration_data=x)``), and runs
maas's int8 GEMM (csrc/ops/qgemm.c) on it: ``out = (x_q @ kernel_q) /
(x_scale * kernel_scale) + bias``. Strides, dilation, groups and
"valid"/"same"/"causal" padding are the float layer's.

DepthwiseConv2D, SeparableConv2D and Conv2DTranspose are not quantized:
``layer.quantize`` raises NotImplementedError saying why, and
``model.quantize`` leaves them float32 with a RuntimeWarning naming them.

>>> import numpy as np, maas
>>> layer = maas.layers.Conv2D(8, 3, padding="same")
>>> x = np.random.default_rng(0).standard_normal((2, 6, 6, 3)).astype(np.float32)
>>> before = np.asarray(layer(x))
>>> layer.quantize("int8")
>>> after = np.asarray(layer(x))
>>> bool(np.abs(after - before).max() < 0.03 * np.abs(before).max())
True
>>> [w.name for w in layer.weights], layer.kernel.dtype
(['kernel', 'bias', 'kernel_scale'], 'int8')
"""
from __future__ import annotations

import numpy as np

from .. import _core
from ..tensor import Tensor

__all__ = ["quantize_conv", "qconv2d", "int8_conv_kernel", "pack_conv_kernel", "REFUSALS"]

_PAD = {"valid": 0, "same": 1, "causal": 2}

#: why the other convolution layers stay float32 (the message users see)
REFUSALS = {
    "DepthwiseConv2D": "a depthwise convolution has one input channel per group, so the int8 "
                       "GEMM would run one 16-column block per channel for 1 useful column: no "
                       "int8 kernel pays there (it stays float32; its weights are small)",
    "SeparableConv2D": "its depthwise step has no int8 kernel that pays (one input channel per "
                       "group); it stays float32 (replace it with DepthwiseConv2D + a 1x1 Conv2D "
                       "to quantize the pointwise step)",
    "Conv2DTranspose": "maas has no int8 transposed-convolution kernel (its forward is a col2im "
                       "scatter, not an im2col GEMM); it stays float32",
}


def _parent():
    from .. import quantization   # the package (imported lazily: it imports this module)

    return quantization


def pack_conv_kernel(q, groups: int) -> Tensor:
    """Packs an int8 conv kernel ``(kh, kw, cin/groups, filters)`` for the
    qconv2d op: each group's ``(kh*kw*cin/groups, filters/groups)`` matrix
    packed by the int8 GEMM's layout, the groups back to back."""
    q = np.asarray(q, np.int8)
    kh, kw, cg, oc = q.shape
    ocg = oc // groups
    mat = q.reshape(kh * kw * cg, oc)
    parts = [np.asarray(_parent().pack_kernel(np.ascontiguousarray(mat[:, g * ocg:(g + 1) * ocg])))
             for g in range(groups)]
    return Tensor(np.ascontiguousarray(np.concatenate(parts, axis=0)))


def unpack_conv_kernel(packed, kernel_shape, groups: int) -> np.ndarray:
    """The int8 ``(kh, kw, cin/groups, filters)`` kernel held by a packed
    tensor of :func:`pack_conv_kernel`."""
    kh, kw, cg, oc = kernel_shape
    ocg, k = oc // groups, kh * kw * cg
    p = np.asarray(packed)
    rows = p.shape[0] // groups
    mats = [_parent().unpack_kernel(p[g * rows:(g + 1) * rows], k, ocg) for g in range(groups)]
    return np.concatenate(mats, axis=1).reshape(kh, kw, cg, oc)


def _kernel_shape(layer):
    cg = layer._in_channels // layer.groups
    ks = layer.kernel_size if layer.rank == 2 else (1,) + tuple(layer.kernel_size)
    return tuple(ks) + (cg, layer.filters)


def int8_conv_kernel(layer) -> np.ndarray:
    """A quantized Conv layer's int8 kernel in Keras's layout
    ``(kernel_h, kernel_w, channels // groups, filters)`` (Conv1D:
    ``(kernel, channels // groups, filters)``)."""
    _parent()._require_quantized(layer)
    q = unpack_conv_kernel(layer.kernel, _kernel_shape(layer), layer.groups)
    return q[0] if layer.rank == 1 else q


def quantize_conv_kernel(kernel) -> tuple[np.ndarray, np.ndarray]:
    """``(q int8, scale float32 (filters,))``: abs-max per output channel
    over the other axes, ``scale = 127 / (max|w| + 1e-7)``,
    ``q = clip(round(w * scale), -127, 127)`` (round half to even)."""
    w = np.asarray(kernel, np.float32)
    q, scale = _parent().quantize_kernel(w.reshape(-1, w.shape[-1]))
    return q.reshape(w.shape), scale


def qconv2d(x, packed, kernel_scale, bias=None, input_scale=None, *, kernel_size, strides=(1, 1),
            dilation_rate=(1, 1), padding="valid", groups=1, isa="auto") -> Tensor:
    """The int8 convolution in one C call: x float32 NHWC, ``packed`` from
    :func:`pack_conv_kernel`, ``kernel_scale`` Keras's (multipliers),
    ``input_scale`` a fixed scale (static) or None (each im2col row's own
    abs-max). ``isa`` forces a kernel path ("reference", "avx2",
    "avx512vnni"; "auto" picks by cpuid)."""
    isas = _parent().ISAS
    if isa not in isas:
        raise ValueError(f"qconv2d: isa must be one of {sorted(isas)}, received {isa!r}")
    ins = [x, packed, kernel_scale]
    if bias is not None:
        ins.append(bias)
    if input_scale is not None:
        ins.append(input_scale)
    return _core.op(_core.OP_QCONV2D, ins, strides[0], strides[1], dilation_rate[0],
                    dilation_rate[1], _PAD[padding], groups, kernel_size[0], kernel_size[1],
                    int(bias is not None), int(input_scale is not None), isas[isa])


# --------------------------------------------------------------- layers

def _refuse(layer):
    reason = REFUSALS.get(type(layer).__name__)
    if reason is None:
        for cls in type(layer).__mro__:
            if cls.__name__ in REFUSALS:
                reason = REFUSALS[cls.__name__]
                break
    if reason is not None:
        raise NotImplementedError(f"Layer {layer.name!r} ({type(layer).__name__}) cannot be "
                                  f"quantized to int8: {reason}")


def _int8_weights(layer, config):
    """The int8 weights of a built-shape Conv (zeros; loading or
    quantize_conv fills them): kernel, bias, kernel_scale[, input_scale]."""
    P = _parent()
    layer.quantization_config = dict(config)
    kh, kw, cg, oc = _kernel_shape(layer)
    k = kh * kw * cg
    rows = layer.groups * ((oc // layer.groups + 15) // 16)
    layer.kernel = P.Int8Weight(np.zeros((rows, ((k + 3) // 4) * 64 + 64), np.int8), name="kernel")
    layer.kernel_scale = layer.add_weight(shape=(oc,), initializer="ones", trainable=False,
                                          name="kernel_scale")
    layer.input_scale = None
    if config.get("activation") == "static":
        layer.input_scale = layer.add_weight(shape=(), initializer="ones", trainable=False,
                                             name="input_scale")


def quantize_conv(layer, mode="int8", input_scale=None) -> None:
    """Quantizes a built Conv1D/Conv2D in place (the registered quantizer;
    ``input_scale`` a calibrated scale for static mode, else None)."""
    P = _parent()
    P._check_mode(mode)
    _refuse(layer)
    P._check_quantizable(layer, "kernel")
    kernel = np.asarray(layer.kernel)
    if kernel.ndim == 3:
        kernel = kernel[None]
    if not np.isfinite(kernel).all():
        raise ValueError(f"Cannot quantize layer {layer.name!r}: its kernel holds NaN or infinite "
                         f"values; int8 cannot represent them")
    q, scale = quantize_conv_kernel(kernel)
    config = {"mode": mode, "activation": "dynamic" if input_scale is None else "static"}
    _int8_weights(layer, config)
    layer.kernel = P.Int8Weight(np.asarray(pack_conv_kernel(q, layer.groups)), name="kernel")
    layer.kernel_scale.assign(scale)
    if input_scale is not None:
        layer.input_scale.assign(np.float32(input_scale))
    P._retrack(layer)


def build_conv(layer, channels) -> None:
    """Conv2D/Conv1D.build for a layer whose config says it is quantized."""
    layer._in_channels = int(channels)
    layer._bias_weight(layer.filters)
    _int8_weights(layer, layer.quantization_config)
    _parent()._retrack(layer)
    layer.built = True


def conv_call(layer, inputs):
    """Conv2D/Conv1D.call of a quantized layer (before its activation)."""
    from .. import ops

    scale = layer.input_scale if layer.input_scale is not None else None
    if layer.rank == 1:
        n, w, c = inputs.shape
        x = ops.reshape(inputs, (n, 1, w, c))
        out = qconv2d(x, layer.kernel, layer.kernel_scale, layer.bias, scale,
                      kernel_size=(1, layer.kernel_size[0]), strides=(1, layer.strides[0]),
                      dilation_rate=(1, layer.dilation_rate[0]), padding=layer.padding,
                      groups=layer.groups)
        return ops.reshape(out, (n, out.shape[2], layer.filters))
    return qconv2d(inputs, layer.kernel, layer.kernel_scale, layer.bias, scale,
                   kernel_size=layer.kernel_size, strides=layer.strides,
                   dilation_rate=layer.dilation_rate, padding=layer.padding, groups=layer.groups)


def register() -> None:
    from ..layers.convolutional import Conv2D

    _parent().register_quantizer(Conv2D, quantize_conv)   # Conv1D subclasses Conv2D
