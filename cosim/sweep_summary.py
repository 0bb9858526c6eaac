"""A sweep's summary: one row per point and algorithm, as tables and plots.

Usage::

    paths = write_summary(sweep, resolved, Path("sweeps/bits"))  # summary.csv, summary.parquet, PNGs
    rows = summary_rows(sweep, resolved, Path("sweeps/bits"))    # the same rows as dicts
    op_totals({"add fp32": 10, "mul fixed<2,6>*fixed<1,7>": 4, "rng bits": 64})

A row holds the point's settings (resolved: defaults filled in), its status and error, the
algorithm's final gap, the first epoch at each of ``TARGETS``, wall and training time, its
accelerator operations summed over epochs and its energy (``cosim energy``'s default model);
everything is read from the run directories, so a resumed sweep summarises every point.
"""
from __future__ import annotations

import csv
import json
import statistics
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cosim.results import GAP_FLOOR
from cosim.sweep import Sweep, read_record, run_status

__all__ = ["TARGETS", "HEATMAP_TARGET", "TIME_COLUMNS", "summary_rows", "write_summary", "op_totals",
           "final_gaps", "target_column", "read_epochs", "pyplot"]

TARGETS = (1e-2, 1e-4, 1e-6, 1e-8, 1e-10)
HEATMAP_TARGET = 1e-6
SETTINGS = ("dataset", "model", "bits", "policy", "seed")   # columns every summary has
TIME_COLUMNS = ("wall_seconds", "train_seconds")          # the only columns that vary between reruns
PLOTS = ("gap-vs-bits.png", "epochs-to-target.png", "pareto.png")


def target_column(gap: float) -> str:
    """``epochs_to_1e-06``: the first epoch whose relative gap is ≤ ``gap``."""
    return f"epochs_to_{gap:.0e}"


def op_totals(ops: Mapping[str, int]) -> dict[str, int]:
    """Operation counts by kind (``ops_add`` …, one column per kind cosim energy prices), their
    total ``ops``, ``rng_bits``, and ``bit_ops``: each operation weighted by the width of its
    widest operand, each random bit by 1 (a price-free measure of the arithmetic's size).
    Diagnostic keys (``"swamped add <acc>"``: adds counted already) are left out.

    >>> t = op_totals({"add fp32": 10, "mul fixed<2,6>*fixed<1,7>": 4, "rng bits": 64, "swamped add fp32": 3})
    >>> t["ops"], t["bit_ops"], t["ops_mul"], t["rng_bits"]
    (14, 416, 4, 64)
    """
    from cosim.energy import OPERATIONS, is_diagnostic, parse_op

    kinds, rng, bit_ops = dict.fromkeys(OPERATIONS, 0), 0, 0
    for key, n in ops.items():
        if is_diagnostic(key):
            continue
        op, operands, _ = parse_op(key)
        if op == "rng":
            rng += n
            bit_ops += n
        else:
            kinds[op] += n
            bit_ops += n * max(o.bits for o in operands)
    return {"ops": sum(kinds.values()), "bit_ops": bit_ops, "rng_bits": rng,
            **{f"ops_{k}": v for k, v in kinds.items()}}


def read_epochs(run_dir: Path) -> list[dict]:
    """The per-epoch records of a run directory's ``metrics.json`` ([] without one)."""
    try:
        return json.loads((run_dir / "metrics.json").read_text())["epochs"]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def final_gaps(run_dir: Path) -> dict[str, float]:
    """{algorithm: its last recorded relative gap} of a run directory."""
    return {r["algorithm"]: r["gap"] for r in read_epochs(run_dir)}


def summary_rows(sweep: Sweep, resolved: dict[str, dict], root: Path) -> list[dict[str, Any]]:
    """One row per point of ``sweep`` and algorithm of the point, in sweep order, from the run
    directories under ``root``/runs (a point never run has status "not run")."""
    settings = list(dict.fromkeys([*SETTINGS, *(k for k in sweep.keys if k != "algorithms")]))
    rows = []
    for p in sweep.points:
        run_dir = root / "runs" / p.id
        status = run_status(run_dir)
        records, extra = read_epochs(run_dir), read_record(run_dir)
        config = resolved[p.id]
        for alg in config["algorithms"]:
            rs = [r for r in records if r["algorithm"] == alg]
            last = rs[-1] if rs else {}
            energy = (extra.get("energy_pj") or {}).get(alg)
            ops = op_totals(sum((Counter(r.get("ops") or {}) for r in rs), Counter())) if rs else {}
            rows.append({
                "point": p.id, "algorithm": alg, **{k: config.get(k) for k in settings},
                "status": status, "error": None if status in ("completed", "not run") else extra.get("error"),
                "epochs_run": last.get("epoch"), "final_gap": last.get("gap"), "final_bits": last.get("bits"),
                **{target_column(t): next((r["epoch"] for r in rs if r["gap"] <= t), None) for t in TARGETS},
                "wall_seconds": extra.get("wall_seconds"), "train_seconds": last.get("seconds"),
                **{k: ops.get(k) for k in op_totals({})},
                "energy_j": None if energy is None else energy * 1e-12,
                "run_dir": f"runs/{p.id}",
            })
    return rows


def write_summary(sweep: Sweep, resolved: dict[str, dict], root: Path) -> list[Path]:
    """summary.csv, summary.parquet and the plots in ``root``; the paths written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = summary_rows(sweep, resolved, root)
    csv_path, parquet_path = root / "summary.csv", root / "summary.parquet"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    table = pa.Table.from_pylist(rows)
    # a column no row has a value in yet (no run reached 1e-10) still gets its type
    table = table.cast(pa.schema([pa.field(f.name, _type(f.name) if pa.types.is_null(f.type)
                                           else f.type) for f in table.schema]))
    pq.write_table(table, parquet_path)
    done = [r for r in rows if r["status"] == "completed" and r["final_gap"] is not None]
    plots = [root / name for name in PLOTS]
    for draw, path in zip((plot_gap_vs_bits, plot_epochs_to_target, plot_pareto), plots):
        draw(done, path)
    return [csv_path, parquet_path, *plots]


def _type(column: str) -> Any:
    """The parquet type of a column whose values are all null."""
    import pyarrow as pa

    if column in ("final_gap", "wall_seconds", "train_seconds", "energy_j"):
        return pa.float64()
    if column in ("epochs_run", "final_bits") or column in op_totals({}) or column.startswith("epochs_to_"):
        return pa.int64()
    return pa.string()


# ---- plots ---------------------------------------------------------------------------------------

def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _label(row: Mapping[str, Any]) -> str:
    return row["algorithm"] + (f" ({row['policy']})" if row.get("policy") else "")


def _groups(rows: list[dict], key: Any) -> dict[Any, list[dict]]:
    out: dict[Any, list[dict]] = {}
    for r in rows:
        out.setdefault(key(r), []).append(r)
    return out


def plot_gap_vs_bits(rows: list[dict], path: Path) -> None:
    """Final gap against bits, a line through the medians per algorithm (and policy), every
    run a dot; a float64 host algorithm is a dashed level."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, rs in _groups(rows, _label).items():
        gaps = [max(r["final_gap"], GAP_FLOOR) for r in rs]
        if all(r["final_bits"] == 64 for r in rs):
            ax.axhline(statistics.median(gaps), ls="--", color="grey", lw=1, label=f"{label}, float64")
            continue
        by_bits = _groups(rs, lambda r: r["bits"])
        xs = sorted(by_bits)
        line, = ax.plot(xs, [statistics.median(max(r["final_gap"], GAP_FLOOR) for r in by_bits[b]) for b in xs],
                        marker="o", label=label)
        ax.scatter([r["bits"] for r in rs], gaps, color=line.get_color(), alpha=0.35, s=12)
    ax.set_yscale("log")
    ax.set_xticks(sorted({r["bits"] for r in rows}))
    ax.set_xlabel("bits")
    ax.set_ylabel("final relative gap (median)")
    ax.grid(True, alpha=0.3)
    if rows:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_epochs_to_target(rows: list[dict], path: Path, target: float = HEATMAP_TARGET) -> None:
    """Algorithm × bits: the median epoch at which the gap first reached ``target`` among the
    runs that reached it ("k/n" when only k of n did, "—" when none did)."""
    import numpy as np

    plt = pyplot()
    labels = list(_groups(rows, _label))
    bits = sorted({r["bits"] for r in rows})
    cells = _groups(rows, lambda r: (_label(r), r["bits"]))
    column = target_column(target)
    grid = np.full((len(labels), len(bits)), np.nan)
    fig, ax = plt.subplots(figsize=(1.2 * len(bits) + 2.5, 0.6 * len(labels) + 1.8))
    for i, label in enumerate(labels):
        for j, b in enumerate(bits):
            rs = cells.get((label, b), [])
            hit = [r[column] for r in rs if r[column] is not None]
            if hit:
                grid[i, j] = statistics.median(hit)
            text = "" if not rs else "—" if not hit else f"{grid[i, j]:g}" + (f"\n{len(hit)}/{len(rs)}" if len(hit) < len(rs) else "")
            if text:   # on a light box: readable on any cell colour
                ax.text(j, i, text, ha="center", va="center", fontsize=9,
                        bbox={"fc": "white", "alpha": 0.75, "lw": 0, "boxstyle": "round"})
    ax.imshow(np.ma.masked_invalid(grid), cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(bits)), [str(b) for b in bits])
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("bits")
    ax.set_title(f"epochs to relative gap ≤ {target:g}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_pareto(rows: list[dict], path: Path) -> None:
    """Final gap against energy (bit_ops when a run has no energy), every run a dot, the
    Pareto front (no other run both cheaper and closer) a line with its runs named."""
    plt = pyplot()
    use_energy = all(r["energy_j"] is not None for r in rows)
    cost = "energy_j" if use_energy else "bit_ops"
    shown = [r for r in rows if r[cost]]   # a log axis has no 0 (host runs have no bit_ops)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, rs in _groups(shown, _label).items():
        ax.scatter([r[cost] for r in rs], [max(r["final_gap"], GAP_FLOOR) for r in rs], label=label, s=18)
    front, best = [], float("inf")
    for r in sorted(shown, key=lambda r: (r[cost], r["final_gap"])):
        if r["final_gap"] < best:
            front.append(r)
            best = r["final_gap"]
    if front:
        ax.step([r[cost] for r in front], [max(r["final_gap"], GAP_FLOOR) for r in front], where="post",
                color="black", lw=1, label="Pareto front")
        for r in front:
            width = "fp64" if r["final_bits"] == 64 else f"b{r['bits']}"
            ax.annotate(f"{r['algorithm']} {width}", (r[cost], max(r["final_gap"], GAP_FLOOR)),
                        fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.legend()
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("energy (J, cosim energy's default model)" if use_energy
                  else "operations × operand width (bit_ops)")
    ax.set_ylabel("final relative gap")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
