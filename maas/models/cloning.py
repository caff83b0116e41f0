"""``clone_model``: a new model with the same architecture and new weights
(freshly initialized, not copied), as ``keras.models.clone_model``.

>>> import maas
>>> model = maas.Sequential([maas.Input((4,)), maas.layers.Dense(2)])
>>> clone = maas.models.clone_model(model)
>>> clone.get_config() == model.get_config()
True
>>> bool((clone.weights[0].numpy() == model.weights[0].numpy()).all())
False
"""
from __future__ import annotations

from ..layers.base import InputLayer, KerasTensor, _flatten, _map

__all__ = ["clone_model"]


def _clone_layer(layer):
    """Keras's default: a new layer of the same class from the same config."""
    from ..saving.object_registration import visible_objects

    if hasattr(layer, "_is_graph_network") and layer._is_graph_network:
        return type(layer).from_config(layer.get_config(), custom_objects=visible_objects())
    return type(layer).from_config(layer.get_config())


def clone_model(model, input_tensors=None, clone_function=None, call_function=None,
                recursive=False, **kwargs):
    """A copy of ``model``'s architecture with new weights.

    Sequential and functional models are rebuilt layer by layer:
    ``clone_function(layer)`` makes each new layer (default: the same class
    from ``layer.get_config()``; a layer used twice is cloned once and still
    shared), ``call_function(layer, *args, **kwargs)`` replaces the layer
    calls of a functional graph, ``input_tensors`` (``maas.Input`` tensors)
    replace the inputs, and ``recursive=True`` clones nested Sequential or
    functional models with the same ``clone_function`` instead of passing
    them to it. A subclassed model is rebuilt with
    ``type(model).from_config(model.get_config())``.

    >>> clone = maas.models.clone_model(model, clone_function=lambda l: l.__class__.from_config(
    ...     {**l.get_config(), "name": l.name + "_clone"}))  # doctest: +SKIP
    """
    from .model import Model
    from .sequential import Sequential

    if kwargs:
        raise TypeError(f"clone_model: unexpected keyword arguments {sorted(kwargs)}")
    if not isinstance(model, Model):
        raise TypeError(f"clone_model expects a maas Model, received {type(model).__name__}")
    clone_function = clone_function or _clone_layer

    def clone(layer):
        if recursive and isinstance(layer, Model) and getattr(layer, "_is_graph_network", False):
            return clone_model(layer, clone_function=clone_function, call_function=call_function,
                               recursive=True)
        new = clone_function(layer)
        if not hasattr(new, "__call__") or not hasattr(new, "weights"):
            raise ValueError(f"clone_function must return a layer; for {layer.name!r} it returned "
                             f"{type(new).__name__}")
        return new

    if isinstance(model, Sequential):
        if call_function is not None:
            raise ValueError("clone_model: call_function is only supported for functional models")
        layers = [clone(layer) for layer in model.layers]
        if input_tensors is not None:
            inputs = _flatten(input_tensors)
            if len(inputs) != 1 or not isinstance(inputs[0], KerasTensor):
                raise ValueError("clone_model: a Sequential model takes one maas.Input tensor as "
                                 f"input_tensors, received {input_tensors!r}")
            layers = [inputs[0]] + layers
        elif model._input_layer is not None:
            il = model._input_layer
            layers = [InputLayer(batch_shape=il.batch_shape, name=il.name, dtype=getattr(il, "_input_dtype", None))] + layers
        new = Sequential(layers, name=model.name, trainable=model.trainable)
        if not new.weights and getattr(model, "_build_shape", None) is not None:
            new.build(model._build_shape)
        return new

    if getattr(model, "_is_graph_network", False):
        return _clone_functional(model, clone, input_tensors, call_function)

    if clone_function is not _clone_layer or input_tensors is not None or call_function is not None:
        raise ValueError("clone_model of a subclassed model takes neither clone_function, "
                         "input_tensors nor call_function: it is rebuilt from its get_config()")
    try:
        config = model.get_config()
    except NotImplementedError:
        raise ValueError(f"clone_model: {type(model).__name__} is a subclassed model without "
                         "get_config(); implement get_config() (and from_config() if __init__ "
                         "takes non-serializable arguments) to clone it") from None
    new = type(model).from_config(config)
    shape = getattr(model, "_build_shape", None)
    if model.weights and not new.weights and shape is not None:
        new.build(shape)
    return new


def _clone_functional(model, clone, input_tensors, call_function):
    from .model import Model

    new_inputs = None
    if input_tensors is not None:
        new_inputs = _flatten(input_tensors)
        if len(new_inputs) != len(model.inputs) or \
                not all(isinstance(t, KerasTensor) for t in new_inputs):
            raise ValueError(f"clone_model: input_tensors must be {len(model.inputs)} maas.Input "
                             f"tensor(s), received {input_tensors!r}")
    env = {}
    for i, t in enumerate(model.inputs):
        il = t._keras_history[0]
        env[id(t)] = new_inputs[i] if new_inputs is not None else \
            InputLayer(batch_shape=il.batch_shape, name=il.name, dtype=getattr(il, "_input_dtype", None)).output_tensor
    cloned = {}
    for node in model._nodes:
        layer = node.layer
        if isinstance(layer, InputLayer):
            continue
        if id(layer) not in cloned:
            cloned[id(layer)] = clone(layer)
        new_layer = cloned[id(layer)]
        args = _map(lambda t: env[id(t)] if isinstance(t, KerasTensor) else t, node.inputs)
        if call_function is not None:
            out = call_function(new_layer, args, **node.kwargs)
        else:
            out = new_layer(args, **node.kwargs)
        for kt, v in zip(node.output_tensors, _flatten(out)):
            env[id(kt)] = v

    def rebuild(structure):
        return _map(lambda t: env[id(t)], structure)

    inputs = rebuild(model._nested_inputs) if new_inputs is None else (
        input_tensors if isinstance(model._nested_inputs, (list, tuple)) else new_inputs[0])
    return Model(inputs, rebuild(model._nested_outputs), name=model.name, trainable=model.trainable)
