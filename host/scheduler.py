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
per finished epoch the fraction of offset updates that saturated and the statistics of the
updates (:class:`UpdateStatistics`, from an accelerator of protocol 1.5 or later).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import ClassVar, Mapping, Protocol, Sequence

from protocol.formats import FixedFormat, Format
from protocol.messages import EpochReport

POLICIES = ("recentre", "fixed", "adaptive", "dps", "energy", "gradstats")
MU_RULES = ("widen", "fixed")
STATISTICS_SINCE = (1, 5)   # the protocol minor whose epoch reports carry the update statistics


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
    update_stats: Sequence[UpdateStatistics | None] = ()   # per epoch; None where the accelerator gave none


@dataclass(frozen=True)
class UpdateStatistics:
    """One epoch's update statistics as the accelerator reports them (protocol 1.5,
    ``docs/accelerator.md`` "Update statistics"): of ``updates`` offset updates t, ``vanished``
    had t ≠ 0 and rounded to 0; ``update_min`` and ``update_max`` are the smallest non-zero and
    the largest |t| in offset units; ``binades`` counts the t ≠ 0 per binade of the grid.

    >>> s = UpdateStatistics(100, 40, 2.0**-9, 0.5, {-6: 5, -3: 20, -1: 75})
    >>> s.vanished_fraction, s.range_binades, s.low_spread()
    (0.4, 8.0, 3)
    """

    updates: int
    vanished: int
    update_min: float
    update_max: float
    binades: Mapping[int, int]

    @classmethod
    def from_report(cls, report: EpochReport) -> "UpdateStatistics | None":
        """The statistics of an ``epoch_report``; None when it has none (not asked for, or an
        accelerator before 1.5)."""
        if report.updates is None or report.update_binades is None:
            return None
        return cls(int(report.updates), int(report.vanished or 0), float(report.update_min or 0.0),
                   float(report.update_max or 0.0), {int(b): int(n) for b, n in report.update_binades.items()})

    @property
    def vanished_fraction(self) -> float:
        """The fraction of the updates that rounded to 0 although t ≠ 0."""
        return self.vanished / self.updates if self.updates else 0.0

    @property
    def range_binades(self) -> float:
        """log2(update_max / update_min): the binades the non-zero updates span (0 without any)."""
        return math.log2(self.update_max / self.update_min) if self.update_min > 0 else 0.0

    def low_spread(self, quantile: float = 0.1) -> int:
        """Binades from the lowest occupied one to the one holding the ``quantile`` of the
        non-zero updates: how far the smallest updates trail off below the bulk."""
        ordered = sorted((b, n) for b, n in self.binades.items() if n > 0)
        if not ordered:
            return 0
        total = sum(n for _, n in ordered)
        cumulative = itertools.accumulate(n for _, n in ordered)
        return next(b for (b, _), c in zip(ordered, cumulative) if c >= quantile * total) - ordered[0][0]


class Policy(Protocol):
    def decide(self, history: History, offset_format: Format) -> Decision: ...


def _fixed(policy: object, offset_format: Format) -> FixedFormat:
    """``offset_format``, refused unless fixed point (the policies that change it need ⟨IL, FL⟩)."""
    if not isinstance(offset_format, FixedFormat):
        raise ValueError(f"{type(policy).__name__} changes fixed-point offset formats only; got {offset_format!r}")
    return offset_format


def _check_steps(step_bits: int, max_bits: int) -> None:
    if not (1 <= step_bits and 2 <= max_bits <= 53):
        raise ValueError(f"need step_bits >= 1 and 2 <= max_bits <= 53; got {step_bits}, {max_bits}")


def _finer(fmt: FixedFormat, step_bits: int, max_bits: int) -> FixedFormat:
    """``fmt`` with ``step_bits`` more fraction bits, at most ``max_bits`` in all: the same
    integer bits, so the same range on a finer grid."""
    return FixedFormat(fmt.int_bits, fmt.frac_bits + min(step_bits, max_bits - fmt.bits), fmt.signed, fmt.overflow)


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
        _check_steps(self.step_bits, self.max_bits)

    def decide(self, history: History, offset_format: Format) -> Decision:
        rescale = self.base.decide(history, offset_format).rescale
        fmt = _fixed(self, offset_format)
        norms = history.grad_norms
        ratio = norms[-1] / norms[-2] if len(norms) >= 2 and norms[-2] > 0 else 0.0
        if ratio <= self.threshold or fmt.bits >= self.max_bits:
            return Decision(rescale)
        return Decision(rescale, promote=_finer(fmt, self.step_bits, self.max_bits),
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


def width_weighted(bits: int) -> float:
    """An epoch's cost at offset width ``bits`` when no energy table prices it: the same
    operations at every width, each weighted by its width."""
    return float(bits)


@dataclass(frozen=True)
class EnergyAware:
    """The cheapest offset width that keeps up with float64: promote only while the epochs are
    too slow, and then to the cheapest wider width; re-scaling follows ``base``.

    ``reference_rate`` ρ is float64's contraction of ‖∇f‖ per epoch on the same problem and
    settings (0 < ρ < 1; the training loop measures it on the host). An epoch that contracts by
    c = ‖g̃_e‖/‖g̃_{e−1}‖ keeps up when c ≤ ρ^(1/``factor``): at that pace a target takes at most
    ``factor`` times float64's epochs (log c ≤ log ρ / factor). Rule: keep the format while the
    last epoch kept up; otherwise promote to the width in ``costs`` (cost of an epoch per offset
    width, from an energy table; by default :func:`width_weighted`) that is wider than the
    current one, at most ``max_bits``, and cheapest, the widest of equally cheap ones (a
    datapath that costs the same from 9 to 16 bits goes straight to 16). Integer bits are
    kept, so the range stays and the grid gets finer. The width never narrows: a width that
    was too slow once is not tried again.
    """

    base: RecentreEveryEpoch | FixedPrecision = FixedPrecision()
    reference_rate: float = 0.5
    factor: float = 1.5
    costs: Mapping[int, float] = field(default_factory=lambda: {b: width_weighted(b) for b in range(2, 17)})
    max_bits: int = 16

    def __post_init__(self) -> None:
        if not 0.0 < self.reference_rate < 1.0:
            raise ValueError(f"reference_rate: float64's contraction per epoch, 0 < ρ < 1; got {self.reference_rate}")
        if not self.factor >= 1.0:
            raise ValueError(f"factor must be >= 1 (1 = as fast as float64); got {self.factor}")
        if not (self.costs and all(isinstance(b, int) and 2 <= b <= 53 and math.isfinite(c) and c >= 0
                                   for b, c in self.costs.items())):
            raise ValueError("costs: a non-empty map of widths (2..53 bits) to finite costs >= 0")

    @property
    def keeps_up(self) -> float:
        """The largest per-epoch contraction that counts as keeping up: ρ^(1/factor)."""
        return self.reference_rate ** (1.0 / self.factor)

    def decide(self, history: History, offset_format: Format) -> Decision:
        rescale = self.base.decide(history, offset_format).rescale
        fmt = _fixed(self, offset_format)
        norms = history.grad_norms
        if len(norms) < 2 or norms[-2] <= 0:
            return Decision(rescale)
        c = norms[-1] / norms[-2]
        wider = [b for b in self.costs if fmt.bits < b <= self.max_bits]
        if c <= self.keeps_up or not wider:
            return Decision(rescale)
        bits = min(wider, key=lambda b: (self.costs[b], -b))
        return Decision(rescale, promote=FixedFormat(fmt.int_bits, bits - fmt.int_bits, fmt.signed, fmt.overflow),
                        reason=(f"‖∇f‖ contracted to {c:.3g} per epoch, slower than {self.keeps_up:.3g} "
                                f"(float64's {self.reference_rate:.3g} within {self.factor:g}×); {bits} bits is "
                                f"the cheapest wider width ({self.costs[bits]:.3g} an epoch)"))


@dataclass(frozen=True)
class GradientStatistics:
    """Promote from the statistics of the offset updates, not from the loss; re-scaling follows
    ``base``. It needs an accelerator of protocol 1.5 or later, which reports them when asked
    (:class:`UpdateStatistics`, :func:`needs_statistics`; :func:`check_peer` refuses an older
    one before the run).

    Rule: with the last epoch's statistics, promote by ``step_bits`` fraction bits (integer
    bits kept: the same range on a 2^step_bits times finer grid), capped at ``max_bits``, when
    the fraction of updates that vanished (t ≠ 0 rounded to 0) exceeds ``vanish``, or when the
    non-zero updates span more binades, log2(max/min), than the offset format resolves (its
    bits − 1). The reason names the statistic that triggered and its value.
    """

    base: RecentreEveryEpoch | FixedPrecision = FixedPrecision()
    vanish: float = 0.5
    step_bits: int = 2
    max_bits: int = 16

    STATISTICS: ClassVar[bool] = True   # the training loop asks for them (needs_statistics)

    def __post_init__(self) -> None:
        if not 0.0 <= self.vanish < 1.0:
            raise ValueError(f"vanish: a fraction of the updates, 0 <= vanish < 1; got {self.vanish}")
        _check_steps(self.step_bits, self.max_bits)

    def decide(self, history: History, offset_format: Format) -> Decision:
        rescale = self.base.decide(history, offset_format).rescale
        fmt = _fixed(self, offset_format)
        stats = history.update_stats[-1] if history.update_stats else None
        if stats is None or fmt.bits >= self.max_bits:
            return Decision(rescale)
        why = []
        if stats.vanished_fraction > self.vanish:
            why.append(f"{stats.vanished_fraction:.3g} of the updates vanished (> {self.vanish:g})")
        if stats.range_binades > fmt.bits - 1:
            why.append(f"the updates span {stats.range_binades:.3g} binades (> {fmt.bits - 1}, what "
                       f"{fmt.bits} bits resolve; the lowest 10% spread over {stats.low_spread()} binades)")
        if not why:
            return Decision(rescale)
        return Decision(rescale, promote=_finer(fmt, self.step_bits, self.max_bits), reason="; ".join(why))


def needs_statistics(policy: Policy) -> bool:
    """Whether ``policy`` decides from the update statistics, which run_epoch must then ask for."""
    return bool(getattr(policy, "STATISTICS", False))


def check_peer(policy: Policy, version: Sequence[int]) -> None:
    """Raise ValueError, before a run, when ``policy`` needs a newer accelerator than one of
    protocol ``version`` ((major, minor)): the update statistics came with 1.5.

    >>> check_peer(GradientStatistics(), (1, 4))
    Traceback (most recent call last):
    ...
    ValueError: the GradientStatistics policy needs the update statistics of protocol 1.5 or later; the accelerator speaks 1.4
    """
    if needs_statistics(policy) and tuple(version) < STATISTICS_SINCE:
        raise ValueError(f"the {type(policy).__name__} policy needs the update statistics of protocol "
                         f"{STATISTICS_SINCE[0]}.{STATISTICS_SINCE[1]} or later; the accelerator speaks "
                         f"{version[0]}.{version[1]}")


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


def make_policy(name: str | None, algorithm: str, *, reference_rate: float = 0.5,
                costs: Mapping[int, float] | None = None) -> Policy:
    """The policy named ``name`` for an accelerator algorithm; None = the algorithm's natural one.

    halp: ``recentre`` (natural), ``adaptive``, ``dps``, ``energy`` or ``gradstats`` (all
    re-centre every epoch and may promote); lpsgd / lpsvrg: ``fixed`` (natural), ``adaptive``,
    ``dps``, ``energy`` or ``gradstats``. ``reference_rate`` and ``costs`` go to :class:`EnergyAware`.
    """
    if algorithm not in ("halp", "lpsgd", "lpsvrg"):
        raise ValueError(f"policies drive accelerator algorithms (halp, lpsgd, lpsvrg); got {algorithm!r}")
    natural = RecentreEveryEpoch() if algorithm == "halp" else FixedPrecision()
    valid = ("recentre" if algorithm == "halp" else "fixed", "adaptive", "dps", "energy", "gradstats")
    if name is None:
        return natural
    if name not in valid:
        raise ValueError(f"policy {name!r} does not apply to {algorithm}; valid: {', '.join(valid)}")
    if name == "energy":
        return EnergyAware(natural, reference_rate,
                           **({"costs": dict(costs)} if costs is not None else {}))
    return {"adaptive": AdaptivePrecision, "dps": DynamicPrecisionScaling,
            "gradstats": GradientStatistics}.get(name, lambda base: base)(natural)
