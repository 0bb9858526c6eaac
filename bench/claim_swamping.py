"""Swamping on a fan-in of 4096: LP-SGD on the accelerator with (1,6,9) sums in chunks of 64 or none.

Usage::

    python bench/claim_swamping.py                    # the documented run, about 4 min
    python bench/claim_swamping.py --epochs 3 --inner-steps 40 --figure /tmp/s.png

The claim (Wang et al. 2018; docs/accelerator.md, "Layer kernel"): on a layer with fan-in
4096, accumulating in (1,6,9) without chunks loses accuracy against chunks of 64, and the
accelerator's op counts show why. Data: ``digits64`` (host/datasets.py: digits with every pixel
repeated in an 8 × 8 block, 4096 features k/16 ≥ 0; a problem a network learns), split 80/20.
Model: one hidden layer, ``mlp:16``, so the first layer's dot products are 4097 terms long (the
bias is one more). Training: ``lpsgd`` through a real daemon process (one ``run_net_epoch`` and
one ``fetch_net`` per epoch) with the recipes ``fp8-ibm`` (chunk 64) and ``fp8-ibm-nochunk``
(host/recipes.py), everything else equal, and float64 SGD on the host with the same settings
as the reference. Per epoch: training loss and test accuracy (the host's float64 evaluation
of the weights) and, from the epoch report's ops, the swamped adds (``"swamped add
fp16_ibm"``: both operands nonzero, the rounded sum equal to one of them) among all (1,6,9)
adds (``"add fp16_ibm"``). Prints the table and writes the figure (default
docs/figures/claim-swamping.png).
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

from cosim.launch import AcceleratorProcess
from host.client import AcceleratorClient
from host.deep import train_net
from host.train import TrainConfig

RECIPES = {"chunk 64": "fp8-ibm", "no chunk": "fp8-ibm-nochunk"}
REFERENCE = "float64 SGD"
SWAMPED, ADDS = "swamped add fp16_ibm", "add fp16_ibm"
FIGURE = Path(__file__).resolve().parents[1] / "docs" / "figures" / "claim-swamping.png"


def measure(*, epochs: int, inner_steps: int | None = None, seed: int = 0, batch_size: int = 8,
            step_size: float = 0.005) -> dict[str, list[dict]]:
    """Per run ("chunk 64", "no chunk", then "float64 SGD"): one row per epoch (0: the start)
    with ``epoch``, ``loss``, ``test_accuracy``, ``swamped`` and ``adds`` (the epoch's (1,6,9)
    adds; 0 for the float64 run)."""
    cfg = TrainConfig(dataset="digits64", model="mlp:16", algorithms=("lpsgd",), epochs=epochs, seed=seed,
                      l2=0.0, batch_size=batch_size, step_size=step_size, inner_steps=inner_steps)
    out: dict[str, list[dict]] = {}

    def rows(result) -> list[dict]:
        return [{"epoch": r.epoch, "loss": r.loss, "test_accuracy": r.test_accuracy,
                 "swamped": r.ops.get(SWAMPED, 0), "adds": r.ops.get(ADDS, 0)} for r in result.records]

    with tempfile.TemporaryDirectory() as tmp, AcceleratorProcess.start(f"ipc://{tmp}/a.sock") as accel:
        for label, recipe in RECIPES.items():
            with AcceleratorClient(accel.address, timeout=600) as client:
                client.hello()
                out[label] = rows(train_net(dataclasses.replace(cfg, recipe=recipe), acc=client))
    out[REFERENCE] = rows(train_net(dataclasses.replace(cfg, algorithms=("sgd",))))
    return out


def table(runs: dict[str, list[dict]]) -> str:
    lines = [f"{'epoch':>5} " + " ".join(f"{label + ' ' + col:>22}" for label in runs
                                          for col in ("loss", "test acc", "swamped/adds"))]
    for rows in zip(*runs.values()):
        cells = []
        for r in rows:
            share = f"{r['swamped'] / r['adds']:.4f}" if r["adds"] else "-"
            cells += [f"{r['loss']:>22.4f}", f"{r['test_accuracy']:>22.3f}", f"{share:>22}"]
        lines.append(f"{rows[0]['epoch']:>5} " + " ".join(cells))
    return "\n".join(lines)


def plot(runs: dict[str, list[dict]], path: Path) -> None:
    """Training loss, test accuracy and the share of swamped adds against epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(7, 7), sharex=True)
    for label, rows in runs.items():
        epochs = [r["epoch"] for r in rows]
        style = {"marker": "o", "ms": 3,
                 "label": label if label == REFERENCE else f"lpsgd fp8-ibm, {label}"}
        axes[0].plot(epochs, [r["loss"] for r in rows], **style)
        axes[1].plot(epochs, [r["test_accuracy"] for r in rows], **style)
        trained = [r for r in rows if r["adds"]]
        axes[2].plot([r["epoch"] for r in trained], [r["swamped"] / r["adds"] for r in trained], **style)
    for ax, name in zip(axes, ("training loss", "test accuracy", "swamped adds / (1,6,9) adds")):
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    axes[0].set_title("digits64 (fan-in 4096), mlp:16: (1,6,9) sums in chunks of 64 or none")
    axes[2].set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--inner-steps", type=int, default=None, help="steps per epoch (default: one pass)")
    p.add_argument("--figure", type=Path, default=FIGURE)
    args = p.parse_args()
    runs = measure(epochs=args.epochs, inner_steps=args.inner_steps)
    print(table(runs))
    plot(runs, args.figure)
    print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
