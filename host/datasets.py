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
Synthetic linear/logistic features are scaled by one global factor instead, which keeps their
condition number; synthetic_softmax has digits-like k/16 pixels. ``digits64`` is digits with
every pixel repeated in an 8 × 8 block (64 × 64 images): a learnable problem whose first layer
has a fan-in of 4096, the length at which low-precision sums swamp (docs/accelerator.md).
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from host.models import row_chunks

BUILTIN_TASKS = {"digits": "multiclass", "digits64": "multiclass", "breast_cancer": "binary", "diabetes": "regression",
                 "synthetic_linear": "regression", "synthetic_logistic": "binary",
                 "synthetic_softmax": "multiclass"}
# synthetic_softmax draws its random numbers block by block: the block size is part of the
# data's definition (changing it changes the data), so it is not tied to host/models.py's chunks.
SOFTMAX_BLOCK_ROWS = 4096
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
                 condition: float = 100.0, seed: int = 0, classes: int = 10) -> Dataset:
    """Load a named data set or a ``.npz`` path; ``samples`` … ``classes`` shape the synthetic ones
    (``condition``: synthetic_linear/logistic only; ``classes``: synthetic_softmax only)."""
    if name.endswith(".npz"):
        return load_npz(name)
    if name in ("digits", "digits64"):
        from sklearn.datasets import load_digits
        d = load_digits()
        if name == "digits":
            return Dataset(name, _with_bias(d.data / 16.0), d.target.astype(np.int64), "multiclass", 10,
                           "pixels / 16 (exact k/16 values in [0, 1]); bias column appended")
        # Nearest-neighbour upscaling: row-major 64 × 64, so a sum over the pixels meets each
        # 8 × 8 image's row in 8 runs of 8 equal values, spread over the whole length.
        x = np.kron(d.images / 16.0, np.ones((1, 8, 8))).reshape(len(d.images), -1)
        return Dataset(name, _with_bias(x), d.target.astype(np.int64), "multiclass", 10,
                       "digits' pixels / 16, each repeated in an 8 × 8 block (64 × 64 images, 4096 "
                       "features); bias column appended")
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
    if name == "synthetic_softmax":
        return synthetic_softmax(samples=samples, features=features, classes=classes, seed=seed)
    raise DatasetError(f"unknown data set {name!r}; choose one of {', '.join(BUILTIN_TASKS)} or a path to a .npz file")


def synthetic(kind: str, *, samples: int, features: int, condition: float, seed: int) -> Dataset:
    """A least-squares (``linear``) or ``logistic`` problem whose features have a chosen condition number.

    Features F = U·diag(s)·Vᵀ with U's columns orthonormal and orthogonal to the ones vector
    (so F is centred and the bias column does not disturb its spectrum), and singular values
    s spaced geometrically so that FᵀF/n has eigenvalues from 1 down to 1/condition. F is then
    scaled by one factor so max|F| = 1 (this keeps the condition number). Targets:
    linear y = F·w₀ + 0.1·noise, standardised; logistic y ~ Bernoulli(σ(4·F·w₀/‖F·w₀‖_∞)),
    with w₀ standard normal.

    Memory: at most two n × features float64 arrays at once (10^6 × 100: 1.6 GiB peak, where
    numpy's qr held five), with the values numpy's qr gave (LAPACK's dgeqrf/dorgqr either way).
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
    # LAPACK works column-major: one copy, then Q overwrites it in place (numpy's qr copies
    # its input and its output through column-major buffers: five arrays of this size).
    # Imported here, as scipy.special in host/models.py: every cosim command reads this module's
    # data set names (its flags' help), and importing scipy would add a third of a second to each.
    import scipy.linalg
    u = scipy.linalg.qr(np.asfortranarray(g), mode="economic", overwrite_a=True, check_finite=False)[0]
    del g
    v, _ = np.linalg.qr(rng.standard_normal((features, features)))
    eig = np.geomspace(1.0, 1.0 / condition, features)
    x = np.ones((samples, features + 1))     # the bias column last, F written in front of it
    f = x[:, :-1]
    np.matmul(u, np.sqrt(eig * samples)[:, None] * v.T, out=f)
    del u
    f /= max(f.max(), -f.min())              # max|F| without an |F| temporary
    w0 = rng.standard_normal(features)
    a = f @ w0
    if kind == "linear":
        y, task, classes = _standardise(a + 0.1 * rng.standard_normal(samples)), "regression", 1
    else:
        p = 1.0 / (1.0 + np.exp(-4.0 * a / np.max(np.abs(a))))
        y, task, classes = (rng.random(samples) < p).astype(np.int64), "binary", 2
    desc = (f"synthetic {kind}: {samples} samples, {features} centred features with covariance condition "
            f"number {condition:g} (seed {seed}), scaled by one factor to max|x| = 1; bias column appended")
    return Dataset(f"synthetic_{kind}", x, y, task, classes, desc)


def synthetic_softmax(*, samples: int, features: int, classes: int, seed: int) -> Dataset:
    """A ``classes``-way problem with digits-like pixels: ``synthetic_softmax(samples=60000,
    features=784, classes=10, seed=0)``.

    x_ij = k/16 with k uniform on 0…16 (exact in ``fixed<2,6>``, like digits); a teacher W
    (features × classes, standard normal) and y_i = argmax_k ((x_i − ½)·W + G_i)_k with G_i
    standard Gumbel, i.e. y_i ~ softmax((x_i − ½)·W) (the Gumbel-max trick). The teacher sees
    centred pixels: with x_i·W, the offsets ½·Σ_j W_jk (spread ≈ 14 at 784 features) outweigh
    the per-sample spread (≈ 9) and a few classes take most samples (60000 × 784: 61 % in one
    class, one class empty). The offset is a per-class bias, which the model's bias column holds.
    W is drawn first, then x and G block by block (SOFTMAX_BLOCK_ROWS rows), so only x itself
    is held at full size.
    """
    for name, value, lo in (("samples", samples, 1), ("features", features, 1), ("classes", classes, 2)):
        if not (isinstance(value, int) and value >= lo):
            raise DatasetError(f"{name} must be an integer >= {lo}; got {value!r}")
    rng = np.random.default_rng(seed)
    teacher = rng.standard_normal((features, classes))
    x = np.ones((samples, features + 1))     # the bias column last
    y = np.empty(samples, dtype=np.int64)
    for s in row_chunks(samples, SOFTMAX_BLOCK_ROWS):
        rows = s.stop - s.start
        x[s, :-1] = rng.integers(0, 17, (rows, features)) / 16.0
        y[s] = np.argmax((x[s, :-1] - 0.5) @ teacher + rng.gumbel(size=(rows, classes)), axis=1)
    desc = (f"synthetic softmax: {samples} samples, {features} pixel-like features k/16 in [0, 1], "
            f"{classes} classes drawn from softmax((x − 1/2)·W) with W standard normal (seed {seed}); "
            f"bias column appended")
    return Dataset("synthetic_softmax", x, y, "multiclass", classes, desc)


def _npz_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Arrays ``x`` and ``y`` of an .npz file, or a DatasetError saying what the file is instead."""
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise DatasetError(f"{path} is a single .npy array, not an .npz archive; save x and y "
                               "with numpy.savez(path, x=x, y=y)")
        with z:
            missing = [k for k in ("x", "y") if k not in z.files]
            if missing:
                raise DatasetError(f"{path} lacks array(s) {', '.join(missing)}; it needs 'x' (n × d) and "
                                   f"'y' (n); found: {', '.join(z.files) or 'nothing'}")
            return np.asarray(z["x"]), np.asarray(z["y"])
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        # np.load says "pickled data" for any file that is not .npy or .npz: name what it is.
        what = "empty" if path.stat().st_size == 0 else "not a readable .npz archive (truncated or another format)"
        raise DatasetError(f"{path} is {what}: {type(exc).__name__}; save x and y with "
                           "numpy.savez(path, x=x, y=y)") from None


def load_npz(path: str | Path) -> Dataset:
    """The user's data: arrays ``x`` (n × d) and ``y`` (n); the task follows from y.

    Integer-valued y with values {0, 1} is binary, 0…c−1 (c > 2) multiclass, anything else
    regression (standardised). x is max-abs scaled per column and gets a bias column.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"no such .npz file: {path}")
    x, y = _npz_arrays(path)
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise DatasetError(f"{path}: need x of shape (n, d) and y of shape (n,) with n >= 1; "
                           f"got x {x.shape}, y {y.shape}")
    real = (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)) and (
        np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating))
    if not real:
        raise DatasetError(f"{path}: x and y must be real numbers (integer or floating point); "
                           f"got {x.dtype}, {y.dtype}")
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


def train_test_split(ds: Dataset, seed: int, test_fraction: float = 0.2) -> tuple[Dataset, Dataset]:
    """A training and a test part of ``ds``, fixed by ``seed``:

    >>> train, test = train_test_split(load_dataset("digits"), seed=0)
    >>> len(train.y), len(test.y)
    (1438, 359)

    The test part is the first round(test_fraction·n) indices of
    ``np.random.default_rng([seed, 0]).permutation(n)``, the training part the rest, each in
    increasing index order. Stream [seed, 0] is one no epoch order draws from (epochs count
    from 1), so the split does not repeat any epoch's samples.
    """
    n = len(ds.y)
    n_test = round(test_fraction * n)
    if not 0 < n_test < n:
        raise DatasetError(f"test_fraction {test_fraction:g} of {n} samples leaves an empty part; "
                           f"choose one that leaves at least one sample on each side")
    perm = np.random.default_rng([seed, 0]).permutation(n)
    parts = []
    for name, idx in (("train", np.sort(perm[n_test:])), ("test", np.sort(perm[:n_test]))):
        note = f"{ds.preprocessing}; {name} part ({len(idx)} of {n} samples, split with seed {seed})"
        parts.append(Dataset(ds.name, ds.x[idx], ds.y[idx], ds.task, ds.n_classes, note))
    return parts[0], parts[1]
