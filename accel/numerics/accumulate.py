"""Sums and dot products with a product format, an accumulator format and chunking.

    >>> import numpy as np
    >>> accumulate(np.ones(4096), acc="fp16")                 # naive: swamped at 2048
    np.float64(2048.0)
    >>> accumulate(np.ones(4096), acc="fp16", chunk=64)       # Wang et al. 2018 chunks
    np.float64(4096.0)
    >>> counts = Counter()
    >>> dot(np.ones((2, 3)), np.full(3, 0.1), product="e4m3fn", acc="fp16", counts=counts)
    array([0.3046875, 0.3046875])
    >>> counts["mul e4m3fn"], counts["add fp16"], counts["round fp16 nearest_even"]
    (6, 6, 6)

The reduction order is fixed (docs/numerics.md, "Accumulation"), so a result depends on the
inputs and the settings only, never on batching, thread count or platform:

- every product ``a[i] * b[i]`` is rounded once, from the exact product, into ``product``;
- ``chunk=None``: one accumulator, cleared to +0, adds the terms in index order, each add
  rounded once (from the exact sum) into ``acc``;
- ``chunk=k``: terms ``[j*k, (j+1)*k)`` are summed that way into chunk partial ``j``;
  then a second accumulator, cleared to +0, adds the partials in order ``j = 0, 1, …``;
- ``kahan=True``: each of those sequential sums is compensated (Kahan 1965): with running
  sum ``s`` and compensation ``c`` (both in ``acc``, starting at +0), each term ``x`` does
  ``y = x - c; t = s + y; c = (t - s) - y; s = t``, every operation rounded into ``acc``.
  A chunk hands on ``s``; its ``c`` is dropped.

Stochastic rounding draws from ``rng`` (see :func:`quantize`) in this order: the products,
one word each in C order of the broadcast ``(batch…, n)`` array; then, step by step, one
word per rounding of that step for the active accumulators in C order of (batch…, chunk
index) — within-chunk step ``i`` is the ``i``-th term of every chunk, Kahan steps draw for
their four operations in the order above — and last the partial-sum stage, one word per
batch element per step.
"""
from __future__ import annotations

from collections import Counter

import numba
import numpy as np

from protocol.formats import Format

from .arith import add_arrays, check_exact, mul, rounder, words_for

__all__ = ["accumulate", "dot"]


def dot(a, b, *, product: "Format | str" = "fp32", acc: "Format | str" = "fp32",
        chunk: int | None = None, kahan: bool = False, rounding: str = "nearest_even",
        product_rounding: str | None = None, rng=None, rbits: int | None = None,
        counts: Counter | None = None) -> np.ndarray:
    """Dot products along the last axis of ``a`` and ``b`` (broadcast); float64 result.

    ``product_rounding`` (default: ``rounding``) rounds the products, ``rounding`` every
    accumulator add. ``rng`` (stochastic only): a LaneRNG, or a uint32 array of every word
    in draw order (products first). ``counts``, if given, is a Counter that gains keys like ``"mul fp16"``,
    ``"add fp32"`` and ``"round fp16 nearest_even"`` (one count per elementary operation).
    """
    product_rounding = rounding if product_rounding is None else product_rounding
    fmt = check_exact(product, product_rounding, rbits)
    a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
    if a.ndim == 0:
        raise ValueError("dot needs arrays with a reduction axis (the last one)")
    product_rng = acc_rng = rng
    if isinstance(rng, np.ndarray):  # all words in draw order: the products take theirs first
        used = a.size if product_rounding == "stochastic" else 0
        product_rng, acc_rng = rng.ravel()[:used], rng.ravel()[used:]
    terms = mul(a, b, fmt, rounding=product_rounding, rng=product_rng, rbits=rbits)
    if counts is not None:
        counts[f"mul {fmt!r}"] += terms.size
        counts[f"round {fmt!r} {product_rounding}"] += terms.size
    return accumulate(terms, acc=acc, chunk=chunk, kahan=kahan, rounding=rounding, rng=acc_rng,
                      rbits=rbits, counts=counts)


def accumulate(x, *, acc: "Format | str" = "fp32", chunk: int | None = None,
               kahan: bool = False, rounding: str = "nearest_even", rng=None,
               rbits: int | None = None, counts: Counter | None = None) -> np.ndarray:
    """Sum ``x`` along its last axis in the fixed order of the module docstring.

    Returns float64: an array of ``x.shape[:-1]``, or a numpy scalar for 1-D ``x``.
    ``rng`` (stochastic only): a LaneRNG, or a uint32 array of every word in draw order.
    """
    fmt, rd = rounder(acc, rounding, rbits)
    if chunk is not None and not (isinstance(chunk, (int, np.integer)) and chunk >= 1):
        raise ValueError(f"chunk must be a positive integer or None (no chunking); got {chunk!r}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0:
        raise ValueError("accumulate needs an array with a reduction axis (the last one)")
    lead, n = x.shape[:-1], x.shape[-1]
    if n == 0:
        return np.zeros(lead)[()]
    rows = x.reshape(-1, n)
    n_rows = rows.shape[0]
    k = n if chunk is None else min(int(chunk), n)
    n_chunks = -(-n // k)
    tail = n - (n_chunks - 1) * k  # length of the last chunk, 1..k
    padded = np.zeros((n_rows, n_chunks * k))
    padded[:, :n] = rows
    # Step-major (term i of every chunk of every row together): each step reads one slab.
    steps = np.ascontiguousarray(padded.reshape(n_rows, n_chunks, k).transpose(2, 0, 1))
    ops = 4 if kahan else 1
    # One rng.words call per operation of a step, for all the accumulators it advances.
    sizes = [n_rows * (n_chunks if i < tail else n_chunks - 1) for i in range(k) for _ in range(ops)]
    if chunk is not None:
        sizes += [n_rows] * (n_chunks * ops)
    words = words_for(rng, sizes, rounding)
    result = _accumulate_kernel(steps, tail, chunk is not None, kahan, words, rd)
    if counts is not None:
        adds = n_rows * (n if chunk is None else n + n_chunks) * ops
        counts[f"add {fmt!r}"] += adds
        counts[f"round {fmt!r} {rounding}"] += adds
    return result.reshape(lead)[()]


@numba.njit(cache=True)
def _advance(s, c, x, kahan, words, at, rd):
    """Every running sum s[l] (compensation c[l]) takes its term x[l]; returns the new (s, c).

    Operation q of the step draws ``words[at + q·L : at + (q+1)·L]``, L = s.size.
    """
    n = s.size
    if not kahan:
        return add_arrays(s, x, words[at:at + n], rd), c
    y = add_arrays(x, -c, words[at:at + n], rd)
    t = add_arrays(s, y, words[at + n:at + 2 * n], rd)
    d = add_arrays(t, -s, words[at + 2 * n:at + 3 * n], rd)
    return t, add_arrays(d, -y, words[at + 3 * n:at + 4 * n], rd)


@numba.njit(cache=True)
def _accumulate_kernel(steps, tail, chunked, kahan, words, rd):
    """Step by step, each step vectorised over its active (row, chunk) accumulators in C order.

    ``steps[i, b, j]`` is term i of chunk j of row b. Within-chunk step i advances the first
    m = C (i < tail) or C - 1 chunks of every row;
    then the partial-sum stage adds chunk j of every row at step j. Words are consumed in
    that order, ``ops · (active accumulators)`` per step.
    """
    k, n_rows, n_chunks = steps.shape
    ops = 4 if kahan else 1
    s = np.zeros((n_rows, n_chunks))
    c = np.zeros((n_rows, n_chunks))
    at = 0
    for i in range(k):
        m = n_chunks if i < tail else n_chunks - 1
        run, comp, term = np.empty(n_rows * m), np.empty(n_rows * m), np.empty(n_rows * m)
        for b in range(n_rows):
            for j in range(m):
                run[b * m + j], comp[b * m + j], term[b * m + j] = s[b, j], c[b, j], steps[i, b, j]
        run, comp = _advance(run, comp, term, kahan, words, at, rd)
        for b in range(n_rows):
            for j in range(m):
                s[b, j], c[b, j] = run[b * m + j], comp[b * m + j]
        at += ops * n_rows * m
    if not chunked:
        return s[:, 0].copy()
    total, comp = np.zeros(n_rows), np.zeros(n_rows)
    for j in range(n_chunks):
        total, comp = _advance(total, comp, s[:, j].copy(), kahan, words, at, rd)
        at += ops * n_rows
    return total
