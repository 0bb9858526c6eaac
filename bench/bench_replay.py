"""Replay throughput: a recorded run re-sent to a fresh emulated accelerator, against the run.

Usage::

    python bench/bench_replay.py               # digits / softmax HALP and LP-SGD, 5 epochs

Records a ``cosim run`` (its wall time from the results' metrics), then replays its trace with
``cosim.replay.replay`` against a fresh daemon and prints messages and MB per second of the
replay and the ratio of the two wall times. The accelerator does the same work in both; what
the replay saves is the host's side (reference optimum, full gradients, the outer loop), so
its target is replay / run < 1 (reported through ``bench/targets.py``). A reply that differs
from the recorded one is an error, not a missed target.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cosim.launch import AcceleratorProcess
from cosim.replay import replay
from cosim.trace import TraceReader
from targets import target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cosim", "run", "--algorithm", "halp,lpsgd", "--epochs",
                        str(args.epochs), "--out", tmp], check=True, capture_output=True)
        run_s = time.perf_counter() - t0
        (run_dir,) = [p for p in Path(tmp).iterdir() if p.is_dir()]
        trace = run_dir / "trace.cosim"
        messages = [r for r in TraceReader(trace) if r["kind"] == "message"]
        size = trace.stat().st_size
        with AcceleratorProcess.start(f"ipc://{tmp}/replay.sock") as accel:
            t0 = time.perf_counter()
            report = replay(trace, accel.address)
            replay_s = time.perf_counter() - t0
    assert report.identical, report.summary()
    print(f"digits / softmax, HALP and LP-SGD, {args.epochs} epochs: {len(messages)} messages, "
          f"{size / 1e6:.1f} MB of trace\n")
    print("| | seconds | messages/s | MB/s |")
    print("|---|---:|---:|---:|")
    print(f"| ours: cosim replay (fresh daemon, every reply compared) | {replay_s:.2f} | "
          f"{len(messages) / replay_s:,.0f} | {size / 1e6 / replay_s:.1f} |")
    print(f"| peer: the original cosim run (process start to results) | {run_s:.2f} | "
          f"{len(messages) / run_s:,.0f} | {size / 1e6 / run_s:.1f} |")
    print(f"\n{report.summary()}")
    target("bench_replay", "replay / run time", replay_s / run_s, "< 1")


if __name__ == "__main__":
    main()
