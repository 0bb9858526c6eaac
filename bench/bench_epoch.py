"""One inner-loop epoch: the emulated accelerator's exact HALP kernel against a compiled float32 SVRG epoch.

Usage::

    python bench/bench_epoch.py               # digits and a 784 × 10 synthetic softmax problem
    python bench/bench_epoch.py --rounds 15

Each problem is run by three sides on the same step size, sample order (T = n steps of batch
1) and anchor (w̃ = 0, its softmax terms and full gradient computed once, outside the timer):

- **ours**: ``EmulatedBackend().run_epoch("svrg", ...)`` after a HALP recentre, called directly
  without sockets, with the default formats (data fixed<2,6>, offset fixed<1,7>, fp32
  accumulator with every elementary operation rounded, stochastic offset rounding from 16
  LaneRNG lanes): kernel spec v2 bit for bit, in the compiled kernels of
  ``accel.backends.compiled``;
- **float32**: the same SVRG recursion in plain float32, compiled with numba in the same loop
  structure (dot, softmax with the float32 ``exp``, the gradient difference and the update fused
  in one pass over the weights): the machine's limit for this loop, the target's reference;
- **float64 numpy**: ``host.optimizers.svrg_epoch``, one small numpy call per operation and step.

Sides alternate within each round so that load from other processes hits all of them; the best
of ``--rounds`` counts. Also printed: the first epoch in this process (numba loading the cached
kernels, or compiling them on a cold cache). Targets (the issue): ours ≤ 3× float32 (2× moonshot).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
from numba import njit

from accel.backends.emulated import EmulatedBackend
from accel.spec import KernelConfig
from host.datasets import load_dataset
from host.models import Objective
from host.optimizers import epoch_order, svrg_epoch
from protocol.formats import parse_format


@njit(cache=True)
def float32_svrg_epoch(x, anchor_terms, w_anchor, g_tilde, order, alpha, lam, steps):
    """Softmax SVRG from w = w̃, batch 1: w ← w − α(x_iᵀ(softmax(x_i·w) − p̃_i) + λ(w − w̃) + g̃)."""
    w = w_anchor.copy()
    n_f, n_c = w.shape
    z = np.empty(n_c, dtype=np.float32)
    for step in range(steps):
        i = order[step]
        z[:] = 0
        for f in range(n_f):
            xv = x[i, f]
            for c in range(n_c):
                z[c] += xv * w[f, c]
        m = z.max()
        total = np.float32(0)
        for c in range(n_c):
            z[c] = np.exp(z[c] - m)
            total += z[c]
        for c in range(n_c):
            z[c] = z[c] / total - anchor_terms[i, c]
        for f in range(n_f):
            xv = x[i, f]
            for c in range(n_c):
                u = xv * z[c] + lam * (w[f, c] - w_anchor[f, c]) + g_tilde[f, c]
                w[f, c] -= alpha * u
    return w


def synthetic_softmax(samples: int, features: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-like features k/16 in [0, 1] (exact in fixed<2,6>) and labels of a random linear teacher."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 17, (samples, features)) / 16.0
    scores = x @ rng.standard_normal((features, classes)) + rng.gumbel(size=(samples, classes))
    return x, scores.argmax(axis=1)


def bench(name: str, x: np.ndarray, y: np.ndarray, classes: int, rounds: int) -> None:
    """Time the three sides on one softmax problem and print its table row."""
    obj = Objective("softmax", x, y, 1e-2, classes)
    n, f, c = obj.n_samples, obj.n_features, obj.n_outputs
    alpha = 0.5 / obj.smoothness()
    order = epoch_order(0, 1, n, n)
    anchor = obj.zeros()
    g = obj.grad(anchor)
    terms = obj.anchor_terms(anchor)

    backend = EmulatedBackend()
    backend.configure(KernelConfig(problem="softmax", n_samples=n, n_features=f, n_outputs=c,
                                   data=parse_format("fixed<2,6>"), offset=parse_format("fixed<1,7>"),
                                   acc=parse_format("fp32"), rounding="stochastic", rbits=0, lanes=16, seed=0,
                                   l2=1e-2, scale=1.0))
    backend.load_data(0, obj.x, obj.y.astype(np.float64))
    scale = float(np.linalg.norm(g)) / (0.1 * (1 - 2 ** -7))
    args32 = [np.ascontiguousarray(a, dtype=np.float32) for a in (obj.x, terms, anchor, g)]
    order64 = order.astype(np.int64)

    def ours() -> None:
        backend.run_epoch("svrg", 1, n, alpha, 1, order)

    def float32() -> None:
        float32_svrg_epoch(*args32, order64, np.float32(alpha), np.float32(obj.l2), n)

    def float64() -> None:
        svrg_epoch(obj, anchor, order, alpha, 1)

    first = {}
    best = dict.fromkeys(("ours", "float32", "float64"), float("inf"))
    for r in range(rounds + 1):
        for side, fn in (("ours", ours), ("float32", float32), ("float64", float64)):
            backend.recentre(g, terms, scale)     # HALP: q = 0 on a fresh grid, outside the timer
            t0 = time.perf_counter()
            fn()
            seconds = time.perf_counter() - t0
            if r == 0:
                first[side] = seconds
            else:
                best[side] = min(best[side], seconds)
    print(f"| {name} ({n} steps, {f} × {c}) | {best['ours'] * 1e3:.1f} | {best['float32'] * 1e3:.2f} "
          f"| {best['float64'] * 1e3:.0f} | {best['ours'] / best['float32']:.2f} "
          f"| {best['float64'] / best['ours']:.1f} | {first['ours'] * 1e3:.0f} / {first['float32'] * 1e3:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed repetitions; the best counts")
    args = parser.parse_args()
    print(f"best of {args.rounds}, load average {os.getloadavg()[0]:.1f}; times in ms per epoch\n")
    print("| problem | ours: exact HALP (fp32 acc) | float32 compiled | float64 numpy | ours / float32 "
          "| float64 / ours | first epoch ours / float32 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    ds = load_dataset("digits")
    bench("digits", ds.x, ds.y, ds.outputs_for("softmax"), args.rounds)
    x, y = synthetic_softmax(2000, 784, 10)
    bench("synthetic", x, y, 10, args.rounds)


if __name__ == "__main__":
    main()
