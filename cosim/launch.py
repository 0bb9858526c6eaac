"""Launching the accelerator daemon as a separate process.

Usage::

    with AcceleratorProcess.start("ipc:///tmp/run/accel.sock") as accel:
        train(cfg, connect=accel.address)

``start`` returns once the daemon says it is serving (or raises with the daemon's own
error output if it exits first); on ``tcp://127.0.0.1:0`` the daemon binds a free port and
``accel.address`` is the one it got, so no other process can take the port in between.
Leaving the block stops it: a polite SIGTERM, then SIGKILL (at once for a stopped daemon,
which would not handle the SIGTERM before it is continued).
:func:`watch` turns the daemon dying mid-run into an :class:`AcceleratorDied` raised in the
main thread, so a host blocked on a socket stops at once instead of waiting for its timeout;
:func:`failure_notice` names what happened when the host's client gave up instead.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# The line accel.daemon.serve prints once it serves, with the address it bound.
READY_LINE = re.compile(r"^cosim accel: serving \S+ on (\S.*)$", re.MULTILINE)
# The stopped states of /proc/PID/stat (proc(5)): SIGSTOP or a terminal's, a debugger's.
STOPPED = {"T": "stopped", "t": "stopped by a debugger"}


def ready_address(output: str) -> str | None:
    """The address a daemon serves on, from its output's ready line (None before it).

        >>> ready_address("cosim accel: serving emulated on tcp://127.0.0.1:41234\\n")
        'tcp://127.0.0.1:41234'
    """
    match = READY_LINE.search(output)
    return match[1].strip() if match else None


def process_state(pid: int) -> str | None:
    """The process's state letter from /proc/PID/stat ("T": stopped; None: gone, or no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # pid (comm) state ...: the command name may hold spaces and parentheses, so after the last ")"
    return stat[stat.rfind(")") + 2:][:1] or None


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
        """Start ``python -m accel`` on ``address`` (port 0: a free one, then :attr:`address` is the
        one bound); ``args``: further daemon options (``--lease``, ``--keys`` …)."""
        self = cls._spawn([sys.executable, "-m", "accel", "--bind", address, "--backend", backend,
                           *(["--fpga", fpga] if fpga else []), *args, "--exit-with-parent"],
                          address, log or Path(tempfile.mkstemp(prefix="cosim-accel-", suffix=".log")[1]))
        self._await(lambda: ready_address(self.output()) is not None, timeout)
        self._address = ready_address(self.output())
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

    def state(self) -> str | None:
        """Its /proc state letter while it has not exited ("T": stopped), else None."""
        return process_state(self.pid) if self.returncode is None else None

    def death_notice(self) -> str:
        """What to tell the user when the daemon exited under a running host."""
        tail = "\n".join(self.output().strip().splitlines()[-10:])
        return (f"{self.WHAT} (pid {self.pid}) exited with code {self.returncode} "
                f"during the run" + (f"; its last output:\n{tail}" if tail else ""))

    def stopped_notice(self, timeout: float, state: str) -> str:
        """What to tell the user when the daemon, stopped (``state`` "T" or "t"), did not reply
        within ``timeout`` seconds."""
        return (f"{self.WHAT} (pid {self.pid}) did not reply within {timeout:g} s: it is "
                f"{STOPPED[state]} (process state {state}), not exited")

    def stop(self, grace: float = 5.0) -> None:
        if self.state() in STOPPED:
            self._proc.kill()        # SIGTERM would wait, unhandled, until someone sends SIGCONT
            self._proc.wait()
        elif self._proc.poll() is None:
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


def failure_notice(timeout: float, *procs: AcceleratorProcess) -> str | None:
    """What to tell the user when the host's client (reply timeout ``timeout``) gave up on a run
    served by ``procs``: a stopped process as stopped, at once (it cannot exit before it is
    continued); else one that exited, by its exit code (waiting a second for it: the client
    often notices a dead peer before the process is gone); else None (the client's message
    says it best)."""
    for proc in procs:
        if (state := proc.state()) in STOPPED:
            return proc.stopped_notice(timeout, state)
    dead = next((p for p in procs if p.exited(within=1.0)), None)
    return dead.death_notice() if dead else None


def ipc_address(directory: Path) -> str:
    return f"ipc://{directory / 'accel.sock'}"
