"""The RTL core's microcode: kernel steps 4–7 as programs for its binary32 sequencer, as data.

The core (``accel/rtl/sv/cosim_core.sv``) runs the exact dot (steps 1–3) and the offset
update (step 7's rounding) in dedicated hardware; everything in between, the accumulator
arithmetic of the spec, is a short program for one sequencer with one binary32 unit of each
kind. The programs are written here, once, in the order of the reference
(``accel.backends.emulated`` and ``accel.spec.nonlinear``), and this module

- assembles them into the ROM of the generated package ``accel/rtl/sv/cosim_ucode_pkg.sv``;
- runs them (:func:`execute`), vectorised over the elements, for the register-level model
  ``accel.rtl.model`` that the driver is tested against and the core is checked with.

    >>> from accel.rtl.microcode import PROGRAMS, listing
    >>> print(listing("resp_svrg_linear"))
    resp_svrg_linear:
      loop  j = 0 .. C
      mul   S.OUT, R.s, S.D
      next
      end

The machine (every operand a binary32 word):

- ``R.*``: 32 scalar registers; ``R.s``, ``R.alpha``, ``R.lam`` are loaded from SCALE, ALPHA
  and LAMBDA at the start of an epoch, ``R.inv_s`` and ``R.inv_b`` by the ``init`` program;
- ``V.*``: vectors of CMAX elements (as many as the programs use), indexed by the loop counter j;
- ``K.*``: constants (the spec's per-format constants for fp32, 1, 0);
- ``S.*``: streams the hardware gathers for the element in hand (table :data:`STREAMS`);
- one loop level (``loop`` j = 0 or 1 up to C or B … ``next``), a compare flag for ``sel``,
  and conditions on an instruction: ``batch>1``, ``first`` (j = 0), ``later`` (j > 0).

Each arithmetic instruction is one correctly rounded binary32 operation and is counted in
the core's operation counter of its class (``add`` and ``sub`` in ``add``, ``max``, ``min``,
``cmplt``, ``cmpgt`` in ``cmp``); ``neg``, ``abs``, ``sel``, ``mov`` are exact and not counted,
as in the reference. A program is run once per element: ``resp_*`` once per batch row
(step 4, j over the C outputs), ``upd_*`` once per offset element in row-major order (steps
5–7, j over the batch), ``init`` once per epoch.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from accel.rtl import SV
from accel.spec.arith import AccArith
from accel.spec import nonlinear
from accel.spec.nonlinear import constants
from protocol.formats import PRESETS

__all__ = ["OPS", "STREAMS", "Instr", "PROGRAMS", "ENTRY", "CONSTANTS", "REGISTERS", "listing",
           "CYCLES", "program_cycles",
           "execute", "sv_package", "response_program", "update_program", "MAX_CLASSES_LOG2", "Machine"]

FP32 = PRESETS["fp32"]
MAX_CLASSES_LOG2 = 8          # response clamps are tabulated for C up to 2^8

# name: (code, counter class or None). The codes are the ROM's; the classes the counters'.
OPS: dict[str, tuple[int, str | None]] = {
    "end": (0, None), "add": (1, "add"), "sub": (2, "add"), "mul": (3, "mul"), "div": (4, "div"),
    "ldexp": (5, "ldexp"), "rint": (6, "rint"), "max": (7, "cmp"), "min": (8, "cmp"),
    "cmplt": (9, "cmp"), "cmpgt": (10, "cmp"), "neg": (11, None), "abs": (12, None),
    "sel": (13, None), "mov": (14, None), "loop": (15, None), "next": (16, None), "update": (17, None),
}
COUNTERS = ("add", "mul", "div", "ldexp", "rint", "cmp")
SPACES = {"R": 0, "V": 1, "K": 2, "S": 3}
CONDS = {"always": 0, "batch>1": 1, "first": 2, "later": 3}
BOUNDS = {"C": 0, "B": 1}

# Streams: what the hardware gathers for the element in hand (i the batch row, n_i its sample,
# (f, c) the offset element, j the loop counter). OUT is the one writable stream.
STREAMS: dict[str, tuple[int, str]] = {
    "D": (0, "R(x_i · v), the exact dot of row i, output j, rounded into fp32 (steps 2–3)"),
    "P": (1, "anchor term P[n_i, j] (svrg)"),
    "Y": (2, "target y[n_i] (sgd, linear and logistic)"),
    "HOT": (3, "1 if j is the label of n_i else 0 (sgd, softmax)"),
    "X": (4, "x[n_j, f] in fp32 (exact)"),
    "R": (5, "response r[j, c] of batch row j"),
    "DQ": (6, "(q − q_a)[f, c] in fp32 (exact)"),
    "Q": (7, "q[f, c] in fp32 (exact)"),
    "GT": (8, "g̃[f, c]"),
    "B": (9, "the batch size B in fp32 (exact)"),
    "RHI": (10, "R((emax − ceil(log2 C))·ln 2), the responses' upper clamp of d"),
    "OUT": (11, "write: response r[i, j]"),
}
FIXED_REGISTERS = ("s", "alpha", "lam", "inv_s", "inv_b")   # R.0 … R.4, loaded by the hardware
N_REGISTERS = 32


@dataclass(frozen=True)
class Operand:
    space: str            # R, V, K, S
    name: str

    def __repr__(self) -> str:
        return f"{self.space}.{self.name}"


class _Space:
    def __init__(self, space: str) -> None:
        self._space = space

    def __getattr__(self, name: str) -> Operand:
        return Operand(self._space, name)


R, V, S = _Space("R"), _Space("V"), _Space("S")


def K(value: float) -> Operand:
    return Operand("K", repr(float(value)))


@dataclass(frozen=True)
class Instr:
    op: str
    dst: Operand | None = None
    a: Operand | None = None
    b: Operand | None = None
    cond: str = "always"
    start: int = 0        # loop: first j
    bound: str = "C"      # loop: C or B

    def __str__(self) -> str:
        if self.op == "loop":
            return f"loop  j = {self.start} .. {self.bound}"
        args = ", ".join(repr(o) for o in (self.dst, self.a, self.b) if o is not None)
        cond = f"  [{self.cond}]" if self.cond != "always" else ""
        return f"{self.op:<5} {args}{cond}".rstrip()


class _Asm:
    """Builds one program; the methods read like the reference's ALU calls."""

    def __init__(self) -> None:
        self.code: list[Instr] = []

    def op(self, op: str, dst: Operand | None, a: Operand | None = None, b: Operand | None = None,
           cond: str = "always") -> Operand | None:
        self.code.append(Instr(op, dst, a, b, cond))
        return dst

    def loop(self, bound: str, start: int = 0) -> None:
        self.code.append(Instr("loop", start=start, bound=bound))

    def next(self) -> None:
        self.code.append(Instr("next"))

    def end(self) -> list[Instr]:
        self.code.append(Instr("end"))
        return self.code


# ---- the nonlinearity of accel.spec.nonlinear, instruction for instruction ----

def _expm1_reduced(m: _Asm, x: Operand, n: Operand, E: Operand) -> None:
    """Steps 3–4 of exp: r = x − n·ln 2 (Cody–Waite), then E ≈ expm1(r) into E."""
    k = constants(FP32)
    r, t, q = R.r, R.t, R.q
    src = x
    for piece in (*k.ln2_pieces, k.ln2_lo):
        m.op("mul", t, n, K(piece))
        m.op("sub", r, src, t)
        src = r
    m.op("mul", q, r, K(k.coeffs[-1]))            # q = c_d, then Horner: q = c + r·q
    m.op("add", q, K(k.coeffs[-2]), q)
    for c in k.coeffs[-3::-1]:
        m.op("mul", q, r, q)
        m.op("add", q, K(c), q)
    m.op("mul", q, r, q)
    m.op("mul", q, r, q)
    m.op("add", E, r, q)


def _exp_clamped(m: _Asm, x: Operand, out: Operand) -> None:
    k = constants(FP32)
    m.op("mul", R.n, x, K(k.log2e))
    m.op("rint", R.n, R.n)
    _expm1_reduced(m, x, R.n, R.E)
    m.op("add", R.E, K(1.0), R.E)
    m.op("ldexp", out, R.E, R.n)


def _response_expm1(m: _Asm, d: Operand, E: Operand) -> None:
    """E = expm1 of d clamped to [M_lo, RHI] (the response's _expm1_clamped)."""
    k = constants(FP32)
    x = R.x
    m.op("max", x, d, K(k.expm1_lo))
    m.op("min", x, x, S.RHI)
    m.op("mul", R.n, x, K(k.log2e))
    m.op("rint", R.n, R.n)
    m.op("abs", R.t, x)
    m.op("cmplt", None, R.t, K(k.ln2))            # n = 0 where |x| < R(ln 2)
    m.op("sel", R.n, K(0.0), R.n)
    _expm1_reduced(m, x, R.n, R.E)
    m.op("neg", R.t, R.n)                          # R(2^n·R(E − R(2^-n − 1)))
    m.op("ldexp", R.t, K(1.0), R.t)
    m.op("sub", R.t, R.t, K(1.0))
    m.op("sub", R.t, R.E, R.t)
    m.op("ldexp", E, R.t, R.n)


def response_program(algorithm: str, problem: str) -> list[Instr]:
    """Step 4 for one batch row: the response r (svrg) or ℓ'(a) − y (sgd) into S.OUT."""
    k = constants(FP32)
    m = _Asm()
    if algorithm == "svrg" and problem == "linear":          # r = d = R(s·R(x·dq))
        m.loop("C")
        m.op("mul", S.OUT, R.s, S.D)
        m.next()
    elif algorithm == "svrg" and problem == "logistic":
        m.loop("C")
        m.op("mul", R.d, R.s, S.D)
        _response_expm1(m, R.d, R.E1)
        m.op("sub", R.u, K(1.0), S.P)                        # num = R(R(p·R(1 − p))·E)
        m.op("mul", R.u, S.P, R.u)
        m.op("mul", R.u, R.u, R.E1)
        m.op("mul", R.w, S.P, R.E1)                          # den = max(R(1 + R(p·E)), 2^-p)
        m.op("add", R.w, K(1.0), R.w)
        m.op("max", R.w, R.w, K(k.den_floor))
        m.op("div", S.OUT, R.u, R.w)
        m.next()
    elif algorithm == "svrg":                                # softmax response
        m.loop("C")
        m.op("mul", R.d, R.s, S.D)
        _response_expm1(m, R.d, V.E)
        m.op("mul", R.w, S.P, V.E)                           # S = rowsum(R(p·E)), left to right
        m.op("mov", R.sum, R.w, cond="first")
        m.op("add", R.sum, R.sum, R.w, cond="later")
        m.next()
        m.op("add", R.den, K(1.0), R.sum)
        m.op("max", R.den, R.den, K(k.den_floor))
        m.loop("C")
        m.op("sub", R.u, V.E, R.sum)                         # R(R(p·R(E − S)) / D)
        m.op("mul", R.u, S.P, R.u)
        m.op("div", S.OUT, R.u, R.den)
        m.next()
    elif problem == "linear":                                # sgd: a − y
        m.loop("C")
        m.op("mul", R.a, R.s, S.D)
        m.op("sub", S.OUT, R.a, S.Y)
        m.next()
    elif problem == "logistic":                              # sgd: σ(a) − y
        m.loop("C")
        m.op("mul", R.a, R.s, S.D)
        m.op("cmpgt", None, R.a, K(0.0))                     # positive: t = e^-a, else e^a
        m.op("neg", R.x, R.a)
        m.op("sel", R.x, R.x, R.a)
        m.op("max", R.x, R.x, K(k.exp_lo))
        _exp_clamped(m, R.x, R.e)
        m.op("sel", R.u, K(1.0), R.e)                        # the same flag picks the numerator
        m.op("add", R.w, K(1.0), R.e)
        m.op("div", R.u, R.u, R.w)
        m.op("sub", S.OUT, R.u, S.Y)
        m.next()
    else:                                                    # sgd: softmax(a) − onehot
        m.loop("C")
        m.op("mul", V.A, R.s, S.D)
        m.op("mov", R.mx, V.A, cond="first")                 # rowmax
        m.op("max", R.mx, R.mx, V.A, cond="later")
        m.next()
        m.loop("C")
        m.op("sub", R.x, V.A, R.mx)
        m.op("max", R.x, R.x, K(k.exp_lo))
        _exp_clamped(m, R.x, V.E)
        m.op("mov", R.sum, V.E, cond="first")                # rowsum, left to right
        m.op("add", R.sum, R.sum, V.E, cond="later")
        m.next()
        m.loop("C")
        m.op("div", R.u, V.E, R.sum)
        m.op("sub", S.OUT, R.u, S.HOT)
        m.next()
    return m.end()


def update_program(algorithm: str) -> list[Instr]:
    """Steps 5–7 for one offset element (f, c): the batch gradient, u, t, then the update."""
    m = _Asm()
    m.loop("B")
    m.op("mul", R.p, S.X, S.R)                               # G = Σ_i R(x_i r_i), batch order
    m.op("mov", R.g, R.p, cond="first")
    m.op("add", R.g, R.g, R.p, cond="later")
    m.next()
    m.op("mul", R.g, R.g, R.inv_b, cond="batch>1")
    m.op("mul", R.u, R.s, S.DQ if algorithm == "svrg" else S.Q)   # R(λ·R(s·v))
    m.op("mul", R.u, R.lam, R.u)
    m.op("add", R.u, R.g, R.u)
    if algorithm == "svrg":
        m.op("add", R.u, R.u, S.GT)
    m.op("mul", R.u, R.alpha, R.u)                           # t = R(R(α·u)·R(1/s))
    m.op("mul", R.u, R.u, R.inv_s)
    m.op("update", None, R.u)
    return m.end()


def init_program() -> list[Instr]:
    """Per epoch: R(1/s), and R(1/B) when B > 1."""
    m = _Asm()
    m.op("div", R.inv_s, K(1.0), R.s)
    m.op("div", R.inv_b, K(1.0), S.B, cond="batch>1")
    return m.end()


PROGRAMS: dict[str, list[Instr]] = {
    "init": init_program(),
    **{f"resp_{a}_{p}": response_program(a, p) for a in ("sgd", "svrg")
       for p in ("linear", "logistic", "softmax")},
    **{f"upd_{a}": update_program(a) for a in ("sgd", "svrg")},
}


def _layout() -> tuple[dict[str, int], list[Instr], tuple[float, ...], dict[str, int]]:
    """Entry points, the flat ROM, the constant table and the register allocation."""
    entry, rom, consts, regs = {}, [], [], {n: i for i, n in enumerate(FIXED_REGISTERS)}
    for name, code in PROGRAMS.items():
        entry[name] = len(rom)
        rom += code
        for ins in code:
            for o in (ins.dst, ins.a, ins.b):
                if o is None:
                    continue
                if o.space == "K" and float(o.name) not in consts:
                    consts.append(float(o.name))
                if o.space == "R" and o.name not in regs:
                    regs[o.name] = len(regs)
    if len(regs) > N_REGISTERS:
        raise ValueError(f"the programs use {len(regs)} registers; the core has {N_REGISTERS}")
    return entry, rom, tuple(consts), regs


ENTRY, ROM, CONSTANTS, REGISTERS = _layout()
VECTORS = {n: i for i, n in enumerate(sorted({o.name for c in PROGRAMS.values() for i in c
                                              for o in (i.dst, i.a, i.b) if o is not None and o.space == "V"}))}


# Cycles the core's sequencer spends on an instruction (cosim_core.sv): fetch, read operands,
# execute and write back; a divide also waits for fp32_div (27 edges from its start edge, plus
# the start and done handshake); loop, next and end take their fetch cycle only; an instruction
# whose condition fails, its fetch and read.
CYCLES = {"alu": 3, "div": 32, "loop": 1, "next": 1, "end": 1, "skip": 2}


def program_cycles(name: str, classes: int, batch: int) -> int:
    """Cycles of one run of program ``name`` with C = ``classes``, B = ``batch`` (its control
    flow depends on nothing else)."""
    code, bounds = PROGRAMS[name], {"C": classes, "B": batch}
    pc, j, loop_pc, total = 0, 0, 0, 0
    while True:
        ins = code[pc]
        if ins.op == "end":
            return total + CYCLES["end"]
        if ins.op == "loop":
            total += CYCLES["loop"]
            j, loop_pc = ins.start, pc
            if ins.start >= bounds[ins.bound]:
                pc = next(p for p in range(pc, len(code)) if code[p].op == "next")
            pc += 1
        elif ins.op == "next":
            total += CYCLES["next"]
            if j + 1 < bounds[code[loop_pc].bound]:
                j, pc = j + 1, loop_pc + 1
            else:
                pc += 1
        else:
            taken = {"always": True, "batch>1": batch > 1, "first": j == 0, "later": j > 0}[ins.cond]
            total += CYCLES["skip"] if not taken else CYCLES["div" if ins.op == "div" else "alu"]
            pc += 1


def listing(name: str) -> str:
    return "\n".join([f"{name}:"] + [f"  {ins}" for ins in PROGRAMS[name]])


# ---- the ROM word ----
# [4:0] op, [6:5] cond, [8:7] dst space, [13:9] dst index, [15:14] a space, [20:16] a index,
# [22:21] b space, [27:23] b index; loop: [13:7] = the distance to its ``next`` (so a loop of
# no rounds skips to the instruction after it), a index = the first j, b index = the bound
# (0 C, 1 B).
WORD_BITS = 28


def _index(o: Operand) -> int:
    if o.space == "R":
        return REGISTERS[o.name]
    if o.space == "V":
        return VECTORS[o.name]
    if o.space == "K":
        return CONSTANTS.index(float(o.name))
    return STREAMS[o.name][0]


def encode(pc: int) -> int:
    ins = ROM[pc]
    word = OPS[ins.op][0]
    if ins.op == "loop":
        nxt = next(p for p in range(pc, len(ROM)) if ROM[p].op == "next")
        if nxt - pc > 127:
            raise ValueError(f"loop at {pc} is longer than 127 instructions")
        return word | (nxt - pc) << 7 | ins.start << 16 | BOUNDS[ins.bound] << 23
    word |= CONDS[ins.cond] << 5
    for o, lsb in ((ins.dst, 7), (ins.a, 14), (ins.b, 21)):
        if o is not None:
            word |= SPACES[o.space] << lsb | _index(o) << (lsb + 2)
    return word


def _f32_bits(v: float) -> int:
    return int(np.array(v, dtype=np.float32).view(np.uint32))


def sv_package() -> str:
    """``cosim_ucode_pkg``: the ROM, the constants, the entry points, the op and stream codes."""
    out = ["// Generated by `python -m accel.rtl.microcode` from accel/rtl/microcode.py: edit that, not this.",
           "/* verilator lint_off UNUSEDPARAM */",
           "package cosim_ucode_pkg;",
           f"  localparam int unsigned ROM_WORDS = {len(ROM)};",
           f"  localparam int unsigned WORD_BITS = {WORD_BITS};",
           f"  localparam int unsigned N_CONSTANTS = {len(CONSTANTS)};",
           f"  localparam int unsigned N_REGISTERS = {N_REGISTERS};",
           f"  localparam int unsigned N_VECTORS = {len(VECTORS)};",
           f"  localparam int unsigned MAX_CLASSES_LOG2 = {MAX_CLASSES_LOG2};"]
    out += [f"  localparam logic [4:0] OP_{n.upper()} = 5'd{c};" for n, (c, _) in OPS.items()]
    out += [f"  localparam logic [4:0] S_{n} = 5'd{c};" for n, (c, _) in STREAMS.items()]
    out += [f"  localparam logic [4:0] R_{n.upper()} = 5'd{REGISTERS[n]};" for n in FIXED_REGISTERS]
    out += [f"  localparam logic [7:0] ENTRY_{n.upper()} = 8'd{pc};" for n, pc in ENTRY.items()]
    out.append("")
    out.append(f"  function automatic logic [{WORD_BITS - 1}:0] rom(input logic [7:0] pc);")
    out.append("    case (pc)")
    for pc, ins in enumerate(ROM):
        out.append(f"      8'd{pc}: rom = {WORD_BITS}'h{encode(pc):07X};  // {ins}")
    out += ["      default: rom = '0;", "    endcase", "  endfunction", ""]
    out.append("  function automatic logic [31:0] konst(input logic [4:0] k);")
    out.append("    case (k)")
    out += [f"      5'd{i}: konst = 32'h{_f32_bits(v):08X};  // {v!r}" for i, v in enumerate(CONSTANTS)]
    out += ["      default: konst = '0;", "    endcase", "  endfunction", ""]
    out.append("  // RHI by L = ceil(log2 C): R((emax - L)·ln 2)")
    out.append("  function automatic logic [31:0] response_hi(input logic [3:0] l);")
    out.append("    case (l)")
    out += [f"      4'd{l}: response_hi = 32'h{_f32_bits(nonlinear.response_hi(FP32, 1 << l)):08X};"
            for l in range(MAX_CLASSES_LOG2 + 1)]
    out += ["      default: response_hi = '0;", "    endcase", "  endfunction",
            "endpackage", "/* verilator lint_on UNUSEDPARAM */", ""]
    return "\n".join(out)


PKG_PATH = SV / "cosim_ucode_pkg.sv"


# ---- the interpreter: a program over n elements at once ----

class Machine:
    """State of the sequencer, each register an array over the elements in hand.

    ``streams`` maps a stream name to a function of j (the loop counter) returning the values
    for every element; ``write_out(j, values)`` takes S.OUT; ``update(t)`` takes the step of
    every element (upd programs). ``counts`` accumulates the operation counters.
    """

    def __init__(self, n: int, streams: dict[str, Callable[[int], np.ndarray]], *,
                 fixed: dict[str, float], classes: int, batch: int, counts: dict[str, int],
                 write_out: Callable[[int, np.ndarray], None] | None = None,
                 update: Callable[[np.ndarray], None] | None = None, max_classes: int = 16) -> None:
        self.n, self.streams, self.bounds = n, streams, {"C": classes, "B": batch}
        self.A = AccArith(FP32)
        self.reg = {name: np.full(n, fixed.get(name, 0.0)) for name in REGISTERS}
        self.vec = {name: np.zeros((n, max_classes)) for name in VECTORS}
        self.flag = np.zeros(n, dtype=bool)
        self.counts, self.write_out, self.update = counts, write_out, update
        self.j = 0

    def read(self, o: Operand) -> np.ndarray:
        if o.space == "R":
            return self.reg[o.name]
        if o.space == "V":
            return self.vec[o.name][:, self.j]
        if o.space == "K":
            return np.full(self.n, float(o.name))
        return self.streams[o.name](self.j)

    def write(self, o: Operand, v: np.ndarray) -> None:
        if o.space == "R":
            self.reg[o.name] = v
        elif o.space == "V":
            self.vec[o.name][:, self.j] = v
        else:
            self.write_out(self.j, v)

    def _alu(self, op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
        A = self.A
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if op in ("add", "sub", "mul", "div"):
                return getattr(A, op)(a, b)
            if op == "ldexp":
                return A.ldexp(a, b)
            if op == "rint":
                return A.rint(a)
            if op in ("max", "min"):
                return (np.maximum if op == "max" else np.minimum)(a, b)
            if op == "neg":
                return -a
            if op == "abs":
                return np.abs(a)
            if op == "sel":
                return np.where(self.flag, a, b)
            if op == "mov":
                return a
            self.flag = (a < b) if op == "cmplt" else (a > b)
            return None

    def run(self, code: list[Instr]) -> None:
        pc, loop_pc = 0, None
        while True:
            ins = code[pc]
            if ins.op == "end":
                return
            if ins.op == "loop":
                self.j, loop_pc = ins.start, pc
                if ins.start >= self.bounds[ins.bound]:
                    pc = next(p for p in range(pc, len(code)) if code[p].op == "next")
                pc += 1
                continue
            if ins.op == "next":
                if self.j + 1 < self.bounds[code[loop_pc].bound]:
                    self.j += 1
                    pc = loop_pc + 1
                else:
                    pc += 1
                continue
            pc += 1
            if not {"always": True, "batch>1": self.bounds["B"] > 1, "first": self.j == 0,
                    "later": self.j > 0}[ins.cond]:
                continue
            a = self.read(ins.a) if ins.a is not None else None
            if ins.op == "update":
                self.update(a)
                continue
            b = self.read(ins.b) if ins.b is not None else None
            v = self._alu(ins.op, a, b)
            cls = OPS[ins.op][1]
            if cls:
                self.counts[cls] = self.counts.get(cls, 0) + self.n
            if v is not None and ins.dst is not None:
                self.write(ins.dst, v)


def execute(name: str, n: int, streams: dict[str, Callable[[int], np.ndarray]], **kwargs) -> Machine:
    """Run program ``name`` over ``n`` elements (see :class:`Machine`); returns the machine."""
    m = Machine(n, streams, **kwargs)
    m.run(PROGRAMS[name])
    return m


def main(argv: list[str], pkg: Path = PKG_PATH) -> int:
    """Rewrite the package; with ``--check`` only report whether it has drifted."""
    fresh = sv_package()
    stale = not pkg.exists() or pkg.read_text() != fresh
    if "--check" in argv:
        if stale:
            print(f"{pkg.name} is out of date: run python -m accel.rtl.microcode", file=sys.stderr)
        return int(stale)
    if stale:
        pkg.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
