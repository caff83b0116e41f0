"""The adapter between a model and the server.

The server never calls a model directly: it calls a :class:`ServedModel`,
which is a name, a version, a ``predict_fn`` mapping a float32 array of shape
``(batch, *input_shape)`` to ``(batch, *output_shape)``, and the two shapes.
:func:`from_model` builds one from anything with ``.predict(x, verbose=0)``
(a maas Keras-like model), a compiled plan, or a plain callable.

>>> import numpy as np
>>> m = ServedModel("double", 1, lambda x: x * 2, (3,), (3,))
>>> m.predict(np.ones((2, 3), np.float32)).tolist()
[[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]
"""
from __future__ import annotations

import os
import threading
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["ServedModel", "from_model", "default_loader", "resolve_loader"]


class ServedModel:
    """A model as the server sees it.

    ``thread_safe=False`` (the default) serializes calls to ``predict_fn``
    with a lock: a compiled plan owns its activation buffers, so two threads
    may not run it at once. With dynamic batching on, only the batch's
    leader calls it, one batch at a time, anyway.
    """

    def __init__(self, name: str, version: int | str, predict_fn: Callable[[np.ndarray], Any],
                 input_shape: Sequence[int | None], output_shape: Sequence[int | None],
                 input_name: str = "input", output_name: str = "output",
                 thread_safe: bool = False, platform: str = "maas"):
        if not callable(predict_fn):
            raise TypeError(f"predict_fn must be callable, received {predict_fn!r}")
        self.name = str(name)
        self.version = int(version)
        self.predict_fn = predict_fn
        self.input_shape = tuple(None if d is None or d < 0 else int(d) for d in input_shape)
        self.output_shape = tuple(None if d is None or d < 0 else int(d) for d in output_shape)
        self.input_name = input_name
        self.output_name = output_name
        self.platform = platform
        self._lock = None if thread_safe else threading.Lock()
        self.source_object = None  # the model object served (maas.serving.explain differentiates it)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Runs the model on a float32 batch and checks the output's shape."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self._lock is None:
            y = self.predict_fn(x)
        else:
            with self._lock:
                y = self.predict_fn(x)
        y = np.asarray(y, dtype=np.float32)
        if y.ndim == 1 and len(self.output_shape) == 1 and self.output_shape[0] == 1:
            y = y.reshape(-1, 1)
        if y.shape[0] != x.shape[0]:
            raise RuntimeError(f"model {self.name!r} returned {y.shape[0]} rows for {x.shape[0]}")
        return y

    def with_identity(self, name: str, version: int) -> "ServedModel":
        """The same model under another name and version (the repository's)."""
        m = ServedModel(name, version, self.predict_fn, self.input_shape, self.output_shape,
                        self.input_name, self.output_name, thread_safe=self._lock is None,
                        platform=self.platform)
        m._lock = self._lock
        m.source_object = self.source_object
        return m

    def __repr__(self):
        return (f"ServedModel({self.name!r}, version={self.version}, input_shape={self.input_shape}, "
                f"output_shape={self.output_shape})")


def _shape_without_batch(shape) -> tuple | None:
    if shape is None:
        return None
    if isinstance(shape, list) and shape and isinstance(shape[0], (tuple, list)):
        if len(shape) != 1:
            raise ValueError(f"maas.serving serves single-input, single-output models; "
                             f"the model has shapes {shape}")
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


def from_model(model: Any, name: str = "model", version: int = 1,
               input_shape: Sequence[int] | None = None, output_shape: Sequence[int] | None = None,
               input_name: str = "input", output_name: str = "output") -> ServedModel:
    """A :class:`ServedModel` from a model object.

    ``model`` may be a ServedModel (renamed), an object with
    ``.predict(x, verbose=0)`` (Keras-like models), an object with
    ``.predict(x)`` (a :class:`maas.engine.CompiledPlan`), or a callable.
    Shapes come from ``input_shape``/``output_shape`` arguments, else from
    the model's ``input_shape``/``inputs`` and ``output_shape``/``outputs``
    attributes, else (output only) from a probe with one row of zeros. A
    compiled plan's input size is its ``in_features``.
    """
    if isinstance(model, ServedModel):
        return model.with_identity(name, version)
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


def default_loader(path: str):
    """Loads a model file with ``maas.load_model``; a version folder means
    its ``model.maas``. The weights are copied into memory
    (``mmap=False``), not mapped: a file truncated or rewritten under a
    running server would otherwise kill its workers with SIGBUS or change
    the answers of the served version. The copy costs the model's size in
    each worker (mapped pages would be shared) and little start-up time
    (loading reads and checks every byte either way: 1.88 s against 1.70 s
    for a 95 MB model)."""
    from ..saving import load_model

    if os.path.isdir(path):
        path = os.path.join(path, "model.maas")
    try:
        return load_model(path, mmap=False)
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
