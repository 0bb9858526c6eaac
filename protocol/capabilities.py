"""What an accelerator accepts, as data both sides can check: format rules per role, roundings,
exactness widths. The accelerator announces them in its ``capabilities`` reply; the host checks a
run against them before any heavy work, and the daemon checks every ``configure`` and ``promote``
with the same code::

    >>> caps = KernelCapabilities(
    ...     backend="demo", spec=(2, 0),
    ...     roles={"data": RoleRule((FamilyRule("fixed", max_bits=16),)),
    ...            "offset": RoleRule((FamilyRule("fixed", signed=(True,), max_bits=16),),
    ...                               roundings=("nearest_even", "stochastic")),
    ...            "acc": RoleRule(presets=("fp32",))},
    ...     exact_dot_bits=48, exact_product_bits=53)
    >>> caps.check_format("offset", "e4m3fn")
    Traceback (most recent call last):
    ...
    protocol.capabilities.CapabilityError: offset_format 'e4m3fn' is not accepted by the demo backend: the offset takes fixed<IL,FL> signed, saturating, IL+FL <= 16
    >>> from protocol.messages import Capabilities
    >>> KernelCapabilities.from_message(Capabilities(version=[1, 1], **caps.message_fields())) == caps
    True

Roles: ``data`` (the training set as the accelerator holds it), ``offset`` (the model offset q,
the only state updated in low precision), ``acc`` (every rounded operation of the kernel: the
accumulator/vector format). The exactness widths say how wide an exact dot product and an exact
mixed product the backend computes before it rounds (``docs/accelerator.md``, "Formats").
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from .formats import FixedFormat, FloatFormat, Format, FormatError, parse_format

__all__ = ["ROLES", "FamilyRule", "RoleRule", "KernelCapabilities", "CapabilityError", "Register",
           "exact_dot_format", "precision"]

ROLES = ("data", "offset", "acc")
FAMILIES = ("fixed", "float", "block")


class CapabilityError(ValueError):
    """A format, rounding or size that the accelerator does not accept; ``role`` names where."""

    def __init__(self, role: str, message: str) -> None:
        super().__init__(message)
        self.role = role


def _family(fmt: Format) -> str:
    return "fixed" if isinstance(fmt, FixedFormat) else "float" if isinstance(fmt, FloatFormat) else "block"


@dataclass(frozen=True)
class FamilyRule:
    """One family of formats a role accepts, with bounds (``None``: unbounded).

    fixed: ``signed`` (which of signed/unsigned), ``overflow`` (saturate/wrap), ``max_bits``
    (IL+FL). float: ``max_exp_bits``, ``max_man_bits``, ``exp_range`` = (lowest exponent of the
    smallest step, emin − man_bits; highest emax).
    """

    family: str
    signed: tuple[bool, ...] = (True, False)
    overflow: tuple[str, ...] = ("saturate",)
    max_bits: int | None = None
    max_exp_bits: int | None = None
    max_man_bits: int | None = None
    exp_range: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {', '.join(FAMILIES)}; got {self.family!r}")

    def refusal(self, fmt: Format) -> str | None:
        """Why ``fmt`` is outside this rule, or None."""
        if _family(fmt) != self.family:
            return f"not a {self.family} format"
        if isinstance(fmt, FixedFormat):
            if fmt.signed not in self.signed:
                return "unsigned" if not fmt.signed else "signed"
            if fmt.overflow not in self.overflow:
                return f"{fmt.overflow} on overflow"
            if self.max_bits is not None and fmt.bits > self.max_bits:
                return f"{fmt.bits} bits"
        elif isinstance(fmt, FloatFormat):
            if self.max_exp_bits is not None and fmt.exp_bits > self.max_exp_bits:
                return f"{fmt.exp_bits} exponent bits"
            if self.max_man_bits is not None and fmt.man_bits > self.max_man_bits:
                return f"{fmt.man_bits} mantissa bits"
            if self.exp_range is not None and not (fmt.emin - fmt.man_bits >= self.exp_range[0]
                                                   and fmt.emax <= self.exp_range[1]):
                return "exponents out of range"
        return None

    def describe(self) -> str:
        if self.family == "fixed":
            kinds = " or ".join({True: "fixed<IL,FL>", False: "ufixed<IL,FL>"}[s] for s in self.signed)
            parts = [kinds]
            if self.signed == (True,):
                parts.append("signed")
            parts.append(" or ".join("saturating" if o == "saturate" else "wrapping" for o in self.overflow))
            if self.max_bits is not None:
                parts.append(f"IL+FL <= {self.max_bits}")
            return parts[0] + " " + ", ".join(parts[1:])
        if self.family == "float":
            bounds = []
            if self.max_exp_bits is not None:
                bounds.append(f"E <= {self.max_exp_bits}")
            if self.max_man_bits is not None:
                bounds.append(f"M <= {self.max_man_bits}")
            if self.exp_range is not None:
                bounds.append(f"exponents within [{self.exp_range[0]}, {self.exp_range[1]}]")
            return "float<E,M> (eXmY, presets)" + (" with " + ", ".join(bounds) if bounds else "")
        return "block formats bfp<…>"

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"family": self.family}
        if self.family == "fixed":
            out.update(signed=list(self.signed), overflow=list(self.overflow))
        for name in ("max_bits", "max_exp_bits", "max_man_bits"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.exp_range is not None:
            out["exp_range"] = list(self.exp_range)
        return out

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "FamilyRule":
        kw = dict(d)
        for name in ("signed", "overflow", "exp_range"):
            if name in kw:
                kw[name] = tuple(kw[name])
        return cls(**kw)


@dataclass(frozen=True)
class RoleRule:
    """What one role accepts: formats of these families, these exact presets, these roundings."""

    families: tuple[FamilyRule, ...] = ()
    presets: tuple[str, ...] = ()
    roundings: tuple[str, ...] = ("nearest_even",)

    def refusal(self, fmt: Format) -> str | None:
        if any(parse_format(p) == fmt for p in self.presets):
            return None
        reasons = [r for rule in self.families if (r := rule.refusal(fmt)) is not None]
        if len(reasons) < len(self.families):
            return None
        mine = [r for rule, r in zip(self.families, reasons) if rule.family == _family(fmt)]
        return mine[0] if mine else f"a {_family(fmt)} format"

    def describe(self) -> str:
        return "; or ".join([rule.describe() for rule in self.families] + list(self.presets))

    def to_wire(self) -> dict[str, Any]:
        return {"families": [r.to_wire() for r in self.families], "presets": list(self.presets),
                "roundings": list(self.roundings)}

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "RoleRule":
        return cls(tuple(FamilyRule.from_wire(r) for r in d.get("families", [])),
                   tuple(d.get("presets", [])), tuple(d.get("roundings", ("nearest_even",))))


def precision(fmt: FixedFormat | FloatFormat) -> int:
    """Significant bits of the format's values (fixed: the word length, sign included)."""
    return fmt.bits if isinstance(fmt, FixedFormat) else fmt.man_bits + 1


def _quantum(fmt: FixedFormat | FloatFormat) -> Fraction:
    """Every value of the format is an integer multiple of this (exact, never underflows)."""
    if isinstance(fmt, FixedFormat):
        return Fraction(1, 1 << fmt.frac_bits)
    low = fmt.emin - fmt.man_bits if fmt.subnormals else fmt.emin
    return Fraction(2) ** low


def _max_units(fmt: FixedFormat | FloatFormat) -> int:
    """max |value| / quantum, an integer."""
    if isinstance(fmt, FixedFormat):
        return max(-fmt.min_code, fmt.max_code)
    return int(Fraction(fmt.max_value) / _quantum(fmt))


@dataclass(frozen=True)
class Register:
    """A two's-complement fixed-point register ⟨IL, FL⟩ of any width (FixedFormat stops at the
    53 bits float64 holds exactly; an exact dot's register may be wider)."""

    int_bits: int
    frac_bits: int

    @property
    def bits(self) -> int:
        return self.int_bits + self.frac_bits

    @property
    def max_code(self) -> int:
        return (1 << (self.bits - 1)) - 1

    def __repr__(self) -> str:
        return f"fixed<{self.int_bits},{self.frac_bits}>"

    __str__ = __repr__


def exact_dot_format(data: FixedFormat | FloatFormat, offset: FixedFormat, n_features: int,
                     *, difference: bool = True) -> Register:
    """The fixed-point register that holds x·v exactly for every x in ``data`` and v in the offset.

    v is dq = q − q_a (``difference``: one more integer bit than the offset) or q itself. Every
    product is a multiple of u = quantum(data)·ε_offset, and |Σ| ≤ n_features·max|x|·max|v|, so
    a two's-complement register with LSB u and bit_length(that bound / u) + 1 bits never rounds
    or overflows. Returned as fixed<IL,FL> with 2^-FL = u (IL at least 1; a quantum above 1 is
    kept as integer bits).

        >>> exact_dot_format(parse_format("fixed<2,6>"), parse_format("fixed<1,7>"), 65)
        fixed<10,13>
    """
    v_units = (1 << offset.bits) - 1 if difference else max(-offset.min_code, offset.max_code)
    width = (n_features * _max_units(data) * v_units).bit_length() + 1
    u = _quantum(data) * Fraction(1, 1 << offset.frac_bits)
    frac = -int(math.log2(u.numerator)) + int(math.log2(u.denominator))   # u is a power of two
    if frac < 0:          # products are multiples of 2^|frac| > 1: those low zero bits are kept
        width, frac = width - frac, 0
    return Register(max(1, width - frac), frac)


@dataclass(frozen=True)
class KernelCapabilities:
    """A backend's announced capabilities (see the module docstring); travels as plain data."""

    backend: str
    spec: tuple[int, int]
    roles: dict[str, RoleRule]
    exact_dot_bits: int                  # widest exact dot register (two's complement bits)
    exact_product_bits: int              # mixed products narrower than this are exact before R
    problems: tuple[str, ...] = ("linear", "logistic", "softmax")
    algorithms: tuple[str, ...] = ("sgd", "svrg")
    limits: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if set(self.roles) != set(ROLES):
            raise ValueError(f"roles must be exactly {', '.join(ROLES)}; got {', '.join(self.roles)}")

    def accepted(self, role: str) -> str:
        return self.roles[role].describe()

    def check_format(self, role: str, fmt: "Format | str") -> FixedFormat | FloatFormat:
        """The parsed format if ``role`` accepts it; else :class:`CapabilityError` (one line)."""
        try:
            parsed = parse_format(fmt)
        except FormatError as exc:
            raise CapabilityError(role, f"{role}_format: {exc}") from None
        why = self.roles[role].refusal(parsed)
        if why is not None:
            typed = fmt if isinstance(fmt, str) else repr(parsed)
            alias = f" ({parsed!r})" if typed.replace(" ", "") != repr(parsed) else ""
            raise CapabilityError(role, f"{role}_format {typed!r}{alias} is not accepted by the "
                                        f"{self.backend} backend: the {role} takes {self.accepted(role)}")
        return parsed   # type: ignore[return-value]

    def check_rounding(self, role: str, rounding: str) -> None:
        choices = self.roles[role].roundings
        if rounding not in choices:
            raise CapabilityError(role, f"rounding {rounding!r} is not accepted by the {self.backend} "
                                        f"backend for the {role}; choose {' or '.join(choices)}")

    def check_exactness(self, data: FixedFormat | FloatFormat, offset: FixedFormat, acc: FloatFormat,
                        n_features: int) -> None:
        """Refuse formats for which the kernel would round something it specifies as exact."""
        dot = exact_dot_format(data, offset, n_features)
        problems = []
        if dot.bits > self.exact_dot_bits:
            problems.append(f"the exact dot x·dq needs a {dot.bits}-bit register ({dot!r}); "
                            f"this backend has {self.exact_dot_bits}")
        p = precision(acc)
        if p < self.exact_product_bits:   # a product rounded to the backend's own width already is R
            for what, bits in (("x·r", p + precision(data)), ("s·dq", p + offset.bits + 1)):
                if bits > self.exact_product_bits:
                    problems.append(f"{what} needs a {bits}-bit exact product; this backend has "
                                    f"{self.exact_product_bits}")
        if problems:
            raise CapabilityError("data", f"data_format {data!r}, offset_format {offset!r}, acc_format "
                                          f"{acc!r} with {n_features} features: {'; '.join(problems)}; "
                                          "use narrower formats")

    def check_sizes(self, n_samples: int, n_features: int, n_outputs: int) -> None:
        """Raise :class:`CapabilityError` (role "limits") for a problem over an announced size limit."""
        for name, value, limit in (("n_samples", n_samples, "max_samples"),
                                   ("n_features", n_features, "max_features"),
                                   ("n_outputs", n_outputs, "max_outputs"),
                                   ("n_samples × n_features", n_samples * n_features, "max_elements")):
            if limit in self.limits and value > self.limits[limit]:
                raise CapabilityError("limits", f"{name} = {value} is over the accelerator's {limit} = "
                                                f"{self.limits[limit]}")

    def check_run(self, *, data: "Format | str | None", offset: "Format | str", acc: "Format | str",
                  rounding: str, n_features: int | None = None, problem: str | None = None
                  ) -> tuple[FixedFormat | FloatFormat | None, FixedFormat, FloatFormat]:
        """Every check of a configuration, roles in order offset, acc, data.

        ``data`` None (not known yet) skips the data role, ``n_features`` None the exactness
        widths: a host checks what the user typed at once, and the rest once the data is loaded.
        """
        o = self.check_format("offset", offset)
        a = self.check_format("acc", acc)
        d = None if data is None else self.check_format("data", data)
        self.check_rounding("offset", rounding)
        if problem is not None and problem not in self.problems:
            raise CapabilityError("problem", f"problem {problem!r} is not offered by the {self.backend} "
                                             f"backend; it runs {', '.join(self.problems)}")
        if d is not None and n_features is not None:
            self.check_exactness(d, o, a, n_features)   # type: ignore[arg-type]
        return d, o, a   # type: ignore[return-value]

    def summary(self) -> list[str]:
        """One line per role, for people (the ``formats`` field of the capabilities reply)."""
        return [f"{role}: {self.accepted(role)}" for role in ROLES]

    def message_fields(self) -> dict[str, Any]:
        """The fields of a ``capabilities`` reply (all but ``version``) that announce these."""
        return {"backend": self.backend, "formats": self.summary(), "problems": list(self.problems),
                "algorithms": list(self.algorithms), "roundings": list(self.roles["offset"].roundings),
                "limits": dict(self.limits), "spec": list(self.spec),
                "roles": {r: rule.to_wire() for r, rule in self.roles.items()},
                "exactness": {"dot_bits": self.exact_dot_bits, "product_bits": self.exact_product_bits}}

    @classmethod
    def from_message(cls, msg: Any) -> "KernelCapabilities | None":
        """From a ``capabilities`` reply; None when the peer (protocol 1.0) announces no roles."""
        if getattr(msg, "roles", None) is None or getattr(msg, "spec", None) is None:
            return None
        exact = msg.exactness or {}
        return cls(backend=msg.backend, spec=tuple(msg.spec),  # type: ignore[arg-type]
                   roles={r: RoleRule.from_wire(v) for r, v in msg.roles.items()},
                   exact_dot_bits=int(exact.get("dot_bits", 0)),
                   exact_product_bits=int(exact.get("product_bits", 0)),
                   problems=tuple(msg.problems), algorithms=tuple(msg.algorithms), limits=dict(msg.limits))
