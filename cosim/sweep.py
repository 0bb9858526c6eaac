"""Sweeps: many ``cosim run`` configurations from one TOML file, run in parallel, resumable.

Usage::

    cosim sweep bits.toml                   # every point, --jobs at a time on this machine
    cosim sweep bits.toml --ray local       # the same points as Ray tasks (or --ray HOST:PORT)
    cosim sweep bits.toml --dry-run         # validate and list the points; run nothing

From Python (the CLI passes its own key list and ``resolve``)::

    sweep = read_sweep(Path("bits.toml"), valid_keys, canonical_key)
    resolved = check_points(sweep, resolve_point)       # {point id: resolved config}
    outcome = run_sweep(sweep, resolved, Path("sweeps") / sweep.name, LocalRunner(2, staging), console)

A sweep file holds ``[base]`` (settings every point shares), ``[grid]`` (each key a list of
values: the cartesian product), ``[[points]]`` (explicit points, each merged over base) and
the options ``name``, ``out``, ``jobs``; ``docs/sweep.md`` gives the format. Each point is an
ordinary run directory ``<out>/<name>/runs/<point id>/``, produced by ``python -m cosim run``
in its own process (with its own daemon); a point whose ``metrics.json`` says completed is not
run again.
"""
from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cosim.results import toml_dumps
from cosim.tomlfile import read_toml

__all__ = ["SweepError", "Point", "Sweep", "read_sweep", "check_points", "run_point", "LocalRunner",
           "RayRunner", "run_sweep", "run_status", "read_record", "cpu_count"]

OPTIONS = ("name", "out", "jobs")               # sweep options, at the top of the file
TABLES = ("base", "grid", "points")
RESERVED = ("out", "name")                      # run keys the sweep itself sets for every point
ENERGY_LINK = "pcie3x8"                         # cosim energy's default link
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class SweepError(ValueError):
    """A mistake in a sweep file: one line naming the table, key or point, exit code 2."""


@dataclass(frozen=True)
class Point:
    """One configuration of a sweep."""

    id: str                        # readable prefix (what varies) + a hash of every setting
    origin: str                    # where the file defines it: "grid point 3", "[[points]] 1"
    settings: dict[str, Any]       # every setting given for it: base, then the grid's or its own
    varying: tuple[str, ...]       # the settings it does not take from [base]

    def describe(self) -> str:
        """``algorithms = ["halp"], bits = 4``: what distinguishes it, as TOML."""
        return ", ".join(toml_dumps({k: self.settings[k]}).strip() for k in self.varying) or "[base] only"


@dataclass(frozen=True)
class Sweep:
    name: str
    out: str | None
    jobs: int | None
    points: tuple[Point, ...]
    keys: tuple[str, ...]          # every setting any point sets, in the order the file names them
    duplicates: int                # points dropped because an earlier one has the same settings


# ---- reading and validating -------------------------------------------------------------------

def read_sweep(path: Path, valid_keys: Iterable[str], canonical: Callable[[str], str]) -> Sweep:
    """Parse and check a sweep file's structure and keys (values are ``check_points``' job).

    ``valid_keys`` are the settings a ``cosim run --config`` file accepts and ``canonical`` maps
    a key as written to its name there ('-' or '_' alike, ``algorithm`` → ``algorithms``).
    """
    try:
        raw = read_toml(path, "sweep file")
    except ValueError as exc:
        raise SweepError(str(exc)) from None
    unknown = [k for k in raw if k not in OPTIONS + TABLES]
    if unknown:
        raise SweepError(f"{path}: unknown key {unknown[0]!r}; valid top-level keys: "
                         f"{', '.join(OPTIONS + TABLES)} (run settings go in [base], [grid] or [[points]])")
    name = raw.get("name", path.stem)
    if not (isinstance(name, str) and _NAME.fullmatch(name)):
        raise SweepError(f"{path}: name: letters, digits, '.', '_' or '-' (a directory name); got {name!r}")
    out = raw.get("out")
    if out is not None and not (isinstance(out, str) and out):
        raise SweepError(f"{path}: out: a directory path; got {out!r}")
    jobs = raw.get("jobs")
    if jobs is not None and not (isinstance(jobs, int) and not isinstance(jobs, bool) and jobs >= 1):
        raise SweepError(f"{path}: jobs: an integer >= 1; got {jobs!r}")

    allowed = sorted(set(valid_keys) - set(RESERVED))

    def settings(table: Any, where: str, *, lists: bool = False) -> dict[str, Any]:
        if not isinstance(table, dict):
            raise SweepError(f"{path}: {where} must be a table of settings; got {table!r}")
        given: dict[str, Any] = {}
        for key, value in table.items():
            k = canonical(key)
            if k in RESERVED:
                raise SweepError(f"{path}: {where} {key!r}: the sweep sets each point's {k} "
                                 "(set the sweep's own `name` or `out`, or --out)")
            if k not in allowed:
                raise SweepError(f"{path}: {where} unknown key {key!r}; valid keys: {', '.join(allowed)}")
            if k in given:
                raise SweepError(f"{path}: {where} sets {k} twice ({key!r})")
            if lists:
                if not (isinstance(value, list) and value):
                    raise SweepError(f"{path}: {where} {key}: a non-empty list of values to sweep, "
                                     f"e.g. {key} = [4, 8]; got {value!r}")
                given[k] = [_value(v, k, f"{where} {key}", path) for v in value]
            else:
                given[k] = _value(value, k, f"{where} {key}", path)
        return given

    base = settings(raw.get("base", {}), "[base]")
    grid = settings(raw.get("grid", {}), "[grid]", lists=True)
    both = [k for k in grid if k in base]
    if both:
        raise SweepError(f"{path}: {both[0]} is in both [base] and [grid]; keep it in one")
    tables = raw.get("points", [])
    if not isinstance(tables, list):
        raise SweepError(f"{path}: points must be an array of tables ([[points]]); got {tables!r}")
    explicit = [settings(p, f"[[points]] {i}") for i, p in enumerate(tables, 1)]

    candidates: list[tuple[str, dict[str, Any], tuple[str, ...]]] = []
    if grid or not explicit:   # no grid and no points: [base] alone is the one point
        for i, values in enumerate(itertools.product(*grid.values()), 1):
            candidates.append((f"grid point {i}", {**base, **dict(zip(grid, values))}, tuple(grid)))
    for i, p in enumerate(explicit, 1):
        candidates.append((f"[[points]] {i}", {**base, **p}, tuple(p)))
    points: dict[str, Point] = {}
    for origin, s, varying in candidates:
        point = Point(point_id(s, varying), origin, s, varying)
        points.setdefault(point.id, point)
    keys = dict.fromkeys([*base, *grid, *(k for p in explicit for k in p)])
    return Sweep(name, out, jobs, tuple(points.values()), tuple(keys), len(candidates) - len(points))


def _value(value: Any, key: str, where: str, path: Path) -> Any:
    """One setting's value as a run config holds it; algorithms as a list of names."""
    if key == "algorithms":
        names = value.split(",") if isinstance(value, str) else value
        if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
            return [n.strip() for n in names if n.strip()]
        raise SweepError(f"{path}: {where}: an algorithm name, a comma-separated string or a list "
                         f"of names; got {value!r}")
    if isinstance(value, (str, int, float, bool)):
        return value
    raise SweepError(f"{path}: {where}: a single value (string, number or boolean); got {value!r}")


def point_id(settings: dict[str, Any], varying: Iterable[str]) -> str:
    """``halp-bits4-seed0-1f2e3d4c``: the varying settings for people, a hash of all for identity.

    >>> point_id({"algorithms": ["halp"], "bits": 4, "epochs": 2}, ["algorithms", "bits"])
    'halp-bits4-8cd8ee07'
    """
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    words = ("+".join(v) if k == "algorithms" else v if isinstance(v, str) else f"{k}{v}"
             for k, v in ((k, settings[k]) for k in varying))
    prefix = "-".join(re.sub(r"[^A-Za-z0-9.+]+", "_", w).strip("_") for w in words)[:48].strip("-_")
    return f"{prefix}-{digest}" if prefix else digest


def check_points(sweep: Sweep, resolve_point: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, dict]:
    """Resolve every point (``resolve_point``: settings → resolved config, ValueError for a bad
    one) before anything runs: {point id: resolved config}, or a SweepError naming the point."""
    resolved = {}
    for i, p in enumerate(sweep.points, 1):
        where = f"point {i} of {len(sweep.points)} ({p.origin}: {p.describe()})"
        try:
            resolved[p.id] = resolve_point(dict(p.settings))
        except ValueError as exc:
            raise SweepError(f"{where}: {exc}") from None
        except (TypeError, AttributeError) as exc:   # a string where a number belongs, or the reverse
            raise SweepError(f"{where}: a value of the wrong type ({exc})") from None
    return resolved


# ---- one point, on any machine --------------------------------------------------------------------

def run_point(point: Point, workdir: Path, *, started: Callable[[subprocess.Popen], None] | None = None) -> Path:
    """Run ``point`` with ``python -m cosim run`` in its own process, under ``workdir``; return
    its run directory, whatever the outcome. The directory gets ``point.toml``, the run's
    ``stdout.log`` and ``stderr.log`` and ``sweep.json`` (exit code, wall time, error, energy).

    ``started(proc)`` lets a caller stop the run; interrupted here (Ctrl-C, a cancelled Ray
    task), the run is asked to stop as on Ctrl-C and keeps what it recorded.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config, out = workdir / "point.toml", workdir / "out"
    config.write_text(toml_dumps(point.settings))
    argv = [sys.executable, "-m", "cosim", "run", "--config", str(config), "--out", str(out), "--name", point.id]
    began = time.monotonic()
    with open(workdir / "stdout.log", "wb") as stdout, open(workdir / "stderr.log", "wb") as stderr:
        # a session of its own: a terminal's Ctrl-C reaches the sweep, which stops each run in turn
        proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        if started is not None:
            started(proc)
        try:
            code = proc.wait()
        except BaseException:
            stop_run(proc)
            raise
    seconds = time.monotonic() - began
    made = [d for d in out.iterdir() if d.is_dir()] if out.is_dir() else []
    run_dir = made[0] if made else out / point.id   # no directory: the run failed before creating one
    run_dir.mkdir(parents=True, exist_ok=True)
    for f in (config, workdir / "stdout.log", workdir / "stderr.log"):
        f.replace(run_dir / f.name)
    status = run_status(run_dir)
    error = None if status == "completed" else _error(run_dir / "stderr.log", code)
    write_record(run_dir, point, returncode=code, seconds=seconds, error=error, energy=_energy(run_dir))
    return run_dir


STOP_GRACE = 10.0   # seconds a run has to stop its daemon and write its results after SIGINT


def stop_run(proc: subprocess.Popen) -> None:
    """Ask a ``cosim run`` to stop as on Ctrl-C (it stops its daemon, keeps its results)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)   # once: a second one would cut its clean-up short
    _await_stop(proc)


def _await_stop(proc: subprocess.Popen) -> None:
    try:
        proc.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_status(run_dir: Path) -> str:
    """A point's status: its run's own (``metrics.json``: completed, failed, interrupted);
    "interrupted" too when the sweep stopped it before it wrote one; "failed" when it died
    before writing one; "not run" without a run directory."""
    if not run_dir.is_dir():
        return "not run"
    try:
        status = json.loads((run_dir / "metrics.json").read_text())["status"]
    except (OSError, ValueError, KeyError, TypeError):
        status = "failed"
    if status != "completed" and read_record(run_dir).get("stopped"):
        return "interrupted"
    return status


def read_record(run_dir: Path) -> dict[str, Any]:
    """A point's ``sweep.json`` ({} if it has none)."""
    try:
        return json.loads((run_dir / "sweep.json").read_text())
    except (OSError, ValueError):
        return {}


def write_record(run_dir: Path, point: Point, *, returncode: int | None, seconds: float | None,
                 error: str | None, energy: dict[str, float] | None) -> None:
    """``sweep.json``: what the sweep knows of a point's run beyond the run's own files."""
    (run_dir / "sweep.json").write_text(json.dumps(
        {"id": point.id, "origin": point.origin, "settings": point.settings, "returncode": returncode,
         "wall_seconds": seconds, "error": error, "energy_pj": energy, "host": socket.gethostname()},
        indent=1))


def _error(stderr: Path, code: int) -> str:
    """A failed run's error in one line, from its stderr: its last ``error:`` line and the last
    line (a traceback's exception), when they differ."""
    try:
        lines = [ln.strip() for ln in stderr.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        lines = []
    if not lines:
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}, no error output"
    said = [ln for ln in lines if ln.startswith("error:")]
    return " … ".join(dict.fromkeys([*said[-1:], lines[-1]]))


def _energy(run_dir: Path) -> dict[str, float] | None:
    """Energy per algorithm of a run's trace (``cosim energy``'s default model and link), in pJ;
    None without a usable trace."""
    from cosim.energy import EnergyError, account, load_model
    from cosim.trace import TraceError, TraceReader

    trace = run_dir / "trace.cosim"
    if not trace.is_file():
        return None
    try:
        report = account(TraceReader(trace), load_model(None), ENERGY_LINK)
    except (EnergyError, TraceError, OSError):
        return None
    return {alg: math.fsum(pj.values()) for alg, pj in report.by_algorithm().items()}


# ---- runners: where the points run ----------------------------------------------------------------

def cpu_count() -> int:
    """Cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class LocalRunner:
    """Points as subprocesses on this machine, ``jobs`` at a time (the threads only wait on them)."""

    def __init__(self, jobs: int, staging: Path) -> None:
        self.jobs = jobs
        self._staging = staging
        self._pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="sweep")
        self._live: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    def submit(self, point: Point) -> Future:
        """A future of the point's run directory (under the staging directory)."""
        self._staging.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=f"{point.id}.", dir=self._staging))
        return self._pool.submit(self._run, point, workdir)

    def _run(self, point: Point, workdir: Path) -> Path:
        holder: list[subprocess.Popen] = []

        def started(proc: subprocess.Popen) -> None:
            holder.append(proc)
            with self._lock:
                self._live.add(proc)
        try:
            return run_point(point, workdir, started=started)
        finally:
            with self._lock:
                self._live.difference_update(holder)

    def stop(self) -> None:
        """Stop every running point as on Ctrl-C (each keeps what it recorded)."""
        with self._lock:
            live = list(self._live)
        for proc in live:   # all at once, then wait: they stop in parallel
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in live:
            _await_stop(proc)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _ray_point(point: Point) -> bytes:
    """A Ray task: run ``point`` on whichever machine Ray picked; its run directory as a
    gzipped tar (the driver unpacks it into the sweep directory)."""
    with tempfile.TemporaryDirectory(prefix="cosim-sweep-") as tmp:
        run_dir = run_point(point, Path(tmp) / point.id)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(run_dir, arcname=point.id)
        return buf.getvalue()


class RayRunner:
    """Points as Ray tasks (one CPU each), ``jobs`` in flight (default: the cluster's CPUs).

    ``address``: ``local`` starts a new local instance (``jobs`` CPUs, no dashboard); ``auto``
    attaches to the running one (``RAY_ADDRESS``, else the latest local cluster), else starts
    one; anything else is a cluster address given to ``ray.init``. Workers need cosim installed
    and any ``.npz`` data set at the same path.
    """

    def __init__(self, address: str, jobs: int | None) -> None:
        import ray

        self._ray = ray
        options: dict[str, Any] = {"log_to_driver": False}   # the runs' output is in their directories
        if address == "local":
            options.update(address="local", num_cpus=jobs or cpu_count(), include_dashboard=False)
        elif address != "auto":
            options.update(address=address)
        ray.init(**options)
        self.jobs = jobs or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._task = ray.remote(num_cpus=1)(_ray_point)
        self._refs: dict[Future, Any] = {}

    def submit(self, point: Point) -> Future:
        """A future of the point's run directory as tar bytes."""
        ref = self._task.remote(point)
        future = ref.future()
        self._refs[future] = ref
        future.add_done_callback(lambda f: self._refs.pop(f, None))
        return future

    def stop(self) -> None:
        """Cancel every task in flight: a running one stops its run as on Ctrl-C."""
        for ref in list(self._refs.values()):
            self._ray.cancel(ref)

    def close(self) -> None:
        self._ray.shutdown()


# ---- the sweep ----------------------------------------------------------------------------------

class Runner(Protocol):
    """Where points run: :class:`LocalRunner` or :class:`RayRunner`."""

    jobs: int                                   # points in flight at most

    def submit(self, point: Point) -> Future: ...   # of a run directory: a Path, or tar bytes
    def stop(self) -> None: ...                 # stop every running point as on Ctrl-C
    def close(self) -> None: ...


@dataclass
class Outcome:
    """What a call of :func:`run_sweep` did."""

    completed: int = 0       # this time
    failed: int = 0
    skipped: int = 0         # completed before
    interrupted: bool = False


def time_left(durations: list[float], running: list[float], queued: int, jobs: int) -> float | None:
    """Seconds until the sweep ends, from the mean duration of finished points: what the running
    ones (``running``: seconds each has run) and the queued ones still need, over ``jobs``.

    >>> time_left([10.0, 20.0], running=[5.0], queued=3, jobs=2)
    27.5
    """
    if not durations:
        return None
    mean = sum(durations) / len(durations)
    return (sum(max(mean - r, 0.0) for r in running) + queued * mean) / jobs


def run_sweep(sweep: Sweep, resolved: dict[str, dict], root: Path, runner: Runner, console: Any) -> Outcome:
    """Run every point of ``sweep`` not yet completed under ``root``/runs with ``runner`` (a
    :class:`LocalRunner` or :class:`RayRunner`), showing progress on ``console``; then write the
    summary tables and plots. Ctrl-C stops the running points (they are re-run next time)."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from cosim.sweep_summary import write_summary

    runs, staging = root / "runs", root / ".staging"
    shutil.rmtree(staging, ignore_errors=True)   # attempts a killed sweep left behind
    todo = [p for p in sweep.points if run_status(runs / p.id) != "completed"]
    outcome = Outcome(skipped=len(sweep.points) - len(todo))
    if outcome.skipped:
        console.print(f"{outcome.skipped} of {len(sweep.points)} points already completed in {escape(str(runs))}")
    durations = _past_durations(runs, sweep.points)   # the first estimate, before any point ends here
    queue, flight = list(todo), {}   # future → (point, monotonic start)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[state]}"))
    # `kill` (a batch scheduler's too) stops the running points in order, as Ctrl-C does:
    # they run in sessions of their own and would outlive the sweep otherwise
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    with Progress(*columns, console=console, disable=not todo) as progress:
        bar = progress.add_task(sweep.name, total=len(todo), state="")
        try:
            while queue or flight:
                while queue and len(flight) < runner.jobs:
                    point = queue.pop(0)
                    flight[runner.submit(point)] = (point, time.monotonic())
                done, _ = wait(flight, timeout=1.0, return_when=FIRST_COMPLETED)
                for future in done:
                    point, began = flight.pop(future)
                    durations.append(time.monotonic() - began)
                    status = _land(future, point, runs, staging)
                    ok = status == "completed"
                    outcome.completed += ok
                    outcome.failed += not ok
                    progress.advance(bar)
                    console.print(_line(point, status, runs / point.id, durations[-1]))
                now = time.monotonic()
                left = time_left(durations, [now - b for _, b in flight.values()], len(queue), runner.jobs)
                progress.update(bar, state=f"{len(flight)} running, {outcome.failed} failed"
                                + (f", ~{_duration(left)} left" if left else ""))
        except KeyboardInterrupt:
            outcome.interrupted = True
            console.print("[yellow]interrupted[/]: stopping the running points; they run again next time")
            runner.stop()
            for future, (point, _) in flight.items():
                _land(future, point, runs, staging, stopped=True)
        finally:
            runner.close()
            signal.signal(signal.SIGTERM, previous)
    shutil.rmtree(staging, ignore_errors=True)
    write_summary(sweep, resolved, root)
    return outcome


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _land(future: Future, point: Point, runs: Path, staging: Path, *, stopped: bool = False) -> str:
    """Move a finished point's run directory (a path, or tar bytes from a Ray worker) to
    ``runs``/<point id>, replacing an earlier attempt; a task that raised leaves a directory
    with its error. ``stopped``: the sweep stopped it (recorded in sweep.json). The point's status."""
    try:
        result = future.result()
        run_dir = _unpack(result, staging) if isinstance(result, bytes) else result
    except Exception as exc:   # the task itself failed (a lost Ray worker, a full disk)
        staging.mkdir(parents=True, exist_ok=True)
        run_dir = Path(tempfile.mkdtemp(prefix=f"{point.id}.", dir=staging))
        last = (str(exc).strip().splitlines() or [""])[-1]
        write_record(run_dir, point, returncode=None, seconds=None, energy=None,
                     error=f"{type(exc).__name__}: {last}")
    dest = runs / point.id
    runs.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.move(run_dir, dest)
    if stopped:
        record = read_record(dest)
        (dest / "sweep.json").write_text(json.dumps({**record, "stopped": True}, indent=1))
    return run_status(dest)


def _unpack(data: bytes, staging: Path) -> Path:
    """A run directory sent as a gzipped tar, unpacked under ``staging``."""
    staging.mkdir(parents=True, exist_ok=True)
    into = Path(tempfile.mkdtemp(dir=staging))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(into, filter="data")   # no links out, no absolute paths: it came over a network
    (run_dir,) = into.iterdir()
    return run_dir


def _past_durations(runs: Path, points: Iterable[Point]) -> list[float]:
    """Wall times of points completed by earlier invocations."""
    out = []
    for p in points:
        seconds = read_record(runs / p.id).get("wall_seconds")
        if isinstance(seconds, (int, float)):
            out.append(float(seconds))
    return out


def _line(point: Point, status: str, run_dir: Path, seconds: float) -> str:
    """One finished point, as printed above the progress bar."""
    from rich.markup import escape

    from cosim.sweep_summary import final_gaps

    if status == "completed":
        gaps = ", ".join(f"{alg} {gap:.3e}" for alg, gap in final_gaps(run_dir).items())
        return f"[green]done[/] {point.id}  final gap {escape(gaps)}  {seconds:.1f} s"
    error = read_record(run_dir).get("error") or ""
    return f"[red]{status}[/] {point.id}: {escape(error)}"


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"
