"""fp32_div, fp32_ldexp, fp32_rint, fp32_cmp: lint-clean, synthesizable style, and bit-exact with
numpy float32 under cocotb (bench: tb_fp32_ext.py, toplevel fp32_ext_tb.sv)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from accel.rtl.build import SV, build, lint, run

HERE = Path(__file__).parent
UNITS = [SV / "fp32_cmp.sv", SV / "fp32_rint.sv", SV / "fp32_ldexp.sv", SV / "fp32_div.sv"]
SOURCES = [SV / "fp32_pkg.sv", *UNITS, SV / "fp32_ext_tb.sv"]
BENCH_TESTS = {"test_cmp", "test_rint", "test_ldexp", "test_div", "test_div_protocol"}


# -Wall includes LATCH / COMBDLY / MULTIDRIVEN / unused and width warnings: all must be absent.
@pytest.mark.parametrize("top", ["fp32_ext_tb", *(u.stem for u in UNITS)])
def test_lint_clean(top):
    sources = SOURCES if top == "fp32_ext_tb" else [SV / "fp32_pkg.sv", SV / f"{top}.sv"]
    assert lint(sources, top=top) == []


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.stem)
def test_synthesizable_style(unit):
    """Only always_ff / always_comb processes; no initial blocks, latches or system tasks."""
    code = re.sub(r"//.*", "", unit.read_text())
    assert not re.search(r"\binitial\b|\balways_latch\b|\$(?!signed|unsigned|clog2|bits)\w|\balways\s*@", code), unit.name
    assert re.search(r"\balways_(ff|comb)\b", code), unit.name


@pytest.mark.slow
def test_matches_numpy():
    assert run(build("fp32_ext_tb", SOURCES), "tb_fp32_ext", test_dir=HERE) == BENCH_TESTS
