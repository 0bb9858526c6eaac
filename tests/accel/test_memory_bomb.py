"""The daemon's memory under messages over its limits (docs/protocol.md, "Limits"), against a
real daemon process with the default limits (256 MiB a message, 16 frames):

- a frame over ZMQ_MAXMSGSIZE is cut off before it is allocated: the peak does not move;
- a message over the frame count or the total size is refused (``too_large``, naming the whole
  message), its frames dropped as they are taken; the memory goes back at once and the next
  good request is answered.

What a message of many frames costs while it arrives is its size: ZeroMQ holds a multipart
message whole before the server sees any of it, and bounds each frame but not their number.
The peaks below are bounded by what was sent (the server adds no copy), not by the limit.

The bombs go from one preallocated buffer through a bare DEALER socket without copying, so
this process holds that buffer and nothing more.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zmq

from cosim.launch import AcceleratorProcess
from protocol.channel import Client
from protocol.codec import Limits, decode, encode
from protocol.messages import REPLIES, Configure, Error, Fetch, Hello

MiB = 1 << 20
LIMIT = Limits().max_message_bytes
# What the daemon's own work may add to its resident memory around a bomb (serving the next
# requests, Python's and ZeroMQ's small allocations): measured at most 1 MiB here.
SLACK = 16 * MiB


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with AcceleratorProcess.start(f"ipc://{tmp_path_factory.mktemp('bomb')}/a.sock") as accel:
        good_requests(accel.address)     # imports and first allocations belong to the idle figure
        yield accel


@pytest.fixture(scope="module")
def buffer():
    return np.ones(LIMIT + 16 * MiB, dtype=np.uint8)


def good_requests(address: str) -> None:
    with Client(address, timeout=20) as client:
        client.request(Hello(client="good"))
        client.request(Configure(problem="linear", n_samples=4, n_features=2, n_outputs=1,
                                 data_format="fixed<2,6>", offset_format="fixed<1,7>", acc_format="fp32",
                                 rounding="nearest_even", rbits=0, lanes=1, seed=0, l2=0.0, scale=1.0))
        assert client.request(Fetch()).offset.shape == (2, 1)


def throw(address: str, buffer: np.ndarray, sizes: list[int]) -> Error | None:
    """A fetch header and frames of ``sizes`` bytes, all views of ``buffer``; the reply, or None
    if none came within 2 s (ZeroMQ dropped the connection)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(address)
        sock.send(encode(Fetch(), 1, "bomb")[0], zmq.SNDMORE)
        for i, size in enumerate(sizes):
            sock.send(memoryview(buffer)[:size], zmq.SNDMORE if i < len(sizes) - 1 else 0, copy=False)
        if not sock.poll(2000 if len(sizes) == 1 else 30_000):
            return None
        return decode(sock.recv_multipart(), types=REPLIES)[1]
    finally:
        sock.close()
        ctx.term()


@pytest.mark.parametrize("sizes,refusal,sent", [
    ([LIMIT + MiB], None, 0),
    ([15 * MiB] * 17, "18 frames, over the limit of 16", 17 * 15 * MiB),
    ([250 * MiB] * 2, "bytes, over the limit of 268435456", 2 * 250 * MiB),
], ids=["a frame over the limit", "17 frames of 15 MiB", "2 frames of 250 MiB"])
def test_a_bomb_is_refused_its_memory_given_back_and_the_next_request_answered(daemon, buffer, sizes,
                                                                               refusal, sent):
    Path(f"/proc/{daemon.pid}/clear_refs").write_text("5")   # the peak starts again from here
    idle = daemon.memory()
    reply = throw(daemon.address, buffer, sizes)
    if refusal is None:
        assert reply is None                                  # disconnected by ZeroMQ
    else:
        assert reply.code == "too_large" and refusal in reply.message and reply.ref == -1
    good_requests(daemon.address)
    after = daemon.memory()
    assert after["peak"] <= idle["peak"] + sent + SLACK, (idle, after)
    assert after["rss"] <= idle["rss"] + SLACK, (idle, after)
    assert daemon.returncode is None
