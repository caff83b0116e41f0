"""maas.optimizers: 5 steps on random parameters and gradients, compared with
torch.optim where the formulas coincide and with a float64 NumPy
implementation of Keras's formula everywhere; gradient clipping; weight
decay; apply_gradients' handling of None, shapes and the caller's arrays.

Tolerances: parameters after 5 steps, rtol 1e-5 with atol 1e-6 (values are
O(1)); the displacement p - p0, rtol 1e-4 with atol 1e-6 (it is O(lr) and
float32 rounds p to ~6e-8).

Where torch's formula differs from Keras's:
* SGD momentum/nesterov: Keras keeps v = m v - lr g and torch b = m b + g, so
  v = -lr b while lr is constant: identical updates, compared directly.
* Adam/AdamW: Keras divides by sqrt(v) + eps, torch by sqrt(v)/sqrt(1-b2^t)
  + eps (after bias correction): the same when eps -> 0, so the torch
  comparison uses eps = 1e-10 on both sides (its effect is < 1e-6 of an
  update here); the NumPy reference uses Keras's default eps = 1e-7.
* RMSprop: Keras puts eps inside the square root, torch outside: the torch
  comparison uses eps = 0 on both sides; the NumPy reference uses 1e-7.
* AdamW: both decay p by lr * wd * p before the Adam step (decoupled).
* SGD weight_decay is decoupled in Keras but an L2 term in torch: NumPy only.
"""
from __future__ import annotations

import re
import zlib

import numpy as np
import pytest
import torch

import maas
from maas import optimizers

torch.set_num_threads(1)

RTOL, ATOL = 1e-5, 1e-6
DISP_RTOL, DISP_ATOL = 1e-4, 1e-6
SHAPES = [(3, 4), (5,), (2, 1, 3), (1,)]
STEPS = 5


def rng_for(name):
    return np.random.default_rng(zlib.crc32(name.encode()))


def draw(name):
    rng = rng_for(name)
    params = [rng.normal(size=s).astype(np.float32) for s in SHAPES]
    grads = [[rng.normal(size=s).astype(np.float32) for s in SHAPES] for _ in range(STEPS)]
    return params, grads


def run_maas(opt, params, grads):
    vs = [maas.Variable(p.copy(), name=f"v{i}") for i, p in enumerate(params)]
    for step in grads:
        opt.apply_gradients(list(zip([g.copy() for g in step], vs)))
    assert opt.iterations == len(grads)
    return [np.asarray(v).copy() for v in vs]


def run_torch(make, params, grads):
    ps = [torch.nn.Parameter(torch.tensor(p)) for p in params]
    opt = make(ps)
    for step in grads:
        for p, g in zip(ps, step):
            p.grad = torch.tensor(g)
        opt.step()
    return [p.detach().numpy().copy() for p in ps]


# ---- float64 NumPy implementations of Keras 3's update rules


def keras_sgd(params, grads, lr, momentum=0.0, nesterov=False, wd=0.0):
    ps = [p.astype(np.float64) for p in params]
    vel = [np.zeros_like(p) for p in ps]
    for step in grads:
        for i, g in enumerate(step):
            g = g.astype(np.float64)
            ps[i] = ps[i] - lr * wd * ps[i]
            if momentum:
                vel[i] = momentum * vel[i] - lr * g
                ps[i] = ps[i] + (momentum * vel[i] - lr * g if nesterov else vel[i])
            else:
                ps[i] = ps[i] - lr * g
    return ps


def keras_adam(params, grads, lr, b1=0.9, b2=0.999, eps=1e-7, amsgrad=False, wd=0.0):
    ps = [p.astype(np.float64) for p in params]
    m = [np.zeros_like(p) for p in ps]
    v = [np.zeros_like(p) for p in ps]
    vh = [np.zeros_like(p) for p in ps]
    for t, step in enumerate(grads, start=1):
        alpha = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        for i, g in enumerate(step):
            g = g.astype(np.float64)
            ps[i] = ps[i] - lr * wd * ps[i]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            vv = v[i]
            if amsgrad:
                vh[i] = np.maximum(vh[i], v[i])
                vv = vh[i]
            ps[i] = ps[i] - alpha * m[i] / (np.sqrt(vv) + eps)
    return ps


def keras_rmsprop(params, grads, lr, rho=0.9, momentum=0.0, eps=1e-7, centered=False, wd=0.0):
    ps = [p.astype(np.float64) for p in params]
    vel = [np.zeros_like(p) for p in ps]
    avg = [np.zeros_like(p) for p in ps]
    mom = [np.zeros_like(p) for p in ps]
    for step in grads:
        for i, g in enumerate(step):
            g = g.astype(np.float64)
            ps[i] = ps[i] - lr * wd * ps[i]
            vel[i] = rho * vel[i] + (1 - rho) * g * g
            if centered:
                avg[i] = rho * avg[i] + (1 - rho) * g
                d = vel[i] - avg[i] ** 2 + eps
            else:
                d = vel[i] + eps
            inc = lr * g / np.sqrt(d)
            if momentum > 0:
                mom[i] = momentum * mom[i] + inc
                ps[i] = ps[i] - mom[i]
            else:
                ps[i] = ps[i] - inc
    return ps


def assert_params(got, ref, p0, what):
    for i, (g, r, p) in enumerate(zip(got, ref, p0)):
        np.testing.assert_allclose(g, r, rtol=RTOL, atol=ATOL, err_msg=f"{what}: variable {i}")
        disp_ref = np.asarray(r, np.float64) - p
        np.testing.assert_allclose(g.astype(np.float64) - p, disp_ref, rtol=DISP_RTOL, atol=DISP_ATOL,
                                   err_msg=f"{what}: displacement of variable {i}")


# ---------------------------------------------------------------- vs NumPy (Keras formulas)

NUMPY_CASES = {
    "sgd": (lambda: optimizers.SGD(0.05), lambda p, g: keras_sgd(p, g, 0.05)),
    "sgd_momentum": (lambda: optimizers.SGD(0.05, momentum=0.9),
                     lambda p, g: keras_sgd(p, g, 0.05, 0.9)),
    "sgd_nesterov": (lambda: optimizers.SGD(0.05, momentum=0.8, nesterov=True),
                     lambda p, g: keras_sgd(p, g, 0.05, 0.8, True)),
    "sgd_weight_decay": (lambda: optimizers.SGD(0.05, momentum=0.9, weight_decay=0.1),
                         lambda p, g: keras_sgd(p, g, 0.05, 0.9, wd=0.1)),
    "adam": (lambda: optimizers.Adam(0.01), lambda p, g: keras_adam(p, g, 0.01)),
    "adam_betas": (lambda: optimizers.Adam(0.02, beta_1=0.5, beta_2=0.9, epsilon=1e-3),
                   lambda p, g: keras_adam(p, g, 0.02, 0.5, 0.9, 1e-3)),
    "adam_amsgrad": (lambda: optimizers.Adam(0.01, amsgrad=True),
                     lambda p, g: keras_adam(p, g, 0.01, amsgrad=True)),
    "adam_weight_decay": (lambda: optimizers.Adam(0.01, weight_decay=0.05),
                          lambda p, g: keras_adam(p, g, 0.01, wd=0.05)),
    "adamw": (lambda: optimizers.AdamW(0.01), lambda p, g: keras_adam(p, g, 0.01, wd=0.004)),
    "adamw_amsgrad": (lambda: optimizers.AdamW(0.01, weight_decay=0.1, amsgrad=True),
                      lambda p, g: keras_adam(p, g, 0.01, wd=0.1, amsgrad=True)),
    "rmsprop": (lambda: optimizers.RMSprop(0.01), lambda p, g: keras_rmsprop(p, g, 0.01)),
    "rmsprop_centered": (lambda: optimizers.RMSprop(0.01, centered=True),
                         lambda p, g: keras_rmsprop(p, g, 0.01, centered=True)),
    "rmsprop_momentum": (lambda: optimizers.RMSprop(0.01, momentum=0.9),
                         lambda p, g: keras_rmsprop(p, g, 0.01, momentum=0.9)),
    "rmsprop_centered_momentum": (lambda: optimizers.RMSprop(0.01, rho=0.8, momentum=0.5, centered=True),
                                  lambda p, g: keras_rmsprop(p, g, 0.01, 0.8, 0.5, centered=True)),
    "rmsprop_weight_decay": (lambda: optimizers.RMSprop(0.01, weight_decay=0.1),
                             lambda p, g: keras_rmsprop(p, g, 0.01, wd=0.1)),
}


@pytest.mark.parametrize("name", list(NUMPY_CASES))
def test_vs_numpy_keras_formula(name):
    make, ref = NUMPY_CASES[name]
    params, grads = draw(name)
    got = run_maas(make(), params, grads)
    assert_params(got, ref(params, grads), params, name)


# ---------------------------------------------------------------- vs torch.optim

TORCH_CASES = {
    "sgd": (lambda: optimizers.SGD(0.05), lambda ps: torch.optim.SGD(ps, lr=0.05)),
    "sgd_momentum": (lambda: optimizers.SGD(0.05, momentum=0.9),
                     lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)),
    "sgd_nesterov": (lambda: optimizers.SGD(0.05, momentum=0.8, nesterov=True),
                     lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True)),
    "adam": (lambda: optimizers.Adam(0.01, epsilon=1e-10),
             lambda ps: torch.optim.Adam(ps, lr=0.01, eps=1e-10)),
    "adam_betas": (lambda: optimizers.Adam(0.02, beta_1=0.5, beta_2=0.9, epsilon=1e-10),
                   lambda ps: torch.optim.Adam(ps, lr=0.02, betas=(0.5, 0.9), eps=1e-10)),
    "adam_amsgrad": (lambda: optimizers.Adam(0.01, epsilon=1e-10, amsgrad=True),
                     lambda ps: torch.optim.Adam(ps, lr=0.01, eps=1e-10, amsgrad=True)),
    "adamw": (lambda: optimizers.AdamW(0.01, weight_decay=0.1, epsilon=1e-10),
              lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1, eps=1e-10)),
    "adamw_amsgrad": (lambda: optimizers.AdamW(0.01, weight_decay=0.1, epsilon=1e-10, amsgrad=True),
                      lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1, eps=1e-10, amsgrad=True)),
    "rmsprop": (lambda: optimizers.RMSprop(0.01, epsilon=0.0),
                lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=0.0)),
    "rmsprop_centered": (lambda: optimizers.RMSprop(0.01, epsilon=0.0, centered=True),
                         lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=0.0, centered=True)),
    "rmsprop_momentum": (lambda: optimizers.RMSprop(0.01, epsilon=0.0, momentum=0.9),
                         lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=0.0, momentum=0.9)),
    "rmsprop_centered_momentum": (
        lambda: optimizers.RMSprop(0.01, rho=0.8, epsilon=0.0, momentum=0.5, centered=True),
        lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.8, eps=0.0, momentum=0.5, centered=True)),
}


@pytest.mark.parametrize("name", list(TORCH_CASES))
def test_vs_torch_optim(name):
    make, make_torch = TORCH_CASES[name]
    params, grads = draw("torch/" + name)
    got = run_maas(make(), params, grads)
    ref = run_torch(make_torch, params, grads)
    assert_params(got, ref, params, name)


def test_learning_rate_schedule_uses_iteration_before_the_step():
    params, grads = draw("schedule")
    opt = optimizers.SGD(learning_rate=lambda it: 0.1 / (1 + it))
    got = run_maas(opt, params, grads)
    ps = [p.astype(np.float64) for p in params]
    for t, step in enumerate(grads):
        ps = [p - 0.1 / (1 + t) * g for p, g in zip(ps, step)]
    assert_params(got, ps, params, "schedule")


def test_exclude_from_weight_decay():
    opt = optimizers.AdamW(0.01, weight_decay=0.5)
    a, b = maas.Variable(np.ones(3), name="dense/kernel"), maas.Variable(np.ones(3), name="dense/bias")
    opt.exclude_from_weight_decay(var_names=["bias"])
    g = np.zeros(3, np.float32)
    opt.apply_gradients([(g, a), (g, b)])
    np.testing.assert_allclose(np.asarray(a), 1 - 0.01 * 0.5, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(b), np.ones(3))


# ---------------------------------------------------------------- clipping


def clip_ref(kind, value, grads):
    g64 = [g.astype(np.float64) for g in grads]
    if kind == "clipvalue":
        return [np.clip(g, -value, value) for g in g64]
    if kind == "clipnorm":
        return [g * value / max(np.linalg.norm(g), value) for g in g64]
    norm = np.sqrt(sum(np.sum(g * g) for g in g64))
    return [g * value / max(norm, value) for g in g64]


@pytest.mark.parametrize("kind,value", [("clipvalue", 0.5), ("clipnorm", 1.0), ("clipnorm", 100.0),
                                        ("global_clipnorm", 2.0), ("global_clipnorm", 100.0)])
@pytest.mark.parametrize("as_tensor", [False, True], ids=["ndarray_grads", "tensor_grads"])
def test_clipping(kind, value, as_tensor):
    params, grads = draw("clip")
    grads = [[g * 2 for g in step] for step in grads]  # norms ~ 4-10: clipping is active
    originals = [[g.copy() for g in step] for step in grads]
    opt = optimizers.SGD(0.1, **{kind: value})
    vs = [maas.Variable(p.copy()) for p in params]
    for step in grads:
        gs = [maas.tensor(g) if as_tensor else g for g in step]  # float32: wrapped, not copied
        opt.apply_gradients(list(zip(gs, vs)))
    ps = [p.astype(np.float64) for p in params]
    for step in grads:
        ps = [p - 0.1 * g for p, g in zip(ps, clip_ref(kind, value, step))]
    assert_params([np.asarray(v) for v in vs], ps, params, kind)
    # the caller's gradient arrays are not modified by clipping
    for step, orig in zip(grads, originals):
        for g, o in zip(step, orig):
            np.testing.assert_array_equal(g, o)


def test_clipping_with_adam_and_momentum():
    params, grads = draw("clip_adam")
    grads = [[g * 3 for g in step] for step in grads]
    got = run_maas(optimizers.Adam(0.01, global_clipnorm=1.5), params, grads)
    ref = keras_adam(params, [clip_ref("global_clipnorm", 1.5, s) for s in grads], 0.01)
    assert_params(got, ref, params, "adam+global_clipnorm")
    got = run_maas(optimizers.SGD(0.01, momentum=0.9, clipnorm=0.7), params, grads)
    ref = keras_sgd(params, [clip_ref("clipnorm", 0.7, s) for s in grads], 0.01, 0.9)
    assert_params(got, ref, params, "sgd momentum+clipnorm")


def test_clipping_arguments_validated():
    with pytest.raises(ValueError, match="only one of clipnorm, clipvalue and global_clipnorm can be set"):
        optimizers.SGD(clipnorm=1.0, clipvalue=1.0)
    with pytest.raises(ValueError, match="clipnorm must be positive, received clipnorm=0"):
        optimizers.Adam(clipnorm=0)
    with pytest.raises(ValueError, match="global_clipnorm must be positive"):
        optimizers.RMSprop(global_clipnorm=-1.0)


# ---------------------------------------------------------------- apply_gradients


def test_apply_gradients_skips_none():
    a = maas.Variable(np.ones((2, 2)), name="a")
    b = maas.Variable(np.ones(3), name="b")
    for opt in (optimizers.SGD(0.1, momentum=0.9), optimizers.Adam(0.1), optimizers.RMSprop(0.1)):
        a0, b0 = np.asarray(a).copy(), np.asarray(b).copy()
        opt.apply_gradients([(None, a), (np.ones(3, np.float32), b)])
        np.testing.assert_array_equal(np.asarray(a), a0)
        assert not np.array_equal(np.asarray(b), b0)
        assert opt.iterations == 1
        assert all(v.shape == (3,) for v in opt.variables)  # no slots for `a`
        opt.apply_gradients([(None, a), (None, b)])  # all None: nothing happens
        assert opt.iterations == 1


def test_apply_gradients_does_not_modify_gradients_without_clipping():
    g = np.full(3, 0.5, np.float32)
    t = maas.tensor(np.full(3, 0.25, np.float32))
    for opt in (optimizers.SGD(0.1, momentum=0.9), optimizers.Adam(0.1), optimizers.RMSprop(0.1, centered=True)):
        opt.apply_gradients([(g, maas.Variable(np.ones(3))), (t, maas.Variable(np.ones(3)))])
    np.testing.assert_array_equal(g, np.full(3, 0.5))
    np.testing.assert_array_equal(np.asarray(t), np.full(3, 0.25))


@pytest.mark.parametrize("opt,name", [(optimizers.SGD(0.1), "sgd"),
                                      (optimizers.SGD(0.1, momentum=0.5), "sgd"),
                                      (optimizers.Adam(), "adam"), (optimizers.AdamW(), "adam"),
                                      (optimizers.RMSprop(), "rmsprop")])
def test_shape_mismatch_raises(opt, name):
    v = maas.Variable(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=re.escape(
            f"{name}: gradient shape (4,) does not match variable shape (2, 2)")):
        opt.apply_gradients([(np.zeros(4, np.float32), v)])
    np.testing.assert_array_equal(np.asarray(v), np.zeros((2, 2)))


def test_apply_argument_errors():
    opt = optimizers.SGD()
    with pytest.raises(ValueError, match="apply: got 1 gradients for 2 variables"):
        opt.apply([np.zeros(2)], [maas.Variable(np.zeros(2)), maas.Variable(np.zeros(2))])
    with pytest.raises(TypeError, match="variables must be maas Variables, got ndarray"):
        opt.apply_gradients([(np.zeros(2), np.zeros(2))])
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\], received momentum=1.5"):
        optimizers.SGD(momentum=1.5)
    with pytest.raises(ValueError, match="learning_rate must be a non-negative number or a schedule"):
        optimizers.Adam(learning_rate=-1)
    with pytest.raises(ValueError, match="AdamW needs a weight_decay"):
        optimizers.AdamW(weight_decay=None)


def test_get():
    for name, cls in [("adam", optimizers.Adam), ("Adam", optimizers.Adam), ("sgd", optimizers.SGD),
                      ("SGD", optimizers.SGD), ("rmsprop", optimizers.RMSprop),
                      ("adamw", optimizers.AdamW)]:
        assert type(optimizers.get(name)) is cls
    opt = optimizers.Adam(0.5)
    assert optimizers.get(opt) is opt
    cfg = optimizers.get({"class_name": "RMSprop", "config": {"learning_rate": 0.25, "centered": True}})
    assert isinstance(cfg, optimizers.RMSprop) and cfg.centered and cfg.learning_rate == 0.25
    rt = optimizers.get({"class_name": "Adam", "config": opt.get_config()})
    assert rt.get_config() == opt.get_config()
    assert optimizers.get("adam").epsilon == 1e-7  # Keras's default
    with pytest.raises(ValueError, match="unknown optimizer 'adagrad'; valid names are: sgd, adam, adamw, rmsprop"):
        optimizers.get("adagrad")
