"""accel.spec.layer: each layer against torch float64 within the bound its formats imply, an
exact oracle for the chunked accumulation, swamping at fan-in 4096, the update's rounding
and random-word order, the counts.

The bound of one dot product of K exact terms t_k in an accumulator of precision p
(u = 2^-p, nearest-even; γ_n = n·u / (1 − n·u), Higham, "Accuracy and Stability of Numerical
Algorithms", §4.2): a sequential sum whose every add rounds errs by at most γ_n·Σ|t| over
its n rounded adds (the first, 0 + t_0, rounds t_0 into the format). With chunks of c and
J = ⌈K/c⌉ chunks: γ_c·Σ|t| inside the chunks, then γ_J·(1 + γ_c)·Σ|t| for the partials.
Each add may also lose half the smallest subnormal step. The output's rounding adds
u_out·|ŝ| and half its smallest step. So

    |Y − s| ≤ u_out·|s| + (1 + u_out)·E + 2^(q_out − 1),  E = ε·Σ|t| + (K + J)·2^(q_acc − 1)

with ε = γ_c + γ_J(1 + γ_c) (chunked) or γ_K (not). The tests require every element within
it, some element to need a fifth of it (it is not loose), and a coarser accumulator to break
it. A wrong chunk order or a missing rounding can stay within such a bound: the exact oracle
and the bit-for-bit tests are what catch those.
"""
from __future__ import annotations

import math
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from accel.numerics import LaneRNG, accumulate, quantize
from accel.spec import layer, nonlinear
from accel.spec.arith import CountingArith
from accel.spec.backend import KernelError
from protocol.formats import FloatFormat, parse_format

IBM = layer.RECIPES["fp8-ibm"]
FP16_ACC = layer.LayerFormats("e4m3fn", "e4m3fn", "e5m2", "fp16", "fp16", chunk=None, update="fp32")
BF16_ACC = layer.LayerFormats("fp8_ibm", "e4m3fn", "fp8_ibm", "bf16", "bf16", chunk=16, update="bf16")
RECIPES = [IBM, FP16_ACC, BF16_ACC]


def q(fmt, x) -> np.ndarray:
    return quantize(np.asarray(x, dtype=np.float64), fmt)


def _unit(fmt: FloatFormat) -> float:
    return 2.0 ** -(fmt.man_bits + 1)


def _half_step(fmt) -> float:
    return 2.0 ** (fmt.emin - fmt.man_bits - 1)


def _gamma(n: int, u: float) -> float:
    return n * u / (1 - n * u)


def bound(exact: np.ndarray, abs_sum: np.ndarray, k: int, fmts: layer.LayerFormats, out) -> np.ndarray:
    """The module docstring's bound on |Y − s| for dots of k terms into role format ``out``."""
    u = _unit(fmts.acc)
    if fmts.chunk:
        c = min(fmts.chunk, k)
        j = -(-k // c)
        eps, adds = _gamma(c, u) + _gamma(j, u) * (1 + _gamma(c, u)), k + j
    else:
        eps, adds = _gamma(k, u), k
    acc_err = eps * abs_sum + adds * _half_step(fmts.acc)
    u_out = _unit(out)
    return u_out * np.abs(exact) + (1 + u_out) * acc_err + _half_step(out) + 1e-12 * abs_sum


def check_bound(got: np.ndarray, exact: np.ndarray, abs_sum: np.ndarray, k: int, fmts, out) -> float:
    """Assert the bound holds; return the largest share of it an element needed."""
    b = bound(exact, abs_sum, k, fmts, out)
    err = np.abs(got - exact)
    assert (err <= b).all(), f"{int((err > b).sum())} elements beyond the bound, worst {float((err / b).max()):.3f}"
    return float((err / b).max())


def data(g: np.random.Generator, fmt, shape, scale=1.0) -> np.ndarray:
    return q(fmt, g.standard_normal(shape) * scale)


def t64(x) -> torch.Tensor:
    return torch.tensor(np.asarray(x), dtype=torch.float64)


# -- formats -------------------------------------------------------------------------------

def test_the_ibm_recipe_is_wang_et_al_2018() -> None:
    assert repr(IBM) == ("LayerFormats(weights=fp8_ibm, activations=fp8_ibm, errors=fp8_ibm, "
                         "weight_grads=fp16_ibm, acc=fp16_ibm chunk 64, update=fp16_ibm stochastic)")
    assert (IBM.weights.exp_bits, IBM.weights.man_bits) == (5, 2)        # (1,5,2)
    assert (IBM.acc.exp_bits, IBM.acc.man_bits) == (6, 9)                # (1,6,9)
    assert IBM.update == IBM.acc and IBM.chunk == 64
    assert parse_format("float<5,2,sat>") == IBM.weights and parse_format("float<6,9,sat>") == IBM.acc


def test_chunk_zero_is_one_sequential_sum() -> None:
    f = layer.LayerFormats("fp8_ibm", "fp8_ibm", "fp8_ibm", "fp16_ibm", "fp16_ibm", chunk=0)
    assert f.chunk is None and "chunk" not in repr(f)


@pytest.mark.parametrize("kwargs, message", [
    ({"weights": "fp32"}, ("layer weights format fp32: fp32 has 32 bits; the products need a float or fixed "
                           "format of at most 16 bits whose products are exact in float64: fp16, bf16, e4m3fn")),
    ({"activations": "mxfp8"}, "layer activations format mxfp8: mxfp8 is a block format"),
    ({"errors": "float<11,4>"}, "float<11,4>*float<11,4> reaches 2^-2052"),
    ({"acc": "fixed<8,8>"}, "the accumulator must be a float format"),
    ({"chunk": -1}, "layer chunk must be a non-negative integer (0 or None: no chunks); got -1"),
    ({"update": "fp32", "update_rounding": "stochastic"}, "pass rbits <= 28"),
    ({"update_rounding": "to_even"}, "rounding must be one of 'nearest_even'"),
    ({"acc": "float8"}, "layer acc format: cannot parse number format 'float8'"),
])
def test_bad_formats_are_refused_naming_the_role_and_the_choices(kwargs, message) -> None:
    args = {"weights": "fp8_ibm", "activations": "fp8_ibm", "errors": "fp8_ibm", "weight_grads": "fp16_ibm",
            "acc": "fp16_ibm"} | kwargs
    with pytest.raises(KernelError) as exc:
        layer.LayerFormats(**args)
    assert message in str(exc.value)


def test_inputs_outside_their_format_are_refused() -> None:
    with pytest.raises(KernelError, match=r"activations must hold fp8_ibm values .* 1 of 2 do not, e.g. 0.3"):
        layer.dense_forward(np.array([[0.5, 0.3]]), np.ones((2, 1)), IBM)


CHECKED = ["fp8_ibm", "fp16_ibm", "e4m3fn", "e5m2", "e2m1", "fp16", "bf16", "fp32", "fp64", "float<4,0>",
           "float<3,1,nosub>", "float<8,14,nosub>"]


def _edges(fmt: FloatFormat) -> list[float]:
    top, low = fmt.max_value, fmt.min_subnormal
    return [0.0, -0.0, np.inf, -np.inf, np.nan, top, -top, np.nextafter(top, np.inf), low, low / 2, 1.5 * low,
            fmt.min_normal, np.nextafter(fmt.min_normal, 0), 5e-324, 2.0 ** -1022]


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(CHECKED), seed=st.integers(0, 2**32 - 1), scale=st.integers(-150, 150))
def test_the_compiled_input_check_is_quantizes_definition(name, seed, scale) -> None:
    """An element passes the check when quantize leaves it unchanged (NaN passes): on random
    bit patterns, values of the format and their neighbours, and the format's edges."""
    fmt = parse_format(name)
    g = np.random.default_rng(seed)
    with np.errstate(over="ignore"):
        near = quantize(g.standard_normal(40) * 2.0 ** scale, fmt)
        x = np.concatenate([g.integers(-2**63, 2**63 - 1, 40, dtype=np.int64).view(np.float64), near,
                            np.nextafter(near, np.inf), near * 1.5, _edges(fmt)])
    with np.errstate(invalid="ignore", over="ignore"):
        want = (quantize(x, fmt) == x) | np.isnan(x)
    assert [layer._not_values(np.array([v]), fmt) == 0 for v in x] == want.tolist()
    assert layer._not_values(x, fmt) == int((~want).sum())
    assert layer._not_values(x[::-3], fmt) == int((~want[::-3]).sum())          # a strided view


# -- the chunked accumulation against an exact oracle -----------------------------------------

def oracle_matmul(a: np.ndarray, b: np.ndarray, acc: FloatFormat, chunk: int | None) -> np.ndarray:
    """Fractions: exact products and sums, each add rounded by quantize (the sums here are exact
    in float64, which is asserted, so quantize sees the exact value)."""
    def rounded(v: Fraction) -> Fraction:
        f = float(v)
        assert Fraction(f) == v, "an exact sum that float64 cannot hold: pick other inputs"
        return Fraction(float(quantize(np.array([f]), acc)[0]))

    def seq(terms) -> Fraction:
        s = Fraction(0)
        for t in terms:
            s = rounded(s + t)
        return s

    out = np.empty((a.shape[0], b.shape[1]))
    for m in range(a.shape[0]):
        for n in range(b.shape[1]):
            terms = [Fraction(float(a[m, k])) * Fraction(float(b[k, n])) for k in range(a.shape[1])]
            c = chunk or len(terms)
            out[m, n] = float(seq(seq(terms[i:i + c]) for i in range(0, len(terms), c)) if chunk else seq(terms))
    return out


@pytest.mark.parametrize("acc, chunk", [("fp16_ibm", None), ("fp16_ibm", 8), ("fp16_ibm", 64),
                                        ("fp16", 5), ("bf16", None), ("e5m2", 3)])
def test_matmul_equals_the_fraction_oracle(acc, chunk) -> None:
    g = np.random.default_rng(7)
    a, b = data(g, "fp8_ibm", (3, 70)), data(g, "e4m3fn", (70, 4))
    want = oracle_matmul(a, b, parse_format(acc), chunk)
    got = layer.matmul(a, b, parse_format(acc), chunk)
    assert np.array_equal(got, want)


def test_the_oracle_tells_the_chunk_order_and_every_rounding_apart() -> None:
    # Not vacuous: the orders and a skipped rounding give other bits on these inputs.
    g = np.random.default_rng(7)
    a, b = data(g, "fp8_ibm", (3, 70)), data(g, "e4m3fn", (70, 4))
    acc = parse_format("fp16_ibm")
    want = oracle_matmul(a, b, acc, 8)
    assert not np.array_equal(layer.matmul(a, b, acc, None), want)
    assert not np.array_equal(layer.matmul(a, b, acc, 16), want)
    assert not np.array_equal(q(acc, a @ b), want)                  # one rounding at the end
    assert not np.array_equal(layer.matmul(a[:, ::-1], b[::-1], acc, 8), want)   # reversed k


# -- layers against torch float64 ----------------------------------------------------------------

@pytest.mark.parametrize("fmts", RECIPES, ids=repr)
def test_dense_forward_and_backward_within_the_bound(fmts) -> None:
    g = np.random.default_rng(1)
    B, fi, fo = 16, 300, 24
    X, W = data(g, fmts.activations, (B, fi)), data(g, fmts.weights, (fi, fo), 0.1)
    dY = data(g, fmts.errors, (B, fo), 0.05)
    Xt, Wt = t64(X).requires_grad_(), t64(W).requires_grad_()
    Yt = Xt @ Wt
    Yt.backward(t64(dY))
    Y = layer.dense_forward(X, W, fmts)
    dX, dW = layer.dense_backward(X, W, dY, fmts)
    used = [check_bound(Y, Yt.detach().numpy(), np.abs(X) @ np.abs(W), fi, fmts, fmts.activations),
            check_bound(dX, Xt.grad.numpy(), np.abs(dY) @ np.abs(W.T), fo, fmts, fmts.errors),
            check_bound(dW, Wt.grad.numpy(), np.abs(X.T) @ np.abs(dY), B, fmts, fmts.weight_grads)]
    assert max(used) > 0.2, used          # the bound is not loose: some element needs a fifth of it


def test_a_coarser_accumulator_breaks_the_bound() -> None:
    # Positive terms, so Σ|t| = s: the (1,6,9) bound allows about 7% of s; a (1,5,2)
    # accumulator in the same chunks loses ten times that.
    g = np.random.default_rng(1)
    X, W = q("fp8_ibm", g.uniform(0.5, 1, (16, 300))), q("fp8_ibm", g.uniform(0.5, 1, (300, 24)))
    exact = X @ W
    assert check_bound(layer.matmul(X, W, IBM.acc, 64), exact, exact, 300, IBM, IBM.acc) < 0.1
    with pytest.raises(AssertionError, match="beyond the bound, worst 10"):
        check_bound(layer.matmul(X, W, parse_format("e5m2"), 64), exact, exact, 300, IBM, IBM.acc)


@pytest.mark.parametrize("fmts", [IBM, FP16_ACC], ids=repr)
def test_conv3_forward_and_backward_within_the_bound(fmts) -> None:
    g = np.random.default_rng(2)
    B, ci, co, h, w = 2, 3, 5, 6, 4
    X, dY = data(g, fmts.activations, (B, ci, h, w)), data(g, fmts.errors, (B, co, h, w), 0.05)
    Wt4 = data(g, fmts.weights, (co, ci, 3, 3), 0.2)                       # torch's layout
    W = np.ascontiguousarray(Wt4.transpose(1, 2, 3, 0).reshape(9 * ci, co))  # ours: (c, ky, kx) × o
    Xt, Wt = t64(X).requires_grad_(), t64(Wt4).requires_grad_()
    Yt = torch.nn.functional.conv2d(Xt, Wt, padding=1)
    Yt.backward(t64(dY))
    conv_abs = torch.nn.functional.conv2d
    Y = layer.conv3_forward(X, W, fmts)
    dX, dW = layer.conv3_backward(X, W, dY, fmts)
    absY = conv_abs(t64(np.abs(X)), t64(np.abs(Wt4)), padding=1).numpy()
    absdX = torch.nn.grad.conv2d_input(X.shape, t64(np.abs(Wt4)), t64(np.abs(dY)), padding=1).numpy()
    absdW = torch.nn.grad.conv2d_weight(t64(np.abs(X)), Wt4.shape, t64(np.abs(dY)), padding=1).numpy()
    dW4 = dW.reshape(ci, 3, 3, co).transpose(3, 0, 1, 2)
    check_bound(Y, Yt.detach().numpy(), absY, 9 * ci, fmts, fmts.activations)
    check_bound(dX, Xt.grad.numpy(), absdX, 9 * co, fmts, fmts.errors)
    check_bound(dW4, Wt.grad.numpy(), absdW, B * h * w, fmts, fmts.weight_grads)


def test_conv3_is_the_dense_product_of_im2col() -> None:
    g = np.random.default_rng(3)
    X, W = data(g, "fp8_ibm", (2, 3, 4, 4)), data(g, "fp8_ibm", (27, 5), 0.2)
    cols = layer.im2col3(X)
    assert cols.shape == (32, 27)
    assert cols[0, 4] == X[0, 0, 0, 0] and cols[0, 0] == 0.0        # centre tap; padding above-left
    assert cols[5, 9 + 3 * 2 + 2] == X[0, 1, 2, 2]                   # row (0, 1, 1), channel 1, tap (2, 2)
    Y = layer.conv3_forward(X, W, IBM)
    assert np.array_equal(Y.transpose(0, 2, 3, 1).reshape(32, 5), layer.dense_forward(cols, W, IBM))


def test_a_bias_row_is_one_more_row_against_a_ones_column() -> None:
    """A kernel of 9·C + 1 rows: the forward is the dense product of [im2col3, 1]; δX ignores
    the bias row; ΔW is the bias-free ΔW with the column sums of δY (in pixel order) below."""
    g = np.random.default_rng(3)
    X, Wb = data(g, "fp8_ibm", (2, 3, 4, 4)), data(g, "fp8_ibm", (28, 5), 0.2)
    dY = data(g, "fp8_ibm", (2, 5, 4, 4), 0.05)
    cols = np.hstack([layer.im2col3(X), np.ones((32, 1))])
    Y = layer.conv3_forward(X, Wb, IBM)
    assert np.array_equal(Y.transpose(0, 2, 3, 1).reshape(32, 5), layer.dense_forward(cols, Wb, IBM))
    assert not np.array_equal(Y, layer.conv3_forward(X, Wb[:-1], IBM))
    dX, dW = layer.conv3_backward(X, Wb, dY, IBM)
    dX0, dW0 = layer.conv3_backward(X, Wb[:-1], dY, IBM)
    bias = quantize(layer.matmul(np.ones((1, 32)), dY.transpose(0, 2, 3, 1).reshape(32, 5), IBM.acc, IBM.chunk),
                    IBM.weight_grads)
    assert np.array_equal(dX, dX0) and np.array_equal(dW, np.vstack([dW0, bias])) and bias.any()
    with pytest.raises(KernelError, match="has 27 rows \\(28 with a bias row\\); got 29"):
        layer.conv3_forward(X, np.zeros((29, 5)), IBM)
    # counts: the bias is one more term of the forward's and ΔW's dot products
    fwd = layer.layer_ops("conv3_forward", IBM, batch=2, fan_in=3, fan_out=5, height=4, width=4, bias=True)
    assert fwd["mul fp8_ibm*fp8_ibm"] == 32 * 28 * 5 and fwd["add fp16_ibm"] == 32 * 5 * 29
    back = layer.layer_ops("conv3_backward", IBM, batch=2, fan_in=3, fan_out=5, height=4, width=4, bias=True)
    assert back["mul fp8_ibm*fp8_ibm"] == 32 * 45 * 3 + 28 * 32 * 5
    mem = layer.layer_memory("conv3_backward", IBM, batch=2, fan_in=3, fan_out=5, height=4, width=4, bias=True)
    assert mem["weight gradients write"] == 28 * 5 * 2 and mem["weights read"] == 27 * 5


def test_relu_and_maxpool_equal_torch_exactly() -> None:
    g = np.random.default_rng(4)
    x = data(g, "fp8_ibm", (2, 3, 4, 6))
    x[0, 0, 0, :2] = 1.5                                    # a tie: the first one wins
    xt = t64(x).requires_grad_()
    y, arg = layer.maxpool2_forward(layer.relu_forward(x))
    yt = torch.nn.functional.max_pool2d(torch.relu(xt), 2)
    dy = data(g, "fp8_ibm", y.shape)
    yt.backward(t64(dy))
    assert np.array_equal(y, yt.detach().numpy())
    assert arg[0, 0, 0, 0] == 0
    dx = layer.relu_backward(x, layer.maxpool2_backward(dy, arg))
    assert np.array_equal(dx, xt.grad.numpy())
    assert layer.relu_forward(np.array([-0.0, -1.0, 2.0])).tolist() == [0.0, 0.0, 2.0]
    assert np.signbit(layer.relu_forward(np.array([-0.0]))).tolist() == [False]


def test_softmax_cross_entropy_within_its_bound() -> None:
    g = np.random.default_rng(5)
    B, C = 32, 10
    Z = data(g, "fp8_ibm", (B, C), 2.0)
    y = g.integers(0, C, B)
    Zt = t64(Z).requires_grad_()
    loss_t = torch.nn.functional.cross_entropy(Zt, torch.tensor(y))
    loss_t.backward()
    p_t = torch.softmax(t64(Z), dim=1).numpy()
    out = layer.softmax_xent_forward(Z, y, IBM)
    u = _unit(IBM.acc)
    # R(z − m) (|z − m|·u), exp (1 ulp), C − 1 adds of the row sum, the divide (each u).
    rel = (np.abs(Z - Z.max(axis=1, keepdims=True)) + 2 + (C - 1) + 1) * u
    assert (np.abs(out.probs - p_t) <= rel * p_t + _half_step(IBM.acc)).all()
    assert out.loss == pytest.approx(loss_t.item(), rel=C * 8 * u)
    dZ = layer.softmax_xent_backward(out.probs, y, IBM)
    u_e = _unit(IBM.errors)
    want = Zt.grad.numpy()
    # p's error, the rounded p − onehot, R(1/B) (exact here) and the product: 2u; then Q_err.
    err_acc = (rel * p_t + _half_step(IBM.acc) + 2 * u * np.abs(want * B)) / B
    assert (np.abs(dZ - want) <= u_e * np.abs(want) + (1 + u_e) * err_acc + _half_step(IBM.errors)).all()
    assert np.array_equal(layer.softmax_xent_backward(out.probs[:1], y[:1], IBM),
                          q(IBM.errors, out.probs[:1] - np.eye(C)[y[:1]]))


def test_softmax_uses_the_bit_portable_sequence() -> None:
    Z = q("fp8_ibm", [[0.0, 1.0, -2.0], [3.0, 3.0, 0.5]])
    A = CountingArith(IBM.acc)
    assert np.array_equal(layer.softmax_xent_forward(Z, [0, 2], IBM).probs, nonlinear.softmax(A, Z))
    want = nonlinear.op_counts(IBM.acc, "softmax", 2, 3) + Counter({"round fp16_ibm nearest_even": 6})
    assert layer.layer_ops("softmax_xent_forward", IBM, batch=2, fan_in=0, fan_out=3) == dict(want)
    assert +A.ops == nonlinear.op_counts(IBM.acc, "softmax", 2, 3)


# -- swamping at kernel level ----------------------------------------------------------------

def test_fan_in_4096_swamps_without_chunks_and_not_with_chunks_of_64() -> None:
    g = np.random.default_rng(6)
    X = q("fp8_ibm", g.uniform(0.5, 1.0, (8, 4096)))          # positive: every sum grows
    W = q("fp8_ibm", g.uniform(0.5, 1.0, (4096, 4)))
    exact = X @ W                                              # exact in float64 here
    acc = IBM.acc
    err_none = np.abs(layer.matmul(X, W, acc, None) - exact) / exact
    err_64 = np.abs(layer.matmul(X, W, acc, 64) - exact) / exact
    # Without chunks the sum stalls near 2^11, where a term below half an ulp (1) is lost:
    # it keeps 45% of the exact ~2300 (measured: relative error 0.552–0.558). With chunks of
    # 64 the chunk sums stay below 64 and the 64 partials lose a few ulps of 2^-10 (measured:
    # mean 1.4e-3, max 4.1e-3): a ratio of about 380.
    assert err_none.min() > 0.5
    assert err_64.max() < 2.0 ** -7
    assert err_none.mean() / err_64.mean() > 200


# -- the update --------------------------------------------------------------------------------

def test_nearest_even_update_rounds_the_exact_difference_once() -> None:
    g = np.random.default_rng(8)
    f = layer.LayerFormats("fp8_ibm", "fp8_ibm", "fp8_ibm", "fp16_ibm", "fp16_ibm", chunk=64, update="fp16_ibm")
    w, dW = data(g, "fp16_ibm", (20, 7)), data(g, "fp16_ibm", (20, 7), 0.01)
    new, w8 = layer.weight_update(w, dW, 0.1, f)
    alpha = Fraction(float(q("fp16_ibm", 0.1)))
    exact = [Fraction(float(a)) - alpha * Fraction(float(d)) for a, d in zip(w.ravel(), dW.ravel())]
    assert all(Fraction(float(e)) == e for e in exact)          # so quantize sees the exact value
    assert np.array_equal(new.ravel(), q("fp16_ibm", [float(e) for e in exact]))
    assert np.array_equal(w8, q("fp8_ibm", new))
    # A tiny step next to a large weight is lost by nearest-even but not by stochastic rounding.
    assert layer.weight_update(np.array([1.0]), np.array([2.0 ** -12]), 1.0, f)[0].tolist() == [1.0]


def test_stochastic_update_takes_one_word_per_weight_in_c_order_from_the_lanes() -> None:
    g = np.random.default_rng(9)
    w, dW = data(g, "fp16_ibm", (9, 5)), data(g, "fp16_ibm", (9, 5), 0.01)
    new, _ = layer.weight_update(w, dW, 0.1, IBM, rng=LaneRNG(11, 3, lanes=4))
    words = LaneRNG(11, 3, lanes=4).words(45)
    exact = w - float(q("fp16_ibm", 0.1)) * dW                 # exact in float64 here
    assert np.array_equal(new, quantize(exact, "fp16_ibm", "stochastic", rng=words))
    again, _ = layer.weight_update(w, dW, 0.1, IBM, rng=LaneRNG(11, 3, lanes=4))
    other, _ = layer.weight_update(w, dW, 0.1, IBM, rng=LaneRNG(12, 3, lanes=4))
    assert np.array_equal(again, new) and not np.array_equal(other, new)


def test_stochastic_update_keeps_tiny_steps_on_average() -> None:
    w, dW = np.ones(20000), np.full(20000, 2.0 ** -12)       # 1 − 2^-12: a quarter ulp below 1
    new, _ = layer.weight_update(w, dW, 1.0, IBM, rng=LaneRNG(5, 0, lanes=64))
    # Rounds down to 1 − 2^-10 (below 1 the ulp is 2^-10) with probability 1/4.
    share = float(np.mean(new < 1.0))
    assert abs(share - 0.25) < 4 * math.sqrt(0.25 * 0.75 / 20000)


# -- counts --------------------------------------------------------------------------------------

def test_dense_counts_equal_what_accumulate_counts() -> None:
    B, fi, fo = 3, 130, 5
    counted = Counter()
    accumulate(np.ones((B, fo, fi)), acc=IBM.acc, chunk=64, counts=counted)
    ops = layer.layer_ops("dense_forward", IBM, batch=B, fan_in=fi, fan_out=fo)
    assert ops["add fp16_ibm"] == counted["add fp16_ibm"] == B * fo * (130 + 3)
    assert ops["mul fp8_ibm*fp8_ibm"] == B * fi * fo and ops["round fp8_ibm nearest_even"] == B * fo
    back = layer.layer_ops("dense_backward", IBM, batch=B, fan_in=fi, fan_out=fo)
    # δX: B·fi dots of fo = 5 terms (one chunk); ΔW: fi·fo dots of B = 3 terms, kept at acc width.
    assert back == {"mul fp8_ibm*fp8_ibm": 2 * B * fi * fo, "add fp16_ibm": B * fi * 6 + fi * fo * 4,
                    "round fp8_ibm nearest_even": B * fi}


def test_update_and_conv_counts_and_memory() -> None:
    up = layer.layer_ops("update", IBM, batch=1, fan_in=784, fan_out=128)
    n = 784 * 128
    assert up == {"round fp16_ibm nearest_even": 1, "mul fp16_ibm*fp16_ibm": n, "add fp16_ibm": n,
                  "round fp16_ibm stochastic": n, "round fp8_ibm nearest_even": n, "rng bits": 32 * n}
    conv = layer.layer_ops("conv3_forward", IBM, batch=2, fan_in=3, fan_out=8, height=4, width=4)
    assert conv == {"mul fp8_ibm*fp8_ibm": 32 * 27 * 8, "add fp16_ibm": 32 * 8 * 28,
                    "round fp8_ibm nearest_even": 32 * 8}
    mem = layer.layer_memory("dense_forward", IBM, batch=64, fan_in=784, fan_out=128)
    assert mem == {"activations read": 64 * 784, "weights read": 784 * 128, "activations write": 64 * 128}
    assert layer.layer_memory("update", IBM, batch=1, fan_in=10, fan_out=10) == {
        "weight gradients read": 200, "master weights read": 200, "master weights write": 200, "weights write": 100}
    assert layer.layer_ops("maxpool2_forward", IBM, batch=1, fan_in=2, fan_out=0, height=4, width=4) == {
        "cmp fp8_ibm": 3 * 4 * 2}
    with pytest.raises(KernelError, match="layer kind must be one of dense_forward"):
        layer.layer_ops("dense", IBM, batch=1, fan_in=1, fan_out=1)


def test_results_are_deterministic() -> None:
    g = np.random.default_rng(10)
    X, W, dY = data(g, "fp8_ibm", (4, 50)), data(g, "fp8_ibm", (50, 6)), data(g, "fp8_ibm", (4, 6))
    runs = [(layer.dense_forward(X, W, IBM), *layer.dense_backward(X, W, dY, IBM)) for _ in range(2)]
    assert all(np.array_equal(a.view(np.uint64), b.view(np.uint64)) for a, b in zip(*runs))
