"""Every model shape against a real ``maas serve`` (gunicorn, 2 gevent
workers) on loopback: a functional model with two named inputs and a dict
of two outputs over V2 (tritonclient[http], JSON and binary), TF Serving's
row and columnar forms and ``/predict``; an integer/boolean-input model
whose INT64 and BOOL tensors never pass through float and whose outputs
keep their dtypes; metadata in V2's and TF Serving's formats; Triton's
classification extension with labels.txt, TF Serving's :classify and
:regress (and a 400 where the model does not fit); gzip and deflate bodies
with the size limit applied after decompression. Answers are compared
with the in-process predict of the same model files."""
from __future__ import annotations

import gzip
import json
import zlib

import numpy as np
import pytest
import requests

import maas
import serving_prod_fixture as pf
from serving_fixture import Server

pytest.importorskip("gunicorn")
rng = np.random.default_rng(11)
XA = rng.normal(size=(5, pf.A)).astype(np.float32)
XB = rng.normal(size=(5, pf.B)).astype(np.float32)
IDS = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 2 ** 62 + 1]], np.int64)
MASK = np.array([[True, False, True], [True, True, True], [False, True, True]])
LABELS = ["cat", "dog", "emu", "yak"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    r = str(tmp_path_factory.mktemp("repo"))
    pf.save_two(r, "two", 1, 3, labels=LABELS)
    pf.save_ids(r, "ids", 1, 4)
    pf.save_two(r, "twodict", 1, 5, dict_inputs=True)
    import serving_fixture as sf
    sf.save_model(r, "mlp", 1, 0)
    return r


@pytest.fixture(scope="module")
def srv(repo, tmp_path_factory):
    s = Server(repo, str(tmp_path_factory.mktemp("srv")), env={
        "MAAS_SERVING_LOADER": "serving_prod_fixture:load_ids"},
        extra=["--max-body-bytes", "200000"])
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def expect(repo):
    m = maas.load_model(f"{repo}/two/1/model.maas")
    return m.predict([XA, XB], verbose=0)


def test_two_inputs_tritonclient(srv, expect):
    import tritonclient.http as th

    c = th.InferenceServerClient(url=srv.url[len("http://"):])
    for binary in (False, True):
        ins = [th.InferInput("a", list(XA.shape), "FP32"), th.InferInput("b", list(XB.shape), "FP32")]
        ins[0].set_data_from_numpy(XA, binary_data=binary)
        ins[1].set_data_from_numpy(XB, binary_data=binary)
        r = c.infer("two", ins, outputs=[th.InferRequestedOutput("score", binary_data=binary)])
        np.testing.assert_array_equal(r.as_numpy("score"), expect["score"])
        assert r.as_numpy("probs") is None  # only the requested output
        r = c.infer("two", ins)
        np.testing.assert_array_equal(r.as_numpy("probs"), expect["probs"])
        np.testing.assert_array_equal(r.as_numpy("score"), expect["score"])
    md = c.get_model_metadata("two")
    assert md["inputs"] == [{"name": "a", "datatype": "FP32", "shape": [-1, 3]},
                            {"name": "b", "datatype": "FP32", "shape": [-1, 2]}]
    assert md["outputs"] == [{"name": "probs", "datatype": "FP32", "shape": [-1, 4]},
                             {"name": "score", "datatype": "FP32", "shape": [-1, 1]}]


def test_dict_input_model_file(srv, repo):
    """A model built with a dict of inputs saves, loads and serves by name."""
    m = maas.load_model(f"{repo}/twodict/1/model.maas")
    ref = m.predict({"a": XA, "b": XB}, verbose=0)
    r = requests.post(srv.url + "/models/twodict/predict",
                      json={"x": {"b": XB.tolist(), "a": XA.tolist()}}, timeout=30)
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(np.array(r.json()["predictions"]["probs"], np.float32), ref["probs"])
    np.testing.assert_array_equal(np.array(r.json()["predictions"]["score"], np.float32), ref["score"])


def test_two_inputs_tf_and_predict(srv, expect):
    rows = [{"a": XA[i].tolist(), "b": XB[i].tolist()} for i in range(len(XA))]
    r = requests.post(srv.url + "/v1/models/two:predict", json={"instances": rows}, timeout=30)
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    np.testing.assert_array_equal(np.array([p["probs"] for p in got], np.float32), expect["probs"])
    r = requests.post(srv.url + "/v1/models/two:predict",
                      json={"inputs": {"a": XA.tolist(), "b": XB.tolist()}}, timeout=30)
    np.testing.assert_array_equal(np.array(r.json()["outputs"]["score"], np.float32), expect["score"])
    r = requests.post(srv.url + "/models/two/predict",
                      json={"x": {"a": XA.tolist(), "b": XB.tolist()}}, timeout=30)
    np.testing.assert_array_equal(np.array(r.json()["predictions"]["probs"], np.float32), expect["probs"])
    r = requests.post(srv.url + "/models/two/predict", json={"x": XA.tolist()}, timeout=30)
    assert r.status_code == 400 and "2 inputs" in r.json()["error"]
    r = requests.post(srv.url + "/v1/models/two:predict", json={"instances": [{"a": [1, 2, 3]}]}, timeout=30)
    assert r.status_code == 400 and "'a', 'b'" in r.json()["error"]
    r = requests.post(srv.url + "/v1/models/two:predict",
                      json={"instances": [{"a": {"b64": "AAAA"}, "b": [1, 2]}]}, timeout=30)
    assert r.status_code == 400 and "b64" in r.json()["error"]


def test_tf_metadata_format(srv):
    r = requests.get(srv.url + "/v1/models/ids/metadata", timeout=30).json()
    sig = r["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["ids"]["dtype"] == "DT_INT64"
    assert sig["inputs"]["mask"]["dtype"] == "DT_BOOL"
    assert sig["inputs"]["ids"]["tensor_shape"] == {"dim": [{"size": "-1"}, {"size": "3"}],
                                                   "unknown_rank": False}
    assert sig["outputs"]["argmax"]["tensor_shape"]["dim"] == [{"size": "-1"}]


def test_integer_and_bool_inputs_keep_their_dtype(srv, repo):
    import tritonclient.http as th

    ref = pf.load_ids(f"{repo}/ids/1").run({"ids": IDS, "mask": MASK})
    c = th.InferenceServerClient(url=srv.url[len("http://"):])
    for binary in (True, False):
        ins = [th.InferInput("ids", list(IDS.shape), "INT64"), th.InferInput("mask", list(MASK.shape), "BOOL")]
        ins[0].set_data_from_numpy(IDS, binary_data=binary)
        ins[1].set_data_from_numpy(MASK, binary_data=binary)
        r = c.infer("ids", ins)
        assert r.as_numpy("ids_echo").dtype == np.int64
        np.testing.assert_array_equal(r.as_numpy("ids_echo"), IDS)  # 2**62+1 intact: no float
        assert r.as_numpy("argmax").dtype == np.int64
        np.testing.assert_array_equal(r.as_numpy("argmax"), ref["argmax"])
        assert r.as_numpy("any").dtype == np.bool_
        np.testing.assert_array_equal(r.as_numpy("any"), ref["any"])
        np.testing.assert_array_equal(r.as_numpy("emb_sum"), ref["emb_sum"])
    body = {"inputs": [{"name": "ids", "datatype": "INT64", "shape": [3, 3], "data": IDS.ravel().tolist()},
                       {"name": "mask", "datatype": "BOOL", "shape": [3, 3], "data": MASK.ravel().tolist()}]}
    out = {o["name"]: o for o in requests.post(srv.url + "/v2/models/ids/infer", json=body,
                                               timeout=30).json()["outputs"]}
    assert out["argmax"]["datatype"] == "INT64" and out["any"]["datatype"] == "BOOL"
    assert out["ids_echo"]["data"][-1] == 2 ** 62 + 1
    body["inputs"][0]["datatype"] = "FP32"
    r = requests.post(srv.url + "/v2/models/ids/infer", json=body, timeout=30)
    assert r.status_code == 400 and "INT64" in r.json()["error"]
    r = requests.post(srv.url + "/v1/models/ids:predict",
                      json={"instances": [{"ids": [1, 2, 3.5], "mask": [1, 0, 1]}]}, timeout=30)
    assert r.status_code == 400 and "fractional" in r.json()["error"]


def test_classification_extension(srv, expect):
    import tritonclient.http as th

    c = th.InferenceServerClient(url=srv.url[len("http://"):])
    ins = [th.InferInput("a", list(XA.shape), "FP32"), th.InferInput("b", list(XB.shape), "FP32")]
    ins[0].set_data_from_numpy(XA)
    ins[1].set_data_from_numpy(XB)
    for binary in (False, True):
        r = c.infer("two", ins, outputs=[th.InferRequestedOutput("probs", binary_data=binary, class_count=2)])
        got = r.as_numpy("probs")
        assert got.shape == (5, 2)
        for row, p in zip(got, expect["probs"]):
            top = np.argsort(-p.astype(np.float64), kind="stable")[:2]
            want = [f"{float(p[i]):f}:{i}:{LABELS[i]}" for i in top]
            assert [e.decode() if isinstance(e, bytes) else e for e in row] == want
    r = requests.post(srv.url + "/v2/models/two/infer", json={
        "inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 3], "data": XA[0].tolist()},
                   {"name": "b", "datatype": "FP32", "shape": [1, 2], "data": XB[0].tolist()}],
        "outputs": [{"name": "score", "parameters": {"classification": 3}}]}, timeout=30)
    assert r.status_code == 400 and "classification" in r.json()["error"]
    r = requests.post(srv.url + "/v2/models/two/infer", json={
        "inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 3], "data": XA[0].tolist()},
                   {"name": "b", "datatype": "FP32", "shape": [1, 2], "data": XB[0].tolist()}],
        "outputs": [{"name": "probs", "parameters": {"class_count": 3}}]}, timeout=30)
    assert r.status_code == 400 and "class_count" in r.json()["error"]


def test_tf_classify_and_regress(srv, repo):
    x = np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32)
    ref = maas.load_model(f"{repo}/mlp/1/model.maas").predict(x, verbose=0)
    r = requests.post(srv.url + "/v1/models/mlp:classify",
                      json={"examples": [{"input": row.tolist()} for row in x]}, timeout=30)
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    for got, p in zip(res, ref):
        assert [lbl for lbl, _ in got] == ["0", "1", "2"]
        np.testing.assert_array_equal(np.array([s for _, s in got], np.float32), p)
    r = requests.post(srv.url + "/v1/models/mlp:regress",
                      json={"examples": [{"input": row.tolist()} for row in x]}, timeout=30)
    assert r.status_code == 400 and ":regress needs one value" in r.json()["error"]
    r = requests.post(srv.url + "/v1/models/two:classify", json={"examples": [{"a": [1, 2, 3], "b": [1, 2]}]},
                      timeout=30)
    assert r.status_code == 400 and "one output" in r.json()["error"]


def test_compressed_bodies_and_zip_bomb(srv, expect):
    body = json.dumps({"x": {"a": XA.tolist(), "b": XB.tolist()}}).encode()
    for enc, data in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body))):
        r = requests.post(srv.url + "/models/two/predict", data=data, timeout=30,
                          headers={"Content-Encoding": enc, "Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(np.array(r.json()["predictions"]["probs"], np.float32), expect["probs"])
    bomb = gzip.compress(b"[" + b"0," * 5_000_000 + b"0]")  # 10 MB inflated, ~10 kB sent; the limit is 200 kB
    assert len(bomb) < 200000
    r = requests.post(srv.url + "/predict", data=bomb, headers={"Content-Encoding": "gzip"}, timeout=30)
    assert r.status_code == 413 and "decompresses" in r.json()["error"]
    r = requests.post(srv.url + "/predict", data=b"xx", headers={"Content-Encoding": "br"}, timeout=30)
    assert r.status_code == 415
