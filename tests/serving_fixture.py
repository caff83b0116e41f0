"""TEST FIXTURE for the serving tests, not part of maas.

Until ``maas.load_model`` and the model file exist, the serving tests need
a model that a gunicorn worker can build on its own, after fork. This module
is that stand-in: a small MLP whose weights are saved with ``numpy.savez``
into ``REPO/<name>/<version>/weights.npz`` and loaded by :func:`load_npz`,
which the server is told to use with ``MAAS_SERVING_LOADER=
serving_fixture:load_npz`` (or ``loader=load_npz``). The model runs real
maas computation: a Sequential model whose
``predict`` replays a traced plan (one C call with the GIL released), or the eager ops
(``maas.ops.dense/relu/softmax``). When ``maas.load_model`` lands, the
tests should save real model files and drop this module.
"""
from __future__ import annotations

import os
import time

import numpy as np

import maas

IN, HIDDEN, OUT = 4, 16, 3


def weights(seed: int, n_in: int = IN, hidden: int = HIDDEN, n_out: int = OUT) -> dict:
    rng = np.random.default_rng(seed)
    return {"w1": rng.normal(0, 0.5, (n_in, hidden)).astype(np.float32),
            "b1": rng.normal(0, 0.1, hidden).astype(np.float32),
            "w2": rng.normal(0, 0.5, (hidden, n_out)).astype(np.float32),
            "b2": rng.normal(0, 0.1, n_out).astype(np.float32)}


class EagerMLP:
    """dense -> relu -> dense -> softmax with maas's eager ops."""

    def __init__(self, w):
        self.w = {k: maas.Variable(v) for k, v in w.items()}
        self.input_shape = (None, w["w1"].shape[0])
        self.output_shape = (None, w["w2"].shape[1])

    def predict(self, x, verbose=0):
        w = self.w
        h = maas.ops.relu(maas.ops.dense(maas.tensor(np.asarray(x, np.float32)), w["w1"], w["b1"]))
        return np.asarray(maas.ops.softmax(maas.ops.dense(h, w["w2"], w["b2"])))


class PlanMLP:
    """The same network as a Sequential model: its predict replays a traced
    plan, one C call per forward pass."""

    def __init__(self, w, delay: float = 0.0):
        self.model = maas.Sequential([
            maas.Input((w["w1"].shape[0],)), maas.layers.Dense(w["w1"].shape[1], activation="relu"),
            maas.layers.Dense(w["w2"].shape[1], activation="softmax")])
        self.model.set_weights([w[k] for k in ("w1", "b1", "w2", "b2")])
        self.input_shape = (None, w["w1"].shape[0])
        self.output_shape = (None, w["w2"].shape[1])
        self.delay = delay

    def predict(self, x, verbose=0):
        if self.delay:
            time.sleep(self.delay)  # to hold requests in flight (drain tests)
        return self.model.predict(np.asarray(x, np.float32), batch_size=max(len(x), 1), verbose=0)


def save_version(repo: str, name: str, version: int, seed: int, config: dict | None = None) -> str:
    """Writes REPO/name/version/weights.npz, renaming a hidden folder into
    place so that a polling server never sees it half-written."""
    import json

    mdir = os.path.join(repo, name)
    os.makedirs(mdir, exist_ok=True)
    if config is not None:
        with open(os.path.join(mdir, "config.json"), "w") as f:
            json.dump(config, f)
    tmp = os.path.join(mdir, f".tmp-{version}")
    os.makedirs(tmp, exist_ok=True)
    np.savez(os.path.join(tmp, "weights.npz"), **weights(seed))
    final = os.path.join(mdir, str(version))
    os.rename(tmp, final)
    return final


def load_npz(path: str):
    """The loader hook: a version folder (or .npz file) -> a PlanMLP.
    ``MAAS_TEST_EAGER=1`` gives the eager-ops model instead;
    ``MAAS_TEST_DELAY=seconds`` slows each forward pass."""
    f = os.path.join(path, "weights.npz") if os.path.isdir(path) else path
    with np.load(f) as z:
        w = {k: z[k] for k in z.files}
    if os.environ.get("MAAS_TEST_EAGER") == "1":
        return EagerMLP(w)
    return PlanMLP(w, float(os.environ.get("MAAS_TEST_DELAY", "0") or 0))


def reference(seed: int, x) -> np.ndarray:
    """float64 NumPy forward pass of the same network, for checking."""
    w = {k: v.astype(np.float64) for k, v in weights(seed).items()}
    h = np.maximum(np.asarray(x, np.float64) @ w["w1"] + w["b1"], 0)
    z = h @ w["w2"] + w["b2"]
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)
