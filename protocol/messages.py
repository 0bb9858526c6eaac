"""Protocol v1 messages: one frozen dataclass per message type.

Each field carries its validation rule in ``metadata["spec"]`` (a :class:`Scalar` or a
:class:`Tensor`), so the codec validates every message from this one table and
``docs/protocol.md`` documents the same table. Example::

    >>> msg = RunEpoch(algorithm="svrg", epoch=3, steps=2, step_size=0.1, batch_size=1,
    ...                order=np.array([4, 1], dtype=np.uint32))
    >>> msg.TYPE
    'run_epoch'

Requests go host → accelerator; every request gets exactly one reply: the reply type
named in its ``REPLY`` or an :class:`Error`. Before that reply, a request may get any number
of :class:`Progress` messages (since 1.2): never a reply themselves, they tell the host the
accelerator is still working on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

PROTOCOL_VERSION = (1, 6)   # (major, minor); docs/protocol.md, "Versions"

PROBLEMS = ("linear", "logistic", "softmax")
ALGORITHMS = ("sgd", "svrg")
NET_ALGORITHMS = ("sgd", "halp")   # run_net_epoch's steps (since 1.5)
CONV3 = "conv3"          # configure_net's convolution layer entry, since CONV_SINCE
CONV_SINCE = (1, 6)
ROUNDINGS = ("nearest_even", "nearest_away", "toward_zero", "up", "down", "odd", "stochastic")


@dataclass(frozen=True)
class Scalar:
    """A msgpack-native field: ``kind`` is one of int, float, str, bool, list, dict."""

    kind: str
    optional: bool = False
    lo: float | None = None          # inclusive bounds for int/float
    hi: float | None = None
    choices: tuple[str, ...] | None = None
    positive: bool = False           # float strictly > 0
    format: bool = False             # a number-format string that parse_format accepts

    def doc(self) -> str:
        parts = [self.kind]
        if self.choices:
            parts.append("one of " + "/".join(self.choices))
        if self.lo is not None or self.hi is not None:
            parts.append(f"in [{self.lo if self.lo is not None else '-inf'}, {self.hi if self.hi is not None else 'inf'}]")
        if self.positive:
            parts.append("> 0")
        if self.format:
            parts.append("number format")
        if self.kind == "float":
            parts.append("finite")
        if self.optional:
            parts.append("optional")
        return ", ".join(parts)


@dataclass(frozen=True)
class Tensor:
    """An array carried as a raw frame beside the header (never element-wise msgpack)."""

    dtypes: tuple[str, ...]           # numpy dtype strings, little-endian, e.g. "<f8"
    ndim: int
    optional: bool = False
    finite: bool = True               # NaN/Inf rejected for float dtypes

    def doc(self) -> str:
        s = f"tensor {'/'.join(self.dtypes)}, {self.ndim}-D"
        if self.finite and any(d[1] == "f" for d in self.dtypes):
            s += ", finite"
        return s + (", optional" if self.optional else "")


def _f(spec: Scalar | Tensor) -> Any:
    if spec.optional:
        return field(default=None, metadata={"spec": spec})
    return field(metadata={"spec": spec})


def spec_of(cls: type) -> dict[str, Scalar | Tensor]:
    """Field name → validation rule, in declaration order."""
    return {f.name: f.metadata["spec"] for f in fields(cls)}


FLOATS = ("<f8", "<f4")
INDICES = ("<u4", "<i8")


class Message:
    TYPE: ClassVar[str]
    REPLY: ClassVar[str | None] = None


# ---- requests (host → accelerator) -------------------------------------------------

@dataclass(frozen=True)
class Hello(Message):
    """Open a session, or reopen one's own (same session id and client); the reply lists what
    this accelerator can do. Refused (``busy``) while another client's session holds it."""
    TYPE: ClassVar[str] = "hello"
    REPLY: ClassVar[str] = "capabilities"
    client: str = _f(Scalar("str"))


@dataclass(frozen=True)
class Configure(Message):
    """Set the problem, number formats and generator seed; clears data and state."""
    TYPE: ClassVar[str] = "configure"
    REPLY: ClassVar[str] = "ack"
    problem: str = _f(Scalar("str", choices=PROBLEMS))
    n_samples: int = _f(Scalar("int", lo=1))
    n_features: int = _f(Scalar("int", lo=1))
    n_outputs: int = _f(Scalar("int", lo=1))          # classes for softmax, 1 otherwise
    data_format: str = _f(Scalar("str", format=True))
    offset_format: str = _f(Scalar("str", format=True))
    acc_format: str = _f(Scalar("str", format=True))
    rounding: str = _f(Scalar("str", choices=ROUNDINGS))
    rbits: int = _f(Scalar("int", lo=0, hi=32))        # 0 = the whole discarded width, up to 32
    lanes: int = _f(Scalar("int", lo=1, hi=4096))
    seed: int = _f(Scalar("int", lo=0, hi=2**64 - 1))
    l2: float = _f(Scalar("float", lo=0.0))
    scale: float = _f(Scalar("float", positive=True))  # initial offset scale: real = scale * q


@dataclass(frozen=True)
class LoadData(Message):
    """Rows ``start … start+len(x)-1`` of the training set; large sets come in chunks."""
    TYPE: ClassVar[str] = "load_data"
    REPLY: ClassVar[str] = "ack"
    start: int = _f(Scalar("int", lo=0))
    x: np.ndarray = _f(Tensor(FLOATS, 2))
    y: np.ndarray = _f(Tensor(FLOATS + ("<i8",), 1))


@dataclass(frozen=True)
class Recentre(Message):
    """New anchor: full gradient g̃ (n_features × n_outputs) and per-sample anchor terms.

    With ``scale``: the offset is reset to 0 on the new grid (HALP bit centering).
    Without: the anchor is the current offset, the grid is kept (LP-SVRG).
    ``anchor`` holds ℓ'(x_i·w̃) per sample (probabilities for logistic/softmax,
    n_samples × n_outputs); least squares needs none. Since 1.3 it may come as float32: a host
    sends R(anchor) so when the accumulator is fp32, which the accelerator stores them in (the
    same bits in half the bytes).
    """
    TYPE: ClassVar[str] = "recentre"
    REPLY: ClassVar[str] = "ack"
    full_grad: np.ndarray = _f(Tensor(("<f8",), 2))
    anchor: np.ndarray | None = _f(Tensor(("<f8", "<f4"), 2, optional=True))
    scale: float | None = _f(Scalar("float", optional=True, positive=True))


@dataclass(frozen=True)
class RunEpoch(Message):
    """Run ``steps`` inner steps on the samples in ``order`` (steps × batch_size indices)."""
    TYPE: ClassVar[str] = "run_epoch"
    REPLY: ClassVar[str] = "epoch_report"
    algorithm: str = _f(Scalar("str", choices=ALGORITHMS))
    epoch: int = _f(Scalar("int", lo=0))
    steps: int = _f(Scalar("int", lo=1))
    step_size: float = _f(Scalar("float", positive=True))
    batch_size: int = _f(Scalar("int", lo=1))
    order: np.ndarray = _f(Tensor(INDICES, 1))
    # Since 1.5: true asks for the epoch's update statistics in the report (docs/accelerator.md,
    # "Update statistics"): free in hardware, not in software, so only a host that uses them asks.
    statistics: bool | None = _f(Scalar("bool", optional=True))


@dataclass(frozen=True)
class Promote(Message):
    """Change the offset format (and optionally the accumulator); the offset is re-rounded."""
    TYPE: ClassVar[str] = "promote"
    REPLY: ClassVar[str] = "ack"
    offset_format: str = _f(Scalar("str", format=True))
    acc_format: str | None = _f(Scalar("str", optional=True, format=True))


@dataclass(frozen=True)
class Fetch(Message):
    """Ask for the offset (values in the offset format, exact in float64) and counters."""
    TYPE: ClassVar[str] = "fetch"
    REPLY: ClassVar[str] = "state"


@dataclass(frozen=True)
class Shutdown(Message):
    """Stop the daemon after replying (only the session's own client may)."""
    TYPE: ClassVar[str] = "shutdown"
    REPLY: ClassVar[str] = "ack"


@dataclass(frozen=True)
class Restore(Message):
    """Since 1.5: put back what a lost accelerator held at the start of an epoch (the state a
    ``fetch`` returned then), after configure and every row of load_data: the offset q on the
    grid of ``offset_format``, the stored scale and the counters. The anchor is not part of it:
    the state becomes ``loaded``, and an svrg epoch needs a recentre first, as every one gets."""
    TYPE: ClassVar[str] = "restore"
    REPLY: ClassVar[str] = "ack"
    SINCE: ClassVar[tuple[int, int]] = (1, 5)   # older peers refuse the type (unknown_type)
    offset: np.ndarray = _f(Tensor(("<f8",), 2))        # q, n_features × n_outputs, as State.offset
    offset_format: str = _f(Scalar("str", format=True))
    scale: float = _f(Scalar("float", positive=True))   # the stored scale, as State.scale
    counters: dict = _f(Scalar("dict"))                 # as State.counters


@dataclass(frozen=True)
class Bye(Message):
    """Since 1.4: end the session; the accelerator drops its state and is free for the next
    client's hello at once."""
    TYPE: ClassVar[str] = "bye"
    REPLY: ClassVar[str] = "ack"
    SINCE: ClassVar[tuple[int, int]] = (1, 4)   # older peers refuse the type (unknown_type)


# ---- networks (since 1.5; docs/accelerator.md, "Networks on the accelerator") ---------

@dataclass(frozen=True)
class ConfigureNet(Message):
    """Since 1.5: set a network, its layer kernel formats (accel.spec.layer.LayerFormats
    roles), the generator and the starting weights; clears data and state as configure does.
    ``layers``: per layer [fan_in, fan_out, activation] (dense) or, since 1.6,
    ["conv3", in_channels, out_channels, height, width, activation, pool] (a 3×3 convolution
    with padding 1 on C × H × W images, flat in C order, then a pool × pool max-pool, pool 1 or
    2; its fan_in C·H·W, its fan_out C_out·(H/pool)·(W/pool)); activation "relu" on hidden
    layers and "none" on the last, which is dense. ``weights``: every parameter, flat, layer
    after layer, each layer's (fan_in + 1) × fan_out (a convolution's (9·in_channels + 1) ×
    out_channels, row c·9 + 3·ky + kx) matrix in C order, its last row the biases; held as the
    master weights, rounded to nearest-even into ``update_format``. The data then comes by
    load_data (x: n_samples × the first fan_in; y: class labels below the last fan_out)."""
    TYPE: ClassVar[str] = "configure_net"
    REPLY: ClassVar[str] = "ack"
    SINCE: ClassVar[tuple[int, int]] = (1, 5)   # older peers refuse the type (unknown_type)
    layers: list = _f(Scalar("list"))
    n_samples: int = _f(Scalar("int", lo=1))
    weights_format: str = _f(Scalar("str", format=True))
    activations_format: str = _f(Scalar("str", format=True))
    errors_format: str = _f(Scalar("str", format=True))
    weight_grads_format: str = _f(Scalar("str", format=True))
    acc_format: str = _f(Scalar("str", format=True))
    chunk: int = _f(Scalar("int", lo=0, hi=2**31 - 1))     # terms per partial sum; 0: one sum
    update_format: str = _f(Scalar("str", format=True))
    rounding: str = _f(Scalar("str", choices=ROUNDINGS))     # of the update
    rbits: int = _f(Scalar("int", lo=0, hi=32))
    lanes: int = _f(Scalar("int", lo=1, hi=4096))
    seed: int = _f(Scalar("int", lo=0, hi=2**64 - 1))
    l2: float = _f(Scalar("float", lo=0.0))                  # decay of run_net_epoch (net_grad has none)
    weights: np.ndarray = _f(Tensor(("<f8",), 1))


@dataclass(frozen=True)
class NetGrad(Message):
    """Since 1.5: the minibatch gradient of the configured network at ``weights`` (float64, in
    configure_net's layout; rounded to nearest-even into the weights format) over the samples
    ``batch``; the master weights are left alone. Since 1.6, with ``steps`` K > 1 (local steps,
    docs/accelerator.md): ``weights`` rounded to nearest-even into the update format is a
    low-precision copy that takes K LP-SGD steps of ``step_size``, minibatch k the k-th of K equal
    slices of ``batch``, and the reply's grad is the float64 sum of the K gradients."""
    TYPE: ClassVar[str] = "net_grad"
    REPLY: ClassVar[str] = "net_gradient"
    SINCE: ClassVar[tuple[int, int]] = (1, 5)
    STEPS_SINCE: ClassVar[tuple[int, int]] = (1, 6)   # steps > 1: an older peer would ignore it
    weights: np.ndarray = _f(Tensor(("<f8",), 1))
    batch: np.ndarray = _f(Tensor(INDICES, 1))
    # Since 1.6, local steps (absent: 1, today's single gradient). With steps > 1, len(batch) is
    # a multiple of it and step_size, epoch and first_step are required: the copy's step size α and
    # its stochastic rounding's generator, the stream of the round whose first step is first_step
    # of epoch ``epoch`` (docs/accelerator.md, "Local steps"). Unused with steps = 1.
    steps: int | None = _f(Scalar("int", optional=True, lo=1, hi=2**31 - 1))
    step_size: float | None = _f(Scalar("float", optional=True, positive=True))
    epoch: int | None = _f(Scalar("int", optional=True, lo=0))
    first_step: int | None = _f(Scalar("int", optional=True, lo=0, hi=2**32 - 1))


@dataclass(frozen=True)
class RunNetEpoch(Message):
    """Since 1.5: ``steps`` LP-SGD steps on the master weights (or, with algorithm "halp",
    HALP steps on the offset of the last recentre_net), minibatch t the samples
    ``order[t·batch_size … (t+1)·batch_size − 1]``; the reply is an epoch_report."""
    TYPE: ClassVar[str] = "run_net_epoch"
    REPLY: ClassVar[str] = "epoch_report"
    SINCE: ClassVar[tuple[int, int]] = (1, 5)
    epoch: int = _f(Scalar("int", lo=0))
    steps: int = _f(Scalar("int", lo=1))
    step_size: float = _f(Scalar("float", positive=True))
    batch_size: int = _f(Scalar("int", lo=1))
    order: np.ndarray = _f(Tensor(INDICES, 1))
    # "sgd" (absent): LP-SGD on the master weights; "halp": HALP steps on the offset of the
    # last recentre_net, the master weights left alone (docs/accelerator.md)
    algorithm: str | None = _f(Scalar("str", optional=True, choices=NET_ALGORITHMS))


@dataclass(frozen=True)
class RecentreNet(Message):
    """Since 1.5: HALP's bit centring for the configured network, after every row of load_data:
    the anchor w̃ and the full gradient g̃ = ∇f(w̃) (float64, configure_net's layout, λw̃
    included), and the offset's grid: z = scale·q, q on ``offset_format`` (a signed fixed
    format of at most 16 bits), q = 0. run_net_epoch with algorithm "halp" then steps z."""
    TYPE: ClassVar[str] = "recentre_net"
    REPLY: ClassVar[str] = "ack"
    SINCE: ClassVar[tuple[int, int]] = (1, 5)
    anchor: np.ndarray = _f(Tensor(("<f8",), 1))
    full_grad: np.ndarray = _f(Tensor(("<f8",), 1))
    scale: float = _f(Scalar("float", positive=True))
    offset_format: str = _f(Scalar("str", format=True))


@dataclass(frozen=True)
class FetchNet(Message):
    """Since 1.5: ask for the network's master weights."""
    TYPE: ClassVar[str] = "fetch_net"
    REPLY: ClassVar[str] = "net_state"
    SINCE: ClassVar[tuple[int, int]] = (1, 5)


# ---- replies (accelerator → host) ---------------------------------------------------

@dataclass(frozen=True)
class Capabilities(Message):
    """What the accelerator is and accepts: protocol version, backend, problems, algorithms,
    limits; since 1.1 the kernel spec version and, per format role (data, offset, acc), the
    accepted families with bounds and roundings plus the exactness widths, as data that
    ``protocol.capabilities.KernelCapabilities`` reads and checks (``docs/accelerator.md``)."""
    TYPE: ClassVar[str] = "capabilities"
    version: list = _f(Scalar("list"))        # [major, minor] of the protocol
    backend: str = _f(Scalar("str"))
    formats: list = _f(Scalar("list"))        # format families and presets accepted
    problems: list = _f(Scalar("list"))
    algorithms: list = _f(Scalar("list"))
    roundings: list = _f(Scalar("list"))
    limits: dict = _f(Scalar("dict"))         # max_message_bytes, max_samples, max_features, ...
    # Since 1.1: the kernel spec version and the same capabilities as data a host can check
    # (``protocol.capabilities.KernelCapabilities.from_message``).
    spec: list | None = _f(Scalar("list", optional=True))        # [major, minor] of the kernel spec
    roles: dict | None = _f(Scalar("dict", optional=True))       # data/offset/acc: families, bounds, roundings
    exactness: dict | None = _f(Scalar("dict", optional=True))   # dot_bits, product_bits


@dataclass(frozen=True)
class Ack(Message):
    TYPE: ClassVar[str] = "ack"
    of: str = _f(Scalar("str"))               # the request type acknowledged
    info: dict = _f(Scalar("dict"))           # e.g. load_data: rows held, saturations on load


@dataclass(frozen=True)
class EpochReport(Message):
    TYPE: ClassVar[str] = "epoch_report"
    epoch: int = _f(Scalar("int"))
    steps: int = _f(Scalar("int"))
    ops: dict = _f(Scalar("dict"))            # "mul fixed<2,6>*fixed<1,7>": count, ...
    memory: dict = _f(Scalar("dict"))         # bytes read / written per memory
    saturations: int = _f(Scalar("int"))
    # Since 1.2: the accelerator's own measure of the epoch's work, e.g. {"seconds": 0.23} (the
    # emulated backend's compute time) or {"cycles": 46000000, "seconds": 104.0} (the rtl core's
    # cycle counter). It differs from run to run and between backends: replay and the
    # conformance suite report it but do not compare it.
    work: dict | None = _f(Scalar("dict", optional=True))
    # Since 1.5, when run_epoch asked for them: the epoch's update statistics
    # (docs/accelerator.md, "Update statistics"), exact and equal on every backend: offset
    # updates, those with t ≠ 0 that rounded to 0, the smallest non-zero and the largest |t| (in
    # offset units, clamped as step 7 clamps), and per binade b = floor(log2 |t|) + FL of the
    # grid the count of t ≠ 0 ({"-3": 12, ...}; the lowest key, -32, also counts every binade
    # below). An older accelerator leaves them out.
    updates: int | None = _f(Scalar("int", optional=True, lo=0))
    vanished: int | None = _f(Scalar("int", optional=True, lo=0))
    update_min: float | None = _f(Scalar("float", optional=True, lo=0.0))
    update_max: float | None = _f(Scalar("float", optional=True, lo=0.0))
    update_binades: dict | None = _f(Scalar("dict", optional=True))


@dataclass(frozen=True)
class State(Message):
    TYPE: ClassVar[str] = "state"
    offset: np.ndarray = _f(Tensor(("<f8",), 2))   # q, n_features × n_outputs; real offset = scale * q
    scale: float = _f(Scalar("float"))
    offset_format: str = _f(Scalar("str", format=True))
    counters: dict = _f(Scalar("dict"))


@dataclass(frozen=True)
class NetGradient(Message):
    """Since 1.5, the reply to net_grad: the gradient (configure_net's layout, values of the
    weight-gradient format, exact in float64), the minibatch's mean cross-entropy (a float64
    monitor) and the request's operations and memory traffic (keys as in epoch_report). Since
    1.6, with local steps: G, the float64 sum of their gradients, the mean of their minibatches'
    losses, and the counts of every step."""
    TYPE: ClassVar[str] = "net_gradient"
    SINCE: ClassVar[tuple[int, int]] = (1, 5)
    grad: np.ndarray = _f(Tensor(("<f8",), 1))
    ops: dict = _f(Scalar("dict"))
    memory: dict = _f(Scalar("dict"))
    loss: float | None = _f(Scalar("float", optional=True))   # absent when infinite (some p_y rounded to 0)
    work: dict | None = _f(Scalar("dict", optional=True))   # as epoch_report's: {"seconds": compute time}


@dataclass(frozen=True)
class NetState(Message):
    """Since 1.5, the reply to fetch_net: the master weights (configure_net's layout, values of
    ``update_format``, exact in float64)."""
    TYPE: ClassVar[str] = "net_state"
    SINCE: ClassVar[tuple[int, int]] = (1, 5)
    weights: np.ndarray = _f(Tensor(("<f8",), 1))
    update_format: str = _f(Scalar("str", format=True))
    # After a recentre_net: HALP's offset q (values of offset_format; z = scale·q), its scale and format
    offset: np.ndarray | None = _f(Tensor(("<f8",), 1, optional=True))
    scale: float | None = _f(Scalar("float", optional=True, positive=True))
    offset_format: str | None = _f(Scalar("str", optional=True, format=True))


# Codes added by a minor: that minor, and the code a peer of an older one gets instead, with the
# same message (it would refuse a reply whose code it does not know).
ERROR_CODES_SINCE = {"busy": ((1, 4), "bad_session"), "session_lost": ((1, 4), "bad_session")}


def _since(code: str, meaning: str) -> str:
    if code not in ERROR_CODES_SINCE:
        return meaning
    (major, minor), older = ERROR_CODES_SINCE[code]
    return f"{meaning} (since {major}.{minor}; an older peer gets {older})"


ERROR_CODES = {code: _since(code, meaning) for code, meaning in {
    "malformed": "frames are not a valid protocol message (not msgpack, not a map, bad frame table)",
    "bad_version": "the header's protocol version is not [major, minor], or its major is not the receiver's",
    "unknown_type": "no message of that type",
    "missing_field": "a required field is absent",
    "extra_field": "a field the message type does not have",
    "bad_type": "a field of the wrong kind (str for int, ...)",
    "bad_value": "a value out of range or not among the choices, or an unparsable format",
    "bad_dtype": "a tensor of a dtype the field does not accept",
    "bad_shape": "a tensor of the wrong rank, or a shape that disagrees with the configuration",
    "not_finite": "NaN or Inf where only finite numbers are allowed",
    "too_large": "a message, tensor or dimension over the configured limit",
    "bad_state": "the message is not allowed now (run_epoch before configure, ...)",
    "bad_sequence": "a sequence number that is not the previous one plus one",
    "bad_session": "no session is open, or the request's session id is not the open session's",
    "internal": "the accelerator failed; the message names the cause",
    "busy": "another client's session holds the accelerator; the message names that client and "
            "how long its session has been idle",
    "session_lost": "the request's session was taken over by another client after it had been "
                    "idle longer than the lease; its state is gone",
}.items()}


@dataclass(frozen=True)
class Error(Message):
    TYPE: ClassVar[str] = "error"
    code: str = _f(Scalar("str", choices=tuple(ERROR_CODES)))
    message: str = _f(Scalar("str"))
    ref: int = _f(Scalar("int"))              # seq of the offending request, -1 if unknown


# ---- progress (accelerator → host, before a reply) ------------------------------------

@dataclass(frozen=True)
class Progress(Message):
    """Since 1.2: the accelerator is still working on the request of this seq and session;
    sent zero or more times before its reply, only to a host of 1.2 or later. Never a reply
    itself: the host keeps waiting, with its reply timeout started afresh."""
    TYPE: ClassVar[str] = "progress"
    SINCE: ClassVar[tuple[int, int]] = (1, 2)   # older peers refuse the type (unknown_type)
    of: str = _f(Scalar("str"))               # the request type being worked on
    info: dict = _f(Scalar("dict"))           # free-form numbers, e.g. {"steps": 1200, "cycles": 3400000}


REQUESTS: dict[str, type] = {c.TYPE: c for c in (Hello, Configure, LoadData, Recentre, RunEpoch,
                                                  Promote, Fetch, Shutdown, Bye, Restore, ConfigureNet, NetGrad,
                                                  RunNetEpoch, RecentreNet, FetchNet)}
# Everything the host decodes: the replies, and the progress that may come before one.
REPLIES: dict[str, type] = {c.TYPE: c for c in (Capabilities, Ack, EpochReport, State, Error,
                                                 Progress, NetGradient, NetState)}
MESSAGES: dict[str, type] = {**REQUESTS, **REPLIES}
