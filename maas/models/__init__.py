"""Models: ``Sequential``, the functional ``Model(inputs, outputs)`` and
subclassed ``Model``s, all with compile/fit/evaluate/predict.

>>> import maas
>>> model = maas.Sequential([maas.Input((4,)), maas.layers.Dense(1)])
>>> model.compile(optimizer="sgd", loss="mse")
"""
from .model import Model
from .sequential import Sequential

__all__ = ["Model", "Sequential"]
