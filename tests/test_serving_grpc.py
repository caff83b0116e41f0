"""The Open Inference Protocol's gRPC service against a real ``maas serve
--grpc-port`` (gunicorn with 2 gevent workers plus the gRPC process) on
loopback, with tritonclient[grpc]: live, ready, metadata, infer with
several inputs (raw_input_contents) and integer/boolean tensors, the same
answers as over HTTP bit for bit and as the in-process predict; keys as
metadata; config, statistics (counted with the HTTP workers') and the
repository index; and the --dev server's in-process gRPC thread."""
from __future__ import annotations

import numpy as np
import pytest

import maas
import serving_fixture as sf
import serving_prod_fixture as pf
from serving_fixture import Server

pytest.importorskip("gunicorn")
tg = pytest.importorskip("tritonclient.grpc")
import tritonclient.http as th  # noqa: E402

KEY = "grpc-key-1"
rng = np.random.default_rng(21)
XA = rng.normal(size=(4, pf.A)).astype(np.float32)
XB = rng.normal(size=(4, pf.B)).astype(np.float32)
IDS = np.array([[1, 2, 3], [9, 8, 2 ** 62 + 7]], np.int64)
MASK = np.array([[True, False, True], [False, True, True]])
AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    r = str(tmp_path_factory.mktemp("repo"))
    pf.save_two(r, "two", 1, 8, labels=["a", "b", "c", "d"])
    pf.save_ids(r, "ids", 1, 9)
    return r


@pytest.fixture(scope="module", params=["gevent", "dev"])
def srv(request, repo, tmp_path_factory):
    port = sf.free_port()
    s = Server(repo, str(tmp_path_factory.mktemp("srv")), dev=request.param == "dev",
               extra=["--grpc-port", str(port), "--api-key", KEY],
               env={"MAAS_SERVING_LOADER": "serving_prod_fixture:load_ids", "MAAS_API_KEYS": ""})
    s.grpc = f"127.0.0.1:{port}"
    try:
        c = tg.InferenceServerClient(s.grpc)
        import time
        deadline = time.monotonic() + 120
        while True:  # the gRPC process boots beside the workers
            try:
                if c.is_server_ready(headers=AUTH):
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("gRPC not ready:\n" + s.output())
            time.sleep(0.2)
        yield s
    finally:
        s.stop()


def _two_inputs(mod, binary=None):
    ins = [mod.InferInput("a", list(XA.shape), "FP32"), mod.InferInput("b", list(XB.shape), "FP32")]
    kw = {} if binary is None else {"binary_data": binary}
    ins[0].set_data_from_numpy(XA, **kw)
    ins[1].set_data_from_numpy(XB, **kw)
    return ins


def test_health_and_metadata(srv):
    c = tg.InferenceServerClient(srv.grpc)
    assert c.is_server_live()
    assert c.is_server_ready()
    assert c.is_model_ready("two", headers=AUTH)
    md = c.get_server_metadata(headers=AUTH, as_json=True)
    assert md["name"] == "maas" and "model_repository" in md["extensions"]
    mm = c.get_model_metadata("two", headers=AUTH, as_json=True)
    assert [(i["name"], i["datatype"], [int(d) for d in i["shape"]]) for i in mm["inputs"]] == \
        [("a", "FP32", [-1, 3]), ("b", "FP32", [-1, 2])]
    assert [o["name"] for o in mm["outputs"]] == ["probs", "score"]
    with pytest.raises(tg.InferenceServerException, match="API key"):
        c.get_model_metadata("two")
    with pytest.raises(tg.InferenceServerException, match="not served"):
        c.get_model_metadata("nope", headers=AUTH)


def test_infer_two_inputs_same_bits_as_http(srv, repo):
    ref = maas.load_model(f"{repo}/two/1/model.maas").predict([XA, XB], verbose=0)
    g = tg.InferenceServerClient(srv.grpc).infer("two", _two_inputs(tg), headers=AUTH)
    h = th.InferenceServerClient(srv.url[7:]).infer("two", _two_inputs(th, True),
                                                    headers={"Authorization": f"Bearer {KEY}"})
    for name in ("probs", "score"):
        assert g.as_numpy(name).tobytes() == h.as_numpy(name).tobytes()
        np.testing.assert_array_equal(g.as_numpy(name), ref[name])
    r = tg.InferenceServerClient(srv.grpc).infer(
        "two", _two_inputs(tg), headers=AUTH,
        outputs=[tg.InferRequestedOutput("probs", class_count=2)])
    top = r.as_numpy("probs")
    assert top.shape == (4, 2)
    best = int(np.argmax(ref["probs"][0]))
    assert top[0][0].decode().split(":")[1:] == [str(best), "abcd"[best]]
    with pytest.raises(tg.InferenceServerException, match="classification"):
        tg.InferenceServerClient(srv.grpc).infer(
            "two", _two_inputs(tg), headers=AUTH,
            outputs=[tg.InferRequestedOutput("score", class_count=2)])


def test_infer_integer_inputs(srv, repo):
    ins = [tg.InferInput("ids", list(IDS.shape), "INT64"), tg.InferInput("mask", list(MASK.shape), "BOOL")]
    ins[0].set_data_from_numpy(IDS)
    ins[1].set_data_from_numpy(MASK)
    r = tg.InferenceServerClient(srv.grpc).infer("ids", ins, headers=AUTH)
    ref = pf.load_ids(f"{repo}/ids/1").run({"ids": IDS, "mask": MASK})
    for k, v in ref.items():
        assert r.as_numpy(k).dtype == v.dtype
        np.testing.assert_array_equal(r.as_numpy(k), v)


def test_config_statistics_index(srv):
    c = tg.InferenceServerClient(srv.grpc)
    cfg = c.get_model_config("two", headers=AUTH, as_json=True)["config"]
    assert cfg["name"] == "two" and [i["name"] for i in cfg["input"]] == ["a", "b"]
    assert cfg["input"][0]["data_type"] == "TYPE_FP32"
    before = c.get_inference_statistics("two", headers=AUTH, as_json=True)["model_stats"][0]
    c.infer("two", _two_inputs(tg), headers=AUTH)
    th.InferenceServerClient(srv.url[7:]).infer("two", _two_inputs(th), headers={"Authorization": f"Bearer {KEY}"})
    after = c.get_inference_statistics("two", headers=AUTH, as_json=True)["model_stats"][0]
    ok = lambda s: int(s["inference_stats"]["success"].get("count", 0))  # noqa: E731
    assert ok(after) - ok(before) == 2  # one over gRPC, one over HTTP: one set of figures
    idx = c.get_model_repository_index(headers=AUTH, as_json=True)["models"]
    assert {m["name"] for m in idx} == {"two", "ids"}
    with pytest.raises(tg.InferenceServerException, match="PERMISSION_DENIED"):
        c.load_model("two", headers=AUTH)
