"""The rtl backend on its simulated board against the simulator's limit: a bare counter design.

Usage::

    python bench/bench_rtl.py                 # digits / softmax HALP, 300 inner steps
    python bench/bench_rtl.py --steps 1797    # a whole epoch (about two minutes)

Ours: the RTL core under Verilator behind the cocotb board bench, driven over Etherbone by the
rtl backend's driver (the default run's problem: digits, softmax, HALP kernel, data fixed<2,6>,
offset fixed<1,7>, fp32, stochastic rounding, batch 1). The peer: ``bench/counter_core.sv``, a
bare counter with the core's bus, in the same bench, bridge and Etherbone, started and polled the
same way for the same number of cycles. Both boards run one after the other (two cores: the
simulator and the driver need one each).

Printed: the wall time split into board start (the Verilator build, cached after the first),
data load, epochs, and within the epoch the driver's bus and Python time outside the run
(writing the order and registers, reading results back); simulated cycles per second and inner
steps per second of both designs, and their ratio. Targets (through ``bench/targets.py``):
ours ≥ 0.5 × the peer's cycles per second; bus and Python outside the run ≤ 10% of the epoch.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from accel.backends.rtl import RtlBackend
from accel.etherbone import EtherboneBus
from accel.rtl.regmap import REG
from accel.spec import KernelConfig
from cosim.launch import BoardProcess
from host.datasets import load_dataset
from host.models import Objective
from host.optimizers import epoch_order
from protocol.formats import parse_format
from targets import target

COUNTER = Path(__file__).parent / "counter_core.sv"


def run_core(steps: int, log: Path) -> dict:
    t0 = time.perf_counter()
    board = BoardProcess.start(log=log)
    started = time.perf_counter() - t0
    try:
        ds = load_dataset("digits")
        obj = Objective("softmax", ds.x, ds.y, 1e-2, ds.outputs_for("softmax"))
        n, f, c = obj.n_samples, obj.n_features, obj.n_outputs
        anchor = obj.zeros()
        g = obj.grad(anchor)
        b = RtlBackend(fpga=board.address)
        t0 = time.perf_counter()
        b.configure(KernelConfig(problem="softmax", n_samples=n, n_features=f, n_outputs=c,
                                 data=parse_format("fixed<2,6>"), offset=parse_format("fixed<1,7>"),
                                 acc=parse_format("fp32"), rounding="stochastic", rbits=0, lanes=16, seed=0,
                                 l2=1e-2, scale=1.0))
        b.load_data(0, obj.x, obj.y.astype(np.float64))
        b.recentre(g, obj.anchor_terms(anchor), float(np.linalg.norm(g)) / (0.1 * (1 - 2 ** -7)))
        load = time.perf_counter() - t0
        t0 = time.perf_counter()
        b.run_epoch("svrg", 1, steps, 0.5 / obj.smoothness(), 1, epoch_order(0, 1, n, n)[:steps])
        epoch = time.perf_counter() - t0
        return dict(start=started, load=load, epoch=epoch, cycles=b.last_cycles, **b.last_timing,
                    shape=(n, f, c))
    finally:
        board.stop()


def run_counter(cycles: int, log: Path) -> dict:
    board = BoardProcess.start(log=log, core=[COUNTER])
    try:
        bus = EtherboneBus(board.address)
        bus.write(REG["STEPS"], cycles)
        t0 = time.perf_counter()
        bus.write(REG["CONTROL"], 1)
        poll = 0.0002
        while bus.read(REG["STATUS"]) & 1:            # the driver's polling, as in RtlBackend._wait
            time.sleep(poll)
            poll = min(2 * poll, 0.05)
        run = time.perf_counter() - t0
        return dict(run=run, cycles=bus.read(REG["CYCLES_LO"]) | bus.read(REG["CYCLES_HI"]) << 32)
    finally:
        board.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="inner steps of the HALP epoch (digits has 1797)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-rtl-") as tmp:
        core = run_core(args.steps, Path(tmp) / "core.log")
        counter = run_counter(core["cycles"], Path(tmp) / "counter.log")
    n, f, c = core["shape"]
    overhead = core["setup"] + core["readback"]
    core_rate, counter_rate = core["cycles"] / core["run"], counter["cycles"] / counter["run"]
    print(f"digits / softmax HALP kernel on the simulated core: {args.steps} steps of batch 1, "
          f"{f} x {c} weights, {core['cycles']:,} cycles ({core['cycles'] / args.steps:,.0f} per step)\n")
    print("| wall time | seconds |")
    print("|---|---:|")
    print(f"| board start (build cached or not, simulator launch) | {core['start']:.2f} |")
    print(f"| data load (configure, {n} x {f} data, recentre) | {core['load']:.2f} |")
    print(f"| epoch | {core['epoch']:.2f} |")
    print(f"| of which the run (start to done seen) | {core['run']:.2f} |")
    print(f"| of which bus and Python outside the run | {overhead:.3f} ({overhead / core['epoch']:.1%}) |")
    print("\n| design | cycles | seconds | cycles/s | inner steps/s |")
    print("|---|---:|---:|---:|---:|")
    print(f"| ours: cosim_core | {core['cycles']:,} | {core['run']:.2f} | {core_rate:,.0f} | "
          f"{args.steps / core['run']:.1f} |")
    print(f"| peer: bare counter, same board | {counter['cycles']:,} | {counter['run']:.2f} | "
          f"{counter_rate:,.0f} | |")
    print()
    target("bench_rtl", "ours / peer, cycles/s", core_rate / counter_rate, ">= 0.5")
    target("bench_rtl", "bus and Python outside the run / epoch time", overhead / core["epoch"], "<= 0.1")


if __name__ == "__main__":
    main()
