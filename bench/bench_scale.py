"""Problems a hundred times larger: HALP through the daemon at n = 10^6, against a compiled float32 epoch.

Usage::

    python bench/bench_scale.py                       # both problems below (about 10 minutes)
    python bench/bench_scale.py --only lsq --samples 200000

Two problems, each trained by ``host.train.train`` (the code ``cosim run`` runs) for a few
HALP epochs against a daemon process (``python -m accel`` on ipc) with the default formats of
a run (8-bit data and offset, fp32 accumulator, stochastic rounding; the softmax problem's
offset 12 bits, see PROBLEMS):

- **lsq**: ``synthetic_linear``, n = 10^6 samples × 100 features (+ bias), least squares;
- **softmax**: ``synthetic_softmax``, 60,000 × 784 (+ bias), 10 classes (MNIST's shape).

Printed per problem: the load time (configure, the data in chunks, the first full gradient),
seconds per HALP epoch as the run records them (host full gradient and anchor terms, recentre,
run_epoch, fetch, the epoch's loss and gradient norm for the record), the daemon's resident
memory for the data (its RSS after the first epoch minus its RSS before configure, after a small
run of the same kind has loaded its code) against the data's
size at its format's width (n·F bytes for 8-bit data), and the peak RSS of host and daemon.
The peer, in the same run: one SVRG epoch of the same size and sample order in plain float32,
compiled with numba (``bench_epoch.float32_svrg_epoch``). Targets: the daemon's data memory
≤ 1.25× the data's size; a HALP epoch ≤ 10× the float32 epoch. Last, the cost of a recentre
at n = 10^6, C = 10: its anchor terms as float32 (protocol 1.3, fp32 accumulator) and float64.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


from bench_epoch import float32_epoch
from cosim.launch import AcceleratorProcess, ipc_address
from host.client import AcceleratorClient
from host.datasets import load_dataset
from host.models import Objective
from host.optimizers import epoch_order
from host.train import TrainConfig, train
from targets import target

# The softmax problem's offset is 12 bits: with the default 8 (a grid of ‖g̃‖/(μ·127) on 7,850
# weights over 785 dense features) HALP's loss grows from the first epoch, where 12 bits track
# float64 SVRG epoch for epoch (measured at n = 10^4; docs/performance.md). The data stays 8-bit.
PROBLEMS = {"lsq": dict(dataset="synthetic_linear", model="linear", samples=10**6, features=100),
            "softmax": dict(dataset="synthetic_softmax", model="softmax", samples=60_000, features=784,
                            offset_format="fixed<1,11>")}
EPOCHS = 3


def bench(name: str, settings: dict, epochs: int) -> str:
    """Train one problem (see the module docstring); its table row."""
    cfg = TrainConfig(algorithms=("halp",), epochs=epochs, **settings)
    # The peer first, on its own copy of the data, freed before the run: the host's peak RSS is the run's.
    ds = load_dataset(cfg.dataset, samples=cfg.samples, features=cfg.features, seed=cfg.seed)
    obj = Objective(cfg.model, ds.x, ds.y, cfg.l2, ds.outputs_for(cfg.model))
    n = obj.n_samples
    epoch32 = float32_epoch(obj, epoch_order(cfg.seed, 1, n, n), 0.5 / obj.smoothness())
    epoch32()                                            # compile or load, outside the timer
    f32 = min(_timed(epoch32) for _ in range(3))
    del ds, obj, epoch32
    marks: dict[str, float] = {}
    memory: dict[str, dict[str, int]] = {}
    epoch_seconds: list[float] = []
    with tempfile.TemporaryDirectory(prefix="cosim-bench-") as tmp, \
            AcceleratorProcess.start(ipc_address(Path(tmp))) as daemon:

        def on_start(algorithm: str) -> None:
            memory["idle"] = daemon.memory()
            marks["start"] = time.perf_counter()

        def on_epoch(record) -> None:
            now = time.perf_counter()
            if record.epoch == 0:
                marks["loaded"] = now
            else:
                epoch_seconds.append(now - marks["last"])
            if record.epoch == 1:      # the last load message is surely gone by now
                memory["loaded"] = daemon.memory()
            marks["last"] = now
            print(f"  epoch {record.epoch}: gap {record.gap:.3e} ({now - marks['start']:.1f} s)", flush=True)

        # A small run of the same kind first: the daemon's code (kernels, quantizer) is then loaded,
        # and its RSS before configure is the daemon's own, not the first request's imports.
        train(TrainConfig(algorithms=("halp",), epochs=1, **dict(settings, samples=2000)), connect=daemon.address)
        started = time.perf_counter()
        result = train(cfg, connect=daemon.address, on_start=on_start, on_epoch=on_epoch)
        total = time.perf_counter() - started
        memory["end"] = daemon.memory()
    rc = result.config
    f, c = rc["n_features"], rc["n_outputs"]
    data_bytes = n * f                                   # 8-bit data: one byte an element
    held = memory["loaded"]["rss"] - memory["idle"]["rss"]
    halp = min(epoch_seconds)
    host_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    target("bench_scale", f"{name}: daemon data memory / data size", held / data_bytes, "<= 1.25")
    target("bench_scale", f"{name}: HALP epoch through the daemon / float32 epoch", halp / f32, "<= 10")
    return (f"| {name} | {n} × {f} × {c} | {rc['data_format']} | {marks['loaded'] - marks['start']:.1f} "
            f"| {halp:.2f} | {f32:.3f} | {halp / f32:.1f} | {data_bytes / 2**20:.0f} | {held / 2**20:.0f} "
            f"| {held / data_bytes:.2f} | {memory['end']['peak'] / 2**20:.0f} | {host_peak / 2**20:.0f} "
            f"| {total:.0f} |")


def recentre_cost(n: int = 10**6, classes: int = 10, rounds: int = 5) -> str:
    """The recentre message of a softmax problem with n samples and C classes (n × C anchor
    terms), to a daemon with an fp32 accumulator: as float32 (protocol 1.3) and as float64
    (what a 1.2 host sends), round trip time and bytes, best of ``rounds`` each, alternating."""
    rng = np.random.default_rng(1)
    anchor = rng.dirichlet(np.ones(classes), n)
    grad = rng.standard_normal((2, classes))
    best = {"float32": float("inf"), "float64": float("inf")}
    with tempfile.TemporaryDirectory(prefix="cosim-bench-") as tmp, \
            AcceleratorProcess.start(ipc_address(Path(tmp))) as daemon, \
            AcceleratorClient(daemon.address, timeout=120) as acc:
        acc.hello()
        acc.configure(problem="softmax", n_samples=n, n_features=2, n_outputs=classes, data_format="fixed<2,6>",
                      offset_format="fixed<1,7>", acc_format="fp32", rounding="stochastic", rbits=0, lanes=16,
                      seed=0, l2=0.01, scale=1.0)
        acc.load(rng.uniform(-1, 1, (n, 2)), rng.integers(0, classes, n).astype(np.float64))
        newer = acc._peer_has
        for _ in range(rounds):
            for side in best:
                acc._peer_has = newer if side == "float32" else (lambda version: False)
                best[side] = min(best[side], _timed(lambda: acc.recentre(grad, anchor, 1.0)))
    mb = {"float32": n * classes * 4 / 1e6, "float64": n * classes * 8 / 1e6}
    return "\n".join([f"recentre of {n} × {classes} anchor terms to an fp32 accumulator (best of {rounds}):",
                      "| anchor dtype | MB on the wire | round trip s |", "|---|---:|---:|",
                      *(f"| {k} | {mb[k]:.0f} | {v:.3f} |" for k, v in best.items())])


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


HEADER = ("| problem | n × F × C | data | load s | HALP epoch s | float32 epoch s | ratio (≤ 10) "
          "| data MiB at width | daemon data MiB | ratio (≤ 1.25) | daemon peak MiB | host peak MiB | run s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=sorted(PROBLEMS), nargs="+", default=sorted(PROBLEMS),
                        help="which problems (default: all)")
    parser.add_argument("--samples", type=int, help="override n (for a quick look)")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=f"HALP epochs per problem (default {EPOCHS})")
    parser.add_argument("--row", action="store_true", help=argparse.SUPPRESS)   # one problem, in a child
    args = parser.parse_args()
    if args.row:
        name = args.only[0]
        print(ROW + bench(name, dict(PROBLEMS[name], **({"samples": args.samples} if args.samples else {})),
                          args.epochs), flush=True)
        return
    print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for name in args.only:
        # Each problem in its own process, so that each host peak RSS is that problem's.
        print(f"== {name}: {PROBLEMS[name]}", flush=True)
        argv = [sys.executable, __file__, "--row", "--only", name, "--epochs", str(args.epochs),
                *(["--samples", str(args.samples)] if args.samples else [])]
        out = subprocess.run(argv, stdout=subprocess.PIPE, text=True)
        lines = out.stdout.splitlines()
        print("\n".join(line for line in lines if not line.startswith(ROW)), flush=True)
        rows += [line.removeprefix(ROW) for line in lines if line.startswith(ROW)] or [
            f"| {name} | failed with exit code {out.returncode} |"]
    print(f"\n{HEADER}\n" + "|---" * (HEADER.count("|") - 1) + "|\n" + "\n".join(rows))
    print("\n" + recentre_cost(args.samples or 10**6))


ROW = "row: "

if __name__ == "__main__":
    main()
