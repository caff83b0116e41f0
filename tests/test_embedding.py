"""Embedding (the embedding op), masks from mask_zero and Masking, and
pad_sequences: against NumPy, PyTorch 2.13's nn.Embedding and central
differences; errors; the plan path against the eager path."""
import warnings

import numpy as np
import pytest
import torch

import maas
from maas import _core
from maas.layers.base import get_keras_mask

L = maas.layers


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32])
@pytest.mark.parametrize("shape", [(), (5,), (2, 3), (2, 1, 4)])
def test_forward_gathers_rows_for_any_index_rank_and_dtype(dtype, shape):
    maas.utils.set_random_seed(0)
    layer = L.Embedding(7, 3)
    ids = np.random.default_rng(1).integers(0, 7, size=shape).astype(dtype)
    out = np.asarray(layer(maas.tensor(ids) if dtype != np.float32 else ids))
    table = np.asarray(layer.embeddings)
    np.testing.assert_array_equal(out, table[ids.astype(np.int64)])
    assert out.shape == shape + (3,)


def test_forward_and_gradient_match_torch_with_repeated_rows():
    maas.utils.set_random_seed(2)
    layer = L.Embedding(10, 4)
    ids = np.array([[1, 3, 3, 9], [0, 1, 1, 1]], np.int64)
    R = np.random.default_rng(3).normal(size=(2, 4, 4)).astype(np.float32)
    with maas.GradientTape() as tape:
        out = layer(maas.tensor(ids))
        loss = maas.ops.sum(out * maas.tensor(R))
    (g,) = tape.gradient(loss, [layer.embeddings])
    emb = torch.nn.Embedding(10, 4)
    with torch.no_grad():
        emb.weight.copy_(torch.tensor(np.asarray(layer.embeddings)))
    ref = emb(torch.tensor(ids))
    (ref * torch.tensor(R)).sum().backward()
    np.testing.assert_allclose(np.asarray(out), ref.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(g), emb.weight.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_gradient_matches_central_differences():
    r = np.random.default_rng(4)
    table = r.normal(size=(5, 3)).astype(np.float32)
    ids = np.array([[4, 0, 4]], np.int32)
    R = r.normal(size=(1, 3, 3))

    def loss_of(t):
        return float((np.asarray(_core.op(_core.OP_EMBEDDING, [maas.tensor(t), maas.tensor(ids)], 0),
                                 np.float64) * R).sum())

    w = maas.tensor(table)
    with maas.GradientTape() as tape:
        tape.watch(w)
        loss = maas.ops.sum(_core.op(_core.OP_EMBEDDING, [w, maas.tensor(ids)], 0)
                            * maas.tensor(R.astype(np.float32)))
    (g,) = tape.gradient(loss, [w])
    eps, num = 1e-2, np.zeros(table.shape)
    for j in range(table.size):
        p, m = table.copy(), table.copy()
        p.flat[j] += eps
        m.flat[j] -= eps
        num.flat[j] = (loss_of(p) - loss_of(m)) / (2 * eps)
    np.testing.assert_allclose(np.asarray(g), num, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("bad", [10, -1, 2**40])
def test_out_of_range_indices_raise_naming_the_index_and_input_dim(bad):
    layer = L.Embedding(10, 2)
    ids = np.array([[1, bad]], np.int64)
    with pytest.raises(ValueError, match=rf"index {bad} \(at flat position 1\) is out of range "
                                         r"for input_dim=10"):
        layer(maas.tensor(ids))


def test_other_errors():
    with pytest.raises(ValueError, match="input_dim must be a positive integer"):
        L.Embedding(0, 3)
    with pytest.raises(ValueError, match="output_dim must be a positive integer"):
        L.Embedding(3, -1)
    layer = L.Embedding(4, 2)
    with pytest.raises(ValueError, match="not a valid index for input_dim=4"):
        layer(np.array([[np.nan]], np.float32))
    with pytest.raises(TypeError, match="indices must be int32, int64 or float32"):
        layer(maas.tensor(np.array([1], np.uint8)))


def test_mask_zero_and_masking_compute_keras_masks():
    layer = L.Embedding(5, 2, mask_zero=True)
    ids = np.array([[1, 2, 0, 0], [0, 3, 4, 0]])
    out = layer(ids)
    np.testing.assert_array_equal(np.asarray(get_keras_mask(out)), (ids != 0).astype(np.float32))
    np.testing.assert_array_equal(np.asarray(layer.compute_mask(maas.tensor(ids))),
                                  (ids != 0).astype(np.float32))
    assert get_keras_mask(L.Embedding(5, 2)(ids)) is None
    x = np.array([[[1.0, 0.0], [0.0, 0.0], [2.0, 2.0]]], np.float32)
    m = L.Masking(mask_value=0.0)
    y = m(x)
    np.testing.assert_array_equal(np.asarray(get_keras_mask(y)), [[1.0, 0.0, 1.0]])
    np.testing.assert_array_equal(np.asarray(y), x)
    y2 = L.Masking(mask_value=2.0)(x)
    np.testing.assert_array_equal(np.asarray(y2)[0, 2], [0.0, 0.0])


def test_masks_pass_through_supporting_layers_and_stop_at_others():
    ids = np.array([[1, 0]])
    emb = L.Embedding(3, 2, mask_zero=True)
    td = L.TimeDistributed(L.Dense(2))
    out = td(emb(ids))
    np.testing.assert_array_equal(np.asarray(get_keras_mask(out)), [[1.0, 0.0]])
    # Keras 3: Dense passes the mask on, Flatten ends it
    np.testing.assert_array_equal(np.asarray(get_keras_mask(L.Dense(2)(emb(ids)))), [[1.0, 0.0]])
    assert get_keras_mask(L.Flatten()(emb(ids))) is None
    seq = L.LSTM(2, return_sequences=True)(emb(ids))
    assert get_keras_mask(seq) is not None
    assert get_keras_mask(L.LSTM(2)(emb(ids))) is None


def test_plan_gives_the_eager_bits_and_trains_the_table():
    r = np.random.default_rng(5)
    x = r.integers(0, 20, (64, 6)).astype(np.int32)
    y = (x.sum(1, keepdims=True) / 60.0).astype(np.float32)
    res = []
    for eager in (False, True):
        maas.utils.set_random_seed(6)
        m = maas.Sequential([maas.Input((6,), dtype="int32"), L.Embedding(20, 4), L.Flatten(),
                             L.Dense(1)])
        m.compile(optimizer="adam", loss="mse", run_eagerly=eager)
        before = np.asarray(m.layers[0].embeddings).copy()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            h = m.fit(x, y, epochs=2, batch_size=16, verbose=0)
        res.append((m, h.history, before))
    (mp, hp, b0), (me, he, _) = res
    assert mp.eager_reason is None
    assert hp == he
    np.testing.assert_array_equal(mp.get_weights()[0], me.get_weights()[0])
    assert np.abs(mp.get_weights()[0] - b0).max() > 0
    np.testing.assert_array_equal(mp.predict(x, verbose=0), me.predict(x, verbose=0))


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_integer_placeholders_in_a_plan(dtype):
    """The engine's plan takes integer token ids as placeholders (refilled
    each step): replays agree with the eager call."""
    from maas.engine import compile_plan
    maas.utils.set_random_seed(7)
    m = maas.Sequential([maas.Input((6,), dtype="int32"), L.Embedding(20, 4, mask_zero=True),
                         L.LSTM(3), L.Dense(1)])
    m.compile(optimizer="adam", loss="mse")
    plan = compile_plan(m)
    r = np.random.default_rng(8)
    x, y = r.integers(0, 20, (8, 6)).astype(dtype), np.ones((8, 1), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first, second = plan.train_step(x, y), plan.train_step(x, y)
    assert plan.eager_reason is None and plan.traced_shapes() == 1 and second < first
    x2 = r.integers(0, 20, (8, 6)).astype(dtype)
    plan.predict(x)   # traced
    np.testing.assert_array_equal(plan.predict(x2), np.asarray(m(maas.tensor(x2))))


def test_pad_sequences_follows_keras():
    from maas.utils import pad_sequences
    seqs = [[1, 2, 3], [4, 5], [], [6, 7, 8, 9]]
    np.testing.assert_array_equal(pad_sequences(seqs),
                                  [[0, 1, 2, 3], [0, 0, 4, 5], [0, 0, 0, 0], [6, 7, 8, 9]])
    np.testing.assert_array_equal(pad_sequences(seqs, maxlen=3, padding="post", truncating="pre"),
                                  [[1, 2, 3], [4, 5, 0], [0, 0, 0], [7, 8, 9]])
    np.testing.assert_array_equal(pad_sequences(seqs, maxlen=2, truncating="post", value=-1),
                                  [[1, 2], [4, 5], [-1, -1], [6, 7]])
    assert pad_sequences(seqs).dtype == np.int32
    assert pad_sequences([[0.5]], dtype="float32").dtype == np.float32
    with pytest.raises(ValueError, match='Padding type "middle" not understood'):
        pad_sequences(seqs, padding="middle")
    with pytest.raises(ValueError, match="must be a list of iterables"):
        pad_sequences([1, 2])


def test_docstring_examples_run():
    import doctest

    import maas.layers.base
    import maas.layers.embedding
    import maas.layers.recurrent
    import maas.utils.sequence
    for mod in (maas.layers.embedding, maas.layers.recurrent, maas.utils.sequence,
                maas.layers.base):
        r = doctest.testmod(mod, extraglobs={"maas": maas, "np": np},
                            optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        assert r.failed == 0 and r.attempted > 0, mod.__name__
