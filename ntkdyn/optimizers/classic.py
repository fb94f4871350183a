"""The classic methods: GD, heavy ball, Nesterov with constant beta (NAG-SC, optax/torch form) and NAG-C
(torch form), with their limiting ODEs; registered in this order."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from ntkdyn.odes import ConstantDamping, GradientFlow, VanishingDamping
from ntkdyn.optimizers.spec import Hyper, LinearMethod, OptimizerSpec, register


def _at_least(k, m: int, yes, no):
    """yes if k >= m else no, for a Python or traced k."""
    if isinstance(k, (int, float, np.integer, np.floating)):
        return yes if k >= m else no
    return jnp.where(k >= m, yes, no)


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
