"""The branch-free fast path, bit for bit against quantize's general path.

quantize rounds most elements on the input's own bits (``_fast_deterministic`` and
``_fast_stochastic``, on 32-bit lanes for float32 input) and leaves the rest (target
subnormals, overflow, ±inf, NaN) to the general integer path, ``_one``. ``general_path`` runs
the same call with the fast path switched off: results and saturation counts must match bit
for bit, on inputs at every edge of the fast path's range. The general path itself is pinned
to the exact oracles in test_numerics_exhaustive and test_numerics_random.
"""
from __future__ import annotations

import importlib

import numpy as np
import pytest

from accel.numerics import ROUNDINGS, LaneRNG, quantize
from accel.numerics.rng import draw_rounds
from protocol.formats import BlockFormat, parse_format
from vector_oracle import round_float, ulp_exponent

_quantize_module = importlib.import_module("accel.numerics.quantize")  # the package re-exports the function

# NaN/inf inputs make the vector oracle cast NaN exponents it then discards.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in cast")

FLOAT32_FORMATS = ["bf16", "fp16", "e4m3fn", "e5m2", "float<5,20>", "float<4,3,nosub,sat>",
                   "float<4,3,fn,nan>", "mxfp8"]
# float64 input: the discarded width s reaches past 32 (bf16: 45), equals it (float<5,20>) or not.
FLOAT64_FORMATS = ["bf16", "fp16", "e4m3fn", "float<5,20>", "float<5,30>", "float<11,40,nosub>"]
UINT = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}


def general_path(*args, **kwargs):
    """``quantize(*args, **kwargs)`` with the fast path off: every element goes through ``_one``."""
    plan = _quantize_module._plan
    with pytest.MonkeyPatch.context() as m:
        m.setattr(_quantize_module, "_plan", lambda element, dtype: (plan(element, dtype)[0], None, None))
        return quantize(*args, **kwargs)


def discarded_bits(fmt, dtype) -> int:
    """s: how many of the input's significand bits the target drops."""
    element = fmt.element if isinstance(fmt, BlockFormat) else fmt
    return (23 if dtype == np.float32 else 52) - element.man_bits


def rbits_to_try(s: int) -> list[int]:
    """Random-bit counts around the discarded width s and at both ends of 1..32."""
    return sorted({r for r in (1, 2, 3, 7, s - 1, s, s + 1, 31, 32) if 1 <= r <= 32})


def edge_inputs(fmt, dtype, n_random: int = 6000, seed: int = 0) -> np.ndarray:
    """Inputs on both sides of every edge of the fast path, both signs, shuffled so that general-
    path elements land in many chunks: the smallest normal and the subnormal grid below it (with
    ties), ties between normal neighbours (even and odd), the largest finite value and the tie
    and values above it, input subnormals, zeros, ±inf, NaNs with any payload (the largest would
    carry past the sign bit if the fast path rounded it), random bit patterns and random ties."""
    rng = np.random.default_rng(seed)
    el = fmt.element if isinstance(fmt, BlockFormat) else fmt
    uint = UINT[np.dtype(dtype)]
    sub = 2.0 ** (el.emin - el.man_bits)
    half_ulp = 2.0 ** -(el.man_bits + 1)
    step_max = 2.0 ** (el.emax - el.man_bits)
    points = [el.min_normal, el.min_normal - sub / 2, el.min_normal / 2, sub, sub / 2, 1.5 * sub,
              1 + half_ulp, 1 + 3 * half_ulp, el.max_value, el.max_value + step_max / 2,
              el.max_value + step_max, 2 * el.max_value, float(np.finfo(dtype).max), 1.0, 0.3]
    with np.errstate(over="ignore"):  # values past the input's range become inf, on purpose
        finfo = np.finfo(dtype)
        p = np.array(points).astype(dtype)
        p = np.concatenate([p, np.nextafter(p, dtype(np.inf)), np.nextafter(p, dtype(0))])
        inf_bits = int(np.array(np.inf, dtype).view(uint))
        nans = np.array([inf_bits | 1, inf_bits | 1 << (finfo.nmant - 1), np.iinfo(uint).max >> 1], dtype=uint)
        tiny = [0.0, np.inf, finfo.smallest_subnormal, finfo.smallest_normal,
                np.nextafter(finfo.smallest_normal, dtype(0))]  # input subnormals: below every target normal
        specials = np.concatenate([np.array(tiny, dtype=dtype), nans.view(dtype)])
        patterns = rng.integers(0, np.iinfo(uint).max, n_random, dtype=uint, endpoint=True).view(dtype)
        k = rng.integers(0, 2 ** (el.man_bits + 1), n_random)
        q = rng.integers(el.emin - el.man_bits - 2, el.emax - el.man_bits + 2, n_random)
        ties = np.ldexp(k + 0.5, q).astype(dtype)
    x = np.concatenate([p, specials, patterns, ties, np.nextafter(ties, dtype(np.inf))])
    x = np.where(rng.random(x.size) < 0.5, -x, x).astype(dtype)
    return rng.permutation(x)


def assert_same_bits(got: np.ndarray, want: np.ndarray, x: np.ndarray, what: str) -> None:
    bad = got.view(UINT[got.dtype]) != want.view(UINT[want.dtype])
    if bad.any():
        i = np.flatnonzero(bad)[0]
        raise AssertionError(f"{what}: {bad.sum()} differ, first x={x[i]!r} ({x.view(UINT[x.dtype])[i]:#x}): "
                             f"fast {got[i]!r}, general {want[i]!r}")


@pytest.mark.parametrize("dtype,fmt_s", [(np.float32, f) for f in FLOAT32_FORMATS]
                         + [(np.float64, f) for f in FLOAT64_FORMATS])
def test_fast_path_equals_the_general_path(dtype, fmt_s):
    fmt = parse_format(fmt_s)
    element = fmt.element if isinstance(fmt, BlockFormat) else fmt
    assert _quantize_module._plan(element, np.dtype(dtype))[1], "the fast path is off: nothing to compare"
    x = edge_inputs(fmt, dtype)
    words = np.random.default_rng(1).integers(0, 2**32, x.size, dtype=np.uint32)
    for mode in ROUNDINGS:
        rbits = [*rbits_to_try(discarded_bits(fmt, dtype)), None] if mode == "stochastic" else [None]
        for r in rbits:
            got, n_got = quantize(x, fmt, mode, rng=words, rbits=r, return_saturated=True)
            want, n_want = general_path(x, fmt, mode, rng=words, rbits=r, return_saturated=True)
            assert_same_bits(got, want, x, f"{fmt_s} {dtype.__name__} {mode} r={r}")
            assert n_got == n_want, (fmt_s, mode, r, n_got, n_want)


@pytest.mark.parametrize("fmt_s", ["bf16", "fp16", "float<5,20>"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stochastic_words_on_either_side_of_the_threshold(fmt_s, dtype):
    """For each input the two words around the round-up threshold U = 2^r - F (F: the top r
    bits of the discarded fraction), with random bits below the top r: one rounds up, one not."""
    fmt = parse_format(fmt_s)
    rng = np.random.default_rng(2)
    x = edge_inputs(fmt, dtype, n_random=1500, seed=3)
    a = np.abs(x.astype(np.float64))
    fast = (a >= fmt.min_normal) & (a <= fmt.max_value)
    x, a = x[fast], a[fast]
    t = np.ldexp(a, -ulp_exponent(a, fmt))
    for r in rbits_to_try(discarded_bits(fmt, dtype)):
        f = np.floor(np.ldexp(t - np.floor(t), r)).astype(np.int64)
        for delta in (-1, 0):
            u = np.clip((1 << r) - f + delta, 0, (1 << r) - 1)
            low = rng.integers(0, 1 << (32 - r), u.size) if r < 32 else 0
            words = ((u << (32 - r)) | low).astype(np.uint32)
            got = quantize(x, fmt, "stochastic", rng=words, rbits=r)
            want = general_path(x, fmt, "stochastic", rng=words, rbits=r)
            assert_same_bits(got, want, x, f"{fmt_s} r={r} delta={delta}")
            ref, _ = round_float(x.astype(np.float64), fmt, "stochastic", u=u.astype(np.float64), r=r)
            assert np.array_equal(got.astype(np.float64), ref), (fmt_s, r, delta)


@pytest.mark.parametrize("fmt_s", ["bf16", "fp16"])
@pytest.mark.parametrize("lanes", [1, 3, 64])
def test_lane_rng_words_drawn_in_the_kernel_match_words_drawn_first(fmt_s, lanes):
    """With a LaneRNG, the float32 kernels draw each chunk's words themselves; lane states and
    results must be those of drawing x.size words up front, and of the general path."""
    fmt = parse_format(fmt_s)
    x = edge_inputs(fmt, np.float32, seed=4)[:5001]
    a, b, c = LaneRNG(9, 1, lanes), LaneRNG(9, 1, lanes), LaneRNG(9, 1, lanes)
    for n in (x.size, 700):  # two calls: the states carry over
        got, n_got = quantize(x[:n], fmt, "stochastic", rng=a, return_saturated=True)
        want, n_want = quantize(x[:n], fmt, "stochastic", rng=b.words(n), return_saturated=True)
        general, n_general = general_path(x[:n], fmt, "stochastic", rng=c, return_saturated=True)
        assert_same_bits(got, want, x[:n], f"{fmt_s} lanes={lanes} n={n}")
        assert_same_bits(got, general, x[:n], f"{fmt_s} lanes={lanes} n={n} general")
        assert n_got == n_want == n_general
    assert np.array_equal(a.states, b.states) and np.array_equal(a.states, c.states)


@pytest.mark.parametrize("fmt_s", ["bf16", "fp16"])
def test_saturation_count_from_float32(fmt_s):
    """Finite overflows and ±inf count, NaN does not, whichever path decides the element."""
    fmt = parse_format(fmt_s)
    x = edge_inputs(fmt, np.float32, seed=5)
    words = np.random.default_rng(6).integers(0, 2**32, x.size, dtype=np.uint32)
    for mode in ("nearest_even", "stochastic"):
        _, n_sat = quantize(x, fmt, mode, rng=words, return_saturated=True)
        _, over = round_float(x.astype(np.float64), fmt, mode, u=words.astype(np.float64))
        assert n_sat == over.sum() > 0, (fmt_s, mode)


def _xorshift32(x: int) -> int:
    x ^= (x << 13) & 0xFFFFFFFF
    x ^= x >> 17
    return x ^ ((x << 5) & 0xFFFFFFFF)


@pytest.mark.parametrize("lanes,n", [(64, 1000), (7, 50), (5, 3)])
def test_draw_rounds_is_the_recipe_in_element_order(lanes, n):
    """Element k is the next step of lane k % lanes, across full rounds and the partial last one."""
    st = np.random.default_rng(lanes).integers(1, 2**32, lanes, dtype=np.uint32)
    want, ref = [], [int(v) for v in st]
    for k in range(n):
        ref[k % lanes] = _xorshift32(ref[k % lanes])
        want.append(ref[k % lanes])
    out = np.empty(n, np.uint32)
    draw_rounds(st, n, out)
    assert out.tolist() == want and st.tolist() == ref
