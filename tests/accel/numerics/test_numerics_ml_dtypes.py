"""Agreement with ml_dtypes on 2^20 float32 inputs, and its float64 double rounding."""
from __future__ import annotations

from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from accel.numerics import quantize
from oracle import exact, round_exact
from protocol.formats import parse_format

# Our variant with ml_dtypes' overflow behaviour (its casts do not saturate): e4m3fn overflow
# gives NaN, e5m2 and the 16-bit formats give inf. The presets e4m3fn and fp8_ibm saturate.
# ml_dtypes warns when it casts overflow and NaN, which the sample includes on purpose.
pytestmark = [pytest.mark.filterwarnings("ignore:overflow encountered in cast"),
              pytest.mark.filterwarnings("ignore:invalid value encountered in cast")]

PEERS = {"float<4,3,fn,nan>": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2,
         "bf16": ml_dtypes.bfloat16, "fp16": np.float16}


def special_sample(fmt, n: int = 2**20) -> np.ndarray:
    """float32 inputs covering every class: zeros, fp32 subnormals, target subnormals and
    normals, target midpoints and their fp32 neighbours, overflow, inf, NaN."""
    rng = np.random.default_rng(11)
    parts = [np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 3.4e38], np.float32)]
    parts.append(rng.integers(0, 2**32, n // 4, dtype=np.uint32).view(np.float32))        # any pattern
    parts.append(rng.integers(1, 2**23, n // 16, dtype=np.uint32).view(np.float32))       # fp32 subnormals
    e = rng.integers(fmt.emin - fmt.man_bits - 2, fmt.emax + 3, n // 4)
    parts.append(np.ldexp(rng.uniform(1, 2, n // 4), e).astype(np.float32))               # target range
    k = rng.integers(0, 2 ** (fmt.man_bits + 1), n // 4)
    q = rng.integers(fmt.emin - fmt.man_bits, fmt.emax - fmt.man_bits + 2, n // 4)
    mid = np.ldexp(k + 0.5, q).astype(np.float32)                                         # midpoints
    parts += [mid, np.nextafter(mid, np.float32(np.inf)), np.nextafter(mid, np.float32(0))]
    x = np.concatenate(parts)[:n]
    return np.where(rng.random(x.size) < 0.5, -x, x).astype(np.float32)


@pytest.mark.parametrize("fmt_s", PEERS)
def test_agrees_with_ml_dtypes_on_float32(fmt_s):
    fmt, peer = parse_format(fmt_s), PEERS[fmt_s]
    x = special_sample(fmt)
    assert x.size == 2**20
    ours = quantize(x, fmt)
    theirs = x.astype(peer).astype(np.float32)
    same = (ours.view(np.uint32) == theirs.view(np.uint32)) | (np.isnan(ours) & np.isnan(theirs))
    assert same.all(), f"{(~same).sum()} disagreements, first x={x[~same][0]!r}"


def test_saturating_preset_differs_from_ml_dtypes_only_on_overflow():
    x = np.array([464.0, 465.0, 1e9, np.inf, -np.inf], np.float32)
    assert quantize(x, "e4m3fn").tolist() == [448.0, 448.0, 448.0, 448.0, -448.0]
    assert np.isnan(x[1:].astype(ml_dtypes.float8_e4m3fn).astype(np.float32)).all()


# float64 inputs just above a midpoint of the target: the exact value rounds up, but ml_dtypes
# before 0.7.0 converted through float32 first, which lands exactly on the midpoint, and
# ties-to-even went down. 0.7.0 rounds float64 once (both measured).
ROUNDS_FLOAT64_ONCE = tuple(int(v) for v in ml_dtypes.__version__.split(".")[:2]) >= (0, 7)
DOUBLE_ROUNDED = [
    ("e4m3fn", ml_dtypes.float8_e4m3fn, 1.0625 + 2.0**-40, 1.125),   # normal range
    ("e4m3fn", ml_dtypes.float8_e4m3fn, 2.5 * 2.0**-9 + 2.0**-40, 3 * 2.0**-9),  # subnormal
    ("e5m2", ml_dtypes.float8_e5m2, 1.125 + 2.0**-40, 1.25),
    ("bf16", ml_dtypes.bfloat16, 1 + 2.0**-8 + 2.0**-40, 1 + 2.0**-7),
]


@pytest.mark.parametrize("fmt_s,peer,x,correct", DOUBLE_ROUNDED)
def test_we_round_float64_once_and_old_ml_dtypes_did_not(fmt_s, peer, x, correct):
    fmt = parse_format(fmt_s)
    assert round_exact(x, fmt, "nearest_even") == (0, Fraction(correct))  # the exact evidence
    assert exact(float(quantize(np.array([x]), fmt)[0])) == (0, Fraction(correct))
    theirs = float(np.array([x]).astype(peer).astype(np.float64)[0])
    through_float32 = float(np.float32(x).astype(peer).astype(np.float64))
    assert through_float32 != correct
    assert theirs == (correct if ROUNDS_FLOAT64_ONCE else through_float32)
