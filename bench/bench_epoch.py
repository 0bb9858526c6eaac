"""One inner-loop epoch: the emulated accelerator's HALP kernel against a plain float64 SVRG epoch.

Usage::

    python bench/bench_epoch.py               # digits / softmax, T = n = 1797, batch 1
    python bench/bench_epoch.py --rounds 5

Both sides run the same problem, step size, sample order and anchor: ours is
``EmulatedBackend.run_epoch`` with the default formats (data fixed<2,6>, offset fixed<1,7>,
fp32 accumulator, stochastic rounding from 16 LaneRNG lanes), called directly, without
sockets; the peer is ``host.optimizers.svrg_epoch``, the same recursion in plain float64
numpy (one matrix-vector product per step, nothing rounded). The ratio is what exact
low-precision emulation costs over the float loop it replaces. Best of ``--rounds``.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from accel.backends.emulated import EmulatedBackend
from accel.spec import KernelConfig
from host.datasets import load_dataset
from host.models import Objective
from host.optimizers import epoch_order, svrg_epoch
from protocol.formats import parse_format


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed repetitions; the best counts")
    args = parser.parse_args()

    ds = load_dataset("digits")
    obj = Objective("softmax", ds.x, ds.y, 1e-2, ds.outputs_for("softmax"))
    n, f, c = obj.n_samples, obj.n_features, obj.n_outputs
    alpha = 0.5 / obj.smoothness()
    order = epoch_order(0, 1, n, n)
    anchor = obj.zeros()
    g = obj.grad(anchor)

    backend = EmulatedBackend()
    backend.configure(KernelConfig(problem="softmax", n_samples=n, n_features=f, n_outputs=c,
                                   data=parse_format("fixed<2,6>"), offset=parse_format("fixed<1,7>"),
                                   acc=parse_format("fp32"), rounding="stochastic", rbits=0, lanes=16, seed=0,
                                   l2=1e-2, scale=1.0))
    backend.load_data(0, obj.x, obj.y.astype(np.float64))
    scale = float(np.linalg.norm(g)) / (0.1 * (1 - 2 ** -7))

    def ours() -> None:
        backend.recentre(g, obj.anchor_terms(anchor), scale)
        backend.run_epoch("svrg", 1, n, alpha, 1, order)

    def peer() -> None:
        svrg_epoch(obj, anchor, order, alpha, 1)

    best = {"ours": float("inf"), "peer": float("inf")}
    for _ in range(args.rounds):
        for name, fn in (("ours", ours), ("peer", peer)):
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    print(f"digits / softmax, {n} steps of batch 1, {f} × {c} weights, best of {args.rounds}\n")
    print("| side | seconds per epoch | steps/s |")
    print("|---|---:|---:|")
    print(f"| ours: emulated HALP kernel (fixed<2,6> × fixed<1,7>, fp32, stochastic) "
          f"| {best['ours']:.3f} | {n / best['ours']:,.0f} |")
    print(f"| peer: float64 SVRG epoch in numpy | {best['peer']:.3f} | {n / best['peer']:,.0f} |")
    print(f"\nours / peer: {best['ours'] / best['peer']:.2f}× the time")


if __name__ == "__main__":
    main()
