"""cocotb bench for fp32_cmp, fp32_rint, fp32_ldexp and fp32_div on ``fp32_ext_tb.sv``.

Run through ``test_rtl_fp32_ext.py`` (pytest), which builds the design and names this module.
Each unit gets every special class (crossed with the other operand's specials) and about
``FP32_EXT_CASES`` (default 10^5) targeted and random cases from a fixed numpy seed: ties,
subnormal and overflow boundaries, exact quotients, huge shifts, random bit patterns and values
across magnitudes. References are numpy float32 operations; bits must match exactly, except
that where numpy gives a NaN the RTL must give the canonical quiet NaN 0x7fc00000.

The wrapper's sequencer runs a batch of cases per simulator access (one case per cycle, one
division after another), so Python wakes twice per batch; the clock runs in C.
"""
from __future__ import annotations

import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

CASES = int(os.environ.get("FP32_EXT_CASES", "100000"))
SEED = 0xF32E
LATENCY = 27                    # fp32_div: start edge to the edge that raises done
QNAN = 0x7FC00000
SHOW = 12                       # mismatches listed per check
UNIT_CMP, UNIT_RINT, UNIT_LDEXP, UNIT_DIV = range(4)   # the wrapper's unit select

# One of each special class, positive; the benches add the negatives.
SPECIALS_POS = [
    0x00000000,                 # +0
    0x00000001, 0x00000002, 0x00000003,  # smallest subnormals
    0x00400000, 0x007FFFFF,     # mid and largest subnormal
    0x00800000, 0x00800001,     # smallest normal and its successor
    0x3F000000, 0x3F000001, 0x3EFFFFFF,  # 0.5 and neighbours
    0x3F800000, 0x3F800001, 0x3F7FFFFF,  # 1 and neighbours
    0x3FC00000, 0x40000000, 0x40200000, 0x40400000,  # 1.5, 2, 2.5, 3
    0x4B000000, 0x4AFFFFFF, 0x4B7FFFFF,  # 2^23, 2^23 - 0.5, 2^24 - 1
    0x7F000000, 0x7F7FFFFF,     # 2^127, max finite
    0x7F800000,                 # inf
    0x7FC00000, 0x7FFFFFFF,     # quiet NaNs
    0x7F800001, 0x7FBFFFFF,     # signaling NaNs
]
SPECIALS = np.array(SPECIALS_POS + [w | 0x80000000 for w in SPECIALS_POS], dtype=np.uint32)


# ---------------------------------------------------------------- conversions and checks

def f32(u) -> np.ndarray:
    return np.asarray(u, dtype=np.uint32).view(np.float32)


def u32(f) -> np.ndarray:
    return np.asarray(f, dtype=np.float32).view(np.uint32)


def pack(words: np.ndarray) -> int:
    """Word i of ``words`` (uint32) into bits 32*i +: 32 of one integer."""
    return int.from_bytes(np.ascontiguousarray(words, dtype="<u4").tobytes(), "little")


def unpack_words(value: int, count: int) -> np.ndarray:
    return np.frombuffer(value.to_bytes(4 * count, "little"), dtype="<u4").astype(np.uint32)


def unpack_bits(value: int, count: int) -> np.ndarray:
    raw = np.frombuffer(value.to_bytes((count + 7) // 8, "little"), dtype=np.uint8)
    return np.unpackbits(raw, bitorder="little")[:count].astype(bool)


def hx(w) -> str:
    return f"{int(w):#010x}"


def same_float(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Bit equality with a numpy float32 reference; a NaN reference needs the canonical NaN."""
    return np.where(np.isnan(want), got == QNAN, got == u32(want))


def mismatches(what: str, ok: np.ndarray, columns: dict[str, np.ndarray]) -> list[str]:
    bad = np.flatnonzero(~ok)
    lines = []
    for i in bad[:SHOW]:
        fields = ", ".join(f"{k} {hx(v[i]) if v.dtype.kind in 'uf' else int(v[i])}"
                           for k, v in columns.items())
        lines.append(f"{what}: {fields}")
    if len(bad) > SHOW:
        lines.append(f"{what}: ... {len(bad) - SHOW} more")
    return lines


def report(dut, unit: str, n: int, errors: list[str]) -> None:
    if errors:
        raise AssertionError(f"{unit}: mismatches in {n} cases\n" + "\n".join(errors))
    dut._log.info("%s: %d cases, all bit-exact", unit, n)


# ---------------------------------------------------------------- operand generators

def random_bits(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)


def random_values(rng: np.random.Generator, n: int, lo: int = -155, hi: int = 130,
                  mant_bits=None) -> np.ndarray:
    """sign x 1.f x 2^e with e uniform in [lo, hi]: subnormal, normal and overflowing (inf)
    values with a uniform number of values per binade; ``mant_bits`` (a number or one per
    value) keeps only that many fraction bits (short significands make exact results and
    ties likely)."""
    frac = rng.integers(0, 1 << 23, n)
    if mant_bits is not None:
        frac &= ~((np.int64(1) << (23 - np.asarray(mant_bits, dtype=np.int64))) - 1)
    mant = 1.0 + frac / 2.0 ** 23
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    with np.errstate(over="ignore"):
        return u32((sign * np.ldexp(mant, rng.integers(lo, hi + 1, n))).astype(np.float32))


def mixed(rng: np.random.Generator, n: int) -> np.ndarray:
    """Half random bit patterns, half values across magnitudes."""
    return rng.permutation(np.concatenate([random_bits(rng, n // 2), random_values(rng, n - n // 2)]))


def exponent_of(words: np.ndarray) -> np.ndarray:
    """Unbiased exponent of the leading one of a finite nonzero value (subnormals included)."""
    _, e = np.frexp(f32(words).astype(np.float64))
    return e - 1


# ---------------------------------------------------------------- driving the wrapper

async def begin(dut) -> None:
    """Start the clock, hold reset for two cycles, leave every input idle."""
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value, dut.go.value, dut.unit.value, dut.div_start.value = 1, 0, 0, 0
    dut.div_a.value, dut.div_b.value = 0, 0
    await RisingEdge(dut.clk)
    await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


async def sequence(dut, unit: int, a: np.ndarray, b: np.ndarray | None = None) -> dict:
    """Run ``unit`` of the wrapper's sequencer over all cases, BATCH at a time.

    Returns uint32 arrays ``y`` and ``z`` and a (cases, 4) bool array ``flags`` (bit order as
    in fp32_ext_tb.sv). Python wakes twice per batch; the sequencer runs the cases.
    """
    batch = len(dut.op_a) // 32
    n = len(a)
    pad = -n % batch
    one = np.full(pad, 0x3F800000, np.uint32)          # padding: 1.0, harmless for every unit
    a = np.concatenate([a.astype(np.uint32), one])
    b = np.concatenate([(a[:n] if b is None else b).astype(np.uint32), one])
    y, z, flags = [], [], []
    dut.unit.value = unit
    for start in range(0, n + pad, batch):
        await FallingEdge(dut.clk)
        dut.op_a.value = pack(a[start:start + batch])
        dut.op_b.value = pack(b[start:start + batch])
        dut.go.value = 1
        await FallingEdge(dut.clk)
        dut.go.value = 0
        await RisingEdge(dut.finished)
        y.append(unpack_words(dut.res_y.value.to_unsigned(), batch))
        z.append(unpack_words(dut.res_z.value.to_unsigned(), batch))
        f = unpack_bits(dut.res_flags.value.to_unsigned(), 4 * batch).reshape(batch, 4)
        flags.append(f)
    return {"y": np.concatenate(y)[:n], "z": np.concatenate(z)[:n], "flags": np.concatenate(flags)[:n]}


# ---------------------------------------------------------------- fp32_cmp

def cmp_cases(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Specials crossed; zeros of both signs; equal, negated, neighbouring, close and random pairs."""
    sa, sb = np.meshgrid(SPECIALS, SPECIALS)
    x = mixed(rng, CASES)
    kind = rng.integers(0, 5, CASES)
    step = np.where(rng.random(CASES) < 0.5, -1, 1).astype(np.int64)
    y = np.select([kind == 0, kind == 1, kind == 2, kind == 3],
                  [x, x ^ np.uint32(0x80000000),                       # equal, negated
                   ((x.astype(np.int64) + step) & 0xFFFFFFFF).astype(np.uint32),  # neighbours
                   random_values(rng, CASES, -3, 3)],                  # close magnitudes
                  mixed(rng, CASES)).astype(np.uint32)
    zeros = np.array([0, 0x80000000], np.uint32)
    za, zb = np.meshgrid(zeros, zeros)
    return np.concatenate([sa.ravel(), za.ravel(), x]), np.concatenate([sb.ravel(), zb.ravel(), y])


@cocotb.test()
async def test_cmp(dut):
    """lt / eq / unordered exactly IEEE; min / max NaN-propagating with -0 < +0."""
    a, b = cmp_cases(np.random.default_rng(SEED))
    await begin(dut)
    out = await sequence(dut, UNIT_CMP, a, b)
    got = {"cmp_min": out["y"], "cmp_max": out["z"], "cmp_lt": out["flags"][:, 0],
           "cmp_eq": out["flags"][:, 1], "cmp_unordered": out["flags"][:, 2]}

    fa, fb = f32(a), f32(b)
    with np.errstate(invalid="ignore"):
        lt, eq = fa < fb, fa == fb
        unordered = np.isnan(fa) | np.isnan(fb)
        ref_min, ref_max = np.minimum(fa, fb), np.maximum(fa, fb)
    # Two zeros: -0 is the smaller (IEEE 754-2019 minimum / maximum), in either order.
    both_zero = (fa == 0) & (fb == 0)
    ref_min = np.where(both_zero, f32(a | b), ref_min)
    ref_max = np.where(both_zero, f32(a & b), ref_max)
    cols = {"a": a, "b": b}
    errors = []
    for name, want in (("lt", lt), ("eq", eq), ("unordered", unordered)):
        errors += mismatches(f"cmp {name}", got[f"cmp_{name}"] == want,
                             {**cols, "rtl": got[f"cmp_{name}"], "want": want})
    for name, want in (("min", ref_min), ("max", ref_max)):
        errors += mismatches(f"cmp {name}", same_float(got[f"cmp_{name}"], want),
                             {**cols, "rtl": got[f"cmp_{name}"], "want": u32(want)})
    report(dut, "fp32_cmp", len(a), errors)


# ---------------------------------------------------------------- fp32_rint

def rint_cases(rng: np.random.Generator) -> np.ndarray:
    """Specials; ties k + 1/2 of both parities and their neighbours; values near the integers."""
    n4 = CASES // 4
    k = np.concatenate([np.arange(-16, 16), rng.integers(-(1 << 23), 1 << 23, n4)])
    ties = u32((k + 0.5).astype(np.float32))                      # exact: |k| < 2^23
    near = ties.astype(np.int64) + rng.choice([-1, 1], len(ties))  # one ulp off a tie
    named = u32(np.array([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, -3.5, 0.4, -0.4,
                          0.49999997, 0.50000006, -0.49999997, 8388607.5, -8388607.5,
                          4194303.5, 4194304.5, 8388608.0, 8388609.0, 16777216.0,
                          1e-45, -1e-45, 0.99999994, -0.99999994], np.float32))
    return np.concatenate([SPECIALS, named, ties, near.astype(np.uint32),
                           random_values(rng, n4, -3, 25),                   # around the integers
                           mixed(rng, CASES - 3 * n4)])


@cocotb.test()
async def test_rint(dut):
    """np.rint on float32: ties to even of both parities, near-ties, |a| >= 2^23, signs."""
    a = rint_cases(np.random.default_rng(SEED + 1))
    await begin(dut)
    got = {"rint_y": (await sequence(dut, UNIT_RINT, a))["y"]}
    with np.errstate(invalid="ignore"):
        want = np.rint(f32(a))
    errors = mismatches("rint", same_float(got["rint_y"], want),
                        {"a": a, "rtl": got["rint_y"], "want": u32(want)})
    report(dut, "fp32_rint", len(a), errors)


# ---------------------------------------------------------------- fp32_ldexp

def ldexp_ref(a: np.ndarray, n: np.ndarray) -> np.ndarray:
    """R(a x 2^n): a float32 value has 24 significant bits and an exponent in [-149, 127], so
    for |n| <= 800 the float64 ldexp is exact (no float64 subnormal loses a bit) and the cast
    rounds once. Beyond that the binary32 result is inf or 0 whatever float64 does: its
    overflow gives inf, and its rounding of a value below 2^-1000 stays below 2^-150."""
    with np.errstate(over="ignore", under="ignore"):
        return np.ldexp(f32(a).astype(np.float64), n.astype(np.int32)).astype(np.float32)


def ldexp_cases(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Specials crossed with boundary shifts; results near the subnormal range (short
    significands make ties), near overflow; random shifts within and far beyond +-300."""
    shifts = np.array([0, 1, -1, 2, -2, 22, -22, 23, -23, 24, -24, 25, -25, 126, -126, 127, -127,
                       149, -149, 150, -150, 151, -151, 253, -253, 254, -254, 276, -276,
                       277, -277, 278, -278, 300, -300, 301, -301, 1000, -1000,
                       (1 << 31) - 1, -(1 << 31)], dtype=np.int64)
    sa, sn = np.meshgrid(SPECIALS, shifts)
    n5 = CASES // 5
    # Landing near the subnormal range: leading one at 2^-126 .. 2^-152 (rounding, ties with
    # short significands, underflow to zero) and near overflow.
    low = random_values(rng, n5, -149, 127, mant_bits=rng.integers(0, 24, n5))
    low_n = -126 - exponent_of(low) + rng.integers(-27, 2, n5)
    short = random_values(rng, n5, -149, 127, mant_bits=3)
    short_n = -126 - exponent_of(short) + rng.integers(-26, 1, n5)
    high = random_values(rng, n5, -149, 127)
    high_n = 127 - exponent_of(high) + rng.integers(-2, 3, n5)
    rest = CASES - 4 * n5
    wide = mixed(rng, rest)
    wide_n = rng.integers(-300, 301, rest)
    huge = mixed(rng, n5)
    huge_n = rng.integers(-(1 << 31), 1 << 31, n5)
    a = np.concatenate([sa.ravel(), low, short, high, wide, huge])
    return a, np.concatenate([sn.ravel(), low_n, short_n, high_n, wide_n, huge_n]).astype(np.int64)


@cocotb.test()
async def test_ldexp(dut):
    """Exact shifts, subnormal results (ties both ways), overflow, underflow to +-0, huge n."""
    a, n = ldexp_cases(np.random.default_rng(SEED + 2))
    await begin(dut)
    got = {"ldexp_y": (await sequence(dut, UNIT_LDEXP, a, (n & 0xFFFFFFFF).astype(np.uint32)))["y"]}
    want = ldexp_ref(a, n)
    errors = mismatches("ldexp", same_float(got["ldexp_y"], want),
                        {"a": a, "n": n, "rtl": got["ldexp_y"], "want": u32(want)})
    report(dut, "fp32_ldexp", len(a), errors)


# ---------------------------------------------------------------- fp32_div

def div_ref(a: np.ndarray, b: np.ndarray) -> dict:
    fa, fb = f32(a), f32(b)
    with np.errstate(all="ignore"):
        q = np.divide(fa, fb)
    finite_a, finite_b = np.isfinite(fa), np.isfinite(fb)
    snan = lambda w: ((w & 0x7F800000) == 0x7F800000) & ((w & 0x007FFFFF) != 0) & ((w & 0x00400000) == 0)
    return {
        "div_y": q,
        "div_div_by_zero": finite_a & (fa != 0) & (fb == 0),
        "div_invalid": ((fa == 0) & (fb == 0)) | (np.isinf(fa) & np.isinf(fb)) | snan(a) | snan(b),
        "div_overflow": finite_a & finite_b & (fb != 0) & np.isinf(q),
    }


def div_cases(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Specials crossed; exact quotients; x / +-1 and x / 2^k; subnormal quotients (with ties);
    quotients near overflow; nearly equal significands; random operands."""
    sa, sb = np.meshgrid(SPECIALS, SPECIALS)
    n8 = CASES // 8
    # Exact quotients: 12-bit significands whose product (the dividend) is exact in binary32.
    q12 = random_values(rng, n8, -60, 60, mant_bits=11)
    d12 = random_values(rng, n8, -60, 60, mant_bits=11)
    p12 = u32((f32(q12).astype(np.float64) * f32(d12)).astype(np.float32))
    # x / +-1 and x / 2^k.
    x1 = mixed(rng, n8)
    pow2 = u32(np.ldexp(np.where(rng.random(n8) < 0.5, -1.0, 1.0),
                        rng.integers(-149, 128, n8)).astype(np.float32))
    plus_minus_one = np.uint32(0x3F800000) | (rng.integers(0, 2, n8) << 31).astype(np.uint32)
    x1_div = np.where(rng.random(n8) < 0.3, plus_minus_one, pow2)
    # Subnormal quotients: short significands (ties) and full ones, the quotient's exponent
    # in [-152, -124].
    sub_a = random_values(rng, n8, -60, -25, mant_bits=rng.integers(0, 6, n8))
    target = rng.integers(-152, -123, n8)
    sub_b = u32(np.ldexp(f32(random_values(rng, n8, 0, 0, mant_bits=2)).astype(np.float64),
                         exponent_of(sub_a) - target).astype(np.float32))
    # Near overflow: quotient exponent 125 .. 128.
    ov_a = random_values(rng, n8, 60, 127)
    ov_b = u32(np.ldexp(f32(random_values(rng, n8, 0, 0)).astype(np.float64),
                        exponent_of(ov_a) - rng.integers(125, 129, n8)).astype(np.float32))
    # Nearly equal significands: the quotient's leading bit decides the normalization.
    ne_b = random_values(rng, n8, -20, 20)
    ne_a = (ne_b.astype(np.int64) + rng.integers(-3, 4, n8)).astype(np.uint32)
    rest = CASES - 6 * n8
    a = np.concatenate([sa.ravel(), p12, x1, sub_a, ov_a, ne_a, mixed(rng, rest), random_values(rng, n8)])
    b = np.concatenate([sb.ravel(), d12, x1_div, sub_b, ov_b, ne_b, mixed(rng, rest), random_values(rng, n8)])
    return a, b


@cocotb.test()
async def test_div(dut):
    """Correct rounding and flags: specials crossed, exact quotients, subnormal results and
    their ties, overflow, quotients of nearly equal significands, random operands."""
    a, b = div_cases(np.random.default_rng(SEED + 3))
    await begin(dut)
    out = await sequence(dut, UNIT_DIV, a, b)
    got = {"div_y": out["y"], "div_done": out["flags"][:, 0], "div_div_by_zero": out["flags"][:, 1],
           "div_invalid": out["flags"][:, 2], "div_overflow": out["flags"][:, 3]}
    want = div_ref(a, b)
    cols = {"a": a, "b": b}
    errors = mismatches("div y", same_float(got["div_y"], want["div_y"]),
                        {**cols, "rtl": got["div_y"], "want": u32(want["div_y"])})
    for flag in ("div_div_by_zero", "div_invalid", "div_overflow"):
        errors += mismatches(flag, got[flag] == want[flag], {**cols, "rtl": got[flag], "want": want[flag]})
    errors += mismatches("div done", got["div_done"], {**cols})
    report(dut, "fp32_div", len(a), errors)


@cocotb.test()
async def test_div_protocol(dut):
    """Reset, fixed latency, a one-cycle done pulse, held results, start ignored while busy,
    back-to-back starts in the done cycle, reset in the middle of a division."""
    await begin(dut)
    one, three = 0x3F800000, 0x40400000
    third = int(u32(np.float32(1.0) / np.float32(3.0)))
    await ReadOnly()
    assert int(dut.div_busy.value) == 0 and int(dut.div_done.value) == 0, "idle after reset"

    # Operands and start change after a falling edge; the start edge is the next rising one.
    await FallingEdge(dut.clk)
    dut.div_a.value, dut.div_b.value, dut.div_start.value = one, three, 1
    await RisingEdge(dut.clk)
    started = get_sim_time("ns")
    await FallingEdge(dut.clk)
    dut.div_start.value = 0
    assert int(dut.div_busy.value) == 1, "busy after the start edge"
    # A start while busy, with other operands, must be ignored.
    for _ in range(5):
        await FallingEdge(dut.clk)
    dut.div_a.value, dut.div_start.value = three, 1
    await FallingEdge(dut.clk)
    dut.div_start.value = 0
    await RisingEdge(dut.div_done)
    cycles = (get_sim_time("ns") - started) / 10
    assert cycles == LATENCY, f"done after {cycles} cycles, expected {LATENCY}"
    assert dut.div_y.value.to_unsigned() == third, f"1/3: {hx(dut.div_y.value.to_unsigned())}, want {hx(third)}"
    assert int(dut.div_busy.value) == 0, "busy falls with done"
    # done is a single-cycle pulse; y holds; the ignored start does not run afterwards.
    for _ in range(40):
        await RisingEdge(dut.clk)
        await ReadOnly()
        assert int(dut.div_done.value) == 0 and int(dut.div_busy.value) == 0, "done lasts one cycle"
        assert dut.div_y.value.to_unsigned() == third, "y must hold until the next result"
    # Back to back: a start held high is accepted on the first edge with busy low.
    await FallingEdge(dut.clk)
    dut.div_a.value, dut.div_b.value, dut.div_start.value = three, one, 1
    await RisingEdge(dut.div_done)
    first = get_sim_time("ns")
    assert dut.div_y.value.to_unsigned() == three
    await RisingEdge(dut.div_done)
    dut.div_start.value = 0
    gap = (get_sim_time("ns") - first) / 10
    assert gap == LATENCY + 1, f"back to back: {gap} cycles between results, expected {LATENCY + 1}"
    # A reset in the middle of a division drops it.
    await FallingEdge(dut.clk)
    dut.div_start.value = 1
    await FallingEdge(dut.clk)
    dut.div_start.value, dut.rst.value = 0, 1
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    assert int(dut.div_busy.value) == 0 and int(dut.div_done.value) == 0, "reset clears busy"
    assert dut.div_y.value.to_unsigned() == 0, "reset clears y"
    for _ in range(LATENCY + 2):
        await RisingEdge(dut.clk)
        await ReadOnly()
        assert int(dut.div_done.value) == 0, "a reset division must not complete"
