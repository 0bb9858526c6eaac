"""Compiled kernels of spec v2: the emulated backend's svrg and sgd epochs in numba, bit for bit.

:class:`accel.backends.emulated.EmulatedBackend` (``counting=False``) calls :func:`run_epoch`
whenever :func:`covers` says the configuration is covered, and its numpy reference otherwise::

    >>> import numpy as np
    >>> from protocol.formats import parse_format
    >>> fmts = KernelFormats(parse_format("fixed<2,6>"), parse_format("fixed<1,7>"),
    ...                      parse_format("fp32"), "nearest_even", 0)
    >>> covers(fmts, "sgd", "linear", anchored=False)
    True
    >>> k = StepConstants(s=1.0, inv_s=1.0, alpha=0.5, lam=0.0, inv_b=1.0)
    >>> data = PackedData(fmts.data, n_samples=2, n_features=2)
    >>> data.put(0, np.eye(2))
    >>> q, saturations, stats, failed = run_epoch(
    ...     "sgd", "linear", fmts, k, data=data, y=np.array([0.5, -0.25]), anchor=None,
    ...     q=np.zeros((2, 1)), qa=np.zeros((2, 1)), g_tilde=np.zeros((2, 1)),
    ...     order=np.array([0, 1]), batch=1, steps=2, rng_states=None, statistics=True)
    >>> q.tolist(), saturations, failed, stats.vanished
    ([[0.25], [-0.125]], 0, -1, 0)

The kernel performs the reference's operations (``docs/accelerator.md``, "Kernel arithmetic";
:mod:`accel.spec.arith`, :mod:`accel.spec.nonlinear`) in the same order, each a float64
operation followed by R, so the results are the same bits: offsets, saturation counts, the
update statistics (``accel.spec.gradstats``, when asked for) and the step at which a NaN
update refuses the epoch. Only the exact dot of step 2 is summed in another
order, which cannot change its value. R is chosen at compile time by the type of a token
(:func:`_acc_token`): fp64 is the identity; fp32 is the float64 → float32 cast, and fp32
values are held as float32, so that an operation on two of them is the float32 operation, the
same bits (double rounding is innocuous, ``accel.spec.arith``); any other float format rounds
by :func:`_round_float`, exactly as ``accel.numerics.quantize`` does. Step 7 rounds the
offset as ``accel.backends.emulated.offset_update`` does, and stochastic rounding draws each
step's words with ``accel.numerics.rng.draw_rounds``, element k from lane k mod ``lanes``.

Kernels are compiled on first use, once per accumulator kind (fp32, fp64, other: about 8–17 s
each on a 2-core VM) and cached on disk (``cache=True``), so later processes load them in
milliseconds. ``tests/accel/test_compiled.py`` holds them to the reference bit for bit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numba import njit, types
from numba.extending import overload

from accel.backends.packed import CODES8, CODES16, VALUES32, PackedData
from accel.numerics.rng import draw_rounds
from accel.numerics.rounding import rbits_code
from accel.spec import nonlinear
from accel.spec.counts import KernelFormats
from accel.spec.gradstats import BINADE_FLOOR, UpdateStats, binade_slots
from protocol.formats import PRESETS, FixedFormat, FloatFormat

__all__ = ["StepConstants", "covers", "decode_row", "held_dtype", "run_epoch"]


@dataclass(frozen=True)
class StepConstants:
    """Per-epoch constants of the kernels, each already in the accumulator format."""

    s: float          # scale
    inv_s: float      # R(1/s)
    alpha: float      # R(α)
    lam: float        # R(λ)
    inv_b: float      # R(1/B)


_PROBLEMS = {"linear": 0, "logistic": 1, "softmax": 2}
_OVF_INF, _OVF_SAT, _OVF_NAN = 0, 1, 2     # a float format's overflow rule, as in quantize
_NEAREST, _SR, _SR_NARROW = 0, 1, 2        # step 7's rounding, as the update loop runs it

# Slots of the nonlinearity's scalar constants (accel.spec.nonlinear.constants) in one array,
# followed by 2^k for every k a float64 holds (k = _POW2_MIN … 1023, from slot _POW2_AT on):
# an argument, not a global array, which would keep numba from caching the kernels.
_LOG2E, _LN2, _LN2_LO, _EXP_LO, _EXP_HI, _EXPM1_LO, _DEN_FLOOR, _RESP_HI, _POW2_AT = range(9)
_POW2_MIN = -1074
_INF_BITS = 0x7FF0_0000_0000_0000          # +inf as int64: the smallest |t'| before any is seen


# -- R: one rounding into the accumulator format --------------------------------------------

@njit(cache=True)
def _round_float(v: float, man_bits: int, emin: int, qsub: int, max_value: float, ovf: int,
                 has_inf: bool) -> float:
    """v rounded to nearest-even in a float format (``accel.numerics.quantize``'s result).

    |v| = m·2^e; the grid step is 2^q, q = e − man_bits in the normal range and the subnormal
    step (the smallest normal without subnormals) below it. v·2^-q is exact (the capabilities
    keep exponents within ±400, far inside float64), so rint rounds once.
    """
    if math.isnan(v):
        return v
    a = abs(v)
    if a == 0.0:
        return v                                   # keeps the sign of zero
    if a == np.inf:
        mag = np.inf if has_inf else (np.nan if ovf == _OVF_NAN else max_value)
        return mag if v > 0 else -mag
    e = math.frexp(a)[1] - 1                       # 2^e ≤ a < 2^(e+1), exact
    q = e - man_bits if e >= emin else qsub
    mag = math.ldexp(np.rint(math.ldexp(a, -q)), q)
    if mag > max_value:
        mag = np.inf if ovf == _OVF_INF else (max_value if ovf == _OVF_SAT else np.nan)
    return mag if v > 0 else -mag


def _R(v, tok):
    """R(v) in the accumulator format that the token ``tok`` stands for (compiled code only)."""
    raise NotImplementedError("_R is resolved at compile time inside the kernels")


@overload(_R)
def _R_impl(v, tok):
    # Chosen by tok's type when a kernel is compiled: no branch per operation in the loops.
    if isinstance(tok, types.Float) and tok.bitwidth == 64:
        return lambda v, tok: v
    if isinstance(tok, types.Float) and tok.bitwidth == 32:
        # Held as float32: an operation on two float32 operands is then the float32 operation,
        # which is the float64 one followed by R (double rounding is innocuous, arith.py).
        return lambda v, tok: np.float32(v)
    return lambda v, tok: _round_float(v, tok[0], tok[1], tok[2], tok[3], tok[4], tok[5])


def _acc_token(fmt: FloatFormat):
    """(token that selects R for ``fmt``, dtype its values are held in): a float32 zero for fp32,
    a float64 zero for fp64, else the format's parameters (held as float64)."""
    if fmt == PRESETS["fp32"]:
        return np.float32(0.0), np.float32
    if fmt == PRESETS["fp64"]:
        return np.float64(0.0), np.float64
    ovf = {"inf": _OVF_INF, "saturate": _OVF_SAT, "nan": _OVF_NAN}[fmt.overflow]
    qsub = fmt.emin - fmt.man_bits if fmt.subnormals else fmt.emin
    return (fmt.man_bits, fmt.emin, qsub, fmt.max_value, ovf, fmt.has_inf), np.float64


# -- The nonlinearity (accel.spec.nonlinear, over one row of C values) ----------------------
# Like the numpy reference, each operation runs over the whole row before the next, so the C
# independent chains of a softmax row overlap; ``scratch`` holds three rows (n, r and σ's signs).

@njit(cache=True)
def _clamp(x: float, lo: float, hi: float) -> float:
    """np.clip for one value: NaN and the sign of zero pass through (min and max would not)."""
    return lo if x < lo else (hi if x > hi else x)  # noqa: FURB136


@njit(cache=True)
def _at_least(x: float, lo: float) -> float:
    """np.maximum(x, lo) for a constant lo: NaN passes through (max would not)."""
    return lo if x < lo else x  # noqa: FURB136


@njit(cache=True)
def _ldexp(a: float, n: float, kc: np.ndarray) -> float:
    """np.ldexp(a, n) for an integer-valued n (NaN only where a is NaN too).

    a·2^n is one correctly rounded multiplication whenever 2^n is a float64 (normal or
    subnormal), as ldexp is; only fp64's extreme n need the library call.
    """
    k = 0 if math.isnan(n) else int(n)
    if _POW2_MIN <= k <= 1023:
        return a * kc[_POW2_AT + k - _POW2_MIN]
    return math.ldexp(a, k)


@njit(cache=True)
def _reduce(x, n, r, e, tok, kc, pieces, coeffs):
    """Steps 3–4: r = x − n·ln 2 by Cody–Waite, then e = E ≈ expm1(r) (x clamped; e may be x)."""
    m = x.shape[0]
    for c in range(m):
        r[c] = x[c]
    for piece in pieces:                                       # both exact
        for c in range(m):
            r[c] = _R(r[c] - _R(n[c] * piece, tok), tok)
    ln2_lo = kc[_LN2_LO]
    for c in range(m):
        r[c] = _R(r[c] - _R(n[c] * ln2_lo, tok), tok)
    top = coeffs[coeffs.shape[0] - 1]
    for c in range(m):
        e[c] = top
    for i in range(coeffs.shape[0] - 2, -1, -1):               # Horner: Q
        ci = coeffs[i]
        for c in range(m):
            e[c] = _R(ci + _R(r[c] * e[c], tok), tok)
    for c in range(m):
        e[c] = _R(r[c] + _R(r[c] * _R(r[c] * e[c], tok), tok), tok)


@njit(cache=True)
def _exp_row(x, out, scratch, tok, kc, pieces, coeffs):
    """out = exp(x) for x already clamped (out may be x)."""
    n, r = scratch[0], scratch[1]
    for c in range(x.shape[0]):
        n[c] = np.rint(_R(x[c] * kc[_LOG2E], tok))
    _reduce(x, n, r, out, tok, kc, pieces, coeffs)
    for c in range(x.shape[0]):
        out[c] = _R(_ldexp(_R(1.0 + out[c], tok), n[c], kc), tok)


@njit(cache=True)
def _expm1_row(x, out, scratch, tok, kc, pieces, coeffs):
    """out = expm1(x) for x already clamped, without the x = 0 selection (out may be x)."""
    n, r = scratch[0], scratch[1]
    for c in range(x.shape[0]):
        n[c] = 0.0 if abs(x[c]) < kc[_LN2] else np.rint(_R(x[c] * kc[_LOG2E], tok))
    _reduce(x, n, r, out, tok, kc, pieces, coeffs)
    for c in range(x.shape[0]):
        shifted = _R(_R(_ldexp(1.0, -n[c], kc), tok) - 1.0, tok)
        out[c] = _R(_ldexp(_R(out[c] - shifted, tok), n[c], kc), tok)


@njit(cache=True)
def _sigmoid_row(a, out, scratch, tok, kc, pieces, coeffs):
    """out = σ(a), from t = exp(−|a|) (out may be a)."""
    positive = scratch[2]
    for c in range(a.shape[0]):
        positive[c] = a[c] > 0
        out[c] = _at_least(-a[c] if a[c] > 0 else a[c], kc[_EXP_LO])
    _exp_row(out, out, scratch, tok, kc, pieces, coeffs)
    for c in range(a.shape[0]):
        out[c] = _R((1.0 if positive[c] else out[c]) / _R(1.0 + out[c], tok), tok)


@njit(cache=True)
def _softmax_row(a, out, scratch, tok, kc, pieces, coeffs):
    """out = softmax(a) for one row: rowmax (NaN-propagating, as numpy's), exp, rowsum, divide.

    ``out`` may be ``a``: element c is read before it is written."""
    m = a[0]
    for c in range(1, a.shape[0]):
        if a[c] > m or math.isnan(a[c]):
            m = a[c]
        if math.isnan(m):
            break
    for c in range(a.shape[0]):
        out[c] = _at_least(_R(a[c] - m, tok), kc[_EXP_LO])
    _exp_row(out, out, scratch, tok, kc, pieces, coeffs)
    total = out[0]
    for c in range(1, a.shape[0]):
        total = _R(total + out[c], tok)
    for c in range(a.shape[0]):
        out[c] = _R(out[c] / total, tok)


@njit(cache=True)
def _response_expm1(d, out, scratch, tok, kc, pieces, coeffs):
    for c in range(d.shape[0]):
        out[c] = _clamp(d[c], kc[_EXPM1_LO], kc[_RESP_HI])
    _expm1_row(out, out, scratch, tok, kc, pieces, coeffs)


@njit(cache=True)
def _logistic_response(d, p, out, scratch, tok, kc, pieces, coeffs):
    """out[0] = step 4's r for one logistic row (d: one value, p: its anchor term)."""
    _response_expm1(d, out, scratch, tok, kc, pieces, coeffs)
    e = out[0]
    num = _R(_R(p * _R(1.0 - p, tok), tok) * e, tok)
    out[0] = _R(num / _at_least(_R(1.0 + _R(p * e, tok), tok), kc[_DEN_FLOOR]), tok)


@njit(cache=True)
def _softmax_response(d, p, out, scratch, tok, kc, pieces, coeffs):
    """out = step 4's r for one softmax row (d, p: the row's C values); ``out`` may be ``d``."""
    _response_expm1(d, out, scratch, tok, kc, pieces, coeffs)
    total = _R(p[0] * out[0], tok)
    for c in range(1, d.shape[0]):
        total = _R(total + _R(p[c] * out[c], tok), tok)
    den = _at_least(_R(1.0 + total, tok), kc[_DEN_FLOOR])
    for c in range(d.shape[0]):
        out[c] = _R(_R(p[c] * _R(out[c] - total, tok), tok) / den, tok)


# -- The epoch ----------------------------------------------------------------------------
# Inside the kernel the F × C arrays are held transposed, C × F, so that every pass over the
# weights runs along the F features of one output: loops long enough to vectorise even when
# C is 1 (linear, logistic) or 10 (digits), where loops over C would stay scalar.

@njit(cache=True)
def decode_row(raw: np.ndarray, kind: int, table: np.ndarray, out: np.ndarray) -> None:
    """out = the float64 values of one data row as :class:`accel.backends.packed.PackedData` holds it.

    ``raw`` is the row's bytes; ``kind`` says how to read them: 8- or 16-bit codes through
    ``table``, or float32 or float64 values. One kernel signature serves every data format.
    """
    if kind == CODES8:
        for f in range(out.shape[0]):
            out[f] = table[raw[f]]
    elif kind == CODES16:
        codes = raw.view(np.uint16)
        for f in range(out.shape[0]):
            out[f] = table[codes[f]]
    elif kind == VALUES32:
        values = raw.view(np.float32)
        for f in range(out.shape[0]):
            out[f] = values[f]
    else:
        out[:] = raw.view(np.float64)


@njit(cache=True, fastmath={"reassoc"})
def _exact_dot(x: np.ndarray, v: np.ndarray) -> float:
    """Step 2's x · v. Every partial sum, in any order, is an integer multiple of the products'
    quantum u below 2^53·u in magnitude (the exact-dot register checked at configure), so it is
    exact in float64 and the sum may be reassociated: the one flag that lets it vectorise."""
    acc = 0.0
    for f in range(x.shape[0]):
        acc += x[f] * v[f]
    return acc


@njit(cache=True, inline="always")
def _update(tok, rounding, src, mult, v, qa, gt, words, consts, stats, mag):
    """Steps 5 (its last product or R(G·R(1/B))), 6 and 7 in one pass over the weights.

    Row c's G term is R(src[c]·mult[c]): src = x_i (one row, for every c) and mult = r_i when
    B = 1, src = G and mult = R(1/B) otherwise. v (C × F) holds dq = q − q_a and is updated in
    place; q is q_a + v, exact. sgd runs the same loop with q_a = 0 (v = q) and g̃ = 0: R(u + 0)
    differs from u only in the sign of a zero, which Q(−t) does not see. ``words`` (C × F): this step's
    random words, transposed like the weights. ``rounding`` (_NEAREST, _SR, _SR_NARROW) is a
    constant at each call site (:func:`_update_in`), so each rounding compiles to its own loop
    without per-element branches. With ``stats`` (the same for the whole loop, which the compiler
    hoists) each |t'| goes into ``mag`` (C × F) for the update statistics (``accel.spec.gradstats``;
    :func:`_tally` takes them from there, so this loop keeps no data-dependent branch). Returns
    (NaN seen, saturations, vanished updates); after a NaN the caller discards v and the statistics.
    """
    s, inv_s, alpha, lam, shift, two_r, inv_two_r, bound, scale, eps, lo, hi = consts
    n_c, n_f = v.shape
    nan = False
    saturations = vanished = 0
    for c in range(n_c):
        src_c, mult_c = src[min(c, src.shape[0] - 1)], mult[c]
        vc, qac, gtc, wc, mc = v[c], qa[c], gt[c], words[c], mag[c]
        for f in range(n_f):
            vj = vc[f]
            reg = _R(lam * _R(s * vj, tok), tok)
            u = _R(_R(_R(src_c[f] * mult_c, tok) + reg, tok) + gtc[f], tok)
            t = _R(_R(alpha * u, tok) * inv_s, tok)
            nan |= math.isnan(t)
            qj = qac[f] + vj
            # 7: Q(q − t) = q + Q(−t), |t| clamped to 2^(IL+1); −t·2^FL is exact.
            tc = _clamp(t, -bound, bound)
            w = -tc * scale
            if rounding == _SR_NARROW:
                # The same rounding when |w|·2^r < 2^52 (the caller checks the widths): then
                # W = ⌊w·2^r⌋ and W + U are exact integers, and ⌊(W + U)/2^r⌋ = K + [F + U ≥ 2^r]
                # with K = ⌊w⌋, F = W − K·2^r: one floor and three operations fewer.
                val = qj + np.floor((np.floor(w * two_r) + np.float64(wc[f] >> shift)) * inv_two_r) * eps
            elif rounding == _SR:
                # Floor-based stochastic rounding (docs/numerics.md): K = ⌊w⌋, F = the top r bits of
                # w − K, up if F + U ≥ 2^r. F = ⌊w·2^r⌋ − K·2^r is exact (an integer below 2^r,
                # Sterbenz for large K) where w − K itself is not (w = −2^-60: 1 − 2^-60).
                wk = np.floor(w)
                fr = np.floor(w * two_r) - wk * two_r
                val = qj + (wk + ((fr + np.float64(wc[f] >> shift)) >= two_r)) * eps   # q + (−0) is +0
            elif w - np.floor(w) == 0.5:                       # a tie: q − t is exact in float64
                val = (np.rint((qj - tc) * scale) + 0.0) * eps   # + 0.0: fixed point has one zero
            else:
                val = qj + np.rint(w) * eps
            saturations += (val < lo) | (val > hi)
            vc[f] = _clamp(val, lo, hi) - qac[f]
            if stats:
                a = abs(tc)
                mc[f] = a
                vanished += (val == qj) & (a != 0.0)
    return nan, saturations, vanished


@njit(cache=True)
def _tally(bits: np.ndarray, ext: np.ndarray, counts: np.ndarray, fl: int) -> None:
    """A step's |t'| (float64, ``bits`` as int64) into the statistics: ``ext`` holds the bits of
    the smallest non-zero and of the largest, ``counts`` the binades (zeros are counted in the
    lowest and taken out again: no branch per element). A non-negative float64 orders as its
    bits, and its binade is its exponent field less the bias (a subnormal's, and 0's, lie far
    below BINADE_FLOOR for any offset's FL)."""
    lo, hi, zeros = ext[0], ext[1], 0
    for k in range(bits.shape[0]):
        b = bits[k]
        lo = min(lo, b if b != 0 else _INF_BITS)
        hi = max(hi, b)
        zeros += b == 0
    ext[0], ext[1] = lo, hi
    for k in range(bits.shape[0]):
        counts[max((bits[k] >> 52) - 1023 + fl, BINADE_FLOOR) - BINADE_FLOOR] += 1
    counts[0] -= zeros


@njit(cache=True, inline="always")
def _update_in(tok, rounding, src, mult, v, qa, gt, words, consts, stats, mag):
    """:func:`_update` with ``rounding`` turned into a constant, one call site per rounding."""
    if rounding == _SR_NARROW:
        return _update(tok, _SR_NARROW, src, mult, v, qa, gt, words, consts, stats, mag)
    if rounding == _SR:
        return _update(tok, _SR, src, mult, v, qa, gt, words, consts, stats, mag)
    return _update(tok, _NEAREST, src, mult, v, qa, gt, words, consts, stats, mag)


@njit(cache=True)
def _epoch(tok, svrg, problem, data, kind, table, y, anchor, q, qa, g_tilde, acc_consts, order, batch, steps, kc, pieces,
           coeffs, states, r_bits, stochastic, int_bits, frac_bits, lo, hi, stats, ext, counts):
    """Run ``steps`` steps on q (F × C, updated in place); returns (failed step or −1, saturations,
    vanished updates), with ``stats`` the other update statistics in ``ext`` and ``counts``
    (:func:`_tally`; without, the vanished count is 0 and they are left as they are).

    ``acc_consts`` = (s, R(1/s), R(α), R(λ), R(1/B)) and ``g_tilde`` are held in the
    accumulator's dtype. On a NaN update the step's index is returned at once and q is left
    as it was.
    """
    s, inv_s, alpha, lam, inv_b = acc_consts[0], acc_consts[1], acc_consts[2], acc_consts[3], acc_consts[4]
    n_f, n_c = q.shape
    if svrg:
        qa_t, gt_t = np.ascontiguousarray(qa.T), np.ascontiguousarray(g_tilde.T)
    else:
        qa_t, gt_t = np.zeros((n_c, n_f)), np.zeros((n_c, n_f), dtype=g_tilde.dtype)
    v = np.ascontiguousarray(q.T) - qa_t                       # 1: dq, exact (sgd: q)
    g = np.empty((n_c, n_f) if batch > 1 else (1, 0))
    inv_b_row = np.full(n_c, np.float64(inv_b))     # the same array type as r_i: one _update_in
    resp = np.empty((batch, n_c))
    xb = np.empty((batch, n_f))                                # the step's data rows, decoded
    scratch = np.empty((3, n_c))
    words = np.empty(n_f * n_c if stochastic else 0, dtype=np.uint32)
    words_t = words.reshape((n_c, n_f) if stochastic else (0, 0)).copy()
    st = states.copy()
    consts = (s, inv_s, alpha, lam, np.uint32(32 - r_bits), 2.0 ** r_bits, 2.0 ** -r_bits, 2.0 ** (int_bits + 1),
              2.0 ** frac_bits, 2.0 ** -frac_bits, lo, hi)
    mag = np.zeros(n_c * n_f if stats else 0)                  # a step's |t'|, C × F
    mag_t, mag_bits = mag.reshape((n_c, n_f if stats else 0)), mag.view(np.int64)
    # |w| ≤ 2^(IL+1+FL): the narrow form of stochastic rounding needs |w|·2^r ≤ 2^52.
    rounding = (_NEAREST if not stochastic else
                _SR_NARROW if int_bits + 1 + frac_bits + r_bits <= 52 else _SR)
    saturations = vanished = 0
    for step in range(steps):
        rows = order[step * batch:(step + 1) * batch]
        for b in range(batch):
            i = rows[b]
            row, x = resp[b], xb[b]
            decode_row(data[i], kind, table, x)
            for c in range(n_c):                               # 2, 3: d (svrg), a (sgd)
                row[c] = _R(s * _R(_exact_dot(x, v[c]), tok), tok)
            if svrg:                                           # 4: r
                if problem == 1:
                    _logistic_response(row, anchor[i, 0], row, scratch, tok, kc, pieces, coeffs)
                elif problem == 2:
                    _softmax_response(row, anchor[i], row, scratch, tok, kc, pieces, coeffs)
            elif problem == 0:                                 # sgd: ℓ'(a) from scratch
                row[0] = _R(row[0] - y[i], tok)
            elif problem == 1:
                _sigmoid_row(row, row, scratch, tok, kc, pieces, coeffs)
                row[0] = _R(row[0] - y[i], tok)
            else:
                _softmax_row(row, row, scratch, tok, kc, pieces, coeffs)
                label = int(y[i])
                for c in range(n_c):
                    row[c] = _R(row[c] - (1.0 if c == label else 0.0), tok)
        if batch > 1:                                          # 5: G in batch order
            for c in range(n_c):
                gc, r0 = g[c], resp[0, c]
                x0 = xb[0]
                for f in range(n_f):
                    gc[f] = _R(x0[f] * r0, tok)
                for b in range(1, batch):
                    x, rb = xb[b], resp[b, c]
                    for f in range(n_f):
                        gc[f] = _R(gc[f] + _R(x[f] * rb, tok), tok)
        if stochastic:                                         # element k = f·C + c from lane k mod lanes
            draw_rounds(st, n_f * n_c, words)
            for c in range(n_c):
                wc = words_t[c]
                for f in range(n_f):
                    wc[f] = words[f * n_c + c]
        if batch > 1:
            nan, sat, van = _update_in(tok, rounding, g, inv_b_row, v, qa_t, gt_t, words_t, consts, stats, mag_t)
        else:
            nan, sat, van = _update_in(tok, rounding, xb[0:1], resp[0], v, qa_t, gt_t, words_t, consts, stats,
                                       mag_t)
        if nan:
            return step, saturations, vanished
        saturations += sat
        vanished += van
        if stats:
            _tally(mag_bits, ext, counts, frac_bits)
    q[:] = (qa_t + v).T                                        # exact: q = q_a + dq
    states[:] = st
    return -1, saturations, vanished


def covers(fmts: KernelFormats, algorithm: str, problem: str, anchored: bool) -> bool:
    """Whether :func:`run_epoch` runs this configuration (else the reference code must).

    Every configuration the emulated backend's capabilities admit is covered: any float
    accumulator, signed saturating fixed-point offsets rounded nearest-even or stochastically.
    Logistic and softmax svrg need the anchor terms (the daemon makes sure of them).
    """
    off = fmts.offset
    return (isinstance(fmts.acc, FloatFormat) and isinstance(off, FixedFormat) and off.signed
            and off.overflow == "saturate" and fmts.rounding in ("nearest_even", "stochastic")
            and algorithm in ("svrg", "sgd") and problem in _PROBLEMS
            and (anchored or algorithm == "sgd" or problem == "linear"))


@lru_cache(maxsize=64)
def _nonlinear_constants(acc: FloatFormat, classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kc: the scalar constants and the powers of two, Cody–Waite pieces, c_2 … c_d); read-only."""
    k = nonlinear.constants(acc)
    scalars = [k.log2e, k.ln2, k.ln2_lo, k.exp_lo, k.exp_hi, k.expm1_lo, k.den_floor,
               nonlinear.response_hi(acc, classes)]
    kc = np.concatenate([scalars, np.ldexp(1.0, np.arange(_POW2_MIN, 1024))])
    return kc, np.array(k.ln2_pieces), np.array(k.coeffs)


def held_dtype(acc: FloatFormat) -> np.dtype:
    """The dtype the kernels hold ``acc``'s values in (float32 for fp32, else float64): the
    backend stores its anchor terms in it, so that they reach the kernel without a copy."""
    return np.dtype(_acc_token(acc)[1])


def _writable(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``a`` itself when it is a writable C-contiguous array of ``dtype``, else such a copy."""
    if a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable:
        return a
    return np.array(a, dtype=dtype, order="C")


def run_epoch(algorithm: str, problem: str, fmts: KernelFormats, k: StepConstants, *, data: PackedData,
              y: np.ndarray, anchor: np.ndarray | None, q: np.ndarray, qa: np.ndarray, g_tilde: np.ndarray,
              order: np.ndarray, batch: int, steps: int,
              rng_states: np.ndarray | None,
              statistics: bool = False) -> tuple[np.ndarray, int, UpdateStats | None, int]:
    """One epoch from q: (new q, saturations, update statistics or None without ``statistics``,
    −1) or, on a NaN update, (q's copy, 0, None, failed step).

    ``rng_states``: the LaneRNG's lane states for stochastic rounding (advanced in place, as
    ``LaneRNG.words`` would advance them), None for nearest-even.
    """
    stochastic = fmts.rounding == "stochastic"
    c = q.shape[1]
    kc, pieces, coeffs = _nonlinear_constants(fmts.acc, c)
    tok, held = _acc_token(fmts.acc)
    out = np.array(q, dtype=np.float64, order="C")
    # The small operands are copied: one that is read-only (a zero-copy view of a message, which
    # an fp64 backend stores as it came) would be another signature to compile. The large ones,
    # data and anchor terms, arrive in the layout the kernel takes.
    ext, counts = np.array([_INF_BITS, 0]), np.zeros(binade_slots(fmts.offset), dtype=np.int64)
    failed, saturations, vanished = _epoch(
        tok, algorithm == "svrg", _PROBLEMS[problem], *data.kernel_args(), np.ascontiguousarray(y, dtype=np.float64),
        np.zeros((0, c), dtype=held) if anchor is None else _writable(anchor, held),
        out, np.array(qa, dtype=np.float64, order="C"), np.array(g_tilde, dtype=held, order="C"),
        np.array([k.s, k.inv_s, k.alpha, k.lam, k.inv_b], dtype=held),
        np.array(order, dtype=np.int64), int(batch), int(steps), kc, pieces, coeffs,
        rng_states if stochastic else np.zeros(1, dtype=np.uint32), rbits_code(fmts.rbits or None),
        stochastic, fmts.offset.int_bits, fmts.offset.frac_bits, fmts.offset.min_value, fmts.offset.max_value,
        statistics, ext, counts)
    if failed >= 0:
        return out, 0, None, failed
    if not statistics:
        return out, saturations, None, -1
    lo, hi = ext.view(np.float64)
    return out, saturations, UpdateStats.from_counts(steps * q.size, vanished, lo, hi, counts), -1
