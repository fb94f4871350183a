"""High-resolution ODEs (Shi, Du, Jordan, Su 2018) per mode and in the output space, and NAG-C's
fixed-step tail.

Part of ``ntkdyn.theory`` (its docstring states the conventions).
"""

from __future__ import annotations

import math

import numpy as np

from ntkdyn.theory.diffrax_solve import _tsit5
from ntkdyn.theory.modes import bessel_modes, damped_oscillator_modes, nag_c_crossover_step


def impulse_modes(omega2, gamma, t) -> np.ndarray:
    """Solution of c'' + gamma c' + omega2 c = 0, c(0) = 0, c'(0) = 1 (``omega2``, ``gamma``
    broadcast over the mode axis): e^{-gamma t/2} sin(wt)/w, t e^{-gamma t/2} (critical) or
    (e^{(w-h)t} - e^{-(w+h)t}) / (2w) (overdamped; no overflow); shape t.shape + modes."""
    t = np.asarray(t, np.float64)[..., None]
    omega2 = np.asarray(omega2, np.float64)
    half = 0.5 * np.asarray(gamma, np.float64)
    w2 = half * half - omega2
    w = np.sqrt(np.abs(w2))
    ws = np.where(w > 0, w, 1.0)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        wt = w * t
        near = np.exp(-half * t) * np.where(w > 0, np.sinh(wt) / ws, t)
        far = (np.exp((w - half) * t) - np.exp(-(w + half) * t)) / (2 * ws)
        over = np.where(wt < 1.0, near, far)
        under = np.exp(-half * t) * np.where(w > 0, np.sin(wt) / ws, t)
    return np.where(w2 > 0, over, under)


def oscillator_modes(omega2, gamma, velocity, t) -> np.ndarray:
    """c'' + gamma c' + omega2 c = 0, c(0) = 1, c'(0) = velocity, per mode (arrays broadcast)."""
    velocity = np.asarray(velocity, np.float64)
    return damped_oscillator_modes(omega2, gamma, t) + velocity * impulse_modes(omega2, gamma, t)


def _vanishing_series(ode, lam, t0: float, terms: int = 8):
    """Regular solution of t c'' + (r + a t) c' + (b0 lam t + b1 lam) c = 0 at t0 (c(0) = 1):
    a_{j+1} = -((a j + b1 lam) a_j + b0 lam a_{j-1}) / ((j + 1)(j + r)); returns c(t0), c'(t0)."""
    a_d = ode.hess_damping * lam
    coeffs = [np.ones_like(lam), -(ode.stiffness_t * lam) / ode.r]
    for j in range(1, terms):
        prev = coeffs[j - 1]
        num = (a_d * j + ode.stiffness_t * lam) * coeffs[j] + ode.stiffness * lam * prev
        coeffs.append(-num / ((j + 1) * (j + ode.r)))
    c = sum(cj * t0**j for j, cj in enumerate(coeffs))
    dc = sum(j * cj * t0 ** (j - 1) for j, cj in enumerate(coeffs) if j > 0)
    return c, dc


def highres_modes(ode, lam, coef, t, rtol: float = 1e-11, atol: float = 1e-14) -> np.ndarray:
    """Error per mode of an ``optimizers.HighResODE`` at the step clock t = k * time_step (the ODE's own
    time is tau = t + ode.start): shape t.shape + (n,).

    Constant damping (autonomous: only the elapsed time t matters): closed form, a damped oscillator per
    mode with damping gamma + hess_damping lam, stiffness stiffness * lam and e'(tau_0) = -velocity0 lam e0.
    Vanishing damping (no elementary closed form): the modes are integrated together in tau with scipy's
    DOP853, from tau_0 = ode.start > 0 with e(tau_0) = e0, e'(tau_0) = -velocity0 lam e0, or, for a start at
    the singular point tau = 0, from t_s = min(t_1, 1e-2 / sqrt(lam_max)) seeded by the regular power
    series (``_vanishing_series``, also used for 0 < t < t_s).
    """
    lam = np.asarray(lam, np.float64)
    t = np.asarray(t, np.float64)
    coef = np.asarray(coef, np.float64)
    if np.any(t < 0):
        raise ValueError(f"highres_modes: the step clock t = k * time_step must be >= 0, got min {t.min()}")
    if not ode.vanishing:
        damping = ode.gamma + ode.hess_damping * lam
        return oscillator_modes(ode.stiffness * lam, damping, -ode.velocity0 * lam, t) * coef
    from scipy.integrate import solve_ivp

    flat = t.ravel()
    n = lam.size
    if ode.start > 0:
        t_seed, c0, dc0 = 0.0, np.ones(n), -ode.velocity0 * lam
    else:
        positive = flat[flat > 0]
        first = float(positive.min()) if positive.size else 1.0
        t_seed = min(first, 1e-2 / math.sqrt(max(float(lam.max()), 1e-300)))
        c0, dc0 = _vanishing_series(ode, lam, t_seed)
    a_d = ode.hess_damping * lam

    def rhs(tau, y):
        c, dc = y[:n], y[n:]
        return np.concatenate([dc, -(ode.damping_at(tau) + a_d) * dc - ode.stiffness_at(tau) * lam * c])

    later = np.unique(flat[flat >= t_seed])
    out = np.ones((flat.size, n))
    if later.size:
        vals = np.tile(c0, (later.size, 1))
        if later[-1] > t_seed:
            sol = solve_ivp(
                rhs,
                (ode.start + t_seed, ode.start + later[-1]),
                np.concatenate([c0, dc0]),
                method="DOP853",
                t_eval=ode.start + later,
                rtol=rtol,
                atol=atol,
            )
            if not sol.success:
                raise RuntimeError(f"high-resolution ODE integration failed: {sol.message}")
            vals = sol.y[:n].T
        mask = flat >= t_seed
        out[mask] = vals[np.searchsorted(later, flat[mask])]
    early = (flat > 0) & (flat < t_seed)
    if early.any():
        out[early] = np.stack([_vanishing_series(ode, lam, float(s))[0] for s in flat[early]])
    return out.reshape(t.shape + (n,)) * coef


def highres_diffrax(
    ode,
    K: np.ndarray,
    e0: np.ndarray,
    t: np.ndarray,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    max_steps: int = 1_000_000,
) -> np.ndarray:
    """The high-resolution ODE integrated in the full output space with diffrax Tsit5 (no
    eigen-decomposition), at the step clock t = k * time_step (t[0] = 0; the ODE's own time is
    tau = t + ode.start). From tau_0 = ode.start with e'(tau_0) = -velocity0 K e0; vanishing damping
    started at the singular tau = 0 begins at t0 = min(t_1, 1e-3/sqrt(lam_max)) from the regular series
    to O(t0^2)."""
    import jax
    import jax.numpy as jnp

    if np.asarray(t)[0] != 0.0:
        raise ValueError(
            f"highres_diffrax: t must start at 0 (e0 is the error at update 0), got t[0] = {np.asarray(t)[0]}"
        )
    with jax.enable_x64(True):
        Kj = jnp.asarray(K, jnp.float64)
        e0j = jnp.asarray(e0, jnp.float64)
        ts = jnp.asarray(np.asarray(t, np.float64) + ode.start, jnp.float64)

        def vector_field(tau, y, args):
            e, de = y
            damp = ode.damping_at(tau) * de + ode.hess_damping * (Kj @ de)
            return de, -damp - ode.stiffness_at(tau) * (Kj @ e)

        Ke0 = Kj @ e0j
        if ode.vanishing and ode.start == 0:
            lam_max = float(np.max(np.abs(np.linalg.eigvalsh(np.asarray(K)))))
            positive = np.asarray(t)[np.asarray(t) > 0]
            t0 = min(float(positive[0]) if positive.size else 1.0, 1e-3 / math.sqrt(max(lam_max, 1e-300)))
            k1 = ode.stiffness_t / ode.r  # series e = e0 + t a1 + t^2 a2, a1 = -k1 K e0
            a1 = -k1 * Ke0
            a2 = -((ode.hess_damping + ode.stiffness_t) * (Kj @ a1) + ode.stiffness * Ke0) / (2 * (1 + ode.r))
            y0 = (e0j + t0 * a1 + t0**2 * a2, a1 + 2 * t0 * a2)
            t_start = jnp.asarray(t0, jnp.float64)
            later = ts[ts >= t_start]
        else:
            y0 = (e0j, -ode.velocity0 * Ke0)
            t_start, later = ts[0], ts
        ys = np.asarray(_tsit5(vector_field, t_start, later, y0, None, rtol, atol, max_steps)[0])
    if ys.shape[0] < len(t):
        ys = np.concatenate([np.tile(np.asarray(e0), (len(t) - ys.shape[0], 1)), ys])
    return ys


def nag_c_tail_modes(lam, coef, eta: float, r: float, k) -> np.ndarray:
    """Fixed-step NAG-C per mode as the low-resolution (Bessel) solution times the fixed-step tail:

        e_i(k) ~ coef_i c_i(t_k) (1 - eta lambda_i)^{k/2},   t_k = k sqrt(eta),

    c_i = ``bessel_modes`` (c'' + (r/t) c' + lambda c = 0), whose squared envelope is
    Gamma(nu + 1)^2 2^r / (pi (eta lambda)^{r/2}) k^{-r} (nu = (r - 1)/2), and (1 - h)^k the product of
    |z|^2 = beta_k (1 - h) (det A_k) that the ODE lacks. Hence the squared gradient norm
    c sum_i lambda_i e_i^2 (``modal_grad_norm_sq``) of a fixed-step NAG-C run falls like k^{-r} times
    sum_i w_i (1 - eta lambda_i)^k: its measured exponent over a window below the crossover
    (``nag_c_crossover_step``) is -r (the per-mode Bessel envelope, which the low-resolution ODE has too)
    steepened by the tail, e.g. -3.6 .. -4.7 where the ODE alone gives -3.1 (tests/test_theory.py). It is
    *not* evidence of Shi, Du, Jordan, Su's (2018) gradient-correction bound (min ||grad f||^2 = O(k^-3) for
    every convex f): on a quadratic the k^-3 holds already for the low-resolution ODE, which has no
    gradient-correction term; in continuous time the tail is the damping e^{-eta lambda k} that the
    high-resolution ODE's sqrt(eta) K e' term adds per mode ((1 - h)^k to first order in h).
    Needs 0 <= eta lambda <= 1 (else ValueError); shape k.shape + (n,)."""
    lam = np.asarray(lam, np.float64)
    h = eta * lam
    if np.any(h < 0) or np.any(h > 1):
        raise ValueError(
            f"nag_c_tail_modes: eta * lambda must lie in [0, 1], got [{h.min():.4g}, {h.max():.4g}]"
        )
    k = np.asarray(k, np.float64)
    tail = np.power.outer(1.0 - h, 0.5 * k)  # (n,) + k.shape
    tail = np.moveaxis(tail, 0, -1)
    return bessel_modes(lam, r, math.sqrt(eta) * k) * tail * np.asarray(coef, np.float64)


def vanishing_tail(eta: float, lam_min: float, r: float = 3.0) -> dict:
    """Fixed-step NAG-C (and OGM, r = 3) on the slowest mode h = eta lam_min: the loss envelope is
    prod_j beta_j (1 - h) ~ C k^{-r} (1 - h)^k (det A_k = beta_k (1 - h)), so the tail loss factor
    is 1 - h and the **crossover step**, where the exponential factor's share of the log-log slope
    d log L / d log k = -r + k log(1 - h) equals the power law's, is k* = r / (-log(1 - h)) ~ r/h.
    The same product, mode by mode, sets the gradient norm's exponent (``nag_c_tail_modes``)."""
    h = eta * lam_min
    return {
        "crossover_step": nag_c_crossover_step(eta, lam_min, r),
        "tail_rate": 1.0 - h if 0 < h < 1 else None,
        "power_exponent": -float(r),
    }
