"""Sequential: a plain stack of layers, one input and one output."""
from __future__ import annotations

from .. import layers as _layers_mod
from ..layers.base import InputLayer, KerasTensor, Layer, unique_name
from .model import Model


class Sequential(Model):
    """A linear stack of layers: ``Sequential([layer, ...])`` or ``add()``.

    With ``maas.Input(shape)`` first the model is built at once (so
    ``summary()`` works before training); otherwise on its first call.

    >>> model = maas.Sequential([maas.Input((64,)),
    ...                          maas.layers.Dense(10, activation="softmax")])
    >>> model.count_params()
    650
    """

    def __init__(self, layers=None, trainable=True, name=None):
        super().__init__(name=name or unique_name("sequential"), trainable=trainable)
        self._seq_layers = []
        self._input_layer = None
        for layer in layers or []:
            self.add(layer, rebuild=False)
        self._maybe_rebuild()

    def add(self, layer, rebuild=True):
        """Appends a layer (or a ``maas.Input``) to the stack."""
        if isinstance(layer, KerasTensor):
            layer = layer._keras_history[0]
        if isinstance(layer, InputLayer):
            if self._input_layer is not None or self._seq_layers:
                raise ValueError("Sequential: an Input must be the first layer, and only one; "
                                 f"received {layer.name!r} after {len(self._seq_layers)} layer(s)")
            self._input_layer = layer
        elif isinstance(layer, Layer):
            if any(l.name == layer.name for l in self._seq_layers):
                raise ValueError(f"All layers added to a Sequential model should have unique names. "
                                 f"Name {layer.name!r} is already the name of a layer in this model. "
                                 "Update the `name` argument to pass a unique name.")
            if not self._seq_layers and self._input_layer is None and layer._batch_input_shape is not None:
                self._input_layer = InputLayer(batch_shape=layer._batch_input_shape)
            self._seq_layers.append(layer)
            self._layers.append(layer)
        else:
            raise TypeError("Only instances of maas.layers.Layer can be added to a Sequential "
                            f"model. Received: {layer!r} (of type {type(layer).__name__})")
        if rebuild:
            self._maybe_rebuild()

    def pop(self, rebuild=True):
        """Removes the last layer."""
        if not self._seq_layers:
            raise TypeError("There are no layers in the model.")
        layer = self._seq_layers.pop()
        self._layers.remove(layer)
        self._is_graph_network = False
        if rebuild:
            self._maybe_rebuild()
        return layer

    def _maybe_rebuild(self):
        if self._input_layer is None or not self._seq_layers:
            if self._input_layer is not None:
                self.built = True
                self._output_shape = self._input_layer.batch_shape
            return
        x = self._input_layer.output_tensor
        inputs = x
        try:
            for layer in self._seq_layers:
                x = layer(x)
        except NotImplementedError:
            # a custom layer without compute_output_shape: build eagerly on first call
            self._is_graph_network = False
            return
        layers = list(self._layers)
        self._init_graph(inputs, x)
        # Sequential lists its layers without the InputLayer, and keeps any
        # other tracked attributes
        object.__setattr__(self, "_layers", layers)

    @property
    def layers(self) -> list:
        return list(self._seq_layers)

    @property
    def _nodes_all(self):
        return self._nodes

    def build(self, input_shape=None):
        """Builds the model for inputs of shape ``input_shape`` (batch first)."""
        if self._is_graph_network:
            return
        if input_shape is None:
            raise ValueError("You must provide an input_shape argument to build(), e.g. "
                             "model.build((None, 64))")
        if isinstance(input_shape, list) and input_shape and isinstance(input_shape[0], (tuple, list)):
            input_shape = input_shape[0]
        self._input_layer = InputLayer(batch_shape=(None,) + tuple(input_shape[1:]))
        self._maybe_rebuild()
        self.built = True

    def _maybe_build(self, input_shape):
        if not self._is_graph_network:
            self.build(input_shape)

    def call(self, inputs, training=False):
        x = inputs
        for layer in self._seq_layers:
            x = layer(x, training=training)
        return x

    def _check_input(self, inputs):
        if self._input_layer is None:
            return
        shape = tuple(inputs.shape) if hasattr(inputs, "shape") else None
        exp = self._input_layer.batch_shape
        if shape is not None and (len(shape) != len(exp) or any(
                e is not None and e != s for e, s in zip(exp[1:], shape[1:]))):
            raise ValueError(f"Input 0 of layer \"{self.name}\" is incompatible with the layer: "
                             f"expected shape={_fmt(exp)}, found shape={_fmt(shape)}")

    def get_config(self):
        layers = []
        if self._input_layer is not None:
            layers.append(_layers_mod.serialize(self._input_layer))
        layers += [_layers_mod.serialize(l) for l in self._seq_layers]
        return {"name": self.name, "trainable": self.trainable, "layers": layers}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        model = cls(name=config.get("name"), trainable=config.get("trainable", True))
        for lc in config["layers"]:
            model.add(_layers_mod.deserialize(lc, custom_objects), rebuild=False)
        model._maybe_rebuild()
        return model


def _fmt(shape):
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + \
        ("," if len(shape) == 1 else "") + ")"
