"""Trace files: written record by record, readable after a crash, summarised."""
from dataclasses import dataclass

import msgpack
import pytest

from cosim.trace import TraceError, TraceReader, TraceWriter, payloads, summarize
from protocol.messages import PROTOCOL_VERSION


@dataclass
class Event:
    t: float
    direction: str
    header: dict
    frames: list


def _write(path, n=3):
    with TraceWriter(path, config={"dataset": "digits"}, seed=7) as w:
        w.mark("algorithm", name="halp")
        for i in range(n):
            w.message(Event(1.0 + i, "h2a", {"type": "fetch", "seq": i + 1, "body": {}}, []))
            w.message(Event(1.5 + i, "a2h", {"type": "epoch_report", "seq": i + 1,
                                             "body": {"ops": {"mul fp32": 10}}}, [b"\x00" * 8]))
        w.epoch({"algorithm": "halp", "epoch": 1, "gap": 1e-3, "bits": 8})


def test_roundtrip_and_summary(tmp_path):
    path = tmp_path / "t.cosim"
    _write(path)
    records = list(TraceReader(path))
    assert records[0]["kind"] == "header" and records[0]["seed"] == 7
    assert records[0]["config"] == {"dataset": "digits"}
    s = summarize(path)
    assert s["messages"][("h2a", "fetch")] == 3
    assert s["messages"][("a2h", "epoch_report")] == 3
    assert s["ops"]["mul fp32"] == 30
    assert s["epochs"][0]["gap"] == 1e-3
    assert s["seconds"] == pytest.approx(2.5)
    assert not s["truncated"]


def test_torn_tail_is_reported_not_fatal(tmp_path):
    path = tmp_path / "t.cosim"
    _write(path)
    whole = path.read_bytes()
    path.write_bytes(whole + msgpack.packb({"kind": "message", "frames": [b"x" * 100]})[:-40])
    reader = TraceReader(path)
    assert len(list(reader)) == 1 + 1 + 6 + 1
    assert reader.truncated
    assert summarize(path)["truncated"]


def test_payloads_ignore_time_but_not_content(tmp_path):
    a, b = tmp_path / "a.cosim", tmp_path / "b.cosim"
    _write(a)
    _write(b)
    assert payloads(a) == payloads(b)
    with TraceWriter(b, config={}, seed=7) as w:  # appending makes it differ
        w.message(Event(9.0, "h2a", {"type": "fetch", "seq": 9, "body": {}}, []))
    assert payloads(a) != payloads(b)


def test_not_a_trace(tmp_path):
    p = tmp_path / "x.cosim"
    p.write_bytes(msgpack.packb({"hello": 1}))
    with pytest.raises(TraceError, match="not a cosim trace"):
        list(TraceReader(p))
    p.write_bytes(b"")
    with pytest.raises(TraceError, match="empty"):
        list(TraceReader(p))


def test_header_names_the_accelerator_that_answered(tmp_path):
    """Backend and kernel spec come from the capabilities reply over a real socket, not from
    the command line; the hello request waits in memory until then and is not lost."""
    import threading

    from accel.daemon import Daemon
    from protocol.channel import Client, Server
    from protocol.messages import Fetch, Hello

    server = Server(f"ipc://{tmp_path}/a.sock")
    daemon, stop = Daemon(), threading.Event()
    thread = threading.Thread(target=server.serve, args=(daemon.handle,), kwargs={"should_stop": stop.is_set})
    thread.start()
    path = tmp_path / "t.cosim"
    try:
        with TraceWriter(path, config={"backend": "typed-on-the-command-line"}, seed=1) as w:
            with Client(server.address, tap=w.message, timeout=10) as client:
                client.request(Hello(client="t"))
                with pytest.raises(Exception):
                    client.request(Fetch())                       # bad_state: still recorded
    finally:
        stop.set()
        thread.join()
        server.close()
    records = list(TraceReader(path))
    header = records[0]
    assert header["accelerator"] == {"backend": "emulated", "spec": [2, 0], "protocol": list(PROTOCOL_VERSION)}
    assert [r["header"]["type"] for r in records[1:]] == ["hello", "capabilities", "fetch", "error"]


def test_a_run_without_accelerator_still_gets_its_header(tmp_path):
    path = tmp_path / "t.cosim"
    with TraceWriter(path, config={}, seed=0) as w:
        w.epoch({"algorithm": "svrg", "epoch": 0})
    header, epoch = TraceReader(path)
    assert header["kind"] == "header" and header["accelerator"] is None and epoch["kind"] == "epoch"
