"""``maas serve``'s protections of models and clients: a loader that
decrypts and checks signatures (``--model-key-file``, ``--trusted-keys``)
and writes an audit line for every load, and the client address behind
trusted proxies (``--forwarded-allow-ips``).

The loader runs in each worker after the fork: the key file is read there
(the master, which never imports maas, never holds the key). A version that
is unsigned, signed by another key, tampered with or encrypted under another
key fails to load like any broken version: the registry reports it in the
model's status and keeps serving the versions that loaded.

>>> loader = SecureLoader(None, None)  # doctest: +SKIP
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import sys
import uuid
from datetime import datetime, timezone

log = logging.getLogger("maas.serving")

__all__ = ["SecureLoader", "ForwardedFor"]


def _audit_logger(target):
    if target in (None, False, "", "off", "none"):
        return None
    lg = logging.getLogger(f"maas.serving.audit.load.{uuid.uuid4().hex[:8]}")
    lg.propagate = False
    lg.setLevel(logging.INFO)
    h = logging.StreamHandler(sys.stderr) if target in ("-", "stderr", True) else logging.FileHandler(target)
    h.setFormatter(logging.Formatter("%(message)s"))
    lg.addHandler(h)
    return lg


class SecureLoader:
    """A repository loader (``callable(path) -> model``) that loads
    ``model.maas`` with ``maas.load_model(mmap=False, encryption_key=...,
    trusted_keys=...)`` and writes one JSON audit line per load: model,
    version, outcome, the signer's key id, the encryption key's id (never a
    key), the error of a refused load.

    ``key_file``: the AES-256 key of encrypted versions (None: none).
    ``trusted_keys``: a folder of ``*.pub`` Ed25519 public keys, or a list;
    every version must be signed by one of them (None: signatures are not
    required). ``audit_log``: a path, ``"-"`` for stderr, or None.
    """

    def __init__(self, key_file=None, trusted_keys=None, audit_log=None, root=None):
        from ..saving.encryption import Encryption
        from ..saving.signing import load_trusted_keys

        self.encryption = Encryption(key_file=key_file) if key_file else None
        self.trusted = load_trusted_keys(trusted_keys) if trusted_keys is not None else None
        self.audit = _audit_logger(audit_log)
        self.root = root

    def __call__(self, path: str):
        from ..saving import load_model
        from .text import as_text_model

        path = os.fspath(path)
        vdir = path
        if os.path.isdir(path):
            path = os.path.join(path, "model.maas")
        else:
            vdir = os.path.dirname(path)
        event = {"event": "model_load", "model": os.path.basename(os.path.dirname(vdir)),
                 "version": os.path.basename(vdir),
                 "file": os.path.relpath(path, self.root) if self.root else os.path.basename(path)}
        try:
            model = load_model(path, mmap=False, encryption_key=self.encryption,
                               trusted_keys=self.trusted)
            info = getattr(model, "_file_info", None) or {}
            model = as_text_model(model, vdir)  # a sentence encoder: its tokenizer beside it
        except Exception as e:
            from .repository import public_message

            self._audit({**event, "outcome": "refused", "error": public_message(
                f"{type(e).__name__}: {e}", [self.root] if self.root else [])})
            raise
        self._audit({**event, "outcome": "loaded", "signer_key_id": info.get("signer_key_id"),
                     "encrypted": bool(info.get("encrypted")),
                     "encryption_key_id": info.get("encryption_key_id")})
        return model

    def _audit(self, event: dict):
        if self.audit is None:
            return
        event = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), **event}
        try:
            self.audit.info(json.dumps(event))
        except Exception:  # the audit log must not stop a load
            log.exception("writing the audit log failed")


class ForwardedFor:
    """WSGI middleware: behind trusted proxies, ``REMOTE_ADDR`` (what the
    audit log records as the client) becomes the client address from
    ``X-Forwarded-For``. Only a peer whose address is in ``allowed`` (IP
    addresses or networks, e.g. ``["10.0.0.0/8", "127.0.0.1"]``, or ``"*"``)
    is believed; the header is read from the right, skipping the trusted
    proxies' own entries, so a client cannot forge its address by sending
    the header itself. The proxy's address is kept in
    ``environ["maas.proxy_addr"]``.

    >>> app = ForwardedFor(lambda env, sr: [env["REMOTE_ADDR"].encode()], ["127.0.0.1"])
    >>> app({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "1.2.3.4, 127.0.0.1"}, None)
    [b'1.2.3.4']
    >>> app({"REMOTE_ADDR": "5.6.7.8", "HTTP_X_FORWARDED_FOR": "1.2.3.4"}, None)
    [b'5.6.7.8']
    """

    def __init__(self, app, allowed):
        self.app = app
        if isinstance(allowed, str):
            allowed = [a.strip() for a in allowed.split(",") if a.strip()]
        self.any = "*" in allowed
        self.networks = [ipaddress.ip_network(a, strict=False) for a in allowed if a != "*"]

    def _trusted(self, addr: str) -> bool:
        if self.any:
            return True
        try:
            ip = ipaddress.ip_address(addr.strip())
        except ValueError:
            return False
        return any(ip in n for n in self.networks)

    def __call__(self, environ, start_response):
        peer = environ.get("REMOTE_ADDR") or ""
        xff = environ.get("HTTP_X_FORWARDED_FOR")
        if xff and self._trusted(peer):
            hops = [h.strip() for h in xff.split(",") if h.strip()]
            client = None
            for hop in reversed(hops):
                client = hop
                if not self._trusted(hop):
                    break
            if client:
                try:
                    client = str(ipaddress.ip_address(client))
                except ValueError:
                    client = None  # not an address: keep the peer's
            if client:
                environ["maas.proxy_addr"] = peer
                environ["REMOTE_ADDR"] = client
        return self.app(environ, start_response)
