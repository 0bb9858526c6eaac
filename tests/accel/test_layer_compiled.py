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
