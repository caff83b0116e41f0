"""``Progbar``: Keras's progress bar for loops a user writes.

Values passed to ``update``/``add`` as ``[(name, value), ...]`` are shown
as their average over the steps seen (weighted by the steps each update
covers), except ``stateful_metrics``, shown as given. ``verbose=1`` keeps one
line updated in place; ``verbose=2`` prints one line when the bar finishes;
``verbose=0`` prints nothing.

>>> import maas
>>> bar = maas.utils.Progbar(3, verbose=2)
>>> for step in range(3):
...     bar.add(1, values=[("loss", 1.0 / (step + 1))])  # doctest: +ELLIPSIS
3/3 - ... - loss: 0.6111
"""
from __future__ import annotations

import sys
import time

from ..callbacks import _fmt_time, _fmt_value

__all__ = ["Progbar"]


class Progbar:
    """``Progbar(target, width=20, verbose=1, interval=0.05,
    stateful_metrics=None, unit_name="step")``; ``target`` None for an
    unknown number of steps."""

    def __init__(self, target, width: int = 20, verbose: int = 1, interval: float = 0.05,
                 stateful_metrics=None, unit_name: str = "step"):
        self.target, self.width, self.verbose = target, int(width), int(verbose)
        self.interval, self.unit_name = float(interval), unit_name
        self.stateful_metrics = set(stateful_metrics or ())
        self._values: dict[str, list[float]] = {}
        self._values_order: list[str] = []
        self._seen_so_far = 0
        self._start = time.time()
        self._last_update = 0.0
        self._prev_len = 0
        self._done = False

    def _average(self, name) -> float:
        total, count = self._values[name]
        return total / max(count, 1)

    def _info(self) -> str:
        return "".join(f" - {k}: {_fmt_value(self._average(k))}" for k in self._values_order)

    def _per_unit(self, elapsed, current) -> str:
        per = elapsed / current if current else 0.0
        if per >= 1 or per == 0:
            return f"{per:.0f}s/{self.unit_name}"
        if per >= 1e-3:
            return f"{per * 1e3:.0f}ms/{self.unit_name}"
        return f"{per * 1e6:.0f}us/{self.unit_name}"

    def update(self, current: int, values=None, finalize: bool | None = None) -> None:
        """Moves the bar to step ``current`` with ``values`` (a list of
        ``(name, value)``); ``finalize`` defaults to ``current >= target``."""
        for name, value in values or []:
            value = float(value)
            if name not in self._values_order:
                self._values_order.append(name)
            if name in self.stateful_metrics:
                self._values[name] = [value, 1]
            else:
                base = max(current - self._seen_so_far, 1)
                total, count = self._values.get(name, [0.0, 0])
                self._values[name] = [total + value * base, count + base]
        self._seen_so_far = current
        if finalize is None:
            finalize = self.target is not None and current >= self.target
        now = time.time()
        elapsed = now - self._start
        if self.verbose == 1:
            if not finalize and now - self._last_update < self.interval:
                return
            self._last_update = now
            if self.target is not None:
                digits = len(str(self.target))
                done = int(self.width * min(current, self.target) / self.target) \
                    if self.target else self.width
                bar = f"{current:>{digits}}/{self.target} " + "━" * done + "─" * (self.width - done)
            else:
                bar = f"{current}/Unknown"
            if finalize:
                timing = f" {_fmt_time(elapsed)} {self._per_unit(elapsed, current)}"
            else:
                per = elapsed / current if current else 0.0
                eta = per * (self.target - current) if self.target else 0.0
                timing = f" {_fmt_time(eta)} {self._per_unit(elapsed, current)}"
            line = bar + timing + self._info()
            pad = " " * max(0, self._prev_len - len(line))
            self._prev_len = len(line)
            sys.stdout.write("\r" + line + pad + ("\n" if finalize else ""))
            sys.stdout.flush()
        elif self.verbose == 2 and finalize and not self._done:
            steps = f"{current}/{self.target}" if self.target is not None else f"{current}"
            sys.stdout.write(f"{steps} - {_fmt_time(elapsed)} - "
                             f"{self._per_unit(elapsed, current)}{self._info()}\n")
            sys.stdout.flush()
        if finalize:
            self._done = True

    def add(self, n: int, values=None) -> None:
        """Advances the bar by ``n`` steps."""
        self.update(self._seen_so_far + n, values)
