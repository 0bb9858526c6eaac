"""A register-level model of the RTL core: its register map and windows as a :class:`Bus`.

    >>> from accel.rtl.regmap import REG
    >>> core = CoreModel()
    >>> hex(core.read(REG["ID"])), core.read(REG["STATUS"])
    ('0x4353494d', 0)

The model answers every register and window of ``accel.rtl.regmap`` as the core does and, on
``CONTROL.start``, runs the epoch the way the core sequences it: the exact dot in integers,
then the microcode of ``accel.rtl.microcode`` (vectorised over the batch rows and the offset
elements), then step 7 with the LaneRNG words in element order. It is what the driver is
tested against without a simulator, and a third implementation beside the emulated backend
and the SystemVerilog: the microcode's programs are checked against the reference here, the
SystemVerilog against both. It is not cycle-accurate: CYCLES counts nothing.
"""
from __future__ import annotations

import numpy as np

from accel.backends.emulated import clamp_offset, offset_round
from accel.bus import WORD, Bus, check_aligned
from accel.numerics import LaneRNG
from accel.rtl import microcode
from accel.rtl.regmap import MEM, REGISTERS, codes_to_words, pack, unpack, words_to_codes
from accel.spec.arith import AccArith
from accel.spec.gradstats import UpdateTally
from protocol.formats import PRESETS, FixedFormat

__all__ = ["CoreModel", "RunError", "COUNTERS", "check_config", "step_cycles", "run_cycles"]

FP32 = PRESETS["fp32"]
# 64-bit counters by register stem, cleared by start.
COUNTERS = ("STEPS_DONE", "SATURATIONS", "RNG_WORDS", "CYCLES", "OPS_ADD", "OPS_MUL", "OPS_DIV",
            "OPS_LDEXP", "OPS_RINT", "OPS_CMP", "OPS_ROUND", "OPS_MAC", "UPDATES", "VANISHED")
# The update statistics' registers and window, cleared with the counters; the core writes the
# window, the bus only reads it.
EXTREMES = ("UPDATE_MIN", "UPDATE_MAX")
STATS_WINDOW = "UPDATE_BINADES"
_RW = {r.name: r for r in REGISTERS if r.access == "rw"}
_BY_ADDR = {r.address: r for r in REGISTERS}


def step_cycles(algorithm: str, problem: str, *, n_features: int, n_outputs: int, batch: int,
                dot_lanes: int) -> int:
    """Clock cycles of one inner step of the core (cosim_core.sv's state machine):

    2B (gather) + B·C·(⌈F/P⌉ + 2) (the dot: a chunk of P lanes per cycle, then the rounding)
    + B·(3 + resp) (a response program per row) + F·C·(3 + upd) (an update program per
    element) + 1, where resp and upd are the programs' cycles (microcode.program_cycles).
    """
    F, C, B = n_features, n_outputs, batch
    resp = microcode.program_cycles(f"resp_{algorithm}_{problem}", C, B)
    upd = microcode.program_cycles(f"upd_{algorithm}", C, B)
    return 2 * B + B * C * (-(-F // dot_lanes) + 2) + B * (3 + resp) + F * C * (3 + upd) + 1


def run_cycles(algorithm: str, problem: str, steps: int, **shape: int) -> int:
    """CYCLES after a run of ``steps`` steps: the init program, then the steps (a run of no
    steps still takes its last state's cycle)."""
    init = microcode.program_cycles("init", shape["n_outputs"], shape["batch"])
    return init + (steps * step_cycles(algorithm, problem, **shape) if steps else 1)


class RunError(Exception):
    """A run stops: ``code`` is an ERROR.code name, ``step`` where."""

    def __init__(self, code: str, step: int) -> None:
        super().__init__(code, step)
        self.code, self.step = code, step


def _f32(word: int) -> float:
    return float(np.array(word, dtype=np.uint32).view(np.float32))


def check_config(regs: dict[str, int], params: dict[str, int]) -> dict:
    """The run's settings from the configuration registers, or RunError('config', 0)."""
    off, dat = unpack("OFFSET_FMT", regs["OFFSET_FMT"]), unpack("DATA_FMT", regs["DATA_FMT"])
    mode = unpack("MODE", regs["MODE"])
    F, C, N, B = regs["N_FEATURES"], regs["N_OUTPUTS"], regs["N_SAMPLES"], regs["BATCH"]
    P = params["dot_lanes"]
    F_pad = -(-F // P) * P
    ok = (1 <= off["width"] <= 16 and off["frac"] < off["width"] and 1 <= dat["width"] <= 16
          and dat["frac"] < dat["width"] and mode["problem"] <= 2 and mode["rbits"] <= 32
          and 1 <= C <= params["max_classes"] and 1 <= B <= params["max_batch"] and F >= 1 and N >= 1
          and F_pad * C <= MEM["OFFSET_Q"][1] and N * F_pad <= MEM["DATA"][1]
          and N * C <= MEM["ANCHOR_TERMS"][1] and regs["STEPS"] * B <= MEM["ORDER"][1]
          and 1 <= regs["RNG_LANES"] <= params["lanes"])
    if not ok:
        raise RunError("config", 0)
    return dict(offset=FixedFormat(off["width"] - off["frac"], off["frac"]), data_frac=dat["frac"],
                data_bits=dat["width"], problem=("linear", "logistic", "softmax")[mode["problem"]],
                algorithm=("sgd", "svrg")[mode["algorithm"]],
                rounding=("nearest_even", "stochastic")[mode["rounding"]], rbits=mode["rbits"],
                F=F, C=C, N=N, B=B, F_pad=F_pad)


class CoreModel(Bus):
    """The core's registers and windows, and its epochs (see the module docstring)."""

    def __init__(self, *, dot_lanes: int = 16, lanes: int = 16, max_classes: int = 16,
                 max_batch: int = 256) -> None:
        self.params = dict(dot_lanes=dot_lanes, lanes=lanes, max_classes=max_classes, max_batch=max_batch)
        self._reset()

    def _reset(self) -> None:
        self.regs = {name: r.reset for name, r in _RW.items()}
        self.mem = {name: np.zeros(words, dtype=np.uint32) for name, (_, words) in MEM.items()}
        self.status, self.error, self.error_step = 0, 0, 0
        self._latched: dict[str, int] = {}
        self._clear_counts()

    def _clear_counts(self) -> None:
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.extremes = {r.name: r.reset for r in REGISTERS if r.name in EXTREMES}
        self.mem[STATS_WINDOW][:] = 0

    # ---- the bus ----
    def _window(self, addr: int) -> tuple[str, int] | None:
        for name, (base, words) in MEM.items():
            if base <= addr < base + WORD * words:
                return name, (addr - base) // WORD
        return None

    def _read_reg(self, addr: int) -> int:
        r = _BY_ADDR.get(addr)
        if r is None:
            return 0                                  # unmapped addresses read 0, as on the core
        if r.name in self.regs:
            return self.regs[r.name]
        fixed = {"ID": r.reset, "VERSION": r.reset, "LANES": self.params["lanes"],
                 "PARAMS": pack("PARAMS", dot_lanes=self.params["dot_lanes"],
                                max_classes=self.params["max_classes"], max_batch=self.params["max_batch"]),
                 "STATUS": self.status, "ERROR": self.error, "ERROR_STEP": self.error_step, **self.extremes}
        if r.name in fixed:
            return fixed[r.name]
        stem, half = r.name.rsplit("_", 1)
        if half == "LO":
            value = self.counters[stem]
            self._latched[stem] = value >> 32
            return value & 0xFFFF_FFFF
        if half == "HI":
            return self._latched.get(stem, 0)
        return 0

    def read_words(self, addr: int, n: int) -> np.ndarray:
        check_aligned(addr, n)
        out = np.zeros(n, dtype=np.uint32)
        for k in range(n):
            a = addr + WORD * k
            hit = self._window(a)
            out[k] = self.mem[hit[0]][hit[1]] if hit else self._read_reg(a)
        return out

    def write_words(self, addr: int, words) -> None:
        words = np.asarray(words, dtype=np.uint32)
        check_aligned(addr, words.size)
        hit = self._window(addr)
        if hit and hit[0] != STATS_WINDOW and self._window(addr + WORD * (words.size - 1)) == (hit[0], hit[1] + words.size - 1):
            self.mem[hit[0]][hit[1]:hit[1] + words.size] = words      # a burst inside one window
            return
        for k, w in enumerate(words):
            self._write_one(addr + WORD * k, int(w))

    def _write_one(self, addr: int, w: int) -> None:
        hit = self._window(addr)
        if hit:
            if hit[0] != STATS_WINDOW:                # read only, as on the core
                self.mem[hit[0]][hit[1]] = w
            return
        r = _BY_ADDR.get(addr)
        if r is None or r.access == "ro":
            return                                    # ignored, as on the core
        if r.access == "rw":
            self.regs[r.name] = w
        elif r.name == "CONTROL":
            c = unpack("CONTROL", w)
            if c["reset"]:
                self._reset()
            elif c["soft_reset"]:
                self.status, self.error, self.error_step = 0, 0, 0
                self._clear_counts()
            elif c["start"]:
                self._start()

    # ---- a run ----
    def _start(self) -> None:
        self._clear_counts()
        self.error, self.error_step = 0, 0
        try:
            self._run()
            self.status = 0b010
        except RunError as e:
            self.error = ("none", "config", "nan_update").index(e.code)
            self.error_step = e.step
            self.status = 0b100                       # error, not done (as on the core)

    def _run(self) -> None:
        cfg = check_config(self.regs, self.params)
        F, C, N, B, Fp = cfg["F"], cfg["C"], cfg["N"], cfg["B"], cfg["F_pad"]
        ob, of = cfg["offset"].bits, cfg["offset"].frac_bits
        A = AccArith(FP32)
        x = words_to_codes(self.mem["DATA"][:N * Fp], cfg["data_bits"]).reshape(N, Fp)[:, :F]
        xs = x * 2.0 ** -cfg["data_frac"]                   # exact in fp32: at most 16 bits
        unpad = lambda name: words_to_codes(self.mem[name][:C * Fp], ob).reshape(C, Fp)[:, :F].T.copy()
        q, qa = unpad("OFFSET_Q"), unpad("ANCHOR_Q")
        gt = self.mem["G_TILDE"][:C * Fp].view(np.float32).reshape(C, Fp)[:, :F].T.astype(np.float64)
        P = self.mem["ANCHOR_TERMS"][:N * C].view(np.float32).reshape(N, C).astype(np.float64)
        targets = self.mem["TARGETS"][:N]
        y, labels = targets.view(np.float32).astype(np.float64), targets.astype(np.int64)
        order = self.mem["ORDER"][:self.regs["STEPS"] * B].astype(np.int64)
        fixed = {"s": _f32(self.regs["SCALE"]), "alpha": _f32(self.regs["ALPHA"]),
                 "lam": _f32(self.regs["LAMBDA"])}
        counts: dict[str, int] = {}
        init = microcode.execute("init", 1, {"B": lambda j: np.array([float(B)])}, fixed=fixed,
                                 classes=C, batch=B, counts=counts)
        fixed.update(inv_s=float(init.reg["inv_s"][0]), inv_b=float(init.reg["inv_b"][0]))
        self._count(counts)
        seed = self.regs["SEED_LO"] | self.regs["SEED_HI"] << 32
        rng = (LaneRNG(seed, self.regs["EPOCH"] & 0xFFFF, self.regs["RNG_LANES"])
               if cfg["rounding"] == "stochastic" else None)
        f_of, c_of = np.divmod(np.arange(F * C), C)          # element e = f*C + c, row-major
        tally = UpdateTally(cfg["offset"])
        rhi = microcode.nonlinear.response_hi(FP32, C)
        for step in range(self.regs["STEPS"]):
            idx = order[step * B:(step + 1) * B]
            if (idx >= N).any():
                raise RunError("config", step)
            v = q - qa if cfg["algorithm"] == "svrg" else q
            dot = A.round((x[idx] @ v) * 2.0 ** -(cfg["data_frac"] + of))   # exact, then R
            counts["round"] = counts.get("round", 0) + B * C
            counts["mac"] = counts.get("mac", 0) + B * F * C
            r = np.zeros((B, C))

            def out(j, values):
                r[:, j] = values
            microcode.execute(f"resp_{cfg['algorithm']}_{cfg['problem']}", B, {
                "D": lambda j: dot[:, j], "P": lambda j: P[idx, j], "Y": lambda j: y[idx],
                "HOT": lambda j: (labels[idx] == j).astype(np.float64), "RHI": lambda j: np.full(B, rhi),
            }, fixed=fixed, classes=C, batch=B, counts=counts, write_out=out,
                max_classes=self.params["max_classes"])
            dq = ((q - qa) * 2.0 ** -of).ravel()
            qf = (q * 2.0 ** -of).ravel()
            steps_t = {}

            def update(t):
                steps_t["t"] = t
            microcode.execute(f"upd_{cfg['algorithm']}", F * C, {
                "X": lambda j: xs[idx[j], f_of], "R": lambda j: r[j, c_of], "DQ": lambda j: dq,
                "Q": lambda j: qf, "GT": lambda j: gt.ravel(),
            }, fixed=fixed, classes=C, batch=B, counts=counts, update=update)
            t = steps_t["t"]
            if np.isnan(t).any():
                raise RunError("nan_update", step)
            qv, t = q * 2.0 ** -of, t.reshape(F, C)
            rounded = offset_round(qv, t, cfg["offset"], cfg["rounding"], rng, cfg["rbits"] or None)
            tally.add(t, qv, rounded)
            qn, sat = clamp_offset(rounded, cfg["offset"])
            q = np.rint(qn * 2.0 ** of).astype(np.int64)
            self._store_q(q, Fp)
            self._store_stats(tally)
            self.counters["SATURATIONS"] += sat
            self.counters["RNG_WORDS"] += F * C if rng is not None else 0
            self.counters["STEPS_DONE"] += 1
            self._count(counts)
        self.counters["CYCLES"] = run_cycles(cfg["algorithm"], cfg["problem"], self.regs["STEPS"], n_features=F,
                                             n_outputs=C, batch=B, dot_lanes=self.params["dot_lanes"])

    def _store_stats(self, tally: UpdateTally) -> None:
        """The statistics so far into their counters, registers (fp32 bits) and window."""
        self.counters["UPDATES"], self.counters["VANISHED"] = tally.updates, tally.vanished
        self.extremes = {"UPDATE_MIN": int(np.float32(tally.lo).view(np.uint32)),
                         "UPDATE_MAX": int(np.float32(tally.hi).view(np.uint32))}
        self.mem[STATS_WINDOW][:tally.counts.size] = tally.counts

    def _count(self, counts: dict[str, int]) -> None:
        for k, n in counts.items():
            self.counters[f"OPS_{k.upper()}"] += n
        counts.clear()

    def _store_q(self, q: np.ndarray, Fp: int) -> None:
        F, C = q.shape
        grid = np.zeros((C, Fp), dtype=np.int64)
        grid[:, :F] = q.T
        self.mem["OFFSET_Q"][:C * Fp] = codes_to_words(grid.ravel())
