"""Recovery from a lost daemon: 20 SIGKILLs at seeded random points, each run's weights against an
uninterrupted run's, and what a restart costs, measured against that run in the same session.

Usage::

    python bench/bench_recovery.py                 # 5 runs × 4 kills, HALP and LP-SGD alternating
    python bench/bench_recovery.py --runs 2 --kills 2 --epochs 6

Each run is ``cosim run --restarts K`` on digits (``--inner-steps 10000``: epochs long enough to be
killed inside); its daemon is SIGKILLed K times, after a seeded epoch and a seeded delay of up to
80 ms (mid-epoch, between epochs, or while a new daemon is configured, loaded and restored).
Printed: how many runs ended with weights bit-identical to the uninterrupted run of the same
algorithm, and per restart the wall time added to the run (the killed run's time minus the
uninterrupted one's, over its restarts: a new daemon, the reference optimum, configure, load,
restore and the lost part of an epoch) and the launch of the new daemon alone. No target:
``docs/performance.md`` records the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _start(out: Path, algorithm: str, epochs: int, restarts: int) -> tuple[subprocess.Popen, Path]:
    log = out / f"{algorithm}-{restarts}.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "cosim", "run", "--algorithm", algorithm,
                                 "--epochs", str(epochs), "--inner-steps", "10000", "--timeout", "600",
                                 "--restarts", str(restarts),
                                 "--out", str(out), "--name", f"{algorithm}-{restarts}"],
                                cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    return proc, log


def _progress(log: Path) -> tuple[list[int], int]:
    """(daemon pids so far, highest epoch printed) from a run's output."""
    text = log.read_text()
    pids = [int(p) for p in re.findall(r"accelerator daemon pid (\d+)", text)]
    epochs = [int(e) for e in re.findall(r"^\s*\w+\s+(\d+)\s+\d+\.\d+\s", text, re.MULTILINE)]
    return pids, max(epochs, default=-1)


def _weights(out: Path, name: str) -> np.ndarray:
    directory = next(out.glob(f"{name}-2*"))
    with np.load(directory / "weights.npz") as z:
        return z[z.files[0]]


def run(runs: int, kills: int, epochs: int, seed: int) -> None:
    rng = random.Random(seed)
    algorithms = ("halp", "lpsgd")
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp:
        out = Path(tmp)
        reference, wall = {}, {}
        for algorithm in algorithms:
            started = time.perf_counter()
            proc, log = _start(out, algorithm, epochs, 0)
            assert proc.wait() == 0, log.read_text()
            wall[algorithm] = time.perf_counter() - started
            reference[algorithm] = _weights(out, f"{algorithm}-0")
        identical, added, launches = 0, [], []
        for r in range(runs):
            algorithm = algorithms[r % len(algorithms)]
            points = [(after, rng.uniform(0.0, 0.08)) for after in sorted(rng.sample(range(epochs - 3), kills))]
            started = time.perf_counter()
            proc, log = _start(out, algorithm, epochs, kills)
            for i, (after, delay) in enumerate(points):
                while (p := _progress(log)) and not (len(p[0]) > i and p[1] >= after):
                    assert proc.poll() is None, log.read_text()
                    time.sleep(0.005)
                time.sleep(delay)
                os.kill(p[0][i], signal.SIGKILL)
            code = proc.wait()
            seconds = time.perf_counter() - started
            name = f"{algorithm}-{kills}"
            directory = next(out.glob(f"{name}-2*"))
            notes = json.loads((directory / "metrics.json").read_text()).get("recoveries", [])
            ok = code == 0 and _weights(out, name).tobytes() == reference[algorithm].tobytes()
            identical += ok
            added.append((seconds - wall[algorithm]) / max(len(notes), 1))
            launches += [n["relaunch_seconds"] for n in notes]
            print(f"run {r + 1} ({algorithm}): {len(notes)} restarts, exit {code}, "
                  f"{'bit-identical' if ok else 'DIFFERENT'}, {seconds:.1f} s against {wall[algorithm]:.1f} s")
            for d in out.glob(f"{name}-2*"):
                os.rename(d, out / f"done-{r}-{d.name}")
        print(f"\n{identical} of {runs} runs ({runs * kills} kills) recovered bit-identically")
        print(f"per restart: {np.mean(added):.2f} s added to the run (median {np.median(added):.2f} s); "
              f"launching the new daemon {np.mean(launches):.2f} s of it")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--kills", type=int, default=4, help="daemon kills per run")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    run(args.runs, args.kills, args.epochs, args.seed)


if __name__ == "__main__":
    main()
