"""Float64 models: L2-regularised least squares, binary logistic and softmax regression.

One objective for all three, with w of shape ``n_features × n_outputs``::

    f(w) = (1/n) Σ_i ℓ(x_i·w, y_i) + (λ/2)‖w‖²      (the bias column is regularised too)

    linear    ℓ(a, y) = ½(a − y)²                 ℓ'(a) = a − y
    logistic  ℓ(a, y) = log(1 + e^a) − y·a        ℓ'(a) = σ(a) − y          (y ∈ {0, 1})
    softmax   ℓ(a, y) = logsumexp(a) − a_y        ℓ'(a) = softmax(a) − e_y  (y ∈ {0 … c−1})

Example::

    >>> obj = Objective("softmax", x, y, l2=1e-2, n_outputs=10)
    >>> w = obj.zeros()
    >>> obj.loss(w), np.linalg.norm(obj.grad(w))
    >>> obj.hessian_vector(w, v)           # ∇²f(w)·v without forming the (d·c)² Hessian

Every pass over all n samples (loss, grad, anchor_terms, hessian, hessian_vector,
smoothness) runs over row chunks (``row_chunks``), so temporaries stay bounded whatever n
is: a chunk holds CHUNK_VALUES values of x (512 KiB, cache-sized: x·w and then Xᵀ·(…) read
it twice), and ``hessian()``'s rows × (d·c) temporary is bounded by HESSIAN_VALUES (32 MiB).
Chunk sizes depend on the row width only, never on n or the thread count, and chunk results
are added in row order, so every result is deterministic; a problem of one chunk computes
exactly the unchunked expressions.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

MODELS = ("linear", "logistic", "softmax")

# x values per row chunk of the per-sample passes: 512 KiB stays in a core's L2 between x·w
# and Xᵀ·(…), and OpenBLAS multiplies such thin blocks without packing them. Measured with
# one BLAS thread (as train() runs), a bare gradient loop: 60000 × 785 softmax 70 ms at 2^16
# against 130–190 ms at 2^17 … 2^22 values and 200 ms unchunked; 10^6 × 101 least squares
# 90 ms against 150–160 ms at 2^22 or unchunked. Two threads rank them the same way.
CHUNK_VALUES = 1 << 16
# hessian()'s rows × (d·c) temporary: 32 MiB, so each chunk's product is a large update
# of the (d·c)² result rather than many thin ones.
HESSIAN_VALUES = 1 << 22

T = TypeVar("T")


def row_chunks(n_rows: int, rows: int) -> Iterator[slice]:
    """Slices of ``rows`` consecutive rows (the last may be shorter) covering 0 … n_rows in order.

    ``for s in row_chunks(len(x), 4096): x[s]`` — every chunked pass in host/ uses this.
    """
    return (slice(start, min(start + rows, n_rows)) for start in range(0, n_rows, rows))


def fp64_ops(**counts: int) -> Counter:
    """Host operation counts keyed like the accelerator's: ``fp64_ops(add=3)`` → {"add fp64": 3}."""
    return Counter({f"{op} fp64": n for op, n in counts.items() if n})


@dataclass(frozen=True, eq=False)
class Objective:
    """f(w) for one model on one data set; every method is a pure function of w."""

    model: str
    x: np.ndarray          # n × d, float64, bias column included
    y: np.ndarray          # n: float64 targets (linear) or int64 labels
    l2: float
    n_outputs: int = 1
    targets: np.ndarray = field(init=False, repr=False)   # n × c: y one-hot, or y as a column

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}; got {self.model!r}")
        if self.model != "softmax" and self.n_outputs != 1:
            raise ValueError(f"{self.model} has one output; got n_outputs={self.n_outputs}")
        if self.l2 < 0:
            raise ValueError(f"l2 must be >= 0; got {self.l2}")
        # One-hot targets once, so ℓ'(a) = p − Y is a single subtraction for every model.
        if self.model == "softmax":
            targets = np.eye(self.n_outputs)[self.y]
        else:
            targets = np.asarray(self.y, dtype=np.float64)[:, None]
        object.__setattr__(self, "targets", targets)

    @property
    def n_samples(self) -> int:
        return self.x.shape[0]

    @property
    def n_features(self) -> int:
        return self.x.shape[1]

    def zeros(self) -> np.ndarray:
        return np.zeros((self.n_features, self.n_outputs))

    # -- chunked passes over the rows ---------------------------------------------------

    def _chunks(self, values_per_row: int, budget: int | None = None) -> Iterator[slice]:
        """Row slices whose per-row temporaries of ``values_per_row`` values total at most
        ``budget`` (default CHUNK_VALUES; at least one row per chunk)."""
        return row_chunks(self.n_samples, max(1, (budget or CHUNK_VALUES) // values_per_row))

    @staticmethod
    def _sum(parts: Iterator[T]) -> T:
        """Σ parts, added in order, the first part being the running total: one chunk is
        exactly the unchunked value, and k chunks add as often as one unchunked sum does
        (Σ(m_j − 1) + (k − 1) = n − 1), so the *_ops counts below hold unchanged."""
        total = next(parts)
        for part in parts:
            total += part
        return total

    # -- the link: scores → ℓ'-terms ------------------------------------------------

    def predictions(self, scores: np.ndarray) -> np.ndarray:
        """a ↦ a (linear), σ(a) (logistic), softmax(a) (softmax); ℓ'(a) = predictions − targets."""
        # scipy.special is imported where used: every cosim command reads MODELS (its flags'
        # help), and importing scipy would add a third of a second of CPU to each.
        from scipy.special import expit, softmax

        if self.model == "linear":
            return scores
        if self.model == "logistic":
            return expit(scores)
        return softmax(scores, axis=1)

    def anchor_terms(self, w: np.ndarray) -> np.ndarray | None:
        """What the accelerator needs at an anchor w̃: σ(x_i·w̃) or softmax(x_i·w̃); None for linear.

        (Least squares needs nothing: ℓ'(x·(w̃+z)) − ℓ'(x·w̃) = x·z.)
        """
        if self.model == "linear":
            return None
        terms = np.empty((self.n_samples, self.n_outputs))
        for s in self._chunks(self.n_features):
            terms[s] = self.predictions(self.x[s] @ w)
        return terms

    # -- objective ----------------------------------------------------------------

    def loss(self, w: np.ndarray) -> float:
        """f(w): the mean of ℓ over the samples plus (λ/2)‖w‖²."""
        from scipy.special import log_softmax     # where used, as in predictions()

        def chunk(s: slice) -> np.float64:
            a, targets = self.x[s] @ w, self.targets[s]
            if self.model == "linear":
                per = 0.5 * (a - targets) ** 2
            elif self.model == "logistic":
                per = np.logaddexp(0.0, a) - targets * a
            else:
                per = -(log_softmax(a, axis=1) * targets)
            return per.sum()

        total = self._sum(chunk(s) for s in self._chunks(self.n_features))
        return float(total / self.n_samples + 0.5 * self.l2 * np.sum(w * w))

    def grad(self, w: np.ndarray) -> np.ndarray:
        """Full gradient (1/n) Xᵀ(ℓ'(Xw)) + λw, shape n_features × n_outputs."""
        def chunk(s: slice) -> np.ndarray:
            xs = self.x[s]
            return xs.T @ (self.predictions(xs @ w) - self.targets[s])

        return self._sum(chunk(s) for s in self._chunks(self.n_features)) / self.n_samples + self.l2 * w

    def sample_grads(self, w: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """∇f_i(w) = x_i ℓ'(x_i·w)ᵀ + λw for each i in idx: shape len(idx) × d × c.

        Their mean over all i is ``grad(w)`` (f = mean of f_i, each f_i carrying the λ term).
        """
        xb = self.x[idx]
        residual = self.predictions(xb @ w) - self.targets[idx]
        return xb[:, :, None] * residual[:, None, :] + self.l2 * w

    def batch_grad(self, w: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Mean of ``sample_grads(w, idx)`` without forming the B × d × c stack (the SGD hot path)."""
        xb = self.x[idx]
        residual = self.predictions(xb @ w) - self.targets[idx]
        return xb.T @ residual / len(idx) + self.l2 * w

    def hessian(self, w: np.ndarray) -> np.ndarray:
        """∇²f(w) as a (d·c) × (d·c) matrix over w.ravel() (row-major: index j·c + k).

        For small d·c (the reference's Newton steps); ``hessian_vector`` needs no such matrix.
        """
        d, c, n = self.n_features, self.n_outputs, self.n_samples

        def chunk(s: slice) -> np.ndarray:
            xs = self.x[s]
            if self.model == "linear":
                return xs.T @ xs / n
            p = self.predictions(xs @ w)
            if self.model == "logistic":
                return (xs * (p * (1 - p))).T @ xs / n
            # Σ_i (diag(p_i) − p_i p_iᵀ) ⊗ x_i x_iᵀ, split into its two terms.
            h = np.zeros((d, c, d, c))
            for k in range(c):
                h[:, k, :, k] = (xs * p[:, k:k + 1]).T @ xs / n
            m = (xs[:, :, None] * p[:, None, :]).reshape(len(xs), d * c)
            return h.reshape(d * c, d * c) - m.T @ m / n

        return self._sum(chunk(s) for s in self._chunks(d * c, HESSIAN_VALUES)) + self.l2 * np.eye(d * c)

    def hessian_vector(self, w: np.ndarray, v: np.ndarray, terms: np.ndarray | None = None) -> np.ndarray:
        """∇²f(w)·v for v shaped like w, without forming ∇²f: ``hessian(w) @ v.ravel()``, reshaped.

        (1/n) Xᵀ r + λv with A = Xv and r = A (linear), p(1−p)⊙A (logistic),
        P⊙A − P⊙rowsum(P⊙A) (softmax, P = softmax(Xw)). ``terms`` = ``anchor_terms(w)``
        when already at hand (a CG solve calls this many times at one w); else computed.
        """
        p = self.anchor_terms(w) if terms is None else terms

        def chunk(s: slice) -> np.ndarray:
            xs = self.x[s]
            a = xs @ v
            if self.model == "logistic":
                a = p[s] * (1 - p[s]) * a
            elif self.model == "softmax":
                pa = p[s] * a
                a = pa - p[s] * pa.sum(axis=1, keepdims=True)
            return xs.T @ a

        return self._sum(chunk(s) for s in self._chunks(self.n_features)) / self.n_samples + self.l2 * v

    # -- float64 operation counts ------------------------------------------------------
    # What the methods above perform, counted from the shapes, for the energy accounting
    # (cosim energy; docs/energy.md). A matrix product counts every multiply and add; negation
    # and |·| only flip a sign bit and are not counted.

    def scores_ops(self, rows: int) -> Counter:
        """x·w for ``rows`` rows."""
        d, c = self.n_features, self.n_outputs
        return fp64_ops(mul=rows * d * c, add=rows * (d - 1) * c)

    def predictions_ops(self, rows: int) -> Counter:
        """predictions() of ``rows`` score rows: scipy's expit is 1/(1 + e^−a); its softmax is
        the row max, a − max, e^(·), the row sum and a division."""
        c = self.n_outputs
        if self.model == "linear":
            return Counter()
        if self.model == "logistic":
            return fp64_ops(exp=rows, add=rows, div=rows)
        return fp64_ops(cmp=rows * (c - 1), add=rows * c + rows * (c - 1), exp=rows * c, div=rows * c)

    def gradient_ops(self, rows: int) -> Counter:
        """grad() (rows = n) or batch_grad() of ``rows`` samples: scores, predictions, − targets,
        x_Bᵀ·residual, / rows, + λw."""
        d, c = self.n_features, self.n_outputs
        return (self.scores_ops(rows) + self.predictions_ops(rows)
                + fp64_ops(add=rows * c + d * c * (rows - 1) + d * c, mul=d * c * rows + d * c, div=d * c))

    def anchor_terms_ops(self) -> Counter:
        """anchor_terms(): nothing for least squares, else predictions of all n scores."""
        if self.model == "linear":
            return Counter()
        return self.scores_ops(self.n_samples) + self.predictions_ops(self.n_samples)

    def loss_ops(self) -> Counter:
        """loss(): the per-sample terms, their mean and (λ/2)‖w‖².

        Logistic: numpy's logaddexp(0, a) tests a = 0, forms t = 0 − a, tests t > 0 and then
        t ≤ 0, then e^(·), log1p and an add: counted on that longest path, taken for a > 0, so
        the count is an upper bound (a < 0 skips one test; a = 0 exactly, e.g. at w = 0, returns
        after the first test and one add). Softmax: scipy's log_softmax is the row max, a − max,
        e^(·), the row sum, its log and a subtraction (its finite check of the row max is not
        arithmetic); the product with the one-hot targets is dense.
        """
        n, c, size = self.n_samples, self.n_outputs, self.n_features * self.n_outputs
        ops = self.scores_ops(n)
        if self.model == "linear":
            ops += fp64_ops(add=n * c, mul=2 * n * c)                       # 0.5·(a − y)²
        elif self.model == "logistic":
            ops += fp64_ops(cmp=3 * n, add=2 * n + n, exp=n, log=n, mul=n)  # logaddexp − y·a
        else:
            ops += fp64_ops(cmp=n * (c - 1), add=n * c + n * (c - 1) + n * c, exp=n * c, log=n,
                            mul=n * c)                                       # −log_softmax·Y
        # Σ of n·c terms, / n; w·w, its Σ, 0.5·λ, times it, plus the mean.
        return ops + fp64_ops(add=(n * c - 1) + (size - 1) + 1, div=1, mul=size + 2)

    def smoothness(self) -> float:
        """An upper bound L on every f_i's smoothness: the step-size rule α = 0.5/L uses it.

        ∇²ℓ is bounded by 1 (linear), 1/4 (logistic: σ' ≤ 1/4) and 1/2 (softmax: the
        largest eigenvalue of diag(p) − ppᵀ is at most 1/2), so L = max_i‖x_i‖² · that + λ.
        """
        curvature = {"linear": 1.0, "logistic": 0.25, "softmax": 0.5}[self.model]
        peak = max(np.max(np.sum(self.x[s] ** 2, axis=1)) for s in self._chunks(self.n_features))
        return float(peak * curvature + self.l2)
