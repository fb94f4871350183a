"""The high-resolution ODEs (Shi, Du, Jordan, Su 2018) of HB, NAG-SC and the two NAG-C forms, each the
modified equation of its exact recurrence with a consistent start (``odes.HighResODE``)."""

from __future__ import annotations

import math

from ntkdyn.odes import HighResODE
from ntkdyn.optimizers.spec import Hyper


def _hb_ode_hr(h: Hyper) -> HighResODE:
    """HB (any iterate: HB holds one). Per mode (h = eta lambda)
    e_{k+1} - e_k - beta (e_k - e_{k-1}) + h e_k = 0, e_1 = (1 - h) e_0. With s = sqrt(eta), t = k s and
    Taylor expansion at t_k (e_{k+1} - 2 e_k + e_{k-1} = s^2 e'' + O(s^4),
    e_k - e_{k-1} = s e' - s^2 e''/2 + O(s^3)):

        ((1 + beta)/2) e'' + ((1 - beta)/s) e' + K e = 0

    up to a residual O(s^2) = O(eta) when 1 - beta = O(s) (beta = 1 - gamma s, gamma fixed: the HB ODE's
    regime), written here with unit mass. Start: the ODE must pass e_1 at t = s to O(s^3), so
    e'(0) = (e_1 - e_0)/s - (s/2) e''(0) + O(s^2) with e''(0) = -(gamma_hr e'(0) + stiffness K e0); solved
    for e'(0) this is exactly -(s/2) K e0 (velocity0 = s/2). The forward difference alone, -s K e0, is off
    by O(s) and leaves the solution only O(sqrt eta) accurate."""
    s, b = math.sqrt(h["eta"]), h["beta"]
    return HighResODE(
        time_step=s,
        damping="constant",
        gamma=2 * (1 - b) / ((1 + b) * s),
        stiffness=2 / (1 + b),
        velocity0=0.5 * s,
    )


def _nag_ode_hr(h: Hyper) -> HighResODE:
    """NAG-SC, the optax/torch form: the look-ahead (gradient) point y_k is held and logged. Per mode
    y_{k+1} - y_k - beta (y_k - y_{k-1}) + h [y_k + beta (y_k - y_{k-1})] = 0 (h = eta lambda),
    y_1 = (1 - (1 + beta) h) y_0. The plain-step iterate x_{k+1} = (1 - h) y_k obeys the same recurrence
    per mode, so its ODE is the same; only the start differs. Expanding as for HB, the extra term
    h beta (y_k - y_{k-1}) = beta s^3 K y' + O(s^4) gives, divided by the mass (1 + beta)/2,

        e'' + (2 (1 - beta) / ((1 + beta) s) + (2 beta / (1 + beta)) s K) e' + (2 / (1 + beta)) K e = 0,

    with residual O(eta) (beta = 1 - gamma s). The gradient-correction coefficient 2 beta / (1 + beta) s is
    what the expansion gives for this iterate (and for x); Shi et al.'s sqrt(s) is it with
    2 beta / (1 + beta) = 1 - O(sqrt eta) rounded to 1, a change O(eta) in the coefficient and so O(eta) in
    e: both are O(eta) models (tests/test_theory.py fits both). Start (as for HB, the O(s^2) Hessian part
    of e''(0) dropped): e'(0) = (y_1 - y_0)/s - (s/2) e''(0) = -(s (2 + beta)/2) K e0,
    velocity0 = s (2 + beta)/2 (the forward difference, -(1 + beta) s K e0, leaves O(sqrt eta))."""
    s, b = math.sqrt(h["eta"]), h["beta"]
    return HighResODE(
        time_step=s,
        damping="constant",
        gamma=2 * (1 - b) / ((1 + b) * s),
        hess_damping=2 * b / (1 + b) * s,
        stiffness=2 / (1 + b),
        velocity0=0.5 * (2 + b) * s,
    )


def _nag_c_highres(h: Hyper, time_offset: float, stiffness_t2: float) -> HighResODE:
    """e'' + (r/tau + s K) e' + (1 + r s/(2 tau) + stiffness_t2/tau^2) K e = 0 (s = sqrt(eta)), started at
    tau_0 = time_offset * s from e0 with the forward difference e'(tau_0) = (e_1 - e_0)/s = -s K e0 (both
    NAG-C forms make a plain gradient step first). A start error O(s) in e'(tau_0) moves e by O(s^2) only:
    r/tau damping shrinks a velocity kick at tau_0 ~ s like (tau_0/tau)^r."""
    s, r = math.sqrt(h["eta"]), h["r"]
    return HighResODE(
        time_step=s,
        damping="vanishing",
        r=r,
        hess_damping=s,
        stiffness=1.0,
        stiffness_t=0.5 * r * s,
        stiffness_t2=stiffness_t2,
        velocity0=s,
        time_offset=time_offset,
    )


def _nag_c_ode_hr(h: Hyper) -> HighResODE:
    """NAG-C in the torch form (``_nag_c``: look-ahead point held, velocity from update 2). For k >= 2, per
    mode theta_{k+1} - theta_k = q_k (theta_k - theta_{k-1}) - h (1 + beta_{k+1}) theta_k + h q_k theta_{k-1},
    q_k = beta_{k+1}^2 / beta_k, where 1 - q_k = r / (k + r + 1) + O(k^-3) and
    beta_{k+1} - q_k = -r/k^2 + O(k^-3):
    a classic (``_nag_c_classic``) schedule one step later, plus an O(eta/tau^2) change of the gradient
    term. A smooth Z(tau) at tau_k = (k + a) s satisfies the recurrence up to (after dividing by eta)
    O(s) terms that vanish for the Shi et al. ODE with a = r/2 + 1 (the r (r + 2 - 2a) s Z'/(2 tau^2) term is
    zero only there), and O(s^2) terms of which those singular at tau ~ s are

        -lam (12 c - r^2 + 14 r) s^2 Z / (12 tau^2)  +  (r^3 - r^2 - 26 r) s^2 Z' / (12 tau^3)

    for a stiffness term c s^2 / tau^2; near tau = 0, Z' = -lam tau Z / (r + 1) + O(tau^3), so they cancel for
    c = -r (r - 1) / (r + 1) (r = 3: -3/2). Hence

        e'' + (r/tau + sqrt(eta) K) e' + (1 + r sqrt(eta)/(2 tau) - r (r-1) eta / ((r+1) tau^2)) K e = 0,
        tau = (k + r/2 + 1) sqrt(eta),

    accurate to O(eta) (measured order ~1, tests/test_theory.py); without the 1/tau^2 term the error is
    O(eta log(1/eta)) (fitted order ~0.8 for eta in [1e-5, 1e-2]), with tau = k sqrt(eta) from 0
    (Shi et al.'s ODE started at the singular point) O(sqrt eta)."""
    r = h["r"]
    return _nag_c_highres(h, 0.5 * r + 1.0, -r * (r - 1.0) / (r + 1.0) * h["eta"])


def _nag_c_classic_ode_hr(h: Hyper) -> HighResODE:
    """NAG-C in the classic form (``_nag_c_classic``: y_k, the gradient point, held). Per mode
    y_{k+1} - y_k = beta_{k+1} (y_k - y_{k-1}) - h [(1 + beta_{k+1}) y_k - beta_{k+1} y_{k-1}],
    1 - beta_{k+1} = r / (k + r). Expanding as for ``_nag_c_ode_hr``, the O(s) residual vanishes for
    Shi et al.'s ODE with tau_k = (k + r/2) sqrt(eta) (r = 3: (k + 3/2) sqrt(eta), Shi et al.'s time map,
    started at tau_0 = 3 sqrt(eta)/2), and the singular O(s^2) terms, lam (r^2 - 2r) s^2 Z/(12 tau^2) +
    r (r - 2)(r + 1) s^2 Z'/(12 tau^3), cancel with no further term. So
    e'' + (r/tau + sqrt(eta) K) e' + (1 + r sqrt(eta)/(2 tau)) K e = 0 tracks y_k to O(eta) (measured
    order ~1). The plain-step iterate x_k = (1 - eta K) y_{k-1} sits one step earlier,
    tau = (k - 1 + r/2) sqrt(eta), to O(eta)."""
    return _nag_c_highres(h, 0.5 * h["r"], 0.0)
