"""The network's second-order Taylor model at initialisation (the quadratic model).

    f_quad(theta; x) = f(theta_0; x) + J(theta_0; x) d + 1/2 d^T [Hess_theta f(theta_0; x)] d,
    d = theta - theta_0,

(Zhu, Liu, Belkin 2022, "Quadratic models for understanding catapult dynamics of neural networks",
arXiv 2205.11787, eq. 3: their NQM is this expansion of the network in all trained parameters). Both
correction terms come from one nested forward-mode product: the inner ``jax.jvp`` gives
(f(p), J(p) d); its ``jax.jvp`` at theta_0 in the same direction d gives, as the tangent of J(p) d,
the second directional derivative d^T Hess f(theta_0) d. No Jacobian and no Hessian is materialised;
the cost is about four forward passes, and the gradient (J(theta_0) + Hess f(theta_0) d)^T e is its
transpose (one reverse pass over the nested jvp).

Two ways to train it, with any optax ``GradientTransformation`` and the same batches as the network:

* ``quadratize(model)``: a ``models.Model`` (like ``linearized.linearize``), trained through
  ``train.train`` with the expansion point in its consts (``expansion_consts``): the same compiled
  path, divergence rule, sampling keys (hence the same mini-batches) and held-out loss as the
  network run.
* ``train_taylor``: a plain ``lax.scan`` loop over a given optax transformation and given batch
  indices (``batches``, e.g. ``network_batches`` of the network run's key), returning a typed
  ``TaylorTrajectory``; ``order=1`` trains the linearisation the same way.

Where it applies: Hess f(theta_0) must not vanish. For the ``paper`` model (only W trained, through
ReLU) f is piecewise linear in W: Hess f = 0 almost everywhere and f_quad = f_lin; ``applies`` says
so (there ``ntkdyn.flips`` measures what the Taylor models cannot see: activation patterns that flip).
For ReLU models with both layers trained Hess f is the cross term a-W only (ReLU'' = 0 a.e.), so the
quadratic model sees the second layer's motion but not flips either.

Loss convention (``models``): L = (c/2) ||f(X) - y||^2; mini-batch steps use the gradient of
L_B = (c/2)(n/b) sum_{i in B} e_i^2, as ``train`` does.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ntkdyn import train as train_mod
from ntkdyn.linearized import linear_consts
from ntkdyn.models import Model, loss_scale

expansion_consts = (
    linear_consts  # {"theta0": params0, "base": consts0}: the expansion point travels in consts
)
ORDERS = (1, 2)


def _delta(params, theta0):
    return jax.tree.map(lambda p, p0: p - p0, params, theta0)


def taylor_terms(apply, params0, consts0, X, delta) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(f(theta_0), J(theta_0) d, d^T Hess f(theta_0) d), each of shape (n,), for ``apply(params,
    consts, X)`` and a direction ``d`` (a pytree like params0): one jvp of a jvp, nothing materialised."""

    def value_and_jd(p):
        return jax.jvp(lambda q: apply(q, consts0, X), (p,), (delta,))

    (f0, jd), (_, dhd) = jax.jvp(value_and_jd, (params0,), (delta,))
    return f0, jd, dhd


def taylor_apply(apply, order: int):
    """``apply`` of the order-``order`` Taylor model at the theta_0 held in consts
    (``expansion_consts``): order 1 f0 + J d (the linearisation), order 2 f0 + J d + 1/2 d^T H d."""
    if order not in ORDERS:
        raise ValueError(f"order: {order!r}; allowed: {ORDERS}")

    def fn(params, consts, X):
        theta0, base = consts["theta0"], consts["base"]
        delta = _delta(params, theta0)
        if order == 1:
            f0, jd = jax.jvp(lambda q: apply(q, base, X), (theta0,), (delta,))
            return f0 + jd
        f0, jd, dhd = taylor_terms(apply, theta0, base, X, delta)
        return f0 + jd + 0.5 * dhd

    return fn


@functools.lru_cache(maxsize=32)
def quadratize(model: Model) -> Model:
    """``model``'s quadratic model at the theta_0 held in its consts (``expansion_consts``); the same
    loss. No ``fast_gram`` (its tangent kernel moves linearly in theta - theta_0: ``ntk.gram`` of this
    model gives it), no ``hinf``. Cached per model, so training compiles once."""
    return dataclasses.replace(
        model, name=f"{model.name}_quad", apply=taylor_apply(model.apply, 2), fast_gram=None, hinf=None
    )


# --------------------------------------------------------------------------- where it applies
def applies(
    model: Model, params0, consts0, X, key: jax.Array | None = None, rtol: float = 1e-12
) -> str | None:
    """None when the quadratic model differs from the linearisation at theta_0, else the reason.

    The ``paper`` model is refused by name (Hess_W f = 0 wherever no w_r . x_i = 0, i.e. almost
    everywhere). Any other model is probed: |d^T Hess f(theta_0) d| for two random directions d
    (``key``, unit-normal entries), relative to ||f(theta_0)|| + ||J d||; all at most ``rtol`` means
    Hess f(theta_0) vanishes on X (e.g. a model piecewise linear in its trained parameters)."""
    if model.name == "paper":
        return (
            "the paper model trains W only, through ReLU: f is piecewise linear in W, so Hess f = 0 "
            "almost everywhere and the quadratic model is the linearisation; measure activation-pattern "
            "flips instead (ntkdyn.flips)"
        )
    key = jax.random.PRNGKey(0) if key is None else key
    leaves, treedef = jax.tree.flatten(params0)
    worst = 0.0
    for k in jax.random.split(key, 2):
        ks = jax.random.split(k, len(leaves))
        d = jax.tree.unflatten(
            treedef, [jax.random.normal(kk, leaf.shape, leaf.dtype) for kk, leaf in zip(ks, leaves)]
        )
        f0, jd, dhd = taylor_terms(model.apply, params0, consts0, X, d)
        scale = float(jnp.linalg.norm(f0) + jnp.linalg.norm(jd))
        worst = max(worst, float(jnp.linalg.norm(dhd)) / max(scale, 1e-300))
    if worst <= rtol:
        return (
            f"Hess f(theta_0) vanishes on the training inputs (||d^T H d|| / (||f0|| + ||J d||) = "
            f"{worst:.1e} <= {rtol:g} in random directions d): the quadratic model is the linearisation"
        )
    return None


# --------------------------------------------------------------------------- training loop
@dataclasses.dataclass(frozen=True)
class TaylorTrajectory:
    """A Taylor model trained by ``train_taylor``.

    ``loss[j]`` = (c/2)||f_T(theta_k; X) - y||^2 at k = ``step[j]`` (full training set; NaN after
    divergence); ``errors[i]`` = f_T(theta_k; X) - y at k = ``error_at[i]``; ``test_loss`` the held-out
    loss (c_t/2)||f_T(X_t) - y_t||^2, c_t = ``loss_scale(loss, n_t)``, at ``step`` (None without a
    held-out set); ``diverged_at``: the first step whose loss is non-finite or above
    ``divergence_factor * L_0`` (its update is not applied; None if none)."""

    order: int
    step: np.ndarray
    loss: np.ndarray
    diverged_at: int | None
    error_at: np.ndarray
    errors: np.ndarray
    test_loss: np.ndarray | None
    final_params: Any


def network_batches(key: jax.Array, steps: int, n: int, b: int, sampling: str = "replacement") -> jax.Array:
    """(steps, b) indices: row k is the batch of update k of a network run trained by ``train`` with
    sampling key ``key`` (``train.batch_indices``), so a Taylor model sees the network's batches."""
    return jax.vmap(lambda k: train_mod.batch_indices(key, k, n, b, sampling))(
        jnp.arange(steps, dtype=jnp.int32)
    )


def train_taylor(
    model: Model,
    params0,
    consts0,
    X: jax.Array,
    y: jax.Array,
    tx: optax.GradientTransformation,
    steps: int,
    *,
    order: int = 2,
    record_every: int = 1,
    batches: jax.Array | None = None,
    error_at: tuple[int, ...] = (),
    test: tuple[jax.Array, jax.Array] | None = None,
    divergence_factor: float = 1e6,
) -> TaylorTrajectory:
    """Train the order-``order`` Taylor model of ``model`` at (params0, consts0) from theta = theta_0.

    Update k = 0 .. steps-1: g = grad L (full batch) or, with ``batches`` (int array (steps, b)),
    g = (n/b) grad (c/2) sum_{i in batches[k]} e_i^2; then ``tx.update(g, state, theta, value=L)``
    (the full-set loss passed as ``value``, for transformations that read it) and
    theta <- optax.apply_updates(theta, update). c = ``loss_scale(model.loss, n)``. The full-set loss
    is checked at every step for divergence (non-finite or > divergence_factor * L_0): from that step
    on theta is frozen and the loss NaN."""
    if order not in ORDERS:
        raise ValueError(f"order: {order!r}; allowed: {ORDERS}")
    if steps < 1 or record_every < 1 or steps % record_every:
        raise ValueError(f"steps={steps} must be a positive multiple of record_every={record_every}")
    n = y.shape[0]
    if batches is not None:
        batches = jnp.asarray(batches)
        if batches.ndim != 2 or batches.shape[0] != steps or not jnp.issubdtype(batches.dtype, jnp.integer):
            raise ValueError(
                f"batches: need an integer array of shape (steps={steps}, b), "
                f"got {batches.shape} {batches.dtype}"
            )
    bad_err = [s for s in error_at if not 0 <= s <= steps]
    if bad_err:
        raise ValueError(f"error_at: steps {bad_err} outside 0..{steps}")
    c = loss_scale(model.loss, n)
    apply = taylor_apply(model.apply, order)
    consts = expansion_consts(params0, consts0)
    tx = optax.with_extra_args_support(tx)

    def loss_fn(p, Xb, yb):
        e = apply(p, consts, Xb) - yb
        return 0.5 * c * jnp.sum(e * e), e

    def held(p):
        if test is None:
            return jnp.zeros(())
        Xt, yt = test
        e = apply(p, consts, Xt) - yt
        return 0.5 * loss_scale(model.loss, yt.shape[0]) * jnp.sum(e * e)

    @jax.jit
    def run(params0):
        def body(carry, k):
            p, state, dead, limit = carry
            if batches is None:
                (L, e), g = jax.value_and_grad(loss_fn, has_aux=True)(p, X, y)
            else:
                L, e = loss_fn(p, X, y)
                idx = batches[k]
                g = jax.grad(lambda q: loss_fn(q, X[idx], y[idx])[0])(p)
                g = jax.tree.map(lambda leaf: (n / idx.shape[0]) * leaf, g)
            limit = jnp.where(k == 0, divergence_factor * L, limit)
            dead = dead | ~jnp.isfinite(L) | (L > limit)
            upd, new_state = tx.update(g, state, p, value=L)
            new_p = optax.apply_updates(p, upd)
            keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(dead, b, a), new, old)  # noqa: E731
            out = (
                jnp.where(dead, jnp.nan, L),
                jnp.where(dead, jnp.nan, e),
                jnp.where(dead, jnp.nan, held(p)),
            )
            return (keep(new_p, p), keep(new_state, state), dead, limit), (out, dead)

        init = (
            params0,
            tx.init(params0),
            jnp.asarray(False),
            jnp.asarray(jnp.inf, jnp.result_type(*jax.tree.leaves(params0), y)),
        )
        (p, _, dead, limit), ((Ls, es, hs), deads) = jax.lax.scan(
            body, init, jnp.arange(steps, dtype=jnp.int32)
        )
        (L, e) = loss_fn(p, X, y)
        dead_end = dead | ~jnp.isfinite(L) | (L > limit)
        last = (
            jnp.where(dead_end, jnp.nan, L),
            jnp.where(dead_end, jnp.nan, e),
            jnp.where(dead_end, jnp.nan, held(p)),
        )
        cat = lambda a, b: jnp.concatenate([a, b[None]])  # noqa: E731
        return p, cat(Ls, last[0]), cat(es, last[1]), cat(hs, last[2]), cat(deads, dead_end)

    p, Ls, es, hs, deads = jax.device_get(run(params0))
    hit = np.flatnonzero(np.asarray(deads))
    rec = np.arange(0, steps + 1, record_every)
    return TaylorTrajectory(
        order=order,
        step=rec,
        loss=np.asarray(Ls, np.float64)[rec],
        diverged_at=int(hit[0]) if hit.size else None,
        error_at=np.asarray(error_at, int),
        errors=np.asarray(es)[np.asarray(error_at, int)] if error_at else np.zeros((0, n)),
        test_loss=None if test is None else np.asarray(hs, np.float64)[rec],
        final_params=p,
    )


def relative_gap(network_loss: np.ndarray, model_loss: np.ndarray) -> float:
    """max_k |L_model(k) - L_net(k)| / L_net(0) over steps where both are finite (NaN if none): the
    Taylor model's deviation from the network, relative to the initial loss (unlike a per-step ratio
    it does not blow up as the network's loss goes to 0)."""
    a, b = np.asarray(network_loss, np.float64), np.asarray(model_loss, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if not ok.any() or not np.isfinite(a[0]) or a[0] == 0:
        return float("nan")
    return float(np.max(np.abs(b[ok] - a[ok])) / a[0])
