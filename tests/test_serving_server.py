"""Real servers in a subprocess on a free loopback port: ``maas serve``
with its default server (gunicorn with maas's gevent worker, 2 workers),
the Flask dev server (``--dev``), and each alternative ``--server``,
talked to with requests and the real tritonclient[http]. The models are
real model files (``maas.saving.save_to_repository``) loaded by the
server's default loader (``maas.load_model``); answers must equal the
in-process predict of the same files on the same rows. Every server runs
in its own process group, which ``Server.stop`` always ends."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import requests

import maas
import serving_fixture as sf
from serving_fixture import Server

pytest.importorskip("gunicorn")
pytest.importorskip("gevent")
X = np.random.default_rng(7).normal(size=(6, sf.IN)).astype(np.float32)
LOAD_REQUESTS = int(os.environ.get("MAAS_SERVING_LOAD_REQUESTS", "500"))  # per thread, as the issue asks


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    r = str(tmp_path_factory.mktemp("repo"))
    sf.save_model(r, "mlp", 1, 0, config={"batching": {"max_batch_size": 32, "max_delay_ms": 1}})
    sf.save_model(r, "plain", 1, 1)
    return r


@pytest.fixture(scope="module", params=["gevent", "dev"])
def server(request, repo, tmp_path_factory):
    s = Server(repo, str(tmp_path_factory.mktemp("srv")), dev=request.param == "dev")
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def expected(repo):
    """The in-process predict of the same saved model files on the same rows."""
    return {n: maas.load_model(os.path.join(repo, n, "1", "model.maas")).predict(X, verbose=0)
            for n in ("mlp", "plain")}


def test_requests_all_protocols(server, expected):
    u = server.url
    r = requests.post(u + "/models/mlp/predict", json={"x": X.tolist(), "classes": True})
    assert r.status_code == 200
    np.testing.assert_allclose(r.json()["predictions"], expected["mlp"], rtol=1e-6, atol=1e-7)
    assert r.json()["classes"] == expected["mlp"].argmax(1).tolist()
    r = requests.post(u + "/v1/models/plain:predict", json={"instances": X.tolist()})
    np.testing.assert_allclose(r.json()["predictions"], expected["plain"], rtol=1e-6, atol=1e-7)
    body = {"id": "x1", "inputs": [{"name": "input", "shape": list(X.shape), "datatype": "FP32",
                                    "data": X.ravel().tolist()}]}
    r = requests.post(u + "/v2/models/mlp/infer", data=json.dumps(body))
    assert r.json()["id"] == "x1"
    np.testing.assert_allclose(np.reshape(r.json()["outputs"][0]["data"], (6, 3)), expected["mlp"],
                               rtol=1e-6, atol=1e-7)
    r = requests.post(u + "/v2/models/mlp/infer", data="{oops")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient(server, expected, binary):
    import tritonclient.http as th
    c = th.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("mlp") and c.is_model_ready("mlp", "1")
    assert not c.is_model_ready("nope")
    md = c.get_model_metadata("mlp")
    assert md["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert md["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 3]}]
    for name in ("mlp", "plain"):
        inp = th.InferInput("input", list(X.shape), "FP32")
        inp.set_data_from_numpy(X, binary_data=binary)
        res = c.infer(name, [inp], outputs=[th.InferRequestedOutput("output", binary_data=binary)],
                      request_id="rq-9")
        assert res.get_response()["id"] == "rq-9"
        np.testing.assert_allclose(res.as_numpy("output"), expected[name], rtol=1e-6, atol=1e-7)
    # FP64 input, default outputs
    inp = th.InferInput("input", list(X.shape), "FP64")
    inp.set_data_from_numpy(X.astype(np.float64), binary_data=binary)
    np.testing.assert_allclose(c.infer("mlp", [inp]).as_numpy("output"), expected["mlp"], rtol=1e-6)
    # a bad request surfaces as the client's exception with our message
    bad = th.InferInput("input", [1, 3], "FP32")
    bad.set_data_from_numpy(np.ones((1, 3), np.float32), binary_data=binary)
    with pytest.raises(th.InferenceServerException, match=r"expects \(batch, 4\)"):
        c.infer("mlp", [bad])
    c.close()


@pytest.mark.parametrize("kind", ["gthread", "granian", "uvicorn"])
def test_alternative_servers_answer(repo, tmp_path, expected, kind):
    """``--server`` runs the same app under each candidate server."""
    pytest.importorskip({"gthread": "gunicorn", "granian": "granian", "uvicorn": "a2wsgi"}[kind])
    s = Server(repo, str(tmp_path), server=kind)
    try:
        r = requests.post(s.url + "/models/mlp/predict", json={"x": X.tolist()}, timeout=30)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["predictions"], expected["mlp"], rtol=1e-6, atol=1e-7)
        r = requests.post(s.url + "/v2/models/mlp/infer", data="{oops", timeout=30)
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    finally:
        s.stop()
    assert not s.group_alive()


def _rss_kb(pids):
    total = 0
    for p in pids:
        with open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def test_load_mixed_good_and_bad(repo, tmp_path, expected):
    """16 client threads against 2 gunicorn workers: zero failed good
    requests, every bad one a 4xx, memory steady, metrics summed over workers."""
    s = Server(repo, str(tmp_path))
    try:
        u = s.url
        bad_bodies = ['{"x": [[1,2]]}', "{oops", '{"x": [[1,2,null,4]]}', "[1]", '{"x": [[1,2,3,NaN]]}']
        row = X[:1].tolist()
        failures, statuses = [], []

        def client(k, n):
            sess = requests.Session()
            for i in range(n):
                if i % 4 == 3:
                    r = sess.post(u + "/models/mlp/predict", data=bad_bodies[(i + k) % len(bad_bodies)])
                    if not 400 <= r.status_code < 500:
                        failures.append(("bad", r.status_code, r.text[:200]))
                else:
                    path = ("/models/mlp/predict", "/models/plain/predict")[i % 2]
                    r = sess.post(u + path, json={"x": row})
                    name = path.split("/")[2]
                    if r.status_code != 200 or not np.allclose(r.json()["predictions"], expected[name][:1],
                                                               rtol=1e-6, atol=1e-7):
                        failures.append(("good", r.status_code, r.text[:200]))
                statuses.append(r.status_code)

        def run(n):
            ts = [threading.Thread(target=client, args=(k, n)) for k in range(16)]
            [t.start() for t in ts]
            [t.join() for t in ts]

        run(20)  # warm up
        workers = s.worker_pids()
        assert len(workers) == 2
        before = _rss_kb(workers)
        run(LOAD_REQUESTS)
        after = _rss_kb(workers)
        assert not failures, failures[:5]
        assert after <= before * 1.10, (before, after)
        assert s.worker_pids() == workers  # no worker died
        total = 16 * (20 + LOAD_REQUESTS)
        text = requests.get(u + "/metrics").text
        counted = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                      if line.startswith("maas_requests_total{"))
        assert counted >= total  # figures add up over both workers
        audit = [json.loads(line) for line in open(s.audit) if line.startswith("{")]
        assert len([a for a in audit if a["path"].endswith("/predict")]) == total
        assert {a["status"] for a in audit} >= {200, 400}
    finally:
        s.stop()


def test_sigterm_drains_in_flight_requests(repo, tmp_path):
    s = Server(repo, str(tmp_path), env={"MAAS_SERVING_LOADER": "serving_fixture:load_slow",
                                         "MAAS_TEST_DELAY": "0.5"})
    try:
        results = []

        def ask():
            r = requests.post(s.url + "/models/plain/predict", json={"x": X[:1].tolist()}, timeout=30)
            results.append(r.status_code)

        ts = [threading.Thread(target=ask) for _ in range(4)]
        [t.start() for t in ts]
        time.sleep(0.2)  # the requests are inside the model now
        s.proc.send_signal(signal.SIGTERM)
        [t.join() for t in ts]
        assert results == [200] * 4
        assert s.proc.wait(60) == 0
    finally:
        s.stop()


def test_hot_reload_in_gunicorn(tmp_path):
    repo = str(tmp_path / "repo")
    sf.save_model(repo, "m", 1, 30)
    s = Server(repo, str(tmp_path), extra=("--poll-interval", "0.2"))
    try:
        assert requests.post(s.url + "/models/m/predict", json={"x": X[:1].tolist()}).json()["version"] == "1"
        sf.save_model(repo, "m", 2, 31)
        deadline, versions = time.time() + 60, set()
        while time.time() < deadline:
            r = requests.post(s.url + "/models/m/predict", json={"x": X[:1].tolist()})
            assert r.status_code == 200
            versions.add(r.json()["version"])
            if r.json()["version"] == "2":
                np.testing.assert_allclose(r.json()["predictions"], sf.reference(31, X[:1]), rtol=1e-5)
                break
        assert "2" in versions
    finally:
        s.stop()
