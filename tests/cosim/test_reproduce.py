"""cosim reproduce: the claims' arithmetic exactly, argument errors, and the reduced size end to end."""
import re
import subprocess
import sys

import pytest

from cosim.reproduce import CHUNK, CLAIMS, ONES_N, ones_sums, select, sweep_file

COSIM = [sys.executable, "-m", "cosim"]


def test_swamping_numbers_are_exact():
    # Wang et al. 2018: naive 16-bit sums of ones stop growing; chunks of 64 keep them exact
    assert ones_sums(ONES_N, "fp16", None) == 2048
    assert ones_sums(2048, "fp16", None) == 2048 and ones_sums(2049, "fp16", None) == 2048
    assert ones_sums(ONES_N, "fp16_ibm", None) == 1024
    assert ones_sums(1024, "fp16_ibm", None) == 1024 and ones_sums(1025, "fp16_ibm", None) == 1024
    assert ones_sums(ONES_N, "fp16_ibm", CHUNK) == ONES_N


def test_select_by_name_and_number():
    assert [c.name for c in select([])] == [c.name for c in CLAIMS]
    assert [c.name for c in select(["4", "halp", "accumulation"])] == ["accumulation", "halp"]
    with pytest.raises(ValueError, match="valid claims: 1 halp, 2 floor"):
        select(["nope"])


@pytest.mark.parametrize("claim", [c for c in CLAIMS if c.tables], ids=lambda c: c.name)
def test_sweep_files_are_valid(claim, tmp_path):
    from cosim.cli import _resolve_point, _settable, config_key
    from cosim.sweep import check_points, read_sweep

    for size in ("reduced", "full"):
        path = tmp_path / f"{size}.toml"
        path.write_text(sweep_file(claim, size))
        spec = read_sweep(path, _settable(), config_key)
        assert spec.name == claim.name and spec.duplicates == 0
        check_points(spec, _resolve_point)


def test_bad_arguments_exit_2(tmp_path):
    bad = subprocess.run([*COSIM, "reproduce", "halp", "nope", "--out", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "unknown claim 'nope'" in bad.stderr and "5 policy" in bad.stderr
    size = subprocess.run([*COSIM, "reproduce", "--size", "tiny", "--out", str(tmp_path)], capture_output=True, text=True)
    assert size.returncode == 2 and "reduced, full" in size.stderr
    assert not (tmp_path / "reproduce").exists()


@pytest.mark.slow
def test_reduced_size_end_to_end(tmp_path):
    """Every claim at the reduced size (about 90 s on 2 cores): a verdict per claim, its PNG,
    a table; a second run resumes (no point runs again) and gives the same verdicts."""
    argv = [*COSIM, "reproduce", "--size", "reduced", "--out", str(tmp_path), "--jobs", "2"]
    first = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    report = (tmp_path / "reproduce" / "report.md").read_text()
    verdicts = re.findall(r"^\*\*(holds|does not hold)\*\*: ", report, flags=re.M)
    assert len(verdicts) == len(CLAIMS)
    for claim in CLAIMS:
        assert f"## {CLAIMS.index(claim) + 1}. {claim.name}" in report
        assert f"![{claim.name}]({claim.name}/{claim.name}.png)" in report
        assert (tmp_path / "reproduce" / claim.name / f"{claim.name}.png").stat().st_size > 1000
        if claim.tables:
            assert (tmp_path / "reproduce" / claim.name / "summary.csv").is_file()
    # the arithmetic claim holds exactly at any size
    assert re.search(r"exact up to 2048.*exact up to 1024.*exact up to 65536", report)
    assert report.split("## 4. accumulation")[1].split("## 5.")[0].count("**holds**") == 1

    again = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "already completed" in again.stdout
    assert re.findall(r"^\*\*(holds|does not hold)\*\*: ", (tmp_path / "reproduce" / "report.md").read_text(),
                      flags=re.M) == verdicts
