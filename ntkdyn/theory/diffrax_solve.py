"""The numerical checks of the limiting ODEs in the full output space (diffrax, Tsit5 with a PID
controller), compiled once per ODE form.

Part of ``ntkdyn.theory`` (its docstring states the conventions).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ntkdyn import odes
from ntkdyn.optimizers import (
    LimitODE,
)


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
