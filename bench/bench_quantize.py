"""Throughput of accel.numerics.quantize against its peers and a plain copy, in the same run.

    .venv/bin/python bench/bench_quantize.py            # 10^7 float32 elements
    .venv/bin/python bench/bench_quantize.py --n 1000000 --repeat 9

For each format, in elements/s of 10^7 float32 (standard normal × 10): our nearest-even
``quantize(x, fmt)``, our stochastic rounding including drawing the words from a 64-lane
LaneRNG, the peer's round trip ``x.astype(fmt).astype(float32)`` (ml_dtypes' types; numpy's
own float16 for fp16) and a numpy ``x.copy()``, the memory-bandwidth reference. Every side
returns a fresh array. The sides alternate within each round so that load from other processes
hits all of them; the best of ``--repeat`` rounds counts.

Targets (through ``bench/targets.py``; a missed target is printed as such, the exit code stays
0): bf16 and fp16 >= 1.5x the peer, nearest-even and stochastic; e4m3fn and e5m2 nearest-even
>= 1.0x ml_dtypes; stochastic >= 0.5x our nearest-even for every format.
"""
from __future__ import annotations

import argparse
import time

import ml_dtypes
import numpy as np

from accel.numerics import LaneRNG, quantize
from targets import target

# Format -> (peer's name, its numpy dtype, our/peer target for nearest-even, for stochastic).
PEERS = {"e4m3fn": ("ml_dtypes", ml_dtypes.float8_e4m3fn, ">= 1.0", None),
         "e5m2": ("ml_dtypes", ml_dtypes.float8_e5m2, ">= 1.0", None),
         "bf16": ("ml_dtypes", ml_dtypes.bfloat16, ">= 1.5", ">= 1.5"),
         "fp16": ("numpy", np.float16, ">= 1.5", ">= 1.5")}
# HALP's offsets and an MX block format: no peer implements them; the input scale keeps most
# elements in range (fixed<1,7> ends at 1).
NO_PEER = {"fixed<1,7>": 1 / 64, "mxfp8": 1.0}


def best_times(sides: dict, repeat: int) -> dict[str, float]:
    """Fastest wall time of each side over ``repeat`` rounds, the sides alternating in a round."""
    best = dict.fromkeys(sides, float("inf"))
    for _ in range(repeat):
        for name, fn in sides.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def bench_format(fmt: str, x: np.ndarray, repeat: int) -> None:
    """Time one format's sides, print its table row and report its targets."""
    peer_name, peer, rne_target, sr_target = PEERS.get(fmt, ("-", None, None, None))
    rng = LaneRNG(seed=1, epoch=0, lanes=64)
    sides = {"copy": x.copy, "rne": lambda: quantize(x, fmt), "sr": lambda: quantize(x, fmt, "stochastic", rng=rng)}
    if peer is not None:
        sides["peer"] = lambda: x.astype(peer).astype(np.float32)
    best = best_times(sides, repeat)
    rate = {k: x.size / t / 1e6 for k, t in best.items()}
    vs_peer = {k: best["peer"] / best[k] for k in ("rne", "sr")} if peer is not None else {}
    cells = [f"{rate['copy']:6.0f}", f"{peer_name:>9}", f"{rate['peer']:6.0f}" if peer is not None else f"{'-':>6}",
             f"{rate['rne']:6.0f}", f"{rate['sr']:6.0f}",
             *(f"{vs_peer[k]:6.2f}" if vs_peer else f"{'-':>6}" for k in ("rne", "sr")),
             f"{best['rne'] / best['sr']:6.2f}", f"{best['copy'] / best['rne']:8.2f}"]
    print(f"{fmt:10} " + " ".join(cells), flush=True)
    for key, mode, bound in (("rne", "nearest-even", rne_target), ("sr", "stochastic", sr_target)):
        if bound:
            target("bench_quantize", f"{fmt} {mode} / {peer_name}", vs_peer[key], bound)
    target("bench_quantize", f"{fmt} stochastic / nearest-even", best["rne"] / best["sr"], ">= 0.5")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10**7)
    ap.add_argument("--repeat", type=int, default=5, help="rounds; the best of them counts")
    args = ap.parse_args()
    x = (np.random.default_rng(0).standard_normal(args.n) * 10).astype(np.float32)
    inputs = {**dict.fromkeys(PEERS, x), **{f: (x * np.float32(s)) for f, s in NO_PEER.items()}}
    for fmt, xs in inputs.items():  # load the compiled kernels before timing
        quantize(xs[:1000], fmt)
        quantize(xs[:1000], fmt, "stochastic", rng=LaneRNG(0, 0, 64))
    print(f"n = {args.n:.0e} float32, best of {args.repeat} rounds; numpy {np.__version__}, "
          f"ml_dtypes {ml_dtypes.__version__}")
    print(f"{'format':10} {'copy':>6} {'peer':>9} {'peer':>6} {'RNE':>6} {'SR':>6} {'RNE/pr':>6} {'SR/pr':>6} "
          f"{'SR/RNE':>6} {'RNE/copy':>8}  (M elem/s; ratios of throughput)")
    for fmt, xs in inputs.items():
        bench_format(fmt, xs, args.repeat)


if __name__ == "__main__":
    main()
