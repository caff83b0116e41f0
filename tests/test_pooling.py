"""Pooling layers: forward and gradients against PyTorch 2.13 (NCHW, channels
moved) to 1e-4 relative and against central finite differences of a float64
NumPy reference (batch 1, odd sizes, stride 2, same padding); error messages;
compiled plan == eager bits; thread-count determinism."""
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


def grads_of(layer, x, R):
    xt = maas.tensor(x.copy(), requires_grad=True)
    with maas.GradientTape() as tape:
        out = layer(xt)
        loss = (out * maas.tensor(R)).sum()
    return np.asarray(out), np.asarray(tape.gradient(loss, xt))


def fd(f, x, R):
    x = x.astype(np.float64).copy()
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


def np_pool2d(kind, pool, strides, padding):
    """float64 reference: NHWC, Keras/TensorFlow padding, average over the
    positions inside the input."""
    (ph, pw), (sh, sw) = pool, strides

    def f(x):
        n, h, w, c = x.shape
        if padding == "same":
            oh, ow = -(-h // sh), -(-w // sw)
            pt = max((oh - 1) * sh + ph - h, 0) // 2
            pl = max((ow - 1) * sw + pw - w, 0) // 2
        else:
            oh, ow, pt, pl = (h - ph) // sh + 1, (w - pw) // sw + 1, 0, 0
        out = np.zeros((n, oh, ow, c))
        for i in range(oh):
            for j in range(ow):
                h0, w0 = i * sh - pt, j * sw - pl
                win = x[:, max(h0, 0):min(h0 + ph, h), max(w0, 0):min(w0 + pw, w), :]
                out[:, i, j] = win.max(axis=(1, 2)) if kind == "max" else win.mean(axis=(1, 2))
        return out
    return f


def torch_pool2d(kind, pool, strides, padding, x):
    """PyTorch on NCHW, with TensorFlow's asymmetric same padding done by
    hand (-inf for max, and count_include_pad=False semantics for average by
    dividing by the pooled count of ones)."""
    t = x.permute(0, 3, 1, 2)
    (ph, pw), (sh, sw) = pool, strides
    h, w = t.shape[2], t.shape[3]
    if padding == "same":
        oh, ow = -(-h // sh), -(-w // sw)
        th, tw = max((oh - 1) * sh + ph - h, 0), max((ow - 1) * sw + pw - w, 0)
        pads = (tw // 2, tw - tw // 2, th // 2, th - th // 2)
    else:
        pads = (0, 0, 0, 0)
    if kind == "max":
        y = F.max_pool2d(F.pad(t, pads, value=-float("inf")), (ph, pw), (sh, sw))
    else:
        s = F.avg_pool2d(F.pad(t, pads), (ph, pw), (sh, sw), divisor_override=1)
        cnt = F.avg_pool2d(F.pad(torch.ones_like(t[:, :1]), pads), (ph, pw), (sh, sw),
                           divisor_override=1)
        y = s / cnt
    return y.permute(0, 2, 3, 1)


CASES = [("max", (2, 2), None, "valid", (2, 6, 6, 3)),
         ("max", (3, 3), (2, 2), "valid", (1, 7, 7, 2)),
         ("max", (3, 3), (2, 2), "same", (2, 7, 8, 3)),
         ("max", (2, 2), (1, 1), "same", (1, 5, 5, 1)),
         ("max", (2, 3), (2, 1), "valid", (3, 5, 6, 4)),
         ("avg", (2, 2), None, "valid", (2, 6, 6, 3)),
         ("avg", (3, 3), (2, 2), "same", (1, 7, 7, 2)),
         ("avg", (2, 2), (2, 2), "same", (2, 5, 5, 3)),
         ("avg", (3, 2), (1, 2), "valid", (1, 6, 5, 2))]
IDS = [f"{k}-{p}-{s}-{pad}-{shape}" for k, p, s, pad, shape in CASES]


def layer_for(kind, pool, strides, padding):
    cls = L.MaxPooling2D if kind == "max" else L.AveragePooling2D
    return cls(pool, strides=strides, padding=padding)


@pytest.mark.parametrize("kind,pool,strides,padding,shape", CASES, ids=IDS)
def test_pool2d_matches_torch(kind, pool, strides, padding, shape):
    r = np.random.default_rng(1)
    x = r.normal(size=shape).astype(np.float32)
    layer = layer_for(kind, pool, strides, padding)
    out_shape = layer.compute_output_shape((None,) + shape[1:])
    R = r.normal(size=(shape[0],) + out_shape[1:]).astype(np.float32)
    out, gx = grads_of(layer, x, R)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch_pool2d(kind, pool, strides or pool, padding, tx)
    (ty * torch.tensor(R)).sum().backward()
    assert out.shape == tuple(ty.shape)
    close(out, ty.detach().numpy(), what="forward")
    close(gx, tx.grad.numpy(), what="dx")


@pytest.mark.parametrize("kind,pool,strides,padding,shape", CASES, ids=IDS)
def test_pool2d_vs_numpy_and_finite_differences(kind, pool, strides, padding, shape):
    r = np.random.default_rng(2)
    # distinct values (a permutation) so that the maximum has no near-ties
    x = (r.permutation(int(np.prod(shape))).reshape(shape) * 0.01).astype(np.float32)
    layer = layer_for(kind, pool, strides, padding)
    f = np_pool2d(kind, pool, strides or pool, padding)
    ref = f(x.astype(np.float64))
    R = r.normal(size=ref.shape)
    out, gx = grads_of(layer, x, R.astype(np.float32))
    close(out, ref, rtol=1e-6)
    if x.size <= 300:
        close(gx, fd(f, x, R), what="dx vs finite differences")


def test_max_pool_gradient_goes_to_the_first_maximum_and_argmax_is_saved():
    x = np.zeros((1, 2, 2, 1), np.float32)   # all ties
    out, gx = grads_of(L.MaxPooling2D(), x, np.ones((1, 1, 1, 1), np.float32))
    assert gx[0, :, :, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    x = np.array([[1, 5], [5, 2]], np.float32).reshape(1, 2, 2, 1)
    _, gx = grads_of(L.MaxPooling2D(), x, np.full((1, 1, 1, 1), 3.0, np.float32))
    assert gx[0, :, :, 0].tolist() == [[0.0, 3.0], [0.0, 0.0]]


@pytest.mark.parametrize("kind,pool,strides,padding", [("max", 2, None, "valid"),
                                                      ("max", 3, 2, "same"),
                                                      ("avg", 3, 2, "same"),
                                                      ("avg", 2, 1, "valid")], ids=str)
def test_pool1d_matches_torch(kind, pool, strides, padding):
    r = np.random.default_rng(3)
    x = r.normal(size=(2, 9, 3)).astype(np.float32)
    cls = L.MaxPooling1D if kind == "max" else L.AveragePooling1D
    layer = cls(pool, strides=strides, padding=padding)
    out_shape = layer.compute_output_shape((None, 9, 3))
    R = r.normal(size=(2,) + out_shape[1:]).astype(np.float32)
    out, gx = grads_of(layer, x, R)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch_pool2d(kind, (1, pool), (1, strides or pool), padding, tx[:, None])[:, 0]
    (ty * torch.tensor(R)).sum().backward()
    assert out.shape == tuple(ty.shape) == (2,) + out_shape[1:]
    close(out, ty.detach().numpy())
    close(gx, tx.grad.numpy())


@pytest.mark.parametrize("cls,keepdims", [(L.GlobalAveragePooling2D, False), (L.GlobalMaxPooling2D, True),
                                          (L.GlobalAveragePooling1D, True), (L.GlobalMaxPooling1D, False)],
                         ids=lambda v: getattr(v, "__name__", str(v)))
def test_global_pooling_matches_torch(cls, keepdims):
    r = np.random.default_rng(4)
    rank = 2 if cls.__name__.endswith("2D") else 1
    shape = (2, 3, 5, 4) if rank == 2 else (3, 7, 4)
    x = r.normal(size=shape).astype(np.float32)
    layer = cls(keepdims=keepdims)
    oshape = layer.compute_output_shape((None,) + shape[1:])
    R = r.normal(size=(shape[0],) + oshape[1:]).astype(np.float32)
    out, gx = grads_of(layer, x, R)
    tx = torch.tensor(x, requires_grad=True)
    dims = tuple(range(1, 1 + rank))
    ty = tx.amax(dim=dims, keepdim=keepdims) if "Max" in cls.__name__ else \
        tx.mean(dim=dims, keepdim=keepdims)
    (ty * torch.tensor(R)).sum().backward()
    assert out.shape == tuple(ty.shape)
    close(out, ty.detach().numpy())
    close(gx, tx.grad.numpy())


def test_global_average_pooling_1d_with_a_mask_averages_the_valid_steps():
    x = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    mask = np.array([[1, 1, 0], [1, 0, 0]], bool)
    y = np.asarray(L.GlobalAveragePooling1D()(x, mask=mask))
    np.testing.assert_allclose(y, [[1, 2], [6, 7]])


def test_errors_name_the_layer_and_the_shapes():
    with pytest.raises(ValueError, match=r'MaxPooling2D "mp": pool_size=\(3, 3\) is larger than the '
                                         r"input's spatial size \(2, 2\) \(input shape \(1, 2, 2, 1\)\)"):
        L.MaxPooling2D(3, name="mp")(np.ones((1, 2, 2, 1), np.float32))
    with pytest.raises(ValueError, match=r'layer "ap".*expected ndim=4.*found ndim=3.*\(2, 5, 3\)'):
        L.AveragePooling2D(name="ap")(np.ones((2, 5, 3), np.float32))
    with pytest.raises(ValueError, match=r'layer "mp1".*expected ndim=3.*\(2, 5\)'):
        L.MaxPooling1D(name="mp1")(np.ones((2, 5), np.float32))
    with pytest.raises(ValueError, match="padding must be 'valid' or 'same'"):
        L.MaxPooling2D(padding="full")
    with pytest.raises(ValueError, match=r"pool_size must be a positive integer.*\(2, 0\)"):
        L.MaxPooling2D((2, 0))
    with pytest.raises(ValueError, match="channels_last"):
        L.MaxPooling2D(data_format="channels_first")
    with pytest.raises(ValueError, match=r"max_pool2d: pool size \(3, 3\) is larger than the input "
                                         r"\(2, 2\) of shape \(1, 2, 2, 1\)"):
        maas._core.op(maas._core.OP_POOL2D, [np.ones((1, 2, 2, 1), np.float32)], 0, 3, 3, 1, 1, 0)
    # symbolic: the output shape, and the same error before any data
    inp = maas.Input((7, 7, 3))
    assert L.MaxPooling2D(3, strides=2, padding="same")(inp).shape == (None, 4, 4, 3)
    assert L.AveragePooling2D(3, strides=2)(inp).shape == (None, 3, 3, 3)
    with pytest.raises(ValueError, match="larger than the input"):
        L.MaxPooling2D(8)(inp)


def test_config_round_trip_and_aliases():
    layer = L.MaxPooling2D((3, 2), strides=(1, 2), padding="same")
    clone = L.MaxPooling2D.from_config(layer.get_config())
    assert clone.pool_size == (3, 2) and clone.strides == (1, 2) and clone.padding == "same"
    assert L.MaxPool2D is L.MaxPooling2D and L.GlobalAvgPool2D is L.GlobalAveragePooling2D
    assert L.AveragePooling1D(3).strides == (3,)


def test_same_bits_at_one_and_two_threads():
    r = np.random.default_rng(5)
    x = r.normal(size=(8, 32, 32, 16)).astype(np.float32)
    R = r.normal(size=(8, 16, 16, 16)).astype(np.float32)
    old = maas.get_num_threads()
    res = []
    try:
        for nt in (1, 2):
            maas.set_num_threads(nt)
            res.append([a for layer in (L.MaxPooling2D(3, 2, "same"), L.AveragePooling2D(3, 2, "same"))
                        for a in grads_of(layer, x, R)])
    finally:
        maas.set_num_threads(old)
    for a, b in zip(*res):
        np.testing.assert_array_equal(a, b)


def test_plan_gives_eager_bits():
    r = np.random.default_rng(6)
    x = r.normal(size=(40, 9, 9, 2)).astype(np.float32)
    y = (x[:, :4].mean(axis=(1, 2, 3)) > 0).astype(np.float32)

    def build():
        inp = maas.Input((9, 9, 2))
        a = L.MaxPooling2D(3, strides=2, padding="same")(inp)
        b = L.AveragePooling2D(2)(L.Dense(3)(inp))
        ga = L.GlobalAveragePooling2D()(a)
        gb = L.GlobalMaxPooling2D()(b)
        seq = L.Reshape((9 * 9, 2))(inp)
        gc = L.GlobalMaxPooling1D()(L.AveragePooling1D(3, padding="same")(L.MaxPooling1D(2)(seq)))
        h = L.Concatenate()([ga, gb, gc])
        return maas.Model(inp, L.Dense(2, activation="softmax")(h))

    out = []
    for eager in (False, True):
        maas.utils.set_random_seed(1)
        m = build()
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=eager)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            h = m.fit(x, y, epochs=2, batch_size=8, verbose=0)
        out.append((m, h.history))
    (mp, hp), (me, he) = out
    assert isinstance(mp._plan, CompiledPlan) and mp._plan.eager_reason is None
    assert mp.eager_reason is None
    assert hp == he
    for a, b in zip(mp.get_weights(), me.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(mp.predict(x, verbose=0), np.asarray(me(x, training=False)))
