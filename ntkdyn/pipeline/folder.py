"""The writer of run and sweep folders: the only code that writes their data files (figures are
drawn by ``ntkdyn.plots`` at a path in the folder). Every file is written atomically
(``results.atomic_write``); metrics.json last, so a run folder whose metrics.json lists every
optimizer is complete.

What an existing folder means (may a run write there, which runs of a sweep are finished) is
decided before anything is computed, by ``claim``; its names are re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from ntkdyn.results import RunResult, write_json, write_npz, write_text
from ntkdyn.results.files import _plain


def make_run_folder(out: str) -> None:
    """Create the run folder ``out`` (and its parents) if missing."""
    os.makedirs(out, exist_ok=True)


def write_run(folder: str, run: RunResult, config_text: str | None = None) -> None:
    """Write ``run`` as a run folder (``ntkdyn.results``' docstring): the one writer of run folders
    (CLI single runs, each run of a sweep, ``run_study(out=...)``). ``write_run_inputs`` then
    ``write_run_outputs``.

    Args:
        folder: the run folder (created).
        run: the run; an empty ``run.env`` writes no env.json.
        config_text: config.yaml's text (default ``run.config`` as YAML).
    """
    write_run_inputs(folder, run, config_text)
    write_run_outputs(folder, run)


def write_run_inputs(folder: str, run: RunResult, config_text: str | None = None) -> None:
    """What a run knows before training: config.yaml, data.npz and kernels.npz (where present)."""
    os.makedirs(folder, exist_ok=True)
    write_text(
        os.path.join(folder, "config.yaml"),
        config_text if config_text is not None else yaml.safe_dump(_yaml_safe(run.config), sort_keys=False),
    )
    if run.data:
        write_npz(os.path.join(folder, "data.npz"), dict(run.data))
    if run.kernels:
        write_npz(os.path.join(folder, "kernels.npz"), dict(run.kernels))


def write_run_outputs(folder: str, run: RunResult) -> None:
    """trajectories.npz, env.json (if ``run.env``) and metrics.json, last: a run folder whose
    metrics.json lists every optimizer is complete (a sweep skips such runs when resumed)."""
    os.makedirs(folder, exist_ok=True)
    write_npz(
        os.path.join(folder, "trajectories.npz"),
        {f"{label}/{k}": v for label, o in run.optimizers.items() for k, v in o.trajectory.items()},
    )
    if run.env:
        write_json(os.path.join(folder, "env.json"), dict(run.env))
    write_json(os.path.join(folder, "metrics.json"), run.to_json())


def write_progress(folder: str, run: RunResult, config_text: str | None = None) -> None:
    """A single run's folder as the run proceeds (``entry.stages``), each stage as soon as it is
    done: before any optimizer (``run.optimizers`` empty) what the run knows before training
    (``write_run_inputs``, and env.json where ``run.env``); after each optimizer
    ``write_run_outputs`` (metrics.json last)."""
    if run.optimizers:
        write_run_outputs(folder, run)
        return
    write_run_inputs(folder, run, config_text)
    if run.env:
        write_env(folder, run.env)


def write_sweep(
    folder: str,
    config_text: str,
    runs: Mapping[str, tuple[RunResult, str]],
    rows: Iterable[Mapping[str, Any]],
) -> None:
    """A sweep folder as its shape groups finish: runs/ and the sweep's config.yaml
    (``start_sweep``), each newly finished run (run_id -> (run, its config.yaml text)) as
    runs/<run_id> (``write_run``), and summary.csv of the ``rows`` so far (``write_summary``)."""
    start_sweep(folder, config_text)
    for run_id, (run, text) in runs.items():
        write_run(os.path.join(folder, "runs", run_id), run, text)
    write_summary(folder, rows)


def write_config(folder: str, text: str) -> None:
    """config.yaml of a run or sweep folder."""
    os.makedirs(folder, exist_ok=True)
    write_text(os.path.join(folder, "config.yaml"), text)


def start_sweep(folder: str, config_text: str) -> None:
    """A sweep folder: runs/ and the sweep's config.yaml."""
    os.makedirs(os.path.join(folder, "runs"), exist_ok=True)
    write_config(folder, config_text)


def write_env(folder: str, env: Mapping[str, Any]) -> None:
    """env.json: versions, device, command, stage times."""
    write_json(os.path.join(folder, "env.json"), dict(env))


def write_summary(folder: str, rows: Iterable[Mapping[str, Any]]) -> None:
    """A sweep's summary.csv: one column per key met in ``rows`` (first-seen order)."""
    write_text(os.path.join(folder, "summary.csv"), summary_csv(list(rows)))


def summary_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """summary.csv's text: one column per key met in ``rows`` (first-seen order)."""
    import csv
    import io

    fields = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    table = csv.DictWriter(buffer, fieldnames=fields)
    table.writeheader()
    table.writerows(rows)
    return buffer.getvalue()


def _yaml_safe(obj):
    if isinstance(obj, Mapping):
        return {str(k): _yaml_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_yaml_safe(v) for v in obj]
    return _plain(obj)
