"""The typed interface every accelerator backend implements, and the registry that enforces it.

A backend is a class with seven methods that take plain arguments (formats, arrays, scalars)
and return the typed results below; the daemon maps protocol messages onto them and checks
states, shapes and capabilities before it calls. Registering a class refuses it at once if
anything is missing::

    >>> class Half(Backend):
    ...     name = "half"
    ...     def configure(self, cfg): ...
    >>> register("half", Half, capabilities=None)
    Traceback (most recent call last):
    ...
    TypeError: backend 'half' cannot be registered: Half does not implement fetch, load_data, promote, recentre, restore, run_epoch of accel.spec.Backend

The laws an implementation keeps (the conformance suite in ``tests/accel/test_conformance.py``
checks them on every registered backend):

1. **Determinism**: results are a function of the calls made since ``configure``; the random
   bits are LaneRNG's (seed, epoch, lane) streams consumed as ``docs/accelerator.md`` says.
2. **Bit-exactness**: every value equals the reference (emulated) backend's, bit for bit;
   ``ops`` and ``saturations`` equal too.
3. **Refusal without change**: a call that raises :class:`KernelError` leaves the state exactly
   as before (a diverged epoch keeps the offset it started from).
4. **Formats as announced**: the backend accepts every configuration its capabilities admit;
   the daemon never passes it one they refuse.
5. **Restore puts back what fetch gave**: after ``restore`` of a fetched state, ``fetch`` returns
   it again and the next epochs compute the same bits as they did after that fetch (given the
   same recentres and promotes), so a lost accelerator's epoch can be re-run on a new one.
"""
from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from accel.spec.gradstats import UpdateStats
from protocol.formats import FixedFormat, FloatFormat

if TYPE_CHECKING:
    from protocol.capabilities import KernelCapabilities

__all__ = ["Backend", "KernelConfig", "LoadResult", "RecentreResult", "EpochResult", "PromoteResult",
           "OffsetState", "KernelError", "register", "INTERFACE", "diverged", "COUNTERS"]


class KernelError(ValueError):
    """The kernel cannot do what was asked (a value its arithmetic refuses, a diverged epoch).

    The daemon answers it with a ``bad_value`` error reply; the backend's state is unchanged.
    """


def diverged(epoch: int, step: int, acc: FloatFormat) -> KernelError:
    """The refusal of an epoch whose update became NaN (law 3: the offset is kept)."""
    return KernelError(f"epoch {epoch} step {step}: the update is NaN: the iteration diverged until "
                       f"the accumulator {acc!r} overflowed (too few offset bits for this problem, or "
                       "too large a step size); the offset keeps its value from before this epoch")


@dataclass(frozen=True)
class KernelConfig:
    """One configuration, formats already parsed and checked against the capabilities."""

    problem: str
    n_samples: int
    n_features: int
    n_outputs: int
    data: FixedFormat | FloatFormat
    offset: FixedFormat
    acc: FloatFormat
    rounding: str
    rbits: int
    lanes: int
    seed: int
    l2: float
    scale: float


@dataclass(frozen=True)
class LoadResult:
    saturations: int                          # data elements clamped into the data format
    ops: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RecentreResult:
    scale: float                              # the stored (rounded) scale s
    ops: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PromoteResult:
    saturations: int                          # offset elements clamped into the new format
    scale: float
    ops: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class EpochResult:
    steps: int
    ops: dict[str, int]
    memory: dict[str, int]
    saturations: int
    # The backend's own measure of the work (compute seconds, cycles): not part of the bits,
    # so it is left out of equality.
    work: dict[str, float] = field(default_factory=dict, compare=False)
    # The epoch's update statistics (accel.spec.gradstats), exact, equal on every backend; None
    # unless run_epoch was asked for them.
    stats: UpdateStats | None = None


@dataclass(frozen=True)
class OffsetState:
    offset: np.ndarray                        # q, n_features × n_outputs, exact in float64
    scale: float
    offset_format: FixedFormat
    counters: dict[str, int]                  # the names of COUNTERS


# What every backend counts since configure (fetch reports them, restore puts them back).
COUNTERS = ("epochs", "steps", "saturations", "recentres", "promotes")


class Backend(ABC):
    """One configured accelerator: state plus the kernels of ``docs/accelerator.md``."""

    name: ClassVar[str]

    @abstractmethod
    def configure(self, cfg: KernelConfig) -> float:
        """Reset everything for ``cfg``; return the stored scale R(cfg.scale)."""

    @abstractmethod
    def load_data(self, start: int, x: np.ndarray, y: np.ndarray) -> LoadResult:
        """Store rows start … start+len(x)−1, x rounded into the data format."""

    @abstractmethod
    def recentre(self, full_grad: np.ndarray, anchor: np.ndarray | None, scale: float | None) -> RecentreResult:
        """New anchor: with ``scale`` q ← 0 on the new grid (HALP), without q_a ← q (LP-SVRG)."""

    @abstractmethod
    def run_epoch(self, algorithm: str, epoch: int, steps: int, step_size: float, batch_size: int,
                  order: np.ndarray, statistics: bool = False) -> EpochResult:
        """``steps`` inner steps of the ``sgd`` or ``svrg`` kernel over ``order``; with
        ``statistics`` the result carries the update statistics (``accel.spec.gradstats``)."""

    @abstractmethod
    def promote(self, offset: FixedFormat, acc: FloatFormat) -> PromoteResult:
        """Move to new offset (and accumulator) formats, re-rounding what is stored."""

    @abstractmethod
    def fetch(self) -> OffsetState:
        """The offset, scale, format and counters."""

    @abstractmethod
    def restore(self, state: OffsetState) -> float:
        """Put back a state ``fetch`` returned (law 5): q ← state.offset on the grid of
        state.offset_format, q_a ← 0, s ← R(state.scale), the counters; return the stored scale.
        The daemon has checked the shape, the format and that q is on its grid."""


INTERFACE = tuple(sorted(Backend.__abstractmethods__))


def register(name: str, cls: type, *, capabilities: "KernelCapabilities | None",
             registry: dict | None = None) -> type:
    """Check that ``cls`` implements the whole interface, then add it to ``registry``.

    Raises TypeError naming every missing method (or a method whose signature differs).
    """
    missing = [m for m in INTERFACE if not callable(getattr(cls, m, None))
               or getattr(getattr(cls, m), "__isabstractmethod__", False)]
    if missing:
        raise TypeError(f"backend {name!r} cannot be registered: {cls.__name__} does not implement "
                        f"{', '.join(missing)} of accel.spec.Backend")
    wrong = [m for m in INTERFACE if list(inspect.signature(getattr(cls, m)).parameters)
             != list(inspect.signature(getattr(Backend, m)).parameters)]
    if wrong:
        raise TypeError(f"backend {name!r} cannot be registered: {cls.__name__}."
                        f"{', '.join(wrong)} take other arguments than accel.spec.Backend's")
    if registry is not None:
        registry[name] = (cls, capabilities)
    return cls
