"""Double-word ("float-float") arithmetic on a low-precision format F.

A double-word number is an unevaluated sum ``hi + lo`` of two F values with
``|lo| <= ulp(hi)/2``; it carries about twice F's precision, so an F datapath can emulate
a wider one when training needs it. Every elementary operation below is one F operation,
rounded once to nearest-even (:func:`accel.numerics.arith.add` / ``mul``), exactly as an F
adder and multiplier without FMA would compute it::

    >>> import numpy as np
    >>> x = to_double_word(np.array([np.pi]), "fp16")
    >>> x                                        # pi ≈ 3.140625 + 0.0009675
    (array([3.140625]), array([0.0009675]))
    >>> z = dw_mul(*x, *x, "fp16")
    >>> float(z[0][0] + z[1][0]), np.pi**2       # fp16 alone: 3.140625² -> 9.867
    (9.86960220336914, 9.869604401089358)

Algorithms (p = F's precision in bits, u = 2^-p):

- :func:`two_sum` (Knuth, 6 ops) and :func:`fast_two_sum` (Dekker, 3 ops, needs
  ``|a| >= |b|`` or a = 0) return ``s = RN(a + b)`` and ``e`` with ``a + b = s + e`` exactly;
- :func:`split` (Veltkamp): ``C = 2^ceil(p/2) + 1``, ``g = RN(C·a)``,
  ``hi = RN(g + RN(a - g))``, ``lo = RN(a - hi)``; hi and lo have at most p - ceil(p/2) and
  ceil(p/2) - 1 significant bits, and ``a = hi + lo``;
- :func:`two_prod` (Dekker, 17 ops): ``p = RN(a·b)``, ``e = RN(RN(RN(RN(ah·bh - p) + ah·bl)
  + al·bh) + al·bl)`` with ``a·b = p + e`` exactly;
- :func:`dw_add`: AccurateDWPlusDW, relative error below 3u²/(1 - 4u); :func:`dw_mul`:
  DWTimesDW1 without FMA, below 7u² (Joldes, Muller, Popescu, "Tight and rigorous error
  bounds for basic building blocks of double-word arithmetic", ACM TOMS 2017, Alg. 6 and 10).

Preconditions (the error-free transforms are exact only inside them; nothing is checked per
element): no overflow anywhere, including ``C·a`` in the split, so factors must stay below
``max_value / C`` (fp16: 65504/65 ≈ 1007); and no underflow of an error term, so the low
words must stay normal: ``|hi| >= 2^(emin + p)`` for sums (fp16: 1/8) and products of
factors whose exponents add to at least ``emin + 2p`` (fp16: 2^8 in total, e.g. both ≥ 1/8
gives products ≥ 2^-6, fine).
"""
from __future__ import annotations

import math

import numpy as np

from protocol.formats import FloatFormat, Format, parse_format

from .arith import add, mul

__all__ = ["two_sum", "fast_two_sum", "split", "two_prod", "dw_add", "dw_mul", "to_double_word"]

Pair = tuple[np.ndarray, np.ndarray]


def _float_format(fmt: "Format | str") -> FloatFormat:
    fmt = parse_format(fmt)
    if not isinstance(fmt, FloatFormat) or fmt.man_bits < 2:
        raise ValueError(f"double-word arithmetic needs a float format with at least 2 mantissa bits "
                         f"(e.g. fp16, bf16, fp16_ibm, fp32); got {fmt!r}")
    return fmt


def _rn(fmt: FloatFormat):
    """The format's adder and multiplier, each rounding once to nearest-even."""
    return (lambda a, b: add(a, b, fmt)), (lambda a, b: mul(a, b, fmt))


def two_sum(a, b, fmt: "Format | str") -> Pair:
    """(s, e) with s = RN(a + b) and a + b = s + e exactly; a, b are F values.

        >>> two_sum(np.array([1.0]), np.array([2.0**-12]), "fp16")
        (array([1.]), array([0.00024414]))
    """
    add_, _ = _rn(_float_format(fmt))
    s = add_(a, b)
    bv = add_(s, -np.asarray(a))
    av = add_(s, -bv)
    return s, add_(add_(a, -av), add_(b, -bv))


def fast_two_sum(a, b, fmt: "Format | str") -> Pair:
    """(s, e) as :func:`two_sum`, in 3 ops, if ``|a| >= |b|`` (or a = 0) elementwise."""
    add_, _ = _rn(_float_format(fmt))
    s = add_(a, b)
    z = add_(s, -np.asarray(a))
    return s, add_(b, -z)


def split(a, fmt: "Format | str") -> Pair:
    """Veltkamp's split of F values into (hi, lo), a = hi + lo, each of about half F's bits.

        >>> split(np.array([1 + 2.0**-10]), "fp16")   # 11 bits -> 5 + 1
        (array([1.]), array([0.00097656]))
    """
    fmt = _float_format(fmt)
    add_, mul_ = _rn(fmt)
    c = 2.0 ** math.ceil((fmt.man_bits + 1) / 2) + 1
    g = mul_(c, a)
    hi = add_(g, add_(a, -g))
    return hi, add_(a, -hi)


def two_prod(a, b, fmt: "Format | str") -> Pair:
    """(p, e) with p = RN(a·b) and a·b = p + e exactly, by splitting (no FMA).

        >>> two_prod(np.array([1 + 2.0**-10]), np.array([1 + 2.0**-10]), "fp16")
        (array([1.00195312]), array([9.53674316e-07]))
    """
    fmt = _float_format(fmt)
    add_, mul_ = _rn(fmt)
    p = mul_(a, b)
    ah, al = split(a, fmt)
    bh, bl = split(b, fmt)
    e = add_(add_(add_(mul_(ah, bh), -p), mul_(ah, bl)), mul_(al, bh))
    return p, add_(e, mul_(al, bl))


def dw_add(xh, xl, yh, yl, fmt: "Format | str") -> Pair:
    """(xh + xl) + (yh + yl) as a double word (AccurateDWPlusDW, 20 ops)."""
    fmt = _float_format(fmt)
    add_, _ = _rn(fmt)
    sh, sl = two_sum(xh, yh, fmt)
    th, tl = two_sum(xl, yl, fmt)
    vh, vl = fast_two_sum(sh, add_(sl, th), fmt)
    return fast_two_sum(vh, add_(tl, vl), fmt)


def dw_mul(xh, xl, yh, yl, fmt: "Format | str") -> Pair:
    """(xh + xl) · (yh + yl) as a double word (DWTimesDW1 without FMA, 24 ops)."""
    fmt = _float_format(fmt)
    add_, mul_ = _rn(fmt)
    ch, cl1 = two_prod(xh, yh, fmt)
    cl2 = add_(mul_(xh, yl), mul_(xl, yh))
    return fast_two_sum(ch, add_(cl1, cl2), fmt)


def to_double_word(x, fmt: "Format | str") -> Pair:
    """Nearest double word to float64 ``x``: hi = RN(x), lo = RN(x - hi), in F."""
    fmt = _float_format(fmt)
    x = np.asarray(x, dtype=np.float64)
    hi = add(x, 0.0, fmt)
    return hi, add(x, -hi, fmt)
