"""The compiled layer kernel (fp8 inputs, exact products, chunked (1,6,9) sums) against torch float32.

Usage::

    python bench/bench_layer.py              # about 20 s
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
alternate between the two; per pass (a layer's forward, its backward) the best time of each
counts, and a case's time is the sum over its passes. Targets: ours within 10 × torch
(moonshot 4 ×).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from accel.backends.layer_compiled import matmul
from accel.numerics import quantize
from accel.spec import layer
from targets import target

CASES = {"mlp": [(784, 128), (128, 10)], "fan-in 4096": [(4096, 128)]}
BATCH = 64


def _best_pair(fn, other, rounds: int) -> tuple[float, float]:
    """Best times of ``fn`` and ``other`` over ``rounds`` alternating rounds."""
    fn(), other()                        # compile and warm caches outside the timing
    t_fn = t_other = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        t_fn = min(t_fn, time.perf_counter() - t)
        t = time.perf_counter()
        other()
        t_other = min(t_other, time.perf_counter() - t)
    return t_fn, t_other


def run(rounds: int) -> dict[str, tuple[float, float]]:
    """Per case: (ours, torch) seconds, each the sum over the case's passes of the best time of
    that pass, so that a process switch on the busy machine spoils one pass, not the case."""
    torch.set_num_threads(1)
    f = layer.RECIPES["fp8-ibm"]
    g = np.random.default_rng(0)
    out = {}
    for name, shapes in CASES.items():
        ours = peer = 0.0
        for fan_in, fan_out in shapes:
            X = quantize(np.maximum(g.standard_normal((BATCH, fan_in)), 0.0), "fp8_ibm")   # post-ReLU
            W = quantize(g.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in), "fp8_ibm")
            dY = quantize(g.standard_normal((BATCH, fan_out)) * 2.0 ** -6, "fp8_ibm")
            Xt, Wt, dYt = (torch.tensor(v, dtype=torch.float32) for v in (X, W, dY))
            forward = _best_pair(lambda X=X, W=W: layer.dense_forward(X, W, f, gemm=matmul),
                                 lambda Xt=Xt, Wt=Wt: torch.matmul(Xt, Wt), rounds)
            backward = _best_pair(lambda X=X, W=W, dY=dY: layer.dense_backward(X, W, dY, f, gemm=matmul),
                                  lambda Xt=Xt, Wt=Wt, dYt=dYt: (torch.matmul(dYt, Wt.T), torch.matmul(Xt.T, dYt)),
                                  rounds)
            ours += forward[0] + backward[0]
            peer += forward[1] + backward[1]
        out[name] = ours, peer
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds per case (best counts)")
    args = parser.parse_args()
    results = run(args.rounds)
    print(f"B = {BATCH}, fp8-ibm recipe, best of {args.rounds}; torch {torch.__version__}, one thread\n")
    print("| case | ours (ms) | torch float32 (ms) | ours / torch |")
    print("|---|---:|---:|---:|")
    for name, (ours, peer) in results.items():
        print(f"| {name} | {ours * 1e3:.2f} | {peer * 1e3:.3f} | {ours / peer:.1f} |")
    print()
    for name, (ours, peer) in results.items():
        target("bench_layer", f"{name} forward+backward / torch float32", ours / peer, "<= 10", moonshot="<= 4")


if __name__ == "__main__":
    main()
