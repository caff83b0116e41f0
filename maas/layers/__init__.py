"""Layers with Keras 3's names, arguments and defaults.

>>> import maas
>>> inputs = maas.Input((64,))
>>> h = maas.layers.Dense(32, activation="relu")(inputs)
>>> h.shape
(None, 32)
"""
from .base import InputLayer, Input, KerasTensor, Layer, clear_session
from .core import Activation, Dense, Dropout, Flatten, Reshape
from .attention import AdditiveAttention, Attention, MultiHeadAttention
from .merging import Add, Concatenate, Multiply, Subtract, add, concatenate, multiply, subtract
from .embedding import Embedding
from .normalization import BatchNormalization, GroupNormalization, LayerNormalization
from .transformer import PositionEmbedding, TokenAndPositionEmbedding, TransformerEncoder

_CLASSES = {c.__name__: c for c in (InputLayer, Dense, Activation, Dropout, Flatten, Reshape,
                                     Add, Subtract, Multiply, Concatenate)}
_CLASSES.update({c.__name__: c for c in (Embedding,)})
_CLASSES.update({c.__name__: c for c in (MultiHeadAttention, Attention, AdditiveAttention)})
_CLASSES.update({c.__name__: c for c in (LayerNormalization, BatchNormalization, GroupNormalization)})
_CLASSES.update({c.__name__: c for c in (TransformerEncoder, PositionEmbedding, TokenAndPositionEmbedding)})


def serialize(layer) -> dict:
    """{"module", "class_name", "config"} of a layer (Keras's layout)."""
    from ..saving.object_registration import GLOBAL_CUSTOM_NAMES

    out = {"module": "maas.layers", "class_name": type(layer).__name__,
           "config": layer.get_config()}
    registered = GLOBAL_CUSTOM_NAMES.get(type(layer))
    if registered is not None:  # Keras's layout: the bare class name and "package>Name"
        out["module"], out["registered_name"] = type(layer).__module__, registered
    return out


def deserialize(config: dict, custom_objects=None):
    """A layer (or model) from :func:`serialize`'s dict."""
    from ..saving.object_registration import get_registered_object

    name = config["class_name"]
    registered = config.get("registered_name")
    if isinstance(registered, str):
        cls = get_registered_object(registered, custom_objects)
        if cls is not None:
            return cls.from_config(config["config"])
    classes = dict(_CLASSES)
    from .. import models
    classes.update({"Sequential": models.Sequential, "Functional": models.Model,
                    "Model": models.Model})
    classes.update(custom_objects or {})
    if name not in classes:
        raise ValueError(f"Unknown layer: {name!r}. Please ensure you are using a maas layer or "
                         "pass custom layers via custom_objects={...}")
    return classes[name].from_config(config["config"])


__all__ = ["Layer", "Input", "InputLayer", "KerasTensor", "Dense", "Activation", "Dropout",
           "Flatten", "Reshape", "Add", "Subtract", "Multiply", "Concatenate", "add", "subtract",
           "multiply", "concatenate", "serialize", "deserialize"]
__all__ += ["Embedding"]
__all__ += ["MultiHeadAttention", "Attention", "AdditiveAttention"]
__all__ += ["LayerNormalization", "BatchNormalization", "GroupNormalization"]
__all__ += ["TransformerEncoder", "PositionEmbedding", "TokenAndPositionEmbedding"]
