"""Quantization into float, fixed and block formats, rounded once from the exact input.

    >>> import numpy as np
    >>> quantize(np.array([0.3, 500.0, -1e-9]), "e4m3fn").tolist()
    [0.3125, 448.0, -0.0]
    >>> quantize(np.array([0.3]), "fixed<1,7>", rounding="stochastic", rng=LaneRNG(1, 0, 8))
    array([0.296875])
    >>> quantize(np.array([1e6, 2.0]), "fp16", return_saturated=True)
    (array([inf,  2.]), 1)

How (docs/numerics.md has the exact definitions): the input's bit pattern gives |x| = sig·2^lsb
with an integer ``sig`` of at most 53 bits. The target grid at x has step 2^q (float: q = the
exponent of x minus the mantissa bits, floored at the subnormal step; fixed: q = -FL; blocks add
the block's shared exponent). K = sig >> (q - lsb) and the discarded bits decide the rounding,
all in integers, so no intermediate format ever rounds (``_one``, the general path, decides
every family and mode). A branch-free fast path handles the common case first: a float
target's normal range rounded on the input's own bit pattern, fixed point in exact float64;
whatever it cannot decide (subnormals, overflow, specials) it marks for ``_one``. float32 input
is decoded from its own bits and the result stored back as float32.
"""
from __future__ import annotations

import sys
from functools import lru_cache

import numpy as np
from numba import njit

from protocol.formats import BlockFormat, FixedFormat, FloatFormat, Format, parse_format

from .rng import LaneRNG, draw_rounds
from .rounding import DOWN, NEAREST_AWAY, NEAREST_EVEN, ODD, STOCHASTIC, TOWARD_ZERO, UP, mode_code, rbits_code

__all__ = ["quantize", "block_exponents"]

# 2^q for every q a float64 can hold, so the kernel builds K·2^q by one exact multiplication.
_POW2 = np.ldexp(1.0, np.arange(-1074, 1024)).astype(np.float64)
_POW2_OFFSET = 1074
_NO_BLOCK_EXPONENT = np.zeros(1, dtype=np.int64)

# What "infinity" becomes when a float result overflows (the descriptor's overflow rule).
_OVF_INF, _OVF_SAT, _OVF_NAN = 0, 1, 2
_OVF_CODES = {"inf": _OVF_INF, "saturate": _OVF_SAT, "nan": _OVF_NAN}

# Input decoding: (view dtype, stored mantissa bits, exponent field mask, bias).
_INPUT_LAYOUT = {np.dtype(np.float64): (np.int64, 52, 0x7FF, 1023),
                 np.dtype(np.float32): (np.int32, 23, 0xFF, 127)}


@njit(cache=True)
def _bit_length(v: int) -> int:
    n = 0
    while v:
        v >>= 1
        n += 1
    return n


@njit(cache=True, inline="always")
def _one(xv, u, word, mode, r, in_mb, in_emask, in_bias,
         is_fixed, man_bits, emin_b, qsub_b, maxval_b, has_inf, ovf,
         qfix_b, max_code, min_code, wl, wrap, pow2):
    """One element: x's value ``xv`` and its bits ``u`` (signed int64) -> (result, overflowed)."""
    neg = u < 0
    ex = (u >> in_mb) & in_emask
    frac = u & ((np.int64(1) << in_mb) - 1)
    if ex == in_emask:  # inf or NaN
        if frac != 0:
            return np.nan, 0
        if is_fixed:
            return (min_code if neg else max_code) * pow2[qfix_b + _POW2_OFFSET], 1
        if has_inf:
            return (-np.inf if neg else np.inf), 1
        if ovf == _OVF_NAN:
            return np.nan, 1
        return (-maxval_b if neg else maxval_b), 1
    if ex == 0:
        if frac == 0:
            return (0.0 if (is_fixed or not neg) else -0.0), 0
        sig = frac
        lsb = 1 - in_bias - in_mb
        e_x = lsb + _bit_length(frac) - 1
    else:
        sig = frac | (np.int64(1) << in_mb)
        lsb = ex - in_bias - in_mb
        e_x = ex - in_bias
    if is_fixed:
        q = qfix_b
    elif e_x >= emin_b:
        q = e_x - man_bits
    else:
        q = qsub_b
    s = q - lsb
    up = False
    k = np.int64(0)
    huge = False
    if s <= 0:
        if e_x - q >= 62:
            huge = True
        else:
            k = sig << (-s)
    else:
        if s < 63:
            k = sig >> s
            rem = sig & ((np.int64(1) << s) - 1)
        else:
            rem = sig
        if rem != 0:
            if mode == NEAREST_EVEN or mode == NEAREST_AWAY:
                if s <= 54 and (rem >> (s - 1)) & 1:
                    if mode == NEAREST_AWAY:
                        up = True
                    else:
                        up = (rem & ((np.int64(1) << (s - 1)) - 1)) != 0 or (k & 1) == 1
            elif mode == STOCHASTIC:
                if s >= r:
                    d = s - r
                    if d < 63:
                        f = rem >> d
                        sticky = (rem & ((np.int64(1) << d) - 1)) != 0
                    else:
                        f = np.int64(0)
                        sticky = True
                else:
                    f = rem << (r - s)
                    sticky = False
                uu = np.int64(word >> np.uint32(32 - r))
                if is_fixed and neg:
                    # Fixed point rounds the two's-complement value from its floor:
                    # the floor-based fraction of -|v| is 2^r - f - sticky.
                    up = uu < f + sticky
                else:
                    up = f + uu >= (np.int64(1) << r)
            elif mode == UP:
                up = not neg
            elif mode == DOWN:
                up = neg
            elif mode == ODD:
                k |= 1
    if up:
        k += 1
    if is_fixed:
        wl_mask = (np.int64(1) << wl) - 1
        if huge:
            over = True
            kmod = np.int64(0) if -s >= wl else ((sig & ((np.int64(1) << (wl + s)) - 1)) << (-s))
        else:
            over = k > -min_code if neg else k > max_code
            kmod = k & wl_mask
        code = -k if neg else k
        if over:
            if wrap:
                code = ((-kmod) & wl_mask) if neg else kmod
                if min_code < 0 and code > max_code:
                    code -= np.int64(1) << wl
            else:
                code = min_code if neg else max_code
        return code * pow2[q + _POW2_OFFSET], 1 if over else 0
    mag = abs(xv) if s <= 0 else k * pow2[q + _POW2_OFFSET]
    if mag > maxval_b:
        # IEEE 754: modes that round toward zero never reach infinity.
        toward_zero = mode == TOWARD_ZERO or mode == ODD or (mode == UP and neg) or (mode == DOWN and not neg)
        if ovf == _OVF_SAT or toward_zero:
            mag = maxval_b
        elif ovf == _OVF_INF:
            mag = np.inf
        else:
            return np.nan, 1
        return (-mag if neg else mag), 1
    return (-mag if neg else mag), 0


@njit(cache=True)
def _kernel(x, bits, out, words, block, xs, mode, r,
            in_mb, in_emask, in_bias,
            is_fixed, man_bits, emin, qsub, maxval, has_inf, ovf,
            qfix, max_code, min_code, wl, wrap, pow2):
    """Quantize ``x`` (its bit pattern ``bits`` viewed as signed ints) into ``out``.

    Elements are processed in blocks of ``block``; block b shifts the target grid by 2^xs[b]
    (all zeros for plain formats). Returns the number of saturated/overflowed elements.
    """
    n = x.shape[0]
    count = 0
    stochastic = mode == STOCHASTIC
    nblocks = (n + block - 1) // block
    for b in range(nblocks):
        xb = xs[b]
        maxval_b = maxval * pow2[xb + _POW2_OFFSET]
        for i in range(b * block, min(n, (b + 1) * block)):
            v, over = _one(np.float64(x[i]), np.int64(bits[i]), words[i] if stochastic else np.uint32(0),
                           mode, r, in_mb, in_emask, in_bias, is_fixed, man_bits, emin + xb, qsub + xb,
                           maxval_b, has_inf, ovf, qfix + xb, max_code, min_code, wl, wrap, pow2)
            out[i] = v
            count += over
    return count


@njit(cache=True)
def _fast_deterministic(bits, out_bits, c0, c1, mode, s, lo, inf_bits, max_bits, abs_mask):
    """Branch-free rounding (any mode but stochastic) of elements c0..c1 that lie in the
    target's normal range, on the input's own bits: adding the mode's increment below the kept
    bits carries into the exponent exactly as rounding does (nearest-even: 2^(s-1) - 1 + lsb).
    Elements outside that range (or overflowing, inf, NaN) get the sentinel 0, never a result
    here since every handled magnitude is >= lo > 0. Returns whether there were any (a flag:
    a 64-bit count would widen the vector lanes)."""
    if mode == NEAREST_EVEN:  # the common mode gets a copy of the loop with no mode branches
        return _round_bits(bits, out_bits, c0, c1, NEAREST_EVEN, s, lo, inf_bits, max_bits, abs_mask)
    return _round_bits(bits, out_bits, c0, c1, mode, s, lo, inf_bits, max_bits, abs_mask)


@njit(cache=True, inline="always")
def _round_bits(bits, out_bits, c0, c1, mode, s, lo, inf_bits, max_bits, abs_mask):
    """``_fast_deterministic``'s loop, inlined so that a constant ``mode`` folds its branches.

    Every step is cast back to the input's width ``t`` (numba widens integer arithmetic to 64
    bits): for float32 the loop then vectorises on 32-bit lanes, twice as many per instruction,
    and it has no shifts (the kept lsb is tested by mask), which would stay 64-bit."""
    t = bits.dtype.type
    lsb = t(1 << s)
    low = t(lsb - 1)
    keep = t(~low)
    half = t(lsb >> 1)
    lo, inf_bits, max_bits, abs_mask = t(lo), t(inf_bits), t(max_bits), t(abs_mask)
    sign = t(~abs_mask)
    zero = t(0)
    slow = False
    for i in range(np.uint64(c0), np.uint64(c1)):  # unsigned: no negative-index checks, so it vectorises
        u = bits[i]
        a = t(u & abs_mask)
        neg = u < zero
        if mode == NEAREST_EVEN:
            inc = t(half - t(t(a & lsb) == zero))  # 2^(s-1) - 1 + lsb
        elif mode == NEAREST_AWAY:
            inc = half
        elif mode == UP:
            inc = zero if neg else low
        elif mode == DOWN:
            inc = low if neg else zero
        else:
            inc = zero
        rr = t(t(a + inc) & keep)
        if mode == ODD:
            rr = t(rr | (lsb if t(a & low) != zero else zero))
        # a < inf_bits also guards the sum: it can pass the width's sign bit only for NaN.
        ok = (a >= lo) & (a < inf_bits) & (rr <= max_bits)
        out_bits[i] = t(rr | t(u & sign)) if ok else zero
        slow |= not ok
    return slow


@njit(cache=True)
def _fast_stochastic(bits, out_bits, words, w0, c0, c1, r, s, lo, inf_bits, max_bits, abs_mask):
    """The same for stochastic rounding (element i's word is words[i - w0]), in the input's
    width as in ``_round_bits``. The increment is the word's top r bits U placed right below the
    kept bits, V = ⌊U·2^(s-r)⌋: with rem the s discarded bits and F their top r, rem + V carries
    into the kept lsb exactly when F + U >= 2^r, since neither the bits of rem below F nor the
    bits of U that V drops can carry on their own."""
    t = bits.dtype.type
    keep = t(~((1 << s) - 1))
    rmask = np.uint32((0xFFFFFFFF << (32 - r)) & 0xFFFFFFFF)
    # np.right_shift/left_shift keep their operands' width (the >> operator would widen to 64
    # bits); a float64 input's s can exceed 32, so the word goes down, then up.
    down, up = np.uint32(max(0, 32 - s)), t(max(0, s - 32))
    lo, inf_bits, max_bits, abs_mask = t(lo), t(inf_bits), t(max_bits), t(abs_mask)
    sign = t(~abs_mask)
    zero = t(0)
    slow = False
    for i in range(np.uint64(c0), np.uint64(c1)):  # unsigned: no negative-index checks, so it vectorises
        u = bits[i]
        a = t(u & abs_mask)
        v = np.left_shift(t(np.right_shift(np.uint32(words[i - np.uint64(w0)] & rmask), down)), up)
        rr = t(t(a + v) & keep)
        ok = (a >= lo) & (a < inf_bits) & (rr <= max_bits)
        out_bits[i] = t(rr | t(u & sign)) if ok else zero
        slow |= not ok
    return slow


@njit(cache=True)
def _fast_fixed(x, out, words, w0, c0, c1, mode, r, frac_bits, pow2, min_code, max_code):
    """Fixed point, any mode, for in-range elements c0..c1 in float64: v = x·2^FL is exact
    (when normal), (v + 1.5·2^52) - 1.5·2^52 is v rounded to nearest-even when |v| < 2^51, and
    floor, ceil, frac|v| and frac|v|·2^r are exact too. Out-of-range elements (and NaN)
    get the sentinel NaN, which no in-range result is. Returns how many."""
    slow = 0
    stochastic = mode == STOCHASTIC
    scale = pow2[frac_bits + _POW2_OFFSET]
    eps = pow2[-frac_bits + _POW2_OFFSET]
    magic = 6755399441055744.0  # 1.5 * 2^52
    two_r = pow2[r + _POW2_OFFSET]
    lo, hi = np.float64(min_code), np.float64(max_code)
    for i in range(np.uint64(c0), np.uint64(c1)):  # unsigned: no negative-index checks
        v = np.float64(x[i]) * scale
        a = abs(v)
        fa = np.floor(a)
        if stochastic:
            # From the magnitude (v - floor v is not exact for small negative v): with
            # g = frac|v|, a negative v has floor -⌊|v|⌋-1 and F = 2^r - ⌊g·2^r⌋ - sticky.
            t = (a - fa) * two_r
            fm = np.floor(t)
            neg_frac = (v < 0) & (t > 0)
            fl = (-fa - 1.0) if neg_frac else (-fa if v < 0 else fa)
            f = (two_r - fm - (t != fm)) if neg_frac else fm
            k = fl + ((f + np.float64(words[i - np.uint64(w0)] >> np.uint32(32 - r))) >= two_r)
        elif mode == NEAREST_EVEN:
            k = (v + magic) - magic
        elif mode == NEAREST_AWAY:
            k = np.copysign(fa + ((a - fa) >= 0.5), v)
        elif mode == TOWARD_ZERO:
            k = np.copysign(fa, v)
        elif mode == UP:
            k = np.ceil(v)
        elif mode == DOWN:
            k = np.floor(v)
        else:  # odd: the odd one of floor(v), floor(v) + 1 unless v is an integer
            fl = np.floor(v)
            k = fl + ((fl != v) & (fl - 2.0 * np.floor(fl * 0.5) == 0.0))
        k += 0.0  # fixed point has one zero: -0 + 0 = +0
        # |v| below the normal range may have lost bits when a block scale shrank it.
        ok = (k >= lo) & (k <= hi) & (abs(v) < 2.0**51) & ((abs(v) >= 2.0**-1022) | (v == 0 and x[i] == 0))
        out[i] = k * eps if ok else np.nan
        slow += not ok
    return slow


# Elements per chunk of the fast path: small enough that a chunk holding one subnormal or
# overflowing element costs little to finish, and that a chunk's random words stay in cache.
_CHUNK = 256


@njit(cache=True)
def _fast_kernel(x, bits, out, out_bits, words, states, mode, r, s, block, xs, lo_bits, max_bits,
                 inf_bits, abs_mask, in_mb, in_emask, in_bias, is_fixed, man_bits, emin, qsub, maxval,
                 has_inf, ovf, qfix, max_code, min_code, wl, wrap, pow2):
    """Any rounding mode, block by block (one block for plain formats) and chunk by
    chunk: the branch-free pass (float formats on the input's bits between lo_bits[b] and
    max_bits[b], fixed point in float64), then the general ``_one`` for the chunk's marked
    elements. Stochastic words come from ``words`` (one per element) or, if ``states`` is not
    empty (plain formats only), are drawn from those lane states a chunk at a time (a multiple
    of the lane count, so lane = element % lanes holds)."""
    n = x.shape[0]
    count = 0
    stochastic = mode == STOCHASTIC
    draw = states.shape[0] > 0
    lanes = max(1, states.shape[0])
    chunk = lanes * max(1, _CHUNK // lanes)
    st = states.copy()
    buf = np.empty(chunk if draw else 0, dtype=np.uint32)
    for b in range((n + block - 1) // block):
        xb = xs[b]
        lo, top = lo_bits[b], max_bits[b]
        maxval_b = maxval * pow2[xb + _POW2_OFFSET]
        b1 = min(n, (b + 1) * block)
        for c0 in range(b * block, b1, chunk):
            c1 = min(b1, c0 + chunk)
            if draw:
                draw_rounds(st, c1 - c0, buf)
                w, w0 = buf, c0
            else:
                w, w0 = words, 0
            if is_fixed:
                slow = _fast_fixed(x, out, w, w0, c0, c1, mode, r, -(qfix + xb), pow2, min_code, max_code)
            elif stochastic:
                slow = _fast_stochastic(bits, out_bits, w, w0, c0, c1, r, s, lo, inf_bits, top, abs_mask)
            else:
                slow = _fast_deterministic(bits, out_bits, c0, c1, mode, s, lo, inf_bits, top, abs_mask)
            if slow:
                for i in range(c0, c1):
                    if (out[i] != out[i]) if is_fixed else (out_bits[i] == 0):
                        v, over = _one(np.float64(x[i]), np.int64(bits[i]),
                                       w[i - w0] if stochastic else np.uint32(0), mode, r, in_mb, in_emask,
                                       in_bias, is_fixed, man_bits, emin + xb, qsub + xb, maxval_b, has_inf,
                                       ovf, qfix + xb, max_code, min_code, wl, wrap, pow2)
                        out[i] = v
                        count += over
    states[:] = st
    return count


def _bits_of(values, dtype: np.dtype) -> np.ndarray:
    """Bit patterns (int64) of float64 values that are exact in ``dtype``."""
    return np.asarray(values, dtype=dtype).view(_INPUT_LAYOUT[dtype][0]).astype(np.int64)


def float32_problem(fmt: FloatFormat | FixedFormat) -> str | None:
    """Why the format's values are not all float32 numbers (None if they are)."""
    if isinstance(fmt, FloatFormat):
        lowest = fmt.emin - fmt.man_bits if fmt.subnormals else fmt.emin
        if fmt.man_bits > 23 or fmt.emax > 127 or lowest < -149:
            return f"{fmt!r} has values that float32 cannot hold (needs man_bits <= 23, emax <= 127, smallest step >= 2^-149)"
    else:
        if fmt.bits > 24 or fmt.frac_bits > 149 or fmt.int_bits > 128:
            return f"{fmt!r} has values that float32 cannot hold (needs WL <= 24)"
    return None


def _block_fits_float32(el: FloatFormat | FixedFormat, xs: np.ndarray) -> bool:
    """Whether every element value times 2^X (X in xs) is a float32 number."""
    lowest_q = (el.emin - el.man_bits if el.subnormals else el.emin) if isinstance(el, FloatFormat) else -el.frac_bits
    top = float(np.floor(np.log2(el.max_value))) + 1 if el.max_value > 0 else 0
    return lowest_q + int(xs.min()) >= -149 and top + int(xs.max()) <= 128


def _element_params(fmt: FloatFormat | FixedFormat) -> dict:
    """The kernels' format parameters, keyed by name in their signature order (``_kernel``
    callers elsewhere pass them as keywords; ``_plan`` takes the values in order)."""
    if isinstance(fmt, FloatFormat):
        return dict(is_fixed=False, man_bits=fmt.man_bits, emin=fmt.emin,
                    qsub=fmt.emin - fmt.man_bits if fmt.subnormals else fmt.emin,
                    maxval=fmt.max_value, has_inf=fmt.has_inf, ovf=_OVF_CODES[fmt.overflow],
                    qfix=0, max_code=0, min_code=0, wl=1, wrap=False)
    return dict(is_fixed=True, man_bits=0, emin=0, qsub=0, maxval=fmt.max_value, has_inf=False,
                ovf=_OVF_SAT, qfix=-fmt.frac_bits, max_code=fmt.max_code, min_code=fmt.min_code,
                wl=fmt.bits, wrap=fmt.overflow == "wrap")


@lru_cache(maxsize=1024)
def _parse_cached(text: str) -> Format:
    return parse_format(text)


@lru_cache(maxsize=1024)
def _plan(element: FloatFormat | FixedFormat, dtype: np.dtype) -> tuple:
    """What one (element format, input dtype) pair needs on every call, worked out once:
    (kernel parameters in signature order, fast-path shift or None, the plain format's
    fast-path bounds (lo_bits, max_bits))."""
    in_mb = _INPUT_LAYOUT[dtype][1]
    params = tuple(_element_params(element).values()) + (_POW2,)
    if isinstance(element, FixedFormat):
        return params, 0, (np.zeros(1, dtype=np.int64),) * 2
    shift = in_mb - element.man_bits
    # The fast path rounds a float target's normal range on the input's bits. man_bits = 0 is
    # left to the general path: its ties go to the even significand K, not to the even
    # exponent field that the bit trick would pick.
    if shift <= 0 or element.man_bits == 0:
        return params, None, None
    return params, shift, _fast_bounds(element, dtype, np.zeros(1, dtype=np.int64))


def _fast_bounds(element: FloatFormat, dtype: np.dtype, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bit patterns (in the input dtype) of the target's smallest normal and of its max, per
    block exponent: the fast path's range."""
    lo_bits = np.maximum(_bits_of(np.ldexp(element.min_normal, xs), dtype), 1 << _INPUT_LAYOUT[dtype][1])
    return lo_bits, _bits_of(np.ldexp(element.max_value, xs), dtype)


def _floor_log2(a: np.ndarray) -> np.ndarray:
    """Exact ⌊log2 a⌋ for positive finite float64 (frexp is exact)."""
    return np.frexp(a)[1].astype(np.int64) - 1


@njit(cache=True)
def _block_scan(x, block):
    """Per block: the largest finite |x| (0 if none) and whether it holds a NaN."""
    n = x.shape[0]
    nb = max(1, (n + block - 1) // block)
    amax = np.zeros(nb)
    has_nan = np.zeros(nb, dtype=np.bool_)
    for b in range(nb):
        m = 0.0
        nan = False
        for i in range(np.uint64(b * block), np.uint64(min(n, (b + 1) * block))):
            a = abs(np.float64(x[i]))
            nan |= a != a
            m = max(m, a if a < np.inf else 0.0)
        amax[b] = m
        has_nan[b] = nan
    return amax, has_nan


def _block_scales(flat: np.ndarray, fmt: BlockFormat) -> tuple[np.ndarray, np.ndarray]:
    """(shared exponent X per block, NaN-block mask) of a flat float32/float64 array."""
    el = fmt.element
    amax, has_nan = _block_scan(flat, max(1, flat.size if fmt.block is None else fmt.block))
    nz = amax > 0
    xs = np.full(amax.size, fmt.scale_min_exp, dtype=np.int64)
    emax_el = int(_floor_log2(np.array([el.max_value]))[0])
    x0 = _floor_log2(amax[nz]) - emax_el  # the floor rule
    if fmt.scale_rule == "ceil":
        # 2^fl <= amax < 2^(fl+1) and 2^emax_el <= max < 2^(emax_el+1) leave X0 or X0 + 1.
        x0 = np.where(amax[nz] > np.ldexp(el.max_value, x0), x0 + 1, x0)
    xs[nz] = x0
    lowest_q = (el.emin - el.man_bits if el.subnormals else el.emin) if isinstance(el, FloatFormat) else -el.frac_bits
    lo = max(fmt.scale_min_exp, -1074 - lowest_q)
    return np.clip(xs, lo, fmt.scale_max_exp), has_nan


def block_exponents(x: np.ndarray, fmt: BlockFormat) -> np.ndarray:
    """Shared exponent X of each block of the flattened ``x`` (int64, one per block).

        >>> block_exponents(np.array([1.0, 3.0, 0.0, 0.0]), parse_format("bfp<e4m3fn,2>")).tolist()
        [-7, -127]

    floor (OCP MX): X = ⌊log2 amax⌋ - ⌊log2 max_elem⌋; ceil: the smallest X with
    amax <= max_elem·2^X. Then clamped to the scale's range and so that the element grid stays
    inside float64. NaN is ignored here (its block becomes NaN); an all-zero (or all-inf) block
    gets the smallest X.
    """
    return _block_scales(np.ascontiguousarray(x, dtype=np.float64).ravel(), fmt)[0]


def _as_array(x) -> tuple[np.ndarray, object]:
    """(contiguous flat float32/float64 array, a function turning a result array back)."""
    if isinstance(x, (float, int)) and not isinstance(x, bool):
        return np.array([float(x)]), lambda a: float(a[0])
    # A tensor exists only if its caller imported torch: never import it here (seconds, and
    # hundreds of MB, for a daemon that only ever sees numpy arrays).
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        arr = x.detach().cpu().numpy()
        device = x.device
        if arr.dtype not in _INPUT_LAYOUT:
            raise TypeError(f"quantize takes float32 or float64 tensors; got {x.dtype}")
        return np.ascontiguousarray(arr).ravel(), lambda a: torch.from_numpy(a.reshape(arr.shape)).to(device)
    if isinstance(x, np.ndarray):
        if x.dtype not in _INPUT_LAYOUT:
            raise TypeError(f"quantize takes float32 or float64 arrays; got {x.dtype}")
        return np.ascontiguousarray(x).ravel(), lambda a: a.reshape(x.shape)
    raise TypeError(f"quantize takes a numpy array, a torch tensor or a Python float; got {type(x).__name__}")


def quantize(x, fmt: Format | str, rounding: str = "nearest_even", rng=None, rbits: int | None = None,
             return_saturated: bool = False):
    """Round ``x`` into ``fmt`` once, from its exact value; values come back in x's dtype/type.

        >>> quantize(2.5, "fixed<4,0>", rounding="nearest_away")
        3.0

    ``rounding``: one of ROUNDINGS. ``rng`` (stochastic only; ignored otherwise): a LaneRNG
    (x.size words drawn in C order) or a uint32 array of one word per element. ``rbits``:
    random bits per rounding, 1..32 (None: the whole discarded width, capped at 32).
    ``return_saturated``: also return the number of elements that overflowed the finite range
    (finite overflows and infinite inputs; NaN not counted), whatever the overflow rule did.
    """
    fmt = _parse_cached(fmt) if isinstance(fmt, str) else parse_format(fmt)
    mode = mode_code(rounding)
    r = rbits_code(rbits)
    flat, restore = _as_array(x)
    n = flat.size
    words = states = np.zeros(0, dtype=np.uint32)
    if mode == STOCHASTIC:
        if isinstance(rng, LaneRNG):
            states = rng.states
        elif isinstance(rng, np.ndarray) and rng.dtype == np.uint32 and rng.size == n:
            words = np.ascontiguousarray(rng).ravel()
        else:
            raise ValueError("stochastic rounding needs rng=LaneRNG(...) or a uint32 array with one word "
                             f"per element ({n}); got {type(rng).__name__}")
    element = fmt.element if isinstance(fmt, BlockFormat) else fmt
    if flat.dtype == np.float32 and (why := float32_problem(element)):
        raise ValueError(f"float32 input: {why}; pass float64")
    view, in_mb, in_emask, in_bias = _INPUT_LAYOUT[flat.dtype]
    bits, out = flat.view(view), np.empty_like(flat)
    params, shift, bounds = _plan(element, flat.dtype)
    if isinstance(fmt, BlockFormat):
        xs, nan_blocks = _block_scales(flat, fmt)
        block = max(1, n if fmt.block is None else fmt.block)
        if flat.dtype == np.float32 and n and not _block_fits_float32(element, xs):
            raise ValueError(f"float32 input: {fmt!r} with these block exponents has values float32 "
                             "cannot hold; pass float64")
        if shift:  # float elements: the fast path's range moves with each block's exponent
            bounds = _fast_bounds(element, flat.dtype, xs)
        elif shift == 0:
            bounds = (np.zeros(xs.size, dtype=np.int64),) * 2
    else:
        xs, nan_blocks, block = _NO_BLOCK_EXPONENT, None, max(1, n)
    if shift is not None:  # the fast path (fixed point: shift 0, its range checked in float64)
        if states.size and isinstance(fmt, BlockFormat):
            words, states = rng.words(n), np.zeros(0, dtype=np.uint32)  # blocks need not align with lanes
        abs_mask = (1 << (in_mb + in_emask.bit_length())) - 1
        count = _fast_kernel(flat, bits, out, out.view(view), words, states, mode, r, shift, block, xs,
                             *bounds, in_emask << in_mb, abs_mask, in_mb, in_emask, in_bias, *params)
    else:
        if states.size:
            words = rng.words(n)  # the general kernel takes one word per element
        count = _kernel(flat, bits, out, words, block, xs, mode, r, in_mb, in_emask, in_bias, *params)
    if nan_blocks is not None and nan_blocks.any():  # OCP MX: a NaN scale makes the whole block NaN
        out[np.repeat(nan_blocks, block)[:n]] = np.nan
    result = restore(out)
    return (result, int(count)) if return_saturated else result
