"""quantize's entry points: argument checking, dtypes and types, blocks, saturation counts."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from accel.numerics import ROUNDINGS, LaneRNG, block_exponents, quantize
from protocol.formats import FormatError, parse_format


def test_kernel_codes_follow_the_protocol_order():
    # compiled kernels switch on these codes: a reordered tuple would silently change modes
    assert ROUNDINGS == ("nearest_even", "nearest_away", "toward_zero", "up", "down", "odd",
                         "stochastic")


def test_bad_arguments_are_rejected_with_the_valid_choices():
    with pytest.raises(FormatError, match="accepted forms"):
        quantize(np.ones(2), "e4m3x")
    with pytest.raises(ValueError, match="'nearest_even', 'nearest_away'"):
        quantize(np.ones(2), "fp16", rounding="nearest")
    with pytest.raises(ValueError, match="rbits must be"):
        quantize(np.ones(2), "fp16", rounding="stochastic", rng=LaneRNG(1, 0, 1), rbits=33)
    with pytest.raises(ValueError, match="needs rng"):
        quantize(np.ones(2), "fp16", rounding="stochastic")
    with pytest.raises(ValueError, match="one word"):
        quantize(np.ones(2), "fp16", rounding="stochastic", rng=np.zeros(3, np.uint32))
    with pytest.raises(TypeError, match="float32 or float64"):
        quantize(np.ones(2, np.int64), "fp16")
    with pytest.raises(ValueError, match="float32 cannot hold"):
        quantize(np.ones(2, np.float32), "float<8,30>")


def test_types_and_dtypes_come_back_unchanged():
    assert quantize(0.3, "e4m3fn") == 0.3125 and isinstance(quantize(0.3, "e4m3fn"), float)
    x32 = np.array([[0.3, -1e30], [7e-3, 1.0]], np.float32)
    y32 = quantize(x32, "fp16")
    assert y32.dtype == np.float32 and y32.shape == (2, 2) and y32[0, 1] == -np.inf
    t = torch.tensor([0.3, 2.0**-30], dtype=torch.float64)
    yt = quantize(t, "bf16")
    assert isinstance(yt, torch.Tensor) and yt.dtype == torch.float64
    assert yt.tolist() == [0.30078125, 2.0**-30]
    t32 = torch.tensor([0.3], dtype=torch.float32)
    assert quantize(t32, "e5m2").dtype == torch.float32
    nc = np.arange(12.0).reshape(3, 4)[:, ::2]  # non-contiguous view
    assert np.array_equal(quantize(nc, "fixed<5,0>"), np.clip(nc, -16, 15))


def test_signed_zero_and_specials():
    y = quantize(np.array([-1e-30, -0.0, np.nan, np.inf, -np.inf]), "e4m3fn")
    assert math.copysign(1, y[0]) == -1 and math.copysign(1, y[1]) == -1
    assert np.isnan(y[2]) and y[3] == 448 and y[4] == -448
    assert quantize(np.array([np.inf]), "fp16")[0] == np.inf
    assert np.isnan(quantize(np.array([np.inf]), "float<4,3,fn,nan>")[0])
    # fixed point has one zero
    assert math.copysign(1, quantize(-1e-9, "fixed<1,7>")) == 1


def test_overflow_rules_and_saturation_counts():
    x = np.array([1e6, -1e6, 65504.0, 65520.0, 1.0])
    y, n = quantize(x, "fp16", return_saturated=True)
    assert y.tolist() == [np.inf, -np.inf, 65504.0, np.inf, 1.0] and n == 3
    y, n = quantize(x, "fp16", rounding="toward_zero", return_saturated=True)
    assert y.tolist() == [65504.0, -65504.0, 65504.0, 65504.0, 1.0] and n == 2  # 65520 truncates to max
    y, n = quantize(np.array([1.5, -3.0, 0.25]), "fixed<1,2,wrap>", return_saturated=True)
    assert y.tolist() == [-0.5, -1.0, 0.25] and n == 2  # codes 6, -12 wrap mod 8 to -2, -4
    y, n = quantize(np.array([1.5, -3.0]), "fixed<1,2>", return_saturated=True)
    assert y.tolist() == [0.75, -1.0] and n == 2


def test_float64_input_is_rounded_once():
    x = 1 + 2.0**-11 + 2.0**-40  # float32 would land on the fp16 midpoint and tie to even
    assert quantize(x, "fp16") == 1 + 2.0**-10
    assert quantize(np.float32(x).item(), "fp16") == 1.0


def _block_reference(x, fmt, mode="nearest_even", words=None):
    """Shared exponents from the definition with math.frexp, element by element."""
    el, k = fmt.element, fmt.block or x.size
    out = np.empty_like(x)
    for s in range(0, x.size, k):
        blk = x[s:s + k]
        amax = max(abs(v) for v in blk)
        if any(math.isnan(v) for v in blk):
            out[s:s + k] = np.nan
            continue
        if amax == 0:
            X = fmt.scale_min_exp
        elif fmt.scale_rule == "floor":
            X = math.frexp(amax)[1] - 1 - (math.frexp(el.max_value)[1] - 1)
        else:
            X = next(X for X in range(-200, 200) if amax <= el.max_value * 2.0**X)
        X = min(max(X, fmt.scale_min_exp), fmt.scale_max_exp)
        w = None if words is None else words[s:s + k]
        out[s:s + k] = quantize(blk * 2.0**-X, el, mode, rng=w) * 2.0**X
    return out


@pytest.mark.parametrize("fmt_s", ["mxfp8", "mxfp4", "bfp<8,16>", "flex16+5", "bfp<e5m2,4,ceil>"])
def test_block_formats_follow_the_shared_exponent_rule(fmt_s):
    fmt = parse_format(fmt_s)
    x = np.random.default_rng(0).standard_normal(1000) * np.repeat(2.0 ** np.arange(-5, 5), 100)
    x[64:96] = 0.0
    x[200] = np.nan
    x[300:310] = 1e-6 * x[300:310]  # tiny elements beside large ones: element subnormals
    words = np.random.default_rng(1).integers(0, 2**32, x.size, dtype=np.uint32)
    for mode in ("nearest_even", "stochastic", "toward_zero", "nearest_away"):
        got = quantize(x, fmt, mode, rng=words)
        assert np.array_equal(got, _block_reference(x, fmt, mode, words), equal_nan=True), mode
    x32 = x.astype(np.float32)
    assert np.array_equal(quantize(x32, fmt, "stochastic", rng=words),
                          _block_reference(x32.astype(np.float64), fmt, "stochastic", words), equal_nan=True)
    if fmt.scale_rule == "ceil":
        assert quantize(x[~np.isnan(x)], fmt, return_saturated=True)[1] == 0


def test_block_exponents_ocp_mx():
    fmt = parse_format("mxfp8")
    x = np.concatenate([np.full(32, 3.0), np.zeros(32), [1e-45] * 5])
    assert block_exponents(x, fmt).tolist() == [1 - 8, -127, -127]


def test_quantize_never_imports_torch():
    """A daemon sees numpy arrays only: importing torch to recognise tensors cost every first
    load_data 6-9 s and hundreds of MB. Tensors still work once their caller has torch."""
    import subprocess
    import sys
    code = ("import sys, numpy as np; from accel.numerics import quantize; quantize(np.ones(3), 'fp16'); "
            "assert 'torch' not in sys.modules; import torch; print(quantize(torch.ones(2), 'bf16').dtype)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "torch.float32", out.stderr
