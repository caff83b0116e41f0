"""SimpleRNN, LSTM, GRU, Bidirectional, TimeDistributed and masks: the rnn op
(csrc/ops/rnn.c) against PyTorch 2.13 (Keras's gate order mapped onto
torch's), against a float64 NumPy loop written from Keras's rnn rules
(masks, go_backwards), against central finite differences; the plan path
against the eager path; save and reload in a new process; a small
sequence task learnt."""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import maas
from maas import _core

L = maas.layers
RTOL = 1e-4


def rng(seed=0):
    return np.random.default_rng(seed)


def close(a, b, rtol=RTOL, atol=1e-5):
    """|a - b| <= atol + rtol * max|b| (relative to the tensor's scale)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.abs(b).max(), 1e-6)
    err = np.abs(a - b).max()
    assert err <= atol + rtol * scale, f"max abs error {err:.3g} (scale {scale:.3g})"


def grads_of(layer, x, R, extra=()):
    """Forward and gradients of sum(out * R) w.r.t. x and the layer's weights."""
    xt = maas.tensor(x)
    with maas.GradientTape() as tape:
        tape.watch(xt)
        out = layer(xt)
        loss = maas.ops.sum(out * maas.tensor(R))
    g = tape.gradient(loss, [xt] + list(layer.weights))
    return np.asarray(out), [np.asarray(v) for v in g]


def torch_grads(mod, x, R):
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    out, _ = mod(xt)
    (out * torch.tensor(R, dtype=torch.float64)).sum().backward()
    return out.detach().numpy(), xt.grad.numpy()


def gru_perm(u):
    """Keras's z, r, h gate blocks -> torch's r, z, n."""
    return np.concatenate([np.arange(u, 2 * u), np.arange(0, u), np.arange(2 * u, 3 * u)])


def to_torch(layer, kind):
    """A float64 torch module with the maas layer's weights."""
    k, rk = (np.asarray(w, np.float64) for w in (layer.kernel, layer.recurrent_kernel))
    b = np.asarray(layer.bias, np.float64)
    f, u = k.shape[0], layer.units
    if kind == "lstm":
        mod = torch.nn.LSTM(f, u, batch_first=True).double()
        wih, whh, bih, bhh = k.T, rk.T, b, np.zeros_like(b)
    elif kind == "gru":
        mod = torch.nn.GRU(f, u, batch_first=True).double()
        p = gru_perm(u)
        wih, whh, bih, bhh = k[:, p].T, rk[:, p].T, b[0, p], b[1, p]
    else:
        mod = torch.nn.RNN(f, u, batch_first=True).double()
        wih, whh, bih, bhh = k.T, rk.T, b, np.zeros_like(b)
    with torch.no_grad():
        for name, v in (("weight_ih_l0", wih), ("weight_hh_l0", whh), ("bias_ih_l0", bih),
                        ("bias_hh_l0", bhh)):
            getattr(mod, name).copy_(torch.tensor(np.ascontiguousarray(v)))
    return mod


def torch_weight_grads(mod, kind, u):
    """torch's weight gradients in Keras's layouts (kernel, recurrent_kernel, bias)."""
    gih, ghh = mod.weight_ih_l0.grad.numpy(), mod.weight_hh_l0.grad.numpy()
    bih, bhh = mod.bias_ih_l0.grad.numpy(), mod.bias_hh_l0.grad.numpy()
    if kind == "gru":
        inv = np.argsort(gru_perm(u))
        return [gih.T[:, inv], ghh.T[:, inv], np.stack([bih[inv], bhh[inv]])]
    return [gih.T, ghh.T, bih]   # the bias enters once: its gradient is bias_ih's


MAKE = {"lstm": L.LSTM, "gru": L.GRU, "simple": L.SimpleRNN,
        "gru1": lambda *a, **k: L.GRU(*a, reset_after=False, **k)}


def random_bias(layer, seed):
    layer.bias.assign(rng(seed).normal(0, 0.5, size=layer.bias.shape).astype(np.float32))


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple"])
@pytest.mark.parametrize("shape", [(3, 6, 4, 5), (1, 1, 2, 3)], ids=["b3t6", "b1t1"])
def test_forward_and_gradients_match_torch(kind, shape):
    b, t, f, u = shape
    maas.utils.set_random_seed(1)
    layer = MAKE[kind](u, return_sequences=True)
    x = rng(2).normal(size=(b, t, f)).astype(np.float32)
    layer(x)
    random_bias(layer, 3)
    R = rng(4).normal(size=(b, t, u))
    out, g = grads_of(layer, x, R)
    mod = to_torch(layer, kind)
    ref, gx = torch_grads(mod, x, R)
    close(out, ref)
    close(g[0], gx)
    for mine, theirs in zip(g[1:], torch_weight_grads(mod, kind, u)):
        close(mine, theirs)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_initial_state_and_final_states_match_torch(kind):
    b, t, f, u = 2, 4, 3, 5
    maas.utils.set_random_seed(5)
    layer = MAKE[kind](u, return_state=True)
    x = rng(6).normal(size=(b, t, f)).astype(np.float32)
    h0 = rng(7).normal(size=(b, u)).astype(np.float32)
    c0 = rng(8).normal(size=(b, u)).astype(np.float32)
    states = [h0, c0] if kind == "lstm" else [h0]
    outs = layer(x, initial_state=[maas.tensor(s) for s in states])
    mod = to_torch(layer, kind)
    th = [torch.tensor(s, dtype=torch.float64)[None] for s in states]
    seq, hn = mod(torch.tensor(x, dtype=torch.float64), tuple(th) if kind == "lstm" else th[0])
    close(outs[0], seq[:, -1].detach().numpy())
    if kind == "lstm":
        close(outs[1], hn[0][0].detach().numpy())
        close(outs[2], hn[1][0].detach().numpy())
    else:
        close(outs[1], hn[0].detach().numpy())


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_without_bias_matches_torch(kind):
    maas.utils.set_random_seed(40)
    x = rng(41).normal(size=(2, 4, 3)).astype(np.float32)
    layer = MAKE[kind](3, use_bias=False, return_sequences=True)
    layer(x)
    assert [w.name for w in layer.weights] == ["kernel", "recurrent_kernel"]
    mod = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](3, 3, batch_first=True,
                                                            bias=False).double()
    k, rk = (np.asarray(w, np.float64) for w in layer.get_weights())
    p = gru_perm(3) if kind == "gru" else np.arange(12)
    with torch.no_grad():
        mod.weight_ih_l0.copy_(torch.tensor(np.ascontiguousarray(k[:, p].T)))
        mod.weight_hh_l0.copy_(torch.tensor(np.ascontiguousarray(rk[:, p].T)))
    close(layer(x), mod(torch.tensor(x, dtype=torch.float64))[0].detach().numpy())


def test_training_gives_the_same_bits_at_any_thread_count():
    x, y = parity_data(64, 42)
    weights = []
    prev = maas.get_num_threads()
    try:
        for n in (1, 2, 4):
            maas.set_num_threads(n)
            maas.utils.set_random_seed(43)
            inp = maas.Input((8,), dtype="int32")
            h = L.Embedding(12, 16, mask_zero=True)(inp)
            # rows x gates above the kernels' threading threshold (32768)
            h = L.Bidirectional(L.LSTM(128, return_sequences=True))(h)
            m = maas.Model(inp, L.Dense(1)(L.GRU(192)(h)))
            m.compile(optimizer="adam", loss="mse")
            m.fit(x, y, epochs=1, batch_size=64, verbose=0)
            weights.append(m.get_weights())
    finally:
        maas.set_num_threads(prev)
    for other in weights[1:]:
        for a, b in zip(weights[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_go_backwards_reads_the_steps_in_reverse(kind):
    maas.utils.set_random_seed(9)
    x = rng(10).normal(size=(2, 5, 3)).astype(np.float32)
    fwd = MAKE[kind](4, return_sequences=True)
    fwd(x)
    back = MAKE[kind](4, return_sequences=True, go_backwards=True)
    back(x)
    back.set_weights(fwd.get_weights())
    # Keras: the output sequence comes in processing order (reversed)
    np.testing.assert_array_equal(np.asarray(back(x)), np.asarray(fwd(x[:, ::-1].copy())))


def keras_loop(kind, x, mask, k, rk, b, units, go_backwards=False, zero_output=False):
    """Keras's rnn loop in float64: a masked step keeps the states and
    outputs the previous output (or zeros)."""
    bsz, t, _ = x.shape
    h = np.zeros((bsz, units))
    c = np.zeros((bsz, units))
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    steps = range(t - 1, -1, -1) if go_backwards else range(t)
    outs = []
    for s in steps:
        xt = x[:, s]
        if kind == "lstm":
            z = xt @ k + h @ rk + b
            i, f, g, o = np.split(z, 4, axis=1)
            cn = sig(f) * c + sig(i) * np.tanh(g)
            hn = sig(o) * np.tanh(cn)
        elif kind == "gru1":   # Keras's GRU(reset_after=False): r applied before R_h
            xz = xt @ k + b
            zg = sig(xz[:, :units] + h @ rk[:, :units])
            rg = sig(xz[:, units:2 * units] + h @ rk[:, units:2 * units])
            hh = np.tanh(xz[:, 2 * units:] + (rg * h) @ rk[:, 2 * units:])
            hn, cn = zg * h + (1 - zg) * hh, c
        elif kind == "gru":
            xz = xt @ k + b[0]
            inner = h @ rk + b[1]
            zg = sig(xz[:, :units] + inner[:, :units])
            rg = sig(xz[:, units:2 * units] + inner[:, units:2 * units])
            hh = np.tanh(xz[:, 2 * units:] + rg * inner[:, 2 * units:])
            hn, cn = zg * h + (1 - zg) * hh, c
        else:
            hn, cn = np.tanh(xt @ k + h @ rk + b), c
        m = mask[:, s:s + 1] > 0
        out = np.where(m, hn, 0.0 if zero_output else h)
        h, c = np.where(m, hn, h), np.where(m, cn, c)
        outs.append(out)
    return np.stack(outs, 1), h, c


@pytest.mark.parametrize("kind", ["lstm", "gru", "gru1", "simple"])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_masked_steps_follow_keras_rules(kind, go_backwards):
    maas.utils.set_random_seed(11)
    x = rng(12).normal(size=(3, 6, 4)).astype(np.float32)
    mask = np.ones((3, 6), np.float32)
    mask[0, 4:] = 0          # right padding
    mask[1, :2] = 0          # left padding
    mask[2, 3] = 0           # a hole
    layer = MAKE[kind](5, return_sequences=True, return_state=True, go_backwards=go_backwards)
    outs = layer(x, mask=maas.tensor(mask))
    if kind == "gru1":
        random_bias(layer, 13)
        outs = layer(x, mask=maas.tensor(mask))
    w = [np.asarray(v, np.float64) for v in layer.get_weights()]
    seq, h, c = keras_loop(kind, x.astype(np.float64), mask, *w, 5, go_backwards)
    close(outs[0], seq)
    close(outs[1], h)
    if kind == "lstm":
        close(outs[2], c)


def test_right_padded_lstm_matches_torch_packed_sequences():
    maas.utils.set_random_seed(13)
    lengths = [5, 3, 1]
    x = rng(14).normal(size=(3, 5, 4)).astype(np.float32)
    mask = (np.arange(5)[None] < np.array(lengths)[:, None]).astype(np.float32)
    x = x * mask[..., None]
    layer = L.LSTM(6, return_state=True)
    last, h, c = layer(x, mask=maas.tensor(mask))
    mod = to_torch(layer, "lstm")
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.tensor(x, dtype=torch.float64),
                                                     lengths, batch_first=True)
    _, (hn, cn) = mod(packed)
    close(last, hn[0].detach().numpy())
    close(h, hn[0].detach().numpy())
    close(c, cn[0].detach().numpy())


OPTIONAL = ("mask", "h0", "c0", "rdrop")


def run_op(kind, arrays, kw, go_backwards=False):
    """The raw rnn op on [x, kernel, recurrent_kernel, bias, *optional inputs]."""
    cell = {"simple": 0, "lstm": 1, "gru": 2, "gru1": 2}[kind]
    return _core.op(_core.OP_RNN, arrays, cell, 1, 2, 1, int(go_backwards), 0, 1,
                    *(int(k in kw) for k in OPTIONAL), 0, int(kind == "gru1"))


@pytest.mark.parametrize("kind", ["lstm", "gru", "gru1", "simple"])
@pytest.mark.parametrize("case", ["t1b1", "mask_ones", "padded_rows", "states_rdrop_backwards"])
def test_gradients_match_central_differences(kind, case):
    """Gradients of sum(out * R) w.r.t. x, the weights and the initial
    states, against central differences of the op (loss summed in float64).
    gru1 is GRU(reset_after=False), which torch's nn.GRU (reset_after=True
    only) cannot check: its references are these differences and the float64
    loop of Keras's formula (keras_loop)."""
    r = rng(15)
    b, t, f, u = (1, 1, 2, 3) if case == "t1b1" else (3, 4, 2, 3)
    g = {"lstm": 4, "gru": 3, "gru1": 3, "simple": 1}[kind]
    arrays = [r.normal(size=(b, t, f)), r.normal(0, 0.6, size=(f, g * u)),
              r.normal(0, 0.6, size=(u, g * u)),
              r.normal(0, 0.3, size=(2, g * u) if kind == "gru" else (g * u,))]
    kw = {}
    if case == "mask_ones":
        kw["mask"] = np.ones((b, t))
    if case == "padded_rows":
        m = np.ones((b, t))
        m[0, 2:] = 0
        m[2, :] = 0   # a row of padding only
        kw["mask"] = m
    back = case == "states_rdrop_backwards"
    if back:
        kw["h0"] = r.normal(size=(b, u))
        if kind == "lstm":
            kw["c0"] = r.normal(size=(b, u))
        kw["rdrop"] = (r.random((b, u)) > 0.3) / 0.7
    arrays += [kw[k] for k in OPTIONAL if k in kw]
    arrays = [np.asarray(a, np.float32) for a in arrays]
    names = [k for k in OPTIONAL if k in kw]
    diff = [0, 1, 2, 3] + [4 + i for i, k in enumerate(names) if k in ("h0", "c0")]
    R = r.normal(size=(b, t, u))

    def loss_of(arrs):
        out = run_op(kind, [maas.tensor(a) for a in arrs], kw, back)
        return float((np.asarray(out[0], np.float64) * R).sum())

    ins = [maas.tensor(a) for a in arrays]
    with maas.GradientTape() as tape:
        for i in diff:
            tape.watch(ins[i])
        out = run_op(kind, ins, kw, back)
        loss = maas.ops.sum(out[0] * maas.tensor(R.astype(np.float32)))
    grads = tape.gradient(loss, [ins[i] for i in diff])
    eps = 1e-2
    for gi, i in zip(grads, diff):
        num = np.zeros(arrays[i].shape)
        for j in range(arrays[i].size):
            vals = []
            for sgn in (1, -1):
                pert = [a.copy() for a in arrays]
                pert[i].flat[j] += sgn * eps
                vals.append(loss_of(pert))
            num.flat[j] = (vals[0] - vals[1]) / (2 * eps)
        close(np.asarray(gi), num, rtol=2e-3, atol=2e-3)


def test_bidirectional_lstm_matches_torch():
    maas.utils.set_random_seed(16)
    x = rng(17).normal(size=(2, 5, 3)).astype(np.float32)
    layer = L.Bidirectional(L.LSTM(4, return_sequences=True))
    R = rng(18).normal(size=(2, 5, 8))
    out, g = grads_of(layer, x, R)
    mod = torch.nn.LSTM(3, 4, batch_first=True, bidirectional=True).double()
    fw, bw = layer.forward_layer, layer.backward_layer
    with torch.no_grad():
        for suffix, lay in (("", fw), ("_reverse", bw)):
            getattr(mod, "weight_ih_l0" + suffix).copy_(torch.tensor(np.asarray(lay.kernel, np.float64).T))
            getattr(mod, "weight_hh_l0" + suffix).copy_(
                torch.tensor(np.asarray(lay.recurrent_kernel, np.float64).T))
            getattr(mod, "bias_ih_l0" + suffix).copy_(torch.tensor(np.asarray(lay.bias, np.float64)))
            getattr(mod, "bias_hh_l0" + suffix).zero_()
    ref, gx = torch_grads(mod, x, R)
    close(out, ref)
    close(g[0], gx)
    assert [w.name for w in layer.weights] == ["kernel", "recurrent_kernel", "bias"] * 2


def test_bidirectional_zeroes_masked_outputs_and_concats():
    maas.utils.set_random_seed(19)
    x = rng(20).normal(size=(2, 4, 3)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], np.float32)
    layer = L.Bidirectional(L.GRU(2, return_sequences=True))
    out = np.asarray(layer(x, mask=maas.tensor(mask)))
    assert out.shape == (2, 4, 4)
    np.testing.assert_array_equal(out[0, 3], 0.0)
    fw = [np.asarray(v, np.float64) for v in layer.forward_layer.get_weights()]
    bw = [np.asarray(v, np.float64) for v in layer.backward_layer.get_weights()]
    f_seq = keras_loop("gru", x.astype(np.float64), mask, *fw, 2, zero_output=True)[0]
    b_seq = keras_loop("gru", x.astype(np.float64), mask, *bw, 2, go_backwards=True,
                       zero_output=True)[0][:, ::-1]
    close(out, np.concatenate([f_seq, b_seq], -1))


def test_time_distributed_is_the_layer_on_every_step():
    maas.utils.set_random_seed(21)
    x = rng(22).normal(size=(3, 4, 5)).astype(np.float32)
    dense = L.Dense(2)
    td = L.TimeDistributed(dense)
    out = np.asarray(td(x))
    ref = np.asarray(dense(x.reshape(12, 5))).reshape(3, 4, 2)
    np.testing.assert_array_equal(out, ref)


def test_masks_flow_from_embedding_and_masking_into_the_lstm():
    maas.utils.set_random_seed(23)
    ids = np.array([[3, 1, 2, 0, 0], [4, 4, 1, 2, 3]])
    emb = L.Embedding(6, 3, mask_zero=True)
    lstm = L.LSTM(4)
    inp = maas.Input((5,), dtype="int32")
    model = maas.Model(inp, lstm(emb(inp)))
    full = np.asarray(model(ids))
    trunc = np.asarray(lstm(emb(ids[:1, :3])))
    close(full[:1], trunc, rtol=1e-6)
    # Masking on float features: the same cut
    feats = np.asarray(emb(ids)) * (ids != 0)[..., None]
    seqm = maas.Sequential([maas.Input((5, 3)), L.Masking(), L.LSTM(4)])
    seqm.layers[1].set_weights(lstm.get_weights())
    close(np.asarray(seqm(feats))[:1], trunc, rtol=1e-6)
    # Dense passes the mask on (Keras 3); see test_masks_pass_through_the_layers_keras_3_passes
    dense_cut = np.asarray(lstm(L.Dense(3, kernel_initializer="identity"
                                        if False else "ones")(emb(ids))))
    assert dense_cut.shape == (2, 4)


def test_dropout_is_seeded_and_only_in_training():
    x = rng(24).normal(size=(4, 5, 3)).astype(np.float32)

    def run(training):
        maas.utils.set_random_seed(25)
        layer = L.LSTM(6, dropout=0.3, recurrent_dropout=0.4, seed=7)
        return [np.asarray(layer(x, training=training)) for _ in range(2)]

    a, b = run(True), run(True)
    np.testing.assert_array_equal(a[0], b[0])      # same seed, same masks
    assert np.abs(a[0] - a[1]).max() > 0           # a new mask each call
    c = run(False)
    np.testing.assert_array_equal(c[0], c[1])      # inference: no dropout
    assert np.abs(a[0] - c[0]).max() > 0


def test_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match="positive integer"):
        L.LSTM(0)
    with pytest.raises(ValueError, match="dropout must be a float in"):
        L.GRU(3, dropout=1.5)
    with pytest.raises(ValueError, match="expected ndim=3, found ndim=2"):
        L.LSTM(3)(np.ones((2, 4), np.float32))
    layer = L.LSTM(3)
    layer(np.ones((2, 4, 5), np.float32))
    with pytest.raises(ValueError, match=r"expected shape=\(None, None, 5\), found shape=\(2, 4, 6\)"):
        layer(np.ones((2, 4, 6), np.float32))
    with pytest.raises(ValueError, match="expects 2 initial state"):
        layer(np.ones((2, 4, 5), np.float32), initial_state=[np.zeros((2, 3), np.float32)])
    with pytest.raises(ValueError, match=r"the initial state h must have shape \(2, 3\)"):
        layer(np.ones((2, 4, 5), np.float32),
              initial_state=[np.zeros((2, 4), np.float32), np.zeros((2, 3), np.float32)])
    with pytest.raises(ValueError, match=r"the mask must have shape \(2, 4\)"):
        layer(np.ones((2, 4, 5), np.float32), mask=maas.tensor(np.ones((2, 3), np.float32)))
    with pytest.raises(ValueError, match="at least one timestep"):
        layer(np.ones((2, 0, 5), np.float32))
    with pytest.raises(NotImplementedError, match="activation='softmax'"):
        L.SimpleRNN(3, activation="softmax")
    with pytest.raises(NotImplementedError, match="activation='softmax'"):
        L.LSTM(3, recurrent_activation="softmax")
    assert L.LSTM(2, recurrent_activation="hard_sigmoid").get_config()["recurrent_activation"] \
        == "hard_sigmoid"
    with pytest.raises(ValueError, match="Invalid merge mode"):
        L.Bidirectional(L.LSTM(2), merge_mode="max")


def text_model(kind):
    inp = maas.Input((8,), dtype="int32")
    h = L.Embedding(12, 8, mask_zero=True)(inp)
    if kind == "lstm":
        h = L.LSTM(16, dropout=0.1, recurrent_dropout=0.1, seed=3)(h)
    else:
        h = L.Bidirectional(L.GRU(8))(h)
    return maas.Model(inp, L.Dense(1, activation="sigmoid")(h))


def parity_data(n, seed):
    """Tokens 1..11 left-padded with 0; label: is the count of token 1 odd."""
    r = rng(seed)
    lengths = r.integers(3, 9, n)
    ids = np.zeros((n, 8), np.int32)
    for i, k in enumerate(lengths):
        ids[i, 8 - k:] = r.integers(1, 12, k)
    return ids, ((ids == 1).sum(1) % 2).astype(np.float32)


@pytest.mark.parametrize("kind", ["lstm", "bigru"])
def test_plan_gives_the_eager_bits(kind):
    x, y = parity_data(96, 26)
    res = []
    for eager in (False, True):
        maas.utils.set_random_seed(27)
        m = text_model(kind)
        m.compile(optimizer=maas.optimizers.Adam(1e-2), loss="binary_crossentropy",
                  run_eagerly=eager)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            h = m.fit(x, y, epochs=2, batch_size=32, verbose=0)
        res.append((m, h.history))
    (mp, hp), (me, he) = res
    assert mp.eager_reason is None and mp._plan.eager_reason is None
    assert hp == he
    for a, b in zip(mp.get_weights(), me.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(mp.predict(x, verbose=0), me.predict(x, verbose=0))


RELOAD = """
import numpy as np, maas
m = maas.load_model({path!r})
np.save({out!r}, m.predict(np.load({xpath!r}), verbose=0))
"""


def test_save_and_reload_in_a_new_process_predicts_the_same_bits(tmp_path):
    x, y = parity_data(64, 28)
    maas.utils.set_random_seed(29)
    inp = maas.Input((8,), dtype="int32")
    h = L.Embedding(12, 6, mask_zero=True)(inp)
    h = L.Bidirectional(L.LSTM(5, return_sequences=True))(h)
    h = L.TimeDistributed(L.Dense(3))(h)
    h1 = L.GRU(4, go_backwards=True)(h)
    h2 = L.SimpleRNN(3)(L.Masking()(L.Embedding(12, 2)(inp)))
    m = maas.Model(inp, L.Dense(1, activation="sigmoid")(L.Concatenate()([h1, h2])))
    m.compile(optimizer="adam", loss="binary_crossentropy")
    m.fit(x, y, epochs=1, batch_size=32, verbose=0)
    path, xpath, out = str(tmp_path / "m.maas"), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")
    m.save(path)
    np.save(xpath, x)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(maas.__file__)))
    subprocess.run([sys.executable, "-c", RELOAD.format(path=path, out=out, xpath=xpath)],
                   check=True, capture_output=True, text=True, env=env, timeout=300)
    np.testing.assert_array_equal(np.load(out), m.predict(x, verbose=0))


@pytest.mark.slow
def test_embedding_lstm_and_bidirectional_gru_learn_parity_of_a_token():
    x, y = parity_data(1200, 30)
    xv, yv = parity_data(300, 31)
    for kind in ("lstm", "bigru"):
        maas.utils.set_random_seed(32)
        m = text_model(kind)
        m.compile(optimizer=maas.optimizers.Adam(1e-2), loss="binary_crossentropy",
                  metrics=["accuracy"])
        m.fit(x, y, epochs=40, batch_size=64, verbose=0)
        acc = m.evaluate(xv, yv, verbose=0, return_dict=True)["accuracy"]
        assert acc >= 0.95, (kind, acc)


# ---------------------------------------------------------------- GRU(reset_after=False)
# torch's nn.GRU has the reset_after=True form only, so the v1 GRU is checked
# against a float64 NumPy loop of Keras's formula and against central
# differences (test_gradients_match_central_differences, kind "gru1").

def keras_gru1_with_grads(x, k, rk, b, h0, R):
    """Keras's reset_after=False GRU in float64, its outputs and the
    gradients of sum(seq * R) by reverse-mode written out by hand."""
    u = rk.shape[0]
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    h, cache, seq = h0, [], []
    for s in range(x.shape[1]):
        xz = x[:, s] @ k + b
        z = sig(xz[:, :u] + h @ rk[:, :u])
        r = sig(xz[:, u:2 * u] + h @ rk[:, u:2 * u])
        hh = np.tanh(xz[:, 2 * u:] + (r * h) @ rk[:, 2 * u:])
        cache.append((h, z, r, hh))
        h = z * h + (1 - z) * hh
        seq.append(h)
    gx, gk, grk, gb = np.zeros_like(x), np.zeros_like(k), np.zeros_like(rk), np.zeros_like(b)
    dh = np.zeros_like(h0)
    for s in range(x.shape[1] - 1, -1, -1):
        hp, z, r, hh = cache[s]
        dh = dh + R[:, s]
        dz = dh * (hp - hh) * z * (1 - z)
        dhh = dh * (1 - z) * (1 - hh ** 2)
        drh = dhh @ rk[:, 2 * u:].T
        dr = drh * hp * r * (1 - r)
        dpre = np.concatenate([dz, dr, dhh], 1)
        gx[:, s] = dpre @ k.T
        gk += x[:, s].T @ dpre
        gb += dpre.sum(0)
        grk[:, :2 * u] += hp.T @ dpre[:, :2 * u]
        grk[:, 2 * u:] += (r * hp).T @ dhh
        dh = dh * z + dpre[:, :2 * u] @ rk[:, :2 * u].T + drh * r
    return np.stack(seq, 1), [gx, gk, grk, gb], dh


def test_gru_reset_after_false_matches_keras_formula_forward_and_backward():
    maas.utils.set_random_seed(60)
    b, t, f, u = 3, 5, 4, 6
    layer = L.GRU(u, reset_after=False, return_sequences=True)
    x = rng(61).normal(size=(b, t, f)).astype(np.float32)
    h0 = rng(62).normal(size=(b, u)).astype(np.float32)
    layer(x)
    assert layer.bias.shape == (3 * u,)          # Keras's v1 GRU: one input bias
    random_bias(layer, 63)
    R = rng(64).normal(size=(b, t, u))
    xt, h0t = maas.tensor(x), maas.tensor(h0)
    with maas.GradientTape() as tape:
        tape.watch(xt)
        tape.watch(h0t)
        out = layer(xt, initial_state=[h0t])
        loss = maas.ops.sum(out * maas.tensor(R.astype(np.float32)))
    g = tape.gradient(loss, [xt, layer.kernel, layer.recurrent_kernel, layer.bias, h0t])
    w = [np.asarray(v, np.float64) for v in (layer.kernel, layer.recurrent_kernel, layer.bias)]
    seq, gref, dh0 = keras_gru1_with_grads(x.astype(np.float64), *w, h0.astype(np.float64), R)
    close(out, seq)
    for mine, ref in zip(g, gref + [dh0]):
        close(mine, ref)
    # and it is not the reset_after=True arithmetic under another name
    other = L.GRU(u, return_sequences=True)
    other(x)
    other.set_weights([w[0], w[1], np.stack([w[2], np.zeros_like(w[2])])])
    assert np.abs(np.asarray(other(x, initial_state=[h0t])) - np.asarray(out)).max() > 1e-3


def test_gru_reset_after_false_trains_in_a_plan_saves_and_reloads(tmp_path):
    maas.utils.set_random_seed(65)
    x = rng(66).normal(size=(16, 6, 3)).astype(np.float32)
    y = rng(67).normal(size=(16, 1)).astype(np.float32)

    def make():
        maas.utils.set_random_seed(65)
        m = maas.Sequential([maas.Input((6, 3)), L.GRU(5, reset_after=False), L.Dense(1)])
        m.compile(optimizer="adam", loss="mse")
        return m
    plan, eager = make(), make()
    eager.run_eagerly = True
    for m in (plan, eager):
        m.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(plan.get_weights(), eager.get_weights()):
        np.testing.assert_array_equal(a, b)
    path = tmp_path / "gru1.maas"
    plan.save(path)
    back = maas.models.load_model(path)
    assert back.layers[0].reset_after is False
    np.testing.assert_array_equal(back.predict(x, verbose=0), plan.predict(x, verbose=0))


# ---------------------------------------------------------------- stateful=True (Keras 3)

@pytest.mark.parametrize("kind", ["lstm", "gru", "gru1", "simple"])
def test_stateful_layer_over_two_halves_equals_the_whole_sequence(kind):
    maas.utils.set_random_seed(70)
    x = rng(71).normal(size=(4, 10, 3)).astype(np.float32)
    mask = np.ones((4, 10), np.float32)
    mask[1, 3:5] = 0   # a hole in the first half: its states carry over too
    st = MAKE[kind](5, stateful=True, return_sequences=True)
    first = np.asarray(st(x[:, :6], mask=maas.tensor(mask[:, :6])))
    second = np.asarray(st(x[:, 6:], mask=maas.tensor(mask[:, 6:])))
    whole = MAKE[kind](5, return_sequences=True, return_state=True)
    whole(x)
    whole.set_weights(st.get_weights())
    ref = whole(x, mask=maas.tensor(mask))
    close(np.concatenate([first, second], 1), ref[0], rtol=0, atol=1e-6)
    for v, r in zip(st.states, ref[1:]):
        close(v, r, rtol=0, atol=1e-6)
    assert len(st.weights) == len(whole.weights)   # the states are not weights (Keras)
    st.reset_state()
    assert all(not np.asarray(v).any() for v in st.states)
    np.testing.assert_array_equal(np.asarray(st(x[:, :6], mask=maas.tensor(mask[:, :6]))), first)
    st.reset_states()   # Keras's alias
    assert all(not np.asarray(v).any() for v in st.states)


def test_stateful_model_in_a_plan_carries_states_across_batches_and_calls():
    """fit(shuffle=False) and predict over consecutive chunks: the compiled
    plan and the eager path give the same bits, and predicting the halves of
    a sequence one call after the other equals a non-stateful model on the
    whole sequence."""
    x = rng(72).normal(size=(8, 12, 3)).astype(np.float32)
    y = rng(73).normal(size=(8, 1)).astype(np.float32)

    def make(stateful=True, t=6):
        maas.utils.set_random_seed(74)
        inp = maas.Input((t, 3), batch_size=4 if stateful else None)
        h = L.LSTM(6, stateful=stateful, return_sequences=True)(inp)
        out = L.Dense(1)(L.GRU(4, stateful=stateful)(h))
        m = maas.Model(inp, out)
        m.compile(optimizer="adam", loss="mse")
        return m
    plan, eager = make(), make()
    eager.run_eagerly = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no fallback to the eager path
        for m in (plan, eager):
            for half in (x[:, :6], x[:, 6:]):
                m.fit(half, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    assert plan._plan.traced_shapes() == 1
    for a, b in zip(plan.get_weights(), eager.get_weights()):
        np.testing.assert_array_equal(a, b)
    for la, lb in zip(plan.layers[1:3], eager.layers[1:3]):
        for a, b in zip(la.states, lb.states):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
            assert np.abs(np.asarray(a)).max() > 0
    # prediction: the halves in two calls vs the whole, batch by batch
    whole = make(stateful=False, t=12)
    whole.set_weights(plan.get_weights())
    want = whole.predict(x, verbose=0)
    for m in (plan, eager):
        for layer in m.layers:
            if getattr(layer, "stateful", False):
                layer.reset_state()
        got = []
        for rows in (slice(0, 4), slice(4, 8)):
            m.predict(x[rows, :6], batch_size=4, verbose=0)
            got.append(m.predict(x[rows, 6:], batch_size=4, verbose=0))
            for layer in m.layers:
                if getattr(layer, "stateful", False):
                    layer.reset_state()
        close(np.concatenate(got), want, rtol=0, atol=1e-5)


def test_stateful_needs_a_fixed_batch_size_and_says_so():
    with pytest.raises(ValueError, match="batch size must be static"):
        maas.Sequential([maas.Input((5, 3)), L.LSTM(4, stateful=True)])
    layer = L.GRU(4, stateful=True)
    layer(np.zeros((2, 5, 3), np.float32))
    with pytest.raises(ValueError, match="stateful with batch size 2 and received a batch of 3"):
        layer(np.zeros((3, 5, 3), np.float32))
    m = maas.Sequential([maas.Input((5, 3), batch_size=4), L.SimpleRNN(4, stateful=True), L.Dense(1)])
    m.compile("sgd", "mse")
    with pytest.raises(ValueError, match="batch size 4 and received a batch of 2"):
        m.fit(np.zeros((6, 5, 3), np.float32), np.zeros((6, 1), np.float32), batch_size=4,
              shuffle=False, verbose=0)   # 6 samples: a last batch of 2, as Keras refuses


def test_stateful_bidirectional_resets_both_directions():
    maas.utils.set_random_seed(75)
    x = rng(76).normal(size=(2, 4, 3)).astype(np.float32)
    bi = L.Bidirectional(L.LSTM(3, stateful=True))
    a = np.asarray(bi(x))
    b = np.asarray(bi(x))
    assert np.abs(a - b).max() > 1e-4      # the second call starts from the first's states
    bi.reset_state()
    np.testing.assert_array_equal(np.asarray(bi(x)), a)
    with pytest.raises(AttributeError, match="must be stateful"):
        L.Bidirectional(L.LSTM(3)).reset_state()


# ---------------------------------------------------------------- masks through other layers

def _padded_ids():
    """Token ids with right padding, left padding and none (0 is padding)."""
    ids = np.array([[3, 1, 2, 5, 0, 0, 0],
                    [0, 0, 4, 4, 1, 2, 3],
                    [2, 6, 1, 3, 5, 4, 2],
                    [7, 0, 0, 0, 0, 0, 0]], np.int32)
    return ids, [row[row != 0][None] for row in ids]


def _masked_stack():
    return [L.Embedding(8, 4, mask_zero=True), L.Dense(6, activation="relu"), L.Dropout(0.3),
            L.Activation("tanh"), L.LayerNormalization(), L.Rescaling(0.5), L.LSTM(5)]


def test_masks_pass_through_the_layers_keras_3_passes():
    """Embedding(mask_zero=True) -> Dense -> Dropout -> Activation ->
    LayerNormalization -> Rescaling -> LSTM honours the padding: each row
    equals the same model on that row with its padding removed, in a
    Sequential, a functional model and the compiled predict plan."""
    ids, rows = _padded_ids()
    maas.utils.set_random_seed(80)
    seq = maas.Sequential([maas.Input((None,), dtype="int32")] + _masked_stack())
    inp = maas.Input((None,), dtype="int32")
    h = inp
    for layer in seq.layers:   # the same layers (weights) in a functional model
        h = layer(h)
    fun = maas.Model(inp, h)
    want = np.concatenate([np.asarray(seq(r)) for r in rows])
    close(np.asarray(seq(ids)), want, rtol=1e-6)
    close(np.asarray(fun(ids)), want, rtol=1e-6)
    seq.compile(optimizer=maas.optimizers.SGD(learning_rate=0.0), loss="mse")
    seq.fit(ids, want, batch_size=4, verbose=0)   # builds the plans; the weights stay
    close(seq.predict(ids, verbose=0), want, rtol=1e-6)
    assert seq._plan is not None and seq._plan.predict_eager_reason is None
    # the masks ride on the tensors: Dense keeps it, Flatten ends it (Keras 3)
    emb_out = seq.layers[0](ids)
    assert L.base.get_keras_mask(seq.layers[1](emb_out)) is not None
    assert L.base.get_keras_mask(L.Flatten()(emb_out)) is None


def test_masked_training_step_in_a_plan_equals_eager_and_ignores_padding():
    """A training step on padded rows: the plan gives the eager bits, and
    the padding changes nothing (the same step on rows padded with other
    tokens where the mask is 0 gives the same weights)."""
    ids, _ = _padded_ids()
    y = rng(81).normal(size=(4, 5)).astype(np.float32)

    def make():
        maas.utils.set_random_seed(82)
        m = maas.Sequential([maas.Input((7,), dtype="int32")] + _masked_stack())
        m.compile(optimizer="sgd", loss="mse")
        return m
    plan, eager, other = make(), make(), make()
    eager.run_eagerly = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        maas.utils.set_random_seed(85)   # the same dropout masks in each fit
        plan.fit(ids, y, batch_size=4, epochs=2, verbose=0)
    maas.utils.set_random_seed(85)
    eager.fit(ids, y, batch_size=4, epochs=2, verbose=0)
    for a, b in zip(plan.get_weights(), eager.get_weights()):
        np.testing.assert_array_equal(a, b)
    # the Dense and LSTM see the padded steps' values only through masked
    # positions: a different embedding row for id 0 changes nothing
    w0 = other.layers[0].embeddings
    table = np.array(w0)
    table[0] += 1.0
    w0.assign(table)
    maas.utils.set_random_seed(85)
    other.fit(ids, y, batch_size=4, epochs=2, verbose=0)
    for a, b in zip(plan.get_weights()[1:], other.get_weights()[1:]):
        close(a, b, rtol=0, atol=1e-6)


def test_merge_layers_combine_masks_as_keras_3():
    maas.utils.set_random_seed(83)
    ids, rows = _padded_ids()
    inp = maas.Input((None,), dtype="int32")
    e = L.Embedding(8, 4, mask_zero=True)(inp)
    a, b = L.Dense(4)(e), L.Dense(4)(e)
    lstm = L.LSTM(3)
    out = lstm(L.Concatenate()([L.Add()([a, b]), b]))
    m = maas.Model(inp, out)
    want = np.concatenate([np.asarray(m(r)) for r in rows])
    close(np.asarray(m(ids)), want, rtol=1e-6)
    # along the steps the masks are joined
    x = maas.tensor(rng(84).normal(size=(2, 3, 4)).astype(np.float32))
    m1 = maas.tensor(np.array([[1, 1, 0], [1, 0, 0]], np.float32))
    cat = L.Concatenate(axis=1)
    np.testing.assert_array_equal(np.asarray(cat.compute_mask([x, x], [m1, None])),
                                  [[1, 1, 0, 1, 1, 1], [1, 0, 0, 1, 1, 1]])
