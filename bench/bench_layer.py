"""The compiled layer kernel (fp8 inputs, exact products, chunked (1,6,9) sums) against torch float32.

Usage::

    python bench/bench_layer.py              # about 5 s
    python bench/bench_layer.py --rounds 20

Cases, each a forward and a backward pass (Y, then δX and ΔW) of dense layers:

- ``mlp``: B = 64 through 784 × 128 and 128 × 10 (an MNIST-sized MLP's two layers);
- ``fan-in 4096``: B = 64 through 4096 × 128.

Ours: ``accel.spec.layer.dense_forward`` / ``dense_backward`` with the ``fp8-ibm`` recipe
(Wang et al. 2018: (1,5,2) operands, (1,6,9) accumulation in chunks of 64) and the compiled
product ``accel.backends.layer_compiled.matmul``: input checks, every add rounded once,
outputs rounded into their formats. Peer: torch ``matmul`` in float32 on the same values
(X @ W, δY @ Wᵀ, Xᵀ @ δY), in the same process, on one thread as ours runs (on a shared
machine torch's second thread mostly waits for a core: 100× slower runs under load). Rounds
alternate between them; per pass (a layer's forward, its backward) the best time of each
counts, and a case's time is the sum over its passes. Targets: ours within 10 × torch
(moonshot 4 ×). A second column times ours with ``matmul_swamped``, the product a network's
training step runs (it also counts the swamped adds); no target.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from accel.backends.layer_compiled import matmul, matmul_swamped
from accel.numerics import quantize
from accel.spec import layer
from targets import target

CASES = {"mlp": [(784, 128), (128, 10)], "fan-in 4096": [(4096, 128)]}
BATCH = 64


def _counted(a, b, acc, chunk, into=None):
    """The networks' product: :func:`matmul_swamped`'s result (its count dropped here)."""
    return matmul_swamped(a, b, acc, chunk, into)[0]


def _best(fns, rounds: int) -> list[float]:
    """Best time of each of ``fns`` over ``rounds`` rounds that run them in turn."""
    for fn in fns:                       # compile and warm caches outside the timing
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t)
    return best


def run(rounds: int) -> dict[str, tuple[float, float, float]]:
    """Per case: (ours, ours counting swamped adds, torch) seconds, each the sum over the
    case's passes of the best time of that pass, so that a process switch on the busy machine
    spoils one pass, not the case."""
    torch.set_num_threads(1)
    f = layer.RECIPES["fp8-ibm"]
    g = np.random.default_rng(0)
    out = {}
    for name, shapes in CASES.items():
        times = np.zeros(3)
        for fan_in, fan_out in shapes:
            X = quantize(np.maximum(g.standard_normal((BATCH, fan_in)), 0.0), "fp8_ibm")   # post-ReLU
            W = quantize(g.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in), "fp8_ibm")
            dY = quantize(g.standard_normal((BATCH, fan_out)) * 2.0 ** -6, "fp8_ibm")
            Xt, Wt, dYt = (torch.tensor(v, dtype=torch.float32) for v in (X, W, dY))
            times += _best([lambda X=X, W=W: layer.dense_forward(X, W, f, gemm=matmul),
                            lambda X=X, W=W: layer.dense_forward(X, W, f, gemm=_counted),
                            lambda Xt=Xt, Wt=Wt: torch.matmul(Xt, Wt)], rounds)
            times += _best([lambda X=X, W=W, dY=dY: layer.dense_backward(X, W, dY, f, gemm=matmul),
                            lambda X=X, W=W, dY=dY: layer.dense_backward(X, W, dY, f, gemm=_counted),
                            lambda Xt=Xt, Wt=Wt, dYt=dYt: (torch.matmul(dYt, Wt.T), torch.matmul(Xt.T, dYt))],
                           rounds)
        out[name] = tuple(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds per case (best counts)")
    args = parser.parse_args()
    results = run(args.rounds)
    print(f"B = {BATCH}, fp8-ibm recipe, best of {args.rounds}; torch {torch.__version__}, one thread\n")
    print("| case | ours (ms) | counted (ms) | torch float32 (ms) | ours / torch | counted / torch |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (ours, counted, peer) in results.items():
        print(f"| {name} | {ours * 1e3:.2f} | {counted * 1e3:.2f} | {peer * 1e3:.3f} | {ours / peer:.1f} | "
              f"{counted / peer:.1f} |")
    print()
    for name, (ours, _, peer) in results.items():
        target("bench_layer", f"{name} forward+backward / torch float32", ours / peer, "<= 10", moonshot="<= 4")


if __name__ == "__main__":
    main()
