"""One session owns the daemon (protocol 1.4, docs/protocol.md "Sessions"), against a real
daemon process: a second client's every request, shutdown included, is refused while the
owner's run goes on bit for bit as if undisturbed; a session idle past its lease is taken
over, the daemon starts the newcomer fresh and tells the old owner (session_lost); the owner
reopens its session from a new connection and finds its state."""
from __future__ import annotations

import subprocess
import sys
import time
from typing import Callable

import numpy as np
import pytest

from cosim.launch import AcceleratorProcess
from protocol.channel import AcceleratorError, Client, TapEvent
from protocol.messages import (REQUESTS, Bye, Configure, ConfigureNet, Fetch, FetchNet, Hello, LoadData,
                               NetGrad, Promote, Recentre, RecentreNet, Restore, RunEpoch, RunNetEpoch, Shutdown)

N, F, C = 40, 6, 3
RNG = np.random.default_rng(11)
X, Y = RNG.uniform(-1, 1, (N, F)), RNG.integers(0, C, N).astype(np.float64)


def configure() -> Configure:
    return Configure(problem="softmax", n_samples=N, n_features=F, n_outputs=C, data_format="fixed<2,6>",
                     offset_format="fixed<1,7>", acc_format="fp32", rounding="stochastic", rbits=0,
                     lanes=4, seed=5, l2=0.01, scale=0.5)


def epoch(number: int, algorithm: str = "svrg") -> RunEpoch:
    order = np.random.default_rng(number).permutation(N).astype(np.uint32)
    return RunEpoch(algorithm=algorithm, epoch=number, steps=N, step_size=0.2, batch_size=1, order=order)


RUN = [Hello(client="owner"), configure(), LoadData(start=0, x=X, y=Y),
       Recentre(full_grad=RNG.standard_normal((F, C)), anchor=RNG.dirichlet(np.ones(C), N), scale=0.5),
       epoch(1), epoch(2), Promote(offset_format="fixed<2,10>"), epoch(3, "sgd"), Fetch()]

# A second client's try at every request type: its own data of the owner's shape, a shutdown.
INTRUSIONS = [Hello(client="intruder"), configure(), LoadData(start=0, x=-X, y=Y[::-1].copy()),
              Recentre(full_grad=np.zeros((F, C)), anchor=np.full((N, C), 1 / C), scale=1.0),
              epoch(7), Promote(offset_format="fixed<1,7>"), Fetch(),
              Restore(offset=np.zeros((F, C)), offset_format="fixed<1,7>", scale=1.0,
                      counters=dict.fromkeys(("epochs", "steps", "saturations", "recentres", "promotes"), 0)),
              ConfigureNet(layers=[[F, 4, "relu"], [4, C, "none"]], n_samples=N, weights_format="fp8_ibm",
                           activations_format="fp8_ibm", errors_format="fp8_ibm", weight_grads_format="fp16_ibm",
                           acc_format="fp16_ibm", chunk=64, update_format="fp16_ibm", rounding="stochastic",
                           rbits=0, lanes=4, seed=5, l2=0.0, weights=np.zeros((F + 1) * 4 + 5 * C)),
              NetGrad(weights=np.zeros((F + 1) * 4 + 5 * C), batch=np.arange(2, dtype=np.uint32)),
              RunNetEpoch(epoch=1, steps=1, step_size=0.1, batch_size=1, order=np.zeros(1, dtype=np.uint32)),
              RecentreNet(anchor=np.zeros((F + 1) * 4 + 5 * C), full_grad=np.zeros((F + 1) * 4 + 5 * C), scale=1.0,
                          offset_format="fixed<1,7>"),
              FetchNet(), Bye(), Shutdown()]


def test_the_intrusions_cover_every_request_type():
    assert sorted(m.TYPE for m in INTRUSIONS) == sorted(REQUESTS)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with AcceleratorProcess.start(f"ipc://{tmp_path_factory.mktemp('sessions')}/a.sock") as accel:
        yield accel


def run(address: str, between: Callable[[], None]) -> list:
    """The owner's run, ``between()`` after each request; its replies as the host saw them,
    less what measures rather than computes (an epoch report's ``work``)."""
    replies: list[TapEvent] = []
    with Client(address, session="owner-token", timeout=20,
                tap=lambda e: replies.append(e) if e.direction == "a2h" else None) as owner:
        for request in RUN:
            owner.request(request)
            between()
    return [(e.header["type"], {k: v for k, v in e.header["body"].items() if k != "work"},
             [bytes(f) for f in e.frames]) for e in replies]


def intrude(address: str) -> int:
    """Every request type from a second client: each refused, naming the owner; how many."""
    with Client(address, timeout=20) as other:
        for msg in INTRUSIONS:
            with pytest.raises(AcceleratorError) as err:
                other.request(msg)
            assert err.value.code == ("busy" if isinstance(msg, Hello) else "bad_session"), err.value
            assert "the accelerator is in use by 'owner' (idle " in err.value.message
            assert "owner-token" not in err.value.message
    return len(INTRUSIONS)


def test_a_second_client_can_do_nothing_and_the_owners_run_is_bit_identical(daemon):
    tries = []
    disturbed = run(daemon.address, lambda: tries.append(intrude(daemon.address)))
    undisturbed = run(daemon.address, lambda: None)   # a new session: the first one said bye
    assert sum(tries) == len(RUN) * len(INTRUSIONS) and daemon.returncode is None
    assert [r[0] for r in undisturbed] == ["capabilities", "ack", "ack", "ack", "epoch_report",
                                           "epoch_report", "ack", "epoch_report", "state"]
    assert disturbed == undisturbed
    assert np.abs(np.frombuffer(undisturbed[-1][2][0])).max() > 0


def test_the_owner_reopens_its_session_from_a_new_connection_and_finds_its_state(daemon):
    with Client(daemon.address, session="owner-token", timeout=20) as first:
        for request in RUN[:5]:
            first.request(request)
        offset = first.request(Fetch()).offset
        # A new client with the session's id and client name (a host that lost its connection).
        with Client(daemon.address, session="owner-token", timeout=20) as again:
            with pytest.raises(AcceleratorError, match="busy"):   # the id alone is not enough
                again.request(Hello(client="someone else"))
            again.request(Hello(client="owner"))
            assert again.request(Fetch()).offset.tobytes() == offset.tobytes()
            assert again.request(epoch(2)).steps == N               # anchored: svrg goes on


@pytest.fixture
def short_lease(tmp_path):
    """A daemon whose sessions are leased for 0.5 s; yields (process, address)."""
    address = f"ipc://{tmp_path}/lease.sock"
    proc = subprocess.Popen([sys.executable, "-m", "accel", "--bind", address, "--lease", "0.5"],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert "serving" in proc.stderr.readline()
        yield proc, address
    finally:
        proc.kill()
        proc.wait(5)


def test_a_session_idle_past_its_lease_is_taken_over_fresh_and_its_owner_told(short_lease):
    _, address = short_lease
    with Client(address, session="owner-token", timeout=20) as owner:
        for request in RUN[:3]:                                   # configured and loaded
            owner.request(request)
        with Client(address, timeout=20) as other:
            with pytest.raises(AcceleratorError, match=r"busy: the accelerator is in use by 'owner'"):
                other.request(Hello(client="other"))
            time.sleep(0.6)
            other.request(Hello(client="other"))
            # The newcomer finds nothing of the owner's: the daemon dropped it first.
            with pytest.raises(AcceleratorError, match="bad_state: fetch needs configure first"):
                other.request(Fetch())
            for msg in (Fetch(), epoch(1, "sgd"), Shutdown()):
                with pytest.raises(AcceleratorError) as err:
                    owner.request(msg)
                assert err.value.code == "session_lost"
                assert err.value.message.startswith("session 'owner-token' was taken over by 'other' "
                                                    "after it had been idle 0.")
                assert err.value.message.endswith(", longer than the lease of 0.5 s; its state is gone")
            other.request(RUN[1])
            assert other.request(Fetch()).offset.shape == (F, C)


def test_only_the_owner_stops_the_daemon(short_lease):
    proc, address = short_lease
    with Client(address, timeout=20) as owner, Client(address, timeout=20) as other:
        owner.request(Hello(client="owner"))
        with pytest.raises(AcceleratorError, match="bad_session"):
            other.request(Shutdown())
        time.sleep(0.6)                          # past the lease: still only the owner's to stop
        with pytest.raises(AcceleratorError, match="bad_session"):
            other.request(Shutdown())
        assert proc.poll() is None
        assert owner.request(Shutdown()).of == "shutdown"
    assert proc.wait(10) == 0
