"""Reference optimum accuracy (dense and Hessian-free Newton) and the host's full-precision
SVRG on the default problem."""
import time

import numpy as np
import pytest

from host.datasets import load_dataset
from host.models import Objective
from host.optimizers import epoch_order, svrg_epoch
from host.reference import DENSE_HESSIAN_MAX, reference_optimum, relative_gap


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    obj = Objective("softmax", ds.x, ds.y, 1e-2, 10)
    return obj, reference_optimum(obj)


def test_reference_reaches_gradient_tolerance(digits):
    obj, ref = digits
    assert ref.method == "lbfgs+newton"     # 650 weights: the dense Hessian
    assert ref.grad_norm <= 1e-12
    assert np.linalg.norm(obj.grad(ref.w)) == ref.grad_norm
    # Strong convexity (λ = 1e-2): any other point is worse, by at least λ/2·‖Δ‖².
    w = ref.w + 1e-3
    assert obj.loss(w) - ref.loss >= 0.5 * 1e-2 * np.sum((w - ref.w) ** 2) * 0.99


def test_relative_gap_definition():
    assert relative_gap(1.5, 1.0) == 0.5
    assert relative_gap(-0.5, -1.0) == 0.5
    assert relative_gap(0.25, 0.0) == 0.25    # f* = 0: absolute gap


def test_epoch_order_rule():
    order = epoch_order(7, 3, 100, 50)
    assert order.dtype == np.uint32 and order.shape == (50,)
    assert np.array_equal(order, np.random.default_rng([7, 3]).integers(0, 100, size=50))
    assert not np.array_equal(order, epoch_order(7, 4, 100, 50))


def test_svrg_reaches_1e_10_on_digits(digits):
    # Calibration (numpy prototype): α = 0.5/L, T = n, B = 1 gives gap 2.6e-10 at epoch 11.
    obj, ref = digits
    alpha, n = 0.5 / obj.smoothness(), obj.n_samples
    w, gaps = obj.zeros(), []
    for e in range(1, 13):
        w = svrg_epoch(obj, w, epoch_order(0, e, n, n), alpha, 1)
        gaps.append(relative_gap(obj.loss(w), ref.loss))
    assert gaps[10] == pytest.approx(2.6e-10, rel=0.05)
    assert gaps[11] <= 1e-10
    assert all(b < a for a, b in zip(gaps, gaps[1:]))


@pytest.mark.parametrize("name,model", [("digits", "softmax"), ("breast_cancer", "logistic"), ("diabetes", "linear")])
def test_hessian_free_agrees_with_dense_newton(name, model):
    ds = load_dataset(name)
    obj = Objective(model, ds.x, ds.y, 1e-2, ds.outputs_for(model))
    dense, free = reference_optimum(obj, hessian_free=False), reference_optimum(obj, hessian_free=True)
    assert free.method == "lbfgs+newton-cg" and free.grad_norm <= 1e-12
    # λ-strong convexity: ‖w − w*‖ ≤ ‖∇f(w)‖/λ for both, so they are this close.
    assert np.linalg.norm(free.w - dense.w) <= (free.grad_norm + dense.grad_norm) / 1e-2
    assert relative_gap(free.loss, dense.loss) == pytest.approx(0, abs=1e-14)


def test_hessian_free_on_nearly_separable_data():
    # λ = 1e-7 on digits: L-BFGS hands over far from w*, and the first Newton steps overshoot
    # (‖∇f‖ grows) until halved.
    ds = load_dataset("digits")
    obj = Objective("softmax", ds.x, ds.y, 1e-7, 10)
    assert reference_optimum(obj, hessian_free=True).grad_norm <= 1e-12


def test_hessian_free_reference_on_a_mid_size_softmax(monkeypatch):
    ds = load_dataset("synthetic_softmax", samples=20000, features=200, seed=1)
    obj = Objective("softmax", ds.x, ds.y, 1e-2, 10)
    assert obj.n_features * obj.n_outputs > DENSE_HESSIAN_MAX

    def no_hessian(self, w):
        raise AssertionError("the (d·c)² Hessian was built")

    monkeypatch.setattr(Objective, "hessian", no_hessian)
    started = time.perf_counter()
    ref = reference_optimum(obj)
    assert time.perf_counter() - started < 20          # 1.6 s measured
    assert ref.method == "lbfgs+newton-cg" and ref.grad_norm <= 1e-12
    assert np.linalg.norm(obj.grad(ref.w)) == ref.grad_norm
    w = ref.w + 1e-3
    assert obj.loss(w) - ref.loss >= 0.5 * 1e-2 * np.sum((w - ref.w) ** 2) * 0.99
