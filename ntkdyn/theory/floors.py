"""The least-squares floor, held-out maps, asymptotic regimes, gradient norms and adaptive restart.

Part of ``ntkdyn.theory`` (its docstring states the conventions).
"""

from __future__ import annotations

import math

import numpy as np

from ntkdyn import odes
from ntkdyn.optimizers import (
    LimitODE,
    OptimizerSpec,
    asymptotic_companion,
    companion,
    initial_state,
    spectral_radius,
)
from ntkdyn.theory.modes import nag_c_crossover_step


def null_modes(lam, rtol: float) -> np.ndarray:
    """Mask of K's numerical null space: |lam_i| <= rtol * max_j |lam_j| (numpy.linalg.matrix_rank's
    rule; rtol = n eps of the dtype K was computed in)."""
    lam = np.asarray(lam, np.float64)
    return np.abs(lam) <= rtol * float(np.max(np.abs(lam), initial=0.0))


def held_out_map(K_cross: np.ndarray, lam, V: np.ndarray, null: np.ndarray) -> np.ndarray:
    """M = K_test,train K^+ in K's eigenbasis: M = K_x V_r diag(1 / lam_r), shape (n_test, n), the
    columns of K's numerical null modes (``null_modes``) zero.

    Every linear method (GD, HB, NAG, schedules, restarts) moves the parameters of a linearised
    model along gradients c J^T e_j, so theta_k - theta_0 = J^T a_k and the outputs move by
    f(X; theta_k) - f(X; theta_0) = K a_k / c on the training points and by K_x a_k / c on new points
    (K = c J J^T, K_x = c J_test J^T). Hence Delta f_test = K_x K^+ Delta f_train, exact for the
    linearised model; the pseudo-inverse loses nothing on a singular K because a null mode v of K
    has J^T v = 0 (v^T K v = c |J^T v|^2), so K_x v = 0 and the training change has no component
    there. With the modes c_k = V^T e_k: e_test(k) = e_test(0) + M (c_k - c_0) = e_test(0) +
    K_x K^+ (e_k - e_0) (``held_out_errors``)."""
    lam = np.asarray(lam, np.float64)
    live = ~np.asarray(null, bool)
    scale = np.zeros_like(lam)
    scale[live] = 1.0 / lam[live]
    return (np.asarray(K_cross, np.float64) @ V) * scale


def held_out_errors(modes: np.ndarray, coef: np.ndarray, M: np.ndarray, e0_test: np.ndarray) -> np.ndarray:
    """Kernel-regime errors on held-out points, e_test(k) = e_test(0) + M (c_k - c_0), shape
    (steps, n_test), from the training modes c_k (rows of ``modes``; c_0 = ``coef``) and
    M = ``held_out_map`` (per mode: K_x v_i / lam_i). The held-out loss is then
    ``modal_loss(errors, c_test)`` (the same (c/2)||.||^2 over the last axis)."""
    return np.asarray(e0_test, np.float64) + (np.asarray(modes) - np.asarray(coef)) @ M.T


def loss_floor_star(lam, coef, c: float, rtol: float) -> dict:
    """The least-squares floor L* = (c/2) ||P_null e0||^2 = (c/2) sum_{i null} coef_i^2, P_null the
    projector on K's (numerical, ``null_modes``) null space, coef = V^T e0.

    In the kernel regime a method that moves along gradients (K e) never changes the null part of
    e (A(0) keeps it: c_k = c_0 for GD, HB, NAG, NAG-C), and every other mode of a convergent run
    tends to 0, so L -> L*. It is > 0 when the data cannot be interpolated, e.g. repeated inputs
    with different targets (then L* = (c/2) sum over groups of sum (y_i - mean_group y)^2).
    Returns {"floor": L*, "null_modes": count, "rtol": rtol}."""
    null = null_modes(lam, rtol)
    coef = np.asarray(coef, np.float64)
    return {
        "floor": 0.5 * c * float(np.sum(coef[null] ** 2)),
        "null_modes": int(null.sum()),
        "rtol": float(rtol),
    }


def asymptotic_regime(spec: OptimizerSpec, hyper: dict, lam, ode: LimitODE | None = None) -> dict:
    """The regime a fixed-step method ends in, at this eta, on the modes ``lam`` (pass those outside
    K's null space: they hold the floor L*), and the horizon (in steps) after which it sets in.

    rho = max_i rho(A(lam_i)), A the per-mode companion (its k -> infinity limit for scheduled
    momentum); loss factor ``rate`` = rho^2 per step; ``regime`` "linear" (rho < 1), "growing"
    (rho > 1) or "stalled" (|rho - 1| <= 1e-12). ``horizon``:
      r/t damping (``odes.VanishingDamping``: NAG-C, OGM): the crossover step
        k* = r / -log(1 - eta lam_min) (``nag_c_crossover_step``), ``horizon_kind`` "crossover";
      otherwise 1 / |log rho|, the steps over which the slowest (or fastest-growing) mode changes
        by a factor e (GD: 1 / -log(1 - eta lam_min) ~ 1/(eta lam_min)), ``horizon_kind``
        "slowest-mode time". Before it, the faster modes of a spread spectrum are still dying,
        and a sum of geometric modes can look sublinear; for a narrow spectrum the linear regime
        holds earlier, so this is the time by which it has set in.
    Empty ``lam``: every field None."""
    lam = np.asarray(lam, np.float64)
    out = {"regime": None, "rate": None, "horizon": None, "horizon_kind": None}
    if lam.size == 0:
        return out
    rho = float(np.max(spectral_radius(asymptotic_companion(spec, hyper, lam))))
    out["rate"] = rho**2
    if abs(rho - 1.0) <= 1e-12:
        out["regime"] = "stalled"
        return out
    out["regime"] = "linear" if rho < 1.0 else "growing"
    if rho < 1.0 and isinstance(ode, odes.VanishingDamping):
        out.update(
            horizon=nag_c_crossover_step(hyper["eta"], float(np.min(lam)), ode.r), horizon_kind="crossover"
        )
    else:
        out.update(horizon=1.0 / abs(math.log(rho)) if rho > 0 else 0.0, horizon_kind="slowest-mode time")
    return out


def modal_grad_norm_sq(modes: np.ndarray, lam, c: float) -> np.ndarray:
    """||grad_theta L||^2 in the kernel regime from the error modes (last axis), for L = (c/2)||e||^2:
    grad L = c J^T e, so ||grad L||^2 = c^2 e^T H e = c e^T K e = c sum_i lambda_i coef_i^2 with lambda the
    eigenvalues of K = c H and coef = V^T e (units: squared loss per squared parameter). For fixed-step
    NAG-C its decay exponent is the Bessel envelope k^-r times the fixed-step tail (``nag_c_tail_modes``),
    not Shi et al.'s gradient-correction bound."""
    with np.errstate(over="ignore", invalid="ignore"):
        return c * np.sum(np.asarray(lam, np.float64) * np.square(modes), axis=-1)


def restarted_modes(spec: OptimizerSpec, hyper: dict, lam, coef, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Kernel-regime error per mode of an adaptively restarted method (``optimizers.Restart``), exact for a
    linear model: the n modes are iterated together (the restart test couples them) with the base
    method's A_j(lambda), j = updates since the last restart, and the rule applied to the predicted
    trajectory before each update k >= 2 (E = e_{k-1}, P = e_{k-2} in the eigenbasis of K):

        function: ||E||^2 > ||P||^2                         (L(theta_{k-1}) > L(theta_{k-2}))
        gradient: sum_i E_i (1 - eta lambda_i)(E_i - P_i) > 0

    the latter being g_k . (x_k - x_{k-1}) / c with g = c J^T e, J (theta_{k-1} - theta_{k-2}) = E - P and
    g . g' = c e^T K e'. A restart sets j = 1 for update k. Returns (e_k for k = 0..steps, shape
    (steps + 1, n); the updates k at which a restart happened)."""
    from ntkdyn import optimizers

    rs = spec.restart
    base = optimizers.get(rs.base)
    lam = np.asarray(lam, np.float64)
    X = initial_state(base, coef)
    out = np.empty((steps + 1, lam.size))
    out[0] = X[:, 0]
    damp = 1.0 - hyper["eta"] * lam
    j, hits = 0, []
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(1, steps + 1):
            hit = False
            if k >= 2:
                E, P = out[k - 1], out[k - 2]
                hit = bool(E @ E > P @ P) if rs.rule == "function" else bool(np.sum(E * damp * (E - P)) > 0)
            j = 1 if hit else j + 1
            if hit:
                hits.append(k)
            X = np.einsum("nij,nj->ni", companion(base, hyper, lam, j), X)
            out[k] = X[:, 0]
    return out, np.asarray(hits, np.int64)
