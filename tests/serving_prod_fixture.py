"""Models for the production-serving tests (a test helper, not part of maas).

:func:`save_two` saves a real functional maas model with two named inputs
(``a``: 3 features, ``b``: 2) and a dict of two outputs (``probs``: a
softmax over 4 classes, ``score``: one value) as
``REPO/<name>/<version>/model.maas``; the server loads it with its
default loader. :func:`load_ids` is a loader for folders holding
``ids.npz``: an embedding table looked up by INT64 ids with a BOOL mask
(a model taking integers, as a text model does), answering FP32 sums, the
INT64 argmax, a BOOL and the ids themselves (so a value over 2**53 shows
whether it went through float); any other folder goes to the default
loader.
"""
from __future__ import annotations

import os

import numpy as np

import maas
from maas.serving.model import ServedModel, default_loader

A, B, CLASSES = 3, 2, 4


def build_two(seed: int, dict_inputs: bool = False):
    """The two-input model; ``dict_inputs``: built as Model({"a": a, "b": b}, ...)."""
    rng = np.random.default_rng(seed)
    a = maas.Input((A,), name="a")
    b = maas.Input((B,), name="b")
    h = maas.layers.Dense(8, activation="relu", name="hidden")(maas.layers.Concatenate()([a, b]))
    probs = maas.layers.Dense(CLASSES, activation="softmax", name="probs")(h)
    score = maas.layers.Dense(1, name="score")(h)
    m = maas.Model({"a": a, "b": b} if dict_inputs else [a, b], {"probs": probs, "score": score},
                   name=f"two{seed}")
    m.set_weights([rng.normal(0, 0.7, w.shape).astype(np.float32) for w in m.get_weights()])
    return m


def save_two(repo: str, name: str, version: int, seed: int, labels=None, dict_inputs=False) -> str:
    path = maas.saving.save_to_repository(build_two(seed, dict_inputs), repo, name, version)
    if labels is not None:
        with open(os.path.join(os.path.dirname(path), "labels.txt"), "w") as f:
            f.write("\n".join(labels) + "\n")
    return path


def save_ids(repo: str, name: str, version: int, seed: int, vocab: int = 50, dim: int = 4) -> str:
    d = os.path.join(repo, name, str(version))
    os.makedirs(d, exist_ok=True)
    table = np.random.default_rng(seed).normal(size=(vocab, dim)).astype(np.float32)
    np.savez(os.path.join(d, "ids.npz"), table=table)
    return d


def ids_model(table: np.ndarray, name="ids", version=1) -> ServedModel:
    def predict(xs):
        ids, mask = xs
        assert ids.dtype == np.int64 and mask.dtype == np.bool_, (ids.dtype, mask.dtype)
        rows = table[np.clip(ids, 0, len(table) - 1)] * mask[..., None]
        s = rows.sum(axis=1).astype(np.float32)
        return {"emb_sum": s, "argmax": np.argmax(s, axis=1).astype(np.int64),
                "any": mask.any(axis=1, keepdims=True), "ids_echo": ids}

    return ServedModel(name, version, predict, thread_safe=True,
                       inputs=[("ids", "INT64", (3,)), ("mask", "BOOL", (3,))],
                       outputs=[("emb_sum", "FP32", (table.shape[1],)), ("argmax", "INT64", ()),
                                ("any", "BOOL", (1,)), ("ids_echo", "INT64", (3,))])


def load_ids(path: str):
    npz = os.path.join(path, "ids.npz")
    if os.path.isdir(path) and os.path.exists(npz):
        return ids_model(np.load(npz)["table"])
    return default_loader(path)
