"""A network's run recovers as a linear one does (docs/host.md, "Recovery"), end to end with real
processes: a daemon SIGKILLed mid-run is replaced (``cosim run --restarts``), a host killed is
resumed (``cosim run --resume``), and every algorithm goes on from any checkpoint on a new daemon;
each ends with the weights of an uninterrupted run, bit for bit, and each epoch once in
metrics.csv, its gap filled in. And the float64 host algorithms count their training arithmetic
(``host_ops``), which `cosim energy` prices.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_recovery import EPOCH_LINE, ROOT, Run, assert_same_weights, epochs_in_csv, errors, weights
from torch.utils.flop_counter import FlopCounterMode

from cosim.launch import AcceleratorProcess
from cosim.recovery import CHECKPOINT, load_checkpoint, save_checkpoint
from host.deep import NetRecord, gradient_products, train_net
from host.nets import Network
from host.train import TrainConfig, train

# mlp:16 on digits (1210 parameters), B = 16: T = 90 steps, an epoch a few tenths of a second
EPOCHS, B, T = 2, 16, 90
NET = ("--model", "mlp:16", "--recipe", "fp8-ibm", "--epochs", str(EPOCHS), "--batch-size", str(B),
       "--timeout", "600")
ALGORITHMS = ("svrg", "lpsgd")
ALL_EPOCHS = [(a, e) for a in ALGORITHMS for e in range(EPOCHS + 1)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run = Run(*NET, "--algorithm", ",".join(ALGORITHMS), "--out", str(tmp_path_factory.mktemp("net-reference")))
    assert run.finish() == 0, run.text()
    return run.directory


def gaps(directory: Path) -> list[float]:
    return [e["gap"] for e in json.loads((directory / "metrics.json").read_text())["epochs"]]


@pytest.mark.slow
def test_a_network_run_writes_every_gap_and_its_host_algorithms_count_their_arithmetic(uninterrupted, tmp_path):
    assert epochs_in_csv(uninterrupted) == ALL_EPOCHS
    rows = (uninterrupted / "metrics.csv").read_text().splitlines()[1:]
    assert all(row.split(",")[3] != "" for row in rows)
    # f_best is svrg's final loss (the only float64 run): its own gap is 0
    assert gaps(uninterrupted)[EPOCHS] == 0.0 and all(g > 0 for g in gaps(uninterrupted)[:EPOCHS])
    # svrg per step: two minibatch gradients (B·64·16 forward and ΔW in layer 1, B·16·10 forward,
    # ΔW and δX in layer 2), each with its decay λw (n), then w − α(g − g_a + g̃): n mul, 3n add
    n, products = 65 * 16 + 17 * 10, 2 * B * 64 * 16 + 3 * B * 16 * 10
    svrg = json.loads((uninterrupted / "metrics.json").read_text())["epochs"][1]
    assert svrg["host_ops"] == {"mul fp64": T * (2 * products + 2 * n + n),
                                "add fp64": T * (2 * products + 2 * n + 3 * n)}
    report = tmp_path / "energy.json"
    e = subprocess.run([sys.executable, "-m", "cosim", "energy", str(uninterrupted), "--json", str(report)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert e.returncode == 0, e.stderr + e.stdout
    (run,) = json.loads(report.read_text())["runs"]
    assert not run["notes"], run["notes"]
    # svrg's epochs of float64 arithmetic at 16.46 pJ a multiply and 1.9 pJ an add
    ops = svrg["host_ops"]
    assert run["algorithms"]["svrg"]["host"] == pytest.approx(EPOCHS * (ops["mul fp64"] * 16.46 + ops["add fp64"] * 1.9))
    assert run["algorithms"]["lpsgd"]["host"] == 0


@pytest.mark.parametrize("spec", ["mlp:16,12", "cnn"])
def test_the_counted_products_are_those_torch_computes(spec):
    """An independent count: torch's own FLOP counter (2 per multiply-add) over one minibatch gradient."""
    rng = np.random.default_rng(0)
    net = Network(spec, rng.random((50, 64)), rng.integers(0, 10, 50), n_classes=10, l2=1e-2, seed=0)
    with FlopCounterMode(display=False) as flops:
        net.grad(net.params(), np.arange(7))
    assert flops.get_total_flops() == 2 * gradient_products(net.layers(), 7)
    if spec == "cnn":   # by hand: 3×3 convolutions over 8×8 (1 → 6) and 4×4 (6 → 16), dense 64 → 10
        assert gradient_products(net.layers(), 1) == 2 * 64 * 9 * 6 + 3 * 16 * 54 * 16 + 3 * 64 * 10


def test_sgd_on_a_network_counts_its_steps():
    result = train_net(TrainConfig(model="mlp:16", algorithms=("sgd",), epochs=1, batch_size=32))
    n, products, steps = 1210, 2 * 32 * 64 * 16 + 3 * 32 * 16 * 10, 45     # ⌈1438 / 32⌉ steps
    assert [r.host_ops for r in result.records] == [{}, {"mul fp64": steps * (products + 2 * n),
                                                         "add fp64": steps * (products + 2 * n)}]


@pytest.mark.slow
def test_every_network_algorithm_goes_on_from_a_checkpoint_on_a_new_daemon_to_the_same_bits(tmp_path):
    """Each algorithm's checkpoint after epoch 1, through the checkpoint file and to another daemon:
    the rest of the run comes out as it did (weights and records; only the wall times differ).
    mixed in rounds of 4 steps, whose local updates round stochastically."""
    cfg = TrainConfig(model="mlp:16", algorithms=("sgd", "svrg", "mixed", "lpsgd", "halp"), epochs=2,
                      batch_size=32, sync_every=4, recipe="fp8-ibm", timeout=600)
    saved = []
    with AcceleratorProcess.start(f"ipc://{tmp_path}/a.sock") as first:
        whole = train(cfg, connect=first.address, checkpoint=saved.append)
    assert [(c.algorithm, c.epoch) for c in saved] == [(a, e) for a in cfg.algorithms for e in range(3)]

    def timeless(records):
        return [dataclasses.replace(r, seconds=0.0, message_seconds=0.0) for r in records]
    with AcceleratorProcess.start(f"ipc://{tmp_path}/b.sock") as second:
        for ck in saved[1::3]:
            save_checkpoint(tmp_path / CHECKPOINT, ck)
            back, _ = load_checkpoint(tmp_path / CHECKPOINT)
            assert all(isinstance(r, NetRecord) for r in back.records) and back.records == ck.records
            again = train(cfg, connect=second.address, resume=back)
            assert_same_weights(again.weights, whole.weights)
            assert timeless(again.records) == timeless(whole.records), ck.algorithm


@pytest.mark.slow
def test_a_daemon_killed_in_a_network_run_is_replaced_with_bit_identical_results(tmp_path, uninterrupted):
    """Two kills: one during svrg (the daemon idle; noticed there, the host's epochs are redone),
    one at a random point of lpsgd (its master weights given to the new daemon by configure_net)."""
    rng = random.Random("network daemon kills")
    run = Run(*NET, "--algorithm", ",".join(ALGORITHMS), "--restarts", "2", "--out", str(tmp_path))
    run.wait_until(lambda: run.pids and run.epoch >= 0)
    os.kill(run.pids[0], signal.SIGKILL)
    after = rng.randrange(2)
    run.wait_until(lambda: len(run.pids) > 1 and any((m := EPOCH_LINE.match(line)) and m[1] == "lpsgd"
                                                     and int(m[2]) >= after for line in run.out))
    time.sleep(rng.uniform(0.0, 0.1))
    os.kill(run.pids[1], signal.SIGKILL)
    assert run.finish() == 0, run.text()
    assert len([line for line in run.err if line.startswith("restart ")]) == 2 and not errors(run), run.text()
    assert_same_weights(weights(run.directory), weights(uninterrupted))
    assert epochs_in_csv(run.directory) == ALL_EPOCHS
    assert gaps(run.directory) == gaps(uninterrupted)
    result = json.loads((run.directory / "metrics.json").read_text())
    assert [r["what"] for r in result["recoveries"]] == ["restart"] * 2
    assert result["recoveries"][1]["algorithm"] == "lpsgd"


@pytest.mark.slow
def test_a_killed_network_run_resumes_to_bit_identical_results(tmp_path, uninterrupted):
    rows = random.Random("network host kill").randrange(2, len(ALL_EPOCHS) - 1)
    run = Run(*NET, "--algorithm", ",".join(ALGORITHMS), "--out", str(tmp_path))
    run.wait_until(lambda: len(run.out) > 3 and (run.directory / "metrics.csv").exists()
                   and len(epochs_in_csv(run.directory)) >= rows)
    run.proc.send_signal(signal.SIGKILL)
    assert run.finish() == -9
    directory = run.directory
    ck, _ = load_checkpoint(directory / CHECKPOINT)
    assert [(r.algorithm, r.epoch) for r in ck.records] == ALL_EPOCHS[:len(ck.records)]
    resumed = Run("--resume", str(directory))
    assert resumed.finish() == 0, resumed.text()
    assert f"(resumed after {ck.algorithm} epoch {ck.epoch})" in resumed.out[0]
    assert_same_weights(weights(directory), weights(uninterrupted))
    assert epochs_in_csv(directory) == ALL_EPOCHS and gaps(directory) == gaps(uninterrupted)
