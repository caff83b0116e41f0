"""Turning request JSON into checked float32 arrays, and arrays back into
JSON, with an error that says what is wrong for every bad input."""
from __future__ import annotations

import json
import math
import re

import numpy as np

from .errors import ServingError

# Open Inference Protocol datatypes -> little-endian NumPy dtypes
DATATYPES = {
    "BOOL": np.dtype("?"), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}


try:  # optional: about 10x faster than json for these payloads
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None


_ZEROS = bytes.maketrans(b"123456789", b"000000000")
_RUN = b"0" * 19


def _long_integer(body: bytes) -> bool:
    """Whether the body has an integer literal of 19 or more digits (a run
    of digits that is not the fraction or exponent of a float: float reprs
    such as -0.0012345678901234567 are common). bytes.find on a copy with
    every digit made 0 scans at C speed; a regex takes ~40 ms on 700 kB."""
    t = body.translate(_ZEROS)
    i = t.find(_RUN)
    while i != -1:
        j = i + len(_RUN)
        while t[j:j + 1] == b"0":
            j += 1
        before = t[i - 1:i] if i else b""
        if before == b"-":
            before = t[i - 2:i - 1] if i > 1 else b""
        if before not in (b".", b"e", b"E", b"+") and t[j:j + 1] not in (b".", b"e", b"E"):
            return True
        i = t.find(_RUN, j)
    return False


# deeper nesting than this is refused before NumPy sees it (NumPy's own
# limit is 64 dimensions; no model here takes more than a few)
MAX_DIMS = 32
# a shape's dimensions and element count must fit in this
MAX_ELEMENTS = 2 ** 40


def dumps(obj) -> bytes:
    """Valid JSON bytes, never a bare NaN or Infinity (the views turn
    non-finite outputs into null first, see :func:`json_values`). With
    orjson when it is installed."""
    if _orjson is not None:
        try:
            return _orjson.dumps(obj)
        except TypeError:  # e.g. an int over 64 bits
            pass
    return json.dumps(obj, allow_nan=False).encode()


def json_values(y: np.ndarray, flat: bool = False) -> tuple[list, bool]:
    """An output array as JSON lists, and whether it held NaN or infinity;
    those become null (JSON has no NaN), and the views add a flag saying so."""
    y = y.ravel() if flat else y
    finite = np.isfinite(y)
    if finite.all():
        return y.tolist(), False
    obj = y.astype(object)
    obj[~finite] = None
    return obj.tolist(), True


def parse_json(body: bytes) -> dict:
    """The request body as a JSON object, whatever its Content-Type said."""
    if not body:
        raise ServingError(400, "the request body is empty; send a JSON object")
    obj = None
    if _orjson is not None and not _long_integer(body):
        # orjson refuses what json takes (NaN literals, UTF-16, 1e400):
        # anything it refuses goes to json, which also words the errors. It
        # reads an integer beyond 64 bits as a float where json keeps it an
        # int, so a body with a run of 19 or more digits goes to json too.
        try:
            obj = _orjson.loads(body)
        except (ValueError, TypeError, RecursionError):
            obj = None
    try:
        if obj is None:
            obj = json.loads(body)
    except UnicodeDecodeError:
        raise ServingError(400, "the request body is not UTF-8 JSON") from None
    except json.JSONDecodeError as e:
        raise ServingError(400, f"the request body is not valid JSON: {e.msg} at line {e.lineno} "
                                f"column {e.colno}") from None
    except RecursionError:
        raise ServingError(400, "the request body is nested too deeply") from None
    except ValueError as e:  # e.g. an integer over Python's 4300-digit limit
        raise ServingError(400, f"the request body holds a value that cannot be read: "
                                f"{str(e)[:200]}") from None
    if not isinstance(obj, dict):
        raise ServingError(400, f"the request body must be a JSON object, received a JSON "
                                f"{_jtype(obj)}")
    return obj


def _jtype(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def check_fields(obj: dict, where: str, required=(), optional=()):
    for k in required:
        if k not in obj:
            raise ServingError(400, f"{where} is missing the field {k!r}")
    allowed = set(required) | set(optional)
    unknown = [k for k in obj if k not in allowed]
    if unknown:
        raise ServingError(400, f"{where} has an unknown field {unknown[0]!r}; allowed fields: "
                                f"{', '.join(sorted(allowed))}")


def _find_bad(data, path="data"):
    """The first non-number in nested lists, for the error message."""
    stack = [(data, path)]
    while stack:
        v, p = stack.pop()
        if isinstance(v, list):
            for i in range(len(v) - 1, -1, -1):
                stack.append((v[i], f"{p}[{i}]"))
        elif v is None or isinstance(v, (str, dict)) or not isinstance(v, (int, float)):
            return p, _jtype(v)
    return None


def _nested_shape_problem(data, path="data"):
    """Where a nested list is ragged (depth first, without recursion)."""
    stack = [(data, path)]
    while stack:
        v, p = stack.pop()
        if not isinstance(v, list) or not v:
            continue
        kinds = {isinstance(e, list) for e in v}
        if len(kinds) > 1:
            return f"{p} mixes lists and numbers"
        if kinds == {True}:
            lens = {len(e) for e in v}
            if len(lens) > 1:
                return f"{p} has rows of different lengths {sorted(lens)[:4]}"
            for i in range(len(v) - 1, -1, -1):
                stack.append((v[i], f"{p}[{i}]"))
    return None


def _depth(data) -> int:
    """How deep the first elements of nested lists go."""
    d = 0
    while isinstance(data, list):
        d += 1
        if d > MAX_DIMS or not data:
            break
        data = data[0]
    return d


def to_array(data, what: str = "data", datatype: str | None = None, allow_bool: bool = False) -> np.ndarray:
    """Nested JSON lists of numbers -> an ndarray, refusing strings, nulls,
    objects and ragged lists (true/false are taken as 1/0, as NumPy does)."""
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        data = [data]
    if not isinstance(data, list):
        raise ServingError(400, f"{what} must be an array of numbers, received a JSON {_jtype(data)}")
    if _depth(data) > MAX_DIMS:
        raise ServingError(400, f"{what} is nested more than {MAX_DIMS} lists deep; send an array "
                                f"of shape (batch, features...)")
    try:
        arr = np.asarray(data)
    except (ValueError, OverflowError, RecursionError):
        prob = _nested_shape_problem(data, what)
        raise ServingError(400, f"{what} is a ragged nested list: {prob}" if prob else
                                f"{what} is not a rectangular array of numbers") from None
    if arr.dtype.kind == "b":  # JSON true/false count as 1/0, as in NumPy
        return arr
    if arr.dtype.kind not in "iuf" or arr.dtype == object:
        bad = _find_bad(data, what)
        if bad is not None:
            p, t = bad
            raise ServingError(400, f"{what} must hold numbers only; {p} is a {t}")
        prob = _nested_shape_problem(data, what)
        if prob:
            raise ServingError(400, f"{what} is a ragged nested list: {prob}")
        raise ServingError(400, f"{what} is not a rectangular array of numbers (a number out of range?)")
    return arr


def check_values(arr: np.ndarray, what: str, allow_nan: bool, datatype: str | None = None) -> np.ndarray:
    """Converts to float32, refusing NaN/infinity unless allowed and
    values that a datatype cannot hold."""
    if datatype is not None and datatype != "BOOL" and arr.dtype.kind == "f" and DATATYPES[datatype].kind in "iu":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ServingError(400, f"{what}: datatype {datatype} needs integers, the data has "
                                    f"fractional or non-finite values")
    if arr.dtype.kind in "iu" and datatype is not None and DATATYPES.get(datatype, arr.dtype).kind in "iu":
        info = np.iinfo(DATATYPES[datatype])
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise ServingError(400, f"{what}: a value is out of range for datatype {datatype}")
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(np.float32, copy=False)
    if arr.dtype.kind == "f" and not allow_nan:
        finite = np.isfinite(arr)
        if not finite.all():
            idx = tuple(int(i) for i in np.argwhere(~finite)[0])
            v = arr[idx]
            kind = "NaN" if math.isnan(v) else "infinity"
            raise ServingError(400, f"{what} holds {kind} at index {list(idx)}; NaN and infinity are "
                                    f"refused (set allow_nan in the model's config to accept them)")
    if not allow_nan and arr.dtype.kind == "f" and arr.dtype.itemsize > 4:
        if not np.isfinite(out).all():
            raise ServingError(400, f"{what} holds a value too large for float32")
    return np.ascontiguousarray(out)


def shape_text(feature_shape) -> str:
    return "(batch, " + ", ".join("any" if d is None else str(d) for d in feature_shape) + ")"


def check_rows(arr: np.ndarray, feature_shape: tuple, what: str, max_rows: int) -> np.ndarray:
    """arr must be (batch >= 1, *feature_shape)."""
    ok = arr.ndim == len(feature_shape) + 1 and all(
        d is None or d == a for d, a in zip(feature_shape, arr.shape[1:]))
    if not ok:
        hint = ""
        if arr.shape == tuple(feature_shape):
            hint = " (a single row must still be wrapped in a list: [[...]])"
        raise ServingError(400, f"{what} has shape {tuple(arr.shape)}, the model expects "
                                f"{shape_text(feature_shape)}{hint}")
    if arr.shape[0] == 0:
        raise ServingError(400, f"{what} has no rows; send at least one row of shape "
                                f"{tuple(feature_shape)}")
    if arr.shape[0] > max_rows:
        raise ServingError(400, f"{what} has {arr.shape[0]} rows, over this model's limit of "
                                f"{max_rows} rows per request; split the batch")
    return arr


def parse_shape(shape, what: str) -> tuple:
    """A V2 tensor shape: at most MAX_DIMS non-negative integers whose
    product (the element count, computed exactly) is at most MAX_ELEMENTS."""
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                             for d in shape):
        raise ServingError(400, f"{what}.shape must be a list of non-negative integers, received "
                                f"{json.dumps(shape)[:100]}")
    if len(shape) > MAX_DIMS:
        raise ServingError(400, f"{what}.shape has {len(shape)} dimensions, more than {MAX_DIMS}")
    if any(d > MAX_ELEMENTS for d in shape) or math.prod(shape) > MAX_ELEMENTS:
        raise ServingError(400, f"{what}.shape {json.dumps(shape)[:100]} is too large: at most "
                                f"{MAX_ELEMENTS} elements (and the data must hold all of them)")
    return tuple(shape)
