"""Operation counts that are checked, not asserted: the emulated backend's counting mode counts
every operation it performs; those tallies must equal the analytic counts of accel.spec.counts
for every problem, algorithm, batch size, format family and rounding."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from accel.backends import capabilities
from accel.backends.emulated import EmulatedBackend
from accel.spec import KernelConfig
from accel.spec.counts import load_ops, promote_ops, recentre_ops
from protocol.capabilities import exact_dot_format
from protocol.formats import parse_format

N, F = 10, 4
FAMILIES = {  # data, offset, accumulator
    "fixed/fp32": ("fixed<2,6>", "fixed<1,7>", "fp32"),
    "ufixed/fp64": ("ufixed<2,6>", "fixed<2,10>", "fp64"),
    "e4m3fn/bf16": ("e4m3fn", "fixed<1,7>", "bf16"),
    "e5m2/fp16": ("e5m2", "fixed<1,5>", "fp16"),
}


def _pair(problem, family, rounding, algorithm):
    """The same configuration on a counting and an analytic backend, data loaded, anchored."""
    data, offset, acc = FAMILIES[family]
    d, o, a = capabilities("emulated").check_run(data=data, offset=offset, acc=acc, rounding=rounding,
                                                 n_features=F, problem=problem)
    c = 3 if problem == "softmax" else 1
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1.5, (N, F))
    y = (rng.integers(0, c, N) if problem == "softmax" else rng.integers(0, 2, N)).astype(float)
    anchor = None if problem == "linear" else np.full((N, c), 1 / (c + 1))
    g = rng.standard_normal((F, c)) * 0.1
    out = []
    for counting in (True, False):
        b = EmulatedBackend(counting=counting)
        b.configure(KernelConfig(problem=problem, n_samples=N, n_features=F, n_outputs=c, data=d, offset=o,
                                 acc=a, rounding=rounding, rbits=5 if rounding == "stochastic" else 0,
                                 lanes=3, seed=1, l2=0.01, scale=0.25))
        loads = [b.load_data(0, x[:6], y[:6]), b.load_data(6, x[6:], y[6:])]
        rec = b.recentre(g, anchor, 0.2 if algorithm == "halp" else None)
        out.append((b, loads, rec))
    return out, c


CASES = list(itertools.product(("linear", "logistic", "softmax"), ("halp", "lpsvrg", "lpsgd"), (1, 4),
                               FAMILIES, ("nearest_even", "stochastic")))


@pytest.mark.parametrize("problem,algorithm,batch,family,rounding", CASES)
def test_counted_operations_equal_the_analytic_counts(problem, algorithm, batch, family, rounding):
    ((counted, c_loads, c_rec), (analytic, a_loads, a_rec)), c = _pair(problem, family, rounding, algorithm)
    for cl, al in zip(c_loads, a_loads):
        assert cl.ops == al.ops and cl.ops
    assert c_rec.ops == a_rec.ops and c_rec.ops
    kernel = "sgd" if algorithm == "lpsgd" else "svrg"
    order = np.random.default_rng(3).integers(0, N, 5 * batch).astype(np.uint32)
    got = counted.run_epoch(kernel, 1, 5, 0.2, batch, order)
    want = analytic.run_epoch(kernel, 1, 5, 0.2, batch, order)
    assert got.ops == want.ops
    # The two modes compute the same bits; only the bookkeeping differs.
    assert counted.fetch().offset.tobytes() == analytic.fetch().offset.tobytes()
    wider = parse_format("fixed<3,12>")
    acc = parse_format("fp32") if family != "fixed/fp32" else parse_format("bf16")
    assert counted.promote(wider, acc).ops == analytic.promote(wider, acc).ops


def test_the_extra_keys_name_their_operations_and_widths():
    fmts = EmulatedBackend()
    d, o, a = capabilities("emulated").check_run(data="fixed<2,6>", offset="fixed<1,7>", acc="fp32",
                                                 rounding="stochastic", n_features=65)
    fmts.configure(KernelConfig(problem="linear", n_samples=4, n_features=65, n_outputs=1, data=d, offset=o,
                                acc=a, rounding="stochastic", rbits=0, lanes=2, seed=0, l2=0.0, scale=1.0))
    assert fmts.load_data(0, np.ones((4, 65)), np.zeros(4)).ops == {
        "round fixed<2,6> nearest_even": 4 * 65, "round fp32 nearest_even": 4}
    assert load_ops("softmax", fmts.fmts, rows=3, n_features=65) == {"round fixed<2,6> nearest_even": 195}
    assert recentre_ops(fmts.fmts, n_features=65, n_outputs=1, anchor_rows=4, rescale=True) == {
        "round fp32 nearest_even": 65 + 4 + 1}
    new = type(fmts.fmts)(d, parse_format("fixed<1,11>"), parse_format("bf16"), "stochastic", 0)
    assert promote_ops("linear", fmts.fmts, new, n_samples=4, n_features=65, n_outputs=1, anchor_rows=0) == {
        "round fixed<1,11> nearest_even": 130, "round bf16 nearest_even": 1 + 65 + 4}
    # The digits default: x in fixed<2,6>, dq in fixed<2,7>, 65 features → a 23-bit exact register.
    assert repr(exact_dot_format(d, o, 65)) == "fixed<10,13>" and exact_dot_format(d, o, 65).bits == 23


@pytest.mark.parametrize("data,offset,features", [("fixed<2,6>", "fixed<1,7>", 65), ("ufixed<3,5>", "fixed<2,4>", 7),
                                                   ("e4m3fn", "fixed<1,7>", 65), ("e2m1", "fixed<1,3>", 3),
                                                   ("fp16", "fixed<1,15>", 100)])
def test_the_exact_dot_register_holds_the_worst_case_and_no_less(data, offset, features):
    """Brute force on the extremes: the largest |Σ x·dq| fits the register; one bit less would not."""
    from fractions import Fraction
    d, o = parse_format(data), parse_format(offset)
    reg = exact_dot_format(d, o, features)
    xmax = Fraction(max(abs(d.min_value), d.max_value) if hasattr(d, "min_value") else d.max_value)
    dqmax = Fraction(o.max_value) - Fraction(o.min_value)
    worst = features * xmax * dqmax / Fraction(2) ** -reg.frac_bits        # in units of the register's LSB
    assert worst.denominator == 1
    assert int(worst) <= reg.max_code
    if reg.int_bits > 1:
        assert int(worst) > (reg.max_code >> 1)                             # one bit narrower overflows
