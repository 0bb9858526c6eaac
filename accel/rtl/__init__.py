"""The RTL accelerator: synthesizable SystemVerilog (``accel/rtl/sv``) simulated by Verilator
under cocotb. :mod:`accel.rtl.build` finds the tools and builds designs, cached by content."""
from pathlib import Path

SV = Path(__file__).parent / "sv"      # the SystemVerilog sources

# The core's sources, packages first: the board, the synthesis and the lint all use this list.
CORE_SOURCES = tuple(SV / name for name in (
    "fp32_pkg.sv", "cosim_regs_pkg.sv", "cosim_ucode_pkg.sv", "fp32_add.sv", "fp32_mul.sv",
    "fp32_div.sv", "fp32_ldexp.sv", "fp32_rint.sv", "fp32_cmp.sv", "int_to_fp32.sv",
    "offset_update.sv", "lane_rng.sv", "ram_1r1w.sv", "cosim_core.sv"))
