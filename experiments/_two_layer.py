"""The two-layer network of the beyond-the-kernel studies (``finite_width``, ``catapult``), its Taylor
models and one batched trainer for all of them.

    f(x) = (1/sqrt m) sum_r a_r phi(w_r . x),   w_r ~ N(0, I_d), a_r ~ N(0, 1),  both layers trained

(NTK parametrisation), on n points of the unit sphere in R^d with teacher targets (``ntkdyn.sphere``),
loss L = (c/2) ||f(X) - y||^2 with c = 1/n (``half_mse``: K = c H, H = J J^T).

``trajectories`` trains R runs as ONE compiled program (``jax.vmap`` over rows): each row has its own
hyperparameters (traced scalars fed to an optax factory), its own initialisation, and selects its
model by ``which``: 0 the network, 1 its linearisation at theta_0, 2 its quadratic model at theta_0
(Zhu, Liu, Belkin 2022, arXiv 2205.11787: f0 + J d + 1/2 d^T Hess f d, through ``ntkdyn.quadratic``'s
nested jvps). Rows that diverge (loss non-finite or above ``DIVERGENCE_FACTOR`` L_0) are frozen from
that step on and their losses are NaN. The Gram H = J J^T of the row's own model is recorded every
``every`` steps (n is small: the n x n Gram is formed exactly from the n x P Jacobian).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import ntkdyn  # noqa: E402
from ntkdyn import quadratic  # noqa: E402

ACTS = {"relu": jax.nn.relu, "softplus": jax.nn.softplus, "tanh": jnp.tanh}
WHICH = {"network": 0, "linear": 1, "quadratic": 2}
DIVERGENCE_FACTOR = 1e8
N_POINTS, DIM = 16, 5


def two_layer(act: str) -> Callable:
    """apply(params, X) of the two-layer network above (``params`` = {"W": (m, d), "a": (m,)})."""
    phi = ACTS[act]

    def apply(p, X):
        return phi(X @ p["W"].T) @ p["a"] / math.sqrt(p["a"].shape[0])

    return apply


@dataclasses.dataclass(frozen=True)
class Problem:
    """One width and activation: data, the wrapped model, theta_0 per seed (leading axis S), the loss
    scale c and lambda_0 = lambda_max(K) at each seed's theta_0."""

    act: str
    m: int
    X: jax.Array
    y: jax.Array
    model: ntkdyn.models.Model
    params0: dict  # leaves with a leading seed axis
    consts: dict
    c: float
    lam0: np.ndarray  # (S,)


def init_params(m: int, d: int, seed: int) -> dict:
    kw, ka = jax.random.split(jax.random.PRNGKey(1000 + seed))
    return {"W": jax.random.normal(kw, (m, d), jnp.float64), "a": jax.random.normal(ka, (m,), jnp.float64)}


def problem(act: str, m: int, seeds, data_seed: int = 0, n: int = N_POINTS, d: int = DIM) -> Problem:
    """Data (one draw, ``data_seed``) and the initialisations of ``seeds`` at width m, float64."""
    X, y = ntkdyn.sphere(n, d, "teacher", data_seed, 0.0, 16)
    X, y = jnp.asarray(X, jnp.float64), jnp.asarray(y, jnp.float64)
    ps = [init_params(m, d, s) for s in seeds]
    model, _, consts = ntkdyn.from_apply_fn(two_layer(act), ps[0], loss="half_mse", name=f"two_{act}")
    params0 = jax.tree.map(lambda *a: jnp.stack(a), *ps)
    c = 1.0 / n
    grams = np.asarray(jax.vmap(lambda p: gram(model.apply, p, consts, X))(params0))
    lam0 = c * np.linalg.eigvalsh(grams)[:, -1]
    return Problem(act, m, X, y, model, params0, consts, c, lam0)


def gram(apply, params, consts, X) -> jax.Array:
    """H = J J^T (n x n) of apply(params, consts, X) in params, from the dense n x P Jacobian."""
    J = jax.jacrev(lambda p: apply(p, consts, X))(params)
    flat = jnp.concatenate([j.reshape(X.shape[0], -1) for j in jax.tree.leaves(J)], axis=1)
    return flat @ flat.T


def selected_apply(apply) -> Callable:
    """apply(params, (theta0, consts, which), X): the network (which 0), its linearisation (1) or its
    quadratic model (2) at theta0, all three from one nested jvp (``quadratic.taylor_terms``)."""

    def fn(params, ctx, X):
        theta0, consts, which = ctx
        delta = jax.tree.map(lambda p, p0: p - p0, params, theta0)
        f0, jd, dhd = quadratic.taylor_terms(apply, theta0, consts, X, delta)
        taylor = f0 + jd + jnp.where(which == 2, 0.5, 0.0) * dhd
        return jnp.where(which == 0, apply(params, consts, X), taylor)

    return fn


@dataclasses.dataclass(frozen=True)
class Trajectories:
    """R rows: ``loss`` (R, steps + 1), NaN from divergence on; ``gram`` (R, S + 1, n, n) at
    ``gram_steps`` (0, every, 2 every, ..., steps), NaN after divergence; ``final`` params (leading R);
    ``diverged_at`` (R,) the first step whose loss is non-finite or above the limit (-1: never)."""

    loss: np.ndarray
    gram_steps: np.ndarray
    gram: np.ndarray
    final: dict
    diverged_at: np.ndarray

    def lam_max(self, c: float) -> np.ndarray:
        """lambda_max(K) = c lambda_max(H) at ``gram_steps`` (R, S + 1), NaN after divergence."""
        g = np.nan_to_num(self.gram)
        lam = c * np.linalg.eigvalsh(0.5 * (g + np.swapaxes(g, -1, -2)))[..., -1]
        return np.where(np.isfinite(self.gram).all(axis=(-1, -2)), lam, np.nan)


@functools.lru_cache(maxsize=64)
def _program(apply, make_tx, steps: int, every: int):
    sel = selected_apply(apply)

    def one(h, theta0, consts, which, X, y, c):
        ctx = (theta0, consts, which)
        tx = make_tx(h)

        def loss(p):
            e = sel(p, ctx, X) - y
            return 0.5 * c * jnp.sum(e * e)

        limit = DIVERGENCE_FACTOR * loss(theta0)

        def inner(carry, k):
            p, state, dead = carry
            L, g = jax.value_and_grad(loss)(p)
            dead = dead | ~jnp.isfinite(L) | (L > limit)
            upd, new_state = tx.update(g, state, p)
            new_p = optax.apply_updates(p, upd)
            keep = lambda a, b: jax.tree.map(lambda u, v: jnp.where(dead, v, u), a, b)  # noqa: E731
            return (keep(new_p, p), keep(new_state, state), dead), jnp.where(dead, jnp.nan, L)

        def outer(carry, _):
            carry, Ls = jax.lax.scan(inner, carry, None, length=every)
            H = gram(lambda q, cs, Xs: sel(q, cs, Xs), carry[0], ctx, X)
            return carry, (Ls, jnp.where(carry[2], jnp.nan, H))

        H0 = gram(lambda q, cs, Xs: sel(q, cs, Xs), theta0, ctx, X)
        carry = (theta0, tx.init(theta0), jnp.asarray(False))
        (p, _, dead), (Ls, Hs) = jax.lax.scan(outer, carry, None, length=steps // every)
        Lend = loss(p)
        dead_end = dead | ~jnp.isfinite(Lend) | (Lend > limit)
        Ls = jnp.append(Ls.reshape(-1), jnp.where(dead_end, jnp.nan, Lend))
        return Ls, jnp.concatenate([H0[None], Hs]), p

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None, 0, None, None, None)))


def trajectories(
    pb: Problem,
    make_tx: Callable[[dict], optax.GradientTransformation],
    hyper: dict,
    seed_index,
    which,
    steps: int,
    every: int,
) -> Trajectories:
    """Train R rows as one program: row j uses ``hyper`` (dict of (R,) arrays, fed traced to
    ``make_tx``; keep ``make_tx`` a module-level function so the program is cached), theta_0 of seed
    ``seed_index[j]`` of ``pb`` and the model ``which[j]`` (``WHICH``). Full-batch, ``steps`` updates
    (a multiple of ``every``)."""
    if steps % every:
        raise ValueError(f"steps={steps} must be a multiple of every={every}")
    seed_index, which = np.asarray(seed_index, int), np.asarray(which, int)
    theta0 = jax.tree.map(lambda a: a[seed_index], pb.params0)
    h = {k: jnp.asarray(v, jnp.float64) for k, v in hyper.items()}
    Ls, Hs, p = _program(pb.model.apply, make_tx, steps, every)(
        h, theta0, pb.consts, jnp.asarray(which), pb.X, pb.y, pb.c
    )
    Ls, Hs = np.asarray(Ls, np.float64), np.asarray(Hs, np.float64)
    bad = ~np.isfinite(Ls)
    div = np.where(bad.any(axis=1), bad.argmax(axis=1), -1)
    return Trajectories(Ls, np.arange(0, steps + 1, every), Hs, jax.device_get(p), div)


def row(params, j: int) -> dict:
    """Row j of a params pytree with a leading row axis."""
    return jax.tree.map(lambda a: a[j], params)


def switch_tx(txs: list[optax.GradientTransformation], index) -> optax.GradientTransformation:
    """The transformation ``txs[index]`` with ``index`` traced (rows of one vmapped program may use
    different optimizers): every member keeps its own state and computes its update; the selected
    update is applied (the others are discarded, their states advance harmlessly)."""

    def init(params):
        return tuple(t.init(params) for t in txs)

    def update(grads, state, params=None):
        outs = [t.update(grads, s, params) for t, s in zip(txs, state)]
        pick = lambda *us: sum(jnp.where(index == i, u, 0.0) for i, u in enumerate(us))  # noqa: E731
        return jax.tree.map(pick, *[o[0] for o in outs]), tuple(o[1] for o in outs)

    return optax.GradientTransformation(init, update)


def registry_tx(name: str, hyper: dict) -> optax.GradientTransformation:
    """ntkdyn's training face of optimizer ``name`` (``optimizers.transformation``) with ``hyper``
    (values may be traced)."""
    from ntkdyn import optimizers

    spec = optimizers.get(name)
    return optimizers.transformation(
        spec, {**{k: v for k, v in spec.hyper.items() if v is not None}, **hyper}
    )
