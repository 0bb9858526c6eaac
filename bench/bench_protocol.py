"""Protocol overhead against raw pyzmq, measured in the same run.

Usage::

    python bench/bench_protocol.py                 # tcp and ipc, prints a markdown table
    python bench/bench_protocol.py --rounds 5 --transports ipc
    python bench/bench_protocol.py --transports tcp --curve   # also ours over tcp with CurveZMQ

Each side runs in its own process, as host and accelerator do. Both peers use DEALER
(client) and ROUTER (server) sockets on the same transport:

- latency: round trip of a small control message: ours is ``Client.request(Promote(...))``
  answered with ``Ack`` by ``Server.serve`` (encode, full validation, session and sequence
  checks on both ends); raw sends the same header dict packed with msgpack and gets a packed
  ack dict back.
- throughput: a 16 MB float64 tensor (2048 × 1024): ours is ``LoadData`` (zero-copy frames,
  dtype/shape/size checks, NaN/Inf scan); raw sends the same buffer as one ``copy=False``
  frame beside a small msgpack header.

Raw and ours run side by side and alternate in short blocks, so that load from other
processes hits both alike. ``--curve`` adds a third peer on tcp, ours with CurveZMQ keys
(encryption and a ZAP-checked client key), in the same alternation, and prints its latency and
throughput against ours on plain tcp (no target: the cost of encryption, for the record).
Targets: latency ≤ 1.5 × raw, throughput ≥ 0.6 × raw, per transport, reported through
``bench/targets.py``; a missed target is printed as such and the exit code stays 0.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

import msgpack
import numpy as np
import zmq

from protocol import messages as m
from protocol.channel import Client, Server
from protocol.keys import client_keys, new_keys, server_keys
from targets import target

ROWS, COLS = 2048, 1024                        # 2048 × 1024 × 8 B = 16 MiB
PROMOTE = m.Promote(offset_format="fixed<1,7>")
ACK_DICT = {"v": list(m.PROTOCOL_VERSION), "type": "ack", "seq": 0, "session": "bench",
            "body": {"of": "promote", "info": {}}, "tensors": []}


def _ours_handler(msg: m.Message) -> m.Message:
    if isinstance(msg, m.Hello):
        return m.Capabilities(list(m.PROTOCOL_VERSION), "bench", [], [], [], [], {})
    return m.Ack(msg.TYPE, {})


def serve_ours(address: str, keys: str | None = None) -> None:
    curve = server_keys(f"{keys}/accel", f"{keys}/allow") if keys else None
    with Server(address, curve=curve) as server:
        print(server.address, flush=True)
        server.serve(_ours_handler)


def serve_raw(address: str) -> None:
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(address)
    print(sock.getsockopt(zmq.LAST_ENDPOINT).decode(), flush=True)
    while True:
        ident, header, *tensors = sock.recv_multipart(copy=False)
        request = msgpack.unpackb(header)
        if request["type"] == "shutdown":
            sock.send_multipart([ident, msgpack.packb(ACK_DICT)])
            time.sleep(0.2)
            return
        sock.send_multipart([ident, msgpack.packb({**ACK_DICT, "seq": request["seq"]})])


def _start(kind: str, address: str, keys: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, address, "--keys", keys],
                            stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def _pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


class Ours:
    """Our client: ``Client.request``, with everything it checks."""

    def __init__(self, address: str, x: np.ndarray, y: np.ndarray, curve=None) -> None:
        self.client = Client(address, session="bench", curve=curve)
        self.client.request(m.Hello(client="bench"))
        self.load = m.LoadData(start=0, x=x, y=y)

    def small(self) -> None:
        self.client.request(PROMOTE)

    def big(self) -> None:
        self.client.request(self.load)

    def close(self) -> None:
        self.client.request(m.Shutdown())
        self.client.close()


class Raw:
    """Plain pyzmq: the same header dicts packed with msgpack, the same buffers as frames."""

    def __init__(self, address: str, x: np.ndarray, y: np.ndarray) -> None:
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(address)
        self.x, self.y, self.seq = x, y, 0
        self.header = {"v": list(m.PROTOCOL_VERSION), "type": "promote", "seq": 0, "session": "bench",
                       "body": {"offset_format": "fixed<1,7>"}, "tensors": []}
        self.big_header = {"v": list(m.PROTOCOL_VERSION), "type": "load_data", "seq": 0, "session": "bench",
                           "body": {"start": 0},
                           "tensors": [{"name": "x", "dtype": "<f8", "shape": list(x.shape), "frame": 1},
                                       {"name": "y", "dtype": "<f8", "shape": list(y.shape), "frame": 2}]}

    def small(self) -> None:
        self.seq += 1
        self.sock.send(msgpack.packb({**self.header, "seq": self.seq}))
        msgpack.unpackb(self.sock.recv())

    def big(self) -> None:
        self.seq += 1
        head = msgpack.packb({**self.big_header, "seq": self.seq})
        self.sock.send_multipart([head, self.x, self.y], copy=False)
        msgpack.unpackb(self.sock.recv())

    def close(self) -> None:
        self.sock.send(msgpack.packb({**self.header, "type": "shutdown"}))
        self.sock.recv()
        self.sock.close()


def _timed(call, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        out.append(time.perf_counter() - t0)
    return out


def _address(transport: str, tmp: str, name: str) -> str:
    return "tcp://127.0.0.1:0" if transport == "tcp" else f"ipc://{tmp}/{name}.sock"


def run(transports: list[str], rounds: int, n_small: int, big_every: int,
        curve: bool = False) -> list[dict]:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((ROWS, COLS)), rng.standard_normal(ROWS)
    mb = (x.nbytes + y.nbytes) / 1e6
    tmp_dir = tempfile.TemporaryDirectory(prefix="cosim-bench-")   # removed at exit
    tmp = tmp_dir.name
    new_keys(f"{tmp}/accel", "accel")
    new_keys(f"{tmp}/allow", "bench")
    rows = []
    for transport in transports:
        procs, peers = [], {}
        kinds = ("raw", "ours", "curve") if curve and transport == "tcp" else ("raw", "ours")
        try:
            for kind in kinds:
                proc, address = _start(kind, _address(transport, tmp, kind), tmp)
                procs.append(proc)
                peers[kind] = (Raw(address, x, y) if kind == "raw" else Ours(
                    address, x, y, client_keys(f"{tmp}/allow", f"{tmp}/accel/accel.key")
                    if kind == "curve" else None))
            samples = {k: ([], []) for k in peers}
            for kind, peer in peers.items():        # warm up all
                _timed(peer.small, 200)
                _timed(peer.big, 2)
            # Short blocks, in turn, so that load from other processes hits all alike.
            for r in range(rounds):
                for kind in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
                    samples[kind][0].extend(_timed(peers[kind].small, n_small))
                    if r % big_every == 0:
                        samples[kind][1].extend(_timed(peers[kind].big, 1))
            for peer in peers.values():
                peer.close()
            for proc in procs:
                proc.wait(10)
        finally:
            for proc in procs:
                proc.kill()
        lat = {k: (statistics.median(v[0]) * 1e6, _pct(v[0], 0.99) * 1e6) for k, v in samples.items()}
        thr = {k: (mb / statistics.median(v[1]), mb / _pct(v[1], 0.99)) for k, v in samples.items()}
        rows.append({"transport": transport, "lat": lat, "thr": thr,
                     "lat_ratio": lat["ours"][0] / lat["raw"][0],
                     "thr_ratio": thr["ours"][0] / thr["raw"][0]})
    return rows


def report_curve(rows: list[dict]) -> str:
    """Ours with CurveZMQ against ours on plain tcp, from the same run."""
    out = ["| tcp | latency plain µs (median / p99) | latency CURVE µs (median / p99) | ratio "
           "| throughput plain MB/s (median / at p99 time) | throughput CURVE MB/s (median / at p99 time) | ratio |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "curve" in r["lat"]:
            (lp, lp99), (lc, lc99) = r["lat"]["ours"], r["lat"]["curve"]
            (tp, tp99), (tc, tc99) = r["thr"]["ours"], r["thr"]["curve"]
            out.append(f"| ours | {lp:.0f} / {lp99:.0f} | {lc:.0f} / {lc99:.0f} | {lc / lp:.2f} | "
                       f"{tp:.0f} / {tp99:.0f} | {tc:.0f} / {tc99:.0f} | {tc / tp:.2f} |")
    return "\n".join(out)


def report(rows: list[dict], rounds: int, n_small: int, big_every: int) -> str:
    out = [f"{rounds} alternating blocks of {n_small} small round trips, a 16 MiB transfer in "
           f"every {big_every}th block, per side",
           "",
           "| transport | latency raw µs (median / p99) | latency ours µs (median / p99) | ratio (≤ 1.5) "
           "| throughput raw MB/s (median / at p99 time) | throughput ours MB/s (median / at p99 time) | ratio (≥ 0.6) |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        (lr, lr99), (lo, lo99) = r["lat"]["raw"], r["lat"]["ours"]
        (tr, tr99), (to, to99) = r["thr"]["raw"], r["thr"]["ours"]
        out.append(f"| {r['transport']} | {lr:.0f} / {lr99:.0f} | {lo:.0f} / {lo99:.0f} | "
                   f"{r['lat_ratio']:.2f} | {tr:.0f} / {tr99:.0f} | {to:.0f} / {to99:.0f} | "
                   f"{r['thr_ratio']:.2f} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "ADDRESS"), help=argparse.SUPPRESS)
    parser.add_argument("--keys", help=argparse.SUPPRESS)   # with --serve curve: the key files' root
    parser.add_argument("--curve", action="store_true",
                        help="also ours over tcp with CurveZMQ, against ours on plain tcp (needs tcp)")
    parser.add_argument("--transports", default="tcp,ipc", help="comma-separated: tcp, ipc")
    parser.add_argument("--rounds", type=int, default=600, help="alternating raw/ours blocks")
    parser.add_argument("--small", type=int, default=10, help="small round trips per block")
    parser.add_argument("--big-every", type=int, default=10, help="a 16 MiB transfer every N blocks")
    args = parser.parse_args()
    if args.serve:
        kind, address = args.serve
        if kind == "raw":
            serve_raw(address)
        else:
            serve_ours(address, args.keys if kind == "curve" else None)
        return
    transports = args.transports.split(",")
    bad = [t for t in transports if t not in ("tcp", "ipc")]
    if bad:
        parser.error(f"unknown transport(s) {bad}; choose from tcp, ipc")
    if args.curve and "tcp" not in transports:
        parser.error("--curve measures CurveZMQ over tcp: include tcp in --transports")
    rows = run(transports, args.rounds, args.small, args.big_every, args.curve)
    print(report(rows, args.rounds, args.small, args.big_every))
    if args.curve:
        print("\nEncryption: ours with CurveZMQ against ours on plain tcp\n")
        print(report_curve(rows))
    for r in rows:
        target("bench_protocol", f"latency ours / raw ({r['transport']})", r["lat_ratio"], "<= 1.5")
        target("bench_protocol", f"throughput ours / raw ({r['transport']})", r["thr_ratio"], ">= 0.6")


if __name__ == "__main__":
    main()
