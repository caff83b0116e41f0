"""Model files encrypted at rest: the tensor data under AES-256-GCM, the
header readable.

An encrypted file is still a safetensors file: the header (tensor names,
dtypes, shapes, offsets and the metadata) stays plain, so ``maas inspect``
shows what the file holds, but the data section holds the tensors' bytes
encrypted with AES-256-GCM (``cryptography``'s implementation, a random
96-bit nonce per file) followed by the 16-byte GCM tag as one more tensor,
``maas.encryption/tag``. The whole header (its 8-byte length included) is
the cipher's associated data, so a changed byte anywhere, header or data,
fails the tag check. The metadata's ``maas.encryption`` records the
algorithm, the nonce and the key's id (an HKDF-SHA256 derivation of the key,
which reveals nothing of it), so that a wrong key is told apart from a
tampered file. The plain file's SHA-256 is not written: it would let anyone
confirm a guess of the weights; GCM's tag authenticates the data instead.

Loading decrypts into memory (never to a file); an encrypted file therefore
costs its size in memory where a plain file can be memory-mapped.

The key is 32 bytes, given as bytes, 64 hex digits or base64 text, as an
:class:`Encryption` object, from a key file (``key_file=``; the
``MAAS_MODEL_KEY_FILE`` variable) or from the ``MAAS_MODEL_KEY`` variable.

>>> import os, tempfile, numpy as np, maas
>>> key = maas.saving.Encryption.generate_key()
>>> model = maas.Sequential([maas.Input((4,)), maas.layers.Dense(2)])
>>> path = os.path.join(tempfile.mkdtemp(), "secret.maas")
>>> model.save(path, encryption_key=key)
>>> loaded = maas.load_model(path, encryption_key=key)
>>> x = np.ones((1, 4), np.float32)
>>> bool((loaded.predict(x, verbose=0) == model.predict(x, verbose=0)).all())
True
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import secrets

import numpy as np

from ..errors import ModelFormatError
from ..tensor import Tensor

__all__ = ["Encryption", "KEY_ENV", "KEY_FILE_ENV", "ENCRYPTION_KEY", "TAG_TENSOR",
           "is_encrypted", "resolve_encryption"]

#: the environment variables a key is taken from when none is passed
KEY_ENV = "MAAS_MODEL_KEY"
KEY_FILE_ENV = "MAAS_MODEL_KEY_FILE"
#: the metadata key describing the encryption, and the tensor holding the tag
ENCRYPTION_KEY = "maas.encryption"
TAG_TENSOR = "maas.encryption/tag"
ALGORITHM = "AES-256-GCM"
_KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
_CHUNK = 8 << 20  # bytes encrypted or decrypted per call
_HEADER_CAP = 100_000_000  # the core's MAAS_ST_HEADER_CAP
_ST_DTYPES = {"float32": "F32", "int32": "I32", "int64": "I64", "int8": "I8", "uint8": "U8",
              "bool": "BOOL"}


def _parse_key(value, where: str) -> bytes:
    """32 key bytes from raw bytes, 64 hex digits or base64 text."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        if len(raw) == _KEY_BYTES:
            return raw
        try:
            text = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            text = None
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise TypeError(f"{where}: an encryption key is bytes or text (hex or base64), "
                        f"received {type(value).__name__}")
    if text is not None:
        if len(text) == 2 * _KEY_BYTES:
            try:
                return bytes.fromhex(text)
            except ValueError:
                pass
        try:
            raw = base64.b64decode(text, validate=True)
            if len(raw) == _KEY_BYTES:
                return raw
        except (binascii.Error, ValueError):
            pass
    # never echo the value: it may be most of a key
    raise ValueError(f"{where}: an AES-256 key is 32 bytes: give 32 raw bytes, 64 hex digits or "
                     f"base64 text of 32 bytes (make one with `maas keygen --encryption KEYFILE` "
                     f"or maas.saving.Encryption.generate_key())")


class Encryption:
    """An AES-256-GCM key for model files. Give exactly one of ``key``
    (bytes, hex or base64 text) and ``key_file`` (a file holding the key,
    raw or as text); with neither, the ``MAAS_MODEL_KEY`` variable (the key)
    or ``MAAS_MODEL_KEY_FILE`` (a key file's path) is used. The key never
    appears in ``repr``, messages or logs; ``key_id`` names it.

    >>> enc = Encryption(Encryption.generate_key())
    >>> len(enc.key_id)
    16
    """

    __slots__ = ("_key", "key_id", "source")

    def __init__(self, key=None, *, key_file=None):
        if key is not None and key_file is not None:
            raise ValueError("give one of key and key_file, not both")
        source = "the key given"
        if key is None and key_file is None:
            if os.environ.get(KEY_ENV):
                key, source = os.environ[KEY_ENV], f"the key in ${KEY_ENV}"
            elif os.environ.get(KEY_FILE_ENV):
                key_file = os.environ[KEY_FILE_ENV]
            else:
                raise ValueError(f"no encryption key: pass encryption_key= (bytes, hex or base64, "
                                 f"or maas.saving.Encryption(key_file=...)), or set {KEY_ENV} or "
                                 f"{KEY_FILE_ENV}")
        if key_file is not None:
            source = f"the key in key file {os.fspath(key_file)!r}"
            with open(key_file, "rb") as f:
                key = f.read(4096)
        self._key = _parse_key(key, source)
        self.key_id = _key_id(self._key)
        self.source = source

    def __repr__(self):
        return f"Encryption(key_id={self.key_id!r})"

    @staticmethod
    def generate_key() -> bytes:
        """32 random bytes from the OS (``secrets``)."""
        return secrets.token_bytes(_KEY_BYTES)

    def write_key_file(self, path) -> None:
        """Writes the key as hex to a new file readable by its owner only."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self._key.hex() + "\n")


def require_cryptography():
    """ImportError with the install line when ``cryptography`` is missing."""
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise ImportError("encrypted and signed model files need the cryptography package: "
                          "pip install 'maas[crypto]'") from None


def _key_id(key: bytes) -> str:
    """A public name of a key: HKDF-SHA256 of it under a fixed label, 8 bytes
    as hex. It identifies the key without revealing it (and commits the file
    to its key: GCM alone would not tell a wrong key from a tampered file)."""
    require_cryptography()
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=8, salt=None,
                info=b"maas model-file key id v1").derive(key).hex()


def resolve_encryption(encryption_key) -> Encryption | None:
    """An :class:`Encryption` from an argument (an object, key bytes or
    text), else from the environment, else None."""
    if isinstance(encryption_key, Encryption):
        return encryption_key
    if encryption_key is not None:
        return Encryption(encryption_key)
    if os.environ.get(KEY_ENV) or os.environ.get(KEY_FILE_ENV):
        return Encryption()
    return None


def is_encrypted(metadata) -> bool:
    return ENCRYPTION_KEY in metadata


def _gcm(key: bytes, nonce: bytes, tag: bytes | None = None):
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    return Cipher(algorithms.AES(key), modes.GCM(nonce, tag))


def _bytes_of(t) -> memoryview:
    arr = t.numpy() if hasattr(t, "numpy") else np.asarray(t)
    return memoryview(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))


# ------------------------------------------------------------------ saving

def save_encrypted(path, items, metadata: dict, enc: Encryption) -> None:
    """Writes ``items`` ([(name, Tensor)] in file order) encrypted, with the
    plain ``metadata`` (which must not hold a checksum), atomically."""
    nonce = secrets.token_bytes(_NONCE_BYTES)
    meta = dict(metadata)
    # a BOOL tensor's ciphertext is not 0s and 1s: it is stored as U8 and
    # named here, so that readers' checks of bools hold
    bools = [name for name, t in items if str(np.dtype(t.dtype)) == "bool"]
    desc = {"algorithm": ALGORITHM, "nonce": nonce.hex(), "key_id": enc.key_id, "tag": TAG_TENSOR}
    if bools:
        desc["bool_tensors"] = bools
    meta[ENCRYPTION_KEY] = json.dumps(desc, sort_keys=True)
    header, at = {}, 0
    for name, t in items:
        n = int(t.size) * np.dtype(t.dtype).itemsize
        dt = _ST_DTYPES[str(np.dtype(t.dtype))]
        header[name] = {"dtype": "U8" if dt == "BOOL" else dt, "shape": list(t.shape),
                        "data_offsets": [at, at + n]}
        at += n
    if TAG_TENSOR in header:
        raise ValueError(f"the tensor name {TAG_TENSOR!r} is reserved for the encryption tag")
    header[TAG_TENSOR] = {"dtype": "U8", "shape": [_TAG_BYTES], "data_offsets": [at, at + _TAG_BYTES]}
    header["__metadata__"] = meta
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((-(8 + len(text))) % 64)  # the data section starts 64-byte aligned
    prefix = len(text).to_bytes(8, "little") + text

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    # O_EXCL under a random name (not mkstemp, whose files are 0600): the
    # file gets the umask's permissions, as a plain save's
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            encryptor = _gcm(enc._key, nonce).encryptor()
            encryptor.authenticate_additional_data(prefix)
            f.write(prefix)
            for _, t in items:
                mv = _bytes_of(t)
                for k in range(0, len(mv), _CHUNK):
                    f.write(encryptor.update(mv[k:k + _CHUNK]))
            f.write(encryptor.finalize())
            f.write(encryptor.tag)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


# ----------------------------------------------------------------- loading

def read_prefix(path, f=None) -> bytes:
    """The file's first 8 + H bytes: its header length and JSON header (the
    bytes a signature and the GCM tag cover before the data), read from the
    open file ``f`` when given."""
    if f is None:
        with open(path, "rb") as f:
            return read_prefix(path, f)
    f.seek(0)
    size = os.fstat(f.fileno()).st_size
    head = f.read(8)
    n = int.from_bytes(head, "little") if len(head) == 8 else -1
    if not 0 <= n <= min(size - 8, _HEADER_CAP):
        from .safetensors import load_tensors

        load_tensors(path, mmap=True, verify=False)  # raises, saying what is wrong
        raise ModelFormatError(f"{os.fspath(path)}: the header length is not valid")
    rest = f.read(n)
    if len(rest) != n:
        raise ModelFormatError(f"{os.fspath(path)}: the file ended inside its header (truncated)")
    return head + rest


def check_prefix(path, prefix: bytes, tensors: dict, metadata: dict) -> None:
    """The header in ``prefix`` (read by Python) says what the core parsed
    (names, dtypes, shapes, offsets, metadata): what is authenticated is what
    is used, even if the file changed between the two reads."""
    try:
        header = json.loads(prefix[8:].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        header = None
    ok = isinstance(header, dict) and header.get("__metadata__", {}) == metadata
    if ok:
        entries = {k: v for k, v in header.items() if k != "__metadata__"}
        at = 0
        ok = set(entries) == set(tensors)
        for name, t in tensors.items():
            if not ok:
                break
            e = entries.get(name)
            n = int(t.size) * np.dtype(t.dtype).itemsize
            ok = (isinstance(e, dict) and e.get("shape") == list(t.shape)
                  and e.get("dtype") == _ST_DTYPES.get(str(np.dtype(t.dtype)))
                  and e.get("data_offsets") == [at, at + n])
            at += n
    if not ok:
        raise ModelFormatError(f"{os.fspath(path)}: the header changed while the file was being "
                               f"read (was it rewritten in place?); load it again")


def encryption_info(path, metadata: dict) -> dict:
    try:
        info = json.loads(metadata[ENCRYPTION_KEY])
        nonce = bytes.fromhex(info["nonce"])
        bools = info.get("bool_tensors", [])
        ok = (info.get("algorithm") == ALGORITHM and len(nonce) == _NONCE_BYTES
              and isinstance(info.get("key_id"), str) and info.get("tag") == TAG_TENSOR
              and isinstance(bools, list) and all(isinstance(b, str) for b in bools))
    except (ValueError, TypeError, KeyError, AttributeError):
        ok = False
    if not ok:
        raise ModelFormatError(f"{os.fspath(path)}: the metadata's {ENCRYPTION_KEY!r} is not a "
                               f"valid {ALGORITHM} description (algorithm, 12-byte hex nonce, "
                               f"key_id, tag)")
    return info


def decrypt(path, prefix: bytes, tensors: dict, metadata: dict, enc: Encryption | None,
            fd: int | None = None, check=None) -> dict:
    """The plain tensors of an encrypted file whose header is ``prefix`` and
    whose stored tensors (ciphertext, in file order, the tag last) are
    ``tensors``; ModelFormatError for a missing or wrong key or a failed
    authentication. The plaintext is only handed out once the tag checks.

    With ``fd`` (the open file ``prefix`` was read from) the ciphertext is
    read from it in chunks rather than from ``tensors`` (which then only
    give the layout): the file is never resident whole beside the
    plaintext. ``check(sha256_hex, size)``, called with the digest of the
    very bytes decrypted before the tag is checked, verifies a signature.
    """
    import hashlib

    from cryptography.exceptions import InvalidTag

    path = os.fspath(path)
    info = encryption_info(path, metadata)
    if enc is None:
        raise ModelFormatError(f"{path}: the file is encrypted ({ALGORITHM}, key id "
                               f"{info['key_id']}) and no key was given: pass encryption_key= "
                               f"(or --model-key-file to maas serve), or set {KEY_ENV} or "
                               f"{KEY_FILE_ENV}")
    if enc.key_id != info["key_id"]:
        raise ModelFormatError(f"{path}: wrong encryption key: the file was encrypted with key id "
                               f"{info['key_id']}, {enc.source} has id {enc.key_id}")
    names = list(tensors)
    if not names or names[-1] != TAG_TENSOR or tuple(tensors[TAG_TENSOR].shape) != (_TAG_BYTES,) \
            or str(np.dtype(tensors[TAG_TENSOR].dtype)) != "uint8":
        raise ModelFormatError(f"{path}: the encryption tag ({TAG_TENSOR!r}, 16 bytes at the end "
                               f"of the data) is missing or misplaced")
    body = names[:-1]
    total = sum(int(tensors[n].size) * np.dtype(tensors[n].dtype).itemsize for n in body)

    def pread(n, off):
        got = os.pread(fd, n, len(prefix) + off)
        if len(got) != n:
            raise ModelFormatError(f"{path}: the file got shorter while being read (was it "
                                   f"rewritten in place?); load it again")
        return got

    tag = pread(_TAG_BYTES, total) if fd is not None else bytes(_bytes_of(tensors[TAG_TENSOR]))
    if fd is not None:
        parts = (pread(min(_CHUNK, total - k), k) for k in range(0, total, _CHUNK))
    else:
        parts = (mv[k:k + _CHUNK] for mv in (_bytes_of(tensors[n]) for n in body)
                 for k in range(0, len(mv), _CHUNK))
    hasher = hashlib.sha256(prefix) if check is not None else None
    out = np.empty(total + 16, np.uint8)  # update_into wants room for a block more
    view = memoryview(out)
    decryptor = _gcm(enc._key, bytes.fromhex(info["nonce"]), tag).decryptor()
    decryptor.authenticate_additional_data(prefix)
    at = 0
    for part in parts:
        if hasher is not None:
            hasher.update(part)
        at += decryptor.update_into(part, view[at:at + len(part) + 16])
    if check is not None:
        hasher.update(tag)
        check(hasher.hexdigest(), len(prefix) + total + _TAG_BYTES)  # raises when not signed so
    try:
        decryptor.finalize()
    except InvalidTag:
        del out, view
        raise ModelFormatError(f"{path}: the encrypted file failed authentication: a byte of its "
                               f"header or data was changed after it was written (tampered or "
                               f"corrupted), or a tensor was swapped; the key (id {enc.key_id}) "
                               f"is the right one") from None
    bools = set(info.get("bool_tensors", []))
    plain, at = {}, 0
    for n in body:
        t = tensors[n]
        nbytes = int(t.size) * np.dtype(t.dtype).itemsize
        raw = out[at:at + nbytes]
        if n in bools:
            if str(np.dtype(t.dtype)) != "uint8" or (raw.size and raw.max() > 1):
                raise ModelFormatError(f"{path}: tensor {n!r} is marked BOOL but does not hold "
                                       f"0s and 1s")
            raw = raw.view(np.bool_)
        plain[n] = Tensor(raw.view(raw.dtype if n in bools else np.dtype(t.dtype))
                          .reshape(tuple(t.shape)))
        at += nbytes
    missing = bools - set(plain)
    if missing:
        raise ModelFormatError(f"{path}: the encryption metadata names BOOL tensors the file "
                               f"lacks: {sorted(missing)[:5]}")
    return plain


# ------------------------------------------------------- the file, checked

def save_tensors_encrypted(path, tensors, metadata, encryption) -> None:
    """:func:`maas.saving.save_tensors` with the data encrypted (see the
    module doc); ``encryption`` is an :class:`Encryption` or a key."""
    from .safetensors import CHECKSUM_KEY, _as_tensor, _file_order

    enc = resolve_encryption(encryption) if encryption is not None else None
    if enc is None:
        raise ValueError("save_tensors_encrypted needs an encryption key")
    meta = {}
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"metadata keys and values must be strings, received {k!r}: "
                            f"{type(v).__name__}")
        meta[k] = v
    for reserved in (CHECKSUM_KEY, ENCRYPTION_KEY):
        if reserved in meta:
            raise ValueError(f"{reserved!r} is reserved: maas writes it itself")
    items = sorted(((n, _as_tensor(n, t)) for n, t in tensors.items()), key=_file_order)
    save_encrypted(path, items, meta, enc)


def _stored_digest(prefix: bytes, tensors: dict) -> tuple[str, int]:
    import hashlib

    h, n = hashlib.sha256(prefix), len(prefix)
    for t in tensors.values():
        mv = _bytes_of(t)
        h.update(mv)
        n += len(mv)
    return h.hexdigest(), n


def read_model_file(path, mmap: bool = True, encryption_key=None, trusted_keys=None):
    """``(tensors, metadata, info)`` of a model file, decrypted and its
    signature checked as asked: ``info`` holds ``encrypted`` (bool),
    ``encryption_key_id`` and ``signer_key_id`` (None when not checked).

    Without a key or trusted keys this is :func:`load_tensors` (a plain file
    keeps the memory-mapped path). A signed plain file is read into memory
    (``mmap`` is ignored): the bytes hashed are then the bytes used, and no
    later write to the file reaches them.
    """
    from .safetensors import CHECKSUM_KEY, _check_sum, load_tensors

    path = os.fspath(path)
    enc = resolve_encryption(encryption_key)
    trusted = None
    if trusted_keys is not None:
        from .signing import load_trusted_keys

        trusted = trusted_keys if isinstance(trusted_keys, dict) else load_trusted_keys(trusted_keys)
    info = {"encrypted": False, "encryption_key_id": None, "signer_key_id": None}
    if enc is None and trusted is None:
        tensors, metadata = load_tensors(path, mmap=mmap, verify=True)
        if ENCRYPTION_KEY in metadata:
            decrypt(path, b"", tensors, metadata, None)  # raises: no key
        return tensors, metadata, info
    with open(path, "rb") as f:  # the prefix and an encrypted file's data come from this one open
        prefix = read_prefix(path, f)
        try:
            peek = json.loads(prefix[8:].decode("utf-8")).get("__metadata__", {})
            encrypted = isinstance(peek, dict) and ENCRYPTION_KEY in peek
        except (UnicodeDecodeError, ValueError, AttributeError):
            encrypted = False  # the core's parser says what is wrong
        # an encrypted file is mapped only for the core to check its structure
        # (no page of it is touched); its data is read from f in chunks
        stored, metadata = load_tensors(path, mmap=encrypted or (mmap and trusted is None),
                                        verify=False)
        check_prefix(path, prefix, stored, metadata)
        if trusted is not None:
            from .signing import verify_signature
        if ENCRYPTION_KEY in metadata:
            signed = {}

            def check(digest, size):
                signed["kid"] = verify_signature(path, trusted, digest, size)

            if enc is None:  # the signature first (it says more), then the missing key
                if trusted is not None:
                    digest, size = _stored_digest(prefix, stored)
                    info["signer_key_id"] = verify_signature(path, trusted, digest, size)
                decrypt(path, prefix, stored, metadata, None)  # raises: no key
            tensors = decrypt(path, prefix, stored, metadata, enc, fd=f.fileno(),
                              check=check if trusted is not None else None)
            del stored
            info["signer_key_id"] = signed.get("kid")
            info["encrypted"] = True
            info["encryption_key_id"] = enc.key_id
            return tensors, metadata, info
    if trusted is not None:
        digest, size = _stored_digest(prefix, stored)
        info["signer_key_id"] = verify_signature(path, trusted, digest, size)
    if CHECKSUM_KEY in metadata:
        _check_sum(stored, metadata[CHECKSUM_KEY], path)
    return stored, metadata, info
