"""Replay a trace: re-send its host-to-accelerator messages to a fresh accelerator and compare
every reply with the recorded one, bit for bit.

    cosim replay runs/<run>/trace.cosim                       # on the emulated backend
    cosim replay runs/<run> --backend rtl                     # on the RTL core (a simulated board)

    >>> report = replay(path, address)                        # doctest: +SKIP
    >>> report.identical, report.requests, report.replies, report.bytes

The requests are decoded from the recorded frames and sent in order by the protocol client
(so sessions, sequence numbers and timeouts work as in the run); each reply is taken as it
arrived (the client's tap) and compared with the recorded one: type, sequence number, session,
every body field and every tensor, byte for byte. Two things are not compared: an epoch
report's ``work`` (the accelerator's own timing or cycle count, different on every run) and,
when the backend differs from the recorded one, the ``capabilities`` reply (which describes the
backend). Progress messages are neither sent nor compared. The first difference stops the
replay and is reported as message index, type, field, element index and both values, as
numbers and as bits. A trace from a crashed run replays up to its last whole record.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cosim.trace import TraceReader, wire_bytes
from protocol.channel import AcceleratorError, Client, TapEvent
from protocol.codec import Envelope, decode_message, pack_header
from protocol.messages import REQUESTS

__all__ = ["Divergence", "ReplayReport", "replay", "requests_of", "first_difference", "formats_of"]

IGNORED_BODY = ("work",)      # epoch_report: timing and cycles, never the same twice


@dataclass(frozen=True)
class Divergence:
    """Where a replayed reply first differs from the recorded one."""

    index: int                # the message's index among the trace's message records
    type: str                 # the reply's message type
    field: str                # e.g. "body.ops['mul fp32']", "tensor offset", "type"
    element: tuple | None     # the tensor element's index, if a tensor differs
    recorded: Any
    replayed: Any

    def __str__(self) -> str:
        where = f"{self.field}" + (f" element {list(self.element)}" if self.element is not None else "")
        return (f"message {self.index} ({self.type}), {where}: recorded {_show(self.recorded)}, "
                f"replayed {_show(self.replayed)}")


@dataclass
class ReplayReport:
    requests: int = 0
    replies: int = 0
    bytes: int = 0                         # reply bytes compared (header bodies and tensors)
    divergence: Divergence | None = None
    truncated: bool = False                 # the trace ended in a torn record
    unanswered: int = 0                     # recorded requests without a recorded reply (a crash)
    skipped: list[str] = field(default_factory=list)   # what was not compared, and why

    @property
    def identical(self) -> bool:
        return self.divergence is None

    def summary(self) -> str:
        if self.divergence is not None:
            return f"differs: {self.divergence}"
        return f"identical: {self.requests} requests, {self.replies} replies, {self.bytes:,} bytes"


def _show(v: Any) -> str:
    """A value as a number and as bits (floats: their IEEE 754 binary64 or binary32 pattern)."""
    if isinstance(v, np.generic):
        bits = v.tobytes()[::-1].hex()               # little-endian in memory: most significant first
        return f"{v.item()!r} (0x{bits})"
    if isinstance(v, float):
        return f"{v!r} (0x{struct.pack('>d', v).hex()})"
    if isinstance(v, bool) or not isinstance(v, int):
        return repr(v)
    return f"{v!r} (0x{v & (2 ** 64 - 1):x})"


def requests_of(records: list[dict]) -> list[tuple[int, dict, dict | None]]:
    """(message index, request record, its recorded reply record or None), in order."""
    messages = [r for r in records if r.get("kind") == "message"
                and (r.get("header") or {}).get("type") != "progress"]
    out, pending = [], {}
    for index, r in enumerate(messages):
        h = r["header"]
        key = (h.get("session"), h.get("seq"))
        if r["dir"] == "h2a":
            pending[key] = len(out)
            out.append((index, r, None))
        elif key in pending:
            k = pending.pop(key)
            out[k] = (out[k][0], out[k][1], {**r, "index": index})
    return out


def _values(a: Any, b: Any, path: str) -> tuple[str, Any, Any] | None:
    """The first difference between two decoded msgpack values (dicts by key, lists by index)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in a or k not in b:
                return f"{path}[{k!r}]", a.get(k, "<absent>"), b.get(k, "<absent>")
            if d := _values(a[k], b[k], f"{path}[{k!r}]"):
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path} length", len(a), len(b)
        for i, (x, y) in enumerate(zip(a, b)):
            if d := _values(x, y, f"{path}[{i}]"):
                return d
        return None
    same = type(a) is type(b) and (a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)
                                              and struct.pack("<d", a) == struct.pack("<d", b)))
    return None if same else (path, a, b)


def first_difference(recorded: dict, replayed: dict, recorded_frames: list[bytes],
                     replayed_frames: list[bytes]) -> tuple[str, tuple | None, Any, Any] | None:
    """(field, element, recorded value, replayed value) of the first difference, or None."""
    for key in ("type", "seq", "session", "v"):
        if recorded.get(key) != replayed.get(key):
            return key, None, recorded.get(key), replayed.get(key)
    body_a = {k: v for k, v in (recorded.get("body") or {}).items() if k not in IGNORED_BODY}
    body_b = {k: v for k, v in (replayed.get("body") or {}).items() if k not in IGNORED_BODY}
    if d := _values(body_a, body_b, "body"):
        return d[0], None, d[1], d[2]
    tensors_a, tensors_b = recorded.get("tensors") or [], replayed.get("tensors") or []
    if d := _values(tensors_a, tensors_b, "tensors"):
        return d[0], None, d[1], d[2]
    for spec in tensors_a:
        fa, fb = bytes(recorded_frames[spec["frame"] - 1]), bytes(replayed_frames[spec["frame"] - 1])
        if fa == fb:
            continue
        dtype = np.dtype(spec["dtype"])
        a = np.frombuffer(fa, dtype=dtype).reshape(spec["shape"])
        b = np.frombuffer(fb, dtype=dtype).reshape(spec["shape"])
        raw_a = a.view(f"V{dtype.itemsize}").ravel()
        raw_b = b.view(f"V{dtype.itemsize}").ravel()
        flat = int(np.flatnonzero(raw_a != raw_b)[0])
        element = tuple(int(i) for i in np.unravel_index(flat, a.shape))
        return f"tensor {spec['name']}", element, a[element], b[element]
    return None


def _decode_request(header: dict, frames: list[bytes]):
    v = header.get("v")
    env = Envelope(header["type"], header["seq"], header.get("session", ""), header,
                   tuple(v) if isinstance(v, list) else (1, 0))
    return decode_message(env, [pack_header(header), *frames], types=REQUESTS)


def formats_of(records: list[dict]) -> list[dict]:
    """The formats each recorded configure and promote asked for (to check a backend first)."""
    out = []
    for r in records:
        h = r.get("header") or {}
        if r.get("kind") == "message" and r.get("dir") == "h2a" and h.get("type") in ("configure", "promote"):
            out.append({k: v for k, v in (h.get("body") or {}).items()
                        if k in ("data_format", "offset_format", "acc_format", "rounding", "n_features")})
    return out


def replay(path: str | Path, address: str, *, timeout: float = 60.0, backend: str | None = None,
           on_request: Callable[[int, int], None] | None = None) -> ReplayReport:
    """Replay the trace at ``path`` against the accelerator daemon at ``address``.

    ``backend`` is the replaying accelerator's backend name: a capabilities reply is compared
    only when it equals the recorded one's. ``on_request(done, total)`` is called after each
    request (progress display).
    """
    reader = TraceReader(Path(path))
    records = list(reader)
    header = records[0]
    recorded_backend = (header.get("accelerator") or {}).get("backend")
    report = ReplayReport(truncated=reader.truncated)
    pairs = requests_of(records)
    answered = [p for p in pairs if p[2] is not None]
    report.unanswered = len(pairs) - len(answered)
    if backend is not None and recorded_backend not in (None, backend):
        report.skipped.append(f"capabilities replies: recorded from {recorded_backend}, replayed on {backend}")
    arrived: list[TapEvent] = []
    client: Client | None = None
    try:
        for done, (index, request, reply) in enumerate(answered, 1):
            h = request["header"]
            if h["type"] == "hello" or client is None:
                if client is not None:
                    client.close()
                client = Client(address, session=h.get("session"), timeout=timeout,
                                tap=lambda e: arrived.append(e) if e.direction == "a2h"
                                and e.header.get("type") != "progress" else None)
            arrived.clear()
            try:
                client.request(_decode_request(h, request["frames"]))
            except AcceleratorError:
                pass                                 # an error reply: compared like any other
            report.requests += 1
            got = arrived[-1]
            if reply["header"].get("type") == "capabilities" and report.skipped:
                report.replies += 1
                continue
            diff = first_difference(reply["header"], got.header, reply["frames"], [bytes(f) for f in got.frames])
            if diff is not None:
                report.divergence = Divergence(reply["index"], reply["header"].get("type", "?"), *diff)
                return report
            report.replies += 1
            report.bytes += wire_bytes(got.header, [bytes(f) for f in got.frames])
            if on_request is not None:
                on_request(done, len(answered))
    finally:
        if client is not None:
            client.close()
    return report
