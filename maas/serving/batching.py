"""Dynamic batching: concurrent requests for one model version are grouped
into one forward pass.

A :class:`Batcher` owns one thread. Request threads :meth:`~Batcher.submit`
their rows and wait; the thread takes the first waiting request, keeps
collecting until ``max_batch_size`` rows are queued or ``max_delay_ms`` has
passed since it took the first one, runs the model once on the concatenated
rows (a compiled plan releases the GIL for the whole pass), and hands each
request its slice. A request with more rows than ``max_batch_size`` runs on
its own. The wait is skipped when no other request for the model is in
the server (a lone client pays no delay). When more than ``max_queue_rows`` rows wait, new requests are
refused with 503 rather than letting latency grow without bound.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable

import numpy as np

from .errors import ServingError

log = logging.getLogger("maas.serving")


class _Pending:
    __slots__ = ("x", "done", "result", "error")

    def __init__(self, x):
        self.x = x
        self.done = threading.Event()
        self.result = None
        self.error = None


class Batcher:
    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], max_batch_size: int = 32,
                 max_delay_ms: float = 2.0, max_queue_rows: int = 4096, name: str = "model",
                 on_batch: Callable[[int], None] | None = None,
                 in_flight: Callable[[], int] | None = None):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, received {max_batch_size}")
        self.predict = predict
        self.max_batch_size = int(max_batch_size)
        self.max_delay = max(0.0, float(max_delay_ms)) / 1000.0
        self.max_queue_rows = int(max_queue_rows)
        self.on_batch = on_batch
        self.in_flight = in_flight  # requests inside the server for this model
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_rows = 0
        self._cv = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"maas-batcher-{name}", daemon=True)
        self._thread.start()

    def submit(self, x: np.ndarray, timeout: float = 60.0) -> np.ndarray:
        p = _Pending(x)
        with self._cv:
            if self._stopped:
                raise ServingError(503, "the model is being unloaded; retry")
            if self._queued_rows + len(x) > self.max_queue_rows and self._queue:
                raise ServingError(503, f"the batching queue is full ({self._queued_rows} rows "
                                        f"waiting); retry later")
            self._queue.append(p)
            self._queued_rows += len(x)
            self._cv.notify()
        if not p.done.wait(timeout):
            raise ServingError(503, f"the model did not answer within {timeout:g} s")
        if p.error is not None:
            raise p.error
        return p.result

    def _take(self):
        """Blocks for the first request, then gathers until full or late."""
        with self._cv:
            while not self._queue and not self._stopped:
                self._cv.wait()
            if not self._queue:
                return None
            first = self._queue.popleft()
            batch, rows = [first], len(first.x)
            deadline = time.monotonic() + self.max_delay
            while rows < self.max_batch_size:
                if self._queue:
                    nxt = self._queue[0]
                    if rows + len(nxt.x) > self.max_batch_size:
                        break
                    self._queue.popleft()
                    batch.append(nxt)
                    rows += len(nxt.x)
                    continue
                # nobody else is inside the server for this model: waiting
                # for more rows would only add latency
                if self.in_flight is not None and self.in_flight() <= len(batch):
                    break
                left = deadline - time.monotonic()
                if left <= 0 or self._stopped:
                    break
                self._cv.wait(left)
            self._queued_rows -= rows
            return batch

    def _run(self):
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                x = batch[0].x if len(batch) == 1 else np.concatenate([p.x for p in batch])
                y = self.predict(x)
                if self.on_batch is not None:
                    self.on_batch(len(x))
                start = 0
                for p in batch:
                    n = len(p.x)
                    p.result = y[start:start + n]
                    start += n
            except BaseException as e:  # handed to the request threads, which log it
                for p in batch:
                    p.error = e
            for p in batch:
                p.done.set()

    def stop(self, wait: bool = True):
        """Stops after the queued requests have been answered."""
        with self._cv:
            self._stopped = True
            self._cv.notify_all()
        if wait and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
