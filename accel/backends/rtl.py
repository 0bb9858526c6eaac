"""The rtl backend: the kernel spec's interface as bus transactions to the RTL core.

    >>> b = RtlBackend(fpga="model")                  # the register-level model, in process
    >>> b.params["dot_lanes"], b.params["lanes"]
    (16, 16)

``fpga`` names the board: ``udp://HOST:PORT`` is a LiteX-style board over Etherbone (a real
one, or ``cosim fpga-sim``'s simulated one on loopback), ``model`` the register-level model
``accel.rtl.model`` in this process (tests, and trying the driver without a simulator). The
driver does what a host-side driver of a real board does and nothing of the kernel: it
rounds values into their stored formats (data into the data format, targets, g̃, the anchor
terms, α, λ and s into fp32, the offset into a new format on promote), lays them out in the
core's windows (``accel.rtl.regmap``), starts a run, waits for it and reads the results and
counters back. Every operation of the kernel itself runs on the core, and the operation
counts reported for an epoch are the core's own counters where it has them.

Nothing here imports cocotb; only the :class:`~accel.bus.Bus` differs between a simulated and
a real board.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from accel.bus import Bus
from accel.numerics import quantize
from accel.rtl.regmap import MEM, REG, REGMAP_VERSION, codes_to_words, pack, unpack, words_to_codes
from accel.spec import (Backend, EpochResult, KernelConfig, KernelError, LoadResult, OffsetState,
                        PromoteResult, RecentreResult)
from accel.spec.arith import AccArith, rounded_scale
from accel.spec.backend import diverged
from accel.spec.counts import (WORD_BITS, KernelFormats, epoch_memory, epoch_ops, exact_keys, load_ops,
                               promote_ops, recentre_ops)
from accel.spec.gradstats import UpdateStats, binade_slots
from protocol.formats import PRESETS, FixedFormat, FloatFormat

__all__ = ["RtlBackend", "open_bus"]

FP32 = PRESETS["fp32"]
PROBLEMS = ("linear", "logistic", "softmax")
# How often a waiting driver polls STATUS: quickly at first (short epochs), then every 50 ms;
# and how often a long run reports its progress (the daemon turns it into protocol progress
# messages, which keep the host's reply timeout from firing while the board works).
POLL_START, POLL_MAX = 0.0002, 0.05
PROGRESS_EVERY = 2.0


def open_bus(fpga: str) -> Bus:
    """The bus to board ``fpga`` (``udp://HOST:PORT`` or ``model``)."""
    if fpga == "model":
        from accel.rtl.model import CoreModel
        return CoreModel()
    if fpga.startswith("udp://"):
        from accel.etherbone import EtherboneBus
        return EtherboneBus(fpga)
    raise ValueError(f"fpga must be udp://HOST:PORT (a board, or `cosim fpga-sim`) or model; got {fpga!r}")


def _bits(values: np.ndarray) -> np.ndarray:
    """fp32 values (already rounded) as their 32-bit words."""
    return np.asarray(values, dtype=np.float32).view(np.uint32)


def _bits_to_fp32(words: list[int]) -> list[float]:
    """32-bit words as the fp32 values they hold (exact in float64)."""
    return np.asarray(words, dtype=np.uint32).view(np.float32).astype(np.float64).tolist()


class RtlBackend(Backend):
    """The driver (see the module docstring): one board, one configured kernel."""

    name = "rtl"
    # Set by the daemon: called with {"steps": done, "cycles": so far} while a run is busy.
    progress: Callable[[dict], None] | None = None

    def __init__(self, fpga: str | None = None, bus: Bus | None = None) -> None:
        if bus is None:
            if fpga is None:
                raise ValueError("the rtl backend needs a board: fpga='udp://HOST:PORT' (a board, or "
                                 "`cosim fpga-sim`) or fpga='model'")
            bus = open_bus(fpga)
        self.bus = bus
        ident, version = bus.read(REG["ID"]), unpack("VERSION", bus.read(REG["VERSION"]))
        if ident != 0x4353494D or version["map_major"] != REGMAP_VERSION[0]:
            raise KernelError(f"the board at {fpga or bus!r} is not a cosim core of register map "
                              f"{REGMAP_VERSION[0]}.x (ID 0x{ident:08x}, map {version['map_major']}."
                              f"{version['map_minor']})")
        self.params = {**unpack("PARAMS", bus.read(REG["PARAMS"])), "lanes": bus.read(REG["LANES"])}
        # The last epoch's core cycles, and its wall time split: writing the order and the
        # registers, the run (start to done seen), reading the results back.
        self.last_cycles = 0
        self.last_timing = {"setup": 0.0, "run": 0.0, "readback": 0.0}

    # ---- layout ----
    def _padded(self) -> int:
        P = self.params["dot_lanes"]
        return -(-self.cfg.n_features // P) * P

    def _offset_words(self, q: np.ndarray, fmt: FixedFormat) -> np.ndarray:
        """q (F × C values on fmt's grid) in the window layout: (f, c) at c*F_pad + f."""
        F, C = q.shape
        grid = np.zeros((C, self._padded()), dtype=np.int64)
        grid[:, :F] = np.rint(q.T * 2.0 ** fmt.frac_bits)
        return codes_to_words(grid.ravel())

    def _read_offset(self, window: str) -> np.ndarray:
        F, C, Fp, fmt = self.cfg.n_features, self.cfg.n_outputs, self._padded(), self.fmts.offset
        words = self.bus.read_words(MEM[window][0], C * Fp)
        return (words_to_codes(words, fmt.bits).reshape(C, Fp)[:, :F].T * 2.0 ** -fmt.frac_bits)

    def _write_fp32_grid(self, window: str, values: np.ndarray) -> None:
        F, C = values.shape
        grid = np.zeros((C, self._padded()), dtype=np.float32)
        grid[:, :F] = values.T
        self.bus.write_words(MEM[window][0], grid.ravel().view(np.uint32))

    def _counter(self, stem: str) -> int:
        lo = self.bus.read(REG[f"{stem}_LO"])               # reading _LO latches _HI
        return lo | self.bus.read(REG[f"{stem}_HI"]) << 32

    # ---- the interface ----
    def configure(self, cfg: KernelConfig) -> float:
        P = self.params
        if cfg.acc != FP32:
            raise KernelError(f"acc_format {cfg.acc!r}: the core's accumulator is fp32")
        if cfg.lanes > P["lanes"]:
            raise KernelError(f"lanes = {cfg.lanes}: this core has {P['lanes']} random-bit lanes "
                              "(its LANES build parameter)")
        self.cfg, self.fmts = cfg, KernelFormats(cfg.data, cfg.offset, cfg.acc, cfg.rounding, cfg.rbits)
        Fp = self._padded()
        limits = [(cfg.n_outputs, P["max_classes"], "n_outputs"),
                  (Fp * cfg.n_outputs, MEM["OFFSET_Q"][1], f"padded features ({Fp}) × outputs"),
                  (cfg.n_samples * Fp, MEM["DATA"][1], f"samples × padded features ({Fp})"),
                  (cfg.n_samples * cfg.n_outputs, MEM["ANCHOR_TERMS"][1], "samples × outputs")]
        for value, most, what in limits:
            if value > most:
                raise KernelError(f"{what} = {value}: this core holds at most {most}")
        self.A = AccArith(FP32)
        s = rounded_scale(self.A, cfg.scale)
        bus = self.bus
        bus.write(REG["CONTROL"], pack("CONTROL", reset=1))
        bus.write(REG["OFFSET_FMT"], pack("OFFSET_FMT", width=cfg.offset.bits, frac=cfg.offset.frac_bits))
        bus.write(REG["DATA_FMT"], pack("DATA_FMT", width=cfg.data.bits, frac=cfg.data.frac_bits))
        bus.write(REG["SCALE"], int(_bits(s)))
        with np.errstate(over="ignore"):
            bus.write(REG["LAMBDA"], int(_bits(self.A.round(cfg.l2))))
        bus.write(REG["SEED_LO"], cfg.seed & 0xFFFF_FFFF)
        bus.write(REG["SEED_HI"], cfg.seed >> 32)
        bus.write(REG["N_SAMPLES"], cfg.n_samples)
        bus.write(REG["N_FEATURES"], cfg.n_features)
        bus.write(REG["N_OUTPUTS"], cfg.n_outputs)
        bus.write(REG["RNG_LANES"], cfg.lanes)
        # Block RAM has no reset: clear what a run reads before it is written.
        zeros = np.zeros(Fp * cfg.n_outputs, dtype=np.uint32)
        for window in ("OFFSET_Q", "ANCHOR_Q", "G_TILDE"):
            bus.write_words(MEM[window][0], zeros)
        self.s = s
        self.counters = {"epochs": 0, "steps": 0, "saturations": 0, "recentres": 0, "promotes": 0}
        return s

    def load_data(self, start: int, x: np.ndarray, y: np.ndarray) -> LoadResult:
        cfg, Fp = self.cfg, self._padded()
        xq, sat = quantize(np.asarray(x, dtype=np.float64), cfg.data, return_saturated=True)
        rows = np.zeros((len(x), Fp), dtype=np.int64)
        rows[:, :cfg.n_features] = np.rint(xq * 2.0 ** cfg.data.frac_bits)
        self.bus.write_words(MEM["DATA"][0] + 4 * start * Fp, codes_to_words(rows.ravel()))
        y = np.asarray(y, dtype=np.float64)
        if cfg.problem == "softmax":
            targets = y.astype(np.uint32)                      # labels
        else:
            with np.errstate(over="ignore"):
                targets = _bits(self.A.round(y))               # R(y); logistic 0/1 are exact
        self.bus.write_words(MEM["TARGETS"][0] + 4 * start, targets)
        self.counters["saturations"] += sat
        return LoadResult(saturations=sat, ops=load_ops(cfg.problem, self.fmts, rows=len(x),
                                                        n_features=cfg.n_features))

    def recentre(self, full_grad: np.ndarray, anchor: np.ndarray | None, scale: float | None) -> RecentreResult:
        A, cfg = self.A, self.cfg
        s = self.s if scale is None else rounded_scale(A, scale)
        with np.errstate(over="ignore"):
            g_tilde = A.round(np.asarray(full_grad, dtype=np.float64))
            terms = None if anchor is None else A.round(np.asarray(anchor, dtype=np.float64))
        Fp = self._padded()
        if scale is not None:                                  # HALP: q ← 0 on the new grid
            zeros = np.zeros(Fp * cfg.n_outputs, dtype=np.uint32)
            self.bus.write_words(MEM["OFFSET_Q"][0], zeros)
            self.bus.write_words(MEM["ANCHOR_Q"][0], zeros)
        else:                                                  # LP-SVRG: q_a ← q
            self.bus.write_words(MEM["ANCHOR_Q"][0], self.bus.read_words(MEM["OFFSET_Q"][0], Fp * cfg.n_outputs))
        self._write_fp32_grid("G_TILDE", g_tilde)
        if terms is not None:
            self.bus.write_words(MEM["ANCHOR_TERMS"][0], _bits(terms.ravel()))
        self.bus.write(REG["SCALE"], int(_bits(s)))
        self.s = s
        self.counters["recentres"] += 1
        return RecentreResult(scale=s, ops=recentre_ops(
            self.fmts, n_features=cfg.n_features, n_outputs=cfg.n_outputs,
            anchor_rows=0 if anchor is None else len(anchor), rescale=scale is not None))

    def promote(self, offset: FixedFormat, acc: FloatFormat) -> PromoteResult:
        if acc != FP32:
            raise KernelError(f"acc_format {acc!r}: the core's accumulator is fp32")
        cfg, old = self.cfg, self.fmts
        q, sat_q = quantize(self._read_offset("OFFSET_Q"), offset, return_saturated=True)
        qa, sat_a = quantize(self._read_offset("ANCHOR_Q"), offset, return_saturated=True)
        self.fmts = KernelFormats(old.data, offset, acc, old.rounding, old.rbits)
        self.bus.write(REG["OFFSET_FMT"], pack("OFFSET_FMT", width=offset.bits, frac=offset.frac_bits))
        self.bus.write_words(MEM["OFFSET_Q"][0], self._offset_words(q, offset))
        self.bus.write_words(MEM["ANCHOR_Q"][0], self._offset_words(qa, offset))
        self.counters["saturations"] += sat_q + sat_a
        self.counters["promotes"] += 1
        return PromoteResult(saturations=sat_q + sat_a, scale=self.s, ops=promote_ops(
            cfg.problem, old, self.fmts, n_samples=cfg.n_samples, n_features=cfg.n_features,
            n_outputs=cfg.n_outputs, anchor_rows=0))

    def run_epoch(self, algorithm: str, epoch: int, steps: int, step_size: float, batch_size: int,
                  order: np.ndarray, statistics: bool = False) -> EpochResult:
        cfg, fmts, bus, B = self.cfg, self.fmts, self.bus, batch_size
        if B > self.params["max_batch"] or steps * B > MEM["ORDER"][1]:
            raise KernelError(f"batch_size {B} × steps {steps}: this core takes batches of at most "
                              f"{self.params['max_batch']} and {MEM['ORDER'][1]} draws per epoch")
        Fp = self._padded()
        t0 = time.perf_counter()
        before = bus.read_words(MEM["OFFSET_Q"][0], Fp * cfg.n_outputs)   # law 3 on a diverged epoch
        bus.write_words(MEM["ORDER"][0], np.asarray(order[:steps * B], dtype=np.uint32))
        bus.write(REG["MODE"], pack("MODE", problem=cfg.problem, algorithm=algorithm,
                                    rounding=cfg.rounding, rbits=cfg.rbits))
        with np.errstate(over="ignore"):
            bus.write(REG["ALPHA"], int(_bits(self.A.round(step_size))))
        bus.write(REG["EPOCH"], epoch)
        bus.write(REG["STEPS"], steps)
        bus.write(REG["BATCH"], B)
        t1 = time.perf_counter()
        bus.write(REG["CONTROL"], pack("CONTROL", start=1))
        status = self._wait()
        t2 = time.perf_counter()
        self.last_cycles = self._counter("CYCLES")
        if status["error"]:
            code = unpack("ERROR", bus.read(REG["ERROR"]))["code"]
            step = bus.read(REG["ERROR_STEP"])
            bus.write_words(MEM["OFFSET_Q"][0], before)
            if code == 2:
                raise diverged(epoch, step, fmts.acc)
            raise KernelError(f"epoch {epoch} step {step}: the core refused the configuration "
                              f"(ERROR.code {code}; a sample index beyond n_samples, or a register out of range)")
        sat = self._counter("SATURATIONS")
        shape = dict(n_features=cfg.n_features, n_outputs=cfg.n_outputs, batch=B, steps=steps)
        ops = epoch_ops(algorithm, cfg.problem, fmts, **shape)
        keys, acc = exact_keys(algorithm, fmts, cfg.n_features), repr(fmts.acc)
        measured = {f"{op} {acc}": self._counter(f"OPS_{op.upper()}")
                    for op in ("add", "mul", "div", "ldexp", "rint", "cmp")}
        measured[keys.dot_mul] = self._counter("OPS_MAC")
        measured[keys.acc_round] = self._counter("OPS_ROUND") + 2     # + R(α), R(λ), here
        if cfg.rounding == "stochastic":
            measured["rng bits"] = self._counter("RNG_WORDS") * (cfg.rbits or WORD_BITS)
        for key, value in measured.items():
            if value or key in ops:
                ops[key] = value
        self.counters["epochs"] += 1
        self.counters["steps"] += self._counter("STEPS_DONE")
        self.counters["saturations"] += sat
        self.last_timing = {"setup": t1 - t0, "run": t2 - t1, "readback": time.perf_counter() - t2}
        return EpochResult(steps=steps, ops=ops, memory=epoch_memory(algorithm, cfg.problem, fmts, **shape),
                           saturations=sat, work={"cycles": self.last_cycles, "seconds": round(t2 - t1, 6)},
                           stats=self._stats() if statistics else None)

    def _stats(self) -> UpdateStats:
        """The run's update statistics from the core's counters, registers and window."""
        lo, hi = _bits_to_fp32([self.bus.read(REG["UPDATE_MIN"]), self.bus.read(REG["UPDATE_MAX"])])
        counts = self.bus.read_words(MEM["UPDATE_BINADES"][0], binade_slots(self.fmts.offset))
        return UpdateStats.from_counts(self._counter("UPDATES"), self._counter("VANISHED"), lo, hi, counts)

    def _wait(self) -> dict[str, int]:
        """Poll STATUS until the run ends, reporting progress; a silent board raises from the
        bus itself (EtherboneBus: after its retries), so a dead board ends the wait."""
        poll, report = POLL_START, time.monotonic() + PROGRESS_EVERY
        while True:
            status = unpack("STATUS", self.bus.read(REG["STATUS"]))
            if not status["busy"] and (status["done"] or status["error"]):
                return status
            if self.progress is not None and time.monotonic() > report:
                self.progress({"steps": self._counter("STEPS_DONE"), "cycles": self._counter("CYCLES")})
                report = time.monotonic() + PROGRESS_EVERY
            time.sleep(poll)
            poll = min(2 * poll, POLL_MAX)

    def fetch(self) -> OffsetState:
        return OffsetState(offset=self._read_offset("OFFSET_Q"), scale=self.s,
                           offset_format=self.fmts.offset, counters=dict(self.counters))

    def restore(self, state: OffsetState) -> float:
        """The core takes q through the offset window, as promote writes it: the offset format
        register, q into OFFSET_Q, zeros into ANCHOR_Q and G_TILDE, the scale register."""
        old, fmt, Fp = self.fmts, state.offset_format, self._padded()
        s = rounded_scale(self.A, state.scale)
        self.fmts = KernelFormats(old.data, fmt, old.acc, old.rounding, old.rbits)
        self.bus.write(REG["OFFSET_FMT"], pack("OFFSET_FMT", width=fmt.bits, frac=fmt.frac_bits))
        self.bus.write_words(MEM["OFFSET_Q"][0], self._offset_words(np.asarray(state.offset), fmt))
        zeros = np.zeros(Fp * self.cfg.n_outputs, dtype=np.uint32)
        for window in ("ANCHOR_Q", "G_TILDE"):
            self.bus.write_words(MEM[window][0], zeros)
        self.bus.write(REG["SCALE"], int(_bits(s)))
        self.s, self.counters = s, dict(state.counters)
        return s
