"""The accelerator daemon: a protocol server in front of one backend, with a state machine.

    serve("tcp://127.0.0.1:5555", lease=60)       # blocks until the session's shutdown

or, as its own process, ``python -m accel --bind ipc:///tmp/a.sock [--lease 60]``. The codec
checks each message on its own (types, ranges, dtypes, ranks, finiteness) and the server its
session (one at a time owns the daemon, leased: :mod:`protocol.channel`); :class:`Daemon`
checks it against the session's state: whether it is legal now and whether its shapes and
values agree with the configuration. States (``docs/accelerator.md`` has the full table)::

    fresh --configure--> configured --load_data (all rows)--> loaded --recentre--> anchored
    any state --bye (the session ends, or is taken over)--> fresh

A rejected request leaves the state as it was and the daemon keeps serving.

A backend whose class declares a ``progress`` attribute (the rtl one) gets the server's
:meth:`~protocol.channel.Server.progress` there and calls it while a long request runs, which
keeps the host's reply timeout from firing; backends without it are left alone.
"""
from __future__ import annotations

import ctypes
import signal
import sys
import threading
from typing import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from accel import backends
from accel.spec import Backend, KernelConfig, KernelError
from protocol.capabilities import CapabilityError
from protocol.channel import LEASE_S, Server
from protocol.codec import Limits, ProtocolError
from protocol.keys import ServerKeys
from protocol.messages import (PROTOCOL_VERSION, Ack, Bye, Capabilities, Configure, EpochReport,
                               Fetch, Hello, LoadData, Message, Promote, Recentre, RunEpoch, Shutdown,
                               State)

STATES = ("fresh", "configured", "loaded", "anchored")


class Daemon:
    """Request handler: ``Daemon().handle(msg) -> reply``; raises ProtocolError to refuse.

        >>> d = Daemon()
        >>> d.handle(Hello(client="doc")).spec
        [2, 0]
        >>> d.handle(Fetch())
        Traceback (most recent call last):
        ...
        protocol.codec.ProtocolError: bad_state: fetch needs configure first

    ``backend_options`` go to the backend's constructor (``counting=True`` for the emulated one);
    ``progress`` (the server's :meth:`~protocol.channel.Server.progress`) goes to every backend
    instance whose class declares a ``progress`` attribute.
    """

    def __init__(self, backend: str = "emulated", limits: Limits = Limits(), *,
                 progress: Callable[[dict], None] | None = None, **backend_options) -> None:
        self.backend_cls = backends.backend_class(backend)    # ValueError for an unknown name
        self.caps = backends.capabilities(backend)
        self.backend_name = backend
        self.backend_options = backend_options
        self.limits = limits
        self.progress = progress
        self._reset()

    def _new_backend(self) -> Backend:
        backend = self.backend_cls(**self.backend_options)
        if hasattr(self.backend_cls, "progress"):   # declared by backends that report progress
            backend.progress = self.progress
        return backend

    def _reset(self) -> None:
        self.state = "fresh"
        self.backend = self._new_backend()
        self.cfg: KernelConfig | None = None
        self.loaded_rows = np.zeros(0, dtype=bool)

    def capabilities(self) -> Capabilities:
        fields = self.caps.message_fields()
        fields["limits"] = {"max_message_bytes": self.limits.max_message_bytes,
                            "max_tensor_bytes": self.limits.max_tensor_bytes, **fields["limits"]}
        return Capabilities(version=list(PROTOCOL_VERSION), **fields)

    def handle(self, msg: Message) -> Message:
        try:
            return getattr(self, "_on_" + msg.TYPE)(msg)
        except (KernelError, CapabilityError) as exc:
            raise ProtocolError("bad_value", str(exc)) from None

    # ---- state checks ---------------------------------------------------------------

    def _need(self, what: str, state: str) -> None:
        """Refuse ``what`` unless the daemon has reached ``state``."""
        have = STATES.index(self.state)
        if have >= STATES.index(state):
            return
        if self.state == "fresh":
            raise ProtocolError("bad_state", f"{what} needs configure first")
        if self.state == "configured":
            n, k = self.cfg.n_samples, int(self.loaded_rows.sum())
            raise ProtocolError("bad_state", f"{what} needs all {n} rows loaded first ({k} of {n} loaded)")
        raise ProtocolError("bad_state", f"{what} needs a recentre first")

    def _shape(self, name: str, arr: np.ndarray, want: tuple[int, ...]) -> None:
        if arr.shape != want:
            raise ProtocolError("bad_shape", f"{name} has shape {list(arr.shape)}; the configuration "
                                             f"needs {list(want)}")

    # ---- requests -------------------------------------------------------------------

    def _on_hello(self, msg: Hello) -> Capabilities:
        # The state is the session's: a new session finds it fresh, since the one before ended
        # with a bye (its own, or the server's at a takeover); a reopened one finds its own.
        return self.capabilities()

    def _on_bye(self, msg: Bye) -> Ack:
        self._reset()   # drops the data too: memory goes back before the next session
        return Ack(of="bye", info={})

    def _on_shutdown(self, msg: Shutdown) -> Ack:
        return Ack(of="shutdown", info={})

    def _on_configure(self, msg: Configure) -> Ack:
        if msg.problem == "softmax" and msg.n_outputs < 2:
            raise ProtocolError("bad_value", f"softmax needs n_outputs >= 2 classes; got {msg.n_outputs}")
        if msg.problem != "softmax" and msg.n_outputs != 1:
            raise ProtocolError("bad_value", f"{msg.problem} needs n_outputs = 1; got {msg.n_outputs}")
        limits = self.caps.limits
        try:
            self.caps.check_sizes(msg.n_samples, msg.n_features, msg.n_outputs)
        except CapabilityError as exc:
            raise ProtocolError("too_large", str(exc)) from None
        data, offset, acc = self.caps.check_run(data=msg.data_format, offset=msg.offset_format,
                                                acc=msg.acc_format, rounding=msg.rounding,
                                                n_features=msg.n_features, problem=msg.problem)
        if "max_data_bytes" in limits:
            need = msg.n_samples * msg.n_features * backends.data_bytes(self.backend_name, data)
            if need > limits["max_data_bytes"]:
                raise ProtocolError("too_large", f"the data would take {need} bytes held as {data!r}, over "
                                                 f"the limit of {limits['max_data_bytes']}")
        cfg = KernelConfig(problem=msg.problem, n_samples=msg.n_samples, n_features=msg.n_features,
                           n_outputs=msg.n_outputs, data=data, offset=offset, acc=acc, rounding=msg.rounding,
                           rbits=msg.rbits, lanes=msg.lanes, seed=msg.seed, l2=msg.l2, scale=msg.scale)
        backend = self._new_backend()
        scale = backend.configure(cfg)          # may refuse the scale; then nothing changes
        self.backend, self.cfg, self.state = backend, cfg, "configured"
        self.loaded_rows = np.zeros(msg.n_samples, dtype=bool)
        return Ack(of="configure", info={"scale": scale, "data_format": repr(data),
                                         "offset_format": repr(offset), "acc_format": repr(acc)})

    def _on_load_data(self, msg: LoadData) -> Ack:
        self._need("load_data", "configured")
        cfg, rows = self.cfg, msg.x.shape[0]
        if rows == 0:
            raise ProtocolError("bad_shape", "x has no rows")
        self._shape("x", msg.x, (rows, cfg.n_features))
        self._shape("y", msg.y, (rows,))
        if msg.start + rows > cfg.n_samples:
            raise ProtocolError("bad_shape", f"rows {msg.start}..{msg.start + rows - 1} go beyond "
                                             f"n_samples = {cfg.n_samples}")
        y = np.asarray(msg.y, dtype=np.float64)
        if cfg.problem == "logistic" and not np.all((y == 0) | (y == 1)):
            raise ProtocolError("bad_value", "logistic labels must be 0 or 1")
        if cfg.problem == "softmax" and not np.all((y == np.round(y)) & (y >= 0) & (y < cfg.n_outputs)):
            raise ProtocolError("bad_value", f"softmax labels must be integers 0..{cfg.n_outputs - 1}")
        result = self.backend.load_data(msg.start, msg.x, y)
        self.loaded_rows[msg.start:msg.start + rows] = True
        held = int(self.loaded_rows.sum())
        if self.state == "configured" and held == cfg.n_samples:
            self.state = "loaded"
        return Ack(of="load_data", info={"saturations": result.saturations, "rows": held, "ops": result.ops})

    def _on_recentre(self, msg: Recentre) -> Ack:
        self._need("recentre", "loaded")
        cfg = self.cfg
        self._shape("full_grad", msg.full_grad, (cfg.n_features, cfg.n_outputs))
        if msg.anchor is None and cfg.problem != "linear":
            raise ProtocolError("missing_field", f"{cfg.problem} needs the anchor terms "
                                                 f"(n_samples × n_outputs probabilities)")
        if msg.anchor is not None:
            self._shape("anchor", msg.anchor, (cfg.n_samples, cfg.n_outputs))
            if cfg.problem != "linear" and not (msg.anchor.min() >= 0 and msg.anchor.max() <= 1):
                raise ProtocolError("bad_value", "anchor terms of logistic/softmax are probabilities in [0, 1]")
        result = self.backend.recentre(msg.full_grad, msg.anchor, msg.scale)
        self.state = "anchored"
        return Ack(of="recentre", info={"scale": result.scale, "ops": result.ops})

    def _on_run_epoch(self, msg: RunEpoch) -> EpochReport:
        self._need("run_epoch", "loaded")
        if msg.algorithm == "svrg":
            self._need("run_epoch svrg", "anchored")
        self._shape("order", msg.order, (msg.steps * msg.batch_size,))
        if msg.order.size and (msg.order.min() < 0 or msg.order.max() >= self.cfg.n_samples):
            raise ProtocolError("bad_value", f"order holds indices outside 0..{self.cfg.n_samples - 1}")
        r = self.backend.run_epoch(msg.algorithm, msg.epoch, msg.steps, msg.step_size, msg.batch_size, msg.order)
        return EpochReport(epoch=msg.epoch, steps=r.steps, ops=r.ops, memory=r.memory, saturations=r.saturations,
                           work=r.work or None)

    def _on_promote(self, msg: Promote) -> Ack:
        self._need("promote", "configured")
        cfg = self.cfg
        offset = self.caps.check_format("offset", msg.offset_format)
        acc = cfg.acc if msg.acc_format is None else self.caps.check_format("acc", msg.acc_format)
        self.caps.check_exactness(cfg.data, offset, acc, cfg.n_features)
        r = self.backend.promote(offset, acc)
        self.cfg = KernelConfig(**{**vars(cfg), "offset": offset, "acc": acc})
        return Ack(of="promote", info={"saturations": r.saturations, "offset_format": repr(offset),
                                       "acc_format": repr(acc), "scale": r.scale, "ops": r.ops})

    def _on_fetch(self, msg: Fetch) -> State:
        self._need("fetch", "configured")
        st = self.backend.fetch()
        return State(offset=st.offset, scale=st.scale, offset_format=repr(st.offset_format),
                     counters=st.counters)


def _large_allocations_from_the_system(threshold: int = 1 << 20) -> None:
    """Have glibc serve every allocation of ``threshold`` bytes or more by mmap, so that freeing
    one returns its memory at once. By default glibc raises that threshold to the size of the
    largest block freed so far (up to 32 MiB): after one large message, each chunk's 8–32 MiB
    temporaries would come from the heap and stay with the daemon. No-op off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-3, threshold)       # M_MMAP_THRESHOLD; a fixed value also stops its growth


def serve(address: str, backend: str = "emulated", *, limits: Limits = Limits(), tap=None,
          lease: float = LEASE_S, curve: ServerKeys | None = None, insecure: bool = False,
          **backend_options) -> None:
    """Serve ``backend`` on ``address`` until the session's shutdown request (or SIGTERM in the
    main thread); ``lease``: seconds a session may be idle before another host's hello may take
    the daemon over; ``curve``: serve only the hosts it lists, encrypted (an address other
    machines can reach needs it, or ``insecure``)."""
    _large_allocations_from_the_system()
    server = Server(address, limits=limits, tap=tap, lease=lease, curve=curve, insecure=insecure)
    # The kernels are single-threaded; a BLAS thread pool would only busy-wait after each numpy
    # call and take the core the host's outer loop needs.
    blas = threadpool_limits(1)
    try:
        # The backend reports progress through the server, which sends it to the requester.
        daemon = Daemon(backend, limits, progress=server.progress, **backend_options)
        stop = threading.Event()
        if threading.current_thread() is threading.main_thread():
            # The launcher stops us with SIGTERM: finish the current request, close the socket, return.
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
        print(f"cosim accel: serving {backend} on {server.address}", file=sys.stderr, flush=True)
        server.serve(daemon.handle, should_stop=stop.is_set)
    finally:
        blas.restore_original_limits()
        server.close()
