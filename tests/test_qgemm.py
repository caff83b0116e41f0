"""The int8 GEMM op (qdense) against a NumPy implementation of its
arithmetic (Keras 3's int8 Dense), bit for bit, on every kernel path this
CPU has (reference, AVX2, AVX512-VNNI), odd shapes included; its gradient
through the dequantized kernel against float64 NumPy and finite
differences; and its error messages."""
from __future__ import annotations

import numpy as np
import pytest

import maas
from maas import quantization as Q

PATHS = Q.supported_isas()
SHAPES = [(1, 1, 1), (1, 3, 5), (2, 4, 16), (3, 5, 17), (7, 33, 31), (9, 130, 67),
          (1, 257, 100), (65, 71, 129), (130, 300, 70), (17, 3, 200), (1, 1024, 48),
          (6, 513, 33), (2, 2049, 64), (70, 600, 65)]


def numpy_qdense(x, w, b=None, input_scale=None):
    """The documented arithmetic in NumPy float32/int64: per-column kernel
    scales, per-row (or fixed) input scales, exact integer products, then
    acc / (sx * sw) + b."""
    q, sw = Q.quantize_kernel(w)
    x = np.asarray(x, np.float32).reshape(-1, w.shape[0])
    if input_scale is None:
        sx = np.float32(127) / (np.abs(x).max(axis=1, initial=0) + np.float32(1e-7))
    else:
        sx = np.full(len(x), input_scale, np.float32)
    xq = np.clip(np.rint(x * sx[:, None]), -127, 127).astype(np.int64)
    acc = (xq @ q.astype(np.int64)).astype(np.int32)
    out = acc.astype(np.float32) / (sx[:, None] * sw[None, :])
    return out + b if b is not None else out


def _data(n, k, u, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, k)).astype(np.float32) * 2,
            rng.standard_normal((k, u)).astype(np.float32),
            rng.standard_normal(u).astype(np.float32))


def test_cpu_paths_are_reported():
    assert PATHS[0] == "reference"
    assert set(PATHS) <= {"reference", "avx2", "avx512vnni"}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("path", PATHS)
def test_every_path_equals_numpy_bit_for_bit(shape, path):
    n, k, u = shape
    x, w, b = _data(n, k, u, sum(shape))
    q, sw = Q.quantize_kernel(w)
    packed = Q.pack_kernel(q)
    for bias in (None, b):
        got = np.asarray(Q.qdense(maas.tensor(x), packed, maas.tensor(sw),
                                  None if bias is None else maas.tensor(bias), isa=path))
        want = numpy_qdense(x, w, bias)
        assert got.dtype == np.float32 and got.shape == (n, u)
        np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))


@pytest.mark.parametrize("shape", [(1, 300, 40), (4, 64, 16), (7, 1030, 47), (66, 130, 33)])
@pytest.mark.parametrize("path", PATHS)
def test_nonnegative_and_mixed_rows_equal_numpy(shape, path):
    """Rows without a negative value (a layer's input after ReLU) take a
    shorter AVX2 kernel; groups of 4 rows mixing both kinds take the
    signed one. Both equal the arithmetic bit for bit."""
    n, k, u = shape
    x, w, b = _data(n, k, u, 7 + n)
    relu = np.maximum(x, 0)
    mixed = relu.copy()
    mixed[::3] = x[::3]
    q, sw = Q.quantize_kernel(w)
    packed = Q.pack_kernel(q)
    for inp in (relu, mixed):
        got = np.asarray(Q.qdense(maas.tensor(inp), packed, maas.tensor(sw), maas.tensor(b),
                                  isa=path))
        np.testing.assert_array_equal(got.view(np.int32), numpy_qdense(inp, w, b).view(np.int32))


@pytest.mark.parametrize("path", PATHS)
def test_static_scale_clips_and_matches(path):
    x, w, b = _data(13, 37, 21, 4)
    x[0, 0] = 50.0    # beyond the calibrated range: clipped to 127
    s = np.float32(127 / 3.0)
    q, sw = Q.quantize_kernel(w)
    got = np.asarray(Q.qdense(maas.tensor(x), Q.pack_kernel(q), maas.tensor(sw), maas.tensor(b),
                              input_scale=maas.tensor(np.array(s, np.float32)), isa=path))
    np.testing.assert_array_equal(got, numpy_qdense(x, w, b, input_scale=s))


def test_pack_round_trip_and_layout_size():
    rng = np.random.default_rng(1)
    q = rng.integers(-127, 128, size=(37, 19)).astype(np.int8)
    packed = Q.pack_kernel(q)
    assert packed.dtype == "int8" and tuple(packed.shape) == (2, 10 * 64 + 64)
    np.testing.assert_array_equal(Q.unpack_kernel(packed, 37, 19), q)


def test_threads_and_leading_dims_do_not_change_bits():
    x, w, b = _data(64, 200, 100, 9)
    q, sw = Q.quantize_kernel(w)
    packed, s = Q.pack_kernel(q), maas.tensor(sw)
    outs, before = [], maas.get_num_threads()
    try:
        for t in (1, 2, 3):
            maas.set_num_threads(t)
            outs.append(np.asarray(Q.qdense(maas.tensor(x), packed, s, maas.tensor(b))))
        # more than one tile of rows and of columns, K over the AVX2 chunk
        x2, w2, b2 = _data(130, 700, 200, 10)
        q2, sw2 = Q.quantize_kernel(w2)
        big = []
        for t in (1, 2, 3):
            maas.set_num_threads(t)
            big.append(np.asarray(Q.qdense(maas.tensor(x2), Q.pack_kernel(q2), maas.tensor(sw2),
                                           maas.tensor(b2))))
    finally:
        maas.set_num_threads(before)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])
    np.testing.assert_array_equal(big[0], big[1])
    np.testing.assert_array_equal(big[0], big[2])
    np.testing.assert_array_equal(big[0].view(np.int32), numpy_qdense(x2, w2, b2).view(np.int32))
    three = np.asarray(Q.qdense(maas.tensor(x.reshape(4, 16, 200)), packed, s, maas.tensor(b)))
    np.testing.assert_array_equal(three.reshape(64, 100), outs[0])


def test_int8_error_bound_against_float64():
    """|int8 - exact| <= sum_k |x||w| step bounds: each operand is off by at
    most half a step (absmax/254), so the error is at most
    sum_k (|x| hw + |w| hx + hx hw)."""
    x, w, _ = _data(8, 300, 40, 3)
    q, sw = Q.quantize_kernel(w)
    got = np.asarray(Q.qdense(maas.tensor(x), Q.pack_kernel(q), maas.tensor(sw))).astype(np.float64)
    exact = x.astype(np.float64) @ w.astype(np.float64)
    hx = np.abs(x).max(1, keepdims=True) / 254.0
    hw = np.abs(w).max(0, keepdims=True) / 254.0
    bound = np.abs(x) @ np.broadcast_to(hw, w.shape) + hx * np.abs(w).sum(0) + hx * hw * w.shape[0]
    assert (np.abs(got - exact) <= bound * 1.001).all()


def test_gradient_through_the_dequantized_kernel():
    x, w, b = _data(5, 12, 7, 11)
    q, sw = Q.quantize_kernel(w)
    packed, s = Q.pack_kernel(q), maas.tensor(sw)
    xt, bt = maas.Variable(x), maas.Variable(b)
    r = np.random.default_rng(2).standard_normal((5, 7)).astype(np.float32)
    with maas.GradientTape() as tape:
        loss = maas.ops.sum(Q.qdense(xt, packed, s, bt) * maas.tensor(r))
    gx, gb = tape.gradient(loss, [xt, bt])
    wdq = q.astype(np.float64) / sw.astype(np.float64)
    np.testing.assert_allclose(np.asarray(gx), r @ wdq.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(gb), r.sum(0), rtol=1e-6, atol=1e-6)


def test_error_messages():
    x, w, b = _data(2, 8, 3, 0)
    q, sw = Q.quantize_kernel(w)
    packed = Q.pack_kernel(q)
    with pytest.raises(ValueError, match=r"packed kernel shape \(1, 192\) does not fit input shape \(2, 9\)"):
        Q.qdense(maas.tensor(np.zeros((2, 9), np.float32)), packed, maas.tensor(sw))
    with pytest.raises(TypeError, match="packed kernel must be int8, received float32"):
        Q.qdense(maas.tensor(x), maas.tensor(np.zeros((1, 192), np.float32)), maas.tensor(sw))
    with pytest.raises(ValueError, match=r"bias shape \(4,\) does not match 3 units"):
        Q.qdense(maas.tensor(x), packed, maas.tensor(sw), maas.tensor(np.zeros(4, np.float32)))
    with pytest.raises(ValueError, match="isa must be one of"):
        Q.qdense(maas.tensor(x), packed, maas.tensor(sw), isa="sse")
    with pytest.raises(ValueError, match="input scale must be positive"):
        Q.qdense(maas.tensor(x), packed, maas.tensor(sw),
                 input_scale=maas.tensor(np.array(0.0, np.float32)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        Q.quantize_kernel(np.array([[np.nan]], np.float32))
