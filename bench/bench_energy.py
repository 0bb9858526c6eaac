"""Energy accounting of a long trace against merely decoding its records.

Usage::

    python bench/bench_energy.py                      # 10^6 records, best of 3
    python bench/bench_energy.py --records 200000 --rounds 2

A synthetic trace of ``--records`` records is written with ``TraceWriter``: the header of the
default run (digits / softmax shapes and formats), then HALP epochs shaped like a real run's —
recentre, its ack with operation counts, run_epoch, the epoch report with ops and memory,
fetch, state, and the epoch record with ops and host_ops: seven records an epoch. Frames are
small (64 B): pricing a message does not depend on its size, and big frames would only time
the disk.

- ours: ``account(TraceReader(path), load_model(None), "pcie3x8")``, all that ``cosim energy``
  computes before it prints;
- limit: the same records decoded by plain ``msgpack.Unpacker`` from one in-memory buffer (no
  file, no framing, no checks), what any Python reader of these records pays at least;
- reader: ``TraceReader`` iterating the file and doing nothing with the records.

Target: ours under 10 s for 10^6 records (reported through ``bench/targets.py``; scaled to
10^6 records when ``--records`` differs). Best of ``--rounds``, the sides alternating.
"""
from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import msgpack

from cosim.energy import account, load_model
from cosim.trace import TraceReader, TraceWriter
from protocol.channel import TapEvent as Event
from targets import target

N, F, C = 1797, 65, 10
CONFIG = {"dataset": "digits", "model": "softmax", "n_samples": N, "n_features": F, "n_outputs": C,
          "data_format": "fixed<2,6>", "offset_format": "fixed<1,7>", "acc_format": "fp32"}
# One epoch of the default run (digits, T = 100), as its records carry them.
EPOCH_OPS = {"add fixed<2,7>": 65000, "mul fixed<2,6>*fixed<2,7>": 65000, "add fixed<10,13>": 64000,
             "round fp32 nearest_even": 1002, "mul fp32": 341000, "rint fp32": 1000, "add fp32": 145000,
             "cmp fp32": 3100, "ldexp fp32": 2000, "div fp32": 1001, "add fixed<4,7>": 65000,
             "round fixed<1,7> stochastic": 65000, "rng bits": 2080000}
MEMORY = {"data read": 13000, "offset read": 195000, "offset write": 65000, "gradient read": 260000,
          "anchor read": 4000}
HOST_OPS = {"mul fp64": 2340000, "add fp64": 2390000, "cmp fp64": 32346, "exp fp64": 35940,
            "div fp64": 18620, "log fp64": 1797, "sqrt fp64": 2}
FRAME = b"\x00" * 64



def write_trace(path: Path, records: int) -> int:
    """The synthetic trace; returns the number of records written (header included)."""
    written = 0
    with TraceWriter(path, config=CONFIG, seed=0) as w:
        seq = 0

        def msg(direction: str, mtype: str, body: dict, tensors: list) -> None:
            nonlocal seq, written
            seq += direction == "h2a"
            header = {"v": [1, 2], "type": mtype, "seq": seq, "session": "bench", "body": body,
                      "tensors": tensors}
            w.message(Event(float(written), direction, header, [FRAME] * len(tensors)))
            written += 1

        w.mark("algorithm", name="halp")
        written += 2                                   # the header and the mark
        msg("h2a", "configure", {"problem": "softmax", "n_samples": N, "n_features": F, "n_outputs": C,
                                 "data_format": "fixed<2,6>", "offset_format": "fixed<1,7>",
                                 "acc_format": "fp32"}, [])
        epoch = 0
        while written + 7 <= records:
            epoch += 1
            msg("h2a", "recentre", {"scale": 0.5}, [
                {"name": "full_grad", "dtype": "<f8", "shape": [F, C], "frame": 1},
                {"name": "anchor", "dtype": "<f8", "shape": [N, C], "frame": 2}])
            msg("a2h", "ack", {"of": "recentre", "info": {"scale": 0.5,
                                                        "ops": {"round fp32 nearest_even": 18621}}}, [])
            msg("h2a", "run_epoch", {"algorithm": "svrg", "epoch": epoch, "steps": 100,
                                     "step_size": 0.04, "batch_size": 1},
                [{"name": "order", "dtype": "<u4", "shape": [100], "frame": 1}])
            msg("a2h", "epoch_report", {"epoch": epoch, "steps": 100, "ops": EPOCH_OPS, "memory": MEMORY,
                                        "saturations": 0}, [])
            msg("h2a", "fetch", {}, [])
            msg("a2h", "state", {"scale": 0.5, "offset_format": "fixed<1,7>"},
                [{"name": "offset", "dtype": "<f8", "shape": [F, C], "frame": 1}])
            w.epoch({"algorithm": "halp", "epoch": epoch, "loss": 1.0, "gap": 1.0 / epoch,
                     "grad_norm": 0.1, "bits": 8, "offset_format": "fixed<1,7>", "seconds": 0.1,
                     "ops": EPOCH_OPS, "saturations": 0, "scale": 0.5, "host_ops": HOST_OPS})
            written += 1
        while written < records:                       # the last few: progress messages
            msg("a2h", "progress", {"of": "run_epoch", "info": {"steps": 100}}, [])
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records in the synthetic trace")
    parser.add_argument("--rounds", type=int, default=3, help="timed repetitions; the best counts")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-energy-") as tmp:
        path = Path(tmp) / "trace.cosim"
        t0 = time.perf_counter()
        count = write_trace(path, args.records)
        print(f"wrote {count:,} records, {path.stat().st_size / 2**20:.0f} MiB, "
              f"in {time.perf_counter() - t0:.1f} s\n")
        buffer = b"".join(msgpack.packb(r, use_bin_type=True) for r in TraceReader(path))
        model = load_model(None)
        results = {}

        def ours() -> None:
            results["report"] = account(TraceReader(path), model, "pcie3x8")

        def limit() -> None:
            for _ in msgpack.Unpacker(io.BytesIO(buffer), raw=False, strict_map_key=False):
                pass

        def reader() -> None:
            for _ in TraceReader(path):
                pass

        best = {"ours": float("inf"), "limit": float("inf"), "reader": float("inf")}
        for _ in range(args.rounds):
            for name, fn in (("ours", ours), ("limit", limit), ("reader", reader)):
                t0 = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t0)
    report = results["report"]
    print(f"{count:,} records, {len(report.epochs):,} epochs, {report.total_pj() / 1e12:.3f} J; "
          f"best of {args.rounds}\n")
    print("| side | s | µs per record |")
    print("|---|---:|---:|")
    for name, label in (("ours", "ours: account(TraceReader(path), …)"),
                        ("limit", "limit: msgpack.Unpacker over the same records in memory"),
                        ("reader", "reader: TraceReader over the file, nothing done")):
        print(f"| {label} | {best[name]:.2f} | {best[name] / count * 1e6:.2f} |")
    print(f"\nours / limit: {best['ours'] / best['limit']:.1f}× the time; "
          f"ours / reader: {best['ours'] / best['reader']:.2f}× (the accounting itself: "
          f"{(best['ours'] - best['reader']) / count * 1e6:.2f} µs per record)")
    target("bench_energy", "ours, s per 10^6 records", best["ours"] * 1e6 / count, "< 10")


if __name__ == "__main__":
    main()
