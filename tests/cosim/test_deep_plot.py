"""The network training plot (cosim/deep_plot.py) from real float64 and float32 runs."""
from __future__ import annotations

from dataclasses import asdict

import torch

from cosim.deep_plot import by_run, plot_training
from host.deep import fill_gaps, train_net
from host.train import TrainConfig


def test_one_line_per_algorithm_and_precision(tmp_path):
    cfg = TrainConfig(model="mlp:8", algorithms=("sgd", "svrg"), epochs=2, inner_steps=20, batch_size=4)
    runs = train_net(cfg).records + train_net(cfg, dtype=torch.float32).records
    records = [asdict(r) for r in fill_gaps(runs)]
    groups = by_run(records)
    assert list(groups) == ["sgd fp64", "svrg fp64", "sgd fp32", "svrg fp32"]
    assert all([r["epoch"] for r in rs] == [0, 1, 2] for rs in groups.values())
    plot_training(records, tmp_path / "training.png", title="digits mlp:8")
    png = (tmp_path / "training.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
