"""Maps a model's layers onto plan steps (see maas.engine.build_plan)."""
from __future__ import annotations

import math

from . import Unsupported


def model_steps(model):
    """(in_features, steps) for a built Sequential model, or a functional
    model whose layers form a single chain; Unsupported otherwise."""
    layers = _chain(model)
    steps, in_features = [], None
    for layer in layers:
        kind = type(layer).__name__
        if getattr(layer, "activity_regularizer", None) is not None:
            raise Unsupported("activity regularizers")
        if kind == "InputLayer":
            continue
        if kind in ("Flatten", "Reshape"):
            continue  # activations are (N, features) rows: a no-op
        if kind == "Dense":
            if layer.kernel is None:
                raise Unsupported("an unbuilt Dense layer")
            if in_features is None:
                in_features = layer.kernel.shape[0]
            steps.append(("dense", layer.kernel, layer.bias if layer.use_bias else None,
                          layer.trainable, layer.kernel_regularizer, layer.bias_regularizer))
            steps.append(("activation", layer.activation))
        elif kind == "Activation":
            steps.append(("activation", layer.activation))
        elif kind == "Dropout":
            if getattr(layer, "noise_shape", None) is not None:
                raise Unsupported("dropout noise_shape")
            steps.append(("dropout", float(layer.rate)))
        else:
            raise Unsupported(f"layer {kind}")
    if in_features is None:
        raise Unsupported("a model without a Dense layer")
    # a model whose input is not (N, in_features) after flattening is not a chain we know
    shape = getattr(model, "_plan_input_shape", None)
    if shape is not None and math.prod(s for s in shape if s) != in_features:
        raise Unsupported("input width")
    return in_features, steps


def _chain(model):
    if type(model).__name__ == "Sequential":
        return list(model.layers)
    inputs, outputs = getattr(model, "inputs", None), getattr(model, "outputs", None)
    if not inputs or not outputs or len(inputs) != 1 or len(outputs) != 1:
        raise Unsupported("not a single-input, single-output graph")
    # walk back from the output through nodes of exactly one input
    layers, seen, t = [], set(), outputs[0]
    while True:
        layer, node_index, _ = t._keras_history
        if id(layer) in seen:
            raise Unsupported("a layer used twice")
        seen.add(id(layer))
        layers.append(layer)
        if t is inputs[0]:
            break
        node = layer._inbound_nodes[node_index]
        if len(node.input_tensors) != 1:
            raise Unsupported("a layer with several inputs")
        t = node.input_tensors[0]
    return layers[::-1]
