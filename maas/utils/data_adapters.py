"""``PyDataset`` (and its legacy name ``Sequence``): batches computed by
Python code, which ``fit``, ``evaluate`` and ``predict`` take as ``x``, as
``keras.utils.PyDataset``.

A PyDataset returns whole batches: ``__getitem__(i)`` gives batch ``i`` as
``(x, y)``, ``(x, y, sample_weight)`` or ``(x,)`` (``x`` alone for
predict), ``__len__`` the number of batches (or ``num_batches`` None for an
endless dataset), and ``on_epoch_begin``/``on_epoch_end`` run around each
pass. With ``workers=N > 1`` (``super().__init__(workers=N)``) batches are
made ahead by N threads, in order, at most ``max_queue_size`` ahead of the
one being trained on; maas's kernels release the GIL, so the threads work
while a step runs. ``use_multiprocessing=True`` is refused (see
:class:`PyDatasetAdapter`). ``fit(shuffle=True)`` visits the batches in a
new order each epoch (maas's seeded generator).

>>> import math, numpy as np, maas
>>> class Batches(maas.utils.PyDataset):
...     def __init__(self, x, y, batch_size, **kwargs):
...         super().__init__(**kwargs)
...         self.x, self.y, self.batch_size = x, y, batch_size
...     def __len__(self):
...         return math.ceil(len(self.x) / self.batch_size)
...     def __getitem__(self, i):
...         s = slice(i * self.batch_size, (i + 1) * self.batch_size)
...         return self.x[s], self.y[s]
>>> data = Batches(np.ones((10, 3), np.float32), np.zeros((10, 1), np.float32), 4, workers=2)
>>> model = maas.Sequential([maas.Input((3,)), maas.layers.Dense(1)])
>>> model.compile(optimizer="sgd", loss="mse")
>>> len(model.fit(data, epochs=2, verbose=0).history["loss"])
2
"""
from __future__ import annotations

import collections
import concurrent.futures
import itertools
import warnings

import numpy as np

from ..errors import MaasError

__all__ = ["PyDataset", "Sequence", "PyDatasetAdapter", "adapt"]


class UnsupportedDataError(MaasError, ValueError):
    """A data source, or an option of one, that maas cannot run."""


class PyDataset:
    """Base class of a dataset written in Python; see the module doc.

    ``workers``: threads making batches ahead (1: none, batches are made on
    demand); ``use_multiprocessing``: refused by maas; ``max_queue_size``:
    how many batches the threads may have made or be making ahead.
    """

    def __init__(self, workers: int = 1, use_multiprocessing: bool = False,
                 max_queue_size: int = 10):
        self._workers = workers
        self._use_multiprocessing = use_multiprocessing
        self._max_queue_size = max_queue_size

    def _warn_if_super_not_called(self):
        missing = [a for a in ("_workers", "_use_multiprocessing", "_max_queue_size")
                   if not hasattr(self, a)]
        if missing:
            self._workers = getattr(self, "_workers", 1)
            self._use_multiprocessing = getattr(self, "_use_multiprocessing", False)
            self._max_queue_size = getattr(self, "_max_queue_size", 10)
            warnings.warn("Your `PyDataset` class should call `super().__init__(**kwargs)` in its "
                          "constructor. `**kwargs` can include `workers`, `use_multiprocessing`, "
                          "`max_queue_size`. Do not pass these arguments to `fit()`, as they "
                          "will be ignored.", stacklevel=3)

    @property
    def workers(self) -> int:
        self._warn_if_super_not_called()
        return self._workers

    @workers.setter
    def workers(self, value):
        self._workers = value

    @property
    def use_multiprocessing(self) -> bool:
        self._warn_if_super_not_called()
        return self._use_multiprocessing

    @use_multiprocessing.setter
    def use_multiprocessing(self, value):
        self._use_multiprocessing = value

    @property
    def max_queue_size(self) -> int:
        self._warn_if_super_not_called()
        return self._max_queue_size

    @max_queue_size.setter
    def max_queue_size(self, value):
        self._max_queue_size = value

    def __getitem__(self, index):
        """Batch ``index``: ``(x, y)``, ``(x, y, sample_weight)`` or ``(x,)``."""
        raise NotImplementedError

    @property
    def num_batches(self):
        """The number of batches (``len(self)``), or None for an endless dataset."""
        if hasattr(self, "__len__"):
            return len(self)
        raise NotImplementedError("You need to implement the `num_batches` property:\n\n"
                                  "@property\ndef num_batches(self):\n  return ...")

    def on_epoch_begin(self):
        """Called before each pass over the dataset."""

    def on_epoch_end(self):
        """Called after each complete pass over the dataset."""


Sequence = PyDataset  # Keras 3 keeps the legacy name as the same class


def _standardize(batch):
    if isinstance(batch, dict):
        return (batch,)
    if isinstance(batch, np.ndarray):
        return (batch,)
    if isinstance(batch, list):
        batch = tuple(batch)
    if not isinstance(batch, tuple) or len(batch) not in (1, 2, 3):
        raise ValueError("PyDataset.__getitem__() must return a tuple or a dict. If a tuple, it "
                         "must be ordered either (input,) or (inputs, targets) or (inputs, "
                         f"targets, sample_weights). Received: {str(batch)[:100]}... of type "
                         f"{type(batch)}")
    return batch


class PyDatasetAdapter:
    """What fit/evaluate/predict iterate for a PyDataset: each ``iter()`` is
    one pass (``on_epoch_begin``, the batches, ``on_epoch_end`` once every
    batch was consumed); with ``cycle=True`` (fit with ``steps_per_epoch``)
    the passes follow each other without end and fit takes
    ``steps_per_epoch`` batches per epoch from them, so a fit epoch may end
    inside a pass: a pass's ``on_epoch_end`` runs when its last batch has been
    consumed and the next is asked for (Keras calls it at every fit epoch's
    end instead, mid-pass included).

    ``use_multiprocessing=True`` raises :class:`UnsupportedDataError`: maas
    runs the workers as threads (its kernels release the GIL, and a forked
    copy of the dataset per process would not see ``on_epoch_end``'s
    changes, nor could a fork safely follow OpenMP and OpenBLAS threads).
    """

    def __init__(self, dataset: PyDataset, shuffle: bool = False, cycle: bool = False):
        workers, mp, queue = dataset.workers, dataset.use_multiprocessing, dataset.max_queue_size
        if mp:
            raise UnsupportedDataError(
                f"{type(dataset).__name__}(use_multiprocessing=True): maas runs PyDataset workers "
                f"as threads, not processes; pass use_multiprocessing=False and workers={workers} "
                "(maas's kernels release the GIL, so the threads overlap with training)")
        if not isinstance(workers, (int, np.integer)) or workers < 0:
            raise ValueError(f"workers must be a non-negative integer, received workers={workers!r}")
        if not isinstance(queue, (int, np.integer)) or queue < 1:
            raise ValueError(f"max_queue_size must be a positive integer, received "
                             f"max_queue_size={queue!r}")
        self.dataset, self.shuffle, self.cycle = dataset, bool(shuffle), bool(cycle)
        self.workers, self.max_queue_size = int(workers), int(queue)
        self.num_batches = dataset.num_batches
        if self.num_batches is None and shuffle:
            warnings.warn("`shuffle=True` was passed, but will be ignored since the data `x` was "
                          "provided as an infinite PyDataset. The PyDataset is expected to "
                          "already be shuffled.", stacklevel=3)

    def _order(self):
        if self.num_batches is None:
            return itertools.count()
        if self.shuffle:
            from .. import random as _random

            return iter(_random.numpy_rng().permutation(self.num_batches).tolist())
        return iter(range(self.num_batches))

    def _one_pass(self):
        ds = self.dataset
        ds.on_epoch_begin()
        indices = self._order()
        if self.workers <= 1:
            for i in indices:
                yield _standardize(ds[i])
        else:
            pool = concurrent.futures.ThreadPoolExecutor(self.workers,
                                                         thread_name_prefix="maas-pydataset")
            pending = collections.deque()
            try:
                for i in itertools.islice(indices, self.max_queue_size):
                    pending.append(pool.submit(ds.__getitem__, i))
                while pending:
                    batch = pending.popleft().result()  # in order; re-raises __getitem__'s error
                    nxt = next(indices, None)
                    if nxt is not None:
                        pending.append(pool.submit(ds.__getitem__, nxt))
                    yield _standardize(batch)
            finally:  # also when the consumer stops early: nothing runs on after it
                for f in pending:
                    f.cancel()
                pool.shutdown(wait=True)
        ds.on_epoch_end()

    def __iter__(self):
        if not self.cycle:
            return self._one_pass()
        return itertools.chain.from_iterable(self._one_pass() for _ in itertools.count())


class _SizedPyDatasetAdapter(PyDatasetAdapter):
    def __len__(self):
        return self.num_batches


def adapt(x, shuffle: bool = False, steps_per_epoch=None):
    """``x`` as fit/evaluate/predict iterate it: a PyDataset becomes its
    adapter; anything else is returned unchanged."""
    if not isinstance(x, PyDataset):
        return x
    cls = PyDatasetAdapter if x.num_batches is None else _SizedPyDatasetAdapter
    return cls(x, shuffle=shuffle, cycle=steps_per_epoch is not None)
