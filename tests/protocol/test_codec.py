"""Codec: round trips of every message type, zero-copy, read-only views, bounded allocation,
tensors split over frames (since 1.5) and joined bit for bit."""
from __future__ import annotations

import tracemalloc

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import messages as m
from protocol.codec import Limits, ProtocolError, decode, decode_message, encode, read_envelope
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
    elif spec.kind == "bool":
        base = st.booleans()
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
@given(data=st.data(), seq=st.integers(0, 2**64 - 1), session=st.text(max_size=30),
       frame_bytes=st.one_of(st.none(), st.integers(1, 24)))
def test_every_message_type_round_trips(mtype, data, seq, session, frame_bytes):
    msg = data.draw(_message(MESSAGES[mtype]))
    env, back = decode(encode(msg, seq, session, frame_bytes=frame_bytes),
                       Limits(max_frames=1000))
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
    with pytest.raises(ValueError, match=r"max_frames \(17\) must not exceed max_message_bytes \(16\)"):
        Limits(max_message_bytes=16, max_frames=17)


# ---- tensors over the frame limit (since 1.5) ----------------------------------------------

def test_the_frame_limit_is_derived_so_that_max_frames_frames_fit_the_message_limit():
    assert Limits().max_frame_bytes == 16 << 20
    assert Limits(max_message_bytes=1000, max_frames=3).max_frame_bytes == 333


def _load(x: np.ndarray, y: np.ndarray, frame_bytes: int | None) -> list:
    return encode(m.LoadData(start=0, x=x, y=y), 1, "s", frame_bytes=frame_bytes)


X = np.random.default_rng(0).standard_normal((100, 7))   # 5600 bytes
Y = np.random.default_rng(1).standard_normal(100)         # 800 bytes


def test_a_tensor_over_frame_bytes_is_split_without_copy_and_joined_bit_for_bit():
    # 1000 is not a multiple of 8: a frame may end inside an element.
    frames = _load(X, Y, 1000)
    assert [len(f) for f in frames[1:]] == [1000] * 5 + [600, 800]
    assert [t["frame"] for t in msgpack.unpackb(frames[0])["tensors"]] == [1, 7]
    assert all(np.shares_memory(np.frombuffer(f, np.uint8), X) for f in frames[1:7])
    received = [frames[0], *(bytes(f) for f in frames[1:])]
    _, msg = decode(received)
    assert msg.x.tobytes() == X.tobytes() and msg.x.shape == (100, 7) and msg.x.dtype == "<f8"
    assert not msg.x.flags.writeable
    assert np.shares_memory(msg.y, np.frombuffer(received[7], np.uint8))   # one frame: a view
    assert len(_load(X, Y, 5600)) == 3 and len(_load(X, Y, None)) == 3    # fits: one frame each


def test_release_frees_each_joined_frame_and_keeps_the_one_frame_tensors():
    frames = [bytes(f) for f in _load(X, Y, 1000)]
    env = read_envelope(frames, Limits(max_frames=1000))
    msg = decode_message(env, frames, release=True)
    assert frames[1:7] == [None] * 6 and frames[7] is not None
    assert np.array_equal(msg.x, X) and np.array_equal(msg.y, Y)


def _lie(frames: list, **starts: int) -> list:
    """``frames`` with the header's first frame of the named tensors changed."""
    header = msgpack.unpackb(frames[0])
    for entry in header["tensors"]:
        entry["frame"] = starts.get(entry["name"], entry["frame"])
    return [msgpack.packb(header), *frames[1:]]


@pytest.mark.parametrize("lie,text", [
    (lambda f: _lie(f, y=6), "load_data.x: frames 1..5 hold 5000 bytes; shape [100, 7] of <f8 "
                             "needs 5600"),
    (lambda f: _lie(f, y=8), "load_data.y: frame index 8 is not an unused frame 1..7"),
    (lambda f: _lie(f, y=1), "load_data.y: frame index 1 is not an unused frame 1..7"),
    (lambda f: _lie(f, x=2), "load_data: 7 tensor frames but 2 tensor entries, none at frame 1"),
    (lambda f: f[:3] + f[4:], "load_data.y: frame index 7 is not an unused frame 1..6"),
    (lambda f: f + [b"\0" * 8], "load_data.y: frames 7..8 hold 808 bytes"),    # one too many
], ids=["y starts early", "y starts after the end", "both start at 1", "x starts late",
        "a frame missing", "a frame too many"])
def test_a_header_lying_about_the_frames_is_malformed(lie, text):
    frames = lie([bytes(f) for f in _load(X, Y, 1000)])
    with pytest.raises(ProtocolError) as err:
        decode(frames, Limits(max_frames=1000))
    assert err.value.code == "malformed" and text in err.value.message, err.value


def test_frames_and_total_size_are_checked_however_a_message_is_split():
    frames = _load(X, Y, 400)                     # 1 + 14 + 2 frames
    with pytest.raises(ProtocolError, match="too_large: 17 frames, over the limit of 16"):
        decode(frames)
    with pytest.raises(ProtocolError, match="too_large: message of .* over the limit of 6000"):
        decode(frames, Limits(max_message_bytes=6000, max_frames=100))
    with pytest.raises(ProtocolError, match="too_large: load_data.x: shape .* over the limit of 5000"):
        decode(frames, Limits(max_tensor_bytes=5000, max_frames=100))
