"""GradientTape: reverse-mode automatic differentiation, recorded in C.

>>> import maas
>>> w = maas.Variable([[1.0], [2.0]])
>>> x = maas.tensor([[3.0, 4.0]])
>>> with maas.GradientTape() as tape:
...     y = (x @ w).sum()
>>> tape.gradient(y, w).numpy().ravel()
array([3., 4.], dtype=float32)
"""
from __future__ import annotations

import contextlib

from . import _core
from ._core import Tensor

__all__ = ["GradientTape"]


def _flatten(structure, out):
    if isinstance(structure, dict):
        for k in structure:
            _flatten(structure[k], out)
    elif isinstance(structure, (list, tuple)):
        for s in structure:
            _flatten(s, out)
    else:
        out.append(structure)
    return out


def _pack(structure, flat, pos):
    if isinstance(structure, dict):
        return {k: _pack(v, flat, pos) for k, v in structure.items()}
    if isinstance(structure, (list, tuple)):
        packed = [_pack(s, flat, pos) for s in structure]
        return type(structure)(packed) if isinstance(structure, tuple) else packed
    pos[0] += 1
    return flat[pos[0] - 1]


class GradientTape:
    """Records the ops run on tracked tensors and computes gradients.

    Tensors with ``requires_grad=True`` (trainable Variables included) are
    tracked automatically; others with :meth:`watch`. Nothing is recorded
    outside a tape. ``gradient`` of a non-scalar target is the gradient of
    its sum, as in TensorFlow; a source the target does not depend on gets
    ``None``. A non-persistent tape frees its record after one ``gradient``.

    >>> x = maas.tensor([1.0, 2.0, 3.0])
    >>> with maas.GradientTape(persistent=True) as tape:
    ...     tape.watch(x)
    ...     y = x * x
    ...     z = y.sum()
    >>> tape.gradient(z, x).numpy(), tape.gradient(y, x).numpy()
    (array([2., 4., 6.], dtype=float32), array([2., 4., 6.], dtype=float32))
    """

    def __init__(self, persistent: bool = False):
        self.persistent = bool(persistent)
        self._tape = _core.Tape()
        self._recording = False
        self._used = False

    def __enter__(self) -> "GradientTape":
        if self._recording:
            raise RuntimeError("this GradientTape is already recording")
        self._tape.push()
        self._recording = True
        return self

    def __exit__(self, *exc) -> None:
        self._tape.pop()
        self._recording = False

    def watch(self, tensor) -> None:
        """Tracks a tensor (or a list/dict of tensors) as if it required grad."""
        for t in _flatten(tensor, []):
            self._tape.watch(t)

    @contextlib.contextmanager
    def stop_recording(self):
        """A context in which ops are not recorded on this tape."""
        self._tape.pause(True)
        try:
            yield
        finally:
            self._tape.pause(False)

    def reset(self) -> None:
        """Forgets everything recorded so far."""
        was = self._recording
        if was:
            self._tape.pop()
        self._tape = _core.Tape()
        self._used = False
        if was:
            self._tape.push()

    def gradient(self, target, sources):
        """Gradients of ``sum(target)`` with respect to ``sources``.

        ``sources`` may be one tensor, a (nested) list or tuple, or a dict;
        the result has the same structure. ``target`` may be a tensor or a
        list of tensors (their gradients are added). Each source's ``.grad``
        attribute is set to its gradient too.
        """
        if self._used and not self.persistent:
            raise RuntimeError(
                "A non-persistent GradientTape can only be used to compute one set of "
                "gradients; use GradientTape(persistent=True) to call gradient() again")
        st = type(sources)
        # a flat list or tuple of tensors (the usual tape.gradient(loss,
        # params)) needs no flattening and no re-packing
        simple = (st is list or st is tuple) and all(isinstance(s, Tensor) for s in sources)
        flat = list(sources) if simple else _flatten(sources, [])
        targets = target if isinstance(target, (list, tuple)) else [target]
        grads = None
        for t in targets:
            if not isinstance(t, Tensor):
                raise TypeError(f"GradientTape.gradient: the target must be a maas Tensor, "
                                f"got {type(t).__name__}")
            g = self._tape.gradient(t, flat)
            grads = g if grads is None else [
                a if b is None else b if a is None else a + b for a, b in zip(grads, g)]
        self._used = True
        if not self.persistent:
            self._tape.release()
        for s, g in zip(flat, grads):
            s.grad = g
        if simple:
            return grads if st is list else tuple(grads)
        if isinstance(sources, (list, tuple, dict)):
            return _pack(sources, grads, [0])
        return grads[0]

    def __len__(self) -> int:
        """The number of ops recorded."""
        return len(self._tape)
