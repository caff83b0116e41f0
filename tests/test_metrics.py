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


# ---------------------------------------------------------------- state in variables


def test_metric_state_is_held_in_variables():
    m = M.Mean()
    assert [v.name for v in m.variables] == ["mean/total", "mean/count"]
    assert all(isinstance(v, maas.Variable) and not v.trainable for v in m.variables)
    m.update_state([1.0, 2.0, 3.0], sample_weight=[1.0, 1.0, 2.0])
    assert float(np.asarray(m.total)) == 9.0 and float(np.asarray(m.count)) == 4.0
    m.total.assign(20.0)  # the result is computed from the variables
    assert float(m.result()) == 5.0
    m.reset_state()
    assert all(np.all(np.asarray(v) == 0) for v in m.variables) and float(m.result()) == 0.0
    p = M.Precision(thresholds=[0.2, 0.5, 0.8])
    assert [v.shape for v in p.variables] == [(3,), (3,)]
    assert [v.name for v in p.variables] == ["precision/true_positives", "precision/false_positives"]


def test_custom_metric_keras_pattern():
    """super().__init__() first, then add_variable/add_weight: the base class
    never calls reset_state() before the subclass has made its state."""
    resets = []

    class WeightedCount(M.Metric):
        def __init__(self, name="weighted_count", **kwargs):
            super().__init__(name=name, **kwargs)
            self.n = self.add_weight(shape=(), initializer="zeros", name="n")
            self.per_class = self.add_variable(shape=(3,), initializer="ones", name="per_class")

        def reset_state(self):
            resets.append(1)
            super().reset_state()

        def update_state(self, y_true, y_pred, sample_weight=None):
            w = np.ones(len(y_true)) if sample_weight is None else np.asarray(sample_weight)
            self.n.assign_add(float(w.sum()))
            self.per_class.assign_add(np.bincount(np.asarray(y_true), weights=w, minlength=3))

        def result(self):
            return np.float32(np.asarray(self.n))

    m = WeightedCount()
    assert resets == []  # not called by the constructor
    np.testing.assert_array_equal(np.asarray(m.per_class), [1, 1, 1])  # the initializer
    assert float(m([0, 2, 2], None, sample_weight=[1.0, 2.0, 0.5])) == 3.5
    np.testing.assert_array_equal(np.asarray(m.per_class), [2, 1, 3.5])
    m.reset_state()
    assert resets == [1] and float(m.result()) == 0.0
    np.testing.assert_array_equal(np.asarray(m.per_class), [0, 0, 0])  # Keras resets to zeros

    class Forgot(M.Metric):
        def __init__(self):
            self.v = self.add_variable(shape=(), initializer="zeros")

    with pytest.raises(RuntimeError, match="you forgot to call `super\\(\\).__init__\\(\\)`"):
        Forgot()


# ---------------------------------------------------------------- losses as metrics

def _several_batches(seed=10, n=230):
    rng = np.random.default_rng(seed)
    return rng, rng.uniform(0, 2, n)


def _weighted_mean(per_sample, sw):
    return float(np.sum(per_sample * sw) / np.sum(sw))


def test_crossentropy_metrics_vs_sklearn_log_loss(binary, multiclass):
    _, sw = _several_batches(n=500)
    y, p = binary
    got = _batched(M.BinaryCrossentropy(), y[:, None].astype(np.float32), p[:, None], sw)
    assert got == pytest.approx(skm.log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), sample_weight=sw), rel=1e-5)
    yc, pc = multiclass
    sw = sw[:len(yc)]
    ref = skm.log_loss(yc, pc, sample_weight=sw)
    onehot = maas.utils.to_categorical(yc, 5)
    assert _batched(M.CategoricalCrossentropy(), onehot, pc, sw) == pytest.approx(ref, rel=1e-5)
    assert _batched(M.SparseCategoricalCrossentropy(), yc, pc, sw) == pytest.approx(ref, rel=1e-5)
    logits = np.log(pc)
    assert _batched(M.SparseCategoricalCrossentropy(from_logits=True), yc, logits, sw) == pytest.approx(ref, rel=1e-5)
    assert _batched(M.CategoricalCrossentropy(from_logits=True), onehot, logits, sw) == pytest.approx(ref, rel=1e-5)
    # label smoothing: Keras's smoothed targets, NumPy reference
    ls = 0.1
    t = onehot * (1 - ls) + ls / 5
    per = -np.sum(t * np.log(np.clip(pc / pc.sum(1, keepdims=True), 1e-7, 1 - 1e-7)), axis=1)
    assert _batched(M.CategoricalCrossentropy(label_smoothing=ls), onehot, pc, sw) == pytest.approx(
        _weighted_mean(per, sw), rel=1e-5)


def test_hinge_metrics(binary):
    y, p = binary
    _, sw = _several_batches(n=len(y))
    d = (p * 4 - 2)[:, None].astype(np.float32)  # decision values
    y2 = y[:, None].astype(np.float32)
    ref = skm.hinge_loss(2 * y - 1, d.ravel(), sample_weight=sw)  # 0/1 labels become -1/1
    assert _batched(M.Hinge(), y2, d, sw) == pytest.approx(ref, rel=1e-5)
    ref_sq = _weighted_mean(np.maximum(1 - (2 * y - 1) * d.ravel(), 0) ** 2, sw)
    assert _batched(M.SquaredHinge(), y2, d, sw) == pytest.approx(ref_sq, rel=1e-5)
    rng = np.random.default_rng(4)
    onehot = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 300)]
    scores = rng.normal(size=(300, 4)).astype(np.float32)
    per = np.maximum(np.max((1 - onehot) * scores, 1) - np.sum(onehot * scores, 1) + 1, 0)
    sw = sw[:300]
    assert _batched(M.CategoricalHinge(), onehot, scores, sw) == pytest.approx(_weighted_mean(per, sw), rel=1e-5)


def test_regression_and_probabilistic_wrappers():
    rng, sw = _several_batches(n=300)
    y = rng.normal(size=(300, 3)); p = y + rng.normal(size=(300, 3)) * 0.5
    cases = [
        (M.LogCoshError(), y, p, np.mean(np.log(np.cosh(p - y)), 1)),
        (M.CosineSimilarity(), y, p,
         np.sum(y * p, 1) / np.linalg.norm(y, axis=1) / np.linalg.norm(p, axis=1)),
        (M.PearsonCorrelation(), y, p, np.array([np.corrcoef(a, b)[0, 1] for a, b in zip(y, p)])),
        (M.MeanAbsolutePercentageError(), y + 5, p + 5, 100 * np.mean(np.abs((y - p) / (y + 5)), 1)),
        (M.MeanSquaredLogarithmicError(), np.abs(y), np.abs(p),
         np.mean((np.log1p(np.abs(p)) - np.log1p(np.abs(y))) ** 2, 1)),
    ]
    probs_t = rng.dirichlet(np.ones(3), 300); probs_p = rng.dirichlet(np.ones(3), 300)
    cases.append((M.KLDivergence(), probs_t, probs_p, np.sum(probs_t * np.log(probs_t / probs_p), 1)))
    counts = rng.poisson(2.0, (300, 3)).astype(np.float64); rate = rng.uniform(0.5, 3, (300, 3))
    cases.append((M.Poisson(), counts, rate, np.mean(rate - counts * np.log(rate + 1e-7), 1)))
    for m, yt, yp, per in cases:
        yt, yp = yt.astype(np.float32), yp.astype(np.float32)
        assert _batched(m, yt, yp, sw) == pytest.approx(_weighted_mean(per, sw), rel=2e-5), m.name
        assert _batched(m, yt, yp) == pytest.approx(float(np.mean(per)), rel=2e-5), m.name
    # a 1-D batch is one sample for Keras's PearsonCorrelation: the mean of per-batch correlations
    a, b = y[:, 0].astype(np.float32), p[:, 0].astype(np.float32)
    per_batch = [np.corrcoef(a[i:i + 64], b[i:i + 64])[0, 1] for i in range(0, 300, 64)]
    assert _batched(M.PearsonCorrelation(), a, b) == pytest.approx(np.mean(per_batch), rel=1e-5)


@pytest.mark.parametrize("agg,multioutput", [("uniform_average", "uniform_average"),
                                             ("variance_weighted_average", "variance_weighted"),
                                             (None, "raw_values")])
@pytest.mark.parametrize("weighted", [False, True])
def test_r2_score_vs_sklearn(agg, multioutput, weighted):
    rng, sw = _several_batches(seed=11, n=250)
    y = rng.normal(size=(250, 3)) * [1.0, 2.0, 0.5] + [0.0, 1.0, -2.0]
    p = y + rng.normal(size=(250, 3)) * [0.3, 1.5, 0.4]
    sw = sw if weighted else None
    got = _batched(M.R2Score(class_aggregation=agg), y.astype(np.float32), p.astype(np.float32), sw)
    ref = skm.r2_score(y, p, sample_weight=sw, multioutput=multioutput)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_r2_score_adjusted_and_errors():
    rng = np.random.default_rng(12)
    y = rng.normal(size=(100, 1)); p = y + rng.normal(size=(100, 1)) * 0.5
    r2 = skm.r2_score(y, p)
    got = _batched(M.R2Score(num_regressors=3), y.astype(np.float32), p.astype(np.float32))
    assert got == pytest.approx(1 - (1 - r2) * 99 / 96, rel=1e-4)
    with pytest.raises(ValueError, match=r"R2Score expects 2D inputs with shape \(batch_size, output_dim\)"):
        M.R2Score().update_state(np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match="Invalid value for argument `class_aggregation`"):
        M.R2Score(class_aggregation="max")
    with pytest.raises(ValueError, match="Expected a value >= 0"):
        M.R2Score(num_regressors=-1)


# ---------------------------------------------------------------- confusion-matrix metrics

THRESHOLDS = [0.1, 0.35, 0.5, 0.62, 0.9]


def _sk_counts(y, p, thr, sw):
    tn, fp, fn, tp = skm.confusion_matrix(y, p > thr, labels=[0, 1], sample_weight=sw).ravel()
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn}


@pytest.mark.parametrize("cls,key", [(M.TruePositives, "tp"), (M.FalsePositives, "fp"),
                                     (M.TrueNegatives, "tn"), (M.FalseNegatives, "fn")])
def test_confusion_counts_vs_sklearn(binary, cls, key):
    y, p = binary
    _, sw = _several_batches(n=len(y))
    got = _batched(cls(thresholds=THRESHOLDS), y, p, sw)
    ref = [_sk_counts(y, p, t, sw)[key] for t in THRESHOLDS]
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    assert _batched(cls(), y, p) == pytest.approx(_sk_counts(y, p, 0.5, None)[key])
    assert cls(thresholds=0.3).get_config()["thresholds"] == 0.3


def test_precision_recall_several_thresholds_vs_sklearn(binary):
    y, p = binary
    _, sw = _several_batches(n=len(y))
    for cls, sk in ((M.Precision, skm.precision_score), (M.Recall, skm.recall_score)):
        got = _batched(cls(thresholds=THRESHOLDS), y, p, sw)
        assert got.shape == (len(THRESHOLDS),)
        ref = [sk(y, p > t, sample_weight=sw, zero_division=0) for t in THRESHOLDS]
        np.testing.assert_allclose(got, ref, rtol=1e-5)
        assert _batched(cls(thresholds=0.62), y, p, sw) == pytest.approx(ref[3], rel=1e-5)


def test_precision_recall_top_k_and_class_id(multiclass):
    yc, pc = multiclass
    _, sw = _several_batches(n=len(yc))
    onehot = maas.utils.to_categorical(yc, 5)
    # class_id: one column as a binary problem
    for cls, sk in ((M.Precision, skm.precision_score), (M.Recall, skm.recall_score)):
        got = _batched(cls(class_id=2), onehot, pc, sw)
        assert got == pytest.approx(sk(yc == 2, pc[:, 2] > 0.5, sample_weight=sw), rel=1e-5)
    # top_k: positive predictions are each row's k largest scores
    for k in (1, 2):
        top = np.argsort(-pc, 1)[:, :k]
        pred = np.zeros_like(onehot, bool)
        np.put_along_axis(pred, top, True, 1)
        w = sw[:, None]
        tp = np.sum(w * (pred & (onehot > 0))); fp = np.sum(w * (pred & (onehot == 0)))
        fn = np.sum(w * (~pred & (onehot > 0)))
        assert _batched(M.Precision(top_k=k), onehot, pc, sw) == pytest.approx(tp / (tp + fp), rel=1e-5)
        assert _batched(M.Recall(top_k=k), onehot, pc, sw) == pytest.approx(tp / (tp + fn), rel=1e-5)
    # top_k=1 with class_id: the column counts where it is the row's argmax
    assert _batched(M.Precision(top_k=1, class_id=2), onehot, pc, sw) == pytest.approx(
        skm.precision_score(yc == 2, pc.argmax(1) == 2, sample_weight=sw), rel=1e-5)
    with pytest.raises(ValueError, match=r"Threshold values must be in \[0, 1\]. Received: \[1.5\]"):
        M.Precision(thresholds=[0.5, 1.5])


def _np_at_constraint(y, p, sw, value, constrained, dependent, num_thresholds=200):
    thr = np.array([0.0] + [(i + 1) / (num_thresholds - 1) for i in range(num_thresholds - 2)] + [1.0])
    pred = np.clip(p, 0, 1)[None, :] > thr[:, None]
    pos = (y != 0)[None, :]
    w = np.ones_like(p, dtype=np.float64) if sw is None else sw
    tp = np.sum(w * (pred & pos), 1); fp = np.sum(w * (pred & ~pos), 1)
    fn = np.sum(w * (~pred & pos), 1); tn = np.sum(w * (~pred & ~pos), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = {"recall": np.nan_to_num(tp / (tp + fn)), "precision": np.nan_to_num(tp / (tp + fp)),
                 "specificity": np.nan_to_num(tn / (tn + fp))}
    return np.max(np.where(rates[constrained] >= value, rates[dependent], 0.0), initial=0.0)


@pytest.mark.parametrize("weighted", [False, True])
def test_precision_at_recall_and_recall_at_precision(binary, weighted):
    y, p = binary
    _, sw = _several_batches(n=len(y))
    sw = sw if weighted else None
    for value in (0.3, 0.8, 0.95):
        got = _batched(M.PrecisionAtRecall(value), y, p, sw)
        assert got == pytest.approx(_np_at_constraint(y, p, sw, value, "recall", "precision"), rel=1e-5)
        got = _batched(M.RecallAtPrecision(value), y, p, sw)
        assert got == pytest.approx(_np_at_constraint(y, p, sw, value, "precision", "recall"), rel=1e-5)
        got = _batched(M.SensitivityAtSpecificity(value, num_thresholds=50), y, p, sw)
        assert got == pytest.approx(_np_at_constraint(y, p, sw, value, "specificity", "recall", 50), rel=1e-5)
        got = _batched(M.SpecificityAtSensitivity(value, num_thresholds=50), y, p, sw)
        assert got == pytest.approx(_np_at_constraint(y, p, sw, value, "recall", "specificity", 50), rel=1e-5)
    # against sklearn's curve: the best precision with recall >= 0.8 over all cut points is
    # an upper bound that 200 thresholds get close to
    prec, rec, _ = skm.precision_recall_curve(y, p, sample_weight=sw)
    best = prec[rec >= 0.8].max()
    got = _batched(M.PrecisionAtRecall(0.8), y, p, sw)
    assert best - 0.02 <= got <= best + 1e-6
    with pytest.raises(ValueError, match=r"Argument `recall` must be in the range \[0, 1\]. Received: recall=2"):
        M.PrecisionAtRecall(2)
    cfg = M.RecallAtPrecision(0.7, num_thresholds=20, class_id=1).get_config()
    assert cfg == {"name": "recall_at_precision", "dtype": "float32", "num_thresholds": 20, "class_id": 1,
                   "precision": 0.7}


# ---------------------------------------------------------------- IoU


def _sk_mean_iou(y, p, C, sw=None):
    cm = skm.confusion_matrix(y, p, labels=list(range(C)), sample_weight=sw)
    tp = np.diag(cm); denom = cm.sum(0) + cm.sum(1) - tp
    valid = denom > 0
    return np.mean(tp[valid] / denom[valid])


def test_mean_iou_vs_sklearn():
    rng, sw = _several_batches(seed=13, n=400)
    C = 6
    y = rng.integers(0, C - 1, 400)  # class 5 never appears: left out of the mean
    p = np.where(rng.random(400) < 0.6, y, rng.integers(0, C - 1, 400))
    assert _batched(M.MeanIoU(num_classes=C), y, p) == pytest.approx(_sk_mean_iou(y, p, C), rel=1e-5)
    assert _batched(M.MeanIoU(num_classes=C, dtype="float32"), y, p, sw) == pytest.approx(
        _sk_mean_iou(y, p, C, sw), rel=1e-5)
    # Keras's default dtype "int" truncates fractional weights, and says so
    with pytest.warns(UserWarning, match="You are passing weight as `float`, but dtype is `int`"):
        got = _batched(M.MeanIoU(num_classes=C), y, p, sw)
    assert got == pytest.approx(_sk_mean_iou(y, p, C, np.trunc(sw)), rel=1e-5)
    assert _batched(M.MeanIoU(num_classes=C), y, p, np.round(sw)) == pytest.approx(
        _sk_mean_iou(y, p, C, np.round(sw)), rel=1e-5)
    # sklearn's jaccard (macro over the classes present) is the same number
    assert _batched(M.MeanIoU(num_classes=C), y, p) == pytest.approx(
        skm.jaccard_score(y, p, average="macro", labels=np.unique(np.r_[y, p])), rel=1e-5)
    # one-hot labels and scores, and an ignored class
    scores = np.eye(C)[p] + rng.uniform(0, 0.1, (400, C))
    m = M.MeanIoU(num_classes=C, sparse_y_true=False, sparse_y_pred=False, dtype="float32")
    assert _batched(m, np.eye(C)[y], scores, sw) == pytest.approx(_sk_mean_iou(y, p, C, sw), rel=1e-5)
    keep = y != 2
    got = _batched(M.MeanIoU(num_classes=C, ignore_class=2), y, p)
    assert got == pytest.approx(_sk_mean_iou(y[keep], p[keep], C), rel=1e-5)
    iou = _batched(M.IoU(num_classes=C, target_class_ids=[0, 3]), y, p)
    cm = skm.confusion_matrix(y, p, labels=list(range(C)))
    with np.errstate(invalid="ignore"):  # class 5: 0 / 0, not a target here
        per = np.diag(cm) / (cm.sum(0) + cm.sum(1) - np.diag(cm))
    assert iou == pytest.approx(per[[0, 3]].mean(), rel=1e-5)
    with pytest.raises(ValueError, match=r"Target class id 7 is out of range, which is \[0, 6\)"):
        M.IoU(num_classes=6, target_class_ids=[7])
    assert M.MeanIoU(num_classes=3).get_config() == {
        "name": "mean_io_u", "dtype": "int", "num_classes": 3, "ignore_class": None,
        "sparse_y_true": True, "sparse_y_pred": True, "axis": -1}


# ---------------------------------------------------------------- names, configs


NEW_METRICS = [M.BinaryCrossentropy(from_logits=True, label_smoothing=0.1), M.CategoricalCrossentropy(),
               M.SparseCategoricalCrossentropy(from_logits=True), M.Hinge(), M.SquaredHinge(),
               M.CategoricalHinge(), M.KLDivergence(), M.Poisson(), M.LogCoshError(), M.CosineSimilarity(axis=1),
               M.PearsonCorrelation(), M.R2Score(class_aggregation=None), M.TruePositives(thresholds=[0.2, 0.4]),
               M.FalseNegatives(), M.Precision(thresholds=[0.3], top_k=2, class_id=1), M.Recall(),
               M.PrecisionAtRecall(0.5), M.RecallAtPrecision(0.9, num_thresholds=10), M.MeanIoU(num_classes=4),
               M.IoU(num_classes=4, target_class_ids=[1]), M.MeanAbsolutePercentageError(),
               M.MeanSquaredLogarithmicError()]


@pytest.mark.parametrize("metric", NEW_METRICS, ids=lambda m: type(m).__name__)
def test_new_metrics_config_roundtrip(metric):
    cfg = metric.get_config()
    rt = M.get({"class_name": type(metric).__name__, "config": cfg})
    assert type(rt) is type(metric) and rt.get_config() == cfg


def test_new_metric_keras_names():
    names = {M.BinaryCrossentropy: "binary_crossentropy", M.KLDivergence: "kl_divergence",
             M.LogCoshError: "logcosh", M.R2Score: "r2_score", M.CosineSimilarity: "cosine_similarity",
             M.PearsonCorrelation: "pearson_correlation", M.TruePositives: "true_positives",
             M.SquaredHinge: "squared_hinge", M.CategoricalHinge: "categorical_hinge"}
    for cls, name in names.items():
        assert cls().name == name
    assert isinstance(M.get("r2_score"), M.R2Score)
    assert isinstance(M.get("KLDivergence"), M.KLDivergence)
    m = M.get("kl_divergence")
    assert m.name == "kl_divergence" and isinstance(m, M.MeanMetricWrapper)


def test_new_metrics_in_fit_and_evaluate():
    """compile(metrics=[...]) with the new metrics: evaluate's logs equal the
    metrics computed on the predictions."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 4)).astype(np.float32)
    y = (x @ rng.normal(size=(4, 1)) > 0).astype(np.float32)
    maas.random.set_seed(0)
    model = maas.Sequential([maas.Input((4,)), maas.layers.Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy",
                  metrics=[M.BinaryCrossentropy(), M.Precision(thresholds=0.4), M.R2Score(),
                           M.TruePositives(), "squared_hinge"])
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    logs = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    p = np.asarray(model.predict(x, verbose=0))
    assert logs["binary_crossentropy"] == pytest.approx(
        skm.log_loss(y.ravel(), np.clip(p.ravel(), 1e-7, 1 - 1e-7)), rel=1e-4)
    assert logs["precision"] == pytest.approx(skm.precision_score(y.ravel(), p.ravel() > 0.4), rel=1e-5)
    assert logs["r2_score"] == pytest.approx(skm.r2_score(y, p), rel=1e-4, abs=1e-5)
    assert logs["true_positives"] == pytest.approx(np.sum((p.ravel() > 0.5) & (y.ravel() == 1)))


def test_docstring_examples_run():
    """The examples in maas.metrics's docstrings are real: they run and print what they show."""
    import doctest
    r = doctest.testmod(maas.metrics, extraglobs={"maas": maas, "np": np},
                        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert r.failed == 0 and r.attempted > 5
