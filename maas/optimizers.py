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

    def slot(self, var, name: str, initial_value: float = 0.0) -> Variable:
        """The optimizer's state tensor `name` for `var`, created on first use
        filled with ``initial_value`` (zeros by default)."""
        slots = self._slots.get(id(var))
        if slots is None:
            slots = self._slots[id(var)] = {"__var__": var}
        else:
            s = slots.get(name)
            if s is not None:  # the common case, once per variable per step
                return s
        s = slots[name] = Variable(np.full(var.shape, initial_value, np.float32), trainable=False,
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
        from . import distribution as _dist
        dp = _dist.active()
        if dp is not None:  # inside a data-parallel fit step: summed over the ranks first
            grads = dp.reduce_gradients(grads)
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


class Adagrad(Optimizer):
    """Adagrad as Keras computes it: ``acc += g**2; w -= lr * g / sqrt(acc + epsilon)``
    (epsilon inside the square root; accumulators start at
    ``initial_accumulator_value``).

    >>> import maas, numpy as np
    >>> w = maas.Variable(np.array([1.0]))
    >>> maas.optimizers.Adagrad(learning_rate=0.1).apply_gradients([(maas.tensor([0.3]), w)])
    >>> round(float(w.numpy()[0]), 4)   # 1 - 0.1 * 0.3 / sqrt(0.1 + 0.09)
    0.9312
    """

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7,
                 weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None,
                 name="adagrad"):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name)
        if not initial_accumulator_value >= 0:
            raise ValueError("initial_accumulator_value must be non-negative, received "
                             f"initial_accumulator_value={initial_accumulator_value}")
        self.initial_accumulator_value = float(initial_accumulator_value)
        self.epsilon = float(epsilon)

    def update_step(self, g, v, lr):
        acc = self.slot(v, "accumulator", self.initial_accumulator_value)
        _core.adagrad_update(v, g, acc, lr, self.epsilon, self._decay_for(v))

    def get_config(self):
        return {**super().get_config(), "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}


class Adadelta(Optimizer):
    """Adadelta (Zeiler, 2012) with Keras's defaults (``rho=0.95``,
    ``epsilon=1e-7``, ``learning_rate=0.001``; the paper's form is
    ``learning_rate=1.0``).

    >>> opt = maas.optimizers.Adadelta(learning_rate=1.0)
    """

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, name="adadelta"):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name)
        self.rho, self.epsilon = float(rho), float(epsilon)

    def update_step(self, g, v, lr):
        slot = self.slot
        _core.adadelta_update(v, g, slot(v, "accumulated_grad"), slot(v, "accumulated_delta_var"),
                              lr, self.rho, self.epsilon, self._decay_for(v))

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "epsilon": self.epsilon}


class Adamax(Optimizer):
    """Adamax, Adam with the infinity norm: ``u = max(beta_2 * u, |g|)``,
    ``w -= lr / (1 - beta_1**t) * m / (u + epsilon)``.

    >>> opt = maas.optimizers.Adamax(learning_rate=2e-3)
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None,
                 name="adamax"):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def update_step(self, g, v, lr):
        slot = self.slot
        _core.adamax_update(v, g, slot(v, "momentum"), slot(v, "norm"), lr, self.beta_1,
                            self.beta_2, self.epsilon, self.iterations, self._decay_for(v))

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon}


class Nadam(Optimizer):
    """Nadam (Adam with Nesterov momentum) with Keras's momentum schedule
    ``u_t = beta_1 * (1 - 0.5 * 0.96**t)`` (PyTorch's NAdam with
    ``momentum_decay=1``; PyTorch's default 0.004 is a different schedule).

    >>> opt = maas.optimizers.Nadam(learning_rate=1e-3)
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None,
                 name="nadam"):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        self._u_step, self._u_product = 0, 1.0

    def _momentum_product(self, t: int) -> float:
        """prod_{s=1..t} beta_1 (1 - 0.5 * 0.96**s), kept incrementally (and
        recomputed when the iteration counter was set, e.g. by loading)."""
        if t != self._u_step:
            if t == self._u_step + 1:
                start, prod = t, self._u_product
            else:
                start, prod = 1, 1.0
            for s in range(start, t + 1):
                prod *= self.beta_1 * (1.0 - 0.5 * 0.96 ** s)
            self._u_step, self._u_product = t, prod
        return self._u_product

    def update_step(self, g, v, lr):
        slot = self.slot
        t = self.iterations
        _core.nadam_update(v, g, slot(v, "momentum"), slot(v, "velocity"), lr, self.beta_1,
                           self.beta_2, self.epsilon, t, self._momentum_product(t),
                           self._decay_for(v))

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon}


class Lion(Optimizer):
    """Lion (Chen et al., 2023): ``w -= lr * sign(beta_1 * m + (1 - beta_1) * g)``,
    then ``m = beta_2 * m + (1 - beta_2) * g``. Use a learning rate 3-10x
    smaller than AdamW's.

    >>> opt = maas.optimizers.Lion(learning_rate=1e-4, weight_decay=0.01)
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.99, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, name="lion"):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name)
        if beta_1 <= 0 or beta_1 > 1:
            raise ValueError("Argument `beta_1` must be in the [0, 1] range. Otherwise, the "
                             f"optimizer degenerates to SignSGD. Received: beta_1={beta_1}.")
        self.beta_1, self.beta_2 = float(beta_1), float(beta_2)

    def update_step(self, g, v, lr):
        _core.lion_update(v, g, self.slot(v, "momentum"), lr, self.beta_1, self.beta_2,
                          self._decay_for(v))

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2}


class Ftrl(Optimizer):
    """FTRL-proximal (McMahan et al., 2013) as Keras computes it, with online
    L1/L2 regularization and L2 shrinkage; for wide, sparse linear models.

    >>> opt = maas.optimizers.Ftrl(learning_rate=0.1, l1_regularization_strength=0.01)
    """

    def __init__(self, learning_rate=0.001, learning_rate_power=-0.5, initial_accumulator_value=0.1,
                 l1_regularization_strength=0.0, l2_regularization_strength=0.0,
                 l2_shrinkage_regularization_strength=0.0, beta=0.0, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, name="ftrl"):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name)
        if initial_accumulator_value < 0.0:
            raise ValueError("`initial_accumulator_value` needs to be positive or zero. "
                             f"Received: initial_accumulator_value={initial_accumulator_value}.")
        if learning_rate_power > 0.0:
            raise ValueError("`learning_rate_power` needs to be negative or zero. Received: "
                             f"learning_rate_power={learning_rate_power}.")
        for arg, val in (("l1_regularization_strength", l1_regularization_strength),
                         ("l2_regularization_strength", l2_regularization_strength),
                         ("l2_shrinkage_regularization_strength",
                          l2_shrinkage_regularization_strength)):
            if val < 0.0:
                raise ValueError(f"`{arg}` needs to be positive or zero. Received: {arg}={val}.")
        self.learning_rate_power = float(learning_rate_power)
        self.initial_accumulator_value = float(initial_accumulator_value)
        self.l1_regularization_strength = float(l1_regularization_strength)
        self.l2_regularization_strength = float(l2_regularization_strength)
        self.l2_shrinkage_regularization_strength = float(l2_shrinkage_regularization_strength)
        self.beta = float(beta)

    def update_step(self, g, v, lr):
        slot = self.slot
        _core.ftrl_update(v, g, slot(v, "accumulator", self.initial_accumulator_value),
                          slot(v, "linear"), lr, self.learning_rate_power,
                          self.l1_regularization_strength, self.l2_regularization_strength,
                          self.l2_shrinkage_regularization_strength, self.beta,
                          self._decay_for(v))

    def get_config(self):
        return {**super().get_config(), "learning_rate_power": self.learning_rate_power,
                "initial_accumulator_value": self.initial_accumulator_value,
                "l1_regularization_strength": self.l1_regularization_strength,
                "l2_regularization_strength": self.l2_regularization_strength,
                "l2_shrinkage_regularization_strength": self.l2_shrinkage_regularization_strength,
                "beta": self.beta}


_BY_NAME = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad,
            "adadelta": Adadelta, "adamax": Adamax, "nadam": Nadam, "lion": Lion, "ftrl": Ftrl}


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
