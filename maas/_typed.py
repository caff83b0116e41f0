"""Typed tensors: ``cast`` between maas's dtypes, and the error integer-label
losses raise. (Re-exported from ``maas.ops``.)

>>> import numpy as np, maas
>>> maas.ops.cast(np.array([-1.7, 0.5, 2.9], np.float32), "int32").tolist()
[-1, 0, 2]
>>> maas.ops.cast(maas.tensor([0, 3, -2]), "bool").tolist()
[False, True, True]
"""
from __future__ import annotations

import numpy as np

from . import _core
from .errors import MaasError

__all__ = ["cast", "DTYPES", "DType", "IntegerLabelError"]

#: the dtypes of maas tensors, by NumPy's names
DTYPES = ("float32", "int32", "int64", "int8", "uint8", "bool")


class DType(str):
    """A tensor's dtype: its NumPy name ("float32", "int64", ...), a str that
    also equals the matching NumPy dtype and type, so both Keras's habit
    (``x.dtype == "float32"``) and NumPy's (``x.dtype == np.float32``) hold.

    >>> maas.tensor([1, 2]).dtype == np.int64, maas.tensor([1, 2]).dtype == "int64"
    (True, True)
    """

    __slots__ = ()

    def __eq__(self, other):
        if isinstance(other, str):
            return str.__eq__(self, other)
        try:
            return np.dtype(other) == np.dtype(str(self))
        except TypeError:
            return NotImplemented

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = str.__hash__

    def __repr__(self) -> str:
        return repr(str(self))


_DTYPES = {name: DType(name) for name in DTYPES}


def dtype_of(t) -> DType:
    """The DType of a tensor (Tensor.dtype)."""
    return _DTYPES[_raw_dtype.__get__(t)]


_raw_dtype = _core.Tensor.dtype


class IntegerLabelError(MaasError, TypeError, ValueError):
    """Labels that must be integers are not (e.g. float labels with a
    fraction). Both a TypeError and a ValueError, so either ``except``
    catches it."""


def cast(x, dtype):
    """x converted to ``dtype`` ("float32", "int32", "int64", "int8",
    "uint8", "bool", or the NumPy type), as NumPy's ``astype``: float ->
    int truncates toward zero, int -> int wraps, anything -> bool is
    ``x != 0``. NaN -> int gives 0 and out-of-range floats saturate at the
    type's limits (NumPy leaves those undefined). A tensor that already has
    ``dtype`` is returned as it is (so float32 -> float32 passes gradients
    through); other casts carry no gradient, as in Keras.

    >>> maas.ops.cast([1.9, -1.9], "int64").tolist()
    [1, -1]
    """
    return _core.cast(x, dtype)
