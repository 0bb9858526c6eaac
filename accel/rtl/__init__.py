"""The RTL accelerator: synthesizable SystemVerilog (``accel/rtl/sv``) simulated by Verilator
under cocotb. :mod:`accel.rtl.build` finds the tools and builds designs, cached by content."""
from pathlib import Path

SV = Path(__file__).parent / "sv"      # the SystemVerilog sources
