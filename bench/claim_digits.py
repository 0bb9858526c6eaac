"""Digits on ``mlp:128`` for 20 epochs: float64 SGD, float32 SGD, mixed and lpsgd with fp8-ibm.

Usage::

    python bench/claim_digits.py                      # about 4 minutes on two busy cores
    python bench/claim_digits.py --epochs 2 --figure /tmp/d.png

The run behind docs/host.md's table "On the accelerator": ``cosim run --model mlp:128
--algorithm sgd,mixed,lpsgd --recipe fp8-ibm`` (seed 0, B = 1, the emulated backend over ipc)
into a temporary directory, whose results directory's ``metrics.json`` records are joined by float32 SGD
(``train_net(cfg, dtype=torch.float32)``, the same settings); the figure is
``cosim/deep_plot.py``'s ``plot_training`` of all four (default
docs/figures/claim-digits-mlp128.png), the last epoch's numbers are printed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from cosim.deep_plot import plot_training
from host.deep import train_net
from host.train import TrainConfig

FIGURE = Path(__file__).resolve().parents[1] / "docs" / "figures" / "claim-digits-mlp128.png"


def measure(epochs: int) -> list[dict]:
    """The records of float64 SGD, mixed and lpsgd (a ``cosim run``) and float32 SGD."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "cosim", "run", "--model", "mlp:128", "--algorithm", "sgd,mixed,lpsgd",
                        "--recipe", "fp8-ibm", "--epochs", str(epochs), "--out", tmp], check=True,
                       stdout=subprocess.DEVNULL)
        records = json.loads(next(Path(tmp).glob("*/metrics.json")).read_text())["epochs"]
    cfg = TrainConfig(model="mlp:128", algorithms=("sgd",), epochs=epochs)
    fp32 = train_net(cfg, dtype=torch.float32).records
    sgd = [r for r in records if r["algorithm"] == "sgd"]
    return sgd + [dataclasses.asdict(r) for r in fp32] + [r for r in records if r["algorithm"] != "sgd"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--figure", type=Path, default=FIGURE)
    args = p.parse_args()
    records = measure(args.epochs)
    for r in records:
        if r["epoch"] == args.epochs:
            print(f"{r['algorithm']:>6} fp{r['bits']:<3} loss {r['loss']:.4f}  test accuracy {r['test_accuracy']:.4f}")
    plot_training(records, args.figure, title=f"digits, mlp:128, B = 1, {args.epochs} epochs")
    print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
