"""Analytic operation counts and memory traffic of kernel spec v2.

Counted from the shapes, so every backend that implements the spec reports the same numbers
for the same request; the emulated backend's counting mode counts what it really performs and
the tests check that the two agree::

    >>> from protocol.formats import parse_format
    >>> fmts = KernelFormats(parse_format("fixed<2,6>"), parse_format("fixed<1,7>"),
    ...                      parse_format("fp32"), "stochastic", 8)
    >>> ops = epoch_ops("svrg", "linear", fmts, n_features=2, n_outputs=1, batch=1, steps=10)
    >>> ops["mul fixed<2,6>*fixed<2,7>"], ops["add fixed<4,13>"], ops["rng bits"]
    (20, 10, 160)

Every key is ``"<op> <operand format>[ <rounding>]"``: ``mul`` and ``add`` name the format
they work in (the exact dot's register is ``fixed<IL,FL>`` of
:func:`protocol.capabilities.exact_dot_format`, so its width is in the key), ``round F mode``
a conversion into F, ``cmp``/``rint``/``ldexp``/``div`` the accumulator's comparisons,
round-to-integer, exponent shifts and divides. ``docs/accelerator.md`` lists them.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from accel.spec import nonlinear
from protocol.capabilities import exact_dot_format
from protocol.formats import FixedFormat, FloatFormat, Format

# Random bits drawn per stochastic rounding when rbits = 0 ("the whole discarded
# width"): one full 32-bit generator word per rounded element.
WORD_BITS = 32


def update_format(offset: FixedFormat) -> FixedFormat:
    """Where step 7 forms q − t exactly: the offset grid with 3 more integer bits (holds ±2^(IL+1))."""
    return FixedFormat(offset.int_bits + 3, offset.frac_bits)


def difference_format(offset: FixedFormat) -> FixedFormat:
    """Where dq = q − q_a lives exactly: one more integer bit than the offset."""
    return FixedFormat(offset.int_bits + 1, offset.frac_bits)


@dataclass(frozen=True)
class KernelFormats:
    """The number formats and offset rounding a configured kernel runs with."""

    data: Format
    offset: FixedFormat
    acc: FloatFormat
    rounding: str
    rbits: int


@dataclass(frozen=True)
class ExactKeys:
    """The keys of the exact (integer) operations of one kernel, named once for both the
    analytic counts and the counting backend."""

    dot_mul: str        # x_i · v, v = dq (svrg) or q (sgd)
    dot_add: str        # the exact dot's adds, in its register format
    diff: str           # dq = q − q_a (svrg)
    update: str         # q + Q(−t) in fixed<IL+3,FL>
    offset_round: str   # Q_offset with the configured rounding
    acc_round: str      # R: a conversion into the accumulator format


@lru_cache(maxsize=256)
def exact_keys(algorithm: str, fmts: KernelFormats, n_features: int) -> ExactKeys:
    v = difference_format(fmts.offset) if algorithm == "svrg" else fmts.offset
    dot = exact_dot_format(fmts.data, fmts.offset, n_features, difference=algorithm == "svrg")
    return ExactKeys(dot_mul=f"mul {fmts.data!r}*{v!r}", dot_add=f"add {dot!r}",
                     diff=f"add {difference_format(fmts.offset)!r}",
                     update=f"add {update_format(fmts.offset)!r}",
                     offset_round=f"round {fmts.offset!r} {fmts.rounding}",
                     acc_round=f"round {fmts.acc!r} nearest_even")


def epoch_ops(algorithm: str, problem: str, fmts: KernelFormats, *, n_features: int,
              n_outputs: int, batch: int, steps: int) -> dict[str, int]:
    """Operation counts of one ``run_epoch`` of ``steps`` inner steps."""
    F, C, B = n_features, n_outputs, batch
    keys, acc = exact_keys(algorithm, fmts, F), repr(fmts.acc)
    add, mul = f"add {acc}", f"mul {acc}"
    per = Counter()
    if algorithm == "svrg":
        per[keys.diff] += F * C                  # 1: dq = q − q_a
    per[keys.dot_mul] += B * F * C               # 2: exact products of x_i · v
    per[keys.dot_add] += B * (F - 1) * C         #    and their exact sums
    per[keys.acc_round] += B * C                 # 3: the exact dot into the accumulator, R(s_i)
    per[mul] += B * C                            #    d_i = R(s·R(s_i))  or  a_i = R(s·R(x_i·q))
    if algorithm == "svrg":                      # 4: the response r
        if problem != "linear":
            per.update(nonlinear.op_counts(fmts.acc, f"{problem}_response", B, C))
    else:
        if problem != "linear":
            per.update(nonlinear.op_counts(fmts.acc, "sigmoid" if problem == "logistic" else "softmax", B, C))
        per[add] += B * C                        #    ℓ' − y
    per[mul] += B * F * C                        # 5: R(x_i r_i)
    per[add] += (B - 1) * F * C                  #    batch sum
    if B > 1:
        per[mul] += F * C                        #    · R(1/B)
    per[mul] += 2 * F * C                        # 6: R(λ · R(s · v))
    per[add] += (2 if algorithm == "svrg" else 1) * F * C   # + reg term (+ g̃)
    per[mul] += 2 * F * C                        # 7: t = R(R(α u) · R(1/s))
    per[keys.update] += F * C                    #    q + Q(−t), exact
    per[keys.offset_round] += F * C
    if fmts.rounding == "stochastic":
        per["rng bits"] += (fmts.rbits or WORD_BITS) * F * C
    out = Counter({k: v * steps for k, v in per.items() if v})
    out[f"div {acc}"] += 2 if B > 1 else 1       # per-epoch constants R(1/s), R(1/B)
    out[keys.acc_round] += 2                     # and R(α), R(λ)
    return dict(out)


def load_ops(problem: str, fmts: KernelFormats, *, rows: int, n_features: int) -> dict[str, int]:
    """Operations of one ``load_data`` of ``rows`` rows: x into the data format, y into acc."""
    out = {f"round {fmts.data!r} nearest_even": rows * n_features}
    if problem == "linear":                      # least-squares targets are stored as R(y)
        out[f"round {fmts.acc!r} nearest_even"] = rows
    return out


def recentre_ops(fmts: KernelFormats, *, n_features: int, n_outputs: int, anchor_rows: int,
                 rescale: bool) -> dict[str, int]:
    """R(g̃), R(anchor terms) and, with a new scale, R(scale)."""
    return {f"round {fmts.acc!r} nearest_even": n_features * n_outputs + anchor_rows * n_outputs + rescale}


def promote_ops(problem: str, old: KernelFormats, new: KernelFormats, *, n_samples: int,
                n_features: int, n_outputs: int, anchor_rows: int) -> dict[str, int]:
    """q and q_a into the new offset format; on an accumulator change s, g̃, P, (y) into it."""
    out = Counter({f"round {new.offset!r} nearest_even": 2 * n_features * n_outputs})
    if new.acc != old.acc:
        out[f"round {new.acc!r} nearest_even"] += (1 + n_features * n_outputs + anchor_rows * n_outputs
                                                   + (n_samples if problem == "linear" else 0))
    return dict(out)


def epoch_memory(algorithm: str, problem: str, fmts: KernelFormats, *, n_features: int,
                 n_outputs: int, batch: int, steps: int) -> dict[str, int]:
    """Bytes read and written per memory, each operand read once per use at its width."""
    F, C, B = n_features, n_outputs, batch
    wd, wo, wa = fmts.data.bits, fmts.offset.bits, fmts.acc.bits
    bits = Counter()
    bits["data read"] = 2 * B * F * wd           # x_i for the dot and again for x_i r_i
    bits["offset read"] = 3 * F * C * wo         # svrg: q, q_a, q; sgd: q, q, q
    bits["offset write"] = F * C * wo
    if algorithm == "svrg":
        bits["gradient read"] = F * C * wa       # g̃
        if problem != "linear":
            bits["anchor read"] = B * C * wa     # P rows of the batch
    else:
        bits["data read"] += B * wa              # labels, stored at the accumulator width
    return {k: math.ceil(v * steps / 8) for k, v in bits.items()}
