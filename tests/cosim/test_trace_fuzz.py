"""1,000 random corruptions of a real trace: each one reads correctly or is one clear error.

The trace comes from real training (HALP, LP-SGD and SVRG on a small synthetic problem) against
the real daemon over a real socket. Each corruption (a flipped bit, a truncation, random bytes
inserted) is written to a file and read by :func:`cosim.trace.summarize`, the function behind
`cosim trace show`; a sample also goes through the real CLI. The outcome must be exactly one of

- the summary of the records before the damage, for a truncation (``truncated`` unless the cut
  fell between records) or bytes added at the very end (fewer than a record head: a torn tail);
- a :class:`TraceError` naming the record that holds the damage and its byte offset (the
  magic's damage names no record).

and the file's bytes are what they were.
"""
import dataclasses
import random
import subprocess
import sys
import threading

import pytest

from cosim.trace import MAGIC, TraceError, TraceReader, TraceWriter, summarize

CASES = 1000
CLI_CASES = 20
HEAD = 12  # bytes of a record's head


@pytest.fixture(scope="module")
def real_trace(tmp_path_factory):
    from accel.daemon import Daemon
    from host.train import TrainConfig, train
    from protocol.channel import Server

    tmp = tmp_path_factory.mktemp("fuzz")
    server = Server(f"ipc://{tmp}/a.sock")
    daemon, stop = Daemon(), threading.Event()
    thread = threading.Thread(target=server.serve, args=(daemon.handle,), kwargs={"should_stop": stop.is_set})
    thread.start()
    cfg = TrainConfig(dataset="synthetic_logistic", model="logistic", algorithms=("svrg", "halp", "lpsgd"),
                      epochs=2, samples=64, features=4, inner_steps=20)
    path = tmp / "trace.cosim"
    try:
        with TraceWriter(path, config={"dataset": cfg.dataset}, seed=cfg.seed) as trace:
            train(cfg, connect=server.address, tap=trace.message,
                  on_epoch=lambda r: trace.epoch(dataclasses.asdict(r)),
                  on_start=lambda a: trace.mark("algorithm", name=a))
    finally:
        stop.set()
        thread.join()
        server.close()
    return path


@dataclasses.dataclass
class Oracle:
    """What reading any corruption of ``data`` must give, from its record layout."""

    data: bytes
    starts: list[int]          # each record's offset
    ends: list[int]            # each record's end
    prefixes: list[dict]       # summarize() of the first k records, k = 1 … n (index k - 1)

    @classmethod
    def of(cls, path, tmp):
        data = path.read_bytes()
        starts = [e.offset for e in TraceReader(path).entries()]
        ends = [*starts[1:], len(data)]
        prefixes = []
        for k, end in enumerate(ends, 1):
            prefix = tmp / f"prefix-{k}.cosim"
            prefix.write_bytes(data[:end])
            prefixes.append(summarize(prefix))
        return cls(data, starts, ends, prefixes)

    def record_at(self, position: int) -> int | None:
        """The index of the record holding byte ``position``; None in the magic."""
        if position < len(MAGIC):
            return None
        return max(i for i, start in enumerate(self.starts) if start <= position)

    def expect(self, kind: str, at: int, n: int) -> tuple[int | None, dict | None]:
        """(record the error must name, None) or (None, the summary the read must give)."""
        size = len(self.data)
        if kind == "truncate":                           # keep the first `at` bytes
            if at < self.ends[0]:
                return self.record_at(at), None          # the header is torn: nothing to read
            k = sum(end <= at for end in self.ends)
            return None, {**self.prefixes[k - 1], "truncated": at != self.ends[k - 1]}
        if kind == "insert" and at == size:
            if n < HEAD:                                 # looks like a torn head: tolerated
                return None, {**self.prefixes[-1], "truncated": True}
            return len(self.starts), None                # a new record that fails its check
        return self.record_at(at), None                  # a flip or an insertion inside


def corrupt(rng: random.Random, data: bytes) -> tuple[str, int, int, bytes]:
    kind = rng.choice(("flip", "truncate", "insert"))
    if kind == "flip":
        at = rng.randrange(len(data))
        damaged = bytearray(data)
        damaged[at] ^= 1 << rng.randrange(8)
        return kind, at, 1, bytes(damaged)
    if kind == "truncate":
        at = rng.randrange(len(data))
        return kind, at, 0, data[:at]
    at, n = rng.randrange(len(data) + 1), rng.choice((1, 2, 3, 7, 11, 12, 13, 40, 300))
    return kind, at, n, data[:at] + rng.randbytes(n) + data[at:]


def check(oracle: Oracle, kind: str, at: int, n: int, path) -> tuple[int | None, dict | None]:
    """Read ``path`` in-process and compare with the oracle; the expectation, for the CLI."""
    name, summary = oracle.expect(kind, at, n)
    where = f"{kind} at {at} (+{n})"
    try:
        got = summarize(path)
    except TraceError as exc:
        assert summary is None, f"{where}: {exc}"
        assert "\n" not in str(exc)
        if name is not None:
            start = oracle.starts[name] if name < len(oracle.starts) else len(oracle.data)
            assert (exc.index, exc.offset) == (name, start), f"{where}: {exc}"
            assert f"at byte {start}" in str(exc)
        return name, None
    assert summary is not None, f"{where}: read without error"
    assert got == summary, where
    return None, summary


def test_random_corruptions_read_correctly_or_fail_cleanly(real_trace, tmp_path):
    oracle = Oracle.of(real_trace, tmp_path)
    assert len(oracle.starts) > 40 and oracle.prefixes[-1]["messages"]
    rng = random.Random(20261202)
    path = tmp_path / "corrupt.cosim"
    kinds = {"flip": 0, "truncate": 0, "insert": 0}
    errors = 0
    cli: list[tuple] = []
    for case in range(CASES):
        kind, at, n, damaged = corrupt(rng, oracle.data)
        path.write_bytes(damaged)
        _, summary = check(oracle, kind, at, n, path)
        assert path.read_bytes() == damaged               # readers never write
        kinds[kind] += 1
        errors += summary is None
        if case % (CASES // CLI_CASES) == 0:
            keep = tmp_path / f"cli-{case}.cosim"
            keep.write_bytes(damaged)
            cli.append((keep, damaged, summary))
    assert min(kinds.values()) > CASES // 5 and 0 < errors < CASES
    _through_the_cli(cli)


def _through_the_cli(cases: list[tuple]) -> None:
    """`cosim trace show` on each file, two at a time (the machine has two cores)."""
    for pair in (cases[i:i + 2] for i in range(0, len(cases), 2)):
        procs = [subprocess.Popen([sys.executable, "-m", "cosim", "trace", "show", str(p)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for p, _, _ in pair]
        for proc, (p, damaged, summary) in zip(procs, pair):
            out, err = proc.communicate(timeout=60)
            assert "Traceback" not in err, err
            if summary is None:
                assert proc.returncode == 2 and out == "", (p, out, err)
                assert err.startswith("error: ") and err.count("\n") == 1, err
            else:
                assert proc.returncode == 0 and err == "", (p, err)
                assert ("truncated" in out) == summary["truncated"], out
            assert p.read_bytes() == damaged
