"""Merge layers: Add, Subtract, Multiply, Average, Maximum, Minimum,
Concatenate (a list of inputs), as Keras's."""
from __future__ import annotations

from .. import ops
from .base import Layer


class _Merge(Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.built = True

    def _check_list(self, shapes):
        if not isinstance(shapes, (list, tuple)) or len(shapes) < 2 or not isinstance(shapes[0], (list, tuple)):
            raise ValueError(f"A merge layer ({type(self).__name__}) should be called on a list of "
                             f"at least 2 inputs. Received: input_shape={shapes}")

    def compute_output_shape(self, input_shape):
        self._check_list(input_shape)
        out = list(input_shape[0])
        for s in input_shape[1:]:
            if len(s) != len(out):
                raise ValueError(f"{type(self).__name__}: inputs must have the same rank, "
                                 f"received shapes {list(map(tuple, input_shape))}")
            for i, (a, b) in enumerate(zip(out, s)):
                if a is None or b is None:
                    out[i] = a if b is None else b
                elif a != b and 1 not in (a, b):
                    raise ValueError(f"Inputs have incompatible shapes. Received shapes "
                                     f"{tuple(input_shape[0])} and {tuple(s)}")
                else:
                    out[i] = max(a, b)
        return tuple(out)

    def _check_input(self, inputs):
        self.compute_output_shape([tuple(x.shape) for x in inputs] if isinstance(inputs, (list, tuple)) else inputs)

    supports_masking = True

    def compute_mask(self, inputs, mask=None):
        """Keras 3's rule for the elementwise merges: a step is kept where any
        input keeps it (no mask when an input has none)."""
        if not isinstance(mask, (list, tuple)) or any(m is None for m in mask):
            return None
        out = mask[0]
        for m in mask[1:]:
            out = ops.maximum(out, m)
        return out


class Add(_Merge):
    """Elementwise sum of a list of inputs."""

    def call(self, inputs):
        out = inputs[0]
        for x in inputs[1:]:
            out = ops.add(out, x)
        return out


class Subtract(_Merge):
    """inputs[0] - inputs[1] (exactly two inputs)."""

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and len(input_shape) != 2:
            raise ValueError(f"A Subtract layer should be called on exactly 2 inputs. "
                             f"Received: {len(input_shape)} inputs")
        return super().compute_output_shape(input_shape)

    def call(self, inputs):
        return ops.subtract(inputs[0], inputs[1])


class Multiply(_Merge):
    """Elementwise product of a list of inputs."""

    def call(self, inputs):
        out = inputs[0]
        for x in inputs[1:]:
            out = ops.multiply(out, x)
        return out


class Average(_Merge):
    """Elementwise mean of a list of inputs.

    >>> a, b = maas.Input((3,)), maas.Input((3,))
    >>> maas.layers.Average()([a, b]).shape
    (None, 3)
    """

    def call(self, inputs):
        out = inputs[0]
        for x in inputs[1:]:
            out = ops.add(out, x)
        return ops.multiply(out, 1.0 / len(inputs))


class Maximum(_Merge):
    """Elementwise maximum of a list of inputs."""

    def call(self, inputs):
        out = inputs[0]
        for x in inputs[1:]:
            out = ops.maximum(out, x)
        return out


class Minimum(_Merge):
    """Elementwise minimum of a list of inputs."""

    def call(self, inputs):
        out = inputs[0]
        for x in inputs[1:]:
            out = ops.minimum(out, x)
        return out


class Concatenate(_Merge):
    """Joins a list of inputs along ``axis`` (default -1)."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)

    def compute_output_shape(self, input_shape):
        self._check_list(input_shape)
        rank = len(input_shape[0])
        ax = self.axis % rank
        out = list(input_shape[0])
        for s in input_shape[1:]:
            if len(s) != rank or any(a != b and a is not None and b is not None
                                     for i, (a, b) in enumerate(zip(out, s)) if i != ax):
                raise ValueError(
                    "A `Concatenate` layer requires inputs with matching shapes except for the "
                    f"concatenation axis. Received: input_shape={[tuple(x) for x in input_shape]}")
            out[ax] = None if out[ax] is None or s[ax] is None else out[ax] + s[ax]
        return tuple(out)

    def call(self, inputs):
        return ops.concatenate(list(inputs), axis=self.axis)

    def compute_mask(self, inputs, mask=None):
        """Keras 3's rule: along the features, a step is kept where any input
        keeps it (an input without a mask keeps every step: no mask); along
        the steps of (batch, steps, ...) inputs, the masks are joined (ones
        for an input without one)."""
        if not isinstance(mask, (list, tuple)) or all(m is None for m in mask):
            return None
        rank = len(inputs[0].shape)
        ax = self.axis % rank
        if ax == rank - 1 and rank > 1:
            return super().compute_mask(inputs, mask)
        if ax == 1 and rank >= 2:
            parts = [m if m is not None else ops.ones(tuple(x.shape[:2]))
                     for x, m in zip(inputs, mask)]
            return ops.concatenate(parts, axis=1)
        return None

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


# Keras's functional forms: layers.concatenate([a, b]) is Concatenate()([a, b])
def add(inputs, **kwargs):
    """``Add(**kwargs)(inputs)``."""
    return Add(**kwargs)(inputs)


def subtract(inputs, **kwargs):
    """``Subtract(**kwargs)(inputs)``."""
    return Subtract(**kwargs)(inputs)


def multiply(inputs, **kwargs):
    """``Multiply(**kwargs)(inputs)``."""
    return Multiply(**kwargs)(inputs)


def average(inputs, **kwargs):
    """``Average(**kwargs)(inputs)``."""
    return Average(**kwargs)(inputs)


def maximum(inputs, **kwargs):
    """``Maximum(**kwargs)(inputs)``."""
    return Maximum(**kwargs)(inputs)


def minimum(inputs, **kwargs):
    """``Minimum(**kwargs)(inputs)``."""
    return Minimum(**kwargs)(inputs)


def concatenate(inputs, axis=-1, **kwargs):
    """``Concatenate(axis=axis, **kwargs)(inputs)``.

    >>> a, b = maas.Input((2,)), maas.Input((3,))
    >>> maas.layers.concatenate([a, b]).shape
    (None, 5)
    """
    return Concatenate(axis=axis, **kwargs)(inputs)
