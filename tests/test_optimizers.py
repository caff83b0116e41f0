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
* Adagrad: Keras divides by sqrt(acc + eps), torch by sqrt(acc) + eps: the
  torch comparison uses eps = 0 on both sides (initial_accumulator_value 0.1
  on both); the NumPy reference pins the placement with a large eps.
* Adadelta: the same formula as torch (eps inside both roots).
* Adamax: Keras divides by (u + eps), torch folds eps into u = max(b2 u,
  |g| + eps): eps = 0 on both sides for torch, NumPy with a large eps.
* Nadam: Keras's momentum schedule u_t = b1 (1 - 0.5 * 0.96^t) is torch's
  NAdam with momentum_decay=1 (torch's default 0.004 is another schedule);
  decoupled weight decay is torch's decoupled_weight_decay=True.
* Lion, Ftrl: not in torch.optim; NumPy references written from Keras's
  source.
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
    with pytest.raises(ValueError, match="unknown optimizer 'adafactor'; valid names are: sgd, adam, "
                                         "adamw, rmsprop, adagrad, adadelta, adamax, nadam, lion, ftrl"):
        optimizers.get("adafactor")



# ---------------------------------------------------------------- Adagrad, Adadelta, Adamax,
# ---------------------------------------------------------------- Nadam, Lion, Ftrl


def keras_adagrad(params, grads, lr, init=0.1, eps=1e-7, wd=0.0):
    ps = [p.astype(np.float64) for p in params]
    acc = [np.full_like(p, init) for p in ps]
    for step in grads:
        for i, g in enumerate(step):
            g = g.astype(np.float64)
            ps[i] = ps[i] - lr * wd * ps[i]
            acc[i] = acc[i] + g * g
            ps[i] = ps[i] - lr * g / np.sqrt(acc[i] + eps)
    return ps


def keras_adadelta(params, grads, lr, rho=0.95, eps=1e-7, wd=0.0):
    ps = [p.astype(np.float64) for p in params]
    ag = [np.zeros_like(p) for p in ps]
    ad = [np.zeros_like(p) for p in ps]
    for step in grads:
        for i, g in enumerate(step):
            g = g.astype(np.float64)
            ps[i] = ps[i] - lr * wd * ps[i]
            ag[i] = rho * ag[i] + (1 - rho) * g * g
            d = -np.sqrt(ad[i] + eps) / np.sqrt(ag[i] + eps) * g
            ad[i] = rho * ad[i] + (1 - rho) * d * d
            ps[i] = ps[i] + lr * d
    return ps


def keras_adamax(params, grads, lr, b1=0.9, b2=0.999, eps=1e-7, wd=0.0):
    ps = [p.astype(np.float64) for p in params]
    m = [np.zeros_like(p) for p in ps]
    u = [np.zeros_like(p) for p in ps]
    for t, step in enumerate(grads, start=1):
        for i, g in enumerate(step):
            g = g.astype(np.float64)
            ps[i] = ps[i] - lr * wd * ps[i]
            m[i] = m[i] + (g - m[i]) * (1 - b1)
            u[i] = np.maximum(b2 * u[i], np.abs(g))
            ps[i] = ps[i] - lr * m[i] / ((1 - b1 ** t) * (u[i] + eps))
    return ps


def keras_nadam(params, grads, lr, b1=0.9, b2=0.999, eps=1e-7, wd=0.0):
    """Keras 3's Nadam.update_step, with its u_product variable updated once
    per step before the variables (Nadam._backend_update_step)."""
    ps = [p.astype(np.float64) for p in params]
    m = [np.zeros_like(p) for p in ps]
    v = [np.zeros_like(p) for p in ps]
    u_product = 1.0
    for t, step in enumerate(grads, start=1):
        u_product *= b1 * (1.0 - 0.5 * 0.96 ** t)
        u_t = b1 * (1.0 - 0.5 * 0.96 ** t)
        u_t_1 = b1 * (1.0 - 0.5 * 0.96 ** (t + 1))
        u_product_t_1 = u_product * u_t_1
        for i, g in enumerate(step):
            g = g.astype(np.float64)
            ps[i] = ps[i] - lr * wd * ps[i]
            m[i] = m[i] + (g - m[i]) * (1 - b1)
            v[i] = v[i] + (g * g - v[i]) * (1 - b2)
            m_hat = u_t_1 * m[i] / (1 - u_product_t_1) + (1 - u_t) * g / (1 - u_product)
            v_hat = v[i] / (1 - b2 ** t)
            ps[i] = ps[i] - m_hat * lr / (np.sqrt(v_hat) + eps)
    return ps


def keras_lion(params, grads, lr, b1=0.9, b2=0.99, wd=0.0):
    ps = [p.astype(np.float64) for p in params]
    m = [np.zeros_like(p) for p in ps]
    for step in grads:
        for i, g in enumerate(step):
            g = g.astype(np.float64)
            ps[i] = ps[i] - lr * wd * ps[i]
            ps[i] = ps[i] - lr * np.sign(m[i] * b1 + g * (1 - b1))
            m[i] = m[i] * b2 + g * (1 - b2)
    return ps


def keras_ftrl(params, grads, lr, lr_power=-0.5, init=0.1, l1=0.0, l2=0.0, l2s=0.0, beta=0.0, wd=0.0):
    ps = [p.astype(np.float64) for p in params]
    acc = [np.full_like(p, init) for p in ps]
    lin = [np.zeros_like(p) for p in ps]
    for step in grads:
        for i, g in enumerate(step):
            g = g.astype(np.float64)
            ps[i] = ps[i] - lr * wd * ps[i]
            l2_reg = l2 + beta / (2.0 * lr)
            grad_to_use = g + 2 * l2s * ps[i]
            new_acc = acc[i] + g * g
            lin[i] = lin[i] + grad_to_use - (new_acc ** -lr_power - acc[i] ** -lr_power) / lr * ps[i]
            quadratic = new_acc ** -lr_power / lr + 2 * l2_reg
            ps[i] = (np.clip(lin[i], -l1, l1) - lin[i]) / quadratic
            acc[i] = new_acc
    return ps


NEW_NUMPY_CASES = {
    "adagrad": (lambda: optimizers.Adagrad(0.05), lambda p, g: keras_adagrad(p, g, 0.05)),
    # a large epsilon: sqrt(acc + eps) and sqrt(acc) + eps differ by ~10% here
    "adagrad_eps_inside_root": (lambda: optimizers.Adagrad(0.05, initial_accumulator_value=0.0, epsilon=0.3),
                                lambda p, g: keras_adagrad(p, g, 0.05, init=0.0, eps=0.3)),
    "adagrad_weight_decay": (lambda: optimizers.Adagrad(0.05, initial_accumulator_value=1.0, weight_decay=0.2),
                             lambda p, g: keras_adagrad(p, g, 0.05, init=1.0, wd=0.2)),
    "adadelta": (lambda: optimizers.Adadelta(1.0), lambda p, g: keras_adadelta(p, g, 1.0)),
    "adadelta_rho_eps": (lambda: optimizers.Adadelta(0.5, rho=0.7, epsilon=1e-3),
                         lambda p, g: keras_adadelta(p, g, 0.5, 0.7, 1e-3)),
    "adadelta_weight_decay": (lambda: optimizers.Adadelta(1.0, weight_decay=0.1),
                              lambda p, g: keras_adadelta(p, g, 1.0, wd=0.1)),
    "adamax": (lambda: optimizers.Adamax(0.01), lambda p, g: keras_adamax(p, g, 0.01)),
    "adamax_eps_outside_max": (lambda: optimizers.Adamax(0.02, beta_1=0.5, beta_2=0.9, epsilon=0.5),
                               lambda p, g: keras_adamax(p, g, 0.02, 0.5, 0.9, 0.5)),
    "adamax_weight_decay": (lambda: optimizers.Adamax(0.01, weight_decay=0.1),
                            lambda p, g: keras_adamax(p, g, 0.01, wd=0.1)),
    "nadam": (lambda: optimizers.Nadam(0.01), lambda p, g: keras_nadam(p, g, 0.01)),
    "nadam_betas": (lambda: optimizers.Nadam(0.02, beta_1=0.5, beta_2=0.9, epsilon=1e-3),
                    lambda p, g: keras_nadam(p, g, 0.02, 0.5, 0.9, 1e-3)),
    "nadam_weight_decay": (lambda: optimizers.Nadam(0.01, weight_decay=0.1),
                           lambda p, g: keras_nadam(p, g, 0.01, wd=0.1)),
    "lion": (lambda: optimizers.Lion(0.01), lambda p, g: keras_lion(p, g, 0.01)),
    "lion_betas_weight_decay": (lambda: optimizers.Lion(0.01, beta_1=0.5, beta_2=0.9, weight_decay=0.3),
                                lambda p, g: keras_lion(p, g, 0.01, 0.5, 0.9, wd=0.3)),
    "ftrl": (lambda: optimizers.Ftrl(0.1), lambda p, g: keras_ftrl(p, g, 0.1)),
    "ftrl_regularized": (
        lambda: optimizers.Ftrl(0.1, l1_regularization_strength=0.05, l2_regularization_strength=0.1,
                                l2_shrinkage_regularization_strength=0.02, beta=0.5),
        lambda p, g: keras_ftrl(p, g, 0.1, l1=0.05, l2=0.1, l2s=0.02, beta=0.5)),
    "ftrl_lr_power_general": (lambda: optimizers.Ftrl(0.1, learning_rate_power=-0.7, initial_accumulator_value=0.5),
                              lambda p, g: keras_ftrl(p, g, 0.1, lr_power=-0.7, init=0.5)),
    "ftrl_lr_power_zero": (lambda: optimizers.Ftrl(0.1, learning_rate_power=0.0, l1_regularization_strength=0.1),
                           lambda p, g: keras_ftrl(p, g, 0.1, lr_power=0.0, l1=0.1)),
    "ftrl_weight_decay": (lambda: optimizers.Ftrl(0.1, weight_decay=0.1, initial_accumulator_value=0.0),
                          lambda p, g: keras_ftrl(p, g, 0.1, init=0.0, wd=0.1)),
}


@pytest.mark.parametrize("name", list(NEW_NUMPY_CASES))
def test_new_optimizers_vs_numpy_keras_formula(name):
    make, ref = NEW_NUMPY_CASES[name]
    params, grads = draw(name)
    got = run_maas(make(), params, grads)
    assert_params(got, ref(params, grads), params, name)


NEW_TORCH_CASES = {
    "adagrad": (lambda: optimizers.Adagrad(0.05, epsilon=0.0),
                lambda ps: torch.optim.Adagrad(ps, lr=0.05, initial_accumulator_value=0.1, eps=0.0)),
    "adadelta": (lambda: optimizers.Adadelta(1.0),
                 lambda ps: torch.optim.Adadelta(ps, lr=1.0, rho=0.95, eps=1e-7)),
    "adadelta_rho_eps": (lambda: optimizers.Adadelta(0.5, rho=0.7, epsilon=1e-3),
                         lambda ps: torch.optim.Adadelta(ps, lr=0.5, rho=0.7, eps=1e-3)),
    "adamax": (lambda: optimizers.Adamax(0.01, epsilon=0.0),
               lambda ps: torch.optim.Adamax(ps, lr=0.01, eps=0.0)),
    "adamax_betas": (lambda: optimizers.Adamax(0.02, beta_1=0.5, beta_2=0.9, epsilon=0.0),
                     lambda ps: torch.optim.Adamax(ps, lr=0.02, betas=(0.5, 0.9), eps=0.0)),
    "nadam": (lambda: optimizers.Nadam(0.01),
              lambda ps: torch.optim.NAdam(ps, lr=0.01, eps=1e-7, momentum_decay=1.0)),
    "nadam_betas_weight_decay": (
        lambda: optimizers.Nadam(0.02, beta_1=0.5, beta_2=0.9, epsilon=1e-3, weight_decay=0.1),
        lambda ps: torch.optim.NAdam(ps, lr=0.02, betas=(0.5, 0.9), eps=1e-3, momentum_decay=1.0,
                                     weight_decay=0.1, decoupled_weight_decay=True)),
}


@pytest.mark.parametrize("name", list(NEW_TORCH_CASES))
def test_new_optimizers_vs_torch_optim(name):
    make, make_torch = NEW_TORCH_CASES[name]
    params, grads = draw("torch/" + name)
    got = run_maas(make(), params, grads)
    ref = run_torch(make_torch, params, grads)
    assert_params(got, ref, params, name)


def test_nadam_is_not_torch_default_schedule():
    """torch's default momentum_decay=0.004 is a different algorithm: maas
    follows Keras, so the two drift apart (while momentum_decay=1 matches)."""
    params, grads = draw("nadam_schedule")
    got = run_maas(optimizers.Nadam(0.01), params, grads)
    ref = run_torch(lambda ps: torch.optim.NAdam(ps, lr=0.01, eps=1e-7), params, grads)
    assert max(np.max(np.abs(g - r)) for g, r in zip(got, ref)) > 1e-4


def test_large_variable_threaded_path_matches_numpy():
    """Above the kernels' OpenMP threshold the update is split over threads:
    each element still follows the formula."""
    rng = np.random.default_rng(5)
    p0 = [rng.normal(size=(300, 257)).astype(np.float32)]
    grads = [[rng.normal(size=(300, 257)).astype(np.float32)] for _ in range(3)]
    for make, ref in [(lambda: optimizers.Nadam(0.01, weight_decay=0.1),
                       lambda: keras_nadam(p0, grads, 0.01, wd=0.1)),
                      (lambda: optimizers.Ftrl(0.1, l1_regularization_strength=0.05),
                       lambda: keras_ftrl(p0, grads, 0.1, l1=0.05)),
                      (lambda: optimizers.Lion(0.01), lambda: keras_lion(p0, grads, 0.01))]:
        assert_params(run_maas(make(), p0, grads), ref(), p0, "large")


@pytest.mark.parametrize("make,slots", [
    (lambda: optimizers.Adagrad(initial_accumulator_value=0.25), {"accumulator": 0.25}),
    (lambda: optimizers.Adadelta(), {"accumulated_grad": 0.0, "accumulated_delta_var": 0.0}),
    (lambda: optimizers.Adamax(), {"momentum": 0.0, "norm": 0.0}),
    (lambda: optimizers.Nadam(), {"momentum": 0.0, "velocity": 0.0}),
    (lambda: optimizers.Lion(), {"momentum": 0.0}),
    (lambda: optimizers.Ftrl(initial_accumulator_value=0.3), {"accumulator": 0.3, "linear": 0.0}),
])
def test_slots_have_keras_names_and_initial_values(make, slots):
    opt = make()
    v = maas.Variable(np.ones((2, 3)), name="w")
    opt.apply_gradients([(np.zeros((2, 3), np.float32), v)])
    assert set(opt._slots[id(v)]) - {"__var__"} == set(slots)
    fresh = make()
    for name, init in slots.items():
        s = fresh.slot(v, name, init)
        np.testing.assert_array_equal(np.asarray(s), np.full((2, 3), init, np.float32))
        assert s.name == f"w/{name}" and not s.trainable
    # after a zero-gradient step the accumulator grew by g^2 = 0 and stayed at its start
    if "accumulator" in slots:
        np.testing.assert_allclose(np.asarray(opt.slot(v, "accumulator")), slots["accumulator"])


def test_nadam_resumes_from_restored_state():
    """The momentum-schedule product is rebuilt from `iterations` when an
    optimizer is restored (as load_model does: slots, then iterations)."""
    params, grads = draw("nadam_resume")
    full = run_maas(optimizers.Nadam(0.01), params, grads)
    opt = optimizers.Nadam(0.01)
    vs = [maas.Variable(p.copy(), name=f"v{i}") for i, p in enumerate(params)]
    for step in grads[:3]:
        opt.apply_gradients(list(zip(step, vs)))
    opt2 = optimizers.Nadam(0.01)
    for v in vs:
        for name in ("momentum", "velocity"):
            opt2.slot(v, name).assign(np.asarray(opt.slot(v, name)))
    opt2.iterations = 3
    for step in grads[3:]:
        opt2.apply_gradients(list(zip(step, vs)))
    for got, ref in zip(vs, full):
        np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-6, atol=1e-7)


NEW_DEFAULTS = {
    optimizers.Adagrad: dict(learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, name="adagrad"),
    optimizers.Adadelta: dict(learning_rate=0.001, rho=0.95, epsilon=1e-7, name="adadelta"),
    optimizers.Adamax: dict(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name="adamax"),
    optimizers.Nadam: dict(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name="nadam"),
    optimizers.Lion: dict(learning_rate=0.001, beta_1=0.9, beta_2=0.99, name="lion"),
    optimizers.Ftrl: dict(learning_rate=0.001, learning_rate_power=-0.5, initial_accumulator_value=0.1,
                          l1_regularization_strength=0.0, l2_regularization_strength=0.0,
                          l2_shrinkage_regularization_strength=0.0, beta=0.0, name="ftrl"),
}


@pytest.mark.parametrize("cls", list(NEW_DEFAULTS), ids=lambda c: c.__name__)
def test_new_optimizers_keras_defaults_config_and_get(cls):
    cfg = cls().get_config()
    for k, v in NEW_DEFAULTS[cls].items():
        assert cfg[k] == pytest.approx(v) if isinstance(v, float) else cfg[k] == v, k
    assert cfg["weight_decay"] is None and cfg["clipnorm"] is None
    assert type(optimizers.get(cls.__name__.lower())) is cls
    custom = cls(learning_rate=0.25, weight_decay=0.01, clipnorm=2.0)
    rt = optimizers.get({"class_name": cls.__name__, "config": custom.get_config()})
    assert type(rt) is cls and rt.get_config() == custom.get_config()


def test_new_optimizer_argument_errors():
    with pytest.raises(ValueError, match=r"Argument `beta_1` must be in the \[0, 1\] range.*beta_1=0"):
        optimizers.Lion(beta_1=0.0)
    with pytest.raises(ValueError, match="`learning_rate_power` needs to be negative or zero. "
                                         "Received: learning_rate_power=0.5"):
        optimizers.Ftrl(learning_rate_power=0.5)
    with pytest.raises(ValueError, match="`initial_accumulator_value` needs to be positive or zero"):
        optimizers.Ftrl(initial_accumulator_value=-1)
    with pytest.raises(ValueError, match="`l1_regularization_strength` needs to be positive or zero"):
        optimizers.Ftrl(l1_regularization_strength=-0.1)
    with pytest.raises(ValueError, match="`l2_shrinkage_regularization_strength` needs to be positive"):
        optimizers.Ftrl(l2_shrinkage_regularization_strength=-0.1)
    with pytest.raises(ValueError, match="initial_accumulator_value must be non-negative"):
        optimizers.Adagrad(initial_accumulator_value=-0.1)
    # FTRL divides by the learning rate: the kernel refuses 0
    v = maas.Variable(np.ones(3))
    with pytest.raises(ValueError, match="ftrl_update: the learning rate must be positive"):
        optimizers.Ftrl(learning_rate=0.0).apply_gradients([(np.ones(3, np.float32), v)])
    np.testing.assert_array_equal(np.asarray(v), np.ones(3))


@pytest.mark.parametrize("opt,name", [(optimizers.Adagrad(), "adagrad"), (optimizers.Adadelta(), "adadelta"),
                                      (optimizers.Adamax(), "adamax"), (optimizers.Nadam(), "nadam"),
                                      (optimizers.Lion(), "lion"), (optimizers.Ftrl(), "ftrl")])
def test_new_optimizers_shape_and_type_errors(opt, name):
    v = maas.Variable(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=re.escape(
            f"{name}: gradient shape (4,) does not match variable shape (2, 2)")):
        opt.apply_gradients([(np.zeros(4, np.float32), v)])
    np.testing.assert_array_equal(np.asarray(v), np.zeros((2, 2)))
    # a slot of the wrong shape (e.g. a corrupted restore) is refused, naming it
    w = maas.Variable(np.zeros(3), name="w")
    first = {"adagrad": "accumulator", "adadelta": "accumulated_grad", "adamax": "momentum",
             "nadam": "momentum", "lion": "momentum", "ftrl": "accumulator"}[name]
    opt._slots[id(w)] = {"__var__": w, first: maas.Variable(np.zeros(4), trainable=False)}
    with pytest.raises(ValueError, match=re.escape(f"{name}: {first} shape (4,) does not match "
                                                   f"variable shape (3,)")):
        opt.apply_gradients([(np.zeros(3, np.float32), w)])
    bind = getattr(maas._core, f"{name}_update")
    nslots, scalars = {"adagrad": (1, (0.1, 1e-7, 0.0)), "adadelta": (2, (0.1, 0.9, 1e-7, 0.0)),
                       "adamax": (2, (0.1, 0.9, 0.99, 1e-7, 1, 0.0)),
                       "nadam": (2, (0.1, 0.9, 0.99, 1e-7, 1, 0.5, 0.0)), "lion": (1, (0.1, 0.9, 0.99, 0.0)),
                       "ftrl": (2, (0.1, -0.5, 0.0, 0.0, 0.0, 0.0, 0.0))}[name]
    slots = [maas.Variable(np.zeros(3), trainable=False) for _ in range(nslots)]
    with pytest.raises(TypeError, match=f"{name}: the variable must be a maas Tensor or Variable, got numpy.ndarray"):
        bind(np.zeros(3, np.float32), np.zeros(3, np.float32), *slots, *scalars)
    with pytest.raises(TypeError, match=f"{name}: {first} must be a maas Tensor or Variable, got list"):
        bind(w, np.zeros(3, np.float32), [0.0] * 3, *slots[1:], *scalars)
    bind(w, np.ones(3, np.float32), *slots, *scalars)  # the right call goes through
    assert not np.array_equal(np.asarray(w), np.zeros(3))


@pytest.mark.parametrize("make", [lambda: optimizers.Nadam(0.01), lambda: optimizers.Adagrad(0.1),
                                  lambda: optimizers.Ftrl(0.1), lambda: optimizers.Lion(0.02),
                                  lambda: optimizers.Adamax(0.05), lambda: optimizers.Adadelta(1.0, epsilon=1e-3)],
                         ids=["nadam", "adagrad", "ftrl", "lion", "adamax", "adadelta"])
def test_new_optimizers_train_a_model(make):
    """compile/fit with each optimizer (the eager path) lowers the loss."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 4)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5], [0.0]], np.float32) + 0.3).astype(np.float32)
    maas.random.set_seed(0)
    model = maas.Sequential([maas.Input((4,)), maas.layers.Dense(1)])
    model.compile(optimizer=make(), loss="mse")
    hist = model.fit(x, y, epochs=8, batch_size=16, verbose=0, shuffle=False)
    losses = hist.history["loss"]
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("make", [lambda: optimizers.Nadam(0.01), lambda: optimizers.Ftrl(0.1, initial_accumulator_value=0.5),
                                  lambda: optimizers.Adagrad(0.1, initial_accumulator_value=0.2)],
                         ids=["nadam", "ftrl", "adagrad"])
def test_save_load_resumes_training_bit_identically(tmp_path, make):
    """The model file keeps the new optimizers' config, slots and iteration
    count: training resumed from the file matches training that never
    stopped (Nadam's schedule product rebuilt from the iteration count)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = rng.normal(size=(64, 1)).astype(np.float32)
    maas.random.set_seed(0)
    model = maas.Sequential([maas.Input((4,)), maas.layers.Dense(1)])
    model.compile(make(), "mse")
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, shuffle=False)
    path = str(tmp_path / "m.maas")
    model.save(path)
    loaded = maas.load_model(path)
    assert type(loaded.optimizer) is type(model.optimizer)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert loaded.optimizer.iterations == model.optimizer.iterations == 8
    h1 = model.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False).history["loss"]
    h2 = loaded.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False).history["loss"]
    assert h1 == h2
    np.testing.assert_array_equal(np.asarray(model.predict(x, verbose=0)), np.asarray(loaded.predict(x, verbose=0)))


def test_docstring_examples_run():
    """The examples in maas.optimizers's docstrings are real: they run and print what they show."""
    import doctest
    r = doctest.testmod(maas.optimizers, extraglobs={"maas": maas, "np": np},
                        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert r.failed == 0 and r.attempted > 5
