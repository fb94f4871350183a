"""Training of the run path: one optimizer of a group of runs of equal shapes as ONE compiled,
batched program (``train.train_batch``), full batch or mini-batch (``train.sampling_runs`` batch
orders), and the Taylor models of the network the faces ask for (its linearisation, its quadratic
model) trained alike, in the same call (``train_runs(expansions=...)``). Returns
``train.TrainResult`` (the typed trajectory: recorded steps, losses, errors, snapshots).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from typing import cast

import jax
import jax.numpy as jnp
import numpy as np

from ntkdyn import linearized, models, optimizers, quadratic
from ntkdyn.config import Config, OptimizerConfig, resolve_eta
from ntkdyn.pipeline.setup import Setup, jax_dtype
from ntkdyn.train import TrainPlan, TrainResult, train_batch


def train_plan(cfg: Config, sharpness: bool = False) -> TrainPlan:
    """The run's ``TrainPlan``; with ``sharpness`` (the network's own training) the parameters are
    also snapshotted at the ``sharpness_steps`` (none unless train.sharpness_every is set)."""
    t = cfg.train
    assert t.error_at is not None and t.kernel_at is not None  # validate fills them
    snapshot_at = sorted(set(t.kernel_at) | set(sharpness_steps(cfg))) if sharpness else t.kernel_at
    return TrainPlan(
        t.steps,
        t.record_every,
        tuple(t.error_at),
        tuple(snapshot_at),
        t.divergence_factor,
        chunks=progress_chunks(t.steps // t.record_every),
        batch_size=t.batch_size,
        sampling=t.sampling,
    )


def sharpness_steps(cfg: Config) -> list[int]:
    """The steps train.sharpness_every = k records the sharpness at: 0, k, 2k, ... and train.steps
    (k is a multiple of train.record_every, so they are recorded steps); [] when it is null."""
    k, steps = cfg.train.sharpness_every, cfg.train.steps
    return [] if k is None else sorted(set(range(0, steps + 1, k)) | {steps})


def split_sharpness(cfg: Config, res: TrainResult) -> TrainResult:
    """``res`` of a plan with the sharpness steps (``train_plan(cfg, sharpness=True)``) as the kernel
    steps alone (snapshot_at = train.kernel_at, as without sharpness) with the sharpness steps' snapshots
    in ``sharpness_at`` / ``sharpness_snapshots``. Unchanged when train.sharpness_every is null."""
    wanted = sharpness_steps(cfg)
    if not wanted:
        return res
    at = [int(s) for s in res.snapshot_at]
    take = lambda steps: jax.tree.map(
        lambda a: a[np.asarray([at.index(s) for s in steps], int)], res.snapshots
    )  # noqa: E731
    kernel_at = list(cfg.train.kernel_at or ())
    return dataclasses.replace(
        res,
        snapshot_at=np.asarray(kernel_at, int),
        snapshots=take(kernel_at),
        sharpness_at=np.asarray(wanted, int),
        sharpness_snapshots=take(wanted),
    )


def progress_chunks(blocks: int, target: int = 10) -> int:
    """The divisor of ``blocks`` closest to ``target``: the scan runs as that many equal calls."""
    divisors = [c for c in range(1, blocks + 1) if blocks % c == 0]
    return min(divisors, key=lambda c: (abs(c - target), c))


class StabilityWarning(UserWarning):
    """eta lambda_max(K) exceeds the method's stability limit: the kernel-regime prediction diverges."""


def optimizer_hyper(setup: Setup, oc: OptimizerConfig) -> optimizers.Resolved:
    """Hyperparameters of ``oc`` with defaults filled; a step relative to the spectrum
    (``eta: {per_lambda_max: p}``) becomes the number p / lambda_max(K) (``config.resolve_eta``, with
    K = c H the kernel the predictions use); a spec with a ``tune(hyper, lam)`` hook (e.g.
    Polyak-tuned HB) sets them from the eigenvalues of K. The step size is decided here, once: the
    result's ``step`` (``schedules.Step``) says whether it is a number or a schedule. ``train_runs``
    resolves each run's once and hands it on with its ``TrainResult`` (``hyper``)."""
    hyper = oc.hyper()
    hyper["eta"] = resolve_eta(hyper["eta"], float(setup.lam[-1]))
    return optimizers.Resolved(optimizers.resolve_hyper(optimizers.get(oc.name), hyper, setup.lam))


def stability_warning(
    setup: Setup, oc: OptimizerConfig, hyper: optimizers.Resolved | None = None
) -> str | None:
    """A warning, before training, when eta lambda_max(K) exceeds the method's stability limit
    (``optimizers.largest_stable_step``): the kernel-regime prediction then diverges (training may or may not:
    past the kernel regime a network can catapult). None when the step is stable or has no limit.
    ``hyper``: ``oc``'s resolved hyperparameters (default ``optimizer_hyper``)."""
    spec = optimizers.get(oc.name)
    if not models.is_squared(setup.model.loss):  # the limit is the squared loss's (K = c H)
        return None
    try:
        hyper = optimizer_hyper(setup, oc) if hyper is None else hyper
        limit = optimizers.largest_stable_step(spec, hyper)
    except (TypeError, ValueError, KeyError):
        return None
    if limit is None:
        return None
    h = float(hyper["eta"]) * float(setup.lam[-1])
    if h <= limit * (1 + 1e-9):
        return None
    return (
        f"optimizer {oc.label}: eta * lambda_max(K) = {h:.4g} exceeds {oc.name}'s stability limit "
        f"{limit:.4g}: the kernel-regime prediction diverges (training may leave the kernel regime)"
    )


def train_runs(
    cfgs: list[Config],
    setups: list[Setup],
    index: int,
    progress=None,
    expansions: Sequence[Mapping[str, models.Model]] | None = None,
) -> list[TrainResult]:
    """Train optimizer ``index`` of every run (same shapes) as one batched program: each run's
    hyperparameters resolved once (``optimizer_hyper``; a ``StabilityWarning`` where the step is past
    the method's stability limit), and handed on with its ``TrainResult`` (``hyper``).

    ``expansions``: per run, the models the theory faces need trained beside the network (face
    name -> a Taylor model of the network at theta_0, e.g. ``linearized.linearize(setup.model)``;
    ``faces.expansions`` asks the faces), each trained after the network by ``train_expansion``
    with the run's resolved hyperparameters, plan and batches; returned in the run's
    ``TrainResult.expansions`` under the same names. Training is the only stage that trains: the
    faces read these results, they do not train."""
    wanted: list[Mapping[str, models.Model]] = [{}] * len(cfgs) if expansions is None else list(expansions)
    if len(wanted) != len(cfgs):
        raise ValueError(f"train_runs: {len(cfgs)} runs need as many expansions (got {len(wanted)})")
    hypers = [optimizer_hyper(s, c.optimizers[index]) for c, s in zip(cfgs, setups)]
    for cfg, setup, hyper in zip(cfgs, setups, hypers):
        text = stability_warning(setup, cfg.optimizers[index], hyper)
        if text is not None:
            warnings.warn(text, StabilityWarning, stacklevel=3)
    trained = _train_runs(cfgs, setups, index, hypers, progress)
    spec = optimizers.get(cfgs[0].optimizers[index].name)
    return [
        dataclasses.replace(
            res,
            hyper=hyper,
            expansions={
                # no face reads a Taylor model's parameter snapshots: dropped, so that a group's runs
                # do not hold them until evaluation
                name: dataclasses.replace(
                    train_expansion(cfg, setup, spec, hyper, model),
                    hyper=hyper,
                    snapshots=None,
                    sharpness_snapshots=None,
                )
                for name, model in asked.items()
            },
        )
        for cfg, setup, res, hyper, asked in zip(cfgs, setups, trained, hypers, wanted)
    ]


def _train_runs(
    cfgs: list[Config], setups: list[Setup], index: int, hypers: list[optimizers.Resolved], progress=None
) -> list[TrainResult]:
    cfg = cfgs[0]
    spec = optimizers.get(cfg.optimizers[index].name)
    dtype = jax_dtype(cfg)
    scheduled = [h["eta"] for h in hypers if h.step.scheduled]
    plain: list[dict] = [*hypers]
    if scheduled and (len(scheduled) < len(hypers) or len(set(scheduled)) > 1):  # a schedule is compiled in
        raise ValueError(
            "runs with different step-size schedules cannot train as one program; run them separately"
        )
    if cfg.train.batch_size is None:
        trained = train_batch(
            setups[0].model,
            spec,
            plain,
            setups[0].c,
            train_plan(cfg, sharpness=True),
            [s.params for s in setups],
            [s.consts for s in setups],
            [jnp.asarray(s.X, dtype) for s in setups],
            [jnp.asarray(s.y, dtype) for s in setups],
            progress,
            test=held_out_sets(setups),
        )
    else:
        trained = train_sampled(
            setups[0].model,
            spec,
            cfgs,
            setups,
            plain,
            [(s.params, s.consts) for s in setups],
            progress,
            sharpness=True,
        )
    return [split_sharpness(c, r) for c, r in zip(cfgs, trained)]


def held_out_sets(setups: list[Setup]) -> list[tuple] | None:
    """Per run its held-out set (X_test, y_test) for ``train.train_batch``, or None when the runs have
    none; runs of one group either all have one (of equal shapes) or none."""
    given = [s.X_test is not None for s in setups]
    if not any(given):
        return None
    if not all(given):
        raise ValueError("runs trained as one program must all have a held-out set, or none")
    return [(s.X_test, s.y_test) for s in setups]


def sampling_keys(cfg: Config) -> list:
    """The sampling keys of run ``cfg``: fold_in(fold_in(PRNGKey(seed), 0x5EED), i), i < train.sampling_runs
    (a stream apart from the initialisation, which uses PRNGKey(seed) itself)."""
    base = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 0x5EED)
    return [jax.random.fold_in(base, i) for i in range(cfg.train.sampling_runs)]


def train_sampled(
    model: models.Model,
    spec: optimizers.OptimizerSpec,
    cfgs: list[Config],
    setups: list[Setup],
    hypers: list[dict],
    inits: list[tuple],
    progress=None,
    sharpness: bool = False,
) -> list[TrainResult]:
    """Mini-batch training of every config with its ``train.sampling_runs`` batch orders as ONE
    program (runs x orders); per config one TrainResult whose ``loss`` (and gradient norm, errors)
    is the mean over its orders, ``loss_runs`` the orders' losses, ``diverged_at`` the earliest
    divergence; snapshots and final parameters are those of the first order. ``inits[i]`` =
    (params, consts) of config i (the network's, or its linearisation's); ``sharpness``: snapshot the
    sharpness steps too (``train_plan``)."""
    dtype = jax_dtype(cfgs[0])
    R = cfgs[0].train.sampling_runs
    rep = lambda items: [x for x in items for _ in range(R)]
    keys = [k for c in cfgs for k in sampling_keys(c)]
    flat = train_batch(
        model,
        spec,
        rep(hypers),
        setups[0].c,
        train_plan(cfgs[0], sharpness),
        rep([p for p, _ in inits]),
        rep([c for _, c in inits]),
        rep([jnp.asarray(s.X, dtype) for s in setups]),
        rep([jnp.asarray(s.y, dtype) for s in setups]),
        progress,
        keys=keys,
        test=None if held_out_sets(setups) is None else rep(held_out_sets(setups)),
    )
    return [mean_result(flat[i * R : (i + 1) * R]) for i in range(len(cfgs))]


def mean_result(results: list[TrainResult]) -> TrainResult:
    """One TrainResult for R sampled runs of one config (``train_sampled``)."""
    runs = np.stack([r.loss for r in results])
    div = [r.diverged_at for r in results if r.diverged_at is not None]
    return dataclasses.replace(
        results[0],
        loss=runs.mean(0),
        loss_runs=runs,
        grad_norm_sq=np.stack([r.grad_norm_sq for r in results]).mean(0),
        errors=np.stack([r.errors for r in results]).mean(0),
        test_errors=(
            None
            if results[0].test_errors is None
            else np.stack([cast(np.ndarray, r.test_errors) for r in results]).mean(0)
        ),
        test_loss=(
            None
            if results[0].test_loss is None
            else np.stack([cast(np.ndarray, r.test_loss) for r in results]).mean(0)
        ),
        diverged_at=min(div) if div else None,
        compile_s=sum(r.compile_s for r in results),
        run_s=sum(r.run_s for r in results),
    )


def train_linearized(cfg: Config, setup: Setup, spec: optimizers.OptimizerSpec, hyper: dict) -> TrainResult:
    """The network's linearisation at theta_0 (``linearized.linearize``) trained by the same
    training path, optimizer, schedule, plan and (for mini-batch runs) the same batches."""
    return train_expansion(cfg, setup, spec, hyper, linearized.linearize(setup.model))


def train_quadratic(cfg: Config, setup: Setup, spec: optimizers.OptimizerSpec, hyper: dict) -> TrainResult:
    """The network's second-order Taylor model at theta_0 (``quadratic.quadratize``: nested jvps, no
    Hessian materialised) trained by the same training path, optimizer, schedule, plan and batches."""
    return train_expansion(cfg, setup, spec, hyper, quadratic.quadratize(setup.model))


def train_expansion(
    cfg: Config, setup: Setup, spec: optimizers.OptimizerSpec, hyper: dict, model: models.Model
) -> TrainResult:
    """A Taylor model of the network at theta_0 (the expansion point travels in its consts:
    ``linearized.linear_consts``) trained like the network: same optimizer, plan and batches."""
    dtype = jax_dtype(cfg)
    consts = linearized.linear_consts(setup.params, setup.consts)
    if cfg.train.batch_size is not None:
        return train_sampled(model, spec, [cfg], [setup], [hyper], [(setup.params, consts)])[0]
    return train_batch(
        model,
        spec,
        [hyper],
        setup.c,
        train_plan(cfg),
        [setup.params],
        [consts],
        [jnp.asarray(setup.X, dtype)],
        [jnp.asarray(setup.y, dtype)],
        test=held_out_sets([setup]),
    )[0]
