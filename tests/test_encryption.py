"""Model files encrypted at rest (maas.saving.encryption): AES-256-GCM over
the data, the header readable and authenticated. Round trips of
Sequential, functional and subclassed models give bit-identical
predictions; a missing key, a wrong key, a flipped bit in the header, the
data or the tag, a truncated file and swapped tensors are each refused with
their own message; a seeded fuzz loop over an encrypted file never loads a
changed file; keys and plaintext weights reach neither the file nor the
log; plain files keep the memory-mapped path."""
from __future__ import annotations

import base64
import json
import logging
import os

import numpy as np
import pytest

import maas
import maas.cli
from maas.errors import ModelFormatError
from maas.saving import Encryption
from maas.saving.encryption import ENCRYPTION_KEY, TAG_TENSOR, read_prefix

pytest.importorskip("cryptography")

KEY = bytes(range(32))  # a fixed key: the tests are seeded
X = np.random.default_rng(3).normal(size=(7, 12)).astype(np.float32)
Y = np.random.default_rng(4).integers(0, 5, 7)


def sequential():
    return maas.Sequential([maas.Input((12,)), maas.layers.Dense(16, activation="relu"),
                            maas.layers.Dense(5, activation="softmax")])


def functional():
    inp = maas.Input((12,))
    h = maas.layers.Dense(16, activation="relu")(inp)
    out = maas.layers.Dense(5)(maas.layers.Add()([h, maas.layers.Dense(16)(inp)]))
    return maas.Model(inp, out)


@maas.saving.register_serializable(package="tests_encryption")
class Subclassed(maas.Model):
    def __init__(self, units=16, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.dense1 = maas.layers.Dense(units, activation="relu")
        self.dense2 = maas.layers.Dense(5)

    def call(self, inputs, training=False):
        return self.dense2(self.dense1(inputs))

    def get_config(self):
        return {"units": self.units}


def trained(build):
    maas.utils.set_random_seed(0)
    model = build()
    model.compile(optimizer="adam", loss=maas.losses.SparseCategoricalCrossentropy(
        from_logits=build is not sequential))
    model.fit(X, Y, epochs=2, batch_size=4, verbose=0)
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A trained Sequential model saved plain and encrypted."""
    d = tmp_path_factory.mktemp("enc")
    model = trained(sequential)
    model.save(d / "plain.maas")
    model.save(d / "enc.maas", encryption_key=KEY)
    return d, model


@pytest.mark.parametrize("build", [sequential, functional, Subclassed])
def test_encrypted_round_trip_is_bit_identical(tmp_path, build):
    model = trained(build)
    model.save(tmp_path / "m.maas", encryption_key=KEY)
    loaded = maas.load_model(tmp_path / "m.maas", encryption_key=KEY)
    np.testing.assert_array_equal(loaded.predict(X, verbose=0), model.predict(X, verbose=0))
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # the optimizer state comes back too: one more step gives the same bits
    model.fit(X, Y, epochs=1, batch_size=7, verbose=0, shuffle=False)
    loaded.fit(X, Y, epochs=1, batch_size=7, verbose=0, shuffle=False)
    np.testing.assert_array_equal(loaded.predict(X, verbose=0), model.predict(X, verbose=0))
    assert loaded._file_info["encrypted"] and loaded._file_info["encryption_key_id"] == Encryption(KEY).key_id


def test_every_way_of_giving_the_key(saved, tmp_path, monkeypatch):
    d, model = saved
    ref = model.predict(X, verbose=0)
    (tmp_path / "raw.key").write_bytes(KEY)
    (tmp_path / "hex.key").write_text(KEY.hex() + "\n")
    ways = [KEY, KEY.hex(), base64.b64encode(KEY).decode(), Encryption(KEY),
            Encryption(key_file=tmp_path / "raw.key"), Encryption(key_file=tmp_path / "hex.key")]
    for key in ways:
        np.testing.assert_array_equal(
            maas.load_model(d / "enc.maas", encryption_key=key).predict(X, verbose=0), ref)
    monkeypatch.setenv("MAAS_MODEL_KEY", KEY.hex())
    np.testing.assert_array_equal(maas.load_model(d / "enc.maas").predict(X, verbose=0), ref)
    monkeypatch.delenv("MAAS_MODEL_KEY")
    monkeypatch.setenv("MAAS_MODEL_KEY_FILE", str(tmp_path / "hex.key"))
    np.testing.assert_array_equal(maas.load_model(d / "enc.maas").predict(X, verbose=0), ref)
    # a plain file needs no key, and loads with one (authenticity is the signature's job)
    np.testing.assert_array_equal(maas.load_model(d / "plain.maas", encryption_key=KEY)
                                  .predict(X, verbose=0), ref)


def test_a_key_file_is_written_for_its_owner_only(tmp_path):
    enc = Encryption(Encryption.generate_key())
    enc.write_key_file(tmp_path / "k")
    assert os.stat(tmp_path / "k").st_mode & 0o777 == 0o600
    assert Encryption(key_file=tmp_path / "k").key_id == enc.key_id
    with pytest.raises(FileExistsError):
        enc.write_key_file(tmp_path / "k")


def test_missing_and_wrong_keys_are_refused_saying_which(saved, monkeypatch):
    d, _ = saved
    monkeypatch.delenv("MAAS_MODEL_KEY", raising=False)
    monkeypatch.delenv("MAAS_MODEL_KEY_FILE", raising=False)
    kid = Encryption(KEY).key_id
    with pytest.raises(ModelFormatError, match=f"encrypted \\(AES-256-GCM, key id {kid}\\) and no "
                                               f"key was given: pass encryption_key="):
        maas.load_model(d / "enc.maas")
    other = Encryption(bytes(32))
    with pytest.raises(ModelFormatError, match=f"wrong encryption key: the file was encrypted with "
                                               f"key id {kid}, the key given has id {other.key_id}"):
        maas.load_model(d / "enc.maas", encryption_key=other)
    with pytest.raises(ValueError, match="an AES-256 key is 32 bytes"):
        maas.load_model(d / "enc.maas", encryption_key="too short")
    # load_tensors alone hands out ciphertext only with the tag visible: never taken for weights
    tensors, meta = maas.saving.load_tensors(d / "enc.maas")
    assert ENCRYPTION_KEY in meta and TAG_TENSOR in tensors
    with pytest.raises(ModelFormatError, match="the file is encrypted; load it with"):
        sequential().load_weights(d / "enc.maas")


def _flip(data: bytes, pos: int, bit: int = 0) -> bytes:
    b = bytearray(data)
    b[pos] ^= 1 << bit
    return bytes(b)


def _refused(tmp_path, data: bytes, match: str):
    p = tmp_path / "bad.maas"
    p.write_bytes(data)
    with pytest.raises(ModelFormatError, match=match):
        maas.load_model(p, encryption_key=KEY)


AUTH = "the encrypted file failed authentication: a byte of its header or data was changed"


def test_every_tampering_is_refused_with_its_message(saved, tmp_path):
    d, _ = saved
    data = (d / "enc.maas").read_bytes()
    prefix = read_prefix(d / "enc.maas")
    header = prefix[8:]
    # a bit of the header that keeps it valid JSON: a letter of the architecture
    at = 8 + header.index(b'"relu') + 2
    _refused(tmp_path, _flip(data, at, 1), AUTH)
    # a bit of a padding space after the JSON: still authenticated
    _refused(tmp_path, _flip(data, len(prefix) - 1, 0), "not valid|trailing|after the JSON|header")
    # a bit of the data, first and last data byte before the tag, and of the tag
    _refused(tmp_path, _flip(data, len(prefix)), AUTH)
    _refused(tmp_path, _flip(data, len(data) - 17, 7), AUTH)
    _refused(tmp_path, _flip(data, len(data) - 1), AUTH)
    # truncated: one byte short, or cut inside the header
    _refused(tmp_path, data[:-1], "truncated|run past the end|cover")
    _refused(tmp_path, data[:len(prefix) - 10], "truncated|larger than|ended")
    # the key id changed in the header: reported as a wrong key, never loaded
    meta = json.loads(header)["__metadata__"]
    kid = json.loads(meta[ENCRYPTION_KEY])["key_id"]
    forged = data.replace(kid.encode(), ("0" * 16).encode())
    _refused(tmp_path, forged, "wrong encryption key")


def test_swapped_tensors_are_refused(saved, tmp_path):
    """Two tensors of one size swap places, once by their bytes and once by
    their names in the header: both are refused."""
    d, _ = saved
    data = (d / "enc.maas").read_bytes()
    prefix = read_prefix(d / "enc.maas")
    header = json.loads(prefix[8:])
    mom = next(k for k in header if k.endswith("kernel/momentum"))
    m, v = header[mom], header[mom.replace("momentum", "velocity")]
    (a0, a1), (b0, b1) = m["data_offsets"], v["data_offsets"]
    body = bytearray(data[len(prefix):])
    body[a0:a1], body[b0:b1] = bytes(body[b0:b1]), bytes(body[a0:a1])
    _refused(tmp_path, prefix + bytes(body), AUTH)
    names = data.replace(b"kernel/momentum", b"kernel/XXXXXXXX").replace(
        b"kernel/velocity", b"kernel/momentum").replace(b"kernel/XXXXXXXX", b"kernel/velocity")
    assert names != data and len(names) == len(data)
    _refused(tmp_path, names, AUTH)


def test_inspect_shows_names_and_shapes_but_the_values_are_not_in_the_file(saved, capsys):
    d, model = saved
    assert maas.cli.main(["inspect", str(d / "enc.maas")]) == 0
    out = capsys.readouterr().out
    assert "encrypted: AES-256-GCM" in out
    for name, w in maas.saving.weight_names(model):
        assert f"weights/{name}" in out and str(tuple(w.shape)) in out
    enc, plain = (d / "enc.maas").read_bytes(), (d / "plain.maas").read_bytes()
    for w in model.get_weights():
        chunk = np.ascontiguousarray(w).tobytes()[:16]
        assert chunk in plain and chunk not in enc
    # the plain file's checksum would let anyone confirm a guess of the weights: not written
    assert maas.saving.CHECKSUM_KEY.encode() not in read_prefix(d / "enc.maas")


def test_two_saves_use_different_nonces(saved, tmp_path):
    d, model = saved
    model.save(tmp_path / "again.maas", encryption_key=KEY)
    nonce = [json.loads(maas.saving.load_tensors(p)[1][ENCRYPTION_KEY])["nonce"]
             for p in (d / "enc.maas", tmp_path / "again.maas")]
    assert nonce[0] != nonce[1]
    assert (d / "enc.maas").read_bytes() != (tmp_path / "again.maas").read_bytes()


def _mapped(path) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/maps") as f:
        return any(line.rstrip().endswith(real) for line in f)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc")
def test_plain_files_stay_mapped_and_encrypted_ones_are_decrypted_in_memory(saved, tmp_path):
    d, _ = saved
    plain = maas.load_model(d / "plain.maas")
    assert _mapped(d / "plain.maas")  # the zero-copy path is kept
    before = sorted(os.listdir(d))
    enc = maas.load_model(d / "enc.maas", encryption_key=KEY)
    assert not _mapped(d / "enc.maas")  # the ciphertext mapping is gone once decrypted
    assert sorted(os.listdir(d)) == before  # no file was written beside it
    with open("/proc/self/maps") as f:
        assert ".tmp" not in f.read()
    np.testing.assert_array_equal(enc.predict(X, verbose=0), plain.predict(X, verbose=0))


def test_no_key_or_weight_reaches_the_log_or_messages(saved, tmp_path, caplog, capfd):
    d, model = saved
    caplog.set_level(logging.DEBUG)
    secrets_ = [KEY.hex(), base64.b64encode(KEY).decode(), repr(KEY)]
    messages = [repr(Encryption(KEY)), str(Encryption(KEY).__slots__)]
    for bad in ("x" * 64, KEY.hex()[:-2]):
        try:
            Encryption(bad)
        except ValueError as e:
            messages.append(str(e))
            assert bad not in str(e)
    for key in (bytes(32), None):
        try:
            maas.load_model(d / "enc.maas", encryption_key=key)
        except ModelFormatError as e:
            messages.append(str(e))
    p = tmp_path / "t.maas"
    p.write_bytes(_flip((d / "enc.maas").read_bytes(), len(read_prefix(d / "enc.maas")) + 3))
    with pytest.raises(ModelFormatError) as e:
        maas.load_model(p, encryption_key=KEY)
    messages.append(str(e.value))
    maas.load_model(d / "enc.maas", encryption_key=KEY)
    out, err = capfd.readouterr()
    text = "\n".join(messages + [r.getMessage() for r in caplog.records] + [out, err])
    for s in secrets_:
        assert s not in text
    w = model.get_weights()[0]
    assert str(float(w.ravel()[0])) not in text and repr(w.ravel()[:3]) not in text


def test_the_fuzz_loop_over_an_encrypted_file_never_loads_a_changed_file(saved, tmp_path):
    """The seeded mutation loop of test_saving.py over an encrypted file:
    every changed or truncated file is a ModelFormatError (GCM authenticates
    every byte, the header included), never a model."""
    d, _ = saved
    data = (d / "enc.maas").read_bytes()
    rng = np.random.default_rng(1234)
    target = tmp_path / "fuzz.maas"
    counts = {"refused": 0, "unchanged": 0}
    for i in range(1500):
        buf = bytearray(data)
        kind = i % 4
        if kind == 0:
            buf = buf[: int(rng.integers(0, len(buf)))]
        else:
            for _ in range(int(rng.integers(1, 8))):
                pos = int(rng.integers(0, len(buf)))
                buf[pos] = int(rng.integers(0, 256)) if kind != 3 else buf[pos] ^ (1 << int(rng.integers(0, 8)))
        if bytes(buf) == data:
            counts["unchanged"] += 1
            continue
        target.write_bytes(bytes(buf))
        with pytest.raises(ModelFormatError):
            maas.load_model(target, compile=bool(i % 2), encryption_key=KEY)
        counts["refused"] += 1
    assert counts["refused"] > 1400
    assert maas.load_model(d / "enc.maas", encryption_key=KEY).predict(X, verbose=0).shape == (7, 5)


def test_encrypted_tensors_of_every_dtype_round_trip(tmp_path):
    from maas.saving.encryption import read_model_file, save_tensors_encrypted

    rng = np.random.default_rng(0)
    tensors = {"f": rng.normal(size=(3, 5)).astype(np.float32), "i": np.arange(7, dtype=np.int32),
               "l": np.arange(3, dtype=np.int64) - 5, "b": np.array([True, False, True]),
               "u": np.arange(9, dtype=np.uint8), "s": np.arange(-4, 4, dtype=np.int8),
               "empty": np.zeros((0, 3), np.float32)}
    save_tensors_encrypted(tmp_path / "t.safetensors", tensors, {"note": "hi"}, KEY)
    got, meta, info = read_model_file(tmp_path / "t.safetensors", encryption_key=KEY)
    assert meta["note"] == "hi" and info["encrypted"] and set(got) == set(tensors)
    for k, v in tensors.items():
        assert got[k].numpy().dtype == v.dtype
        np.testing.assert_array_equal(got[k].numpy(), v)
    with pytest.raises(ValueError, match="reserved"):
        save_tensors_encrypted(tmp_path / "u", {TAG_TENSOR: np.zeros(1, np.float32)}, {}, KEY)
    # the safetensors package reads the file's header (names, shapes) like any other
    st = pytest.importorskip("safetensors")
    with st.safe_open(str(tmp_path / "t.safetensors"), "np") as f:
        assert set(f.keys()) == set(tensors) | {TAG_TENSOR}
        assert f.get_slice("f").get_shape() == [3, 5]


def test_the_docstring_examples_run():
    import doctest

    import maas.saving.encryption
    import maas.saving.signing
    import maas.serving.security

    for mod in (maas.saving.encryption, maas.saving.signing, maas.serving.security):
        r = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
        assert r.failed == 0 and r.attempted > 0, mod.__name__


def test_save_to_repository_encrypts_a_version_that_the_key_loads_and_serves(saved, tmp_path,
                                                                             monkeypatch):
    """``save_to_repository(..., encryption_key=)`` writes an encrypted
    ``model.maas`` (no plain weight in it); ``load_model`` with the key and
    the server's SecureLoader (``maas serve --model-key-file``) answer with
    the model's own predictions, bit for bit; without the key it is refused."""
    from maas.serving.security import SecureLoader

    monkeypatch.delenv("MAAS_MODEL_KEY", raising=False)
    monkeypatch.delenv("MAAS_MODEL_KEY_FILE", raising=False)
    _, model = saved
    repo = tmp_path / "repo"
    path = maas.saving.save_to_repository(model, str(repo), "secret", encryption_key=KEY)
    assert path == str(repo / "secret" / "1" / "model.maas")
    _, metadata = maas.saving.load_tensors(path, verify=False)
    assert ENCRYPTION_KEY in metadata
    raw = open(path, "rb").read()
    kernel = np.ascontiguousarray(model.weights[0].numpy()).tobytes()
    assert kernel[:64] not in raw
    with pytest.raises(ModelFormatError, match="encrypted"):
        maas.load_model(path)
    want = model.predict(X, verbose=0)
    assert np.array_equal(maas.load_model(path, encryption_key=KEY).predict(X, verbose=0), want)
    key_file = tmp_path / "model.key"
    Encryption(KEY).write_key_file(str(key_file))
    served = SecureLoader(str(key_file), None, None, root=str(repo))(str(repo / "secret" / "1"))
    assert np.array_equal(served.predict(X, verbose=0), want)
    # a plain save next to it stays plain (no key from the environment sneaks in)
    monkeypatch.setenv("MAAS_MODEL_KEY", KEY.hex())
    plain = maas.saving.save_to_repository(model, str(repo), "secret")
    assert ENCRYPTION_KEY not in maas.saving.load_tensors(plain, verify=False)[1]


def test_verify_file_authenticates_an_encrypted_file_with_its_key(saved, tmp_path, monkeypatch):
    """verify_file on an encrypted file: without the key it says the file is
    encrypted and needs it (not "no checksum"); with the key it checks the
    GCM tag and returns the decrypted tensors; a wrong key and a flipped
    data byte are refused."""
    from maas.saving import verify_file

    monkeypatch.delenv("MAAS_MODEL_KEY", raising=False)
    monkeypatch.delenv("MAAS_MODEL_KEY_FILE", raising=False)
    d, model = saved
    enc = str(d / "enc.maas")
    with pytest.raises(ModelFormatError, match="encrypted.*encryption_key"):
        verify_file(enc)
    tensors, metadata = verify_file(enc, encryption_key=KEY)
    plain, plain_meta = verify_file(str(d / "plain.maas"))
    assert sorted(tensors) == sorted(plain)
    for k in plain:
        assert np.array_equal(np.asarray(tensors[k]), np.asarray(plain[k])), k
    monkeypatch.setenv("MAAS_MODEL_KEY", base64.b64encode(KEY).decode())
    assert sorted(verify_file(enc)[0]) == sorted(plain)  # the key from the environment
    monkeypatch.delenv("MAAS_MODEL_KEY")
    with pytest.raises(ModelFormatError, match="wrong encryption key"):
        verify_file(enc, encryption_key=bytes(32))
    bad = tmp_path / "flipped.maas"
    data = bytearray(open(enc, "rb").read())
    (hlen,) = np.frombuffer(bytes(data[:8]), "<u8")
    data[8 + int(hlen) + 5] ^= 0x01
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError):
        verify_file(str(bad), encryption_key=KEY)
