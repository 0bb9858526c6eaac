"""Number-format descriptors: the contract between host, accelerator and traces.

A descriptor says *what* a format is (its bit fields, range, special values and
overflow rule); ``accel.numerics`` says how to round into it. Descriptors are
frozen, hashable, travel in messages as their notation string, and parse back
to an equal object::

    >>> parse_format("e4m3fn")
    e4m3fn
    >>> parse_format("fixed<1,7>").max_value
    0.9921875
    >>> parse_format("float<5,2>") == parse_format("e5m2")
    True
    >>> parse_format("bfp<e4m3fn,32>")
    mxfp8

Accepted notations (``parse_format`` lists them again on a bad string):

- presets: see :data:`PRESETS` (``fp32``, ``bf16``, ``e4m3fn``, ``fixed8`` …);
- ``eXmY`` (IEEE-style) and ``eXmYfn`` (OCP "fn": no infinity, NaN only at all-ones);
- ``float<E,M[,opt…]>`` with options ``fn`` | ``finite`` (special values),
  ``sat`` | ``inf`` | ``nan`` (overflow), ``nosub`` (flush subnormals), ``bias=N``;
- ``fixed<IL,FL[,wrap]>`` and ``ufixed<IL,FL[,wrap]>`` (Gupta et al. 2015: WL = IL+FL,
  ε = 2^-FL, signed range [-2^(IL-1), 2^(IL-1) - ε]);
- ``bfp<ELEM,K[,eN][,floor|ceil]>``: blocks of K elements (``*`` = whole tensor)
  sharing a power-of-two scale with an N-bit exponent; ELEM is a format string or an
  integer W meaning a W-bit signed integer mantissa ``fixed<1,W-1>``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

__all__ = [
    "FloatFormat", "FixedFormat", "BlockFormat", "Format", "FormatError",
    "parse_format", "PRESETS",
]


class FormatError(ValueError):
    """A format string or descriptor argument that does not describe a format."""


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise FormatError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


@dataclass(frozen=True)
class FloatFormat:
    """Binary floating point with ``exp_bits`` exponent and ``man_bits`` stored mantissa bits.

    ``specials``: ``"ieee"`` (top exponent field holds ±inf and NaN), ``"fn"`` (OCP E4M3FN:
    no infinity, NaN only at S.1…1.1…1), ``"finite"`` (every pattern is a number, OCP FP6/FP4).
    ``overflow``: what a finite value beyond the largest finite one becomes after rounding:
    ``"inf"`` (IEEE; needs ``specials="ieee"``), ``"saturate"`` (±max), ``"nan"``.
    """

    exp_bits: int
    man_bits: int
    bias: int | None = None
    subnormals: bool = True
    specials: str = "ieee"
    overflow: str = "inf"

    def __post_init__(self) -> None:
        if not (isinstance(self.exp_bits, int) and 1 <= self.exp_bits <= 11):
            raise FormatError(f"exp_bits must be an integer from 1 to 11; got {self.exp_bits!r}")
        if not (isinstance(self.man_bits, int) and 0 <= self.man_bits <= 52):
            raise FormatError(f"man_bits must be an integer from 0 to 52; got {self.man_bits!r}")
        _choice("specials", self.specials, ("ieee", "fn", "finite"))
        _choice("overflow", self.overflow, ("inf", "saturate", "nan"))
        if self.bias is None:
            object.__setattr__(self, "bias", (1 << (self.exp_bits - 1)) - 1)
        if self.overflow == "inf" and self.specials != "ieee":
            raise FormatError("overflow='inf' needs specials='ieee' (the format has no infinity)")
        if self.overflow == "nan" and self.specials == "finite":
            raise FormatError("overflow='nan' needs a NaN encoding (specials 'ieee' or 'fn')")
        if self.specials == "ieee" and self.exp_bits < 2:
            raise FormatError("an IEEE-style format needs at least 2 exponent bits")
        if self.specials == "fn" and self.exp_bits == 1 and self.man_bits == 0:
            raise FormatError("float<1,0,fn> has no finite normal value")
        if not (self.emax >= self.emin and self.emax <= 1023 and self.emin - self.man_bits >= -1074):
            raise FormatError(f"bias {self.bias} puts the format outside float64's range")

    @property
    def bits(self) -> int:
        """Total width in bits (sign + exponent + mantissa)."""
        return 1 + self.exp_bits + self.man_bits

    @property
    def emin(self) -> int:
        """Unbiased exponent of the smallest normal binade."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        """Unbiased exponent of the largest binade that holds a finite value."""
        top = (1 << self.exp_bits) - 1
        if self.specials == "ieee" or (self.specials == "fn" and self.man_bits == 0):
            top -= 1
        return top - self.bias

    @property
    def max_value(self) -> float:
        """Largest finite value."""
        m = self.man_bits
        top_mantissa = (1 << m) - 1
        if self.specials == "fn" and m > 0 and self.emax == (1 << self.exp_bits) - 1 - self.bias:
            top_mantissa -= 1  # the all-ones pattern is NaN
        return (1 + top_mantissa / (1 << m)) * 2.0 ** self.emax

    @property
    def min_normal(self) -> float:
        return 2.0 ** self.emin

    @property
    def min_subnormal(self) -> float:
        """Smallest positive value (the smallest normal when subnormals are off)."""
        return 2.0 ** (self.emin - self.man_bits) if self.subnormals else self.min_normal

    @property
    def has_inf(self) -> bool:
        return self.specials == "ieee"

    @property
    def has_nan(self) -> bool:
        return self.specials != "finite"

    def __repr__(self) -> str:
        for name, fmt in PRESETS.items():
            if fmt == self:
                return name
        opts = []
        if self.specials != "ieee":
            opts.append(self.specials)
        default_overflow = "inf" if self.specials == "ieee" else "saturate"
        if self.overflow != default_overflow:
            opts.append({"inf": "inf", "saturate": "sat", "nan": "nan"}[self.overflow])
        if not self.subnormals:
            opts.append("nosub")
        if self.bias != (1 << (self.exp_bits - 1)) - 1:
            opts.append(f"bias={self.bias}")
        return f"float<{','.join([str(self.exp_bits), str(self.man_bits), *opts])}>"

    __str__ = __repr__


@dataclass(frozen=True)
class FixedFormat:
    """Fixed point ⟨IL, FL⟩: WL = IL + FL bits, step ε = 2^-FL (Gupta et al. 2015).

    Signed range [-2^(IL-1), 2^(IL-1) - ε]; unsigned [0, 2^IL - ε]. ``overflow`` is
    ``"saturate"`` (clamp to the range) or ``"wrap"`` (two's-complement wrap-around).
    """

    int_bits: int
    frac_bits: int
    signed: bool = True
    overflow: str = "saturate"

    def __post_init__(self) -> None:
        lo = 1 if self.signed else 0
        if not (isinstance(self.int_bits, int) and isinstance(self.frac_bits, int)):
            raise FormatError("int_bits and frac_bits must be integers")
        if self.int_bits < lo or self.frac_bits < 0:
            raise FormatError(f"need int_bits >= {lo} and frac_bits >= 0; got <{self.int_bits},{self.frac_bits}>")
        if not 1 <= self.bits <= 53:
            raise FormatError(f"word length IL+FL must be 1..53 (exact in float64); got {self.bits}")
        _choice("overflow", self.overflow, ("saturate", "wrap"))

    @property
    def bits(self) -> int:
        """Word length WL = IL + FL."""
        return self.int_bits + self.frac_bits

    @property
    def eps(self) -> float:
        """Step between neighbouring values, 2^-FL."""
        return 2.0 ** -self.frac_bits

    @property
    def min_code(self) -> int:
        """Smallest integer code (value = code · ε)."""
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max_code(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def min_value(self) -> float:
        return self.min_code * self.eps

    @property
    def max_value(self) -> float:
        return self.max_code * self.eps

    def __repr__(self) -> str:
        for name, fmt in PRESETS.items():
            if fmt == self:
                return name
        opts = ",wrap" if self.overflow == "wrap" else ""
        return f"{'' if self.signed else 'u'}fixed<{self.int_bits},{self.frac_bits}{opts}>"

    __str__ = __repr__


ElementFormat = Union[FloatFormat, FixedFormat]


@dataclass(frozen=True)
class BlockFormat:
    """Block floating point: ``block`` consecutive elements share one power-of-two scale.

    ``block=None`` shares one scale over the whole tensor (Flexpoint). The scale is
    2^X with X an integer of ``scale_bits`` bits (E8M0 for OCP MX: X in [-127, 127]).
    ``scale_rule``: ``"floor"`` (OCP MX: X = ⌊log2 amax⌋ - emax of the element; the
    largest element may then saturate) or ``"ceil"`` (the smallest X with amax / 2^X
    inside the element range, so nothing saturates).
    """

    element: ElementFormat
    block: int | None = 32
    scale_bits: int = 8
    scale_rule: str = "floor"

    def __post_init__(self) -> None:
        if not isinstance(self.element, (FloatFormat, FixedFormat)):
            raise FormatError(f"a block element must be a float or fixed format; got {self.element!r}")
        if self.block is not None and not (isinstance(self.block, int) and self.block >= 1):
            raise FormatError(f"block must be a positive integer or None (whole tensor); got {self.block!r}")
        if not (isinstance(self.scale_bits, int) and 2 <= self.scale_bits <= 11):
            raise FormatError(f"scale_bits must be 2..11; got {self.scale_bits!r}")
        _choice("scale_rule", self.scale_rule, ("floor", "ceil"))

    @property
    def scale_min_exp(self) -> int:
        return -((1 << (self.scale_bits - 1)) - 1)

    @property
    def scale_max_exp(self) -> int:
        return (1 << (self.scale_bits - 1)) - 1

    @property
    def bits(self) -> int:
        """Bits per element, not counting the shared scale."""
        return self.element.bits

    def __repr__(self) -> str:
        for name, fmt in PRESETS.items():
            if fmt == self:
                return name
        el = self.element
        if isinstance(el, FixedFormat) and el.signed and el.int_bits == 1 and el.overflow == "saturate":
            el_s = str(el.bits)
        else:
            el_s = repr(el)
        parts = [el_s, "*" if self.block is None else str(self.block)]
        if self.scale_bits != 8:
            parts.append(f"e{self.scale_bits}")
        if self.scale_rule != "floor":
            parts.append(self.scale_rule)
        return f"bfp<{','.join(parts)}>"

    __str__ = __repr__


Format = Union[FloatFormat, FixedFormat, BlockFormat]

PRESETS: dict[str, Format] = {
    "fp64": FloatFormat(11, 52),
    "fp32": FloatFormat(8, 23),
    "fp16": FloatFormat(5, 10),
    "bf16": FloatFormat(8, 7),
    "e4m3fn": FloatFormat(4, 3, specials="fn", overflow="saturate"),
    "e5m2": FloatFormat(5, 2),
    "fp8_ibm": FloatFormat(5, 2, overflow="saturate"),  # Wang et al. 2018 (1,5,2)
    "fp16_ibm": FloatFormat(6, 9, overflow="saturate"),  # Wang et al. 2018 (1,6,9)
    "e3m2": FloatFormat(3, 2, specials="finite", overflow="saturate"),
    "e2m3": FloatFormat(2, 3, specials="finite", overflow="saturate"),
    "e2m1": FloatFormat(2, 1, specials="finite", overflow="saturate"),
    "mxfp8": BlockFormat(FloatFormat(4, 3, specials="fn", overflow="saturate"), 32),
    "mxfp6": BlockFormat(FloatFormat(3, 2, specials="finite", overflow="saturate"), 32),
    "mxfp4": BlockFormat(FloatFormat(2, 1, specials="finite", overflow="saturate"), 32),
    "flex16+5": BlockFormat(FixedFormat(1, 15), None, scale_bits=5, scale_rule="ceil"),
}
_ALIASES = {"float64": "fp64", "double": "fp64", "float32": "fp32", "single": "fp32",
            "float16": "fp16", "half": "fp16", "bfloat16": "bf16",
            "float8_e4m3fn": "e4m3fn", "float8_e5m2": "e5m2"}

_FORMS = ("a preset (" + ", ".join(PRESETS) + ")", "eXmY or eXmYfn (e.g. e4m3fn)",
          "float<E,M[,fn|finite][,sat|inf|nan][,nosub][,bias=N]>",
          "fixed<IL,FL[,wrap]> or ufixed<IL,FL[,wrap]>",
          "bfp<ELEM|W,K|*[,eN][,floor|ceil]> (e.g. bfp<8,16>, bfp<e4m3fn,32>)")


def _split_args(body: str) -> list[str]:
    """Split on commas that are not inside nested <...>."""
    out, depth, cur = [], 0, ""
    for ch in body:
        depth += (ch == "<") - (ch == ">")
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return out


def _parse_float(args: list[str]) -> FloatFormat:
    e, m = int(args[0]), int(args[1])
    kw: dict = {}
    for opt in args[2:]:
        if opt in ("fn", "finite", "ieee"):
            kw["specials"] = opt
        elif opt in ("sat", "saturate", "inf", "nan"):
            kw["overflow"] = "saturate" if opt == "sat" else opt
        elif opt == "nosub":
            kw["subnormals"] = False
        elif opt.startswith("bias="):
            kw["bias"] = int(opt[5:])
        else:
            raise FormatError(f"unknown float option {opt!r}; options: fn, finite, sat, inf, nan, nosub, bias=N")
    if kw.get("specials", "ieee") != "ieee":
        kw.setdefault("overflow", "saturate")
    return FloatFormat(e, m, **kw)


def parse_format(text: "str | Format") -> Format:
    """Parse a format string (or pass a descriptor through); see the module docstring."""
    if isinstance(text, (FloatFormat, FixedFormat, BlockFormat)):
        return text
    if not isinstance(text, str):
        raise FormatError(f"a format is a string or descriptor; got {type(text).__name__}")
    s = text.strip().lower().replace(" ", "")
    s = _ALIASES.get(s, s)
    if s in PRESETS:
        return PRESETS[s]
    try:
        if mt := re.fullmatch(r"e(\d+)m(\d+)(fn)?", s):
            e, m = int(mt[1]), int(mt[2])
            return FloatFormat(e, m, specials="fn", overflow="saturate") if mt[3] else FloatFormat(e, m)
        if mt := re.fullmatch(r"(float|u?fixed|bfp)<(.*)>", s):
            kind, args = mt[1], _split_args(mt[2])
            if kind == "float" and len(args) >= 2:
                return _parse_float(args)
            if kind.endswith("fixed") and len(args) in (2, 3):
                if len(args) == 3 and args[2] not in ("wrap", "sat", "saturate"):
                    raise FormatError(f"unknown fixed option {args[2]!r}; options: wrap, sat")
                return FixedFormat(int(args[0]), int(args[1]), signed=(kind == "fixed"),
                                   overflow="wrap" if args[2:] == ["wrap"] else "saturate")
            if kind == "bfp" and len(args) >= 2:
                el: Format = FixedFormat(1, int(args[0]) - 1) if args[0].isdigit() else parse_format(args[0])
                if isinstance(el, BlockFormat):
                    raise FormatError("a block format cannot be the element of another")
                kw = {}
                for opt in args[2:]:
                    if re.fullmatch(r"e\d+", opt):
                        kw["scale_bits"] = int(opt[1:])
                    elif opt in ("floor", "ceil"):
                        kw["scale_rule"] = opt
                    else:
                        raise FormatError(f"unknown bfp option {opt!r}; options: eN, floor, ceil")
                return BlockFormat(el, None if args[1] in ("*", "tensor") else int(args[1]), **kw)
    except FormatError as exc:
        raise FormatError(f"{text!r}: {exc}") from None
    except ValueError:
        pass
    raise FormatError(f"cannot parse number format {text!r}; accepted forms: " + "; ".join(_FORMS))
