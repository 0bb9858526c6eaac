"""The training plot of a network run: loss and test accuracy against epoch.

Usage::

    result = train_net(cfg)                                   # host/deep.py
    plot_training([asdict(r) for r in result.records], Path("training.png"), title="digits mlp:128")

One line per algorithm and precision (``sgd fp64``, ``svrg fp64``, ``sgd fp32``, …), the
same colour and dashes in both panels.
"""
from __future__ import annotations

from pathlib import Path


def by_run(records: list[dict]) -> dict[str, list[dict]]:
    """Records grouped by algorithm and precision, labelled ``"sgd fp64"``, in the order they ran."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(f"{r['algorithm']} fp{r['bits']}", []).append(r)
    return groups


def plot_training(records: list[dict], path: Path, *, title: str = "") -> None:
    """Training loss (log scale) above, test accuracy below, against epoch."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, axa) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    for i, (label, rs) in enumerate(by_run(records).items()):
        epochs = [r["epoch"] for r in rs]
        # float32 runs often lie on their float64 twins: distinct dashes keep both visible
        style = {"ls": ("-", "--", ":", "-.")[i % 4], "marker": "o", "ms": 3}
        line, = ax.semilogy(epochs, [r["loss"] for r in rs], label=label, **style)
        axa.plot(epochs, [r["test_accuracy"] for r in rs], color=line.get_color(), **style)
    ax.set_ylabel("training loss")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    ax.set_title(title)
    axa.set_ylabel("test accuracy")
    axa.set_xlabel("epoch")
    axa.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axa.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
