"""Launching daemons and keeping them: a frozen (SIGSTOP) daemon, daemons on port 0, and the
window between `cosim host`'s capability check and its run. Real daemon processes, real sockets."""
import csv
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cosim.cli import app
from cosim.launch import AcceleratorProcess, failure_notice, process_state, ready_address
from host.client import AcceleratorClient
from protocol.channel import AcceleratorError, Client
from protocol.messages import Hello

COSIM = [sys.executable, "-m", "cosim"]
# ~2 s of epochs here: long enough to freeze the daemon mid-run, short enough for a test
RUN = ["--epochs", "200", "--out"]
PORT = re.compile(r"^tcp://127\.0\.0\.1:(\d+)$")


def start_run(out: Path, *args: str) -> tuple[subprocess.Popen, int]:
    """`cosim run` under way: the process, after its first HALP epoch, and its daemon's pid."""
    proc = subprocess.Popen([*COSIM, "run", *RUN, str(out), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    pid = None
    for line in proc.stdout:
        if m := re.search(r"accelerator daemon pid (\d+)", line):
            pid = int(m[1])
        if pid and re.match(r"\s*halp\s+1\s", line):
            return proc, pid
    proc.kill()
    raise AssertionError(proc.communicate()[1])


def wait_stopped(pid: int) -> None:
    deadline = time.monotonic() + 5
    while process_state(pid) != "T":
        assert time.monotonic() < deadline, f"pid {pid} is in state {process_state(pid)}"
        time.sleep(0.01)


def metrics(out: Path) -> list[dict]:
    """metrics.csv of the one run under ``out``, without the wall-clock column."""
    (run,) = out.iterdir()
    return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(open(run / "metrics.csv"))]


def weights(out: Path) -> bytes:
    (run,) = out.iterdir()
    with np.load(run / "weights.npz") as z:
        return z["halp"].tobytes()


# ---- a frozen daemon ----------------------------------------------------------------------

@pytest.mark.slow
def test_a_daemon_stopped_for_less_than_the_timeout_and_continued_finishes_bit_identical(tmp_path):
    """Stopped 7 s, longer than the 5 s heartbeat timeout and shorter than the reply timeout:
    the connection survives and the run equals an undisturbed one, bit for bit."""
    plain = subprocess.run([*COSIM, "run", *RUN, str(tmp_path / "plain"), "--timeout", "10"],
                           capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr
    proc, pid = start_run(tmp_path / "frozen", "--timeout", "10")
    os.kill(pid, signal.SIGSTOP)
    time.sleep(7)
    os.kill(pid, signal.SIGCONT)
    out, errors = proc.communicate(timeout=300)
    assert proc.returncode == 0 and errors == "", errors
    assert metrics(tmp_path / "frozen") == metrics(tmp_path / "plain")
    assert len(metrics(tmp_path / "plain")) == 201
    assert weights(tmp_path / "frozen") == weights(tmp_path / "plain")


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_a_daemon_still_stopped_at_the_timeout_is_named_stopped_and_killed(tmp_path, transport):
    """One error line, by the timeout, saying what was seen; results kept; the daemon gone."""
    proc, pid = start_run(tmp_path, "--timeout", "3", "--transport", transport)
    os.kill(pid, signal.SIGSTOP)
    stopped = time.monotonic()
    line = proc.stderr.readline()
    took = time.monotonic() - stopped
    out, rest = proc.communicate(timeout=60)
    assert line == (f"error: the accelerator daemon (pid {pid}) did not reply within 3 s: it is stopped "
                    f"(process state T), not exited\n"), line + rest
    assert rest == "" and proc.returncode == 1
    assert took < 3 + 1.5, f"the error came {took:.1f} s after the daemon was stopped"
    kept = metrics(tmp_path)
    assert [r["epoch"] for r in kept[:2]] == ["0", "1"] and "failed: results in" in out
    assert not Path(f"/proc/{pid}").exists()     # killed (SIGTERM waits for a SIGCONT) and reaped


def test_stop_kills_a_stopped_daemon_at_once_and_the_notice_says_stopped(tmp_path):
    accel = AcceleratorProcess.start(f"ipc://{tmp_path}/a.sock", log=tmp_path / "accel.log")
    try:
        assert accel.state() in ("R", "S") and failure_notice(3, accel) is None
        os.kill(accel.pid, signal.SIGSTOP)
        wait_stopped(accel.pid)
        assert failure_notice(2.5, accel) == (f"the accelerator daemon (pid {accel.pid}) did not reply "
                                              "within 2.5 s: it is stopped (process state T), not exited")
        started = time.monotonic()
        accel.stop()          # the grace for SIGTERM is 5 s: a stopped daemon would use it all
        assert time.monotonic() - started < 1.0 and accel.returncode == -signal.SIGKILL
        assert accel.state() is None and failure_notice(3, accel).startswith(
            f"the accelerator daemon (pid {accel.pid}) exited with code -9 during the run")
    finally:
        accel.stop()


# ---- port 0 -------------------------------------------------------------------------------

def test_daemons_started_at_once_on_port_0_get_ports_of_their_own_and_serve_there(tmp_path):
    procs: list[AcceleratorProcess] = []

    def start(k: int) -> None:
        procs.append(AcceleratorProcess.start("tcp://127.0.0.1:0", log=tmp_path / f"accel-{k}.log"))

    threads = [threading.Thread(target=start, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(procs) == 2
        ports = [int(PORT.match(p.address)[1]) for p in procs]
        assert 0 not in ports and ports[0] != ports[1]
        for p in procs:
            with AcceleratorClient(p.address, timeout=10) as client:
                assert client.hello().version
    finally:
        for p in procs:
            p.stop()


def test_cosim_accel_on_port_0_prints_the_port_it_bound():
    accel = subprocess.Popen([*COSIM, "accel", "--bind", "tcp://127.0.0.1:0"], stderr=subprocess.PIPE, text=True)
    try:
        line = accel.stderr.readline()
        address = ready_address(line)
        assert address and int(PORT.match(address)[1]) > 0, line
        with AcceleratorClient(address, timeout=10) as client:
            assert client.hello().version
    finally:
        accel.terminate()
        accel.wait(10)


def test_the_ready_line_is_read_whatever_comes_before_it():
    assert ready_address("") is None and ready_address("cosim accel: starting\n") is None
    assert ready_address("a warning\ncosim accel: serving rtl on ipc:///tmp/my runs/a.sock\n") == \
        "ipc:///tmp/my runs/a.sock"


# ---- cosim host: the preflight's session ----------------------------------------------------

@pytest.fixture
def daemon(tmp_path):
    accel = AcceleratorProcess.start("tcp://127.0.0.1:0", log=tmp_path / "accel.log")
    yield accel.address
    accel.stop()


def hello_from_another_host(address: str) -> str:
    """What another host's hello gets: "capabilities", or the error's code."""
    with Client(address, timeout=10) as other:
        try:
            return other.request(Hello(client="another-host")).TYPE
        except AcceleratorError as exc:
            return exc.code


@pytest.mark.slow
def test_no_other_host_takes_the_daemon_between_the_preflight_and_the_run(daemon, tmp_path, monkeypatch):
    """The preflight's session stays open until the run's own hello reopens it: another host
    trying just before that hello gets busy; once the run is over it gets the daemon."""
    calls = []
    real = AcceleratorClient.hello

    def hello(self, client="cosim-host"):
        # the first hello is the preflight's; just before the run's, another host tries
        calls.append(hello_from_another_host(daemon) if calls else "preflight")
        return real(self, client)

    monkeypatch.setattr(AcceleratorClient, "hello", hello)
    r = CliRunner().invoke(app, ["host", "--connect", daemon, "--epochs", "1", "--inner-steps", "50",
                                 "--out", str(tmp_path / "runs")])
    assert r.exit_code == 0, r.output
    assert calls == ["preflight", "busy"]
    assert hello_from_another_host(daemon) == "capabilities"


def test_a_refused_preflight_frees_the_daemon_at_once(daemon, tmp_path):
    r = subprocess.run([*COSIM, "host", "--connect", daemon, "--rounding", "toward_zero", "--out",
                        str(tmp_path / "runs")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "not accepted" in r.stderr and not (tmp_path / "runs").exists()
    assert hello_from_another_host(daemon) == "capabilities"


@pytest.mark.slow
def test_a_run_that_cannot_create_its_results_frees_the_daemon_at_once(daemon, tmp_path):
    (tmp_path / "file").write_text("")
    r = subprocess.run([*COSIM, "host", "--connect", daemon, "--out", str(tmp_path / "file" / "runs")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "cannot create the results directory" in r.stderr, r.stderr
    assert hello_from_another_host(daemon) == "capabilities"


@pytest.mark.slow
def test_an_unreachable_daemon_is_exit_1_before_any_results_directory(tmp_path):
    with socket.socket() as taken:       # bound, never listening: connections to it are refused
        taken.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
        r = subprocess.run([*COSIM, "host", "--connect", address, "--timeout", "1", "--out",
                            str(tmp_path / "runs")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and f"the accelerator at {address} did not answer hello" in r.stderr, r.stderr
    assert not (tmp_path / "runs").exists()
