"""CurveZMQ off loopback: keyed clients served, unkeyed and unlisted ones refused while the
server keeps serving, the non-loopback rule, key files, and a keyed run bit-identical to a plain one."""
from __future__ import annotations

import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from protocol import messages as m
from protocol.channel import AcceleratorGone, AcceleratorTimeout, Client, Server
from protocol.keys import (KeyFileError, check_exposure, client_keys, is_loopback, new_keys,
                           public_key, server_keys)

CAPS = m.Capabilities([1, 4], "echo", ["fixed"], ["linear"], ["sgd"], ["stochastic"], {})


def handler(msg: m.Message) -> m.Message:
    return CAPS if isinstance(msg, m.Hello) else m.Ack(msg.TYPE, {})


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    """accel/, host/ (listed in allow/) and stranger/ (not listed) key pairs."""
    root = tmp_path_factory.mktemp("keys")
    for name in ("accel", "host", "stranger"):
        new_keys(root / name, name)
    (root / "allow").mkdir()
    shutil.copy(root / "host" / "host.key", root / "allow")
    return root


@contextmanager
def keyed_server(keys: Path, address: str = "tcp://127.0.0.1:0"):
    server = Server(address, curve=server_keys(keys / "accel", keys / "allow"))
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(handler,), kwargs={"should_stop": stop.is_set})
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join()
        server.close()


def hello(address: str, curve, timeout: float = 1.5) -> m.Message:
    with Client(address, timeout=timeout, curve=curve) as client:
        return client.request(m.Hello(client="test"))


def test_a_listed_key_is_served_and_others_get_no_session(keys):
    good = client_keys(keys / "host", keys / "accel" / "accel.key")
    with keyed_server(keys) as server:
        assert hello(server.address, good) == CAPS
        # No reply for either: libzmq reports the failed handshake, so no wait for the timeout.
        t0 = time.monotonic()
        with pytest.raises(AcceleratorGone, match="does it serve with keys"):
            hello(server.address, None)
        with pytest.raises(AcceleratorGone, match="does not list this host's public key"):
            hello(server.address, client_keys(keys / "stranger", keys / "accel" / "accel.key"))
        with pytest.raises(AcceleratorGone, match="is the server key the daemon's public key"):
            hello(server.address, client_keys(keys / "host", keys / "stranger" / "stranger.key"))
        assert time.monotonic() - t0 < 4.5
        assert hello(server.address, good) == CAPS     # and the daemon keeps serving


def test_a_keyed_client_of_a_silent_peer_times_out_naming_keys(keys):
    # A tcp port nobody answers on within the timeout: the message points at the keys.
    import zmq
    ctx = zmq.Context.instance()
    silent = ctx.socket(zmq.ROUTER)
    silent.curve_server = True
    silent.curve_secretkey = server_keys(keys / "accel", keys / "allow").secret
    silent.linger = 0
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    try:
        with pytest.raises(AcceleratorTimeout, match="wrong or unlisted key"):
            hello(f"tcp://127.0.0.1:{port}", client_keys(keys / "host", keys / "accel" / "accel.key"),
                  timeout=0.5)
    finally:
        silent.close()


@pytest.mark.parametrize("address, loopback", [
    ("tcp://127.0.0.1:5555", True), ("tcp://[::1]:5555", True), ("tcp://localhost:0", True),
    ("ipc:///tmp/a.sock", True), ("inproc://x", True), ("tcp://0.0.0.0:5555", False),
    ("tcp://*:5555", False), ("tcp://eth0:5555", False), ("tcp://10.0.0.2:5555", False)])
def test_loopback(address, loopback):
    assert is_loopback(address) is loopback


def test_a_non_loopback_bind_needs_keys_or_insecure(keys):
    with pytest.raises(ValueError, match=r"not a loopback address.*--keys DIR --allow.*--insecure"):
        Server("tcp://0.0.0.0:0")
    with Server("tcp://0.0.0.0:0", insecure=True) as server:
        assert server.address.startswith("tcp://0.0.0.0:")
    with keyed_server(keys, "tcp://0.0.0.0:0") as server:
        port = server.address.rsplit(":", 1)[1]
        assert hello(f"tcp://127.0.0.1:{port}", client_keys(keys / "host", keys / "accel" / "accel.key")) == CAPS
    check_exposure("ipc:///tmp/x.sock", keyed=False, insecure=False)


def test_key_files_are_checked_with_clear_errors(keys, tmp_path):
    assert len(public_key(keys / "host" / "host.key")) == 40
    assert (keys / "host" / "host.key_secret").stat().st_mode & 0o077 == 0
    with pytest.raises(KeyFileError, match="already exist"):
        new_keys(keys / "host", "host")
    with pytest.raises(KeyFileError, match="plain file name"):
        new_keys(tmp_path, "../x")
    with pytest.raises(KeyFileError, match="no keys directory"):
        client_keys(tmp_path / "none", keys / "accel" / "accel.key")
    with pytest.raises(KeyFileError, match="no key file"):
        client_keys(keys / "host", tmp_path / "accel.key")
    with pytest.raises(KeyFileError, match="exactly one NAME.key_secret"):
        server_keys(tmp_path, keys / "allow")
    with pytest.raises(KeyFileError, match="holds no NAME.key"):
        server_keys(keys / "accel", tmp_path)
    (tmp_path / "bad.key").write_text('curve\n    public-key = "not-a-key"\n')
    with pytest.raises(KeyFileError, match="is not a 32-byte Z85 key"):
        public_key(tmp_path / "bad.key")
    (tmp_path / "empty.key").write_text("nothing here\n")
    with pytest.raises(KeyFileError, match="No public key"):
        public_key(tmp_path / "empty.key")


@pytest.mark.slow
def test_a_keyed_run_is_bit_identical_to_a_plain_one(keys, tmp_path):
    from cosim.launch import AcceleratorProcess
    from host.train import TrainConfig, train

    cfg = TrainConfig(algorithms=("halp",), epochs=2)
    weights = []
    for keyed in (False, True):
        extra = ["--keys", str(keys / "accel"), "--allow", str(keys / "allow")] if keyed else []
        accel = AcceleratorProcess.start("tcp://127.0.0.1:0", args=tuple(extra),
                                         log=tmp_path / f"accel-{keyed}.log")
        try:
            curve = client_keys(keys / "host", keys / "accel" / "accel.key") if keyed else None
            weights.append(train(cfg, connect=accel.address, curve=curve).weights["halp"])
        finally:
            accel.stop()
    assert np.asarray(weights[0]).tobytes() == np.asarray(weights[1]).tobytes()
