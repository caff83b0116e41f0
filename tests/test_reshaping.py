"""Reshaping layers: ZeroPadding, Cropping, UpSampling (nearest, bilinear),
Permute, RepeatVector, SpatialDropout: forward and gradients against
PyTorch 2.13 (channels moved) and central finite differences of float64
NumPy references; error messages; compiled plan == eager bits."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import maas
from maas.engine import CompiledPlan

L = maas.layers
torch.set_num_threads(1)
RTOL = 1e-4
FD_STEP = 1e-6


def close(a, b, rtol=RTOL, what=""):
    b = np.asarray(b)
    scale = max(1.0, float(np.abs(b).max(initial=0)))
    np.testing.assert_allclose(np.asarray(a), b, rtol=rtol, atol=rtol * 1e-2 * scale, err_msg=what)


def grads_of(layer, x, R=None, **kw):
    xt = maas.tensor(x.copy(), requires_grad=True)
    with maas.GradientTape() as tape:
        out = layer(xt, **kw)
        if R is None:
            R = np.random.default_rng(99).normal(size=out.shape).astype(np.float32)
        loss = (out * maas.tensor(R)).sum()
    return np.asarray(out), np.asarray(tape.gradient(loss, xt)), R


def fd(f, x, R):
    x = x.astype(np.float64).copy()
    R = R.astype(np.float64)
    g = np.zeros_like(x)
    for j in np.ndindex(x.shape):
        old = x[j]
        x[j] = old + FD_STEP
        lp = np.sum(f(x) * R)
        x[j] = old - FD_STEP
        lm = np.sum(f(x) * R)
        x[j] = old
        g[j] = (lp - lm) / (2 * FD_STEP)
    return g


def torch_check(layer, x, tfn):
    """layer on x (NHWC) against tfn on torch NCHW; forward and dx."""
    out, gx, R = grads_of(layer, x)
    tx = torch.tensor(np.moveaxis(x, -1, 1).copy(), requires_grad=True)
    ty = tfn(tx)
    (ty * torch.tensor(np.moveaxis(R, -1, 1).copy())).sum().backward()
    close(out, np.moveaxis(ty.detach().numpy(), 1, -1), what="forward")
    close(gx, np.moveaxis(tx.grad.numpy(), 1, -1), what="dx")


def x_of(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# -------------------------------------------------------- padding, cropping

@pytest.mark.parametrize("padding,torch_pad", [(1, (1, 1, 1, 1)), ((2, 1), (1, 1, 2, 2)),
                                               (((1, 0), (0, 3)), (0, 3, 1, 0))], ids=str)
def test_zero_padding2d_matches_torch(padding, torch_pad):
    torch_check(L.ZeroPadding2D(padding), x_of((2, 3, 5, 2)), lambda t: F.pad(t, torch_pad))


@pytest.mark.parametrize("cropping,sl", [(1, (slice(1, -1), slice(1, -1))),
                                         ((1, 2), (slice(1, -1), slice(2, -2))),
                                         (((0, 2), (1, 0)), (slice(0, -2), slice(1, None)))], ids=str)
def test_cropping2d_matches_torch(cropping, sl):
    torch_check(L.Cropping2D(cropping), x_of((1, 5, 7, 3)), lambda t: t[:, :, sl[0], sl[1]])


def test_padding_and_cropping_1d_and_finite_differences():
    x = x_of((2, 5, 3), 1)
    for layer, f in ((L.ZeroPadding1D((2, 1)), lambda a: np.pad(a, ((0, 0), (2, 1), (0, 0)))),
                     (L.Cropping1D((1, 2)), lambda a: a[:, 1:-2]),
                     (L.ZeroPadding2D(((1, 2), (0, 1))),
                      lambda a: np.pad(a.reshape(2, 5, 3, 1), ((0, 0), (1, 2), (0, 1), (0, 0)))),
                     (L.Cropping2D(((1, 1), (1, 0))), lambda a: a.reshape(2, 5, 3, 1)[:, 1:-1, 1:])):
        xin = x if isinstance(layer, (L.ZeroPadding1D, L.Cropping1D)) else x.reshape(2, 5, 3, 1)
        out, gx, R = grads_of(layer, xin)
        np.testing.assert_array_equal(out, f(x).astype(np.float32))
        close(gx.reshape(x.shape), fd(lambda a: f(a), x, R).reshape(x.shape))
        assert layer.compute_output_shape((None,) + xin.shape[1:])[1:] == out.shape[1:]


def test_padding_cropping_errors_name_the_layer_and_shapes():
    with pytest.raises(ValueError, match=r'Cropping2D "crop": cropping \(2, 2\) on axis 1 of input '
                                         r'shape \(1, 4, 5, 1\) leaves nothing'):
        L.Cropping2D(((2, 2), (0, 0)), name="crop")(np.ones((1, 4, 5, 1), np.float32))
    with pytest.raises(ValueError, match=r'layer "zp".*expected ndim=4, found ndim=3.*\(1, 4, 5\)'):
        L.ZeroPadding2D(name="zp")(np.ones((1, 4, 5), np.float32))
    with pytest.raises(ValueError, match=r"ZeroPadding2D: padding should be.*received padding=-1"):
        L.ZeroPadding2D(-1)
    with pytest.raises(ValueError, match=r"pad2d: cropping \(3, 3\) rows"):
        maas._core.op(maas._core.OP_PAD2D, [np.ones((1, 4, 4, 1), np.float32)], -3, -3, 0, 0)
    inp = maas.Input((None, 6, 2))
    assert L.ZeroPadding2D(((1, 2), (3, 4)))(inp).shape == (None, None, 13, 2)
    assert L.Cropping2D(1)(inp).shape == (None, None, 4, 2)


# ------------------------------------------------------------- upsampling

@pytest.mark.parametrize("size", [(2, 2), (3, 1), (1, 4)], ids=str)
@pytest.mark.parametrize("interp", ["nearest", "bilinear"])
def test_upsampling2d_matches_torch(size, interp):
    x = x_of((2, 3, 4, 3), 2)
    mode = {"nearest": dict(mode="nearest"), "bilinear": dict(mode="bilinear", align_corners=False)}
    torch_check(L.UpSampling2D(size, interpolation=interp), x,
                lambda t: F.interpolate(t, scale_factor=size, **mode[interp]))


def np_bilinear(out_h, out_w):
    def f(x):
        n, h, w, c = x.shape

        def taps(o, i):
            src = np.maximum((np.arange(o) + 0.5) * i / o - 0.5, 0)
            i0 = np.minimum(np.floor(src).astype(int), i - 1)
            return i0, np.minimum(i0 + 1, i - 1), src - i0

        h0, h1, wy = taps(out_h, h)
        w0, w1, wx = taps(out_w, w)
        top = x[:, h0][:, :, w0] * (1 - wx)[None, None, :, None] + x[:, h0][:, :, w1] * wx[None, None, :, None]
        bot = x[:, h1][:, :, w0] * (1 - wx)[None, None, :, None] + x[:, h1][:, :, w1] * wx[None, None, :, None]
        return top * (1 - wy)[None, :, None, None] + bot * wy[None, :, None, None]
    return f


def test_upsampling_vs_finite_differences_and_1d():
    x = x_of((1, 3, 3, 2), 3)
    out, gx, R = grads_of(L.UpSampling2D((2, 3), interpolation="bilinear"), x)
    f = np_bilinear(6, 9)
    close(out, f(x.astype(np.float64)), rtol=1e-5)
    close(gx, fd(f, x, R))
    x1 = x_of((2, 3, 2), 4)
    out, gx, R = grads_of(L.UpSampling1D(3), x1)
    np.testing.assert_array_equal(out, np.repeat(x1, 3, axis=1))
    close(gx, fd(lambda a: np.repeat(a, 3, axis=1), x1, R))


def test_upsampling_errors_and_shapes():
    with pytest.raises(ValueError, match="interpolation must be 'nearest' or 'bilinear'"):
        L.UpSampling2D(interpolation="bicubic")
    with pytest.raises(ValueError, match=r'layer "up".*expected ndim=4.*\(2, 3\)'):
        L.UpSampling2D(name="up")(np.ones((2, 3), np.float32))
    assert L.UpSampling2D((2, 3))(maas.Input((4, None, 1))).shape == (None, 8, None, 1)
    cfg = L.UpSampling2D(3, interpolation="bilinear").get_config()
    assert cfg["size"] == [3, 3] and L.UpSampling2D.from_config(cfg).interpolation == "bilinear"


# -------------------------------------------------- Permute, RepeatVector

@pytest.mark.parametrize("shape,dims", [((2, 3, 4), (2, 1)), ((2, 3, 4, 5), (3, 1, 2)),
                                        ((1, 2, 3, 4), (1, 3, 2))], ids=str)
def test_permute_matches_numpy_and_torch(shape, dims):
    x = x_of(shape, 5)
    out, gx, R = grads_of(L.Permute(dims), x)
    perm = (0,) + dims
    np.testing.assert_array_equal(out, np.transpose(x, perm))
    tx = torch.tensor(x, requires_grad=True)
    (tx.permute(*perm) * torch.tensor(R)).sum().backward()
    np.testing.assert_array_equal(gx, tx.grad.numpy())


def test_permute_large_same_bits_at_two_threads_and_errors():
    x = x_of((8, 64, 32, 16), 6)
    old = maas.get_num_threads()
    try:
        res = []
        for nt in (1, 2):
            maas.set_num_threads(nt)
            res.append(grads_of(L.Permute((3, 1, 2)), x)[:2])
    finally:
        maas.set_num_threads(old)
    np.testing.assert_array_equal(res[0][0], np.transpose(x, (0, 3, 1, 2)))
    np.testing.assert_array_equal(res[0][1], res[1][1])
    with pytest.raises(ValueError, match="must be consecutive and start from 1"):
        L.Permute((0, 1))
    with pytest.raises(ValueError, match=r'layer "perm".*expected ndim=3.*\(2, 3\)'):
        L.Permute((2, 1), name="perm")(np.ones((2, 3), np.float32))


def test_repeat_vector_forward_gradient_and_errors():
    x = x_of((3, 4), 7)
    out, gx, R = grads_of(L.RepeatVector(5), x)
    np.testing.assert_array_equal(out, np.repeat(x[:, None], 5, axis=1))
    close(gx, R.sum(axis=1))
    assert L.RepeatVector(5)(maas.Input((4,))).shape == (None, 5, 4)
    with pytest.raises(ValueError, match=r'layer "rv".*expected ndim=2.*\(3, 4, 1\)'):
        L.RepeatVector(2, name="rv")(np.ones((3, 4, 1), np.float32))
    with pytest.raises(ValueError, match="n must be a positive integer"):
        L.RepeatVector(0)


# ---------------------------------------------------------- spatial dropout

def test_spatial_dropout_drops_whole_maps_in_training_only_and_repeats_with_its_seed():
    x = np.ones((4, 5, 5, 16), np.float32)
    y = np.asarray(L.SpatialDropout2D(0.5, seed=3)(x, training=True))
    assert (y == y[:, :1, :1, :]).all()
    kept = y[:, 0, 0, :]
    assert set(np.unique(kept)) <= {0.0, 2.0} and 0 < (kept == 0).sum() < kept.size
    y2 = np.asarray(L.SpatialDropout2D(0.5, seed=3)(x, training=True))
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(np.asarray(L.SpatialDropout2D(0.5)(x)), x)  # inference
    y1 = np.asarray(L.SpatialDropout1D(0.5, seed=4)(np.ones((3, 7, 8), np.float32), training=True))
    assert (y1 == y1[:, :1, :]).all()
    # the gradient is the mask
    xt = maas.tensor(x_of((2, 3, 3, 4), 8), requires_grad=True)
    sd = L.SpatialDropout2D(0.5, seed=5)
    with maas.GradientTape() as tape:
        out = sd(xt, training=True)
        loss = out.sum()
    g = np.asarray(tape.gradient(loss, xt))
    np.testing.assert_array_equal(g * np.asarray(xt), np.asarray(out))
    with pytest.raises(ValueError, match=r'layer "sd".*expected ndim=4'):
        L.SpatialDropout2D(0.3, name="sd")(np.ones((2, 3, 4), np.float32), training=True)
    cfg = L.SpatialDropout2D(0.25, seed=9).get_config()
    assert "noise_shape" not in cfg and L.SpatialDropout2D.from_config(cfg).rate == 0.25


# ------------------------------------------------------------------- plan

def test_plan_gives_eager_bits_and_redraws_spatial_dropout_each_step():
    r = np.random.default_rng(10)
    x = r.normal(size=(32, 6, 5, 2)).astype(np.float32)
    y = (x[:, :3].mean(axis=(1, 2, 3)) > 0).astype(np.float32)

    def build():
        inp = maas.Input((6, 5, 2))
        h = L.ZeroPadding2D(((1, 0), (2, 1)))(inp)
        h = L.Cropping2D(((0, 1), (1, 0)))(h)
        h = L.UpSampling2D((2, 1), interpolation="bilinear")(L.Dense(3)(h))
        h = L.UpSampling2D(2)(h)
        h = L.SpatialDropout2D(0.3, seed=11)(h)
        h = L.Permute((3, 1, 2))(h)
        h = L.Flatten()(h)
        h = L.RepeatVector(2)(L.Dense(4)(h))
        h = L.Flatten()(h)
        return maas.Model(inp, L.Dense(2, activation="softmax")(h))

    out = []
    for eager in (False, True):
        maas.utils.set_random_seed(2)
        m = build()
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=eager)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            h = m.fit(x, y, epochs=2, batch_size=8, verbose=0)
        out.append((m, h.history))
    (mp, hp), (me, he) = out
    assert isinstance(mp._plan, CompiledPlan) and mp._plan.eager_reason is None
    assert mp.eager_reason is None
    tr = next(iter(mp._plan._train.values()))
    assert tr.plan.num_random == 1   # the spatial dropout's draw is replayed each step
    assert hp == he
    for a, b in zip(mp.get_weights(), me.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(mp.predict(x, verbose=0), np.asarray(me(x, training=False)))
