"""Every protocol-level validation rule, over a real socket: bad message → error reply naming
the problem → a good message on the same connection still succeeds."""
from __future__ import annotations

import tempfile
import threading
from typing import Callable

import msgpack
import numpy as np
import pytest

from protocol import messages as m
from protocol.channel import Server
from protocol.codec import Limits, ProtocolError, encode

from peer import SESSION, Peer

LIMITS = Limits(max_message_bytes=1 << 20, max_tensor_bytes=64 << 10, max_header_bytes=4096,
                max_frames=4)


def echo(msg: m.Message) -> m.Message:
    """A stand-in daemon: answers every request; promote and recentre exercise handler errors."""
    if isinstance(msg, m.Hello):
        return m.Capabilities([1, 1], "echo", [], [], [], [], {})
    if isinstance(msg, m.Fetch):
        return m.State(np.arange(6.0).reshape(3, 2), 0.5, "fixed<1,7>", {})
    if isinstance(msg, m.Promote):
        raise ProtocolError("bad_state", "promote before configure")
    if isinstance(msg, m.Recentre):
        raise ZeroDivisionError("scale of a zero gradient")
    return m.Ack(msg.TYPE, {"rows": int(msg.x.shape[0])} if isinstance(msg, m.LoadData) else {})


def _serve(address: str):
    server = Server(address, limits=LIMITS)
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(echo,),
                              kwargs={"poll_ms": 20, "should_stop": stop.is_set}, daemon=True)
    thread.start()
    return server, stop, thread


@pytest.fixture(scope="module", params=["tcp", "ipc"])
def address(request):
    if request.param == "tcp":
        server, stop, thread = _serve("tcp://127.0.0.1:0")
    else:  # ipc paths must stay under ~100 characters, so not pytest's tmp_path
        tmp = tempfile.TemporaryDirectory(prefix="cosim-")
        server, stop, thread = _serve(f"ipc://{tmp.name}/accel.sock")
    yield server.address
    stop.set()
    thread.join(5)
    server.close()
    if request.param == "ipc":
        tmp.cleanup()


@pytest.fixture
def peer(address):
    p = Peer(address)
    env, caps = p.send(m.Hello(client="test"), 1)
    assert isinstance(caps, m.Capabilities) and env.seq == 1 and env.session == SESSION
    yield p
    p.close()


def _header(mtype: str, body: dict, tensors: list | None = None, seq: int = 2, **over) -> bytes:
    h = {"v": [1, 1], "type": mtype, "seq": seq, "session": SESSION, "body": body,
         "tensors": tensors or []}
    h.update(over)
    return msgpack.packb(h)


CONFIGURE = dict(problem="softmax", n_samples=10, n_features=4, n_outputs=3,
                 data_format="fixed<4,4>", offset_format="fixed<1,7>", acc_format="fixed<8,24>",
                 rounding="stochastic", rbits=0, lanes=4, seed=0, l2=0.01, scale=0.001)


def _configure(**changes) -> list:
    return encode(m.Configure(**{**CONFIGURE, **changes}), 2, SESSION)


def _configure_body(**changes) -> list:
    body = {**CONFIGURE, **changes}
    return [_header("configure", {k: v for k, v in body.items() if v is not ...})]


def _load(x=None, y=None, **entry_changes) -> list:
    x = np.ones((2, 4)) if x is None else x
    y = np.zeros(2) if y is None else y
    frames = encode(m.LoadData(start=0, x=x, y=y), 2, SESSION)
    if entry_changes:
        h = msgpack.unpackb(frames[0])
        h["tensors"][0].update(entry_changes)
        frames[0] = msgpack.packb(h)
    return frames


def _x_entry(dtype="<f8", shape=(2, 4), frame=1) -> dict:
    return {"name": "x", "dtype": dtype, "shape": list(shape), "frame": frame}


def _y_entry(frame=2) -> dict:
    return {"name": "y", "dtype": "<f8", "shape": [2], "frame": frame}


_X, _Y = np.ones((2, 4)).tobytes(), np.zeros(2).tobytes()

# (rule, frames of the bad request sent as seq 2, expected code, text the message must contain)
CASES: list[tuple[str, Callable[[], list], str, str]] = [
    ("not msgpack", lambda: [b"\xc1\x00garbage"], "malformed", "not msgpack"),
    ("header not a map", lambda: [msgpack.packb([1, "fetch"])], "malformed", "not a map"),
    ("header key missing", lambda: [msgpack.packb({"v": [1, 1], "type": "fetch", "seq": 2})],
     "malformed", "missing ['session', 'body', 'tensors']"),
    ("header key extra", lambda: [_header("fetch", {}, colour="red")], "malformed", "extra ['colour']"),
    ("seq not an int", lambda: [_header("fetch", {}, seq="2")], "malformed", "'seq'"),
    ("msgpack extension type", lambda: [msgpack.packb({"v": [1, 1], "x": msgpack.ExtType(1, b"a")})],
     "malformed", "extension"),
    ("no version", lambda: [msgpack.packb({"type": "fetch", "seq": 2})], "malformed", "no protocol version"),
    ("another major", lambda: [_header("fetch", {}, v=[2, 0])], "bad_version",
     "protocol version 2.0; this side speaks 1.6 (majors must match)"),
    ("bare int version other than 1", lambda: [_header("fetch", {}, v=2)], "bad_version",
     "protocol version 2 is not [major, minor]"),
    ("bool version", lambda: [_header("fetch", {}, v=True)], "bad_version", "True"),
    ("str version", lambda: [_header("fetch", {}, v="1.1")], "bad_version", "'1.1' is not [major, minor]"),
    ("unknown type", lambda: [_header("frobnicate", {})], "unknown_type", "'frobnicate'"),
    ("reply type sent as request", lambda: [_header("ack", {"of": "x", "info": {}})],
     "unknown_type", "'ack'"),
    ("progress sent as request", lambda: [_header("progress", {"of": "x", "info": {}})],
     "unknown_type", "'progress'"),
    ("missing field", lambda: _configure_body(lanes=...), "missing_field", "configure.lanes"),
    ("extra field", lambda: _configure_body(colour="red"), "extra_field", "configure.colour"),
    ("tensor sent in the body", lambda: [_header("fetch", {"offset": [1.0]})], "extra_field",
     "fetch.offset"),
    ("unknown tensor", lambda: [_header("fetch", {}, [_x_entry(frame=1)]), _X], "extra_field",
     "fetch.x"),
    ("missing tensor", lambda: [_header("load_data", {"start": 0}, [_x_entry()]), _X],
     "missing_field", "load_data.y"),
    ("bool is not int", lambda: _configure(lanes=True), "bad_type", "configure.lanes"),
    ("str for int", lambda: _configure(lanes="4"), "bad_type", "configure.lanes"),
    ("str for float", lambda: _configure(l2="0.01"), "bad_type", "configure.l2"),
    ("int for str", lambda: encode(m.Promote(offset_format=5), 2, SESSION), "bad_type",
     "promote.offset_format: int 5, expected str"),
    ("nil for a required field", lambda: _configure(seed=None), "bad_type", "configure.seed"),
    ("int below minimum", lambda: _configure(lanes=0), "bad_value",
     "configure.lanes: 0 is below the minimum 1"),
    ("int above maximum", lambda: _configure(rbits=33), "bad_value", "configure.rbits: 33 is above"),
    ("float not positive", lambda: _configure(scale=0.0), "bad_value", "configure.scale: 0.0 must be > 0"),
    ("not among choices", lambda: _configure(rounding="sideways"), "bad_value",
     "configure.rounding: 'sideways' is not one of"),
    ("unparsable format", lambda: _configure(data_format="fixed<9>"), "bad_value",
     "configure.data_format"),
    ("NaN scalar", lambda: _configure(l2=float("nan")), "not_finite", "configure.l2"),
    ("Inf scalar", lambda: _configure(scale=float("inf")), "not_finite", "configure.scale"),
    ("NaN in a tensor", lambda: _load(x=np.array([[0.0, np.nan, 0, 0], [0, 0, 0, 0]])),
     "not_finite", "load_data.x"),
    ("Inf in a tensor", lambda: _load(y=np.array([0.0, np.inf])), "not_finite", "load_data.y"),
    ("wrong dtype", lambda: _load(x=np.ones((2, 4), dtype="<i4")), "bad_dtype",
     "load_data.x: dtype '<i4'"),
    ("object dtype", lambda: _load(dtype="|O"), "bad_dtype", "'|O'"),
    ("big-endian dtype", lambda: _load(dtype=">f8"), "bad_dtype", "'>f8'"),
    ("wrong rank", lambda: [_header("load_data", {"start": 0}, [_x_entry(shape=(8,)), _y_entry()]),
                            _X, _Y], "bad_shape", "load_data.x: shape [8] is 1-D, expected 2-D"),
    ("frame shorter than shape", lambda: _load(shape=[3, 4]), "malformed", "load_data.x: frame 1"),
    ("negative dimension", lambda: _load(shape=[-2, 4]), "malformed", "load_data.x"),
    ("frame index out of range", lambda: _load(frame=7), "malformed", "load_data.x: frame index 7"),
    ("frame used twice", lambda: _load(frame=2), "malformed", "frame index 2"),
    ("stray frame", lambda: [_header("fetch", {}), b"extra"], "malformed", "1 tensor frames"),
    ("tensor over the limit", lambda: _load(x=np.ones((100, 100))), "too_large",
     "load_data.x: shape [100, 100] of <f8 is 80000 bytes"),
    ("declared 10^12 elements", lambda: _load(shape=[10**6, 10**6]), "too_large", "load_data.x"),
    ("too many frames", lambda: [_header("fetch", {})] + [b""] * 4, "too_large", "5 frames"),
    ("far too many frames", lambda: [_header("fetch", {})] + [b"x"] * 39, "too_large",
     "40 frames, over the limit of 4"),
    ("header over the limit", lambda: _configure_body(colour="x" * 5000), "too_large", "header of"),
    ("handler's protocol error", lambda: encode(m.Promote(offset_format="fixed<1,7>"), 2, SESSION),
     "bad_state", "promote before configure"),
    ("handler crash", lambda: encode(m.Recentre(full_grad=np.zeros((4, 3))), 2, SESSION),
     "internal", "ZeroDivisionError: scale of a zero gradient"),
]

# Requests whose header could not be read do not consume a sequence number.
NOT_CONSUMING = {"malformed", "bad_version", "too_large"}


@pytest.mark.parametrize("rule,build,code,text", CASES, ids=[c[0] for c in CASES])
def test_bad_request_gets_an_error_naming_it_and_the_server_keeps_serving(peer, rule, build, code, text):
    env, reply = peer.ask(build())
    assert isinstance(reply, m.Error), reply
    assert reply.code == code and text in reply.message, reply
    envelope_read = not (code in NOT_CONSUMING and reply.ref == -1)
    assert reply.ref == (2 if envelope_read else -1)
    # A request rejected after its envelope was read consumed seq 2; one whose header was
    # unreadable consumed nothing.
    next_seq = 3 if envelope_read else 2
    env, state = peer.send(m.Fetch(), next_seq)
    assert isinstance(state, m.State) and env.seq == next_seq
    assert np.array_equal(state.offset, np.arange(6.0).reshape(3, 2))
    _, ack = peer.send(m.LoadData(start=0, x=np.ones((5, 4)), y=np.zeros(5)), next_seq + 1)
    assert ack == m.Ack("load_data", {"rows": 5})


def test_error_reply_echoes_seq_and_session(peer):
    env, reply = peer.send(m.Configure(**{**CONFIGURE, "lanes": 0}), 2)
    assert (env.seq, env.session, reply.ref) == (2, SESSION, 2)


@pytest.mark.parametrize("seq", [1, 2, 5], ids=["duplicate-hello-seq", "repeat", "skip"])
def test_out_of_order_sequence_is_rejected_and_does_not_consume_a_number(peer, seq):
    peer.send(m.Fetch(), 2)
    _, reply = peer.send(m.Fetch(), seq)
    assert reply.code == "bad_sequence" and "expected 3" in reply.message
    _, reply = peer.send(m.Fetch(), 3)
    assert isinstance(reply, m.State)


def test_request_before_hello_is_bad_session_then_hello_opens_it():
    with tempfile.TemporaryDirectory(prefix="cosim-") as tmp:
        server, stop, thread = _serve(f"ipc://{tmp}/fresh.sock")    # no session open yet
        p = Peer(server.address)
        try:
            _, reply = p.send(m.Fetch(), 1)
            assert reply.code == "bad_session" and "before hello" in reply.message
            _, reply = p.send(m.Hello(client="late"), 1)
            assert isinstance(reply, m.Capabilities)
            _, reply = p.send(m.Fetch(), 2)
            assert isinstance(reply, m.State)
        finally:
            p.close()
            stop.set()
            thread.join(5)
            server.close()


def test_other_session_id_is_bad_session_naming_the_owner_but_not_its_id(peer):
    _, reply = peer.send(m.Fetch(), 2, session="intruder")
    assert reply.code == "bad_session" and "'intruder'" in reply.message
    assert "the accelerator is in use by 'test' (idle " in reply.message
    assert SESSION not in reply.message       # the session id is the owner's credential
    _, reply = peer.send(m.Fetch(), 2)
    assert isinstance(reply, m.State)


def test_hello_needs_a_session_id_and_seq_1(peer):
    _, reply = peer.send(m.Hello(client="x"), 1, session="")
    assert reply.code == "bad_session" and "non-empty" in reply.message
    _, reply = peer.send(m.Hello(client="x"), 4, session="new")
    assert reply.code == "bad_sequence" and "seq 1" in reply.message
    _, reply = peer.send(m.Hello(client=5), 1, session="new")
    assert reply.code == "bad_type" and "hello.client" in reply.message
    _, reply = peer.send(m.Fetch(), 2)          # rejected hellos left the old session open
    assert isinstance(reply, m.State)


def test_another_sessions_hello_is_busy_and_the_session_carries_on(peer):
    peer.send(m.Fetch(), 2)
    for session, client in (("sess-2", "again"), ("sess-2", "test"), (SESSION, "another")):
        _, reply = peer.send(m.Hello(client=client), 1, session=session)
        assert reply.code == "busy" and reply.message.startswith("the accelerator is in use by 'test' (idle ")
    _, reply = peer.send(m.Fetch(), 3)
    assert isinstance(reply, m.State)
    _, reply = peer.send(m.Hello(client="test"), 1)    # its own id and client: reopened
    assert isinstance(reply, m.Capabilities)
    _, reply = peer.send(m.Fetch(), 2)
    assert isinstance(reply, m.State)


def test_a_session_is_its_id_not_its_connection(address, peer):
    other = Peer(address)
    try:
        _, reply = other.send(m.Fetch(), 2)     # the session's id and next seq: a reconnected host
        assert isinstance(reply, m.State)
    finally:
        other.close()
    _, reply = peer.send(m.Fetch(), 2)
    assert reply.code == "bad_sequence" and "expected 3" in reply.message
    _, reply = peer.send(m.Fetch(), 3)
    assert isinstance(reply, m.State)


def test_frame_over_zmq_maxmsgsize_disconnects_only_that_peer(address):
    big = Peer(address)
    big.send(m.Hello(client="test"), 1)        # the session's own id and client: reopened
    big.sock.send_multipart([_header("fetch", {}), b"\0" * (LIMITS.max_frame_bytes + 1)])
    assert not big.sock.poll(300)              # no reply: ZeroMQ dropped the connection
    big.close()
    p = Peer(address)
    try:
        _, reply = p.send(m.Hello(client="test"), 1)
        assert isinstance(reply, m.Capabilities)
    finally:
        p.close()
