"""The graph of a functional model: nodes in topological order, run eagerly."""
from __future__ import annotations

from ..layers.base import InputLayer, KerasTensor, _flatten, _map


def trace(inputs, outputs):
    """(nodes in topological order, layers in order of first use) from the
    KerasTensors ``inputs`` back-reachable from ``outputs``."""
    input_ids = {id(t) for t in _flatten(inputs)}
    for t in _flatten(inputs):
        if not isinstance(t, KerasTensor) or not isinstance(t._keras_history[0], InputLayer):
            raise ValueError("The inputs of a functional Model must be maas.Input(...) tensors; "
                             f"received {t!r}")
    for t in _flatten(outputs):
        if not isinstance(t, KerasTensor):
            raise ValueError(f"The outputs of a functional Model must be symbolic tensors made by "
                             f"calling layers on maas.Input(...); received {type(t).__name__}")
    order, state = [], {}

    def visit(t):
        layer, ni, _ = t._keras_history
        node = layer._inbound_nodes[ni]
        key = id(node)
        if state.get(key) == 2:
            return
        if state.get(key) == 1:
            raise ValueError("The functional graph has a cycle")
        state[key] = 1
        if id(t) not in input_ids:
            if isinstance(layer, InputLayer):
                raise ValueError(f"Graph disconnected: cannot obtain the value of tensor {t!r} "
                                 f"(from input {layer.name!r}), which is not among the model's "
                                 f"inputs: {[i._keras_history[0].name for i in _flatten(inputs)]}")
            for x in node.input_tensors:
                visit(x)
        state[key] = 2
        order.append(node)

    for t in _flatten(outputs):
        visit(t)
    for t in _flatten(inputs):  # unused inputs still belong to the model
        node = t._keras_history[0]._inbound_nodes[0]
        if state.get(id(node)) != 2:
            order.insert(0, node)
            state[id(node)] = 2
    layers, seen = [], set()
    # Input layers first, in the order of the model's inputs, as Keras lists them
    for t in _flatten(inputs):
        layer = t._keras_history[0]
        if id(layer) not in seen:
            seen.add(id(layer))
            layers.append(layer)
    for node in order:
        if id(node.layer) not in seen:
            seen.add(id(node.layer))
            layers.append(node.layer)
    return order, layers


def run(nodes, inputs, values, training):
    """Runs the nodes on concrete input values (a flat list matching
    ``inputs``); returns a dict id(KerasTensor) -> Tensor."""
    env = {id(t): v for t, v in zip(_flatten(inputs), values)}
    for node in nodes:
        if isinstance(node.layer, InputLayer):
            continue
        args = _map(lambda t: env[id(t)] if isinstance(t, KerasTensor) else t, node.inputs)
        kwargs = dict(node.kwargs)
        explicit = kwargs.pop("training", None)   # training= given when the graph was built
        out = node.layer(args, training=training if explicit is None else explicit, **kwargs)
        for kt, v in zip(node.output_tensors, _flatten(out)):
            env[id(kt)] = v
    return env
