"""Client and Server lifetimes: tcp/ipc/inproc, taps, timeouts, progress, lost accelerators,
vanished clients."""
from __future__ import annotations

import itertools
import re
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
import zmq

from protocol import messages as m
from protocol.channel import (AcceleratorError, AcceleratorGone, AcceleratorTimeout, Client,
                              Server, TapEvent)
from protocol.codec import ProtocolError, encode, read_envelope
from protocol.messages import PROTOCOL_VERSION

CAPS = m.Capabilities([1, 1], "echo", ["fixed"], ["linear"], ["sgd"], ["stochastic"], {"max_frames": 16})


def handler(msg: m.Message) -> m.Message:
    if isinstance(msg, m.Hello):
        return CAPS
    if isinstance(msg, m.RunEpoch):
        time.sleep(float(msg.step_size))     # a slow request, for vanishing clients
        return m.EpochReport(msg.epoch, msg.steps, {"mul": 1}, {}, 0)
    if isinstance(msg, m.Fetch):
        return m.State(np.full((2, 1), 0.25), 2.0**-7, "fixed<1,7>", {"epochs": 0})
    if isinstance(msg, m.Promote):
        return m.Fetch() if msg.offset_format == "e4m3fn" else None
    if isinstance(msg, m.LoadData) and msg.start == 99:
        return m.Ack("load_data", {"rows": object()})   # a handler bug: not msgpack-able
    return m.Ack(msg.TYPE, {})


# ipc paths must stay under ~100 characters, so not pytest's tmp_path; removed at exit.
_IPC_DIR = tempfile.TemporaryDirectory(prefix="cosim-")
_ipc_names = itertools.count()


def _ipc() -> str:
    return f"ipc://{_IPC_DIR.name}/{next(_ipc_names)}.sock"


@pytest.fixture
def serving(request):
    """Start a server in a thread on the address kind given by ``request.param`` (default tcp)."""
    kind = getattr(request, "param", "tcp")
    address = {"tcp": "tcp://127.0.0.1:0", "ipc": _ipc()}[kind]
    taps: list[TapEvent] = []
    server = Server(address, tap=taps.append)
    thread = threading.Thread(target=server.serve, args=(handler,), kwargs={"poll_ms": 20}, daemon=True)
    thread.start()
    yield server, thread, taps
    if thread.is_alive():
        with Client(server.address) as c:
            c.request(m.Hello(client="teardown"))
            c.request(m.Shutdown())
    thread.join(5)
    server.close()


@contextmanager
def leased_server(lease: float = 60.0, version=PROTOCOL_VERSION, seen: list | None = None):
    """A server with ``lease`` on ipc, in a thread, answering with ``handler`` and appending the
    type of every message the handler gets to ``seen``; yields (server, thread)."""
    server = Server(_ipc(), lease=lease, version=version)

    def recording(msg: m.Message) -> m.Message:
        if seen is not None:
            seen.append(msg.TYPE)
        return handler(msg)

    with _serving(server, recording) as thread:
        yield server, thread


@contextmanager
def _serving(server: Server, answer):
    """``server`` answering with ``answer`` in a thread until the block ends; yields the thread."""
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(answer,),
                              kwargs={"poll_ms": 20, "should_stop": stop.is_set}, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(5)
        server.close()


@pytest.mark.parametrize("serving", ["tcp", "ipc"], indirect=True)
def test_client_talks_to_server_and_shutdown_stops_serving(serving):
    server, thread, _ = serving
    with Client(server.address, session="s1") as client:
        assert client.request(m.Hello(client="t")) == CAPS
        state = client.request(m.Fetch())
        assert state.scale == 2.0**-7 and state.offset.tolist() == [[0.25], [0.25]]
        assert client.request(m.LoadData(start=0, x=np.ones((3, 2)), y=np.zeros(3))) == m.Ack("load_data", {})
        assert client.request(m.Shutdown()) == m.Ack("shutdown", {})
    thread.join(5)
    assert not thread.is_alive()


def test_inproc_with_a_shared_context():
    ctx = zmq.Context()
    server = Server("inproc://accel", context=ctx)
    thread = threading.Thread(target=server.serve, args=(handler,), daemon=True)
    thread.start()
    with Client("inproc://accel", context=ctx) as client:
        assert client.request(m.Hello(client="t")) == CAPS
        client.request(m.Shutdown())
    thread.join(5)
    server.close()
    ctx.term()


def test_tcp_port_0_binds_a_real_port():
    with Server("tcp://127.0.0.1:0") as server:
        port = int(server.address.rsplit(":", 1)[1])
        assert server.address.startswith("tcp://127.0.0.1:") and port > 0


def test_binding_a_taken_address_raises_a_clear_error():
    with Server("tcp://127.0.0.1:0") as first:
        with pytest.raises(OSError, match="cannot bind tcp://127.0.0.1:"):
            Server(first.address)


def test_taps_see_both_directions_on_both_ends(serving):
    server, _, server_taps = serving
    client_taps: list[TapEvent] = []
    with Client(server.address, session="s", tap=client_taps.append) as client:
        client.request(m.Hello(client="t"))
        client.request(m.Fetch())
    seen = [("h2a", "hello", 1), ("a2h", "capabilities", 1), ("h2a", "fetch", 2), ("a2h", "state", 2)]
    assert [(e.direction, e.header["type"], e.header["seq"]) for e in client_taps] == seen
    # close() ended the session with a bye, which the client does not tap
    assert [(e.direction, e.header["type"], e.header["seq"]) for e in server_taps] == [
        *seen, ("h2a", "bye", 3), ("a2h", "ack", 3)]
    state = client_taps[3]
    assert state.header["tensors"][0]["shape"] == [2, 1]
    assert bytes(state.frames[0]) == np.full((2, 1), 0.25).tobytes()
    assert bytes(server_taps[3].frames[0]) == bytes(state.frames[0])


def test_error_reply_raises_accelerator_error_and_client_stays_usable(serving):
    server, _, _ = serving
    with Client(server.address) as client:
        client.request(m.Hello(client="t"))
        with pytest.raises(AcceleratorError) as err:
            client.request(m.RunEpoch(algorithm="adam", epoch=0, steps=1, step_size=0.1,
                                      batch_size=1, order=np.zeros(1, "<u4")))
        assert err.value.code == "bad_value" and err.value.ref == 2
        assert "run_epoch.algorithm: 'adam' is not one of sgd, svrg" in str(err.value)
        assert isinstance(client.request(m.Fetch()), m.State)


def test_handler_answering_with_the_wrong_type_is_an_internal_error(serving):
    server, _, _ = serving
    with Client(server.address) as client:
        client.request(m.Hello(client="t"))
        for fmt in ("e4m3fn", "fp16"):     # a request as reply, then no message at all
            with pytest.raises(AcceleratorError, match="internal: TypeError: the handler answered promote"):
                client.request(m.Promote(offset_format=fmt))
        assert isinstance(client.request(m.Fetch()), m.State)


def test_unencodable_reply_becomes_an_internal_error(serving):
    server, _, _ = serving
    with Client(server.address) as client:
        client.request(m.Hello(client="t"))
        with pytest.raises(AcceleratorError, match="internal: cannot encode the reply"):
            client.request(m.LoadData(start=99, x=np.ones((1, 1)), y=np.zeros(1)))
        assert isinstance(client.request(m.Fetch()), m.State)


def test_client_rejects_a_reply_type_as_request_and_a_bad_timeout():
    with Client("tcp://127.0.0.1:9") as client:
        with pytest.raises(ValueError, match="'ack' is not a request"):
            client.request(m.Ack("x", {}))
        with pytest.raises(ValueError, match="timeout must be > 0"):
            client.request(m.Fetch(), timeout=0)


@pytest.mark.parametrize("address", ["127.0.0.1:5555", "tcp://", "udp://127.0.0.1:1"])
def test_bad_addresses_are_refused_with_the_accepted_forms(address):
    with pytest.raises(ValueError, match="addresses look like tcp://HOST:PORT"):
        Client(address)
    with pytest.raises(OSError, match="addresses look like tcp://HOST:PORT"):
        Server(address)


def test_timeout_against_a_server_that_never_answers_names_address_and_request():
    ctx = zmq.Context.instance()
    silent = ctx.socket(zmq.ROUTER)
    silent.setsockopt(zmq.LINGER, 0)
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    address = f"tcp://127.0.0.1:{port}"
    client = Client(address, timeout=0.3)
    try:
        t0 = time.monotonic()
        with pytest.raises(AcceleratorTimeout) as err:
            client.request(m.Hello(client="t"))
        assert 0.25 < time.monotonic() - t0 < 2.0
        assert str(err.value) == (f"the accelerator at {address} did not answer hello (seq 1) "
                                  "within 0.3 s; is `cosim accel` running there?")
        with pytest.raises(AcceleratorGone, match="is closed"):
            client.request(m.Fetch())
    finally:
        client.close()
        silent.close()


def test_timeout_when_nothing_listens_at_all():
    with Client(_ipc(), timeout=0.2) as client:
        with pytest.raises(AcceleratorTimeout, match="did not answer hello"):
            client.request(m.Hello(client="t"))


SLOW_DAEMON = textwrap.dedent("""
    import sys, time
    from protocol import messages as m
    from protocol.channel import Server
    def handler(msg):
        if isinstance(msg, m.Hello):
            return m.Capabilities([1, 1], "slow", [], [], [], [], {})
        server.progress({})      # alive and busy, then killed: progress must not hide that
        time.sleep(60)
    server = Server(sys.argv[1])
    print(server.address, flush=True)
    server.serve(handler)
""")


@pytest.mark.parametrize("kind", ["tcp", "ipc"])
def test_killing_the_accelerator_mid_request_raises_at_once_not_after_the_timeout(kind):
    address = "tcp://127.0.0.1:0" if kind == "tcp" else _ipc()
    proc = subprocess.Popen([sys.executable, "-c", SLOW_DAEMON, address], stdout=subprocess.PIPE,
                            text=True)
    try:
        address = proc.stdout.readline().strip()
        with Client(address, timeout=20) as client:
            client.request(m.Hello(client="t"))
            threading.Timer(0.3, proc.kill).start()
            t0, got = time.monotonic(), []
            with pytest.raises(AcceleratorGone) as err:
                client.request(m.Fetch(), on_progress=got.append)
            assert time.monotonic() - t0 < 5.0 and got == [m.Progress("fetch", {})]
            assert not isinstance(err.value, AcceleratorTimeout)
            assert f"connection to the accelerator at {address} was lost while waiting for the " \
                   "reply to fetch (seq 2)" in str(err.value)
            with pytest.raises(AcceleratorGone, match="is closed"):
                client.request(m.Fetch())
    finally:
        proc.kill()
        proc.wait()


def test_server_survives_a_client_that_vanishes_mid_request():
    with leased_server(lease=0.3) as (server, thread):
        gone = Client(server.address)
        gone.request(m.Hello(client="gone"))
        with pytest.raises(AcceleratorTimeout):
            gone.request(m.RunEpoch(algorithm="sgd", epoch=0, steps=1, step_size=0.3, batch_size=1,
                                    order=np.zeros(1, "<u4")), timeout=0.05)
        with Client(server.address) as client:   # the server replies into the void, then serves us
            # The vanished client said no bye: its session holds the server for its lease.
            with pytest.raises(AcceleratorError, match="busy: the accelerator is in use by 'gone'"):
                client.request(m.Hello(client="next"))
            time.sleep(0.3)
            client.request(m.Hello(client="next"))
            report = client.request(m.RunEpoch(algorithm="sgd", epoch=4, steps=2, step_size=0.01,
                                               batch_size=1, order=np.zeros(2, "<u4")))
            assert (report.epoch, report.steps) == (4, 2)
        assert thread.is_alive()


def test_server_should_stop_ends_serving_and_close_does_not_hang():
    stop = threading.Event()
    server = Server("tcp://127.0.0.1:0")
    thread = threading.Thread(target=server.serve, args=(handler,),
                              kwargs={"poll_ms": 10, "should_stop": stop.is_set})
    thread.start()
    stop.set()
    thread.join(2)
    assert not thread.is_alive()
    t0 = time.monotonic()
    server.close()
    Client("tcp://127.0.0.1:9").close()
    assert time.monotonic() - t0 < 2.0


def test_bad_reply_from_a_broken_accelerator_raises_protocol_error():
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")

    def answer_garbage():
        ident, _ = router.recv_multipart()
        router.send_multipart([ident, b"not msgpack \xc1"])

    threading.Thread(target=answer_garbage, daemon=True).start()
    with Client(f"tcp://127.0.0.1:{port}", timeout=5) as client:
        with pytest.raises(ProtocolError) as err:
            client.request(m.Hello(client="t"))
        assert err.value.code == "malformed"
    router.close()


@pytest.mark.parametrize("make", [lambda a: Server(a), lambda a: Client(a)])
def test_tcp_port_out_of_range_is_refused(make):
    # libzmq would take 99999 modulo 65536 and serve on port 34463 without a word
    with pytest.raises(ValueError, match="port 99999 is outside 0..65535"):
        make("tcp://127.0.0.1:99999")


# ---- progress: a slow request keeps the client waiting, a hung one still times out ------

TIMEOUT = 0.4
STEP_S = TIMEOUT / 3          # the slow handler reports after each step: three per timeout


def _slow_epoch(steps: int) -> m.RunEpoch:
    return m.RunEpoch(algorithm="sgd", epoch=0, steps=steps, step_size=1.0, batch_size=1,
                      order=np.zeros(steps, "<u4"))


@contextmanager
def slow_server(reports: int, version=PROTOCOL_VERSION):
    """A server whose run_epoch works ``steps`` × STEP_S seconds and calls progress after each
    of its first ``reports`` steps; yields (server, taps)."""
    taps: list[TapEvent] = []
    server = Server(_ipc(), tap=taps.append, version=version)

    def slow(msg: m.Message) -> m.Message:
        if not isinstance(msg, m.RunEpoch):
            return handler(msg)
        for step in range(msg.steps):
            time.sleep(STEP_S)
            if step < reports:
                server.progress({"steps": step + 1})
        return m.EpochReport(msg.epoch, msg.steps, {}, {}, 0)

    with _serving(server, slow):
        yield server, taps


def test_progress_restarts_the_timeout_of_a_request_three_timeouts_long():
    client_taps: list[TapEvent] = []
    got: list[m.Progress] = []
    with slow_server(reports=9) as (server, server_taps):
        with Client(server.address, timeout=TIMEOUT, tap=client_taps.append) as client:
            client.request(m.Hello(client="t"))
            t0 = time.monotonic()
            report = client.request(_slow_epoch(9), on_progress=got.append)
            assert time.monotonic() - t0 > 2.5 * TIMEOUT
            assert (report.epoch, report.steps) == (0, 9)
            assert isinstance(client.request(m.Fetch()), m.State)   # the next request is fine
    assert got == [m.Progress("run_epoch", {"steps": k}) for k in range(1, 10)]
    seen = [("h2a", "hello", 1), ("a2h", "capabilities", 1), ("h2a", "run_epoch", 2),
            *[("a2h", "progress", 2)] * 9, ("a2h", "epoch_report", 2),
            ("h2a", "fetch", 3), ("a2h", "state", 3)]
    assert [(e.direction, e.header["type"], e.header["seq"]) for e in client_taps] == seen
    assert [(e.direction, e.header["type"], e.header["seq"]) for e in server_taps] == [
        *seen, ("h2a", "bye", 4), ("a2h", "ack", 4)]
    for taps in (client_taps, server_taps):
        assert {e.header["session"] for e in taps} == {client.session}
    assert [e.header["body"] for e in client_taps if e.header["type"] == "progress"] == [
        {"of": "run_epoch", "info": {"steps": k}} for k in range(1, 10)]


def test_the_same_request_without_progress_times_out():
    with slow_server(reports=0) as (server, server_taps):
        with Client(server.address, timeout=TIMEOUT) as client:
            client.request(m.Hello(client="t"))
            with pytest.raises(AcceleratorTimeout, match=rf"did not answer run_epoch \(seq 2\) "
                                                         rf"within {TIMEOUT:g} s; is `cosim accel`"):
                client.request(_slow_epoch(9), on_progress=pytest.fail)
    assert "progress" not in [e.header["type"] for e in server_taps]


def test_an_accelerator_that_hangs_after_progress_still_times_out():
    with slow_server(reports=2) as (server, _):
        with Client(server.address, timeout=TIMEOUT) as client:
            client.request(m.Hello(client="t"))
            t0 = time.monotonic()
            with pytest.raises(AcceleratorTimeout) as err:
                client.request(_slow_epoch(9))
            # Two progress messages (at 1 and 2 steps), then a timeout's silence.
            assert 2 * STEP_S + TIMEOUT - 0.05 < time.monotonic() - t0 < 9 * STEP_S
            assert str(err.value) == (f"the accelerator at {server.address} sent progress on "
                                      "run_epoch (seq 2), then neither progress nor the reply "
                                      f"for {TIMEOUT:g} s; is it hung?")


def test_a_1_1_client_gets_no_progress_and_its_reply():
    client_taps: list[TapEvent] = []
    with slow_server(reports=9) as (server, server_taps):
        # A 1.1 host gets no keep-alive: its timeout must cover the whole request.
        with Client(server.address, timeout=20 * TIMEOUT, version=(1, 1),
                    tap=client_taps.append) as client:
            client.request(m.Hello(client="1.1"))
            report = client.request(_slow_epoch(9), on_progress=pytest.fail)
            assert (report.epoch, report.steps) == (0, 9)
    for taps in (client_taps, server_taps):
        assert [e.header["type"] for e in taps] == ["hello", "capabilities", "run_epoch",
                                                    "epoch_report"]


def test_a_server_playing_1_1_sends_no_progress_to_a_1_2_client():
    with slow_server(reports=3, version=(1, 1)) as (server, server_taps):
        with Client(server.address, timeout=20 * TIMEOUT) as client:
            client.request(m.Hello(client="t"))
            client.request(_slow_epoch(3), on_progress=pytest.fail)
    assert "progress" not in [e.header["type"] for e in server_taps]


def test_progress_outside_a_request_does_nothing():
    taps: list[TapEvent] = []
    with Server(_ipc(), tap=taps.append) as server:
        server.progress({"steps": 1})
    assert taps == []


def test_progress_is_never_a_reply():
    def answers_progress(msg: m.Message) -> m.Message:
        return CAPS if isinstance(msg, m.Hello) else m.Progress(msg.TYPE, {})

    server, stop = Server(_ipc()), threading.Event()
    thread = threading.Thread(target=server.serve, args=(answers_progress,),
                              kwargs={"poll_ms": 20, "should_stop": stop.is_set}, daemon=True)
    thread.start()
    try:
        with Client(server.address, timeout=5) as client:
            client.request(m.Hello(client="t"))
            with pytest.raises(AcceleratorError, match="the handler answered fetch with Progress"):
                client.request(m.Fetch())
    finally:
        stop.set()
        thread.join(5)
        server.close()


@pytest.mark.parametrize("seq_shift,session", [(1, None), (-1, None), (0, "other")],
                         ids=["later seq", "earlier seq", "other session"])
def test_progress_for_another_request_is_a_protocol_error(seq_shift, session):
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")

    def answer_with_stray_progress():
        ident, *frames = router.recv_multipart()
        env = read_envelope(frames)
        router.send_multipart([ident, *encode(m.Progress("hello", {}), env.seq + seq_shift,
                                              session or env.session)])

    threading.Thread(target=answer_with_stray_progress, daemon=True).start()
    try:
        with Client(f"tcp://127.0.0.1:{port}", timeout=5) as client:
            with pytest.raises(ProtocolError) as err:
                client.request(m.Hello(client="t"), on_progress=pytest.fail)
            assert err.value.code == "bad_sequence"
            assert err.value.message.startswith("progress carries seq")
    finally:
        router.close()


# ---- sessions: one owner at a time, leased (since 1.4) -----------------------------------
# tests/accel/test_sessions.py tries every request type against a real daemon.

LEASE = 0.3


def _refused(client: Client, msg: m.Message, code: str) -> str:
    with pytest.raises(AcceleratorError) as err:
        client.request(msg)
    assert err.value.code == code, err.value
    return err.value.message


def test_a_live_session_refuses_another_clients_hello_and_requests():
    seen: list[str] = []
    with leased_server(seen=seen) as (server, _):
        with Client(server.address, session="owner-token") as owner, Client(server.address) as other:
            owner.request(m.Hello(client="owner"))
            text = _refused(other, m.Hello(client="other"), "busy")
            assert re.fullmatch(r"the accelerator is in use by 'owner' \(idle \d+\.\d s\); another "
                                r"client's hello takes it over once it has been idle 60 s", text)
            for msg in (m.Fetch(), m.Bye(), m.Shutdown()):
                text = _refused(other, msg, "bad_session")
                assert "is not the open session: the accelerator is in use by 'owner'" in text
                assert "owner-token" not in text        # the owner's credential is never named
            assert isinstance(owner.request(m.Fetch()), m.State)
        assert seen == ["hello", "fetch", "bye"]       # nothing of the other client's got through


def test_bye_ends_the_session_so_the_next_client_need_not_wait_for_the_lease():
    seen: list[str] = []
    with leased_server(seen=seen) as (server, _):
        with Client(server.address) as first:
            first.request(m.Hello(client="first"))
        with Client(server.address) as second:          # at once: the first one's close said bye
            second.request(m.Hello(client="second"))
            assert isinstance(second.request(m.Fetch()), m.State)
        assert seen == ["hello", "bye", "hello", "fetch", "bye"]
        with Client(server.address) as late:
            late.request(m.Hello(client="late"))
            assert late.request(m.Bye()) == m.Ack("bye", {})
            assert "fetch before hello" in _refused(late, m.Fetch(), "bad_session")


def test_a_session_idle_for_its_lease_is_taken_over_and_its_owner_gets_session_lost():
    seen: list[str] = []
    with leased_server(LEASE, seen=seen) as (server, _):
        with Client(server.address, session="owner-token") as owner:
            owner.request(m.Hello(client="owner"))
            time.sleep(LEASE + 0.1)
            assert isinstance(owner.request(m.Fetch()), m.State)   # unchallenged, it carries on
            time.sleep(LEASE + 0.1)
            with Client(server.address) as other:
                assert other.request(m.Hello(client="other")) == CAPS
                # The handler dropped the old session's state before the new one could see it.
                assert seen == ["hello", "fetch", "bye", "hello"]
                text = _refused(owner, m.Fetch(), "session_lost")
                assert re.fullmatch(r"session 'owner-token' was taken over by 'other' after it had "
                                    r"been idle \d+\.\d s, longer than the lease of 0\.3 s; its state "
                                    r"is gone", text)
                assert isinstance(other.request(m.Fetch()), m.State)
        assert seen[4:] == ["fetch", "bye"]     # the lost owner's close: its bye was refused


def test_the_owner_reopens_its_session_from_a_new_connection_and_keeps_its_state():
    seen: list[str] = []
    with leased_server(seen=seen) as (server, _):
        first = Client(server.address, session="token")
        first.request(m.Hello(client="host"))
        first.request(m.Fetch())
        first._shut("network dropped")            # no bye: the connection just goes
        with Client(server.address, session="token") as again:
            text = _refused(again, m.Hello(client="another host"), "busy")   # id and client, both
            assert text.startswith("the accelerator is in use by 'host'")
            assert again.request(m.Hello(client="host")) == CAPS
            assert isinstance(again.request(m.Fetch()), m.State)
        assert seen == ["hello", "fetch", "hello", "fetch", "bye"]   # no bye until the end


@pytest.mark.parametrize("old", [(1, 3), (1, 0)], ids=["1.3", "1.0"])
def test_older_hosts_get_bad_session_instead_and_their_sessions_have_no_lease(old):
    with leased_server() as (server, _):
        with Client(server.address) as owner, Client(server.address, version=old) as older:
            owner.request(m.Hello(client="owner"))
            text = _refused(older, m.Hello(client="older"), "bad_session")
            assert text.startswith("the accelerator is in use by 'owner' (idle ")
        with Client(server.address, session="old-token", version=old) as older:
            older.request(m.Hello(client="older"))       # cannot say bye: no lease
            with Client(server.address) as newer:
                assert newer.request(m.Hello(client="newer")) == CAPS
                text = _refused(older, m.Fetch(), "bad_session")
                assert text == ("session 'old-token' was taken over by 'newer' (opened by a host "
                                "older than 1.4, it had no lease); its state is gone")


def test_a_server_playing_1_3_leases_nothing_and_sends_no_new_codes():
    with leased_server(version=(1, 3)) as (server, _):
        with Client(server.address, session="first") as first, Client(server.address) as second:
            first.request(m.Hello(client="first"))
            assert second.request(m.Hello(client="second")) == CAPS
            assert "was taken over by 'second'" in _refused(first, m.Fetch(), "bad_session")


@pytest.mark.parametrize("lease", [0, -1.0, float("inf"), float("nan"), True, "60"])
def test_a_lease_is_a_positive_number_of_seconds(lease):
    with pytest.raises(ValueError, match="lease must be a number of seconds > 0"):
        Server(_ipc(), lease=lease)
