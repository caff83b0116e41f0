"""Perturbation attributions: Occlusion (a sliding window) and
FeatureAblation (features or groups of them replaced by a baseline), shaped
as Captum's. All the perturbed copies of all rows go through the model's
compiled forward plan in chunks, one C call each; no gradient is needed, so
any model (a ServedModel, a plain function) can be explained.
"""
from __future__ import annotations

import itertools

import numpy as np

from ._model import (ExplainArgumentError, as_evaluator, as_input, resolve_baselines,
                     resolve_mask, resolve_target)

__all__ = ["Occlusion", "FeatureAblation"]


def _ablation_diffs(ev, x, b, masks, t):
    """f(x)[i, t_i] - f(x with masks[w] set to b)[i, t_i], shape (W, n);
    masks (W, *x.shape[1:]) bool, shared by every row."""
    n, W = len(x), len(masks)
    fx = ev.predict(x)[np.arange(n), t]
    per = max(1, ev._chunk(x) // n) if n <= ev._chunk(x) else 1
    out = np.empty((W, n), np.float32)
    for w0 in range(0, W, per):
        m = masks[w0:w0 + per]
        xs = np.where(m[:, None], b[None], x[None]).reshape((-1,) + x.shape[1:])
        y = ev.predict(xs).reshape(len(m), n, -1)
        out[w0:w0 + len(m)] = fx[None] - y[:, np.arange(n), t]
    return out


class _PerturbationMethod:
    def __init__(self, model, max_batch: int | None = None):
        self.evaluator = as_evaluator(model, max_batch)

    def _targets(self, x, target):
        if target is None:
            return resolve_target(None, self.evaluator.predict(x))
        return resolve_target(target, np.empty((len(x), self.evaluator.n_outputs(x.shape))))


class FeatureAblation(_PerturbationMethod):
    """Each feature, or each group of ``feature_mask`` (integer ids in the
    shape of one row, or one mask per row), replaced by its baseline: the
    attribution of every feature of a group is ``f(x) - f(x ablated)`` on
    the target output, as Captum's FeatureAblation.

    >>> import numpy as np, maas
    >>> m = maas.Sequential([maas.Input((4,)), maas.layers.Dense(1)])
    >>> fa = maas.explain.FeatureAblation(m)
    >>> fa.attribute(np.ones((2, 4), np.float32), feature_mask=np.array([0, 0, 1, 1])).shape
    (2, 4)
    """

    def attribute(self, inputs, baselines=None, target=None, feature_mask=None) -> np.ndarray:
        x = as_input(inputs)
        b = resolve_baselines(baselines, x)
        t = self._targets(x, target)
        mask, shared = resolve_mask(feature_mask, x)
        out = np.zeros_like(x)
        rows = [slice(None)] if shared else [slice(i, i + 1) for i in range(len(x))]
        for r in rows:
            m = mask[0] if shared else mask[r][0]
            ids = np.unique(m)
            masks = m[None] == ids.reshape((-1,) + (1,) * m.ndim)
            d = _ablation_diffs(self.evaluator, x[r], b[r], masks, t[r])  # (G, n)
            out[r] = np.tensordot(d, masks.astype(np.float32), axes=(0, 0))
        return out


class Occlusion(_PerturbationMethod):
    """A window of ``sliding_window_shapes`` (one size per non-batch axis:
    ``(3, 3, 1)`` on (H, W, C) images, ``(k, features)`` on (time,
    features) sequences) slid by ``strides`` over each row and replaced by
    ``baselines``; a feature's attribution is the mean, over the windows
    covering it, of ``f(x) - f(x occluded)`` on the target output (Zeiler
    and Fergus, 2014; Captum's Occlusion). A feature no window covers gets 0.

    >>> import numpy as np, maas
    >>> m = maas.Sequential([maas.Input((6,)), maas.layers.Dense(1)])
    >>> maas.explain.Occlusion(m).attribute(np.ones((1, 6), np.float32), (2,), strides=2).shape
    (1, 6)
    """

    def attribute(self, inputs, sliding_window_shapes, strides=None, baselines=None,
                  target=None) -> np.ndarray:
        x = as_input(inputs)
        shape = x.shape[1:]
        win = (sliding_window_shapes,) if isinstance(sliding_window_shapes, (int, np.integer)) \
            else tuple(sliding_window_shapes)
        if len(win) != len(shape) or any(not isinstance(w, (int, np.integer)) or w < 1 or w > s
                                         for w, s in zip(win, shape)):
            raise ExplainArgumentError(f"sliding_window_shapes must give one size per axis of a row "
                                       f"{shape}, each from 1 to that axis' length, received "
                                       f"{sliding_window_shapes!r}")
        if strides is None:
            st = (1,) * len(shape)
        elif isinstance(strides, (int, np.integer)):
            st = (int(strides),) * len(shape)
        else:
            st = tuple(strides)
        if len(st) != len(shape) or any(not isinstance(s, (int, np.integer)) or s < 1 for s in st):
            raise ExplainArgumentError(f"strides must be a positive int or one per axis of a row "
                                       f"{shape}, received {strides!r}")
        b = resolve_baselines(baselines, x)
        t = self._targets(x, target)
        starts = [range(0, s - w + 1, k) for s, w, k in zip(shape, win, st)]
        positions = list(itertools.product(*starts))
        masks = np.zeros((len(positions),) + shape, bool)
        for j, p in enumerate(positions):
            masks[(j,) + tuple(slice(a, a + w) for a, w in zip(p, win))] = True
        d = _ablation_diffs(self.evaluator, x, b, masks, t)          # (W, n)
        mf = masks.astype(np.float32)
        total = np.tensordot(d.astype(np.float64), mf, axes=(0, 0))  # (n, *shape)
        counts = mf.sum(0)
        return np.where(counts > 0, total / np.maximum(counts, 1), 0.0).astype(np.float32)
