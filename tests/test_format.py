"""The model file (safetensors, read and written by maas's C core): round
trips, zero-copy mapping, interoperability with the `safetensors` package and
PyTorch, every malformed file, a seeded fuzz loop, atomic saves under
SIGKILL, the model repository's version folders, and the `maas` CLI.

Zero-copy, and what writing a loaded tensor does: load_tensors(mmap=True)
maps the file MAP_PRIVATE with PROT_READ|PROT_WRITE. The tensors point into
the mapping (checked against /proc/self/maps), their pages are the page
cache's (two loads show the pages as Shared_Clean in /proc/self/smaps), and
a write to a loaded tensor copies only the touched page into the process
(copy-on-write): the file and other loads never change. A read-only mapping
would make any in-place op on a loaded weight crash the process, which a
Keras user continuing to train a loaded model would hit at once.
"""
import json
import os
import random
import re
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import maas
from maas import _core
from maas.cli import main as cli_main
from maas.errors import ModelFormatError
from maas.saving import (CHECKSUM_KEY, list_versions, load_tensors, save_to_repository,
                         save_tensors, verify_file, version_path)
from maas.saving.repository import _next_version_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "dense/kernel": rng.standard_normal((8, 16)).astype(np.float32),
        "dense/bias": rng.standard_normal(16).astype(np.float32),
        "out/kernel": rng.standard_normal((16, 4)).astype(np.float32),
        "out/bias": np.zeros(4, np.float32),
    }


def _bits(a):
    return np.ascontiguousarray(np.asarray(a)).view(np.uint32)


def _mappings_of(path):
    """(start, end) of this process's mappings of path's inode."""
    st = os.stat(path)
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and int(parts[4]) == st.st_ino and parts[3].endswith(
                    f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"):
                a, b = (int(x, 16) for x in parts[0].split("-"))
                out.append((a, b))
    return out


def _smaps_of(path):
    """[{field: kB}] for each mapping of path's inode, from /proc/self/smaps."""
    ino = os.stat(path).st_ino
    maps, cur = [], None
    with open("/proc/self/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5 and not parts[0].endswith(":"):
                cur = {} if len(parts) >= 6 and parts[4].isdigit() and int(parts[4]) == ino else None
                if cur is not None:
                    maps.append(cur)
            elif cur is not None and parts[0].endswith(":") and len(parts) >= 2 and parts[1].isdigit():
                cur[parts[0][:-1]] = int(parts[1])
    return maps


def _st(header, data=b"", hlen=None):
    """Raw safetensors bytes from a header (dict or str) and data bytes."""
    h = header if isinstance(header, (str, bytes)) else json.dumps(header)
    h = h.encode() if isinstance(h, str) else h
    return struct.pack("<Q", len(h) if hlen is None else hlen) + h + data


def _entry(shape, begin, end, dtype="F32"):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}


# ------------------------------------------------------------ round trips

@pytest.mark.parametrize("mmap", [True, False])
def test_round_trip_is_bit_identical(tmp_path, mmap):
    w = _weights()
    special = np.array([np.nan, -0.0, np.inf, -np.inf, 1e-45, 3.4028235e38], np.float32)
    special.view(np.uint32)[0] = 0x7FC12345  # a NaN with a payload
    w.update({"special": special, "scalar": np.float32(2.5), "empty": np.zeros((0, 3), np.float32),
              'ünï "quoted" \\ name\n': np.ones((2, 1, 1), np.float32), "": np.ones(1, np.float32)})
    meta = {"note": 'héllo "q" \\ \n ☃', "empty": ""}
    path = tmp_path / "m.safetensors"
    save_tensors(path, w, meta)
    tensors, got_meta = load_tensors(path, mmap=mmap)
    assert set(tensors) == set(w)
    for name, want in w.items():
        got = tensors[name]
        assert isinstance(got, maas.Tensor)
        assert got.shape == np.shape(want)
        assert np.array_equal(_bits(got), _bits(want)), name
    assert {k: v for k, v in got_meta.items() if k != CHECKSUM_KEY} == meta
    assert len(got_meta[CHECKSUM_KEY]) == 64
    raw = path.read_bytes()
    (hlen,) = struct.unpack("<Q", raw[:8])
    assert (8 + hlen) % 64 == 0  # the data section is 64-byte aligned


def test_saving_is_deterministic_and_sorted_by_name(tmp_path):
    save_tensors(tmp_path / "a", _weights(), {"k": "v"})
    save_tensors(tmp_path / "b", dict(reversed(list(_weights().items()))), {"k": "v"})
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    tensors, _ = load_tensors(tmp_path / "a")
    assert list(tensors) == sorted(_weights())  # file order = name order


def test_save_accepts_tensors_and_variables_and_checks_types(tmp_path):
    p = tmp_path / "m"
    save_tensors(p, {"t": maas.tensor(np.ones(3, np.float32)), "v": maas.Variable(np.zeros(2)),
                     "big_endian": np.ones(2, ">f4"), "strided": np.ones((4, 4), np.float32)[:, 1]})
    t, _ = load_tensors(p)
    assert t["v"].numpy().tolist() == [0, 0] and t["strided"].numpy().tolist() == [1] * 4
    assert t["big_endian"].numpy().tolist() == [1, 1]
    with pytest.raises(TypeError, match="tensor 'x' has dtype float64; maas model files hold float32, int32, int64, int8, uint8, bool"):
        save_tensors(p, {"x": np.ones(2)})
    with pytest.raises(TypeError, match="metadata keys and values must be strings"):
        save_tensors(p, {}, {"epochs": 3})
    with pytest.raises(ValueError, match="'maas.data_sha256' is reserved"):
        save_tensors(p, {}, {CHECKSUM_KEY: "0" * 64})
    with pytest.raises(ValueError, match="'__metadata__' is reserved"):
        save_tensors(p, {"__metadata__": np.ones(1, np.float32)})
    with pytest.raises(FileNotFoundError, match="cannot create a temporary file"):
        save_tensors(tmp_path / "no" / "such" / "dir" / "m", {})
    with pytest.raises(FileNotFoundError, match="No such file"):
        load_tensors(tmp_path / "missing")
    with pytest.raises(IsADirectoryError):
        load_tensors(tmp_path)
    with pytest.raises(ValueError, match="must be a string"):
        _core.save_safetensors(str(p), [], '{"a": 1}')


# --------------------------------------------------------------- zero copy

def test_mmap_load_wraps_the_mapping_without_copying(tmp_path):
    path = tmp_path / "m"
    save_tensors(path, _weights())
    tensors, _ = load_tensors(path, mmap=True)
    maps = _mappings_of(path)
    assert len(maps) == 1
    start, end = maps[0]
    raw = path.read_bytes()
    (hlen,) = struct.unpack("<Q", raw[:8])
    offset = 8 + hlen
    for t in tensors.values():  # in file order: each right after the previous
        assert t._data_ptr == start + offset, "tensor data is not the mapped file"
        offset += 4 * t.size
    assert offset == len(raw) and end - start >= len(raw)
    # the NumPy view is the mapping too (no copy on the way out either)
    arr = np.asarray(tensors["dense/kernel"])
    assert start <= arr.ctypes.data < end

    copied, _ = load_tensors(path, mmap=False)
    assert len(_mappings_of(path)) == 1  # no new mapping ...
    for t in copied.values():             # ... and the copies live elsewhere
        assert not (start <= t._data_ptr < end)


def test_two_loads_share_the_page_cache_and_writes_are_copy_on_write(tmp_path):
    path = tmp_path / "m"
    w = {"w": np.random.default_rng(1).standard_normal((512, 1024)).astype(np.float32)}  # 2 MB
    save_tensors(path, w)
    a, _ = load_tensors(path)
    b, _ = load_tensors(path)
    assert np.array_equal(np.asarray(a["w"]), np.asarray(b["w"]))  # touch every page of both
    smaps = _smaps_of(path)
    assert len(smaps) == 2
    for m in smaps:  # every resident page is shared (the page cache's), none private
        assert m["Shared_Clean"] >= 2048 and m["Private_Dirty"] == 0, m
    before = path.read_bytes()
    np.asarray(a["w"])[0, :4] = 7.0            # write through a mapped load
    assert np.asarray(a["w"])[0, 0] == 7.0
    assert np.asarray(b["w"])[0, 0] == w["w"][0, 0]  # the other load: unchanged
    assert path.read_bytes() == before                # the file: unchanged
    assert sorted(m["Private_Dirty"] for m in _smaps_of(path)) == [0, 4]  # one page copied
    c, _ = load_tensors(path)                           # a fresh load verifies clean
    assert np.array_equal(np.asarray(c["w"]), w["w"])


def test_the_mapping_lives_until_the_last_tensor_goes(tmp_path):
    import gc

    path = tmp_path / "m"
    save_tensors(path, _weights())
    tensors, _ = load_tensors(path)
    keep = tensors["out/kernel"]
    del tensors
    gc.collect()
    assert len(_mappings_of(path)) == 1
    assert np.array_equal(keep.numpy(), _weights()["out/kernel"])
    arr = keep.numpy()
    del keep
    gc.collect()
    assert len(_mappings_of(path)) == 1  # the NumPy view keeps it alive
    assert np.array_equal(arr, _weights()["out/kernel"])
    del arr
    gc.collect()
    assert _mappings_of(path) == []


def test_a_100mb_file_opens_fast_with_mmap(tmp_path):
    path = tmp_path / "big.safetensors"
    n = 25 * 1024 * 1024  # 100 MiB of float32
    save_tensors(path, {"a": np.ones(n // 2, np.float32), "b": np.full(n // 2, 2.0, np.float32)})
    timings = {}
    for label, kw in [("mmap, no checksum", dict(mmap=True, verify=False)),
                      ("mmap + sha256 verify", dict(mmap=True, verify=True)),
                      ("copy, no checksum", dict(mmap=False, verify=False))]:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            tensors, _ = load_tensors(path, **kw)
            best = min(best, time.perf_counter() - t0)
            del tensors
        timings[label] = best
    print("\n100 MiB safetensors load: " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in timings.items()))
    tensors, _ = load_tensors(path)
    assert tensors["b"].numpy()[-1] == 2.0


# -------------------------------------------------------- interoperability

def test_safetensors_package_reads_a_maas_file(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    w = _weights()
    w["scalar"] = np.float32(1.5)
    w["ünïcode"] = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    path = tmp_path / "m.safetensors"
    save_tensors(path, w, {"format": "maas", "note": "é"})
    got = load_file(str(path))
    assert set(got) == set(w)
    for k in w:
        assert got[k].dtype == np.float32 and np.array_equal(_bits(got[k]), _bits(w[k]))
    with safe_open(str(path), framework="np") as f:
        meta = f.metadata()
    assert meta["format"] == "maas" and meta["note"] == "é" and CHECKSUM_KEY in meta


def test_maas_reads_files_written_by_the_safetensors_package(tmp_path):
    from safetensors.numpy import save_file

    w = _weights(3)
    w["scalar"] = np.array(4.0, np.float32)
    w["empty"] = np.zeros((0,), np.float32)
    path = tmp_path / "np.safetensors"
    save_file(w, str(path), metadata={"source": "safetensors"})
    tensors, meta = load_tensors(path)  # no maas checksum: nothing to verify
    assert meta == {"source": "safetensors"}
    for k in w:
        assert np.array_equal(_bits(tensors[k]), _bits(w[k]))
    with pytest.raises(ModelFormatError, match="no maas.data_sha256"):
        verify_file(path)

    save_file({"half": np.ones(2, np.float16)}, str(tmp_path / "f16.safetensors"))
    with pytest.raises(ModelFormatError, match="tensor 'half' has dtype 'F16'; maas reads F32, I32, I64, I8, U8 and BOOL tensors only"):
        load_tensors(tmp_path / "f16.safetensors")


def test_maas_reads_a_torch_state_dict_saved_with_safetensors(tmp_path):
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    sd = {k: v.contiguous() for k, v in net.state_dict().items()}
    path = tmp_path / "torch.safetensors"
    save_file(sd, str(path), metadata={"format": "pt"})
    for mmap in (True, False):
        tensors, meta = load_tensors(path, mmap=mmap)
        assert meta == {"format": "pt"} and set(tensors) == set(sd)
        for k, v in sd.items():
            assert tensors[k].shape == tuple(v.shape)
            assert np.array_equal(_bits(tensors[k]), _bits(v.numpy()))
    # the same forward pass from the loaded weights (Linear stores (out, in))
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    t = {k: v.numpy() for k, v in tensors.items()}
    h = np.maximum(x @ t["0.weight"].T + t["0.bias"], 0)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(h @ t["2.weight"].T + t["2.bias"], want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ malformed files

E = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
MALFORMED = [
    ("empty file", b"", "too short"),
    ("7 bytes", b"\x02\0\0\0\0\0\0", "7 bytes long, too short"),
    ("header past the end", _st("{}", hlen=1000), "header length 1000 is larger than the 2 bytes"),
    ("header over the cap", _st("{}", hlen=200_000_000), "exceeds the limit of 100000000 bytes"),
    ("huge header length", _st("{}", hlen=2**64 - 1), "exceeds the limit"),
    ("empty header", _st(""), "the header is empty"),
    ("not UTF-8", _st(b'{"\xff\xfe":{}}'), "not valid UTF-8"),
    ("not JSON", _st("this is not json"), "not valid JSON"),
    ("JSON array", _st("[1, 2]"), "expected the header to be a JSON object"),
    ("trailing garbage", _st('{} {"a": 1}'), "trailing data after the header"),
    ("unterminated", _st('{"a": {"dtype": "F32'), "unterminated string"),
    ("lone surrogate", _st('{"\\ud800": {}}'), "unpaired surrogate"),
    ("deep nesting", _st('{"a":' + "[" * 100000 + "]" * 100000 + "}"), "must be an object"),
    ("nested metadata", _st({"__metadata__": {"a": {"b": "c"}}}), "__metadata__ value of 'a' must be a string"),
    ("metadata number", _st({"__metadata__": {"epochs": 3}}), "must be a string"),
    ("duplicate tensor", _st('{"a": %s, "a": %s}' % (json.dumps(E), json.dumps(E)), b"\0" * 4),
     "names tensor 'a' twice"),
    ("duplicate metadata key", _st('{"__metadata__": {"k": "1", "k": "2"}}'), "has the key 'k' twice"),
    ("duplicate entry key", _st('{"a": {"dtype": "F32", "dtype": "F32", "shape": [1], '
                                '"data_offsets": [0, 4]}}', b"\0" * 4), "the key 'dtype' twice"),
    ("missing key", _st({"a": {"dtype": "F32", "shape": [1]}}, b"\0" * 4), "tensor 'a' has no 'data_offsets'"),
    ("unknown key", _st({"a": dict(E, extra=1)}, b"\0" * 4), "unknown key 'extra'"),
    ("dtype F64", _st({"a": _entry([1], 0, 8, "F64")}, b"\0" * 8), "tensor 'a' has dtype 'F64'; maas reads F32, I32, I64, I8, U8 and BOOL tensors only"),
    ("dtype BF16", _st({"a": _entry([2], 0, 4, "BF16")}, b"\0" * 4), "tensor 'a' has dtype 'BF16'; maas reads F32"),
    ("dtype I16", _st({"a": _entry([2], 0, 4, "I16")}, b"\0" * 4), "tensor 'a' has dtype 'I16'; maas reads F32"),
    ("I64 shape != bytes", _st({"a": _entry([2], 0, 8, "I64")}, b"\0" * 8),
     r"tensor 'a' has shape \(2,\) \(16 bytes of I64\) but data_offsets \[0, 8\] hold 8 bytes"),
    ("BOOL not 0 or 1", _st({"a": _entry([3], 0, 3, "BOOL")}, b"\0\1\2"),
     "tensor 'a' is BOOL but element 2 is the byte 2"),
    ("negative dim", _st({"a": _entry([-1], 0, 4)}, b"\0" * 4), "non-negative integer"),
    ("float dim", _st('{"a": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}', b"\0" * 4),
     "must be an integer"),
    ("nine dims", _st({"a": _entry([1] * 9, 0, 4)}, b"\0" * 4), "more than 8 dimensions"),
    ("shape != bytes", _st({"a": _entry([2, 3], 0, 20)}, b"\0" * 20),
     r"tensor 'a' has shape \(2, 3\) \(24 bytes of F32\) but data_offsets \[0, 20\] hold 20 bytes"),
    ("shape overflows", _st({"a": _entry([2**32, 2**32, 2**32], 0, 4)}, b"\0" * 4), "whose size overflows"),
    ("element count * 4 overflows", _st({"a": _entry([2**61], 0, 4)}, b"\0" * 4), "whose size overflows"),
    ("offset too large", _st('{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 99999999999999999999]}}'),
     "too large"),
    ("misordered offsets", _st({"a": _entry([1], 8, 4)}, b"\0" * 8), r"misordered data_offsets \[8, 4\]"),
    ("overlap", _st({"a": _entry([2], 0, 8), "b": _entry([2], 4, 12)}, b"\0" * 12),
     "tensor 'b' .* overlaps tensor 'a'"),
    ("gap", _st({"a": _entry([1], 0, 4), "b": _entry([1], 8, 12)}, b"\0" * 12),
     "bytes 4 to 8 of the data section belong to no tensor"),
    ("past the end", _st({"a": _entry([4], 0, 16)}, b"\0" * 12), "run past the end of the 12-byte data section"),
    ("extra data", _st({"a": _entry([1], 0, 4)}, b"\0" * 8), "cover 4 bytes but the data section has 8"),
]


@pytest.mark.parametrize("raw,match", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
@pytest.mark.parametrize("mmap", [True, False])
def test_malformed_files_raise_model_format_error(tmp_path, raw, match, mmap):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(raw)
    with pytest.raises(ModelFormatError, match=match) as info:
        load_tensors(path, mmap=mmap)
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(str(path))  # the message names the file


def test_a_corrupted_data_section_fails_the_checksum(tmp_path):
    path = tmp_path / "m"
    save_tensors(path, _weights())
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x10  # one bit of out/kernel (last by name): the structure is still valid
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelFormatError, match="checksum mismatch: the data section's SHA-256 is"):
        load_tensors(path)
    tensors, _ = load_tensors(path, verify=False)  # the user may still look at it
    assert (_bits(tensors["out/kernel"]) ^ _bits(_weights()["out/kernel"])).sum() == 1 << 12  # bit 4 of byte 1
    # a checksum that is not a digest
    tensors = {"a": np.ones(1, np.float32)}
    path.write_bytes(_st({"__metadata__": {CHECKSUM_KEY: "nope"}, "a": _entry([1], 0, 4)},
                         np.ones(1, np.float32).tobytes()))
    with pytest.raises(ModelFormatError, match="not a SHA-256 hex digest"):
        load_tensors(path)


def test_special_files_do_not_hang(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ModelFormatError, match="not a regular file"):
        load_tensors(fifo)  # would block forever if opened for a blocking read
    with pytest.raises(ModelFormatError, match="not a regular file"):
        load_tensors("/dev/zero")


def _mutate(rng, good, hlen):
    buf = bytearray(good)
    for _ in range(rng.randint(1, 4)):
        kind = rng.random()
        in_header = rng.random() < 0.8
        pos = rng.randrange(0, 8 + hlen) if in_header or len(buf) <= 8 + hlen else rng.randrange(len(buf))
        pos = min(pos, len(buf) - 1)
        if kind < 0.25:
            buf[pos] ^= 1 << rng.randrange(8)
        elif kind < 0.45:
            buf[pos] = rng.randrange(256)
        elif kind < 0.65:
            buf[pos] = ord(rng.choice('{}[]",:0123456789-eE. \\u'))
        elif kind < 0.75:
            del buf[pos:pos + rng.randint(1, 8)]
        elif kind < 0.85:
            buf[pos:pos] = bytes(rng.choice(b'{}[]",:09 \\') for _ in range(rng.randint(1, 8)))
        elif kind < 0.92:
            buf[:8] = struct.pack("<Q", rng.choice([0, 1, hlen - 1, hlen + 1, len(buf), 2**63, rng.randrange(2**64)]))
        else:
            del buf[rng.randrange(len(buf) + 1):]
    return bytes(buf)


def test_fuzz_mutated_and_truncated_files_load_or_raise_model_format_error(tmp_path):
    """10,000 seeded mutations and truncations of a real file: each loads or
    raises ModelFormatError (never another exception, a crash or a hang)."""
    config = json.dumps({"class_name": "Sequential", "config": {"layers": [
        {"class_name": "Dense", "config": {"units": 16, "activation": "relu"}},
        {"class_name": "Dense", "config": {"units": 4}}]}})
    good_path = tmp_path / "good.maas"
    save_tensors(good_path, _weights(), {"maas.config": config, "maas.version": maas.__version__})
    good = good_path.read_bytes()
    (hlen,) = struct.unpack("<Q", good[:8])
    rng = random.Random(20240601)
    path = tmp_path / "fuzz.maas"
    counts = {"loaded": 0, "refused": 0}
    t0 = time.perf_counter()
    n = 10_000
    for i in range(n):
        raw = good[:rng.randrange(len(good))] if i % 10 == 0 else _mutate(rng, good, hlen)
        path.write_bytes(raw)
        try:
            tensors, meta = load_tensors(path, mmap=bool(i % 2))
        except ModelFormatError:
            counts["refused"] += 1
        else:
            counts["loaded"] += 1
            for t in tensors.values():  # touch the data
                np.asarray(t).sum()
            del tensors
        assert time.perf_counter() - t0 < 60, f"fuzz loop too slow at iteration {i}"
    elapsed = time.perf_counter() - t0
    print(f"\nfuzz: {n} files in {elapsed:.1f} s: {counts}")
    assert counts["refused"] > n // 2 and counts["loaded"] > 0


# ------------------------------------------------------------------ dtypes

FILE_DTYPES = {"float32": "F32", "int32": "I32", "int64": "I64", "int8": "I8", "uint8": "U8",
               "bool": "BOOL"}


def _typed_weights(seed=0):
    rng = np.random.default_rng(seed)
    w = {}
    for name in FILE_DTYPES:
        if name == "bool":
            w[name] = rng.random((3, 5)) < 0.5
        elif name == "float32":
            w[name] = rng.standard_normal((3, 5)).astype(np.float32)
        else:
            info = np.iinfo(name)
            w[name] = rng.integers(info.min, info.max, size=(3, 5), endpoint=True, dtype=name)
    w["odd_i8"] = np.array([-128, 0, 127], np.int8)        # 3 bytes: shifts what follows
    w["scalar_i64"] = np.array(-(2**62) - 7, np.int64)
    w["empty_i32"] = np.zeros((0, 2), np.int32)
    return w


@pytest.mark.parametrize("mmap", [True, False])
def test_every_dtype_round_trips_bit_identically_and_stays_aligned(tmp_path, mmap):
    w = _typed_weights()
    path = tmp_path / "typed.safetensors"
    save_tensors(path, w, {"note": "typed"})
    tensors, meta = load_tensors(path, mmap=mmap)
    assert set(tensors) == set(w) and meta["note"] == "typed"
    for k, v in w.items():
        t = tensors[k]
        assert t.dtype == v.dtype.name and t.shape == v.shape
        assert np.asarray(t).tobytes() == v.tobytes()
        assert t._data_ptr % v.dtype.itemsize == 0
    if mmap:  # every tensor wraps the mapping: the writer kept each one aligned
        (lo, hi), = _mappings_of(path)
        assert all(lo <= t._data_ptr < hi for t in tensors.values() if t.size)
    # the file order: larger elements first, then names
    sizes = [np.dtype(t.dtype).itemsize for t in tensors.values()]
    assert sizes == sorted(sizes, reverse=True)
    verify_file(path)


@pytest.mark.parametrize("dtype", list(FILE_DTYPES))
def test_each_dtype_is_read_and_written_like_the_safetensors_package(tmp_path, dtype):
    from safetensors.numpy import load_file, save_file

    v = _typed_weights(4)[dtype]
    ours, theirs = tmp_path / "maas.safetensors", tmp_path / "st.safetensors"
    save_tensors(ours, {"x": v})
    got = load_file(str(ours))
    assert got["x"].dtype == v.dtype and got["x"].tobytes() == v.tobytes()
    header = json.loads(ours.read_bytes()[8:8 + struct.unpack("<Q", ours.read_bytes()[:8])[0]])
    assert header["x"]["dtype"] == FILE_DTYPES[dtype]
    save_file({"x": v, "f": np.ones(2, np.float32)}, str(theirs))
    for mmap in (True, False):
        tensors, _ = load_tensors(theirs, mmap=mmap)
        assert tensors["x"].dtype == dtype and np.asarray(tensors["x"]).tobytes() == v.tobytes()
        if mmap and v.size:
            (lo, hi), = _mappings_of(theirs)
            assert lo <= tensors["x"]._data_ptr < hi


def test_dtypes_maas_lacks_are_refused_naming_the_dtype(tmp_path):
    import torch
    from safetensors.numpy import save_file
    from safetensors.torch import save_file as save_torch

    save_file({"d": np.ones(2, np.float64)}, str(tmp_path / "f64"))
    save_file({"s": np.ones(2, np.int16)}, str(tmp_path / "i16"))
    save_torch({"b": torch.ones(2, dtype=torch.bfloat16)}, str(tmp_path / "bf16"))
    for name, tensor, dt in [("f64", "d", "F64"), ("i16", "s", "I16"), ("bf16", "b", "BF16")]:
        with pytest.raises(ModelFormatError, match=re.escape(
                f"tensor '{tensor}' has dtype '{dt}'; maas reads F32, I32, I64, I8, U8 and BOOL "
                f"tensors only (convert it, e.g. to F32, before saving)")):
            load_tensors(tmp_path / name)
    with pytest.raises(TypeError, match="tensor 'h' has dtype float16; maas model files hold float32, "
                                        "int32, int64, int8, uint8, bool tensors"):
        save_tensors(tmp_path / "x", {"h": np.ones(2, np.float16)})


def test_a_weight_of_the_wrong_dtype_in_a_model_file_is_refused(tmp_path):
    from maas.saving import model_file

    model = maas.Sequential([maas.layers.Input((3,)), maas.layers.Dense(2)])
    path = tmp_path / "m.maas"
    model.save(path)
    tensors, meta = load_tensors(path)
    # the biases (the 1-D weights) stored as int32
    typed = {k: np.asarray(v).astype(np.int32) if v.ndim == 1 else np.asarray(v)
             for k, v in tensors.items()}
    meta.pop(CHECKSUM_KEY)
    save_tensors(path, typed, meta)
    with pytest.raises(ModelFormatError, match=r"is int32, the model's weight float32"):
        model_file.load_model(path)


def test_saving_to_a_long_file_name_works(tmp_path):
    """The temporary file's name does not grow with the target's: a 250-byte
    basename (legal: the limit is 255) used to fail with ENAMETOOLONG."""
    name = "m" * 250
    save_tensors(tmp_path / name, {"x": np.ones(2, np.float32)})
    assert load_tensors(tmp_path / name)[0]["x"].numpy().tolist() == [1.0, 1.0]
    save_tensors(tmp_path / name, {"x": np.zeros(2, np.float32)})  # and over it
    assert load_tensors(tmp_path / name)[0]["x"].numpy().tolist() == [0.0, 0.0]
    assert os.listdir(tmp_path) == [name]                     # no temporary file left
    with pytest.raises(OSError, match="File name too long"):
        save_tensors(tmp_path / ("m" * 256), {})


def test_fuzz_mutated_typed_files_load_or_raise_model_format_error(tmp_path):
    """2,000 seeded mutations of a file holding every dtype."""
    good_path = tmp_path / "good.safetensors"
    save_tensors(good_path, _typed_weights(9))
    good = good_path.read_bytes()
    (hlen,) = struct.unpack("<Q", good[:8])
    rng = random.Random(20261201)
    path = tmp_path / "fuzz.safetensors"
    counts = {"loaded": 0, "refused": 0}
    for i in range(2000):
        path.write_bytes(good[:rng.randrange(len(good))] if i % 10 == 0 else _mutate(rng, good, hlen))
        try:
            tensors, _ = load_tensors(path, mmap=bool(i % 2))
        except ModelFormatError:
            counts["refused"] += 1
        else:
            counts["loaded"] += 1
            for t in tensors.values():
                a = np.asarray(t)
                assert a.dtype.name in FILE_DTYPES
                if a.dtype == bool:
                    assert set(a.view(np.uint8).ravel().tolist()) <= {0, 1}
            del tensors
    assert counts["refused"] > 1000 and counts["loaded"] > 0


# ---------------------------------------------------------------- atomicity

def test_a_writer_killed_mid_save_leaves_the_old_file_whole(tmp_path):
    path = tmp_path / "model.safetensors"
    old = _weights(7)
    save_tensors(path, old, {"generation": "old"})
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, numpy as np
            from maas.saving import save_tensors
            big = {{"w": np.full(96 * 1024 * 1024, 2.0, np.float32)}}  # 384 MB: a long write
            print("ready", flush=True)
            save_tensors({str(path)!r}, big, {{"generation": "new"}})
            print("done", flush=True)
        """)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    try:
        assert child.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        tmp = []
        while not tmp and time.monotonic() < deadline and child.poll() is None:
            tmp = [f for f in os.listdir(tmp_path) if ".tmp-" in f]
            time.sleep(0.001)
        assert tmp, "the writer finished before it could be interrupted"
        time.sleep(0.05)  # let it write some data
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert os.listdir(tmp_path) != ["model.safetensors"]  # the temporary file was being written
    tensors, meta = load_tensors(path)  # checksum verified
    assert meta["generation"] == "old"
    for k, v in old.items():
        assert np.array_equal(tensors[k].numpy(), v)


def test_saving_over_a_mapped_file_leaves_the_loaded_tensors_intact(tmp_path):
    path = tmp_path / "m"
    save_tensors(path, _weights(1))
    loaded, _ = load_tensors(path)
    save_tensors(path, _weights(2))  # rename: the old inode lives on for the mapping
    assert np.array_equal(loaded["dense/kernel"].numpy(), _weights(1)["dense/kernel"])
    assert np.array_equal(load_tensors(path)[0]["dense/kernel"].numpy(), _weights(2)["dense/kernel"])
    assert sorted(os.listdir(tmp_path)) == ["m"]  # no temporary file left


# --------------------------------------------------------------- repository

class _FakeModel:
    """Stands in for a model until models exist: save(path) writes weights."""

    def __init__(self, seed, check=None):
        self.w, self.check = _weights(seed), check

    def save(self, path):
        if self.check:
            self.check(path)
        save_tensors(path, self.w)


def test_repository_versions(tmp_path):
    repo = tmp_path / "models"
    assert list_versions(repo, "digits") == []
    with pytest.raises(FileNotFoundError, match="no versions of model 'digits'"):
        version_path(repo, "digits")

    def in_progress_is_invisible(path):
        assert list_versions(repo, "digits") == []
        assert os.path.basename(os.path.dirname(path)).startswith(".tmp-")

    p1 = save_to_repository(_FakeModel(1, in_progress_is_invisible), repo, "digits")
    assert p1 == str(repo / "digits" / "1" / "model.maas")
    p2 = save_to_repository(_FakeModel(2), repo, "digits")
    p5 = save_to_repository(_FakeModel(5), repo, "digits", version=5)
    assert save_to_repository(_FakeModel(6), repo, "digits") == str(repo / "digits" / "6" / "model.maas")
    assert list_versions(repo, "digits") == [1, 2, 5, 6]
    assert version_path(repo, "digits") == str(repo / "digits" / "6" / "model.maas")
    assert version_path(repo, "digits", 2) == p2
    assert np.array_equal(load_tensors(p5)[0]["dense/bias"].numpy(), _weights(5)["dense/bias"])
    with pytest.raises(FileExistsError, match="version 5 of model 'digits' already exists"):
        save_to_repository(_FakeModel(0), repo, "digits", version=5)
    with pytest.raises(FileNotFoundError, match=r"has no version 3 .* \(it has \[1, 2, 5, 6\]\)"):
        version_path(repo, "digits", 3)
    # not versions: hidden folders, leading zeros, files, words
    for junk in (".tmp-123-abc", "007", "latest"):
        (repo / "digits" / junk).mkdir()
    (repo / "digits" / "8").write_text("a file, not a folder")
    assert list_versions(repo, "digits") == [1, 2, 5, 6]
    for bad in ("", ".", "..", "a/b", ".hidden", "a\\b"):
        with pytest.raises(ValueError, match="a model name must be a plain folder name"):
            list_versions(repo, bad)
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="version must be a positive integer"):
            with _next_version_dir(repo, "digits", bad):
                pass


def test_a_failed_save_leaves_no_version_and_no_temporary_folder(tmp_path):
    repo = tmp_path / "models"

    def boom(path):
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        save_to_repository(_FakeModel(0, boom), repo, "m")
    assert list_versions(repo, "m") == [] and os.listdir(repo / "m") == []


def test_concurrent_saves_get_distinct_versions(tmp_path):
    repo = tmp_path / "models"
    results, errors = [], []
    barrier = threading.Barrier(8)

    def worker(i):
        try:
            with _next_version_dir(repo, "m") as v:
                (open(os.path.join(v.path, "model.maas"), "w")).write(str(i))
                barrier.wait()  # all rename at about the same time
            results.append(v.version)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(results) == list(range(1, 9)) == list_versions(repo, "m")
    contents = {(repo / "m" / str(v) / "model.maas").read_text() for v in results}
    assert contents == {str(i) for i in range(8)}


# ---------------------------------------------------------------------- CLI

def test_cli_inspect_and_verify_a_good_file(tmp_path, capsys):
    path = tmp_path / "m.maas"
    config = {"class_name": "Sequential", "config": {"name": "mlp", "layers": [
        {"class_name": "Dense", "config": {"name": "dense", "units": 16, "activation": "relu"}}]}}
    save_tensors(path, _weights(), {"maas.config": json.dumps(config), "maas.version": "0.1.0"})
    assert cli_main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "model: Sequential 'mlp'" in out and "Dense dense (units=16, activation='relu')" in out
    assert "maas.version: 0.1.0" in out and CHECKSUM_KEY in out
    assert "tensors: 4, 212 parameters, 848 bytes" in out
    assert "dense/kernel  F32  (8, 16)" in out
    assert cli_main(["verify", str(path)]) == 0
    assert "OK:" in capsys.readouterr().out


def test_cli_fails_on_bad_files(tmp_path, capsys):
    path = tmp_path / "m.maas"
    save_tensors(path, _weights())
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    assert cli_main(["inspect", str(path)]) == 0  # structure fine: inspect shows it
    capsys.readouterr()
    assert cli_main(["verify", str(path)]) == 1
    assert "maas verify: error:" in capsys.readouterr().err
    (tmp_path / "trunc.maas").write_bytes(raw[:100])
    for cmd in ("inspect", "verify"):
        assert cli_main([cmd, str(tmp_path / "trunc.maas")]) == 1
        err = capsys.readouterr().err
        assert f"maas {cmd}: error: {tmp_path / 'trunc.maas'}: the header length" in err
    assert cli_main(["verify", str(tmp_path / "missing")]) == 1
    assert "No such file or directory" in capsys.readouterr().err


def test_cli_as_a_program(tmp_path):
    path = tmp_path / "m.maas"
    save_tensors(path, _weights())
    env = {**os.environ, "PYTHONPATH": ROOT}
    ok = subprocess.run([sys.executable, "-m", "maas", "verify", str(path)], capture_output=True,
                        text=True, env=env)
    assert ok.returncode == 0 and "OK:" in ok.stdout
    (tmp_path / "bad").write_bytes(b"\x00" * 4)
    bad = subprocess.run([sys.executable, "-m", "maas", "inspect", str(tmp_path / "bad")],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and "too short" in bad.stderr and bad.stdout == ""
    usage = subprocess.run([sys.executable, "-m", "maas"], capture_output=True, text=True, env=env)
    assert usage.returncode == 2
