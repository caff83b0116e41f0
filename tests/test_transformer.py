"""TransformerEncoder, PositionEmbedding and TokenAndPositionEmbedding
(KerasHub's names): forward and gradients against PyTorch's
nn.TransformerEncoderLayer with the weights mapped and against float64
finite differences; masks; a 2-layer encoder learning a sequence task with
causal and padding masks; plan == eager bits; save / reload in a new
process."""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import maas
from maas.applications.bert import mean_pool
from maas.layers.base import get_keras_mask

L = maas.layers


def close(a, b, rtol=1e-4, atol=1e-5):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol * max(1.0, np.abs(b).max()))


def torch_layer_from(enc, E, norm_first, activation):
    att = enc._self_attention_layer
    H, kd = att.num_heads, att.key_dim
    t = torch.nn.TransformerEncoderLayer(E, H, dim_feedforward=enc.intermediate_dim, dropout=0.0,
                                         activation=activation, layer_norm_eps=enc.layer_norm_epsilon,
                                         batch_first=True, norm_first=norm_first)
    w = lambda v: np.asarray(v)  # noqa: E731
    with torch.no_grad():
        t.self_attn.in_proj_weight.copy_(torch.tensor(np.concatenate(
            [w(k).reshape(E, H * kd).T for k in (att.query_kernel, att.key_kernel, att.value_kernel)])))
        t.self_attn.in_proj_bias.copy_(torch.tensor(np.concatenate(
            [w(b).ravel() for b in (att.query_bias, att.key_bias, att.value_bias)])))
        t.self_attn.out_proj.weight.copy_(torch.tensor(w(att.output_kernel).reshape(H * kd, E).T))
        t.self_attn.out_proj.bias.copy_(torch.tensor(w(att.output_bias)))
        t.linear1.weight.copy_(torch.tensor(w(enc._feedforward_intermediate_dense.kernel).T))
        t.linear1.bias.copy_(torch.tensor(w(enc._feedforward_intermediate_dense.bias)))
        t.linear2.weight.copy_(torch.tensor(w(enc._feedforward_output_dense.kernel).T))
        t.linear2.bias.copy_(torch.tensor(w(enc._feedforward_output_dense.bias)))
        for tn, mn in ((t.norm1, enc._self_attention_layer_norm), (t.norm2, enc._feedforward_layer_norm)):
            tn.weight.copy_(torch.tensor(w(mn.gamma)))
            tn.bias.copy_(torch.tensor(w(mn.beta)))
    return t.train()   # dropout 0; train mode keeps PyTorch off its fused fast path


def randomize(layer, seed):
    rng = np.random.default_rng(seed)
    for v in layer.weights:
        v.assign((rng.standard_normal(tuple(v.shape)) * 0.3 + (1.0 if v.name == "gamma" else 0.0))
                 .astype(np.float32))


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-ln", "pre-ln"])
@pytest.mark.parametrize("masks", ["none", "padding", "causal+padding"])
def test_transformer_encoder_matches_torch_encoder_layer(norm_first, masks):
    rng = np.random.default_rng(0)
    B, T, E = 3, 5, 8
    act = "gelu" if norm_first else "relu"
    enc = L.TransformerEncoder(16, num_heads=2, activation=act, normalize_first=norm_first)
    x = rng.standard_normal((B, T, E)).astype(np.float32)
    enc(x)
    randomize(enc, 1)
    t = torch_layer_from(enc, E, norm_first, act)
    pad = np.ones((B, T), np.float32)
    pad[1, 3:] = 0
    pad[2, 1:] = 0
    kw, tk = {}, {}
    if masks != "none":
        kw["padding_mask"] = pad
        tk["src_key_padding_mask"] = torch.tensor(pad == 0)
    if masks.startswith("causal"):
        kw["use_causal_mask"] = True
        tk["src_mask"] = torch.ones(T, T, dtype=torch.bool).triu(1)
        tk["is_causal"] = True
    R = rng.standard_normal((B, T, E)).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    ref = t(tx, **tk)
    (ref * torch.tensor(R)).sum().backward()
    xt = maas.tensor(x)
    with maas.GradientTape() as tape:
        tape.watch(xt)
        out = enc(xt, **kw)
        loss = maas.ops.sum(out * maas.tensor(R))
    gs = tape.gradient(loss, [xt, enc._feedforward_intermediate_dense.kernel,
                              enc._self_attention_layer_norm.gamma, enc._self_attention_layer.query_kernel])
    close(out, ref.detach())
    close(gs[0], tx.grad)
    close(np.asarray(gs[1]).T, t.linear1.weight.grad)
    close(gs[2], t.norm1.weight.grad)
    close(np.asarray(gs[3]).reshape(E, -1).T, t.self_attn.in_proj_weight.grad[:E])


def np_encoder(enc, x, pad=None, causal=False):
    """The encoder block in float64 NumPy (post-LN, relu)."""
    w = {v.path.split("/", 1)[1] if "/" in v.path else v.name: np.asarray(v, np.float64)
         for v in enc.weights}
    att = enc._self_attention_layer
    g = lambda v: np.asarray(v, np.float64)  # noqa: E731

    def ln(h, m):
        mu = h.mean(-1, keepdims=True)
        var = ((h - mu) ** 2).mean(-1, keepdims=True)
        return (h - mu) / np.sqrt(var + enc.layer_norm_epsilon) * g(m.gamma) + g(m.beta)

    Q = np.einsum("btd,dhk->bhtk", x, g(att.query_kernel)) + g(att.query_bias)[None, :, None]
    K = np.einsum("btd,dhk->bhtk", x, g(att.key_kernel)) + g(att.key_bias)[None, :, None]
    V = np.einsum("btd,dhk->bhtk", x, g(att.value_kernel)) + g(att.value_bias)[None, :, None]
    s = np.einsum("bhik,bhjk->bhij", Q, K) / np.sqrt(att.key_dim)
    T = x.shape[1]
    allowed = np.ones(s.shape, bool)
    if pad is not None:
        allowed &= pad[:, None, None, :] > 0
    if causal:
        allowed &= np.tril(np.ones((T, T), bool))
    s = np.where(allowed, s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p = p / p.sum(-1, keepdims=True)
    o = np.einsum("bhij,bhjk->bhik", p, V)
    a = np.einsum("bhtk,hke->bte", o, g(att.output_kernel)) + g(att.output_bias)
    h = ln(x + a, enc._self_attention_layer_norm)
    f1 = enc._feedforward_intermediate_dense
    f2 = enc._feedforward_output_dense
    ff = np.maximum(h @ g(f1.kernel) + g(f1.bias), 0) @ g(f2.kernel) + g(f2.bias)
    del w
    return ln(h + ff, enc._feedforward_layer_norm)


def fd_grad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        g[i] = (f(xp) - f(xm)) / (2 * eps)
    return g


@pytest.mark.parametrize("case", ["seq1-batch1", "ones-mask", "padded-causal"])
def test_transformer_encoder_gradient_matches_float64_finite_differences(case):
    rng = np.random.default_rng(2)
    B, T, E = (1, 1, 4) if case == "seq1-batch1" else (2, 3, 4)
    enc = L.TransformerEncoder(6, num_heads=2)
    x = rng.standard_normal((B, T, E)).astype(np.float32)
    enc(x)
    randomize(enc, 3)
    pad = np.ones((B, T), np.float32)
    causal = case == "padded-causal"
    if causal:
        pad[1, -1] = 0
    kw = {"padding_mask": pad} if case != "seq1-batch1" else {}
    R = rng.standard_normal((B, T, E)).astype(np.float32)
    xt = maas.tensor(x)
    with maas.GradientTape() as tape:
        tape.watch(xt)
        out = enc(xt, use_causal_mask=causal, **kw)
        loss = maas.ops.sum(out * maas.tensor(R))
    g = tape.gradient(loss, xt)
    x64 = x.astype(np.float64)
    p = pad if kw else None
    close(out, np_encoder(enc, x64, p, causal))
    close(g, fd_grad(lambda a: (np_encoder(enc, a, p, causal) * R).sum(), x64), rtol=2e-4)


def test_transformer_encoder_arguments_config_and_errors():
    enc = L.TransformerEncoder(intermediate_dim=8, num_heads=2)
    cfg = enc.get_config()
    assert (cfg["dropout"], cfg["activation"], cfg["layer_norm_epsilon"], cfg["normalize_first"]) == \
        (0.0, "relu", 1e-5, False)
    again = L.TransformerEncoder.from_config(cfg)
    assert again.intermediate_dim == 8 and again.num_heads == 2
    with pytest.raises(ValueError, match="`key_dim` computed cannot be zero"):
        L.TransformerEncoder(8, num_heads=4)(np.ones((1, 2, 3), np.float32))
    with pytest.raises(ValueError, match="num_heads must be a positive integer"):
        L.TransformerEncoder(8, num_heads=0)


def test_position_embeddings_broadcast_and_accumulate_their_gradient():
    pe = L.PositionEmbedding(sequence_length=6)
    x = np.zeros((3, 4, 2), np.float32)
    out = np.asarray(pe(x))
    table = np.asarray(pe.position_embeddings)
    assert out.shape == (3, 4, 2)
    np.testing.assert_array_equal(out, np.broadcast_to(table[:4], (3, 4, 2)))
    np.testing.assert_array_equal(np.asarray(pe(x, start_index=2))[0], table[2:6])
    with maas.GradientTape() as tape:
        loss = maas.ops.sum(pe(maas.tensor(x)) * 2.0)
    g = np.asarray(tape.gradient(loss, pe.position_embeddings))
    np.testing.assert_array_equal(g[:4], np.full((4, 2), 6.0))
    np.testing.assert_array_equal(g[4:], 0)
    with pytest.raises(ValueError, match="beyond sequence_length=6"):
        pe(np.zeros((1, 7, 2), np.float32))


def test_token_and_position_embedding_sums_and_carries_the_padding_mask():
    tpe = L.TokenAndPositionEmbedding(vocabulary_size=7, sequence_length=5, embedding_dim=3,
                                      mask_zero=True)
    ids = np.array([[1, 2, 0], [6, 0, 0]])
    out = tpe(ids)
    tok = np.asarray(tpe.token_embedding.embeddings)
    pos = np.asarray(tpe.position_embedding.position_embeddings)
    close(out, tok[ids] + pos[:3][None])
    assert get_keras_mask(out).tolist() == [[1, 1, 0], [1, 0, 0]]
    assert L.TokenAndPositionEmbedding.from_config(tpe.get_config()).embedding_dim == 3


# ---------------------------------------------------------------- learning

def contains_pattern(n, seed, T=12, V=10):
    """Label: does token 3 come somewhere after a token 7? Variable lengths,
    padded with 0 at the end."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, T), np.int64)
    y = np.zeros(n, np.float32)
    for i in range(n):
        k = rng.integers(4, T + 1)
        seq = rng.integers(1, V, k)
        seq[seq == 3] = 4
        seq[seq == 7] = 5
        if rng.random() < 0.5:
            a = rng.integers(0, k - 1)
            b = rng.integers(a + 1, k)
            seq[a], seq[b] = 7, 3
            y[i] = 1
        elif rng.random() < 0.5:   # the tokens in the wrong order, or one alone
            a = rng.integers(0, k - 1)
            b = rng.integers(a + 1, k)
            seq[a], seq[b] = (3, 7) if rng.random() < 0.5 else (3, 4)
        ids[i, :k] = seq
    return ids, y


@maas.saving.register_keras_serializable("test_transformer")
class SequenceClassifier(maas.Model):
    def __init__(self, vocab=10, T=12, dim=32, causal=True, **kw):
        super().__init__(**kw)
        self.vocab, self.T, self.dim, self.causal = vocab, T, dim, causal
        self.emb = L.TokenAndPositionEmbedding(vocab, T, dim, mask_zero=True)
        self.enc1 = L.TransformerEncoder(64, num_heads=4)
        self.enc2 = L.TransformerEncoder(64, num_heads=4)
        self.out = L.Dense(1, activation="sigmoid")

    def call(self, x, training=False):
        h = self.emb(x)
        mask = get_keras_mask(h)
        h = self.enc1(h, use_causal_mask=self.causal, training=training)   # padding: h's mask
        h = self.enc2(h, use_causal_mask=self.causal, training=training)
        return self.out(mean_pool(h, mask))

    def get_config(self):
        return {"vocab": self.vocab, "T": self.T, "dim": self.dim, "causal": self.causal}


def test_two_layer_transformer_learns_an_ordered_pattern_with_causal_and_padding_masks():
    x, y = contains_pattern(1500, 0)
    xt, yt = contains_pattern(500, 1)
    maas.utils.set_random_seed(0)
    m = SequenceClassifier()
    m.compile(optimizer=maas.optimizers.Adam(2e-3), loss="binary_crossentropy", metrics=["accuracy"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.fit(x, y, epochs=5, batch_size=64, verbose=0)
    assert m._plan.eager_reason is None
    acc = float(((m.predict(xt, verbose=0)[:, 0] > 0.5) == yt).mean())
    assert acc >= 0.95, acc


def test_transformer_plan_gives_eager_bits_with_dropout():
    x, y = contains_pattern(128, 2)
    out = []
    for eager in (False, True):
        maas.utils.set_random_seed(5)
        m = maas.Sequential([L.TokenAndPositionEmbedding(10, 12, 16, mask_zero=True),
                             L.TransformerEncoder(32, num_heads=2, dropout=0.1),
                             L.Flatten(), L.Dense(1, activation="sigmoid")])
        m.compile(optimizer="adam", loss="binary_crossentropy", run_eagerly=eager)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            h = m.fit(x, y, epochs=2, batch_size=32, verbose=0)
        out.append((m, h.history))
    (mp, hp), (me, he) = out
    assert mp._plan.eager_reason is None
    assert hp == he
    for a, b in zip(mp.get_weights(), me.get_weights()):
        np.testing.assert_array_equal(a, b)


NEW_PROCESS = """
import sys, numpy as np, maas
sys.path.insert(0, {tests!r})
import test_transformer  # registers SequenceClassifier
m = maas.load_model({path!r})
np.save({out!r}, m.predict(np.load({xpath!r}), verbose=0))
"""


def test_transformer_model_saves_and_reloads_in_a_new_process_bit_for_bit(tmp_path):
    x, y = contains_pattern(128, 3)
    maas.utils.set_random_seed(1)
    m = SequenceClassifier(dim=16)
    m.compile(optimizer="adam", loss="binary_crossentropy")
    m.fit(x, y, epochs=1, batch_size=32, verbose=0)
    path, xpath, outp = str(tmp_path / "t.maas"), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")
    m.save(path)
    np.save(xpath, x.astype(np.float32))
    code = NEW_PROCESS.format(tests=os.path.dirname(__file__), path=path, xpath=xpath, out=outp)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                   timeout=300)
    np.testing.assert_array_equal(np.load(outp), m.predict(x.astype(np.float32), verbose=0))
