"""Kernel arithmetic of the emulated backend (spec v2), driven directly, no sockets."""
from __future__ import annotations

from fractions import Fraction
from math import floor

import numpy as np
import pytest

from accel.backends import capabilities
from accel.backends.emulated import EmulatedBackend, StepConstants, offset_update, svrg_step
from accel.numerics import LaneRNG, quantize
from accel.spec import KernelConfig, KernelError
from accel.spec.arith import AccArith, acc_rounder
from accel.spec.counts import epoch_memory, epoch_ops, exact_keys
from protocol.capabilities import CapabilityError
from protocol.formats import parse_format


def configure(problem="linear", n=4, f=2, c=1, data="fixed<2,6>", offset="fixed<3,5>", acc="fp32",
              rounding="nearest_even", seed=0, l2=0.0, scale=1.0, lanes=4, counting=False):
    d, o, a = capabilities("emulated").check_run(data=data, offset=offset, acc=acc, rounding=rounding,
                                                 n_features=f, problem=problem)
    b = EmulatedBackend(counting=counting)
    b.configure(KernelConfig(problem=problem, n_samples=n, n_features=f, n_outputs=c, data=d, offset=o, acc=a,
                             rounding=rounding, rbits=0, lanes=lanes, seed=seed, l2=l2, scale=scale))
    return b


def run(b, algorithm, order, step_size, epoch=0, batch=1):
    order = np.asarray(order, dtype=np.uint32)
    return b.run_epoch(algorithm, epoch, len(order) // batch, step_size, batch, order)


def test_svrg_step_by_hand():
    # x = [1, 1/2], q = [1/2, 1/4], q_a = [0, 1/4] → dq = [1/2, 0]; s = 1/2, λ = 1/2, α = 1/4,
    # g̃ = [1/4, -1/2]. d = s·(x·dq) = 1/4 = r (least squares); G = x·r = [1/4, 1/8];
    # u = G + λ·s·dq + g̃ = [5/8, -3/8]; t = α·u/s = [5/16, -3/16]; q − t = [3/16, 7/16].
    k = StepConstants(s=0.5, inv_s=2.0, alpha=0.25, lam=0.5, inv_b=1.0)
    fmts = configure(n=1).fmts
    t = svrg_step(AccArith(parse_format("fp32")), exact_keys("svrg", fmts, 2), "linear", np.array([[1.0, 0.5]]),
                  None, np.array([[0.5], [0.25]]), np.array([[0.0], [0.25]]), np.array([[0.25], [-0.5]]), k)
    assert t.tolist() == [[0.3125], [-0.1875]]


def test_backend_reproduces_the_hand_step():
    b = configure(n=1, l2=0.5, scale=0.5)
    b.load_data(0, np.array([[1.0, 0.5]]), np.array([0.0]))
    b.q[:] = [[0.5], [0.25]]          # an offset reached earlier; anchor the second coordinate only
    b.recentre(np.array([[0.25], [-0.5]]), None, None)
    b.qa[:] = [[0.0], [0.25]]
    report = run(b, "svrg", [0], step_size=0.25)
    assert b.fetch().offset.tolist() == [[0.1875], [0.4375]]
    assert report.saturations == 0


def test_fp32_rounder_is_the_numerics_rne():
    rng = np.random.default_rng(3)
    v = np.concatenate([rng.standard_normal(2000) * 10.0 ** rng.integers(-45, 39, 2000),
                        [1e-46, 2 ** -149 * 1.5, 2 ** -149 * 2.5, 3.5e38, -1e39, 0.0, -0.0]])
    with np.errstate(over="ignore"):
        fast = acc_rounder(parse_format("fp32"))(v)
    np.testing.assert_array_equal(fast, quantize(v, "fp32"))
    assert np.array_equal(np.signbit(fast), np.signbit(quantize(v, "fp32")))


def _softmax(a):
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("problem,c", [("softmax", 3), ("logistic", 1), ("linear", 1)])
def test_svrg_kernel_matches_direct_float64(problem, c):
    """fp64 accumulator, RNE offsets on a fine grid: the kernel is the plain SVRG step in w-space."""
    rng = np.random.default_rng(7)
    n, f, lam, alpha, s, fl = 12, 4, 0.1, 0.3, 0.5, 30
    x = quantize(rng.uniform(-1, 1, (n, f)), "fixed<2,6>")
    w_anchor = rng.standard_normal((f, c))
    a = x @ w_anchor
    if problem == "softmax":
        y, grad_l = rng.integers(0, c, n), lambda z: _softmax(z)
        p = grad_l(a)
    elif problem == "logistic":
        y, grad_l = rng.integers(0, 2, n), lambda z: 1 / (1 + np.exp(-z))
        p = grad_l(a)
    else:
        y, grad_l, p = rng.standard_normal(n), lambda z: z, None
    g_tilde = rng.standard_normal((f, c)) * 0.1
    b = configure(problem, n=n, f=f, c=c, offset=f"fixed<1,{fl}>", acc="fp64", l2=lam, scale=s)
    b.load_data(0, x, y.astype(float))
    b.recentre(g_tilde, p, s)
    order = rng.integers(0, n, 20)
    run(b, "svrg", order, step_size=alpha, batch=2)

    q = np.zeros((f, c))
    for t in range(10):
        xb = x[order[2 * t:2 * t + 2]]
        ab = xb @ w_anchor
        z = s * q
        diff = xb.T @ (grad_l(ab + xb @ z) - grad_l(ab)) / 2
        u = diff + lam * z + g_tilde
        q = np.round((q - alpha * u / s) * 2.0 ** fl) / 2.0 ** fl
    # Same formulas, different float64 evaluation order: at most one grid step apart (0 in practice).
    np.testing.assert_allclose(b.fetch().offset, q, rtol=0, atol=2.0 ** -fl)
    assert np.abs(q).max() > 1e-3  # the comparison is not between two zero offsets


@pytest.mark.parametrize("problem,c", [("softmax", 3), ("logistic", 1), ("linear", 1)])
def test_sgd_kernel_matches_direct_float64(problem, c):
    """fp64 accumulator, RNE offsets on a fine grid: the sgd kernel is plain minibatch SGD on w = s·q."""
    rng = np.random.default_rng(8)
    n, f, lam, alpha, s, fl = 12, 4, 0.1, 0.3, 0.5, 30
    x = quantize(rng.uniform(-1, 1, (n, f)), "fixed<2,6>")
    if problem == "softmax":
        y = rng.integers(0, c, n)
        residual = lambda a, yb: _softmax(a) - np.eye(c)[yb]
    elif problem == "logistic":
        y = rng.integers(0, 2, n)
        residual = lambda a, yb: 1 / (1 + np.exp(-a)) - yb[:, None]
    else:
        y = rng.standard_normal(n)
        residual = lambda a, yb: a - yb[:, None]
    b = configure(problem, n=n, f=f, c=c, offset=f"fixed<2,{fl}>", acc="fp64", l2=lam, scale=s)
    b.load_data(0, x, y.astype(float))
    order = rng.integers(0, n, 30)
    run(b, "sgd", order, step_size=alpha, batch=3)

    q = np.zeros((f, c))
    for t in range(10):
        idx = order[3 * t:3 * t + 3]
        w = s * q
        grad = x[idx].T @ residual(x[idx] @ w, y[idx]) / 3 + lam * w
        q = np.round((q - alpha * grad / s) * 2.0 ** fl) / 2.0 ** fl
    np.testing.assert_allclose(b.fetch().offset, q, rtol=0, atol=2.0 ** -fl)
    assert np.abs(q).max() > 1e-2


def _halp_gap(algorithm: str, epochs: int) -> float:
    """Least squares, b = 8 offsets: relative loss gap after ``epochs`` host outer loops."""
    rng = np.random.default_rng(0)
    n, f, lam = 64, 5, 0.05
    x = quantize(rng.uniform(-1, 1, (n, f)), "fixed<2,6>")
    y = x @ rng.standard_normal(f) + 0.1 * rng.standard_normal(n)
    loss = lambda w: 0.5 * np.mean((x @ w - y) ** 2) + lam / 2 * w @ w
    w_star = np.linalg.solve(x.T @ x / n + lam * np.eye(f), x.T @ y / n)
    L = (x ** 2).sum(1).max() + lam
    alpha, mu = 0.5 / L, 10 * lam
    scale = np.abs(w_star).max() / 127 * 128 if algorithm == "sgd" else 1.0
    b = configure("linear", n=n, f=f, offset="fixed<1,7>", rounding="stochastic", seed=5, l2=lam, scale=scale)
    b.load_data(0, x, y)
    w = np.zeros(f)
    for epoch in range(epochs):
        if algorithm == "svrg":
            g = x.T @ (x @ w - y) / n + lam * w
            b.recentre(g[:, None], None,
                       np.linalg.norm(g) / (mu * 127) * 128)
        run(b, algorithm, rng.permutation(n), step_size=alpha, epoch=epoch)
        state = b.fetch()
        w_now = state.scale * state.offset[:, 0]
        if algorithm == "svrg":
            w = w + w_now
    w = w if algorithm == "svrg" else w_now
    return (loss(w) - loss(w_star)) / loss(w_star)


def test_halp_converges_where_lpsgd_stalls():
    assert _halp_gap("svrg", 25) < 1e-10
    assert _halp_gap("sgd", 25) > 1e-4


def test_same_seed_same_bits_other_seed_other_bits():
    def final_q(seed):
        rng = np.random.default_rng(1)
        x = rng.uniform(0, 1, (30, 6))
        b = configure("softmax", n=30, f=6, c=3, offset="fixed<1,7>", rounding="stochastic", seed=seed,
                      l2=0.01, scale=2.0, lanes=5)
        b.load_data(0, x, rng.integers(0, 3, 30).astype(float))
        for epoch in range(3):
            run(b, "sgd", rng.integers(0, 30, 30), step_size=0.5, epoch=epoch)
        return b.fetch().offset

    a, again, other = final_q(11), final_q(11), final_q(12)
    assert a.tobytes() == again.tobytes()
    assert not np.array_equal(a, other)


def test_counts_from_the_shapes():
    b = configure("linear", n=4, f=2, rounding="stochastic", l2=0.1)
    b.load_data(0, np.ones((4, 2)), np.zeros(4))
    b.recentre(np.ones((2, 1)), None, None)
    report = run(b, "svrg", [0, 1, 2, 3, 0, 1], step_size=0.1, batch=2)
    ops = report.ops
    assert ops["add fixed<4,5>"] == 3 * 2                      # dq = q − q_a, one more integer bit
    assert ops["mul fixed<2,6>*fixed<4,5>"] == 3 * 2 * 2       # steps × batch × features
    assert ops["add fixed<6,11>"] == 3 * 2 * 1                 # the exact dot's register: 17 bits
    assert ops["mul fp32"] == 3 * (2 + 4 + 2 + 4 + 4)           # d, x·r, ·1/B, λ·(s·dq), (α·u)·1/s
    assert ops["add fp32"] == 3 * (2 + 4)                       # batch sum; + reg and + g̃
    assert ops["round fp32 nearest_even"] == 3 * 2 + 2          # each dot into fp32; R(α), R(λ)
    assert ops["div fp32"] == 2                                 # R(1/s), R(1/B)
    assert ops["rng bits"] == 3 * 2 * 32
    assert ops["round fixed<3,5> stochastic"] == 3 * 2
    assert report.memory["data read"] == 3 * 2 * 2 * 2 * 8 // 8
    assert report.memory["offset write"] == 3 * 2
    assert report.memory["gradient read"] == 3 * 2 * 4
    assert epoch_ops("svrg", "linear", b.fmts, n_features=2, n_outputs=1, batch=2, steps=3) == ops
    assert epoch_memory("svrg", "linear", b.fmts, n_features=2, n_outputs=1, batch=2, steps=3) == report.memory


def test_saturation_is_counted():
    b = configure("linear", n=1, f=1, offset="fixed<1,3>")   # offset range [-1, 0.875]
    b.load_data(0, np.ones((1, 1)), np.array([100.0]))
    report = run(b, "sgd", [0], step_size=1.0)
    assert report.saturations == 1
    assert b.fetch().offset.tolist() == [[0.875]]
    assert b.fetch().counters["saturations"] == 1


def test_promote_widens_exactly_and_counts_narrowing():
    b = configure("linear", n=1, f=2, offset="fixed<3,5>")
    b.load_data(0, np.ones((1, 2)), np.zeros(1))
    b.q[:] = [[3.5], [-0.15625]]
    assert b.promote(parse_format("fixed<4,8>"), b.fmts.acc).saturations == 0
    assert b.q.tolist() == [[3.5], [-0.15625]]
    b.recentre(np.array([[1 / 3], [0.1]]), None, None)   # q_a ← q
    info = b.promote(parse_format("fixed<1,3>"), parse_format("bf16"))
    assert info.saturations == 2                  # 3.5 clamps to 0.875 in q and in q_a
    assert b.q.tolist() == b.qa.tolist() == [[0.875], [-0.125]]
    # g̃ moves into the new accumulator format: bf16 keeps 8 significant bits
    assert b.g_tilde.tolist() == quantize(np.array([[1 / 3], [0.1]]), "bf16").tolist()
    assert repr(b.fetch().offset_format) == "fixed<1,3>"


def test_general_accumulator_path_rounds_into_bf16():
    # bf16 keeps 8 significant bits: R(1/3) = 0.333984375, so t = R(α·u)·R(1/s) differs from fp32's.
    def step(acc):
        b = configure("linear", n=1, f=1, offset="fixed<1,20>", acc=acc, scale=1.0)
        b.load_data(0, np.ones((1, 1)), np.array([0.25]))
        run(b, "sgd", [0], step_size=1 / 3)
        return b.fetch().offset[0, 0]

    assert step("bf16") == quantize(0.25 * quantize(1 / 3, "bf16"), "bf16")   # q − t, t = α·(0 − y)
    assert step("fp32") == pytest.approx(0.25 / 3, abs=2 ** -20)
    assert step("bf16") != step("fp32")


@pytest.mark.parametrize("field,value,words", [
    ("acc_format", "fixed<8,8>", "the acc takes float<E,M>"), ("acc_format", "e8m30", "M <= 24"),
    ("data_format", "mxfp8", "the data takes fixed<IL,FL>"), ("offset_format", "fp32", "signed, saturating"),
    ("offset_format", "fixed<1,7,wrap>", "signed, saturating"), ("data_format", "fp32", "the exact dot x·dq"),
    ("data_format", "fixed<2,30>", "x·r needs a 56-bit exact product"),
    ("offset_format", "fixed<1,30>", "s·dq needs a 56-bit exact product"),
    ("data_format", "fixed<9,9", "cannot parse"), ("rounding", "toward_zero", "nearest_even or stochastic")])
def test_formats_it_cannot_run_exactly_are_refused(field, value, words):
    kwargs = {"data": "fixed<2,6>", "offset": "fixed<1,7>", "acc": "fp32", "rounding": "nearest_even"}
    kwargs[field.split("_")[0]] = value
    with pytest.raises(CapabilityError) as err:
        configure(**kwargs)
    assert words in str(err.value)


def _exact_offset_update(q: float, t: float, fl: int, lo: int, hi: int, rounding: str,
                         word: int) -> tuple[float, bool]:
    """Oracle: round the exact rational q − t to the grid 2^-fl, then clamp codes to [lo, hi]."""
    x = (Fraction(q) - Fraction(t)) * 2 ** fl
    k = floor(x)
    frac = x - k
    if rounding == "nearest_even":
        up = frac > Fraction(1, 2) or (frac == Fraction(1, 2) and k % 2 == 1)
    else:  # floor-based stochastic rounding with 32 random bits
        up = floor(frac * 2 ** 32) + word >= 2 ** 32
    return min(max(k + up, lo), hi) / 2 ** fl, not lo <= k + up <= hi


@pytest.mark.parametrize("rounding", ["nearest_even", "stochastic"])
def test_offset_update_rounds_the_exact_difference(rounding):
    """q − t is not formed in float64: tiny t (inexact there) and ties still round exactly."""
    fmt = parse_format("fixed<2,6>")
    rng = np.random.default_rng(9)
    n = 400
    q = rng.integers(-128, 128, n) / 64.0
    t = quantize(rng.standard_normal(n) * 2.0 ** rng.integers(-60, 3, n), "fp32")
    t[:40] = rng.integers(-200, 200, 40) / 128.0        # ties of nearest-even
    t[40:50] = [1e30, -1e30, 2 ** -149, -2 ** -149, 4.0, -4.0, 2 ** -40, -2 ** -40, 0.0, 3.0]
    words = LaneRNG(1, 2, 3).words(n)
    got, saturations = offset_update(q, t, fmt, rounding, LaneRNG(1, 2, 3))
    want = [_exact_offset_update(qi, ti, 6, -128, 127, rounding, int(w)) for qi, ti, w in zip(q, t, words)]
    assert got.tolist() == [value for value, _ in want]
    assert saturations == sum(saturated for _, saturated in want) > 0


def test_float_data_with_fixed_offsets():
    """e4m3fn data and fixed<1,7> offsets: the exact dot (a 33-bit register) goes
    into fp32 before the scale multiplies it, so nothing rounds twice, and the counts name
    both formats."""
    rng = np.random.default_rng(3)
    x = rng.normal(0, 30, (6, 65))
    b = configure("linear", n=6, f=65, data="e4m3fn", offset="fixed<1,7>", l2=0.1, scale=0.01)
    b.load_data(0, x, rng.normal(size=6))
    b.recentre(rng.normal(size=(65, 1)), None, 0.01)
    b.q[:] = quantize(rng.uniform(-1, 1, (65, 1)), "fixed<1,7>")
    k = StepConstants(s=b.s, inv_s=float(np.float32(1 / b.s)), alpha=float(np.float32(0.01)),
                      lam=float(np.float32(0.1)), inv_b=1.0)
    xq = quantize(x, "e4m3fn")
    exact = sum(Fraction(float(a)) * Fraction(float(c)) for a, c in zip(xq[2], b.q[:, 0]))
    R = acc_rounder(parse_format("fp32"))
    d_spec = float(np.float32(b.s * float(np.float32(float(exact)))))   # R(s · R(s_i))
    t = svrg_step(AccArith(parse_format("fp32")), exact_keys("svrg", b.fmts, 65), "linear", xq[2:3], None,
                  b.q, b.qa, b.g_tilde, k)
    g = R(R(xq[2][:, None] * d_spec) + R(k.lam * R(k.s * b.q)))
    assert np.array_equal(t, R(R(k.alpha * R(g + b.g_tilde)) * k.inv_s))
    ops = run(b, "svrg", [2, 4], step_size=0.01).ops
    assert ops["mul e4m3fn*fixed<2,7>"] == 2 * 65
    assert ops["add fixed<17,16>"] == 2 * 64


def test_a_diverging_epoch_is_refused_and_leaves_the_offset_alone():
    # What a diverged outer loop sends: a scale at the top of fp32 and a gradient beyond it,
    # so d = s·(x·dq) and g̃ overflow to opposite infinities and u = inf − inf.
    b = configure("linear", n=4, f=2, offset="fixed<1,7>", l2=0.0, scale=1.0)
    b.load_data(0, np.full((4, 2), 1.5), np.ones(4))
    b.recentre(np.full((2, 1), -1e39), None, 3e38)
    b.q[:] = 0.5
    before = b.q.copy()
    with pytest.raises(KernelError, match="diverged until the accumulator fp32 overflowed"):
        run(b, "svrg", [0, 1, 2, 3], step_size=0.1, epoch=1)
    assert np.array_equal(b.q, before)
