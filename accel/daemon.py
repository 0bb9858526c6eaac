"""The accelerator daemon: a protocol server in front of one backend, with a state machine.

    serve("tcp://127.0.0.1:5555", lease=60)       # blocks until the session's shutdown

or, as its own process, ``python -m accel --bind ipc:///tmp/a.sock [--lease 60]``. The codec
checks each message on its own (types, ranges, dtypes, ranks, finiteness) and the server its
session (one at a time owns the daemon, leased: :mod:`protocol.channel`); :class:`Daemon`
checks it against the session's state: whether it is legal now and whether its shapes and
values agree with the configuration. States (``docs/accelerator.md`` has the full table)::

    fresh --configure--> configured --load_data (all rows)--> loaded --recentre--> anchored
    loaded or anchored --restore--> loaded
    fresh --configure_net--> configured --load_data (all rows)--> loaded --recentre_net--> anchored
                                            (a network: net_grad, run_net_epoch, fetch_net; HALP's
                                             run_net_epoch in anchored)
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
import time
from typing import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from accel import backends
from accel.spec import Backend, KernelConfig, KernelError, OffsetState
from accel.spec.backend import COUNTERS
from protocol.capabilities import CapabilityError
from protocol.channel import LEASE_S, Server
from protocol.codec import Limits, ProtocolError
from protocol.formats import parse_format
from protocol.keys import ServerKeys
from protocol.messages import (PROTOCOL_VERSION, Ack, Bye, Capabilities, Configure, ConfigureNet,
                               EpochReport, Fetch, FetchNet, Hello, LoadData, Message, NetGrad,
                               NetGradient, NetState, Promote, Recentre, RecentreNet, Restore, RunEpoch,
                               RunNetEpoch, Shutdown, State)

STATES = ("fresh", "configured", "loaded", "anchored")
NET_BATCH_ELEMENTS = 1 << 24   # a network step's largest activation matrix: 128 MiB of float64


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
        self.net = None        # the network of a configure_net (accel.backends.net.NetKernel)
        self.loaded_rows = np.zeros(0, dtype=bool)

    def capabilities(self) -> Capabilities:
        fields = self.caps.message_fields()
        fields["limits"] = {"max_message_bytes": self.limits.max_message_bytes,
                            "max_tensor_bytes": self.limits.max_tensor_bytes,
                            "max_frame_bytes": self.limits.max_frame_bytes,
                            "max_frames": self.limits.max_frames, **fields["limits"]}
        return Capabilities(version=list(PROTOCOL_VERSION), **fields)

    def handle(self, msg: Message) -> Message:
        try:
            return getattr(self, "_on_" + msg.TYPE)(msg)
        except (KernelError, CapabilityError) as exc:
            raise ProtocolError("bad_value", str(exc)) from None

    # ---- state checks ---------------------------------------------------------------

    def _need(self, what: str, state: str, *, net: bool | None = False) -> None:
        """Refuse ``what`` unless the daemon has reached ``state`` (``net``: for a network, as
        configure_net sets; False: for a linear problem, as configure sets; None: either)."""
        first = "configure_net" if net else "configure"
        if self.state != "fresh" and net is not None and net != (self.net is not None):
            raise ProtocolError("bad_state", f"{what} needs {first} first: this session is configured "
                                             f"for {'a linear problem' if net else 'a network'}")
        have = STATES.index(self.state)
        if have >= STATES.index(state):
            return
        if self.state == "fresh":
            raise ProtocolError("bad_state", f"{what} needs {first} first")
        if self.state == "configured":
            n, k = len(self.loaded_rows), int(self.loaded_rows.sum())
            raise ProtocolError("bad_state", f"{what} needs all {n} rows loaded first ({k} of {n} loaded)")
        raise ProtocolError("bad_state", f"{what} needs {'recentre_net' if net else 'a recentre'} first")

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
        self.backend, self.cfg, self.state, self.net = backend, cfg, "configured", None
        self.loaded_rows = np.zeros(msg.n_samples, dtype=bool)
        return Ack(of="configure", info={"scale": scale, "data_format": repr(data),
                                         "offset_format": repr(offset), "acc_format": repr(acc)})

    def _on_load_data(self, msg: LoadData) -> Ack:
        self._need("load_data", "configured", net=None)
        if self.net is not None:
            return self._load_net(msg)
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
        r = self.backend.run_epoch(msg.algorithm, msg.epoch, msg.steps, msg.step_size, msg.batch_size, msg.order,
                                   bool(msg.statistics))
        st = r.stats
        stats = {} if st is None else dict(
            updates=st.updates, vanished=st.vanished, update_min=st.update_min, update_max=st.update_max,
            update_binades={str(b): n for b, n in st.binades.items()})
        return EpochReport(epoch=msg.epoch, steps=r.steps, ops=r.ops, memory=r.memory, saturations=r.saturations,
                           work=r.work or None, **stats)

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

    def _on_restore(self, msg: Restore) -> Ack:
        self._need("restore", "loaded")
        cfg = self.cfg
        self._shape("offset", msg.offset, (cfg.n_features, cfg.n_outputs))
        offset = self.caps.check_format("offset", msg.offset_format)
        self.caps.check_exactness(cfg.data, offset, cfg.acc, cfg.n_features)
        codes = np.ldexp(msg.offset, offset.frac_bits)
        if not (np.all(codes == np.rint(codes)) and msg.offset.min() >= offset.min_value
                and msg.offset.max() <= offset.max_value):
            raise ProtocolError("bad_value", f"offset holds values off the grid of {offset!r} "
                                             f"(multiples of 2^-{offset.frac_bits} in "
                                             f"[{offset.min_value:g}, {offset.max_value:g}])")
        counters = msg.counters
        # Keys compared as a set: msgpack map keys may be bytes too, which do not sort among str.
        # Values below 2^63 (what a host keeps in an int64), so that counting on from them stays
        # within what a reply can carry (msgpack's ints end at 2^64).
        if counters.keys() != set(COUNTERS) or not all(
                type(v) is int and 0 <= v < 2**63 for v in counters.values()):
            raise ProtocolError("bad_value", f"counters: the integers {', '.join(COUNTERS)} in [0, 2^63) "
                                             f"(as fetch returns them); got {counters!r:.200}")
        scale = self.backend.restore(OffsetState(offset=msg.offset, scale=msg.scale, offset_format=offset,
                                                 counters=dict(counters)))
        self.cfg = KernelConfig(**{**vars(cfg), "offset": offset})
        self.state = "loaded"   # the anchor is not restored: an svrg epoch needs a recentre first
        return Ack(of="restore", info={"scale": scale, "offset_format": repr(offset)})

    def _on_fetch(self, msg: Fetch) -> State:
        self._need("fetch", "configured")
        st = self.backend.fetch()
        return State(offset=st.offset, scale=st.scale, offset_format=repr(st.offset_format),
                     counters=st.counters)

    # ---- networks (accel.backends.net; docs/accelerator.md, "Networks on the accelerator") ----

    def _on_configure_net(self, msg: ConfigureNet) -> Ack:
        from accel.backends.net import NetKernel, check_layers, layer_of
        from accel.spec.layer import LayerFormats

        limits = self.caps.limits
        if "max_net_params" not in limits:
            raise ProtocolError("bad_value", f"the {self.backend_name} backend does not run networks "
                                             "(its capabilities announce no max_net_params)")
        layers = [layer_of(i, lay, limits["max_features"])
                  for i, lay in enumerate(msg.layers if len(msg.layers) <= 64 else ())]
        if not 1 <= len(msg.layers) <= 64:
            raise ProtocolError("bad_value", f"layers: 1 to 64 layers; got {len(msg.layers)}")
        check_layers(layers)
        n_params = sum(lay.n_params for lay in layers)
        if n_params > limits["max_net_params"]:
            raise ProtocolError("too_large", f"the network has {n_params} parameters, over the accelerator's "
                                             f"max_net_params = {limits['max_net_params']}")
        try:
            self.caps.check_sizes(msg.n_samples, layers[0].fan_in, layers[-1].fan_out)
        except CapabilityError as exc:
            raise ProtocolError("too_large", str(exc)) from None
        need = msg.n_samples * layers[0].fan_in * 8     # the data, held as float64
        if need > limits.get("max_data_bytes", need):
            raise ProtocolError("too_large", f"the data would take {need} bytes held as float64, over the "
                                             f"limit of {limits['max_data_bytes']}")
        self._shape("weights", msg.weights, (n_params,))
        fmts = LayerFormats(msg.weights_format, msg.activations_format, msg.errors_format, msg.weight_grads_format,
                            msg.acc_format, chunk=msg.chunk, update=msg.update_format,
                            update_rounding=msg.rounding, rbits=msg.rbits or None)
        net = NetKernel(layers, fmts, n_samples=msg.n_samples, lanes=msg.lanes, seed=msg.seed, l2=msg.l2,
                        weights=msg.weights)
        self._reset()
        self.net, self.state = net, "configured"
        self.loaded_rows = np.zeros(msg.n_samples, dtype=bool)
        return Ack(of="configure_net", info={"formats": repr(fmts), "n_params": n_params})

    def _load_net(self, msg: LoadData) -> Ack:
        net, rows = self.net, msg.x.shape[0]
        if rows == 0:
            raise ProtocolError("bad_shape", "x has no rows")
        self._shape("x", msg.x, (rows, net.layers[0].fan_in))
        self._shape("y", msg.y, (rows,))
        if msg.start + rows > net.n_samples:
            raise ProtocolError("bad_shape", f"rows {msg.start}..{msg.start + rows - 1} go beyond "
                                             f"n_samples = {net.n_samples}")
        y, classes = np.asarray(msg.y, dtype=np.float64), net.layers[-1].fan_out
        if not np.all((y == np.round(y)) & (y >= 0) & (y < classes)):
            raise ProtocolError("bad_value", f"labels must be integers 0..{classes - 1}")
        saturations = net.load_data(msg.start, msg.x, y)
        self.loaded_rows[msg.start:msg.start + rows] = True
        held = int(self.loaded_rows.sum())
        if held == net.n_samples:
            self.state = "loaded"
        return Ack(of="load_data", info={"saturations": saturations, "rows": held})

    def _indices(self, name: str, idx: np.ndarray, batch: int) -> None:
        """Refuse indices out of range, and a minibatch whose activations would take more than
        NET_BATCH_ELEMENTS values in one layer (the work memory of a step)."""
        widest = max(lay.work for lay in self.net.layers)
        if batch * widest > NET_BATCH_ELEMENTS:
            raise ProtocolError("too_large", f"a minibatch of {batch} samples takes {batch * widest} values in "
                                             f"the widest layer, over the accelerator's {NET_BATCH_ELEMENTS}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.net.n_samples):
            raise ProtocolError("bad_value", f"{name} holds indices outside 0..{self.net.n_samples - 1}")

    def _on_net_grad(self, msg: NetGrad) -> NetGradient:
        self._need("net_grad", "loaded", net=True)
        self._shape("weights", msg.weights, (self.net.n_params,))
        if msg.batch.size == 0:
            raise ProtocolError("bad_shape", "batch has no samples")
        steps = msg.steps or 1           # since 1.6: local steps (accel.backends.net, "Local steps")
        if steps > 1:
            for name in ("step_size", "epoch", "first_step"):
                if getattr(msg, name) is None:
                    raise ProtocolError("missing_field", f"net_grad.{name}: required when steps > 1 "
                                                         f"(steps = {steps})")
            if msg.batch.size % steps:
                raise ProtocolError("bad_value", f"net_grad.batch: {msg.batch.size} indices are not a multiple "
                                                 f"of steps = {steps}")
        batch = msg.batch.size // steps
        self._indices("batch", msg.batch, batch)
        started = time.perf_counter()
        if steps == 1:
            grad, loss = self.net.gradient(msg.weights, msg.batch)
        else:
            grad, loss = self.net.local_steps(msg.weights, msg.batch, steps, msg.step_size, msg.epoch,
                                              msg.first_step)
        seconds = time.perf_counter() - started
        ops, memory = self.net.counts(batch, update=False) if steps == 1 else self.net.local_counts(batch, steps)
        return NetGradient(grad=grad, loss=loss if np.isfinite(loss) else None, ops={**ops, **self.net.swamped_ops()},
                           memory=dict(memory), work={"seconds": seconds})

    def _on_recentre_net(self, msg: RecentreNet) -> Ack:
        self._need("recentre_net", "loaded", net=True)
        self._shape("anchor", msg.anchor, (self.net.n_params,))
        self._shape("full_grad", msg.full_grad, (self.net.n_params,))
        self.net.recentre(msg.anchor, msg.full_grad, msg.scale, parse_format(msg.offset_format))
        self.state = "anchored"
        return Ack(of="recentre_net", info={"scale": msg.scale, "offset_format": repr(self.net.halp.offset_format)})

    def _on_run_net_epoch(self, msg: RunNetEpoch) -> EpochReport:
        halp = msg.algorithm == "halp"
        self._need("run_net_epoch with algorithm halp" if halp else "run_net_epoch", "anchored" if halp else "loaded",
                   net=True)
        self._shape("order", msg.order, (msg.steps * msg.batch_size,))
        self._indices("order", msg.order, msg.batch_size)
        saturations = 0
        if halp:
            ops, memory, saturations, seconds = self.net.run_halp_epoch(msg.epoch, msg.steps, msg.step_size,
                                                                        msg.batch_size, msg.order)
        else:
            ops, memory, seconds = self.net.run_epoch(msg.epoch, msg.steps, msg.step_size, msg.batch_size, msg.order)
        return EpochReport(epoch=msg.epoch, steps=msg.steps, ops=ops, memory=memory, saturations=saturations,
                           work={"seconds": seconds})

    def _on_fetch_net(self, msg: FetchNet) -> NetState:
        self._need("fetch_net", "configured", net=True)
        h = self.net.halp
        return NetState(weights=self.net.weights, update_format=repr(self.net.fmts.update),
                        **({"offset": h.offset, "scale": h.scale, "offset_format": repr(h.offset_format)} if h else {}))


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
    machines can reach needs it, or ``insecure``). Once serving it prints ``cosim accel: serving
    BACKEND on ADDRESS`` to stderr, ADDRESS being the one bound (a tcp port 0 picks a free port:
    this line names it; ``cosim.launch`` reads it)."""
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
