"""Per-mode predictions in K's eigenbasis: the eigendecomposition, the discrete recurrences and their
stability, and the closed-form solutions of the limiting ODEs (gradient flow, damped oscillator,
Bessel).

Part of ``ntkdyn.theory`` (its docstring states the conventions).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from ntkdyn.optimizers import (
    LimitODE,
    OptimizerSpec,
    asymptotic_companion,
    companion,
    initial_state,
    spectral_radius,
)


def eigen(K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ascending eigenvalues and orthonormal eigenvectors of the symmetric matrix K (float64)."""
    K = np.asarray(K, np.float64)
    lam, V = np.linalg.eigh(0.5 * (K + K.T))
    return lam, V


def modal_loss(modes: np.ndarray, c: float) -> np.ndarray:
    """L = (c/2) sum_i modes_i^2 over the last axis (inf where a diverging prediction overflows)."""
    with np.errstate(over="ignore"):
        return 0.5 * c * np.sum(np.square(modes), axis=-1)


def discrete_modes(spec: OptimizerSpec, hyper: dict, lam, coef, steps: int) -> np.ndarray:
    """Exact kernel-regime error per mode, e_k, for k = 0..steps: shape (steps + 1, n).

    Iterates X_k = A_k(lambda) X_{k-1} from X_0 = ``optimizers.initial_state`` (the first
    component of X is the error; ``optimizers.companion``). A scheduled ``hyper["eta"]``
    (``ntkdyn.schedules``) gives A_k its step size eta_k = schedule(k - 1): exact for a linear model.
    """
    from ntkdyn import schedules

    lam = np.asarray(lam, np.float64)
    X = initial_state(spec, coef)
    out = np.empty((steps + 1, lam.size))
    out[0] = X[:, 0]
    step = schedules.step_of(hyper)
    scheduled = step.scheduled
    etas = step.values(steps) if scheduled else None
    A = companion(spec, hyper, lam, 1) if spec.constant and not scheduled else None
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(1, steps + 1):
            if scheduled:
                A = companion(spec, schedules.hyper_at(hyper, etas[k - 1]), lam, k)
            elif not spec.constant:
                A = companion(spec, hyper, lam, k)
            X = np.einsum("nij,nj->ni", A, X)
            out[k] = X[:, 0]
    return out


def predicted_linear_rate(spec: OptimizerSpec, hyper: dict, lam) -> float:
    """Per-iteration loss factor max_i rho(A(lambda_i))^2 (k -> infinity for scheduled methods)."""
    return float(np.max(spectral_radius(asymptotic_companion(spec, hyper, lam))) ** 2)


def stability(spec: OptimizerSpec, hyper: dict, lam) -> dict:
    """Which modes are unstable (rho > 1) for these (eta, beta)."""
    rho = spectral_radius(asymptotic_companion(spec, hyper, lam))
    bad = np.flatnonzero(rho > 1.0 + 1e-12)
    return {
        "stable": bool(bad.size == 0),
        "unstable_modes": int(bad.size),
        "max_spectral_radius": float(np.max(rho)),
    }


def nag_c_crossover_step(eta: float, lam_min: float, r: float = 3.0) -> float | None:
    """Step where discrete NAG-C at a fixed eta leaves its power-law transient for a linear tail.

    As beta_k -> 1 the roots of the slowest mode (h = eta lam_min) satisfy |z|^2 -> 1 - h, and
    the loss envelope is ~ k^{-r} (1 - h)^k; its log-log slope -r + k log(1 - h) has equal power
    and exponential parts at k* = r / -log(1 - h) ~ r / h, i.e. of the order of 1/(eta lam_min)
    steps. None when h is outside (0, 1)."""
    h = eta * lam_min
    return r / -math.log1p(-h) if 0 < h < 1 else None


def gradient_flow_modes(lam, t) -> np.ndarray:
    """e_i(t) / e_i(0) = exp(-lambda_i t); shape t.shape + lam.shape."""
    return np.exp(-np.multiply.outer(np.asarray(t, np.float64), np.asarray(lam, np.float64)))


def damped_oscillator_modes(lam, gamma: float, t) -> np.ndarray:
    """Solution of c'' + gamma c' + lambda c = 0, c(0) = 1, c'(0) = 0.

    With w^2 = gamma^2/4 - lambda: c = e^{-gamma t/2} (cosh wt + (gamma/2) sinh(wt)/w), written
    as a sum of two exponentials when w is real (no overflow) and with cos/sin when imaginary.
    """
    t = np.asarray(t, np.float64)[..., None]
    lam = np.asarray(lam, np.float64)
    half = 0.5 * gamma
    w2 = half * half - lam
    w = np.sqrt(np.abs(w2))
    out = np.empty(np.broadcast_shapes(t.shape, lam.shape))
    over = w2 > 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        wt = w * t
        ws = np.where(w > 0, w, 1.0)
        # near t = 0 (w t < 1): e^{-ht} (cosh wt + h sinh(wt)/w); later, to avoid overflow:
        # 0.5 (1 + h/w) e^{(w-h)t} + 0.5 (1 - h/w) e^{-(w+h)t}
        near = np.exp(-half * t) * (np.cosh(wt) + half * np.where(w > 0, np.sinh(wt) / ws, t))
        far = 0.5 * (1 + half / ws) * np.exp((w - half) * t) + 0.5 * (1 - half / ws) * np.exp(-(w + half) * t)
        o_val = np.where(wt < 1.0, near, far)
        # underdamped or critical: e^{-ht} (cos wt + h sin(wt)/w), sin(wt)/w = t at w = 0
        u_val = np.exp(-half * t) * (np.cos(wt) + half * np.where(w > 0, np.sin(wt) / ws, t))
    out[...] = np.where(over, o_val, u_val)
    return out


def bessel_modes(lam, r: float, t) -> np.ndarray:
    """Solution of c'' + (r/t) c' + lambda c = 0, c(0) = 1, c'(0) = 0:

    c(t) = Gamma(nu + 1) (2 / z)^nu J_nu(z), z = sqrt(lambda) t, nu = (r - 1) / 2,
    and its series 1 - z^2 / (4 (nu + 1)) + z^4 / (32 (nu + 1)(nu + 2)) for z < 1e-2.
    """
    nu = 0.5 * (r - 1.0)
    z = np.multiply.outer(np.asarray(t, np.float64), np.sqrt(np.maximum(np.asarray(lam, np.float64), 0.0)))
    small = z < 1e-2
    zs = np.where(small, 1.0, z)
    with np.errstate(over="ignore", invalid="ignore"):
        if nu == 1.0:  # r = 3 (Nesterov): 2 J_1(z) / z, with the faster j1
            big = 2.0 * special.j1(zs) / zs
        elif nu == 0.5:  # r = 2: sin(z) / z
            big = np.sin(zs) / zs
        elif nu == 0.0:  # r = 1: J_0(z)
            big = special.j0(zs)
        else:
            big = np.exp(special.gammaln(nu + 1) + nu * np.log(2.0 / zs)) * special.jv(nu, zs)
    z2 = z * z
    series = 1.0 - z2 / (4 * (nu + 1)) + z2 * z2 / (32 * (nu + 1) * (nu + 2))
    return np.where(small, series, big)


def ode_modes(ode: LimitODE, lam, coef, t) -> np.ndarray:
    """Closed-form ODE error per mode at times t: shape t.shape + (n,) (``ode.modes``: the kind's own
    closed form, ``ntkdyn.odes``)."""
    return ode.modes(lam, coef, t)
