"""Runs into a results folder (what ``python -m ntkdyn.run`` does): a single run or a sweep's
shape group, down the run path once: the folder claimed (``claim``), the runs prepared
(``setup``), their stages computed (``entry.stages``: train a group of runs of equal shapes as one
program, then evaluate each) and written as they come by the one folder writer (``folder``). The command line
(``ntkdyn.run``) parses, prints and chooses exit codes. Messages go through ``say`` (progress) and
``warn`` (failures) so that the caller decides where they are printed.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence

from ntkdyn import config as config_mod
from ntkdyn import results, train
from ntkdyn.pipeline import claim, entry, folder
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
    """A single run into folder ``out``, down the run path once: the folder is claimed
    (``claim.claim_run_folder``: a non-empty folder only with ``overwrite``), the run prepared
    (``setup.prepare``: bad input raises ValueError before anything is written), then its stages
    (``entry.stages``: the inputs, then each optimizer trained and evaluated) written as each
    finishes (``folder.write_progress``: config.yaml, data.npz, kernels.npz and env.json, then
    trajectories.npz and metrics.json after each optimizer): a later failure loses nothing written.
    An optimizer that raises is recorded as failed and the others still run.

    Args:
        cfg: validated config; out: the run folder; env: env.json content, updated with stage times.
        say, warn: where progress and failures are printed; progress: per-chunk progress lines.
    Returns:
        ``SingleRun``: the typed run (env and folder set), its setup and whether an optimizer failed.
    """
    claim.claim_run_folder(out, overwrite=overwrite)
    say(f"ntkdyn: {cfg.name} -> {out} ({env['device']['platform']}, {cfg.dtype})")
    setup = setup_mod.prepare(cfg)
    env["times_s"].update(setup.times)
    printer = (lambda label: train.progress_printer(label, cfg.train.steps, 1)) if progress else None
    config_text = config_mod.dump(cfg)
    failed = False
    for stage in entry.stages([cfg], [setup], [cfg.name], printer):
        (run,) = stage.runs
        if stage.label is None:  # the inputs, before training
            run = dataclasses.replace(run, env=env)
            lam = setup.lam
            say(
                f"  n={setup.X.shape[0]} d={setup.X.shape[1]}  K = {setup.c:g} * {cfg.theory.kernel}: "
                f"lambda_min={lam[0]:.4g} lambda_max={lam[-1]:.4g}"
            )
        elif stage.error is not None:
            failed = True
            warn(f"ntkdyn: optimizer {stage.label} failed: {type(stage.error).__name__}: {stage.error}")
        else:
            ((ev,),) = (stage.evaluated,)
            times = env["times_s"][stage.label] = {**ev.times, "total_s": stage.seconds}
            say(
                f"  {stage.label}: {ev.result.status}, {ev.result.verdict} "
                f"(train {times['train_run_s']:.2f} s + compile {times['train_compile_s']:.2f} s)"
            )
        folder.write_progress(out, run, config_text)
    return SingleRun(dataclasses.replace(run, env=env, folder=out), setup, failed)


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
    """Every grid point of a sweep into ``out``, down the run path once: finished runs of the same
    config are kept (``claim.finished_runs``; a different config is a ``claim.FolderError`` unless
    ``overwrite``), the others run by shape group (``sweep_group``), and the folder is written as
    each group finishes (``folder.write_sweep``: the sweep's config.yaml, the group's run folders,
    summary.csv of the runs so far). Only the ``writer`` process writes. Layout: OUT/config.yaml (the
    sweep), OUT/summary.csv, OUT/runs/<run_id>/ (run folders)."""
    import yaml

    from ntkdyn import sweep as sweep_mod

    finished = {
        run_id: results.RunResult.from_json(doc)
        for run_id, doc in claim.finished_runs(out, points, overwrite=overwrite, writer=writer).items()
    }
    groups = sweep_mod.group_by_shape(list(points))
    say(
        f"ntkdyn: sweep {raw.get('name', 'sweep')}: {len(points)} runs in {len(groups)} shape group(s) on "
        f"{env.get('devices_on_run_axis', 1)} device(s) -> {out}"
    )
    config_text = yaml.safe_dump(raw, sort_keys=False)
    done: dict[str, results.RunResult] = {}
    rows: list[dict] = []
    failed = False
    compiles_before = train.COMPILE_COUNT["n"]
    for g, group in enumerate(groups):
        new, group_failed = sweep_group(g + 1, group, env, say, warn, progress, finished)
        failed |= group_failed
        done.update(
            {run.run_id: finished[run.run_id] if run.run_id in finished else new[run.run_id] for run in group}
        )
        rows = [  # summary.csv: a row per run and optimizer, grid order
            results.SweepRow.from_result(run.run_id, run.values, done[run.run_id].spectrum, o).to_json()
            for run in points
            if run.run_id in done
            for o in done[run.run_id].optimizers.values()
        ]
        if writer:
            written = {
                run.run_id: (new[run.run_id], config_mod.dump(run.cfg)) for run in group if run.run_id in new
            }
            folder.write_sweep(out, config_text, written, rows)
    return SweepOutcome(rows, failed, train.COMPILE_COUNT["n"] - compiles_before)


def sweep_group(
    g: int,
    group: Sequence,
    env: dict,
    say: Say,
    warn: Say,
    progress: bool,
    finished: Mapping[str, results.RunResult] | None = None,
) -> tuple[dict[str, results.RunResult], bool]:
    """Shape group ``g`` (1-based) of a sweep: runs in ``finished`` (run_id -> a finished run with
    the same config, ``claim.finished_runs``) are skipped; the others are prepared, and each
    optimizer trained for the whole group as one program and evaluated (``entry.stages``). Returns
    (run_id -> the typed run of each run computed here, whether an optimizer failed). Raises
    ValueError (bad input) from ``setup.prepare`` before any training."""
    finished = finished or {}
    todo = [run for run in group if run.run_id not in finished]
    if len(todo) < len(group):
        say(f"  group {g}: {len(group) - len(todo)} finished run(s) found, skipped")
    if not todo:
        return {}, False
    t = time.perf_counter()
    setups = [setup_mod.prepare(run.cfg) for run in todo]
    env["times_s"][f"group{g}_prepare"] = time.perf_counter() - t
    steps = todo[0].cfg.train.steps
    printer = (
        (lambda label: train.progress_printer(f"group {g} {label}", steps, len(todo))) if progress else None
    )
    failed = False
    for stage in entry.stages([run.cfg for run in todo], setups, [run.run_id for run in todo], printer):
        if stage.error is not None:
            failed = True
            warn(
                f"ntkdyn: group {g} optimizer {stage.label} failed: "
                f"{type(stage.error).__name__}: {stage.error}"
            )
        elif stage.label is not None:
            theory_s = sum(ev.times["evaluate_s"] for ev in stage.evaluated)
            env["times_s"][f"group{g}_{stage.label}_train"] = stage.seconds - theory_s
            env["times_s"][f"group{g}_{stage.label}_theory"] = theory_s
    return {run.run_id: result for run, result in zip(todo, stage.runs)}, failed
