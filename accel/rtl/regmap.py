"""The RTL core's register map, as data: the one source of the SV package, the doc table and
the driver's constants.

    >>> hex(REG["SEED_LO"]), MEM["OFFSET_Q"]
    ('0x38', (65536, 4096))
    >>> hex(pack("MODE", problem=1, rounding=1, rbits=8))
    '0x80101'
    >>> unpack("STATUS", 0b011)
    {'busy': 1, 'done': 1, 'error': 0}

Regenerate the derived files after an edit here::

    python -m accel.rtl.regmap            # rewrite accel/rtl/sv/cosim_regs_pkg.sv and docs/rtl.md
    python -m accel.rtl.regmap --check    # exit 1 if either has drifted

32-bit registers at 4-byte aligned byte addresses (a LiteX Wishbone/Etherbone master uses
the byte address / 4). Access: ``ro`` read only, ``rw`` read/write, ``wo`` write only (reads
0), ``w1p`` write-one-pulse (a 1 pulses that bit for one cycle; reads 0). Memory windows are
naturally aligned powers of two, so the core decodes them with one compare of the top bits.
Bump ``REGMAP_VERSION`` on any change: minor for additions, major for moves or new meanings.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from accel.rtl import SV
from accel.spec import SPEC_VERSION
from accel.spec.gradstats import BINADE_FLOOR

__all__ = ["REGMAP_VERSION", "MAGIC", "Field", "Register", "Window", "RegmapError", "REGISTERS",
           "WINDOWS", "REG", "MEM", "check", "pack", "unpack", "codes_to_words", "words_to_codes", "sv_package", "markdown_table"]

REGMAP_VERSION = (2, 1)
MAGIC = int.from_bytes(b"CSIM", "big")        # reads as ASCII "CSIM" most significant byte first
ACCESS = ("ro", "rw", "wo", "w1p")
_UPPER, _LOWER = re.compile(r"[A-Z][A-Z0-9_]*"), re.compile(r"[a-z][a-z0-9_]*")
PKG_PATH = SV / "cosim_regs_pkg.sv"
DOC_PATH = Path(__file__).parents[2] / "docs" / "rtl.md"


class RegmapError(ValueError):
    """The map breaks a rule (overlap, alignment, duplicate name, field out of range)."""


@dataclass(frozen=True)
class Field:
    """Bits [lsb + width - 1 : lsb] of a register; ``values`` names the codes 0, 1, ..."""

    name: str
    lsb: int
    width: int
    description: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class Register:
    name: str
    address: int          # byte address
    access: str           # one of ACCESS
    reset: int
    description: str
    fields: tuple[Field, ...] = ()


@dataclass(frozen=True)
class Window:
    """A memory window of ``words`` 32-bit words from byte address ``base``."""

    name: str
    base: int
    words: int
    description: str


def _fmt(what: str) -> tuple[Field, ...]:
    return (Field("width", 0, 8, f"{what} word length in bits"),
            Field("frac", 8, 8, f"{what} fractional bits"))


def _pair(name: str, address: int, what: str) -> tuple[Register, Register]:
    # Reading _LO snapshots _HI in the core, so a LO-then-HI read of a running counter agrees.
    return (Register(f"{name}_LO", address, "ro", 0, f"{what}, bits 31:0 (reading it latches _HI)"),
            Register(f"{name}_HI", address + 4, "ro", 0, f"{what}, bits 63:32 (as latched by _LO)"))


VERSION_RESET = ((REGMAP_VERSION[0] << 24) | (REGMAP_VERSION[1] << 16)
                 | (SPEC_VERSION[0] << 8) | SPEC_VERSION[1])

REGISTERS: tuple[Register, ...] = (
    # Identification and control, 0x000-0x01f.
    Register("ID", 0x000, "ro", MAGIC, 'Magic constant, ASCII "CSIM"'),
    Register("VERSION", 0x004, "ro", VERSION_RESET, "Register map and kernel spec versions", (
        Field("spec_minor", 0, 8, "kernel spec minor version"),
        Field("spec_major", 8, 8, "kernel spec major version"),
        Field("map_minor", 16, 8, "register map minor version"),
        Field("map_major", 24, 8, "register map major version"))),
    Register("CONTROL", 0x008, "w1p", 0, "Commands", (
        Field("start", 0, 1, "run STEPS steps of epoch EPOCH with the configuration registers"),
        Field("reset", 1, 1, "reset the whole core: every register to its reset value"),
        Field("soft_reset", 2, 1, "abort a run; clear STATUS and the counters, keep the configuration"))),
    Register("STATUS", 0x00C, "ro", 0, "Run state (done and error stay set until start or a reset)", (
        Field("busy", 0, 1, "a run is in progress"),
        Field("done", 1, 1, "the last run finished"),
        Field("error", 2, 1, "the last run stopped on an error (ERROR says which)"))),
    Register("LANES", 0x010, "ro", 16, "Random-bit lanes of this core (its LANES parameter; 16 by default)"),
    Register("PARAMS", 0x014, "ro", 16 | 16 << 8 | 256 << 16, "Build parameters of this core (defaults shown)", (
        Field("dot_lanes", 0, 8, "P: multiply-accumulate lanes of the exact dot; F_pad = N_FEATURES rounded up to a multiple of P"),
        Field("max_classes", 8, 8, "CMAX: largest N_OUTPUTS"),
        Field("max_batch", 16, 16, "BMAX: largest BATCH"))),
    Register("ERROR", 0x018, "ro", 0, "Why the last run stopped with STATUS.error", (
        Field("code", 0, 4, "cause", ("none", "config", "nan_update")),)),
    Register("ERROR_STEP", 0x01C, "ro", 0, "The step the last run stopped at (its index within the run)"),
    # Configuration, 0x020-0x07f: read at start, not while a run is busy.
    Register("OFFSET_FMT", 0x020, "rw", 16 | 15 << 8,
             "Offset format fixed<width-frac, frac>, signed; width b 1..16", _fmt("offset")),
    Register("DATA_FMT", 0x024, "rw", 8 | 6 << 8, "Data format fixed<width-frac, frac>, signed",
             _fmt("data")),
    Register("MODE", 0x028, "rw", 0, "Problem, algorithm and rounding", (
        Field("problem", 0, 2, "loss", ("linear", "logistic", "softmax")),
        Field("algorithm", 4, 1, "optimizer", ("sgd", "svrg")),
        Field("rounding", 8, 1, "offset rounding", ("nearest_even", "stochastic")),
        Field("rbits", 16, 6, "random bits per stochastic rounding, 1..32; 0 = the whole discarded width"))),
    Register("SCALE", 0x02C, "rw", 0x3F80_0000, "Offset scale s, fp32 bits"),
    Register("ALPHA", 0x030, "rw", 0, "Step size alpha, fp32 bits"),
    Register("LAMBDA", 0x034, "rw", 0, "L2 regularisation lambda, fp32 bits"),
    Register("SEED_LO", 0x038, "rw", 0, "Run seed, bits 31:0"),
    Register("SEED_HI", 0x03C, "rw", 0, "Run seed, bits 63:32"),
    Register("EPOCH", 0x040, "rw", 0, "Epoch number (the random streams use bits 15:0)"),
    Register("STEPS", 0x044, "rw", 0, "Steps to run on start"),
    Register("BATCH", 0x048, "rw", 1, "Samples per step"),
    Register("N_SAMPLES", 0x04C, "rw", 0, "Samples in the data window"),
    Register("N_FEATURES", 0x050, "rw", 0, "Features per sample"),
    Register("N_OUTPUTS", 0x054, "rw", 0, "Outputs (1 for linear and logistic)"),
    Register("RNG_LANES", 0x058, "rw", 16, "Random-bit lanes in use, 1..LANES: element k of a step draws from lane k mod RNG_LANES"),
    # Counters, 0x080-0x0ff: cleared by start and by either reset.
    *_pair("STEPS_DONE", 0x080, "Steps completed"),
    *_pair("SATURATIONS", 0x088, "Elements clamped into the offset format"),
    *_pair("RNG_WORDS", 0x090, "Random words drawn"),
    *_pair("CYCLES", 0x098, "Clock cycles while busy"),
    # Operation counters of the binary32 sequencer and the exact dot (docs/accelerator.md keys).
    *_pair("OPS_ADD", 0x0A0, "fp32 adds and subtracts"),
    *_pair("OPS_MUL", 0x0A8, "fp32 multiplies"),
    *_pair("OPS_DIV", 0x0B0, "fp32 divides"),
    *_pair("OPS_LDEXP", 0x0B8, "fp32 exponent shifts"),
    *_pair("OPS_RINT", 0x0C0, "fp32 round-to-integer"),
    *_pair("OPS_CMP", 0x0C8, "fp32 comparisons (max, min, compares)"),
    *_pair("OPS_ROUND", 0x0D0, "exact dots rounded into fp32 (step 3)"),
    *_pair("OPS_MAC", 0x0D8, "exact products of the dot (step 2)"),
    # Update statistics of the run (docs/accelerator.md, "Update statistics"), with the
    # window UPDATE_BINADES; t' is t with |t| clamped to 2^(IL+1), as step 7 clamps it.
    *_pair("UPDATES", 0x0E0, "Offset updates (elements × steps)"),
    *_pair("VANISHED", 0x0E8, "Updates with t != 0 that left q as it was (rounded to 0)"),
    Register("UPDATE_MIN", 0x0F0, "ro", 0x7F80_0000, "Smallest |t'| != 0, fp32 bits (+inf: none yet)"),
    Register("UPDATE_MAX", 0x0F4, "ro", 0, "Largest |t'|, fp32 bits"),
)

# Element layout: one element per 32-bit word; fixed point right-aligned and sign-extended,
# fp32 as its bits, indices unsigned (codes_to_words / words_to_codes below). Packing several
# narrow elements per word would change the map's major version.
WINDOWS: tuple[Window, ...] = (
    Window("OFFSET_Q", 0x0001_0000, 4096, "Offset q: element (f, c) at word c*F_pad + f"),
    Window("ANCHOR_Q", 0x0002_0000, 4096, "Anchor offset q_a (SVRG), same layout as q"),
    Window("G_TILDE", 0x0003_0000, 4096, "Full gradient at the anchor g~ (SVRG), fp32, layout of q"),
    Window("ANCHOR_TERMS", 0x0004_0000, 65536, "Anchor terms P (SVRG), fp32: (n, c) at word n*N_OUTPUTS + c"),
    Window("ORDER", 0x0008_0000, 65536, "Sample order: the sample index of each step's draws"),
    Window("TARGETS", 0x000C_0000, 65536, "Targets y per sample (SGD): fp32 (linear, logistic) or the label (softmax)"),
    Window("DATA", 0x0010_0000, 262144, "Data x: (n, f) at word n*F_pad + f, padding 0"),
    Window("UPDATE_BINADES", 0x0000_0100, 64, "Updates with t != 0 per binade of the grid, "
           f"floor(log2|t'|) + FL = k - {-BINADE_FLOOR} at word k (word 0 also every binade below); "
           "cleared by start"),
)


def _hex32(v: int) -> str:
    return f"32'h{v >> 16:04X}_{v & 0xFFFF:04X}"


def _sv_params(registers: tuple[Register, ...], windows: tuple[Window, ...]) -> list[tuple[str, str, str]]:
    """(comment or "", type, name = value) per localparam. Prefixes ADDR_, RESET_, MEM_ and
    <REG>_<FIELD>_ keep the kinds apart; ``check`` refuses a map whose names still collide."""
    out = []
    for r in registers:
        comment = f"{r.name} ({r.access}): {r.description}"
        out.append((comment, "logic [31:0]", f"ADDR_{r.name} = {_hex32(r.address)}"))
        out.append(("", "logic [31:0]", f"RESET_{r.name} = {_hex32(r.reset)}"))
        for f in r.fields:
            stem = f"{r.name}_{f.name.upper()}"
            out.append(("", "int unsigned", f"{stem}_LSB = {f.lsb}"))
            out.append(("", "int unsigned", f"{stem}_WIDTH = {f.width}"))
            out += [("", f"logic [{f.width - 1}:0]", f"{stem}_{v.upper()} = {f.width}'d{i}")
                    for i, v in enumerate(f.values)]
    for w in windows:
        out.append((f"{w.name}: {w.description}", "logic [31:0]", f"MEM_{w.name}_BASE = {_hex32(w.base)}"))
        out.append(("", "int unsigned", f"MEM_{w.name}_WORDS = {w.words}"))
    return out


def _ranges(registers: Iterable[Register], windows: Iterable[Window]) -> list[tuple[int, int, str]]:
    return sorted([(r.address, r.address + 4, r.name) for r in registers]
                  + [(w.base, w.base + 4 * w.words, w.name) for w in windows])


def check(registers: tuple[Register, ...], windows: tuple[Window, ...]) -> None:
    """Raise :class:`RegmapError` unless the map is aligned, disjoint and uniquely named."""
    names = [r.name for r in registers] + [w.name for w in windows]
    # Names become SystemVerilog identifiers: upper case for registers and windows, lower for fields.
    words = [(n, _UPPER) for n in names] + [(x, _LOWER) for r in registers for f in r.fields
                                             for x in (f.name, *f.values)]
    if bad := [n for n, pattern in words if not pattern.fullmatch(n)]:
        raise RegmapError(f"names that are not identifiers of the map's style: {', '.join(bad)}")
    if dups := sorted({n for n in names if names.count(n) > 1}):
        raise RegmapError(f"duplicate names: {', '.join(dups)}")
    for r in registers:
        if r.address % 4 or not 0 <= r.address < 2**32:
            raise RegmapError(f"{r.name}: address {r.address:#x} is not a 4-byte aligned 32-bit address")
        if r.access not in ACCESS:
            raise RegmapError(f"{r.name}: access {r.access!r} is not one of {', '.join(ACCESS)}")
        if not 0 <= r.reset < 2**32:
            raise RegmapError(f"{r.name}: reset value {r.reset:#x} does not fit 32 bits")
        _check_fields(r)
    for w in windows:
        size = 4 * w.words
        if w.words < 1 or w.words & (w.words - 1) or w.base % size or w.base + size > 2**32:
            raise RegmapError(f"{w.name}: a window must be a power of two of words at a base aligned "
                              f"to its size; got {w.words} words at {w.base:#x}")
    params = [p[2].split(" = ")[0] for p in _sv_params(registers, windows)]
    if clash := sorted({n for n in params if params.count(n) > 1}):
        raise RegmapError(f"SystemVerilog names collide: {', '.join(clash)}")
    spans = _ranges(registers, windows)
    for (a0, a1, n0), (b0, _, n1) in zip(spans, spans[1:]):
        if b0 < a1:
            raise RegmapError(f"{n0} [{a0:#x}, {a1:#x}) overlaps {n1} at {b0:#x}")


def _check_fields(r: Register) -> None:
    used, seen = 0, set()
    for f in r.fields:
        if f.width < 1 or f.lsb < 0 or f.lsb + f.width > 32:
            raise RegmapError(f"{r.name}.{f.name}: bits [{f.lsb + f.width - 1}:{f.lsb}] leave the word")
        bits = ((1 << f.width) - 1) << f.lsb
        if used & bits or f.name in seen:
            raise RegmapError(f"{r.name}.{f.name}: overlaps or repeats another field")
        if len(f.values) > 1 << f.width:
            raise RegmapError(f"{r.name}.{f.name}: {len(f.values)} codes do not fit {f.width} bits")
        used, seen = used | bits, seen | {f.name}
    if r.fields and r.reset & ~used:
        raise RegmapError(f"{r.name}: reset value {r.reset:#x} sets bits outside its fields")


check(REGISTERS, WINDOWS)
REG: dict[str, int] = {r.name: r.address for r in REGISTERS}
MEM: dict[str, tuple[int, int]] = {w.name: (w.base, w.words) for w in WINDOWS}
_BY_NAME = {r.name: r for r in REGISTERS}


def codes_to_words(codes: np.ndarray) -> np.ndarray:
    """Signed fixed-point codes as window words: two's complement, sign-extended to 32 bits."""
    return np.asarray(codes, dtype=np.int64).astype(np.uint32)


def words_to_codes(words: np.ndarray, bits: int) -> np.ndarray:
    """Window words as signed ``bits``-bit codes: the low ``bits`` bits, which is all the core keeps."""
    w = np.asarray(words).astype(np.int64) & ((1 << bits) - 1)
    return np.where(w >= 1 << (bits - 1), w - (1 << bits), w)


def pack(register: str, **fields: int | str) -> int:
    """The word with the named fields set (a code name or an int); unnamed fields are 0."""
    reg, word = _BY_NAME[register], 0
    known = {f.name: f for f in reg.fields}
    for name, value in fields.items():
        f = known.get(name)
        if f is None:
            raise KeyError(f"{register} has no field {name!r}; it has {', '.join(known) or 'none'}")
        if isinstance(value, str) and value not in f.values:
            raise ValueError(f"{register}.{name} has no code {value!r}; it has {', '.join(f.values) or 'none'}")
        code = f.values.index(value) if isinstance(value, str) else value
        if not 0 <= code < 1 << f.width:
            raise ValueError(f"{register}.{name} = {value!r} does not fit {f.width} bits")
        word |= code << f.lsb
    return word


def unpack(register: str, word: int) -> dict[str, int]:
    """The fields of ``word`` read from ``register``, by name."""
    return {f.name: (word >> f.lsb) & ((1 << f.width) - 1) for f in _BY_NAME[register].fields}


def sv_package() -> str:
    """The SystemVerilog package ``cosim_regs_pkg``: addresses, resets, fields, windows, codes."""
    top = max(hi for _, hi, _ in _ranges(REGISTERS, WINDOWS))
    out = ["// Generated by `python -m accel.rtl.regmap` from accel/rtl/regmap.py: edit that, not this.",
           "// A package of constants: a design uses a few of them, so unused ones are no finding.",
           "// Name them qualified, cosim_regs_pkg::ADDR_ID: Yosys 0.23 reads no `import` (docs/rtl.md).",
           "/* verilator lint_off UNUSEDPARAM */",
           "package cosim_regs_pkg;",
           f"  localparam int unsigned REGMAP_VERSION_MAJOR = {REGMAP_VERSION[0]};",
           f"  localparam int unsigned REGMAP_VERSION_MINOR = {REGMAP_VERSION[1]};",
           f"  localparam int unsigned SPEC_VERSION_MAJOR = {SPEC_VERSION[0]};",
           f"  localparam int unsigned SPEC_VERSION_MINOR = {SPEC_VERSION[1]};",
           f"  localparam int BINADE_FLOOR = {BINADE_FLOOR};  // the lowest binade UPDATE_BINADES counts",
           f"  localparam logic [31:0] ID_MAGIC = {_hex32(MAGIC)};  // \"CSIM\"",
           f"  localparam int unsigned ADDR_BITS = {(top - 1).bit_length()};  // byte address bits used"]
    for comment, kind, assignment in _sv_params(REGISTERS, WINDOWS):
        out += ["", f"  // {comment}"] if comment else []
        out.append(f"  localparam {kind} {assignment};")
    return "\n".join(out + ["endpackage", "/* verilator lint_on UNUSEDPARAM */", ""])


def markdown_table() -> str:
    """The register and window tables for docs/rtl.md (Markdown)."""
    def field(f: Field) -> str:
        bits = f"{f.lsb}" if f.width == 1 else f"{f.lsb + f.width - 1}:{f.lsb}"
        codes = f" ({', '.join(f'{i} {v}' for i, v in enumerate(f.values))})" if f.values else ""
        return f"`{f.name}` [{bits}]: {f.description}{codes}"

    def fields(r: Register) -> str:
        return "<br>".join(field(f) for f in r.fields)
    lines = [f"Register map version {REGMAP_VERSION[0]}.{REGMAP_VERSION[1]} (kernel spec "
             f"{SPEC_VERSION[0]}.{SPEC_VERSION[1]}).", "",
             "| address | register | access | reset | fields | description |", "|---|---|---|---|---|---|"]
    lines += [f"| `{r.address:#06x}` | `{r.name}` | {r.access} | `{r.reset:#010x}` | {fields(r)} | "
              f"{r.description} |" for r in REGISTERS]
    lines += ["", "| window | base | words | bytes | description |", "|---|---|---|---|---|"]
    lines += [f"| `{w.name}` | `{w.base:#010x}` | {w.words} | {4 * w.words // 1024} KiB | "
              f"{w.description} |" for w in WINDOWS]
    return "\n".join(lines)


BEGIN = "<!-- BEGIN GENERATED by `python -m accel.rtl.regmap`: edit accel/rtl/regmap.py instead -->"
END = "<!-- END GENERATED -->"


def splice(text: str) -> str:
    """``text`` with its generated block replaced by a fresh one."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the document has no generated block; add the lines\n{BEGIN}\n{END}")
    return text[:start] + f"{BEGIN}\n\n{markdown_table()}\n\n{END}" + text[end + len(END):]


def main(argv: list[str], pkg: Path = PKG_PATH, doc: Path = DOC_PATH) -> int:
    """Rewrite the package and the doc's generated block; with ``--check`` only report drift."""
    fresh = {pkg: sv_package(), doc: splice(doc.read_text())}
    stale = [p for p, text in fresh.items() if not p.exists() or p.read_text() != text]
    if "--check" in argv:
        for p in stale:
            print(f"{p.name} is out of date: run python -m accel.rtl.regmap", file=sys.stderr)
        return 1 if stale else 0
    for p in stale:
        p.write_text(fresh[p])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
