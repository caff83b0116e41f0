"""maas.losses: every loss function forward and gradient w.r.t. y_pred against
PyTorch (the Keras formula written in torch where torch's built-in differs)
and against central finite differences of a float64 NumPy reference; the
loss classes with their reductions and sample weights; stability for huge
logits; error messages.

Tolerances:
* maas vs PyTorch (both float32): rtol 1e-5, absolute floor 1e-6 * max(1, |ref|max).
* maas vs float64 NumPy forward: rtol 1e-5, atol 1e-6.
* maas gradient vs float64 central differences (step 1e-6): rtol 1e-4,
  atol 1e-5 * max(1, |fd|max).
Keras's probability clipping is eps = 1e-7: p -> clip(p, 1e-7, 1 - 1e-7);
CCE/SCCE first renormalise each row to sum to 1. Inputs are drawn away from
the clip bounds and from the kinks of MAE/hinge so the references are smooth.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import maas
from maas import losses

torch.set_num_threads(1)

RTOL, ATOL = 1e-5, 1e-6
FD_RTOL, FD_ATOL, FD_STEP = 1e-4, 1e-5, 1e-6
EPS = 1e-7


def rng_for(name):
    return np.random.default_rng(zlib.crc32(name.encode()))


# ---------------------------------------------------------------- references
# NumPy (float64) and torch versions of each Keras formula, per sample
# (reducing the last axis).


def np_clip(p):
    return np.clip(p, EPS, 1 - EPS)


def np_mse(y, p):
    return np.mean((y - p) ** 2, axis=-1)


def np_mae(y, p):
    return np.mean(np.abs(y - p), axis=-1)


def np_bce(y, p, logits, ls=0.0):
    y = y * (1 - ls) + 0.5 * ls
    if logits:
        return np.mean(np.maximum(p, 0) - p * y + np.log1p(np.exp(-np.abs(p))), axis=-1)
    p = np_clip(p)
    return np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)), axis=-1)


def np_log_softmax(x):
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def np_cce(y, p, logits, ls=0.0):
    y = y * (1 - ls) + ls / y.shape[-1]
    if logits:
        return -np.sum(y * np_log_softmax(p), axis=-1)
    q = np_clip(p / p.sum(axis=-1, keepdims=True))
    return -np.sum(y * np.log(q), axis=-1)


def np_scce(labels, p, logits):
    labels = labels.astype(np.int64).reshape(p.shape[:-1])
    onehot = np.eye(p.shape[-1])[labels]
    return np_cce(onehot, p, logits)


def np_hinge(y, p):
    if np.all((y == 0) | (y == 1)):
        y = 2 * y - 1
    return np.mean(np.maximum(1 - y * p, 0), axis=-1)


def t_bce(y, p, logits, ls=0.0):
    y = y * (1 - ls) + 0.5 * ls
    if logits:  # torch's built-in is Keras's stable formula
        return F.binary_cross_entropy_with_logits(p, y, reduction="none").mean(-1)
    p = torch.clamp(p, EPS, 1 - EPS)
    return (-(y * torch.log(p) + (1 - y) * torch.log(1 - p))).mean(-1)


def t_cce(y, p, logits, ls=0.0):
    y = y * (1 - ls) + ls / y.shape[-1]
    if logits:
        return -(y * F.log_softmax(p, dim=-1)).sum(-1)
    q = torch.clamp(p / p.sum(-1, keepdim=True), EPS, 1 - EPS)
    return -(y * torch.log(q)).sum(-1)


def t_scce(labels, p, logits):
    labels = labels.long().reshape(p.shape[:-1])
    if logits:  # torch's cross_entropy is exactly Keras's from_logits SCCE
        return F.cross_entropy(p.reshape(-1, p.shape[-1]), labels.reshape(-1),
                               reduction="none").reshape(labels.shape)
    q = torch.clamp(p / p.sum(-1, keepdim=True), EPS, 1 - EPS)
    return -torch.log(q).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def t_hinge(y, p):
    if bool(torch.all((y == 0) | (y == 1))):
        y = 2 * y - 1
    return torch.clamp(1 - y * p, min=0).mean(-1)


# ---------------------------------------------------------------- generators


def g_mse(rng, shape):
    return rng.normal(size=shape), rng.normal(size=shape)


def g_mae(rng, shape):
    y = rng.normal(size=shape)
    d = rng.uniform(0.1, 1, shape) * rng.choice([-1, 1], shape)  # |y - p| >= 0.1
    return y, y + d


def g_probs(rng, shape):
    return rng.uniform(0.05, 0.95, shape)


def g_binary_labels(rng, shape):
    return rng.integers(0, 2, shape).astype(np.float64)


def g_bce(logits, soft=False):
    def gen(rng, shape):
        y = rng.uniform(0, 1, shape) if soft else g_binary_labels(rng, shape)
        p = rng.normal(0, 3, shape) if logits else g_probs(rng, shape)
        return y, p
    return gen


def g_cce(logits, soft=False):
    def gen(rng, shape):
        C = shape[-1]
        if soft:
            y = rng.uniform(0, 1, shape)
            y /= y.sum(-1, keepdims=True)
        else:
            y = np.eye(C)[rng.integers(0, C, shape[:-1])]
        # probabilities: positive rows that do not sum to 1 (renormalised by the loss)
        p = rng.normal(0, 3, shape) if logits else rng.uniform(0.1, 1.0, shape)
        return y, p
    return gen


def g_scce(logits, trailing_one=False):
    def gen(rng, shape):
        labels = rng.integers(0, shape[-1], shape[:-1]).astype(np.float64)
        if trailing_one:
            labels = labels[..., None]
        p = rng.normal(0, 3, shape) if logits else rng.uniform(0.1, 1.0, shape)
        return labels, p
    return gen


def g_hinge(pm1):
    def gen(rng, shape):
        y = g_binary_labels(rng, shape)
        if pm1:
            y = 2 * y - 1
        ys = 2 * y - 1 if not pm1 else y
        # keep 1 - y p away from 0 (the kink): y p in [-1.5, 0.9] or [1.1, 2]
        m = np.where(rng.random(shape) < 0.5, rng.uniform(-1.5, 0.9, shape), rng.uniform(1.1, 2.0, shape))
        return y, m * ys
    return gen


@dataclass
class LCase:
    id: str
    maas: Callable
    np: Callable
    torch: Callable
    gen: Callable
    shape: tuple
    label_int: bool = False  # y_true holds class indices


CASES: list[LCase] = []


def add(name, mf, nf, tf, gen, shapes, label_int=False):
    for s in shapes:
        CASES.append(LCase(f"{name}-{s}", mf, nf, tf, gen, s, label_int))


SHAPES = [(4, 3), (2, 3, 4), (1, 1), (5,)]
add("mse", losses.mean_squared_error, np_mse, lambda y, p: ((y - p) ** 2).mean(-1), g_mse, SHAPES)
add("mse_alias", losses.mse, np_mse, lambda y, p: ((y - p) ** 2).mean(-1), g_mse, [(3, 2)])
add("mae", losses.mean_absolute_error, np_mae, lambda y, p: (y - p).abs().mean(-1), g_mae, SHAPES)
for logits in (False, True):
    tag = "logits" if logits else "probs"
    add(f"bce_{tag}", (lambda lg: lambda y, p: losses.binary_crossentropy(y, p, from_logits=lg))(logits),
        (lambda lg: lambda y, p: np_bce(y, p, lg))(logits),
        (lambda lg: lambda y, p: t_bce(y, p, lg))(logits), g_bce(logits), SHAPES + [(6, 1)])
    add(f"bce_{tag}_soft", (lambda lg: lambda y, p: losses.binary_crossentropy(y, p, from_logits=lg))(logits),
        (lambda lg: lambda y, p: np_bce(y, p, lg))(logits),
        (lambda lg: lambda y, p: t_bce(y, p, lg))(logits), g_bce(logits, soft=True), [(4, 3)])
    add(f"bce_{tag}_ls0.1",
        (lambda lg: lambda y, p: losses.binary_crossentropy(y, p, from_logits=lg, label_smoothing=0.1))(logits),
        (lambda lg: lambda y, p: np_bce(y, p, lg, 0.1))(logits),
        (lambda lg: lambda y, p: t_bce(y, p, lg, 0.1))(logits), g_bce(logits), [(4, 3), (6, 1)])
    add(f"cce_{tag}", (lambda lg: lambda y, p: losses.categorical_crossentropy(y, p, from_logits=lg))(logits),
        (lambda lg: lambda y, p: np_cce(y, p, lg))(logits),
        (lambda lg: lambda y, p: t_cce(y, p, lg))(logits), g_cce(logits), SHAPES)
    add(f"cce_{tag}_soft", (lambda lg: lambda y, p: losses.categorical_crossentropy(y, p, from_logits=lg))(logits),
        (lambda lg: lambda y, p: np_cce(y, p, lg))(logits),
        (lambda lg: lambda y, p: t_cce(y, p, lg))(logits), g_cce(logits, soft=True), [(4, 5)])
    add(f"cce_{tag}_ls0.2",
        (lambda lg: lambda y, p: losses.categorical_crossentropy(y, p, from_logits=lg, label_smoothing=0.2))(logits),
        (lambda lg: lambda y, p: np_cce(y, p, lg, 0.2))(logits),
        (lambda lg: lambda y, p: t_cce(y, p, lg, 0.2))(logits), g_cce(logits), [(4, 3), (2, 3, 4)])
    add(f"scce_{tag}",
        (lambda lg: lambda y, p: losses.sparse_categorical_crossentropy(y, p, from_logits=lg))(logits),
        (lambda lg: lambda y, p: np_scce(y, p, lg))(logits),
        (lambda lg: lambda y, p: t_scce(y, p, lg))(logits), g_scce(logits), SHAPES, label_int=True)
    add(f"scce_{tag}_trailing1",
        (lambda lg: lambda y, p: losses.sparse_categorical_crossentropy(y, p, from_logits=lg))(logits),
        (lambda lg: lambda y, p: np_scce(y, p, lg))(logits),
        (lambda lg: lambda y, p: t_scce(y, p, lg))(logits), g_scce(logits, True), [(4, 3)],
        label_int=True)
add("hinge_01", losses.hinge, np_hinge, t_hinge, g_hinge(False), SHAPES)
add("hinge_pm1", losses.hinge, np_hinge, t_hinge, g_hinge(True), SHAPES)



# ---- the losses composed from maas ops: NumPy (float64) and torch references

LOG2 = float(np.log(2.0))


def np_huber(delta):
    def f(y, p):
        e = np.abs(p - y)
        return np.mean(np.where(e <= delta, 0.5 * e ** 2, delta * e - 0.5 * delta ** 2), axis=-1)
    return f


def t_huber(delta):
    return lambda y, p: F.huber_loss(p, y, reduction="none", delta=delta).mean(-1)


def np_log_cosh(y, p):
    return np.mean(np.log(np.cosh(p - y)), axis=-1)


def t_log_cosh(y, p):  # Keras's stable form, in torch
    x = p - y
    return (x + F.softplus(-2.0 * x) - LOG2).mean(-1)


def np_kld(y, p):
    y, p = np.clip(y, EPS, 1), np.clip(p, EPS, 1)
    return np.sum(y * np.log(y / p), axis=-1)


def t_kld(y, p):  # torch's kl_div takes log-probabilities as input
    return F.kl_div(torch.log(torch.clamp(p, EPS, 1)), torch.clamp(y, EPS, 1), reduction="none").sum(-1)


def np_poisson(y, p):
    return np.mean(p - y * np.log(p + EPS), axis=-1)


def t_poisson(y, p):
    return F.poisson_nll_loss(p, y, log_input=False, full=False, eps=EPS, reduction="none").mean(-1)


def np_cosine(y, p, axis=-1):
    def n(x):
        return x / np.sqrt(np.maximum(np.sum(x * x, axis=axis, keepdims=True), EPS * EPS))
    return -np.sum(n(y) * n(p), axis=axis)


def t_cosine(y, p):
    return -F.cosine_similarity(p, y, dim=-1, eps=1e-12)


def np_squared_hinge(y, p):
    if np.all((y == 0) | (y == 1)):
        y = 2 * y - 1
    return np.mean(np.maximum(1 - y * p, 0) ** 2, axis=-1)


def t_squared_hinge(y, p):
    if bool(torch.all((y == 0) | (y == 1))):
        y = 2 * y - 1
    return (torch.clamp(1 - y * p, min=0) ** 2).mean(-1)


def np_cat_hinge(y, p):
    pos = np.sum(y * p, axis=-1)
    neg = np.max((1 - y) * p, axis=-1)
    return np.maximum(neg - pos + 1, 0)


def t_cat_hinge(y, p):
    pos = (y * p).sum(-1)
    neg = ((1 - y) * p).amax(-1)
    return torch.clamp(neg - pos + 1, min=0)


def np_mape(y, p):
    return 100 * np.mean(np.abs((y - p) / np.maximum(np.abs(y), EPS)), axis=-1)


def t_mape(y, p):
    return 100 * (torch.abs((y - p) / torch.clamp(torch.abs(y), min=EPS))).mean(-1)


def np_msle(y, p):
    return np.mean((np.log(np.maximum(p, EPS) + 1) - np.log(np.maximum(y, EPS) + 1)) ** 2, axis=-1)


def t_msle(y, p):
    return ((torch.log(torch.clamp(p, min=EPS) + 1) - torch.log(torch.clamp(y, min=EPS) + 1)) ** 2).mean(-1)


def np_bfce(balance=False, alpha=0.25, gamma=2.0, logits=False, ls=0.0):
    def f(y, p):
        y = y * (1 - ls) + 0.5 * ls
        if logits:
            p = 1 / (1 + np.exp(-p))
        q = np_clip(p)
        bce = -(y * np.log(q) + (1 - y) * np.log(1 - q))
        pt = y * p + (1 - y) * (1 - p)
        out = (1 - pt) ** gamma * bce
        if balance:
            out = out * (y * alpha + (1 - y) * (1 - alpha))
        return np.mean(out, axis=-1)
    return f


def t_bfce(balance=False, alpha=0.25, gamma=2.0, logits=False, ls=0.0):
    def f(y, p):
        y = y * (1 - ls) + 0.5 * ls
        if logits:
            p = torch.sigmoid(p)
        bce = F.binary_cross_entropy(torch.clamp(p, EPS, 1 - EPS), y, reduction="none")
        pt = y * p + (1 - y) * (1 - p)
        out = (1 - pt) ** gamma * bce
        if balance:
            out = out * (y * alpha + (1 - y) * (1 - alpha))
        return out.mean(-1)
    return f


def np_cfce(alpha=0.25, gamma=2.0, logits=False, ls=0.0):
    def f(y, p):
        y = y * (1 - ls) + ls / y.shape[-1]
        if logits:
            p = np.exp(np_log_softmax(p))
        q = np.clip(p / p.sum(-1, keepdims=True), EPS, 1 - EPS)
        return np.sum(alpha * (1 - q) ** gamma * -y * np.log(q), axis=-1)
    return f


def t_cfce(alpha=0.25, gamma=2.0, logits=False, ls=0.0):
    def f(y, p):
        y = y * (1 - ls) + ls / y.shape[-1]
        if logits:
            p = F.softmax(p, dim=-1)
        q = torch.clamp(p / p.sum(-1, keepdim=True), EPS, 1 - EPS)
        return (alpha * (1 - q) ** gamma * -y * torch.log(q)).sum(-1)
    return f


def g_huber(delta):
    def gen(rng, shape):
        y = rng.normal(size=shape)
        # |error| away from delta (the kink between the two pieces)
        mag = np.where(rng.random(shape) < 0.5, rng.uniform(0.05, 0.9, shape), rng.uniform(1.1, 2.5, shape))
        return y, y + delta * mag * rng.choice([-1, 1], shape)
    return gen


def g_kld(rng, shape):
    y = rng.uniform(0.05, 1.0, shape)
    y /= y.sum(-1, keepdims=True) if shape[-1] > 1 else 1.0
    return y, rng.uniform(0.05, 0.95, shape)


def g_poisson(rng, shape):
    return rng.integers(0, 5, shape).astype(np.float64), rng.uniform(0.1, 3.0, shape)


def g_onehot_scores(rng, shape):
    C = shape[-1]
    return np.eye(C)[rng.integers(0, C, shape[:-1])], rng.normal(0, 1.5, shape)


def g_mape(rng, shape):
    y = rng.uniform(0.5, 2.0, shape) * rng.choice([-1, 1], shape)
    return y, y + rng.uniform(0.1, 1.0, shape) * rng.choice([-1, 1], shape)


def g_msle(rng, shape):
    return rng.uniform(0.1, 3.0, shape), rng.uniform(0.1, 3.0, shape)


NEW_SHAPES = [(4, 3), (2, 3, 4), (1, 1), (5,)]
for d in (1.0, 0.5):
    add(f"huber_d{d}", (lambda dd: lambda y, p: losses.huber(y, p, delta=dd))(d), np_huber(d), t_huber(d),
        g_huber(d), NEW_SHAPES)
add("log_cosh", losses.log_cosh, np_log_cosh, t_log_cosh, g_mse, NEW_SHAPES)
add("logcosh_alias", losses.logcosh, np_log_cosh, t_log_cosh, g_mse, [(3, 2)])
add("kl_divergence", losses.kl_divergence, np_kld, t_kld, g_kld, NEW_SHAPES)
add("kld_alias", losses.kld, np_kld, t_kld, g_kld, [(3, 4)])
add("poisson", losses.poisson, np_poisson, t_poisson, g_poisson, NEW_SHAPES)
add("cosine_similarity", losses.cosine_similarity, np_cosine, t_cosine, g_mse, [(4, 3), (2, 3, 4), (5,), (3, 1)])
add("squared_hinge_01", losses.squared_hinge, np_squared_hinge, t_squared_hinge, g_hinge(False), NEW_SHAPES)
add("squared_hinge_pm1", losses.squared_hinge, np_squared_hinge, t_squared_hinge, g_hinge(True), NEW_SHAPES)
add("categorical_hinge", losses.categorical_hinge, np_cat_hinge, t_cat_hinge, g_onehot_scores,
    [(4, 3), (2, 3, 4), (6, 5)])
add("mape", losses.mean_absolute_percentage_error, np_mape, t_mape, g_mape, NEW_SHAPES)
add("msle", losses.mean_squared_logarithmic_error, np_msle, t_msle, g_msle, NEW_SHAPES)
for kw in [dict(), dict(logits=True), dict(balance=True, alpha=0.3, gamma=3.0),
           dict(logits=True, balance=True, gamma=1.0, ls=0.1), dict(gamma=0.0)]:
    tag = "_".join(f"{k}{v}" for k, v in kw.items()) or "default"
    mk = dict(apply_class_balancing=kw.get("balance", False), alpha=kw.get("alpha", 0.25),
              gamma=kw.get("gamma", 2.0), from_logits=kw.get("logits", False),
              label_smoothing=kw.get("ls", 0.0))
    add(f"binary_focal_{tag}", (lambda m: lambda y, p: losses.binary_focal_crossentropy(y, p, **m))(mk),
        np_bfce(**kw), t_bfce(**kw), g_bce(kw.get("logits", False)), [(4, 3), (2, 3, 4), (6, 1), (5,)])
for kw in [dict(), dict(logits=True), dict(alpha=0.5, gamma=1.5, ls=0.2), dict(logits=True, gamma=0.0)]:
    tag = "_".join(f"{k}{v}" for k, v in kw.items()) or "default"
    mk = dict(alpha=kw.get("alpha", 0.25), gamma=kw.get("gamma", 2.0), from_logits=kw.get("logits", False),
              label_smoothing=kw.get("ls", 0.0))
    add(f"categorical_focal_{tag}",
        (lambda m: lambda y, p: losses.categorical_focal_crossentropy(y, p, **m))(mk),
        np_cfce(**kw), t_cfce(**kw), g_cce(kw.get("logits", False)), [(4, 3), (2, 3, 4), (4, 5)])
add("categorical_focal_soft", losses.categorical_focal_crossentropy, np_cfce(), t_cfce(),
    g_cce(False, soft=True), [(4, 5)])

def setup(case):
    rng = rng_for(case.id)
    y, p = case.gen(rng, case.shape)
    y = np.asarray(y, np.float32)
    p = np.asarray(p, np.float32)
    return y, p


def maas_loss_and_grad(case, y, p, w):
    yt = y.astype(np.int64) if case.label_int else y.copy()
    pt = maas.tensor(p.copy(), requires_grad=True)
    with maas.GradientTape() as tape:
        out = case.maas(yt, pt)
        total = (out * maas.tensor(w)).sum()
    return np.asarray(out), np.asarray(tape.gradient(total, pt))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_loss_vs_torch(case):
    y, p = setup(case)
    ref_np = case.np(y.astype(np.float64), p.astype(np.float64))
    w = rng_for("w" + case.id).uniform(0.5, 1.5, np.shape(ref_np)).astype(np.float32)
    out, g = maas_loss_and_grad(case, y, p, w)
    tp = torch.tensor(p, requires_grad=True)
    tout = case.torch(torch.tensor(y), tp)
    (tout * torch.tensor(w)).sum().backward()
    tref = tout.detach().numpy()
    assert out.shape == tref.shape == np.shape(ref_np)
    np.testing.assert_allclose(out, tref, rtol=RTOL, atol=ATOL * max(1, np.abs(tref).max()))
    tg = tp.grad.numpy()
    np.testing.assert_allclose(g, tg, rtol=RTOL, atol=ATOL * max(1, np.abs(tg).max()))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_loss_vs_numpy_and_finite_differences(case):
    y, p = setup(case)
    y64, p64 = y.astype(np.float64), p.astype(np.float64)
    ref = case.np(y64, p64)
    w = rng_for("w" + case.id).uniform(0.5, 1.5, np.shape(ref)).astype(np.float32)
    out, g = maas_loss_and_grad(case, y, p, w)
    np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL)
    fd = np.zeros_like(p64)
    for j in np.ndindex(p.shape):
        old = p64[j]
        p64[j] = old + FD_STEP
        lp = np.sum(case.np(y64, p64) * w)
        p64[j] = old - FD_STEP
        lm = np.sum(case.np(y64, p64) * w)
        p64[j] = old
        fd[j] = (lp - lm) / (2 * FD_STEP)
    np.testing.assert_allclose(g, fd, rtol=FD_RTOL, atol=FD_ATOL * max(1, np.abs(fd).max()))


def test_no_gradient_flows_to_y_true():
    y = maas.tensor(np.ones((2, 3), np.float32), requires_grad=True)
    p = maas.tensor(np.full((2, 3), 0.5, np.float32), requires_grad=True)
    with maas.GradientTape() as tape:
        loss = losses.mean_squared_error(y, p).sum()
    gy, gp = tape.gradient(loss, [y, p])
    assert gy is None
    np.testing.assert_allclose(np.asarray(gp), np.full((2, 3), -1 / 3), rtol=1e-6)


# ---------------------------------------------------------------- classes


def _class_cases():
    rng = rng_for("classes")
    N, C = 6, 4
    logits = rng.normal(0, 2, (N, C)).astype(np.float32)
    probs = rng.uniform(0.1, 1.0, (N, C)).astype(np.float32)
    onehot = np.eye(C, dtype=np.float32)[rng.integers(0, C, N)]
    labels = rng.integers(0, C, N)
    binary = rng.integers(0, 2, (N, C)).astype(np.float32)
    reg_y = rng.normal(size=(N, C)).astype(np.float32)
    reg_p = (reg_y + rng.uniform(0.1, 1, (N, C)) * rng.choice([-1, 1], (N, C))).astype(np.float32)
    hinge_p = np.where(rng.random((N, C)) < 0.5, rng.uniform(-1.5, 0.9, (N, C)),
                       rng.uniform(1.1, 2, (N, C))).astype(np.float32) * (2 * binary - 1)
    return [
        ("MeanSquaredError", losses.MeanSquaredError(), reg_y, reg_p,
         lambda y, p: ((y - p) ** 2).mean(-1)),
        ("MeanAbsoluteError", losses.MeanAbsoluteError(), reg_y, reg_p,
         lambda y, p: (y - p).abs().mean(-1)),
        ("BinaryCrossentropy_logits", losses.BinaryCrossentropy(from_logits=True), binary, logits,
         lambda y, p: t_bce(y, p, True)),
        ("BinaryCrossentropy_probs_ls", losses.BinaryCrossentropy(label_smoothing=0.1), binary,
         np.clip(probs, 0.05, 0.95), lambda y, p: t_bce(y, p, False, 0.1)),
        ("CategoricalCrossentropy_logits", losses.CategoricalCrossentropy(from_logits=True), onehot,
         logits, lambda y, p: t_cce(y, p, True)),
        ("CategoricalCrossentropy_probs_ls", losses.CategoricalCrossentropy(label_smoothing=0.2),
         onehot, probs, lambda y, p: t_cce(y, p, False, 0.2)),
        ("SparseCategoricalCrossentropy_logits",
         losses.SparseCategoricalCrossentropy(from_logits=True), labels, logits,
         lambda y, p: t_scce(y, p, True)),
        ("SparseCategoricalCrossentropy_probs", losses.SparseCategoricalCrossentropy(), labels, probs,
         lambda y, p: t_scce(y, p, False)),
        ("Hinge", losses.Hinge(), binary, hinge_p, t_hinge),
        ("Huber", losses.Huber(delta=0.7), reg_y, reg_p, t_huber(0.7)),
        ("LogCosh", losses.LogCosh(), reg_y, reg_p, t_log_cosh),
        ("KLDivergence", losses.KLDivergence(), probs / probs.sum(-1, keepdims=True),
         np.clip(probs, 0.05, 0.95), t_kld),
        ("Poisson", losses.Poisson(), np.round(np.abs(reg_y) * 2), probs + 0.1, t_poisson),
        ("CosineSimilarity", losses.CosineSimilarity(), reg_y, reg_p, t_cosine),
        ("SquaredHinge", losses.SquaredHinge(), binary, hinge_p, t_squared_hinge),
        ("CategoricalHinge", losses.CategoricalHinge(), onehot, logits, t_cat_hinge),
        ("MeanAbsolutePercentageError", losses.MeanAbsolutePercentageError(), reg_y + 3.0, reg_p + 3.0,
         t_mape),
        ("MeanSquaredLogarithmicError", losses.MeanSquaredLogarithmicError(), probs * 2, probs[::-1] * 3,
         t_msle),
        ("BinaryFocalCrossentropy", losses.BinaryFocalCrossentropy(apply_class_balancing=True, from_logits=True),
         binary, logits, t_bfce(balance=True, logits=True)),
        ("CategoricalFocalCrossentropy", losses.CategoricalFocalCrossentropy(gamma=1.0, label_smoothing=0.1),
         onehot, probs, t_cfce(gamma=1.0, ls=0.1)),
    ]


CLASS_CASES = _class_cases()


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "none", "mean"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample_weight"])
@pytest.mark.parametrize("entry", CLASS_CASES, ids=[c[0] for c in CLASS_CASES])
def test_loss_class_reductions(entry, weighted, reduction):
    name, proto, y, p, tfn = entry
    loss_obj = type(proto)(**{**proto.get_config(), "reduction": reduction})
    N = p.shape[0]
    sw = rng_for("sw" + name).uniform(0, 2, N).astype(np.float32) if weighted else None
    pt = maas.tensor(p.copy(), requires_grad=True)
    with maas.GradientTape() as tape:
        out = loss_obj(y, pt, sample_weight=sw)
        total = out.sum()
    g = np.asarray(tape.gradient(total, pt))
    tp = torch.tensor(p, requires_grad=True)
    per = tfn(torch.tensor(y), tp)
    if weighted:
        per = per * torch.tensor(sw)
    if reduction == "none":
        ref = per
    elif reduction == "sum":
        ref = per.sum()
    elif reduction == "mean" and weighted:
        ref = per.sum() / torch.tensor(sw).sum()  # the weighted mean
    else:
        ref = per.sum() / per.numel()  # Keras: sum over the number of elements
    ref.sum().backward()
    r = ref.detach().numpy()
    assert np.asarray(out).shape == r.shape
    np.testing.assert_allclose(np.asarray(out), r, rtol=RTOL, atol=ATOL * max(1, np.abs(r).max()))
    tg = tp.grad.numpy()
    np.testing.assert_allclose(g, tg, rtol=RTOL, atol=ATOL * max(1, np.abs(tg).max()))


def test_sample_weight_with_trailing_one_and_zero_weights():
    y = np.array([0, 1, 2]); logits = np.array([[1.0, 2, 3], [3, 2, 1], [0, 0, 0]], np.float32)
    f = losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
    per = np.asarray(f(y, logits))
    w = np.array([[1.0], [0.0], [2.0]], np.float32)
    np.testing.assert_allclose(np.asarray(f(y, logits, sample_weight=w)), per * w.ravel(), rtol=1e-6)
    g = losses.SparseCategoricalCrossentropy(from_logits=True)
    np.testing.assert_allclose(g(y, logits, sample_weight=w.ravel()).item(), (per * w.ravel()).sum() / 3,
                               rtol=1e-6)


def test_invalid_reduction():
    with pytest.raises(ValueError, match=r"invalid reduction 'avg'; expected one of"):
        losses.MeanSquaredError(reduction="avg")


# ---------------------------------------------------------------- stability


@pytest.mark.parametrize("big", [1e4, -1e4])
def test_huge_logits_finite_loss_and_gradient(big):
    logits = np.array([[big, 0.0, -big], [0.0, big, big], [-big, -big, -big]], np.float32)
    onehot = np.eye(3, dtype=np.float32)[[2, 0, 1]]
    labels = np.array([2, 0, 1])
    binary = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0]], np.float32)
    cases = [
        ("bce", lambda p: losses.binary_crossentropy(binary, p, from_logits=True),
         np_bce(binary.astype(np.float64), logits.astype(np.float64), True)),
        ("cce", lambda p: losses.categorical_crossentropy(onehot, p, from_logits=True),
         np_cce(onehot.astype(np.float64), logits.astype(np.float64), True)),
        ("cce_ls", lambda p: losses.categorical_crossentropy(onehot, p, from_logits=True, label_smoothing=0.1),
         np_cce(onehot.astype(np.float64), logits.astype(np.float64), True, 0.1)),
        ("scce", lambda p: losses.sparse_categorical_crossentropy(labels, p, from_logits=True),
         np_scce(labels, logits.astype(np.float64), True)),
    ]
    for name, f, ref in cases:
        p = maas.tensor(logits.copy(), requires_grad=True)
        with maas.GradientTape() as tape:
            out = f(p)
            total = out.sum()
        o = np.asarray(out)
        g = np.asarray(tape.gradient(total, p))
        assert np.all(np.isfinite(o)) and np.all(np.isfinite(g)), (name, o, g)
        np.testing.assert_allclose(o, ref, rtol=1e-6, atol=1e-6, err_msg=name)
        assert np.all(np.abs(g) <= 1 + 1e-6), (name, g)  # each gradient is a difference of probabilities


def test_probabilities_at_0_and_1_are_clipped():
    p = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], np.float32)
    y = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], np.float32)
    for f in (lambda pp: losses.binary_crossentropy(y, pp),
              lambda pp: losses.categorical_crossentropy(y, pp),
              lambda pp: losses.sparse_categorical_crossentropy(np.array([0, 0]), pp)):
        pt = maas.tensor(p.copy(), requires_grad=True)
        with maas.GradientTape() as tape:
            out = f(pt)
            total = out.sum()
        o, g = np.asarray(out), np.asarray(tape.gradient(total, pt))
        assert np.all(np.isfinite(o)) and np.all(np.isfinite(g)), (o, g)
    # -log(1e-7) for the wrong, confident row of CCE
    np.testing.assert_allclose(np.asarray(losses.categorical_crossentropy(y, p))[0], -np.log(1e-7), rtol=1e-5)


# ---------------------------------------------------------------- errors


def test_sparse_labels_out_of_range():
    logits = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=re.escape(
            "sparse_categorical_crossentropy: label 4 at row 1 is out of range [0, 4)")):
        losses.sparse_categorical_crossentropy(np.array([0, 4, 1]), logits, from_logits=True)
    with pytest.raises(ValueError, match=re.escape("label -1 at row 2 is out of range [0, 4)")):
        losses.sparse_categorical_crossentropy(np.array([0, 1, -1]), logits)
    with pytest.raises(ValueError, match=re.escape("labels must be an integer tensor, received float32 with non-integer values")):
        losses.SparseCategoricalCrossentropy()(np.array([1.5, 0, 0]), logits)


def test_shape_mismatches():
    with pytest.raises(ValueError, match=re.escape(
            "mean_squared_error: y_true shape (4, 2) does not match y_pred shape (4, 3)")):
        losses.mse(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match=re.escape(
            "categorical_crossentropy: y_true shape (4,) does not match y_pred shape (4, 3) "
            "(for integer labels use sparse_categorical_crossentropy)")):
        losses.categorical_crossentropy(np.zeros(4), np.ones((4, 3)))
    with pytest.raises(ValueError, match=re.escape(
            "sparse_categorical_crossentropy: y_true shape (4, 3) does not fit y_pred shape (4, 3): "
            "expected integer labels of shape (4,)")):
        losses.sparse_categorical_crossentropy(np.zeros((4, 3)), np.ones((4, 3)))
    with pytest.raises(ValueError, match=re.escape(
            "binary_crossentropy: y_true shape (5, 1) does not match y_pred shape (4, 1)")):
        losses.BinaryCrossentropy()(np.zeros((5, 1)), np.full((4, 1), 0.5))
    with pytest.raises(ValueError, match=re.escape("hinge: y_pred must have at least 1 dimension, got shape ()")):
        losses.hinge(1.0, 1.0)
    # trailing 1s are accepted, as in Keras: (4,) labels for (4, 1) predictions
    assert losses.mse(np.zeros(4), np.zeros((4, 1))).shape == (4,)


def test_get():
    assert losses.get("mse") is losses.mean_squared_error
    assert losses.get("sparse_categorical_crossentropy") is losses.sparse_categorical_crossentropy
    obj = losses.get("BinaryCrossentropy")
    assert isinstance(obj, losses.BinaryCrossentropy)
    obj = losses.get({"class_name": "SparseCategoricalCrossentropy",
                      "config": {"from_logits": True, "reduction": "sum"}})
    assert obj.from_logits and obj.reduction == "sum"
    assert losses.get(None) is None
    assert losses.get(losses.hinge) is losses.hinge
    with pytest.raises(ValueError, match=r"unknown loss 'unknown'; valid names are: .*binary_crossentropy.*"
                                         r"mae.*mse.*sparse_categorical_crossentropy"):
        losses.get("unknown")


def test_axis_other_than_last_not_supported():
    with pytest.raises(NotImplementedError, match="only axis=-1"):
        losses.categorical_crossentropy(np.ones((2, 3)), np.ones((2, 3)), axis=0)



# ---------------------------------------------------------------- the composed losses' API

KERAS_LOSS_DEFAULTS = {
    losses.Huber: {"name": "huber_loss", "reduction": "sum_over_batch_size", "delta": 1.0},
    losses.LogCosh: {"name": "log_cosh", "reduction": "sum_over_batch_size"},
    losses.KLDivergence: {"name": "kl_divergence", "reduction": "sum_over_batch_size"},
    losses.Poisson: {"name": "poisson", "reduction": "sum_over_batch_size"},
    losses.CosineSimilarity: {"name": "cosine_similarity", "reduction": "sum_over_batch_size", "axis": -1},
    losses.SquaredHinge: {"name": "squared_hinge", "reduction": "sum_over_batch_size"},
    losses.CategoricalHinge: {"name": "categorical_hinge", "reduction": "sum_over_batch_size"},
    losses.MeanAbsolutePercentageError: {"name": "mean_absolute_percentage_error",
                                         "reduction": "sum_over_batch_size"},
    losses.MeanSquaredLogarithmicError: {"name": "mean_squared_logarithmic_error",
                                         "reduction": "sum_over_batch_size"},
    losses.BinaryFocalCrossentropy: {"name": "binary_focal_crossentropy", "reduction": "sum_over_batch_size",
                                     "apply_class_balancing": False, "alpha": 0.25, "gamma": 2.0,
                                     "from_logits": False, "label_smoothing": 0.0, "axis": -1},
    losses.CategoricalFocalCrossentropy: {"name": "categorical_focal_crossentropy",
                                          "reduction": "sum_over_batch_size", "alpha": 0.25, "gamma": 2.0,
                                          "from_logits": False, "label_smoothing": 0.0, "axis": -1},
}


@pytest.mark.parametrize("cls", list(KERAS_LOSS_DEFAULTS), ids=lambda c: c.__name__)
def test_composed_loss_defaults_config_roundtrip(cls):
    assert cls().get_config() == KERAS_LOSS_DEFAULTS[cls]
    obj = losses.get(cls.__name__)
    assert type(obj) is cls
    rt = losses.get({"class_name": cls.__name__, "config": {**cls().get_config(), "reduction": "sum"}})
    assert type(rt) is cls and rt.reduction == "sum"


def test_keras_examples():
    """The values in Keras 3's docstrings."""
    np.testing.assert_allclose(losses.Huber()([[0.0, 1.0], [0.0, 0.0]], [[0.6, 0.4], [0.4, 0.6]]).item(),
                               0.155, rtol=1e-5)
    np.testing.assert_allclose(losses.MeanAbsolutePercentageError()([100.0, 200.0, 300.0],
                                                                    [90.0, 210.0, 310.0]).item(),
                               6.111111, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(losses.log_cosh([[0.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]])).mean(),
                               0.108, atol=5e-4)
    np.testing.assert_allclose(np.asarray(losses.cosine_similarity([[0.0, 1.0], [1.0, 1.0], [1.0, 1.0]],
                                                                   [[1.0, 0.0], [1.0, 1.0], [-1.0, -1.0]])),
                               [0.0, -0.99999994, 0.99999994], atol=1e-6)
    y, p = [[0, 1], [0, 0]], [[-18.6, 0.51], [2.94, -12.8]]
    np.testing.assert_allclose(np.asarray(losses.BinaryFocalCrossentropy(gamma=5, from_logits=True,
                                                                         reduction=None)(y, p)),
                               [0.0017, 1.1561], atol=1e-4)
    np.testing.assert_allclose(np.asarray(losses.BinaryFocalCrossentropy(apply_class_balancing=True, gamma=5,
                                                                         from_logits=True, reduction=None)(y, p)),
                               [0.0004, 0.8670], atol=1e-4)
    np.testing.assert_allclose(np.asarray(losses.CategoricalFocalCrossentropy(reduction=None)(
        [[0, 1, 0], [0, 0, 1]], [[0.05, 0.95, 0], [0.1, 0.8, 0.1]])), [3.2058331e-05, 4.6627346e-01], rtol=1e-4)


def test_composed_loss_aliases_and_get():
    assert losses.get("huber") is losses.huber
    for alias, fn in [("kld", losses.kl_divergence), ("KLD", losses.kl_divergence),
                      ("kullback_leibler_divergence", losses.kl_divergence), ("logcosh", losses.log_cosh),
                      ("mape", losses.mean_absolute_percentage_error), ("MAPE", losses.mean_absolute_percentage_error),
                      ("msle", losses.mean_squared_logarithmic_error), ("MSLE", losses.mean_squared_logarithmic_error),
                      ("bce", losses.binary_crossentropy), ("poisson", losses.poisson),
                      ("categorical_focal_crossentropy", losses.categorical_focal_crossentropy)]:
        assert losses.get(alias) is fn, alias
    assert losses.MAPE is losses.mape is losses.mean_absolute_percentage_error


def test_cosine_similarity_axis_and_zero_vectors():
    rng = rng_for("cos_axis")
    y, p = rng.normal(size=(3, 4, 2)), rng.normal(size=(3, 4, 2))
    out = losses.cosine_similarity(y, p, axis=1)
    np.testing.assert_allclose(np.asarray(out), np_cosine(y, p, axis=1), rtol=1e-5, atol=1e-6)
    # a zero vector has cosine 0 and a finite gradient
    pt = maas.tensor(np.zeros((1, 3), np.float32), requires_grad=True)
    with maas.GradientTape() as tape:
        val = losses.cosine_similarity(np.ones((1, 3)), pt).sum()
    assert val.item() == 0.0 and np.all(np.isfinite(np.asarray(tape.gradient(val, pt))))


def test_composed_losses_shape_errors_and_trailing_one():
    with pytest.raises(ValueError, match=re.escape("huber: y_true shape (4, 2) does not match y_pred shape (4, 3)")):
        losses.huber(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match=re.escape("poisson: y_pred must have at least 1 dimension, got shape ()")):
        losses.poisson(1.0, 1.0)
    assert losses.log_cosh(np.zeros(4), np.zeros((4, 1))).shape == (4,)
    assert losses.kl_divergence(np.full((4, 1), 0.5), np.full(4, 0.5)).shape == (4,)


def test_composed_loss_trains_a_model():
    """compile/fit with a composed loss (eager path) lowers it."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 4)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5], [0.0]], np.float32) + 0.3).astype(np.float32)
    maas.random.set_seed(0)
    model = maas.Sequential([maas.Input((4,)), maas.layers.Dense(1)])
    model.compile(optimizer=maas.optimizers.Adam(0.05), loss=losses.Huber(delta=0.5))
    hist = model.fit(x, y, epochs=6, batch_size=16, verbose=0, shuffle=False)
    assert hist.history["loss"][-1] < 0.5 * hist.history["loss"][0], hist.history["loss"]


def test_docstring_examples_run():
    """The examples in maas.losses's docstrings are real: they run and print what they show."""
    import doctest
    r = doctest.testmod(maas.losses, extraglobs={"maas": maas, "np": np},
                        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert r.failed == 0 and r.attempted > 5
