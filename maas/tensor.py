"""Tensors and variables.

``maas.Tensor`` is the C type of ``maas._core``: typed (float32, int32,
int64, int8, uint8, bool), C-contiguous, with its ops in C. NumPy arrays of
those dtypes are shared without copying, both ways; float64 data becomes
float32 (Keras's default float) unless a dtype is given. The ops take
float32 tensors: an integer tensor meets a float operand by being promoted
to float32, anything else raises TypeError (``maas.ops.cast`` converts).
``maas.Variable`` is a trainable float32 tensor that is updated in place.

>>> import numpy as np, maas
>>> x = np.arange(6, dtype=np.float32).reshape(2, 3)
>>> t = maas.tensor(x)          # wraps x without copying
>>> np.shares_memory(np.asarray(t), x)
True
>>> (t * 2 + 1).sum().item()
36.0
>>> v = maas.Variable(np.zeros(3)); v.assign_add([1, 2, 3]); v.numpy()
array([1., 2., 3.], dtype=float32)
>>> labels = maas.tensor(np.array([0, 2, 1]))    # int64, shared with the array
>>> labels.dtype, maas.tensor([1.5, 2.5], dtype="int32").tolist()
('int64', [1, 2])
"""
from __future__ import annotations

import numpy as np

from . import _core
from ._core import Tensor
from ._typed import DType, dtype_of

__all__ = ["Tensor", "Variable", "tensor", "convert_to_tensor", "convert_to_numpy"]


def _tensor_repr(self: Tensor) -> str:
    body = np.array2string(np.asarray(self), separator=", ", threshold=20, edgeitems=3,
                           precision=4, prefix="       ")
    extra = ", requires_grad=True" if self.requires_grad and not isinstance(self, Variable) else ""
    if self.dtype != "float32":
        extra = f", dtype={self.dtype}" + extra
    return f"<Tensor shape={self.shape}{extra}, values=\n       {body}>" if self.ndim > 1 else \
        f"<Tensor shape={self.shape}{extra}, values={body}>"


def _tolist(self: Tensor):
    """tolist() -> nested Python lists (floats, ints or bools after the dtype)."""
    return np.asarray(self).tolist()


def _iter(self: Tensor):
    if self.ndim == 0:
        raise TypeError("iteration over a 0-d tensor")
    return (self[i] for i in range(len(self)))


Tensor.dtype = property(dtype_of, doc=DType.__doc__)
Tensor.__repr__ = _tensor_repr
Tensor.__str__ = _tensor_repr
Tensor.tolist = _tolist
Tensor.__iter__ = _iter
# NumPy defers to Tensor's reflected operators: ndarray + Tensor -> Tensor
Tensor.__array_ufunc__ = None
Tensor.__array_priority__ = 1000


def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    """Makes a Tensor from any array-like.

    Without ``dtype`` the data keeps its own: a C-contiguous NumPy array of
    float32, int32, int64, int8, uint8 or bool is wrapped without copying
    (the tensor keeps it alive, and writes go both ways); float64 and
    float16 data are converted to float32 (as Keras's default float, and as
    maas always did), int16/uint16 to int32, uint32 to int64; Python lists
    follow NumPy (ints are int64). With ``dtype`` (a name such as "int32"
    or a NumPy type) the data is converted with NumPy's astype rules unless
    it already has that dtype. Object, string, complex and uint64 data raise
    TypeError. Only float32 tensors can require gradients.

    >>> maas.tensor([[1, 2], [3, 4]]).dtype
    'int64'
    >>> maas.tensor(np.arange(3.0)).dtype, maas.tensor([1, 2], dtype="float32").dtype
    ('float32', 'float32')
    """
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def convert_to_tensor(x, dtype=None) -> Tensor:
    """Keras's name for :func:`tensor`: a Tensor of the right dtype is
    returned as it is; other data is converted as :func:`tensor` does.

    >>> convert_to_tensor(np.arange(3), dtype="float32").numpy()
    array([0., 1., 2.], dtype=float32)
    """
    if isinstance(x, Tensor) and (dtype is None or np.dtype(dtype) == np.dtype(x.dtype)):
        return x
    return Tensor(x, dtype=dtype)


def convert_to_numpy(x) -> np.ndarray:
    """A NumPy array of x (sharing memory when x is a Tensor)."""
    return np.asarray(x)


class Variable(Tensor):
    """A trainable tensor that owns its memory and is updated in place.

    ``initializer`` is a value (array-like) or a callable ``f(shape, dtype)``
    (an initializer), as in Keras. Trainable variables are recorded by every
    active GradientTape without being watched.

    >>> v = maas.Variable(np.ones((2, 2)), name="w")
    >>> v.assign_sub(np.full((2, 2), 0.5)); float(v.sum())
    2.0
    """

    def __new__(cls, initializer, shape=None, dtype=None, trainable: bool = True,
                name: str | None = None):
        if dtype is not None and np.dtype(dtype) != np.float32:
            raise TypeError(f"maas variables are float32; received dtype={dtype!r} (keep "
                            f"integer data in a maas.tensor, which is not trained)")
        if callable(initializer):
            if shape is None:
                raise ValueError("a callable initializer needs a shape, e.g. "
                                 "Variable(initializers.GlorotUniform(), shape=(3, 4))")
            value = initializer(tuple(shape), "float32")
        else:
            value = initializer
        self = super().__new__(cls, value, copy=True, dtype="float32")
        if shape is not None and tuple(self.shape) != tuple(shape):
            raise ValueError(f"Variable: initial value has shape {self.shape}, "
                             f"but shape={tuple(shape)} was given")
        self.requires_grad = bool(trainable)
        self.name = name or "variable"
        return self

    def __init__(self, *args, **kwargs):
        pass

    @property
    def trainable(self) -> bool:
        return self.requires_grad

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self.requires_grad = bool(value)

    @property
    def value(self) -> Tensor:
        """The current value as a plain Tensor sharing this variable's memory."""
        return Tensor(self)

    def assign(self, value) -> "Variable":
        """Writes value (same shape, or a scalar) into the variable in place."""
        _core.assign(self, value, 0)
        return self

    def assign_add(self, delta) -> "Variable":
        _core.assign(self, delta, 1)
        return self

    def assign_sub(self, delta) -> "Variable":
        _core.assign(self, delta, 2)
        return self

    def __repr__(self) -> str:
        body = np.array2string(np.asarray(self), separator=", ", threshold=20, precision=4)
        return f"<Variable name={self.name} shape={self.shape} trainable={self.trainable}, values={body}>"

    __str__ = __repr__

    def __reduce__(self):
        return (Variable, (np.array(self), None, None, self.trainable, self.name))
