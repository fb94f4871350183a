"""The writer of run and sweep folders: the only code that writes their data files (figures are
drawn by ``ntkdyn.plots`` at a path in the folder). Every file is written atomically
(``results.atomic_write``); metrics.json last, so a run folder whose metrics.json lists every
optimizer is complete.

Before anything is computed, ``claim_run_folder`` / ``claim_sweep_folder`` decide what an existing
folder means: a single run does not write into a non-empty folder unless told to overwrite; a sweep
resumes only the runs whose resolved config equals the one on disk (a mismatch is an error naming
the differing keys); stale zero-byte ``.tmp-*`` files of an interrupted write are removed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from ntkdyn import config as config_mod
from ntkdyn.results import RunResult, write_json, write_npz, write_text
from ntkdyn.results.files import _plain

OVERWRITE_HINT = "write to a new folder (--out) or pass --overwrite to replace it"


class FolderError(ValueError):
    """A results folder that cannot be written as asked (bad input: exit status 2 on the command line)."""


def check_out_path(out: str) -> None:
    """ValueError when ``out`` exists and is not a folder."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise FolderError(f"out: {out!r} is a file, not a folder; give a folder path")


def remove_stale_temporaries(folder: str) -> list[str]:
    """Remove the zero-byte ``.tmp-*`` files an interrupted atomic write left in ``folder`` and its
    sub-folders; returns their paths."""
    removed: list[str] = []
    if not os.path.isdir(folder):
        return removed
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if name.startswith(".tmp-") and os.path.getsize(path) == 0:
                os.remove(path)
                removed.append(path)
    return removed


def claim_run_folder(out: str, overwrite: bool = False) -> None:
    """Check that ``out`` may become the folder of a single run, before anything is computed: a
    non-empty folder (other than stale temporaries, which are removed) is an error unless
    ``overwrite``. Nothing is created here (``make_run_folder`` does, once the inputs passed their
    checks), so a run refused for bad input leaves no folder behind."""
    check_out_path(out)
    remove_stale_temporaries(out)
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise FolderError(f"out: {out!r} is not empty (it holds {', '.join(sorted(os.listdir(out))[:5])}); "
                          + OVERWRITE_HINT)  # fmt: skip


def make_run_folder(out: str) -> None:
    """Create the run folder ``out`` (and its parents) if missing."""
    os.makedirs(out, exist_ok=True)


def _flat(doc: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(doc, Mapping):
        out: dict[str, Any] = {}
        for k, v in doc.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out if out or not prefix else {prefix: {}}
    if isinstance(doc, list) and doc and all(isinstance(v, Mapping) for v in doc):
        out = {}
        for i, v in enumerate(doc):
            out.update(_flat(v, f"{prefix}.{i}"))
        return out
    return {prefix: doc}


def config_differences(old: Mapping, new: Mapping) -> list[str]:
    """The dotted keys whose values differ between two resolved configs (present in one only, too)."""
    a, b = _flat(old), _flat(new)
    return sorted(k for k in set(a) | set(b) if a.get(k, object()) != b.get(k, object()))


def resolved(cfg: config_mod.Config) -> dict:
    """The resolved config as config.yaml holds it (read back)."""
    return yaml.safe_load(config_mod.dump(cfg))


def finished_runs(out: str, runs: Sequence, overwrite: bool = False, writer: bool = True) -> dict[str, dict]:
    """Of a sweep's ``runs`` (``sweep.Run``: run_id, cfg), those already finished in ``out`` (a
    metrics.json in runs/<run_id>) with the same resolved config: run_id -> metrics.json content.
    A finished run whose config.yaml differs is an error naming the differing keys, unless
    ``overwrite`` (then nothing is resumed). The ``writer`` process (the only one that writes)
    first removes stale temporaries."""
    check_out_path(out)
    if writer:
        remove_stale_temporaries(out)
    if overwrite:
        return {}
    done: dict[str, dict] = {}
    for run in runs:
        folder = os.path.join(out, "runs", run.run_id)
        if not os.path.isfile(os.path.join(folder, "metrics.json")):
            continue
        path = os.path.join(folder, "config.yaml")
        old = yaml.safe_load(open(path).read()) if os.path.isfile(path) else {}
        diff = config_differences(old or {}, resolved(run.cfg))
        if diff:
            raise FolderError(
                f"out: {out!r} holds run {run.run_id} made with a different config ({', '.join(diff[:8])}"
                f"{' ...' if len(diff) > 8 else ''} differ); " + OVERWRITE_HINT
            )
        with open(os.path.join(folder, "metrics.json")) as fh:
            done[run.run_id] = json.load(fh)
    return done


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
