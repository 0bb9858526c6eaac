"""Scheduler policies: between epochs, decide whether to re-scale the offset grid and whether
to promote the accelerator's offset format; :func:`halp_mu` sets how wide a re-scaled grid
is. A policy only decides; the training loop acts, and only by sending messages
(``recentre`` with a scale, ``promote``).

Example::

    >>> policy = AdaptivePrecision(FixedPrecision(), threshold=0.9)
    >>> policy.decide([1.0, 0.5], FixedFormat(1, 7))
    Decision(rescale=False, promote=None)
    >>> policy.decide([1.0, 0.5, 0.49], FixedFormat(1, 7))
    Decision(rescale=False, promote=fixed<1,11>)

``grad_norms`` is the history of full-gradient norms ‖∇f‖ at the start of every epoch so far,
the last entry being the current point (one entry before epoch 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from protocol.formats import FixedFormat, Format

POLICIES = ("recentre", "fixed", "adaptive")
MU_RULES = ("widen", "fixed")


@dataclass(frozen=True)
class Decision:
    rescale: bool                 # bit centering: new anchor with a new scale, offset reset to 0
    promote: Format | None = None  # send promote(offset_format=…) before the epoch


class Policy(Protocol):
    def decide(self, grad_norms: Sequence[float], offset_format: Format) -> Decision: ...


@dataclass(frozen=True)
class RecentreEveryEpoch:
    """HALP: re-centre with a fresh scale δ = ‖g̃‖/(μ·max_value) before every epoch."""

    def decide(self, grad_norms: Sequence[float], offset_format: Format) -> Decision:
        return Decision(rescale=True)


@dataclass(frozen=True)
class FixedPrecision:
    """LP-SGD / LP-SVRG: the grid and the format stay as configured for the whole run."""

    def decide(self, grad_norms: Sequence[float], offset_format: Format) -> Decision:
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

    def decide(self, grad_norms: Sequence[float], offset_format: Format) -> Decision:
        rescale = self.base.decide(grad_norms, offset_format).rescale
        if not isinstance(offset_format, FixedFormat):
            raise ValueError(f"AdaptivePrecision widens fixed-point offset formats only; got {offset_format!r}")
        stalled = len(grad_norms) >= 2 and grad_norms[-2] > 0 and grad_norms[-1] / grad_norms[-2] > self.threshold
        if not stalled or offset_format.bits >= self.max_bits:
            return Decision(rescale)
        added = min(self.step_bits, self.max_bits - offset_format.bits)
        wider = FixedFormat(offset_format.int_bits, offset_format.frac_bits + added,
                            offset_format.signed, offset_format.overflow)
        return Decision(rescale, promote=wider)


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

    halp: ``recentre`` (natural) or ``adaptive`` (re-centres every epoch and may promote);
    lpsgd / lpsvrg: ``fixed`` (natural) or ``adaptive``.
    """
    if algorithm not in ("halp", "lpsgd", "lpsvrg"):
        raise ValueError(f"policies drive accelerator algorithms (halp, lpsgd, lpsvrg); got {algorithm!r}")
    natural = RecentreEveryEpoch() if algorithm == "halp" else FixedPrecision()
    valid = ("recentre", "adaptive") if algorithm == "halp" else ("fixed", "adaptive")
    if name is None:
        return natural
    if name not in valid:
        raise ValueError(f"policy {name!r} does not apply to {algorithm}; valid: {', '.join(valid)}")
    return natural if name != "adaptive" else AdaptivePrecision(natural)
