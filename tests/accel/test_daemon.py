"""State-level validation of a real accelerator daemon process over an ipc socket, and the
progress that a daemon passes from its backend to the host.

Each rule: send the bad request, check the error code, then a good request succeeds.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from typing import Callable

import numpy as np
import pytest

from accel import backends
from accel.daemon import Daemon, serve
from protocol.channel import AcceleratorError, AcceleratorTimeout, Client
from protocol.messages import (Bye, Configure, Fetch, Hello, LoadData, Progress, Promote, Recentre,
                               Restore, RunEpoch, Shutdown)

N, F, C = 6, 3, 3
LEASE = 1.0    # the module's daemon: a vanished client holds it this long
X = np.linspace(-1, 1, N * F).reshape(N, F)
Y = np.array([0, 1, 2, 0, 1, 2], dtype=float)


def configure(**changes) -> Configure:
    fields = dict(problem="softmax", n_samples=N, n_features=F, n_outputs=C, data_format="fixed<2,6>",
                  offset_format="fixed<1,7>", acc_format="fp32", rounding="stochastic", rbits=0,
                  lanes=4, seed=3, l2=0.01, scale=1.0)
    return Configure(**{**fields, **changes})


def run_epoch(order=(0, 1, 2, 3), algorithm="svrg", **changes) -> RunEpoch:
    order = np.asarray(order, dtype=np.uint32)
    fields = dict(algorithm=algorithm, epoch=0, steps=len(order), step_size=0.1, batch_size=1, order=order)
    return RunEpoch(**{**fields, **changes})


def recentre(**changes) -> Recentre:
    fields = dict(full_grad=np.full((F, C), 0.1), anchor=np.full((N, C), 1 / C), scale=0.5)
    return Recentre(**{**fields, **changes})


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    address = f"ipc://{tmp_path_factory.mktemp('accel')}/a.sock"
    proc = subprocess.Popen([sys.executable, "-m", "accel", "--bind", address, "--lease", str(LEASE)],
                            stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    assert line.strip() == f"cosim accel: serving emulated on {address}"
    yield proc, address
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)


@pytest.fixture
def client(daemon):
    proc, address = daemon
    assert proc.poll() is None, "the daemon died in an earlier test"
    with Client(address, timeout=20) as c:
        caps = c.request(Hello(client="test"))
        assert caps.backend == "emulated" and caps.limits["max_features"] >= F
        yield c


def refused(client, msg, code, words=""):
    with pytest.raises(AcceleratorError) as err:
        client.request(msg)
    assert err.value.code == code, err.value.message
    assert words in err.value.message
    return err.value.message


def loaded(client, **changes):
    client.request(configure(**changes))
    client.request(LoadData(start=0, x=X, y=Y))


def test_run_epoch_before_configure(client):
    refused(client, run_epoch(), "bad_state", "needs configure first")
    client.request(configure())


def test_promote_and_fetch_before_configure(client):
    refused(client, Promote(offset_format="fixed<2,10>"), "bad_state", "promote needs configure")
    refused(client, Fetch(), "bad_state", "fetch needs configure")
    client.request(configure())
    assert client.request(Promote(offset_format="fixed<2,10>")).info["offset_format"] == "fixed<2,10>"
    assert client.request(Fetch()).offset_format == "fixed<2,10>"


def test_run_epoch_before_all_rows_loaded(client):
    client.request(configure())
    client.request(LoadData(start=0, x=X[:4], y=Y[:4]))
    refused(client, run_epoch(algorithm="sgd"), "bad_state", "4 of 6 loaded")
    assert client.request(LoadData(start=4, x=X[4:], y=Y[4:])).info["rows"] == N
    assert client.request(run_epoch(algorithm="sgd")).steps == 4


def test_svrg_needs_a_recentre(client):
    loaded(client)
    refused(client, run_epoch(), "bad_state", "recentre first")
    client.request(recentre())
    report = client.request(run_epoch())
    assert report.ops["mul fixed<2,6>*fixed<2,7>"] == 4 * F * C     # x · dq, dq with one more integer bit


def test_load_data_wrong_width(client):
    client.request(configure())
    refused(client, LoadData(start=0, x=np.zeros((2, F + 1)), y=np.zeros(2)), "bad_shape", f"[2, {F}]")
    refused(client, LoadData(start=0, x=np.zeros((2, F)), y=np.zeros(3)), "bad_shape", "y has shape")
    client.request(LoadData(start=0, x=X[:2], y=Y[:2]))


def test_load_data_beyond_n_samples(client):
    client.request(configure())
    refused(client, LoadData(start=5, x=X[:2], y=Y[:2]), "bad_shape", "beyond n_samples")
    client.request(LoadData(start=4, x=X[:2], y=Y[:2]))


def test_labels_outside_the_problem(client):
    client.request(configure())
    refused(client, LoadData(start=0, x=X[:1], y=np.array([3.0])), "bad_value", "0..2")
    refused(client, LoadData(start=0, x=X[:1], y=np.array([0.5])), "bad_value", "integers")
    client.request(configure(problem="logistic", n_outputs=1))
    refused(client, LoadData(start=0, x=X[:1], y=np.array([2.0])), "bad_value", "0 or 1")
    client.request(LoadData(start=0, x=X[:1], y=np.array([1.0])))


def test_recentre_wrong_shapes(client):
    loaded(client)
    refused(client, recentre(full_grad=np.zeros((F, C + 1))), "bad_shape", "full_grad")
    refused(client, recentre(anchor=np.full((N - 1, C), 0.3)), "bad_shape", "anchor")
    refused(client, recentre(anchor=None), "missing_field", "anchor")
    refused(client, recentre(anchor=np.full((N, C), 2.0)), "bad_value", "probabilities")
    client.request(recentre())


def test_recentre_before_data(client):
    client.request(configure())
    refused(client, recentre(), "bad_state", "0 of 6 loaded")
    client.request(LoadData(start=0, x=X, y=Y))
    client.request(recentre())


def test_order_out_of_range_or_wrong_length(client):
    loaded(client)
    client.request(recentre())
    refused(client, run_epoch(order=(0, 1, N)), "bad_value", f"0..{N - 1}")
    refused(client, run_epoch(order=(0, 1, 2, 3), steps=3), "bad_shape", "order")
    refused(client, run_epoch(order=np.array([0, -1], dtype=np.int64)), "bad_value", "indices")
    client.request(run_epoch(order=(0, 1, 2, 3, 4, 5, 0, 1), batch_size=2, steps=4))


@pytest.mark.parametrize("changes,code,words", [
    ({"data_format": "fixed<2;6>"}, "bad_value", "fixed<2;6>"),
    ({"acc_format": "fixed<8,8>"}, "bad_value", "acc_format"),
    ({"offset_format": "fp32"}, "bad_value", "the offset takes fixed<IL,FL> signed, saturating"),
    ({"data_format": "fp32"}, "bad_value", "the exact dot x·dq needs a 288-bit register"),
    ({"rounding": "toward_zero"}, "bad_value", "choose nearest_even or stochastic"),
    ({"data_format": "float<11,52>"}, "bad_value", "the data takes fixed<IL,FL>"),   # was internal: ZeroDivisionError
    ({"problem": "softmax", "n_outputs": 1}, "bad_value", "n_outputs >= 2"),
    ({"problem": "linear"}, "bad_value", "n_outputs = 1"),
    ({"n_features": 1 << 20}, "too_large", "n_features"),
    ({"n_samples": 1 << 25, "n_features": 1 << 12}, "too_large", "n_samples × n_features"),
    ({"n_samples": 1 << 24, "n_features": 1 << 8, "data_format": "fixed<4,12>"}, "too_large",
     "would take 8589934592 bytes held as fixed<4,12>, over the limit of 4294967296"),
])
def test_configure_refusals_keep_the_previous_configuration(client, changes, code, words):
    loaded(client)
    refused(client, configure(**changes), code, words)
    assert client.request(run_epoch(algorithm="sgd")).steps == 4   # still configured and loaded
    client.request(configure())


def test_promote_to_an_unusable_format(client):
    client.request(configure())
    refused(client, Promote(offset_format="fixed<1,7>", acc_format="fp64x"), "bad_value", "fp64x")
    refused(client, Promote(offset_format="fp32"), "bad_value", "signed, saturating")
    refused(client, Promote(offset_format="fixed<9,40>"), "bad_value", "s·dq needs a 74-bit exact product")
    client.request(Promote(offset_format="fixed<1,15>", acc_format="fp64"))


def test_restore_refusals_and_an_svrg_epoch_after_it_needs_a_recentre(client):
    counters = {"epochs": 4, "steps": 16, "saturations": 1, "recentres": 4, "promotes": 0}
    good = Restore(offset=np.full((F, C), 0.25), offset_format="fixed<2,6>", scale=0.5, counters=counters)
    client.request(configure())
    refused(client, good, "bad_state", "restore needs all 6 rows loaded")
    client.request(LoadData(start=0, x=X, y=Y))
    client.request(recentre())
    refused(client, Restore(**{**vars(good), "counters": {**counters, "epochs": -1}}), "bad_value", "counters")
    refused(client, Restore(**{**vars(good), "counters": {"epochs": 4}}), "bad_value", "counters")
    refused(client, Restore(**{**vars(good), "offset_format": "fp32"}), "bad_value", "signed, saturating")
    refused(client, Restore(**{**vars(good), "offset": np.full((F, C), 2.5)}), "bad_value", "off the grid")
    assert client.request(good).info == {"scale": 0.5, "offset_format": "fixed<2,6>"}
    state = client.request(Fetch())
    assert (state.offset == 0.25).all() and state.counters == counters and state.offset_format == "fixed<2,6>"
    refused(client, run_epoch(), "bad_state", "recentre first")      # the anchor is not restored
    client.request(recentre(scale=None))
    assert client.request(run_epoch()).steps == 4


def test_daemon_survives_a_client_that_vanishes_mid_session(daemon):
    _, address = daemon
    gone = Client(address, timeout=20)
    gone.request(Hello(client="first"))
    gone.request(configure())
    gone.request(LoadData(start=0, x=X, y=Y))
    gone.request(recentre())
    with pytest.raises(AcceleratorTimeout):          # leaves with a request in flight
        # 180 000 steps: about 0.1 s even in the compiled kernels, well past the 10 ms timeout.
        gone.request(run_epoch(order=np.arange(N).repeat(30_000)), timeout=0.01)
    with Client(address, timeout=20) as c:
        # It said no bye: its session holds the daemon until it has been idle for the lease.
        refused(c, Hello(client="second"), "busy", "in use by 'first'")
        time.sleep(LEASE)
        c.request(Hello(client="second"))
        refused(c, run_epoch(), "bad_state", "configure first")   # a new session starts fresh
        loaded(c)
        assert c.request(run_epoch(algorithm="sgd")).epoch == 0


def test_same_messages_same_bits(client):
    def final_offset():
        loaded(client)
        client.request(recentre())
        for epoch in range(2):
            client.request(run_epoch(order=(5, 0, 3, 1, 2, 4), epoch=epoch))
        return client.request(Fetch()).offset

    first, second = final_offset(), final_offset()
    assert first.tobytes() == second.tobytes() and np.abs(first).max() > 0


def test_shutdown_and_sigterm_end_the_process(tmp_path):
    for stop in ("shutdown", "sigterm"):
        address = f"ipc://{tmp_path}/{stop}.sock"
        proc = subprocess.Popen([sys.executable, "-m", "accel", "--bind", address],
                                stderr=subprocess.PIPE, text=True)
        assert "serving" in proc.stderr.readline()
        if stop == "shutdown":
            with Client(address, timeout=20) as c:
                c.request(Hello(client="test"))
                assert c.request(Shutdown()).of == "shutdown"
        else:
            time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_port_0_binds_a_free_port_and_the_ready_line_names_it():
    proc = subprocess.Popen([sys.executable, "-m", "accel", "--bind", "tcp://127.0.0.1:0"],
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline().strip()
        prefix = "cosim accel: serving emulated on tcp://127.0.0.1:"
        assert line.startswith(prefix) and int(line[len(prefix):]) > 0, line
        with Client(line.split(" on ")[1], timeout=20) as c:
            assert c.request(Hello(client="test")).version
    finally:
        proc.terminate()
        proc.wait(10)


# ---- progress: the daemon hands the server's progress to backends that report it ----------

def test_a_backend_that_declares_progress_gets_it_on_every_instance_and_others_do_not():
    def report(info: dict) -> None: ...

    daemon = Daemon("rtl", fpga="model", progress=report)
    assert daemon.backend.progress is report
    for request in (Bye(), configure(problem="linear", n_outputs=1)):
        before = daemon.backend
        daemon.handle(request)                    # bye and configure make a new backend
        assert daemon.backend is not before and daemon.backend.progress is report
    assert not hasattr(Daemon(progress=report).backend, "progress")   # emulated: untouched


def test_serve_sends_the_progress_a_backend_reports_to_the_host(tmp_path, monkeypatch):
    class Reporting(backends.backend_class("emulated")):
        progress: Callable[[dict], None] | None = None

        def run_epoch(self, algorithm, epoch, steps, step_size, batch_size, order, statistics=False):
            for done in range(1, 3):
                self.progress({"steps": done})
            return super().run_epoch(algorithm, epoch, steps, step_size, batch_size, order, statistics)

    monkeypatch.setattr(backends, "backend_class", lambda name: Reporting)
    address = f"ipc://{tmp_path}/p.sock"
    thread = threading.Thread(target=serve, args=(address,), daemon=True)
    thread.start()
    got: list[Progress] = []
    with Client(address, timeout=20) as c:
        c.request(Hello(client="test"))
        loaded(c)
        assert c.request(run_epoch(algorithm="sgd"), on_progress=got.append).steps == 4
        c.request(Shutdown())
    thread.join(10)
    assert not thread.is_alive()
    assert got == [Progress("run_epoch", {"steps": 1}), Progress("run_epoch", {"steps": 2})]
