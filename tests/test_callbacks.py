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
