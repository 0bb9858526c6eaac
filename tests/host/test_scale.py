"""HALP at a size a hundred times the bundled problems, through a real daemon process.

The full-size figures (n = 10^6 least squares, 60,000 × 784 softmax) are ``bench/bench_scale.py``'s;
this is the same run at a size CI affords: n = 2·10^5 samples × 100 features.
"""
from __future__ import annotations

import pytest

from cosim.launch import AcceleratorProcess, ipc_address
from host.train import TrainConfig, train

pytestmark = pytest.mark.slow

N, F = 200_000, 100


def test_halp_at_two_hundred_thousand_samples_holds_the_data_at_its_width(tmp_path):
    settings = dict(dataset="synthetic_linear", model="linear", features=F, algorithms=("halp",))
    memory = {}
    with AcceleratorProcess.start(ipc_address(tmp_path)) as daemon:
        train(TrainConfig(samples=2000, epochs=1, **settings), connect=daemon.address)   # loads the code
        result = train(TrainConfig(samples=N, epochs=4, **settings), connect=daemon.address,
                       on_start=lambda algo: memory.update(idle=daemon.memory()["rss"]),
                       on_epoch=lambda r: r.epoch == 1 and memory.update(loaded=daemon.memory()["rss"]))
    data_bytes = N * (F + 1)                        # fixed<IL,FL> of 8 bits: a byte an element
    assert result.config["data_format"].startswith("fixed<") and result.config["n_samples"] == N
    # The data as uint8 codes plus the float64 targets (8 bytes a sample, 8% here): within 1.25×,
    # and far from the 8× of float64 (a few MiB of slack for the allocator's own pages).
    assert memory["loaded"] - memory["idle"] <= 1.25 * data_bytes + (4 << 20)
    gaps = [r.gap for r in result.records]
    assert gaps[-1] < 1e-3 * gaps[0] and all(b < a for a, b in zip(gaps, gaps[1:]))
