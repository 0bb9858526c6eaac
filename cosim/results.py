"""A run's results directory: resolved config, metrics (CSV + JSON), convergence plot.

Usage::

    results = ResultsDir.create("runs", name="digits-softmax", config=resolved)
    results.epoch(record)            # appended to metrics.csv at once: a crash keeps every epoch
    results.finish(status="completed", reference={"loss": f_star, ...})
    results.path / "convergence.png"
    results = ResultsDir.reopen(path, records=kept)   # a resumed run: metrics.csv holds ``kept``

Metrics are written as they arrive; ``finish`` writes ``metrics.json`` and the plot from
whatever was recorded, so an interrupted run still leaves both. Whole files (config, JSON,
weights, checkpoints) are written atomically (:func:`write_atomic`): a crash leaves the old
version or the new one, never half of one.
"""
from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

CSV_COLUMNS = ("algorithm", "epoch", "loss", "gap", "grad_norm", "bits", "offset_format",
               "seconds", "saturations", "scale", "test_accuracy")   # the last: networks only
GAP_FLOOR = 1e-16  # gaps at or below float64 resolution are drawn on this floor


def toml_dumps(table: dict) -> str:
    """A flat TOML document for scalar and list values (all a run config holds)."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            # TOML spells the non-finite floats inf, -inf and nan, as Python's str() does
            return str(v) if isinstance(v, float) and not math.isfinite(v) else repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(str(v))  # a JSON string is a valid TOML basic string
    return "".join(f"{k} = {value(v)}\n" for k, v in table.items() if v is not None)


def write_atomic(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Replace ``path`` by what ``write(file)`` writes, atomically: a temporary file beside it,
    fsync'd, renamed over it (then the directory fsync'd, so the rename survives power loss)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):      # in a directory gone unwritable, it stays
            tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ResultsDir:
    """The directory one run writes; see the module docstring."""

    def __init__(self, path: Path, config: dict | None, derived: dict | None = None,
                 records: list[dict] = ()) -> None:
        self._path = path
        self._records: list[dict] = []
        self.notes: list[dict] = []     # recoveries (restarts, resumes), in metrics.json
        if config is not None:
            self.write_config(config, derived)
        self._csv = None
        self.rewind(list(records))

    @classmethod
    def reopen(cls, path: str | Path, *, records: list[dict]) -> "ResultsDir":
        """A results directory written before, continued: metrics.csv keeps ``records`` only."""
        return cls(Path(path), None, records=records)

    def rewind(self, records: list[dict]) -> None:
        """Make ``records`` the whole of metrics.csv (atomically), and append after them."""
        if self._csv is not None:
            self._csv.close()
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
        write_atomic(self._path / "metrics.csv", lambda f: f.write(text.getvalue().encode()))
        self._records = list(records)
        self._csv = open(self._path / "metrics.csv", "a", newline="")
        self._writer = csv.DictWriter(self._csv, fieldnames=CSV_COLUMNS, extrasaction="ignore")

    @classmethod
    def create(cls, root: str | Path, *, name: str, config: dict,
               derived: dict | None = None) -> "ResultsDir":
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path(root) / f"{name}-{stamp}"
        path, k = base, 1
        while path.exists():  # two runs in the same second must not share a directory
            k += 1
            path = base.with_name(f"{base.name}-{k}")
        path.mkdir(parents=True)
        return cls(path, config, derived)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def trace_path(self) -> Path:
        return self._path / "trace.cosim"

    @property
    def records(self) -> list[dict]:
        return list(self._records)

    def epoch(self, record: dict) -> None:
        self._records.append(record)
        self._writer.writerow(record)
        self._csv.flush()

    def write_config(self, config: dict, derived: dict | None = None) -> None:
        """Settings as TOML (a valid ``--config``); ``derived`` values as comments below them."""
        notes = "".join(f"# {line}" for line in toml_dumps(derived or {}).splitlines(True))
        text = ("# resolved configuration of this run; rerun with: cosim run --config config.toml\n"
                + toml_dumps(config) + ("# derived from the data and the reference optimum:\n" + notes
                                        if notes else ""))
        write_atomic(self._path / "config.toml", lambda f: f.write(text.encode()))

    def save_weights(self, weights: dict) -> None:
        """Final float64 weights per algorithm, bit for bit (``weights.npz``)."""
        import numpy as np

        write_atomic(self._path / "weights.npz", lambda f: np.savez(f, **weights))

    def finish(self, *, status: str, reference: dict | None = None, title: str = "") -> None:
        self._csv.close()
        text = json.dumps({"status": status, "reference": reference, "epochs": self._records,
                           **({"recoveries": self.notes} if self.notes else {})}, indent=1,
                          default=_jsonable)
        write_atomic(self._path / "metrics.json", lambda f: f.write(text.encode()))
        if self._records and "test_accuracy" in self._records[0]:   # a network (host/deep.py)
            from cosim.deep_plot import plot_training
            plot_training(self._records, self._path / "convergence.png", title=title)
        elif self._records:
            plot_convergence(self._records, self._path / "convergence.png", title=title)


def _jsonable(v: Any) -> Any:
    if hasattr(v, "tolist"):
        return v.tolist()
    raise TypeError(f"cannot store {type(v).__name__} in metrics.json")


def by_algorithm(records: list[dict]) -> dict[str, list[dict]]:
    """Epoch records grouped per algorithm, in the order the algorithms ran."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r["algorithm"], []).append(r)
    return groups


def plot_convergence(records: list[dict], path: Path, *, title: str = "") -> None:
    """Relative loss gap against epoch (log scale), one line per algorithm; bits underneath."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, axb) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1]})
    for i, (alg, rs) in enumerate(by_algorithm(records).items()):
        epochs = [r["epoch"] for r in rs]
        line, = ax.semilogy(epochs, [max(r["gap"], GAP_FLOOR) for r in rs], marker="o", ms=3, label=alg)
        # algorithms often share a width: distinct dashes keep overlapping steps visible
        axb.step(epochs, [r["bits"] for r in rs], where="post", color=line.get_color(),
                 ls=("-", "--", ":", "-.")[i % 4], lw=1.5 + 0.5 * (i % 2))
    axb.set_yscale("log", base=2)
    axb.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axb.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.axhline(1e-10, color="grey", lw=0.8, ls="--")  # the accuracy of the HALP claim
    ax.set_ylabel("relative loss gap (f − f*) / |f*|")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    ax.set_title(title)
    axb.set_ylabel("bits")
    axb.set_xlabel("epoch")
    axb.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
