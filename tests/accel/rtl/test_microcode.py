"""The microcode and the register-level model, without a simulator: the generated ROM is
current, the programs' instruction classes are the spec's operation counts, and the model
(dot in integers, the programs vectorised) runs whole sessions like the reference."""
from __future__ import annotations

import pytest
from test_rtl_core import assert_same, check_statistics_registers, session, statistics_registers

from accel.backends.emulated import EmulatedBackend
from accel.backends.rtl import RtlBackend
from accel.rtl import microcode
from accel.rtl.model import CoreModel
from accel.rtl.regmap import REG


def test_generated_package_is_current(tmp_path):
    assert microcode.main(["--check"]) == 0
    stale = tmp_path / "pkg.sv"
    stale.write_text("// old\n")
    assert microcode.main(["--check"], pkg=stale) == 1
    assert microcode.main([], pkg=stale) == 0 and stale.read_text() == microcode.sv_package()


def test_rom_words_decode_to_their_instructions():
    ops = {code: name for name, (code, _) in microcode.OPS.items()}
    for pc, ins in enumerate(microcode.ROM):
        word = microcode.encode(pc)
        assert word < 1 << microcode.WORD_BITS and ops[word & 0x1F] == ins.op
        if ins.op == "loop":
            assert microcode.ROM[pc + (word >> 7 & 0x7F)].op == "next"


def test_no_instruction_reads_one_memory_twice():
    """Each stream comes from its own RAM read port: an instruction uses a stream once."""
    for name, code in microcode.PROGRAMS.items():
        for ins in code:
            streams = [o.name for o in (ins.a, ins.b) if o is not None and o.space == "S"]
            assert len(streams) == len(set(streams)), (name, str(ins))


@pytest.mark.parametrize("problem", ["linear", "logistic", "softmax"])
def test_the_model_runs_sessions_like_the_reference(problem):
    for algorithm in ("halp", "lpsvrg", "lpsgd"):
        for rounding in ("nearest_even", "stochastic"):
            for bits, batch in ((4, 1), (8, 3), (16, 2)):
                assert_same(session(EmulatedBackend(counting=True), problem, algorithm, rounding, bits, batch=batch),
                            session(RtlBackend(fpga="model"), problem, algorithm, rounding, bits, batch=batch),
                            f"{problem} {algorithm} {rounding} b={bits} B={batch}")


def test_a_dropped_operation_shows_in_the_counts(monkeypatch):
    """The counts are measured, not copied: a program without its denominator floor differs."""
    code = microcode.PROGRAMS["resp_svrg_softmax"]
    floor = max(k for k, ins in enumerate(code) if ins.op == "max")
    monkeypatch.setitem(microcode.PROGRAMS, "resp_svrg_softmax", code[:floor] + code[floor + 1:])
    want = session(EmulatedBackend(counting=True), "softmax", "halp", "nearest_even", 8)
    got = session(RtlBackend(fpga="model"), "softmax", "halp", "nearest_even", 8)
    assert want != got


def test_model_registers():
    core = CoreModel()
    assert core.read(REG["ID"]) == 0x4353494D and core.read(REG["LANES"]) == 16
    core.write(REG["STEPS"], 3)
    core.write(REG["CONTROL"], 1)                 # nothing configured: refused at start
    assert core.read(REG["STATUS"]) == 0b100 and core.read(REG["ERROR"]) == 1
    core.write(REG["CONTROL"], 0b10)
    assert core.read(REG["STEPS"]) == 0 and core.read(REG["STATUS"]) == 0


def test_model_statistics_registers():
    """The update statistics' counters, registers and window: set by a run, cleared by the next
    start and by a soft reset, read only (the simulated core: test_rtl_core)."""
    check_statistics_registers(statistics_registers(CoreModel()))
