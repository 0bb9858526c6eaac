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
runs over a row of outputs at once (the loops run along N, or along M for Cᵀ = Bᵀ·Aᵀ, and
vectorise; b's rows are padded with zeros to whole vectors), in place in a small block of
accumulators that stays in the L1 cache. The results are rounded into the output's format
(``into``: the layer's role format) as they are written out, as quantize rounds them.

How each add is rounded once, two ways:

- **held narrow** (the common case, e.g. (1,5,2) products into (1,6,9)): when every product
  is itself a value of the accumulator format (checked on the data: significant bits, finest
  step, largest magnitude), both operands of every add are accumulator values. If a native
  float type of precision P ≥ 2p + 2 (p: the accumulator's) holds them (float32: fp16,
  fp16_ibm; float64: bf16, fp32), the native add followed by one nearest-even rounding is
  then the correctly rounded add (Figueroa, "When is double rounding innocuous?", SIGNUM
  Newsletter 30(3), 1995). A product is exact in the native type, so a fused multiply-add
  gives that same native sum. Values are held scaled by 2^s, the accumulator's largest
  binade moved onto the native type's (one operand carries the scale, exactly), and rounded
  on their bit patterns (adding 2^(t−1) − 1 + the kept lsb below the kept bits, t the
  dropped bits). A sum whose rounding passes the accumulator's largest value then becomes
  the native infinity, which every later add keeps infinite or NaN: a product with such an
  output is redone by the exact rounding, so no add needs an overflow test. A sum below
  the normal range lies on the accumulator's finest grid and is exact;
- **exact** (anything else): the float64 sum is made exact by TwoSum and rounded to odd
  (:mod:`accel.numerics.arith`), then rounded to nearest-even as quantize does, element by
  element.

:func:`matmul_swamped` also counts the *swamped* adds: both operands nonzero and the rounded
sum equal to one of them, i.e. the other was lost entirely (the diagnostic of Wang et al.
2018 for long sums in a narrow accumulator). The scale changes none of these comparisons.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from accel.backends.compiled import _acc_token, _round_float
from accel.numerics import quantize
from accel.numerics.arith import _sum_to_odd
from protocol.formats import FloatFormat, Format

__all__ = ["matmul", "matmul_swamped"]

# Native types a narrow accumulator can be held in: (dtype, precision P, emin, emax, smallest step).
_NATIVE = ((np.float32, 24, -126, 127, -149), (np.float64, 53, -1022, 1023, -1074))


@njit(cache=True)
def _stats(x: np.ndarray) -> tuple[bool, int, int, int]:
    """On the float64 bit patterns of x (1-D): (all finite and none subnormal, the largest and the smallest
    exponent field of a nonzero value, the OR of all stored mantissas).

    The OR's lowest set bit is the finest mantissa bit any value uses, so the values have at
    most 53 − (its trailing zeros) significant bits. Integer reductions only: it vectorises."""
    bits = x.view(np.int64)
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


def _flat(x: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(x's elements as a 1-D array, its element strides): a view when x is C or F ordered."""
    if not (x.flags.c_contiguous or x.flags.f_contiguous):
        x = np.ascontiguousarray(x)
    return x.ravel(order="K"), x.strides[0] // x.itemsize, x.strides[1] // x.itemsize


def _operand(x: np.ndarray) -> tuple[int, int, int] | None:
    """(most significant bits of a value, a lower bound on the exponent of any value's lsb,
    an exponent T with every magnitude below 2^T), or None when a value is not finite or is
    float64-subnormal."""
    ok, top, low, ors = _stats(_flat(x)[0])
    if not ok:
        return None
    if top == 0:                                 # all zero
        return 1, 1 << 20, -(1 << 20)
    sig = 53 - ((ors & -ors).bit_length() - 1 if ors else 52)
    return sig, int(low) - 1023 - (sig - 1), int(top) - 1022


def _narrow_plan(ra, rb, acc: FloatFormat) -> tuple[type, int, int] | None:
    """(native dtype, scale exponent of a, of b) to hold the sums narrow, scaled by 2^s (see
    the module docstring), from :func:`_operand` of both operands; None: round exactly."""
    if ra is None or rb is None:
        return None
    (sa, la, ta), (sb, lb, tb) = ra, rb
    p = acc.man_bits + 1
    qsub = acc.emin - (acc.man_bits if acc.subnormals else 0)
    standard_top = acc.max_value == math.ldexp(2.0 - 2.0 ** -acc.man_bits, acc.emax)   # no "fn" top code
    # ta + tb <= emax: every product is below 2^emax <= max_value.
    if not (sa + sb <= p and la + lb >= qsub and ta + tb <= acc.emax and standard_top):
        return None
    for dtype, prec, emin, emax, lowest in _NATIVE:
        # The accumulator's top binade onto the native one. The native range is also asked to
        # hold twice the accumulator's largest value (bf16 stays in float64, as before scaling).
        s = emax - acc.emax
        if prec < 2 * p + 2 or acc.emin + s < emin or s < 1:
            continue
        # Scaled by 2^scale, an operand stays on the native grid and below its infinity.
        a_takes, b_takes = ([low + scale >= lowest and top + scale <= emax + 1 for scale in (0, s)]
                            for low, top in ((la, ta), (lb, tb)))
        if a_takes[1] and b_takes[0]:
            return dtype, s, 0
        if a_takes[0] and b_takes[1]:
            return dtype, 0, s
    return None


def _held_type(a: np.ndarray, b: np.ndarray, acc: FloatFormat):
    """The native dtype the sums of a·b can be held in (see the module docstring), or None."""
    plan = _narrow_plan(_operand(a), _operand(b), acc)
    return None if plan is None else plan[0]


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


def _nearest(u, how):
    """The held sum's bit pattern u rounded to nearest-even in the accumulator's precision, in
    compiled code: (u + 2^(t−1) − 1 + the kept lsb) with the t low bits cleared, ``how`` =
    (t, 2^(t−1) − 1, the mask of the kept bits)."""
    raise NotImplementedError("_nearest is resolved at compile time")


@overload(_nearest)
def _nearest_impl(u, how):
    # Every step is cast back to u's width (numba widens to 64 bits) and shifts by
    # np.right_shift, which keeps it: the loops then vectorise on 32-bit lanes for float32.
    t = np.int32 if u.bitwidth == 32 else np.int64
    return lambda u, how: t(t(u + t(how[1] + t(np.right_shift(u, t(how[0])) & t(1)))) & t(how[2]))


@njit(cache=True)
def _exact_sum(x, y, rd):
    """R(x + y) for float64 x, y: the sum made exact, rounded once (fp64: the float64 sum)."""
    man_bits, emin, qsub, max_value, ovf, has_inf = rd
    if man_bits == 52:
        return x + y
    return _round_float(_sum_to_odd(x, y), man_bits, emin, qsub, max_value, ovf, has_inf)


def _sum(old, p, how):
    """R(old + p), in compiled code: held narrow when ``how`` is the bit rounding's three
    integers (:func:`_nearest`), made exact when it is the format's parameters (:func:`_exact_sum`).
    Tuples, passed by value: no store to the accumulators can alias them, so the loops hoist them."""
    raise NotImplementedError("_sum is resolved at compile time")


def _narrow(how) -> bool:
    """Whether ``how`` holds the sums narrow (:func:`_sum`), in compiled code: a constant."""
    raise NotImplementedError("_narrow is resolved at compile time")


def _narrow_type(how) -> bool:
    """Whether the numba type of ``how`` is the narrow rounding's (three integers)."""
    return isinstance(how, types.UniTuple) and isinstance(how.dtype, types.Integer)


@overload(_narrow, inline="always")
def _narrow_impl(how):
    narrow = _narrow_type(how)
    return lambda how: narrow


@overload(_sum)
def _sum_impl(old, p, how):
    if _narrow_type(how):
        return lambda old, p, how: _reinterpret(_nearest(_reinterpret(old + p), how))
    return lambda old, p, how: _exact_sum(old, p, how)


@njit(cache=True, inline="always")
def _lost(old, p, new) -> bool:
    """Whether an add was swamped: both operands nonzero and the rounded sum one of them."""
    return (old != 0) & (p != 0) & ((new == old) | (new == p))


def _lane_int(v, like):
    """v as the integer as wide as the float ``like``, in compiled code: a count kept in the
    lanes' width (numba widens integer sums to 64 bits, and a float sum would not vectorise)."""
    raise NotImplementedError("_lane_int is resolved at compile time")


@overload(_lane_int, inline="always")
def _lane_int_impl(v, like):
    if like.bitwidth == 32:
        return lambda v, like: np.int32(v)
    return lambda v, like: np.int64(v)


# Both loops below index their arrays in place (a view per row would cost a reference count
# update, more than the adds of a short row); the column index is unsigned, so there are no
# negative-index checks and the loops vectorise, w being a multiple of the vector width.

@njit(cache=True, fastmath={"contract"})
def _steps(acc, a, a_m, a_k, a_scale, m0, b, k0, k1, n0, w, how, count):
    """Steps k = k0 … k1 − 1 of the order for rows m0 … of the output, columns n0 … n0 + w − 1:
    acc[i, n] = R(acc[i, n] + a[m0 + i, k]·b[k, n0 + n]); returns its swamped adds if ``count``.
    A product is exact (held narrow or in float64), so a multiply-add may fuse: ``contract``,
    no other fast-math (:func:`_exact_sum`, compiled apart, keeps its own flags).

    Counting, held narrow (finite values), a step with a zero a element is skipped: it adds
    ±0 to accumulators that are never −0 (they start at +0, and a sum is −0 only when both of
    its operands are), which leaves them as they are and swamps nothing. Post-ReLU
    activations are about half zeros; the plain loop is too cheap to pay for the branch (an
    unpredictable one costs about what it saves), the counting one is not."""
    dtype = acc.dtype.type
    at = np.uint64(n0)
    swamped = 0
    for k in range(k0, k1):
        for i in range(acc.shape[0]):
            av = dtype(a[(m0 + i) * a_m + k * a_k] * a_scale)
            if count and av == 0 and _narrow(how):
                continue
            if count:
                lost = _lane_int(0, av)
                for n in range(np.uint64(w)):
                    old, p = acc[i, n], av * b[k, at + n]
                    acc[i, n] = new = _sum(old, p, how)
                    lost = _lane_int(lost + _lane_int(_lost(old, p, new), av), av)
                swamped += lost
            else:
                for n in range(np.uint64(w)):
                    acc[i, n] = _sum(acc[i, n], av * b[k, at + n], how)
    return swamped


@njit(cache=True)
def _fold(total, part, w, how, count):
    """total[i, n] = R(total[i, n] + part[i, n]): a chunk's partials into the second
    accumulator; returns its swamped adds if ``count``."""
    swamped = 0
    for i in range(total.shape[0]):
        for n in range(np.uint64(w)):
            old, p = total[i, n], part[i, n]
            total[i, n] = new = _sum(old, p, how)
            if count:
                swamped += _lost(old, p, new)
    return swamped


@njit(cache=True, inline="always")
def _round_bits(v, into):
    """v (float64) rounded once to nearest-even into the output's float format, as quantize
    does: on its bits in the format's normal range, ``into`` = (dropped bits t, 2^(t−1) − 1,
    the mask of the kept bits, the bits of the smallest normal and of the largest value, the
    parameters of :func:`accel.backends.compiled._round_float`), which does the rest (zeros,
    subnormals, overflow, inf, NaN)."""
    t, half, keep, lo, top, rd = into
    u = np.float64(v).view(np.int64)
    a = u & np.int64(0x7FFF_FFFF_FFFF_FFFF)
    r = (a + half + ((a >> t) & np.int64(1))) & keep
    if lo <= a < np.int64(0x7FF0_0000_0000_0000) and r <= top:
        return np.int64(r | (u ^ a)).view(np.float64)
    return _round_float(v, rd[0], rd[1], rd[2], rd[3], rd[4], rd[5])


def _round_out(v, into):
    """v rounded into the output's format (:func:`_round_bits`), or v itself when ``into`` is
    empty, in compiled code."""
    raise NotImplementedError("_round_out is resolved at compile time")


@overload(_round_out, inline="always")
def _round_out_impl(v, into):
    if len(into) == 0:
        return lambda v, into: v
    return lambda v, into: _round_bits(v, into)


# The outputs advance in tiles of _ROWS × _COLS, _BAND steps at a time for all tiles of a band
# of _BAND rows: each row of b is read once for _ROWS dot products, and those _BAND rows of b
# stay cached while the band's tiles use them; a tile's accumulators stay in the L1 cache.
_ROWS, _COLS, _BAND = 8, 256, 64
_LANES = 16          # b's rows are padded with zeros to a multiple: no scalar remainder loops


@njit(cache=True)
def _gemm(a, a_m, a_k, b, n_all, out, o_m, o_n, m_rows, a_scale, out_scale, step, chunked, how, count, into):
    """C = a·b by the chunk rule (module docstring) into ``out``; returns (swamped adds if
    ``count``, whether every output is finite).

    ``a`` (M × K) and ``out`` (M × N, float64) are flat buffers read and written at element
    strides (a_m, a_k) and (o_m, o_n), so either may be a transposed view without a copy;
    ``b`` is K × N in the held type, its rows padded with zeros past N = ``n_all`` (padded
    columns add zeros and are not written). a's elements are multiplied by ``a_scale`` as
    they are read and the outputs by ``out_scale`` as they are written (powers of two: exact),
    then rounded into the output's format by :func:`_round_out` (``into`` empty: not)."""
    k_len, n_pad = b.shape
    cols, band = max(1, min(_COLS, n_pad)), max(1, min(_BAND, m_rows))
    parts = np.zeros((band, cols), dtype=b.dtype)
    totals = np.zeros((band, cols), dtype=b.dtype)
    swamped = 0
    finite = True
    for n0 in range(0, n_pad, cols):
        w = min(n_pad, n0 + cols) - n0
        for b0 in range(0, m_rows, band):
            rows = min(m_rows, b0 + band) - b0
            totals[:] = 0.0
            for c0 in range(0, k_len, step):
                c1 = min(k_len, c0 + step)
                parts[:] = 0.0
                for k0 in range(c0, c1, _BAND):                # a long chunk (or none) in cached pieces
                    for r0 in range(0, rows, _ROWS):
                        swamped += _steps(parts[r0:min(rows, r0 + _ROWS)], a, a_m, a_k, a_scale, b0 + r0, b,
                                          k0, min(c1, k0 + _BAND), n0, w, how, count)
                if chunked:
                    swamped += _fold(totals[:rows], parts[:rows], w, how, count)
                else:
                    totals[:] = parts
            for i in range(rows):
                for j in range(min(w, n_all - n0)):
                    v = np.float64(totals[i, j]) * out_scale
                    finite &= math.isfinite(v)
                    out[(b0 + i) * o_m + (n0 + j) * o_n] = _round_out(v, into)
    return swamped, finite


@njit(cache=True)
def _held_copy(src, s_m, s_n, n, scale, dst):
    """dst[:, :n] = src·scale (a power of two, exact) in dst's type, dst[:, n:] = 0; src a
    flat buffer read at element strides (s_m, s_n), as :func:`_gemm` reads a. In tiles of
    32 × 32, so that a transposed src is read a cache line at a time."""
    dst[:, n:] = 0.0
    for i0 in range(0, dst.shape[0], 32):
        for j0 in range(0, n, 32):
            for i in range(i0, min(dst.shape[0], i0 + 32)):
                for j in range(j0, min(n, j0 + 32)):
                    dst[i, j] = src[i * s_m + j * s_n] * scale


def _cost(m: int, k: int, n: int, copied: np.ndarray) -> int:
    """A rough cost, in vector lanes, of the product run along n: m·k steps of n lanes (padded)
    plus about one vector of overhead each, and the copy of ``copied`` into b's layout (about
    5 lanes an element, 12 when it has to be transposed)."""
    row_major = copied.strides[1] == copied.itemsize or copied.shape[1] <= 1
    return m * k * (-(-n // _LANES) * _LANES + _LANES) + copied.size * (5 if row_major else 12)


def _rounding(fmt: FloatFormat) -> tuple:
    """The parameters of :func:`accel.backends.compiled._round_float` for ``fmt``."""
    rd = _acc_token(fmt)[0]
    if not isinstance(rd, tuple):          # fp32, fp64: the same rounding by their parameters
        rd = (fmt.man_bits, fmt.emin, fmt.emin - fmt.man_bits, fmt.max_value, 0, fmt.has_inf)
    return rd


def _output(into: Format | None, acc: FloatFormat) -> tuple | None:
    """:func:`_gemm`'s ``into`` for results rounded into ``into``: () when they stay acc values,
    None when quantize rounds them afterwards (a fixed format)."""
    if into is None or into == acc:
        return ()
    if not isinstance(into, FloatFormat):
        return None
    t = min(max(52 - into.man_bits, 1), 52)
    # On the bits only with 0 < man_bits < 52: with none, ties go to the even significand, not
    # to the even exponent field that the bit trick would pick (as in quantize's fast path).
    lo = into.min_normal if 0 < into.man_bits < 52 else np.inf
    lo_bits, top_bits = (int(v) for v in np.array([lo, into.max_value]).view(np.int64))
    return (t, (1 << (t - 1)) - 1, ~((1 << t) - 1), lo_bits, top_bits, _rounding(into))


def _run(a: np.ndarray, b: np.ndarray, acc: FloatFormat, chunk: int | None, count: bool, into: Format | None):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"cannot multiply shapes {a.shape} and {b.shape}")
    (m, k), n = a.shape, b.shape[1]
    rounded = _output(into, acc)
    step = max(1, min(chunk, k) if chunk else k)
    plan = _narrow_plan(_operand(a), _operand(b), acc)
    # The loops run along the rows of b, or of aᵀ for Cᵀ = bᵀ·aᵀ (each output's terms and their
    # order are the same; a product does not depend on its operands' order): the cheaper way.
    flip = _cost(n, k, m, a.T) < _cost(m, k, n, b)
    out = np.empty((m, n))
    x, y, o = (b.T, a.T, out.T) if flip else (a, b, out)
    (xf, x_m, x_k), (of, o_m, o_n), (yf, y_m, y_n) = _flat(x), _flat(o), _flat(y)
    padded = (y.shape[0], -(-y.shape[1] // _LANES) * _LANES)
    if plan is not None:
        dtype, sa, sb = plan
        sx, sy = (sb, sa) if flip else (sa, sb)
        ints = np.int32 if dtype == np.float32 else np.int64
        t = np.finfo(dtype).nmant - acc.man_bits
        how = (ints(t), ints((1 << (t - 1)) - 1), ints(~((1 << t) - 1)))
        held = np.empty(padded, dtype=dtype)
        _held_copy(yf, y_m, y_n, y.shape[1], 2.0 ** sy, held)
        swamped, finite = _gemm(xf, x_m, x_k, held, y.shape[1], of, o_m, o_n, x.shape[0], 2.0 ** sx,
                                2.0 ** -(sx + sy), step, bool(chunk), how, count, rounded or ())
    if plan is None or not finite:
        # Exact rounding: no narrow plan, or a sum passed the accumulator's range (module docstring).
        held = np.empty(padded)
        _held_copy(yf, y_m, y_n, y.shape[1], 1.0, held)
        swamped, _ = _gemm(xf, x_m, x_k, held, y.shape[1], of, o_m, o_n, x.shape[0], 1.0, 1.0, step, bool(chunk),
                           _rounding(acc), count, rounded or ())
    return (out if rounded is not None else quantize(out, into)), int(swamped)


def matmul(a: np.ndarray, b: np.ndarray, acc: FloatFormat, chunk: int | None, into: Format | None = None) -> np.ndarray:
    """C = a·b (M × K times K × N) as :func:`accel.spec.layer.matmul` computes it, float64:
    rounded into ``into`` as the sums are written out (None: acc values)."""
    return _run(a, b, acc, chunk, False, into)[0]


def matmul_swamped(a: np.ndarray, b: np.ndarray, acc: FloatFormat, chunk: int | None,
                   into: Format | None = None) -> tuple[np.ndarray, int]:
    """(:func:`matmul`, the number of swamped adds among its M·N·(K + chunks) adds)."""
    return _run(a, b, acc, chunk, True, into)
