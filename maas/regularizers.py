"""Weight regularizers: callables on a variable returning a scalar Tensor
built from maas ops, so their gradients flow through the tape.

>>> import maas, numpy as np
>>> w = maas.Variable(np.array([1.0, -2.0]))
>>> float(maas.regularizers.L2(0.1)(w))
0.5
"""
from __future__ import annotations

from . import ops


class Regularizer:
    def __call__(self, x):
        return 0.0

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _check(name, v):
    v = float(v)
    if not v >= 0:
        raise ValueError(f"{name} must be a non-negative float, received {name}={v}")
    return v


class L1L2(Regularizer):
    """l1 * sum(|x|) + l2 * sum(x**2) (Keras's defaults: 0 and 0)."""

    def __init__(self, l1=0.0, l2=0.0):
        self.l1, self.l2 = _check("l1", l1), _check("l2", l2)

    def __call__(self, x):
        out = None
        if self.l1:
            out = ops.sum(ops.abs(x)) * self.l1
        if self.l2:
            t = ops.sum(ops.square(x)) * self.l2
            out = t if out is None else out + t
        return out if out is not None else ops.sum(x) * 0.0

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


class L1(Regularizer):
    """l1 * sum(|x|) (Keras's default l1=0.01)."""

    def __init__(self, l1=0.01):
        self.l1 = _check("l1", l1)

    def __call__(self, x):
        return ops.sum(ops.abs(x)) * self.l1

    def get_config(self):
        return {"l1": self.l1}


class L2(Regularizer):
    """l2 * sum(x**2) (Keras's default l2=0.01)."""

    def __init__(self, l2=0.01):
        self.l2 = _check("l2", l2)

    def __call__(self, x):
        return ops.sum(ops.square(x)) * self.l2

    def get_config(self):
        return {"l2": self.l2}


l1, l2, l1_l2 = L1, L2, L1L2
_CLASSES = {"L1": L1, "L2": L2, "L1L2": L1L2}
_BY_NAME = {"l1": L1, "l2": L2, "l1_l2": L1L2, "l1l2": L1L2}


def get(identifier):
    if identifier is None or isinstance(identifier, Regularizer) or callable(identifier):
        return identifier
    if isinstance(identifier, dict):
        return _CLASSES[identifier["class_name"]].from_config(identifier.get("config", {}))
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier.lower()) or _CLASSES.get(identifier)
        if cls is not None:
            return cls()
    raise ValueError(f"Could not interpret regularizer identifier: {identifier!r}; "
                     f"valid names are: l1, l2, l1_l2, or a Regularizer object")


def serialize(reg):
    if reg is None:
        return None
    return {"class_name": type(reg).__name__, "config": reg.get_config()}
