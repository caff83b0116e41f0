"""Sparse weights in a model file: a float32 weight whose elements are
mostly zeros is stored as a bitmask (one bit per element, NumPy's packbits,
big bit order) and its nonzero values, under ``sparse/<name>/bitmask`` and
``sparse/<name>/values``; the metadata ``maas.sparse_weights`` maps each
name to its shape. Zeros are found by their bits (``-0.0`` is kept as a
value), so decoding gives back the same bits."""
from __future__ import annotations

import json

import numpy as np

from ..errors import ModelFormatError

SPARSE = "sparse/"
SPARSE_KEY = "maas.sparse_weights"
MIN_SPARSITY = 0.5   # below this, a bitmask plus values is not smaller than the dense tensor
MIN_SIZE = 256


def encode(tensors: dict, metadata: dict) -> None:
    """Replaces, in place, each sparse enough float32 ``weights/...`` tensor
    by its bitmask and values."""
    shapes = {}
    for name in list(tensors):
        if not name.startswith("weights/"):
            continue
        a = np.asarray(tensors[name])
        if a.dtype != np.float32 or a.size < MIN_SIZE:
            continue
        nz = np.ascontiguousarray(a).reshape(-1).view(np.uint32) != 0
        if 1.0 - nz.mean() < MIN_SPARSITY:
            continue
        key = SPARSE + name[len("weights/"):]
        tensors[key + "/bitmask"] = np.packbits(nz)
        tensors[key + "/values"] = np.ascontiguousarray(a.reshape(-1)[nz])
        shapes[name] = list(a.shape)
        del tensors[name]
    if shapes:
        metadata[SPARSE_KEY] = json.dumps(shapes)


def decode(tensors: dict, metadata: dict, path) -> None:
    """The inverse of :func:`encode`, in place (ModelFormatError when the
    sparse tensors do not fit their shapes)."""
    from ..tensor import Tensor

    raw = metadata.get(SPARSE_KEY)
    stored = [k for k in tensors if k.startswith(SPARSE)]
    if raw is None:
        if stored:
            raise ModelFormatError(f"{path}: sparse tensors {stored[:3]} without the "
                                   f"{SPARSE_KEY!r} metadata that gives their shapes")
        return
    try:
        shapes = json.loads(raw)
        assert isinstance(shapes, dict)
    except (ValueError, AssertionError):
        raise ModelFormatError(f"{path}: the metadata {SPARSE_KEY!r} is not a JSON object") from None
    for name, shape in shapes.items():
        key = SPARSE + name[len("weights/"):]
        mask, values = tensors.pop(key + "/bitmask", None), tensors.pop(key + "/values", None)
        if mask is None or values is None:
            raise ModelFormatError(f"{path}: sparse weight {name!r} lacks its bitmask or values")
        n = int(np.prod(shape))
        bits = np.unpackbits(np.asarray(mask, np.uint8))
        if len(bits) < n or len(bits) > n + 7 or values.dtype != "float32":
            raise ModelFormatError(f"{path}: sparse weight {name!r}: a bitmask of {len(bits)} bits "
                                   f"or {values.dtype} values do not fit shape {tuple(shape)}")
        nz = bits[:n].astype(bool)
        if int(nz.sum()) != values.size:
            raise ModelFormatError(f"{path}: sparse weight {name!r}: the bitmask marks "
                                   f"{int(nz.sum())} values, the file holds {values.size}")
        dense = np.zeros(n, np.float32)
        dense[nz] = np.asarray(values)
        tensors[name] = Tensor(dense.reshape(shape))
    left = [k for k in tensors if k.startswith(SPARSE)]
    if left:
        raise ModelFormatError(f"{path}: unexpected sparse tensors {left[:3]}")
