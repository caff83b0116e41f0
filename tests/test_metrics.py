"""Metrics against scikit-learn."""
import numpy as np
import pytest
from sklearn import metrics as skm

import maas
from maas import metrics as M


@pytest.fixture
def binary():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.clip(y * 0.3 + rng.uniform(0, 0.7, 500), 0, 1).astype(np.float32)
    return y, p


@pytest.fixture
def multiclass():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 400)
    logits = rng.normal(size=(400, 5)) + 2 * np.eye(5)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, p.astype(np.float32)


def _batched(metric, y, p, sw=None, bs=64):
    metric.reset_state()
    for i in range(0, len(y), bs):
        metric.update_state(y[i:i + bs], p[i:i + bs], None if sw is None else sw[i:i + bs])
    return float(np.asarray(metric.result()).mean()) if np.ndim(metric.result()) == 0 else metric.result()


def test_accuracies(binary, multiclass):
    y, p = binary
    assert _batched(M.BinaryAccuracy(), y, p[:, None]) == pytest.approx(skm.accuracy_score(y, p > 0.5))
    yc, pc = multiclass
    assert _batched(M.SparseCategoricalAccuracy(), yc, pc) == pytest.approx(
        skm.accuracy_score(yc, pc.argmax(1)))
    onehot = maas.utils.to_categorical(yc, 5)
    assert _batched(M.CategoricalAccuracy(), onehot, pc) == pytest.approx(
        skm.accuracy_score(yc, pc.argmax(1)))
    for k in (1, 2, 3):
        ref = skm.top_k_accuracy_score(yc, pc, k=k)
        assert _batched(M.SparseTopKCategoricalAccuracy(k=k), yc, pc) == pytest.approx(ref)
        assert _batched(M.TopKCategoricalAccuracy(k=k), onehot, pc) == pytest.approx(ref)


def test_weighted_accuracy(multiclass):
    yc, pc = multiclass
    sw = np.random.default_rng(2).uniform(0, 1, len(yc))
    assert _batched(M.SparseCategoricalAccuracy(), yc, pc, sw) == pytest.approx(
        skm.accuracy_score(yc, pc.argmax(1), sample_weight=sw), rel=1e-6)


def test_precision_recall_f1(binary, multiclass):
    y, p = binary
    assert _batched(M.Precision(), y, p) == pytest.approx(skm.precision_score(y, p > 0.5))
    assert _batched(M.Recall(), y, p) == pytest.approx(skm.recall_score(y, p > 0.5))
    assert _batched(M.Precision(thresholds=0.7), y, p) == pytest.approx(skm.precision_score(y, p > 0.7))
    yc, pc = multiclass
    onehot = maas.utils.to_categorical(yc, 5)
    for avg in ("micro", "macro", "weighted"):
        got = _batched(M.F1Score(average=avg), onehot, pc)
        assert got == pytest.approx(skm.f1_score(yc, pc.argmax(1), average=avg), rel=1e-5), avg
    per_class = _batched(M.F1Score(), onehot, pc)
    np.testing.assert_allclose(per_class, skm.f1_score(yc, pc.argmax(1), average=None), rtol=1e-5)
    f1 = M.F1Score(average="macro", threshold=0.5)
    assert _batched(f1, y[:, None], p[:, None]) == pytest.approx(skm.f1_score(y, p > 0.5), rel=1e-5)


def test_auc(binary):
    y, p = binary
    assert _batched(M.AUC(), y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=5e-3)
    assert _batched(M.AUC(num_thresholds=2000), y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-3)
    assert _batched(M.AUC(curve="PR"), y, p) == pytest.approx(skm.average_precision_score(y, p), abs=2e-2)


def test_regression_metrics():
    rng = np.random.default_rng(3)
    y = rng.normal(size=(300, 2)); p = y + rng.normal(size=(300, 2)) * 0.3
    assert _batched(M.MeanSquaredError(), y, p) == pytest.approx(skm.mean_squared_error(y, p), rel=1e-5)
    assert _batched(M.MeanAbsoluteError(), y, p) == pytest.approx(skm.mean_absolute_error(y, p), rel=1e-5)
    assert _batched(M.RootMeanSquaredError(), y, p) == pytest.approx(
        np.sqrt(skm.mean_squared_error(y, p)), rel=1e-5)


def test_mean_and_state():
    m = M.Mean()
    m.update_state([1.0, 2.0, 3.0])
    m.update_state([10.0], sample_weight=[3.0])
    assert float(m.result()) == pytest.approx(36 / 6)
    m.reset_state()
    assert float(m.result()) == 0.0
    assert M.get("mae").name == "mae" and isinstance(M.get("auc"), M.AUC)
    with pytest.raises(ValueError, match="valid names are"):
        M.get("acuracy")


@pytest.mark.parametrize("loss,out,cls", [
    ("binary_crossentropy", 1, M.BinaryAccuracy),
    ("categorical_crossentropy", 3, M.CategoricalAccuracy),
    ("sparse_categorical_crossentropy", 3, M.SparseCategoricalAccuracy),
    ("mse", 1, M.BinaryAccuracy),
])
def test_accuracy_resolved_from_the_loss(loss, out, cls):
    model = maas.Sequential([maas.Input((4,)), maas.layers.Dense(out)])
    model.compile("sgd", loss, metrics=["acc"])
    x = np.zeros((6, 4), np.float32)
    y = np.zeros((6, out), np.float32) if loss != "sparse_categorical_crossentropy" else np.zeros(6)
    if loss == "categorical_crossentropy":
        y[:, 0] = 1
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert isinstance(model.metrics[1].metrics[0], cls) and "acc" in logs  # Keras 3: compile_metrics
