"""The Layer base class, symbolic KerasTensors and the Input layer.

A layer holds configuration and weights; ``call`` composes maas ops. Called
on real data (NumPy arrays, lists, maas Tensors) it runs eagerly; called on
a :class:`KerasTensor` (from ``maas.Input``) it records a node of a
functional graph and returns symbolic outputs.

>>> import maas
>>> layer = maas.layers.Dense(3)
>>> layer(maas.tensor([[1.0, 2.0]])).shape   # built lazily on first call
(1, 3)
>>> [w.name for w in layer.weights]
['kernel', 'bias']
"""
from __future__ import annotations

import inspect
import re
import threading
import weakref

import numpy as np

from .. import initializers as _initializers
from .. import metrics as _metrics_module
from .. import regularizers as _regularizers
from ..tensor import Tensor, Variable

_names: dict[str, int] = {}
_ctx = threading.local()
_pending_losses: set = set()   # ids of layers holding add_loss() values


def _snake(name: str) -> str:
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()


def unique_name(base: str) -> str:
    """Keras's naming: dense, dense_1, dense_2, ..."""
    n = _names.get(base, 0)
    _names[base] = n + 1
    return base if n == 0 else f"{base}_{n}"


def clear_session() -> None:
    """Resets the automatic layer names (``dense``, ``dense_1``, ...)."""
    _names.clear()


def _flatten(x):
    if isinstance(x, (list, tuple)):
        out = []
        for e in x:
            out.extend(_flatten(e))
        return out
    if isinstance(x, dict):
        return _flatten(list(x.values()))
    return [x]


def _map(fn, x):
    if isinstance(x, list):
        return [_map(fn, e) for e in x]
    if isinstance(x, tuple):
        return tuple(_map(fn, e) for e in x)
    if isinstance(x, dict):
        return {k: _map(fn, v) for k, v in x.items()}
    return fn(x)


def _shape_of(x):
    return tuple(x.shape)


# Keras masks ride on the tensors they describe, as Keras's `_keras_mask`
# does: maas Tensors have no attribute dict, so the mask of a tensor lives
# here, keyed by its id and dropped when the tensor goes (a weak reference).
_keras_masks: dict = {}


def get_keras_mask(x):
    """The mask attached to tensor ``x`` (a float32 (batch, steps) tensor of
    1.0 for kept steps and 0.0 for padding), or None."""
    if not _keras_masks:
        return None
    entry = _keras_masks.get(id(x))
    if entry is None or entry[0]() is not x:
        return None
    return entry[1]


def set_keras_mask(x, mask) -> None:
    """Attaches ``mask`` to tensor ``x`` (None removes it)."""
    key = id(x)
    if mask is None:
        _keras_masks.pop(key, None)
        return

    def drop(ref, key=key):
        entry = _keras_masks.get(key)
        if entry is not None and entry[0] is ref:
            del _keras_masks[key]

    try:
        _keras_masks[key] = (weakref.ref(x, drop), mask)
    except TypeError:   # not weak-referenceable (a Python scalar): no mask to carry
        pass


def _any_mask(masks) -> bool:
    return masks is not None and any(m is not None for m in _flatten(masks))


class KerasTensor:
    """A symbolic tensor: a shape (None for the batch), and the layer call
    that produced it. ``maas.Input((64,))`` returns one."""

    def __init__(self, shape, dtype="float32", name=None, history=None):
        self.shape = tuple(None if d is None else int(d) for d in shape)
        self.dtype = dtype
        self.name = name or "keras_tensor"
        self._keras_history = history  # (layer, node_index, tensor_index)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self):
        return (f"<KerasTensor shape={self.shape}, dtype={self.dtype}, sparse=False, "
                f"name={self.name}>")

    def __array__(self, *a, **k):
        raise TypeError("A KerasTensor is symbolic (it has no values): it is the input or output "
                        "of a functional model. Build a model with maas.Model(inputs, outputs) "
                        "and call it (or its predict()) on real data.")


class Node:
    """One call of a layer inside a functional graph."""

    def __init__(self, layer, inputs, outputs, kwargs):
        self.layer = layer
        self.inputs = inputs            # the structure the layer was called with
        self.outputs = outputs
        self.kwargs = kwargs
        self.input_tensors = [t for t in _flatten(inputs) if isinstance(t, KerasTensor)]
        self.output_tensors = _flatten(outputs)


class Layer:
    """The base class of layers, with Keras's lifecycle: ``__init__`` takes
    the configuration, ``build(input_shape)`` creates the weights with
    :meth:`add_weight` (lazily, on the first call), ``call`` computes.

    >>> class Scale(maas.layers.Layer):
    ...     def build(self, input_shape):
    ...         self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones")
    ...     def call(self, x):
    ...         return x * self.w
    >>> Scale()(maas.tensor([[1.0, 2.0]])).numpy()
    array([[1., 2.]], dtype=float32)

    Masks (Keras's): a layer that produces a mask (``Embedding(mask_zero=True)``,
    ``Masking``) defines ``compute_mask(inputs, mask=None)``; the mask returned
    is attached to the outputs (``maas.layers.base.get_keras_mask(t)`` reads it,
    ``set_keras_mask`` writes it; a float32 (batch, steps) tensor, 1.0 where a
    step is kept). When a layer is called on a tensor carrying a mask and its
    ``call`` has a ``mask`` argument the caller did not give, the mask is passed
    (a structure of masks for a structure of inputs). A layer with
    ``supports_masking = True`` passes its input's mask on (``compute_mask``
    returns it by default); other layers drop it, so a Dense between an
    Embedding and an LSTM ends the mask. Sequential and functional models
    propagate masks this way, on the concrete tensors of each call (traced into
    plans like any op).

    >>> class MeanOverSteps(maas.layers.Layer):
    ...     def call(self, x, mask=None):
    ...         if mask is None:
    ...             return maas.ops.mean(x, axis=1)
    ...         m = maas.ops.expand_dims(mask, -1)
    ...         return maas.ops.sum(x * m, axis=1) / maas.ops.sum(m, axis=1)
    >>> emb = maas.layers.Embedding(5, 2, embeddings_initializer="ones", mask_zero=True)
    >>> MeanOverSteps()(emb(np.array([[1, 2, 0, 0]]))).numpy()
    array([[1., 1.]], dtype=float32)
    """

    supports_masking = None   # None: True when the class overrides compute_mask

    def __init__(self, *, name=None, trainable=True, dtype=None, activity_regularizer=None,
                 input_shape=None, input_dim=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unrecognized keyword arguments: "
                            f"{sorted(kwargs)}")
        object.__setattr__(self, "_layers", [])
        self._weights_own: list[Variable] = []
        self.name = name or unique_name(_snake(type(self).__name__))
        self._trainable = bool(trainable)
        self.built = False
        self.dtype = "float32"
        self.activity_regularizer = _regularizers.get(activity_regularizer)
        self._losses = []     # add_loss() of the current call (activity regularization too)
        self._metrics = []    # Metric objects assigned as attributes, tracked as Keras does
        self._inbound_nodes: list[Node] = []
        self._build_shape = None
        self._output_shape = None
        if input_dim is not None and input_shape is None:
            input_shape = (input_dim,)
        self._batch_input_shape = None if input_shape is None else (None,) + tuple(input_shape)
        try:
            params = inspect.signature(self.call).parameters
            self._call_has_training = "training" in params or any(
                p.kind == p.VAR_KEYWORD for p in params.values())
        except (TypeError, ValueError):
            self._call_has_training = False
            params = {}
        self._call_has_mask = "mask" in params

    # -- tracking
    def __setattr__(self, name, value):
        if not name.startswith("__") and "_layers" in self.__dict__:
            for v in _flatten(value) if isinstance(value, (list, tuple, dict)) else [value]:
                if isinstance(v, Layer) and v is not self and all(v is not l for l in self._layers):
                    self._layers.append(v)
                elif isinstance(v, _metrics_module.Metric) and "_metrics" in self.__dict__ and \
                        all(v is not m for m in self._metrics):
                    self._metrics.append(v)
        object.__setattr__(self, name, value)

    def _flatten_layers(self, include_self=True, recursive=True):
        seen, out = set(), []

        def visit(layer, top):
            if id(layer) in seen:
                return
            seen.add(id(layer))
            if not top or include_self:
                out.append(layer)
            if recursive or top:
                for sub in layer._layers:
                    if recursive:
                        visit(sub, False)
                    elif id(sub) not in seen:
                        seen.add(id(sub))
                        out.append(sub)

        visit(self, True)
        return out

    # -- weights
    def add_weight(self, shape=None, initializer="glorot_uniform", dtype=None, trainable=True,
                   regularizer=None, constraint=None, name=None, **kwargs):
        """Creates a weight of this layer (Keras's signature)."""
        shape = () if shape is None else tuple(int(d) for d in shape)
        init = _initializers.get(initializer)
        var = Variable(init(shape, "float32"), shape=shape, trainable=bool(trainable) and self.trainable,
                       name=name or f"variable_{len(self._weights_own)}")
        var.path = f"{self.name}/{var.name}"
        var._declared_trainable = bool(trainable)
        var._regularizer = _regularizers.get(regularizer)
        self._weights_own.append(var)
        return var

    @property
    def trainable(self) -> bool:
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        for layer in self._flatten_layers():
            layer._trainable = bool(value)
            for w in layer._weights_own:
                w.trainable = bool(value) and w._declared_trainable

    @property
    def weights(self) -> list:
        out, seen = [], set()
        for layer in self._flatten_layers():
            for w in layer._weights_own:
                if id(w) not in seen:
                    seen.add(id(w))
                    out.append(w)
        return out

    variables = weights

    @property
    def trainable_weights(self) -> list:
        return [w for w in self.weights if w.trainable] if self.trainable else []

    trainable_variables = trainable_weights

    @property
    def non_trainable_weights(self) -> list:
        tw = {id(w) for w in self.trainable_weights}
        return [w for w in self.weights if id(w) not in tw]

    non_trainable_variables = non_trainable_weights

    def get_weights(self) -> list:
        """The weights as NumPy arrays (copies)."""
        return [np.array(w) for w in self.weights]

    def set_weights(self, weights) -> None:
        """Writes NumPy arrays into the weights, in the order of ``weights``."""
        mine = self.weights
        weights = list(weights)
        if len(weights) != len(mine):
            raise ValueError(f"You called set_weights(weights) on layer {self.name!r} with a weight "
                             f"list of length {len(weights)}, but the layer was expecting "
                             f"{len(mine)} weights.")
        for w, v in zip(mine, weights):
            v = np.asarray(v, np.float32)
            if v.shape != tuple(w.shape):
                raise ValueError(f"Layer {self.name!r} weight shape {tuple(w.shape)} is not "
                                 f"compatible with provided weight shape {v.shape}.")
            w.assign(v)

    def count_params(self) -> int:
        return int(sum(w.size for w in self.weights))

    def add_loss(self, loss) -> None:
        """Adds a loss (a tensor, or a list of them) computed in ``call()``;
        ``fit`` adds the sum of ``model.losses`` to the compiled loss, as Keras
        does. The losses of a call replace those of the previous call of the
        outermost layer (Keras's behaviour).

        >>> class ActivityRegularization(maas.layers.Layer):
        ...     def call(self, inputs):
        ...         self.add_loss(1e-2 * maas.ops.sum(inputs))
        ...         return inputs
        >>> layer = ActivityRegularization()
        >>> _ = layer(np.ones((2, 2), np.float32))
        >>> [round(float(l), 4) for l in layer.losses]
        [0.04]
        """
        self._uses_add_loss = True   # the trainer keeps such models on the eager path
        self._append_losses(loss)

    def _append_losses(self, loss) -> None:
        for x in _flatten(loss):
            if not isinstance(x, Tensor):
                if isinstance(x, KerasTensor):
                    raise ValueError("add_loss() on a symbolic tensor (a functional model's "
                                     "input or output) is not supported: call add_loss() inside "
                                     "a layer's call(), on the tensors it computes")
                x = _to_tensor(x)
            self._losses.append(x)
            _pending_losses.add(id(self))

    def _clear_losses(self) -> None:
        if not _pending_losses:   # the common case: no layer holds losses, skip the walk
            return
        for layer in self._flatten_layers():
            if layer._losses:
                layer._losses.clear()
                _pending_losses.discard(id(layer))

    @property
    def losses(self) -> list:
        """The scalar losses: from ``add_loss`` (activity regularizers
        included) in the last call, of this layer and its sublayers, then the
        weight regularization losses (computed now, so gradients flow)."""
        out = []
        layers = self._flatten_layers()
        for layer in layers:
            out.extend(layer._losses)
        for layer in layers:
            for w in layer._weights_own:
                if w._regularizer is not None and (layer.trainable and w.trainable):
                    out.append(w._regularizer(w))
        return out

    @property
    def metrics(self) -> list:
        """Metric objects assigned as attributes of this layer and its sublayers."""
        out = []
        for layer in self._flatten_layers():
            out.extend(layer.__dict__.get("_metrics", []))
        return out

    # -- lifecycle
    def build(self, input_shape) -> None:
        self.built = True

    def call(self, *args, **kwargs):
        raise NotImplementedError(f"Layer {type(self).__name__} does not have a call() method")

    def compute_output_shape(self, input_shape):
        raise NotImplementedError(
            f"Layer {type(self).__name__} does not implement compute_output_shape(); "
            "it is needed to call it on a symbolic input (maas.Input)")

    def compute_mask(self, inputs, mask=None):
        """The mask of the outputs: the input's when ``supports_masking``,
        else None (Keras's contract; override it to make a mask)."""
        return mask if self._masking() else None

    def _masking(self) -> bool:
        sm = self.supports_masking
        if sm is None:
            return type(self).compute_mask is not Layer.compute_mask
        return bool(sm)

    def _maybe_build(self, input_shape):
        if not self.built:
            self._build_shape = input_shape
            self.build(input_shape)
            self.built = True

    def _check_input(self, x):
        """Raises the Keras-style ValueError when x does not fit the layer."""

    def __call__(self, *args, **kwargs):
        if not args:
            raise TypeError(f"layer {self.name!r} called without inputs")
        inputs = args[0]
        if any(isinstance(t, KerasTensor) for t in _flatten(inputs)):
            return self._symbolic_call(inputs, *args[1:], **kwargs)
        training = kwargs.pop("training", None)
        if training is None:
            training = getattr(_ctx, "training", None)
        inputs = _map(_to_tensor, inputs)
        if not self.built:
            self._maybe_build(_map(_shape_of, inputs))
        if self._call_has_training:
            kwargs["training"] = bool(training)
        prev = getattr(_ctx, "training", None)
        depth = getattr(_ctx, "depth", 0)
        if depth == 0:
            self._clear_losses()  # the entry call starts a new set of losses
        _ctx.training = training
        _ctx.depth = depth + 1
        prev_mask = _map(get_keras_mask, inputs) if _keras_masks else None
        has_mask = _any_mask(prev_mask)
        if has_mask and self._call_has_mask and kwargs.get("mask") is None:
            kwargs["mask"] = prev_mask
        try:
            self._check_input(inputs)
            out = self.call(inputs, *args[1:], **kwargs)
        finally:
            _ctx.training = prev
            _ctx.depth = depth
        if has_mask or type(self).compute_mask is not Layer.compute_mask:
            self._set_output_masks(inputs, out, prev_mask)
        if self.activity_regularizer is not None:
            for o in _flatten(out):
                if isinstance(o, Tensor):
                    # divided by the batch size, as Keras 3 does
                    self._append_losses(self.activity_regularizer(o) / float(o.shape[0] if o.ndim else 1))
        return out

    def _set_output_masks(self, inputs, outputs, prev_mask):
        if not self._masking():
            return
        flat_out = _flatten(outputs)
        if all(get_keras_mask(o) is not None for o in flat_out):
            return   # call() set them itself
        masks = self.compute_mask(inputs, prev_mask)
        if masks is None:
            return
        flat_masks = _flatten(masks) if isinstance(masks, (list, tuple, dict)) else [masks]
        if len(flat_masks) == 1 and len(flat_out) > 1:
            flat_masks = flat_masks * len(flat_out)
        for o, m in zip(flat_out, flat_masks):
            if m is not None and isinstance(o, Tensor) and get_keras_mask(o) is None:
                set_keras_mask(o, m)

    def _symbolic_call(self, inputs, *args, **kwargs):
        shapes = _map(lambda t: t.shape if isinstance(t, KerasTensor) else tuple(np.shape(t)),
                      inputs)
        if not self.built:
            self._maybe_build(shapes)
        self._check_input(inputs)
        node_index = len(self._inbound_nodes)
        counter = [0]

        def make(s):
            kt = KerasTensor(s, history=(self, node_index, counter[0]))
            counter[0] += 1
            return kt

        out_shapes = None
        if type(self).compute_output_shape is not Layer.compute_output_shape:
            try:
                out_shapes = self.compute_output_shape(shapes)
            except NotImplementedError:
                out_shapes = None
        if out_shapes is not None:
            if isinstance(out_shapes, list) and out_shapes and isinstance(out_shapes[0], (tuple, list)):
                outputs = [make(s) for s in out_shapes]
            else:
                outputs = make(out_shapes)
        else:
            # Keras infers the output by running call() symbolically; maas
            # runs it on a small concrete batch of zeros instead
            out_shapes = self._infer_output_shapes(inputs, args, kwargs)
            outputs = _map_shapes(make, out_shapes)
        self._output_shape = out_shapes
        if kwargs.get("training", 0) is None:
            kwargs.pop("training")
        # an explicit training= (e.g. Dropout(...)(x, training=True) for Monte-Carlo
        # dropout) stays in the node's kwargs and wins over fit/predict's value
        self._inbound_nodes.append(Node(self, inputs, outputs, kwargs))
        return outputs

    def _infer_output_shapes(self, inputs, args, kwargs):
        """The output shapes of ``call()`` on zeros shaped like the symbolic
        inputs (batch 2; unknown dimensions 3, then 4 to see which output
        dimensions follow them). A structure of shape tuples like call's output."""
        unknown = any(d is None for t in _flatten(inputs) if isinstance(t, KerasTensor)
                      for d in t.shape[1:])
        probes = []
        for fill in ((3, 4) if unknown else (3,)):
            def zeros(t, fill=fill):
                if not isinstance(t, KerasTensor):
                    return t
                shape = tuple(2 if i == 0 and d is None else (fill if d is None else d)
                              for i, d in enumerate(t.shape))
                return Tensor(np.zeros(shape, np.float32))
            concrete = _map(zeros, inputs)
            kw = {k: v for k, v in kwargs.items() if k != "training"}
            if self._call_has_training:
                kw["training"] = False
            prev, prev_depth = getattr(_ctx, "training", None), getattr(_ctx, "depth", 0)
            _ctx.training, _ctx.depth = False, prev_depth + 1
            try:
                out = self.call(concrete, *args, **kw)
            except NotImplementedError:
                raise
            except Exception as e:
                msg = (f"Layer {self.name!r} ({type(self).__name__}) could not be called on a "
                       f"symbolic input to infer its output shape: calling call() on zeros of "
                       f"shape {_map(lambda t: tuple(t.shape), concrete)} raised "
                       f"{type(e).__name__}: {e}. Define compute_output_shape(input_shape) on "
                       "the layer, or fix call()")
                try:
                    err = type(e)(msg)
                except Exception:
                    err = ValueError(msg)
                raise err from e
            finally:
                _ctx.training, _ctx.depth = prev, prev_depth
                self._clear_losses()  # losses of the probe are not the model's
            probes.append(_map(lambda o: tuple(np.shape(o)), out))
        batch = [t.shape[0] for t in _flatten(inputs) if isinstance(t, KerasTensor)][0]
        probe_batch = 2 if batch is None else batch

        def merge(*shapes):
            s = list(shapes[0])
            if s and s[0] == probe_batch:   # the batch axis carried through
                s[0] = batch
            for i in range(1, len(s)):
                if any(len(o) != len(s) or o[i] != s[i] for o in shapes[1:]):
                    s[i] = None
            return tuple(s)

        if len(probes) == 1:
            return _map_shapes(merge, probes[0])
        return _map_shapes(merge, probes[0], probes[1])

    @property
    def output_shape(self):
        if self._output_shape is None:
            raise AttributeError(f"The layer {self.name!r} has never been called and thus has "
                                 "no defined output shape.")
        return self._output_shape

    @property
    def input(self):
        if not self._inbound_nodes:
            raise AttributeError(f"Layer {self.name!r} is not connected, no input to return.")
        return self._inbound_nodes[0].inputs

    @property
    def output(self):
        if not self._inbound_nodes:
            raise AttributeError(f"Layer {self.name!r} has no inbound nodes.")
        return self._inbound_nodes[0].outputs

    # -- config
    def get_config(self) -> dict:
        config = {"name": self.name, "trainable": self.trainable, "dtype": self.dtype}
        if self._batch_input_shape is not None:
            config["batch_input_shape"] = list(self._batch_input_shape)
        return config

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        bis = config.pop("batch_input_shape", None)
        if bis is not None:
            config["input_shape"] = tuple(bis[1:])
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"


def _map_shapes(fn, *structs):
    """Maps fn over the shape tuples (leaves) of same-structured shape structures."""
    first = structs[0]
    if isinstance(first, tuple) and all(isinstance(d, (int, np.integer)) or d is None for d in first):
        return fn(*structs)
    if isinstance(first, dict):
        return {k: _map_shapes(fn, *(s[k] for s in structs)) for k in first}
    return type(first)(_map_shapes(fn, *parts) for parts in zip(*structs))


def _to_tensor(x):
    if isinstance(x, Tensor):
        return x
    a = np.asarray(x)
    if a.dtype != np.float32 or not a.flags.c_contiguous:
        a = np.ascontiguousarray(a, dtype=np.float32)
    return Tensor(a)


class InputLayer(Layer):
    """The layer behind ``maas.Input``: it only declares a shape."""

    def __init__(self, shape=None, batch_size=None, dtype=None, sparse=None, batch_shape=None,
                 input_tensor=None, name=None, **kwargs):
        super().__init__(name=name or unique_name("input_layer"), **kwargs)
        if batch_shape is None:
            if shape is None:
                raise ValueError("You must pass a `shape` argument to Input (e.g. Input((64,)))")
            if isinstance(shape, int):
                shape = (shape,)
            batch_shape = (batch_size,) + tuple(shape)
        self.batch_shape = tuple(None if d is None else int(d) for d in batch_shape)
        for d in self.batch_shape[1:]:
            if d is not None and d <= 0:
                raise ValueError(f"Input: every dimension must be a positive integer or None, "
                                 f"received shape={self.batch_shape[1:]}")
        self.built = True
        self._output_shape = self.batch_shape
        self._input_dtype = "float32" if dtype is None else np.dtype(dtype).name
        out = KerasTensor(self.batch_shape, dtype=self._input_dtype, name=self.name,
                          history=(self, 0, 0))
        self._inbound_nodes.append(Node(self, [], out, {}))
        self.output_tensor = out

    def call(self, x):
        return x

    def compute_output_shape(self, input_shape):
        return self.batch_shape

    def get_config(self):
        return {"batch_shape": list(self.batch_shape), "dtype": self._input_dtype, "sparse": False,
                "name": self.name}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        dtype = config.pop("dtype", None)
        config.pop("sparse", None)
        if dtype not in ("int32", "int64"):
            dtype = None
        return cls(dtype=dtype, **config)


def Input(shape=None, batch_size=None, dtype=None, sparse=None, batch_shape=None, name=None,
          tensor=None) -> KerasTensor:
    """A symbolic input of a functional model: ``maas.Input((64,))``.

    >>> x = maas.Input((64,))
    >>> x.shape
    (None, 64)
    """
    if dtype not in (None, "float32", np.float32, "int32", np.int32, "int64", np.int64):
        raise TypeError(f"maas inputs are float32, int32 or int64 (token ids for an Embedding); "
                        f"received dtype={dtype!r}")
    layer = InputLayer(shape=shape, batch_size=batch_size, batch_shape=batch_shape, name=name,
                       dtype=dtype)
    return layer.output_tensor
