"""Transformer building blocks under KerasHub's names and arguments:
TransformerEncoder, PositionEmbedding, TokenAndPositionEmbedding.

>>> import numpy as np, maas
>>> enc = maas.layers.TransformerEncoder(intermediate_dim=16, num_heads=2)
>>> enc(np.ones((2, 5, 8), np.float32)).shape
(2, 5, 8)
>>> emb = maas.layers.TokenAndPositionEmbedding(vocabulary_size=10, sequence_length=6,
...                                             embedding_dim=8, mask_zero=True)
>>> x = emb(np.array([[3, 4, 0, 0]]))
>>> x.shape, maas.layers.base.get_keras_mask(x).tolist()
((1, 4, 8), [[1.0, 1.0, 0.0, 0.0]])
"""
from __future__ import annotations

import numpy as np

from .. import activations as _activations
from .. import initializers as _initializers
from .. import ops
from ..tensor import Tensor
from .attention import MultiHeadAttention, _check_rate, _f01, _ni
from .base import Layer, get_keras_mask
from .core import Dense, Dropout

__all__ = ["TransformerEncoder", "PositionEmbedding", "TokenAndPositionEmbedding"]


def _layer_norm(epsilon, name):
    from .normalization import LayerNormalization   # the vision work's layer
    return LayerNormalization(epsilon=epsilon, name=name)


def merge_padding_and_attention_mask(inputs, padding_mask, attention_mask):
    """KerasHub's rule: the padding mask (batch, seq) masks keys, (batch, 1,
    seq); an attention mask (batch, seq, seq) is combined by minimum; the
    inputs' Keras mask stands in for a missing padding mask. A float32 0/1
    tensor, or None."""
    mask = padding_mask if padding_mask is not None else get_keras_mask(inputs)
    out = None
    if mask is not None:
        m = _f01(mask)
        out = ops.reshape(m, (m.shape[0], 1, m.shape[1]))
    if attention_mask is not None:
        am = _f01(attention_mask)
        out = am if out is None else out * am
    return out


class TransformerEncoder(Layer):
    """One Transformer encoder block (KerasHub's ``TransformerEncoder``):
    self-attention and a two-layer feed-forward network, each with a residual
    connection and layer normalization, after (``normalize_first=False``,
    BERT's "post-LN") or before each sublayer.

    ``call(inputs, padding_mask=None, attention_mask=None, training=None,
    use_causal_mask=False)``: padding_mask (batch, seq), 1 for real tokens
    (the inputs' Keras mask by default); attention_mask (batch, seq, seq);
    ``use_causal_mask`` adds the causal mask (a maas extension).

    >>> enc = maas.layers.TransformerEncoder(32, num_heads=4, dropout=0.1, normalize_first=True)
    >>> enc(np.zeros((1, 3, 16), np.float32), padding_mask=np.array([[1, 1, 0]])).shape
    (1, 3, 16)
    """

    def __init__(self, intermediate_dim, num_heads, dropout=0, activation="relu",
                 layer_norm_epsilon=1e-05, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", normalize_first=False, **kwargs):
        super().__init__(**kwargs)
        self.intermediate_dim = _ni("intermediate_dim", intermediate_dim)
        self.num_heads = _ni("num_heads", num_heads)
        self.dropout = _check_rate("dropout", dropout)
        self.activation = _activations.get(activation)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.kernel_initializer = _initializers.get(kernel_initializer)
        self.bias_initializer = _initializers.get(bias_initializer)
        self.normalize_first = bool(normalize_first)
        self.supports_masking = True

    def build(self, inputs_shape):
        hidden = inputs_shape[-1]
        if hidden is None:
            raise ValueError(f"TransformerEncoder {self.name!r}: the feature dimension must be "
                             f"known, received input shape {tuple(inputs_shape)}")
        key_dim = int(hidden // self.num_heads)
        if key_dim == 0:
            raise ValueError("Attention `key_dim` computed cannot be zero. The `hidden_dim` value "
                             f"of {hidden} has to be equal to or greater than `num_heads` value of "
                             f"{self.num_heads}.")
        ki, bi = self.kernel_initializer, self.bias_initializer
        self._self_attention_layer = MultiHeadAttention(
            num_heads=self.num_heads, key_dim=key_dim, dropout=self.dropout, kernel_initializer=ki,
            bias_initializer=bi, name="self_attention")
        self._self_attention_layer.build(tuple(inputs_shape), tuple(inputs_shape))
        self._self_attention_layer_norm = _layer_norm(self.layer_norm_epsilon,
                                                      "self_attention_layer_norm")
        self._self_attention_layer_norm.build(tuple(inputs_shape))
        self._self_attention_dropout = Dropout(self.dropout, name="self_attention_dropout")
        self._feedforward_layer_norm = _layer_norm(self.layer_norm_epsilon,
                                                   "feedforward_layer_norm")
        self._feedforward_layer_norm.build(tuple(inputs_shape))
        self._feedforward_intermediate_dense = Dense(
            self.intermediate_dim, activation=self.activation, kernel_initializer=ki,
            bias_initializer=bi, name="feedforward_intermediate_dense")
        self._feedforward_intermediate_dense.build(tuple(inputs_shape))
        self._feedforward_output_dense = Dense(hidden, kernel_initializer=ki, bias_initializer=bi,
                                               name="feedforward_output_dense")
        self._feedforward_output_dense.build(tuple(inputs_shape[:-1]) + (self.intermediate_dim,))
        self._feedforward_dropout = Dropout(self.dropout, name="feedforward_dropout")
        self.built = True

    def call(self, inputs, padding_mask=None, attention_mask=None, training=None,
             use_causal_mask=False, mask=None):
        x = inputs
        if padding_mask is None and mask is not None:
            padding_mask = mask
        att_mask = merge_padding_and_attention_mask(inputs, padding_mask, attention_mask)
        residual = x
        if self.normalize_first:
            x = self._self_attention_layer_norm(x)
        x = self._self_attention_layer(x, x, attention_mask=att_mask, training=training,
                                       use_causal_mask=use_causal_mask)
        x = self._self_attention_dropout(x, training=training)
        x = x + residual
        if not self.normalize_first:
            x = self._self_attention_layer_norm(x)
        residual = x
        if self.normalize_first:
            x = self._feedforward_layer_norm(x)
        x = self._feedforward_output_dense(self._feedforward_intermediate_dense(x))
        x = self._feedforward_dropout(x, training=training)
        x = x + residual
        if not self.normalize_first:
            x = self._feedforward_layer_norm(x)
        return x

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape)

    def get_config(self):
        return {**super().get_config(), "intermediate_dim": self.intermediate_dim,
                "num_heads": self.num_heads, "dropout": self.dropout,
                "activation": _activations.serialize(self.activation),
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "kernel_initializer": _initializers.serialize(self.kernel_initializer),
                "bias_initializer": _initializers.serialize(self.bias_initializer),
                "normalize_first": self.normalize_first}


class PositionEmbedding(Layer):
    """Learnt position embeddings (KerasHub's ``PositionEmbedding``): the
    first seq rows of a (sequence_length, features) table, broadcast to the
    inputs' shape (batch, seq, features). ``call(inputs, start_index=0)``.

    >>> pe = maas.layers.PositionEmbedding(sequence_length=10)
    >>> pe(np.zeros((2, 4, 3), np.float32)).shape
    (2, 4, 3)
    """

    def __init__(self, sequence_length, initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.sequence_length = _ni("sequence_length", sequence_length)
        self.initializer = _initializers.get(initializer)
        self.supports_masking = True
        self.position_embeddings = None

    def build(self, inputs_shape):
        feature = inputs_shape[-1]
        if feature is None:
            raise ValueError(f"PositionEmbedding {self.name!r}: the feature dimension must be "
                             f"known, received input shape {tuple(inputs_shape)}")
        self.position_embeddings = self.add_weight(shape=(self.sequence_length, feature),
                                                   initializer=self.initializer,
                                                   name="embeddings")
        self.built = True

    def call(self, inputs, start_index=0):
        shape = tuple(inputs.shape)
        T = shape[-2]
        start = int(start_index)
        if start < 0 or start + T > self.sequence_length:
            raise ValueError(f"PositionEmbedding {self.name!r}: positions {start}..{start + T - 1} "
                             f"are beyond sequence_length={self.sequence_length}; build it with a "
                             "longer sequence_length or pass shorter sequences")
        pos = self.position_embeddings[start:start + T]
        lead = shape[:-2]
        pos = ops.reshape(pos, (1,) * len(lead) + (T, shape[-1]))
        if any(d != 1 for d in lead):   # broadcast to the inputs' shape, as KerasHub does
            pos = pos + Tensor(np.zeros(lead + (1, 1), np.float32))
        return pos

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape)

    def get_config(self):
        return {**super().get_config(), "sequence_length": self.sequence_length,
                "initializer": _initializers.serialize(self.initializer)}


class TokenAndPositionEmbedding(Layer):
    """Token embeddings plus learnt position embeddings (KerasHub's
    ``TokenAndPositionEmbedding``); ``mask_zero=True`` makes token 0 padding
    and puts the mask on the output."""

    def __init__(self, vocabulary_size, sequence_length, embedding_dim, tie_weights=True,
                 embeddings_initializer="uniform", mask_zero=False, **kwargs):
        super().__init__(**kwargs)
        from .embedding import Embedding

        self.vocabulary_size = _ni("vocabulary_size", vocabulary_size)
        self.sequence_length = _ni("sequence_length", sequence_length)
        self.embedding_dim = _ni("embedding_dim", embedding_dim)
        self.tie_weights = bool(tie_weights)
        self.embeddings_initializer = _initializers.get(embeddings_initializer)
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero
        self.token_embedding = Embedding(self.vocabulary_size, self.embedding_dim,
                                         embeddings_initializer=self.embeddings_initializer,
                                         mask_zero=self.mask_zero, name="token_embedding")
        self.position_embedding = PositionEmbedding(self.sequence_length,
                                                    initializer=self.embeddings_initializer,
                                                    name="position_embedding")

    def __call__(self, inputs, *args, **kwargs):
        from .embedding import _index_tensor, _is_symbolic
        if not isinstance(inputs, Tensor) and not _is_symbolic(inputs):
            inputs = _index_tensor(inputs)   # token ids keep their integer dtype
        return super().__call__(inputs, *args, **kwargs)

    def build(self, inputs_shape):
        self.token_embedding.build(inputs_shape)
        self.position_embedding.build(tuple(inputs_shape) + (self.embedding_dim,))
        self.built = True

    def call(self, inputs, start_index=0):
        e = self.token_embedding(inputs)
        return e + self.position_embedding(e, start_index=start_index)

    def compute_mask(self, inputs, mask=None):
        return self.token_embedding.compute_mask(inputs) if self.mask_zero else None

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape) + (self.embedding_dim,)

    def get_config(self):
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size,
                "sequence_length": self.sequence_length, "embedding_dim": self.embedding_dim,
                "tie_weights": self.tie_weights,
                "embeddings_initializer": _initializers.serialize(self.embeddings_initializer),
                "mask_zero": self.mask_zero}
