"""Model gradients against central finite differences and per-sample means; chunked passes
against whole-array expressions; Hessian-vector products against the Hessian."""
import numpy as np
import pytest
from scipy.special import log_softmax

from host import models
from host.datasets import load_dataset
from host.models import Objective, row_chunks


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


# -- chunked passes ------------------------------------------------------------------


def _large(model: str) -> Objective:
    """5000 × 31: 155000 values of x, three chunks of CHUNK_VALUES."""
    rng = np.random.default_rng(5)
    x = np.hstack([rng.uniform(-1, 1, (5000, 30)), np.ones((5000, 1))])
    y = {"linear": rng.standard_normal(5000), "logistic": rng.integers(0, 2, 5000),
         "softmax": rng.integers(0, 4, 5000)}[model]
    return Objective(model, x, y, l2=0.1, n_outputs=4 if model == "softmax" else 1)


def _unchunked(obj: Objective, w: np.ndarray) -> tuple[float, np.ndarray, np.ndarray | None]:
    """loss, grad and anchor terms as single whole-array expressions."""
    a = obj.x @ w
    p = obj.predictions(a)
    per = {"linear": lambda: 0.5 * (a - obj.targets) ** 2,
           "logistic": lambda: np.logaddexp(0.0, a) - obj.targets * a,
           "softmax": lambda: -(log_softmax(a, axis=1) * obj.targets)}[obj.model]()
    loss = float(per.sum() / obj.n_samples + 0.5 * obj.l2 * np.sum(w * w))
    grad = obj.x.T @ (p - obj.targets) / obj.n_samples + obj.l2 * w
    return loss, grad, None if obj.model == "linear" else p


def _rel(a: np.ndarray | float, b: np.ndarray | float) -> float:
    return float(np.max(np.abs(np.subtract(a, b))) / np.max(np.abs(b)))


@pytest.mark.parametrize("model", ["linear", "logistic", "softmax"])
def test_chunked_passes_match_unchunked_expressions(model, monkeypatch):
    big = _large(model)
    assert len(list(big._chunks(big.n_features))) == 3
    w = np.random.default_rng(6).standard_normal((big.n_features, big.n_outputs))
    loss, grad, terms = _unchunked(big, w)
    assert _rel(big.loss(w), loss) <= 1e-12 and _rel(big.grad(w), grad) <= 1e-12
    if terms is not None:
        assert _rel(big.anchor_terms(w), terms) <= 1e-12
    assert big.smoothness() == np.max(np.sum(big.x ** 2, axis=1)) * {"linear": 1, "logistic": 0.25,
                                                                     "softmax": 0.5}[model] + 0.1
    # One chunk computes exactly the whole-array expressions.
    small = _objective(model)
    w = w[:small.n_features]
    loss, grad, terms = _unchunked(small, w)
    assert small.loss(w) == loss and np.array_equal(small.grad(w), grad)
    assert terms is None or np.array_equal(small.anchor_terms(w), terms)
    # Chunks of one row: the same values up to rounding.
    hess = small.hessian(w)
    monkeypatch.setattr(models, "CHUNK_VALUES", 1)
    monkeypatch.setattr(models, "HESSIAN_VALUES", 1)
    assert len(list(small._chunks(small.n_features))) == small.n_samples
    assert _rel(small.loss(w), loss) <= 1e-12 and _rel(small.grad(w), grad) <= 1e-12
    assert terms is None or _rel(small.anchor_terms(w), terms) <= 1e-12
    assert _rel(small.hessian(w), hess) <= 1e-12


def test_row_chunks_cover_the_rows_in_order():
    assert list(row_chunks(10, 4)) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert list(row_chunks(8, 4)) == [slice(0, 4), slice(4, 8)]
    assert list(row_chunks(3, 4)) == [slice(0, 3)]


@pytest.mark.parametrize("model", ["linear", "logistic", "softmax"])
def test_hessian_vector_matches_hessian(model):
    obj = _objective(model)
    rng = np.random.default_rng(7)
    w, v = rng.standard_normal((2, obj.n_features, obj.n_outputs))
    hv = obj.hessian_vector(w, v)
    assert hv.shape == w.shape
    np.testing.assert_allclose(hv.ravel(), obj.hessian(w) @ v.ravel(), rtol=1e-12, atol=1e-14)
    assert np.array_equal(obj.hessian_vector(w, v, obj.anchor_terms(w)), hv)
    big = _large(model)      # several chunks
    w, v = rng.standard_normal((2, big.n_features, big.n_outputs))
    np.testing.assert_allclose(big.hessian_vector(w, v).ravel(), big.hessian(w) @ v.ravel(), rtol=1e-12, atol=1e-14)
