"""keras.utils.PyDataset (and the legacy Sequence) through fit, evaluate
and predict: the same numbers as arrays, on_epoch_begin/on_epoch_end, batch
order and shuffling, worker threads that really run concurrently, the
queue bound, errors; and keras.utils.Progbar."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest

import maas
from maas.utils.data_adapters import UnsupportedDataError

rng = np.random.default_rng(0)
X = rng.normal(size=(40, 5)).astype(np.float32)
Y = rng.integers(0, 3, 40)
SW = rng.uniform(0.5, 2.0, 40).astype(np.float32)


class Batches(maas.utils.PyDataset):
    def __init__(self, x, y=None, sw=None, batch_size=8, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.sw, self.batch_size = x, y, sw, batch_size
        self.calls, self.begins, self.ends = [], 0, 0
        self.lock = threading.Lock()

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, i):
        with self.lock:
            self.calls.append(i)
        s = slice(i * self.batch_size, (i + 1) * self.batch_size)
        if self.y is None:
            return self.x[s]
        if self.sw is None:
            return self.x[s], self.y[s]
        return self.x[s], self.y[s], self.sw[s]

    def on_epoch_begin(self):
        self.begins += 1

    def on_epoch_end(self):
        self.ends += 1


def model(seed=0):
    maas.utils.set_random_seed(seed)
    m = maas.Sequential([maas.Input((5,)), maas.layers.Dense(8, activation="relu"),
                         maas.layers.Dense(3, activation="softmax")])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("workers", [1, 3])
def test_fit_on_a_pydataset_equals_fit_on_the_arrays(weighted, workers):
    ds = Batches(X, Y, SW if weighted else None, workers=workers)
    a, b = model(), model()
    ha = a.fit(ds, epochs=3, shuffle=False, verbose=0)
    hb = b.fit(X, Y, sample_weight=SW if weighted else None, batch_size=8, epochs=3,
               shuffle=False, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        assert np.array_equal(wa, wb)
    assert ha.history == hb.history
    assert ds.begins == ds.ends == 3
    assert ds.calls if workers > 1 else ds.calls == [0, 1, 2, 3, 4] * 3


def test_evaluate_predict_and_validation_take_a_pydataset():
    m = model()
    m.fit(X, Y, epochs=1, batch_size=8, verbose=0)
    assert m.evaluate(Batches(X, Y), verbose=0) == m.evaluate(X, Y, batch_size=8, verbose=0)
    ds = Batches(X)  # batches of x alone for predict
    assert np.array_equal(m.predict(ds, verbose=0), m.predict(X, batch_size=8, verbose=0))
    assert ds.ends == 1
    a, b = model(1), model(1)
    ha = a.fit(X[:32], Y[:32], validation_data=Batches(X[32:], Y[32:]), epochs=2, shuffle=False,
               verbose=0, batch_size=8)
    hb = b.fit(X[:32], Y[:32], validation_data=(X[32:], Y[32:]), epochs=2, shuffle=False,
               verbose=0, batch_size=8)
    assert ha.history["val_loss"] == hb.history["val_loss"]


def test_on_epoch_end_changes_what_the_next_epoch_sees():
    class Reshuffling(Batches):
        def on_epoch_end(self):
            super().on_epoch_end()
            order = np.random.default_rng(self.ends).permutation(len(self.x))
            self.x, self.y = self.x[order], self.y[order]

    seen = []
    ds = Reshuffling(X, Y, workers=2)
    m = model()
    m.fit(ds, epochs=2, shuffle=False, verbose=0,
          callbacks=[maas.callbacks.LambdaCallback(
              on_epoch_begin=lambda epoch, logs=None: seen.append(ds.x[:8].copy()))])
    assert ds.ends == 2
    assert not np.array_equal(seen[0], seen[1])  # the second epoch trained on the new order


def test_shuffle_visits_every_batch_once_per_epoch_in_a_new_order():
    ds = Batches(np.tile(X, (3, 1)), np.tile(Y, 3), batch_size=4)  # 30 batches
    maas.utils.set_random_seed(5)
    model().fit(ds, epochs=3, shuffle=True, verbose=0)
    epochs = [ds.calls[i * 30:(i + 1) * 30] for i in range(3)]
    assert all(sorted(e) == list(range(30)) for e in epochs)
    assert epochs[0] != list(range(30)) and epochs[0] != epochs[1] != epochs[2]
    ds2 = Batches(np.tile(X, (3, 1)), np.tile(Y, 3), batch_size=4)
    maas.utils.set_random_seed(5)
    model().fit(ds2, epochs=3, shuffle=True, verbose=0)
    assert ds2.calls == ds.calls  # seeded


def test_steps_per_epoch_runs_on_across_passes():
    ds = Batches(X[:24], Y[:24])  # 3 batches
    h = model().fit(ds, epochs=3, steps_per_epoch=2, shuffle=False, verbose=0)
    assert len(h.history["loss"]) == 3
    assert ds.calls == [0, 1, 2, 0, 1, 2]
    # a pass ends when the next one starts: the first ended, the second was cut short
    assert ds.begins == 2 and ds.ends == 1


def test_workers_run_concurrently_in_order_within_the_queue_bound():
    workers, queue = 3, 4
    barrier = threading.Barrier(workers, timeout=60)

    class Concurrent(Batches):
        def __getitem__(self, i):
            with self.lock:
                self.threads.add(threading.current_thread().name)
            if i < workers:  # the first three calls meet: only concurrent threads get past
                barrier.wait()
            return super().__getitem__(i)

    ds = Concurrent(np.tile(X, (2, 1)), np.tile(Y, 2), batch_size=4, workers=workers,
                    max_queue_size=queue)
    ds.threads = set()
    started_at_step = []
    got = []

    class Watch(maas.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            with ds.lock:
                started_at_step.append(len(ds.calls))

    m = model()
    orig = m.train_step

    def spy(data):   # Keras 3's train_step(data)
        x, _, _ = maas.utils.unpack_x_y_sample_weight(data)
        got.append(np.asarray(x).copy())
        return orig(data)

    m.train_step = spy
    m.fit(ds, epochs=1, shuffle=False, verbose=0, callbacks=[Watch()])
    assert not barrier.broken
    assert len(ds.threads) == workers and all(t.startswith("maas-pydataset") for t in ds.threads)
    # in order: batch k is rows 4k..4k+3
    xs = np.tile(X, (2, 1))
    assert all(np.array_equal(g, xs[4 * k:4 * k + 4]) for k, g in enumerate(got))
    # never more than max_queue_size batches made or in the making ahead of the consumer
    assert all(n <= step + queue for step, n in enumerate(started_at_step)), started_at_step
    assert max(started_at_step) > 1  # and they did run ahead


def test_an_error_in_a_worker_reaches_fit():
    class Broken(Batches):
        def __getitem__(self, i):
            if i == 2:
                raise KeyError("batch 2 is missing")
            return super().__getitem__(i)

    with pytest.raises(KeyError, match="batch 2 is missing"):
        model().fit(Broken(X, Y, workers=2), epochs=1, verbose=0)


def test_refusals_and_warnings():
    with pytest.raises(UnsupportedDataError, match="use_multiprocessing=True.*threads"):
        model().fit(Batches(X, Y, workers=2, use_multiprocessing=True), epochs=1, verbose=0)
    assert issubclass(UnsupportedDataError, ValueError)
    with pytest.raises(ValueError, match="max_queue_size must be a positive integer"):
        model().fit(Batches(X, Y, workers=2, max_queue_size=0), epochs=1, verbose=0)

    class Four(Batches):
        def __getitem__(self, i):
            return X[:8], Y[:8], SW[:8], SW[:8]

    with pytest.raises(ValueError, match=r"must return a tuple or a dict"):
        model().fit(Four(X, Y), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="y must be None"):
        model().fit(Batches(X, Y), Y, epochs=1, verbose=0)

    class NoSuper(maas.utils.Sequence):
        def __init__(self):
            self.rows = 8

        def __len__(self):
            return 1

        def __getitem__(self, i):
            return X[:8], Y[:8]

    assert maas.utils.Sequence is maas.utils.PyDataset
    with pytest.warns(UserWarning, match=r"should call `super\(\).__init__"):
        model().fit(NoSuper(), epochs=1, verbose=0)


# ---- Progbar

def test_progbar_averages_values_over_steps_and_keeps_stateful_ones(capsys):
    bar = maas.utils.Progbar(4, verbose=2, stateful_metrics=["acc"])
    bar.update(1, [("loss", 4.0), ("acc", 0.1)])
    bar.update(3, [("loss", 1.0), ("acc", 0.5)])   # covers 2 steps: weight 2
    assert capsys.readouterr().out == ""           # verbose=2: one line, at the end
    bar.add(1, [("loss", 2.0), ("acc", 0.75)])
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("4/4 - ")
    # loss: (4*1 + 1*2 + 2*1) / 4 = 2.0; acc as given last
    assert "loss: 2.0000" in out and "acc: 0.7500" in out
    assert out.index("loss") < out.index("acc")


def test_progbar_verbose_1_redraws_one_line_and_verbose_0_prints_nothing(capsys):
    bar = maas.utils.Progbar(3, verbose=1, interval=0.0, unit_name="batch")
    for i in range(3):
        bar.add(1, [("loss", float(i))])
    out = capsys.readouterr().out
    assert out.count("\r") == 3 and out.endswith("\n") and out.count("\n") == 1
    last = out.split("\r")[-1]
    assert last.startswith("3/3 ━━━━━━━━━━━━━━━━━━━━") and "/batch" in last and "loss: 1.0000" in last
    unknown = maas.utils.Progbar(None, verbose=1, interval=0.0)
    unknown.update(5, finalize=True)
    assert "5/Unknown" in capsys.readouterr().out
    silent = maas.utils.Progbar(2, verbose=0)
    silent.add(2, [("loss", 1.0)])
    assert capsys.readouterr().out == ""
