"""The fused attention op (csrc/ops/attention.c) and the attention layers:
forward and gradients against PyTorch 2.13 (F.scaled_dot_product_attention,
nn.MultiheadAttention with Keras's weights mapped) and against central
finite differences of a float64 NumPy reference; masks (all-ones, padded,
fully masked rows), causal, dropout, thread counts, plan == eager bits, and
save / reload in a new process."""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import maas
from maas import _core
from maas.layers.attention import dot_product_attention

L = maas.layers
RTOL = 1e-4


def close(a, b, rtol=RTOL, atol=1e-5):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol * max(1.0, np.abs(b).max()))


def grads(fn, inputs, R):
    """Gradients of sum(fn(*inputs) * R) with respect to the inputs, on maas's tape."""
    ts = [maas.tensor(x) for x in inputs]
    with maas.GradientTape() as tape:
        for t in ts:
            tape.watch(t)
        out = fn(*ts)
        loss = maas.ops.sum(out * maas.tensor(R))
    return np.asarray(out), [None if g is None else np.asarray(g) for g in tape.gradient(loss, ts)]


# ----------------------------------------------------------- float64 reference

def ref_sdpa(q, k, v, keep=None, bias=None, causal=False, scale=None, drop=None):
    """(batch, heads, seq, dim) float64 softmax(q k^T scale + bias) v, masked keys
    excluded, fully masked rows zero."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    s = np.einsum("bhid,bhjd->bhij", q, k) * (1 / np.sqrt(q.shape[-1]) if scale is None else scale)
    if bias is not None:
        s = s + bias
    allowed = np.ones(s.shape, bool)
    if keep is not None:
        allowed = allowed & np.broadcast_to(keep, s.shape)
    if causal:
        allowed = allowed & np.tril(np.ones(s.shape[-2:], bool))
    s = np.where(allowed, s, -np.inf)
    mx = s.max(-1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    e = np.where(allowed, np.exp(s - mx), 0.0)
    den = e.sum(-1, keepdims=True)
    p = np.where(den > 0, e / np.where(den > 0, den, 1), 0.0)
    pd = p if drop is None else p * drop
    return np.einsum("bhij,bhjd->bhid", pd, v), p


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


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def sdpa(q, k, v, mask=None, causal=False, layout="bhsd", **kw):
    return dot_product_attention(q, k, v, mask=mask, is_causal=causal, layout=layout, **kw)


# ------------------------------------------------------------------ the op

SHAPES = [(2, 3, 5, 7, 4, 6), (1, 1, 1, 1, 3, 2), (1, 2, 1, 4, 8, 8), (3, 1, 6, 6, 5, 3)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("mask", ["none", "ones", "padded"])
def test_sdpa_forward_and_gradients_match_torch(shape, causal, mask):
    B, H, Lq, Lk, D, Dv = shape
    rng = np.random.default_rng(sum(shape))
    q, k, v = rand(rng, B, H, Lq, D), rand(rng, B, H, Lk, D), rand(rng, B, H, Lk, Dv)
    R = rand(rng, B, H, Lq, Dv)
    keep = None
    if mask == "ones":
        keep = np.ones((B, 1, 1, Lk), bool)
    elif mask == "padded":   # the last key of each sequence but the first is padding
        keep = np.ones((B, 1, 1, Lk), bool)
        keep[1:, ..., -1] = Lk == 1
    out, (gq, gk, gv) = grads(lambda a, b, c: sdpa(a, b, c, keep, causal), [q, k, v], R)
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    tm = None if keep is None else torch.tensor(keep)
    if causal:
        tri = torch.ones(Lq, Lk, dtype=torch.bool).tril()
        tm = tri if tm is None else tm & tri
    ref = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=tm)
    (ref * torch.tensor(R)).sum().backward()
    close(out, ref.detach())
    for g, t in ((gq, tq), (gk, tk), (gv, tv)):
        close(g, t.grad)


def test_sdpa_keras_layout_equals_torch_layout_transposed():
    rng = np.random.default_rng(1)
    q, k, v = rand(rng, 2, 5, 3, 4), rand(rng, 2, 7, 3, 4), rand(rng, 2, 7, 3, 6)
    bias = rand(rng, 2, 1, 5, 7)
    out = np.asarray(sdpa(q, k, v, layout="bshd", bias=bias, causal=True))
    t = lambda a: np.ascontiguousarray(a.transpose(0, 2, 1, 3))  # noqa: E731
    ref = F.scaled_dot_product_attention(*(torch.tensor(t(a)) for a in (q, k, v)),
                                         attn_mask=torch.tensor(bias) + torch.full((5, 7), -torch.inf).triu(1))
    close(out, t(ref.numpy()))


@pytest.mark.parametrize("case", ["seq1-batch1", "ones-mask", "padded-float-bias", "causal"])
def test_sdpa_gradients_match_float64_finite_differences(case):
    rng = np.random.default_rng(3)
    shape = {"seq1-batch1": (1, 1, 1, 1, 3, 2)}.get(case, (2, 2, 3, 4, 3, 2))
    B, H, Lq, Lk, D, Dv = shape
    q, k, v = rand(rng, B, H, Lq, D), rand(rng, B, H, Lk, D), rand(rng, B, H, Lk, Dv)
    R = rand(rng, B, H, Lq, Dv)
    keep = bias = None
    causal = case == "causal"
    if case == "ones-mask":
        keep = np.ones((B, 1, Lq, Lk), bool)
    if case == "padded-float-bias":
        bias = rand(rng, B, 1, 1, Lk)
        keep = np.ones((B, 1, 1, Lk), bool)
        keep[0, ..., -2:] = False
    fn = lambda a, b, c: sdpa(a, b, c, keep, causal, bias=bias)  # noqa: E731
    _, gs = grads(fn, [q, k, v], R)
    xs = [q.astype(np.float64), k.astype(np.float64), v.astype(np.float64)]
    for i in range(3):
        def f(x, i=i):
            args = list(xs)
            args[i] = x
            return (ref_sdpa(*args, keep=keep, bias=bias, causal=causal)[0] * R).sum()
        close(gs[i], fd_grad(f, xs[i]), rtol=1e-4, atol=1e-5)


def test_sdpa_fully_masked_rows_give_zeros_and_finite_gradients():
    rng = np.random.default_rng(4)
    q, k, v = rand(rng, 1, 2, 3, 4), rand(rng, 1, 2, 5, 4), rand(rng, 1, 2, 5, 4)
    keep = np.ones((1, 1, 3, 5), bool)
    keep[0, 0, 1, :] = False                       # query 1 may attend to nothing
    out, gs = grads(lambda a, b, c: sdpa(a, b, c, keep), [q, k, v], np.ones((1, 2, 3, 4), np.float32))
    assert (out[:, :, 1] == 0).all() and np.isfinite(out).all()
    assert all(np.isfinite(g).all() for g in gs)
    assert (gs[0][:, :, 1] == 0).all()
    close(out, ref_sdpa(q, k, v, keep=keep)[0])


def test_sdpa_return_scores_gives_the_probabilities_and_their_gradient():
    rng = np.random.default_rng(5)
    q, k, v = rand(rng, 2, 2, 3, 4), rand(rng, 2, 2, 5, 4), rand(rng, 2, 2, 5, 3)
    R = rand(rng, 2, 2, 3, 5)
    keep = rng.random((2, 1, 3, 5)) > 0.3
    p, (gq, gk, gv) = grads(lambda a, b, c: sdpa(a, b, c, keep, return_scores=True), [q, k, v], R)
    close(p, ref_sdpa(q, k, v, keep=keep)[1])
    assert gv is None or not gv.any()   # v does not enter the probabilities
    xs = [q.astype(np.float64), k.astype(np.float64)]
    for i, g in enumerate((gq, gk)):
        def f(x, i=i):
            args = list(xs) + [v]
            args[i] = x
            return (ref_sdpa(*args, keep=keep)[1] * R).sum()
        close(g, fd_grad(f, xs[i]))


def test_sdpa_dropout_is_seeded_scaled_and_its_gradient_uses_the_same_mask():
    rng = np.random.default_rng(6)
    B, H, Lq, Lk, D = 2, 2, 4, 6, 3
    q, k = rand(rng, B, H, Lq, D), rand(rng, B, H, Lk, D)
    eye = np.broadcast_to(np.eye(Lk, dtype=np.float32), (B, H, Lk, Lk)).copy()

    def run(key, v):
        return _core.op(_core.OP_ATTENTION_DROPOUT, [q, k, v], 11, key, 0.0, 0.5, 0, 0, 0)

    # with v = I the output is the dropped probabilities: their mask is readable
    pd = np.asarray(run(1, eye))
    p = ref_sdpa(q, k, eye)[1]
    assert np.array_equal(pd, np.asarray(run(1, eye)))          # same key, same bits
    assert not np.array_equal(pd, np.asarray(run(2, eye)))      # another stream, another mask
    kept = pd != 0
    assert 0.3 < kept.mean() < 0.7
    close(pd[kept], 2 * p[kept])
    drop = kept * 2.0
    v, R = rand(rng, B, H, Lk, 5), rand(rng, B, H, Lq, 5)
    _, gs = grads(lambda a, b, c: _core.op(_core.OP_ATTENTION_DROPOUT, [a, b, c], 11, 1, 0.0, 0.5,
                                           0, 0, 0), [q, k, v], R)
    xs = [q.astype(np.float64), k.astype(np.float64), v.astype(np.float64)]
    for i in range(3):
        def f(x, i=i):
            args = list(xs)
            args[i] = x
            return (ref_sdpa(*args, drop=drop)[0] * R).sum()
        close(gs[i], fd_grad(f, xs[i]))


def test_sdpa_gives_the_same_bits_at_1_2_and_4_threads():
    rng = np.random.default_rng(7)
    q, k, v = rand(rng, 4, 4, 64, 32), rand(rng, 4, 4, 64, 32), rand(rng, 4, 4, 64, 32)
    R = rand(rng, 4, 4, 64, 32)
    keep = rng.random((4, 1, 1, 64)) > 0.2
    old = maas.get_num_threads() if hasattr(maas, "get_num_threads") else _core.get_num_threads()
    results = []
    try:
        for n in (1, 2, 4):
            _core.set_num_threads(n)
            results.append(grads(lambda a, b, c: sdpa(a, b, c, keep, True), [q, k, v], R))
    finally:
        _core.set_num_threads(old)
    for out, gs in results[1:]:
        np.testing.assert_array_equal(out, results[0][0])
        for g, g0 in zip(gs, results[0][1]):
            np.testing.assert_array_equal(g, g0)


def test_sdpa_errors_say_what_is_wrong():
    q = np.zeros((1, 2, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"attention: query \(1, 2, 3, 4\), key \(1, 2, 3, 5\) and value"):
        sdpa(q, np.zeros((1, 2, 3, 5), np.float32), q)
    with pytest.raises(ValueError, match="must be 4-D"):
        sdpa(q[0], q[0], q[0])
    with pytest.raises(ValueError, match=r"mask shape \(2, 3\) does not broadcast"):
        sdpa(q, q, q, mask=np.ones((2, 3), bool))
    with pytest.raises(TypeError, match="the mask must be float32 .* or bool"):
        _core.op(_core.OP_ATTENTION, [q, q, q, np.ones((3, 3), np.int64)], 0, 0, 0.0, 0.0, 0, 0, 0)
    with pytest.raises(ValueError, match=r"dropout_rate must be in \[0, 1\)"):
        sdpa(q, q, q, dropout_rate=1.0)
    with pytest.raises(ValueError, match="layout must be 'bshd' or 'bhsd'"):
        sdpa(q, q, q, layout="sbhd")
    with pytest.raises(TypeError, match="expected a float32 tensor"):
        sdpa(maas.tensor(q, dtype="int32"), q, q)


# ------------------------------------------------------ MultiHeadAttention

def torch_mha_from(mha, E):
    """nn.MultiheadAttention holding the Keras layer's weights (same dims)."""
    H, kd = mha.num_heads, mha.key_dim
    t = torch.nn.MultiheadAttention(E, H, batch_first=True, bias=True)
    w = [np.asarray(x) for x in mha.weights]
    qk, qb, kk, kb, vk, vb, ok, ob = w
    with torch.no_grad():
        t.in_proj_weight.copy_(torch.tensor(np.concatenate(
            [qk.reshape(E, H * kd).T, kk.reshape(E, H * kd).T, vk.reshape(E, H * kd).T])))
        t.in_proj_bias.copy_(torch.tensor(np.concatenate([qb.ravel(), kb.ravel(), vb.ravel()])))
        t.out_proj.weight.copy_(torch.tensor(ok.reshape(H * kd, E).T))
        t.out_proj.bias.copy_(torch.tensor(ob))
    return t


@pytest.mark.parametrize("case", ["self", "cross-padded", "causal"])
def test_mha_forward_and_gradients_match_torch_multiheadattention(case):
    rng = np.random.default_rng(8)
    B, T, S, E, H = 3, 4, 6 if case == "cross-padded" else 4, 8, 2
    maas.utils.set_random_seed(1)
    mha = L.MultiHeadAttention(num_heads=H, key_dim=E // H, bias_initializer="glorot_uniform")
    xq = rand(rng, B, T, E)
    xv = rand(rng, B, S, E) if case == "cross-padded" else xq
    R = rand(rng, B, T, E)
    lengths = np.array([S, S - 2, 1])
    vmask = np.arange(S)[None] < lengths[:, None]
    kw = {}
    if case == "cross-padded":
        kw["attention_mask"] = np.broadcast_to(vmask[:, None, :], (B, T, S))
    if case == "causal":
        kw["use_causal_mask"] = True
    _ = mha(xq, xv)  # build
    t = torch_mha_from(mha, E)
    tq = torch.tensor(xq, requires_grad=True)
    tv = torch.tensor(xv, requires_grad=True) if case == "cross-padded" else tq
    tk = dict(need_weights=True, average_attn_weights=False)
    if case == "cross-padded":
        tk["key_padding_mask"] = torch.tensor(~vmask)
    if case == "causal":
        tk["attn_mask"] = torch.ones(T, S, dtype=torch.bool).triu(1)
    ref, ref_w = t(tq, tv, tv, **tk)
    (ref * torch.tensor(R)).sum().backward()

    ins = [maas.tensor(xq)] + ([maas.tensor(xv)] if case == "cross-padded" else [])
    with maas.GradientTape() as tape:
        for x in ins:
            tape.watch(x)
        out, scores = mha(ins[0], ins[-1], return_attention_scores=True, **kw)
        loss = maas.ops.sum(out * maas.tensor(R))
    gs = tape.gradient(loss, ins + list(mha.weights))
    close(out, ref.detach())
    close(scores, ref_w.detach())
    close(gs[0], tq.grad)
    if case == "cross-padded":
        close(gs[1], tv.grad)
    # weights: torch's in_proj rows are Keras's kernel columns
    gw = [np.asarray(g) for g in gs[len(ins):]]
    tw = t.in_proj_weight.grad.numpy()
    Hk = H * (E // H)
    close(gw[0].reshape(E, Hk).T, tw[:Hk])
    close(gw[2].reshape(E, Hk).T, tw[Hk:2 * Hk])
    close(gw[4].reshape(E, Hk).T, tw[2 * Hk:])
    tb = t.in_proj_bias.grad.numpy()
    close(gw[1].ravel(), tb[:Hk])
    close(gw[3].ravel(), tb[Hk:2 * Hk])
    close(gw[5].ravel(), tb[2 * Hk:])
    close(gw[6].reshape(Hk, E).T, t.out_proj.weight.grad)
    close(gw[7], t.out_proj.bias.grad)


def np_mha(mha, q, v, keep=None, causal=False):
    w = [np.asarray(x, np.float64) for x in mha.weights]
    qk, qb, kk, kb, vk, vb, ok, ob = w
    Q = np.einsum("btd,dhk->bhtk", q, qk) + qb.transpose(0, 1)[None, :, None, :]
    K = np.einsum("btd,dhk->bhtk", v, kk) + kb[None, :, None, :]
    V = np.einsum("btd,dhk->bhtk", v, vk) + vb[None, :, None, :]
    o, _ = ref_sdpa(Q, K, V, keep=keep, causal=causal)
    return np.einsum("bhtk,hke->bte", o, ok) + ob


@pytest.mark.parametrize("case", ["seq1-batch1", "padded", "causal-output-shape"])
def test_mha_gradients_match_float64_finite_differences(case):
    rng = np.random.default_rng(9)
    B, T = (1, 1) if case == "seq1-batch1" else (2, 3)
    maas.utils.set_random_seed(2)
    mha = L.MultiHeadAttention(num_heads=2, key_dim=3, value_dim=3,
                               output_shape=5 if case.endswith("output-shape") else None,
                               bias_initializer="glorot_uniform")
    x = rand(rng, B, T, 4)
    keep = None
    kw = {}
    if case == "padded":
        keep = np.ones((B, 1, T, T), bool)
        keep[1, ..., -1] = False
        kw["attention_mask"] = keep[:, 0]
    causal = case.startswith("causal")
    if causal:
        kw["use_causal_mask"] = True
    out0 = mha(x, x, **kw)
    R = rand(rng, *out0.shape)
    xt = maas.tensor(x)
    with maas.GradientTape() as tape:
        tape.watch(xt)
        loss = maas.ops.sum(mha(xt, xt, **kw) * maas.tensor(R))
    gs = tape.gradient(loss, [xt] + list(mha.weights))
    x64 = x.astype(np.float64)
    close(out0, np_mha(mha, x64, x64, keep, causal))
    close(gs[0], fd_grad(lambda a: (np_mha(mha, a, a, keep, causal) * R).sum(), x64))
    # one weight through the same reference: the query kernel
    w0 = np.asarray(mha.weights[0], np.float64)

    def f(wq):
        saved = np.asarray(mha.weights[0]).copy()
        mha.weights[0].assign(wq.astype(np.float32))
        try:
            return (np_mha_w(mha, x64, wq, keep, causal) * R).sum()
        finally:
            mha.weights[0].assign(saved)
    close(gs[1], fd_grad(f, w0))


def np_mha_w(mha, x, wq, keep, causal):
    w = [np.asarray(a, np.float64) for a in mha.weights]
    w[0] = wq
    qk, qb, kk, kb, vk, vb, ok, ob = w
    Q = np.einsum("btd,dhk->bhtk", x, qk) + qb[None, :, None, :]
    K = np.einsum("btd,dhk->bhtk", x, kk) + kb[None, :, None, :]
    V = np.einsum("btd,dhk->bhtk", x, vk) + vb[None, :, None, :]
    o, _ = ref_sdpa(Q, K, V, keep=keep, causal=causal)
    return np.einsum("bhtk,hke->bte", o, ok) + ob


def test_mha_arguments_shapes_config_and_errors():
    mha = L.MultiHeadAttention(num_heads=3, key_dim=4, value_dim=2, output_shape=7, name="mha")
    out, scores = mha(np.ones((2, 5, 6), np.float32), np.ones((2, 9, 10), np.float32),
                      key=np.ones((2, 9, 11), np.float32), return_attention_scores=True)
    assert out.shape == (2, 5, 7) and scores.shape == (2, 3, 5, 9)
    assert [tuple(w.shape) for w in mha.weights] == [(6, 3, 4), (3, 4), (11, 3, 4), (3, 4),
                                                     (10, 3, 2), (3, 2), (3, 2, 7), (7,)]
    assert [w.name for w in mha.weights][:2] == ["query/kernel", "query/bias"]
    cfg = mha.get_config()
    assert (cfg["num_heads"], cfg["key_dim"], cfg["value_dim"], cfg["output_shape"]) == (3, 4, 2, 7)
    again = L.MultiHeadAttention.from_config(cfg)
    assert again.num_heads == 3 and again.value_dim == 2
    assert len(L.MultiHeadAttention(2, 3, use_bias=False)(np.ones((1, 2, 4)), np.ones((1, 2, 4))).shape) == 3
    with pytest.raises(ValueError, match="num_heads must be a positive integer, received num_heads=0"):
        L.MultiHeadAttention(0, 4)
    with pytest.raises(ValueError, match=r"dropout must be a float in \[0, 1\)"):
        L.MultiHeadAttention(2, 4, dropout=1.5)
    with pytest.raises(ValueError, match="query must be 3-D"):
        L.MultiHeadAttention(2, 4)(np.ones((2, 3), np.float32), np.ones((2, 3), np.float32))


def test_mha_dropout_only_in_training_and_seeded():
    x = np.random.default_rng(0).standard_normal((2, 6, 8)).astype(np.float32)
    maas.utils.set_random_seed(3)
    mha = L.MultiHeadAttention(2, 4, dropout=0.5, seed=5)
    a = np.asarray(mha(x, x))
    np.testing.assert_array_equal(a, np.asarray(mha(x, x, training=False)))
    t1 = np.asarray(mha(x, x, training=True))
    t2 = np.asarray(mha(x, x, training=True))
    assert not np.allclose(t1, a) and not np.array_equal(t1, t2)


# ------------------------------------------------------------ in a model

class TinyAttentionModel(maas.Model):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.mha = L.MultiHeadAttention(2, 4, dropout=0.1, seed=3)
        self.att = L.Attention(use_scale=True)
        self.add_att = L.AdditiveAttention()
        self.out = L.Dense(2)

    def call(self, x, training=False):
        h = self.mha(x, x, use_causal_mask=True, training=training)
        h = h + self.att([h, x]) + self.add_att([x, h])
        return self.out(maas.ops.mean(h, axis=1))

    def get_config(self):
        return {}


maas.saving.register_keras_serializable("test_attention")(TinyAttentionModel) \
    if hasattr(maas.saving, "register_keras_serializable") else None


def seq_data(n=96, T=6, E=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, T, E)).astype(np.float32)
    y = (x[:, 0, 0] + x[:, -1, 1] > 0).astype(np.float32)
    return x, y


def test_attention_model_plan_gives_eager_bits_and_no_eager_reason():
    x, y = seq_data()
    out = []
    for eager in (False, True):
        maas.utils.set_random_seed(7)
        m = TinyAttentionModel()
        m.compile(optimizer="adam", loss=maas.losses.SparseCategoricalCrossentropy(from_logits=True),
                  run_eagerly=eager)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            h = m.fit(x, y, epochs=2, batch_size=32, verbose=0)
        out.append((m, h.history))
    (mp, hp), (me, he) = out
    assert mp._plan.eager_reason is None
    assert hp == he
    for a, b in zip(mp.get_weights(), me.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(mp.predict(x, verbose=0), me.predict(x, verbose=0))


NEW_PROCESS = """
import sys, numpy as np, maas
sys.path.insert(0, {tests!r})
import test_attention  # registers TinyAttentionModel
m = maas.load_model({path!r})
np.save({out!r}, m.predict(np.load({xpath!r}), verbose=0))
"""


def test_functional_mha_model_saves_and_reloads_in_a_new_process_bit_for_bit(tmp_path):
    x, y = seq_data()
    maas.utils.set_random_seed(4)
    inp = maas.Input((6, 8))
    h = L.MultiHeadAttention(2, 4, value_dim=3, output_shape=8)(inp, inp)
    h = L.Attention()([h, inp])
    h = L.AdditiveAttention(use_scale=True)([h, inp])
    out = L.Dense(2)(L.Flatten()(h))
    m = maas.Model(inp, out)
    m.compile(optimizer="adam", loss=maas.losses.SparseCategoricalCrossentropy(from_logits=True))
    m.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert m._plan.eager_reason is None
    path, xpath, outp = str(tmp_path / "m.maas"), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")
    m.save(path)
    np.save(xpath, x)
    code = NEW_PROCESS.format(tests=os.path.dirname(__file__), path=path, xpath=xpath, out=outp)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                   timeout=300)
    np.testing.assert_array_equal(np.load(outp), m.predict(x, verbose=0))


# ------------------------------------------------ Attention, AdditiveAttention

def np_keras_attention(q, v, k, scores_fn, v_mask=None, q_mask=None, causal=False):
    """Keras 3's dense attention in float64: -1e9 on masked scores."""
    s = scores_fn(q, k)
    T, S = s.shape[-2:]
    sm = np.ones(s.shape, bool)
    if v_mask is not None:
        sm = sm & v_mask[:, None, :]
    if causal:
        sm = sm & np.tril(np.ones((T, S), bool))
    s = s - 1e9 * (1 - sm)
    e = np.exp(s - s.max(-1, keepdims=True))
    w = e / e.sum(-1, keepdims=True)
    out = w @ v
    if q_mask is not None:
        out = out * q_mask[..., None]
    return out, w


@pytest.mark.parametrize("layer", ["dot", "dot-scaled", "concat", "additive"])
@pytest.mark.parametrize("masked", [False, True])
def test_dense_attention_layers_match_keras_formulas_and_finite_differences(layer, masked):
    rng = np.random.default_rng(10)
    B, T, S, D = 2, 3, 4, 5
    q, v, k = rand(rng, B, T, D), rand(rng, B, S, D), rand(rng, B, S, D)
    maas.utils.set_random_seed(0)
    lyr = {"dot": lambda: L.Attention(), "dot-scaled": lambda: L.Attention(use_scale=True),
           "concat": lambda: L.Attention(score_mode="concat", use_scale=True),
           "additive": lambda: L.AdditiveAttention()}[layer]()
    v_mask = q_mask = None
    kw = {}
    if masked:
        v_mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], bool)
        q_mask = np.array([[1, 1, 0], [1, 1, 1]], bool)
        kw["mask"] = [q_mask, v_mask]
    causal = layer == "dot"
    out, w = lyr([q, v, k], return_attention_scores=True, use_causal_mask=causal, **kw)
    if layer == "dot-scaled":
        lyr.scale.assign(np.float32(1.7))
        out, w = lyr([q, v, k], return_attention_scores=True, **kw)
    ws = [np.asarray(x, np.float64) for x in lyr.weights]

    def scores_fn(a, b, ws=ws):
        if layer == "dot":
            return a @ b.transpose(0, 2, 1)
        if layer == "dot-scaled":
            return ws[0] * (a @ b.transpose(0, 2, 1))
        t = a[:, :, None, :] + b[:, None, :, :]
        if layer == "concat":
            return ws[1] * np.tanh(ws[0] * t).sum(-1)
        return (ws[0] * np.tanh(t)).sum(-1)

    q64, v64, k64 = (a.astype(np.float64) for a in (q, v, k))
    ro, rw = np_keras_attention(q64, v64, k64, scores_fn, v_mask, q_mask, causal)
    close(out, ro)
    close(w, rw)
    R = rand(rng, B, T, D)
    ins = [maas.tensor(a) for a in (q, v, k)]
    with maas.GradientTape() as tape:
        for t in ins:
            tape.watch(t)
        loss = maas.ops.sum(lyr(ins, use_causal_mask=causal, **kw) * maas.tensor(R))
    gs = tape.gradient(loss, ins)
    xs = [q64, v64, k64]
    for i in range(3):
        def f(x, i=i):
            args = list(xs)
            args[i] = x
            return (np_keras_attention(args[0], args[1], args[2], scores_fn, v_mask, q_mask,
                                       causal)[0] * R).sum()
        close(gs[i], fd_grad(f, xs[i]))


def test_dense_attention_errors_and_config():
    with pytest.raises(ValueError, match="Expected one of {'dot', 'concat'}"):
        L.Attention(score_mode="general")
    with pytest.raises(ValueError, match=r"must be called on a list of inputs, namely \[query, value\]"):
        L.Attention()(np.ones((1, 2, 3), np.float32))
    cfg = L.AdditiveAttention(use_scale=False, dropout=0.2).get_config()
    assert cfg["use_scale"] is False and cfg["dropout"] == 0.2
    assert L.Attention.from_config(L.Attention(score_mode="concat").get_config()).score_mode == "concat"
