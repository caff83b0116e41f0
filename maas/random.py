"""Seeds and streams for maas's counter-based random numbers.

Every random draw (initializers, dropout masks, shuffling) is keyed by
(seed, stream, index), so results repeat exactly for a seed whatever the
thread count. ``maas.utils.set_random_seed(n)`` resets the global seed and
the stream counter.

>>> import maas
>>> maas.random.set_seed(7); a = maas.random.uniform((3,))
>>> maas.random.set_seed(7); b = maas.random.uniform((3,))
>>> bool((a == b).min())
True
"""
from __future__ import annotations

import numpy as np

from . import _core

_state = {"seed": 1337, "stream": 0}


def set_seed(seed: int) -> None:
    """Sets the global seed (and Python's and NumPy's, as Keras does)."""
    import random as _pyrandom

    seed = int(seed)
    _state["seed"] = seed & 0xFFFFFFFFFFFFFFFF
    _state["stream"] = 0
    _pyrandom.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)


def next_stream() -> tuple[int, int]:
    """A fresh (seed, stream) pair: each call advances the global counter."""
    _state["stream"] += 1
    return _state["seed"], _state["stream"]


# Traces (maas.engine) collect, in call order, the function that gives each
# random op its (seed, stream), so that a plan asks them anew on every step
# exactly as the eager calls would have.
_trace_logs: list = []


def _begin_trace() -> list:
    log: list = []
    _trace_logs.append(log)
    return log


def _end_trace(log: list) -> list:
    _trace_logs.remove(log)
    return log


def draw_key(provider) -> tuple[int, int]:
    """The (seed, stream) of one random op: ``provider()``, noted for any
    active trace. Layers with a seed of their own pass a provider that counts
    their calls; others pass :func:`next_stream`."""
    key = provider()
    for log in _trace_logs:
        log.append(provider)
    return key


def numpy_rng() -> np.random.Generator:
    """A NumPy generator derived from the next stream (for shuffling)."""
    seed, stream = next_stream()
    return np.random.default_rng([seed, stream])


def _fill(shape, kind: int, a: float, b: float, seed=None):
    """A new tensor from the random op (traced like any op, so a plan draws
    anew on every step)."""
    s, stream = draw_key(next_stream if seed is None else (lambda: (int(seed), 0)))
    shape = (shape,) if isinstance(shape, int) else tuple(int(d) for d in shape)
    return _core.op(_core.OP_RANDOM, (), s, stream, kind, float(a), float(b), shape)


def uniform(shape, minval: float = 0.0, maxval: float = 1.0, seed=None):
    """A tensor of uniform values in [minval, maxval)."""
    return _fill(shape, 0, minval, maxval, seed)


def normal(shape, mean: float = 0.0, stddev: float = 1.0, seed=None):
    """A tensor of normal values."""
    return _fill(shape, 1, mean, stddev, seed)


def dropout(inputs, rate: float, seed=None):
    """Zeroes each element with probability ``rate`` and scales the rest by
    1/(1-rate) (Keras's ``keras.random.dropout``)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout: rate must be in [0, 1), received rate={rate}")
    s, stream = draw_key(next_stream if seed is None else (lambda: (int(seed), 0)))
    return _core.dropout(inputs, float(rate), s, stream)
