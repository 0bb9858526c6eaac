"""Wire format: a msgpack header frame plus the tensors' raw frames (ZeroMQ multipart).

Example::

    >>> from protocol.messages import Fetch
    >>> frames = encode(Fetch(), seq=2, session="run-1")
    >>> env, msg = decode(frames)
    >>> env.type, env.seq, env.version, msg
    ('fetch', 2, (1, 6), Fetch())

Frame 0 is the header, a msgpack map with exactly these keys::

    {"v": [1, 6], "type": "load_data", "seq": 3, "session": "run-1",
     "body": {"start": 0},                                   # scalar fields
     "tensors": [{"name": "x", "dtype": "<f8", "shape": [100, 64], "frame": 1}, ...]}

Frames 1..n hold the tensors' bytes, little-endian, C order. A tensor takes the frames from its
``"frame"`` up to the next tensor's first frame (or the last frame): one frame each before 1.5;
since 1.5 a sender may split a tensor over consecutive frames (``frame_bytes``), so that no frame
is over the receiver's frame limit (:attr:`Limits.max_frame_bytes`). :func:`encode` only
normalises representation (numpy scalars to Python numbers, arrays to contiguous
little-endian frames, without copying when they already are); it does not check values,
so a test can send an out-of-range field through it. :func:`decode` checks everything in
the spec table of :mod:`protocol.messages` and raises :class:`ProtocolError` with a code
from ``ERROR_CODES`` and a message naming the field.

Decoded arrays are **read-only views** onto the received frames (no copy) for a tensor of one
frame, and read-only arrays joined from its frames for a split one; copy them to modify.
Nothing is allocated from a declared size before that size has been checked against
:class:`Limits` and against the frames that carry the bytes.

Versions: ``"v"`` is ``[major, minor]`` (a bare ``1`` is the 1.0 form and reads as (1, 0)).
Every function takes the local ``version`` (default :data:`PROTOCOL_VERSION`), so a test can
play an older or newer peer. A receiver refuses another major (``bad_version``); from a peer
of a higher minor it ignores body fields and tensors it does not know, and still validates
every one it does. Example::

    >>> frames = encode(Fetch(), seq=2, session="run-1", version=(1, 6))
    >>> decode(frames)[0].version
    (1, 6)
    >>> decode(encode(Fetch(), 2, "run-1", version=(2, 0)))
    Traceback (most recent call last):
    protocol.codec.ProtocolError: bad_version: protocol version 2.0; this side speaks 1.6 (majors must match)

Split tensors (since 1.5)::

    >>> from protocol.messages import Recentre
    >>> frames = encode(Recentre(full_grad=np.zeros((4, 2)), anchor=np.ones((100, 2))), 3, "run-1",
    ...                 frame_bytes=1024)
    >>> [len(f) for f in frames[1:]], [t["frame"] for t in msgpack.unpackb(frames[0])["tensors"]]
    ([64, 1024, 576], [1, 2])
    >>> decode(frames)[1].anchor.sum()
    np.float64(200.0)
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping, NamedTuple, Sequence

import msgpack
import numpy as np

from .formats import FormatError, parse_format
from .messages import ERROR_CODES, MESSAGES, PROTOCOL_VERSION, Message, Scalar, Tensor, spec_of

__all__ = ["Limits", "Envelope", "ProtocolError", "encode", "encode_parts", "decode",
           "read_envelope", "decode_message", "size_error", "check_version", "Version",
           "SPLIT_SINCE"]

MiB = 1 << 20
HEADER_KEYS = ("v", "type", "seq", "session", "body", "tensors")
TENSOR_KEYS = ("name", "dtype", "shape", "frame")
_HEADER_KEYSET, _TENSOR_KEYSET = set(HEADER_KEYS), set(TENSOR_KEYS)
MAX_SESSION_CHARS = 256
Version = tuple[int, int]   # (major, minor)
SPLIT_SINCE: Version = (1, 5)   # a tensor may take several frames; older receivers refuse that


class ProtocolError(Exception):
    """A message that breaks the protocol: ``code`` is a key of ``ERROR_CODES``.

    >>> raise ProtocolError("bad_state", "run_epoch before configure")
    Traceback (most recent call last):
    protocol.codec.ProtocolError: bad_state: run_epoch before configure
    """

    def __init__(self, code: str, message: str) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}; codes: {', '.join(ERROR_CODES)}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Limits:
    """Size limits enforced on receipt (``Limits(max_message_bytes=64 << 20)``).

    ``max_message_bytes`` bounds all frames of one message together, ``max_frames`` their
    number. :attr:`max_frame_bytes` is derived from the two; the server sets it as ZeroMQ's
    ``ZMQ_MAXMSGSIZE``, which bounds each frame: a peer sending a larger frame is disconnected
    by ZeroMQ before that frame is allocated.

    >>> Limits().max_frame_bytes == 16 * MiB
    True
    """

    max_message_bytes: int = 256 * MiB
    max_tensor_bytes: int = 256 * MiB
    max_header_bytes: int = 1 * MiB
    max_frames: int = 16

    def __post_init__(self) -> None:
        for name in ("max_message_bytes", "max_tensor_bytes", "max_header_bytes", "max_frames"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ValueError(f"Limits.{name} must be a positive integer; got {value!r}")
        if self.max_frame_bytes < 1:
            raise ValueError(f"Limits.max_frames ({self.max_frames}) must not exceed "
                             f"max_message_bytes ({self.max_message_bytes})")

    @property
    def max_frame_bytes(self) -> int:
        """The largest frame: ``max_message_bytes // max_frames``, so that ZeroMQ, which holds
        a whole multipart message before the server counts its frames, holds at most
        ``max_message_bytes`` for a message of at most ``max_frames`` frames."""
        return self.max_message_bytes // self.max_frames


class Envelope(NamedTuple):
    """The routing part of a header; ``header`` is the whole decoded map, ``version`` the
    sender's (major, minor) (a bare 1 on the wire reads as (1, 0))."""

    type: str
    seq: int
    session: str
    header: dict
    version: Version = PROTOCOL_VERSION


def check_version(version: Any) -> Version:
    """``version`` as a (major, minor) tuple of non-negative ints, or ValueError.

    >>> check_version([1, 0])
    (1, 0)
    """
    if not (isinstance(version, (tuple, list)) and len(version) == 2
            and all(type(x) is int and x >= 0 for x in version)):
        raise ValueError(f"a protocol version is (major, minor), two non-negative ints; "
                         f"got {version!r}")
    return (version[0], version[1])


# Per message type: (class, scalar specs, tensor specs), computed once.
_TABLES = {t: (cls, {n: s for n, s in spec_of(cls).items() if isinstance(s, Scalar)},
               {n: s for n, s in spec_of(cls).items() if isinstance(s, Tensor)})
           for t, cls in MESSAGES.items()}
_KINDS = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}


def _plain(obj: Any) -> Any:
    """msgpack ``default`` hook: numpy scalars become Python numbers."""
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot encode {type(obj).__name__} in a protocol message")



def encode_parts(msg: Message, seq: int, session: str, version: Version = PROTOCOL_VERSION,
                 frame_bytes: int | None = None) -> tuple[dict, list]:
    """The header map and the tensor frames (zero-copy memoryviews when possible); the header
    says ``version`` as [major, minor]. With ``frame_bytes`` (only for a receiver of
    :data:`SPLIT_SINCE` or later), a larger tensor goes as consecutive frames of ``frame_bytes``,
    the last one shorter: slices of one memoryview, still without a copy."""
    _, scalars, tensors = _TABLES[msg.TYPE]
    body: dict[str, Any] = {}
    for name, spec in scalars.items():
        value = getattr(msg, name)
        if value is None and spec.optional:
            continue  # optional and absent: omitted from the wire
        if spec.kind == "int" and isinstance(value, numbers.Integral) and not isinstance(value, bool):
            value = int(value)
        elif spec.kind == "float" and isinstance(value, numbers.Real) and not isinstance(value, bool):
            value = float(value)
        elif spec.kind == "list" and isinstance(value, tuple):
            value = list(value)
        body[name] = value
    table, frames = [], []
    for name, spec in tensors.items():
        value = getattr(msg, name)
        if value is None and spec.optional:
            continue
        arr = np.asarray(value)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        arr = np.ascontiguousarray(arr)
        if arr.dtype.hasobject:
            raise TypeError(f"{msg.TYPE}.{name}: object arrays cannot travel as raw frames")
        table.append({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape),
                      "frame": len(frames) + 1})
        raw = memoryview(arr.reshape(-1).view(np.uint8))
        if frame_bytes is None or raw.nbytes <= frame_bytes:
            frames.append(raw)
        else:
            frames.extend(raw[at:at + frame_bytes] for at in range(0, raw.nbytes, frame_bytes))
    header = {"v": [version[0], version[1]], "type": msg.TYPE, "seq": int(seq), "session": session,
              "body": body, "tensors": table}
    return header, frames


def encode(msg: Message, seq: int, session: str, version: Version = PROTOCOL_VERSION,
           frame_bytes: int | None = None) -> list:
    """ZeroMQ multipart frames for ``msg``: packed header, then raw tensor frames (split at
    ``frame_bytes`` as :func:`encode_parts` says)."""
    header, frames = encode_parts(msg, seq, session, version, frame_bytes)
    return [pack_header(header), *frames]


def pack_header(header: dict) -> bytes:
    try:
        return msgpack.packb(header)
    except TypeError:  # numpy scalars somewhere; the hook is slower, so only when needed
        return msgpack.packb(header, default=_plain)


def _nbytes(frame: Any) -> int:
    # len() of bytes and zmq.Frame is the byte count; of a shaped memoryview it is not.
    return memoryview(frame).nbytes if isinstance(frame, memoryview) else len(frame)


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed")


def _peer_version(v: Any, version: Version) -> Version:
    """The sender's version from a header's ``v`` that is not [our major, minor ≥ 0]: the
    1.0 form (a bare 1), another major (``bad_version``), or not a version (``bad_version``)."""
    if type(v) is int and v == 1:
        peer = (1, 0)
    elif type(v) is list and len(v) == 2 and all(type(x) is int and x >= 0 for x in v):
        peer = (v[0], v[1])
    else:
        raise ProtocolError("bad_version", f"protocol version {v!r:.40} is not [major, minor] "
                                           f"(two non-negative ints; a bare 1 means 1.0); this "
                                           f"side speaks {version[0]}.{version[1]}")
    if peer[0] != version[0]:
        raise ProtocolError("bad_version", f"protocol version {peer[0]}.{peer[1]}; this side "
                                           f"speaks {version[0]}.{version[1]} (majors must match)")
    return peer


def size_error(frames: int, header_bytes: int, total_bytes: int, limits: Limits) -> ProtocolError | None:
    """The ``too_large`` error for a message of ``frames`` frames, ``header_bytes`` in its header
    and ``total_bytes`` in all, or None if it is within ``limits``. The three only grow as frames
    arrive, so a receiver can ask after each frame.

    >>> size_error(17, 100, 100, Limits())
    ProtocolError('too_large: 17 frames, over the limit of 16')
    """
    if frames > limits.max_frames:
        return ProtocolError("too_large", f"{frames} frames, over the limit of {limits.max_frames}")
    if header_bytes > limits.max_header_bytes:
        return ProtocolError("too_large", f"header of {header_bytes} bytes, over the limit of "
                                          f"{limits.max_header_bytes}")
    if total_bytes > limits.max_message_bytes:
        return ProtocolError("too_large", f"message of {total_bytes} bytes, over the limit of "
                                          f"{limits.max_message_bytes}")
    return None


def read_envelope(frames: Sequence[Any], limits: Limits = Limits(),
                  version: Version = PROTOCOL_VERSION) -> Envelope:
    """Check frame count and sizes, unpack the header, check version and routing keys.

    ``version`` is this side's; a header of another major is refused (``bad_version``).
    """
    if not frames:
        raise ProtocolError("malformed", "empty message: no header frame")
    n = _nbytes(frames[0])
    total = n + sum(_nbytes(f) for f in frames[1:]) if len(frames) > 1 else n
    if error := size_error(len(frames), n, total, limits):
        raise error
    try:
        # Lengths are bounded by the header's byte size, so a declared 2^32-element array
        # cannot make the unpacker allocate more than the header could hold.
        header = msgpack.unpackb(frames[0], raw=False, strict_map_key=True, ext_hook=_no_ext,
                                 max_str_len=n, max_bin_len=n, max_array_len=n, max_map_len=n,
                                 max_ext_len=n)
    except Exception as exc:  # msgpack raises many kinds (ValueError, ExtraData, StackError …)
        raise ProtocolError("malformed", f"header frame is not msgpack: {exc}") from None
    if type(header) is not dict:
        raise ProtocolError("malformed", f"header is a msgpack {type(header).__name__}, not a map")
    if "v" not in header:
        raise ProtocolError("malformed", "header has no protocol version 'v'")
    v = header["v"]
    if type(v) is list and len(v) == 2 and v[0] == version[0] and type(v[0]) is int \
            and type(v[1]) is int and v[1] >= 0:
        peer = (v[0], v[1])   # the common case: [our major, any minor]
    else:
        peer = _peer_version(v, version)
    if header.keys() != _HEADER_KEYSET:
        missing = [k for k in HEADER_KEYS if k not in header]
        extra = [k for k in header if k not in HEADER_KEYS]
        raise ProtocolError("malformed", f"header keys must be {', '.join(HEADER_KEYS)}; "
                                         f"missing {missing}, extra {extra}")
    mtype, seq, session = header["type"], header["seq"], header["session"]
    if type(mtype) is not str:
        raise ProtocolError("malformed", f"header 'type' is a {type(mtype).__name__}, not a str")
    if not (type(seq) is int and 0 <= seq < 2**64):
        raise ProtocolError("malformed", f"header 'seq' must be an int in [0, 2^64); got {seq!r}")
    if not (type(session) is str and len(session) <= MAX_SESSION_CHARS):
        raise ProtocolError("malformed", f"header 'session' must be a str of at most "
                                         f"{MAX_SESSION_CHARS} characters")
    if type(header["body"]) is not dict:
        raise ProtocolError("malformed", "header 'body' is not a map")
    if type(header["tensors"]) is not list:
        raise ProtocolError("malformed", "header 'tensors' is not a list")
    return Envelope(mtype, seq, session, header, peer)


def _check_scalar(mtype: str, name: str, spec: Scalar, value: Any) -> Any:
    kind = spec.kind
    # Fast path for the common, valid case; anything else gets the careful look below.
    if type(value) is _KINDS[kind] and spec.lo is None and spec.hi is None and not spec.positive \
            and spec.choices is None and not spec.format and kind != "float":
        return value
    where = f"{mtype}.{name}"
    if value is None:
        if spec.optional:
            return None
        raise ProtocolError("bad_type", f"{where}: nil, expected {spec.kind}")
    ok = isinstance(value, _KINDS[kind]) and (kind == "bool" or not isinstance(value, bool))
    if kind == "float" and not ok and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True  # an integer literal is a fine float
    if not ok:
        raise ProtocolError("bad_type", f"{where}: {type(value).__name__} {value!r:.40}, expected {kind}")
    if kind == "float" and not math.isfinite(value):
        raise ProtocolError("not_finite", f"{where}: {value} is not finite")
    if kind in ("int", "float"):
        if spec.lo is not None and value < spec.lo:
            raise ProtocolError("bad_value", f"{where}: {value} is below the minimum {spec.lo}")
        if spec.hi is not None and value > spec.hi:
            raise ProtocolError("bad_value", f"{where}: {value} is above the maximum {spec.hi}")
        if spec.positive and not value > 0:
            raise ProtocolError("bad_value", f"{where}: {value} must be > 0")
    if spec.choices is not None and value not in spec.choices:
        raise ProtocolError("bad_value", f"{where}: {value!r} is not one of {', '.join(spec.choices)}")
    if spec.format and (problem := _format_problem(value)):
        raise ProtocolError("bad_value", f"{where}: {problem}")
    return value


@lru_cache(maxsize=256)
def _format_problem(text: str) -> str | None:
    """Why ``text`` is not a number format, or None; cached: a run uses a handful of formats."""
    try:
        parse_format(text)
    except FormatError as exc:
        return str(exc)
    return None


def _tensor_spans(starts: Sequence[int], n_frames: int) -> list[tuple[int, int]]:
    """Per tensor, given its first frame in ``starts`` (distinct, 1 ≤ start < ``n_frames``), the
    frames it takes as ``(first, stop)``: up to the next tensor's first frame, the last tensor's
    up to ``n_frames``.

    >>> _tensor_spans([4, 1], 6)
    [(4, 6), (1, 4)]
    """
    stops = dict(zip(sorted(starts), [*sorted(starts)[1:], n_frames]))
    return [(start, stops[start]) for start in starts]


def _join(frames: Sequence[Any], first: int, stop: int, nbytes: int, release: bool) -> np.ndarray:
    """The bytes of ``frames[first:stop]`` in one new array, copied frame by frame; with
    ``release``, each entry of ``frames`` (a list) is set to None once copied, so that the frames
    are freed as the array fills and the message peaks near its size, not twice it."""
    out = np.empty(nbytes, np.uint8)
    at = 0
    for i in range(first, stop):
        part = np.frombuffer(frames[i], np.uint8)
        out[at:at + part.size] = part
        at += part.size
        del part
        if release:
            frames[i] = None
    return out


def _check_tensor(where: str, spec: Tensor, entry: dict, frames: Sequence[Any],
                  span: tuple[int, int], limits: Limits, release: bool) -> np.ndarray:
    dtype_s, shape = entry["dtype"], entry["shape"]
    # Whitelist before np.dtype(): an arbitrary string could name an object dtype.
    if dtype_s not in spec.dtypes:
        raise ProtocolError("bad_dtype", f"{where}: dtype {dtype_s!r}, expected one of "
                                         f"{', '.join(spec.dtypes)}")
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise ProtocolError("malformed", f"{where}: shape {shape!r:.60} is not a list of "
                                         "non-negative ints")
    if len(shape) != spec.ndim:
        raise ProtocolError("bad_shape", f"{where}: shape {shape} is {len(shape)}-D, expected "
                                         f"{spec.ndim}-D")
    dtype = np.dtype(dtype_s)
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if nbytes > limits.max_tensor_bytes:
        raise ProtocolError("too_large", f"{where}: shape {shape} of {dtype_s} is {nbytes} bytes, "
                                         f"over the limit of {limits.max_tensor_bytes}")
    first, stop = span
    have = sum(_nbytes(frames[i]) for i in range(first, stop))
    if have != nbytes:
        which = f"frame {first} holds" if stop == first + 1 else f"frames {first}..{stop - 1} hold"
        raise ProtocolError("malformed", f"{where}: {which} {have} bytes; shape {shape} of "
                                         f"{dtype_s} needs {nbytes}")
    if stop == first + 1:
        arr = np.frombuffer(frames[first], dtype=dtype) if nbytes else np.empty(0, dtype)
    else:
        arr = _join(frames, first, stop, nbytes, release).view(dtype)
    arr = arr.reshape(shape)
    arr.flags.writeable = False
    if spec.finite and dtype.kind == "f":
        # A finite sum proves every element finite without a temporary; only an overflowing
        # (or really non-finite) sum needs the element-wise look.
        with np.errstate(over="ignore", invalid="ignore"):
            total = arr.sum()
        if not np.isfinite(total) and not np.isfinite(arr).all():
            bad = np.flatnonzero(~np.isfinite(arr.reshape(-1)))
            raise ProtocolError("not_finite", f"{where}: {bad.size} NaN/Inf values, the first "
                                              f"at flat index {bad[0]}")
    return arr


def _newer(env: Envelope, version: Version) -> bool:
    """Whether the sender speaks a higher minor of our major: its unknown fields are optional
    additions of that minor, to be ignored."""
    return env.version[0] == version[0] and env.version[1] > version[1]


def decode_message(env: Envelope, frames: Sequence[Any], limits: Limits = Limits(),
                   types: Mapping[str, type] = MESSAGES,
                   version: Version = PROTOCOL_VERSION, release: bool = False) -> Message:
    """Validate body and tensors of a message whose envelope passed :func:`read_envelope`.

    A field or tensor this side does not know is ``extra_field``, unless the sender speaks a
    higher minor than ``version``: then it is ignored (its frames still count as used).
    A tensor split over several frames is joined into a new array; with ``release`` (``frames``
    a list the caller no longer needs) each of those frames is dropped from ``frames`` once
    copied, so the message is not held twice.
    """
    if env.type not in types:
        raise ProtocolError("unknown_type", f"no message type {env.type!r:.40} here; expected one "
                                            f"of {', '.join(types)}")
    cls, scalars, tensors = _TABLES[env.type]
    body, table = env.header["body"], env.header["tensors"]
    values: dict[str, Any] = {}
    for name, spec in scalars.items():
        if name in body:
            values[name] = _check_scalar(env.type, name, spec, body[name])
        elif not spec.optional:
            raise ProtocolError("missing_field", f"{env.type}.{name}: required field is missing")
    for name in body:
        if name not in scalars:
            if name not in tensors and _newer(env, version):
                continue  # an optional field of a later minor
            what = "is a tensor and travels as a frame" if name in tensors else "is not a field"
            raise ProtocolError("extra_field", f"{env.type}.{name!s:.40}: {what}; fields: "
                                               f"{', '.join(scalars) or 'none'}")
    entries: dict[str, dict] = {}
    used = set()
    for entry in table:
        if not (isinstance(entry, dict) and entry.keys() == _TENSOR_KEYSET):
            raise ProtocolError("malformed", f"{env.type}: tensor entry {entry!r:.60} must have "
                                             f"keys {', '.join(TENSOR_KEYS)}")
        name, index = entry["name"], entry["frame"]
        if type(name) is not str:
            raise ProtocolError("malformed", f"{env.type}: tensor name {name!r:.40} is not a str")
        if name not in tensors and not _newer(env, version):
            raise ProtocolError("extra_field", f"{env.type}.{name!s:.40}: not a tensor field; "
                                               f"tensors: {', '.join(tensors) or 'none'}")
        if name in entries:
            raise ProtocolError("malformed", f"{env.type}.{name}: tensor listed twice")
        if not (type(index) is int and 1 <= index < len(frames)) or index in used:
            raise ProtocolError("malformed", f"{env.type}.{name}: frame index {index!r} is not an "
                                             f"unused frame 1..{len(frames) - 1}")
        entries[name] = entry   # a later minor's tensor too: its frame is used, then ignored
        used.add(index)
    if len(frames) > 1 and 1 not in used:   # a tensor's frames run up to the next tensor's
        raise ProtocolError("malformed", f"{env.type}: {len(frames) - 1} tensor frames but "
                                         f"{len(used)} tensor entries, none at frame 1")
    spans = dict(zip(entries, _tensor_spans([e["frame"] for e in entries.values()], len(frames))))
    for name, spec in tensors.items():
        if name in entries:
            values[name] = _check_tensor(f"{env.type}.{name}", spec, entries[name], frames,
                                         spans[name], limits, release)
        elif not spec.optional:
            raise ProtocolError("missing_field", f"{env.type}.{name}: required tensor is missing")
    return cls(**values)


def decode(frames: Sequence[Any], limits: Limits = Limits(), types: Mapping[str, type] = MESSAGES,
           version: Version = PROTOCOL_VERSION) -> tuple[Envelope, Message]:
    """Validate ``frames`` completely, as a receiver speaking ``version``; returns the envelope
    and the message."""
    env = read_envelope(frames, limits, version)
    return env, decode_message(env, frames, limits, types, version)
