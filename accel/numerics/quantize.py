"""Quantization into float, fixed and block formats, rounded once from the exact input.

    >>> import numpy as np
    >>> quantize(np.array([0.3, 500.0, -1e-9]), "e4m3fn")
    array([ 0.3125, 448.    , -0.    ])
    >>> quantize(np.array([0.3]), "fixed<1,7>", rounding="stochastic", rng=LaneRNG(1, 0, 8))
    array([0.3046875])
    >>> quantize(np.array([1e6, 2.0]), "fp16", return_saturated=True)
    (array([inf,  2.]), 1)

How (docs/numerics.md has the exact definitions): the input's bit pattern gives |x| = sig·2^lsb
with an integer ``sig`` of at most 53 bits. The target grid at x has step 2^q (float: q = the
exponent of x minus the mantissa bits, floored at the subnormal step; fixed: q = -FL; blocks add
the block's shared exponent). K = sig >> (q - lsb) and the discarded bits decide the rounding,
all in integers, so no intermediate format ever rounds. One compiled kernel does every family
and mode; float32 input is decoded from its own bits and the result stored back as float32.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from protocol.formats import BlockFormat, FixedFormat, FloatFormat, Format, parse_format

from .rng import LaneRNG
from .rounding import DOWN, NEAREST_AWAY, NEAREST_EVEN, ODD, STOCHASTIC, TOWARD_ZERO, UP, mode_code, rbits_code

__all__ = ["quantize", "block_exponents"]

# 2^q for every q a float64 can hold, so the kernel builds K·2^q by one exact multiplication.
_POW2 = np.ldexp(1.0, np.arange(-1074, 1024)).astype(np.float64)
_POW2_OFFSET = 1074

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
    frac_mask = (np.int64(1) << in_mb) - 1
    one_r = np.int64(1) << r
    towards_zero_on_overflow = mode == TOWARD_ZERO or mode == ODD
    wl_mask = (np.int64(1) << wl) - 1
    nblocks = (n + block - 1) // block
    for b in range(nblocks):
        xb = xs[b]
        scale = pow2[xb + _POW2_OFFSET]
        emin_b = emin + xb
        qsub_b = qsub + xb
        qfix_b = qfix + xb
        maxval_b = maxval * scale
        stop = min(n, (b + 1) * block)
        for i in range(b * block, stop):
            u = np.int64(bits[i])
            neg = u < 0
            ex = (u >> in_mb) & in_emask
            frac = u & frac_mask
            if ex == in_emask:  # inf or NaN
                if frac != 0:
                    out[i] = np.nan
                    continue
                count += 1
                if is_fixed:
                    out[i] = (min_code if neg else max_code) * pow2[qfix_b + _POW2_OFFSET]
                elif has_inf:
                    out[i] = -np.inf if neg else np.inf
                elif ovf == _OVF_NAN:
                    out[i] = np.nan
                else:
                    out[i] = -maxval_b if neg else maxval_b
                continue
            if ex == 0:
                if frac == 0:
                    out[i] = 0.0 if (is_fixed or not neg) else -0.0
                    continue
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
            inexact = False
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
                inexact = rem != 0
                if inexact:
                    if mode == NEAREST_EVEN or mode == NEAREST_AWAY:
                        if s <= 54:
                            half = (rem >> (s - 1)) & 1
                            if half:
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
                        uu = np.int64(words[i] >> np.uint32(32 - r))
                        if is_fixed and neg:
                            # Fixed point rounds the two's-complement value from its floor:
                            # the floor-based fraction of -|v| is 2^r - f - sticky.
                            up = uu < f + sticky
                        else:
                            up = f + uu >= one_r
                    elif mode == UP:
                        up = not neg
                    elif mode == DOWN:
                        up = neg
                    elif mode == ODD:
                        k |= 1
            if up:
                k += 1
            if is_fixed:
                if huge:
                    over = True
                    kmod = np.int64(0) if -s >= wl else ((sig & ((np.int64(1) << (wl + s)) - 1)) << (-s))
                else:
                    over = k > -min_code if neg else k > max_code
                    kmod = k & wl_mask
                code = -k if neg else k
                if over:
                    count += 1
                    if wrap:
                        code = ((-kmod) & wl_mask) if neg else kmod
                        if min_code < 0 and code > max_code:
                            code -= np.int64(1) << wl
                    else:
                        code = min_code if neg else max_code
                out[i] = code * pow2[q + _POW2_OFFSET]
            else:
                mag = abs(np.float64(x[i])) if s <= 0 else k * pow2[q + _POW2_OFFSET]
                if mag > maxval_b:
                    count += 1
                    # IEEE 754: modes that round toward zero never reach infinity.
                    if ovf == _OVF_SAT or towards_zero_on_overflow or (mode == UP and neg) or (mode == DOWN and not neg):
                        mag = maxval_b
                    elif ovf == _OVF_INF:
                        mag = np.inf
                    else:
                        out[i] = np.nan
                        continue
                out[i] = -mag if neg else mag
    return count


def _float32_problem(fmt: FloatFormat | FixedFormat) -> str | None:
    """Why the format's values are not all float32 numbers (None if they are)."""
    if isinstance(fmt, FloatFormat):
        lowest = fmt.emin - fmt.man_bits if fmt.subnormals else fmt.emin
        if fmt.man_bits > 23 or fmt.emax > 127 or lowest < -149:
            return f"{fmt!r} has values that float32 cannot hold (needs man_bits <= 23, emax <= 127, smallest step >= 2^-149)"
    else:
        if fmt.bits > 24 or fmt.frac_bits > 149 or fmt.int_bits > 128:
            return f"{fmt!r} has values that float32 cannot hold (needs WL <= 24)"
    return None


def _element_params(fmt: FloatFormat | FixedFormat) -> dict:
    if isinstance(fmt, FloatFormat):
        return dict(is_fixed=False, man_bits=fmt.man_bits, emin=fmt.emin,
                    qsub=fmt.emin - fmt.man_bits if fmt.subnormals else fmt.emin,
                    maxval=fmt.max_value, has_inf=fmt.has_inf, ovf=_OVF_CODES[fmt.overflow],
                    qfix=0, max_code=0, min_code=0, wl=1, wrap=False)
    return dict(is_fixed=True, man_bits=0, emin=0, qsub=0, maxval=fmt.max_value, has_inf=False,
                ovf=_OVF_SAT, qfix=-fmt.frac_bits, max_code=fmt.max_code, min_code=fmt.min_code,
                wl=fmt.bits, wrap=fmt.overflow == "wrap")


def _floor_log2(a: np.ndarray) -> np.ndarray:
    """Exact ⌊log2 a⌋ for positive finite float64 (frexp is exact)."""
    return np.frexp(a)[1].astype(np.int64) - 1


def block_exponents(x: np.ndarray, fmt: BlockFormat) -> np.ndarray:
    """Shared exponent X of each block of the flattened ``x`` (int64, one per block).

        >>> block_exponents(np.array([1.0, 3.0, 0.0, 0.0]), parse_format("bfp<e4m3fn,2>"))
        array([ -7, -127])

    floor (OCP MX): X = ⌊log2 amax⌋ - ⌊log2 max_elem⌋; ceil: the smallest X with
    amax <= max_elem·2^X. Then clamped to the scale's range and so that the element grid stays
    inside float64. NaN is ignored here (its block becomes NaN); an all-zero (or all-inf) block
    gets the smallest X.
    """
    el = fmt.element
    flat = np.asarray(x, dtype=np.float64).ravel()
    k = flat.size if fmt.block is None else fmt.block
    nb = max(1, -(-flat.size // k))
    padded = np.zeros(nb * k)
    mag = np.abs(flat)
    padded[:flat.size] = np.where(np.isfinite(mag), mag, 0.0)
    amax = padded.reshape(nb, k).max(axis=1)
    nz = amax > 0
    xs = np.full(nb, fmt.scale_min_exp, dtype=np.int64)
    emax_el = int(_floor_log2(np.array([el.max_value]))[0])
    fl = _floor_log2(amax[nz])
    if fmt.scale_rule == "floor":
        xs[nz] = fl - emax_el
    else:
        cand = fl - emax_el - 1  # amax < 2^(fl+1) <= max·2^(cand+2); step up while it does not fit
        for _ in range(3):
            cand = np.where(amax[nz] > np.ldexp(el.max_value, cand), cand + 1, cand)
        xs[nz] = cand
    lowest_q = (el.emin - el.man_bits if el.subnormals else el.emin) if isinstance(el, FloatFormat) else -el.frac_bits
    lo = max(fmt.scale_min_exp, -1074 - lowest_q)
    return np.clip(xs, lo, fmt.scale_max_exp)


def _as_array(x) -> tuple[np.ndarray, object]:
    """(contiguous flat float32/float64 array, a function turning a result array back)."""
    if isinstance(x, (float, int)) and not isinstance(x, bool):
        return np.array([float(x)]), lambda a: float(a[0])
    try:
        import torch
    except ImportError:  # torch is optional for numpy-only callers
        torch = None
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
    fmt = parse_format(fmt)
    mode = mode_code(rounding)
    r = rbits_code(rbits)
    flat, restore = _as_array(x)
    n = flat.size
    if mode == STOCHASTIC:
        if isinstance(rng, LaneRNG):
            words = rng.words(n)
        elif isinstance(rng, np.ndarray) and rng.dtype == np.uint32 and rng.size == n:
            words = np.ascontiguousarray(rng).ravel()
        else:
            raise ValueError("stochastic rounding needs rng=LaneRNG(...) or a uint32 array with one word "
                             f"per element ({n}); got {type(rng).__name__}")
    else:
        words = np.zeros(0, dtype=np.uint32)
    element = fmt.element if isinstance(fmt, BlockFormat) else fmt
    if flat.dtype == np.float32 and (why := _float32_problem(element)):
        raise ValueError(f"float32 input: {why}; pass float64")
    if isinstance(fmt, BlockFormat):
        xs = block_exponents(flat, fmt)
        block = max(1, n if fmt.block is None else fmt.block)
    else:
        xs = np.zeros(1, dtype=np.int64)
        block = max(1, n)
    view, in_mb, in_emask, in_bias = _INPUT_LAYOUT[flat.dtype]
    out = np.empty_like(flat)
    count = _kernel(flat, flat.view(view), out, words, block, xs, mode, r, in_mb, in_emask, in_bias,
                    pow2=_POW2, **_element_params(element))
    if isinstance(fmt, BlockFormat) and n:
        nan_blocks = np.isnan(np.pad(flat, (0, len(xs) * block - n)).reshape(len(xs), block)).any(axis=1)
        if nan_blocks.any():  # OCP MX: a NaN scale makes the whole block NaN
            out[np.repeat(nan_blocks, block)[:n]] = np.nan
    result = restore(out)
    return (result, int(count)) if return_saturated else result
