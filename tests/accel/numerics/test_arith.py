"""add/mul rounded once from the exact result, checked against the Fraction oracle."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from accel.numerics import ROUNDINGS, quantize
from accel.numerics.arith import add, check_exact, mul
from oracle import exact, round_exact
from protocol.formats import parse_format

FORMATS = ["fp16", "bf16", "e4m3fn", "e5m2", "fp16_ibm", "fixed<4,12>", "fp32"]


def _signed(x: float) -> Fraction:
    sign, mag = exact(float(x))
    return -mag if sign else mag


def _oracle(value: Fraction, zero_sign: int, fmt, mode: str, u: int, r: int) -> tuple[int, object]:
    return round_exact((zero_sign if value == 0 else int(value < 0), abs(value)), fmt, mode, u=u, r=r)


def _pairs(fmt_s: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Operand pairs whose exact sums sit on, next to and far between the format's midpoints.

    a is a format value; b is a (half-)multiple of ulp(a) nudged by 2^-j ulp (j up to 60, far
    beyond float64's reach in a + b), or a random float64 scaled down by up to 2^-80.
    """
    g = np.random.default_rng(seed)
    fmt = parse_format(fmt_s)
    a = quantize(g.standard_normal(n) * 2.0 ** g.integers(-6, 7, n), fmt)
    a[a == 0] = 1.0
    if hasattr(fmt, "man_bits"):
        ulp = 2.0 ** (np.floor(np.log2(np.abs(a))) - fmt.man_bits)
    else:
        ulp = np.full(n, fmt.eps)
    half_steps = g.integers(-4, 5, n) / 2
    nudge = g.choice([0.0, 1.0, -1.0], n) * 2.0 ** -g.integers(20, 61, n)
    crafted = ulp * (half_steps + nudge)
    wide = g.standard_normal(n) * np.abs(a) * 2.0 ** -g.integers(0, 81, n)
    b = np.where(g.random(n) < 0.6, crafted, wide)
    return a, b


@pytest.mark.parametrize("fmt_s", FORMATS)
@pytest.mark.parametrize("op", ["add", "mul"])
def test_every_mode_matches_the_exact_oracle(fmt_s: str, op: str) -> None:
    fmt = parse_format(fmt_s)
    a, b = _pairs(fmt_s, 600, seed=len(fmt_s))
    if op == "mul":
        b = 1.0 + b / np.abs(a)  # products 1 + tiny: midpoints of a·b and beyond float64
    words = np.random.default_rng(7).integers(0, 2**32, a.size, dtype=np.uint32)
    for mode in ROUNDINGS:
        r = 28 if fmt_s == "fp32" else 32  # fp32 needs 24 + r + 1 <= 53
        kw = dict(rng=words, rbits=r) if mode == "stochastic" else {}
        got = (add if op == "add" else mul)(a, b, fmt, rounding=mode, **kw)
        for i in range(a.size):
            exact_value = (_signed(a[i]) + _signed(b[i]) if op == "add" else _signed(a[i]) * _signed(b[i]))
            zero_sign = int(mode == "down") if op == "add" else int(np.signbit(a[i]) != np.signbit(b[i]))
            want = _oracle(exact_value, zero_sign, fmt, mode, int(words[i]) >> (32 - r), r)
            assert exact(float(got[i])) == want, (op, mode, a[i].hex(), b[i].hex(), got[i], want)


def test_float64_then_round_would_be_wrong_where_add_is_right() -> None:
    a, b = np.array([1.0]), np.array([2.0**-11 + 2.0**-63])  # 1 + b: above fp16's midpoint
    assert quantize(a + b, "fp16")[0] == 1.0                  # float64 rounds onto the midpoint first
    assert add(a, b, "fp16")[0] == 1.0 + 2.0**-10
    x, y = np.array([1 + 2.0**-24 - 2.0**-30]), np.array([1 + 2.0**-30])  # x·y just above a fp32 midpoint
    assert quantize(x * y, "fp32")[0] == 1.0
    assert mul(x, y, "fp32")[0] == 1.0 + 2.0**-23
    assert mul(np.array([3.0]), np.array([1 / 3]), "e4m3fn", rounding="down")[0] == 0.9375


@pytest.mark.parametrize("mode,want", [("up", 1 + 2.0**-10), ("down", 1.0), ("toward_zero", 1.0),
                                       ("odd", 1 + 2.0**-10), ("nearest_even", 1.0), ("nearest_away", 1.0)])
def test_an_addend_far_below_float64_precision_still_steers_directed_modes(mode: str, want: float) -> None:
    assert add(np.array([1.0]), np.array([2.0**-80]), "fp16", rounding=mode)[0] == want
    assert add(np.array([-1.0]), np.array([-(2.0**-80)]), "fp16", rounding=mode)[0] == (
        -want if mode not in ("up", "down") else {"up": -1.0, "down": -1 - 2.0**-10}[mode])


def test_stochastic_probability_is_the_exact_fraction_over_all_generator_outcomes() -> None:
    # 1 + k/16 ulp (+ a tail float64 cannot hold in the sum): with r = 4 bits, exactly k of the
    # 16 generator outcomes round up.
    r = 4
    for k in range(16):
        b = np.full(16, k * 2.0**-14 + 2.0**-70)
        words = (np.arange(16, dtype=np.uint32) << np.uint32(28))
        up = add(np.ones(16), b, "fp16", rounding="stochastic", rng=words, rbits=r) > 1.0
        assert up.sum() == k


def test_exact_zero_sums_follow_ieee_signs() -> None:
    a, b = np.array([1.5, 0.0, -0.0, 0.0]), np.array([-1.5, 0.0, -0.0, -0.0])
    assert np.signbit(add(a, b, "fp16")).tolist() == [False, False, True, False]
    assert np.signbit(add(a, b, "fp16", rounding="down")).tolist() == [True, False, True, True]


def test_combinations_that_float64_cannot_round_exactly_are_rejected() -> None:
    with pytest.raises(ValueError, match="pass rbits <= 28"):
        check_exact("fp32", "stochastic")
    assert check_exact("fp32", "stochastic", rbits=28) == parse_format("fp32")
    with pytest.raises(ValueError, match="nearest-even only"):
        add(np.ones(1), np.ones(1), "fp64", rounding="up")
    with pytest.raises(ValueError, match="block format"):
        add(np.ones(1), np.ones(1), "mxfp8")
    with pytest.raises(ValueError, match="'nearest_even', 'nearest_away'"):
        add(np.ones(1), np.ones(1), "fp16", rounding="ties_away")
    with pytest.raises(ValueError, match="2\\^995"):
        mul(np.array([2.0**1000]), np.array([2.0**-1000]), "fp16")
