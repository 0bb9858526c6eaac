"""Input sets that hit every rounding decision of a small format, built from the oracle's values.

    >>> xs = boundary_inputs(FloatFormat(2, 1, specials="finite", overflow="saturate"))
    >>> 0.25 in xs and 6.0 in xs and 7.0 in xs   # a midpoint, max, the tie above max
    True
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from oracle import NAN, INF, fixed_values, float_limits, float_values, pow2
from protocol.formats import FixedFormat


def _magnitudes(fmt) -> list[Fraction]:
    vals = fixed_values(fmt) if isinstance(fmt, FixedFormat) else float_values(fmt)
    return sorted({m for _, (_, m) in vals if m not in (INF, NAN)} | {Fraction(0)})


def boundary_inputs(fmt) -> np.ndarray:
    """float64 inputs: every value, every midpoint, their float64 neighbours, the overflow and
    underflow boundaries, ±0, ±inf and NaN, each with both signs."""
    mags = _magnitudes(fmt)
    if isinstance(fmt, FixedFormat):
        top, step = max(mags), pow2(-fmt.frac_bits)
    else:
        emin, emax, top = float_limits(fmt)
        step = pow2(emax - fmt.man_bits)
    pts = set(mags)
    pts |= {(a + b) / 2 for a, b in zip(mags, mags[1:])}
    smallest = mags[1] if len(mags) > 1 else step
    pts |= {smallest / 2, smallest / 4, smallest * 3 / 4, smallest * 3 / 2}
    pts |= {top + step / 2, top + step, top + step * 3 / 2, top * 2, top * 4, top + top / 2}
    pts |= {top + step / 4, top + step * 3 / 4}
    finite = []
    for p in pts:
        f = float(p)
        if Fraction(f) == p:
            finite += [f, math.nextafter(f, math.inf), math.nextafter(f, 0.0)]
    finite += [1e300, 1.7976931348623157e308, 5e-324]
    pos = np.array(sorted(set(finite)), dtype=np.float64)
    return np.concatenate([pos, -pos, [0.0, -0.0, np.inf, -np.inf, np.nan]])
