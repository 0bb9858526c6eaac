"""Update statistics of an epoch: how the step-7 updates t fall on the offset grid.

Every backend reports them exactly (``docs/accelerator.md``, "Update statistics"); a host's
precision policy decides from them. Over every offset update of the epoch (each element, each
step), with t' = clamp(t, ±2^(IL+1)) (step 7's first act) and FL the offset's fraction bits:

- ``updates``: how many there were (steps × F × C);
- ``vanished``: those with t ≠ 0 that left q as it was (Q(q − t) = q: the update rounded to 0);
- ``update_min``: the smallest |t'| ≠ 0, exactly (0 when every t was 0);
- ``update_max``: the largest |t'|, exactly;
- ``binades``: per binade b = floor(log2 |t'|) + FL of the grid (b = −1: half a grid step up
  to one), how many t ≠ 0 fell in it; every b below :data:`BINADE_FLOOR` counts in that one.

In hardware these are two counters, two magnitude comparators and a counter per binade indexed
by the exponent field of t: no sort, no divide. A tally adds each step's updates::

    >>> from protocol.formats import FixedFormat
    >>> tally = UpdateTally(FixedFormat(1, 3))
    >>> q = np.zeros(4)
    >>> tally.add(np.array([0.0, 0.05, -0.5, 3.0]), q, np.array([0.0, 0.0, 0.5, -2.0]))
    >>> s = tally.result()
    >>> s.updates, s.vanished, s.update_min, s.update_max, s.binades
    (4, 1, 0.05, 3.0, {-2: 1, 2: 1, 4: 1})
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from protocol.formats import FixedFormat

__all__ = ["BINADE_FLOOR", "UpdateStats", "UpdateTally", "binade_slots"]

BINADE_FLOOR = -32   # binades of the grid below this one count in it: 2^-32 steps is nothing


@dataclass(frozen=True)
class UpdateStats:
    """One epoch's update statistics (the module docstring defines each)."""

    updates: int = 0
    vanished: int = 0
    update_min: float = 0.0
    update_max: float = 0.0
    binades: dict[int, int] = field(default_factory=dict)   # b → count, only counts > 0

    @classmethod
    def from_counts(cls, updates: int, vanished: int, update_min: float, update_max: float,
                    counts: np.ndarray) -> "UpdateStats":
        """From a backend's registers: ``counts[k]`` is binade BINADE_FLOOR + k; an
        ``update_min`` of +inf (nothing seen yet) reads as 0."""
        return cls(int(updates), int(vanished), 0.0 if update_min == np.inf else float(update_min),
                   float(update_max), {BINADE_FLOOR + int(k): int(counts[k]) for k in np.flatnonzero(counts)})


def binade_slots(fmt: FixedFormat) -> int:
    """Counters a histogram needs for ``fmt``: binades BINADE_FLOOR … IL + FL + 1 (|t'| ≤ 2^(IL+1))."""
    return fmt.bits + 2 - BINADE_FLOOR


class UpdateTally:
    """The reference's running statistics over one epoch's steps (see the module docstring)."""

    def __init__(self, fmt: FixedFormat) -> None:
        self.fmt, self.bound = fmt, 2.0 ** (fmt.int_bits + 1)
        self.updates = self.vanished = 0
        self.lo, self.hi = np.inf, 0.0
        self.counts = np.zeros(binade_slots(fmt), dtype=np.int64)

    def add(self, t: np.ndarray, q: np.ndarray, rounded: np.ndarray) -> None:
        """One step: its updates ``t``, the offset ``q`` before and ``rounded`` = Q(q − t) before
        the clamp into the offset range (as step 7 computes it)."""
        a = np.abs(np.clip(t, -self.bound, self.bound)).ravel()
        moved = a != 0
        self.updates += a.size
        self.vanished += int(np.count_nonzero(moved & (rounded == q).ravel()))
        if moved.any():
            nz = a[moved]
            self.lo, self.hi = min(self.lo, float(nz.min())), max(self.hi, float(nz.max()))
            b = np.frexp(nz)[1] - 1 + self.fmt.frac_bits      # floor(log2 |t'|) + FL, exact
            self.counts += np.bincount(np.maximum(b, BINADE_FLOOR) - BINADE_FLOOR, minlength=self.counts.size)

    def result(self) -> UpdateStats:
        return UpdateStats.from_counts(self.updates, self.vanished, self.lo, self.hi, self.counts)
