"""More of Keras 3's ``keras.ops`` array and math namespace, composed from
the op table (reshape/view, rows, take, transpose, concatenate, unary,
binary, reduce, matmul, cast), so float32 results carry gradients and a
traced training step replays them. (Re-exported from ``maas.ops``.)

Conventions:

* float32 inputs go through table ops only (traceable, differentiable);
  integer/bool inputs of the data-movement and math ops are computed with
  NumPy on the tensor's value (they carry no gradient; inside a trace such a
  read makes fit fall back to eager, which stays correct).
* Ops built by multiplying with a 0/1 mask (``where``, ``triu``, ``tril``)
  turn inf or NaN in the *unselected* part into NaN (inf * 0 = NaN), and so
  does their gradient; keep non-finite values out of the branch you drop.
* Gathers (take, take_along_axis, repeat with counts, sort, top_k) are
  strided slices when the indices form few constant-step runs (exact for any
  value); otherwise, and always for a Tensor of indices, a one-hot matmul,
  exact for finite values (an inf/NaN in x becomes NaN in the gathered rows).
* sort, argsort, top_k and take_along_axis read their indices/order with
  NumPy: not traceable (a traced fit falls back to eager, still correct).
* Constant builders (arange, eye, full, linspace, ...) use NumPy.

>>> import maas
>>> maas.ops.stack([maas.tensor([1.0, 2.0]), maas.tensor([3.0, 4.0])], axis=1).shape
(2, 2)
"""
from __future__ import annotations

import builtins
import math

import numpy as np

from . import _core as _c
from ._typed import cast
from .tensor import Tensor, convert_to_tensor

__all__ = [
    "expand_dims", "squeeze", "stack", "split", "flip", "where", "sign", "any", "all",
    "logsumexp", "norm", "pad", "tile", "repeat", "triu", "tril", "cumsum", "cumprod",
    "roll", "eye", "identity", "arange", "linspace", "one_hot", "full", "full_like",
    "zeros_like", "ones_like", "take", "take_along_axis", "sort", "argsort", "top_k",
    "prod", "std", "var", "average", "einsum", "reciprocal", "log1p", "expm1", "mod",
    "floor_divide", "floor", "isnan", "isinf", "isfinite", "logical_not", "count_nonzero",
]

_FMAX = float(np.finfo(np.float32).max)


# ------------------------------------------------------------ helpers


def _t(x):
    return convert_to_tensor(x)


def _f(x):
    """x as a tensor, and whether it is float32 (the differentiable path)."""
    x = _t(x)
    return x, x.dtype == "float32"


def _np(x):
    return np.asarray(x)


def _wrap(a):
    a = np.array(a, order="C", copy=None)  # (ascontiguousarray would make 0-d 1-d)
    if a.dtype == np.float64:
        a = a.astype(np.float32)
    return Tensor(a)


def _reshape(x, shape):
    shape = tuple(int(s) for s in shape)
    if x.dtype != "float32":  # the reshape binding takes float32 only
        return _wrap(np.asarray(x).reshape(shape))
    return _c.reshape(x, shape)


def _ax(axis, ndim):
    n = ndim if ndim else 1
    if not -n <= axis < n:
        raise ValueError(f"axis {axis} is out of bounds for a tensor with {ndim} dimensions")
    return axis % n


def _rows(x, start, count, step=1):
    return _c.op(_c.OP_ROWS, [x], int(start), int(step), int(count))


def _bin(op, a, b):
    return _c.binary(op, a, b)


def _red(op, x, axis, keepdims):
    """reduce over None, one axis, or a tuple of axes."""
    if axis is None or isinstance(axis, (int, np.integer)):
        return _c.reduce(op, x, None if axis is None else int(axis), keepdims)
    axes = sorted({_ax(int(a), x.ndim) for a in axis}, reverse=True)
    out_shape = [s for d, s in enumerate(x.shape) if d not in axes]
    for a in axes:
        x = _c.reduce(op, x, a, True)
    return x if keepdims else _reshape(x, out_shape)


def _along(x, axis, f):
    """Apply f, an op on the first axis of a 2-D (n, M) tensor giving (m, M),
    along ``axis`` of x (moved to the front by reshape/transpose)."""
    shp = tuple(x.shape)
    a = _ax(axis, len(shp))
    A = int(np.prod(shp[:a], dtype=np.int64))
    n = shp[a]
    B = int(np.prod(shp[a + 1:], dtype=np.int64))
    if A == 1:
        z = f(_reshape(x, (n, B)))
        m = z.shape[0]
        return _reshape(z, shp[:a] + (m,) + shp[a + 1:])
    y = _c.transpose(_reshape(x, (A, n * B)))      # (n*B, A)
    z = f(_reshape(y, (n, B * A)))                  # (m, B*A)
    m = z.shape[0]
    z = _c.transpose(_reshape(z, (m * B, A)))       # (A, m*B)
    return _reshape(z, shp[:a] + (m,) + shp[a + 1:])


def _concat(xs, axis=0):
    xs = list(xs)
    while len(xs) > 32:
        xs = [_c.concatenate(xs[i:i + 32], axis) for i in range(0, len(xs), 32)]
    if len(xs) == 1:
        return xs[0]
    return _c.concatenate(xs, axis)


def _runs(idx):
    """idx (1-D int64) as (start, step, count) runs of constant step."""
    runs, i, k = [], 0, len(idx)
    while i < k:
        if i + 1 == k:
            runs.append((int(idx[i]), 1, 1))
            break
        st = int(idx[i + 1] - idx[i])
        j = i + 1
        while j + 1 < k and idx[j + 1] - idx[j] == st:
            j += 1
        runs.append((int(idx[i]), st, j - i + 1))
        i = j + 1
    return runs


_MAX_RUNS = 64


def _gather_rows(y, idx):
    """Rows idx of a 2-D (n, M) tensor, gradient to y. Constant indices
    that form few constant-step runs are strided slices (exact for any
    value); otherwise a one-hot (k, n) matmul, exact for finite values (an
    inf/NaN anywhere in y's gathered columns turns into NaN: inf * 0).
    A Tensor of indices always takes the one-hot path (traceable)."""
    n = y.shape[0]
    if isinstance(idx, Tensor):
        fi = _reshape(cast(idx, "float32"), (idx.size, 1))
        onehot = _bin(_c.B_EQ, fi, _const(np.arange(n).reshape(1, n)))
        return _c.matmul(onehot, y, False, False)
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        return _rows(y, 0, 0)
    runs = _runs(idx)
    if len(runs) <= _MAX_RUNS:
        return _concat([_rows(y, a, c, st) for a, st, c in runs])
    onehot = np.zeros((idx.size, n), np.float32)
    onehot[np.arange(idx.size), idx] = 1.0
    return _c.matmul(_const(onehot), y, False, False)


def _mask(x):
    """a non-differentiable float32 0/1 copy of a condition."""
    x = _t(x)
    if x.dtype == "float32":
        return cast(cast(x, "bool"), "float32")
    return cast(x, "float32")


def _const(a):
    return Tensor(np.array(a, dtype=np.float32, order="C"))


# ------------------------------------------------------------ shape ops


def expand_dims(x, axis):
    """Inserts length-1 axes at ``axis`` (an int or a tuple).

    >>> maas.ops.expand_dims(maas.tensor([1.0, 2.0]), 0).shape
    (1, 2)
    """
    x = _t(x)
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    nd = x.ndim + len(axes)
    axes = sorted(_ax(int(a), nd) for a in axes)
    shp = list(x.shape)
    for a in axes:
        shp.insert(a, 1)
    return _reshape(x, shp)


def squeeze(x, axis=None):
    """Removes length-1 axes (all of them, or those in ``axis``).

    >>> maas.ops.squeeze(maas.tensor([[1.0], [2.0]])).shape
    (2,)
    """
    x = _t(x)
    shp = tuple(x.shape)
    if axis is None:
        return _reshape(x, [s for s in shp if s != 1])
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    axes = {_ax(int(a), len(shp)) for a in axes}
    for a in axes:
        if shp[a] != 1:
            raise ValueError(f"squeeze: cannot squeeze axis {a} of size {shp[a]} (shape {shp})")
    return _reshape(x, [s for d, s in enumerate(shp) if d not in axes])


def stack(x, axis=0):
    """Joins tensors of one shape along a new axis.

    >>> maas.ops.stack([maas.tensor([1.0]), maas.tensor([2.0])]).shape
    (2, 1)
    """
    xs = [_t(v) for v in x]
    if not builtins.all(v.dtype == "float32" for v in xs):
        return _wrap(np.stack([_np(v) for v in xs], axis=axis))
    a = _ax(axis, xs[0].ndim + 1)
    return _concat([expand_dims(v, a) for v in xs], a)


def split(x, indices_or_sections, axis=0):
    """Splits x along ``axis`` into equal sections (an int) or at indices
    (a list), as NumPy; returns a list.

    >>> [t.shape for t in maas.ops.split(maas.tensor([1.0, 2.0, 3.0, 4.0]), 2)]
    [(2,), (2,)]
    """
    x, fl = _f(x)
    if not fl:
        return [_wrap(p) for p in np.split(_np(x), indices_or_sections, axis=axis)]
    a = _ax(axis, x.ndim)
    n = x.shape[a]
    if isinstance(indices_or_sections, (int, np.integer)):
        k = int(indices_or_sections)
        if k <= 0 or n % k:
            raise ValueError(f"split: {n} elements along axis {a} do not split into {k} equal sections; "
                             "pass a list of indices instead")
        bounds = [i * (n // k) for i in range(k + 1)]
    else:
        idx = [builtins.min(builtins.max(int(i) + (n if int(i) < 0 else 0), 0), n)
               for i in indices_or_sections]
        bounds = [0] + idx + [n]
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        cnt = builtins.max(hi - lo, 0)
        out.append(_along(x, a, lambda y, lo=lo, cnt=cnt: _rows(y, lo, cnt)))
    return out


def flip(x, axis=None):
    """Reverses the order of elements along ``axis`` (all axes if None).

    >>> maas.ops.flip(maas.tensor([1.0, 2.0, 3.0])).tolist()
    [3.0, 2.0, 1.0]
    """
    x, fl = _f(x)
    if not fl:
        return _wrap(np.flip(_np(x), axis=axis))
    if x.ndim == 0:
        return x
    if axis is None:
        shp = tuple(x.shape)
        flat = _reshape(x, (x.size, 1))
        return _reshape(_rows(flat, x.size - 1, x.size, -1), shp)
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    for a in axes:
        n = x.shape[_ax(int(a), x.ndim)]
        x = _along(x, a, lambda y, n=n: _rows(y, n - 1, n, -1))
    return x


def roll(x, shift, axis=None):
    """Rolls elements along ``axis`` (the flattened tensor if None) by
    ``shift``; ints or tuples as NumPy.

    >>> maas.ops.roll(maas.tensor([1.0, 2.0, 3.0]), 1).tolist()
    [3.0, 1.0, 2.0]
    """
    x, fl = _f(x)
    if not fl:
        return _wrap(np.roll(_np(x), shift, axis=axis))
    if axis is None:
        shp = tuple(x.shape)
        return _reshape(roll(_reshape(x, (x.size,)), shift, 0), shp)
    shifts = (shift,) if isinstance(shift, (int, np.integer)) else tuple(shift)
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    if len(shifts) == 1 and len(axes) > 1:
        shifts = shifts * len(axes)
    for s, a in zip(shifts, axes):
        n = x.shape[_ax(int(a), x.ndim)]
        if n == 0:
            continue
        s = int(s) % n
        if s:
            x = _along(x, a, lambda y, n=n, s=s: _concat([_rows(y, n - s, s), _rows(y, 0, n - s)]))
    return x


def tile(x, repeats):
    """Repeats the whole tensor ``repeats`` times along each axis (NumPy's
    rules for a repeats of another length than x.ndim).

    >>> maas.ops.tile(maas.tensor([1.0, 2.0]), 2).tolist()
    [1.0, 2.0, 1.0, 2.0]
    """
    x, fl = _f(x)
    if not fl:
        return _wrap(np.tile(_np(x), repeats))
    reps = (repeats,) if isinstance(repeats, (int, np.integer)) else tuple(repeats)
    reps = tuple(int(r) for r in reps)
    nd = builtins.max(x.ndim, len(reps))
    x = _reshape(x, (1,) * (nd - x.ndim) + tuple(x.shape))
    reps = (1,) * (nd - len(reps)) + reps
    for a, r in enumerate(reps):
        if r == 0:
            shp = list(x.shape)
            shp[a] = 0
            return _const(np.zeros(shp))
        if r > 1:
            x = _concat([x] * r, a)
    return x


def repeat(x, repeats, axis=None):
    """Repeats each element ``repeats`` times along ``axis`` (the flattened
    tensor if None); repeats an int or one count per element.

    >>> maas.ops.repeat(maas.tensor([1.0, 2.0]), 2).tolist()
    [1.0, 1.0, 2.0, 2.0]
    """
    x, fl = _f(x)
    if not fl:
        return _wrap(np.repeat(_np(x), repeats, axis=axis))
    if axis is None:
        x = _reshape(x, (x.size,))
        axis = 0
    a = _ax(axis, x.ndim)
    n = x.shape[a]
    if isinstance(repeats, (int, np.integer)):
        idx = np.repeat(np.arange(n, dtype=np.int64), int(repeats))
    else:
        idx = np.repeat(np.arange(n, dtype=np.int64), _np(repeats).astype(np.int64))
    return _along(x, a, lambda y: _gather_rows(y, idx))


def pad(x, pad_width, mode="constant", constant_values=None):
    """Pads with a constant (Keras's default 0). ``pad_width``: an int, one
    (before, after) pair for every axis, or one pair per axis.

    >>> maas.ops.pad(maas.tensor([1.0, 2.0]), ((1, 2),)).tolist()
    [0.0, 1.0, 2.0, 0.0, 0.0]
    """
    if mode != "constant":
        raise NotImplementedError(f"pad: only mode='constant' is supported, received mode={mode!r}")
    x, fl = _f(x)
    cv = 0 if constant_values is None else constant_values
    pw = np.broadcast_to(np.asarray(pad_width, dtype=np.int64).reshape(-1, 2) if
                         np.ndim(pad_width) else np.full((1, 2), int(pad_width)), (x.ndim, 2))
    if (pw < 0).any():
        raise ValueError(f"pad: pad widths must be >= 0, received {pad_width}")
    if not fl:
        return _wrap(np.pad(_np(x), pw, constant_values=cv))
    for a in range(x.ndim):
        b, e = int(pw[a, 0]), int(pw[a, 1])
        parts = []
        for k in (b, None, e):
            if k is None:
                parts.append(x)
            elif k:
                shp = list(x.shape)
                shp[a] = k
                parts.append(_const(np.full(shp, cv)))
        if len(parts) > 1:
            x = _concat(parts, a)
    return x


def _tri_mask(shape, k, upper):
    n, m = shape[-2], shape[-1]
    t = np.tri(n, m, k - 1 if upper else k, dtype=np.float32)
    return 1.0 - t if upper else t


def triu(x, k=0):
    """The upper triangle of the last two axes (elements below diagonal k
    zeroed; inf/NaN there become NaN, see the module note).

    >>> maas.ops.triu(maas.tensor([[1.0, 2.0], [3.0, 4.0]])).tolist()
    [[1.0, 2.0], [0.0, 4.0]]
    """
    x, fl = _f(x)
    if not fl:
        return _wrap(np.triu(_np(x), k))
    return _bin(_c.B_MUL, x, _const(_tri_mask(x.shape, int(k), True)))


def tril(x, k=0):
    """The lower triangle of the last two axes (elements above diagonal k
    zeroed; inf/NaN there become NaN, see the module note).

    >>> maas.ops.tril(maas.tensor([[1.0, 2.0], [3.0, 4.0]])).tolist()
    [[1.0, 0.0], [3.0, 4.0]]
    """
    x, fl = _f(x)
    if not fl:
        return _wrap(np.tril(_np(x), k))
    return _bin(_c.B_MUL, x, _const(_tri_mask(x.shape, int(k), False)))


# ------------------------------------------------------------ selection


def where(condition, x1=None, x2=None):
    """x1 where condition is true, else x2 (broadcasting). Computed as
    x1 * m + x2 * (1 - m) with m the 0/1 condition, so gradients reach x1 and
    x2 through the mask; an inf or NaN in the branch NOT selected makes the
    result NaN there (inf * 0). With only ``condition``, the indices of its
    nonzero elements (NumPy, int64, no gradient).

    >>> maas.ops.where(maas.tensor([True, False]), 1.0, 2.0).tolist()
    [1.0, 2.0]
    """
    if x1 is None and x2 is None:
        return [_wrap(i.astype(np.int64)) for i in np.nonzero(_np(condition))]
    if x1 is None or x2 is None:
        raise ValueError("where: pass both x1 and x2, or neither")
    a, b = _t(x1), _t(x2)
    if a.dtype != "float32" or b.dtype != "float32":
        if not (a.dtype == "float32" or b.dtype == "float32"):
            return _wrap(np.where(_np(condition), _np(a), _np(b)))
        a, b = cast(a, "float32"), cast(b, "float32")
    m = _mask(condition)
    return _bin(_c.B_ADD, _bin(_c.B_MUL, a, m),
                _bin(_c.B_MUL, b, _bin(_c.B_SUB, _const(1.0), m)))


def take(x, indices, axis=None):
    """Elements of x at ``indices`` along ``axis`` (the flattened tensor if
    None); negative indices count from the end. Gradient to x. A Tensor of
    indices stays traceable (a one-hot matmul; see the module note on
    non-finite values).

    >>> maas.ops.take(maas.tensor([1.0, 2.0, 3.0]), [2, 0]).tolist()
    [3.0, 1.0]
    """
    x, fl = _f(x)
    if not fl:
        return _wrap(np.take(_np(x), _np(indices), axis=axis))
    if axis is None:
        x = _reshape(x, (x.size,))
        axis = 0
    a = _ax(axis, x.ndim)
    n = x.shape[a]
    if isinstance(indices, Tensor):
        ishape = tuple(indices.shape)
        fi = _reshape(cast(indices, "float32"), (indices.size,))
        ti = _bin(_c.B_ADD, fi, _bin(_c.B_MUL, _bin(_c.B_LT, fi, _const(0.0)), _const(float(n))))
    else:
        idx = np.asarray(indices, dtype=np.int64)
        ishape = idx.shape
        if ((idx < -n) | (idx >= n)).any():
            raise IndexError(f"take: an index is out of range for axis {a} of size {n}")
        ti = (idx % n if n else idx).reshape(-1)
    shp = tuple(x.shape)
    k = int(np.prod(ishape, dtype=np.int64))
    out = _along(x, a, lambda y: _gather_rows(y, ti))
    return _reshape(out, shp[:a] + tuple(ishape) + shp[a + 1:]) if len(ishape) != 1 or k != ishape[0] \
        else out


def take_along_axis(x, indices, axis=None):
    """NumPy's take_along_axis: indices has x's number of dimensions and
    picks along ``axis`` (broadcasting the others). Gradient to x. Indices
    are read as a constant (NumPy) here.

    >>> maas.ops.take_along_axis(maas.tensor([[1.0, 2.0]]), [[1, 0]], axis=1).tolist()
    [[2.0, 1.0]]
    """
    x, fl = _f(x)
    idx = np.asarray(indices).astype(np.int64)
    if not fl:
        return _wrap(np.take_along_axis(_np(x), idx, axis=axis))
    if axis is None:
        x = _reshape(x, (x.size,))
        idx = idx.reshape(-1)
        axis = 0
    a = _ax(axis, x.ndim)
    shp = tuple(x.shape)
    if idx.ndim != len(shp):
        raise ValueError(f"take_along_axis: indices need {len(shp)} dimensions, received {idx.ndim}")
    bshape = [builtins.max(s, i) if d != a else i for d, (s, i) in enumerate(zip(shp, idx.shape))]
    xb_shape = list(bshape)
    xb_shape[a] = shp[a]
    n = shp[a]
    idx = np.broadcast_to(idx, bshape)
    idx = np.where(idx < 0, idx + n, idx)
    if x.shape != tuple(xb_shape):
        x = _bin(_c.B_ADD, x, _const(np.zeros(xb_shape)))
    grids = np.indices(bshape, dtype=np.int64)
    grids[a] = idx
    lin = np.ravel_multi_index(tuple(grids), xb_shape).reshape(-1)
    flat = _reshape(x, (x.size, 1))
    return _reshape(_gather_rows(flat, lin), bshape)


def argsort(x, axis=-1):
    """Indices (int32, as Keras) that sort x along ``axis``. Reads the value
    with NumPy: not traceable (inside fit's trace it makes fit run eager).

    >>> maas.ops.argsort(maas.tensor([3.0, 1.0, 2.0])).tolist()
    [1, 2, 0]
    """
    a = _np(x)
    if axis is None:
        a, axis = a.reshape(-1), 0
    return Tensor(np.ascontiguousarray(np.argsort(a, axis=axis, kind="stable").astype(np.int32)))


def sort(x, axis=-1):
    """x sorted along ``axis``, with the gradient going back to the sorted
    elements. The order is found with NumPy on the value: not traceable (a
    traced fit falls back to eager).

    >>> maas.ops.sort(maas.tensor([3.0, 1.0, 2.0])).tolist()
    [1.0, 2.0, 3.0]
    """
    x, fl = _f(x)
    if not fl:
        return _wrap(np.sort(_np(x), axis=axis))
    if axis is None:
        x, axis = _reshape(x, (x.size,)), 0
    return take_along_axis(x, _np(argsort(x, axis)), axis)


def top_k(x, k, sorted=True):  # noqa: A002  (Keras's name)
    """The k largest values along the last axis and their int32 indices
    (largest first). Found with NumPy on the value: not traceable; the
    gradient reaches the picked values.

    >>> v, i = maas.ops.top_k(maas.tensor([1.0, 3.0, 2.0]), 2); v.tolist(), i.tolist()
    ([3.0, 2.0], [1, 2])
    """
    x = _t(x)
    a = _np(x)
    idx = np.argsort(-a.astype(np.float64), axis=-1, kind="stable")[..., :int(k)].astype(np.int32)
    vals = take_along_axis(x, idx, axis=-1)
    return vals, Tensor(np.ascontiguousarray(idx))


# ------------------------------------------------------------ math


def sign(x):
    """-1, 0 or 1 by the sign of x (NaN stays NaN); zero gradient.

    >>> maas.ops.sign(maas.tensor([-2.0, 0.0, 3.0])).tolist()
    [-1.0, 0.0, 1.0]
    """
    x, fl = _f(x)
    if not fl:
        return _wrap(np.sign(_np(x)))
    s = _bin(_c.B_SUB, _bin(_c.B_GT, x, _const(0.0)), _bin(_c.B_LT, x, _const(0.0)))
    return _bin(_c.B_ADD, s, _nan_of(x))


def _nan_of(x):
    """NaN where x is NaN, 0 elsewhere (no gradient): (n / (1 - n)) * 0."""
    n = _bin(_c.B_NE, x, x)
    return _bin(_c.B_MUL, _bin(_c.B_DIV, n, _bin(_c.B_SUB, _const(1.0), n)), _const(0.0))


def isnan(x):
    """True where x is NaN (as x != x).

    >>> maas.ops.isnan(maas.tensor([1.0, float("nan")])).tolist()
    [False, True]
    """
    x, fl = _f(x)
    if not fl:
        return _wrap(np.zeros(x.shape, bool))
    return cast(_bin(_c.B_NE, x, x), "bool")


def isinf(x):
    """True where x is +inf or -inf.

    >>> maas.ops.isinf(maas.tensor([1.0, float("inf")])).tolist()
    [False, True]
    """
    x, fl = _f(x)
    if not fl:
        return _wrap(np.zeros(x.shape, bool))
    return cast(_bin(_c.B_EQ, _c.unary(_c.U_ABS, x), _const(np.inf)), "bool")


def isfinite(x):
    """True where x is neither NaN nor inf (as |x| < inf).

    >>> maas.ops.isfinite(maas.tensor([1.0, float("inf")])).tolist()
    [True, False]
    """
    x, fl = _f(x)
    if not fl:
        return _wrap(np.ones(x.shape, bool))
    return cast(_bin(_c.B_LT, _c.unary(_c.U_ABS, x), _const(np.inf)), "bool")


def logical_not(x):
    """True where x is zero/False.

    >>> maas.ops.logical_not(maas.tensor([True, False])).tolist()
    [False, True]
    """
    return cast(_bin(_c.B_EQ, _mask(x), _const(0.0)), "bool")


def _bool_reduce(x, axis, keepdims, op):
    x = _t(x)
    if x.size == 0:
        fn = np.any if op == _c.R_MAX else np.all
        return _wrap(fn(_np(x), axis=axis, keepdims=keepdims))
    return cast(_red(op, _mask(x), axis, keepdims), "bool")


def any(x, axis=None, keepdims=False):  # noqa: A001
    """True if any element (along ``axis``) is nonzero.

    >>> maas.ops.any(maas.tensor([0.0, 2.0])).tolist()
    True
    """
    return _bool_reduce(x, axis, keepdims, _c.R_MAX)


def all(x, axis=None, keepdims=False):  # noqa: A001
    """True if every element (along ``axis``) is nonzero.

    >>> maas.ops.all(maas.tensor([0.0, 2.0])).tolist()
    False
    """
    return _bool_reduce(x, axis, keepdims, _c.R_MIN)


def count_nonzero(x, axis=None):
    """The number of nonzero elements (along ``axis``), int32.

    >>> maas.ops.count_nonzero(maas.tensor([0.0, 2.0, 3.0])).tolist()
    2
    """
    return cast(_red(_c.R_SUM, _mask(x), axis, False), "int32")


def logsumexp(x, axis=None, keepdims=False):
    """log(sum(exp(x))) along ``axis``, max-subtracted (stable for large
    |x|; all -inf gives -inf, any +inf gives inf).

    >>> round(maas.ops.logsumexp(maas.tensor([1000.0, 1000.0])).tolist(), 3)
    1000.693
    """
    x = _t(x)
    m = _red(_c.R_MAX, x, axis, True)
    m = _bin(_c.B_MINIMUM, _bin(_c.B_MAXIMUM, m, _const(-_FMAX)), _const(_FMAX))
    s = _red(_c.R_SUM, _c.unary(_c.U_EXP, _bin(_c.B_SUB, x, m)), axis, True)
    out = _bin(_c.B_ADD, _c.unary(_c.U_LOG, s), m)
    if keepdims:
        return out
    return _red(_c.R_SUM, out, axis, False) if axis is not None else _reshape(out, ())


def _vec_norm(x, ord, axis, keepdims):
    ax = _c.unary(_c.U_ABS, x)
    if ord is None or ord == 2:
        return _c.unary(_c.U_SQRT, _red(_c.R_SUM, _c.unary(_c.U_SQUARE, x), axis, keepdims))
    if ord == 1:
        return _red(_c.R_SUM, ax, axis, keepdims)
    if ord == np.inf:
        return _red(_c.R_MAX, ax, axis, keepdims)
    if ord == -np.inf:
        return _red(_c.R_MIN, ax, axis, keepdims)
    if ord == 0:
        return _red(_c.R_SUM, _mask(x), axis, keepdims)
    if isinstance(ord, str):
        raise ValueError(f"norm: ord={ord!r} is a matrix norm; pass two axes or a 2-D tensor")
    p = float(ord)
    s = _red(_c.R_SUM, _c.unary(_c.U_POW_SCALAR, ax, p), axis, keepdims)
    return _c.unary(_c.U_POW_SCALAR, s, 1.0 / p)


def norm(x, ord=None, axis=None, keepdims=False):  # noqa: A002
    """Vector norms (ord None/2, 1, inf, -inf, 0, any p) over one axis, and
    matrix norms (None/'fro', 1, -1, inf, -inf) over two axes, as
    numpy.linalg.norm; ord=2/-2/'nuc' for matrices (SVD) are not supported.

    >>> maas.ops.norm(maas.tensor([3.0, 4.0])).tolist()
    5.0
    """
    x = _t(x)
    if x.dtype != "float32":
        x = cast(x, "float32")
    if axis is None:
        if ord is None:
            out = _vec_norm(_reshape(x, (x.size,)), None, None, False)
            return _reshape(out, (1,) * x.ndim) if keepdims else out
        if x.ndim == 1:
            axis = 0
        elif x.ndim == 2:
            axis = (0, 1)
        else:
            raise ValueError("norm: with ord set and axis=None, x must be 1-D or 2-D")
    if isinstance(axis, (int, np.integer)) or len(axis) == 1:
        a = int(axis) if isinstance(axis, (int, np.integer)) else int(axis[0])
        return _vec_norm(x, ord, a, keepdims)
    r, c = (_ax(int(a), x.ndim) for a in axis)
    if ord is None or ord == "fro":
        return _c.unary(_c.U_SQRT, _red(_c.R_SUM, _c.unary(_c.U_SQUARE, x), (r, c), keepdims))
    ax = _c.unary(_c.U_ABS, x)
    if ord in (1, -1):
        s = _c.reduce(_c.R_SUM, ax, r, True)
        out = _c.reduce(_c.R_MAX if ord == 1 else _c.R_MIN, s, c, True)
    elif ord in (np.inf, -np.inf):
        s = _c.reduce(_c.R_SUM, ax, c, True)
        out = _c.reduce(_c.R_MAX if ord == np.inf else _c.R_MIN, s, r, True)
    else:
        raise NotImplementedError(f"norm: matrix ord={ord!r} needs an SVD, which maas does not have; "
                                  "use ord=None/'fro', 1, -1, inf or -inf")
    if keepdims:
        return out
    return _reshape(out, [s for d, s in enumerate(x.shape) if d not in (r, c)])


def _scan(x, axis, op):
    """Inclusive scan (Hillis-Steele doubling: log2(n) steps of slices and
    one binary op), exact for add/mul and gradient-correct."""
    def f(y):
        n = y.shape[0]
        d = 1
        while d < n:
            y = _concat([_rows(y, 0, d), _bin(op, _rows(y, d, n - d), _rows(y, 0, n - d))])
            d *= 2
        return y
    return _along(x, axis, f)


def cumsum(x, axis=None, dtype=None):
    """Cumulative sum along ``axis`` (the flattened tensor if None).

    >>> maas.ops.cumsum(maas.tensor([1.0, 2.0, 3.0])).tolist()
    [1.0, 3.0, 6.0]
    """
    x, fl = _f(x)
    if not fl:
        return _wrap(np.cumsum(_np(x), axis=axis, dtype=dtype))
    if axis is None:
        x, axis = _reshape(x, (x.size,)), 0
    return _scan(x, axis, _c.B_ADD)


def cumprod(x, axis=None, dtype=None):
    """Cumulative product along ``axis`` (the flattened tensor if None);
    zeros are fine (a doubling scan of products, no logarithms).

    >>> maas.ops.cumprod(maas.tensor([1.0, 2.0, 3.0])).tolist()
    [1.0, 2.0, 6.0]
    """
    x, fl = _f(x)
    if not fl:
        return _wrap(np.cumprod(_np(x), axis=axis, dtype=dtype))
    if axis is None:
        x, axis = _reshape(x, (x.size,)), 0
    return _scan(x, axis, _c.B_MUL)


def prod(x, axis=None, keepdims=False, dtype=None):
    """Product of elements (along ``axis``): a pairwise tree of multiplies,
    so zeros are fine and the gradient is exact.

    >>> maas.ops.prod(maas.tensor([1.0, 2.0, 3.0])).tolist()
    6.0
    """
    x, fl = _f(x)
    if not fl:
        return _wrap(np.prod(_np(x), axis=axis, keepdims=keepdims, dtype=dtype))
    shp = tuple(x.shape)
    if axis is None:
        axes = tuple(range(x.ndim))
        x = _reshape(x, (x.size,))
        ax_list = [0]
    else:
        axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
        axes = tuple(sorted({_ax(int(a), x.ndim) for a in axes}))
        ax_list = axes

    def tree(y):
        if y.shape[0] == 0:
            return _const(np.ones((1, y.shape[1])))
        while y.shape[0] > 1:
            n = y.shape[0]
            h = n // 2
            z = _bin(_c.B_MUL, _rows(y, 0, h), _rows(y, h, h))
            y = _concat([z, _rows(y, 2 * h, 1)]) if n % 2 else z
        return y
    for a in ax_list:
        x = _along(x, a, tree)
    if keepdims:
        return _reshape(x, [1 if d in axes else s for d, s in enumerate(shp)])
    return _reshape(x, [s for d, s in enumerate(shp) if d not in axes])


def var(x, axis=None, keepdims=False):
    """Population variance (mean of squared deviations) along ``axis``.

    >>> maas.ops.var(maas.tensor([1.0, 3.0])).tolist()
    1.0
    """
    x = _t(x)
    if x.dtype != "float32":
        x = cast(x, "float32")
    m = _red(_c.R_MEAN, x, axis, True)
    return _red(_c.R_MEAN, _c.unary(_c.U_SQUARE, _bin(_c.B_SUB, x, m)), axis, keepdims)


def std(x, axis=None, keepdims=False):
    """Population standard deviation along ``axis`` (sqrt of var; its
    gradient is inf/NaN where the deviation is exactly zero).

    >>> maas.ops.std(maas.tensor([1.0, 3.0])).tolist()
    1.0
    """
    return _c.unary(_c.U_SQRT, var(x, axis, keepdims))


def average(x, axis=None, weights=None):
    """The weighted mean along ``axis``: sum(x * w) / sum(w); weights of x's
    shape, or 1-D along ``axis``. Gradient to x and weights.

    >>> maas.ops.average(maas.tensor([1.0, 3.0]), weights=maas.tensor([3.0, 1.0])).tolist()
    1.5
    """
    x = _t(x)
    if x.dtype != "float32":
        x = cast(x, "float32")
    if weights is None:
        return _red(_c.R_MEAN, x, axis, False)
    w = _t(weights)
    if w.dtype != "float32":
        w = cast(w, "float32")
    if w.ndim == 1 and x.ndim > 1:
        if axis is None:
            raise ValueError("average: 1-D weights need an axis")
        a = _ax(axis, x.ndim)
        w = _reshape(w, [w.shape[0] if d == a else 1 for d in range(x.ndim)])
        w = _bin(_c.B_ADD, w, _const(np.zeros(x.shape)))
    num = _red(_c.R_SUM, _bin(_c.B_MUL, x, w), axis, False)
    den = _red(_c.R_SUM, w, axis, False)
    return _bin(_c.B_DIV, num, den)


def einsum(subscripts, *operands):
    """A small subset of einsum mapped to matmul: 'ij,jk->ik',
    'bij,bjk->bik', '...ij,...jk->...ik' (plus their transposed-operand forms
    'ji,jk->ik', 'ij,kj->ik'), 'ij->ji', 'ij->', 'i,i->'. Anything else
    raises NotImplementedError naming the equation.

    >>> maas.ops.einsum("ij,jk->ik", maas.tensor([[1.0, 2.0]]), maas.tensor([[3.0], [4.0]])).tolist()
    [[11.0]]
    """
    eq = subscripts.replace(" ", "")
    mm = {"ij,jk->ik": (False, False), "bij,bjk->bik": (False, False),
          "...ij,...jk->...ik": (False, False), "ji,jk->ik": (True, False),
          "ij,kj->ik": (False, True), "bij,bkj->bik": (False, True),
          "bji,bjk->bik": (True, False), "...ij,...kj->...ik": (False, True)}
    if eq in mm and len(operands) == 2:
        ta, tb = mm[eq]
        return _c.matmul(_t(operands[0]), _t(operands[1]), ta, tb)
    if eq == "ij->ji" and len(operands) == 1:
        return _c.transpose(_t(operands[0]))
    if eq == "ij->" and len(operands) == 1:
        return _red(_c.R_SUM, _t(operands[0]), None, False)
    if eq == "i,i->" and len(operands) == 2:
        return _red(_c.R_SUM, _bin(_c.B_MUL, _t(operands[0]), _t(operands[1])), None, False)
    raise NotImplementedError(f"einsum: the equation {subscripts!r} is not supported; maas covers "
                              "'ij,jk->ik', 'bij,bjk->bik', '...ij,...jk->...ik' (and their "
                              "transposed-operand forms), 'ij->ji', 'ij->', 'i,i->'")


def reciprocal(x):
    """1 / x.

    >>> maas.ops.reciprocal(maas.tensor([2.0, 4.0])).tolist()
    [0.5, 0.25]
    """
    return _bin(_c.B_DIV, _const(1.0), _t(x))


def _piecewise(x, pieces):
    """sum_i m_i * f_i(x_i) over bands of |x|: pieces are (hi, f, safe) with
    band i = [hi_{i-1}, hi_i); x_i is x clipped to [-hi, hi] inside band i
    and the finite `safe` outside it, so no f_i sees a value it can't take
    (an inf/NaN there would poison the sum through * 0)."""
    ax = _c.unary(_c.U_ABS, x)
    out, lo = None, 0.0
    for hi, f, safe in pieces:
        m = _bin(_c.B_GE, ax, _const(lo)) if lo > 0 else None
        if hi != np.inf:
            lt = _bin(_c.B_LT, ax, _const(hi))
            m = lt if m is None else _bin(_c.B_MUL, m, lt)
            xc = _bin(_c.B_MINIMUM, _bin(_c.B_MAXIMUM, x, _const(-hi)), _const(hi))
        else:
            xc = x
        # xc * m is finite outside the band (xc clipped, or |x| < lo there)
        nm = _bin(_c.B_SUB, _const(1.0), m)
        xi = _bin(_c.B_ADD, _bin(_c.B_MUL, xc, m), _bin(_c.B_MUL, nm, _const(safe)))
        term = _bin(_c.B_MUL, f(xi), m)
        out = term if out is None else _bin(_c.B_ADD, out, term)
        lo = hi
    return out


def _poly(x, coeffs):
    """sum c_k x^(k+1), by Horner."""
    acc = _const(coeffs[-1])
    for c in reversed(coeffs[:-1]):
        acc = _bin(_c.B_ADD, _bin(_c.B_MUL, acc, x), _const(c))
    return _bin(_c.B_MUL, acc, x)


def _log1p_kahan(v):
    u = _bin(_c.B_ADD, v, _const(1.0))
    return _bin(_c.B_MUL, _c.unary(_c.U_LOG, u), _bin(_c.B_DIV, v, _bin(_c.B_SUB, u, _const(1.0))))


def _expm1_kahan(v):
    u = _c.unary(_c.U_EXP, v)
    return _bin(_c.B_MUL, _bin(_c.B_SUB, u, _const(1.0)), _bin(_c.B_DIV, v, _c.unary(_c.U_LOG, u)))


def log1p(x):
    """log(1 + x), accurate for small |x|: a 5-term series below 1e-3,
    Kahan's log(u) * x / (u - 1) (u = 1 + x) below 1, log(1 + x) above
    (relative error ~1e-7 throughout; -1 gives -inf, < -1 NaN).

    >>> maas.ops.log1p(maas.tensor([1e-6])).tolist()[0] > 0
    True
    """
    x = _t(x)
    return _piecewise(x, [(1e-3, lambda v: _poly(v, [1.0, -1 / 2, 1 / 3, -1 / 4, 1 / 5]), 0.0),
                          (1.0, _log1p_kahan, 0.5),
                          (np.inf, lambda v: _c.unary(_c.U_LOG, _bin(_c.B_ADD, v, _const(1.0))), 2.0)])


def expm1(x):
    """exp(x) - 1, accurate for small |x|: a 5-term series below 1e-3,
    Kahan's (u - 1) * x / log(u) (u = exp(x)) below 1, exp(x) - 1 above.

    >>> maas.ops.expm1(maas.tensor([1e-6])).tolist()[0] > 0
    True
    """
    x = _t(x)
    return _piecewise(x, [(1e-3, lambda v: _poly(v, [1.0, 1 / 2, 1 / 6, 1 / 24, 1 / 120]), 0.0),
                          (1.0, _expm1_kahan, 0.5),
                          (np.inf, lambda v: _bin(_c.B_SUB, _c.unary(_c.U_EXP, v), _const(1.0)), 2.0)])


def floor(x):
    """The largest integer <= x (float32; zero gradient). Via an int64 cast,
    so exact for |x| < 2**63; inf/NaN are not preserved.

    >>> maas.ops.floor(maas.tensor([-1.5, 1.5])).tolist()
    [-2.0, 1.0]
    """
    x, fl = _f(x)
    if not fl:
        return x
    t = cast(cast(x, "int64"), "float32")
    return _bin(_c.B_SUB, t, _bin(_c.B_GT, t, x))


def floor_divide(x1, x2):
    """floor(x1 / x2) (zero gradient; float via floor, ints with NumPy).

    >>> maas.ops.floor_divide(maas.tensor([7.0, -7.0]), 2.0).tolist()
    [3.0, -4.0]
    """
    a, b = _t(x1), _t(x2)
    if a.dtype != "float32" and b.dtype != "float32":
        return _wrap(np.floor_divide(_np(a), _np(b)))
    return floor(_bin(_c.B_DIV, cast(a, "float32"), cast(b, "float32")))


def mod(x1, x2):
    """x1 - x2 * floor(x1 / x2): the remainder with the divisor's sign, as
    NumPy. Gradient 1 to x1 and -floor(x1 / x2) to x2.

    >>> maas.ops.mod(maas.tensor([7.0, -7.0]), 3.0).tolist()
    [1.0, 2.0]
    """
    a, b = _t(x1), _t(x2)
    if a.dtype != "float32" and b.dtype != "float32":
        return _wrap(np.mod(_np(a), _np(b)))
    a, b = cast(a, "float32"), cast(b, "float32")
    return _bin(_c.B_SUB, a, _bin(_c.B_MUL, b, floor(_bin(_c.B_DIV, a, b))))


# ------------------------------------------------------------ constants


def _dt(dtype, default="float32"):
    return np.dtype(default if dtype is None else str(np.dtype(dtype)) if not isinstance(dtype, str)
                    else dtype)


def eye(N, M=None, k=0, dtype=None):
    """The identity-like matrix: ones on diagonal k.

    >>> maas.ops.eye(2).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    return Tensor(np.eye(int(N), None if M is None else int(M), int(k), dtype=_dt(dtype)))


def identity(n, dtype=None):
    """The n x n identity matrix.

    >>> maas.ops.identity(2).shape
    (2, 2)
    """
    return eye(n, dtype=dtype)


def arange(start, stop=None, step=1, dtype=None):
    """Evenly spaced values in [start, stop); int32 for int arguments, as
    Keras, else float32.

    >>> maas.ops.arange(3).tolist()
    [0, 1, 2]
    """
    if stop is None:
        start, stop = 0, start
    if dtype is None:
        ints = builtins.all(isinstance(v, (int, np.integer)) for v in (start, stop, step))
        dtype = "int32" if ints else "float32"
    return Tensor(np.arange(start, stop, step).astype(_dt(dtype)))


def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0):
    """``num`` evenly spaced values from start to stop (float32).

    >>> maas.ops.linspace(0.0, 1.0, 3).tolist()
    [0.0, 0.5, 1.0]
    """
    out = np.linspace(np.asarray(start, np.float64), np.asarray(stop, np.float64), int(num),
                      endpoint=endpoint, retstep=retstep, axis=axis)
    if retstep:
        return Tensor(np.ascontiguousarray(out[0].astype(_dt(dtype)))), float(out[1])
    return Tensor(np.ascontiguousarray(out.astype(_dt(dtype))))


def one_hot(x, num_classes, axis=-1, dtype=None, sparse=False):
    """A one-hot encoding of integer labels along a new axis (default last);
    labels outside [0, num_classes) give all zeros. No gradient; built from
    comparisons, so it traces.

    >>> maas.ops.one_hot(maas.tensor([0, 2]), 3).tolist()
    [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    if sparse:
        raise NotImplementedError("one_hot: sparse=True is not supported (maas has no sparse tensors)")
    x = _t(x)
    fx = cast(x, "float32")
    nd = x.ndim + 1
    a = _ax(axis, nd)
    cls_shape = [1] * nd
    cls_shape[a] = int(num_classes)
    cls = _const(np.arange(int(num_classes)).reshape(cls_shape))
    out = _bin(_c.B_EQ, expand_dims(fx, a), cls)
    dt = _dt(dtype)
    return out if dt == np.float32 else cast(out, str(dt))


def full(shape, fill_value, dtype=None):
    """A tensor of ``shape`` filled with ``fill_value`` (float32 by default).

    >>> maas.ops.full((2,), 7.0).tolist()
    [7.0, 7.0]
    """
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    return Tensor(np.full(shape, fill_value, dtype=_dt(dtype)))


def full_like(x, fill_value, dtype=None):
    """A tensor of x's shape (and dtype unless given) filled with fill_value.

    >>> maas.ops.full_like(maas.tensor([1.0, 2.0]), 3.0).tolist()
    [3.0, 3.0]
    """
    x = _t(x)
    return full(tuple(x.shape), fill_value, dtype if dtype is not None else str(x.dtype))


def zeros_like(x, dtype=None):
    """Zeros of x's shape (and dtype unless given).

    >>> maas.ops.zeros_like(maas.tensor([1.0, 2.0])).tolist()
    [0.0, 0.0]
    """
    return full_like(x, 0, dtype)


def ones_like(x, dtype=None):
    """Ones of x's shape (and dtype unless given).

    >>> maas.ops.ones_like(maas.tensor([1.0, 2.0])).tolist()
    [1.0, 1.0]
    """
    return full_like(x, 1, dtype)


del math
