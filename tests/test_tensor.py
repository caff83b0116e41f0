"""maas.Tensor and maas.Variable: NumPy interop without copies, lifetimes,
conversions, indexing, errors, determinism, threads, and no leaks."""
import gc
import os
import subprocess
import sys
import sys as _sys
import threading

import numpy as np
import pytest

import maas


def test_float32_array_is_wrapped_without_copy_both_ways():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = maas.tensor(a)
    a[1, 2] = 100.0                      # write through the array ...
    assert t.numpy()[1, 2] == 100.0      # ... read through the tensor
    view = np.asarray(t)
    view[0, 0] = -5.0                    # write through the tensor's buffer ...
    assert a[0, 0] == -5.0               # ... read through the array
    assert np.shares_memory(view, a)
    assert t._data_ptr == a.ctypes.data


def test_the_array_outlives_the_tensor_and_the_other_way_round():
    a = np.ones((1000, 100), dtype=np.float32)
    before = sys.getrefcount(a)
    t = maas.tensor(a)
    assert sys.getrefcount(a) == before + 1
    del t
    gc.collect()
    assert sys.getrefcount(a) == before
    t = maas.tensor(np.full((5,), 7.0, dtype=np.float32))  # the only owner of its array
    gc.collect()
    assert t.numpy().tolist() == [7.0] * 5
    v = np.asarray(t)
    del t
    gc.collect()
    assert v.tolist() == [7.0] * 5        # the NumPy view keeps the tensor alive


def test_conversions_copy_and_refuse_what_they_must():
    assert maas.tensor(np.arange(3, dtype=np.float64)).numpy().dtype == np.float32
    assert maas.tensor([[1, 2], [3, 4]]).shape == (2, 2)
    assert maas.tensor(np.array([True, False])).numpy().tolist() == [1.0, 0.0]
    f64 = np.arange(4.0)
    t = maas.tensor(f64)
    f64[0] = 9
    assert t.numpy()[0] == 0.0            # a converted copy, not a view
    noncontig = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]
    assert maas.tensor(noncontig).numpy().tolist() == noncontig.tolist()
    with pytest.raises(TypeError, match="dtype <U1"):
        maas.tensor(np.array(["a", "b"]))
    with pytest.raises(TypeError, match="dtype object"):
        maas.tensor(np.array([{}, 1], dtype=object))
    with pytest.raises(ValueError, match="cannot make a tensor"):
        maas.tensor([[1, 2], [3]])
    with pytest.raises(ValueError, match="at most 8 dimensions"):
        maas.tensor(np.zeros((1,) * 9, np.float32))


@pytest.mark.parametrize("ndim", range(7))
def test_zero_to_six_dimensions(ndim):
    shape = tuple(range(2, 2 + ndim))
    a = np.random.default_rng(ndim).normal(size=shape).astype(np.float32)
    t = maas.tensor(a)
    assert t.shape == shape and t.ndim == ndim and t.size == a.size and t.dtype == np.float32
    np.testing.assert_allclose((t * 2 + 1).numpy(), a * 2 + 1, rtol=1e-6)
    assert float(t.sum()) == pytest.approx(float(a.astype(np.float64).sum()), rel=1e-5, abs=1e-5)


def test_empty_tensors_work():
    e = maas.tensor(np.zeros((0, 3), np.float32))
    assert (e + 1).shape == (0, 3)
    assert maas.ops.relu(e).shape == (0, 3)
    assert float(e.sum()) == 0.0
    assert (e @ np.ones((3, 2), np.float32)).shape == (0, 2)
    assert maas.ops.matmul(np.ones((2, 0), np.float32), np.ones((0, 3), np.float32)).numpy().tolist() == [[0.0] * 3] * 2


def test_mixed_operands_and_reflected_operators():
    t = maas.tensor([1.0, 2.0, 3.0])
    a = np.array([10.0, 20.0, 30.0])
    for r in (t + a, a + t, 2 * t + 0, 1 - t, a / t, t ** 2, -t, abs(-t)):
        assert isinstance(r, maas.Tensor)
    assert (a - t).numpy().tolist() == [9.0, 18.0, 27.0]
    assert (2 ** t).numpy().tolist() == [2.0, 4.0, 8.0]
    assert (t > 1.5).numpy().tolist() == [0.0, 1.0, 1.0]
    assert (t == t).numpy().tolist() == [1.0, 1.0, 1.0]
    assert hash(t) == hash(t) and t in {t: 1}
    m = maas.tensor(np.eye(2, dtype=np.float32))
    assert (m @ np.array([[1.0], [2.0]])).numpy().ravel().tolist() == [1.0, 2.0]


def test_indexing_reshape_transpose():
    a = np.arange(24, dtype=np.float32).reshape(4, 6)
    t = maas.tensor(a)
    assert t[1].numpy().tolist() == a[1].tolist()
    assert t[-1].numpy().tolist() == a[-1].tolist()
    assert t[1:3].numpy().tolist() == a[1:3].tolist()
    assert np.shares_memory(np.asarray(t[1:3]), a)          # slices are views
    assert t[::2].numpy().tolist() == a[::2].tolist()
    assert t[::-1].numpy().tolist() == a[::-1].tolist()
    assert t[[3, 0, 3]].numpy().tolist() == a[[3, 0, 3]].tolist()
    assert t.reshape(3, -1).shape == (3, 8)
    assert t.reshape((2, 12)).shape == (2, 12)
    assert t.T.numpy().tolist() == a.T.tolist()
    assert len(t) == 4 and [r.shape for r in t] == [(6,)] * 4
    with pytest.raises(IndexError, match="index 4 is out of bounds for axis 0 with size 4"):
        t[4]
    with pytest.raises(IndexError, match="first axis"):
        t[1, 2]
    with pytest.raises(IndexError, match="must be of integer type"):
        t[np.array([1.5])]
    assert t[maas.tensor([3.0, 1.0])].numpy().tolist() == a[[3, 1]].tolist()
    with pytest.raises(ValueError, match="cannot reshape a tensor of shape \\(4, 6\\)"):
        t.reshape(5, 5)
    with pytest.raises(ValueError, match="T is defined for 2-D"):
        maas.tensor(np.zeros((2, 2, 2))).T


def test_repr_shows_shape_and_values():
    r = repr(maas.tensor(np.arange(3, dtype=np.float32)))
    assert "shape=(3,)" in r and "0., 1., 2." in r
    assert "..." in repr(maas.tensor(np.zeros(1000, np.float32)))


def test_scalar_conversions():
    s = maas.tensor(np.float32(2.5))
    assert s.shape == () and float(s) == 2.5 and s.item() == 2.5 and int(s) == 2
    with pytest.raises(ValueError, match="only a tensor of one element"):
        float(maas.tensor([1.0, 2.0]))


def test_reductions_over_axes():
    a = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32)
    t = maas.tensor(a)
    for name in ("sum", "mean", "max", "min"):
        for axis in (None, 0, -1, (0, 2)):
            for keep in (False, True):
                got = getattr(t, name)(axis=axis, keepdims=keep).numpy()
                np.testing.assert_allclose(got, getattr(a, name)(axis=axis, keepdims=keep), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="axis 3 is out of bounds"):
        t.sum(axis=3)


def test_variable_owns_its_memory_and_assigns_in_place():
    a = np.ones((2, 3), np.float32)
    v = maas.Variable(a, name="w")
    assert not np.shares_memory(np.asarray(v), a)
    ptr = v._data_ptr
    v.assign(np.full((2, 3), 4.0))
    v.assign_sub(np.ones((2, 3)))
    v.assign_add(0.5)
    assert v._data_ptr == ptr and np.asarray(v).tolist() == [[3.5] * 3] * 2
    assert v.trainable and v.requires_grad and v.name == "w"
    v.trainable = False
    assert not v.requires_grad
    with pytest.raises(ValueError, match="assign: value shape \\(3,\\) does not match variable shape \\(2, 3\\)"):
        v.assign(np.ones(3))
    init = maas.Variable(lambda shape, dtype: np.zeros(shape), shape=(2, 2))
    assert init.shape == (2, 2)


def test_num_threads_set_and_reported_together():
    n = maas.get_num_threads()
    try:
        maas.set_num_threads(1)
        assert maas.get_num_threads() == 1
        assert maas._core.blas_info()["num_threads"] == 1
        maas.set_num_threads(2)
        assert maas.get_num_threads() == 2 and maas._core.blas_info()["num_threads"] == 2
    finally:
        maas.set_num_threads(n)
    with pytest.raises(ValueError, match="positive integer"):
        maas.set_num_threads(0)


def test_kernels_release_the_gil():
    """While one thread runs a large matmul, another thread's Python code runs."""
    a = np.random.default_rng(0).normal(size=(1500, 1500)).astype(np.float32)
    started, done = threading.Event(), threading.Event()
    ticks = []

    def work():
        started.set()
        for _ in range(3):
            maas.ops.matmul(a, a)
        done.set()

    th = threading.Thread(target=work)
    th.start()
    started.wait()
    while not done.is_set():
        ticks.append(1)
        threading.Event().wait(0.001)
    th.join()
    assert len(ticks) > 3


DETERMINISM = """
import maas, numpy as np
maas.random.set_seed(123)
x = maas.random.normal((64, 32))
d = maas.random.dropout(x, 0.3)
print(np.asarray(d).tobytes().hex()[:400], float(np.asarray(d, np.float64).sum()))
"""


def test_same_seed_gives_bit_identical_results_in_and_across_processes():
    def run():
        maas.random.set_seed(123)
        x = maas.random.normal((64, 32))
        return np.asarray(maas.random.dropout(x, 0.3)).copy()

    r1, r2 = run(), run()
    np.testing.assert_array_equal(r1, r2)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    outs = [subprocess.run([_sys.executable, "-c", DETERMINISM], capture_output=True, text=True,
                           env=e, check=True).stdout for e in (env, os.environ)]
    assert outs[0] == outs[1]
    assert outs[0].split()[0] == r1.tobytes().hex()[:400]


def _rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


def test_ten_thousand_training_steps_do_not_leak():
    rng = np.random.default_rng(0)
    w1 = maas.Variable(rng.normal(0, 0.1, (32, 64)))
    b1 = maas.Variable(np.zeros(64))
    w2 = maas.Variable(rng.normal(0, 0.1, (64, 10)))
    x = rng.normal(size=(16, 32)).astype(np.float32)
    y = rng.integers(0, 10, 16)
    opt = maas.optimizers.Adam(1e-3)

    def step():
        with maas.GradientTape() as tape:
            h = maas.ops.relu(maas.ops.dense(x, w1, b1))
            h = maas.random.dropout(h, 0.1)
            logits = h @ w2
            loss = maas.losses.sparse_categorical_crossentropy(y, logits, from_logits=True).mean()
        grads = tape.gradient(loss, [w1, b1, w2])
        opt.apply_gradients(zip(grads, [w1, b1, w2]))

    for _ in range(500):
        step()
    gc.collect()
    before = _rss_kb()
    for _ in range(10_000):
        step()
    gc.collect()
    after = _rss_kb()
    assert after - before < 2048, f"RSS grew by {after - before} kB over 10,000 steps"


def test_out_of_memory_raises_memory_error_and_the_process_keeps_working():
    col = np.ones((1 << 21, 1), np.float32)
    row = np.ones((1, 1 << 21), np.float32)
    with pytest.raises(MemoryError, match="out of memory"):
        maas.ops.matmul(col, row)            # 2**42 floats
    with pytest.raises(MemoryError):
        maas.tensor(col) + maas.tensor(row)  # broadcast to 2**42 floats
    assert float((maas.tensor(col[:4]) + 1).sum()) == 8.0
