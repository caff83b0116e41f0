"""LayerNormalization, BatchNormalization and GroupNormalization: forward
and gradients against PyTorch 2.13 (channels moved to torch's NCHW) to 1e-4
relative and against central finite differences of a float64 NumPy
reference; the moving statistics (Keras's update, biased variance), the
inference mode, trainable=False, error messages, compiled plan == eager bits,
saving and reloading in a new process bit for bit, thread-count determinism.

The gradient checks use the loss sum(out * R) for a fixed random R.
"""
from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import maas
from maas.engine import CompiledPlan

L = maas.layers
torch.set_num_threads(1)
RTOL = 1e-4
FD_STEP = 1e-6


def rng(seed=0):
    return np.random.default_rng(seed)


def grads_of(layer, x, R, training=None, extra=()):
    """(out, [dx, *d(weights)]) of sum(layer(x) * R) on the tape."""
    xt = maas.tensor(x.copy(), requires_grad=True)
    kw = {} if training is None else {"training": training}
    with maas.GradientTape() as tape:
        out = layer(xt, **kw)
        loss = (out * maas.tensor(R)).sum()
    ws = [w for w in extra]
    gs = tape.gradient(loss, [xt] + ws)
    return np.asarray(out), [None if g is None else np.asarray(g) for g in gs]


def close(a, b, rtol=RTOL, what=""):
    b = np.asarray(b)
    scale = max(1.0, float(np.abs(b).max(initial=0)))
    np.testing.assert_allclose(np.asarray(a), b, rtol=rtol, atol=rtol * 1e-2 * scale, err_msg=what)


def fd(f, xs, R):
    """Central differences (float64) of sum(f(*xs) * R) for each array of xs."""
    xs = [x.astype(np.float64).copy() for x in xs]
    out = []
    for x in xs:
        g = np.zeros_like(x)
        for j in np.ndindex(x.shape):
            old = x[j]
            x[j] = old + FD_STEP
            lp = np.sum(f(*xs) * R)
            x[j] = old - FD_STEP
            lm = np.sum(f(*xs) * R)
            x[j] = old
            g[j] = (lp - lm) / (2 * FD_STEP)
        out.append(g)
    return out


def nhwc_to_nchw(a):
    return np.ascontiguousarray(np.moveaxis(a, -1, 1))


def nchw_to_nhwc(a):
    return np.moveaxis(np.asarray(a), 1, -1)


# ------------------------------------------------------------ references


def np_layernorm(axes, eps, rms=False):
    def f(x, gamma=None, beta=None):
        if rms:
            v = np.mean(x * x, axis=axes, keepdims=True)
            y = x / np.sqrt(v + eps)
        else:
            m = np.mean(x, axis=axes, keepdims=True)
            v = np.mean((x - m) ** 2, axis=axes, keepdims=True)
            y = (x - m) / np.sqrt(v + eps)
        shape = [x.shape[a] if a in axes else 1 for a in range(x.ndim)]
        if gamma is not None:
            y = y * gamma.reshape(shape)
        if beta is not None:
            y = y + beta.reshape(shape)
        return y
    return f


def np_batchnorm_train(eps):
    def f(x, gamma, beta):
        axes = tuple(range(x.ndim - 1))
        m = x.mean(axis=axes)
        v = ((x - m) ** 2).mean(axis=axes)
        return (x - m) / np.sqrt(v + eps) * gamma + beta
    return f


def np_groupnorm(groups, eps):
    def f(x, gamma, beta):
        n, c = x.shape[0], x.shape[-1]
        g = x.reshape(n, -1, groups, c // groups)
        m = g.mean(axis=(1, 3), keepdims=True)
        v = ((g - m) ** 2).mean(axis=(1, 3), keepdims=True)
        y = ((g - m) / np.sqrt(v + eps)).reshape(x.shape)
        return y * gamma + beta
    return f


def randomize(layer, seed):
    """Non-trivial gamma and beta (the defaults 1 and 0 would hide bugs)."""
    r = rng(seed)
    for w in layer.weights:
        if w.trainable:
            w.assign(r.normal(1.0 if w.name == "gamma" else 0.0, 0.5, size=w.shape).astype(np.float32))


# ------------------------------------------------------- LayerNormalization

LN_SHAPES = [((1, 7), -1, 1e-3), ((3, 5, 7), -1, 1e-12), ((2, 16, 384), -1, 1e-12),
             ((4, 33), -1, 1e-5), ((2, 3, 4, 5), [2, 3], 1e-3)]


@pytest.mark.parametrize("shape,axis,eps", LN_SHAPES, ids=[f"{s}-{a}-{e}" for s, a, e in LN_SHAPES])
def test_layernorm_matches_torch(shape, axis, eps):
    r = rng(1)
    x = r.normal(2.0, 3.0, size=shape).astype(np.float32)
    R = r.normal(size=shape).astype(np.float32)
    ln = L.LayerNormalization(axis=axis, epsilon=eps)
    ln.build(shape)
    randomize(ln, 2)
    out, (gx, gg, gb) = grads_of(ln, x, R, extra=[ln.gamma, ln.beta])
    naxes = 1 if isinstance(axis, int) else len(axis)
    tl = torch.nn.LayerNorm(shape[-naxes:], eps=eps)
    with torch.no_grad():
        tl.weight.copy_(torch.tensor(np.asarray(ln.gamma)))
        tl.bias.copy_(torch.tensor(np.asarray(ln.beta)))
    tx = torch.tensor(x, requires_grad=True)
    ty = tl(tx)
    (ty * torch.tensor(R)).sum().backward()
    close(out, ty.detach().numpy(), what="forward")
    close(gx, tx.grad.numpy(), what="dx")
    close(gg, tl.weight.grad.numpy(), what="dgamma")
    close(gb, tl.bias.grad.numpy(), what="dbeta")


LN_FD = [((1, 5), -1, False, True, True), ((3, 4), -1, False, False, True),
         ((2, 3), -1, False, True, False), ((2, 3, 4), 1, False, True, True),
         ((2, 3, 2, 3), [1, 2], False, True, True), ((3, 6), -1, True, True, False),
         ((2, 3, 5), [1, 2], True, True, False)]


@pytest.mark.parametrize("shape,axis,rms,scale,center", LN_FD,
                         ids=[f"{c[0]}-{c[1]}-rms{c[2]}-s{c[3]}-c{c[4]}" for c in LN_FD])
def test_layernorm_gradients_vs_finite_differences(shape, axis, rms, scale, center):
    r = rng(3)
    eps = 1e-3
    x = r.normal(size=shape).astype(np.float32)
    R = r.normal(size=shape).astype(np.float64)
    ln = L.LayerNormalization(axis=axis, epsilon=eps, rms_scaling=rms, scale=scale, center=center)
    ln.build(shape)
    randomize(ln, 4)
    ws = [w for w in (ln.gamma, ln.beta) if w is not None]
    out, grads = grads_of(ln, x, R.astype(np.float32), extra=ws)
    axes = tuple(ln._axes)
    ref = np_layernorm(axes, eps, rms)
    names = [n for n, w in (("gamma", ln.gamma), ("beta", ln.beta)) if w is not None]

    def f(xx, *p):
        kw = dict(zip(names, p))
        return ref(xx, kw.get("gamma"), kw.get("beta"))

    close(out, f(x.astype(np.float64), *[np.asarray(w, np.float64) for w in ws]), rtol=1e-5)
    for g, want, name in zip(grads, fd(f, [x] + [np.asarray(w) for w in ws], R), ["x"] + names):
        close(g, want, what=f"d{name}")


def test_layernorm_tiny_epsilon_on_nearly_constant_rows():
    # BERT's epsilon 1e-12: a variance of ~1e-12 (the size of epsilon itself)
    # must come out as (x - mean) / sqrt(var + 1e-12), and rows centred far
    # from 0 must not cancel (no one-pass E[x^2] - E[x]^2 variance)
    r = rng(5)
    for base, sd, tol in ((0.0, 1e-6, 1e-5), (1.0, 1e-4, 2e-3), (10.0, 1e-3, 2e-3)):
        x = (base + sd * r.normal(size=(4, 384))).astype(np.float32)
        y = np.asarray(L.LayerNormalization(epsilon=1e-12)(x))
        x64 = x.astype(np.float64)
        ref = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-12)
        np.testing.assert_allclose(y, ref, atol=tol, err_msg=f"rows {base} +- {sd}")
        t = torch.nn.functional.layer_norm(torch.tensor(x), (384,), eps=1e-12).numpy()
        assert np.abs(y - ref).max() <= np.abs(t - ref).max() * 1.5 + 1e-6   # as good as torch


def test_layernorm_config_weights_and_errors():
    ln = L.LayerNormalization(axis=[1, 2], epsilon=1e-6, center=False)
    y = ln(np.ones((2, 3, 4), np.float32))
    assert y.shape == (2, 3, 4)
    assert [w.name for w in ln.weights] == ["gamma"] and tuple(ln.gamma.shape) == (3, 4)
    clone = L.LayerNormalization.from_config(ln.get_config())
    assert clone.axis == [1, 2] and clone.epsilon == 1e-6 and clone.center is False
    with pytest.raises(ValueError, match=r"layer_normalization.*\(2, 3, 4, 5\).*consecutive axes only"):
        L.LayerNormalization(axis=[1, 3], name="layer_normalization")(np.ones((2, 3, 4, 5), np.float32))
    with pytest.raises(ValueError, match=r'layer "ln".*expected rank 3.*sizes \[3, 4\].*\(2, 3, 5\)'):
        ln2 = L.LayerNormalization(axis=[1, 2], name="ln")
        ln2(np.ones((2, 3, 4), np.float32))
        ln2(np.ones((2, 3, 5), np.float32))
    with pytest.raises(ValueError, match="out of bounds"):
        L.LayerNormalization(axis=3)(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="epsilon must be >= 0"):
        L.LayerNormalization(epsilon=-1.0)


def test_layernorm_op_errors_name_the_op_and_shapes():
    x = maas.tensor(np.ones((2, 5), np.float32))
    g = maas.tensor(np.ones((4,), np.float32))
    with pytest.raises(ValueError, match=r"layer_normalization: gamma of shape \(4,\) does not fit "
                                         r"input of shape \(2, 5\)"):
        maas._core.op(maas._core.OP_LAYERNORM, [x, g], -1, 1, 1e-3, 1, 0, 0)


# ------------------------------------------------------- BatchNormalization

BN_SHAPES = [(1, 3, 3, 4), (4, 5, 7, 6), (3, 8), (2, 9, 3)]


@pytest.mark.parametrize("shape", BN_SHAPES, ids=[str(s) for s in BN_SHAPES])
def test_batchnorm_training_matches_torch(shape):
    r = rng(6)
    x = r.normal(1.0, 2.0, size=shape).astype(np.float32)
    R = r.normal(size=shape).astype(np.float32)
    bn = L.BatchNormalization(momentum=0.9)
    bn.build(shape)
    randomize(bn, 7)
    out, (gx, gg, gb) = grads_of(bn, x, R, training=True, extra=[bn.gamma, bn.beta])
    c = shape[-1]
    tb = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d}[len(shape)](
        c, eps=1e-3, momentum=0.1)
    with torch.no_grad():
        tb.weight.copy_(torch.tensor(np.asarray(bn.gamma)))
        tb.bias.copy_(torch.tensor(np.asarray(bn.beta)))
    tx = torch.tensor(nhwc_to_nchw(x), requires_grad=True)
    ty = tb(tx)
    (ty * torch.tensor(nhwc_to_nchw(R))).sum().backward()
    close(out, nchw_to_nhwc(ty.detach().numpy()), what="forward")
    close(gx, nchw_to_nhwc(tx.grad.numpy()), what="dx")
    close(gg, tb.weight.grad.numpy(), what="dgamma")
    close(gb, tb.bias.grad.numpy(), what="dbeta")
    # the moving mean is torch's running mean; the moving variance uses the
    # biased batch variance (Keras), torch's running_var the unbiased one
    close(bn.moving_mean, tb.running_mean.numpy(), what="moving_mean")
    m = x.size // c
    unbiased = (tb.running_var.numpy() - 0.9) / 0.1
    close(bn.moving_variance, 0.9 + 0.1 * unbiased * (m - 1) / m, what="moving_variance")


@pytest.mark.parametrize("shape", [(1, 3, 3, 2), (3, 2, 3), (5, 3)], ids=str)
def test_batchnorm_training_gradients_vs_finite_differences(shape):
    r = rng(8)
    x = r.normal(size=shape).astype(np.float32)
    R = r.normal(size=shape)
    bn = L.BatchNormalization()
    bn.build(shape)
    randomize(bn, 9)
    ws = [bn.gamma, bn.beta]
    out, grads = grads_of(bn, x, R.astype(np.float32), training=True, extra=ws)
    f = np_batchnorm_train(1e-3)
    close(out, f(x.astype(np.float64), *[np.asarray(w, np.float64) for w in ws]), rtol=1e-5)
    for g, want, name in zip(grads, fd(f, [x] + [np.asarray(w) for w in ws], R), "xgb"):
        close(g, want, what=f"d{name}")


def test_batchnorm_inference_uses_moving_statistics_and_its_gradient():
    r = rng(10)
    shape = (2, 3, 3, 4)
    x = r.normal(size=shape).astype(np.float32)
    R = r.normal(size=shape)
    bn = L.BatchNormalization(epsilon=1e-2)
    bn.build(shape)
    randomize(bn, 11)
    mm = r.normal(size=4).astype(np.float32)
    mv = r.uniform(0.5, 2.0, size=4).astype(np.float32)
    bn.moving_mean.assign(mm)
    bn.moving_variance.assign(mv)
    out, grads = grads_of(bn, x, R.astype(np.float32), training=False, extra=[bn.gamma, bn.beta])

    def f(xx, g, b):
        return (xx - mm.astype(np.float64)) / np.sqrt(mv.astype(np.float64) + 1e-2) * g + b

    ws = [np.asarray(bn.gamma), np.asarray(bn.beta)]
    close(out, f(x.astype(np.float64), *[w.astype(np.float64) for w in ws]), rtol=1e-5)
    for g, want in zip(grads, fd(f, [x] + ws, R)):
        close(g, want)
    # inference never touches the moving statistics
    np.testing.assert_array_equal(np.asarray(bn.moving_mean), mm)
    np.testing.assert_array_equal(np.asarray(bn.moving_variance), mv)


def test_batchnorm_moving_statistics_follow_keras_update():
    r = rng(12)
    bn = L.BatchNormalization(momentum=0.8)
    mm, mv = np.zeros(3), np.ones(3)
    for step in range(3):
        x = r.normal(step, 1 + step, size=(6, 3)).astype(np.float32)
        bn(x, training=True)
        x64 = x.astype(np.float64)
        mm = mm * 0.8 + x64.mean(0) * 0.2
        mv = mv * 0.8 + x64.var(0) * 0.2   # biased, as Keras
    np.testing.assert_allclose(np.asarray(bn.moving_mean), mm, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(bn.moving_variance), mv, rtol=1e-5)
    assert [w.name for w in bn.non_trainable_weights] == ["moving_mean", "moving_variance"]
    assert [w.name for w in bn.trainable_weights] == ["gamma", "beta"]


def test_batchnorm_trainable_false_runs_in_inference_mode():
    r = rng(13)
    x = r.normal(3.0, 2.0, size=(8, 4)).astype(np.float32)
    bn = L.BatchNormalization(trainable=False)
    y = np.asarray(bn(x, training=True))
    # moving statistics (0, 1) were used and left alone
    np.testing.assert_allclose(y, x / np.sqrt(1 + 1e-3), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(bn.moving_mean), np.zeros(4, np.float32))
    assert bn.trainable_weights == [] and len(bn.non_trainable_weights) == 4


def test_batchnorm_without_center_and_scale_and_axis_1():
    r = rng(14)
    x = r.normal(size=(3, 4, 5)).astype(np.float32)     # channels on axis 1
    R = r.normal(size=x.shape)
    bn = L.BatchNormalization(axis=1, center=False, scale=False)
    out, (gx,) = grads_of(bn, x, R.astype(np.float32), training=True)
    assert bn.weights[0].name == "moving_mean" and len(bn.weights) == 2

    def f(xx):
        m = xx.mean(axis=(0, 2), keepdims=True)
        v = ((xx - m) ** 2).mean(axis=(0, 2), keepdims=True)
        return (xx - m) / np.sqrt(v + 1e-3)

    close(out, f(x.astype(np.float64)), rtol=1e-5)
    close(gx, fd(f, [x], R)[0])


def test_batchnorm_errors_name_the_layer_and_shapes():
    bn = L.BatchNormalization(name="bn")
    bn(np.ones((2, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r'layer "bn".*axis -1 of size 3.*\(2, 4, 4, 5\)'):
        bn(np.ones((2, 4, 4, 5), np.float32))
    with pytest.raises(ValueError, match=r'layer "bn".*rank 4.*\(2, 3\)'):
        bn(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="momentum must be in"):
        L.BatchNormalization(momentum=1.5)
    with pytest.raises(ValueError, match="empty batch"):
        L.BatchNormalization()(np.ones((0, 3), np.float32), training=True)


def test_batchnorm_same_bits_at_one_and_two_threads():
    r = rng(15)
    x = r.normal(size=(16, 16, 16, 32)).astype(np.float32)   # above the threading threshold
    R = r.normal(size=x.shape).astype(np.float32)
    res = []
    old = maas.get_num_threads()
    try:
        for nt in (1, 2):
            maas.set_num_threads(nt)
            bn = L.BatchNormalization()
            bn.build(x.shape)
            out, grads = grads_of(bn, x, R, training=True, extra=[bn.gamma, bn.beta])
            res.append([out] + grads + [np.asarray(bn.moving_variance)])
    finally:
        maas.set_num_threads(old)
    for a, b in zip(*res):
        np.testing.assert_array_equal(a, b)


def cnn_with_bn():
    return maas.Sequential([
        maas.Input((6, 6, 2)), L.BatchNormalization(momentum=0.9), L.Flatten(),
        L.Dense(16), L.BatchNormalization(), L.Activation("relu"),
        L.LayerNormalization(), L.Dense(3, activation="softmax")])


def small_images(n=48, seed=16):
    r = rng(seed)
    x = r.normal(0.5, 2.0, size=(n, 6, 6, 2)).astype(np.float32)
    y = (x[:, :3].mean(axis=(1, 2, 3)) > x[:, 3:].mean(axis=(1, 2, 3))).astype(np.float32)
    y += (x[..., 0].mean(axis=(1, 2)) > 0.5)
    return x, y


class unfolded:
    """Predict plans made inside keep their BatchNormalization nodes."""

    def __enter__(self):
        self.old, maas.engine.FOLD_BATCHNORM = maas.engine.FOLD_BATCHNORM, False

    def __exit__(self, *exc):
        maas.engine.FOLD_BATCHNORM = self.old


def test_plan_gives_eager_bits_with_moving_statistics():
    x, y = small_images()
    out = []
    for eager in (False, True):
        maas.utils.set_random_seed(3)
        m = cnn_with_bn()
        m.compile(optimizer=maas.optimizers.SGD(0.05, momentum=0.9),
                  loss="sparse_categorical_crossentropy", run_eagerly=eager)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            h = m.fit(x, y, epochs=3, batch_size=16, verbose=0, shuffle=True)
        out.append((m, h.history))
    (mp, hp), (me, he) = out
    assert isinstance(mp._plan, CompiledPlan) and mp._plan.traced_shapes() == 1
    assert mp._plan.eager_reason is None and mp.eager_reason is None
    assert hp == he
    names = [w.path for w in mp.weights]
    assert any("moving_mean" in n for n in names)
    for n, a, b in zip(names, mp.get_weights(), me.get_weights()):
        np.testing.assert_array_equal(a, b, err_msg=n)
    # the moving statistics moved away from their initial values in 9 steps
    bn = mp.layers[0]
    assert np.abs(np.asarray(bn.moving_mean)).min() > 1e-3
    # predict (the predict plan, inference mode) agrees with the eager call
    # on the same batch (OpenBLAS's bits depend on the row count): bit for
    # bit as traced, to float rounding with Dense+BN folded
    p = mp.predict(x, batch_size=len(x), verbose=0)
    ref = np.asarray(mp(x, training=False))
    np.testing.assert_allclose(p, ref, rtol=1e-5, atol=1e-6)
    with unfolded():
        mp.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        np.testing.assert_array_equal(mp.predict(x, batch_size=len(x), verbose=0), ref)


SAVE_SCRIPT = r"""
import sys, numpy as np, maas
m = maas.load_model(sys.argv[1])
x = np.load(sys.argv[2])
np.save(sys.argv[3], m.predict(x, verbose=0))
w = {v.path: np.asarray(v) for v in m.weights}
np.savez(sys.argv[4], **{k.replace('/', '__'): v for k, v in w.items()})
"""


def test_model_with_batchnorm_saves_and_reloads_bit_for_bit_in_a_new_process(tmp_path):
    x, y = small_images()
    maas.utils.set_random_seed(4)
    m = cnn_with_bn()
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    m.fit(x, y, epochs=2, batch_size=16, verbose=0)
    want = m.predict(x, verbose=0)
    path = tmp_path / "bn.maas"
    m.save(path)
    np.save(tmp_path / "x.npy", x)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(maas.__file__))] + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    subprocess.run([sys.executable, "-c", SAVE_SCRIPT, str(path), str(tmp_path / "x.npy"),
                    str(tmp_path / "p.npy"), str(tmp_path / "w.npz")], check=True, env=env,
                   timeout=300, cwd=tmp_path)   # cwd: the child imports this maas, not the checkout's
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), want)
    got = np.load(tmp_path / "w.npz")
    for v in m.weights:
        np.testing.assert_array_equal(got[v.path.replace("/", "__")], np.asarray(v), err_msg=v.path)


# ------------------------------------------------------- GroupNormalization

GN = [((2, 3, 5, 8), 4), ((1, 7, 6), 3), ((3, 4), 2), ((2, 2, 2, 6), 6), ((2, 3, 3, 4), 1)]


@pytest.mark.parametrize("shape,groups", GN, ids=[f"{s}-g{g}" for s, g in GN])
def test_groupnorm_matches_torch(shape, groups):
    r = rng(17)
    x = r.normal(1.0, 2.0, size=shape).astype(np.float32)
    R = r.normal(size=shape).astype(np.float32)
    gn = L.GroupNormalization(groups=groups)
    gn.build(shape)
    randomize(gn, 18)
    out, (gx, gg, gb) = grads_of(gn, x, R, extra=[gn.gamma, gn.beta])
    tg = torch.nn.GroupNorm(groups, shape[-1], eps=1e-3)
    with torch.no_grad():
        tg.weight.copy_(torch.tensor(np.asarray(gn.gamma)))
        tg.bias.copy_(torch.tensor(np.asarray(gn.beta)))
    tx = torch.tensor(nhwc_to_nchw(x), requires_grad=True)
    ty = tg(tx)
    (ty * torch.tensor(nhwc_to_nchw(R))).sum().backward()
    close(out, nchw_to_nhwc(ty.detach().numpy()), what="forward")
    close(gx, nchw_to_nhwc(tx.grad.numpy()), what="dx")
    close(gg, tg.weight.grad.numpy(), what="dgamma")
    close(gb, tg.bias.grad.numpy(), what="dbeta")


@pytest.mark.parametrize("shape,groups", [((1, 3, 4), 2), ((2, 3, 3, 2), 1), ((2, 5, 3), 3)], ids=str)
def test_groupnorm_gradients_vs_finite_differences(shape, groups):
    r = rng(19)
    x = r.normal(size=shape).astype(np.float32)
    R = r.normal(size=shape)
    gn = L.GroupNormalization(groups=groups)
    gn.build(shape)
    randomize(gn, 20)
    ws = [gn.gamma, gn.beta]
    out, grads = grads_of(gn, x, R.astype(np.float32), extra=ws)
    f = np_groupnorm(groups, 1e-3)
    close(out, f(x.astype(np.float64), *[np.asarray(w, np.float64) for w in ws]), rtol=1e-5)
    for g, want, name in zip(grads, fd(f, [x] + [np.asarray(w) for w in ws], R), "xgb"):
        close(g, want, what=f"d{name}")


def test_groupnorm_errors_name_the_layer_and_shapes():
    with pytest.raises(ValueError, match=r"'gn'.*groups \(3\) must divide.*channels \(8\).*\(2, 4, 4, 8\)"):
        L.GroupNormalization(groups=3, name="gn")(np.ones((2, 4, 4, 8), np.float32))
    with pytest.raises(ValueError, match=r"groups \(32\) cannot be more than the number of channels \(16\)"):
        L.GroupNormalization()(np.ones((2, 4, 16), np.float32))
    with pytest.raises(ValueError, match="groups must be a positive integer"):
        L.GroupNormalization(groups=0)
    gn = L.GroupNormalization(groups=-1)   # instance normalization
    y = np.asarray(gn(rng(21).normal(size=(2, 5, 3)).astype(np.float32)))
    np.testing.assert_allclose(y.mean(axis=1), 0, atol=1e-5)
    x = maas.tensor(np.ones((2, 6), np.float32))
    with pytest.raises(ValueError, match=r"group_normalization: 6 channels \(input of shape \(2, 6\)\) "
                                         r"cannot be split into groups=4"):
        maas._core.op(maas._core.OP_GROUPNORM, [x], 4, 1e-3, 0, 0)


def test_frozen_batchnorm_in_fit_keeps_its_statistics_on_plan_and_eager():
    x, y = small_images()
    out = []
    for eager in (False, True):
        maas.utils.set_random_seed(5)
        m = cnn_with_bn()
        bn = m.layers[0]
        bn(x[:4], training=True)          # move the statistics off their initial values
        bn.trainable = False
        frozen = [np.array(w) for w in bn.weights]
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=eager)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            m.fit(x, y, epochs=2, batch_size=16, verbose=0)
        for a, b in zip(frozen, bn.weights):
            np.testing.assert_array_equal(a, np.asarray(b))   # gamma, beta and the statistics
        out.append(m)
    assert out[0].eager_reason is None
    for a, b in zip(out[0].get_weights(), out[1].get_weights()):
        np.testing.assert_array_equal(a, b)


def test_layer_and_group_norm_same_bits_at_one_and_two_threads():
    r = rng(22)
    x = r.normal(size=(64, 32, 96)).astype(np.float32)
    R = r.normal(size=x.shape).astype(np.float32)
    old = maas.get_num_threads()
    res = []
    try:
        for nt in (1, 2):
            maas.set_num_threads(nt)
            ln = L.LayerNormalization()
            ln.build(x.shape)
            gn = L.GroupNormalization(groups=8)
            gn.build(x.shape)
            res.append([a for layer in (ln, gn) for a in
                        [grads_of(layer, x, R, extra=[layer.gamma, layer.beta])[0]] +
                        grads_of(layer, x, R, extra=[layer.gamma, layer.beta])[1]])
    finally:
        maas.set_num_threads(old)
    for a, b in zip(*res):
        np.testing.assert_array_equal(a, b)


# ------------------------------------- BatchNormalization folded at inference


def conv_bn_cnn():
    """Conv (bias) + BN, Conv (no bias) + BN, Dense + BN, and a BN that
    follows an activation (not foldable)."""
    return maas.Sequential([
        maas.Input((10, 10, 3)), L.Conv2D(8, 3, padding="same"), L.BatchNormalization(),
        L.Activation("relu"), L.Conv2D(12, 3, strides=2, use_bias=False),
        L.BatchNormalization(epsilon=1e-5, center=False), L.Activation("relu"),
        L.BatchNormalization(scale=False), L.Flatten(), L.Dense(10),
        L.BatchNormalization(), L.Dense(4)])


def randomize_bn_statistics(model, seed=0):
    """Moving statistics and gamma/beta far from their initial 0/1."""
    r = rng(seed)
    for w in model.weights:
        if "moving_variance" in w.path or "gamma" in w.path:
            w.assign(r.uniform(0.3, 3.0, w.shape).astype(np.float32))
        elif "moving_mean" in w.path or "beta" in w.path:
            w.assign(r.normal(0, 1, w.shape).astype(np.float32))


def rel_err(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def predict_plan(model):
    (tr,) = model._plan._predict.values()
    return tr.plan


def test_predict_folds_batchnorm_into_conv_and_dense_to_1e5():
    maas.utils.set_random_seed(5)
    m = conv_bn_cnn()
    randomize_bn_statistics(m)
    x = rng(1).normal(size=(6, 10, 10, 3)).astype(np.float32)
    ref = np.asarray(m(x, training=False))
    with unfolded():
        np.testing.assert_array_equal(m.predict(x, verbose=0), ref)   # the plan as traced
        n_traced = predict_plan(m).num_nodes
    m.compile(optimizer="sgd", loss="mse")   # a fresh plan, folded
    p = m.predict(x, verbose=0)
    assert rel_err(p, ref) < 1e-5
    # three of the four BatchNormalizations went (the one after a ReLU stays)
    assert predict_plan(m).num_nodes == n_traced - 3
    assert predict_plan(m).fold_batchnorm() == 0   # a plan folds once
    np.testing.assert_array_equal(m.predict(x, verbose=0), p)   # replays give the same bits


def test_folded_predict_follows_assign_fit_and_load_weights(tmp_path):
    maas.utils.set_random_seed(6)
    m = conv_bn_cnn()
    randomize_bn_statistics(m)
    m.compile(optimizer=maas.optimizers.SGD(0.01), loss="mse")
    x = rng(2).normal(size=(16, 10, 10, 3)).astype(np.float32)
    y = rng(3).normal(size=(16, 4)).astype(np.float32)
    m.predict(x, verbose=0)   # folds with the first weights
    # assign: one moving variance and one kernel
    m.layers[1].moving_variance.assign(np.full(8, 0.25, np.float32))
    m.layers[0].kernel.assign(np.asarray(m.layers[0].kernel) * 2.0)
    assert rel_err(m.predict(x, verbose=0), np.asarray(m(x, training=False))) < 1e-5
    # fit: the plan's SGD update and the training BN's moving statistics
    m.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert rel_err(m.predict(x, verbose=0), np.asarray(m(x, training=False))) < 1e-5
    # load_weights: another model's weights, written into this model's memory
    maas.utils.set_random_seed(7)
    other = conv_bn_cnn()
    randomize_bn_statistics(other, seed=9)
    other.save_weights(tmp_path / "other.weights.h5")
    m.load_weights(tmp_path / "other.weights.h5")
    want = np.asarray(other(x, training=False))
    assert rel_err(m.predict(x, verbose=0), want) < 1e-5


def test_training_is_unchanged_bit_for_bit_by_a_folded_predict_plan():
    x = rng(4).normal(size=(16, 10, 10, 3)).astype(np.float32)
    y = rng(5).normal(size=(16, 4)).astype(np.float32)
    runs = []
    for predict_first in (False, True):
        maas.utils.set_random_seed(8)
        m = conv_bn_cnn()
        m.compile(optimizer=maas.optimizers.SGD(0.01, momentum=0.9), loss="mse")
        if predict_first:
            m.predict(x, verbose=0)
            assert predict_plan(m).num_nodes > 0
        h = m.fit(x, y, epochs=2, batch_size=8, verbose=0, shuffle=False)
        if predict_first:
            m.predict(x, verbose=0)
        h2 = m.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
        runs.append((h.history, h2.history, m.get_weights()))
    (ha, h2a, wa), (hb, h2b, wb) = runs
    assert ha == hb and h2a == h2b
    for a, b in zip(wa, wb):
        np.testing.assert_array_equal(a, b)


def test_a_conv_output_read_twice_is_not_folded():
    inp = maas.Input((6, 6, 2))
    c = L.Conv2D(4, 3, padding="same")(inp)
    b = L.BatchNormalization()(c)
    m = maas.Model(inp, [b, c])
    randomize_bn_statistics(m)
    x = rng(6).normal(size=(3, 6, 6, 2)).astype(np.float32)
    ref = [np.asarray(t) for t in m(x, training=False)]
    got = m.predict(x, verbose=0)
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(g, r)
