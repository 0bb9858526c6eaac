"""Model gradients against central finite differences and against per-sample means."""
import numpy as np
import pytest

from host.datasets import load_dataset
from host.models import Objective


def _objective(model: str, seed: int = 0) -> Objective:
    rng = np.random.default_rng(seed)
    x = np.hstack([rng.uniform(-1, 1, (40, 5)), np.ones((40, 1))])
    if model == "linear":
        return Objective(model, x, rng.standard_normal(40), l2=0.1)
    if model == "logistic":
        return Objective(model, x, rng.integers(0, 2, 40), l2=0.1)
    return Objective(model, x, rng.integers(0, 4, 40), l2=0.1, n_outputs=4)


@pytest.mark.parametrize("model", ["linear", "logistic", "softmax"])
def test_grad_matches_finite_differences(model):
    obj = _objective(model)
    w = np.random.default_rng(1).standard_normal((obj.n_features, obj.n_outputs))
    g = obj.grad(w)
    h = 1e-6
    fd = np.zeros_like(w)
    for j in np.ndindex(w.shape):
        e = np.zeros_like(w)
        e[j] = h
        fd[j] = (obj.loss(w + e) - obj.loss(w - e)) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("model", ["linear", "logistic", "softmax"])
def test_full_gradient_is_mean_of_sample_gradients(model):
    obj = _objective(model)
    w = np.random.default_rng(2).standard_normal((obj.n_features, obj.n_outputs))
    per = obj.sample_grads(w, np.arange(obj.n_samples))
    np.testing.assert_allclose(per.mean(axis=0), obj.grad(w), rtol=1e-12, atol=1e-14)
    idx = np.array([3, 3, 17])
    np.testing.assert_allclose(obj.batch_grad(w, idx), per[idx].mean(axis=0), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("model", ["linear", "logistic", "softmax"])
def test_hessian_matches_gradient_differences(model):
    obj = _objective(model)
    w = np.random.default_rng(3).standard_normal((obj.n_features, obj.n_outputs))
    v = np.random.default_rng(4).standard_normal(w.shape)
    h = 1e-6
    fd = (obj.grad(w + h * v) - obj.grad(w - h * v)) / (2 * h)
    np.testing.assert_allclose(obj.hessian(w) @ v.ravel(), fd.ravel(), rtol=1e-6, atol=1e-9)


def test_known_values_at_zero():
    # At w = 0 softmax predicts 1/c everywhere: loss log c, and logistic loss is log 2.
    obj = _objective("softmax")
    assert obj.loss(obj.zeros()) == pytest.approx(np.log(4), rel=1e-15)
    assert _objective("logistic").loss(np.zeros((6, 1))) == pytest.approx(np.log(2), rel=1e-15)
    np.testing.assert_allclose(obj.anchor_terms(obj.zeros()), 0.25)
    assert _objective("linear").anchor_terms(np.zeros((6, 1))) is None


def test_smoothness_rule_bounds_every_sample_hessian():
    ds = load_dataset("digits")
    obj = Objective("softmax", ds.x, ds.y, 1e-2, 10)
    assert obj.smoothness() == pytest.approx(np.max(np.sum(ds.x ** 2, axis=1)) / 2 + 1e-2)
    # The largest per-sample curvature at a few points stays below L.
    rng = np.random.default_rng(0)
    for i in rng.integers(0, obj.n_samples, 5):
        single = Objective("softmax", ds.x[i:i + 1], ds.y[i:i + 1], 1e-2, 10)
        top = np.linalg.eigvalsh(single.hessian(rng.standard_normal((65, 10))))[-1]
        assert top <= obj.smoothness()


def test_rejects_bad_model():
    with pytest.raises(ValueError, match="linear, logistic, softmax"):
        Objective("probit", np.ones((2, 2)), np.zeros(2), 0.1)
