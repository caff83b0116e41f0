"""KernelShap (Lundberg and Lee, 2017): Shapley values of the model's
output with features (or groups of them) missing replaced by a background
set, as ``shap.KernelExplainer`` computes them.

Up to ``exact_max`` (12) features or groups, every coalition is evaluated
and the Shapley values come out exact; above that, ``n_samples`` coalitions
are drawn with a fixed seed by the Shapley kernel (whole coalition sizes
enumerated first while the budget allows, complements paired, as shap does)
and the values are the kernel-weighted least squares fit constrained to sum
to ``f(x) - E[f(background)]`` (efficiency). The coalitions are the same for
every row, so a batch gives what each row alone gives. A group whose
features equal every background row's in ``x`` is a null player: it gets 0
and the game is played by the others (shap's "varying" features). Every row of every
coalition with every background row goes through the model's compiled
forward plan in chunks, one C call each.
"""
from __future__ import annotations

import functools
import itertools
import math

import numpy as np

from ._model import ExplainArgumentError, as_evaluator, as_input, resolve_mask, resolve_target

__all__ = ["KernelShap", "shapley_kernel_coalitions"]

EXACT_MAX = 12


def _all_coalitions(M):
    ids = np.arange(1 << M, dtype=np.int64)
    return ((ids[:, None] >> np.arange(M)) & 1).astype(bool)


@functools.lru_cache(maxsize=32)
def _coalitions_cached(M, n_samples, seed):
    Z, W = shapley_kernel_coalitions(M, n_samples, seed)
    Z.setflags(write=False)
    W.setflags(write=False)
    return Z, W


def shapley_kernel_coalitions(M: int, n_samples: int, seed: int = 0):
    """(Z (C, M) bool, kernel weights (C,)) of sampled KernelSHAP, without
    the empty and full coalitions (the constraint stands for them)."""
    rng = np.random.default_rng(seed)
    n_sizes = int(math.ceil((M - 1) / 2.0))
    n_paired = int(math.floor((M - 1) / 2.0))
    wv = np.array([(M - 1.0) / (i * (M - i)) for i in range(1, n_sizes + 1)])
    wv[:n_paired] *= 2
    wv /= wv.sum()
    rows, wts = [], []
    n_full, left = 0, int(n_samples)
    rw = wv.copy()
    for ss in range(1, n_sizes + 1):
        nsub = math.comb(M, ss) * (2 if ss <= n_paired else 1)
        if left * rw[ss - 1] / nsub < 1.0 - 1e-8:
            break
        n_full += 1
        left -= nsub
        if rw[ss - 1] < 1.0:
            rw /= 1.0 - rw[ss - 1]
        w = wv[ss - 1] / math.comb(M, ss) / (2 if ss <= n_paired else 1)
        idx = np.array(list(itertools.combinations(range(M), ss)), np.int64)
        z = np.zeros((len(idx), M), bool)
        z[np.arange(len(idx))[:, None], idx] = True
        rows.append(z)
        wts.append(np.full(len(z), w))
        if ss <= n_paired:
            rows.append(~z)
            wts.append(np.full(len(z), w))
    nfixed = sum(len(r) for r in rows)
    if n_full != n_sizes and left > 0:
        rw = wv.copy()
        rw[:n_paired] /= 2
        rw = rw[n_full:]
        rw /= rw.sum()
        # draws in rounds until `left` distinct coalitions (at most 4 * left
        # draws, as shap): each draw, then its complement when its size is
        # paired; a coalition drawn again adds to its weight
        parts, drawn = [], 0
        while True:
            d = min(4 * left - drawn, max(64, int(1.3 * left)))
            sizes = rng.choice(len(rw), d, p=rw) + n_full + 1
            z = rng.permuted(np.broadcast_to(np.arange(M, dtype=np.int32), (d, M)), axis=1) \
                < sizes[:, None]
            paired = sizes <= n_paired
            c2 = np.empty((d, 2, M), bool)
            c2[:, 0], c2[:, 1] = z, ~z
            keep = np.stack([np.ones(d, bool), paired], 1).reshape(-1)
            parts.append(c2.reshape(-1, M)[keep])
            drawn += d
            cand = np.concatenate(parts) if len(parts) > 1 else parts[0]
            keys = np.packbits(cand, axis=1)
            keys = np.ascontiguousarray(keys).view(np.dtype((np.void, keys.shape[1]))).ravel()
            _, first, inv = np.unique(keys, return_index=True, return_inverse=True)
            if len(first) > left or drawn >= 4 * left:
                break
        order = np.argsort(first)
        chosen = order[:left]
        cut = first[order[left]] if len(order) > left else len(cand)
        counts = np.bincount(inv.ravel()[:cut], minlength=len(first))[chosen].astype(np.float64)
        zs = cand[first[chosen]]
        counts *= wv[n_full:].sum() / counts.sum()
        rows.append(zs)
        wts.append(counts)
    if not rows:
        return np.zeros((0, M), bool), np.zeros(0)
    Z, W = np.concatenate(rows), np.concatenate(wts)
    assert len(Z) >= nfixed
    return Z, W


class KernelShap:
    """Shapley values of ``model``'s outputs against a ``background`` set
    (rows of the inputs' shape; shap's ``KernelExplainer(f, background)``).

    ``attribute(x, target=None, n_samples=None, feature_mask=None, seed=0)``
    returns, in ``x``'s shape, each feature's share of ``f(x)[target] -
    E[f(background)][target]`` (a group's value is given to each of its
    features, as Captum does). ``expected_value`` is ``E[f(background)]``.

    >>> import numpy as np, maas
    >>> m = maas.Sequential([maas.Input((4,)), maas.layers.Dense(1)])
    >>> ks = maas.explain.KernelShap(m, np.zeros((3, 4), np.float32))
    >>> phi = ks.attribute(np.ones((2, 4), np.float32))
    >>> bool(np.allclose(phi.sum(1), m.predict(np.ones((2, 4)), verbose=0)[:, 0] - ks.expected_value[0], atol=1e-5))
    True
    """

    def __init__(self, model, background, max_batch: int | None = None, exact_max: int = EXACT_MAX):
        self.evaluator = as_evaluator(model, max_batch)
        bg = as_input(background, "background")
        self.background = bg
        self.exact_max = int(exact_max)
        self.expected_value = self.evaluator.predict(bg).astype(np.float64).mean(0)

    def _values(self, x, groups, G, Z):
        """v(S) = E_bg f(x on S, background elsewhere): (C, n, k)."""
        ev, bg = self.evaluator, self.background
        B, F = len(bg), int(np.prod(x.shape[1:]))
        Zf = Z[:, groups.ravel()]                       # (C, F)
        C = len(Z)
        per = max(1, min(C, (1 << 23) // max(1, B * F)))
        xf, bgf = x.reshape(len(x), F), bg.reshape(B, F)
        k = len(self.expected_value)
        out = np.empty((C, len(x), k), np.float64)
        for i in range(len(x)):
            for c0 in range(0, C, per):
                z = Zf[c0:c0 + per]
                xs = np.where(z[:, None, :], xf[i][None, None], bgf[None])   # (c, B, F)
                y = ev.predict(xs.reshape((-1,) + x.shape[1:]))
                out[c0:c0 + len(z), i] = y.reshape(len(z), B, k).astype(np.float64).mean(1)
        return out

    def _game(self, x, groups, players, fx, n_samples, seed):
        """Shapley values (n, P, k) of the players (group ids) of rows x; the
        other groups are taken from x (they equal the background there)."""
        G, P = int(groups.max()) + 1, len(players)
        base = self.expected_value

        def full(Zp):   # coalitions of the players -> of every group
            Z = np.ones((len(Zp), G), bool)
            Z[:, players] = Zp
            return Z

        exact = (n_samples is None and P <= self.exact_max) or \
            (n_samples is not None and P <= 30 and n_samples >= (1 << P) - 2)
        if P == 1:
            return (fx - base)[:, None, :]
        if exact:
            Zp = _all_coalitions(P)
            v = self._values(x, groups, G, full(Zp))     # (2^P, n, k)
            v[0] = base
            v[-1] = fx
            size = Zp.sum(1)
            w = np.array([math.factorial(s) * math.factorial(P - s - 1) / math.factorial(P)
                          for s in range(P)])
            phi = np.empty((len(x), P, len(base)))
            ids_all = np.arange(1 << P)
            for j in range(P):
                s = ids_all[~Zp[:, j]]
                phi[:, j] = np.tensordot(w[size[s]], v[s | (1 << j)] - v[s], axes=(0, 0))
            return phi
        ns = int(n_samples) if n_samples is not None else 2 * P + 2048
        Zp, W = _coalitions_cached(P, ns, int(seed))
        v = self._values(x, groups, G, full(Zp))         # (C, n, k)
        return _solve(Zp, W, v, fx, base)

    def attribute(self, inputs, target=None, n_samples: int | None = None, feature_mask=None,
                  seed: int = 0, return_all_outputs: bool = False) -> np.ndarray:
        x = as_input(inputs)
        if x.shape[1:] != self.background.shape[1:]:
            raise ExplainArgumentError(f"inputs rows have shape {x.shape[1:]}, the background's "
                                       f"{self.background.shape[1:]}; they must match")
        mask, shared = resolve_mask(feature_mask, x)
        if not shared:
            out = [self.attribute(x[i:i + 1], None if target is None else np.broadcast_to(
                np.asarray(target), (len(x),))[i:i + 1], n_samples, mask[i], seed,
                return_all_outputs) for i in range(len(x))]
            return np.concatenate(out)
        ids, groups = np.unique(mask[0], return_inverse=True)
        groups = groups.reshape(mask.shape[1:])
        G = len(ids)
        if n_samples is not None and (not isinstance(n_samples, (int, np.integer)) or n_samples < 1):
            raise ExplainArgumentError(f"n_samples must be a positive integer, received {n_samples!r}")
        fx = self.evaluator.predict(x).astype(np.float64)   # (n, k)
        t = resolve_target(target, fx.astype(np.float32))
        base = self.expected_value
        # null players (as shap's "varying" features): a group whose features
        # equal every background row's in x changes nothing and gets 0; the
        # game is played by the others, rows with the same players together
        F = int(np.prod(x.shape[1:]))
        diff = (x.reshape(len(x), 1, F) != self.background.reshape(1, -1, F)).any(1)   # (n, F)
        varying = np.zeros((len(x), G), bool)
        for g in range(G):
            varying[:, g] = diff[:, groups.ravel() == g].any(1)
        phi = np.zeros((len(x), G, len(base)))
        sigs, inv = np.unique(varying, axis=0, return_inverse=True)
        for si, sig in enumerate(sigs):
            rows = np.flatnonzero(inv.ravel() == si)
            players = np.flatnonzero(sig)
            if len(players):
                phi[rows[:, None], players[None]] = self._game(x[rows], groups, players, fx[rows],
                                                               n_samples, seed)
        # (n, G, k) -> per feature
        per_feature = phi[:, groups.ravel()]            # (n, F, k)
        if return_all_outputs:
            return per_feature.reshape(x.shape + (len(base),)).astype(np.float32)
        a = per_feature[np.arange(len(x)), :, t]        # (n, F)
        return a.reshape(x.shape).astype(np.float32)


def _solve(Z, W, v, fx, base):
    """The efficiency-constrained weighted least squares of KernelSHAP, for
    every row and output at once: (n, G, k)."""
    C, G = Z.shape
    n, k = fx.shape
    Zf = Z.astype(np.float64)
    y = v - base                                         # (C, n, k)
    tot = fx - base                                      # (n, k)
    y2 = y - Zf[:, -1][:, None, None] * tot[None]
    X = Zf[:, :-1] - Zf[:, -1:]                          # (C, G-1)
    XtW = X.T * W
    A = XtW @ X
    rhs = XtW @ y2.reshape(C, n * k)
    try:
        beta = np.linalg.solve(A, rhs)
    except np.linalg.LinAlgError:   # too few distinct coalitions: the least-norm solution
        beta = np.linalg.lstsq(A, rhs, rcond=None)[0]
    beta = beta.reshape(G - 1, n, k).transpose(1, 0, 2)  # (n, G-1, k)
    last = tot - beta.sum(1)
    return np.concatenate([beta, last[:, None]], axis=1)
