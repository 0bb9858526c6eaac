"""The layer kernel's dense product compiled (numba), bit for bit :func:`accel.spec.layer.matmul`.

    >>> import numpy as np
    >>> from accel.spec import layer
    >>> f = layer.RECIPES["fp8-ibm"]
    >>> X, W = np.array([[1.0, 2.0, 3.0]]), np.array([[0.5], [0.25], [0.125]])
    >>> layer.dense_forward(X, W, f, gemm=matmul)          # the reference's bits
    array([[1.5]])
    >>> matmul_swamped(np.ones((1, 4096)), np.ones((4096, 1)), f.acc, None)
    (array([[1024.]]), 3072)

Every layer function of :mod:`accel.spec.layer` takes the product as ``gemm``; this module
provides it. The order is the reference's: for each output, products k = 0, 1, … into a
chunk accumulator cleared to +0, each add rounded once to nearest-even in the accumulator
format; the chunk partials into a second accumulator cleared to +0. Each step of that order
runs over a whole row of outputs at once (the loops run along N and vectorise).

How each add is rounded once, two ways:

- **held narrow** (the common case, e.g. (1,5,2) products into (1,6,9)): when every product
  is itself a value of the accumulator format (checked on the data: significant bits, finest
  step, largest magnitude), both operands of every add are accumulator values. If a native
  float type of precision P ≥ 2p + 2 (p: the accumulator's) holds twice the accumulator's
  largest value (float32: fp16, fp16_ibm; float64: bf16, fp32), the native add followed by
  one nearest-even rounding is then the correctly rounded add (Figueroa, "When is double
  rounding innocuous?", SIGNUM Newsletter 30(3), 1995). Values are held in that type and
  rounded on their bit patterns (adding 2^(s−1) − 1 + the kept lsb below the kept bits).
  A sum below the normal range lies on the accumulator's finest grid and is exact; an
  overflowing one is marked and finished by the exact scalar rounding;
- **exact** (anything else): the float64 sum is made exact by TwoSum and rounded to odd
  (:mod:`accel.numerics.arith`), then rounded to nearest-even as quantize does, element by
  element.

:func:`matmul_swamped` also counts the *swamped* adds: both operands nonzero and the rounded
sum equal to one of them, i.e. the other was lost entirely (the diagnostic of Wang et al.
2018 for long sums in a narrow accumulator).
"""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from accel.backends.compiled import _acc_token, _round_float
from accel.numerics.arith import _sum_to_odd
from protocol.formats import FloatFormat

__all__ = ["matmul", "matmul_swamped"]

# Native types a narrow accumulator can be held in: (dtype, precision P, emin, emax, smallest step).
_NATIVE = ((np.float32, 24, -126, 127, -149), (np.float64, 53, -1022, 1023, -1074))


@njit(cache=True)
def _stats(x: np.ndarray) -> tuple[bool, int, int, int]:
    """On x's float64 bit patterns: (all finite and none subnormal, the largest and the smallest
    exponent field of a nonzero value, the OR of all stored mantissas).

    The OR's lowest set bit is the finest mantissa bit any value uses, so the values have at
    most 53 − (its trailing zeros) significant bits. Integer reductions only: it vectorises."""
    bits = x.ravel().view(np.int64)
    mask52 = np.int64((1 << 52) - 1)
    top, low, ors, bad = np.int64(0), np.int64(2047), np.int64(0), False
    for i in range(np.uint64(bits.shape[0])):
        u = bits[i]
        e = (u >> np.int64(52)) & np.int64(0x7FF)
        m = u & mask52
        bad |= (e == np.int64(0x7FF)) | ((e == np.int64(0)) & (m != np.int64(0)))
        nonzero = (e != np.int64(0))
        top = max(top, e)
        low = min(low, e if nonzero else np.int64(2047))
        ors |= m
    return not bad, top, low, ors


def _operand(x: np.ndarray) -> tuple[int, int, float] | None:
    """(most significant bits of a value, a lower bound on the exponent of any value's lsb,
    the largest magnitude), or None when a value is not finite or is float64-subnormal."""
    ok, top, low, ors = _stats(x)
    if not ok:
        return None
    if top == 0:                                 # all zero
        return 1, 1 << 20, 0.0
    sig = 53 - ((ors & -ors).bit_length() - 1 if ors else 52)
    return sig, int(low) - 1023 - (sig - 1), 2.0 ** (int(top) - 1022)


def _held_type(a: np.ndarray, b: np.ndarray, acc: FloatFormat):
    """The native dtype the sums can be held in (see the module docstring), or None."""
    ra, rb = _operand(a), _operand(b)
    if ra is None or rb is None:
        return None
    (sa, la, ta), (sb, lb, tb) = ra, rb
    p = acc.man_bits + 1
    qsub = acc.emin - (acc.man_bits if acc.subnormals else 0)
    if not (sa + sb <= p and la + lb >= qsub and ta * tb <= acc.max_value):
        return None
    for dtype, prec, emin, emax, lowest in _NATIVE:
        fits = acc.emin >= emin and acc.emax < emax and qsub >= lowest
        if prec >= 2 * p + 2 and fits and max(ta, tb) <= 2.0 ** emax and min(la, lb) >= lowest:
            return dtype
    return None


def _reinterpret(v):
    """The same bits as the other type of a pair, in compiled code: float32 ↔ int32, float64 ↔ int64."""
    raise NotImplementedError("_reinterpret is resolved at compile time")


@overload(_reinterpret)
def _reinterpret_impl(v):
    if isinstance(v, types.Float):
        if v.bitwidth == 32:
            return lambda v: np.float32(v).view(np.int32)
        return lambda v: np.float64(v).view(np.int64)
    if v.bitwidth == 32:
        return lambda v: np.int32(v).view(np.float32)
    return lambda v: np.int64(v).view(np.float64)


@njit(cache=True, inline="always")
def _add_row_narrow(src, dst, av, brow, rp, rd):
    """dst[n] = R(src[n] + av·brow[n]) for accumulator values held narrow (float32 or float64).

    Nearest-even on the sum's bit pattern u: (u + 2^(s−1) − 1 + lsb) with the s low bits
    cleared, s = the held type's mantissa bits − the accumulator's. Every operand lies on the
    accumulator's finest grid, so a sum below its normal range is exact and passes unchanged;
    only an overflowing one is finished by the exact rounding."""
    t = rp.dtype.type      # int32 or int64: every step is cast back (numba widens to 64 bits)
    lsb, keep, half, top, absmask, zero = rp[0], rp[1], rp[2], rp[3], rp[4], rp[5]
    big = False
    for n in range(np.uint64(src.shape[0])):   # unsigned: no negative-index checks, so it vectorises
        u = _reinterpret(src[n] + av * brow[n])
        r = t(t(u + t(half - t(t(u & lsb) == zero))) & keep)
        big |= t(r & absmask) > top
        dst[n] = _reinterpret(r)
    if big:
        man_bits, emin, qsub, max_value, ovf, has_inf = rd
        for n in range(src.shape[0]):
            if abs(np.float64(dst[n])) > max_value:
                dst[n] = _round_float(np.float64(src[n] + av * brow[n]), man_bits, emin, qsub, max_value, ovf,
                                      has_inf)


@njit(cache=True)
def _add_row_exact(src, dst, av, brow, rd):
    """dst[n] = R(src[n] + av·brow[n]): the float64 sum made exact, rounded once (fp64: the sum)."""
    man_bits, emin, qsub, max_value, ovf, has_inf = rd
    if man_bits == 52:
        for n in range(src.shape[0]):
            dst[n] = src[n] + av * brow[n]
        return
    for n in range(src.shape[0]):
        dst[n] = _round_float(_sum_to_odd(src[n], av * brow[n]), man_bits, emin, qsub, max_value, ovf, has_inf)


@njit(cache=True)
def _swamped(old, av, brow, new):
    """Adds of this row whose operands are both nonzero and whose result equals one of them."""
    count = 0
    for n in range(old.shape[0]):
        p = av * brow[n]
        if old[n] != 0 and p != 0 and (new[n] == old[n] or new[n] == p):
            count += 1
    return count


@njit(cache=True, inline="always")
def _add_row(src, dst, av, brow, narrow, rp, rd, count):
    """One step of the order for a row of accumulators, src → dst; its swamped adds if ``count``."""
    if narrow:
        _add_row_narrow(src, dst, av, brow, rp, rd)
    else:
        _add_row_exact(src, dst, av, brow, rd)
    return _swamped(src, av, brow, dst) if count else 0


# The outputs advance in tiles of _ROWS × _COLS, _BAND steps at a time for all tiles of a band
# of _BAND rows: each row of b is read once for _ROWS dot products, and those _BAND rows of b
# stay cached while the band's tiles use them; a tile's buffers stay in the L1 cache.
_ROWS, _COLS, _BAND = 8, 256, 64


@njit(cache=True)
def _gemm(a, b, step, chunked, narrow, rp, rd, count):
    """C = a·b by the chunk rule (module docstring); returns (C, swamped adds if ``count``).

    Each add reads one buffer and writes the other (so an overflowing sum can be redone);
    every output of a band takes the same number of steps per chunk, so after a chunk they
    all sit in the same buffer. The order of each output's sum is the rule's."""
    m_rows, k_len = a.shape
    n_all = b.shape[1]
    out = np.empty((m_rows, n_all), dtype=a.dtype)
    cols, band = min(_COLS, n_all), min(_BAND, m_rows)
    parts = (np.zeros((band, cols), dtype=a.dtype), np.zeros((band, cols), dtype=a.dtype))
    totals = (np.zeros((band, cols), dtype=a.dtype), np.zeros((band, cols), dtype=a.dtype))
    one = a.dtype.type(1.0)
    swamped = 0
    for n0 in range(0, n_all, cols):
        n1 = min(n_all, n0 + cols)
        w = n1 - n0
        for b0 in range(0, m_rows, band):
            b1 = min(m_rows, b0 + band)
            tot = 0                                       # which of ``totals`` holds the sums
            totals[0][:] = 0.0
            for c0 in range(0, k_len, step):
                c1 = min(k_len, c0 + step)
                parts[0][:] = 0.0
                for k0 in range(c0, c1, _BAND):                # a long chunk (or none) in cached pieces
                    k1 = min(c1, k0 + _BAND)
                    for m0 in range(b0, b1, _ROWS):
                        rows = min(_ROWS, b1 - m0)
                        src, dst = parts[(k0 - c0) % 2], parts[1 - (k0 - c0) % 2]
                        for k in range(k0, k1):
                            brow = b[k, n0:n1]
                            for i in range(m0 - b0, m0 - b0 + rows):
                                swamped += _add_row(src[i, :w], dst[i, :w], a[b0 + i, k], brow, narrow, rp, rd,
                                                    count)
                            src, dst = dst, src
                done = parts[(c1 - c0) % 2]
                if chunked:
                    src, dst = totals[tot], totals[1 - tot]
                    for i in range(b1 - b0):
                        swamped += _add_row(src[i, :w], dst[i, :w], one, done[i, :w], narrow, rp, rd, count)
                    tot = 1 - tot
                else:
                    totals[tot][:] = done
            out[b0:b1, n0:n1] = totals[tot][:b1 - b0, :w]
    return out, swamped


def _run(a: np.ndarray, b: np.ndarray, acc: FloatFormat, chunk: int | None, count: bool):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"cannot multiply shapes {a.shape} and {b.shape}")
    rd = _acc_token(acc)[0]
    if not isinstance(rd, tuple):          # fp32, fp64: the same rounding by their parameters
        rd = (acc.man_bits, acc.emin, acc.emin - acc.man_bits, acc.max_value, 0, acc.has_inf)
    step = max(1, min(chunk, a.shape[1]) if chunk else a.shape[1])
    held = _held_type(a, b, acc)
    dtype = np.float64 if held is None else held
    ints = np.int32 if dtype == np.float32 else np.int64
    rp = np.zeros(6, dtype=ints)
    if held is not None:
        lsb = 1 << (np.finfo(dtype).nmant - acc.man_bits)
        rp[:5] = (lsb, ~(lsb - 1), lsb >> 1, np.array(acc.max_value, dtype=dtype).view(ints), np.iinfo(ints).max)
    # The loops run along N: when M is the longer side, run Cᵀ = bᵀ·aᵀ (each output's terms and
    # their order are the same; a product does not depend on its operands' order).
    flip = a.shape[0] > b.shape[1]
    x, y = (b.T, a.T) if flip else (a, b)
    out, swamped = _gemm(np.ascontiguousarray(x, dtype=dtype), np.ascontiguousarray(y, dtype=dtype), step,
                         bool(chunk), held is not None, rp, rd, count)
    return (out.T if flip else out).astype(np.float64), int(swamped)


def matmul(a: np.ndarray, b: np.ndarray, acc: FloatFormat, chunk: int | None) -> np.ndarray:
    """C = a·b (M × K times K × N) as :func:`accel.spec.layer.matmul` computes it, float64."""
    return _run(a, b, acc, chunk, False)[0]


def matmul_swamped(a: np.ndarray, b: np.ndarray, acc: FloatFormat, chunk: int | None) -> tuple[np.ndarray, int]:
    """(:func:`matmul`, the number of swamped adds among its M·N·(K + chunks) adds)."""
    return _run(a, b, acc, chunk, True)
