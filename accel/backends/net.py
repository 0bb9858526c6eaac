"""Dense networks on the accelerator: minibatch gradients and LP-SGD epochs with the layer kernel.

    net = NetKernel([(64, 128, "relu"), (128, 10, "none")], RECIPES["fp8-ibm"], n_samples=1438,
                    lanes=16, seed=0, l2=1e-4, weights=start)       # start: flat float64, kernel layout
    net.load_data(0, x, y)                      # rows of the training set; x rounded into activations
    g = net.gradient(w, idx)                    # Q_w(w)'s minibatch gradient, values of weight_grads
    report = net.run_epoch(epoch=1, steps=T, step_size=α, batch_size=B, order=order)
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
"""
from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from accel.backends.layer_compiled import matmul
from accel.numerics import LaneRNG, quantize
from accel.numerics.arith import add
from accel.spec import layer
from accel.spec.backend import KernelError
from accel.spec.layer import LayerFormats

ACTIVATIONS = ("relu", "none")


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
            z = layer.dense_forward(inputs[-1], W, f, gemm=matmul)
            sums.append(z)
            a = layer.relu_forward(z) if i < last else z
        p, loss = layer.softmax_xent_forward(a, y, f)
        delta = layer.softmax_xent_backward(p, y, f)
        grads: list[np.ndarray] = [np.empty(0)] * len(Ws)
        for i in range(last, -1, -1):
            if i < last:
                delta = layer.relu_backward(sums[i], delta)
            dx, grads[i] = layer.dense_backward(inputs[i], Ws[i], delta, f, gemm=matmul)
            delta = dx[:, :-1]
        return grads, loss

    def gradient(self, w: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, float]:
        """(ΔW at Q_w(w) over the samples ``idx``, flat, values of weight_grads; the loss monitor)."""
        self.check_params("weights", w)
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
        """``steps`` LP-SGD steps on the samples of ``order``: (ops, memory, seconds)."""
        started = time.perf_counter()
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
        return ({k: v * steps for k, v in ops.items()}, {k: v * steps for k, v in mem.items()},
                time.perf_counter() - started)
