"""The ``maas`` command line.

    maas inspect FILE   the architecture (when the file holds one), the
                        metadata, and the tensors with dtypes and shapes
                        (of an encrypted file too: its header is plain)
    maas verify FILE [--pubkey PUB ...] [--key-file KEY]
                        checks the file's structure and its SHA-256; with
                        --pubkey its signature (FILE.sig) by one of those
                        keys; with --key-file an encrypted file's
                        authentication tag
    maas sign FILE --key signing.pem
                        writes FILE.sig: an Ed25519 signature of the file
    maas keygen NAME    makes an Ed25519 pair NAME.pem (private, mode 0600)
                        and NAME.pub; ``--encryption`` makes an AES-256 key
                        file NAME instead

Each exits 1 with the error on a bad file (2 on a usage error).
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


_ST_NAMES = {"float32": "F32", "int32": "I32", "int64": "I64", "int8": "I8", "uint8": "U8",
             "bool": "BOOL"}


def _inspect(path: str, out) -> None:
    import numpy as np

    from .saving.encryption import ENCRYPTION_KEY, encryption_info
    from .saving.safetensors import CONFIG_KEY, load_tensors

    tensors, metadata = load_tensors(path, mmap=True, verify=False)
    size = os.path.getsize(path)
    print(f"file: {path} ({size:,} bytes, safetensors)", file=out)
    if ENCRYPTION_KEY in metadata:
        info = encryption_info(path, metadata)
        print(f"encrypted: {info['algorithm']}, key id {info['key_id']} (names and shapes are "
              f"plain, the values are not readable without the key)", file=out)
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
    n_bytes = sum(t.size * np.dtype(t.dtype).itemsize for t in tensors.values())
    print(f"tensors: {len(tensors)}, {n_params:,} parameters, {n_bytes:,} bytes", file=out)
    width = max((len(n) for n in tensors), default=4)
    for name, t in tensors.items():
        dt = str(np.dtype(t.dtype))
        print(f"  {name:<{width}}  {_ST_NAMES.get(dt, dt):<3}  {str(tuple(t.shape)):<16}  "
              f"{t.size * np.dtype(t.dtype).itemsize:,} bytes", file=out)


def _verify(path: str, out, pubkeys=None, key_file=None) -> None:
    import numpy as np

    from .saving.encryption import ENCRYPTION_KEY, Encryption, read_model_file
    from .saving.safetensors import CHECKSUM_KEY, load_tensors, verify_file

    tensors, metadata = load_tensors(path, mmap=True, verify=False)
    encrypted = ENCRYPTION_KEY in metadata
    if encrypted:
        enc = Encryption(key_file=key_file) if key_file else None
        info = {"signer_key_id": None}
        if enc is not None:
            tensors, metadata, info = read_model_file(path, True, enc, pubkeys)
        elif pubkeys:
            from .saving.signing import verify_signature

            info["signer_key_id"] = verify_signature(path, pubkeys)
        what = (f"encrypted (AES-256-GCM), authenticated with key id {info['encryption_key_id']}"
                if enc else "encrypted (AES-256-GCM): structure only; pass --key-file to "
                            "authenticate the data")
    else:
        tensors, metadata = verify_file(path, require_checksum=True)
        info = {"signer_key_id": None}
        if pubkeys:
            _, _, info = read_model_file(path, True, None, pubkeys)
        what = f"sha256 {metadata[CHECKSUM_KEY]}"
    n_bytes = sum(t.size * np.dtype(t.dtype).itemsize for t in tensors.values())
    signed = f"; signed by key {info['signer_key_id']}" if info.get("signer_key_id") else ""
    print(f"OK: {path}: {len(tensors)} tensors, {n_bytes:,} bytes of data, {what}{signed}",
          file=out)


def _sign(path: str, out, key: str) -> None:
    from .saving.safetensors import load_tensors
    from .saving.signing import sign_file, signature_path

    load_tensors(path, mmap=True, verify=True)  # sign only a well-formed file
    password = os.environ.get("MAAS_SIGNING_KEY_PASSWORD")
    kid = sign_file(path, key, password.encode() if password else None)
    print(f"signed {path} with key {kid}: {signature_path(path)}", file=out)


def _keygen(name: str, out, encryption: bool = False) -> None:
    if encryption:
        from .saving.encryption import Encryption

        enc = Encryption(Encryption.generate_key())
        enc.write_key_file(name)
        print(f"wrote {name} (AES-256 key id {enc.key_id}, mode 0600): keep it secret; "
              f"maas serve --model-key-file {name}", file=out)
        return
    from .saving.signing import generate_keypair, key_id

    password = os.environ.get("MAAS_SIGNING_KEY_PASSWORD")
    priv, _ = generate_keypair(name + ".pem", name + ".pub", password.encode() if password else None)
    print(f"wrote {name}.pem (private, mode 0600: keep it secret) and {name}.pub (public, key id "
          f"{key_id(priv)})", file=out)


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
    p = sub.add_parser("verify", help="check a model file's structure and SHA-256 checksum (and "
                                      "its signature with --pubkey)")
    p.add_argument("file")
    p.add_argument("--pubkey", action="append", default=None, metavar="PUB",
                   help="a trusted Ed25519 public key (PEM) or a folder of them; repeatable: the "
                        "file must be signed (FILE.sig) by one of them")
    p.add_argument("--key-file", default=None, help="the AES-256 key of an encrypted file")
    p = sub.add_parser("sign", help="sign a model file with an Ed25519 private key (writes FILE.sig)")
    p.add_argument("file")
    p.add_argument("--key", required=True, help="the Ed25519 private key (PEM; a password in "
                                                "MAAS_SIGNING_KEY_PASSWORD if it has one)")
    p = sub.add_parser("keygen", help="make an Ed25519 signing key pair NAME.pem/NAME.pub (or an "
                                      "AES-256 key file with --encryption)")
    p.add_argument("file", metavar="NAME")
    p.add_argument("--encryption", action="store_true",
                   help="write an AES-256 model-encryption key to the file NAME")
    args = parser.parse_args(argv)
    try:
        if args.command == "inspect":
            _inspect(args.file, sys.stdout)
        elif args.command == "verify":
            keys = None
            if args.pubkey:
                from .saving.signing import load_trusted_keys

                keys = {}
                for k in args.pubkey:
                    keys.update(load_trusted_keys(k))
            _verify(args.file, sys.stdout, keys, args.key_file)
        elif args.command == "sign":
            _sign(args.file, sys.stdout, args.key)
        else:
            _keygen(args.file, sys.stdout, args.encryption)
    except (ModelFormatError, OSError, ValueError) as e:
        print(f"maas {args.command}: error: {e}", file=sys.stderr)  # names the file
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
