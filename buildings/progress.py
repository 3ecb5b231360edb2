"""Plain-line progress for logs and CI (output not a terminal): no escape codes, one line per
``every`` share of the work with its rate and ETA. :class:`Milestones` decides when a line is due;
:class:`LineBar` is the bar ``buildings predict`` / ``evaluate`` show, and the training callback
``LineProgress`` uses the same milestones per epoch. No Keras here: exported models predict without it."""

from __future__ import annotations

import time

__all__ = ["LineBar", "Milestones", "duration", "rate"]


def rate(count: float, seconds: float, unit: str) -> str:
    """``2.31 images/s``, or ``4.2 s/image`` below one a second (never ``0.0 images/s``)."""
    per_second = count / max(seconds, 1e-9)
    if per_second >= 1 or count == 0:
        return f"{per_second:.2f} {unit}/s"
    return f"{seconds / count:.1f} s/{unit[:-1] if unit.endswith('s') else unit}"


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Milestones:
    """``due(done)`` is true once per ``every`` share of ``length`` (and at the end)."""

    def __init__(self, length: int, every: float = 0.05):
        self.length, self.every = max(length, 1), every
        self.next_share = every

    def due(self, done: int) -> bool:
        share = done / self.length
        if share + 1e-9 < self.next_share and done < self.length:
            return False
        self.next_share = (int(share / self.every + 1e-9) + 1) * self.every
        return True


class LineBar:
    """A progress bar for logs: ``with LineBar(n, "predicting") as bar: bar.update(1)`` prints one
    plain line per ``every`` share of ``n`` with the rate and the ETA."""

    def __init__(self, length: int, label: str, *, unit: str = "images", every: float = 0.05, write=None):
        self.length, self.label, self.unit, self.every = max(length, 1), label, unit, every
        self.write = write or (lambda line: print(line, flush=True))

    def __enter__(self):
        self.start = time.perf_counter()
        self.done = 0
        self.milestones = Milestones(self.length, self.every)
        return self

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.milestones.due(self.done):
            return
        elapsed = time.perf_counter() - self.start
        self.write(f"{self.label} {self.done / self.length:4.0%} ({self.done}/{self.length} {self.unit}), "
                   f"{rate(self.done, elapsed, self.unit)}, "
                   f"ETA {duration(elapsed / self.done * max(self.length - self.done, 0))}")

    def __exit__(self, *exc) -> None:
        return None
