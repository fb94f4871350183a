"""Full-batch training as one compiled ``lax.scan``.

The loss L = (c/2)||f(X) - y||^2 is recorded at steps 0, k, 2k, ..., T (k = ``record_every``),
the error vector e = f(X) - y at ``error_at`` and the trained parameters at ``snapshot_at``
(for kernel drift). A step whose loss is non-finite or exceeds ``divergence_factor * L_0``
marks the run diverged at that step: the parameters stop changing and later losses are NaN
(``lax.cond`` skips the work of later steps on CPU/GPU).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ntkdyn import optimizers
from ntkdyn.models import Model


@dataclasses.dataclass(frozen=True)
class TrainPlan:
    steps: int
    record_every: int = 1
    error_at: tuple[int, ...] = ()
    snapshot_at: tuple[int, ...] = ()
    divergence_factor: float = 1e6


@dataclasses.dataclass
class TrainResult:
    step: np.ndarray  # recorded steps
    loss: np.ndarray  # loss at those steps (NaN after divergence)
    diverged_at: int | None
    error_at: np.ndarray
    errors: np.ndarray  # (len(error_at), n)
    snapshot_at: np.ndarray
    snapshots: Any  # params pytree with a leading axis len(snapshot_at)
    final_params: Any
    compile_s: float
    run_s: float


def make_train_fn(model: Model, spec: optimizers.OptimizerSpec, c: float, plan: TrainPlan):
    """Pure ``train(hyper, params, consts, X, y)``; hyper values are traced (one program per spec)."""
    if plan.steps % plan.record_every:
        raise ValueError(f"train.steps={plan.steps} must be a multiple of train.record_every={plan.record_every}")
    n_blocks = plan.steps // plan.record_every
    error_at = jnp.asarray(plan.error_at or (-1,), jnp.int32)
    snapshot_at = jnp.asarray(plan.snapshot_at or (-1,), jnp.int32)

    def train(hyper, params, consts, X, y):
        tx = optimizers.transformation(spec, hyper)

        def loss_fn(p):
            e = model.apply(p, consts, X) - y
            return 0.5 * c * jnp.sum(e * e), e

        def record(k, e, p, errors, snaps):
            errors = jnp.where((error_at == k)[:, None], e[None, :], errors)
            hit = snapshot_at == k
            snaps = jax.lax.cond(
                jnp.any(hit),
                lambda s: jax.tree.map(lambda buf, leaf: buf.at[jnp.argmax(hit)].set(leaf), s, p),
                lambda s: s, snaps)
            return errors, snaps

        L0, _ = loss_fn(params)
        limit = plan.divergence_factor * L0
        errors0 = jnp.zeros((error_at.shape[0], X.shape[0]), X.dtype)
        snaps0 = jax.tree.map(lambda leaf: jnp.zeros((snapshot_at.shape[0],) + leaf.shape, leaf.dtype), params)

        def step(carry, k):
            def active(carry):
                p, state, div_at, errors, snaps = carry
                (L, e), g = jax.value_and_grad(loss_fn, has_aux=True)(p)
                errors, snaps = record(k, e, p, errors, snaps)
                bad = ~jnp.isfinite(L) | (L > limit)
                updates, new_state = tx.update(g, state, p)
                new_p = optax.apply_updates(p, updates)
                keep = lambda old, new: jax.tree.map(lambda o, nw: jnp.where(bad, o, nw), old, new)
                return (keep(p, new_p), keep(state, new_state), jnp.where(bad, k.astype(div_at.dtype), div_at), errors, snaps), L

            def frozen(carry):
                return carry, jnp.asarray(jnp.nan, L0.dtype)

            return jax.lax.cond(carry[2] < 0, active, frozen, carry)

        def block(carry, b):
            carry, losses = jax.lax.scan(step, carry, b * plan.record_every + jnp.arange(plan.record_every))
            return carry, losses[0]

        carry = (params, tx.init(params), jnp.asarray(-1, jnp.int32), errors0, snaps0)
        carry, losses = jax.lax.scan(block, carry, jnp.arange(n_blocks))
        p, _, div_at, errors, snaps = carry
        L_end, e_end = loss_fn(p)
        live = div_at < 0
        errors, snaps = jax.lax.cond(live, lambda a: record(plan.steps, e_end, p, *a), lambda a: a, (errors, snaps))
        bad_end = live & (~jnp.isfinite(L_end) | (L_end > limit))
        div_at = jnp.where(bad_end, plan.steps, div_at)
        L_end = jnp.where(live, L_end, jnp.nan)
        return jnp.append(losses, L_end), div_at, errors, snaps, p

    return train


def train(model: Model, spec: optimizers.OptimizerSpec, hyper: dict, c: float, plan: TrainPlan,
          params, consts, X, y) -> TrainResult:
    """Compile (timed apart) and run ``make_train_fn``; returns numpy results."""
    dtype = X.dtype
    numeric = {k: jnp.asarray(v, dtype) for k, v in hyper.items() if isinstance(v, float | int) and not isinstance(v, bool)}
    static = {k: v for k, v in hyper.items() if k not in numeric}  # e.g. nesterov=True for optax.sgd
    train_fn = make_train_fn(model, spec, c, plan)
    fn = jax.jit(lambda h, *args: train_fn({**h, **static}, *args))
    t0 = time.perf_counter()
    compiled = fn.lower(numeric, params, consts, X, y).compile()
    t1 = time.perf_counter()
    losses, div_at, errors, snaps, final = jax.block_until_ready(compiled(numeric, params, consts, X, y))
    t2 = time.perf_counter()
    div = int(div_at)
    return TrainResult(
        step=np.arange(0, plan.steps + 1, plan.record_every), loss=np.asarray(losses, np.float64),
        diverged_at=None if div < 0 else div,
        error_at=np.asarray(plan.error_at, int), errors=np.asarray(errors)[: len(plan.error_at)],
        snapshot_at=np.asarray(plan.snapshot_at, int),
        snapshots=jax.tree.map(lambda s: s[: len(plan.snapshot_at)], snaps),
        final_params=final, compile_s=t1 - t0, run_s=t2 - t1)
