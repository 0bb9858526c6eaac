"""mixed on digits ``mlp:128`` with the weights sent every K steps: time, channel and accuracy per K.

Usage::

    python bench/bench_mixed.py                        # K = 1, 4, 16, 5 epochs: about 2 minutes
    python bench/bench_mixed.py --sync-every 1,2,8 --epochs 2

Each K trains ``mixed`` (fp8-ibm, seed 0, B = 1, α = 0.02, λ = 1e-2, T = 1438; the defaults
of ``cosim run --model mlp:128``) with ``host.deep.train_net`` against one emulated daemon over
ipc, one after the other. Per K it prints: seconds per epoch (the mean over the epochs), the
same less the message seconds (the accelerator's compute, the host's update and evaluation),
messages and bytes per step (both directions, as encoded), message seconds per step (round
trips beyond the accelerator's compute), and the last epoch's training loss and test accuracy.
The target: K = 16's message seconds per step against K = 1's, measured in the same run (a K
given twice runs twice, e.g. ``1,4,16,1`` to see the machine's drift).
"""
from __future__ import annotations

import argparse
import tempfile

from targets import target

from cosim.launch import AcceleratorProcess
from host.client import AcceleratorClient
from host.deep import NetRecord, train_net
from host.train import TrainConfig


def measure(sync_every: list[int], epochs: int) -> list[tuple[int, list[NetRecord]]]:
    """(K, mixed's records of epochs 1 …) per K, in turn."""
    out = []
    with tempfile.TemporaryDirectory() as tmp, AcceleratorProcess.start(f"ipc://{tmp}/a.sock") as accel:
        for k in sync_every:
            cfg = TrainConfig(model="mlp:128", algorithms=("mixed",), epochs=epochs, sync_every=k)
            with AcceleratorClient(accel.address, timeout=600) as client:
                client.hello()
                out.append((k, [r for r in train_net(cfg, acc=client).records if r.epoch > 0]))
    return out


def summary(records: list[NetRecord]) -> dict[str, float]:
    steps = 1438 * len(records)          # T = ⌈1438/B⌉ on digits' training part, B = 1
    last = records[-1]
    return {"s/epoch": last.seconds / len(records),
            "s/epoch w/o msgs": (last.seconds - sum(r.message_seconds for r in records)) / len(records),
            "messages/step": sum(r.messages for r in records) / steps,
            "bytes/step": sum(r.message_bytes for r in records) / steps,
            "message ms/step": 1e3 * sum(r.message_seconds for r in records) / steps,
            "loss": last.loss, "test accuracy": last.test_accuracy}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sync-every", default="1,4,16", help="comma-separated K (default 1,4,16)")
    p.add_argument("--epochs", type=int, default=5)
    args = p.parse_args()
    ks = [int(k) for k in args.sync_every.split(",")]
    rows = [(k, summary(r)) for k, r in measure(ks, args.epochs)]
    cols = list(rows[0][1])
    print(f"{'K':>4} " + " ".join(f"{c:>16}" for c in cols))
    for k, row in rows:
        print(f"{k:>4} " + " ".join(f"{row[c]:>16.4f}" for c in cols))
    first = {k: row for k, row in reversed(rows)}
    if 1 in first and 16 in first:
        target("bench_mixed", "mixed message seconds per step, K = 1 / K = 16",
               first[1]["message ms/step"] / first[16]["message ms/step"], ">= 4")


if __name__ == "__main__":
    main()
