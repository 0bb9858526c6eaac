"""Data sets: preprocessing, synthetic conditioning and memory, synthetic_softmax, .npz errors,
model pairings."""
import re
import subprocess
import sys

import numpy as np
import pytest

from host.datasets import SOFTMAX_BLOCK_ROWS, DatasetError, load_dataset


def test_digits_default():
    ds = load_dataset()
    assert ds.name == "digits" and ds.x.shape == (1797, 65) and ds.outputs_for("softmax") == 10
    assert np.all(ds.x[:, -1] == 1.0)
    assert np.all(ds.x[:, :-1] * 16 == np.round(ds.x[:, :-1] * 16)) and ds.x.max() == 1.0
    assert set(np.unique(ds.y)) == set(range(10))


@pytest.mark.parametrize("name,task", [("breast_cancer", "binary"), ("diabetes", "regression")])
def test_real_data_max_abs_scaled(name, task):
    ds = load_dataset(name)
    assert ds.task == task
    assert np.max(np.abs(ds.x)) == 1.0
    np.testing.assert_allclose(np.max(np.abs(ds.x[:, :-1]), axis=0), 1.0)
    if task == "regression":
        assert abs(ds.y.mean()) < 1e-12 and ds.y.std() == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["linear", "logistic"])
def test_synthetic_condition_number(kind):
    ds = load_dataset(f"synthetic_{kind}", samples=500, features=8, condition=1000.0, seed=3)
    f = ds.x[:, :-1]
    eig = np.linalg.eigvalsh(f.T @ f / 500)
    assert eig[-1] / eig[0] == pytest.approx(1000.0, rel=1e-8)
    assert np.max(np.abs(f)) == pytest.approx(1.0)
    np.testing.assert_allclose(f.mean(axis=0), 0.0, atol=1e-12)
    again = load_dataset(f"synthetic_{kind}", samples=500, features=8, condition=1000.0, seed=3)
    assert np.array_equal(ds.x, again.x) and np.array_equal(ds.y, again.y)


def test_synthetic_features_are_numpy_qr_construction():
    # The in-place LAPACK QR gives bit for bit what numpy's qr gave (the data sets of earlier runs).
    rng = np.random.default_rng(3)
    g = rng.standard_normal((500, 8))
    g -= g.mean(axis=0)
    u, _ = np.linalg.qr(g)
    v, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    f = u @ (np.sqrt(np.geomspace(1.0, 1e-3, 8) * 500)[:, None] * v.T)
    f /= np.max(np.abs(f))
    ds = load_dataset("synthetic_linear", samples=500, features=8, condition=1000.0, seed=3)
    assert np.array_equal(ds.x[:, :-1], f) and np.all(ds.x[:, -1] == 1.0)


def test_synthetic_generation_memory():
    # Peak memory of the generation in a fresh process, above what the imports took: two
    # n × features arrays at a time (measured 2.2×); numpy's qr held five (5.1×).
    code = ("import resource; from host.datasets import load_dataset; "
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
            "load_dataset('synthetic_linear', samples=200_000, features=50); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)")
    grown_kib = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert grown_kib * 1024 <= 3 * 200_000 * 50 * 8


def test_synthetic_softmax():
    ds = load_dataset("synthetic_softmax", samples=5000, features=30, classes=4, seed=2)
    assert ds.task == "multiclass" and ds.n_classes == 4 and ds.outputs_for("softmax") == 4
    assert ds.x.shape == (5000, 31) and ds.y.shape == (5000,) and ds.y.dtype == np.int64
    assert np.all(ds.x[:, -1] == 1.0)
    pixels = ds.x[:, :-1] * 16          # k/16, k = 0 … 16: exact in fixed<2,6>
    assert np.array_equal(pixels, np.round(pixels)) and pixels.min() == 0 and pixels.max() == 16
    assert np.all(np.bincount(ds.y, minlength=4) > 5000 / 4 / 2)     # no class starved
    again = load_dataset("synthetic_softmax", samples=5000, features=30, classes=4, seed=2)
    assert np.array_equal(ds.x, again.x) and np.array_equal(ds.y, again.y)
    assert not np.array_equal(ds.x, load_dataset("synthetic_softmax", samples=5000, features=30,
                                                 classes=4, seed=3).x)
    # Drawn block by block: a smaller set of whole blocks is a prefix of a larger one.
    block = load_dataset("synthetic_softmax", samples=SOFTMAX_BLOCK_ROWS, features=30, classes=4, seed=2)
    assert np.array_equal(block.x, ds.x[:SOFTMAX_BLOCK_ROWS]) and np.array_equal(block.y, ds.y[:SOFTMAX_BLOCK_ROWS])
    assert load_dataset("synthetic_softmax").x.shape == (1000, 21)
    assert load_dataset("synthetic_softmax").n_classes == 10
    with pytest.raises(DatasetError, match="use softmax"):
        ds.outputs_for("logistic")
    with pytest.raises(DatasetError, match="classes must be an integer >= 2"):
        load_dataset("synthetic_softmax", classes=1)


@pytest.mark.parametrize("name,model,hint", [
    ("diabetes", "softmax", "use linear"),
    ("digits", "logistic", "use softmax"),
    ("breast_cancer", "linear", "use logistic, softmax"),
])
def test_model_mismatch_lists_what_works(name, model, hint):
    with pytest.raises(DatasetError, match=hint):
        load_dataset(name).outputs_for(model)


def test_binary_softmax_has_two_outputs():
    assert load_dataset("breast_cancer").outputs_for("softmax") == 2


def test_unknown_name_lists_choices():
    with pytest.raises(DatasetError, match="digits, digits64, breast_cancer, diabetes"):
        load_dataset("mnist")


def test_digits64_repeats_every_digits_pixel_in_an_8_by_8_block():
    small, big = load_dataset("digits"), load_dataset("digits64")
    assert big.x.shape == (1797, 64 * 64 + 1) and np.array_equal(big.y, small.y)
    images = big.x[:, :-1].reshape(-1, 8, 8, 8, 8)          # sample, block row, row in block, block col, col
    for dy in range(8):
        for dx in range(8):
            assert np.array_equal(images[:, :, dy, :, dx].reshape(-1, 64), small.x[:, :-1])
    assert np.all(big.x[:, -1] == 1.0) and big.task == "multiclass" and big.n_classes == 10


def test_npz_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    good = tmp_path / "mine.npz"
    np.savez(good, x=rng.uniform(-5, 5, (30, 3)), y=rng.integers(0, 3, 30))
    ds = load_dataset(str(good))
    assert ds.task == "multiclass" and ds.x.shape == (30, 4) and np.max(np.abs(ds.x)) == 1.0
    reg = tmp_path / "reg.npz"
    np.savez(reg, x=rng.uniform(size=(30, 3)), y=rng.standard_normal(30))
    assert load_dataset(str(reg)).task == "regression"

    cases = {
        "missing.npz": ({"x": np.ones((3, 2))}, "lacks array\\(s\\) y"),
        "shape.npz": ({"x": np.ones((3, 2)), "y": np.ones(4)}, "need x of shape"),
        "nan.npz": ({"x": np.array([[np.nan, 1.0]]), "y": np.ones(1)}, "NaN"),
    }
    for fname, (arrays, msg) in cases.items():
        np.savez(tmp_path / fname, **arrays)
        with pytest.raises(DatasetError, match=msg):
            load_dataset(str(tmp_path / fname))
    with pytest.raises(DatasetError, match="no such"):
        load_dataset(str(tmp_path / "absent.npz"))


def _bad_npz_files(tmp_path):
    """What users hand over instead of an .npz of x and y, by name."""
    np.savez(tmp_path / "good.npz", x=np.ones((10, 3)), y=np.arange(10) % 2)
    good = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(good[:len(good) // 2])
    (tmp_path / "empty.npz").write_bytes(b"")
    np.save(tmp_path / "array.npy", np.ones(3))
    (tmp_path / "array.npy").rename(tmp_path / "renamed.npz")
    (tmp_path / "text.npz").write_text("x,y\n1,2\n")
    np.savez(tmp_path / "complex.npz", x=np.ones((10, 3)) * (1 + 1j), y=np.arange(10) % 2)
    return {"truncated": "not a readable .npz archive (truncated or another format)", "empty": "is empty",
            "renamed": "a single .npy array, not an .npz archive", "text": "not a readable .npz archive",
            "complex": "must be real numbers (integer or floating point); got complex128"}


def test_unreadable_npz_files_are_named_errors(tmp_path):
    for name, words in _bad_npz_files(tmp_path).items():
        with pytest.raises(DatasetError, match=re.escape(words)):
            load_dataset(str(tmp_path / f"{name}.npz"))
