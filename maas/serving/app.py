"""The Flask app and Blueprint: Open Inference Protocol V2, TF Serving REST,
the simple /predict form, /metrics, API keys and the audit log.

Every refused request gets a 4xx and ``{"error": "..."}`` saying what is
wrong; an unexpected failure gets a 500 with the request id and no stack
trace (the traceback goes to the ``maas.serving`` logger).
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import logging.handlers
import os
import re
import sys
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import numpy as np
from flask import Blueprint, Flask, Response, request
from werkzeug.datastructures import EnvironHeaders
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wsgi import get_content_length, get_input_stream

from . import explain
from .codec import check_fields, dumps, json_values, parse_json
from .errors import ServingError
from .infer import check_feeds, infer, json_data, output_requests, tensor, to_bytes
from .metrics import get_metrics
from .model import ServedModel, resolve_loader
from .repository import ModelConfig, Registry, is_version_name

log = logging.getLogger("maas.serving")

DEFAULT_MAX_BODY = 16 * 1024 * 1024
# after a request body this large, free heap memory goes back to the OS
TRIM_AFTER_BYTES = 1 << 20


def _libc():
    import ctypes
    import ctypes.util

    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        lib.malloc_trim  # glibc only
        return lib
    except (OSError, AttributeError):
        return None


_LIBC = _libc() if sys.platform.startswith("linux") else None


def release_memory() -> None:
    """Gives free heap memory back to the OS (glibc's ``malloc_trim``); the
    parse of a large body leaves megabytes of freed but mapped memory."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
_RID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class _Reply:
    """A response as the views build it: cheaper than a Flask Response,
    turned into one on the Flask path and written straight to WSGI on the
    fast path."""
    __slots__ = ("body", "status", "content_type", "headers")

    def __init__(self, body: bytes, status: int = 200, content_type: str = "application/json",
                 headers=None):
        self.body = body
        self.status = status
        self.content_type = content_type
        self.headers = list(headers.items()) if isinstance(headers, dict) else list(headers or ())

    def to_flask(self) -> Response:
        return Response(self.body, status=self.status, content_type=self.content_type,
                        headers=self.headers)


def _json(obj, status=200, headers=None) -> _Reply:
    return _Reply(dumps(obj), status, "application/json", headers)


class _Call:
    """One request as the views see it, from Flask's ``request`` or, on the
    fast path, straight from the WSGI environ (the same werkzeug helpers
    read the headers, the length and the body either way)."""
    __slots__ = ("environ", "method", "path", "headers", "info", "_max", "_flask")

    def __init__(self, environ, method, path, max_content_length=None, flask_request=None):
        self.environ = environ
        self.method = method
        self.path = path
        self.headers = EnvironHeaders(environ) if flask_request is None else flask_request.headers
        self.info = {"model": None, "version": None, "rows": None, "body_bytes": 0}
        self._max = max_content_length
        self._flask = flask_request

    @property
    def remote_addr(self):
        return self.environ.get("REMOTE_ADDR")

    @property
    def content_length(self):
        if self._flask is not None:
            return self._flask.content_length
        return get_content_length(self.environ)

    @property
    def stream(self):
        if self._flask is not None:
            return self._flask.stream
        return get_input_stream(self.environ, max_content_length=self._max)


class _Server:
    """What one blueprint serves and how."""

    def __init__(self, models, *, loader=None, config=None, batching=None, allow_nan=False,
                 max_rows=8192, api_keys=None, audit_log=None, poll_interval=2.0,
                 max_body_bytes=DEFAULT_MAX_BODY, server_name="maas", require_models=None,
                 model_control="poll", load_models=(), admin_keys=None, state_dir=None,
                 cors_origin=None):
        self.metrics = get_metrics()
        defaults = ModelConfig(batching=batching, allow_nan=allow_nan, max_rows=max_rows)
        self.registry = Registry(resolve_loader(loader), defaults, on_batch=self.metrics.on_batch,
                                 on_change=self.metrics.on_change, required=require_models)
        config = config or {}
        if isinstance(models, (str, os.PathLike)) and os.path.isdir(models) and not _is_model_folder(models):
            self.registry.set_repository(os.fspath(models))
        elif isinstance(models, dict):
            for name, m in models.items():
                self.registry.add_object(str(name), m, config.get(name))
        elif isinstance(models, (str, os.PathLike)):
            name = os.path.splitext(os.path.basename(os.fspath(models).rstrip("/")))[0] or "model"
            self.registry.add_object(name, models, config.get(name))
        else:
            name = models.name if isinstance(models, ServedModel) else "model"
            self.registry.add_object(name, models, config.get(name))
        if model_control not in ("poll", "explicit"):
            raise ValueError(f"model_control must be 'poll' or 'explicit', received {model_control!r}")
        self.model_control = model_control
        if model_control == "explicit":
            from .repository import ControlFile

            state_dir = state_dir or os.environ.get("MAAS_STATE_DIR")
            self.registry.set_control(ControlFile(state_dir) if state_dir else None,
                                      list(load_models or ()))
            if self.registry.repo is not None:
                self.registry.scan()
        self.registry.start_polling(poll_interval)
        api_keys = _keys(api_keys, "MAAS_API_KEYS", "api_keys")
        admin_keys = _keys(admin_keys, "MAAS_ADMIN_KEYS", "admin_keys")
        self.key_digests = [hashlib.sha256(k.encode()).digest() for k in api_keys]
        self.admin_digests = [hashlib.sha256(k.encode()).digest() for k in admin_keys]
        if set(self.key_digests) & set(self.admin_digests):
            raise ValueError("an admin key must differ from every inference key")
        self.cors_origin = cors_origin
        self.extensions = ["binary_tensor_data", "classification", "model_repository",
                           "model_repository_index", "model_configuration", "statistics",
                           "explain"]
        self.max_body = int(max_body_bytes)
        self.server_name = server_name
        self.audit = _audit_logger(audit_log)

    # -- request plumbing ----------------------------------------------
    def authorized(self, call: _Call, digests=None) -> bool:
        digests = self.key_digests if digests is None else digests
        if not digests:
            return True
        return self.key_ok(call.headers.get("X-API-Key"), call.headers.get("Authorization", ""),
                           digests)

    def key_ok(self, key, auth, digests) -> bool:
        """Whether the X-API-Key value or the Authorization: Bearer value is
        one of ``digests``'s keys (compared in constant time)."""
        auth = auth or ""
        if key is None and auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
        got = hashlib.sha256((key or "").encode("utf-8", "replace")).digest()
        ok = False
        for d in digests:  # no early exit: the time does not depend on which key
            ok |= hmac.compare_digest(got, d)
        return ok and key is not None

    def body(self, call: _Call) -> bytes:
        n = call.content_length
        if n is not None and n > self.max_body:
            raise ServingError(413, f"the request body is {n} bytes, over the limit of "
                                    f"{self.max_body} bytes")
        try:
            if n is None and call.environ.get("wsgi.input_terminated"):
                # chunked: no length to trust; read the server's stream up
                # to one byte past the limit (werkzeug's limited stream
                # would cut it at the limit without saying so)
                raw, parts, got = call.environ["wsgi.input"], [], 0
                while got <= self.max_body:
                    part = raw.read(min(1 << 16, self.max_body + 1 - got))
                    if not part:
                        break
                    parts.append(part)
                    got += len(part)
                data = b"".join(parts)
            else:
                data = call.stream.read(self.max_body + 1)
        except Exception as e:  # the client's bytes: a bad chunk, a stall, a disconnect
            root = e  # werkzeug wraps the server's error (as ClientDisconnected)
            while root.__cause__ is not None or (root.__context__ is not None
                                                 and not root.__suppress_context__):
                root = root.__cause__ or root.__context__
            if root is e and isinstance(e, HTTPException) and e.code != 400:
                raise
            status = getattr(root, "http_status", 400)
            raise ServingError(status, f"the request body could not be read: "
                                       f"{type(root).__name__}: {str(root)[:200]}") from None
        call.info["body_bytes"] = len(data)
        if len(data) > self.max_body:
            raise ServingError(413, f"the request body is over the limit of {self.max_body} bytes")
        enc = (call.headers.get("Content-Encoding") or "").strip().lower()
        if enc and enc != "identity":
            data = self.decompress(data, enc)
            call.info["body_bytes"] = max(call.info["body_bytes"], len(data))
        return data

    def decompress(self, data: bytes, enc: str) -> bytes:
        """A gzip or deflate body, inflated to at most the body limit (a
        body that inflates past it is a 413, however small it was sent)."""
        import zlib

        if enc in ("gzip", "x-gzip"):
            tries = (16 + zlib.MAX_WBITS,)
        elif enc == "deflate":  # zlib-wrapped as HTTP says; raw deflate as some clients send
            tries = (zlib.MAX_WBITS, -zlib.MAX_WBITS)
        else:
            raise ServingError(415, f"Content-Encoding {enc!r} is not supported; send gzip, "
                                    f"deflate or identity")
        for i, wbits in enumerate(tries):
            d = zlib.decompressobj(wbits)
            try:
                out = d.decompress(data, self.max_body + 1)
            except zlib.error as e:
                if i + 1 < len(tries):
                    continue
                raise ServingError(400, f"the {enc} request body cannot be decompressed: {e}") from None
            if len(out) > self.max_body or d.unconsumed_tail:
                raise ServingError(413, f"the request body decompresses to more than the limit of "
                                        f"{self.max_body} bytes")
            if not d.eof:
                raise ServingError(400, f"the {enc} request body is truncated")
            return out
        raise AssertionError("not reached")

    def model_config(self, lv):
        return lv.config


def _keys(keys, env, what) -> list[str]:
    """API keys from an argument or the environment; an empty key is refused."""
    if keys is None and os.environ.get(env):
        keys = os.environ[env].split(",")
        keys = [k.strip() for k in keys]
    if isinstance(keys, str):
        keys = [keys]
    keys = list(keys or [])
    for k in keys:
        if not isinstance(k, str) or not k.strip():
            raise ValueError(f"{what}: an API key may not be empty")
    return [k.strip() for k in keys]


def _version_hashes(entry) -> dict:
    """``{version: {file: sha256}}`` of a repository model's loaded
    versions (for the audit log of management calls)."""
    out = {}
    if entry is None or not entry.path:
        return out
    for v in sorted(entry.versions):
        d = os.path.join(entry.path, str(v))
        files = {}
        for f in sorted(os.listdir(d)) if os.path.isdir(d) else ():
            p = os.path.join(d, f)
            if f.startswith(".") or not os.path.isfile(p):
                continue
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            files[f] = h.hexdigest()
        out[str(v)] = files
    return out


def triton_config(lv) -> dict:
    """A loaded version's configuration in Triton's model-config JSON
    (``GET /v2/models/{m}/config``; the gRPC ModelConfig message)."""
    m, cfg = lv.model, lv.config

    def dt(s):
        return "TYPE_STRING" if s.datatype == "BYTES" else "TYPE_" + s.datatype

    def dims(s):
        return [-1 if d is None else d for d in s.shape] or [1]

    kind, arg = cfg.version_policy
    policy = ({"latest": {"num_versions": arg}} if kind == "latest" else {"all": {}} if kind == "all"
              else {"specific": {"versions": sorted(arg)}})
    out = {"name": m.name, "platform": m.platform,
           "backend": "onnxruntime" if m.platform == "onnxruntime_onnx" else "maas",
           "version_policy": policy,
           "max_batch_size": (cfg.batching or {}).get("max_batch_size", cfg.max_rows),
           "input": [{"name": s.name, "data_type": dt(s), "format": "FORMAT_NONE", "dims": dims(s)}
                     for s in m.inputs],
           "output": [{"name": s.name, "data_type": dt(s), "dims": dims(s),
                       "label_filename": "labels.txt" if m.labels is not None and len(s.shape) == 1
                       else ""} for s in m.outputs],
           "parameters": {"max_rows": {"string_value": str(cfg.max_rows)},
                          "allow_nan": {"string_value": str(cfg.allow_nan).lower()}}}
    if cfg.batching:
        out["dynamic_batching"] = {
            "max_queue_delay_microseconds": int(cfg.batching["max_delay_ms"] * 1000),
            "default_queue_policy": {"max_queue_size": cfg.batching["max_queue_rows"]}}
    return out


_TAGS = {"v2": "Open Inference Protocol (V2)", "tfserving": "TensorFlow Serving REST",
         "simple": "simple form", "metrics": "metrics", "health": "health"}


def openapi_document(routes, server) -> dict:
    """OpenAPI 3.0 from the blueprint's route table (``bp.maas_routes``)."""
    from .. import __version__

    paths = {}
    for rule, methods, protocol, auth, summary in routes:
        params = re.findall(r"<(?:[a-z]+:)?([A-Za-z_]+)>", rule)
        path = re.sub(r"<(?:[a-z]+:)?([A-Za-z_]+)>", r"{\1}", rule)
        item = paths.setdefault(path, {})
        for m in methods:
            op = {"summary": summary, "tags": [_TAGS.get(protocol, protocol)],
                  "parameters": [{"name": p, "in": "path", "required": True,
                                  "schema": {"type": "string"}} for p in params],
                  "responses": {"200": {"description": "OK", "content": {"application/json": {}}},
                                "4XX": {"description": "refused: {\"error\": \"...\"}",
                                        "content": {"application/json": {"schema": {
                                            "$ref": "#/components/schemas/Error"}}}}}}
            if m == "POST":
                op["requestBody"] = {"required": False, "content": {"application/json": {}}}
            if auth == "admin":
                op["security"] = [{"adminKey": []}]
            elif auth is True:
                op["security"] = []
            item[m.lower()] = op
    return {"openapi": "3.0.3",
            "info": {"title": f"{server.server_name} model server", "version": __version__},
            "paths": dict(sorted(paths.items())),
            "components": {"schemas": {"Error": {"type": "object", "required": ["error"],
                                                 "properties": {"error": {"type": "string"}}}},
                           "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"},
                                               "adminKey": {"type": "http", "scheme": "bearer"}}},
            "security": [{"apiKey": []}] if server.key_digests else []}


def _is_model_folder(path) -> bool:
    """A folder of version folders (one model), not a repository."""
    try:
        names = os.listdir(path)
    except OSError:
        return False
    return any(is_version_name(n) for n in names) and not any(
        os.path.isdir(os.path.join(path, n)) and not is_version_name(n) and not n.startswith(".")
        for n in names)


def _audit_logger(target):
    if target is None or target is False:
        return None
    lg = logging.getLogger(f"maas.serving.audit.{uuid.uuid4().hex[:8]}")
    lg.propagate = False
    lg.setLevel(logging.INFO)
    # WatchedFileHandler: reopened when logrotate moves the file away
    h = (logging.StreamHandler(sys.stderr) if target in ("-", "stderr", True)
         else logging.handlers.WatchedFileHandler(target))
    h.setFormatter(logging.Formatter("%(message)s"))
    lg.addHandler(h)
    return lg


def _dispatch(server: _Server, protocol: str, open_: bool, view, call: _Call, kwargs) -> _Reply:
    """Request id, API key, errors as JSON, metrics and the audit line
    around one view call; the same for the Flask path and the fast path."""
    t0 = time.perf_counter()
    rid = call.headers.get("X-Request-ID", "")
    if not _RID.match(rid):
        rid = uuid.uuid4().hex
    info = call.info
    info["model"] = kwargs.get("name")
    try:
        if open_ == "admin":
            if not server.admin_digests and server.key_digests:
                resp = _json({"error": "model management needs an admin key and none is "
                                       "configured (maas serve --admin-key-file FILE)"}, 403)
            elif not server.authorized(call, server.admin_digests):
                resp = _json({"error": "missing or wrong admin key; model management takes the "
                                       "admin key (not an inference key) as 'Authorization: "
                                       "Bearer KEY' or 'X-API-Key: KEY'"}, 401,
                             {"WWW-Authenticate": 'Bearer realm="maas-admin"'})
            else:
                server.registry.sync()
                resp = view(call, **kwargs)
        elif open_ == "either" and not (server.authorized(call) or (
                server.admin_digests and server.authorized(call, server.admin_digests))):
            resp = _json({"error": "missing or wrong API key; send it as 'Authorization: "
                                   "Bearer KEY' or 'X-API-Key: KEY'"}, 401,
                         {"WWW-Authenticate": 'Bearer realm="maas"'})
        elif open_ != "either" and not open_ and not server.authorized(call):
            resp = _json({"error": "missing or wrong API key; send it as 'Authorization: "
                                   "Bearer KEY' or 'X-API-Key: KEY'"}, 401,
                         {"WWW-Authenticate": 'Bearer realm="maas"'})
        else:
            server.registry.sync()
            resp = view(call, **kwargs)
    except ServingError as e:
        resp = _json({"error": e.message}, e.status)
    except HTTPException as e:
        resp = _json({"error": e.description or e.name}, e.code or 500)
    except Exception:
        log.exception("request %s %s %s failed", rid, call.method, call.path)
        resp = _json({"error": f"internal server error (request id {rid}); the server's "
                               f"log has the details"}, 500)
    resp.headers.append(("X-Request-ID", rid))
    if server.cors_origin:
        resp.headers.append(("Access-Control-Allow-Origin", server.cors_origin))
        resp.headers.append(("Vary", "Origin"))
    t1 = time.perf_counter()
    dt = t1 - t0
    if info.get("infer") and info["version"] is not None:
        tm = info.get("timing") or ()
        try:
            server.metrics.on_infer(info["model"], info["version"], resp.status < 400, dt,
                                    tm[0] if len(tm) > 1 else 0.0, tm[1] if len(tm) > 1 else 0.0,
                                    tm[2] - t0 if len(tm) > 3 else 0.0,
                                    t1 - tm[3] if len(tm) > 3 else 0.0, info.get("rows") or 0)
        except Exception:
            log.exception("statistics update failed")
    if protocol != "health":
        served = info["version"] is not None
        try:
            server.metrics.on_request(info["model"] or "-" if served else "-",
                                      str(info["version"]) if served else "-",
                                      protocol, resp.status, dt)
        except Exception:
            log.exception("metrics update failed")
    if server.audit is not None:
        server.audit.info(json.dumps({
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "request_id": rid, "method": call.method, "path": call.path,
            "protocol": protocol, "model": info.get("model"), "version": info.get("version"),
            "status": resp.status, "latency_ms": round(dt * 1000, 3),
            "rows": info.get("rows"), "client": call.remote_addr,
            **({"files": info["files"]} if info.get("files") else {}), **info.get("audit", {})}))
    if info["body_bytes"] >= TRIM_AFTER_BYTES:
        release_memory()
    return resp


def _handled(server: _Server, protocol: str, open_: bool = False):
    """A view ``f(call, **url_args) -> _Reply`` as a Flask view."""
    def deco(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            call = _Call(request.environ, request.method, request.path, flask_request=request)
            return _dispatch(server, protocol, open_, view, call, kwargs).to_flask()
        wrapper.maas_view = (view, protocol, open_)
        return wrapper
    return deco


def _note(call: _Call, lv, rows):
    info = call.info
    info["model"] = lv.model.name
    info["version"] = lv.model.version
    info["rows"] = rows


def _io(s):
    return {"name": s.name, "datatype": s.datatype, "shape": [-1] + [-1 if d is None else d for d in s.shape]}


TF_DTYPES = {"FP32": "DT_FLOAT", "FP64": "DT_DOUBLE", "FP16": "DT_HALF", "INT8": "DT_INT8",
             "INT16": "DT_INT16", "INT32": "DT_INT32", "INT64": "DT_INT64", "UINT8": "DT_UINT8",
             "UINT16": "DT_UINT16", "UINT32": "DT_UINT32", "UINT64": "DT_UINT64", "BOOL": "DT_BOOL",
             "BYTES": "DT_STRING"}


def _b64_check(data, where, spec):
    """TF Serving's {"b64": ...} marks binary values; maas's inputs are
    numbers, so one inside a numeric input is refused by name."""
    stack = [data]
    n = 0
    while stack and n < 100000:
        v = stack.pop()
        n += 1
        if isinstance(v, dict):
            if set(v) == {"b64"}:
                raise ServingError(400, f"{where} holds {{\"b64\": ...}} binary data; input "
                                        f"{spec.name!r} is {spec.datatype}: send numbers")
            return
        if isinstance(v, list) and v and isinstance(v[0], (list, dict)):
            stack.extend(v)


def blueprint(models: Any, *, name: str = "maas_serving", loader=None, config: dict | None = None,
              batching=None, allow_nan: bool = False, max_rows: int = 8192, api_keys=None,
              audit_log=None, poll_interval: float = 2.0, max_body_bytes: int = DEFAULT_MAX_BODY,
              require_models=None, model_control: str = "poll", load_models=(), admin_keys=None,
              state_dir=None, cors_origin=None) -> Blueprint:
    """A Flask Blueprint serving ``models`` (see :func:`create_app`).

    >>> from flask import Flask
    >>> app = Flask(__name__)
    >>> app.register_blueprint(blueprint(served_model), url_prefix="/ml")  # doctest: +SKIP
    """
    server = _Server(models, loader=loader, config=config, batching=batching, allow_nan=allow_nan,
                     max_rows=max_rows, api_keys=api_keys, audit_log=audit_log,
                     poll_interval=poll_interval, max_body_bytes=max_body_bytes,
                     require_models=require_models, model_control=model_control,
                     load_models=load_models, admin_keys=admin_keys, state_dir=state_dir,
                     cors_origin=cors_origin)
    reg = server.registry
    bp = Blueprint(name, __name__)
    bp.maas_server = server  # for tests and the CLI

    bp.maas_routes = []  # (rule, methods, protocol, auth, summary): the one route description

    def route(rule, protocol, methods=("GET",), open_=False, **kw):
        def deco(f):
            h = _handled(server, protocol, open_)(f)
            summary = (f.__doc__ or f.__name__.replace("_", " ")).strip().splitlines()[0]
            for i, r in enumerate([rule] if isinstance(rule, str) else rule):
                bp.maas_routes.append((r, tuple(methods), protocol, open_, summary))
                bp.add_url_rule(r, endpoint=f"{f.__name__}_{i}", view_func=h,
                                methods=list(methods), **kw)
            return h
        return deco

    # ---------------- Open Inference Protocol (V2) ----------------------
    @route("/v2", "v2")
    def v2_server_metadata(call):
        from .. import __version__
        return _json({"name": server.server_name, "version": __version__,
                      "extensions": list(server.extensions)})

    @route("/v2/health/live", "health", open_=True)
    def v2_live(call):
        return _json({"live": True})

    @route("/v2/health/ready", "health", open_=True)
    def v2_ready(call):
        ready = reg.ready
        return _json({"ready": ready}, 200 if ready else 503)

    def model_metadata(call, name, version=None):
        e = reg.entry(name)
        lv = reg.lookup(name, version)
        _note(call, lv, None)
        m = lv.model
        return {"name": name, "versions": [str(v) for v in sorted(e.versions)],
                "platform": m.platform, "inputs": [_io(s) for s in m.inputs],
                "outputs": [_io(s) for s in m.outputs]}

    @route(["/v2/models/<name>", "/v2/models/<name>/versions/<version>"], "v2")
    def v2_model_metadata(call, name, version=None):
        return _json(model_metadata(call, name, version))

    @route(["/v2/models/<name>/ready", "/v2/models/<name>/versions/<version>/ready"], "v2")
    def v2_model_ready(call, name, version=None):
        try:
            lv = reg.lookup(name, version)
        except ServingError as e:
            if e.status == 503:
                return _json({"name": name, "ready": False}, 503)
            raise
        _note(call, lv, None)
        return _json({"name": name, "ready": True})

    @route("/v2/repository/index", "v2", methods=("POST", "GET"), open_="either")
    def v2_repository_index(call):
        ready = False
        if call.method == "POST":
            body = server.body(call)
            if body.strip():
                req = parse_json(body)
                check_fields(req, "the request", [], ["ready", "repository_name"])
                ready = req.get("ready", False)
                if not isinstance(ready, bool):
                    raise ServingError(400, "'ready' must be true or false")
        return _json(reg.index(ready))

    def management(call, name, allowed):
        call.info["model"] = name
        if server.model_control != "explicit":
            raise ServingError(403, "loading and unloading models needs explicit model control: "
                                    "start the server with --model-control explicit (the "
                                    "repository is polled for changes otherwise)")
        body = server.body(call)
        params = {}
        if body.strip():
            req = parse_json(body)
            check_fields(req, "the request", [], ["parameters"])
            params = req.get("parameters") or {}
            if not isinstance(params, dict):
                raise ServingError(400, "'parameters' must be an object")
            bad = [k for k in params if k not in allowed]
            if bad:
                raise ServingError(400, f"parameter {bad[0]!r} is not supported here; supported: "
                                        f"{', '.join(allowed) or 'none'}")
        return params

    @route("/v2/repository/models/<name>/load", "v2", methods=("POST",), open_="admin")
    def v2_repository_load(call, name):
        params = management(call, name, ("config",))
        override = params.get("config")
        if isinstance(override, str):
            try:
                override = json.loads(override)
            except json.JSONDecodeError as e:
                raise ServingError(400, f"parameters.config is not valid JSON: {e}") from None
        if override is not None and not isinstance(override, dict):
            raise ServingError(400, "parameters.config must be a JSON object (as a string or an object)")
        e = reg.load(name, override)
        call.info["version"] = max(e.versions)
        call.info["files"] = _version_hashes(e)
        return _json({})

    @route("/v2/repository/models/<name>/unload", "v2", methods=("POST",), open_="admin")
    def v2_repository_unload(call, name):
        management(call, name, ("unload_dependents",))
        e = reg.entries.get(name)
        if e is not None and e.versions:
            call.info["version"] = max(e.versions)
            call.info["files"] = _version_hashes(e)
        reg.unload(name)
        return _json({})

    @route(["/v2/models/<name>/config", "/v2/models/<name>/versions/<version>/config"], "v2")
    def v2_model_config(call, name, version=None):
        lv = reg.lookup(name, version)
        _note(call, lv, None)
        return _json(triton_config(lv))

    def stats_of(name=None, version=None):
        if name is None:
            pairs = [(n, v) for n, e in sorted(reg.entries.items()) for v in sorted(e.versions)]
        elif version is None:
            e = reg.entry(name)
            pairs = [(name, v) for v in sorted(e.versions)]
        else:
            pairs = [(name, reg.lookup(name, version).model.version)]
        return {"model_stats": server.metrics.stats(pairs)}

    server.stats_of = stats_of

    @route(["/v2/models/stats", "/v2/models/<name>/stats",
            "/v2/models/<name>/versions/<version>/stats"], "v2")
    def v2_stats(call, name=None, version=None):
        return _json(stats_of(name, version))

    @route(["/v2/models/<name>/infer", "/v2/models/<name>/versions/<version>/infer"], "v2",
           methods=("POST",))
    def v2_infer(call, name, version=None):
        body = server.body(call)
        hlen = call.headers.get("Inference-Header-Content-Length")
        binary = b""
        if hlen is not None:
            try:
                n = int(hlen)
                if n < 0 or n > len(body):
                    raise ValueError
            except ValueError:
                raise ServingError(400, f"Inference-Header-Content-Length is {hlen!r}; it must be "
                                        f"the JSON header's length, at most the body's {len(body)} "
                                        f"bytes") from None
            body, binary = body[:n], body[n:]
        req = parse_json(body)
        check_fields(req, "the request", ["inputs"], ["id", "parameters", "outputs"])
        rid = req.get("id")
        if rid is not None and not isinstance(rid, str):
            raise ServingError(400, "the request's 'id' must be a string")
        params = req.get("parameters") or {}
        if not isinstance(params, dict):
            raise ServingError(400, "the request's 'parameters' must be an object")
        with reg.acquire(name, version) as lv:
            m, cfg = lv.model, lv.config
            _note(call, lv, None)
            call.info["infer"] = True
            inputs = req["inputs"]
            if not isinstance(inputs, list) or not inputs:
                raise ServingError(400, "'inputs' must be a non-empty array of input tensors")
            feeds, off = {}, 0
            for i, inp in enumerate(inputs):
                where = f"inputs[{i}]"
                if not isinstance(inp, dict):
                    raise ServingError(400, f"{where} must be an object with name, shape, datatype, data")
                check_fields(inp, where, ["name", "shape", "datatype"], ["data", "parameters"])
                spec = m.input(inp["name"]) if isinstance(inp["name"], str) else None
                if spec is None:
                    raise ServingError(400, f"unknown input {inp['name']!r}; model {name!r} has the "
                                            f"input{'s' if len(m.inputs) > 1 else ''} "
                                            f"{', '.join(repr(s.name) for s in m.inputs)}")
                if spec.name in feeds:
                    raise ServingError(400, f"{where}: input {spec.name!r} is given twice (model "
                                            f"{name!r} takes {len(m.inputs)} input"
                                            f"{'s' if len(m.inputs) > 1 else ''}, each once)")
                iparams = inp.get("parameters") or {}
                if not isinstance(iparams, dict):
                    raise ServingError(400, f"{where}.parameters must be an object")
                if "binary_data_size" in iparams:
                    if "data" in inp:
                        raise ServingError(400, f"{where} has both 'data' and binary_data_size; send one")
                    size = iparams["binary_data_size"]
                    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                        raise ServingError(400, f"{where}.parameters.binary_data_size must be a "
                                                f"non-negative integer")
                    if off + size > len(binary):
                        raise ServingError(400, f"{where}: binary_data_size is {size} bytes, the body "
                                                f"carries {len(binary) - off} bytes after the "
                                                f"JSON header and the inputs before it")
                    feeds[spec.name] = tensor(spec, where, inp["datatype"], inp["shape"],
                                              raw=binary[off:off + size], allow_nan=cfg.allow_nan,
                                              raw_label="binary_data_size says")
                    off += size
                else:
                    if "data" not in inp:
                        raise ServingError(400, f"{where} is missing the field 'data' (or "
                                                f"parameters.binary_data_size with binary data)")
                    feeds[spec.name] = tensor(spec, where, inp["datatype"], inp["shape"],
                                              data=inp["data"], allow_nan=cfg.allow_nan)
            if off != len(binary):
                raise ServingError(400, f"the body has {len(binary) - off} bytes of binary data that "
                                        f"no input claims")
            check_feeds(m, feeds, cfg.max_rows)
            want = req.get("outputs")
            if want is not None:
                if not isinstance(want, list):
                    raise ServingError(400, "'outputs' must be an array of {\"name\": ...}")
                for i, o in enumerate(want):
                    if not isinstance(o, dict):
                        raise ServingError(400, f"outputs[{i}] must be an object with a name")
                    check_fields(o, f"outputs[{i}]", ["name"], ["parameters"])
                    if not isinstance(o.get("parameters") or {}, dict):
                        raise ServingError(400, f"outputs[{i}].parameters must be an object")
                want = [(o["name"], o.get("parameters")) for o in want]
            reqs = output_requests(m, want, bool(params.get("binary_data_output", False)))
            rows = int(next(iter(feeds.values())).shape[0])
            _note(call, lv, rows)
            outs = infer(lv, feeds, reqs, call.info.setdefault("timing", []))
        resp = {"model_name": name, "model_version": str(m.version)}
        if rid is not None:
            resp["id"] = rid
        tail, outputs = [], []
        for oname, dt, arr, b in outs:
            o = {"name": oname, "datatype": dt, "shape": list(arr.shape)}
            if b:
                raw = to_bytes(arr, dt)
                o["parameters"] = {"binary_data_size": len(raw)}
                tail.append(raw)
            else:
                o["data"], nonfinite = json_data(arr, dt)
                if nonfinite:  # JSON has no NaN: null, and a flag saying why
                    o["parameters"] = {"nonfinite": True}
            outputs.append(o)
        resp["outputs"] = outputs
        if tail:
            head = dumps(resp)
            return _Reply(head + b"".join(tail), 200, "application/octet-stream",
                          headers={"Inference-Header-Content-Length": str(len(head))})
        return _json(resp)

    @route(["/v2/models/<name>/explain", "/v2/models/<name>/versions/<version>/explain"], "explain",
           methods=("POST",))
    def v2_explain(call, name, version=None):  # the "explain" extension: maas/serving/explain.py
        return explain.explain_v2(server, reg, call, name, version)

    # ---------------- TensorFlow Serving REST ---------------------------
    tf_path = re.compile(r"^(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?"
                         r"(?::(?P<verb>[a-z]+)|/(?P<meta>metadata))?$")

    def tf_parse(rest):
        mt = tf_path.match(rest)
        if not mt:
            raise ServingError(404, f"no such endpoint /v1/models/{rest}; use "
                                    f"/v1/models/NAME[/versions/N][:predict|:classify|:regress|/metadata]")
        return mt.group("name"), mt.group("version"), mt.group("verb"), mt.group("meta")

    def tf_sig(s):
        return {"dtype": TF_DTYPES.get(s.datatype, "DT_INVALID"), "name": s.name,
                "tensor_shape": {"dim": [{"size": str(-1 if d is None else d)}
                                         for d in (None,) + s.shape], "unknown_rank": False}}

    @route("/v1/models/<path:rest>", "tfserving", methods=("GET", "POST"))
    def tf_models(call, rest):
        name, version, verb, meta = tf_parse(rest)
        call.info["model"] = name
        if call.method == "GET":
            if verb:
                raise ServingError(405, f":{verb} takes POST")
            if meta:
                lv = reg.lookup(name, version)
                _note(call, lv, None)
                m = lv.model
                return _json({"model_spec": {"name": name, "signature_name": "",
                                             "version": str(m.version)},
                              "metadata": {"signature_def": {"signature_def": {"serving_default": {
                                  "inputs": {s.name: tf_sig(s) for s in m.inputs},
                                  "outputs": {s.name: tf_sig(s) for s in m.outputs},
                                  "method_name": "tensorflow/serving/predict"}}}}})
            return _json({"model_version_status": reg.version_status(name, version)})
        if meta or verb is None:
            raise ServingError(405, "POST to /v1/models/NAME[/versions/N]:predict")
        if verb == "explain":
            return explain.explain_v1(server, reg, call, name, version)
        if verb not in ("predict", "classify", "regress"):
            raise ServingError(400, f":{verb} is not supported; maas serves :predict, :classify, "
                                    f":regress and :explain")
        req = parse_json(server.body(call))
        if verb != "predict":
            return tf_classify_regress(call, name, version, verb, req)
        check_fields(req, "the request", [], ["signature_name", "instances", "inputs"])
        if ("instances" in req) == ("inputs" in req):
            raise ServingError(400, "send exactly one of 'instances' (row form) or 'inputs' "
                                    "(columnar form)")
        tf_signature(req)
        with reg.acquire(name, version) as lv:
            m, cfg = lv.model, lv.config
            _note(call, lv, None)
            call.info["infer"] = True
            if "instances" in req:
                what = "instances"
                feeds = tf_rows(m, req["instances"], cfg)
            else:
                what = "inputs"
                data = req["inputs"]
                if isinstance(data, dict):
                    names = [s.name for s in m.inputs]
                    if set(data) != set(names):
                        raise ServingError(400, f"'inputs' names {sorted(data)}; the model's "
                                                f"{'inputs are' if len(names) > 1 else 'only input is'} "
                                                f"{', '.join(map(repr, names))}")
                    feeds = {s.name: json_tensor(s, f"inputs[{s.name!r}]", data[s.name], cfg)
                             for s in m.inputs}
                else:
                    if len(m.inputs) != 1:
                        raise ServingError(400, f"model {name!r} has {len(m.inputs)} inputs; send "
                                                f"'inputs' as an object keyed by input name")
                    feeds = {m.input_name: json_tensor(m.inputs[0], "inputs", data, cfg)}
            check_feeds(m, feeds, cfg.max_rows, what)
            _note(call, lv, int(next(iter(feeds.values())).shape[0]))
            outs = infer(lv, feeds, output_requests(m, None), call.info.setdefault("timing", []))
        nonfinite = False
        cols = {}
        for oname, dt, arr, _ in outs:
            if dt == "BYTES":
                cols[oname] = [e.decode("utf-8", "replace") for e in arr.ravel()]
                continue
            v, nf = json_values(arr)
            nonfinite |= nf
            cols[oname] = v
        if what == "instances":
            if len(outs) == 1:
                body = {"predictions": cols[outs[0][0]]}
            else:
                n = len(outs[0][2])
                body = {"predictions": [{k: cols[k][r] for k in cols} for r in range(n)]}
        else:
            body = {"outputs": cols[outs[0][0]] if len(outs) == 1 else cols}
        if nonfinite:
            body["nonfinite"] = True
        return _json(body)

    def tf_signature(req):
        sig = req.get("signature_name", "serving_default")
        if sig not in ("serving_default", "", None):
            raise ServingError(400, f"unknown signature_name {sig!r}; the model has 'serving_default'")

    def json_tensor(spec, where, data, cfg):
        if spec.datatype == "BYTES":  # a text model: strings (or TF Serving's {"b64": ...})
            return tensor(spec, where, "BYTES", None, data=data, b64=True)
        if isinstance(data, dict) and set(data) == {"b64"}:
            raise ServingError(400, f"{where} is {{\"b64\": ...}} binary data; input {spec.name!r} "
                                    f"is {spec.datatype}: send numbers")
        _b64_check(data, where, spec)
        dt = "FP64" if spec.dtype.kind == "f" else ("BOOL" if spec.datatype == "BOOL" else "INT64")
        return tensor(spec, where, dt, None, data=data, allow_nan=cfg.allow_nan)

    def tf_rows(m, rows, cfg, what="instances", context=None):
        if not isinstance(rows, list):
            raise ServingError(400, f"'{what}' must be a list of rows")
        names = [s.name for s in m.inputs]
        b64_rows = (len(m.inputs) == 1 and m.inputs[0].datatype == "BYTES"
                    and all(isinstance(r, dict) and set(r) == {"b64"} for r in rows))
        if rows and all(isinstance(r, dict) for r in rows) and not b64_rows:
            cols = {n: [] for n in names}
            for i, r in enumerate(rows):
                if context:
                    r = {**context, **r}
                if set(r) != set(names):
                    raise ServingError(400, f"{what}[{i}] names {sorted(r)}; the model's "
                                            f"{'inputs are' if len(names) > 1 else 'only input is'} "
                                            f"{', '.join(map(repr, names))}")
                for n in names:
                    cols[n].append(r[n])
            return {s.name: json_tensor(s, f"{what}[*][{s.name!r}]", cols[s.name], cfg)
                    for s in m.inputs}
        if len(names) != 1:
            raise ServingError(400, f"the model has {len(names)} inputs ({', '.join(map(repr, names))}); "
                                    f"send each row as an object keyed by input name")
        return {names[0]: json_tensor(m.inputs[0], what, rows, cfg)}

    def tf_classify_regress(call, name, version, verb, req):
        check_fields(req, "the request", ["examples"], ["signature_name", "context"])
        tf_signature(req)
        ctx = req.get("context") or {}
        if not isinstance(ctx, dict):
            raise ServingError(400, "'context' must be an object of features shared by the examples")
        with reg.acquire(name, version) as lv:
            m, cfg = lv.model, lv.config
            _note(call, lv, None)
            call.info["infer"] = True
            ex = req["examples"]
            if not isinstance(ex, list) or not all(isinstance(e, dict) for e in ex) or not ex:
                raise ServingError(400, "'examples' must be a non-empty list of objects keyed by "
                                        "input name")
            if len(m.outputs) != 1:
                raise ServingError(400, f":{verb} needs a model with one output; {name!r} has "
                                        f"{len(m.outputs)}: use :predict")
            spec = m.outputs[0]
            if verb == "classify" and (len(spec.shape) != 1 or (spec.shape[0] or 2) < 2):
                raise ServingError(400, f":classify needs one score per class, an output of shape "
                                        f"(batch, classes); {name!r} answers (batch, "
                                        f"{', '.join('any' if d is None else str(d) for d in spec.shape)}): "
                                        f"use :predict or :regress")
            if verb == "regress" and spec.shape not in ((), (1,)):
                raise ServingError(400, f":regress needs one value per example, an output of shape "
                                        f"(batch, 1); {name!r} answers (batch, "
                                        f"{', '.join('any' if d is None else str(d) for d in spec.shape)}): "
                                        f"use :predict or :classify")
            feeds = tf_rows(m, ex, cfg, "examples", ctx)
            check_feeds(m, feeds, cfg.max_rows, "examples")
            _note(call, lv, len(ex))
            (_, _, y, _), = infer(lv, feeds, output_requests(m, None),
                                  call.info.setdefault("timing", []))
        y = y.astype(np.float64).reshape(len(y), -1)
        if not np.isfinite(y).all():
            raise ServingError(500, f"model {name!r} answered NaN or infinity; :{verb} cannot "
                                    f"carry it (use :predict)")
        if verb == "regress":
            return _json({"results": y[:, 0].tolist()})
        labels = m.labels
        return _json({"results": [[[labels[c] if labels and c < len(labels) else str(c), float(s)]
                                   for c, s in enumerate(row)] for row in y]})

    # ---------------- the simple form -----------------------------------
    def default_model():
        names = sorted(reg.entries)
        if len(names) == 1:
            return names[0]
        if "model" in reg.entries:
            return "model"
        raise ServingError(400 if names else 404, f"several models are served ({', '.join(names)}); "
                                                  f"POST to /models/NAME/predict")

    @route(["/predict", "/models/<name>/predict", "/models/<name>/versions/<version>/predict"],
           "simple", methods=("POST",))
    def simple_predict(call, name=None, version=None):
        req = parse_json(server.body(call))
        check_fields(req, "the request", [], ["x", "instances", "classes"])
        if ("x" in req) == ("instances" in req):
            raise ServingError(400, "send the rows as exactly one of 'x' or 'instances', e.g. "
                                    "{\"x\": [[0.1, 0.2, ...]]}")
        classes = req.get("classes", False)
        if not isinstance(classes, bool):
            raise ServingError(400, "'classes' must be true or false")
        what = "x" if "x" in req else "instances"
        name = name or default_model()
        call.info["model"] = name
        with reg.acquire(name, version) as lv:
            m, cfg = lv.model, lv.config
            _note(call, lv, None)
            call.info["infer"] = True
            data = req[what]
            if isinstance(data, dict):
                names = [s.name for s in m.inputs]
                if set(data) != set(names):
                    raise ServingError(400, f"'{what}' names {sorted(data)}; the model's "
                                            f"{'inputs are' if len(names) > 1 else 'only input is'} "
                                            f"{', '.join(map(repr, names))}")
                feeds = {s.name: json_tensor(s, f"{what}[{s.name!r}]", data[s.name], cfg)
                         for s in m.inputs}
            elif len(m.inputs) != 1:
                raise ServingError(400, f"model {name!r} has {len(m.inputs)} inputs; send "
                                        f"{{\"{what}\": {{\"{m.inputs[0].name}\": [...], ...}}}}")
            else:
                feeds = {m.input_name: json_tensor(m.inputs[0], what, data, cfg)}
            check_feeds(m, feeds, cfg.max_rows, what)
            _note(call, lv, int(next(iter(feeds.values())).shape[0]))
            outs = infer(lv, feeds, output_requests(m, None), call.info.setdefault("timing", []))
        nonfinite = False
        preds = {}
        for oname, dt, arr, _ in outs:
            v, nf = json_values(arr)
            nonfinite |= nf
            preds[oname] = v
        out = {"predictions": preds[outs[0][0]] if len(outs) == 1 else preds, "model": name,
               "version": str(m.version)}
        if nonfinite:  # JSON has no NaN: null, and a flag saying why
            out["nonfinite"] = True
        if classes:
            y = outs[0][2]
            out["classes"] = np.argmax(y.reshape(len(y), -1), axis=1).tolist()
        return _json(out)

    @route("/models", "simple")
    def list_models(call):
        return _json({"models": [{"name": n, "versions": [str(v) for v in sorted(e.versions)],
                                  "ready": e.ready} for n, e in sorted(reg.entries.items())]})

    @route("/openapi.json", "health", open_=True)
    def openapi(call):
        """The OpenAPI 3 description of this HTTP API."""
        return _json(openapi_document(bp.maas_routes, server))

    @route("/metrics", "metrics")
    def metrics(call):
        data, ctype = server.metrics.exposition()
        return _Reply(data, 200, ctype)

    # the hot routes, for create_app's fast path: (view, protocol, open)
    bp.maas_hot = {"simple": simple_predict.maas_view, "v2": v2_infer.maas_view,
                   "tf": tf_models.maas_view}
    return bp


# POST routes that create_app's fast path serves: group 1..2 the simple form
# (name, version), 3..4 V2 infer (name, version), 5 TF Serving's <path:rest>.
# Flask's string converter is [^/]+ and its path converter [^/].*? as here.
_HOT = re.compile(r"/(?:predict|models/([^/]+)(?:/versions/([^/]+))?/predict"
                  r"|v2/models/([^/]+)(?:/versions/([^/]+))?/infer|v1/models/([^/].*))")


class _FastPath:
    """WSGI middleware in front of the Flask app of :func:`create_app`: the
    POST inference routes go to their views without Flask's request and app
    contexts, URL map, hooks and Response objects, which cost more than the
    rest of a single-row request. Everything else, any path that is not
    plain ASCII, and every request once the app has been customized (a
    before/after/teardown hook, a URL value preprocessor, a receiver of a
    request signal, a new view) goes through Flask as before. The views,
    the error handling, metrics and audit log are the same code either way
    (:func:`_dispatch`)."""

    def __init__(self, app: Flask, bp: Blueprint):
        self.app = app
        self.wsgi_app = app.wsgi_app
        self.server = bp.maas_server
        self.hot = bp.maas_hot
        self.n_views = len(app.view_functions)

    def _plain(self) -> bool:
        from flask import signals

        app = self.app
        return not (any(app.before_request_funcs.values()) or any(app.after_request_funcs.values())
                    or any(app.teardown_request_funcs.values()) or app.teardown_appcontext_funcs
                    or any(app.url_value_preprocessors.values())
                    or signals.request_started.receivers or signals.request_finished.receivers
                    or signals.got_request_exception.receivers
                    or signals.appcontext_pushed.receivers or signals.appcontext_popped.receivers
                    or signals.request_tearing_down.receivers
                    or signals.appcontext_tearing_down.receivers
                    or len(app.view_functions) != self.n_views)

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") == "POST":
            path = environ.get("PATH_INFO", "")
            m = _HOT.fullmatch(path) if path.isascii() else None
            if m is not None and self._plain():
                return self.serve(environ, start_response, path, m)
        return self.wsgi_app(environ, start_response)

    def serve(self, environ, start_response, path, m):
        name, version, n2, v2, rest = m.groups()
        if n2 is not None:
            (view, protocol, open_), kwargs = self.hot["v2"], {"name": n2, "version": v2}
        elif rest is not None:
            (view, protocol, open_), kwargs = self.hot["tf"], {"rest": rest}
        else:
            (view, protocol, open_) = self.hot["simple"]
            kwargs = {"name": name, "version": version} if name is not None else {}
        call = _Call(environ, "POST", path, self.app.config.get("MAX_CONTENT_LENGTH"))
        try:
            r = _dispatch(self.server, protocol, open_, view, call, kwargs)
        except Exception:  # what Flask's errorhandler(Exception) of create_app answers
            log.exception("unhandled error on %s %s", "POST", path)
            r = _json({"error": "internal server error; the server's log has the details"}, 500)
        headers = [("Content-Type", r.content_type), ("Content-Length", str(len(r.body)))]
        headers += r.headers
        start_response(f"{r.status} {HTTP_STATUS_CODES.get(r.status, 'UNKNOWN').upper()}", headers)
        return [r.body]


def create_app(models: Any, **kwargs) -> Flask:
    """A Flask app serving ``models``: one model (served as ``"model"``), a
    dict ``name -> model or model file/folder``, or a model repository
    folder ``REPO/<name>/<version>/``.

    Keyword arguments (all optional): ``loader`` (``callable(path) ->
    model`` or ``"module:function"``; default ``maas.load_model``),
    ``config`` (``name -> config dict``, as in config.json), ``batching``
    (default for every model: ``True`` or ``{"max_batch_size": 32,
    "max_delay_ms": 2}``), ``allow_nan``, ``max_rows``, ``api_keys`` (or
    ``MAAS_API_KEYS``), ``audit_log`` (a path, or ``"-"`` for stderr),
    ``poll_interval`` (seconds between repository scans; 0 turns hot reload
    off), ``max_body_bytes`` (default 16 MB), ``require_models`` (the model
    names /v2/health/ready waits for; default: every model that has ever
    loaded).

    >>> import numpy as np
    >>> from maas.serving import ServedModel, create_app
    >>> app = create_app(ServedModel("double", 1, lambda x: 2 * x, (2,), (2,)))
    >>> app.test_client().post("/predict", json={"x": [[1, 2]]}).json["predictions"]
    [[2.0, 4.0]]
    """
    app = Flask("maas.serving")
    max_body = kwargs.get("max_body_bytes", DEFAULT_MAX_BODY)
    app.config["MAX_CONTENT_LENGTH"] = max_body
    bp = blueprint(models, **kwargs)
    app.register_blueprint(bp)
    app.maas_server = bp.maas_server

    server = bp.maas_server

    @app.errorhandler(HTTPException)
    def http_error(e):
        r = _json({"error": f"{e.name}: {e.description}" if e.code != 404 else
                   f"no such endpoint: {request.method} {request.path}"}, e.code or 500)
        if server.cors_origin:
            r.headers.append(("Access-Control-Allow-Origin", server.cors_origin))
        if server.audit is not None:  # 404s and 405s too: probes show up in the audit log
            rid = request.headers.get("X-Request-ID", "")
            server.audit.info(json.dumps({
                "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                "request_id": rid if _RID.match(rid) else uuid.uuid4().hex,
                "method": request.method, "path": request.path, "protocol": "-",
                "model": None, "version": None, "status": r.status, "latency_ms": None,
                "rows": None, "client": request.remote_addr}))
        return r.to_flask()

    if server.cors_origin:
        @app.before_request
        def cors_preflight():
            if request.method == "OPTIONS":
                return Response(b"", 204, headers={
                    "Access-Control-Allow-Origin": server.cors_origin,
                    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                    "Access-Control-Allow-Headers": "Authorization, X-API-Key, Content-Type, "
                    "Content-Encoding, Inference-Header-Content-Length, X-Request-ID",
                    "Access-Control-Max-Age": "600", "Vary": "Origin"})

    @app.errorhandler(Exception)
    def any_error(e):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _json({"error": "internal server error; the server's log has the details"}, 500).to_flask()

    app.wsgi_app = _FastPath(app, bp)
    return app
