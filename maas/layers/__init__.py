"""Layers with Keras 3's names, arguments and defaults.

>>> import maas
>>> inputs = maas.Input((64,))
>>> h = maas.layers.Dense(32, activation="relu")(inputs)
>>> h.shape
(None, 32)
"""
from .attention import AdditiveAttention, Attention, MultiHeadAttention
from .base import Input, InputLayer, KerasTensor, Layer, clear_session
from .convolutional import Conv1D, Conv2D, Conv2DTranspose, DepthwiseConv2D, SeparableConv2D
from .core import Activation, Dense, Dropout, Flatten, Reshape
from .embedding import Embedding, Masking
from .merging import (Add, Average, Concatenate, Maximum, Minimum, Multiply, Subtract, add, average,
                      concatenate, maximum, minimum, multiply, subtract)
from .normalization import BatchNormalization, GroupNormalization, LayerNormalization
from .pooling import (AveragePooling1D, AveragePooling2D, AvgPool1D, AvgPool2D,
                      GlobalAveragePooling1D, GlobalAveragePooling2D, GlobalAvgPool1D,
                      GlobalAvgPool2D, GlobalMaxPool1D, GlobalMaxPool2D, GlobalMaxPooling1D,
                      GlobalMaxPooling2D, MaxPool1D, MaxPool2D, MaxPooling1D, MaxPooling2D)
from .preprocessing import (Normalization, RandomCrop, RandomFlip, RandomRotation,
                            RandomTranslation, Rescaling)
from .recurrent import GRU, LSTM, Bidirectional, SimpleRNN, TimeDistributed
from .reshaping import (Cropping1D, Cropping2D, Permute, RepeatVector, SpatialDropout1D,
                        SpatialDropout2D, UpSampling1D, UpSampling2D, ZeroPadding1D, ZeroPadding2D)
from .transformer import PositionEmbedding, TokenAndPositionEmbedding, TransformerEncoder

# every layer class a model file may name (Keras's aliases resolve to the same classes)
_LAYERS = (InputLayer, Dense, Activation, Dropout, Flatten, Reshape,
           Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate,
           Conv1D, Conv2D, Conv2DTranspose, DepthwiseConv2D, SeparableConv2D,
           LayerNormalization, BatchNormalization, GroupNormalization,
           MaxPooling1D, MaxPooling2D, AveragePooling1D, AveragePooling2D,
           GlobalAveragePooling1D, GlobalAveragePooling2D, GlobalMaxPooling1D, GlobalMaxPooling2D,
           Cropping1D, Cropping2D, Permute, RepeatVector, SpatialDropout1D, SpatialDropout2D,
           UpSampling1D, UpSampling2D, ZeroPadding1D, ZeroPadding2D,
           Normalization, RandomCrop, RandomFlip, RandomRotation, RandomTranslation, Rescaling,
           Embedding, Masking, SimpleRNN, LSTM, GRU, Bidirectional, TimeDistributed,
           MultiHeadAttention, Attention, AdditiveAttention,
           TransformerEncoder, PositionEmbedding, TokenAndPositionEmbedding)
_CLASSES = {c.__name__: c for c in _LAYERS}


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


__all__ = sorted({c.__name__ for c in _LAYERS} - {"InputLayer"}) + [
    "Layer", "Input", "InputLayer", "KerasTensor", "clear_session", "serialize", "deserialize",
    "add", "subtract", "multiply", "average", "maximum", "minimum", "concatenate",
    "MaxPool1D", "MaxPool2D", "AvgPool1D", "AvgPool2D", "GlobalAvgPool1D", "GlobalAvgPool2D",
    "GlobalMaxPool1D", "GlobalMaxPool2D"]
