"""Neural networks on the host: specs, torch modules in float64, flat-vector access.

Usage::

    spec = parse_spec("mlp:256,128")            # or "cnn"; a ValueError says what is accepted
    net = Network(spec, x_train, y_train, n_classes=10, l2=1e-4, seed=0)
    w = net.params()                            # flat float64 numpy vector: the seeded start
    net.loss(w), net.grad(w, idx)               # mean cross-entropy + (λ/2)‖w‖², its gradient
    net.accuracy(w, x_test, y_test)             # fraction of argmax predictions that are right
    net.layers()                                # what the accelerator needs: kind, fan-in/out, activation
    kernel_layout(net.layers(), w)              # w as configure_net carries it (torch_layout: back)

Specs:

- ``mlp:W1[,W2,…]``: dense layers of widths W1, W2, … with ReLU, then a dense output layer
  to the classes; any positive widths.
- ``cnn``: LeNet-sized, for square images whose side is a multiple of 4 (digits: 8×8):
  two 3×3 convolutions (padding 1; 6 then 16 channels, LeNet-5's) each followed by ReLU
  and 2×2 max-pooling, then a dense layer to the classes. On digits: 60 + 880 + 650 = 1590
  parameters (``mlp:128``: 9610).

The loss is f(w) = mean_i CE(softmax(net(x_i)), y_i) + (λ/2)‖w‖² over every parameter, the
biases included (as the linear models regularise their bias column). The flat vector w is
the module's parameters in ``module.parameters()`` order (each layer's weight, then its
bias), each flattened row-major: a layer's weight is fan_out × fan_in (torch's layout; a
convolution's C_out × C_in × 3 × 3 is that with column c·9 + 3·ky + kx), the transpose of
the fan_in × fan_out W of Y = X·W. ``loss`` and ``grad`` are pure functions of w (the module
is evaluated with w's values, its own parameters untouched); ``set_params`` stores w in
the module.

Initialisation: He-uniform (He et al. 2015): layer by layer, in order, the weights are
U(−√(6/fan_in), √(6/fan_in)) drawn as ``torch.rand`` in float64 from one
``torch.Generator`` seeded with the run seed; biases start at 0. A float32 network starts
from the same draws rounded to float32.

Bits: torch splits its sums between threads, so their last bits depend on
``torch.get_num_threads()`` (the mean loss of ``mlp:128`` over 20000 × 784 samples moves by
one bit from one thread to two); ``host.deep.train_net`` pins one thread while it trains.
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from protocol.messages import CONV3

SPEC_HELP = ("mlp:W1[,W2,...] (ReLU hidden layers of positive integer widths, e.g. mlp:128 or "
             "mlp:256,128) or cnn (two 3×3 conv + ReLU + 2×2 max-pool layers, then dense)")
CNN_CHANNELS = (6, 16)   # LeNet-5's widths
_MLP = re.compile(r"mlp:([1-9][0-9]*(?:,[1-9][0-9]*)*)")


@dataclass(frozen=True)
class NetSpec:
    kind: str                        # "mlp" or "cnn"
    widths: tuple[int, ...] = ()     # hidden widths (mlp), the one nearest the input first

    def __str__(self) -> str:
        return f"mlp:{','.join(map(str, self.widths))}" if self.kind == "mlp" else self.kind


def parse_spec(text: str) -> NetSpec:
    """``parse_spec("mlp:256,128")`` → NetSpec("mlp", (256, 128)); ``"cnn"`` → NetSpec("cnn")."""
    if text == "cnn":
        return NetSpec("cnn")
    m = _MLP.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"network {text!r} is not a network spec; use {SPEC_HELP}")
    return NetSpec("mlp", tuple(int(w) for w in m.group(1).split(",")))


@dataclass(frozen=True)
class Layer:
    """One layer as the accelerator will run it: a product, a bias, an activation, a pool."""

    kind: str                        # "dense", or "conv" (3×3, stride 1, padding 1)
    in_shape: tuple[int, ...]        # one sample's input: (features,) or (channels, height, width)
    out_shape: tuple[int, ...]       # one sample's output, after activation and pooling
    fan_in: int                      # inputs to one output: features, or channels·3·3
    fan_out: int                     # outputs per position: features, or channels
    activation: str                  # "relu", or "none" (the output layer: softmax is in the loss)
    pool: int = 1                    # max-pool window and stride after the activation; 1: none

    @property
    def n_params(self) -> int:
        """fan_in × fan_out weights and fan_out biases."""
        return self.fan_out * (self.fan_in + 1)

    def kernel_entry(self) -> list:
        """The layer as configure_net's ``layers`` carries it: [fan_in, fan_out, activation], or
        a convolution's [CONV3, in_channels, out_channels, height, width, activation, pool]."""
        if self.kind == "conv":
            channels, height, width = self.in_shape
            return [CONV3, channels, self.fan_out, height, width, self.activation, self.pool]
        return [self.fan_in, self.fan_out, self.activation]


def network_layers(spec: NetSpec, n_inputs: int, n_classes: int) -> list[Layer]:
    """The layers of ``spec`` for samples of ``n_inputs`` values and ``n_classes`` classes."""
    if spec.kind == "mlp":
        sizes = (n_inputs, *spec.widths)
        hidden = [Layer("dense", (a,), (b,), a, b, "relu") for a, b in itertools.pairwise(sizes)]
        return hidden + [Layer("dense", (sizes[-1],), (n_classes,), sizes[-1], n_classes, "none")]
    side = math.isqrt(n_inputs)
    if side * side != n_inputs or side % 4:
        raise ValueError(f"network 'cnn' needs square images whose side is a multiple of 4 "
                         f"(8×8 digits: 64 inputs); got {n_inputs} inputs per sample")
    layers, channels = [], 1
    for out in CNN_CHANNELS:
        layers.append(Layer("conv", (channels, side, side), (out, side // 2, side // 2), channels * 9, out,
                            "relu", pool=2))
        channels, side = out, side // 2
    flat = channels * side * side
    return layers + [Layer("dense", (flat,), (n_classes,), flat, n_classes, "none")]


def build_module(layers: list[Layer]) -> nn.Sequential:
    """The torch module of ``layers`` (float32 as torch creates it; ``Network`` casts and seeds
    it). Input: n × features; convolutions see the features as one-channel square images."""
    parts: list[nn.Module] = []
    for i, layer in enumerate(layers):
        if layer.kind == "conv":
            if i == 0:
                parts.append(nn.Unflatten(1, layer.in_shape))
            parts.append(nn.Conv2d(layer.in_shape[0], layer.fan_out, 3, padding=1))
        else:
            if i > 0 and layers[i - 1].kind == "conv":
                parts.append(nn.Flatten())
            parts.append(nn.Linear(layer.fan_in, layer.fan_out))
        if layer.activation == "relu":
            parts.append(nn.ReLU())
        if layer.pool > 1:
            parts.append(nn.MaxPool2d(layer.pool))
    return nn.Sequential(*parts)


def he_uniform(module: nn.Module, layers: list[Layer], seed: int) -> None:
    """Set ``module``'s parameters to the seeded He-uniform start (module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    weighted = [m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.no_grad():
        for m, layer in zip(weighted, layers, strict=True):
            bound = math.sqrt(6.0 / layer.fan_in)
            draw = torch.rand(m.weight.shape, generator=gen, dtype=torch.float64)
            m.weight.copy_((2.0 * draw - 1.0) * bound)
            m.bias.zero_()


def kernel_layout(layers: list[Layer], w: np.ndarray) -> np.ndarray:
    """Flat parameters in this module's layout → the accelerator's (``configure_net``): per
    layer the (fan_in + 1) × fan_out matrix of Y = [X, 1]·W in C order, the weight transposed,
    the bias its last row. A convolution's is the same with fan_in = C_in·3·3: torch's
    C_out × C_in × 3 × 3 weight is C_out rows of column c·9 + 3·ky + kx, the order of the
    accelerator's im2col rows."""
    parts, at = [], 0
    for layer in layers:
        n = layer.fan_in * layer.fan_out
        weight = w[at:at + n].reshape(layer.fan_out, layer.fan_in)
        parts.append(np.vstack([weight.T, w[at + n:at + n + layer.fan_out][None, :]]).ravel())
        at += n + layer.fan_out
    return np.concatenate(parts)


def torch_layout(layers: list[Layer], v: np.ndarray) -> np.ndarray:
    """The inverse of :func:`kernel_layout`: the accelerator's flat layout → this module's."""
    parts, at = [], 0
    for layer in layers:
        m = v[at:at + layer.n_params].reshape(layer.fan_in + 1, layer.fan_out)
        parts += [m[:-1].T.ravel(), m[-1]]
        at += layer.n_params
    return np.concatenate(parts)


class Network:
    """A network, its training data and λ, seen through flat numpy vectors (module docstring)."""

    def __init__(self, spec: NetSpec | str, x: np.ndarray, y: np.ndarray, *, n_classes: int, l2: float,
                 seed: int, dtype: torch.dtype = torch.float64) -> None:
        self.spec = parse_spec(spec) if isinstance(spec, str) else spec
        self.l2 = l2
        self.dtype = dtype
        self._layers = network_layers(self.spec, x.shape[1], n_classes)
        self.module = build_module(self._layers).to(dtype)
        he_uniform(self.module, self._layers, seed)
        self._names = [(name, p.shape, p.numel()) for name, p in self.module.named_parameters()]
        self.x = self._tensor(x)
        self.y = torch.from_numpy(np.asarray(y, dtype=np.int64))

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=self.numpy_dtype))

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(str(self.dtype).removeprefix("torch."))

    @property
    def n_samples(self) -> int:
        return len(self.y)

    @property
    def n_params(self) -> int:
        return sum(n for _, _, n in self._names)

    def layers(self) -> list[Layer]:
        return list(self._layers)

    def params(self) -> np.ndarray:
        """The module's parameters as one flat vector (a copy)."""
        return nn.utils.parameters_to_vector(self.module.parameters()).detach().numpy().copy()

    def set_params(self, v: np.ndarray) -> None:
        """Store the flat vector ``v`` in the module, bit for bit."""
        nn.utils.vector_to_parameters(self._tensor(v).clone(), self.module.parameters())

    def _logits(self, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The module's output at flat parameters ``w`` (views into w, so autograd reaches w)."""
        views, start = {}, 0
        for name, shape, n in self._names:
            views[name] = w[start:start + n].view(shape)
            start += n
        return torch.func.functional_call(self.module, views, (x,))

    def _objective(self, w: torch.Tensor, idx: np.ndarray | None) -> torch.Tensor:
        if idx is None:
            x, y = self.x, self.y
        else:
            rows = torch.from_numpy(np.asarray(idx, dtype=np.int64))
            x, y = self.x[rows], self.y[rows]
        ce = nn.functional.cross_entropy(self._logits(w, x), y)
        return ce + 0.5 * self.l2 * torch.dot(w, w)

    def loss(self, v: np.ndarray, idx: np.ndarray | None = None) -> float:
        """f(v) over the samples ``idx`` (None: all of them)."""
        with torch.no_grad():
            return float(self._objective(self._tensor(v), idx))

    def loss_grad(self, v: np.ndarray, idx: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """f(v) and ∇f(v) over the samples ``idx`` (None: all), by autograd in the net's dtype."""
        w = self._tensor(v).requires_grad_(True)
        value = self._objective(w, idx)
        (g,) = torch.autograd.grad(value, w)
        return float(value.detach()), g.numpy()

    def grad(self, v: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
        """∇f(v) over the samples ``idx`` (None: all)."""
        return self.loss_grad(v, idx)[1]

    def accuracy(self, v: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
        """The fraction of samples (rows of ``x``) whose largest output is their label ``y``."""
        with torch.no_grad():
            predicted = self._logits(self._tensor(v), self._tensor(x)).argmax(dim=1).numpy()
        return float(np.mean(predicted == y))
