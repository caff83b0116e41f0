"""Explanations served: KServe V1 ``:explain`` and the V2 ``explain``
extension, against a real ``maas serve`` on loopback (gunicorn, 2 workers)
loading real model files; the answers equal maas.explain in process on the
same files. Limits, API keys, the audit log and the metrics cover explain
calls. Every server is stopped in a ``finally``."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import requests

import maas
import serving_fixture as sf
from maas import explain as E
from serving_fixture import Server

pytest.importorskip("gunicorn")
pytest.importorskip("gevent")
X = np.random.default_rng(3).normal(size=(3, sf.IN)).astype(np.float32)
KEY = "explain-key-1"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    r = str(tmp_path_factory.mktemp("repo"))
    sf.save_model(r, "ig", 1, 0, config={"explain": {"method": "integrated_gradients", "n_steps": 64,
                                                     "max_steps": 128, "max_rows": 4}})
    sf.save_model(r, "shap", 1, 1, config={"explain": {"method": "kernel_shap", "max_samples": 64,
                                                       "background": [[0.1] * sf.IN, [-0.2] * sf.IN]}})
    return r


@pytest.fixture(scope="module")
def server(repo, tmp_path_factory):
    s = Server(repo, str(tmp_path_factory.mktemp("srv")), extra=["--api-key", KEY])
    try:
        yield s
    finally:
        s.stop()
    assert not s.group_alive()


def _local(repo, name):
    return maas.load_model(os.path.join(repo, name, "1", "model.maas"))


H = {"Authorization": f"Bearer {KEY}"}


def test_v1_explain_integrated_gradients_equals_in_process(server, repo):
    m = _local(repo, "ig")
    r = requests.post(server.url + "/v1/models/ig:explain", json={"instances": X.tolist()}, headers=H,
                      timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    want, delta = E.IntegratedGradients(m).attribute(X, n_steps=64, return_convergence_delta=True)
    np.testing.assert_allclose(body["explanations"], want, atol=1e-6)
    assert body["method"] == "integrated_gradients"
    assert body["targets"] == m.predict(X, verbose=0).argmax(1).tolist()
    np.testing.assert_allclose(body["convergence_delta"], delta, atol=1e-6)
    # the request's parameters over the config's, with a version in the path
    r = requests.post(server.url + "/v1/models/ig/versions/1:explain", headers=H, timeout=60,
                      json={"instances": X.tolist(), "parameters": {"method": "saliency", "target": 2,
                                                                    "abs": False}})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["explanations"],
                               E.Saliency(m).attribute(X, target=2, abs=False), atol=1e-6)


def test_v2_explain_extension_kernel_shap(server, repo):
    m = _local(repo, "shap")
    meta = requests.get(server.url + "/v2", headers=H, timeout=30).json()
    assert "explain" in meta["extensions"]
    body = {"id": "e1", "inputs": [{"name": "input", "shape": list(X.shape), "datatype": "FP32",
                                    "data": X.ravel().tolist()}], "parameters": {"target": 1}}
    r = requests.post(server.url + "/v2/models/shap/explain", data=json.dumps(body), headers=H,
                      timeout=60)
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert r.json()["id"] == "e1" and r.json()["parameters"]["method"] == "kernel_shap"
    bg = np.array([[0.1] * sf.IN, [-0.2] * sf.IN], np.float32)
    want = E.KernelShap(m, bg).attribute(X, target=1)          # 4 features: exact
    assert out["attributions"]["shape"] == list(X.shape)
    np.testing.assert_allclose(np.reshape(out["attributions"]["data"], X.shape), want, atol=1e-6)
    assert out["target"]["data"] == [1, 1, 1]


def test_limits_and_bad_requests_are_400s_naming_them(server):
    u = server.url
    r = requests.post(u + "/v1/models/ig:explain", headers=H, timeout=30,
                      json={"instances": X.tolist(), "parameters": {"n_steps": 129}})
    assert r.status_code == 400 and "n_steps=129 is over this model's explain limit max_steps=128" \
        in r.json()["error"]
    r = requests.post(u + "/v1/models/ig:explain", headers=H, timeout=30,
                      json={"instances": np.zeros((5, sf.IN)).tolist()})
    assert r.status_code == 400 and "5 rows are over this model's explain limit max_rows=4" \
        in r.json()["error"]
    r = requests.post(u + "/v1/models/shap:explain", headers=H, timeout=30,
                      json={"instances": X.tolist(), "parameters": {"n_samples": 65}})
    assert r.status_code == 400 and "max_samples=64" in r.json()["error"]
    r = requests.post(u + "/v1/models/ig:explain", headers=H, timeout=30,
                      json={"instances": X.tolist(), "parameters": {"max_steps": 10 ** 6}})
    assert r.status_code == 400 and "parameters.max_steps can only be set in the model's config.json" \
        in r.json()["error"]
    r = requests.post(u + "/v1/models/ig:explain", headers=H, timeout=30,
                      json={"instances": X.tolist(), "parameters": {"target": 3}})
    assert r.status_code == 400 and "target 3 is out of range: the model has 3 outputs" in r.json()["error"]
    r = requests.post(u + "/v1/models/ig:explain", headers=H, timeout=30,
                      json={"instances": X.tolist(), "parameters": {"method": "magic"}})
    assert r.status_code == 400 and "parameters.method must be one of" in r.json()["error"]


def test_api_key_audit_log_and_metrics_cover_explain(server):
    u = server.url
    r = requests.post(u + "/v1/models/ig:explain", json={"instances": X.tolist()}, timeout=30)
    assert r.status_code == 401
    r = requests.post(u + "/v2/models/ig/explain", timeout=30, data=json.dumps(
        {"inputs": [{"name": "input", "shape": [1, sf.IN], "datatype": "FP32", "data": [0.5] * sf.IN}]}))
    assert r.status_code == 401
    marker = "77.125"   # a value in the payload, which the audit log must never show
    rows = [[77.125] * sf.IN]
    r = requests.post(u + "/v1/models/ig:explain", headers={**H, "X-Request-ID": "explain-audit-1"},
                      json={"instances": rows, "parameters": {"n_steps": 32}}, timeout=30)
    assert r.status_code == 200, r.text
    lines = [json.loads(l) for l in open(server.audit) if "explain-audit-1" in l]
    assert len(lines) == 1
    a = lines[0]
    assert a["explain_method"] == "integrated_gradients" and a["steps"] == 32 and a["rows"] == 1
    assert a["status"] == 200 and a["latency_ms"] > 0 and a["evaluated_rows"] >= 32
    assert marker not in json.dumps(a)
    seen = ""
    for _ in range(6):  # each scrape lands on one of 2 workers; multiprocess mode sums them
        seen = requests.get(u + "/metrics", headers=H, timeout=30).text
        if 'maas_explain_requests_total{method="integrated_gradients",model="ig",status="200"}' in seen:
            break
    assert 'maas_explain_requests_total{method="integrated_gradients",model="ig",status="200"}' in seen
    assert "maas_explain_latency_seconds_bucket" in seen and "maas_explain_evaluations_total" in seen


def test_config_rejects_bad_explain_settings():
    from maas.serving.repository import ModelConfig

    with pytest.raises(ValueError, match=r"explain.method must be one of .*received 'shapp'"):
        ModelConfig.from_dict({"explain": {"method": "shapp"}})
    with pytest.raises(ValueError, match=r"explain.max_steps must be a positive integer"):
        ModelConfig.from_dict({"explain": {"max_steps": 0}})
    with pytest.raises(ValueError, match=r"unknown key 'explain.n_stepz'"):
        ModelConfig.from_dict({"explain": {"n_stepz": 3}})


def test_in_process_app_explains_a_function_model_without_gradients():
    """A served plain function: perturbation methods work, gradient methods are a 400."""
    from maas.serving import ServedModel, create_app

    sm = ServedModel("f", 1, lambda x: np.asarray(x)[:, :2] * np.float32(3), (3,), (2,))
    app = create_app(sm, config={"f": {"explain": {"method": "feature_ablation"}}}, poll_interval=0)
    c = app.test_client()
    r = c.post("/v1/models/f:explain", json={"instances": [[1, 2, 3]], "parameters": {"target": 1}})
    assert r.status_code == 200, r.json
    assert r.json["explanations"] == [[0.0, 6.0, 0.0]]
    r = c.post("/v1/models/f:explain", json={"instances": [[1, 2, 3]],
                                            "parameters": {"method": "integrated_gradients"}})
    assert r.status_code == 400 and "needs the model's gradient" in r.json["error"]
