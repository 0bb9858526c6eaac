"""The gradstats policy end to end: through `cosim run`, a real daemon reports each epoch's
update statistics, the policy promotes from them, and its decisions land in metrics.json and
the trace; an accelerator older than protocol 1.5 is refused before the run."""
import dataclasses
import json
import math
import subprocess
import sys
import threading

import msgpack
import pytest

from accel.daemon import Daemon
from cosim.trace import payloads
from host.train import TrainConfig, train
from protocol.channel import Server
from protocol.messages import Capabilities


@pytest.mark.slow
def test_gradstats_promotes_from_the_statistics_the_accelerator_reports(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cosim", "run", "--policy", "gradstats", "--bits", "5",
                        "--epochs", "3", "--inner-steps", "300", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr + r.stdout
    (d,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    epochs = json.loads((d / "metrics.json").read_text())["epochs"]
    messages = [(kind, msgpack.unpackb(body)) for _, kind, _, body, _ in payloads(d / "trace.cosim")]
    reports = [body for kind, body in messages if kind == "epoch_report"]
    promotes = [body["offset_format"] for kind, body in messages if kind == "promote"]

    # Epoch 1 has no statistics to go by; each later one is promoted by two fraction bits.
    assert [(e["bits"], e["offset_format"]) for e in epochs] == [
        (5, "fixed<1,4>"), (5, "fixed<1,4>"), (7, "fixed<1,6>"), (9, "fixed<1,8>")]
    assert promotes == ["fixed<1,6>", "fixed<1,8>"] and epochs[1]["decision"] == ""
    assert len(reports) == 3
    for before, e in zip(reports, epochs[2:]):
        # The reason quotes the statistics of the epoch before, as the accelerator reported them.
        assert before["updates"] == 300 * 65 * 10
        fraction = before["vanished"] / before["updates"]
        span = math.log2(before["update_max"] / before["update_min"])
        bits = e["bits"] - 2
        assert fraction > 0.5 and span > bits - 1
        assert e["decision"].startswith(
            f"{fraction:.3g} of the updates vanished (> 0.5); the updates span {span:.3g} binades "
            f"(> {bits - 1}, what {bits} bits resolve; the lowest 10% spread over ")


def test_gradstats_refuses_an_accelerator_older_than_1_5(tmp_path):
    """A real daemon behind a server that speaks 1.4 (and says so in its capabilities): the run
    stops after configure and load, before the first epoch, with one clear message."""
    server = Server(f"ipc://{tmp_path}/old.sock", version=(1, 4))
    daemon, stop, seen = Daemon("emulated"), threading.Event(), []

    def handle(msg):
        seen.append(msg.TYPE)
        reply = daemon.handle(msg)
        return dataclasses.replace(reply, version=[1, 4]) if isinstance(reply, Capabilities) else reply
    thread = threading.Thread(target=server.serve, args=(handle,), kwargs={"poll_ms": 20, "should_stop": stop.is_set},
                              daemon=True)
    thread.start()
    try:
        with pytest.raises(ValueError, match=r"^the GradientStatistics policy needs the update statistics of "
                                             r"protocol 1\.5 or later; the accelerator speaks 1\.4$"):
            train(TrainConfig(algorithms=("halp",), epochs=2, inner_steps=10, policy="gradstats"),
                  connect=server.address)
        assert "run_epoch" not in seen and "load_data" in seen
    finally:
        stop.set()
        thread.join(5)
        server.close()
