"""cosim replay: a recorded run re-sent to a fresh accelerator gives the same replies, bit for
bit, on the emulated backend and on the simulated RTL core; a changed reply is found and
named; a trace cut short by a crash replays up to its end."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cosim.replay import first_difference, replay
from cosim.trace import TraceReader, TraceWriter
from protocol.channel import TapEvent

COSIM = [sys.executable, "-m", "cosim"]
RUN = ["--epochs", "2", "--inner-steps", "60", "--algorithm", "halp,lpsgd"]


def cosim(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*COSIM, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A short recorded run: breast_cancer / logistic, HALP and LP-SGD on the emulated backend."""
    out = tmp_path_factory.mktemp("run")
    r = cosim("run", "--dataset", "breast_cancer", "--model", "logistic", *RUN, "--out", str(out))
    assert r.returncode == 0, r.stderr
    (d,) = [p for p in out.iterdir() if p.is_dir()]
    return d / "trace.cosim"


def rewrite(src: Path, dst: Path, change=lambda index, record: record, stop: int | None = None) -> None:
    """Copy a trace record by record through TraceWriter, letting ``change`` alter message
    records (by their index among messages), and stopping after ``stop`` messages."""
    records = list(TraceReader(src))
    with TraceWriter(dst, config=records[0]["config"], seed=records[0]["seed"]) as w:
        index = 0
        for r in records[1:]:
            if r["kind"] == "message":
                if stop is not None and index >= stop:
                    break
                r = change(index, r)
                w.message(TapEvent(r["t"], r["dir"], r["header"], r["frames"]))
                index += 1
            elif r["kind"] == "epoch":
                w.epoch({k: v for k, v in r.items() if k != "kind"})
            elif r["kind"] == "mark":
                w.mark(r["what"], **{k: v for k, v in r.items() if k not in ("kind", "what")})


def test_a_recorded_run_replays_identically(recorded):
    r = cosim("replay", str(recorded.parent))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "identical:" in r.stdout and "requests" in r.stdout


def _nth(recorded: Path, kind: str, n: int = 0) -> int:
    messages = [x for x in TraceReader(recorded) if x["kind"] == "message"]
    return [i for i, x in enumerate(messages) if x["header"]["type"] == kind][n]


def test_a_flipped_bit_in_a_recorded_tensor_is_named(recorded, tmp_path):
    target = _nth(recorded, "state", 1)

    def flip(index, r):
        if index == target:
            frame = bytearray(r["frames"][0])
            frame[8 * 3] ^= 0x01                      # element 3's lowest mantissa bit
            r = {**r, "frames": [bytes(frame), *r["frames"][1:]]}
        return r
    changed = tmp_path / "changed.cosim"
    rewrite(recorded, changed, flip)
    r = cosim("replay", str(changed))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"message {target} (state), tensor offset element [3, 0]" in r.stderr, r.stderr
    assert "recorded" in r.stderr and "(0x" in r.stderr


def test_a_changed_count_in_a_recorded_body_is_named(recorded, tmp_path):
    target = _nth(recorded, "epoch_report")

    def bump(index, r):
        if index == target:
            body = dict(r["header"]["body"])
            body["ops"] = {**body["ops"], "mul fp32": body["ops"]["mul fp32"] + 1}
            r = {**r, "header": {**r["header"], "body": body}}
        return r
    changed = tmp_path / "changed.cosim"
    rewrite(recorded, changed, bump)
    report = replay_path(changed)
    assert not report.identical
    d = report.divergence
    assert (d.index, d.type, d.field) == (target, "epoch_report", "body['ops']['mul fp32']")
    assert d.replayed == d.recorded - 1


def replay_path(path: Path):
    from cosim.launch import AcceleratorProcess
    with AcceleratorProcess.start(f"ipc://{path.parent}/a.sock") as accel:
        return replay(path, accel.address)


def test_a_trace_cut_short_replays_up_to_its_end(recorded, tmp_path):
    short = tmp_path / "short.cosim"
    rewrite(recorded, short, stop=9)                  # ends on a request without its reply
    report = replay_path(short)
    assert report.identical and report.requests == 4 and report.unanswered == 1
    r = cosim("replay", str(short))
    assert r.returncode == 0 and "the trace stops early" in r.stdout


def test_work_is_reported_but_not_compared():
    a = {"type": "epoch_report", "seq": 3, "session": "s", "v": [1, 2], "body": {"steps": 4, "work": {"seconds": 0.1}}}
    b = {**a, "body": {"steps": 4, "work": {"seconds": 0.2}}}
    assert first_difference(a, b, [], []) is None
    c = {**a, "body": {"steps": 5, "work": {"seconds": 0.1}}}
    assert first_difference(a, c, [], [])[:2] == ("body['steps']", None)


def test_bad_input_is_one_line(tmp_path):
    r = cosim("replay", str(tmp_path / "missing.cosim"))
    assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "junk.cosim").write_bytes(b"not a trace")
    r = cosim("replay", str(tmp_path / "junk.cosim"))
    assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_an_emulated_run_replays_identically_on_the_rtl_core(recorded):
    r = cosim("replay", str(recorded), "--backend", "rtl", timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "identical:" in r.stdout and "not compared: capabilities replies" in r.stdout


def test_formats_outside_the_backends_capabilities_are_refused(tmp_path):
    r = cosim("run", "--dataset", "breast_cancer", "--model", "logistic", "--data-format", "e4m3fn",
              "--epochs", "1", "--inner-steps", "20", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    r = cosim("replay", str(next(tmp_path.iterdir())), "--backend", "rtl")
    assert r.returncode == 2 and "e4m3fn" in r.stderr and "Traceback" not in r.stderr
