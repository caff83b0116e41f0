"""Text models: a sentence encoder served with string (``BYTES``) inputs.

A repository version whose ``model.maas`` holds a SentenceEmbeddingModel
(what :meth:`maas.applications.SentenceEncoder.save` and
``maas.saving.save_to_repository(encoder, repo, name)`` write, with
``tokenizer.json`` and ``sentence_encoder.json`` beside it) is loaded by
the repository's loader as a :class:`~maas.applications.SentenceEncoder`
and served by :func:`text_model`: one input ``text`` (BYTES, one string per
row, V2 shape ``[-1]``) and one output ``embedding`` (FP32 ``[-1, hidden]``).
The server calls ``SentenceEncoder.encode`` on the strings of a (dynamic)
batch: the tokenizer truncates at ``max_seq_length`` as sentence-transformers
does and each encode batch is padded to its longest sentence.

Strings arrive as V2 JSON ``data`` (a list of strings), Triton's binary form
(each element a 4-byte little-endian length, then its UTF-8 bytes: the V2
binary extension and gRPC ``raw_input_contents``), gRPC ``bytes_contents``,
TF Serving's ``instances``/``inputs`` (strings, or ``{"b64": ...}``) and
``/predict``'s ``x``. :func:`strings` turns any of them into an object
array of ``str``, refusing with a 400 what is not UTF-8 text.

>>> import struct
>>> from maas.serving.model import TensorSpec
>>> spec = TensorSpec("text", "BYTES", ())
>>> raw = b"".join(struct.pack("<I", len(b)) + b for b in (b"hi", "\\u00e9t\\u00e9".encode()))
>>> strings(spec, "inputs[0]", "BYTES", [2], raw=raw).tolist()
['hi', 'été']
>>> strings(spec, "inputs[0]", "BYTES", [1], raw=b"\\x05\\x00\\x00\\x00hi")
Traceback (most recent call last):
maas.serving.errors.ServingError: inputs[0]: element 0 says 5 bytes, the binary data has 2 left
"""
from __future__ import annotations

import base64
import binascii
import math
import os
import struct

import numpy as np

from .codec import MAX_DIMS, _jtype, parse_shape
from .errors import ServingError
from .model import ServedModel, TensorSpec

__all__ = ["text_model", "strings", "as_text_model", "TEXT_INPUT", "EMBEDDING_OUTPUT"]

TEXT_INPUT = "text"
EMBEDDING_OUTPUT = "embedding"

_LEN = struct.Struct("<I")


def _is_sentence_model(obj) -> bool:
    from ..applications.bert import SentenceEmbeddingModel

    return isinstance(obj, SentenceEmbeddingModel)


def as_text_model(obj, path: str):
    """``obj`` as loaded from ``path`` (a version folder or its model.maas):
    a SentenceEmbeddingModel becomes the SentenceEncoder of its folder
    (tokenizer.json beside it); anything else is returned as it is."""
    if not _is_sentence_model(obj):
        return obj
    from ..applications.bert import SentenceEncoder

    folder = path if os.path.isdir(path) else os.path.dirname(path)
    return SentenceEncoder.from_saved(obj, folder)


def is_sentence_encoder(obj) -> bool:
    from ..applications.bert import SentenceEncoder

    return isinstance(obj, SentenceEncoder)


def text_model(encoder, name: str = "model", version: int = 1) -> ServedModel:
    """A :class:`ServedModel` of a SentenceEncoder: ``text`` (BYTES, one
    string per row) -> ``embedding`` (FP32, (rows, hidden)).

    >>> m = text_model(enc)                                   # doctest: +SKIP
    >>> m.predict(np.array(["a sentence"], dtype=object)).shape   # doctest: +SKIP
    (1, 384)
    """
    hidden = int(encoder.encoder.config["hidden_size"])

    def predict(texts):
        return encoder.encode(texts.tolist())

    m = ServedModel(name, version, predict, inputs=[TensorSpec(TEXT_INPUT, "BYTES", ())],
                    outputs=[TensorSpec(EMBEDDING_OUTPUT, "FP32", (hidden,))])
    m.source_object = encoder
    return m


def _text(s: str, where: str) -> str:
    """``s`` if it can be UTF-8 (JSON's \\ud800 escapes make lone surrogates)."""
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ServingError(400, f"{where} is not valid Unicode text (a lone surrogate at "
                                    f"character {e.start})") from None
    return s


def _utf8(b: bytes, where: str) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ServingError(400, f"{where} is not valid UTF-8 (byte {e.start} of {len(b)}: "
                                f"{b[e.start:e.start + 4]!r})") from None


def _rows_shape(shape, where: str, spec: TensorSpec) -> tuple:
    """A text input's V2 shape: [batch] or [batch, 1] (Triton's dims [1])."""
    if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
        return shape
    raise ServingError(400, f"{where}: input {spec.name!r} takes one string per row, shape "
                            f"[batch] (or [batch, 1]); received shape {list(shape)}")


def _from_raw(raw: bytes, count: int, where: str) -> list:
    """Triton's BYTES form: ``count`` elements, each a 4-byte little-endian
    length and its bytes, filling ``raw`` exactly."""
    n = len(raw)
    if count * 4 > n:
        raise ServingError(400, f"{where}: the shape gives {count} strings, which need at least "
                                f"{count * 4} bytes (a 4-byte length each); the binary data has {n}")
    out, off = [], 0
    for i in range(count):
        if off + 4 > n:
            raise ServingError(400, f"{where}: the binary data ends inside the 4-byte length of "
                                    f"element {i} (of {count})")
        (k,) = _LEN.unpack_from(raw, off)
        off += 4
        if k > n - off:
            raise ServingError(400, f"{where}: element {i} says {k} bytes, the binary data has "
                                    f"{n - off} left")
        out.append(_utf8(raw[off:off + k], f"{where}: element {i}"))
        off += k
    if off != n:
        raise ServingError(400, f"{where}: {n - off} bytes of binary data are left after the "
                                f"{count} strings the shape gives")
    return out


def _from_json(data, where: str, b64: bool, flat: bool = False) -> list:
    """Nested JSON lists of strings, flattened in row-major order
    (``{"b64": ...}`` elements, TF Serving's binary strings, when ``b64``;
    ``flat``: one string per element, no nested list)."""
    if isinstance(data, str):
        raise ServingError(400, f"{where} must be a list of strings, received a single string "
                                f"(wrap it: [\"...\"])")
    if not isinstance(data, list):
        raise ServingError(400, f"{where} must be a list of strings, received a JSON {_jtype(data)}")
    out = []
    stack = [(data, where, 1)]
    while stack:
        v, p, depth = stack.pop()
        if isinstance(v, list):
            if flat and depth > 1:
                raise ServingError(400, f"{where} must be a list of strings, one per row; {p} is "
                                        f"a list of {len(v)}")
            if depth > MAX_DIMS:
                raise ServingError(400, f"{where} is nested more than {MAX_DIMS} lists deep")
            stack.extend((v[i], f"{p}[{i}]", depth + 1) for i in range(len(v) - 1, -1, -1))
        elif isinstance(v, str):
            out.append(_text(v, p))
        elif b64 and isinstance(v, dict) and set(v) == {"b64"} and isinstance(v["b64"], str):
            try:
                b = base64.b64decode(v["b64"], validate=True)
            except (binascii.Error, ValueError):
                raise ServingError(400, f"{p}.b64 is not valid base64") from None
            out.append(_utf8(b, p))
        else:
            raise ServingError(400, f"{where} must hold strings only (a text model's input); "
                                    f"{p} is a JSON {_jtype(v)}")
    return out


def strings(spec: TensorSpec, where: str, datatype: str, shape, data=None, raw: bytes | None = None,
            elements=None, b64: bool = False) -> np.ndarray:
    """The (rows,) object array of ``str`` for text input ``spec`` from JSON
    ``data``, ``raw`` length-prefixed bytes or ``elements`` (gRPC
    ``bytes_contents``); ``shape`` None takes the JSON list's length."""
    if datatype != "BYTES":
        raise ServingError(400, f"{where}: input {spec.name!r} takes BYTES (strings: a text model), "
                                f"received datatype {datatype!r}")
    if shape is not None:
        shape = _rows_shape(parse_shape(shape if isinstance(shape, list) else list(shape), where),
                            where, spec)
        count = math.prod(shape)
    if raw is not None:
        vals = _from_raw(bytes(raw), count, where)
    elif elements is not None:
        if len(elements) != count:
            raise ServingError(400, f"{where}: shape {list(shape)} needs {count} strings, "
                                    f"bytes_contents has {len(elements)}")
        vals = [_utf8(b, f"{where}: element {i}") for i, b in enumerate(elements)]
    else:
        if shape is None:  # TF Serving / /predict rows: a string, or a row of one string
            if isinstance(data, list):
                data = [r[0] if isinstance(r, list) and len(r) == 1 else r for r in data]
            vals = _from_json(data, where, b64, flat=True)
        else:
            vals = _from_json(data, f"{where}.data", b64)
            if len(vals) != count:
                raise ServingError(400, f"{where}: shape {list(shape)} needs {count} strings, data "
                                        f"has {len(vals)}")
    if not vals:
        raise ServingError(400, f"{where} holds no strings; send at least one (one string per row)")
    arr = np.empty(len(vals), dtype=object)
    arr[:] = vals
    return arr
