"""The ``cosim`` command line.

    cosim run                                  # digits, softmax, HALP at 8 bits, emulated backend
    cosim run --algorithm svrg,halp,lpsgd --epochs 25 --out runs
    cosim run --config my-run.toml --bits 6    # flags override the file
    cosim accel --bind tcp://0.0.0.0:5555      # one machine ...
    cosim host --connect tcp://accel-box:5555  # ... and another
    cosim keys new keys/accel --name accel     # CurveZMQ key pairs, for a daemon off loopback:
    cosim accel --bind tcp://0.0.0.0:5555 --keys keys/accel --allow keys/clients
    cosim host --connect tcp://accel-box:5555 --keys keys/host --server-key keys/accel/accel.key
    cosim run --backend rtl                    # the RTL core, simulated, behind the same daemon
    cosim fpga-sim --bind udp://127.0.0.1:1234 # the simulated board alone (Etherbone over UDP)
    cosim trace show runs/<run>/trace.cosim
    cosim trace export runs/<run> --format csv # tables for pandas
    cosim replay runs/<run> [--backend rtl]    # re-send the requests, compare the replies bit for bit
    cosim energy runs/<run> [--link eth10g]    # energy by category, to a target gap
    cosim sweep bits.toml [--ray local]        # many runs from a grid, in parallel, resumable
    cosim reproduce [halp ...] [--size reduced] # published claims as sweeps, judged: report.md
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import signal
import tempfile
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from cosim.options import RUN_OPTIONS, SETTINGS, config_key, with_settings
from host.settings import TRAINING

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Host–accelerator co-simulation of low-precision training (HALP, SVRG, LP-SGD).")
trace_app = typer.Typer(no_args_is_help=True, help="Inspect run traces.")
app.add_typer(trace_app, name="trace")
keys_app = typer.Typer(no_args_is_help=True, help="CurveZMQ keys for a daemon served off loopback.")
app.add_typer(keys_app, name="keys")
# soft_wrap: paths and epoch lines stay whole when output goes to a file or a narrow pipe
console = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class UserError(Exception):
    """A mistake in what the user asked for: printed as one clear line, exit code 2."""


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


# ---- configuration --------------------------------------------------------------------

def _settable() -> set[str]:
    """Every setting a --config file (or a sweep point) may hold: training settings, run options."""
    return set(SETTINGS)


def _split_settable(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(settings a --config file may hold, values derived from them)."""
    keys = _settable()
    return ({k: v for k, v in config.items() if k in keys},
            {k: v for k, v in config.items() if k not in keys})


def load_config_file(path: Path) -> dict[str, Any]:
    """A TOML run config: keys are settings (cosim.options.SETTINGS) as config_key reads them;
    their values are checked by resolve."""
    from cosim.tomlfile import read_toml
    try:
        raw = read_toml(path, "config file")
    except ValueError as exc:
        raise UserError(str(exc)) from None
    known = _settable()
    out = {}
    for key, value in raw.items():
        k = config_key(key)
        if k not in known:
            raise UserError(f"config file {path}: unknown key {key!r}; valid keys: "
                            + ", ".join(sorted(known)))
        out[k] = value
    return out


def resolve(flags: dict[str, Any], config_file: Optional[Path],
            connect: Optional[str] = None) -> tuple[Any, dict[str, Any]]:
    """Defaults < config file < flags given on the command line → (TrainConfig, run settings).

    Without ``connect`` (a daemon cosim will launch) the run is checked against the chosen
    backend's capabilities here; with it, against the remote daemon's, after ``hello``.
    """
    from accel import backends

    merged: dict[str, Any] = load_config_file(config_file) if config_file else {}
    merged.update({k: v for k, v in flags.items() if v is not None})
    if isinstance(merged.get("algorithms"), str):
        merged["algorithms"] = tuple(a.strip() for a in merged["algorithms"].split(",") if a.strip())
    elif isinstance(merged.get("algorithms"), list):
        merged["algorithms"] = tuple(merged["algorithms"])   # anything else: TrainConfig.validate names it
    run = {s.name: merged.pop(s.name, s.default) for s in RUN_OPTIONS}
    try:
        for s in RUN_OPTIONS:
            s.check(run[s.name])
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if run["fpga"] is not None and run["backend"] != "rtl":
        raise UserError(f"--fpga names a board for the rtl backend; this run uses {run['backend']!r} "
                        "(add --backend rtl)")
    # The backend's capabilities, checked twice before anything heavy: what was typed, at once;
    # then with the data's defaults and width. (cosim host checks the remote ones in _train.)
    from host.algorithms import ACCELERATOR_ALGORITHMS

    algorithms = merged.get("algorithms", ("halp",))     # not a tuple: TrainConfig.validate names it
    on_accel = isinstance(algorithms, tuple) and any(a in ACCELERATOR_ALGORITHMS for a in algorithms)
    caps = backends.capabilities(run["backend"]) if on_accel and not connect else None
    if caps is not None:
        _check_typed_formats(caps, merged)
    from host.train import TrainConfig, check_capabilities

    try:
        cfg = TrainConfig(**merged)
        run["resolved"] = {**cfg.resolved(), **run}  # validates, and loads the data: a bad .npz is a user error here
        if caps is not None:
            check_capabilities(caps, run["resolved"])
    except (TypeError, ValueError) as exc:   # CapabilityError is a ValueError
        raise UserError(str(exc)) from None
    return cfg, run


def _check_typed_formats(caps: Any, merged: dict[str, Any]) -> None:
    """The formats and rounding given on the command line or in the file, against ``caps``.

    Runs before the data is loaded (and before host.train is imported), so the common mistake
    of a format the accelerator does not take costs a fraction of a second. What was not given
    takes a default rule and is checked with the data, in resolve()."""
    from protocol.capabilities import CapabilityError

    try:
        for role in ("offset", "acc", "data"):
            if merged.get(f"{role}_format") is not None:
                caps.check_format(role, merged[f"{role}_format"])
        if merged.get("rounding") is not None:
            caps.check_rounding("offset", merged["rounding"])
    except CapabilityError as exc:
        raise UserError(str(exc)) from None


# ---- the training commands --------------------------------------------------------------

def _fmt(v: Any, spec: str = ".3e") -> str:
    return "-" if v is None else format(v, spec)


def _print_epoch(r: dict) -> None:
    console.print(f"{r['algorithm']:>7} {r['epoch']:>5}  {_fmt(r['loss'], '.10f')}  "
                  f"{_fmt(r['gap'])}  {_fmt(r['grad_norm'])}  {r['bits']:>4}  {r['seconds']:8.2f}")


TARGET_GAP = 1e-10  # the accuracy the HALP claim is about; the plot marks it too


def _print_summary(records: list[dict]) -> None:
    """Per algorithm: final gap, first epoch at or below TARGET_GAP, wall time."""
    from cosim.results import by_algorithm

    for alg, rs in by_algorithm(records).items():
        if "test_accuracy" in rs[-1]:     # a network: no optimum to reach, its accuracy instead
            console.print(f"[bold]{alg:>7}[/]: final loss {rs[-1]['loss']:.4f}, test accuracy "
                          f"{rs[-1]['test_accuracy']:.4f} after {rs[-1]['epoch']} epochs, {rs[-1]['seconds']:.1f} s")
            continue
        hit = next((r["epoch"] for r in rs if r["gap"] <= TARGET_GAP), None)
        reached = f"gap ≤ {TARGET_GAP:g} at epoch {hit}" if hit is not None else f"gap > {TARGET_GAP:g}"
        console.print(f"[bold]{alg:>7}[/]: final gap {_fmt(rs[-1]['gap'])} after {rs[-1]['epoch']} "
                      f"epochs, {reached}, {rs[-1]['seconds']:.1f} s")


def _policy_costs(cfg: Any, resolved: dict[str, Any]) -> dict[str, dict[int, float]] | None:
    """For the energy policy: per accelerator algorithm, an epoch's energy per offset width by
    the default model of `cosim energy` (docs/energy.md)."""
    if cfg.policy != "energy":
        return None
    from cosim.energy import epoch_costs, load_model
    from host.algorithms import ACCELERATOR_ALGORITHMS

    model = load_model(None)
    return {a: epoch_costs(resolved, a, model) for a in cfg.algorithms if a in ACCELERATOR_ALGORITHMS}


def _train(cfg: Any, run: dict[str, Any], connect: Optional[str], curve: Any = None, *,
           restarts: int = 0, resume: Optional[Path] = None) -> None:
    """Run training against ``connect`` (with the client keys ``curve`` if it serves with keys) or
    a daemon launched here; write the results directory. A launched daemon that dies is replaced
    up to ``restarts`` times, the run going on from its last checkpoint; ``resume`` continues the
    run of that results directory from its checkpoint (``cosim.recovery``)."""
    import time

    from rich.markup import escape

    from cosim.launch import AcceleratorDied, failure_notice, ipc_address, watch
    from cosim.recovery import Recovery
    from cosim.results import ResultsDir
    from cosim.trace import TraceWriter
    from host.train import ACCELERATOR_ALGORITHMS, train
    from protocol.channel import AcceleratorGone

    resolved = run.pop("resolved")
    # mlp:256,128 → mlp-256-128: a directory name without characters other systems refuse
    name = run["name"] or f"{Path(cfg.dataset).stem}-{cfg.model}".replace(":", "-").replace(",", "-")
    settings, derived = _split_settable(resolved)
    needs_accel = any(a in ACCELERATOR_ALGORITHMS for a in cfg.algorithms)
    held = _preflight(connect, cfg.timeout, resolved, curve) if needs_accel and connect is not None else None
    try:
        if resume is None:
            results = ResultsDir.create(run["out"], name=name, config=settings, derived=derived)
            recovery = Recovery(results, TraceWriter(results.trace_path, config=resolved, seed=cfg.seed))
        else:
            recovery = Recovery.resume(resume, resume / "trace.cosim")
            results = recovery.results
    except (OSError, ValueError) as exc:   # TraceError is a ValueError
        if held is not None:
            held.close()      # the run will not start: the daemon is free for the next host at once
        _fail(f"cannot resume {resume}: {_os_error(exc)}" if resume else
              f"cannot create the results directory under {run['out']!r}: {_os_error(exc)}; "
              "choose another with --out")
    session = None
    if held is not None:
        # The run's own hello reopens the preflight's session: no other host takes the daemon before it.
        session = held.session
        held.close(end_session=False)
    trace, last = recovery.trace, recovery.last
    console.print(f"[bold]cosim[/] {', '.join(cfg.algorithms)} on {cfg.dataset}/{cfg.model}, "
                  f"{cfg.bits} bits, seed {cfg.seed} → {results.path}"
                  + (f" (resumed after {last.algorithm} epoch {last.epoch})" if last else ""))
    status, reference, accel, board, reported = "failed", None, None, None, False
    tmp = tempfile.TemporaryDirectory(prefix="cosim-")
    # SIGTERM (a scheduler, `kill`) stops a run as Ctrl-C does: results kept, daemon stopped.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with trace:
            def launch() -> str:
                nonlocal accel, board
                # A new daemon after a restart gets a fresh socket, beside the first one's.
                here = Path(tmp.name) if accel is None else Path(tempfile.mkdtemp(dir=tmp.name))
                address = (ipc_address(here) if run["transport"] == "ipc"
                           else "tcp://127.0.0.1:0")   # the daemon binds a free port and says which
                accel, board = _launch(run["backend"], run["fpga"], address, results.path)
                return accel.address

            if needs_accel and connect is None:
                connect = launch()
            console.print(f"[dim]{'algo':>7} {'epoch':>5}  {'loss':>12}  {'rel. gap':>9}  "
                          f"{'‖∇f‖':>9}  {'bits':>4}  {'time/s':>8}[/]")

            def on_epoch(record: Any) -> None:
                r = dataclasses.asdict(record)
                results.epoch(r)
                trace.epoch(r)
                _print_epoch(r)

            def on_start(algorithm: str) -> None:
                trace.mark("algorithm", name=algorithm)

            for restart in range(restarts + 1):
                try:
                    with watch(*(p for p in (accel, board) if p)) if accel else contextlib.nullcontext():
                        result = train(cfg, connect=connect, tap=trace.message, on_epoch=on_epoch,
                                       on_start=on_start, session=session, curve=curve, checkpoint=recovery.save,
                                       resume=recovery.last, costs=_policy_costs(cfg, resolved))
                    break
                except (AcceleratorDied, AcceleratorGone) as exc:
                    if accel is None or restart == restarts:
                        raise
                    notice = _stop_lost(accel, board, exc, cfg.timeout)
                    at = recovery.last
                    err.print(f"[yellow]restart {restart + 1} of {restarts}[/]: {escape(notice)}; starting a "
                              f"new daemon, going on " + (f"after {at.algorithm} epoch {at.epoch}" if at
                                                          else "from the start"))
                    started = time.perf_counter()
                    connect = launch()
                    recovery.rewind("restart", restart=restart + 1, reason=notice,
                                    relaunch_seconds=round(time.perf_counter() - started, 3))
            # The result's records are final: a network's gaps (host/deep.py fill_gaps) need every
            # algorithm's last loss, so its records arrived without them.
            results.rewind([dataclasses.asdict(r) for r in result.records])
            status = "completed"
            reference = result.reference_summary()
            results.write_config(*_split_settable({**result.config, **run}))
            results.save_weights(result.weights)
    except KeyboardInterrupt:
        status = "interrupted"
        err.print("[yellow]interrupted[/]: stopping the accelerator; partial results are kept")
    except AcceleratorDied as exc:
        reported = True
        err.print(f"[bold red]error:[/] {exc}")
    except Exception as exc:
        if not _is_user_facing(exc):
            raise
        # The client, or the daemon's bus, often notices a dead peer before the watcher does.
        notice = failure_notice(cfg.timeout, *(p for p in (board, accel) if p is not None))
        reported = True
        err.print(f"[bold red]error:[/] {notice or _os_error(exc)}")
    finally:
        signal.signal(signal.SIGTERM, previous)
        for proc in (accel, board):
            if proc is not None:
                proc.stop()
        tmp.cleanup()
        try:
            results.finish(status=status, reference=reference,
                           title=f"{cfg.dataset} / {cfg.model}, b = {cfg.bits}")
        except OSError as exc:   # the directory became unwritable, or the disk is full
            if not reported:
                err.print(f"[bold red]error:[/] {_os_error(exc)}")
            status = "failed"
    _print_summary(results.records)
    console.print(f"{status}: results in {results.path} (metrics.csv, metrics.json, "
                  f"convergence.png, trace.cosim)")
    if status != "completed":
        raise typer.Exit(130 if status == "interrupted" else 1)


def _stop_lost(accel: Any, board: Any, exc: Exception, timeout: float) -> str:
    """Stop a daemon (and board) the host lost; what happened to it, in one line."""
    from cosim.launch import failure_notice

    notice = failure_notice(timeout, *(p for p in (board, accel) if p is not None)) or str(exc)
    for proc in (accel, board):
        if proc is not None:
            proc.stop()
    return notice.split("; its last output")[0]


def _os_error(exc: Exception) -> str:
    """An error as one line; an OSError as its file and reason (no errno)."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc)


def _launch(backend: str, fpga: Optional[str], address: str, log_dir: Path) -> tuple[Any, Any]:
    """The daemon for ``backend`` serving ``address`` and, for rtl without ``fpga``, a simulated
    board in front of it: (daemon, board or None), their logs in ``log_dir``: accel.log, or
    accel-2.log, accel-3.log, … for the daemons after it (a restart, a resume), so a lost
    daemon's last words are kept."""
    from cosim.launch import AcceleratorProcess, BoardProcess

    tags = itertools.chain([""], (f"-{k}" for k in itertools.count(2)))
    tag = next(t for t in tags if not (log_dir / f"accel{t}.log").exists())
    board = None
    if backend == "rtl" and fpga is None:
        board = _start_board(BoardProcess, log_dir / f"board{tag}.log")
        fpga = board.address
    try:
        accel = AcceleratorProcess.start(address, backend=backend, fpga=fpga, log=log_dir / f"accel{tag}.log")
    except BaseException:
        if board is not None:
            board.stop()
        raise
    console.print(f"accelerator daemon pid {accel.pid} serving {backend} on {accel.address}"
                  + (f", board {fpga}" if fpga else ""))
    return accel, board


def _start_board(board_cls: Any, log: Path) -> Any:
    """The simulated board for an rtl run, with a note while the core builds the first time."""
    from cosim.launch import AcceleratorDied

    note = {"shown": False}

    def on_wait(seconds: float) -> None:
        if seconds > 3 and not note["shown"]:
            console.print("[dim]building the RTL core with Verilator (the first time only; later "
                          "runs use the cache)...[/]")
            note["shown"] = True
    try:
        board = board_cls.start(log=log, on_wait=on_wait)
    except AcceleratorDied as exc:
        _fail(str(exc), code=1)
    console.print(f"simulated board pid {board.pid} serving Etherbone on {board.address}")
    return board


def _preflight(connect: str, timeout: float, resolved: dict[str, Any], curve: Any = None) -> Any:
    """Ask the daemon at ``connect`` (with the client keys ``curve``, if any) what it accepts and
    check the run against it, before a results directory exists: a refused format is exit code
    2, an unreachable daemon 1. Returns the client with its session open, so that no other host
    can take the daemon before the run's own hello reopens it (``session=client.session``, then
    ``client.close(end_session=False)``); ``client.close()`` frees the daemon instead."""
    from host.client import AcceleratorClient
    from host.train import check_capabilities
    from protocol.capabilities import CapabilityError, KernelCapabilities
    from protocol.channel import AcceleratorError, AcceleratorGone

    try:
        client = AcceleratorClient(connect, timeout=timeout, curve=curve)
    except ValueError as exc:        # an address ZeroMQ cannot use: the user's to fix
        _fail(f"--connect: {exc}")
    try:
        try:
            caps = KernelCapabilities.from_message(client.hello())
            if caps is not None:     # a protocol 1.0 daemon announces no roles: it judges them at configure
                check_capabilities(caps, resolved)
        except BaseException:
            client.close()           # bye: the daemon is free for the next host at once
            raise
    except (AcceleratorError, AcceleratorGone) as exc:
        _fail(str(exc), code=1)
    except CapabilityError as exc:
        _fail(str(exc))
    return client


def _is_user_facing(exc: Exception) -> bool:
    """Errors that explain themselves (the accelerator refused or vanished or is too old for a
    request, a file could not be written) rather than a bug of ours, which keeps its traceback."""
    from host.client import Unsupported
    from protocol.channel import AcceleratorError, AcceleratorGone
    return isinstance(exc, (AcceleratorError, AcceleratorGone, Unsupported, OSError))


Opt = typer.Option


def run(
    ctx: typer.Context,
    config: Annotated[Optional[Path], Opt("--config", "-c", help="TOML file with any of these settings (flags override it).")] = None,
    connect: Annotated[Optional[str], Opt(help="Use a running accelerator daemon at this address instead of launching one.")] = None,
    keys: Annotated[Optional[Path], Opt("--keys", help="With --connect to a daemon serving with keys: this host's key pair, a directory holding NAME.key_secret (`cosim keys new`). Needs --server-key.")] = None,
    server_key: Annotated[Optional[Path], Opt("--server-key", help="With --keys: the daemon's public key file (its NAME.key).")] = None,
    resume: Annotated[Optional[Path], Opt(help="Continue the killed or interrupted run in this results directory (runs/<run>) from its last complete epoch, with its own settings.")] = None,
    **settings: Any,
) -> None:
    """Train with the host here and the accelerator daemon in its own process.

    Prints one line per epoch (loss, relative gap to the float64 optimum, gradient norm,
    bits, time) and writes runs/<name>-<timestamp>/ with config.toml, metrics.csv,
    metrics.json, convergence.png and the trace.
    """
    # settings: one flag per setting (cosim.options.SETTINGS, added by with_settings below),
    # None where not given.
    if ctx.info_name == "host" and connect is None:
        _fail("cosim host needs --connect ADDRESS of a running `cosim accel` "
              "(or use `cosim run`, which launches one)")
    if resume is not None:
        # --restarts may differ: how a run recovers does not change its results.
        given = [SETTINGS[k].option_names[0] for k, v in settings.items() if v is not None and k != "restarts"]
        if given or config:
            _fail("--resume continues a run with the settings in its directory; drop "
                  + ", ".join(given + (["--config"] if config else [])))
    try:
        if resume is not None:
            from cosim.recovery import resumable
            try:
                config = resumable(resume)
            except ValueError as exc:
                raise UserError(str(exc)) from None
        cfg, run_settings = resolve(settings, config, connect)
        curve = _client_keys(keys, server_key, connect)
    except UserError as exc:
        _fail(str(exc))
    _train(cfg, run_settings, connect, curve, restarts=run_settings["restarts"], resume=resume)


with_settings(run, TRAINING + RUN_OPTIONS)


def _client_keys(keys: Optional[Path], server_key: Optional[Path], connect: Optional[str]) -> Any:
    """The host's CurveZMQ keys from --keys and --server-key, or None (UserError for a wrong mix)."""
    if keys is None and server_key is None:
        return None
    if keys is None or server_key is None:
        raise UserError("--keys and --server-key go together: this host's key pair and the daemon's "
                        "public key")
    if connect is None:
        raise UserError("--keys and --server-key are for --connect to a daemon serving with keys; "
                        "a daemon cosim run launches itself needs none")
    from protocol.keys import client_keys
    try:
        return client_keys(keys, server_key)
    except ValueError as exc:
        raise UserError(str(exc)) from None


app.command("run")(run)
app.command("host", help="The host side alone, against a running `cosim accel` (--connect is required). "
                         "Takes the same training flags as `cosim run`.")(run)


@app.command()
def accel(
    bind: Annotated[str, Opt(help="Address to serve on: tcp://HOST:PORT (port 0: a free one, named in the line saying it serves) or ipc://PATH. Loopback by default; bind tcp://0.0.0.0:PORT to serve other machines.")] = "tcp://127.0.0.1:5555",
    backend: Annotated[str, Opt(help="Accelerator backend: emulated, or rtl (needs --fpga).")] = "emulated",
    fpga: Annotated[Optional[str], Opt(help="rtl backend: the board's Etherbone address udp://HOST:PORT (a LiteX board, or `cosim fpga-sim`).")] = None,
    count_ops: Annotated[bool, Opt("--count-ops", help="Emulated backend: report the operations it performs, counted one by one (slower), instead of the analytic counts.")] = False,
    lease: Annotated[Optional[float], Opt(help="Seconds a host's session may be idle before another host's hello may take the daemon over. Default 60.")] = None,
    keys: Annotated[Optional[Path], Opt("--keys", help="Serve with CurveZMQ (encrypted, authenticated): the daemon's key pair, a directory holding NAME.key_secret (`cosim keys new`). Needs --allow.")] = None,
    allow: Annotated[Optional[Path], Opt("--allow", help="With --keys: serve only the hosts whose public keys (NAME.key files) are in this directory.")] = None,
    insecure: Annotated[bool, Opt("--insecure", help="Serve a tcp address other machines can reach without keys (a network you trust).")] = False,
) -> None:
    """Serve the accelerator daemon until the host holding it sends shutdown (or Ctrl-C).

    Off loopback, serve with keys (--keys, --allow) or say --insecure.
    """
    from accel import backends

    if backend not in backends.names():
        _fail(f"unknown backend {backend!r}; available: {', '.join(backends.names())}")
    if lease is not None and not 0 < lease < float("inf"):
        _fail(f"--lease must be a number of seconds > 0, e.g. 60; got {lease}")
    if count_ops and backend != "emulated":
        _fail("--count-ops is a mode of the emulated backend")
    if (keys is None) != (allow is None):
        _fail("--keys and --allow go together: the daemon's key pair and the directory of its "
              "hosts' public keys")
    if keys is not None and insecure:
        _fail("--insecure is for serving without keys; drop it or --keys/--allow")
    from protocol.keys import server_keys
    try:
        options = _backend_options(backend, fpga, count_ops)
        curve = server_keys(keys, allow) if keys is not None else None
    except (UserError, ValueError) as exc:
        _fail(str(exc))
    from accel.bus import BusError
    from accel.daemon import serve
    from accel.spec import KernelError
    try:
        serve(bind, backend=backend, curve=curve, insecure=insecure,
              **({"lease": lease} if lease is not None else {}), **options)
    except KeyboardInterrupt:
        err.print("cosim accel: stopped")
    except (BusError, KernelError) as exc:
        _fail(f"the board at {fpga}: {exc}", code=1)
    except (OSError, ValueError) as exc:  # the address: malformed, in use, not ours to bind
        _fail(f"cannot serve on {bind}: {exc}")


def _backend_options(backend: str, fpga: Optional[str], count_ops: bool) -> dict[str, Any]:
    """The backend constructor's options from the command line (UserError for a wrong mix)."""
    if backend == "rtl":
        if fpga is None:
            raise UserError("the rtl backend needs --fpga udp://HOST:PORT: a LiteX board, or a simulated "
                            "one started with `cosim fpga-sim`")
        from accel.etherbone import parse_udp
        try:
            parse_udp(fpga)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        return {"fpga": fpga}
    if fpga is not None:
        raise UserError(f"--fpga is for the rtl backend, not {backend!r}")
    return {"counting": True} if count_ops else {}


@keys_app.command("new")
def keys_new(
    directory: Annotated[Path, typer.Argument(help="Where the key files go (created if need be).")],
    name: Annotated[str, Opt(help="File name: NAME.key (public: hand it out) and NAME.key_secret (keep it).")] = "cosim",
) -> None:
    """Write a CurveZMQ key pair (never overwriting one).

    The daemon's public key goes to its hosts (--server-key); each host's public key goes into
    the daemon's --allow directory.
    """
    from protocol.keys import new_keys
    try:
        public, secret = new_keys(directory, name)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    console.print(f"public key {public} (hand it out), secret key {secret} (keep it: readable by you only)")


@app.command("fpga-sim")
def fpga_sim(
    bind: Annotated[str, Opt(help="UDP address the simulated board answers Etherbone on: udp://HOST:PORT (port 0 picks a free one).")] = "udp://127.0.0.1:1234",
    waves: Annotated[Optional[Path], Opt(help="Write the waveforms of the whole session to this FST file (slower; for debugging).")] = None,
    saif: Annotated[Optional[Path], Opt(help="Write toggle activity (SAIF) of the whole session to this file, for activity-based energy.")] = None,
) -> None:
    """Run the RTL core under Verilator as a board on the network, reached like a LiteX board
    over Ethernet: `cosim accel --backend rtl --fpga udp://HOST:PORT` drives it. Builds the core
    the first time (cached afterwards). Stops on Ctrl-C or SIGTERM."""
    from accel.etherbone import parse_udp
    try:
        parse_udp(bind)
    except ValueError as exc:
        _fail(str(exc))
    from accel.rtl.board import serve_board
    from accel.rtl.build import RtlToolError
    try:
        serve_board(bind, waves=waves, saif=saif)
    except KeyboardInterrupt:
        err.print("cosim fpga-sim: stopped")
    except RtlToolError as exc:
        _fail(str(exc), code=1)


@app.command()
def replay(
    trace: Annotated[Path, typer.Argument(help="A trace.cosim file, or a results directory holding one.")],
    backend: Annotated[str, Opt(help="Backend to replay on: emulated, or rtl (a simulated board unless --fpga).")] = "emulated",
    fpga: Annotated[Optional[str], Opt(help="rtl backend: the board's Etherbone address udp://HOST:PORT.")] = None,
    timeout: Annotated[float, Opt(help="Seconds to wait for any reply (progress messages restart it).")] = 60.0,
) -> None:
    """Re-send a trace's requests to a fresh accelerator and compare every reply, bit for bit.

    Prints "identical: N requests, M replies, K bytes" (exit 0), or the first difference:
    message index, type, field, element, both values as numbers and bits (exit 1). An epoch
    report's work (timing, cycles) is not compared, nor the capabilities reply when the backend
    differs from the recorded one. A trace cut short by a crash replays up to its last record.
    """
    from accel import backends
    from cosim.launch import AcceleratorDied, ipc_address, watch
    from cosim.replay import formats_of, replay as run_replay
    from cosim.trace import TraceError, TraceReader
    from protocol.capabilities import CapabilityError
    from protocol.channel import AcceleratorGone

    if trace.is_dir():
        trace = trace / "trace.cosim"
    if not trace.is_file():
        _fail(f"{trace} is not a trace file; give a trace.cosim or a results directory holding one")
    try:
        if backend not in backends.names():
            raise UserError(f"unknown backend {backend!r}; available: {', '.join(backends.names())}")
        if fpga is not None:
            _backend_options(backend, fpga, False)      # rtl only, and a udp:// address
        records = list(TraceReader(trace))
    except UserError as exc:
        _fail(str(exc))
    except (TraceError, OSError) as exc:
        _fail(str(exc))
    caps = backends.capabilities(backend)
    for asked in formats_of(records):
        try:
            if "data_format" in asked:
                caps.check_run(data=asked["data_format"], offset=asked["offset_format"],
                               acc=asked["acc_format"], rounding=asked["rounding"],
                               n_features=asked.get("n_features"))
            else:
                caps.check_format("offset", asked["offset_format"])
        except CapabilityError as exc:
            _fail(f"the trace needs what the {backend} backend does not take: {exc}")
    with tempfile.TemporaryDirectory(prefix="cosim-replay-") as tmp:
        accel, board = _launch(backend, fpga, ipc_address(Path(tmp)), Path(tmp))
        from rich.progress import Progress
        try:
            with watch(*(p for p in (accel, board) if p)), Progress(console=err, transient=True) as bar:
                task = bar.add_task("replaying", total=None)
                report = run_replay(trace, accel.address, timeout=timeout, backend=backend,
                                    on_request=lambda done, total: bar.update(task, completed=done, total=total))
        except (AcceleratorDied, AcceleratorGone) as exc:
            _fail(str(exc), code=1)
        finally:
            for proc in (accel, board):
                if proc is not None:
                    proc.stop()
    for note in report.skipped:
        console.print(f"[dim]not compared: {note}[/]")
    if report.truncated or report.unanswered:
        console.print(f"[yellow]the trace stops early[/] (a crashed run): replayed its {report.requests} "
                      f"requests with a recorded reply" + (f"; {report.unanswered} request(s) without one "
                                                            "were not sent" if report.unanswered else ""))
    if report.identical:
        console.print(report.summary())
        return
    err.print(f"[bold red]{report.summary()}[/]")
    raise typer.Exit(1)


def _version(v: Any) -> str:
    """[1, 1] → "1.1"; a v1.0 trace's bare 1 → "1"."""
    return ".".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def _trace_file(file: Path) -> Path:
    """TRACE as given to the trace commands: a trace file, or a results directory holding one.
    What kind of file it is (a FIFO, a directory) is left to the reader, which never blocks."""
    from rich.markup import escape

    if not file.exists():
        _fail(f"{escape(str(file))} does not exist")
    if file.is_dir():
        if not (file / "trace.cosim").exists():
            _fail(f"{escape(str(file))} is a directory without a trace.cosim; give a trace file or a "
                  "results directory")
        file = file / "trace.cosim"
    return file


@trace_app.command("show")
def trace_show(
    file: Annotated[Path, typer.Argument(help="A trace.cosim file, or a results directory holding one.")],
    epochs: Annotated[bool, Opt(help="Also list every recorded epoch.")] = False,
) -> None:
    """Summarise a trace: header, messages by type and direction, bytes, op counts.

    A damaged trace is one error line naming the damaged record and its byte
    offset (exit code 2).
    """
    from rich.markup import escape
    from rich.table import Table

    from cosim.results import by_algorithm
    from cosim.trace import TraceError, summarize

    file = _trace_file(file)
    try:
        s = summarize(file)
    except TraceError as exc:
        _fail(escape(str(exc)))
    except OSError as exc:
        _fail(f"cannot read {escape(str(file))}: {exc.strerror or exc}")
    h = s["header"]
    cfg = h.get("config", {})
    console.print(f"[bold]{escape(str(file))}[/]: trace v{h.get('version')}, protocol "
                  f"{_version(h.get('protocol'))}, cosim {h.get('cosim')}, created {h.get('created')}, "
                  f"seed {h.get('seed')}")
    if acc := h.get("accelerator"):
        console.print(f"accelerator: {acc.get('backend')} backend, kernel spec {_version(acc.get('spec'))}, "
                      f"protocol {_version(acc.get('protocol'))}")
    if "libraries" in h:  # trace v2 on: the machine and the versions that decide the bits
        console.print(escape(f"machine: {h.get('cpu') or 'CPU unknown'}; " + ", ".join(
            f"{name} {version}" for name, version in h["libraries"].items())))
    console.print(escape("config: " + ", ".join(f"{k}={v}" for k, v in cfg.items())))
    t = Table("direction", "type", "messages", "bytes", title="messages")
    for (direction, typ), n in sorted(s["messages"].items()):
        t.add_row(direction, escape(typ), str(n), f"{s['bytes'][(direction, typ)]:,}")
    console.print(t)
    if s["ops"]:
        t = Table("operation", "count", title="accelerator operations (all epochs)")
        for op, n in sorted(s["ops"].items()):
            t.add_row(escape(op), f"{n:,}")
        console.print(t)
    if s["work"]:  # the accelerator's own measure, summed over its epoch reports
        console.print(escape("accelerator work (all epochs): " + ", ".join(
            f"{k} {v:,}" if isinstance(v, int) else f"{k} {v:.6g}" for k, v in s["work"].items())))
    for alg, es in by_algorithm(s["epochs"]).items():
        last = es[-1]
        console.print(f"{escape(alg)}: {len(es)} epochs recorded, final gap {_fmt(last.get('gap'))}, "
                      f"bits {last.get('bits')}")
        if epochs:
            for e in es:
                _print_epoch(e)
    console.print(f"span {s['seconds']:.2f} s" + ("; [yellow]truncated[/]: the run stopped mid-record"
                                                  if s["truncated"] else ""))


@trace_app.command("export")
def trace_export(
    file: Annotated[Path, typer.Argument(help="A trace.cosim file, or a results directory holding one.")],
    fmt: Annotated[str, Opt("--format", "-f", help="parquet or csv.")] = "parquet",
    out: Annotated[Optional[Path], Opt(help="Directory to write the tables into (created if missing; "
                                            "same-named files are replaced). Default: the trace's directory.")] = None,
) -> None:
    """Write a trace's messages, epochs and operation counts as tables (parquet or csv).

    One row per record, in trace-messages, trace-epochs and trace-ops (.parquet
    or .csv) in --out:

    messages: index, offset, t, stamped_by, dir, type, seq, bytes
    epochs:   index, offset and each scalar field of the epoch record (gap ...)
    ops:      index, algorithm, epoch, op, count (per epoch record and operation)

    index: the record's place in the trace (0 = the header); offset: its byte
    offset; t: seconds on the monotonic clock of the side named by stamped_by;
    bytes: the message's size on the wire.

    A damaged trace is one error line naming the damaged record (exit code 2)
    and nothing is written; a torn last record (a crashed run) is exported up
    to the tear.
    """
    from rich.markup import escape

    from cosim.trace import EXPORT_FORMATS, TraceError, TraceTables

    if fmt not in EXPORT_FORMATS:
        _fail(f"unknown format {fmt!r}; choose {' or '.join(EXPORT_FORMATS)}")
    file = _trace_file(file)
    out = file.parent if out is None else out
    try:
        tables = TraceTables.read(file)
    except TraceError as exc:
        _fail(escape(str(exc)))
    except OSError as exc:
        _fail(f"cannot read {escape(str(file))}: {exc.strerror or exc}")
    try:
        paths = tables.write(out, fmt)
    except OSError as exc:
        _fail(f"cannot write the tables into {escape(str(out))}: {exc.strerror or exc}; choose "
              "another directory with --out")
    console.print(f"{tables.messages.num_rows} messages, {tables.epochs.num_rows} epochs, "
                  f"{tables.ops.num_rows} op counts → " + ", ".join(escape(str(p)) for p in paths))
    if tables.truncated:
        console.print("[yellow]truncated[/]: the run stopped mid-record; exported up to the tear")


@app.command()
def energy(
    traces: Annotated[list[Path], typer.Argument(help="trace.cosim files, or results directories holding one.")],
    model: Annotated[Optional[Path], Opt(help="TOML file overriding any value of the energy model (docs/energy.md); the report lists what it overrode.")] = None,
    link: Annotated[str, Opt(help="Host–accelerator link: pcie3x8 (default), eth10g, or one the model file defines.")] = "pcie3x8",
    target_gap: Annotated[float, Opt(help="Relative loss gap at which each algorithm's energy is compared.")] = TARGET_GAP,
    json_path: Annotated[Optional[Path], Opt("--json", help="Also write the whole report (model, items, every epoch) as JSON.")] = None,
    png: Annotated[Optional[Path], Opt(help="Also draw stacked bars per run and algorithm, and energy against relative gap.")] = None,
) -> None:
    """Energy of recorded runs: accelerator arithmetic and memories, host float64 work, link.

    Prices the operations, memory traffic and message bytes a trace records
    with published figures (Horowitz, ISSCC 2014, 45 nm; links: docs/energy.md)
    and reports per algorithm the energy to reach --target-gap and its ratio
    to the cheapest.
    """
    from rich.markup import escape

    from cosim.energy import EnergyError, account, load_model, plot, print_reports, run_name, write_json
    from cosim.trace import TraceError, TraceReader

    if not 0 < target_gap < float("inf"):
        _fail(f"--target-gap must be a finite number > 0; got {target_gap}")
    files = [t / "trace.cosim" if t.is_dir() else t for t in traces]
    for given, f in zip(traces, files):
        if not f.is_file():
            _fail(f"{escape(str(given))} is not a trace file; give a trace.cosim or a results directory holding one")
    try:
        energy_model = load_model(model)
        reports = [account(TraceReader(f), energy_model, link, name=run_name(f)) for f in files]
    except (EnergyError, TraceError) as exc:
        _fail(escape(str(exc)))
    except OSError as exc:
        _fail(f"cannot read {escape(str(exc.filename))}: {exc.strerror or exc}")
    print_reports(reports, energy_model, target_gap, console)
    try:
        if json_path is not None:
            write_json(json_path, reports, energy_model, target_gap)
            console.print(f"wrote {escape(str(json_path))}")
        if png is not None:
            plot(png, reports, target_gap)
            console.print(f"wrote {escape(str(png))}")
    except OSError as exc:
        _fail(f"cannot write {escape(str(exc.filename))}: {exc.strerror or exc}")


def _resolve_point(settings: dict[str, Any]) -> dict[str, Any]:
    """A sweep point's settings resolved as `cosim run` resolves them (ValueError if refused)."""
    try:
        return resolve(settings, None)[1]["resolved"]
    except UserError as exc:
        raise ValueError(str(exc)) from None


def _runner(ray: Optional[str], jobs: Optional[int], root: Path) -> Any:
    """The runner of a sweep directory: local processes, or Ray tasks with --ray (exit 1 if Ray
    is missing or unreachable)."""
    from rich.markup import escape

    from cosim.sweep import LocalRunner, RayRunner, cpu_count

    if ray is None:
        return LocalRunner(jobs or cpu_count(), root / ".staging")
    try:
        return RayRunner(ray, jobs)
    except ImportError:
        _fail("--ray needs the ray package: pip install 'ray>=2.9'", code=1)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        _fail(f"cannot start or reach Ray at {escape(ray)}: {escape(str(exc))}", code=1)


@app.command()
def sweep(
    file: Annotated[Path, typer.Argument(help="The sweep file (TOML; the format is above and in docs/sweep.md).")],
    out: Annotated[Optional[str], Opt(help="Where sweep directories go. Default: the file's `out`, else ./sweeps.")] = None,
    jobs: Annotated[Optional[int], Opt("--jobs", "-j", help="Points run at once. Default: the file's `jobs`, else the number of cores (with --ray: the cluster's CPUs).")] = None,
    ray: Annotated[Optional[str], Opt("--ray", help="Run the points as Ray tasks: local (a new local instance), auto (the running one, else a new one) or a cluster address.")] = None,
    dry_run: Annotated[bool, Opt("--dry-run", help="Check the file and list the points; run nothing.")] = False,
) -> None:
    """Run many configurations from one TOML file, in parallel, resumably.

    \\[base] holds the settings every point shares, \\[grid] the values to sweep
    (their cartesian product), each \\[\\[points]] one more point merged over
    \\[base]. Keys are those of a `cosim run --config` file (every `cosim run`
    flag but --out, --name, --connect); at the top: name (default: the
    file's name), out, jobs.

        name = "bits-vs-algorithm"
        \\[base]
        dataset = "digits"
        epochs = 10
        \\[grid]
        algorithm = \\["halp", "lpsgd"]
        bits = \\[4, 8]
        seed = \\[0, 1]
        \\[\\[points]]
        algorithm = "svrg"

    Every point is checked before any runs (a bad one: one error line, exit
    2). Each runs as `cosim run` in its own process and is an ordinary run
    directory OUT/NAME/runs/<point id>/, the id naming what varies plus a
    hash of all its settings. Run again, a sweep skips completed points.
    OUT/NAME/summary.csv and summary.parquet hold a row per point and
    algorithm: settings, status, error, final gap, epochs to each gap
    1e-2 … 1e-10, times, operation counts, energy; gap-vs-bits.png,
    epochs-to-target.png and pareto.png plot them. Exit code 0 when every
    point completed, 1 when any failed, 130 when interrupted.
    """
    from rich.markup import escape

    from cosim.sweep import SweepError, check_points, read_sweep, run_sweep

    try:
        spec = read_sweep(file, _settable(), config_key)
        resolved = check_points(spec, _resolve_point)
    except SweepError as exc:
        _fail(escape(str(exc)))
    jobs = jobs if jobs is not None else spec.jobs
    if jobs is not None and jobs < 1:
        _fail(f"--jobs must be at least 1; got {jobs}")
    root = Path(out or spec.out or "sweeps") / spec.name
    note = f" ({spec.duplicates} duplicate(s) dropped)" if spec.duplicates else ""
    if dry_run:
        console.print(f"[bold]{escape(spec.name)}[/]: {len(spec.points)} points{note} → {escape(str(root))}")
        for p in spec.points:
            console.print(f"  {p.id}  [dim]{escape(p.origin)}:[/] {escape(p.describe())}")
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        (root / "sweep.toml").write_bytes(file.read_bytes())   # what this sweep directory holds
    except OSError as exc:
        _fail(f"cannot create the sweep directory {escape(str(root))}: {exc.strerror or exc}; "
              "choose another with --out")
    runner = _runner(ray, jobs, root)
    console.print(f"[bold]cosim sweep[/] {escape(spec.name)}: {len(spec.points)} points{note}, "
                  f"{runner.jobs} at a time{' on Ray' if ray else ''} → {escape(str(root))}")
    outcome = run_sweep(spec, resolved, root, runner, console)
    console.print(f"{outcome.completed} completed, {outcome.failed} failed, {outcome.skipped} completed "
                  f"before; summary in {escape(str(root / 'summary.csv'))} (and .parquet, PNGs)")
    if outcome.interrupted:
        raise typer.Exit(130)
    if outcome.failed:
        raise typer.Exit(1)


@app.command()
def reproduce(
    claims: Annotated[Optional[list[str]], typer.Argument(help="Claims by name or number (default: all): 1 halp, 2 floor, 3 rounding, 4 accumulation, 5 policy.", show_default=False)] = None,
    size: Annotated[str, Opt(help="full: the claim as stated; reduced: few points and epochs (the CI check, about a minute).")] = "full",
    out: Annotated[str, Opt(help="The report goes to OUT/reproduce/report.md, each claim's sweep to OUT/reproduce/<claim>/.")] = "sweeps",
    jobs: Annotated[Optional[int], Opt("--jobs", "-j", help="Points run at once. Default: the number of cores (with --ray: the cluster's CPUs).")] = None,
    ray: Annotated[Optional[str], Opt("--ray", help="Run the points as Ray tasks: local, auto or a cluster address (as cosim sweep).")] = None,
) -> None:
    """Run published low-precision training claims as sweeps and judge each.

    1 halp: HALP at 8 bits converges at SVRG's rate, LP-SGD and LP-SVRG
    stall (De Sa et al. 2018); 2 floor: LP-SGD's floor falls with b; 3
    rounding: nearest-even stalls at few bits, stochastic does not (Gupta et
    al. 2015); 4 accumulation: fp16 / (1,6,9) sums of ones stall at 2048 /
    1024, chunk 64 stays exact to 65536 (Wang et al. 2018); 5 policy: the
    adaptive policy beats fixed 16 bits in bit_ops. Each sweep is resumable
    (rerun: completed points are kept). Writes OUT/reproduce/report.md with
    a table, a PNG and holds / does not hold per claim (docs/reproduce.md).
    Exit code 0 when everything ran (whatever the verdicts), 1 when a run
    failed, 2 for bad arguments, 130 when interrupted.
    """
    from rich.markup import escape

    from cosim.reproduce import SIZES, reproduce as run_claims, select, write_report
    from cosim.sweep import check_points, read_sweep

    try:
        chosen = select(claims or [])
    except ValueError as exc:
        _fail(escape(str(exc)))
    if size not in SIZES:
        _fail(f"--size: one of {', '.join(SIZES)}; got {size!r}")
    if jobs is not None and jobs < 1:
        _fail(f"--jobs must be at least 1; got {jobs}")

    def load(path: Path) -> tuple[Any, dict[str, dict]]:
        spec = read_sweep(path, _settable(), config_key)
        return spec, check_points(spec, _resolve_point)

    results, outcome = run_claims(chosen, size, Path(out), load, lambda root: _runner(ray, jobs, root), console)
    report = write_report(results, size, Path(out) / "reproduce" / "report.md")
    held = sum(bool(r.verdict and r.verdict.holds) for r in results)
    console.print(f"{held} of {len(results)} claims hold; report in {escape(str(report))}")
    if outcome.interrupted:
        raise typer.Exit(130)
    if outcome.failed:
        raise typer.Exit(1)


def main() -> None:
    app()
