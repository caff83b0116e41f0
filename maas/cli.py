"""The ``maas`` command line.

    maas inspect FILE   the architecture (when the file holds one), the
                        metadata, and the tensors with dtypes and shapes
    maas verify FILE    checks the file's structure and its SHA-256

Both exit 1 with the error on a bad file (2 on a usage error).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import ModelFormatError

# `python -c` puts '' (the working folder) first on sys.path; this removes it
# before running the module, as Python 3.11's -P does for `python -m`
_RUN_MODULE_SAFE = ("import runpy, sys; del sys.path[0]; m = sys.argv.pop(1); "
                    "runpy.run_module(m, run_name='__main__', alter_sys=True)")


def child_argv(module: str, *args: str) -> list[str]:
    """The argv of a child process running ``python -m module args`` that
    imports maas from where this process imported it, whatever its working
    folder. ``python -m`` puts the working folder first on sys.path, so run
    from a source checkout it would import the checkout's ``maas/`` (with no
    built ``_core``) instead of the installed package; Python 3.11's ``-P``
    (safe_path) leaves the folder out, and on 3.10 a ``-c`` shim removes it.
    Start the child with :func:`child_env`.

    >>> child_argv("maas", "serve", "models")[1:3]  # doctest: +SKIP
    ['-P', '-m']
    """
    if sys.version_info >= (3, 11):
        return [sys.executable, "-P", "-m", module, *args]
    return [sys.executable, "-c", _RUN_MODULE_SAFE, module, *args]


def child_env(env: dict | None = None) -> dict:
    """The environment for a child from :func:`child_argv`: ``env`` (default
    os.environ), plus, when this process imported maas through its script's
    folder or working folder (which the child leaves off its path), that
    folder on PYTHONPATH, so that parent and child run the same maas."""
    env = dict(os.environ if env is None else env)
    import maas

    home = os.path.dirname(os.path.dirname(os.path.abspath(maas.__file__)))
    # sys.path[0] is the script's or working folder, unless -P (safe_path) left it out
    rest = sys.path if getattr(sys.flags, "safe_path", False) else sys.path[1:]
    found_elsewhere = any(p and os.path.abspath(p) == home for p in rest)
    if not found_elsewhere:
        env["PYTHONPATH"] = os.pathsep.join([home] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _architecture(config_json: str) -> list[str]:
    """A best-effort summary of a Keras-style config: class and layers."""
    try:
        cfg = json.loads(config_json)
    except ValueError:
        return [f"  (not JSON) {config_json[:200]}"]
    lines = []
    if isinstance(cfg, dict):
        lines.append(f"  model: {cfg.get('class_name', '?')}"
                     + (f" {cfg['config'].get('name')!r}" if isinstance(cfg.get("config"), dict)
                        and cfg["config"].get("name") else ""))
        inner = cfg.get("config") if isinstance(cfg.get("config"), dict) else cfg
        for layer in inner.get("layers", []) if isinstance(inner.get("layers"), list) else []:
            if isinstance(layer, dict):
                lc = layer.get("config") if isinstance(layer.get("config"), dict) else {}
                extra = ", ".join(f"{k}={lc[k]!r}" for k in ("units", "activation", "rate") if k in lc)
                lines.append(f"    {layer.get('class_name', '?')} {lc.get('name', '')}"
                             + (f" ({extra})" if extra else ""))
    return lines or ["  " + json.dumps(cfg)[:200]]


def _inspect(path: str, out) -> None:
    from .saving.safetensors import CONFIG_KEY, load_tensors

    tensors, metadata = load_tensors(path, mmap=True, verify=False)
    size = os.path.getsize(path)
    print(f"file: {path} ({size:,} bytes, safetensors)", file=out)
    if CONFIG_KEY in metadata:
        print("architecture:", file=out)
        for line in _architecture(metadata[CONFIG_KEY]):
            print(line, file=out)
    print(f"metadata: {len(metadata)} key(s)", file=out)
    for k in sorted(metadata):
        v = metadata[k]
        if k == CONFIG_KEY and len(v) > 200:
            v = v[:200] + f"... ({len(metadata[k]):,} characters)"
        print(f"  {k}: {v}", file=out)
    n_params = sum(t.size for t in tensors.values())
    print(f"tensors: {len(tensors)}, {n_params:,} parameters, {4 * n_params:,} bytes", file=out)
    width = max((len(n) for n in tensors), default=4)
    for name, t in tensors.items():
        print(f"  {name:<{width}}  F32  {str(tuple(t.shape)):<16}  {4 * t.size:,} bytes", file=out)


def _verify(path: str, out) -> None:
    from .saving.safetensors import CHECKSUM_KEY, verify_file

    tensors, metadata = verify_file(path, require_checksum=True)
    n_bytes = 4 * sum(t.size for t in tensors.values())
    print(f"OK: {path}: {len(tensors)} tensors, {n_bytes:,} bytes of data, "
          f"sha256 {metadata[CHECKSUM_KEY]}", file=out)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``maas`` command (``[project.scripts]``): ``demo``,
    ``serve``, ``inspect``, ``verify``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "serve":
        from .serving.cli import serve_main

        return serve_main(argv[1:])
    if argv and argv[0] == "demo":
        from .demo import main as demo_main

        return demo_main(argv[1:])
    if argv and argv[0] == "export":
        from .export.cli import export_main

        return export_main(argv[1:])
    parser = argparse.ArgumentParser(prog="maas", description="maas: model files and models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("demo", help="train a digits model, serve it on 127.0.0.1:8080 and ask it once")
    sub.add_parser("serve", help="serve a model repository over HTTP (maas serve REPO --help)")
    sub.add_parser("export", help="write a model file as ONNX (maas export MODEL.maas model.onnx)")
    p = sub.add_parser("inspect", help="print a model file's architecture, metadata and tensors")
    p.add_argument("file")
    p = sub.add_parser("verify", help="check a model file's structure and SHA-256 checksum")
    p.add_argument("file")
    args = parser.parse_args(argv)
    run = {"inspect": _inspect, "verify": _verify}[args.command]
    try:
        run(args.file, sys.stdout)
    except (ModelFormatError, OSError) as e:
        print(f"maas {args.command}: error: {e}", file=sys.stderr)  # names the file
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
