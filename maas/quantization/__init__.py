"""int8 post-training quantization, with Keras 3's API and semantics.

``model.quantize("int8")`` replaces each Dense layer's float32 kernel by
int8 weights quantized symmetrically per output channel (abs-max, Keras's
``abs_max_quantize``) with float32 scales, both stored as non-trainable
weights; at run time each row of the inputs is quantized by its own abs-max
(dynamic quantization) and one int8 GEMM in C (AVX512-VNNI or AVX2 chosen
by cpuid, a reference kernel otherwise) computes
``(x_q @ kernel_q) / (x_scale * kernel_scale) + bias``.
``model.quantize("int8", calibration_data=x)`` fixes the inputs' scale of
each layer from calibration data instead (static quantization).

>>> import numpy as np, maas
>>> model = maas.Sequential([maas.Input((8,)), maas.layers.Dense(16, activation="relu"),
...                          maas.layers.Dense(3)])
>>> x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
>>> before = model.predict(x, verbose=0)
>>> model.quantize("int8")
>>> after = model.predict(x, verbose=0)
>>> bool(np.abs(after - before).max() < 0.05 * np.abs(before).max())
True
>>> [w.dtype for w in model.layers[0].weights]
['int8', 'float32', 'float32']

Conv1D/Conv2D (:mod:`maas.quantization.conv`: im2col rows quantized per
output pixel, the same int8 GEMM) and Embedding (:mod:`maas.quantization.
embedding`: Keras 3's int8 table with per-row scales) are quantized too;
DepthwiseConv2D, SeparableConv2D and Conv2DTranspose stay float32 with a
warning saying why.

Fine-tuning a quantized model trains its float weights (the biases, any
float layers); the gradient reaches earlier layers through the dequantized
kernel, as in Keras. The int8 weights stay fixed.

Extension point: another layer type joins with :func:`register_quantizer`
(``fn(layer, mode, input_scale)`` replacing the layer's weights in place and
making its ``call`` use them); ``model.quantize`` then picks it up. Layers
with weights and no quantizer stay float32 with a warning saying which.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
import warnings

import numpy as np

from .. import _core
from ..tensor import Tensor

__all__ = ["quantize", "quantize_model", "register_quantizer", "quantize_kernel", "pack_kernel",
           "unpack_kernel", "int8_kernel", "qdense", "report", "Int8Weight", "ISAS",
           "supported_isas"]

EPSILON = 1e-7          # Keras's backend.epsilon(), as in its abs_max_quantize
MODES = ("int8",)
#: kernel paths of the qdense op (0 picks the best the CPU has)
ISAS = {"auto": 0, "reference": 1, "avx2": 2, "avx512vnni": 3}


class Int8Weight(Tensor):
    """A non-trainable int8 weight of a layer (a quantized kernel): a maas
    Tensor with a weight's name and path; it is saved as safetensors I8.

    >>> w = Int8Weight(np.array([[1, -2]], np.int8), name="kernel")
    >>> w.dtype, w.trainable
    ('int8', False)
    """

    def __new__(cls, value, name="kernel"):
        self = super().__new__(cls, np.asarray(value, np.int8), copy=True, dtype="int8")
        self.name = name
        self.path = name
        self._declared_trainable = False
        self._regularizer = None
        return self

    def __init__(self, *args, **kwargs):
        pass

    @property
    def trainable(self) -> bool:
        return False

    @trainable.setter
    def trainable(self, value) -> None:
        pass   # int8 weights are never trained (Keras: non-trainable)

    def assign(self, value):
        """Writes int8 values of the same shape in place."""
        v = np.asarray(value)
        if v.shape != tuple(self.shape):
            raise ValueError(f"{self.name}: cannot assign shape {v.shape} to an int8 weight of "
                             f"shape {tuple(self.shape)}")
        if v.dtype != np.int8 and not (np.all(v == np.round(v)) and np.abs(v).max(initial=0) <= 127):
            raise ValueError(f"{self.name}: an int8 weight takes integers in [-127, 127]")
        np.asarray(self)[...] = v.astype(np.int8)
        return self


# ------------------------------------------------------------- kernels

def quantize_kernel(kernel) -> tuple[np.ndarray, np.ndarray]:
    """Keras's ``abs_max_quantize(kernel, axis=0)``: ``(q int8 (in, units),
    scale float32 (units,))`` with ``scale = 127 / (max|w| + 1e-7)`` and
    ``q = clip(round(w * scale), -127, 127)`` (round half to even).

    >>> q, s = quantize_kernel(np.array([[0.5, -1.0], [0.25, 2.0]], np.float32))
    >>> q.tolist()
    [[127, -64], [64, 127]]
    """
    w = np.asarray(kernel, np.float32)
    if w.ndim != 2:
        raise ValueError(f"quantize_kernel: the kernel must be 2-D (in, units), got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("quantize_kernel: the kernel holds NaN or infinite values; int8 cannot "
                         "represent them (check the training that produced it)")
    scale = (np.float32(127.0) / (np.abs(w).max(axis=0, initial=0.0) + np.float32(EPSILON))
             ).astype(np.float32)
    q = np.clip(np.rint(w * scale), -127, 127).astype(np.int8)
    return q, scale


def pack_kernel(q) -> Tensor:
    """Packs an int8 (in, units) kernel into the layout of maas's int8 GEMM
    (blocks of 16 columns; see csrc/ops/qgemm.c)."""
    return _core.op(_core.OP_QPACK, [Tensor(np.ascontiguousarray(q, np.int8))])


def unpack_kernel(packed, in_dim: int, units: int) -> np.ndarray:
    """The int8 (in, units) kernel held by a packed tensor."""
    p = np.asarray(packed)
    k4 = (in_dim + 3) // 4
    body = p[:, :k4 * 64].reshape(p.shape[0], k4, 16, 4)   # (block, group, column, k)
    return np.ascontiguousarray(body.transpose(1, 3, 0, 2).reshape(k4 * 4, p.shape[0] * 16)
                                [:in_dim, :units])


def int8_kernel(layer) -> np.ndarray:
    """A quantized Dense layer's int8 kernel as (in, units), Keras's layout."""
    _require_quantized(layer)
    return unpack_kernel(layer.kernel, layer._q_in_dim, layer.units)


def supported_isas() -> list[str]:
    """The int8 kernel paths this CPU runs (always "reference")."""
    out = ["reference"]
    probe = [Tensor(np.zeros((1, 4), np.float32)), pack_kernel(np.zeros((4, 1), np.int8)),
             Tensor(np.ones(1, np.float32))]
    for name in ("avx2", "avx512vnni"):
        try:
            _core.op(_core.OP_QDENSE, probe, 0, 0, ISAS[name])
            out.append(name)
        except ValueError:
            pass
    return out


def qdense(x, packed, kernel_scale, bias=None, input_scale=None, isa="auto") -> Tensor:
    """``(quant(x) @ kernel_q) / (x_scale * kernel_scale) + bias`` in one C
    call: x float32 (..., in), ``packed`` from :func:`pack_kernel`, scales
    Keras's (multipliers), ``input_scale`` a fixed scale (static) or None
    (each row's own). ``isa`` forces a kernel path ("reference", "avx2",
    "avx512vnni"; "auto" picks by cpuid)."""
    ins = [x, packed, kernel_scale]
    if bias is not None:
        ins.append(bias)
    if input_scale is not None:
        ins.append(input_scale)
    if isa not in ISAS:
        raise ValueError(f"qdense: isa must be one of {sorted(ISAS)}, received {isa!r}")
    return _core.op(_core.OP_QDENSE, ins, int(bias is not None), int(input_scale is not None),
                    ISAS[isa])


# --------------------------------------------------------------- layers

_QUANTIZERS: dict = {}


def register_quantizer(layer_class, fn) -> None:
    """Makes ``model.quantize`` quantize layers of ``layer_class`` with
    ``fn(layer, mode, input_scale)`` (input_scale: a float for static mode,
    else None). The extension point for Conv/Embedding/recurrent layers."""
    _QUANTIZERS[layer_class] = fn


def _quantizer_for(layer):
    for cls in type(layer).__mro__:
        if cls in _QUANTIZERS:
            return _QUANTIZERS[cls]
    return None


def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"Invalid quantization mode. Expected one of {list(MODES)}. Received: "
                         f"mode={mode!r} (maas has int8 kernels; float8 and int4 are not "
                         f"implemented)")


def _require_quantized(layer):
    if getattr(layer, "quantization_config", None) is None:
        raise ValueError(f"layer {layer.name!r} is not quantized: call layer.quantize('int8')")


def _input_scale_value(amax) -> float:
    return float(np.float32(127.0) / (np.float32(amax) + np.float32(EPSILON)))


def _check_quantizable(layer, weight) -> None:
    """Raises unless ``layer`` is built (``weight`` is the attribute holding
    its float weight) and not quantized yet."""
    if getattr(layer, "quantization_config", None) is not None:
        raise ValueError(f"Layer {layer.name!r} is already quantized "
                         f"({layer.quantization_config['mode']}); quantize the float model")
    if not layer.built or getattr(layer, weight, None) is None:
        raise ValueError(f"Cannot quantize layer {layer.name!r}: it is not built yet. Call it on "
                         "data (or build the model) first")


def quantize_dense(layer, mode="int8", input_scale=None) -> None:
    """Quantizes a built Dense layer in place (Keras's Dense.quantize)."""
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


def _int8_weights(layer, in_dim, config):
    """The int8 weights of a Dense of in_dim inputs (zeros; loading or
    quantize_dense fills them), in the order kernel, bias, kernel_scale,
    input_scale."""
    layer.quantization_config = dict(config)
    layer._q_in_dim = int(in_dim)
    blocks = (layer.units + 15) // 16
    row = ((in_dim + 3) // 4) * 64 + 64
    layer.kernel = Int8Weight(np.zeros((blocks, row), np.int8), name="kernel")
    layer.kernel_scale = layer.add_weight(shape=(layer.units,), initializer="ones",
                                          trainable=False, name="kernel_scale")
    layer.input_scale = None
    if config.get("activation") == "static":
        layer.input_scale = layer.add_weight(shape=(), initializer="ones", trainable=False,
                                             name="input_scale")


def _retrack(layer):
    own = [layer.kernel] + ([layer.bias] if layer.bias is not None else []) + [layer.kernel_scale]
    if layer.input_scale is not None:
        own.append(layer.input_scale)
    layer.kernel.path = f"{layer.name}/kernel"
    layer._weights_own = own


def build_dense(layer, in_dim) -> None:
    """Dense.build for a layer whose config says it is quantized."""
    if layer.use_bias:
        layer.bias = layer.add_weight(shape=(layer.units,), initializer=layer.bias_initializer,
                                      regularizer=layer.bias_regularizer, name="bias")
    _int8_weights(layer, in_dim, layer.quantization_config)
    _retrack(layer)
    layer.built = True


def dense_call(layer, inputs):
    """Dense.call of a quantized layer (before its activation)."""
    return qdense(inputs, layer.kernel, layer.kernel_scale, layer.bias,
                  layer.input_scale if layer.input_scale is not None else None)


def _register_builtin():
    from ..layers.core import Dense
    from . import conv, embedding

    register_quantizer(Dense, quantize_dense)
    conv.register()
    embedding.register()


def _refusal(layer):
    """Why a layer type with weights has no int8 path (None: no reason known)."""
    from .conv import REFUSALS

    for cls in type(layer).__mro__:
        if cls.__name__ in REFUSALS:
            return REFUSALS[cls.__name__]
    return None


# ---------------------------------------------------------------- models

def _leaves(model):
    return [l for l in model._flatten_layers(include_self=False) if not l._layers]


def _calibrate(model, targets, data, batch_size=64):
    """The abs-max of each target layer's inputs over ``data`` (eager)."""
    amax = {id(l): 0.0 for l in targets}
    originals = {}

    def wrap(layer):
        call = layer.call

        def recording(inputs, *args, **kwargs):
            amax[id(layer)] = max(amax[id(layer)], float(np.abs(np.asarray(inputs)).max(initial=0)))
            return call(inputs, *args, **kwargs)

        return recording

    for layer in targets:
        originals[id(layer)] = layer.__dict__.get("call")
        object.__setattr__(layer, "call", wrap(layer))
    try:
        xs = data if isinstance(data, (list, tuple, dict)) else np.asarray(data)
        n = len(xs) if not isinstance(xs, (list, tuple, dict)) else None
        if n is None:
            model(xs, training=False)
        else:
            for i in range(0, n, batch_size):
                model(xs[i:i + batch_size], training=False)
    finally:
        for layer in targets:
            if originals[id(layer)] is None:
                del layer.__dict__["call"]
            else:
                object.__setattr__(layer, "call", originals[id(layer)])
    return {k: _input_scale_value(v) for k, v in amax.items()}


def quantize_model(model, mode="int8", calibration_data=None, type_check=True) -> None:
    """``model.quantize(mode)`` (in place). Layers with weights that maas
    cannot quantize stay float32 with a RuntimeWarning naming them; a model
    with no quantizable layer raises ValueError."""
    _check_mode(mode)
    _register_builtin()
    if not model.built or not model.weights:
        raise ValueError(f"Cannot quantize model {model.name!r}: it is not built yet. Call it on "
                         "data (or build it) first")
    targets = []
    for layer in _leaves(model):
        fn = _quantizer_for(layer)
        if fn is not None:
            if getattr(layer, "quantization_config", None) is None:
                targets.append((layer, fn))
        elif getattr(layer, "_weights_own", None) and _refusal(layer):
            warnings.warn(f"quantize: layer {layer.name!r} ({type(layer).__name__}) stays float32: "
                          f"{_refusal(layer)}", RuntimeWarning, stacklevel=3)
        elif getattr(layer, "_weights_own", None):
            warnings.warn(f"quantize: layer {layer.name!r} ({type(layer).__name__}) stays float32: "
                          f"maas has no int8 kernel for {type(layer).__name__} (int8 covers "
                          f"{', '.join(sorted(c.__name__ for c in _QUANTIZERS))}; "
                          f"another layer type joins with maas.quantization.register_quantizer)",
                          RuntimeWarning, stacklevel=3)
    if not targets:
        raise ValueError(f"model {model.name!r} has no layer to quantize to int8 (quantizable: "
                         f"{sorted(c.__name__ for c in _QUANTIZERS)}; already quantized layers "
                         f"are skipped)")
    scales = {}
    if calibration_data is not None:
        scales = _calibrate(model, [l for l, _ in targets], calibration_data)
    for layer, fn in targets:
        fn(layer, mode, scales.get(id(layer)))
    for attr in ("_plan", "_compiled_train_fn", "_compiled_predict_fn"):
        if hasattr(model, attr):
            setattr(model, attr, None)
    if hasattr(model, "_plan_checked"):
        model._plan_checked = False


def quantize(model, mode="int8", calibration_data=None):
    """A quantized copy of ``model`` (the original stays float32): a clone
    with the same weights, then ``quantize(mode, calibration_data)``.

    >>> q = maas.quantization.quantize(model, "int8")  # doctest: +SKIP
    """
    from ..models.cloning import clone_model

    clone = clone_model(model)
    if not clone.weights and getattr(model, "_build_shape", None) is not None:
        clone.build(model._build_shape)
    clone.set_weights(model.get_weights())
    quantize_model(clone, mode, calibration_data=calibration_data)
    return clone


# ---------------------------------------------------------------- report

def _file_size(model) -> int:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.maas")
        model.save(path, include_optimizer=False)
        return os.path.getsize(path)


def _latency_ms(model, x, repeats) -> float:
    model.predict(x, verbose=0)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        model.predict(x, verbose=0)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1e3)


def _quality(model, x, y):
    p = np.asarray(model.predict(x, verbose=0, batch_size=256))
    y = np.asarray(y)
    if p.ndim == 2 and p.shape[1] > 1 and (y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)) \
            and np.issubdtype(y.dtype, np.integer):
        return "accuracy", float(np.mean(p.argmax(1) == y.reshape(-1)))
    if p.shape == y.shape and p.ndim == 2 and p.shape[1] > 1 and set(np.unique(y)) <= {0, 1}:
        return "accuracy", float(np.mean(p.argmax(1) == y.argmax(1)))
    return "mse", float(np.mean((p.reshape(y.shape) - y) ** 2))


def report(model, quantized, x, y, batch_size: int = 64, repeats: int = 20,
           print_fn=print) -> dict:
    """Size (model file bytes), accuracy (integer labels or one-hot) or
    mean squared error, and median predict latency at batch 1 and
    ``batch_size``, for the float model and its compressed version; printed
    as a table and returned as a dict.

    >>> r = maas.quantization.report(model, quantized, x_test, y_test)  # doctest: +SKIP
    """
    rows = {}
    for name, m in (("float32", model), ("compressed", quantized)):
        metric, value = _quality(m, x, y)
        rows[name] = {"size_bytes": _file_size(m), metric: value,
                      "latency_ms_batch1": _latency_ms(m, np.asarray(x)[:1], repeats),
                      f"latency_ms_batch{batch_size}":
                          _latency_ms(m, np.asarray(x)[:batch_size], max(3, repeats // 4))}
    f, c = rows["float32"], rows["compressed"]
    rows["ratios"] = {"size": c["size_bytes"] / f["size_bytes"],
                      "speedup_batch1": f["latency_ms_batch1"] / c["latency_ms_batch1"],
                      f"speedup_batch{batch_size}": f[f"latency_ms_batch{batch_size}"]
                      / c[f"latency_ms_batch{batch_size}"],
                      f"{metric}_change": c[metric] - f[metric]}
    if print_fn is not None:
        keys = list(f)
        width = max(len(k) for k in keys) + 2
        lines = [f"{'':{width}}{'float32':>14}{'compressed':>14}"]
        for k in keys:
            lines.append(f"{k:{width}}{f[k]:>14.6g}{c[k]:>14.6g}")
        lines.append("ratios: " + ", ".join(f"{k}={v:.4g}" for k, v in rows["ratios"].items()))
        print_fn("\n".join(lines))
    return rows
