"""Elementary arithmetic rounded once, from the exact result, into a number format.

    >>> import numpy as np
    >>> a, b = np.array([1.0]), np.array([2.0**-11 + 2.0**-63])   # just above fp16's midpoint
    >>> add(a, b, "fp16")            # float64 would round 1 + b onto the midpoint, then to 1
    array([1.00097656])
    >>> mul(np.array([3.0]), np.array([1 / 3]), "e4m3fn", rounding="down")
    array([0.9375])

How the exact result is rounded once without an exact-arithmetic library: the float64
operation is made error-free (TwoSum; TwoProd by Veltkamp/Dekker splitting), and its
rounded value ``s`` and error ``e`` are combined into ``RO(x)``, the float64 rounding of the
exact ``x = s + e`` *to odd* (if ``e != 0`` and ``s`` has an even last bit, step one ulp
towards ``x``). Rounding ``RO(x)`` to a format of precision ``p`` equals rounding ``x``
itself whenever ``p + 2 <= 53`` (Boldo & Melquiond, "Emulation of FMA and correctly
rounded sums: proved algorithms using rounding to odd", IEEE TC 2008), in every
deterministic mode; stochastic rounding with ``r`` random bits also sees the same bits when
``p + r + 1 <= 53``. :func:`check_exact` rejects the combinations outside these bounds
(Figueroa's weaker condition, ``53 >= 2p + 2`` for plain float64-then-round, would cover
only round-to-nearest). For fp64 itself the float64 operation already is the
nearest-even result, and no other mode is offered.

The rounding itself is quantize's: :func:`mul` calls :func:`quantize` on ``RO(x)``, and the
compiled :func:`add_arrays` (the accumulators' adder) calls quantize's general compiled
kernel, so both follow its definitions bit for bit. The float64 kernels are compiled without
fast-math, so no FMA contraction or reassociation: results are the same on every platform.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from protocol.formats import PRESETS, BlockFormat, FixedFormat, Format, parse_format

from .quantize import _POW2, _element_params, _kernel, quantize
from .rng import LaneRNG
from .rounding import DOWN, mode_code, rbits_code

__all__ = ["add", "mul", "check_exact"]

_FLOAT64 = PRESETS["fp64"]
_SPLIT64 = 134217729.0  # 2^27 + 1: Veltkamp's constant for float64
# TwoProd is error-free only if the error term neither underflows nor the split overflows.
_TINY_PRODUCT = 2.0**-969
_HUGE_FACTOR = 2.0**995
_NO_BLOCK_SHIFT = np.zeros(1, dtype=np.int64)
_NO_WORDS = np.zeros(0, dtype=np.uint32)


def _precision(fmt: Format) -> int:
    """Significant bits that the format keeps relative to the leading bit of a value."""
    if isinstance(fmt, FixedFormat):
        return fmt.bits + 1  # unsigned values reach 2^IL: one bit above the word
    return fmt.man_bits + 1


def check_exact(fmt: "Format | str", rounding: str, rbits: int | None = None) -> Format:
    """Return the parsed format if ops rounded into it are exact here; else raise ValueError.

        >>> check_exact("fp16", "stochastic")
        fp16
    """
    fmt = parse_format(fmt)
    mode_code(rounding)  # rejects unknown names, listing the valid ones
    if isinstance(fmt, BlockFormat):
        raise ValueError(f"{fmt!r} is a block format (a shared scale per tensor block); "
                         "an arithmetic result needs a float or fixed format")
    if fmt == _FLOAT64:
        if rounding != "nearest_even":
            raise ValueError("fp64 results are float64 operations, which round to nearest-even "
                             f"only; got rounding={rounding!r}")
        return fmt
    p = _precision(fmt)
    if p + 2 > 53:
        raise ValueError(f"{fmt!r} keeps {p} bits; exact rounding through float64 needs at most 51 "
                         "(use fp64 with nearest_even for float64 itself)")
    if rounding == "stochastic":
        r = rbits_code(rbits)  # quantize's r: rbits, or 32 for None
        if p + r + 1 > 53:
            raise ValueError(f"stochastic rounding into {fmt!r} with {r} random bits needs "
                             f"{p}+{r}+1 <= 53 bits of the exact result; pass rbits <= {52 - p}")
    return fmt


@numba.njit(inline="always")
def _to_odd(s: float, e: float) -> float:
    """Round-to-odd of the exact s + e, where s = RN(s + e) is a float64 and e its error."""
    if e == 0.0 or not math.isfinite(s):
        return s
    m, _ = math.frexp(s)  # |m| in [0.5, 1): m * 2^53 is the integer significand
    if int(abs(m) * 9007199254740992.0) & 1:
        return s
    return np.nextafter(s, math.inf if e > 0 else -math.inf)


@numba.njit(cache=True)
def _sum_to_odd(a: float, b: float) -> float:
    s = a + b
    bv = s - a  # Knuth's TwoSum: a + b == s + e exactly, with no condition on |a|, |b|
    e = (a - (s - bv)) + (b - bv)
    return _to_odd(s, e)


@numba.njit(cache=True)
def _prod_to_odd(a: float, b: float) -> float:
    p = a * b
    if not math.isfinite(p):
        return p
    g = _SPLIT64 * a
    ah = g - (g - a)
    al = a - ah
    g = _SPLIT64 * b
    bh = g - (g - b)
    bl = b - bh
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl  # Dekker's TwoProd error term
    return _to_odd(p, e)


@numba.njit(cache=True)
def _products_to_odd(a, b):
    """RO(a[i]·b[i]) for 1-D arrays, and whether any pair is outside TwoProd's exact range."""
    out = np.empty(a.size)
    outside = False
    for i in range(a.size):
        x, y = a[i], b[i]
        out[i] = _prod_to_odd(x, y)
        if math.isfinite(x) and math.isfinite(y) and x != 0.0 and y != 0.0:
            if abs(x) >= _HUGE_FACTOR or abs(y) >= _HUGE_FACTOR or abs(x * y) < _TINY_PRODUCT:
                outside = True
    return out, outside


def _as_float64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def rounder(fmt: "Format | str", rounding: str, rbits: int | None = None) -> tuple[Format, tuple]:
    """(format, the ``rd`` argument of :func:`add_arrays`), after :func:`check_exact`."""
    fmt = check_exact(fmt, rounding, rbits)
    params = tuple(_element_params(fmt).values())  # positional, in _kernel's order
    return fmt, (fmt == _FLOAT64, mode_code(rounding), rbits_code(rbits), params, _POW2)


@numba.njit(cache=True)
def add_arrays(a, b, words, rd):
    """Compiled ``a + b`` (equal-size 1-D float64 arrays), each rounded once as ``rd`` says.

    ``rd`` comes from :func:`rounder`; ``words``: one uint32 per element for stochastic
    rounding (unused, and may be empty, otherwise). Rounds with quantize's own kernel.
    """
    native, mode, r, fp, pow2 = rd
    n = a.size
    out = np.empty(n)
    if native:
        for i in range(n):
            out[i] = a[i] + b[i]
        return out
    x = np.empty(n)
    for i in range(n):
        x[i] = _sum_to_odd(a[i], b[i])
    _kernel(x, x.view(np.int64), out, words, max(n, 1), _NO_BLOCK_SHIFT, mode, r, 52, 0x7FF, 1023,
            fp[0], fp[1], fp[2], fp[3], fp[4], fp[5], fp[6], fp[7], fp[8], fp[9], fp[10], fp[11], pow2)
    if mode == DOWN:
        for i in range(n):
            # IEEE 754: an exactly zero sum is -0 when rounding down, unless both operands are +0.
            if x[i] == 0.0 and not (a[i] == 0.0 and b[i] == 0.0 and math.copysign(1.0, a[i]) > 0
                                    and math.copysign(1.0, b[i]) > 0):
                out[i] = -0.0
    return out


def words_for(rng, sizes: list[int], rounding: str) -> np.ndarray:
    """The random words for roundings drawn in groups of ``sizes`` (one ``rng.words`` call each).

    ``rng``: a LaneRNG, or a uint32 array holding all ``sum(sizes)`` words in draw order.
    Deterministic modes draw nothing.
    """
    if rounding != "stochastic":
        return _NO_WORDS
    total = sum(sizes)
    if isinstance(rng, LaneRNG):
        return np.concatenate([rng.words(n) for n in sizes]) if sizes else _NO_WORDS
    if isinstance(rng, np.ndarray) and rng.dtype == np.uint32 and rng.size == total:
        return np.ascontiguousarray(rng).ravel()
    raise ValueError("stochastic rounding needs rng=LaneRNG(...) or a uint32 array with one word per "
                     f"rounding ({total}); got {type(rng).__name__}")


def add(a, b, fmt: "Format | str", rounding: str = "nearest_even", rng=None,
        rbits: int | None = None) -> np.ndarray:
    """``a + b`` (float64 arrays, broadcast) rounded once into ``fmt``; returns float64.

    Signed zeros follow IEEE 754: an exactly zero sum of nonzero operands is +0, or -0 when
    rounding down. Stochastic rounding draws one word per element of the broadcast result
    (C order) from ``rng``: a LaneRNG or a uint32 array of that size; ``rbits`` as in
    :func:`quantize`.
    """
    _, rd = rounder(fmt, rounding, rbits)
    a, b = np.broadcast_arrays(_as_float64(a), _as_float64(b))
    words = words_for(rng, [a.size], rounding)
    out = add_arrays(np.ascontiguousarray(a).ravel(), np.ascontiguousarray(b).ravel(), words, rd)
    return out.reshape(a.shape)


def mul(a, b, fmt: "Format | str", rounding: str = "nearest_even", rng=None,
        rbits: int | None = None) -> np.ndarray:
    """``a * b`` (float64 arrays, broadcast) rounded once into ``fmt``; returns float64.

    Exact for finite factors below 2^995 whose nonzero products are at least 2^-969 (the
    float64 TwoProd conditions; values of any format up to fp32 are far inside); other
    inputs raise ValueError. Infinite and NaN factors follow float64 and ``quantize``.
    """
    fmt = check_exact(fmt, rounding, rbits)
    a, b = np.broadcast_arrays(_as_float64(a), _as_float64(b))
    if fmt == _FLOAT64:
        return a * b
    x, outside = _products_to_odd(np.ascontiguousarray(a).ravel(), np.ascontiguousarray(b).ravel())
    if outside:
        raise ValueError("mul: a factor beyond 2^995 or a nonzero product below 2^-969 is outside "
                         "the exact float64 TwoProd range")
    return quantize(x.reshape(a.shape), fmt, rounding=rounding, rng=rng, rbits=rbits)
