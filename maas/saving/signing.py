"""Signed model files: an Ed25519 signature over the file's SHA-256, kept
in a detached ``MODEL.maas.sig`` beside it.

Why detached rather than inside the metadata: a signature inside the header
would have to leave itself out of what it signs (a second, "canonical"
header to get exactly right in every reader), and adding it would rewrite
the whole file; a detached signature covers every byte of the file as it
is (header and data, encrypted or not), signing never touches the model
file (its checksum, its cache entries and any copy of it stay valid), and
it is what sigstore's model signing does (a signature bundle beside the
model). The ``.sig`` is a small JSON document::

    {"format": "maas-model-signature/1", "algorithm": "Ed25519",
     "key_id": "<16 hex>", "sha256": "<the file's SHA-256>", "size": <bytes>,
     "signature": "<base64 of Ed25519 over the canonical JSON of the other fields>"}

``key_id`` is the first 8 bytes of the SHA-256 of the raw public key, as
hex. Keys are PEM files (PKCS#8 private, SubjectPublicKeyInfo public), as
``openssl genpkey -algorithm ed25519`` writes them; ``maas keygen`` makes a
pair.

>>> import os, tempfile, maas
>>> from maas.saving import signing
>>> d = tempfile.mkdtemp()
>>> priv, pub = signing.generate_keypair(os.path.join(d, "signing.pem"), os.path.join(d, "signing.pub"))
>>> model = maas.Sequential([maas.Input((4,)), maas.layers.Dense(2)])
>>> model.save(os.path.join(d, "m.maas"))
>>> kid = signing.sign_file(os.path.join(d, "m.maas"), priv)
>>> loaded = maas.load_model(os.path.join(d, "m.maas"), trusted_keys=[pub])
>>> signing.verify_signature(os.path.join(d, "m.maas"), [pub]) == kid
True
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile

from ..errors import ModelFormatError

__all__ = ["ModelSignatureError", "SIGNATURE_SUFFIX", "generate_keypair", "sign_file",
           "verify_signature", "load_trusted_keys", "load_private_key", "load_public_key",
           "key_id", "signature_path"]

SIGNATURE_SUFFIX = ".sig"
FORMAT = "maas-model-signature/1"
_SIG_MAX_BYTES = 64 << 10


class ModelSignatureError(ModelFormatError):
    """A model file is unsigned, signed by an untrusted key, or does not
    match its signature."""


def signature_path(path) -> str:
    return os.fspath(path) + SIGNATURE_SUFFIX


def _ed25519():
    from .encryption import require_cryptography

    require_cryptography()
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519


def key_id(public_key) -> str:
    """The 16-hex-digit id of an Ed25519 public key (or of a private key's
    public half)."""
    from cryptography.hazmat.primitives import serialization

    ed = _ed25519()
    if isinstance(public_key, ed.Ed25519PrivateKey):
        public_key = public_key.public_key()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _write_private(path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def generate_keypair(private_path, public_path, password: bytes | None = None):
    """Makes an Ed25519 key pair; writes the private key (PKCS#8 PEM, mode
    0600, encrypted when ``password`` is given) and the public key (PEM).
    Refuses to overwrite. Returns ``(private_key, public_key)``."""
    from cryptography.hazmat.primitives import serialization

    priv = _ed25519().Ed25519PrivateKey.generate()
    enc = (serialization.BestAvailableEncryption(password) if password
           else serialization.NoEncryption())
    if os.path.exists(public_path):
        raise FileExistsError(f"{os.fspath(public_path)} exists; choose another name")
    _write_private(private_path, priv.private_bytes(serialization.Encoding.PEM,
                                                     serialization.PrivateFormat.PKCS8, enc))
    pub = priv.public_key()
    with open(public_path, "xb") as f:
        f.write(pub.public_bytes(serialization.Encoding.PEM,
                                 serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def load_private_key(path, password: bytes | None = None):
    from cryptography.hazmat.primitives import serialization

    with open(path, "rb") as f:
        data = f.read(_SIG_MAX_BYTES)
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError) as e:
        # the message of cryptography names the problem, never the key's bytes
        raise ValueError(f"{os.fspath(path)}: not a readable PEM private key ({e})") from None
    if not isinstance(key, _ed25519().Ed25519PrivateKey):
        raise ValueError(f"{os.fspath(path)}: not an Ed25519 private key (maas signs with "
                         f"Ed25519: `maas keygen` or `openssl genpkey -algorithm ed25519`)")
    return key


def load_public_key(key):
    """An Ed25519 public key from a key object, PEM bytes or a PEM file's path."""
    from cryptography.hazmat.primitives import serialization

    ed = _ed25519()
    if isinstance(key, ed.Ed25519PublicKey):
        return key
    if isinstance(key, ed.Ed25519PrivateKey):
        return key.public_key()
    where = "the key given"
    if isinstance(key, (str, os.PathLike)) and not (isinstance(key, str) and "-----BEGIN" in key):
        where = os.fspath(key)
        with open(key, "rb") as f:
            key = f.read(_SIG_MAX_BYTES)
    if isinstance(key, str):
        key = key.encode("ascii", "replace")
    try:
        pub = serialization.load_pem_public_key(key)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{where}: not a PEM public key ({e})") from None
    if not isinstance(pub, ed.Ed25519PublicKey):
        raise ValueError(f"{where}: not an Ed25519 public key")
    return pub


def load_trusted_keys(keys) -> dict:
    """``{key_id: public key}`` from a list of keys (objects, PEM bytes,
    paths) or a folder: every ``*.pub`` file in it (a PEM public key). An empty result is an error: nothing could ever load."""
    if isinstance(keys, (str, os.PathLike)) and os.path.isdir(keys):
        folder = os.fspath(keys)
        keys = [os.path.join(folder, n) for n in sorted(os.listdir(folder))
                if n.endswith(".pub") and not n.startswith(".")]
    elif isinstance(keys, (str, os.PathLike, bytes)) or hasattr(keys, "public_bytes"):
        keys = [keys]
    out = {}
    for k in keys:
        pub = load_public_key(k)
        out[key_id(pub)] = pub
    if not out:
        raise ValueError("trusted_keys holds no Ed25519 public key (give PEM files, a folder of "
                         "*.pub files, or key objects): nothing could be loaded")
    return out


def _payload(fields: dict) -> bytes:
    body = {k: fields[k] for k in ("format", "algorithm", "key_id", "sha256", "size")}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def file_digest(path) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 20)
            if not block:
                break
            h.update(block)
            n += len(block)
    return h.hexdigest(), n


def sign_file(path, private_key, password: bytes | None = None) -> str:
    """Signs the model file at ``path`` with an Ed25519 private key (an
    object or a PEM file's path); writes ``path + '.sig'`` atomically and
    returns the key id."""
    if not hasattr(private_key, "sign"):
        private_key = load_private_key(private_key, password)
    digest, size = file_digest(path)
    fields = {"format": FORMAT, "algorithm": "Ed25519", "key_id": key_id(private_key),
              "sha256": digest, "size": size}
    fields["signature"] = base64.b64encode(private_key.sign(_payload(fields))).decode("ascii")
    target = signature_path(path)
    folder = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(target) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(fields, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return fields["key_id"]


def read_signature(path) -> dict:
    sp = signature_path(path)
    try:
        with open(sp, "rb") as f:
            raw = f.read(_SIG_MAX_BYTES + 1)
    except FileNotFoundError:
        raise ModelSignatureError(f"{os.fspath(path)}: refused: the file is not signed (no "
                                  f"{os.path.basename(sp)} beside it); sign it with `maas sign "
                                  f"MODEL --key KEY.pem`") from None
    try:
        fields = json.loads(raw.decode("utf-8"))
        ok = (isinstance(fields, dict) and fields.get("format") == FORMAT
              and fields.get("algorithm") == "Ed25519"
              and all(isinstance(fields.get(k), str) for k in ("key_id", "sha256", "signature"))
              and isinstance(fields.get("size"), int) and len(raw) <= _SIG_MAX_BYTES)
    except (UnicodeDecodeError, ValueError):
        ok = False
    if not ok:
        raise ModelSignatureError(f"{sp}: refused: not a maas signature file ({FORMAT}, "
                                  f"Ed25519); re-sign the model")
    return fields


def verify_signature(path, trusted, digest: str | None = None, size: int | None = None) -> str:
    """Checks ``path``'s detached signature against ``trusted`` (see
    :func:`load_trusted_keys`; a dict from it is used as is) and the file's
    SHA-256 (``digest``/``size`` when the caller hashed the bytes it loads,
    else the file is read). Returns the signer's key id;
    :class:`ModelSignatureError` saying what is wrong otherwise."""
    from cryptography.exceptions import InvalidSignature

    if not isinstance(trusted, dict):
        trusted = load_trusted_keys(trusted)
    fields = read_signature(path)
    kid = fields["key_id"]
    sp = signature_path(path)
    pub = trusted.get(kid)
    if pub is None:
        raise ModelSignatureError(f"{os.fspath(path)}: refused: signed by key {kid}, which is not "
                                  f"a trusted key (trusted: {', '.join(sorted(trusted))})")
    try:
        sig = base64.b64decode(fields["signature"], validate=True)
        pub.verify(sig, _payload(fields))
    except (InvalidSignature, ValueError):
        raise ModelSignatureError(f"{sp}: refused: the signature does not verify with key {kid}: "
                                  f"the signature file was altered or forged") from None
    if digest is None:
        digest, size = file_digest(path)
    if digest != fields["sha256"] or size != fields["size"]:
        raise ModelSignatureError(f"{os.fspath(path)}: refused: the file does not match its "
                                  f"signature by key {kid} (signed: {fields['size']} bytes, "
                                  f"SHA-256 {fields['sha256'][:16]}...; the file: {size} bytes, "
                                  f"SHA-256 {digest[:16]}...): it was changed after signing")
    return kid
