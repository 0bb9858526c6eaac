"""lane_rng.sv: lint-clean, and bit-exact with LaneRNG under cocotb (bench: tb_lane_rng.py)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from accel.rtl.build import SV, build, lint, run

HERE = Path(__file__).parent
SOURCE = SV / "lane_rng.sv"
BENCH_TESTS = {"test_reset_values", "test_streams_match_model", "test_special_seeds",
               "test_start_reseeds", "test_long_run"}


# -Wall includes LATCH / COMBDLY / MULTIDRIVEN / unused and width warnings: all must be absent.
@pytest.mark.parametrize("lanes", [1, 5, 16])
def test_lint_clean(lanes):
    assert lint([SOURCE], parameters={"LANES": lanes}) == []


def test_synthesizable_style():
    """Only always_ff / always_comb processes; no initial blocks, latches or system tasks."""
    code = re.sub(r"//.*", "", SOURCE.read_text())
    assert not re.search(r"\binitial\b|\balways_latch\b|\$[a-z]|\balways\s*@", code)
    assert re.search(r"\balways_ff\b", code)


# 16 is the default build; 5 is odd and not a power of two, so lane indexing cannot lean on either.
@pytest.mark.slow
@pytest.mark.parametrize("lanes", [16, 5])
def test_matches_lane_rng(lanes):
    assert run(build("lane_rng", [SOURCE], parameters={"LANES": lanes}), "tb_lane_rng", test_dir=HERE) == BENCH_TESTS
