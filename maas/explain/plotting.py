"""Pictures of attributions with matplotlib (the ``plot`` extra):
``plot(attributions, x, kind="image" | "bar" | "text")``.

>>> import numpy as np, matplotlib
>>> matplotlib.use("Agg")
>>> from maas.explain import plot
>>> fig = plot(np.eye(8), np.ones((8, 8)), kind="image")
>>> len(fig.axes) >= 1
True
"""
from __future__ import annotations

import numpy as np

__all__ = ["plot"]


def _limit(a):
    m = float(np.nanmax(np.abs(a))) if np.size(a) else 0.0
    return m if m > 0 else 1.0


def plot(attributions, x=None, kind: str = "image", *, shape=None, feature_names=None,
         top_k: int = 10, titles=None, cmap: str = "bwr", alpha: float = 0.6, ax=None,
         max_cols: int = 6):
    """Draws attributions and returns the matplotlib Figure.

    - ``kind="image"``: a heat map over each image (rows of ``x`` drawn in
      grey, attributions in a diverging colour map centred on 0, red
      positive). ``attributions`` and ``x`` are one image or a batch;
      ``shape=(H, W)`` reshapes flat rows (digits: ``(8, 8)``); channels
      are summed.
    - ``kind="bar"``: the ``top_k`` features by absolute attribution of one
      row (``feature_names`` label them), red positive, blue negative.
    - ``kind="text"``: ``x`` is a list of tokens, each drawn on a background
      coloured by its attribution.
    """
    import matplotlib.pyplot as plt
    from matplotlib import colormaps

    a = np.asarray(attributions, np.float64)
    if kind == "image":
        if shape is not None:
            a = a.reshape((-1,) + tuple(shape))
        if a.ndim == 2 and shape is None:
            a = a[None]
        if a.ndim == 4:
            a = a.sum(-1)
        imgs = None
        if x is not None:
            imgs = np.asarray(x, np.float64).reshape(a.shape + (-1,))
            imgs = imgs.mean(-1) if imgs.shape[-1] > 1 else imgs[..., 0]
        n = len(a)
        cols = min(n, max_cols)
        rows = (n + cols - 1) // cols
        if ax is None:
            fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.2 * rows), squeeze=False)
            axes = axes.ravel()
        else:
            fig, axes = ax.figure, np.atleast_1d(ax)
        lim = _limit(a)
        for i, axi in enumerate(axes):
            axi.set_axis_off()
            if i >= n:
                continue
            if imgs is not None:
                axi.imshow(imgs[i], cmap="gray_r")
            im = axi.imshow(a[i], cmap=cmap, vmin=-lim, vmax=lim,
                            alpha=alpha if imgs is not None else 1.0)
            if titles is not None:
                axi.set_title(str(titles[i]), fontsize=9)
        fig.colorbar(im, ax=list(axes[:n]), shrink=0.8, label="attribution")
        return fig
    if kind == "bar":
        a = a.reshape(-1) if a.ndim <= 1 or len(a) != 1 else a[0].reshape(-1)
        if a.ndim != 1:
            raise ValueError("kind='bar' draws one row's attributions; pass attributions[i]")
        names = list(feature_names) if feature_names is not None else [f"x[{i}]" for i in range(len(a))]
        if len(names) != len(a):
            raise ValueError(f"feature_names has {len(names)} names for {len(a)} features")
        k = min(int(top_k), len(a))
        idx = np.argsort(-np.abs(a), kind="stable")[:k][::-1]
        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 0.35 * k + 1))
        else:
            fig = ax.figure
        ax.barh(range(k), a[idx], color=["tab:red" if v > 0 else "tab:blue" for v in a[idx]])
        ax.set_yticks(range(k), [names[i] for i in idx])
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlabel("attribution")
        if titles is not None:
            ax.set_title(str(titles if isinstance(titles, str) else titles[0]))
        fig.tight_layout()
        return fig
    if kind == "text":
        tokens = list(x) if x is not None else [f"t{i}" for i in range(a.size)]
        a = a.reshape(-1)
        if len(tokens) != len(a):
            raise ValueError(f"kind='text' needs one attribution per token: {len(tokens)} tokens, "
                             f"{len(a)} attributions")
        lim = _limit(a)
        cm = colormaps[cmap]
        per_line = 60
        lines, cur, pos = [], [], 0
        for t, v in zip(tokens, a):
            w = len(str(t)) + 1
            if pos + w > per_line and cur:
                lines.append(cur)
                cur, pos = [], 0
            cur.append((str(t), v, pos))
            pos += w
        if cur:
            lines.append(cur)
        if ax is None:
            fig, ax = plt.subplots(figsize=(10, 0.45 * len(lines) + 0.4))
        else:
            fig = ax.figure
        ax.set_axis_off()
        ax.set_xlim(0, per_line)
        ax.set_ylim(len(lines), 0)
        for r, line in enumerate(lines):
            for t, v, p in line:
                ax.text(p, r + 0.6, t, family="monospace", fontsize=11,
                        bbox=dict(facecolor=cm(0.5 + 0.5 * v / lim), edgecolor="none", pad=1.5))
        return fig
    raise ValueError(f"kind must be 'image', 'bar' or 'text', received {kind!r}")
