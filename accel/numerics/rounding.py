"""Rounding-mode names and the integer codes the compiled kernels switch on.

    >>> mode_code("nearest_even")
    0
    >>> mode_code("ties_away")
    Traceback (most recent call last):
    ...
    ValueError: rounding must be one of 'nearest_even', 'nearest_away', 'toward_zero', 'up', 'down', 'odd', 'stochastic'; got 'ties_away'
"""
from __future__ import annotations

# The protocol names the modes; the position in its tuple is the code the kernels switch on.
from protocol.messages import ROUNDINGS

NEAREST_EVEN, NEAREST_AWAY, TOWARD_ZERO, UP, DOWN, ODD, STOCHASTIC = range(len(ROUNDINGS))


def mode_code(rounding: str) -> int:
    """Kernel code of a rounding-mode name; rejects unknown names listing the valid ones."""
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {', '.join(map(repr, ROUNDINGS))}; got {rounding!r}")
    return ROUNDINGS.index(rounding)


def rbits_code(rbits: int | None) -> int:
    """Random bits per stochastic rounding: 1..32; None means the whole discarded width capped at 32.

    Taking r = 32 whenever fewer bits are discarded gives exactly the same outcomes as r = the
    discarded width (the fraction's extra low bits are zero, see docs/numerics.md), so None is 32.
    """
    if rbits is None:
        return 32
    if isinstance(rbits, bool) or not isinstance(rbits, int) or not 1 <= rbits <= 32:
        raise ValueError(f"rbits must be an integer 1..32 or None (whole discarded width); got {rbits!r}")
    return rbits
