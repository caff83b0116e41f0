"""``maas serve REPO``: the model server on the command line.

``--server`` picks the HTTP server under the (plain WSGI) Flask app:

* ``gevent`` (default): gunicorn with maas's gevent worker
  (``gunicorn_conf.MaasGeventWorker``): a connection costs a greenlet, not
  a thread, so slow clients cannot take the workers; header and body
  timeouts close stalled connections; a per-client connection cap; JSON
  error pages. Chosen by measurement (benchmarks/RESULTS.md, README).
* ``gthread``: gunicorn's threaded workers. No header or body timeout: a
  client that stalls holds a thread (``--threads`` of them per worker).
* ``granian``: the Rust server's WSGI interface. Header timeout only; no
  body timeout; its own error pages are not JSON.
* ``uvicorn``: uvicorn over the app wrapped by a2wsgi. No header or body
  timeout.

This process *execs* the server: the master never imports maas, so no
model, OpenBLAS or OpenMP pool exists before the fork; each worker builds
the app (and loads the models) after it. SIGTERM to the master drains:
workers stop accepting, finish their in-flight requests (up to
``--graceful-timeout``) and exit. ``--dev`` runs Flask's own threaded
development server instead.

``--certfile/--keyfile`` serve HTTPS (gevent and gthread; ``--ca-certs``
and ``--require-client-cert`` for mutual TLS), ``--forwarded-allow-ips``
names the proxies whose X-Forwarded-For is believed, ``--model-key-file``
and ``--trusted-keys`` load encrypted and signed models only
(:mod:`maas.serving.security`; README: Security).

``serve_main(argv)`` is the entry point; ``maas.cli`` wires it as the
``serve`` subcommand. ``python -m maas.serving.cli REPO`` works too.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

OPTIONS_ENV = "MAAS_SERVE_OPTIONS"
SERVERS = ("gevent", "gthread", "granian", "uvicorn")


def build_parser(prog: str = "maas serve") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Serve a model repository over HTTP "
                                "(Open Inference Protocol V2, TF Serving REST, POST /predict).")
    p.add_argument("repo", help="model repository: REPO/<name>/<version>/model.maas, "
                                "with an optional REPO/<name>/config.json")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", "--http-port", dest="port", type=int, default=8080,
                   help="HTTP port (default 8080; --http-port as KServe's runtimes name it)")
    p.add_argument("--grpc-port", type=int, default=None,
                   help="port of the Open Inference Protocol's gRPC service (Triton's default "
                        "8001; 0: off). Default off; needs maas[grpc]")
    p.add_argument("--server", choices=SERVERS, default="gevent",
                   help="HTTP server: gevent (default; gunicorn with maas's gevent worker), "
                        "gthread, granian or uvicorn (see the README's Serving section)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--threads", type=int, default=16,
                   help="threads per worker for gthread, granian and uvicorn (default 16)")
    p.add_argument("--header-timeout", type=float, default=10.0,
                   help="seconds a client has to send a request line and headers, and that an "
                        "idle keep-alive connection stays open (default 10)")
    p.add_argument("--body-timeout", type=float, default=30.0,
                   help="seconds a client has to send a request body after its headers; a "
                        "late body is answered 408 (default 30)")
    p.add_argument("--max-client-connections", type=int, default=256,
                   help="open connections one client address may hold to one worker; more are "
                        "answered 429 (default 256; 0: no cap)")
    p.add_argument("--max-connections", type=int, default=1000,
                   help="open connections per worker (default 1000)")
    p.add_argument("--dev", action="store_true", help="use Flask's development server")
    p.add_argument("--loader", default=None, help="'module:function' loading a version folder "
                   "(default maas.load_model)")
    p.add_argument("--batching", action="store_true",
                   help="dynamic batching for every model (config.json can still turn it off)")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-delay-ms", type=float, default=2.0)
    p.add_argument("--api-key", action="append", default=None,
                   help="an accepted API key (repeat for several; or MAAS_API_KEYS=k1,k2)")
    p.add_argument("--model-name", "--model_name", dest="model_name", default=None, metavar="NAME",
                   help="serve REPO as the one model NAME: a model folder REPO/<version>/ or a "
                        "file REPO/model.maas (KServe mounts an InferenceService's storageUri "
                        "at /mnt/models and passes --model_name)")
    p.add_argument("--api-key-file", default=None, metavar="FILE",
                   help="a file of accepted API keys, one a line")
    p.add_argument("--allow-unauthenticated", action="store_true",
                   help="serve on a non-loopback address without an API key (refused otherwise)")
    p.add_argument("--model-control", choices=("poll", "explicit"), default="poll",
                   help="poll (default): serve every model of the repository, rescanning it; "
                        "explicit: serve only the models loaded with --load-model or the "
                        "repository API (POST /v2/repository/models/NAME/load), behind an "
                        "admin key")
    p.add_argument("--load-model", action="append", default=None, metavar="NAME",
                   help="with --model-control explicit: a model to load at start (repeat)")
    p.add_argument("--admin-key", action="append", default=None,
                   help="a key for the model management calls (or MAAS_ADMIN_KEYS); must "
                        "differ from the inference keys")
    p.add_argument("--admin-key-file", default=None, metavar="FILE",
                   help="a file of admin keys, one a line")
    p.add_argument("--cors-origin", default=None, metavar="ORIGIN",
                   help="answer browsers from this origin (Access-Control-Allow-Origin); off "
                        "by default")
    p.add_argument("--audit-log", default="-", help="audit log file, '-' for stderr, 'off' for none")
    p.add_argument("--require-model", action="append", default=None, metavar="NAME",
                   help="a model /v2/health/ready waits for (repeat for several; default: every "
                        "model that has ever loaded)")
    p.add_argument("--poll-interval", type=float, default=2.0,
                   help="seconds between repository scans for new/removed versions (0: off)")
    p.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024)
    p.add_argument("--model-threads", type=int, default=None,
                   help="maas/OpenBLAS threads per worker (default cores / workers)")
    p.add_argument("--graceful-timeout", type=float, default=30.0,
                   help="seconds a stopping worker has to finish in-flight requests")
    p.add_argument("--timeout", type=float, default=60.0, help="gunicorn worker timeout")
    g = p.add_argument_group("security (README: Security)")
    g.add_argument("--certfile", default=None, help="serve HTTPS: the server's certificate (PEM, "
                   "with its chain); needs --keyfile (gevent and gthread servers)")
    g.add_argument("--keyfile", default=None, help="the certificate's private key (PEM)")
    g.add_argument("--ca-certs", default=None, help="CA certificates (PEM) that client "
                   "certificates are checked against (mutual TLS)")
    g.add_argument("--require-client-cert", action="store_true",
                   help="refuse clients without a certificate signed by --ca-certs")
    g.add_argument("--forwarded-allow-ips", default=None, metavar="IPS",
                   help="comma-separated proxy addresses or networks (or '*') whose "
                        "X-Forwarded-For and X-Forwarded-Proto are believed: the audit log "
                        "then records the client behind them (default: none, the peer's "
                        "address is the client)")
    g.add_argument("--model-key-file", default=None,
                   help="the AES-256 key of encrypted model files; read and used by each "
                        "worker after the fork")
    g.add_argument("--trusted-keys", default=None, metavar="DIR",
                   help="a folder of Ed25519 public keys (*.pub): serve only versions whose "
                        "model.maas.sig is a valid signature by one of them")
    return p


def _options(a) -> dict:
    opts = {"repo": os.path.abspath(a.repo), "poll_interval": a.poll_interval,
            "max_body_bytes": a.max_body_bytes,
            "audit_log": None if a.audit_log in ("off", "none", "") else a.audit_log}
    if a.loader:
        opts["loader"] = a.loader
    if a.batching:
        opts["batching"] = {"max_batch_size": a.max_batch_size, "max_delay_ms": a.max_delay_ms}
    g = lambda k, d=None: getattr(a, k, d)  # noqa: E731  (callers may pass a partial namespace)
    keys = list(a.api_key or []) + _key_file(g("api_key_file"))
    if not keys and os.environ.get("MAAS_API_KEYS"):
        keys = os.environ["MAAS_API_KEYS"].split(",")
    if keys:
        opts["api_keys"] = keys
    admin = list(g("admin_key") or []) + _key_file(g("admin_key_file"))
    if admin:
        opts["admin_keys"] = admin
    if g("model_control", "poll") != "poll":
        opts["model_control"] = a.model_control
        opts["load_models"] = g("load_model") or []
    if g("cors_origin"):
        opts["cors_origin"] = a.cors_origin
    if g("model_name"):
        opts["model_name"] = a.model_name
    if a.require_model:
        opts["require_models"] = a.require_model
    threads = a.model_threads or max(1, (os.cpu_count() or 1) // max(1, a.workers))
    opts["model_threads"] = threads
    if a.model_key_file or a.trusted_keys:  # the paths only: each worker reads the files
        opts["security"] = {"key_file": a.model_key_file and os.path.abspath(a.model_key_file),
                            "trusted_keys": a.trusted_keys and os.path.abspath(a.trusted_keys)}
    if a.forwarded_allow_ips:
        opts["forwarded_allow_ips"] = a.forwarded_allow_ips
    return opts


def _key_file(path) -> list[str]:
    if not path:
        return []
    with open(path, encoding="utf-8") as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]


def is_loopback(host: str) -> bool:
    import ipaddress

    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_security(a, opts) -> str | None:
    """Why the options may not start (None when they may)."""
    for k in opts.get("api_keys", []) + opts.get("admin_keys", []):
        if not k.strip():
            return "an empty API key is refused (check --api-key, --api-key-file and MAAS_API_KEYS)"
    if set(opts.get("api_keys", [])) & set(opts.get("admin_keys", [])):
        return "an admin key must differ from every inference key"
    if not is_loopback(a.host) and not opts.get("api_keys") and not a.allow_unauthenticated:
        return (f"refusing to serve on {a.host} without an API key: anyone who reaches it could "
                f"use the models. Give --api-key-file FILE (or --api-key, MAAS_API_KEYS), or "
                f"--allow-unauthenticated if a proxy in front checks callers")
    if (opts.get("model_control") == "explicit" and not opts.get("admin_keys")
            and not is_loopback(a.host) and not a.allow_unauthenticated):
        return ("--model-control explicit on a non-loopback address needs an admin key "
                "(--admin-key-file FILE): loading models is an administrator's call")
    return None


def bound_malloc() -> None:
    """glibc settings for a server worker: at most 2 malloc arenas (each
    thread that allocates may otherwise get an arena of its own, which keeps
    its freed memory), and a fixed mmap threshold of 256 KiB, so a large
    buffer (a request body, a batch) is always its own mapping and goes back
    to the OS when freed (glibc raises the threshold after each such free
    by default, after which large buffers stay in the heap)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-8, 2)          # M_ARENA_MAX
        libc.mallopt(-3, 256 << 10)  # M_MMAP_THRESHOLD (fixed: no dynamic raise)
        libc.mallopt(-1, 1 << 20)    # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc


def app_from_env():
    """The app a server worker builds after fork (options from the env)."""
    bound_malloc()
    opts = json.loads(os.environ[OPTIONS_ENV])
    threads = opts.pop("model_threads", None)
    import maas
    from .app import create_app

    if threads:
        maas.set_num_threads(int(threads))
    security = opts.pop("security", None)
    proxies = opts.pop("forwarded_allow_ips", None)
    repo, name = opts.pop("repo"), opts.pop("model_name", None)
    if security:  # after the fork: the key is read in the worker
        from .security import SecureLoader

        opts["loader"] = SecureLoader(security.get("key_file"), security.get("trusted_keys"),
                                      opts.get("audit_log"), root=repo)
    if name and not os.path.isdir(os.path.join(repo, name)):
        # KServe's layout: the model itself at the mount path
        single = os.path.join(repo, "model.maas")
        app = create_app({name: single if os.path.isfile(single) else repo}, **opts)
    else:
        app = create_app(repo, **opts)
    if proxies:
        from .security import ForwardedFor

        app.wsgi_app = ForwardedFor(app.wsgi_app, proxies)
    return app


def asgi_app_from_env():
    """For ``--server uvicorn``: the WSGI app in a2wsgi's ASGI adapter."""
    from a2wsgi import WSGIMiddleware

    threads = int(os.environ.get("MAAS_SERVE_THREADS", "16"))
    return WSGIMiddleware(app_from_env(), workers=threads)


def _python() -> list[str]:
    """This interpreter, without the working folder on sys.path (-P)."""
    return [sys.executable, *(["-P"] if sys.version_info >= (3, 11) else [])]


def server_command(a, env: dict) -> list[str]:
    """The command line that runs ``a.server`` (and sets its variables in env)."""
    bind_host, port = a.host, str(a.port)
    env["MAAS_SERVE_SERVER"] = a.server
    if a.server in ("gevent", "gthread"):
        env["MAAS_HEADER_TIMEOUT"] = str(a.header_timeout)
        env["MAAS_BODY_TIMEOUT"] = str(a.body_timeout)
        env["MAAS_MAX_CLIENT_CONNECTIONS"] = str(a.max_client_connections)
        conf = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gunicorn_conf.py")
        # gunicorn_run.py is gunicorn's command line with its working folder
        # last on sys.path (gunicorn puts it first)
        args = [*_python(), os.path.join(os.path.dirname(conf), "gunicorn_run.py"), "-c", conf,
                "--workers", str(a.workers),
                "--bind", f"{bind_host}:{port}", "--graceful-timeout", str(int(a.graceful_timeout)),
                "--timeout", str(int(a.timeout)), "--worker-connections", str(a.max_connections)]
        if a.server == "gthread":
            args += ["--worker-class", "gthread", "--threads", str(a.threads)]
        return args + tls_args(a) + ["maas.serving.cli:app_from_env()"]
    if a.server == "granian":
        return [*_python(), "-m", "granian", "--interface", "wsgi", "--factory", "--http", "1",
                "--workers", str(a.workers), "--blocking-threads", str(a.threads),
                "--host", bind_host, "--port", port, "--no-ws",
                "--http1-header-read-timeout", str(max(1, min(60000, int(a.header_timeout * 1000)))),
                "--backpressure", str(a.max_connections),
                "--workers-kill-timeout", str(int(a.graceful_timeout)), "--log-level", "warning",
                "maas.serving.cli:app_from_env"]
    env["MAAS_SERVE_THREADS"] = str(a.threads)
    return [*_python(), "-m", "uvicorn", "--factory", "--workers", str(a.workers),
            "--host", bind_host, "--port", port, "--timeout-keep-alive", str(int(a.header_timeout)),
            "--limit-concurrency", str(a.max_connections * a.workers),
            "--timeout-graceful-shutdown", str(int(a.graceful_timeout)), "--no-access-log",
            "--log-level", "warning",
            # uvicorn believes X-Forwarded-For from 127.0.0.1 by default: only from
            # --forwarded-allow-ips (maas's ForwardedFor middleware reads it then)
            *(["--forwarded-allow-ips", a.forwarded_allow_ips] if getattr(a, "forwarded_allow_ips", None)
              else ["--no-proxy-headers"]),
            "maas.serving.cli:asgi_app_from_env"]


def tls_args(a) -> list[str]:
    """gunicorn's options for ``--certfile/--keyfile/--ca-certs/
    --require-client-cert/--forwarded-allow-ips``."""
    import ssl

    args = []
    if a.certfile:
        args += ["--certfile", os.path.abspath(a.certfile), "--keyfile", os.path.abspath(a.keyfile)]
        if a.ca_certs:
            args += ["--ca-certs", os.path.abspath(a.ca_certs), "--cert-reqs",
                     str(int(ssl.CERT_REQUIRED if a.require_client_cert else ssl.CERT_OPTIONAL))]
    # gunicorn believes X-Forwarded-Proto from 127.0.0.1 by default: only from
    # the proxies named here (none by default)
    args += ["--forwarded-allow-ips", a.forwarded_allow_ips or ""]
    return args


def check_tls_and_model_keys(a) -> str | None:
    """The usage error in the TLS and model-key options, or None. Reads the key and
    certificate files once, so that a mistake stops the server at start
    rather than in every worker (nothing read here reaches the workers)."""
    if bool(a.certfile) != bool(a.keyfile):
        return "--certfile and --keyfile go together"
    if (a.ca_certs or a.require_client_cert) and not a.certfile:
        return "--ca-certs and --require-client-cert need --certfile and --keyfile (HTTPS)"
    if a.require_client_cert and not a.ca_certs:
        return "--require-client-cert needs --ca-certs (the CA that signs client certificates)"
    if a.certfile and a.server not in ("gevent", "gthread") and not a.dev:
        return (f"--certfile: HTTPS is served by --server gevent or gthread (not {a.server}); "
                f"or end TLS at a proxy (README: Security)")
    if a.certfile and a.dev:
        return "--certfile: the development server does not serve HTTPS; use gevent or gthread"
    if (a.model_key_file or a.trusted_keys) and a.loader:
        return ("--model-key-file and --trusted-keys use maas's own loader; they cannot be "
                "combined with --loader")
    try:
        if a.certfile:
            import ssl

            try:
                ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=a.ca_certs)
                ctx.load_cert_chain(a.certfile, a.keyfile)
            except (OSError, ValueError) as e:
                return (f"--certfile/--keyfile/--ca-certs: cannot load the certificate, its key or "
                        f"the CA certificates: {e}")
        if a.model_key_file:
            from ..saving.encryption import Encryption

            Encryption(key_file=a.model_key_file)
        if a.trusted_keys:
            from ..saving.signing import load_trusted_keys

            if not os.path.isdir(a.trusted_keys):
                return f"--trusted-keys {a.trusted_keys!r} is not a folder of *.pub files"
            load_trusted_keys(a.trusted_keys)
        if a.forwarded_allow_ips:
            from .security import ForwardedFor

            ForwardedFor(None, a.forwarded_allow_ips)
    except (OSError, ValueError, ImportError) as e:
        return str(e)
    return None


def serve_main(argv: list[str] | None = None) -> int:
    """Parses ``maas serve`` arguments and runs the server (gunicorn by
    exec, or ``--dev``). Returns an exit status for argument errors."""
    a = build_parser().parse_args(argv)
    if not os.path.isdir(a.repo):
        print(f"maas serve: {a.repo!r} is not a folder; expected a model repository "
              f"REPO/<name>/<version>/", file=sys.stderr)
        return 2
    if a.workers < 1 or a.threads < 1:
        print("maas serve: --workers and --threads must be at least 1", file=sys.stderr)
        return 2
    try:
        opts = _options(a)
    except OSError as e:
        print(f"maas serve: cannot read a key file: {e}", file=sys.stderr)
        return 2
    why = check_security(a, opts) or check_tls_and_model_keys(a)
    if why:
        print(f"maas serve: {why}", file=sys.stderr)
        return 2
    if opts.get("model_control") == "explicit" or a.grpc_port:
        # what the server's processes share: the explicit model-control state
        os.environ.setdefault("MAAS_STATE_DIR", tempfile.mkdtemp(prefix="maas-state-"))
    if a.grpc_port:
        import importlib.util

        if importlib.util.find_spec("grpc") is None:
            print("maas serve: --grpc-port needs grpcio; pip install 'maas[grpc]'", file=sys.stderr)
            return 2
        if not a.dev and a.server not in ("gevent", "gthread"):
            print("maas serve: --grpc-port runs beside gunicorn (--server gevent or gthread) or "
                  "--dev", file=sys.stderr)
            return 2
        os.environ["MAAS_GRPC_PORT"] = str(a.grpc_port)
        os.environ["MAAS_GRPC_HOST"] = a.host
        os.environ["MAAS_GRPC_GRACE"] = str(a.graceful_timeout)
        if a.certfile:  # the gRPC listener takes the HTTP listener's TLS settings
            os.environ["MAAS_GRPC_CERTFILE"] = os.path.abspath(a.certfile)
            os.environ["MAAS_GRPC_KEYFILE"] = os.path.abspath(a.keyfile)
            os.environ["MAAS_GRPC_CA_CERTS"] = os.path.abspath(a.ca_certs) if a.ca_certs else ""
            os.environ["MAAS_GRPC_REQUIRE_CLIENT_CERT"] = "1" if a.require_client_cert else "0"
    if a.dev:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
        os.environ[OPTIONS_ENV] = json.dumps(opts)
        app = app_from_env()
        if a.grpc_port:
            from .grpc_server import start

            app.maas_grpc = start(app.maas_server, a.host, a.grpc_port)  # held: a dropped server stops
        app.run(host=a.host, port=a.port, threaded=True, use_reloader=False)
        return 0
    need = {"gevent": ("gunicorn", "gevent"), "gthread": ("gunicorn",), "granian": ("granian",),
            "uvicorn": ("uvicorn", "a2wsgi")}[a.server]
    import importlib.util

    missing = [m for m in need if importlib.util.find_spec(m) is None]
    if missing:
        extra = "serve" if a.server in ("gevent", "gthread") else "serve-alt"
        print(f"maas serve: --server {a.server} needs {', '.join(missing)}; pip install "
              f"'maas[{extra}]' (or use --dev)", file=sys.stderr)
        return 2
    if a.header_timeout <= 0 or a.body_timeout <= 0 or a.max_connections < 1 \
            or a.max_client_connections < 0:
        print("maas serve: --header-timeout and --body-timeout must be positive, "
              "--max-connections at least 1, --max-client-connections at least 0", file=sys.stderr)
        return 2
    env = dict(os.environ)
    env.setdefault("MALLOC_ARENA_MAX", "2")  # also for threads made before app_from_env
    env[OPTIONS_ENV] = json.dumps(opts)
    mp = env.get("PROMETHEUS_MULTIPROC_DIR")
    if not mp:
        mp = tempfile.mkdtemp(prefix="maas-prom-")
        env["PROMETHEUS_MULTIPROC_DIR"] = mp
    else:  # figures of an earlier run would add up with this one's
        os.makedirs(mp, exist_ok=True)
        for f in os.listdir(mp):
            if f.endswith(".db"):
                os.unlink(os.path.join(mp, f))
    # child_env keeps the working folder off the child's path: a server started
    # from a source checkout imports the installed maas, not ./maas/
    from ..cli import child_env

    env = child_env(env)
    args = server_command(a, env)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, args, env)
    return 0  # not reached


def main() -> None:
    sys.exit(serve_main())


if __name__ == "__main__":
    main()
