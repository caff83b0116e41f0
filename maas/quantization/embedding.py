"""int8 Embedding, as Keras 3 does it (``Embedding.quantize("int8")``).

The table ``embeddings (input_dim, output_dim)`` becomes int8, quantized
per row (``abs_max_quantize(axis=-1)``: ``scale = 127 / (max|row| +
1e-7)``, ``q = clip(round(row * scale), -127, 127)``), with a float32
``embeddings_scale (input_dim,)``; both non-trainable. A lookup returns
``q[ids] / embeddings_scale[ids]`` (one C op, ``qembedding``). As in Keras,
the int8 table gets no gradient (fine-tuning trains the layers after it).

>>> import numpy as np, maas
>>> emb = maas.layers.Embedding(50, 8)
>>> ids = np.array([[1, 7, 49]])
>>> before = np.asarray(emb(ids))
>>> emb.quantize("int8")
>>> [w.name for w in emb.weights], emb.embeddings.dtype
(['embeddings', 'embeddings_scale'], 'int8')
>>> bool(np.abs(np.asarray(emb(ids)) - before).max() <= np.abs(before).max() / 254 + 1e-7)
True
"""
from __future__ import annotations

import numpy as np

from .. import _core

__all__ = ["quantize_embedding", "quantize_table"]


def _parent():
    from .. import quantization

    return quantization


def quantize_table(table) -> tuple[np.ndarray, np.ndarray]:
    """Keras's ``abs_max_quantize(table, axis=-1)`` with the scale squeezed:
    ``(q int8 (input_dim, output_dim), scale float32 (input_dim,))``."""
    w = np.asarray(table, np.float32)
    if not np.isfinite(w).all():
        raise ValueError("quantize_table: the embeddings hold NaN or infinite values; int8 cannot "
                         "represent them")
    eps = np.float32(_parent().EPSILON)
    scale = (np.float32(127.0) / (np.abs(w).max(axis=-1, initial=0.0) + eps)).astype(np.float32)
    q = np.clip(np.rint(w * scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def _int8_weights(layer, config):
    P = _parent()
    layer.quantization_config = dict(config)
    layer.embeddings = P.Int8Weight(np.zeros((layer.input_dim, layer.output_dim), np.int8),
                                    name="embeddings")
    layer.embeddings_scale = layer.add_weight(shape=(layer.input_dim,), initializer="ones",
                                              trainable=False, name="embeddings_scale")
    layer.embeddings.path = f"{layer.name}/embeddings"
    layer._weights_own = [layer.embeddings, layer.embeddings_scale]


def quantize_embedding(layer, mode="int8", input_scale=None) -> None:
    """Quantizes a built Embedding in place (the registered quantizer; an
    embedding has no activations to calibrate, so ``input_scale`` is
    ignored)."""
    P = _parent()
    P._check_mode(mode)
    P._check_quantizable(layer, "embeddings")
    q, scale = quantize_table(np.asarray(layer.embeddings))
    _int8_weights(layer, {"mode": mode})
    layer.embeddings.assign(q)
    layer.embeddings_scale.assign(scale)


def build_embedding(layer) -> None:
    """Embedding.build for a layer whose config says it is quantized."""
    _int8_weights(layer, layer.quantization_config)
    layer.built = True


def embedding_call(layer, inputs, mask: bool):
    """The lookup of a quantized Embedding: ``out`` (and the mask when
    ``mask``)."""
    return _core.op(_core.OP_QEMBEDDING, [layer.embeddings, layer.embeddings_scale, inputs],
                    int(mask))


def register() -> None:
    from ..layers.embedding import Embedding

    _parent().register_quantizer(Embedding, quantize_embedding)
