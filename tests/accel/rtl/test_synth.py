"""Every RTL unit, and the whole core, synthesizes with Yosys for Xilinx 7-series, latch-free;
the report is sensible.

Yosys takes 3-7 s a unit (half of it reading its Xilinx cell library) and about three minutes
for the core, so the units run in parallel, once per session.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from accel.rtl import synth
from accel.rtl.synth import UNITS, SynthError, SynthReport, synthesize, synthesize_unit

pytestmark = pytest.mark.slow
DOC = Path(__file__).parents[3] / "docs" / "rtl.md"
COMBINATIONAL = {"fp32_add", "fp32_mul", "fp32_ldexp", "fp32_rint", "fp32_cmp", "int_to_fp32",
                 "offset_update"}


@pytest.fixture(scope="module")
def reports() -> dict[str, SynthReport]:
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return dict(zip(UNITS, pool.map(synthesize_unit, UNITS)))


@pytest.mark.parametrize("unit", UNITS)
def test_unit_synthesizes_without_latches(reports, unit):
    r = reports[unit]
    assert r.top == unit and r.yosys_version.startswith("Yosys")
    assert r.latches == 0 and r.latch_messages == (), r
    assert r.luts > 0 and (r.bram > 0) == (unit == "cosim_core"), r     # only the core has memories
    assert r.luts == sum(n for cell, n in r.cells.items() if cell.startswith("LUT"))
    assert not any(cell.startswith("$") for cell in r.cells), f"unmapped cells: {r.cells}"
    if unit in COMBINATIONAL:
        assert r.ffs == 0, r


def test_resources_are_plausible(reports):
    assert reports["fp32_mul"].dsp48e1 > 0                # 24 x 24 bits: two DSP48E1 (25 x 18)
    assert reports["fp32_div"].ffs >= 26 + 25 + 24        # quotient, remainder, divisor at least
    assert reports["lane_rng"].ffs >= 16 * 32             # LANES=16 states of 32 bits
    core = reports["cosim_core"]
    assert core.dsp48e1 >= 16 + 2                         # P = 16 lanes of 16 x 17 bits, and fp32_mul
    assert core.bram >= 128                               # the DATA window alone: 4 Mbit


def test_docs_table_lists_every_unit():
    text = DOC.read_text()
    assert "## Synthesis" in text and all(f"| `{unit}`" in text for unit in UNITS)


def test_register_package_reads(tmp_path):
    probe = tmp_path / "regs_probe.sv"
    probe.write_text("module regs_probe (output logic [31:0] id, output logic [1:0] softmax);\n"
                     "  assign id = cosim_regs_pkg::ID_MAGIC;\n"
                     "  assign softmax = cosim_regs_pkg::MODE_PROBLEM_SOFTMAX;\nendmodule\n")
    r = synthesize([synth.SV / "cosim_regs_pkg.sv", probe], "regs_probe")
    assert r.latches == 0 and r.luts == 0          # constants only


LATCH = """module latchy (input logic en, input logic [3:0] d, output logic [3:0] q);
  always @* if (en) q = d;      // q keeps its value while en is low: a latch
endmodule
"""


def test_latch_is_reported(tmp_path):
    (tmp_path / "latchy.sv").write_text(LATCH)
    r = synthesize([tmp_path / "latchy.sv"], "latchy")
    assert r.latches == 4 and r.cells.get("LDCE") == 4
    assert len(r.latch_messages) == 1 and "latchy.\\q" in r.latch_messages[0]


def test_latch_in_always_comb_is_an_error(tmp_path):
    (tmp_path / "latchy.sv").write_text(LATCH.replace("always @*", "always_comb"))
    with pytest.raises(SynthError, match=r"ERROR: Latch inferred for signal .*latchy"):
        synthesize([tmp_path / "latchy.sv"], "latchy")


def test_syntax_error_carries_the_yosys_line(tmp_path):
    src = tmp_path / "broken.sv"
    src.write_text("module broken (input logic a, output logic y);\n  assign y = a +;\nendmodule\n")
    with pytest.raises(SynthError, match=r"broken\.sv:2: ERROR: syntax error"):
        synthesize([src], "broken")


def test_unsupported_construct_is_an_error(tmp_path):
    # Yosys 0.23 reads no `return` (docs/rtl.md, "SystemVerilog subset").
    src = tmp_path / "ret.sv"
    src.write_text("module ret (input logic a, output logic y);\n"
                   "  function automatic logic inv(input logic x); return !x; endfunction\n"
                   "  assign y = inv(a);\nendmodule\n")
    with pytest.raises(SynthError, match=r"ret\.sv:2: ERROR"):
        synthesize([src], "ret")


def test_missing_yosys_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("YOSYS", str(tmp_path / "no-yosys-here"))
    with pytest.raises(SynthError, match="apt-get install yosys"):
        synthesize([tmp_path / "x.sv"], "x")
