"""Training data held at its format's width: the emulated backend's data memory.

    >>> from protocol.formats import parse_format
    >>> d = PackedData(parse_format("fixed<2,6>"), n_samples=3, n_features=2)
    >>> d.put(0, np.array([[0.5, -1.0], [0.015625, 1.984375], [0.0, -2.0]]))
    >>> d.raw.dtype, d.raw.shape, d.itemsize
    (dtype('uint8'), (3, 2), 1)
    >>> d.rows(np.array([1, 0])).tolist()
    [[0.015625, 1.984375], [0.5, -1.0]]

A format of up to 16 bits is held as its bit patterns (``accel.numerics.encode``: uint8 or
uint16 codes) and read back through a table of the 2^bits values it decodes to, which serves
fixed and floating point alike, exactly, in one gather. Wider formats are held as float32 when
every value of the format is a float32 (fixed point up to 24 bits, floats inside float32's
range and precision), else as float64. The compiled kernels read ``raw``'s bytes with ``kind``
and ``table`` (:func:`accel.backends.compiled.decode_row`); the numpy reference reads
:meth:`PackedData.rows`. Values in, values out: the holder never changes what the kernel sees.
"""
from __future__ import annotations

import numpy as np

from accel.numerics import decode, encode
from accel.numerics.quantize import float32_problem
from protocol.formats import FixedFormat, FloatFormat

# How raw's bytes are read (the compiled kernels branch on it): codes through a table, or values.
CODES8, CODES16, VALUES32, VALUES64 = range(4)
_DTYPES = {CODES8: np.uint8, CODES16: np.uint16, VALUES32: np.float32, VALUES64: np.float64}
TABLE_BITS = 16     # a 2^16-entry float64 table is 512 KiB: a gather from L2, once per element and step
PUT_BLOCK = 1 << 18     # elements encoded at a time


def storage(fmt: FixedFormat | FloatFormat) -> tuple[int, np.dtype]:
    """(kind, element dtype) that ``fmt``'s values are held in."""
    if fmt.bits <= 8:
        kind = CODES8
    elif fmt.bits <= TABLE_BITS:
        kind = CODES16
    else:
        kind = VALUES64 if float32_problem(fmt) else VALUES32
    return kind, np.dtype(_DTYPES[kind])


def bytes_per_element(fmt: FixedFormat | FloatFormat) -> int:
    """Bytes one data element takes in the emulated backend (announced in its capabilities)."""
    return storage(fmt)[1].itemsize


class PackedData:
    """n × F values of one format, held at its width (see the module docstring)."""

    def __init__(self, fmt: FixedFormat | FloatFormat, n_samples: int, n_features: int) -> None:
        self.fmt = fmt
        self.kind, dtype = storage(fmt)
        self.raw = np.zeros((n_samples, n_features), dtype=dtype)
        # Code 0 is the value +0 in every format: the zero-filled store reads as zeros.
        self.table = (decode(np.arange(1 << fmt.bits), fmt) if self.kind in (CODES8, CODES16)
                      else np.zeros(0))

    @property
    def itemsize(self) -> int:
        return self.raw.itemsize

    @property
    def nbytes(self) -> int:
        return self.raw.nbytes + self.table.nbytes

    def put(self, start: int, values: np.ndarray) -> None:
        """Store rows ``start…`` from float64 ``values`` that are already values of the format."""
        if self.kind not in (CODES8, CODES16):
            self.raw[start:start + len(values)] = values     # exact: the format's values are the dtype's
            return
        # encode makes several full-size temporaries: a block at a time keeps them small.
        step = max(1, PUT_BLOCK // max(1, values.shape[1]))
        for i in range(0, len(values), step):
            block = values[i:i + step]
            self.raw[start + i:start + i + len(block)] = encode(block, self.fmt)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """float64 values of the rows ``idx`` (in that order)."""
        held = self.raw[idx]
        return self.table[held] if self.table.size else held.astype(np.float64)

    def kernel_args(self) -> tuple[np.ndarray, int, np.ndarray]:
        """(raw as an n × (F·itemsize) byte matrix, kind, table): one signature for every format."""
        return self.raw.view(np.uint8), self.kind, self.table
