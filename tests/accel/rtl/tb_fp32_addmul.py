"""cocotb tests of fp32_add and fp32_mul (toplevel ``fp32_addmul_tb``) against numpy float32.

Loaded by the cocotb runner (see ``test_rtl_fp32_addmul.py``), not collected by pytest.

Reference: numpy float32 scalar arithmetic, one operation per operand pair; its floating-point
status flags give the expected ``overflow`` and ``invalid``. Results are compared as bit
patterns; a NaN result is compared by class (numpy keeps payloads, the units return the
canonical quiet NaN 0x7fc00000, which is checked separately).

Per unit: the special-value cross product, constructed cases (exact ties, rounding that carries
into the exponent, overflow, underflow to subnormal and to zero, cancellation), and 10^5 random
pairs (random bit patterns, random magnitudes, and pairs with close exponents or products near
the range limits). Exact classification of every finite case (tie, carry) is done with integers.
"""
from __future__ import annotations

import numpy as np

import cocotb
from cocotb.triggers import Timer

SEED = 0x5EED_F32
N_RANDOM = 100_000
QNAN = 0x7FC0_0000
SIGN = 0x8000_0000
MAX_REPORT = 20

# Positive special and boundary values; each is also used negated.
SPECIALS = [
    0x0000_0000,                # +0
    0x0000_0001, 0x0000_0002, 0x0000_0003,   # smallest subnormals
    0x003F_FFFF, 0x0040_0000,
    0x007F_FFFE, 0x007F_FFFF,   # largest subnormals
    0x0080_0000, 0x0080_0001,   # smallest normals
    0x00FF_FFFF, 0x0100_0000,
    0x0C00_0000, 0x1F80_0000,   # 2^-103, 2^-64
    0x3380_0000, 0x3400_0000,   # 2^-24, 2^-23
    0x3F00_0000, 0x3F7F_FFFF, 0x3F80_0000, 0x3F80_0001, 0x3FC0_0000, 0x3FFF_FFFF,
    0x4000_0000, 0x4040_0000,
    0x5F80_0000,                # 2^64
    0x7280_0000, 0x7300_0000,   # 2^102, 2^103 (a quarter and half ulp of the largest finite)
    0x7EFF_FFFF, 0x7F00_0000, 0x7F7F_FFFE,
    0x7F7F_FFFF,                # largest finite
    0x7F80_0000,                # inf
    0x7FC0_0000, 0x7FC0_0001, 0x7FFF_FFFF,   # quiet NaNs
    0x7F80_0001, 0x7FA0_0000, 0x7FBF_FFFF,   # signalling NaNs
]


def f32(bits) -> np.ndarray:
    return np.asarray(bits, dtype=np.uint32).view(np.float32)


def check_numpy_keeps_subnormals() -> None:
    """The reference is only valid if numpy's float32 arithmetic does not flush subnormals."""
    tiny, min_normal = f32([0x0000_0001, 0x0080_0000])
    got = [np.float32(tiny + tiny), np.float32(min_normal * np.float32(0.5)),
           np.float32(min_normal - f32(0x0080_0001)[()]), np.float32(tiny * np.float32(1.5))]
    want = [0x0000_0002, 0x0040_0000, 0x8000_0001, 0x0000_0002]
    assert [int(np.asarray(g).view(np.uint32)) for g in got] == want, "numpy flushes subnormals"


# ---------------------------------------------------------------- exact classification
def decompose(bits: int) -> tuple[int, int]:
    """Finite binary32 pattern -> (signed integer significand M, exponent e): value = M * 2^e."""
    e_field, frac = (bits >> 23) & 0xFF, bits & 0x7F_FFFF
    m = frac | (1 << 23) if e_field else frac
    e = (e_field if e_field else 1) - 150
    return (-m if bits & SIGN else m), e


def rounding_class(s: int, q: int) -> tuple[bool, bool]:
    """(is an exact tie, rounds up into the next binade) for the exact value s * 2^q."""
    s = abs(s)
    if s == 0:
        return False, False
    top = q + s.bit_length() - 1
    ulp = max(top - 23, -149)
    shift = ulp - q
    if shift <= 0:
        return False, False
    kept, rem, half = s >> shift, s & ((1 << shift) - 1), 1 << (shift - 1)
    tie = rem == half
    up = rem > half or (tie and kept & 1)
    limit = 1 << 24 if ulp == top - 23 else 1 << 23
    return tie, bool(up and kept + 1 == limit)


def classify(op: str, a: np.ndarray, b: np.ndarray, sub: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ties, carries = np.zeros(len(a), bool), np.zeros(len(a), bool)
    for i, (x, y, s) in enumerate(zip(a.tolist(), b.tolist(), sub.tolist())):
        if (x >> 23) & 0xFF == 0xFF or (y >> 23) & 0xFF == 0xFF:
            continue
        (mx, ex), (my, ey) = decompose(x), decompose(y)
        if op == "mul":
            exact = (mx * my, ex + ey)
        else:
            q = min(ex, ey)
            exact = ((mx << (ex - q)) + (-my if s else my) * (1 << (ey - q)), q)
        ties[i], carries[i] = rounding_class(*exact)
    return ties, carries


# ---------------------------------------------------------------- reference
def reference(op: str, a: np.ndarray, b: np.ndarray, sub: np.ndarray):
    """numpy float32 results (bits) and its overflow / invalid flags, per pair."""
    n = len(a)
    y = np.empty(n, np.float32)
    ovf, inv = np.zeros(n, bool), np.zeros(n, bool)
    raised: set[str] = set()
    fa, fb = list(f32(a)), list(f32(b))
    with np.errstate(all="call", call=lambda kind, _flag: raised.add(kind)):
        for i in range(n):
            raised.clear()
            if op == "mul":
                y[i] = fa[i] * fb[i]
            elif sub[i]:
                y[i] = fa[i] - fb[i]
            else:
                y[i] = fa[i] + fb[i]
            ovf[i] = "overflow" in raised
            inv[i] = "invalid value" in raised
    return y.view(np.uint32), ovf, inv


# ---------------------------------------------------------------- operand generation
def exact_bits(m, e) -> np.ndarray:
    """Patterns of the values m * 2^e (signed integers |m| < 2^24), which must be representable."""
    v = np.ldexp(np.asarray(m, np.float64), np.asarray(e))
    x = v.astype(np.float32)
    assert (x.astype(np.float64) == v).all(), "constructed operand is not a binary32 value"
    return x.view(np.uint32)


def odd(rng, bits):
    """Random odd integers with exactly `bits` bits."""
    bits = np.asarray(bits)
    return (rng.integers(0, 1 << 62, bits.shape) % (1 << (bits - 1))) | (1 << (bits - 1)) | 1


def rand_sign(rng, n) -> np.ndarray:
    return rng.integers(0, 2, n).astype(np.uint32) * np.uint32(SIGN)


def magnitudes(rng, n, lo=-155, hi=128) -> np.ndarray:
    """Random values, log-uniform exponent in [lo, hi], rounded to binary32 (subnormals, inf)."""
    v = np.ldexp(rng.uniform(1.0, 2.0, n), rng.integers(lo, hi + 1, n))
    with np.errstate(over="ignore"):
        return v.astype(np.float32).view(np.uint32) | rand_sign(rng, n)


def with_exponent(rng, e) -> np.ndarray:
    """Random significands with the given biased exponent fields (clipped to 0..254), random sign."""
    e = np.clip(np.asarray(e), 0, 254).astype(np.uint32)
    return (e << 23) | rng.integers(0, 1 << 23, len(e)).astype(np.uint32) | rand_sign(rng, len(e))


def special_pairs() -> tuple[np.ndarray, np.ndarray]:
    vals = np.array(SPECIALS + [v | SIGN for v in SPECIALS], np.uint32)
    a, b = np.meshgrid(vals, vals, indexing="ij")
    return a.ravel(), b.ravel()


def add_cases(rng) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    n = 4000
    a, b = special_pairs()
    cases = {"specials": (np.tile(a, 2), np.tile(b, 2), np.repeat([0, 1], len(a)))}

    # Ties: a = X*2^(q+k), b = Y*2^q with Y odd, so the exact sum (X*2^k + Y)*2^q is odd in units
    # of 2^q; it is a midpoint when it has 25 significant bits.
    k = rng.integers(1, 25, n)
    x = rng.integers(1 << (24 - k), 1 << (25 - k))
    y = odd(rng, rng.integers(1, 25, n)) * rng.choice([-1, 1], n)
    q = rng.integers(-149, 104, n)
    sub = rng.integers(0, 2, n)
    ta, tb = exact_bits(x, q + k), exact_bits(np.where(sub, -y, y), q)
    swap = rng.integers(0, 2, n).astype(bool)
    cases["ties"] = (np.where(swap, tb, ta), np.where(swap, ta, tb), sub)

    # Rounding into the next binade up (all-ones significand plus 1/8..2 ulp, incl. the largest
    # finite to inf) and down across a power of two (2^k minus a fraction of an ulp).
    p = rng.integers(-124, 105, n)
    up = rng.integers(0, 2, n).astype(bool)
    xa = np.where(up, (1 << 24) - 1 - rng.integers(0, 3, n), 1 << 23)
    w = rng.integers(1 << 22, 1 << 24, n)
    j = rng.integers(-1, 2, n)
    w[::7] = 1 << 23
    j[::7] = 0                       # exactly half an ulp of a
    sa = rng.choice([-1, 1], n)
    sub = rng.integers(0, 2, n)
    wb = np.where(up, sa, -sa) * w * np.where(sub, -1, 1)
    cases["binade"] = (exact_bits(sa * xa, p), exact_bits(wb, p - 24 - j), sub)

    # Cancellation: b = a with its low bits changed, or a few ulps away (possibly across a
    # binade), subtracted; includes a - a = +0 and -a + a = +0.
    a = magnitudes(rng, n)
    a[(a & 0x7F80_0000) == 0x7F80_0000] &= np.uint32(0xFF7F_FFFF)     # finite only
    low = rng.integers(0, 25, n)
    b = a ^ (rng.integers(0, 1 << 24, n) & ((1 << low) - 1)).astype(np.uint32)
    near = rng.integers(0, 3, n) == 0
    b = np.where(near, (a.astype(np.int64) + rng.integers(-3, 4, n)).astype(np.uint32), b)
    b[::5] = a[::5]
    sub = rng.integers(0, 2, n)
    b = np.where(sub, b, b ^ np.uint32(SIGN))
    cases["cancellation"] = (a, b, sub)

    # Near overflow and in the subnormal range.
    e = rng.integers(250, 255, (2, n))
    cases["large"] = (with_exponent(rng, e[0]), with_exponent(rng, e[1]), rng.integers(0, 2, n))
    e = rng.integers(0, 4, (2, n))
    cases["tiny"] = (with_exponent(rng, e[0]), with_exponent(rng, e[1]), rng.integers(0, 2, n))
    return cases


def mul_cases(rng) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    n = 4000
    a, b = special_pairs()
    cases = {"specials": (a, b)}

    # Ties: odd X, Y whose product has 25 bits (normal result) ...
    bx = rng.integers(1, 25, n)
    by = np.clip(25 - bx + rng.integers(0, 2, n), 1, 24)
    x, y = odd(rng, bx), odd(rng, by)
    te = rng.integers(-128, 129, n)                     # exponent of the product's leading bit
    p = rng.integers(-149, 128 - bx + 1, n)
    q = te - 24 - p
    q = np.clip(q, -149, 128 - by)
    ta, tb = exact_bits(x * rng.choice([-1, 1], n), p), exact_bits(y * rng.choice([-1, 1], n), q)
    # ... or product < 2^24 placed with its last bit at 2^-150 (subnormal result, or zero).
    bx = rng.integers(1, 13, n)
    x, y = odd(rng, bx), odd(rng, np.minimum(rng.integers(1, 25 - bx + 1, n), 24))
    p = rng.integers(-149, 0, n)
    sign = rng.choice([-1, 1], (2, n))
    sa, sb = exact_bits(sign[0] * x, p), exact_bits(sign[1] * y, -150 - p)
    cases["ties"] = (np.concatenate([ta, sa]), np.concatenate([tb, sb]))

    # Significand products just below a power of two that round up into the next binade, at
    # exponents across the whole range (incl. to inf) ...
    ma = rng.integers(1 << 23, 1 << 24, 6 * n)           # about 1 in 6 lands in the window
    mb = -(-((1 << 47) - (1 << 22) + rng.integers(0, 1 << 22, 6 * n)) // ma)
    ok = (mb < (1 << 24)) & (ma * mb < (1 << 47))
    ma, mb = ma[ok], mb[ok]
    te = rng.integers(-127, 129, len(ma))               # exponent of the product's leading bit
    p = rng.integers(np.maximum(-149, te - 150), np.minimum(104, te + 103) + 1)
    ca, cb = exact_bits(ma, p), exact_bits(mb, te - 46 - p)
    # ... and the largest subnormals times 1 + j*2^-23 rounding up to the smallest normal.
    s = rng.integers(0, 31, n)                          # the same product, scaled between a and b
    ua = exact_bits((1 << 23) - 1 - rng.integers(0, 4, n), -149 + s)
    ub = exact_bits((1 << 23) + rng.integers(1, 65, n), -23 - s)
    cases["carry"] = (np.concatenate([ca, ua]), np.concatenate([cb, ub]))

    # Subnormal results whose only sticky bits lie more than 23 places below the round bit, so
    # they fall off when the product is shifted right onto the subnormal grid: the exact value
    # is just above a midpoint. Products 2^r + l with 0 < l < 2^(r-23), bit r weighing 2^-150
    # (rounds to the smallest subnormal, not to 0), and (2^23+1)^2 = 2^46 + 2^24 + 1, bit 24
    # weighing 2^-150 (rounds to 2^21 + 1, not 2^21, in units of 2^-149).
    x = rng.integers(1 << 23, 1 << 24, n) >> rng.integers(0, 11, n)
    r = np.array([int(v).bit_length() + 23 for v in x])
    y = -(-(1 << r) // x)
    keep = (y < (1 << 24)) & (x * y != (1 << r))
    x, y, r = (np.append(v[keep], extra) for v, extra in ((x, 1 << 23 | 1), (y, 1 << 23 | 1), (r, 24)))
    p = rng.integers(-149, -r)
    sign = rng.choice([-1, 1], (2, len(r)))
    cases["far_sticky"] = (exact_bits(sign[0] * x, p), exact_bits(sign[1] * y, -150 - r - p))

    # Products near the subnormal range and underflowing to zero, and near overflow.
    e = rng.integers(1, 128, n)
    cases["underflow"] = (with_exponent(rng, e),                 # product exponent -151..-122
                          with_exponent(rng, rng.integers(-24, 6, n) + 127 - e))
    cases["overflow"] = (with_exponent(rng, e + 127),            # product exponent 119..136
                         with_exponent(rng, rng.integers(-8, 10, n) + 254 - e))
    # Subnormal operands times values of every size.
    cases["subnormal"] = (with_exponent(rng, np.zeros(n, int)), magnitudes(rng, n, -30, 128))
    return {k: (a, b, np.zeros(len(a), int)) for k, (a, b) in cases.items()}


def random_pairs(op: str, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n1, n2 = 40_000, 30_000
    n3 = N_RANDOM - n1 - n2
    a1, b1 = rng.integers(0, 1 << 32, (2, n1), dtype=np.uint64).astype(np.uint32)
    a2, b2 = magnitudes(rng, n2), magnitudes(rng, n2)
    ea = rng.integers(0, 255, n3)
    if op == "add":       # close exponents: alignment within the significand width
        eb = ea + rng.integers(-30, 31, n3)
    else:                 # products around 1, near underflow and near overflow
        eb = rng.choice([0, -130, 125], n3) + 254 - ea + rng.integers(-25, 26, n3)
    a3, b3 = with_exponent(rng, ea), with_exponent(rng, eb)
    sub = rng.integers(0, 2, N_RANDOM) if op == "add" else np.zeros(N_RANDOM, int)
    return np.concatenate([a1, a2, a3]), np.concatenate([b1, b2, b3]), sub


# ---------------------------------------------------------------- driving and checking
async def drive(dut, op: str, a: np.ndarray, b: np.ndarray, sub: np.ndarray):
    ha, hb, hs = dut.a, dut.b, dut.sub
    hy, ho, hi = (getattr(dut, f"{op}_{port}") for port in ("y", "overflow", "invalid"))
    y, ovf, inv = [], [], []
    hs.value = 0
    for x, z, s in zip(a.tolist(), b.tolist(), sub.tolist()):
        ha.value = x
        hb.value = z
        if op == "add":
            hs.value = s
        await Timer(1, unit="ns")
        y.append(hy.value.to_unsigned())
        ovf.append(int(ho.value))
        inv.append(int(hi.value))
    return np.array(y, np.uint32), np.array(ovf, bool), np.array(inv, bool)


def is_nan(bits: np.ndarray) -> np.ndarray:
    return (bits & 0x7FFF_FFFF) > 0x7F80_0000


def check(dut, op: str, label: str, a, b, sub, got) -> dict[str, int]:
    """Compare with numpy; log and raise on mismatches; return coverage counts."""
    want_y, want_ovf, want_inv = reference(op, a, b, sub)
    got_y, got_ovf, got_inv = got
    both_nan = is_nan(want_y) & is_nan(got_y)
    bad = ((got_y != want_y) & ~both_nan) | (got_ovf != want_ovf) | (got_inv != want_inv)
    bad |= is_nan(got_y) & (got_y != QNAN)
    sym = {"mul": "*", "add": "+"}
    lines = []
    for i in np.flatnonzero(bad)[:MAX_REPORT]:
        o = "-" if op == "add" and sub[i] else sym[op]
        lines.append(f"{int(a[i]):#010x} {o} {int(b[i]):#010x}: got {int(got_y[i]):#010x} "
                     f"ovf={int(got_ovf[i])} inv={int(got_inv[i])}, numpy {int(want_y[i]):#010x} "
                     f"ovf={int(want_ovf[i])} inv={int(want_inv[i])}")
    for line in lines:
        dut._log.error("fp32_%s %s: %s", op, label, line)
    assert not bad.any(), (f"fp32_{op} {label}: {int(bad.sum())} of {len(a)} mismatch, e.g. "
                           + "; ".join(lines[:3]))

    ties, carries = classify(op, a, b, sub)
    finite = ~((a & 0x7F80_0000) == 0x7F80_0000) & ~((b & 0x7F80_0000) == 0x7F80_0000)
    nonzero = ((a & 0x7FFF_FFFF) != 0) & ((b & 0x7FFF_FFFF) != 0)
    mag = want_y & 0x7FFF_FFFF
    counts = {
        "pairs": len(a),
        "ties": int(ties.sum()),
        "carries": int(carries.sum()),
        "overflow": int(want_ovf.sum()),
        "invalid": int(want_inv.sum()),
        "nan": int(is_nan(want_y).sum()),
        "subnormal": int(((mag > 0) & (mag < 0x0080_0000)).sum()),
        "zero_from_nonzero": int((finite & nonzero & (mag == 0)).sum()),
        "neg_zero": int((want_y == SIGN).sum()),
    }
    dut._log.info("fp32_%s %s: %s", op, label, counts)
    return counts


def total(counts: list[dict[str, int]]) -> dict[str, int]:
    return {k: sum(c[k] for c in counts) for k in counts[0]}


async def run_cases(dut, op: str, cases) -> dict[str, int]:
    """Drive and check each class of cases; totals of the coverage counts, and pairs per class."""
    counts, sizes = [], {}
    for label, (a, b, sub) in cases.items():
        a, b, sub = np.asarray(a, np.uint32), np.asarray(b, np.uint32), np.asarray(sub, int)
        counts.append(check(dut, op, label, a, b, sub, await drive(dut, op, a, b, sub)))
        sizes[f"pairs_{label}"] = len(a)
    return {**total(counts), **sizes}


@cocotb.test()
async def test_add_special_cases(dut):
    check_numpy_keeps_subnormals()
    c = await run_cases(dut, "add", add_cases(np.random.default_rng(SEED)))
    dut._log.info("fp32_add constructed cases: %s", c)
    assert c["ties"] >= 2000 and c["carries"] >= 1000 and c["overflow"] >= 300, c
    # In round-to-nearest only (-0) + (-0) and (-0) - (+0) give -0.
    assert c["subnormal"] >= 1000 and c["zero_from_nonzero"] >= 1000 and c["neg_zero"] == 2, c
    assert c["invalid"] >= 10 and c["nan"] >= 1000, c


@cocotb.test()
async def test_add_random(dut):
    c = await run_cases(dut, "add", {"random": random_pairs("add", np.random.default_rng(SEED + 1))})
    assert c["pairs"] == N_RANDOM and c["ties"] >= 10 and c["subnormal"] >= 10, c


@cocotb.test()
async def test_mul_special_cases(dut):
    check_numpy_keeps_subnormals()
    c = await run_cases(dut, "mul", mul_cases(np.random.default_rng(SEED + 2)))
    dut._log.info("fp32_mul constructed cases: %s", c)
    assert c["ties"] >= 2000 and c["carries"] >= 1000 and c["overflow"] >= 1000, c
    assert c["subnormal"] >= 1000 and c["zero_from_nonzero"] >= 1000 and c["neg_zero"] >= 500, c
    assert c["invalid"] >= 10 and c["nan"] >= 500 and c["pairs_far_sticky"] >= 1000, c


@cocotb.test()
async def test_mul_random(dut):
    c = await run_cases(dut, "mul", {"random": random_pairs("mul", np.random.default_rng(SEED + 3))})
    assert c["pairs"] == N_RANDOM and c["ties"] >= 10 and c["subnormal"] >= 1000, c
    assert c["overflow"] >= 1000 and c["zero_from_nonzero"] >= 1000, c
