"""Networks through the channel (protocol 1.5; convolutions 1.6): a real daemon process computes the
low-precision passes of accel/backends/net.py, and the host's mixed, lpsgd and halp (host/deep.py)
reach them only by messages. Each is checked bit for bit against the layer kernel's reference
(accel/spec/layer.py, numpy products) computed here, the cnn against a NetKernel in this process;
bad network requests get errors."""
from __future__ import annotations

import numpy as np
import pytest

from accel.backends import capabilities
from accel.backends.net import NetKernel, layer_of
from accel.numerics import LaneRNG, quantize
from accel.numerics.arith import add
from accel.numerics.rng import wang32
from accel.spec import layer
from cosim.launch import AcceleratorProcess
from host.client import AcceleratorClient
from host.datasets import load_dataset, train_test_split
from host.deep import configure_net, mixed_epoch, one_thread, train_net
from host.nets import Network, kernel_layout, torch_layout
from host.optimizers import epoch_order
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


def test_cnn_mixed_lpsgd_and_halp_through_the_daemon_equal_an_in_process_kernel(acc):
    """The cnn (two 3×3 convolutions with 2×2 max-pools, then dense) for one epoch of three
    B = 4 steps with each accelerator algorithm through the daemon: the weights are those of
    the same steps on a NetKernel in this process, bit for bit."""
    steps, batch, mu = 3, 4, 0.5
    cfg = TrainConfig(model="cnn", algorithms=("mixed", "lpsgd", "halp"), epochs=1, inner_steps=steps,
                      batch_size=batch, recipe="fp8-ibm", seed=SEED, l2=L2, step_size=ALPHA, lanes=4, mu=mu,
                      mu_rule="fixed")
    result = train_net(cfg, acc=acc)
    train, _ = train_test_split(load_dataset("digits"), SEED)
    cnn = Network("cnn", train.x[:, :-1], train.y, n_classes=10, l2=L2, seed=SEED)
    lays, w0 = cnn.layers(), cnn.params()

    def kernel() -> NetKernel:
        k = NetKernel([layer_of(i, lay.kernel_entry(), 64) for i, lay in enumerate(lays)], F,
                      n_samples=cnn.n_samples, lanes=4, seed=SEED, l2=L2, weights=kernel_layout(lays, w0))
        k.load_data(0, cnn.x.numpy(), cnn.y.numpy())
        return k

    order = epoch_order(SEED, 1, cnn.n_samples, steps * batch)
    w, k = w0.copy(), kernel()
    for t in range(steps):
        g = k.gradient(kernel_layout(lays, w), order[t * batch:(t + 1) * batch])[0]
        w -= ALPHA * (torch_layout(lays, g) + L2 * w)
    assert np.array_equal(result.weights["mixed"], w) and not np.array_equal(w, w0)
    k = kernel()
    k.run_epoch(1, steps, ALPHA, batch, order)
    assert np.array_equal(result.weights["lpsgd"], torch_layout(lays, k.weights))
    k, offset = kernel(), FixedFormat(1, 7)
    with one_thread():
        full = cnn.loss_grad(w0)[1]
    scale = float(np.linalg.norm(full)) / (mu * offset.max_value)
    k.recentre(kernel_layout(lays, w0), kernel_layout(lays, full), scale, offset)
    k.run_halp_epoch(1, steps, ALPHA, batch, order)
    assert np.array_equal(result.weights["halp"], w0 + torch_layout(lays, scale * k.halp.offset))
    assert np.count_nonzero(k.halp.offset) > cnn.n_params // 10
    # the first convolution's products per step: B·64 pixels · (9 + 1) · 6 forward and for ΔW,
    # B·64 · 54 for its δX (computed, dropped)
    mixed = next(r for r in result.records if (r.algorithm, r.epoch) == ("mixed", 1))
    conv1 = batch * 64 * (10 * 6 * 2 + 54)
    conv2 = batch * 16 * (55 * 16 * 2 + 144 * 6)
    assert mixed.ops["mul fp8_ibm*fp8_ibm"] == steps * (conv1 + conv2 + 3 * batch * 65 * 10)


def test_bad_convolution_entries_get_bad_value_and_the_daemon_serves_on(acc, net):
    conv1, conv2, dense = ["conv3", 1, 6, 8, 8, "relu", 2], ["conv3", 6, 16, 4, 4, "relu", 2], [64, 10, "none"]
    for layers, match in (
            ([["conv3", 1, 6, 8, 8, "relu", 3], conv2, dense], r"layers\[0\] must be \['conv3', in_channels"),
            ([conv1, ["conv3", 6, 16, 4, 4, "sigmoid", 2], dense], r"layers\[1\] must be \['conv3'"),
            ([["conv3", 1, 6, 8, 7, "relu", 2], conv2, dense], "needs an even height and width; got 8×7"),
            ([conv1, ["conv3", 6, 16, 2, 8, "relu", 2], dense], "layer 1 takes 6×2×8 images; layer 0 gives 6×4×4"),
            ([conv1, conv2, [96, 10, "none"]], "layer 2 has fan_in 96; layer 1 has fan_out 64"),
            ([conv1, ["conv3", 6, 10, 4, 4, "none", 1]], "the last layer must be dense")):
        _refused(acc, _configure(net, layers=layers), "bad_value", match)
    cnn = Network("cnn", net.x.numpy(), net.y.numpy(), n_classes=10, l2=0.0, seed=SEED)
    w = kernel_layout(cnn.layers(), cnn.params())
    acc._client.request(_configure(net, layers=[conv1, conv2, dense], weights=w))
    acc.load(net.x.numpy(), net.y.numpy())
    reply = acc.net_grad(w, np.arange(2, dtype=np.uint32))
    assert reply.grad.shape == (1590,) and np.count_nonzero(reply.grad[:60]) > 30     # the first conv's ΔW


def local_round(net: Network, w: np.ndarray, idx: np.ndarray, k: int, epoch: int, first: int) -> np.ndarray:
    """G of a round of k local steps from float64 ``w`` (kernel layout) by the spec functions: the
    copy R_u(w), k reference gradients at Q_w of it summed in float64, an LP-SGD update (the decay
    in the weight-gradient format, weight_update) after each but the last, its words from
    LaneRNG(seed ⊕ (wang32(first) << 32), epoch, lanes)."""
    rng, lam = LaneRNG(SEED ^ (wang32(first) << 32), epoch, 4), quantize(L2, F.update)
    copy, b, total = split(net, quantize(w, F.update)), len(idx) // k, None
    for j in range(k):
        grads = reference_grad(net, copy, idx[j * b:(j + 1) * b])
        total = flat(grads) if total is None else total + flat(grads)
        if j < k - 1:
            for i, g in enumerate(grads):
                g = add(g, quantize(lam * copy[i], F.weight_grads), F.weight_grads, "nearest_even")
                copy[i], _ = layer.weight_update(copy[i], g, ALPHA, F, rng=rng)
    return total


def test_mixed_with_local_steps_matches_the_layer_kernel_bit_for_bit(acc, net):
    """sync_every K = 4 on ten B = 2 steps: rounds of 4, 4 and 2 steps, three messages; each
    round's G (local LP-SGD steps on a fp16_ibm copy, stochastic rounding from the round's own
    stream) and the host's w ← w − α(G + kλw) equal the spec functions' here, bit for bit."""
    w0 = net.params()
    configure_net(acc, net, w0, _settings())
    order, layers = np.arange(200, 220, dtype=np.uint32), net.layers()
    got, cost = mixed_epoch(acc, net, w0, order, ALPHA, 2, sync_every=4, epoch=3)
    w = w0.copy()
    for first, k in ((0, 4), (4, 4), (8, 2)):
        G = local_round(net, kernel_layout(layers, w), order[2 * first:2 * (first + k)], k, 3, first)
        w -= ALPHA * (torch_layout(layers, G) + (k * L2) * w)
    assert np.array_equal(got, w) and cost["messages"] == 3
    n = net.n_params
    # every step's passes (3·B products per parameter), an update after all but each round's last step
    assert cost["ops"]["mul fp8_ibm*fp8_ibm"] == 10 * 3 * 2 * n and cost["ops"]["rng bits"] == (3 + 3 + 1) * 32 * n
    assert cost["ops"]["add fp64"] == (3 + 3 + 1) * n and cost["memory"]["gradient sum write"] == 10 * 8 * n
    assert cost["host_ops"] == {"mul fp64": 3 * 2 * n + 3, "add fp64": 3 * 2 * n}
    # the local updates matter, each round has its own stream, and the master weights are untouched
    kw = dict(weights=kernel_layout(layers, w0), batch=order[:8], steps=4, step_size=ALPHA, epoch=3)
    g0, g4 = acc.net_grad(**kw, first_step=0).grad, acc.net_grad(**kw, first_step=4).grad
    at_w0 = [flat(reference_grad(net, split(net, quantize(kw["weights"], F.update)), order[2 * j:2 * j + 2]))
             for j in range(4)]
    assert np.array_equal(g0, local_round(net, kw["weights"], order[:8], 4, 3, 0))
    assert not np.array_equal(g0, g4) and not np.array_equal(g0, at_w0[0] + at_w0[1] + at_w0[2] + at_w0[3])
    assert np.array_equal(acc.fetch_net().weights, quantize(kernel_layout(layers, w0), F.update))


def test_bad_local_steps_get_errors_and_the_daemon_serves_on(acc, net):
    w0 = net.params()
    configure_net(acc, net, w0, _settings())
    w, idx = kernel_layout(net.layers(), w0), np.arange(12, dtype=np.uint32)
    _refused(acc, NetGrad(weights=w, batch=idx, steps=5, step_size=ALPHA, epoch=1, first_step=0), "bad_value",
             "net_grad.batch: 12 indices are not a multiple of steps = 5")
    _refused(acc, NetGrad(weights=w, batch=idx, steps=4, epoch=1, first_step=0), "missing_field",
             r"net_grad.step_size: required when steps > 1 \(steps = 4\)")
    _refused(acc, NetGrad(weights=w, batch=idx, steps=4, step_size=ALPHA, first_step=0), "missing_field",
             "net_grad.epoch: required when steps > 1")
    # still serving; steps = 1 is today's gradient, whatever else comes with it
    plain = acc.net_grad(w, idx)
    one = acc._client.request(NetGrad(weights=w, batch=idx, steps=1, step_size=ALPHA, epoch=1, first_step=0))
    assert np.array_equal(one.grad, plain.grad) and one.ops == plain.ops and one.memory == plain.memory


# ---- recipes with chosen formats ----------------------------------------------------------------

def _lpsgd(acc, recipe: str) -> np.ndarray:
    cfg = TrainConfig(model="mlp:8", algorithms=("lpsgd",), epochs=1, inner_steps=20, batch_size=4, seed=SEED,
                      l2=L2, recipe=recipe)
    return train_net(cfg, acc=acc).weights["lpsgd"]


def test_a_recipe_with_overrides_sends_those_formats(acc):
    # the preset's name and the same formats spelled as overrides are the same configure_net
    assert _lpsgd(acc, "fp8-ibm:chunk=0").tobytes() == _lpsgd(acc, "fp8-ibm-nochunk").tobytes()
    ocp = _lpsgd(acc, "fp8-ibm:weights=e4m3fn,activations=e4m3fn,errors=e5m2")
    assert not np.array_equal(ocp, _lpsgd(acc, "fp8-ibm"))
    assert np.array_equal(quantize(ocp, "fp16_ibm"), ocp)          # the master weights: the update format's
    # a round-to-nearest update is the recipe's too: no stochastic bits, so lanes do not matter
    assert not np.array_equal(_lpsgd(acc, "fp8-ibm:rounding=nearest_even"), _lpsgd(acc, "fp8-ibm"))


def test_a_recipe_the_accelerator_cannot_run_is_refused_before_the_first_epoch(acc):
    with pytest.raises(AcceleratorError) as err:
        _lpsgd(acc, "fp8-ibm:weights=fp32")
    assert err.value.code == "bad_value" and "weights" in err.value.message
