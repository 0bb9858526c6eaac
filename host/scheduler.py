"""Scheduler policies: between epochs, decide whether to re-scale the offset grid and whether
to promote the accelerator's offset format; :func:`halp_mu` sets how wide a re-scaled grid
is. A policy only decides; the training loop acts, and only by sending messages
(``recentre`` with a scale, ``promote``), and records each decision's reason in the epoch's
metrics and the trace.

Example::

    >>> policy = AdaptivePrecision(FixedPrecision(), threshold=0.9)
    >>> policy.decide(History([1.0, 0.5]), FixedFormat(1, 7))
    Decision(rescale=False, promote=None, reason='')
    >>> policy.decide(History([1.0, 0.5, 0.49]), FixedFormat(1, 7)).promote
    fixed<1,11>
    >>> DynamicPrecisionScaling().decide(History([1.0, 0.5], [0.02]), FixedFormat(1, 7)).promote
    fixed<2,6>

A :class:`History` holds what the policies look at: the full-gradient norms ‖∇f‖ at the start
of every epoch so far (the last entry being the current point; one entry before epoch 1), and
per finished epoch the fraction of offset updates that saturated.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from protocol.formats import FixedFormat, Format

POLICIES = ("recentre", "fixed", "adaptive", "dps")
MU_RULES = ("widen", "fixed")


@dataclass(frozen=True)
class Decision:
    rescale: bool                 # bit centering: new anchor with a new scale, offset reset to 0
    promote: Format | None = None  # send promote(offset_format=…) before the epoch
    reason: str = ""              # why the format changes, in words (empty when it does not)


@dataclass(frozen=True)
class History:
    """What a policy sees between epochs (see the module docstring)."""

    grad_norms: Sequence[float]
    saturation_rates: Sequence[float] = ()    # saturated offset updates / offset updates, per epoch


class Policy(Protocol):
    def decide(self, history: History, offset_format: Format) -> Decision: ...


def _fixed(policy: object, offset_format: Format) -> FixedFormat:
    """``offset_format``, refused unless fixed point (the policies that change it need ⟨IL, FL⟩)."""
    if not isinstance(offset_format, FixedFormat):
        raise ValueError(f"{type(policy).__name__} changes fixed-point offset formats only; got {offset_format!r}")
    return offset_format


@dataclass(frozen=True)
class RecentreEveryEpoch:
    """HALP: re-centre with a fresh scale δ = ‖g̃‖/(μ·max_value) before every epoch."""

    def decide(self, history: History, offset_format: Format) -> Decision:
        return Decision(rescale=True)


@dataclass(frozen=True)
class FixedPrecision:
    """LP-SGD / LP-SVRG: the grid and the format stay as configured for the whole run."""

    def decide(self, history: History, offset_format: Format) -> Decision:
        return Decision(rescale=False)


@dataclass(frozen=True)
class AdaptivePrecision:
    """Raise the offset precision when progress stalls; re-scaling follows ``base``.

    Rule: if ‖g̃_e‖/‖g̃_{e−1}‖ > ``threshold`` (the last epoch shrank the gradient by less
    than the threshold factor) and the offset format is narrower than ``max_bits``,
    promote it by ``step_bits`` fraction bits (same integer bits, so the range is kept and
    the grid gets 2^step_bits times finer), capped at ``max_bits``. Only fixed-point offset
    formats can be widened this way.
    """

    base: RecentreEveryEpoch | FixedPrecision = FixedPrecision()
    threshold: float = 0.9
    step_bits: int = 4
    max_bits: int = 16

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold:
            raise ValueError(f"threshold must be > 0; got {self.threshold}")
        if not (1 <= self.step_bits and 2 <= self.max_bits <= 53):
            raise ValueError(f"need step_bits >= 1 and 2 <= max_bits <= 53; got {self.step_bits}, {self.max_bits}")

    def decide(self, history: History, offset_format: Format) -> Decision:
        rescale = self.base.decide(history, offset_format).rescale
        fmt = _fixed(self, offset_format)
        norms = history.grad_norms
        ratio = norms[-1] / norms[-2] if len(norms) >= 2 and norms[-2] > 0 else 0.0
        if ratio <= self.threshold or fmt.bits >= self.max_bits:
            return Decision(rescale)
        added = min(self.step_bits, self.max_bits - fmt.bits)
        wider = FixedFormat(fmt.int_bits, fmt.frac_bits + added, fmt.signed, fmt.overflow)
        return Decision(rescale, promote=wider,
                        reason=f"‖∇f‖ shrank only to {ratio:.3g} of the last epoch's (> {self.threshold:g})")


@dataclass(frozen=True)
class DynamicPrecisionScaling:
    """Dynamic precision scaling (Na and Mukhopadhyay, ISLPED 2016): the word length stays, the
    split ⟨IL, FL⟩ of the fixed-point offset follows the overflow rate; re-scaling follows ``base``.

    Rule: with r the fraction of the last epoch's offset updates that saturated, r > ``high``
    moves a bit from FL to IL (twice the range on a twice coarser grid), r < ``low`` moves one
    back (keeping IL ≥ 1, the sign), anything between keeps the split. Only fixed-point offset
    formats have a split to move.
    """

    base: RecentreEveryEpoch | FixedPrecision = FixedPrecision()
    high: float = 1e-4
    low: float = 1e-6

    def __post_init__(self) -> None:
        if not 0.0 <= self.low < self.high <= 1.0:
            raise ValueError(f"need 0 <= low < high <= 1; got low={self.low}, high={self.high}")

    def decide(self, history: History, offset_format: Format) -> Decision:
        rescale = self.base.decide(history, offset_format).rescale
        fmt = _fixed(self, offset_format)
        if not history.saturation_rates:
            return Decision(rescale)
        rate = history.saturation_rates[-1]
        if rate > self.high and fmt.frac_bits > 0:
            il, fl, why = fmt.int_bits + 1, fmt.frac_bits - 1, f"> {self.high:g}: one bit more range"
        elif rate < self.low and fmt.int_bits > 1:
            il, fl, why = fmt.int_bits - 1, fmt.frac_bits + 1, f"< {self.low:g}: one bit more resolution"
        else:
            return Decision(rescale)
        return Decision(rescale, promote=FixedFormat(il, fl, fmt.signed, fmt.overflow),
                        reason=f"saturation rate {rate:.3g} {why}")


def halp_mu(mu: float, l2: float, saturated_epochs: int, rule: str = "widen") -> float:
    """HALP's μ for the next re-centre, after ``saturated_epochs`` epochs whose offsets saturated.

    ``fixed``: μ as given, the paper's constant. ``widen``: μ halves after every saturating
    epoch, so the range ±‖g̃‖/μ doubles, but never below min(μ, λ): λ-strong convexity
    already bounds ‖w̃ − w*‖ by ‖g̃‖/λ, so a wider range only coarsens the grid.

    >>> halp_mu(0.1, 0.01, 2)
    0.025
    >>> halp_mu(0.1, 0.01, 9), halp_mu(0.1, 0.01, 9, "fixed")
    (0.01, 0.1)
    """
    if rule not in MU_RULES:
        raise ValueError(f"unknown mu rule {rule!r}; choose one of {', '.join(MU_RULES)}")
    if rule == "fixed":
        return mu
    return max(mu * 0.5**saturated_epochs, min(mu, l2))


def make_policy(name: str | None, algorithm: str) -> Policy:
    """The policy named ``name`` for an accelerator algorithm; None = the algorithm's natural one.

    halp: ``recentre`` (natural), ``adaptive`` or ``dps`` (both re-centre every epoch and may
    promote); lpsgd / lpsvrg: ``fixed`` (natural), ``adaptive`` or ``dps``.
    """
    if algorithm not in ("halp", "lpsgd", "lpsvrg"):
        raise ValueError(f"policies drive accelerator algorithms (halp, lpsgd, lpsvrg); got {algorithm!r}")
    natural = RecentreEveryEpoch() if algorithm == "halp" else FixedPrecision()
    valid = ("recentre" if algorithm == "halp" else "fixed", "adaptive", "dps")
    if name is None:
        return natural
    if name not in valid:
        raise ValueError(f"policy {name!r} does not apply to {algorithm}; valid: {', '.join(valid)}")
    return {"adaptive": AdaptivePrecision, "dps": DynamicPrecisionScaling}.get(name, lambda base: base)(natural)
