"""Dynamic batching: concurrent requests for one model version are grouped
into one forward pass.

There is no batching thread: the request threads take turns as the
*leader*. A request that finds no leader becomes it: it takes the waiting
requests from the head of the queue (its own first), keeps gathering until
``max_batch_size`` rows are queued or ``max_delay_ms`` has passed, runs the
model once on the concatenated rows (a compiled plan releases the GIL for the
whole pass), hands every request its slice, passes the leadership on to the
next waiting request (if any) and returns its own answer. The others sleep
on a lock of their own until their slice (or the leadership) arrives, so a
batch costs one wake-up per follower and none for a thread in between, and a
lone request runs the model on its own thread at once. A request with more
rows than ``max_batch_size`` runs on its own. The wait for more rows is
skipped when no other request for the model is in the server (a lone client
pays no delay). Under gevent (``maas serve``'s default worker) a greenlet
runs from reading its body to the model without yielding, so the requests
that arrived during the previous forward pass would each find the batcher
idle and run alone: there the leader first lets the event loop run until it
is idle (``gevent.idle``, at most ``max_delay_ms``), so that they are read,
parsed and join its batch. When more than ``max_queue_rows`` rows wait, new requests
are refused with 503 rather than letting latency grow without bound.
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

_allocate_lock = threading.Lock


class _Pending:
    __slots__ = ("x", "n", "wake", "result", "error", "lead", "abandoned", "t0", "queue_s",
                 "compute_s")

    def __init__(self, x):
        self.x = x
        self.n = _rows(x)
        self.t0 = time.perf_counter()
        self.queue_s = 0.0    # from submit to the start of its batch's forward pass
        self.compute_s = 0.0  # its batch's forward pass
        self.wake = _allocate_lock()  # held until the answer (or the leadership) is handed over
        self.wake.acquire()
        self.result = None
        self.error = None
        self.lead = False
        self.abandoned = False


def _rows(x) -> int:
    """Rows of a batch: an array or a dict of arrays (one per input)."""
    if isinstance(x, dict):
        return len(next(iter(x.values())))
    return len(x)


def _concat(xs):
    if isinstance(xs[0], dict):
        return {k: np.concatenate([x[k] for x in xs]) for k in xs[0]}
    return np.concatenate(xs)


def _slice(y, start, stop):
    if isinstance(y, dict):
        return {k: v[start:stop] for k, v in y.items()}
    return y[start:stop]


def _cooperative_yield():
    """When gevent has patched threading (a gevent worker): a function that
    lets every greenlet with pending I/O run (``gevent.idle``: accept, read
    and parse; a request then queues behind the leader), for at most
    ``seconds``. None otherwise."""
    import sys

    if "gevent" not in sys.modules:
        return None
    try:
        import gevent
        from gevent import monkey
    except ImportError:  # pragma: no cover
        return None
    if not monkey.is_module_patched("threading"):
        return None

    def wait_idle(seconds):
        with gevent.Timeout(max(seconds, 1e-4), False):  # False: a quiet end at the timeout
            gevent.idle()
    return wait_idle


class Batcher:
    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], max_batch_size: int = 32,
                 max_delay_ms: float = 2.0, max_queue_rows: int = 4096, name: str = "model",
                 on_batch: Callable[[int], None] | None = None,
                 in_flight: Callable[[], int] | None = None):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, received {max_batch_size}")
        self.predict = predict
        self.name = name
        self.max_batch_size = int(max_batch_size)
        self.max_delay = max(0.0, float(max_delay_ms)) / 1000.0
        self.max_queue_rows = int(max_queue_rows)
        self.on_batch = on_batch
        self.in_flight = in_flight  # requests inside the server for this model
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_rows = 0
        self._cv = threading.Condition()  # guards all the state below
        self._busy = False       # a leader is at work; when False the queue is empty
        self._gathering = False  # the leader waits for more rows
        self._stopped = False
        self._yield = _cooperative_yield()

    def submit(self, x, timeout: float = 60.0, timing: list | None = None):
        """The model's answer for ``x`` (an array, or a dict of arrays), run
        in a batch with others; ``timing`` (a list) gets the request's
        queue and compute seconds appended."""
        p = self._submit(x, timeout)
        if timing is not None:
            timing += (p.queue_s, p.compute_s)
        return p.result

    def _submit(self, x, timeout: float) -> _Pending:
        p = _Pending(x)
        with self._cv:
            if self._stopped:
                raise ServingError(503, "the model is being unloaded; retry")
            if self._queued_rows + p.n > self.max_queue_rows and self._queue:
                raise ServingError(503, f"the batching queue is full ({self._queued_rows} rows "
                                        f"waiting); retry later")
            self._queue.append(p)
            self._queued_rows += p.n
            if self._busy:
                if self._gathering:
                    self._cv.notify()
                lead = False
            else:
                self._busy = lead = True
        if not lead:
            if not p.wake.acquire(True, timeout):
                with self._cv:
                    if not p.wake.acquire(False):  # nothing arrived in the meantime
                        p.abandoned = True
                        try:
                            self._queue.remove(p)
                            self._queued_rows -= p.n
                        except ValueError:
                            pass  # in a running batch; its slice is dropped
                        raise ServingError(503, f"the model did not answer within {timeout:g} s")
            if not p.lead:
                if p.error is not None:
                    raise p.error
                return p
        self._lead()
        if p.error is not None:
            raise p.error
        return p

    def _take(self) -> list[_Pending]:
        """The head of the queue (the leader's own request first), gathering
        until full or late."""
        with self._cv:
            first = self._queue.popleft()
            batch, rows = [first], first.n
            deadline = None
            while rows < self.max_batch_size:
                if self._queue:
                    nxt = self._queue[0]
                    if rows + nxt.n > self.max_batch_size:
                        break
                    self._queue.popleft()
                    batch.append(nxt)
                    rows += nxt.n
                    continue
                # nobody else is inside the server for this model: waiting
                # for more rows would only add latency
                if self.in_flight is not None and self.in_flight() <= len(batch):
                    break
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.max_delay
                left = deadline - now
                if left <= 0 or self._stopped:
                    break
                self._gathering = True
                self._cv.wait(left)
                self._gathering = False
            self._queued_rows -= rows
            return batch

    def _lead(self):
        """Runs one batch, answers it, then hands the leadership on."""
        batch = []
        try:
            if self._yield is not None:  # gevent: let the requests already sent queue up first
                self._yield(self.max_delay)
            batch = self._take()
            x = batch[0].x if len(batch) == 1 else _concat([p.x for p in batch])
            t = time.perf_counter()
            y = self.predict(x)
            dt = time.perf_counter() - t
            rows = sum(p.n for p in batch)
            if self.on_batch is not None:
                self.on_batch(rows, dt)
            start = 0
            for p in batch:
                p.result = _slice(y, start, start + p.n)
                p.queue_s, p.compute_s = t - p.t0, dt
                start += p.n
        except BaseException as e:  # handed to every request of the batch, which log it
            for p in batch:
                p.error = e
        finally:
            with self._cv:
                if self._queue:
                    nxt = self._queue[0]
                    nxt.lead = True
                    nxt.wake.release()
                else:
                    self._busy = False
                    self._cv.notify_all()  # for stop(wait=True)
            for p in batch[1:]:
                p.wake.release()

    def stop(self, wait: bool = True, timeout: float = 30.0):
        """Refuses new requests; the queued ones are still answered (with
        ``wait``, before this returns)."""
        with self._cv:
            self._stopped = True
            self._cv.notify_all()
            if wait:
                self._cv.wait_for(lambda: not self._busy, timeout)
