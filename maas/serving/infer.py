"""One inference request, whatever protocol carried it: named input
tensors checked against the model's specs (in their own dtype: integers and
booleans never pass through float), the requested outputs (with Triton's
classification extension) and the answer as ``(name, datatype, array)``.
The V2 HTTP view, TF Serving's and ``/predict`` forms and the gRPC service
all call :func:`infer`.

>>> import numpy as np
>>> from maas.serving.model import ServedModel
>>> m = ServedModel("m", 1, lambda x: x, (3,), (3,))
>>> feeds = {"input": tensor(m.inputs[0], "input", "FP32", (1, 3), data=[0.1, 0.7, 0.2])}
>>> classify(m.run(feeds)["output"], 2, None).tolist()
[[b'0.700000:1', b'0.200000:2']]
"""
from __future__ import annotations

import math
import struct
import time

import numpy as np

from .codec import DATATYPES, check_rows, check_values, parse_shape, to_array
from .errors import ServingError
from .model import ServedModel, TensorSpec, datatype_of

OUTPUT_PARAMETERS = ("binary_data", "classification")


def tensor(spec: TensorSpec, where: str, datatype: str, shape, data=None, raw: bytes | None = None,
           allow_nan: bool = False, raw_label: str = "the request carries", elements=None,
           b64: bool = False) -> np.ndarray:
    """The array for input ``spec`` from a request tensor (JSON ``data`` or
    ``raw`` little-endian bytes), in the spec's dtype. A BYTES (text) input
    takes strings: JSON strings, length-prefixed ``raw`` bytes or
    ``elements`` (gRPC bytes_contents); see :func:`maas.serving.text.strings`."""
    if spec.datatype == "BYTES":
        from .text import strings

        return strings(spec, where, datatype, shape, data=data, raw=raw, elements=elements, b64=b64)
    if datatype == "BYTES":
        raise ServingError(400, f"{where}.datatype 'BYTES' is not supported for input "
                                f"{spec.name!r} ({spec.datatype}: send numbers)")
    if datatype not in DATATYPES:
        raise ServingError(400, f"{where}.datatype {datatype!r} is not supported; use one of "
                                f"{', '.join(DATATYPES)}")
    if shape is not None:
        shape = parse_shape(shape if isinstance(shape, list) else list(shape), where)
        count = math.prod(shape)
    if raw is not None:
        need = count * DATATYPES[datatype].itemsize
        if len(raw) != need:
            raise ServingError(400, f"{where}: datatype {datatype} with shape {list(shape)} is "
                                    f"{need} bytes, {raw_label} {len(raw)}")
        arr = np.frombuffer(raw, dtype=DATATYPES[datatype]).reshape(shape)
    else:
        arr = to_array(data, f"{where}.data" if shape is not None else where, datatype)
        if shape is None:
            shape = arr.shape
        elif arr.size != count:
            raise ServingError(400, f"{where}: shape {list(shape)} needs {count} values, data has "
                                    f"{arr.size}")
        arr = arr.reshape(shape)
    kind = spec.dtype.kind
    if kind == "f":
        x = check_values(arr, where, allow_nan, datatype)
        return x if spec.dtype == x.dtype else x.astype(spec.dtype)
    if DATATYPES[datatype].kind not in "iub":
        raise ServingError(400, f"{where}: input {spec.name!r} takes {spec.datatype} (integers or "
                                f"booleans), received datatype {datatype}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ServingError(400, f"{where}: input {spec.name!r} takes {spec.datatype}; the data "
                                    f"has fractional values")
    if kind == "b":
        if arr.dtype.kind != "b" and arr.size and (arr.min() < 0 or arr.max() > 1):
            raise ServingError(400, f"{where}: input {spec.name!r} is BOOL; values must be "
                                    f"true/false or 0/1")
        return np.ascontiguousarray(arr.astype(bool))
    info = np.iinfo(spec.dtype)
    if arr.size and arr.dtype.kind != "b" and (arr.min() < info.min or arr.max() > info.max):
        raise ServingError(400, f"{where}: a value is out of range for input {spec.name!r} "
                                f"({spec.datatype})")
    return np.ascontiguousarray(arr.astype(spec.dtype))


def check_feeds(m: ServedModel, feeds: dict, max_rows: int, what=None) -> dict:
    """Every input given once, each (batch, *spec.shape), one batch size."""
    missing = [s.name for s in m.inputs if s.name not in feeds]
    unknown = [n for n in feeds if m.input(n) is None]
    if unknown:
        raise ServingError(400, f"unknown input {unknown[0]!r}; model {m.name!r} has the inputs "
                                f"{[s.name for s in m.inputs]}")
    if missing:
        raise ServingError(400, f"model {m.name!r} needs the inputs {[s.name for s in m.inputs]}; "
                                f"the request has no {missing[0]!r}")
    rows = None
    for s in m.inputs:
        w = what or s.name
        if what and len(m.inputs) > 1:
            w = f"{what}[{s.name!r}]"
        x = check_rows(feeds[s.name], s.shape, w, max_rows)
        if rows is not None and x.shape[0] != rows:
            raise ServingError(400, f"the inputs have different batch sizes ({rows} and "
                                    f"{x.shape[0]} rows for {s.name!r})")
        rows = x.shape[0]
    return feeds


def output_requests(m: ServedModel, want, binary_default: bool = False):
    """``[(spec, binary, class_count)]`` for the requested outputs (``want``:
    ``[(name, parameters)]``, or None for all of them)."""
    if want is None:
        return [(s, binary_default, 0) for s in m.outputs]
    out = []
    for i, (name, params) in enumerate(want):
        s = m.output(name)
        if s is None:
            raise ServingError(400, f"unknown output {name!r}; model {m.name!r} has the outputs "
                                    f"{[o.name for o in m.outputs]}")
        params = params or {}
        bad = [k for k in params if k not in OUTPUT_PARAMETERS]
        if bad:
            raise ServingError(400, f"outputs[{i}].parameters has {bad[0]!r}, which maas does not "
                                    f"support; supported: {', '.join(OUTPUT_PARAMETERS)}")
        k = params.get("classification", 0)
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ServingError(400, f"outputs[{i}].parameters.classification must be a "
                                    f"non-negative integer, received {k!r}")
        if k:
            fits = len(s.shape) == 1 and s.datatype != "BYTES" and (s.shape[0] or 2) >= 2
            if not fits:
                raise ServingError(400, f"output {name!r} has shape {list(s.shape)} per row; the "
                                        f"classification extension needs one score per class for "
                                        f"two or more classes, (batch, classes)")
        b = params.get("binary_data", binary_default)
        if not isinstance(b, bool):
            raise ServingError(400, f"outputs[{i}].parameters.binary_data must be true or false")
        out.append((s, b, k))
    return out


def classify(y: np.ndarray, k: int, labels) -> np.ndarray:
    """Triton's classification output: the top ``k`` classes of each row as
    ``b"score:index"`` (``b"score:index:label"`` with labels), best first,
    the score printed as C's ``%f``; shape ``(batch, min(k, classes))``."""
    y2 = y.reshape(len(y), -1)
    k = min(k, y2.shape[1])
    order = np.argsort(-y2.astype(np.float64), axis=1, kind="stable")[:, :k]
    out = np.empty((len(y2), k), dtype=object)
    for r in range(len(y2)):
        for j, c in enumerate(order[r]):
            s = f"{float(y2[r, c]):f}:{int(c)}"
            if labels is not None and c < len(labels):
                s += f":{labels[c]}"
            out[r, j] = s.encode()
    return out


def infer(lv, feeds: dict, requests, timing: list | None = None):
    """Runs ``feeds`` on a loaded version; ``[(name, datatype, array, binary)]``
    for the requested outputs."""
    t = time.perf_counter()
    y = lv.run(feeds, timing)
    out = []
    for s, binary, k in requests:
        v = y[s.name]
        if k:
            if v.ndim != 2:
                raise ServingError(400, f"output {s.name!r} has shape {list(v.shape)}; the "
                                        f"classification extension needs (batch, classes)")
            out.append((s.name, "BYTES", classify(v, k, lv.model.labels), binary))
        else:
            out.append((s.name, datatype_of(v.dtype), v, binary))
    if timing is not None:
        timing += (t, time.perf_counter())  # timing: queue, compute, start, end
    return out


def to_bytes(arr: np.ndarray, datatype: str) -> bytes:
    """A tensor's raw form: little-endian values, or for BYTES each element
    as a 4-byte little-endian length and its bytes."""
    if datatype == "BYTES":
        parts = []
        for e in arr.ravel():
            b = e if isinstance(e, bytes) else str(e).encode()
            parts.append(struct.pack("<I", len(b)))
            parts.append(b)
        return b"".join(parts)
    return np.ascontiguousarray(arr, dtype=DATATYPES[datatype]).tobytes()


def json_data(arr: np.ndarray, datatype: str):
    """A tensor's JSON form (flat) and whether it held NaN or infinity."""
    if datatype == "BYTES":
        return [e.decode("utf-8", "replace") if isinstance(e, bytes) else str(e)
                for e in arr.ravel()], False
    from .codec import json_values

    if arr.dtype.kind == "f":
        return json_values(arr, flat=True)
    return arr.ravel().tolist(), False
