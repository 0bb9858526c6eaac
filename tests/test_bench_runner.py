"""bench/run_all.py against tiny fake benchmarks, and bench/targets.py's target parsing."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"

# bench/ is not a package: load targets.py by path rather than putting bench/ on sys.path.
_spec = importlib.util.spec_from_file_location("bench_targets", BENCH / "targets.py")
targets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(targets)

FAKES = {
    "bench_a_good.py": """
from targets import target
print("a runs")
target("bench_a_good", "speed ratio", 2.0, ">= 1.5", moonshot=">= 3")
target("bench_a_good", "seconds", 12.0, "< 10")
""",
    "bench_b_crash.py": """
from targets import target
target("bench_b_crash", "before the crash", 1.0, "<= 1")
raise RuntimeError("boom in b")
""",
    "bench_c_silent.py": 'print("c has no targets")\n',
}


@pytest.fixture
def fakes(tmp_path: Path) -> Path:
    for name, text in FAKES.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def run_all(folder: Path, *args: str) -> subprocess.CompletedProcess:
    # The fakes live outside bench/, so targets.py comes to them through PYTHONPATH.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--dir", str(folder), *args],
                          capture_output=True, text=True, env=env, timeout=60)


def summary(stdout: str) -> list[str]:
    return stdout.split("== summary:", 1)[1].splitlines()


def test_runs_all_past_a_crash_and_tabulates_every_target(fakes):
    proc = run_all(fakes)
    assert proc.returncode == 1, proc.stderr
    # Output streams through: each benchmark's own lines, in sorted order, the crash's traceback.
    assert proc.stdout.index("a runs") < proc.stdout.index("c has no targets")
    assert "RuntimeError: boom in b" in proc.stderr
    lines = summary(proc.stdout)
    assert lines[0].strip() == "3 benchmarks, 2 of 3 targets met, 1 crashed: bench_b_crash"
    assert lines[2].startswith("benchmark") and lines[3].startswith("---")
    rows = {line.split()[0]: line for line in lines[4:] if line and not line.startswith(" ")}
    assert list(rows) == ["bench_a_good", "bench_b_crash", "bench_c_silent"]
    assert "speed ratio" in rows["bench_a_good"] and ">= 3: not met" in rows["bench_a_good"]
    assert "before the crash" in rows["bench_b_crash"]
    text = "\n".join(lines)
    assert "seconds" in text and "MISSED" in text
    assert "CRASHED (exit 1): RuntimeError: boom in b" in text
    assert "no targets reported" in rows["bench_c_silent"]


def test_missed_targets_alone_exit_0_and_markdown(fakes):
    proc = run_all(fakes, "--only", "a_good", "bench_c_silent.py", "--markdown")
    assert proc.returncode == 0, proc.stderr
    lines = summary(proc.stdout)
    assert lines[0].strip() == "2 benchmarks, 1 of 2 targets met, 0 crashed"
    table = [line for line in lines if line.startswith("|")]
    assert table[0] == "| benchmark | wall s | target | value | bound | result | moonshot |"
    assert table[1] == "| --- " * 7 + "|"
    assert table[2].startswith("| bench_a_good | ") and table[2].endswith(
        "| speed ratio | 2 | >= 1.5 | met | >= 3: not met |")
    assert table[3] == "|  |  | seconds | 12 | < 10 | MISSED |  |"
    assert table[4].startswith("| bench_c_silent |") and "no targets reported" in table[4]
    assert "bench_b_crash" not in proc.stdout


def test_unknown_name_lists_the_valid_ones(fakes):
    proc = run_all(fakes, "--only", "nope")
    assert proc.returncode == 2
    assert "unknown benchmark(s) nope; choose from: bench_a_good, bench_b_crash, bench_c_silent" in proc.stderr


@pytest.mark.parametrize("value, target, expected", [
    (2.0, ">= 1.5", True), (1.5, ">= 1.5", True), (1.4, ">= 1.5", False),
    (1.5, "> 1.5", False), (3.0, "<= 3", True), (9.99, "< 10", True), (10.0, "< 10", False),
    (0.5, "  <= 1e-0 ", True), (float("nan"), ">= 0", False),
])
def test_met(value, target, expected):
    assert targets.met(value, target) is expected


@pytest.mark.parametrize("bad", ["=> 1.5", ">=1.5", "1.5", "== 1.5", "", ">= fast"])
def test_met_names_a_bad_target(bad):
    with pytest.raises(ValueError, match="must be one of >=, <=, >, <, a space and a number"):
        targets.met(1.0, bad)
