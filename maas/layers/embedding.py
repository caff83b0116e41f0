"""Embedding: rows of a trainable table picked by integer token ids.

One C op (``embedding``) gathers the rows and, in the backward, adds each
gradient row into its table row (no one-hot product). Indices may be int32,
int64, or float32 holding integers (what ``fit`` hands a model whose data
came in as floats); an index outside ``[0, input_dim)`` raises ValueError
naming it and ``input_dim``, before anything is read.

>>> import numpy as np, maas
>>> emb = maas.layers.Embedding(10, 3, mask_zero=True)
>>> out = emb(np.array([[4, 2, 0]]))
>>> out.shape
(1, 3, 3)
>>> maas.layers.base.get_keras_mask(out).tolist()
[[1.0, 1.0, 0.0]]
"""
from __future__ import annotations

import numpy as np

from .. import _core
from .. import initializers as _initializers
from .. import regularizers as _regularizers
from ..tensor import Tensor
from .base import Layer, set_keras_mask



def _positive_int(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, received {name}={value!r}")
    return int(value)


def _index_tensor(x):
    """Token ids as a tensor the op takes (int32/int64 kept, others float32)."""
    if isinstance(x, Tensor):
        return x
    a = np.asarray(x)
    if a.dtype.kind in "iu":
        dt = np.int64 if a.dtype.itemsize > 4 or a.dtype.kind == "u" else np.int32
    else:
        dt = np.float32
    return Tensor(np.array(a, dtype=dt, order="C", copy=None))   # keeps 0-d arrays 0-d


class Embedding(Layer):
    """Turns token ids (batch, ...) into vectors (batch, ..., output_dim)
    (Keras 3's signature and defaults).

    ``mask_zero=True`` makes id 0 padding: the output carries a mask (1.0
    where the id is not 0) that recurrent layers read, and ``input_dim``
    should count id 0.

    >>> emb = maas.layers.Embedding(input_dim=5, output_dim=2, embeddings_initializer="ones")
    >>> emb(np.array([[1, 4]], np.int32)).numpy()
    array([[[1., 1.],
            [1., 1.]]], dtype=float32)
    """

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform",
                 embeddings_regularizer=None, embeddings_constraint=None, mask_zero=False,
                 weights=None, lora_rank=None, input_length=None, **kwargs):
        quantization_config = kwargs.pop("quantization_config", None)  # maas.quantization
        super().__init__(**kwargs)
        self.quantization_config = quantization_config
        self.input_dim = _positive_int("input_dim", input_dim)
        self.output_dim = _positive_int("output_dim", output_dim)
        self.embeddings_initializer = _initializers.get(embeddings_initializer)
        self.embeddings_regularizer = _regularizers.get(embeddings_regularizer)
        if embeddings_constraint is not None:
            raise NotImplementedError("Embedding: embeddings_constraint is not supported by maas")
        if lora_rank is not None:
            raise NotImplementedError("Embedding: lora_rank is not supported by maas")
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero
        self._initial_weights = weights
        self.embeddings = None

    def build(self, input_shape=None):
        if self.quantization_config is not None:
            return _qembedding().build_embedding(self)
        self.embeddings = self.add_weight(shape=(self.input_dim, self.output_dim),
                                          initializer=self.embeddings_initializer,
                                          regularizer=self.embeddings_regularizer,
                                          name="embeddings")
        if self._initial_weights is not None:
            self.set_weights(self._initial_weights)
            self._initial_weights = None
        self.built = True

    def __call__(self, inputs, *args, **kwargs):
        # token ids keep their integer dtype (Layer.__call__ makes arrays float32)
        if not isinstance(inputs, Tensor) and not _is_symbolic(inputs):
            inputs = _index_tensor(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs):
        if self.quantization_config is not None:
            if self.mask_zero:
                out, mask = _qembedding().embedding_call(self, inputs, True)
                set_keras_mask(out, mask)
                return out
            return _qembedding().embedding_call(self, inputs, False)
        if self.mask_zero:
            out, mask = _core.op(_core.OP_EMBEDDING, [self.embeddings, inputs], 1)
            set_keras_mask(out, mask)
            return out
        return _core.op(_core.OP_EMBEDDING, [self.embeddings, inputs], 0)

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero:
            return None
        if self.quantization_config is not None:
            return _qembedding().embedding_call(self, inputs, True)[1]
        return _core.op(_core.OP_EMBEDDING, [self.embeddings, inputs], 1)[1]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
                "embeddings_initializer": _initializers.serialize(self.embeddings_initializer),
                "embeddings_regularizer": _regularizers.serialize(self.embeddings_regularizer),
                "mask_zero": self.mask_zero,
                **({"quantization_config": dict(self.quantization_config)}
                   if self.quantization_config is not None else {})}

    def quantize(self, mode, type_check=True):
        """Quantizes the built table to int8 in place (Keras 3's
        ``Embedding.quantize``; see :mod:`maas.quantization.embedding`).

        >>> emb = maas.layers.Embedding(10, 4); _ = emb(np.array([1]))
        >>> emb.quantize("int8"); emb.embeddings.dtype
        'int8'
        """
        _qembedding().quantize_embedding(self, mode)


def _qembedding():
    from ..quantization import embedding

    return embedding


class Masking(Layer):
    """Masks the steps whose every feature equals ``mask_value``: the
    outputs are the inputs with those steps zeroed, and carry a mask (1.0
    where a step is kept) for the layers after it (Keras's ``Masking``).

    >>> x = np.array([[[1.0, 2.0], [0.0, 0.0]]], np.float32)
    >>> out = maas.layers.Masking()(x)
    >>> maas.layers.base.get_keras_mask(out).tolist()
    [[1.0, 0.0]]
    """

    supports_masking = True

    def __init__(self, mask_value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.mask_value = float(mask_value)
        self.built = True

    def _mask(self, inputs):
        from .. import ops
        return ops.max(ops.not_equal(inputs, self.mask_value), axis=-1)

    def call(self, inputs):
        from .. import ops
        mask = self._mask(inputs)
        out = inputs * ops.expand_dims(mask, -1)
        set_keras_mask(out, mask)
        return out

    def compute_mask(self, inputs, mask=None):
        return self._mask(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mask_value": self.mask_value}


def _is_symbolic(x):
    from .base import KerasTensor, _flatten
    return any(isinstance(t, KerasTensor) for t in _flatten(x))


__all__ = ["Embedding", "Masking"]
