"""Numerical-methods optimizers: Polyak-tuned HB, Kim-Fessler OGM, Adams-Bashforth multistep GD, two-lag
HB, classic NAG-C, implicit GD (recurrence only); attaches the high-resolution ODEs to HB, NAG, NAG-C."""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np

from ntkdyn.odes import ConstantDamping, GradientFlow, VanishingDamping
from ntkdyn.optimizers.classic import _at_least, _hb, _hb_new, _hb_ode, _nag_c_new, _nag_c_ode, nag_c_beta
from ntkdyn.optimizers.highres import _hb_ode_hr, _nag_c_classic_ode_hr, _nag_c_ode_hr, _nag_ode_hr
from ntkdyn.optimizers.spec import (
    RECURRENCE_ONLY,
    REGISTRY,
    Hyper,
    LinearMethod,
    ModalSpec,
    OptimizerSpec,
    register,
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


def _implicit_gd_system(h: Hyper, lam):
    """theta_k = argmin L + ||theta - theta_{k-1}||^2 / (2 eta): per mode
    u_k (1 + eta lam) = u_{k-1} + eta lam y."""
    lam = np.asarray(lam, np.float64)
    q = 1.0 / (1.0 + h["eta"] * lam)
    return q[:, None, None], (1.0 - q)[:, None], np.ones(1), np.ones((lam.size, 1))


RECURRENCE_ONLY["implicit_gd"] = ModalSpec(
    "implicit_gd",
    "implicit (proximal) GD: per mode (1 + eta lambda)^-1; recurrence only, no training face",
    {},
    _implicit_gd_system,
    _gradient_flow_ode,
)
