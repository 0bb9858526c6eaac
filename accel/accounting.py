"""Analytic operation counts and memory traffic of one inner-loop epoch (kernel spec v1).

Counted from the shapes, not by instrumenting each operation, so every backend that
implements the spec reports the same numbers for the same request::

    >>> from protocol.formats import parse_format
    >>> fmts = KernelFormats(parse_format("fixed<2,6>"), parse_format("fixed<1,7>"),
    ...                      parse_format("fp32"), "stochastic", 8)
    >>> ops = epoch_ops("svrg", "linear", fmts, n_features=2, n_outputs=1, batch=1, steps=10)
    >>> ops["mul fixed<2,6>*fixed<1,7>"], ops["rng bits"]
    (20, 160)

Keys are documented in ``docs/accelerator.md`` ("Operation counts", "Memory model").
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from protocol.formats import FixedFormat, Format

# Random bits drawn per stochastic rounding when rbits = 0 ("the whole discarded
# width"): one full 32-bit generator word per rounded element.
WORD_BITS = 32


def update_format(offset: FixedFormat) -> FixedFormat:
    """Where step 7 forms q − t exactly: the offset grid with 3 more integer bits (holds ±2^(IL+1))."""
    return FixedFormat(offset.int_bits + 3, offset.frac_bits)


@dataclass(frozen=True)
class KernelFormats:
    """The number formats and offset rounding a configured kernel runs with."""

    data: Format
    offset: Format
    acc: Format
    rounding: str
    rbits: int


def epoch_ops(algorithm: str, problem: str, fmts: KernelFormats, *, n_features: int,
              n_outputs: int, batch: int, steps: int) -> dict[str, int]:
    """Operation counts of ``steps`` inner steps, keyed "kind format"."""
    F, C, B = n_features, n_outputs, batch
    acc, mul_dx = repr(fmts.acc), f"mul {fmts.data!r}*{fmts.offset!r}"
    per = Counter()
    per[mul_dx] += B * F * C                     # exact dot products x_i · (dq or q)
    per["add exact-acc"] += B * (F - 1) * C      # their exact sums
    per[f"round {acc} nearest_even"] += B * C    # the exact dot leaves the accumulator: R(s_i)
    per[f"mul {acc}"] += B * C                   # d_i = R(s·R(s_i))  or  a_i = R(s·R(x_i·q))
    if algorithm == "svrg":
        per[f"add {fmts.offset!r}"] += F * C     # dq = q − q_a (exact)
        if problem != "linear":
            per[f"nonlinear {acc}"] += B * C     # r_i from expm1 and the anchor terms
    else:
        if problem != "linear":
            per[f"nonlinear {acc}"] += B * C     # σ or softmax
        per[f"add {acc}"] += B * C               # ℓ' − y
    per[f"mul {acc}"] += B * F * C               # R(x_i r_i)
    per[f"add {acc}"] += (B - 1) * F * C         # batch sum
    if B > 1:
        per[f"mul {acc}"] += F * C               # · R(1/B)
    per[f"mul {acc}"] += 2 * F * C               # R(λ · R(s · dq))
    per[f"add {acc}"] += (2 if algorithm == "svrg" else 1) * F * C   # + reg term, + g̃
    per[f"mul {acc}"] += 2 * F * C               # t = R(R(α u) · R(1/s))
    per[f"add {update_format(fmts.offset)!r}"] += F * C   # q − t, exact
    per[f"round {fmts.offset!r} {fmts.rounding}"] += F * C
    if fmts.rounding == "stochastic":
        per["rng bits"] += (fmts.rbits or WORD_BITS) * F * C
    out = {k: v * steps for k, v in per.items() if v}
    out[f"div {acc}"] = 2 if B > 1 else 1        # per-epoch constants R(1/s), R(1/B)
    return out


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
