"""Recovery of a run, end to end with real processes: a daemon SIGKILLed mid-run and replaced
(``cosim run --restarts``), a host killed and resumed (``cosim run --resume``), a results
directory that becomes unwritable. Every recovered run must end with the weights of an
uninterrupted one, bit for bit, and each epoch once in metrics.csv.
"""
from __future__ import annotations

import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cosim.launch import ready_address
from cosim.recovery import CHECKPOINT, load_checkpoint, save_checkpoint
from cosim.trace import TraceReader, TraceWriter, summarize
from host.scheduler import UpdateStatistics
from host.train import Checkpoint, EpochRecord
from protocol.messages import State

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 10
# digits with 10^4 inner steps: an epoch takes a good fraction of a second here, long enough to be
# killed inside, short enough for five kills and restarts in a test. The long reply timeout covers
# a first epoch that compiles its kernels on a busy machine (the timeout does not change results).
SETTINGS = ("--epochs", str(EPOCHS), "--inner-steps", "10000", "--timeout", "600")
EPOCH_LINE = re.compile(r"^\s*(\w+)\s+(\d+)\s+\d+\.\d+\s")


class Run:
    """A ``cosim run`` process whose output is followed as it comes: the daemons it started
    (pids, in order) and the highest epoch printed."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "cosim", "run", *args], cwd=ROOT, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.pids: list[int] = []
        self.epoch = -1
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [threading.Thread(target=self._follow, args=(self.proc.stdout, self.out), daemon=True),
                         threading.Thread(target=self._follow, args=(self.proc.stderr, self.err), daemon=True)]
        for t in self._threads:
            t.start()

    def _follow(self, stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)
            if m := re.search(r"accelerator daemon pid (\d+)", line):
                self.pids.append(int(m[1]))
            if m := EPOCH_LINE.match(line):
                self.epoch = max(self.epoch, int(m[2]))

    def wait_until(self, ready, timeout: float = 120.0) -> None:
        end = time.monotonic() + timeout
        while not ready():
            assert self.proc.poll() is None, f"the run ended early:\n{self.text()}"
            assert time.monotonic() < end, f"timed out:\n{self.text()}"
            time.sleep(0.005)

    def finish(self, timeout: float = 300.0) -> int:
        code = self.proc.wait(timeout)
        for t in self._threads:
            t.join(10)
        return code

    def text(self) -> str:
        return "".join(self.out) + "".join(self.err)

    @property
    def directory(self) -> Path:
        return Path(re.search(r"→ (\S+)", "".join(self.out))[1])


def weights(directory: Path) -> dict[str, np.ndarray]:
    with np.load(directory / "weights.npz") as z:
        return {k: z[k] for k in z.files}


def epochs_in_csv(directory: Path) -> list[tuple[str, int]]:
    with open(directory / "metrics.csv", newline="") as f:
        return [(r["algorithm"], int(r["epoch"])) for r in csv.DictReader(f)]


def assert_same_weights(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for k in want:
        assert got[k].tobytes() == want[k].tobytes(), f"{k}: the weights differ"


def errors(run: Run) -> list[str]:
    return [line for line in run.err if line.startswith("error:")]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    run = Run(*SETTINGS, "--algorithm", "halp,lpsgd,lpsvrg,sgd", "--out", str(out))
    assert run.finish() == 0, run.text()
    return run.directory


ALL_EPOCHS = [(a, e) for a in ("halp", "lpsgd", "lpsvrg", "sgd") for e in range(EPOCHS + 1)]


def test_the_uninterrupted_run_records_each_epoch_once(uninterrupted):
    assert epochs_in_csv(uninterrupted) == ALL_EPOCHS
    assert not (uninterrupted / ".checkpoint.npz.tmp").exists()
    ck, extra = load_checkpoint(uninterrupted / CHECKPOINT)
    assert (ck.algorithm, ck.epoch, len(ck.records)) == ("sgd", EPOCHS, len(ALL_EPOCHS))
    assert extra["trace_bytes"] <= (uninterrupted / "trace.cosim").stat().st_size


# ---- the daemon dies: --restarts ----------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["halp", "lpsgd", "lpsvrg"])
def test_a_daemon_killed_at_five_random_points_is_replaced_with_bit_identical_results(
        tmp_path, uninterrupted, algorithm):
    rng = random.Random(f"daemon kills, {algorithm}")
    # After which printed epoch each kill comes, and how long after it (into the next epoch, the
    # host's work between epochs, or a new daemon's configure, load and restore).
    points = [(after, rng.uniform(0.0, 0.08)) for after in sorted(rng.sample(range(EPOCHS - 3), 5))]
    run = Run(*SETTINGS, "--algorithm", algorithm, "--restarts", "5", "--out", str(tmp_path))
    for i, (after, delay) in enumerate(points):
        run.wait_until(lambda: len(run.pids) > i and run.epoch >= after)
        time.sleep(delay)
        os.kill(run.pids[i], signal.SIGKILL)
    assert run.finish() == 0, run.text()
    restarts = [line for line in run.err if line.startswith("restart ")]
    assert len(restarts) == 5 and len(set(run.pids)) == 6, run.text()
    assert "exited with code -9" in restarts[0] and not errors(run)
    # each daemon's output in its own log: the lost ones' are kept
    logs = sorted(p.name for p in run.directory.glob("accel*.log"))
    assert logs == ["accel-2.log", "accel-3.log", "accel-4.log", "accel-5.log", "accel-6.log", "accel.log"]
    assert all(ready_address((run.directory / name).read_text()) for name in logs)
    assert_same_weights(weights(run.directory), {algorithm: weights(uninterrupted)[algorithm]})
    assert epochs_in_csv(run.directory) == [(algorithm, e) for e in range(EPOCHS + 1)]
    result = json.loads((run.directory / "metrics.json").read_text())
    assert result["status"] == "completed"
    assert [r["what"] for r in result["recoveries"]] == ["restart"] * 5
    s = summarize(run.directory / "trace.cosim")
    assert [m["restart"] for m in s["marks"] if m["what"] == "restart"] == [1, 2, 3, 4, 5]
    assert [e["epoch"] for e in s["epochs"]] == list(range(EPOCHS + 1))
    # The last daemon got the state of a later epoch; a daemon lost before its first epoch ended has
    # its messages cut with that epoch's (what follows a checkpoint is redone).
    assert s["messages"][("h2a", "restore")] >= 1


@pytest.mark.slow
def test_the_trace_of_a_run_with_restarts_replays_identically(tmp_path):
    run = Run("--epochs", "4", *SETTINGS[2:], "--algorithm", "lpsgd", "--restarts", "1", "--out", str(tmp_path))
    run.wait_until(lambda: run.epoch >= 2 and run.pids)
    os.kill(run.pids[0], signal.SIGKILL)
    assert run.finish() == 0, run.text()
    replay = subprocess.run([sys.executable, "-m", "cosim", "replay", str(run.directory)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert replay.returncode == 0 and "identical" in replay.stdout, replay.stdout + replay.stderr


def test_without_restarts_a_killed_daemon_ends_the_run_with_one_error(tmp_path):
    run = Run(*SETTINGS, "--algorithm", "lpsgd", "--out", str(tmp_path))
    run.wait_until(lambda: run.epoch >= 2 and run.pids)
    os.kill(run.pids[0], signal.SIGKILL)
    assert run.finish() == 1
    assert len(errors(run)) == 1 and "exited with code -9 during the run" in errors(run)[0], run.text()
    assert "Traceback" not in run.text() and len(run.pids) == 1
    assert json.loads((run.directory / "metrics.json").read_text())["status"] == "failed"


# ---- the host dies: --resume --------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_run_resumes_to_bit_identical_results(tmp_path, uninterrupted, how):
    rng = random.Random(f"host kill {how}")
    rows = rng.randrange(5, 3 * (EPOCHS + 1))       # somewhere in halp, lpsgd or lpsvrg
    run = Run(*SETTINGS, "--algorithm", "halp,lpsgd,lpsvrg,sgd", "--out", str(tmp_path))
    run.wait_until(lambda: len(run.out) > 3 and (run.directory / "metrics.csv").exists()
                   and len(epochs_in_csv(run.directory)) >= rows)
    time.sleep(rng.uniform(0.0, 0.08))
    run.proc.send_signal(how)
    assert run.finish() == (-9 if how == signal.SIGKILL else 130), run.text()
    directory = run.directory
    if how == signal.SIGTERM:
        assert json.loads((directory / "metrics.json").read_text())["status"] == "interrupted"
    done = epochs_in_csv(directory)
    ck, _ = load_checkpoint(directory / CHECKPOINT)
    # The checkpoint is the last epoch written whole (its row may be followed by the next one's).
    assert done[:len(ck.records)] == [(r.algorithm, r.epoch) for r in ck.records] == ALL_EPOCHS[:len(ck.records)]
    assert len(ck.records) >= rows - 1
    resumed = Run("--resume", str(directory))
    assert resumed.finish() == 0, resumed.text()
    assert f"(resumed after {ck.algorithm} epoch {ck.epoch})" in resumed.out[0] and resumed.directory == directory
    assert_same_weights(weights(directory), weights(uninterrupted))
    assert epochs_in_csv(directory) == ALL_EPOCHS
    s = summarize(directory / "trace.cosim")
    assert [(e["algorithm"], e["epoch"]) for e in s["epochs"]] == ALL_EPOCHS
    assert [m["what"] for m in s["marks"]].count("resume") == 1 and not s["truncated"]
    result = json.loads((directory / "metrics.json").read_text())
    assert result["status"] == "completed" and [r["what"] for r in result["recoveries"]] == ["resume"]
    again = Run("--resume", str(directory))
    assert again.finish() == 2 and errors(again) == [f"error: the run in {directory} has completed: "
                                                     "nothing to resume\n"]


def test_resume_takes_no_other_settings_and_only_a_run_directory(tmp_path, uninterrupted):
    mixed = Run("--resume", str(uninterrupted), "--bits", "4", "--algorithm", "sgd")
    assert mixed.finish() == 2
    assert errors(mixed) == ["error: --resume continues a run with the settings in its directory; drop "
                             "--algorithm, --bits\n"], mixed.text()
    stranger = Run("--resume", str(tmp_path))
    assert stranger.finish() == 2
    assert errors(stranger) == [f"error: {tmp_path} is not a cosim run directory (it has no config.toml "
                                "and trace.cosim)\n"], stranger.text()


# ---- the results directory fails --------------------------------------------------------------

def _unwritable(path: Path) -> None:
    """No new files in ``path``: its mode bits, or for root (whom they do not stop) its immutable flag."""
    os.chmod(path, 0o500)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)


def _writable(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    os.chmod(path, 0o700)


def test_a_results_directory_that_becomes_unwritable_gives_one_error_line(tmp_path):
    run = Run("--algorithm", "sgd", "--epochs", "200", "--out", str(tmp_path))
    run.wait_until(lambda: len(run.out) > 3 and len(epochs_in_csv(run.directory)) >= 3)
    _unwritable(run.directory)
    try:
        assert run.finish() == 1
    finally:
        _writable(run.directory)
    assert len(errors(run)) == 1 and "Traceback" not in run.text(), run.text()
    assert errors(run)[0].startswith(f"error: {run.directory}/.checkpoint.npz.tmp: ")
    assert not (run.directory / "metrics.json").exists()
    ck, _ = load_checkpoint(run.directory / CHECKPOINT)     # the last one written whole
    assert ck.records[-1].epoch == ck.epoch >= 1


# ---- the checkpoint file and the trace's way back -------------------------------------------------

def test_a_reopened_trace_continues_after_the_point_it_was_cut_to(tmp_path):
    path = tmp_path / "trace.cosim"
    with TraceWriter(path, config={"dataset": "digits"}, seed=0) as w:
        w.epoch({"algorithm": "sgd", "epoch": 0, "loss": 1.0, "gap": 1.0, "grad_norm": 1.0, "bits": 64,
                 "seconds": 0.0})
        kept = w.size
        w.mark("lost")
        w._file.write(b"\x07\x00\x00")               # a record torn by a crash
    with pytest.raises(ValueError, match="cannot cut"):
        TraceWriter.reopen(path, size=path.stat().st_size + 1)
    with TraceWriter.reopen(path, size=kept) as w:
        w.mark("resume", epoch=0)
    reader = TraceReader(path)
    assert [r["kind"] for r in reader] == ["header", "epoch", "mark"] and not reader.truncated
    assert summarize(path)["marks"] == [{"kind": "mark", "what": "resume", "epoch": 0}]


# ---- the checkpoint file -------------------------------------------------------------------------

def test_a_checkpoint_comes_back_from_disk_exactly(tmp_path):
    record = EpochRecord("lpsgd", 3, 0.1 + 0.2, float("inf"), 1e-300, 8, "fixed<1,7>", 2.5,
                         ops={"mul fp32": 7}, saturations=2, scale=2.0 ** -9, host_ops={"add fp64": 1},
                         decision="why")
    state = State(offset=np.array([[0.5, -1.0], [0.0078125, 0.0]]), scale=2.0 ** -9,
                  offset_format="fixed<1,7>", counters={"epochs": 3, "steps": 30})
    ck = Checkpoint("lpsgd", 3, [record], {"halp": np.array([[np.pi, -0.0]])}, 4.25,
                    np.array([[1 / 3, 2.0 ** -1074]]), "fixed<1,7>", [0.3, 0.1 + 0.2], [0.0, 1e-5], 1, state,
                    [None, UpdateStatistics(30, 7, 2.0 ** -40, 0.1 + 0.2, {-32: 3, -1: 4, 5: 23})])
    save_checkpoint(tmp_path / "c.npz", ck, trace_bytes=1234, notes=[{"what": "restart"}])
    back, extra = load_checkpoint(tmp_path / "c.npz")
    assert extra == {"trace_bytes": 1234, "notes": [{"what": "restart"}]}
    assert back.records == [record] and back.norms == ck.norms and back.rates == ck.rates
    assert back.stats == ck.stats     # what the gradstats policy decides the next epoch from
    assert back.w.tobytes() == ck.w.tobytes() and back.weights["halp"].tobytes() == ck.weights["halp"].tobytes()
    assert back.accel.offset.tobytes() == state.offset.tobytes()
    assert (back.accel.scale, back.accel.offset_format, back.accel.counters) == (
        state.scale, state.offset_format, state.counters)
    assert (back.algorithm, back.epoch, back.seconds, back.fmt, back.saturated_epochs) == ("lpsgd", 3, 4.25,
                                                                                       "fixed<1,7>", 1)
    (tmp_path / "bad.npz").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is not a readable checkpoint"):
        load_checkpoint(tmp_path / "bad.npz")
