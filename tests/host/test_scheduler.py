"""Scheduler decisions, one rule per policy."""
import pytest

from host.scheduler import (AdaptivePrecision, Decision, DynamicPrecisionScaling, FixedPrecision, History,
                            RecentreEveryEpoch, halp_mu, make_policy)
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
    with pytest.raises(ValueError, match="valid: recentre, adaptive, dps"):
        make_policy("fixed", "halp")
    with pytest.raises(ValueError, match="valid: fixed, adaptive, dps"):
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
