"""The emulated backend: kernel spec v2 (``docs/accelerator.md``) in numpy, the reference.

It holds the training data in its low-precision format, the offset q with its anchor q_a, the
scale s and the anchor terms, and runs LP-SGD (``sgd`` kernel) and LP-SVRG / HALP (``svrg``
kernel) epochs on them. Every rounded operation goes through the accumulator ALU
(:class:`accel.spec.arith.AccArith`), the nonlinearity through :mod:`accel.spec.nonlinear`::

    >>> from protocol.formats import parse_format
    >>> b = EmulatedBackend()
    >>> b.configure(KernelConfig(problem="linear", n_samples=2, n_features=2, n_outputs=1,
    ...     data=parse_format("fixed<2,6>"), offset=parse_format("fixed<1,7>"), acc=parse_format("fp32"),
    ...     rounding="nearest_even", rbits=0, lanes=4, seed=0, l2=0.0, scale=1.0))
    1.0
    >>> b.load_data(0, np.eye(2), np.array([0.5, -0.25])).saturations
    0
    >>> b.run_epoch("sgd", epoch=0, steps=2, step_size=0.5, batch_size=1,
    ...             order=np.array([0, 1], dtype=np.uint32)).steps
    2

Epochs run in the compiled kernels of :mod:`accel.backends.compiled` (numba: the same
operations in the same order, so the same bits, at compiled speed) wherever they cover the
configuration, and in the numpy kernels below otherwise; ``svrg_step``, ``sgd_step`` and
``offset_update`` stay the readable reference the compiled kernels are tested against.
``EmulatedBackend(counting=True)`` always runs the numpy kernels, on a counting ALU, and
reports the operations it really performed instead of the analytic counts (slower; the tests
compare the two). The daemon checks states, shapes and capabilities before calling in here; this module
refuses only what depends on the values (a scale that rounds to 0 or ∞, a diverged epoch).
"""
from __future__ import annotations

import time
from collections import Counter
from functools import lru_cache

import numpy as np

from accel.backends import compiled
from accel.backends.compiled import StepConstants
from accel.backends.packed import PackedData
from accel.numerics import LaneRNG, quantize
from accel.spec import (Backend, EpochResult, KernelConfig, LoadResult, OffsetState,
                        PromoteResult, RecentreResult, nonlinear)
from accel.spec.backend import diverged
from accel.spec.gradstats import UpdateStats, UpdateTally
from accel.spec.arith import AccArith, CountingArith, rounded_scale
from accel.spec.counts import (WORD_BITS, ExactKeys, KernelFormats, epoch_memory, epoch_ops, exact_keys,
                               load_ops, promote_ops, recentre_ops, update_format)
from protocol.formats import FixedFormat, FloatFormat


def _exact_dot(A: AccArith, keys: ExactKeys, xb: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Step 2: x_i · v exact (checked at configure), then R into the accumulator format (step 3)."""
    B, F = xb.shape
    A.tally(keys.dot_mul, B * F * v.shape[1])
    A.tally(keys.dot_add, B * (F - 1) * v.shape[1])
    return A.round(xb @ v)


def _batch_gradient(A: AccArith, xb: np.ndarray, r: np.ndarray, k: StepConstants) -> np.ndarray:
    """Step 5: G = Σ_i R(x_iᵀ r_i) in batch order, each add rounded; then R(G·R(1/B))."""
    prods = A.mul(xb[:, :, None], r[:, None, :])
    g = prods[0]
    for term in prods[1:]:
        g = A.add(g, term)
    return A.mul(g, k.inv_b) if len(xb) > 1 else g


def svrg_step(A: AccArith, keys: ExactKeys, problem: str, xb: np.ndarray, pb: np.ndarray | None,
              q: np.ndarray, qa: np.ndarray, g_tilde: np.ndarray, k: StepConstants) -> np.ndarray:
    """One LP-SVRG/HALP step (1–6 and t of 7): returns t, the step in offset units."""
    dq = q - qa                                                      # 1 (exact)
    A.tally(keys.diff, dq.size)
    d = A.mul(k.s, _exact_dot(A, keys, xb, dq))                      # 2, 3
    if problem == "linear":                                          # 4
        r = d
    elif problem == "logistic":
        r = nonlinear.logistic_response(A, d, pb)
    else:
        r = nonlinear.softmax_response(A, d, pb)
    g = _batch_gradient(A, xb, r, k)                                 # 5
    u = A.add(A.add(g, A.mul(k.lam, A.mul(k.s, dq))), g_tilde)       # 6
    return A.mul(A.mul(k.alpha, u), k.inv_s)                         # 7: t


def sgd_step(A: AccArith, keys: ExactKeys, problem: str, xb: np.ndarray, yb: np.ndarray,
             q: np.ndarray, k: StepConstants) -> np.ndarray:
    """One LP-SGD step (w = s·q): returns t, the step in offset units."""
    a = A.mul(k.s, _exact_dot(A, keys, xb, q))
    if problem == "linear":
        dl = A.sub(a, yb[:, None])
    elif problem == "logistic":
        dl = A.sub(nonlinear.sigmoid(A, a), yb[:, None])
    else:
        onehot = np.zeros_like(a)
        onehot[np.arange(len(yb)), yb.astype(np.int64)] = 1.0
        dl = A.sub(nonlinear.softmax(A, a), onehot)
    g = _batch_gradient(A, xb, dl, k)
    u = A.add(g, A.mul(k.lam, A.mul(k.s, q)))
    return A.mul(A.mul(k.alpha, u), k.inv_s)


def offset_update(q: np.ndarray, t: np.ndarray, fmt: FixedFormat, rounding: str,
                  rng: LaneRNG | None = None, rbits: int | None = None) -> tuple[np.ndarray, int]:
    """Step 7: q ← Q_offset(q − t), rounded once from the exact difference; returns (q, saturations).
    It is :func:`offset_round`, then :func:`clamp_offset`.
    """
    return clamp_offset(offset_round(q, t, fmt, rounding, rng, rbits), fmt)


def offset_round(q: np.ndarray, t: np.ndarray, fmt: FixedFormat, rounding: str,
                 rng: LaneRNG | None = None, rbits: int | None = None) -> np.ndarray:
    """Step 7 before the clamp: Q(q − t) on the offset grid, possibly outside the offset range.

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
    return v


def clamp_offset(v: np.ndarray, fmt: FixedFormat) -> tuple[np.ndarray, int]:
    """Step 7's last act: v (on the grid) clamped into the offset range; returns (q, saturations)."""
    outside = (v < fmt.min_value) | (v > fmt.max_value)
    return np.clip(v, fmt.min_value, fmt.max_value), int(np.count_nonzero(outside))


@lru_cache(maxsize=64)
def _epoch_counts(algorithm: str, problem: str, fmts: KernelFormats, n_features: int, n_outputs: int,
                  batch: int, steps: int) -> tuple[dict[str, int], dict[str, int]]:
    """The analytic counts of an epoch, worked out once per shape: with the compiled kernels,
    building them afresh took a few percent of a digits epoch. Callers get copies."""
    shape = {"n_features": n_features, "n_outputs": n_outputs, "batch": batch, "steps": steps}
    return epoch_ops(algorithm, problem, fmts, **shape), epoch_memory(algorithm, problem, fmts, **shape)


class EmulatedBackend(Backend):
    """State and arithmetic of one configured accelerator (see the module docstring)."""

    name = "emulated"

    def __init__(self, counting: bool = False) -> None:
        self.counting = counting

    def _alu(self, acc: FloatFormat) -> AccArith:
        return CountingArith(acc) if self.counting else AccArith(acc)

    def _ops(self, analytic: dict[str, int]) -> dict[str, int]:
        """The counted operations since the last call in counting mode, else ``analytic``."""
        if not self.counting:
            return analytic
        ops, self.A.ops = dict(self.A.ops), Counter()
        return ops

    def configure(self, cfg: KernelConfig) -> float:
        self.cfg = cfg
        self.fmts = KernelFormats(cfg.data, cfg.offset, cfg.acc, cfg.rounding, cfg.rbits)
        self.A = self._alu(cfg.acc)
        self.data = PackedData(cfg.data, cfg.n_samples, cfg.n_features)
        self.y = np.zeros(cfg.n_samples)
        self.q = np.zeros((cfg.n_features, cfg.n_outputs))
        self.qa = np.zeros_like(self.q)
        self.s = rounded_scale(self.A, cfg.scale)
        self.g_tilde = np.zeros_like(self.q)
        self.anchor: np.ndarray | None = None
        self.counters = {"epochs": 0, "steps": 0, "saturations": 0, "recentres": 0, "promotes": 0}
        self._ops({})   # configure's own R(scale) is not a counted operation of any request
        return self.s

    def load_data(self, start: int, x: np.ndarray, y: np.ndarray) -> LoadResult:
        rows = slice(start, start + len(x))
        xq, sat = quantize(np.asarray(x, dtype=np.float64), self.fmts.data, return_saturated=True)
        self.data.put(start, xq)
        self.A.tally(f"round {self.fmts.data!r} nearest_even", x.size)
        y = np.asarray(y, dtype=np.float64)
        self.y[rows] = self.A.round(y) if self.cfg.problem == "linear" else y
        self.counters["saturations"] += sat
        return LoadResult(saturations=sat, ops=self._ops(load_ops(self.cfg.problem, self.fmts, rows=len(x),
                                                                  n_features=self.cfg.n_features)))

    def recentre(self, full_grad: np.ndarray, anchor: np.ndarray | None, scale: float | None) -> RecentreResult:
        A = self.A
        s = self.s if scale is None else rounded_scale(A, scale)
        with np.errstate(over="ignore"):
            g_tilde = A.round(np.asarray(full_grad, dtype=np.float64))
            # Held in the kernels' dtype for the format (float32 for fp32): half the memory, no copy per epoch.
            if anchor is not None and compiled.held_dtype(A.fmt) == np.float32:
                # R into fp32 is the cast to float32 (from float32, as protocol 1.3 sends them, nothing).
                A.tally(f"round {A.name} nearest_even", anchor.size)
                anchor = np.asarray(anchor).astype(np.float32)
            elif anchor is not None:
                anchor = A.round(np.asarray(anchor, dtype=np.float64)).astype(compiled.held_dtype(A.fmt))
        if scale is not None:
            self.q[:] = 0.0
            self.qa[:] = 0.0
        else:
            self.qa = self.q.copy()
        self.s, self.g_tilde, self.anchor = s, g_tilde, anchor
        self.counters["recentres"] += 1
        analytic = recentre_ops(self.fmts, n_features=self.cfg.n_features, n_outputs=self.cfg.n_outputs,
                                anchor_rows=0 if anchor is None else len(anchor), rescale=scale is not None)
        return RecentreResult(scale=self.s, ops=self._ops(analytic))

    def promote(self, offset: FixedFormat, acc: FloatFormat) -> PromoteResult:
        old, cfg = self.fmts, self.cfg
        new = KernelFormats(old.data, offset, acc, old.rounding, old.rbits)
        A = self._alu(acc) if acc != old.acc else self.A
        if acc != old.acc:
            # Stored accumulator-format operands move to the new format (validated before any change).
            s = rounded_scale(A, self.s)
            with np.errstate(over="ignore"):
                g_tilde = A.round(self.g_tilde)
                y = A.round(self.y) if cfg.problem == "linear" else self.y
                anchor = None if self.anchor is None else A.round(self.anchor.astype(np.float64))
            self.s, self.g_tilde, self.y = s, g_tilde, y
            self.anchor = None if anchor is None else anchor.astype(compiled.held_dtype(acc))
        self.q, sat_q = quantize(self.q, offset, return_saturated=True)
        self.qa, sat_a = quantize(self.qa, offset, return_saturated=True)
        A.tally(f"round {offset!r} nearest_even", self.q.size + self.qa.size)
        self.fmts, self.A = new, A
        self.counters["saturations"] += sat_q + sat_a
        self.counters["promotes"] += 1
        analytic = promote_ops(cfg.problem, old, new, n_samples=cfg.n_samples, n_features=cfg.n_features,
                               n_outputs=cfg.n_outputs, anchor_rows=0 if self.anchor is None else len(self.anchor))
        return PromoteResult(saturations=sat_q + sat_a, scale=self.s, ops=self._ops(analytic))

    def run_epoch(self, algorithm: str, epoch: int, steps: int, step_size: float, batch_size: int,
                  order: np.ndarray, statistics: bool = False) -> EpochResult:
        cfg, A, B, fmts = self.cfg, self.A, batch_size, self.fmts
        started = time.perf_counter()
        with np.errstate(over="ignore", invalid="ignore"):   # a NaN update is caught below
            k = StepConstants(s=self.s, inv_s=float(A.div(1.0, self.s)), alpha=float(A.round(step_size)),
                              lam=float(A.round(cfg.l2)), inv_b=float(A.div(1.0, B)) if B > 1 else 1.0)
            rng = LaneRNG(cfg.seed, epoch, cfg.lanes) if cfg.rounding == "stochastic" else None
            order = np.asarray(order, dtype=np.int64)
            if not self.counting and compiled.covers(fmts, algorithm, cfg.problem, self.anchor is not None):
                q, saturations, stats, failed = compiled.run_epoch(
                    algorithm, cfg.problem, fmts, k, data=self.data, y=self.y, anchor=self.anchor, q=self.q,
                    qa=self.qa, g_tilde=self.g_tilde, order=order, batch=B, steps=steps,
                    rng_states=None if rng is None else rng.states, statistics=statistics)
            else:
                q, saturations, stats, failed = self._reference_epoch(algorithm, k, rng, order, B, steps)
                stats = stats if statistics else None
        if failed >= 0:
            self._ops({})   # the discarded epoch's counts go with it
            # State is untouched: q is stored only after the whole epoch.
            raise diverged(epoch, failed, fmts.acc)
        self.q = q
        self.counters["epochs"] += 1
        self.counters["steps"] += steps
        self.counters["saturations"] += saturations
        ops, memory = _epoch_counts(algorithm, cfg.problem, fmts, cfg.n_features, cfg.n_outputs, B, steps)
        return EpochResult(steps=steps, ops=self._ops(dict(ops)), memory=dict(memory), saturations=saturations,
                           work={"seconds": round(time.perf_counter() - started, 6)}, stats=stats)

    def _reference_epoch(self, algorithm: str, k: StepConstants, rng: LaneRNG | None, order: np.ndarray,
                         B: int, steps: int) -> tuple[np.ndarray, int, UpdateStats | None, int]:
        """The numpy kernels, step by step: (q, saturations, statistics, −1), or
        (q, 0, None, step) at a NaN update."""
        cfg, A, fmts = self.cfg, self.A, self.fmts
        keys = exact_keys(algorithm, fmts, cfg.n_features)
        q, saturations, tally = self.q, 0, UpdateTally(fmts.offset)
        for t in range(steps):
            batch = order[t * B:(t + 1) * B]
            if algorithm == "svrg":
                pb = None if self.anchor is None else self.anchor[batch].astype(np.float64)
                t_step = svrg_step(A, keys, cfg.problem, self.data.rows(batch), pb, q, self.qa, self.g_tilde, k)
            else:
                t_step = sgd_step(A, keys, cfg.problem, self.data.rows(batch), self.y[batch], q, k)
            if np.isnan(t_step).any():
                return self.q, 0, None, t
            rounded = offset_round(q, t_step, fmts.offset, cfg.rounding, rng, cfg.rbits or None)
            tally.add(t_step, q, rounded)
            q, sat = clamp_offset(rounded, fmts.offset)
            A.tally(keys.update, q.size)
            A.tally(keys.offset_round, q.size)
            if rng is not None:
                A.tally("rng bits", (cfg.rbits or WORD_BITS) * q.size)
            saturations += sat
        return q, saturations, tally.result(), -1

    def fetch(self) -> OffsetState:
        return OffsetState(offset=self.q.copy(), scale=self.s, offset_format=self.fmts.offset,
                           counters=dict(self.counters))

    def restore(self, state: OffsetState) -> float:
        old, s = self.fmts, rounded_scale(self.A, state.scale)   # may refuse: before any change
        self.fmts = KernelFormats(old.data, state.offset_format, old.acc, old.rounding, old.rbits)
        self.q = np.array(state.offset, dtype=np.float64)
        self.qa = np.zeros_like(self.q)
        # No anchor until the next recentre (the daemon asks for one before an svrg epoch).
        self.g_tilde, self.anchor = np.zeros_like(self.q), None
        self.s, self.counters = s, dict(state.counters)
        self._ops({})   # as configure's: restoring is no counted operation of the kernel
        return self.s
