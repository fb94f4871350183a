"""The scheduled second-order ODE (heavy ball / NAG-SC with a step-size schedule): its eta -> 0 limit
per mode, exact per interval, and its diffrax twin.

Part of ``ntkdyn.theory`` (its docstring states the conventions).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ntkdyn.theory.diffrax_solve import _tsit5


def velocity_carry(dt, gamma, carry: float | None = None) -> float:
    """The exponent p of the scheduled momentum ODE's velocity rescaling (``piecewise_damped_modes``).

    ``carry`` given: that number. None: p = 1 - gamma_k dt_k, which is beta for the HB / NAG-SC ODE
    (gamma_k = (1 - beta) / sqrt(eta_k), dt_k = sqrt(eta_k)); it must be the same on every update that
    spans time (dt_k > 0), else a ValueError asks for ``carry``. No update spans time: 0."""
    if carry is not None:
        if not math.isfinite(carry):
            raise ValueError(f"carry: expected a finite exponent, got {carry!r}")
        return float(carry)
    dt, gamma = np.asarray(dt, np.float64), np.asarray(gamma, np.float64)
    live = dt > 0
    if not live.any():
        return 0.0
    p = 1.0 - gamma[live] * dt[live]
    if np.max(np.abs(p - p[0])) > 1e-9 * max(1.0, abs(p[0])):
        raise ValueError(
            "carry: 1 - gamma_k dt_k differs between updates (from "
            f"{p.min():.6g} to {p.max():.6g}); pass the velocity exponent carry explicitly"
        )
    return float(p[0])


def _velocity_scales(dt, p: float) -> np.ndarray:
    """q_k = (dt_k / dt_first)^p on the updates that span time (1 elsewhere): e' = q_k W on update k."""
    live = dt > 0
    q = np.ones_like(dt)
    if live.any():
        q[live] = (dt[live] / dt[live][0]) ** p
    return q


def piecewise_damped_modes(lam, coef, dt, gamma, at, carry: float | None = None) -> np.ndarray:
    """The eta -> 0 limit of a momentum method whose step size changes per update (optax's HB / NAG-SC
    with a schedule), solved exactly per mode and read at the step times t_k of the steps ``at``.

    Limit. optax keeps its velocity buffer v when eta changes (v_k = beta v_{k-1} + g_k,
    theta_k = theta_{k-1} - eta_k v_k for HB), and the ODE velocity of update k is
    e' = (e_k - e_{k-1}) / s_k = -s_k v_k (kernel regime, s_k = sqrt(eta_k) = dt_k, the ODE time of
    update k). Hence V_k = beta (s_k / s_{k-1}) V_{k-1} - s_k K e_{k-1}: dividing V_k - V_{k-1} by s_k
    and letting eta_0 -> 0 with (1 - beta) / sqrt(eta_0) fixed gives, for a smooth s(t),

        e'' + [(1 - beta) / s - beta (ln s)'] e' + K e = 0,

    and at a jump of eta the factor s_+ / s_- on V, applied over one step of length -> 0, becomes
    e'(t+) = (eta_+ / eta_-)^{beta / 2} e'(t-) (the integral of beta (ln s)' across the jump). For a step
    size held over each update both are the same statement: with e' = q W, q = s^p, p = ``carry`` (beta),
    W is continuous and on each update

        e'' + gamma_k e' + lambda e = 0  on [t_k, t_{k+1}),  t_{k+1} = t_k + dt_k,

    the constant-eta ODE of that update (``LimitODE``: gamma_k = (1 - beta) / sqrt(eta_k)), with e'
    multiplied by (dt_k / dt_{k-1})^p where dt changes. A per-update staircase of a smooth schedule
    (cosine) thereby carries the beta (ln s)' term; tests/test_schedules.py checks the eta -> 0 gap to a
    hand-written optax loop (order 1/2) and the staircase against the smooth ODE. ``carry = 0`` keeps e'
    continuous (this function before issue 17, not the limit: its gap to the discrete run stays ~0.1).
    The exponent beta and 1 are both consistent (they differ by (1 - beta) (ln s)' = O(sqrt eta_0)); beta
    is measured closer (the final loss gap on a x0.1 step is 0.8x that of 1, on a cosine 0.4x).

    A step with eta_k = 0 spans no time (its velocity growth is O(sqrt eta) of V and dropped); the
    rescaling then runs between the updates on either side. On each interval (c, c') moves by

        exp(A h) = e^{-mu h} [C I + S (A + mu I)],  A = [[0, 1], [-lambda, -gamma]], mu = gamma / 2,

    with (A + mu I)^2 = -w^2 I, w^2 = lambda - mu^2: C = cos(w h), S = sin(w h) / w (w^2 > 0),
    cosh / sinh (w^2 < 0), 1 and h (w = 0). Units: t is ODE time (sqrt(eta) per step).

    Args:
        lam: eigenvalues of K, (n,); coef: c(0) = V^T e0, (n,); dt, gamma: per update, (T,);
        at: the steps 0..T at which c is wanted (ascending); carry: the exponent p (None: 1 - gamma dt,
            i.e. beta; ``velocity_carry``).
    Returns:
        c(t_k) for k in ``at``, shape (len(at), n), float64.
    """
    lam = np.asarray(lam, np.float64)
    dt, gamma, at = np.asarray(dt, np.float64), np.asarray(gamma, np.float64), np.asarray(at, int)
    q = _velocity_scales(dt, velocity_carry(dt, gamma, carry))
    c, w = np.array(coef, np.float64), np.zeros_like(lam)  # w = c' / q_k, continuous
    out = np.empty((at.size, lam.size))
    j = 0
    for k in range(dt.size + 1):
        while j < at.size and at[j] == k:
            out[j] = c
            j += 1
        if k == dt.size or j == at.size:
            break
        h = dt[k]
        if h == 0.0:
            continue
        v = q[k] * w
        mu = 0.5 * gamma[k]
        x = np.sqrt(np.abs(lam - mu * mu)) * h
        under = lam - mu * mu > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            C = np.where(under, np.cos(x), np.cosh(x))
            S = h * np.where(x > 0, np.where(under, np.sin(x), np.sinh(x)) / np.where(x > 0, x, 1.0), 1.0)
        decay = math.exp(-mu * h)
        c, v = decay * (C * c + S * (mu * c + v)), decay * (C * v + S * (-lam * c - mu * v))
        w = v / q[k]
    return out


def piecewise_damped_diffrax(
    K: np.ndarray,
    e0: np.ndarray,
    dt,
    gamma,
    at,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    carry: float | None = None,
) -> np.ndarray:
    """The same scheduled momentum ODE as ``piecewise_damped_modes``, integrated in the full output space
    (no eigenvectors) with diffrax Tsit5 in the continuous variables (e, W), e' = q(t) W:

        e' = q W,   W' = -gamma(t) W - K e / q,   q = (dt_k / dt_first)^p, gamma = gamma_k on [t_k, t_{k+1}),

    which is e'' + gamma_k e' + K e = 0 on each interval with e' rescaled by (dt_k / dt_{k-1})^p at its
    edges; the steps of the controller stop at every t_k (``jump_ts``). Returns e(t_k) for k in ``at``,
    shape (len(at), n), float64."""
    import jax

    dt, gamma, at = np.asarray(dt, np.float64), np.asarray(gamma, np.float64), np.asarray(at, int)
    q = _velocity_scales(dt, velocity_carry(dt, gamma, carry))
    edges = np.concatenate([[0.0], np.cumsum(dt)])
    live = dt > 0  # updates that span time (eta_k > 0)
    starts, gam, qs = edges[:-1][live], gamma[live], q[live]
    ts = edges[at]
    e0 = np.asarray(e0, np.float64)
    if ts[-1] == 0.0:
        return np.tile(e0, (at.size, 1))
    with jax.enable_x64(True):
        solve = _piecewise_solver(rtol, atol)
        ys = np.asarray(solve(np.asarray(K, np.float64), starts, gam, qs, (e0, np.zeros_like(e0)), ts)[0])
    return ys


@functools.lru_cache(maxsize=4)
def _piecewise_solver(rtol: float, atol: float):
    import jax
    import jax.numpy as jnp

    def field(s, y, args):
        K, starts, gam, qs = args
        e, w = y
        i = jnp.clip(jnp.searchsorted(starts, s, side="right") - 1, 0, gam.size - 1)
        return qs[i] * w, -gam[i] * w - (K @ e) / qs[i]

    @jax.jit
    def solve(K, starts, gam, qs, y0, ts):
        return _tsit5(field, 0.0, ts, y0, (K, starts, gam, qs), rtol, atol, 1_000_000, jump_ts=starts)

    return solve
