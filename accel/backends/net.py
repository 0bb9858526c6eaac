"""Networks on the accelerator: minibatch gradients, LP-SGD and HALP epochs with the layer kernel.

    net = NetKernel([DenseLayer(64, 128, "relu"), DenseLayer(128, 10, "none")], RECIPES["fp8-ibm"],
                    n_samples=1438, lanes=16, seed=0, l2=1e-4, weights=start)   # flat float64, kernel layout
    cnn = [layer_of(i, entry, 4096) for i, entry in enumerate(                   # configure_net's entries
        [["conv3", 1, 6, 8, 8, "relu", 2], ["conv3", 6, 16, 4, 4, "relu", 2], [64, 10, "none"]])]
    net.load_data(0, x, y)                      # rows of the training set; x rounded into activations
    g = net.gradient(w, idx)                    # Q_w(w)'s minibatch gradient, values of weight_grads
    G, loss = net.local_steps(w, idx, steps=4, step_size=α, epoch=1, first_step=8)   # mixed's K = 4
    report = net.run_epoch(epoch=1, steps=T, step_size=α, batch_size=B, order=order)
    net.recentre(anchor, full_grad, scale, FixedFormat(1, 7))    # HALP: w̃, g̃ = ∇f(w̃), z = scale·q, q = 0
    ops, memory, saturations, seconds = net.run_halp_epoch(2, T, α, B, order)
    net.halp.offset                             # q, values of fixed<1,7>
    net.weights                                 # the master weights, values of the update format

Layers (:class:`DenseLayer`, :class:`ConvLayer`; configure_net's entries, :func:`layer_of`):
dense [fan_in, fan_out, activation]; a 3×3 convolution with padding 1 ["conv3", C_in, C_out,
H, W, activation, pool] on C_in × H × W images, then a pool × pool max-pool (pool 1: none,
2: the layer kernel's 2×2). Samples are flat vectors between layers, an image's in C order
(c, row, column), so a convolution's fan_in is C_in·H·W and its fan_out C_out·(H/pool)·(W/pool);
the next layer's fan_in must be that, and a convolution after a convolution must take its
images as they come. Hidden layers take ReLU; the last is dense with none (the logits).

Layout: the parameters are one flat vector, layer after layer, each layer's W in C order with
the bias as its last row: a dense layer's (fan_in + 1) × fan_out, a convolution's
(9·C_in + 1) × C_out with row c·9 + 3·ky + kx (im2col's column order; torch's
C_out × C_in × 3 × 3 weight flattened per output channel and transposed). The kernel
multiplies the activations (a convolution: the im2col rows) with a column of ones appended
(1 is a value of every activations format the kernel accepts), so the bias is one more row
of the product and its gradient one more row of ΔW, both under the layer kernel's one
arithmetic rule (:mod:`accel.spec.layer`).

One minibatch, in this order (B = len(idx)):

1. A₀ = the rows ``idx`` of the data, held as activations values since load;
2. forward, layer by layer: dense, Z = dense_forward([A, 1], Q_w(W)); convolution, A seen as
   B × C_in × H × W images, Z = conv3_forward(A, Q_w(W)) (the bias row against im2col's ones
   column); then A = relu_forward(Z) on a hidden layer, and a convolution with pool 2 takes
   (A, I) = maxpool2_forward(A), I the windows' argmax; the last layer's Z are the logits;
3. p = softmax_xent_forward(Z_L, y); δ = softmax_xent_backward(p, y);
4. backward, last layer first, the forward's steps undone: δ = maxpool2_backward(δ, I) after
   a pool; δ = relu_backward(Z, δ) on a hidden layer; then (δX, ΔW) = dense_backward([A, 1],
   Q_w(W), δ) and δ = δX without its last column (the ones'), or (δX, ΔW) =
   conv3_backward(A, Q_w(W), δ) (δX by the turned kernel without the bias row; ΔW with the
   bias row last) and δ = δX flat. The first layer's δX is computed and dropped, as the layer
   kernel's backward defines it.

LP-SGD (:meth:`NetKernel.run_epoch`) keeps the master weights w in the update format; each
step computes ΔW at Q_w(w) as above and then, layer by layer in order, with λ > 0 adds the
decay in the weight-gradient format, ΔW ← R_wg(ΔW + R_wg(R_u(λ)·w)) (the product exact, each
sum rounded once, nearest-even), and applies :func:`accel.spec.layer.weight_update` (stochastic
rounding: one ``words`` call per layer per step from a :class:`accel.numerics.LaneRNG` seeded
with (seed, epoch, lanes)). The gradient request carries no decay: the host adds λ·w in
float64. Operations and memory traffic are :func:`accel.spec.layer.layer_ops` and
:func:`~accel.spec.layer.layer_memory` summed over every call (``"ops"``/``"memory"`` of a
report, the keys of the linear kernel's reports; a layer's calls are its ``calls()``, a
convolution's with ``bias``, the update's over W's rows and columns).

Local steps (:meth:`NetKernel.local_steps`, net_grad with steps = K > 1; mixed's rounds): the
host sends float64 weights w, K·B indices, α, its epoch e and the index t of the round's first
step in the epoch (mixed: 0, K, 2K, …). In this order:

1. the copy c = w rounded to nearest-even into the update format (as configure_net rounds the
   master weights), and Q_w(c);
2. for k = 1 … K over the k-th B indices: ΔW_k at Q_w(c) exactly as :meth:`NetKernel.gradient`
   computes it; G = ΔW_1, then G = G + ΔW_k (float64, in that order); after every step but the
   last (the copy is dropped at the round's end), c takes an LP-SGD update exactly as
   :meth:`NetKernel.run_epoch`'s (the decay with λ of configure_net, then ``weight_update``);
3. the reply is G and the mean of the K losses.

The stochastic rounding draws from the round's own generator, :func:`round_rng`:
``LaneRNG(seed ⊕ (wang32(t) << 32), e, lanes)``, so lane l starts from wang32(lo ⊕ hi ⊕
wang32(t) ⊕ ((e mod 2¹⁶) << 16) ⊕ l) (seed = hi·2³² + lo), then the 16 warm-up draws. t is
hashed because a bare t would XOR into the lane bits: round t = 4's lane 0 would be round
t = 0's lane 4. G is exact when every partial sum stays below 2⁵³ times the weight-gradient
format's smallest positive value (2¹⁴ for fp16_ibm, whose is 2⁻³⁹: every ΔW_k is a multiple
of it); beyond, each add rounds to nearest-even, as numpy's do. The master weights are left
alone. Counts: :func:`local_counts`.

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
from accel.numerics.rng import wang32
from accel.spec import layer
from accel.spec.backend import KernelError
from accel.spec.counts import WORD_BITS
from accel.spec.layer import LayerFormats
from protocol.formats import FixedFormat, Format
from protocol.messages import CONV3

ACTIVATIONS = ("relu", "none")
OFFSET_BITS = 16         # the widest HALP offset format (cosim energy sizes the offset memory for it)
POOLS = (1, 2)           # a convolution's max-pool window: 1 none, 2 the layer kernel's 2×2


@dataclass(frozen=True)
class DenseLayer:
    fan_in: int
    fan_out: int
    activation: str          # "relu" on hidden layers, "none" on the last (softmax is in the loss)

    @property
    def shape(self) -> tuple[int, int]:
        """W's rows and columns: the inputs and the ones column, the outputs."""
        return self.fan_in + 1, self.fan_out

    @property
    def n_params(self) -> int:
        return (self.fan_in + 1) * self.fan_out

    @property
    def work(self) -> int:
        """Values per sample of the layer's largest activation matrix."""
        return max(self.fan_in, self.fan_out) + 1

    def calls(self) -> list[tuple[str, dict[str, int]]]:
        """The layer kernel calls of one minibatch (kind and shape for layer_ops), the update's aside."""
        dense = {"fan_in": self.fan_in + 1, "fan_out": self.fan_out}
        relu = {"fan_in": self.fan_out, "fan_out": self.fan_out}
        return ([("dense_forward", dense), ("dense_backward", dense)]
                + ([("relu_forward", relu), ("relu_backward", relu)] if self.activation == "relu" else []))

    def forward(self, a: np.ndarray, W: np.ndarray, fmts: LayerFormats, gemm) -> tuple[np.ndarray, tuple]:
        """(the output, what the backward needs) of B × fan_in activations ``a``."""
        inp = _with_ones(a)
        z = layer.dense_forward(inp, W, fmts, gemm=gemm)
        return (layer.relu_forward(z) if self.activation == "relu" else z), (inp, z)

    def backward(self, saved: tuple, W: np.ndarray, delta: np.ndarray, fmts: LayerFormats,
                 gemm) -> tuple[np.ndarray, np.ndarray]:
        """(δ of the input, B × fan_in; ΔW) from δ of the output."""
        inp, z = saved
        if self.activation == "relu":
            delta = layer.relu_backward(z, delta)
        dx, dW = layer.dense_backward(inp, W, delta, fmts, gemm=gemm)
        return dx[:, :-1], dW


@dataclass(frozen=True)
class ConvLayer:
    """A 3×3 convolution (padding 1) with a bias, its activation, then a ``pool`` × ``pool``
    max-pool; samples are flat, C × H × W in C order, in and out."""
    in_channels: int
    out_channels: int
    height: int
    width: int
    activation: str
    pool: int                # 1: none; 2: 2×2 windows, stride 2

    @property
    def fan_in(self) -> int:
        return self.in_channels * self.height * self.width

    @property
    def fan_out(self) -> int:
        return self.out_channels * (self.height // self.pool) * (self.width // self.pool)

    @property
    def image_out(self) -> tuple[int, int, int]:
        return self.out_channels, self.height // self.pool, self.width // self.pool

    @property
    def shape(self) -> tuple[int, int]:
        """W's rows (c·9 + 3·ky + kx, then the bias) and columns (the output channels)."""
        return 9 * self.in_channels + 1, self.out_channels

    @property
    def n_params(self) -> int:
        return (9 * self.in_channels + 1) * self.out_channels

    @property
    def work(self) -> int:
        """Values per sample of the layer's largest matrix: the im2col rows of its input (with
        the ones) or of δ for its input's errors."""
        return self.height * self.width * (9 * max(self.in_channels, self.out_channels) + 1)

    def calls(self) -> list[tuple[str, dict[str, int]]]:
        conv = {"fan_in": self.in_channels, "fan_out": self.out_channels, "height": self.height,
                "width": self.width, "bias": True}
        image = {"fan_in": self.out_channels, "fan_out": self.out_channels, "height": self.height,
                 "width": self.width}
        return ([("conv3_forward", conv), ("conv3_backward", conv)]
                + ([("relu_forward", image), ("relu_backward", image)] if self.activation == "relu" else [])
                + ([("maxpool2_forward", image), ("maxpool2_backward", image)] if self.pool == 2 else []))

    def forward(self, a: np.ndarray, W: np.ndarray, fmts: LayerFormats, gemm) -> tuple[np.ndarray, tuple]:
        x = a.reshape(len(a), self.in_channels, self.height, self.width)
        z = layer.conv3_forward(x, W, fmts, gemm=gemm)
        out, arg = (layer.relu_forward(z) if self.activation == "relu" else z), None
        if self.pool == 2:
            out, arg = layer.maxpool2_forward(out)
        return out.reshape(len(a), -1), (x, z, arg)

    def backward(self, saved: tuple, W: np.ndarray, delta: np.ndarray, fmts: LayerFormats,
                 gemm) -> tuple[np.ndarray, np.ndarray]:
        x, z, arg = saved
        delta = delta.reshape(len(x), *self.image_out)
        if arg is not None:
            delta = layer.maxpool2_backward(delta, arg)
        if self.activation == "relu":
            delta = layer.relu_backward(z, delta)
        dx, dW = layer.conv3_backward(x, W, delta, fmts, gemm=gemm)
        return dx.reshape(len(x), -1), dW


Layer = DenseLayer | ConvLayer


def layer_of(i: int, entry, limit: int) -> Layer:
    """The layer of configure_net's ``layers[i]``: [fan_in, fan_out, activation] or
    [CONV3, in_channels, out_channels, height, width, activation, pool], every size 1 … ``limit``
    (KernelError naming the entry and what it must be)."""
    def sizes(values) -> bool:
        return all(type(v) is int and 1 <= v <= limit for v in values)

    if isinstance(entry, list) and entry[:1] == [CONV3]:
        if not (len(entry) == 7 and sizes(entry[1:5]) and entry[5] in ACTIVATIONS and entry[6] in POOLS
                and type(entry[6]) is int):
            raise KernelError(f"layers[{i}] must be [{CONV3!r}, in_channels, out_channels, height, width, "
                              f"activation, pool]: integers 1..{limit}, one of {'/'.join(ACTIVATIONS)} and pool "
                              f"{' or '.join(map(str, POOLS))}; got {entry!r:.100}")
        conv = ConvLayer(*entry[1:])
        if conv.pool == 2 and (conv.height % 2 or conv.width % 2):
            raise KernelError(f"layers[{i}]: a 2×2 max-pool needs an even height and width; got "
                              f"{conv.height}×{conv.width}")
        return conv
    if not (isinstance(entry, list) and len(entry) == 3 and sizes(entry[:2]) and entry[2] in ACTIVATIONS):
        raise KernelError(f"layers[{i}] must be [fan_in, fan_out, activation]: integers 1..{limit} and one of "
                          f"{'/'.join(ACTIVATIONS)} (or a convolution, [{CONV3!r}, ...]); got {entry!r:.100}")
    return DenseLayer(*entry)


def check_layers(layers: list[Layer]) -> None:
    """KernelError unless ``layers`` chain (each fan_in the previous fan_out; a convolution
    after a convolution takes its images as they come), the last is dense with no activation
    and at least two classes, and every hidden one is ReLU."""
    if not layers:
        raise KernelError("a network needs at least one layer")
    for i, (a, b) in enumerate(itertools.pairwise(layers)):
        if b.fan_in != a.fan_out:
            raise KernelError(f"layer {i + 1} has fan_in {b.fan_in}; layer {i} has fan_out {a.fan_out}")
        if isinstance(a, ConvLayer) and isinstance(b, ConvLayer) and (
                (b.in_channels, b.height, b.width) != a.image_out):
            raise KernelError(f"layer {i + 1} takes {b.in_channels}×{b.height}×{b.width} images; layer {i} "
                              f"gives {'×'.join(map(str, a.image_out))}")
    if any(lay.activation != "relu" for lay in layers[:-1]) or layers[-1].activation != "none":
        raise KernelError("hidden layers take activation 'relu', the last layer 'none' (its softmax is the loss's)")
    if not isinstance(layers[-1], DenseLayer):
        raise KernelError("the last layer must be dense: its outputs are the class logits")
    if layers[-1].fan_out < 2:
        raise KernelError(f"the last layer's fan_out is the number of classes, at least 2; got {layers[-1].fan_out}")


def _with_ones(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a, np.ones((a.shape[0], 1))], axis=1)


def step_counts(layers: list[Layer], fmts: LayerFormats, batch: int, *, update: bool,
                decay: bool) -> tuple[Counter, Counter]:
    """(operations, bytes) of one minibatch of ``batch`` samples; with ``update`` also its
    LP-SGD update (and the decay's two roundings per weight with ``decay``)."""
    ops, mem = Counter(), Counter()

    def call(kind: str, **shape: int) -> None:
        ops.update(layer.layer_ops(kind, fmts, batch=batch, **shape))
        mem.update(layer.layer_memory(kind, fmts, batch=batch, **shape))

    for lay in layers:
        for kind, shape in lay.calls():
            call(kind, **shape)
        if update:
            rows, cols = lay.shape
            call("update", fan_in=rows, fan_out=cols)
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

    def __init__(self, layers: list[Layer], fmts: LayerFormats, *, n_samples: int, lanes: int,
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
        self._local_counts: dict[tuple[int, int], tuple[dict[str, int], dict[str, int]]] = {}
        self.halp: HalpState | None = None       # set by recentre
        self.swamped = 0          # swamped adds of the dense products since the request began

    def _gemm(self, a: np.ndarray, b: np.ndarray, acc, chunk: int | None, into=None) -> np.ndarray:
        """The layer kernel's product (compiled), its swamped adds added to ``self.swamped``."""
        out, swamped = matmul_swamped(a, b, acc, chunk, into)
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
            out.append(flat[at:at + lay.n_params].reshape(lay.shape))
            at += lay.n_params
        return out

    def _backprop(self, Ws: list[np.ndarray], idx: np.ndarray) -> tuple[list[np.ndarray], float]:
        """(ΔW per layer, the loss monitor) of the minibatch ``idx`` at weights ``Ws`` (weights values)."""
        f = self.fmts
        a, y = self.x[idx], self.y[idx]
        saved = []
        for lay, W in zip(self.layers, Ws):
            a, kept = lay.forward(a, W, f, self._gemm)
            saved.append(kept)
        p, loss = layer.softmax_xent_forward(a, y, f)
        delta = layer.softmax_xent_backward(p, y, f)
        grads: list[np.ndarray] = [np.empty(0)] * len(Ws)
        for i in range(len(Ws) - 1, -1, -1):
            delta, grads[i] = self.layers[i].backward(saved[i], Ws[i], delta, f, self._gemm)
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
        masters = [m.copy() for m in self._split(self.weights)]
        Ws = [quantize(m, f.weights) for m in masters]
        order = np.asarray(order, dtype=np.intp)
        for t in range(steps):
            grads, _ = self._backprop(Ws, order[t * batch_size:(t + 1) * batch_size])
            self._sgd_update(masters, Ws, grads, step_size, rng)
        self.weights = np.concatenate([m.ravel() for m in masters])
        ops, mem = self.counts(batch_size, update=True)
        return ({**{k: v * steps for k, v in ops.items()}, **self.swamped_ops()},
                {k: v * steps for k, v in mem.items()}, time.perf_counter() - started)

    def _sgd_update(self, masters: list[np.ndarray], Ws: list[np.ndarray], grads: list[np.ndarray],
                    step_size: float, rng: LaneRNG | None) -> None:
        """One LP-SGD update, layer by layer in place: ``masters`` (update-format values) with
        the decay and :func:`accel.spec.layer.weight_update`, ``Ws`` their Q_w (module docstring)."""
        f = self.fmts
        lam = quantize(float(self.l2), f.update)
        for i, g in enumerate(grads):
            if lam > 0:
                g = add(g, quantize(lam * masters[i], f.weight_grads), f.weight_grads, "nearest_even")
            masters[i], Ws[i] = layer.weight_update(masters[i], g, step_size, f, rng=rng)

    def local_steps(self, w: np.ndarray, idx: np.ndarray, steps: int, step_size: float, epoch: int,
                    first_step: int) -> tuple[np.ndarray, float]:
        """(G = ΔW_1 + … + ΔW_K, float64, flat; the mean of the K losses) of ``steps`` = K LP-SGD
        steps on a copy of ``w`` in the update format, step k over the k-th of K equal slices of
        ``idx`` (module docstring, "Local steps"); the master weights are left alone, its swamped
        adds in :meth:`swamped_ops`."""
        self.check_params("weights", w)
        if steps < 1 or len(idx) % steps:
            raise KernelError(f"batch: {len(idx)} indices are not a multiple of steps = {steps}")
        self.swamped = 0
        f, batch = self.fmts, len(idx) // steps
        rng = round_rng(self.seed, epoch, first_step, self.lanes) if f.update_rounding == "stochastic" else None
        copy = self._split(quantize(np.asarray(w, dtype=np.float64), f.update))
        Ws = [quantize(c, f.weights) for c in copy]
        idx = np.asarray(idx, dtype=np.intp)
        total, losses = np.empty(0), 0.0
        for k in range(steps):
            grads, loss = self._backprop(Ws, idx[k * batch:(k + 1) * batch])
            total = _flat(grads) if k == 0 else total + _flat(grads)
            losses += loss
            if k < steps - 1:             # a K-th update would change a copy no one reads
                self._sgd_update(copy, Ws, grads, step_size, rng)
        return total, losses / steps

    def local_counts(self, batch: int, steps: int) -> tuple[dict[str, int], dict[str, int]]:
        """(operations, bytes) of :meth:`local_steps` with K = ``steps`` minibatches of ``batch``
        (:func:`local_counts`), kept per size as :meth:`counts` keeps its (mlp:128's take 1.4 ms)."""
        key = (batch, steps)
        if key not in self._local_counts:
            self._local_counts[key] = local_counts(self.layers, self.fmts, batch, steps, decay=self.l2 > 0)
        return self._local_counts[key]

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


def round_rng(seed: int, epoch: int, first_step: int, lanes: int) -> LaneRNG:
    """The generator of local steps whose round starts at step ``first_step`` of ``epoch``:
    ``LaneRNG(seed ⊕ (wang32(first_step) << 32), epoch, lanes)`` (module docstring)."""
    return LaneRNG(seed ^ (wang32(first_step) << 32), epoch, lanes)


def local_counts(layers: list[Layer], fmts: LayerFormats, batch: int, steps: int, *,
                 decay: bool) -> tuple[dict[str, int], dict[str, int]]:
    """(operations, bytes) of ``steps`` = K local steps of ``batch`` samples: K gradient passes
    and K − 1 LP-SGD updates (:func:`step_counts`), the copy's rounding into the update format
    and the first Q_w of it, and G's float64 sum (K − 1 adds per parameter; its memory,
    ``gradient sum``, is written every step and read from the second on, and each ΔW_k read)."""
    n, f = sum(lay.n_params for lay in layers), fmts
    grad_ops, grad_mem = step_counts(layers, fmts, batch, update=False, decay=False)
    step_ops, step_mem = step_counts(layers, fmts, batch, update=True, decay=decay)
    ops = Counter({k: v * (steps - 1) for k, v in step_ops.items()}) + grad_ops
    mem = Counter({k: v * (steps - 1) for k, v in step_mem.items()}) + grad_mem
    ops[f"round {f.update!r} nearest_even"] += n               # the copy, from float64
    ops[f"round {f.weights!r} nearest_even"] += n              # its Q_w for the first step
    ops["add fp64"] += (steps - 1) * n                         # G
    bits = {"weight gradients read": steps * n * f.weight_grads.bits,
            "gradient sum write": steps * n * 64, "gradient sum read": (steps - 1) * n * 64}
    for key, b in bits.items():
        mem[key] += -(-b // 8)
    return dict(ops), dict(mem)


def halp_counts(layers: list[Layer], fmts: LayerFormats, offset: FixedFormat, batch: int, steps: int, *,
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
