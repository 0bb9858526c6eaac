"""Etherbone over real UDP sockets on loopback: our client, our endpoint, and LiteX's own packets."""
from __future__ import annotations

import socket
import time

import numpy as np
import pytest
from litex.tools.remote.etherbone import EtherbonePacket, EtherboneReads, EtherboneRecord, EtherboneWrites

from accel.bus import BusError, BusTimeout, MemoryBus
from accel.etherbone import EtherboneBus, EtherboneEndpoint, parse_udp


@pytest.fixture
def board():
    with EtherboneEndpoint("udp://127.0.0.1:0", MemoryBus(1 << 14)) as ep:
        ep.start()
        yield ep


@pytest.mark.parametrize("n", [1, 255, 256, 1000, 5000])
def test_bursts_round_trip(board, n):
    words = np.random.default_rng(n).integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    with EtherboneBus(board.address) as bus:
        bus.write_words(0x40, words)
        assert np.array_equal(bus.read_words(0x40, n), words)
        assert np.array_equal(board.target.mem[0x10:0x10 + n], words)


def test_bursts_pack_records_into_datagrams(board):
    n = 5000
    with EtherboneBus(board.address) as loop, EtherboneBus(board.address, max_datagram=1472) as mtu:
        loop.write_words(0, np.arange(n))
        assert loop.datagrams == 1                       # 20 records of ≤ 255 words, one datagram
        mtu.write_words(0, np.arange(n))
        assert mtu.datagrams == -(-n // 255)             # one 255-word record per Ethernet frame
        loop.read_words(0, n)
        assert loop.datagrams == 1 + -(-n // 255)        # a read record per 255 words


def test_a_request_built_by_litex_is_answered(board):
    """The endpoint speaks the LiteX wire format: a probe and a write+read built by litex's code."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    sock.connect(parse_udp(board.address))
    probe = EtherbonePacket()
    probe.pf = 1
    probe.encode()
    sock.send(bytes(probe.bytes) + bytes(4))             # LiteX pads its probe with 4 bytes
    reply = EtherbonePacket(init=sock.recv(65536))
    reply.decode()
    assert reply.pr == 1 and reply.magic == 0x4e6f

    record = EtherboneRecord()
    record.writes = EtherboneWrites(base_addr=0x200, datas=[0xDEADBEEF, 7, 9])
    record.reads = EtherboneReads(base_ret_addr=0x1000, addrs=[0x204, 0x200, 0x208])
    packet = EtherbonePacket()
    packet.records = [record]
    packet.encode()
    sock.send(bytes(packet.bytes))
    reply = EtherbonePacket(init=sock.recv(65536))
    reply.decode()
    (answer,) = reply.records
    assert answer.writes.base_addr == 0x1000             # the read's return address
    assert answer.writes.get_datas() == [7, 0xDEADBEEF, 9]
    sock.close()


def test_a_bad_datagram_is_dropped_and_the_board_keeps_serving(board):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.sendto(b"not etherbone at all", parse_udp(board.address))
    sock.close()
    with EtherboneBus(board.address) as bus:
        bus.write(0x10, 5)
        assert bus.read(0x10) == 5


def test_a_silent_board_times_out_and_says_where():
    quiet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    quiet.bind(("127.0.0.1", 0))                         # bound, never answers
    address = f"udp://127.0.0.1:{quiet.getsockname()[1]}"
    t0 = time.monotonic()
    with EtherboneBus(address, timeout=0.05, retries=3) as bus, pytest.raises(BusTimeout, match=address):
        bus.read(0)
    assert time.monotonic() - t0 < 1.0
    quiet.close()


def test_nothing_listening_is_refused_at_once():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with EtherboneBus(f"udp://127.0.0.1:{port}", timeout=0.5) as bus, pytest.raises(BusError):
        bus.read(0)


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:1234", "udp://127.0.0.1", "127.0.0.1:1234"])
def test_addresses_are_checked(address):
    with pytest.raises(ValueError, match="udp://HOST:PORT"):
        EtherboneBus(address)


def test_misaligned_and_out_of_range_accesses_are_errors(board):
    with EtherboneBus(board.address, timeout=0.2, retries=2) as bus:
        with pytest.raises(BusError, match="not a non-negative multiple of 4"):
            bus.read_words(0x3, 1)
    with pytest.raises(BusError, match="beyond"):
        board.target.read_words(4 * (1 << 14), 1)
