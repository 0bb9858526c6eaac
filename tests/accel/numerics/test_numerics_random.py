"""10^6 random checks per larger preset, every mode, float64 and float32 inputs."""
from __future__ import annotations

import numpy as np
import pytest

from accel.numerics import ROUNDINGS, quantize
from oracle import NAN, exact, round_exact
from protocol.formats import parse_format
from vector_oracle import round_float, ulp_exponent

# NaN/inf inputs make the reference cast NaN exponents it then discards.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in cast")

PRESETS = ["fp16", "bf16", "fp32", "fp16_ibm", "e5m2", "fp8_ibm", "e4m3fn", "float<11,40,nosub>"]
N = 10**6


def random_inputs(fmt, n: int, seed: int) -> np.ndarray:
    """Half log-uniform over the format's range and beyond, half on or next to grid midpoints."""
    rng = np.random.default_rng(seed)
    lo = max(fmt.emin - fmt.man_bits - 4, -1074)
    hi = min(fmt.emax + 3, 1023)
    mant = rng.uniform(1.0, 2.0, n)
    x = np.ldexp(mant, rng.integers(lo, hi + 1, n))
    half = n // 2
    a = x[:half]
    q = ulp_exponent(a, fmt)
    mid = np.ldexp(np.floor(np.ldexp(a, -q)) + 0.5, q)
    step = rng.integers(-2, 3, half)  # the midpoint, or 1-2 float64 ulps either side
    mid = np.where(step > 0, np.nextafter(mid, np.inf), np.where(step < 0, np.nextafter(mid, 0), mid))
    mid = np.where(np.abs(step) == 2, np.nextafter(mid, np.where(step > 0, np.inf, 0.0)), mid)
    x[:half] = mid
    return np.where(rng.random(n) < 0.5, -x, x)


def _assert_same(got, want, x, what):
    bad = ~((got == want) & (np.signbit(got) == np.signbit(want)) | (np.isnan(got) & np.isnan(want)))
    if bad.any():
        i = np.flatnonzero(bad)[0]
        raise AssertionError(f"{what}: {bad.sum()} mismatches, first x={x[i]!r} got {got[i]!r} want {want[i]!r}")


@pytest.mark.parametrize("fmt_s", PRESETS)
def test_vector_oracle_agrees_with_fraction_oracle(fmt_s):
    fmt = parse_format(fmt_s)
    x = random_inputs(fmt, 1500, seed=1)
    u = np.random.default_rng(2).integers(0, 2**32, x.size)
    for mode in ROUNDINGS:
        got, _ = round_float(x, fmt, mode, u=u)
        for xi, gi, ui in zip(x.tolist(), got.tolist(), u.tolist()):
            want = round_exact(xi, fmt, mode, u=ui)
            assert exact(gi) == want or (want[1] == NAN and gi != gi), (fmt_s, mode, xi, gi, want)


@pytest.mark.parametrize("fmt_s", PRESETS)
def test_million_random_float64_inputs(fmt_s):
    fmt = parse_format(fmt_s)
    x = random_inputs(fmt, N, seed=3)
    words = np.random.default_rng(4).integers(0, 2**32, N, dtype=np.uint32)
    for mode in ROUNDINGS:
        for r in ((32, 7) if mode == "stochastic" else (32,)):
            got, n_sat = quantize(x, fmt, mode, rng=words, rbits=r, return_saturated=True)
            want, over = round_float(x, fmt, mode, u=(words >> (32 - r)).astype(np.float64), r=r)
            _assert_same(got, want, x, f"{fmt_s} {mode} r={r}")
            assert n_sat == over.sum()


@pytest.mark.parametrize("fmt_s", ["fp16", "bf16", "e4m3fn", "e5m2", "fp16_ibm"])
def test_million_random_float32_bit_patterns(fmt_s):
    """float32 input is decoded from its own bits; the result must equal rounding the same value
    given as float64, and come back as float32."""
    fmt = parse_format(fmt_s)
    x32 = np.random.default_rng(5).integers(0, 2**32, N, dtype=np.uint32).view(np.float32)
    words = np.random.default_rng(6).integers(0, 2**32, N, dtype=np.uint32)
    for mode in ("nearest_even", "toward_zero", "stochastic"):
        got = quantize(x32, fmt, mode, rng=words)
        assert got.dtype == np.float32
        want = quantize(x32.astype(np.float64), fmt, mode, rng=words)
        ref, _ = round_float(x32.astype(np.float64), fmt, mode, u=words.astype(np.float64))
        _assert_same(want, ref, x32, f"{fmt_s} {mode} float64 path")
        _assert_same(got.astype(np.float64), want, x32, f"{fmt_s} {mode} float32 path")


@pytest.mark.parametrize("fmt_s", ["fixed<1,7>", "fixed<8,16>", "ufixed<2,10,wrap>", "fixed<1,23,wrap>"])
def test_random_fixed_point_against_the_fraction_oracle(fmt_s):
    """Fixed point's fast path works in float64; check it on values of every magnitude."""
    fmt = parse_format(fmt_s)
    rng = np.random.default_rng(8)
    n = 6000
    x = np.ldexp(rng.uniform(1, 2, n), rng.integers(-40, fmt.int_bits + 3, n)) * rng.choice([-1.0, 1.0], n)
    words = rng.integers(0, 2**32, n, dtype=np.uint32)
    for x_in in (x, x.astype(np.float32)):
        for mode, r in (("nearest_even", 32), ("stochastic", 32), ("stochastic", 3)):
            got = quantize(x_in, fmt, mode, rng=words, rbits=r)
            for xi, gi, wi in zip(x_in.tolist(), got.tolist(), words.tolist()):
                want = round_exact(float(xi), fmt, mode, u=wi >> (32 - r), r=r)
                assert exact(float(gi)) == want, (fmt_s, mode, r, xi, gi, want)
