"""AcceleratorClient over real sockets, against a protocol-level stub accelerator.

The stub is a ``protocol.channel.Server`` in a thread with a small message limit, so the
chunking of ``load`` is checked by the same receive-side validation a daemon applies.
"""
import threading

import numpy as np
import pytest

from host.client import AcceleratorClient
from host.datasets import load_dataset
from protocol.channel import AcceleratorError, Server
from protocol.codec import Limits, ProtocolError
from protocol.messages import Ack, Capabilities, EpochReport, LoadData, Recentre, RunEpoch, State

LIMIT = 100_000


@pytest.fixture
def stub():
    seen = []

    def handler(msg):
        seen.append(msg)
        if msg.TYPE == "hello":
            return Capabilities(version=[1, 1], backend="stub", formats=[], problems=[], algorithms=[],
                                roundings=[], limits={"max_message_bytes": LIMIT, "max_tensor_bytes": LIMIT})
        if msg.TYPE == "run_epoch":
            return EpochReport(epoch=msg.epoch, steps=msg.steps, ops={"add": 3}, memory={}, saturations=2)
        if msg.TYPE == "fetch":
            return State(offset=np.array([[1.0, -0.5]]), scale=0.25, offset_format="fixed<1,7>", counters={})
        if msg.TYPE == "promote":
            raise ProtocolError("bad_value", f"offset_format {msg.offset_format} is not supported here")
        return Ack(of=msg.TYPE, info={})

    server = Server("tcp://127.0.0.1:0", limits=Limits(max_message_bytes=LIMIT, max_tensor_bytes=LIMIT))
    thread = threading.Thread(target=server.serve, args=(handler,), daemon=True)
    thread.start()
    yield server.address, seen
    with AcceleratorClient(server.address, timeout=5) as c:
        c.hello()
        c.shutdown()
    thread.join(5)
    server.close()


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
