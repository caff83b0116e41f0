"""A CNN with BatchNormalization served as it is saved: trained on digits as
8x8x1 images, saved into a repository, served by ``maas serve`` (gunicorn,
2 gevent workers) on loopback; V2 metadata shows the input shape
[-1, 8, 8, 1], and tritonclient[http] (JSON and binary tensors) gets the
in-process predictions bit for bit. The server is stopped, pass or fail."""
from __future__ import annotations

import numpy as np
import pytest

import maas
from serving_fixture import Server

th = pytest.importorskip("tritonclient.http")
pytest.importorskip("gunicorn")


def test_a_cnn_with_batch_normalization_serves_its_own_predictions(tmp_path):
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32).reshape(-1, 8, 8, 1)
    maas.utils.set_random_seed(0)
    L = maas.layers
    model = maas.Sequential([maas.Input((8, 8, 1)), L.Conv2D(8, 3, padding="same"),
                             L.BatchNormalization(), L.Activation("relu"), L.MaxPooling2D(),
                             L.Conv2D(16, 3, activation="relu"), L.GlobalAveragePooling2D(),
                             L.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:512], y[:512], epochs=2, batch_size=64, verbose=0)
    repo = str(tmp_path / "repo")
    maas.saving.save_to_repository(model, repo, "cnn")
    rows = x[1500:1507]
    want = model.predict(rows, verbose=0)
    s = Server(repo, str(tmp_path))
    try:
        c = th.InferenceServerClient(url=f"127.0.0.1:{s.port}")
        meta = c.get_model_metadata("cnn")
        (inp,) = meta["inputs"]
        assert inp["shape"] == [-1, 8, 8, 1] and inp["datatype"] == "FP32"
        for binary in (False, True):
            t = th.InferInput(inp["name"], list(rows.shape), "FP32")
            t.set_data_from_numpy(rows, binary_data=binary)
            out = meta["outputs"][0]["name"]
            r = c.infer("cnn", [t], outputs=[th.InferRequestedOutput(out, binary_data=binary)])
            assert np.array_equal(r.as_numpy(out), want)
    finally:
        s.stop()
