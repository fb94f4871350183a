"""Launchers: a sweep's shape groups handed to an executor (``python -m ntkdyn.run CONFIG
--launcher local|submitit|ray``).

- ``local`` (the default): today's loop in this process (``runner.sweep``).
- ``submitit``: one job per shape group, submitted as one job array (``submitit.AutoExecutor``:
  SLURM where ``sbatch`` is found, otherwise submitit's local executor, which runs the same path as
  subprocesses of this machine; ``cluster`` chooses).
- ``ray``: one Ray task per shape group on an existing Ray cluster (``ray.init(address=...)``).

Every task runs ``run_group`` (``runner.sweep_group``, the same entry the local loop uses) on its
group's resolved configs (``sweep.Run``) and writes its runs' folders, and nothing else: each run
folder has exactly one writer. The parent claims the folder first (``folder.finished_runs``:
finished runs of the same config are skipped, a different config is an error, as for a local run),
writes the sweep's config.yaml, submits the groups with unfinished runs, waits, and writes
summary.csv from the run folders' metrics.json (``summary_from_folder``), so the summary equals a
local run's. With ``wait=False`` it returns after submitting; running the same command again (any
launcher) then finds every run finished and writes the summary.

The engines are optional extras (``pip install -e ".[submitit]"`` / ``".[ray]"``); nothing here
imports them unless asked for. ``jax.distributed`` (``--distributed``) stays the way to spread
one run, or one group, over several hosts.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from ntkdyn.pipeline import folder, runner

Say = Callable[[str], None]

LAUNCHERS = ("local", "submitit", "ray")
SUBMITIT_CLUSTERS = ("slurm", "local", "debug")


class LauncherError(ValueError):
    """A launcher that cannot be used as asked (bad input: exit status 2 on the command line)."""


@dataclasses.dataclass(frozen=True)
class LaunchOptions:
    """How a sweep's groups are run.

    Attributes:
        launcher: ``local`` | ``submitit`` | ``ray``.
        cluster: submitit only: ``slurm`` | ``local`` | ``debug`` (in-process); None: submitit's
            choice (SLURM where it is found, else local).
        partition: submitit only: the SLURM partition (``slurm_partition``).
        timeout_min: submitit only: each job's time limit in minutes (``timeout_min``).
        array_parallelism: submitit only: jobs of the array running at once
            (``slurm_array_parallelism``).
        executor_args: submitit: further ``update_parameters`` arguments (``mem_gb``,
            ``gpus_per_node``, ``cpus_per_task``, ``slurm_account``, ...); ray: the tasks'
            options (``num_cpus``, default 1; ``num_gpus``, ``memory``, ``resources``, ...).
        address: ray only: the cluster's address (None: ``RAY_ADDRESS`` or ``auto``, the cluster
            started on this machine by ``ray start``).
        logs: submitit's log folder (None: ``OUT/.submitit``).
        wait: wait for the jobs and write the summary (False, submitit only: return after
            submitting).
    """

    launcher: str = "local"
    cluster: str | None = None
    partition: str | None = None
    timeout_min: int | None = None
    array_parallelism: int | None = None
    executor_args: tuple[tuple[str, Any], ...] = ()
    address: str | None = None
    logs: str | None = None
    wait: bool = True

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise LauncherError(f"--launcher: unknown launcher {self.launcher!r}; choose one of {LAUNCHERS}")
        submitit_only = {
            "--partition": self.partition,
            "--timeout": self.timeout_min,
            "--array-parallelism": self.array_parallelism,
            "--cluster": self.cluster,
        }
        given = [flag for flag, value in submitit_only.items() if value is not None]
        if given and self.launcher != "submitit":
            raise LauncherError(f"{', '.join(given)}: only with --launcher submitit (got {self.launcher})")
        if self.executor_args and self.launcher == "local":
            raise LauncherError("--executor-arg: only with --launcher submitit or ray")
        if self.address is not None and self.launcher != "ray":
            raise LauncherError(f"--ray-address: only with --launcher ray (got {self.launcher})")
        if self.cluster is not None and self.cluster not in SUBMITIT_CLUSTERS:
            raise LauncherError(
                f"--cluster: unknown submitit cluster {self.cluster!r}; choose {SUBMITIT_CLUSTERS}"
            )
        if self.timeout_min is not None and self.timeout_min < 1:
            raise LauncherError(f"--timeout: minutes >= 1, got {self.timeout_min}")
        if self.array_parallelism is not None and self.array_parallelism < 1:
            raise LauncherError(f"--array-parallelism: >= 1, got {self.array_parallelism}")
        if not self.wait and self.launcher != "submitit":
            raise LauncherError(
                f"--no-wait: only with --launcher submitit (got {self.launcher}; Ray tasks end with the "
                "process that submitted them)"
            )


@dataclasses.dataclass(frozen=True)
class GroupTask:
    """One shape group's unfinished runs, as one task: ``g`` (1-based group number), the runs
    (``sweep.Run``: run_id, swept values, resolved Config) and the sweep folder."""

    g: int
    runs: tuple
    out: str
    progress: bool = False


@dataclasses.dataclass(frozen=True)
class GroupDone:
    """What a task reports back: whether an optimizer failed, its compilations and stage times."""

    g: int
    failed: bool
    compiles: int
    times_s: dict


def run_group(task: GroupTask) -> GroupDone:
    """Run one group in this process (the body of every submitit job and Ray task): float64 made
    available as the command line does, then ``runner.sweep_group`` on the group's runs, each run
    folder written here. Progress and failures go to this process's stdout / stderr (submitit's
    log files, Ray's worker logs)."""
    import sys

    import jax

    from ntkdyn import train

    jax.config.update("jax_enable_x64", True)  # as ntkdyn.run does; training uses cfg.dtype explicitly
    say = lambda text: print(text, flush=True)  # noqa: E731
    warn = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    env: dict = {"times_s": {}}
    before = train.COMPILE_COUNT["n"]
    metrics: dict[str, dict] = {}
    failed = runner.sweep_group(
        task.g, list(task.runs), task.out, env, True, say, warn, task.progress, metrics
    )
    return GroupDone(task.g, failed, train.COMPILE_COUNT["n"] - before, env["times_s"])


def summary_from_folder(out: str, points: Sequence) -> tuple[list[dict], list[str]]:
    """summary.csv's rows (``runner.summary_rows``, grid order) from the run folders'
    metrics.json, and the run_ids that have none (not finished)."""
    import json

    rows: list[dict] = []
    missing: list[str] = []
    for run in points:
        path = os.path.join(out, "runs", run.run_id, "metrics.json")
        if not os.path.isfile(path):
            missing.append(run.run_id)
            continue
        with open(path) as fh:
            rows += runner.summary_rows(run.run_id, run.values, json.load(fh))
    return rows, missing


def _need(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise LauncherError(
            f"--launcher {extra}: {module} is not installed; install the extra: "
            f"pip install 'ntkdyn[{extra}]' "
            f'(from a checkout: pip install -e ".[{extra}]")'
        ) from None


def check_available(options: LaunchOptions) -> None:
    """LauncherError naming the extra when the engine of ``options.launcher`` is not installed."""
    if options.launcher == "submitit":
        _need("submitit", "submitit")
    elif options.launcher == "ray":
        _need("ray", "ray")


Submit = Callable[[list[GroupTask]], tuple[list[str], list[Callable[[], GroupDone]]]]


def _submitit(out: str, options: LaunchOptions) -> Submit:
    """The job-array submitter: the executor made and its parameters checked now (a bad one is a
    LauncherError before anything is written)."""
    submitit = _need("submitit", "submitit")
    executor = submitit.AutoExecutor(
        folder=options.logs or os.path.join(out, ".submitit"), cluster=options.cluster
    )
    params: dict[str, Any] = {"name": "ntkdyn"}
    if options.timeout_min is not None:
        params["timeout_min"] = options.timeout_min
    if options.partition is not None:
        params["slurm_partition"] = options.partition
    if options.array_parallelism is not None:
        params["slurm_array_parallelism"] = options.array_parallelism
    params.update(dict(options.executor_args))
    try:
        executor.update_parameters(**params)
    except (ValueError, TypeError, NameError) as exc:
        raise LauncherError(
            f"--executor-arg: not a submitit parameter here: {' '.join(str(exc).split())}"
        ) from None

    def submit(tasks: list[GroupTask]):
        jobs = executor.map_array(run_group, tasks)
        return [str(job.job_id) for job in jobs], [job.result for job in jobs]

    return submit


def _ray(options: LaunchOptions) -> Submit:
    """The Ray submitter: connected to the cluster and the task options checked now."""
    ray = _need("ray", "ray")
    address = options.address or os.environ.get("RAY_ADDRESS") or "auto"
    try:
        if not ray.is_initialized():
            ray.init(address=address, log_to_driver=False)
    except ConnectionError as exc:
        raise LauncherError(
            f"--ray-address: no Ray cluster at {address!r} ({' '.join(str(exc).split())}); start one "
            "(ray start --head) or give its address"
        ) from None
    try:
        remote = ray.remote(**{"num_cpus": 1, "max_retries": 0, **dict(options.executor_args)})(run_group)
    except (ValueError, TypeError) as exc:
        raise LauncherError(f"--executor-arg: not a Ray task option: {' '.join(str(exc).split())}") from None

    def submit(tasks: list[GroupTask]):
        refs = [remote.remote(task) for task in tasks]
        return [ref.hex() for ref in refs], [lambda ref=ref: ray.get(ref) for ref in refs]

    return submit


def sweep(
    raw: dict,
    points: Sequence,
    out: str,
    env: dict,
    options: LaunchOptions,
    say: Say,
    warn: Say,
    progress: bool = True,
    overwrite: bool = False,
) -> runner.SweepOutcome:
    """Every grid point of a sweep into ``out`` through ``options.launcher`` (module docstring).
    ``local`` is ``runner.sweep``. Otherwise: finished runs of the same config are kept (a
    different config is a ``folder.FolderError`` unless ``overwrite``), each shape group's
    unfinished runs become one task, the tasks are submitted (job ids in ``env['jobs']``) and,
    with ``options.wait``, awaited; a task that fails is reported through ``warn`` and the others
    kept; summary.csv is then written from the folder. Returns the rows (empty without waiting),
    whether anything failed (a task, an optimizer, a run left unfinished) and the tasks'
    compilations."""
    if options.launcher == "local":
        return runner.sweep(raw, points, out, env, True, say, warn, progress, overwrite)
    import yaml

    from ntkdyn import sweep as sweep_mod

    finished = folder.finished_runs(out, points, overwrite=overwrite, writer=True)
    submit = _submitit(out, options) if options.launcher == "submitit" else _ray(options)
    folder.start_sweep(out, yaml.safe_dump(raw, sort_keys=False))
    groups = sweep_mod.group_by_shape(list(points))
    tasks = [
        GroupTask(g + 1, tuple(run for run in group if run.run_id not in finished), out, progress=False)
        for g, group in enumerate(groups)
    ]
    skipped = sum(len(group) - len(task.runs) for group, task in zip(groups, tasks))
    tasks = [task for task in tasks if task.runs]
    say(
        f"ntkdyn: sweep {raw.get('name', 'sweep')}: {len(points)} runs in {len(groups)} shape group(s), "
        f"{skipped} finished run(s) skipped; {len(tasks)} task(s) through {options.launcher} -> {out}"
    )
    env["launcher"] = options.launcher
    failed = False
    compiles = 0
    if tasks:
        t = time.perf_counter()
        ids, results = submit(tasks)
        env["jobs"] = {f"group{task.g}": job for task, job in zip(tasks, ids)}
        for task, job in zip(tasks, ids):
            say(f"  group {task.g}: {len(task.runs)} run(s) -> {options.launcher} job {job}")
        if not options.wait:
            return runner.SweepOutcome([], False, 0)
        for task, job, result in zip(tasks, ids, results):
            try:
                done = result()
            except Exception as exc:  # noqa: BLE001 - one failed task must not lose the others
                failed = True
                lines = str(exc).strip().splitlines() or [""]  # submitit: the job's traceback; its last line
                logs = options.logs or os.path.join(out, ".submitit")
                where = f"; its log: {logs}/{job}_0_log.err" if options.launcher == "submitit" else ""
                warn(
                    f"ntkdyn: group {task.g} ({options.launcher} job {job}) failed: "
                    f"{type(exc).__name__}: {lines[-1].strip()}{where}"
                )
                continue
            failed |= done.failed
            compiles += done.compiles
            env["times_s"].update(done.times_s)
            say(f"  group {task.g}: done")
        env["times_s"]["tasks_wall"] = time.perf_counter() - t
    rows, missing = summary_from_folder(out, points)
    if missing:
        failed = True
        warn(
            f"ntkdyn: {len(missing)} run(s) not finished "
            f"({', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''})"
        )
    folder.write_summary(out, rows)
    return runner.SweepOutcome(rows, failed, compiles)
