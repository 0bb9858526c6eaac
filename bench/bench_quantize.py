"""Throughput of accel.numerics.quantize against ml_dtypes and a plain copy, in the same run.

    .venv/bin/python bench/bench_quantize.py            # 10^7 float32 elements
    .venv/bin/python bench/bench_quantize.py --n 1000000

For each format: elements/s of a numpy copy (the memory-bandwidth limit), ml_dtypes' round
trip ``x.astype(fmt).astype(float32)``, our nearest-even, and our stochastic rounding including
drawing the words from a LaneRNG. Prints ratios; targets: nearest-even >= 1.0x ml_dtypes,
stochastic >= 0.5x our nearest-even.
"""
from __future__ import annotations

import argparse
import time

import ml_dtypes
import numpy as np

from accel.numerics import LaneRNG, quantize

FORMATS = {"e4m3fn": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2, "bf16": ml_dtypes.bfloat16}


def best_of(fn, repeat: int) -> float:
    """Fastest wall time of ``repeat`` calls (the least disturbed by other processes)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10**7)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    x = (np.random.default_rng(0).standard_normal(args.n) * 10).astype(np.float32)
    # e4m3fn ranges to 448: scale so that a few elements saturate, like real tensors.
    quantize(x[:1000], "e4m3fn")  # load compiled kernels before timing
    quantize(x[:1000], "e4m3fn", "stochastic", rng=LaneRNG(0, 0, 64))
    copy_t = best_of(lambda: x.copy(), args.repeat)
    print(f"n = {args.n:.0e} float32; copy {args.n / copy_t / 1e6:8.1f} M elem/s")
    print(f"{'format':8} {'ml_dtypes':>10} {'ours RNE':>10} {'ours SR':>10} {'RNE/ml':>7} {'SR/RNE':>7} {'RNE/copy':>8}  (M elem/s)")
    for name, peer in FORMATS.items():
        ml_t = best_of(lambda: x.astype(peer).astype(np.float32), args.repeat)
        ne_t = best_of(lambda: quantize(x, name), args.repeat)
        rng = LaneRNG(seed=1, epoch=0, lanes=64)
        sr_t = best_of(lambda: quantize(x, name, "stochastic", rng=rng), args.repeat)
        rate = lambda t: args.n / t / 1e6
        print(f"{name:8} {rate(ml_t):10.1f} {rate(ne_t):10.1f} {rate(sr_t):10.1f} "
              f"{ml_t / ne_t:7.2f} {ne_t / sr_t:7.2f} {copy_t / ne_t:8.2f}")
    # HALP's offsets: no peer implements fixed point, so only the copy limit is a reference.
    for name in ("fixed<1,7>", "mxfp8"):
        xs = x / 64 if name.startswith("fixed") else x
        ne_t = best_of(lambda: quantize(xs, name), args.repeat)
        rng = LaneRNG(seed=1, epoch=0, lanes=64)
        sr_t = best_of(lambda: quantize(xs, name, "stochastic", rng=rng), args.repeat)
        print(f"{name:10} {'-':>8} {args.n / ne_t / 1e6:10.1f} {args.n / sr_t / 1e6:10.1f} "
              f"{'-':>7} {ne_t / sr_t:7.2f} {copy_t / ne_t:8.2f}")


if __name__ == "__main__":
    main()
