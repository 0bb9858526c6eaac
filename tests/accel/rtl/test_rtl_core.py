"""The RTL core on its simulated board, against the emulated backend: whole runs bit for bit.

The board (``tests/conftest.py``) is the Verilator-built core behind the cocotb bench, reached
over Etherbone on loopback UDP by the same driver a real board gets. Every test compares with
the emulated backend: the offset after every epoch, the scale, the saturations, the counters,
the update statistics and every operation count (the core's own counters, read back by the driver).
"""
from __future__ import annotations

import numpy as np
import pytest

from accel.backends.emulated import EmulatedBackend
from accel.backends.rtl import RtlBackend
from accel.bus import WORD
from accel.etherbone import EtherboneBus
from accel.rtl import CORE_SOURCES
from accel.rtl.build import lint
from accel.rtl.model import CoreModel
from accel.rtl.regmap import MEM, REG, REGISTERS
from accel.spec import KernelConfig, KernelError
from protocol.formats import parse_format


def test_core_lint_clean():
    assert lint(CORE_SOURCES, top="cosim_core") == []


def _problem(problem: str, n: int, f: int, seed: int):
    rng = np.random.default_rng(seed)
    c = 3 if problem == "softmax" else 1
    x = rng.normal(size=(n, f)) * 0.7
    y = (rng.integers(0, c, n) if problem == "softmax" else
         (rng.random(n) > 0.5) if problem == "logistic" else rng.normal(size=n)).astype(float)
    return c, x, y


def session(backend, problem: str, algorithm: str, rounding: str, bits: int, *, batch: int = 1,
            x=None, y=None, classes: int | None = None, epochs: int = 4, seed: int = 3,
            step_size: float = 0.3):
    """One training session's results: configure, load, per epoch (recentre,) epoch, fetch;
    a promote to one more integer bit after epoch 1. Refusals are recorded as results."""
    if x is None:
        classes, x, y = _problem(problem, 12, 5, seed)
    n, f = x.shape
    rng = np.random.default_rng(seed + 1)
    cfg = KernelConfig(problem=problem, n_samples=n, n_features=f, n_outputs=classes,
                       data=parse_format("fixed<3,9>"), offset=parse_format(f"fixed<2,{bits - 2}>"),
                       acc=parse_format("fp32"), rounding=rounding, rbits=0, lanes=16, seed=seed,
                       l2=1e-3, scale=0.5)
    out = [backend.configure(cfg), backend.load_data(0, x, y)]
    kernel = "sgd" if algorithm == "lpsgd" else "svrg"
    steps = n // batch
    for e in range(epochs):
        if kernel == "svrg":
            g = rng.normal(size=(f, classes)) * 0.1
            p = None
            if problem != "linear":
                p = rng.random((n, classes))
                p = p / p.sum(axis=1, keepdims=True) if problem == "softmax" else p
            scale = 0.25 / (e + 1) if algorithm == "halp" else None
            out.append(backend.recentre(g, p, scale))
        if e == 1 and bits < 16:
            out.append(backend.promote(parse_format(f"fixed<3,{bits - 2}>"), parse_format("fp32")))
        order = rng.integers(0, n, steps * batch).astype(np.uint32)
        try:
            out.append(backend.run_epoch(kernel, e, steps, step_size, batch, order, statistics=True))
        except KernelError as exc:
            out.append(f"refused: {exc}")
        state = backend.fetch()
        out.append((state.offset.tobytes(), state.scale, state.counters))
    return out


def assert_same(a: list, b: list, what: str) -> None:
    assert len(a) == len(b), what
    for k, (x, y) in enumerate(zip(a, b)):
        assert x == y, f"{what}: result {k} differs:\nemulated {x}\nrtl      {y}"


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["linear", "logistic", "softmax"])
def test_whole_runs_match_the_emulated_backend(board, problem):
    """HALP, LP-SVRG and LP-SGD; b = 4, 8, 12, 16; nearest and stochastic; batches 1 and 3;
    a promote mid-run: every result of every request equal."""
    rtl = RtlBackend(fpga=board)
    for algorithm in ("halp", "lpsvrg", "lpsgd"):
        for rounding in ("nearest_even", "stochastic"):
            for bits, batch in ((4, 1), (8, 3), (12, 1), (16, 3)):
                what = f"{problem} {algorithm} {rounding} b={bits} B={batch}"
                want = session(EmulatedBackend(counting=True), problem, algorithm, rounding, bits, batch=batch)
                assert_same(want, session(rtl, problem, algorithm, rounding, bits, batch=batch), what)


@pytest.mark.slow
def test_digits_two_classes_match(board):
    """A real data set: digits 0 and 1 (360 samples, 64 features: four chunks of the dot lanes),
    logistic, HALP and LP-SGD, stochastic rounding, b = 8."""
    from host.datasets import load_dataset
    d = load_dataset("digits")
    keep = d.y < 2
    x, y = d.x[keep] / 16.0, d.y[keep].astype(float)
    for algorithm in ("halp", "lpsgd"):
        args = ("logistic", algorithm, "stochastic", 8)
        kw = dict(x=x, y=y, classes=1, epochs=2, step_size=0.05)
        assert_same(session(EmulatedBackend(), *args, **kw), session(RtlBackend(fpga=board), *args, **kw),
                    f"digits 0/1 {algorithm}")


@pytest.mark.slow
def test_a_diverged_epoch_is_refused_and_keeps_the_offset(board):
    """s near the fp32 maximum: once q is nonzero, d overflows and the zero feature's x·r is
    0·inf = NaN. Both refuse at the same step and keep the offset from before the epoch: the
    core had already updated the elements before the NaN one, and the driver restores them."""
    results = []
    for backend in (EmulatedBackend(), RtlBackend(fpga=board)):
        backend.configure(KernelConfig(problem="linear", n_samples=2, n_features=3, n_outputs=1,
                                       data=parse_format("fixed<2,6>"), offset=parse_format("fixed<1,7>"),
                                       acc=parse_format("fp32"), rounding="nearest_even", rbits=0, lanes=16,
                                       seed=0, l2=0.0, scale=3e38))
        backend.load_data(0, np.array([[1.0, 1.0, 0.0], [1.0, 0.5, 0.0]]), np.zeros(2))
        backend.recentre(np.full((3, 1), 1e30), None, None)
        order = np.array([0, 1, 0], dtype=np.uint32)
        backend.run_epoch("svrg", 0, 1, 1e9, 1, order)                 # q saturates at -1
        before = backend.fetch()
        with pytest.raises(KernelError, match="epoch 1 step 0: the update is NaN"):
            backend.run_epoch("svrg", 1, 3, 1e9, 1, order)
        after = backend.fetch()
        assert np.array_equal(before.offset, after.offset) and before.offset.min() == -1.0
        results.append((after.offset.tobytes(), after.counters))
    assert results[0] == results[1]


def statistics_registers(bus) -> list:
    """What the update statistics' registers and window read after a run, after a second run,
    after a write to the window (read only) and after a soft reset: every run clears them."""
    rtl = RtlBackend(bus=bus)
    classes, x, y = _problem("linear", 12, 5, 0)
    session(rtl, "linear", "lpsgd", "nearest_even", 6, x=x, y=y, classes=classes, epochs=1)

    def snapshot():
        return (rtl._counter("UPDATES"), rtl._counter("VANISHED"), bus.read(REG["UPDATE_MIN"]),
                bus.read(REG["UPDATE_MAX"]), bus.read_words(MEM["UPDATE_BINADES"][0], 64).tolist())
    first = snapshot()
    rtl.run_epoch("sgd", 1, 3, 0.3, 1, np.arange(3, dtype=np.uint32))
    second = snapshot()
    bus.write_words(MEM["UPDATE_BINADES"][0], np.arange(64, dtype=np.uint32))
    written = snapshot()
    bus.write(REG["CONTROL"], 0b100)                       # soft reset
    return [first, second, written, snapshot()]


def check_statistics_registers(seen: list) -> None:
    first, second, written, cleared = seen
    assert first[0] == 12 * 5 and sum(first[4]) <= first[0] and first[2] <= first[3]
    assert second[0] == 3 * 5 and sum(second[4]) <= 15              # the second run's own
    assert written == second and cleared == (0, 0, 0x7F80_0000, 0, [0] * 64)


@pytest.mark.slow
def test_the_statistics_registers_are_the_models(board):
    seen = statistics_registers(EtherboneBus(board))
    check_statistics_registers(seen)
    assert seen == statistics_registers(CoreModel())


@pytest.mark.slow
def test_registers_after_reset_and_a_bad_start(board):
    bus = EtherboneBus(board)
    bus.write(REG["CONTROL"], 0b10)                        # reset
    for r in REGISTERS:
        if r.access in ("ro", "rw"):
            assert bus.read(r.address) == r.reset, r.name
    bus.write(REG["STEPS"], 1)
    bus.write(REG["CONTROL"], 0b01)                        # N_FEATURES = 0: refused at start
    status = bus.wait(REG["STATUS"], mask=0b111, value=0b100, timeout=5)
    assert status == 0b100 and bus.read(REG["ERROR"]) == 1
    bus.write_words(MEM["DATA"][0], np.arange(100))        # windows are memories when idle
    assert bus.read_words(MEM["DATA"][0] + 4 * WORD, 3).tolist() == [4, 5, 6]
    bus.write(REG["CONTROL"], 0b100)                       # soft reset clears the status
    assert bus.read(REG["STATUS"]) == 0 and bus.read(REG["ERROR"]) == 0


@pytest.mark.slow
def test_a_sample_index_beyond_the_data_is_refused(board):
    for backend in (EmulatedBackend(), RtlBackend(fpga=board)):
        backend.configure(KernelConfig(problem="linear", n_samples=4, n_features=3, n_outputs=1,
                                       data=parse_format("fixed<2,6>"), offset=parse_format("fixed<1,7>"),
                                       acc=parse_format("fp32"), rounding="nearest_even", rbits=0, lanes=16,
                                       seed=0, l2=0.0, scale=1.0))
        backend.load_data(0, np.ones((4, 3)), np.ones(4))
        if isinstance(backend, RtlBackend):
            with pytest.raises(KernelError, match="step 1"):
                backend.run_epoch("sgd", 0, 2, 0.1, 1, np.array([0, 9], dtype=np.uint32))
            assert not backend.fetch().offset.any()        # the first step's update is undone


@pytest.mark.slow
def test_the_cycle_formula_is_the_cores_count(board):
    """accel.rtl.model.run_cycles (what the model reports as CYCLES) equals the simulated
    core's CYCLES counter for every kernel, batch and feature count (one to four dot chunks)."""
    from accel.rtl.model import run_cycles
    rtl = RtlBackend(fpga=board)
    for problem in ("linear", "logistic", "softmax"):
        for algorithm in ("lpsgd", "halp"):
            for batch, features in ((1, 5), (3, 17), (2, 64)):
                classes, x, y = _problem(problem, 12, features, 0)
                steps = []
                run_epoch = rtl.run_epoch

                def counted(*args, **kw):
                    result = run_epoch(*args, **kw)
                    steps.append((args[2], rtl.last_cycles))
                    return result
                rtl.run_epoch = counted
                session(rtl, problem, algorithm, "stochastic", 8, batch=batch, x=x, y=y, classes=classes,
                        epochs=1)
                del rtl.run_epoch
                kernel = "sgd" if algorithm == "lpsgd" else "svrg"
                for n, cycles in steps:
                    assert cycles == run_cycles(kernel, problem, n, n_features=features, n_outputs=classes,
                                                batch=batch, dot_lanes=16), (problem, algorithm, batch, features)
