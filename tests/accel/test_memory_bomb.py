"""The daemon's memory under messages over its limits (docs/protocol.md, "Limits"), against a
real daemon process with the default limits (256 MiB a message, 16 frames, so 16 MiB a frame):

- a frame over the frame limit (ZMQ_MAXMSGSIZE = max_frame_bytes) is cut off before it is
  allocated: 16 frames of 250 MiB, one message of 4 GB, do not move the peak;
- a message over the frame count is refused (``too_large``, naming the whole message), its
  frames dropped as they are taken; the memory goes back at once and the next good request is
  answered;
- an accepted message whose tensors are split over many frames is joined with each frame freed
  once copied: the peak grows by about its size, not twice it.

What the server cannot bound: ZeroMQ holds a multipart message whole before the server sees
any of it, and bounds each frame but not their number, so a message of many frames under the
frame limit costs its size while it arrives (40 frames of 16 MiB: 640 MiB; 1000 would be
16 GB). Only a message of at most ``max_frames`` frames is bounded by ``max_message_bytes``.

The bombs go from one preallocated buffer through a bare DEALER socket without copying, so
this process holds that buffer and nothing more.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zmq

from cosim.launch import AcceleratorProcess
from protocol.channel import AcceleratorError, Client
from protocol.codec import Limits, decode, encode
from protocol.messages import REPLIES, Configure, Error, Fetch, Hello, LoadData

MiB = 1 << 20
LIMIT = Limits().max_message_bytes
FRAME = Limits().max_frame_bytes
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
    if none came within 2 s of a frame over the frame limit (ZeroMQ dropped the connection)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(address)
        sock.send(encode(Fetch(), 1, "bomb")[0], zmq.SNDMORE)
        for i, size in enumerate(sizes):
            sock.send(memoryview(buffer)[:size], zmq.SNDMORE if i < len(sizes) - 1 else 0, copy=False)
        if not sock.poll(2000 if max(sizes) > FRAME else 30_000):
            return None
        return decode(sock.recv_multipart(), types=REPLIES)[1]
    finally:
        sock.close()
        ctx.term()


def peaks(daemon, send) -> tuple[dict, dict]:
    """The daemon's memory before and after ``send()`` and the good requests after it, with
    the peak started again from the first."""
    Path(f"/proc/{daemon.pid}/clear_refs").write_text("5")   # the peak starts again from here
    idle = daemon.memory()
    send()
    good_requests(daemon.address)
    after = daemon.memory()
    assert after["rss"] <= idle["rss"] + SLACK, (idle, after)      # given back at once
    assert daemon.returncode is None
    return idle, after


@pytest.mark.parametrize("sizes,refusal,held", [
    ([FRAME + 1], None, 0),
    ([250 * MiB] * 16, None, 0),
    ([FRAME] * 40, "41 frames, over the limit of 16", 40 * FRAME),
], ids=["a frame over the frame limit", "16 frames of 250 MiB", "40 frames of 16 MiB"])
def test_a_bomb_is_refused_its_memory_given_back_and_the_next_request_answered(daemon, buffer, sizes,
                                                                               refusal, held):
    replies = []
    idle, after = peaks(daemon, lambda: replies.append(throw(daemon.address, buffer, sizes)))
    if refusal is None:
        assert replies == [None]                              # disconnected by ZeroMQ
    else:
        reply, = replies
        assert reply.code == "too_large" and refusal in reply.message and reply.ref == -1
    # held: what ZeroMQ took in whole before the server could count the frames; 0 for a
    # frame over the limit, however large the message (4 GB here), so under idle + LIMIT.
    assert after["peak"] <= idle["peak"] + held + SLACK, (idle, after)


def test_an_accepted_message_of_split_tensors_costs_its_size_once(daemon, buffer):
    """15 frames of 16 MiB (x: 10, y: 5), joined on receipt, then refused by the daemon's own
    state check (load_data before configure), which comes after the whole message is decoded.
    Keeping the frames until both tensors were joined would add another 240 MiB."""
    x = np.frombuffer(buffer, np.float64, count=10 * FRAME // 8).reshape(-1, 2)
    y = np.frombuffer(buffer, np.float64, count=5 * FRAME // 8)

    def send() -> None:
        with Client(daemon.address, timeout=30) as client:
            client.request(Hello(client="large"))
            with pytest.raises(AcceleratorError, match="bad_state: load_data"):
                client.request(LoadData(start=0, x=x, y=y))

    idle, after = peaks(daemon, send)
    size = x.nbytes + y.nbytes
    assert size == 15 * FRAME
    assert after["peak"] <= idle["peak"] + size + FRAME + SLACK, (idle, after)
