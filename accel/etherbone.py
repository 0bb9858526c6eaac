"""Etherbone over UDP, as a LiteX board with an Ethernet core speaks it: client and endpoint.

    >>> from accel.bus import MemoryBus
    >>> with EtherboneEndpoint("udp://127.0.0.1:0", MemoryBus(1024)) as board:
    ...     board.start()
    ...     with EtherboneBus(board.address) as bus:
    ...         bus.write_words(0x100, range(300))              # two records, one datagram
    ...         bus.read_words(0x100 + 4 * 298, 2).tolist()
    [298, 299]

The wire format is LiteX's (``litex.tools.remote.etherbone``; its packet classes encode and
decode every datagram here): an 8-byte header (magic 0x4e6f, version 1, probe flags, address
and port size), then records of up to 255 writes to consecutive addresses from a base address
and up to 255 reads, each read naming its address; a board answers reads with a record of
writes to the request's return address, which this client uses as a request id. Bursts are
split into records of at most 255 words and as many records go into one datagram as fit
``max_datagram`` (1472 bytes, a standard Ethernet MTU; loopback takes more).

Etherbone writes have no reply of their own. To know a write arrived, every datagram this
client sends ends with a read (of the last word written, or of the words asked for), and the
client retries on silence (``retries`` × ``timeout``, LiteX's 10 × 1 s by default). A retried
datagram repeats its writes: harmless for memories and registers, and a write-one-pulse
register sees a second pulse only if the first reply, not the request, was lost.

A board decodes a datagram with :func:`decode_request`, applies its records in order (writes,
then reads, bursts per :func:`runs`) and answers with :func:`encode_reply`:
:class:`EtherboneEndpoint` does so onto any :class:`~accel.bus.Bus`, and the simulated board's
cocotb bench (``accel.rtl.board``) onto the core, awaiting each burst.
"""
from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass
from typing import Iterator, Sequence
from urllib.parse import urlparse

import numpy as np
from litex.tools.remote.etherbone import EtherbonePacket, EtherboneReads, EtherboneRecord, EtherboneWrites

from accel.bus import WORD, Bus, BusError, BusTimeout, check_aligned

__all__ = ["EtherboneBus", "EtherboneEndpoint", "Record", "Request", "decode_request", "encode_reply",
           "runs", "parse_udp", "MAX_BURST"]

MAX_BURST = 255                    # words per record, an Etherbone limit
ETHERNET_DATAGRAM = 1472           # UDP payload of a 1500-byte Ethernet frame
LOOPBACK_DATAGRAM = 60000
HEADER = 8                         # packet header bytes
RECORD = 4                         # record header bytes

log = logging.getLogger(__name__)


def parse_udp(address: str) -> tuple[str, int]:
    """``udp://HOST:PORT`` → (host, port); a ValueError names the expected form."""
    url = urlparse(address)
    if url.scheme != "udp" or not url.hostname or url.port is None:
        raise ValueError(f"{address!r} is not an Etherbone address; use udp://HOST:PORT "
                         "(e.g. udp://127.0.0.1:1234)")
    return url.hostname, url.port


def _record(writes: tuple[int, Sequence[int]] | None = None,
            reads: tuple[int, Sequence[int]] | None = None) -> EtherboneRecord:
    """One record: writes (base address, words) and/or reads (return address, addresses)."""
    record = EtherboneRecord()
    if writes is not None:
        record.writes = EtherboneWrites(base_addr=writes[0], datas=[int(w) for w in writes[1]])
    if reads is not None:
        record.reads = EtherboneReads(base_ret_addr=reads[0], addrs=[int(a) for a in reads[1]])
    return record


def _packet(records: list[EtherboneRecord], probe: bool = False, reply: bool = False) -> bytes:
    packet = EtherbonePacket()
    packet.records = records
    packet.pf, packet.pr = int(probe), int(reply)
    packet.encode()
    return bytes(packet.bytes)


def _decode(data: bytes) -> EtherbonePacket:
    """Decode a datagram; BusError for anything that is not a well-formed Etherbone packet."""
    if len(data) < HEADER or data[:2] != b"\x4e\x6f":
        raise BusError(f"not an Etherbone datagram ({len(data)} bytes, starting {data[:2].hex() or 'empty'})")
    packet = EtherbonePacket(init=data)
    try:
        packet.decode()
    except Exception as exc:   # LiteX's decoder raises struct.error, IndexError, ... on torn records
        raise BusError(f"malformed Etherbone datagram: {exc}") from None
    return packet


def _return_address(reads: EtherboneReads) -> int:
    """The return address of a decoded read record. LiteX 2024.12's ``EtherboneReads.decode``
    computes it but never stores it (``base_ret_addr`` stays 0), so it is read from the
    record's bytes, where it is the first big-endian word."""
    return int.from_bytes(bytes(reads.bytes[:4]), "big")


@dataclass(frozen=True)
class Record:
    """A request record: ``writes`` to consecutive words from ``base``, then reads of ``reads``
    (addresses), whose words go back to ``ret``, the return address (the client's request id)."""

    base: int
    writes: list[int]
    ret: int
    reads: list[int]


@dataclass(frozen=True)
class Request:
    """A decoded request datagram: a probe (answered at once, records ignored) or records."""

    probe: bool
    records: list[Record]


def decode_request(data: bytes) -> Request:
    """The request in a datagram; BusError if it is not a well-formed Etherbone packet."""
    packet = _decode(data)
    if packet.pf:
        return Request(probe=True, records=[])
    records = []
    for r in packet.records:
        # (LiteX's packet classes subclass list and stay empty: test them against None)
        writes = r.writes is not None and r.writes.writes
        reads = r.reads is not None and r.reads.reads
        records.append(Record(base=r.writes.base_addr if writes else 0,
                              writes=r.writes.get_datas() if writes else [],
                              ret=_return_address(r.reads) if reads else 0,
                              reads=r.reads.get_addrs() if reads else []))
    return Request(probe=False, records=records)


def encode_reply(request: Request, read_words: Sequence[Sequence[int]]) -> bytes | None:
    """The reply datagram to ``request``, given the words read for each of its records that
    reads, in order; None when there is nothing to answer (a request of writes only)."""
    if request.probe:
        return _packet([], reply=True)
    reading = [r for r in request.records if r.reads]
    replies = [_record(writes=(r.ret, words)) for r, words in zip(reading, read_words, strict=True)]
    return _packet(replies) if replies else None


def runs(addrs: Sequence[int], limit: int) -> Iterator[tuple[int, int]]:
    """(first address, words) per run of consecutive word addresses in ``addrs``, each run at
    most ``limit`` words: the bursts that read ``addrs`` in order."""
    i = 0
    while i < len(addrs):
        j = i + 1
        while j < len(addrs) and j - i < limit and addrs[j] == addrs[j - 1] + WORD:
            j += 1
        yield addrs[i], j - i
        i = j


class EtherboneBus(Bus):
    """The client side: a :class:`~accel.bus.Bus` onto a board at ``udp://HOST:PORT``."""

    def __init__(self, address: str, *, timeout: float = 1.0, retries: int = 10,
                 max_datagram: int | None = None) -> None:
        self.address = address
        host, port = parse_udp(address)
        self._peer = (host, port)
        loopback = host in ("localhost",) or host.startswith("127.")
        self.max_datagram = max_datagram or (LOOPBACK_DATAGRAM if loopback else ETHERNET_DATAGRAM)
        self.timeout, self.retries = timeout, retries
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.settimeout(timeout)
        self._sock.connect(self._peer)
        self._id = 0
        self.datagrams = 0            # request datagrams sent (retries included): for benchmarks

    def close(self) -> None:
        self._sock.close()

    def _exchange(self, records: list[EtherboneRecord], n_reads: int) -> list[int]:
        """Send one datagram whose last record reads ``n_reads`` words; return those words."""
        ret = records[-1].reads.base_ret_addr
        data = _packet(records)
        for attempt in range(self.retries):
            self._sock.send(data)
            self.datagrams += 1
            try:
                while True:          # skip stale replies to earlier, retried requests
                    reply = _decode(self._sock.recv(65536))
                    got = [r for r in reply.records if r.writes is not None and r.writes.base_addr == ret]
                    if got:
                        words = got[0].writes.get_datas()
                        if len(words) != n_reads:
                            raise BusError(f"{self.address}: reply with {len(words)} words to a read "
                                           f"of {n_reads}")
                        return words
            except socket.timeout:
                log.debug("%s: no reply to request %d (try %d of %d)", self.address, ret, attempt + 1,
                          self.retries)
            except ConnectionRefusedError:
                raise BusError(f"{self.address}: nothing listens there (connection refused)") from None
        raise BusTimeout(f"{self.address}: no reply after {self.retries} tries of {self.timeout:g} s")

    def _next_id(self) -> int:
        self._id = (self._id + WORD) & 0xFFFFFFFC
        return self._id

    def _fits(self, records: list[EtherboneRecord], extra: int) -> bool:
        # (LiteX's packet classes subclass list and stay empty: test them against None)
        size = HEADER + sum(RECORD + (4 + 4 * len(r.writes.writes) if r.writes is not None else 0)
                            + (4 + 4 * len(r.reads.reads) if r.reads is not None else 0) for r in records)
        return size + extra <= self.max_datagram

    def read_words(self, addr: int, n: int) -> np.ndarray:
        check_aligned(addr, n)
        out = np.empty(n, dtype=np.uint32)
        for start in range(0, n, MAX_BURST):
            count = min(MAX_BURST, n - start)
            addrs = range(addr + WORD * start, addr + WORD * (start + count), WORD)
            out[start:start + count] = self._exchange([_record(reads=(self._next_id(), addrs))], count)
        return out

    def write_words(self, addr: int, words: Sequence[int] | np.ndarray) -> None:
        words = np.asarray(words, dtype=np.uint32)
        check_aligned(addr, words.size)
        records: list[EtherboneRecord] = []
        last = addr
        for start in range(0, words.size, MAX_BURST):
            chunk = words[start:start + MAX_BURST]
            base = addr + WORD * start
            record = _record(writes=(base, chunk))
            if records and not self._fits(records + [record], RECORD + 8):
                self._confirm(records, last)
                records = []
            records.append(record)
            last = base + WORD * (chunk.size - 1)
        if records:
            self._confirm(records, last)

    def _confirm(self, records: list[EtherboneRecord], last: int) -> None:
        """Send the write records with a read of the last word written: its reply is the ack."""
        records[-1].reads = EtherboneReads(base_ret_addr=self._next_id(), addrs=[last])
        self._exchange(records, 1)


class EtherboneEndpoint:
    """The board side: answers Etherbone datagrams on ``udp://HOST:PORT`` from a target bus.

    ``target`` is any :class:`~accel.bus.Bus` (a memory, or the simulated core's bus inside a
    cocotb test bench). Port 0 picks a free port; ``address`` tells which. Serve in a thread
    with :meth:`start`, or call :meth:`serve` from a loop of your own.
    """

    def __init__(self, bind: str, target: Bus) -> None:
        host, port = parse_udp(bind)
        self.target = target
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, port))
        self._sock.settimeout(0.1)
        self.address = f"udp://{host}:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.served = 0

    def answer(self, data: bytes) -> bytes | None:
        """The reply to one datagram (None when nothing is to be answered)."""
        request = decode_request(data)
        read_words = []
        for record in request.records:
            if record.writes:
                self.target.write_words(record.base, record.writes)
            if record.reads:
                read_words.append([int(w) for start, n in runs(record.reads, MAX_BURST)
                                   for w in self.target.read_words(start, n)])
        return encode_reply(request, read_words)

    def serve(self, should_stop=lambda: False) -> None:
        """Answer datagrams until ``should_stop()``; a bad datagram is logged and dropped."""
        while not (self._stop.is_set() or should_stop()):
            try:
                data, peer = self._sock.recvfrom(65536)
            except socket.timeout:
                continue
            try:
                reply = self.answer(data)
            except BusError as exc:
                log.warning("dropped a datagram from %s: %s", peer, exc)
                continue
            self.served += 1
            if reply is not None:
                self._sock.sendto(reply, peer)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve, name="etherbone", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sock.close()

    def __enter__(self) -> "EtherboneEndpoint":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
