"""Weight initializers with Keras 3's names and defaults.

Draws come from maas's counter-based generator (``maas.random``), so a model
built after ``maas.utils.set_random_seed(n)`` has bit-identical weights on
every run. An initializer given a ``seed`` returns the same values on every
call, as in Keras.

>>> import maas
>>> init = maas.initializers.get("glorot_uniform")
>>> init((64, 10)).shape
(64, 10)
"""
from __future__ import annotations

import math

import numpy as np

from . import random as _random
from .tensor import Tensor


class Initializer:
    """Base class: ``__call__(shape, dtype=None) -> Tensor``."""

    def __call__(self, shape, dtype=None) -> Tensor:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict) -> "Initializer":
        return cls(**config)


class Zeros(Initializer):
    def __call__(self, shape, dtype=None):
        return Tensor(np.zeros(tuple(shape), np.float32))


class Ones(Initializer):
    def __call__(self, shape, dtype=None):
        return Tensor(np.ones(tuple(shape), np.float32))


class Constant(Initializer):
    def __init__(self, value=0.0):
        self.value = float(value)

    def __call__(self, shape, dtype=None):
        return Tensor(np.full(tuple(shape), self.value, np.float32))

    def get_config(self):
        return {"value": self.value}


class RandomUniform(Initializer):
    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        self.minval, self.maxval, self.seed = float(minval), float(maxval), seed

    def __call__(self, shape, dtype=None):
        return _random.uniform(shape, self.minval, self.maxval, seed=self.seed)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


class RandomNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean, self.stddev, self.seed = float(mean), float(stddev), seed

    def __call__(self, shape, dtype=None):
        return _random.normal(shape, self.mean, self.stddev, seed=self.seed)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


def _truncated_normal(shape, stddev: float, seed=None) -> Tensor:
    """Normal values redrawn until they lie within two standard deviations
    (Keras's truncated normal). Each redraw is one C fill; the loop runs a
    handful of times (5% of values redrawn per round), never per element."""
    z = np.asarray(_random.normal(shape, 0.0, 1.0, seed=seed)).copy()
    rounds = 0
    while True:
        bad = np.abs(z) > 2.0
        n = int(bad.sum())
        if n == 0:
            break
        rounds += 1
        s = None if seed is None else int(seed) + 1000003 * rounds
        z[bad] = np.asarray(_random.normal((n,), 0.0, 1.0, seed=s))
    return Tensor(z * np.float32(stddev))


class TruncatedNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean, self.stddev, self.seed = float(mean), float(stddev), seed

    def __call__(self, shape, dtype=None):
        t = _truncated_normal(shape, self.stddev, self.seed)
        return t + self.mean if self.mean else t

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


def _fans(shape):
    shape = tuple(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


class VarianceScaling(Initializer):
    """Keras's VarianceScaling: scale / fan, drawn from a truncated normal
    (stddev corrected by 0.8796...), an untruncated normal, or a uniform."""

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        if scale <= 0:
            raise ValueError(f"scale must be a positive float, received scale={scale}")
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"mode must be one of 'fan_in', 'fan_out', 'fan_avg', received mode={mode!r}")
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError("distribution must be one of 'truncated_normal', "
                             f"'untruncated_normal', 'uniform', received distribution={distribution!r}")
        self.scale, self.mode, self.distribution, self.seed = float(scale), mode, distribution, seed

    def __call__(self, shape, dtype=None):
        fan_in, fan_out = _fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        scale = self.scale / max(1.0, n)
        if self.distribution == "truncated_normal":
            return _truncated_normal(shape, math.sqrt(scale) / 0.87962566103423978, self.seed)
        if self.distribution == "untruncated_normal":
            return _random.normal(shape, 0.0, math.sqrt(scale), seed=self.seed)
        limit = math.sqrt(3.0 * scale)
        return _random.uniform(shape, -limit, limit, seed=self.seed)

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution,
                "seed": self.seed}


def _vs(name, scale, mode, distribution):
    def __init__(self, seed=None):
        VarianceScaling.__init__(self, scale, mode, distribution, seed)

    def get_config(self):
        return {"seed": self.seed}

    return type(name, (VarianceScaling,), {"__init__": __init__, "get_config": get_config,
                                           "__doc__": f"VarianceScaling(scale={scale}, mode={mode!r}, "
                                                      f"distribution={distribution!r})"})


GlorotUniform = _vs("GlorotUniform", 1.0, "fan_avg", "uniform")
GlorotNormal = _vs("GlorotNormal", 1.0, "fan_avg", "truncated_normal")
HeNormal = _vs("HeNormal", 2.0, "fan_in", "truncated_normal")
HeUniform = _vs("HeUniform", 2.0, "fan_in", "uniform")
LecunNormal = _vs("LecunNormal", 1.0, "fan_in", "truncated_normal")
LecunUniform = _vs("LecunUniform", 1.0, "fan_in", "uniform")

class Orthogonal(Initializer):
    """Keras's ``orthogonal`` initializer (the default of recurrent kernels):
    the Q of a QR decomposition of a normal matrix, signs fixed by R's
    diagonal, times ``gain``."""

    def __init__(self, gain=1.0, seed=None):
        self.gain, self.seed = float(gain), seed

    def __call__(self, shape, dtype=None):
        shape = tuple(int(d) for d in shape)
        if len(shape) < 2:
            raise ValueError(f"Orthogonal initializer needs a shape of at least 2 dimensions, "
                             f"received shape={shape}")
        rows = int(np.prod(shape[:-1]))
        cols = shape[-1]
        flat = (max(rows, cols), min(rows, cols))
        a = np.asarray(_random.normal(flat, 0.0, 1.0, seed=self.seed), np.float64)
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return Tensor(np.ascontiguousarray((self.gain * q).reshape(shape), np.float32))

    def get_config(self):
        return {"gain": self.gain, "seed": self.seed}


_CLASSES = {c.__name__: c for c in (Zeros, Ones, Constant, RandomUniform, RandomNormal,
                                     TruncatedNormal, VarianceScaling, GlorotUniform, GlorotNormal,
                                     HeNormal, HeUniform, LecunNormal, LecunUniform, Orthogonal)}
_BY_NAME = {"zeros": Zeros, "ones": Ones, "constant": Constant, "random_uniform": RandomUniform,
            "random_normal": RandomNormal, "truncated_normal": TruncatedNormal,
            "variance_scaling": VarianceScaling, "glorot_uniform": GlorotUniform,
            "glorot_normal": GlorotNormal, "he_normal": HeNormal, "he_uniform": HeUniform,
            "lecun_normal": LecunNormal, "lecun_uniform": LecunUniform, "orthogonal": Orthogonal,
            # Keras's short aliases: RandomUniform(-0.05, 0.05), RandomNormal(0, 0.05)
            "uniform": RandomUniform, "normal": RandomNormal}


def get(identifier) -> Initializer:
    """An initializer from its Keras name, class name, config dict, or itself."""
    if isinstance(identifier, Initializer) or (callable(identifier) and not isinstance(identifier, type)):
        return identifier
    if isinstance(identifier, dict):
        return _CLASSES[identifier["class_name"]].from_config(identifier.get("config", {}))
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier) or _CLASSES.get(identifier)
        if cls is not None:
            return cls()
    raise ValueError(f"Could not interpret initializer identifier: {identifier!r}; "
                     f"valid names are: {', '.join(sorted(_BY_NAME))}")


def serialize(init) -> dict:
    return {"class_name": type(init).__name__, "config": init.get_config()}
