"""The bit-portable nonlinearity of kernel spec v2: exp, expm1, σ, softmax and step 4's responses.

    >>> import numpy as np
    >>> from protocol.formats import parse_format
    >>> from accel.spec.arith import AccArith
    >>> A = AccArith(parse_format("fp32"))
    >>> exp(A, np.array([0.0, 1.0, -np.inf, 100.0])).tolist()
    [1.0, 2.7182817459106445, 0.0, inf]
    >>> expm1(A, np.array([-0.0, 2.0 ** -100, -np.inf])).tolist()
    [-0.0, 7.888609052210118e-31, -1.0]
    >>> sigmoid(A, np.array([0.0, -200.0])).tolist()
    [0.5, 0.0]
    >>> softmax(A, np.array([[0.0, 0.0, np.log(2.0)]])).tolist()
    [[0.25, 0.25, 0.5]]
    >>> logistic_response(A, np.array([[1e-6]]), np.array([[0.5]])).tolist()  # ≈ p(1−p)d
    [[2.499999993688107e-07]]
    >>> constants(parse_format("bf16"))  # doctest: +NORMALIZE_WHITESPACE
    NonlinearConstants(bf16: degree 5, c_k = (0.5, 0.1669921875, 0.041748046875, 0.00836181640625),
        R(ln2) = 0.69140625, R(log2e) = 1.4453125,
        ln2 split 0.5 + 0.125 + 0.0625 + 0.00390625 + 0.001739501953125 for |n| <= 135,
        exp clamp [-93.5, 89.5], expm1 clamp [-7.625, 89.5])

Each function is a fixed sequence of the accumulator ALU's operations (:mod:`accel.spec.arith`):
every add, sub, mul and div is rounded once by R (nearest-even into the accumulator format),
``ldexp`` is an exponent shift followed by R, ``rint`` rounds to an integer (ties to even,
exact), compares, selections and sign changes are exact. No libm and no numpy transcendental
function is used, so numpy, C and an RTL core produce the same bits on any machine. The only
other inputs are the per-format constants of :func:`constants`, each defined by a rule from
the format. Values are float64 arrays holding accumulator-format values, as in the ALU.

p = ``man_bits`` + 1 is the precision. For a constant v, R(v) means R(fl64(v)): the exact
rational v rounded to float64, then by R. That is a double rounding, and part of the
definition; for fp32, bf16, fp16 and fp16_ibm it gives the correctly rounded value of every
constant (checked in the tests). ln 2 comes from ``Decimal(2).ln()`` at 80 digits (correctly
rounded, pure software).

exp(x):

1. x ← clamp(x, X_lo, X_hi), X_hi = R((emax + 2)·ln 2), X_lo = R((e_sub − 2)·ln 2) with
   2^e_sub the smallest subnormal. e^x overflows above X_hi and rounds to 0 below X_lo, and
   so does the computed value at the bounds: the clamp changes no result. It maps ±inf and
   bounds |n| ≤ N.
2. n = rint(R(x·log2e)). The product is rounded, so for large |x| in narrow formats n can be
   off by one (bf16, |n| near 128); |r| then grows a little beyond ln 2 / 2, which E covers.
3. r = (((x − n·c_1) − n·c_2) − … − n·c_k) − R(n·ln2_lo), Cody–Waite reduction. Each piece c_i
   has h = max(p − bitlength(N), 1) significant bits: c_1 is ln 2 truncated to h bits, c_2 the
   remainder truncated, and so on until N·(ln 2 − Σc_i) < 1/4; ln2_lo = R(ln 2 − Σc_i).
   Every n·c_i is exact (at most p bits, or c_i a power of two). The first subtraction is
   exact by Sterbenz's lemma (n·c_1 is within a factor of 2 of x). The later ones exist only
   in formats with few bits (bf16: c = 1/2, 1/8, 1/16, 1/256). They are exact because each
   difference fits in p bits on its grid; the tests check this for every bf16, fp16,
   fp16_ibm, e4m3fn and e5m2 input. What rounds is R(n·ln2_lo), by at most 2^-(p+3)
   since |n·ln2_lo| < 1/4, and the last subtraction, by half an ulp of r. fp64 (h = 42),
   fp32 (h = 16), fp16 and fp16_ibm need one piece, the classic split.
4. E = R(r + R(r·R(r·Q))), Q = c_2 + r(c_3 + … + r·c_d) in Horner form, c_k = R(1/k!): the
   Taylor polynomial of expm1(r). Adding the leading term r last keeps E within about half
   an ulp; r·R(1 + r·Q) would round twice at full size (measured: 0.3 ulp worse for fp32).
   d is the smallest degree with ln2^d / (d+1)! ≤ 2^-(p+3), so for |r| ≤ ln 2 the truncation
   error is at most about 1/8 ulp.
5. exp = R(2^n·R(1 + E)).

expm1(x): clamp to [M_lo, X_hi], M_lo = R(−(p + 3)·ln 2); below M_lo the true and computed
results are −1. n = 0 where |x| < R(ln 2) (one compare), so near 0 r = x and expm1 is E
itself, with no cancellation; elsewhere n is computed as in step 2. Then steps 3–4, and
expm1 = R(2^n·R(E − R(2^-n − 1))). 2^-n is exact (negligible where a format without
subnormals flushes it). 2^-n − 1 is exact for |n| ≤ p; beyond that, one of its two terms is
below half an ulp of the other. Scaling by 2^n is exact unless it overflows. So the only
rounding after E is that of E − (2^-n − 1). That gives the same bits as the direct
R(R(2^n·E) + R(2^n − 1)), but 2^n is never formed, so nothing overflows for
n = emax + 1. Last, a selection on x = 0 returns x, so expm1(−0) = −0: r + (+0) would make
it +0. exp has no n = 0 region: r = x − n·ln 2 is at least as good there, and one compare
is saved.

sigmoid(a): the sign of a (one compare) selects −|a|; t = exp(−|a|) needs only the lower
clamp. Then σ = R(1 / R(1 + t)) for a > 0 and R(t / R(1 + t)) otherwise; the same compare
selects the numerator. t never overflows, and for a < 0 the result keeps its subnormal
digits, where 1 / (1 + e^-a) would flush to 0 once e^-a overflows (fp32: a < −88.7).

softmax(a), for the rows of a (rows × C): m = rowmax(a); e = exp(R(a − m)) with only the
lower clamp (a − m ≤ 0); s = rowsum(e), left to right; out = R(e / s), with s ≥ 1.

Step 4's responses r = ℓ'(a + d) − ℓ'(a) come from the anchor terms p, without cancellation:

- logistic_response(d, p), both (B, 1): E = expm1(d); r = R(R(R(p·R(1 − p))·E) / D) with
  D = max(R(1 + R(p·E)), 2^-p);
- softmax_response(d, p), both (B, C): E = expm1(d); S = rowsum(R(p·E));
  r = R(R(p·R(E − S)) / D) with D = max(R(1 + S), 2^-p), one D per row.

Before expm1, d is clamped to [M_lo, R((emax − L)·ln 2)], with L = ceil(log2 C) (0 for
logistic). The lower bound changes no result, since E is −1 below it anyway. The upper
bound keeps E ≤ 2^(emax−L)(1 + 2^-p), so p·E, S (at most C·max E), 1 + S and every product
stay finite for any p in [0, 1]: no inf − inf, inf/inf or 0·inf. Above that bound the
response is already saturated (logistic: r = 1 − p) unless p·e^d is not large, which
happens only for p below about 2^(p + 1 + L − emax) (fp32, logistic: 2^-102).

The floor D ≥ 2^-p changes only denominators ≤ 0, because 1 + y is 0 or at least 2^-p for
any format value y ≥ −1. It turns the 0/0 at p = 1 with E = −1 into r = −0. That case is a
confident logistic anchor with d below M_lo, common in bf16, where M_lo = −7.6; elsewhere the
formula already gives 0 for p = 1. When a softmax row's d are all below about
−(p − log2 C)·ln 2, every E_k is −1 to the last bit: the formula has lost the information,
and r is only finite, not accurate.

Accuracy, in ulps of the format at the true value (for a subnormal, the ulp is the smallest
subnormal), measured over every input by ``bench/measure_nonlinear.py``:
fp32 exp 0.962, expm1 1.452, sigmoid 2.402 (no exp result is 1 ulp off; 0.4% of the 2^32
exp results are not correctly rounded); bf16 0.87, 1.13, 1.57; fp16 0.89, 1.14, 1.76;
fp16_ibm 0.90, 1.27, 1.88. For fp64, a Decimal reference on random inputs gives 0.88, 1.19,
1.58. The tests hold exp to 1 ulp, expm1 to 1.5 and sigmoid to 2.5.

:func:`op_counts` gives the operations each function performs, keyed as
:class:`accel.spec.arith.CountingArith` tallies them; the constants are computed once per
format on a plain :class:`AccArith` and are not counted.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from decimal import Decimal, localcontext
from fractions import Fraction
from functools import lru_cache
from math import factorial

import numpy as np

from accel.spec.arith import AccArith
from protocol.formats import FloatFormat

__all__ = ["exp", "expm1", "sigmoid", "softmax", "logistic_response", "softmax_response",
           "constants", "NonlinearConstants", "op_counts", "FUNCTIONS", "response_hi"]

# ln 2 to 80 decimal digits (Decimal.ln is correctly rounded and pure software), as an exact
# rational: every constant below is derived from it by exact rational arithmetic and rounded.
with localcontext() as _ctx:
    _ctx.prec = 80
    LN2 = Fraction(Decimal(2).ln())
LOG2E = 1 / LN2


def _truncate(v: Fraction, bits: int) -> Fraction:
    """v > 0 truncated to its ``bits`` leading significant bits."""
    e = v.numerator.bit_length() - v.denominator.bit_length()   # 2^(e-1) < v < 2^(e+1)
    if v < Fraction(2) ** e:
        e -= 1                                                     # now 2^e ≤ v < 2^(e+1)
    scale = Fraction(2) ** (bits - 1 - e)
    return Fraction(int(v * scale)) / scale


@dataclass(frozen=True, repr=False)
class NonlinearConstants:
    """The per-format constants of the nonlinearity (see the module docstring for the rules)."""

    fmt: FloatFormat
    degree: int                   # d: E is the degree-d Taylor polynomial of expm1
    coeffs: tuple[float, ...]     # c_2 … c_d, c_k = R(1/k!)
    ln2: float                    # R(ln 2): the |x| < ln 2 test of expm1
    log2e: float                  # R(1/ln 2)
    ln2_pieces: tuple[float, ...]  # c_1 … c_k of Cody–Waite: n·c_i exact for |n| ≤ n_max
    ln2_lo: float                 # R(ln 2 − Σ pieces)
    n_max: int                    # largest |n| after the clamp
    exp_lo: float                 # X_lo: exp(x ≤ X_lo) rounds to 0
    exp_hi: float                 # X_hi: exp(x ≥ X_hi) overflows
    expm1_lo: float               # M_lo: expm1(x ≤ M_lo) rounds to −1
    den_floor: float              # 2^-p, the floor on the responses' denominators

    def __repr__(self) -> str:
        split = " + ".join(map(repr, (*self.ln2_pieces, self.ln2_lo)))
        return (f"NonlinearConstants({self.fmt!r}: degree {self.degree}, c_k = {self.coeffs}, "
                f"R(ln2) = {self.ln2!r}, R(log2e) = {self.log2e!r}, "
                f"ln2 split {split} for |n| <= {self.n_max}, "
                f"exp clamp [{self.exp_lo!r}, {self.exp_hi!r}], "
                f"expm1 clamp [{self.expm1_lo!r}, {self.exp_hi!r}])")


@lru_cache(maxsize=None)
def constants(fmt: FloatFormat) -> NonlinearConstants:
    """The constants of ``fmt``, computed once (on a plain ALU: nothing is counted)."""
    A = AccArith(fmt)

    def R(v: Fraction) -> float:
        return float(A.round(float(v)))

    p = fmt.man_bits + 1
    log2e = R(LOG2E)
    e_sub = fmt.emin - (fmt.man_bits if fmt.subnormals else 0)
    exp_lo, exp_hi = R((e_sub - 2) * LN2), R((fmt.emax + 2) * LN2)
    # n is monotonic in x, so its extremes are those of the clamp bounds.
    n_max = int(max(abs(float(A.rint(A.mul(b, log2e)))) for b in (exp_lo, exp_hi)))
    h = max(p - n_max.bit_length(), 1)
    pieces, rest = [], LN2
    while n_max * rest >= Fraction(1, 4):
        piece = _truncate(rest, h)
        pieces.append(float(piece))
        rest -= piece
    d = 2
    while LN2 ** d / factorial(d + 1) > Fraction(1, 2 ** (p + 3)):
        d += 1
    return NonlinearConstants(
        fmt=fmt, degree=d, coeffs=tuple(R(Fraction(1, factorial(k))) for k in range(2, d + 1)),
        ln2=R(LN2), log2e=log2e, ln2_pieces=tuple(pieces), ln2_lo=R(rest), n_max=n_max,
        exp_lo=exp_lo, exp_hi=exp_hi, expm1_lo=R(-(p + 3) * LN2), den_floor=2.0 ** -p)


@lru_cache(maxsize=None)
def response_hi(fmt: FloatFormat, classes: int) -> float:
    """R((emax − ceil(log2 C))·ln 2): the upper clamp of d in the responses."""
    return float(AccArith(fmt).round(float((fmt.emax - (classes - 1).bit_length()) * LN2)))


def _cmp(A: AccArith, n: int) -> None:
    A.tally(f"cmp {A.name}", n)


def _at_least(A: AccArith, x: np.ndarray, lo: float) -> np.ndarray:
    """max(x, lo): the one compare of a clamp whose upper side cannot be reached."""
    _cmp(A, np.size(x))
    return np.maximum(x, lo)


def _expm1_reduced(A: AccArith, x: np.ndarray, k: NonlinearConstants, n: np.ndarray) -> np.ndarray:
    """Steps 3–4: r = x − n·ln 2 by Cody–Waite, then E ≈ expm1(r) (x already clamped)."""
    r = x
    for piece in k.ln2_pieces:
        r = A.sub(r, A.mul(n, piece))            # both exact (module docstring, step 3)
    r = A.sub(r, A.mul(n, k.ln2_lo))
    q = k.coeffs[-1]
    for c in k.coeffs[-2::-1]:
        q = A.add(c, A.mul(r, q))
    return A.add(r, A.mul(r, A.mul(r, q)))


def _exp_clamped(A: AccArith, x: np.ndarray, k: NonlinearConstants) -> np.ndarray:
    n = A.rint(A.mul(x, k.log2e))
    return A.ldexp(A.add(1.0, _expm1_reduced(A, x, k, n)), n)


def _expm1_clamped(A: AccArith, x: np.ndarray, k: NonlinearConstants) -> np.ndarray:
    _cmp(A, np.size(x))
    n = np.where(np.abs(x) < k.ln2, 0.0, A.rint(A.mul(x, k.log2e)))
    E = _expm1_reduced(A, x, k, n)
    return A.ldexp(A.sub(E, A.sub(A.ldexp(1.0, -n), 1.0)), n)


def exp(A: AccArith, x: np.ndarray) -> np.ndarray:
    """e^x rounded by the sequence of the module docstring (overflow follows the format)."""
    k = constants(A.fmt)
    with np.errstate(over="ignore"):
        return _exp_clamped(A, A.clamp(np.asarray(x, dtype=np.float64), k.exp_lo, k.exp_hi), k)


def expm1(A: AccArith, x: np.ndarray) -> np.ndarray:
    """e^x − 1, accurate near 0; expm1(±0) = ±0, expm1(−inf) = −1."""
    k = constants(A.fmt)
    x = A.clamp(np.asarray(x, dtype=np.float64), k.expm1_lo, k.exp_hi)
    with np.errstate(over="ignore"):
        out = _expm1_clamped(A, x, k)
    _cmp(A, np.size(x))
    return np.where(x == 0, x, out)


def sigmoid(A: AccArith, a: np.ndarray) -> np.ndarray:
    """σ(a) = 1/(1 + e^-a), from t = e^-|a| so that nothing overflows."""
    k = constants(A.fmt)
    a = np.asarray(a, dtype=np.float64)
    _cmp(A, a.size)
    positive = a > 0
    t = _exp_clamped(A, _at_least(A, np.where(positive, -a, a), k.exp_lo), k)
    return A.div(np.where(positive, 1.0, t), A.add(1.0, t))


def softmax(A: AccArith, a: np.ndarray) -> np.ndarray:
    """Rows of softmax(a) for a (rows × C): exp(a − max) over its row sum, left to right."""
    k = constants(A.fmt)
    a = np.asarray(a, dtype=np.float64)
    with np.errstate(over="ignore"):                   # a − m may overflow to −inf: e = 0
        z = A.sub(a, A.rowmax(a))
    e = _exp_clamped(A, _at_least(A, z, k.exp_lo), k)
    return A.div(e, A.rowsum(e))


def _response_expm1(A: AccArith, d: np.ndarray, classes: int) -> np.ndarray:
    k = constants(A.fmt)
    d = A.clamp(np.asarray(d, dtype=np.float64), k.expm1_lo, response_hi(A.fmt, classes))
    return _expm1_clamped(A, d, k)


def _floored(A: AccArith, den: np.ndarray) -> np.ndarray:
    _cmp(A, np.size(den))
    return np.maximum(den, constants(A.fmt).den_floor)


def logistic_response(A: AccArith, d: np.ndarray, p: np.ndarray) -> np.ndarray:
    """σ(a + d) − σ(a) from p = σ(a): R(R(R(p·R(1 − p))·E) / max(R(1 + R(p·E)), 2^-p))."""
    E = _response_expm1(A, d, 1)
    num = A.mul(A.mul(p, A.sub(1.0, p)), E)
    return A.div(num, _floored(A, A.add(1.0, A.mul(p, E))))


def softmax_response(A: AccArith, d: np.ndarray, p: np.ndarray) -> np.ndarray:
    """softmax(a + d) − softmax(a) from p = softmax(a), rows (B × C), S summed left to right."""
    E = _response_expm1(A, d, np.shape(d)[1])
    S = A.rowsum(A.mul(p, E))
    return A.div(A.mul(p, A.sub(E, S)), _floored(A, A.add(1.0, S)))


FUNCTIONS = ("exp", "expm1", "sigmoid", "softmax", "logistic_response", "softmax_response")


def op_counts(fmt: FloatFormat, func: str, rows: int, classes: int = 1) -> Counter:
    """The operations ``func`` performs on a (rows × classes) input, keyed like CountingArith.

    The elementwise functions count per element (any shape of that size); softmax and the
    responses also per row (their rowmax, rowsum, 1 + S and its floor).
    """
    k = constants(fmt)
    size = rows * classes
    pieces = len(k.ln2_pieces) + 1
    # rint(R(x·log2e)); n·c_i and their subtractions; Horner (d − 2 steps), r·(r·Q), r + ….
    core = Counter(mul=1 + pieces + k.degree, rint=1, add=pieces + k.degree - 1)
    exp_tail = Counter(add=1, ldexp=1)                      # R(1 + E), 2^n·
    expm1_tail = Counter(cmp=1, ldexp=2, add=2)             # |x| < ln2; 2^-n, − 1, E − …, 2^n·
    per_element = {
        "exp": core + exp_tail + Counter(cmp=2),
        "expm1": core + expm1_tail + Counter(cmp=3),        # clamp; x = 0
        "sigmoid": core + exp_tail + Counter(cmp=2, add=1, div=1),
        "softmax": core + exp_tail + Counter(cmp=1, add=1, div=1),
        "logistic_response": core + expm1_tail + Counter(cmp=3, mul=3, add=2, div=1),
        "softmax_response": core + expm1_tail + Counter(cmp=2, mul=2, add=1, div=1),
    }[func]
    counts = Counter({op: n * size for op, n in per_element.items()})
    if func in ("softmax", "softmax_response"):
        # softmax: rowmax and rowsum; response: rowsum of p·E, 1 + S and its floor.
        extra = (Counter(cmp=classes - 1, add=classes - 1) if func == "softmax"
                 else Counter(add=classes, cmp=1))
        counts += Counter({op: n * rows for op, n in extra.items()})
    return Counter({f"{op} {fmt!r}": n for op, n in counts.items()})
