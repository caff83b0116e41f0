"""``maas serve`` serves a ``model.onnx`` version through ONNX Runtime.

A digits MLP exported with ``model.export(..., format="onnx")`` is served
beside the same model as ``model.maas`` by one ``maas serve`` (gunicorn, 2
gevent workers, the gRPC listener, dynamic batching on); tritonclient[http]
(JSON and binary tensors), tritonclient[grpc], TF Serving REST and
``/predict`` get the ONNX version's answers equal to the maas version's to
1e-5. V2 metadata and config come from the graph (names, datatypes,
symbolic dims as -1); a malformed ``model.onnx`` is refused and its status
says why; a folder with both files serves ``model.maas``. The in-process
tests check the graph-to-spec mapping on hand-built ONNX graphs."""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

import maas
import serving_fixture as sf
from serving_fixture import Server

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

from maas.errors import ModelFormatError  # noqa: E402
from maas.serving.model import OnnxModel, default_loader  # noqa: E402


def _digits_model():
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    maas.utils.set_random_seed(0)
    model = maas.Sequential([maas.Input((64,), name="pixels"),
                             maas.layers.Dense(32, activation="relu"),
                             maas.layers.Dense(10, activation="softmax", name="probs")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:600], y[:600], epochs=2, batch_size=64, verbose=0)
    return model, x[1500:1509]


def _write(folder, name, data):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def _graph_file(path, inputs, outputs, nodes):
    g = helper.make_graph(nodes, "g", inputs, outputs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return path


def test_specs_come_from_the_graph_symbolic_dims_as_none(tmp_path):
    p = _graph_file(str(tmp_path / "m.onnx"),
                    [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", "seq", 3]),
                     helper.make_tensor_value_info("w", TensorProto.DOUBLE, ["N", 2])],
                    [helper.make_tensor_value_info("ids_out", TensorProto.INT64, ["N", "seq", 3]),
                     helper.make_tensor_value_info("w2", TensorProto.DOUBLE, ["N", 2])],
                    [helper.make_node("Identity", ["ids"], ["ids_out"]),
                     helper.make_node("Add", ["w", "w"], ["w2"])])
    m = OnnxModel(p, intra_op_threads=1)
    assert [(s.name, s.datatype, s.shape) for s in m.inputs] == [
        ("ids", "INT64", (None, 3)), ("w", "FP64", (2,))]
    assert [(s.name, s.datatype, s.shape) for s in m.outputs] == [
        ("ids_out", "INT64", (None, 3)), ("w2", "FP64", (2,))]
    ids = np.array([[[1, 2, 2 ** 62 + 1]]], np.int64)
    out = m.run({"ids": ids, "w": np.array([[0.5, 1.25]])})
    assert out["ids_out"].dtype == np.int64 and out["ids_out"].tolist() == ids.tolist()
    assert out["w2"].tolist() == [[1.0, 2.5]]
    assert m.platform == "onnxruntime_onnx"
    assert m.session.get_session_options().intra_op_num_threads == 1


def test_a_fixed_batch_axis_and_a_malformed_file_are_refused_with_the_reason(tmp_path):
    p = _graph_file(str(tmp_path / "fixed.onnx"),
                    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                    [helper.make_node("Relu", ["x"], ["y"])])
    with pytest.raises(ModelFormatError, match="batch axis first"):
        OnnxModel(p)
    with pytest.raises(FileNotFoundError):
        OnnxModel(str(tmp_path / "missing.onnx"))
    _write(str(tmp_path / "v"), "model.onnx", b"\x08\x07 this is not protobuf")
    with pytest.raises(ModelFormatError, match="not a valid ONNX model"):
        default_loader(str(tmp_path / "v"))


def test_a_folder_with_both_files_loads_model_maas(tmp_path):
    model, rows = _digits_model()
    d = tmp_path / "both"
    d.mkdir()
    model.save(str(d / "model.maas"))
    _write(str(d), "model.onnx", b"garbage that would fail if it were read")
    got = default_loader(str(d))
    assert not isinstance(got, OnnxModel)
    np.testing.assert_array_equal(got.predict(rows, verbose=0), model.predict(rows, verbose=0))


def test_maas_serve_answers_an_onnx_version_like_the_maas_version(tmp_path):
    th = pytest.importorskip("tritonclient.http")
    tg = pytest.importorskip("tritonclient.grpc")
    pytest.importorskip("gunicorn")
    import requests

    model, rows = _digits_model()
    repo = str(tmp_path / "repo")
    cfg = json.dumps({"batching": {"max_batch_size": 16, "max_delay_ms": 5}}).encode()
    maas.saving.save_to_repository(model, repo, "m_maas")
    os.makedirs(os.path.join(repo, "m_onnx", "1"))
    model.export(os.path.join(repo, "m_onnx", "1", "model.onnx"), format="onnx")
    for n in ("m_maas", "m_onnx"):
        _write(os.path.join(repo, n), "config.json", cfg)
    _write(os.path.join(repo, "bad", "1"), "model.onnx", b"\x08\x07 not an ONNX graph")
    want = model.predict(rows, verbose=0)
    gport = sf.free_port()
    s = Server(repo, str(tmp_path), extra=["--grpc-port", str(gport), "--model-threads", "1"])
    try:
        u = s.url
        c = th.InferenceServerClient(url=f"127.0.0.1:{s.port}")
        meta = c.get_model_metadata("m_onnx")
        assert meta["platform"] == "onnxruntime_onnx"
        assert meta["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}]
        assert meta["outputs"] == [{"name": "probs", "datatype": "FP32", "shape": [-1, 10]}]
        conf = requests.get(u + "/v2/models/m_onnx/config", timeout=30).json()
        assert conf["backend"] == "onnxruntime" and conf["input"][0]["dims"] == [64]
        assert "dynamic_batching" in conf

        answers = {}
        for name in ("m_maas", "m_onnx"):
            inp = c.get_model_metadata(name)["inputs"][0]["name"]
            out = c.get_model_metadata(name)["outputs"][0]["name"]
            for binary in (False, True):
                t = th.InferInput(inp, list(rows.shape), "FP32")
                t.set_data_from_numpy(rows, binary_data=binary)
                r = c.infer(name, [t], outputs=[th.InferRequestedOutput(out, binary_data=binary)])
                answers[name, "http", binary] = r.as_numpy(out)
            answers[name, "tfs"] = np.asarray(requests.post(
                f"{u}/v1/models/{name}:predict", json={"instances": rows.tolist()},
                timeout=30).json()["predictions"], np.float32)
            answers[name, "predict"] = np.asarray(requests.post(
                f"{u}/models/{name}/predict", json={"x": rows.tolist()},
                timeout=30).json()["predictions"], np.float32)

        g = tg.InferenceServerClient(f"127.0.0.1:{gport}")
        deadline = time.monotonic() + 120
        while True:  # the gRPC process boots beside the workers
            try:
                if g.is_model_ready("m_onnx"):
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("gRPC not ready:\n" + s.output())
            time.sleep(0.2)
        gm = g.get_model_metadata("m_onnx", as_json=True)
        assert gm["platform"] == "onnxruntime_onnx" and gm["inputs"][0]["shape"] == ["-1", "64"]
        for name in ("m_maas", "m_onnx"):  # (the maas version is served as input/output)
            io = g.get_model_metadata(name, as_json=True)
            t = tg.InferInput(io["inputs"][0]["name"], list(rows.shape), "FP32")
            t.set_data_from_numpy(rows)
            answers[name, "grpc"] = g.infer(name, [t]).as_numpy(io["outputs"][0]["name"])

        for key, got in answers.items():
            assert got.shape == want.shape, key
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, err_msg=str(key))
        for key in [k for k in answers if k[0] == "m_onnx"]:
            np.testing.assert_allclose(answers[key], answers[("m_maas",) + key[1:]], rtol=0,
                                       atol=1e-5, err_msg=str(key))

        # dynamic batching: concurrent requests stacked into one ONNX Runtime call stay right
        from concurrent.futures import ThreadPoolExecutor

        def one(i):
            r = requests.post(f"{u}/v1/models/m_onnx:predict",
                              json={"instances": rows[i:i + 1].tolist()}, timeout=60)
            return np.asarray(r.json()["predictions"], np.float32)[0]
        with ThreadPoolExecutor(8) as ex:
            got = np.stack(list(ex.map(one, range(len(rows)))))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)

        st = requests.get(u + "/v1/models/bad", timeout=30).json()["model_version_status"]
        assert st[0]["state"] == "END" and st[0]["status"]["error_code"] == "DATA_LOSS"
        msg = st[0]["status"]["error_message"]
        assert "not a valid ONNX model" in msg and "bad/1/model.onnx" in msg
        assert str(tmp_path) not in msg  # no server paths for clients
        assert requests.get(u + "/v2/models/bad/ready", timeout=30).status_code != 200
    finally:
        s.stop()
