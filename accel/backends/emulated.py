"""The emulated backend: the inner-loop kernels of ``docs/accelerator.md`` (spec v1) in numpy.

It holds the training data in its low-precision format, the offset q with its anchor
q_a, the scale s and the anchor terms, and runs LP-SGD (``sgd`` kernel) and
LP-SVRG / HALP (``svrg`` kernel) epochs on them. Every elementary operation is a
float64 operation followed by one round-to-nearest-even R into the accumulator format::

    >>> b = EmulatedBackend()
    >>> b.configure(Configure(problem="linear", n_samples=2, n_features=2, n_outputs=1,
    ...     data_format="fixed<2,6>", offset_format="fixed<1,7>", acc_format="fp32",
    ...     rounding="nearest_even", rbits=0, lanes=4, seed=0, l2=0.0, scale=1.0))["scale"]
    1.0
    >>> b.load_data(LoadData(start=0, x=np.eye(2), y=np.array([0.5, -0.25])))
    {'saturations': 0}
    >>> b.run_epoch(RunEpoch(algorithm="sgd", epoch=0, steps=2, step_size=0.5,
    ...                      batch_size=1, order=np.array([0, 1], dtype=np.uint32))).steps
    2

The daemon (``accel.daemon``) checks states and shapes before calling in here; this
module rejects only what depends on the arithmetic (formats it cannot run exactly).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from accel.accounting import KernelFormats, epoch_memory, epoch_ops, update_format
from accel.numerics import LaneRNG, quantize
from protocol.codec import ProtocolError
from protocol.formats import FixedFormat, FloatFormat, FormatError, parse_format
from protocol.messages import Configure, EpochReport, LoadData, Promote, Recentre, RunEpoch, State

# |d| is clamped here before expm1 so every float64 intermediate of step 4 stays finite;
# beyond it the response r is saturated (e^700 ≈ 1e304) and the clamp changes nothing visible.
EXPM1_CLAMP = 700.0

# Offset roundings of kernel spec v1, and the widest offset (step 7 works in IL+3+FL bits).
OFFSET_ROUNDINGS = ("nearest_even", "stochastic")
MAX_OFFSET_BITS = 50

Rounder = Callable[[np.ndarray], np.ndarray]


def parse_element_format(text: str, role: str) -> FixedFormat | FloatFormat:
    """A data or offset format: fixed or float (block formats are not in kernel spec v1)."""
    try:
        fmt = parse_format(text)
    except FormatError as exc:
        raise ProtocolError("bad_value", f"{role}: {exc}") from None
    if not isinstance(fmt, (FixedFormat, FloatFormat)):
        raise ProtocolError("bad_value", f"{role} {text!r}: block formats are not supported by "
                                         "kernel spec v1; use fixed<IL,FL> or a float format")
    return fmt


def parse_offset_format(text: str) -> FixedFormat:
    """An offset format: signed, saturating fixed point (the offset must never wrap silently)."""
    fmt = parse_element_format(text, "offset_format")
    if not (isinstance(fmt, FixedFormat) and fmt.signed and fmt.overflow == "saturate"
            and fmt.bits <= MAX_OFFSET_BITS):
        raise ProtocolError("bad_value", f"offset_format {text!r} is not supported: it must be signed "
                                         f"saturating fixed<IL,FL> with IL+FL <= {MAX_OFFSET_BITS} "
                                         "(e.g. fixed<1,7>)")
    return fmt


def check_rounding(rounding: str) -> None:
    if rounding not in OFFSET_ROUNDINGS:
        raise ProtocolError("bad_value", f"rounding {rounding!r} is not supported for the offset; "
                                         f"choose one of {', '.join(OFFSET_ROUNDINGS)}")


def parse_acc_format(text: str) -> FloatFormat:
    """An accumulator format for which float64-op-then-round equals the correctly rounded op.

    Figueroa: a float64 result rounded once to precision p is the correctly rounded
    +, −, ×, ÷ when 53 >= 2p + 2, i.e. at most 24 stored mantissa bits; the exponent
    range is kept well inside float64's so no intermediate underflows first.
    """
    fmt = parse_element_format(text, "acc_format")
    fp64 = parse_format("fp64")
    if fmt == fp64:
        return fmt
    if (not isinstance(fmt, FloatFormat) or fmt.man_bits > 24
            or fmt.emin - fmt.man_bits < -400 or fmt.emax > 400):
        raise ProtocolError("bad_value", f"acc_format {text!r} is not supported: it must be fp64 or a "
                                         "float format with at most 24 mantissa bits and exponents "
                                         "within ±400 (e.g. fp32, bf16, fp16, fp16_ibm)")
    return fmt


def _quantum(fmt: FixedFormat | FloatFormat) -> float:
    """Every value of the format is an integer multiple of this."""
    return fmt.eps if isinstance(fmt, FixedFormat) else fmt.min_subnormal


def _max_abs(fmt: FixedFormat | FloatFormat) -> float:
    return max(abs(fmt.min_value), fmt.max_value) if isinstance(fmt, FixedFormat) else fmt.max_value


def _precision(fmt: FixedFormat | FloatFormat) -> int:
    """Significant bits of the format's values (fixed: the word length, sign included)."""
    return fmt.bits if isinstance(fmt, FixedFormat) else fmt.man_bits + 1


def check_exact_products(data: FixedFormat | FloatFormat, offset: FixedFormat, acc: FloatFormat,
                         n_features: int) -> None:
    """Reject formats for which the kernels would round anything twice.

    Step 2's dot x_i·dq: every product is a multiple of u = quantum(data)·quantum(offset), so the
    dot is exact in float64 when n_features · max|x| · max|dq| < 2^53 · u and u is a normal
    float64. The dot leaves the exact accumulator through R, as hardware converts a wide
    accumulator to the vector format, so s·R(s_i) is a product of two accumulator values.
    The products that mix formats, x_i·r_i and s·dq, are exact in float64 (so R rounds them
    once) when the operands' significant bits add up to at most 53; with an fp64 accumulator
    float64 itself rounds them, once.
    """
    u = _quantum(data) * _quantum(offset)
    dot_bound = n_features * _max_abs(data) * 2 * _max_abs(offset) / u   # |s_i| / u
    p_acc = 0 if acc == parse_format("fp64") else _precision(acc)
    problems = []
    if u < 2.0 ** -1022 or dot_bound >= 2.0 ** 53:
        problems.append("the dot product x·q is not exact in float64 "
                        "(needs n_features·max|x|·max|dq| < 2^53·quantum)")
    if p_acc and p_acc + _precision(data) > 53:
        problems.append("x·r is not exact in float64")
    if p_acc and p_acc + offset.bits + 1 > 53:
        problems.append("s·dq is not exact in float64")
    if problems:
        raise ProtocolError("bad_value", f"data_format {data!r}, offset_format {offset!r}, acc_format "
                                         f"{acc!r} with {n_features} features: {'; '.join(problems)}; "
                                         "use narrower formats")


def acc_rounder(fmt: FloatFormat) -> Rounder:
    """R: round float64 values to nearest-even in the accumulator format, as float64.

    fp64 is native; fp32 uses the float64 → float32 cast (IEEE RNE, subnormals included);
    any other format goes through ``accel.numerics.quantize``.
    """
    if fmt == parse_format("fp64"):
        return lambda v: v
    if fmt == parse_format("fp32"):
        # Overflow to ±inf is the format's rule: callers run under np.errstate(over="ignore").
        return lambda v: np.asarray(v, dtype=np.float64).astype(np.float32).astype(np.float64)
    return lambda v: quantize(np.asarray(v, dtype=np.float64), fmt, "nearest_even")


@dataclass(frozen=True)
class StepConstants:
    """Per-epoch constants of the kernels, each already rounded by R."""

    s: float          # scale
    inv_s: float      # R(1/s)
    alpha: float      # R(α)
    lam: float        # R(λ)
    inv_b: float      # R(1/B)


def _nonlinear_response(problem: str, d: np.ndarray, p: np.ndarray, R: Rounder) -> np.ndarray:
    """Step 4: r = ℓ'(a + d) − ℓ'(a) from the anchor terms p, in float64 rounded once."""
    if problem == "linear":
        return d
    e = np.expm1(np.clip(d, -EXPM1_CLAMP, EXPM1_CLAMP))
    if problem == "logistic":
        return R(p * (1 - p) * e / (1 + p * e))
    s = np.sum(p * e, axis=1, keepdims=True)
    return R(p * (e - s) / (1 + s))


def _batch_gradient(xb: np.ndarray, r: np.ndarray, k: StepConstants, R: Rounder) -> np.ndarray:
    """Step 5: G = Σ_i R(x_iᵀ r_i) in batch order, each add rounded; then R(G·R(1/B))."""
    prods = R(xb[:, :, None] * r[:, None, :])
    g = prods[0]
    for term in prods[1:]:
        g = R(g + term)
    return R(g * k.inv_b) if len(xb) > 1 else g


def svrg_step(problem: str, xb: np.ndarray, pb: np.ndarray | None, q: np.ndarray, qa: np.ndarray,
              g_tilde: np.ndarray, k: StepConstants, R: Rounder) -> np.ndarray:
    """One LP-SVRG/HALP step (1–6 and t of 7): returns t, the step in offset units."""
    dq = q - qa                                                      # 1 (exact)
    d = R(k.s * R(xb @ dq))                                          # 2, 3 (exact dot, to acc, × s)
    r = _nonlinear_response(problem, d, pb, R)                       # 4
    g = _batch_gradient(xb, r, k, R)                                 # 5
    u = R(R(g + R(k.lam * R(k.s * dq))) + g_tilde)                   # 6
    return R(R(k.alpha * u) * k.inv_s)                               # 7: t


def sgd_step(problem: str, xb: np.ndarray, yb: np.ndarray, q: np.ndarray, k: StepConstants,
             R: Rounder) -> np.ndarray:
    """One LP-SGD step (w = s·q): returns t, the step in offset units."""
    a = R(k.s * R(xb @ q))
    if problem == "linear":
        dl = R(a - yb[:, None])
    elif problem == "logistic":
        dl = R(R(1 / (1 + np.exp(-a))) - yb[:, None])     # exp overflow → σ = 0, as it should
    else:
        e = np.exp(a - a.max(axis=1, keepdims=True))
        onehot = np.zeros_like(a)
        onehot[np.arange(len(yb)), yb.astype(np.int64)] = 1.0
        dl = R(R(e / e.sum(axis=1, keepdims=True)) - onehot)
    g = _batch_gradient(xb, dl, k, R)
    u = R(g + R(k.lam * R(k.s * q)))
    return R(R(k.alpha * u) * k.inv_s)


def offset_update(q: np.ndarray, t: np.ndarray, fmt: FixedFormat, rounding: str,
                  rng: LaneRNG | None = None, rbits: int | None = None) -> tuple[np.ndarray, int]:
    """Step 7: q ← Q_offset(q − t), rounded once from the exact difference; returns (q, saturations).

    q is on the grid ε = 2^-FL, so q − t needs no wide adder: floor-based stochastic rounding
    commutes with grid shifts, Q(q − t) = q + Q(−t), and so does nearest-even except at ties,
    where q − t is exact in float64. |t| is first clamped to 2^(IL+1): beyond it q − t is out
    of range either way and saturates the same (and is counted the same).
    """
    bound = 2.0 ** (fmt.int_bits + 1)
    tc = np.clip(t, -bound, bound)
    wide = update_format(fmt)                                 # holds ±2^(IL+1): never saturates
    v = q + quantize(-tc, wide, rounding, rng=rng, rbits=rbits)   # exact: both on the grid
    if rounding == "nearest_even":
        y = -tc * 2.0 ** fmt.frac_bits                        # exact: a power-of-two scaling
        tie = y - np.floor(y) == 0.5                          # q − t is a half-grid point, exact
        v = np.where(tie, quantize(q - tc, wide), v)
    outside = (v < fmt.min_value) | (v > fmt.max_value)      # v is on the grid: only the clamp is left
    return np.clip(v, fmt.min_value, fmt.max_value), int(np.count_nonzero(outside))


class EmulatedBackend:
    """State and arithmetic of one configured accelerator (see the module docstring)."""

    name = "emulated"

    def configure(self, msg: Configure) -> dict:
        data = parse_element_format(msg.data_format, "data_format")
        offset = parse_offset_format(msg.offset_format)
        acc = parse_acc_format(msg.acc_format)
        check_rounding(msg.rounding)
        check_exact_products(data, offset, acc, msg.n_features)
        self.cfg = msg
        self.fmts = KernelFormats(data, offset, acc, msg.rounding, msg.rbits)
        self.R = acc_rounder(acc)
        self.xq = np.zeros((msg.n_samples, msg.n_features))
        self.y = np.zeros(msg.n_samples)
        self.q = np.zeros((msg.n_features, msg.n_outputs))
        self.qa = np.zeros_like(self.q)
        self.s = self._rounded_scale(msg.scale)
        self.g_tilde = np.zeros_like(self.q)
        self.anchor: np.ndarray | None = None
        self.counters = {"epochs": 0, "steps": 0, "saturations": 0, "recentres": 0, "promotes": 0}
        return {"scale": self.s, "data_format": repr(data), "offset_format": repr(offset),
                "acc_format": repr(acc)}

    def _rounded_scale(self, scale: float) -> float:
        with np.errstate(over="ignore"):
            s = float(self.R(np.array(scale)))
        if not (np.isfinite(s) and s > 0):
            raise ProtocolError("bad_value", f"scale {scale!r} rounds to {s!r} in acc_format "
                                             f"{self.fmts.acc!r}; it must stay finite and > 0")
        return s

    def load_data(self, msg: LoadData) -> dict:
        rows = slice(msg.start, msg.start + len(msg.x))
        self.xq[rows], sat = quantize(np.asarray(msg.x, dtype=np.float64), self.fmts.data,
                                       return_saturated=True)
        y = np.asarray(msg.y, dtype=np.float64)
        self.y[rows] = self.R(y) if self.cfg.problem == "linear" else y
        self.counters["saturations"] += sat
        return {"saturations": sat}

    def recentre(self, msg: Recentre) -> dict:
        if msg.scale is not None:
            self.s = self._rounded_scale(msg.scale)
            self.q[:] = 0.0
            self.qa[:] = 0.0
        else:
            self.qa = self.q.copy()
        with np.errstate(over="ignore"):
            self.g_tilde = self.R(np.asarray(msg.full_grad, dtype=np.float64))
        self.anchor = None if msg.anchor is None else self.R(np.asarray(msg.anchor, dtype=np.float64))
        self.counters["recentres"] += 1
        return {"scale": self.s}

    def promote(self, msg: Promote) -> dict:
        offset = parse_offset_format(msg.offset_format)
        acc = self.fmts.acc if msg.acc_format is None else parse_acc_format(msg.acc_format)
        check_exact_products(self.fmts.data, offset, acc, self.cfg.n_features)
        R = acc_rounder(acc)
        if acc != self.fmts.acc:
            # Stored accumulator-format operands move to the new format (validated before any change).
            with np.errstate(over="ignore"):
                s = float(R(np.array(self.s)))
            if not (np.isfinite(s) and s > 0):
                raise ProtocolError("bad_value", f"the scale {self.s!r} rounds to {s!r} in acc_format {acc!r}")
            self.s, self.g_tilde, self.y = s, R(self.g_tilde), R(self.y) if self.cfg.problem == "linear" else self.y
            self.anchor = None if self.anchor is None else R(self.anchor)
        self.q, sat_q = quantize(self.q, offset, return_saturated=True)
        self.qa, sat_a = quantize(self.qa, offset, return_saturated=True)
        self.fmts = KernelFormats(self.fmts.data, offset, acc, self.fmts.rounding, self.fmts.rbits)
        self.R = R
        self.counters["saturations"] += sat_q + sat_a
        self.counters["promotes"] += 1
        return {"saturations": sat_q + sat_a, "offset_format": repr(offset), "acc_format": repr(acc),
                "scale": self.s}

    def run_epoch(self, msg: RunEpoch) -> EpochReport:
        cfg, R, B = self.cfg, self.R, msg.batch_size
        with np.errstate(over="ignore", invalid="ignore"):   # a NaN update is caught below
            k = StepConstants(s=self.s, inv_s=float(R(np.array(1.0 / self.s))),
                              alpha=float(R(np.array(msg.step_size))), lam=float(R(np.array(cfg.l2))),
                              inv_b=float(R(np.array(1.0 / B))))
            rng = LaneRNG(cfg.seed, msg.epoch, cfg.lanes) if cfg.rounding == "stochastic" else None
            order = np.asarray(msg.order, dtype=np.int64)
            q, saturations = self.q, 0
            for t in range(msg.steps):
                batch = order[t * B:(t + 1) * B]
                if msg.algorithm == "svrg":
                    pb = None if self.anchor is None else self.anchor[batch]
                    t_step = svrg_step(cfg.problem, self.xq[batch], pb, q, self.qa, self.g_tilde, k, R)
                else:
                    t_step = sgd_step(cfg.problem, self.xq[batch], self.y[batch], q, k, R)
                if np.isnan(t_step).any():
                    # State is untouched: q is stored only after the whole epoch.
                    raise ProtocolError("bad_value", f"epoch {msg.epoch} step {t}: the update is NaN: the "
                                        f"iteration diverged until the accumulator {self.fmts.acc!r} "
                                        "overflowed (too few offset bits for this problem, or too "
                                        "large a step size); the offset keeps its value from before "
                                        "this epoch")
                q, sat = offset_update(q, t_step, self.fmts.offset, cfg.rounding, rng, cfg.rbits or None)
                saturations += sat
        self.q = q
        self.counters["epochs"] += 1
        self.counters["steps"] += msg.steps
        self.counters["saturations"] += saturations
        shape = dict(n_features=cfg.n_features, n_outputs=cfg.n_outputs, batch=B, steps=msg.steps)
        return EpochReport(epoch=msg.epoch, steps=msg.steps,
                           ops=epoch_ops(msg.algorithm, cfg.problem, self.fmts, **shape),
                           memory=epoch_memory(msg.algorithm, cfg.problem, self.fmts, **shape),
                           saturations=saturations)

    def fetch(self) -> State:
        return State(offset=self.q.copy(), scale=self.s, offset_format=repr(self.fmts.offset),
                     counters=dict(self.counters))
