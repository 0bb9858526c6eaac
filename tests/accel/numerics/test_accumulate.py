"""Chunked / compensated accumulation: swamping facts, order, independence from batching."""
from __future__ import annotations

from collections import Counter

import ml_dtypes
import numpy as np
import pytest

from accel.numerics import LaneRNG, quantize
from accel.numerics.accumulate import accumulate, dot
from accel.numerics.arith import mul


def _ulp_fp16_ibm(v: np.ndarray) -> np.ndarray:
    """Spacing of (1,6,9) at positive normal values v."""
    return 2.0 ** (np.floor(np.log2(v)) - 9)


# --- what must be shown, item 4: swamping ---------------------------------------------------

def test_naive_sum_of_ones_stalls_at_1024_in_fp16_ibm_and_2048_in_fp16() -> None:
    assert accumulate(np.ones(1024), acc="fp16_ibm") == 1024
    assert accumulate(np.ones(5000), acc="fp16_ibm") == 1024     # 1024 + 1 is a tie, back to 1024
    assert accumulate(np.ones(2048), acc="fp16") == 2048
    assert accumulate(np.ones(5000), acc="fp16") == 2048


@pytest.mark.parametrize("n", [64, 64 * 17, 64 * 1000, 65536])
def test_chunks_of_64_keep_the_fp16_ibm_sum_of_ones_exact_up_to_65536(n: int) -> None:
    assert accumulate(np.ones(n), acc="fp16_ibm", chunk=64) == n


def test_chunks_of_64_stop_being_exact_just_past_65536() -> None:
    # 1025 partials of 64: 65600 needs 11 significant bits; the tie goes to even, 65536.
    assert accumulate(np.ones(65600), acc="fp16_ibm", chunk=64) == 65536


def test_stochastic_naive_sum_is_unbiased_within_three_standard_deviations() -> None:
    n, rows = 8192, 64
    ones = np.ones((rows, n))
    got = accumulate(ones, acc="fp16_ibm", rounding="stochastic", rng=LaneRNG(2018, 0, rows))
    err = got - n
    # Adding 1 to v (> 1024) rounds up with probability 1/ulp(v): variance ulp² p (1-p) = ulp - 1.
    # Unbiased, so v stays near the step count; the errors of the adds are uncorrelated.
    steps = np.arange(1, n, dtype=np.float64)
    var = np.sum(np.maximum(_ulp_fp16_ibm(steps) - 1, 0))
    sd = np.sqrt(var)                                    # ≈ 189 for n = 8192
    assert abs(err.mean()) <= 3 * sd / np.sqrt(rows)
    assert np.all(np.abs(err) <= 4 * sd)
    assert 0.7 * sd <= err.std() <= 1.3 * sd
    assert n - accumulate(np.ones(n), acc="fp16_ibm") > 30 * sd   # nearest-even stalls at 1024


# --- exactness against independent references -----------------------------------------------

def _fp16_values(g: np.random.Generator, shape, scale: float = 1.0) -> np.ndarray:
    return g.standard_normal(shape).astype(np.float16).astype(np.float64) * scale


def test_fp16_accumulator_matches_numpy_float16_additions() -> None:
    # numpy adds float16 in float32 and rounds once: 24 >= 2·11 + 2 bits, so it is correctly rounded.
    x = _fp16_values(np.random.default_rng(1), 3000, scale=4.0)
    want, s, c = np.float16(0), np.float16(0), np.float16(0)
    for t in x.astype(np.float16):
        want = np.float16(want + t)
        y = np.float16(t - c)
        u = np.float16(s + y)
        c = np.float16(np.float16(u - s) - y)
        s = u
    assert accumulate(x, acc="fp16") == float(want)
    assert accumulate(x, acc="fp16", kahan=True) == float(s)


def test_bf16_accumulator_matches_ml_dtypes_additions() -> None:
    x = np.random.default_rng(2).standard_normal(2000).astype(ml_dtypes.bfloat16)
    want = ml_dtypes.bfloat16(0)
    for t in x:
        want = ml_dtypes.bfloat16(want + t)
    assert accumulate(x.astype(np.float64), acc="bf16") == float(want)


def test_chunked_fp16_dot_with_fp32_accumulator_matches_a_float32_loop() -> None:
    g = np.random.default_rng(3)
    a, b = _fp16_values(g, 1000), _fp16_values(g, 1000)
    partials = []
    for j in range(0, 1000, 64):  # fp16·fp16 is exact in float32 (22 bits): product format fp32
        s = np.float32(0)
        for i in range(j, min(j + 64, 1000)):
            s = np.float32(s + np.float32(a[i]) * np.float32(b[i]))
        partials.append(s)
    want = np.float32(0)
    for s in partials:
        want = np.float32(want + s)
    assert dot(a, b, product="fp32", acc="fp32", chunk=64) == float(want)


def test_products_are_rounded_once_into_the_product_format() -> None:
    g = np.random.default_rng(4)
    a, b = g.standard_normal(300), g.standard_normal(300)   # 53-bit factors: a·b is not a float64
    terms = mul(a, b, "e4m3fn")                             # exactly rounded (test_arith)
    assert dot(a, b, product="e4m3fn", acc="fp16") == accumulate(terms, acc="fp16")


# --- the order is fixed -------------------------------------------------------------------------

@pytest.mark.parametrize("acc,kahan", [("fp16", False), ("fp16_ibm", True), ("bf16", False)])
def test_chunk_of_one_and_chunk_of_n_equal_the_naive_order(acc: str, kahan: bool) -> None:
    x = quantize(_fp16_values(np.random.default_rng(5), (3, 257), scale=8.0), acc)
    naive = accumulate(x, acc=acc, kahan=kahan)
    assert np.array_equal(accumulate(x, acc=acc, chunk=1, kahan=kahan), naive)
    assert np.array_equal(accumulate(x, acc=acc, chunk=257, kahan=kahan), naive)
    assert not np.array_equal(accumulate(x, acc=acc, chunk=16, kahan=kahan), naive)


@pytest.mark.parametrize("chunk", [None, 1, 7, 64])
def test_results_do_not_depend_on_batching(chunk) -> None:
    g = np.random.default_rng(6)
    a, b = g.standard_normal((5, 4, 200)), g.standard_normal(200)
    batched = dot(a, b, product="fp16", acc="fp16_ibm", chunk=chunk, kahan=chunk == 7)
    assert batched.shape == (5, 4)
    for i in range(5):
        for j in range(4):
            one = dot(a[i, j], b, product="fp16", acc="fp16_ibm", chunk=chunk, kahan=chunk == 7)
            assert one == batched[i, j]


def test_kahan_recovers_what_swamping_loses() -> None:
    x = np.full(4096, 0.1)
    exact = 4096 * float(quantize(np.array([0.1]), "fp16")[0])
    naive, comp = accumulate(x, acc="fp16"), accumulate(x, acc="fp16", kahan=True)
    assert abs(naive - exact) > 20 and abs(comp - exact) <= 0.25  # ulp(409.6) = 0.25


def test_stochastic_draws_follow_the_documented_order() -> None:
    # 2 rows of 3 terms, chunk 2: chunk 0 = terms 0, 1; chunk 1 = term 2.
    a, b = np.full((2, 3), 1 / 3), np.array([1.0, 3.0, 5.0])
    twin = LaneRNG(9, 0, 1)  # one lane: a single stream, replayed by hand below
    sr = dict(rounding="stochastic")

    def q(x, n):  # every sum here is exact in float64, so quantize(x + y) is the rounded add
        return quantize(x, "fp16_ibm", rng=twin.words(n), **sr)

    t = quantize(a * b, "e5m2", rng=twin.words(6).reshape(2, 3), **sr)  # products, C order
    step0 = q(np.array([0 + t[0, 0], 0 + t[0, 2], 0 + t[1, 0], 0 + t[1, 2]]), 4)  # (row, chunk)
    p0 = q(np.array([step0[0] + t[0, 1], step0[2] + t[1, 1]]), 2)  # step 1: chunk 0 only
    total = q(0 + np.array([p0[0], p0[1]]), 2)                      # partial-sum stage
    total = q(total + np.array([step0[1], step0[3]]), 2)
    kw = dict(product="e5m2", acc="fp16_ibm", chunk=2, **sr)
    assert np.array_equal(dot(a, b, rng=LaneRNG(9, 0, 1), **kw), total)
    assert np.array_equal(dot(a, b, rng=LaneRNG(9, 0, 1).words(6 + 4 + 2 + 2 + 2), **kw), total)
    assert not np.array_equal(dot(a, b, rng=LaneRNG(10, 0, 1), **kw), total)
    with pytest.raises(ValueError, match="one word per rounding \\(10\\)"):
        accumulate(t, acc="fp16_ibm", chunk=2, rng=np.zeros(9, np.uint32), **sr)


def test_kahan_stochastic_words_are_drawn_per_operation() -> None:
    x = np.random.default_rng(9).standard_normal((3, 10))
    got = accumulate(x, acc="fp16", kahan=True, chunk=4, rounding="stochastic", rng=LaneRNG(5, 0, 1))
    words = LaneRNG(5, 0, 1).words(4 * 3 * (10 + 3))  # four operations per term and per partial
    assert np.array_equal(got, accumulate(x, acc="fp16", kahan=True, chunk=4, rounding="stochastic",
                                          rng=words))


# --- counts and rejections ----------------------------------------------------------------------

def test_operation_counts_name_the_formats() -> None:
    counts: Counter = Counter()
    dot(np.ones((4, 100)), np.ones(100), product="e4m3fn", acc="fp16_ibm", chunk=32, kahan=True,
        counts=counts)
    assert counts == {"mul e4m3fn": 400, "round e4m3fn nearest_even": 400,
                      "add fp16_ibm": 4 * 4 * (100 + 4), "round fp16_ibm nearest_even": 4 * 4 * (100 + 4)}


def test_bad_settings_are_rejected_with_the_valid_choices() -> None:
    with pytest.raises(ValueError, match="positive integer or None"):
        accumulate(np.ones(4), chunk=0)
    with pytest.raises(ValueError, match="pass rbits <= 28"):
        accumulate(np.ones(4), acc="fp32", rounding="stochastic", rng=LaneRNG(1, 0, 1))
    with pytest.raises(ValueError, match="reduction axis"):
        dot(1.0, 2.0)
    assert accumulate(np.ones((3, 0)), acc="fp16").tolist() == [0.0, 0.0, 0.0]
