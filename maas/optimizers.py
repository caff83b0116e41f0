"""Optimizers with Keras's names, arguments and defaults; each update is one
fused in-place C kernel per variable.

>>> import maas, numpy as np
>>> w = maas.Variable(np.array([1.0, -1.0]))
>>> opt = maas.optimizers.SGD(learning_rate=0.1)
>>> opt.apply_gradients([(maas.tensor([1.0, 1.0]), w)])
>>> w.numpy()
array([ 0.9, -1.1], dtype=float32)
"""
from __future__ import annotations

import math
import sys

import numpy as np

from . import _core
from . import optimizers_schedules as schedules
from .tensor import Tensor, Variable

sys.modules[__name__ + ".schedules"] = schedules  # `import maas.optimizers.schedules` works too

_adam_update = _core.adam_update


class Optimizer:
    """Base class: slots per variable, the iteration counter, gradient
    clipping (``clipnorm`` per variable, ``global_clipnorm`` over all,
    ``clipvalue``), decoupled ``weight_decay``, and a learning rate that may
    be a float or a callable of the iteration (a schedule)."""

    def __init__(self, learning_rate=0.001, weight_decay=None, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, name=None):
        if sum(x is not None for x in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError("only one of clipnorm, clipvalue and global_clipnorm can be set")
        for arg, v in (("clipnorm", clipnorm), ("clipvalue", clipvalue),
                       ("global_clipnorm", global_clipnorm)):
            if v is not None and not v > 0:
                raise ValueError(f"{arg} must be positive, received {arg}={v}")
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.clipnorm, self.clipvalue, self.global_clipnorm = clipnorm, clipvalue, global_clipnorm
        self.name = name or type(self).__name__.lower()
        self.iterations = 0
        self._slots: dict[int, dict[str, Variable]] = {}
        self._exclude: set[int] = set()

    # -- the learning rate, a float or a schedule
    @property
    def learning_rate(self) -> float:
        lr = self._learning_rate
        return float(lr(self.iterations)) if callable(lr) else float(lr)

    @learning_rate.setter
    def learning_rate(self, value) -> None:
        if not callable(value) and not (isinstance(value, (int, float)) and value >= 0):
            raise ValueError(f"learning_rate must be a non-negative number or a schedule, "
                             f"received learning_rate={value!r}")
        if not callable(value) and isinstance(getattr(self, "_learning_rate", None),
                                              schedules.LearningRateSchedule):
            raise TypeError("This optimizer was created with a `LearningRateSchedule` object as "
                            "its `learning_rate` constructor argument, hence its learning rate "
                            "is not settable. If you need the learning rate to be settable, you "
                            "should instantiate the optimizer with a float `learning_rate` "
                            "argument.")
        self._learning_rate = value

    def exclude_from_weight_decay(self, var_list=None, var_names=None) -> None:
        """Variables (or names containing one of var_names) that get no weight decay."""
        for v in var_list or []:
            self._exclude.add(id(v))
        self._exclude_names = list(var_names or [])

    def _decay_for(self, var) -> float:
        if not self.weight_decay or id(var) in self._exclude:
            return 0.0
        if any(n in getattr(var, "name", "") for n in getattr(self, "_exclude_names", [])):
            return 0.0
        return float(self.weight_decay)

    def slot(self, var, name: str) -> Variable:
        """The optimizer's state tensor `name` for `var` (created as zeros)."""
        slots = self._slots.get(id(var))
        if slots is None:
            slots = self._slots[id(var)] = {"__var__": var}
        else:
            s = slots.get(name)
            if s is not None:  # the common case, once per variable per step
                return s
        s = slots[name] = Variable(np.zeros(var.shape, np.float32), trainable=False,
                                   name=f"{getattr(var, 'name', 'var')}/{name}")
        return s

    @property
    def variables(self) -> list:
        """The optimizer's state: the slots of every variable it has updated."""
        return [v for slots in self._slots.values() for k, v in slots.items() if k != "__var__"]

    def _clip(self, grads):
        if self.clipvalue is None and self.clipnorm is None and self.global_clipnorm is None:
            return grads
        grads = [Tensor(g, copy=True) for g in grads]  # never modify the caller's arrays
        if self.clipvalue is not None:
            for g in grads:
                _core.clip_(g, -self.clipvalue, self.clipvalue)
        elif self.clipnorm is not None:
            for g in grads:
                norm = math.sqrt(_core.sum_squares(g))
                if norm > self.clipnorm:
                    _core.scale_(g, self.clipnorm / norm)
        else:
            norm = math.sqrt(sum(_core.sum_squares(g) for g in grads))
            if norm > self.global_clipnorm:
                for g in grads:
                    _core.scale_(g, self.global_clipnorm / norm)
        return grads

    def apply_gradients(self, grads_and_vars) -> None:
        """Applies (gradient, variable) pairs; pairs whose gradient is None are
        skipped, as in Keras."""
        grads, variables = [], []
        for g, v in grads_and_vars:
            if g is not None:
                grads.append(g)
                variables.append(v)
        if grads:
            self.apply(grads, variables)

    def apply(self, grads, trainable_variables) -> None:
        """Applies a list of gradients to a list of variables of the same length."""
        grads, variables = list(grads), list(trainable_variables)
        if len(grads) != len(variables):
            raise ValueError(f"apply: got {len(grads)} gradients for {len(variables)} variables")
        for v in variables:
            if not isinstance(v, Tensor):
                raise TypeError(f"apply_gradients: variables must be maas Variables, "
                                f"got {type(v).__name__}")
        grads = self._clip(grads)
        lr = self.learning_rate
        self.iterations += 1
        update_step = self.update_step
        for g, v in zip(grads, variables):
            update_step(g, v, lr)

    def update_step(self, gradient, variable, learning_rate: float) -> None:
        raise NotImplementedError

    def get_config(self) -> dict:
        lr = self._learning_rate
        if isinstance(lr, schedules.LearningRateSchedule):
            lr = schedules.serialize(lr)  # saved with the model, rebuilt by from_config
        return {"name": self.name, "learning_rate": lr if not callable(lr) else None,
                "weight_decay": self.weight_decay, "clipnorm": self.clipnorm,
                "clipvalue": self.clipvalue, "global_clipnorm": self.global_clipnorm}

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> "Optimizer":
        if isinstance(config.get("learning_rate"), dict):
            config = {**config, "learning_rate": schedules.deserialize(config["learning_rate"],
                                                                       custom_objects)}
        return cls(**config)


class SGD(Optimizer):
    """Gradient descent with optional (Nesterov) momentum, Keras's update:
    ``v = momentum * v - lr * g; w += v`` (or ``w += momentum * v - lr * g``).

    >>> opt = maas.optimizers.SGD(learning_rate=0.01, momentum=0.9, nesterov=True)
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, name="SGD"):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name)
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], received momentum={momentum}")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)

    def update_step(self, g, v, lr):
        vel = self.slot(v, "momentum") if self.momentum else None
        _core.sgd_update(v, g, vel, lr, self.momentum, self.nesterov, self._decay_for(v))

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam with Keras's defaults (``epsilon=1e-7``) and bias correction.

    >>> opt = maas.optimizers.Adam(learning_rate=1e-3)
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False,
                 weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None,
                 name="adam"):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        self.amsgrad = bool(amsgrad)

    def update_step(self, g, v, lr):
        slot = self.slot
        vhat = slot(v, "velocity_hat") if self.amsgrad else None
        _adam_update(v, g, slot(v, "momentum"), slot(v, "velocity"), vhat, lr,
                     self.beta_1, self.beta_2, self.epsilon, self.iterations,
                     self._decay_for(v) if self.weight_decay else 0.0)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "amsgrad": self.amsgrad}


class AdamW(Adam):
    """Adam with decoupled weight decay (Keras's default ``weight_decay=0.004``)."""

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-7, amsgrad=False, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, name="adamw"):
        if weight_decay is None:
            raise ValueError("AdamW needs a weight_decay; use Adam for none")
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay,
                         clipnorm, clipvalue, global_clipnorm, name)


class RMSprop(Optimizer):
    """RMSprop as Keras computes it (epsilon inside the square root)."""

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False,
                 weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None,
                 name="rmsprop"):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name)
        self.rho, self.momentum, self.epsilon = float(rho), float(momentum), float(epsilon)
        self.centered = bool(centered)

    def update_step(self, g, v, lr):
        avg = self.slot(v, "average_gradient") if self.centered else None
        mom = self.slot(v, "momentum") if self.momentum else None
        _core.rmsprop_update(v, g, self.slot(v, "velocity"), avg, mom, lr, self.rho,
                             self.momentum, self.epsilon, self.centered, self._decay_for(v))

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon, "centered": self.centered}


_BY_NAME = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}


def get(identifier) -> Optimizer:
    """An optimizer from its Keras name ("adam", ...), a config dict, or itself."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    if isinstance(identifier, dict):
        cls = {c.__name__: c for c in _BY_NAME.values()}[identifier["class_name"]]
        return cls.from_config(identifier.get("config", {}))
    raise ValueError(f"unknown optimizer {identifier!r}; valid names are: {', '.join(_BY_NAME)}")
