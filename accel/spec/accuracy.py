"""How the nonlinearity's accuracy is measured: errors in ulps against a float64 reference.

    >>> import numpy as np
    >>> from protocol.formats import parse_format
    >>> ulp_errors(parse_format("fp32"), np.array([1.0 + 2.0 ** -23]), reference("exp", np.array([0.0])))
    array([1.])

The reference is numpy's float64 libm (exp, expm1; σ from exp(−|x|)), accurate far beyond a
24-bit ulp. This module is the yardstick of ``tests/accel/spec/test_nonlinear.py`` and
``bench/measure_nonlinear.py``; the kernel itself (``accel.spec.nonlinear``) calls no libm.
"""
from __future__ import annotations

import numpy as np

from accel.spec.arith import AccArith
from protocol.formats import FloatFormat

__all__ = ["reference", "ulp_errors"]


def reference(func: str, x: np.ndarray) -> np.ndarray:
    """float64 values of ``func`` ∈ {exp, expm1, sigmoid} at x."""
    with np.errstate(over="ignore"):
        if func == "exp":
            return np.exp(x)
        if func == "expm1":
            return np.expm1(x)
        t = np.exp(-np.abs(x))                 # σ without overflow, as accurate as exp
        return np.where(x > 0, 1.0, t) / (1.0 + t)


def ulp_errors(fmt: FloatFormat, got: np.ndarray, true: np.ndarray) -> np.ndarray:
    """|got − true| in ulps of ``fmt`` at true (a subnormal's ulp: the smallest subnormal);
    0 where got is true rounded (overflow to inf or saturation included), inf on a wrong inf."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        true = np.clip(true, -np.finfo(np.float64).max, np.finfo(np.float64).max)
        rounded = AccArith(fmt).R(true)
        e = np.maximum(np.floor(np.log2(np.abs(true))), fmt.emin)
        err = np.abs(got - true) / np.ldexp(1.0, (e - fmt.man_bits).astype(np.int64))
    err[got == rounded] = 0.0
    err[(got != rounded) & ~np.isfinite(got)] = np.inf
    return err
