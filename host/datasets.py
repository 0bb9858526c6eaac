"""Training sets: scikit-learn's bundled ones, synthetic problems, or the user's ``.npz``.

Example::

    >>> ds = load_dataset("digits")
    >>> ds.x.shape, ds.outputs_for("softmax")
    ((1797, 65), 10)

Preprocessing (also in ``docs/host.md``): every x gets a bias column of ones appended last.
``digits`` is divided by 16 (pixels are 0…16, so every value k/16 is exact in a fixed-point
format with 4 or more fraction bits). Other real data sets are max-abs scaled per column into
[-1, 1]: the accelerator stores x in a fixed-point format, which needs a known range, and
max-abs scaling keeps zeros at zero (unlike min-max). Regression targets are standardised.
Synthetic features are scaled by one global factor instead, which keeps their condition number.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

BUILTIN_TASKS = {"digits": "multiclass", "breast_cancer": "binary", "diabetes": "regression",
                 "synthetic_linear": "regression", "synthetic_logistic": "binary"}
TASK_MODELS = {"regression": ("linear",), "binary": ("logistic", "softmax"), "multiclass": ("softmax",)}


class DatasetError(ValueError):
    """A data set name, file or model pairing that cannot be used."""


@dataclass(frozen=True, eq=False)
class Dataset:
    name: str
    x: np.ndarray            # n × d float64, bias column last
    y: np.ndarray            # float64 targets (regression) or int64 labels 0…c−1
    task: str                # regression | binary | multiclass
    n_classes: int           # 1 for regression
    preprocessing: str

    def outputs_for(self, model: str) -> int:
        """n_outputs for ``model`` on this data; a clear error when the pairing makes no sense."""
        check_pairing(self.name, self.task, model)
        return self.n_classes if model == "softmax" else 1


def check_pairing(name: str, task: str, model: str) -> None:
    """Raise DatasetError unless ``model`` fits a data set of kind ``task``, listing what works."""
    valid = TASK_MODELS[task]
    if model not in valid:
        pairs = "; ".join(f"{t}: {', '.join(m)}" for t, m in TASK_MODELS.items())
        raise DatasetError(f"model {model!r} does not fit {name!r} ({task}); "
                           f"use {', '.join(valid)} (models by task: {pairs})")


def _with_bias(x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((x.shape[0], 1))])


def _max_abs_scale(x: np.ndarray) -> np.ndarray:
    peak = np.max(np.abs(x), axis=0)
    return x / np.where(peak > 0, peak, 1.0)   # an all-zero column stays zero


def _standardise(y: np.ndarray) -> np.ndarray:
    return (y - y.mean()) / y.std()


def load_dataset(name: str = "digits", *, samples: int = 1000, features: int = 20,
                 condition: float = 100.0, seed: int = 0) -> Dataset:
    """Load a named data set or a ``.npz`` path; ``samples`` … ``seed`` shape the synthetic ones."""
    if name.endswith(".npz"):
        return load_npz(name)
    if name == "digits":
        from sklearn.datasets import load_digits
        d = load_digits()
        return Dataset(name, _with_bias(d.data / 16.0), d.target.astype(np.int64), "multiclass", 10,
                       "pixels / 16 (exact k/16 values in [0, 1]); bias column appended")
    if name == "breast_cancer":
        from sklearn.datasets import load_breast_cancer
        d = load_breast_cancer()
        return Dataset(name, _with_bias(_max_abs_scale(d.data)), d.target.astype(np.int64), "binary", 2,
                       "features max-abs scaled per column into [-1, 1]; bias column appended")
    if name == "diabetes":
        from sklearn.datasets import load_diabetes
        d = load_diabetes()
        return Dataset(name, _with_bias(_max_abs_scale(d.data)), _standardise(d.target), "regression", 1,
                       "features max-abs scaled per column into [-1, 1]; target standardised; "
                       "bias column appended")
    if name in ("synthetic_linear", "synthetic_logistic"):
        return synthetic(name.removeprefix("synthetic_"), samples=samples, features=features,
                         condition=condition, seed=seed)
    raise DatasetError(f"unknown data set {name!r}; choose one of {', '.join(BUILTIN_TASKS)} or a path to a .npz file")


def synthetic(kind: str, *, samples: int, features: int, condition: float, seed: int) -> Dataset:
    """A least-squares (``linear``) or ``logistic`` problem whose features have a chosen condition number.

    Features F = U·diag(s)·Vᵀ with U's columns orthonormal and orthogonal to the ones vector
    (so F is centred and the bias column does not disturb its spectrum), and singular values
    s spaced geometrically so that FᵀF/n has eigenvalues from 1 down to 1/condition. F is then
    scaled by one factor so max|F| = 1 (this keeps the condition number). Targets:
    linear y = F·w₀ + 0.1·noise, standardised; logistic y ~ Bernoulli(σ(4·F·w₀/‖F·w₀‖_∞)),
    with w₀ standard normal.
    """
    if kind not in ("linear", "logistic"):
        raise DatasetError(f"synthetic kind must be 'linear' or 'logistic'; got {kind!r}")
    if not (isinstance(samples, int) and isinstance(features, int) and 1 <= features < samples):
        raise DatasetError(f"need integers 1 <= features < samples; got features={features}, samples={samples}")
    if not condition >= 1.0:
        raise DatasetError(f"condition must be >= 1; got {condition}")
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((samples, features))
    g -= g.mean(axis=0)
    u, _ = np.linalg.qr(g)
    v, _ = np.linalg.qr(rng.standard_normal((features, features)))
    eig = np.geomspace(1.0, 1.0 / condition, features)
    f = u @ (np.sqrt(eig * samples)[:, None] * v.T)
    f /= np.max(np.abs(f))
    w0 = rng.standard_normal(features)
    a = f @ w0
    if kind == "linear":
        y, task, classes = _standardise(a + 0.1 * rng.standard_normal(samples)), "regression", 1
    else:
        p = 1.0 / (1.0 + np.exp(-4.0 * a / np.max(np.abs(a))))
        y, task, classes = (rng.random(samples) < p).astype(np.int64), "binary", 2
    desc = (f"synthetic {kind}: {samples} samples, {features} centred features with covariance condition "
            f"number {condition:g} (seed {seed}), scaled by one factor to max|x| = 1; bias column appended")
    return Dataset(f"synthetic_{kind}", _with_bias(f), y, task, classes, desc)


def load_npz(path: str | Path) -> Dataset:
    """The user's data: arrays ``x`` (n × d) and ``y`` (n); the task follows from y.

    Integer-valued y with values {0, 1} is binary, 0…c−1 (c > 2) multiclass, anything else
    regression (standardised). x is max-abs scaled per column and gets a bias column.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"no such .npz file: {path}")
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ("x", "y") if k not in z.files]
        if missing:
            raise DatasetError(f"{path} lacks array(s) {', '.join(missing)}; it needs 'x' (n × d) and 'y' (n); "
                               f"found: {', '.join(z.files) or 'nothing'}")
        x, y = np.asarray(z["x"]), np.asarray(z["y"])
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise DatasetError(f"{path}: need x of shape (n, d) and y of shape (n,) with n >= 1; "
                           f"got x {x.shape}, y {y.shape}")
    if not (np.issubdtype(x.dtype, np.number) and np.issubdtype(y.dtype, np.number)):
        raise DatasetError(f"{path}: x and y must be numeric; got {x.dtype}, {y.dtype}")
    x, y = x.astype(np.float64), y.astype(np.float64)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise DatasetError(f"{path}: x and y must be finite (found NaN or Inf)")
    x = _with_bias(_max_abs_scale(x))
    labels = np.unique(y)
    if np.all(labels == np.round(labels)) and labels.min() == 0 and np.array_equal(labels, np.arange(len(labels))) \
            and len(labels) >= 2:
        task = "binary" if len(labels) == 2 else "multiclass"
        return Dataset(path.stem, x, y.astype(np.int64), task, len(labels),
                       "features max-abs scaled per column into [-1, 1]; labels 0…c−1; bias column appended")
    return Dataset(path.stem, x, _standardise(y) if y.std() > 0 else y - y.mean(), "regression", 1,
                   "features max-abs scaled per column into [-1, 1]; target standardised; bias column appended")
