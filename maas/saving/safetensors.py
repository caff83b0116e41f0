"""maas's model file: the safetensors layout, read and written by maas's C core.

A file is an 8-byte little-endian header length, a JSON header naming each
tensor's dtype, shape and byte offsets (plus a ``__metadata__`` object of
string -> string), then the raw little-endian data. Any safetensors reader
reads a maas file, and maas reads any safetensors file whose tensors have
dtypes maas has: F32, I32, I64, I8, U8 and BOOL (float32, int32, int64,
int8, uint8, bool). Other dtypes (F16, BF16, F64, ...) raise
ModelFormatError naming the dtype.

maas adds the SHA-256 of the data section to the metadata
(``maas.data_sha256``) and checks it on load, so a corrupted file is caught
rather than silently giving wrong predictions.

>>> import numpy as np, tempfile, os
>>> from maas.saving import save_tensors, load_tensors
>>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
>>> save_tensors(path, {"kernel": np.eye(2, dtype=np.float32)}, {"note": "hi"})
>>> tensors, metadata = load_tensors(path)
>>> tensors["kernel"].numpy().tolist(), metadata["note"]
([[1.0, 0.0], [0.0, 1.0]], 'hi')

Loading with ``mmap=True`` (the default) maps the file and wraps the tensors
around the mapping without copying, so opening a large model is nearly free
and processes that load the same file share its pages. The mapping is
private and copy-on-write: writing to a loaded tensor (e.g. training it
further) copies the touched pages into the process and never changes the
file. Do not truncate or rewrite a file in place while it is mapped (maas's
own saves replace files by renaming, which is safe); ``mmap=False`` copies
the data into memory instead.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Mapping

import numpy as np

from .. import _core
from ..errors import ModelFormatError
from ..tensor import Tensor

__all__ = ["save_tensors", "load_tensors", "verify_file", "data_sha256", "CHECKSUM_KEY",
           "FORMAT_VERSION_KEY", "MAAS_VERSION_KEY", "CONFIG_KEY", "TRAINING_CONFIG_KEY"]

#: metadata keys maas writes (values are strings, as safetensors requires)
CHECKSUM_KEY = "maas.data_sha256"
FORMAT_VERSION_KEY = "maas.format_version"
MAAS_VERSION_KEY = "maas.version"
CONFIG_KEY = "maas.config"
TRAINING_CONFIG_KEY = "maas.training_config"

PathLike = "str | os.PathLike[str]"


#: the NumPy dtypes a model file holds (safetensors F32, I32, I64, I8, U8, BOOL)
FILE_DTYPES = ("float32", "int32", "int64", "int8", "uint8", "bool")


def _as_tensor(name: str, value) -> Tensor:
    if isinstance(value, Tensor):
        return value
    arr = np.asarray(value)
    if arr.dtype.kind in "fiub" and arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    if arr.dtype.name not in FILE_DTYPES:
        raise TypeError(f"tensor {name!r} has dtype {arr.dtype}; maas model files hold "
                        f"{', '.join(FILE_DTYPES)} tensors: convert it first, e.g. with "
                        f".astype(np.float32)")
    return Tensor(np.asarray(arr, order="C"))  # keeps 0-d arrays 0-d


def _file_order(item) -> tuple:
    """Larger elements first, then by name: every tensor then starts at a
    multiple of its element size in the data section, so a mapped load
    wraps each one without a copy (a file of one dtype is simply by name)."""
    name, t = item
    return (-np.dtype(t.dtype).itemsize, name)


def data_sha256(tensors) -> str:
    """The hex SHA-256 of the tensors' bytes back to back, in the given order:
    for a loaded dict (which is in file order) that is the data section."""
    h = hashlib.sha256()
    for t in tensors:
        if t.size:  # (an empty view cannot be cast; it adds no bytes)
            h.update(memoryview(t).cast("B"))
    return h.hexdigest()


def save_tensors(path: PathLike, tensors: Mapping[str, object],
                 metadata: Mapping[str, str] | None = None) -> None:
    """Writes ``tensors`` (name -> Tensor or float32 array) to a safetensors
    file, atomically: the file is written under a temporary name in the same
    folder, flushed to disk and renamed over ``path``, so an interrupted save
    leaves any earlier file whole.

    Tensors may be float32, int32, int64, int8, uint8 or bool; they are
    stored by element size (largest first, so that each stays aligned for a
    zero-copy mapped load) and then by name; ``metadata`` (str -> str) goes into
    the header's ``__metadata__`` together with the data's SHA-256 under
    ``maas.data_sha256``.

    >>> save_tensors("w.safetensors", {"b": np.zeros(3, np.float32)})  # doctest: +SKIP
    """
    if not isinstance(tensors, Mapping):
        raise TypeError(f"tensors must be a dict of name -> tensor, received {type(tensors).__name__}")
    meta: dict[str, str] = {}
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"metadata keys and values must be strings (safetensors stores only "
                            f"strings; encode other values with json.dumps), received {k!r}: "
                            f"{type(v).__name__}")
        meta[k] = v
    if CHECKSUM_KEY in meta:
        raise ValueError(f"{CHECKSUM_KEY!r} is reserved: maas computes the checksum itself")
    items = []
    for name in tensors:
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be strings, received {name!r}")
        items.append((name, _as_tensor(name, tensors[name])))
    items.sort(key=_file_order)
    meta[CHECKSUM_KEY] = data_sha256(t for _, t in items)
    _core.save_safetensors(os.fspath(path), items, json.dumps(meta, sort_keys=True))


def _check_sum(tensors: dict, expected: str, path) -> None:
    if not (isinstance(expected, str) and len(expected) == 64
            and all(c in "0123456789abcdef" for c in expected)):
        raise ModelFormatError(f"{os.fspath(path)}: the {CHECKSUM_KEY} in the metadata is not a "
                               f"SHA-256 hex digest: {expected[:80]!r}")
    actual = data_sha256(tensors.values())
    if actual != expected:
        raise ModelFormatError(f"{os.fspath(path)}: checksum mismatch: the data section's SHA-256 "
                               f"is {actual} but the header records {expected}; the file is "
                               f"corrupt (load with verify=False to read it anyway)")


def load_tensors(path: PathLike, mmap: bool = True, verify: bool = True
                 ) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Reads a safetensors file: ``(dict name -> Tensor in file order, metadata)``.

    Every malformed file raises :class:`maas.errors.ModelFormatError` saying
    what is wrong; nothing in the file is executed. With ``verify=True`` the
    data's SHA-256 is checked when the metadata records one (files written
    by other tools have none). With ``mmap=True`` the tensors share the
    file's pages (private, copy-on-write); ``mmap=False`` copies.

    >>> tensors, metadata = load_tensors("w.safetensors")  # doctest: +SKIP
    """
    try:
        tensors, meta_json = _core.load_safetensors(os.fspath(path), mmap=bool(mmap))
    except ModelFormatError as e:  # say which file
        raise ModelFormatError(f"{os.fspath(path)}: {e}") from None
    metadata = json.loads(meta_json)
    if verify and CHECKSUM_KEY in metadata:
        _check_sum(tensors, metadata[CHECKSUM_KEY], path)
    return tensors, metadata


def verify_file(path: PathLike, require_checksum: bool = True, encryption_key=None
                ) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Checks a file's structure and its SHA-256; ModelFormatError when either
    is wrong, or when ``require_checksum`` and the file records none.

    An encrypted file (``maas.saving.encryption``) records no SHA-256 of its
    plain data; its GCM tag authenticates header and data instead, which
    needs the key: ``encryption_key`` (or ``MAAS_MODEL_KEY`` /
    ``MAAS_MODEL_KEY_FILE``). With it the file is decrypted in memory and
    the tag checked (the decrypted tensors are returned); without it
    ModelFormatError says the file is encrypted and needs its key (a
    structure-only check would not prove the data intact)."""
    tensors, metadata = load_tensors(path, mmap=True, verify=True)
    from .encryption import ENCRYPTION_KEY, read_model_file, resolve_encryption

    if ENCRYPTION_KEY in metadata:
        if resolve_encryption(encryption_key) is None:
            raise ModelFormatError(
                f"{os.fspath(path)}: the file is encrypted (its data is authenticated by its "
                f"AES-256-GCM tag, not a SHA-256): pass encryption_key= (or set MAAS_MODEL_KEY "
                f"or MAAS_MODEL_KEY_FILE) to verify it")
        tensors, metadata, _ = read_model_file(path, False, encryption_key)
        return tensors, metadata
    if require_checksum and CHECKSUM_KEY not in metadata:
        raise ModelFormatError(f"{os.fspath(path)}: the metadata has no {CHECKSUM_KEY} to verify "
                               f"the data against (not written by maas?)")
    return tensors, metadata
