"""Run traces: one append-only file per run, the single source of truth for replay and energy.

Usage::

    with TraceWriter(path, config=cfg_dict, seed=0) as trace:
        client = Client(address, tap=trace.message)   # every message, both directions
        trace.mark("algorithm", name="halp")
        trace.epoch({"algorithm": "halp", "epoch": 1, "gap": 3e-4, ...})
    summary = summarize(path)

The file is a plain stream of msgpack maps, each written and flushed whole, so a run that
crashes leaves every record before the crash readable; a torn last record is reported as
``truncated``, never an error. The first record is the self-describing header.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import msgpack

from protocol.messages import PROTOCOL_VERSION

TRACE_FORMAT = "cosim-trace"
TRACE_VERSION = 1


class TraceError(ValueError):
    """A file that is not a cosim trace, or one written by an incompatible version."""


class TraceWriter:
    """Appends records to a trace file; flushes each one so a crash loses nothing before it.

    The header names the accelerator that answered: it is written once the ``capabilities``
    reply passes through :meth:`message` (its backend, kernel spec and protocol version), or,
    in a run without an accelerator, before the first other record. Until then the one
    ``hello`` request waits in memory; :meth:`close` writes whatever is waiting.
    """

    def __init__(self, path: str | os.PathLike, *, config: dict, seed: int) -> None:
        from cosim import __version__

        self._path = Path(path)
        self._file = open(self._path, "ab")
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._header: dict | None = {
            "kind": "header", "format": TRACE_FORMAT, "version": TRACE_VERSION,
            "protocol": list(PROTOCOL_VERSION), "cosim": __version__, "python": platform.python_version(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "seed": seed, "config": config, "accelerator": None,
        }
        self._waiting: list[dict] = []

    def _flush_header(self) -> None:
        if self._header is not None:
            header, self._header = self._header, None
            for record in (header, *self._waiting):
                self._write(record)
            self._waiting.clear()

    @property
    def path(self) -> Path:
        return self._path

    def _write(self, record: dict) -> None:
        self._file.write(self._pack(record))
        self._file.flush()

    def message(self, event: Any) -> None:
        """Record one protocol message (a ``protocol.channel.TapEvent``)."""
        record = {"kind": "message", "t": event.t, "dir": event.direction,
                  "header": event.header, "frames": [bytes(f) for f in event.frames]}
        if self._header is None:
            self._write(record)
            return
        self._waiting.append(record)
        if event.header.get("type") == "capabilities":
            body = event.header.get("body") or {}
            self._header["accelerator"] = {"backend": body.get("backend"), "spec": body.get("spec"),
                                           "protocol": event.header.get("v")}
            self._flush_header()

    def mark(self, what: str, **info: Any) -> None:
        """Record a run event (an algorithm starting, an interruption …)."""
        self._flush_header()
        self._write({"kind": "mark", "what": what, **info})

    def epoch(self, metrics: dict) -> None:
        """Record the host's view of one epoch (loss, gap, op counts …)."""
        self._flush_header()
        self._write({"kind": "epoch", **metrics})

    def close(self) -> None:
        if not self._file.closed:
            self._flush_header()
            self._file.close()

    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class TraceReader:
    """Reads a trace; ``records`` stops at a torn tail and sets ``truncated``."""

    path: Path
    truncated: bool = field(default=False, init=False)

    def __iter__(self) -> Iterator[dict]:
        with open(self.path, "rb") as f:
            unpacker = msgpack.Unpacker(f, raw=False, strict_map_key=False)
            first = True
            try:
                for record in unpacker:
                    if first:
                        _check_header(record, self.path)
                        first = False
                    yield record
            except TraceError:
                raise
            except (msgpack.exceptions.ExtraData, msgpack.exceptions.FormatError,
                    msgpack.exceptions.StackError, ValueError) as exc:
                if first:
                    raise TraceError(f"{self.path} is not a cosim trace ({exc})") from None
                self.truncated = True
                return
            if first:
                raise TraceError(f"{self.path} is empty: no trace header")
            # Unpacker stops silently on a partial record; tell if bytes were left over.
            if unpacker.tell() < os.path.getsize(self.path):
                self.truncated = True


def _check_header(record: Any, path: Path) -> None:
    if not (isinstance(record, dict) and record.get("format") == TRACE_FORMAT):
        raise TraceError(f"{path} is not a cosim trace (no '{TRACE_FORMAT}' header)")
    if record.get("version") != TRACE_VERSION:
        raise TraceError(f"{path} is trace version {record.get('version')}; "
                         f"this cosim reads version {TRACE_VERSION}")


def payloads(path: str | os.PathLike) -> list[tuple]:
    """The deterministic content of a trace's messages: (direction, type, seq, body, frames).

    Times and session ids differ between runs by design, and so does the number of progress
    messages (one every few seconds of a long request); everything else must not.
    """
    out = []
    for r in TraceReader(Path(path)):
        if r["kind"] == "message" and r["header"].get("type") != "progress":
            h = r["header"]
            out.append((r["dir"], h.get("type"), h.get("seq"), msgpack.packb(h.get("body"), use_bin_type=True),
                        tuple(r["frames"])))
    return out


def summarize(path: str | os.PathLike) -> dict:
    """Counts and sizes by message type and direction, epochs recorded, op totals."""
    reader = TraceReader(Path(path))
    header: dict = {}
    messages: Counter = Counter()
    sizes: Counter = Counter()
    ops: Counter = Counter()
    epochs: list[dict] = []
    marks: list[dict] = []
    t0 = t1 = None
    for r in reader:
        kind = r.get("kind")
        if kind == "header":
            header = r
        elif kind == "message":
            key = (r["dir"], r["header"].get("type", "?"))
            messages[key] += 1
            sizes[key] += sum(len(f) for f in r["frames"]) + len(msgpack.packb(r["header"]))
            t0 = r["t"] if t0 is None else t0
            t1 = r["t"]
            body = r["header"].get("body") or {}
            if r["header"].get("type") == "epoch_report":
                ops.update(body.get("ops", {}))
        elif kind == "epoch":
            epochs.append(r)
        elif kind == "mark":
            marks.append(r)
    return {"header": header, "messages": messages, "bytes": sizes, "ops": ops, "epochs": epochs,
            "marks": marks, "seconds": (t1 - t0) if t0 is not None else 0.0,
            "truncated": reader.truncated}
