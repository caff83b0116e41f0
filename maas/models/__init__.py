"""Models: ``Sequential``, the functional ``Model(inputs, outputs)`` and
subclassed ``Model``s, all with compile/fit/evaluate/predict.

>>> import maas
>>> model = maas.Sequential([maas.Input((4,)), maas.layers.Dense(1)])
>>> model.compile(optimizer="sgd", loss="mse")
"""
from .model import Model
from .sequential import Sequential
from .cloning import clone_model
from ..saving.model_file import load_model, model_from_json, save_model

__all__ = ["Model", "Sequential", "clone_model", "load_model", "save_model", "model_from_json"]
