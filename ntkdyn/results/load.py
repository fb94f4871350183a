"""``load``: a results folder (run, sweep, study, folder of studies) as typed results."""

from __future__ import annotations

import csv
import json
import os

import numpy as np

from ntkdyn.results.files import read_npz_groups
from ntkdyn.results.study import Claim, StudyCollection, StudyResult
from ntkdyn.results.sweep import SweepResult, SweepRow
from ntkdyn.results.types import RunResult


def _read_json(path: str):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read ({exc})") from None


def _read_yaml(path: str) -> dict:
    import yaml

    if not os.path.isfile(path):
        return {}
    with open(path) as fh:
        return yaml.safe_load(fh) or {}


def _read_npz(path: str) -> dict[str, np.ndarray]:
    if not os.path.isfile(path):
        return {}
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def load_run(folder: str, run_id: str | None = None) -> RunResult:
    """A run folder (metrics.json, trajectories.npz, config.yaml, data.npz, kernels.npz, env.json)."""
    metrics = _read_json(os.path.join(folder, "metrics.json"))
    traj = (
        read_npz_groups(os.path.join(folder, "trajectories.npz"))
        if os.path.isfile(os.path.join(folder, "trajectories.npz"))
        else {}
    )
    env_path, control_path = os.path.join(folder, "env.json"), os.path.join(folder, "control.json")
    return RunResult.from_json(
        metrics,
        traj,
        config=_read_yaml(os.path.join(folder, "config.yaml")),
        data=_read_npz(os.path.join(folder, "data.npz")),
        kernels=_read_npz(os.path.join(folder, "kernels.npz")),
        env=_read_json(env_path) if os.path.isfile(env_path) else {},
        control=_read_json(control_path) if os.path.isfile(control_path) else None,
        run_id=run_id if run_id is not None else os.path.basename(os.path.normpath(folder)),
        folder=folder,
    )


def load_sweep(folder: str) -> SweepResult:
    """A sweep folder: summary.csv, config.yaml, env.json and runs/<run_id>/ (finished runs only)."""
    summary = os.path.join(folder, "summary.csv")
    rows: list[SweepRow] = []
    axes: list[str] = []
    if os.path.isfile(summary):
        with open(summary, newline="") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            if "run_id" in header and "lambda_min" in header:
                axes = header[header.index("run_id") + 1 : header.index("lambda_min")]
            rows = [SweepRow.from_json(r, axes) for r in reader]
    runs_dir = os.path.join(folder, "runs")
    ids = (
        sorted(d for d in os.listdir(runs_dir) if os.path.isfile(os.path.join(runs_dir, d, "metrics.json")))
        if os.path.isdir(runs_dir)
        else []
    )
    env_path = os.path.join(folder, "env.json")
    return SweepResult(
        config=_read_yaml(os.path.join(folder, "config.yaml")),
        axes=tuple(axes),
        rows=tuple(rows),
        runs={i: load_run(os.path.join(runs_dir, i), i) for i in ids},
        env=_read_json(env_path) if os.path.isfile(env_path) else {},
        folder=folder,
    )


def load_study(folder: str) -> StudyResult:
    doc = _read_json(os.path.join(folder, "verdicts.json"))
    if not isinstance(doc, dict) or "claims" not in doc:
        raise ValueError(
            f"{os.path.join(folder, 'verdicts.json')}: not a study's verdicts.json (no 'claims')"
        )
    return StudyResult(
        study=str(doc.get("study", os.path.basename(os.path.normpath(folder)))),
        title=str(doc.get("title", "")),
        mode=doc.get("mode"),
        claims=tuple(Claim.from_json(c) for c in doc["claims"]),
        doc=doc,
        arrays=_read_npz(os.path.join(folder, "arrays.npz")),
        folder=folder,
    )


def kind_of(folder: str) -> str:
    """'run' (metrics.json), 'sweep' (summary.csv or runs/), 'study' (verdicts.json), 'studies'
    (sub-folders with verdicts.json); ValueError otherwise."""
    has = lambda name: os.path.isfile(os.path.join(folder, name))  # noqa: E731
    if not os.path.isdir(folder):
        raise ValueError(f"{folder}: not a folder")
    if has("verdicts.json"):
        return "study"
    if has("summary.csv") or os.path.isdir(os.path.join(folder, "runs")):
        return "sweep"
    if has("metrics.json"):
        return "run"
    if any(os.path.isfile(os.path.join(folder, d, "verdicts.json")) for d in os.listdir(folder)):
        return "studies"
    raise ValueError(
        f"{folder}: not a results folder (no metrics.json, summary.csv, runs/ or verdicts.json, "
        "nor sub-folders with verdicts.json)"
    )


def load(folder: str) -> RunResult | SweepResult | StudyResult | StudyCollection:
    """Load a results folder: a run, a sweep, a study of ``experiments/`` or a folder of studies.

    Args:
        folder: the folder ``python -m ntkdyn.run``, ``run_study(..., out=...)`` or a study wrote.
    Returns:
        ``RunResult`` / ``SweepResult`` / ``StudyResult`` / ``StudyCollection``. Each has
        ``config`` (a mapping), typed metrics, ``trajectories`` (one long table: a pandas
        DataFrame when pandas is installed, else a dict of numpy columns run_id, label, step,
        loss, loss_discrete, loss_ode, ...) and ``describe()``.
    Raises:
        ValueError: the folder holds none of these.
    """
    kind = kind_of(folder)
    if kind == "run":
        return load_run(folder)
    if kind == "sweep":
        return load_sweep(folder)
    if kind == "study":
        return load_study(folder)
    subs = [
        os.path.join(folder, d)
        for d in sorted(os.listdir(folder))
        if os.path.isfile(os.path.join(folder, d, "verdicts.json"))
    ]
    return StudyCollection(tuple(load_study(s) for s in subs), folder)
