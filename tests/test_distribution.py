"""Data-parallel fit over MPI (maas.distribution): `mpiexec -n 2` on this
machine (loopback, oversubscribed) against the same script in one process.
Each job runs in its own process group and is killed, pass or fail."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

mpi4py = pytest.importorskip("mpi4py")
HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "mpi_worker.py")
sys.path.insert(0, HERE)
import mpi_worker  # noqa: E402

MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)")
DEADLINE = 600  # seconds: generous, for a busy shared machine


def mpirun(n, *args, deadline=DEADLINE):
    """Runs the worker on n ranks; returns (returncode, stdout, stderr, seconds)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MAAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")]))
    t0 = time.monotonic()
    proc = subprocess.Popen([MPIEXEC, "-n", str(n), sys.executable, WORKER, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=deadline)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        else:
            try:  # anything the launcher left behind in its group
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return proc.returncode, out, err, time.monotonic() - t0


def load(outdir, tag):
    with open(os.path.join(outdir, f"{tag}.json")) as f:
        info = json.load(f)
    w = np.load(os.path.join(outdir, f"{tag}.npz"))
    return info, [w[k] for k in sorted(w.files, key=lambda k: int(k.split("_")[1]))]


def one_process(scenario, outdir, optimizer):
    """The reference: the same scenario in this process, no distribution."""
    import maas
    maas.distribution.set_distribution(None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mpi_worker.run(scenario, str(outdir), optimizer, distributed=False)


def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "adagrad", "custom", "cnn", "lstm"])
def test_two_ranks_train_as_one_process_with_the_global_batch(tmp_path, optimizer):
    """Adam and SGD (fused in the plan), Adagrad (a Python-side update after
    the plan's backward) and a model with its own train_step (the tape):
    every path sums the gradients over the ranks once."""
    d2, d1 = tmp_path / "two", tmp_path / "one"
    d2.mkdir()
    d1.mkdir()
    rc, out, err, _ = mpirun(2, "train", str(d2), optimizer)
    assert rc == 0, err[-3000:]
    ref = one_process("train", d1, optimizer)
    (i0, w0), (i1, w1) = load(d2, "rank0"), load(d2, "rank1")
    _, wref = load(d1, "one")
    # identical on every rank after every epoch (the hash of every weight)
    assert i0["hashes"] == i1["hashes"] and len(i0["hashes"]) == 3
    for a, b in zip(w0, w1):
        assert np.array_equal(a, b)
    # the same weights as one process with batch 64 (only the summation order differs)
    for a, b in zip(w0, wref):
        assert rel(a, b) < 1e-6
    # metrics are each metric's state reduced over the ranks: the logs and
    # evaluate equal one process's (to float rounding), on both ranks
    for key, values in ref["history"].items():
        assert np.allclose(i0["history"][key], values, rtol=1e-5, atol=1e-6), key
        assert i0["history"][key] == i1["history"][key], key
    for key, value in ref["evaluate"].items():
        assert i0["evaluate"][key] == pytest.approx(value, rel=1e-5, abs=1e-6)
        assert i1["evaluate"][key] == i0["evaluate"][key]
    if optimizer != "custom":
        assert i0["eager_reason"] is None  # the compiled plan ran, one C call per step
    # predict: the whole result on every rank
    p0, p1 = np.load(d2 / "pred_rank0.npy"), np.load(d2 / "pred_rank1.npy")
    assert p0.shape == (397, 10) and np.array_equal(p0, p1)
    assert rel(p0, np.load(d1 / "pred_one.npy")) < 1e-5
    # only rank 0 writes: one progress bar, one CSV log and checkpoint
    assert out.count("Epoch 1/3") == 1
    rows = (d2 / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 4
    assert (d2 / "ckpt.maas").exists() == (optimizer != "custom")


def test_batch_normalization_statistics_are_averaged_over_the_ranks(tmp_path):
    """Each rank normalizes its shard with its own batch statistics (so the
    result differs from one process's slightly), and the moving statistics
    are averaged after every step: every weight, moving statistics
    included, is the same on both ranks after every epoch."""
    d2 = tmp_path / "two"
    d2.mkdir()
    rc, _, err, _ = mpirun(2, "train", str(d2), "bn")
    assert rc == 0, err[-3000:]
    (i0, w0), (i1, w1) = load(d2, "rank0"), load(d2, "rank1")
    assert i0["hashes"] == i1["hashes"]
    for a, b in zip(w0, w1):
        assert np.array_equal(a, b)
    # (without the averaging each rank's moving statistics would follow its
    # own shards and the hashes above would differ)
    assert i0["moving"] and all(np.isfinite(i0["moving"]))
    mean = w0[4]   # kernel, bias, gamma, beta, moving_mean, moving_variance, ...
    assert np.abs(mean).max() > 0              # the statistics moved from their start


def test_repeated_runs_give_the_same_bits(tmp_path):
    runs = []
    for k in range(2):
        d = tmp_path / f"run{k}"
        d.mkdir()
        rc, _, err, _ = mpirun(2, "earlystop", str(d), "sgd")
        assert rc == 0, err[-3000:]
        runs.append((load(d, "rank0"), load(d, "rank1")))
    (a0, a1), (b0, b1) = runs
    assert a0[0]["hashes"] == b0[0]["hashes"] == a1[0]["hashes"] == b1[0]["hashes"]
    # EarlyStopping decides on the reduced val_loss: every rank stops at the same epoch
    assert a0[0]["epochs"] == a1[0]["epochs"] == 2


def test_a_checkpoint_moves_between_two_ranks_and_one(tmp_path):
    d = tmp_path / "ck"
    d.mkdir()
    rc, _, err, _ = mpirun(2, "train", str(d), "adam")       # 2 ranks write ckpt.maas
    assert rc == 0, err[-3000:]
    one = one_process("resume", d, "adam")                    # 1 process resumes it
    rc, _, err, _ = mpirun(2, "resume", str(d), "adam")      # and 2 ranks resume it
    assert rc == 0, err[-3000:]
    r0, r1 = load(d, "rank0")[0], load(d, "rank1")[0]
    assert one["start_hash"] == r0["start_hash"] == r1["start_hash"]
    assert r0["hashes"] == r1["hashes"]
    import maas
    a = maas.load_model(str(d / "resumed_one.maas"))
    b = maas.load_model(str(d / "resumed_dp.maas"))
    for u, v in zip(a.weights, b.weights):
        assert rel(np.asarray(v), np.asarray(u)) < 1e-6
    # and the other way: what one process saved resumes on two ranks
    shutil.copy(d / "resumed_one.maas", d / "ckpt.maas")
    rc, _, err, _ = mpirun(2, "resume", str(d), "adam")
    assert rc == 0, err[-3000:]
    r0 = load(d, "rank0")[0]
    assert r0["start_hash"] == mpi_worker.weights_hash(a)


@pytest.mark.parametrize("how", ["fail-exception", "fail-kill"])
def test_a_failure_on_one_rank_ends_every_rank(tmp_path, how):
    """An exception in a callback (or a killed process) on rank 1 while rank
    0 waits in the all-reduce: the job ends, with a message, well inside the
    deadline (50 epochs would take far longer), never a hang."""
    rc, out, err, secs = mpirun(2, how, str(tmp_path), "sgd", deadline=300)
    assert rc != 0
    assert secs < 300
    if how == "fail-exception":
        assert "rank 1 of 2 failed in fit" in err and "a callback failed on rank 1" in err
    assert not (tmp_path / "rank0.json").exists()


def test_one_process_data_parallel_is_a_no_op_that_says_so():
    import maas
    import maas.distribution as dist
    dist._warned.clear()
    with pytest.warns(RuntimeWarning, match="one process"):
        dp = dist.DataParallel()
    assert dp.num_processes == 1 and not dp.active
    dist.set_distribution(dp)
    try:
        assert dist.active() is None
        m = maas.Sequential([maas.Input((3,)), maas.layers.Dense(1)])
        m.compile("sgd", "mse")
        m.fit(np.ones((8, 3), np.float32), np.ones((8, 1), np.float32), verbose=0)
    finally:
        dist.set_distribution(None)
    with pytest.raises(TypeError, match="DataParallel or None"):
        dist.set_distribution("data")
    with pytest.raises(ValueError, match="predict_results"):
        dist.DataParallel(predict_results="some")
