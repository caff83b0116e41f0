"""Export to ONNX (``model.export(path, format="onnx")``), written with the
``onnx`` package and checked by ``onnx.checker``.

The exporter does not know layers: it traces the model's inference call on
the engine's tape (what a compiled plan replays) and writes each recorded
op of the C op table as ONNX nodes, so Sequential, functional and
subclassed models export alike. The model is traced at two batch sizes; an
attribute or shape that changes with the batch becomes dynamic (the batch
axis is the named dimension ``batch``), anything else that changes is an
error.

Opset 18 and IR version 8 (ONNX 1.13 and later, ONNX Runtime 1.14 and
later read them). Inputs are named after the model's inputs, outputs after
its outputs. Weights are stored as initializers (float32).

>>> import maas, numpy as np
>>> m = maas.Sequential([maas.Input((4,)), maas.layers.Dense(2, activation="softmax")])
>>> m.export("m.onnx", format="onnx")   # doctest: +SKIP
"""
from __future__ import annotations

import math

import numpy as np

OPSET = 18
IR_VERSION = 8
_TRACE_BATCHES = (2, 3)


def _onnx():
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:  # pragma: no cover - the extra is missing
        raise ImportError("exporting to ONNX needs the onnx package: pip install 'maas[onnx]'") from None
    return onnx, TensorProto, helper, numpy_helper


class ExportError(ValueError):
    """A model (or one of its layers) that cannot be written as ONNX."""


def _elem_type(dtype):
    _, TensorProto, _, _ = _onnx()
    return {np.dtype("float32"): TensorProto.FLOAT, np.dtype("int32"): TensorProto.INT32,
            np.dtype("int64"): TensorProto.INT64, np.dtype("int8"): TensorProto.INT8,
            np.dtype("uint8"): TensorProto.UINT8, np.dtype("bool"): TensorProto.BOOL}[np.dtype(dtype)]


# ------------------------------------------------------------------ tracing
class _Trace:
    """One traced inference call: nodes, placeholders, outputs, and which
    layer each node came from."""

    def __init__(self, model, specs, batch):
        from .. import _core
        from ..engine import trace
        from ..autodiff import _flatten
        from ..layers.base import Layer

        rng = np.random.default_rng(batch)
        arrays = []
        for shape, dtype in specs:
            shp = (batch,) + tuple(shape[1:])
            if np.dtype(dtype).kind == "f":
                arrays.append(rng.standard_normal(shp).astype(dtype))
            else:
                arrays.append(np.zeros(shp, dtype))
        from ..tensor import Tensor
        self.placeholders = [Tensor(a, copy=True) for a in arrays]
        self.layer_of = []    # (first node index, layer name), in call order
        tape_holder = {}
        original = Layer.__call__

        def observed(layer, *args, **kwargs):
            t = tape_holder.get("t")
            if t is not None:  # len(tape) is O(1); tape.nodes() would copy every node so far
                self.layer_of.append((len(t.tape), layer.name))
            return original(layer, *args, **kwargs)

        x = self.placeholders
        xin = x[0] if len(x) == 1 else list(x)
        if getattr(model, "_is_graph_network", False) and isinstance(model._nested_inputs, dict):
            xin = dict(zip(model._nested_inputs, x))
        Layer.__call__ = observed
        try:
            with trace(self.placeholders) as t:
                tape_holder["t"] = t
                y = original(model, xin, training=False)
        finally:
            Layer.__call__ = original
        self.structure = y
        self.outputs = _flatten(y, [])
        self.nodes = t.tape.nodes()
        self.core = _core
        self.reason = t.reason

    def layer(self, k):
        """The innermost layer whose call recorded node k: the last layer
        call that started at or before it (calls are in order, so their
        starts are sorted)."""
        import bisect

        i = bisect.bisect_right(self.layer_of, k, key=lambda e: e[0])
        return self.layer_of[i - 1][1] if i else None


def _specs(model, input_signature):
    """[(shape with None batch, dtype)] and names of the model's inputs."""
    if input_signature is not None:
        specs = []
        for s in input_signature:
            shape = getattr(s, "shape", s)
            dtype = getattr(s, "dtype", "float32") or "float32"
            specs.append(((None,) + tuple(shape[1:]), np.dtype(str(dtype))))
        names = [getattr(s, "name", None) or f"input_{i}" for i, s in enumerate(input_signature)]
        return specs, names
    if getattr(model, "_is_graph_network", False):
        specs = [((None,) + tuple(t.shape[1:]), np.dtype(str(getattr(t, "dtype", "float32") or "float32")))
                 for t in model.inputs]
        if isinstance(model._nested_inputs, dict):
            names = list(model._nested_inputs)
        else:
            names = [t._keras_history[0].name for t in model.inputs]
        return specs, names
    shape = getattr(model, "_build_shape", None)
    if shape is None:
        raise ExportError(f"cannot export {type(model).__name__}: it has not been called yet, so "
                          f"its input shape is unknown; call it on a batch first or pass "
                          f"input_signature=[(None, features)]")
    shapes = shape if isinstance(shape, list) else [shape]
    return ([((None,) + tuple(s[1:]), np.dtype("float32")) for s in shapes],
            [f"input_{i}" for i in range(len(shapes))])


# ------------------------------------------------------------------ writing
class _Writer:
    def __init__(self, model, a, b, input_names, output_names):
        onnx, TensorProto, helper, numpy_helper = _onnx()
        self.helper, self.numpy_helper, self.TensorProto = helper, numpy_helper, TensorProto
        self.a, self.b = a, b
        self.nodes, self.inits = [], []
        self.names = {}       # core id -> value name
        self.n = 0
        core = a.core
        self.op_names = [row[0] for row in core.op_table()]
        self.input_names = list(input_names)
        for ph, nm in zip(a.placeholders, input_names):
            self.names[core.core_ids([ph])[0]] = nm
        weights = list(model.weights)
        self._weights = {}
        used = set()
        for v in weights:
            nm = getattr(v, "path", None) or getattr(v, "name", None) or "weight"
            base, k = nm, 1
            while nm in used:
                k += 1
                nm = f"{base}_{k}"
            used.add(nm)
            self._weights[core.core_ids([v])[0]] = (nm, v)

    def fresh(self, hint):
        self.n += 1
        return f"{hint}_{self.n}"

    def const(self, value, hint="const"):
        name = self.fresh(hint)
        self.inits.append(self.numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op, inputs, outputs=None, **attrs):
        outputs = outputs or [self.fresh(op.lower())]
        self.nodes.append(self.helper.make_node(op, inputs, outputs, **attrs))
        return outputs[0]

    def value(self, t, k, i):
        """The ONNX name of tensor t, input i of node k."""
        core = self.a.core
        cid = core.core_ids([t])[0]
        if cid in self.names:
            return self.names[cid]
        if cid in self._weights:
            nm, v = self._weights[cid]
            self.inits.append(self.numpy_helper.from_array(np.asarray(v), nm))
            self.names[cid] = nm
            return nm
        # a constant the model made (not an input, weight or op output)
        tb = self.b.nodes[k][2][i]
        if tuple(t.shape) != tuple(tb.shape):
            nm = self._batch_constant(k, np.asarray(t), np.asarray(tb))
            self.names[cid] = nm
            return nm
        nm = self.const(np.asarray(t), "const")
        self.names[cid] = nm
        return nm

    def _batch_constant(self, k, va, vb):
        """A constant the model made with the batch in its shape (zeros for
        a broadcast, an initial state): uniform values become
        ConstantOfShape over the batch size read from the first input."""
        if va.ndim != vb.ndim or va.size == 0 or not (va == va.flat[0]).all() or \
                not (vb == va.flat[0]).all():
            self.fail(k, "uses a constant whose shape depends on the batch size")
        dims = []
        if not hasattr(self, "_batch_size"):
            shape = self.node("Shape", [self.input_names[0]])
            self._batch_size = self.node("Slice", [shape, self._axes([0]), self._axes([1])])
        for da, db in zip(va.shape, vb.shape):
            dims.append(self._batch_size if da != db else self.const(np.asarray([da], np.int64), "dim"))
        shape = self.node("Concat", dims, axis=0)
        value = self.numpy_helper.from_array(np.asarray([va.flat[0]], va.dtype), "value")
        return self.node("ConstantOfShape", [shape], value=value)

    def fail(self, k, why):
        op = self.op_names[self.a.nodes[k][0]]
        layer = self.a.layer(k)
        where = f"layer {layer!r} " if layer else ""
        raise ExportError(f"cannot export {where}to ONNX: its op {op!r} {why}")

    def write(self):
        for k, (node_a, node_b) in enumerate(zip(self.a.nodes, self.b.nodes)):
            op, attrs, ins, outs = node_a
            if node_b[0] != op:
                self.fail(k, "is traced differently at different batch sizes")
            name = self.op_names[op]
            fn = getattr(self, "op_" + name, None)
            if fn is None:
                self.fail(k, "has no ONNX translation yet")
            in_names = [self.value(t, k, i) for i, t in enumerate(ins)]
            out_names = fn(k, attrs, node_b[1], ins, outs, node_b[3], in_names)
            if isinstance(out_names, str):
                out_names = [out_names]
            for t, nm in zip(outs, out_names):
                self.names[self.a.core.core_ids([t])[0]] = nm

    # -- helpers
    def _same(self, k, attrs, attrs_b, *keys):
        for key in keys or attrs:
            if attrs.get(key) != attrs_b.get(key):
                self.fail(k, f"has an attribute ({key}) that depends on the batch size")

    def _axes(self, values):
        return self.const(np.asarray(values, np.int64), "axes")

    # -- one method per op of the table
    _UNARY = {0: "Relu", 5: "Sigmoid", 6: "Tanh", 7: "Softplus", 9: "Exp", 10: "Log",
              11: "Sqrt", 12: "Neg", 13: "Abs"}

    def op_unary(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        self._same(k, attrs, attrs_b)
        u, alpha, x = attrs["op"], float(attrs["alpha"]), x[0]
        if u in self._UNARY:
            return self.node(self._UNARY[u], [x])
        if u == 1:
            return self.node("LeakyRelu", [x], alpha=alpha)
        if u == 2:
            return self.node("Elu", [x], alpha=alpha)
        if u == 3:  # exact GELU: x/2 (1 + erf(x / sqrt 2))
            e = self.node("Erf", [self.node("Div", [x, self.const(np.float32(math.sqrt(2.0)))])])
            one = self.node("Add", [e, self.const(np.float32(1.0))])
            return self.node("Mul", [self.node("Mul", [x, one]), self.const(np.float32(0.5))])
        if u == 4:  # tanh GELU
            x3 = self.node("Mul", [self.node("Mul", [x, x]), x])
            inner = self.node("Add", [x, self.node("Mul", [x3, self.const(np.float32(0.044715))])])
            t = self.node("Tanh", [self.node("Mul", [inner, self.const(np.float32(math.sqrt(2 / math.pi)))])])
            one = self.node("Add", [t, self.const(np.float32(1.0))])
            return self.node("Mul", [self.node("Mul", [x, one]), self.const(np.float32(0.5))])
        if u == 8:
            return self.node("Mul", [x, self.node("Sigmoid", [x])])
        if u == 14:
            return self.node("Mul", [x, x])
        if u == 15:
            return self.node("Pow", [x, self.const(np.float32(alpha))])
        if u == 16:
            return self.node("Clip", [x, self.const(np.float32(0.0)), self.const(np.float32(6.0))])
        self.fail(k, f"(unary function {u}) has no ONNX translation yet")

    _BINARY = ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Less", "LessOrEqual", "Greater",
               "GreaterOrEqual", "Equal"]

    def op_binary(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        b = attrs["op"]
        if b == 12:
            return self.node("Not", [self.node("Equal", x)])
        return self.node(self._BINARY[b], x)

    def op_softmax(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        self._same(k, attrs, attrs_b)
        return self.node("LogSoftmax" if attrs["log"] else "Softmax", x, axis=int(attrs["axis"]))

    def op_reduce(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        self._same(k, attrs, attrs_b)
        op = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"][attrs["op"]]
        keep = int(bool(attrs["keepdims"]))
        if attrs["all"]:
            return self.node(op, [x[0]], keepdims=keep)
        return self.node(op, [x[0], self._axes([attrs["axis"]])], keepdims=keep)

    def _swap_last(self, name, ndim):
        perm = list(range(ndim))
        perm[-1], perm[-2] = perm[-2], perm[-1]
        return self.node("Transpose", [name], perm=perm)

    def op_matmul(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        self._same(k, attrs, attrs_b)
        a, b = x
        if attrs["transpose_a"] and ins[0].ndim >= 2:
            a = self._swap_last(a, ins[0].ndim)
        if attrs["transpose_b"] and ins[1].ndim >= 2:
            b = self._swap_last(b, ins[1].ndim)
        return self.node("MatMul", [a, b])

    def op_dense(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        y = self.node("MatMul", x[:2])
        return self.node("Add", [y, x[2]]) if len(x) > 2 else y

    def _dynamic_shape(self, k, shape_a, shape_b):
        """A Reshape target: dims that change with the batch become -1
        (at most one), or 0 (copy) when they are the input's batch dim."""
        target = []
        dyn = [d for d, (u, v) in enumerate(zip(shape_a, shape_b)) if u != v]
        if len(dyn) > 1:
            self.fail(k, "reshapes more than one axis that depends on the batch size")
        for d, u in enumerate(shape_a):
            target.append(-1 if d in dyn else int(u))
        return target

    def op_view(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        sa, sb = tuple(outs[0].shape), tuple(outs_b[0].shape)
        if len(sa) != len(sb):
            self.fail(k, "is traced differently at different batch sizes")
        if not attrs["sub"]:
            return self.node("Reshape", [x[0], self.const(np.asarray(
                self._dynamic_shape(k, sa, sb), np.int64), "shape")])
        if sa != sb or attrs["offset"] != attrs_b["offset"] or tuple(ins[0].shape) != \
                tuple(self.b.nodes[k][2][0].shape):
            self.fail(k, "(a slice or an index) depends on the batch size")
        flat = self.node("Reshape", [x[0], self.const(np.asarray([-1], np.int64), "shape")])
        n = int(np.prod(sa, dtype=np.int64))
        off = int(attrs["offset"])
        part = self.node("Slice", [flat, self._axes([off]), self._axes([off + n]), self._axes([0])])
        return self.node("Reshape", [part, self.const(np.asarray(sa, np.int64), "shape")])

    def op_rows(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        self._same(k, attrs, attrs_b)
        start, step, count = int(attrs["start"]), int(attrs["step"]), int(attrs["count"])
        end = start + step * count
        if end < 0:
            end = -(2 ** 62)
        return self.node("Slice", [x[0], self._axes([start]), self._axes([end]), self._axes([0]),
                                   self._axes([step])])

    def op_take(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        return self.node("Gather", x, axis=0)

    def op_transpose(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        return self._swap_last(x[0], ins[0].ndim)

    def op_concatenate(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        self._same(k, attrs, attrs_b)
        return self.node("Concat", x, axis=int(attrs["axis"]))

    def op_cast(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        return self.node("Cast", x, to=_elem_type(np.asarray(outs[0]).dtype))

    def op_dropout(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        return self.node("Identity", x)


class _WriterNN(_Writer):
    """The translations of the vision and text ops (NHWC in maas, NCHW in
    ONNX's Conv/Pool: a Transpose on each side, which ONNX Runtime's
    optimizer cancels between consecutive layers)."""

    def _to_nchw(self, x):
        return self.node("Transpose", [x], perm=[0, 3, 1, 2])

    def _to_nhwc(self, x):
        return self.node("Transpose", [x], perm=[0, 2, 3, 1])

    @staticmethod
    def _same_pads(n, k, s, d=1):
        keff = (k - 1) * d + 1
        out = -(-n // s)
        total = max((out - 1) * s + keff - n, 0)
        return total // 2, total - total // 2

    def op_conv2d(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        self._same(k, attrs, attrs_b)
        N, H, W, C = ins[0].shape
        KH, KW, _, OC = ins[1].shape
        sh, sw, dh, dw = (int(attrs[n]) for n in ("stride_h", "stride_w", "dilation_h", "dilation_w"))
        mode = int(attrs["padding"])
        if mode == 1:
            (pt, pb), (pl, pr) = self._same_pads(H, KH, sh, dh), self._same_pads(W, KW, sw, dw)
        elif mode == 2:  # causal (Conv1D): all the padding before
            pt, pb, pl, pr = (KH - 1) * dh, 0, (KW - 1) * dw, 0
        else:
            pt = pb = pl = pr = 0
        w = self.node("Transpose", [x[1]], perm=[3, 2, 0, 1])   # (kh, kw, in/g, out) -> (out, in/g, kh, kw)
        inputs = [self._to_nchw(x[0]), w] + ([x[2]] if len(x) > 2 else [])
        y = self.node("Conv", inputs, strides=[sh, sw], dilations=[dh, dw],
                      pads=[pt, pl, pb, pr], group=int(attrs["groups"]), kernel_shape=[KH, KW])
        return self._to_nhwc(y)

    def op_conv2d_transpose(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        self._same(k, attrs, attrs_b)
        N, H, W, C = ins[0].shape
        KH, KW, OC, _ = ins[1].shape
        sh, sw, dh, dw = (int(attrs[n]) for n in ("stride_h", "stride_w", "dilation_h", "dilation_w"))
        pt, pl, oh, ow = (int(attrs[n]) for n in ("pad_top", "pad_left", "out_h", "out_w"))
        pads_end, out_pad = [], []
        for n_in, kk, s_, d_, p0, o in ((H, KH, sh, dh, pt, oh), (W, KW, sw, dw, pl, ow)):
            pe = s_ * (n_in - 1) + (kk - 1) * d_ + 1 - p0 - o
            pads_end.append(max(pe, 0))
            out_pad.append(max(-pe, 0))
        w = self.node("Transpose", [x[1]], perm=[3, 2, 0, 1])   # (kh, kw, out, in) -> (in, out, kh, kw)
        inputs = [self._to_nchw(x[0]), w] + ([x[2]] if len(x) > 2 else [])
        y = self.node("ConvTranspose", inputs, strides=[sh, sw], dilations=[dh, dw],
                      pads=[pt, pl, pads_end[0], pads_end[1]], output_padding=out_pad,
                      kernel_shape=[KH, KW])
        return self._to_nhwc(y)

    def op_pool2d(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        self._same(k, attrs, attrs_b)
        N, H, W, C = ins[0].shape
        ph, pw, sh, sw = (int(attrs[n]) for n in ("pool_h", "pool_w", "stride_h", "stride_w"))
        if attrs["same"]:
            (pt, pb), (pl, pr) = self._same_pads(H, ph, sh), self._same_pads(W, pw, sw)
        else:
            pt = pb = pl = pr = 0
        common = dict(kernel_shape=[ph, pw], strides=[sh, sw], pads=[pt, pl, pb, pr])
        if attrs["kind"] == 0:
            y = self.node("MaxPool", [self._to_nchw(x[0])], **common)
        else:   # padding is not counted in the mean (TensorFlow's "SAME" average)
            y = self.node("AveragePool", [self._to_nchw(x[0])], count_include_pad=0, **common)
        return self._to_nhwc(y)

    def _channel_shape(self, ndim, axis, c):
        shape = [1] * ndim
        shape[axis] = c
        return shape

    def op_batch_normalization(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        if attrs["training"]:
            self.fail(k, "runs in training mode (batch statistics); export calls the model "
                         "with training=False")
        nd, axis = ins[0].ndim, int(attrs["axis"]) % ins[0].ndim
        mean, var = np.asarray(ins[1], np.float32), np.asarray(ins[2], np.float32)
        j = 3
        gamma = beta = None
        if attrs["has_gamma"]:
            gamma, j = np.asarray(ins[j], np.float32), j + 1
        if attrs["has_beta"]:
            beta = np.asarray(ins[j], np.float32)
        eps = np.float32(attrs["epsilon"])
        shape = self._channel_shape(nd, axis, mean.size)
        # y = (x - mean) * rstd * gamma + beta, with the variables' current values
        rstd = (1.0 / np.sqrt(var + eps)).astype(np.float32)
        scale = rstd * gamma if gamma is not None else rstd
        y = self.node("Sub", [x[0], self.const(mean.reshape(shape), "bn_mean")])
        y = self.node("Mul", [y, self.const(scale.reshape(shape).astype(np.float32), "bn_scale")])
        if beta is not None:
            y = self.node("Add", [y, self.const(beta.reshape(shape), "bn_beta")])
        return y

    def op_layer_normalization(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        self._same(k, attrs, attrs_b, "axis", "naxes", "epsilon", "rms", "has_gamma", "has_beta")
        nd = ins[0].ndim
        axis, naxes = int(attrs["axis"]) % nd, int(attrs["naxes"])
        if axis + naxes != nd:
            self.fail(k, "normalizes axes that are not the last ones")
        eps = float(attrs["epsilon"])
        norm_shape = list(ins[0].shape[axis:])
        j, gamma, beta = 1, None, None
        if attrs["has_gamma"]:
            gamma, j = x[j], j + 1
        if attrs["has_beta"]:
            beta = x[j]

        def shaped(name):
            return self.node("Reshape", [name, self.const(np.asarray(norm_shape, np.int64), "shape")])
        axes = self._axes(list(range(axis, nd)))
        if attrs["rms"]:
            ms = self.node("ReduceMean", [self.node("Mul", [x[0], x[0]]), axes], keepdims=1)
            y = self.node("Div", [x[0], self.node("Sqrt", [self.node("Add", [
                ms, self.const(np.float32(eps))])])])
        else:
            mean = self.node("ReduceMean", [x[0], axes], keepdims=1)
            c = self.node("Sub", [x[0], mean])
            var = self.node("ReduceMean", [self.node("Mul", [c, c]), axes], keepdims=1)
            y = self.node("Div", [c, self.node("Sqrt", [self.node("Add", [
                var, self.const(np.float32(eps))])])])
        if gamma is not None:
            y = self.node("Mul", [y, shaped(gamma)])
        if beta is not None:
            y = self.node("Add", [y, shaped(beta)])
        return y

    def op_group_normalization(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        self._same(k, attrs, attrs_b)
        shape = list(ins[0].shape)
        G, C = int(attrs["groups"]), shape[-1]
        eps = np.float32(attrs["epsilon"])
        grouped = self.node("Reshape", [x[0], self.const(np.asarray(
            [0] + shape[1:-1] + [G, C // G], np.int64), "shape")])
        axes = self._axes(list(range(1, len(shape) - 1)) + [len(shape)])
        mean = self.node("ReduceMean", [grouped, axes], keepdims=1)
        c = self.node("Sub", [grouped, mean])
        var = self.node("ReduceMean", [self.node("Mul", [c, c]), axes], keepdims=1)
        y = self.node("Div", [c, self.node("Sqrt", [self.node("Add", [var, self.const(eps)])])])
        y = self.node("Reshape", [y, self.const(np.asarray([0] + shape[1:], np.int64), "shape")])
        j = 1
        if attrs["has_gamma"]:
            y, j = self.node("Mul", [y, x[j]]), j + 1
        if attrs["has_beta"]:
            y = self.node("Add", [y, x[j]])
        return y

    def op_pad2d(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        self._same(k, attrs, attrs_b)
        t, b, l, r = (int(attrs[n]) for n in ("top", "bottom", "left", "right"))
        pads = np.asarray([0, t, l, 0, 0, b, r, 0], np.int64)
        return self.node("Pad", [x[0], self.const(pads, "pads")], mode="constant")

    def op_resize2d(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        self._same(k, attrs, attrs_b)
        N, H, W, C = ins[0].shape
        sizes = np.asarray([int(attrs["out_h"]), int(attrs["out_w"])], np.int64)
        if attrs["bilinear"]:
            return self.node("Resize", [x[0], "", "", self.const(sizes, "sizes")], axes=[1, 2],
                             mode="linear", coordinate_transformation_mode="half_pixel")
        return self.node("Resize", [x[0], "", "", self.const(sizes, "sizes")], axes=[1, 2],
                         mode="nearest", coordinate_transformation_mode="asymmetric",
                         nearest_mode="floor") if (int(attrs["out_h"]) % H == 0 and
                                                   int(attrs["out_w"]) % W == 0) else \
            self.fail(k, "(nearest resize by a factor that is not an integer) has no ONNX translation yet")

    def op_permute(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        self._same(k, attrs, attrs_b)
        return self.node("Transpose", [x[0]], perm=[int(p) for p in attrs["perm"]])

    def op_embedding(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        idx = x[1]
        if np.asarray(ins[1]).dtype.kind == "f":
            idx = self.node("Cast", [idx], to=self.TensorProto.INT64)
        out = [self.node("Gather", [x[0], idx], axis=0)]
        if len(outs) > 1:   # the mask_zero mask: idx != 0 as 1.0/0.0
            nz = self.node("Not", [self.node("Equal", [idx, self.const(
                np.zeros((), np.asarray(ins[1]).dtype if np.asarray(ins[1]).dtype.kind != "f"
                         else np.int64), "zero")])])
            out.append(self.node("Cast", [nz], to=self.TensorProto.FLOAT))
        return out

    def op_attention(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        self._same(k, attrs, attrs_b, "scale", "causal", "layout", "mode")
        q, kk, v = x[:3]
        if int(attrs["layout"]) == 1:   # (B, L, H, D) -> (B, H, L, D)
            q, kk, v = (self.node("Transpose", [t], perm=[0, 2, 1, 3]) for t in (q, kk, v))
        D = ins[0].shape[-1]
        scale = float(attrs["scale"]) if attrs["scale"] > 0 else 1.0 / math.sqrt(D)
        s = self.node("MatMul", [q, self.node("Transpose", [kk], perm=[0, 1, 3, 2])])
        s = self.node("Mul", [s, self.const(np.float32(scale))])
        lq = ins[0].shape[1 if int(attrs["layout"]) == 1 else 2]
        lk = ins[1].shape[1 if int(attrs["layout"]) == 1 else 2]
        neg = self.const(np.float32(-1e30))
        keep = None
        if len(x) > 3:
            mdt = np.asarray(ins[3]).dtype
            if mdt.kind == "f":
                s = self.node("Add", [s, x[3]])
            else:
                keep = self.node("Cast", [x[3]], to=self.TensorProto.BOOL)
        if attrs["causal"]:
            tri = self.const(np.tril(np.ones((lq, lk), bool)), "causal")
            keep = tri if keep is None else self.node("And", [keep, tri])
        if keep is not None:
            s = self.node("Where", [keep, s, neg])
        p = self.node("Softmax", [s], axis=-1)
        if keep is not None:   # a row with every key masked gives 0, as maas's kernel
            p = self.node("Where", [keep, p, self.const(np.float32(0.0))])
        out = self.node("MatMul", [p, v])
        if int(attrs["layout"]) == 1:
            out = self.node("Transpose", [out], perm=[0, 2, 1, 3])
        return [out, p] if len(outs) > 1 else out

    op_attention_dropout = op_attention   # dropout is the identity at inference

    def op_qdense(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        """maas's int8 Dense in ONNX ops with the same arithmetic: each row
        quantized by its abs-max (or the calibrated scale), MatMulInteger on
        int8 x int8, then acc / (x_scale * kernel_scale) + bias."""
        from ..quantization import unpack_kernel
        K, U = ins[0].shape[-1], ins[2].shape[0]
        q = unpack_kernel(np.asarray(ins[1]), K, U)
        xs = x[0]
        if attrs["static"]:
            sx = x[-1]
        else:   # 127 / (max|x| + 1e-7) per row
            amax = self.node("ReduceMax", [self.node("Abs", [xs]), self._axes([-1])], keepdims=1)
            sx = self.node("Div", [self.const(np.float32(127.0)),
                                   self.node("Add", [amax, self.const(np.float32(1e-7))])])
        a = self.node("Clip", [self.node("Round", [self.node("Mul", [xs, sx])]),
                               self.const(np.float32(-127.0)), self.const(np.float32(127.0))])
        a = self.node("Cast", [a], to=self.TensorProto.INT8)
        acc = self.node("MatMulInteger", [a, self.const(q, "qkernel")])
        den = self.node("Mul", [sx, x[2]])
        y = self.node("Div", [self.node("Cast", [acc], to=self.TensorProto.FLOAT), den])
        if attrs["has_bias"]:
            y = self.node("Add", [y, x[3]])
        return y

    _RNN_ACTS = {1: ("Tanh", None), 2: ("Sigmoid", None), 3: ("Relu", None),
                 4: ("HardSigmoid", (1.0 / 6.0, 0.5))}

    def _rnn_compact(self, xs, mask, T):
        """The kept steps of each row first, in order: x gathered by the
        inverse of pos[t] = cs[t] - 1 (kept) or count + t - cs[t] (masked),
        cs the inclusive cumulative sum of the mask; lens = max(count, 1)."""
        I64 = self.TensorProto.INT64
        mf = self.node("Cast", [mask], to=self.TensorProto.FLOAT)
        keep = self.node("Not", [self.node("Equal", [mf, self.const(np.float32(0.0))])])
        ki = self.node("Cast", [keep], to=I64)
        cs = self.node("CumSum", [ki, self.const(np.int64(1))])
        cnt = self.node("ReduceSum", [ki, self._axes([1])], keepdims=1)          # (B, 1)
        ar = self.const(np.arange(T, dtype=np.int64)[None], "steps")             # (1, T)
        one = self.const(np.int64(1))
        pos = self.node("Where", [keep, self.node("Sub", [cs, one]),
                                  self.node("Add", [cnt, self.node("Sub", [ar, cs])])])
        zeros = self.node("Mul", [ki, self.const(np.int64(0))])
        inv = self.node("ScatterElements", [zeros, pos, self.node("Add", [zeros, ar])], axis=1)
        idx = self.node("Expand", [self.node("Unsqueeze", [inv, self._axes([2])]),
                                   self.node("Shape", [xs])])
        xc = self.node("GatherElements", [xs, idx], axis=1)
        lens = self.node("Cast", [self.node("Squeeze", [self.node("Max", [cnt, one]), self._axes([1])])],
                         to=self.TensorProto.INT32)
        return {"x": xc, "lens": lens, "keep": keep, "cs": cs, "cnt": cnt}

    def _rnn_masked_outputs(self, attrs, names, m, h0, c0, cell, T, nouts):
        """Keras's outputs from the op's run over the compacted steps."""
        keep, cs, cnt = m["keep"], m["cs"], m["cnt"]
        one = self.const(np.int64(1))
        yc = self.node("Transpose", [self.node("Squeeze", [names[0], self._axes([1])])],
                       perm=[1, 0, 2])                                           # (B, T, U)
        h = self.node("Squeeze", [names[1], self._axes([0])])                   # (B, U)
        zero_h = self.node("Mul", [h, self.const(np.float32(0.0))])
        none = self.node("Equal", [cnt, self.const(np.int64(0))])               # (B, 1)
        h_fin = self.node("Where", [none, h0 if h0 is not None else zero_h, h])
        back = bool(attrs["go_backwards"])
        results = []
        if attrs["return_sequences"]:
            # kept step t: compacted step cs-1; masked: the last processed kept step,
            # cs-1 forwards or cs backwards (none yet: cs == 0 / cs == count)
            csm1 = self.node("Sub", [cs, one])
            gidx = self.node("Where", [keep, csm1, cs]) if back else csm1
            gidx = self.node("Clip", [gidx, self.const(np.int64(0)), self.const(np.int64(T - 1))])
            gidx3 = self.node("Expand", [self.node("Unsqueeze", [gidx, self._axes([2])]),
                                         self.node("Shape", [yc])])
            got = self.node("GatherElements", [yc, gidx3], axis=1)
            fresh = self.node("GreaterOrEqual", [cs, cnt]) if back else \
                self.node("Equal", [cs, self.const(np.int64(0))])
            carried = self.node("Where", [self.node("Unsqueeze", [fresh, self._axes([2])]),
                                          self.node("Unsqueeze", [h0 if h0 is not None else zero_h,
                                                                  self._axes([1])]), got])
            if attrs["zero_output"]:
                carried = self.node("Mul", [carried, self.const(np.float32(0.0))])
            seq = self.node("Where", [self.node("Unsqueeze", [keep, self._axes([2])]), got, carried])
            if back and not attrs.get("unreverse"):   # Keras: in processing order
                seq = self.node("Slice", [seq, self._axes([-1]), self._axes([-(2 ** 62)]),
                                          self._axes([1]), self._axes([-1])])
            results.append(seq)
        else:
            last = h_fin
            if attrs["zero_output"]:   # the last processed step masked: a zero output
                col = self._axes([0]) if back else self._axes([T - 1])
                on = self.node("Gather", [keep, col], axis=1)                   # (B, 1)
                last = self.node("Where", [on, h_fin, zero_h])
            results.append(last)
        results.append(h_fin)
        if cell == 1:
            c = self.node("Squeeze", [names[2], self._axes([0])])
            zero_c = self.node("Mul", [c, self.const(np.float32(0.0))])
            results.append(self.node("Where", [none, c0 if c0 is not None else zero_c, c]))
        return results[:nouts]

    def op_rnn(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        """SimpleRNN / LSTM / GRU as ONNX's RNN / LSTM / GRU, Keras's gate
        order mapped (LSTM i,f,c,o -> i,o,f,c; GRU z,r,h as ONNX), GRU's
        reset_after as linear_before_reset=1 (reset_after=False as 0).

        A mask becomes the op's ``sequence_lens``: the kept steps of each row
        are moved to its front in order (a permutation from the mask's
        cumulative sum), the op runs over ``sum(mask)`` steps (forwards, or
        ``direction="reverse"`` for go_backwards), and each output step is
        gathered back to its place, a masked step repeating the carried state
        (or 0 with zero_output), as Keras's loop does. For right-padded
        masks the permutation is the identity; any mask is exact."""
        self._same(k, attrs, attrs_b, "cell", "activation", "recurrent_activation",
                   "return_sequences", "go_backwards", "has_bias", "has_mask", "has_h0", "has_c0",
                   "zero_output", "reset_before")
        if attrs.get("has_rdrop"):
            self.fail(k, "runs with recurrent dropout")
        if attrs.get("projected"):
            self.fail(k, "takes an int8 input projection (quantize('int8')); export the float "
                         "model")
        cell = int(attrs["cell"])
        B, T, F = ins[0].shape
        W, R = np.asarray(ins[1], np.float32), np.asarray(ins[2], np.float32)
        U = R.shape[0]
        G = (1, 4, 3)[cell]
        j = 3
        bias = None
        if attrs["has_bias"]:
            bias, j = np.asarray(ins[3], np.float32), 4
        mask = None
        if attrs["has_mask"]:
            mask, j = x[j], j + 1
        h0 = c0 = None
        if attrs["has_h0"]:
            h0, j = x[j], j + 1
        if attrs["has_c0"]:
            c0 = x[j]
        acts = []
        for a in (attrs["recurrent_activation"], attrs["activation"]):
            if int(a) not in self._RNN_ACTS:
                self.fail(k, f"uses activation {int(a)} (linear), which ONNX's recurrent ops lack")
            acts.append(self._RNN_ACTS[int(a)])
        order = [0, 3, 1, 2] if cell == 1 else list(range(G))   # ONNX's gate order from Keras's

        def gates(m):   # (rows, G*U) -> (G*U, rows) in ONNX's order
            blocks = [m[:, g * U:(g + 1) * U] for g in range(G)]
            return np.concatenate([blocks[g] for g in order], axis=1).T[None]
        Wo, Ro = gates(W), gates(R)
        # GRU reset_after (with or without a bias): linear_before_reset=1;
        # reset_after=False (one input bias): 0
        lbr = 1 if cell == 2 and not attrs.get("reset_before") else 0
        if bias is None:
            Bo = np.zeros((1, 2 * G * U), np.float32)
        elif bias.ndim == 2:   # GRU reset_after: input and recurrent biases
            Bo = np.concatenate([gates(bias[0:1])[..., 0], gates(bias[1:2])[..., 0]], axis=1)
        else:
            Bo = np.concatenate([gates(bias[None])[..., 0], np.zeros((1, G * U), np.float32)], axis=1)
        xs = x[0]
        m = None
        if mask is not None:
            m = self._rnn_compact(xs, mask, T)
            xs = m["x"]
        elif attrs["go_backwards"]:   # Keras reads the steps last to first
            xs = self.node("Slice", [xs, self._axes([-1]), self._axes([-(2 ** 62)]), self._axes([1]),
                                     self._axes([-1])])
        xs = self.node("Transpose", [xs], perm=[1, 0, 2])   # (T, B, F)
        inputs = [xs, self.const(Wo, "W"), self.const(Ro, "R"), self.const(Bo.astype(np.float32), "B"),
                  m["lens"] if m else ""]
        if h0 is not None or c0 is not None:
            inputs.append(self.node("Unsqueeze", [h0, self._axes([0])]) if h0 is not None else "")
        if c0 is not None:
            inputs.append(self.node("Unsqueeze", [c0, self._axes([0])]))
        while inputs and inputs[-1] == "":
            inputs.pop()
        op = ("RNN", "LSTM", "GRU")[cell]
        names = [self.fresh("rnn_y"), self.fresh("rnn_h")] + ([self.fresh("rnn_c")] if cell == 1 else [])
        kw = {}
        if cell == 2:
            kw["linear_before_reset"] = lbr
        ract, act = acts
        if cell == 0:
            act_list = [act]
        elif cell == 1:
            act_list = [ract, act, act]
        else:
            act_list = [ract, act]
        kw["activations"] = [a for a, _ in act_list]
        alphas = [p[0] for _, p in act_list if p]
        betas = [p[1] for _, p in act_list if p]
        if alphas:   # consumed in order by the activations that take them
            kw["activation_alpha"], kw["activation_beta"] = alphas, betas
        if m is not None and attrs["go_backwards"]:
            kw["direction"] = "reverse"
        self.nodes.append(self.helper.make_node(op, inputs, names, hidden_size=U, **kw))
        if m is not None:
            return self._rnn_masked_outputs(attrs, names, m, h0, c0, cell, T, len(outs))
        y = self.node("Squeeze", [names[0], self._axes([1])])           # (T, B, U)
        seq = self.node("Transpose", [y], perm=[1, 0, 2])              # (B, T, U)
        if attrs["go_backwards"] and attrs.get("unreverse"):   # Bidirectional: back in input order
            seq = self.node("Slice", [seq, self._axes([-1]), self._axes([-(2 ** 62)]),
                                      self._axes([1]), self._axes([-1])])
        h = self.node("Squeeze", [names[1], self._axes([0])])          # (B, U)
        results = [seq if attrs["return_sequences"] else h, h]
        if cell == 1:
            results.append(self.node("Squeeze", [names[2], self._axes([0])]))
        return results[:len(outs)]

    def op_qconv2d(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        """maas's int8 Conv with the same arithmetic: the im2col rows (a Conv
        with one-hot float kernels: each output channel copies one input
        value, exactly), each row quantized by its abs-max (or the
        calibrated scale), MatMulInteger on int8 x int8 per group, then
        acc / (x_scale * kernel_scale) + bias. (ConvInteger cannot stand
        for it: its input has one scale, maas's one per output pixel.)"""
        from ..quantization.conv import unpack_conv_kernel
        self._same(k, attrs, attrs_b)
        N, H, W, C = ins[0].shape
        KH, KW, G = int(attrs["kernel_h"]), int(attrs["kernel_w"]), int(attrs["groups"])
        OC = ins[2].shape[0]
        Cg, OCg = C // G, OC // G
        K = KH * KW * Cg
        sh, sw, dh, dw = (int(attrs[n]) for n in ("stride_h", "stride_w", "dilation_h", "dilation_w"))
        mode = int(attrs["padding"])
        if mode == 1:
            (pt, pb), (pl, pr) = self._same_pads(H, KH, sh, dh), self._same_pads(W, KW, sw, dw)
        elif mode == 2:
            pt, pb, pl, pr = (KH - 1) * dh, 0, (KW - 1) * dw, 0
        else:
            pt = pb = pl = pr = 0
        q = unpack_conv_kernel(np.asarray(ins[1]), (KH, KW, Cg, OC), G).reshape(K, OC)
        eye = np.zeros((G * K, Cg, KH, KW), np.float32)   # channel g*K + (i*KW + j)*Cg + c
        for i in range(KH):
            for j in range(KW):
                for c in range(Cg):
                    eye[np.arange(G) * K + (i * KW + j) * Cg + c, c, i, j] = 1.0
        cols = self.node("Conv", [self._to_nchw(x[0]), self.const(eye, "im2col")],
                         strides=[sh, sw], dilations=[dh, dw], pads=[pt, pl, pb, pr], group=G,
                         kernel_shape=[KH, KW])
        cols = self._to_nhwc(cols)                        # (N, OH, OW, G*K)
        parts = []
        for g in range(G):
            p = cols if G == 1 else self.node("Slice", [cols, self._axes([g * K]),
                                                        self._axes([(g + 1) * K]), self._axes([-1])])
            if attrs["static"]:
                sx = x[-1]
            else:
                amax = self.node("ReduceMax", [self.node("Abs", [p]), self._axes([-1])], keepdims=1)
                sx = self.node("Div", [self.const(np.float32(127.0)),
                                       self.node("Add", [amax, self.const(np.float32(1e-7))])])
            a = self.node("Clip", [self.node("Round", [self.node("Mul", [p, sx])]),
                                   self.const(np.float32(-127.0)), self.const(np.float32(127.0))])
            a = self.node("Cast", [a], to=self.TensorProto.INT8)
            acc = self.node("MatMulInteger", [a, self.const(
                np.ascontiguousarray(q[:, g * OCg:(g + 1) * OCg]), "qkernel")])
            scale = x[2] if G == 1 else self.const(np.asarray(ins[2])[g * OCg:(g + 1) * OCg],
                                                   "kernel_scale")
            y = self.node("Div", [self.node("Cast", [acc], to=self.TensorProto.FLOAT),
                                  self.node("Mul", [sx, scale])])
            if attrs["has_bias"]:
                b = x[3] if G == 1 else self.const(np.asarray(ins[3])[g * OCg:(g + 1) * OCg], "bias")
                y = self.node("Add", [y, b])
            parts.append(y)
        return parts[0] if G == 1 else self.node("Concat", parts, axis=-1)

    def op_qembedding(self, k, attrs, attrs_b, ins, outs, outs_b, x):
        """Keras 3's int8 Embedding: Gather the int8 rows and their scales,
        out = float(q) / scale."""
        idx = x[2]
        if np.asarray(ins[2]).dtype.kind == "f":
            idx = self.node("Cast", [idx], to=self.TensorProto.INT64)
        rows = self.node("Cast", [self.node("Gather", [x[0], idx], axis=0)],
                         to=self.TensorProto.FLOAT)
        scale = self.node("Unsqueeze", [self.node("Gather", [x[1], idx], axis=0), self._axes([-1])])
        out = [self.node("Div", [rows, scale])]
        if len(outs) > 1:
            nz = self.node("Not", [self.node("Equal", [idx, self.const(
                np.zeros((), np.asarray(ins[2]).dtype if np.asarray(ins[2]).dtype.kind != "f"
                         else np.int64), "zero")])])
            out.append(self.node("Cast", [nz], to=self.TensorProto.FLOAT))
        return out


def export_onnx(model, filepath, input_signature=None, verbose=False):
    """Writes ``model`` as an ONNX file (opset 18, IR version 8, the batch
    axis dynamic and named ``batch``) and checks it with
    ``onnx.checker.check_model(full_check=True)``; returns the path.

    >>> maas.export.export_onnx(model, "model.onnx")   # doctest: +SKIP
    """
    onnx, TensorProto, helper, numpy_helper = _onnx()
    specs, input_names = _specs(model, input_signature)
    if not getattr(model, "built", True) or not model.weights:
        # build outside the trace (weight initialisers are ops too)
        xs = [np.zeros((1,) + tuple(shape[1:]), dt) for shape, dt in specs]
        model(xs[0] if len(xs) == 1 else xs, training=False)
    a = _Trace(model, specs, _TRACE_BATCHES[0])
    b = _Trace(model, specs, _TRACE_BATCHES[1])
    if a.reason:
        raise ExportError(f"cannot export {type(model).__name__} to ONNX: its call() cannot be "
                          f"traced into a graph ({a.reason})")
    if len(a.nodes) != len(b.nodes):
        raise ExportError(f"cannot export {type(model).__name__} to ONNX: its call() records "
                          f"{len(a.nodes)} ops at batch {_TRACE_BATCHES[0]} and {len(b.nodes)} "
                          f"at batch {_TRACE_BATCHES[1]}")
    names = getattr(model, "output_names", None) or []
    if isinstance(a.structure, dict):
        names = list(a.structure)
    if len(names) != len(a.outputs):
        names = [f"output_{i}" for i in range(len(a.outputs))]
    seen = {}
    for i, nm in enumerate(names):   # one layer's several outputs: name_1, name_2, ...
        if names.count(nm) > 1:
            seen[nm] = seen.get(nm, 0) + 1
            names[i] = f"{nm}_{seen[nm]}" if seen[nm] > 1 else nm
    w = _WriterNN(model, a, b, input_names, names)
    w.write()
    # each output named as the model names it (an Identity from its producer)
    graph_outputs = []
    for t, nm in zip(a.outputs, names):
        cid = a.core.core_ids([t])[0]
        src = w.names.get(cid) or w.value(t, 0, 0)
        w.node("Identity", [src], [nm])
        arr = np.asarray(t)
        graph_outputs.append(helper.make_tensor_value_info(
            nm, _elem_type(arr.dtype), ["batch"] + list(arr.shape[1:])))
    used = {i for n in w.nodes for i in n.input}
    w.inits = [t for t in w.inits if t.name in used]   # weights folded into constants (BatchNorm)
    graph_inputs = [helper.make_tensor_value_info(nm, _elem_type(dt), ["batch"] + list(shape[1:]))
                    for nm, (shape, dt) in zip(input_names, specs)]
    graph = helper.make_graph(w.nodes, getattr(model, "name", "maas_model") or "maas_model",
                              graph_inputs, graph_outputs, initializer=w.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="maas", ir_version=IR_VERSION)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(filepath))
    if verbose:
        print(f"Saved ONNX model to {filepath} ({len(w.nodes)} nodes, opset {OPSET})")
    return str(filepath)
