"""Run every benchmark, keep going past failures, and print a table of all their targets.

Usage::

    python bench/run_all.py                          # every bench/bench_*.py (what `make bench` runs)
    python bench/run_all.py --only bench_dot rtl     # a subset (``bench_`` and ``.py`` optional)
    python bench/run_all.py --markdown               # the table as Markdown, for docs
    python bench/run_all.py --dir /tmp/fake          # benchmarks from another folder (tests)

Each ``bench_*.py`` runs in sorted order as its own process with this interpreter, its output
streamed as it comes, and ``COSIM_BENCH_TARGETS`` naming a fresh file in which
``bench/targets.py`` records every target the benchmark reports. A missed target is a result,
not a failure: the benchmark exits 0 and the table says MISSED. A benchmark that exits nonzero
gets a row with its exit code and last stderr line, and the rest still run.

Exit code: 0 when every benchmark ran to the end (whether or not its targets were met),
1 when one crashed, 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from targets import ENV, met

HEADER = ("benchmark", "wall s", "target", "value", "bound", "result", "moonshot")


@dataclass
class Result:
    """One benchmark's run: its wall time, exit code, last stderr line and recorded targets."""
    name: str
    seconds: float
    returncode: int
    last_stderr: str
    targets: list[dict]


def run_one(script: Path, record: Path) -> Result:
    """Run one benchmark, echoing its output live; stderr is read here to keep its last line."""
    # Unbuffered, so output still streams when ours goes to a pipe (make bench | tee log).
    env = {**os.environ, ENV: str(record), "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    with subprocess.Popen([sys.executable, str(script)], env=env, stderr=subprocess.PIPE,
                          text=True, errors="replace") as proc:
        last = ""
        for line in proc.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            last = line.strip() or last
    seconds = time.perf_counter() - t0
    targets = [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines()] \
        if record.exists() else []
    return Result(script.stem, seconds, proc.returncode, last, targets)


def rows(results: list[Result]) -> list[tuple[str, ...]]:
    """Table rows: one per target, then one per crash or per benchmark without targets."""
    out = []
    for r in results:
        first = [r.name, f"{r.seconds:.1f}"]      # name and time on the benchmark's first row only
        for t in r.targets:
            # The record holds the moonshot's text but not its outcome; decide it as targets.py did.
            moon = f"{t['moonshot']}: {'met' if met(t['value'], t['moonshot']) else 'not met'}" \
                if t["moonshot"] else ""
            out.append((*first, t["name"], f"{t['value']:.3g}", t["target"],
                        "met" if t["met"] else "MISSED", moon))
            first = ["", ""]
        if r.returncode != 0:
            out.append((*first, "", "", "", f"CRASHED (exit {r.returncode}): {r.last_stderr}", ""))
        elif not r.targets:
            out.append((*first, "", "", "", "no targets reported", ""))
    return out


def _stem(name: str) -> str:
    """``dot``, ``bench_dot`` and ``bench_dot.py`` all name bench_dot."""
    name = name.removesuffix(".py")
    return name if name.startswith("bench_") else f"bench_{name}"


def table(body: list[tuple[str, ...]], markdown: bool) -> str:
    """The rows under HEADER, as Markdown or as plain columns for a terminal."""
    if markdown:
        lines = [HEADER, ("---",) * len(HEADER), *body]
        return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in lines)
    widths = [max(len(row[i]) for row in (HEADER, *body)) for i in range(len(HEADER))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in (HEADER, tuple("-" * w for w in widths), *body))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="run only these benchmarks: bench_dot, dot or bench_dot.py")
    parser.add_argument("--markdown", action="store_true", help="print the summary table as Markdown")
    parser.add_argument("--dir", type=Path, default=Path(__file__).parent,
                        help="folder of bench_*.py scripts (default: this script's folder)")
    args = parser.parse_args()

    scripts = {p.stem: p for p in sorted(args.dir.glob("bench_*.py"))}
    if args.only:
        wanted = [_stem(n) for n in args.only]
        unknown = [given for given, n in zip(args.only, wanted) if n not in scripts]
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; "
                         f"choose from: {', '.join(scripts) or f'(none in {args.dir})'}")
        scripts = {n: p for n, p in scripts.items() if n in wanted}

    results = []
    with tempfile.TemporaryDirectory(prefix="cosim-bench-") as tmp:
        for i, (name, script) in enumerate(scripts.items(), 1):
            print(f"\n== [{i}/{len(scripts)}] {name}", flush=True)
            results.append(run_one(script, Path(tmp) / f"{name}.jsonl"))

    targets = [t for r in results for t in r.targets]
    crashed = [r.name for r in results if r.returncode != 0]
    print(f"\n== summary: {len(results)} benchmarks, {sum(t['met'] for t in targets)} of "
          f"{len(targets)} targets met, {len(crashed)} crashed{': ' + ', '.join(crashed) if crashed else ''}\n")
    print(table(rows(results), args.markdown))
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
