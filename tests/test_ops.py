"""Every op of maas.ops: forward against a float64 NumPy reference, gradients
from maas.GradientTape against central finite differences of that reference,
and forward and gradients against PyTorch; then the tape's behaviour, edge
cases (large logits, empty tensors) and error paths.

Tolerances (stated once, used everywhere unless a case says otherwise):

* forward vs float64 NumPy: rtol 1e-5, atol 1e-6 (float32 rounding of a
  handful of flops; the atol is for results that cancel to ~0).
* gradient vs central finite differences (float64, step 1e-6, computed on
  the NumPy reference): rtol 1e-4, atol 1e-5 * max(1, max|fd|). The FD error
  is ~1e-9; the rest is float32 rounding in maas's backward pass.
* forward and gradients vs PyTorch (torch.float32): rtol 1e-5 with an
  absolute floor of 1e-6 * max(1, max|torch|), since both sides round in
  float32 but sum in different orders.

The loss for gradient checks is sum(out * R) for a fixed random R.
Every random draw comes from a NumPy generator seeded from the case id.
"""
from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import maas
from maas import ops

torch.set_num_threads(1)

FWD_RTOL, FWD_ATOL = 1e-5, 1e-6
FD_RTOL, FD_ATOL, FD_STEP = 1e-4, 1e-5, 1e-6
TORCH_RTOL, TORCH_ATOL = 1e-5, 1e-6


def rng_for(name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(name.encode()))


# ----------------------------------------------------------------- case table


@dataclass
class Case:
    id: str
    maas: Callable          # (*maas Tensors) -> maas Tensor
    np: Callable            # (*float64 arrays) -> float64 array
    torch: Callable | None  # (*torch tensors) -> torch tensor; None: no torch check
    inputs: Callable        # rng -> list of float32 arrays (all differentiated)
    grad: bool = True       # False: forward only (comparisons)
    fwd_atol: float = FWD_ATOL
    fd_atol: float = FD_ATOL
    torch_atol: float = TORCH_ATOL
    exact: bool = False     # forward must match bit for bit (copies, comparisons)
    marks: list = field(default_factory=list)


def uniform(lo, hi):
    return lambda rng, shape: rng.uniform(lo, hi, shape).astype(np.float32)


def away_from(kinks, lo, hi, margin=0.1):
    """Uniform values in [lo, hi] at least `margin` from each kink."""
    def gen(rng, shape):
        x = rng.uniform(lo, hi, shape)
        for _ in range(1000):
            bad = np.zeros(np.shape(x), bool)
            for k in kinks:
                bad |= np.abs(x - k) < margin
            if not bad.any():
                break
            x = np.where(bad, rng.uniform(lo, hi, np.shape(x)), x)
        assert not bad.any()
        return np.asarray(x, np.float32)
    return gen


def np_erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def np_sigmoid(x):
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))


def np_softplus(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def np_gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def np_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_log_softmax(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


CASES: list[Case] = []

# ---- unary ops: (name, maas fn, numpy fn, torch fn, generator)
UNARY = [
    ("relu", ops.relu, lambda x: np.maximum(x, 0), F.relu, away_from([0], -3, 3)),
    ("relu6", ops.relu6, lambda x: np.clip(x, 0, 6), F.relu6, away_from([0, 6], -3, 9)),
    ("leaky_relu", ops.leaky_relu, lambda x: np.where(x > 0, x, 0.2 * x),
     lambda x: F.leaky_relu(x, 0.2), away_from([0], -3, 3)),
    ("leaky_relu_0.05", lambda x: ops.leaky_relu(x, negative_slope=0.05),
     lambda x: np.where(x > 0, x, 0.05 * x), lambda x: F.leaky_relu(x, 0.05), away_from([0], -3, 3)),
    ("elu", ops.elu, lambda x: np.where(x > 0, x, np.expm1(x)), F.elu, away_from([0], -3, 3)),
    ("elu_alpha0.7", lambda x: ops.elu(x, alpha=0.7), lambda x: np.where(x > 0, x, 0.7 * np.expm1(x)),
     lambda x: F.elu(x, alpha=0.7), away_from([0], -3, 3)),
    ("gelu_tanh", ops.gelu, np_gelu_tanh, lambda x: F.gelu(x, approximate="tanh"), uniform(-4, 4)),
    ("gelu_erf", lambda x: ops.gelu(x, approximate=False),
     lambda x: 0.5 * x * (1 + np_erf(x / math.sqrt(2))), lambda x: F.gelu(x, approximate="none"),
     uniform(-4, 4)),
    ("sigmoid", ops.sigmoid, np_sigmoid, torch.sigmoid, uniform(-6, 6)),
    ("tanh", ops.tanh, np.tanh, torch.tanh, uniform(-3, 3)),
    ("softplus", ops.softplus, np_softplus, F.softplus, uniform(-6, 6)),
    ("silu", ops.silu, lambda x: x * np_sigmoid(x), F.silu, uniform(-6, 6)),
    ("swish_alias", ops.swish, lambda x: x * np_sigmoid(x), F.silu, uniform(-2, 2)),
    ("exp", ops.exp, np.exp, torch.exp, uniform(-3, 3)),
    ("log", ops.log, np.log, torch.log, uniform(0.2, 5)),
    ("sqrt", ops.sqrt, np.sqrt, torch.sqrt, uniform(0.2, 5)),
    ("negative", ops.negative, np.negative, torch.neg, uniform(-3, 3)),
    ("abs", ops.abs, np.abs, torch.abs, away_from([0], -3, 3)),
    ("square", ops.square, np.square, torch.square, uniform(-3, 3)),
    ("power_scalar_2", lambda x: ops.power(x, 2), lambda x: x ** 2, lambda x: torch.pow(x, 2),
     uniform(-3, 3)),
    ("power_scalar_3", lambda x: ops.power(x, 3.0), lambda x: x ** 3, lambda x: torch.pow(x, 3.0),
     uniform(-2, 2)),
    ("power_scalar_2.5", lambda x: ops.power(x, 2.5), lambda x: x ** 2.5,
     lambda x: torch.pow(x, 2.5), uniform(0.2, 3)),
    ("power_scalar_-1.5", lambda x: ops.power(x, -1.5), lambda x: x ** -1.5,
     lambda x: torch.pow(x, -1.5), uniform(0.5, 3)),
    ("power_scalar_0.5", lambda x: ops.power(x, 0.5), np.sqrt, torch.sqrt, uniform(0.2, 3)),
    ("op_neg", lambda x: -x, np.negative, torch.neg, uniform(-3, 3)),
    ("op_abs", lambda x: abs(x), np.abs, torch.abs, away_from([0], -3, 3)),
    ("op_pow_scalar", lambda x: x ** 2, np.square, torch.square, uniform(-3, 3)),
    ("clip", lambda x: ops.clip(x, -0.5, 1.0), lambda x: np.clip(x, -0.5, 1.0),
     lambda x: torch.clamp(x, -0.5, 1.0), away_from([-0.5, 1.0], -2, 2)),
]


def _random_shape(name):
    rng = rng_for("shape/" + name)
    nd = int(rng.integers(1, 4))
    return tuple(int(d) for d in rng.integers(1, 5, nd))


for name, mf, nf, tf, gen in UNARY:
    for shape in dict.fromkeys([(), (1,), (2, 1, 3), (4, 5), _random_shape(name)]):
        CASES.append(Case(f"{name}-{shape}", mf, nf, tf,
                          (lambda g, s: lambda rng: [g(rng, s)])(gen, shape)))

# ---- softmax / log_softmax over several axes
for shape, axis in [((5,), 0), ((5,), -1), ((1, 4), -1), ((1, 4), 0), ((3, 4, 5), 0),
                    ((3, 4, 5), 1), ((3, 4, 5), -1), ((3, 4, 5), -3), ((2, 1, 3), 1)]:
    for log in (False, True):
        fn = ops.log_softmax if log else ops.softmax
        ref = np_log_softmax if log else np_softmax
        tref = F.log_softmax if log else F.softmax
        CASES.append(Case(
            f"{'log_softmax' if log else 'softmax'}-{shape}-axis{axis}",
            (lambda f, a: lambda x: f(x, axis=a))(fn, axis),
            (lambda f, a: lambda x: f(x, a))(ref, axis),
            (lambda f, a: lambda x: f(x, dim=a))(tref, axis),
            (lambda s: lambda rng: [uniform(-4, 4)(rng, s)])(shape)))

# ---- binary ops with broadcasting
PAIRS = [((2, 3), (2, 3)), ((4, 3), (3,)), ((3,), (4, 3)), ((4, 1), (1, 5)),
         ((2, 1, 3), (4, 1)), ((), (2, 3)), ((2, 3), ()), ((), ()), ((1,), (1,)), ((1, 1), (3,))]


def separated_pair(gen_a, gen_b, margin=0.05):
    """a, b whose broadcast elements differ by more than `margin` (no kinks
    in maximum/minimum)."""
    def gen(rng, sa, sb):
        a = gen_a(rng, sa)
        for _ in range(1000):
            b = gen_b(rng, sb)
            if np.all(np.abs(a.astype(np.float64) - b) > margin):
                return [a, b]
        raise AssertionError("could not draw separated operands")
    return gen


def plain_pair(gen_a, gen_b):
    return lambda rng, sa, sb: [gen_a(rng, sa), gen_b(rng, sb)]


def nonzero(lo, hi):
    def gen(rng, shape):
        mag = rng.uniform(lo, hi, shape)
        sign = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
        return np.asarray(mag * sign, np.float32)
    return gen


BINARY = [
    ("add", ops.add, np.add, torch.add, plain_pair(uniform(-2, 2), uniform(-2, 2))),
    ("subtract", ops.subtract, np.subtract, torch.sub, plain_pair(uniform(-2, 2), uniform(-2, 2))),
    ("multiply", ops.multiply, np.multiply, torch.mul, plain_pair(uniform(-2, 2), uniform(-2, 2))),
    ("divide", ops.divide, np.divide, torch.div, plain_pair(uniform(-2, 2), nonzero(0.5, 2))),
    ("maximum", ops.maximum, np.maximum, torch.maximum,
     separated_pair(uniform(-2, 2), uniform(-2, 2))),
    ("minimum", ops.minimum, np.minimum, torch.minimum,
     separated_pair(uniform(-2, 2), uniform(-2, 2))),
    ("power", ops.power, np.power, torch.pow, plain_pair(uniform(0.3, 2), uniform(-2, 2))),
]
for name, mf, nf, tf, gen in BINARY:
    for sa, sb in PAIRS:
        CASES.append(Case(f"{name}-{sa}&{sb}", mf, nf, tf,
                          (lambda g, a, b: lambda rng: g(rng, a, b))(gen, sa, sb)))

# a Python scalar on either side (a constant: only the tensor is differentiated)
SCALAR_CASES = [
    ("add", lambda x: ops.add(x, 2.5), lambda x: x + np.float32(2.5), lambda x: x + 2.5),
    ("radd", lambda x: ops.add(2.5, x), lambda x: np.float32(2.5) + x, lambda x: 2.5 + x),
    ("rsub", lambda x: ops.subtract(1.5, x), lambda x: 1.5 - x, lambda x: 1.5 - x),
    ("mul", lambda x: ops.multiply(x, -3), lambda x: x * -3, lambda x: x * -3),
    ("rdiv", lambda x: ops.divide(2.0, x), lambda x: 2.0 / x, lambda x: 2.0 / x),
    ("div", lambda x: ops.divide(x, 4.0), lambda x: x / 4.0, lambda x: x / 4.0),
    ("maximum", lambda x: ops.maximum(x, 0.3), lambda x: np.maximum(x, 0.3),
     lambda x: torch.clamp(x, min=0.3)),
    ("minimum", lambda x: ops.minimum(0.3, x), lambda x: np.minimum(0.3, x),
     lambda x: torch.clamp(x, max=0.3)),
    ("rpow", lambda x: ops.power(maas.tensor(np.float32(1.7)), x), lambda x: np.float32(1.7) ** x,
     lambda x: torch.pow(torch.tensor(1.7), x)),
    ("op_add", lambda x: x + 2.5, lambda x: x + 2.5, lambda x: x + 2.5),
    ("op_rsub", lambda x: 2.0 - x, lambda x: 2.0 - x, lambda x: 2.0 - x),
    ("op_rtruediv", lambda x: 2.0 / x, lambda x: 2.0 / x, lambda x: 2.0 / x),
    ("op_rmul_ndarray", lambda x: np.full(3, 2.0, np.float32) * x,
     lambda x: np.full(3, 2.0) * x, lambda x: torch.full((3,), 2.0) * x),
    ("op_tensor_pow_tensor", lambda x: x ** maas.tensor(np.float32(2.0)), lambda x: x ** 2.0,
     lambda x: x ** 2.0),
]
for name, mf, nf, tf in SCALAR_CASES:
    for shape in [(), (2, 3)]:
        gen = away_from([0, 0.3], 0.2, 2.0) if name in ("rdiv", "op_rtruediv", "op_tensor_pow_tensor") \
            else away_from([0.3], -2, 2)
        CASES.append(Case(f"scalar_{name}-{shape}", mf, nf, tf,
                          (lambda g, s: lambda rng: [g(rng, s)])(gen, shape)))

# ---- comparisons: forward only (1.0 / 0.0), ties included
CMP = [("less", ops.less, np.less, torch.lt), ("less_equal", ops.less_equal, np.less_equal, torch.le),
       ("greater", ops.greater, np.greater, torch.gt),
       ("greater_equal", ops.greater_equal, np.greater_equal, torch.ge),
       ("equal", ops.equal, np.equal, torch.eq), ("not_equal", ops.not_equal, np.not_equal, torch.ne),
       ("op_lt", lambda a, b: a < b, np.less, torch.lt), ("op_ge", lambda a, b: a >= b,
                                                          np.greater_equal, torch.ge),
       ("op_eq", lambda a, b: a == b, np.equal, torch.eq)]
small_ints = lambda rng, s: rng.integers(-2, 3, s).astype(np.float32)  # noqa: E731
for name, mf, nf, tf in CMP:
    for sa, sb in [((4, 3), (3,)), ((4, 1), (1, 5)), ((), (2, 3)), ((2, 1, 3), (4, 1))]:
        CASES.append(Case(f"{name}-{sa}&{sb}", mf,
                          (lambda f: lambda a, b: f(a, b).astype(np.float64))(nf),
                          (lambda f: lambda a, b: f(a, b).float())(tf),
                          (lambda a, b: lambda rng: [small_ints(rng, a), small_ints(rng, b)])(sa, sb),
                          grad=False, exact=True))


# ---- reductions


def np_reduce(f):
    return lambda axis, kd: (lambda x: f(x, axis=axis, keepdims=kd))


def torch_reduce(f):
    def make(axis, kd):
        def run(x):
            dims = tuple(range(x.ndim)) if axis is None else axis
            if x.ndim == 0:
                return f(x.reshape(1), dim=0) if kd else f(x.reshape(1), dim=0)
            return f(x, dim=dims, keepdim=kd)
        return run
    return make


REDUCE = [("sum", ops.sum, np.sum, torch.sum), ("mean", ops.mean, np.mean, torch.mean),
          ("max", ops.max, np.max, torch.amax), ("min", ops.min, np.min, torch.amin)]
for name, mf, nf, tf in REDUCE:
    for shape, axis in [((3, 4, 5), None), ((3, 4, 5), 0), ((3, 4, 5), 1), ((3, 4, 5), -1),
                        ((3, 4, 5), (0, 2)), ((3, 4, 5), (-1, 0)), ((3, 4, 5), (0, 1, 2)),
                        ((1, 3, 1), 0), ((1, 3, 1), None), ((1, 3, 1), (0, -1)), ((6,), 0),
                        ((), None)]:
        for kd in (False, True):
            CASES.append(Case(
                f"{name}-{shape}-axis{axis}-keepdims{kd}",
                (lambda f, a, k: lambda x: f(x, axis=a, keepdims=k))(mf, axis, kd),
                np_reduce(nf)(axis, kd), torch_reduce(tf)(axis, kd),
                (lambda s: lambda rng: [uniform(-2, 2)(rng, s)])(shape),
                fwd_atol=1e-5))
# Tensor methods
for name in ("sum", "mean", "max", "min"):
    nf = getattr(np, name)
    CASES.append(Case(f"method_{name}-axis1-keepdims",
                      (lambda n: lambda x: getattr(x, n)(axis=1, keepdims=True))(name),
                      (lambda f: lambda x: f(x, axis=1, keepdims=True))(nf),
                      (lambda n: lambda x: getattr(torch, {"max": "amax", "min": "amin"}.get(n, n))(
                          x, dim=1, keepdim=True))(name),
                      lambda rng: [uniform(-2, 2)(rng, (3, 4))]))


# ---- matmul


def np_matmul(ta, tb):
    def f(a, b):
        if ta:
            a = np.swapaxes(a, -1, -2)
        if tb:
            b = np.swapaxes(b, -1, -2)
        return np.matmul(a, b)
    return f


def torch_matmul(ta, tb):
    def f(a, b):
        if ta:
            a = a.transpose(-1, -2)
        if tb:
            b = b.transpose(-1, -2)
        return torch.matmul(a, b)
    return f


MATMUL = [((3, 4), (4, 5), False, False), ((1, 4), (4, 1), False, False),
          ((2, 3, 4), (2, 4, 5), False, False), ((2, 3, 4), (4, 5), False, False),
          ((2, 1, 3, 4), (4, 2), False, False), ((4,), (4, 5), False, False),
          ((3, 4), (4,), False, False), ((4,), (4,), False, False), ((2, 3, 4), (4,), False, False),
          ((4, 3), (4, 5), True, False), ((3, 4), (5, 4), False, True), ((4, 3), (5, 4), True, True),
          ((2, 4, 3), (2, 4, 5), True, False), ((2, 3, 4), (2, 5, 4), False, True),
          ((2, 4, 3), (2, 5, 4), True, True), ((2, 3, 4), (5, 4), False, True),
          ((1, 1), (1, 1), True, True)]
for sa, sb, ta, tb in MATMUL:
    CASES.append(Case(f"matmul-{sa}@{sb}-ta{int(ta)}-tb{int(tb)}",
                      (lambda a_, b_: lambda a, b: ops.matmul(a, b, transpose_a=a_, transpose_b=b_))(ta, tb),
                      np_matmul(ta, tb), torch_matmul(ta, tb),
                      (lambda a, b: lambda rng: [uniform(-1, 1)(rng, a), uniform(-1, 1)(rng, b)])(sa, sb),
                      fwd_atol=4e-6, torch_atol=4e-6))
CASES.append(Case("op_matmul-(3, 4)@(4, 2)", lambda a, b: a @ b, np.matmul, torch.matmul,
                  lambda rng: [uniform(-1, 1)(rng, (3, 4)), uniform(-1, 1)(rng, (4, 2))]))

# ---- dense
DENSE = [((3, 4), (4, 5), True), ((3, 4), (4, 5), False), ((2, 3, 4), (4, 5), True),
         ((2, 1, 3, 4), (4, 2), False), ((1, 4), (4, 1), True), ((4,), (4, 3), True),
         ((5, 1), (1, 3), True)]
for sx, sw, bias in DENSE:
    if bias:
        CASES.append(Case(f"dense-{sx}-{sw}-bias",
                          lambda x, w, b: ops.dense(x, w, b), lambda x, w, b: x @ w + b,
                          lambda x, w, b: torch.matmul(x, w) + b,
                          (lambda a, b: lambda rng: [uniform(-1, 1)(rng, a), uniform(-1, 1)(rng, b),
                                                     uniform(-1, 1)(rng, (b[1],))])(sx, sw),
                          fwd_atol=4e-6, torch_atol=4e-6))
    else:
        CASES.append(Case(f"dense-{sx}-{sw}-nobias",
                          lambda x, w: ops.dense(x, w), lambda x, w: x @ w,
                          lambda x, w: torch.matmul(x, w),
                          (lambda a, b: lambda rng: [uniform(-1, 1)(rng, a), uniform(-1, 1)(rng, b)])(sx, sw),
                          fwd_atol=4e-6, torch_atol=4e-6))

# ---- reshape, indexing, transpose, concatenate (copies: exact forward)
for shape, new in [((2, 3, 4), (-1, 4)), ((2, 3, 4), (6, -1)), ((2, 3, 4), (24,)),
                   ((2, 3, 4), (4, -1, 2)), ((2, 3, 4), -1), ((1, 5), (5, 1, 1)), ((1,), ()),
                   ((), (1, 1))]:
    CASES.append(Case(f"reshape-{shape}-to-{new}",
                      (lambda n: lambda x: ops.reshape(x, n))(new),
                      (lambda n: lambda x: np.reshape(x, n))(new),
                      (lambda n: lambda x: torch.reshape(x, (n,) if isinstance(n, int) else n))(new),
                      (lambda s: lambda rng: [uniform(-2, 2)(rng, s)])(shape), exact=True))
CASES.append(Case("method_reshape-varargs", lambda x: x.reshape(3, -1), lambda x: x.reshape(3, -1),
                  lambda x: x.reshape(3, -1), lambda rng: [uniform(-2, 2)(rng, (2, 3, 2))], exact=True))
CASES.append(Case("flatten", ops.flatten, lambda x: x.reshape(x.shape[0], -1),
                  lambda x: x.reshape(x.shape[0], -1), lambda rng: [uniform(-2, 2)(rng, (2, 3, 2))],
                  exact=True))


def torch_take(key):
    def f(x):
        idx = np.arange(x.shape[0])[key]
        if np.ndim(idx) == 0:
            return x[int(idx)]
        return x[torch.as_tensor(np.ascontiguousarray(idx, np.int64))]
    return f


INDEX = [("int1", 1), ("int0", 0), ("neg1", -1), ("neg5", -5), ("slice1_3", slice(1, 3)),
         ("slice_all", slice(None)), ("slice_empty", slice(3, 3)), ("strided2", slice(None, None, 2)),
         ("strided1_5_3", slice(1, 5, 3)), ("reversed", slice(None, None, -1)),
         ("neg_strided", slice(4, 0, -2)), ("negstart", slice(-2, None)),
         ("list", [0, 2, 2, 4]), ("ndarray_neg", np.array([-1, 0, -1])), ("list_single", [3]),
         ("tuple1", (2,))]
for label, key in INDEX:
    for shape in [(5,), (5, 3), (5, 1, 2)]:
        CASES.append(Case(f"getitem-{label}-{shape}",
                          (lambda k: lambda x: x[k])(key),
                          (lambda k: lambda x: np.asarray(x[k]))(key if not isinstance(key, list) else np.array(key)),
                          torch_take(key if not isinstance(key, tuple) else key[0]),
                          (lambda s: lambda rng: [uniform(-2, 2)(rng, s)])(shape), exact=True))

for shape in [(3, 4), (1, 4), (2, 3, 4), (2, 1, 5, 1)]:
    CASES.append(Case(f"transpose-{shape}",
                      (lambda nd: lambda x: ops.transpose(x, None if nd == 2 else tuple(range(nd - 2)) + (nd - 1, nd - 2)))(len(shape)),
                      lambda x: np.swapaxes(x, -1, -2), lambda x: x.transpose(-1, -2),
                      (lambda s: lambda rng: [uniform(-2, 2)(rng, s)])(shape), exact=True))
CASES.append(Case("transpose-axes(1,0)", lambda x: ops.transpose(x, (1, 0)), lambda x: x.T,
                  lambda x: x.T, lambda rng: [uniform(-2, 2)(rng, (3, 2))], exact=True))
CASES.append(Case("transpose-1d-identity", ops.transpose, lambda x: x, lambda x: x,
                  lambda rng: [uniform(-2, 2)(rng, (3,))], exact=True))
CASES.append(Case("dot_T-(3, 5)", lambda x: x.T, lambda x: x.T, lambda x: x.T,
                  lambda rng: [uniform(-2, 2)(rng, (3, 5))], exact=True))

CONCAT = [([(2, 3), (4, 3)], 0), ([(2, 3), (2, 1), (2, 4)], 1), ([(2, 3), (2, 2)], -1),
          ([(2, 3, 4), (2, 1, 4), (2, 2, 4)], 1), ([(1, 3, 2), (2, 3, 2)], 0),
          ([(2, 3, 1), (2, 3, 2)], 2), ([(3,)], 0), ([(3,), (0,), (2,)], 0),
          ([(2, k, 3) for k in (1, 2, 1, 3, 1, 2, 2, 1)], 1),           # 8 inputs (> 6)
          ([(k, 2) for k in range(1, 14)], 0),                          # 13 inputs
          ([(2, 2, k) for k in (1, 1, 2, 1, 1, 1, 3)], -1)]             # 7 inputs
for shapes, axis in CONCAT:
    CASES.append(Case(f"concatenate-{len(shapes)}x-{shapes[0]}..-axis{axis}",
                      (lambda a: lambda *xs: ops.concatenate(list(xs), axis=a))(axis),
                      (lambda a: lambda *xs: np.concatenate(xs, axis=a))(axis),
                      (lambda a: lambda *xs: torch.cat(xs, dim=a))(axis),
                      (lambda ss: lambda rng: [uniform(-2, 2)(rng, s) for s in ss])(shapes), exact=True))

CASE_IDS = [c.id for c in CASES]
assert len(set(CASE_IDS)) == len(CASE_IDS), "duplicate case ids"
GRAD_CASES = [c for c in CASES if c.grad]


# ---------------------------------------------------------------- harness


def maas_forward_and_grads(case, xs, R):
    ts = [maas.tensor(x.copy(), requires_grad=True) for x in xs]
    with maas.GradientTape() as tape:
        out = case.maas(*ts)
        loss = (out * maas.tensor(R)).sum()
    grads = tape.gradient(loss, ts) if case.grad else None
    return np.array(out), grads


def fd_grads(case, xs, R):
    """Central differences, float64, of sum(np_ref(*xs) * R)."""
    x64 = [x.astype(np.float64) for x in xs]
    R64 = R.astype(np.float64)
    out = []
    for i, x in enumerate(x64):
        g = np.zeros_like(x)
        for j in np.ndindex(x.shape):
            old = x[j]
            x[j] = old + FD_STEP
            lp = np.sum(np.asarray(case.np(*x64)) * R64)
            x[j] = old - FD_STEP
            lm = np.sum(np.asarray(case.np(*x64)) * R64)
            x[j] = old
            g[j] = (lp - lm) / (2 * FD_STEP)
        out.append(g)
    return out


def setup(case):
    rng = rng_for(case.id)
    xs = [np.ascontiguousarray(x, dtype=np.float32) for x in case.inputs(rng)]
    ref = np.asarray(case.np(*[x.astype(np.float64) for x in xs]))
    R = rng.normal(size=ref.shape).astype(np.float32)
    return xs, ref, R


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_vs_numpy(case):
    xs, ref, _ = setup(case)
    out = case.maas(*[maas.tensor(x.copy()) for x in xs])
    assert isinstance(out, maas.Tensor)
    got = np.asarray(out)
    assert got.dtype == np.float32
    assert got.shape == ref.shape, f"shape {got.shape} != numpy's {ref.shape}"
    if case.exact:
        np.testing.assert_array_equal(got, ref.astype(np.float32))
    else:
        np.testing.assert_allclose(got, ref, rtol=FWD_RTOL, atol=case.fwd_atol)


@pytest.mark.parametrize("case", GRAD_CASES, ids=[c.id for c in GRAD_CASES])
def test_gradient_vs_finite_differences(case):
    xs, ref, R = setup(case)
    _, grads = maas_forward_and_grads(case, xs, R)
    fds = fd_grads(case, xs, R)
    for i, (g, fd) in enumerate(zip(grads, fds)):
        if fd.size and not np.any(fd):
            # e.g. an empty slice: no dependence at all, so None is right too
            assert g is None or not np.any(np.asarray(g))
            continue
        assert g is not None, f"input {i}: no gradient"
        g = np.asarray(g)
        assert g.shape == xs[i].shape, f"input {i}: gradient shape {g.shape} != {xs[i].shape}"
        np.testing.assert_allclose(g, fd, rtol=FD_RTOL,
                                   atol=case.fd_atol * max(1.0, float(np.abs(fd).max(initial=0))),
                                   err_msg=f"gradient of input {i}")


@pytest.mark.parametrize("case", [c for c in CASES if c.torch], ids=[c.id for c in CASES if c.torch])
def test_vs_torch(case):
    xs, _, R = setup(case)
    out, grads = maas_forward_and_grads(case, xs, R)
    txs = [torch.tensor(x, requires_grad=case.grad) for x in xs]
    tout = case.torch(*txs)
    tref = tout.detach().numpy()
    assert out.shape == tref.shape
    scale = max(1.0, float(np.abs(tref).max(initial=0)))
    if case.exact:
        np.testing.assert_array_equal(out, tref)
    else:
        np.testing.assert_allclose(out, tref, rtol=TORCH_RTOL, atol=case.torch_atol * scale)
    if not case.grad:
        return
    (tout * torch.tensor(R)).sum().backward()
    for i, (g, tx) in enumerate(zip(grads, txs)):
        tg = tx.grad
        if tg is None or not torch.any(tg):
            assert g is None or not np.any(np.asarray(g)), f"input {i}: torch says no gradient"
            continue
        tg = tg.numpy()
        assert g is not None, f"input {i}: no gradient"
        np.testing.assert_allclose(np.asarray(g), tg, rtol=TORCH_RTOL,
                                   atol=case.torch_atol * max(1.0, float(np.abs(tg).max())),
                                   err_msg=f"gradient of input {i}")


# ---------------------------------------------------------------- dropout


def test_dropout_forward_mask_and_gradient():
    rng = rng_for("dropout")
    x = rng.uniform(0.5, 2, (200, 50)).astype(np.float32)  # no zeros: the mask is readable
    rate = 0.3
    t = maas.tensor(x.copy(), requires_grad=True)
    with maas.GradientTape() as tape:
        y = ops.dropout(t, rate, seed=1234)
        loss = (y * maas.tensor(x)).sum()
    out = np.asarray(y)
    kept = out != 0
    # kept values are x / (1 - rate) (to float32 rounding), dropped are exactly 0
    np.testing.assert_allclose(out[kept], x[kept] / (1 - rate), rtol=1e-6)
    frac = 1 - kept.mean()
    # 10000 Bernoulli(0.3) draws: std 0.0046, so 0.3 +- 0.03 is > 6 sigma
    assert abs(frac - rate) < 0.03, frac
    g = np.asarray(tape.gradient(loss, t))
    np.testing.assert_allclose(g, np.where(kept, x / (1 - rate), 0), rtol=1e-6)


def test_dropout_seeded_repeats_and_rate_zero():
    x = np.ones((64, 8), np.float32)
    a = np.asarray(ops.dropout(maas.tensor(x), 0.5, seed=7))
    b = np.asarray(ops.dropout(maas.tensor(x), 0.5, seed=7))
    c = np.asarray(ops.dropout(maas.tensor(x), 0.5, seed=8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert set(np.unique(a)) <= {0.0, 2.0}
    np.testing.assert_array_equal(np.asarray(ops.dropout(maas.tensor(x), 0.0, seed=1)), x)


def test_dropout_bad_rate():
    with pytest.raises(ValueError, match=r"dropout: rate must be in \[0, 1\), received rate=1.0"):
        ops.dropout(maas.tensor([1.0]), 1.0)
    with pytest.raises(ValueError, match=r"rate=-0.1"):
        ops.dropout(maas.tensor([1.0]), -0.1)


# ---------------------------------------------------------------- edge cases


@pytest.mark.parametrize("big", [1e4, -1e4])
def test_large_logits_stay_finite(big):
    x = np.array([[big, 0.0, -big], [big, big, 0.0]], np.float32)
    t = maas.tensor(x, requires_grad=True)
    R = maas.tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    with maas.GradientTape(persistent=True) as tape:
        outs = {"sigmoid": ops.sigmoid(t), "softplus": ops.softplus(t),
                "softmax": ops.softmax(t, axis=-1), "log_softmax": ops.log_softmax(t, axis=-1),
                "softmax0": ops.softmax(t, axis=0), "log_softmax0": ops.log_softmax(t, axis=0),
                "silu": ops.silu(t),
                "tanh": ops.tanh(t)}
        losses = {name: (o * R).sum() for name, o in outs.items()}
    for name, o in outs.items():
        a = np.asarray(o)
        assert np.all(np.isfinite(a)), (name, a)
        g = tape.gradient(losses[name], t)
        assert g is not None, name
        assert np.all(np.isfinite(np.asarray(g))), (name, np.asarray(g))
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(np.asarray(outs["sigmoid"]), np_sigmoid(x64), rtol=1e-6, atol=0)
    np.testing.assert_allclose(np.asarray(outs["softplus"]), np_softplus(x64), rtol=1e-6, atol=0)
    np.testing.assert_allclose(np.asarray(outs["softmax"]), np_softmax(x64, -1), rtol=1e-6, atol=1e-30)
    # log-probabilities near 0 keep their precision next to logits of 1e4
    np.testing.assert_allclose(np.asarray(outs["log_softmax"]), np_log_softmax(x64, -1), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(outs["log_softmax0"]), np_log_softmax(x64, 0), rtol=1e-6)


def _grad(fn, *arrays):
    ts = [maas.tensor(a, requires_grad=True) for a in arrays]
    with maas.GradientTape() as tape:
        out = fn(*ts)
        loss = out.sum()
    return out, tape.gradient(loss, ts)


def test_empty_tensors():
    e = np.zeros((0, 3), np.float32)
    for f in (ops.relu, ops.exp, ops.sigmoid, ops.log_softmax):
        out, (g,) = _grad(f, e)
        assert out.shape == (0, 3) and (g is None or np.asarray(g).shape == (0, 3))
    out, (ga, gb) = _grad(ops.add, e, np.ones(3, np.float32))
    assert out.shape == (0, 3)
    np.testing.assert_array_equal(np.asarray(gb), np.zeros(3))
    # reduce sum over an empty axis is 0 and gives zero gradients
    out, (g,) = _grad(lambda x: ops.sum(x, axis=0), e)
    np.testing.assert_array_equal(np.asarray(out), np.zeros(3))
    assert ops.sum(maas.tensor(e)).item() == 0.0
    assert ops.sum(maas.tensor(e), axis=1).shape == (0,)
    assert np.isnan(ops.mean(maas.tensor(e)).item())
    # matmul with K = 0: zeros, with zero gradients of the right (empty) shapes
    a, b = np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32)
    out, (ga, gb) = _grad(ops.matmul, a, b)
    np.testing.assert_array_equal(np.asarray(out), np.zeros((3, 4)))
    for g, s in ((ga, (3, 0)), (gb, (0, 4))):
        assert g is None or np.asarray(g).shape == s
    out, _ = _grad(lambda x, w: ops.dense(x, w), a, b)
    np.testing.assert_array_equal(np.asarray(out), np.zeros((3, 4)))
    # M = 0
    out, _ = _grad(ops.matmul, np.zeros((0, 2), np.float32), np.ones((2, 4), np.float32))
    assert out.shape == (0, 4)
    assert maas.tensor(e)[1:1].shape == (0, 3)
    assert ops.concatenate([maas.tensor(e), maas.tensor(np.ones((2, 3), np.float32))]).shape == (2, 3)


def test_max_gradient_goes_to_first_argmax_on_ties():
    x = maas.tensor(np.array([1.0, 3.0, 3.0, 0.0], np.float32), requires_grad=True)
    with maas.GradientTape() as tape:
        y = ops.max(x)
    np.testing.assert_array_equal(np.asarray(tape.gradient(y, x)), [0, 1, 0, 0])


# ---------------------------------------------------------------- the tape


def test_tensor_used_twice_accumulates():
    rng = rng_for("twice")
    xv = rng.normal(size=(3, 4)).astype(np.float32)
    x = maas.tensor(xv, requires_grad=True)
    with maas.GradientTape(persistent=True) as tape:
        sq = x * x
        dbl = x + x
        mixed = ops.sum(ops.exp(x) * x)
    np.testing.assert_allclose(np.asarray(tape.gradient(sq, x)), 2 * xv, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(tape.gradient(dbl, x)), np.full((3, 4), 2.0))
    np.testing.assert_allclose(np.asarray(tape.gradient(mixed, x)), np.exp(xv) * (1 + xv), rtol=1e-5)
    # one weight shared by two matmuls
    a = rng.normal(size=(2, 3)).astype(np.float32)
    b = rng.normal(size=(5, 3)).astype(np.float32)
    w = maas.Variable(rng.normal(size=(3, 4)))
    r1 = rng.normal(size=(2, 4)).astype(np.float32)
    r2 = rng.normal(size=(5, 4)).astype(np.float32)
    with maas.GradientTape() as tape:
        loss = ((maas.tensor(a) @ w) * r1).sum() + ((maas.tensor(b) @ w) * r2).sum()
    gw = np.asarray(tape.gradient(loss, w))
    np.testing.assert_allclose(gw, a.T.astype(np.float64) @ r1 + b.T.astype(np.float64) @ r2,
                               rtol=1e-5, atol=1e-5)
    # a list of targets adds their gradients
    x = maas.tensor(xv, requires_grad=True)
    with maas.GradientTape() as tape:
        t1, t2 = x * 3.0, ops.square(x)
    np.testing.assert_allclose(np.asarray(tape.gradient([t1, t2], x)), 3 + 2 * xv, rtol=1e-6)


def test_unrelated_source_gets_none():
    x = maas.tensor([1.0, 2.0], requires_grad=True)
    z = maas.tensor([3.0], requires_grad=True)
    with maas.GradientTape() as tape:
        y = (x * 2.0).sum()
    gx, gz = tape.gradient(y, [x, z])
    np.testing.assert_array_equal(np.asarray(gx), [2.0, 2.0])
    assert gz is None
    assert z.grad is None and x.grad is not None


def test_comparisons_have_no_gradient():
    x = maas.tensor([1.0, 2.0], requires_grad=True)
    with maas.GradientTape() as tape:
        y = (x > 1.5).sum()
    assert tape.gradient(y, x) is None


def test_persistent_and_non_persistent_tapes():
    x = maas.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with maas.GradientTape(persistent=True) as tape:
        y = x * x
        z = y.sum()
    g1 = np.asarray(tape.gradient(z, x))
    g2 = np.asarray(tape.gradient(y, x))
    np.testing.assert_array_equal(g1, [2, 4, 6])
    np.testing.assert_array_equal(g2, [2, 4, 6])
    with maas.GradientTape() as tape:
        z = (x * x).sum()
    tape.gradient(z, x)
    with pytest.raises(RuntimeError, match="non-persistent GradientTape can only be used to compute one"):
        tape.gradient(z, x)


def test_gradient_structure():
    a = maas.Variable([1.0, 2.0], name="a")
    b = maas.Variable([[3.0]], name="b")
    c = maas.tensor([4.0], requires_grad=True)
    with maas.GradientTape(persistent=True) as tape:
        y = (a * 2.0).sum() + (b * 3.0).sum() + (c * 4.0).sum()
    single = tape.gradient(y, a)
    assert isinstance(single, maas.Tensor)
    lst = tape.gradient(y, [a, b])
    assert isinstance(lst, list) and len(lst) == 2
    tup = tape.gradient(y, (a, [b, c]))
    assert isinstance(tup, tuple) and isinstance(tup[1], list)
    d = tape.gradient(y, {"x": a, "y": {"z": c, "w": b}})
    assert set(d) == {"x", "y"} and set(d["y"]) == {"z", "w"}
    np.testing.assert_array_equal(np.asarray(d["x"]), [2, 2])
    np.testing.assert_array_equal(np.asarray(d["y"]["w"]), [[3]])
    np.testing.assert_array_equal(np.asarray(d["y"]["z"]), [4])
    np.testing.assert_array_equal(np.asarray(tup[1][1]), [4])
    np.testing.assert_array_equal(np.asarray(a.grad), [2, 2])


def test_nothing_recorded_outside_a_tape():
    x = maas.tensor(np.ones((2, 2), np.float32), requires_grad=True)
    tape = maas.GradientTape()
    y = ops.relu(x * 2.0) @ x
    assert len(tape) == 0
    with tape:
        assert len(tape) == 0
        z = (y * x).sum()
        n = len(tape)
        assert n == 2
    w = (x + 1.0).sum()  # after exit: not recorded
    assert len(tape) == n
    # y was computed before the tape: it is a constant to this tape
    g = tape.gradient(z, [x, y])
    np.testing.assert_array_equal(np.asarray(g[0]), np.asarray(y))
    del w


def test_untracked_inputs_are_not_recorded_and_watch():
    x = maas.tensor([1.0, 2.0])
    with maas.GradientTape() as tape:
        y = (x * x).sum()
        assert len(tape) == 0
        tape.watch(x)
        z = (x * x).sum()
    assert tape.gradient(z, x) is not None
    del y


def test_stop_recording():
    x = maas.tensor([1.0, 2.0], requires_grad=True)
    with maas.GradientTape() as tape:
        y = x * 3.0
        with tape.stop_recording():
            n = len(tape)
            s = y * 5.0
            assert len(tape) == n
        z = (y + s).sum()
    # s is a constant: dz/dx = 3 (not 3 + 15)
    np.testing.assert_array_equal(np.asarray(tape.gradient(z, x)), [3.0, 3.0])


def test_nested_tapes_second_order():
    x = maas.tensor([1.0, 2.0], requires_grad=True)
    with maas.GradientTape() as outer:
        with maas.GradientTape() as inner:
            y = (x * x * x).sum()
        g = inner.gradient(y, x)       # 3 x^2
    # the backward kernels are not recorded: the outer tape sees only y
    assert outer.gradient(y, x) is not None
    np.testing.assert_allclose(np.asarray(g), [3.0, 12.0])


# ---------------------------------------------------------------- conversion and errors


def test_float64_int_bool_arrays_convert():
    t = maas.tensor(np.array([[1.5, 2.25]], np.float64))
    assert t.dtype == np.float32 and t.shape == (1, 2)
    np.testing.assert_array_equal(np.asarray(t), [[1.5, 2.25]])
    np.testing.assert_array_equal(np.asarray(maas.tensor(np.arange(3))), [0, 1, 2])
    np.testing.assert_array_equal(np.asarray(maas.tensor(np.array([True, False]))), [1, 0])
    np.testing.assert_array_equal(np.asarray(maas.tensor([[1, 2], [3, 4]])), [[1, 2], [3, 4]])
    # ops accept float64 / int arrays and Python numbers
    np.testing.assert_array_equal(np.asarray(ops.add(np.arange(3), np.array([0.5]))), [0.5, 1.5, 2.5])
    np.testing.assert_array_equal(np.asarray(ops.relu(np.array([-1.0, 2.0]))), [0, 2])
    # a non-contiguous float32 array is copied correctly
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(np.asarray(maas.tensor(base.T)), base.T)
    # a float32 C-contiguous array is wrapped without copying
    assert np.shares_memory(np.asarray(maas.tensor(base)), base)


@pytest.mark.parametrize("bad", [np.array(["a", "b"]), np.array([1, None], dtype=object),
                                 ["x", "y"], np.array([b"ab"])])
def test_string_and_object_arrays_raise_type_error(bad):
    with pytest.raises(TypeError, match="cannot convert data of dtype .* to a float32 tensor"):
        maas.tensor(bad)
    with pytest.raises(TypeError, match="cannot convert data of dtype"):
        ops.relu(bad)


def test_ragged_list_raises_value_error():
    with pytest.raises(ValueError, match="cannot make a tensor from list"):
        maas.tensor([[1.0, 2.0], [3.0]])


def test_matmul_misaligned_message():
    msg = "matmul: shapes (32, 784) and (100, 10) not aligned: 784 (dim 1) != 100 (dim 0)"
    a, b = np.zeros((32, 784), np.float32), np.zeros((100, 10), np.float32)
    with pytest.raises(ValueError, match=re.escape(msg)):
        ops.matmul(a, b)
    with pytest.raises(ValueError, match=re.escape(msg)):
        maas.tensor(a) @ maas.tensor(b)
    with pytest.raises(ValueError, match=re.escape(
            "matmul: shapes (3, 4) and (3, 4) not aligned: 4 (dim 1) != 3 (dim 0)")):
        ops.matmul(np.zeros((3, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match=re.escape(
            "matmul: shapes (3, 4) and (5, 3) not aligned: 4 (dim 1) != 3 (dim 1)")):
        ops.matmul(np.zeros((3, 4)), np.zeros((5, 3)), transpose_b=True)
    with pytest.raises(ValueError, match=re.escape(
            "matmul: batch dimensions of shapes (2, 3, 4) and (3, 4, 5) do not match")):
        ops.matmul(np.zeros((2, 3, 4)), np.zeros((3, 4, 5)))


def test_dense_errors():
    with pytest.raises(ValueError, match=re.escape(
            "dense: input shape (2, 3) and kernel shape (4, 5) not aligned: 3 (dim 1) != 4 (dim 0)")):
        ops.dense(np.zeros((2, 3)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match=re.escape("dense: bias shape (4,) does not match 5 units")):
        ops.dense(np.zeros((2, 4)), np.zeros((4, 5)), np.zeros(4))
    with pytest.raises(ValueError, match="the kernel must be 2-D"):
        ops.dense(np.zeros((2, 4)), np.zeros(4))


def test_broadcast_failure():
    with pytest.raises(ValueError, match=re.escape(
            "add: operands could not be broadcast together with shapes (4, 3) and (4,)")):
        ops.add(np.zeros((4, 3)), np.zeros(4))
    with pytest.raises(ValueError, match=re.escape(
            "multiply: operands could not be broadcast together with shapes (2, 3) and (3, 2)")):
        maas.tensor(np.zeros((2, 3))) * maas.tensor(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="less: operands could not be broadcast"):
        ops.less(np.zeros(2), np.zeros(3))


def test_bad_reshape():
    x = maas.tensor(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=re.escape(
            "reshape: cannot reshape a tensor of shape (2, 3) (6 elements) into shape (4, 2)")):
        ops.reshape(x, (4, 2))
    with pytest.raises(ValueError, match=re.escape("reshape: cannot reshape a tensor of shape (2, 3)")):
        ops.reshape(x, (4, -1))
    with pytest.raises(ValueError, match="reshape: invalid dimension -2"):
        ops.reshape(x, (-2, 3))
    with pytest.raises(ValueError, match="reshape: invalid dimension -1"):
        x.reshape(-1, -1)  # only one dimension may be inferred


def test_bad_axis():
    x = maas.tensor(np.zeros((2, 3), np.float32))
    for fn, name in ((ops.sum, "sum"), (ops.mean, "mean"), (ops.max, "max"), (ops.min, "min")):
        with pytest.raises(ValueError, match=f"{name}: axis 2 is out of bounds for a tensor of 2 dimensions"):
            fn(x, axis=2)
        with pytest.raises(ValueError, match=f"{name}: axis -3 is out of bounds"):
            fn(x, axis=(0, -3))
    with pytest.raises(ValueError, match="sum: repeated axis 1"):
        ops.sum(x, axis=(1, -1))
    with pytest.raises(ValueError, match="softmax: axis 2 is out of bounds for a tensor of 2 dimensions"):
        ops.softmax(x, axis=2)
    with pytest.raises(ValueError, match="log_softmax: axis -3 is out of bounds"):
        ops.log_softmax(x, axis=-3)
    with pytest.raises(ValueError, match="concatenate: axis 2 is out of bounds"):
        ops.concatenate([x, x], axis=2)
    with pytest.raises(ValueError, match=re.escape("concatenate: shapes (2, 3) and (2, 4) differ outside axis 0")):
        ops.concatenate([x, np.zeros((2, 4))], axis=0)
    with pytest.raises(NotImplementedError, match="only swapping the last two axes"):
        ops.transpose(np.zeros((2, 3, 4)), (1, 0, 2))
    with pytest.raises(ValueError, match="T is defined for 2-D tensors; this one has 3 dimensions"):
        maas.tensor(np.zeros((2, 3, 4))).T


def test_index_out_of_range():
    x = maas.tensor(np.zeros((5, 2), np.float32))
    with pytest.raises(IndexError, match="index 5 is out of bounds for axis 0 with size 5"):
        x[5]
    with pytest.raises(IndexError, match="index -6 is out of bounds for axis 0 with size 5"):
        x[-6]
    with pytest.raises(IndexError, match="index 7 is out of bounds for axis 0 with size 5"):
        x[[0, 7]]
    with pytest.raises(IndexError, match="index -9 is out of bounds"):
        x[np.array([-9])]
    with pytest.raises(IndexError, match="a 0-d tensor cannot be indexed"):
        maas.tensor(1.0)[0]
    with pytest.raises(IndexError, match="indexed on their first axis by an int, a slice"):
        x[1.5]


def test_scalar_conversion_errors():
    with pytest.raises(ValueError, match=re.escape("only a tensor of one element can be converted "
                                                   "to a Python scalar; this one has shape (2,)")):
        float(maas.tensor([1.0, 2.0]))
    assert float(maas.tensor([[2.5]])) == 2.5


# ---------------------------------------------------------------- above the OpenMP threshold

BIG = [  # (id, maas fn, torch fn, input shapes): 50000 elements > MAAS_PAR_THRESHOLD (32768)
    ("gelu", lambda x: ops.gelu(x), lambda x: F.gelu(x, approximate="tanh"), [(50, 40, 25)]),
    ("softmax_axis1", lambda x: ops.softmax(x, axis=1), lambda x: F.softmax(x, dim=1), [(50, 40, 25)]),
    ("log_softmax_last", lambda x: ops.log_softmax(x), lambda x: F.log_softmax(x, dim=-1), [(50, 40, 25)]),
    ("sum_axis1", lambda x: ops.sum(x, axis=1), lambda x: x.sum(1), [(50, 40, 25)]),
    ("max_axis0", lambda x: ops.max(x, axis=0), lambda x: x.amax(0), [(50, 40, 25)]),
    ("mean_all", lambda x: ops.mean(x), lambda x: x.mean(), [(50, 40, 25)]),
    ("add_bcast", ops.add, torch.add, [(50, 40, 25), (40, 1)]),
    ("mul_bcast", ops.multiply, torch.mul, [(50, 40, 25), (50, 1, 25)]),
    ("dense", lambda x, w, b: ops.dense(x, w, b), lambda x, w, b: x @ w + b, [(400, 125), (125, 90), (90,)]),
    ("transpose", lambda x: ops.transpose(x, (0, 2, 1)), lambda x: x.transpose(1, 2), [(50, 40, 25)]),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("entry", BIG, ids=[b[0] for b in BIG])
def test_large_tensors_vs_torch(entry, threads):
    name, mf, tf, shapes = entry
    rng = rng_for("big/" + name)
    xs = [rng.uniform(-2, 2, s).astype(np.float32) for s in shapes]
    old = maas.get_num_threads()
    maas.set_num_threads(threads)
    try:
        ts = [maas.tensor(x.copy(), requires_grad=True) for x in xs]
        with maas.GradientTape() as tape:
            out = mf(*ts)
            R = rng.normal(size=out.shape).astype(np.float32)
            loss = (out * maas.tensor(R)).sum()
        grads = tape.gradient(loss, ts)
    finally:
        maas.set_num_threads(old)
    txs = [torch.tensor(x, requires_grad=True) for x in xs]
    tout = tf(*txs)
    (tout * torch.tensor(R)).sum().backward()
    t = tout.detach().numpy()
    # sums of up to 50000 float32 terms in different orders: forward rtol 1e-5, atol
    # 1e-5 * max|ref|; gradients (broadcast/bias sums over up to 1250 terms) rtol 1e-4
    atol = 1e-5 * max(1.0, float(np.abs(t).max()))
    np.testing.assert_allclose(np.asarray(out), t, rtol=TORCH_RTOL, atol=atol)
    for g, tx in zip(grads, txs):
        tg = tx.grad.numpy()
        np.testing.assert_allclose(np.asarray(g), tg, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(tg).max())))
