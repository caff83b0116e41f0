"""The array/math names of maas.ops beyond the core table (maas/_ops_extra.py):
each forward against NumPy (float64 reference), each differentiable one's
gradient against central finite differences of that reference (float64),
integer inputs against NumPy exactly, and the documented edge cases.

Tolerances: forward rtol 1e-5 / atol 1e-6 (float32 rounding of a few flops);
gradient rtol 1e-4, atol 1e-5 * max(1, max|fd|) with FD step 1e-6 on the
float64 reference. The loss for gradient checks is sum(out * R), R random.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

import maas
from maas import ops

FWD_RTOL, FWD_ATOL = 1e-5, 1e-6
FD_RTOL, FD_ATOL, FD_STEP = 1e-4, 1e-5, 1e-6


def rng_for(name):
    return np.random.default_rng(zlib.crc32(name.encode()))


def _scipy_lse(x, axis=None, keepdims=False):
    m = np.max(x, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis) if axis is not None else out.reshape(())


def _np_cumprod(x, axis):
    return np.cumprod(x, axis=axis)


def U(*shape, lo=-2.0, hi=2.0):
    return lambda rng: rng.uniform(lo, hi, shape).astype(np.float32)


def POS(*shape):
    return U(*shape, lo=0.5, hi=2.0)


def AWAY(*shape):
    """uniform values at least 0.1 from 0 (kinks of abs/sign-like ops)."""
    def gen(rng):
        x = rng.uniform(0.1, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
        return x.astype(np.float32)
    return gen


def DISTINCT(*shape):
    """a permutation of spaced values (no ties for max/sort)."""
    def gen(rng):
        n = int(np.prod(shape))
        return (rng.permutation(n) * 0.37 - n * 0.15).reshape(shape).astype(np.float32)
    return gen


_PERM = np.random.default_rng(5).permutation(300)  # >64 runs: the one-hot matmul path

# (id, maas fn, numpy fn, input generators, differentiable)
CASES = [
    ("expand_dims", lambda x: ops.expand_dims(x, 1), lambda x: np.expand_dims(x, 1), [U(2, 3)], True),
    ("expand_dims_tuple", lambda x: ops.expand_dims(x, (0, -1)), lambda x: np.expand_dims(x, (0, -1)),
     [U(2, 3)], True),
    ("squeeze_all", lambda x: ops.squeeze(x), lambda x: np.squeeze(x), [U(2, 1, 3, 1)], True),
    ("squeeze_axis", lambda x: ops.squeeze(x, 1), lambda x: np.squeeze(x, 1), [U(2, 1, 3, 1)], True),
    ("stack0", lambda a, b: ops.stack([a, b]), lambda a, b: np.stack([a, b]), [U(2, 3), U(2, 3)], True),
    ("stack_last", lambda a, b: ops.stack([a, b], axis=-1), lambda a, b: np.stack([a, b], axis=-1),
     [U(2, 3), U(2, 3)], True),
    ("split_sections", lambda x: ops.concatenate([p * (i + 1) for i, p in enumerate(ops.split(x, 2, 1))], 0),
     lambda x: np.concatenate([p * (i + 1) for i, p in enumerate(np.split(x, 2, 1))], 0), [U(3, 4)], True),
    ("split_indices", lambda x: ops.concatenate([p * (i + 1) for i, p in enumerate(ops.split(x, [1, 3]))], 0),
     lambda x: np.concatenate([p * (i + 1) for i, p in enumerate(np.split(x, [1, 3]))], 0), [U(5, 2)], True),
    ("flip_none", lambda x: ops.flip(x), lambda x: np.flip(x), [U(2, 3, 2)], True),
    ("flip_axis1", lambda x: ops.flip(x, 1), lambda x: np.flip(x, 1), [U(2, 3, 2)], True),
    ("flip_axes", lambda x: ops.flip(x, (0, 2)), lambda x: np.flip(x, (0, 2)), [U(2, 3, 2)], True),
    ("where", lambda c, a, b: ops.where(ops.greater(c, 0.0), a, b),
     lambda c, a, b: np.where(c > 0, a, b), [AWAY(3, 4), U(3, 4), U(3, 4)], True),
    ("where_broadcast", lambda c, a, b: ops.where(ops.greater(c, 0.0), a, b),
     lambda c, a, b: np.where(c > 0, a, b), [AWAY(3, 1), U(1, 4), U(3, 4)], True),
    ("sign", ops.sign, np.sign, [AWAY(3, 4)], True),
    ("logsumexp_all", ops.logsumexp, lambda x: _scipy_lse(x), [U(3, 4)], True),
    ("logsumexp_axis", lambda x: ops.logsumexp(x, axis=1), lambda x: _scipy_lse(x, 1), [U(3, 4)], True),
    ("logsumexp_keep", lambda x: ops.logsumexp(x, axis=0, keepdims=True),
     lambda x: _scipy_lse(x, 0, True), [U(3, 4)], True),
    ("logsumexp_large", lambda x: ops.logsumexp(x * 1000.0, axis=-1),
     lambda x: _scipy_lse(x * 1000.0, -1), [U(2, 5, lo=50, hi=60)], False),
    ("norm_vec", ops.norm, np.linalg.norm, [U(5)], True),
    ("norm_flat", ops.norm, lambda x: np.linalg.norm(x.reshape(-1)), [U(2, 3, 2)], True),
    ("norm_l1", lambda x: ops.norm(x, ord=1, axis=1), lambda x: np.linalg.norm(x, 1, axis=1),
     [AWAY(3, 4)], True),
    ("norm_inf", lambda x: ops.norm(x, ord=np.inf, axis=0), lambda x: np.linalg.norm(x, np.inf, axis=0),
     [DISTINCT(3, 4)], True),
    ("norm_p3", lambda x: ops.norm(x, ord=3, axis=-1, keepdims=True),
     lambda x: np.linalg.norm(x, 3, axis=-1, keepdims=True), [AWAY(3, 4)], True),
    ("norm_fro", lambda x: ops.norm(x, ord="fro"), lambda x: np.linalg.norm(x, "fro"), [U(3, 4)], True),
    ("norm_mat1", lambda x: ops.norm(x, ord=1), lambda x: np.linalg.norm(x, 1), [DISTINCT(3, 4)], True),
    ("norm_matinf_axes", lambda x: ops.norm(x, ord=np.inf, axis=(1, 2)),
     lambda x: np.linalg.norm(x, np.inf, axis=(1, 2)), [DISTINCT(2, 3, 4)], True),
    ("pad", lambda x: ops.pad(x, ((1, 0), (2, 3))), lambda x: np.pad(x, ((1, 0), (2, 3))), [U(2, 3)], True),
    ("pad_int_value", lambda x: ops.pad(x, 1, constant_values=5.0),
     lambda x: np.pad(x, 1, constant_values=5.0), [U(2, 3)], True),
    ("tile", lambda x: ops.tile(x, (2, 3)), lambda x: np.tile(x, (2, 3)), [U(2, 3)], True),
    ("tile_more_dims", lambda x: ops.tile(x, (2, 1, 2)), lambda x: np.tile(x, (2, 1, 2)), [U(2, 3)], True),
    ("repeat_flat", lambda x: ops.repeat(x, 2), lambda x: np.repeat(x, 2), [U(2, 3)], True),
    ("repeat_axis", lambda x: ops.repeat(x, 3, axis=1), lambda x: np.repeat(x, 3, axis=1), [U(2, 3)], True),
    ("repeat_counts", lambda x: ops.repeat(x, [1, 0, 2], axis=0), lambda x: np.repeat(x, [1, 0, 2], axis=0),
     [U(3, 2)], True),
    ("triu", ops.triu, np.triu, [U(2, 3, 4)], True),
    ("triu_k", lambda x: ops.triu(x, 1), lambda x: np.triu(x, 1), [U(4, 3)], True),
    ("tril", ops.tril, np.tril, [U(3, 4)], True),
    ("tril_k", lambda x: ops.tril(x, -1), lambda x: np.tril(x, -1), [U(4, 4)], True),
    ("cumsum_none", ops.cumsum, np.cumsum, [U(3, 4)], True),
    ("cumsum_axis", lambda x: ops.cumsum(x, axis=1), lambda x: np.cumsum(x, axis=1), [U(2, 7, 3)], True),
    ("cumprod", lambda x: ops.cumprod(x, axis=0), lambda x: np.cumprod(x, axis=0), [U(5, 3)], True),
    ("roll_flat", lambda x: ops.roll(x, 2), lambda x: np.roll(x, 2), [U(2, 3)], True),
    ("roll_axis", lambda x: ops.roll(x, -1, axis=1), lambda x: np.roll(x, -1, axis=1), [U(2, 3)], True),
    ("roll_axes", lambda x: ops.roll(x, (1, 2), axis=(0, 1)), lambda x: np.roll(x, (1, 2), axis=(0, 1)),
     [U(3, 4)], True),
    ("take_none", lambda x: ops.take(x, [5, 0, -1]), lambda x: np.take(x, [5, 0, -1]), [U(2, 3)], True),
    ("take_axis0", lambda x: ops.take(x, [[2, 0], [1, 1]], axis=0),
     lambda x: np.take(x, [[2, 0], [1, 1]], axis=0), [U(3, 2)], True),
    ("take_axis1", lambda x: ops.take(x, [3, 0, 0], axis=1), lambda x: np.take(x, [3, 0, 0], axis=1),
     [U(2, 4, 2)], True),
    ("take_tensor_idx", lambda x: ops.take(x, maas.tensor(np.array([2, -3, 1])), axis=0),
     lambda x: np.take(x, [2, -3, 1], axis=0), [U(3, 2)], True),
    ("take_many_idx", lambda x: ops.take(x, np.arange(200) * 7 % 100),
     lambda x: np.take(x, np.arange(200) * 7 % 100), [U(10, 10)], True),
    ("take_onehot_path", lambda x: ops.take(x, _PERM, axis=0), lambda x: np.take(x, _PERM, axis=0),
     [U(300, 1)], True),
    ("take_along_axis", lambda x: ops.take_along_axis(x, np.array([[2, 0, 1], [0, 0, 2]]), axis=1),
     lambda x: np.take_along_axis(x, np.array([[2, 0, 1], [0, 0, 2]]), axis=1), [U(2, 3)], True),
    ("take_along_bcast", lambda x: ops.take_along_axis(x, np.array([[1], [0]]), axis=-1),
     lambda x: np.take_along_axis(x, np.array([[1], [0]]), axis=-1), [U(2, 3)], True),
    ("sort", lambda x: ops.sort(x), lambda x: np.sort(x), [DISTINCT(3, 4)], True),
    ("sort_axis0", lambda x: ops.sort(x, axis=0), lambda x: np.sort(x, axis=0), [DISTINCT(3, 4)], True),
    ("top_k_values", lambda x: ops.top_k(x, 2)[0], lambda x: -np.sort(-x)[..., :2], [DISTINCT(3, 4)], True),
    ("prod_all", ops.prod, np.prod, [U(2, 3)], True),
    ("prod_axis", lambda x: ops.prod(x, axis=1), lambda x: np.prod(x, axis=1), [U(3, 5)], True),
    ("prod_keep_axes", lambda x: ops.prod(x, axis=(0, 2), keepdims=True),
     lambda x: np.prod(x, axis=(0, 2), keepdims=True), [U(2, 3, 3)], True),
    ("var", ops.var, np.var, [U(3, 4)], True),
    ("var_axis", lambda x: ops.var(x, axis=1, keepdims=True), lambda x: np.var(x, axis=1, keepdims=True),
     [U(3, 4)], True),
    ("std_axis", lambda x: ops.std(x, axis=0), lambda x: np.std(x, axis=0), [U(3, 4)], True),
    ("average_none", lambda x: ops.average(x), lambda x: np.average(x), [U(3, 4)], True),
    ("average_weights", lambda x, w: ops.average(x, axis=1, weights=w),
     lambda x, w: np.average(x, axis=1, weights=w), [U(3, 4), POS(3, 4)], True),
    ("average_1d_weights", lambda x, w: ops.average(x, axis=0, weights=w),
     lambda x, w: np.average(x, axis=0, weights=w), [U(3, 4), POS(3)], True),
    ("einsum_ij_jk", lambda a, b: ops.einsum("ij,jk->ik", a, b), lambda a, b: np.einsum("ij,jk->ik", a, b),
     [U(2, 3), U(3, 4)], True),
    ("einsum_bij_bjk", lambda a, b: ops.einsum("bij,bjk->bik", a, b),
     lambda a, b: np.einsum("bij,bjk->bik", a, b), [U(2, 2, 3), U(2, 3, 4)], True),
    ("einsum_ij_kj", lambda a, b: ops.einsum("ij,kj->ik", a, b), lambda a, b: np.einsum("ij,kj->ik", a, b),
     [U(2, 3), U(4, 3)], True),
    ("reciprocal", ops.reciprocal, np.reciprocal, [AWAY(3, 4)], True),
    ("log1p", ops.log1p, np.log1p, [U(3, 4, lo=-0.5, hi=3.0)], True),
    ("log1p_small", ops.log1p, np.log1p, [U(3, 4, lo=-9e-4, hi=9e-4)], True),
    ("expm1", ops.expm1, np.expm1, [U(3, 4)], True),
    ("expm1_small", ops.expm1, np.expm1, [U(3, 4, lo=-9e-4, hi=9e-4)], True),
    ("mod", lambda a: ops.mod(a, 0.75), lambda a: np.mod(a, 0.75), [U(3, 4, lo=-3, hi=3)], True),
    ("mod_tensors", lambda a, b: ops.mod(a, b), np.mod, [U(3, 4, lo=-3, hi=3), U(3, 4, lo=0.6, hi=1.3)], True),
    ("floor_divide", lambda a, b: ops.floor_divide(a, b), np.floor_divide, [U(3, 4, lo=-3, hi=3), AWAY(3, 4)],
     False),
]
IDS = [c[0] for c in CASES]
assert len(set(IDS)) == len(IDS)


def _inputs(case):
    rng = rng_for(case[0])
    return [g(rng) for g in case[3]]


def _run(case, xs, R=None):
    ts = [maas.tensor(x.copy(), requires_grad=True) for x in xs]
    with maas.GradientTape() as tape:
        out = case[1](*ts)
        loss = ops.sum(ops.multiply(out, maas.tensor(R))) if R is not None else None
    grads = tape.gradient(loss, ts) if R is not None else None
    return np.asarray(out), grads


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_matches_numpy(case):
    xs = _inputs(case)
    out, _ = _run(case, xs)
    ref = np.asarray(case[2](*[x.astype(np.float64) for x in xs]))
    assert out.shape == ref.shape
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=FWD_RTOL, atol=FWD_ATOL)


def _fd(case, xs, R):
    x64 = [x.astype(np.float64) for x in xs]
    out = []
    for i, x in enumerate(x64):
        g = np.zeros_like(x)
        for j in np.ndindex(x.shape):
            hi = [v.copy() for v in x64]
            lo = [v.copy() for v in x64]
            hi[i][j] += FD_STEP
            lo[i][j] -= FD_STEP
            g[j] = (np.sum(case[2](*hi) * R) - np.sum(case[2](*lo) * R)) / (2 * FD_STEP)
        out.append(g)
    return out


@pytest.mark.parametrize("case", [c for c in CASES if c[4]], ids=[c[0] for c in CASES if c[4]])
def test_gradient_matches_finite_differences(case):
    xs = _inputs(case)
    ref_shape = np.shape(case[2](*[x.astype(np.float64) for x in xs]))
    R = rng_for(case[0] + "R").standard_normal(ref_shape).astype(np.float32)
    _, grads = _run(case, xs, R)
    fds = _fd(case, xs, R.astype(np.float64))
    for g, fd in zip(grads, fds):
        g = np.zeros_like(fd) if g is None else np.asarray(g)
        atol = FD_ATOL * max(1.0, float(np.max(np.abs(fd))) if fd.size else 1.0)
        np.testing.assert_allclose(g, fd, rtol=FD_RTOL, atol=atol)


# --------------------------------------------------------------- integer inputs

INT_CASES = [
    ("flip", lambda x: ops.flip(x, 0), lambda x: np.flip(x, 0)),
    ("tile", lambda x: ops.tile(x, 2), lambda x: np.tile(x, 2)),
    ("repeat", lambda x: ops.repeat(x, 2, axis=1), lambda x: np.repeat(x, 2, axis=1)),
    ("roll", lambda x: ops.roll(x, 1, axis=1), lambda x: np.roll(x, 1, axis=1)),
    ("cumsum", lambda x: ops.cumsum(x, axis=1), lambda x: np.cumsum(x, axis=1)),
    ("cumprod", lambda x: ops.cumprod(x, axis=0), lambda x: np.cumprod(x, axis=0)),
    ("prod", lambda x: ops.prod(x, axis=0), lambda x: np.prod(x, axis=0)),
    ("take", lambda x: ops.take(x, [1, 0], axis=1), lambda x: np.take(x, [1, 0], axis=1)),
    ("triu", ops.triu, np.triu),
    ("pad", lambda x: ops.pad(x, 1, constant_values=7), lambda x: np.pad(x, 1, constant_values=7)),
    ("expand_dims", lambda x: ops.expand_dims(x, 0), lambda x: np.expand_dims(x, 0)),
    ("squeeze", lambda x: ops.squeeze(ops.expand_dims(x, 0)), lambda x: x),
    ("stack", lambda x: ops.stack([x, x], 1), lambda x: np.stack([x, x], 1)),
    ("sign", ops.sign, np.sign),
    ("mod", lambda x: ops.mod(x, maas.tensor(np.int64(3))), lambda x: np.mod(x, 3)),
    ("floor_divide", lambda x: ops.floor_divide(x, maas.tensor(np.int64(3))), lambda x: x // 3),
    ("where", lambda x: ops.where(ops.greater(ops.cast(x, "float32"), 0.0), x, maas.tensor(np.int64(-9))),
     lambda x: np.where(x > 0, x, -9)),
]


@pytest.mark.parametrize("case", INT_CASES, ids=[c[0] for c in INT_CASES])
def test_integer_inputs_match_numpy_exactly(case):
    x = rng_for(case[0]).integers(-5, 6, (3, 4)).astype(np.int64)
    out = np.asarray(case[1](maas.tensor(x)))
    ref = case[2](x)
    assert out.dtype == ref.dtype
    np.testing.assert_array_equal(out, ref)


# --------------------------------------------------------------- bool / int results


def test_any_all_match_numpy():
    x = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
    for axis in (None, 0, 1, (0, 1)):
        for keep in (False, True):
            a = ops.any(maas.tensor(x), axis=axis, keepdims=keep)
            b = ops.all(maas.tensor(x + 1.0), axis=axis, keepdims=keep)
            c = ops.all(maas.tensor(x), axis=axis, keepdims=keep)
            assert a.dtype == "bool"
            np.testing.assert_array_equal(np.asarray(a), np.any(x, axis=axis, keepdims=keep))
            np.testing.assert_array_equal(np.asarray(b), np.all(x + 1, axis=axis, keepdims=keep))
            np.testing.assert_array_equal(np.asarray(c), np.all(x, axis=axis, keepdims=keep))
    assert ops.any(maas.tensor(np.array([True, False]))).tolist() is True
    assert ops.all(maas.tensor(np.zeros((0,), np.float32))).tolist() is True


def test_isnan_isinf_isfinite_and_sign_of_nan():
    x = np.array([1.0, np.nan, np.inf, -np.inf, 0.0, -2.0], np.float32)
    t = maas.tensor(x)
    np.testing.assert_array_equal(np.asarray(ops.isnan(t)), np.isnan(x))
    np.testing.assert_array_equal(np.asarray(ops.isinf(t)), np.isinf(x))
    np.testing.assert_array_equal(np.asarray(ops.isfinite(t)), np.isfinite(x))
    np.testing.assert_array_equal(np.asarray(ops.sign(t)), np.sign(x))
    assert ops.isnan(t).dtype == "bool"
    np.testing.assert_array_equal(np.asarray(ops.isfinite(maas.tensor([1, 2]))), [True, True])


def test_logsumexp_infinities():
    x = np.array([[-np.inf, -np.inf], [np.inf, 0.0], [-np.inf, 1.0]], np.float32)
    out = np.asarray(ops.logsumexp(maas.tensor(x), axis=1))
    np.testing.assert_array_equal(out[:2], [-np.inf, np.inf])
    np.testing.assert_allclose(out[2], 1.0)


def test_log1p_expm1_small_inputs_keep_relative_accuracy():
    x = np.array([1e-7, -3e-6, 2e-5, 1e-3, 0.0], np.float32)
    for f, ref in ((ops.log1p, np.log1p), (ops.expm1, np.expm1)):
        np.testing.assert_allclose(np.asarray(f(maas.tensor(x))), ref(x.astype(np.float64)), rtol=2e-7)
    # every band of the piecewise forms (series < 1e-3 <= Kahan < 1 <= plain)
    x = np.concatenate([np.linspace(-0.999, 5, 2001), np.linspace(-1e-2, 1e-2, 2001),
                        [1e-3, -1e-3, 1.0, 0.999999, 30.0]]).astype(np.float32)
    for f, ref in ((ops.log1p, np.log1p), (ops.expm1, np.expm1)):
        np.testing.assert_allclose(np.asarray(f(maas.tensor(x))), ref(x.astype(np.float64)), rtol=3e-7,
                                   atol=1e-30)
    assert ops.reciprocal(maas.tensor(np.float32(2.0))).shape == ()
    assert np.asarray(ops.log1p(maas.tensor(np.float32(np.inf)))) == np.inf
    assert np.asarray(ops.log1p(maas.tensor(np.float32(-1.0)))) == -np.inf
    assert np.asarray(ops.expm1(maas.tensor(np.float32(-np.inf)))) == -1.0


def test_where_non_finite_in_unselected_branch_is_nan_as_documented():
    c = maas.tensor([True, False])
    out = np.asarray(ops.where(c, maas.tensor([1.0, np.inf]), maas.tensor([np.inf, 2.0])))
    assert np.isnan(out).all()  # inf * 0 in the dropped branch (see where's docstring)
    out = np.asarray(ops.where(c, maas.tensor([1.0, 5.0]), maas.tensor([9.0, 2.0])))
    np.testing.assert_array_equal(out, [1.0, 2.0])


def test_where_condition_only_gives_indices():
    idx = ops.where(maas.tensor(np.array([[0.0, 1.0], [2.0, 0.0]], np.float32)))
    assert [np.asarray(i).tolist() for i in idx] == [[0, 1], [1, 0]]


def test_cumprod_and_prod_with_zeros():
    x = np.array([[2.0, 0.0, 3.0, -1.0]], np.float32)
    np.testing.assert_array_equal(np.asarray(ops.cumprod(maas.tensor(x), axis=1)), np.cumprod(x, axis=1))
    t = maas.tensor(x, requires_grad=True)
    with maas.GradientTape() as tape:
        p = ops.prod(t)
    g = np.asarray(tape.gradient(p, t))
    np.testing.assert_array_equal(g, [[0.0, -6.0, 0.0, 0.0]])


def test_argsort_and_top_k_indices():
    x = np.array([[3.0, 1.0, 2.0], [0.5, 2.5, 1.5]], np.float32)
    a = ops.argsort(maas.tensor(x))
    assert a.dtype == "int32"
    np.testing.assert_array_equal(np.asarray(a), np.argsort(x, axis=-1))
    v, i = ops.top_k(maas.tensor(x), 2)
    assert i.dtype == "int32"
    np.testing.assert_array_equal(np.asarray(i), [[0, 2], [1, 2]])
    np.testing.assert_array_equal(np.asarray(v), [[3.0, 2.0], [2.5, 1.5]])


def test_count_nonzero_and_logical_not():
    x = np.array([[0.0, 1.0], [2.0, 0.0]], np.float32)
    assert ops.count_nonzero(maas.tensor(x)).tolist() == 2
    np.testing.assert_array_equal(np.asarray(ops.count_nonzero(maas.tensor(x), axis=0)), [1, 1])
    np.testing.assert_array_equal(np.asarray(ops.logical_not(maas.tensor(x))), x == 0)


def test_floor_matches_numpy():
    x = np.array([-2.5, -2.0, -0.3, 0.0, 0.7, 3.0, 1e6 + 0.5], np.float32)
    np.testing.assert_array_equal(np.asarray(ops.floor(maas.tensor(x))), np.floor(x))


# --------------------------------------------------------------- constants


def test_constant_builders_match_numpy():
    np.testing.assert_array_equal(np.asarray(ops.eye(3, 4, k=1)), np.eye(3, 4, 1, dtype=np.float32))
    assert ops.eye(2, dtype="int32").dtype == "int32"
    np.testing.assert_array_equal(np.asarray(ops.identity(3)), np.eye(3))
    a = ops.arange(5)
    assert a.dtype == "int32" and a.tolist() == [0, 1, 2, 3, 4]
    assert ops.arange(1, 10, 3).tolist() == [1, 4, 7]
    f = ops.arange(0.0, 1.0, 0.25)
    assert f.dtype == "float32" and f.tolist() == [0.0, 0.25, 0.5, 0.75]
    np.testing.assert_allclose(np.asarray(ops.linspace(0, 1, 5)), np.linspace(0, 1, 5), rtol=1e-7)
    np.testing.assert_allclose(np.asarray(ops.linspace(0, 1, 4, endpoint=False)),
                               np.linspace(0, 1, 4, endpoint=False), rtol=1e-7)
    v, step = ops.linspace(0, 2, 5, retstep=True)
    assert step == 0.5 and v.shape == (5,)
    full = ops.full((2, 3), 4.5)
    assert full.dtype == "float32" and np.all(np.asarray(full) == 4.5)
    assert ops.full(3, 2, dtype="int64").tolist() == [2, 2, 2]
    x = maas.tensor(np.arange(6, dtype=np.int32).reshape(2, 3))
    assert ops.zeros_like(x).dtype == "int32" and ops.zeros_like(x).shape == (2, 3)
    assert ops.ones_like(x, dtype="float32").dtype == "float32"
    np.testing.assert_array_equal(np.asarray(ops.full_like(x, 7)), np.full((2, 3), 7))


def test_ones_zeros_take_keras_shape_keyword_and_dtype():
    assert ops.ones(shape=(2, 3)).shape == (2, 3)
    assert ops.zeros(shape=(4,)).dtype == "float32"
    z = ops.zeros(shape=(2,), dtype="int32")
    assert z.dtype == "int32" and z.tolist() == [0, 0]
    assert ops.ones((2,), dtype="bool").tolist() == [True, True]


def test_one_hot_matches_numpy():
    labels = np.array([[0, 2], [1, 5]])  # 5 is out of range: a zero row, as Keras
    ref = (labels[..., None] == np.arange(3)).astype(np.float32)
    out = ops.one_hot(maas.tensor(labels), 3)
    assert out.dtype == "float32"
    np.testing.assert_array_equal(np.asarray(out), ref)
    np.testing.assert_array_equal(np.asarray(ops.one_hot(labels, 3, axis=0)), np.moveaxis(ref, -1, 0))
    np.testing.assert_array_equal(np.asarray(ops.one_hot([1], 2, dtype="int32")), [[0, 1]])


# --------------------------------------------------------------- errors


def test_unsupported_forms_raise_clear_errors():
    x = maas.tensor(np.ones((2, 3), np.float32))
    with pytest.raises(NotImplementedError, match="'ij,jk->ki'"):
        ops.einsum("ij,jk->ki", x, x)
    with pytest.raises(NotImplementedError, match="SVD"):
        ops.norm(x, ord=2)
    with pytest.raises(NotImplementedError, match="constant"):
        ops.pad(x, 1, mode="reflect")
    with pytest.raises(ValueError, match="equal sections"):
        ops.split(x, 2, axis=1)
    with pytest.raises(ValueError, match="cannot squeeze"):
        ops.squeeze(x, 0)
    with pytest.raises(IndexError):
        ops.take(x, [6])


# --------------------------------------------------------------- tracing


def test_composed_ops_train_in_a_traced_fit():
    """A model whose forward uses composed ops (cumsum, flip, where, pad,
    take, logsumexp, norm, sort-free ops only) is traced into a plan (no
    eager fallback, no warning) and gives the eager path's bits."""
    import warnings

    from maas import layers
    from maas.engine import CompiledPlan

    class Mix(layers.Layer):
        def call(self, x):
            y = ops.cumsum(ops.flip(x, 1), axis=1)
            y = ops.where(ops.greater(x, 0.0), y, ops.square(x))
            y = ops.take(ops.pad(y, ((0, 0), (1, 1))), [0, 2, 3, 1, 5, 4], axis=1)
            y = ops.concatenate([ops.tile(ops.prod(ops.expm1(y), axis=1, keepdims=True), (1, 2)),
                                 ops.roll(y, 1, axis=1)], axis=1)
            return ops.stack([ops.logsumexp(y, axis=1), ops.norm(y, axis=1)], axis=1)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 4)).astype(np.float32)
    y = rng.standard_normal((32, 2)).astype(np.float32)
    out = []
    for eager in (False, True):
        maas.utils.set_random_seed(3)
        m = maas.Sequential([layers.Input((4,)), layers.Dense(4), Mix(), layers.Dense(2)])
        m.compile(optimizer="sgd", loss="mse", run_eagerly=eager)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            h = m.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
        out.append((m, h.history))
    (mp, hp), (me, he) = out
    assert isinstance(mp._plan, CompiledPlan) and mp._plan.traced_shapes() >= 1
    assert mp._plan.eager_reason is None
    assert hp == he
    for a, b in zip(mp.get_weights(), me.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert hp["loss"][1] < hp["loss"][0]


def test_docstring_examples_run():
    import doctest
    from maas import _ops_extra
    r = doctest.testmod(_ops_extra, extraglobs={"maas": maas, "np": np},
                        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert r.failed == 0 and r.attempted >= 50
