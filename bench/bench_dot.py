"""Chunked low-precision dot products against numpy's float32 dot, measured in the same run.

Usage::

    python bench/bench_dot.py              # prints a markdown table
    python bench/bench_dot.py --rounds 5

Cases (inputs are already values of the data format, held in float64 for ours and float32
for numpy, so neither side pays for quantizing them):

- one dot of 10^6 elements and a batch of 1024 dots of 1024 elements, each with
  fp16 products into an fp32 accumulator, and e4m3fn products into an fp16_ibm (1,6,9)
  accumulator (Wang et al. 2018), chunk 64, nearest-even;
- one 4096-element dot, fp16 products and accumulator, chunk 64 (latency);
- numpy: ``np.dot`` on the float32 vectors, and ``np.einsum("ij,ij->i")`` for the batch.

Each case runs ``--rounds`` times, ours and numpy alternating; the best time of each counts.
No target: numpy's float32 dot rounds nothing exactly, so it is a scale, not a goal, and
docs/performance.md sets none; ``make bench`` lists this benchmark as reporting no targets.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from accel.numerics import dot, quantize

CASES = [  # (label, batch, length, product, acc)
    ("1 × 10^6, fp16 → fp32", 1, 10**6, "fp16", "fp32"),
    ("1 × 10^6, e4m3fn → fp16_ibm", 1, 10**6, "e4m3fn", "fp16_ibm"),
    ("1024 × 1024, fp16 → fp32", 1024, 1024, "fp16", "fp32"),
    ("1024 × 1024, e4m3fn → fp16_ibm", 1024, 1024, "e4m3fn", "fp16_ibm"),
    ("1 × 4096, fp16 → fp16", 1, 4096, "fp16", "fp16"),
]
CHUNK = 64


def _best(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def run(rounds: int) -> list[tuple[str, float, float]]:
    g = np.random.default_rng(0)
    rows = []
    for label, batch, n, product, acc in CASES:
        data_fmt = product  # the data format: products of its values round into `product`
        a = quantize(g.standard_normal((batch, n)) * 0.5, data_fmt)
        b = quantize(g.standard_normal((batch, n)) * 0.5, data_fmt)
        a32, b32 = a.astype(np.float32), b.astype(np.float32)
        ours = lambda: dot(a, b, product=product, acc=acc, chunk=CHUNK)  # noqa: E731
        ref = (lambda: np.dot(a32[0], b32[0])) if batch == 1 else (lambda: np.einsum("ij,ij->i", a32, b32))
        ours()  # compile and warm caches outside the timing
        t_ours = t_ref = float("inf")
        for _ in range(rounds):
            t_ours = min(t_ours, _best(ours, 1))
            t_ref = min(t_ref, _best(ref, 1))
        rows.append((label, batch * n / t_ours, batch * n / t_ref, t_ours))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed repetitions per case (best counts)")
    args = parser.parse_args()
    rows = run(args.rounds)
    print(f"chunk {CHUNK}, nearest-even, best of {args.rounds}\n")
    print("| case | ours (elem/s) | time | numpy float32 (elem/s) | numpy / ours |")
    print("|---|---:|---:|---:|---:|")
    for label, ours, ref, t in rows:
        print(f"| {label} | {ours:.3g} | {t * 1e3:.1f} ms | {ref:.3g} | {ref / ours:.0f} |")


if __name__ == "__main__":
    main()
