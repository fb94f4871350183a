"""Optimizers, each declared once with three faces.

Every optimizer with a kernel-regime theory is declared as a **linear method**: a state
S = (theta, z_1, ..., z_p) of parameter-shaped vectors and, at update k = 1, 2, ...,

    S_k = T_k S_{k-1} + u_k g_k,        g_k = grad L(theta_{k-1}),

with (p+1) x (p+1) matrices T_k and vectors u_k that depend on the hyperparameters and k only.
Each z_j is a "point" (an iterate such as OGM's y_k; starts at theta_0) or a "vector" (a
velocity or a past gradient; starts at 0). Row 0 is the parameter update. Examples:

    GD        p = 0: T = [[1]],                        u = [-eta]
    HB        z = v: T = [[1, -eta b], [0, b]],        u = [-eta, 1]         (v_k = b v + g)
    NAG       z = v: T = [[1, -eta b^2], [0, b]],      u = [-eta (1 + b), 1] (optax/torch form)
    NAG-C     T = [[1, -eta b a], [0, a]], u = [-eta (1 + b), 1] with b = beta_k = (k-1)/(k+r-1) and
              a = beta_k for k >= 3, a = 0 for k <= 2 (torch form, as the released notebook runs it:
              torch keeps no velocity while the momentum is 0, so v_2 = g_2; see ``_nag_c``)

The parameters held are theta_k, the point where the gradient is evaluated: for the Nesterov
methods in optax/torch form that is the *look-ahead* iterate.

From the one declaration follow

* **training**: ``transformation`` (an optax GradientTransformation; structural zeros of T, u
  given as Python numbers are skipped, so HB costs what optax.sgd costs);
* **kernel-regime recurrence**: in the eigenbasis of K = c H, the gradient of one mode is
  lambda e, so the output-space state X = (e, J z_1, ...) (points as errors) evolves by
  X_k = A_k(lambda) X_{k-1}, A_k = T_k + lambda u_k e_0^T (``companion``), exactly for a
  linear model;
* **limiting ODE** (an ``ntkdyn.odes`` kind: ``GradientFlow`` e' = -K e, t = k eta, or second order
  e'' + gamma(t) e' + K e = 0, t = k sqrt(eta), ``ConstantDamping`` / ``VanishingDamping``).

Optimizers without a recurrence (adam, rmsprop, ...) are "empirical only": their ``method``
and ``ode`` are None and every prediction for them is absent.

The package: ``spec`` (declaration types, registry), ``faces`` (training and recurrence faces),
``classic`` (GD, HB, NAG, NAG-C), ``highres`` (high-resolution ODEs), ``numerical`` (Polyak HB, OGM,
Adams-Bashforth, two-lag HB, classic NAG-C, implicit GD), ``empirical`` (optax's adaptive methods),
``restart`` (tuned NAG-SC, adaptive restart). Every public name is importable from ``ntkdyn.optimizers``.
"""

# isort: off
# the registration order (``REGISTRY``'s order, as listed in messages) is the import order below
from ntkdyn.optimizers.spec import (
    DAMPINGS,
    RECURRENCE_ONLY,
    REGISTRY,
    STATE_KINDS,
    Damping,
    Hyper,
    Resolved,
    LinearMethod,
    ModalSpec,
    OptimizerSpec,
    Scalar,
    StateKind,
    get,
    modal_names,
    modal_spec,
    register,
    resolve_hyper,
)
from ntkdyn.optimizers.faces import (
    LinearMethodState,
    asymptotic_companion,
    companion,
    initial_state,
    largest_stable_step,
    linear_method_transformation,
    spectral_radius,
    transformation,
)
from ntkdyn.optimizers.classic import nag_c_beta
from ntkdyn.optimizers.numerical import AB_COEFFICIENTS, _theta_table, ogm_theta, polyak_hb
from ntkdyn.optimizers.empirical import EMPIRICAL_ONLY
from ntkdyn.optimizers.restart import (
    RESTART_RULES,
    Restart,
    RestartState,
    nag_sc_tuning,
    restart_transformation,
)
from ntkdyn.odes import ConstantDamping, GradientFlow, HighResODE, LimitODE, VanishingDamping
# isort: on

__all__ = [
    "AB_COEFFICIENTS",
    "DAMPINGS",
    "EMPIRICAL_ONLY",
    "RECURRENCE_ONLY",
    "REGISTRY",
    "RESTART_RULES",
    "STATE_KINDS",
    "ConstantDamping",
    "Damping",
    "GradientFlow",
    "HighResODE",
    "Hyper",
    "Resolved",
    "LimitODE",
    "LinearMethod",
    "LinearMethodState",
    "ModalSpec",
    "OptimizerSpec",
    "Restart",
    "RestartState",
    "Scalar",
    "StateKind",
    "VanishingDamping",
    "_theta_table",
    "asymptotic_companion",
    "companion",
    "get",
    "initial_state",
    "largest_stable_step",
    "linear_method_transformation",
    "modal_names",
    "modal_spec",
    "nag_c_beta",
    "nag_sc_tuning",
    "ogm_theta",
    "polyak_hb",
    "register",
    "resolve_hyper",
    "restart_transformation",
    "spectral_radius",
    "transformation",
]
