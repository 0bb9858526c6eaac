"""Fixtures shared across the test folders."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def board(tmp_path_factory):
    """The simulated FPGA board (the RTL core under Verilator, serving Etherbone on a loopback
    UDP port), one for the whole session: its address. The core is built once and cached."""
    from cosim.launch import BoardProcess

    proc = BoardProcess.start(log=tmp_path_factory.mktemp("board") / "board.log")
    yield proc.address
    proc.stop()
