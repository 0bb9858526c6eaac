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

Session and sequence rules (checked by the server before the body is validated):
``hello`` opens a session on its connection; its header carries a non-empty session id and
seq 1, and a valid hello replaces any earlier session. Every later request carries that
session (else ``bad_session``) and seq = previous + 1 (else ``bad_sequence``). A request
rejected for its sequence number does not consume the number; any other request does,
even one then rejected for a bad field, its state or a handler failure. Replies echo the
request's seq and session.

Progress (since 1.2): while the handler works on a request, :meth:`Server.progress` sends a
``progress`` message with the request's seq and session, to a 1.2 or later requester only.
:meth:`Client.request` taps it, hands it to ``on_progress`` and waits a fresh ``timeout`` for
the reply, so a slow but healthy accelerator does not time out; a hung one (neither progress
nor reply for ``timeout`` s) still does, and a dead one is noticed by the heartbeats.

Transports: ``tcp://``, ``ipc://`` and, in one process, ``inproc://`` (pass one
``context`` to both ends).

Versions: each end sends its own ``version`` (default ``PROTOCOL_VERSION``; pass an older or
newer (major, minor) to play such a peer) and reads the other's by the rules of
:mod:`protocol.codec`. A request of another major gets a ``bad_version`` error reply.
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

from .codec import (Envelope, Limits, ProtocolError, Version, check_version, decode_message,
                    encode_parts, pack_header, read_envelope)
from .messages import (PROTOCOL_VERSION, REPLIES, REQUESTS, Error, Hello, Message, Progress,
                       Shutdown)

__all__ = ["Client", "Server", "TapEvent", "AcceleratorError", "AcceleratorGone",
           "AcceleratorTimeout"]

log = logging.getLogger(__name__)

# libzmq answers heartbeats on its I/O thread, so a daemon busy in numpy still answers;
# a peer that stops answering for HEARTBEAT_TIMEOUT_MS is dropped (disconnect event).
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 5000
SERVER_LINGER_MS = 1000   # bounded: lets the last reply (to shutdown) leave before exit
WAIT_SLICE_S = 0.1         # a client notices a lost connection this fast
MAX_CONNECTIONS = 1024    # session table entries kept; the oldest connection is forgotten


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


def _recv(sock: zmq.Socket, small: int) -> list:
    """A multipart message: its first ``small`` frames as bytes (cheaper than zmq.Frame for
    small frames), the tensor frames after them without copying."""
    frames = [sock.recv() for _ in range(small)]
    while sock.getsockopt(zmq.RCVMORE):
        frames.append(sock.recv(copy=False))
    return frames


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
                 version: Version = PROTOCOL_VERSION) -> None:
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
        self._slice_ms = -1
        self._was_connected = False
        self._connected = False
        self._closed_because: str | None = None
        self._own_ctx = context is None
        self._ctx = context or zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        _tune(self._sock)
        self._monitor = self._sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        try:
            self._sock.connect(address)
        except zmq.ZMQError as exc:
            self.close(f"cannot connect: {exc}")
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
        header, frames = encode_parts(msg, seq, self.session, self.version)
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
                reply_frames = _recv(self._sock, 1)
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
        return reply

    def _wait(self, what: str, seq: int, timeout: float, since: float, progressed: bool) -> list:
        """The next message after a first slice passed without one: keep receiving in slices,
        and between slices look whether the connection was lost or ``timeout`` seconds have
        passed ``since`` (the request left, or its last progress came)."""
        deadline = since + timeout
        while True:
            self._drain_monitor()
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
                self._fail(AcceleratorTimeout, f"the accelerator at {self.address} did not answer "
                           f"{what} (seq {seq}) within {timeout:g} s; is `cosim accel` running there?")
            slice_ms = max(1, int(min(left, WAIT_SLICE_S) * 1000))
            if slice_ms != self._slice_ms:
                self._sock.setsockopt(zmq.RCVTIMEO, slice_ms)
                self._slice_ms = slice_ms
            try:
                return _recv(self._sock, 1)
            except zmq.Again:
                pass

    def _drain_monitor(self) -> None:
        while self._monitor.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            event = recv_monitor_message(self._monitor)["event"]
            self._connected = event == zmq.EVENT_CONNECTED
            self._was_connected |= self._connected

    def _fail(self, kind: type, text: str) -> None:
        self.close(text)
        raise kind(text)

    def close(self, reason: str = "closed by its owner") -> None:
        """Close the socket (pending messages are dropped); later requests raise."""
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


class Server:
    """The accelerator's end: validates each request, calls the handler, replies."""

    def __init__(self, address: str, *, limits: Limits = Limits(), tap: Tap | None = None,
                 context: zmq.Context | None = None,
                 version: Version = PROTOCOL_VERSION) -> None:
        check_address(address)
        self.version = check_version(version)
        self.limits = limits
        self._tap = tap
        self._own_ctx = context is None
        self._ctx = context or zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        _tune(self._sock)
        # Hard guard: ZeroMQ disconnects a peer whose frame exceeds this, before Python
        # allocates it; read_envelope applies the finer limits.
        self._sock.setsockopt(zmq.MAXMSGSIZE, limits.max_message_bytes)
        try:
            wildcard = address.startswith("tcp://") and address.endswith(":0")
            self._sock.bind(address[:-2] + ":*" if wildcard else address)
        except zmq.ZMQError as exc:
            self._sock.close(linger=0)
            if self._own_ctx:
                self._ctx.term()
            raise OSError(f"cannot bind {address} ({exc}); addresses look like tcp://HOST:PORT "
                          "(port 0 picks a free one), ipc:///PATH or inproc://NAME") from None
        self._address = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self._sessions: dict[bytes, list] = {}   # connection id → [session, last seq]
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
        ``internal`` — the server keeps serving either way.
        """
        self._sock.rcvtimeo = poll_ms  # a blocking receive is cheaper than poll + receive
        while not (should_stop and should_stop()):
            try:
                ident, *frames = _recv(self._sock, 2)
            except zmq.Again:
                continue
            request, reply, env = self._answer(ident, frames, handler)
            self._send(ident, reply, env)
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
            self._check_sequence(ident, env)
            request = decode_message(env, frames, self.limits, REQUESTS, self.version)
            if isinstance(request, Hello):
                self._sessions.pop(ident, None)  # re-insert: the newest connection is kept longest
                self._sessions[ident] = [env.session, 1]
                while len(self._sessions) > MAX_CONNECTIONS:
                    del self._sessions[next(iter(self._sessions))]
            self._in_hand = ident, env
            try:
                reply = handler(request)
            finally:
                self._in_hand = None
            if not (isinstance(reply, Message) and reply.TYPE in (request.REPLY, "error")):
                raise TypeError(f"the handler answered {request.TYPE} with {reply!r:.60}; "
                                f"expected {request.REPLY} or error")
        except ProtocolError as exc:
            reply = Error(exc.code, exc.message, env.seq if env else -1)
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

    def _check_sequence(self, ident: bytes, env: Envelope) -> None:
        if env.type == "hello":
            if not env.session:
                raise ProtocolError("bad_session", "hello must carry a non-empty session id")
            if env.seq != 1:
                raise ProtocolError("bad_sequence", f"hello must carry seq 1; got {env.seq}")
            return  # a valid hello opens the session once its body has been checked
        state = self._sessions.get(ident)
        if state is None:
            raise ProtocolError("bad_session", f"{env.type!s:.40} before hello: open a session "
                                               "with hello (seq 1) first")
        if env.session != state[0]:
            raise ProtocolError("bad_session", f"session {env.session!r:.60} is not the session "
                                               f"{state[0]!r} opened by hello on this connection")
        if env.seq != state[1] + 1:
            raise ProtocolError("bad_sequence", f"seq {env.seq}, expected {state[1] + 1}")
        state[1] = env.seq

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
        if self._own_ctx:
            self._ctx.term()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
