"""The plan path (one C call per training step) gives the eager path's
numbers: same kernels, same optimizer state."""
import numpy as np
import pytest

import maas
from maas.engine import Unsupported, build_plan

ACTS = {"relu": maas.ops.relu, "tanh": maas.ops.tanh, "sigmoid": maas.ops.sigmoid,
        "softmax": maas.ops.softmax, "linear": lambda x: x}


def make_mlp(rng, sizes):
    params = []
    for i, o in zip(sizes[:-1], sizes[1:]):
        params.append((maas.Variable(rng.normal(0, 0.3, (i, o))), maas.Variable(rng.normal(0, 0.1, o))))
    return params


def eager_step(params, acts, x, y, loss_fn, opt, sw=None, l2=0.0):
    variables = [v for p in params for v in p]
    with maas.GradientTape() as tape:
        h = x
        for (w, b), a in zip(params, acts):
            h = ACTS[a](maas.ops.dense(h, w, b))
        per = loss_fn(y, h)
        if sw is not None:
            per = per * sw
        loss = per.mean()
        for w, _ in params:
            if l2:
                loss = loss + l2 * maas.ops.square(w).sum()
    grads = tape.gradient(loss, variables)
    opt.apply_gradients(zip(grads, variables))
    return float(loss)


def clone(params):
    return [(maas.Variable(w.numpy()), maas.Variable(b.numpy())) for w, b in params]


CASES = [
    ("scce-logits-adam", ["relu", "relu", "linear"], "scce", lambda: maas.optimizers.Adam(1e-2)),
    ("cce-softmax-sgd-momentum", ["tanh", "softmax"], "cce", lambda: maas.optimizers.SGD(0.1, momentum=0.9, nesterov=True)),
    ("bce-sigmoid-rmsprop", ["relu", "sigmoid"], "bce", lambda: maas.optimizers.RMSprop(1e-2, momentum=0.5, centered=True)),
    ("mse-adamw-clipnorm", ["relu", "linear"], "mse", lambda: maas.optimizers.AdamW(1e-2, clipnorm=0.1)),
    ("mae-adam-amsgrad-globalclip", ["relu", "linear"], "mae", lambda: maas.optimizers.Adam(1e-2, amsgrad=True, global_clipnorm=0.5)),
]


@pytest.mark.parametrize("name,acts,loss,make_opt", CASES, ids=[c[0] for c in CASES])
def test_plan_matches_eager(name, acts, loss, make_opt):
    rng = np.random.default_rng(0)
    sizes = [8, 16, 12, 5][: len(acts) + 1]
    if len(acts) == 2:
        sizes = [8, 16, 1 if loss == "bce" else 5]
    params_e = make_mlp(rng, sizes)
    params_p = clone(params_e)
    n, out = 32, sizes[-1]
    x = rng.normal(size=(n, sizes[0])).astype(np.float32)
    if loss == "scce":
        y = rng.integers(0, out, n).astype(np.float32)
        fn = lambda t, p: maas.losses.sparse_categorical_crossentropy(t, p, from_logits=True)
        loss_obj = maas.losses.SparseCategoricalCrossentropy(from_logits=True)
    elif loss == "cce":
        y = np.eye(out, dtype=np.float32)[rng.integers(0, out, n)]
        fn, loss_obj = maas.losses.categorical_crossentropy, "categorical_crossentropy"
    elif loss == "bce":
        y = rng.integers(0, 2, (n, 1)).astype(np.float32)
        fn, loss_obj = maas.losses.binary_crossentropy, "binary_crossentropy"
    else:
        y = rng.normal(size=(n, out)).astype(np.float32)
        fn, loss_obj = getattr(maas.losses, loss), loss
    opt_e, opt_p = make_opt(), make_opt()
    steps = []
    for (w, b), a in zip(params_p, acts):
        steps += [("dense", w, b), ("activation", a)]
    plan = build_plan(sizes[0], steps, loss_obj, opt_p)
    for _ in range(4):
        le = eager_step(params_e, acts, x, y, fn, opt_e)
        lp = plan.train_step(x, y)
        assert lp == pytest.approx(le, rel=1e-5)
    for (we, be), (wp, bp) in zip(params_e, params_p):
        np.testing.assert_allclose(wp.numpy(), we.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bp.numpy(), be.numpy(), rtol=1e-5, atol=1e-6)
    assert opt_p.iterations == opt_e.iterations == 4
    # forward pass equals the eager forward
    h = x
    for (w, b), a in zip(params_p, acts):
        h = ACTS[a](maas.ops.dense(h, w, b))
    np.testing.assert_allclose(plan.predict(x, 7), h.numpy(), rtol=1e-6, atol=1e-6)


def test_plan_sample_weight_and_l2_match_eager():
    rng = np.random.default_rng(1)
    params_e = make_mlp(rng, [6, 10, 3])
    params_p = clone(params_e)
    x = rng.normal(size=(20, 6)).astype(np.float32)
    y = rng.integers(0, 3, 20).astype(np.float32)
    sw = rng.uniform(0.5, 2, 20).astype(np.float32)
    reg = maas_l2 = 0.01

    class L2:
        l2 = maas_l2

    opt_e, opt_p = maas.optimizers.SGD(0.05), maas.optimizers.SGD(0.05)
    steps = []
    for (w, b), a in zip(params_p, ["relu", "linear"]):
        steps += [("dense", w, b, True, L2(), None), ("activation", a)]
    plan = build_plan(6, steps, maas.losses.SparseCategoricalCrossentropy(from_logits=True), opt_p)
    fn = lambda t, p: maas.losses.sparse_categorical_crossentropy(t, p, from_logits=True)
    for _ in range(3):
        le = eager_step(params_e, ["relu", "linear"], x, y, fn, opt_e, sw=sw, l2=reg)
        lp = plan.train_step(x, y, sw)
        assert lp == pytest.approx(le, rel=1e-5)
    for (we, _), (wp, _) in zip(params_e, params_p):
        np.testing.assert_allclose(wp.numpy(), we.numpy(), rtol=1e-5, atol=1e-6)


def test_plan_dropout_is_seeded_and_off_in_predict():
    rng = np.random.default_rng(2)
    (w, b), = make_mlp(rng, [5, 4])
    x = rng.normal(size=(64, 5)).astype(np.float32)
    y = rng.normal(size=(64, 4)).astype(np.float32)
    results = []
    for _ in range(2):
        maas.random.set_seed(11)
        wc, bc = maas.Variable(w.numpy()), maas.Variable(b.numpy())
        plan = build_plan(5, [("dropout", 0.5), ("dense", wc, bc)], "mse", maas.optimizers.SGD(0.1))
        plan.train_step(x, y)
        results.append(wc.numpy().copy())
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_allclose(plan.predict(x), (maas.ops.dense(x, wc, bc)).numpy(), rtol=1e-6)


def test_frozen_dense_is_not_updated():
    rng = np.random.default_rng(3)
    (w1, b1), (w2, b2) = make_mlp(rng, [4, 6, 2])
    before = w1.numpy().copy()
    plan = build_plan(4, [("dense", w1, b1, False), ("activation", "relu"), ("dense", w2, b2)],
                      "mse", maas.optimizers.Adam(0.1))
    w2_before = w2.numpy().copy()
    plan.train_step(rng.normal(size=(8, 4)), rng.normal(size=(8, 2)))
    np.testing.assert_array_equal(w1.numpy(), before)
    assert not np.array_equal(w2.numpy(), w2_before)


def test_unsupported_parts_raise_unsupported():
    w, b = maas.Variable(np.ones((3, 2))), maas.Variable(np.zeros(2))
    with pytest.raises(Unsupported):
        build_plan(3, [("dense", w, b), ("activation", lambda x: x)], "mse", maas.optimizers.SGD())
    with pytest.raises(Unsupported):
        build_plan(3, [("dense", w, b)], maas.losses.MeanSquaredError(reduction="sum"), maas.optimizers.SGD())


def test_bad_batches_raise_clear_errors():
    w, b = maas.Variable(np.ones((3, 2))), maas.Variable(np.zeros(2))
    plan = build_plan(3, [("dense", w, b)], "mse", maas.optimizers.SGD())
    with pytest.raises(ValueError, match="x of shape \\(4, 5\\) does not fit"):
        plan.train_step(np.ones((4, 5)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="y of shape \\(3, 2\\) does not fit: expected 4 rows"):
        plan.train_step(np.ones((4, 3)), np.ones((3, 2)))
    assert plan.train_step(np.ones((4, 3)), np.ones((4, 2))) > 0  # still works afterwards


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data[:512] / 16.0).astype(np.float32), d.target[:512]


def _fit_weights(build, run_eagerly, **fit_kwargs):
    x, y = _digits()
    maas.utils.set_random_seed(5)
    model = build()
    model.compile(optimizer=maas.optimizers.Adam(1e-2), run_eagerly=run_eagerly,
                  loss=maas.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    hist = model.fit(x, y, batch_size=64, epochs=2, verbose=0, **fit_kwargs)
    return model, [w.copy() for w in model.get_weights()], hist.history


def _sequential():
    return maas.Sequential([maas.Input((64,)), maas.layers.Dense(32, activation="relu",
                                                                 kernel_regularizer=maas.regularizers.L2(1e-3)),
                            maas.layers.Dense(10)])


def _functional_chain():
    inp = maas.Input((64,))
    h = maas.layers.Dense(32, activation="tanh")(inp)
    return maas.Model(inp, maas.layers.Dense(10)(maas.layers.Flatten()(h)))


def _functional_branches():
    inp = maas.Input((64,))
    h = maas.layers.Dense(24, activation="relu")(inp)
    skip = maas.layers.Dense(24)(inp)
    added = maas.layers.Add()([h, skip])                          # fan-out of inp and a merge
    gated = maas.layers.Multiply()([added, maas.layers.Dense(24, activation="sigmoid")(h)])
    diff = maas.layers.Subtract()([gated, skip])
    joined = maas.layers.Concatenate()([diff, maas.layers.Activation("tanh")(added)])
    return maas.Model(inp, maas.layers.Dense(10)(joined))


@pytest.mark.parametrize("build", [_sequential, _functional_chain, _functional_branches],
                         ids=["sequential", "functional-chain", "functional-branches"])
def test_fit_runs_on_the_plan_and_matches_the_eager_path(build):
    planned, w_plan, h_plan = _fit_weights(build, False, sample_weight=np.linspace(0.5, 1.5, 512))
    eager, w_eager, h_eager = _fit_weights(build, True, sample_weight=np.linspace(0.5, 1.5, 512))
    assert planned._plan is not None and eager._plan is None
    for a, b in zip(w_plan, w_eager):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(h_plan["loss"], h_eager["loss"], rtol=1e-4)
    assert h_plan["accuracy"] == pytest.approx(h_eager["accuracy"], abs=1e-6)
    x, _ = _digits()
    np.testing.assert_allclose(planned.predict(x, verbose=0), eager.predict(x, verbose=0), rtol=1e-4, atol=1e-5)


def test_models_the_plan_cannot_run_train_eagerly():
    inp = maas.Input((64,))
    h = maas.layers.Dense(16, activation="relu")(inp)
    model = maas.Model(inp, [maas.layers.Dense(10)(h), maas.layers.Dense(10)(h)])
    model.compile(optimizer="adam", loss=[maas.losses.SparseCategoricalCrossentropy(from_logits=True)] * 2)
    x, y = _digits()
    hist = model.fit(x, [y, y], epochs=2, verbose=0)
    assert model._plan is None and len(hist.history["loss"]) == 2


def test_a_reshape_to_several_axes_is_not_treated_as_flat_rows():
    """Dense after Reshape((4, 16)) acts on the last axis: the plan (which
    sees flat rows) must leave such a model to the eager path."""
    model = maas.Sequential([maas.Input((64,)), maas.layers.Reshape((4, 16)), maas.layers.Dense(3),
                             maas.layers.Flatten(), maas.layers.Dense(10)])
    model.compile("sgd", maas.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _digits()
    model.fit(x, y, epochs=1, verbose=0)
    assert model._plan is None
    flat = maas.Sequential([maas.Input((64,)), maas.layers.Reshape((64,)), maas.layers.Dense(10)])
    flat.compile("sgd", maas.losses.SparseCategoricalCrossentropy(from_logits=True))
    flat.fit(x, y, epochs=1, verbose=0)
    assert flat._plan is not None
