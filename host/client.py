"""Typed host-side calls to an accelerator daemon, over the protocol client.

Example::

    >>> with AcceleratorClient("ipc:///tmp/accel.sock", timeout=60) as acc:
    ...     caps = acc.hello()
    ...     acc.configure(problem="softmax", n_samples=n, n_features=d, n_outputs=10,
    ...                   data_format="fixed<2,6>", offset_format="fixed<1,7>", acc_format="fp32",
    ...                   rounding="stochastic", rbits=0, lanes=16, seed=0, l2=1e-2, scale=1.0)
    ...     acc.load(x, y)
    ...     acc.recentre(full_grad, anchor, scale=delta)
    ...     report = acc.run_epoch("svrg", epoch=1, step_size=alpha, batch_size=1, order=order)
    ...     z, state = acc.offset()              # scale · q as float64, and the raw state
    ...     acc.restore(state)                   # on a new daemon, after configure and load (1.5+)

A network (1.5+, ``docs/accelerator.md`` "Networks on the accelerator")::

    ...     acc.configure_net(layers=[[64, 128, "relu"], [128, 10, "none"]], weights=w0, ...)
    ...     acc.load(x, y)
    ...     reply = acc.net_grad(w, batch)       # .grad, .loss, .ops, .memory
    ...     reply = acc.net_grad(w, batch, steps=4, step_size=alpha, epoch=1, first_step=0)   # 1.6+: G of 4 local steps
    ...     acc.run_net_epoch(epoch=1, step_size=alpha, batch_size=1, order=order)
    ...     acc.recentre_net(anchor, full_grad, scale, "fixed<1,7>")     # HALP: w̃, g̃, z = scale·q = 0
    ...     acc.run_net_epoch(epoch=2, step_size=alpha, batch_size=1, order=order, algorithm="halp")
    ...     state = acc.fetch_net()                  # .offset q, .scale with it
    ...     w = acc.fetch_net().weights

Errors come from the protocol client: an error reply raises ``AcceleratorError`` (with its
``.code``), a dead accelerator ``AcceleratorGone`` (within a fraction of a second), a silent
one ``AcceleratorTimeout`` (a subclass of it after the timeout); all from ``protocol.channel``.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from protocol.channel import Client
from protocol.keys import ClientKeys
from protocol.messages import (CONV3, CONV_SINCE, Capabilities, Configure, ConfigureNet, EpochReport, Fetch,
                               FetchNet, Hello, LoadData, NetGrad, NetGradient, NetState, Promote, Recentre,
                               RecentreNet, Restore, RunEpoch, RunNetEpoch, Shutdown, State)

# Room for the msgpack header and frame table beside a load_data chunk's two tensors.
HEADER_ALLOWANCE = 64 * 1024


class Unsupported(RuntimeError):
    """The accelerator's protocol version lacks a request this host needs (not sent)."""


class AcceleratorClient:
    """One session with one accelerator daemon; a thin typed layer over ``protocol.channel.Client``
    (``curve``: the keys for a daemon that serves with them, ``protocol.keys.client_keys``)."""

    def __init__(self, address: str, *, timeout: float = 60.0, session: str | None = None,
                 tap: Callable[..., Any] | None = None, curve: ClientKeys | None = None) -> None:
        self.address = address
        self._client = Client(address, session=session, timeout=timeout, tap=tap, curve=curve)
        self.capabilities: Capabilities | None = None
        self.acc_format: str | None = None      # as the accelerator's last configure/promote ack named it

    def __enter__(self) -> "AcceleratorClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, *, end_session: bool = True) -> None:
        """Close; ``end_session=False`` keeps the session open for the next client with the same
        ``session`` id to reopen with its hello (``protocol.channel.Client.close``)."""
        self._client.close(end_session=end_session)

    @property
    def session(self) -> str:
        """The session id this client's requests carry."""
        return self._client.session

    def hello(self, client: str = "cosim-host") -> Capabilities:
        self.capabilities = self._client.request(Hello(client=client))
        return self.capabilities

    def configure(self, **fields: Any) -> None:
        self.acc_format = self._client.request(Configure(**fields)).info.get("acc_format")

    def load(self, x: np.ndarray, y: np.ndarray) -> int:
        """Send the training set in chunks that keep every message under the daemon's limit.

        Returns the number of chunks sent. Needs ``hello()`` first (the limit comes from it).
        """
        if self.capabilities is None:
            raise RuntimeError("call hello() before load(): the chunk size comes from the capabilities")
        limits = self.capabilities.limits
        limit = int(limits["max_message_bytes"])
        row_bytes = x.shape[1] * x.itemsize + y.itemsize
        rows = (limit - HEADER_ALLOWANCE) // row_bytes
        if "max_tensor_bytes" in limits:
            rows = min(rows, int(limits["max_tensor_bytes"]) // (x.shape[1] * x.itemsize))
        if "max_frame_bytes" in limits and "max_frames" in limits:
            # Since 1.5 a tensor goes in frames of max_frame_bytes: x gets all the frames but
            # the header's and one for y.
            frame, frames = int(limits["max_frame_bytes"]), int(limits["max_frames"])
            rows = min(rows, (frames - 2) * frame // (x.shape[1] * x.itemsize), frame // y.itemsize)
        if rows < 1:
            raise ValueError(f"one sample ({row_bytes} bytes) does not fit the accelerator's "
                             f"max_message_bytes={limit}")
        chunks = 0
        for start in range(0, x.shape[0], rows):
            self._client.request(LoadData(start=start, x=np.ascontiguousarray(x[start:start + rows]),
                                          y=np.ascontiguousarray(y[start:start + rows])))
            chunks += 1
        return chunks

    def recentre(self, full_grad: np.ndarray, anchor: np.ndarray | None, scale: float | None) -> None:
        """New anchor. To an accelerator of protocol 1.3 or later with an fp32 accumulator, the anchor
        terms go as float32: numpy's float64 → float32 cast rounds to nearest-even with subnormals,
        which is R into fp32, the values the accelerator stores anyway; half the bytes, same bits."""
        if anchor is not None and self.acc_format == "fp32" and self._peer_has((1, 3)):
            anchor = anchor.astype(np.float32)
        self._client.request(Recentre(full_grad=full_grad, anchor=anchor, scale=scale))

    def _peer_has(self, version: tuple[int, int]) -> bool:
        return self.capabilities is not None and tuple(self.capabilities.version) >= version

    def run_epoch(self, algorithm: str, *, epoch: int, step_size: float, batch_size: int,
                  order: np.ndarray, statistics: bool = False) -> EpochReport:
        """One epoch; with ``statistics`` the report carries the update statistics (an
        accelerator of 1.5 or later; an older one ignores the request)."""
        return self._client.request(RunEpoch(algorithm=algorithm, epoch=epoch, steps=len(order) // batch_size,
                                             step_size=step_size, batch_size=batch_size, order=order,
                                             statistics=statistics or None))

    def promote(self, offset_format: str, acc_format: str | None = None) -> None:
        ack = self._client.request(Promote(offset_format=offset_format, acc_format=acc_format))
        self.acc_format = ack.info.get("acc_format")

    def fetch(self) -> State:
        return self._client.request(Fetch())

    def offset(self) -> tuple[np.ndarray, State]:
        """The accelerator's offset as float64, scale·q with the accelerator's own stored scale."""
        state = self.fetch()
        return state.scale * state.offset, state

    def restore(self, state: State) -> float:
        """Put back ``state`` (a ``fetch`` of a lost accelerator) after configure and load; returns
        the stored scale. An accelerator older than 1.5 does not know the request: Unsupported."""
        self._need("restoring its state", Restore.SINCE)
        ack = self._client.request(Restore(offset=state.offset, offset_format=state.offset_format,
                                           scale=state.scale, counters=state.counters))
        return ack.info["scale"]

    def _need(self, what: str, since: tuple[int, int]) -> None:
        if not self._peer_has(since):
            have = ".".join(map(str, self.capabilities.version)) if self.capabilities else "unknown"
            raise Unsupported(f"the accelerator at {self.address} speaks protocol {have}; {what} "
                              f"needs {since[0]}.{since[1]} or later")

    def configure_net(self, **fields: Any) -> None:
        """Set a network (ConfigureNet's fields). Unsupported unless the accelerator speaks 1.5
        or later and announces networks (``max_net_params`` among its limits), and 1.6 or later
        for a convolution layer."""
        self._need("a network", ConfigureNet.SINCE)
        if any(isinstance(lay, list) and lay[:1] == [CONV3] for lay in fields.get("layers") or ()):
            self._need("a convolution layer", CONV_SINCE)
        if "max_net_params" not in self.capabilities.limits:
            raise Unsupported(f"the {self.capabilities.backend} backend at {self.address} does not run "
                              "networks; use the emulated backend")
        self._client.request(ConfigureNet(**fields))

    def net_grad(self, weights: np.ndarray, batch: np.ndarray, *, steps: int = 1, step_size: float | None = None,
                 epoch: int | None = None, first_step: int | None = None) -> NetGradient:
        """The network's low-precision minibatch gradient at ``weights`` (float64, flat); with
        ``steps`` K > 1 the sum of the gradients of K local steps of ``step_size`` over K equal
        slices of ``batch`` (the round starting at step ``first_step`` of ``epoch``). K > 1 needs
        an accelerator of 1.6 or later (Unsupported otherwise: an older one would ignore steps)."""
        if steps == 1:
            return self._client.request(NetGrad(weights=weights, batch=batch))
        self._need("net_grad with local steps", NetGrad.STEPS_SINCE)
        return self._client.request(NetGrad(weights=weights, batch=batch, steps=steps, step_size=step_size,
                                            epoch=epoch, first_step=first_step))

    def run_net_epoch(self, *, epoch: int, step_size: float, batch_size: int, order: np.ndarray,
                      algorithm: str | None = None) -> EpochReport:
        """len(order)/batch_size steps: LP-SGD on the accelerator's master weights, or with
        ``algorithm="halp"`` HALP on the offset of the last :meth:`recentre_net`."""
        return self._client.request(RunNetEpoch(epoch=epoch, steps=len(order) // batch_size, step_size=step_size,
                                                batch_size=batch_size, order=order, algorithm=algorithm))

    def recentre_net(self, anchor: np.ndarray, full_grad: np.ndarray, scale: float, offset_format: str) -> None:
        """HALP's bit centring of the network: anchor w̃ and g̃ = ∇f(w̃) (float64, kernel layout),
        the offset z = scale·q on ``offset_format``, q = 0."""
        self._client.request(RecentreNet(anchor=anchor, full_grad=full_grad, scale=scale, offset_format=offset_format))

    def fetch_net(self) -> NetState:
        return self._client.request(FetchNet())

    def shutdown(self) -> None:
        self._client.request(Shutdown())
