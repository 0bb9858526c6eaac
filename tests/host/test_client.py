"""AcceleratorClient over real sockets, against a protocol-level stub accelerator.

The stub is a ``protocol.channel.Server`` in a thread with a small message limit, so the
chunking of ``load`` is checked by the same receive-side validation a daemon applies.
"""
import dataclasses
import threading

import numpy as np
import pytest

from host.client import AcceleratorClient, Unsupported
from host.datasets import load_dataset
from protocol.channel import AcceleratorError, Server
from protocol.codec import Limits, ProtocolError
from protocol.messages import Ack, Capabilities, EpochReport, LoadData, Recentre, RunEpoch, State

LIMIT = 100_000
LIMITS = Limits(max_message_bytes=LIMIT, max_tensor_bytes=LIMIT)


@pytest.fixture
def stub():
    seen = []

    def handler(msg):
        seen.append(msg)
        if msg.TYPE == "hello":
            return Capabilities(version=[1, 1], backend="stub", formats=[], problems=[], algorithms=[],
                                roundings=[], limits={"max_message_bytes": LIMIT, "max_tensor_bytes": LIMIT,
                                                    "max_frame_bytes": LIMITS.max_frame_bytes,
                                                    "max_frames": LIMITS.max_frames})
        if msg.TYPE == "run_epoch":
            return EpochReport(epoch=msg.epoch, steps=msg.steps, ops={"add": 3}, memory={}, saturations=2)
        if msg.TYPE == "fetch":
            return State(offset=np.array([[1.0, -0.5]]), scale=0.25, offset_format="fixed<1,7>", counters={})
        if msg.TYPE == "promote":
            raise ProtocolError("bad_value", f"offset_format {msg.offset_format} is not supported here")
        return Ack(of=msg.TYPE, info={})

    server = Server("tcp://127.0.0.1:0", limits=LIMITS)
    thread = threading.Thread(target=server.serve, args=(handler,), daemon=True)
    thread.start()
    yield server.address, seen
    with AcceleratorClient(server.address, timeout=5) as c:
        c.hello()
        c.shutdown()
    thread.join(5)
    server.close()


def test_restore_is_not_sent_to_an_accelerator_older_than_1_5(stub):
    address, seen = stub
    state = State(offset=np.zeros((1, 2)), scale=0.25, offset_format="fixed<1,7>", counters={})
    with AcceleratorClient(address, timeout=5) as c:
        c.hello()                                  # the stub speaks 1.1
        with pytest.raises(Unsupported, match="speaks protocol 1.1; restoring its state needs 1.5"):
            c.restore(state)
    assert "restore" not in [m.TYPE for m in seen]


def test_local_steps_are_not_sent_to_an_accelerator_older_than_1_6(stub):
    address, seen = stub
    with AcceleratorClient(address, timeout=5) as c:
        c.hello()                                  # the stub speaks 1.1; a 1.5 one would ignore steps
        with pytest.raises(Unsupported, match="speaks protocol 1.1; net_grad with local steps needs 1.6"):
            c.net_grad(np.zeros(3), np.arange(4, dtype=np.uint32), steps=2, step_size=0.1, epoch=1, first_step=0)
    assert "net_grad" not in [m.TYPE for m in seen]


def test_load_splits_into_chunks_under_the_limit(stub):
    address, seen = stub
    ds = load_dataset("digits")      # 1797 × 65 float64 ≈ 0.9 MB: needs many 100 kB chunks
    with AcceleratorClient(address, timeout=5) as c:
        with pytest.raises(RuntimeError, match="hello"):
            c.load(ds.x, ds.y)
        c.hello()
        chunks = c.load(ds.x, ds.y)
    loads = [m for m in seen if isinstance(m, LoadData)]
    assert chunks == len(loads) > 9
    assert [m.start for m in loads] == list(np.cumsum([0] + [len(m.x) for m in loads[:-1]]))
    assert np.array_equal(np.vstack([m.x for m in loads]), ds.x)
    assert np.array_equal(np.concatenate([m.y for m in loads]), ds.y)
    assert all(m.x.nbytes + m.y.nbytes <= LIMIT for m in loads)


def test_typed_calls_and_errors(stub):
    address, seen = stub
    order = np.arange(6, dtype=np.uint32)
    with AcceleratorClient(address, timeout=5) as c:
        assert c.hello().backend == "stub"
        c.recentre(np.ones((1, 2)), None, scale=0.5)
        report = c.run_epoch("svrg", epoch=3, step_size=0.1, batch_size=2, order=order)
        offset, state = c.offset()
        with pytest.raises(AcceleratorError, match="fixed<1,9> is not supported") as err:
            c.promote("fixed<1,9>")
    assert err.value.code == "bad_value"
    assert report.saturations == 2 and report.ops == {"add": 3}
    run = next(m for m in seen if isinstance(m, RunEpoch))
    assert (run.steps, run.batch_size, run.epoch) == (3, 2, 3)
    assert next(m for m in seen if isinstance(m, Recentre)).scale == 0.5
    np.testing.assert_array_equal(offset, [[0.25, -0.125]])
    assert state.offset_format == "fixed<1,7>"


def _halp_epoch_offset(address, acc_format, anchor, taps):
    """configure, load, recentre with ``anchor``, one svrg epoch; the fetched offset's bytes."""
    rng = np.random.default_rng(4)
    x, y = rng.uniform(-1, 1, (40, 6)), rng.integers(0, 3, 40)
    with AcceleratorClient(address, timeout=30, tap=taps.append) as c:
        c.hello()
        c.configure(problem="softmax", n_samples=40, n_features=6, n_outputs=3, data_format="fixed<2,6>",
                    offset_format="fixed<1,7>", acc_format=acc_format, rounding="stochastic", rbits=0,
                    lanes=4, seed=3, l2=0.01, scale=0.5)
        c.load(x, y.astype(np.float64))
        c.recentre(rng.standard_normal((6, 3)), anchor, 0.5)
        c.run_epoch("svrg", epoch=1, step_size=0.2, batch_size=1, order=np.arange(40, dtype=np.uint32))
        return c.fetch().offset.tobytes()


@pytest.fixture
def daemon_address():
    from accel.daemon import Daemon      # the test plays both ends; host code never imports accel
    server = Server("tcp://127.0.0.1:0")
    daemon = Daemon("emulated")
    thread = threading.Thread(target=server.serve, args=(daemon.handle,), daemon=True)
    thread.start()
    yield server.address
    with AcceleratorClient(server.address, timeout=5) as c:
        c.hello()
        c.shutdown()
    thread.join(5)
    server.close()


def _anchor_dtypes(taps):
    return [t["dtype"] for e in taps if e.direction == "h2a" and e.header["type"] == "recentre"
            for t in e.header["tensors"] if t["name"] == "anchor"]


def test_anchor_terms_go_as_float32_to_an_fp32_accelerator_with_the_same_bits(daemon_address, monkeypatch):
    rng = np.random.default_rng(8)
    p = rng.dirichlet(np.ones(3), 40)              # probabilities that float32 does not hold exactly
    p[0] = [1e-45, 0.5 - 1e-45, 0.5]               # a float32 subnormal, rounded by the cast too
    taps32, taps64, taps_wide = [], [], []
    narrow = _halp_epoch_offset(daemon_address, "fp32", p, taps32)
    monkeypatch.setattr(AcceleratorClient, "_peer_has", lambda self, version: False)   # a 1.2 peer
    wide = _halp_epoch_offset(daemon_address, "fp32", p, taps64)
    monkeypatch.undo()
    _halp_epoch_offset(daemon_address, "fp64", p, taps_wide)
    assert _anchor_dtypes(taps32) == ["<f4"] and _anchor_dtypes(taps64) == ["<f8"]
    assert _anchor_dtypes(taps_wide) == ["<f8"]
    assert narrow == wide


def test_a_convolution_is_not_sent_to_an_accelerator_older_than_1_6(stub):
    address, seen = stub
    net = dict(n_samples=4, weights_format="fp8_ibm", activations_format="fp8_ibm", errors_format="fp8_ibm",
               weight_grads_format="fp16_ibm", acc_format="fp16_ibm", chunk=64, update_format="fp16_ibm",
               rounding="stochastic", rbits=0, lanes=4, seed=0, l2=0.0)
    with AcceleratorClient(address, timeout=5) as c:
        caps = c.hello()
        # what a 1.5 accelerator that runs networks would have answered
        c.capabilities = dataclasses.replace(caps, version=[1, 5], limits={**caps.limits, "max_net_params": 1 << 24})
        with pytest.raises(Unsupported, match="speaks protocol 1.5; a convolution layer needs 1.6 or later"):
            c.configure_net(layers=[["conv3", 1, 6, 8, 8, "relu", 2], [96, 10, "none"]],
                            weights=np.zeros(60 + 970), **net)
        c.configure_net(layers=[[64, 10, "none"]], weights=np.zeros(650), **net)      # a dense one goes
    assert [m.TYPE for m in seen].count("configure_net") == 1
