"""What an existing results folder means, decided before anything is computed (so that a run
refused here has computed and written nothing): a single run does not write into a non-empty folder
unless told to overwrite (``claim_run_folder``); a sweep resumes only the runs whose resolved config
equals the one on disk, and a mismatch is an error naming the differing keys (``finished_runs``).
The zero-byte ``.tmp-*`` files that an interrupted atomic write left are removed; nothing else is
written here (``folder`` is the writer).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from ntkdyn import config as config_mod

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
    ``overwrite``. Nothing is created here (``folder`` does, once the inputs passed their
    checks), so a run refused for bad input leaves no folder behind."""
    check_out_path(out)
    remove_stale_temporaries(out)
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise FolderError(f"out: {out!r} is not empty (it holds {', '.join(sorted(os.listdir(out))[:5])}); "
                          + OVERWRITE_HINT)  # fmt: skip


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
