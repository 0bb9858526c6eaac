"""The register map: generated files current, bad maps refused, the SV package lint-clean."""
from __future__ import annotations

import doctest
import re

import pytest

from accel.rtl import regmap
from accel.rtl.build import lint
from accel.rtl.regmap import MEM, REG, REGISTERS, WINDOWS, Field, Register, RegmapError, Window, check
from accel.spec import SPEC_VERSION
from accel.spec.gradstats import binade_slots
from protocol.formats import FixedFormat


def test_generated_files_are_current():
    assert regmap.PKG_PATH.read_text() == regmap.sv_package()
    assert regmap.main(["--check"]) == 0
    doc = regmap.DOC_PATH.read_text()
    assert all(f"`{name}`" in doc for name in [*REG, *MEM])


def test_check_reports_drift_and_regenerates(tmp_path, capsys):
    pkg, doc = tmp_path / "cosim_regs_pkg.sv", tmp_path / "rtl.md"
    pkg.write_text(regmap.sv_package().replace("32'h4353_494D", "32'h0"))
    doc.write_text(f"intro\n{regmap.BEGIN}\nstale\n{regmap.END}\noutro\n")
    assert regmap.main(["--check"], pkg=pkg, doc=doc) == 1
    assert "cosim_regs_pkg.sv" in capsys.readouterr().err
    assert regmap.main([], pkg=pkg, doc=doc) == 0
    assert regmap.main(["--check"], pkg=pkg, doc=doc) == 0
    assert doc.read_text().startswith("intro\n") and doc.read_text().endswith("\noutro\n")


def test_docstring_examples():
    result = doctest.testmod(regmap)
    assert result.attempted > 0 and result.failed == 0


def test_shipped_map_contents():
    assert REGISTERS[0].reset.to_bytes(4, "big") == b"CSIM" and REG["ID"] == 0
    version = regmap.unpack("VERSION", regmap._BY_NAME["VERSION"].reset)
    assert (version["spec_major"], version["spec_minor"]) == SPEC_VERSION
    assert (version["map_major"], version["map_minor"]) == regmap.REGMAP_VERSION
    for name in ("STEPS_DONE", "SATURATIONS", "RNG_WORDS", "CYCLES", "SEED", "UPDATES", "VANISHED"):
        assert REG[f"{name}_HI"] == REG[f"{name}_LO"] + 4
    assert {"DATA", "OFFSET_Q", "ANCHOR_Q", "ANCHOR_TERMS", "G_TILDE", "ORDER", "TARGETS",
            "UPDATE_BINADES"} == set(MEM)
    # One counter per binade a 16-bit offset's updates can reach (accel.spec.gradstats).
    assert MEM["UPDATE_BINADES"][1] >= binade_slots(FixedFormat(1, 15))
    assert REG["CONTROL"] and regmap._BY_NAME["CONTROL"].access == "w1p"


def test_sv_constants_match_the_python_ones():
    text = regmap.sv_package()
    addrs = {m[1]: int(m[2] + m[3], 16) for m in re.finditer(r"ADDR_(\w+) = 32'h(\w{4})_(\w{4});", text)}
    bases = {m[1]: int(m[2] + m[3], 16) for m in re.finditer(r"MEM_(\w+)_BASE = 32'h(\w{4})_(\w{4});", text)}
    assert addrs == REG and bases == {k: base for k, (base, _) in MEM.items()}


def test_pack_and_unpack():
    word = regmap.pack("MODE", problem="softmax", algorithm="svrg", rounding="stochastic", rbits=32)
    assert regmap.unpack("MODE", word) == {"problem": 2, "algorithm": 1, "rounding": 1, "rbits": 32}
    with pytest.raises(KeyError, match="no field 'bogus'"):
        regmap.pack("MODE", bogus=1)
    with pytest.raises(ValueError, match="no code 'ridge'"):
        regmap.pack("MODE", problem="ridge")
    with pytest.raises(ValueError, match="does not fit 6 bits"):
        regmap.pack("MODE", rbits=64)


R = Register
BAD_MAPS = {
    "overlap": ((R("A", 0x0, "rw", 0, ""), R("B", 0x0, "rw", 0, "")), (), "overlaps"),
    "misaligned": ((R("A", 0x2, "rw", 0, ""),), (), "4-byte aligned"),
    "duplicate": ((R("A", 0x0, "rw", 0, ""), R("A", 0x4, "rw", 0, "")), (), "duplicate names: A"),
    "access": ((R("A", 0x0, "rx", 0, ""),), (), "access 'rx'"),
    "reset too wide": ((R("A", 0x0, "rw", 1 << 32, ""),), (), "does not fit 32 bits"),
    "window on register": ((R("A", 0x10, "rw", 0, ""),), (Window("M", 0x0, 16, ""),), "overlaps A"),
    "window unaligned": ((), (Window("M", 0x20, 16, ""),), "aligned"),
    "window not 2^k": ((), (Window("M", 0x0, 12, ""),), "power of two"),
    "windows overlap": ((), (Window("M", 0x0, 16, ""), Window("N", 0x20, 8, "")), "M .* overlaps N"),
    "field past bit 31": ((R("A", 0x0, "rw", 0, "", (Field("f", 30, 4, ""),)),), (), "leave the word"),
    "fields overlap": ((R("A", 0x0, "rw", 0, "", (Field("f", 0, 4, ""), Field("g", 3, 2, ""))),), (),
                       "A.g: overlaps"),
    "reset outside fields": ((R("A", 0x0, "rw", 0x10, "", (Field("f", 0, 4, ""),)),), (),
                             "outside its fields"),
    "too many codes": ((R("A", 0x0, "rw", 0, "", (Field("f", 0, 1, "", ("x", "y", "z")),)),), (), "3 codes"),
    "not an identifier": ((R("A-1", 0x0, "rw", 0, ""),), (), "not identifiers.*A-1"),
    "SV names collide": ((R("A", 0x0, "rw", 0, "", (Field("b_c", 0, 1, ""),)),
                          R("A_B", 0x4, "rw", 0, "", (Field("c", 0, 1, ""),))), (), "A_B_C_LSB"),
}


@pytest.mark.parametrize("case", BAD_MAPS)
def test_check_refuses_bad_maps(case):
    registers, windows, message = BAD_MAPS[case]
    with pytest.raises(RegmapError, match=message):
        check(registers, windows)


def test_shipped_map_passes_its_own_check():
    check(REGISTERS, WINDOWS)


WRAPPER = """module regs_lint_top
    import cosim_regs_pkg::*;
(
    input  logic [31:0] addr,
    output logic [31:0] rdata
);
    always_comb begin
        unique case (addr)
            ADDR_ID:      rdata = ID_MAGIC;
            ADDR_VERSION: rdata = RESET_VERSION;
            ADDR_MODE:    rdata = {{(32 - MODE_PROBLEM_WIDTH){1'b0}}, MODE_PROBLEM_SOFTMAX};
            default:      rdata = '0;
        endcase
    end
endmodule
"""


@pytest.mark.parametrize("with_user", [False, True], ids=["package", "importing module"])
def test_package_lints_clean(tmp_path, with_user):
    sources = [regmap.PKG_PATH]
    if with_user:
        (tmp_path / "regs_lint_top.sv").write_text(WRAPPER)
        sources.append(tmp_path / "regs_lint_top.sv")
    assert lint(sources, top="regs_lint_top" if with_user else None) == []
