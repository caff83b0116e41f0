"""Magnitude pruning (maas.pruning) as TF-MOT: the schedules' values, the
mask applied inside the compiled training step (pruned weights stay exactly
zero through Adam), the digits MLP pruned to 80% and fine-tuned, the
stripped model's compact file and bit-exact reload, and the refusals."""
from __future__ import annotations

import os

import numpy as np
import pytest

import maas
from maas import pruning
from maas.errors import ModelFormatError


def mlp(hidden=128):
    return maas.Sequential([maas.Input((64,)), maas.layers.Dense(hidden, activation="relu"),
                            maas.layers.Dense(10, activation="softmax")])


def _acc(model, x, y):
    return float((model.predict(x, verbose=0).argmax(1) == y).mean())


def test_polynomial_decay_matches_tfmot_formula():
    s = pruning.PolynomialDecay(0.1, 0.9, begin_step=10, end_step=110, power=3, frequency=10)
    for t in (10, 20, 60, 100, 110):
        frac = (t - 10) / 100
        should, v = s(t)
        assert should and v == pytest.approx(0.9 + (0.1 - 0.9) * (1 - frac) ** 3)
    assert s(15) == (False, pytest.approx(0.9 - 0.8 * (1 - 0.05) ** 3))
    assert not s(5)[0] and not s(120)[0]
    c = pruning.ConstantSparsity(0.5, begin_step=3, frequency=2)
    assert [c(t)[0] for t in range(2, 8)] == [False, True, False, True, False, True]
    with pytest.raises(ValueError, match="final_sparsity must be in"):
        pruning.PolynomialDecay(0.0, 1.0, 0, 10)
    with pytest.raises(ValueError, match="end_step must be after begin_step"):
        pruning.PolynomialDecay(0.0, 0.5, 10, 10)


def test_mask_holds_through_adam_in_the_compiled_plan(digits):
    xtr, _, ytr, _ = digits
    model = mlp(64)
    p = pruning.prune_low_magnitude(model, schedule=pruning.ConstantSparsity(0.9, 0, frequency=1000))
    p.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    p.fit(xtr[:256], ytr[:256], epochs=3, batch_size=32, verbose=0,
          callbacks=[pruning.UpdatePruningStep()])
    assert p.eager_reason is None and p._plan.traced_shapes() >= 1   # compiled, mask inside
    for layer in p.layers:
        mask = np.asarray(layer.mask)
        kernel = np.asarray(layer.layer.kernel)
        assert (mask == 0).mean() == pytest.approx(0.9, abs=1e-3)
        assert (kernel[mask == 0] == 0).all()        # exactly zero after 24 Adam steps
        assert (kernel[mask == 1] != 0).all()
        slots = p.optimizer._slots[id(layer.layer.kernel)]
        assert np.abs(np.asarray(slots["momentum"])[mask == 0]).max() == 0  # no gradient reached them


def test_digits_pruned_80_and_fine_tuned(digits, tmp_path):
    xtr, xte, ytr, yte = digits
    model = mlp()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(xtr, ytr, epochs=10, batch_size=32, verbose=0)
    acc = _acc(model, xte, yte)
    steps = int(np.ceil(len(xtr) / 32))
    p = pruning.prune_low_magnitude(model, pruning_schedule=pruning.PolynomialDecay(
        0.0, 0.8, begin_step=0, end_step=3 * steps, frequency=steps // 2))
    p.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    p.fit(xtr, ytr, epochs=6, batch_size=32, verbose=0, callbacks=[pruning.UpdatePruningStep()])
    plain = pruning.strip_pruning(p)
    sp = pruning.get_sparsity(plain)
    assert all(v == pytest.approx(0.8, abs=2e-3) for v in sp.values()), sp
    pacc = _acc(plain, xte, yte)
    assert acc > 0.9 and pacc >= acc - 0.01, (acc, pacc)
    np.testing.assert_array_equal(plain.predict(xte, verbose=0), p.predict(xte, verbose=0))
    model.save(tmp_path / "dense.maas", include_optimizer=False)
    plain.save(tmp_path / "sparse.maas", include_optimizer=False)
    ratio = os.path.getsize(tmp_path / "sparse.maas") / os.path.getsize(tmp_path / "dense.maas")
    assert ratio < 0.3, ratio     # 20% of the values + 1 bit per weight
    back = maas.load_model(tmp_path / "sparse.maas")
    np.testing.assert_array_equal(back.predict(xte, verbose=0), plain.predict(xte, verbose=0))
    for a, b in zip(back.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


def test_sparse_file_is_checked(tmp_path):
    from maas.saving import load_tensors, save_tensors

    model = mlp(32)
    w = model.get_weights()
    w[0][np.abs(w[0]) < np.quantile(np.abs(w[0]), 0.9)] = 0
    model.set_weights(w)
    model.save(tmp_path / "m.maas")
    tensors, meta = load_tensors(tmp_path / "m.maas")
    assert any(k.endswith("/bitmask") for k in tensors)
    values = next(k for k in tensors if k.endswith("/values"))
    tensors[values] = np.asarray(tensors[values])[:-1]
    meta.pop("maas.data_sha256")
    save_tensors(tmp_path / "bad.maas", {k: np.array(v) for k, v in tensors.items()}, meta)
    with pytest.raises(ModelFormatError, match="the bitmask marks .* values, the file holds"):
        maas.load_model(tmp_path / "bad.maas")


def test_refusals():
    conv_free = maas.Sequential([maas.Input((4,)), maas.layers.Dropout(0.1)])
    with pytest.raises(ValueError, match="has no Dense layer to prune"):
        pruning.prune_low_magnitude(conv_free)
    with pytest.raises(ValueError, match="maas prunes Dense kernels only"):
        pruning.PruneLowMagnitude(maas.layers.Dropout(0.1))
    model = mlp(8)
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="has no pruned layers"):
        model.fit(np.zeros((4, 64), np.float32), np.zeros((4, 10), np.float32), verbose=0,
                  callbacks=[pruning.UpdatePruningStep()])


def test_to_sparse_csr_layers_match_dense_and_reload(tmp_path):
    rng = np.random.default_rng(4)
    model = maas.Sequential([maas.Input((40,)), maas.layers.Dense(70, activation="relu"),
                             maas.layers.Dense(9)])
    w = model.get_weights()
    w[0] = np.where(rng.random(w[0].shape) < 0.97, np.float32(0), w[0])   # 97%: CSR
    w[2] = np.where(rng.random(w[2].shape) < 0.5, np.float32(0), w[2])    # 50%: stays dense
    model.set_weights(w)
    sparse = pruning.to_sparse(model)
    assert [type(l).__name__ for l in sparse.layers] == ["SparseDense", "Dense"]
    first = sparse.layers[0]
    assert first.nnz == int((w[0] != 0).sum()) and first.trainable_weights == []
    x = rng.standard_normal((13, 40)).astype(np.float32)
    ref = x.astype(np.float64) @ w[0] + w[1]
    np.testing.assert_allclose(np.asarray(first(x)), np.maximum(ref, 0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(first(x[:1])), np.maximum(ref[:1], 0), rtol=1e-5, atol=1e-5)
    want = sparse.predict(x, verbose=0)
    np.testing.assert_allclose(want, model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    sparse.save(tmp_path / "csr.maas")
    back = maas.load_model(tmp_path / "csr.maas")
    np.testing.assert_array_equal(back.predict(x, verbose=0), want)
    bad = np.asarray(first.cols).copy()
    bad[0] = 40
    first.cols.assign(bad)
    with pytest.raises(ValueError, match="column index 40 out of range for 40 input features"):
        first(x)
