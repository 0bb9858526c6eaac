"""Dense networks on the accelerator: minibatch gradients, LP-SGD and HALP epochs with the layer kernel.

    net = NetKernel([(64, 128, "relu"), (128, 10, "none")], RECIPES["fp8-ibm"], n_samples=1438,
                    lanes=16, seed=0, l2=1e-4, weights=start)       # start: flat float64, kernel layout
    net.load_data(0, x, y)                      # rows of the training set; x rounded into activations
    g = net.gradient(w, idx)                    # Q_w(w)'s minibatch gradient, values of weight_grads
    report = net.run_epoch(epoch=1, steps=T, step_size=α, batch_size=B, order=order)
    net.recentre(anchor, full_grad, scale, FixedFormat(1, 7))    # HALP: w̃, g̃ = ∇f(w̃), z = scale·q, q = 0
    ops, memory, saturations, seconds = net.run_halp_epoch(2, T, α, B, order)
    net.halp.offset                             # q, values of fixed<1,7>
    net.weights                                 # the master weights, values of the update format

Layout: the parameters are one flat vector, layer after layer, each layer's W of
(fan_in + 1) × fan_out in C order with the bias as its last row: the kernel multiplies the
activations with a column of ones appended (1 is a value of every activations format the
kernel accepts), so the bias is one more row of the dense product and its gradient one more
row of ΔW, both under the layer kernel's one arithmetic rule (:mod:`accel.spec.layer`).

One minibatch, in this order (B = len(idx)):

1. A₀ = the rows ``idx`` of the data, held as activations values since load;
2. forward, layer by layer: Z = dense_forward([A, 1], Q_w(W)); A = relu_forward(Z) on a
   hidden layer, Z itself (the logits) on the last;
3. p = softmax_xent_forward(Z_L, y); δ = softmax_xent_backward(p, y);
4. backward, last layer first: δ = relu_backward(Z, δ) on a hidden layer; (δX, ΔW) =
   dense_backward([A, 1], Q_w(W), δ); δ = δX without its last column (the ones'). The first
   layer's δX is computed and dropped, as the layer kernel's backward defines it.

LP-SGD (:meth:`NetKernel.run_epoch`) keeps the master weights w in the update format; each
step computes ΔW at Q_w(w) as above and then, layer by layer in order, with λ > 0 adds the
decay in the weight-gradient format, ΔW ← R_wg(ΔW + R_wg(R_u(λ)·w)) (the product exact, each
sum rounded once, nearest-even), and applies :func:`accel.spec.layer.weight_update` (stochastic
rounding: one ``words`` call per layer per step from a :class:`accel.numerics.LaneRNG` seeded
with (seed, epoch, lanes)). The gradient request carries no decay: the host adds λ·w in
float64. Operations and memory traffic are :func:`accel.spec.layer.layer_ops` and
:func:`~accel.spec.layer.layer_memory` summed over every call (``"ops"``/``"memory"`` of a
report, the keys of the linear kernel's reports).

HALP (De Sa et al. 2018, "High-Accuracy Low-Precision Training"; :meth:`NetKernel.recentre`,
:meth:`NetKernel.run_halp_epoch`): the host sends the anchor w̃ and g̃ = ∇f(w̃) (float64, λw̃
included) with the offset's scale s and format O (signed fixed, at most 16 bits); the offset
is z = s·q with q on O, q = 0 after each recentre. An epoch computes Q_w(w̃) once, α' = α/s
(float64), draws from a :class:`accel.numerics.LaneRNG` seeded with (seed, epoch, lanes), and
then, for each minibatch idx, in this order (every float64 operation rounded once, as numpy does):

1. z = s·q (float64); W = Q_w(w̃ + z), nearest-even into the weights format;
2. g = ΔW at W over idx, then g_a = ΔW at Q_w(w̃) over idx (the passes above, flat);
3. v = g − g_a; with λ > 0, v = v + λ·z; t = −(α'·(v + g̃)) (float64, in that order);
4. q ← q + t rounded once from its exact value into O, stochastically, with one ``words``
   call of n_params words (flat order), saturating at O's range (counted as saturations).

The master weights are left alone. Operations and traffic: :func:`halp_counts`.
"""
from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from accel.backends.layer_compiled import matmul_swamped
from accel.numerics import LaneRNG, quantize
from accel.numerics.arith import add
from accel.spec import layer
from accel.spec.backend import KernelError
from accel.spec.counts import WORD_BITS
from accel.spec.layer import LayerFormats
from protocol.formats import FixedFormat, Format

ACTIVATIONS = ("relu", "none")
OFFSET_BITS = 16         # the widest HALP offset format (cosim energy sizes the offset memory for it)


@dataclass(frozen=True)
class DenseLayer:
    fan_in: int
    fan_out: int
    activation: str          # "relu" on hidden layers, "none" on the last (softmax is in the loss)

    @property
    def n_params(self) -> int:
        return (self.fan_in + 1) * self.fan_out


def check_layers(layers: list[DenseLayer]) -> None:
    """KernelError unless ``layers`` chain (each fan_in the previous fan_out), the last has no
    activation and at least two classes, and every hidden one is ReLU."""
    if not layers:
        raise KernelError("a network needs at least one layer")
    for i, (a, b) in enumerate(itertools.pairwise(layers)):
        if b.fan_in != a.fan_out:
            raise KernelError(f"layer {i + 1} has fan_in {b.fan_in}; layer {i} has fan_out {a.fan_out}")
    if any(lay.activation != "relu" for lay in layers[:-1]) or layers[-1].activation != "none":
        raise KernelError("hidden layers take activation 'relu', the last layer 'none' (its softmax is the loss's)")
    if layers[-1].fan_out < 2:
        raise KernelError(f"the last layer's fan_out is the number of classes, at least 2; got {layers[-1].fan_out}")


def _with_ones(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a, np.ones((a.shape[0], 1))], axis=1)


def step_counts(layers: list[DenseLayer], fmts: LayerFormats, batch: int, *, update: bool,
                decay: bool) -> tuple[Counter, Counter]:
    """(operations, bytes) of one minibatch of ``batch`` samples; with ``update`` also its
    LP-SGD update (and the decay's two roundings per weight with ``decay``)."""
    ops, mem = Counter(), Counter()
    last = len(layers) - 1

    def call(kind: str, **shape: int) -> None:
        ops.update(layer.layer_ops(kind, fmts, batch=batch, **shape))
        mem.update(layer.layer_memory(kind, fmts, batch=batch, **shape))

    for i, lay in enumerate(layers):
        call("dense_forward", fan_in=lay.fan_in + 1, fan_out=lay.fan_out)
        call("dense_backward", fan_in=lay.fan_in + 1, fan_out=lay.fan_out)
        if i < last:
            call("relu_forward", fan_in=lay.fan_out, fan_out=lay.fan_out)
            call("relu_backward", fan_in=lay.fan_out, fan_out=lay.fan_out)
        if update:
            call("update", fan_in=lay.fan_in + 1, fan_out=lay.fan_out)
            if decay:
                n = lay.n_params
                ops[f"mul {fmts.update!r}*{fmts.update!r}"] += n
                ops[f"round {fmts.weight_grads!r} nearest_even"] += n
                ops[f"add {fmts.weight_grads!r}"] += n      # nearest-even, as counts.py's plain adds
    classes = layers[-1].fan_out
    call("softmax_xent_forward", fan_in=classes, fan_out=classes)
    call("softmax_xent_backward", fan_in=classes, fan_out=classes)
    return ops, mem


class NetKernel:
    """A dense network's data and master weights, and its passes (module docstring)."""

    def __init__(self, layers: list[DenseLayer], fmts: LayerFormats, *, n_samples: int, lanes: int,
                 seed: int, l2: float, weights: np.ndarray) -> None:
        check_layers(layers)
        if quantize(1.0, fmts.activations) != 1.0:
            raise KernelError(f"activations format {fmts.activations!r} does not hold 1, the bias input")
        self.layers, self.fmts = list(layers), fmts
        self.n_samples, self.lanes, self.seed, self.l2 = n_samples, lanes, seed, l2
        self.n_params = sum(lay.n_params for lay in layers)
        self.x = np.zeros((n_samples, layers[0].fan_in))
        self.y = np.zeros(n_samples, dtype=np.intp)
        self.saturations = 0
        self.weights = self._start(weights)
        self._counts: dict[tuple[int, bool], tuple[Counter, Counter]] = {}
        self.halp: HalpState | None = None       # set by recentre
        self.swamped = 0          # swamped adds of the dense products since the request began

    def _gemm(self, a: np.ndarray, b: np.ndarray, acc, chunk: int | None) -> np.ndarray:
        """The layer kernel's product (compiled), its swamped adds added to ``self.swamped``."""
        out, swamped = matmul_swamped(a, b, acc, chunk)
        self.swamped += swamped
        return out

    def swamped_ops(self) -> dict[str, int]:
        """The last request's swamped adds as an operation count, ``{"swamped add <acc>": n}``
        ({} when none): a diagnostic, each of them also counted under ``add <acc>``."""
        return {f"swamped add {self.fmts.acc!r}": self.swamped} if self.swamped else {}

    def _start(self, w: np.ndarray) -> np.ndarray:
        """``w`` rounded to nearest-even into the update format: the master weights."""
        self.check_params("weights", w)
        return quantize(np.asarray(w, dtype=np.float64), self.fmts.update)

    def check_params(self, name: str, w: np.ndarray) -> None:
        if w.shape != (self.n_params,):
            raise KernelError(f"{name} must be the {self.n_params} parameters of the configured network "
                              f"(one flat vector); got shape {list(w.shape)}")

    def load_data(self, start: int, x: np.ndarray, y: np.ndarray) -> int:
        """Rows ``start`` … of the data, x rounded to nearest-even into the activations format;
        returns the number of elements that saturated there."""
        q, sat = quantize(np.asarray(x, dtype=np.float64), self.fmts.activations, return_saturated=True)
        self.x[start:start + len(x)] = q
        self.y[start:start + len(x)] = np.asarray(y).astype(np.intp)
        self.saturations += int(sat)
        return int(sat)

    def _split(self, flat: np.ndarray) -> list[np.ndarray]:
        out, at = [], 0
        for lay in self.layers:
            out.append(flat[at:at + lay.n_params].reshape(lay.fan_in + 1, lay.fan_out))
            at += lay.n_params
        return out

    def _backprop(self, Ws: list[np.ndarray], idx: np.ndarray) -> tuple[list[np.ndarray], float]:
        """(ΔW per layer, the loss monitor) of the minibatch ``idx`` at weights ``Ws`` (weights values)."""
        f, last = self.fmts, len(self.layers) - 1
        a, y = self.x[idx], self.y[idx]
        inputs, sums = [], []
        for i, W in enumerate(Ws):
            inputs.append(_with_ones(a))
            z = layer.dense_forward(inputs[-1], W, f, gemm=self._gemm)
            sums.append(z)
            a = layer.relu_forward(z) if i < last else z
        p, loss = layer.softmax_xent_forward(a, y, f)
        delta = layer.softmax_xent_backward(p, y, f)
        grads: list[np.ndarray] = [np.empty(0)] * len(Ws)
        for i in range(last, -1, -1):
            if i < last:
                delta = layer.relu_backward(sums[i], delta)
            dx, grads[i] = layer.dense_backward(inputs[i], Ws[i], delta, f, gemm=self._gemm)
            delta = dx[:, :-1]
        return grads, loss

    def gradient(self, w: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, float]:
        """(ΔW at Q_w(w) over the samples ``idx``, flat, values of weight_grads; the loss monitor);
        its swamped adds in :meth:`swamped_ops`."""
        self.check_params("weights", w)
        self.swamped = 0
        Ws = self._split(quantize(np.asarray(w, dtype=np.float64), self.fmts.weights))
        grads, loss = self._backprop(Ws, np.asarray(idx, dtype=np.intp))
        return np.concatenate([g.ravel() for g in grads]), loss

    def counts(self, batch: int, *, update: bool) -> tuple[Counter, Counter]:
        """(operations, bytes) of one step of ``batch`` samples (:func:`step_counts`), kept per size."""
        key = (batch, update)
        if key not in self._counts:
            self._counts[key] = step_counts(self.layers, self.fmts, batch, update=update,
                                            decay=update and self.l2 > 0)
        return self._counts[key]

    def run_epoch(self, epoch: int, steps: int, step_size: float, batch_size: int,
                  order: np.ndarray) -> tuple[dict[str, int], dict[str, int], float]:
        """``steps`` LP-SGD steps on the samples of ``order``: (ops, memory, seconds); ops with
        the epoch's swamped adds (:meth:`swamped_ops`)."""
        started = time.perf_counter()
        self.swamped = 0
        f = self.fmts
        rng = LaneRNG(self.seed, epoch, self.lanes) if f.update_rounding == "stochastic" else None
        lam = quantize(float(self.l2), f.update)
        masters = [m.copy() for m in self._split(self.weights)]
        Ws = [quantize(m, f.weights) for m in masters]
        order = np.asarray(order, dtype=np.intp)
        for t in range(steps):
            grads, _ = self._backprop(Ws, order[t * batch_size:(t + 1) * batch_size])
            for i, g in enumerate(grads):
                if lam > 0:
                    g = add(g, quantize(lam * masters[i], f.weight_grads), f.weight_grads, "nearest_even")
                masters[i], Ws[i] = layer.weight_update(masters[i], g, step_size, f, rng=rng)
        self.weights = np.concatenate([m.ravel() for m in masters])
        ops, mem = self.counts(batch_size, update=True)
        return ({**{k: v * steps for k, v in ops.items()}, **self.swamped_ops()},
                {k: v * steps for k, v in mem.items()}, time.perf_counter() - started)

    def recentre(self, anchor: np.ndarray, full_grad: np.ndarray, scale: float, offset: Format) -> None:
        """HALP's bit centring: hold the anchor w̃ and g̃ = ∇f(w̃) (float64, flat) and put the
        offset z = scale·q at q = 0 on ``offset``, a signed fixed format of at most 16 bits."""
        self.check_params("anchor", anchor)
        self.check_params("full_grad", full_grad)
        if not (isinstance(offset, FixedFormat) and offset.signed and offset.bits <= OFFSET_BITS):
            raise KernelError(f"offset_format must be a signed fixed format fixed<IL,FL> of at most "
                              f"{OFFSET_BITS} bits; got {offset!r}")
        self.halp = HalpState(np.array(anchor, dtype=np.float64), np.array(full_grad, dtype=np.float64),
                              float(scale), offset, np.zeros(self.n_params))

    def run_halp_epoch(self, epoch: int, steps: int, step_size: float, batch_size: int,
                       order: np.ndarray) -> tuple[dict[str, int], dict[str, int], int, float]:
        """``steps`` HALP steps on the offset (module docstring): (ops, memory, saturations, seconds)."""
        h = self.halp
        if h is None:
            raise KernelError("run_net_epoch with algorithm halp needs recentre_net first")
        started = time.perf_counter()
        self.swamped = 0
        f, fmt = self.fmts, h.offset_format
        rng = LaneRNG(self.seed, epoch, self.lanes)
        rate = step_size / h.scale
        at_anchor = self._split(quantize(h.anchor, f.weights))
        order = np.asarray(order, dtype=np.intp)
        q, saturations = h.offset, 0
        for t in range(steps):
            idx = order[t * batch_size:(t + 1) * batch_size]
            z = h.scale * q
            g = _flat(self._backprop(self._split(quantize(h.anchor + z, f.weights)), idx)[0])
            v = g - _flat(self._backprop(at_anchor, idx)[0])
            if self.l2 > 0:
                v = v + self.l2 * z
            step = -(rate * (v + h.full_grad))
            target = q + step
            saturations += int(np.count_nonzero((target > fmt.max_value) | (target < fmt.min_value)))
            q = add(q, step, fmt, "stochastic", rng=rng, rbits=f.rbits)
        h.offset = q
        ops, mem = halp_counts(self.layers, f, fmt, batch_size, steps, decay=self.l2 > 0)
        return {**ops, **self.swamped_ops()}, mem, saturations, time.perf_counter() - started


@dataclass
class HalpState:
    """What recentre_net sets: w̃, g̃ (float64, flat), the offset's scale, format and q."""
    anchor: np.ndarray
    full_grad: np.ndarray
    scale: float
    offset_format: FixedFormat
    offset: np.ndarray


def _flat(grads: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([g.ravel() for g in grads])


def halp_counts(layers: list[DenseLayer], fmts: LayerFormats, offset: FixedFormat, batch: int, steps: int, *,
                decay: bool) -> tuple[dict[str, int], dict[str, int]]:
    """(operations, bytes) of a HALP epoch of ``steps`` minibatches of ``batch`` samples: two
    gradient passes per step (:func:`step_counts`) and the float64 and offset arithmetic of the
    module docstring's steps, plus Q_w(w̃) and α/scale once per epoch."""
    n, f, o = sum(lay.n_params for lay in layers), fmts, repr(offset)
    ops, mem = step_counts(layers, fmts, batch, update=False, decay=False)
    ops, mem = Counter({k: 2 * v for k, v in ops.items()}), Counter({k: 2 * v for k, v in mem.items()})
    ops[f"mul fp64*{o}"] += n                                   # z = scale·q
    ops["add fp64"] += (4 if decay else 3) * n                  # w̃ + z, g − g_a, + λz, + g̃
    ops["mul fp64*fp64"] += (2 if decay else 1) * n             # λ·z, (α/scale)·v
    ops[f"round {f.weights!r} nearest_even"] += n               # Q_w(w̃ + z)
    ops[f"add {o}"] += n                                        # q + step, rounded once
    ops[f"round {o} stochastic"] += n
    ops["rng bits"] += (f.rbits or WORD_BITS) * n
    bits = {"anchor read": 64 * n, "full gradient read": 64 * n, "offset read": 2 * offset.bits * n,
            "offset write": offset.bits * n, "weights write": f.weights.bits * n,
            "weight gradients read": 2 * f.weight_grads.bits * n}
    for key, b in bits.items():
        mem[key] += -(-b // 8)
    ops_epoch = {k: v * steps for k, v in ops.items()}
    ops_epoch[f"round {f.weights!r} nearest_even"] += n        # Q_w(w̃), held for the epoch
    ops_epoch["div fp64"] = 1                                   # α/scale
    mem_epoch = {k: v * steps for k, v in mem.items()}
    mem_epoch["anchor read"] += 8 * n
    mem_epoch["weights write"] += -(-f.weights.bits * n // 8)
    return ops_epoch, mem_epoch
