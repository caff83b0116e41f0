"""Maps a model's layers onto plan steps (see maas.engine.build_plan)."""
from __future__ import annotations

import math

from . import Unsupported


def model_steps(model):
    """(in_features, steps) for a built Sequential model, or a functional
    model with one input and one output whose layers the plan knows (a
    chain, or a graph with Add/Subtract/Multiply/Concatenate); Unsupported
    otherwise."""
    if type(model).__name__ != "Sequential":
        return _graph_steps(model)
    steps, in_features = [], None
    for layer in model.layers:
        if _passthrough(layer):
            continue
        if in_features is None and type(layer).__name__ == "Dense" and layer.kernel is not None:
            in_features = layer.kernel.shape[0]
        steps += _layer_steps(layer)
    if in_features is None:
        raise Unsupported("a model without a Dense layer")
    return in_features, steps


def _passthrough(layer):
    """Layers that leave (N, features) rows as they are: the input, Flatten,
    and a Reshape to one flat axis."""
    if getattr(layer, "activity_regularizer", None) is not None:
        raise Unsupported("activity regularizers")
    kind = type(layer).__name__
    return kind in ("InputLayer", "Flatten") or (kind == "Reshape" and len(layer.target_shape) == 1)


def _layer_steps(layer):
    """The plan steps of a one-input layer (Unsupported for others)."""
    kind = type(layer).__name__
    if kind == "Dense":
        if layer.kernel is None:
            raise Unsupported("an unbuilt Dense layer")
        return [("dense", layer.kernel, layer.bias if layer.use_bias else None, layer.trainable,
                 layer.kernel_regularizer, layer.bias_regularizer), ("activation", layer.activation)]
    if kind == "Activation":
        return [("activation", layer.activation)]
    if kind == "Dropout":
        if getattr(layer, "noise_shape", None) is not None:
            raise Unsupported("dropout noise_shape")
        return [("dropout", float(layer.rate))]
    raise Unsupported(f"layer {kind}")


_MERGES = {"Add": "add", "Subtract": "subtract", "Multiply": "multiply", "Concatenate": "concatenate"}


def _graph_steps(model):
    inputs, outputs = getattr(model, "inputs", None), getattr(model, "outputs", None)
    nodes = getattr(model, "_nodes", None)
    if not inputs or not outputs or len(inputs) != 1 or len(outputs) != 1 or nodes is None:
        raise Unsupported("not a single-input, single-output graph")
    shape = tuple(inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise Unsupported("an input with unknown feature dimensions")
    in_features = math.prod(shape)
    key = {id(inputs[0]): "input"}     # KerasTensor -> the plan value holding it
    steps = []
    for node in nodes:
        layer, kind = node.layer, type(node.layer).__name__
        if kind == "InputLayer":
            continue
        ins = node.input_tensors
        if any(id(t) not in key for t in ins) or len(node.output_tensors) != 1:
            raise Unsupported("a graph the plan cannot order")
        out = id(node.output_tensors[0])
        if _passthrough(layer):
            key[out] = key[id(ins[0])]  # rows of features already: a no-op
            continue
        if kind in _MERGES:
            if kind == "Concatenate" and layer.axis not in (-1, 1):
                raise Unsupported("concatenation off the feature axis")
            if kind == "Subtract" and len(ins) != 2:
                raise Unsupported("subtract of other than two inputs")
            acc = key[id(ins[0])]
            for i, t in enumerate(ins[1:]):
                steps.append(("merge", _MERGES[kind], acc, key[id(t)]))
                acc = (out, i)
                steps.append(("mark", acc))
            key[out] = acc
            continue
        if len(ins) != 1:
            raise Unsupported(f"layer {kind} with {len(ins)} inputs")
        steps.append(("use", key[id(ins[0])]))
        steps += _layer_steps(layer)
        steps.append(("mark", out))
        key[out] = out
    if key.get(id(outputs[0])) is None or key[id(outputs[0])] == "input":
        raise Unsupported("an output that no layer computes")
    if steps and steps[-1][0] == "mark" and steps[-1][1] != key[id(outputs[0])]:
        raise Unsupported("the output is not the last value computed")
    if not any(s[0] == "dense" for s in steps):
        raise Unsupported("a model without a Dense layer")
    return in_features, steps
