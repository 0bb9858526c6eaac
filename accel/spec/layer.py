"""The layer kernel of kernel spec v2: dense and 3×3 convolution layers in low precision.

    >>> import numpy as np
    >>> f = RECIPES["fp8-ibm"]
    >>> f
    LayerFormats(weights=fp8_ibm, activations=fp8_ibm, errors=fp8_ibm, weight_grads=fp16_ibm, acc=fp16_ibm chunk 64, update=fp16_ibm stochastic)
    >>> X, W = np.array([[1.0, 2.0, 3.0]]), np.array([[0.5], [0.25], [0.125]])
    >>> dense_forward(X, W, f)                    # 0.5 + 0.5 + 0.375 = 1.375, into (1,5,2)
    array([[1.5]])
    >>> dX, dW = dense_backward(X, W, np.array([[1.0]]), f)
    >>> dX.tolist(), dW.ravel().tolist()
    ([[0.5, 0.25, 0.125]], [1.0, 2.0, 3.0])
    >>> layer_ops("dense_forward", f, batch=1, fan_in=3, fan_out=1)
    {'mul fp8_ibm*fp8_ibm': 3, 'add fp16_ibm': 4, 'round fp8_ibm nearest_even': 1}

Roles (:class:`LayerFormats`): ``weights`` W and ``activations`` X are the forward product's
operands, ``errors`` δ the backward's; ``weight_grads`` holds ΔW; ``acc`` is where every dot
product is summed, ``chunk`` terms at a time; ``update`` holds the master weights, which
:func:`weight_update` rounds with ``update_rounding``.

The dense product C = A·B (:func:`matmul`), the one arithmetic rule of every layer:

1. every product A[m,k]·B[k,n] is exact: operands of at most 16 bits whose products stay in
   float64's range (:func:`product_problem`; every fixed format of ≤ 16 bits and every float
   one of ≤ 16 bits with at most 8 exponent bits and the default bias qualifies) multiply
   exactly in float64;
2. chunk = None (or 0): one accumulator, cleared to +0, adds the products in k order, each
   add rounded once from the exact sum to nearest-even in ``acc``;
3. chunk = c: products k ∈ [j·c, (j+1)·c) are summed that way into partial j; then a second
   accumulator, cleared to +0, adds the partials j = 0, 1, … the same way (Wang et al.,
   "Training Deep Neural Networks with 8-bit Floating Point Numbers", NeurIPS 2018:
   chunk-based accumulation);
4. the result is rounded once, nearest-even, into the output's role format.

This is :func:`accel.numerics.accumulate` on the exact products, so its order and rounding
are the ones ``docs/numerics.md`` defines and tests against an exact oracle.
``accel/backends/layer_compiled.py`` computes the same bits in one compiled pass; every
layer function takes the product as ``gemm`` so that either serves it.

Layers (X: B × fan_in, W: fan_in × fan_out; images B × C × H × W):

- dense: Y = Q_act(X·W); δX = Q_err(δY·Wᵀ); ΔW = Q_wg(Xᵀ·δY);
- ReLU: y = x where x > 0, else +0; backward δ where x > 0, else +0 (compares only);
- 2×2 max-pool: the largest of each window (the first in row-major order on ties) and its
  index 0–3; backward routes δ to that index, +0 elsewhere (compares and data movement);
- 3×3 convolution, padding 1: :func:`im2col3` lays out each output pixel's 3×3×C inputs as
  a row (zeros outside the image; data movement, no arithmetic), so the convolution is the
  dense product with W of (9·C_in) × C_out, row index c·9 + 3·ky + kx. A W of 9·C_in + 1
  rows carries a bias as its last row, against a column of ones appended to the im2col rows
  (as a network's dense layer carries its own). Its δX is again a
  convolution: im2col3 of δY times the kernel turned by 180° with channels swapped, so every
  sum keeps the dense rule (fan-in order o, ky, kx); ΔW sums over the B·H·W pixels in order;
- softmax cross-entropy: p = softmax(R(z)) by :func:`accel.spec.nonlinear.softmax` in
  ``acc`` (bit-portable); δz = Q_err(R(R(p − onehot(y))·R(1/B))) (for B = 1 without the
  multiply). The loss −mean log p_y is a float64 monitor outside the bit-exact kernel;
- update: w ← Q_update(w − R_u(α)·ΔW), R_u(α) the step size rounded to nearest-even in the
  update format, the product exact, the difference rounded once from its exact value with
  ``update_rounding`` (:func:`accel.numerics.arith.add`); the next products use
  Q_w(w), nearest-even. Stochastic rounding takes one word per weight in C order of
  fan_in × fan_out from a :class:`accel.numerics.LaneRNG` (element k from lane k mod lanes,
  one ``words`` call per update).

:func:`layer_ops` and :func:`layer_memory` count operations and bytes as
:mod:`accel.spec.counts` does; ``docs/accelerator.md`` ("Layer kernel") is the prose.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numba import njit

from accel.numerics import accumulate, quantize
from accel.numerics.arith import add, check_exact
from accel.spec import nonlinear
from accel.spec.arith import AccArith
from accel.spec.backend import KernelError
from accel.spec.counts import WORD_BITS
from protocol.formats import PRESETS, FixedFormat, FloatFormat, Format, parse_format

__all__ = [
    "LAYER_KINDS",
    "RECIPES",
    "LayerFormats",
    "conv3_backward",
    "conv3_forward",
    "dense_backward",
    "dense_forward",
    "im2col3",
    "layer_memory",
    "layer_ops",
    "matmul",
    "maxpool2_backward",
    "maxpool2_forward",
    "product_problem",
    "relu_backward",
    "relu_forward",
    "softmax_xent_backward",
    "softmax_xent_forward",
    "swamped_adds",
    "weight_update",
]

# (a, b, acc, chunk[, into]) → the product, rounded into ``into`` when given (see :func:`matmul`).
Gemm = Callable[..., np.ndarray]

# The products' operands are at most this wide: narrow inputs, whose products float64 holds.
OPERAND_BITS = 16
_FLOAT64_MAX_EXP = 1024      # products stay below 2^1024
_FLOAT64_LOWEST = -1074      # and on float64's grid


def _grid(fmt: Format) -> tuple[int, int, float]:
    """(significant bits, exponent of the finest step, largest magnitude) of a float or fixed format."""
    if isinstance(fmt, FloatFormat):
        return fmt.man_bits + 1, fmt.emin - (fmt.man_bits if fmt.subnormals else 0), fmt.max_value
    return fmt.bits, -fmt.frac_bits, max(abs(fmt.min_value), fmt.max_value)


def product_problem(a: Format, b: Format) -> str | None:
    """Why a product of an ``a`` value and a ``b`` value may not be exact in float64 (None: it is).

        >>> product_problem(PRESETS["fp8_ibm"], PRESETS["bf16"]) is None
        True
        >>> product_problem(PRESETS["fp32"], parse_format("fixed<2,30>"))
        'fp32*fixed<2,30> needs 56 significant bits, float64 has 53'
    """
    (pa, qa, ma), (pb, qb, mb) = _grid(a), _grid(b)
    if pa + pb > 53:
        return f"{a!r}*{b!r} needs {pa + pb} significant bits, float64 has 53"
    if qa + qb < _FLOAT64_LOWEST:
        return f"{a!r}*{b!r} reaches 2^{qa + qb}, below float64's smallest step 2^{_FLOAT64_LOWEST}"
    if math.log2(ma) + math.log2(mb) >= _FLOAT64_MAX_EXP:
        return f"{a!r}*{b!r} can exceed float64's largest value"
    return None


def _operand_problem(fmt: Format) -> str | None:
    """Why ``fmt`` cannot be an operand of the layer's products (None: it can)."""
    if not isinstance(fmt, (FloatFormat, FixedFormat)):
        return f"{fmt!r} is a block format (a shared scale per block)"
    if fmt.bits > OPERAND_BITS:
        return f"{fmt!r} has {fmt.bits} bits"
    return product_problem(fmt, fmt)


def _operand_choices() -> str:
    good = [name for name, fmt in PRESETS.items() if _operand_problem(fmt) is None]
    return (f"a float or fixed format of at most {OPERAND_BITS} bits whose products are exact in "
            f"float64: {', '.join(good)}, fixed<IL,FL> with IL+FL <= {OPERAND_BITS}, float<E,M> "
            "with E <= 8 and 1+E+M <= 16")


@dataclass(frozen=True, repr=False)
class LayerFormats:
    """The number format of each tensor role of a layer, the accumulation and the update rule.

        >>> LayerFormats("e4m3fn", "e4m3fn", "e5m2", "fp16", "fp32", chunk=32, update="fp32")
        LayerFormats(weights=e4m3fn, activations=e4m3fn, errors=e5m2, weight_grads=fp16, acc=fp32 chunk 32, update=fp32 nearest_even)

    Strings are parsed with :func:`protocol.formats.parse_format`; ``chunk`` 0 means None (one
    sequential sum). A role that cannot hold its part is refused with one message naming it
    and what it accepts (:class:`accel.spec.backend.KernelError`).
    """

    weights: Format
    activations: Format
    errors: Format
    weight_grads: Format
    acc: FloatFormat
    chunk: int | None = None
    update: Format = PRESETS["fp32"]
    update_rounding: str = "nearest_even"
    rbits: int | None = None     # random bits per stochastic update rounding (None: 32)

    def __post_init__(self) -> None:
        for role in ("weights", "activations", "errors", "weight_grads", "acc", "update"):
            try:
                object.__setattr__(self, role, parse_format(getattr(self, role)))
            except ValueError as exc:
                raise KernelError(f"layer {role} format: {exc}") from None
        for role in ("weights", "activations", "errors"):
            if why := _operand_problem(getattr(self, role)):
                raise KernelError(f"layer {role} format {getattr(self, role)!r}: {why}; the products need "
                                  + _operand_choices())
        for a, b in (("activations", "weights"), ("errors", "weights"), ("activations", "errors")):
            if why := product_problem(getattr(self, a), getattr(self, b)):
                raise KernelError(f"layer {a} × {b}: {why}; the products need " + _operand_choices())
        if not isinstance(self.acc, FloatFormat):
            raise KernelError(f"layer acc format {self.acc!r}: the accumulator must be a float format")
        if not isinstance(self.weight_grads, (FloatFormat, FixedFormat)):
            raise KernelError(f"layer weight_grads format {self.weight_grads!r}: must be a float or fixed format")
        if not (self.chunk is None or (isinstance(self.chunk, int) and not isinstance(self.chunk, bool)
                                       and self.chunk >= 0)):
            raise KernelError(f"layer chunk must be a non-negative integer (0 or None: no chunks); got {self.chunk!r}")
        object.__setattr__(self, "chunk", self.chunk or None)
        try:
            check_exact(self.acc, "nearest_even")
            check_exact(self.update, self.update_rounding, self.rbits)
        except ValueError as exc:
            raise KernelError(f"layer formats: {exc}") from None
        if why := product_problem(self.update, self.weight_grads):
            raise KernelError(f"layer update × weight_grads (the step α·ΔW): {why}")

    def __repr__(self) -> str:
        chunk = f" chunk {self.chunk}" if self.chunk else ""
        bits = f" rbits {self.rbits}" if self.rbits else ""
        return (f"LayerFormats(weights={self.weights!r}, activations={self.activations!r}, "
                f"errors={self.errors!r}, weight_grads={self.weight_grads!r}, acc={self.acc!r}{chunk}, "
                f"update={self.update!r} {self.update_rounding}{bits})")


# Wang et al. 2018: (1,5,2) weights, activations and errors; (1,6,9) accumulation in chunks of
# 64 and a (1,6,9) master copy updated with stochastic rounding. ΔW leaves its product at the
# accumulator's width, which is the width its update adds in.
RECIPES: dict[str, LayerFormats] = {
    "fp8-ibm": LayerFormats(weights="fp8_ibm", activations="fp8_ibm", errors="fp8_ibm",
                            weight_grads="fp16_ibm", acc="fp16_ibm", chunk=64, update="fp16_ibm",
                            update_rounding="stochastic"),
}
# The same with one sum per dot product: what chunks avoid (swamping, :func:`swamped_adds`).
RECIPES["fp8-ibm-nochunk"] = LayerFormats(weights="fp8_ibm", activations="fp8_ibm", errors="fp8_ibm",
                                          weight_grads="fp16_ibm", acc="fp16_ibm", chunk=None,
                                          update="fp16_ibm", update_rounding="stochastic")


@njit(cache=True)
def _off_grid(bits: np.ndarray, man_bits: int, emin: int, qsub: int, max_bits: int, has_inf: bool) -> int:
    """How many of these float64 bit patterns are not values of a float format, NaN passing:
    those above its largest value, and those with a significand bit below their grid step
    2^q (q = e − man_bits in the normal range, the subnormal step qsub below it), i.e. the
    values that rounding would change. One branch-free pass over the bits, no temporaries."""
    mask52 = np.int64((1 << 52) - 1)
    inf_bits = np.int64(0x7FF) << np.int64(52)
    bad = 0
    for i in range(np.uint64(bits.shape[0])):
        a = bits[i] & np.int64(0x7FFF_FFFF_FFFF_FFFF)
        field = a >> np.int64(52)
        sig = (a & mask52) | (np.int64(field != 0) << np.int64(52))
        e = field - np.int64(1023)
        q = e - man_bits if e >= emin else np.int64(qsub)
        drop = min(max(q - (max(field, np.int64(1)) - np.int64(1075)), np.int64(0)), np.int64(63))
        on_grid = (a <= max_bits) & ((sig & ((np.int64(1) << drop) - np.int64(1))) == np.int64(0))
        bad += not (on_grid | (a > inf_bits) | ((a == inf_bits) & has_inf))
    return bad


def _not_values(x: np.ndarray, fmt: FloatFormat) -> int:
    """How many elements of the float64 array ``x`` are not values of ``fmt`` (NaN passes),
    for a format whose grid float64 holds in its normal range (emin ≥ −1022)."""
    qsub = fmt.emin - (fmt.man_bits if fmt.subnormals else 0)
    return _off_grid(x.ravel(order="K").view(np.int64), fmt.man_bits, fmt.emin, qsub,
                     int(np.array(fmt.max_value).view(np.int64)), fmt.has_inf)


def _values(x, fmt: Format, role: str) -> np.ndarray:
    """``x`` as float64, refused unless every element is a value of ``fmt`` (NaN passes)."""
    x = np.asarray(x, dtype=np.float64)
    if isinstance(fmt, FloatFormat) and fmt.emin >= -1022 and not _not_values(x, fmt):
        return x                     # the common case, in one compiled pass
    # Every format holds 0, and quantize takes its slow path on zeros: probe a value it holds.
    probe = np.where(x == 0, fmt.max_value, x)
    ok = quantize(probe, fmt) == probe
    if not ok.all():
        bad = probe[~(ok | np.isnan(probe))]
        if bad.size:
            raise KernelError(f"{role} must hold {fmt!r} values (round them into it first); "
                              f"{bad.size} of {x.size} do not, e.g. {float(bad[0])!r}")
    return x


def _matrix(x: np.ndarray, role: str) -> None:
    if x.ndim != 2:
        raise KernelError(f"{role} must be a matrix; got shape {x.shape}")


def matmul(a: np.ndarray, b: np.ndarray, acc: FloatFormat, chunk: int | None, into: Format | None = None) -> np.ndarray:
    """C = a·b (M × K times K × N): exact products, summed in ``acc`` by the chunk rule, then
    rounded once to nearest-even into ``into`` (None: the sums themselves).

        >>> matmul(np.ones((1, 4096)), np.ones((4096, 1)), PRESETS["fp16_ibm"], None)   # swamped
        array([[1024.]])
        >>> matmul(np.ones((1, 4096)), np.ones((4096, 1)), PRESETS["fp16_ibm"], 64)
        array([[4096.]])

    The operands must be values of formats whose products are exact (:func:`product_problem`);
    the result holds ``acc`` values (or ``into``'s), float64, M × N.
    """
    if a.shape[1] != b.shape[0]:
        raise KernelError(f"cannot multiply {a.shape[0]}×{a.shape[1]} by {b.shape[0]}×{b.shape[1]}")
    terms = a[:, None, :] * b.T[None, :, :]          # exact: (M, N, K)
    sums = np.asarray(accumulate(terms, acc=acc, chunk=chunk or None)).reshape(a.shape[0], b.shape[1])
    return sums if into is None else quantize(sums, into)


def swamped_adds(a: np.ndarray, b: np.ndarray, acc: FloatFormat, chunk: int | None) -> int:
    """How many adds of :func:`matmul`'s order are *swamped*: both operands nonzero and the
    rounded sum equal to one of them, so the other is lost entirely (Wang et al. 2018's
    diagnostic for long sums in a narrow accumulator).

        >>> swamped_adds(np.ones((1, 4096)), np.ones((4096, 1)), PRESETS["fp16_ibm"], None)
        3072
        >>> swamped_adds(np.ones((1, 4096)), np.ones((4096, 1)), PRESETS["fp16_ibm"], 64)
        0

    The reference of ``accel.backends.layer_compiled.matmul_swamped``'s count: every add of
    the order, chunk partials into the second accumulator included, one at a time.
    """
    if a.shape[1] != b.shape[0]:
        raise KernelError(f"cannot multiply {a.shape[0]}×{a.shape[1]} by {b.shape[0]}×{b.shape[1]}")
    terms = a[:, None, :] * b.T[None, :, :]          # exact: (M, N, K)
    k_len = terms.shape[-1]
    step = chunk or max(k_len, 1)
    count, total = 0, np.zeros(terms.shape[:2])

    def add_counted(old: np.ndarray, term: np.ndarray) -> np.ndarray:
        nonlocal count
        new = add(old, term, acc, "nearest_even")
        count += int(np.count_nonzero((old != 0) & (term != 0) & ((new == old) | (new == term))))
        return new

    for c0 in range(0, k_len, step):
        part = np.zeros(terms.shape[:2])
        for k in range(c0, min(k_len, c0 + step)):
            part = add_counted(part, terms[..., k])
        total = add_counted(total, part) if chunk else part
    return count


def dense_forward(X, W, fmts: LayerFormats, gemm: Gemm = matmul) -> np.ndarray:
    """Y = Q_act(X·W): X B × fan_in activations, W fan_in × fan_out weights."""
    X, W = _values(X, fmts.activations, "activations"), _values(W, fmts.weights, "weights")
    _matrix(X, "activations")
    _matrix(W, "weights")
    return gemm(X, W, fmts.acc, fmts.chunk, fmts.activations)


def dense_backward(X, W, dY, fmts: LayerFormats, gemm: Gemm = matmul) -> tuple[np.ndarray, np.ndarray]:
    """(δX = Q_err(δY·Wᵀ), ΔW = Q_wg(Xᵀ·δY)) for δY the B × fan_out errors of Y."""
    X, W = _values(X, fmts.activations, "activations"), _values(W, fmts.weights, "weights")
    dY = _values(dY, fmts.errors, "errors")
    for x, role in ((X, "activations"), (W, "weights"), (dY, "errors")):
        _matrix(x, role)
    dX = gemm(dY, W.T, fmts.acc, fmts.chunk, fmts.errors)     # transposed views: a gemm lays them
    dW = gemm(X.T, dY, fmts.acc, fmts.chunk, fmts.weight_grads)   # out as it reads them
    return dX, dW


def relu_forward(x: np.ndarray) -> np.ndarray:
    """max(x, 0) by one compare per element: x where x > 0, else +0 (also for −0 and NaN)."""
    return np.where(x > 0, x, 0.0)


def relu_backward(x: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """δ where the forward input x was > 0, else +0."""
    return np.where(x > 0, dy, 0.0)


def _windows(x: np.ndarray) -> np.ndarray:
    """B × C × H × W → B × C × H/2 × W/2 × 4, each window's elements in row-major order."""
    if x.ndim != 4 or x.shape[2] % 2 or x.shape[3] % 2:
        raise KernelError(f"2×2 max-pool needs B × C × H × W with H and W even; got shape {x.shape}")
    b, c, h, w = x.shape
    return x.reshape(b, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(b, c, h // 2, w // 2, 4)


def maxpool2_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the max of each 2×2 window, its index 0–3 in the window: the first one on ties)."""
    win = _windows(np.asarray(x, dtype=np.float64))
    arg = win.argmax(axis=-1)
    return np.take_along_axis(win, arg[..., None], axis=-1)[..., 0], arg.astype(np.uint8)


def maxpool2_backward(dy: np.ndarray, arg: np.ndarray) -> np.ndarray:
    """δ routed to each window's argmax, +0 at the other three places (B × C × H × W)."""
    b, c, h2, w2 = dy.shape
    win = np.zeros((b, c, h2, w2, 4))
    np.put_along_axis(win, arg[..., None].astype(np.intp), np.asarray(dy, dtype=np.float64)[..., None], axis=-1)
    return win.reshape(b, c, h2, w2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(b, c, 2 * h2, 2 * w2)


def _image_shape(x: np.ndarray) -> tuple[int, int, int, int]:
    if x.ndim != 4:
        raise KernelError(f"a 3×3 convolution needs B × C × H × W images; got shape {x.shape}")
    return x.shape


def im2col3(x: np.ndarray) -> np.ndarray:
    """B × C × H × W → (B·H·W) × (9·C): row (b, i, j) holds x[b, c, i+ky−1, j+kx−1] at column
    c·9 + 3·ky + kx, zero outside the image (padding 1). Data movement only."""
    b, c, h, w = _image_shape(x)
    padded = np.zeros((b, c, h + 2, w + 2))          # np.pad costs ~30× this on a small image
    padded[:, :, 1:-1, 1:-1] = x
    win = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))   # B, C, H, W, 3, 3
    return np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(b * h * w, 9 * c)


def _conv_weights(W: np.ndarray, channels: int) -> tuple[int, bool]:
    """(C_out, whether a bias row follows) of a (9·C_in [+ 1]) × C_out kernel, checked against
    the images' C_in."""
    _matrix(W, "weights")
    if W.shape[0] not in (9 * channels, 9 * channels + 1):
        raise KernelError(f"a 3×3 kernel for {channels} input channels has {9 * channels} rows "
                          f"({9 * channels + 1} with a bias row); got {W.shape[0]}")
    return W.shape[1], W.shape[0] > 9 * channels


def _im2col3_ones(x: np.ndarray, bias: bool) -> np.ndarray:
    """:func:`im2col3` of ``x``, with a column of ones appended for a bias row."""
    cols = im2col3(x)
    return np.concatenate([cols, np.ones((cols.shape[0], 1))], axis=1) if bias else cols


def _image(rows: np.ndarray, b: int, h: int, w: int) -> np.ndarray:
    """(B·H·W) × C rows back to B × C × H × W."""
    return np.ascontiguousarray(rows.reshape(b, h, w, -1).transpose(0, 3, 1, 2))


def conv3_forward(X, W, fmts: LayerFormats, gemm: Gemm = matmul) -> np.ndarray:
    """Y = Q_act(conv3×3(X, W)), padding 1: B × C_in × H × W images, W (9·C_in) × C_out, or
    (9·C_in + 1) × C_out with the bias as its last row."""
    X, W = _values(X, fmts.activations, "activations"), _values(W, fmts.weights, "weights")
    b, c, h, w = _image_shape(X)
    _, bias = _conv_weights(W, c)
    return _image(quantize(gemm(_im2col3_ones(X, bias), W, fmts.acc, fmts.chunk), fmts.activations), b, h, w)


def conv3_backward(X, W, dY, fmts: LayerFormats, gemm: Gemm = matmul) -> tuple[np.ndarray, np.ndarray]:
    """(δX, ΔW) of :func:`conv3_forward`; δY is B × C_out × H × W.

    δX = Q_err(im2col3(δY)·W'), W'[(o, ky, kx), c] = W[(c, 2−ky, 2−kx), o]: the transposed
    convolution is the 180°-turned kernel with the channels swapped (a bias row takes no part).
    ΔW = Q_wg(im2col3(X)ᵀ·δY), with the ones column's row (the bias's) last when W has one.
    """
    X, W = _values(X, fmts.activations, "activations"), _values(W, fmts.weights, "weights")
    dY = _values(dY, fmts.errors, "errors")
    b, c, h, w = _image_shape(X)
    co, bias = _conv_weights(W, c)
    if dY.shape != (b, co, h, w):
        raise KernelError(f"errors must be {(b, co, h, w)} for these images and kernel; got {dY.shape}")
    turned = np.ascontiguousarray(W[:9 * c].reshape(c, 3, 3, co)[:, ::-1, ::-1, :].transpose(3, 1, 2, 0)
                                  .reshape(9 * co, c))
    dX = _image(quantize(gemm(im2col3(dY), turned, fmts.acc, fmts.chunk), fmts.errors), b, h, w)
    rows = np.ascontiguousarray(dY.transpose(0, 2, 3, 1).reshape(b * h * w, co))
    dW = quantize(gemm(np.ascontiguousarray(_im2col3_ones(X, bias).T), rows, fmts.acc, fmts.chunk),
                  fmts.weight_grads)
    return dX, dW


class SoftmaxXent(NamedTuple):
    """The forward of softmax cross-entropy: p in the accumulator format, and the loss."""

    probs: np.ndarray
    loss: float        # −mean log p_y in float64: a monitor, not part of the bit-exact kernel


def _labels(y, batch: int, classes: int) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (batch,) or not np.issubdtype(y.dtype, np.integer) or ((y < 0) | (y >= classes)).any():
        raise KernelError(f"labels must be {batch} integers 0 … {classes - 1}; got {y!r}")
    return y.astype(np.intp)


def softmax_xent_forward(Z, y, fmts: LayerFormats) -> SoftmaxXent:
    """p = softmax(R(z)) row by row in ``acc`` (accel.spec.nonlinear.softmax), and the loss."""
    Z = _values(Z, fmts.activations, "activations")
    _matrix(Z, "activations")
    y = _labels(y, *Z.shape)
    A = AccArith(fmts.acc)
    p = nonlinear.softmax(A, A.round(Z))
    with np.errstate(divide="ignore"):
        loss = float(-np.mean(np.log(p[np.arange(len(y)), y])))
    return SoftmaxXent(p, loss)


def softmax_xent_backward(p, y, fmts: LayerFormats) -> np.ndarray:
    """δz = Q_err(R(R(p − onehot(y)) · R(1/B))); for B = 1, Q_err(R(p − onehot(y)))."""
    p = np.asarray(p, dtype=np.float64)
    _matrix(p, "probabilities")
    y = _labels(y, *p.shape)
    A = AccArith(fmts.acc)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    g = A.sub(p, onehot)
    if len(y) > 1:
        g = A.mul(g, A.div(1.0, float(len(y))))
    return quantize(g, fmts.errors)


def weight_update(w, dW, alpha: float, fmts: LayerFormats, rng=None) -> tuple[np.ndarray, np.ndarray]:
    """(w ← Q_update(w − R_u(α)·ΔW), Q_w of it for the next products).

    ``w``: the master weights, values of the update format; ``rng`` (stochastic rounding):
    a :class:`accel.numerics.LaneRNG`, one word per weight in C order.
    """
    w = _values(w, fmts.update, "master weights")
    dW = _values(dW, fmts.weight_grads, "weight gradients")
    if w.shape != dW.shape:
        raise KernelError(f"weight gradients must have the weights' shape {w.shape}; got {dW.shape}")
    step = quantize(float(alpha), fmts.update)
    new = add(w, -(step * dW), fmts.update, fmts.update_rounding, rng=rng, rbits=fmts.rbits)   # step·ΔW exact
    return new, quantize(new, fmts.weights)


# -- Operation counts and memory traffic (accel.spec.counts' keys) --------------------------

LAYER_KINDS = ("dense_forward", "dense_backward", "conv3_forward", "conv3_backward", "relu_forward",
               "relu_backward", "maxpool2_forward", "maxpool2_backward", "softmax_xent_forward",
               "softmax_xent_backward", "update")


def _gemm_ops(out: Counter, a: Format, b: Format, res: Format, acc: FloatFormat, chunk: int | None,
              m: int, k: int, n: int) -> None:
    """M·N dots of length K: K exact products each, K adds (and one per chunk), one rounding
    into the result's format (none when that is the accumulator's)."""
    out[f"mul {a!r}*{b!r}"] += m * k * n
    out[f"add {acc!r}"] += m * n * (k + (-(-k // chunk) if chunk else 0))
    if res != acc:
        out[f"round {res!r} nearest_even"] += m * n


def _shape(kind: str, batch: int, fan_in: int, fan_out: int, height: int, width: int) -> tuple[int, int, int]:
    if kind not in LAYER_KINDS:
        raise KernelError(f"layer kind must be one of {', '.join(LAYER_KINDS)}; got {kind!r}")
    if kind.startswith(("conv3", "maxpool2")) and (height < 1 or width < 1):
        raise KernelError(f"{kind} needs the image's height and width")
    return batch * height * width, fan_in, fan_out


def layer_ops(kind: str, fmts: LayerFormats, *, batch: int, fan_in: int, fan_out: int,
              height: int = 1, width: int = 1, bias: bool = False) -> dict[str, int]:
    """Operations of one layer call, keyed ``"<op> <format>[ <rounding>]"`` as in counts.py.

    dense: X B × fan_in, W fan_in × fan_out; conv3: fan_in = C_in, fan_out = C_out on
    H × W images (``bias``: W has its bias row, the products a fan-in of 9·C_in + 1);
    relu, maxpool2: ``fan_in`` channels (maxpool's H × W is the input's);
    softmax_xent: ``fan_out`` classes; update: a fan_in × fan_out weight matrix.
    """
    m, fi, fo = _shape(kind, batch, fan_in, fan_out, height, width)
    f, out, ones = fmts, Counter(), int(bias)
    cmp = f"cmp {f.activations!r}"
    if kind == "dense_forward":
        _gemm_ops(out, f.activations, f.weights, f.activations, f.acc, f.chunk, batch, fi, fo)
    elif kind == "dense_backward":
        _gemm_ops(out, f.errors, f.weights, f.errors, f.acc, f.chunk, batch, fo, fi)
        _gemm_ops(out, f.activations, f.errors, f.weight_grads, f.acc, f.chunk, fi, batch, fo)
    elif kind == "conv3_forward":
        _gemm_ops(out, f.activations, f.weights, f.activations, f.acc, f.chunk, m, 9 * fi + ones, fo)
    elif kind == "conv3_backward":
        _gemm_ops(out, f.errors, f.weights, f.errors, f.acc, f.chunk, m, 9 * fo, fi)
        _gemm_ops(out, f.activations, f.errors, f.weight_grads, f.acc, f.chunk, 9 * fi + ones, m, fo)
    elif kind in ("relu_forward", "relu_backward"):
        out[cmp] += m * fi                        # x > 0 (the backward tests the forward's input)
    elif kind == "maxpool2_forward":
        out[cmp] += 3 * (m // 4) * fi             # three compares per window; backward only routes
    elif kind == "softmax_xent_forward":
        if f.activations != f.acc:
            out[f"round {f.acc!r} nearest_even"] += batch * fo
        out.update(nonlinear.op_counts(f.acc, "softmax", batch, fo))
    elif kind == "softmax_xent_backward":
        out[f"add {f.acc!r}"] += batch * fo       # p − onehot
        if batch > 1:
            out[f"div {f.acc!r}"] += 1            # R(1/B)
            out[f"mul {f.acc!r}"] += batch * fo
        if f.errors != f.acc:
            out[f"round {f.errors!r} nearest_even"] += batch * fo
    elif kind == "update":
        n = fi * fo
        out[f"round {f.update!r} nearest_even"] += 1                  # R_u(α)
        out[f"mul {f.update!r}*{f.weight_grads!r}"] += n              # R_u(α)·ΔW, exact
        out[f"add {f.update!r}"] += n                                 # w − t, exact (as counts.py's step 7)
        out[f"round {f.update!r} {f.update_rounding}"] += n           # then rounded once
        out[f"round {f.weights!r} nearest_even"] += n                 # Q_w for the next products
        if f.update_rounding == "stochastic":
            out["rng bits"] += (f.rbits or WORD_BITS) * n
    return {k: v for k, v in out.items() if v}


def layer_memory(kind: str, fmts: LayerFormats, *, batch: int, fan_in: int, fan_out: int,
                 height: int = 1, width: int = 1, bias: bool = False) -> dict[str, int]:
    """Bytes read and written per role, each operand read once per use at its width.

    A convolution's operand is its im2col matrix (9 reads of each input pixel): the traffic of
    a kernel without a line buffer, an upper bound; with ``bias`` its ones column is read as
    a dense layer's is. Max-pool indices take 2 bits each.
    """
    m, fi, fo = _shape(kind, batch, fan_in, fan_out, height, width)
    f, bits = fmts, Counter()
    wa, ww, we, wg, wc, wu = (f.activations.bits, f.weights.bits, f.errors.bits, f.weight_grads.bits,
                              f.acc.bits, f.update.bits)
    conv = kind.startswith("conv3")
    taps = 9 if conv else 1
    rows = taps * fi + int(conv and bias)            # the product's fan-in: W's rows
    if kind in ("dense_forward", "conv3_forward"):
        bits["activations read"] += m * rows * wa
        bits["weights read"] += rows * fo * ww
        bits["activations write"] += m * fo * wa
    elif kind in ("dense_backward", "conv3_backward"):
        bits["errors read"] += m * taps * fo * we + m * fo * we      # for δX (as im2col) and for ΔW
        bits["weights read"] += taps * fi * fo * ww                  # δX's product: no bias row
        bits["activations read"] += m * rows * wa
        bits["errors write"] += m * fi * we
        bits["weight gradients write"] += rows * fo * wg
    elif kind == "relu_forward":
        bits["activations read"] += m * fi * wa
        bits["activations write"] += m * fi * wa
    elif kind == "relu_backward":
        bits["activations read"] += m * fi * wa
        bits["errors read"] += m * fi * we
        bits["errors write"] += m * fi * we
    elif kind == "maxpool2_forward":
        bits["activations read"] += m * fi * wa
        bits["activations write"] += (m // 4) * fi * wa
        bits["index write"] += (m // 4) * fi * 2
    elif kind == "maxpool2_backward":
        bits["errors read"] += (m // 4) * fi * we
        bits["index read"] += (m // 4) * fi * 2
        bits["errors write"] += m * fi * we
    elif kind == "softmax_xent_forward":
        bits["activations read"] += batch * fo * wa
        bits["probabilities write"] += batch * fo * wc
    elif kind == "softmax_xent_backward":
        bits["probabilities read"] += batch * fo * wc
        bits["labels read"] += batch * max(1, (fo - 1).bit_length())
        bits["errors write"] += batch * fo * we
    else:
        n = fi * fo
        bits["weight gradients read"] += n * wg
        bits["master weights read"] += n * wu
        bits["master weights write"] += n * wu
        bits["weights write"] += n * ww
    return {k: math.ceil(v / 8) for k, v in bits.items() if v}
