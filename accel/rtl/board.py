"""The simulated FPGA board: the RTL core under Verilator, its bus served as LiteX Etherbone/UDP.

    python -m accel.rtl.board --bind udp://127.0.0.1:1234              # until Ctrl-C or SIGTERM
    python -m accel.rtl.board --bind udp://127.0.0.1:0 --ready-file board.addr --waves run.fst

    >>> from accel.rtl.board import serve_board                          # doctest: +SKIP
    >>> serve_board("udp://127.0.0.1:1234", saif="run.saif")   # blocks until SIGTERM / SIGINT

A driver talks to it as to a real board, ``accel.etherbone.EtherboneBus("udp://127.0.0.1:1234")``.
:func:`serve_board` builds ``board_sim`` (``accel/rtl/sv/board_sim.sv``: the core behind a burst
bridge; cached by :func:`accel.rtl.build.build`) and runs this module's cocotb bench on it in a
child process, whose log streams to this one's output. ``--waves`` traces every signal to an
FST file, ``--saif`` counts every signal's toggles into a SAIF file (power estimation); each is
a build of its own. Port 0 binds a free port: ``--ready-file`` holds the bound address
(``udp://HOST:PORT``) from when the socket is bound until the board stops.

The bench decodes each datagram with :func:`accel.etherbone.decode_request` (LiteX's packet
code), performs its writes and reads as bridge bursts of up to 256 words, one simulator wake-up
per burst (the clock runs in C; no Python runs per cycle), and answers with
:func:`~accel.etherbone.encode_reply`. A datagram that does not decode, or that addresses
words beyond the core's 24-bit bus, is logged and dropped, and the bench serves on.
Simulated time stands still while the core is idle. While it is busy (a run), the bench
simulates in chunks sized to about 50 ms of wall time and answers whatever arrived between
them, so a host polling STATUS is never left waiting near ``EtherboneBus``'s 1 s retry timeout.
SIGTERM or SIGINT stops the board cleanly (the bench notices within one chunk) and the trace
files are closed; the bench also stops when its launcher is gone.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from accel.bus import BusError
from accel.etherbone import Request, decode_request, encode_reply, parse_udp, runs
from accel.rtl import CORE_SOURCES, SV
from accel.rtl.build import INSTALL, RUN_ENV, RtlToolError, Sim, build, lint, tool_env

try:
    import cocotb
    from cocotb.clock import Clock
    from cocotb.simtime import get_sim_time
    from cocotb.triggers import ClockCycles, FallingEdge, First, RisingEdge, Timer
except ModuleNotFoundError as exc:
    raise RtlToolError(f"{exc.name} is not installed; install it with: {INSTALL}") from None

__all__ = ["BoardError", "CORE_SOURCES", "PARAMETERS", "build_board", "serve_board", "main"]

TOP = "board_sim"
BENCH = "accel.rtl.board"             # this module, as the simulator's Python imports it
BRIDGE = SV / "board_sim.sv"
PARAMETERS = ("P", "LANES", "CMAX", "BMAX")    # cosim_core's, passed through board_sim
MAX_WORDS = 256                       # words per bridge burst (board_sim's op_wdata / op_rdata)
ADDR_SPACE = 1 << 24                  # bytes the core's bus addresses (bus_addr[23:0])
PERIOD_NS = 10                        # 100 MHz; simulated time only, nothing depends on it
IDLE_POLL = 0.05                      # s: how long an idle bench blocks for a datagram
CHUNK_SECONDS = 0.05                  # wall time per chunk of a run between datagram checks
FIRST_CHUNK, MIN_CHUNK, MAX_CHUNK = 200_000, 1_000, 20_000_000      # cycles
# The launcher's settings reach the bench in the simulator process through its environment.
ENV_BIND, ENV_READY, ENV_STOP, ENV_PARENT = ("COSIM_BOARD_BIND", "COSIM_BOARD_READY",
                                             "COSIM_BOARD_STOP", "COSIM_BOARD_PARENT")

# The bench logs in the simulator, where cocotb shows INFO only for its own logger's children.
log = logging.getLogger("cocotb.board")


class BoardError(RuntimeError):
    """The board cannot start, or its simulation stopped on an error; the message says why."""


# ---- the launcher -------------------------------------------------------------------------

def build_board(core: Sequence[Path] | None = None, *, params: Mapping[str, int] | None = None,
                trace: str | None = None) -> Sim:
    """Build ``board_sim`` around the core from ``core`` (default :data:`CORE_SOURCES`), with
    ``params`` for the core, traced in ``trace`` format (``fst``, ``saif``) or not (None)."""
    sources = [Path(s) for s in (CORE_SOURCES if core is None else core)] + [BRIDGE]
    if missing := [str(s) for s in sources if not s.is_file()]:
        raise BoardError(f"missing RTL sources: {', '.join(missing)}")
    params = dict(params or {})
    if unknown := sorted(set(params) - set(PARAMETERS)):
        raise BoardError(f"unknown core parameters {', '.join(unknown)}; the core has {', '.join(PARAMETERS)}")
    try:
        return build(TOP, sources, parameters=params, waves=trace is not None, trace=trace or "fst",
                     top_only=trace is None)
    except RuntimeError:               # the runner's "command failed": say what failed
        pass
    if trace == "fst" and not _have_header("lz4.h"):
        raise BoardError("--waves needs the lz4 headers for Verilator's FST writer; install them "
                         "(Debian: apt-get install liblz4-dev)")
    errors = [line for line in lint(sources, top=TOP, parameters=params) if line.startswith("%Error")]
    raise BoardError(f"the Verilator build of {TOP} failed" + (":\n" + "\n".join(errors) if errors else
                     " compiling its C++ (Verilator itself reported no error)"))


def _have_header(name: str) -> bool:
    """Whether the C++ compiler finds ``#include <name>``."""
    done = subprocess.run(["c++", "-E", "-x", "c++", "-"], input=f"#include <{name}>\n",
                          capture_output=True, text=True, check=False)
    return done.returncode == 0


def serve_board(bind: str, *, waves: str | Path | None = None, saif: str | Path | None = None,
                params: Mapping[str, int] | None = None, ready_file: str | Path | None = None,
                core: Sequence[Path] | None = None) -> None:
    """Serve the simulated board on ``bind`` (``udp://HOST:PORT``) until SIGTERM or SIGINT.

    ``waves`` / ``saif``: trace to this FST / SAIF file (one or the other); ``params``: the
    core's parameters; ``ready_file``: holds the bound address (``udp://HOST:PORT``) from
    when the socket is bound until the board stops; ``core``: the core's sources (default
    :data:`CORE_SOURCES`).
    ValueError for a bad ``bind``; BoardError (RtlToolError for missing tools) when the board
    cannot run.
    """
    host, port = parse_udp(bind)
    if ready_file is not None:
        Path(ready_file).unlink(missing_ok=True)      # a stale one would announce a dead board
    if waves is not None and saif is not None:
        raise BoardError("--waves and --saif need different builds; ask for one of them")
    trace_file = Path(waves or saif).resolve() if (waves or saif) else None
    for path in (trace_file, ready_file):
        if path is not None and not Path(path).resolve().parent.is_dir():
            raise BoardError(f"{Path(path).resolve().parent} is not a directory (for {path})")
    _check_bind(host, port)
    sim = build_board(core, params=params, trace="fst" if waves else "saif" if saif else None)
    with tempfile.TemporaryDirectory(prefix="cosim-board-") as run_dir:
        stop = Path(run_dir) / "stop"
        env = {ENV_BIND: bind, ENV_STOP: str(stop), ENV_PARENT: str(os.getpid()),
               **({ENV_READY: str(Path(ready_file).resolve())} if ready_file else {})}
        with _stop_on_signals(stop):
            _simulate(sim, Path(run_dir), env, trace_file)


def _check_bind(host: str, port: int) -> None:
    """Fail here, with a plain message, if the address cannot be bound (the bench binds it)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((host, port))
    except OSError as exc:
        raise BoardError(f"cannot bind udp://{host}:{port}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _stop_on_signals(stop: Path) -> Iterator[None]:
    """Meanwhile, SIGTERM and SIGINT create the stop file the bench watches (the simulator gets
    a terminal's SIGINT too, but SIGTERM reaches only this process)."""
    if threading.current_thread() is not threading.main_thread():   # only there can Python trap signals
        yield
        return
    saved = {s: signal.signal(s, lambda signum, frame: stop.touch()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def _simulate(sim: Sim, run_dir: Path, env: Mapping[str, str], trace_file: Path | None) -> None:
    """Run the bench on ``sim`` in the foreground, its output streaming to ours (unlike
    :func:`accel.rtl.build.run`, which keeps a log file); BoardError if it failed."""
    from cocotb_tools.runner import get_runner

    runner = get_runner("verilator")
    results = run_dir / "results.xml"
    try:
        runner.test(test_module=BENCH, hdl_toplevel=sim.toplevel, hdl_toplevel_lang="verilog",
                    build_dir=sim.build_dir, test_dir=run_dir, waves=trace_file is not None,
                    test_args=["--trace-file", str(trace_file)] if trace_file else [],
                    extra_env={**tool_env(), **RUN_ENV, **env}, results_xml=str(results))
    except SystemExit:
        pass            # the runner exits on a failed test (or under pytest); the results say which
    cases = list(ET.parse(results).iter("testcase")) if results.exists() else []
    if not cases or any(c.find("failure") is not None or c.find("error") is not None for c in cases):
        raise BoardError("the board simulation stopped on an error (its log is above)")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m accel.rtl.board``: serve until stopped. Exit status 2 for a usage error such
    as a bad --bind, 1 when the board cannot run."""
    parser = argparse.ArgumentParser(
        prog="python -m accel.rtl.board",
        description="Serve the RTL core, simulated by Verilator, as a LiteX Etherbone board over UDP "
                    "(for accel.etherbone.EtherboneBus). Runs until Ctrl-C or SIGTERM.")
    parser.add_argument("--bind", required=True, metavar="udp://HOST:PORT",
                        help="address to serve on; port 0 picks a free port (see --ready-file)")
    traces = parser.add_mutually_exclusive_group()
    traces.add_argument("--waves", metavar="FILE.fst", help="trace every signal to this FST file")
    traces.add_argument("--saif", metavar="FILE.saif",
                        help="count every signal's toggles into this SAIF file (power estimation)")
    parser.add_argument("--ready-file", metavar="FILE",
                        help="holds the bound address while the board serves (written once "
                             "it is bound, removed when it stops)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help=f"a core parameter ({', '.join(PARAMETERS)}); repeatable")
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="stop when the process that started this one exits (cosim run uses this)")
    parser.add_argument("--core", nargs="+", type=Path, metavar="SV",
                        help="the core's SystemVerilog sources, packages first "
                             "(default: cosim_core and its units in accel/rtl/sv)")
    args = parser.parse_args(argv)
    if args.exit_with_parent:
        from accel.__main__ import exit_with_parent
        exit_with_parent()
    try:
        params = {}
        for item in args.param:
            name, _, value = item.partition("=")
            if not value.strip().isdigit():
                raise BoardError(f"--param {item!r}: use NAME=VALUE with an integer VALUE, e.g. P=8")
            params[name.strip()] = int(value)
        serve_board(args.bind, waves=args.waves, saif=args.saif, params=params,
                    ready_file=args.ready_file, core=args.core)
    except (ValueError, BoardError, RtlToolError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1
    except KeyboardInterrupt:          # during the build: nothing to shut down
        return 130
    return 0


# ---- the bench (runs inside the simulator) ------------------------------------------------

class Bridge:
    """Bursts through board_sim's bridge: one simulator wake-up per burst of <= 256 words."""

    def __init__(self, dut) -> None:
        self.dut = dut
        self._go = 0                   # go's level: toggled to start each burst

    async def start(self) -> None:
        """Start the clock (in C) and hold reset for two cycles."""
        dut = self.dut
        Clock(dut.clk, PERIOD_NS, unit="ns", impl="gpi").start()
        dut.rst.value, dut.go.value, dut.op_we.value, dut.op_addr.value, dut.op_count.value = 1, 0, 0, 0, 0
        await ClockCycles(dut.clk, 2)
        await FallingEdge(dut.clk)     # reset falls away from the rising edge that samples it
        dut.rst.value = 0

    async def _burst(self, we: bool, addr: int, count: int) -> None:
        dut = self.dut
        dut.op_we.value, dut.op_addr.value, dut.op_count.value = int(we), addr, count
        self._go ^= 1
        dut.go.value = self._go
        await RisingEdge(dut.finished)

    async def write(self, addr: int, words: Sequence[int]) -> None:
        data = np.asarray(words, dtype="<u4")
        for start in range(0, data.size, MAX_WORDS):
            chunk = data[start:start + MAX_WORDS]
            self.dut.op_wdata.value = int.from_bytes(chunk.tobytes(), "little")
            await self._burst(True, addr + 4 * start, chunk.size)

    async def read(self, addr: int, n: int) -> list[int]:
        out: list[int] = []
        for start in range(0, n, MAX_WORDS):
            count = min(MAX_WORDS, n - start)
            await self._burst(False, addr + 4 * start, count)
            packed = self.dut.op_rdata.value.to_unsigned().to_bytes(4 * MAX_WORDS, "little")
            out += np.frombuffer(packed, dtype="<u4")[:count].tolist()
        return out


@dataclass
class Board:
    """The Etherbone side of the bench: a UDP socket, a bridge, and when to stop."""

    bridge: Bridge
    sock: socket.socket
    stop_file: Path | None
    parent: int | None
    served: int = 0
    dropped: int = 0
    signalled: int | None = None
    chunk: int = FIRST_CHUNK           # cycles per chunk of a run, adapted to the simulator's speed

    def stop_reason(self) -> str | None:
        """Why to stop now (a signal, the launcher's stop file, the launcher gone), or None."""
        if self.signalled is not None:
            return signal.Signals(self.signalled).name
        if self.stop_file is not None and self.stop_file.exists():
            return "stop requested"
        if self.parent is not None and os.getppid() != self.parent:
            return "launcher gone"
        return None

    async def serve(self) -> str:
        """Answer datagrams and run the core until told to stop; return why."""
        busy = self.bridge.dut.busy
        while (reason := self.stop_reason()) is None:
            waiting = select.select([self.sock], [], [], 0 if busy.value else IDLE_POLL)[0]
            if waiting:
                await self.answer()
            elif busy.value:
                await self.run_chunk()
        return reason

    async def answer(self) -> None:
        data, peer = self.sock.recvfrom(65536)
        try:
            request = decode_request(data)
            _check_addresses(request)
        except BusError as exc:
            self.dropped += 1
            log.warning("dropped a datagram from %s:%d: %s", *peer, exc)
            return
        read_words = []
        for record in request.records:
            if record.writes:
                await self.bridge.write(record.base, record.writes)
            if record.reads:
                words: list[int] = []
                for start, n in runs(record.reads, MAX_WORDS):
                    words += await self.bridge.read(start, n)
                read_words.append(words)
        self.served += 1
        reply = encode_reply(request, read_words)
        if reply is not None:
            try:
                self.sock.sendto(reply, peer)
            except OSError as exc:     # the host went away; the next one may not
                log.warning("cannot reply to %s:%d: %s", *peer, exc)

    async def run_chunk(self) -> None:
        """Simulate until the run ends or a chunk of cycles has passed, whichever is first."""
        dut, t0 = self.bridge.dut, time.perf_counter()
        await First(FallingEdge(dut.busy), Timer(self.chunk * PERIOD_NS, unit="ns"))
        elapsed = time.perf_counter() - t0
        if dut.busy.value and elapsed > 0:     # a whole chunk: rescale to CHUNK_SECONDS
            self.chunk = int(min(MAX_CHUNK, max(MIN_CHUNK, self.chunk * CHUNK_SECONDS / elapsed)))


def _check_addresses(request: Request) -> None:
    """BusError unless every access is to an aligned word within the core's 24-bit bus: a
    request the bench cannot perform as a whole is refused before any of it is performed."""
    for r in request.records:
        spans = ([(r.base, len(r.writes))] if r.writes else []) + [(a, 1) for a in r.reads]
        for addr, n in spans:
            if addr % 4 or addr + 4 * n > ADDR_SPACE:
                raise BusError(f"{n} words at 0x{addr:08x}: misaligned or beyond the core's 24-bit bus")


def _write_ready(path: Path, address: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(address + "\n")
    os.replace(partial, path)          # a reader never sees half an address


@cocotb.test()
async def board(dut) -> None:
    """Serve board_sim's bus as Etherbone until stopped (run by serve_board, not by pytest)."""
    host, port = parse_udp(os.environ[ENV_BIND])
    bridge = Bridge(dut)
    await bridge.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, port))
        address = f"udp://{host}:{sock.getsockname()[1]}"
        parent = os.environ.get(ENV_PARENT)
        stop = os.environ.get(ENV_STOP)
        srv = Board(bridge, sock, Path(stop) if stop else None, int(parent) if parent else None)

        def on_signal(signum: int, frame: object) -> None:
            srv.signalled = signum

        saved = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        ready = Path(os.environ[ENV_READY]) if ENV_READY in os.environ else None
        try:
            if ready is not None:
                _write_ready(ready, address)
            log.info("serving Etherbone on %s", address)
            reason = await srv.serve()
        finally:
            if ready is not None:
                ready.unlink(missing_ok=True)
            for s, handler in saved.items():
                signal.signal(s, handler)
    log.info("stopped (%s): served %d datagrams, dropped %d, %d cycles simulated", reason, srv.served,
             srv.dropped, int(get_sim_time("ns")) // PERIOD_NS)


if __name__ == "__main__":
    sys.exit(main())
