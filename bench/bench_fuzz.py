"""The structured fuzzer of ``tests/accel/test_fuzz_daemon.py``, 10^5 cases against a live daemon.

Usage::

    python bench/bench_fuzz.py                        # 10^5 cases in batches of 10^4 (6 min)
    python bench/bench_fuzz.py --cases 20000 --batch 5000

The cases are the test's (every request type broken in one way, requests out of order or at the
edges of their spec, requests from a client that does not own the session), each batch drawn
with its own seed, so the run covers ten times the test's cases and none of them twice. A daemon
that dies is counted and replaced for the next batch.

Reports: deaths (target 0), non-error replies to invalid input (target 0), replies with an error
code that does not name what was broken or ``internal`` and silences (target 0), the daemon's
peak resident memory (``AcceleratorProcess.memory()``) over its idle figure (taken after a first
epoch, which loads the kernels: 70 MiB that are not the fuzzing's), and cases per second. The
peer, measured in the same run over the same socket between the batches: valid hello/fetch round
trips per second. A case is three requests (the case, then the owner's hello and fetch, sent
without waiting for its reply) and drawing it; the ratio says what it costs in round trips.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from cosim.launch import AcceleratorProcess
from protocol.messages import Fetch, Hello
from targets import target

MiB = 1 << 20
PEER_PAIRS = 500      # hello/fetch pairs timed after each batch


def _fuzzer_module():
    """The test module, loaded by path (tests/ is not a package); registered in sys.modules
    first, as its dataclasses need."""
    path = Path(__file__).resolve().parents[1] / "tests" / "accel" / "test_fuzz_daemon.py"
    spec = importlib.util.spec_from_file_location("test_fuzz_daemon", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def peer(fz, fuzzer, pairs: int) -> float:
    """Seconds for ``pairs`` valid hello/fetch round-trip pairs over the fuzzer's owner socket."""
    t0 = time.perf_counter()
    for _ in range(pairs):
        fuzzer.request(Hello(client=fz.CLIENT))
        fuzzer.request(Fetch())
    return time.perf_counter() - t0


def warm_up(fz, fuzzer) -> None:
    """A first epoch (it loads the kernels), then the daemon back to fresh."""
    fuzzer.drive("anchored")
    fuzzer.request(fz.SGD)
    fuzzer.drive("fresh")
    peer(fz, fuzzer, 50)


def run(cases: int, batch: int, folder: str) -> dict:
    fz = _fuzzer_module()
    address = f"ipc://{folder}/a.sock"
    accel = AcceleratorProcess.start(address)
    fuzzer = fz.Fuzzer(accel)
    warm_up(fz, fuzzer)
    idle = accel.memory()
    tallies, peaks, fuzz_s, peer_s, pairs = [fuzzer.tally], [], 0.0, 0.0, 0
    try:
        for i in range((cases + batch - 1) // batch):
            if fuzzer.dead:                            # counted in its tally; the next batch gets a new one
                peaks.append(accel.memory().get("peak", 0))
                fuzzer.close()
                accel.stop()
                accel = AcceleratorProcess.start(address)
                fuzzer = fz.Fuzzer(accel)
                tallies.append(fuzzer.tally)
            t0 = time.perf_counter()
            fz.fuzz(fuzzer, min(batch, cases - i * batch), strict=False, seed_=i)
            fuzz_s += time.perf_counter() - t0
            if not fuzzer.dead:
                peer_s += peer(fz, fuzzer, PEER_PAIRS)
                pairs += PEER_PAIRS
            print(f"batch {i + 1}: {sum(t.cases for t in tallies)} cases, {sum(t.died for t in tallies)} "
                  f"deaths, {sum(t.accepted for t in tallies)} accepted, {fuzz_s:.0f} s", flush=True)
        peaks.append(accel.memory().get("peak", 0))
        fuzzer.close()
    finally:
        accel.stop()
    total = {k: sum(getattr(t, k) for t in tallies)
             for k in ("cases", "died", "accepted", "silent", "wrong_code")}
    return {**total, "idle_rss": idle.get("rss", 0), "peak": max(peaks),
            "cases_per_s": total["cases"] / fuzz_s,
            "round_trips_per_s": 2 * pairs / peer_s if peer_s else float("nan"),
            "problems": [p for t in tallies for p in t.problems][:10],
            "codes": sum((t.codes for t in tallies), Counter())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000, help="cases per seed (and per daemon at most)")
    args = parser.parse_args()
    if args.cases < 1 or args.batch < 1:
        parser.error("--cases and --batch must be at least 1")
    with tempfile.TemporaryDirectory(prefix="cosim-bench-") as folder:
        r = run(args.cases, args.batch, folder)
    ratio = r["cases_per_s"] / r["round_trips_per_s"]
    growth = (r["peak"] - r["idle_rss"]) / MiB
    print(f"\n| cases | deaths | non-error replies to invalid input | wrong code or internal | silences "
          f"| daemon RSS idle / peak MiB | cases/s | hello+fetch round trips/s | ratio |\n"
          f"|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
          f"| {r['cases']} | {r['died']} | {r['accepted']} | {r['wrong_code']} | {r['silent']} "
          f"| {r['idle_rss'] / MiB:.0f} / {r['peak'] / MiB:.0f} | {r['cases_per_s']:.0f} "
          f"| {r['round_trips_per_s']:.0f} | {ratio:.3f} |")
    print("\nerror codes:", ", ".join(f"{code} {n}" for code, n in r["codes"].most_common()))
    for problem in r["problems"]:
        print("problem:", problem)
    target("bench_fuzz", "daemon deaths", r["died"], "<= 0")
    target("bench_fuzz", "non-error replies to invalid input", r["accepted"], "<= 0")
    target("bench_fuzz", "wrong codes, internal errors and silences", r["wrong_code"] + r["silent"], "<= 0")
    target("bench_fuzz", "daemon peak RSS over idle, MiB", growth, "<= 16")
    target("bench_fuzz", "cases/s / hello+fetch round trips/s", ratio, ">= 0.05")


if __name__ == "__main__":
    main()
