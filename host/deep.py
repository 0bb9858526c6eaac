"""SGD and SVRG for the networks of ``host/nets.py`` on the host; mixed, LP-SGD and HALP through the accelerator.

Usage::

    result = train_net(TrainConfig(model="mlp:128", algorithms=("sgd", "svrg"), epochs=20),
                       on_epoch=lambda r: print(r.algorithm, r.epoch, r.loss, r.test_accuracy))
    result.records             # NetRecord per algorithm and epoch (epoch 0: the seeded start)
    result.weights["svrg"]     # final flat weights (host/nets.py's layout)
    result.config              # the settings used, rule-based defaults filled in
    train_net(cfg, dtype=torch.float32)   # the same code in float32
    train_net(cfg, acc=client)            # mixed, lpsgd, halp: an AcceleratorClient after hello()
    train_net(cfg, acc=client, checkpoint=saved.append)   # a host.train.Checkpoint after every epoch
    train_net(cfg, acc=new_client, resume=saved[-1])      # on from there, to the same bits

``cfg`` is anything with TrainConfig's fields ``dataset``, ``model`` (a network spec),
``algorithms``, ``epochs``, ``seed``, ``l2``, ``step_size``, ``inner_steps``, ``batch_size``,
mixed's ``sync_every``, ``recipe``, ``lanes``, HALP's ``bits``, ``mu``, ``mu_rule`` and the synthetic data sets' ``samples``, ``features``, ``condition``, ``classes``
(``NetSettings``); nothing else is read.

Conventions of ``host/optimizers.py``: epoch e (1, 2, …) uses the samples
``epoch_order(seed, e, n_train, T·B)``, step t the entries t·B … t·B + B − 1. SVRG computes
the full gradient g̃ at its anchor w̃ once per epoch, steps w ← w − α(∇f_B(w) − ∇f_B(w̃) + g̃)
and takes the last iterate as the next anchor (option I). The full gradient an epoch ends
with is its record's and the next anchor's, computed once.

Default rules (no per-data-set values): α = NET_STEP_SIZE, HALP's μ = NET_MU, T = ⌈n_train/B⌉ (one pass per
epoch). Data: the data set without its bias column (every layer has biases), split by
``train_test_split(ds, seed)`` (80/20); training loss and gradient are over the training
part, accuracy over the test part.

On the accelerator (``docs/accelerator.md``, "Networks on the accelerator"), with the layer
kernel formats of ``cfg.recipe`` (host/recipes.py), one configure_net and data load per
algorithm:

- ``mixed``: float64 master weights here. Each step sends w (the accelerator rounds it into
  the weights format) and the minibatch's indices in a ``net_grad``, and steps
  w ← w − α(g + λw) in float64 with the low-precision gradient g it gets back. With
  ``sync_every`` K > 1 an epoch of T steps is ⌈T/K⌉ rounds (the last one shorter): each sends
  w and the round's k·B indices (k = K, or what is left), the accelerator takes k local LP-SGD
  steps on its own copy of w in the update format (accel/backends/net.py, "Local steps") and
  returns G, the sum of their gradients, and the host steps w ← w − α(G + k·λ·w): the decay
  of the k steps, all taken at the round's start weights. A round of one step is a plain
  gradient, so K = 1 is the above. The records carry what those messages cost: their number,
  bytes (both directions, as encoded) and the seconds they took beyond the accelerator's own
  compute time;
- ``lpsgd``: the weights live on the accelerator in the update format; one ``run_net_epoch``
  per epoch (the decay λw in the weight-gradient format there), then ``fetch_net``;
- ``halp`` (De Sa et al. 2018, "High-Accuracy Low-Precision Training"): the anchor w̃ and
  g̃ = ∇f(w̃) here in float64 (autograd, λw̃ included); each epoch a ``recentre_net`` sends
  them with the offset grid: z = scale·q, q on fixed<1,b−1> (b = ``bits``), scale =
  ‖g̃‖/(μ·max q), so the grid step is ‖g̃‖/(μ·(2^(b−1)−1)) and the range ±‖g̃‖/μ, μ by
  host/scheduler.py's ``halp_mu`` (μ = NET_MU and the rule NET_MU_RULE unless set; the
  ``widen`` rule halves μ after each epoch whose offsets saturated). The accelerator starts z at 0 and steps
  z ← Q(z − α(∇f_B(w̃+z) − ∇f_B(w̃) + g̃)) with two low-precision passes per step
  (accel/backends/net.py gives the order); then ``fetch_net`` and w̃ ← w̃ + z here.

Loss, gradient norm and test accuracy of every record are the host's float64 evaluation of the
weights (for lpsgd: the master weights fetched). ``bits`` is the width of the weights each
algorithm keeps: 64 (mixed's master copy), the update format's, or HALP's offsets'. ``host_ops``
counts the host's float64 training arithmetic (mixed: 2 multiplies and 2 adds per parameter
and round, and k·λ once a round of k > 1 steps; lpsgd: none; halp: ‖g̃‖ and w̃ + scale·q, 2
of each per parameter and epoch; g̃ is the evaluation's gradient, computed once), not the
evaluation (docs/energy.md).
sgd and svrg count theirs from the shapes (``host_epoch_ops``; keys "mul fp64", "add fp64",
"fp32" for a float32 network). A minibatch gradient of B samples is its matrix products, per
layer B·P·fan_in·fan_out multiplies forward, as many for ΔW and as many for δX except in the
first layer (the data need no gradient), with P = 1 for a dense layer and, for a 3×3
convolution, the positions it slides over (its im2col rows per sample); as many adds as
multiplies (a sum of k products is k − 1 adds, plus the bias's in the forward); then the decay λw
added (n multiplies and adds, n parameters). A step is one gradient and w − α·g for sgd (n of
each), two gradients and w − α(g − g_a + g̃) for svrg (n multiplies, 3n adds). Not counted:
ReLU, max-pooling, the softmax cross-entropy and the bias gradients' sums (of order B·width,
against the products' B·width²) and, as above, the evaluation (svrg's g̃ is its gradient).

Recovery, as ``host.train.train`` does it (docs/host.md, "Recovery"): ``checkpoint`` gets a
``host.train.Checkpoint`` after every epoch (the records so far, the finished algorithms'
weights, w — HALP's anchor w̃ — and HALP's count of saturated epochs), and ``resume=`` goes on
after it. ∇f(w), svrg's and HALP's g̃, is computed again from w (the same bits: one thread);
a new daemon needs only configure_net with w (``_run_accel``) and seeds each epoch's random
bits from the run seed and the epoch, so the epochs come out bit-identical.

A network's loss is not convex, so there is no reference optimum: a record's ``gap`` is
(f − f_best)/|f_best| with f_best the lowest final training loss among the float64 runs
of the same budget (``fill_gaps``, applied to ``train_net``'s own records when it trained in
float64; apply it again to records pooled from several runs).

Threads: one torch thread and one BLAS thread while training (restored after). torch splits
its sums between threads (host/nets.py), so this makes the bits independent of the machine's
thread count; and on two busy cores a B = 1 step of ``mlp:128`` takes 0.5 ms with one
thread against 7 ms with two.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from host.algorithms import HOST_ALGORITHMS, NET_ACCELERATOR_ALGORITHMS
from host.client import AcceleratorClient
from host.datasets import load_dataset, train_test_split
from host.nets import Layer, Network, kernel_layout, parse_spec, torch_layout
from host.optimizers import epoch_order
from host.recipes import parse_recipe
from host.reference import relative_gap
from host.scheduler import halp_mu
from host.settings import SETTINGS
from host.train import Checkpoint, run_log, saver, still_to_run
from protocol.codec import encode
from protocol.formats import FixedFormat, parse_format
from protocol.messages import NetGrad, NetGradient

NET_STEP_SIZE = 0.02     # calibrated on digits, see docs/host.md "Networks"
# HALP's μ on networks: the linear models' 10λ comes from strong convexity (‖w̃ − w*‖ ≤ ‖g̃‖/λ),
# which a network's loss lacks; 10λ = 0.1 made the grid step as large as the weights and HALP
# diverged on digits, μ = 1 (range ±‖g̃‖) met SVRG's loss within 1.5× its epochs (docs/host.md).
NET_MU = 1.0
# and fixed, not widen: widen's floor comes from strong convexity too, and on the cnn a widened
# (coarser) grid made HALP diverge where the same μ fixed converged (docs/host.md).
NET_MU_RULE = "fixed"


class NetSettings(Protocol):
    dataset: str
    model: str
    algorithms: tuple[str, ...]
    epochs: int
    seed: int
    l2: float
    step_size: float | None
    inner_steps: int | None
    batch_size: int
    sync_every: int              # mixed: the weights travel every K steps
    recipe: str                  # the layer kernel's formats on the accelerator (host/recipes.py)
    bits: int                    # HALP's offsets: fixed<1,bits-1>
    mu: float | None             # HALP's μ (None: NET_MU) and how it moves (host/scheduler.py halp_mu;
    mu_rule: str | None          # None: NET_MU_RULE)
    lanes: int
    samples: int                 # the synthetic data sets' shape
    features: int
    condition: float
    classes: int


@dataclass
class NetRecord:
    algorithm: str
    epoch: int                  # 0 = the seeded start
    loss: float                 # training loss, (λ/2)‖w‖² included
    grad_norm: float            # ‖∇f(w)‖₂ over the training part
    test_accuracy: float
    bits: int                   # 64 (float64) or 32 (float32)
    seconds: float              # wall time since this algorithm's epoch 0
    gap: float | None = None    # (f − f_best)/|f_best|; None until fill_gaps has a float64 run
    ops: dict = field(default_factory=dict)      # the accelerator's operations this epoch
    memory: dict = field(default_factory=dict)   # its memory traffic, bytes per role
    messages: int = 0           # mixed: net_grad requests this epoch,
    message_bytes: int = 0      # their bytes and their replies', as encoded,
    message_seconds: float = 0.0  # and their round trips' seconds beyond the accelerator's compute
    host_ops: dict | None = None  # the host's float training operations this epoch (module docstring)


@dataclass
class NetResult:
    records: list[NetRecord]
    weights: dict[str, np.ndarray]
    config: dict[str, Any]

    def reference_summary(self) -> None:
        """None: a network's loss is not convex, there is no reference optimum (TrainResult's has one)."""


@contextmanager
def one_thread() -> Iterator[None]:
    """One torch and one BLAS thread inside, the previous counts restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(before)


def spec_of(cfg: NetSettings):
    """The network spec of ``cfg.model`` (ValueError naming the setting for a bad one)."""
    try:
        return parse_spec(cfg.model)
    except ValueError as exc:
        raise ValueError(f"model: {exc}") from None


def resolve(cfg: NetSettings) -> dict[str, Any]:
    """The settings ``train_net`` uses, defaults by rule where they need no data (T needs the
    training part's size); ValueError naming a bad one."""
    def bad(name: str, why: str) -> None:
        raise ValueError(f"{name}: {why}; got {getattr(cfg, name)!r}")

    algos, choices = tuple(cfg.algorithms), HOST_ALGORITHMS + NET_ACCELERATOR_ALGORITHMS
    if not algos or any(a not in choices for a in algos) or len(set(algos)) != len(algos):
        bad("algorithms", f"networks train with a non-empty list without repeats from {', '.join(choices)}")
    for name in ("recipe", "epochs", "seed", "batch_size", "inner_steps", "sync_every", "step_size", "l2"):
        SETTINGS[name].check(getattr(cfg, name))      # the bounds declared once, as for linear models
    if cfg.sync_every != 1 and "mixed" not in algos:
        bad("sync_every", f"how often mixed sends its weights; this run has no mixed ({', '.join(algos)}): "
                          "leave it at 1 or add mixed")
    return {"dataset": cfg.dataset, "model": str(parse_spec(cfg.model)), "algorithms": list(algos),
            "epochs": cfg.epochs, "seed": cfg.seed, "l2": cfg.l2, "recipe": cfg.recipe, "lanes": cfg.lanes,
            "step_size": cfg.step_size if cfg.step_size is not None else NET_STEP_SIZE,
            "batch_size": cfg.batch_size, "inner_steps": cfg.inner_steps, "sync_every": cfg.sync_every,
            "bits": cfg.bits, "mu": cfg.mu if cfg.mu is not None else NET_MU,
            "mu_rule": cfg.mu_rule or NET_MU_RULE}


def sgd_epoch(net: Network, w: np.ndarray, order: np.ndarray, step_size: float, batch_size: int) -> np.ndarray:
    """len(order)/B steps of w ← w − α·∇f_B(w); returns the last iterate."""
    w = w.copy()
    for start in range(0, len(order), batch_size):
        w -= step_size * net.grad(w, order[start:start + batch_size])
    return w


def svrg_epoch(net: Network, anchor: np.ndarray, full_grad: np.ndarray, order: np.ndarray,
               step_size: float, batch_size: int) -> np.ndarray:
    """One SVRG epoch from w = w̃ with g̃ = ``full_grad`` = ∇f(w̃); returns the last iterate."""
    w = anchor.copy()
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        w -= step_size * (net.grad(w, idx) - net.grad(anchor, idx) + full_grad)
    return w


def fill_gaps(records: list[NetRecord]) -> list[NetRecord]:
    """``records`` with their gap to the best float64 run: f_best is the lowest final loss
    among the float64 (bits 64) runs of the host's algorithms (mixed keeps float64 weights
    but its gradients are the accelerator's); records are returned unchanged when there is none."""
    finals: dict[tuple[str, int], float] = {}
    for r in records:
        finals[r.algorithm, r.bits] = r.loss    # records come in epoch order: the last stays
    best = min((loss for (algo, bits), loss in finals.items() if bits == 64 and algo in HOST_ALGORITHMS),
               default=None)
    if best is None:
        return list(records)
    return [replace(r, gap=relative_gap(r.loss, best)) for r in records]


def train_net(cfg: NetSettings, *, dtype: torch.dtype = torch.float64,
              on_epoch: Callable[[NetRecord], None] | None = None,
              on_start: Callable[[str], None] | None = None,
              acc: AcceleratorClient | None = None,
              checkpoint: Callable[[Checkpoint], None] | None = None,
              resume: Checkpoint | None = None) -> NetResult:
    """Train ``cfg.model`` with each of ``cfg.algorithms`` in turn (module docstring).

    ``on_start(algorithm)`` runs before each algorithm, ``on_epoch(record)`` after each epoch
    (its gap still None: gaps need every run's final loss), ``checkpoint(ck)`` after each
    on_epoch. ``acc``: the accelerator's client, its ``hello()`` done, for mixed, lpsgd and halp.
    With ``resume`` (a checkpoint of a run of the same ``cfg``) the run goes on after it, as
    ``host.train.train`` does: its records are in the result but not passed to ``on_epoch``
    again, and ``on_start`` is not called for the algorithm it was in.
    """
    spec = spec_of(cfg)
    rc = resolve(cfg)
    todo = still_to_run(rc["algorithms"], resume)
    if acc is None and any(a in NET_ACCELERATOR_ALGORITHMS for a in todo):
        raise ValueError("algorithms: mixed, lpsgd and halp run on the accelerator: pass the client of a running daemon")
    ds = load_dataset(cfg.dataset, samples=cfg.samples, features=cfg.features, condition=cfg.condition,
                      classes=cfg.classes, seed=cfg.seed)
    if ds.task == "regression":
        raise ValueError(f"model: a network classifies; {cfg.dataset!r} is a regression data set")
    train, test = train_test_split(ds, cfg.seed)
    n_train = len(train.y)
    if rc["batch_size"] > n_train:
        raise ValueError(f"batch_size: at most the {n_train} training samples of {cfg.dataset}; "
                         f"got {rc['batch_size']}")
    if rc["inner_steps"] is None:
        rc["inner_steps"] = -(-n_train // rc["batch_size"])
    x_test = test.x[:, :-1]
    records, weights, emit = run_log(resume, on_epoch)
    with one_thread():
        net = Network(spec, train.x[:, :-1], train.y, n_classes=ds.n_classes, l2=rc["l2"], seed=rc["seed"],
                      dtype=dtype)
        rc.update(dtype=str(dtype).removeprefix("torch."), n_train=n_train, n_test=len(test.y),
                  n_params=net.n_params, preprocessing=train.preprocessing + "; bias column dropped")
        for algo in todo:
            mine = resume if resume is not None and resume.algorithm == algo else None
            if on_start and mine is None:
                on_start(algo)
            run = _Run(algo, net, x_test, test.y, rc, emit, saver(checkpoint, algo, records, weights))
            weights[algo] = (_run_accel(run, acc, mine) if algo in NET_ACCELERATOR_ALGORITHMS
                             else _run(run, mine))
    return NetResult(fill_gaps(records), weights, rc)


@dataclass
class _Run:
    """One algorithm's run: its network and settings, where its records and checkpoints go."""

    algo: str
    net: Network
    x_test: np.ndarray
    y_test: np.ndarray
    rc: dict[str, Any]
    emit: Callable[[NetRecord], None]
    save: Callable[..., None]          # host.train.saver's: save(epoch, started, w, **loop)

    def record(self, epoch: int, w: np.ndarray, bits: int, started: float, **costs: Any) -> np.ndarray:
        """Evaluate ``w`` (loss, ‖∇f‖, test accuracy), emit the epoch's record; returns ∇f(w)."""
        loss, grad = self.net.loss_grad(w)
        self.emit(NetRecord(self.algo, epoch, loss, float(np.linalg.norm(grad)),
                            self.net.accuracy(w, self.x_test, self.y_test), bits, time.perf_counter() - started,
                            **costs))
        return grad


def gradient_products(layers: list[Layer], batch: int) -> int:
    """The multiplies of one minibatch gradient's matrix products (and as many adds): per layer
    B·P·fan_in·fan_out forward, as many for ΔW and for δX, the first layer's δX excepted (the
    data need no gradient); P = 1 for a dense layer, the positions a 3×3 convolution slides
    over (its im2col rows per sample, height·width at padding 1) for a convolution."""
    total = 0
    for i, lay in enumerate(layers):
        positions = 1 if lay.kind == "dense" else lay.in_shape[1] * lay.in_shape[2]
        total += (3 if i else 2) * batch * positions * lay.fan_in * lay.fan_out
    return total


def host_epoch_ops(algo: str, net: Network, steps: int, batch: int) -> dict[str, int]:
    """The float operations of one ``sgd_epoch`` or ``svrg_epoch`` (module docstring), keyed
    like the accelerator's ("mul fp64", …; "fp32" for a float32 network)."""
    products, n = gradient_products(net.layers(), batch), net.n_params
    # a minibatch gradient: its products and the decay λw added to them (n of each);
    # sgd: w − α·g (n of each); svrg: two gradients, w − α(g − g_a + g̃) (n multiplies, 3n adds)
    mul, add = (products + 2 * n, products + 2 * n) if algo == "sgd" else (2 * products + 3 * n,
                                                                             2 * products + 5 * n)
    bits = 8 * net.numpy_dtype.itemsize
    return {f"mul fp{bits}": steps * mul, f"add fp{bits}": steps * add}


def _run(run: _Run, resume: Checkpoint | None) -> np.ndarray:
    """sgd or svrg in the network's dtype, from the seeded start or after ``resume``'s epoch;
    emits its records and checkpoints, returns its final weights."""
    net, rc, bits = run.net, run.rc, 8 * run.net.numpy_dtype.itemsize
    if resume is None:
        started, w, first = time.perf_counter(), net.params(), 1
        grad = run.record(0, w, bits, started, host_ops={})
        run.save(0, started, w)
    else:
        # ∇f(w) (svrg's g̃) is a function of w: computed again, the same bits (one thread)
        started, w, first = time.perf_counter() - resume.seconds, resume.w, resume.epoch + 1
        grad = net.grad(w)
    count = rc["inner_steps"] * rc["batch_size"]
    host_ops = host_epoch_ops(run.algo, net, rc["inner_steps"], rc["batch_size"])
    for epoch in range(first, rc["epochs"] + 1):
        order = epoch_order(rc["seed"], epoch, net.n_samples, count)
        if run.algo == "sgd":
            w = sgd_epoch(net, w, order, rc["step_size"], rc["batch_size"])
        else:
            w = svrg_epoch(net, w, grad, order, rc["step_size"], rc["batch_size"])
        grad = run.record(epoch, w, bits, started, host_ops=dict(host_ops))
        run.save(epoch, started, w)
    return w


def configure_net(acc: AcceleratorClient, net: Network, w: np.ndarray, rc: dict[str, Any]) -> None:
    """Set ``net`` on the accelerator with the recipe's formats and start weights ``w``, and load
    its training data."""
    r = parse_recipe(rc["recipe"])
    acc.configure_net(layers=[lay.kernel_entry() for lay in net.layers()],
                      n_samples=net.n_samples, weights_format=r["weights"], activations_format=r["activations"],
                      errors_format=r["errors"], weight_grads_format=r["weight_grads"], acc_format=r["acc"],
                      chunk=r["chunk"], update_format=r["update"], rounding=r["rounding"], rbits=0,
                      lanes=rc["lanes"], seed=rc["seed"], l2=rc["l2"], weights=kernel_layout(net.layers(), w))
    acc.load(net.x.numpy().astype(np.float64), net.y.numpy())


def _bytes(msg: Any, session: str) -> int:
    """The bytes ``msg`` takes on the wire (header and tensor frames, as encoded)."""
    return sum(memoryview(f).nbytes for f in encode(msg, 0, session))


def mixed_epoch(acc: AcceleratorClient, net: Network, w: np.ndarray, order: np.ndarray, step_size: float,
                batch_size: int, *, sync_every: int = 1, epoch: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """len(order)/B steps in rounds of K = ``sync_every`` (the last one shorter): per round of
    k steps w ← w − α(G + k·λ·w), G the accelerator's sum of the gradients of k local steps from w
    (k = 1: the minibatch's low-precision gradient at w; ``epoch`` seeds the local steps'
    rounding); returns the last iterate and the epoch's accelerator and message costs."""
    layers, lam = net.layers(), net.l2
    ops: Counter = Counter()
    memory: Counter = Counter()
    cost = {"messages": 0, "message_bytes": 0, "message_seconds": 0.0}
    per_round = 2 * net.n_params             # w ← w − α(G + kλ·w): kλ·w and α·(…), then two adds
    scalings = 0                             # k·λ, once a round of k > 1
    steps = len(order) // batch_size
    w = w.copy()
    for first in range(0, steps, sync_every):
        k = min(sync_every, steps - first)
        local = {"steps": k, "step_size": step_size, "epoch": epoch, "first_step": first} if k > 1 else {}
        request = NetGrad(weights=kernel_layout(layers, w),
                          batch=order[first * batch_size:(first + k) * batch_size].astype(np.uint32), **local)
        sent = time.perf_counter()
        reply: NetGradient = acc.net_grad(request.weights, request.batch, **local)
        cost["message_seconds"] += time.perf_counter() - sent - (reply.work or {}).get("seconds", 0.0)
        cost["messages"] += 1
        cost["message_bytes"] += _bytes(request, acc.session) + _bytes(reply, acc.session)
        ops.update(reply.ops)
        memory.update(reply.memory)
        w -= step_size * (torch_layout(layers, reply.grad) + (k * lam) * w)    # 1·λ is λ: K = 1's bits
        scalings += k > 1
    rounds = cost["messages"]
    return w, {"ops": dict(ops), "memory": dict(memory), **cost,
               "host_ops": {"mul fp64": per_round * rounds + scalings, "add fp64": per_round * rounds}}


def _run_accel(run: _Run, acc: AcceleratorClient, resume: Checkpoint | None) -> np.ndarray:
    """mixed, lpsgd or halp from the seeded start or after ``resume``'s epoch (module docstring).

    The daemon's whole state between epochs is the weights configure_net sets: lpsgd's master
    weights (fetched after each epoch, values of the update format, which configure_net's
    rounding into that format keeps); HALP's recentre_net and mixed's net_grad bring everything
    else. So a new daemon, configured with the checkpoint's w and loaded, runs the next epoch
    as the lost one would have: its random bits come from generators seeded by the run seed and
    the epoch (and mixed's round), never from what an earlier epoch drew.
    """
    algo, net, rc = run.algo, run.net, run.rc
    w = net.params() if resume is None else resume.w
    configure_net(acc, net, w, rc)
    offset = FixedFormat(1, rc["bits"] - 1)
    bits = {"mixed": 64, "halp": offset.bits}.get(algo) or parse_format(str(parse_recipe(rc["recipe"])["update"])).bits
    if resume is None:
        started, first, saturated_epochs = time.perf_counter(), 1, 0
        grad = run.record(0, w, bits, started, host_ops={})
        run.save(0, started, w)
    else:
        started, first = time.perf_counter() - resume.seconds, resume.epoch + 1
        saturated_epochs = resume.saturated_epochs
        grad = net.grad(w)      # HALP's g̃: a function of w̃, the same bits again (one thread)
    count = rc["inner_steps"] * rc["batch_size"]
    for epoch in range(first, rc["epochs"] + 1):
        order = epoch_order(rc["seed"], epoch, net.n_samples, count)
        if algo == "mixed":
            w, costs = mixed_epoch(acc, net, w, order, rc["step_size"], rc["batch_size"],
                                   sync_every=rc["sync_every"], epoch=epoch)
        elif algo == "halp":
            mu = halp_mu(rc["mu"], rc["l2"], saturated_epochs, rc["mu_rule"])
            w, costs = halp_epoch(acc, net, w, grad, order, rc["step_size"], rc["batch_size"], epoch,
                                  float(np.linalg.norm(grad)) / (mu * offset.max_value), offset)
            saturated_epochs += costs.pop("saturations") > 0
        else:
            report = acc.run_net_epoch(epoch=epoch, step_size=rc["step_size"], batch_size=rc["batch_size"],
                                       order=order.astype(np.uint32))
            w = torch_layout(net.layers(), acc.fetch_net().weights)
            costs = {"ops": dict(report.ops), "memory": dict(report.memory), "host_ops": {}}
        grad = run.record(epoch, w, bits, started, **costs)
        run.save(epoch, started, w, saturated_epochs=saturated_epochs)
    return w


def halp_epoch(acc: AcceleratorClient, net: Network, anchor: np.ndarray, full_grad: np.ndarray, order: np.ndarray,
               step_size: float, batch_size: int, epoch: int, scale: float,
               offset: FixedFormat) -> tuple[np.ndarray, dict[str, Any]]:
    """One HALP epoch from the anchor w̃ with g̃ = ``full_grad`` = ∇f(w̃): recentre_net, the
    accelerator's steps on its offset z = scale·q, then w̃ + z here in float64; returns that
    and the epoch's accelerator costs and saturations."""
    layers = net.layers()
    acc.recentre_net(kernel_layout(layers, anchor), kernel_layout(layers, full_grad), scale, repr(offset))
    report = acc.run_net_epoch(epoch=epoch, step_size=step_size, batch_size=batch_size,
                               order=order.astype(np.uint32), algorithm="halp")
    state = acc.fetch_net()
    n = net.n_params
    # ‖g̃‖ for the scale (n multiplies and adds) and w̃ + scale·q (as many again)
    return anchor + torch_layout(layers, state.scale * state.offset), {
        "ops": dict(report.ops), "memory": dict(report.memory), "saturations": int(report.saturations),
        "host_ops": {"mul fp64": 2 * n, "add fp64": 2 * n}}
