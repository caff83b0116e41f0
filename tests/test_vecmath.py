"""The vectorized transcendentals (csrc/ops/vecmath.c) through the ops that use
them, in both implementations: the AVX2+FMA kernels (chosen at run time by
cpuid) and the portable libm path (forced with MAAS_ISA=portable). Each runs
in its own subprocess, on the same inputs: a dense sweep of the op's useful
range, a strided walk over every float32 binade of both signs, and the edges
(0, -0, tiny, subnormal, huge, +-inf, NaN, exp's overflow and underflow
thresholds, large |x| for tanh/sigmoid/erf). Forward values are checked
against float64 NumPy/SciPy in ulp of float32 at the exact value (the
bounds of csrc/vecmath.h composed with the op's own float32 arithmetic),
derivatives against the float64 derivative, softmax and the crossentropy
losses against float64 references on rows long enough to take the threaded
path, and the threaded blocks against one thread, bit for bit.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import special  # a dependency of scikit-learn (the test extra)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY32 = float(np.finfo(np.float32).tiny)
SQRT1_2 = math.sqrt(0.5)
SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


def has_avx2_fma() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx2" in flags and "fma" in flags


# ------------------------------------------------------------------ inputs

def sweep(lo: float, hi: float, dense: int = 100_001, stride: int = 6151,
          lo_all: float = -np.inf, hi_all: float = np.inf) -> np.ndarray:
    """A linear sweep of [lo, hi], every `stride`-th float32 bit pattern of
    both signs restricted to [lo_all, hi_all], and the special values."""
    bits = np.arange(0, 0x7F800000, stride, dtype=np.uint32)
    walk = bits.view(np.float32)
    walk = np.concatenate([walk, -walk])
    walk = walk[(walk >= lo_all) & (walk <= hi_all)]
    special_ = np.array([0.0, -0.0, TINY32, -TINY32, 1e-45, -1e-45, 1e-30, -1e-30, 1e-7, -1e-7,
                         1.0, -1.0, 3e38, -3e38, np.inf, -np.inf, np.nan,
                         88.72283, 88.72284, 89.0, -87.33654, -87.34, -103.972, -103.98, -104.0,
                         -150.0, 9.0, -9.0, 10.0, -10.0, 3.9, 4.0 * math.sqrt(2), -4.0 * math.sqrt(2),
                         0.921875 * math.sqrt(2), -0.921875 * math.sqrt(2), 0.3465736, -0.3465736,
                         -17.5, -17.3, 80.0, 80.1, 0.70710677, 1.0000001, 0.99999994], np.float32)
    return np.concatenate([np.linspace(lo, hi, dense, dtype=np.float32), walk,
                           special_]).astype(np.float32)


# op -> (input sweep, float64 forward, float64 derivative)
def np_sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def np_gelu(x):
    return 0.5 * x * (1 + special.erf(x * SQRT1_2))


def np_gelu_d(x):
    return 0.5 * (1 + special.erf(x * SQRT1_2)) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def np_gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)))


def np_gelu_tanh_d(x):
    t = np.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x ** 3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)


OPS = {
    "exp": (lambda: sweep(-104, 89, lo_all=-110, hi_all=100), np.exp, np.exp),
    "log": (lambda: np.abs(sweep(1e-3, 100)), np.log, lambda x: 1 / x),
    "tanh": (lambda: sweep(-12, 12), np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    "sigmoid": (lambda: sweep(-110, 30), np_sigmoid, lambda x: np_sigmoid(x) * (1 - np_sigmoid(x))),
    "elu": (lambda: sweep(-20, 5), lambda x: np.where(x > 0, x, np.expm1(x)),
            lambda x: np.where(x > 0, 1.0, np.exp(np.minimum(x, 0)))),
    "softplus": (lambda: sweep(-90, 90), lambda x: np.logaddexp(0, x), np_sigmoid),
    "silu": (lambda: sweep(-90, 30), lambda x: x * np_sigmoid(x),
             lambda x: np_sigmoid(x) * (1 + x * (1 - np_sigmoid(x)))),
    "gelu": (lambda: sweep(-10, 10, lo_all=-1e4, hi_all=1e4), np_gelu, np_gelu_d),
    "gelu_tanh": (lambda: sweep(-10, 10, lo_all=-1e4, hi_all=1e4), np_gelu_tanh, np_gelu_tanh_d),
}

# The worker: applies every op (forward, and the gradient of sum(f(x)) by
# the tape, i.e. f'(x)) with 1 and 2 threads, and softmax / the losses.
WORKER = r"""
import sys, numpy as np, maas
from maas import ops, losses
inp = dict(np.load(sys.argv[1]))
f = {
    "exp": ops.exp, "log": ops.log, "tanh": ops.tanh, "sigmoid": ops.sigmoid,
    "elu": ops.elu, "softplus": ops.softplus, "silu": ops.silu,
    "gelu": lambda x: ops.gelu(x, approximate=False), "gelu_tanh": ops.gelu,
}
out = {}
for nt in (1, 2):
    maas._core.set_num_threads(nt)
    for name, fn in f.items():
        x = maas.tensor(inp[name], requires_grad=True)
        with maas.GradientTape() as tape:
            y = fn(x)
            s = y.sum()
        out[f"{name}/fwd/{nt}"] = np.asarray(y)
        out[f"{name}/grad/{nt}"] = np.asarray(tape.gradient(s, x))
    z = inp["logits"]
    for tag, fn in (("softmax", ops.softmax), ("log_softmax", ops.log_softmax)):
        x = maas.tensor(z, requires_grad=True)
        with maas.GradientTape() as tape:
            y = fn(x, axis=-1)
            s = (y * maas.tensor(inp["r"])).sum()
        out[f"{tag}/fwd/{nt}"] = np.asarray(y)
        out[f"{tag}/grad/{nt}"] = np.asarray(tape.gradient(s, x))
    for tag, fn, yt in (
            ("cce", lambda y, p: losses.categorical_crossentropy(y, p, from_logits=True), inp["onehot"]),
            ("scce", lambda y, p: losses.sparse_categorical_crossentropy(y, p, from_logits=True),
             inp["labels"]),
            ("bce", lambda y, p: losses.binary_crossentropy(y, p, from_logits=True), inp["binary"]),
            ("bce_probs", lambda y, p: losses.binary_crossentropy(y, p), inp["binary"]),
            ("cce_probs", lambda y, p: losses.categorical_crossentropy(y, p), inp["onehot"])):
        p = inp["probs"] if tag.endswith("probs") else z
        x = maas.tensor(p, requires_grad=True)
        with maas.GradientTape() as tape:
            y = fn(yt, x)
            s = y.sum()
        out[f"{tag}/fwd/{nt}"] = np.asarray(y)
        out[f"{tag}/grad/{nt}"] = np.asarray(tape.gradient(s, x))
np.savez(sys.argv[2], **out)
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = {name: gen() for name, (gen, _, _) in OPS.items()}
    rng = np.random.default_rng(8)
    rows, n = 64, 1000  # 64000 elements: above MAAS_PAR_THRESHOLD, threaded
    d["logits"] = rng.normal(0, 4, (rows, n)).astype(np.float32)
    d["logits"][0, :] += 80.0  # large logits
    d["r"] = rng.normal(0, 1, (rows, n)).astype(np.float32)
    d["labels"] = rng.integers(0, n, rows).astype(np.int64)
    d["onehot"] = np.eye(n, dtype=np.float32)[d["labels"]]
    d["binary"] = (rng.random((rows, n)) < 0.3).astype(np.float32)
    d["probs"] = rng.uniform(1e-4, 1.0, (rows, n)).astype(np.float32)
    path = tmp_path_factory.mktemp("vecmath") / "inputs.npz"
    np.savez(path, **d)
    return path, d


def run_worker(inp_path, isa: str | None):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("MAAS_ISA", None)
    if isa:
        env["MAAS_ISA"] = isa
    out_path = str(inp_path) + f".{isa or 'auto'}.npz"
    subprocess.run([sys.executable, "-c", WORKER, str(inp_path), out_path], env=env, check=True,
                   timeout=600, cwd=ROOT)
    return dict(np.load(out_path))


@pytest.fixture(scope="module")
def results(inputs):
    path, _ = inputs
    return {"auto": run_worker(path, None), "portable": run_worker(path, "portable")}


# ---------------------------------------------------------------- measures

def ulp_of(r: np.ndarray) -> np.ndarray:
    """The spacing of float32 at the exact value r (2^-149 below FLT_MIN)."""
    a = np.abs(r)
    e = np.frexp(np.maximum(a, TINY32))[1]
    return np.ldexp(1.0, e - 24)


def ulp_errors(y: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """|y - ref| in ulp of ref; special values (NaN, +-inf, overflowed
    results) must match exactly (inf error otherwise)."""
    y = y.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        rf = ref.astype(np.float32).astype(np.float64)
        special_ = ~np.isfinite(rf) | ~np.isfinite(y)
        err = np.abs(y - ref) / ulp_of(ref)
    same = (y == rf) | (np.isnan(y) & np.isnan(rf))
    err[special_] = np.where(same[special_], 0.0, np.inf)
    return err


# Forward: max ulp of float32 at the exact value, (auto, portable). Beyond
# the bare function (vecmath.h), each op rounds its own float32 arithmetic.
FWD_ULP = {
    "exp": (1.5, 1), "log": (1, 1), "tanh": (3, 3), "sigmoid": (3, 3), "elu": (2, 1),
    "softplus": (3, 2),
}


@pytest.mark.parametrize("isa", ["auto", "portable"])
@pytest.mark.parametrize("op", sorted(FWD_ULP))
def test_forward_within_ulp_bound_of_float64(results, inputs, op, isa):
    x = inputs[1][op].astype(np.float64)
    with np.errstate(all="ignore"):
        ref = OPS[op][1](x)
    y = results[isa][f"{op}/fwd/1"]
    err = ulp_errors(y, ref)
    bound = FWD_ULP[op][0 if isa == "auto" else 1]
    worst = int(np.nanargmax(err))
    assert err[worst] <= bound, (
        f"{op} ({isa}): {err[worst]:.3f} ulp at x = {x[worst]!r}: got {y[worst]!r}, "
        f"want {ref[worst]!r}")


# gelu: 0.5 x (1 + erf(x / sqrt 2)) cancels for negative x (as in every
# float32 implementation, PyTorch's included), so the bound is in ulp of
# max(|gelu(x)|, |x| / 2): that of the 1 + erf sum, scaled by x / 2. silu:
# x sigmoid(x) is normal where sigmoid(x) is subnormal (x < -87), so its
# ulp is of max(|silu(x)|, |x| FLT_MIN): the sigmoid's, scaled by x.
SCALED_ULP = {"gelu": ((3, 3), 0.5), "gelu_tanh": ((3, 3), 0.5), "silu": ((4, 4), TINY32)}


@pytest.mark.parametrize("isa", ["auto", "portable"])
@pytest.mark.parametrize("op", sorted(SCALED_ULP))
def test_gelu_silu_within_scaled_bound_of_float64(results, inputs, op, isa):
    x = inputs[1][op].astype(np.float64)
    with np.errstate(all="ignore"):
        ref = OPS[op][1](x)
    y = results[isa][f"{op}/fwd/1"].astype(np.float64)
    fin = np.isfinite(x)
    bounds, k = SCALED_ULP[op]
    scale = ulp_of(np.maximum(np.abs(ref), k * np.abs(x)))
    err = np.abs(y[fin] - ref[fin]) / scale[fin]
    bound = bounds[0 if isa == "auto" else 1]
    worst = int(np.argmax(err))
    assert err[worst] <= bound, (
        f"{op} ({isa}): {err[worst]:.3f} ulp at x = {x[fin][worst]!r}")
    # x at +inf, NaN for NaN (at -inf, -inf * 0 is NaN: as in PyTorch)
    xi = inputs[1][op]
    yi = results[isa][f"{op}/fwd/1"]
    assert yi[xi == np.inf].tolist() == [np.inf]
    assert np.all(np.isnan(yi[np.isnan(xi)]))


# Derivatives: |g - f'| <= rtol |f'| + atol c(x) + 2^-148. f' is computed
# from float32 values, e.g. s (1 - s) or x (1 - s), so it has absolute
# accuracy (ulp(1) times the factor c(x) = 1 + |x| that multiplies it; for
# gelu_tanh's 0.5 x (1 - t^2) u'(x), with 1 - t^2 ~ 2 (1 + t) near t = -1,
# c(x) = 1 + |x| u'(x)), not relative; subnormal results hold few bits.
def c_lin(x):
    return 1 + np.abs(x)


def c_gelu_tanh(x):
    return 1 + np.abs(x) * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)


GRAD_TOL = {
    "exp": (4e-7, 0, c_lin), "log": (2e-7, 0, c_lin), "tanh": (4e-7, 1.2e-7, c_lin),
    "sigmoid": (4e-7, 1.2e-7, c_lin), "elu": (2e-7, 0, c_lin), "softplus": (4e-7, 1.2e-7, c_lin),
    "silu": (4e-7, 1.2e-7, c_lin), "gelu": (4e-7, 1.2e-7, c_lin),
    "gelu_tanh": (4e-7, 1.2e-7, c_gelu_tanh),
}


@pytest.mark.parametrize("isa", ["auto", "portable"])
@pytest.mark.parametrize("op", sorted(GRAD_TOL))
def test_derivative_matches_float64(results, inputs, op, isa):
    x = inputs[1][op].astype(np.float64)
    with np.errstate(all="ignore"):
        ref = OPS[op][2](x)
    g = results[isa][f"{op}/grad/1"].astype(np.float64)
    ok = np.isfinite(ref) & (np.abs(ref) < 1e30) & (np.abs(x) < 1e30)
    rtol, atol, c = GRAD_TOL[op]
    x, g, ref = x[ok], g[ok], ref[ok]
    err = np.abs(g - ref) - rtol * np.abs(ref) - atol * c(x) - 2.0 ** -148
    worst = int(np.argmax(err))
    assert err[worst] <= 0, (
        f"{op}' ({isa}): at x = {x[worst]!r} got {g[worst]!r}, want {ref[worst]!r}")
    assert np.isnan(results[isa][f"{op}/grad/1"][np.isnan(inputs[1][op])]).all()


def test_special_values_exact(results, inputs):
    for isa in ("auto", "portable"):
        r = results[isa]
        for op, cases in {
            "exp": {np.inf: np.inf, -np.inf: 0.0, 0.0: 1.0, 88.72284: np.inf, 89.0: np.inf,
                    -104.0: 0.0},
            "log": {0.0: -np.inf, np.inf: np.inf, 1.0: 0.0},
            "tanh": {np.inf: 1.0, -np.inf: -1.0, 10.0: 1.0, -10.0: -1.0, 0.0: 0.0},
            "sigmoid": {np.inf: 1.0, -np.inf: 0.0, 0.0: 0.5, -110.0: 0.0},
            "elu": {-np.inf: -1.0, np.inf: np.inf, -20.0: -1.0},
            "softplus": {np.inf: np.inf, -np.inf: 0.0},
        }.items():
            x, y = inputs[1][op], r[f"{op}/fwd/1"]
            for xv, want in cases.items():
                got = y[x == np.float32(xv)]
                assert got.size and np.all(got == np.float32(want)), (op, isa, xv, got, want)
            assert np.all(np.isnan(y[np.isnan(x)])), (op, isa, "NaN")
        x, y = inputs[1]["exp"], r["exp/fwd/1"]
        assert np.isfinite(y[x == np.float32(88.72283)]).all()  # the last finite one
        assert (y[x == np.float32(-103.972)] > 0).all()  # the last nonzero one
        x, y = inputs[1]["tanh"], r["tanh/fwd/1"]
        assert np.signbit(y[(x == 0) & np.signbit(x)]).all()  # tanh(-0) = -0


def test_threads_give_the_same_bits(results):
    for isa in ("auto", "portable"):
        r = results[isa]
        for key in r:
            if key.endswith("/1"):
                other = key[:-1] + "2"
                np.testing.assert_array_equal(r[key], r[other], err_msg=f"{key} ({isa})")


def test_portable_switch_selects_the_other_implementation(results):
    """On an AVX2+FMA machine MAAS_ISA=portable must run different code:
    polynomials and libm agree within a few ulp but not in every bit."""
    if not has_avx2_fma():
        pytest.skip("the CPU has no AVX2+FMA: both runs are the portable path")
    a, p = results["auto"], results["portable"]
    for op in ("exp", "tanh", "sigmoid", "gelu"):
        assert not np.array_equal(a[f"{op}/fwd/1"], p[f"{op}/fwd/1"], equal_nan=True), op


def log_softmax64(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.mark.parametrize("isa", ["auto", "portable"])
def test_softmax_and_log_softmax_match_float64(results, inputs, isa):
    d, r = inputs[1], results[isa]
    z, w = d["logits"].astype(np.float64), d["r"].astype(np.float64)
    ls = log_softmax64(z)
    sm = np.exp(ls)
    np.testing.assert_allclose(r["softmax/fwd/1"], sm, rtol=2e-6, atol=1e-12)
    np.testing.assert_allclose(r["log_softmax/fwd/1"], ls, rtol=2e-6, atol=2e-6)
    gs = sm * (w - (w * sm).sum(-1, keepdims=True))
    gl = w - sm * w.sum(-1, keepdims=True)
    np.testing.assert_allclose(r["softmax/grad/1"], gs, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(r["log_softmax/grad/1"], gl, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("isa", ["auto", "portable"])
def test_crossentropy_losses_match_float64(results, inputs, isa):
    d, r = inputs[1], results[isa]
    z = d["logits"].astype(np.float64)
    n = z.shape[1]
    ls = log_softmax64(z)
    sm = np.exp(ls)
    oh, lab, yb = d["onehot"].astype(np.float64), d["labels"], d["binary"].astype(np.float64)
    np.testing.assert_allclose(r["cce/fwd/1"], -(oh * ls).sum(-1), rtol=2e-6)
    np.testing.assert_allclose(r["cce/grad/1"], sm - oh, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(r["scce/fwd/1"], -ls[np.arange(len(lab)), lab], rtol=2e-6)
    np.testing.assert_allclose(r["scce/grad/1"], sm - oh, rtol=1e-5, atol=1e-9)
    bce = (np.maximum(z, 0) - z * yb + np.log1p(np.exp(-np.abs(z)))).mean(-1)
    np.testing.assert_allclose(r["bce/fwd/1"], bce, rtol=2e-6)
    # sigmoid(z) - 1 cancels: absolute accuracy ulp(1) / n
    np.testing.assert_allclose(r["bce/grad/1"], (np_sigmoid(z) - yb) / n, rtol=1e-5,
                               atol=2 * 2.0 ** -24 / n)
    p = np.clip(d["probs"].astype(np.float64), 1e-7, 1 - 1e-7)
    bcep = -(yb * np.log(p) + (1 - yb) * np.log1p(-p)).mean(-1)
    np.testing.assert_allclose(r["bce_probs/fwd/1"], bcep, rtol=2e-6)
    q = d["probs"].astype(np.float64)
    q = np.clip(q / q.sum(-1, keepdims=True), 1e-7, 1 - 1e-7)
    np.testing.assert_allclose(r["cce_probs/fwd/1"], -(oh * np.log(q)).sum(-1), rtol=2e-6)


if __name__ == "__main__":  # prints the measured maxima (what the bounds were set from)
    import tempfile
    with tempfile.TemporaryDirectory() as tdir:
        d = {name: gen() for name, (gen, _, _) in OPS.items()}
        rng = np.random.default_rng(8)
        d.update(logits=rng.normal(0, 4, (4, 10)).astype(np.float32),
                 r=rng.normal(0, 1, (4, 10)).astype(np.float32), labels=np.zeros(4, np.int64),
                 onehot=np.eye(10, dtype=np.float32)[np.zeros(4, int)],
                 binary=np.zeros((4, 10), np.float32), probs=np.full((4, 10), 0.5, np.float32))
        path = os.path.join(tdir, "in.npz")
        np.savez(path, **d)
        rep = {}
        for isa in ("auto", "portable"):
            r = run_worker(path, None if isa == "auto" else isa)
            for op, (_, f, fd) in OPS.items():
                x = d[op].astype(np.float64)
                with np.errstate(all="ignore"):
                    ref, refd = f(x), fd(x)
                y = r[f"{op}/fwd/1"].astype(np.float64)
                fin = np.isfinite(x)
                e_ulp = float(np.nanmax(ulp_errors(r[f"{op}/fwd/1"], ref)))
                sc = ulp_of(np.maximum(np.abs(ref), 0.5 * np.abs(x)))
                e_g = float(np.max(np.abs(y - ref)[fin] / sc[fin]))
                g = r[f"{op}/grad/1"].astype(np.float64)
                ok = np.isfinite(refd) & (np.abs(refd) < 1e30)
                rel = np.abs(g - refd)[ok] / np.maximum(np.abs(refd)[ok], 1e-30)
                ab = np.abs(g - refd)[ok]
                rep[f"{op}/{isa}"] = dict(ulp=e_ulp, gelu_scaled=e_g,
                                          grad_abs_where_rel_gt_1e6=float(ab[rel > 4e-7].max(initial=0)),
                                          grad_rel_where_abs_small=float(rel[ab > 1e-7].max(initial=0)))
        print(json.dumps(rep, indent=1))
