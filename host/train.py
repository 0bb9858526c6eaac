"""The host's training entry point: resolve a config, compute the reference, run each algorithm.

Example (the embedded default: digits, softmax, HALP at 8 bits, through a running daemon)::

    >>> result = train(TrainConfig(algorithms=("svrg", "halp", "lpsgd")), connect="ipc:///tmp/accel.sock",
    ...                on_epoch=lambda r: print(r.algorithm, r.epoch, r.gap))
    >>> result.weights["halp"].shape
    (65, 10)

``sgd`` and ``svrg`` run here in float64; ``lpsgd``, ``lpsvrg`` and ``halp`` drive the
accelerator daemon at ``connect`` (one configure + data load per algorithm, one session).
Default hyperparameters follow documented rules (``docs/host.md``), never per-data-set values.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

import numpy as np
from threadpoolctl import threadpool_limits

from host.algorithms import ACCELERATOR_ALGORITHMS, ALGORITHMS, HOST_ALGORITHMS
from host.client import AcceleratorClient
from host.datasets import BUILTIN_TASKS, Dataset, check_pairing, load_dataset
from host.models import MODELS, Objective, fp64_ops
from host.optimizers import epoch_order, sgd_epoch, svrg_epoch
from host.reference import Reference, reference_optimum, relative_gap
from host.scheduler import MU_RULES, POLICIES, History, Policy, halp_mu, make_policy
from protocol.capabilities import KernelCapabilities
from protocol.codec import Limits
from protocol.formats import FixedFormat, Format, FormatError, parse_format
from protocol.keys import ClientKeys
from protocol.messages import ROUNDINGS


# Each setting's kind, read off TrainConfig's annotation and checked before anything else reads
# the value (a TOML file can hold anything): annotation → what the error says is wanted.
_KIND_WORDS = {"str": "a string", "str | None": "a string (or unset for the default rule)",
               "tuple[str, ...]": "a list of strings", "int": "an integer",
               "int | None": "an integer (or unset for the default rule)",
               "float": "a number", "float | None": "a number (or unset for the default rule)"}
# Integer bounds (documented in docs/host.md): beyond them a run could not complete or be recorded.
INT_RANGES = {"bits": (2, 16), "rbits": (0, 32), "epochs": (1, 10**6), "seed": (0, 2**64 - 1),
              "inner_steps": (1, 2**31 - 1), "batch_size": (1, 2**31 - 1), "lanes": (1, 4096),
              "samples": (2, 2**31 - 1), "features": (1, 2**20), "classes": (2, 4096)}


def _bound(v: int) -> str:
    """An integer bound as people write it: 2^64 − 1, 2^20, 4096."""
    for k, text in ((v + 1, "2^{} − 1"), (v, "2^{}")):
        if v > 4096 and k & (k - 1) == 0:
            return text.format(k.bit_length() - 1)
    return str(v)


def _is(value: Any, annotation: str) -> bool:
    """Whether ``value`` is of a TrainConfig field's kind (``annotation``, one of _KIND_WORDS)."""
    if annotation.endswith(" | None"):
        return value is None or _is(value, annotation.removesuffix(" | None"))
    if annotation == "tuple[str, ...]":
        return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    if isinstance(value, bool):           # a TOML true is not a number
        return False
    return isinstance(value, {"str": str, "int": int, "float": (int, float)}[annotation])


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


@dataclass
class TrainConfig:
    """Every training setting; the defaults are the embedded default run. ``None`` = by rule."""

    dataset: str = "digits"
    model: str = "softmax"
    algorithms: tuple[str, ...] = ("halp",)
    bits: int = 8
    rounding: str = "stochastic"
    rbits: int = 0                       # random bits per stochastic rounding; 0 = the whole discarded width
    epochs: int = 20
    seed: int = 0
    l2: float = 1e-2
    step_size: float | None = None       # α = 0.5 / L
    mu: float | None = None              # HALP μ = 10 λ
    mu_rule: str = "widen"               # halve μ after each epoch whose offsets saturated
    inner_steps: int | None = None       # T = n
    batch_size: int = 1
    data_format: str | None = None       # fixed<IL, b−IL>, smallest IL holding max|x|
    offset_format: str | None = None     # fixed<1, b−1>
    acc_format: str = "fp32"
    lanes: int = 16
    policy: str | None = None            # None = the algorithm's natural policy
    samples: int = 1000                  # synthetic data sets only
    features: int = 20
    condition: float = 100.0
    classes: int = 10                    # synthetic_softmax only
    timeout: float = 60.0

    def validate(self) -> None:
        """Raise ValueError naming the bad setting and the valid choices."""
        def bad(name: str, why: str) -> None:
            raise ValueError(f"{name}: {why}; got {getattr(self, name)!r}")

        for f in fields(self):
            if not _is(getattr(self, f.name), f.type):
                bad(f.name, _KIND_WORDS[f.type])
        if not (self.dataset in BUILTIN_TASKS or self.dataset.endswith(".npz")):
            bad("dataset", f"choose one of {', '.join(BUILTIN_TASKS)} or a path to a .npz file")
        if self.model not in MODELS:
            bad("model", f"choose one of {', '.join(MODELS)}")
        if self.dataset in BUILTIN_TASKS:
            check_pairing(self.dataset, BUILTIN_TASKS[self.dataset], self.model)
        algos = tuple(self.algorithms)
        if not algos or any(a not in ALGORITHMS for a in algos) or len(set(algos)) != len(algos):
            bad("algorithms", f"a non-empty list without repeats from {', '.join(ALGORITHMS)}")
        if not (isinstance(self.bits, int) and 2 <= self.bits <= 16):
            bad("bits", "an integer from 2 to 16")
        if self.rounding not in ROUNDINGS:
            bad("rounding", f"choose one of {', '.join(ROUNDINGS)}")
        if not (isinstance(self.rbits, int) and 0 <= self.rbits <= 32):
            bad("rbits", "an integer from 0 (the whole discarded width) to 32")
        for name, (lo, hi) in INT_RANGES.items():
            value = getattr(self, name)
            if value is not None and not lo <= value <= hi:
                bad(name, f"an integer from {lo} to {_bound(hi)}")
        if self.dataset.startswith("synthetic_"):
            _check_memory(self.samples, self.features + 1)
        if not (np.isfinite(self.l2) and self.l2 >= 0):
            bad("l2", "a finite number >= 0")
        for name in ("step_size", "mu", "timeout", "condition"):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and value > 0):
                bad(name, "a finite number > 0" + (" (or unset for the default rule)" if name in ("step_size", "mu") else ""))
        if "halp" in algos and self.mu is None and self.l2 == 0:
            bad("mu", "HALP's default μ = 10λ needs l2 > 0; set mu explicitly")
        for name in ("data_format", "offset_format", "acc_format"):
            if getattr(self, name) is not None:
                try:
                    parse_format(getattr(self, name))
                except FormatError as exc:
                    raise ValueError(f"{name}: {exc}") from None
        if self.mu_rule not in MU_RULES:
            bad("mu_rule", f"choose one of {', '.join(MU_RULES)}")
        if self.policy is not None and self.policy not in POLICIES:
            bad("policy", f"choose one of {', '.join(POLICIES)} (or unset for each algorithm's natural policy)")
        for algo in algos:
            if algo in ACCELERATOR_ALGORITHMS:
                make_policy(self.policy, algo)
        # Which formats the accelerator takes is its capabilities' business (check_capabilities).
        offset = parse_format(self.offset_format) if self.offset_format else FixedFormat(1, self.bits - 1)
        if self.policy in ("adaptive", "dps") and not isinstance(offset, FixedFormat):
            bad("offset_format", f"the {self.policy} policy changes fixed-point offset formats only")

    def resolved(self) -> dict[str, Any]:
        """Every setting with the rule-based defaults filled in (loads the data set, so it
        can fail on a bad .npz). ``train()``'s result adds the reference-dependent values."""
        self.validate()
        return _resolve_rules(self, *_problem(self))


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
    unless the accelerator accepts the resolved run's sizes, formats, rounding, problem and widths."""
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
    # Every epoch's sample order travels as one uint32 tensor; refuse here what the
    # accelerator would refuse after the run has started.
    per_epoch, most = resolved["inner_steps"] * cfg.batch_size, Limits().max_tensor_bytes // 4
    if per_epoch > most:
        raise ValueError(f"inner_steps × batch_size = {per_epoch} sample indices per epoch exceed "
                         f"the protocol's {most} per message; lower either")
    return resolved


def train(cfg: TrainConfig, *, connect: str | None, tap: Callable[..., Any] | None = None,
          session: str | None = None, curve: ClientKeys | None = None,
          on_epoch: Callable[[EpochRecord], None] | None = None,
          on_start: Callable[[str], None] | None = None) -> TrainResult:
    """Run every algorithm of ``cfg`` in turn; see the module docstring.

    ``tap``, ``session`` and ``curve`` go to the protocol client (a trace writer; a fixed session
    id makes two runs' traces comparable; the keys of a daemon serving with them). ``on_start(algorithm)`` runs before each algorithm's
    first message; ``on_epoch(record)`` after every epoch, epoch 0 being the starting point.
    """
    cfg.validate()
    # One BLAS thread: BLAS splits its reductions by thread, so the float64 bits of a run would
    # depend on the machine's core count; and idle BLAS threads busy-wait, taking the core that
    # an accelerator daemon on the same machine needs (a digits HALP epoch: 5 ms, or 20 with them).
    with threadpool_limits(1):
        return _train(cfg, connect=connect, tap=tap, session=session, curve=curve, on_epoch=on_epoch,
                      on_start=on_start)


def _train(cfg: TrainConfig, *, connect: str | None, tap: Callable[..., Any] | None, session: str | None,
           curve: ClientKeys | None,
           on_epoch: Callable[[EpochRecord], None] | None, on_start: Callable[[str], None] | None) -> TrainResult:
    needs_accel = any(a in ACCELERATOR_ALGORITHMS for a in cfg.algorithms)
    if needs_accel and not connect:
        raise ValueError(f"algorithms {', '.join(a for a in cfg.algorithms if a in ACCELERATOR_ALGORITHMS)} "
                         "run on the accelerator: pass connect=ADDRESS of a running daemon")
    ds, obj = _problem(cfg)
    resolved = _resolve_rules(cfg, ds, obj)
    records: list[EpochRecord] = []

    def emit(record: EpochRecord) -> None:
        records.append(record)
        if on_epoch:
            on_epoch(record)

    weights: dict[str, np.ndarray] = {}
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
        for algo in cfg.algorithms:
            if on_start:
                on_start(algo)
            run = _run_host if algo in HOST_ALGORITHMS else _run_accel
            weights[algo] = run(algo, obj, ref, resolved, emit, acc)
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
              emit: Callable[[EpochRecord], None], acc: None) -> np.ndarray:
    """Full-precision SGD or SVRG in float64 with the shared step size, T and sample order."""
    started = time.perf_counter()
    w = obj.zeros()
    grad = obj.grad(w)
    check = obj.gradient_ops(obj.n_samples) + _record_ops(obj)     # ∇f(w) and the record
    emit(_record(algo, 0, obj, ref, w, grad, "fp64", 64, started, host_ops=dict(check)))
    count = rc["inner_steps"] * rc["batch_size"]
    epoch_ops = _host_epoch_ops(algo, obj, rc["inner_steps"], rc["batch_size"]) + check
    for epoch in range(1, rc["epochs"] + 1):
        if not np.any(grad):
            break   # exactly at the optimum: nothing left to do
        order = epoch_order(rc["seed"], epoch, obj.n_samples, count)
        step = sgd_epoch if algo == "sgd" else svrg_epoch
        w = step(obj, w, order, rc["step_size"], rc["batch_size"])
        grad = obj.grad(w)
        emit(_record(algo, epoch, obj, ref, w, grad, "fp64", 64, started, host_ops=dict(epoch_ops)))
    return w


def _run_accel(algo: str, obj: Objective, ref: Reference, rc: dict[str, Any],
               emit: Callable[[EpochRecord], None], acc: AcceleratorClient) -> np.ndarray:
    """LP-SGD, LP-SVRG or HALP: the outer loop here, the inner loop on the accelerator.

    HALP keeps the anchor w̃ in float64 here; the accelerator's offset is z = scale·q and
    w̃ ← w̃ + z after each epoch. LP-SGD and LP-SVRG keep the whole weight on the accelerator
    (w = scale·q on the fixed grid ``lp_scale``); LP-SVRG's anchor is its current point.
    """
    policy: Policy = make_policy(rc["policy"], algo)
    fmt: Format = parse_format(rc["offset_format"])
    acc.configure(problem=obj.model, n_samples=obj.n_samples, n_features=obj.n_features,
                  n_outputs=obj.n_outputs, data_format=rc["data_format"], offset_format=repr(fmt),
                  acc_format=rc["acc_format"], rounding=rc["rounding"], rbits=rc["rbits"],
                  lanes=rc["lanes"], seed=rc["seed"], l2=rc["l2"], scale=rc["lp_scale"])
    acc.load(obj.x, obj.y)
    started = time.perf_counter()
    w = obj.zeros()
    grad = obj.grad(w)
    norms = [float(np.linalg.norm(grad))]
    dc = obj.n_features * obj.n_outputs
    # ∇f(w), its norm for the policy, the record; each epoch also the anchor terms (svrg),
    # s·q (in fetch) and w̃ + z (HALP).
    check = obj.gradient_ops(obj.n_samples) + _norm_ops(dc) + _record_ops(obj)
    epoch_ops = (check + (obj.anchor_terms_ops() if algo != "lpsgd" else Counter())
                 + fp64_ops(mul=dc, add=dc if algo == "halp" else 0))
    emit(_record(algo, 0, obj, ref, w, grad, repr(fmt), fmt.bits, started,
                 scale=None if algo == "halp" else rc["lp_scale"], host_ops=dict(check)))
    count = rc["inner_steps"] * rc["batch_size"]
    saturated_epochs = 0
    rates: list[float] = []          # per epoch: saturated offset updates / offset updates
    for epoch in range(1, rc["epochs"] + 1):
        if norms[-1] == 0.0:
            break   # exactly at the optimum; HALP's δ = ‖g̃‖/(μ·max) would be 0
        decision = policy.decide(History(norms, rates), fmt)
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
                               batch_size=rc["batch_size"], order=order)
        saturated_epochs += report.saturations > 0
        rates.append(report.saturations / (rc["inner_steps"] * dc))
        offset, state = acc.offset()
        w = w + offset if algo == "halp" else offset
        grad = obj.grad(w)
        norms.append(float(np.linalg.norm(grad)))
        emit(_record(algo, epoch, obj, ref, w, grad, repr(fmt), fmt.bits, started,
                     ops=dict(report.ops), saturations=int(report.saturations), scale=float(state.scale),
                     host_ops=dict(epoch_ops), decision=decision.reason))
    return w
