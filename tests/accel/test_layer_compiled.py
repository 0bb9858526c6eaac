"""accel.backends.layer_compiled: bit for bit accel.spec.layer.matmul, and through it every layer."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accel.backends import layer_compiled as lc
from accel.numerics import quantize
from accel.spec import layer
from protocol.formats import parse_format

OPERANDS = ["fp8_ibm", "e4m3fn", "e5m2", "fixed<2,6>", "bf16", "fp16", "e2m1"]
ACCS = ["fp16_ibm", "fp16", "bf16", "fp32", "fp64", "e5m2", "float<4,9>", "float<8,14,nosub>"]
IBM = layer.RECIPES["fp8-ibm"]


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal values, NaN where NaN, and the same sign on every zero."""
    nan = np.isnan(a)
    return (a.shape == b.shape and np.array_equal(nan, np.isnan(b))
            and np.array_equal(a[~nan].view(np.uint64), b[~nan].view(np.uint64)))


def values(seed: int, fmt: str, shape, scale_exp: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    x = g.standard_normal(shape) * 2.0 ** scale_exp
    x[g.random(shape) < 0.1] = 0.0                        # zeros: and some products of −0
    return quantize(x, fmt)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), fa=st.sampled_from(OPERANDS), fb=st.sampled_from(OPERANDS),
       acc=st.sampled_from(ACCS), chunk=st.sampled_from([None, 1, 2, 5, 64]),
       m=st.integers(1, 9), k=st.integers(0, 90), n=st.integers(1, 9),
       scale=st.sampled_from([-24, -8, 0, 6, 14]))
def test_compiled_equals_the_reference_bit_for_bit(seed, fa, fb, acc, chunk, m, k, n, scale) -> None:
    a, b = values(seed, fa, (m, k), scale), values(seed + 1, fb, (k, n), scale)
    fmt = parse_format(acc)
    with np.errstate(over="ignore", invalid="ignore"):
        want = layer.matmul(a, b, fmt, chunk)
    assert same_bits(lc.matmul(a, b, fmt, chunk), want)


@pytest.mark.parametrize("chunk", [None, 7, 64])
@pytest.mark.parametrize("acc", ["fp16_ibm", "fp16", "e5m2"])
def test_shapes_beyond_one_tile_and_band_keep_the_reference_bits(acc, chunk) -> None:
    # 100 rows (bands of 64), 300 columns (tiles of 256), 150 steps (pieces of 64).
    a, b = values(1, "fp8_ibm", (100, 150), 0), values(2, "e4m3fn", (150, 300), -2)
    fmt = parse_format(acc)
    assert same_bits(lc.matmul(a, b, fmt, chunk), layer.matmul(a, b, fmt, chunk))


@pytest.mark.parametrize("acc", ["fp16_ibm", "fp16", "bf16", "fp32"])
def test_both_roundings_of_the_compiled_kernel_are_taken(acc) -> None:
    # fp8 products into these accumulators are held narrow: float32 when its range holds twice
    # the accumulator's largest value, else float64. A product with more significant bits than
    # the accumulator holds (fp16·fp16: 22, fp16·fixed<1,15>: 27) takes the exact rounding.
    fmt = parse_format(acc)
    narrow = lc._held_type(values(1, "fp8_ibm", (4, 4), 0), values(2, "fp8_ibm", (4, 4), 0), fmt)
    assert narrow == (np.float64 if acc in ("fp32", "bf16") else np.float32)
    wide = "fixed<1,15>" if acc == "fp32" else "fp16"
    assert lc._held_type(values(1, "fp16", (4, 4), 0), values(2, wide, (4, 4), -1), fmt) is None


@pytest.mark.parametrize("acc", ["fp16_ibm", "fp16"])
def test_overflow_infinities_and_nan_follow_the_reference(acc) -> None:
    fmt = parse_format(acc)
    a = np.array([[60000.0, 60000.0, 1.0], [57344.0, -57344.0, 0.0], [np.inf, 1.0, 0.0]])
    b = np.array([[60000.0, 1.0], [60000.0, 2.0], [-1.0, np.nan]])
    with np.errstate(over="ignore", invalid="ignore"):
        want = layer.matmul(a, b, fmt, 2)
        got = lc.matmul(a, b, fmt, 2)
    assert same_bits(got, want)
    big = np.full((2, 3), 250.0)                        # fp8 products held narrow, sums overflow fp16
    assert same_bits(lc.matmul(big, big.T, parse_format("fp16"), None),
                     layer.matmul(big, big.T, parse_format("fp16"), None))
    assert lc.matmul(big, big.T, parse_format("fp16"), None)[0, 0] == np.inf


def test_swamped_adds_count_what_the_narrow_sum_loses() -> None:
    ones = np.ones((1, 4096))
    # Without chunks the fp16_ibm sum stops at 1024: the remaining 3072 adds change nothing.
    assert lc.matmul_swamped(ones, ones.T, IBM.acc, None)[1] == 3072
    assert lc.matmul_swamped(ones, ones.T, IBM.acc, 64)[1] == 0
    g = np.random.default_rng(6)
    X = quantize(g.uniform(0.5, 1.0, (8, 4096)), "fp8_ibm")
    W = quantize(g.uniform(0.5, 1.0, (4096, 4)), "fp8_ibm")
    Y, swamped = lc.matmul_swamped(X, W, IBM.acc, None)
    assert np.array_equal(Y, layer.matmul(X, W, IBM.acc, None))
    # 32 dots × 4096 adds: two thirds lose their product entirely (measured 86 186 of 131 072).
    assert 0.6 < swamped / (32 * 4096) < 0.7
    assert lc.matmul_swamped(X, W, IBM.acc, 64)[1] == 0


@pytest.mark.parametrize("acc", ["fp16_ibm", "fp16", "e5m2"])
@pytest.mark.parametrize("chunk", [None, 5, 64])
def test_swamped_adds_are_the_references_count(acc, chunk) -> None:
    """The compiled count (held narrow or exact) equals accel.spec.layer.swamped_adds, which
    walks the same order one add at a time; signs mixed, zeros and ties included."""
    a, b = values(11, "fp8_ibm", (6, 150), 0), values(12, "fp8_ibm", (150, 9), -3)
    b[:40] = np.abs(b[:40])                     # a run of like signs: the sums grow and swamp
    a[:, :40] = np.abs(a[:, :40])
    fmt = parse_format(acc)
    want = layer.swamped_adds(a, b, fmt, chunk)
    Y, got = lc.matmul_swamped(a, b, fmt, chunk)
    assert want > 0 and got == want
    assert same_bits(Y, layer.matmul(a, b, fmt, chunk))


@pytest.mark.parametrize("fmts", [IBM, layer.LayerFormats("e4m3fn", "e4m3fn", "e5m2", "fp16", "fp16", chunk=7)],
                         ids=repr)
def test_every_layer_gives_the_reference_bits_through_the_compiled_product(fmts) -> None:
    g = np.random.default_rng(3)
    X, W = quantize(g.standard_normal((10, 75)), fmts.activations), quantize(g.standard_normal((75, 6)) * 0.1, fmts.weights)
    dY = quantize(g.standard_normal((10, 6)) * 0.05, fmts.errors)
    assert same_bits(layer.dense_forward(X, W, fmts, gemm=lc.matmul), layer.dense_forward(X, W, fmts))
    for got, want in zip(layer.dense_backward(X, W, dY, fmts, gemm=lc.matmul), layer.dense_backward(X, W, dY, fmts)):
        assert same_bits(got, want)
    img = quantize(g.standard_normal((2, 3, 5, 4)), fmts.activations)
    Wc = quantize(g.standard_normal((27, 4)) * 0.2, fmts.weights)
    dYc = quantize(g.standard_normal((2, 4, 5, 4)) * 0.05, fmts.errors)
    assert same_bits(layer.conv3_forward(img, Wc, fmts, gemm=lc.matmul), layer.conv3_forward(img, Wc, fmts))
    for got, want in zip(layer.conv3_backward(img, Wc, dYc, fmts, gemm=lc.matmul),
                         layer.conv3_backward(img, Wc, dYc, fmts)):
        assert same_bits(got, want)


def test_compiled_results_are_deterministic_and_independent_of_orientation() -> None:
    a, b = values(5, "fp8_ibm", (40, 200), 0), values(6, "fp8_ibm", (200, 3), 0)
    first = lc.matmul(a, b, IBM.acc, 64)
    assert same_bits(first, lc.matmul(a, b, IBM.acc, 64))
    assert same_bits(first, lc.matmul(b.T, a.T, IBM.acc, 64).T)     # runs the other way round


@pytest.mark.parametrize("acc, operands, held", [("fp16_ibm", "fp8_ibm", np.float32), ("fp16", "fp8_ibm", np.float32),
                                                  ("fp32", "bf16", np.float64)])
def test_a_sum_that_passes_the_largest_value_and_comes_back_keeps_the_reference_bits(acc, operands, held) -> None:
    # Held narrow, the sum passes the accumulator's largest value and the last three adds
    # bring it back under: fp16_ibm saturates and continues from its largest value, fp16 and
    # fp32 stay infinite. Only a product's final outputs show it, so those are redone exactly.
    fmt = parse_format(acc)
    big = 0.75 * 2.0 ** (fmt.emax // 2)                # big² < 2^emax: the products are held narrow
    n = int(fmt.max_value // big**2) + 1                                  # n·big² passes the largest value
    a = np.array([[big] * n + [-big] * 3, [1.0] * (n + 3)])
    b = np.concatenate([np.full((n + 3, 1), big), np.ones((n + 3, 1))], axis=1)
    assert lc._held_type(a, b, fmt) == held
    for chunk in (2, None):
        with np.errstate(over="ignore", invalid="ignore"):
            want = layer.matmul(a, b, fmt, chunk)
            got, swamped = lc.matmul_swamped(a, b, fmt, chunk)
            assert same_bits(lc.matmul(a, b, fmt, chunk), want)
        assert same_bits(got, want) and swamped == layer.swamped_adds(a, b, fmt, chunk)
    assert (want[0, 0] < fmt.max_value) == (acc == "fp16_ibm")       # without chunks: saturated, came back


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(1, 70), k=st.integers(0, 70), n=st.integers(1, 70),
       a_layout=st.sampled_from(["C", "F", "strided"]), b_layout=st.sampled_from(["C", "F", "strided"]),
       acc=st.sampled_from(["fp16_ibm", "fp16", "e5m2"]), chunk=st.sampled_from([None, 3, 64]))
def test_transposed_and_strided_operands_keep_the_reference_bits(seed, m, k, n, a_layout, b_layout, acc,
                                                                  chunk) -> None:
    """Either operand a transposed view or a strided slice, either way round (the loops run
    along N or along M): the same bits and the same swamped adds."""
    def laid_out(x: np.ndarray, layout: str) -> np.ndarray:
        if layout == "F":
            return np.asfortranarray(x)
        wide = np.zeros((x.shape[0], 2 * x.shape[1]))
        wide[:, ::2] = x
        return wide[:, ::2] if layout == "strided" else x
    fmt = parse_format(acc)
    a, b = laid_out(values(seed, "fp8_ibm", (m, k), 0), a_layout), laid_out(values(seed + 1, "e5m2", (k, n), -2), b_layout)
    with np.errstate(over="ignore", invalid="ignore"):
        want = layer.matmul(a, b, fmt, chunk)
        got, swamped = lc.matmul_swamped(a, b, fmt, chunk)
    assert same_bits(got, want) and got.flags.c_contiguous
    assert swamped == layer.swamped_adds(a, b, fmt, chunk)


def test_the_scale_goes_on_the_operand_whose_range_takes_it() -> None:
    # fp16_ibm sums are held in float32 scaled by 2^96, its top binade onto float32's: a's
    # 2^40 cannot take that scale (2^136), so b carries it. 2^-250 cannot take it either
    # (below float32's 2^-149) and 2^230 is beyond float32: float64, scaled by 2^992.
    fmt = parse_format("fp16_ibm")
    a = np.array([[2.0 ** 40, -(2.0 ** 38)], [2.0 ** 36, 2.0 ** 39]])
    b = np.array([[0.75 * 2.0 ** -30, 2.0 ** -31], [1.5 * 2.0 ** -29, -(2.0 ** -28)]])
    assert lc._narrow_plan(lc._operand(a), lc._operand(b), fmt) == (np.float32, 0, 96)
    assert lc._narrow_plan(lc._operand(b.T), lc._operand(a.T), fmt) == (np.float32, 96, 0)
    tiny, huge = np.array([[2.0 ** -250, -(2.0 ** -251)]]), np.array([[2.0 ** 230], [1.5 * 2.0 ** 229]])
    assert lc._narrow_plan(lc._operand(tiny), lc._operand(huge), fmt) == (np.float64, 992, 0)
    for x, y in ((a, b), (b.T, a.T), (tiny, huge)):
        assert same_bits(lc.matmul(x, y, fmt, 1), layer.matmul(x, y, fmt, 1))


INTO = ["fp8_ibm", "e4m3fn", "e5m2", "e2m1", "float<4,0>", "float<3,1,nosub>", "fp16", "bf16", "fixed<2,6>"]


def test_the_fused_output_rounding_is_quantize_on_ties_subnormals_overflow_and_zeros() -> None:
    # One product each (K = 1): the sums are these fp16_ibm values, rounded once into each format
    # (ties to even, the subnormal steps, saturation or infinity, the sign of a zero).
    acc = parse_format("fp16_ibm")
    sums = quantize(np.array([1.125, 1.375, -1.125, 2.5, -(2.0 ** -20), 1.5 * 2.0 ** -16, 1.25 * 2.0 ** -15,
                              2.0 ** -14 * 0.875, 2.0 ** 20, -(2.0 ** 20), 0.0, 61440.0, 3.0, 6.5, -(2.0 ** -39)]), acc)
    a, b = sums[:, None], np.ones((1, 3))
    for name in INTO:
        into = parse_format(name)
        with np.errstate(over="ignore"):
            want = quantize(layer.matmul(a, b, acc, None), into)
        for got in (lc.matmul(a, b, acc, None, into), lc.matmul_swamped(a, b, acc, 64, into)[0],
                    lc.matmul(b.T, a.T, acc, None, into).T):
            assert same_bits(got, want), name
    assert np.signbit(lc.matmul(a, b, acc, None, parse_format("fp8_ibm"))[4]).all()      # −2^-20: −0


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), into=st.sampled_from(INTO), acc=st.sampled_from(["fp16_ibm", "fp16", "fp32"]),
       chunk=st.sampled_from([None, 4, 64]), m=st.integers(1, 40), k=st.integers(0, 40), n=st.integers(1, 40),
       scale=st.sampled_from([-20, -10, -4, 0, 4, 8]))
def test_the_fused_output_rounding_equals_quantize_after_the_product(seed, into, acc, chunk, m, k, n, scale) -> None:
    a, b = values(seed, "fp8_ibm", (m, k), scale), values(seed + 1, "e4m3fn", (k, n), 0)
    fmt, out = parse_format(acc), parse_format(into)
    with np.errstate(over="ignore", invalid="ignore"):
        want = layer.matmul(a, b, fmt, chunk, out)
        assert same_bits(want, quantize(layer.matmul(a, b, fmt, chunk), out))
        assert same_bits(lc.matmul(a, b, fmt, chunk, out), want)


def test_steps_with_a_zero_a_element_keep_signed_zeros_and_counts() -> None:
    # Held narrow, a step whose a element is ±0 is skipped: it adds ±0 to sums that are never
    # −0. Whole rows and columns of zeros against negative b, and the same swamped adds.
    a = values(21, "fp8_ibm", (5, 70), 0)
    a[1] = 0.0
    a[2] = -0.0
    a[:, ::3] = -0.0
    b = -np.abs(values(22, "fp8_ibm", (70, 20), 0))
    for chunk in (None, 8):
        want = layer.matmul(a, b, IBM.acc, chunk)
        got, swamped = lc.matmul_swamped(a, b, IBM.acc, chunk)
        assert same_bits(got, want) and swamped == layer.swamped_adds(a, b, IBM.acc, chunk)
        assert not np.signbit(got[1:3]).any()                        # +0: every add of a ±0 product
