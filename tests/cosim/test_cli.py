"""The cosim CLI end to end: real daemon processes, real sockets, real files."""
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cosim.launch import ready_address
from cosim.trace import payloads

COSIM = [sys.executable, "-m", "cosim"]
QUICK = ["--epochs", "2", "--inner-steps", "300"]


def cosim(*args, timeout=300, **kw):
    return subprocess.run([*COSIM, *args], capture_output=True, text=True, timeout=timeout, **kw)


def serve_accel(*args: str) -> tuple[subprocess.Popen, str]:
    """`cosim accel` on a free loopback port: the process and the address it says it serves."""
    accel = subprocess.Popen([*COSIM, "accel", "--bind", "tcp://127.0.0.1:0", *args], stderr=subprocess.PIPE,
                             text=True)
    line = accel.stderr.readline()
    if (address := ready_address(line)) is None:
        accel.kill()
        raise AssertionError(line + accel.communicate()[1])
    return accel, address


def run_dir(out: Path) -> Path:
    (d,) = [p for p in out.iterdir() if p.is_dir()]
    return d


@pytest.mark.slow
def test_run_writes_results_and_trace(tmp_path):
    r = cosim("run", *QUICK, "--algorithm", "svrg,halp", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr + r.stdout
    d = run_dir(tmp_path)
    for f in ("config.toml", "metrics.csv", "metrics.json", "convergence.png", "trace.cosim",
              "weights.npz"):
        assert (d / f).stat().st_size > 0, f
    rows = list(csv.DictReader(open(d / "metrics.csv")))
    assert [(x["algorithm"], x["epoch"]) for x in rows] == [
        ("svrg", "0"), ("svrg", "1"), ("svrg", "2"), ("halp", "0"), ("halp", "1"), ("halp", "2")]
    gaps = [float(x["gap"]) for x in rows if x["algorithm"] == "halp"]
    assert gaps[2] < gaps[1] < gaps[0]
    meta = json.loads((d / "metrics.json").read_text())
    assert meta["status"] == "completed" and meta["reference"]["grad_norm"] <= 1e-12
    assert "halp" in r.stdout and "completed" in r.stdout
    shown = cosim("trace", "show", str(d / "trace.cosim"))
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"h2a\s+│\s+run_epoch\s+│\s+2\b", shown.stdout), shown.stdout
    assert "halp: 3 epochs recorded" in shown.stdout
    assert cosim("trace", "show", str(d)).stdout == shown.stdout  # the results directory will do
    # the resolved config reruns the same thing
    again = cosim("run", "--config", str(d / "config.toml"), "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr
    rows2 = list(csv.DictReader(open(run_dir(tmp_path / "again") / "metrics.csv")))
    assert [x["loss"] for x in rows2] == [x["loss"] for x in rows]


@pytest.mark.slow
def test_same_seed_same_bits(tmp_path):
    """Determinism: identical final weights and byte-identical trace payloads (over tcp)."""
    outs = []
    for k in range(2):
        r = cosim("run", *QUICK, "--algorithm", "halp,lpsgd", "--transport", "tcp",
                  "--seed", "5", "--out", str(tmp_path / str(k)))
        assert r.returncode == 0, r.stderr
        outs.append(run_dir(tmp_path / str(k)))
    w0, w1 = (np.load(d / "weights.npz") for d in outs)
    assert set(w0.files) == {"halp", "lpsgd"}
    for name in w0.files:
        assert w0[name].tobytes() == w1[name].tobytes()
    p0, p1 = (payloads(d / "trace.cosim") for d in outs)
    assert len(p0) > 10 and p0 == p1
    r = cosim("run", *QUICK, "--algorithm", "halp", "--seed", "6", "--out", str(tmp_path / "2"))
    w2 = np.load(run_dir(tmp_path / "2") / "weights.npz")
    assert w2["halp"].tobytes() != w0["halp"].tobytes()


@pytest.mark.parametrize("args, fragment", [
    (["--bits", "1"], "bits"),
    (["--dataset", "mnist"], "digits"),
    (["--algorithm", "adam"], "halp"),
    (["--rounding", "sideways"], "stochastic"),
    (["--offset-format", "fixed<1"], "accepted forms"),
    (["--backend", "pcie"], "backend: choose one of emulated, rtl; got 'pcie'"),
    (["--mu-rule", "wide"], "widen, fixed"),
    (["--batch-size", "100000"], "at most the 1797 samples of digits"),
    (["--inner-steps", "100000000"], "sample indices per epoch exceed"),
    (["--config", "no-such-file.toml"], "does not exist"),
    (["--config", "."], "cannot read config file"),
])
def test_bad_input_is_one_clear_line(tmp_path, args, fragment):
    r = cosim("run", *args, "--out", str(tmp_path), timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "error:" in r.stderr and fragment in r.stderr


REFUSED_FORMATS = [
    (["--offset-format", "e4m3fn"], "offset_format 'e4m3fn'", "the offset takes fixed<IL,FL> signed"),
    (["--data-format", "float<11,52>"], "data_format 'float<11,52>' (fp64)", "the data takes fixed<IL,FL>"),
    (["--acc-format", "mxfp8"], "acc_format 'mxfp8'", "the acc takes float<E,M>"),
    (["--offset-format", "fixed<1,7,wrap>"], "offset_format 'fixed<1,7,wrap>'", "saturating"),
    (["--offset-format", "ufixed<1,7>"], "offset_format 'ufixed<1,7>'", "signed"),
    (["--offset-format", "fixed<1,52>"], "offset_format 'fixed<1,52>'", "IL+FL <= 50"),
    (["--data-format", "bfp<8,16>"], "data_format 'bfp<8,16>'", "float<E,M>"),
    (["--acc-format", "fixed<8,8>"], "acc_format 'fixed<8,8>'", "or fp64"),
]


@pytest.mark.parametrize("args, named, accepted", REFUSED_FORMATS)
def test_formats_the_backend_refuses_fail_at_once(tmp_path, args, named, accepted):
    """Checked against the backend's capabilities before any data, reference or daemon: one
    line naming the role, the format and what the role accepts; exit 2 in under a second."""
    best = float("inf")
    for _ in range(2):   # the faster of two tries: a loaded CI machine must not make this flaky
        t0 = time.monotonic()
        r = cosim("run", *args, "--out", str(tmp_path / "runs"), timeout=60)
        best = min(best, time.monotonic() - t0)
        assert r.returncode == 2, r.stdout + r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
        assert named in lines[0] and accepted in lines[0] and "emulated backend" in lines[0], lines[0]
        assert "daemon" not in r.stdout and not (tmp_path / "runs").exists()
    assert best < 1.0, f"took {best:.2f} s"


def test_a_remote_daemon_refuses_before_the_reference(tmp_path):
    """cosim host checks the formats against the daemon's own capabilities right after hello."""
    accel, address = serve_accel()
    try:
        r = cosim("host", "--connect", address, "--rounding", "toward_zero", "--out", str(tmp_path / "runs"),
                  timeout=60)
        assert r.returncode == 2, r.stdout + r.stderr
        assert r.stderr.strip().splitlines() == [
            "error: rounding 'toward_zero' is not accepted by the emulated backend for the offset; "
            "choose nearest_even or stochastic"]
        assert not (tmp_path / "runs").exists() and accel.poll() is None
    finally:
        accel.terminate()
        accel.wait(10)


@pytest.mark.slow
def test_a_counting_daemon_reports_what_it_performed_and_it_matches(tmp_path):
    """cosim accel --count-ops: the epoch reports' counts, tallied operation by operation, equal
    the analytic counts the default daemon reports for the same run."""
    ops = []
    for k, extra in enumerate(([], ["--count-ops"])):
        accel, address = serve_accel(*extra)
        try:
            r = cosim("host", "--connect", address, "--epochs", "1", "--inner-steps", "50",
                      "--out", str(tmp_path / str(k)))
            assert r.returncode == 0, r.stderr
        finally:
            accel.terminate()
            accel.wait(10)
        records = json.loads((run_dir(tmp_path / str(k)) / "metrics.json").read_text())["epochs"]
        ops.append([rec["ops"] for rec in records if rec["epoch"] == 1])
    assert ops[0] == ops[1] and ops[0][0]["mul fp32"] > 0


def test_an_unwritable_results_directory_is_a_user_error(tmp_path):
    (tmp_path / "file").write_text("")
    r = cosim("run", "--out", str(tmp_path / "file" / "runs"), timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "cannot create the results directory" in r.stderr and "--out" in r.stderr


def test_bad_config_key(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('dataset = "digits"\nbitz = 8\n')
    r = cosim("run", "--config", str(cfg), timeout=60)
    assert r.returncode == 2 and "unknown key 'bitz'" in r.stderr and "bits" in r.stderr
    cfg.write_text('dataset = "digits\n')
    r = cosim("run", "--config", str(cfg), timeout=60)
    assert r.returncode == 2 and "not valid TOML" in r.stderr


@pytest.mark.slow
def test_host_and_accel_by_hand_over_tcp(tmp_path):
    accel, address = serve_accel()
    try:
        r = cosim("host", "--connect", address, *QUICK, "--out", str(tmp_path))
        assert r.returncode == 0, r.stderr
        assert accel.poll() is None  # the daemon serves the next host too
        r = cosim("host", "--connect", address, *QUICK, "--out", str(tmp_path / "b"))
        assert r.returncode == 0, r.stderr
    finally:
        accel.terminate()
        accel.wait(10)


def _start_long_run(tmp_path):
    # A shell's background job inherits SIGINT ignored, and Python then keeps ignoring it;
    # the run must see Ctrl-C the way a terminal user's process does.
    proc = subprocess.Popen([*COSIM, "run", "--epochs", "200", "--out", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    pid = None
    for line in proc.stdout:
        if m := re.search(r"accelerator daemon pid (\d+) serving \w+ on ipc://(\S+)", line):
            pid, proc.socket_dir = int(m[1]), Path(m[2]).parent
        if pid and re.match(r"\s*halp\s+1\s", line):  # training is under way
            return proc, pid
    raise AssertionError(proc.stderr.read())


@pytest.mark.slow
def test_killing_the_accelerator_stops_the_host(tmp_path):
    proc, pid = _start_long_run(tmp_path)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 1
    assert "accelerator daemon" in stderr and "exited" in stderr and "Traceback" not in stderr
    d = run_dir(tmp_path)
    assert json.loads((d / "metrics.json").read_text())["status"] == "failed"
    assert len(list(csv.DictReader(open(d / "metrics.csv")))) >= 2  # nothing recorded is lost


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_both_and_keeps_results(tmp_path, sig):
    """Ctrl-C, and SIGTERM alike (which once left no metrics.json and a /tmp/cosim-* folder)."""
    proc, pid = _start_long_run(tmp_path)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in stderr
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the daemon is gone too
    d = run_dir(tmp_path)
    assert json.loads((d / "metrics.json").read_text())["status"] == "interrupted"
    assert (d / "convergence.png").exists()
    assert proc.socket_dir.name.startswith("cosim-") and not proc.socket_dir.exists()   # no folder left


@pytest.mark.slow
def test_host_killed_hard_takes_the_daemon_with_it(tmp_path):
    proc, pid = _start_long_run(tmp_path)
    proc.kill()  # SIGKILL: no finally blocks run in the host
    proc.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError("the accelerator daemon outlived its host")


@pytest.mark.parametrize("bind, fragment", [("tcp://127.0.0.1:99999", "outside 0..65535"),
                                            ("nonsense", "addresses look like")])
def test_accel_bad_bind_address(bind, fragment):
    r = cosim("accel", "--bind", bind, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"cannot serve on {bind}" in r.stderr and fragment in r.stderr


def test_trace_show_refuses_other_files(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("not a trace")
    r = cosim("trace", "show", str(p), timeout=60)
    assert r.returncode == 2 and "is not a cosim trace" in r.stderr and "Traceback" not in r.stderr
    r = cosim("trace", "show", str(tmp_path), timeout=60)
    assert r.returncode == 2 and "without a trace.cosim" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_the_rtl_backend_gives_the_emulated_weights(tmp_path):
    """cosim run --backend rtl starts a simulated board and a daemon in front of it, and cleans
    both up; breast_cancer/logistic HALP and LP-SGD give weights.npz byte for byte."""
    common = ["--dataset", "breast_cancer", "--model", "logistic", "--algorithm", "halp,lpsgd",
              "--epochs", "3", "--seed", "2"]
    weights = []
    for backend in ("emulated", "rtl"):
        r = cosim("run", *common, "--backend", backend, "--out", str(tmp_path / backend), timeout=900)
        assert r.returncode == 0, r.stdout + r.stderr
        d = run_dir(tmp_path / backend)
        weights.append((d / "weights.npz").read_bytes())
        if backend == "rtl":
            assert "simulated board pid" in r.stdout and (d / "board.log").exists()
            pid = int(r.stdout.split("simulated board pid ")[1].split()[0])
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)                                  # the board is gone
    assert weights[0] == weights[1]


def test_rtl_options_are_checked(tmp_path):
    r = cosim("run", "--fpga", "udp://127.0.0.1:1234", "--out", str(tmp_path), timeout=60)
    assert r.returncode == 2 and "add --backend rtl" in r.stderr and "Traceback" not in r.stderr
    r = cosim("run", "--backend", "rtl", "--fpga", "tcp://x:1", "--out", str(tmp_path), timeout=60)
    assert r.returncode == 2 and "udp://HOST:PORT" in r.stderr
    r = cosim("accel", "--backend", "rtl", timeout=60)
    assert r.returncode == 2 and "needs --fpga" in r.stderr
    r = cosim("accel", "--backend", "rtl", "--fpga", "udp://127.0.0.1:9", "--bind", "tcp://127.0.0.1:0",
              timeout=120)
    assert r.returncode == 1 and "udp://127.0.0.1:9" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_a_long_rtl_epoch_outlasts_the_reply_timeout_and_a_dead_board_ends_the_run(tmp_path):
    """An RTL epoch of about 17 s under --timeout 6: progress messages keep the host waiting.
    Then the same run with its board killed mid-epoch stops at once, naming the board."""
    args = ["--backend", "rtl", "--algorithm", "halp", "--epochs", "1", "--inner-steps", "300",
            "--timeout", "6"]
    r = cosim("run", *args, "--out", str(tmp_path / "ok"), timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    shown = cosim("trace", "show", str(run_dir(tmp_path / "ok")))
    assert re.search(r"a2h\s+│\s+progress\s+│\s+[1-9]", shown.stdout), shown.stdout

    proc = subprocess.Popen([*COSIM, "run", *args, "--epochs", "3", "--out", str(tmp_path / "killed")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = ""
    while "time/s" not in out:                               # the epoch table's header: training starts
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        out += line
    time.sleep(10)                                           # past the data load, inside the epoch
    os.kill(int(out.split("simulated board pid ")[1].split()[0]), signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + stdout + stderr
    assert "the simulated board" in stderr and "Traceback" not in stderr


def test_synthetic_softmax_takes_a_class_count(tmp_path):
    r = cosim("run", "--dataset", "synthetic_softmax", "--samples", "300", "--features", "12", "--classes", "4",
              "--algorithm", "svrg,halp", *QUICK, "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    config = (run_dir(tmp_path) / "config.toml").read_text()
    assert "classes = 4" in config and "n_outputs = 4" in config
    r = cosim("run", "--dataset", "synthetic_softmax", "--classes", "1", "--out", str(tmp_path / "bad"))
    assert r.returncode == 2 and "classes" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "bad").exists()


def test_unreadable_data_and_all_zero_data(tmp_path):
    """An empty .npz (once 'Aborted.', exit 1) is one error line and exit 2, with no results
    directory; all-zero data trains to w* = 0 at once instead of failing on a zero scale."""
    (tmp_path / "empty.npz").write_bytes(b"")
    r = cosim("run", "--dataset", str(tmp_path / "empty.npz"), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "empty.npz is empty" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()
    np.savez(tmp_path / "zeros.npz", x=np.zeros((20, 3)), y=np.zeros(20))
    r = cosim("run", "--dataset", str(tmp_path / "zeros.npz"), "--model", "linear", "--algorithm", "svrg,halp,lpsgd",
              "--epochs", "2", "--out", str(tmp_path / "zeros"))
    assert r.returncode == 0, r.stderr
    assert "halp: final gap 0.000e+00" in r.stdout and "lpsgd: final gap 0.000e+00" in r.stdout


USER_MISTAKES = [   # (TOML text or None, flags, words the one error line must hold)
    ("epochs = 99999999999999999999999", [], "epochs: an integer from 1 to 1000000"),
    ("epochs = true", [], "epochs: an integer; got True"),
    ("epochs = 9223372036854775807", [], "epochs: an integer from 1 to 1000000"),
    ("algorithm = 5", [], "algorithms: a list of strings; got 5"),
    ("dataset = 5", [], "dataset: a string; got 5"),
    ("out = 5", [], "out: a string; got 5"),
    ('out = ["a"]', [], "out: a string; got ['a']"),
    ('name = ["a"]', [], "name: a string; got ['a']"),
    ('l2 = "0.1"', [], "l2: a number; got '0.1'"),
    (None, ["--epochs", "99999999999999999999999"], "epochs: an integer from 1 to 1000000"),
    (None, ["--connect", "foo://bar"], "--connect: cannot connect to 'foo://bar'"),
    (None, ["--connect", "tcp://127.0.0.1:99999"], "port 99999 is outside 0..65535"),
    (None, ["--dataset", "synthetic_linear", "--model", "linear", "--samples", "100000000", "--features", "100"],
     "samples: 100000000 × 101 float64 values need 150.5 GiB to generate"),
    (None, ["--name", "../../x"], "name: a plain directory name under --out"),
    (None, ["--name", "/abs/x"], "name: a plain directory name under --out"),
]


@pytest.mark.parametrize("toml,flags,words", USER_MISTAKES, ids=[w for _, _, w in USER_MISTAKES])
def test_user_mistakes_are_one_error_line_and_exit_2(tmp_path, toml, flags, words):
    args = ["run", *flags]
    if toml is not None:
        (tmp_path / "run.toml").write_text(toml + "\n")
        args += ["--config", str(tmp_path / "run.toml")]
    r = cosim(*args, cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr + r.stdout, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == (["run.toml"] if toml else [])   # no results directory


def test_data_wider_than_the_accelerator_is_refused_before_any_work(tmp_path):
    np.savez(tmp_path / "wide.npz", x=np.random.default_rng(0).random((10, 70000)), y=np.arange(10) % 2)
    r = cosim("run", "--dataset", str(tmp_path / "wide.npz"), "--model", "logistic", "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "n_features = 70001 is over the accelerator's max_features = 65536" in r.stderr
    assert not (tmp_path / "out").exists() and "Traceback" not in r.stderr


def test_keys_new_writes_a_pair_and_never_overwrites(tmp_path):
    r = cosim("keys", "new", str(tmp_path / "k"), "--name", "accel", timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "k" / "accel.key").is_file() and (tmp_path / "k" / "accel.key_secret").is_file()
    r = cosim("keys", "new", str(tmp_path / "k"), "--name", "accel", timeout=60)
    assert r.returncode == 2 and "already exist" in r.stderr and "Traceback" not in r.stderr


def test_accel_refuses_a_non_loopback_bind_without_keys(tmp_path):
    r = cosim("accel", "--bind", "tcp://0.0.0.0:0", timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "not a loopback address" in r.stderr and "--keys" in r.stderr and "--insecure" in r.stderr
    r = cosim("accel", "--bind", "tcp://0.0.0.0:0", "--keys", str(tmp_path), timeout=60)
    assert r.returncode == 2 and "--keys and --allow go together" in r.stderr


def test_host_keys_need_connect_and_each_other(tmp_path):
    r = cosim("run", "--keys", str(tmp_path), "--server-key", str(tmp_path / "a.key"), timeout=60)
    assert r.returncode == 2 and "are for --connect" in r.stderr
    r = cosim("host", "--connect", "tcp://127.0.0.1:1", "--keys", str(tmp_path), timeout=60)
    assert r.returncode == 2 and "--keys and --server-key go together" in r.stderr


@pytest.mark.slow
def test_host_against_a_keyed_daemon(tmp_path):
    """Without keys the host is refused at its preflight (exit 1, naming keys); with them it runs."""
    from cosim.launch import AcceleratorProcess
    from protocol.keys import new_keys

    new_keys(tmp_path / "accel", "accel")
    new_keys(tmp_path / "allow", "host")
    accel = AcceleratorProcess.start("tcp://127.0.0.1:0", args=("--keys", str(tmp_path / "accel"), "--allow",
                                                                str(tmp_path / "allow")), log=tmp_path / "accel.log")
    address = accel.address
    try:
        r = cosim("host", "--connect", address, *QUICK, "--out", str(tmp_path / "plain"), timeout=120)
        assert r.returncode == 1 and "does it serve with keys" in r.stderr, r.stderr
        # allow/ holds the host's key pair too: the keys directory and the allow list in one.
        r = cosim("host", "--connect", address, *QUICK, "--keys", str(tmp_path / "allow"),
                  "--server-key", str(tmp_path / "accel" / "accel.key"), "--out", str(tmp_path / "keyed"))
        assert r.returncode == 0, r.stdout + r.stderr
        assert (run_dir(tmp_path / "keyed") / "weights.npz").stat().st_size > 0
    finally:
        accel.stop()
