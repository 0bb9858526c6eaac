"""quantize against the exact oracle on every decision point of small formats, every mode."""
from __future__ import annotations

import numpy as np
import pytest

from accel.numerics import ROUNDINGS, decode, encode, quantize
from cases import boundary_inputs
from oracle import NAN, exact, fixed_values, float_values, round_exact, stochastic_fraction
from protocol.formats import FixedFormat, parse_format

# Representative formats of <= 12 bits: E = 1..8, every specials/overflow rule, nosub, odd
# biases, signed/unsigned/wrapping fixed point.
SMALL = ["float<1,3,finite>", "float<1,2,fn>", "e2m1", "e2m3", "e3m2", "float<2,2>", "float<3,0,fn>",
         "float<4,0>", "e4m3fn", "float<4,3>", "float<4,3,fn,nan>", "float<4,3,nosub,sat>", "e5m2",
         "fp8_ibm", "float<5,2,nosub>", "float<3,4,bias=1>", "float<6,3,finite>", "float<8,2,fn>",
         "fixed<1,0>", "fixed<1,7>", "fixed<4,4,wrap>", "ufixed<0,8>", "ufixed<3,5,wrap>", "fixed<5,1>"]
LARGE = ["float<8,3>", "float<6,5,nan,fn>", "float<7,4,nosub,sat>",
         "fixed<12,0,wrap>"]


def _same(got: float, want) -> bool:
    sign, mag = exact(float(got))
    if want[1] == NAN:
        return mag == NAN
    return (sign, mag) == want


def _check(fmt_s: str, xs: np.ndarray) -> None:
    fmt = parse_format(fmt_s)
    for mode in ROUNDINGS[:-1]:
        got, n_sat = quantize(xs, fmt, rounding=mode, return_saturated=True)
        n_over = 0
        for x, g in zip(xs.tolist(), got.tolist()):
            want, over = round_exact(x, fmt, mode, with_overflow=True)
            n_over += over
            assert _same(g, want), f"{fmt_s} {mode} x={x!r}: got {g!r}, oracle {want}"
        assert n_sat == n_over, f"{fmt_s} {mode}: saturation count {n_sat} != {n_over}"
    _check_stochastic(fmt, xs)


def _check_stochastic(fmt, xs: np.ndarray) -> None:
    """For each input, the two words on either side of the round-up threshold 2^r - F."""
    rng = np.random.default_rng(7)
    finite = xs[np.isfinite(xs) & (xs != 0)]
    for r in (32, 5, 1):
        fs = np.array([stochastic_fraction(x, fmt, r) for x in finite.tolist()], dtype=np.int64)
        for delta in (-1, 0):
            u = np.clip((1 << r) - fs + delta, 0, (1 << r) - 1)
            low = rng.integers(0, 1 << (32 - r), size=u.size) if r < 32 else 0  # ignored bits
            words = ((u << (32 - r)) | low).astype(np.uint32)
            got = quantize(finite, fmt, rounding="stochastic", rng=words, rbits=None if r == 32 else r)
            for x, uu, g in zip(finite.tolist(), u.tolist(), got.tolist()):
                want = round_exact(x, fmt, "stochastic", u=uu, r=r)
                assert _same(g, want), f"{fmt!r} stochastic r={r} U={uu} x={x!r}: got {g!r}, oracle {want}"


@pytest.mark.parametrize("fmt_s", SMALL)
def test_every_decision_point_small(fmt_s):
    _check(fmt_s, boundary_inputs(parse_format(fmt_s)))


@pytest.mark.slow
@pytest.mark.parametrize("fmt_s", LARGE)
def test_every_decision_point_11_12_bits(fmt_s):
    _check(fmt_s, boundary_inputs(parse_format(fmt_s)))


@pytest.mark.parametrize("fmt_s", SMALL + LARGE)
def test_encode_decode_every_bit_pattern(fmt_s):
    fmt = parse_format(fmt_s)
    table = fixed_values(fmt) if isinstance(fmt, FixedFormat) else float_values(fmt)
    codes = np.array([c for c, _ in table], dtype=np.uint64)
    vals = decode(codes, fmt)
    for (code, want), got in zip(table, vals.tolist()):
        assert _same(got, want), f"{fmt_s} decode({code:#x}) = {got!r}, oracle {want}"
    # Every value re-encodes to its own pattern, except the aliases: NaNs go to the canonical
    # NaN and, with subnormals off, the exponent-0 patterns all mean ±0.
    back = encode(vals, fmt)
    assert np.array_equal(decode(back, fmt), vals, equal_nan=True)
    canonical = ~np.isnan(vals) & ~((vals == 0) & (codes != 0) & (codes != 1 << (fmt.bits - 1)))
    assert np.array_equal(back[canonical].astype(np.uint64), codes[canonical])


def test_encode_rejects_values_outside_the_format():
    with pytest.raises(ValueError, match="not a value of e4m3fn"):
        encode(np.array([1.0, 0.3]), "e4m3fn")
    with pytest.raises(ValueError, match="infinity has no encoding"):
        encode(np.array([np.inf]), "e4m3fn")
    with pytest.raises(ValueError, match="block format"):
        encode(np.array([1.0]), "mxfp8")
