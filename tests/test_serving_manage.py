"""Triton's model repository, configuration and statistics extensions
against a real ``maas serve --model-control explicit`` (gunicorn, 2
workers) on loopback, with tritonclient[http]: the index, load (with a
config override) and unload behind an admin key that inference keys do
not open, only folders inside the repository, the state the same in every
worker, and statistics summed over the workers (Prometheus shows the same
queue/compute split). The secure defaults of the command line are here
too: a non-loopback address without a key and an empty key refuse to
start."""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import requests

import maas
import serving_fixture as sf
import serving_prod_fixture as pf
from serving_fixture import ROOT, Server

pytest.importorskip("gunicorn")
KEY, ADMIN = "infer-key-1", "admin-key-1"
X = np.random.default_rng(5).normal(size=(3, sf.IN)).astype(np.float32)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    r = str(tmp_path_factory.mktemp("repo"))
    sf.save_model(r, "mlp", 1, 0)
    pf.save_two(r, "two", 1, 3)
    os.symlink(str(tmp_path_factory.mktemp("elsewhere")), os.path.join(r, "outside"))
    return r


@pytest.fixture(scope="module")
def srv(repo, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("srv")
    (tmp / "keys").write_text(f"# inference keys\n{KEY}\n")
    (tmp / "admin").write_text(ADMIN + "\n")
    s = Server(repo, str(tmp), extra=["--model-control", "explicit", "--load-model", "mlp",
                                      "--api-key-file", str(tmp / "keys"),
                                      "--admin-key-file", str(tmp / "admin"),
                                      "--batching", "--max-delay-ms", "1"],
               env={"MAAS_API_KEYS": ""})
    try:
        yield s
    finally:
        s.stop()


def _client(srv, key):
    import tritonclient.http as th

    return th.InferenceServerClient(url=srv.url[len("http://"):]), {"Authorization": f"Bearer {key}"}


def _fresh(srv, method, path, key=KEY, body=None):
    """One request on a new connection (so that both workers answer some)."""
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    try:
        c.request(method, path, body=None if body is None else json.dumps(body),
                  headers={"Authorization": f"Bearer {key}", "Connection": "close"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_repository_load_unload(srv, repo):
    from tritonclient.utils import InferenceServerException

    c, h = _client(srv, ADMIN)
    idx = {r["name"]: r for r in c.get_model_repository_index(headers=h)}
    assert idx["mlp"]["state"] == "READY" and idx["two"]["state"] == "UNAVAILABLE"
    assert not c.is_model_ready("two", headers={"Authorization": f"Bearer {KEY}"})
    with pytest.raises(InferenceServerException, match="admin key"):
        c.load_model("two", headers={"Authorization": f"Bearer {KEY}"})  # an inference key
    with pytest.raises(InferenceServerException, match="outside the repository"):
        c.load_model("outside", headers=h)
    with pytest.raises(InferenceServerException, match="not a folder name"):
        c.load_model("..", headers=h)
    c.load_model("two", headers=h, config=json.dumps({"max_rows": 7}))
    # every worker serves it now, with the override
    for _ in range(8):
        st, body = _fresh(srv, "GET", "/v2/models/two/config")
        assert st == 200, body
        cfg = json.loads(body)
        assert cfg["parameters"]["max_rows"]["string_value"] == "7"
        assert [i["name"] for i in cfg["input"]] == ["a", "b"]
    ci, hi = _client(srv, KEY)
    cfg = ci.get_model_config("two", headers=hi)
    assert cfg["max_batch_size"] == 32 and cfg["dynamic_batching"]["max_queue_delay_microseconds"] == 1000
    c.unload_model("two", headers=h)
    for _ in range(8):
        st, body = _fresh(srv, "GET", "/v2/models/two")
        assert st == 404, body
    audit = [json.loads(ln) for ln in open(srv.audit)]
    loads = [a for a in audit if a["path"].endswith("/two/load") and a["status"] == 200]
    import hashlib
    digest = hashlib.sha256(open(f"{repo}/two/1/model.maas", "rb").read()).hexdigest()
    assert loads and loads[0]["files"] == {"1": {"model.maas": digest}} and loads[0]["version"] == 1
    assert any(a["path"].endswith("/two/unload") and a["status"] == 200 for a in audit)
    assert any(a["status"] == 401 and a["path"].endswith("/two/load") for a in audit)


def test_statistics_summed_over_workers(srv, repo):
    ref = maas.load_model(f"{repo}/mlp/1/model.maas").predict(X, verbose=0)
    c, h = _client(srv, KEY)
    before = c.get_inference_statistics("mlp", headers=h)["model_stats"][0]
    n = 12
    for _ in range(n):
        st, body = _fresh(srv, "POST", "/models/mlp/predict", body={"x": X.tolist()})
        assert st == 200
        np.testing.assert_array_equal(np.array(json.loads(body)["predictions"], np.float32), ref)
    st, _ = _fresh(srv, "POST", "/models/mlp/predict", body={"x": [[1, 2]]})
    assert st == 400
    s = c.get_inference_statistics("mlp", headers=h)["model_stats"][0]
    inf, b0 = s["inference_stats"], before["inference_stats"]
    assert s["name"] == "mlp" and s["version"] == "1"
    assert inf["success"]["count"] - b0["success"]["count"] == n
    assert inf["fail"]["count"] - b0["fail"]["count"] == 1
    assert inf["queue"]["count"] - b0["queue"]["count"] == n
    assert inf["compute_infer"]["count"] - b0["compute_infer"]["count"] == n
    assert inf["compute_infer"]["ns"] > b0["compute_infer"]["ns"]
    assert int(s["inference_count"]) - int(before["inference_count"]) == n * len(X)
    assert sum(b["compute_infer"]["count"] for b in s["batch_stats"] if b["batch_size"] == 3) >= n
    assert int(s["last_inference"]) > 0
    m = requests.get(srv.url + "/metrics", headers=h, timeout=30).text
    assert 'maas_queue_seconds_count{model="mlp",version="1"}' in m
    assert 'maas_compute_seconds_bucket' in m
    one = c.get_inference_statistics("mlp", "1", headers=h)["model_stats"]
    assert len(one) == 1 and one[0]["version"] == "1"


def _start(args, env=None):
    e = dict(os.environ)
    e.update({"PYTHONPATH": ROOT, **(env or {})})
    return subprocess.run([sys.executable, "-m", "maas.serving.cli", *args], env=e,
                          capture_output=True, text=True, timeout=120)


def test_secure_defaults_refuse_to_start(repo, tmp_path):
    r = _start([repo, "--host", "0.0.0.0", "--port", "1"], {"MAAS_API_KEYS": ""})
    assert r.returncode == 2 and "without an API key" in r.stderr
    (tmp_path / "k").write_text("\n   \n")
    r = _start([repo, "--api-key", "  ", "--port", "1"])
    assert r.returncode == 2 and "empty API key" in r.stderr
    r = _start([repo, "--host", "0.0.0.0", "--api-key", "a", "--model-control", "explicit",
                "--port", "1"])
    assert r.returncode == 2 and "admin key" in r.stderr
    r = _start([repo, "--api-key", "same", "--admin-key", "same", "--port", "1"])
    assert r.returncode == 2 and "differ" in r.stderr


def test_management_off_without_explicit_mode(repo):
    from maas.serving import create_app

    c = create_app(repo, poll_interval=0, admin_keys=["adm"]).test_client()
    r = c.post("/v2/repository/models/mlp/load", headers={"X-API-Key": "adm"})
    assert r.status_code == 403 and "explicit" in r.json["error"]
    r = c.post("/v2/repository/models/mlp/load")
    assert r.status_code == 401
