"""The plan path (maas.engine): one traced step of the model's own call(),
frozen and replayed as one C call, gives the eager path's bits, for every
kind of model; what a trace cannot stand for falls back to eager, saying why.
"""
import threading
import warnings

import numpy as np
import pytest

import maas
from maas import _core
from maas.engine import CompiledPlan, trace

L = maas.layers


def digits(n=300):
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data[:n] / 16).astype(np.float32), d.target[:n].astype(np.float32)


def fit_both(build, compile_kwargs, x, y, epochs=2, batch_size=64, **fit_kwargs):
    """Trains the same seeded model on the plan path and on the eager path;
    returns both models and histories. compile_kwargs is a function giving
    fresh arguments (an optimizer holds state)."""
    out = []
    for eager in (False, True):
        maas.utils.set_random_seed(7)
        model = build()
        model.compile(run_eagerly=eager, **compile_kwargs())
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no silent fallback to eager on the plan side
            h = model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True,
                          **fit_kwargs)
        out.append((model, h.history))
    (mp, hp), (me, he) = out
    return mp, hp, me, he


def assert_same_bits(mp, hp, me, he):
    assert isinstance(mp._plan, CompiledPlan) and mp._plan.traced_shapes() >= 1
    assert mp._plan.eager_reason is None
    assert me._plan is None
    assert hp == he
    for a, b in zip(mp.get_weights(), me.get_weights()):
        np.testing.assert_array_equal(a, b)


def mlp(dropout=0.0, reg=None):
    return lambda: maas.Sequential([
        maas.Input((64,)), L.Dense(32, activation="relu", kernel_regularizer=reg),
        L.Dropout(dropout), L.Dense(16, activation="tanh"), L.Dense(10, activation="softmax")])


OPTIMIZERS = {
    "adam": lambda: maas.optimizers.Adam(1e-2),
    "adam-amsgrad-globalclip": lambda: maas.optimizers.Adam(1e-2, amsgrad=True, global_clipnorm=0.5),
    "adamw-clipnorm": lambda: maas.optimizers.AdamW(1e-2, clipnorm=0.1),
    "sgd-nesterov": lambda: maas.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
    "sgd-clipvalue": lambda: maas.optimizers.SGD(0.1, clipvalue=0.01),
    "rmsprop-centered": lambda: maas.optimizers.RMSprop(1e-2, momentum=0.5, centered=True),
}


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_sequential_plan_gives_eager_bits(opt):
    x, y = digits()
    res = fit_both(mlp(), lambda: dict(optimizer=OPTIMIZERS[opt](), loss="sparse_categorical_crossentropy",
                               metrics=["accuracy"]), x, y)
    assert_same_bits(*res)
    # 300 rows in batches of 64: the last batch (44 rows) has a plan of its own
    assert res[0]._plan.traced_shapes() == 2


def test_dropout_regularizers_and_sample_weights_give_eager_bits():
    x, y = digits()
    sw = np.random.default_rng(0).random(len(x)).astype(np.float32)
    res = fit_both(mlp(dropout=0.3, reg=maas.regularizers.L2(1e-3)),
                   lambda: dict(optimizer="adam", loss="sparse_categorical_crossentropy"), x, y,
                   sample_weight=sw)
    assert_same_bits(*res)
    assert res[0]._plan._train[next(iter(res[0]._plan._train))].plan.num_random == 1


def test_a_layer_used_twice_is_one_parameter_whose_gradients_add():
    # d(d(inp)) with Adam: the old plan updated the shared kernel twice per step
    def build():
        inp = maas.Input((8,))
        d = L.Dense(8, activation="tanh")
        return maas.Model(inp, L.Dense(1)(d(d(inp))))

    rng = np.random.default_rng(1)
    x = rng.normal(size=(96, 8)).astype(np.float32)
    y = rng.normal(size=(96, 1)).astype(np.float32)
    res = fit_both(build, lambda: dict(optimizer="adam", loss="mse"), x, y, epochs=3, batch_size=32)
    assert_same_bits(*res)
    mp = res[0]
    assert len(mp.trainable_variables) == 4


def test_functional_two_inputs_two_outputs_with_loss_weights():
    def build():
        a, b = maas.Input((64,), name="a"), maas.Input((5,), name="b")
        h = L.Concatenate()([L.Dense(16, activation="relu")(a), b])
        return maas.Model([a, b], [L.Dense(10, activation="softmax", name="cls")(h),
                                   L.Dense(1, name="reg")(h)])

    x, y = digits()
    rng = np.random.default_rng(2)
    xb = rng.normal(size=(len(x), 5)).astype(np.float32)
    yr = rng.normal(size=(len(x), 1)).astype(np.float32)
    res = fit_both(build, lambda: dict(optimizer="adam", loss=["sparse_categorical_crossentropy", "mse"],
                               loss_weights=[1.0, 0.5]), [x, xb], [y, yr])
    assert_same_bits(*res)


class Residual(L.Layer):
    """A custom layer written against maas.ops only (no compute_output_shape
    needed by the plan)."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], input_shape[-1]), initializer="glorot_uniform")

    def call(self, x):
        return x + maas.ops.tanh(maas.ops.matmul(x, self.w))

    def compute_output_shape(self, input_shape):
        return input_shape


class Subclassed(maas.Model):
    def __init__(self):
        super().__init__()
        self.d1 = L.Dense(24, activation="relu")
        self.res = Residual()
        self.drop = L.Dropout(0.2, seed=3)
        self.out = L.Dense(10)

    def call(self, x, training=False):
        h = self.drop(self.res(self.d1(x)), training=training)
        return self.out(h) * 0.5 + self.out(h * 0.5) * 0.5   # self.out used twice


def test_subclassed_model_with_custom_layer_and_seeded_dropout():
    x, y = digits()
    res = fit_both(Subclassed, lambda: dict(optimizer="rmsprop", loss=maas.losses.SparseCategoricalCrossentropy(
        from_logits=True), metrics=["accuracy"]), x, y)
    assert_same_bits(*res)


class ReadsAValue(maas.Model):
    def __init__(self):
        super().__init__()
        self.d = L.Dense(10)

    def call(self, x, training=False):
        h = self.d(x)
        if float(h.mean()) > 1e9:      # Python branches on a value: not traceable
            h = h * 0.0
        return h


def test_value_dependent_call_falls_back_to_eager_with_a_warning():
    x, y = digits(128)
    maas.utils.set_random_seed(0)
    m = ReadsAValue()
    m.compile(optimizer="sgd", loss=maas.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.warns(RuntimeWarning, match=r"eager path .* reads a tensor's value into Python"):
        h = m.fit(x, y, epochs=2, batch_size=64, verbose=0)
    assert "float()" in m._plan.eager_reason
    maas.utils.set_random_seed(0)
    e = ReadsAValue()
    e.compile(optimizer="sgd", loss=maas.losses.SparseCategoricalCrossentropy(from_logits=True),
              run_eagerly=True)
    he = e.fit(x, y, epochs=2, batch_size=64, verbose=0)
    assert h.history == he.history
    for a, b in zip(m.get_weights(), e.get_weights()):
        np.testing.assert_array_equal(a, b)


class HalfSGD(maas.optimizers.SGD):
    """An optimizer whose update the plan does not know: the plan computes the
    gradients in C and the optimizer applies them in Python."""

    def update_step(self, g, v, lr):
        super().update_step(g, v, lr * 0.5)


def test_unknown_optimizer_updates_from_the_plans_gradients():
    x, y = digits()
    res = fit_both(mlp(), lambda: dict(optimizer=HalfSGD(0.2), loss="sparse_categorical_crossentropy"), x, y)
    assert_same_bits(*res)
    assert next(iter(res[0]._plan._train.values())).fused is None


def test_predict_replays_a_traced_forward_and_returns_copies():
    x, y = digits()
    maas.utils.set_random_seed(0)
    m = mlp(dropout=0.5)()
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    m.fit(x, y, epochs=1, verbose=0)
    eager = np.asarray(m(x[:50], training=False))
    first = m.predict(x[:50], batch_size=50, verbose=0)   # traced
    second = m.predict(x[:50], batch_size=50, verbose=0)  # replayed
    np.testing.assert_array_equal(first, eager)
    np.testing.assert_array_equal(second, eager)
    other = m.predict(x[50:100], batch_size=50, verbose=0)
    assert not np.array_equal(other, first)                 # the earlier result was a copy
    np.testing.assert_array_equal(first, eager)


def test_loading_weights_into_new_memory_retraces():
    x, y = digits()
    maas.utils.set_random_seed(0)
    m = mlp()()
    m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    m.fit(x, y, epochs=1, batch_size=100, verbose=0)
    w = m.get_weights()
    for v in m.trainable_variables:   # give each variable new memory, as loading a file does
        _core.share_memory(v, maas.tensor(np.zeros(v.shape, np.float32)))
    m.set_weights(w)
    before = _core.core_ids(m.trainable_variables)
    m.fit(x, y, epochs=1, batch_size=100, verbose=0)
    assert all(np.isfinite(a).all() for a in m.get_weights())
    tr = next(iter(m._plan._train.values()))
    assert tr.storage == before


# ---------------------------------------------------------------- the C plan

def traced_mlp(n=4):
    w = maas.Variable(np.random.default_rng(0).normal(size=(3, 2)))
    x = maas.tensor(np.ones((n, 3), np.float32))
    with trace([x]) as t:
        out = maas.ops.relu(maas.ops.dense(x, w))
        loss = (out * out).mean()
    return t, x, w, out, loss


def test_plan_run_checks_its_arguments():
    t, x, w, out, loss = traced_mlp()
    plan = _core.Plan(t.tape, [x], [out], loss, [w])
    with pytest.raises(ValueError, match=r"data\[0\] must have shape \(4, 3\)"):
        plan.run([np.ones((5, 3), np.float32)])
    with pytest.raises(ValueError, match=r"data\[0\] must have shape"):
        plan.run([1.0])                      # a 0-d x (segfaulted in the old plan)
    with pytest.raises(ValueError, match="expected 1 arrays, one per input, got 2"):
        plan.run([x, x])
    with pytest.raises(RuntimeError, match="set the optimizer first"):
        plan.run([np.ones((4, 3), np.float32)], None, 0.1, 1, True)
    with pytest.raises(ValueError, match="expected 3 slots and 1 decay flags"):
        plan.set_optimizer(_core.OPT_SGD, [None], [False])
    with pytest.raises(ValueError, match="optimizer slot shape \\(2,\\) does not match parameter shape \\(3, 2\\)"):
        plan.set_optimizer(_core.OPT_SGD, [maas.Variable(np.zeros(2)), None, None], [False])
    plan.set_optimizer(_core.OPT_SGD, [None, None, None], [False])  # still usable after errors
    assert plan.run([np.ones((4, 3), np.float32)], None, 0.1, 1, True) == pytest.approx(float(loss))


def test_plan_refuses_placeholders_that_the_trace_computes():
    t, x, w, out, loss = traced_mlp()
    with pytest.raises(ValueError, match="input 0 is computed by the trace"):
        _core.Plan(t.tape, [out], [out], None, [])


def test_plan_forward_matches_the_traced_values_for_new_data():
    t, x, w, out, loss = traced_mlp()
    plan = _core.Plan(t.tape, [x], [out], loss, [w])
    new = np.random.default_rng(3).normal(size=(4, 3)).astype(np.float32)
    got = plan.run([new])
    np.testing.assert_array_equal(plan.outputs()[0], np.maximum(new @ np.asarray(w), 0))
    assert got == pytest.approx(float((np.maximum(new @ np.asarray(w), 0) ** 2).mean()), rel=1e-6)
    plan.backward()
    expect = new.T @ (2 * np.maximum(new @ np.asarray(w), 0) / out.size)
    np.testing.assert_allclose(plan.grads()[0].numpy(), expect, rtol=1e-5)


def test_a_plan_runs_one_step_at_a_time():
    """A second thread gets RuntimeError while a step runs without the GIL
    (the old plan freed buffers under a running step)."""
    rng = np.random.default_rng(0)
    w = maas.Variable(rng.normal(size=(600, 600)) * 0.01)
    x = maas.tensor(rng.normal(size=(600, 600)).astype(np.float32))
    with trace([x]) as t:
        h = x
        for _ in range(6):
            h = maas.ops.tanh(maas.ops.matmul(h, w))
        loss = h.mean()
    plan = _core.Plan(t.tape, [x], [h], loss, [w])
    plan.set_optimizer(_core.OPT_SGD, [None, None, None], [False])
    errors, done = [], threading.Event()

    def runner():
        for _ in range(10):
            plan.run([np.asarray(x)], None, 0.01, 1, True)
        done.set()

    th = threading.Thread(target=runner)
    th.start()
    while not done.is_set():
        try:
            plan.grads()
        except RuntimeError as e:
            errors.append(str(e))
    th.join()
    assert errors and "running on another thread" in errors[0]


def test_a_tape_refuses_release_while_gradient_runs_on_another_thread():
    rng = np.random.default_rng(0)
    w = maas.Variable(rng.normal(size=(700, 700)) * 0.01)
    with maas.GradientTape(persistent=True) as tape:
        h = maas.tensor(rng.normal(size=(700, 700)).astype(np.float32))
        for _ in range(8):
            h = maas.ops.tanh(maas.ops.matmul(h, w))
        loss = h.mean()
    expect = tape.gradient(loss, w).numpy()
    got, errors, done = [], [], threading.Event()

    def runner():
        for _ in range(5):
            got.append(tape.gradient(loss, w).numpy())
        done.set()

    th = threading.Thread(target=runner)
    th.start()
    while not done.is_set():
        try:
            tape._tape.watch(w)
        except RuntimeError as e:
            errors.append(str(e))
    th.join()
    assert errors and "computing gradients on another thread" in errors[0]
    for g in got:
        np.testing.assert_array_equal(g, expect)


def test_op_table_lists_every_op_with_its_attributes():
    table = _core.op_table()
    assert len(table) == _core.OP_COUNT
    names = [row[0] for row in table]
    assert names[_core.OP_DENSE] == "dense" and names[_core.OP_DROPOUT] == "dropout"
    assert table[_core.OP_SOFTMAX][3] == ("axis", "log")
    # the generic entry runs any op by id
    x = np.array([[1.0, -2.0]], np.float32)
    np.testing.assert_array_equal(_core.op(_core.OP_UNARY, [x], _core.U_RELU, 0.0).numpy(), [[1, 0]])
    with pytest.raises(ValueError, match="unary: takes 1 to 1 inputs, got 2"):
        _core.op(_core.OP_UNARY, [x, x], _core.U_RELU)
    with pytest.raises(TypeError, match="unary: takes 2 attributes, got 3"):
        _core.op(_core.OP_UNARY, [x], 0, 0.0, 1)


def test_take_gradient_uses_integer_row_indices_past_float_precision():
    """Gathered row indices were stored as float: above 2**24 the gradient
    landed on the wrong row. Indices now stay int64 end to end."""
    n = 2 ** 24 + 3
    x = maas.Variable(np.zeros((n, 1), np.float32))
    with maas.GradientTape() as tape:
        y = x[[n - 1, n - 2]] * maas.tensor(np.array([[1.0], [2.0]], np.float32))
        loss = y.sum()
    g = tape.gradient(loss, x).numpy()
    assert g[n - 1, 0] == 1.0 and g[n - 2, 0] == 2.0 and g.sum() == 3.0


@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy", "binary_crossentropy"])
def test_integer_labels_are_replayed_not_frozen(loss):
    """int64 labels reach the plan as they are (SCCE reads them, BCE casts
    them with a recorded cast node): each replay sees its own batch's labels,
    and the plan gives eager's bits."""
    x, y = digits()
    if loss == "binary_crossentropy":
        y = (y > 4)[:, None]
        build = lambda: maas.Sequential([maas.Input((64,)), L.Dense(8, activation="relu"),
                                         L.Dense(1, activation="sigmoid")])
    else:
        build = mlp()
    res = fit_both(build, lambda: dict(optimizer="adam", loss=loss), x, y.astype(np.int64))
    assert_same_bits(*res)
    tr = next(iter(res[0]._plan._train.values()))
    assert tr.plan.num_nodes > 3
