"""Codec: round trips of every message type, zero-copy, read-only views, bounded allocation."""
from __future__ import annotations

import tracemalloc

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import messages as m
from protocol.codec import Limits, ProtocolError, decode, encode
from protocol.messages import MESSAGES, Scalar, Tensor, spec_of

FORMATS = ("fixed<1,7>", "fixed<2,14>", "e4m3fn", "bfp<8,16>", "fp32")


def _scalar(spec: Scalar) -> st.SearchStrategy:
    if spec.choices:
        base = st.sampled_from(spec.choices)
    elif spec.format:
        base = st.sampled_from(FORMATS)
    elif spec.kind == "int":
        lo = int(spec.lo) if spec.lo is not None else -2**63
        hi = int(spec.hi) if spec.hi is not None else 2**63 - 1
        base = st.integers(lo, hi)
    elif spec.kind == "float":
        lo = spec.lo if spec.lo is not None else -1e300
        base = st.floats(lo, 1e300).filter(lambda v: v > 0 or not spec.positive)
    elif spec.kind == "str":
        base = st.text(max_size=20)
    elif spec.kind == "list":
        base = st.lists(st.one_of(st.integers(-10, 10), st.text(max_size=5)), max_size=4)
    else:
        base = st.dictionaries(st.text(max_size=8), st.one_of(st.integers(0, 2**40), st.floats(0, 1)),
                               max_size=4)
    return st.one_of(st.none(), base) if spec.optional else base


@st.composite
def _tensor(draw, spec: Tensor):
    dtype = np.dtype(draw(st.sampled_from(spec.dtypes)))
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=spec.ndim, max_size=spec.ndim)))
    if dtype.kind == "f":
        flat = draw(st.lists(st.floats(-1e6, 1e6, width=dtype.itemsize * 8),
                             min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    else:
        flat = draw(st.lists(st.integers(0, 2**31), min_size=int(np.prod(shape)),
                             max_size=int(np.prod(shape))))
    arr = np.array(flat, dtype=dtype).reshape(shape)
    return draw(st.one_of(st.none(), st.just(arr))) if spec.optional else arr


def _message(cls: type) -> st.SearchStrategy:
    fields = {name: (_tensor(spec) if isinstance(spec, Tensor) else _scalar(spec))
              for name, spec in spec_of(cls).items()}
    return st.builds(cls, **fields)


def _equal(a: m.Message, b: m.Message) -> bool:
    for name in spec_of(type(a)):
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            if not (isinstance(y, np.ndarray) and x.dtype == y.dtype and np.array_equal(x, y)):
                return False
        elif x != y or type(x) is not type(y):
            return False
    return True


@pytest.mark.parametrize("mtype", list(MESSAGES))
@settings(max_examples=40, deadline=None)
@given(data=st.data(), seq=st.integers(0, 2**64 - 1), session=st.text(max_size=30))
def test_every_message_type_round_trips(mtype, data, seq, session):
    msg = data.draw(_message(MESSAGES[mtype]))
    env, back = decode(encode(msg, seq, session))
    assert (env.type, env.seq, env.session) == (mtype, seq, session)
    assert type(back) is type(msg) and _equal(msg, back)


def test_tensors_travel_as_raw_frames_without_copy_and_decode_to_read_only_views():
    x = np.arange(12.0).reshape(3, 4)
    frames = encode(m.LoadData(start=5, x=x, y=np.arange(3, dtype="<i8")), 1, "s")
    assert len(frames) == 3
    header = msgpack.unpackb(frames[0])
    assert header["tensors"][0] == {"name": "x", "dtype": "<f8", "shape": [3, 4], "frame": 1}
    assert np.shares_memory(np.frombuffer(frames[1], "<f8"), x)  # zero-copy on the way out
    assert len(frames[0]) < 200                                   # no element in the header
    _, msg = decode([bytes(f) for f in frames])
    assert not msg.x.flags.writeable
    with pytest.raises(ValueError):
        msg.x[0, 0] = 1.0


def test_non_contiguous_and_big_endian_arrays_are_sent_as_little_endian_c_order():
    x = np.arange(12.0).reshape(4, 3).T.astype(">f8")
    _, msg = decode(encode(m.LoadData(start=0, x=x, y=np.zeros(3)), 1, "s"))
    assert msg.x.dtype.str == "<f8" and np.array_equal(msg.x, x)


def test_numpy_scalars_in_fields_encode_as_plain_numbers():
    msg = m.EpochReport(epoch=np.int64(3), steps=np.uint32(7), ops={"mul": np.int64(5)},
                        memory={"dram_read": np.float64(1.5)}, saturations=np.int16(0))
    _, back = decode(encode(msg, 1, "s"))
    assert back == m.EpochReport(3, 7, {"mul": 5}, {"dram_read": 1.5}, 0)


def test_header_declaring_a_trillion_elements_is_refused_without_allocating():
    header = {"v": [1, 1], "type": "load_data", "seq": 1, "session": "s", "body": {"start": 0},
              "tensors": [{"name": "x", "dtype": "<f8", "shape": [10**6, 10**6], "frame": 1},
                          {"name": "y", "dtype": "<f8", "shape": [1], "frame": 2}]}
    frames = [msgpack.packb(header), b"\0" * 8, b"\0" * 8]
    tracemalloc.start()
    with pytest.raises(ProtocolError) as err:
        decode(frames)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert err.value.code == "too_large" and "load_data.x" in err.value.message
    assert peak < 1 << 20


def test_msgpack_array_declaring_4g_elements_in_a_tiny_header_is_malformed():
    # 0xdd = array32 with a 2^32-1 length prefix and no elements behind it.
    with pytest.raises(ProtocolError) as err:
        decode([b"\xdd\xff\xff\xff\xff"])
    assert err.value.code == "malformed"


def test_finite_values_whose_sum_overflows_are_accepted():
    x = np.full((2, 2), 1e308)
    _, msg = decode(encode(m.LoadData(start=0, x=x, y=np.zeros(2)), 1, "s"))
    assert np.array_equal(msg.x, x)


def test_not_finite_names_the_first_bad_element():
    x = np.zeros((3, 3))
    x[1, 2] = -np.inf
    x[2, 0] = np.nan
    with pytest.raises(ProtocolError) as err:
        decode(encode(m.LoadData(start=0, x=x, y=np.zeros(3)), 1, "s"))
    assert err.value.code == "not_finite"
    assert err.value.message == "load_data.x: 2 NaN/Inf values, the first at flat index 5"


def test_limits_reject_bad_values_and_error_codes_are_checked():
    with pytest.raises(ValueError, match="max_frames"):
        Limits(max_frames=0)
    with pytest.raises(ValueError, match="bad_state"):
        ProtocolError("no_such_code", "x")
