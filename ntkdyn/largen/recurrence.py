"""Discrete recurrences by products with K, and regimes from the extreme eigenvalues."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ntkdyn.largen._types import LargeNPrediction, _check_keep, _check_scale, _check_square, matvec
from ntkdyn.optimizers import OptimizerSpec


# --------------------------------------------------------------------------- discrete recurrences
def discrete_matvec_batch(
    spec: OptimizerSpec,
    hypers: Sequence[dict],
    K,
    e0,
    steps: int,
    c: float,
    *,
    record=None,
    keep: Sequence[int] = (),
    K_cross=None,
    e0_test=None,
    c_test: float | None = None,
    rows: int | None = None,
) -> list[LargeNPrediction]:
    """R runs of one linear method (``spec.method``: GD, HB, NAG, NAG-C, ...; per-run ``hypers``, with
    ``eta`` a number or a schedule) iterated together in the output space, one product K E (n x R) per
    update:

        X_k = T_k X_{k-1} + u_k (K e_{k-1}),   X = (e, J z_1, ..., J z_p),

    X_0 = (e0, e0 for "point" states, 0 for "vector" states), (T_k, u_k) = ``spec.method.step(hyper_k, k)``
    with hyper_k's eta = eta_k (schedule(k - 1), ``schedules.eta_values``). In K's eigenbasis this is
    ``theory.discrete_modes`` mode by mode (A_k(lambda) = T_k + lambda u_k e_0^T); here no eigenvectors.

    Held-out points (``K_cross`` = c H(X_test, X), (n_test, n); ``e0_test``; ``c_test``): the parameters
    move by J^T w (gradients c J^T e), with W_k = T_k W_{k-1} + u_k e_{k-1}, W_0 = 0 (c folded in), so
    e_k = e0 + K W_k[0] and e_test(k) = e_test(0) + K_cross W_k[0]: exact for the linearised model, the
    same as ``theory.held_out_errors`` without K's pseudo-inverse.

    ``e0``: (n,) shared or (n, R) per run; ``record``: the steps whose loss (c/2)||e_k||^2 and squared
    gradient norm c e_k^T K e_k are returned (default 0..steps, ascending); ``keep``: indices into
    ``record`` at which e_k (and e_test) are returned. Cost: steps (+1) products K E (O(n^2 R) each),
    O(n R p^2) per update, and one product K_cross W per recorded step."""
    from ntkdyn import schedules

    n = _check_square(K)
    c = _check_scale("c", c)
    if spec.method is None:
        raise ValueError(
            f"optimizer {spec.name!r} has no linear recurrence (spec.method is None); "
            "allowed: a method with a LinearMethod, e.g. gd, hb, nag, nag_c"
        )
    if not (isinstance(steps, (int, np.integer)) and steps >= 0):
        raise ValueError(f"steps: expected an integer >= 0, got {steps!r}")
    R = len(hypers)
    if R == 0:
        raise ValueError("hypers: expected at least one run")
    E0 = np.asarray(e0, np.float64)
    E0 = np.repeat(E0[:, None], R, axis=1) if E0.ndim == 1 else E0
    if E0.shape != (n, R) or not np.all(np.isfinite(E0)):
        raise ValueError(f"e0: expected finite values of shape ({n},) or ({n}, {R}), got {np.shape(e0)}")
    rec = np.arange(steps + 1) if record is None else np.asarray(record, int)
    if rec.ndim != 1 or rec.size == 0 or rec.min() < 0 or rec.max() > steps or np.any(np.diff(rec) <= 0):
        raise ValueError(f"record: expected ascending distinct steps in [0, {steps}]")
    keep_ix = _check_keep(keep, rec.size)
    test = K_cross is not None
    if test:
        K_cross = np.asarray(K_cross)
        if K_cross.ndim != 2 or K_cross.shape[1] != n:
            raise ValueError(f"K_cross: expected shape (n_test, {n}), got {K_cross.shape}")
        E0t = np.asarray(e0_test, np.float64)
        E0t = np.repeat(E0t[:, None], R, axis=1) if E0t.ndim == 1 else E0t
        if E0t.shape != (K_cross.shape[0], R):
            raise ValueError(
                f"e0_test: expected shape ({K_cross.shape[0]},) or ({K_cross.shape[0]}, {R}), "
                f"got {np.shape(e0_test)}"
            )
        c_test = _check_scale("c_test", c_test)
    method = spec.method
    kinds = method.states
    p = len(kinds)
    X = np.zeros((p + 1, n, R))
    X[0] = E0
    for j, kind in enumerate(kinds, start=1):
        if kind == "point":
            X[j] = E0
    W = np.zeros((p + 1, n, R)) if test else None
    etas = [schedules.eta_values(h["eta"], steps) for h in hypers]
    fixed = spec.constant and not any(schedules.step_of(h).scheduled for h in hypers)

    def coeffs(k):
        Ts, us = [], []
        for h, eta in zip(hypers, etas):
            T, u = method.step(schedules.hyper_at(h, eta[k - 1]), float(k))
            Ts.append(np.asarray(T, np.float64))
            us.append(np.asarray(u, np.float64))
        return np.stack(Ts), np.stack(us)  # (R, p+1, p+1), (R, p+1)

    mv = matvec(K, rows)
    loss, grad = np.empty((rec.size, R)), np.empty((rec.size, R))
    kept = np.empty((keep_ix.size, n, R))
    t_loss = np.empty((rec.size, R)) if test else None
    t_kept = np.empty((keep_ix.size, K_cross.shape[0], R)) if test else None
    TU = coeffs(1) if fixed and steps >= 1 else None
    r = 0
    for k in range(steps + 1):
        at = r < rec.size and rec[r] == k
        G = mv(X[0]) if (k < steps or at) else None  # K e_k
        if at:
            loss[r] = 0.5 * c * np.sum(X[0] * X[0], axis=0)
            grad[r] = c * np.sum(X[0] * G, axis=0)
            slots = np.flatnonzero(keep_ix == r)
            kept[slots] = X[0]
            if test:
                assert W is not None and t_loss is not None and t_kept is not None and c_test is not None
                et = E0t + K_cross @ W[0]
                t_loss[r] = 0.5 * c_test * np.sum(et * et, axis=0)
                t_kept[slots] = et
            r += 1
        if k < steps:
            T, u = TU if TU is not None else coeffs(k + 1)  # TU is set exactly when fixed and steps >= 1
            assert G is not None  # k < steps
            if test:
                assert W is not None
                W = np.einsum("rji,inr->jnr", T, W) + np.einsum("rj,nr->jnr", u, X[0])
            X = np.einsum("rji,inr->jnr", T, X) + np.einsum("rj,nr->jnr", u, G)
    return [
        LargeNPrediction(
            "matvec",
            loss[:, i].copy(),
            rec,
            None,
            kept[:, :, i].copy() if keep_ix.size else None,
            keep_ix,
            int(steps),
            None,
            None,
            True,
            grad_norm_sq=grad[:, i].copy(),
            test_loss=t_loss[:, i].copy() if t_loss is not None else None,
            test_errors=t_kept[:, :, i].copy() if t_kept is not None and keep_ix.size else None,
        )
        for i in range(R)
    ]


def discrete_matvec(
    spec: OptimizerSpec,
    hyper: dict,
    K,
    e0,
    steps: int,
    c: float,
    *,
    record=None,
    keep: Sequence[int] = (),
    K_cross=None,
    e0_test=None,
    c_test: float | None = None,
    rows: int | None = None,
) -> LargeNPrediction:
    """One run of ``discrete_matvec_batch`` (the method's exact recurrence by products with K)."""
    return discrete_matvec_batch(
        spec,
        [hyper],
        K,
        e0,
        steps,
        c,
        record=record,
        keep=keep,
        K_cross=K_cross,
        e0_test=e0_test,
        c_test=c_test,
        rows=rows,
    )[0]


# --------------------------------------------------------------------------- regimes from the extremes
def regime_from_extremes(spec: OptimizerSpec, hyper: dict, lam_min: float, lam_max: float, ode=None) -> dict:
    """``theory.asymptotic_regime`` (regime, rate, horizon, horizon_kind) and ``theory.stability``'s
    ``stable`` / ``max_spectral_radius`` from the two extreme (live) eigenvalues of K only.

    Exact where rho(A(lambda)) is quasi-convex in lambda, so that its maximum over [lam_min, lam_max] sits
    at an end: GD (|1 - eta lambda|); HB and NAG with constant beta (rho falls while the roots are real at
    small eta lambda, is sqrt(beta) (HB) or sqrt(beta (1 - eta lambda)) (NAG) while they are complex, and
    rises where they are real again); NAG-C's k -> infinity companion (beta -> 1). The horizon of r/t
    damping uses lam_min (``theory.nag_c_crossover_step``). tests/test_largen.py checks the equality with
    the full-spectrum functions on grids of eta and beta, stable and unstable. With an unconverged
    lam_min (``ExtremeEigenvalues.converged`` False: an upper bound) the slowest-mode horizon is a lower
    bound. The count of unstable modes needs the whole spectrum and is not returned."""
    from ntkdyn import theory

    if not (math.isfinite(lam_min) and math.isfinite(lam_max) and lam_min <= lam_max):
        raise ValueError(
            f"lam_min, lam_max: expected finite lam_min <= lam_max, got {lam_min!r}, {lam_max!r}"
        )
    ends = np.array([lam_min, lam_max], np.float64)
    st = theory.stability(spec, hyper, ends)
    return {
        **theory.asymptotic_regime(spec, hyper, ends, ode),
        "stable": st["stable"],
        "max_spectral_radius": st["max_spectral_radius"],
    }
