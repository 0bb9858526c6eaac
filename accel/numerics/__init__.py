"""accel.numerics: the executable specification of the accelerator's arithmetic.

    >>> import numpy as np
    >>> from accel.numerics import quantize, encode, decode
    >>> y = quantize(np.array([0.1, 1000.0]), "e4m3fn")
    >>> y.tolist(), encode(y, "e4m3fn").tolist(), decode(encode(y, "e4m3fn"), "e4m3fn").tolist()
    ([0.1015625, 448.0], [29, 126], [0.1015625, 448.0])

Definitions (rounding, the random-bit recipe, overflow, blocks) are in docs/numerics.md.
"""
from .accumulate import accumulate, dot
from .codec import decode, encode
from .quantize import block_exponents, quantize
from .rng import LaneRNG
from .rounding import ROUNDINGS

__all__ = ["quantize", "encode", "decode", "LaneRNG", "ROUNDINGS", "block_exponents", "accumulate", "dot"]
