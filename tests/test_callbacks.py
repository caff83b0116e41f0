"""Callbacks: hooks, EarlyStopping, schedulers, CSVLogger, TerminateOnNaN."""
import csv

import numpy as np
import pytest

import maas
from maas import callbacks as C
from maas.layers import Dense, Input


@pytest.fixture(autouse=True)
def _seed():
    maas.utils.set_random_seed(0)


def _data(n=64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0], np.float32))[:, None]
    return x, y


def _model(lr=0.01):
    model = maas.Sequential([Input((4,)), Dense(1)])
    model.compile(maas.optimizers.SGD(lr), "mse", metrics=["mae"])
    return model


def test_hooks_are_called_in_order():
    calls = []

    class Recorder(C.Callback):
        def on_train_begin(self, logs=None): calls.append("train_begin")
        def on_epoch_begin(self, epoch, logs=None): calls.append(f"epoch_begin{epoch}")
        def on_train_batch_end(self, batch, logs=None): calls.append(f"batch{batch}")
        def on_test_begin(self, logs=None): calls.append("test_begin")
        def on_epoch_end(self, epoch, logs=None): calls.append(f"epoch_end{epoch}:{sorted(logs)}")
        def on_train_end(self, logs=None): calls.append("train_end")

    x, y = _data(64)
    rec = Recorder()
    _model().fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[rec],
                 validation_data=(x[:8], y[:8]))
    assert calls == ["train_begin", "epoch_begin0", "batch0", "batch1",
                     "epoch_end0:['loss', 'mae', 'val_loss', 'val_mae']",
                     "epoch_begin1", "batch0", "batch1",
                     "epoch_end1:['loss', 'mae', 'val_loss', 'val_mae']", "train_end"]
    assert rec.model is not None and rec.params["epochs"] == 2 and rec.params["steps"] == 2


def test_early_stopping_stops_and_restores_best_weights():
    x, y = _data()
    model = _model()
    losses = iter([5.0, 3.0, 1.0, 2.0, 2.5, 3.0, 0.5, 0.1])
    snapshots = []

    class FakeVal(C.Callback):  # a val_loss that is best at epoch 2 (0-based), then worsens
        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = next(losses)
            snapshots.append(model.get_weights())

    stop = C.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    h = model.fit(x, y, epochs=8, verbose=0, callbacks=[FakeVal(), stop])
    assert len(h.history["loss"]) == 5 and stop.stopped_epoch == 4 and stop.best_epoch == 2
    for a, b in zip(model.get_weights(), snapshots[2]):
        np.testing.assert_array_equal(a, b)
    # min_delta: improvements smaller than it do not count
    stop = C.EarlyStopping(monitor="loss", min_delta=1e9, patience=1)
    h = _model().fit(x, y, epochs=10, verbose=0, callbacks=[stop])
    assert len(h.history["loss"]) == 2
    # mode="auto" maximizes accuracies
    assert C.EarlyStopping(monitor="val_accuracy").mode == "max"


def test_learning_rate_scheduler_changes_the_optimizer():
    x, y = _data()
    model = _model(lr=0.1)
    seen = []
    sched = C.LearningRateScheduler(lambda epoch, lr: 0.1 * 0.5 ** epoch)
    probe = C.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(model.optimizer.learning_rate))
    h = model.fit(x, y, epochs=3, verbose=0, callbacks=[sched, probe])
    assert seen == pytest.approx([0.1, 0.05, 0.025])
    assert h.history["learning_rate"] == pytest.approx([0.1, 0.05, 0.025])


def test_reduce_lr_on_plateau():
    x, y = _data()
    model = _model(lr=0.01)
    vals = iter([1.0, 1.0, 1.0, 1.0, 1.0])

    class Flat(C.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = next(vals)

    cb = C.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2)
    model.fit(x, y, epochs=5, verbose=0, callbacks=[Flat(), cb])
    assert model.optimizer.learning_rate == pytest.approx(0.01 * 0.5 ** 2)


def test_csv_logger_writes_one_row_per_epoch(tmp_path):
    x, y = _data()
    path = tmp_path / "log.csv"
    h = _model().fit(x, y, epochs=3, verbose=0, callbacks=[C.CSVLogger(path)], validation_split=0.25)
    rows = list(csv.DictReader(open(path)))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert set(rows[0]) == {"epoch", "loss", "mae", "val_loss", "val_mae"}
    assert float(rows[2]["loss"]) == pytest.approx(h.history["loss"][2])
    _model().fit(x, y, epochs=2, verbose=0, callbacks=[C.CSVLogger(path, append=True)])
    assert len(list(csv.DictReader(open(path)))) == 5


def test_terminate_on_nan():
    x, y = _data()
    y[5] = np.nan
    h = _model().fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[C.TerminateOnNaN()])
    assert len(h.history["loss"]) == 1


def test_history_is_returned_and_kept():
    x, y = _data()
    model = _model()
    h = model.fit(x, y, epochs=2, verbose=0)
    assert isinstance(h, C.History) and model.history is h and h.epoch == [0, 1]


def test_plot_history(monkeypatch):
    x, y = _data()
    h = _model().fit(x, y, epochs=2, verbose=0, validation_split=0.25)
    import builtins
    real_import = builtins.__import__

    def no_mpl(name, *a, **k):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib")
        return real_import(name, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(builtins, "__import__", no_mpl)
        with pytest.raises(ImportError, match="plot_history needs matplotlib: pip install matplotlib"):
            maas.utils.plot_history(h)
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    fig = maas.utils.plot_history(h)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2


# ---- BackupAndRestore: a killed fit resumes where it stopped

BACKUP_SCRIPT = r'''
import sys, time
import numpy as np
import maas

backup, out, mode, path = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
maas.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.normal(size=(160, 8)).astype(np.float32)
y = (x[:, :3].argmax(1) + (x[:, 3] > 1)).clip(0, 2)
model = maas.Sequential([maas.Input((8,)), maas.layers.Dense(16, activation="relu"),
                         maas.layers.Dropout(0.2), maas.layers.Dense(3, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
              run_eagerly=(path == "eager"))


class Hang(maas.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if mode == "hang" and self.epoch == 3 and batch == 2:
            print("HANGING", flush=True)  # in the middle of epoch 4 of 6; the parent kills us
            time.sleep(600)


h = model.fit(x, y, epochs=6, batch_size=16, validation_split=0.2, verbose=0,
              callbacks=[maas.callbacks.BackupAndRestore(backup), Hang()])
assert (model._plan is not None) == (path == "plan")
np.savez(out, *model.get_weights(), epochs=np.array(h.epoch), val_loss=np.array(h.history["val_loss"]))
'''


@pytest.mark.parametrize("path", ["plan", "eager"])
def test_backup_and_restore_resumes_a_killed_fit_bit_for_bit(tmp_path, path):
    import os
    import signal
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = tmp_path / "train.py"
    script.write_text(BACKUP_SCRIPT)
    env = dict(os.environ, PYTHONPATH=root)

    def run(backup, out, mode):
        return subprocess.run([sys.executable, str(script), str(backup), str(out), mode, path],
                              env=env, capture_output=True, text=True, timeout=300)

    whole = run(tmp_path / "backup-whole", tmp_path / "whole.npz", "run")
    assert whole.returncode == 0, whole.stderr
    assert not (tmp_path / "backup-whole").exists()  # deleted when fit finished

    backup = tmp_path / "backup"
    proc = subprocess.Popen([sys.executable, str(script), str(backup), str(tmp_path / "x.npz"),
                             "hang", path], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "HANGING", proc.stderr.read() if proc.poll() is not None else line
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert (backup / C.BackupAndRestore.FILENAME).is_file()  # the backup of epoch 3 survived

    resumed = run(backup, tmp_path / "resumed.npz", "run")
    assert resumed.returncode == 0, resumed.stderr
    a, b = np.load(tmp_path / "whole.npz"), np.load(tmp_path / "resumed.npz")
    assert list(b["epochs"]) == [3, 4, 5]       # the rerun trained only what was left
    assert list(a["epochs"]) == [0, 1, 2, 3, 4, 5]
    for i in range(4):                           # the same final weights, bit for bit
        assert np.array_equal(a[f"arr_{i}"], b[f"arr_{i}"]), i
    assert np.array_equal(a["val_loss"][3:], b["val_loss"])
    assert not backup.exists()


def test_backup_and_restore_every_n_batches_restarts_the_epoch_in_progress(tmp_path):
    x, y = _data(64)  # 4 batches of 16 per epoch

    class Boom(C.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 2 and batch == 2:
                raise RuntimeError("interrupted")

    model = _model()
    backup = C.BackupAndRestore(tmp_path / "b", save_freq=3, delete_checkpoint=False)
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[backup, Boom()])
    saved_iterations = model.optimizer.iterations  # 11 steps ran; the last backup was at step 9
    import json

    meta = maas.saving.load_tensors(tmp_path / "b" / C.BackupAndRestore.FILENAME)[1]
    state = json.loads(meta["maas.backup"])
    assert saved_iterations == 11 and state["iterations"] == 9 and state["epoch"] == 2
    fresh = _model()
    h = fresh.fit(x, y, epochs=4, batch_size=16, verbose=0,
                  callbacks=[C.BackupAndRestore(tmp_path / "b", save_freq=3)])
    assert h.epoch == [2, 3]                     # as Keras: the epoch in progress starts again
    assert fresh.optimizer.iterations == 9 + 8
    with pytest.raises(ValueError, match="Expected either 'epoch' or an integer"):
        C.BackupAndRestore(tmp_path, save_freq="batch")
    with pytest.raises(ValueError, match="Empty `backup_dir`"):
        C.BackupAndRestore("")


def test_backup_of_another_model_is_refused(tmp_path):
    x, y = _data(32)
    m = _model()
    m.fit(x, y, epochs=1, verbose=0, callbacks=[C.BackupAndRestore(tmp_path, delete_checkpoint=False)])
    other = maas.Sequential([Input((4,)), Dense(3), Dense(1)])
    other.compile("sgd", "mse")
    with pytest.raises(ValueError, match="does not match this model"):
        other.fit(x, y, epochs=1, verbose=0, callbacks=[C.BackupAndRestore(tmp_path)])


# ---- TensorBoard: real event files, read back by tensorboard itself

def test_tensorboard_writes_epoch_scalars_for_train_and_validation(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    x, y = _data(80)
    model = _model()
    cb = C.TensorBoard(log_dir=tmp_path / "logs", update_freq=2, histogram_freq=1)
    h = model.fit(x, y, epochs=3, batch_size=16, validation_split=0.2, verbose=0, callbacks=[cb])

    train = EventAccumulator(str(tmp_path / "logs" / "train"))
    train.Reload()
    val = EventAccumulator(str(tmp_path / "logs" / "validation"))
    val.Reload()
    for tag in ("loss", "mae"):
        events = train.Scalars(f"epoch_{tag}")
        assert [e.step for e in events] == [0, 1, 2]
        assert [e.value for e in events] == [float(np.float32(v)) for v in h.history[tag]]
        vevents = val.Scalars(f"epoch_{tag}")  # the val_ metrics, under the same tag
        assert [e.value for e in vevents] == [float(np.float32(v)) for v in h.history["val_" + tag]]
    assert [e.value for e in train.Scalars("epoch_learning_rate")] == [float(np.float32(0.01))] * 3
    # batch scalars every 2 batches: 4 batches per epoch, 12 in all
    assert [e.step for e in train.Scalars("batch_loss")] == [2, 4, 6, 8, 10, 12]
    hist_tags = train.Tags()["histograms"]
    assert len(hist_tags) == 2 and all(t.endswith(("kernel", "bias")) for t in hist_tags)
    kernel = [t for t in hist_tags if t.endswith("kernel")][0]
    last = train.Histograms(kernel)[-1].histogram_value
    assert last.num == 4 and last.min == pytest.approx(float(np.asarray(model.weights[0]).min()))
    assert "val_loss" not in train.Tags()["scalars"] and "epoch_val_loss" not in train.Tags()["scalars"]
    with pytest.raises(ValueError, match="write_images=True"):
        C.TensorBoard(tmp_path, write_images=True)


# ---- ModelCheckpoint(save_freq=N): every N batches

def test_model_checkpoint_every_n_batches(tmp_path):
    x, y = _data(80)  # 5 batches of 16 per epoch
    model = _model()
    weights_at_step = {}

    class Record(C.Callback):
        def on_train_batch_end(self, batch, logs=None):
            weights_at_step[self.model.optimizer.iterations] = self.model.get_weights()

    pattern = str(tmp_path / "ckpt-{epoch:02d}-{batch:03d}.maas")
    model.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0,
              callbacks=[Record(), C.ModelCheckpoint(pattern, save_freq=3)])
    names = sorted(p.name for p in tmp_path.iterdir())
    # Keras's count: batches 3 of epoch 1, then 1 and 4 of epoch 2 (every 3rd batch overall)
    assert names == ["ckpt-01-003.maas", "ckpt-02-001.maas", "ckpt-02-004.maas"]
    for name, step in zip(names, (3, 6, 9)):
        loaded = maas.load_model(tmp_path / name)
        assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), weights_at_step[step]))
    with pytest.raises(ValueError, match="Unrecognized save_freq"):
        C.ModelCheckpoint(pattern, save_freq=0)
