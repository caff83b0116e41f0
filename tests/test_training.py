"""The five programs of issue 3, run as written, and the details of
compile/fit/evaluate/predict."""
import io
import contextlib

import numpy as np
import pytest

import maas
from maas.layers import Dense, Dropout, Input


@pytest.fixture(autouse=True)
def _seed():
    maas.utils.set_random_seed(0)


# -- program 1: a subclassed model and a hand-written loop
def test_program1_subclassed_model_custom_loop(digits):
    xtr, xte, ytr, yte = digits

    class SimpleModel(maas.Model):
        def __init__(self):
            super().__init__()
            self.dense1 = maas.layers.Dense(64, activation="relu")
            self.dense2 = maas.layers.Dense(10)

        def call(self, inputs, training=False):
            return self.dense2(self.dense1(inputs))

    rng = np.random.default_rng(0)

    def make_batches():
        perm = rng.permutation(len(xtr))
        for i in range(0, len(xtr), 32):
            yield xtr[perm[i:i + 32]], ytr[perm[i:i + 32]]

    model = SimpleModel(); opt = maas.optimizers.Adam(1e-3)
    for epoch in range(20):
        batches = make_batches()
        for x, y in batches:
            with maas.GradientTape() as tape:
                loss = maas.losses.sparse_categorical_crossentropy(y, model(x, training=True), from_logits=True)
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
    assert len(model.trainable_variables) == 4
    acc = (np.asarray(model(xte)).argmax(axis=1) == yte).mean()
    assert acc >= 0.95, acc


# -- program 2: Sequential MLP, binary cross-entropy, breast cancer
def test_program2_sequential_binary(cancer):
    xtr, xte, ytr, yte = cancer
    model = maas.Sequential([Dense(128, activation="relu"), Dense(64, activation="relu"),
                             Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    history = model.fit(xtr, ytr, epochs=20, verbose=0)
    assert set(history.history) == {"loss", "accuracy"}
    assert len(history.history["loss"]) == 20
    assert history.history["loss"][-1] < history.history["loss"][0]
    loss, acc = model.evaluate(xte, yte, verbose=0)
    assert acc >= 0.95, acc
    pred_acc = ((model.predict(xte, verbose=0).ravel() > 0.5) == yte).mean()
    assert abs(pred_acc - acc) < 1e-6


# -- program 3: Input + softmax + validation_split, evaluate and predict
def test_program3_sequential_softmax(digits):
    xtr, xte, ytr, yte = digits
    model = maas.Sequential([Input((64,)), Dense(128, activation="relu"),
                             Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(xtr, ytr, epochs=20, validation_split=0.1, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 20 for v in history.history.values())
    loss, acc = model.evaluate(xte, yte, verbose=0)
    assert acc >= 0.96, acc
    p = model.predict(xte, verbose=0)
    assert isinstance(p, np.ndarray) and p.shape == (len(xte), 10)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert abs((p.argmax(1) == yte).mean() - acc) < 1e-6


# -- program 4: linear regression, logistic regression, linear SVM
def test_program4_linear_regression():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (1000, 1)).astype(np.float32)
    y = 2 * x + 1 + rng.normal(0, 0.1, (1000, 1)).astype(np.float32)
    model = maas.Sequential([Input((1,)), Dense(1)])
    model.compile(optimizer=maas.optimizers.SGD(learning_rate=0.01), loss="mse")
    model.fit(x, y, epochs=30, verbose=0)
    w, b = model.get_weights()
    assert abs(w.item() - 2) < 0.05 and abs(b.item() - 1) < 0.05, (w, b)


def test_program4_logistic_regression(cancer):
    xtr, xte, ytr, yte = cancer
    model = maas.Sequential([Dense(1, activation="sigmoid")])
    model.compile(optimizer=maas.optimizers.SGD(learning_rate=0.1), loss="binary_crossentropy",
                  metrics=["accuracy"])
    model.fit(xtr, ytr, epochs=30, verbose=0)
    _, acc = model.evaluate(xte, yte, verbose=0)
    assert acc >= 0.94, acc


def test_program4_linear_svm(cancer):
    xtr, xte, ytr, yte = cancer
    model = maas.Sequential([Dense(1, kernel_regularizer=maas.regularizers.L2(1e-3))])
    model.compile(optimizer=maas.optimizers.SGD(learning_rate=0.01), loss="hinge")
    model.fit(xtr, ytr, epochs=30, verbose=0)
    assert len(model.losses) == 1  # the kernel's L2 term is part of the loss
    acc = ((model.predict(xte, verbose=0).ravel() > 0) == yte).mean()
    assert acc >= 0.94, acc


# -- program 5: a functional model with a branch
def test_program5_functional_branch(digits):
    xtr, xte, ytr, yte = digits
    inputs = maas.Input((64,)); h = Dense(64, activation="relu")(inputs)
    out = Dense(10)(maas.layers.Add()([h, Dense(64)(inputs)]))
    model = maas.Model(inputs, out)
    model.compile(optimizer="adam", loss=maas.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(xtr, ytr, epochs=20, verbose=0)
    _, acc = model.evaluate(xte, yte, verbose=0)
    assert acc >= 0.95, acc


# -- fit details
def _mlp(n_in=64, n_out=10, act="softmax"):
    return maas.Sequential([Input((n_in,)), Dense(32, activation="relu"), Dense(n_out, activation=act)])


def test_same_seed_gives_identical_weights_and_history(digits):
    xtr, _, ytr, _ = digits

    def run():
        maas.utils.set_random_seed(42)
        model = maas.Sequential([Input((64,)), Dense(32, activation="relu"), Dropout(0.3),
                                 Dense(10, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        init = model.get_weights()
        h = model.fit(xtr[:300], ytr[:300], epochs=3, verbose=0, validation_split=0.2)
        return init, model.get_weights(), h.history

    a, b = run(), run()
    for wa, wb in zip(a[0] + a[1], b[0] + b[1]):
        assert np.array_equal(wa, wb)
    assert a[2] == b[2]
    maas.utils.set_random_seed(43)
    other = maas.Sequential([Input((64,)), Dense(32)]).get_weights()[0]
    assert not np.array_equal(other, a[0][0])


def test_validation_split_takes_the_last_rows_before_shuffling():
    x = np.zeros((100, 4), np.float32)
    y = np.zeros((100, 1), np.float32)
    y[90:] = 10.0   # only the last 10 rows have large labels
    model = maas.Sequential([Input((4,)), Dense(1, kernel_initializer="zeros")])
    model.compile(optimizer=maas.optimizers.SGD(0.0), loss="mse")
    h = model.fit(x, y, epochs=1, validation_split=0.1, verbose=0)
    assert h.history["loss"][0] == pytest.approx(0.0)
    assert h.history["val_loss"][0] == pytest.approx(100.0)


def test_validation_data_and_one_hot_labels(digits):
    xtr, xte, ytr, yte = digits
    model = _mlp()
    model.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    h = model.fit(xtr, maas.utils.to_categorical(ytr, 10), epochs=3, verbose=0,
                  validation_data=(xte, maas.utils.to_categorical(yte, 10)), batch_size=64)
    assert "val_accuracy" in h.history
    # Keras 3: model.metrics[1] is the compile_metrics container of the compiled metrics
    assert isinstance(model.metrics[1].metrics[0], maas.metrics.CategoricalAccuracy)


def test_inputs_as_lists_tensors_and_generators(digits):
    xtr, _, ytr, _ = digits
    model = _mlp()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(xtr[:64].tolist(), ytr[:64].tolist(), epochs=1, verbose=0)
    model.fit(maas.tensor(xtr[:64]), maas.tensor(ytr[:64].astype(np.float32)), epochs=1, verbose=0)

    def gen():
        for i in range(0, 256, 32):
            yield xtr[i:i + 32], ytr[i:i + 32]

    h = model.fit(gen(), epochs=1, verbose=0)
    assert len(h.history["loss"]) == 1
    batches = [(xtr[i:i + 32], ytr[i:i + 32]) for i in range(0, 128, 32)]
    h = model.fit(iter(batches), epochs=1, verbose=0)
    assert np.isfinite(h.history["loss"][0])
    assert model.evaluate(gen(), verbose=0)[1] > 0
    assert model.predict(gen(), verbose=0).shape == (256, 10)


def test_sample_weight_and_class_weight():
    x = np.array([[0.0], [1.0]], np.float32)
    y = np.array([[1.0], [3.0]], np.float32)
    model = maas.Sequential([Input((1,)), Dense(1, kernel_initializer="zeros")])
    model.compile(optimizer=maas.optimizers.SGD(0.0), loss="mse")
    # squared errors 1 and 9; weights 1 and 0 -> (1 * 1 + 9 * 0) / 2 (sum over batch size)
    assert model.evaluate(x, y, sample_weight=np.array([1.0, 0.0]), verbose=0) == pytest.approx(0.5)
    h = model.fit(x, y, sample_weight=np.array([0.0, 1.0]), epochs=1, verbose=0, shuffle=False)
    assert h.history["loss"][0] == pytest.approx(4.5)
    clf = maas.Sequential([Input((1,)), Dense(2, kernel_initializer="zeros")])
    clf.compile(optimizer=maas.optimizers.SGD(0.0), loss=maas.losses.SparseCategoricalCrossentropy(from_logits=True))
    h = clf.fit(x, np.array([0, 1]), class_weight={0: 0.0, 1: 2.0}, epochs=1, verbose=0)
    assert h.history["loss"][0] == pytest.approx(np.log(2.0) * 2.0 / 2)


def test_initial_epoch_and_steps_per_epoch(digits):
    xtr, _, ytr, _ = digits
    model = _mlp()
    model.compile("sgd", "sparse_categorical_crossentropy")
    h = model.fit(xtr, ytr, epochs=5, initial_epoch=3, verbose=0, steps_per_epoch=2)
    assert h.epoch == [3, 4]
    assert model.optimizer.iterations == 4


def test_batch_level_methods(digits):
    xtr, _, ytr, _ = digits
    model = _mlp()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    loss, acc = model.train_on_batch(xtr[:32], ytr[:32])
    assert np.isfinite(loss) and 0 <= acc <= 1
    logs = model.test_on_batch(xtr[:32], ytr[:32], return_dict=True)
    assert set(logs) == {"loss", "accuracy"}
    p = model.predict_on_batch(xtr[:5])
    assert p.shape == (5, 10)
    assert model.optimizer.iterations == 1


def test_frozen_layer_is_not_trained(digits):
    xtr, _, ytr, _ = digits
    model = _mlp()
    model.layers[0].trainable = False
    before = model.get_weights()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(xtr[:128], ytr[:128], epochs=1, verbose=0)
    after = model.get_weights()
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    assert not np.array_equal(before[2], after[2])
    assert len(model.trainable_weights) == 2 and len(model.non_trainable_weights) == 2


def test_multi_input_multi_output_functional(digits):
    xtr, _, ytr, _ = digits
    a, b = maas.Input((32,), name="left"), maas.Input((32,), name="right")
    h = maas.layers.Concatenate()([Dense(16, activation="relu")(a), Dense(16, activation="relu")(b)])
    cls = Dense(10, activation="softmax", name="digit")(h)
    reg = Dense(1, name="value")(h)
    model = maas.Model([a, b], [cls, reg])
    model.compile("adam", loss=["sparse_categorical_crossentropy", "mse"], loss_weights=[1.0, 0.1],
                  metrics=[["accuracy"], ["mae"]])
    target = ytr.astype(np.float32)[:, None]
    h = model.fit([xtr[:, :32], xtr[:, 32:]], [ytr, target], epochs=2, verbose=0)
    assert {"loss", "digit_loss", "value_loss", "digit_accuracy", "value_mae"} <= set(h.history)
    out = model.predict({"left": xtr[:4, :32], "right": xtr[:4, 32:]}, verbose=0)
    assert [o.shape for o in out] == [(4, 10), (4, 1)]


def test_progress_bar_updates_one_line(digits):
    xtr, _, ytr, _ = digits
    model = _mlp()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        model.fit(xtr[:320], ytr[:320], epochs=2, verbose=1)
    out = buf.getvalue()
    assert "Epoch 1/2" in out and "Epoch 2/2" in out
    final = [l for l in out.split("\n") if "10/10" in l]
    assert final and "\r" in out
    last = final[-1].split("\r")[-1]
    assert "━" in last and "/step" in last and "loss:" in last and "accuracy:" in last
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        model.fit(xtr[:320], ytr[:320], epochs=2, verbose=2)
    lines = [l for l in buf.getvalue().splitlines() if l.startswith("10/10")]
    assert len(lines) == 2 and "\r" not in buf.getvalue()


# -- errors that say what to do
def test_fit_before_compile():
    model = _mlp()
    # Keras raises a ValueError; maas's NotFittedError is one (and a RuntimeError, as before)
    with pytest.raises(ValueError, match=r"You must call `compile\(\)` before using the model "
                                         r"\(here, before calling `fit\(\)`\)"):
        model.fit(np.zeros((4, 64)), np.zeros(4))
    with pytest.raises(RuntimeError, match=r"before calling `evaluate\(\)`"):
        model.evaluate(np.zeros((4, 64)), np.zeros(4))


def test_unknown_loss_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown loss 'crossentropy'.*sparse_categorical_crossentropy"):
        _mlp().compile("adam", loss="crossentropy")


def test_labels_that_do_not_fit_the_loss(digits):
    xtr, _, ytr, _ = digits
    model = _mlp()
    model.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"look one-hot.*categorical_crossentropy"):
        model.fit(xtr[:10], maas.utils.to_categorical(ytr[:10], 10), verbose=0)
    model.compile("adam", "categorical_crossentropy")
    with pytest.raises(ValueError, match=r"sparse_categorical_crossentropy.*to_categorical"):
        model.fit(xtr[:10], ytr[:10], verbose=0)
    binary = _mlp(n_out=1, act="sigmoid")
    binary.compile("adam", "binary_crossentropy")
    with pytest.raises(ValueError, match=r"Labels of shape \(10, 10\) do not fit loss='binary_crossentropy'"):
        binary.fit(xtr[:10], maas.utils.to_categorical(ytr[:10], 10), verbose=0)


def test_x_and_y_of_different_lengths():
    model = _mlp()
    model.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"x sizes: 10 y sizes: 9.*same number of samples"):
        model.fit(np.zeros((10, 64)), np.zeros(9), verbose=0)


def test_wrong_input_width():
    model = _mlp()
    model.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"expected shape=\(None, 64\), found shape=\(2, 10\)"):
        model.fit(np.zeros((2, 10)), np.zeros(2), verbose=0)
    layer = Dense(3)
    layer(np.zeros((1, 5), np.float32))
    with pytest.raises(ValueError, match=r"expected axis -1 of input shape to have value 5, but "
                                         r"received input with shape \(1, 4\)"):
        layer(np.zeros((1, 4), np.float32))


def test_engine_plan_hook_runs_the_training_step(monkeypatch, digits):
    """fit() hands whole steps to maas.engine's plan when compile_plan returns one."""
    import sys
    import types

    xtr, _, ytr, _ = digits
    calls = {"train": 0, "predict": 0}

    class FakePlan:
        def __init__(self, model):
            self.model = model

        def train_step(self, x, y, sample_weight):
            calls["train"] += 1
            self._out = np.asarray(self.model(x))
            return 0.25

        def outputs(self):
            return self._out

        def predict(self, x):
            calls["predict"] += 1
            return np.asarray(self.model(x))

    engine = types.ModuleType("maas.engine")
    engine.compile_plan = lambda model: FakePlan(model)
    monkeypatch.setitem(sys.modules, "maas.engine", engine)
    monkeypatch.setattr(maas, "engine", engine, raising=False)
    model = _mlp()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    h = model.fit(xtr[:64], ytr[:64], epochs=2, verbose=0)
    assert calls["train"] == 4 and h.history["loss"] == [0.25, 0.25]
    assert model._compiled_train_fn is not None and model._compiled_predict_fn is not None
    model.predict(xtr[:40], verbose=0)
    assert calls["predict"] == 2
    # a plan that declines (None) leaves the eager step in place
    engine.compile_plan = lambda model: None
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(xtr[:64], ytr[:64], epochs=1, verbose=0)
    assert model._compiled_train_fn is None and calls["train"] == 4
