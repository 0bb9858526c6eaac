"""The compiled kernels (accel.backends.compiled) against the numpy reference, bit for bit.

The reference is ``EmulatedBackend(counting=True)``: it always runs the numpy kernels of
``accel.backends.emulated`` (on a counting ALU, whose values are the plain ALU's); the backend
under test is ``EmulatedBackend()``, which runs the compiled kernels wherever they cover the
configuration. Both see the same requests; offsets are compared as bytes (the sign of zero too),
saturation counts and refusals exactly.
"""
from __future__ import annotations

import doctest

import numpy as np
import pytest

from accel.backends import capabilities, compiled
from accel.backends.emulated import EmulatedBackend
from accel.spec import KernelConfig, KernelError
from host.datasets import load_dataset
from host.models import Objective
from host.optimizers import epoch_order
from protocol.formats import parse_format

N, F = 13, 5
PROBLEMS = [("linear", 1), ("logistic", 1), ("softmax", 3)]


def _pair(problem, c, acc, rounding, offset="fixed<2,6>", l2=0.05, scale=0.25, n=N, f=F, lanes=3, rbits=0,
          data="fixed<2,6>"):
    d, o, a = capabilities("emulated").check_run(data=data, offset=offset, acc=acc, rounding=rounding,
                                                 n_features=f, problem=problem)
    cfg = KernelConfig(problem=problem, n_samples=n, n_features=f, n_outputs=c, data=d, offset=o, acc=a,
                       rounding=rounding, rbits=rbits, lanes=lanes, seed=5, l2=l2, scale=scale)
    pair = EmulatedBackend(), EmulatedBackend(counting=True)
    for b in pair:
        b.configure(cfg)
    return pair


def _problem_data(rng, problem, c, n=N, f=F):
    x = rng.uniform(-1.5, 1.5, (n, f))
    if problem == "linear":
        return x, rng.standard_normal(n), None
    a = rng.standard_normal((n, c))
    if problem == "logistic":
        return x, rng.integers(0, 2, n).astype(float), 1 / (1 + np.exp(-a))
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return x, rng.integers(0, c, n).astype(float), e / e.sum(axis=1, keepdims=True)


def _both(pair, method, *args):
    """Call ``method`` on both backends: the same result, or the same refusal."""
    out = []
    for b in pair:
        try:
            out.append(getattr(b, method)(*args))
        except KernelError as err:
            out.append(err)
    fast, ref = out
    if isinstance(ref, KernelError):
        assert isinstance(fast, KernelError) and str(fast) == str(ref)
    else:
        assert not isinstance(fast, KernelError), fast
    assert pair[0].fetch().offset.tobytes() == pair[1].fetch().offset.tobytes()
    assert pair[0].fetch().counters == pair[1].fetch().counters
    return fast, ref


def _epoch(pair, algorithm, epoch, step_size, batch, order):
    fast, ref = _both(pair, "run_epoch", algorithm, epoch, len(order) // batch, step_size, batch,
                      np.asarray(order, dtype=np.uint32), True)
    if not isinstance(ref, KernelError):
        assert fast.saturations == ref.saturations and fast.ops == ref.ops and fast.memory == ref.memory
        assert ref.stats is not None and fast.stats == ref.stats      # the update statistics too
    return ref


@pytest.mark.parametrize("acc", ["fp32", "fp64", "bf16", "fp16", "fp16_ibm"])
@pytest.mark.parametrize("rounding,rbits", [("nearest_even", 0), ("stochastic", 0), ("stochastic", 5)])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("algorithm", ["svrg", "sgd"])
@pytest.mark.parametrize("problem,c", PROBLEMS)
def test_compiled_epochs_are_the_reference_bits(problem, c, algorithm, batch, rounding, rbits, acc):
    """Two epochs, the first with a step size that saturates the offset, a promote (wider
    offset, fp64 accumulator for the narrow ones) and, for svrg, an LP-SVRG re-centre between."""
    rng = np.random.default_rng([7, len(problem), batch, len(acc)])
    x, y, p = _problem_data(rng, problem, c)
    pair = _pair(problem, c, acc, rounding, rbits=rbits)
    g_tilde = rng.standard_normal((F, c))
    for b in pair:
        b.load_data(0, x, y)
        if algorithm == "svrg":
            b.recentre(g_tilde, p, 0.25)
    first = _epoch(pair, algorithm, 0, 40.0, batch, rng.integers(0, N, 4 * batch))
    assert first.saturations > 0
    new_acc = parse_format("fp64" if acc in ("bf16", "fp16") else acc)
    _both(pair, "promote", parse_format("fixed<3,9>"), new_acc)
    if algorithm == "svrg":
        _both(pair, "recentre", g_tilde * 0.5, p, None)
    second = _epoch(pair, algorithm, 1, 0.3, batch, rng.integers(0, N, 5 * batch))
    assert np.any(pair[1].fetch().offset != 0) and second.steps == 5


# One data format per way the backend holds data (accel.backends.packed): 8- and 16-bit codes
# through a table (fixed and float), float32 values (24-bit fixed) and float64 (29-bit fixed). (Wider
# float data needs an exact-dot register wider than the emulated one: refused at configure.)
DATA_FORMATS = ["fixed<2,6>", "e4m3fn", "fixed<3,13>", "fp16", "fixed<4,20>", "fixed<2,27>"]


@pytest.mark.parametrize("data", DATA_FORMATS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("problem,c", PROBLEMS)
def test_every_data_holder_gives_the_reference_bits(problem, c, batch, data):
    """Data of every width, some of it saturating the format, through both kernels."""
    rng = np.random.default_rng([3, len(problem), batch, len(data)])
    x, y, p = _problem_data(rng, problem, c)
    x[0, :2] = [1e6, -1e6]
    pair = _pair(problem, c, "fp32", "stochastic", data=data)
    g_tilde = rng.standard_normal((F, c))
    for b in pair:
        b.load_data(0, x, y)
        b.recentre(g_tilde, p, 0.25)
    for algorithm in ("svrg", "sgd"):
        _epoch(pair, algorithm, 0, 0.7, batch, rng.integers(0, N, 6 * batch))
    assert np.any(pair[1].fetch().offset != 0)


@pytest.mark.parametrize("acc,top", [("fp32", 3e38), ("fp64", 1e308), ("bf16", 3e38)])
@pytest.mark.parametrize("algorithm", ["svrg", "sgd"])
@pytest.mark.parametrize("problem,c", PROBLEMS)
def test_a_nan_update_is_refused_at_the_same_step(problem, c, algorithm, acc, top):
    """What a diverged outer loop sends: a scale and step size near the top of the accumulator
    format, a gradient beyond it. Step 0 saturates the offset; then λ·s·dq (svrg) or s·x·q (sgd)
    overflows and the update becomes ∞ − ∞. Both refuse the epoch at the same step and keep
    the offset. (Logistic sgd has no ∞ − ∞: σ is bounded and there is no g̃; it runs on in ±∞.)"""
    rng = np.random.default_rng([11, len(problem)])
    x, y, p = _problem_data(rng, problem, c)
    pair = _pair(problem, c, acc, "stochastic", l2=4.0, scale=top)
    g_tilde = np.where(rng.standard_normal((F, c)) > 0, np.inf, -np.inf)
    for b in pair:
        b.load_data(0, x, y)
        b.recentre(g_tilde, p, top)
    before = pair[1].fetch().offset.copy()
    refusal = _epoch(pair, algorithm, 3, top, 1, rng.integers(0, N, 12))
    if (problem, algorithm) != ("logistic", "sgd"):
        assert isinstance(refusal, KernelError) and "step 0:" not in str(refusal)
        assert pair[0].fetch().offset.tobytes() == before.tobytes()


def test_digits_softmax_halp_epoch():
    """The default run's HALP epoch (digits, softmax, fp32, stochastic), once through each path."""
    ds = load_dataset("digits")
    obj = Objective("softmax", ds.x, ds.y, 1e-2, ds.outputs_for("softmax"))
    n, f, c = obj.n_samples, obj.n_features, obj.n_outputs
    anchor = obj.zeros()
    g = obj.grad(anchor)
    pair = _pair("softmax", c, "fp32", "stochastic", offset="fixed<1,7>", l2=1e-2, scale=1.0, n=n, f=f, lanes=16)
    for b in pair:
        b.load_data(0, obj.x, obj.y.astype(np.float64))
        b.recentre(g, obj.anchor_terms(anchor), float(np.linalg.norm(g)) / (0.1 * (1 - 2 ** -7)))
    _epoch(pair, "svrg", 1, 0.5 / obj.smoothness(), 1, epoch_order(0, 1, n, n))
    assert np.count_nonzero(pair[0].fetch().offset) > f * c // 2


# Offsets on both sides of the narrow stochastic update (IL + 1 + FL + r ≤ 52, r = 32 here):
# fixed<4,15> is its widest, fixed<4,16> takes the general form, as does fixed<10,20>.
@pytest.mark.parametrize("offset", ["fixed<2,6>", "fixed<4,15>", "fixed<4,16>", "fixed<10,20>"])
@pytest.mark.parametrize("rounding", ["nearest_even", "stochastic"])
def test_offset_update_of_extreme_steps(rounding, offset):
    """Step 7 alone: zero data, λ = 0, α = s = 1 and an fp64 accumulator make t = g̃ exactly, so
    g̃ carries the hard cases of the exact q − t: ties, steps far below the grid (2^-60, the
    smallest subnormal), steps that saturate, ±∞ (fetched offsets compared as bytes)."""
    rng = np.random.default_rng(9)
    f = 400
    t = rng.standard_normal(f) * 2.0 ** rng.integers(-60, 3, f)
    t[:40] = rng.integers(-200, 200, 40) / 128.0
    t[40:52] = [1e30, -1e30, 5e-324, -5e-324, 4.0, -4.0, 2 ** -40, -2 ** -40, 0.0, 3.0, np.inf, -np.inf]
    pair = _pair("linear", 1, "fp64", rounding, offset=offset, l2=0.0, scale=1.0, n=1, f=f)
    for b in pair:
        b.load_data(0, np.zeros((1, f)), np.zeros(1))
        b.q[:, 0] = rng.integers(-128, 128, f) / 64.0 if b is pair[0] else pair[0].q[:, 0]
        b.recentre(t[:, None], None, None)                  # q_a ← q, so dq = 0
    report = _epoch(pair, "svrg", 0, 1.0, 1, [0])
    assert report.saturations > 0


def test_counting_mode_and_uncovered_configurations_run_the_reference(monkeypatch):
    def compiled_kernel(*args, **kwargs):
        raise AssertionError("the compiled kernel ran")

    monkeypatch.setattr(compiled, "run_epoch", compiled_kernel)
    pair = _pair("softmax", 3, "fp32", "nearest_even")
    for b in pair:
        b.load_data(0, *_problem_data(np.random.default_rng(1), "softmax", 3)[:2])
    pair[1].run_epoch("sgd", 0, 2, 0.1, 1, np.array([0, 1], dtype=np.uint32))       # counting: reference
    with pytest.raises(AssertionError, match="the compiled kernel ran"):
        pair[0].run_epoch("sgd", 0, 2, 0.1, 1, np.array([0, 1], dtype=np.uint32))
    fmts = pair[0].fmts
    assert compiled.covers(fmts, "svrg", "linear", anchored=False)
    assert not compiled.covers(fmts, "svrg", "softmax", anchored=False)     # the reference's error
    assert compiled.covers(fmts, "sgd", "softmax", anchored=False)


def test_module_examples():
    result = doctest.testmod(compiled)
    assert result.attempted > 0 and result.failed == 0
