"""Full-precision epochs on the host (SGD, SVRG) and the rules every algorithm shares.

The sample order is part of the run's definition, so host baselines and the accelerator see
the same samples: epoch e (1, 2, …) uses ``epoch_order(seed, e, n, T·B)``, the T·B integers
``np.random.default_rng([seed, e]).integers(0, n, size=T·B)`` (with replacement), as uint32;
step t uses entries t·B … t·B + B − 1. Example::

    >>> order = epoch_order(seed=0, epoch=1, n_samples=obj.n_samples, count=obj.n_samples)
    >>> w = sgd_epoch(obj, obj.zeros(), order, step_size=0.5 / obj.smoothness(), batch_size=1)
"""
from __future__ import annotations

import numpy as np

from host.models import Objective


def epoch_order(seed: int, epoch: int, n_samples: int, count: int) -> np.ndarray:
    """The ``count`` sample indices of epoch ``epoch`` (see the module docstring)."""
    return np.random.default_rng([seed, epoch]).integers(0, n_samples, size=count).astype(np.uint32)


def sgd_epoch(obj: Objective, w: np.ndarray, order: np.ndarray, step_size: float,
              batch_size: int) -> np.ndarray:
    """len(order)/B steps of w ← w − α·mean_{i∈batch} ∇f_i(w); returns the last iterate."""
    w = w.copy()
    for start in range(0, len(order), batch_size):
        w -= step_size * obj.batch_grad(w, order[start:start + batch_size])
    return w


def svrg_epoch(obj: Objective, anchor: np.ndarray, order: np.ndarray, step_size: float,
               batch_size: int) -> np.ndarray:
    """One SVRG epoch from w = w̃: w ← w − α(∇f_B(w) − ∇f_B(w̃) + g̃); returns the last iterate.

    The last iterate becomes the next anchor (torchhalp's and HALP's choice, "option I").
    ∇f_B(w) − ∇f_B(w̃) = x_Bᵀ(p(w) − p(w̃))/B + λ(w − w̃): the anchor's predictions are
    computed once per epoch, as the accelerator receives them.
    """
    full_grad = obj.grad(anchor)
    anchor_pred = obj.predictions(obj.x @ anchor)
    w = anchor.copy()
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        xb = obj.x[idx]
        diff = xb.T @ (obj.predictions(xb @ w) - anchor_pred[idx]) / len(idx)
        w -= step_size * (diff + obj.l2 * (w - anchor) + full_grad)
    return w
