"""A report page as blocks (headings, paragraphs, bullets, tables, figures, details) that the
renderers of ``ntkdyn.report`` turn into Markdown or HTML, and the cell formatting they share."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence


# A span is (style, text) with style "" | "b" | "i" | "code" | "badge" | "#anchor"; a cell or a
# paragraph is a str or a list of spans.
@dataclasses.dataclass(frozen=True)
class Heading:
    level: int
    text: str
    anchor: str | None = None


@dataclasses.dataclass(frozen=True)
class Para:
    spans: str | list


@dataclasses.dataclass(frozen=True)
class Bullets:
    items: list


@dataclasses.dataclass(frozen=True)
class Table:
    columns: Sequence[str]
    rows: Sequence[Sequence]


@dataclasses.dataclass(frozen=True)
class Figure:
    path: str
    caption: str


@dataclasses.dataclass(frozen=True)
class Details:
    summary: str
    blocks: list


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def _spans(x) -> list:
    return [("", x)] if isinstance(x, str) else list(x)
