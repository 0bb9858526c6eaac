"""Exhaustive accuracy of accel.spec.nonlinear's exp, expm1 and sigmoid over every input.

    .venv/bin/python bench/measure_nonlinear.py                    # fp32 (2^32 inputs), bf16, fp16, fp16_ibm
    .venv/bin/python bench/measure_nonlinear.py --formats bf16 fp16
    .venv/bin/python bench/measure_nonlinear.py --formats fp32 --jobs 2 --chunk-bits 22

Every bit pattern of the format that is not a NaN is evaluated (fp32 in chunks of 2^chunk-bits
patterns, spread over --jobs processes; about 15 minutes on two cores) and compared with
numpy's float64 exp/expm1 (libm, accurate far beyond a 24-bit ulp). The error is in ulps of
the format at the true value, the ulp of a subnormal being the smallest subnormal; a result
equal to the true value rounded (overflow to inf or saturation included) counts as 0. Prints,
per function, the largest error, the inputs reaching the five largest (bits and value), and
how many results are more than 1 ulp (and more than 1/2 ulp: not correctly rounded) away.
"""
from __future__ import annotations

import argparse
import heapq
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from accel.numerics import decode
from accel.spec import nonlinear
from accel.spec.accuracy import reference, ulp_errors
from accel.spec.arith import AccArith
from protocol.formats import FloatFormat, parse_format

FUNCS = ("exp", "expm1", "sigmoid")
TOP = 5


def inputs(fmt: FloatFormat, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """The non-NaN values of the bit patterns start … stop − 1, with their patterns."""
    bits = np.arange(start, stop, dtype=np.uint64).astype(np.uint32)
    if fmt.bits == 32:
        x = bits.view(np.float32).astype(np.float64)
    else:
        x = decode(bits, fmt).astype(np.float64)
    keep = ~np.isnan(x)
    return x[keep], bits[keep]


def measure(fmt_name: str, start: int, stop: int) -> dict:
    """Per function: (top errors as (err, bits, value) heap, count > 1 ulp, count > 1/2 ulp)."""
    fmt = parse_format(fmt_name)
    A = AccArith(fmt)
    x, bits = inputs(fmt, start, stop)
    out = {}
    for func in FUNCS:
        err = ulp_errors(fmt, getattr(nonlinear, func)(A, x), reference(func, x))
        worst = np.argsort(err)[-TOP:]
        out[func] = ([(float(err[i]), int(bits[i]), float(x[i])) for i in worst],
                     int((err > 1).sum()), int((err > 0.5).sum()))
    return out


def merge(total: dict, part: dict) -> None:
    for func, (top, over1, over_half) in part.items():
        t, a, b = total.get(func, ([], 0, 0))
        total[func] = (heapq.nlargest(TOP, t + top), a + over1, b + over_half)


def run(fmt_name: str, chunk_bits: int, jobs: int) -> None:
    fmt = parse_format(fmt_name)
    n = 1 << fmt.bits
    step = min(n, 1 << chunk_bits)
    chunks = [(fmt_name, s, min(s + step, n)) for s in range(0, n, step)]
    total: dict = {}
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for i, part in enumerate(pool.map(measure, *zip(*chunks)), 1):
            merge(total, part)
            if len(chunks) > 1 and (i % 16 == 0 or i == len(chunks)):
                print(f"  {fmt_name}: {i}/{len(chunks)} chunks, {time.perf_counter() - t0:.0f} s",
                      file=sys.stderr, flush=True)
    digits = (fmt.bits + 3) // 4
    print(f"== {fmt_name}: all {n} bit patterns but NaNs ({time.perf_counter() - t0:.0f} s)")
    for func in FUNCS:
        top, over1, over_half = total[func]
        print(f"{func:8} max {top[0][0]:.4f} ulp; results > 1 ulp: {over1}, > 1/2 ulp: {over_half}")
        for err, b, v in top:
            print(f"           {err:.4f} ulp at 0x{b:0{digits}x} = {v!r}")


def speed(n: int = 1 << 20, rounds: int = 5) -> None:
    """fp32 exp on n inputs: ours (the spec's operation sequence in numpy) against numpy's own
    float32 exp (libm, vectorised: the machine's fast path), best of ``rounds``."""
    A = AccArith(parse_format("fp32"))
    x = np.random.default_rng(0).uniform(-80, 80, n).astype(np.float32)
    x64 = x.astype(np.float64)
    best = {}
    for name, fn in (("ours", lambda: nonlinear.exp(A, x64)), ("numpy float32 exp", lambda: np.exp(x))):
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        best[name] = min(times)
    print(f"== speed, fp32 exp on {n} inputs (best of {rounds})")
    for name, t in best.items():
        print(f"{name:18} {t * 1e3:8.1f} ms  {n / t / 1e6:8.1f} M/s")
    print(f"ours / numpy: {best['ours'] / best['numpy float32 exp']:.1f}x the time")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--formats", nargs="+", default=["fp32", "bf16", "fp16", "fp16_ibm"])
    ap.add_argument("--chunk-bits", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--speed-only", action="store_true", help="only time fp32 exp against numpy's")
    args = ap.parse_args()
    for name in [] if args.speed_only else args.formats:
        run(name, args.chunk_bits, args.jobs)
    speed()


if __name__ == "__main__":
    main()
