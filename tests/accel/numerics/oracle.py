"""Exact reference for quantization: Python ints and fractions.Fraction only, no floating point.

    >>> from fractions import Fraction
    >>> round_exact(Fraction(3, 10), FloatFormat(4, 3, specials="fn", overflow="saturate"), "nearest_even")
    (0, Fraction(5, 16))

It shares no code with accel.numerics and works differently on purpose: floats round the
magnitude on the grid of its binade found by comparing Fractions; fixed point rounds the signed
value from its floor. A value is ``(sign, magnitude)`` with magnitude a Fraction, ``INF`` or
``NAN``; floats enter through ``exact(x)`` (as_integer_ratio is exact).
"""
from __future__ import annotations

from fractions import Fraction

from protocol.formats import FixedFormat, FloatFormat

INF, NAN = "inf", "nan"
HALF = Fraction(1, 2)


def exact(x: float) -> tuple[int, object]:
    """(sign, magnitude) of a Python float, with no rounding."""
    if x != x:
        return (0, NAN)
    sign = 1 if str(x).startswith("-") else 0  # also catches -0.0
    if x in (float("inf"), float("-inf")):
        return (sign, INF)
    n, d = x.as_integer_ratio()
    return (sign, abs(Fraction(n, d)))


def pow2(e: int) -> Fraction:
    return Fraction(2) ** e


def floor_log2(a: Fraction) -> int:
    e = a.numerator.bit_length() - a.denominator.bit_length()
    while pow2(e) > a:
        e -= 1
    while pow2(e + 1) <= a:
        e += 1
    return e


def float_limits(fmt: FloatFormat) -> tuple[int, int, Fraction]:
    """(emin, emax, largest finite value), from the field layout alone."""
    E, M, bias = fmt.exp_bits, fmt.man_bits, fmt.bias
    top_field = 2**E - 1
    if fmt.specials == "ieee" or (fmt.specials == "fn" and M == 0):
        top_field -= 1  # the all-ones exponent holds only specials
    top_mant = 2**M - 1
    if fmt.specials == "fn" and M > 0:
        top_mant -= 1  # S.1..1.1..1 is NaN
    return 1 - bias, top_field - bias, (2**M + top_mant) * pow2(top_field - bias - M)


def float_values(fmt: FloatFormat) -> list[tuple[int, tuple[int, object]]]:
    """Every bit pattern of a float format with its exact value (code, (sign, magnitude))."""
    E, M, bias = fmt.exp_bits, fmt.man_bits, fmt.bias
    out = []
    for code in range(2 ** fmt.bits):
        sign, field, mant = code >> (E + M), (code >> M) & (2**E - 1), code & (2**M - 1)
        if fmt.specials == "ieee" and field == 2**E - 1:
            mag = INF if mant == 0 else NAN
        elif fmt.specials == "fn" and field == 2**E - 1 and mant == 2**M - 1:
            mag = NAN
        elif field == 0:
            mag = mant * pow2(1 - bias - M) if fmt.subnormals else Fraction(0)
        else:
            mag = (2**M + mant) * pow2(field - bias - M)
        out.append((code, (0 if mag == NAN else sign, mag)))
    return out


def fixed_values(fmt: FixedFormat) -> list[tuple[int, tuple[int, object]]]:
    out = []
    for code in range(2 ** fmt.bits):
        v = code - 2**fmt.bits if fmt.signed and code >= 2 ** (fmt.bits - 1) else code
        out.append((code, (1 if v < 0 else 0, abs(Fraction(v)) * pow2(-fmt.frac_bits))))
    return out


def _overflow(sign: int, fmt: FloatFormat, mode: str, fmax: Fraction) -> tuple[int, object]:
    toward_zero = mode in ("toward_zero", "odd") or (mode, sign) in (("up", 1), ("down", 0))
    if fmt.overflow == "saturate" or toward_zero:
        return (sign, fmax)
    return (sign, INF) if fmt.overflow == "inf" else (0, NAN)


def _float(x: tuple[int, object], fmt: FloatFormat, mode: str, u: int | None, r: int):
    sign, a = x
    emin, emax, fmax = float_limits(fmt)
    if a == NAN:
        return (0, NAN), False
    if a == INF:
        if fmt.specials == "ieee":
            return (sign, INF), True
        return ((sign, fmax) if fmt.overflow == "saturate" else (0, NAN)), True
    if a == 0:
        return (sign, Fraction(0)), False
    e = floor_log2(a)
    if e >= emin:
        q = e - fmt.man_bits
    else:
        q = emin - fmt.man_bits if fmt.subnormals else emin
    v = a / pow2(q)
    k = v.numerator // v.denominator
    f = v - k
    if f and mode == "stochastic":
        k += (f * 2**r).__floor__() + u >= 2**r
    elif f and mode == "odd":
        k |= 1
    elif f:
        k += {"nearest_even": f > HALF or (f == HALF and k % 2 == 1),
              "nearest_away": f >= HALF, "toward_zero": False,
              "up": sign == 0, "down": sign == 1}[mode]
    res = k * pow2(q)
    if res > fmax:
        return _overflow(sign, fmt, mode, fmax), True
    return (sign, res), False


def _fixed(x: tuple[int, object], fmt: FixedFormat, mode: str, u: int | None, r: int):
    sign, a = x
    lo, hi = fmt.min_code, fmt.max_code
    if a == NAN:
        return (0, NAN), False
    if a == INF:
        code, over = (lo if sign else hi), True
    else:
        v = (-a if sign else a) * pow2(fmt.frac_bits)  # signed value in units of ε
        fl = v.numerator // v.denominator
        f = v - fl
        if not f:
            code = fl
        elif mode == "stochastic":
            code = fl + ((f * 2**r).__floor__() + u >= 2**r)
        else:
            code = fl + {"nearest_even": f > HALF or (f == HALF and fl % 2 == 1),
                         "nearest_away": f > HALF or (f == HALF and v > 0),
                         "toward_zero": v < 0, "up": True, "down": False,
                         "odd": fl % 2 == 0}[mode]
        over = not lo <= code <= hi
        if over:
            if fmt.overflow == "wrap":
                code = (code - lo) % 2**fmt.bits + lo
            else:
                code = lo if code < lo else hi
    return (1 if code < 0 else 0, abs(Fraction(code)) * pow2(-fmt.frac_bits)), over


def round_exact(x, fmt, mode: str, u: int | None = None, r: int = 32, with_overflow: bool = False):
    """Exact result of rounding ``x`` ((sign, magnitude) or a float) into ``fmt``.

    ``u``: the r-bit random integer U for stochastic rounding. ``with_overflow`` also returns
    whether the overflow rule applied (the saturation count's definition).
    """
    if isinstance(x, float):
        x = exact(x)
    res, over = (_fixed if isinstance(fmt, FixedFormat) else _float)(x, fmt, mode, u, r)
    return (res, over) if with_overflow else res


def stochastic_fraction(x, fmt, r: int) -> int:
    """F = ⌊frac(v)·2^r⌋ for the value v being rounded (float: |x| in ulps; fixed: x/ε)."""
    if isinstance(x, float):
        x = exact(x)
    sign, a = x
    if isinstance(fmt, FixedFormat):
        v = (-a if sign else a) * pow2(fmt.frac_bits)
    else:
        emin = 1 - fmt.bias
        e = floor_log2(a)
        q = e - fmt.man_bits if e >= emin else (emin - fmt.man_bits if fmt.subnormals else emin)
        v = a / pow2(q)
    return ((v - (v.numerator // v.denominator)) * 2**r).__floor__()
