"""Networks through the channel (protocol 1.5): a real daemon process computes the low-precision
passes of accel/backends/net.py, and the host's mixed, lpsgd and halp (host/deep.py) reach them only
by messages. Each is checked bit for bit against the layer kernel's reference
(accel/spec/layer.py, numpy products) computed here; bad network requests get errors."""
from __future__ import annotations

import numpy as np
import pytest

from accel.backends import capabilities
from accel.numerics import LaneRNG, quantize
from accel.numerics.arith import add
from accel.spec import layer
from cosim.launch import AcceleratorProcess
from host.client import AcceleratorClient
from host.datasets import load_dataset, train_test_split
from host.deep import configure_net, mixed_epoch, train_net
from host.nets import Network, kernel_layout, torch_layout
from host.recipes import RECIPES as HOST_RECIPES
from host.train import TrainConfig, check_capabilities
from protocol.capabilities import CapabilityError
from protocol.channel import AcceleratorError
from protocol.formats import FixedFormat
from protocol.messages import ConfigureNet, Fetch, FetchNet, LoadData, NetGrad, RecentreNet, RunEpoch, RunNetEpoch

F = layer.RECIPES["fp8-ibm"]
SEED, L2, ALPHA = 3, 1e-3, 0.05


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with AcceleratorProcess.start(f"ipc://{tmp_path_factory.mktemp('net')}/a.sock") as accel:
        yield accel


@pytest.fixture
def acc(daemon):
    with AcceleratorClient(daemon.address, timeout=60) as client:
        client.hello()
        yield client


@pytest.fixture(scope="module")
def net():
    train, _ = train_test_split(load_dataset("digits"), SEED)
    return Network("mlp:8", train.x[:, :-1], train.y, n_classes=10, l2=L2, seed=SEED)


def _settings(**kw):
    return {"recipe": "fp8-ibm", "lanes": 4, "seed": SEED, "l2": L2, **kw}


def reference_grad(net: Network, Ws: list[np.ndarray], idx: np.ndarray) -> list[np.ndarray]:
    """ΔW per layer by accel/spec/layer.py with its numpy products, biases as a ones column."""
    a = quantize(net.x.numpy()[idx], F.activations)
    y = net.y.numpy()[idx]
    ins, zs = [], []
    for i, W in enumerate(Ws):
        ins.append(np.hstack([a, np.ones((len(idx), 1))]))
        zs.append(layer.dense_forward(ins[-1], quantize(W, F.weights), F))
        a = layer.relu_forward(zs[-1]) if i < len(Ws) - 1 else zs[-1]
    delta = layer.softmax_xent_backward(layer.softmax_xent_forward(a, y, F).probs, y, F)
    grads = [None] * len(Ws)
    for i in reversed(range(len(Ws))):
        if i < len(Ws) - 1:
            delta = layer.relu_backward(zs[i], delta)
        dx, grads[i] = layer.dense_backward(ins[i], quantize(Ws[i], F.weights), delta, F)
        delta = dx[:, :-1]
    return grads


def split(net: Network, v: np.ndarray) -> list[np.ndarray]:
    out, at = [], 0
    for lay in net.layers():
        out.append(v[at:at + lay.n_params].reshape(lay.fan_in + 1, lay.fan_out))
        at += lay.n_params
    return out


def test_host_recipes_are_the_accelerators():
    for name, r in HOST_RECIPES.items():
        f = layer.RECIPES[name]
        assert layer.LayerFormats(r["weights"], r["activations"], r["errors"], r["weight_grads"], r["acc"],
                                  chunk=r["chunk"], update=r["update"], update_rounding=r["rounding"]) == f


def test_layouts_are_inverse_and_put_the_bias_last(net):
    w = net.params()
    v = kernel_layout(net.layers(), w)
    assert np.array_equal(torch_layout(net.layers(), v), w)
    first = net.layers()[0]
    W = v[:first.n_params].reshape(first.fan_in + 1, first.fan_out)
    weight = net.module[0].weight.detach().numpy()
    assert np.array_equal(W[:-1], weight.T) and np.array_equal(W[-1], net.module[0].bias.detach().numpy())


def test_mixed_steps_match_the_layer_kernel_bit_for_bit(acc, net):
    """Three mixed steps of B = 4 through the daemon; the same steps here with the reference
    gradient and numpy's float64 update give the same weights, bit for bit."""
    w0 = net.params()
    configure_net(acc, net, w0, _settings())
    order = np.arange(100, 112, dtype=np.uint32)
    got, cost = mixed_epoch(acc, net, w0, order, ALPHA, 4)
    w = w0.copy()
    for t in range(3):
        g = reference_grad(net, split(net, kernel_layout(net.layers(), w)), order[4 * t:4 * t + 4])
        w -= ALPHA * (torch_layout(net.layers(), np.concatenate([x.ravel() for x in g])) + L2 * w)
    assert np.array_equal(got, w) and not np.array_equal(got, w0)
    assert cost["messages"] == 3 and cost["message_bytes"] > 3 * 2 * 8 * net.n_params
    # per step and layer B·(fan_in+1)·fan_out products forward, twice that backward (δX and ΔW)
    assert cost["ops"]["mul fp8_ibm*fp8_ibm"] == 3 * 3 * 4 * net.n_params
    assert cost["memory"]["weights read"] == 3 * 2 * net.n_params      # one byte each, forward and backward
    # the gradient itself holds weight-gradient values, and is the reference's
    reply = acc.net_grad(kernel_layout(net.layers(), w0), order[:4])
    ref = np.concatenate([x.ravel() for x in reference_grad(net, split(net, kernel_layout(net.layers(), w0)),
                                                            order[:4])])
    assert np.array_equal(reply.grad, ref) and np.array_equal(quantize(reply.grad, F.weight_grads), reply.grad)


def test_lpsgd_epoch_matches_the_layer_kernel_bit_for_bit(acc, net):
    """An epoch of five B = 2 steps on the accelerator's master weights (stochastic rounding,
    λ decay in the weight-gradient format) equals the reference's update, bit for bit."""
    w0 = net.params()
    configure_net(acc, net, w0, _settings())
    order = np.arange(7, 17, dtype=np.uint32)
    report = acc.run_net_epoch(epoch=2, step_size=ALPHA, batch_size=2, order=order)
    got = acc.fetch_net().weights
    rng, lam = LaneRNG(SEED, 2, 4), quantize(L2, F.update)
    masters = split(net, quantize(kernel_layout(net.layers(), w0), F.update))
    for t in range(5):
        grads = reference_grad(net, masters, order[2 * t:2 * t + 2])
        for i, g in enumerate(grads):
            g = add(g, quantize(lam * masters[i], F.weight_grads), F.weight_grads, "nearest_even")
            masters[i], _ = layer.weight_update(masters[i], g, ALPHA, F, rng=rng)
    assert np.array_equal(got, np.concatenate([m.ravel() for m in masters]))
    assert report.steps == 5 and report.ops["rng bits"] == 5 * 32 * net.n_params


def test_halp_epoch_matches_the_layer_kernel_bit_for_bit(acc, net):
    """Three B = 2 HALP steps on the accelerator's offset (two passes each, at Q_w(w̃ + z) and
    Q_w(w̃), the decay λz, stochastic rounding onto fixed<1,7>) equal the same steps computed
    here with the reference passes, bit for bit; fetch_net carries the offset and its scale,
    and the master weights are left alone."""
    w0 = net.params()
    configure_net(acc, net, w0, _settings())
    layers, fmt = net.layers(), FixedFormat(1, 7)
    anchor, full = kernel_layout(layers, w0), kernel_layout(layers, net.loss_grad(w0)[1])
    scale = float(np.linalg.norm(full)) / fmt.max_value       # μ = 1: a range of ±‖g̃‖
    acc.recentre_net(anchor, full, scale, "fixed<1,7>")
    order = np.arange(30, 36, dtype=np.uint32)
    report = acc.run_net_epoch(epoch=4, step_size=ALPHA, batch_size=2, order=order, algorithm="halp")
    state = acc.fetch_net()
    rng, q = LaneRNG(SEED, 4, 4), np.zeros(net.n_params)
    for t in range(3):
        idx, z = order[2 * t:2 * t + 2], scale * q
        v = flat(reference_grad(net, split(net, anchor + z), idx)) - flat(reference_grad(net, split(net, anchor), idx))
        q = add(q, -((ALPHA / scale) * (v + L2 * z + full)), fmt, "stochastic", rng=rng)
    assert np.array_equal(state.offset, q) and np.count_nonzero(q) > net.n_params // 10
    assert state.scale == scale and state.offset_format == "fixed<1,7>"
    assert np.array_equal(state.weights, quantize(anchor, F.update))
    # two passes per step, each B·(fan_in+1)·fan_out products forward and twice that backward
    assert report.steps == 3 and report.ops["mul fp8_ibm*fp8_ibm"] == 3 * 2 * 3 * 2 * net.n_params
    assert report.ops["rng bits"] == 3 * 32 * net.n_params and report.ops["round fixed<1,7> stochastic"] == 3 * net.n_params
    assert report.memory["anchor read"] == (3 + 1) * 8 * net.n_params and report.memory["offset write"] == 3 * net.n_params
    # a second recentre starts the offset at 0 again
    acc.recentre_net(anchor, full, scale, "fixed<1,7>")
    assert not np.any(acc.fetch_net().offset)


def flat(grads: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([g.ravel() for g in grads])


def _refused(acc, msg, code: str, match: str) -> None:
    with pytest.raises(AcceleratorError, match=match) as err:
        acc._client.request(msg)
    assert err.value.code == code


def _configure(net: Network, **change) -> ConfigureNet:
    fields = dict(layers=[[64, 8, "relu"], [8, 10, "none"]], n_samples=net.n_samples, weights_format="fp8_ibm",
                  activations_format="fp8_ibm", errors_format="fp8_ibm", weight_grads_format="fp16_ibm",
                  acc_format="fp16_ibm", chunk=64, update_format="fp16_ibm", rounding="stochastic", rbits=0,
                  lanes=4, seed=0, l2=0.0, weights=kernel_layout(net.layers(), net.params()))
    return ConfigureNet(**{**fields, **change})


def test_bad_network_requests_get_errors_and_the_daemon_serves_on(acc, net):
    w, idx = kernel_layout(net.layers(), net.params()), np.arange(4, dtype=np.uint32)
    acc.configure(problem="softmax", n_samples=10, n_features=3, n_outputs=2, data_format="fixed<2,6>",
                  offset_format="fixed<1,7>", acc_format="fp32", rounding="stochastic", rbits=0, lanes=4,
                  seed=0, l2=0.0, scale=1.0)
    _refused(acc, NetGrad(weights=w, batch=idx), "bad_state", "net_grad needs configure_net first")
    for change, code, match in (
            (dict(layers=[[64, 8, "relu"], [9, 10, "none"]]), "bad_value", "layer 1 has fan_in 9"),
            (dict(layers=[[64, 8, "tanh"], [8, 10, "none"]]), "bad_value", r"layers\[0\] must be"),
            (dict(layers=[[64, 8, "relu"], [8, 10, "relu"]]), "bad_value", "the last layer 'none'"),
            (dict(layers=[]), "bad_value", "1 to 64 layers"),
            (dict(weights=w[:-1]), "bad_shape", "weights has shape"),
            (dict(weights_format="fp32"), "bad_value", "layer weights format fp32"),
            (dict(acc_format="fixed<4,4>"), "bad_value", "accumulator must be a float format")):
        _refused(acc, _configure(net, **change), code, match)
    acc._client.request(_configure(net))
    _refused(acc, NetGrad(weights=w, batch=idx), "bad_state", r"needs all 1438 rows loaded first \(0 of 1438")
    _refused(acc, Fetch(), "bad_state", "fetch needs configure first: this session is configured for a network")
    x, y = net.x.numpy(), net.y.numpy()
    _refused(acc, RecentreNet(anchor=w, full_grad=w, scale=0.5, offset_format="fixed<1,7>"), "bad_state",
             r"recentre_net needs all 1438 rows loaded first")
    _refused(acc, LoadData(start=0, x=x[:, :5], y=y), "bad_shape", "x has shape")
    _refused(acc, LoadData(start=0, x=x, y=np.full(len(y), 10)), "bad_value", "labels must be integers 0..9")
    acc.load(x, y)
    _refused(acc, NetGrad(weights=w[:10], batch=idx), "bad_shape", "weights has shape")
    _refused(acc, NetGrad(weights=w, batch=np.array([5000], dtype=np.uint32)), "bad_value", "outside 0..1437")
    _refused(acc, NetGrad(weights=w, batch=np.zeros(300_000, dtype=np.uint32)), "too_large",
             "a minibatch of 300000 samples takes 19500000 values")
    _refused(acc, RunNetEpoch(epoch=1, steps=2, step_size=0.1, batch_size=2, order=idx[:3]), "bad_shape",
             "order has shape")
    _refused(acc, RunNetEpoch(epoch=1, steps=2, step_size=0.1, batch_size=2, order=idx, algorithm="halp"),
             "bad_state", "run_net_epoch with algorithm halp needs recentre_net first")
    assert acc.fetch_net().offset is None
    for change, code, match in (
            (dict(anchor=w[:-1]), "bad_shape", "anchor has shape"),
            (dict(full_grad=w[:5]), "bad_shape", "full_grad has shape"),
            (dict(offset_format="fp8_ibm"), "bad_value", "offset_format must be a signed fixed format"),
            (dict(offset_format="fixed<2,16>"), "bad_value", "of at most 16 bits; got fixed<2,16>")):
        _refused(acc, RecentreNet(**{**dict(anchor=w, full_grad=w, scale=0.5, offset_format="fixed<1,7>"), **change}),
                 code, match)
    _refused(acc, RunEpoch(algorithm="sgd", epoch=1, steps=1, step_size=0.1, batch_size=1, order=idx[:1]),
             "bad_state", "configured for a network")
    assert acc.net_grad(w, idx).grad.shape == w.shape      # still serving, state kept
    assert acc._client.request(FetchNet()).update_format == "fp16_ibm"


def test_a_backend_without_networks_is_refused_before_the_run():
    assert "max_net_params" not in capabilities("rtl").limits
    with pytest.raises(CapabilityError, match="the rtl backend does not run networks"):
        check_capabilities(capabilities("rtl"), {"model": "mlp:32"})
    check_capabilities(capabilities("emulated"), {"model": "mlp:32"})


def test_cnn_is_refused_on_the_accelerator_algorithms():
    with pytest.raises(ValueError, match="the accelerator runs dense networks"):
        train_net(TrainConfig(model="cnn", algorithms=("mixed",)))
