"""Attention: the fused scaled-dot-product kernel, MultiHeadAttention,
Attention (Luong) and AdditiveAttention (Bahdanau), with Keras 3's names,
arguments, defaults and weight shapes.

>>> import numpy as np, maas
>>> mha = maas.layers.MultiHeadAttention(num_heads=2, key_dim=4)
>>> x = np.random.default_rng(0).standard_normal((3, 5, 8)).astype(np.float32)
>>> mha(x, x).shape
(3, 5, 8)
>>> [tuple(w.shape) for w in mha.weights][:2]
[(8, 2, 4), (2, 4)]
"""
from __future__ import annotations

import math

import numpy as np

from .. import _core
from .. import initializers as _initializers
from .. import ops
from .. import random as _random
from .. import regularizers as _regularizers
from ..tensor import Tensor
from .base import Layer, _to_tensor, get_keras_mask

__all__ = ["dot_product_attention", "MultiHeadAttention", "Attention", "AdditiveAttention"]


def _tensor(x):
    return x if isinstance(x, Tensor) else _to_tensor(x)


def _keep_mask(mask):
    """A bool tensor from a Keras mask (bool, 0/1 numbers); None stays."""
    if mask is None:
        return None
    if isinstance(mask, Tensor):
        return mask if mask.dtype == "bool" else ops.cast(mask, "bool")
    return Tensor(np.ascontiguousarray(np.asarray(mask) != 0))


def _draw(layer_or_none, seed):
    """The (seed, stream) of one dropout draw, noted for an active trace."""
    if layer_or_none is not None:
        return _random.draw_key(layer_or_none._next_key)
    return _random.draw_key(_random.next_stream if seed is None else (lambda: (int(seed), 0)))


def dot_product_attention(query, key, value, bias=None, mask=None, scale=None, is_causal=False,
                          dropout_rate=0.0, seed=None, layout="bshd", return_scores=False,
                          _key_provider=None):
    """softmax(query key^T * scale + bias, masked) value, fused in one C op
    (its backward too), as ``keras.ops.dot_product_attention``.

    Layout "bshd" (Keras's): query (batch, seq_q, heads, dim), key
    (batch, seq_k, heads, dim), value (batch, seq_k, heads, dim_v); "bhsd"
    (PyTorch's): (batch, heads, seq, dim). ``bias`` (float, added to the
    scores) and ``mask`` (bool, True: attend) broadcast to the scores' shape
    (batch, heads, seq_q, seq_k). ``scale`` defaults to 1/sqrt(dim).
    ``is_causal``: query i attends to keys j <= i. A query row with every key
    masked gives zeros. ``dropout_rate`` drops attention probabilities
    (training only: pass 0 at inference). ``return_scores=True`` returns the
    probabilities (batch, heads, seq_q, seq_k) instead of the output.

    >>> q = np.ones((1, 3, 2, 4), np.float32)
    >>> maas.layers.attention.dot_product_attention(q, q, q).shape
    (1, 3, 2, 4)
    """
    if layout not in ("bshd", "bhsd"):
        raise ValueError(f"dot_product_attention: layout must be 'bshd' or 'bhsd', "
                         f"received layout={layout!r}")
    if not 0.0 <= float(dropout_rate) < 1.0:
        raise ValueError(f"dot_product_attention: dropout_rate must be in [0, 1), received "
                         f"dropout_rate={dropout_rate!r}")
    if scale is not None and not (float(scale) > 0 and math.isfinite(float(scale))):
        raise ValueError(f"dot_product_attention: scale must be a positive number, received "
                         f"scale={scale!r}")
    inputs = [_tensor(query), _tensor(key), _tensor(value)]
    m = _keep_mask(mask)
    if bias is not None:
        b = _tensor(bias)
        if m is not None:   # one mask input: fold the keep mask into the additive bias
            b = b + (ops.cast(m, "float32") - 1.0) * 1e30
        inputs.append(b)
    elif m is not None:
        inputs.append(m)
    rate = 0.0 if return_scores else float(dropout_rate)
    s, stream = 0, 0
    op = _core.OP_ATTENTION
    if rate > 0.0:
        op = _core.OP_ATTENTION_DROPOUT
        s, stream = _random.draw_key(_key_provider) if _key_provider is not None else \
            _draw(None, seed)
    return _core.op(op, inputs, s, stream, 0.0 if scale is None else float(scale), rate,
                    int(bool(is_causal)), 1 if layout == "bshd" else 0, int(bool(return_scores)))


def _ni(name, v, allow_none=False):
    if v is None and allow_none:
        return None
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v <= 0:
        raise ValueError(f"{name} must be a positive integer, received {name}={v!r}")
    return int(v)


def _check_rate(name, v):
    if not isinstance(v, (int, float)) or not 0 <= v < 1:
        raise ValueError(f"{name} must be a float in [0, 1), received {name}={v!r}")
    return float(v)


class _KeyedDropout:
    """A seed of its own counts the layer's calls (as maas's Dropout)."""

    def _init_seed(self, seed):
        self.seed = seed
        self._calls = 0

    def _next_key(self):
        if self.seed is None:
            return _random.next_stream()
        self._calls += 1
        return int(self.seed), self._calls


class MultiHeadAttention(_KeyedDropout, Layer):
    """Keras 3's MultiHeadAttention: query, key and value projected per head
    (EinsumDense kernels: query (query_dim, num_heads, key_dim), key
    (key_dim_in, num_heads, key_dim), value (value_dim_in, num_heads,
    value_dim), output (num_heads, value_dim, output_dim)), the fused
    attention kernel, and the output projection.

    ``call(query, value, key=None, query_mask=None, value_mask=None,
    key_mask=None, attention_mask=None, return_attention_scores=False,
    training=None, use_causal_mask=False)``: ``attention_mask`` (batch, T, S)
    with 1/True where query t may attend to key s; the masks of Keras's
    mask propagation (``_keras_mask`` on the inputs) are combined with it.

    >>> mha = maas.layers.MultiHeadAttention(num_heads=2, key_dim=3, value_dim=5, output_shape=7)
    >>> q = np.ones((2, 4, 6), np.float32); v = np.ones((2, 9, 6), np.float32)
    >>> out, scores = mha(q, v, return_attention_scores=True)
    >>> out.shape, scores.shape
    ((2, 4, 7), (2, 2, 4, 9))
    """

    def __init__(self, num_heads, key_dim, value_dim=None, dropout=0.0, use_bias=True,
                 output_shape=None, attention_axes=None, flash_attention=None,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, seed=None, **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.num_heads = _ni("num_heads", num_heads)
        self.key_dim = _ni("key_dim", key_dim)
        self.value_dim = _ni("value_dim", value_dim, True) or self.key_dim
        self.dropout = _check_rate("dropout", dropout)
        self.use_bias = bool(use_bias)
        if output_shape is not None:
            shp = (output_shape,) if isinstance(output_shape, (int, np.integer)) else tuple(output_shape)
            if len(shp) != 1:
                raise NotImplementedError(f"MultiHeadAttention: output_shape must be an int (or "
                                          f"a 1-tuple) in maas, received output_shape={output_shape!r}")
            output_shape = _ni("output_shape", shp[0])
        self._output_dim = output_shape
        if attention_axes is not None and tuple(np.atleast_1d(attention_axes)) not in ((1,), (-2,)):
            raise NotImplementedError("MultiHeadAttention: only attention over the sequence axis "
                                      f"(attention_axes=None) is supported, received "
                                      f"attention_axes={attention_axes!r}")
        self.attention_axes = attention_axes
        self.flash_attention = flash_attention
        self.kernel_initializer = _initializers.get(kernel_initializer)
        self.bias_initializer = _initializers.get(bias_initializer)
        self.kernel_regularizer = _regularizers.get(kernel_regularizer)
        self.bias_regularizer = _regularizers.get(bias_regularizer)
        self._init_seed(seed)

    def build(self, query_shape, value_shape=None, key_shape=None):
        if isinstance(query_shape, list) and query_shape and isinstance(query_shape[0], (tuple, list)):
            shapes = list(query_shape) + [None, None]   # the [query, value, key] of __call__
            query_shape, value_shape, key_shape = shapes[0], shapes[1], shapes[2]
        if value_shape is None:
            value_shape = query_shape
        if key_shape is None:
            key_shape = value_shape
        for nm, s in (("query", query_shape), ("value", value_shape), ("key", key_shape)):
            if len(s) != 3 or s[-1] is None:
                raise ValueError(f"MultiHeadAttention {self.name!r}: {nm} must be 3-D (batch, "
                                 f"seq, features) with known features, received shape {tuple(s)}")
        H, kd, vd = self.num_heads, self.key_dim, self.value_dim
        out_dim = self._output_dim or query_shape[-1]
        self._dims = (query_shape[-1], key_shape[-1], value_shape[-1], out_dim)

        def w(name, shape, bias_shape):
            k = self.add_weight(shape=shape, initializer=self.kernel_initializer,
                                regularizer=self.kernel_regularizer, name=f"{name}/kernel")
            b = self.add_weight(shape=bias_shape, initializer=self.bias_initializer,
                                regularizer=self.bias_regularizer,
                                name=f"{name}/bias") if self.use_bias else None
            return k, b

        self.query_kernel, self.query_bias = w("query", (query_shape[-1], H, kd), (H, kd))
        self.key_kernel, self.key_bias = w("key", (key_shape[-1], H, kd), (H, kd))
        self.value_kernel, self.value_bias = w("value", (value_shape[-1], H, vd), (H, vd))
        self.output_kernel, self.output_bias = w("attention_output", (H, vd, out_dim), (out_dim,))
        self.built = True

    def __call__(self, query, value=None, key=None, **kwargs):
        if value is None and isinstance(query, list) and len(query) in (2, 3):
            query, value, key = (query + [None])[:3]   # a functional graph's replay
        if value is None:
            raise TypeError(f"MultiHeadAttention {self.name!r}: call(query, value, key=None, ...) "
                            "needs a value")
        self._want_scores = bool(kwargs.get("return_attention_scores", False))
        return super().__call__([query, value] + ([key] if key is not None else []), **kwargs)

    def compute_output_shape(self, input_shapes):
        q, v = input_shapes[0], input_shapes[1]
        out = tuple(q[:-1]) + (self._output_dim or q[-1],)
        if getattr(self, "_want_scores", False):
            return [out, (q[0], self.num_heads, q[1], v[1])]
        return out

    def _proj(self, x, kernel, bias, heads, dim):
        B, T = x.shape[0], x.shape[1]
        y = ops.dense(x, ops.reshape(kernel, (kernel.shape[0], heads * dim)),
                      None if bias is None else ops.reshape(bias, (heads * dim,)))
        return ops.reshape(y, (B, T, heads, dim))

    def _masks(self, query, value, key, query_mask, value_mask, key_mask, attention_mask):
        query_mask = get_keras_mask(query) if query_mask is None else query_mask
        value_mask = get_keras_mask(value) if value_mask is None else value_mask
        key_mask = get_keras_mask(key) if key_mask is None and key is not value else key_mask
        B, T, S = query.shape[0], query.shape[1], value.shape[1]
        parts = []
        if query_mask is not None:
            parts.append(ops.reshape(_f01(query_mask), (B, 1, T, 1)))
        if value_mask is not None:
            parts.append(ops.reshape(_f01(value_mask), (B, 1, 1, S)))
        if key_mask is not None:
            parts.append(ops.reshape(_f01(key_mask), (B, 1, 1, S)))
        if attention_mask is not None:
            am = _f01(attention_mask)
            if am.ndim == 3:
                am = ops.reshape(am, (am.shape[0], 1, am.shape[1], am.shape[2]))
            parts.append(am)
        if not parts:
            return None
        m = parts[0]
        for p in parts[1:]:
            m = m * p
        return ops.cast(m, "bool")

    supports_masking = True

    def compute_mask(self, inputs, mask=None):
        """The query's mask (Keras's)."""
        return mask[0] if isinstance(mask, (list, tuple)) else mask

    def call(self, inputs, query_mask=None, value_mask=None, key_mask=None, attention_mask=None,
             return_attention_scores=False, training=None, use_causal_mask=False, mask=None):
        query, value = inputs[0], inputs[1]
        key = inputs[2] if len(inputs) > 2 else value
        if isinstance(mask, (list, tuple)):   # the masks riding on the inputs (Keras's _keras_mask)
            ms = list(mask) + [None, None]
            query_mask = ms[0] if query_mask is None else query_mask
            value_mask = ms[1] if value_mask is None else value_mask
            key_mask = ms[2] if key_mask is None and len(inputs) > 2 else key_mask
        H, kd, vd = self.num_heads, self.key_dim, self.value_dim
        q = self._proj(query, self.query_kernel, self.query_bias, H, kd)
        k = self._proj(key, self.key_kernel, self.key_bias, H, kd)
        v = self._proj(value, self.value_kernel, self.value_bias, H, vd)
        mask = self._masks(query, value, key, query_mask, value_mask, key_mask, attention_mask)
        rate = self.dropout if training else 0.0
        att = dot_product_attention(q, k, v, mask=mask, scale=1.0 / math.sqrt(kd),
                                    is_causal=use_causal_mask, dropout_rate=rate,
                                    _key_provider=self._next_key if rate > 0 else None)
        B, T = query.shape[0], query.shape[1]
        out = ops.dense(ops.reshape(att, (B, T, H * vd)),
                        ops.reshape(self.output_kernel, (H * vd, self.output_kernel.shape[2])),
                        self.output_bias)
        if return_attention_scores:
            scores = dot_product_attention(q, k, v, mask=mask, scale=1.0 / math.sqrt(kd),
                                           is_causal=use_causal_mask, return_scores=True)
            return out, scores
        return out

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "key_dim": self.key_dim,
                "value_dim": self.value_dim, "dropout": self.dropout, "use_bias": self.use_bias,
                "output_shape": self._output_dim, "attention_axes": self.attention_axes,
                "flash_attention": self.flash_attention,
                "kernel_initializer": _initializers.serialize(self.kernel_initializer),
                "bias_initializer": _initializers.serialize(self.bias_initializer),
                "kernel_regularizer": _regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": _regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": _regularizers.serialize(self.activity_regularizer),
                "kernel_constraint": None, "bias_constraint": None, "seed": self.seed}


def _f01(mask):
    """A float32 0/1 tensor from a mask (bool, ints or floats; nonzero: keep)."""
    if isinstance(mask, Tensor):
        if mask.dtype == "float32":
            return ops.cast(ops.cast(mask, "bool"), "float32")
        return ops.cast(mask, "float32")
    return Tensor(np.ascontiguousarray(np.asarray(mask) != 0, dtype=np.float32))


class _BaseDenseAttention(_KeyedDropout, Layer):
    """Keras's base of Attention and AdditiveAttention: ``call(inputs=[query,
    value] or [query, value, key], mask=[query_mask, value_mask],
    training=None, return_attention_scores=False, use_causal_mask=False)``."""

    def __init__(self, dropout=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.dropout = _check_rate("dropout", dropout)
        self._init_seed(seed)

    def _split(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) not in (2, 3):
            raise ValueError(f"{type(self).__name__} layer {self.name!r} must be called on a list "
                             f"of inputs, namely [query, value] or [query, value, key]. "
                             f"Received: inputs={inputs!r}.")
        q, v = inputs[0], inputs[1]
        return q, v, inputs[2] if len(inputs) == 3 else v

    def compute_output_shape(self, input_shape):
        q, v = input_shape[0], input_shape[1]
        return tuple(q[:-1]) + (v[-1],)

    def compute_mask(self, inputs, mask=None):
        if mask is None or mask[0] is None:
            return None
        return mask[0]

    def _scores_mask(self, query, value, mask, use_causal_mask):
        q_mask = v_mask = None
        if mask is not None:
            q_mask, v_mask = (list(mask) + [None, None])[:2]
        if v_mask is None:
            v_mask = get_keras_mask(value)
        if q_mask is None:
            q_mask = get_keras_mask(query)
        B, T, S = query.shape[0], query.shape[1], value.shape[1]
        sm = None if v_mask is None else ops.reshape(_f01(v_mask), (B, 1, S))
        if use_causal_mask:
            causal = Tensor(np.tril(np.ones((1, T, S), np.float32)))
            sm = causal if sm is None else sm * causal
        return sm, q_mask

    def _finish(self, scores, value, sm, q_mask, training, return_attention_scores):
        # Keras's _apply_scores: masked scores get -1e9, softmax, dropout, weights @ value
        if sm is not None:
            scores = scores - 1.0e9 * (1.0 - sm)
        weights = ops.softmax(scores, axis=-1)
        dropped = weights
        if training and self.dropout > 0:
            seed, stream = _random.draw_key(self._next_key)
            dropped = _core.dropout(weights, self.dropout, seed, stream)
        out = ops.matmul(dropped, value)
        if q_mask is not None:
            B, T = out.shape[0], out.shape[1]
            out = out * ops.reshape(_f01(q_mask), (B, T, 1))
        return (out, weights) if return_attention_scores else out

    def get_config(self):
        return {**super().get_config(), "dropout": self.dropout, "seed": self.seed}


class Attention(_BaseDenseAttention):
    """Dot-product (Luong) attention, Keras 3's ``Attention(use_scale=False,
    score_mode="dot", dropout=0.0, seed=None)``: scores = query key^T (times
    a learnt scalar ``scale`` when use_scale); ``score_mode="concat"``:
    scores = concat_score_weight * sum(tanh(query + key)).

    >>> att = maas.layers.Attention()
    >>> q = np.ones((2, 3, 4), np.float32); v = np.ones((2, 5, 4), np.float32)
    >>> att([q, v]).shape
    (2, 3, 4)
    """

    def __init__(self, use_scale=False, score_mode="dot", dropout=0.0, seed=None, **kwargs):
        super().__init__(dropout=dropout, seed=seed, **kwargs)
        if score_mode not in ("dot", "concat"):
            raise ValueError(f"Invalid value for argument score_mode. Expected one of "
                             f"{{'dot', 'concat'}}. Received: score_mode={score_mode}")
        self.use_scale = bool(use_scale)
        self.score_mode = score_mode
        self.scale = self.concat_score_weight = None

    def build(self, input_shape):
        if self.use_scale:
            self.scale = self.add_weight(shape=(), initializer="ones", name="scale")
        if self.score_mode == "concat":
            self.concat_score_weight = self.add_weight(shape=(), initializer="ones",
                                                       name="concat_score_weight")
        self.built = True

    def _calculate_scores(self, query, key):
        if self.score_mode == "dot":
            scores = ops.matmul(query, key, transpose_b=True)
            if self.scale is not None:
                scores = scores * self.scale
            return scores
        B, T, D = query.shape
        S = key.shape[1]
        q = ops.reshape(query, (B, T, 1, D))
        k = ops.reshape(key, (B, 1, S, D))
        if self.scale is not None:
            return self.concat_score_weight * ops.sum(ops.tanh(self.scale * (q + k)), axis=-1)
        return self.concat_score_weight * ops.sum(ops.tanh(q + k), axis=-1)

    def call(self, inputs, mask=None, training=None, return_attention_scores=False,
             use_causal_mask=False):
        query, value, key = self._split(inputs)
        sm, q_mask = self._scores_mask(query, value, mask, use_causal_mask)
        scores = self._calculate_scores(query, key)
        return self._finish(scores, value, sm, q_mask, training, return_attention_scores)

    def get_config(self):
        return {**super().get_config(), "use_scale": self.use_scale, "score_mode": self.score_mode}


class AdditiveAttention(_BaseDenseAttention):
    """Additive (Bahdanau) attention, Keras 3's ``AdditiveAttention(
    use_scale=True, dropout=0.0)``: scores = sum(scale * tanh(query + key))
    over the features, ``scale`` a learnt vector (glorot_uniform).

    >>> att = maas.layers.AdditiveAttention()
    >>> q = np.ones((2, 3, 4), np.float32); v = np.ones((2, 5, 4), np.float32)
    >>> att([q, v]).shape
    (2, 3, 4)
    """

    def __init__(self, use_scale=True, dropout=0.0, **kwargs):
        super().__init__(dropout=dropout, **kwargs)
        self.use_scale = bool(use_scale)
        self.scale = None

    def build(self, input_shape):
        dim = input_shape[1][-1]
        if self.use_scale:
            self.scale = self.add_weight(shape=(dim,), initializer="glorot_uniform", name="scale")
        self.built = True

    def call(self, inputs, mask=None, training=None, return_attention_scores=False,
             use_causal_mask=False):
        query, value, key = self._split(inputs)
        sm, q_mask = self._scores_mask(query, value, mask, use_causal_mask)
        B, T, D = query.shape
        S = key.shape[1]
        t = ops.tanh(ops.reshape(query, (B, T, 1, D)) + ops.reshape(key, (B, 1, S, D)))
        if self.scale is not None:
            t = t * self.scale
        scores = ops.sum(t, axis=-1)
        return self._finish(scores, value, sm, q_mask, training, return_attention_scores)

    def get_config(self):
        return {**super().get_config(), "use_scale": self.use_scale}
