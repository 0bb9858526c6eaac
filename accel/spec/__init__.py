"""Kernel spec v2 in code: the rules every accelerator backend keeps, owned by none of them.

- :mod:`accel.spec.backend`: the typed :class:`Backend` interface, its results, and
  :func:`register`, which refuses a class that misses part of it;
- :mod:`accel.spec.arith`: the accumulator-format ALU (each operation rounded once);
- :mod:`accel.spec.nonlinear`: exp, expm1, σ, softmax and the SVRG responses as fixed
  sequences of those operations (bit-portable: no libm);
- :mod:`accel.spec.counts`: analytic operation counts and memory traffic.
- :mod:`accel.spec.gradstats`: the update statistics every epoch reports.

Format roles, bounds and exactness widths are capabilities (``protocol.capabilities``), so a
host can check them too. ``docs/accelerator.md`` is the prose of this spec. This package
imports nothing heavy at the top, so reading the version or the interface stays cheap.
"""
from .backend import (Backend, EpochResult, KernelConfig, KernelError, LoadResult, OffsetState,
                      PromoteResult, RecentreResult, register)

SPEC_VERSION = (2, 0)

# Offset roundings the spec defines (step 7); a backend may announce fewer.
OFFSET_ROUNDINGS = ("nearest_even", "stochastic")

__all__ = ["SPEC_VERSION", "OFFSET_ROUNDINGS", "Backend", "KernelConfig", "KernelError", "LoadResult",
           "RecentreResult", "PromoteResult", "EpochResult", "OffsetState", "register"]
