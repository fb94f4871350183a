"""Full-batch training as compiled ``lax.scan`` chunks, batched over runs.

The loss L = (c/2)||f(X) - y||^2 is recorded at steps 0, k, 2k, ..., T (k = ``record_every``),
the error vector e = f(X) - y at ``error_at`` and the trained parameters at ``snapshot_at``
(for kernel drift). A step whose loss is non-finite or exceeds ``divergence_factor * L_0``
marks the run diverged at that step: its parameters stop changing and later losses are NaN.

Runs that share shapes (seeds, eta, beta, r, ...) train as one program: the single-run step is
``vmap``-ed over a leading run axis, which is sharded over the local devices (a ``Mesh`` with
one axis "runs"; nothing changes on one device). The steps are cut into equal chunks of one
compiled scan each, so a progress line can be printed between chunks and memory holds only the
recorded losses. Every executable is compiled once per (model, optimizer, plan, shapes) and
counted in ``COMPILE_COUNT``.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ntkdyn import optimizers
from ntkdyn.models import Model

COMPILE_COUNT = {"n": 0}
_CACHE: dict = {}


@dataclasses.dataclass(frozen=True)
class TrainPlan:
    steps: int
    record_every: int = 1
    error_at: tuple[int, ...] = ()
    snapshot_at: tuple[int, ...] = ()
    divergence_factor: float = 1e6
    chunks: int = 1  # the scan is cut into this many equal compiled calls (progress, ETA)


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


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    diverged_at: jax.Array  # -1 while running
    errors: jax.Array
    snapshots: Any
    limit: jax.Array  # divergence_factor * L_0


def n_blocks(plan: TrainPlan) -> int:
    if plan.steps % plan.record_every:
        raise ValueError(f"train.steps={plan.steps} must be a multiple of train.record_every={plan.record_every}")
    blocks = plan.steps // plan.record_every
    if blocks % plan.chunks:
        raise ValueError(f"{blocks} recorded blocks cannot be cut into {plan.chunks} equal chunks")
    return blocks


def single_run_fns(model: Model, spec: optimizers.OptimizerSpec, c: float, plan: TrainPlan):
    """Pure single-run functions (init, chunk, finish); hyper values are traced."""
    blocks_per_chunk = n_blocks(plan) // plan.chunks
    error_at = jnp.asarray(plan.error_at or (-1,), jnp.int32)
    snapshot_at = jnp.asarray(plan.snapshot_at or (-1,), jnp.int32)

    def loss_fn(p, consts, X, y):
        e = model.apply(p, consts, X) - y
        return 0.5 * c * jnp.sum(e * e), e

    def record(k, e, p, errors, snaps):
        errors = jnp.where((error_at == k)[:, None], e[None, :], errors)
        hit = snapshot_at == k
        snaps = jax.lax.cond(  # k is not batched, so this stays a cond under vmap
            jnp.any(hit), lambda s: jax.tree.map(lambda buf, leaf: buf.at[jnp.argmax(hit)].set(leaf), s, p),
            lambda s: s, snaps)
        return errors, snaps

    def init(hyper, params, consts, X, y) -> TrainState:
        tx = optimizers.transformation(spec, hyper)
        L0, _ = loss_fn(params, consts, X, y)
        errors = jnp.full((error_at.shape[0], X.shape[0]), jnp.nan, X.dtype)  # NaN: step never reached
        snaps = jax.tree.map(lambda leaf: jnp.zeros((snapshot_at.shape[0],) + leaf.shape, leaf.dtype), params)
        return TrainState(params, tx.init(params), jnp.asarray(-1, jnp.int32), errors, snaps,
                          plan.divergence_factor * L0)

    def chunk(state: TrainState, hyper, consts, X, y, first_block):
        tx = optimizers.transformation(spec, hyper)

        def step(state: TrainState, k):
            (L, e), g = jax.value_and_grad(loss_fn, has_aux=True)(state.params, consts, X, y)
            errors, snaps = record(k, e, state.params, state.errors, state.snapshots)
            live = state.diverged_at < 0
            bad = live & (~jnp.isfinite(L) | (L > state.limit))
            updates, new_opt = tx.update(g, state.opt_state, state.params)
            new_params = optax.apply_updates(state.params, updates)
            move = live & ~bad
            keep = lambda old, new: jax.tree.map(lambda o, nw: jnp.where(move, nw, o), old, new)
            return TrainState(keep(state.params, new_params), keep(state.opt_state, new_opt),
                              jnp.where(bad, k.astype(jnp.int32), state.diverged_at),
                              jnp.where(live, errors, state.errors), snaps,  # frozen params after divergence
                              state.limit), jnp.where(live, L, jnp.nan)

        def block(state, b):
            state, losses = jax.lax.scan(step, state, b * plan.record_every + jnp.arange(plan.record_every))
            return state, losses[0]

        return jax.lax.scan(block, state, first_block + jnp.arange(blocks_per_chunk))

    def finish(state: TrainState, hyper, consts, X, y):
        L, e = loss_fn(state.params, consts, X, y)
        live = state.diverged_at < 0
        errors, snaps = record(plan.steps, e, state.params, state.errors, state.snapshots)
        bad = live & (~jnp.isfinite(L) | (L > state.limit))
        return (jnp.where(live, L, jnp.nan), jnp.where(bad, plan.steps, state.diverged_at),
                jnp.where(live, errors, state.errors), jax.tree.map(lambda o, n: jnp.where(live, n, o),
                                                                   state.snapshots, snaps))

    return init, chunk, finish


def run_mesh() -> Mesh:
    """A one-axis mesh ("runs") over all devices jax sees (all hosts after jax.distributed)."""
    return Mesh(np.asarray(jax.devices()), ("runs",))


def _compiled(key, fn: Callable, *args, **jit_kwargs):
    if key not in _CACHE:
        _CACHE[key] = jax.jit(fn, **jit_kwargs).lower(*args).compile()
        COMPILE_COUNT["n"] += 1
    return _CACHE[key]


def _all_equal(trees: list) -> bool:
    """True when every pytree in ``trees`` equals the first (same structure, shapes and values)."""
    first = jax.tree.leaves(trees[0])
    for other in trees[1:]:
        leaves = jax.tree.leaves(other)
        if len(leaves) != len(first) or not all(
                a is b or (a.shape == b.shape and bool(np.array_equal(np.asarray(a), np.asarray(b))))
                for a, b in zip(first, leaves)):
            return False
    return True


def _shape_key(tree):
    return tuple((tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves(tree))


def train_batch(model: Model, spec: optimizers.OptimizerSpec, hypers: list[dict], c: float, plan: TrainPlan,
                params: list, consts: list, X: list, y: list, progress: Callable[[int, float], None] | None = None
                ) -> list[TrainResult]:
    """Train R runs of the same shapes as one vmapped, sharded program; one TrainResult per run.

    ``hypers[i]`` holds run i's numeric hyperparameters (non-numeric ones, e.g. optax kwargs
    like nesterov=True, must be equal across runs and are compiled in). ``progress(step, eta_s)``
    is called after every chunk.
    """
    R = len(hypers)
    dtype = X[0].dtype
    numeric_keys = [k for k, v in hypers[0].items() if isinstance(v, float | int) and not isinstance(v, bool)]
    static = {k: v for k, v in hypers[0].items() if k not in numeric_keys}
    mesh = run_mesh()
    n_dev = mesh.devices.size
    R_pad = -(-R // n_dev) * n_dev  # pad with copies of the last run so the run axis divides evenly
    pick = list(range(R)) + [R - 1] * (R_pad - R)
    sharding = NamedSharding(mesh, PartitionSpec("runs"))
    stack = lambda trees: jax.device_put(jax.tree.map(lambda *xs: jnp.stack(xs), *[trees[i] for i in pick]), sharding)
    replicated = NamedSharding(mesh, PartitionSpec())
    h = stack([{k: jnp.asarray(hp[k], dtype) for k in numeric_keys} for hp in hypers])
    p = stack(params)
    # Inputs equal in every run (data of one seed, fixed output signs) are passed once, not
    # stacked: the batched matmuls then become one wide GEMM, X @ [W_1; ...; W_R]^T.
    shared = [_all_equal(trees) for trees in (consts, X, y)]
    cs, Xb, yb = (jax.device_put(trees[0], replicated) if same else stack(trees)
                  for trees, same in zip((consts, X, y), shared))
    axes = tuple(None if same else 0 for same in shared)

    init, chunk, finish = single_run_fns(model, spec, c, plan)
    v_init = jax.vmap(lambda hyper, *a: init({**hyper, **static}, *a), in_axes=(0, 0) + axes)
    v_chunk = jax.vmap(lambda s, hyper, cs_, X_, y_, b: chunk(s, {**hyper, **static}, cs_, X_, y_, b),
                       in_axes=(0, 0) + axes + (None,))
    v_finish = jax.vmap(lambda s, hyper, cs_, X_, y_: finish(s, {**hyper, **static}, cs_, X_, y_),
                        in_axes=(0, 0) + axes)
    data_shardings = tuple(replicated if same else sharding for same in shared)

    key = (model.name, id(model.apply), spec.name, c, plan, tuple(sorted(static.items())), n_dev,
           _shape_key((h, p, cs, Xb, yb)), tuple(shared))
    t0 = time.perf_counter()
    f_init = _compiled(key + ("init",), v_init, h, p, cs, Xb, yb, in_shardings=(sharding, sharding) + data_shardings,
                       out_shardings=sharding)
    state = f_init(h, p, cs, Xb, yb)
    b0 = jnp.asarray(0, jnp.int32)
    f_chunk = _compiled(key + ("chunk",), v_chunk, state, h, cs, Xb, yb, b0, donate_argnums=0,
                        in_shardings=(sharding, sharding) + data_shardings + (replicated,), out_shardings=sharding)
    f_finish = _compiled(key + ("finish",), v_finish, state, h, cs, Xb, yb,
                         in_shardings=(sharding, sharding) + data_shardings, out_shardings=sharding)
    t1 = time.perf_counter()
    blocks_per_chunk = n_blocks(plan) // plan.chunks
    losses = []
    for i in range(plan.chunks):
        state, chunk_losses = f_chunk(state, h, cs, Xb, yb, jnp.asarray(i * blocks_per_chunk, jnp.int32))
        losses.append(chunk_losses)
        if progress is not None:
            jax.block_until_ready(chunk_losses)
            done = (i + 1) / plan.chunks
            elapsed = time.perf_counter() - t1
            progress((i + 1) * blocks_per_chunk * plan.record_every, elapsed * (1 - done) / done)
    L_end, div_at, errors, snaps = jax.block_until_ready(f_finish(state, h, cs, Xb, yb))
    t2 = time.perf_counter()
    loss = np.concatenate([np.asarray(x, np.float64) for x in losses] + [np.asarray(L_end, np.float64)[:, None]],
                          axis=1)
    div_at, errors = np.asarray(div_at), np.asarray(errors)
    snaps = jax.tree.map(np.asarray, snaps)
    final = jax.tree.map(np.asarray, state.params)
    steps = np.arange(0, plan.steps + 1, plan.record_every)
    return [TrainResult(
        step=steps, loss=loss[i], diverged_at=None if div_at[i] < 0 else int(div_at[i]),
        error_at=np.asarray(plan.error_at, int), errors=errors[i, : len(plan.error_at)],
        snapshot_at=np.asarray(plan.snapshot_at, int),
        snapshots=jax.tree.map(lambda s: s[i, : len(plan.snapshot_at)], snaps),
        final_params=jax.tree.map(lambda s: s[i], final), compile_s=(t1 - t0) / R, run_s=(t2 - t1) / R)
        for i in range(R)]


def train(model: Model, spec: optimizers.OptimizerSpec, hyper: dict, c: float, plan: TrainPlan,
          params, consts, X, y, progress=None) -> TrainResult:
    """One run (``train_batch`` with a single run)."""
    return train_batch(model, spec, [hyper], c, plan, [params], [consts], [X], [y], progress)[0]


def progress_printer(label: str, total_steps: int, runs: int, stream=sys.stderr) -> Callable[[int, float], None]:
    """A progress line 'label: runs R, step k/T (p%), ETA s' rewritten in place on a terminal."""
    tty = stream.isatty()

    def show(step: int, eta_s: float) -> None:
        line = f"  {label}: {runs} run(s), step {step}/{total_steps} ({100 * step / total_steps:.0f}%), ETA {eta_s:.1f} s"
        stream.write(("\r" + line) if tty else (line + "\n"))
        if tty and step >= total_steps:
            stream.write("\n")
        stream.flush()

    return show
