"""Scheduler decisions, one rule per policy."""
import pytest

from host.scheduler import (AdaptivePrecision, Decision, DynamicPrecisionScaling, EnergyAware, FixedPrecision,
                            GradientStatistics, History, RecentreEveryEpoch, UpdateStatistics, check_peer, halp_mu,
                            make_policy)
from protocol.messages import EpochReport
from protocol.formats import FixedFormat, parse_format

F8 = parse_format("fixed<1,7>")


def test_recentre_and_fixed():
    assert RecentreEveryEpoch().decide(History([1.0]), F8) == Decision(rescale=True)
    assert FixedPrecision().decide(History([1.0, 1.0]), F8) == Decision(rescale=False)


def test_adaptive_promotes_only_on_stall():
    p = AdaptivePrecision(FixedPrecision(), threshold=0.9, step_bits=4, max_bits=16)
    assert p.decide(History([1.0]), F8).promote is None                  # no history yet
    assert p.decide(History([1.0, 0.5]), F8).promote is None             # halved: progressing
    d = p.decide(History([1.0, 0.95]), F8)
    assert d.promote == FixedFormat(1, 11) and d.reason == "‖∇f‖ shrank only to 0.95 of the last epoch's (> 0.9)"
    assert p.decide(History([1.0, 0.95]), FixedFormat(1, 11)).promote == FixedFormat(1, 15)
    assert p.decide(History([1.0, 0.95]), FixedFormat(1, 13)).promote == FixedFormat(1, 15)   # capped at 16 bits
    assert p.decide(History([1.0, 0.95]), FixedFormat(1, 15)).promote is None                # already 16
    assert p.decide(History([1.0, 1.2]), FixedFormat(2, 6)).promote == FixedFormat(2, 10)    # keeps IL


def test_adaptive_keeps_base_rescaling():
    p = AdaptivePrecision(RecentreEveryEpoch())
    assert p.decide(History([1.0, 0.99]), F8) == Decision(
        rescale=True, promote=FixedFormat(1, 11), reason="‖∇f‖ shrank only to 0.99 of the last epoch's (> 0.9)")


def test_adaptive_rejects_float_offsets():
    with pytest.raises(ValueError, match="AdaptivePrecision changes fixed-point offset formats only"):
        AdaptivePrecision().decide(History([1.0, 1.0]), parse_format("e4m3fn"))


def test_dps_moves_the_split_by_the_saturation_rate():
    """Na and Mukhopadhyay's rule on constructed histories: above high one bit to IL, below low one
    back to FL, between nothing; the word length never changes and IL never drops below 1."""
    p = DynamicPrecisionScaling(FixedPrecision(), high=1e-4, low=1e-6)
    assert p.decide(History([1.0]), F8) == Decision(rescale=False)                   # no epoch yet
    d = p.decide(History([1.0, 0.5], [3e-3]), F8)
    assert d.promote == FixedFormat(2, 6) and d.reason == "saturation rate 0.003 > 0.0001: one bit more range"
    assert p.decide(History([1.0, 0.5, 0.4], [3e-3, 2e-4]), FixedFormat(2, 6)).promote == FixedFormat(3, 5)
    assert p.decide(History([1.0, 0.5], [5e-5]), FixedFormat(2, 6)).promote is None   # between: kept
    d = p.decide(History([1.0, 0.5], [0.0]), FixedFormat(3, 5))
    assert d.promote == FixedFormat(2, 6) and d.reason == "saturation rate 0 < 1e-06: one bit more resolution"
    assert p.decide(History([1.0, 0.5], [0.0]), F8).promote is None                  # IL = 1: the sign
    assert p.decide(History([1.0, 0.5], [0.5]), FixedFormat(8, 0)).promote is None   # no FL left
    assert DynamicPrecisionScaling(RecentreEveryEpoch()).decide(History([1.0, 0.5], [1.0]), F8) == Decision(
        rescale=True, promote=FixedFormat(2, 6), reason="saturation rate 1 > 0.0001: one bit more range")
    with pytest.raises(ValueError, match="need 0 <= low < high <= 1"):
        DynamicPrecisionScaling(high=1e-6, low=1e-4)
    with pytest.raises(ValueError, match="DynamicPrecisionScaling changes fixed-point"):
        p.decide(History([1.0, 0.5], [1.0]), parse_format("e4m3fn"))


def test_make_policy_natural_and_errors():
    assert make_policy(None, "halp") == RecentreEveryEpoch()
    assert make_policy(None, "lpsgd") == FixedPrecision()
    assert make_policy("adaptive", "lpsvrg") == AdaptivePrecision(FixedPrecision())
    assert make_policy("dps", "halp") == DynamicPrecisionScaling(RecentreEveryEpoch())
    with pytest.raises(ValueError, match="valid: recentre, adaptive, dps, energy"):
        make_policy("fixed", "halp")
    with pytest.raises(ValueError, match="valid: fixed, adaptive, dps, energy"):
        make_policy("recentre", "lpsgd")
    with pytest.raises(ValueError, match="halp, lpsgd, lpsvrg"):
        make_policy(None, "svrg")


def test_halp_mu_widens_by_two_per_saturated_epoch_down_to_lambda():
    assert [halp_mu(0.1, 0.01, k) for k in range(5)] == [0.1, 0.05, 0.025, 0.0125, 0.01]
    assert halp_mu(0.1, 0.01, 50, "fixed") == 0.1
    assert halp_mu(0.005, 0.01, 3) == 0.005          # already wider than the λ bound: kept
    assert halp_mu(0.1, 0.0, 3) == 0.0125            # no λ: widening stops only with saturation
    with pytest.raises(ValueError, match="choose one of widen, fixed"):
        halp_mu(0.1, 0.01, 1, "grow")


def test_energy_aware_widens_only_while_too_slow_to_the_cheapest_wider_width():
    """ρ = 0.25 within 2× keeps up at c ≤ 0.5 a epoch; slower epochs promote to the cheapest wider
    width, the widest of equal cost, keeping the integer bits; never past max_bits or narrower."""
    p = EnergyAware(FixedPrecision(), reference_rate=0.25, factor=2.0)
    assert p.keeps_up == 0.5
    assert p.decide(History([1.0]), F8) == Decision(rescale=False)                 # no epoch yet
    assert p.decide(History([1.0, 0.5]), F8).promote is None                      # exactly keeps up
    d = p.decide(History([1.0, 0.6]), F8)
    assert d.promote == FixedFormat(1, 8) and d.reason == (
        "‖∇f‖ contracted to 0.6 per epoch, slower than 0.5 (float64's 0.25 within 2×); "
        "9 bits is the cheapest wider width (9 an epoch)")
    assert p.decide(History([1.0, 0.9]), FixedFormat(3, 5)).promote == FixedFormat(3, 6)
    assert p.decide(History([1.0, 0.9]), FixedFormat(1, 15)).promote is None      # at max_bits
    # A datapath whose 9..16-bit widths cost the same as 16 goes straight to 16 bits.
    stepped = {b: (1.0 if b <= 8 else 4.0) for b in range(2, 17)}
    q = EnergyAware(RecentreEveryEpoch(), reference_rate=0.25, factor=2.0, costs=stepped)
    assert q.decide(History([1.0, 0.9]), F8) == Decision(
        rescale=True, promote=FixedFormat(1, 15),
        reason="‖∇f‖ contracted to 0.9 per epoch, slower than 0.5 (float64's 0.25 within 2×); "
               "16 bits is the cheapest wider width (4 an epoch)")
    assert q.decide(History([1.0, 0.9]), FixedFormat(1, 3)).promote == FixedFormat(1, 7)   # 8 bits: cost 1
    assert make_policy("energy", "halp", reference_rate=0.3) == EnergyAware(RecentreEveryEpoch(), 0.3)
    for bad, match in (({"reference_rate": 1.0}, "0 < ρ < 1"), ({"factor": 0.5}, "factor must be >= 1"),
                       ({"costs": {}}, "costs: a non-empty map"), ({"costs": {64: 1.0}}, "costs: a non-empty")):
        with pytest.raises(ValueError, match=match):
            EnergyAware(**bad)
    with pytest.raises(ValueError, match="EnergyAware changes fixed-point"):
        p.decide(History([1.0, 0.9]), parse_format("e4m3fn"))


def _stats(vanished: int, lo: float, hi: float, binades: dict[int, int] | None = None) -> UpdateStatistics:
    return UpdateStatistics(1000, vanished, lo, hi, binades or {-2: 10, 0: 990})


def test_gradient_statistics_promotes_on_vanished_updates_or_too_wide_a_range():
    """fixed<1,4> (5 bits) resolves 4 binades: a range of 2^-3 … 2^1 (exactly 4) keeps the
    format, 2^-3.2 … 2^1 promotes; so does a vanished fraction over 0.5, whatever the range."""
    f5 = FixedFormat(1, 4)
    p = GradientStatistics(FixedPrecision(), vanish=0.5, step_bits=2, max_bits=8)
    assert p.decide(History([1.0]), f5) == Decision(rescale=False)                      # no epoch yet
    assert p.decide(History([1.0, 0.5], [0.0], [None]), f5) == Decision(rescale=False)  # no statistics
    assert p.decide(History([1.0, 0.5], [0.0], [_stats(500, 0.125, 2.0)]), f5).promote is None
    d = p.decide(History([1.0, 0.5], [0.0], [_stats(501, 0.125, 2.0)]), f5)
    assert d == Decision(rescale=False, promote=FixedFormat(1, 6),
                         reason="0.501 of the updates vanished (> 0.5)")
    d = p.decide(History([1.0, 0.5], [0.0], [_stats(10, 2.0**-3.2, 2.0, {-3: 50, -1: 150, 0: 800})]), f5)
    assert d.promote == FixedFormat(1, 6) and d.reason == (
        "the updates span 4.2 binades (> 4, what 5 bits resolve; the lowest 10% spread over 2 binades)")
    both = p.decide(History([1.0], [], [_stats(900, 2.0**-20, 1.0)]), FixedFormat(2, 4))
    assert both.promote == FixedFormat(2, 6) and both.reason == (
        "0.9 of the updates vanished (> 0.5); the updates span 20 binades (> 5, what 6 bits resolve; "
        "the lowest 10% spread over 2 binades)")
    # Capped at max_bits, keeping the integer bits; nothing at max_bits; only the last epoch counts.
    assert p.decide(History([1.0], [], [_stats(900, 0.1, 1.0)]), FixedFormat(1, 6)).promote == FixedFormat(1, 7)
    assert p.decide(History([1.0], [], [_stats(900, 0.1, 1.0)]), FixedFormat(1, 7)).promote is None
    assert p.decide(History([1.0], [], [_stats(900, 0.1, 1.0), _stats(0, 0.5, 1.0)]), f5).promote is None
    assert GradientStatistics(RecentreEveryEpoch()).decide(History([1.0], [], [_stats(0, 0.5, 1.0)]), f5) \
        == Decision(rescale=True)
    assert make_policy("gradstats", "halp") == GradientStatistics(RecentreEveryEpoch())
    assert make_policy("gradstats", "lpsgd") == GradientStatistics(FixedPrecision())
    for bad, match in (({"vanish": 1.0}, "0 <= vanish < 1"), ({"step_bits": 0}, "step_bits >= 1")):
        with pytest.raises(ValueError, match=match):
            GradientStatistics(**bad)
    with pytest.raises(ValueError, match="GradientStatistics changes fixed-point"):
        p.decide(History([1.0], [], [_stats(900, 0.1, 1.0)]), parse_format("e4m3fn"))


def test_update_statistics_from_an_epoch_report_and_what_the_host_derives():
    report = EpochReport(epoch=1, steps=2, ops={}, memory={}, saturations=0, updates=40, vanished=6,
                         update_min=2.0**-12, update_max=0.75, update_binades={"-5": 1, "-2": 3, "-1": 20, "2": 10})
    s = UpdateStatistics.from_report(report)
    assert s == UpdateStatistics(40, 6, 2.0**-12, 0.75, {-5: 1, -2: 3, -1: 20, 2: 10})
    assert s.vanished_fraction == 0.15 and s.range_binades == pytest.approx(11.585, abs=1e-3)
    assert s.low_spread() == 3 and s.low_spread(0.5) == 4 and s.low_spread(0.01) == 0
    assert UpdateStatistics.from_report(EpochReport(epoch=1, steps=2, ops={}, memory={}, saturations=0)) is None
    empty = UpdateStatistics(8, 0, 0.0, 0.0, {})
    assert (empty.vanished_fraction, empty.range_binades, empty.low_spread()) == (0.0, 0.0, 0)


def test_a_policy_that_needs_the_statistics_refuses_an_older_accelerator():
    check_peer(GradientStatistics(), (1, 5))
    check_peer(EnergyAware(), (1, 0))                 # needs nothing new
    with pytest.raises(ValueError, match="needs the update statistics of protocol 1.5 or later; the "
                                         "accelerator speaks 1.4"):
        check_peer(GradientStatistics(), [1, 4])
