"""Activation-pattern flips of one-hidden-layer ReLU networks, counted and predicted.

For f(x) = sum_r a_r relu(z_r(x)) (times any scale), z_r(x) = w_r . x (+ b_r), unit r is active at
input x_i iff z_ir > 0. Between theta_0 and theta_k the pair (r, i) *flips* iff
1[z_ir(k) > 0] != 1[z_ir(0) > 0]. A Taylor model at theta_0 (``linearized``, ``quadratic``) keeps
every pattern of theta_0: ReLU'' = 0 away from the kink, so for ReLU the network - Taylor gap is the
flips' doing. Conventions: params hold ``W`` (m, d) and optionally ``b`` (m,) (the ``paper`` and
``released`` models); the fraction is over all m n pairs.

Counted (``count_flips``) and bounded: a flip needs the pre-activation to cross its margin,
|z_ir(k) - z_ir(0)| >= |z_ir(0)|, and |z_ir(k) - z_ir(0)| <= ||w_r(k) - w_r(0)|| ||x_i|| + |b_r(k) - b_r(0)|
(Cauchy-Schwarz), so

    flipped(k) <= bound(k) = #{(r, i): |z_ir(0)| <= ||dw_r|| ||x_i|| + |db_r|} / (m n)

(Du, Zhai, Poczos, Singh 2019, "Gradient descent provably optimizes over-parameterized neural
networks", the events A_ir = {|w_r(0) . x_i| <= R} with R bounding ||w_r(k) - w_r(0)||). The bound is
exact arithmetic on the moved weights, so ``flipped <= bound`` always holds.

Predicted (``predict_flips``) from a trajectory that never leaves the kernel regime: the linearised
network's parameters theta_lin(k) (``linearized``, trained on the same batches) give each pre-activation's
move dz_ir = z_ir(theta_lin(k)) - z_ir(theta_0) against its margin z_ir(0):

* ``crossed``: the fraction of pairs with sign(z_ir(0) + dz_ir) != sign(z_ir(0)) -- the flips the
  kernel-regime motion would cause;
* ``bound``: the Du et al. count above with the kernel-regime moves ||dw_r|| and |db_r|;
* ``density``: mean_ir |dz_ir| p_ir(0), p_ir(0) = 1 / (sqrt(2 pi) sigma_i) the density at 0 of
  z_ir(0) ~ N(0, sigma_i^2) (sigma_i^2 = std_W^2 ||x_i||^2 + std_b^2 for Gaussian initial weights):
  the expected flipped fraction to first order in the move (P(z in (-|dz|, 0)) ~ |dz| p(0)), which
  shows the width scaling: dw_r = O(m^(-1/2)) per unit in the NTK regime, so the fraction is O(m^(-1/2)).

``power_fit`` fits value ~ C m^p on a width sweep (least squares in log-log) with p's standard error.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np


def _check(params) -> None:
    if not hasattr(params, "keys") or "W" not in params or params["W"].ndim != 2:
        got = sorted(params) if hasattr(params, "keys") else type(params).__name__
        raise ValueError(
            f"flips: params must be a mapping with 'W' of shape (m, d) and optionally 'b' (m,) "
            f"(a one-hidden-layer ReLU model: paper, released); got {got}"
        )


def preactivations(params, X) -> jax.Array:
    """z (n, m): z_ir = w_r . x_i + b_r (b_r = 0 without ``b``)."""
    _check(params)
    z = X @ params["W"].T
    return z + params["b"] if "b" in params else z


def _moves(params0, params_k, X) -> tuple[jax.Array, jax.Array]:
    """(z0 (n, m), the Cauchy-Schwarz bound on |z_k - z_0|: ||dw_r|| ||x_i|| + |db_r|, (n, m))."""
    z0 = preactivations(params0, X)
    dw = jnp.linalg.norm(params_k["W"] - params0["W"], axis=1)
    reach = jnp.linalg.norm(X, axis=1)[:, None] * dw[None, :]
    if "b" in params0:
        reach = reach + jnp.abs(params_k["b"] - params0["b"])[None, :]
    return z0, reach


def _fraction(mask: jax.Array) -> float:
    """The exact fraction of True entries (an integer count over the size, in Python float64)."""
    return int(jnp.sum(mask)) / mask.size


@dataclasses.dataclass(frozen=True)
class FlipCount:
    """Flips between theta_0 and theta_k, as fractions of the m n (unit, point) pairs.

    ``flipped``: 1[z_ir(k) > 0] != 1[z_ir(0) > 0]; ``bound``: |z_ir(0)| <= ||dw_r|| ||x_i|| + |db_r|
    (>= flipped); ``max_move``, ``mean_move``: max and mean over units of ||w_r(k) - w_r(0)|| (units of
    W)."""

    flipped: float
    bound: float
    max_move: float
    mean_move: float


def count_flips(params0, params_k, X) -> FlipCount:
    """``FlipCount`` of the network moved from ``params0`` to ``params_k`` on inputs X (n, d)."""
    _check(params_k)
    z0, reach = _moves(params0, params_k, X)
    zk = preactivations(params_k, X)
    dw = jnp.linalg.norm(params_k["W"] - params0["W"], axis=1)
    return FlipCount(
        flipped=_fraction((zk > 0) != (z0 > 0)),
        bound=_fraction(jnp.abs(z0) <= reach),
        max_move=float(jnp.max(dw)),
        mean_move=float(jnp.mean(dw)),
    )


def flips_along(params0, snapshots, X) -> np.ndarray:
    """The flipped fraction at each snapshot (a params pytree with a leading snapshot axis, as
    ``TrainResult.snapshots``)."""
    count = lambda p: jnp.sum((preactivations(p, X) > 0) != (preactivations(params0, X) > 0))  # noqa: E731
    return np.asarray(jax.vmap(count)(snapshots), np.float64) / (X.shape[0] * params0["W"].shape[0])


@dataclasses.dataclass(frozen=True)
class FlipPrediction:
    """Flips predicted from a kernel-regime trajectory (module docstring): ``crossed`` (pairs whose
    predicted move crosses the margin), ``bound`` (Du et al. with the predicted ||dw_r||, |db_r|) and
    ``density`` (first-order expected fraction mean |dz| p(0); None without ``init_std``)."""

    crossed: float
    bound: float
    density: float | None


def predict_flips(
    params0, params_pred, X, init_std: float | None = None, bias_std: float = 0.0
) -> FlipPrediction:
    """Flips predicted from ``params_pred`` (e.g. the linearised network's parameters at step k).

    ``init_std``: the std of W's initial entries (w_r(0) ~ N(0, std^2 I)); ``bias_std`` that of b's
    (``released`` notebook init: uniform, std 1/sqrt(3 d)); both only for ``density``."""
    _check(params_pred)
    z0, reach = _moves(params0, params_pred, X)
    dz = preactivations(params_pred, X) - z0
    density = None
    if init_std is not None:
        sigma = jnp.sqrt(init_std**2 * jnp.sum(X * X, axis=1) + bias_std**2)[:, None]
        density = float(jnp.mean(jnp.abs(dz) / (math.sqrt(2 * math.pi) * sigma)))
    return FlipPrediction(
        crossed=_fraction((z0 + dz > 0) != (z0 > 0)),
        bound=_fraction(jnp.abs(z0) <= reach),
        density=density,
    )


# --------------------------------------------------------------------------- width scaling
@dataclasses.dataclass(frozen=True)
class PowerFit:
    """value ~ prefactor * m^exponent (least squares of log value on log m); ``stderr``: the slope's
    standard error sqrt(SSR / (N - 2) / S_xx) (NaN with fewer than 3 points); ``points``: N used."""

    exponent: float
    stderr: float
    prefactor: float
    points: int


def power_fit(m, values) -> PowerFit:
    """Fit ``values`` (positive; repeated widths allowed, e.g. one per seed) against widths ``m``.
    Non-positive or non-finite values are an error (a fraction of 0 has no logarithm: sweep longer or
    wider)."""
    m, v = np.asarray(m, np.float64).ravel(), np.asarray(values, np.float64).ravel()
    if m.shape != v.shape or m.size < 2:
        raise ValueError(f"power_fit: need matching m and values with >= 2 points, got {m.shape}, {v.shape}")
    if np.any(~np.isfinite(v)) or np.any(v <= 0) or np.any(m <= 0):
        raise ValueError("power_fit: m and values must be positive and finite (a log-log fit)")
    x, y = np.log(m), np.log(v)
    xc = x - x.mean()
    sxx = float(xc @ xc)
    if sxx == 0:
        raise ValueError("power_fit: all widths equal; need at least two distinct m")
    slope = float(xc @ (y - y.mean())) / sxx
    intercept = float(y.mean() - slope * x.mean())
    resid = y - intercept - slope * x
    se = math.sqrt(float(resid @ resid) / (x.size - 2) / sxx) if x.size > 2 else math.nan
    return PowerFit(slope, se, math.exp(intercept), int(x.size))
