"""Data held at its format's width (accel.backends.packed): what comes back is what went in."""
from __future__ import annotations

import doctest

import numpy as np
import pytest

from accel.backends import compiled, packed
from accel.backends.packed import PackedData, bytes_per_element
from accel.numerics import quantize
from protocol.formats import parse_format

# (format, dtype it is held in, bytes per element)
HOLDERS = [("fixed<2,6>", np.uint8, 1), ("fixed<1,3>", np.uint8, 1), ("e4m3fn", np.uint8, 1),
           ("e5m2", np.uint8, 1), ("fixed<3,13>", np.uint16, 2), ("fp16", np.uint16, 2),
           ("bf16", np.uint16, 2), ("fp16_ibm", np.uint16, 2), ("fixed<4,20>", np.float32, 4),
           ("fp32", np.float32, 4), ("fixed<2,30>", np.float64, 8)]


def _values(fmt, n=4000, f=7):
    """Values of ``fmt`` over its whole range: overflow, the sign of zero, subnormals, ties."""
    rng = np.random.default_rng(len(repr(fmt)))
    x = rng.standard_normal((n, f)) * 2.0 ** rng.integers(-30, 30, (n, f))
    x[:4, :4] = [[0.0, -0.0, 1e300, -1e300], [5e-324, -5e-324, 1.0, -1.0],
                 [0.5, 2.0 ** -20, 3.0, 65504.0], [1e-8, -1e-8, 448.0, -448.0]]
    return quantize(x, fmt)


@pytest.mark.parametrize("text,dtype,size", HOLDERS)
def test_rows_are_the_stored_values_bit_for_bit(text, dtype, size):
    fmt = parse_format(text)
    values = _values(fmt)
    d = PackedData(fmt, n_samples=len(values) + 3, n_features=values.shape[1])
    d.put(3, values)
    assert d.raw.dtype == dtype and d.itemsize == size == bytes_per_element(fmt)
    assert d.raw.nbytes == (len(values) + 3) * values.shape[1] * size
    idx = np.array([5, 3, 3 + len(values) - 1, 0])
    expect = np.vstack([values[[2, 0, len(values) - 1]], np.zeros((1, values.shape[1]))])
    assert d.rows(idx).tobytes() == expect.tobytes()          # −0 and NaN payloads included


@pytest.mark.parametrize("text", ["fixed<2,6>", "fp16", "fixed<4,20>"])
def test_rows_put_in_blocks(text, monkeypatch):
    """put encodes a few rows at a time (bounded temporaries): blocks that do not divide the rows."""
    monkeypatch.setattr(packed, "PUT_BLOCK", 3 * 7 + 1)
    fmt = parse_format(text)
    values = _values(fmt, n=50)
    d = PackedData(fmt, n_samples=60, n_features=values.shape[1])
    d.put(7, values)
    assert d.rows(np.arange(7, 57)).tobytes() == values.tobytes()
    assert not d.rows(np.arange(7)).any() and not d.rows(np.arange(57, 60)).any()


@pytest.mark.parametrize("text,dtype,size", HOLDERS)
def test_the_kernel_decodes_what_rows_returns(text, dtype, size):
    fmt = parse_format(text)
    values = _values(fmt, n=50)
    d = PackedData(fmt, n_samples=50, n_features=values.shape[1])
    d.put(0, values)
    raw, kind, table = d.kernel_args()
    assert raw.dtype == np.uint8 and raw.shape == (50, values.shape[1] * size)
    out = np.empty(values.shape[1])
    for i in range(50):
        compiled.decode_row(raw[i], kind, table, out)
        assert out.tobytes() == d.rows(np.array([i]))[0].tobytes()


def test_module_examples():
    result = doctest.testmod(packed)
    assert result.attempted > 0 and result.failed == 0
