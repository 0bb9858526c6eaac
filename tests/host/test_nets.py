"""Network specs, layers, initialisation and float64 autograd gradients (host/nets.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from host.datasets import load_dataset
from host.deep import one_thread
from host.nets import Layer, NetSpec, Network, parse_spec


@pytest.mark.parametrize("text, spec", [("mlp:128", NetSpec("mlp", (128,))),
                                        ("mlp:256,128", NetSpec("mlp", (256, 128))),
                                        ("mlp:1,2,3", NetSpec("mlp", (1, 2, 3))),
                                        ("cnn", NetSpec("cnn"))])
def test_good_specs_parse_and_print_back(text, spec):
    assert parse_spec(text) == spec
    assert str(spec) == text


@pytest.mark.parametrize("text", ["mlp", "mlp:", "mlp:0", "mlp:128,", "mlp:,128", "mlp:-8", "mlp:1.5",
                                  "mlp: 128", "MLP:128", "mlp:064", "cnn:8", "resnet", ""])
def test_bad_specs_name_what_is_accepted(text):
    with pytest.raises(ValueError) as err:
        parse_spec(text)
    message = str(err.value)
    assert repr(text) in message and "mlp:W1[,W2,...]" in message and "cnn" in message


def _tiny(spec: str, n_inputs: int, seed: int = 3) -> Network:
    rng = np.random.default_rng(seed)
    x = rng.random((7, n_inputs))
    return Network(spec, x, rng.integers(0, 3, 7), n_classes=3, l2=0.1, seed=seed)


def _central_difference(net: Network, w: np.ndarray, h: float = 1e-6) -> np.ndarray:
    g = np.empty_like(w)
    for k in range(len(w)):
        e = np.zeros_like(w)
        e[k] = h
        g[k] = (net.loss(w + e) - net.loss(w - e)) / (2 * h)
    return g


@pytest.mark.parametrize("spec, n_inputs", [("mlp:5,4", 6), ("cnn", 16)])
def test_autograd_gradient_matches_central_differences(spec, n_inputs):
    """Relative error ≤ 1e-6 (measured: 1e-9 to 5e-9); the gradient without its λw term,
    off by 0.1·w, is far outside that (0.56), so the check would catch a wrong gradient."""
    net = _tiny(spec, n_inputs)
    w = net.params() + 0.05 * np.random.default_rng(1).standard_normal(net.n_params)   # biases non-zero too
    with one_thread():                 # 2000 tiny evaluations: idle torch threads would dominate
        g = net.grad(w)
        fd = _central_difference(net, w)
    assert np.linalg.norm(g - fd) / np.linalg.norm(fd) <= 1e-6
    wrong = g - net.l2 * w
    assert np.linalg.norm(wrong - fd) / np.linalg.norm(fd) > 1e-3


def test_minibatch_loss_and_gradient_are_those_of_the_chosen_samples():
    """f_B over idx = [2, 2, 5] is the mean over those rows (a repeat counts twice)."""
    net = _tiny("mlp:4", 6)
    w = net.params()
    sub = Network("mlp:4", net.x.numpy()[[2, 2, 5]], net.y.numpy()[[2, 2, 5]], n_classes=3, l2=0.1, seed=3)
    idx = np.array([2, 2, 5], dtype=np.uint32)
    assert net.loss(w, idx) == sub.loss(w) != net.loss(w)
    assert np.array_equal(net.grad(w, idx), sub.grad(w))
    value, g = net.loss_grad(w, idx)
    assert value == net.loss(w, idx) and np.array_equal(g, net.grad(w, idx))


def test_params_round_trip_bit_for_bit_and_set_params_drives_the_module():
    net = _tiny("mlp:5,4", 6)
    v = np.random.default_rng(7).standard_normal(net.n_params) * np.logspace(-300, 300, net.n_params)
    net.set_params(v)
    assert net.params().tobytes() == v.tobytes()
    kept = v.copy()
    v[:] = 0.0                                     # the module holds its own copy
    assert net.params().tobytes() == kept.tobytes()
    w = np.random.default_rng(8).standard_normal(net.n_params)
    net.set_params(w)
    with torch.no_grad():
        direct = torch.nn.functional.cross_entropy(net.module(net.x), net.y) + 0.05 * float(w @ w)
    assert net.loss(w) == pytest.approx(float(direct), rel=1e-15)


def test_initialisation_is_he_uniform_from_the_seed():
    x, y = load_dataset("digits").x[:, :-1], load_dataset("digits").y
    a = Network("mlp:64,32", x, y, n_classes=10, l2=0.0, seed=11)
    b = Network("mlp:64,32", x, y, n_classes=10, l2=0.0, seed=11)
    c = Network("mlp:64,32", x, y, n_classes=10, l2=0.0, seed=12)
    assert a.params().tobytes() == b.params().tobytes()
    assert not np.array_equal(a.params(), c.params())
    for m, layer in zip([m for m in a.module if isinstance(m, torch.nn.Linear)], a.layers(), strict=True):
        bound = math.sqrt(6.0 / layer.fan_in)
        w = m.weight.detach().numpy()
        assert w.dtype == np.float64 and 0.95 * bound < np.abs(w).max() <= bound
        assert abs(w.mean()) < 0.05 * bound and not m.bias.detach().numpy().any()
    f32 = Network("mlp:64,32", x, y, n_classes=10, l2=0.0, seed=11, dtype=torch.float32)
    assert np.array_equal(f32.params(), a.params().astype(np.float32))


def test_mlp_layers_describe_the_module():
    ds = load_dataset("digits")
    net = Network("mlp:256,128", ds.x[:, :-1], ds.y, n_classes=10, l2=0.0, seed=0)
    assert net.layers() == [Layer("dense", (64,), (256,), 64, 256, "relu"),
                            Layer("dense", (256,), (128,), 256, 128, "relu"),
                            Layer("dense", (128,), (10,), 128, 10, "none")]
    assert net.n_params == sum(layer.n_params for layer in net.layers()) == 64 * 256 + 256 + 256 * 128 + 128 + 1290


def test_cnn_forward_shape_and_parameter_count():
    ds = load_dataset("digits")
    net = Network("cnn", ds.x[:, :-1], ds.y, n_classes=10, l2=0.0, seed=0)
    assert net.layers() == [Layer("conv", (1, 8, 8), (6, 4, 4), 9, 6, "relu", pool=2),
                            Layer("conv", (6, 4, 4), (16, 2, 2), 54, 16, "relu", pool=2),
                            Layer("dense", (64,), (10,), 64, 10, "none")]
    assert net.n_params == 60 + 880 + 650 == 1590
    with torch.no_grad():
        assert net.module(net.x[:5]).shape == (5, 10)
    assert net.grad(net.params(), np.arange(4)).shape == (1590,)


def test_cnn_refuses_inputs_that_are_not_square_images():
    ds = load_dataset("digits")
    with pytest.raises(ValueError, match=r"square images .* got 65 inputs"):
        Network("cnn", ds.x, ds.y, n_classes=10, l2=0.0, seed=0)


def test_accuracy_counts_argmax_hits():
    net = _tiny("mlp:4", 6)
    w = net.params()
    x = np.random.default_rng(5).random((50, 6))
    with torch.no_grad():
        predicted = net.module(torch.from_numpy(x)).argmax(dim=1).numpy()
    y = predicted.copy()
    y[:10] = (y[:10] + 1) % 3                      # ten wrong labels
    assert net.accuracy(w, x, y) == 0.8
