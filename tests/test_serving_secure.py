"""Secure defaults and operability of the HTTP API: the audit log has
every request (404 and 405 included) and follows logrotate (a moved file
is reopened), CORS is off unless --cors-origin, /openapi.json is generated
from the blueprint's route table and matches the app's URL map, and empty
keys are refused. Against a real ``maas serve`` (gunicorn) on loopback,
with requests."""
from __future__ import annotations

import json
import os
import time

import pytest
import requests

import serving_fixture as sf
from serving_fixture import Server

pytest.importorskip("gunicorn")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    r = str(tmp_path_factory.mktemp("repo"))
    sf.save_model(r, "mlp", 1, 0)
    return r


def _lines(path):
    with open(path) as f:
        return [json.loads(ln) for ln in f if ln.strip()]


def test_audit_404_405_logrotate_and_cors(repo, tmp_path):
    with Server(repo, str(tmp_path), extra=["--cors-origin", "https://ui.example"]) as s:
        assert requests.get(s.url + "/no/such/path", timeout=30).status_code == 404
        assert requests.delete(s.url + "/v2/models/mlp", timeout=30).status_code == 405
        r = requests.post(s.url + "/predict", json={"x": [[1, 2, 3, 4]]}, timeout=30)
        assert r.headers["Access-Control-Allow-Origin"] == "https://ui.example"
        pre = requests.options(s.url + "/predict", timeout=30, headers={
            "Origin": "https://ui.example", "Access-Control-Request-Method": "POST"})
        assert pre.status_code == 204 and "Authorization" in pre.headers["Access-Control-Allow-Headers"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = {(a["path"], a["status"]) for a in _lines(s.audit)}
            if {("/no/such/path", 404), ("/v2/models/mlp", 405), ("/predict", 200)} <= got:
                break
            time.sleep(0.1)
        assert ("/no/such/path", 404) in got and ("/v2/models/mlp", 405) in got
        os.rename(s.audit, s.audit + ".1")  # what logrotate does
        for _ in range(6):  # over new connections, so that both workers write
            requests.get(s.url + "/v2/models/mlp", timeout=30, headers={"Connection": "close"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not os.path.exists(s.audit):
            time.sleep(0.1)
        assert [a["path"] for a in _lines(s.audit)][:1] == ["/v2/models/mlp"]


def test_cors_off_by_default(repo, tmp_path):
    from maas.serving import create_app

    c = create_app(repo, poll_interval=0).test_client()
    r = c.post("/predict", json={"x": [[1, 2, 3, 4]]})
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers


def test_openapi_matches_url_map(repo):
    from maas.serving import create_app

    app = create_app(repo, poll_interval=0)
    doc = app.test_client().get("/openapi.json").json
    assert doc["openapi"].startswith("3.")
    want = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        import re
        path = re.sub(r"<(?:[a-z]+:)?([A-Za-z_]+)>", r"{\1}", rule.rule)
        want.setdefault(path, set()).update(m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    got = {p: set(ops) for p, ops in doc["paths"].items()}
    assert got == want
    assert "/v2/repository/models/{name}/load" in got and "/openapi.json" in got
    load = doc["paths"]["/v2/repository/models/{name}/load"]["post"]
    assert load["security"] == [{"adminKey": []}]


def test_empty_keys_refused(repo):
    from maas.serving import create_app

    with pytest.raises(ValueError, match="empty"):
        create_app(repo, poll_interval=0, api_keys=["ok", " "])
    with pytest.raises(ValueError, match="differ"):
        create_app(repo, poll_interval=0, api_keys=["k"], admin_keys=["k"])
