"""The host's training entry point: resolve a config, compute the reference, run each algorithm.

Example (the embedded default: digits, softmax, HALP at 8 bits, through a running daemon)::

    >>> result = train(TrainConfig(algorithms=("svrg", "halp", "lpsgd")), connect="ipc:///tmp/accel.sock",
    ...                on_epoch=lambda r: print(r.algorithm, r.epoch, r.gap))
    >>> result.weights["halp"].shape
    (65, 10)

``sgd`` and ``svrg`` run here in float64; ``lpsgd``, ``lpsvrg`` and ``halp`` drive the
accelerator daemon at ``connect`` (one configure + data load per algorithm, one session).
Default hyperparameters follow documented rules (``docs/host.md``), never per-data-set values.
A network (``model`` mlp:W[,W...] or cnn) goes to ``host.deep.train_net``: sgd and svrg here,
mixed, lpsgd and halp through the daemon at ``connect``; the result is a ``host.deep.NetResult``.

A run continues from where it stopped: ``checkpoint`` gets a :class:`Checkpoint` after every
epoch, and ``train(cfg, connect=other, resume=that_checkpoint)`` carries on from it (a new
daemon gets the lost one's state through ``restore``) to bit-identical weights::

    >>> train(cfg, connect=new_address, resume=last, checkpoint=saved.append)
"""
from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Callable, Mapping

import numpy as np
from threadpoolctl import threadpool_limits

from host.algorithms import ACCELERATOR_ALGORITHMS, HOST_ALGORITHMS
from host.client import AcceleratorClient
from host.datasets import BUILTIN_TASKS, Dataset, check_pairing, load_dataset
from host.models import MODELS, Objective, fp64_ops
from host.optimizers import epoch_order, sgd_epoch, svrg_epoch
from host.reference import Reference, reference_optimum, relative_gap
from host.scheduler import (History, Policy, UpdateStatistics, check_peer, halp_mu, make_policy,
                            needs_statistics)
from host.settings import TRAINING, fields_of
from protocol.capabilities import CapabilityError, KernelCapabilities
from protocol.codec import Limits
from protocol.formats import FixedFormat, Format, parse_format
from protocol.keys import ClientKeys
from protocol.messages import State


def _available_memory() -> int:
    """Bytes the kernel could give this process now (MemAvailable: free memory plus the page
    cache it can drop); free memory alone where /proc/meminfo is missing."""
    try:
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        return kib * 1024
    except (OSError, StopIteration, ValueError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _check_memory(rows: int, cols: int) -> None:
    """Refuse a synthetic data set that cannot be generated here, before allocating it: the
    generator peaks at two float64 copies of the n × d matrix (docs/host.md)."""
    need = 2 * 8 * rows * cols
    available = _available_memory()
    if need > available:
        raise ValueError(f"samples: {rows} × {cols} float64 values need {need / 2**30:.1f} GiB to generate; "
                         f"this machine has {available / 2**30:.1f} GiB available; lower samples or features")


@fields_of(TRAINING)
class TrainConfig:
    """Every training setting (declared in host/settings.py); the defaults are the embedded
    default run, ``None`` = by rule."""

    def validate(self) -> None:
        """Raise ValueError naming the bad setting and what it accepts: each setting alone as
        declared, then the rules between settings."""
        for setting in TRAINING:
            setting.check(getattr(self, setting.name))
        if is_network(self.model):
            _check_network(self)
            return
        if "mixed" in self.algorithms:
            raise ValueError(f"algorithms: mixed trains networks (model mlp:W[,W...]); got model {self.model!r}")
        if self.sync_every != 1:
            raise ValueError(f"sync_every: applies to mixed, which trains networks (model mlp:W[,W...]); leave it "
                             f"at 1 for model {self.model!r}; got {self.sync_every}")
        if self.dataset in BUILTIN_TASKS:
            check_pairing(self.dataset, BUILTIN_TASKS[self.dataset], self.model)
        if self.dataset.startswith("synthetic_"):
            _check_memory(self.samples, self.features + 1)
        if "halp" in self.algorithms and self.mu is None and self.l2 == 0:
            raise ValueError("mu: HALP's default μ = 10λ needs l2 > 0; set mu explicitly; got None")
        for algo in self.algorithms:
            if algo in ACCELERATOR_ALGORITHMS:
                make_policy(self.policy, algo)
        # Which formats the accelerator takes is its capabilities' business (check_capabilities).
        offset = parse_format(self.offset_format) if self.offset_format else FixedFormat(1, self.bits - 1)
        if self.policy in ("adaptive", "dps", "gradstats", "energy") and not isinstance(offset, FixedFormat):
            raise ValueError(f"offset_format: the {self.policy} policy changes fixed-point offset formats "
                             f"only; got {self.offset_format!r}")

    def resolved(self) -> dict[str, Any]:
        """Every setting with the rule-based defaults filled in (loads the data set, so it
        can fail on a bad .npz). ``train()``'s result adds the reference-dependent values."""
        self.validate()
        if is_network(self.model):
            from host.deep import resolve
            return {**asdict(self), **resolve(self)}
        return _resolve_rules(self, *_problem(self))


def is_network(model: str) -> bool:
    """Whether ``model`` names a network (host/nets.py: mlp:W[,W...] or cnn), not a linear model."""
    return model not in MODELS


def _check_network(cfg: TrainConfig) -> None:
    """The rules between settings for a network (host/deep.py resolves the rest)."""
    if cfg.dataset in BUILTIN_TASKS and BUILTIN_TASKS[cfg.dataset] == "regression":
        raise ValueError(f"model: a network classifies; {cfg.dataset!r} is a regression data set")
    if "lpsvrg" in cfg.algorithms:
        raise ValueError("algorithms: networks train with sgd, svrg (host, float64), mixed, lpsgd and halp "
                         f"(accelerator); got {', '.join(cfg.algorithms)}")


@dataclass
class EpochRecord:
    algorithm: str
    epoch: int                  # 0 = the starting point
    loss: float
    gap: float                  # relative loss gap to the reference optimum
    grad_norm: float            # ‖∇f(w)‖₂ at the end of the epoch
    bits: int                   # width of the offset format (64 on the host)
    offset_format: str
    seconds: float              # wall time since this algorithm's epoch 0 (configure and load excluded)
    ops: dict = field(default_factory=dict)
    saturations: int = 0
    scale: float | None = None  # the accelerator's offset scale during the epoch
    host_ops: dict = field(default_factory=dict)  # the host's float64 operations for this epoch
    decision: str = ""          # why the policy changed the offset format before this epoch


@dataclass
class TrainResult:
    records: list[EpochRecord]
    reference: Reference
    weights: dict[str, np.ndarray]
    config: dict[str, Any]      # the resolved config: every default filled in

    def reference_summary(self) -> dict[str, Any]:
        """The reference optimum without its weights: what a results file records."""
        return {"loss": self.reference.loss, "grad_norm": self.reference.grad_norm,
                "method": self.reference.method, "max_abs_w": float(np.max(np.abs(self.reference.w)))}


@dataclass
class Checkpoint:
    """Where a run continues from: after epoch ``epoch`` (0 = the starting point) of ``algorithm``.

    Everything the outer loop holds at the start of the next epoch, as plain values (cosim keeps
    it on disk). For the accelerator's algorithms ``accel`` is the daemon's state as fetched after
    the epoch, None at epoch 0 (what configure and load leave: nothing to restore). A network's
    run (host/deep.py) keeps its NetRecords, ``w`` and ``saturated_epochs`` only: its daemon
    state is ``w`` itself (configure_net).
    """

    algorithm: str
    epoch: int
    records: list                         # every record so far, this epoch's included: EpochRecord or NetRecord
    weights: dict[str, np.ndarray]        # the final weights of the algorithms before this one
    seconds: float                        # this algorithm's wall time so far (EpochRecord.seconds)
    w: np.ndarray                         # the weights (HALP: the anchor w̃) after the epoch
    fmt: str = "fp64"                     # the offset format the epoch ran in
    norms: list[float] = field(default_factory=list)    # ‖∇f‖ after epochs 0 … epoch
    rates: list[float] = field(default_factory=list)    # saturation rates of epochs 1 … epoch
    saturated_epochs: int = 0
    accel: State | None = None
    stats: list[UpdateStatistics | None] = field(default_factory=list)   # the epochs' update statistics


def still_to_run(algorithms, resume: Checkpoint | None) -> list[str]:
    """``algorithms`` from the one ``resume`` stopped in on (all of them without a checkpoint);
    ValueError when the run does not have that algorithm."""
    algorithms = list(algorithms)
    if resume is None:
        return algorithms
    if resume.algorithm not in algorithms:
        raise ValueError(f"the checkpoint is of algorithm {resume.algorithm!r}, which this run does not have")
    return algorithms[algorithms.index(resume.algorithm):]


def run_log(resume: Checkpoint | None, on_epoch: Callable[[Any], None] | None) -> tuple[list, dict, Callable]:
    """What a run starts from: its records and finished algorithms' weights (a resumed run's are
    its checkpoint's), and ``emit(record)``, which appends a record and passes it to ``on_epoch``."""
    records: list = list(resume.records) if resume else []
    weights: dict[str, np.ndarray] = dict(resume.weights) if resume else {}

    def emit(record: Any) -> None:
        records.append(record)
        if on_epoch:
            on_epoch(record)
    return records, weights, emit


def saver(checkpoint: Callable[[Checkpoint], None] | None, algo: str, records: list,
          weights: dict[str, np.ndarray]) -> Callable[..., None]:
    """``save(epoch, started, w, **loop)``: ``checkpoint`` gets the :class:`Checkpoint` after
    ``algo``'s epoch, with ``records`` and ``weights`` as they are then (nothing without one)."""
    def save(epoch: int, started: float, w: np.ndarray, **loop: Any) -> None:
        if checkpoint:
            checkpoint(Checkpoint(algo, epoch, list(records), dict(weights), time.perf_counter() - started, w, **loop))
    return save


def default_data_format(max_abs: float, bits: int) -> FixedFormat:
    """fixed<IL, b−IL> with the smallest IL whose range holds max|x| (digits/16 → fixed<2,6>)."""
    for il in range(1, bits + 1):
        fmt = FixedFormat(il, bits - il)
        if fmt.max_value >= max_abs:
            return fmt
    raise ValueError(f"max|x| = {max_abs:g} does not fit any {bits}-bit fixed-point format; "
                     f"scale the data or raise bits")


def check_capabilities(caps: KernelCapabilities, resolved: dict[str, Any]) -> None:
    """Raise :class:`CapabilityError` (one line naming role, format and the accepted choices)
    unless the accelerator accepts the resolved run's sizes, formats, rounding, problem and widths;
    for a network, unless it runs networks."""
    if is_network(resolved["model"]):
        if "max_net_params" not in caps.limits:
            raise CapabilityError("model", f"the {caps.backend} backend does not run networks "
                                           f"({resolved['model']}); use the emulated backend")
        return
    caps.check_sizes(resolved["n_samples"], resolved["n_features"], resolved["n_outputs"])
    caps.check_run(data=resolved["data_format"], offset=resolved["offset_format"],
                   acc=resolved["acc_format"], rounding=resolved["rounding"],
                   n_features=resolved["n_features"], problem=resolved["model"])


def _problem(cfg: TrainConfig) -> tuple[Dataset, Objective]:
    ds = load_dataset(cfg.dataset, samples=cfg.samples, features=cfg.features, condition=cfg.condition,
                      classes=cfg.classes,
                      seed=cfg.seed)
    return ds, Objective(cfg.model, ds.x, ds.y, cfg.l2, ds.outputs_for(cfg.model))


def _resolve_rules(cfg: TrainConfig, ds: Dataset, obj: Objective) -> dict[str, Any]:
    """Every setting, with the rule-based defaults that need only the data filled in."""
    resolved = asdict(cfg)
    resolved["algorithms"] = list(cfg.algorithms)
    resolved.update(
        step_size=cfg.step_size if cfg.step_size is not None else 0.5 / obj.smoothness(),
        mu=cfg.mu if cfg.mu is not None else 10.0 * cfg.l2,
        mu_rule=cfg.mu_rule or "widen",
        inner_steps=cfg.inner_steps if cfg.inner_steps is not None else obj.n_samples,
        data_format=repr(parse_format(cfg.data_format) if cfg.data_format
                         else default_data_format(float(max(obj.x.max(), -obj.x.min())), cfg.bits)),
        offset_format=repr(parse_format(cfg.offset_format) if cfg.offset_format else FixedFormat(1, cfg.bits - 1)),
        acc_format=repr(parse_format(cfg.acc_format)),
        policies={a: type(make_policy(cfg.policy, a)).__name__
                  for a in cfg.algorithms if a in ACCELERATOR_ALGORITHMS},
        smoothness=obj.smoothness(),
        n_samples=obj.n_samples, n_features=obj.n_features, n_outputs=obj.n_outputs,
        preprocessing=ds.preprocessing,
    )
    if cfg.batch_size > obj.n_samples:
        raise ValueError(f"batch_size: at most the {obj.n_samples} samples of {cfg.dataset}; "
                         f"got {cfg.batch_size}")
    # Every epoch's sample order travels as one uint32 tensor, in the frames a message has
    # beside its header; refuse here what the accelerator would refuse after the run has started.
    limits = Limits()
    most = min(limits.max_tensor_bytes, (limits.max_frames - 1) * limits.max_frame_bytes) // 4
    per_epoch = resolved["inner_steps"] * cfg.batch_size
    if per_epoch > most:
        raise ValueError(f"inner_steps × batch_size = {per_epoch} sample indices per epoch exceed "
                         f"the protocol's {most} per message; lower either")
    return resolved


def train(cfg: TrainConfig, *, connect: str | None, tap: Callable[..., Any] | None = None,
          session: str | None = None, curve: ClientKeys | None = None,
          on_epoch: Callable[[EpochRecord], None] | None = None,
          on_start: Callable[[str], None] | None = None,
          checkpoint: Callable[[Checkpoint], None] | None = None,
          resume: Checkpoint | None = None,
          costs: Mapping[str, Mapping[int, float]] | None = None) -> TrainResult:
    """Run every algorithm of ``cfg`` in turn; see the module docstring.

    ``tap``, ``session`` and ``curve`` go to the protocol client (a trace writer; a fixed session
    id makes two runs' traces comparable; the keys of a daemon serving with them). ``on_start(algorithm)`` runs before each algorithm's
    first message; ``on_epoch(record)`` after every epoch, epoch 0 being the starting point;
    ``checkpoint(ck)`` after each on_epoch. With ``resume`` (a checkpoint of a run of the same
    ``cfg``) the run continues after it: its records are in the result but not passed to
    ``on_epoch`` again, and ``on_start`` is not called for the algorithm it was in. ``costs``: per
    accelerator algorithm, an epoch's cost per offset width (``cosim.energy.epoch_costs``), which the
    ``energy`` policy compares; without them it weighs the operations by width.
    """
    cfg.validate()
    still_to_run(cfg.algorithms, resume)       # a checkpoint of another run: refused before any work
    if is_network(cfg.model):
        return _train_network(cfg, connect=connect, tap=tap, session=session, curve=curve, on_epoch=on_epoch,
                              on_start=on_start, checkpoint=checkpoint, resume=resume)
    # One BLAS thread: BLAS splits its reductions by thread, so the float64 bits of a run would
    # depend on the machine's core count; and idle BLAS threads busy-wait, taking the core that
    # an accelerator daemon on the same machine needs (a digits HALP epoch: 5 ms, or 20 with them).
    with threadpool_limits(1):
        return _train(cfg, connect=connect, tap=tap, session=session, curve=curve, on_epoch=on_epoch,
                      on_start=on_start, checkpoint=checkpoint, resume=resume, costs=costs or {})


def _train_network(cfg: TrainConfig, *, connect: str | None, tap: Callable[..., Any] | None,
                   session: str | None, curve: ClientKeys | None,
                   on_epoch: Callable[[Any], None] | None, on_start: Callable[[str], None] | None,
                   checkpoint: Callable[[Checkpoint], None] | None, resume: Checkpoint | None) -> Any:
    """A network's run (host/deep.py), through the accelerator at ``connect`` for mixed, lpsgd, halp;
    a host.deep.NetResult. Checkpoints and ``resume`` as for a linear run."""
    from host.algorithms import NET_ACCELERATOR_ALGORITHMS
    from host.deep import train_net

    run = partial(train_net, cfg, on_epoch=on_epoch, on_start=on_start, checkpoint=checkpoint, resume=resume)
    if not any(a in NET_ACCELERATOR_ALGORITHMS for a in still_to_run(cfg.algorithms, resume)):
        return run()
    if not connect:
        raise ValueError("algorithms mixed, lpsgd and halp run on the accelerator: pass connect=ADDRESS of a running daemon")
    with AcceleratorClient(connect, timeout=cfg.timeout, session=session, tap=tap, curve=curve) as acc:
        caps = KernelCapabilities.from_message(acc.hello())
        if caps is not None:
            check_capabilities(caps, {"model": cfg.model})
        return run(acc=acc)


def _train(cfg: TrainConfig, *, connect: str | None, tap: Callable[..., Any] | None, session: str | None,
           curve: ClientKeys | None,
           on_epoch: Callable[[EpochRecord], None] | None, on_start: Callable[[str], None] | None,
           checkpoint: Callable[[Checkpoint], None] | None, resume: Checkpoint | None,
           costs: Mapping[str, Mapping[int, float]]) -> TrainResult:
    todo = still_to_run(cfg.algorithms, resume)
    needs_accel = any(a in ACCELERATOR_ALGORITHMS for a in todo)
    if needs_accel and not connect:
        raise ValueError(f"algorithms {', '.join(a for a in todo if a in ACCELERATOR_ALGORITHMS)} "
                         "run on the accelerator: pass connect=ADDRESS of a running daemon")
    ds, obj = _problem(cfg)
    resolved = _resolve_rules(cfg, ds, obj)
    records, weights, emit = run_log(resume, on_epoch)
    acc = AcceleratorClient(connect, timeout=cfg.timeout, session=session, tap=tap,
                            curve=curve) if needs_accel else None
    try:
        if acc is not None:
            # Before the reference optimum (the slow part): refuse what the accelerator cannot run.
            caps = KernelCapabilities.from_message(acc.hello())
            if caps is not None:
                check_capabilities(caps, resolved)
        ref = reference_optimum(obj)
        resolved.update(
            # LP-SGD / LP-SVRG: a fixed scale that just covers the optimum's range (w* = 0, as for
            # all-zero data, fits any grid: then the grid of step 2^-FL, scale 1).
            lp_scale=float(np.max(np.abs(ref.w))) / parse_format(resolved["offset_format"]).max_value or 1.0,
            reference_loss=ref.loss, reference_grad_norm=ref.grad_norm, reference_method=ref.method,
        )
        for algo in todo:
            mine = resume if resume is not None and resume.algorithm == algo else None
            if on_start and mine is None:
                on_start(algo)
            run = _run_host if algo in HOST_ALGORITHMS else partial(_run_accel, costs=costs.get(algo))
            weights[algo] = run(algo, obj, ref, resolved, emit, acc, saver(checkpoint, algo, records, weights), mine)
    finally:
        if acc is not None:
            acc.close()
    return TrainResult(records, ref, weights, resolved)


def _record(algo: str, epoch: int, obj: Objective, ref: Reference, w: np.ndarray, grad: np.ndarray,
            fmt: str, bits: int, started: float, **extra: Any) -> EpochRecord:
    loss = obj.loss(w)
    return EpochRecord(algo, epoch, loss, relative_gap(loss, ref.loss), float(np.linalg.norm(grad)), bits, fmt,
                       time.perf_counter() - started, **extra)


# ---- the host's float64 operations per epoch (priced by `cosim energy`, docs/energy.md) ----
# Array work only: the scalar bookkeeping between epochs (relative gap, μ, scale, the
# policy's ratio test; under ten scalar operations an epoch) is not counted.

def _norm_ops(size: int) -> Counter:
    """np.linalg.norm of ``size`` elements: Σ x², then √."""
    return fp64_ops(mul=size, add=size - 1, sqrt=1)


def _record_ops(obj: Objective) -> Counter:
    """What _record computes: the loss and ‖∇f‖."""
    return obj.loss_ops() + _norm_ops(obj.n_features * obj.n_outputs)


def _host_epoch_ops(algo: str, obj: Objective, steps: int, batch: int) -> Counter:
    """One sgd_epoch or svrg_epoch of host/optimizers.py, expression by expression."""
    dc, c = obj.n_features * obj.n_outputs, obj.n_outputs
    if algo == "sgd":
        per_step = obj.gradient_ops(batch) + fp64_ops(mul=dc, add=dc)         # w −= α·g_B
        once = Counter()
    else:
        # x_Bᵀ(p(w) − p̃_B) / B; w −= α(diff + λ(w − w̃) + g̃)
        per_step = obj.scores_ops(batch) + obj.predictions_ops(batch) + fp64_ops(
            add=batch * c + dc * (batch - 1) + dc + 2 * dc + dc, mul=dc * batch + dc + dc, div=dc)
        # g̃ = ∇f(w̃) and the anchor's predictions, once
        n = obj.n_samples
        once = obj.gradient_ops(n) + obj.scores_ops(n) + obj.predictions_ops(n)
    return once + Counter({k: v * steps for k, v in per_step.items()})


def _run_host(algo: str, obj: Objective, ref: Reference, rc: dict[str, Any],
              emit: Callable[[EpochRecord], None], acc: None, save: Callable[..., None],
              resume: Checkpoint | None) -> np.ndarray:
    """Full-precision SGD or SVRG in float64 with the shared step size, T and sample order."""
    check = obj.gradient_ops(obj.n_samples) + _record_ops(obj)     # ∇f(w) and the record
    if resume is None:
        started, w, first = time.perf_counter(), obj.zeros(), 1
        grad = obj.grad(w)
        emit(_record(algo, 0, obj, ref, w, grad, "fp64", 64, started, host_ops=dict(check)))
        save(0, started, w)
    else:
        started, w, first = time.perf_counter() - resume.seconds, resume.w, resume.epoch + 1
        grad = obj.grad(w)
    count = rc["inner_steps"] * rc["batch_size"]
    epoch_ops = _host_epoch_ops(algo, obj, rc["inner_steps"], rc["batch_size"]) + check
    for epoch in range(first, rc["epochs"] + 1):
        if not np.any(grad):
            break   # exactly at the optimum: nothing left to do
        order = epoch_order(rc["seed"], epoch, obj.n_samples, count)
        step = sgd_epoch if algo == "sgd" else svrg_epoch
        w = step(obj, w, order, rc["step_size"], rc["batch_size"])
        grad = obj.grad(w)
        emit(_record(algo, epoch, obj, ref, w, grad, "fp64", 64, started, host_ops=dict(epoch_ops)))
        save(epoch, started, w)
    return w


# Epochs of float64 the energy policy's reference rate is measured over.
PROBE_EPOCHS = 2


def _float64_rate(algo: str, obj: Objective, ref: Reference, rc: dict[str, Any]) -> tuple[float, Counter]:
    """float64's contraction of ‖∇f‖ per epoch here, for the energy policy: the algorithm's host
    counterpart (SGD for LP-SGD, SVRG for LP-SVRG and HALP) with the same settings, from w = 0,
    over PROBE_EPOCHS epochs (geometric mean); and the host operations that took. Kept inside
    (0, 1): a float64 run that stops at the optimum contracts as fast as can be, one that does
    not contract leaves no width to catch up with."""
    probe: list[EpochRecord] = []
    _run_host("sgd" if algo == "lpsgd" else "svrg", obj, ref, {**rc, "epochs": PROBE_EPOCHS}, probe.append,
              None, lambda *args, **kwargs: None, None)
    first, last = probe[0].grad_norm, probe[-1].grad_norm
    rate = (last / first) ** (1.0 / (len(probe) - 1)) if first > 0 and len(probe) > 1 else 0.0
    ops = sum((Counter(r.host_ops) for r in probe), Counter())
    return min(max(rate, np.nextafter(0.0, 1.0)), np.nextafter(1.0, 0.0)), ops


def _run_accel(algo: str, obj: Objective, ref: Reference, rc: dict[str, Any],
               emit: Callable[[EpochRecord], None], acc: AcceleratorClient, save: Callable[..., None],
               resume: Checkpoint | None, costs: Mapping[int, float] | None = None) -> np.ndarray:
    """LP-SGD, LP-SVRG or HALP: the outer loop here, the inner loop on the accelerator.

    HALP keeps the anchor w̃ in float64 here; the accelerator's offset is z = scale·q and
    w̃ ← w̃ + z after each epoch. LP-SGD and LP-SVRG keep the whole weight on the accelerator
    (w = scale·q on the fixed grid ``lp_scale``); LP-SVRG's anchor is its current point.
    With ``resume`` the daemon is configured and loaded as at epoch 0, then given the state it
    had after the checkpoint's epoch (``restore``), and the loop goes on from the next epoch.
    """
    probe_ops = Counter()
    if rc["policy"] == "energy":
        rate, probe_ops = _float64_rate(algo, obj, ref, rc)
        policy: Policy = make_policy("energy", algo, reference_rate=rate, costs=costs)
    else:
        policy = make_policy(rc["policy"], algo)
    fmt: Format = parse_format(rc["offset_format"])
    acc.configure(problem=obj.model, n_samples=obj.n_samples, n_features=obj.n_features,
                  n_outputs=obj.n_outputs, data_format=rc["data_format"], offset_format=repr(fmt),
                  acc_format=rc["acc_format"], rounding=rc["rounding"], rbits=rc["rbits"],
                  lanes=rc["lanes"], seed=rc["seed"], l2=rc["l2"], scale=rc["lp_scale"])
    acc.load(obj.x, obj.y)
    check_peer(policy, acc.capabilities.version)   # hello got them: load needs them too
    dc = obj.n_features * obj.n_outputs
    # ∇f(w), its norm for the policy, the record; each epoch also the anchor terms (svrg),
    # s·q (in fetch) and w̃ + z (HALP).
    check = obj.gradient_ops(obj.n_samples) + _norm_ops(dc) + _record_ops(obj)
    epoch_ops = (check + (obj.anchor_terms_ops() if algo != "lpsgd" else Counter())
                 + fp64_ops(mul=dc, add=dc if algo == "halp" else 0))
    if resume is None:
        started, w, first, saturated_epochs = time.perf_counter(), obj.zeros(), 1, 0
        grad = obj.grad(w)
        norms = [float(np.linalg.norm(grad))]
        rates: list[float] = []      # per epoch: saturated offset updates / offset updates
        stats: list[UpdateStatistics | None] = []   # per epoch: the accelerator's update statistics
        emit(_record(algo, 0, obj, ref, w, grad, repr(fmt), fmt.bits, started,
                     scale=None if algo == "halp" else rc["lp_scale"], host_ops=dict(check + probe_ops)))
        save(0, started, w, fmt=repr(fmt), norms=list(norms))
    else:
        started, w, first = time.perf_counter() - resume.seconds, resume.w, resume.epoch + 1
        fmt, norms, rates = parse_format(resume.fmt), list(resume.norms), list(resume.rates)
        stats = list(resume.stats)
        saturated_epochs = resume.saturated_epochs
        if resume.accel is not None:
            acc.restore(resume.accel)
        grad = obj.grad(w)
    count = rc["inner_steps"] * rc["batch_size"]
    for epoch in range(first, rc["epochs"] + 1):
        if norms[-1] == 0.0:
            break   # exactly at the optimum; HALP's δ = ‖g̃‖/(μ·max) would be 0
        decision = policy.decide(History(norms, rates, stats), fmt)
        if decision.promote is not None:
            fmt = decision.promote
            acc.promote(repr(fmt))
        if algo != "lpsgd":
            scale = None
            if decision.rescale:
                mu = halp_mu(rc["mu"], rc["l2"], saturated_epochs, rc["mu_rule"])
                scale = norms[-1] / (mu * fmt.max_value)
            acc.recentre(grad, obj.anchor_terms(w), scale)
        order = epoch_order(rc["seed"], epoch, obj.n_samples, count)
        report = acc.run_epoch("sgd" if algo == "lpsgd" else "svrg", epoch=epoch, step_size=rc["step_size"],
                               batch_size=rc["batch_size"], order=order, statistics=needs_statistics(policy))
        saturated_epochs += report.saturations > 0
        rates.append(report.saturations / (rc["inner_steps"] * dc))
        stats.append(UpdateStatistics.from_report(report))
        offset, state = acc.offset()
        w = w + offset if algo == "halp" else offset
        grad = obj.grad(w)
        norms.append(float(np.linalg.norm(grad)))
        emit(_record(algo, epoch, obj, ref, w, grad, repr(fmt), fmt.bits, started,
                     ops=dict(report.ops), saturations=int(report.saturations), scale=float(state.scale),
                     host_ops=dict(epoch_ops), decision=decision.reason))
        save(epoch, started, w, fmt=repr(fmt), norms=list(norms), rates=list(rates),
             saturated_epochs=saturated_epochs, accel=state, stats=list(stats))
    return w
