"""Recovering a run: its checkpoints on disk, a lost daemon replaced, a killed run resumed.

Usage (what ``cosim run`` does; ``cosim run --resume DIR`` starts from ``Recovery.resume``)::

    recovery = Recovery(results, trace)                  # a new run: no checkpoint yet
    train(cfg, connect=address, checkpoint=recovery.save, resume=recovery.last)
    # the daemon died: start another, then go back to the last checkpoint and carry on
    recovery.rewind("restart", reason=notice)
    train(cfg, connect=new_address, checkpoint=recovery.save, resume=recovery.last)

After every epoch ``save`` writes ``checkpoint.npz`` into the results directory, atomically:
the host's :class:`host.train.Checkpoint` (arrays as arrays, the rest as JSON, every float
exact), the trace's size then and the recoveries so far. Going back to a checkpoint cuts the
trace to that size, rewrites metrics.csv with the checkpoint's records, and appends a
``restart`` or ``resume`` mark: the trace and the metrics then read as those of one run, with
the epochs lost redone once (``docs/host.md``, "Recovery").
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from cosim.results import ResultsDir, write_atomic
from cosim.trace import TraceWriter
from host.scheduler import UpdateStatistics
from host.train import Checkpoint, EpochRecord
from protocol.messages import State

CHECKPOINT = "checkpoint.npz"


def save_checkpoint(path: Path, ck: Checkpoint, **extra: Any) -> None:
    """``ck`` and the JSON values ``extra`` to ``path`` (an .npz), atomically."""
    arrays = {"w": ck.w, **{f"weights/{k}": v for k, v in ck.weights.items()}}
    meta = {f.name: getattr(ck, f.name) for f in dataclasses.fields(ck)
            if f.name not in ("w", "weights", "records", "accel", "stats")}
    meta["records"] = [dataclasses.asdict(r) for r in ck.records]
    # JSON keys are strings: the binades travel as [binade, count] pairs
    meta["stats"] = [None if s is None else {**dataclasses.asdict(s), "binades": list(s.binades.items())}
                     for s in ck.stats]
    if ck.accel is not None:
        arrays["accel/offset"] = ck.accel.offset
        meta["accel"] = {"scale": ck.accel.scale, "offset_format": ck.accel.offset_format,
                         "counters": ck.accel.counters}
    arrays["meta"] = np.frombuffer(json.dumps({**meta, "extra": extra}).encode(), dtype=np.uint8)
    write_atomic(path, lambda f: np.savez(f, **arrays))


def load_checkpoint(path: Path) -> tuple[Checkpoint, dict[str, Any]]:
    """(checkpoint, extra) as :func:`save_checkpoint` wrote them; ValueError if unreadable."""
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(arrays.pop("meta").tobytes())
        extra = meta.pop("extra")
        accel = meta.pop("accel", None)
        meta["stats"] = [None if s is None else UpdateStatistics(**{**s, "binades": dict(s["binades"])})
                         for s in meta.pop("stats", [])]
        ck = Checkpoint(**meta, w=arrays.pop("w"),
                        weights={k.removeprefix("weights/"): v for k, v in arrays.items()
                                 if k.startswith("weights/")},
                        accel=None if accel is None else State(offset=arrays["accel/offset"], **accel))
        return dataclasses.replace(ck, records=[_record(r) for r in ck.records]), extra
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a readable checkpoint ({exc})") from None


def _record(fields: dict[str, Any]) -> Any:
    """An epoch record from its fields: a network's NetRecord (it has a test accuracy), else an EpochRecord."""
    if "test_accuracy" in fields:
        from host.deep import NetRecord     # torch: only for a network's run
        return NetRecord(**fields)
    return EpochRecord(**fields)


def resumable(path: Path) -> Path:
    """The config file of the run in results directory ``path``, if it can be resumed; else
    ValueError saying why (not a run, completed, stopped before its first checkpoint)."""
    if not (path / "config.toml").is_file() or not (path / "trace.cosim").is_file():
        raise ValueError(f"{path} is not a cosim run directory (it has no config.toml and trace.cosim)")
    try:
        status = json.loads((path / "metrics.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        status = None     # killed before writing it: resumable
    if status == "completed":
        raise ValueError(f"the run in {path} has completed: nothing to resume")
    if not (path / CHECKPOINT).is_file():
        raise ValueError(f"the run in {path} stopped before its first epoch ended (no {CHECKPOINT}); "
                         f"start it again: cosim run --config {path / 'config.toml'}")
    return path / "config.toml"


class Recovery:
    """The last checkpoint of a run (in memory and in the results directory) and the way back
    to it; see the module docstring."""

    def __init__(self, results: ResultsDir, trace: TraceWriter, last: Checkpoint | None = None,
                 trace_bytes: int = 0, notes: list[dict] = ()) -> None:
        self.results, self.trace, self.last, self._bytes = results, trace, last, trace_bytes
        results.notes = list(notes)

    @classmethod
    def resume(cls, results_path: Path, trace_path: Path) -> "Recovery":
        """A killed run's directory reopened at its last checkpoint (ValueError if there is none)."""
        ck, extra = load_checkpoint(results_path / CHECKPOINT)
        results = ResultsDir.reopen(results_path, records=[dataclasses.asdict(r) for r in ck.records])
        trace = TraceWriter.reopen(trace_path, size=extra["trace_bytes"])
        self = cls(results, trace, ck, extra["trace_bytes"], extra["notes"])
        self._note("resume")
        return self

    def save(self, ck: Checkpoint) -> None:
        """The checkpoint after an epoch, with the trace's size then: to disk first, so that
        memory never runs ahead of the disk."""
        size = self.trace.size
        save_checkpoint(self.results.path / CHECKPOINT, ck, trace_bytes=size, notes=self.results.notes)
        self.last, self._bytes = ck, size

    def rewind(self, what: str, **info: Any) -> None:
        """Back to the last checkpoint after the daemon was lost (``what`` = "restart"): cut the
        trace and metrics.csv back to it, and mark the trace."""
        if self.last is not None:
            # A crash in the last save may have left a later checkpoint on disk: this one again
            # first, so the disk never names trace bytes that the cut removes.
            save_checkpoint(self.results.path / CHECKPOINT, self.last, trace_bytes=self._bytes,
                            notes=self.results.notes)
            self.trace.cut(self._bytes)
        self.results.rewind([dataclasses.asdict(r) for r in self.last.records] if self.last else [])
        self._note(what, **info)

    def _note(self, what: str, **info: Any) -> None:
        """Record a recovery in metrics.json and as a trace mark, from the last checkpoint."""
        at = {"algorithm": self.last.algorithm, "epoch": self.last.epoch} if self.last else {}
        note = {"what": what, **at, **info}
        self.results.notes.append(note)
        self.trace.mark(what, **{k: v for k, v in note.items() if k != "what"})
        if self.last is not None:   # the trace grew by the mark: the checkpoint says how far
            self.save(self.last)
