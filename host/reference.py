"""The float64 reference optimum w* and the relative loss gap measured against it.

Example::

    >>> ref = reference_optimum(obj)          # scipy L-BFGS, then Newton polishing if needed
    >>> ref.grad_norm <= 1e-12
    True
    >>> relative_gap(obj.loss(w), ref.loss)

Two ways, chosen by the number of weights d·c (``hessian_free`` overrides):

- d·c ≤ DENSE_HESSIAN_MAX (2000; digits has 650): L-BFGS until its line search stalls
  (near ‖∇f‖ ≈ 1e-9…1e-11: it cannot resolve loss differences below float64's resolution),
  then Newton steps solved with the dense (d·c)² Hessian (at most 32 MB).
- larger: L-BFGS only until ‖∇f‖∞ ≤ 1e-2·‖∇f(0)‖∞, then inexact Newton steps: conjugate
  gradients on ``Objective.hessian_vector`` to a relative residual of 1e-4 (no Hessian is
  formed; a product costs about what a gradient does). A step cuts ‖∇f‖ up to 10^4-fold,
  so three or four reach the tolerance. On the 60000 × 785 × 10 softmax this takes 8–12 s
  (L-BFGS 22 iterations, then 14 + 10 + 13 CG products) where running L-BFGS to its stall
  alone takes 27 s; the dense Hessian there would be 490 MB, and building it an n × (d·c)
  temporary of 3.8 GB.

Both take a Newton step whole if it lowers ‖∇f‖, else halve it until it does, judging by
the gradient norm, never by f, whose differences near the optimum are below float64's
resolution. The tolerance ‖∇f‖₂ ≤ 1e-12 needs no scaling with n: ∇f is a mean, whose
rounding error is eps × the mean |xᵢ·ℓ'ᵢ| × a factor that grows at worst like the summation
length (rows per chunk + chunks: about 2200 at 10^6 × 101) and in practice like its square
root. Measured by stepping on past the tolerance: ‖∇f‖ bottoms out near 2e-17 on the
10^6 × 101 least-squares problem and near 2e-16…1e-15 on the 60000 × 785 × 10 softmax.

The gap is (f(w) − f*)/|f*|: scale-free, so one threshold (1e-10) means the same on every
problem. f* = 0 only happens for an interpolating unregularised least-squares fit; there
the absolute gap f(w) − f* is reported instead (the relative one is undefined).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.sparse.linalg import LinearOperator, cg

from host.models import Objective

GRAD_TOL = 1e-12
DENSE_HESSIAN_MAX = 2000        # d·c up to which Newton uses hessian(): (d·c)² float64 = 32 MB
LBFGS_HANDOFF = 1e-2            # hessian-free: L-BFGS until ‖∇f‖∞ ≤ this · ‖∇f(0)‖∞
CG_RTOL = 1e-4                  # hessian-free: CG's relative residual per Newton step
NEWTON_STEPS = 20
HALVINGS = 30                   # step halvings tried; after the last, the shortest step is kept


@dataclass(frozen=True, eq=False)
class Reference:
    w: np.ndarray
    loss: float
    grad_norm: float        # ‖∇f(w*)‖₂ as achieved (asserted <= GRAD_TOL)
    method: str             # "lbfgs", "lbfgs+newton" or "lbfgs+newton-cg"


class ReferenceError(RuntimeError):
    """The reference optimum could not be driven to the required gradient norm."""


def reference_optimum(obj: Objective, *, tol: float = GRAD_TOL, hessian_free: bool | None = None) -> Reference:
    """Minimise f in float64 to ‖∇f‖ <= tol: L-BFGS, then Newton steps (see the module docstring).

    ``hessian_free``: None chooses by size (d·c > DENSE_HESSIAN_MAX); True/False force a way.
    """
    shape = (obj.n_features, obj.n_outputs)
    if hessian_free is None:
        hessian_free = obj.n_features * obj.n_outputs > DENSE_HESSIAN_MAX

    def fun(v: np.ndarray) -> tuple[float, np.ndarray]:
        w = v.reshape(shape)
        return obj.loss(w), obj.grad(w).ravel()

    # The dense path runs L-BFGS as far as it goes: its Newton steps then start well inside
    # the region where they converge quadratically.
    gtol = LBFGS_HANDOFF * np.max(np.abs(obj.grad(obj.zeros()))) if hessian_free else tol * 1e-2
    res = minimize(fun, np.zeros(obj.n_features * obj.n_outputs), jac=True, method="L-BFGS-B",
                   options={"maxiter": 20000, "maxcor": 30, "gtol": gtol, "ftol": 0.0})
    w = res.x.reshape(shape)
    g = obj.grad(w)
    method = "lbfgs"
    for _ in range(NEWTON_STEPS):
        norm = np.linalg.norm(g)
        if norm <= tol:
            break
        if hessian_free:
            method = "lbfgs+newton-cg"
            step = _newton_cg_step(obj, w, g)
        else:
            method = "lbfgs+newton"
            step = np.linalg.solve(obj.hessian(w), g.ravel()).reshape(shape)
        # The full step, else halve it until ‖∇f‖ decreases: the Newton direction descends
        # ‖∇f‖² (d/dt ½‖∇f(w − t·step)‖² = −gᵀH·step ≈ −‖g‖² at t = 0), which, unlike f, stays
        # measurable near the optimum. Far from it (L-BFGS hands over early on the
        # hessian-free path) a full step can overshoot on nearly separable data.
        for t in 0.5 ** np.arange(HALVINGS):
            w_next = w - t * step
            g_next = obj.grad(w_next)
            if np.linalg.norm(g_next) < norm:
                break
        w, g = w_next, g_next
    norm = float(np.linalg.norm(g))
    if norm > tol:
        raise ReferenceError(f"reference optimum reached only ‖∇f‖ = {norm:.3g} > {tol:g} ({method})")
    return Reference(w, obj.loss(w), norm, method)


def _newton_cg_step(obj: Objective, w: np.ndarray, g: np.ndarray) -> np.ndarray:
    """∇²f(w)⁻¹g to a relative residual of CG_RTOL, by conjugate gradients on Hessian-vector products.

    The Hessian is symmetric positive definite (λ > 0, or a full-rank X), so CG applies; the
    prediction terms at w are computed once for all its products. A solve stopped by CG's
    iteration cap (10·d·c) is still used: every CG iterate s has gᵀH·s = ‖g‖² (its residuals
    are orthogonal to g), so it descends ‖∇f‖² like the exact step.
    """
    shape, size = g.shape, g.size
    terms = obj.anchor_terms(w)
    hessian = LinearOperator((size, size), dtype=np.float64,
                             matvec=lambda v: obj.hessian_vector(w, v.reshape(shape), terms).ravel())
    step, _ = cg(hessian, g.ravel(), rtol=CG_RTOL)
    return step.reshape(shape)


def relative_gap(loss: float, ref_loss: float) -> float:
    """(f(w) − f*)/|f*|, or f(w) − f* when f* = 0 (see the module docstring)."""
    diff = loss - ref_loss
    return diff / abs(ref_loss) if ref_loss != 0 else diff
