"""Deterministic matrix products (csrc/blas.c): matmul and dense, forward and
backward, give the same bits at 1, 2 and 4 threads over odd shapes, still
match float64 NumPy, and a seeded fit() of an MLP gives the same weights and
losses at 1, 2 and 4 threads, each in a fresh process. The shapes are chosen
(and checked with _core.gemm_split) so that the products really are split
over threads; small ones (sizes of 1) run as one call and are covered too."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

import maas
from maas import ops

THREADS = (1, 2, 4)
# (M, K, N): odd, primes, sizes of 1, and shapes above the split cut-off
SHAPES = [(1, 1, 1), (1, 7, 5), (5, 1, 3), (3, 5, 1), (17, 33, 9), (129, 65, 257),
          (1025, 129, 17), (17, 129, 1031), (64, 784, 513), (300, 31, 300), (2049, 33, 63),
          (32, 128, 257), (129, 100, 63),  # these two mid-size: always two blocks
          # C is split by rows only (blocks of 48): tall shapes, one of them mid-size
          (385, 65, 129), (1031, 129, 17), (513, 784, 64), (4097, 17, 33), (257, 128, 32)]
SPLIT = [s for s in SHAPES if maas._core.gemm_split(s[0], s[2], s[1], 2)[0] > 1]


def rng_for(name):
    return np.random.default_rng(zlib.crc32(name.encode()))


@pytest.fixture(autouse=True)
def _restore_threads():
    n, det = maas.get_num_threads(), maas._core.get_deterministic()
    yield
    maas.set_num_threads(n)
    maas.set_deterministic(det)


def per_thread_count(f):
    """f() at each thread count, as a list of lists of arrays."""
    out = []
    for nt in THREADS:
        maas.set_num_threads(nt)
        out.append([np.asarray(r) for r in f()])
    return out


def assert_same_bits(results, what):
    for nt, res in zip(THREADS[1:], results[1:]):
        for i, (a, b) in enumerate(zip(results[0], res)):
            assert a.tobytes() == b.tobytes(), (
                f"{what} output {i}: {nt} threads differ from 1 thread by {np.abs(a - b).max()}")


def assert_close_f64(got, ref, k):
    """float32 GEMM error vs the float64 product: the ops tests' rtol 1e-5 and
    atol 4e-6, the atol grown with sqrt(K) for the longer sums here."""
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=4e-6 * max(1.0, np.sqrt(k)))


def test_the_shapes_are_split_over_threads():
    # otherwise the tests below would compare one call with itself
    assert len(SPLIT) >= 8
    assert maas._core.gemm_split(1, 1, 1, 4)[0] == 1
    assert maas._core.gemm_split(257, 32, 128, 1)[0] == 2  # mid-size: the same at 1 thread
    assert maas._core.get_deterministic() is True  # the default


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_matmul_forward_and_backward_same_bits_at_any_thread_count(m, k, n, ta, tb):
    rng = rng_for(f"matmul{m},{k},{n},{ta},{tb}")
    a = rng.uniform(-1, 1, (k, m) if ta else (m, k)).astype(np.float32)
    b = rng.uniform(-1, 1, (n, k) if tb else (k, n)).astype(np.float32)
    r = rng.uniform(-1, 1, (m, n)).astype(np.float32)

    def run():
        va, vb = maas.Variable(a), maas.Variable(b)
        with maas.GradientTape() as tape:
            out = ops.matmul(va, vb, transpose_a=ta, transpose_b=tb)
            loss = ops.sum(out * maas.tensor(r))
        ga, gb = tape.gradient(loss, [va, vb])
        return out.numpy(), np.asarray(ga), np.asarray(gb)

    results = per_thread_count(run)
    assert_same_bits(results, f"matmul ({m},{k})@({k},{n}) ta={ta} tb={tb}")
    a64 = (a.T if ta else a).astype(np.float64)
    b64 = (b.T if tb else b).astype(np.float64)
    r64 = r.astype(np.float64)
    ga64, gb64 = r64 @ b64.T, a64.T @ r64
    out, ga, gb = results[0]
    assert_close_f64(out, a64 @ b64, k)
    assert_close_f64(ga, ga64.T if ta else ga64, n)
    assert_close_f64(gb, gb64.T if tb else gb64, m)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_dense_forward_and_backward_same_bits_at_any_thread_count(m, k, n, bias):
    rng = rng_for(f"dense{m},{k},{n},{bias}")
    x = rng.uniform(-1, 1, (m, k)).astype(np.float32)
    w = rng.uniform(-1, 1, (k, n)).astype(np.float32)
    b = rng.uniform(-1, 1, (n,)).astype(np.float32)
    r = rng.uniform(-1, 1, (m, n)).astype(np.float32)

    def run():
        vs = [maas.Variable(x), maas.Variable(w)] + ([maas.Variable(b)] if bias else [])
        with maas.GradientTape() as tape:
            out = ops.dense(*vs)
            loss = ops.sum(out * maas.tensor(r))
        return [out.numpy()] + [np.asarray(g) for g in tape.gradient(loss, vs)]

    results = per_thread_count(run)
    assert_same_bits(results, f"dense ({m},{k})x({k},{n}) bias={bias}")
    x64, w64, r64 = x.astype(np.float64), w.astype(np.float64), r.astype(np.float64)
    out = results[0]
    assert_close_f64(out[0], x64 @ w64 + (b if bias else 0), k)
    assert_close_f64(out[1], r64 @ w64.T, n)
    assert_close_f64(out[2], x64.T @ r64, m)
    if bias:
        assert_close_f64(out[3], r64.sum(axis=0), m)


def test_switching_off_hands_threading_back_to_openblas_and_still_computes():
    a = rng_for("off").uniform(-1, 1, (129, 65)).astype(np.float32)
    b = rng_for("off2").uniform(-1, 1, (65, 257)).astype(np.float32)
    maas.set_num_threads(2)
    maas.set_deterministic(False)
    assert maas._core.get_deterministic() is False
    assert maas._core.blas_info()["num_threads"] == 2
    got = ops.matmul(maas.tensor(a), maas.tensor(b)).numpy()
    assert_close_f64(got, a.astype(np.float64) @ b, 65)
    maas.set_deterministic(True)
    assert maas._core.get_deterministic() is True
    assert maas._core.blas_info()["num_threads"] == 2  # maas's team runs the blocks


def _python(code, **env):
    e = dict(os.environ)
    e.update(env)
    out = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_env_var_turns_it_off_read_once():
    code = "import maas; print(maas._core.get_deterministic())"
    assert _python(code, MAAS_DETERMINISTIC="0").strip() == "False"
    assert _python(code, MAAS_DETERMINISTIC="1").strip() == "True"
    e = {k: v for k, v in os.environ.items() if k != "MAAS_DETERMINISTIC"}
    out = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True,
                         timeout=300)
    assert out.stdout.strip() == "True", out.stderr


FIT = """
import hashlib, json, sys
import numpy as np
import maas
from sklearn.datasets import load_digits
maas.set_num_threads(int(sys.argv[1]))
d = load_digits()
x, y = (d.data / 16.0).astype(np.float32), d.target
maas.utils.set_random_seed(7)
model = maas.Sequential([maas.Input((64,)), maas.layers.Dense(1000, activation="relu"),
                         maas.layers.Dropout(0.1), maas.layers.Dense(256, activation="relu"),
                         maas.layers.Dense(10)])
model.compile(optimizer=maas.optimizers.Adam(1e-3), metrics=["accuracy"],
              loss=maas.losses.SparseCategoricalCrossentropy(from_logits=True))
hist = model.fit(x, y, batch_size=128, epochs=2, verbose=0, shuffle=True)
w = model.get_weights()
print(json.dumps({"threads": maas.get_num_threads(), "loss": [float(v).hex() for v in hist.history["loss"]],
                  "acc": hist.history["accuracy"],
                  "weights": hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in w)).hexdigest(),
                  "finite": bool(all(np.isfinite(a).all() for a in w))}))
"""


def test_seeded_fit_same_weights_and_losses_at_1_2_4_threads():
    # the MLP's products (batch 128 x 64 -> 1000 -> 256) are above the split cut-off;
    # the second layer's K = 1000 is where OpenBLAS's own threading changes the bits
    # (its threaded driver cuts K into other blocks than its single-threaded one)
    assert maas._core.gemm_split(128, 1000, 64, 2)[0] == 2
    assert maas._core.gemm_split(128, 256, 1000, 4)[0] >= 2   # 128 rows: two blocks of 48+
    runs = [json.loads(_python(FIT.replace("sys.argv[1]", repr(str(nt))))) for nt in THREADS]
    assert [r["threads"] for r in runs] == list(THREADS)
    assert all(r["finite"] for r in runs)
    assert float.fromhex(runs[0]["loss"][1]) < float.fromhex(runs[0]["loss"][0])
    for nt, r in zip(THREADS[1:], runs[1:]):
        assert r["loss"] == runs[0]["loss"], f"{nt} threads: losses differ from 1 thread"
        assert r["weights"] == runs[0]["weights"], f"{nt} threads: weights differ from 1 thread"
