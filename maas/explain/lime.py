"""Lime for tabular data (Ribeiro et al., 2016): Gaussian perturbations
around each row, an exponential kernel on their distance to it, and a
weighted ridge fit whose coefficients are the explanation.
"""
from __future__ import annotations

import numpy as np

from ._model import ExplainArgumentError, as_evaluator, as_input, resolve_target

__all__ = ["Lime", "weighted_ridge"]


def weighted_ridge(Z, y, w, alpha: float, use_sklearn: bool | None = None):
    """(coef, intercept) of ``min sum w (y - Z c - b)^2 + alpha |c|^2``:
    scikit-learn's Ridge when it is installed (and ``use_sklearn`` is not
    False), else the same closed form (weighted centring, then the normal
    equations)."""
    if use_sklearn is not False:
        try:
            from sklearn.linear_model import Ridge
        except ImportError:
            if use_sklearn:
                raise
        else:
            r = Ridge(alpha=alpha, fit_intercept=True).fit(Z, y, sample_weight=w)
            return np.asarray(r.coef_, np.float64), float(r.intercept_)
    Z = np.asarray(Z, np.float64)
    y = np.asarray(y, np.float64)
    w = np.asarray(w, np.float64)
    sw = w.sum()
    zm = (w[:, None] * Z).sum(0) / sw
    ym = (w * y).sum() / sw
    Zc, yc = Z - zm, y - ym
    A = (Zc.T * w) @ Zc + alpha * np.eye(Z.shape[1])
    coef = np.linalg.solve(A, (Zc.T * w) @ yc)
    return coef, float(ym - zm @ coef)


class Lime:
    """Lime on tabular rows. ``attribute(x, target=None, n_samples=5000,
    seed=0)`` draws ``x + scale * N(0, 1)`` around each row (``scale``: the
    per-feature standard deviation of ``training_data`` when given, else
    ``feature_scale``, default 1), weights each sample by ``sqrt(exp(-d^2 /
    kernel_width^2))`` with ``d`` the distance in scaled units (lime's
    kernel; ``kernel_width`` defaults to ``0.75 * sqrt(features)``), fits a
    weighted ridge (``alpha``, scikit-learn's Ridge when installed) of the
    target output on the samples, and returns its coefficients in ``x``'s
    shape, in the input's units (a linear model's weights come back).
    ``intercept_`` and ``score_`` (weighted R^2) of the last call are kept.

    >>> import numpy as np, maas
    >>> m = maas.Sequential([maas.Input((3,)), maas.layers.Dense(1)])
    >>> Lime(m).attribute(np.ones((1, 3), np.float32), n_samples=500).shape
    (1, 3)
    """

    def __init__(self, model, training_data=None, feature_scale=None, kernel_width=None,
                 alpha: float = 1.0, max_batch: int | None = None, use_sklearn: bool | None = None):
        self.evaluator = as_evaluator(model, max_batch)
        self.scale = None
        if training_data is not None:
            td = as_input(training_data, "training_data")
            s = td.reshape(len(td), -1).std(0)
            self.scale = np.where(s > 0, s, 1.0)
        elif feature_scale is not None:
            self.scale = np.asarray(feature_scale, np.float64).ravel()
            if (self.scale <= 0).any() or not np.isfinite(self.scale).all():
                raise ExplainArgumentError("feature_scale must be positive numbers")
        if kernel_width is not None and not kernel_width > 0:
            raise ExplainArgumentError(f"kernel_width must be positive, received {kernel_width!r}")
        if not alpha >= 0:
            raise ExplainArgumentError(f"alpha must be non-negative, received {alpha!r}")
        self.kernel_width = kernel_width
        self.alpha = float(alpha)
        self.use_sklearn = use_sklearn

    def attribute(self, inputs, target=None, n_samples: int = 5000, seed: int = 0) -> np.ndarray:
        x = as_input(inputs)
        if not isinstance(n_samples, (int, np.integer)) or n_samples < 2:
            raise ExplainArgumentError(f"n_samples must be an integer of at least 2, received {n_samples!r}")
        n, F = len(x), int(np.prod(x.shape[1:]))
        scale = np.ones(F) if self.scale is None else self.scale
        if len(scale) != F:
            raise ExplainArgumentError(f"the feature scale has {len(scale)} values, a row {F} features")
        width = self.kernel_width or 0.75 * np.sqrt(F)
        rng = np.random.default_rng(seed)
        eps = rng.standard_normal((n_samples, F))
        eps[0] = 0.0                                   # the row itself, as lime
        d = np.sqrt((eps * eps).sum(1))
        w = np.sqrt(np.exp(-(d * d) / width ** 2))
        delta = eps * scale                            # the same perturbations for every row
        xf = x.reshape(n, F).astype(np.float64)
        zs = (xf[:, None, :] + delta[None]).astype(np.float32)    # (n, S, F)
        y = self.evaluator.predict(zs.reshape((n * n_samples,) + x.shape[1:]))
        y = y.reshape(n, n_samples, -1)
        t = resolve_target(target, y[:, 0])
        out = np.empty((n, F), np.float32)
        self.intercept_ = np.empty(n)
        self.score_ = np.empty(n)
        for i in range(n):
            yi = y[i, :, t[i]].astype(np.float64)
            coef, b = weighted_ridge(delta, yi, w, self.alpha, self.use_sklearn)
            out[i] = coef
            pred = delta @ coef + b
            ym = (w * yi).sum() / w.sum()
            ss = (w * (yi - ym) ** 2).sum()
            self.intercept_[i] = b
            self.score_[i] = 1.0 - (w * (yi - pred) ** 2).sum() / ss if ss > 0 else 1.0
        return out.reshape(x.shape)
