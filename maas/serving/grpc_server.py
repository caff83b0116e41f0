"""The Open Inference Protocol's gRPC service (``inference.GRPCInferenceService``)
over the same server object as the HTTP app: the same registry (models,
versions, batchers), keys (``authorization: Bearer KEY`` or ``x-api-key``
metadata), audit log, metrics and statistics. Message code is generated
from ``proto/grpc_service.proto`` (the command is in that file).

How it runs beside gunicorn: ``maas serve --grpc-port N`` starts **one
gRPC process** (``python -m maas.serving.grpc_server``) from gunicorn's
master once the workers are up, and stops it (SIGTERM: it drains, like the
workers) when the master exits. It builds its own app from the same
options, so it loads the models as one more worker does; the figures
(Prometheus multiprocess files), statistics and the explicit model-control
state (the control file) are shared with the HTTP workers, so they stay
coherent. gRPC is not run inside the gevent workers: grpcio's threads and
gevent's monkey-patching do not mix. ``--dev`` runs it on a thread of the
one process (sharing its batchers too).

>>> from maas.serving import create_app                       # doctest: +SKIP
>>> app = create_app("models/")
>>> srv = start(app.maas_server, "127.0.0.1", 8001)
>>> srv.stop(5)
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
import uuid
from concurrent import futures
from datetime import datetime, timezone

import numpy as np

from .codec import DATATYPES
from .errors import ServingError
from .infer import check_feeds, infer, output_requests, tensor, to_bytes

log = logging.getLogger("maas.serving")

_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
             "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
             "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
             "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def _pb():
    from .proto import grpc_service_pb2 as pb, grpc_service_pb2_grpc as pbg

    return pb, pbg


def _code(status: int):
    import grpc

    return {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
            403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
            405: grpc.StatusCode.UNIMPLEMENTED, 408: grpc.StatusCode.DEADLINE_EXCEEDED,
            413: grpc.StatusCode.RESOURCE_EXHAUSTED, 415: grpc.StatusCode.INVALID_ARGUMENT,
            429: grpc.StatusCode.RESOURCE_EXHAUSTED,
            503: grpc.StatusCode.UNAVAILABLE}.get(status, grpc.StatusCode.INTERNAL)


def _param(p):
    which = p.WhichOneof("parameter_choice")
    return None if which is None else getattr(p, which)


def make_servicer(server):
    """A GRPCInferenceService servicer over ``server`` (an app's ``maas_server``)."""
    pb, pbg = _pb()
    reg = server.registry

    def rpc(kind, auth=True):
        def deco(fn):
            def handler(self, request, context):
                t0 = time.perf_counter()
                md = {k.lower(): v for k, v in (context.invocation_metadata() or ())}
                rid = md.get("x-request-id") or uuid.uuid4().hex
                info = {"model": getattr(request, "model_name", None) or getattr(request, "name", None),
                        "version": None, "rows": None}
                status, msg = 200, ""
                try:
                    if kind == "admin":
                        if not server.admin_digests and server.key_digests:
                            raise ServingError(403, "model management needs an admin key and none "
                                                    "is configured")
                        if not server.key_ok(md.get("x-api-key"), md.get("authorization"),
                                             server.admin_digests):
                            raise ServingError(401, "missing or wrong admin key (metadata "
                                                    "'authorization: Bearer KEY')")
                    elif auth and server.key_digests and not (
                            server.key_ok(md.get("x-api-key"), md.get("authorization"),
                                          server.key_digests)
                            or (kind == "either" and server.admin_digests and server.key_ok(
                                md.get("x-api-key"), md.get("authorization"), server.admin_digests))):
                        raise ServingError(401, "missing or wrong API key; send metadata "
                                                "'authorization: Bearer KEY'")
                    reg.sync()
                    return fn(self, request, context, info)
                except ServingError as e:
                    status, msg = e.status, e.message
                except Exception:
                    log.exception("gRPC %s failed (request id %s)", fn.__name__, rid)
                    status, msg = 500, f"internal server error (request id {rid})"
                finally:
                    dt = time.perf_counter() - t0
                    _account(server, fn.__name__, info, status, dt, t0, rid, context)
                context.abort(_code(status), msg)
            handler.__name__ = fn.__name__
            return handler
        return deco

    class Servicer(pbg.GRPCInferenceServiceServicer):
        @rpc("health", auth=False)
        def ServerLive(self, request, context, info):
            return pb.ServerLiveResponse(live=True)

        @rpc("health", auth=False)
        def ServerReady(self, request, context, info):
            return pb.ServerReadyResponse(ready=reg.ready)

        @rpc("v2")
        def ModelReady(self, request, context, info):
            try:
                lv = reg.lookup(request.name, request.version or None)
            except ServingError as e:
                if e.status == 503:
                    return pb.ModelReadyResponse(ready=False)
                raise
            info["version"] = lv.model.version
            return pb.ModelReadyResponse(ready=True)

        @rpc("v2")
        def ServerMetadata(self, request, context, info):
            from .. import __version__

            return pb.ServerMetadataResponse(name=server.server_name, version=__version__,
                                             extensions=server.extensions)

        @rpc("v2")
        def ModelMetadata(self, request, context, info):
            e = reg.entry(request.name)
            lv = reg.lookup(request.name, request.version or None)
            m = lv.model
            info["version"] = m.version

            def t(s):
                return pb.ModelMetadataResponse.TensorMetadata(
                    name=s.name, datatype=s.datatype, shape=[-1] + [-1 if d is None else d for d in s.shape])
            return pb.ModelMetadataResponse(name=request.name, versions=[str(v) for v in sorted(e.versions)],
                                            platform=m.platform, inputs=[t(s) for s in m.inputs],
                                            outputs=[t(s) for s in m.outputs])

        @rpc("v2")
        def ModelInfer(self, request, context, info):
            raw = list(request.raw_input_contents)
            if raw and len(raw) != len(request.inputs):
                raise ServingError(400, f"raw_input_contents has {len(raw)} tensors for "
                                        f"{len(request.inputs)} inputs; give one per input, in order")
            with reg.acquire(request.model_name, request.model_version or None) as lv:
                m, cfg = lv.model, lv.config
                info["version"] = m.version
                info["infer"] = True
                if not request.inputs:
                    raise ServingError(400, "the request has no inputs")
                feeds = {}
                for i, t in enumerate(request.inputs):
                    where = f"inputs[{i}]"
                    spec = m.input(t.name)
                    if spec is None:
                        raise ServingError(400, f"unknown input {t.name!r}; model {m.name!r} has the "
                                                f"inputs {[s.name for s in m.inputs]}")
                    if spec.name in feeds:
                        raise ServingError(400, f"{where}: input {spec.name!r} is given twice")
                    if raw:
                        b = raw[i]
                    elif t.datatype == "BYTES" and spec.datatype == "BYTES":  # a text model
                        feeds[spec.name] = tensor(spec, where, "BYTES", list(t.shape),
                                                  elements=list(t.contents.bytes_contents))
                        continue
                    else:
                        field = _CONTENTS.get(t.datatype)
                        if field is None or t.datatype not in DATATYPES:
                            raise ServingError(400, f"{where}.datatype {t.datatype!r} is not supported")
                        vals = np.asarray(getattr(t.contents, field))
                        dt = DATATYPES[t.datatype]
                        if vals.size and dt.kind in "iu":
                            lim = np.iinfo(dt)
                            if vals.min() < lim.min or vals.max() > lim.max:
                                raise ServingError(400, f"{where}: a value is out of range for "
                                                        f"{t.datatype}")
                        b = vals.astype(dt).tobytes()
                    feeds[spec.name] = tensor(spec, where, t.datatype, list(t.shape), raw=b,
                                              allow_nan=cfg.allow_nan)
                check_feeds(m, feeds, cfg.max_rows)
                want = None
                if request.outputs:
                    want = [(o.name, {k: _param(v) for k, v in o.parameters.items()
                                      if k != "binary_data"}) for o in request.outputs]
                reqs = output_requests(m, want)
                info["rows"] = int(next(iter(feeds.values())).shape[0])
                info["timing"] = []
                outs = infer(lv, feeds, reqs, info["timing"])
            resp = pb.ModelInferResponse(model_name=request.model_name, model_version=str(m.version),
                                         id=request.id)
            for name, dt, arr, _ in outs:
                o = resp.outputs.add(name=name, datatype=dt, shape=list(arr.shape))
                if raw:
                    resp.raw_output_contents.append(to_bytes(arr, dt))
                elif dt == "BYTES":
                    o.contents.bytes_contents.extend(list(arr.ravel()))
                elif dt == "FP16":
                    resp.raw_output_contents.append(to_bytes(arr, dt))  # no typed field for FP16
                else:
                    getattr(o.contents, _CONTENTS[dt]).extend(arr.ravel().tolist())
            return resp

        @rpc("v2")
        def ModelConfig(self, request, context, info):
            from google.protobuf import json_format

            from .app import triton_config

            lv = reg.lookup(request.name, request.version or None)
            info["version"] = lv.model.version
            cfg = json_format.ParseDict(triton_config(lv), pb.ModelConfig(), ignore_unknown_fields=True)
            return pb.ModelConfigResponse(config=cfg)

        @rpc("v2")
        def ModelStatistics(self, request, context, info):
            from google.protobuf import json_format

            st = server.stats_of(request.name or None, request.version or None)
            return json_format.ParseDict(st, pb.ModelStatisticsResponse(), ignore_unknown_fields=True)

        @rpc("either")
        def RepositoryIndex(self, request, context, info):
            rows = reg.index(request.ready)
            return pb.RepositoryIndexResponse(models=[
                pb.RepositoryIndexResponse.ModelIndex(name=r["name"], version=r.get("version", ""),
                                                      state=r["state"], reason=r.get("reason", ""))
                for r in rows])

        @rpc("admin")
        def RepositoryModelLoad(self, request, context, info):
            from .app import _version_hashes

            _explicit(server)
            params = {k: _param(v) for k, v in request.parameters.items()}
            bad = [k for k in params if k != "config"]
            if bad:
                raise ServingError(400, f"parameter {bad[0]!r} is not supported; supported: config")
            override = params.get("config")
            if isinstance(override, bytes):
                override = override.decode("utf-8", "replace")
            if override is not None:
                try:
                    override = json.loads(override)
                except json.JSONDecodeError as e:
                    raise ServingError(400, f"parameters.config is not valid JSON: {e}") from None
                if not isinstance(override, dict):
                    raise ServingError(400, "parameters.config must be a JSON object")
            e = reg.load(request.model_name, override)
            info["version"] = max(e.versions)
            info["files"] = _version_hashes(e)
            return pb.RepositoryModelLoadResponse()

        @rpc("admin")
        def RepositoryModelUnload(self, request, context, info):
            from .app import _version_hashes

            _explicit(server)
            e = reg.entries.get(request.model_name)
            if e is not None and e.versions:
                info["version"] = max(e.versions)
                info["files"] = _version_hashes(e)
            reg.unload(request.model_name)
            return pb.RepositoryModelUnloadResponse()

    return Servicer()


def _explicit(server):
    if server.model_control != "explicit":
        raise ServingError(403, "loading and unloading models needs explicit model control: "
                                "start the server with --model-control explicit")


def _account(server, method, info, status, dt, t0, rid, context):
    """Metrics, statistics and the audit line of one gRPC call."""
    t1 = time.perf_counter()
    try:
        if method not in ("ServerLive", "ServerReady"):
            served = info["version"] is not None
            server.metrics.on_request(info["model"] or "-" if served else "-",
                                      str(info["version"]) if served else "-", "grpc", status, dt)
        if info.get("infer") and info["version"] is not None:
            tm = info.get("timing") or ()
            server.metrics.on_infer(info["model"], info["version"], status < 400, dt,
                                    tm[0] if len(tm) > 1 else 0.0, tm[1] if len(tm) > 1 else 0.0,
                                    tm[2] - t0 if len(tm) > 3 else 0.0,
                                    t1 - tm[3] if len(tm) > 3 else 0.0, info.get("rows") or 0)
    except Exception:
        log.exception("metrics update failed")
    if server.audit is not None:
        server.audit.info(json.dumps({
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "request_id": rid, "method": "GRPC", "path": f"/inference.GRPCInferenceService/{method}",
            "protocol": "grpc", "model": info.get("model"), "version": info.get("version"),
            "status": status, "latency_ms": round(dt * 1000, 3), "rows": info.get("rows"),
            "client": context.peer(), **({"files": info["files"]} if info.get("files") else {})}))


def tls_from_env() -> dict | None:
    """The TLS files ``maas serve --certfile ...`` gave the gRPC process."""
    if not os.environ.get("MAAS_GRPC_CERTFILE"):
        return None
    return {"certfile": os.environ["MAAS_GRPC_CERTFILE"], "keyfile": os.environ["MAAS_GRPC_KEYFILE"],
            "ca_certs": os.environ.get("MAAS_GRPC_CA_CERTS") or None,
            "require_client_cert": os.environ.get("MAAS_GRPC_REQUIRE_CLIENT_CERT") == "1"}


def _credentials(tls: dict):
    """grpc's server credentials for the HTTP listener's certificate, key and
    client CA (mutual TLS when ``require_client_cert``)."""
    import grpc

    def read(path):
        with open(path, "rb") as f:
            return f.read()
    ca = read(tls["ca_certs"]) if tls.get("ca_certs") else None
    return grpc.ssl_server_credentials([(read(tls["keyfile"]), read(tls["certfile"]))],
                                       root_certificates=ca,
                                       require_client_auth=bool(tls.get("require_client_cert")))


def start(server, host: str = "127.0.0.1", port: int = 8001, threads: int = 16, tls=None):
    """Starts the gRPC service for ``server`` (an app's ``maas_server``) on
    ``host:port``, over TLS with ``tls`` ({certfile, keyfile, ca_certs,
    require_client_cert}, as the HTTP listener's); answers the running
    ``grpc.Server`` (``.stop(grace)``)."""
    import grpc

    _, pbg = _pb()
    limit = server.max_body + (1 << 16)
    g = grpc.server(futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="maas-grpc"),
                    options=[("grpc.max_receive_message_length", limit),
                             ("grpc.max_send_message_length", -1),
                             ("grpc.so_reuseport", 0)])
    pbg.add_GRPCInferenceServiceServicer_to_server(make_servicer(server), g)
    bound = (g.add_secure_port(f"{host}:{port}", _credentials(tls)) if tls
             else g.add_insecure_port(f"{host}:{port}"))
    if not bound:
        raise OSError(f"cannot listen for gRPC on {host}:{port}")
    g.start()
    g.maas_port = bound
    return g


def main() -> int:
    """The gRPC process of ``maas serve --grpc-port`` (options from the
    environment, as the HTTP workers get them)."""
    from .cli import app_from_env

    logging.basicConfig(level=logging.INFO, format="%(asctime)s maas-grpc %(levelname)s %(message)s")
    host = os.environ.get("MAAS_GRPC_HOST", "127.0.0.1")
    port = int(os.environ["MAAS_GRPC_PORT"])
    grace = float(os.environ.get("MAAS_GRPC_GRACE", "30"))
    app = app_from_env()
    tls = tls_from_env()
    g = start(app.maas_server, host, port, int(os.environ.get("MAAS_SERVE_THREADS", "16")), tls)
    log.info("gRPC service listening on %s:%d%s", host, port, " (TLS)" if tls else "")
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    ppid = os.getppid()
    while not stop and os.getppid() == ppid:  # the master gone: stop too
        time.sleep(0.2)
    g.stop(grace).wait(grace + 1)  # in-flight calls finish; new ones are refused
    return 0


if __name__ == "__main__":
    sys.exit(main())
