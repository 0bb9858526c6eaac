"""A vectorised exact reference for float formats, for the 10^6-sample checks.

    >>> round_float(np.array([0.3, -1e-9]), parse_format("e4m3fn"), "nearest_even")
    array([ 0.3125, -0.    ])

Independent of accel.numerics' integer kernel: it scales |x| by powers of two (ldexp, exact)
into ulps t, splits t = K + f with floor (exact), and decides on f by float comparisons, which
are exact too. Every step is exact, so it is checked against the Fraction oracle on a sample
(test_numerics_random) and then trusted on millions of inputs.
"""
from __future__ import annotations

import numpy as np

from oracle import float_limits
from protocol.formats import FloatFormat


def ulp_exponent(a: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """Exponent q of the grid step at |x| = a (a > 0 finite)."""
    emin = 1 - fmt.bias
    e = np.frexp(a)[1].astype(np.int64) - 1
    sub = emin - fmt.man_bits if fmt.subnormals else emin
    return np.where(e >= emin, e - fmt.man_bits, sub)


def round_float(x: np.ndarray, fmt: FloatFormat, mode: str, u: np.ndarray | None = None, r: int = 32):
    """Exact rounding of float64 ``x`` into ``fmt``; returns (float64 values, overflow mask)."""
    x = np.asarray(x, dtype=np.float64)
    _, _, fmax_fr = float_limits(fmt)
    fmax = float(fmax_fr)
    neg = np.signbit(x)
    a = np.abs(x)
    fin = np.isfinite(a) & (a > 0)
    q = ulp_exponent(np.where(fin, a, 1.0), fmt)
    t = np.ldexp(np.where(fin, a, 0.0), -q)
    k = np.floor(t)
    f = t - k
    if mode == "nearest_even":
        up = (f > 0.5) | ((f == 0.5) & (np.fmod(k, 2) == 1))
    elif mode == "nearest_away":
        up = f >= 0.5
    elif mode == "toward_zero":
        up = np.zeros(x.shape, bool)
    elif mode == "up":
        up = (f > 0) & ~neg
    elif mode == "down":
        up = (f > 0) & neg
    elif mode == "odd":
        up = (f > 0) & (np.fmod(k, 2) == 0)
    else:
        up = (f > 0) & (np.floor(np.ldexp(f, r)) + u >= 2.0**r)
    mag = np.ldexp(k + up, q)
    over = fin & (mag > fmax)
    toward_zero = mode in ("toward_zero", "odd")
    if fmt.overflow == "saturate" or toward_zero:
        ovf = np.full(x.shape, fmax)
    elif fmt.overflow == "inf":
        ovf = np.full(x.shape, np.inf)
    else:
        ovf = np.full(x.shape, np.nan)
    if mode in ("up", "down"):
        ovf = np.where(neg == (mode == "up"), fmax, ovf)  # directed toward zero: IEEE keeps max
    mag = np.where(over, ovf, mag)
    inf_in = np.isinf(a)
    inf_out = np.inf if fmt.has_inf else (fmax if fmt.overflow == "saturate" else np.nan)
    mag = np.where(inf_in, inf_out, mag)
    mag = np.where(a == 0, 0.0, mag)
    mag = np.where(np.isnan(a), np.nan, mag)
    return np.where(neg, -mag, mag), over | inf_in

