"""Launching the accelerator daemon as a separate process.

Usage::

    with AcceleratorProcess.start("ipc:///tmp/run/accel.sock") as accel:
        train(cfg, connect=accel.address)

``start`` returns once the daemon says it is serving (or raises with the daemon's own
error output if it exits first). Leaving the block stops it: a polite SIGTERM, then SIGKILL.
:func:`watch` turns the daemon dying mid-run into an :class:`AcceleratorDied` raised in the
main thread, so a host blocked on a socket stops at once instead of waiting for its timeout.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

READY_MARK = "serving"


class AcceleratorDied(RuntimeError):
    """The accelerator process exited while the host still needed it."""


class AcceleratorProcess:
    """A running ``python -m accel`` daemon (a thin handle: address, pid, stop)."""

    def __init__(self, proc: subprocess.Popen, address: str, log: Path) -> None:
        self._proc = proc
        self._address = address
        self._log = log

    WHAT = "the accelerator daemon"

    @classmethod
    def start(cls, address: str, *, backend: str = "emulated", fpga: str | None = None,
              timeout: float = 30.0, log: Path | None = None, args: tuple[str, ...] = ()) -> "AcceleratorProcess":
        """Start ``python -m accel`` on ``address``; ``args``: further daemon options (``--lease``, ``--keys`` …)."""
        self = cls._spawn([sys.executable, "-m", "accel", "--bind", address, "--backend", backend,
                           *(["--fpga", fpga] if fpga else []), *args, "--exit-with-parent"],
                          address, log or Path(tempfile.mkstemp(prefix="cosim-accel-", suffix=".log")[1]))
        self._await(lambda: READY_MARK in self.output(), timeout)
        return self

    @classmethod
    def _spawn(cls, argv: list[str], address: str, log: Path) -> "AcceleratorProcess":
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)  # Ctrl-C reaches the host only; it stops us in order
        return cls(proc, address, log)

    def _await(self, ready, timeout: float, on_wait=None) -> None:
        """Wait until ``ready()``; raise AcceleratorDied with the output if we exit or time out."""
        started = time.monotonic()
        while not ready():
            waited = time.monotonic() - started
            if self._proc.poll() is not None:
                raise AcceleratorDied(f"{self.WHAT} exited with code {self._proc.returncode} before "
                                      f"serving:\n{self.output().strip()[-2000:]}")
            if waited > timeout:
                self.stop()
                raise AcceleratorDied(f"{self.WHAT} did not start serving within {timeout:.0f} s:\n"
                                      f"{self.output().strip()[-2000:]}")
            if on_wait is not None:
                on_wait(waited)
            time.sleep(0.05)

    @property
    def address(self) -> str:
        return self._address

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.poll()

    def memory(self) -> dict[str, int]:
        """Resident memory in bytes: ``rss`` now and ``peak`` so far (Linux /proc; {} elsewhere)."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return {}
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return {name: int(fields[key].split()[0]) * 1024 for name, key in (("rss", "VmRSS"), ("peak", "VmHWM"))
                if key in fields}

    def output(self) -> str:
        """What the daemon has printed so far."""
        try:
            return self._log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def exited(self, within: float = 0.0) -> bool:
        """Whether the daemon has exited (waiting up to ``within`` seconds for it to)."""
        try:
            self._proc.wait(within)
        except subprocess.TimeoutExpired:
            return False
        return True

    def death_notice(self) -> str:
        """What to tell the user when the daemon exited under a running host."""
        tail = "\n".join(self.output().strip().splitlines()[-10:])
        return (f"{self.WHAT} (pid {self.pid}) exited with code {self.returncode} "
                f"during the run" + (f"; its last output:\n{tail}" if tail else ""))

    def stop(self, grace: float = 5.0) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(grace)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> "AcceleratorProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class BoardProcess(AcceleratorProcess):
    """A running simulated board (``python -m accel.rtl.board``): the RTL core under Verilator,
    serving Etherbone on a loopback UDP port it picks. ``start`` returns once it serves, which
    the first time includes building the core (about 15 s here; later builds come from the
    cache). ``core`` replaces the core's sources (a design with its bus, e.g. a benchmark's)."""

    WHAT = "the simulated board"

    @classmethod
    def start(cls, *, timeout: float = 900.0, log: Path | None = None,  # type: ignore[override]
              on_wait=None, core: list[Path] | None = None) -> "BoardProcess":
        log = log or Path(tempfile.mkstemp(prefix="cosim-board-", suffix=".log")[1])
        ready = log.with_suffix(".address")
        ready.unlink(missing_ok=True)
        self = cls._spawn([sys.executable, "-m", "accel.rtl.board", "--bind", "udp://127.0.0.1:0",
                           "--ready-file", str(ready), "--exit-with-parent",
                           *(["--core", *map(str, core)] if core else [])], "", log)
        self._await(lambda: ready.exists() and bool(ready.read_text().strip()), timeout, on_wait)
        self._address = ready.read_text().strip()
        return self


@contextmanager
def watch(*procs: AcceleratorProcess, poll_s: float = 0.2) -> Iterator[None]:
    """Inside this block, any of ``procs`` exiting raises :class:`AcceleratorDied` in the main thread.

    The main thread may be blocked inside a ZeroMQ poll; a real signal interrupts that
    system call, and the handler's exception unwinds it.
    """
    done = threading.Event()

    dead: list[AcceleratorProcess] = []

    def on_signal(signum, frame):  # noqa: ARG001 - signal handler signature
        raise AcceleratorDied(dead[0].death_notice())

    def loop() -> None:
        while not done.wait(poll_s):
            if gone := [p for p in procs if p.returncode is not None]:
                dead.extend(gone)
                os.kill(os.getpid(), signal.SIGUSR1)
                return

    previous = signal.signal(signal.SIGUSR1, on_signal)
    thread = threading.Thread(target=loop, name="accel-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        signal.signal(signal.SIGUSR1, previous)


def free_tcp_address(host: str = "127.0.0.1") -> str:
    """A tcp endpoint on a port that is free right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return f"tcp://{host}:{s.getsockname()[1]}"


def ipc_address(directory: Path) -> str:
    return f"ipc://{directory / 'accel.sock'}"
