"""cocotb bench for ``int_to_fp32.sv`` and ``offset_update.sv`` (toplevel ``convert_update_tb``).

Run through ``test_rtl_convert_update.py`` (pytest), which builds the design and names this
module and the tests to run. Both units are combinational: each case drives the inputs, waits
1 ns and reads the outputs. Expected values come from the reference in numpy, computed for
all cases of a test at once:

- int_to_fp32: ``quantize(v·2^e, "fp32")``. The float64 v·2^e is exact here (v is a float64
  integer, as every |v| <= 2^53 is for W <= 54, and 2^e lies within float64's normal range;
  both asserted), so quantize rounds the exact value once.
- offset_update: ``accel.backends.emulated.offset_update`` with one random word per element (a
  uint32 array, which quantize takes as element i's word). It returns the saturation count of
  the whole array; the per-element flag is taken from one-element calls for the elements that
  end on a range end (only those can have been clamped), and their sum must equal the count.
"""
from __future__ import annotations

import os
from fractions import Fraction

import cocotb
import numpy as np
from cocotb.triggers import Timer

from accel.backends.emulated import offset_round, offset_update
from accel.numerics import quantize
from protocol.formats import parse_format

FORMATS = [(1, 7), (2, 6), (1, 15), (4, 12), (1, 3)]          # fixed<IL,FL> offsets
RBITS = [0, 1, 5, 8, 32]
RANDOM_CASES = int(os.environ.get("COSIM_RTL_CASES", "10000"))  # per configuration
MAX_FINITE = np.float32(np.finfo(np.float32).max)


def fp32_bits(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).astype(np.float32).view(np.uint32)


def fail_report(what: str, bad: list[str], total: int) -> None:
    if bad:
        raise AssertionError(f"{what}: {len(bad)} of {total} cases differ; first: " + "; ".join(bad[:5]))


# ---------------------------------------------------------------------------------------------
# int_to_fp32


def convert_reference(v: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Binary32 bits of v·2^e rounded to nearest-even, via quantize on the exact float64."""
    assert all(int(float(x)) == x for x in v.tolist()) and e.min() >= -1000 and e.max() <= 1000
    exact = np.ldexp(v.astype(np.float64), e.astype(np.int64))
    return fp32_bits(quantize(exact, "fp32"))


class Converter:
    """One int_to_fp32 instance of the wrapper: ports v_<s>, e_<s>, y_<s>, overflow_<s>."""

    def __init__(self, dut, suffix: str) -> None:
        self.dut = dut
        self.v, self.e = getattr(dut, f"v_{suffix}"), getattr(dut, f"e_{suffix}")
        self.y, self.overflow = getattr(dut, f"y_{suffix}"), getattr(dut, f"overflow_{suffix}")
        self.W, self.EW = len(self.v), len(self.e)


def converters(dut) -> list[Converter]:
    return [Converter(dut, s) for s in "abc"]


async def convert_cases(conv: Converter, v: np.ndarray, e: np.ndarray, what: str) -> None:
    want = convert_reference(v, e)
    bad = []
    for vi, ei, wi in zip(v.tolist(), e.tolist(), want.tolist()):
        conv.v.value = vi
        conv.e.value = ei
        await Timer(1, "ns")
        got = conv.y.value.to_unsigned()
        ovf = int(conv.overflow.value)
        want_ovf = int((wi & 0x7FFFFFFF) == 0x7F800000)
        if got != wi or ovf != want_ovf:
            bad.append(f"v={vi} e={ei}: RTL {got:#010x} ovf {ovf}, reference {wi:#010x} ovf {want_ovf}")
    fail_report(f"int_to_fp32 W={conv.W} {what}", bad, len(v))
    conv.dut._log.info("int_to_fp32 W=%d %s: %d cases", conv.W, what, len(v))


def random_magnitudes(rng: np.random.Generator, n: int, max_bits: int) -> list[int]:
    """n integers whose bit length is uniform in 0..max_bits (all magnitudes equally likely)."""
    out = []
    for length in rng.integers(0, max_bits + 1, n).tolist():
        top = 1 << (length - 1) if length else 0
        out.append(top | int(rng.integers(0, max(top, 1))))
    return out


def edge_cases(W: int, EW: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero, ±1, the extreme v, e at its extremes; the overflow and underflow boundaries."""
    lo, hi = -(1 << (W - 1)), (1 << (W - 1)) - 1
    e_lo, e_hi = -(1 << (EW - 1)), (1 << (EW - 1)) - 1
    cases = []
    for v in (0, 1, -1, 2, -2, 3, -3, lo, hi, lo + 1, hi - 1, 1 << (W - 2), -(1 << (W - 2))):
        for e in (0, 1, -1, -149, -150, -151, -126, -127, 127, 128, 105, 104, e_lo, e_hi, e_lo + 1,
                  -149 - (W - 1), -150 - (W - 1), -151 - (W - 1), 128 - (W - 1), 127 - (W - 1)):
            cases.append((v, e))
    # Around the largest finite (2^24 - 1)·2^104 and the tie (2^25 - 1)·2^103 that overflows.
    for m, e in (((1 << 24) - 1, 104), ((1 << 25) - 1, 103), ((1 << 25) - 3, 103), ((1 << 25) - 2, 103),
                 ((1 << 26) - 1, 102), ((1 << 26) - 2, 102), ((1 << 26) - 3, 102), (1, 127), (1, 128),
                 ((1 << 24) - 1, -149), ((1 << 24) - 1, -150), (3, -151), (1, -150), (1, -149)):
        for s in (1, -1):
            if m.bit_length() < W:
                cases.append((s * m, e))
    v = np.array([c[0] for c in cases], dtype=np.int64)
    e = np.array([c[1] for c in cases], dtype=np.int64)
    return v, e


def random_cases(W: int) -> tuple[np.ndarray, np.ndarray]:
    """Every magnitude of v, e across [-200, 100], then e aimed at the subnormal and overflow ends."""
    rng = np.random.default_rng(20_241 + W)
    n = 3 * RANDOM_CASES
    mags = random_magnitudes(rng, n, W - 1)
    signs = rng.choice([-1, 1], n).tolist()
    v = np.array([s * m for s, m in zip(signs, mags)], dtype=np.int64)
    e = rng.integers(-200, 101, n)
    bl = np.array([m.bit_length() for m in mags])
    third = n // 3
    # Results near the smallest subnormal 2^-149 ... the normal range, and near 2^128.
    e[third:2 * third] = -149 - bl[third:2 * third] + rng.integers(-3, 30, third)
    e[2 * third:] = 128 - bl[2 * third:] + rng.integers(-3, 3, n - 2 * third)
    return v, e


def tie_cases(W: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact ties (and their neighbours ±1 in v's last place): normal results where v has 25
    significant bits, subnormal results anywhere (the tie is at 2^-150 times an odd number)."""
    rng = np.random.default_rng(77 + W)
    vs, es = [], []
    n = RANDOM_CASES // 2
    for _ in range(n):
        sign = int(rng.choice([-1, 1]))
        if W - 1 >= 25 and rng.random() < 0.5:
            # (2m + 1)·2^k with a 24-bit m: the 25th significant bit is the round bit, nothing below.
            m = (1 << 23) | int(rng.integers(0, 1 << 23))
            k = int(rng.integers(0, W - 1 - 25 + 1))
            mag = (2 * m + 1) << k
            e = int(rng.integers(-126 - 24 - k + 1, 100))       # a normal result (or overflow)
        else:
            # Subnormal: v·2^e = (odd/2)·2^-149, i.e. v = odd·2^j and e = -150 - j.
            bits = int(rng.integers(1, min(W - 1, 24) + 1))
            odd = (int(rng.integers(0, 1 << (bits - 1))) << 1) | 1
            j = int(rng.integers(0, W - 1 - odd.bit_length() + 1))
            mag, e = odd << j, -150 - j
        for d in (0, 1, -1):
            if 0 < mag + d < (1 << (W - 1)):
                vs.append(sign * (mag + d))
                es.append(e)
    return np.array(vs, dtype=np.int64), np.array(es, dtype=np.int64)


@cocotb.test()
async def test_convert_edges(dut):
    """edge_cases, at every width."""
    for conv in converters(dut):
        await convert_cases(conv, *edge_cases(conv.W, conv.EW), "edges")


@cocotb.test()
async def test_convert_random(dut):
    """random_cases (3·RANDOM_CASES), at every width."""
    for conv in converters(dut):
        await convert_cases(conv, *random_cases(conv.W), "random")


@cocotb.test()
async def test_convert_ties(dut):
    """tie_cases (about 1.5·RANDOM_CASES), at every width."""
    for conv in converters(dut):
        await convert_cases(conv, *tie_cases(conv.W), "ties")


# ---------------------------------------------------------------------------------------------
# offset_update


def update_t_values(rng: np.random.Generator, n: int, il: int, fl: int) -> np.ndarray:
    """n binary32 steps t (as float64): every magnitude class the update can meet."""
    kind = rng.integers(0, 6, n)
    sign = rng.choice([-1.0, 1.0], n)
    span = 1 << (il + fl + 2)                        # grid points out to 2^(IL+2), past the clamp
    k = rng.integers(-span, span + 1, n).astype(np.float64)
    t = np.empty(n)
    # 0: log-uniform magnitudes from 2^-70 to 2^(IL+3), full 24-bit significands.
    t0 = np.ldexp(rng.uniform(1.0, 2.0, n), rng.integers(-70, il + 4, n)) * sign
    # 1: on the grid; 2: ties (half-grid points); 3: a few fraction bits below the grid, so
    #    the r compared bits, the bits past them and the sticky bit are all exercised.
    t1 = k * 2.0**-fl
    t2 = (k + 0.5) * 2.0**-fl
    t3 = (k + rng.integers(1, 1 << 12, n) * 2.0 ** -rng.integers(1, 40, n)) * 2.0**-fl
    # 4: tiny (2^-60 .. 2^-149, subnormals included); 5: raw finite bit patterns.
    t4 = np.ldexp(rng.uniform(1.0, 2.0, n), rng.integers(-160, -40, n)) * sign
    raw = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    raw = np.where((raw & 0x7F800000) == 0x7F800000, raw & ~np.uint32(0x40000000), raw)
    t5 = raw.view(np.float32).astype(np.float64)
    for i, arr in enumerate((t0, t1, t2, t3, t4, t5)):
        t[kind == i] = arr[kind == i]
    return t.astype(np.float32).astype(np.float64)   # binary32 values (the cast rounds; fine)


def special_t_values(il: int) -> list[float]:
    bound = 2.0 ** (il + 1)
    f32 = np.float32
    vals = [0.0, 2.0**-149, 2.0**-126, 2.0**-60, 1e-30, 1e30, float(MAX_FINITE), bound, 2.0**il,
            float(np.nextafter(f32(bound), f32(0))), float(np.nextafter(f32(bound), f32(np.inf))),
            2.0 ** (il + 2), 0.5, 1.0, 0.75, float("inf")]
    return [s * x for x in vals for s in (1.0, -1.0)]


def boundary_words(rng: np.random.Generator, t: np.ndarray, fl: int, rbits: int) -> np.ndarray:
    """Words whose top r bits U sit at the decision F + U = 2^r or one below it, with random
    low bits (F = ⌊frac(-t·2^FL)·2^r⌋: frac(q - t) = frac(-t·2^FL) since q is on the grid)."""
    r = rbits or 32
    words = []
    for x in t.tolist():
        y = -Fraction(x) * 2**fl
        f = ((y - (y.numerator // y.denominator)) * 2**r).__floor__()
        u = (1 << r) - f - int(rng.integers(0, 2))
        u = min(max(u, 0), (1 << r) - 1)
        low = int(rng.integers(0, 1 << (32 - r))) if r < 32 else 0
        words.append((u << (32 - r)) | low)
    return np.array(words, dtype=np.uint32)


def update_reference(codes: np.ndarray, t: np.ndarray, words: np.ndarray, il: int, fl: int,
                     rounding: str, rbits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(new codes, per-element saturation, per-element kept: Q(q − t) = q before the clamp) from
    the emulated backend's offset_update and offset_round."""
    fmt = parse_format(f"fixed<{il},{fl}>")
    q = codes.astype(np.float64) * 2.0**-fl
    rng = words if rounding == "stochastic" else None
    kw = dict(rbits=rbits or None)
    with np.errstate(invalid="ignore"):
        v, count = offset_update(q, t, fmt, rounding, rng, **kw)
        kept = offset_round(q, t, fmt, rounding, rng, **kw) == q
    new = v * 2.0**fl
    assert np.array_equal(new, np.round(new)), "reference off the grid"
    sat = np.zeros(len(t), dtype=bool)
    for i in np.flatnonzero((v == fmt.min_value) | (v == fmt.max_value)).tolist():
        one = words[i:i + 1] if rng is not None else None
        sat[i] = offset_update(q[i:i + 1], t[i:i + 1], fmt, rounding, one, **kw)[1] == 1
    assert int(sat.sum()) == count, "per-element saturations do not add up to the reference count"
    return new.astype(np.int64), sat, kept


async def update_cases(dut, codes, t, words, il, fl, rounding, rbits, what) -> int:
    want, want_sat, want_kept = update_reference(codes, t, words, il, fl, rounding, rbits)
    dut.il.value, dut.fl.value = il, fl
    dut.stochastic.value = int(rounding == "stochastic")
    dut.rbits.value = rbits
    bits = fp32_bits(t)
    bad = []
    for qi, ti, wi, want_q, want_s, want_k in zip(codes.tolist(), bits.tolist(), words.tolist(), want.tolist(),
                                                  want_sat.tolist(), want_kept.tolist()):
        dut.q.value = qi
        dut.t.value = ti
        dut.word.value = wi
        await Timer(1, "ns")
        got_q = dut.q_next.value.to_signed()
        got_s, got_k = int(dut.saturated.value), int(dut.kept.value)
        if got_q != want_q or got_s != int(want_s) or got_k != int(want_k):
            bad.append(f"q={qi} t={np.uint32(ti).view(np.float32)!r} ({ti:#010x}) word={wi:#010x}: RTL "
                       f"{got_q} sat {got_s} kept {got_k}, reference {want_q} sat {int(want_s)} kept {int(want_k)}")
    fail_report(f"offset_update fixed<{il},{fl}> {rounding} rbits={rbits} {what}", bad, len(codes))
    return len(codes)


def configurations():
    for il, fl in FORMATS:
        yield il, fl, "nearest_even", 0
        for rbits in RBITS:
            yield il, fl, "stochastic", rbits


@cocotb.test()
async def test_update_edges(dut):
    """Special steps (0, tiny, ±max finite, the clamp bound and its neighbours, ±inf) against
    q at both range ends, 0 and ±1, in every configuration; words at the decision boundary."""
    rng = np.random.default_rng(5)
    total = 0
    for il, fl, rounding, rbits in configurations():
        lo, hi = -(1 << (il + fl - 1)), (1 << (il + fl - 1)) - 1
        qs = [lo, lo + 1, -1, 0, 1, hi - 1, hi]
        ts = special_t_values(il)
        codes = np.array([q for q in qs for _ in ts], dtype=np.int64)
        t = np.array([x for _ in qs for x in ts])
        words = rng.integers(0, 1 << 32, len(t), dtype=np.uint64).astype(np.uint32)
        if rounding == "stochastic":
            finite = np.isfinite(t)
            words[finite] = boundary_words(rng, t[finite], fl, rbits)
            words = np.concatenate([words, np.zeros(len(t), np.uint32), np.full(len(t), 0xFFFFFFFF, np.uint32)])
            codes, t = np.tile(codes, 3), np.tile(t, 3)
        total += await update_cases(dut, codes, t, words, il, fl, rounding, rbits, "edges")
    dut._log.info("offset_update edges: %d cases", total)


@cocotb.test()
async def test_update_random(dut):
    """RANDOM_CASES per configuration: q across the range (ends weighted), t of every class,
    random words with a quarter at the stochastic decision boundary."""
    rng = np.random.default_rng(11)
    total = 0
    for il, fl, rounding, rbits in configurations():
        n = RANDOM_CASES
        lo, hi = -(1 << (il + fl - 1)), (1 << (il + fl - 1)) - 1
        codes = rng.integers(lo, hi + 1, n)
        pick = rng.random(n)
        codes[pick < 0.08] = lo
        codes[(pick >= 0.08) & (pick < 0.16)] = hi
        t = update_t_values(rng, n, il, fl)
        words = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
        if rounding == "stochastic":
            edge = rng.random(n) < 0.25
            words[edge] = boundary_words(rng, t[edge], fl, rbits)
        total += await update_cases(dut, codes, t, words, il, fl, rounding, rbits, "random")
    dut._log.info("offset_update random: %d cases", total)
