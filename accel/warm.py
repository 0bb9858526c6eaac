"""Compile the emulated backend's kernels ahead of their first use.

    python -m accel.warm          # about a minute on 2 cores; `make` runs it after installing

numba compiles a kernel the first time a process calls it with new argument types, and keeps
the machine code on disk (``cache=True``), where later processes load it in milliseconds. Left
to the first run, that compilation is most of the run: a first digits HALP run took 23 s
against 1.3 s for the next. This module sends every request kind through the codec (so the
arrays arrive as read-only message views, as they do in the daemon, and hit the same kernel
signatures) to an in-process daemon, for every accumulator kind the kernels specialise on
(fp32, fp64, any other format), both offset roundings, every problem and both kernels.
"""
from __future__ import annotations

import itertools
import sys
import time

import numpy as np

from accel.daemon import Daemon
from protocol import messages as m
from protocol.codec import decode, encode

# The kernels specialise on the accumulator's kind only: fp32, fp64, and every other format alike.
ACCS = ("fp32", "fp64", "bf16")
DATA = ("fixed<2,6>", "e4m3fn")          # quantize's fixed-point and floating-point fast paths
PROBLEMS = (("linear", 1), ("logistic", 1), ("softmax", 3))


def _via_codec(msg: m.Message) -> m.Message:
    """``msg`` as the daemon receives it: encoded, then decoded over read-only frame views."""
    return decode(encode(msg, 1, "warm"))[1]


def _session(daemon: Daemon, acc: str, data: str, rounding: str, problem: str, c: int) -> None:
    n, f = 8, 3
    rng = np.random.default_rng(0)
    y = rng.integers(0, c if problem == "softmax" else 2, n).astype(np.float64)
    anchor = None if problem == "linear" else np.full((n, c), 1.0 / (c + 1))
    for msg in (m.Hello(client="warm"),
                m.Configure(problem=problem, n_samples=n, n_features=f, n_outputs=c, data_format=data,
                            offset_format="fixed<1,7>", acc_format=acc, rounding=rounding, rbits=0, lanes=4,
                            seed=1, l2=0.01, scale=0.5),
                m.LoadData(start=0, x=rng.uniform(-1, 1, (n, f)), y=y),
                m.Recentre(full_grad=rng.standard_normal((f, c)), anchor=anchor, scale=0.5),
                *(m.RunEpoch(algorithm=a, epoch=0, steps=n // b, step_size=0.1, batch_size=b,
                             order=np.arange(n, dtype=np.uint32)) for a in ("svrg", "sgd") for b in (1, 2)),
                m.Promote(offset_format="fixed<2,10>"),
                m.Fetch()):
        daemon.handle(_via_codec(msg))


def warm(out=sys.stderr) -> float:
    """Run every kernel once (see the module docstring); returns the seconds it took."""
    started = time.perf_counter()
    daemon = Daemon("emulated")
    cases = list(itertools.product(ACCS, DATA, ("nearest_even", "stochastic"), PROBLEMS))
    for k, (acc, data, rounding, (problem, c)) in enumerate(cases, 1):
        _session(daemon, acc, data, rounding, problem, c)
        print(f"\rcompiling the emulated kernels: {k}/{len(cases)} ({time.perf_counter() - started:.0f} s)",
              end="", file=out, flush=True)
    print(file=out)
    return time.perf_counter() - started


if __name__ == "__main__":
    warm()
