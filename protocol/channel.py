"""ZeroMQ transport: a DEALER :class:`Client` (the host side) and a ROUTER :class:`Server`.

Example::

    server = Server("tcp://127.0.0.1:0")           # port 0: pick a free port
    threading.Thread(target=server.serve, args=(handler,), daemon=True).start()
    with Client(server.address, session="run-1") as client:
        caps = client.request(Hello(client="me"))   # seq 1 opens the session
        client.request(Fetch())                     # seq 2, 3, … assigned by the client

    def handler(msg):                               # a slow request keeps the host waiting
        for chunk in work(msg):
            server.progress({"steps": chunk})       # each one restarts the client's timeout
        return reply(msg)

Sessions (``docs/protocol.md`` has the table): one session at a time owns the server, the one
the last accepted ``hello`` opened, known by its session id (the header's; random per client
unless given, so whoever holds it is the owner) and the hello's ``client`` name. A hello carries
a non-empty session id and seq 1; the owner's own hello (same id and client) reopens the session
with its state. Every other request must carry the session's id, from any connection (a host
whose connection dropped carries on), else ``bad_session``, and seq = previous + 1, else
``bad_sequence``. A request rejected for its sequence number does not consume the number; any
other request does, even one then rejected for a bad field, its state or a handler failure.
Replies echo the request's seq and session. These checks come before the body's, but a hello's
claim on the session waits until its body has passed.

Since 1.4 a session is a lease: another client's hello is refused (``busy``, naming the owner's
client and how long its session has been idle) until the session has been idle ``lease``
seconds (since its last reply); then it takes the session over: the handler gets a ``bye`` for
the old session (which drops its state) before the new hello, and the old session's requests
get ``session_lost``. ``bye`` ends a session; :meth:`Client.close` sends it, so the next client
need not wait for the lease. A session opened by a host older than 1.4, which cannot say bye,
has no lease: any hello takes it over. Those older hosts get ``bad_session`` where a 1.4 host
gets ``busy`` or ``session_lost`` (with the same message).

Memory: ZeroMQ hands over a multipart message only once all of its frames have arrived, and
bounds each frame (``ZMQ_MAXMSGSIZE`` = ``Limits.max_frame_bytes``, ``max_message_bytes`` /
``max_frames``: a larger frame disconnects its peer before it is allocated) but not how many
there are. The server counts frames and bytes as it takes them; over a limit, it drops each of
the rest as it comes and answers ``too_large``. Since 1.5 the client splits a tensor over
consecutive frames of the accelerator's ``max_frame_bytes`` (from ``capabilities.limits``, else
its own ``Limits``'), and the server joins them, freeing each frame once copied.

Progress (since 1.2): while the handler works on a request, :meth:`Server.progress` sends a
``progress`` message with the request's seq and session, to a 1.2 or later requester only.
:meth:`Client.request` taps it, hands it to ``on_progress`` and waits a fresh ``timeout`` for
the reply, so a slow but healthy accelerator does not time out; a hung one (neither progress
nor reply for ``timeout`` s) still does, and a dead one is noticed by the heartbeats.

Transports: ``tcp://``, ``ipc://`` and, in one process, ``inproc://`` (pass one
``context`` to both ends).

Keys (CurveZMQ, :mod:`protocol.keys`): ``Server(..., curve=server_keys(...))`` encrypts and
serves only the clients whose public keys it lists; ``Client(..., curve=client_keys(...))``
talks to it. A client with no or an unlisted key gets no session and no reply: libzmq reports
the failed handshake and the client raises ``AcceleratorGone`` at once, naming the keys; the
server keeps serving the others. A server on a tcp address other machines can reach
refuses to start without keys unless ``insecure=True``.

Versions: each end sends its own ``version`` (default ``PROTOCOL_VERSION``; pass an older or
newer (major, minor) to play such a peer) and reads the other's by the rules of
:mod:`protocol.codec`. A request of another major gets a ``bad_version`` error reply.
"""
from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

from .codec import (SPLIT_SINCE, Envelope, Limits, ProtocolError, Version, check_version,
                    decode_message, encode_parts, pack_header, read_envelope, size_error)
from .messages import (ERROR_CODES_SINCE, PROTOCOL_VERSION, REPLIES, REQUESTS, Bye, Capabilities,
                       Error, Hello, Message, Progress, Shutdown)
from .keys import ClientKeys, ServerKeys, check_exposure

__all__ = ["Client", "Server", "TapEvent", "AcceleratorError", "AcceleratorGone",
           "AcceleratorTimeout"]

log = logging.getLogger(__name__)

# libzmq answers heartbeats on its I/O thread, so a daemon busy in numpy still answers;
# a peer that stops answering for HEARTBEAT_TIMEOUT_MS is dropped (disconnect event); a client
# waits longer, its reply timeout (_heartbeat_timeout_ms).
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 5000
SERVER_LINGER_MS = 1000   # bounded: lets the last reply (to shutdown) leave before exit
WAIT_SLICE_S = 0.1         # a client notices a lost connection this fast
# A host is silent while it computes (a full gradient, the reference optimum: ~15 s at
# n = 10^6), so the default lease is generous; a host that dies without bye holds the server
# this long.
LEASE_S = 60.0
# A refused handshake (keys): the client stops at once rather than waiting for its timeout.
HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
BYE_TIMEOUT_S = 1.0       # Client.close waits this long for the ack of its bye
MAX_LOST = 64             # sessions taken over that are remembered; older ones get bad_session


class AcceleratorError(ProtocolError):
    """The accelerator answered with an error reply (``code``, ``message``, ``ref`` = seq)."""

    def __init__(self, code: str, message: str, ref: int = -1) -> None:
        super().__init__(code, message)
        self.ref = ref


class AcceleratorGone(ConnectionError):
    """The accelerator cannot be reached any more; the client is closed."""


class AcceleratorTimeout(AcceleratorGone, TimeoutError):
    """No reply within the timeout; the client is closed."""


@dataclass(frozen=True)
class TapEvent:
    """One message seen by a tap: ``direction`` is ``"h2a"`` (request) or ``"a2h"`` (reply or
    progress); ``t`` is ``time.monotonic()`` of the tapping process when it saw the message (the
    client: a request once sent, a reply once checked; the server: a request on arrival, a
    reply just before it leaves): differences of times stamped on one machine mean something,
    nothing else does."""

    t: float
    direction: str
    header: dict
    frames: list


Tap = Callable[[TapEvent], None]


def _recv(sock: zmq.Socket) -> list:
    """A multipart message: its header frame as bytes (cheaper than zmq.Frame for a small
    frame), the tensor frames after it without copying."""
    frames = [sock.recv()]
    while sock.getsockopt(zmq.RCVMORE):
        frames.append(sock.recv(copy=False))
    return frames


def _recv_request(sock: zmq.Socket, limits: Limits) -> tuple[bytes, list, ProtocolError | None]:
    """A request from the ROUTER socket: the peer's routing id, its frames as :func:`_recv` gives
    them, and None; or, for a message over ``limits`` (frames, header or total bytes), an empty
    list and the ``too_large`` error: from the frame that goes over, every frame is dropped as
    it is taken and none is kept."""
    ident = sock.recv()
    frames: list = []
    count = header = total = 0
    error = None
    while sock.getsockopt(zmq.RCVMORE):
        frame = sock.recv(copy=not count)
        count, total = count + 1, total + len(frame)
        header = total if count == 1 else header
        if error is None and (error := size_error(count, header, total, limits)) is not None:
            frames.clear()
        if error is None:
            frames.append(frame)
    if error is not None:
        error = size_error(count, header, total, limits)   # with the whole message's numbers
    return ident, frames, error


def _send(sock: zmq.Socket, small: list[bytes], tensors: list, *, copy_tensors: bool) -> None:
    """Send ``small`` frames by copy (cheapest for a few bytes), then the tensors."""
    last = len(small) - 1
    for i, frame in enumerate(small):
        sock.send(frame, zmq.SNDMORE if tensors or i < last else 0)
    if tensors:
        sock.send_multipart(tensors, copy=copy_tensors)


def check_address(address: str) -> None:
    """Refuse a tcp port outside 0..65535 (libzmq would silently take it modulo 65536)."""
    if address.startswith("tcp://"):
        port = address.rsplit(":", 1)[-1]
        if port.isdigit() and int(port) > 65535:
            raise ValueError(f"{address}: port {port} is outside 0..65535")


def _heartbeat_timeout_ms(timeout: float) -> int:
    """A client's heartbeat timeout: a heartbeat interval past its reply ``timeout``, at least
    HEARTBEAT_TIMEOUT_MS (libzmq takes an int of milliseconds)."""
    return int(min(max(HEARTBEAT_TIMEOUT_MS, timeout * 1000 + HEARTBEAT_IVL_MS), 2**31 - 1))


def _tune(sock: zmq.Socket) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)


class Client:
    """The host's end: one request in flight at a time, from one thread (ZeroMQ sockets are
    not thread-safe); see the module docstring."""

    def __init__(self, address: str, *, session: str | None = None, timeout: float = 30.0,
                 limits: Limits = Limits(), tap: Tap | None = None,
                 context: zmq.Context | None = None,
                 version: Version = PROTOCOL_VERSION, curve: ClientKeys | None = None) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds; got {timeout!r}")
        check_address(address)
        self.version = check_version(version)
        self.address = address
        self.session = session or uuid.uuid4().hex
        self.timeout = timeout
        self.limits = limits
        self._tap = tap
        self._seq = 0
        self._bye_due = False    # a session is open with a 1.4 or later accelerator: close() ends it
        self._frame_bytes: int | None = None   # split tensors at this (a 1.5 or later accelerator)
        self._slice_ms = -1
        self._was_connected = False
        self._connected = False
        self._closed_because: str | None = None
        self._own_ctx = context is None
        self._ctx = context or zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        _tune(self._sock)
        # An accelerator silent for less than the reply timeout (a daemon stopped with SIGSTOP,
        # or paused in a debugger, answers no heartbeat) keeps its connection and, continued,
        # its session: the timeout decides when a silent accelerator is given up on.
        self._sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, _heartbeat_timeout_ms(timeout))
        self._keyed = curve is not None
        if curve is not None:
            self._sock.curve_secretkey = curve.secret
            self._sock.curve_publickey = curve.public
            self._sock.curve_serverkey = curve.server
        # Connected = the handshake succeeded: a refused one (keys) is not a connection lost.
        self._monitor = self._sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED
                                                      | zmq.EVENT_DISCONNECTED | HANDSHAKE_FAILED)
        self._refused = 0   # the last failed handshake's event
        try:
            self._sock.connect(address)
        except zmq.ZMQError as exc:
            self._shut(f"cannot connect: {exc}")
            raise ValueError(f"cannot connect to {address!r} ({exc}); addresses look like "
                             "tcp://HOST:PORT, ipc:///PATH or inproc://NAME") from None

    def request(self, msg: Message, *, timeout: float | None = None,
                on_progress: Callable[[Progress], None] | None = None) -> Message:
        """Send ``msg``, wait for its reply; an error reply raises :class:`AcceleratorError`.

        Each ``progress`` for this request is tapped, passed to ``on_progress`` and restarts
        the wait: the reply may come ``timeout`` seconds after the last progress.
        """
        if self._closed_because is not None:
            raise AcceleratorGone(f"the client for {self.address} is closed ({self._closed_because})")
        if msg.TYPE not in REQUESTS:
            raise ValueError(f"{msg.TYPE!r} is not a request; requests: {', '.join(REQUESTS)}")
        timeout = self.timeout if timeout is None else timeout
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds; got {timeout!r}")
        slice_ms = max(1, int(min(timeout, WAIT_SLICE_S) * 1000))
        if slice_ms != self._slice_ms:  # setting it costs more than the check
            self._sock.setsockopt(zmq.RCVTIMEO, slice_ms)
            self._slice_ms = slice_ms
        seq = 1 if isinstance(msg, Hello) else self._seq + 1
        header, frames = encode_parts(msg, seq, self.session, self.version, self._frame_bytes)
        # Zero-copy is safe here: the caller's arrays cannot change before the reply arrives,
        # and the reply arrives after the request has left.
        _send(self._sock, [pack_header(header)], frames, copy_tensors=False)
        self._seq = seq
        if self._tap:
            self._tap(TapEvent(time.monotonic(), "h2a", header, frames))
        since, progressed = time.monotonic(), False
        while True:
            # Blocking receives in short slices rather than polling data and monitor sockets:
            # a prompt reply costs one call; a lost connection is noticed within a slice.
            try:
                reply_frames = _recv(self._sock)
            except zmq.Again:
                reply_frames = self._wait(msg.TYPE, seq, timeout, since, progressed)
            env = read_envelope(reply_frames, self.limits, self.version)
            reply = decode_message(env, reply_frames, self.limits, REPLIES, self.version)
            if env.seq != seq or env.session != self.session:
                raise ProtocolError("bad_sequence", f"{reply.TYPE} carries seq {env.seq} of session "
                                    f"{env.session!r}; the request was seq {seq} of {self.session!r}")
            if self._tap:
                self._tap(TapEvent(time.monotonic(), "a2h", env.header, reply_frames[1:]))
            if not isinstance(reply, Progress):
                break
            if on_progress:
                on_progress(reply)
            # The accelerator is alive and busy with this request: a fresh timeout from now.
            since, progressed = time.monotonic(), True
        if isinstance(reply, Error):
            raise AcceleratorError(reply.code, reply.message, reply.ref)
        if reply.TYPE != msg.REPLY:
            raise ProtocolError("unknown_type", f"{msg.TYPE} was answered by {reply.TYPE}, "
                                                f"expected {msg.REPLY}")
        if isinstance(msg, Hello):
            self._bye_due = min(env.version, self.version) >= Bye.SINCE
            self._frame_bytes = self._split_at(env.version, reply)
        elif isinstance(msg, (Bye, Shutdown)):
            self._bye_due = False
        return reply

    def _split_at(self, peer: Version, caps: Capabilities) -> int | None:
        """The frame size to split tensors at for an accelerator of version ``peer``: none before
        1.5 (it takes one frame per tensor), else the ``max_frame_bytes`` it reports, or ours."""
        if min(peer, self.version) < SPLIT_SINCE:
            return None
        reported = caps.limits.get("max_frame_bytes")
        return reported if type(reported) is int and reported >= 1 else self.limits.max_frame_bytes

    def _wait(self, what: str, seq: int, timeout: float, since: float, progressed: bool) -> list:
        """The next message after a first slice passed without one: keep receiving in slices,
        and between slices look whether the connection was lost or ``timeout`` seconds have
        passed ``since`` (the request left, or its last progress came)."""
        deadline = since + timeout
        while True:
            self._drain_monitor()
            if self._refused:
                self._fail(AcceleratorGone, self._refusal())
            if not self._connected and self._was_connected:
                self._fail(AcceleratorGone, f"the connection to the accelerator at "
                           f"{self.address} was lost while waiting for the reply to {what} "
                           f"(seq {seq}); did the accelerator process exit?")
            left = deadline - time.monotonic()
            if left <= 0 and progressed:
                self._fail(AcceleratorTimeout, f"the accelerator at {self.address} sent progress on "
                           f"{what} (seq {seq}), then neither progress nor the reply for "
                           f"{timeout:g} s; is it hung?")
            if left <= 0:
                # With keys, a handshake refused without libzmq saying so looks like silence.
                why = ("wrong or unlisted key? (the daemon must list this host's public key, and "
                       "the server key must be the daemon's)" if self._keyed
                       else "is `cosim accel` running there?")
                self._fail(AcceleratorTimeout, f"the accelerator at {self.address} did not answer "
                           f"{what} (seq {seq}) within {timeout:g} s; {why}")
            slice_ms = max(1, int(min(left, WAIT_SLICE_S) * 1000))
            if slice_ms != self._slice_ms:
                self._sock.setsockopt(zmq.RCVTIMEO, slice_ms)
                self._slice_ms = slice_ms
            try:
                return _recv(self._sock)
            except zmq.Again:
                pass

    def _drain_monitor(self) -> None:
        while self._monitor.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            event = recv_monitor_message(self._monitor)["event"]
            self._refused = event if event & HANDSHAKE_FAILED else self._refused
            self._connected = event == zmq.EVENT_HANDSHAKE_SUCCEEDED
            self._was_connected |= self._connected

    def _refusal(self) -> str:
        """What a failed handshake (ZeroMQ's security: CURVE or none) most likely means."""
        where = f"the accelerator at {self.address} refused the connection"
        if self._refused == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return f"{where}: it does not list this host's public key among its allowed clients"
        if self._keyed:
            return (f"{where} (the CURVE handshake failed): is the server key the daemon's public "
                    "key, and does the daemon serve with keys?")
        return (f"{where} (the handshake failed): does it serve with keys? Then pass --keys "
                "and --server-key")

    def _fail(self, kind: type, text: str) -> None:
        self._shut(text)
        raise kind(text)

    def close(self, reason: str = "closed by its owner", *, end_session: bool = True) -> None:
        """End the session with ``bye`` if one is open with an accelerator of 1.4 or later,
        waiting at most ``BYE_TIMEOUT_S`` for its ack, so the accelerator is free for the next
        client at once; then close the socket (pending messages are dropped). Later requests
        raise. The bye is not tapped: it carries nothing a replay needs, and whoever holds the
        tap (a trace file) may be done with it. ``end_session=False`` sends no bye: the session
        stays open, other clients' hellos get ``busy`` for its lease, and a client with the same
        session id and client name reopens it with its hello."""
        if self._closed_because is not None:
            return
        try:
            if self._bye_due and end_session:
                self._tap = None
                self.request(Bye(), timeout=BYE_TIMEOUT_S)
        except (ProtocolError, AcceleratorGone):
            pass   # refused, lost or slow: the session then ends when its lease runs out
        finally:
            self._shut(reason)

    def _shut(self, reason: str) -> None:
        """Close the socket at once, without a bye."""
        if self._closed_because is not None:
            return
        self._closed_because = reason
        self._sock.disable_monitor()
        self._monitor.close(linger=0)
        self._sock.close(linger=0)
        if self._own_ctx:
            self._ctx.term()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Allowed:
    """The ZAP credentials provider: a client's Z85 public key is allowed if it is listed."""

    def __init__(self, keys: frozenset[bytes]) -> None:
        self.keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.keys


@dataclass
class _Session:
    """The session that owns a server (see the module docstring)."""

    id: str               # the header's session id: whoever holds it is the owner
    client: str           # the hello's client name
    seq: int              # the last sequence number
    leased: bool          # its hello and the server are 1.4 or later (older hosts cannot say bye)
    idle_since: float     # time.monotonic() when its last reply left


class Server:
    """The accelerator's end: validates each request, calls the handler, replies.

    ``lease``: seconds a session may be idle before another client's hello takes it over.
    ``curve``: serve only the clients it lists, encrypted; without it, an address other machines
    can reach is refused (ValueError) unless ``insecure``.
    """

    def __init__(self, address: str, *, limits: Limits = Limits(), tap: Tap | None = None,
                 context: zmq.Context | None = None,
                 version: Version = PROTOCOL_VERSION, lease: float = LEASE_S,
                 curve: ServerKeys | None = None, insecure: bool = False) -> None:
        check_address(address)
        check_exposure(address, curve is not None, insecure)
        if not (isinstance(lease, (int, float)) and not isinstance(lease, bool) and 0 < lease < math.inf):
            raise ValueError(f"lease must be a number of seconds > 0; got {lease!r}")
        self.version = check_version(version)
        self.lease = float(lease)
        self.limits = limits
        self._tap = tap
        self._own_ctx = context is None
        self._ctx = context or zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        _tune(self._sock)
        self._auth = None
        if curve is not None:
            # The ZAP handler of this context: a client whose public key is not listed fails its
            # handshake and never reaches serve(). (Imported here: 25 ms that unkeyed ends skip.)
            from zmq.auth.thread import ThreadAuthenticator
            self._auth = ThreadAuthenticator(self._ctx, log=log)
            self._auth.start()
            self._auth.configure_curve_callback("*", credentials_provider=_Allowed(curve.allowed))
            self._sock.curve_secretkey = curve.secret
            self._sock.curve_publickey = curve.public
            self._sock.curve_server = True
        # Hard guard: ZeroMQ disconnects a peer whose frame exceeds this, before Python
        # allocates it; read_envelope applies the finer limits. Per frame, not per message:
        # so that max_frames frames cannot add up to more than max_message_bytes.
        self._sock.setsockopt(zmq.MAXMSGSIZE, limits.max_frame_bytes)
        try:
            wildcard = address.startswith("tcp://") and address.endswith(":0")
            self._sock.bind(address[:-2] + ":*" if wildcard else address)
        except zmq.ZMQError as exc:
            self._sock.close(linger=0)
            if self._auth is not None:
                self._auth.stop()
            if self._own_ctx:
                self._ctx.term()
            raise OSError(f"cannot bind {address} ({exc}); addresses look like tcp://HOST:PORT "
                          "(port 0 picks a free one), ipc:///PATH or inproc://NAME") from None
        self._address = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self._session: _Session | None = None
        self._lost: dict[str, str] = {}   # session id taken over → its session_lost message
        self._in_hand: tuple[bytes, Envelope] | None = None   # the request the handler works on
        self._closed = False

    @property
    def address(self) -> str:
        """The bound endpoint (with the real port when bound to port 0)."""
        return self._address

    def serve(self, handler: Callable[[Message], Message], *, poll_ms: int = 100,
              should_stop: Callable[[], bool] | None = None) -> None:
        """Answer requests until a shutdown is acknowledged or ``should_stop()`` is true.

        ``handler(request) -> reply``, calling :meth:`progress` while it works if that takes
        long; raising :class:`ProtocolError` sends that error, any other exception sends
        ``internal`` — the server keeps serving either way. The handler's state belongs to the
        session: a ``bye`` (the owner's, or the server's when another client takes the session
        over) must drop it.
        """
        self._sock.rcvtimeo = poll_ms  # a blocking receive is cheaper than poll + receive
        while not (should_stop and should_stop()):
            try:
                ident, frames, refused = _recv_request(self._sock, self.limits)
            except zmq.Again:
                continue
            if refused is not None:
                request, reply, env = None, Error(refused.code, refused.message, -1), None
            else:
                request, reply, env = self._answer(ident, frames, handler)
            self._send(ident, reply, env)
            if self._session is not None and env is not None and env.session == self._session.id:
                self._session.idle_since = time.monotonic()   # idle: since its last reply left
            if isinstance(request, Shutdown) and not isinstance(reply, Error):
                return
            # Not held while waiting: a load_data's frames are up to max_message_bytes.
            del frames, request, reply, env

    def _answer(self, ident: bytes, frames: list, handler: Callable[[Message], Message]
                ) -> tuple[Message | None, Message, Envelope | None]:
        env = request = None
        try:
            env = read_envelope(frames, self.limits, self.version)
            if self._tap:
                self._tap(TapEvent(time.monotonic(), "h2a", env.header, frames[1:]))
            self._check_session(env)
            # release: a split tensor's frames are freed as they are joined, not held twice.
            request = decode_message(env, frames, self.limits, REQUESTS, self.version, release=True)
            if isinstance(request, Hello):
                self._open(env, request, handler)
            self._in_hand = ident, env
            try:
                reply = handler(request)
            finally:
                self._in_hand = None
            if not (isinstance(reply, Message) and reply.TYPE in (request.REPLY, "error")):
                raise TypeError(f"the handler answered {request.TYPE} with {reply!r:.60}; "
                                f"expected {request.REPLY} or error")
            if isinstance(request, Bye) and not isinstance(reply, Error):
                self._session = None   # its state is gone: the next hello, anyone's, opens one
        except ProtocolError as exc:
            reply = Error(self._for_peer(exc.code, env), exc.message, env.seq if env else -1)
        except Exception as exc:  # a handler bug must not take the daemon down
            log.exception("handler failed on %s", env.type if env else "?")
            reply = Error("internal", f"{type(exc).__name__}: {exc}", env.seq if env else -1)
        return request, reply, env

    def progress(self, info: dict) -> None:
        """Tell the requester that the request in hand is still being worked on (``info``:
        free-form numbers, e.g. steps done), restarting its reply timeout.

        Call it from the handler, on the thread running :meth:`serve` (the socket is not
        thread-safe); outside a request, or for a requester or server older than 1.2 (which
        do not know the message), it does nothing.
        """
        if self._in_hand is None:
            return
        ident, env = self._in_hand
        if min(env.version, self.version) < Progress.SINCE:
            return
        header, frames = encode_parts(Progress(of=env.type, info=info), env.seq, env.session,
                                      self.version)
        self._emit(ident, header, pack_header(header), frames)

    def _check_session(self, env: Envelope) -> None:
        """The session and sequence rules; a hello's claim on the session is :meth:`_open`'s."""
        if env.type == "hello":
            if not env.session:
                raise ProtocolError("bad_session", "hello must carry a non-empty session id")
            if env.seq != 1:
                raise ProtocolError("bad_sequence", f"hello must carry seq 1; got {env.seq}")
            return
        session = self._session
        if session is None or env.session != session.id:
            if env.session in self._lost:
                raise ProtocolError("session_lost", self._lost[env.session])
            if session is None:
                raise ProtocolError("bad_session", f"{env.type!s:.40} before hello: open a session "
                                                   "with hello (seq 1) first")
            # The owner's session id is its credential: never named to anyone else.
            raise ProtocolError("bad_session", f"session {env.session!r:.60} is not the open "
                                               f"session: {self._in_use(session)}")
        if env.seq != session.seq + 1:
            raise ProtocolError("bad_sequence", f"seq {env.seq}, expected {session.seq + 1}")
        session.seq = env.seq

    def _open(self, env: Envelope, hello: Hello, handler: Callable[[Message], Message]) -> None:
        """Give the session to ``hello``, whose body has been checked: reopen it for its own
        session id and client, open one if there is none, take it over from a session idle for
        the lease (or without one), else refuse (``busy``)."""
        session, now = self._session, time.monotonic()
        if session is not None and (env.session, hello.client) != (session.id, session.client):
            idle = now - session.idle_since
            if session.leased and idle < self.lease:
                raise ProtocolError("busy", f"{self._in_use(session)}; another client's hello "
                                            f"takes it over once it has been idle {self.lease:g} s")
            # The old session's state goes before the new session can see any of it.
            ended = handler(Bye())
            if isinstance(ended, Error):
                raise ProtocolError(ended.code, ended.message)
            when = (f"after it had been idle {idle:.1f} s, longer than the lease of "
                    f"{self.lease:g} s" if session.leased
                    else "(opened by a host older than 1.4, it had no lease)")
            self._lost[session.id] = (f"session {session.id!r:.60} was taken over by "
                                      f"{hello.client!r:.60} {when}; its state is gone")
            while len(self._lost) > MAX_LOST:
                del self._lost[next(iter(self._lost))]
        self._lost.pop(env.session, None)
        self._session = _Session(env.session, hello.client, 1,
                                 leased=min(env.version, self.version) >= Bye.SINCE, idle_since=now)

    def _in_use(self, session: _Session) -> str:
        idle = time.monotonic() - session.idle_since
        return f"the accelerator is in use by {session.client!r:.60} (idle {idle:.1f} s)"

    def _for_peer(self, code: str, env: Envelope | None) -> str:
        """``code``, or the one a peer of an older minor gets instead (``ERROR_CODES_SINCE``)."""
        if code in ERROR_CODES_SINCE and env is not None:
            since, older = ERROR_CODES_SINCE[code]
            if min(env.version, self.version) < since:
                return older
        return code

    def _send(self, ident: bytes, reply: Message, env: Envelope | None) -> None:
        seq, session = (env.seq, env.session) if env else (0, "")
        try:
            header, frames = encode_parts(reply, seq, session, self.version)
            packed = pack_header(header)
        except Exception as exc:  # e.g. a handler put an unencodable object in a dict
            log.exception("cannot encode the reply %s", reply.TYPE)
            header, frames = encode_parts(Error("internal", f"cannot encode the reply: {exc}",
                                                seq if env else -1), seq, session, self.version)
            packed = pack_header(header)
        self._emit(ident, header, packed, frames)

    def _emit(self, ident: bytes, header: dict, packed: bytes, frames: list) -> None:
        # No ROUTER_MANDATORY: a message to a client that vanished is dropped, not an error.
        # Tensors are copied: the handler may return views of state that the next request
        # changes while ZeroMQ is still sending.
        # The tap sees the message before it leaves, so whoever holds it can rely on the
        # record of it already existing (traces are the truth, even across a crash).
        if self._tap:
            self._tap(TapEvent(time.monotonic(), "a2h", header, frames))
        _send(self._sock, [ident, packed], frames, copy_tensors=True)

    def close(self) -> None:
        """Close the socket; waits at most ``SERVER_LINGER_MS`` for the last replies to leave."""
        if self._closed:
            return
        self._closed = True
        self._sock.close(linger=SERVER_LINGER_MS)
        if self._auth is not None:
            self._auth.stop()
        if self._own_ctx:
            self._ctx.term()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
