"""Kernel-regime predictions: exact discrete recurrences and limiting ODEs.

Everything here works in float64 on the eigen-decomposition of the dynamics kernel
K = c H (c from the loss; ``models.loss_scale``), with e = u - y the prediction error and
loss L = (c / 2) ||e||^2. Inputs are the eigenvalues ``lam`` of K and the coordinates
``coef = V^T e0`` of the initial error in its orthonormal eigenbasis V.

Modules: ``modes`` (eigenbasis, recurrences, closed forms), ``diffrax_solve`` (numerical checks),
``scheduled`` (the scheduled second-order ODE), ``highres`` (high-resolution ODEs, NAG-C's tail),
``floors`` (floors, held-out maps, regimes, gradient norms, restart); every name is re-exported here.
"""

from __future__ import annotations

from ntkdyn.theory.diffrax_solve import (
    _diffrax_solver as _diffrax_solver,
)
from ntkdyn.theory.diffrax_solve import (
    _tsit5 as _tsit5,
)
from ntkdyn.theory.diffrax_solve import (
    ode_diffrax,
)
from ntkdyn.theory.floors import (
    asymptotic_regime,
    held_out_errors,
    held_out_map,
    loss_floor_star,
    modal_grad_norm_sq,
    null_modes,
    restarted_modes,
)
from ntkdyn.theory.highres import (
    highres_diffrax,
    highres_modes,
    impulse_modes,
    nag_c_tail_modes,
    oscillator_modes,
    vanishing_tail,
)
from ntkdyn.theory.modes import (
    bessel_modes,
    damped_oscillator_modes,
    discrete_modes,
    eigen,
    gradient_flow_modes,
    modal_loss,
    nag_c_crossover_step,
    ode_modes,
    predicted_linear_rate,
    stability,
)
from ntkdyn.theory.scheduled import (
    piecewise_damped_diffrax,
    piecewise_damped_modes,
    velocity_carry,
)

__all__ = [
    "eigen",
    "modal_loss",
    "discrete_modes",
    "predicted_linear_rate",
    "stability",
    "nag_c_crossover_step",
    "gradient_flow_modes",
    "damped_oscillator_modes",
    "bessel_modes",
    "ode_modes",
    "ode_diffrax",
    "velocity_carry",
    "piecewise_damped_modes",
    "piecewise_damped_diffrax",
    "impulse_modes",
    "oscillator_modes",
    "highres_modes",
    "highres_diffrax",
    "nag_c_tail_modes",
    "vanishing_tail",
    "null_modes",
    "held_out_map",
    "held_out_errors",
    "loss_floor_star",
    "asymptotic_regime",
    "modal_grad_norm_sq",
    "restarted_modes",
]
