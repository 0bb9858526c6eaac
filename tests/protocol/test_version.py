"""Protocol versions (major, minor): 1.0 to 1.6 peers talk both ways (progress only
between 1.2 and later peers), a 1.7 peer's additions are ignored by a 1.6 receiver, another major is
refused, malformed versions are refused; a 1.5 client splits a tensor over the frame limit only
for a 1.5 server, and a 1.5 server cuts off an older client's frame over it.
Conversations run over real ZeroMQ sockets (ipc), with the channel's Client and Server or, to
send what our own encoder never would, a bare DEALER or ROUTER socket."""
from __future__ import annotations

import itertools
import tempfile
import threading
from contextlib import contextmanager

import msgpack
import numpy as np
import pytest
import zmq

from protocol import messages as m
from protocol.channel import AcceleratorGone, Client, Server, TapEvent
from protocol.codec import Limits, ProtocolError, check_version, decode, encode, read_envelope
from protocol.messages import PROTOCOL_VERSION, REQUESTS

from peer import Peer

SESSION = "sess-v"
CAPS = m.Capabilities(version=list(PROTOCOL_VERSION), backend="echo", formats=[], problems=[],
                      algorithms=[], roundings=[], limits={})
STATE = m.State(offset=np.arange(6.0).reshape(3, 2), scale=0.5, offset_format="fixed<1,7>",
                counters={})
X, Y = np.arange(8.0).reshape(2, 4), np.array([0.0, 1.0])
# What a 1.7 peer might add: an optional body field and an optional tensor.
EXTRA_BODY = {"compression": "none"}
EXTRA_TENSORS = {"mask": np.array([1, 0], dtype="<u1")}

# ipc paths must stay under ~100 characters, so not pytest's tmp_path; removed at exit.
_IPC_DIR = tempfile.TemporaryDirectory(prefix="cosim-")
_ipc_names = itertools.count()


def _ipc() -> str:
    return f"ipc://{_IPC_DIR.name}/v{next(_ipc_names)}.sock"


def _reply_to(msg: m.Message) -> m.Message:
    if isinstance(msg, m.Hello):
        return CAPS
    if isinstance(msg, m.Fetch):
        return STATE
    return m.Ack(msg.TYPE, {"rows": int(msg.x.shape[0])} if isinstance(msg, m.LoadData) else {})


@contextmanager
def serving(version=PROTOCOL_VERSION, progress: bool = False, limits: Limits = Limits()):
    """A Server speaking ``version`` with ``limits`` in a thread, reporting progress on every
    request but hello if ``progress``; yields (server, requests seen, taps, thread)."""
    seen: list[m.Message] = []
    taps: list[TapEvent] = []
    server = Server(_ipc(), version=version, tap=taps.append, limits=limits)
    stop = threading.Event()

    def handler(msg: m.Message) -> m.Message:
        seen.append(msg)
        if progress and not isinstance(msg, m.Hello):
            server.progress({"seen": len(seen)})
        return _reply_to(msg)

    thread = threading.Thread(target=server.serve, args=(handler,),
                              kwargs={"poll_ms": 20, "should_stop": stop.is_set}, daemon=True)
    thread.start()
    try:
        yield server, seen, taps, thread
    finally:
        stop.set()
        thread.join(5)
        server.close()


def _frames(msg: m.Message, seq: int, v, body: dict | None = None,
            tensors: dict | None = None, session: str = SESSION) -> list:
    """``msg`` encoded, then its header's ``v`` set to ``v`` (any value) and ``body`` fields and
    ``tensors`` added that the message type does not have: what a peer of another version sends."""
    frames = [bytes(f) for f in encode(msg, seq, session)]
    header = msgpack.unpackb(frames[0])
    header["v"] = v
    header["body"].update(body or {})
    for name, arr in (tensors or {}).items():
        frames.append(arr.tobytes())
        header["tensors"].append({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape),
                                  "frame": len(frames) - 1})
    frames[0] = msgpack.packb(header)
    return frames


@contextmanager
def raw_accelerator(v, body: dict | None = None, tensors: dict | None = None):
    """A bare ROUTER socket answering every request with the right reply, sent with ``v`` in its
    header and ``body`` / ``tensors`` added; yields its address."""
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    address = _ipc()
    sock.bind(address)
    stop = threading.Event()

    def answer() -> None:
        while not stop.is_set():
            if not sock.poll(20):
                continue
            ident, *frames = sock.recv_multipart()
            env, request = decode(frames, types=REQUESTS)
            sock.send_multipart([ident, *_frames(_reply_to(request), env.seq, v, body, tensors,
                                                 session=env.session)])

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield address
    finally:
        stop.set()
        thread.join(5)
        sock.close()


# ---- the header's "v" ------------------------------------------------------------------

def test_header_carries_major_minor_and_a_bare_1_reads_as_1_0():
    assert PROTOCOL_VERSION == (1, 6)
    assert msgpack.unpackb(encode(m.Fetch(), 1, "s")[0])["v"] == [1, 6]
    assert msgpack.unpackb(encode(m.Fetch(), 1, "s", version=(1, 0))[0])["v"] == [1, 0]
    assert read_envelope(_frames(m.Fetch(), 1, 1)).version == (1, 0)
    assert read_envelope(_frames(m.Fetch(), 1, [1, 7])).version == (1, 7)
    assert read_envelope(_frames(m.Fetch(), 1, [1, 1]), version=(1, 0)).version == (1, 1)


def test_the_local_version_argument_is_checked():
    assert check_version([1, 0]) == (1, 0)
    for bad in (1, (1,), (1, 1, 0), (1, -1), (True, 1), ("1", "1"), "1.1"):
        with pytest.raises(ValueError, match=r"\(major, minor\), two non-negative ints"):
            check_version(bad)
    with pytest.raises(ValueError, match="two non-negative ints"):
        Client(_ipc(), version=1)
    with pytest.raises(ValueError, match="two non-negative ints"):
        Server(_ipc(), version=(1, -1))
    with Client(_ipc(), version=[1, 0]) as client:
        assert client.version == (1, 0)


MALFORMED = ["1.1", [1, 1, 0], [1], [], [-1, 1], [1, -1], [True, 1], [1, False], True, 1.0,
             [1.0, 1], None, {"major": 1, "minor": 1}, b"\x01\x01", 0, 2, -1]


@pytest.mark.parametrize("v", MALFORMED, ids=repr)
def test_malformed_versions_are_bad_version_naming_the_value_and_ours(v):
    with pytest.raises(ProtocolError) as err:
        decode(_frames(m.Fetch(), 2, v))
    assert err.value.code == "bad_version"
    assert err.value.message == (f"protocol version {v!r} is not [major, minor] (two non-negative "
                                 "ints; a bare 1 means 1.0); this side speaks 1.6")


def test_a_header_without_v_is_malformed():
    header = msgpack.unpackb(encode(m.Fetch(), 2, "s")[0])
    del header["v"]
    with pytest.raises(ProtocolError, match="malformed: header has no protocol version 'v'"):
        decode([msgpack.packb(header)])


# ---- 1.0 to 1.6 talk both ways ----------------------------------------------------------

# Every pair of the minors so far, and ours with a later one (1.7) this code does not know.
PAIRS = [*itertools.permutations([(1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (1, 5), (1, 6)], 2),
         ((1, 6), (1, 7)), ((1, 7), (1, 6))]


@pytest.mark.parametrize("client_v,server_v", PAIRS, ids=lambda v: f"{v[0]}.{v[1]}")
def test_peers_of_one_major_talk_both_ways(client_v, server_v):
    client_taps: list[TapEvent] = []
    got: list[m.Progress] = []
    with serving(server_v, progress=True) as (server, seen, server_taps, _):
        with Client(server.address, session=SESSION, version=client_v,
                    tap=client_taps.append) as client:
            assert client.request(m.Hello(client="old" if client_v < server_v else "new")) == CAPS
            assert client.request(m.LoadData(start=0, x=X, y=Y),
                                  on_progress=got.append) == m.Ack("load_data", {"rows": 2})
            state = client.request(m.Fetch(), on_progress=got.append)   # a tensor in the reply
            assert np.array_equal(state.offset, STATE.offset) and state.scale == 0.5
    assert np.array_equal(seen[1].x, X) and np.array_equal(seen[1].y, Y)  # a tensor in the request
    # Progress flows only when both ends know it: a server sends none to an older requester,
    # and a server playing an older version sends none at all.
    both_know_progress = min(client_v, server_v) >= m.Progress.SINCE
    assert got == ([m.Progress("load_data", {"seen": 2}), m.Progress("fetch", {"seen": 3})]
                   if both_know_progress else [])
    assert [e.header["type"] for e in client_taps if e.direction == "a2h"] == (
        ["capabilities", "progress", "ack", "progress", "state"] if both_know_progress
        else ["capabilities", "ack", "state"])
    # Between 1.4 or later ends, the client's close() ends the session with a bye.
    says_bye = min(client_v, server_v) >= m.Bye.SINCE
    assert [type(s) for s in seen] == [m.Hello, m.LoadData, m.Fetch, *[m.Bye] * says_bye]
    assert [e.header["v"] for e in server_taps if e.direction == "h2a"] == [list(client_v)] * len(seen)
    assert {tuple(e.header["v"]) for e in client_taps if e.direction == "a2h"} == {server_v}


def test_a_1_0_peer_sending_a_bare_1_and_a_1_6_server_talk_both_ways():
    with serving(progress=True) as (server, seen, _, _):
        old = Peer(server.address, version=(1, 0))   # Peer.ask: the very next message is the reply
        try:
            env, caps = old.ask(_frames(m.Hello(client="1.0"), 1, 1))
            assert caps == CAPS and env.version == PROTOCOL_VERSION and env.seq == 1
            env, ack = old.ask(_frames(m.LoadData(start=0, x=X, y=Y), 2, 1))
            assert ack == m.Ack("load_data", {"rows": 2})
            env, state = old.ask(_frames(m.Fetch(), 3, 1))
            assert np.array_equal(state.offset, STATE.offset) and env.seq == 3
        finally:
            old.close()
    assert [type(s) for s in seen] == [m.Hello, m.LoadData, m.Fetch]
    assert np.array_equal(seen[1].x, X)


def test_a_1_5_client_reads_replies_of_a_1_0_accelerator_sending_a_bare_1():
    with raw_accelerator(1) as address, Client(address, session=SESSION) as client:
        assert client.request(m.Hello(client="new")) == CAPS
        assert np.array_equal(client.request(m.Fetch()).offset, STATE.offset)


# ---- tensors over the frame limit (1.5) ---------------------------------------------------

SMALL = Limits(max_message_bytes=16 << 10)              # frames of at most 1 KiB
BIG_X, BIG_Y = np.arange(1000.0).reshape(250, 4), np.arange(250.0)   # 8000 and 2000 bytes


@pytest.mark.parametrize("server_v,limits,sizes", [
    ((1, 5), SMALL, [1024] * 7 + [832] + [1024, 976]),
    ((1, 4), Limits(), [8000, 2000]),
], ids=["1.5 server", "1.4 server"])
def test_a_1_5_client_splits_a_tensor_over_the_frame_limit_only_for_a_1_5_server(server_v, limits,
                                                                                sizes):
    # CAPS reports no max_frame_bytes: the client splits at its own limits' frame size.
    with serving(server_v, limits=limits) as (server, seen, taps, _):
        with Client(server.address, session=SESSION, limits=SMALL) as client:
            assert client.request(m.Hello(client="1.5")) == CAPS
            assert client.request(m.LoadData(start=0, x=BIG_X, y=BIG_Y)) == m.Ack("load_data",
                                                                                  {"rows": 250})
    load = next(e for e in taps if e.header["type"] == "load_data")
    assert [len(f) for f in load.frames] == sizes
    assert seen[1].x.tobytes() == BIG_X.tobytes() and seen[1].y.tobytes() == BIG_Y.tobytes()


def test_a_1_5_server_cuts_off_an_older_clients_frame_over_the_limit_and_serves_the_next():
    with serving(limits=SMALL) as (server, seen, _, thread):
        with Client(server.address, session=SESSION, version=(1, 4), timeout=5) as client:
            assert client.request(m.Hello(client="1.4")) == CAPS
            assert client.request(m.LoadData(start=0, x=X, y=Y)) == m.Ack("load_data", {"rows": 2})
            with pytest.raises(AcceleratorGone):
                client.request(m.LoadData(start=0, x=BIG_X, y=BIG_Y))   # one frame of 8000 bytes
        with Client(server.address, session=SESSION, version=(1, 4)) as client:
            assert client.request(m.Hello(client="1.4")) == CAPS
        assert thread.is_alive() and [type(s) for s in seen] == [m.Hello, m.LoadData, m.Hello, m.Bye]


# ---- a higher minor's additions ----------------------------------------------------------

def test_a_1_6_server_ignores_what_a_1_7_peer_adds_and_validates_the_rest():
    with serving() as (server, seen, _, thread):
        newer = Peer(server.address)
        try:
            _, caps = newer.ask(_frames(m.Hello(client="1.7"), 1, [1, 7], {"trace_id": "abc"},
                                        EXTRA_TENSORS))
            assert caps == CAPS
            _, ack = newer.ask(_frames(m.LoadData(start=0, x=X, y=Y), 2, [1, 7], EXTRA_BODY,
                                       EXTRA_TENSORS))
            assert ack == m.Ack("load_data", {"rows": 2})
            assert np.array_equal(seen[-1].x, X) and np.array_equal(seen[-1].y, Y)

            def refused(frames: list, seq: int, code: str, text: str) -> None:
                _, reply = newer.ask(frames)
                assert isinstance(reply, m.Error), reply
                assert (reply.code, reply.ref) == (code, seq) and text in reply.message, reply

            # Every field the receiver knows is still checked, with the additions present.
            refused(_frames(m.LoadData(start=-1, x=X, y=Y), 3, [1, 7], EXTRA_BODY, EXTRA_TENSORS),
                    3, "bad_value", "load_data.start: -1 is below the minimum 0")
            refused(_frames(m.LoadData(start=0, x=X.astype("<i4"), y=Y), 4, [1, 7], EXTRA_BODY,
                            EXTRA_TENSORS), 4, "bad_dtype", "load_data.x: dtype '<i4'")
            refused(_frames(m.LoadData(start=0, x=X, y=Y), 5, [1, 7], {"x": [1.0]}),
                    5, "extra_field", "load_data.x: is a tensor and travels as a frame")
            missing_y = _frames(m.LoadData(start=0, x=X, y=Y), 6, [1, 7], EXTRA_BODY,
                                EXTRA_TENSORS)
            header = msgpack.unpackb(missing_y[0])
            header["tensors"] = [t for t in header["tensors"] if t["name"] != "y"]
            header["tensors"][-1]["frame"] = 2
            refused([msgpack.packb(header), missing_y[1], missing_y[3]], 6, "missing_field",
                    "load_data.y: required tensor is missing")
            # An unknown tensor still needs a well-formed entry and a frame of its own.
            shared = _frames(m.Fetch(), 7, [1, 7], tensors=EXTRA_TENSORS)
            header = msgpack.unpackb(shared[0])
            header["tensors"].append({**header["tensors"][0], "name": "mask2"})
            refused([msgpack.packb(header), shared[1]], 7, "malformed", "frame index 1")
            refused(_frames(m.Fetch(), 8, [1, 7], tensors=EXTRA_TENSORS)[:1], 8, "malformed",
                    "frame index 1")
            _, state = newer.ask(_frames(m.Fetch(), 9, [1, 7], EXTRA_BODY))
            assert isinstance(state, m.State)
        finally:
            newer.close()
        assert thread.is_alive()


@pytest.mark.parametrize("v", [[1, 6], [1, 5], [1, 4], [1, 3], [1, 2], [1, 1], [1, 0], 1],
                         ids=["1.6", "1.5", "1.4", "1.3", "1.2", "1.1", "1.0", "bare 1"])
def test_the_same_additions_from_a_peer_of_the_same_or_a_lower_minor_are_extra_fields(v):
    with serving() as (server, _, _, _):
        peer = Peer(server.address)
        try:
            assert peer.ask(_frames(m.Hello(client="x"), 1, v))[1] == CAPS
            _, reply = peer.ask(_frames(m.LoadData(start=0, x=X, y=Y), 2, v, EXTRA_BODY))
            assert reply.code == "extra_field" and "load_data.compression: is not a field" in reply.message
            _, reply = peer.ask(_frames(m.LoadData(start=0, x=X, y=Y), 3, v, tensors=EXTRA_TENSORS))
            assert reply.code == "extra_field" and "load_data.mask: not a tensor field" in reply.message
            _, ack = peer.ask(_frames(m.LoadData(start=0, x=X, y=Y), 4, v))
            assert ack == m.Ack("load_data", {"rows": 2})
        finally:
            peer.close()


def test_a_1_6_client_ignores_what_a_1_7_accelerator_adds_to_a_reply():
    with raw_accelerator([1, 7], {"spec_notes": "new in 1.7"}, EXTRA_TENSORS) as address:
        with Client(address, session=SESSION) as client:
            assert client.request(m.Hello(client="1.6")) == CAPS
            assert np.array_equal(client.request(m.Fetch()).offset, STATE.offset)
    for v in ([1, 6], [1, 5], [1, 4], [1, 3], [1, 2], [1, 1]):
        with raw_accelerator(v, {"spec_notes": "not in 1.6"}) as address:
            with Client(address, session=SESSION) as client:
                with pytest.raises(ProtocolError) as err:
                    client.request(m.Hello(client="1.6"))
                assert err.value.code == "extra_field" and "capabilities.spec_notes" in err.value.message


def test_codec_rules_without_a_socket():
    newer = _frames(m.LoadData(start=0, x=X, y=Y), 2, [1, 7], EXTRA_BODY, EXTRA_TENSORS)
    env, msg = decode(newer)
    assert env.version == (1, 7) and np.array_equal(msg.x, X)
    with pytest.raises(ProtocolError, match="extra_field: load_data.compression"):
        decode(newer, version=(1, 7))                       # to a 1.7 receiver: same minor
    missing = _frames(m.LoadData(start=0, x=X, y=Y), 2, [1, 7], EXTRA_BODY)
    header = msgpack.unpackb(missing[0])
    del header["body"]["start"]
    with pytest.raises(ProtocolError, match="missing_field: load_data.start"):
        decode([msgpack.packb(header), *missing[1:]])
    header = msgpack.unpackb(newer[0])
    header["tensors"][2]["name"] = ["unhashable"]
    with pytest.raises(ProtocolError, match="malformed: load_data: tensor name"):
        decode([msgpack.packb(header), *newer[1:]])


# ---- another major -----------------------------------------------------------------------

def test_another_major_gets_bad_version_naming_both_and_the_server_keeps_serving():
    with serving() as (server, seen, _, thread):
        other = Peer(server.address)
        try:
            for v, text in (([2, 0], "2.0"), ([0, 9], "0.9")):
                env, reply = other.ask(_frames(m.Hello(client="other major"), 1, v))
                assert isinstance(reply, m.Error) and reply.code == "bad_version"
                assert reply.message == (f"protocol version {text}; this side speaks 1.6 "
                                         "(majors must match)")
                assert reply.ref == -1 and env.version == PROTOCOL_VERSION
        finally:
            other.close()
        # Our own Client speaking 2.0: refused, and the 1.6 error reply is refused in turn.
        with Client(server.address, version=(2, 0), timeout=5) as client:
            with pytest.raises(ProtocolError) as err:
                client.request(m.Hello(client="2.0"))
            assert err.value.code == "bad_version"
            assert err.value.message == "protocol version 1.6; this side speaks 2.0 (majors must match)"
        with Client(server.address, session=SESSION) as client:
            assert client.request(m.Hello(client="1.5")) == CAPS
            assert isinstance(client.request(m.Fetch()), m.State)
        assert thread.is_alive() and [type(s) for s in seen] == [m.Hello, m.Fetch, m.Bye]


def test_a_1_5_client_refuses_a_reply_of_another_major():
    with raw_accelerator([2, 0]) as address, Client(address, session=SESSION) as client:
        with pytest.raises(ProtocolError) as err:
            client.request(m.Hello(client="1.5"))
        assert (err.value.code, err.value.message) == (
            "bad_version", "protocol version 2.0; this side speaks 1.6 (majors must match)")


@pytest.mark.parametrize("v", [[1, 1, 0], [-1, 1], "1.1", [True, 1]], ids=repr)
def test_malformed_versions_over_a_socket_get_an_error_reply(v):
    with serving() as (server, _, _, thread):
        peer = Peer(server.address)
        try:
            _, reply = peer.ask(_frames(m.Hello(client="x"), 1, v))
            assert reply.code == "bad_version" and f"protocol version {v!r} is not" in reply.message
            assert peer.ask(_frames(m.Hello(client="x"), 1, [1, 1]))[1] == CAPS
        finally:
            peer.close()
        assert thread.is_alive()
