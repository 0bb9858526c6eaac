"""The simulated board (accel/rtl/board.py) in real processes over real UDP sockets, with the
stand-in core stub_core.sv: bursts, registers, a long run polled through EtherboneBus, LiteX's
own request packets, garbage, and shutdown on SIGTERM."""
from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from litex.tools.remote.etherbone import EtherbonePacket, EtherboneReads, EtherboneRecord, EtherboneWrites

from accel.etherbone import EtherboneBus, parse_udp
from accel.rtl.regmap import MAGIC, MEM, REG, unpack

STUB = Path(__file__).parent / "stub_core.sv"
DATA = MEM["DATA"][0]
STARTUP = 600                        # s: on a cold cache the board builds its simulator first
# The stub stays busy for STEPS * 1000 cycles; the bench simulates about 0.7 M cycles/s here,
# so this run takes about 3.5 s of wall time, over three times EtherboneBus's 1 s timeout.
RUN_STEPS = 2400


class Board:
    """``python -m accel.rtl.board`` with the stub core, on a free port, logging to a file."""

    def __init__(self, tmp: Path, *options: str) -> None:
        self.ready, self.log = tmp / "board.addr", tmp / "board.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "accel.rtl.board", "--bind", "udp://127.0.0.1:0",
                 "--ready-file", str(self.ready), "--core", str(STUB), *options],
                stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STARTUP
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise AssertionError(f"the board did not come up:\n{self.output()}")
            time.sleep(0.05)
        self.address = self.ready.read_text().strip()

    def output(self) -> str:
        return self.log.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    b = Board(tmp_path_factory.mktemp("board"))
    yield b
    b.close()


@pytest.mark.slow
def test_bursts_round_trip(board):
    n = 5000
    words = np.random.default_rng(5).integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    with EtherboneBus(board.address, retries=1) as bus:
        bus.write_words(DATA, words)
        assert np.array_equal(bus.read_words(DATA, n), words)
        bus.write_words(DATA + 4 * 7, [1, 2, 3])               # a short burst in the middle
        assert bus.read_words(DATA + 4 * 6, 5).tolist() == [words[6], 1, 2, 3, words[10]]


@pytest.mark.slow
def test_registers(board):
    with EtherboneBus(board.address, retries=1) as bus:
        assert bus.read(REG["ID"]) == MAGIC
        bus.write(REG["STEPS"], 12345)
        assert bus.read(REG["STEPS"]) == 12345
        assert bus.read(REG["VERSION"]) == 0                     # the stub maps no more


@pytest.mark.slow
def test_a_long_run_keeps_the_board_answering(board):
    """A run of seconds is simulated in chunks with polls answered between them: with one try
    of 1 s per request, any silence of a second fails the wait."""
    with EtherboneBus(board.address, timeout=1.0, retries=1) as bus:
        bus.write(REG["STEPS"], RUN_STEPS)
        bus.write(REG["CONTROL"], 1)
        assert unpack("STATUS", bus.read(REG["STATUS"]))["busy"] == 1
        sent, t0 = bus.datagrams, time.monotonic()
        status = bus.wait(REG["STATUS"], mask=0b11, value=0b10, timeout=60)
        took, polls = time.monotonic() - t0, bus.datagrams - sent
    assert unpack("STATUS", status) == {"busy": 0, "done": 1, "error": 0}
    assert took > 1.0, f"the run took {took:.2f} s: too short to show anything"
    assert polls >= 10 * took, f"{polls} polls answered in {took:.1f} s"


@pytest.mark.slow
def test_a_request_built_by_litex_is_answered(board):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.connect(parse_udp(board.address))
        probe = EtherbonePacket()
        probe.pf = 1
        probe.encode()
        sock.send(bytes(probe.bytes) + bytes(4))                  # LiteX pads its probe with 4 bytes
        reply = EtherbonePacket(init=sock.recv(65536))
        reply.decode()
        assert reply.pr == 1 and reply.magic == 0x4e6f

        record = EtherboneRecord()
        record.writes = EtherboneWrites(base_addr=DATA + 0x200, datas=[0xDEADBEEF, 7, 9])
        # Reads out of order and of two regions: three bursts through the bridge.
        record.reads = EtherboneReads(base_ret_addr=0x1000, addrs=[DATA + 0x204, DATA + 0x200,
                                                                   DATA + 0x204, DATA + 0x208, REG["ID"]])
        request = EtherbonePacket()
        request.records = [record]
        request.encode()
        sock.send(bytes(request.bytes))
        reply = EtherbonePacket(init=sock.recv(65536))
        reply.decode()
        (answer,) = reply.records
    assert answer.writes.base_addr == 0x1000                     # the read's return address
    assert answer.writes.get_datas() == [7, 0xDEADBEEF, 7, 9, MAGIC]


def datagram(writes: tuple[int, list[int]] | None = None, reads: list[int] | None = None) -> bytes:
    """One record's request, encoded by LiteX."""
    record = EtherboneRecord()
    if writes is not None:
        record.writes = EtherboneWrites(base_addr=writes[0], datas=writes[1])
    if reads is not None:
        record.reads = EtherboneReads(base_ret_addr=0x2000, addrs=reads)
    packet = EtherbonePacket()
    packet.records = [record]
    packet.encode()
    return bytes(packet.bytes)


@pytest.mark.slow
def test_bad_datagrams_are_dropped_and_the_board_keeps_serving(board):
    bad = [b"not etherbone at all",
           datagram(writes=(DATA, [1, 2, 3]))[:-6],                  # a record cut short
           datagram(writes=(DATA, [1]), reads=[1 << 24]),             # beyond the 24-bit bus
           datagram(writes=((1 << 24) - 4, [7, 8]))]                  # a burst running past it
    with EtherboneBus(board.address, retries=1) as bus:
        bus.write(DATA, 0x55)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for data in bad:
                sock.sendto(data, parse_udp(board.address))
        assert bus.read(DATA) == 0x55                                # nothing of a refused request
        bus.write(DATA, 5)
        assert bus.read(DATA) == 5
    assert board.output().count("dropped a datagram") == len(bad)


@pytest.mark.slow
def test_sigterm_stops_the_board_cleanly(tmp_path):
    b = Board(tmp_path)
    with EtherboneBus(b.address, retries=1) as bus:
        assert bus.read(REG["ID"]) == MAGIC
        bus.write(REG["STEPS"], 100_000)                         # busy far longer than the test
        bus.write(REG["CONTROL"], 1)
    b.proc.send_signal(signal.SIGTERM)
    assert b.proc.wait(20) == 0, b.output()
    assert "stopped (stop requested): served 3 datagrams, dropped 0" in b.output()
    assert not b.ready.exists()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(parse_udp(b.address))                          # the simulator let go of the port


@pytest.mark.slow
@pytest.mark.parametrize("switch, magic", [("--waves", b"\x00"), ("--saif", b"(SAIFILE")])
def test_a_session_writes_waveforms_or_toggle_activity(tmp_path, switch, magic):
    """--waves: an FST file of every signal; --saif: the toggle counts, for energy estimates."""
    out = tmp_path / ("run.fst" if switch == "--waves" else "run.saif")
    b = Board(tmp_path, switch, str(out))
    with EtherboneBus(b.address) as bus:
        bus.write(REG["STEPS"], 5)
        bus.write(REG["CONTROL"], 1)
        bus.wait(REG["STATUS"], mask=0b10, value=0b10, timeout=30)
    b.close()
    assert b.proc.returncode == 0, b.output()
    data = out.read_bytes()
    assert len(data) > 200 and magic in data[:64]
    if switch == "--saif":
        busy = re.search(rb"\(busy \(T0 \d+\) \(T1 (\d+)\)", data)
        assert busy and int(busy[1]) > 0, "the busy port never spent a cycle high"


@pytest.mark.slow
def test_the_simulator_stops_when_its_launcher_dies(tmp_path):
    b = Board(tmp_path)
    b.proc.kill()                                                # no SIGTERM handler, no stop file
    b.proc.wait()
    deadline = time.monotonic() + 20
    while b.ready.exists():                                      # the bench removes it as it stops
        assert time.monotonic() < deadline, "the simulator outlived its launcher"
        time.sleep(0.05)
    assert "stopped (launcher gone)" in b.output()


@pytest.mark.slow
def test_a_core_that_does_not_build_is_reported_plainly(tmp_path):
    broken = tmp_path / "cosim_core.sv"
    broken.write_text("module cosim_core(input logic clk;\nendmodule\n")
    done = subprocess.run([sys.executable, "-m", "accel.rtl.board", "--bind", "udp://127.0.0.1:0",
                           "--core", str(broken)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "the Verilator build of board_sim failed" in done.stderr and "%Error" in done.stderr


@pytest.mark.parametrize("bind", ["tcp://127.0.0.1:1234", "udp://127.0.0.1", "udp://192.0.2.1:1234"])
def test_a_bad_bind_is_one_clear_line(bind):
    done = subprocess.run([sys.executable, "-m", "accel.rtl.board", "--bind", bind],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode in (1, 2) and "Traceback" not in done.stderr
    assert done.stderr.startswith("error:") and done.stderr.count("\n") == 1
