"""Activations under Keras 3's names; each is one ``maas.ops`` call.

>>> import maas
>>> maas.activations.get("relu")(maas.tensor([-1.0, 2.0])).numpy()
array([0., 2.], dtype=float32)
"""
from __future__ import annotations

from . import ops


def relu(x):
    """max(x, 0)"""
    return ops.relu(x)


def sigmoid(x):
    return ops.sigmoid(x)


def softmax(x, axis: int = -1):
    return ops.softmax(x, axis=axis)


def log_softmax(x, axis: int = -1):
    return ops.log_softmax(x, axis=axis)


def tanh(x):
    return ops.tanh(x)


def gelu(x, approximate: bool = False):
    """Keras's ``activations.gelu`` defaults to the exact (erf) form."""
    return ops.gelu(x, approximate=approximate)


def elu(x, alpha: float = 1.0):
    return ops.elu(x, alpha)


def leaky_relu(x, negative_slope: float = 0.2):
    return ops.leaky_relu(x, negative_slope)


def softplus(x):
    return ops.softplus(x)


def silu(x):
    return ops.silu(x)


swish = silu


def relu6(x):
    return ops.relu6(x)


def linear(x):
    """The identity."""
    return x


_BY_NAME = {f.__name__: f for f in (relu, sigmoid, softmax, log_softmax, tanh, gelu, elu,
                                    leaky_relu, softplus, silu, relu6, linear)}
_BY_NAME["swish"] = silu


def get(identifier):
    """An activation function from its name, a callable, or None (linear)."""
    if identifier is None:
        return linear
    if callable(identifier):
        return identifier
    if isinstance(identifier, str) and identifier in _BY_NAME:
        return _BY_NAME[identifier]
    raise ValueError(f"Could not interpret activation function identifier: {identifier!r}; "
                     f"valid names are: {', '.join(sorted(_BY_NAME))}")


def serialize(activation) -> str:
    """The name of an activation function (for get_config)."""
    for name, f in _BY_NAME.items():
        if f is activation:
            return "silu" if name == "swish" else name
    name = getattr(activation, "__name__", None)
    if name is None:
        raise ValueError(f"cannot serialize activation {activation!r}")
    return name
