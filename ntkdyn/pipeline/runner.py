"""Runs into a results folder (what ``python -m ntkdyn.run`` does): a single run or a sweep's
shape group, through the one run path (``entry.evaluate_group``: train a group of runs of equal
shapes as one program, then evaluate each) and the one folder writer (``folder``). The command line
(``ntkdyn.run``) parses, prints and chooses exit codes. Messages go through ``say`` (progress) and
``warn`` (failures) so that the caller decides where they are printed.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence

from ntkdyn import config as config_mod
from ntkdyn import results, train
from ntkdyn.pipeline import entry, evaluate, folder
from ntkdyn.pipeline import setup as setup_mod
from ntkdyn.pipeline.setup import Setup

Say = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class SingleRun:
    """A finished single run: its typed result, its prepared setup (for the control view) and
    whether any optimizer failed."""

    run: results.RunResult
    setup: Setup
    failed: bool

    @property
    def trajectories(self) -> dict[str, dict]:
        """label -> trajectory arrays of the optimizers that did not fail."""
        return {label: dict(o.trajectory) for label, o in self.run.optimizers.items() if o.status != "failed"}


def single_run(
    cfg: config_mod.Config,
    out: str,
    env: dict,
    say: Say,
    warn: Say,
    progress: bool = True,
    overwrite: bool = False,
) -> SingleRun:
    """A single run into folder ``out``: the folder is claimed (``folder.claim_run_folder``: a
    non-empty folder only with ``overwrite``), the run prepared (``setup.prepare``: bad input raises
    ValueError before anything is written), then each optimizer trained and evaluated
    (``entry.evaluate_group`` on a group of one), writing the folder as each stage finishes
    (``folder.write_run_inputs`` and env.json after the kernels, ``write_run_outputs`` after each
    optimizer): a later failure loses nothing written.
    An optimizer that raises is recorded as failed and the others still run.

    Args:
        cfg: validated config; out: the run folder; env: env.json content, updated with stage times.
        say, warn: where progress and failures are printed; progress: per-chunk progress lines.
    Returns:
        ``SingleRun``: the typed run (env and folder set), its setup and whether an optimizer failed.
    """
    folder.claim_run_folder(out, overwrite=overwrite)
    say(f"ntkdyn: {cfg.name} -> {out} ({env['device']['platform']}, {cfg.dtype})")
    setup = setup_mod.prepare(cfg)
    folder.make_run_folder(out)
    env["times_s"].update(setup.times)
    opts: dict[str, results.OptimizerResult] = {}
    folder.write_run_inputs(out, evaluate.run_result(cfg, setup, opts, env=env), config_mod.dump(cfg))
    folder.write_env(out, env)
    lam = setup.lam
    say(
        f"  n={setup.X.shape[0]} d={setup.X.shape[1]}  K = {setup.c:g} * {cfg.theory.kernel}: "
        f"lambda_min={lam[0]:.4g} lambda_max={lam[-1]:.4g}"
    )
    failed = False
    for i, oc in enumerate(cfg.optimizers):
        assert oc.label is not None  # validate fills it
        t = time.perf_counter()
        try:
            printer = train.progress_printer(oc.label, cfg.train.steps, 1) if progress else None
            (ev,) = entry.evaluate_group([cfg], [setup], i, printer)
        except Exception as exc:  # noqa: BLE001 - one optimizer failing must not lose the others
            failed = True
            opts[oc.label] = evaluate.failed_result(oc, exc)
            warn(f"ntkdyn: optimizer {oc.label} failed: {type(exc).__name__}: {exc}")
            continue
        opts[oc.label] = ev.result
        times = env["times_s"][oc.label] = {**ev.times, "total_s": time.perf_counter() - t}
        folder.write_run_outputs(out, evaluate.run_result(cfg, setup, opts))
        say(
            f"  {oc.label}: {ev.result.status}, {ev.result.verdict} "
            f"(train {times['train_run_s']:.2f} s + compile {times['train_compile_s']:.2f} s)"
        )
    run = evaluate.run_result(cfg, setup, opts, env=env, run_id=cfg.name)
    folder.write_run_outputs(out, dataclasses.replace(run, env={}))
    return SingleRun(dataclasses.replace(run, folder=out), setup, failed)


@dataclasses.dataclass(frozen=True)
class SweepOutcome:
    """A finished sweep: its summary.csv rows (``results.SweepRow.to_json`` of every run and
    optimizer, grid order), whether anything failed, and the number of compilations."""

    rows: list[dict]
    failed: bool
    compiles: int


def summary_rows(run_id: str, values: dict, metrics: dict) -> list[dict]:
    """One summary.csv row per optimizer of a run (``results.SweepRow``: the swept values, the
    spectrum, then ``results.SUMMARY_COLUMNS`` and the deviations), from its metrics.json mapping."""
    run = results.RunResult.from_json(metrics)
    return [
        results.SweepRow.from_result(run_id, values, run.spectrum, o).to_json()
        for o in run.optimizers.values()
    ]


def sweep(
    raw: dict,
    points: Sequence,
    out: str,
    env: dict,
    writer: bool,
    say: Say,
    warn: Say,
    progress: bool = True,
    overwrite: bool = False,
) -> SweepOutcome:
    """Every grid point of a sweep into ``out``: finished runs of the same config are kept
    (``folder.finished_runs``; a different config is a ``folder.FolderError`` unless ``overwrite``),
    the others run by shape group (``sweep_group``); then summary.csv. Only the ``writer`` process
    writes. Layout: OUT/config.yaml (the sweep), OUT/summary.csv, OUT/runs/<run_id>/ (run folders)."""
    import yaml

    from ntkdyn import sweep as sweep_mod

    finished = folder.finished_runs(out, points, overwrite=overwrite, writer=writer)
    if writer:
        folder.start_sweep(out, yaml.safe_dump(raw, sort_keys=False))
    groups = sweep_mod.group_by_shape(list(points))
    say(
        f"ntkdyn: sweep {raw.get('name', 'sweep')}: {len(points)} runs in {len(groups)} shape group(s) on "
        f"{env.get('devices_on_run_axis', 1)} device(s) -> {out}"
    )
    metrics: dict[str, dict] = {}
    failed = False
    compiles_before = train.COMPILE_COUNT["n"]
    for g, group in enumerate(groups):
        failed |= sweep_group(g + 1, group, out, env, writer, say, warn, progress, metrics, finished)
    rows = [
        row
        for run in points
        if run.run_id in metrics
        for row in summary_rows(run.run_id, run.values, metrics[run.run_id])
    ]
    if writer:
        folder.write_summary(out, rows)
    return SweepOutcome(rows, failed, train.COMPILE_COUNT["n"] - compiles_before)


def sweep_group(
    g: int,
    group: Sequence,
    out: str,
    env: dict,
    writer: bool,
    say: Say,
    warn: Say,
    progress: bool,
    metrics: dict[str, dict],
    finished: dict[str, dict] | None = None,
) -> bool:
    """Shape group ``g`` (1-based) of a sweep: runs in ``finished`` (run_id -> metrics.json of a
    finished run with the same config, ``folder.finished_runs``) are kept and skipped; the others
    are prepared, each optimizer trained for the whole group as one program and evaluated
    (``entry.evaluate_group``), and each run written by ``folder.write_run`` (by the ``writer``
    process only). Fills ``metrics``; returns whether an optimizer failed. Raises ValueError (bad
    input) from ``setup.prepare`` before any training."""
    finished = finished or {}
    todo = []
    for run in group:
        if run.run_id in finished:
            metrics[run.run_id] = finished[run.run_id]
        else:
            todo.append(run)
    if len(todo) < len(group):
        say(f"  group {g}: {len(group) - len(todo)} finished run(s) found, skipped")
    if not todo:
        return False
    t = time.perf_counter()
    setups = [setup_mod.prepare(run.cfg) for run in todo]
    env["times_s"][f"group{g}_prepare"] = time.perf_counter() - t
    cfgs = [run.cfg for run in todo]
    opts: list[dict[str, results.OptimizerResult]] = [{} for _ in todo]
    failed = False
    for i, oc in enumerate(cfgs[0].optimizers):
        t = time.perf_counter()
        printer = (
            train.progress_printer(f"group {g} {oc.label}", cfgs[0].train.steps, len(todo))
            if progress
            else None
        )
        try:
            evaluated = entry.evaluate_group(cfgs, setups, i, printer)
        except Exception as exc:  # noqa: BLE001 - keep the other optimizers and groups
            failed = True
            warn(f"ntkdyn: group {g} optimizer {oc.label} failed: {type(exc).__name__}: {exc}")
            for o in opts:
                o[oc.label] = evaluate.failed_result(oc, exc)
            continue
        theory_s = sum(ev.times["evaluate_s"] for ev in evaluated)
        env["times_s"][f"group{g}_{oc.label}_train"] = time.perf_counter() - t - theory_s
        env["times_s"][f"group{g}_{oc.label}_theory"] = theory_s
        for o, ev in zip(opts, evaluated):
            o[oc.label] = ev.result
    for run, setup, o in zip(todo, setups, opts):
        result = evaluate.run_result(run.cfg, setup, o, run_id=run.run_id)
        metrics[run.run_id] = result.to_json()
        if writer:
            folder.write_run(os.path.join(out, "runs", run.run_id), result, config_mod.dump(run.cfg))
    return failed
