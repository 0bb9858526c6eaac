"""Energy of recorded runs: the accelerator's arithmetic and memories, the host's float64 work
and the host–accelerator link, each priced from published figures.

Usage::

    cosim energy runs/<run>/trace.cosim                 # a table per run and category
    cosim energy a/trace.cosim b/trace.cosim --link eth10g --target-gap 1e-6 \\
        --json energy.json --png energy.png             # several runs: energy against gap
    cosim energy trace.cosim --model mine.toml          # override any value; the report lists it

From Python, on a trace or on hand-built records::

    model = load_model(None)                            # the defaults of docs/energy.md
    report = account(TraceReader(path), model, "pcie3x8")
    report.total_pj(), report.by_algorithm(), report.to_target(1e-10)

Everything is counted from the trace — epoch records' ``ops`` (accelerator) and ``host_ops``
(host float64), the epoch reports' ``memory`` figures, the memory traffic of the requests
that load, re-centre, promote and fetch, and the bytes of every message — and priced by the
model, whose every value names its source and process node. ``docs/energy.md`` gives the
rules and the values.
"""
from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

from cosim.tomlfile import read_toml
from cosim.trace import message_bytes
from protocol.formats import BlockFormat, FixedFormat, FormatError, parse_format
from protocol.messages import CONV3, ROUNDINGS

CATEGORIES = {"compute": "accelerator compute", "memory": "accelerator memory",
              "host": "host fp64", "link": "link"}
UNITS = {"compute": "ops", "host": "ops", "memory": "B", "link": "bit"}  # "rng bits": bit


class EnergyError(ValueError):
    """A model file, link or trace the accounting cannot use; the message names the key."""


# ---- the model: every value with its source and process node -------------------------------

# Short citations; docs/energy.md gives the full references.
HOROWITZ = "Horowitz, ISSCC 2014"
N45 = "45 nm, 0.9 V"
ESTIMATE = "estimate (docs/energy.md)"


@dataclass(frozen=True)
class Value:
    """One number of the model and where it comes from."""

    value: float
    unit: str
    source: str
    node: str


def _v(value: float, unit: str, source: str, node: str = N45) -> Value:
    return Value(float(value), unit, source, node)


DEFAULTS: dict[str, dict[str, Value]] = {
    "compute": {
        "int_add_8": _v(0.03, "pJ", HOROWITZ),
        "int_add_32": _v(0.1, "pJ", HOROWITZ),
        "int_mul_8": _v(0.2, "pJ", HOROWITZ),
        "int_mul_32": _v(3.1, "pJ", HOROWITZ),
        "float_add_16": _v(0.4, "pJ", HOROWITZ),
        "float_add_32": _v(0.9, "pJ", HOROWITZ),
        "float_mul_16": _v(1.1, "pJ", HOROWITZ),
        "float_mul_32": _v(3.7, "pJ", HOROWITZ),
        # Newton–Raphson reciprocal: two iterations of two multiplies from a table seed, then
        # the product a·(1/b) (Oberman & Flynn, Division algorithms and implementations, IEEE
        # Trans. Computers 46(8), 1997).
        "div_per_mul": _v(5, "× mul", "Newton–Raphson, Oberman & Flynn 1997; " + ESTIMATE, "ratio"),
        "cmp_per_add": _v(1, "× add", "a subtraction; " + ESTIMATE, "ratio"),
        "round_per_add": _v(1, "× add", "shift and round increment; " + ESTIMATE, "ratio"),
        "rint_per_add": _v(1, "× add", "one rounding add; " + ESTIMATE, "ratio"),
        "log_per_exp": _v(1, "× exp", "reduction and polynomial like exp; " + ESTIMATE, "ratio"),
        "sqrt_per_div": _v(1, "× div", "iterative like division; " + ESTIMATE, "ratio"),
        # xorshift32 (Marsaglia, Xorshift RNGs, J. Stat. Softw. 8(14), 2003): three shift-XOR
        # stages per 32-bit word, each priced as a 32-bit add (an upper bound: no carry chain).
        "rng_bit": _v(3 * 0.1 / 32, "pJ/bit", "xorshift32 (Marsaglia 2003) as 3 × 32-bit add per word; "
                                              + ESTIMATE),
    },
    "memory": {
        "sram_8k": _v(10, "pJ/64 b", HOROWITZ),
        "sram_32k": _v(20, "pJ/64 b", HOROWITZ),
        "sram_1m": _v(100, "pJ/64 b", HOROWITZ),
        "dram": _v(1300, "pJ/64 b", HOROWITZ + " (1.3–2.6 nJ; the lower end)"),
        "sram_max_bytes": _v(1 << 20, "B", "the largest SRAM of Horowitz 2014; " + ESTIMATE, "—"),
    },
    "link": {
        # The PHYs of both ends: a PCIe transmitter, 1.93 pJ/bit (28 nm), and a 16 Gb/s DFE
        # receiver with its clock recovery, 3.7 pJ/bit (22 nm); docs/energy.md.
        "pcie3x8": _v(5.6, "pJ/bit", "PHYs only: TX Bae et al. 2021 + RX IBM A-SSCC 2013",
                      "28 nm / 22 nm"),
        # A 10GBASE-T PHY draws < 4 W per port in 40 nm; the two ports of a link carry
        # 2 × 10 Gb/s at full load: 2 · 4 W / 20 Gb/s.
        "eth10g": _v(400, "pJ/bit", "10GBASE-T PHYs at full load, Cates & Maguire 2012", "40 nm"),
    },
}
SECTIONS = (*DEFAULTS, "ops")
_DEFAULT_VALUES = {f"{s}.{k}": v for s, table in DEFAULTS.items() for k, v in table.items()}


@dataclass(frozen=True)
class EnergyModel:
    """Named values ("compute.int_add_8", "memory.dram", "link.pcie3x8" …) and prices set per
    operation key ("mul fp32"); ``overridden`` names what a model file set, in file order."""

    values: Mapping[str, Value]
    ops: Mapping[str, Value] = field(default_factory=dict)
    overridden: tuple[str, ...] = ()
    path: str | None = None

    def __getitem__(self, name: str) -> float:
        return self.value(name).value

    def value(self, name: str) -> Value:
        return self.ops[name[4:]] if name.startswith("ops.") else self.values[name]

    def links(self) -> list[str]:
        return [k[5:] for k in self.values if k.startswith("link.")]


def load_model(path: str | os.PathLike | None) -> EnergyModel:
    """The default model, with the values of the TOML file at ``path`` (if any) instead.

    A value is a number (its source becomes the file) or a table ``{value, source, node}``;
    ``[ops]`` prices one operation key; a new link in ``[link]`` must be a table with a source.
    Unknown sections, keys and table fields raise :class:`EnergyError` naming them.
    """
    values = dict(_DEFAULT_VALUES)
    if path is None:
        return EnergyModel(values)
    path = Path(path)
    try:
        raw = read_toml(path, "model file")
    except ValueError as exc:
        raise EnergyError(str(exc)) from None
    ops: dict[str, Value] = {}
    overridden: list[str] = []
    for section, table in raw.items():
        if section not in SECTIONS:
            raise EnergyError(f"model file {path}: unknown key {section!r}; sections: {', '.join(SECTIONS)}")
        if not isinstance(table, dict):
            raise EnergyError(f"model file {path}: {section!r} must be a table ([{section}])")
        for key, given in table.items():
            name = f"{section}.{key}"
            if section == "ops":
                try:
                    parse_op(key)
                except ValueError as exc:
                    raise EnergyError(f"model file {path}: unknown key {name!r}: {exc}") from None
                ops[key] = _given(given, name, "pJ", path)
            elif name in values:
                values[name] = _given(given, name, values[name].unit, path)
            elif section == "link" and isinstance(given, dict):
                values[name] = _given(given, name, "pJ/bit", path, new=True)
            else:
                known = ", ".join(DEFAULTS[section])
                raise EnergyError(f"model file {path}: unknown key {name!r}; [{section}] takes {known}"
                                  + (" (a new link is a table {value, source, node})" if section == "link" else ""))
            overridden.append(name)
    return EnergyModel(values, ops, tuple(overridden), str(path))


def overrides(model: EnergyModel) -> list[dict[str, Any]]:
    """What the model file set: name, value, unit, source, node and the default it replaced."""
    return [{"name": o, **asdict(model.value(o)),
             "default": _DEFAULT_VALUES[o].value if o in _DEFAULT_VALUES else None}
            for o in model.overridden]


def _given(given: Any, name: str, unit: str, path: Path, *, new: bool = False) -> Value:
    """A model file's value: a number, or {value, source, node}."""
    source, node = f"model file {path.name}", "unspecified"
    if isinstance(given, dict):
        for k in given:
            if k not in ("value", "source", "node"):
                raise EnergyError(f"model file {path}: unknown key '{name}.{k}'; a value table takes "
                                  "value, source, node")
        if "value" not in given or (new and "source" not in given):
            need = "value and source" if new else "value"
            raise EnergyError(f"model file {path}: {name!r} needs {need}")
        source, node = str(given.get("source", source)), str(given.get("node", node))
        given = given["value"]
    if isinstance(given, bool) or not isinstance(given, (int, float)) or not math.isfinite(given) or given < 0:
        raise EnergyError(f"model file {path}: {name!r} must be a finite number >= 0; got {given!r}")
    return Value(float(given), unit, source, node)


# ---- operation keys and their prices ----------------------------------------------------------

OPERATIONS = ("add", "mul", "round", "cmp", "div", "rint", "ldexp", "exp", "log", "sqrt")
# Keys of op counts that describe operations already counted under their own key (the layer
# kernel's "swamped add <acc>": adds whose smaller operand was lost): no energy, no op total.
DIAGNOSTICS = ("swamped",)


def is_diagnostic(key: str) -> bool:
    """Whether op-count ``key`` is a diagnostic (:data:`DIAGNOSTICS`), not an operation to price."""
    return key.split(" ", 1)[0] in DIAGNOSTICS

_WIDE = re.compile(r"u?fixed<(\d+),(\d+)>")


@dataclass(frozen=True)
class Operand:
    fixed: bool
    bits: int      # total width
    sig: int       # significand width: every bit of a fixed format, man_bits + 1 of a float one
    exp: int       # exponent field width (0 for fixed point)


@cache
def operand(text: str) -> Operand:
    """The widths of a format named in an operation key (a block format's element)."""
    try:
        fmt = parse_format(text)
    except FormatError:
        # the exact dot's register (protocol.capabilities.Register) may be wider than the
        # 53 bits a FixedFormat holds
        m = _WIDE.fullmatch(text)
        if m is None:
            raise ValueError(f"{text!r} is not a number format") from None
        bits = int(m[1]) + int(m[2])
        return Operand(True, bits, bits, 0)
    if isinstance(fmt, BlockFormat):
        fmt = fmt.element      # the shared scale is one exponent per block, not per element
    if isinstance(fmt, FixedFormat):
        return Operand(True, fmt.bits, fmt.bits, 0)
    return Operand(False, fmt.bits, fmt.man_bits + 1, fmt.exp_bits)


@cache
def parse_op(key: str) -> tuple[str, tuple[Operand, ...], str | None]:
    """``"mul fixed<2,6>*fixed<2,7>"`` → ("mul", (Operand, Operand), None);
    ``"round fixed<1,7> stochastic"`` → ("round", (Operand,), "stochastic"); ``"rng bits"``."""
    if key == "rng bits":
        return "rng", (), None
    parts = key.split(" ")
    if len(parts) not in (2, 3) or parts[0] not in OPERATIONS:
        raise ValueError(f"not an operation key: '<op> <format>[ <rounding>]' with op one of "
                         f"{', '.join(OPERATIONS)}, or 'rng bits'")
    op, texts = parts[0], parts[1].split("*")
    rounding = parts[2] if len(parts) == 3 else None
    if (op == "round") != (rounding is not None) or (rounding is not None and rounding not in ROUNDINGS):
        raise ValueError(f"'round' and only 'round' takes a rounding, one of {', '.join(ROUNDINGS)}")
    if len(texts) > (2 if op == "mul" else 1):
        raise ValueError("only 'mul' names two operand formats (A*B)")
    return op, tuple(operand(t) for t in texts), rounding


class Price(NamedTuple):
    pj: float                  # per operation, byte or bit
    rule: str
    inputs: tuple[str, ...]    # the model values it is derived from


def _through(x: float, p0: tuple[float, float], p1: tuple[float, float]) -> float:
    """The line through p0 and p1 at x; at the published points, their values as given."""
    (x0, y0), (x1, y1) = p0, p1
    if x == x0 or x == x1:
        return y0 if x == x0 else y1
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def price_op(key: str, model: EnergyModel) -> Price:
    """The energy of one operation ``key`` by the rules of docs/energy.md (or as set in [ops])."""
    if key in model.ops:
        return Price(model.ops[key].value, "set in [ops]", (f"ops.{key}",))
    if is_diagnostic(key):
        return Price(0.0, "a diagnostic: its adds are priced under their own key", ())
    try:
        op, operands, _ = parse_op(key)
        price = _rule(op, operands, key, model)
    except ValueError as exc:
        raise EnergyError(f"no energy rule for operation {key!r}: {exc}; price it in [ops] of a "
                          "model file") from None
    if price.pj < 0:
        raise EnergyError(f"the {price.rule} gives {price.pj:.3g} pJ for {key!r}, a width below "
                          "the rule's range; price it in [ops] of a model file")
    return price


def _rule(op: str, operands: tuple[Operand, ...], key: str, m: EnergyModel) -> Price:
    def scaled(ratio: str, base: Price) -> Price:
        return Price(m[ratio] * base.pj, f"{base.rule} × {ratio[8:]}", (ratio, *base.inputs))

    if op == "rng":
        return Price(m["compute.rng_bit"], "per bit", ("compute.rng_bit",))
    a = operands[0]
    if op == "add":
        names = ("compute.int_add_8", "compute.int_add_32") if a.fixed else ("compute.float_add_16", "compute.float_add_32")
        x0, x1 = (8, 32) if a.fixed else (16, 32)
        return Price(_through(a.bits, (x0, m[names[0]]), (x1, m[names[1]])),
                     f"{'int' if a.fixed else 'fp'} add {a.bits} b", names)
    if op == "mul":
        b = operands[-1]
        product = a.sig * b.sig
        if a.fixed and b.fixed:
            names, pts, kind = ("compute.int_mul_8", "compute.int_mul_32"), (8 * 8, 32 * 32), "int"
        else:
            names, pts, kind = ("compute.float_mul_16", "compute.float_mul_32"), (11 * 11, 24 * 24), "fp"
        return Price(_through(product, (pts[0], m[names[0]]), (pts[1], m[names[1]])),
                     f"{kind} mul {a.sig}×{b.sig}", names)
    fmt_text = key.split(" ")[1]
    if op == "round":
        return scaled("compute.round_per_add", _rule("add", operands, key, m))
    if op == "cmp":
        return scaled("compute.cmp_per_add", _rule("add", operands, key, m))
    if op == "rint":
        return scaled("compute.rint_per_add", _rule("add", operands, key, m))
    if op == "div":
        return scaled("compute.div_per_mul", _rule("mul", operands, key, m))
    if op == "sqrt":
        return scaled("compute.sqrt_per_div", _rule("div", operands, key, m))
    if a.fixed:
        raise ValueError(f"{op} of a fixed-point format has no rule")
    if op == "ldexp":
        names = ("compute.int_add_8", "compute.int_add_32")
        return Price(_through(a.exp, (8, m[names[0]]), (32, m[names[1]])),
                     f"int add {a.exp} b (exponent)", names)
    if op == "exp":
        from accel.spec import nonlinear

        fmt = parse_format(fmt_text)
        seq = nonlinear.op_counts(fmt.element if isinstance(fmt, BlockFormat) else fmt, "exp", 1)
        parts = [(n, price_op(k, m)) for k, n in seq.items()]
        return Price(math.fsum(n * p.pj for n, p in parts), "kernel spec exp: "
                     + " + ".join(f"{n} {k.split(' ')[0]}" for k, n in seq.items()),
                     tuple(dict.fromkeys(i for _, p in parts for i in p.inputs)))
    return scaled("compute.log_per_exp", _rule("exp", operands, key, m))   # log


# ---- memories -----------------------------------------------------------------------------------

SRAM_POINTS = ((8 << 10, "memory.sram_8k"), (32 << 10, "memory.sram_32k"), (1 << 20, "memory.sram_1m"))


def memory_sizes(config: Mapping[str, Any]) -> dict[str, int]:
    """Bytes of each accelerator memory for the run's shapes and formats (a trace header's
    config): x^q and the labels, q and q_a, g̃, the anchor terms P."""
    try:
        n, d, c = (int(config[k]) for k in ("n_samples", "n_features", "n_outputs"))
        wd, wo, wa = (operand(str(config[k])).bits for k in ("data_format", "offset_format", "acc_format"))
    except (KeyError, ValueError) as exc:
        raise EnergyError(f"the trace header's config cannot size the memories ({exc}): it needs "
                          "n_samples, n_features, n_outputs, data_format, offset_format, acc_format") from None
    bits = {"data": n * (d * wd + wa), "offset": 2 * d * c * wo, "gradient": d * c * wa, "anchor": n * c * wa}
    return {k: math.ceil(v / 8) for k, v in bits.items()}


def net_memory_sizes(body: Mapping[str, Any], batch: int) -> dict[str, int]:
    """Bytes of each memory of a network (a configure_net request's body) run with minibatches
    of ``batch`` samples, one per role of :func:`accel.spec.layer.layer_memory`'s keys."""
    return _Net(body, batch).sizes()


class _NetLayer(NamedTuple):
    """What sizes a network layer's memories, per sample where it is a count of values."""

    fan_in: int
    fan_out: int
    params: int
    kept: int           # activations kept for the backward: the input (a dense layer's with
                        # its ones column), the product's output and, pooled, the pool's
    in_flight: int      # δ into and out of the layer
    pooled: int         # max-pool windows (their indices)


def _net_layer(entry: Any) -> _NetLayer:
    """A configure_net ``layers`` entry: [fan_in, fan_out, activation] or [CONV3, C_in, C_out,
    H, W, activation, pool] (docs/accelerator.md, "Networks on the accelerator")."""
    if entry[0] == CONV3:
        c, co, h, w, pool = (int(entry[k]) for k in (1, 2, 3, 4, 6))
        fan_in, z, fan_out = c * h * w, co * h * w, co * (h // pool) * (w // pool)
        return _NetLayer(fan_in, fan_out, (9 * c + 1) * co, fan_in + z + (fan_out if pool > 1 else 0),
                         fan_in + z, fan_out if pool > 1 else 0)
    fi, fo = int(entry[0]), int(entry[1])
    return _NetLayer(fi, fo, (fi + 1) * fo, fi + 1 + fo, fi + 1 + fo, 0)


class _Net:
    """A configure_net's network: its memories and the memory traffic of its requests."""

    ROLES = ("weights", "activations", "errors", "weight_grads", "acc", "update")

    def __init__(self, body: Mapping[str, Any], batch: int) -> None:
        try:
            self.layers = [_net_layer(lay) for lay in body["layers"]]
            self.n, self.batch = int(body["n_samples"]), int(batch)
            self.w = {r: operand(str(body[f"{r}_format"])).bits for r in self.ROLES}
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise EnergyError(f"a configure_net request cannot size the memories ({exc}): it needs layers, "
                              "n_samples and the formats " + ", ".join(f"{r}_format" for r in self.ROLES)) from None
        self.params = sum(lay.params for lay in self.layers)
        classes = self.layers[-1].fan_out
        self.classes, self.label_bits = classes, max(1, (classes - 1).bit_length())   # as layer_memory
        self.offset_bits = 0       # HALP's offset format's width once a recentre_net set one

    def sizes(self) -> dict[str, int]:
        p, b, w, layers = self.params, self.batch, self.w, self.layers
        bits = {"weights": p * w["weights"], "master weights": p * w["update"],
                "weight gradients": p * w["weight_grads"],
                "activations": b * sum(lay.kept for lay in layers) * w["activations"],
                "errors": b * max(lay.in_flight for lay in layers) * w["errors"],
                "probabilities": b * self.classes * w["acc"],
                "data": self.n * layers[0].fan_in * w["activations"], "labels": self.n * self.label_bits,
                # HALP: w̃ and g̃ in float64, the offset at the widest offset format it accepts (16 bits)
                "anchor": p * 64, "full gradient": p * 64, "offset": p * 16,
                # mixed's local steps: G, the sum of their gradients, in float64
                "gradient sum": p * 64}
        if indices := sum(lay.pooled for lay in layers):
            bits["index"] = b * indices * 2                   # a max-pool's argmax, 2 bits (layer_memory)
        return {k: math.ceil(v / 8) for k, v in bits.items()}

    def request_bits(self, mtype: str, header: Mapping[str, Any]) -> dict[str, int]:
        """Bits each memory sees for one network request (docs/energy.md, "Memory")."""
        p, w = self.params, self.w
        if mtype == "configure_net":
            return {"master weights write": p * w["update"]}                     # w into the update format
        if mtype == "load_data":
            shapes = {t["name"]: t["shape"] for t in header.get("tensors") or ()}
            rows = shapes["x"][0] if "x" in shapes else 0
            return {"data write": rows * self.layers[0].fan_in * w["activations"], "labels write": rows * self.label_bits}
        if mtype == "net_grad":
            if ((header.get("body") or {}).get("steps") or 1) > 1:   # local steps: their own in the reply
                return {"master weights write": p * w["update"],                # the copy, R_u(w) as sent
                        "master weights read": p * w["update"], "weights write": p * w["weights"],  # its Q_w
                        "gradient sum read": p * 64}                            # G for the reply
            return {"weights write": p * w["weights"],                          # Q_w(w) as sent
                    "weight gradients read": p * w["weight_grads"]}             # ΔW for the reply
        if mtype == "run_net_epoch":
            if (header.get("body") or {}).get("algorithm") == "halp":
                return {}                                                       # in its epoch report
            return {"master weights read": p * w["update"], "weights write": p * w["weights"]}  # Q_w(w) to start
        if mtype == "recentre_net":
            self.offset_bits = operand(str((header.get("body") or {}).get("offset_format"))).bits
            return {"anchor write": p * 64, "full gradient write": p * 64, "offset write": p * self.offset_bits}
        # fetch_net: the master weights, and after a recentre_net HALP's offset with them (net_state)
        return {"master weights read": p * w["update"], **({"offset read": p * self.offset_bits}
                                                            if self.offset_bits else {})}


def access_price(size: int, model: EnergyModel) -> Price:
    """Energy of one 64-bit access to a memory of ``size`` bytes."""
    if size > model["memory.sram_max_bytes"]:
        return Price(model["memory.dram"], f"DRAM, {size:,} B", ("memory.dram",))
    (s0, n0), (s1, n1), (s2, n2) = SRAM_POINTS
    if size <= s0:
        return Price(model[n0], f"SRAM {size:,} B (≤ 8 KB)", (n0,))
    (sa, na), (sb, nb) = ((s0, n0), (s1, n1)) if size <= s1 else ((s1, n1), (s2, n2))
    ea, eb = model[na], model[nb]
    if size in (sa, sb) or ea <= 0 or eb <= 0:     # a published point, or no log to take
        pj = _through(size, (sa, ea), (sb, eb))
    else:
        pj = ea * (size / sa) ** (math.log(eb / ea) / math.log(sb / sa))
    return Price(pj, f"SRAM {size:,} B (log-log)", (na, nb))


def epoch_costs(config: Mapping[str, Any], algorithm: str, model: EnergyModel,
                widths: Iterable[int] = range(2, 17)) -> dict[int, float]:
    """Picojoules of one accelerator epoch of ``algorithm`` at each offset width in ``widths``
    (its integer bits kept), computed and priced as ``account`` prices a recorded one: the
    kernel's operation counts and memory traffic (``accel.spec.counts``) at that width.

    ``config`` is a run's resolved config (formats, shapes, rounding, batch size, inner steps);
    the energy-aware precision policy compares these figures. Widths with no integer-bit room
    (at most the offset's integer bits) are left out.
    """
    from accel.spec.counts import KernelFormats, epoch_memory, epoch_ops

    offset = parse_format(str(config["offset_format"]))
    if not isinstance(offset, FixedFormat):
        raise EnergyError(f"epoch_costs: a fixed-point offset format changes width; got {offset!r}")
    kernel = "sgd" if algorithm == "lpsgd" else "svrg"
    shapes = dict(n_features=int(config["n_features"]), n_outputs=int(config["n_outputs"]),
                  batch=int(config["batch_size"]), steps=int(config["inner_steps"]))
    costs = {}
    for bits in widths:
        if bits <= offset.int_bits:
            continue
        at = FixedFormat(offset.int_bits, bits - offset.int_bits, offset.signed, offset.overflow)
        fmts = KernelFormats(parse_format(str(config["data_format"])), at, parse_format(str(config["acc_format"])),
                             str(config["rounding"]), int(config["rbits"]))
        acc = _Accountant(model, "none")
        acc.config = {**config, "offset_format": repr(at)}
        terms: dict[str, list[float]] = {"compute": [], "memory": []}
        acc.tally("compute", epoch_ops(kernel, str(config["model"]), fmts, **shapes), terms["compute"])
        acc.tally("memory", epoch_memory(kernel, str(config["model"]), fmts, **shapes), terms["memory"])
        costs[bits] = math.fsum(terms["compute"] + terms["memory"])
    return costs


# ---- accounting -----------------------------------------------------------------------------------

class Target(NamedTuple):
    epoch: int
    gap: float
    pj: float


@dataclass
class Item:
    """One priced quantity of a run: operations, bytes of a memory, bits on the link."""

    category: str
    key: str
    quantity: int
    each_pj: float
    rule: str
    inputs: tuple[str, ...]    # the model values the price derives from
    source: str
    node: str

    @property
    def pj(self) -> float:
        return self.quantity * self.each_pj


@dataclass
class EpochEnergy:
    """The energy one epoch record closed, by category."""

    algorithm: str
    epoch: int
    gap: float | None
    pj: dict[str, float]       # by category


@dataclass
class EnergyReport:
    """One run's energy: priced items, per-epoch energy by category, what the model overrode."""

    name: str
    link: str
    config: dict[str, Any]
    items: list[Item]
    epochs: list[EpochEnergy]
    unattributed: dict[str, float]   # "other": before an algorithm's mark, after the last epoch
    overridden: list[dict[str, Any]]
    notes: list[str]
    truncated: bool = False

    def total_pj(self, category: str | None = None) -> float:
        return math.fsum(i.pj for i in self.items if category in (None, i.category))

    def by_algorithm(self) -> dict[str, dict[str, float]]:
        """Energy by category of each algorithm's epochs, in the order the algorithms ran."""
        out: dict[str, dict[str, list[float]]] = {}
        for e in self.epochs:
            groups = out.setdefault(e.algorithm, {c: [] for c in CATEGORIES})
            for c, pj in e.pj.items():
                groups[c].append(pj)
        return {a: {c: math.fsum(v) for c, v in g.items()} for a, g in out.items()}

    def curve(self, algorithm: str) -> list[tuple[int, float | None, float]]:
        """(epoch, gap, energy of this and every earlier epoch of ``algorithm``)."""
        total, out = 0.0, []
        for e in self.epochs:
            if e.algorithm == algorithm:
                total += sum(e.pj.values())
                out.append((e.epoch, e.gap, total))
        return out

    def to_target(self, gap: float) -> dict[str, Target | None]:
        """Per algorithm: the first epoch whose relative gap is ≤ ``gap`` and the energy of it
        and every earlier epoch of that algorithm (all categories); None if never reached."""
        out: dict[str, Target | None] = {}
        spent: dict[str, list[float]] = {}
        for e in self.epochs:
            terms = spent.setdefault(e.algorithm, [])
            out.setdefault(e.algorithm, None)
            if out[e.algorithm] is not None:
                continue
            terms.extend(e.pj.values())
            if e.gap is not None and e.gap <= gap:
                out[e.algorithm] = Target(e.epoch, e.gap, math.fsum(terms))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.name, "link": self.link, "config": self.config,
                "total_pj": self.total_pj(),
                "categories": {c: self.total_pj(c) for c in CATEGORIES},
                "algorithms": self.by_algorithm(), "unattributed": self.unattributed,
                "items": [{**asdict(i), "pj": i.pj} for i in self.items],
                "epochs": [asdict(e) for e in self.epochs],
                "overridden": self.overridden, "notes": self.notes, "truncated": self.truncated}


CONFIG_KEYS = ("dataset", "model", "algorithms", "bits", "data_format", "offset_format", "acc_format",
               "recipe", "rounding", "n_samples", "n_features", "n_outputs", "inner_steps", "batch_size", "epochs")


def account(records: Iterable[Mapping[str, Any]], model: EnergyModel, link: str, *,
            name: str = "run") -> EnergyReport:
    """Price a trace's records (a :class:`cosim.trace.TraceReader` or hand-built dicts).

    Each epoch record closes an epoch: its ``ops`` and ``host_ops``, its ``memory`` (or the
    epoch report's figures) and every message and acknowledged operation since the previous
    epoch record belong to it. What no epoch record closes — before an algorithm's mark record
    (hello, capabilities), after the run's last epoch record — is ``unattributed``: in the
    totals, in no algorithm.
    """
    if f"link.{link}" not in model.values:
        raise EnergyError(f"unknown link {link!r}; choose {', '.join(model.links())} (or define one "
                          "in [link] of a model file)")
    acc = _Accountant(model, link)
    for record in records:
        acc.feed(record)
    acc.close_pending()
    return acc.report(name, truncated=bool(getattr(records, "truncated", False)))


class _Formats:
    """What the accelerator was configured with, for the memory traffic of its requests."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        self.problem = body.get("problem")
        self.n, self.d, self.c = (int(body.get(k) or 0) for k in ("n_samples", "n_features", "n_outputs"))
        self.wd, self.wo, self.wa = (operand(str(body[k])).bits
                                     for k in ("data_format", "offset_format", "acc_format"))
        self.anchor_rows = 0


class _Accountant:
    """The streaming state of :func:`account`. Per epoch it prices each count once from a cache
    and keeps the terms, so that an epoch's energy is one correctly rounded sum (math.fsum)."""

    def __init__(self, model: EnergyModel, link: str) -> None:
        self.model, self.link = model, link
        self.config: dict[str, Any] = {}
        self.sizes: dict[str, int] | None = None
        self.info: dict[tuple[str, str], Price] = {}
        self.prices: dict[str, dict[str, float]] = {c: {} for c in CATEGORIES}
        self.totals: dict[str, dict[str, int]] = {c: {} for c in CATEGORIES}
        self.epochs: list[EpochEnergy] = []
        self.unattributed = dict.fromkeys(CATEGORIES, 0.0)
        self.formats: _Formats | None = None
        self.net: _Net | None = None
        self.algorithm: str | None = None
        self.host_seen = self.memory_seen = self.accel_epochs = 0
        self.host_missing: dict[str, None] = {}          # algorithms with an epoch record without host_ops
        self._reset()

    def _reset(self) -> None:
        self.pending_ops: list[Mapping[str, int]] = []   # acknowledged operations (load, recentre, promote)
        self.pending_report: Mapping[str, int] | None = None   # the last epoch report's memory figures
        self.pending_memory: dict[str, int] = {}         # bytes of the requests' memory traffic
        self.pending_link: dict[str, int] = {}           # bits per direction

    # -- pricing --------------------------------------------------------------------------

    def price(self, category: str, key: str) -> Price:
        p = self.info.get((category, key))
        if p is None:
            p = self.info[(category, key)] = self._price(category, key)
        return p

    def _price(self, category: str, key: str) -> Price:
        if category in ("compute", "host"):
            return price_op(key, self.model)
        if category == "link":
            name = f"link.{self.link}"
            return Price(self.model[name], self.link, (name,))
        memory = key.rsplit(" ", 1)[0]     # "<memory> read|write"; "weight gradients write"
        if self.sizes is None:
            self.sizes = memory_sizes(self.config)
        if memory not in self.sizes:
            raise EnergyError(f"memory figure {key!r}: no memory named {memory!r} (known: {', '.join(self.sizes)})")
        per_access = access_price(self.sizes[memory], self.model)
        return Price(per_access.pj / 8, per_access.rule, per_access.inputs)

    def tally(self, category: str, counts: Mapping[str, int], terms: list[float]) -> None:
        """Add ``counts`` to the run's totals and their energies to ``terms``."""
        prices, totals = self.prices[category], self.totals[category]
        for key, n in counts.items():
            if is_diagnostic(key):
                continue
            pj = prices.get(key)
            if pj is None:
                pj = prices[key] = self.price(category, key).pj
            totals[key] = totals.get(key, 0) + n
            terms.append(n * pj)

    # -- records --------------------------------------------------------------------------

    def feed(self, r: Mapping[str, Any]) -> None:
        kind = r.get("kind")
        if kind == "message":
            self.message(r)
        elif kind == "epoch":
            self.epoch(r)
        elif kind == "mark" and r.get("what") == "algorithm":
            self.close_pending()
            self.algorithm = r.get("name")
        elif kind == "header":
            self.config = dict(r.get("config") or {})

    def message(self, r: Mapping[str, Any]) -> None:
        header, direction = r["header"], r["dir"]
        self.pending_link[direction] = self.pending_link.get(direction, 0) + 8 * message_bytes(r)
        mtype = header.get("type")
        if direction == "a2h":
            if mtype == "ack":
                ops = ((header.get("body") or {}).get("info") or {}).get("ops")
                if ops:
                    self.pending_ops.append(ops)
            elif mtype == "epoch_report":
                self.pending_report = (header.get("body") or {}).get("memory")
            return
        if mtype == "configure":
            self.formats, self.net = _Formats(header.get("body") or {}), None
        elif mtype == "configure_net":
            # one memory size per run: a network's, sized at the batch the run was configured with
            self.formats, self.net = None, _Net(header.get("body") or {}, int(self.config.get("batch_size") or 1))
            self.sizes = self.net.sizes()
        bits: dict[str, int] = {}
        if self.net is not None and mtype in _NET_TRAFFIC:
            bits = self.net.request_bits(mtype, header)
        elif self.formats is not None and mtype in _TRAFFIC:
            bits = _request_bits(mtype, header, header.get("body") or {}, self.formats)
        memory = self.pending_memory
        for key, b in bits.items():
            memory[key] = memory.get(key, 0) + -(-b // 8)

    def epoch(self, r: Mapping[str, Any]) -> None:
        terms: dict[str, list[float]] = {c: [] for c in CATEGORIES}
        ops = r.get("ops") or {}
        self.tally("compute", ops, terms["compute"])
        for acked in self.pending_ops:
            self.tally("compute", acked, terms["compute"])
        memory = r.get("memory", self.pending_report) or {}
        self.tally("memory", memory, terms["memory"])
        self.tally("memory", self.pending_memory, terms["memory"])
        self.tally("host", r.get("host_ops") or {}, terms["host"])
        self.tally("link", self.pending_link, terms["link"])
        self.accel_epochs += bool(ops)
        self.memory_seen += bool(memory)
        self.host_seen += r.get("host_ops") is not None
        algorithm = r.get("algorithm") or self.algorithm or "?"
        if r.get("host_ops") is None:
            self.host_missing[algorithm] = None
        self.epochs.append(EpochEnergy(algorithm, r.get("epoch"),
                                       r.get("gap"), {c: math.fsum(t) for c, t in terms.items()}))
        self._reset()

    def close_pending(self) -> None:
        """What happened since the last epoch record belongs to no epoch."""
        terms: dict[str, list[float]] = {"compute": [], "memory": [], "link": []}
        for acked in self.pending_ops:
            self.tally("compute", acked, terms["compute"])
        self.tally("memory", self.pending_memory, terms["memory"])
        self.tally("link", self.pending_link, terms["link"])
        for c, t in terms.items():
            self.unattributed[c] = math.fsum([self.unattributed[c], *t])
        self._reset()

    def report(self, name: str, *, truncated: bool) -> EnergyReport:
        items = []
        for c, counts in self.totals.items():
            for key, n in sorted(counts.items()):
                if n:
                    p = self.price(c, key)
                    vals = [self.model.value(i) for i in p.inputs]
                    items.append(Item(c, key, n, p.pj, p.rule, p.inputs,
                                      "; ".join(dict.fromkeys(v.source for v in vals)),
                                      " / ".join(dict.fromkeys(v.node for v in vals))))
        notes = []
        if self.epochs and not self.host_seen:
            notes.append("the epoch records carry no host_ops (a trace from before they were "
                         "counted): the host's float64 work is not included")
        elif self.host_missing:
            notes.append(f"the epoch records of {', '.join(self.host_missing)} carry no host_ops (a network's "
                         "host algorithms before they were counted): their host float64 work is not included")
        if self.accel_epochs and not self.memory_seen:
            notes.append("no memory figures recorded: the accelerator's epoch memory traffic is not included")
        return EnergyReport(name, self.link, {k: self.config[k] for k in CONFIG_KEYS if k in self.config},
                            items, self.epochs, dict(self.unattributed), overrides(self.model), notes,
                            truncated)


_TRAFFIC = frozenset({"load_data", "recentre", "promote", "fetch"})   # requests that touch memories
_NET_TRAFFIC = frozenset({"configure_net", "load_data", "net_grad", "run_net_epoch", "recentre_net", "fetch_net"})


def _request_bits(mtype: str, header: Mapping[str, Any], body: Mapping[str, Any],
                  f: _Formats) -> dict[str, int]:
    """Bits each memory sees for one request outside run_epoch (docs/energy.md, "Memory")."""
    shapes = {t["name"]: t["shape"] for t in header.get("tensors") or ()}
    dc = f.d * f.c
    if mtype == "load_data":
        if "x" not in shapes:
            return {}
        rows, cols = shapes["x"]
        return {"data write": rows * cols * f.wd + (rows * f.wa if "y" in shapes else 0)}  # x^q, labels
    if mtype == "fetch":
        return {"offset read": dc * f.wo}                                                 # q
    if mtype == "recentre":
        bits = {"gradient write": dc * f.wa}                                             # g̃
        if "anchor" in shapes:
            f.anchor_rows = shapes["anchor"][0]
            bits["anchor write"] = f.anchor_rows * f.c * f.wa                            # P
        if body.get("scale") is not None:
            bits["offset write"] = 2 * dc * f.wo                                         # q, q_a ← 0
        else:
            bits["offset read"] = bits["offset write"] = dc * f.wo                       # q_a ← q
        return bits
    # promote: q and q_a re-rounded into the new offset format
    wo = operand(str(body["offset_format"])).bits
    bits = {"offset read": 2 * dc * f.wo, "offset write": 2 * dc * wo}
    f.wo = wo
    if body.get("acc_format"):
        # g̃, P and the least-squares targets re-rounded into the new accumulator format
        wa = operand(str(body["acc_format"])).bits
        labels = f.n if f.problem == "linear" else 0
        for memory, count in (("gradient", dc), ("anchor", f.anchor_rows * f.c), ("data", labels)):
            if count:
                bits[f"{memory} read"] = count * f.wa
                bits[f"{memory} write"] = count * wa
        f.wa = wa
    return bits


# ---- output: tables, JSON, plot ---------------------------------------------------------------

def run_name(path: Path) -> str:
    """A results directory's name for its trace.cosim, else the file's stem."""
    return path.parent.name if path.name == "trace.cosim" else path.stem


def format_pj(pj: float) -> str:
    for unit, scale in (("J", 1e12), ("mJ", 1e9), ("µJ", 1e6), ("nJ", 1e3)):
        if abs(pj) >= scale:
            return f"{pj / scale:.4g} {unit}"
    return f"{pj:.4g} pJ"


def target_rows(reports: list[EnergyReport], gap: float) -> list[dict[str, Any]]:
    """Energy to reach ``gap`` for each algorithm of each run, and its ratio to the cheapest."""
    rows = []
    for r in reports:
        finals = {e.algorithm: e.gap for e in r.epochs}
        for alg, t in r.to_target(gap).items():
            rows.append({"run": r.name, "algorithm": alg, "epoch": t and t.epoch, "gap": t and t.gap,
                         "pj": t and t.pj, "final_gap": finals[alg]})
    best = min((x["pj"] for x in rows if x["pj"] is not None), default=None)
    for x in rows:
        x["ratio"] = x["pj"] / best if x["pj"] is not None and best else None
    return rows


def print_reports(reports: list[EnergyReport], model: EnergyModel, gap: float, console: Any) -> None:
    """The tables of ``cosim energy``: per run, energy by category and algorithm and every
    priced item with its rule and numbered sources; then energy to ``gap``; then the overrides."""
    from rich.console import Console
    from rich.markup import escape as e
    from rich.table import Table

    # Files and pipes get whole tables (nothing wraps lines there); a terminal, its width.
    wide = console if console.is_terminal else Console(file=console.file, width=max(console.width, 140),
                                                        highlight=False, soft_wrap=True)
    for r in reports:
        cfg = r.config
        formats = (f"recipe {cfg['recipe']}" if cfg.get("data_format") is None and cfg.get("recipe")  # a network
                   else f"data {cfg.get('data_format', '?')}, offset {cfg.get('offset_format', '?')}, "
                        f"acc {cfg.get('acc_format', '?')}")
        console.print(f"[bold]{e(r.name)}[/]: " + e(
            f"{cfg.get('dataset', '?')} / {cfg.get('model', '?')}, {formats}; link {r.link}"))
        per_alg = r.by_algorithm()
        other = any(r.unattributed.values())
        t = Table("category", *map(e, per_alg), *(["other"] if other else []), "total",
                  title=f"{e(r.name)}: energy by category")
        for c, label in CATEGORIES.items():
            t.add_row(label, *(format_pj(v[c]) for v in per_alg.values()),
                      *([format_pj(r.unattributed[c])] if other else []), format_pj(r.total_pj(c)))
        t.add_row("[bold]total[/]", *(format_pj(math.fsum(v.values())) for v in per_alg.values()),
                  *([format_pj(math.fsum(r.unattributed.values()))] if other else []),
                  f"[bold]{format_pj(r.total_pj())}[/]")
        wide.print(t)
        # Sources as numbered notes: a derived price cites every value it derives from.
        notes: dict[tuple[str, str], int] = {}
        t = Table("", "item", "quantity", "each", "energy", "rule", "sources", title=f"{e(r.name)}: what was priced")
        for i in r.items:
            refs = sorted({notes.setdefault((v.source, v.node), len(notes) + 1)
                           for v in map(model.value, i.inputs)})
            unit = "bit" if i.key == "rng bits" else UNITS[i.category]
            t.add_row(i.category, e(i.key), f"{i.quantity:,} {unit}", f"{i.each_pj:.4g} pJ",
                      format_pj(i.pj), e(i.rule), ",".join(map(str, refs)))
        wide.print(t)
        for (source, node), k in notes.items():
            console.print(e(f"  {k}: {source} ({node})"))
        for note in r.notes:
            console.print(f"[yellow]note[/]: {e(note)}")
        if r.truncated:
            console.print("[yellow]truncated[/]: the run stopped mid-record; its last record is not counted")
    t = Table("run", "algorithm", "epoch", "gap", "energy", "× cheapest",
              title=f"energy to reach a relative gap ≤ {gap:g}")
    for x in target_rows(reports, gap):
        if x["pj"] is None:
            t.add_row(e(x["run"]), e(x["algorithm"]), "-", f"not reached (final {_gap(x['final_gap'])})",
                      "-", "-")
        else:
            t.add_row(e(x["run"]), e(x["algorithm"]), str(x["epoch"]), _gap(x["gap"]), format_pj(x["pj"]),
                      f"{x['ratio']:.3g}" if x["ratio"] is not None else "-")
    wide.print(t)
    if model.overridden:
        t = Table("value", "default", "now", "unit", "source", "node", title=f"overridden by {e(str(model.path))}")
        for o in overrides(model):
            t.add_row(e(o["name"]), "-" if o["default"] is None else f"{o['default']:g}", f"{o['value']:g}",
                      e(o["unit"]), e(o["source"]), e(o["node"]))
        wide.print(t)


def _gap(g: float | None) -> str:
    return "-" if g is None else f"{g:.3e}"


def write_json(path: str | os.PathLike, reports: list[EnergyReport], model: EnergyModel, gap: float) -> None:
    """The model (every value with its source), each run's report and the energy to ``gap``."""
    doc = {"model": {"path": model.path, "overridden": list(model.overridden),
                     "values": {k: asdict(v) for k, v in model.values.items()},
                     "ops": {k: asdict(v) for k, v in model.ops.items()}},
           "target_gap": gap, "to_target": target_rows(reports, gap),
           "runs": [r.to_dict() for r in reports]}
    Path(path).write_text(json.dumps(doc, indent=1))


def plot(path: str | os.PathLike, reports: list[EnergyReport], gap: float) -> None:
    """Stacked bars by category for each algorithm of each run; cumulative energy against the
    relative loss gap, with ``gap`` marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cosim.results import GAP_FLOOR

    bars = [(r.name, alg, cats) for r in reports for alg, cats in r.by_algorithm().items()]
    top = max((math.fsum(c.values()) for *_, c in bars), default=0.0)
    scale, unit = next(((s, u) for u, s in (("J", 1e12), ("mJ", 1e9), ("µJ", 1e6), ("nJ", 1e3))
                        if top >= s), (1.0, "pJ"))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 5))
    xs = range(len(bars))
    bottom = [0.0] * len(bars)
    for c, label in CATEGORIES.items():
        heights = [cats[c] / scale for *_, cats in bars]
        ax.bar(xs, heights, bottom=bottom, label=label)
        bottom = [b + h for b, h in zip(bottom, heights)]
    several = len(reports) > 1
    ax.set_xticks(list(xs), [f"{run}\n{alg}" if several else alg for run, alg, _ in bars],
                  fontsize=7 if several else 9, rotation=30 if several else 0, ha="right" if several else "center")
    ax.set_ylim(0, 1.08 * max(bottom, default=0.0) or 1.0)   # room above the tallest bar
    ax.set_ylabel(f"energy / {unit}")
    ax.set_title("energy by category")
    ax.legend(fontsize=8)
    for r in reports:
        for alg in r.by_algorithm():
            pts = [(pj / scale, max(g, GAP_FLOOR)) for _, g, pj in r.curve(alg) if g is not None and pj > 0]
            if pts:
                ax2.loglog(*zip(*pts), marker="o", ms=3, label=f"{r.name}: {alg}" if several else alg)
    ax2.axhline(gap, color="grey", lw=0.8, ls="--")
    ax2.set_xlabel(f"cumulative energy / {unit}")
    ax2.set_ylabel("relative loss gap (f − f*) / |f*|")
    ax2.set_title(f"energy against gap (dashed: {gap:g})")
    ax2.grid(True, which="major", alpha=0.3)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")   # whatever the file is called: --png asked for PNG
    plt.close(fig)
