"""The accumulator-format ALU of kernel spec v2: every operation rounds its exact result once.

    >>> import numpy as np
    >>> from protocol.formats import parse_format
    >>> A = AccArith(parse_format("bf16"))
    >>> A.add(np.array([1.0]), np.array([2.0 ** -9]))     # 1 + 2^-9 is a tie in bf16: to even
    array([1.])
    >>> float(A.div(1.0, 3.0))                                # 1/3 to 8 significant bits
    0.333984375

``R`` rounds a float64 value to nearest-even in the accumulator format. For the formats the
spec admits (fp64, or at most 24 stored mantissa bits with exponents well inside float64's)
a float64 +, −, ×, ÷ followed by R is the correctly rounded operation (Figueroa, "When is
double rounding innocuous?", SIGNUM 1995: 53 ≥ 2p + 2), so each method below is one
correctly rounded operation of the format. Exponent shifts (``ldexp``), round-to-integer
(``rint``) and comparisons are exact in float64 before R.

:class:`CountingArith` is the same ALU that also counts what it performs, element by element,
under keys ``"<op> <format>"`` (``docs/accelerator.md``, "Operation counts"); the emulated
backend's counting mode runs its kernels on it, and the tests compare the tallies with the
analytic counts of :mod:`accel.spec.counts`.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

import numpy as np

from accel.numerics import quantize
from accel.spec.backend import KernelError
from protocol.formats import PRESETS, FloatFormat

Rounder = Callable[[np.ndarray], np.ndarray]


def _round_fp32(v) -> np.ndarray:
    # One cast does float64 → float32 with IEEE nearest-even (subnormals included); overflow
    # gives ±inf, the format's rule: callers that may overflow run under errstate(over="ignore").
    return np.asarray(v, dtype=np.float32).astype(np.float64)


def acc_rounder(fmt: FloatFormat) -> Rounder:
    """R: round float64 values to nearest-even in ``fmt``, as float64.

    fp64 is native; fp32 is the float64 → float32 cast; any other format goes through
    ``accel.numerics.quantize``. Overflow follows the format's rule (fp32: ±inf).
    """
    if fmt == PRESETS["fp64"]:
        return lambda v: np.asarray(v, dtype=np.float64)
    if fmt == PRESETS["fp32"]:
        return _round_fp32
    return lambda v: quantize(np.asarray(v, dtype=np.float64), fmt, "nearest_even")


def rounded_scale(A: AccArith, scale: float) -> float:
    """R(scale), refused unless finite and > 0 (every backend stores the scale this way)."""
    with np.errstate(over="ignore"):
        s = float(A.round(np.array(scale)))
    if not (np.isfinite(s) and s > 0):
        raise KernelError(f"scale {scale!r} rounds to {s!r} in acc_format {A.name}; it must stay "
                          "finite and > 0")
    return s


class AccArith:
    """Correctly rounded operations of one accumulator format on float64 arrays.

    Operands are float64 arrays (or scalars) whose values the format holds; results are too.
    """

    def __init__(self, fmt: FloatFormat) -> None:
        self.fmt = fmt
        self.name = repr(fmt)
        self.R = acc_rounder(fmt)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"

    def tally(self, key: str, n: int) -> None:
        """Count ``n`` operations named ``key`` (nothing outside counting mode)."""

    def round(self, x) -> np.ndarray:
        """R(x): a wider or exact value into the format (a conversion)."""
        return self.R(x)

    def add(self, a, b) -> np.ndarray:
        return self.R(np.add(a, b))

    def sub(self, a, b) -> np.ndarray:
        return self.R(np.subtract(a, b))

    def mul(self, a, b) -> np.ndarray:
        return self.R(np.multiply(a, b))

    def div(self, a, b) -> np.ndarray:
        return self.R(np.divide(a, b))

    def ldexp(self, a, n) -> np.ndarray:
        """R(a · 2^n) for integer-valued n: exact but for subnormal results and overflow."""
        return self.R(np.ldexp(a, np.asarray(n, dtype=np.int64)))

    def rint(self, a) -> np.ndarray:
        """The nearest integer, ties to even (exact: the format holds every integer it rounds to)."""
        return np.rint(a)

    def clamp(self, a, lo: float, hi: float) -> np.ndarray:
        """min(max(a, lo), hi): two comparisons per element."""
        return np.clip(a, lo, hi)

    def rowmax(self, a: np.ndarray) -> np.ndarray:
        """Largest element of each row (C − 1 comparisons per row), shape (rows, 1)."""
        self.tally(f"cmp {self.name}", a.shape[0] * (a.shape[1] - 1))
        return a.max(axis=1, keepdims=True)

    def rowsum(self, a: np.ndarray) -> np.ndarray:
        """Σ_k a[:, k] left to right, each add rounded, shape (rows, 1)."""
        s = a[:, :1]
        for k in range(1, a.shape[1]):
            s = self.add(s, a[:, k:k + 1])
        return s


class CountingArith(AccArith):
    """:class:`AccArith` that counts every operation it performs in ``self.ops``."""

    def __init__(self, fmt: FloatFormat) -> None:
        super().__init__(fmt)
        self.ops: Counter = Counter()

    def tally(self, key: str, n: int) -> None:
        if n:
            self.ops[key] += int(n)

    def _count(self, op: str, out: np.ndarray, per_element: int = 1) -> np.ndarray:
        key = f"{op} {self.name}" + (" nearest_even" if op == "round" else "")
        self.ops[key] += per_element * int(np.size(out))
        return out

    def round(self, x) -> np.ndarray:
        return self._count("round", super().round(x))

    def add(self, a, b) -> np.ndarray:
        return self._count("add", super().add(a, b))

    def sub(self, a, b) -> np.ndarray:
        return self._count("add", super().sub(a, b))

    def mul(self, a, b) -> np.ndarray:
        return self._count("mul", super().mul(a, b))

    def div(self, a, b) -> np.ndarray:
        return self._count("div", super().div(a, b))

    def ldexp(self, a, n) -> np.ndarray:
        return self._count("ldexp", super().ldexp(a, n))

    def rint(self, a) -> np.ndarray:
        return self._count("rint", super().rint(a))

    def clamp(self, a, lo: float, hi: float) -> np.ndarray:
        return self._count("cmp", super().clamp(a, lo, hi), per_element=2)
