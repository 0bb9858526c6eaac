"""fp32_add / fp32_mul RTL: Verilator lint of the sources and the cocotb tests against numpy.

The cocotb module is ``tb_fp32_addmul.py`` next to this file (toplevel ``fp32_addmul_tb``, both
units on the same operands, so one build serves both).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from accel.rtl.build import SV, build, lint, run

SOURCES = [SV / "fp32_pkg.sv", SV / "fp32_add.sv", SV / "fp32_mul.sv", SV / "fp32_addmul_tb.sv"]
COCOTB_TESTS = {"test_add_special_cases", "test_add_random", "test_mul_special_cases",
                "test_mul_random"}


@pytest.mark.parametrize("top", ["fp32_add", "fp32_mul", "fp32_addmul_tb"])
def test_lint_clean(top):
    # No waivers anywhere: no warning at all is accepted, so in particular no LATCH and no COMBDLY.
    assert lint(SOURCES, top=top) == []


@pytest.mark.slow         # about 13 s to build (cached afterwards) and 6 s to run 2 x 1.3e5 pairs
def test_fp32_addmul_cocotb():
    assert run(build("fp32_addmul_tb", SOURCES), "tb_fp32_addmul", test_dir=Path(__file__).parent) == COCOTB_TESTS
