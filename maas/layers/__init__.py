"""Layers with Keras 3's names, arguments and defaults.

>>> import maas
>>> inputs = maas.Input((64,))
>>> h = maas.layers.Dense(32, activation="relu")(inputs)
>>> h.shape
(None, 32)
"""
from .base import InputLayer, Input, KerasTensor, Layer, clear_session
from .core import Activation, Dense, Dropout, Flatten, Reshape
from .merging import (Add, Average, Concatenate, Maximum, Minimum, Multiply, Subtract, add, average,
                      concatenate, maximum, minimum, multiply, subtract)

_CLASSES = {c.__name__: c for c in (InputLayer, Dense, Activation, Dropout, Flatten, Reshape,
                                     Add, Subtract, Multiply, Average, Maximum, Minimum,
                                     Concatenate)}
from .normalization import BatchNormalization, GroupNormalization, LayerNormalization
from .pooling import (AveragePooling1D, AveragePooling2D, AvgPool1D, AvgPool2D, GlobalAveragePooling1D, GlobalAveragePooling2D, GlobalAvgPool1D, GlobalAvgPool2D, GlobalMaxPool1D, GlobalMaxPool2D, GlobalMaxPooling1D, GlobalMaxPooling2D, MaxPool1D, MaxPool2D, MaxPooling1D, MaxPooling2D)  # noqa: E501
from .reshaping import (Cropping1D, Cropping2D, Permute, RepeatVector, SpatialDropout1D, SpatialDropout2D, UpSampling1D, UpSampling2D, ZeroPadding1D, ZeroPadding2D)  # noqa: E501
from .preprocessing import (Normalization, RandomCrop, RandomFlip, RandomRotation, RandomTranslation, Rescaling)  # noqa: E501
from .convolutional import Conv1D, Conv2D, Conv2DTranspose, DepthwiseConv2D, SeparableConv2D
_CLASSES.update({c.__name__: c for c in (Conv1D, Conv2D, Conv2DTranspose, DepthwiseConv2D, SeparableConv2D)})
_CLASSES.update({c.__name__: c for c in (LayerNormalization, BatchNormalization, GroupNormalization)})
_CLASSES.update({c.__name__: c for c in (MaxPooling1D, MaxPooling2D, AveragePooling1D, AveragePooling2D, GlobalAveragePooling1D, GlobalAveragePooling2D, GlobalMaxPooling1D, GlobalMaxPooling2D)})  # noqa: E501
_CLASSES.update({c.__name__: c for c in (Cropping1D, Cropping2D, Permute, RepeatVector, SpatialDropout1D, SpatialDropout2D, UpSampling1D, UpSampling2D, ZeroPadding1D, ZeroPadding2D)})  # noqa: E501
_CLASSES.update({c.__name__: c for c in (Normalization, RandomCrop, RandomFlip, RandomRotation, RandomTranslation, Rescaling)})
from .embedding import Embedding, Masking
from .recurrent import GRU, LSTM, Bidirectional, SimpleRNN, TimeDistributed
_CLASSES.update({c.__name__: c for c in (Embedding, Masking, SimpleRNN, LSTM, GRU, Bidirectional,
                                         TimeDistributed)})
from .attention import AdditiveAttention, Attention, MultiHeadAttention
from .embedding import Embedding
from .transformer import PositionEmbedding, TokenAndPositionEmbedding, TransformerEncoder
_CLASSES.update({c.__name__: c for c in (Embedding,)})
_CLASSES.update({c.__name__: c for c in (MultiHeadAttention, Attention, AdditiveAttention)})
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
           "Flatten", "Reshape", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
           "Concatenate", "add", "subtract", "average", "maximum", "minimum",
           "multiply", "concatenate", "serialize", "deserialize"]
__all__ += ["Conv1D", "Conv2D", "Conv2DTranspose", "DepthwiseConv2D", "SeparableConv2D"]
__all__ += ["LayerNormalization", "BatchNormalization", "GroupNormalization"]
__all__ += ["MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "MaxPool1D", "MaxPool2D", "AvgPool1D", "AvgPool2D", "GlobalAvgPool1D", "GlobalAvgPool2D", "GlobalMaxPool1D", "GlobalMaxPool2D"]  # noqa: E501
__all__ += ["Cropping1D", "Cropping2D", "Permute", "RepeatVector", "SpatialDropout1D", "SpatialDropout2D", "UpSampling1D", "UpSampling2D", "ZeroPadding1D", "ZeroPadding2D"]  # noqa: E501
__all__ += ["Normalization", "RandomCrop", "RandomFlip", "RandomRotation", "RandomTranslation", "Rescaling"]
__all__ += ["Embedding", "Masking", "SimpleRNN", "LSTM", "GRU", "Bidirectional", "TimeDistributed"]
__all__ += ["Embedding"]
__all__ += ["MultiHeadAttention", "Attention", "AdditiveAttention"]
__all__ += ["TransformerEncoder", "PositionEmbedding", "TokenAndPositionEmbedding"]
