"""Bit patterns of format values: ``encode`` values -> unsigned codes, ``decode`` codes -> float64.

    >>> encode(np.array([448.0, -0.0, np.nan]), "e4m3fn")
    array([126, 128, 127], dtype=uint8)
    >>> decode(np.array([0x7C00, 0xFC00, 0x0001]), "fp16").tolist()
    [inf, -inf, 5.960464477539063e-08]
    >>> encode(np.array([-0.5]), "fixed<1,7>")   # two's complement of WL bits
    array([192], dtype=uint8)

Float layout: sign | exponent field (bias per descriptor) | stored mantissa. NaN encodes to the
positive canonical NaN (IEEE: exponent all ones, top mantissa bit set; fn: all ones). With
subnormals off, exponent field 0 decodes to ±0. ``encode`` only takes values of the format
(quantize first): anything else is an error naming the first offending value, never a silent
rounding.
"""
from __future__ import annotations

import numpy as np

from protocol.formats import BlockFormat, FixedFormat, FloatFormat, Format, parse_format

__all__ = ["encode", "decode"]


def _code_dtype(bits: int) -> type:
    return next(t for w, t in ((8, np.uint8), (16, np.uint16), (32, np.uint32), (64, np.uint64)) if bits <= w)


def _element(fmt: Format | str) -> FloatFormat | FixedFormat:
    fmt = parse_format(fmt)
    if isinstance(fmt, BlockFormat):
        raise ValueError(f"{fmt!r} is a block format: encode elements with its element format "
                         f"({fmt.element!r}) after dividing by 2^X from block_exponents()")
    return fmt


def _not_representable(x: np.ndarray, bad: np.ndarray, fmt: Format) -> ValueError:
    first = x[bad][0]
    return ValueError(f"{first!r} is not a value of {fmt!r}; quantize it first")


def encode(x, fmt: Format | str) -> np.ndarray:
    """Bit patterns (uint8/16/32/64 by width) of values that belong to ``fmt``."""
    from .quantize import quantize  # codec and quantize check each other; import late

    fmt = _element(fmt)
    x = np.asarray(x, dtype=np.float64)
    nan = np.isnan(x)
    finite = np.isfinite(x)
    q = quantize(np.where(finite, x, 0.0), fmt)
    bad = finite & (q != x)
    if bad.any():
        raise _not_representable(x, bad, fmt)
    a = np.abs(np.where(finite, x, 0.0))
    if isinstance(fmt, FixedFormat):
        if (~finite).any():
            raise _not_representable(x, ~finite, fmt)
        code = np.rint(np.ldexp(x, fmt.frac_bits)).astype(np.int64)
        return (code & ((1 << fmt.bits) - 1)).astype(_code_dtype(fmt.bits))
    E, M = fmt.exp_bits, fmt.man_bits
    if nan.any() and not (fmt.has_nan and (fmt.specials == "fn" or M > 0)):
        raise ValueError(f"NaN has no encoding in {fmt!r}")
    if np.isinf(x).any() and not fmt.has_inf:
        raise ValueError(f"infinity has no encoding in {fmt!r}; quantize maps it by the overflow rule")
    normal = a >= fmt.min_normal
    e = np.where(normal, np.frexp(a)[1] - 1, fmt.emin)
    field = np.where(normal, e + fmt.bias, 0).astype(np.int64)
    sig = np.ldexp(a, (M - e).astype(np.int64)).astype(np.int64)  # exact: a is on the grid
    mant = np.where(normal, sig - (1 << M), np.where(fmt.subnormals, sig, 0))
    top = (1 << E) - 1
    field = np.where(np.isinf(x), top, field)
    mant = np.where(np.isinf(x), 0, mant)
    if fmt.specials == "fn":
        nan_field, nan_mant = top, (1 << M) - 1
    else:
        nan_field, nan_mant = top, 1 << max(M - 1, 0)
    field = np.where(nan, nan_field, field)
    mant = np.where(nan, nan_mant, mant)
    sign = np.signbit(x) & ~nan
    code = (sign.astype(np.uint64) << np.uint64(E + M)) | (field.astype(np.uint64) << np.uint64(M)) | mant.astype(np.uint64)
    return code.astype(_code_dtype(fmt.bits))


def decode(codes, fmt: Format | str) -> np.ndarray:
    """float64 values of bit patterns (any integer array; only the low ``bits`` bits are used)."""
    fmt = _element(fmt)
    c = np.asarray(codes).astype(np.uint64) & np.uint64((1 << fmt.bits) - 1)
    if isinstance(fmt, FixedFormat):
        v = c.astype(np.int64)
        if fmt.signed:
            v = np.where(v >= 1 << (fmt.bits - 1), v - (1 << fmt.bits), v)
        return np.ldexp(v.astype(np.float64), -fmt.frac_bits)
    E, M = fmt.exp_bits, fmt.man_bits
    sign = (c >> np.uint64(E + M)).astype(bool)
    field = ((c >> np.uint64(M)) & np.uint64((1 << E) - 1)).astype(np.int64)
    mant = (c & np.uint64((1 << M) - 1)).astype(np.int64)
    top = (1 << E) - 1
    sub = np.ldexp(mant.astype(np.float64), fmt.emin - M) if fmt.subnormals else np.zeros(c.shape)
    norm = np.ldexp((mant + (1 << M)).astype(np.float64), np.maximum(field, 1) - fmt.bias - M)
    v = np.where(field == 0, sub, norm)
    if fmt.specials == "ieee":
        v = np.where(field == top, np.where(mant == 0, np.inf, np.nan), v)
    elif fmt.specials == "fn":
        v = np.where((field == top) & (mant == (1 << M) - 1), np.nan, v)
    return np.where(sign, -v, v)
