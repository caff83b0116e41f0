"""Signed model files (maas.saving.signing): a detached Ed25519 signature
(MODEL.maas.sig) over every byte of the file. ``maas keygen``, ``maas
sign`` and ``maas verify --pubkey`` on the command line;
``load_model(trusted_keys=...)`` loads Sequential, functional and
subclassed models, plain or encrypted, bit-identically when the signature
is good, and refuses an unsigned file, an untrusted signer, a flipped bit in
the header, the data or the signature, a truncated file and swapped tensors,
each with its own message."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import maas
import maas.cli
from maas.errors import ModelFormatError
from maas.saving import signing
from maas.saving.encryption import read_prefix

pytest.importorskip("cryptography")

from test_encryption import KEY, X, Subclassed, functional, sequential, trained  # noqa: E402


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    priv, pub = signing.generate_keypair(d / "signing.pem", d / "signing.pub")
    other, other_pub = signing.generate_keypair(d / "other.pem", d / "other.pub")
    return {"dir": d, "priv": priv, "pub": pub, "other": other, "other_pub": other_pub}


@pytest.fixture(scope="module")
def signed(tmp_path_factory, keys):
    d = tmp_path_factory.mktemp("signed")
    model = trained(sequential)
    model.save(d / "m.maas")
    signing.sign_file(d / "m.maas", keys["priv"])
    return d, model


@pytest.mark.parametrize("encrypted", [False, True])
@pytest.mark.parametrize("build", [sequential, functional, Subclassed])
def test_signed_round_trip_is_bit_identical(tmp_path, keys, build, encrypted):
    model = trained(build)
    kw = {"encryption_key": KEY} if encrypted else {}
    model.save(tmp_path / "m.maas", **kw)
    before = (tmp_path / "m.maas").read_bytes()
    kid = signing.sign_file(tmp_path / "m.maas", keys["priv"])
    assert (tmp_path / "m.maas").read_bytes() == before  # detached: the model file is untouched
    loaded = maas.load_model(tmp_path / "m.maas", trusted_keys=[keys["pub"]], **kw)
    np.testing.assert_array_equal(loaded.predict(X, verbose=0), model.predict(X, verbose=0))
    assert loaded._file_info["signer_key_id"] == kid == signing.key_id(keys["pub"])
    assert loaded._file_info["encrypted"] is encrypted


def test_trusted_keys_as_paths_pem_text_and_a_folder(signed, keys):
    d, model = signed
    ref = model.predict(X, verbose=0)
    pem = (keys["dir"] / "signing.pub").read_text()
    # the folder holds private keys too (*.pem): only *.pub files are read
    for trusted in ([str(keys["dir"] / "signing.pub")], [pem], keys["dir"],
                    [keys["other_pub"], keys["pub"]]):
        got = maas.load_model(d / "m.maas", trusted_keys=trusted).predict(X, verbose=0)
        np.testing.assert_array_equal(got, ref)
    with pytest.raises(ValueError, match="holds no Ed25519 public key"):
        maas.load_model(d / "m.maas", trusted_keys=[])


def _copy(d, tmp_path, data=None, sig=None):
    p = tmp_path / "c.maas"
    p.write_bytes((d / "m.maas").read_bytes() if data is None else data)
    s = (d / "m.maas.sig").read_bytes() if sig is None else sig
    if s is not False:
        (tmp_path / "c.maas.sig").write_bytes(s)
    return p


def _flip(data: bytes, pos: int, bit: int = 0) -> bytes:
    b = bytearray(data)
    b[pos] ^= 1 << bit
    return bytes(b)


CHANGED = "refused: the file does not match its signature by key .* it was changed after signing"


def test_unsigned_and_untrusted_files_are_refused(signed, keys, tmp_path):
    d, _ = signed
    with pytest.raises(signing.ModelSignatureError, match="refused: the file is not signed "
                                                          "\\(no c.maas.sig beside it\\)"):
        maas.load_model(_copy(d, tmp_path, sig=False), trusted_keys=[keys["pub"]])
    kid = signing.key_id(keys["pub"])
    with pytest.raises(ModelFormatError, match=f"refused: signed by key {kid}, which is not a "
                                               f"trusted key \\(trusted: "
                                               f"{signing.key_id(keys['other_pub'])}\\)"):
        maas.load_model(d / "m.maas", trusted_keys=[keys["other_pub"]])
    # without trusted_keys a signature is neither needed nor checked
    maas.load_model(_copy(d, tmp_path, sig=False))


def test_every_tampering_is_refused_with_its_message(signed, keys, tmp_path):
    d, _ = signed
    data = (d / "m.maas").read_bytes()
    sig = (d / "m.maas.sig").read_bytes()
    prefix = read_prefix(d / "m.maas")
    trusted = [keys["pub"]]

    def refused(match, data=None, sig=None):
        with pytest.raises(ModelFormatError, match=match):
            maas.load_model(_copy(d, tmp_path, data, sig), trusted_keys=trusted)

    # a header bit that keeps the JSON valid (and the plain checksum right: it covers the data only)
    refused(CHANGED, _flip(data, 8 + prefix[8:].index(b'"relu') + 2, 1))
    # a data bit, first and last
    refused(CHANGED, _flip(data, len(prefix)))
    refused(CHANGED, _flip(data, len(data) - 1, 7))
    # truncated
    refused("truncated|run past the end|cover|ended", data[:-4])
    # two tensors of one size swapped
    header = json.loads(prefix[8:])
    mom = next(k for k in header if k.endswith("kernel/momentum"))
    (a0, a1), (b0, b1) = header[mom]["data_offsets"], header[mom.replace("momentum", "velocity")]["data_offsets"]
    body = bytearray(data[len(prefix):])
    body[a0:a1], body[b0:b1] = bytes(body[b0:b1]), bytes(body[a0:a1])
    refused(CHANGED, prefix + bytes(body))
    # the signature: a bit of the signature value, the recorded digest, the key id
    fields = json.loads(sig)
    raw = bytearray(base64.b64decode(fields["signature"]))
    raw[5] ^= 0x10
    refused("refused: the signature does not verify with key .*altered or forged",
            sig=json.dumps({**fields, "signature": base64.b64encode(bytes(raw)).decode()}).encode())
    other_digest = ("0" if fields["sha256"][0] != "0" else "1") + fields["sha256"][1:]
    refused("does not verify", sig=json.dumps({**fields, "sha256": other_digest}).encode())
    refused("not a trusted key", sig=json.dumps({**fields, "key_id": "0" * 16}).encode())
    refused("not a maas signature file", sig=b"{not json")
    # a file signed by another key, with its signature renamed to claim the trusted key
    signing.sign_file(_copy(d, tmp_path), keys["other"])
    forged = json.loads((tmp_path / "c.maas.sig").read_bytes())
    refused("does not verify", sig=json.dumps({**forged, "key_id": fields["key_id"]}).encode())


def test_a_signature_moved_to_another_model_is_refused(signed, keys, tmp_path):
    d, _ = signed
    other = trained(functional)
    other.save(tmp_path / "o.maas")
    (tmp_path / "o.maas.sig").write_bytes((d / "m.maas.sig").read_bytes())
    with pytest.raises(ModelFormatError, match=CHANGED):
        maas.load_model(tmp_path / "o.maas", trusted_keys=[keys["pub"]])


def test_signed_plain_files_are_copied_into_memory(signed, keys):
    """The bytes hashed are the bytes used: a signed plain file is not
    mapped (a later write to the file could otherwise reach the model)."""
    d, _ = signed
    maas.load_model(d / "m.maas", trusted_keys=[keys["pub"]])
    real = os.path.realpath(d / "m.maas")
    with open("/proc/self/maps") as f:
        assert not any(line.rstrip().endswith(real) for line in f)


def test_private_keys_are_written_for_their_owner_and_never_overwritten(keys, tmp_path):
    assert os.stat(keys["dir"] / "signing.pem").st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        signing.generate_keypair(keys["dir"] / "signing.pem", tmp_path / "x.pub")
    priv, pub = signing.generate_keypair(tmp_path / "p.pem", tmp_path / "p.pub", password=b"pw")
    assert b"ENCRYPTED" in (tmp_path / "p.pem").read_bytes()
    with pytest.raises(ValueError, match="not a readable PEM private key"):
        signing.load_private_key(tmp_path / "p.pem")
    assert signing.key_id(signing.load_private_key(tmp_path / "p.pem", b"pw")) == signing.key_id(pub)
    with pytest.raises(ValueError, match="not a PEM public key"):
        signing.load_public_key(keys["dir"] / "signing.pem")


def test_cli_keygen_sign_verify(tmp_path, capsys, monkeypatch):
    """The README's example: keygen, sign, verify; a bad file exits 1."""
    monkeypatch.chdir(tmp_path)
    model = trained(sequential)
    model.save("m.maas")
    assert maas.cli.main(["keygen", "signing"]) == 0
    assert maas.cli.main(["keygen", "--encryption", "model.key"]) == 0
    assert maas.cli.main(["sign", "m.maas", "--key", "signing.pem"]) == 0
    out = capsys.readouterr().out
    kid = signing.key_id(signing.load_public_key("signing.pub"))
    assert f"key id {kid}" in out and f"signed m.maas with key {kid}: m.maas.sig" in out
    assert maas.cli.main(["verify", "m.maas", "--pubkey", "signing.pub"]) == 0
    assert f"signed by key {kid}" in capsys.readouterr().out
    # an encrypted, signed file: the signature checks without the key, the tag with it
    model.save("e.maas", encryption_key=maas.saving.Encryption(key_file="model.key"))
    assert maas.cli.main(["sign", "e.maas", "--key", "signing.pem"]) == 0
    assert maas.cli.main(["verify", "e.maas", "--pubkey", "signing.pub"]) == 0
    assert "structure only; pass --key-file" in capsys.readouterr().out
    assert maas.cli.main(["verify", "e.maas", "--pubkey", str(tmp_path), "--key-file", "model.key"]) == 0
    assert "authenticated with key id" in capsys.readouterr().out
    (tmp_path / "m.maas").write_bytes(_flip((tmp_path / "m.maas").read_bytes(), 2000))
    assert maas.cli.main(["verify", "m.maas", "--pubkey", "signing.pub"]) == 1
    err = capsys.readouterr().err
    assert "maas verify: error:" in err and ("changed after signing" in err or "checksum" in err)
    priv_pem = (tmp_path / "signing.pem").read_text()
    assert priv_pem.split("\n")[1] not in out + err  # no key material printed


def test_cli_as_a_program(tmp_path):
    """``python -m maas sign`` and ``verify`` in a child process (exit codes)."""
    model = trained(sequential)
    model.save(tmp_path / "m.maas")
    signing.generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    env = maas.cli.child_env()
    run = lambda *a: subprocess.run(maas.cli.child_argv("maas", *a), env=env, cwd=tmp_path,  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    assert run("sign", "m.maas", "--key", "k.pem").returncode == 0
    assert run("verify", "m.maas", "--pubkey", "k.pub").returncode == 0
    os.unlink(tmp_path / "m.maas.sig")
    r = run("verify", "m.maas", "--pubkey", "k.pub")
    assert r.returncode == 1 and "not signed" in r.stderr
    assert run("sign", "m.maas").returncode == 2  # --key is required


def test_encrypted_and_signed_files_check_the_signature_first(keys, tmp_path, monkeypatch):
    """The signature is checked over the very bytes decrypted, before the
    GCM tag: a changed byte reads as changed after signing."""
    monkeypatch.delenv("MAAS_MODEL_KEY", raising=False)
    monkeypatch.delenv("MAAS_MODEL_KEY_FILE", raising=False)
    model = trained(sequential)
    p = tmp_path / "e.maas"
    model.save(p, encryption_key=KEY)
    signing.sign_file(p, keys["priv"])
    data = p.read_bytes()
    trusted = [keys["pub"]]
    np.testing.assert_array_equal(maas.load_model(p, encryption_key=KEY, trusted_keys=trusted)
                                  .predict(X, verbose=0), model.predict(X, verbose=0))
    with pytest.raises(ModelFormatError, match="no key was given"):  # signature fine, no key
        maas.load_model(p, trusted_keys=trusted)
    p.write_bytes(_flip(data, len(data) - 100))
    with pytest.raises(ModelFormatError, match=CHANGED):
        maas.load_model(p, encryption_key=KEY, trusted_keys=trusted)
    with pytest.raises(ModelFormatError, match=CHANGED):
        maas.load_model(p, trusted_keys=trusted)
    with pytest.raises(ModelFormatError, match="failed authentication"):  # without trusted keys
        maas.load_model(p, encryption_key=KEY)
    p.write_bytes(data)
    os.unlink(str(p) + ".sig")
    with pytest.raises(ModelFormatError, match="not signed"):
        maas.load_model(p, encryption_key=KEY, trusted_keys=trusted)
