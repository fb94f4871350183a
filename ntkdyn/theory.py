"""Kernel-regime predictions: exact discrete recurrences and limiting ODEs.

Everything here works in float64 on the eigen-decomposition of the dynamics kernel
K = c H (c from the loss; ``models.loss_scale``), with e = u - y the prediction error and
loss L = (c / 2) ||e||^2. Inputs are the eigenvalues ``lam`` of K and the coordinates
``coef = V^T e0`` of the initial error in its orthonormal eigenbasis V.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import special

from ntkdyn import odes
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


# --------------------------------------------------------------------------- discrete
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
    scheduled = schedules.is_scheduled(hyper.get("eta"))
    etas = schedules.eta_values(hyper["eta"], steps) if scheduled else None
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


# --------------------------------------------------------------------------- ODE closed forms
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


# --------------------------------------------------------------------------- scheduled second-order ODE
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


def _tsit5(field, t_start, ts, y0, args, rtol: float, atol: float, max_steps: int, jump_ts=None):
    """The diffrax solve every full-space ODE check here uses: Tsit5 from ``t_start`` to ts[-1] with a
    PID step-size controller (rtol, atol; the steps stop at ``jump_ts`` where the field jumps),
    saved at ``ts``; returns ``ys``."""
    import diffrax

    return diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        diffrax.Tsit5(),
        t_start,
        ts[-1],
        None,
        y0,
        args=args,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol, jump_ts=jump_ts),
        max_steps=max_steps,
    ).ys


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


# --------------------------------------------------------------------------- diffrax
def ode_diffrax(
    ode: LimitODE,
    K: np.ndarray,
    e0: np.ndarray,
    t: np.ndarray,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    max_steps: int = 1_000_000,
) -> np.ndarray:
    """Integrate the ODE in the full output space (no eigen-decomposition) with diffrax Tsit5.

    ``e0`` is the error at t = 0 and ``t`` must start at 0 (as the step times t_k do).
    Returns e(t) of shape (len(t), n), float64. The NAG-C ODE is singular at t = 0: it starts at
    t0 = min(t_1, 1e-3 / sqrt(lambda_max)) from the series e(t0) = e0 - t0^2/(4(nu+1)) K e0,
    e'(t0) = -t0/(2(nu+1)) K e0 (error O(t0^4 ||K||^2)).
    """
    import jax

    with jax.enable_x64(True):
        ts = np.asarray(t, np.float64)
        if ts[0] != 0.0:
            raise ValueError(f"ode_diffrax: t must start at 0 (e0 is e(0)), got t[0] = {ts[0]}")
        K = np.asarray(K, np.float64)
        e0 = np.asarray(e0, np.float64)
        kind = type(ode)
        if kind not in (odes.GradientFlow, odes.ConstantDamping, odes.VanishingDamping):
            raise ValueError(f"ode_diffrax: no full-space solver for {ode!r}")
        solve = _diffrax_solver(kind, rtol, atol, max_steps)
        coeff = ode.r if kind is odes.VanishingDamping else ode.gamma  # traced: one compile per ODE kind
        if kind is odes.GradientFlow:
            return np.asarray(solve(K, coeff, e0, 0.0, ts))
        y0, t_start = (e0, np.zeros_like(e0)), 0.0
        if kind is odes.VanishingDamping:
            nu = 0.5 * (ode.r - 1.0)
            lam_max = float(np.max(np.abs(np.linalg.eigvalsh(K))))
            positive = ts[ts > 0]
            t_start = min(
                float(positive[0]) if positive.size else 1.0, 1e-3 / math.sqrt(max(lam_max, 1e-300))
            )
            Ke0 = K @ e0
            y0 = (e0 - t_start**2 / (4 * (nu + 1)) * Ke0, -t_start / (2 * (nu + 1)) * Ke0)
        later = ts[ts >= t_start]
        ys = np.asarray(solve(K, coeff, y0, t_start, later)[0])
    if ys.shape[0] < len(ts):  # times before t0 (only t = 0): the initial condition itself
        ys = np.concatenate([np.tile(e0, (len(ts) - ys.shape[0], 1)), ys])
    return ys


@functools.lru_cache(maxsize=32)
def _diffrax_solver(kind: type, rtol: float, atol: float, max_steps: int):
    """A compiled diffrax Tsit5 solve (K, coeff, y0, t_start, ts) -> ys, cached per ODE *kind*
    (``ntkdyn.odes``): the damping coefficient (gamma of the constant damping, r of r/t) is a traced
    argument, so a sweep over beta, eta or r, and repeated predictions of equal shapes, compile once."""
    import jax

    def field(s, y, args):
        K, coeff = args
        if kind is odes.GradientFlow:
            return -K @ y
        e, de = y
        gamma = coeff if kind is odes.ConstantDamping else coeff / s
        return de, -gamma * de - K @ e

    @jax.jit
    def solve(K, coeff, y0, t_start, ts):
        return _tsit5(field, t_start, ts, y0, (K, coeff), rtol, atol, max_steps)

    return solve


# --------------------------------------------------------------------------- high-resolution ODEs
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


# --------------------------------------------------------------------------- floors and regimes
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


# --------------------------------------------------------------------------- gradient norms, adaptive restart
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
