"""Structured fuzzing of a live daemon (docs/protocol.md): valid messages of every request type,
each broken in one way, thrown at a real daemon process through real ZeroMQ sockets.

Usage (what ``bench/bench_fuzz.py`` does with 10^5 cases)::

    with AcceleratorProcess.start(address) as accel:
        fuzzer = Fuzzer(accel)                  # owns the daemon's session
        fuzz(fuzzer, 1000, strict=False)        # counts what went wrong instead of stopping
        fuzzer.tally

A case starts from a message that the spec table of :mod:`protocol.messages` says is valid (each
field drawn from its ``Scalar`` or ``Tensor`` rule) and breaks one thing about it: a field
dropped, added or renamed, a value of the wrong kind, out of its bounds, not finite or not among
its choices, a tensor of the wrong dtype, rank, shape or size, a frame too many or too few, a
header that is not msgpack or has the wrong version, sequence number or session. Other cases
send a valid request in a state that does not allow it (``run_epoch`` before ``load_data``), a
request that disagrees with the configuration, or a valid request from a client that does not
own the session. Each case knows the error codes that name what it broke. For every case:

- the daemon is still alive;
- the reply is an error with one of those codes (never a non-error reply, never ``internal``,
  never silence: the one documented silence, a frame over ``ZMQ_MAXMSGSIZE``, is
  ``test_memory_bomb.py``'s);
- the owner's next ``hello`` (which reopens its session at seq 1) and ``fetch`` are answered.

Edge cases send a valid request with one field at an edge of its spec (a bound, the largest
float, a subnormal, every dtype a tensor takes, a dict with a bytes key): its reply may be an
error, never ``internal``, and an epoch and a fetch after it still are answered.

The request types come from ``REQUESTS``: a type added there is fuzzed with no change here.
"""
from __future__ import annotations

import math
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Callable, Sequence

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, Phase, given, note, seed, settings
from hypothesis import strategies as st

from accel.daemon import STATES
from accel.spec.backend import COUNTERS
from cosim.launch import AcceleratorProcess
from protocol import messages as m
from protocol.channel import AcceleratorError, Client
from protocol.codec import (HEADER_KEYS, MAX_SESSION_CHARS, TENSOR_KEYS, Limits, ProtocolError, decode,
                            encode, encode_parts)
from protocol.formats import FormatError, parse_format
from protocol.messages import ERROR_CODES, REPLIES, REQUESTS, Scalar, Tensor, spec_of

CASES = 10_000
OWNER, CLIENT = "fuzz-owner-session", "fuzzer"     # the owner's session id and client name
OTHER = "fuzz-intruder-session"
REPLY_MS = 60_000     # generous: a kernel variant's first epoch compiles it (seconds; more when busy)
LIMITS = Limits()                                   # the daemon's, as started here

# ---- valid requests that agree with one configuration --------------------------------------

N, F, C = 6, 3, 2
CONFIGURE = m.Configure(problem="softmax", n_samples=N, n_features=F, n_outputs=C,
                        data_format="fixed<2,6>", offset_format="fixed<1,7>", acc_format="fp32",
                        rounding="nearest_even", rbits=0, lanes=2, seed=7, l2=0.0, scale=1.0)
Y = (np.arange(N) % C).astype(np.float64)
LOAD = m.LoadData(start=0, x=np.linspace(-1, 1, N * F).reshape(N, F), y=Y)
RECENTRE = m.Recentre(full_grad=np.full((F, C), 0.25), anchor=np.full((N, C), 1 / C), scale=0.5)
SGD = m.RunEpoch(algorithm="sgd", epoch=1, steps=2, step_size=0.1, batch_size=1,
                 order=np.arange(2, dtype=np.uint32))
RESTORE = m.Restore(offset=np.zeros((F, C)), offset_format="fixed<1,7>", scale=1.0,
                    counters=dict.fromkeys(COUNTERS, 0))
# The request that takes the daemon from the state before each to it.
STEPS = {"configured": CONFIGURE, "loaded": LOAD, "anchored": RECENTRE}

# A valid request and the state it needs: in every state before that one it is refused.
NEEDS = [(LOAD, "configured"), (RECENTRE, "loaded"), (SGD, "loaded"),
         (replace(SGD, algorithm="svrg"), "anchored"), (m.Promote(offset_format="fixed<2,10>"), "configured"),
         (m.Fetch(), "configured"), (RESTORE, "loaded")]
# A request that disagrees with the configuration, the first state that allows its type, and
# the code that says so.
DISAGREE = [
    (replace(CONFIGURE, n_outputs=1), "fresh", "bad_value"),                  # softmax: ≥ 2 classes
    (replace(CONFIGURE, n_samples=2**40), "fresh", "too_large"),
    (replace(LOAD, x=np.zeros((N, F + 1))), "configured", "bad_shape"),
    (replace(LOAD, start=1), "configured", "bad_shape"),                      # rows past n_samples
    (replace(LOAD, y=Y + C), "configured", "bad_value"),                      # labels ≥ classes
    (replace(RECENTRE, full_grad=np.zeros((F, C + 1))), "loaded", "bad_shape"),
    (replace(RECENTRE, anchor=None), "loaded", "missing_field"),              # softmax needs it
    (replace(RECENTRE, anchor=np.full((N, C), 1.5)), "loaded", "bad_value"),  # not probabilities
    (replace(SGD, order=np.array([0, N], dtype=np.uint32)), "loaded", "bad_value"),
    (replace(SGD, steps=3), "loaded", "bad_shape"),                           # order too short
    (replace(RESTORE, offset=np.zeros((F + 1, C))), "loaded", "bad_shape"),
]

# ---- a message on its way out, and the cases ------------------------------------------------


@dataclass(frozen=True)
class Shift:
    """A header's seq: the one the daemon expects, plus ``by``."""
    by: int = 0


SENDER = "<the sender's session id>"   # a header's session until the case is sent


@dataclass
class Wire:
    """A message as it goes out: the header (a map, or whatever a mutation put there), the
    tensor frames, and an edit of the packed header's bytes."""
    header: object
    frames: list[bytes]
    garble: Callable[[bytes], bytes] | None = None

    def parts(self, seq: Callable[[str], int], session: str) -> list[bytes]:
        """The frames to send: ``seq(type)`` and ``session`` fill in what the case left open."""
        header = self.header
        if isinstance(header, dict):
            header = dict(header)
            if isinstance(header.get("seq"), Shift):
                header["seq"] = max(0, seq(header.get("type")) + header["seq"].by)
            if header.get("session") == SENDER:
                header["session"] = session
        packed = msgpack.packb(header)
        return [self.garble(packed) if self.garble else packed, *self.frames]

    @property
    def body(self) -> dict:
        return self.header["body"]

    @property
    def entries(self) -> dict[str, dict]:
        return {e["name"]: e for e in self.header["tensors"]}


def wire_of(msg: m.Message) -> Wire:
    header, frames = encode_parts(msg, 0, "")
    return Wire({**header, "seq": Shift(), "session": SENDER}, [bytes(f) for f in frames])


@dataclass
class Case:
    """A message to send, who sends it, in which daemon state, and the codes that would be right."""
    what: str
    mtype: str
    wire: Wire
    expect: frozenset[str] | None   # None: a valid request, whose reply may be an error but not internal
    family: str
    sender: str = "owner"           # or "other": a client that does not own the session
    state: str | None = None        # the daemon state to send it in; None: any


# ---- valid by the spec ---------------------------------------------------------------------
# Strategies are built once and kept: one built per case (a new list to sample from, a filter
# with a new lambda) costs hypothesis more than the case's round trips.

FORMATS = ("fixed<2,6>", "fixed<1,7>", "fixed<2,10>", "fp32", "e4m3fn", "bfp<8,16>")
BAD_FORMATS = ("", "fixed<", "fixed<2,>", "fixed<0,0>", "fixed<99,99>", "e9m99", "bfp<0,0>", "fp",
               "fixed<" + "9" * 5000 + ",1>")
TEXT, BYTES = st.text(max_size=10), st.binary(max_size=64)
SMALL, SEED = st.integers(0, 4), st.integers(0, 2**32 - 1)


@cache
def _index(n: int) -> st.SearchStrategy[int]:
    return st.sampled_from(range(n))   # evenly; integers() would favour 0 tenfold


def pick(draw, options: Sequence):
    """One of ``options``, drawn evenly."""
    return options[draw(_index(len(options)))]


def other_than(draw, taken) -> str:
    """A text that is not in ``taken``."""
    text = draw(TEXT)
    return text if text not in taken else text + "~"


def _unparsable(text: str) -> bool:
    try:
        parse_format(text)
    except FormatError:
        return True
    return False


@cache
def valid_scalar(spec: Scalar) -> st.SearchStrategy:
    """Values the codec accepts for ``spec``, of every kind a field may have; None (the field left
    out) when it is optional."""
    if spec.choices:
        base = st.sampled_from(spec.choices)
    elif spec.format:
        base = st.sampled_from(FORMATS)
    elif spec.kind in ("int", "float"):
        lo = -2**63 if spec.lo is None and spec.kind == "int" else spec.lo
        hi = 2**64 - 1 if spec.hi is None and spec.kind == "int" else spec.hi
        base = st.integers(lo, hi) if spec.kind == "int" else st.floats(
            0.0 if spec.positive and lo is None else lo, hi, allow_nan=False, allow_infinity=False,
            exclude_min=spec.positive)
    else:
        base = {"str": TEXT, "bool": st.booleans(), "list": st.lists(st.integers(-9, 9), max_size=3),
                "dict": st.dictionaries(TEXT, st.integers(0, 99), max_size=3)}[spec.kind]
    return st.none() | base if spec.optional else base


def valid_tensor(draw, spec: Tensor) -> np.ndarray:
    dtype = np.dtype(pick(draw, spec.dtypes))
    shape = [draw(SMALL) for _ in range(spec.ndim)]
    rng = np.random.default_rng(draw(SEED))
    return (rng.uniform(-2, 2, shape) if dtype.kind == "f" else rng.integers(0, 8, shape)).astype(dtype)


def valid_wire(draw, mtype: str) -> Wire:
    """A ``mtype`` message that passes the codec (its values may still disagree with the daemon's
    configuration or state)."""
    body, table, frames = {}, [], []
    for name, spec in spec_of(REQUESTS[mtype]).items():
        if isinstance(spec, Scalar):
            if (value := draw(valid_scalar(spec))) is not None:
                body[name] = value
        elif not (spec.optional and draw(st.booleans())):
            arr = valid_tensor(draw, spec)
            frames.append(arr.tobytes())
            table.append({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape),
                          "frame": len(frames)})
    return Wire({"v": list(m.PROTOCOL_VERSION), "type": mtype, "seq": Shift(), "session": SENDER,
                 "body": body, "tensors": table}, frames)


# ---- one thing broken ------------------------------------------------------------------------
# Each mutation: ``mutate(draw, wire, specs)`` edits a valid wire with what it draws and says what
# it did and which error codes name that; it goes with ``applies(wire, specs)``, true for a wire
# it can break.

def _scalars(wire: Wire, specs: dict) -> list[str]:
    return [n for n, s in specs.items() if isinstance(s, Scalar)]


def _tensors(wire: Wire, specs: dict) -> list[str]:
    return list(wire.entries)


def _float_tensors(wire: Wire, specs: dict) -> list[str]:
    return [n for n, e in wire.entries.items() if e["dtype"][1] == "f" and specs[n].finite]


def _drop_tensor(wire: Wire, name: str) -> None:
    entry = wire.entries[name]
    del wire.frames[entry["frame"] - 1]
    wire.header["tensors"] = [{**e, "frame": e["frame"] - (e["frame"] > entry["frame"])}
                              for e in wire.header["tensors"] if e is not entry]


def drop_field(draw, wire: Wire, specs: dict):
    name = pick(draw, [n for n, s in specs.items() if not s.optional])
    if name in wire.entries:
        _drop_tensor(wire, name)
    else:
        del wire.body[name]
    return f"without {name}", {"missing_field"}


def add_field(draw, wire: Wire, specs: dict):
    tensors = [n for n, s in specs.items() if isinstance(s, Tensor)]   # a tensor as a field is one too many
    name = pick(draw, tensors) if tensors and draw(st.booleans()) else other_than(draw, specs)
    wire.body[name] = pick(draw, (None, -1, "x", 1.5))
    return f"field {name!r}", {"extra_field"}


def int_key(draw, wire: Wire, specs: dict):
    wire.body[pick(draw, (0, -1, 7))] = 1            # our msgpack maps have str keys only
    return "a field named by an int", {"malformed"}


def rename_field(draw, wire: Wire, specs: dict):
    name, new = pick(draw, _named(wire, specs)), other_than(draw, specs)
    if name in wire.entries:
        wire.entries[name]["name"] = new
        return f"tensor {name} renamed {new!r}", {"extra_field"}
    wire.body[new] = wire.body.pop(name)
    return f"{name} renamed {new!r}", {"extra_field" if specs[name].optional else "missing_field"}


WRONG_KIND = {"int": (1.5, 2.0, "1", True, [1], {"a": 1}, b"\x01"),
              "float": ("1.0", True, [1.0], {"x": 1.0}, b"\x00"),
              "str": (1, 1.5, True, ["a"], {"a": "b"}, b"fixed<2,6>"),
              "bool": (1, "true", [True]),
              "list": ({}, "x", 1),
              "dict": ([], "x", 1)}


def wrong_kind(draw, wire: Wire, specs: dict):
    name = pick(draw, _scalars(wire, specs))
    spec = specs[name]
    wire.body[name] = value = pick(draw, WRONG_KIND[spec.kind] + (() if spec.optional else (None,)))
    return f"{name} = {value!r}", {"bad_type"}


def _bounded(wire: Wire, specs: dict) -> list[str]:
    return [n for n, s in specs.items() if isinstance(s, Scalar) and s.kind in ("int", "float")
            and (s.lo is not None or s.hi is not None or s.positive)]


def _outside(spec: Scalar) -> list:
    """Values just and far outside ``spec``'s bounds that msgpack can carry."""
    out = []
    if spec.kind == "int":
        if spec.lo is not None:
            out += [int(spec.lo) - 1, -2**63]
        if spec.hi is not None and spec.hi < 2**64 - 1:
            out += [int(spec.hi) + 1, 2**64 - 1]
    else:
        if spec.lo is not None:
            out += [math.nextafter(spec.lo, -math.inf), -1e308]
        if spec.hi is not None:
            out += [math.nextafter(spec.hi, math.inf), 1e308]
        if spec.positive:
            out += [0.0, -0.0, -5e-324, -1.0]
    return out


def out_of_bounds(draw, wire: Wire, specs: dict):
    name = pick(draw, _bounded(wire, specs))
    wire.body[name] = value = pick(draw, _outside(specs[name]))
    return f"{name} = {value!r}", {"bad_value"}


def not_finite(draw, wire: Wire, specs: dict):
    name = pick(draw, _floats(wire, specs))
    wire.body[name] = value = pick(draw, (math.nan, math.inf, -math.inf))
    return f"{name} = {value}", {"not_finite"}


def not_a_choice(draw, wire: Wire, specs: dict):
    name = pick(draw, _choosy(wire, specs))
    spec = specs[name]
    if spec.format:
        value = draw(TEXT)
        value = value if _unparsable(value) else pick(draw, BAD_FORMATS)
    else:
        value = pick(draw, [c.upper() for c in spec.choices]) if draw(st.booleans()) else other_than(
            draw, spec.choices)
    wire.body[name] = value
    return f"{name} = {value!r:.40}", {"bad_value"}


WRONG_DTYPES = ("<f2", ">f8", ">u4", "|b1", "<i4", "<u8", "|u1", "|O", "<c16", "|V8", "<M8[s]", "float64",
                "f8", "<U4", "", 8, None, ["<f8"], {"dtype": "<f8"})


def wrong_dtype(draw, wire: Wire, specs: dict):
    name = pick(draw, _tensors(wire, specs))
    wire.entries[name]["dtype"] = dtype = pick(draw, [d for d in WRONG_DTYPES if d not in specs[name].dtypes])
    return f"{name} of dtype {dtype!r}", {"bad_dtype"}


def wrong_rank(draw, wire: Wire, specs: dict):
    name = pick(draw, _tensors(wire, specs))
    ndim = pick(draw, [d for d in range(specs[name].ndim + 3) if d != specs[name].ndim])
    wire.entries[name]["shape"] = shape = [draw(SMALL) for _ in range(ndim)]
    return f"{name} of shape {shape}", {"bad_shape"}


def bad_dims(draw, wire: Wire, specs: dict):
    name = pick(draw, _tensors(wire, specs))
    shape = list(wire.entries[name]["shape"])
    if shape and draw(st.booleans()):
        shape[pick(draw, range(len(shape)))] = pick(draw, (-1, -2**63, 1.0, "2", None, True, [1]))
    else:
        shape = pick(draw, (None, 3, "3", {"rows": 3}))
    wire.entries[name]["shape"] = shape
    return f"{name} of shape {shape!r}", {"malformed"}


def huge_dims(draw, wire: Wire, specs: dict):
    name = pick(draw, _tensors(wire, specs))
    shape = [max(1, d) for d in wire.entries[name]["shape"]]
    shape[pick(draw, range(len(shape)))] = pick(draw, (LIMITS.max_tensor_bytes // 2 + 1, 2**40, 2**64 - 1))
    wire.entries[name]["shape"] = shape
    return f"{name} of shape {shape}", {"too_large"}


def frame_size(draw, wire: Wire, specs: dict):
    name = pick(draw, _tensors(wire, specs))
    i = wire.entries[name]["frame"] - 1
    frame = wire.frames[i]
    delta = pick(draw, (-len(frame), -1, 1, 8) if frame else (1, 8))
    wire.frames[i] = frame[:len(frame) + delta] + bytes(max(delta, 0))
    return f"{name}'s frame {delta:+d} bytes", {"malformed"}


def nan_tensor(draw, wire: Wire, specs: dict):
    name = pick(draw, _float_tensors(wire, specs))
    entry = wire.entries[name]
    arr = np.frombuffer(wire.frames[entry["frame"] - 1], dtype=entry["dtype"]).copy()
    if arr.size == 0:
        arr, entry["shape"] = np.zeros(1, dtype=arr.dtype), [1] * specs[name].ndim
    arr[pick(draw, range(arr.size))] = value = pick(draw, (np.nan, np.inf, -np.inf))
    wire.frames[entry["frame"] - 1] = arr.tobytes()
    return f"{name} holding {value}", {"not_finite"}


def frame_index(draw, wire: Wire, specs: dict):
    name = pick(draw, _tensors(wire, specs))
    others = [e["frame"] for n, e in wire.entries.items() if n != name]
    wire.entries[name]["frame"] = index = pick(
        draw, [0, -1, len(wire.frames) + 1, 2**64 - 1, "1", 1.0, None, True] + others)
    return f"{name} in frame {index!r}", {"malformed"}


def tensor_entry(draw, wire: Wire, specs: dict):
    name = pick(draw, _tensors(wire, specs))
    table = wire.header["tensors"]
    i = table.index(wire.entries[name])
    how = pick(draw, ("drop key", "add key", "not a map", "twice"))
    if how == "drop key":
        del table[i][pick(draw, TENSOR_KEYS)]
    elif how == "add key":
        table[i]["order"] = "C"
    elif how == "not a map":
        table[i] = pick(draw, ([name], name, 1, None))
    else:
        wire.frames.append(wire.frames[table[i]["frame"] - 1])
        table.append({**table[i], "frame": len(wire.frames)})
    return f"{name}'s entry: {how}", {"malformed"}


def frame_count(draw, wire: Wire, specs: dict):
    if wire.frames and draw(st.booleans()):
        wire.frames.pop()
        return "the last frame missing", {"malformed"}
    # Since 1.5 a tensor runs on into the frames after its first: an empty one is a valid split.
    wire.frames.append(draw(BYTES) or b"\x00")
    return "a frame more", {"malformed"}


def too_many_frames(draw, wire: Wire, specs: dict):
    wire.frames += [b""] * (LIMITS.max_frames - len(wire.frames) + pick(draw, (0, 1, 30)))
    return f"{len(wire.frames) + 1} frames", {"too_large"}


def header_too_large(draw, wire: Wire, specs: dict):
    wire.body["pad"] = "x" * LIMITS.max_header_bytes
    return "a header over the limit", {"too_large"}


def not_msgpack(draw, wire: Wire, specs: dict):
    how = pick(draw, ("garbage", "cut", "trailing"))
    if how == "garbage":
        garbage = draw(BYTES)
        wire.garble = lambda _: garbage
        # Random bytes may still be a map with a version in it.
        return f"header {garbage!r:.40}", {"malformed", "bad_version"}
    if how == "cut":
        keep = pick(draw, (0.0, 0.1, 0.5, 0.9, 0.99))
        wire.garble = lambda b: b[:int(len(b) * keep)]
        return f"header cut to {keep:.0%}", {"malformed"}
    tail = draw(BYTES) or b"\xc0"
    wire.garble = lambda b: b + tail
    return f"header followed by {tail!r}", {"malformed"}


def not_a_map(draw, wire: Wire, specs: dict):
    wire.header = value = pick(draw, ([1, 4], "hello", 1, None, b"\x80", [{"v": [1, 4]}]))
    return f"header {value!r:.40}", {"malformed"}


BAD_VERSIONS = ([2, 0], [0, 4], [1], [1, 4, 0], "1.4", 1.4, [1, -1], [1, "4"], True, None, 2, 0,
                [True, 4], [1, True], [], {"major": 1})


def bad_version(draw, wire: Wire, specs: dict):
    if draw(st.booleans()):
        del wire.header["v"]
        return "no version", {"malformed"}
    wire.header["v"] = v = pick(draw, BAD_VERSIONS)
    return f"version {v!r}", {"bad_version"}


def header_keys(draw, wire: Wire, specs: dict):
    if draw(st.booleans()):
        key = pick(draw, HEADER_KEYS[1:])
        del wire.header[key]
        return f"header without {key}", {"malformed"}
    wire.header[key := other_than(draw, HEADER_KEYS)] = 1
    return f"header with {key!r}", {"malformed"}


def bad_type(draw, wire: Wire, specs: dict):
    if draw(st.booleans()):
        wire.header["type"] = t = pick(draw, (1, None, b"fetch", ["fetch"]))
        return f"type {t!r}", {"malformed"}
    t = pick(draw, sorted(REPLIES)) if draw(st.booleans()) else other_than(draw, REQUESTS)
    wire.header["type"] = t
    return f"type {t!r}", {"unknown_type"}


def bad_seq(draw, wire: Wire, specs: dict):
    if draw(st.booleans()):
        wire.header["seq"] = s = pick(draw, (-1, -2**63, 1.0, "3", None, True, [3]))
        return f"seq {s!r}", {"malformed"}
    wire.header["seq"] = s = Shift(pick(draw, (-1, 1, 2, 2**32)))
    return f"seq {s.by:+d}", {"bad_sequence"}


def bad_session(draw, wire: Wire, specs: dict):
    if draw(st.booleans()):
        wire.header["session"] = s = pick(draw, (1, None, b"fuzz", ["fuzz"], "s" * (MAX_SESSION_CHARS + 1)))
        return f"session {s!r:.40}", {"malformed"}
    wire.header["session"] = s = other_than(draw, (OWNER,))
    # A hello from another session id claims the session, refused while the owner's is not idle.
    return f"session {s!r}", {"busy" if wire.header["type"] == "hello" and s else "bad_session"}


def bad_sections(draw, wire: Wire, specs: dict):
    if draw(st.booleans()):
        wire.header["body"] = b = pick(draw, ([1], "x", None, 1))
        return f"body {b!r}", {"malformed"}
    wire.header["tensors"] = t = pick(draw, ({}, "x", None, 1))
    return f"tensors {t!r}", {"malformed"}


def _always(wire: Wire, specs: dict) -> bool:
    return True


def _required(wire: Wire, specs: dict) -> list[str]:
    return [n for n, s in specs.items() if not s.optional]


def _named(wire: Wire, specs: dict) -> list[str]:
    return [n for n in specs if n in wire.body or n in wire.entries]


def _floats(wire: Wire, specs: dict) -> list[str]:
    return [n for n, s in specs.items() if isinstance(s, Scalar) and s.kind == "float"]


def _choosy(wire: Wire, specs: dict) -> list[str]:
    return [n for n, s in specs.items() if isinstance(s, Scalar) and (s.choices or s.format)]


MUTATIONS = [
    (drop_field, _required), (add_field, _always), (int_key, _always), (rename_field, _named),
    (wrong_kind, _scalars), (out_of_bounds, _bounded), (not_finite, _floats), (not_a_choice, _choosy),
    (wrong_dtype, _tensors), (wrong_rank, _tensors), (bad_dims, _tensors), (huge_dims, _tensors),
    (frame_size, _tensors), (nan_tensor, _float_tensors), (frame_index, _tensors), (tensor_entry, _tensors),
    (frame_count, _always), (too_many_frames, _always), (not_msgpack, _always), (not_a_map, _always),
    (bad_version, _always), (header_keys, _always), (bad_type, _always), (bad_seq, _always),
    (bad_session, _always), (bad_sections, _always), (header_too_large, _always),
]
TYPES = sorted(REQUESTS)


@st.composite
def broken(draw) -> Case:
    """A valid message of any request type with one thing broken, from the session's owner."""
    mtype = pick(draw, TYPES)
    wire, specs = valid_wire(draw, mtype), spec_of(REQUESTS[mtype])
    mutate = pick(draw, [mut for mut, applies in MUTATIONS if applies(wire, specs)])
    what, expect = mutate(draw, wire, specs)
    return Case(f"{mtype}: {what}", mtype, wire, frozenset(expect), mutate.__name__)


@st.composite
def intruding(draw) -> Case:
    """A valid message of any request type (shutdown and bye too) from a client that does not
    own the session."""
    mtype = pick(draw, TYPES)
    expect = "busy" if mtype == "hello" else "bad_session"
    return Case(f"{mtype} from another client", mtype, valid_wire(draw, mtype), frozenset({expect}),
                "intruder", sender="other")


@st.composite
def out_of_order(draw) -> Case:
    """A valid request in a state that does not allow it yet."""
    msg, need = pick(draw, NEEDS)
    state = pick(draw, STATES[:STATES.index(need)])
    return Case(f"{msg.TYPE} when {state}", msg.TYPE, wire_of(msg), frozenset({"bad_state"}), "out_of_order",
                state=state)


@st.composite
def disagreeing(draw) -> Case:
    """A request that the codec accepts but that disagrees with the daemon's configuration."""
    i = pick(draw, range(len(DISAGREE)))
    msg, first, code = DISAGREE[i]
    state = pick(draw, STATES[STATES.index(first):])
    return Case(f"{msg.TYPE} #{i} when {state}", msg.TYPE, wire_of(msg), frozenset({code}), "disagreeing",
                state=state)


# A valid request and the state that allows it, for edge values of its fields.
EDGE_BASES = [(CONFIGURE, "fresh"), (LOAD, "configured"), (RECENTRE, "loaded"), (SGD, "loaded"),
              (replace(SGD, algorithm="svrg"), "anchored"),
              (m.Promote(offset_format="fixed<2,10>"), "configured"),
              (RESTORE, "loaded")]
BIG = 1.7976931348623157e308
EDGE_FORMATS = FORMATS + ("fp64", "e2m1", "fixed<1,52>", "float<11,52>", "ufixed<2,6>", "fixed<2,6,wrap>")


def _edges(spec: Scalar | Tensor, value) -> list:
    """Values at the edges of what ``spec`` allows, from the valid ``value`` of a request."""
    if isinstance(spec, Tensor):
        out = [value.astype(d) for d in spec.dtypes]
        if value.dtype.kind == "f":
            fin = np.finfo(value.dtype)
            return out + [np.full_like(value, v) for v in (fin.max, -fin.max, fin.smallest_subnormal, -0.0)]
        return out + [np.full_like(value, np.iinfo(value.dtype).max)]
    if spec.kind in ("int", "float"):
        lo = -math.inf if spec.lo is None else spec.lo
        hi = math.inf if spec.hi is None else spec.hi
        tries = ([lo, lo + 1, hi, hi - 1, 0, 1, 2**63 - 1, 2**64 - 1, -2**63] if spec.kind == "int" else
                 [lo, hi, 0.0, -0.0, 5e-324, 2.2250738585072014e-308, BIG, -BIG])
        out = [v for v in tries if lo <= v <= hi and math.isfinite(v) and (v > 0 or not spec.positive)]
        out = [int(v) for v in out] if spec.kind == "int" else out
    elif spec.choices:
        out = list(spec.choices)
    elif spec.format:
        out = list(EDGE_FORMATS)
    elif spec.kind == "dict":
        keys = list(value or {"k": 0})
        out = [{}, {**value, keys[0]: 2**64 - 1}, {**value, keys[0]: 2**63 - 1}, {**value, b"k": 0},
               {**value, "k": [1, {"y": None}]}, dict.fromkeys(keys, -1)]
    elif spec.kind == "list":
        out = [[], [2**64 - 1], [[1, 2], None]]
    else:
        out = ["", "\x00", "é" * 300] if spec.kind == "str" else [True, False]
    return out + [None] if spec.optional else out


@st.composite
def edge(draw) -> Case:
    """A valid request, in a state that allows it, with one field at an edge of its spec."""
    msg, state = pick(draw, EDGE_BASES)
    specs = spec_of(type(msg))
    name = pick(draw, list(specs))
    value = pick(draw, _edges(specs[name], getattr(msg, name)))
    what = f"{msg.TYPE}.{name} = {value!r:.60}" if not isinstance(value, np.ndarray) else \
        f"{msg.TYPE}.{name} of {value.dtype.str} {value.reshape(-1)[:1]}"
    return Case(what, msg.TYPE, wire_of(replace(msg, **{name: value})), None, "edge", state=state)


# One case in 20 of each other kind, the rest broken messages.
KINDS = [intruding(), out_of_order(), disagreeing(), edge()] + [broken()] * 16


@st.composite
def cases(draw) -> Case:
    return draw(pick(draw, KINDS))


# ---- the daemon's side -----------------------------------------------------------------------

@dataclass
class Tally:
    """What the cases did: counts by request type, mutation and reply code, and what went wrong."""
    cases: int = 0
    died: int = 0
    accepted: int = 0           # a non-error reply to invalid input
    silent: int = 0             # no reply
    wrong_code: int = 0         # an error, but internal or not one that names what was broken
    types: Counter = field(default_factory=Counter)
    families: Counter = field(default_factory=Counter)
    codes: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)   # the first few, for a report


class DaemonGone(AssertionError):
    """The daemon stopped answering or exited."""


class Fuzzer:
    """Sends cases to a daemon as the owner of its session and judges the replies.

    Each case starts from a known state: the owner's session open and the daemon in
    ``self.state``, driven forward with valid requests or back with ``bye``. After each case the
    owner's hello (which reopens its session at seq 1) and fetch go at once, without waiting for
    the case's reply: the daemon takes one connection's messages in order, and one wake-up of it
    serves all three.
    """

    def __init__(self, accel: AcceleratorProcess) -> None:
        self.accel = accel
        self.ctx = zmq.Context()
        self.owner, self.other = self._socket(), self._socket()
        self.seq = 0
        self.state = "fresh"
        self.dead = False
        self.tally = Tally()
        self.request(m.Hello(client=CLIENT))

    def _socket(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.accel.address)
        return sock

    def close(self) -> None:
        """End the session (the daemon is free for the next client at once) and the sockets."""
        if not self.dead:
            with suppress(AssertionError):   # a session a failed case left in disorder: its lease ends it
                self.request(m.Bye())
        self.owner.close()
        self.other.close()
        self.ctx.term()

    def receive(self, sock: zmq.Socket) -> tuple[m.Message, int, str] | None:
        """The next reply on ``sock`` with its seq and session, or None if none came."""
        while sock.poll(REPLY_MS):
            env, reply = decode(sock.recv_multipart(), types=REPLIES)
            if not isinstance(reply, m.Progress):
                return reply, env.seq, env.session
        return None

    def send(self, msg: m.Message) -> int:
        """Send a valid request as the owner; its seq."""
        self.seq = 1 if isinstance(msg, m.Hello) else self.seq + 1
        self.owner.send_multipart(encode(msg, self.seq, OWNER))
        return self.seq

    def check(self, msg: m.Message, seq: int) -> m.Message:
        """The reply to the owner's ``msg`` of ``seq``, which must be the one it asks for (a fetch
        before configure: ``bad_state``)."""
        got = self.receive(self.owner)
        if got is None:
            raise DaemonGone(f"no reply to the owner's {msg.TYPE} within {REPLY_MS} ms")
        reply, rseq, rsession = got
        assert (rseq, rsession) == (seq, OWNER), (msg.TYPE, reply, rseq, rsession)
        refused = isinstance(reply, m.Error) and reply.code == "bad_state"
        if not (msg.TYPE == "fetch" and (self.state == "fresh" and refused or self.state == "unknown")):
            assert reply.TYPE == msg.REPLY, f"{msg.TYPE} in state {self.state} answered {reply}"
        return reply

    def request(self, msg: m.Message) -> m.Message:
        return self.check(msg, self.send(msg))

    def drive(self, state: str) -> None:
        """Bring the daemon to ``state``: back to fresh with bye, then forward step by step."""
        if self.state == "unknown" or STATES.index(state) < STATES.index(self.state):
            self.request(m.Bye())
            self.request(m.Hello(client=CLIENT))
            self.state = "fresh"
        for step in STATES[STATES.index(self.state) + 1:STATES.index(state) + 1]:
            self.request(STEPS[step])
            self.state = step

    def run(self, case: Case) -> list[str]:
        """Send ``case``; what went wrong (nothing, when the daemon did all it should)."""
        if self.dead or self.accel.returncode is not None:
            self.tally.died += not self.dead
            self.dead = True
            return [f"the daemon is dead (exit code {self.accel.returncode})"]
        if case.state is not None:
            self.drive(case.state)
        tally = self.tally
        tally.cases += 1
        tally.types[case.mtype] += 1
        tally.families[case.family] += 1
        sock, session = (self.owner, OWNER) if case.sender == "owner" else (self.other, OTHER)
        sock.send_multipart(case.wire.parts(self._seq_for, session))
        follow = [(msg, self.send(msg)) for msg in (m.Hello(client=CLIENT), m.Fetch())]
        problems = []
        try:
            got = self.receive(sock)
        except ProtocolError as exc:
            got = None
            problems.append(f"a reply that is not a valid protocol message: {exc}")
        went_through = False
        if got is None:
            tally.silent += 1
            problems.append("no reply")
            for old in (self.owner, self.other):   # a late reply must not be read as the next one's
                old.close()
            self.owner, self.other = self._socket(), self._socket()
            follow = [(msg, self.send(msg)) for msg, _ in follow]
        elif isinstance(got[0], m.Error):
            code = got[0].code
            tally.codes[code] += 1
            if code == "internal" or (case.expect is not None and code not in case.expect):
                tally.wrong_code += 1
                want = sorted(case.expect or ["not internal"])
                problems.append(f"{code}: {got[0].message:.300}; expected {want}")
        else:
            went_through, self.state = True, "unknown"     # it may have changed the state
            if case.expect is not None:
                tally.accepted += 1
                problems.append(f"accepted: {got[0]}")
        try:
            for msg, seq in follow:
                self.check(msg, seq)
            if went_through and case.expect is None:
                problems += self.carry_on()
        except (AssertionError, ProtocolError, zmq.ZMQError) as exc:
            problems.append(f"the owner's next requests: {exc}")
        if self.accel.returncode is not None:
            tally.died += 1
            self.dead = True
            problems.append(f"the daemon died (exit code {self.accel.returncode})")
        if problems and len(tally.problems) < 20:
            tally.problems.append(f"{case.what}: {'; '.join(problems)}")
        return problems

    def carry_on(self) -> list[str]:
        """After a valid request with an edge value went through: an epoch and a fetch are still
        answered, with what they ask for or an error that names a cause (never ``internal``)."""
        problems = []
        for msg in (SGD, m.Fetch()):
            self.send(msg)
            got = self.receive(self.owner)
            if got is None or (isinstance(got[0], m.Error) and got[0].code == "internal"):
                problems.append(f"then {msg.TYPE}: {got and got[0]}")
        return problems

    def _seq_for(self, mtype: object) -> int:
        return 1 if mtype == "hello" else self.seq + 1


def fuzz(fuzzer: Fuzzer, n: int, *, strict: bool, seed_: int | None = None) -> None:
    """Run ``n`` cases through ``fuzzer``: derandomized (the same cases every run) unless
    ``seed_`` is given. ``strict``: a case that goes wrong fails (and hypothesis shrinks it);
    otherwise it is counted in ``fuzzer.tally`` and the run goes on."""
    @settings(max_examples=n, database=None, deadline=None, derandomize=seed_ is None,
              phases=(Phase.explicit, Phase.generate, Phase.shrink) if strict else (Phase.generate,),
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(case=cases())
    def one(case: Case) -> None:
        note(case.what)
        problems = fuzzer.run(case)
        assert not (strict and problems), problems

    (one if seed_ is None else seed(seed_)(one))()


# ---- tests -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with AcceleratorProcess.start(f"ipc://{tmp_path_factory.mktemp('fuzz')}/a.sock") as accel:
        yield accel


@pytest.mark.slow
def test_ten_thousand_broken_messages_each_get_the_error_that_names_them(daemon):
    fuzzer = Fuzzer(daemon)
    try:
        fuzz(fuzzer, CASES, strict=True)
    finally:
        fuzzer.close()
    tally = fuzzer.tally
    assert tally.cases >= CASES and tally.problems == []
    # Every request type, every mutation, every error code a request can earn was seen.
    assert set(tally.types) == set(REQUESTS)
    assert set(tally.families) == {f.__name__ for f, _ in MUTATIONS} | {
        "intruder", "out_of_order", "disagreeing", "edge"}
    assert set(tally.codes) == set(ERROR_CODES) - {"internal", "session_lost"}
    assert daemon.returncode is None and "Traceback" not in daemon.output()


# ---- what the fuzzer found -------------------------------------------------------------------

@pytest.mark.parametrize("counters", [
    {**RESTORE.counters, "steps": 2**64 - 1},     # accepted once; an epoch later fetch could not reply
    {**{k: 0 for k in COUNTERS if k != "steps"}, b"steps": 0},   # once a TypeError: internal
    {**RESTORE.counters, b"extra": 0},
], ids=["steps 2^64-1", "a bytes key", "an extra bytes key"])
def test_restore_refuses_counters_unlike_those_fetch_returns(daemon, counters):
    with Client(daemon.address, timeout=20) as client:
        for msg in (m.Hello(client="restore"), CONFIGURE, LOAD):
            client.request(msg)
        with pytest.raises(AcceleratorError, match=r"^bad_value: counters: the integers epochs, steps, "):
            client.request(replace(RESTORE, counters=counters))
        client.request(replace(RESTORE, counters={**RESTORE.counters, "steps": 2**63 - 1}))   # the largest
        client.request(SGD)
        assert client.request(m.Fetch()).counters["steps"] == 2**63 - 1 + SGD.steps
