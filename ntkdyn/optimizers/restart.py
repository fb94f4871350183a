"""Restart and tuning: NAG-SC with Nesterov's strongly convex tuning from the spectrum of K, and the
O'Donoghue-Candes adaptive restart of NAG-C (training face and registrations)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ntkdyn.optimizers.classic import _hb_ode, _nag, _nag_new
from ntkdyn.optimizers.faces import LinearMethodState, linear_method_transformation
from ntkdyn.optimizers.highres import _nag_ode_hr
from ntkdyn.optimizers.spec import Hyper, LinearMethod, OptimizerSpec, get, register


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
    # sum's start 0 adds nothing (the trees have leaves)
    return cast(jax.Array, sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))


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
