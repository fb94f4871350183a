"""A study folder of ``experiments/`` (verdicts.json as typed claims) and a folder of studies."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from ntkdyn.results.tables import long_table


def _split(doc: Mapping, known) -> tuple[dict, dict]:
    """(the known keys of ``doc``, every other key): a study's claims keep keys of newer studies."""
    known = set(known)
    return ({k: v for k, v in doc.items() if k in known}, {k: v for k, v in doc.items() if k not in known})


def _put_optional(out: dict, **values) -> dict:
    out.update({k: v for k, v in values.items() if v is not None})
    return out


ClaimResult = Literal["differs", "partly", "inconclusive", "agrees", "info"]
CLAIM_RESULTS: tuple[str, ...] = typing.get_args(ClaimResult)  # most severe first (the report's order)


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of a study's verdicts.json: ``result`` is one of ``CLAIM_RESULTS`` (agrees | differs |
    partly | inconclusive | info), ``line`` the sentence computed from the data, ``numbers`` the
    values behind it."""

    id: str
    claim: str
    result: ClaimResult
    line: str
    source: str = ""
    window: tuple[float | None, float | None] | None = None
    numbers: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    differs_from_paper: bool | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        out = {
            "id": self.id,
            "claim": self.claim,
            "source": self.source,
            "result": self.result,
            "line": self.line,
            "window": None if self.window is None else list(self.window),
            "numbers": dict(self.numbers),
        }
        return {**_put_optional(out, differs_from_paper=self.differs_from_paper), **self.extra}

    @classmethod
    def from_json(cls, doc: Mapping) -> Claim:
        names = ("id", "claim", "source", "result", "line", "window", "numbers", "differs_from_paper")
        k, extra = _split(doc, names)
        window = k.get("window")
        return cls(
            id=k.get("id", ""),
            claim=k.get("claim", ""),
            result=k.get("result", "info"),
            line=k.get("line", ""),
            source=k.get("source", ""),
            window=None if window is None else tuple(window),
            numbers=k.get("numbers") or {},
            differs_from_paper=k.get("differs_from_paper"),
            extra=extra,
        )


@dataclasses.dataclass(frozen=True)
class StudyResult:
    """A study folder of ``experiments/``: verdicts.json as typed claims (``doc`` keeps the whole
    document: settings, figures, tables, times) and arrays.npz (``arrays``: 'group/name' -> array)."""

    study: str
    title: str
    mode: str | None
    claims: tuple[Claim, ...]
    doc: Mapping[str, Any] = dataclasses.field(repr=False, compare=False)
    arrays: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False, compare=False)
    folder: str | None = None

    @property
    def config(self) -> Mapping[str, Any]:
        return self.doc.get("settings", {})

    @property
    def trajectories(self):
        return self.table()

    def table(self, pandas: bool | None = None):
        """The array groups that have a ``step`` as one long table (run_id = study, label = group)."""
        return long_table(_study_groups(self), pandas=pandas)

    def describe(self) -> str:
        return f"study {self.study} ({self.mode}): {self.title}"


@dataclasses.dataclass(frozen=True)
class StudyCollection:
    """Several studies (a folder whose sub-folders hold verdicts.json, e.g. experiments/run_all.py's)."""

    studies: tuple[StudyResult, ...]
    folder: str | None = None

    @property
    def config(self) -> Mapping[str, Any]:
        return {s.study: s.config for s in self.studies}

    @property
    def trajectories(self):
        return self.table()

    def table(self, pandas: bool | None = None):
        groups = [(s.study, g, arrs) for s in self.studies for (_, g, arrs) in _study_groups(s)]
        return long_table(groups, pandas=pandas)

    def describe(self) -> str:
        return f"{len(self.studies)} stud{'y' if len(self.studies) == 1 else 'ies'}: " + ", ".join(
            s.study for s in self.studies
        )


def _study_groups(s: StudyResult):
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, arr in s.arrays.items():
        group, _, name = key.rpartition("/")
        groups.setdefault(group, {})[name] = arr
    return [(s.study, g, arrs) for g, arrs in groups.items() if "step" in arrs]
