"""Model: the functional ``Model(inputs, outputs)``, the base class of
subclassed models, and (through :class:`Trainer`) compile/fit/evaluate/predict
shared with Sequential.

>>> import maas, numpy as np
>>> inputs = maas.Input((4,))
>>> outputs = maas.layers.Dense(2, activation="softmax")(inputs)
>>> model = maas.Model(inputs, outputs)
>>> model.predict(np.ones((3, 4), np.float32), verbose=0).shape
(3, 2)
"""
from __future__ import annotations

import numpy as np

from .. import layers as _layers_mod
from ..layers.base import InputLayer, KerasTensor, Layer, _flatten, _snake, unique_name
from . import functional as _graph
from .summary import print_summary
from .trainer import Trainer


class Model(Trainer, Layer):
    """A model: layers with training and inference features.

    Functional: ``maas.Model(inputs, outputs)`` over a graph built by calling
    layers on ``maas.Input(...)`` (one or several inputs and outputs).
    Subclassing: define layers in ``__init__`` (they are tracked) and the
    forward pass in ``call(inputs, training=False)``.

    >>> class MLP(maas.Model):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.hidden = maas.layers.Dense(8, activation="relu")
    ...         self.out = maas.layers.Dense(2)
    ...     def call(self, x, training=False):
    ...         return self.out(self.hidden(x))
    >>> MLP()(np.ones((1, 3), np.float32)).shape
    (1, 2)
    """

    def __init__(self, *args, **kwargs):
        inputs = kwargs.pop("inputs", None)
        outputs = kwargs.pop("outputs", None)
        if args:
            if inputs is not None or len(args) > 2:
                raise TypeError("Model: pass inputs and outputs once, e.g. Model(inputs, outputs)")
            inputs = args[0]
            if len(args) == 2:
                outputs = args[1]
        functional = inputs is not None or outputs is not None
        if functional and (inputs is None or outputs is None):
            raise ValueError("A functional Model needs both inputs and outputs: "
                             "maas.Model(inputs=..., outputs=...)")
        name = kwargs.pop("name", None)
        if name is None:
            name = unique_name("functional" if functional and type(self) is Model
                               else _snake(type(self).__name__))
        Layer.__init__(self, name=name, **kwargs)
        Trainer.__init__(self)
        self._is_graph_network = False
        if functional:
            self._init_graph(inputs, outputs)

    # -- the functional graph
    def _init_graph(self, inputs, outputs):
        self._nested_inputs = inputs
        self._nested_outputs = outputs
        self.inputs = _flatten(inputs)
        self.outputs = _flatten(outputs)
        self._nodes, graph_layers = _graph.trace(inputs, outputs)
        object.__setattr__(self, "_layers", graph_layers)
        self._is_graph_network = True
        self.built = True
        if isinstance(outputs, dict):
            self._output_shape = {k: o.shape for k, o in outputs.items()}
        else:
            self._output_shape = ([o.shape for o in self.outputs] if len(self.outputs) > 1
                                  else self.outputs[0].shape)

    @property
    def input(self):
        """The model's input tensor (a list when it has several), as Keras's
        ``model.input``: ``Model(base.input, base.layers[-2].output)``."""
        if self._is_graph_network:
            return self.inputs[0] if len(self.inputs) == 1 else list(self.inputs)
        return Layer.input.fget(self)

    @property
    def output(self):
        """The model's output tensor (a list when it has several)."""
        if self._is_graph_network:
            return self.outputs[0] if len(self.outputs) == 1 else list(self.outputs)
        return Layer.output.fget(self)

    @property
    def layers(self) -> list:
        return list(self._layers)

    def get_layer(self, name=None, index=None) -> Layer:
        """A layer by name (or by index in ``layers``)."""
        if index is not None:
            if name is not None:
                raise ValueError("Provide only a layer name or a layer index, not both")
            if len(self.layers) <= index:
                raise ValueError(f"Was asked to retrieve layer at index {index} but model only "
                                 f"has {len(self.layers)} layers.")
            return self.layers[index]
        for layer in self._flatten_layers(include_self=False):
            if layer.name == name:
                return layer
        raise ValueError(f"No such layer: {name}. Existing layers are: "
                         f"{[l.name for l in self.layers]}.")

    def _check_input(self, inputs):
        if not self._is_graph_network:
            return
        if isinstance(inputs, dict):
            keys = (list(self._nested_inputs) if isinstance(self._nested_inputs, dict)
                    else [t._keras_history[0].name for t in self.inputs])
            missing = [k for k in keys if k not in inputs]
            if missing:
                raise ValueError(f"Layer \"{self.name}\" expects inputs named {keys}; the dict "
                                 f"passed has no {missing} (it has {sorted(inputs)})")
            inputs = [inputs[k] for k in keys]
        xs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        if len(xs) != len(self.inputs):
            raise ValueError(f"Layer \"{self.name}\" expects {len(self.inputs)} input(s), but it "
                             f"received {len(xs)} input tensors.")
        for i, (x, kt) in enumerate(zip(xs, self.inputs)):
            shape = tuple(x.shape)
            exp = kt.shape
            if len(shape) != len(exp) or any(e is not None and e != s for e, s in zip(exp[1:], shape[1:])):
                raise ValueError(f"Input {i} of layer \"{self.name}\" is incompatible with the layer: "
                                 f"expected shape={_fmt_shape(exp)}, found shape={_fmt_shape(shape)}")

    def call(self, inputs, training=False):
        if not self._is_graph_network:
            raise NotImplementedError(f"Model {type(self).__name__} has no call() method: define "
                                      "call(self, inputs, training=False) in your subclass, or "
                                      "build a functional model with maas.Model(inputs, outputs)")
        if isinstance(inputs, dict):
            if isinstance(self._nested_inputs, dict):
                values = [inputs[k] for k in self._nested_inputs]
            else:
                values = [inputs[t._keras_history[0].name] for t in self.inputs]
        else:
            values = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        env = _graph.run(self._nodes, self.inputs, values, training)
        outs = [env[id(t)] for t in self.outputs]
        if isinstance(self._nested_outputs, dict):
            return dict(zip(self._nested_outputs, outs))
        if isinstance(self._nested_outputs, (list, tuple)):
            return outs
        return outs[0]

    def compute_output_shape(self, input_shape):
        if self._is_graph_network:
            return self._output_shape
        raise NotImplementedError(f"{type(self).__name__}.compute_output_shape is not defined; "
                                  "call the model on real data instead of a symbolic input")

    def build(self, input_shape=None):
        """Builds a subclassed model by calling it on zeros of ``input_shape``."""
        if self.built and self.weights:
            return
        if input_shape is None:
            self.built = True
            return
        shape = tuple(1 if d is None else d for d in input_shape)
        prev = self.built
        self.built = True
        try:
            self(np.zeros(shape, np.float32))
        except Exception:
            self.built = prev
            raise

    @property
    def _output_names(self):
        if self._is_graph_network:
            if isinstance(self._nested_outputs, dict):
                return list(self._nested_outputs)   # Keras names dict outputs by their keys
            return [t._keras_history[0].name for t in self.outputs]
        return None

    @property
    def output_names(self) -> list:
        """The names of the outputs (the keys of a dict of outputs, otherwise
        the names of the layers computing them), as in Keras."""
        return self._output_names or []

    def quantize(self, mode, type_check=True, calibration_data=None):
        """Quantizes the model's Dense layers to int8 in place (Keras's
        ``Model.quantize``); ``calibration_data`` fixes the activation scales
        (static mode). See :mod:`maas.quantization`.

        >>> model.quantize("int8")  # doctest: +SKIP
        """
        from ..quantization import quantize_model

        quantize_model(self, mode, calibration_data=calibration_data)

    # -- summary and config
    # -- saving (maas.saving.model_file holds the format)
    def save(self, filepath, overwrite=True, include_optimizer=True, encryption_key=None):
        """Writes the model (architecture, weights, optimizer state) to one
        safetensors file; ``maas.load_model(filepath)`` brings it back.
        ``encryption_key`` encrypts the tensor data (AES-256-GCM; see
        ``maas.saving.encryption``).

        Under a multi-process ``maas.distribution.DataParallel`` only rank 0
        writes (every rank holds the same weights).

        >>> model.save("digits.maas")  # doctest: +SKIP
        """
        from .. import distribution as _dist
        from ..saving import save_model

        if not _dist.is_chief():
            return

        save_model(self, filepath, overwrite=overwrite, include_optimizer=include_optimizer,
                   encryption_key=encryption_key)

    def export(self, filepath, format="onnx", verbose=False, input_signature=None, **kwargs):
        """Writes the model for another runtime, Keras 3's call. ``format``:
        ``"onnx"`` (opset 18, the batch axis dynamic; needs ``pip install
        'maas[onnx]'``), checked with ``onnx.checker``; ONNX Runtime gives
        the outputs of ``predict``. A subclassed model that has not been
        called needs ``input_signature=[(None, features)]``.

        >>> model.export("model.onnx", format="onnx")  # doctest: +SKIP
        """
        if format != "onnx":
            raise ValueError(f"maas exports format='onnx' only, received format={format!r}")
        if kwargs:
            raise TypeError(f"export() got unexpected arguments {sorted(kwargs)}")
        from ..export import export_onnx
        return export_onnx(self, filepath, input_signature=input_signature, verbose=verbose)

    def to_json(self, **kwargs) -> str:
        """The architecture as JSON (``json.dumps`` kwargs pass through);
        ``maas.models.model_from_json`` rebuilds it with new weights."""
        from ..saving.model_file import model_to_json

        return model_to_json(self, **kwargs)

    def save_weights(self, filepath, overwrite=True):
        """Writes the weights alone (safetensors, named ``layer/variable``)."""
        from ..saving import save_weights

        save_weights(self, filepath, overwrite=overwrite)

    def load_weights(self, filepath, skip_mismatch=False, name_map=None):
        """Loads weights by name; see :func:`maas.saving.load_weights`."""
        from ..saving import load_weights

        load_weights(self, filepath, skip_mismatch=skip_mismatch, name_map=name_map)

    def summary(self, line_length=None, positions=None, print_fn=None, expand_nested=False,
                show_trainable=False, layer_range=None):
        """Prints Keras's table: layer (type), output shape, params, totals."""
        print_summary(self, line_length=line_length, positions=positions, print_fn=print_fn,
                      show_trainable=show_trainable)

    def get_config(self) -> dict:
        if not self._is_graph_network:
            raise NotImplementedError(
                f"{type(self).__name__} is a subclassed model: implement get_config() (and "
                "from_config() if __init__ takes non-serializable arguments) to serialize it")
        node_index = {}   # id(node) -> index among the layer's nodes in this model
        counts = {}
        for node in self._nodes:
            k = id(node.layer)
            node_index[id(node)] = counts.get(k, 0)
            counts[k] = counts.get(k, 0) + 1

        def ref(t):
            layer, ni, ti = t._keras_history
            return [layer.name, node_index[id(layer._inbound_nodes[ni])], ti]

        layer_configs = []
        for layer in self.layers:
            nodes = [n for n in self._nodes if n.layer is layer and not isinstance(layer, InputLayer)]
            inbound = []
            for n in nodes:
                args = [ref(t) for t in n.inputs] if isinstance(n.inputs, (list, tuple)) else ref(n.inputs)
                inbound.append({"args": args, "list": isinstance(n.inputs, (list, tuple)),
                                "kwargs": n.kwargs})
            cfg = _layers_mod.serialize(layer)
            cfg["name"] = layer.name
            cfg["inbound_nodes"] = inbound
            layer_configs.append(cfg)
        return {"name": self.name, "trainable": self.trainable, "layers": layer_configs,
                "input_layers": [ref(t) for t in self.inputs],
                "output_layers": [ref(t) for t in self.outputs],
                "outputs_is_list": isinstance(self._nested_outputs, (list, tuple)),
                **({"output_keys": list(self._nested_outputs)}
                   if isinstance(self._nested_outputs, dict) else {}),
                "inputs_is_list": isinstance(self._nested_inputs, (list, tuple)),
                **({"input_keys": list(self._nested_inputs)}
                   if isinstance(self._nested_inputs, dict) else {})}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        if "layers" not in config or "input_layers" not in config:
            return cls(**config)
        created, tensors, done = {}, {}, {}
        for lc in config["layers"]:
            layer = _layers_mod.deserialize(lc, custom_objects)
            created[lc["name"]] = (layer, lc)
            done[lc["name"]] = 0
            if isinstance(layer, InputLayer):
                tensors[(lc["name"], 0, 0)] = layer.output_tensor

        def avail(r):
            return tuple(r) in tensors

        progress = True
        while progress:
            progress = False
            for name, (layer, lc) in created.items():
                nodes = lc.get("inbound_nodes", [])
                while done[name] < len(nodes):
                    node = nodes[done[name]]
                    refs = node["args"] if node["list"] else [node["args"]]
                    if not all(avail(r) for r in refs):
                        break
                    args = [tensors[tuple(r)] for r in refs]
                    out = layer(args if node["list"] else args[0], **node.get("kwargs", {}))
                    for i, t in enumerate(_flatten(out)):
                        tensors[(name, done[name], i)] = t
                    done[name] += 1
                    progress = True
        inputs = [tensors[tuple(r)] for r in config["input_layers"]]
        try:
            outputs = [tensors[tuple(r)] for r in config["output_layers"]]
        except KeyError as e:
            raise ValueError(f"from_config: the graph could not be rebuilt, missing tensor {e}") from None
        if config.get("input_keys"):  # a dict of inputs, as Model({"a": a, "b": b}, ...)
            inputs = dict(zip(config["input_keys"], inputs))
        elif not config.get("inputs_is_list", len(inputs) > 1):
            inputs = inputs[0]
        if config.get("output_keys"):
            outputs = dict(zip(config["output_keys"], outputs))
        elif not config.get("outputs_is_list", len(outputs) > 1):
            outputs = outputs[0]
        return cls(inputs, outputs, name=config.get("name"), trainable=config.get("trainable", True))

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"


def _fmt_shape(shape):
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + \
        ("," if len(shape) == 1 else "") + ")"
