"""The adapter between a model and the server.

The server never calls a model directly: it calls a :class:`ServedModel`:
a name, a version, a ``predict_fn`` and the model's named, typed inputs and
outputs (:class:`TensorSpec`). A single-input model's ``predict_fn`` maps an
array of shape ``(batch, *input_shape)`` to ``(batch, *output_shape)``; a
model with several inputs takes a list of arrays in input order. It may
answer with one array, a list (in output order) or a dict keyed by output
name. Inputs reach it in their declared dtype (an INT64 input as int64,
never through float), and outputs keep theirs (an argmax stays INT64).
:func:`from_model` builds one from anything with ``.predict(x, verbose=0)``
(a maas Keras-like model, functional models with several named inputs and
outputs included), a compiled plan, or a plain callable.

>>> import numpy as np
>>> m = ServedModel("double", 1, lambda x: x * 2, (3,), (3,))
>>> m.predict(np.ones((2, 3), np.float32)).tolist()
[[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]
>>> two = ServedModel("sum", 1, lambda xs: {"s": xs[0] + xs[1]},
...                   inputs=[("a", "FP32", (2,)), ("b", "FP32", (2,))],
...                   outputs=[("s", "FP32", (2,))])
>>> two.run({"a": np.ones((1, 2), np.float32), "b": np.ones((1, 2), np.float32)})["s"].tolist()
[[2.0, 2.0]]
"""
from __future__ import annotations

import os
import threading
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["ServedModel", "TensorSpec", "from_model", "default_loader", "resolve_loader",
           "DATATYPE_OF", "datatype_of", "OnnxModel"]

# NumPy dtype kind+size -> Open Inference Protocol datatype
DATATYPE_OF = {"b1": "BOOL", "u1": "UINT8", "u2": "UINT16", "u4": "UINT32", "u8": "UINT64",
               "i1": "INT8", "i2": "INT16", "i4": "INT32", "i8": "INT64", "f2": "FP16",
               "f4": "FP32", "f8": "FP64"}
_NP = {v: np.dtype(("?" if k == "b1" else "<" + k)) for k, v in DATATYPE_OF.items()}


def datatype_of(dtype) -> str:
    """The V2 datatype of a NumPy dtype (BYTES for strings and objects)."""
    dt = np.dtype(dtype)
    if dt.kind in "OSU":
        return "BYTES"
    got = DATATYPE_OF.get(f"{dt.kind}{dt.itemsize}")
    if got is None:
        raise TypeError(f"dtype {dt} has no Open Inference Protocol datatype")
    return got


class TensorSpec:
    """A named input or output: its V2 datatype and its shape without the
    batch axis (``None`` for a variable axis)."""
    __slots__ = ("name", "datatype", "shape")

    def __init__(self, name: str, datatype: str = "FP32", shape: Sequence[int | None] = ()):
        if datatype not in _NP and datatype != "BYTES":
            raise ValueError(f"datatype must be one of {', '.join(_NP)} or BYTES, received {datatype!r}")
        self.name = str(name)
        self.datatype = datatype
        self.shape = tuple(None if d is None or d < 0 else int(d) for d in shape)

    @classmethod
    def of(cls, x) -> "TensorSpec":
        if isinstance(x, TensorSpec):
            return x
        if isinstance(x, dict):
            return cls(x["name"], x.get("datatype", "FP32"), x.get("shape", ()))
        return cls(*x)

    @property
    def dtype(self) -> np.dtype:
        return _NP[self.datatype] if self.datatype != "BYTES" else np.dtype(object)

    def copy(self, name=None) -> "TensorSpec":
        return TensorSpec(self.name if name is None else name, self.datatype, self.shape)

    def __repr__(self):
        return f"TensorSpec({self.name!r}, {self.datatype!r}, {self.shape})"


class ServedModel:
    """A model as the server sees it.

    Give either ``input_shape``/``output_shape`` (one FP32 input and output,
    named ``input_name``/``output_name``) or ``inputs``/``outputs``: lists of
    :class:`TensorSpec` or ``(name, datatype, shape)`` tuples.
    ``thread_safe=False`` (the default) serializes calls to ``predict_fn``
    with a lock: a compiled plan owns its activation buffers, so two threads
    may not run it at once. With dynamic batching on, only the batch's
    leader calls it, one batch at a time, anyway. ``labels`` (a list of
    class names, from ``labels.txt``) name the classes of the
    classification extension.
    """

    def __init__(self, name: str, version: int | str, predict_fn: Callable[[Any], Any],
                 input_shape: Sequence[int | None] | None = None,
                 output_shape: Sequence[int | None] | None = None,
                 input_name: str = "input", output_name: str = "output",
                 thread_safe: bool = False, platform: str = "maas", *, inputs=None, outputs=None,
                 labels=None):
        if not callable(predict_fn):
            raise TypeError(f"predict_fn must be callable, received {predict_fn!r}")
        self.name = str(name)
        self.version = int(version)
        self.predict_fn = predict_fn
        if inputs is None:
            if input_shape is None:
                raise TypeError("give input_shape (one input) or inputs=[(name, datatype, shape)]")
            inputs = [TensorSpec(input_name, "FP32", input_shape)]
        if outputs is None:
            if output_shape is None:
                raise TypeError("give output_shape (one output) or outputs=[(name, datatype, shape)]")
            outputs = [TensorSpec(output_name, "FP32", output_shape)]
        self.inputs = [TensorSpec.of(t) for t in inputs]
        self.outputs = [TensorSpec.of(t) for t in outputs]
        for what, specs in (("input", self.inputs), ("output", self.outputs)):
            if not specs:
                raise ValueError(f"a model needs at least one {what}")
            names = [s.name for s in specs]
            if len(set(names)) != len(names):
                raise ValueError(f"the model's {what} names repeat: {names}")
        self.platform = platform
        self.labels = list(labels) if labels is not None else None
        self._lock = None if thread_safe else threading.Lock()
        self.source_object = None  # the model object served (maas.serving.explain differentiates it)

    # -- the single-input, single-output view (and its renaming) ----------
    @property
    def input_shape(self):
        return self.inputs[0].shape

    @property
    def output_shape(self):
        return self.outputs[0].shape

    @property
    def input_name(self):
        return self.inputs[0].name

    @input_name.setter
    def input_name(self, v):
        self.inputs[0] = self.inputs[0].copy(v)

    @property
    def output_name(self):
        return self.outputs[0].name

    @output_name.setter
    def output_name(self, v):
        self.outputs[0] = self.outputs[0].copy(v)

    def input(self, name: str) -> TensorSpec | None:
        for s in self.inputs:
            if s.name == name:
                return s
        return None

    def output(self, name: str) -> TensorSpec | None:
        for s in self.outputs:
            if s.name == name:
                return s
        return None

    # -- running ----------------------------------------------------------
    def _call(self, arg):
        if self._lock is None:
            return self.predict_fn(arg)
        with self._lock:
            return self.predict_fn(arg)

    def run(self, feeds: dict) -> dict:
        """Runs the model on ``{input name: batch}`` (each in its spec's
        dtype) and answers ``{output name: batch}`` in the outputs' dtypes,
        checking that every output has one row per input row."""
        xs = [np.ascontiguousarray(feeds[s.name], dtype=s.dtype) for s in self.inputs]
        y = self._call(xs[0] if len(xs) == 1 else xs)
        return self._outputs(y, len(xs[0]))

    def _outputs(self, y, rows: int) -> dict:
        if isinstance(y, dict):
            missing = [s.name for s in self.outputs if s.name not in y]
            if missing:
                raise RuntimeError(f"model {self.name!r} answered no output {missing[0]!r} (it "
                                   f"answered {sorted(y)})")
            vals = [y[s.name] for s in self.outputs]
        elif isinstance(y, (list, tuple)):
            if len(y) != len(self.outputs):
                raise RuntimeError(f"model {self.name!r} answered {len(y)} outputs, it declares "
                                   f"{len(self.outputs)}")
            vals = list(y)
        else:
            if len(self.outputs) != 1:
                raise RuntimeError(f"model {self.name!r} answered one array, it declares "
                                   f"{len(self.outputs)} outputs")
            vals = [y]
        out = {}
        for s, v in zip(self.outputs, vals):
            v = np.asarray(v)
            if s.datatype != "BYTES" and v.dtype != s.dtype:
                v = v.astype(s.dtype)
            if v.ndim == 1 and len(s.shape) == 1 and s.shape[0] == 1:
                v = v.reshape(-1, 1)
            if v.ndim == 0 or v.shape[0] != rows:
                raise RuntimeError(f"model {self.name!r} returned {v.shape[0] if v.ndim else 0} "
                                   f"rows for {rows} in output {s.name!r}")
            out[s.name] = v
        return out

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Runs a single-input model on a batch and answers its first output."""
        return self.run({self.inputs[0].name: x})[self.outputs[0].name]

    def with_identity(self, name: str, version: int) -> "ServedModel":
        """The same model under another name and version (the repository's)."""
        m = ServedModel(name, version, self.predict_fn, inputs=[s.copy() for s in self.inputs],
                        outputs=[s.copy() for s in self.outputs], thread_safe=self._lock is None,
                        platform=self.platform, labels=self.labels)
        m._lock = self._lock
        m.source_object = self.source_object
        return m

    def __repr__(self):
        return f"ServedModel({self.name!r}, version={self.version}, inputs={self.inputs}, outputs={self.outputs})"


def _shape_without_batch(shape) -> tuple | None:
    if shape is None:
        return None
    if isinstance(shape, list) and shape and isinstance(shape[0], (tuple, list)):
        if len(shape) != 1:
            raise ValueError(f"several shapes {shape}")
        shape = shape[0]
    if hasattr(shape, "shape") and not isinstance(shape, (tuple, list)):
        shape = shape.shape  # a Keras-like KerasTensor / Input
    shape = tuple(shape)
    return tuple(None if d is None else int(d) for d in shape[1:])


def _attr_shape(model, *names):
    for n in names:
        v = getattr(model, n, None)
        if v is None:
            continue
        if isinstance(v, (list, tuple)) and len(v) == 1 and hasattr(v[0], "shape"):
            v = v[0].shape
        elif hasattr(v, "shape") and not isinstance(v, (tuple, list)):
            v = v.shape
        try:
            return _shape_without_batch(v)
        except (TypeError, ValueError):
            continue
    return None


def _tensor_dtype(t) -> str:
    try:
        return datatype_of(getattr(t, "dtype", None) or "float32")
    except TypeError:
        return "FP32"


def _graph_specs(model):
    """Named specs of a functional model with several inputs or outputs
    (input layer names; output names as Keras's ``output_names``)."""
    ins, outs = getattr(model, "inputs", None), getattr(model, "outputs", None)
    if not isinstance(ins, (list, tuple)) or not isinstance(outs, (list, tuple)) or not ins or not outs:
        return None
    if len(ins) == 1 and len(outs) == 1 and not isinstance(getattr(model, "_nested_outputs", None), dict):
        return None
    try:
        in_names = [t._keras_history[0].name for t in ins]
    except AttributeError:
        return None
    out_names = list(getattr(model, "output_names", None) or [f"output_{i}" for i in range(len(outs))])
    return ([TensorSpec(n, _tensor_dtype(t), _shape_without_batch(t.shape)) for n, t in zip(in_names, ins)],
            [TensorSpec(n, _tensor_dtype(t), _shape_without_batch(t.shape)) for n, t in zip(out_names, outs)])


def from_model(model: Any, name: str = "model", version: int = 1,
               input_shape: Sequence[int] | None = None, output_shape: Sequence[int] | None = None,
               input_name: str = "input", output_name: str = "output") -> ServedModel:
    """A :class:`ServedModel` from a model object.

    ``model`` may be a ServedModel (renamed), an object with
    ``.predict(x, verbose=0)`` (Keras-like models), an object with
    ``.predict(x)`` (a :class:`maas.engine.CompiledPlan`), or a callable.
    A functional model with several inputs or outputs is served with its
    input layers' names and its ``output_names`` (a dict output's keys).
    Shapes come from ``input_shape``/``output_shape`` arguments, else from
    the model's ``input_shape``/``inputs`` and ``output_shape``/``outputs``
    attributes, else (output only) from a probe with one row of zeros. A
    compiled plan's input size is its ``in_features``.
    """
    if isinstance(model, ServedModel):
        return model.with_identity(name, version)
    from .text import is_sentence_encoder, text_model

    if is_sentence_encoder(model):  # strings in, embeddings out (maas/serving/text.py)
        return text_model(model, name, version)
    predict = getattr(model, "predict", None)
    if predict is not None and callable(predict):
        def predict_fn(x, _p=predict):
            try:
                return _p(x, verbose=0)
            except TypeError as e:
                if "verbose" not in str(e):
                    raise
                return _p(x)
    elif callable(model):
        predict_fn = model
    else:
        raise TypeError(f"cannot serve {type(model).__name__}: it has no predict() and is not callable")

    if input_shape is None and output_shape is None:
        specs = _graph_specs(model)
        if specs is not None:
            return ServedModel(name, version, predict_fn, inputs=specs[0], outputs=specs[1])

    ishape = tuple(input_shape) if input_shape is not None else _attr_shape(model, "input_shape", "inputs")
    if ishape is None and getattr(model, "in_features", None):
        ishape = (int(model.in_features),)
    if ishape is None or any(d is None for d in ishape):
        if ishape is None:
            raise ValueError(f"cannot tell the input shape of {type(model).__name__}; "
                             f"pass input_shape=(features,) to from_model")
    oshape = tuple(output_shape) if output_shape is not None else _attr_shape(model, "output_shape", "outputs")
    if oshape is None:
        probe = np.zeros((1,) + tuple(d or 1 for d in ishape), np.float32)
        y = np.asarray(predict_fn(probe))
        oshape = tuple(y.shape[1:]) if y.ndim > 1 else (1,)
    served = ServedModel(name, version, predict_fn, ishape, oshape, input_name, output_name)
    served.source_object = model
    return served


# ONNX Runtime's tensor types -> Open Inference Protocol datatypes
_ORT_TYPES = {"tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(float16)": "FP16",
              "tensor(int8)": "INT8", "tensor(int16)": "INT16", "tensor(int32)": "INT32",
              "tensor(int64)": "INT64", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16",
              "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64", "tensor(bool)": "BOOL",
              "tensor(string)": "BYTES"}


class OnnxModel(ServedModel):
    """A ``model.onnx`` served through ONNX Runtime (the ``onnx`` extra).

    Inputs and outputs are the graph's: their names, datatypes and dims,
    a symbolic dim (``batch``, ``N``) reported as -1 like the batch axis.
    Every input and output must have a batch axis first (symbolic or -1):
    the server stacks requests along it. The session (CPU provider, graph
    optimizations on) runs on ``intra_op_threads`` threads (default
    ``maas.get_num_threads()``, which ``maas serve --model-threads`` sets),
    one inter-op thread, and does not spin while idle (the machine's cores
    are shared with the server's other workers). A file that is not a
    valid ONNX model raises :class:`maas.errors.ModelFormatError` (the
    server reports the version as failed, DATA_LOSS, and says why).

    >>> import maas, numpy as np
    >>> m = maas.Sequential([maas.Input((4,)), maas.layers.Dense(2)])
    >>> _ = m.export("/tmp/doc_m.onnx", format="onnx")   # doctest: +SKIP
    >>> OnnxModel("/tmp/doc_m.onnx").inputs              # doctest: +SKIP
    [TensorSpec('input_0', 'FP32', (4,))]
    """

    def __init__(self, path: str, name: str = "model", version: int = 1,
                 intra_op_threads: int | None = None):
        from ..errors import ModelFormatError
        try:
            import onnxruntime as ort
        except ImportError:  # pragma: no cover - the extra is missing
            raise ImportError("serving model.onnx needs onnxruntime: pip install 'maas[onnx]'") from None
        if intra_op_threads is None:
            from .. import get_num_threads
            intra_op_threads = get_num_threads()
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, int(intra_op_threads))
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        label = os.path.basename(path)
        if not os.path.isfile(path):
            import errno
            raise FileNotFoundError(errno.ENOENT, "no ONNX model file", path)
        try:
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        except (FileNotFoundError, PermissionError, IsADirectoryError):
            raise
        except Exception as e:  # InvalidProtobuf, Fail, InvalidGraph: not a usable ONNX file
            why = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise ModelFormatError(f"{label} is not a valid ONNX model (ONNX Runtime cannot load it): "
                                   f"{why[:500]}") from None

        def specs(values, what):
            out = []
            for v in values:
                dt = _ORT_TYPES.get(v.type)
                if dt is None:
                    raise ModelFormatError(f"{label}: {what} {v.name!r} has type {v.type}, which "
                                           f"the server cannot exchange")
                shape = list(v.shape or [])
                if not shape or not (shape[0] is None or isinstance(shape[0], str) or shape[0] < 0):
                    raise ModelFormatError(
                        f"{label}: {what} {v.name!r} has shape {shape}: serving needs a batch "
                        f"axis first (a symbolic dim such as 'batch'), not a fixed one")
                dims = [d if isinstance(d, int) and d >= 0 else None for d in shape[1:]]
                out.append(TensorSpec(v.name, dt, dims))
            return out

        inputs, outputs = specs(sess.get_inputs(), "input"), specs(sess.get_outputs(), "output")
        self.session = sess
        self.path = path
        self._output_names = [s.name for s in outputs]
        in_names = [s.name for s in inputs]

        def predict_fn(x, _run=sess.run, _outs=self._output_names, _ins=in_names):
            xs = [x] if len(_ins) == 1 else x
            return _run(_outs, dict(zip(_ins, xs)))

        # InferenceSession.run may be called from several threads at once
        super().__init__(name, version, predict_fn, inputs=inputs, outputs=outputs,
                         thread_safe=True, platform="onnxruntime_onnx")


def default_loader(path: str):
    """Loads a model file with ``maas.load_model``, or a ``.onnx`` file
    with ONNX Runtime (:class:`OnnxModel`). A version folder means its
    ``model.maas``; a folder with only a ``model.onnx`` serves that one
    (when a folder has both, ``model.maas`` is served and ``model.onnx``
    is ignored: the maas file is the model itself, the ONNX file an
    export of it). The weights are copied into memory
    (``mmap=False``), not mapped: a file truncated or rewritten under a
    running server would otherwise kill its workers with SIGBUS or change
    the answers of the served version. The copy costs the model's size in
    each worker (mapped pages would be shared) and little start-up time
    (loading reads and checks every byte either way: 1.88 s against 1.70 s
    for a 95 MB model). A sentence encoder's model.maas (a
    SentenceEmbeddingModel) loads as a :class:`maas.applications.SentenceEncoder`
    with the tokenizer files beside it, served as a text model
    (:mod:`maas.serving.text`)."""
    from ..saving import load_model
    from .text import as_text_model

    folder = path
    if os.path.isdir(path):
        maas_file, onnx_file = os.path.join(path, "model.maas"), os.path.join(path, "model.onnx")
        path = onnx_file if os.path.isfile(onnx_file) and not os.path.lexists(maas_file) else maas_file
    if path.endswith(".onnx"):
        return OnnxModel(path)
    try:
        # a SentenceEmbeddingModel becomes a SentenceEncoder with the tokenizer beside it
        return as_text_model(load_model(path, mmap=False), folder)
    except OSError as e:
        if e.errno is None or e.filename is not None:
            raise
        # the core's message quotes the path cut to 60 characters: name it whole
        # in .filename instead, so that the server can show it relative to its
        # repository
        what = str(e.strerror or "").split(" '", 1)[0] or "cannot load"
        raise type(e)(e.errno, f"{what}: {os.strerror(e.errno)}", path) from None


def resolve_loader(loader: Callable[[str], Any] | str | None) -> Callable[[str], Any]:
    """A loader from a callable, a ``"module:function"`` string, the
    ``MAAS_SERVING_LOADER`` environment variable, or :func:`default_loader`."""
    if loader is None:
        loader = os.environ.get("MAAS_SERVING_LOADER") or None
    if loader is None:
        return default_loader
    if isinstance(loader, str):
        import importlib

        mod, _, attr = loader.partition(":")
        if not attr:
            raise ValueError(f"a loader string is 'module:function', received {loader!r}")
        fn = importlib.import_module(mod)
        for part in attr.split("."):
            fn = getattr(fn, part)
        return fn
    if not callable(loader):
        raise TypeError(f"loader must be callable or 'module:function', received {loader!r}")
    return loader
