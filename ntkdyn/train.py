"""Training as compiled ``lax.scan`` chunks, batched over runs: full batch, or mini-batches of
``TrainPlan.batch_size`` points drawn per step (``batch_indices``: with replacement, or epochs of a
shuffled permutation, from per-run sampling keys).

The loss L = (c/2)||f(X) - y||^2 and the squared gradient norm ||grad_theta L||^2 are recorded
at steps 0, k, 2k, ..., T (k = ``record_every``), the error vector e = f(X) - y at ``error_at``
and the parameters at ``snapshot_at`` (for kernel drift). A step whose loss is non-finite or
exceeds ``divergence_factor * L_0`` marks the run diverged at that step: its parameters stop
changing (the update of that step is not applied) and later losses are NaN.

Speed: the steps run in groups of up to ``GROUP_STEPS`` (whole record blocks, ``group_size``),
each one plain scan of the optax step, the same loop body a user writes by hand (no per-step
masks; one run carries its own arrays, no run axis). Divergence is checked once per group: when
a live run went bad inside it, one ``cond`` re-runs that group from its start with per-step
checks and freezes (so the divergence step is exact). Errors and snapshots are taken at group
edges, and groups are cut at those steps where they lie on record blocks; a group with such a
step strictly inside takes the careful path too. Runs already diverged are frozen by one select
per group (skipped while none has diverged). The state is donated between chunks.

Runs that share shapes (seeds, eta, beta, r, ...) train as one program: the single-run step is
``vmap``-ed over a leading run axis, which is sharded over all devices (a ``Mesh`` with one axis
"runs"; after ``jax.distributed.initialize`` it spans every process). The blocks are cut into
equal chunks of one compiled call each, so a progress line can be printed between chunks.
Every executable is compiled once per (model, optimizer, plan, shapes) and counted in
``COMPILE_COUNT``.

The optimizer's update is called as ``update(grads, state, params, value=L)`` (wrapped by
``optax.with_extra_args_support``), so a transformation may read the current loss.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from ntkdyn import optimizers
from ntkdyn.models import Model, loss_scale, loss_value
from ntkdyn.placement import all_equal as _all_equal
from ntkdyn.placement import (
    init_distributed,  # noqa: F401  (ntkdyn.train.init_distributed, as before)
    run_mesh,
)
from ntkdyn.placement import put as _put
from ntkdyn.placement import shape_key as _shape_key
from ntkdyn.placement import to_host as _to_host
from ntkdyn.train_plan import (  # noqa: F401  (the plan's names stay importable from ntkdyn.train)
    GROUP_STEPS,
    SAMPLE_KEY,
    TEST_KEY,
    TrainPlan,
    TrainResult,
    batch_indices,
    careful_groups,
    group_size,
    n_blocks,
)

COMPILE_COUNT = {"n": 0}
_CACHE: dict = {}


class TrainState(NamedTuple):
    """Batched state: every leaf has a leading run axis R."""

    params: Any
    opt_state: Any
    diverged_at: jax.Array  # (R,) int32, -1 while running
    errors: jax.Array  # (R, len(error_at), n)
    test_errors: jax.Array  # (R, len(error_at), n_t) with a held-out set, else (R, 0, 0)
    snapshots: Any  # params pytree, leaves (R, len(snapshot_at), ...)
    limit: jax.Array  # (R,) divergence_factor * L_0 (+inf before step 0)


def _sum_sq(tree) -> jax.Array:
    """sum over leaves of sum(x^2) for an unbatched pytree."""
    return sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree))


def _bcast(mask: jax.Array, leaf: jax.Array) -> jax.Array:
    """(R,) mask reshaped to broadcast against a leaf with leading run axis."""
    return mask.reshape(mask.shape + (1,) * (leaf.ndim - 1))


def _select(mask: jax.Array, new, old):
    """Per run: ``new`` where mask, else ``old`` (pytrees with a leading run axis)."""
    return jax.tree.map(lambda n, o: jnp.where(_bcast(mask, n), n, o), new, old)


def _vmap_runs(fn: Callable, in_axes: tuple) -> Callable:
    """``jax.vmap(fn, in_axes)``, except that a run axis of length 1 is squeezed away and added
    back: XLA's CPU matmuls with a batch dimension of 1 run ~10 % slower than plain GEMMs."""
    batched = jax.vmap(fn, in_axes=in_axes)

    def call(*args):
        sizes = {leaf.shape[0] for a, ax in zip(args, in_axes) if ax == 0 for leaf in jax.tree.leaves(a)}
        if sizes != {1}:
            return batched(*args)
        squeezed = [jax.tree.map(lambda x: x[0], a) if ax == 0 else a for a, ax in zip(args, in_axes)]
        return jax.tree.map(lambda x: x[None], fn(*squeezed))

    return call


def batched_fns(
    model: Model, spec: optimizers.OptimizerSpec, static: dict, c: float, plan: TrainPlan, axes: tuple
):
    """Batched (init, chunk, finish) over a leading run axis; ``axes`` gives the run axis (0) or
    None (shared by every run) for (consts, X, y). Hyperparameters in ``hyper`` are traced."""
    k = plan.record_every
    blocks_per_chunk = n_blocks(plan) // plan.chunks
    # numpy, made jax constants where used: these functions are traced inside jit only (``train_batch``)
    error_at = np.asarray(plan.error_at or (-1,), np.int32)
    snapshot_at = np.asarray(plan.snapshot_at or (-1,), np.int32)
    G = group_size(plan)
    careful = careful_groups(plan)
    # e at a group's first step comes out of that step (no forward pass of its own) when an error step
    # is a group edge; snapshots: no buffer, no cond without snapshot steps
    e_at_edges = any(0 <= s < plan.steps and s % (G * k) == 0 for s in plan.error_at)

    def tx_of(hyper):
        hyper = {key: v for key, v in hyper.items() if key not in (SAMPLE_KEY, TEST_KEY)}
        return optax.with_extra_args_support(optimizers.transformation(spec, {**hyper, **static}))

    reads_loss = spec.restart is not None and spec.restart.rule == "function"

    def loss_fn(p, consts, X, y):
        """(L, e): the model's loss (``models.loss_value``: (c/2)||u - y||^2 for the squared losses)
        and the error e = u - y, flattened row-major for k > 1 outputs (index i k + b)."""
        u = model.apply(p, consts, X)
        return loss_value(model.loss, c, u, y), (u - y).reshape(-1)

    def one_step(params, opt_state, hyper, consts, X, y, step):
        """The plain optax step of one run: (new params, new state, L, e, ||g||^2); L, e and g on the
        full training set. Mini-batch: the update uses the gradient of L_B = (c/2)(n/b) sum_{i in B}
        e_i^2 (expectation: the full gradient and loss), B = ``batch_indices`` of this run's key and
        step; the full-set L, e and ||g||^2 are evaluated only at the steps that record them (record
        and error steps). At the other steps L is the unbiased estimate L_B, which the divergence
        check reads (so a mini-batch step costs the batch, not the full set), e is 0 and ||g||^2 NaN;
        neither is recorded there. A function restart (``optimizers.Restart``, rule "function") reads
        the full-set L at every step, as in full-batch training."""
        if plan.batch_size is None:
            (L, e), g = jax.value_and_grad(loss_fn, has_aux=True)(params, consts, X, y)
            updates, new_opt = tx_of(hyper).update(g, opt_state, params, value=L)
            return optax.apply_updates(params, updates), new_opt, L, e, _sum_sq(g)
        n = y.shape[0]
        scale = n / plan.batch_size
        assert plan.sampling is not None  # a mini-batch plan names its sampling (config.validate)
        idx = batch_indices(hyper[SAMPLE_KEY], step, n, plan.batch_size, plan.sampling)
        (L_b, _), g_step = jax.value_and_grad(lambda p: loss_fn(p, consts, X[idx], y[idx]), has_aux=True)(
            params
        )
        g_step = jax.tree.map(lambda leaf: scale * leaf, g_step)
        L_b = scale * L_b

        def full(p):
            (L, e), g = jax.value_and_grad(loss_fn, has_aux=True)(p, consts, X, y)
            return L, e, _sum_sq(g)

        def estimate(p):
            return L_b, jnp.zeros_like(y).reshape(-1), jnp.full_like(L_b, jnp.nan)

        wanted = (step % plan.record_every == 0) | jnp.any(jnp.asarray(error_at) == step)
        if reads_loss:  # the function restart compares full-set losses at every step
            wanted = jnp.asarray(True)
        L, e, gn = jax.lax.cond(wanted, full, estimate, params)
        updates, new_opt = tx_of(hyper).update(g_step, opt_state, params, value=L)
        return optax.apply_updates(params, updates), new_opt, L, e, gn

    vstep = _vmap_runs(one_step, (0, 0, 0) + axes + (None,))
    vloss = _vmap_runs(jax.value_and_grad(loss_fn, has_aux=True), (0,) + axes)

    def held_out_loss(p, consts, hyper):
        """The loss on the run's held-out set (X_t, y_t) = hyper[TEST_KEY], the training loss's
        convention: (c_t/2)||f(X_t) - y_t||^2, c_t = ``models.loss_scale(model.loss, n_t)`` (any loss:
        ``models.loss_value`` with c_t)."""
        Xt, yt = hyper[TEST_KEY]
        return loss_value(model.loss, loss_scale(model.loss, yt.shape[0]), model.apply(p, consts, Xt), yt)

    vheld = _vmap_runs(held_out_loss, (0, axes[0], 0))

    def held_out_error(p, consts, hyper):
        """e_t = f(X_t) - y_t on the run's held-out set, flattened like the training error."""
        Xt, yt = hyper[TEST_KEY]
        return (model.apply(p, consts, Xt) - yt).reshape(-1)

    vheld_error = _vmap_runs(held_out_error, (0, axes[0], 0))

    def held_out_at(k_abs, p, consts, hyper, one_run: bool) -> tuple:
        """(held-out loss,) at a recorded step (k_abs % record_every == 0; NaN at the others, which
        are dropped), evaluated only there; () without a held-out set (nothing is added)."""
        if TEST_KEY not in hyper:
            return ()
        fn = held_out_loss if one_run else vheld
        if k == 1:
            return (fn(p, consts, hyper),)
        yt = hyper[TEST_KEY][1]
        skip = jnp.full(yt.shape[: yt.ndim - (1 if model.outputs == 1 else 2)], jnp.nan, yt.dtype)
        return (jax.lax.cond(k_abs % k == 0, lambda q: fn(q, consts, hyper), lambda q: skip, p),)

    def is_bad(L, limit):
        return ~jnp.isfinite(L) | (L > limit)

    def limit_at(k_abs, L, limit):
        """divergence_factor * L_0, set from the loss of step 0 (the state starts with +inf)."""
        return jnp.where(k_abs == 0, plan.divergence_factor * L, limit)

    def take_snapshot(k_abs, params, snaps):
        """The parameters into the snapshot slot of step k_abs, if k_abs is a snapshot step."""
        if not plan.snapshot_at:
            return snaps
        hit = jnp.asarray(snapshot_at) == k_abs
        return jax.lax.cond(
            jnp.any(hit),
            lambda sn: jax.tree.map(lambda buf, leaf: buf.at[:, jnp.argmax(hit)].set(leaf), sn, params),
            lambda sn: sn,
            snaps,
        )

    def record(k_abs, live, e, params, errors, snaps, test_errors, consts, hyper):
        """Errors (and, with a held-out set, the held-out errors, evaluated at error steps only) and a
        parameter snapshot at step k_abs (a scalar, not per run); e None: no error step."""
        if e is not None:
            hit = jnp.asarray(error_at) == k_abs
            hit_e = hit[None, :, None] & live[:, None, None]
            errors = jnp.where(hit_e, e[:, None, :], errors)
            if TEST_KEY in hyper:
                test_errors = jax.lax.cond(
                    jnp.any(hit),
                    lambda te: jnp.where(hit_e, vheld_error(params, consts, hyper)[:, None, :], te),
                    lambda te: te,
                    test_errors,
                )
        return errors, take_snapshot(k_abs, params, snaps), test_errors

    def careful_group(state: TrainState, g, hyper, consts, X, y):
        """The G * k steps of group g with per-step divergence checks, freezes and recording (the
        rare path: a group holding a divergence, or an error/snapshot step between its edges)."""

        def step(st: TrainState, k_abs):
            live = st.diverged_at < 0
            held = held_out_at(k_abs, st.params, consts, hyper, False)
            p, o, L, e, gn = vstep(st.params, st.opt_state, hyper, consts, X, y, k_abs)
            errors, snaps, t_err = record(
                k_abs, live, e, st.params, st.errors, st.snapshots, st.test_errors, consts, hyper
            )
            limit = limit_at(k_abs, L, st.limit)
            bad = live & is_bad(L, limit)
            move = live & ~bad
            new = TrainState(
                _select(move, p, st.params),
                _select(move, o, st.opt_state),
                jnp.where(bad, k_abs, st.diverged_at),
                errors,
                t_err,
                snaps,
                limit,
            )
            return new, tuple(jnp.where(live, v, jnp.nan) for v in (L, gn, *held))

        state, recs = jax.lax.scan(step, state, g * G * k + jnp.arange(G * k, dtype=jnp.int32))
        return state, tuple(r[::k] for r in recs)  # (G, R): the first step of each record block

    def fast_group(state: TrainState, g, hyper, consts, X, y):
        """The G * k steps of group g as one plain scan of the step (one step body in the program), the
        loss and ||g||^2 kept at each record block's first step; a run going bad anywhere in the group
        sends the group to ``careful_group``."""
        live = state.diverged_at < 0
        s0 = g * G * k
        # one run: the loop carries the run's own arrays (no run axis). A carry of shape (1, ...)
        # squeezed inside every step costs two copies of the parameters per step in XLA CPU, and a
        # vmap over one run a batched matmul; both measured slower than the plain scan.
        one = state.diverged_at.shape[0] == 1
        sq = (lambda t: jax.tree.map(lambda x: x[0], t)) if one else (lambda t: t)
        ex = (lambda t: jax.tree.map(lambda x: x[None], t)) if one else (lambda t: t)
        data = [sq(a) if ax == 0 else a for a, ax in zip((consts, X, y), axes)]
        step_fn = one_step if one else vstep
        hyper_c, limit = sq(hyper), sq(state.limit)

        def step(carry, i):  # i: step within the group; the loop body is the plain step
            p, o = carry
            held = held_out_at(s0 + i, p, data[0], hyper_c, one)
            p, o, L, e, gn = step_fn(p, o, hyper_c, *data, s0 + i)
            return (p, o), (L, gn, e if e_at_edges else None, held)

        (p, o), (Ls, gns, es, held) = jax.lax.scan(
            step, (sq(state.params), sq(state.opt_state)), jnp.arange(G * k, dtype=jnp.int32)
        )
        limit = limit_at(s0, Ls[0], limit)
        any_bad = jnp.any(is_bad(Ls, limit), axis=0)  # every step's loss, checked once after the loop
        e0 = None if es is None else ex(es[0])  # e at the group's first step (an error step or not)
        Ls, gns = Ls[::k], gns[::k]  # the first step of each record block (||g||^2 of the others is cheap)
        p, o, any_bad, limit = ex(p), ex(o), ex(any_bad), ex(limit)
        Ls, gns = ex(Ls.T).T, ex(gns.T).T  # (G, R)
        held = [ex(h[::k].T).T for h in held]  # the held-out loss, (G, R), when a held-out set is given

        def accept(_):
            new_p, new_o = jax.lax.cond(
                jnp.all(live),
                lambda: (p, o),
                lambda: (_select(live, p, state.params), _select(live, o, state.opt_state)),
            )
            errors, snaps, t_err = record(
                s0, live, e0, state.params, state.errors, state.snapshots, state.test_errors, consts, hyper
            )
            return (
                TrainState(new_p, new_o, state.diverged_at, errors, t_err, snaps, limit),
                tuple(jnp.where(live, v, jnp.nan) for v in (Ls, gns, *held)),
            )

        newly_bad = jnp.any(live & any_bad)
        return jax.lax.cond(newly_bad, lambda _: careful_group(state, g, hyper, consts, X, y), accept, None)

    def init(hyper, params, consts, X, y) -> TrainState:
        """The state before step 0 (no model evaluation: the divergence limit is set at step 0)."""
        (L0, _), _ = jax.eval_shape(vloss, params, consts, X, y)  # shapes and dtype only
        opt_state = jax.vmap(lambda h, p: tx_of(h).init(p))(hyper, params)
        R = L0.shape[0]
        # points x outputs (the error is flattened, ``loss_fn``); y is (n[, k]) or stacked per run
        n = y.shape[-1] if model.outputs == 1 else y.shape[-2] * model.outputs
        errors = jnp.full((R, error_at.shape[0], n), jnp.nan, L0.dtype)  # NaN: step never reached
        n_t = 0
        if TEST_KEY in hyper:  # the held-out outputs (n_t[, k]) flattened like the training error
            n_t = int(np.prod(hyper[TEST_KEY][1].shape[1:]))
        test_errors = jnp.full((R, error_at.shape[0] if n_t else 0, n_t), jnp.nan, L0.dtype)
        slots = len(plan.snapshot_at)
        snaps = jax.tree.map(lambda x: jnp.zeros((x.shape[0], slots) + x.shape[1:], x.dtype), params)
        limit = jnp.full((R,), jnp.inf, L0.dtype)
        return TrainState(params, opt_state, jnp.full((R,), -1, jnp.int32), errors, test_errors, snaps, limit)

    def chunk(state: TrainState, hyper, consts, X, y, first_block):
        def group(st, g):
            return jax.lax.cond(
                jnp.asarray(careful)[g], careful_group, fast_group, st, g, hyper, consts, X, y
            )

        groups = first_block // G + jnp.arange(blocks_per_chunk // G, dtype=jnp.int32)
        state, recs = jax.lax.scan(group, state, groups)  # loss, ||g||^2[, held-out loss]: (groups, G, R)
        flat = lambda a: a.reshape(blocks_per_chunk, -1).T  # (R, blocks_per_chunk)
        return (state, *(flat(r) for r in recs))

    def finish(state: TrainState, hyper, consts, X, y):
        (L, e), g = vloss(state.params, consts, X, y)
        gn = jax.vmap(_sum_sq)(g)
        live = state.diverged_at < 0
        errors, snaps, t_err = record(
            plan.steps, live, e, state.params, state.errors, state.snapshots, state.test_errors, consts, hyper
        )
        bad = live & is_bad(L, state.limit)
        held = held_out_at(plan.steps, state.params, consts, hyper, False)
        return (
            jnp.where(live, L, jnp.nan),
            jnp.where(live, gn, jnp.nan),
            jnp.where(bad, plan.steps, state.diverged_at),
            errors,
            t_err,
            snaps,
            *(jnp.where(live, h, jnp.nan) for h in held),
        )

    return init, chunk, finish


def _compiled(key, fn: Callable, *args, **jit_kwargs):
    if key not in _CACHE:
        _CACHE[key] = jax.jit(fn, **jit_kwargs).lower(*args).compile()
        COMPILE_COUNT["n"] += 1
    return _CACHE[key]


def train_batch(
    model: Model,
    spec: optimizers.OptimizerSpec,
    hypers: list[dict],
    c: float,
    plan: TrainPlan,
    params: list,
    consts: list,
    X: list,
    y: list,
    progress: Callable[[int, float], None] | None = None,
    keys: list | None = None,
    test: list[tuple] | None = None,
) -> list[TrainResult]:
    """Train R runs of the same shapes as one vmapped, sharded program; one TrainResult per run.

    ``hypers[i]`` holds run i's numeric hyperparameters (non-numeric ones, e.g. optax kwargs
    like nesterov=True, must be equal across runs and are compiled in). ``progress(step, eta_s)``
    is called after every chunk. ``keys[i]``: run i's sampling key (``jax.random.PRNGKey``), needed
    when ``plan.batch_size`` is set; an input per run, so runs with different keys are one program.
    ``test[i]``: run i's held-out set (X_t, y_t) or None for all; its loss (``TrainResult.test_loss``)
    is then evaluated at the recorded steps only (the compiled program has no held-out work without it).
    """
    if plan.batch_size is not None and (keys is None or len(keys) != len(hypers)):
        raise ValueError(f"mini-batch training (batch_size={plan.batch_size}) needs one sampling key per run")
    R = len(hypers)
    dtype = X[0].dtype
    numeric_keys = [k for k, v in hypers[0].items() if isinstance(v, float | int) and not isinstance(v, bool)]
    static = {k: v for k, v in hypers[0].items() if k not in numeric_keys}
    mesh = run_mesh()
    n_dev = mesh.devices.size
    R_pad = -(-R // n_dev) * n_dev  # pad with copies of the last run so the run axis divides evenly
    pick = list(range(R)) + [R - 1] * (R_pad - R)
    sharding = NamedSharding(mesh, PartitionSpec("runs"))
    replicated = NamedSharding(mesh, PartitionSpec())
    stack = lambda trees: _put(
        jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *[trees[i] for i in pick]), sharding
    )
    h = stack(
        [
            {
                **{k: np.asarray(hp[k], dtype) for k in numeric_keys},
                **({SAMPLE_KEY: np.asarray(keys[i], np.uint32)} if plan.batch_size is not None else {}),
                **({TEST_KEY: tuple(np.asarray(a, dtype) for a in test[i])} if test is not None else {}),
            }
            for i, hp in enumerate(hypers)
        ]
    )
    p = stack(params)
    # Inputs equal in every run (data of one seed, fixed output signs) are passed once, not
    # stacked: the batched matmuls then become one wide GEMM, X @ [W_1; ...; W_R]^T.
    shared = [_all_equal(trees) for trees in (consts, X, y)]
    cs, Xb, yb = (
        _put(trees[0], replicated) if same else stack(trees) for trees, same in zip((consts, X, y), shared)
    )
    axes = tuple(None if same else 0 for same in shared)
    built: list = []  # batched_fns runs only when a program is compiled (a cache hit skips its ~2 ms)

    def lazy(i: int) -> Callable:
        def fn(*args):
            if not built:
                built.append(batched_fns(model, spec, static, c, plan, axes))
            return built[0][i](*args)

        return fn

    init, chunk, finish = lazy(0), lazy(1), lazy(2)
    data_shardings = tuple(replicated if same else sharding for same in shared)

    key = (
        model.name,
        id(model.apply),
        model.loss,  # the loss is compiled in (``loss_fn``)
        spec.name,
        c,
        plan,
        tuple(sorted(static.items())),
        n_dev,
        _shape_key((h, p, cs, Xb, yb)),
        tuple(shared),
    )
    t0 = time.perf_counter()
    f_init = _compiled(
        key + ("init",),
        init,
        h,
        p,
        cs,
        Xb,
        yb,
        in_shardings=(sharding, sharding) + data_shardings,
        out_shardings=sharding,
    )
    state = f_init(h, p, cs, Xb, yb)
    b0 = jnp.asarray(0, jnp.int32)
    f_chunk = _compiled(
        key + ("chunk",),
        chunk,
        state,
        h,
        cs,
        Xb,
        yb,
        b0,
        donate_argnums=0,
        in_shardings=(sharding, sharding) + data_shardings + (replicated,),
        out_shardings=sharding,
    )
    f_finish = _compiled(
        key + ("finish",),
        finish,
        state,
        h,
        cs,
        Xb,
        yb,
        in_shardings=(sharding, sharding) + data_shardings,
        out_shardings=sharding,
    )
    t1 = time.perf_counter()
    blocks_per_chunk = n_blocks(plan) // plan.chunks
    losses, gnorms, helds = [], [], []
    for i in range(plan.chunks):
        state, chunk_losses, chunk_gn, *chunk_held = f_chunk(
            state, h, cs, Xb, yb, jnp.asarray(i * blocks_per_chunk, jnp.int32)
        )
        losses.append(chunk_losses)
        gnorms.append(chunk_gn)
        helds += chunk_held
        if progress is not None:
            jax.block_until_ready(chunk_losses)
            done = (i + 1) / plan.chunks
            elapsed = time.perf_counter() - t1
            progress((i + 1) * blocks_per_chunk * plan.record_every, elapsed * (1 - done) / done)
    out = jax.block_until_ready(f_finish(state, h, cs, Xb, yb))
    t2 = time.perf_counter()
    (L_end, gn_end, div_at, errors, t_errors, snaps, *held_end), final, losses, gnorms, helds = _to_host(
        (out, state.params, losses, gnorms, helds)
    )
    held = (
        np.concatenate(
            [np.asarray(x, np.float64) for x in helds] + [np.asarray(held_end[0])[:, None]], axis=1
        )
        if held_end
        else None
    )
    loss = np.concatenate(
        [np.asarray(x, np.float64) for x in losses] + [np.asarray(L_end, np.float64)[:, None]], axis=1
    )
    gnorm = np.concatenate(
        [np.asarray(x, np.float64) for x in gnorms] + [np.asarray(gn_end, np.float64)[:, None]], axis=1
    )
    steps = np.arange(0, plan.steps + 1, plan.record_every)
    return [
        TrainResult(
            step=steps,
            loss=loss[i],
            diverged_at=None if div_at[i] < 0 else int(div_at[i]),
            error_at=np.asarray(plan.error_at, int),
            errors=errors[i, : len(plan.error_at)],
            snapshot_at=np.asarray(plan.snapshot_at, int),
            snapshots=jax.tree.map(lambda s, i=i: s[i, : len(plan.snapshot_at)], snaps),
            final_params=jax.tree.map(lambda s, i=i: s[i], final),
            compile_s=(t1 - t0) / R,
            run_s=(t2 - t1) / R,
            grad_norm_sq=gnorm[i],
            test_loss=None if held is None else held[i],
            test_errors=t_errors[i, : len(plan.error_at)] if t_errors.shape[-1] else None,
        )
        for i in range(R)
    ]


def train(
    model: Model,
    spec: optimizers.OptimizerSpec,
    hyper: dict,
    c: float,
    plan: TrainPlan,
    params,
    consts,
    X,
    y,
    progress=None,
    key=None,
    test: tuple | None = None,
) -> TrainResult:
    """One run (``train_batch`` with a single run; ``key``: its sampling key for mini-batch plans;
    ``test``: its held-out set (X_t, y_t) or None)."""
    return train_batch(
        model,
        spec,
        [hyper],
        c,
        plan,
        [params],
        [consts],
        [X],
        [y],
        progress,
        None if key is None else [key],
        None if test is None else [test],
    )[0]


def progress_printer(
    label: str, total_steps: int, runs: int, stream=sys.stderr
) -> Callable[[int, float], None]:
    """A progress line 'label: runs R, step k/T (p%), ETA s' rewritten in place on a terminal."""
    tty = stream.isatty()

    def show(step: int, eta_s: float) -> None:
        pct = 100 * step / total_steps
        line = f"  {label}: {runs} run(s), step {step}/{total_steps} ({pct:.0f}%), ETA {eta_s:.1f} s"
        stream.write(("\r" + line) if tty else (line + "\n"))
        if tty and step >= total_steps:
            stream.write("\n")
        stream.flush()

    return show
