"""int_to_fp32.sv and offset_update.sv: lint-clean, and bit-exact with the reference under
cocotb (bench: tb_convert_update.py; int_to_fp32 against quantize(v·2^e, "fp32"),
offset_update against accel.backends.emulated.offset_update)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from accel.rtl.build import SV, build, lint, run

HERE = Path(__file__).parent
PKG = SV / "fp32_pkg.sv"
CONVERT, UPDATE, WRAPPER = SV / "int_to_fp32.sv", SV / "offset_update.sv", SV / "convert_update_tb.sv"
BENCH_TESTS = {"test_convert_edges", "test_convert_random", "test_convert_ties", "test_update_edges",
               "test_update_random"}
# cocotb rewrites the asserts of every module imported after it starts (*.py by default),
# torch included when quantize first looks for it: about 10 s per run. Only the bench needs it.


def lint_clean(tmp_path: Path, parameters: dict, *sources: Path) -> None:
    # fp32_pkg is shared by all fp32 units; a unit that needs no NaN leaves its QNAN unused.
    waiver = tmp_path / "waiver.vlt"
    waiver.write_text('`verilator_config\nlint_off -rule UNUSEDPARAM -file "*/fp32_pkg.sv" -match "*QNAN*"\n')
    assert lint([waiver, PKG, *sources], parameters=parameters) == []


@pytest.mark.parametrize("width", [48, 24, 54, 2])
def test_lint_int_to_fp32(tmp_path, width):
    lint_clean(tmp_path, {"W": width}, CONVERT)


@pytest.mark.parametrize("maxbits", [16, 8, 50])
def test_lint_offset_update(tmp_path, maxbits):
    lint_clean(tmp_path, {"MAXBITS": maxbits}, UPDATE)


def test_lint_wrapper(tmp_path):
    lint_clean(tmp_path, {}, CONVERT, UPDATE, WRAPPER)


def test_synthesizable_style():
    """The units: always_comb only; no initial blocks, latches, system tasks (the constant
    function $clog2 aside) or always @."""
    for source in (CONVERT, UPDATE):
        code = re.sub(r"//.*", "", source.read_text())
        banned = r"\binitial\b|\balways_latch\b|\balways_ff\b|\$(?!clog2\b)[a-z]|\balways\s*@"
        assert not re.search(banned, code), source.name


@pytest.mark.slow
def test_units_match_reference():
    """One build (int_to_fp32 at W = 48, 24, 54 and offset_update at MAXBITS = 16), one run."""
    sim = build("convert_update_tb", [PKG, CONVERT, UPDATE, WRAPPER])
    assert run(sim, "tb_convert_update", test_dir=HERE) == BENCH_TESTS
