"""``maas serve REPO``: the model server on the command line.

By default it runs gunicorn (threaded ``gthread`` workers, so that one
worker has concurrent requests to batch). This process *execs* gunicorn:
the gunicorn master never imports maas, so no model, OpenBLAS or OpenMP
pool exists before the fork; each worker builds the app (and loads the
models) after it. SIGTERM to the master drains: workers stop accepting,
finish their in-flight requests (up to ``--graceful-timeout``) and exit.
``--dev`` runs Flask's own threaded development server instead.

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


def build_parser(prog: str = "maas serve") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Serve a model repository over HTTP "
                                "(Open Inference Protocol V2, TF Serving REST, POST /predict).")
    p.add_argument("repo", help="model repository: REPO/<name>/<version>/model.maas, "
                                "with an optional REPO/<name>/config.json")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default 2)")
    p.add_argument("--threads", type=int, default=16, help="threads per worker (default 16)")
    p.add_argument("--dev", action="store_true", help="use Flask's development server")
    p.add_argument("--loader", default=None, help="'module:function' loading a version folder "
                   "(default maas.load_model)")
    p.add_argument("--batching", action="store_true",
                   help="dynamic batching for every model (config.json can still turn it off)")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-delay-ms", type=float, default=2.0)
    p.add_argument("--api-key", action="append", default=None,
                   help="an accepted API key (repeat for several; or MAAS_API_KEYS=k1,k2)")
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
    return p


def _options(a) -> dict:
    opts = {"repo": os.path.abspath(a.repo), "poll_interval": a.poll_interval,
            "max_body_bytes": a.max_body_bytes,
            "audit_log": None if a.audit_log in ("off", "none", "") else a.audit_log}
    if a.loader:
        opts["loader"] = a.loader
    if a.batching:
        opts["batching"] = {"max_batch_size": a.max_batch_size, "max_delay_ms": a.max_delay_ms}
    if a.api_key:
        opts["api_keys"] = a.api_key
    if a.require_model:
        opts["require_models"] = a.require_model
    threads = a.model_threads or max(1, (os.cpu_count() or 1) // max(1, a.workers))
    opts["model_threads"] = threads
    return opts


def app_from_env():
    """The app a gunicorn worker builds after fork (options from the env)."""
    opts = json.loads(os.environ[OPTIONS_ENV])
    threads = opts.pop("model_threads", None)
    import maas
    from .app import create_app

    if threads:
        maas.set_num_threads(int(threads))
    return create_app(opts.pop("repo"), **opts)


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
    opts = _options(a)
    if a.dev:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
        os.environ[OPTIONS_ENV] = json.dumps(opts)
        app = app_from_env()
        app.run(host=a.host, port=a.port, threaded=True, use_reloader=False)
        return 0
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        print("maas serve: gunicorn is not installed; pip install 'maas[serve]' (or use --dev)",
              file=sys.stderr)
        return 2
    env = dict(os.environ)
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
    conf = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gunicorn_conf.py")
    # gunicorn_run.py is gunicorn's command line with the working folder last on
    # sys.path, and child_argv/child_env keep it off the master's: a server
    # started from a source checkout imports the installed maas, not ./maas/
    from ..cli import child_env

    env = child_env(env)
    args = [sys.executable, *(["-P"] if sys.version_info >= (3, 11) else []),
            os.path.join(os.path.dirname(conf), "gunicorn_run.py"), "-c", conf,
            "--worker-class", "gthread", "--workers", str(a.workers), "--threads", str(a.threads),
            "--bind", f"{a.host}:{a.port}", "--graceful-timeout", str(int(a.graceful_timeout)),
            "--timeout", str(int(a.timeout)), "maas.serving.cli:app_from_env()"]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, args, env)
    return 0  # not reached


def main() -> None:
    sys.exit(serve_main())


if __name__ == "__main__":
    main()
