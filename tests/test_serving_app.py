"""maas.serving in process, with Flask's test client: the protocols, every
bad input, API keys, the audit log, batching, versions and hot reload.
The models are real maas computation (tests/serving_fixture.py)."""
from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import threading
import time

import numpy as np
import pytest

import maas
import serving_fixture as sf
from maas.serving import ServedModel, blueprint, create_app, from_model
from maas.serving.model import default_loader

RNG = np.random.default_rng(42)
X = RNG.normal(size=(5, sf.IN)).astype(np.float32)


@pytest.fixture(scope="module")
def plan_model():
    return sf.PlanMLP(sf.weights(0))


@pytest.fixture(scope="module")
def app(plan_model):
    return create_app({"mlp": plan_model, "eager": sf.EagerMLP(sf.weights(1))}, poll_interval=0)


@pytest.fixture
def client(app):
    return app.test_client()


def expected(seed=0, x=X):
    return sf.reference(seed, x)


def good(client):
    r = client.post("/models/mlp/predict", json={"x": X[:2].tolist()})
    assert r.status_code == 200, r.json
    np.testing.assert_allclose(r.json["predictions"], expected()[:2], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- adapter
def test_from_model_reads_shapes_and_probes():
    m = from_model(sf.PlanMLP(sf.weights(0)), "a", 3)
    assert (m.name, m.version, m.input_shape, m.output_shape) == ("a", 3, (4,), (3,))
    # a bare callable: the input shape is given, the output shape is probed
    w = {k: maas.Variable(v) for k, v in sf.weights(2).items()}
    fn = lambda x: np.asarray(maas.ops.dense(maas.tensor(x), w["w1"], w["b1"]))  # noqa: E731
    m = from_model(fn, input_shape=(4,))
    assert m.output_shape == (16,)
    with pytest.raises(ValueError, match="input_shape"):
        from_model(fn)
    with pytest.raises(TypeError, match="no predict"):
        from_model(42)


def test_default_loader_loads_a_saved_model_file(tmp_path):
    model = maas.Sequential([maas.Input((4,)), maas.layers.Dense(3, activation="softmax")])
    model.build((None, 4))
    os.makedirs(tmp_path / "1")
    model.save(tmp_path / "1" / "model.maas")
    loaded = default_loader(str(tmp_path / "1"))
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


# ---------------------------------------------------------------- protocols
def test_simple_predict_and_classes(client):
    r = client.post("/models/mlp/predict", json={"x": X.tolist(), "classes": True})
    assert r.status_code == 200
    np.testing.assert_allclose(r.json["predictions"], expected(), rtol=1e-5, atol=1e-6)
    assert r.json["classes"] == expected().argmax(1).tolist()
    assert (r.json["model"], r.json["version"]) == ("mlp", "1")
    r = client.post("/models/eager/predict", json={"instances": X.tolist()})
    np.testing.assert_allclose(r.json["predictions"], expected(1), rtol=1e-5, atol=1e-6)


def test_plain_predict_needs_a_model_name_when_several(client, plan_model):
    r = client.post("/predict", json={"x": X.tolist()})
    assert r.status_code == 400 and "/models/NAME/predict" in r.json["error"]
    one = create_app(plan_model, poll_interval=0).test_client()
    r = one.post("/predict", json={"x": X.tolist()})
    assert r.status_code == 200 and r.json["model"] == "model"


def test_v2_metadata_health_ready(client):
    assert client.get("/v2/health/live").json == {"live": True}
    assert client.get("/v2/health/ready").json == {"ready": True}
    md = client.get("/v2").json
    assert md["name"] == "maas" and "binary_tensor_data" in md["extensions"]
    m = client.get("/v2/models/mlp").json
    assert m == {"name": "mlp", "versions": ["1"], "platform": "maas",
                 "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
                 "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 3]}]}
    assert client.get("/v2/models/mlp/versions/1").json == m
    assert client.get("/v2/models/mlp/ready").json == {"name": "mlp", "ready": True}
    assert client.get("/v2/models/nope/ready").status_code == 404
    assert client.get("/v2/models/mlp/versions/2/ready").status_code == 404


@pytest.mark.parametrize("datatype,nested", [("FP32", False), ("FP32", True), ("FP64", False),
                                             ("INT32", False)])
def test_v2_infer_json(client, datatype, nested):
    x = np.round(X * 3) if datatype == "INT32" else X
    data = x.tolist() if nested else x.ravel().tolist()
    if datatype == "INT32":
        data = np.asarray(data).astype(int).tolist()
    body = {"id": "req-7", "inputs": [{"name": "input", "shape": [5, 4], "datatype": datatype,
                                       "data": data}]}
    # no Content-Type, as tritonclient sends it
    r = client.post("/v2/models/mlp/infer", data=json.dumps(body))
    assert r.status_code == 200, r.json
    out = r.json
    assert out["id"] == "req-7" and out["model_name"] == "mlp" and out["model_version"] == "1"
    (o,) = out["outputs"]
    assert (o["name"], o["datatype"], o["shape"]) == ("output", "FP32", [5, 3])
    np.testing.assert_allclose(np.reshape(o["data"], (5, 3)), expected(0, x.astype(np.float32)),
                               rtol=1e-5, atol=1e-6)


def binary_body(x, dtype="<f4", datatype="FP32", binary_out=True, extra=b"", size=None):
    raw = np.ascontiguousarray(x, dtype=dtype).tobytes()
    head = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": datatype,
                        "parameters": {"binary_data_size": len(raw) if size is None else size}}],
            "outputs": [{"name": "output", "parameters": {"binary_data": binary_out}}]}
    h = json.dumps(head).encode()
    return h + raw + extra, {"Inference-Header-Content-Length": str(len(h))}


def test_v2_infer_binary_in_and_out(client):
    body, headers = binary_body(X)
    r = client.post("/v2/models/mlp/versions/1/infer", data=body, headers=headers)
    assert r.status_code == 200
    n = int(r.headers["Inference-Header-Content-Length"])
    head = json.loads(r.data[:n])
    (o,) = head["outputs"]
    assert o["parameters"]["binary_data_size"] == 5 * 3 * 4 and "data" not in o
    y = np.frombuffer(r.data[n:], "<f4").reshape(o["shape"])
    np.testing.assert_allclose(y, expected(), rtol=1e-5, atol=1e-6)
    # binary input, JSON output; FP64 bytes
    body, headers = binary_body(X, "<f8", "FP64", binary_out=False)
    r = client.post("/v2/models/mlp/infer", data=body, headers=headers)
    np.testing.assert_allclose(np.reshape(r.json["outputs"][0]["data"], (5, 3)), expected(), rtol=1e-5)


def test_tf_serving(client):
    r = client.post("/v1/models/mlp:predict", json={"instances": X.tolist()})
    np.testing.assert_allclose(r.json["predictions"], expected(), rtol=1e-5, atol=1e-6)
    r = client.post("/v1/models/mlp/versions/1:predict",
                    json={"signature_name": "serving_default", "inputs": {"input": X.tolist()}})
    np.testing.assert_allclose(r.json["outputs"], expected(), rtol=1e-5, atol=1e-6)
    r = client.post("/v1/models/mlp:predict", json={"instances": [{"input": row} for row in X.tolist()]})
    np.testing.assert_allclose(r.json["predictions"], expected(), rtol=1e-5, atol=1e-6)
    assert client.get("/v1/models/mlp").json == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert client.get("/v1/models/mlp/versions/1").status_code == 200
    assert client.get("/v1/models/mlp/versions/9").status_code == 404
    md = client.get("/v1/models/mlp/metadata").json
    assert md["model_spec"]["name"] == "mlp"


def test_metrics(client):
    good(client)
    text = client.get("/metrics").data.decode()
    assert 'maas_requests_total{model="mlp",protocol="simple",status="200",version="1"}' in text
    assert "maas_request_latency_seconds_bucket" in text and "maas_batch_size_bucket" in text
    assert "maas_models_loaded 2.0" in text


# ---------------------------------------------------------------- bad clients
V2 = "/v2/models/mlp/infer"


def v2(**inp):
    base = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
    base.update(inp)
    return json.dumps({"inputs": [{k: v for k, v in base.items() if v is not ...}]})


BAD = [
    # (id, method, path, body, headers, status, words in the error)
    ("invalid json", "POST", "/models/mlp/predict", "{\"x\": [[1,", {}, 400, "not valid JSON"),
    ("empty body", "POST", "/models/mlp/predict", "", {}, 400, "empty"),
    ("not utf8", "POST", "/models/mlp/predict", b"\xff\xfe{", {}, 400, "UTF-8"),
    ("array body", "POST", "/models/mlp/predict", "[[1,2,3,4]]", {}, 400, "must be a JSON object"),
    ("string body", "POST", V2, "\"hi\"", {}, 400, "JSON string"),
    ("missing x", "POST", "/models/mlp/predict", "{}", {}, 400, "exactly one of 'x' or 'instances'"),
    ("both x and instances", "POST", "/models/mlp/predict", '{"x": [[1,2,3,4]], "instances": [[1,2,3,4]]}',
     {}, 400, "exactly one"),
    ("unknown field", "POST", "/models/mlp/predict", '{"x": [[1,2,3,4]], "foo": 1}', {}, 400,
     "unknown field 'foo'"),
    ("classes not bool", "POST", "/models/mlp/predict", '{"x": [[1,2,3,4]], "classes": "yes"}', {}, 400,
     "'classes' must be true or false"),
    ("unknown model", "POST", "/models/nope/predict", '{"x": [[1,2,3,4]]}', {}, 404,
     "model 'nope' is not served"),
    ("unknown version", "POST", "/models/mlp/versions/7/predict", '{"x": [[1,2,3,4]]}', {}, 404,
     "no version 7"),
    ("bad version", "POST", "/v2/models/mlp/versions/abc/infer", v2(), {}, 404, "positive integer"),
    ("wrong width", "POST", "/models/mlp/predict", '{"x": [[1,2,3]]}', {}, 400, "expects (batch, 4)"),
    ("no batch axis", "POST", "/models/mlp/predict", '{"x": [1,2,3,4]}', {}, 400, "wrapped in a list"),
    ("3-d", "POST", "/models/mlp/predict", '{"x": [[[1,2,3,4]]]}', {}, 400, "shape (1, 1, 4)"),
    ("ragged", "POST", "/models/mlp/predict", '{"x": [[1,2,3,4],[1,2]]}', {}, 400, "ragged"),
    ("mixed nesting", "POST", "/models/mlp/predict", '{"x": [[1,2,3,4], 5]}', {}, 400, "ragged"),
    ("string in data", "POST", "/models/mlp/predict", '{"x": [[1,2,"3",4]]}', {}, 400,
     "x[0][2] is a string"),
    ("null in data", "POST", "/models/mlp/predict", '{"x": [[1,2,null,4]]}', {}, 400, "x[0][2] is a null"),
    ("object in data", "POST", "/models/mlp/predict", '{"x": [[1,2,{},4]]}', {}, 400, "is a object"),
    ("x not a list", "POST", "/models/mlp/predict", '{"x": "1,2,3,4"}', {}, 400, "array of numbers"),
    ("no rows", "POST", "/models/mlp/predict", '{"x": []}', {}, 400, "shape (0,)"),
    ("NaN", "POST", "/models/mlp/predict", '{"x": [[1,2,NaN,4]]}', {}, 400, "NaN at index [0, 2]"),
    ("Infinity", "POST", "/v1/models/mlp:predict", '{"instances": [[1,2,Infinity,4]]}', {}, 400,
     "infinity"),
    ("overflow float32", "POST", "/models/mlp/predict", '{"x": [[1,2,1e300,4]]}', {}, 400,
     "too large for float32"),
    ("over row limit", "POST", "/models/mlp/predict", json.dumps({"x": [[0, 0, 0, 0]] * 9000}), {}, 400,
     "limit of 8192 rows"),
    # V2
    ("v2 no inputs", "POST", V2, "{}", {}, 400, "missing the field 'inputs'"),
    ("v2 unknown top field", "POST", V2, '{"inputs": [], "foo": 1}', {}, 400, "unknown field 'foo'"),
    ("v2 empty inputs", "POST", V2, '{"inputs": []}', {}, 400, "non-empty array"),
    ("v2 two inputs", "POST", V2, json.dumps({"inputs": [json.loads(v2())["inputs"][0]] * 2}), {}, 400,
     "takes 1 input"),
    ("v2 input not object", "POST", V2, '{"inputs": [1]}', {}, 400, "must be an object"),
    ("v2 missing datatype", "POST", V2, v2(datatype=...), {}, 400, "missing the field 'datatype'"),
    ("v2 missing data", "POST", V2, v2(data=...), {}, 400, "missing the field 'data'"),
    ("v2 unknown input field", "POST", V2, v2(foo=1), {}, 400, "unknown field 'foo'"),
    ("v2 wrong input name", "POST", V2, v2(name="x"), {}, 400, "unknown input 'x'"),
    ("v2 bad datatype", "POST", V2, v2(datatype="BYTES"), {}, 400, "BYTES' is not supported"),
    ("v2 bad shape", "POST", V2, v2(shape="1x4"), {}, 400, "list of non-negative integers"),
    ("v2 shape vs data", "POST", V2, v2(shape=[2, 4]), {}, 400, "needs 8 values, data has 4"),
    ("v2 wrong feature shape", "POST", V2, v2(shape=[2, 2]), {}, 400, "expects (batch, 4)"),
    ("v2 int type fractional", "POST", V2, v2(datatype="INT32", data=[1.5, 2, 3, 4]), {}, 400,
     "needs integers"),
    ("v2 int out of range", "POST", V2, v2(datatype="UINT8", data=[300, 2, 3, 4]), {}, 400,
     "out of range for datatype UINT8"),
    ("v2 id not string", "POST", V2, json.dumps({"id": 5, **json.loads(v2())}), {}, 400, "'id' must be a string"),
    ("v2 unknown output", "POST", V2, json.dumps({**json.loads(v2()), "outputs": [{"name": "y"}]}), {}, 400,
     "unknown output 'y'"),
    ("v2 unknown model", "POST", "/v2/models/nope/infer", v2(), {}, 404, "not served"),
    ("v2 unknown model metadata", "GET", "/v2/models/nope", None, {}, 404, "not served"),
    ("v2 binary size mismatch", "POST", V2, *binary_body(X[:1], size=8)[:1], binary_body(X[:1], size=8)[1],
     400, "is 16 bytes, binary_data_size says 8"),
    ("v2 binary short body", "POST", V2, binary_body(X[:2])[0][:-4], binary_body(X[:2])[1], 400,
     "carries 28 bytes"),
    ("v2 bad header length", "POST", V2, v2(), {"Inference-Header-Content-Length": "99999"}, 400,
     "Inference-Header-Content-Length"),
    ("v2 unclaimed bytes", "POST", V2, v2() + "xxxx", {"Inference-Header-Content-Length": str(len(v2()))},
     400, "no input claims"),
    # TF Serving
    ("tf neither form", "POST", "/v1/models/mlp:predict", '{"signature_name": "serving_default"}', {}, 400,
     "exactly one of 'instances'"),
    ("tf both forms", "POST", "/v1/models/mlp:predict", '{"instances": [], "inputs": []}', {}, 400, "exactly one"),
    ("tf bad signature", "POST", "/v1/models/mlp:predict", '{"signature_name": "x", "instances": [[1,2,3,4]]}',
     {}, 400, "unknown signature_name"),
    ("tf wrong named input", "POST", "/v1/models/mlp:predict", '{"instances": [{"a": [1,2,3,4]}]}', {}, 400,
     "only input is 'input'"),
    ("tf classify", "POST", "/v1/models/mlp:classify", '{"instances": [[1,2,3,4]]}', {}, 400, "'examples'"),
    ("tf unknown model", "POST", "/v1/models/nope:predict", '{"instances": [[1,2,3,4]]}', {}, 404, "not served"),
    ("tf bad path", "GET", "/v1/models/mlp/versions/1/foo/bar", None, {}, 404, "no such endpoint"),
    # hostile bodies: each was a 500 once
    ("nested 1000 deep", "POST", "/models/mlp/predict", '{"x": ' + "[" * 1000 + "1" + "]" * 1000 + "}",
     {}, 400, "nested"),
    ("nested 1000 deep v2", "POST", V2, v2(data=json.loads("[" * 900 + "]" * 900)), {}, 400, "nested"),
    ("nested 40 deep", "POST", "/v1/models/mlp:predict", '{"instances": ' + "[" * 40 + "]" * 40 + "}",
     {}, 400, "nested more than 32 lists deep"),
    ("5000-digit integer", "POST", "/models/mlp/predict", '{"x": [[' + "9" * 5000 + ', 1, 2, 3]]}', {},
     400, "cannot be read"),
    ("5000-digit integer v2", "POST", V2, v2(data=[1, 2, 3, 4]).replace("[1, 2, 3, 4]", "[" + "7" * 5000 + ", 2, 3, 4]"), {}, 400, "cannot be read"),
    ("v2 shape overflows int64", "POST", V2, v2(shape=[4294967296, 4294967296], data=[]), {}, 400,
     "too large"),
    ("v2 binary shape 2^62 size 0", "POST", V2,
     json.dumps({"inputs": [{"name": "input", "shape": [2 ** 62, 4], "datatype": "FP32",
                             "parameters": {"binary_data_size": 0}}]}),
     {"Inference-Header-Content-Length": str(len(json.dumps({"inputs": [{"name": "input", "shape": [
         2 ** 62, 4], "datatype": "FP32", "parameters": {"binary_data_size": 0}}]})))}, 400, "too large"),
    ("v2 zero rows, huge width", "POST", V2, v2(shape=[0, 2 ** 40], data=[]), {}, 400, "expects (batch, 4)"),
    ("v2 70 dimensions", "POST", V2, v2(shape=[1] * 70, data=[1]), {}, 400, "more than 32"),
    # routing
    ("unknown route", "GET", "/nowhere", None, {}, 404, "no such endpoint"),
    ("wrong method", "GET", "/predict", None, {}, 405, "Method Not Allowed"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_request(client, case):
    _, method, path, body, headers, status, words = case
    r = client.open(path, method=method, data=body, headers=headers)
    assert r.status_code == status, (r.status_code, r.data[:300])
    assert r.mimetype == "application/json"
    err = r.json["error"]
    assert words in err, err
    assert "Traceback" not in err and "File \"" not in err
    good(client)  # and the server keeps serving


def test_body_size_limit(plan_model):
    c = create_app(plan_model, poll_interval=0, max_body_bytes=1000).test_client()
    r = c.post("/predict", data=json.dumps({"x": [[0.123456789] * 4] * 40}))
    assert r.status_code == 413 and "over the limit of 1000 bytes" in r.json["error"]
    assert c.post("/predict", json={"x": [[1, 2, 3, 4]]}).status_code == 200


def test_default_body_limit_is_16_mb(client):
    big = b'{"x": [' + b" " * (16 * 1024 * 1024) + b"]}"
    r = client.post("/models/mlp/predict", data=big)
    assert r.status_code == 413 and str(16 * 1024 * 1024) in r.json["error"]
    good(client)


def test_nan_allowed_per_model(plan_model):
    c = create_app({"m": plan_model}, config={"m": {"allow_nan": True}}, poll_interval=0).test_client()
    r = c.post("/models/m/predict", data='{"x": [[1, 2, NaN, 4]]}')
    assert r.status_code == 200


def test_nonfinite_outputs_are_valid_json():
    """A model answering NaN/infinity: null in the answer and a flag, in
    every protocol, and the body parses as strict JSON."""
    def odd(x):
        y = np.ones((len(x), 3), np.float32)
        y[:, 0], y[:, 2] = np.nan, -np.inf
        return y
    c = create_app(ServedModel("odd", 1, odd, (4,), (3,)), poll_interval=0).test_client()

    def strict(data):
        return json.loads(data, parse_constant=lambda s: pytest.fail(f"bare {s} in the answer"))
    r = c.post("/predict", json={"x": [[1, 2, 3, 4]]})
    assert r.status_code == 200
    assert strict(r.data)["predictions"] == [[None, 1.0, None]] and r.json["nonfinite"] is True
    r = c.post("/v1/models/odd:predict", json={"instances": [[1, 2, 3, 4]]})
    assert strict(r.data) == {"predictions": [[None, 1.0, None]], "nonfinite": True}
    r = c.post("/v2/models/odd/infer", data=v2())
    out = strict(r.data)["outputs"][0]
    assert out["data"] == [None, 1.0, None] and out["parameters"] == {"nonfinite": True}
    r = c.post("/predict", json={"x": [[1, 2, 3, 4]]})
    assert "nonfinite" not in create_app(ServedModel("ok", 1, lambda x: x[:, :3], (4,), (3,)),
                                         poll_interval=0).test_client().post(
        "/predict", json={"x": [[1, 2, 3, 4]]}).json


def test_internal_error_hides_the_trace(caplog):
    def broken(x):
        raise RuntimeError("secret internal detail")
    c = create_app(ServedModel("b", 1, broken, (4,), (3,)), poll_interval=0).test_client()
    with caplog.at_level(logging.ERROR, logger="maas.serving"):
        r = c.post("/predict", json={"x": [[1, 2, 3, 4]]}, headers={"X-Request-ID": "abc-123"})
    assert r.status_code == 500
    assert "secret" not in r.json["error"] and "abc-123" in r.json["error"]
    assert "secret internal detail" in caplog.text and "Traceback" in caplog.text


# ---------------------------------------------------------------- security, audit
def test_api_keys(plan_model):
    c = create_app(plan_model, api_keys=["k1", "k2"], poll_interval=0).test_client()
    body = {"x": [[1, 2, 3, 4]]}
    assert c.post("/predict", json=body).status_code == 401
    r = c.post("/predict", json=body, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and "API key" in r.json["error"]
    assert c.post("/predict", json=body, headers={"Authorization": "Bearer k2"}).status_code == 200
    assert c.post("/predict", json=body, headers={"X-API-Key": "k1"}).status_code == 200
    assert c.get("/v2/models/model", headers={"X-API-Key": "k1x"}).status_code == 401
    assert c.get("/v2/health/live").status_code == 200
    assert c.get("/v2/health/ready").status_code == 200


def test_api_keys_from_env(plan_model, monkeypatch):
    monkeypatch.setenv("MAAS_API_KEYS", "a, b")
    c = create_app(plan_model, poll_interval=0).test_client()
    assert c.post("/predict", json={"x": [[1, 2, 3, 4]]}).status_code == 401
    assert c.post("/predict", json={"x": [[1, 2, 3, 4]]}, headers={"X-API-Key": "b"}).status_code == 200


def test_audit_log(plan_model, tmp_path):
    path = tmp_path / "audit.jsonl"
    c = create_app(plan_model, audit_log=str(path), poll_interval=0).test_client()
    c.post("/predict", json={"x": [[1.23456, 2, 3, 4], [5, 6, 7, 8]]}, headers={"X-Request-ID": "r-1"})
    c.post("/predict", data="{bad")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 2
    a, b = lines
    assert a["request_id"] == "r-1" and a["model"] == "model" and a["version"] == 1
    assert a["status"] == 200 and a["rows"] == 2 and a["client"] and a["latency_ms"] >= 0 and a["time"]
    assert b["status"] == 400 and b["request_id"] != "r-1"
    assert "1.23456" not in path.read_text() and "bad" not in path.read_text()


# ---------------------------------------------------------------- blueprint
def test_blueprint_in_a_users_app(plan_model):
    from flask import Flask
    app = Flask("user")

    @app.get("/hello")
    def hello():
        return "hi"

    app.register_blueprint(blueprint({"mlp": plan_model}, poll_interval=0), url_prefix="/ml")
    c = app.test_client()
    assert c.get("/hello").data == b"hi"
    r = c.post("/ml/models/mlp/predict", json={"x": X.tolist()})
    np.testing.assert_allclose(r.json["predictions"], expected(), rtol=1e-5, atol=1e-6)
    assert c.post("/ml/v2/models/mlp/infer", data="{").status_code == 400
    assert c.get("/ml/v2/health/ready").json == {"ready": True}


def test_fast_path_answers_like_flask_and_yields_to_app_hooks(plan_model):
    """create_app serves the POST inference routes without Flask's request
    machinery; the answers are the same, and an app customized with a hook
    goes back through Flask (the hook runs)."""
    from flask import request

    app = create_app(plan_model, poll_interval=0)
    c = app.test_client()
    bodies = [("/predict", {"x": X[:2].tolist(), "classes": True}),
              ("/models/model/versions/1/predict", {"instances": X[:1].tolist()}),
              ("/v2/models/model/infer", {"id": "a", "inputs": [{"name": "input", "shape": [2, 4],
                                                                "datatype": "FP32",
                                                                "data": X[:2].ravel().tolist()}]}),
              ("/v1/models/model:predict", {"instances": X[:2].tolist()}),
              ("/predict", {"x": [[1, 2]]}), ("/models/nope/predict", {"x": [[1, 2, 3, 4]]})]
    fp, served = app.wsgi_app, []
    serve = fp.serve
    fp.serve = lambda *a: served.append(a[2]) or serve(*a)
    fast = [c.post(u, json=b, headers={"X-Request-ID": "r1"}) for u, b in bodies]
    assert served == [u for u, _ in bodies]
    seen = []
    app.before_request(lambda: seen.append(request.path))
    slow = [c.post(u, json=b, headers={"X-Request-ID": "r1"}) for u, b in bodies]
    assert seen == [u for u, _ in bodies] and len(served) == len(bodies)
    for f, s in zip(fast, slow):
        assert (f.status_code, f.json, f.content_type) == (s.status_code, s.json, s.content_type)
        assert f.headers["X-Request-ID"] == s.headers["X-Request-ID"] == "r1"
    assert [f.status_code for f in fast] == [200, 200, 200, 200, 400, 404]


@pytest.mark.parametrize("fast_json", [True, False])
def test_json_codec_with_and_without_orjson(plan_model, monkeypatch, fast_json):
    """orjson (optional) and json give the same answers: what orjson refuses
    (NaN literals, UTF-16 bodies, ints over 64 bits) goes to json."""
    from maas.serving import codec

    if not fast_json:
        monkeypatch.setattr(codec, "_orjson", None)
    c = create_app(plan_model, poll_interval=0, config={"model": {"allow_nan": True}}).test_client()
    r = c.post("/predict", data=json.dumps({"x": X[:2].tolist()}))
    np.testing.assert_allclose(r.json["predictions"], plan_model.predict(X[:2]), rtol=1e-6)
    r = c.post("/predict", data='{"x": [[NaN, 1, 2, 3]]}')
    assert r.status_code == 200 and r.json["predictions"][0] == [None] * 3  # NaN out: null
    assert b"NaN" not in r.data and r.json["nonfinite"] is True
    r = c.post("/predict", data=json.dumps({"x": X[:1].tolist()}).encode("utf-16"))
    assert r.status_code == 200
    r = c.post("/predict", data='{"x": [[%d, 1, 2, 3]]}' % 2 ** 70)
    assert r.status_code == 400 and "out of range" in r.json["error"]  # json keeps it an int
    r = c.post("/predict", data='{"x": [[%d, 1, 2, 3]]}' % (2 ** 63 - 1))
    assert r.status_code == 200
    r = c.post("/predict", data='{"x": [[1, 2, 3, 4]')
    assert r.status_code == 400 and "not valid JSON" in r.json["error"] and "line 1" in r.json["error"]


# ---------------------------------------------------------------- batching
def test_dynamic_batching_groups_concurrent_requests():
    plan = sf.PlanMLP(sf.weights(0))
    sizes = []

    arrived = []

    def predict(x):
        sizes.append(len(x))
        if len(sizes) == 1:
            # hold the first pass until the 15 other requests wait in the batcher's queue,
            # so that they queue behind it however busy the machine is
            batcher = app.maas_server.registry.lookup("m").batcher
            deadline = time.monotonic() + 120
            while batcher._queued_rows < 16 - len(x) and time.monotonic() < deadline:
                time.sleep(0.01)
        return plan.predict(x)

    m = ServedModel("m", 1, predict, (4,), (3,))
    app = create_app(m, batching={"max_batch_size": 64, "max_delay_ms": 50}, poll_interval=0)
    rows = np.random.default_rng(3).normal(size=(16, 4)).astype(np.float32)
    out, errors = [None] * 16, []
    start = threading.Barrier(16)

    def go(i):
        c = app.test_client()
        start.wait()
        arrived.append(i)
        r = c.post("/predict", json={"x": rows[i:i + 1].tolist()})
        if r.status_code != 200:
            errors.append(r.json)
        out[i] = r.json["predictions"][0]

    ts = [threading.Thread(target=go, args=(i,)) for i in range(16)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert not errors
    np.testing.assert_allclose(out, sf.reference(0, rows), rtol=1e-5, atol=1e-6)
    assert sum(sizes) == 16 and max(sizes) > 1, sizes  # fewer passes than requests
    text = app.test_client().get("/metrics").data.decode()
    assert 'maas_batch_size_count{model="m",version="1"}' in text


def test_batching_splits_multi_row_requests_back():
    plan = sf.PlanMLP(sf.weights(0))
    app = create_app(plan, batching={"max_batch_size": 8, "max_delay_ms": 20}, poll_interval=0)
    rng = np.random.default_rng(5)
    reqs = [rng.normal(size=(n, 4)).astype(np.float32) for n in (1, 3, 5, 2, 9, 4)]
    res = [None] * len(reqs)

    def go(i):
        res[i] = app.test_client().post("/predict", json={"x": reqs[i].tolist()}).json["predictions"]

    ts = [threading.Thread(target=go, args=(i,)) for i in range(len(reqs))]
    [t.start() for t in ts]
    [t.join() for t in ts]
    for x, y in zip(reqs, res):
        np.testing.assert_allclose(y, sf.reference(0, x), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- repository
def test_repository_versions_and_policies(tmp_path):
    repo = str(tmp_path)
    for v, seed in ((1, 10), (2, 11), (3, 12)):
        sf.save_version(repo, "latest", v, seed)
        sf.save_version(repo, "all", v, seed)
        sf.save_version(repo, "some", v, seed)
    with open(os.path.join(repo, "all", "config.json"), "w") as f:
        json.dump({"version_policy": "all"}, f)
    with open(os.path.join(repo, "some", "config.json"), "w") as f:
        json.dump({"version_policy": {"specific": {"versions": [1, 3]}}, "max_rows": 2}, f)
    c = create_app(repo, loader=sf.load_npz, poll_interval=0).test_client()
    assert c.get("/v2/models/latest").json["versions"] == ["3"]
    assert c.get("/v2/models/all").json["versions"] == ["1", "2", "3"]
    assert c.get("/v2/models/some").json["versions"] == ["1", "3"]
    x = X[:2]
    for v, seed in ((1, 10), (2, 11), (3, 12)):
        r = c.post(f"/models/all/versions/{v}/predict", json={"x": x.tolist()})
        np.testing.assert_allclose(r.json["predictions"], sf.reference(seed, x), rtol=1e-5, atol=1e-6)
    r = c.post("/models/all/predict", json={"x": x.tolist()})  # version-less -> latest
    assert r.json["version"] == "3"
    assert c.post("/models/some/versions/2/predict", json={"x": x.tolist()}).status_code == 404
    r = c.post("/models/some/predict", json={"x": X[:3].tolist()})
    assert r.status_code == 400 and "limit of 2 rows" in r.json["error"]
    assert c.get("/v2/health/ready").status_code == 200


def test_repository_bad_config_and_failed_load_are_reported_not_fatal(tmp_path):
    repo = str(tmp_path)
    sf.save_version(repo, "ok", 1, 0)
    sf.save_version(repo, "badcfg", 1, 0, config={"batching": {"max_batch_sise": 3}})
    os.makedirs(os.path.join(repo, "broken", "1"))  # no weights
    c = create_app(repo, loader=sf.load_npz, poll_interval=0).test_client()
    assert c.get("/v2/health/ready").status_code == 200  # models that never loaded do not count
    assert c.get("/v2/models/ok/ready").status_code == 200
    r = c.get("/v2/models/broken/ready")
    assert r.status_code == 503 and r.json == {"name": "broken", "ready": False}
    r = c.post("/models/badcfg/predict", json={"x": [[1, 2, 3, 4]]})
    assert r.status_code == 503 and "max_batch_sise" in r.json["error"]
    r = c.post("/models/broken/predict", json={"x": [[1, 2, 3, 4]]})
    assert r.status_code == 503 and "no loaded version" in r.json["error"]
    idx = c.post("/v2/repository/index").json
    assert {"name": "ok", "version": "1", "state": "READY"} in idx


def test_a_version_without_a_model_file_is_not_ready_and_says_why(tmp_path, monkeypatch):
    monkeypatch.delenv("MAAS_SERVING_LOADER", raising=False)
    sf.save_version(str(tmp_path), "m", 1, 0)  # weights.npz only: no model.maas
    c = create_app(str(tmp_path), poll_interval=0).test_client()
    assert c.get("/v2/health/ready").status_code == 503
    r = c.post("/models/m/predict", json={"x": [[1, 2, 3, 4]]})
    assert r.status_code == 503 and "FileNotFoundError: [Errno 2] cannot open" in r.json["error"]


def test_hot_reload_under_load(tmp_path, monkeypatch):
    """A new version is served without a failed request; a removed one is
    unloaded after its in-flight requests finish."""
    repo = str(tmp_path)
    sf.save_version(repo, "m", 1, 20, config={"version_policy": "all"})
    app = create_app(repo, loader=sf.load_npz, poll_interval=0.05, batching=True)
    x = X[:1].tolist()
    failures, seen, stop = [], set(), threading.Event()

    def hammer():
        c = app.test_client()
        while not stop.is_set():
            r = c.post("/models/m/predict", json={"x": x})
            if r.status_code != 200:
                failures.append((r.status_code, r.json))
            else:
                v = r.json["version"]
                seed = {"1": 20, "2": 21}[v]
                if not np.allclose(r.json["predictions"], sf.reference(seed, X[:1]), rtol=1e-5, atol=1e-6):
                    failures.append(("wrong answer", v))
                seen.add(v)

    ts = [threading.Thread(target=hammer) for _ in range(6)]
    [t.start() for t in ts]
    try:
        time.sleep(0.3)
        sf.save_version(repo, "m", 2, 21)
        server = app.maas_server
        deadline = time.time() + 10
        while "2" not in seen and time.time() < deadline:
            time.sleep(0.02)
        assert "2" in seen
        # hold a request to version 1 in flight while version 1 is removed
        lv1 = server.registry.lookup("m", 1)
        with server.registry.acquire("m", 1):
            shutil.rmtree(os.path.join(repo, "m", "1"))
            deadline = time.time() + 10
            while 1 in server.registry.entries["m"].versions and time.time() < deadline:
                time.sleep(0.02)
            assert 1 not in server.registry.entries["m"].versions
            time.sleep(0.2)
            assert lv1.batcher is not None and not lv1.batcher._stopped  # still in flight
            np.testing.assert_allclose(lv1.run(X[:1]), sf.reference(20, X[:1]), rtol=1e-5, atol=1e-6)
        deadline = time.time() + 5
        while not lv1.batcher._stopped and time.time() < deadline:
            time.sleep(0.02)
        assert lv1.batcher._stopped
        r = app.test_client().post("/models/m/versions/1/predict", json={"x": x})
        assert r.status_code == 404
    finally:
        stop.set()
        [t.join() for t in ts]
        app.maas_server.registry.close()
    assert not failures, failures[:5]
