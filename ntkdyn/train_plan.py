"""The training plan: how many steps, what is recorded when (``TrainPlan``), how mini-batches are drawn
(``batch_indices``), how the steps are cut into record blocks, chunks and groups (``n_blocks``,
``group_size``, ``careful_groups``), and what training returns (``TrainResult``). Used by
``ntkdyn.train``, which runs the plan."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class TrainPlan:
    steps: int
    record_every: int = 1
    error_at: tuple[int, ...] = ()
    snapshot_at: tuple[int, ...] = ()
    divergence_factor: float = 1e6
    chunks: int = 1  # the blocks are cut into this many equal compiled calls (progress, ETA)
    batch_size: int | None = None  # mini-batch size b (None: full batch); see ``batch_indices``
    sampling: str | None = "replacement"  # replacement | shuffle (``batch_indices``)


SAMPLE_KEY = "_sample_key"  # the run's sampling key (raw uint32 PRNG key) travels with its hyperparameters


TEST_KEY = "_held_out"  # the run's held-out set (X_t, y_t), when given, travels with its hyperparameters


def batch_indices(key: jax.Array, step: jax.Array, n: int, b: int, sampling: str) -> jax.Array:
    """The b training indices of update ``step`` (0-based) of one run, from its key, inside the
    compiled scan. ``replacement``: b i.i.d. uniform indices, keyed by fold_in(key, step);
    ``shuffle``: epoch step // (n // b) is a fresh permutation (fold_in(key, epoch)) cut into n // b
    batches of b (the last n mod b indices of each permutation are skipped: drop-last)."""
    if sampling == "replacement":
        return jax.random.randint(jax.random.fold_in(key, step), (b,), 0, n)
    per_epoch = n // b
    perm = jax.random.permutation(jax.random.fold_in(key, step // per_epoch), n)
    return jax.lax.dynamic_slice(perm, ((step % per_epoch) * b,), (b,))


@dataclasses.dataclass
class TrainResult:
    step: np.ndarray  # recorded steps
    loss: np.ndarray  # loss at those steps (NaN after divergence)
    diverged_at: int | None
    error_at: np.ndarray
    errors: np.ndarray  # (len(error_at), n); NaN at steps after divergence
    snapshot_at: np.ndarray
    snapshots: Any  # params pytree with a leading axis len(snapshot_at)
    final_params: Any
    compile_s: float
    run_s: float
    grad_norm_sq: np.ndarray  # ||grad_theta L||^2 at ``step`` (NaN after divergence, like ``loss``)
    loss_runs: np.ndarray | None = None  # (R, len(step)) when ``loss`` is the mean of R sampled runs
    test_loss: np.ndarray | None = None  # loss on the held-out set at ``step`` (NaN after divergence)
    # with a held-out set: e_t = f(X_t) - y_t at ``error_at`` (len(error_at), n_t[*k]); NaN after divergence
    test_errors: np.ndarray | None = None
    # train.sharpness_every: the steps and parameter snapshots the sharpness is computed at (None: off)
    sharpness_at: np.ndarray | None = None
    sharpness_snapshots: Any = None
    hyper: Any = None  # the resolved hyperparameters trained with (``optimizers.Resolved``, run path)
    # run path: the models the faces asked to be trained beside the network (face name -> its own
    # TrainResult: e.g. the linearisation, the quadratic model; ``training.train_runs(expansions=...)``)
    expansions: Mapping[str, TrainResult] = dataclasses.field(default_factory=dict)


def n_blocks(plan: TrainPlan) -> int:
    if plan.steps % plan.record_every:
        raise ValueError(
            f"train.steps={plan.steps} must be a multiple of train.record_every={plan.record_every}"
        )
    blocks = plan.steps // plan.record_every
    if blocks % plan.chunks:
        raise ValueError(f"{blocks} recorded blocks cannot be cut into {plan.chunks} equal chunks")
    return blocks


GROUP_STEPS = 64  # steps of one fast group at most (one divergence check each)


def group_size(plan: TrainPlan) -> int:
    """G record blocks per group: the groups are the unit of the fast path (one divergence check,
    one cond). G divides the blocks of a chunk, G * record_every <= GROUP_STEPS (or G = 1), and G is
    the largest such that every event step on a block edge is a group edge, unless that G is under
    a quarter of the largest allowed (then the few groups holding an event take the careful path)."""
    k, bpc = plan.record_every, n_blocks(plan) // plan.chunks
    allowed = [g for g in range(1, bpc + 1) if bpc % g == 0 and g * k <= max(GROUP_STEPS, k)]
    events = [s // k for s in set(plan.error_at) | set(plan.snapshot_at) if s % k == 0]
    aligned = [g for g in allowed if all(b % g == 0 for b in events)]
    return max(aligned) if 4 * max(aligned) >= max(allowed) else max(allowed)


def careful_groups(plan: TrainPlan) -> np.ndarray:
    """Bool per group: an ``error_at`` or ``snapshot_at`` step lies strictly inside the group."""
    span = plan.record_every * group_size(plan)
    inside = np.zeros(n_blocks(plan) // group_size(plan), bool)
    for s in set(plan.error_at) | set(plan.snapshot_at):
        if 0 <= s < plan.steps and s % span:
            inside[s // span] = True
    return inside
