"""The deployment files: deploy/Dockerfile and deploy/kserve/ (a
ClusterServingRuntime and an example InferenceService, as KServe's custom
runtime documentation has them). The manifests parse and hold what KServe
reads; the image runs as non-root with a HEALTHCHECK on readiness; the
container's command line is the runtime's; and a real server started with
exactly that command line (ports and paths made local) over KServe's
storage layout (the model at the mount path, --model_name) is ready and
answers over HTTP and gRPC as the in-process predict does."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import yaml

import maas
import serving_fixture as sf
from serving_fixture import ROOT, Server

DEPLOY = os.path.join(ROOT, "deploy")


def _yaml(name):
    with open(os.path.join(DEPLOY, "kserve", name)) as f:
        return yaml.safe_load(f)


def _dockerfile():
    with open(os.path.join(DEPLOY, "Dockerfile")) as f:
        text = f.read()
    lines = re.sub(r"\\\n", " ", text).splitlines()
    return text, [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def _instr(lines, word):
    return [ln[len(word):].strip() for ln in lines if ln.split()[0].upper() == word]


def test_manifests_parse_and_match():
    rt, isvc = _yaml("servingruntime.yaml"), _yaml("inferenceservice.yaml")
    assert rt["apiVersion"] == "serving.kserve.io/v1alpha1" and rt["kind"] == "ClusterServingRuntime"
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    spec = rt["spec"]
    assert "v2" in spec["protocolVersions"]
    fmt = isvc["spec"]["predictor"]["model"]
    assert fmt["runtime"] == rt["metadata"]["name"]
    assert fmt["modelFormat"]["name"] in [f["name"] for f in spec["supportedModelFormats"]]
    assert fmt["protocolVersion"] in spec["protocolVersions"]
    (c,) = spec["containers"]
    assert c["name"] == "kserve-container"  # the name KServe looks for
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["args"][0] == "/mnt/models"
    assert c["ports"][0]["containerPort"] == 8080
    assert c["securityContext"]["runAsNonRoot"] is True
    mounts = {v["name"] for v in spec["volumes"]}
    assert {m["name"] for m in c["volumeMounts"]} <= mounts


def test_dockerfile():
    text, lines = _dockerfile()
    froms = _instr(lines, "FROM")
    assert froms[-1].startswith("python:") and "-slim" in froms[-1]
    assert any("maas[serve" in r for r in _instr(lines, "RUN"))
    user = _instr(lines, "USER")[-1]
    assert user.split(":")[0] not in ("root", "0")
    (hc,) = _instr(lines, "HEALTHCHECK")
    assert "/v2/health/ready" in hc
    assert _instr(lines, "STOPSIGNAL") == ["SIGTERM"]
    assert json.loads(_instr(lines, "ENTRYPOINT")[0]) == ["maas", "serve"]
    cmd = json.loads(_instr(lines, "CMD")[-1])
    rt_args = _yaml("servingruntime.yaml")["spec"]["containers"][0]["args"]
    # the runtime's command line is the image's, plus the model's name from KServe
    def norm(args):
        out, i = [], 0
        while i < len(args):
            if args[i].startswith("--") and "=" not in args[i]:
                out.append(f"{args[i]}={args[i + 1]}")
                i += 2
            else:
                out.append(args[i])
                i += 1
        return sorted(out)
    assert norm(cmd) == norm([a for a in rt_args if not a.startswith("--model-name")])
    from maas.serving.cli import build_parser

    a = build_parser().parse_args(cmd)
    assert (a.repo, a.port, a.grpc_port, a.host) == ("/mnt/models", 8080, 8081, "0.0.0.0")


def test_runtime_command_line_serves_kserve_layout(tmp_path):
    tg = pytest.importorskip("tritonclient.grpc")
    import tritonclient.http as th

    mount = tmp_path / "mnt-models"
    sf.save_model(str(tmp_path / "store"), "digits", 1, 4)
    os.rename(tmp_path / "store" / "digits", mount)  # storageUri content: 1/model.maas
    (tmp_path / "keys").write_text("kserve-key\n")
    grpc_port = sf.free_port()
    args = _yaml("servingruntime.yaml")["spec"]["containers"][0]["args"][1:]
    # made local: loopback, free ports (the fixture gives --port, which is --http-port),
    # the key file, and {{.Name}} as KServe fills it in
    local = {"--host": "127.0.0.1", "--grpc-port": str(grpc_port),
             "--api-key-file": str(tmp_path / "keys"), "--model-name": "digits"}
    assert {a.split("=", 1)[0] for a in args} >= set(local) | {"--http-port"}
    args = [f"{a.split('=', 1)[0]}={local[a.split('=', 1)[0]]}" if a.split("=", 1)[0] in local else a
            for a in args if not a.startswith("--http-port")]
    s = Server(str(mount), str(tmp_path), extra=args, env={"MAAS_API_KEYS": ""})
    http_port = s.port
    try:
        x = np.random.default_rng(1).normal(size=(3, sf.IN)).astype(np.float32)
        ref = maas.load_model(str(mount / "1" / "model.maas")).predict(x, verbose=0)
        inp = th.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        r = th.InferenceServerClient(f"127.0.0.1:{http_port}").infer(
            "digits", [inp], headers={"Authorization": "Bearer kserve-key"})
        np.testing.assert_array_equal(r.as_numpy("output"), ref)
        g = tg.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        import time
        deadline = time.monotonic() + 120
        while True:
            try:
                if g.is_model_ready("digits", headers={"authorization": "Bearer kserve-key"}):
                    break
            except Exception:
                pass
            assert time.monotonic() < deadline, s.output()
            time.sleep(0.2)
        gi = tg.InferInput("input", list(x.shape), "FP32")
        gi.set_data_from_numpy(x)
        gr = g.infer("digits", [gi], headers={"authorization": "Bearer kserve-key"})
        assert gr.as_numpy("output").tobytes() == r.as_numpy("output").tobytes()
    finally:
        s.stop()
