"""accel.spec.nonlinear: accuracy against libm, frozen bits, operation counts, no libm inside.

Errors are in ulps of the format at the true value (a subnormal's ulp is the smallest
subnormal), against numpy's float64 exp/expm1 (libm: accurate far beyond a 24-bit ulp) or,
for fp64, Decimal. Stated bounds: exp ≤ 1 ulp, expm1 ≤ 1.5 ulp, sigmoid ≤ 2.5 ulp (fp32, fp64)
and ≤ 2 ulp (bf16, fp16, fp16_ibm). For fp32 they hold over every input
(``bench/measure_nonlinear.py``: 0.962, 1.452, 2.402); here over 10^6 inputs that include
the worst ones; the 16-bit formats are tested exhaustively. Responses: |r − r64| ≤
6·2^-p·κ·|r64| (logistic; κ the condition number of the denominator 1 + pE, 1 when pE ≥ 0)
and the componentwise bound of test_softmax_response_accuracy.
"""
from __future__ import annotations

import doctest
import math
from collections import Counter
from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np
import pytest

import accel.spec.nonlinear as nl
from accel.numerics import decode
from accel.spec.accuracy import reference, ulp_errors
from accel.spec.arith import AccArith, CountingArith
from protocol.formats import parse_format

FP32, FP64, BF16 = parse_format("fp32"), parse_format("fp64"), parse_format("bf16")
SIXTEEN = ["bf16", "fp16", "fp16_ibm"]
BOUNDS = {"exp": 1.0, "expm1": 1.5, "sigmoid": 2.5}
BOUNDS_16 = {"exp": 1.0, "expm1": 1.5, "sigmoid": 2.0}

# The inputs of the largest fp32 errors over all 2^32 inputs (bench/measure_nonlinear.py:
# 0.962, 1.452 and 2.402 ulp), and of large ones on the way there.
WORST_FP32 = {"exp": [26.698392868041992, -71.0044174194336],
              "expm1": [-0.6829485893249512, 17.012941360473633],
              "sigmoid": [-4.157293796539307, -4.158505916595459]}


def fp32_bits(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).view(np.uint32).astype(np.int64)


def fp32_sample() -> np.ndarray:
    """About 10^6 fp32 values: random bit patterns, and every pattern near the hard places."""
    rng = np.random.default_rng(2024)
    random = rng.integers(0, 1 << 32, 400_000, dtype=np.uint64).astype(np.uint32)
    ln2 = math.log(2)
    centres = [ln2, ln2 / 2, 1.0, 88.72283, 87.33654, 103.97208, 103.27893, 17.32868, 16.63553,
               *(abs(v) for vs in WORST_FP32.values() for v in vs)]
    near = [np.arange(c - 12_000, c + 12_000) for c in fp32_bits(centres)]
    near.append(np.arange(0, 40_000))                       # ±0 and the smallest subnormals
    near.append(np.arange(0x00800000 - 20_000, 0x00800000))  # the largest subnormals
    pos = np.concatenate(near).astype(np.uint32)
    x = np.concatenate([random, pos, pos | np.uint32(0x80000000)]).view(np.float32)
    return x[~np.isnan(x)].astype(np.float64)


def all_values(name: str) -> np.ndarray:
    """Every non-NaN value of a 16-bit format."""
    x = decode(np.arange(1 << 16, dtype=np.uint32), name).astype(np.float64)
    return x[~np.isnan(x)]


# -- constants -------------------------------------------------------------------------------

def round_exact(v: Fraction, p: int) -> float:
    """v (normal, nonzero) rounded to p significant bits, ties to even, from the exact rational."""
    a = abs(v)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if a < Fraction(2) ** e:
        e -= 1
    scale = Fraction(2) ** (p - 1 - e)
    return math.copysign(float(round(a * scale) / scale), v)


@pytest.mark.parametrize("name, degree, pieces, n_max", [
    ("fp64", 16, 1, 1076), ("fp32", 10, 1, 151), ("fp16", 6, 1, 26), ("bf16", 5, 4, 135),
    ("fp16_ibm", 6, 1, 41)])
def test_constants_per_format(name, degree, pieces, n_max):
    k = nl.constants(parse_format(name))
    assert (k.degree, len(k.ln2_pieces), k.n_max) == (degree, pieces, n_max)
    assert nl.constants(parse_format(name)) is k                       # cached
    assert repr(k).startswith(f"NonlinearConstants({name}: degree {degree}, ")


def test_fp32_constants_are_the_classic_ones():
    k = nl.constants(FP32)
    assert fp32_bits([k.ln2_pieces[0], k.ln2, k.log2e]).tolist() == [0x3F317200, 0x3F317218, 0x3FB8AA3B]
    assert (k.exp_lo, k.exp_hi, k.expm1_lo) == (-104.66522216796875, 89.41598510742188, -18.71497344970703)


@pytest.mark.parametrize("name", ["fp32", "bf16", "fp16", "fp16_ibm"])
def test_constants_double_rounding_is_harmless(name):
    """R(fl64(v)), the definition, equals v rounded once to p bits for every constant."""
    fmt = parse_format(name)
    k, p = nl.constants(fmt), fmt.man_bits + 1
    exact = {k.ln2: nl.LN2, k.log2e: nl.LOG2E, k.ln2_lo: nl.LN2 - sum(map(Fraction, k.ln2_pieces)),
             k.exp_lo: (fmt.emin - fmt.man_bits - 2) * nl.LN2, k.exp_hi: (fmt.emax + 2) * nl.LN2,
             k.expm1_lo: -(p + 3) * nl.LN2}
    exact.update({c: Fraction(1, math.factorial(i)) for i, c in enumerate(k.coeffs, start=2)})
    for value, v in exact.items():
        assert value == round_exact(v, p), (value, v)


# -- the reduction is exact where the docstring says so ---------------------------------------

class ExactnessProbe(AccArith):
    """Records, for each subtraction in order, how many elements it rounded."""

    def __init__(self, fmt) -> None:
        super().__init__(fmt)
        self.rounded: list[int] = []

    def sub(self, a, b):
        exact = np.subtract(a, b)
        out = self.R(exact)
        self.rounded.append(int(np.sum((out != exact) & np.isfinite(exact))))
        return out


@pytest.mark.parametrize("name", ["bf16", "fp16", "fp16_ibm", "e4m3fn", "e5m2", "fp32"])
def test_cody_waite_subtractions_are_exact(name):
    fmt = parse_format(name)
    x = fp32_sample() if name == "fp32" else all_values(name)
    pieces = len(nl.constants(fmt).ln2_pieces)
    for func in (nl.exp, nl.expm1):
        A = ExactnessProbe(fmt)
        with np.errstate(over="ignore"):
            func(A, x)
        assert A.rounded[:pieces] == [0] * pieces           # x − n·c_1 − … − n·c_k
        assert A.rounded[pieces] > 0                         # − R(n·ln2_lo) rounds, as stated


# -- accuracy ---------------------------------------------------------------------------------

@pytest.mark.parametrize("func", ["exp", "expm1", "sigmoid"])
def test_fp32_error_bound(func):
    x = fp32_sample()
    err = ulp_errors(FP32, getattr(nl, func)(AccArith(FP32), x), reference(func, x))
    worst = int(np.argmax(err))
    assert err[worst] <= BOUNDS[func], (x[worst], err[worst])
    assert err[np.isin(x, WORST_FP32[func])].max() > BOUNDS[func] - 0.3   # the sample has them


@pytest.mark.parametrize("name", SIXTEEN)
def test_16bit_formats_exhaustively(name):
    fmt = parse_format(name)
    x = all_values(name)
    for func, bound in BOUNDS_16.items():
        err = ulp_errors(fmt, getattr(nl, func)(AccArith(fmt), x), reference(func, x))
        assert err.max() <= bound, (name, func, x[np.argmax(err)], err.max())


def _decimal_reference(func: str, v: float) -> Fraction:
    with localcontext() as ctx:
        ctx.prec = 60
        if func == "sigmoid":
            return Fraction(1 / (1 + Decimal(-v).exp()))
        e = Decimal(v).exp()
        return Fraction(e - 1 if func == "expm1" else e)


@pytest.mark.parametrize("func", ["exp", "expm1", "sigmoid"])
def test_fp64_error_bound(func):
    rng = np.random.default_rng(64)
    x = np.concatenate([rng.uniform(-745, 709, 600), rng.uniform(-1, 1, 600),
                        rng.standard_normal(300) * 1e-4])
    with np.errstate(over="ignore"):
        got = getattr(nl, func)(AccArith(FP64), x)
    for v, out in zip(x.tolist(), got.tolist()):
        t = _decimal_reference(func, v)
        if t == 0:
            continue
        e = abs(t).numerator.bit_length() - abs(t).denominator.bit_length()
        e = max(e - 1 if abs(t) < Fraction(2) ** e else e, -1022)
        assert abs(Fraction(out) - t) <= Fraction(BOUNDS[func]) * Fraction(2) ** (e - 52), (func, v)


def test_softmax_accuracy():
    """|out − out64| ≤ (C + 2 + |a − m|)·2^-p·out64: each a − m carries half an ulp into exp."""
    A, rng = AccArith(FP32), np.random.default_rng(3)
    for C in (2, 10):
        a = A.R(rng.standard_normal((5000, C)) * rng.choice([0.1, 1, 5, 20], (5000, 1)))
        z = a - a.max(axis=1, keepdims=True)
        ref = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        out = nl.softmax(A, a)
        tol = (C + 2 + np.abs(z)) * 2.0 ** -24 * ref
        assert np.all(np.abs(out - ref) <= np.maximum(tol, 2.0 ** -149))


def test_logistic_response_accuracy():
    A, rng, u = AccArith(FP32), np.random.default_rng(1), 2.0 ** -24
    n = 100_000
    p = A.R(1 / (1 + np.exp(-4 * rng.standard_normal(n))))
    p[:500] = A.R(2.0 ** -rng.uniform(1, 30, 500))                  # p near 0 …
    p[500:1000] = A.R(1 - p[:500])                                  # … and near 1
    d = A.R(rng.standard_normal(n) * 10.0 ** rng.uniform(-12, 1, n))
    d[-1000:] = A.R(rng.standard_normal(1000) * 1e-30)             # r ≈ p(1 − p)d, tiny
    d, p = d[:, None], p[:, None]
    r = nl.logistic_response(A, d, p)
    E = np.expm1(d)
    r64 = p * (1 - p) * E / (1 + p * E)
    kappa = (1 + np.abs(p * E)) / np.abs(1 + p * E)
    assert np.all(np.abs(r - r64) <= 6 * u * kappa * np.abs(r64))
    tiny = np.abs(d) < 1e-6
    assert np.all(np.abs(r - r64)[tiny] <= 4 * u * np.abs(r64)[tiny])   # no cancellation


@pytest.mark.parametrize("C", [2, 10])
def test_softmax_response_accuracy(C):
    """|r_c − r64_c| ≤ (C + 5)·2^-p · p_c(|E_c| + T)/|1 + S| · (1 + (1 + T)/|1 + S|), T = Σ p_k|E_k|.

    The first factor covers E_c − S cancelling (r_c ≈ 0 when d_c is the p-weighted mean of
    d, e.g. all d equal), the second 1 + S cancelling; tiny d keeps full relative accuracy.
    """
    A, rng, u = AccArith(FP32), np.random.default_rng(C), 2.0 ** -24
    a = rng.standard_normal((20_000, C)) * 3
    e = np.exp(a - a.max(axis=1, keepdims=True))
    p = A.R(e / e.sum(axis=1, keepdims=True))
    d = A.R(rng.standard_normal(a.shape) * 10.0 ** rng.uniform(-10, 0.7, (len(a), 1)))
    r = nl.softmax_response(A, d, p)
    E = np.expm1(d)
    S = (p * E).sum(axis=1, keepdims=True)
    T = (p * np.abs(E)).sum(axis=1, keepdims=True)
    r64 = p * (E - S) / (1 + S)
    scale = p * (np.abs(E) + T) / np.abs(1 + S) * (1 + (1 + T) / np.abs(1 + S))
    assert np.all(np.abs(r - r64) <= (C + 5) * u * scale)


@pytest.mark.parametrize("name", ["fp32", "bf16", "fp16", "fp16_ibm"])
def test_responses_are_finite_for_any_p_in_0_1(name):
    """No inf, NaN or 0/0 for any d (±inf and huge included) and p in [0, 1], rows unnormalised."""
    A, rng = AccArith(parse_format(name)), np.random.default_rng(7)
    specials = [0.0, -0.0, np.inf, -np.inf, 1e30, -1e30, 1e-30, 90.0, -90.0, 20.0, -20.0]
    d = A.R(np.concatenate([np.repeat(specials, 40), rng.standard_normal(2000) * 30]))
    p = A.R(np.resize([0.0, 1.0, 0.5, 2.0 ** -20, 1 - 2.0 ** -11], len(d)))
    r = nl.logistic_response(A, d[:, None], rng.permutation(p)[:, None])
    assert np.all(np.isfinite(r)) and np.all(np.abs(r) <= 1)
    rows = (len(d) // 4, 4)
    d = d[: rows[0] * 4].reshape(rows)
    assert np.all(np.isfinite(nl.softmax_response(A, d, rng.permutation(p)[: d.size].reshape(rows))))
    assert np.all(np.isfinite(nl.softmax_response(A, d, A.R(rng.dirichlet(np.ones(4), rows[0])))))


def test_saturated_responses():
    A = AccArith(FP32)
    p = np.array([[0.25], [1.0], [0.0], [0.5]])
    r = nl.logistic_response(A, np.array([[np.inf], [-np.inf], [np.inf], [-1e30]]), p)
    assert r.ravel().tolist() == [0.75, 0.0, 0.0, -0.5]            # σ(±∞) − p; p = 1 gives 0


# -- special values ---------------------------------------------------------------------------

def as_list(a: np.ndarray) -> list[float]:
    return [float(v) for v in a]


def test_special_values_fp32():
    A = AccArith(FP32)
    tiny, big = 2.0 ** -149, float(np.finfo(np.float32).max)
    x = np.array([0.0, -0.0, tiny, -tiny, np.inf, -np.inf, big, -big, 88.72283172607422,
                  88.72283935546875, -103.97207641601562, -104.0])
    with np.errstate(over="ignore"):
        assert as_list(nl.exp(A, x)) == [1.0, 1.0, 1.0, 1.0, np.inf, 0.0, np.inf, 0.0,
                                          3.402798519021476e+38, np.inf, tiny, 0.0]
        m1 = nl.expm1(A, x)
    assert as_list(m1) == [0.0, -0.0, tiny, -tiny, np.inf, -1.0, np.inf, -1.0,
                            3.402798519021476e+38, np.inf, -1.0, -1.0]
    assert np.signbit(m1[:4]).tolist() == [False, True, False, True]
    s = nl.sigmoid(A, np.array([0.0, -0.0, tiny, np.inf, -np.inf, big, -big, -100.0, -103.0]))
    assert as_list(s) == [0.5, 0.5, 0.5, 1.0, 0.0, 1.0, 0.0, 3.783505853677006e-44, tiny]
    row = nl.softmax(A, np.array([[-np.inf, 0.0, -big, 0.0], [big, -big, 0.0, big]]))
    assert row.tolist() == [[0.0, 0.5, 0.0, 0.5], [0.5, 0.0, 0.0, 0.5]]


def test_saturating_format_saturates():
    fmt = parse_format("fp16_ibm")                                  # float<6,9,sat>
    A = AccArith(fmt)
    x = np.array([1e9, np.inf, 22.0, -np.inf])
    assert nl.exp(A, x).tolist() == [fmt.max_value, fmt.max_value, 3586129920.0, 0.0]
    assert nl.expm1(A, x).tolist() == [fmt.max_value, fmt.max_value, 3586129920.0, -1.0]
    assert nl.sigmoid(A, np.array([-1e9, 1e9])).tolist() == [0.0, 1.0]


# -- known answers ----------------------------------------------------------------------------
# fp32 input bits → output bits; each line's comment gives the values.

FP32_EXP = """
00000000 3f800000   0 → 1
80000000 3f800000   -0 → 1
3f800000 402df854   1 → e
bf800000 3ebc5ab2   -1
3f000000 3fd3094c   0.5
00000001 3f800000   smallest subnormal → 1
80000001 3f800000
33d6bf95 3f800001   1e-7
3f317218 40000000   R(ln2) → 2
3f317219 40000001
bf317218 3f000000   -R(ln2) → 1/2
41200000 46ac14ee   10
c1200000 383e6bce   -10
41a40000 4e3eb628   20.5
42480000 638c881f   50
c2480000 1b692beb   -50
42b17217 7f7fff84   88.72283: largest finite result
42b17218 7f800000   overflow
c2aeac4f 00800026   smallest normal result
c2aeac50 007fffe6   subnormal
c2ce8ecf 00000001   -103.27892
c2cff1b4 00000001   -103.97208: rounds up to the smallest subnormal
c2d00000 00000000   -104 → 0
c28e0243 0c3d013a   -71.00442: 0.95 ulp
41d5964f 52b73f02   26.69839: the largest error over all inputs, 0.962 ulp
7f800000 7f800000   inf
ff800000 00000000   -inf → 0
7f7fffff 7f800000   max → inf
ff7fffff 00000000   -max → 0
"""

FP32_EXPM1 = """
00000000 00000000   0
80000000 80000000   -0 → -0
00000001 00000001   smallest subnormal → itself
80000001 80000001
2edbe6ff 2edbe6ff   1e-10 → itself
aedbe6ff aedbe6ff
3a83126f 3a832337   1e-3
ba83126f ba8301a9   -1e-3
3e99999a 3eb320b2   0.3
be99999a be84b37a   -0.3
3f317218 3f800000   R(ln2) → 1
3f317219 3f800001   first n = 1
bf317218 bf000000   -R(ln2)
bf317219 bf000001
3f800000 3fdbf0a8   1
bf800000 bf21d2a7   -1
40a00000 431369c5   5
c0a00000 bf7e466c   -5
41881a81 4bbab028   17.01294: 1.41 ulp
bf2ed5b8 befd6036   -0.68295: the largest error over all inputs, 1.452 ulp
c1880000 bf800000   -17 → -1
c1900000 bf800000
c1a00000 bf800000
42b17217 7f7fff84   largest finite result
42b17218 7f800000   overflow
7f800000 7f800000   inf
ff800000 bf800000   -inf → -1
"""

FP32_SIGMOID = """
00000000 3f000000   0 → 1/2
80000000 3f000000
00000001 3f000000
3f800000 3f3b26a8   1
bf800000 3e89b2b1   -1
3f000000 3f1f597f   0.5
bf000000 3ec14d03   -0.5
40800000 3f7b6541   4
c0800000 3c9357d1   -4
c085127b 3c7c27bb   -4.15851: 2.29 ulp
c085088d 3c7c74d1   -4.15729: the largest error over all inputs, 2.402 ulp
41200000 3f7ffd06   10
c1200000 383e6997   -10
41880000 3f800000   17 → 1
418c0000 3f800000
c1f00000 29d2b706   -30
c2ae0000 00b33687   -87
c2b17217 00200010   -88.72283: subnormal
c2c80000 0000001b   -100: subnormal, where 1/(1 + e^100) would give 0
c2ce0000 00000001   -103
c2d00000 00000000   -104 → 0
42c80000 3f800000   100
7f800000 3f800000   inf → 1
ff800000 00000000   -inf → 0
"""


def _pairs(table: str) -> tuple[np.ndarray, np.ndarray]:
    words = [line.split()[:2] for line in table.strip().splitlines()]
    x, y = (np.array([int(w[i], 16) for w in words], dtype=np.uint32) for i in (0, 1))
    return x.view(np.float32).astype(np.float64), y


def _as_bits32(y: np.ndarray) -> np.ndarray:
    return y.astype(np.float32).view(np.uint32)


@pytest.mark.parametrize("func, table", [("exp", FP32_EXP), ("expm1", FP32_EXPM1),
                                         ("sigmoid", FP32_SIGMOID)])
def test_known_answers_fp32(func, table):
    x, want = _pairs(table)
    with np.errstate(over="ignore"):
        got = _as_bits32(getattr(nl, func)(AccArith(FP32), x))
    assert [f"{v:08x}" for v in got] == [f"{v:08x}" for v in want]


def _row(hexes: str, width: int = 8) -> np.ndarray:
    dtype = {8: (np.uint32, np.float32), 16: (np.uint64, np.float64)}[width]
    return np.array([int(h, 16) for h in hexes.split()], dtype=dtype[0]).view(dtype[1]).astype(np.float64)


SOFTMAX_FP32 = [  # input row → output row
    ("3f800000 40000000 40400000 40800000", "3d034fe2 3db278b9 3e72916a 3f24d791"),
    ("c47a0000 00000000 447a0000 3f000000", "00000000 00000000 3f800000 00000000"),
    ("3dcccccd be4ccccd 3e99999a 3d4ccccd bfc00000 40000000 00000000 00000000 3f800000 c0400000",
     "3d877d4c 3d48bf00 3da57cb8 3d80e1ad 3c5ad6bb 3ee27790 3d75311d 3d75311d 3e26a009 3b435171"),
    ("ff800000 00000000 00000000 00000000", "00000000 3eaaaaab 3eaaaaab 3eaaaaab"),
]

LOGISTIC_RESPONSE_FP32 = [  # d, p → r
    ("358637bd", "3f000000", "348637bd"),   # d = 1e-6, p = 1/2: r = d/4 to the bit
    ("b58637bd", "3e800000", "b4495399"),
    ("3f000000", "3f000000", "3dfacbf6"),
    ("c0400000", "3f666666", "bf172f78"),
    ("40400000", "3c23d70a", "3e227905"),
    ("41f00000", "3e99999a", "3f333333"),   # d = 30: saturated, 1 − p
    ("c1f00000", "3e99999a", "be99999a"),   # d = −30: −p
    ("43480000", "3f000000", "3f000000"),   # d = 200: clamped, 1 − p
    ("c3480000", "3f800000", "80000000"),   # p = 1, E = −1: 0/0 floored to −0
    ("0da24260", "3f400000", "0c736390"),   # d = 1e-30
    ("c0a00000", "3f800000", "80000000"),
    ("40a00000", "00000000", "00000000"),
    ("7f800000", "3f000000", "3f000000"),
    ("ff800000", "3f000000", "bf000000"),
]

SOFTMAX_RESPONSE_FP32 = [  # d row | p row → r row
    ("358637bd b60637bd 00000000", "3e4ccccd 3e99999a 3f000000", "349652eb b500d957 3456bf82"),
    ("3f000000 bf000000 40000000 3dcccccd", "3dcccccd 3e4ccccd 3e99999a 3ecccccd",
     "bd3449aa be229ed0 3ee7ca34 be7fe32d"),
    ("42c80000 c2c80000", "3f000000 3f000000", "3f000000 bf000000"),
    ("c1f00000 c1f00000", "3f000000 3f000000", "00000000 00000000"),   # 1 + S = 0 floored
    ("40400000 00000000", "3a83126f 3f7fbe77", "3c994467 bc994467"),
]


def test_known_answers_rows_fp32():
    A = AccArith(FP32)
    for a, out in SOFTMAX_FP32:
        assert _as_bits32(nl.softmax(A, _row(a)[None, :])).tolist() == [_row_bits(out)]
    for d, p, r in LOGISTIC_RESPONSE_FP32:
        got = nl.logistic_response(A, _row(d)[None, :], _row(p)[None, :])
        assert _as_bits32(got).tolist() == [_row_bits(r)], (d, p)
    for d, p, r in SOFTMAX_RESPONSE_FP32:
        got = nl.softmax_response(A, _row(d)[None, :], _row(p)[None, :])
        assert _as_bits32(got).tolist() == [_row_bits(r)], (d, p)


def _row_bits(hexes: str) -> list[int]:
    return [int(h, 16) for h in hexes.split()]


# bf16: inputs 1, −1, 0.3, −0.62109375 (expm1's largest error), 66 (exp's), 88.5, 89, −92,
# −2.109375 (sigmoid's), 5.9375.
BF16_IN = "3f80 bf80 3e9a bf1f 4284 42b1 42b2 c2b8 c007 40be"
BF16_OUT = {"exp": "402e 3ebc 3fad 3f0a 6f14 7f4d 7f80 0001 3df8 43be",
            "expm1": "3fdc bf22 3eb4 beee 6f14 7f4d 7f80 bf80 bf61 43be",
            "sigmoid": "3f3b 3e8a 3f13 3eb3 3f80 3f80 3f80 0001 3ddc 3f80"}
# fp64: inputs 1, −1, 0.1, 1e-300, −0.5, 20, 709.78, −745, −700.
FP64_IN = ("3ff0000000000000 bff0000000000000 3fb999999999999a 01a56e1fc2f8f359 bfe0000000000000 "
           "4034000000000000 40862e3d70a3d70a c087480000000000 c085e00000000000")
FP64_OUT = {
    "exp": "4005bf0a8b14576a 3fd78b56362cef38 3ff1aec7b35a00d4 3ff0000000000000 3fe368b2fc6f960a "
           "41bceb088b68e804 7fefe9ce5c4c52b4 0000000000000001 00d14f2b0fb9307f",
    "expm1": "3ffb7e151628aed3 bfe43a54e4e98864 3fbaec7b35a00d3a 01a56e1fc2f8f359 bfd92e9a0720d3ec "
             "41bceb088a68e804 7fefe9ce5c4c52b4 bff0000000000000 bff0000000000000",
    "sigmoid": "3fe764d4f5d5a2bd 3fd136561454ba86 3fe0cca12729afb8 3fe0000000000000 3fd829a0565978df "
               "3feffffffee4b79a 3ff0000000000000 0000000000000001 00d14f2b0fb9307f",
}


@pytest.mark.parametrize("func", ["exp", "expm1", "sigmoid"])
def test_known_answers_bf16_fp64(func):
    x = (np.array(_row_bits(BF16_IN), dtype=np.uint32) << 16).view(np.float32).astype(np.float64)
    with np.errstate(over="ignore"):
        got = _as_bits32(getattr(nl, func)(AccArith(BF16), x)) >> 16
    assert got.tolist() == _row_bits(BF16_OUT[func])
    got = getattr(nl, func)(AccArith(FP64), _row(FP64_IN, 16))
    assert got.view(np.uint64).tolist() == _row_bits(FP64_OUT[func])


# -- operation counts -------------------------------------------------------------------------

SHAPES = {"exp": [(7, 1), (3, 4), (1, 1)], "expm1": [(7, 1), (3, 4)], "sigmoid": [(5, 1), (2, 3)],
          "softmax": [(1, 10), (3, 2), (2, 1)], "logistic_response": [(4, 1), (1, 1)],
          "softmax_response": [(1, 10), (3, 4), (2, 1)]}


@pytest.mark.parametrize("name", ["fp32", "bf16"])
@pytest.mark.parametrize("func", nl.FUNCTIONS)
def test_counts_match_the_analytic_counts(name, func):
    fmt, rng = parse_format(name), np.random.default_rng(5)
    for shape in SHAPES[func]:
        A = CountingArith(fmt)
        a = A.R(rng.standard_normal(shape) * 3)
        if func.endswith("response"):
            getattr(nl, func)(A, a, A.R(rng.uniform(0, 1, shape)))
        else:
            getattr(nl, func)(A, a)
        assert A.ops == nl.op_counts(fmt, func, *shape), (func, shape)


def test_count_keys_and_sizes_fp32():
    k = nl.constants(FP32)
    assert nl.op_counts(FP32, "exp", 1) == Counter({
        "cmp fp32": 2, "mul fp32": 1 + 2 + k.degree, "rint fp32": 1, "add fp32": 2 + k.degree,
        "ldexp fp32": 1})
    per_exp = sum(nl.op_counts(FP32, "exp", 1).values())
    # softmax: a − m, one clamp compare instead of two, ÷ s per element; rowmax, rowsum per row.
    assert sum(nl.op_counts(FP32, "softmax", 1, 10).values()) == 10 * (per_exp + 1) + 2 * 9


# -- no transcendental function in the evaluation ---------------------------------------------

def test_no_transcendental_function_is_used(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a transcendental function was called")

    for f in ("exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "power", "float_power",
              "sinh", "cosh", "tanh"):
        monkeypatch.setattr(np, f, forbidden)
    for f in ("exp", "expm1", "log", "log2", "log10", "log1p", "pow"):
        monkeypatch.setattr(math, f, forbidden)
    nl.constants.cache_clear()                       # the constants' setup is checked too
    nl.response_hi.cache_clear()
    x = np.array([[-3.0, 0.0, 1e-3, 2.5], [-np.inf, 40.0, -0.5, 90.0]])
    p = np.full(x.shape, 0.25)
    for name in ("fp32", "bf16", "fp64"):
        A = AccArith(parse_format(name))
        with np.errstate(over="ignore"):
            for func in ("exp", "expm1", "sigmoid", "softmax"):
                assert getattr(nl, func)(A, x).shape == x.shape
            assert nl.softmax_response(A, x, p).shape == x.shape
            assert nl.logistic_response(A, x[:, :1], p[:, :1]).shape == (2, 1)


def test_docstring_examples():
    result = doctest.testmod(nl, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
