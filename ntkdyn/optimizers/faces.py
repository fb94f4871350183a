"""The training face (an optax transformation of a linear method) and the recurrence face (companion
matrices A_k(lambda) = T_k + lambda u_k e_0^T) of an ``OptimizerSpec``."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ntkdyn import schedules
from ntkdyn.optimizers.spec import Hyper, OptimizerSpec


# --------------------------------------------------------------------------- training face
class LinearMethodState(NamedTuple):
    count: jax.Array  # type: ignore[assignment]  # number of updates done (shadows tuple.count)
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
    method = spec.linear
    scheduled = schedules.step_of(hyper).scheduled

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
        if scheduled:
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
    if spec.optax_factory is None:
        raise ValueError(f"optimizer {spec.name!r} has neither a linear method nor an optax factory")
    extra = {k: v for k, v in hyper.items() if k != "eta"}
    return spec.optax_factory(hyper["eta"], **extra)


# --------------------------------------------------------------------------- recurrence face
def companion(spec: OptimizerSpec, hyper: Hyper, lam, k) -> np.ndarray:
    """A_k(lambda) = T_k + lambda u_k e_0^T, shape lam.shape + (p+1, p+1), float64."""
    T_rows, u_rows = spec.linear.step(hyper, float(k))
    T = np.asarray(T_rows, np.float64)
    u = np.asarray(u_rows, np.float64)
    lam = np.asarray(lam, np.float64)
    A = np.broadcast_to(T, lam.shape + T.shape).copy()
    A[..., :, 0] += lam[..., None] * u
    return A


def initial_state(spec: OptimizerSpec, coef) -> np.ndarray:
    """X_0 per mode: (e_0, then e_0 for point states and 0 for vector states), shape (n, p+1)."""
    coef = np.asarray(coef, np.float64)
    cols = [coef] + [coef if kind == "point" else np.zeros_like(coef) for kind in spec.linear.states]
    return np.stack(cols, axis=-1)


def asymptotic_companion(spec: OptimizerSpec, hyper: Hyper, lam) -> np.ndarray:
    """A(lambda) for constant methods; the k -> infinity limit (k = 1e12) for scheduled ones."""
    return companion(spec, hyper, lam, 1 if spec.constant else 1e12)


def spectral_radius(A) -> np.ndarray:
    """max |eigenvalue| of each square matrix in a stack (float64)."""
    return np.max(np.abs(np.linalg.eigvals(np.asarray(A, np.float64))), axis=-1)


def largest_stable_step(spec: OptimizerSpec, hyper: Hyper, hi: float = 16.0) -> float | None:
    """The largest h = eta lambda at which one mode of the method's linear recurrence does not grow
    (spectral radius of its companion matrix <= 1), found by bisection on (0, hi]: GD 2, heavy ball
    2 (1 + beta), optax's Nesterov 2 (1 + beta) / (1 + 2 beta) (``sharpness.stability_limit`` derives
    these). None when the method has no recurrence, a scheduled eta, or no limit below ``hi``."""
    eta = hyper.get("eta")
    if not spec.has_theory or not isinstance(eta, (int, float)) or not eta > 0:
        return None

    def stable(h: float) -> bool:
        A = asymptotic_companion(spec, hyper, np.array([h / eta]))
        return bool(spectral_radius(A)[0] <= 1.0 + 1e-12)

    if stable(hi):
        return None
    lo, up = 0.0, hi
    for _ in range(60):
        mid = 0.5 * (lo + up)
        lo, up = (mid, up) if stable(mid) else (lo, mid)
    return lo
