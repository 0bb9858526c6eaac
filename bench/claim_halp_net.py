"""HALP at 8 bits against float64 SVRG on the digits networks: epochs to the same training loss.

Usage::

    python bench/claim_halp_net.py                    # about 6 minutes on two busy cores
    python bench/claim_halp_net.py --mlp-epochs 4 --cnn-epochs 2 --figure /tmp/h.png

The claim (De Sa et al. 2018): HALP at 8 bits reaches the training loss of float64 SVRG within
1.5× its epochs. Runs (seed 0, B = 1, α = 0.02, λ = 1e-2, the emulated backend over ipc, 8-bit
offsets fixed<1,7>, fp8-ibm passes): ``cosim run --model mlp:128 --algorithm svrg,halp`` with
the networks' defaults (μ = 1, fixed rule: host/deep.py NET_MU, NET_MU_RULE) and ``cosim run
--model cnn --algorithm svrg,halp --mu 16`` (the cnn needs the finer grid, docs/host.md). For
SVRG's loss at a sixth, a third and two thirds of the run's epochs (so that 1.5× each is
within the run), the first epoch at which HALP's loss is as low ("-": not within the run)
against 1.5× SVRG's. Prints the table and draws the training
loss of both per network (default docs/figures/claim-halp-net.png).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

FIGURE = Path(__file__).resolve().parents[1] / "docs" / "figures" / "claim-halp-net.png"
RUNS = {"mlp:128": (), "cnn": ("--mu", "16")}


def measure(model: str, epochs: int) -> dict[str, list[float]]:
    """Training loss per epoch (0: the start) of svrg and halp on ``model``."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "cosim", "run", "--model", model, "--algorithm", "svrg,halp",
                        "--epochs", str(epochs), *RUNS[model], "--out", tmp], check=True, stdout=subprocess.DEVNULL)
        records = json.loads(next(Path(tmp).glob("*/metrics.json")).read_text())["epochs"]
    return {a: [r["loss"] for r in records if r["algorithm"] == a] for a in ("svrg", "halp")}


def reached(losses: dict[str, list[float]]) -> list[tuple[int, float, int | None]]:
    """(SVRG's epoch e, its loss, HALP's first epoch at or below it) for e at ⅙, ⅓ and ⅔ of the run."""
    n = len(losses["svrg"]) - 1
    out = []
    for e in sorted({max(1, n // 6), max(1, n // 3), max(1, 2 * n // 3)}):
        target = losses["svrg"][e]
        out.append((e, target, next((k for k, f in enumerate(losses["halp"]) if f <= target), None)))
    return out


def table(results: dict[str, dict[str, list[float]]]) -> str:
    lines = [f"{'network':>8} {'SVRG epoch':>10} {'SVRG loss':>10} {'HALP epoch':>10} {'1.5x':>6}  holds"]
    for model, losses in results.items():
        for e, target, k in reached(losses):
            lines.append(f"{model:>8} {e:>10} {target:>10.4f} {k if k is not None else '-':>10} {1.5 * e:>6.1f}  "
                         f"{'yes' if k is not None and k <= 1.5 * e else 'no'}")
    return "\n".join(lines)


def plot(results: dict[str, dict[str, list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4))
    for ax, (model, losses) in zip(axes, results.items()):
        for algo, label in (("svrg", "SVRG float64"), ("halp", "HALP, 8-bit offsets, fp8 passes")):
            ax.semilogy(range(len(losses[algo])), losses[algo], marker="o", ms=3, label=label)
        for e, target, _ in reached(losses):
            ax.axhline(target, color="grey", lw=0.6, ls=":")
            ax.axvline(1.5 * e, color="grey", lw=0.6, ls=":")
        ax.set_title(f"digits, {model}{' (μ = 16)' if RUNS[model] else ' (μ = 1)'}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mlp-epochs", type=int, default=30)
    p.add_argument("--cnn-epochs", type=int, default=12)
    p.add_argument("--figure", type=Path, default=FIGURE)
    args = p.parse_args()
    results = {"mlp:128": measure("mlp:128", args.mlp_epochs), "cnn": measure("cnn", args.cnn_epochs)}
    print(table(results))
    for model, losses in results.items():
        print(f"{model}: final loss SVRG {losses['svrg'][-1]:.4f}, HALP {losses['halp'][-1]:.4f}")
    plot(results, args.figure)
    print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
