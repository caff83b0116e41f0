"""Labels stay integers: sparse categorical crossentropy on int32/int64/
int8/uint8 labels (tensors or arrays) without a pass through float, checked
against PyTorch's cross_entropy (int64 targets) and against maas's own
float-label path (same bits); float labels must be whole numbers."""
import re

import numpy as np
import pytest
import torch

import maas
from maas import losses
from maas._typed import IntegerLabelError

SCCE_NONINT = ("sparse_categorical_crossentropy: labels must be an integer tensor, received "
               "float32 with non-integer values")


def _data(n=6, c=5, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)).astype(np.float32) * 3
    labels = rng.integers(0, c, size=n)
    return logits, labels


def _torch_loss_and_grad(logits, labels, from_logits):
    x = torch.tensor(logits.astype(np.float64), requires_grad=True)
    if from_logits:
        per = torch.nn.functional.cross_entropy(x, torch.tensor(labels, dtype=torch.int64),
                                                reduction="none")
    else:  # Keras: renormalize the probabilities, clip to [1e-7, 1 - 1e-7], -log
        q = torch.clamp(x / x.sum(-1, keepdim=True), 1e-7, 1 - 1e-7)
        per = -torch.log(q.gather(1, torch.tensor(labels, dtype=torch.int64)[:, None]))[:, 0]
    per.sum().backward()
    return per.detach().numpy(), x.grad.numpy()


@pytest.mark.parametrize("dtype", ["int64", "int32", "int8", "uint8"])
@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("as_tensor", [True, False])
def test_integer_labels_match_torch_and_the_float_path(dtype, from_logits, as_tensor):
    logits, labels = _data()
    pred = logits if from_logits else np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    pred = pred.astype(np.float32)
    y = labels.astype(dtype)
    y_in = maas.tensor(y) if as_tensor else y
    if as_tensor:
        assert y_in.dtype == dtype and np.shares_memory(np.asarray(y_in), y)
    p = maas.Variable(pred)
    with maas.GradientTape() as tape:
        per = losses.sparse_categorical_crossentropy(y_in, p, from_logits=from_logits)
        total = per.sum()
    (g,) = tape.gradient(total, [p])
    want, want_g = _torch_loss_and_grad(pred, labels, from_logits)
    np.testing.assert_allclose(per.numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g.numpy(), want_g, rtol=1e-4, atol=1e-6)
    # float labels holding the same whole numbers: the same bits
    with maas.GradientTape() as tape:
        per_f = losses.sparse_categorical_crossentropy(labels.astype(np.float32), p,
                                                       from_logits=from_logits)
        total_f = per_f.sum()
    (g_f,) = tape.gradient(total_f, [p])
    assert per.numpy().tobytes() == per_f.numpy().tobytes()
    assert g.numpy().tobytes() == g_f.numpy().tobytes()


def test_int64_labels_beyond_float32_precision_are_not_rounded():
    """Class 2**24 + 1 has no float32: through float it would read as 2**24."""
    c = 2**24 + 2
    logits = np.zeros((1, c), np.float32)
    logits[0, c - 1] = 30.0                     # the right class is very likely
    labels = np.array([c - 1], np.int64)
    assert int(np.float32(c - 1)) != c - 1
    loss = float(losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)[0])
    want = float(torch.nn.functional.cross_entropy(torch.tensor(logits.astype(np.float64)),
                                                   torch.tensor(labels)))
    assert loss == pytest.approx(want, abs=1e-4) and loss < 1e-3


def test_the_loss_class_weights_and_reduces_integer_labels_and_trailing_one_shapes():
    logits, labels = _data(8, 3, seed=1)
    sw = np.array([1, 0, 2, 1, 1, 0, 1, 3])     # integer weights promote to float32
    loss = losses.SparseCategoricalCrossentropy(from_logits=True)
    got = float(loss(maas.tensor(labels.astype(np.int32)[:, None]), logits, sample_weight=sw))
    per = torch.nn.functional.cross_entropy(torch.tensor(logits.astype(np.float64)),
                                            torch.tensor(labels), reduction="none").numpy()
    assert got == pytest.approx(float((per * sw).sum() / 8), rel=1e-5)


def test_non_integer_and_non_numeric_labels_are_refused_with_what_to_do():
    logits, _ = _data(3, 4)
    with pytest.raises(IntegerLabelError, match=re.escape(SCCE_NONINT)) as e:
        losses.sparse_categorical_crossentropy(np.array([0.5, 1, 2], np.float32), logits)
    assert isinstance(e.value, TypeError) and isinstance(e.value, ValueError)
    for bad in (np.array([0, np.nan, 1], np.float32), maas.tensor(np.array([1.0, 2.0, np.inf]))):
        with pytest.raises(ValueError, match=re.escape(SCCE_NONINT)):
            losses.sparse_categorical_crossentropy(bad, logits)
    with pytest.raises(TypeError, match="labels must be an integer tensor, received bool"):
        losses.sparse_categorical_crossentropy(np.array([True, False, True]), logits)
    with pytest.raises(ValueError, match=re.escape(
            "sparse_categorical_crossentropy: label 4 at row 1 is out of range [0, 4)")):
        losses.sparse_categorical_crossentropy(maas.tensor(np.array([0, 4, 1], np.int32)), logits)
    with pytest.raises(ValueError, match=re.escape("label -1 at row 2 is out of range [0, 4)")):
        losses.sparse_categorical_crossentropy(np.array([0, 1, -1], np.int8), logits)
    with pytest.raises(ValueError, match=re.escape("y_true shape (2,) does not fit y_pred shape (3, 4)")):
        losses.sparse_categorical_crossentropy(np.array([0, 1]), logits)
    with pytest.raises(TypeError, match="sparse_categorical_crossentropy: expected a float32 tensor, "
                                        "received a tensor of dtype int64"):
        losses.sparse_categorical_crossentropy(np.array([0, 1, 2]), maas.tensor(np.zeros((3, 4), np.int64)))
    # whole-number floats still work, as before
    out = losses.sparse_categorical_crossentropy(np.array([0.0, 3.0, 1.0]), logits, from_logits=True)
    assert out.shape == (3,)


def test_fit_with_integer_labels_trains():
    maas.random.set_seed(0)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = maas.Sequential([maas.layers.Input((4,)), maas.layers.Dense(2)])
    model.compile(optimizer="adam", loss=maas.losses.SparseCategoricalCrossentropy(from_logits=True))
    hist = model.fit(x, maas.tensor(y), epochs=20, batch_size=16, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]


def test_other_losses_cast_integer_label_tensors_to_float_as_keras_does():
    y = np.array([[0, 1], [1, 1]])
    p = np.array([[0.2, 0.7], [0.9, 0.6]], np.float32)
    for fn in (losses.binary_crossentropy, losses.mean_squared_error, losses.hinge):
        got = fn(maas.tensor(y), p)           # an int64 tensor
        want = fn(y.astype(np.float32), p)
        assert got.numpy().tobytes() == want.numpy().tobytes()
    with pytest.raises(TypeError, match="expected a float32 tensor, received a tensor of dtype int64"):
        losses.mean_squared_error(y, maas.tensor(y))   # predictions are never cast
