"""Tensor ops under Keras 3's ``keras.ops`` names. Each is one C call
(recorded on active GradientTapes), with NumPy broadcasting.

>>> import maas
>>> x = maas.tensor([[-1.0, 2.0], [3.0, -4.0]])
>>> maas.ops.relu(x).numpy()
array([[0., 2.],
       [3., 0.]], dtype=float32)
>>> maas.ops.softmax(x, axis=-1).sum(axis=-1).numpy()
array([1., 1.], dtype=float32)
"""
from __future__ import annotations

import numpy as np

from . import _core
from .random import dropout  # noqa: F401  (keras.random.dropout, here too)
from ._typed import cast  # noqa: F401  (keras.ops.cast)
from .tensor import Tensor, convert_to_numpy, convert_to_tensor  # noqa: F401

_c = _core


def _u(op):
    def f(x):
        return _c.unary(op, x)
    return f


relu = _u(_c.U_RELU)
relu.__doc__ = "max(x, 0)"
relu6 = _u(_c.U_RELU6)
sigmoid = _u(_c.U_SIGMOID)
sigmoid.__doc__ = "1 / (1 + exp(-x)), stable for large |x|"
tanh = _u(_c.U_TANH)
softplus = _u(_c.U_SOFTPLUS)
softplus.__doc__ = "log(1 + exp(x)), stable for large |x|"
silu = _u(_c.U_SILU)
swish = silu
exp = _u(_c.U_EXP)
log = _u(_c.U_LOG)
sqrt = _u(_c.U_SQRT)
negative = _u(_c.U_NEG)
abs = _u(_c.U_ABS)  # noqa: A001  (Keras's name)
absolute = abs
square = _u(_c.U_SQUARE)


def leaky_relu(x, negative_slope: float = 0.2):
    """x if x > 0 else negative_slope * x (Keras's default slope 0.2)."""
    return _c.unary(_c.U_LEAKY_RELU, x, float(negative_slope))


def elu(x, alpha: float = 1.0):
    """x if x > 0 else alpha * (exp(x) - 1)."""
    return _c.unary(_c.U_ELU, x, float(alpha))


def gelu(x, approximate: bool = True):
    """The Gaussian error linear unit (the tanh approximation by default, as
    in keras.ops; approximate=False is the exact erf form)."""
    return _c.unary(_c.U_GELU_TANH if approximate else _c.U_GELU, x)


def softmax(x, axis: int = -1):
    """exp(x) / sum(exp(x)) over an axis, max-subtracted."""
    return _c.softmax(x, axis, False)


def log_softmax(x, axis: int = -1):
    """x - logsumexp(x) over an axis, max-subtracted."""
    return _c.softmax(x, axis, True)


def _b(op, name):
    def f(x1, x2):
        return _c.binary(op, x1, x2)
    f.__name__ = name
    return f


add = _b(_c.B_ADD, "add")
subtract = _b(_c.B_SUB, "subtract")
multiply = _b(_c.B_MUL, "multiply")
divide = _b(_c.B_DIV, "divide")
true_divide = divide
maximum = _b(_c.B_MAXIMUM, "maximum")
minimum = _b(_c.B_MINIMUM, "minimum")
less = _b(_c.B_LT, "less")
less_equal = _b(_c.B_LE, "less_equal")
greater = _b(_c.B_GT, "greater")
greater_equal = _b(_c.B_GE, "greater_equal")
equal = _b(_c.B_EQ, "equal")
not_equal = _b(_c.B_NE, "not_equal")


def power(x1, x2):
    """x1 ** x2 (a Python number exponent takes the fused scalar path)."""
    if isinstance(x2, (int, float)):
        return _c.unary(_c.U_POW_SCALAR, x1, float(x2))
    return _c.binary(_c.B_POW, x1, x2)


def clip(x, x_min, x_max):
    """min(max(x, x_min), x_max)."""
    return _c.binary(_c.B_MINIMUM, _c.binary(_c.B_MAXIMUM, x, x_min), x_max)


def sum(x, axis=None, keepdims: bool = False):  # noqa: A001
    return _c.reduce(_c.R_SUM, x, axis, keepdims)


def mean(x, axis=None, keepdims: bool = False):
    return _c.reduce(_c.R_MEAN, x, axis, keepdims)


def max(x, axis=None, keepdims: bool = False):  # noqa: A001
    return _c.reduce(_c.R_MAX, x, axis, keepdims)


def min(x, axis=None, keepdims: bool = False):  # noqa: A001
    return _c.reduce(_c.R_MIN, x, axis, keepdims)


amax = max
amin = min


def matmul(x1, x2, transpose_a: bool = False, transpose_b: bool = False):
    """The matrix product (batched over leading dims; 1-D operands as in
    NumPy). ``transpose_a``/``transpose_b`` fold a transpose into the GEMM
    without copying."""
    return _c.matmul(x1, x2, transpose_a, transpose_b)


def dense(x, kernel, bias=None):
    """x @ kernel + bias in one pass: x (..., in), kernel (in, units)."""
    return _c.dense(x, kernel, bias)


def reshape(x, newshape):
    """A view of x with a new shape (one dimension may be -1)."""
    if isinstance(newshape, int):
        newshape = (newshape,)
    return _c.reshape(x, tuple(newshape))


def transpose(x, axes=None):
    """Reverses the axes of a 2-D tensor, or swaps the last two axes of a
    batched one (axes=None or the permutation that does that)."""
    x = convert_to_tensor(x)
    if x.ndim < 2:
        return x
    swap = tuple(range(x.ndim - 2)) + (x.ndim - 1, x.ndim - 2)
    if axes is not None and tuple(a % x.ndim for a in axes) != swap:
        raise NotImplementedError(f"transpose: only swapping the last two axes is supported, "
                                  f"received axes={tuple(axes)}")
    if axes is None and x.ndim > 2:
        raise NotImplementedError("transpose: axes=None reverses all axes, which is only "
                                  "supported for 2-D tensors; pass the last-two-axes swap")
    return _c.transpose(x)


def concatenate(xs, axis: int = 0):
    """Joins tensors along an existing axis."""
    xs = list(xs)
    while len(xs) > 6:
        xs = [_c.concatenate(xs[i:i + 6], axis) for i in range(0, len(xs), 6)]
    return _c.concatenate(xs, axis)


def flatten(x):
    """(N, ...) -> (N, prod(...))."""
    x = convert_to_tensor(x)
    return reshape(x, (x.shape[0] if x.ndim else 1, -1))


def argmax(x, axis: int = -1):
    """Indices of the maxima, as a NumPy int array (no gradient)."""
    return np.argmax(np.asarray(x), axis=axis)


def argmin(x, axis: int = -1):
    return np.argmin(np.asarray(x), axis=axis)


def shape(x):
    return tuple(convert_to_tensor(x).shape)


def zeros(shape, dtype=None):
    """A tensor of zeros (float32 unless ``dtype`` is given).

    >>> maas.ops.zeros((2,)).tolist()
    [0.0, 0.0]
    """
    return Tensor(np.zeros(shape, dtype=np.float32 if dtype is None else np.dtype(str(np.dtype(dtype)))))


def ones(shape, dtype=None):
    """A tensor of ones (float32 unless ``dtype`` is given).

    >>> maas.ops.ones((2,), dtype="int32").tolist()
    [1, 1]
    """
    return Tensor(np.ones(shape, dtype=np.float32 if dtype is None else np.dtype(str(np.dtype(dtype)))))


from ._ops_extra import *  # noqa: E402,F401,F403  (the rest of keras.ops's array/math names)
