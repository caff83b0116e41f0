"""Data-parallel training over MPI, with Keras 3's distribution names.

Run the same script under ``mpirun -n 4 python train.py`` (or ``mpiexec``,
``srun``): each process (rank) trains on its own shard of every global
batch, the gradients of all trainable weights are summed over the ranks
with one ``MPI_Allreduce`` straight from the engine's gradient memory, and
every rank applies the same update, so the weights stay identical.

>>> import maas
>>> maas.distribution.set_distribution(maas.distribution.DataParallel())
>>> # model.compile(...); model.fit(x, y, batch_size=256)   # 256: the global batch

What fit, evaluate and predict do under a :class:`DataParallel` of more
than one process:

* **weights** are broadcast from rank 0 when fit, evaluate or predict
  starts, so they start identical;
* **batches**: the shuffled order is drawn on rank 0 and broadcast; rank
  ``r`` takes the ``r``-th contiguous slice of each global batch (sizes
  differ by at most one row). Each rank's gradient is weighted by its share
  of the batch's rows before the sum, so the update is the gradient of the
  loss over the whole global batch, as one process with that batch size
  computes it (the summation order is the only difference). A global batch
  with fewer rows than ranks (a short last batch) is skipped, with a
  warning;
* **metrics**: each metric's state variables are reduced over the ranks
  (summed, as their ``aggregation`` says) before a result is read, so the
  logs, ``evaluate``'s figures, ``EarlyStopping`` and ``ReduceLROnPlateau``
  see the figures of the whole data on every rank, and all ranks stop
  together;
* **evaluate** and **predict** split the data into one contiguous part per
  rank; ``predict`` returns the whole result on every rank
  (``predict_results="all"``) or on rank 0 only (``"chief"``; the others get
  None);
* **only rank 0 writes**: the progress bar, ModelCheckpoint, CSVLogger,
  TensorBoard, BackupAndRestore's files and ``model.save`` run on rank 0
  only;
* **failures**: an exception on one rank inside fit/evaluate/predict
  aborts the whole job (``MPI_Abort``) after printing it, so no rank waits
  for ever in a collective (``abort_on_error=False`` turns this off).

BatchNormalization normalizes each shard with that shard's batch
statistics (as Keras's data-parallel default does; not SyncBatchNorm), and
after every step the moving mean and variance are averaged over the ranks,
so every rank holds the same weights, moving statistics included.

Without mpi4py, or with a single process, DataParallel is a no-op and says
so once.
"""
from __future__ import annotations

import os
import sys
import traceback
import warnings
from contextlib import contextmanager

import numpy as np

__all__ = ["DataParallel", "set_distribution", "distribution", "list_devices"]

_current = None
_warned = set()


def _warn_once(msg):
    if msg not in _warned:
        _warned.add(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def _world():
    try:
        from mpi4py import MPI
    except ImportError:
        return None, None
    return MPI, MPI.COMM_WORLD


def list_devices(device_type=None) -> list:
    """The processes of the MPI job as Keras-style device names
    (``"cpu:0"``, ``"cpu:1"``, ...); one entry without MPI."""
    MPI, comm = _world()
    n = comm.Get_size() if comm is not None else 1
    return [f"cpu:{i}" for i in range(n)]


class DataParallel:
    """Data parallelism over the processes of an MPI job (one rank per
    process, each a full copy of the model).

    Args:
        devices: accepted for Keras's signature; the ranks are the devices.
        comm: an ``mpi4py.MPI.Comm`` to train over (default ``COMM_WORLD``).
        predict_results: ``"all"`` (every rank gets the whole result of
            ``predict``) or ``"chief"`` (rank 0 only; the others get None).
        abort_on_error: abort every rank when one raises inside fit,
            evaluate or predict (default True), so none hangs.

    >>> dist = maas.distribution.DataParallel()
    >>> dist.rank, dist.num_processes    # (0, 1) outside mpirun
    """

    def __init__(self, device_mesh=None, devices=None, comm=None, predict_results="all",
                 abort_on_error=True):
        if predict_results not in ("all", "chief"):
            raise ValueError(f"predict_results must be 'all' or 'chief', received "
                             f"predict_results={predict_results!r}")
        self.predict_results = predict_results
        self.abort_on_error = bool(abort_on_error)
        self.MPI = None
        if comm is None:
            self.MPI, comm = _world()
        else:
            from mpi4py import MPI
            self.MPI = MPI
            if not isinstance(comm, MPI.Comm):
                raise TypeError(f"comm must be an mpi4py.MPI.Comm, received {type(comm).__name__}")
        self.comm = comm
        self.rank = comm.Get_rank() if comm is not None else 0
        self.num_processes = comm.Get_size() if comm is not None else 1
        if comm is None:
            _warn_once("maas.distribution.DataParallel: mpi4py is not installed (pip install "
                       "'maas[mpi]'), so training runs in this one process")
        elif self.num_processes == 1:
            _warn_once("maas.distribution.DataParallel: one process (start the script with "
                       "`mpirun -n N python ...` to train on N), so training runs in this one")
        self._weight = 1.0       # this rank's share of the current global batch
        self._in_step = False
        self._reduced = False

    @property
    def active(self) -> bool:
        """True when there is more than one process to train over."""
        return self.comm is not None and self.num_processes > 1

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    def __repr__(self):
        return f"DataParallel(rank={self.rank}, num_processes={self.num_processes})"

    # -- collectives (NumPy buffers; mpi4py releases the GIL in each call)
    def _allreduce_(self, buf):
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)

    def broadcast(self, array, root=0):
        """``array`` from rank ``root`` on every rank (in place for a
        contiguous NumPy array; returns it)."""
        a = np.ascontiguousarray(array)
        self.comm.Bcast(a, root=root)
        return a

    # -- weights
    def sync_weights(self, model):
        """Copies every variable of ``model`` (trainable or not) from rank 0
        into the other ranks."""
        for v in model.variables:
            a = np.array(v, copy=True)
            self.comm.Bcast(a, root=0)
            if self.rank != 0:
                v.assign(a)

    # -- batches
    def permutation(self, n, rng):
        """A shuffled order of n rows, drawn on rank 0 and broadcast."""
        perm = rng.permutation(n).astype(np.int64) if self.rank == 0 else np.empty(n, np.int64)
        return self.broadcast(perm)

    def bounds(self, n):
        """This rank's [start, stop) of n rows split into contiguous parts
        (the first n % p ranks get one more row)."""
        p, r = self.num_processes, self.rank
        q, extra = divmod(n, p)
        start = r * q + min(r, extra)
        return start, start + q + (1 if r < extra else 0)

    def shard(self, arrays):
        """This rank's rows of one global batch (a list of arrays or None),
        and sets the rank's gradient weight; None when the batch has fewer
        rows than ranks."""
        n = len(next(a for a in arrays if a is not None))
        if n < self.num_processes:
            _warn_once(f"maas.distribution: a global batch of {n} rows is smaller than the "
                       f"{self.num_processes} processes; it is skipped (use a batch size that "
                       f"is a multiple of the number of processes)")
            return None
        lo, hi = self.bounds(n)
        self._weight = (hi - lo) / n
        return [None if a is None else a[lo:hi] for a in arrays]

    # -- gradients
    @contextmanager
    def step(self):
        """Marks one training step: the gradients reach the update summed
        over the ranks exactly once."""
        self._in_step, self._reduced = True, False
        try:
            yield
        finally:
            self._in_step = False

    def reduce_flat(self, flat):
        """Sums a flat float32 gradient buffer (a maas Tensor or an array,
        changed in place) over the ranks, weighted by each rank's share of
        the batch: afterwards it holds the gradient of the global batch."""
        if flat is None:
            self._reduced = True
            return
        a = np.asarray(flat)
        if self._weight != 1.0:
            a *= np.float32(self._weight)
        self._allreduce_(a)
        self._reduced = True

    def reduce_gradients(self, grads):
        """The list of gradients (arrays or Tensors, None skipped) summed over
        the ranks as :meth:`reduce_flat` does, through one flat buffer."""
        if not self._in_step or self._reduced:
            return grads
        arrays = [None if g is None else np.asarray(g, np.float32) for g in grads]
        present = [a for a in arrays if a is not None]
        if not present:
            self._reduced = True
            return grads
        flat = np.concatenate([a.reshape(-1) for a in present])
        self.reduce_flat(flat)
        out, off = [], 0
        for a in arrays:
            if a is None:
                out.append(None)
                continue
            out.append(flat[off:off + a.size].reshape(a.shape))
            off += a.size
        return out

    def sync_state(self, model):
        """Averages every BatchNormalization's moving statistics over the
        ranks (one all-reduce), so that the ranks' weights stay identical."""
        from ..layers.normalization import BatchNormalization
        vs = []
        for layer in model._flatten_layers(include_self=False):
            if isinstance(layer, BatchNormalization) and getattr(layer, "built", False):
                vs += [layer.moving_mean, layer.moving_variance]
        if not vs:
            return
        arrays = [np.asarray(v, np.float32) for v in vs]
        flat = np.concatenate([a.reshape(-1) for a in arrays])
        self._allreduce_(flat)
        flat *= np.float32(1.0 / self.num_processes)
        off = 0
        for v, a in zip(vs, arrays):
            v.assign(flat[off:off + a.size].reshape(a.shape))
            off += a.size

    # -- metrics
    def _leaf_metrics(self, model):
        leaves, stack = [], list(model.metrics)
        while stack:
            m = stack.pop(0)
            sub = getattr(m, "metrics", None)
            if isinstance(sub, list) and sub and sub is not m:
                stack[:0] = sub
            leaves.append(m)
        return leaves

    @contextmanager
    def global_metrics(self, model):
        """Inside the block every metric of ``model`` holds the state of all
        ranks (reduced as each variable's aggregation says); the local state
        is restored afterwards so that accumulation goes on per rank."""
        pairs = []
        for m in self._leaf_metrics(model):
            aggs = getattr(m, "_aggregations", {})
            for v in getattr(m, "variables", []):
                pairs.append((v, aggs.get(id(v), "sum")))
        if not pairs:
            yield
            return
        local = [np.array(v, copy=True) for v, _ in pairs]
        flat = np.concatenate([a.reshape(-1).astype(np.float64) for a in local])
        total = flat.copy()
        self._allreduce_(total)
        first = flat.copy()
        self.comm.Bcast(first, root=0)
        off = 0
        for (v, agg), a in zip(pairs, local):
            n = a.size
            if agg == "sum":
                g = total[off:off + n]
            elif agg == "mean":
                g = total[off:off + n] / self.num_processes
            elif agg == "only_first_replica":
                g = first[off:off + n]
            else:  # "none": each rank keeps its own
                g = flat[off:off + n]
            v.assign(g.reshape(a.shape).astype(a.dtype))
            off += n
        try:
            yield
        finally:
            for (v, _), a in zip(pairs, local):
                v.assign(a)

    def gather(self, outputs):
        """The per-rank parts of a predict result, concatenated in rank
        order (on every rank, or on rank 0 only with predict_results="chief")."""
        from ..models.trainer import _concat_outputs
        if self.predict_results == "chief":
            parts = self.comm.gather(outputs, root=0)
            if self.rank != 0:
                return None
        else:
            parts = self.comm.allgather(outputs)
        parts = [p for p in parts if p is not None]
        return _concat_outputs(parts)

    # -- callbacks and writes
    def filter_callbacks(self, callbacks):
        """The callbacks this rank runs: every one on rank 0; on the others
        those not marked chief-only (the ones that write or print)."""
        if self.rank == 0:
            return list(callbacks)
        return [c for c in callbacks if not getattr(c, "_chief_only", False)]

    @contextmanager
    def guard(self, what):
        """Aborts every rank when the block raises on this one (a rank left
        waiting in a collective would hang for ever)."""
        try:
            yield
        except BaseException:
            if not self.abort_on_error:
                raise
            sys.stderr.write(f"maas.distribution: rank {self.rank} of {self.num_processes} failed "
                             f"in {what}; aborting every rank:\n")
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            self.comm.Abort(1)
            raise


def set_distribution(value) -> None:
    """Sets the distribution fit, evaluate and predict use (a
    :class:`DataParallel`, or None for one process)."""
    global _current
    if value is not None and not isinstance(value, DataParallel):
        raise TypeError(f"set_distribution takes a maas.distribution.DataParallel or None, "
                        f"received {type(value).__name__}")
    _current = value


def distribution():
    """The distribution set by :func:`set_distribution` (or None)."""
    return _current


def active():
    """The current DataParallel when it spans more than one process, else None."""
    d = _current
    return d if d is not None and d.active else None


def is_chief() -> bool:
    """False only on the ranks other than 0 of an active DataParallel."""
    d = active()
    return d is None or d.rank == 0
