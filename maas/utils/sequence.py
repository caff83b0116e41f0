"""``pad_sequences``: lists of token-id lists to one padded array, with
Keras's signature and rules.

>>> from maas.utils import pad_sequences
>>> pad_sequences([[1, 2, 3], [4, 5]])
array([[1, 2, 3],
       [0, 4, 5]], dtype=int32)
>>> pad_sequences([[1, 2, 3], [4, 5]], maxlen=2, padding="post", truncating="post")
array([[1, 2],
       [4, 5]], dtype=int32)
"""
from __future__ import annotations

import numpy as np


def pad_sequences(sequences, maxlen=None, dtype="int32", padding="pre", truncating="pre",
                  value=0.0) -> np.ndarray:
    """Pads (or truncates) each sequence to ``maxlen`` (the longest by
    default): ``padding``/``truncating`` "pre" (the default) acts at the
    start, "post" at the end; ``value`` fills. Sequences may hold scalars or
    equal-shaped arrays (the result is (n, maxlen) + that shape). String
    dtypes need an object or str ``dtype`` as in Keras."""
    if not hasattr(sequences, "__len__"):
        raise ValueError("`sequences` must be iterable.")
    if padding not in ("pre", "post"):
        raise ValueError(f'Padding type "{padding}" not understood')
    if truncating not in ("pre", "post"):
        raise ValueError(f'Truncating type "{truncating}" not understood')
    if maxlen is not None and (not isinstance(maxlen, (int, np.integer)) or maxlen < 0):
        raise ValueError(f"maxlen must be a non-negative integer or None, received maxlen={maxlen!r}")
    num_samples = len(sequences)
    lengths, sample_shape, flag = [], (), True
    for x in sequences:
        try:
            lengths.append(len(x))
            if flag and len(x):
                sample_shape = np.asarray(x).shape[1:]
                flag = False
        except TypeError as e:
            raise ValueError("`sequences` must be a list of iterables. Found non-iterable: "
                             f"{x!r}") from e
    if maxlen is None:
        maxlen = int(np.max(lengths)) if lengths else 0
    is_dtype_str = np.issubdtype(dtype, np.str_) or np.issubdtype(dtype, np.object_)
    if isinstance(value, str) and dtype is not object and not is_dtype_str:
        raise ValueError(f"`dtype` {dtype} is not compatible with `value`'s type: {type(value)}\n"
                         "You should set `dtype=object` for variable length strings.")
    x = np.full((num_samples, maxlen) + sample_shape, value, dtype=dtype)
    for idx, s in enumerate(sequences):
        if not len(s):
            continue
        trunc = s[-maxlen:] if truncating == "pre" else s[:maxlen]
        if maxlen == 0:
            continue
        trunc = np.asarray(trunc, dtype=dtype)
        if trunc.shape[1:] != sample_shape:
            raise ValueError(f"Shape of sample {trunc.shape[1:]} of sequence at position {idx} is "
                             f"different from expected shape {sample_shape}")
        if padding == "post":
            x[idx, :len(trunc)] = trunc
        else:
            x[idx, -len(trunc):] = trunc
    return x


__all__ = ["pad_sequences"]
