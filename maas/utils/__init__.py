"""Utilities: seeding, one-hot labels, training-curve plots.

>>> import maas
>>> maas.utils.to_categorical([0, 2], num_classes=3)
array([[1., 0., 0.],
       [0., 0., 1.]], dtype=float32)
"""
from __future__ import annotations

import numpy as np

from .. import random as _random
from ..layers.base import clear_session
from ..saving.object_registration import (custom_object_scope, get_custom_objects,  # noqa: F401
                                          register_keras_serializable)
from .data_adapters import PyDataset, Sequence  # noqa: F401
from .progbar import Progbar  # noqa: F401
from .sequence import pad_sequences  # noqa: F401


def set_random_seed(seed: int) -> None:
    """Seeds maas's generator (initializers, dropout, shuffling), Python's
    ``random`` and NumPy's global generator, as ``keras.utils.set_random_seed``."""
    if not isinstance(seed, (int, np.integer)):
        raise ValueError(f"Expected `seed` argument to be an integer. Received: seed={seed!r}")
    _random.set_seed(int(seed))


def to_categorical(x, num_classes=None) -> np.ndarray:
    """One-hot float32 rows from integer class labels."""
    x = np.asarray(x)
    if x.ndim > 1 and x.shape[-1] == 1:
        x = x.reshape(x.shape[:-1])
    if x.size and (np.any(x < 0) or np.any(x != np.round(x))):
        raise ValueError("to_categorical needs non-negative integer class labels")
    x = x.astype(np.int64)
    if num_classes is None:
        num_classes = int(x.max()) + 1 if x.size else 0
    if x.size and x.max() >= num_classes:
        raise ValueError(f"to_categorical: label {int(x.max())} is out of range for "
                         f"num_classes={num_classes}")
    out = np.zeros(x.shape + (num_classes,), np.float32)
    np.put_along_axis(out, x[..., None], 1.0, axis=-1)
    return out


def pack_x_y_sample_weight(x, y=None, sample_weight=None):
    """Packs a batch the way ``fit`` hands it to ``train_step(data)``: ``x``
    alone (wrapped in a 1-tuple when x is itself a tuple or list), ``(x,
    y)``, or ``(x, y, sample_weight)`` (Keras's function).

    >>> maas.utils.pack_x_y_sample_weight([1.0], [2.0])
    ([1.0], [2.0])
    """
    if y is None:
        return (x,) if isinstance(x, (tuple, list)) else x
    if sample_weight is None:
        return (x, y)
    return (x, y, sample_weight)


def unpack_x_y_sample_weight(data):
    """``(x, y, sample_weight)`` from a batch ``data`` (``x``, ``(x,)``,
    ``(x, y)`` or ``(x, y, sample_weight)``), with None for what is missing;
    what a ``train_step(self, data)`` override starts with (Keras's function).

    >>> x, y, sw = maas.utils.unpack_x_y_sample_weight((np.ones((2, 3)), np.zeros(2)))
    >>> sw is None
    True
    """
    if isinstance(data, list):
        data = tuple(data)
    if not isinstance(data, tuple):
        return data, None, None
    if len(data) == 1:
        return data[0], None, None
    if len(data) == 2:
        return data[0], data[1], None
    if len(data) == 3:
        return data[0], data[1], data[2]
    raise ValueError("Data is expected to be in format `x`, `(x,)`, `(x, y)`, or "
                     f"`(x, y, sample_weight)`, found a tuple of {len(data)} elements")


def normalize(x, axis=-1, order=2) -> np.ndarray:
    x = np.asarray(x, np.float32)
    n = np.linalg.norm(x, ord=order, axis=axis, keepdims=True)
    return x / np.where(n == 0, 1, n)


def plot_history(history, metrics=None, ax=None, show=False):
    """Plots the training curves of a History (or its ``.history`` dict):
    one panel per metric, with its ``val_`` curve beside it. Returns the
    matplotlib Figure.

    >>> fig = maas.utils.plot_history(model.fit(x, y, epochs=5, verbose=0))
    """
    try:
        import matplotlib
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plot_history needs matplotlib: pip install matplotlib") from None
    hist = getattr(history, "history", history)
    if not isinstance(hist, dict) or not hist:
        raise ValueError("plot_history expects a History returned by fit() (or its .history dict)")
    names = metrics or [k for k in hist if not k.startswith("val_") and k != "learning_rate"]
    if ax is None:
        fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
        axes = axes[0]
    else:
        axes = np.atleast_1d(ax)
        fig = axes[0].figure
    for a, name in zip(axes, names):
        epochs = np.arange(1, len(hist[name]) + 1)
        a.plot(epochs, hist[name], label=name)
        if "val_" + name in hist:
            a.plot(epochs, hist["val_" + name], label="val_" + name)
        a.set_xlabel("epoch")
        a.set_title(name)
        a.legend()
    fig.tight_layout()
    if show:
        plt.show()
    del matplotlib
    return fig


__all__ = ["set_random_seed", "to_categorical", "normalize", "plot_history", "clear_session",
           "pack_x_y_sample_weight", "unpack_x_y_sample_weight",
           "custom_object_scope", "get_custom_objects", "register_keras_serializable",
           "PyDataset", "Sequence", "Progbar"]
