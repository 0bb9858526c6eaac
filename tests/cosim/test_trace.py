"""Trace files: written record by record, readable after a crash, damage found and named,
version 1 still read, summarised by `cosim trace show`."""
import os
import struct
import subprocess
import sys
import threading
import time
import zlib

import msgpack
import pytest

from cosim.trace import (MAGIC, TraceError, TraceReader, TraceWriter, library_versions, payloads,
                         summarize)
from protocol.channel import TapEvent as Event
from protocol.codec import encode
from protocol.messages import PROTOCOL_VERSION, Hello

COSIM = [sys.executable, "-m", "cosim"]



def _epoch(algorithm="halp", epoch=1, **extra):
    return {"algorithm": algorithm, "epoch": epoch, "loss": 0.5, "gap": 1e-3, "grad_norm": 0.1,
            "bits": 8, "offset_format": "fixed<1,7>", "seconds": 0.25, "ops": {"mul fp32": 10},
            "saturations": 0, "scale": None, **extra}


def _write(path, n=3, t0=1.0, work=0.5):
    with TraceWriter(path, config={"dataset": "digits"}, seed=7) as w:
        w.mark("algorithm", name="halp")
        for i in range(n):
            w.message(Event(t0 + i, "h2a", {"type": "fetch", "seq": i + 1, "body": {}}, []))
            w.message(Event(t0 + i + 0.5, "a2h", {"type": "epoch_report", "seq": i + 1, "body": {
                "ops": {"mul fp32": 10}, "work": {"seconds": work}}}, [b"\x00" * 8]))
        w.epoch(_epoch())


def _layout(data: bytes) -> list[tuple[int, int]]:
    """(offset, end) of each record of a version 2 file, parsed independently of the reader."""
    spans, offset = [], len(MAGIC)
    while offset < len(data):
        (length,) = struct.unpack_from("<I", data, offset)
        spans.append((offset, offset + 12 + length))
        offset += 12 + length
    return spans


def cosim(*args, timeout=60):
    return subprocess.run([*COSIM, *args], capture_output=True, text=True, timeout=timeout)


def test_roundtrip_and_summary(tmp_path):
    path = tmp_path / "t.cosim"
    _write(path)
    assert path.read_bytes().startswith(MAGIC)
    records = list(TraceReader(path))
    assert records[0]["kind"] == "header" and records[0]["seed"] == 7 and records[0]["version"] == 2
    assert records[0]["config"] == {"dataset": "digits"}
    assert records[0]["libraries"] == library_versions() and "numpy" in records[0]["libraries"]
    fetch = records[2]
    assert fetch["stamped_by"] == "host" and fetch["bytes"] == len(msgpack.packb(fetch["header"]))
    s = summarize(path)
    assert s["messages"][("h2a", "fetch")] == 3
    assert s["messages"][("a2h", "epoch_report")] == 3
    assert s["bytes"][("a2h", "epoch_report")] == sum(r["bytes"] for r in records[3:8:2]) > 3 * 8
    assert s["ops"]["mul fp32"] == 30
    assert s["work"] == {"seconds": 1.5}
    assert s["epochs"][0]["gap"] == 1e-3
    assert s["seconds"] == pytest.approx(2.5)
    assert not s["truncated"]


def test_entries_give_index_and_offset(tmp_path):
    path = tmp_path / "t.cosim"
    _write(path)
    entries = list(TraceReader(path).entries())
    assert [(e.index, e.offset) for e in entries] == [
        (i, start) for i, (start, _) in enumerate(_layout(path.read_bytes()))]
    assert [e.record for e in entries] == list(TraceReader(path))


def test_torn_tail_is_reported_not_fatal(tmp_path):
    """A crash can stop the last write anywhere, in its head or its payload."""
    path = tmp_path / "t.cosim"
    _write(path)
    whole = path.read_bytes()
    start, end = _layout(whole)[-1]
    cut = tmp_path / "cut.cosim"
    for length in range(start + 1, end):
        cut.write_bytes(whole[:length])
        reader = TraceReader(cut)
        assert len(list(reader)) == 1 + 1 + 6, length   # header, mark, messages; the epoch is torn
        assert reader.truncated
    assert summarize(cut)["truncated"]
    cut.write_bytes(whole[:start])                       # a clean stop between records
    assert not summarize(cut)["truncated"]


def test_a_flipped_bit_names_the_record_and_its_offset(tmp_path):
    path = tmp_path / "t.cosim"
    _write(path)
    whole = path.read_bytes()
    spans = _layout(whole)
    for index in (0, 4, len(spans) - 1):
        start, end = spans[index]
        for at in (start, start + 9, end - 1):           # the length, the head's CRC, the payload
            damaged = bytearray(whole)
            damaged[at] ^= 0x10
            path.write_bytes(damaged)
            with pytest.raises(TraceError, match=f"record {index} at byte {start} is damaged") as info:
                summarize(path)
            assert (info.value.index, info.value.offset) == (index, start)
    r = cosim("trace", "show", str(path))
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ")
    assert f"record {len(spans) - 1} at byte {spans[-1][0]} is damaged" in r.stderr


def test_payloads_ignore_time_and_work_but_not_content(tmp_path):
    a, b, c = tmp_path / "a.cosim", tmp_path / "b.cosim", tmp_path / "c.cosim"
    _write(a)
    _write(b, t0=100.0, work=0.7)                        # other times, other measured work
    assert payloads(a) == payloads(b)
    _write(c, n=4)
    assert payloads(a) != payloads(c)


def test_not_a_trace(tmp_path):
    p = tmp_path / "x.cosim"
    p.write_bytes(msgpack.packb({"hello": 1}))
    with pytest.raises(TraceError, match="not a cosim trace"):
        list(TraceReader(p))
    p.write_bytes(b"")
    with pytest.raises(TraceError, match="empty"):
        list(TraceReader(p))
    p.write_bytes(MAGIC)                                 # the writer stopped before its header
    with pytest.raises(TraceError, match="no trace header"):
        list(TraceReader(p))
    p.write_bytes(MAGIC[:-1] + b"\x09")
    with pytest.raises(TraceError, match="unknown trace version 9"):
        list(TraceReader(p))


def test_records_readers_could_not_use_are_refused(tmp_path):
    """Written with valid framing but missing what readers rely on: an error, not a traceback."""
    path = tmp_path / "t.cosim"
    with TraceWriter(path, config={}, seed=0) as w:
        with pytest.raises(ValueError, match="lacks 'loss'"):
            w.epoch({"algorithm": "svrg", "epoch": 0})   # the writer checks by the same rules
        w.epoch(_epoch())
    payload = msgpack.packb({"kind": "epoch", "algorithm": "svrg", "epoch": "one"})
    head = struct.pack("<II", len(payload), zlib.crc32(payload))
    with open(path, "ab") as f:
        f.write(head + struct.pack("<I", zlib.crc32(head)) + payload)
    with pytest.raises(TraceError, match="record 2 at byte .* the epoch record's 'epoch' is a str"):
        summarize(path)
    with pytest.raises(FileExistsError):
        TraceWriter(path, config={}, seed=0)             # never appended to


def test_header_names_the_accelerator_that_answered(tmp_path):
    """Backend and kernel spec come from the capabilities reply over a real socket, not from
    the command line; the hello request waits in memory until then and is not lost. Times are
    the host's monotonic clock; sizes are the wire's."""
    from accel.daemon import Daemon
    from protocol.channel import Client, Server
    from protocol.messages import Fetch

    server = Server(f"ipc://{tmp_path}/a.sock")
    daemon, stop = Daemon(), threading.Event()
    thread = threading.Thread(target=server.serve, args=(daemon.handle,), kwargs={"should_stop": stop.is_set})
    thread.start()
    path = tmp_path / "t.cosim"
    before = time.monotonic()
    try:
        with TraceWriter(path, config={"backend": "typed-on-the-command-line"}, seed=1) as w:
            with Client(server.address, tap=w.message, timeout=10) as client:
                client.request(Hello(client="t"))
                with pytest.raises(Exception):
                    client.request(Fetch())                       # bad_state: still recorded
                session = client.session
    finally:
        stop.set()
        thread.join()
        server.close()
    after = time.monotonic()
    records = list(TraceReader(path))
    header = records[0]
    assert header["accelerator"] == {"backend": "emulated", "spec": [2, 0], "protocol": list(PROTOCOL_VERSION)}
    assert header["cpu"] and before <= header["created_monotonic"] <= after
    messages = records[1:]
    assert [r["header"]["type"] for r in messages] == ["hello", "capabilities", "fetch", "error"]
    assert all(r["stamped_by"] == "host" for r in messages)
    assert before <= messages[0]["t"] <= messages[1]["t"] <= messages[-1]["t"] <= after
    hello_frames = encode(Hello(client="t"), 1, session)
    assert messages[0]["bytes"] == sum(len(f) for f in hello_frames)


def test_a_run_without_accelerator_still_gets_its_header(tmp_path):
    path = tmp_path / "t.cosim"
    with TraceWriter(path, config={}, seed=0) as w:
        w.epoch(_epoch("svrg", 0))
    header, epoch = TraceReader(path)
    assert header["kind"] == "header" and header["accelerator"] is None and epoch["kind"] == "epoch"


def _write_v1(path, tail=b""):
    """A version 1 trace as the version 1 writer wrote it: msgpack maps back to back."""
    header = {"kind": "header", "format": "cosim-trace", "version": 1, "protocol": [1, 2],
              "cosim": "0.1.0", "python": "3.11.7", "created": "2026-01-01T00:00:00+00:00",
              "seed": 3, "config": {"dataset": "digits"},
              "accelerator": {"backend": "emulated", "spec": [2, 0], "protocol": [1, 2]}}
    fetch = {"v": [1, 2], "type": "fetch", "seq": 2, "session": "s", "body": {}, "tensors": []}
    state = {"v": [1, 2], "type": "state", "seq": 2, "session": "s", "body": {},
             "tensors": [{"name": "w", "dtype": "<f8", "shape": [2], "frame": 1}]}
    records = [header, {"kind": "mark", "what": "algorithm", "name": "halp"},
               {"kind": "message", "t": 1.7e9, "dir": "h2a", "header": fetch, "frames": []},
               {"kind": "message", "t": 1.7e9 + 0.25, "dir": "a2h", "header": state,
                "frames": [b"\x01" * 16]},
               {"kind": "epoch", **_epoch()}]
    pack = msgpack.Packer(use_bin_type=True).pack
    path.write_bytes(b"".join(pack(r) for r in records) + tail)
    return records


def test_a_version_1_trace_still_reads(tmp_path):
    path = tmp_path / "v1.cosim"
    records = _write_v1(path)
    reader = TraceReader(path)
    assert list(reader) == records and reader.version == 1 and not reader.truncated
    offsets = [e.offset for e in TraceReader(path).entries()]
    assert offsets[1] == len(msgpack.packb(records[0], use_bin_type=True))
    s = summarize(path)
    assert s["header"]["version"] == 1 and s["seconds"] == 0.25
    assert s["bytes"][("a2h", "state")] == len(msgpack.packb(records[3]["header"])) + 16
    assert payloads(path)[1][:3] == ("a2h", "state", 2)
    _write_v1(path, tail=msgpack.packb({"kind": "epoch", "ops": {"x": 1}})[:-3])
    assert summarize(path)["truncated"]
    r = cosim("trace", "show", str(path), "--epochs")
    assert r.returncode == 0 and "trace v1" in r.stdout and "truncated" in r.stdout, r.stderr


def test_fifos_and_directories_are_refused_at_once(tmp_path):
    """Opening a FIFO for reading would wait for a writer forever; it is refused instead."""
    fifo = tmp_path / "trace.fifo"
    os.mkfifo(fifo)
    outcome = []

    def read():
        try:
            list(TraceReader(fifo))
        except Exception as exc:
            outcome.append(exc)
    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert outcome, "reading a FIFO blocked"
    assert isinstance(outcome[0], TraceError) and "is a FIFO, not a trace file" in str(outcome[0])
    with pytest.raises(TraceError, match="is a directory, not a trace file"):
        list(TraceReader(tmp_path))
    results = tmp_path / "run"
    (results / "trace.cosim").mkdir(parents=True)        # a results directory whose trace is not a file
    for target, what in ((fifo, "a FIFO"), (results, "a directory")):
        for command in ("show", "export"):
            r = cosim("trace", command, str(target), timeout=30)
            assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
            assert r.stderr.startswith("error: ") and f"is {what}, not a trace file" in r.stderr


def test_trace_show_prints_the_machine_and_the_accelerators_work(tmp_path):
    path = tmp_path / "t.cosim"
    _write(path)
    r = cosim("trace", "show", str(path), "--epochs")
    assert r.returncode == 0, r.stderr
    assert "trace v2" in r.stdout and "machine: " in r.stdout and "numpy " in r.stdout
    assert "accelerator work (all epochs): seconds 1.5" in r.stdout
    assert "halp: 1 epochs recorded" in r.stdout
