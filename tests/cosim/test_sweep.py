"""cosim sweep end to end: real runs in their own processes, locally and on a local Ray instance."""
import csv
import doctest
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import cosim.sweep
import cosim.sweep_summary
from cosim.cli import _settable, config_key
from cosim.sweep import read_sweep
from cosim.sweep_summary import TIME_COLUMNS

COSIM = [sys.executable, "-m", "cosim"]
BASE = """
[base]
dataset = "synthetic_logistic"
model = "logistic"
samples = 300
epochs = 2
"""
# 4 grid points on the accelerator, 3 float64 ones on the host (cheaper: no daemon), and a
# point that fails at run time: its rtl daemon finds no board at the discard port (resolve()
# accepts it: the address is well formed)
EIGHT = f"""name = "eight"
{BASE}
[grid]
algorithm = ["halp", "lpsgd"]
bits = [4, 8]
[[points]]
algorithm = "svrg"
[[points]]
algorithm = "svrg"
seed = 1
[[points]]
algorithm = "sgd"
[[points]]
algorithm = "halp"
backend = "rtl"
fpga = "udp://127.0.0.1:9"
"""


def cosim_sweep(*args, **kw):
    return subprocess.run([*COSIM, "sweep", *map(str, args)], capture_output=True, text=True, timeout=600, **kw)


def table(root: Path) -> list[dict]:
    """summary.csv without the columns that measure time."""
    return [{k: v for k, v in r.items() if k not in TIME_COLUMNS} for r in csv.DictReader(open(root / "summary.csv"))]


def mtimes(root: Path) -> dict[str, int]:
    return {d.name: (d / "metrics.json").stat().st_mtime_ns for d in (root / "runs").iterdir()
            if (d / "metrics.json").exists()}


@pytest.fixture(scope="module")
def eight(tmp_path_factory):
    """The 8-point sweep run once on this machine: (its process, its sweep directory)."""
    tmp = tmp_path_factory.mktemp("sweep")
    (tmp / "eight.toml").write_text(EIGHT)
    r = cosim_sweep(tmp / "eight.toml", "--out", tmp / "local", "--jobs", 2)
    return r, tmp / "local" / "eight"


@pytest.mark.slow
def test_a_failing_point_is_marked_and_the_others_complete_and_stay_done(eight, tmp_path):
    r, root = eight
    assert r.returncode == 1, r.stderr + r.stdout          # a point failed
    rows = {x["point"]: x for x in table(root)}
    assert len(rows) == 8 and len(list((root / "runs").iterdir())) == 8
    (failed,) = [x for x in rows.values() if x["status"] != "completed"]
    assert failed["backend"] == "rtl" and failed["status"] == "failed"
    assert "nothing listens there" in failed["error"] and failed["final_gap"] == ""
    done = [x for x in rows.values() if x["status"] == "completed"]
    assert all(x["error"] == "" and float(x["final_gap"]) > 0 and float(x["energy_j"]) > 0 for x in done)
    halp = {int(x["bits"]): float(x["final_gap"]) for x in done if x["algorithm"] == "halp"}
    assert halp[8] < halp[4]
    assert {x["final_bits"] for x in done if x["algorithm"] == "svrg"} == {"64"}
    assert all(int(x["ops"]) > 0 for x in done if x["final_bits"] != "64")
    for f in ("summary.parquet", "gap-vs-bits.png", "epochs-to-target.png", "pareto.png", "sweep.toml"):
        assert (root / f).stat().st_size > 0, f
    run_dir = root / failed["run_dir"]
    assert (run_dir / "point.toml").exists() and "BusError" in (run_dir / "stderr.log").read_text()
    # run again: only the failed point runs
    before = mtimes(root)
    again = cosim_sweep(root / "sweep.toml", "--out", root.parent, "--jobs", 2)
    assert again.returncode == 1 and "7 of 8 points already completed" in again.stdout, again.stdout
    after = mtimes(root)
    assert after.pop(failed["point"]) != before.pop(failed["point"]) and after == before
    assert table(root) == list(rows.values())


@pytest.mark.slow
def test_ray_gives_the_local_summary(eight, tmp_path):
    _, local = eight
    r = cosim_sweep(local / "sweep.toml", "--ray", "local", "--jobs", 2, "--out", tmp_path)
    assert r.returncode == 1, r.stderr + r.stdout
    assert "on Ray" in r.stdout
    root = tmp_path / "eight"
    assert table(root) == table(local)
    a, b = (pq.read_table(d / "summary.parquet").drop_columns(list(TIME_COLUMNS)) for d in (local, root))
    assert a.equals(b)
    point = table(root)[0]["run_dir"]     # the run directory came back whole, as a tar from the worker
    assert sorted(p.name for p in (root / point).iterdir()) == sorted(p.name for p in (local / point).iterdir())


@pytest.mark.slow
def test_an_interrupted_sweep_runs_only_the_missing_points_again(tmp_path):
    # run one at a time: svrg (host only, quick) completes, halp is stopped, sgd never starts
    (tmp_path / "three.toml").write_text(f"""name = "three"
{BASE}
[[points]]
algorithm = "svrg"
[[points]]
algorithm = "halp"
[[points]]
algorithm = "sgd"
""")
    # A background job inherits SIGINT ignored (and Python keeps ignoring it): restore the default,
    # so that the sweep sees Ctrl-C as a terminal user's process does.
    proc = subprocess.Popen([*COSIM, "sweep", str(tmp_path / "three.toml"), "--out", str(tmp_path), "--jobs", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    runs = tmp_path / "three" / "runs"
    deadline = time.monotonic() + 120
    while not (runs.is_dir() and any(runs.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)          # Ctrl-C: the first point is done, the second running
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err + out
    rows = table(tmp_path / "three")
    assert [(x["algorithm"], x["status"]) for x in rows] == [
        ("svrg", "completed"), ("halp", "interrupted"), ("sgd", "not run")], rows
    first, done = mtimes(tmp_path / "three"), rows[0]["point"]
    r = cosim_sweep(tmp_path / "three.toml", "--out", tmp_path, "--jobs", 2)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "1 of 3 points already completed" in r.stdout and "2 completed, 0 failed" in r.stdout
    assert {x["status"] for x in table(tmp_path / "three")} == {"completed"}
    assert mtimes(tmp_path / "three")[done] == first[done]
    assert json.loads((runs / done / "sweep.json").read_text())["returncode"] == 0


@pytest.mark.parametrize("body, fragment", [
    ('bitz = 4\n', "unknown key 'bitz'; valid top-level keys: name, out, jobs, base, grid, points"),
    (f'{BASE}\n[grid]\nbitz = [4, 8]\n', "[grid] unknown key 'bitz'; valid keys: acc_format, algorithms"),
    (f'{BASE}\n[grid]\nbits = 4\n', "[grid] bits: a non-empty list of values to sweep"),
    (f'{BASE}\n[grid]\nbits = [4, 1]\n', 'point 2 of 2 (grid point 2: bits = 1): bits: an integer from 2 to 16; got 1'),
    (f'{BASE}\n[[points]]\noffset-format = "fixed<1,99>"\n', "point 1 of 1 ([[points]] 1: offset_format"),
    (f'{BASE}\nout = "x"\n', "[base] 'out': the sweep sets each point's out"),
])
def test_a_bad_sweep_file_is_one_error_line_and_runs_nothing(tmp_path, body, fragment):
    (tmp_path / "bad.toml").write_text(body)
    r = cosim_sweep(tmp_path / "bad.toml", "--out", tmp_path / "out")
    assert r.returncode == 2, r.stderr + r.stdout
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert fragment in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_point_ids_name_what_varies_and_survive_a_longer_grid(tmp_path):
    def ids(grid: str) -> list[str]:
        (tmp_path / "s.toml").write_text(f"{BASE}\n[grid]\n{grid}\n[[points]]\nalgorithm = 'svrg'\n")
        return [p.id for p in read_sweep(tmp_path / "s.toml", _settable(), config_key).points]

    short = ids('algorithm = ["halp"]\nbits = [4, 8]')
    longer = ids('algorithm = ["halp", "lpsgd"]\nbits = [4, 6, 8]')
    assert short[0].startswith("halp-bits4-") and short[-1].startswith("svrg-")
    assert set(short) <= set(longer) and len(longer) == 7
    # the same run twice is one point
    (tmp_path / "d.toml").write_text(f'{BASE}\n[grid]\nalgorithm = ["halp"]\n[[points]]\nalgorithm = "halp"\n')
    sweep = read_sweep(tmp_path / "d.toml", _settable(), config_key)
    assert len(sweep.points) == 1 and sweep.duplicates == 1


@pytest.mark.parametrize("module", [cosim.sweep, cosim.sweep_summary])
def test_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
