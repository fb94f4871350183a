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
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, get_args

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ntkdyn.odes import (  # noqa: F401  (LimitODE, HighResODE re-exported: their historical home)
    ConstantDamping,
    GradientFlow,
    HighResODE,
    LimitODE,
    VanishingDamping,
)

Hyper = dict[str, Any]
Scalar = Any  # Python number, numpy scalar or traced jax scalar


# --------------------------------------------------------------------------- ODE face (``ntkdyn.odes``)
Damping = Literal["none", "constant", "vanishing"]  # the legacy kind strings, ``odes.LimitODE.name``
DAMPINGS: tuple[str, ...] = get_args(Damping)
StateKind = Literal["point", "vector"]  # a z_j that starts at theta_0 | one that starts at 0
STATE_KINDS: tuple[str, ...] = get_args(StateKind)


def _check_choice(owner: str, field: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{owner}.{field} = {value!r}; allowed: {', '.join(map(repr, allowed))}")


# --------------------------------------------------------------------------- declarations
@dataclasses.dataclass(frozen=True)
class LinearMethod:
    """S_k = T_k S_{k-1} + u_k g_k (module docstring). ``step(hyper, k) -> (T, u)`` returns
    nested lists of scalars; ``states`` gives the kind of each z_j ("point" or "vector").

    ``through_new(hyper, k) -> (c, d)``, optional: the same parameter row written through the *new*
    state, theta_k - theta_{k-1} = sum_j c_j z_{j,k} + d g_k, i.e. sum_j c_j (T_j, u_j) + d (0, 1) =
    (T_0 - e_0, u_0) (``test_through_new_is_row_0`` checks it per registered method). Training then
    reads the old z once (HB: v_k = beta v + g, theta_k = theta - eta v_k, optax.sgd's form), where
    row 0 from the old z makes XLA keep a copy of every z per step (the new z overwrites it in place
    while row 0 still reads it)."""

    states: tuple[StateKind, ...]
    step: Callable[[Hyper, Scalar], tuple[list[list[Scalar]], list[Scalar]]]
    through_new: Callable[[Hyper, Scalar], tuple[list[Scalar], Scalar]] | None = None

    def __post_init__(self):
        for kind in self.states:
            _check_choice("LinearMethod", "states", kind, STATE_KINDS)


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer, declared once.

    ``hyper``: hyperparameters besides ``eta`` with defaults (None = required). ``method``: the
    linear method (training + recurrence), or None. ``ode(hyper) -> odes.LimitODE`` (a kind) or None.
    ``optax_factory(eta, **kwargs)`` for empirical-only optimizers. ``constant``: T, u do not
    depend on k. ``tune(hyper, lam) -> hyper``: sets hyperparameters from the eigenvalues of K
    (e.g. Polyak-tuned HB), or None. ``ode_hr(hyper) -> HighResODE``: the high-resolution ODE
    (Shi, Du, Jordan, Su 2018), or None. ``restart``: a ``Restart`` (adaptive restart of a scheduled
    linear method: training through ``optax_factory``, kernel-regime prediction by
    ``theory.restarted_modes``; no linear recurrence, so ``method`` is None), or None.
    """

    name: str
    summary: str
    hyper: dict[str, float | None]
    method: LinearMethod | None = None
    ode: Callable[[Hyper], LimitODE] | None = None
    optax_factory: Callable[..., optax.GradientTransformation] | None = None
    constant: bool = True
    tune: Callable[[Hyper, np.ndarray], Hyper] | None = None
    ode_hr: Callable[[Hyper], Any] | None = None
    restart: Any = None

    @property
    def has_theory(self) -> bool:
        return self.method is not None


def _gd(h: Hyper, k):
    return [[1.0]], [-h["eta"]]


def _hb(h: Hyper, k):
    eta, b = h["eta"], h["beta"]
    return [[1.0, -eta * b], [0.0, b]], [-eta, 1.0]


def _hb_new(h: Hyper, k):
    """HB's parameter row through the new velocity: theta_k = theta_{k-1} - eta v_k."""
    return [-h["eta"]], 0.0


def _nesterov(eta, b):
    return [[1.0, -eta * b * b], [0.0, b]], [-eta * (1.0 + b), 1.0]


def _nag_new(h: Hyper, k):
    """The parameter row of the Nesterov methods through the new velocity: theta_k = theta_{k-1}
    - eta (g_k + b v_k), b = beta (constant; nag_c/nag_c_classic: b = beta_k, ``_nag_c_new``)."""
    return [-h["eta"] * h["beta"]], -h["eta"]


def _nag(h: Hyper, k):
    return _nesterov(h["eta"], h["beta"])


def nag_c_beta(k, r):
    """beta_k = (k - 1) / (k + r - 1), k = 1, 2, ... (r = 3 is Nesterov's choice)."""
    return (k - 1.0) / (k + r - 1.0)


def _nag_c(h: Hyper, k):
    """NAG-C in the form the released notebook (Bu, Xu, Chen) runs: ``torch.optim.SGD(nesterov=True)``
    with the momentum reset to beta_k = (k-1)/(k+r-1) before update (epoch) k. torch's step is
    v <- mu v + g (v created as a copy of g at the first step with mu != 0; no velocity while
    mu = 0), theta <- theta - lr (g + mu v). Update 1 has mu = 0, so the velocity is created at
    update 2 as v_2 = g_2, not beta_2 v_1 + g_2. As a linear method (velocity decay a_k, Nesterov
    coefficient b_k):

        v_k = a_k v_{k-1} + g_k,   theta_k = theta_{k-1} - eta (g_k + b_k v_k),
        b_k = beta_k,   a_k = beta_k for k >= 3,   a_1 = a_2 = 0,

    i.e. T_k = [[1, -eta b_k a_k], [0, a_k]], u_k = [-eta (1 + b_k), 1]. theta_k is the look-ahead
    (gradient) point. Per mode the error obeys e_1 = (1 - eta lam) e_0, e_2 = (1 - eta lam (1 + beta_2)) e_1
    and, for k >= 2, e_{k+1} = (1 - eta lam (1 + beta_{k+1}) + q_k) e_k - q_k (1 - eta lam) e_{k-1}
    with q_k = beta_{k+1}^2 / beta_k."""
    eta, b = h["eta"], nag_c_beta(k, h["r"])
    a = _at_least(k, 3, b, 0.0)
    return [[1.0, -eta * b * a], [0.0, a]], [-eta * (1.0 + b), 1.0]


def _nag_c_new(h: Hyper, k):
    """NAG-C's parameter row through the new velocity (both forms): theta_k = theta_{k-1} - eta (g_k
    + beta_k v_k), beta_k = (k-1)/(k+r-1)."""
    return [-h["eta"] * nag_c_beta(k, h["r"])], -h["eta"]


def _gd_ode(h: Hyper) -> GradientFlow:
    return GradientFlow(time_step=h["eta"])


def _hb_ode(h: Hyper) -> ConstantDamping:
    s = math.sqrt(h["eta"])
    return ConstantDamping(time_step=s, gamma=(1.0 - h["beta"]) / s)


def _nag_c_ode(h: Hyper) -> VanishingDamping:
    return VanishingDamping(time_step=math.sqrt(h["eta"]), r=h["r"])


REGISTRY: dict[str, OptimizerSpec] = {}


def register(spec: OptimizerSpec) -> OptimizerSpec:
    REGISTRY[spec.name] = spec
    return spec


register(OptimizerSpec("gd", "gradient descent", {}, LinearMethod((), _gd), _gd_ode))
register(
    OptimizerSpec(
        "hb",
        "Polyak heavy ball (optax sgd with momentum)",
        {"beta": None},
        LinearMethod(("vector",), _hb, _hb_new),
        _hb_ode,
    )
)
register(
    OptimizerSpec(
        "nag",
        "Nesterov, constant beta (optax sgd nesterov=True; look-ahead iterate)",
        {"beta": None},
        LinearMethod(("vector",), _nag, _nag_new),
        _hb_ode,
    )
)
register(
    OptimizerSpec(
        "nag_c",
        "Nesterov with beta_k = (k-1)/(k+r-1), torch form as run by the released notebook "
        "(SGD nesterov=True, momentum reset every step, velocity from update 2; look-ahead iterate)",
        {"r": 3.0},
        LinearMethod(("vector",), _nag_c, _nag_c_new),
        _nag_c_ode,
        constant=False,
    )
)


# --------------------------------------------------------------------------- numerical-methods optimizers
# Polyak-tuned HB, Kim-Fessler OGM, Adams-Bashforth multistep GD, two-lag ("higher momentum") HB,
# implicit GD (recurrence only) and the high-resolution ODEs of HB, NAG-SC and NAG-C.
def polyak_hb(lam_min: float, lam_max: float) -> tuple[float, float]:
    """Polyak's optimal heavy ball on the spectrum [mu, L]: eta = 4 / (sqrt L + sqrt mu)^2,
    beta = ((sqrt L - sqrt mu) / (sqrt L + sqrt mu))^2; every mode then has |z| = sqrt(beta) =
    (sqrt kappa - 1) / (sqrt kappa + 1)."""
    mu, L = float(lam_min), float(lam_max)
    if not (mu > 0 and L >= mu and math.isfinite(L)):
        raise ValueError(f"Polyak-tuned HB needs 0 < lambda_min <= lambda_max < inf, got [{mu}, {L}]")
    sL, smu = math.sqrt(L), math.sqrt(mu)
    return 4.0 / (sL + smu) ** 2, ((sL - smu) / (sL + smu)) ** 2


def _hb_polyak_tune(h: Hyper, lam) -> Hyper:
    lam = np.asarray(lam, np.float64)
    eta, beta = polyak_hb(lam.min(), lam.max())
    return {**h, "eta": eta, "beta": beta}


def _theta_table(n: int) -> np.ndarray:
    """Kim-Fessler theta_0 = 1, theta_k = (1 + sqrt(1 + 4 theta_{k-1}^2)) / 2, k = 0..n."""
    th = np.empty(n + 1)
    th[0] = 1.0
    for k in range(1, n + 1):
        th[k] = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * th[k - 1] ** 2))
    return th


_OGM_N = 1 << 16
_OGM_THETA = _theta_table(_OGM_N)


def _ogm_asymptotic_basis(k, xp):
    lk = xp.log(k)
    return k / 2 + lk / 4 + lk / (8 * k), [1.0 + 0 * k, 1 / k, lk / k**2, 1 / k**2]


def _fit_ogm_tail() -> np.ndarray:
    k = np.arange(_OGM_N // 4, _OGM_N + 1, dtype=np.float64)
    lead, basis = _ogm_asymptotic_basis(k, np)
    return np.linalg.lstsq(np.stack(basis, 1), _OGM_THETA[_OGM_N // 4 :] - lead, rcond=None)[0]


_OGM_TAIL = _fit_ogm_tail()


def ogm_theta(k):
    """theta_k of OGM (exact table for k <= 2^16, asymptotic expansion fitted to it beyond;
    numpy or traced jax k)."""
    if isinstance(k, (int, float, np.integer, np.floating)) or (isinstance(k, np.ndarray)):
        k = np.asarray(k, np.float64)
        idx = np.clip(np.rint(k), 0, _OGM_N).astype(np.int64)
        kk = np.maximum(k, 1.0)
        lead, basis = _ogm_asymptotic_basis(kk, np)
        tail = lead + sum(c * b for c, b in zip(_OGM_TAIL, basis))
        out = np.where(k <= _OGM_N, _OGM_THETA[idx], tail)
        return float(out) if out.ndim == 0 else out
    dtype = jnp.result_type(k)
    idx = jnp.clip(jnp.round(k), 0, _OGM_N).astype(jnp.int32)
    kk = jnp.maximum(k, 1.0)
    lead, basis = _ogm_asymptotic_basis(kk, jnp)
    tail = lead + sum(c * b for c, b in zip(_OGM_TAIL, basis))
    return jnp.where(k <= _OGM_N, jnp.asarray(_OGM_THETA, dtype)[idx], tail).astype(dtype)


def _ogm(h: Hyper, k):
    """OGM (Kim & Fessler 2016) with x = the gradient point (held) and y = x_prev - eta g:
    y_k = x_{k-1} - eta g_k;  x_k = y_k + a_k (y_k - y_{k-1}) + b_k (y_k - x_{k-1}),
    a_k = (theta_{k-1} - 1) / theta_k, b_k = theta_{k-1} / theta_k. Hyper ``N`` > 0: the last
    update k = N uses theta_N = (1 + sqrt(1 + 8 theta_{N-1}^2)) / 2 (f(x_N) - f* <= L R^2 / (2 theta_N^2)
    <= L R^2 / (N + 1)^2); N = 0 (default): the anytime form, no special step."""
    th_prev, th = ogm_theta(k - 1.0), ogm_theta(k)
    last = 0.5 * (1.0 + (1.0 + 8.0 * th_prev * th_prev) ** 0.5)
    N = h.get("N", 0.0)
    if isinstance(k, (int, float, np.integer, np.floating)) and isinstance(
        N, (int, float, np.integer, np.floating)
    ):
        th = last if (N > 0 and k == N) else th
    else:
        th = jnp.where((N > 0) & (k == N), last, th)
    a, b = (th_prev - 1.0) / th, th_prev / th
    eta = h["eta"]
    return [[1.0 + a, -a], [1.0, 0.0]], [-(1.0 + a + b) * eta, -eta]


def _ogm_ode(h: Hyper) -> VanishingDamping:
    # x'' + (3/t) x' + 2 grad f = 0 in t = k sqrt(eta); rescaled to t = k sqrt(2 eta): unit stiffness
    return VanishingDamping(time_step=math.sqrt(2.0 * h["eta"]), r=3.0)


AB_COEFFICIENTS = {1: (1.0,), 2: (1.5, -0.5), 3: (23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0)}


def _at_least(k, m: int, yes, no):
    """yes if k >= m else no, for a Python or traced k."""
    if isinstance(k, (int, float, np.integer, np.floating)):
        return yes if k >= m else no
    return jnp.where(k >= m, yes, no)


def _adams_bashforth(order: int):
    """theta_k = theta_{k-1} - eta sum_j c_j g_{k-j} (Adams-Bashforth on gradient flow), states
    z_j = g_{k-j} (vectors); started with Euler, then AB2, ... (update k uses order min(k, p))."""

    def step(h: Hyper, k):
        eta = h["eta"]
        c = [0.0] * order
        for j, cj in enumerate(AB_COEFFICIENTS[order]):
            c[j] = cj
        for lower in range(order - 1, 0, -1):  # update k < order uses AB_k's coefficients
            low = list(AB_COEFFICIENTS[lower]) + [0.0] * (order - lower)
            c = [_at_least(k, lower + 1, ci, li) for ci, li in zip(c, low)]
        p = order - 1
        T = [[1.0] + [-eta * c[j + 1] for j in range(p)]]
        for j in range(p):  # z_1 <- g, z_{j+1} <- z_j
            T.append([0.0] * (p + 1))
            if j > 0:
                T[-1][j] = 1.0
        u = [-eta * c[0], 1.0] + [0.0] * (p - 1)
        return T, u

    return step


def _gradient_flow_ode(h: Hyper) -> GradientFlow:
    return GradientFlow(time_step=h["eta"])


def _hb2(h: Hyper, k):
    """Two-lag heavy ball: v_k = beta v_{k-1} + beta2 v_{k-2} + g_k, theta_k = theta_{k-1} - eta v_k."""
    eta, b1, b2 = h["eta"], h["beta"], h["beta2"]
    return [[1.0, -eta * b1, -eta * b2], [0.0, b1, b2], [0.0, 1.0, 0.0]], [-eta, 1.0, 0.0]


def _hb2_new(h: Hyper, k):
    """Two-lag HB's parameter row through the new state: theta_k = theta_{k-1} - eta v_k."""
    return [-h["eta"], 0.0], 0.0


def _hb2_ode(h: Hyper) -> ConstantDamping:
    # (1 + beta2) e'' + ((1 - beta - beta2) / sqrt eta) e' + K e = 0 in t = k sqrt(eta); rescaled
    # to unit mass: t = k sqrt(eta / (1 + beta2)), gamma = (1 - beta - beta2) / sqrt(eta (1 + beta2))
    m = 1.0 + h["beta2"]
    dt = math.sqrt(h["eta"] / m)
    return ConstantDamping(time_step=dt, gamma=(1.0 - h["beta"] - h["beta2"]) * dt / h["eta"])


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


for _name, _hr in (("hb", _hb_ode_hr), ("nag", _nag_ode_hr), ("nag_c", _nag_c_ode_hr)):
    REGISTRY[_name] = dataclasses.replace(REGISTRY[_name], ode_hr=_hr)


def _nag_c_classic(h: Hyper, k):
    """Classic Nesterov / Su-Boyd-Candes NAG-C: x_k = y_{k-1} - eta grad L(y_{k-1}),
    y_k = x_k + beta_k (x_k - x_{k-1}), beta_k = (k-1)/(k+r-1), x_0 = y_0 (r = 3: SBC's
    y_{k+1} = x_{k+1} + k/(k+3) (x_{k+1} - x_k)). The gradient point y_k is held (and logged). With
    w_k = (x_{k-1} - x_k)/eta:

        w_k = beta_{k-1} w_{k-1} + g_k,   y_k = y_{k-1} - eta (g_k + beta_k w_k),   w_0 = 0,

    T_k = [[1, -eta beta_k beta_{k-1}], [0, beta_{k-1}]], u_k = [-eta (1 + beta_k), 1] (beta_0 multiplies
    w_0 = 0: taken as 0). It differs from the torch form (``_nag_c``) by the velocity decay, beta_{k-1}
    here and beta_k there: an O(sqrt eta) difference in e at a fixed ODE time."""
    eta, r = h["eta"], h["r"]
    b, a = nag_c_beta(k, r), _at_least(k, 2, nag_c_beta(k - 1.0, r), 0.0)
    return [[1.0, -eta * b * a], [0.0, a]], [-eta * (1.0 + b), 1.0]


register(
    OptimizerSpec(
        "nag_c_classic",
        "Nesterov / Su-Boyd-Candes NAG-C x_k = y_{k-1} - eta grad "
        "L(y_{k-1}), y_k = x_k + (k-1)/(k+r-1) (x_k - x_{k-1}), x_0 = y_0; the gradient "
        "point y_k is held and logged",
        {"r": 3.0},
        LinearMethod(("vector",), _nag_c_classic, _nag_c_new),
        _nag_c_ode,
        constant=False,
        ode_hr=_nag_c_classic_ode_hr,
    )
)

register(
    OptimizerSpec(
        "hb_polyak",
        "heavy ball with Polyak's optimal eta, beta from the spectrum [lambda_min, "
        "lambda_max] of K (the config's eta is ignored)",
        {},
        LinearMethod(("vector",), _hb, _hb_new),
        _hb_ode,
        tune=_hb_polyak_tune,
        ode_hr=_hb_ode_hr,
    )
)
register(
    OptimizerSpec(
        "ogm",
        "optimized gradient method (Kim-Fessler 2016; eta = 1/L), x iterate held",
        {"N": 0.0},
        LinearMethod(("point",), _ogm),
        _ogm_ode,
        constant=False,
    )
)
register(
    OptimizerSpec(
        "ab2",
        "2-step Adams-Bashforth gradient method (Euler start)",
        {},
        LinearMethod(("vector",), _adams_bashforth(2)),
        _gradient_flow_ode,
        constant=False,
    )
)
register(
    OptimizerSpec(
        "ab3",
        "3-step Adams-Bashforth gradient method (Euler, AB2 start)",
        {},
        LinearMethod(("vector", "vector"), _adams_bashforth(3)),
        _gradient_flow_ode,
        constant=False,
    )
)
register(
    OptimizerSpec(
        "hb2",
        "two-lag heavy ball v = beta v_{k-1} + beta2 v_{k-2} + g (higher momentum)",
        {"beta": None, "beta2": 0.1},
        LinearMethod(("vector", "vector"), _hb2, _hb2_new),
        _hb2_ode,
    )
)


@dataclasses.dataclass(frozen=True)
class ModalSpec:
    """An optimizer declared only by its per-mode system (no training face): for one eigenvalue
    lambda of K, x_k = A x_{k-1} + B y, u_k = C x_k, free error response from x0.
    ``system(hyper, lam) -> (A (n, d, d), B (n, d), C (d,), x0 (n, d))``."""

    name: str
    summary: str
    hyper: dict[str, float | None]
    system: Callable[[Hyper, np.ndarray], tuple]
    ode: Callable[[Hyper], LimitODE] | None = None
    ode_hr: Callable[[Hyper], Any] | None = None
    constant: bool = True
    method = None  # the fields of OptimizerSpec it lacks, so that callers read both alike
    tune = None
    optax_factory = None
    restart = None

    @property
    def has_theory(self) -> bool:
        return True


def _implicit_gd_system(h: Hyper, lam):
    """theta_k = argmin L + ||theta - theta_{k-1}||^2 / (2 eta): per mode
    u_k (1 + eta lam) = u_{k-1} + eta lam y."""
    lam = np.asarray(lam, np.float64)
    q = 1.0 / (1.0 + h["eta"] * lam)
    return q[:, None, None], (1.0 - q)[:, None], np.ones(1), np.ones((lam.size, 1))


RECURRENCE_ONLY: dict[str, ModalSpec] = {
    "implicit_gd": ModalSpec(
        "implicit_gd",
        "implicit (proximal) GD: per mode (1 + eta lambda)^-1; recurrence only, no training face",
        {},
        _implicit_gd_system,
        _gradient_flow_ode,
    ),
}


EMPIRICAL_ONLY = (
    "adam",
    "adamw",
    "rmsprop",
    "adagrad",
    "adabelief",
    "lion",
    "lamb",
    "sgd",
    "adafactor",
    "yogi",
)
for _name in EMPIRICAL_ONLY:
    register(
        OptimizerSpec(
            _name,
            f"optax.{_name} (empirical only: no recurrence, no ODE)",
            {},
            optax_factory=getattr(optax, _name),
        )
    )


def get(name: str) -> OptimizerSpec:
    if name not in REGISTRY:
        raise ValueError(f"unknown optimizer {name!r}; allowed: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def modal_spec(name: str) -> OptimizerSpec | ModalSpec:
    """The declaration with a kernel-regime recurrence called ``name``: a registered
    ``OptimizerSpec`` with ``has_theory``, or a recurrence-only ``ModalSpec`` (``RECURRENCE_ONLY``).

    Raises:
        ValueError: ``name`` is unknown or empirical only; the message lists the allowed names.
    """
    if name in RECURRENCE_ONLY:
        return RECURRENCE_ONLY[name]
    spec = REGISTRY.get(name)
    if spec is None or not spec.has_theory:
        why = "is unknown" if spec is None else "has no kernel-regime recurrence (empirical only)"
        raise ValueError(f"optimizer {name!r} {why}; allowed: {', '.join(modal_names())}")
    return spec


def modal_names() -> list[str]:
    """Names of every declaration with a kernel-regime recurrence (``modal_spec``), sorted."""
    return sorted([*RECURRENCE_ONLY, *(n for n, s in REGISTRY.items() if s.has_theory)])


def resolve_hyper(spec: OptimizerSpec, hyper: Hyper, lam=None) -> Hyper:
    """Fill defaults; check that every required hyperparameter is given; with the eigenvalues
    ``lam`` of K, apply ``spec.tune`` where declared (e.g. Polyak-tuned HB)."""
    out = dict(hyper)
    for key, default in spec.hyper.items():
        if out.get(key) is None:
            if default is None:
                raise ValueError(f"optimizer {spec.name!r} needs {key!r}")
            out[key] = default
    return spec.tune(out, np.asarray(lam, np.float64)) if spec.tune is not None and lam is not None else out


# --------------------------------------------------------------------------- training face
class LinearMethodState(NamedTuple):
    count: jax.Array  # number of updates done
    z: tuple  # the auxiliary vectors z_1..z_p (pytrees like params)


def _is_zero(c) -> bool:
    return isinstance(c, (int, float)) and c == 0


def _combine(terms, like):
    """sum_i c_i * x_i over pytrees, skipping structural zeros; zeros_like(like) if empty."""
    terms = [(c, x) for c, x in terms if not _is_zero(c)]
    if not terms:
        return jax.tree.map(jnp.zeros_like, like)
    return jax.tree.map(
        lambda *leaves: sum(c * leaf for (c, _), leaf in zip(terms, leaves)).astype(leaves[0].dtype),
        *[x for _, x in terms],
    )


def linear_method_transformation(spec: OptimizerSpec, hyper: Hyper) -> optax.GradientTransformation:
    """The training face of a linear method: z_j <- T_j0 theta + sum_i T_ji z_i + u_j g and
    update = (T_00 - 1) theta + sum_i T_0i z_i + u_0 g. ``hyper`` values may be traced;
    ``hyper["eta"]`` may be an optax schedule (update k uses eta_k = schedule(k - 1))."""
    method = spec.method

    def init(params):
        z = tuple(
            params if kind == "point" else jax.tree.map(jnp.zeros_like, params) for kind in method.states
        )
        return LinearMethodState(jnp.zeros([], jnp.int32), z)

    def update(grads, state, params=None):
        if params is None and method.states and "point" in method.states:
            raise ValueError(f"{spec.name} needs params in update()")
        k = (state.count + 1).astype(jnp.result_type(float))
        # a scheduled step size (any optax schedule, ``ntkdyn.schedules``): eta_k = schedule(k - 1), cast
        # to the gradients' dtype before any coefficient (eta beta, eta (1 + beta)) is formed: several optax
        # schedules return float32 even with x64 on, and a float32 eta * beta is 1e-8..1e-5 off in a
        # float64 run (optax.sgd multiplies its float32 eta_k into float64 updates, so this is its value)
        if callable(hyper.get("eta")):
            dtype = jax.tree.leaves(grads)[0].dtype
            h = {**hyper, "eta": jnp.asarray(hyper["eta"](state.count)).astype(dtype)}
        else:
            h = hyper
        T, u = method.step(h, k)
        vectors = (params,) + state.z

        def row(j):
            t0 = T[j][0] - 1.0 if j == 0 else T[j][0]
            terms = [(t0, params)] if params is not None else []
            terms += [(T[j][i], vectors[i]) for i in range(1, len(vectors))] + [(u[j], grads)]
            return _combine(terms, grads)

        new_z = tuple(row(j) for j in range(1, len(vectors)))
        if method.through_new is None:
            return row(0), LinearMethodState(state.count + 1, new_z)
        c, d = method.through_new(h, k)  # row 0 from the new z (``LinearMethod``): no copy of z per step
        update = _combine(list(zip(c, new_z)) + [(d, grads)], grads)
        return update, LinearMethodState(state.count + 1, new_z)

    return optax.GradientTransformation(init, update)


def transformation(spec: OptimizerSpec, hyper: Hyper) -> optax.GradientTransformation:
    """optax transformation for training (any spec)."""
    if spec.method is not None:
        return linear_method_transformation(spec, hyper)
    extra = {k: v for k, v in hyper.items() if k != "eta"}
    return spec.optax_factory(hyper["eta"], **extra)


# --------------------------------------------------------------------------- recurrence face
def companion(spec: OptimizerSpec, hyper: Hyper, lam, k) -> np.ndarray:
    """A_k(lambda) = T_k + lambda u_k e_0^T, shape lam.shape + (p+1, p+1), float64."""
    T, u = spec.method.step(hyper, float(k))
    T = np.asarray(T, np.float64)
    u = np.asarray(u, np.float64)
    lam = np.asarray(lam, np.float64)
    A = np.broadcast_to(T, lam.shape + T.shape).copy()
    A[..., :, 0] += lam[..., None] * u
    return A


def initial_state(spec: OptimizerSpec, coef) -> np.ndarray:
    """X_0 per mode: (e_0, then e_0 for point states and 0 for vector states), shape (n, p+1)."""
    coef = np.asarray(coef, np.float64)
    cols = [coef] + [coef if kind == "point" else np.zeros_like(coef) for kind in spec.method.states]
    return np.stack(cols, axis=-1)


def asymptotic_companion(spec: OptimizerSpec, hyper: Hyper, lam) -> np.ndarray:
    """A(lambda) for constant methods; the k -> infinity limit (k = 1e12) for scheduled ones."""
    return companion(spec, hyper, lam, 1 if spec.constant else 1e12)


def spectral_radius(A) -> np.ndarray:
    """max |eigenvalue| of each square matrix in a stack (float64)."""
    return np.max(np.abs(np.linalg.eigvals(np.asarray(A, np.float64))), axis=-1)


# --------------------------------------------------------------------------- tuned NAG-SC
def nag_sc_tuning(lam_min: float, lam_max: float) -> tuple[float, float]:
    """Nesterov's constant-momentum tuning for a mu-strongly convex, L-smooth f (Nesterov 2004,
    Introductory Lectures, constant step scheme III): eta = 1/L, beta = (sqrt kappa - 1)/(sqrt kappa + 1),
    kappa = L / mu, here (mu, L) = (lambda_min, lambda_max) of K.

    Per mode (h = eta lambda) the poles solve z^2 - (1 + beta)(1 - h) z + beta (1 - h) = 0: at h = 1/kappa
    a double pole z = 1 - 1/sqrt(kappa) (critical damping); for 1/kappa < h <= 1 a complex pair with
    |z|^2 = beta (1 - h) < (1 - 1/sqrt(kappa))^2. So the error contracts by 1 - 1/sqrt(kappa) per step
    and the loss by its square (against Polyak-tuned HB's (sqrt kappa - 1)/(sqrt kappa + 1))."""
    mu, L = float(lam_min), float(lam_max)
    if not (mu > 0 and L >= mu and math.isfinite(L)):
        raise ValueError(f"tuned NAG-SC needs 0 < lambda_min <= lambda_max < inf, got [{mu}, {L}]")
    sk = math.sqrt(L / mu)
    return 1.0 / L, (sk - 1.0) / (sk + 1.0)


def _nag_sc_tune(h: Hyper, lam) -> Hyper:
    lam = np.asarray(lam, np.float64)
    eta, beta = nag_sc_tuning(lam.min(), lam.max())
    return {**h, "eta": eta, "beta": beta}


register(
    OptimizerSpec(
        "nag_sc_tuned",
        "Nesterov (constant beta, optax/torch form, look-ahead iterate) "
        "with the strongly convex tuning eta = 1/lambda_max, beta = (sqrt kappa - 1)/(sqrt kappa + 1) "
        "from the spectrum of K (the config's eta is ignored); rate 1 - 1/sqrt(kappa) per step",
        {},
        LinearMethod(("vector",), _nag, _nag_new),
        _hb_ode,
        tune=_nag_sc_tune,
        ode_hr=_nag_ode_hr,
    )
)


# --------------------------------------------------------------------------- adaptive restart
RESTART_RULES = ("function", "gradient")


@dataclasses.dataclass(frozen=True)
class Restart:
    """Adaptive restart (O'Donoghue & Candes 2015, "Adaptive restart for accelerated gradient schemes")
    of the scheduled linear method ``base`` (registry name). At update k, with the gradient point
    theta_{k-1} held (the look-ahead iterate y_{k-1} of the optax/torch form) and x_k = theta_{k-1} - eta g_k
    the plain gradient step from it (their x_k):

    * ``rule = "gradient"`` (theirs exactly): restart when g_k . (x_k - x_{k-1}) > 0, g_k = grad L(y_{k-1}),
      with x_k - x_{k-1} = (theta_{k-1} - theta_{k-2}) - eta (g_k - g_{k-1}) and x_0 = theta_0;
    * ``rule = "function"``: restart when L(theta_{k-1}) > L(theta_{k-2}), the loss at the held iterate
      (optax's ``value``; training evaluates L there only). This differs from theirs, f(x_k) > f(x_{k-1})
      at the gradient-step points, which would cost one more loss evaluation per step.

    A restart makes update k the first update of a fresh run (the momentum counter k is reset to 1:
    for NAG-C a plain gradient step theta_k = x_k, the velocity dropped) and counting continues from there.
    The momentum sequence is the base method's (NAG-C: beta_k = (k-1)/(k+r-1), torch form), not their
    theta-sequence theta_{k+1}^2 = (1 - theta_{k+1}) theta_k^2."""

    base: str
    rule: str

    def __post_init__(self):
        if self.rule not in RESTART_RULES:
            raise ValueError(f"restart rule {self.rule!r}; allowed: {', '.join(RESTART_RULES)}")


class RestartState(NamedTuple):
    inner: LinearMethodState  # the base method's state; inner.count = updates since the last restart
    prev_value: jax.Array  # L(theta_{k-2}) (function rule; +inf before the first update)
    prev_update: Any  # theta_{k-1} - theta_{k-2} (gradient rule; zeros before the first update), else ()
    prev_grad: Any  # g_{k-1} (gradient rule; zeros before the first update), else ()
    restarts: jax.Array  # number of restarts so far (int32)


def _tree_vdot(a, b) -> jax.Array:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def restart_transformation(restart: Restart, hyper: Hyper) -> optax.GradientTransformationExtraArgs:
    """The training face of ``restart`` (``Restart``): an optax GradientTransformationExtraArgs whose
    ``update(grads, state, params, *, value)`` reads the loss ``value`` at ``params`` (function rule;
    train.py passes it). ``hyper`` as for the base method; a scheduled eta is refused (a restart would
    also restart the schedule's counter)."""
    if callable(hyper.get("eta")):
        raise ValueError(f"restarted {restart.base}: eta must be a number, not a schedule")
    base = get(restart.base)
    inner = linear_method_transformation(base, hyper)
    eta = hyper["eta"]
    gradient = restart.rule == "gradient"

    def init(params):
        leaf = jax.tree.leaves(params)[0]
        zeros = jax.tree.map(jnp.zeros_like, params)
        return RestartState(
            inner.init(params),
            jnp.asarray(jnp.inf, leaf.dtype),
            zeros if gradient else (),
            zeros if gradient else (),
            jnp.zeros([], jnp.int32),
        )

    def update(grads, state, params=None, *, value=None, **extra):
        if gradient:
            step = jax.tree.map(
                lambda du, g, g0: du - eta * (g - g0), state.prev_update, grads, state.prev_grad
            )  # x_k - x_{k-1}
            hit = _tree_vdot(grads, step) > 0
        else:
            if value is None:
                raise ValueError(
                    f"function restart of {restart.base} needs update(..., value=loss at params)"
                )
            hit = value > state.prev_value
        inner_state = state.inner._replace(count=jnp.where(hit, 0, state.inner.count))
        updates, new_inner = inner.update(grads, inner_state, params)
        prev_value = jnp.asarray(value, state.prev_value.dtype) if not gradient else state.prev_value
        return updates, RestartState(
            new_inner,
            prev_value,
            updates if gradient else (),
            grads if gradient else (),
            state.restarts + hit.astype(jnp.int32),
        )

    return optax.GradientTransformationExtraArgs(init, update)


def _restart_factory(restart: Restart):
    def factory(learning_rate, r: float = 3.0) -> optax.GradientTransformationExtraArgs:
        return restart_transformation(restart, {"eta": learning_rate, "r": r})

    return factory


for _rule, _short in (("function", "fn"), ("gradient", "grad")):
    _restart = Restart("nag_c", _rule)
    register(
        OptimizerSpec(
            f"nag_c_{_short}_restart",
            f"NAG-C (torch form, look-ahead iterate) with {_rule} "
            "restart (O'Donoghue-Candes 2015; momentum counter reset to 1 on a restart; see "
            "optimizers.Restart for how it differs from theirs)",
            {"r": 3.0},
            optax_factory=_restart_factory(_restart),
            constant=False,
            restart=_restart,
        )
    )
