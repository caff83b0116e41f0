"""Gradient attributions: Saliency, InputXGradient, IntegratedGradients and
the noise tunnel (SmoothGrad), shaped as Captum's.

Every gradient comes from a compiled plan of the model's forward pass and
its backward pass into the input (:class:`maas.explain._model.Evaluator`):
all rows, and all of integrated gradients' steps, go through it in chunks of
``internal_batch_size`` rows, one C call each.
"""
from __future__ import annotations

import numpy as np

from ._model import (ExplainArgumentError, as_evaluator, as_input, resolve_baselines,
                     resolve_target)

__all__ = ["Saliency", "InputXGradient", "IntegratedGradients", "NoiseTunnel", "SmoothGrad",
           "approximation_parameters"]


class _GradientMethod:
    _name = "a gradient method"

    def __init__(self, model, max_batch: int | None = None):
        self.evaluator = as_evaluator(model, max_batch)
        self.evaluator.require_grad(type(self).__name__)

    def _targets(self, x, target):
        if target is None:
            return resolve_target(None, self.evaluator.predict(x))
        k = self.evaluator.n_outputs(x.shape)
        return resolve_target(target, np.empty((len(x), k), np.float32))


class Saliency(_GradientMethod):
    """The gradient of the target output with respect to the input
    (Simonyan et al., 2013); ``abs=True`` (Captum's default) its absolute
    value.

    >>> import numpy as np, maas
    >>> m = maas.Sequential([maas.Input((3,)), maas.layers.Dense(2)])
    >>> a = maas.explain.Saliency(m).attribute(np.ones((4, 3), np.float32), target=1)
    >>> a.shape
    (4, 3)
    """

    def attribute(self, inputs, target=None, abs: bool = True,  # noqa: A002
                  internal_batch_size: int | None = None) -> np.ndarray:
        x = as_input(inputs)
        t = self._targets(x, target)
        _, g = self.evaluator.grad(x, t, internal_batch_size)
        return np.abs(g) if abs else g


class InputXGradient(_GradientMethod):
    """The input times the gradient of the target output (Shrikumar et al.).

    >>> import numpy as np, maas
    >>> m = maas.Sequential([maas.Input((3,)), maas.layers.Dense(2)])
    >>> maas.explain.InputXGradient(m).attribute(np.zeros((1, 3), np.float32)).shape
    (1, 3)
    """

    def attribute(self, inputs, target=None, internal_batch_size: int | None = None) -> np.ndarray:
        x = as_input(inputs)
        t = self._targets(x, target)
        _, g = self.evaluator.grad(x, t, internal_batch_size)
        return x * g


_METHODS = ("riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def approximation_parameters(method: str, n_steps: int):
    """(step sizes, alphas) of a quadrature of [0, 1] in ``n_steps`` points,
    as Captum's ``approximation_parameters``, except that
    ``"riemann_trapezoid"`` is the trapezoid rule on ``linspace(0, 1, n)``
    whose weights sum to 1 (Captum's sum to (n-1)/n)."""
    if method not in _METHODS:
        raise ExplainArgumentError(f"method must be one of {', '.join(_METHODS)}, received {method!r}")
    n = n_steps
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return 0.5 * weights, 0.5 * (nodes + 1.0)
    if method == "riemann_trapezoid":
        if n < 2:
            raise ExplainArgumentError("n_steps must be at least 2 for riemann_trapezoid")
        w = np.full(n, 1.0 / (n - 1))
        w[0] = w[-1] = 0.5 / (n - 1)
        return w, np.linspace(0.0, 1.0, n)
    w = np.full(n, 1.0 / n)
    if method == "riemann_left":
        return w, np.linspace(0.0, 1.0 - 1.0 / n, n)
    if method == "riemann_right":
        return w, np.linspace(1.0 / n, 1.0, n)
    return w, np.linspace(0.5 / n, 1.0 - 0.5 / n, n)


class IntegratedGradients(_GradientMethod):
    """Integrated gradients (Sundararajan et al., 2017): ``(x - b) *
    integral_0^1 grad f(b + a (x - b)) da``, by a quadrature of ``n_steps``
    points (``method`` as Captum's: ``"gausslegendre"``, ``"riemann_left"``,
    ``"riemann_right"``, ``"riemann_middle"``, ``"riemann_trapezoid"``).
    ``return_convergence_delta=True`` also returns completeness's error per
    row, ``sum(attributions) - (f(x) - f(b))``.

    >>> import numpy as np, maas
    >>> m = maas.Sequential([maas.Input((3,)), maas.layers.Dense(1)])
    >>> ig = maas.explain.IntegratedGradients(m)
    >>> a, delta = ig.attribute(np.ones((2, 3), np.float32), return_convergence_delta=True)
    >>> bool(abs(delta).max() < 1e-4)
    True
    """

    def __init__(self, model, multiply_by_inputs: bool = True, max_batch: int | None = None):
        super().__init__(model, max_batch)
        self.multiply_by_inputs = bool(multiply_by_inputs)

    def attribute(self, inputs, baselines=None, target=None, n_steps: int = 50,
                  method: str = "gausslegendre", internal_batch_size: int | None = None,
                  return_convergence_delta: bool = False):
        x = as_input(inputs)
        if not isinstance(n_steps, (int, np.integer)) or isinstance(n_steps, bool) or n_steps < 1:
            raise ExplainArgumentError(f"n_steps must be a positive integer, received {n_steps!r}")
        if internal_batch_size is not None and (not isinstance(internal_batch_size, (int, np.integer))
                                                or internal_batch_size < 1):
            raise ExplainArgumentError(f"internal_batch_size must be a positive integer, received "
                                       f"{internal_batch_size!r}")
        b = resolve_baselines(baselines, x)
        w, alphas = approximation_parameters(method, int(n_steps))
        n, S = len(x), len(alphas)
        t = self._targets(x, target)
        d = (x - b).astype(np.float32)
        # rows ordered step-major (as Captum scales its inputs): step s of row i at s*n + i
        a32 = alphas.astype(np.float32).reshape((S, 1) + (1,) * (x.ndim - 1))
        path = (b[None] + a32 * d[None]).reshape((S * n,) + x.shape[1:])
        _, g = self.evaluator.grad(path, np.tile(t, S), internal_batch_size)
        g = g.reshape((S, n) + x.shape[1:]).astype(np.float64)
        total = np.tensordot(w, g, axes=(0, 0))
        attr = (total * d if self.multiply_by_inputs else total).astype(np.float32)
        if not return_convergence_delta:
            return attr
        ends = self.evaluator.predict(np.concatenate([x, b]))
        fx, fb = ends[np.arange(n), t], ends[n + np.arange(n), t]
        delta = attr.reshape(n, -1).astype(np.float64).sum(1) - (fx.astype(np.float64) - fb)
        return attr, delta

    def convergence_delta(self, attributions, inputs, baselines=None, target=None):
        """``sum(attributions) - (f(x) - f(b))`` per row."""
        x = as_input(inputs)
        b = resolve_baselines(baselines, x)
        t = self._targets(x, target)
        ends = self.evaluator.predict(np.concatenate([x, b]))
        n = len(x)
        return (np.asarray(attributions, np.float64).reshape(n, -1).sum(1)
                - (ends[np.arange(n), t].astype(np.float64) - ends[n + np.arange(n), t]))


_NT = ("smoothgrad", "smoothgrad_sq", "vargrad")


class NoiseTunnel:
    """Averages another method's attributions over ``nt_samples`` noisy
    copies of each row, Gaussian with ``stdevs`` (Captum's NoiseTunnel;
    Smilkov et al., 2017): ``nt_type`` ``"smoothgrad"`` (the mean),
    ``"smoothgrad_sq"`` (the mean of squares) or ``"vargrad"`` (the
    variance). Seeded: the same ``seed`` gives the same attributions. Every
    copy of every row goes through the inner method in one batch.

    >>> import numpy as np, maas
    >>> m = maas.Sequential([maas.Input((3,)), maas.layers.Dense(2)])
    >>> nt = maas.explain.NoiseTunnel(maas.explain.Saliency(m))
    >>> nt.attribute(np.ones((2, 3), np.float32), nt_samples=4, stdevs=0.1, seed=0).shape
    (2, 3)
    """

    def __init__(self, attribution_method):
        if not hasattr(attribution_method, "attribute"):
            raise TypeError(f"attribution_method must be an explanation method (with attribute()), "
                            f"received {type(attribution_method).__name__}")
        self.method = attribution_method

    def attribute(self, inputs, nt_type: str = "smoothgrad", nt_samples: int = 5,
                  stdevs: float = 1.0, draw_baseline_from_distrib: bool = False, seed: int = 0,
                  target=None, **kwargs):
        x = as_input(inputs)
        if nt_type not in _NT:
            raise ExplainArgumentError(f"nt_type must be one of {', '.join(_NT)}, received {nt_type!r}")
        if not isinstance(nt_samples, (int, np.integer)) or nt_samples < 1:
            raise ExplainArgumentError(f"nt_samples must be a positive integer, received {nt_samples!r}")
        if not np.isfinite(stdevs) or stdevs < 0:
            raise ExplainArgumentError(f"stdevs must be a non-negative number, received {stdevs!r}")
        n, S = len(x), int(nt_samples)
        ev = getattr(self.method, "evaluator", None)
        if target is None and ev is not None:
            target = resolve_target(None, ev.predict(x))   # the clean rows' predicted classes
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal((S,) + x.shape).astype(np.float32) * np.float32(stdevs)
        xs = (x[None] + noise).reshape((S * n,) + x.shape[1:])
        kw = dict(kwargs)
        if target is not None:
            t = np.asarray(target)
            kw["target"] = np.tile(np.broadcast_to(t, (n,)), S) if t.ndim else t
        if "baselines" in kw and kw["baselines"] is not None:
            b = resolve_baselines(kw["baselines"], x)
            if draw_baseline_from_distrib:
                pick = rng.integers(0, n, size=S * n)
                kw["baselines"] = b[pick]
            else:
                kw["baselines"] = np.tile(b, (S,) + (1,) * (x.ndim - 1))
        out = self.method.attribute(xs, **kw)
        delta = None
        if isinstance(out, tuple):
            out, delta = out
        a = np.asarray(out, np.float64).reshape((S, n) + x.shape[1:])
        if nt_type == "smoothgrad":
            r = a.mean(0)
        elif nt_type == "smoothgrad_sq":
            r = (a * a).mean(0)
        else:
            r = a.var(0)
        r = r.astype(np.float32)
        return (r, delta) if delta is not None else r


class SmoothGrad(NoiseTunnel):
    """SmoothGrad: the mean gradient over noisy copies of each row, i.e.
    ``NoiseTunnel(Saliency(model))`` with the raw (signed) gradient; seeded.

    >>> import numpy as np, maas
    >>> m = maas.Sequential([maas.Input((3,)), maas.layers.Dense(2)])
    >>> maas.explain.SmoothGrad(m).attribute(np.ones((2, 3), np.float32), seed=1).shape
    (2, 3)
    """

    def __init__(self, model, abs: bool = False, max_batch: int | None = None):  # noqa: A002
        super().__init__(Saliency(model, max_batch))
        self.abs = bool(abs)
        self.evaluator = self.method.evaluator

    def attribute(self, inputs, target=None, nt_samples: int = 25, stdevs: float = 0.15,
                  nt_type: str = "smoothgrad", seed: int = 0, internal_batch_size=None):
        return super().attribute(inputs, nt_type=nt_type, nt_samples=nt_samples, stdevs=stdevs,
                                 seed=seed, target=target, abs=self.abs,
                                 internal_batch_size=internal_batch_size)
