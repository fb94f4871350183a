"""One page from any results folders: single runs, sweeps, studies of ``experiments/``.

    python -m ntkdyn.report RESULTS... [--out FILE] [--format md|html] [--figures png|svg] [--title TEXT]

Each RESULTS argument is a folder that ``ntkdyn.load`` reads: a run (metrics.json), a sweep
(summary.csv, runs/), a study (verdicts.json) or a folder of studies. The page's title says what
was run (``describe()`` of each folder) unless ``--title`` is given. A run shows its settings,
spectrum, the table of verdicts, rates, deviations and drift, and its loss figure; a sweep its
verdict counts, its summary rows and its figure; a study its claims and verdicts (each computed
from the data by the study; nothing here is written by hand), figures and tables, with a list of
the results that differ from the claims first.

The format follows the suffix of ``--out``: ``.html``/``.htm`` -> HTML, ``.md`` -> Markdown
(``PAGE_SUFFIXES``); any other suffix (``x.pdf``, none) is refused before anything is read.
Run and sweep figures are drawn from the data (``--figures`` png or svg), each with its data as
.csv. An HTML page is one self-contained file: figures and their .csv data are embedded as
``data:`` URIs (the drawing folder is temporary and removed). A Markdown page links them by
paths relative to the page, in ``<page name>_files/``.
Exit status: 0 written, 2 bad ``--out``, no results found or unreadable input.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import html
import os
import sys
import tempfile

from ntkdyn import results
from ntkdyn.report_blocks import Bullets, Details, Figure, Heading, Para, Table, _fmt, _spans
from ntkdyn.report_runs import run_blocks, sweep_blocks

RESULT_ORDER = results.CLAIM_RESULTS  # most severe first
BADGE = {
    "agrees": ("AGREES", "#1a7f37"),
    "differs": ("DIFFERS", "#cf222e"),
    "partly": ("PARTLY", "#bf8700"),
    "inconclusive": ("INCONCLUSIVE", "#6e7781"),
    "info": ("INFO", "#0969da"),
}
Loaded = results.RunResult | results.SweepResult | results.StudyResult | results.StudyCollection


# --------------------------------------------------------------------------- the page as blocks
# (``report_blocks``: Heading, Para, Bullets, Table, Figure, Details); runs and sweeps: ``report_runs``


# --------------------------------------------------------------------------- finding results
def find_results(paths: list[str]) -> list[Loaded]:
    """``results.load`` of every path (a verdicts.json file stands for its folder)."""
    found = []
    for p in paths:
        if os.path.isfile(p) and os.path.basename(p) == "verdicts.json":
            p = os.path.dirname(p) or "."
        found.append(results.load(p))
    return found


def default_title(items: list[Loaded]) -> str:
    """What was run: the one folder's ``describe()``, or the kinds and names of several."""
    if len(items) == 1:
        return "ntkdyn " + items[0].describe()
    names = []
    for it in items:
        if isinstance(it, results.RunResult):
            names.append(f"run {it.config.get('name', it.run_id)}")
        elif isinstance(it, results.SweepResult):
            names.append(f"sweep {it.config.get('name', 'sweep')}")
        elif isinstance(it, results.StudyResult):
            names.append(f"study {it.study}")
        else:
            names.append(f"studies {', '.join(s.study for s in it.studies)}")
    return "ntkdyn results: " + "; ".join(names)


# --------------------------------------------------------------------------- studies
def _anchor(study: results.StudyResult) -> str:
    return "study-" + study.study.replace("_", "-")


def _differs_from_paper(c: results.Claim) -> bool:
    return c.differs_from_paper if c.differs_from_paper is not None else "Bu, Xu, Chen" in c.source


def studies_blocks(studies: list[results.StudyResult]) -> list:
    """Summary table, the results that differ from the claims, every claim, then each study."""
    claims = [(s, c) for s in studies for c in s.claims]
    counts = {r: sum(c.result == r for _, c in claims) for r in RESULT_ORDER}
    blocks: list = [
        Para(
            "Results: "
            + ", ".join(f"{counts[r]} {r}" for r in RESULT_ORDER if counts[r])
            + ". Every verdict line below was computed from the data by the study script that wrote "
            "it (verdicts.json); none is written by hand."
        )
    ]
    blocks.append(Heading(2, "Studies"))
    rows = []
    for s in studies:
        res: list[str] = [c.result for c in s.claims]
        rows.append(
            [
                [("#" + _anchor(s), s.study)],
                s.mode or "",
                [("code", str(s.doc.get("command", "")))],
                _fmt((s.doc.get("times_s") or {}).get("total")),
                [
                    span
                    for r in RESULT_ORDER
                    if res.count(r)
                    for span in (("badge", r), ("", f" {res.count(r)} "))
                ],
            ]
        )
    blocks.append(Table(["study", "mode", "command", "run time (s)", "verdicts"], rows))
    differ = [(s, c) for s, c in claims if c.result in ("differs", "partly")]
    for heading, group in (
        (
            "Where our results differ from the paper's claims",
            [x for x in differ if _differs_from_paper(x[1])],
        ),
        (
            "Where our results differ from other theory claims tested here",
            [x for x in differ if not _differs_from_paper(x[1])],
        ),
    ):
        blocks.append(Heading(2, heading))
        if not group:
            blocks.append(
                Para(
                    "None: every such claim tested here agrees with the data (or is marked "
                    "inconclusive/info)."
                )
            )
        else:
            blocks.append(
                Bullets(
                    [
                        [
                            ("badge", c.result),
                            ("", " "),
                            ("b", s.study),
                            ("", f" (claim from {c.source}): "),
                            ("i", c.claim),
                            ("", f". {c.line}"),
                        ]
                        for s, c in group
                    ]
                )
            )
    blocks.append(Heading(2, "Claims and verdicts"))
    blocks.append(
        Table(
            ["study", "claim", "source", "result", "verdict (computed)"],
            [[s.study, c.claim, c.source, [("badge", c.result)], c.line] for s, c in claims],
        )
    )
    for s in studies:
        blocks += study_blocks(s)
    return blocks


def study_blocks(s: results.StudyResult) -> list:
    doc = s.doc
    machine = doc.get("machine") or {}
    blocks: list = [Heading(2, f"{s.study}: {s.title}", _anchor(s))]
    if doc.get("summary"):
        blocks.append(Para(str(doc["summary"])))
    blocks.append(
        Para(
            [
                ("", "Mode "),
                ("b", str(s.mode)),
                ("", ", command "),
                ("code", str(doc.get("command"))),
                (
                    "",
                    f", run time {_fmt((doc.get('times_s') or {}).get('total'))} s "
                    f"({machine.get('cpus')} CPUs, {machine.get('jax_backend')}).",
                ),
            ]
        )
    )
    settings = [
        (k, ", ".join(f"{a}: {_fmt(b)}" for a, b in v.items()) if isinstance(v, dict) else _fmt(v))
        for k, v in (doc.get("settings") or {}).items()
    ]
    blocks.append(Details("Settings", [Table(["setting", "value"], settings)]))
    blocks.append(Heading(3, "Verdicts"))
    items = []
    for c in s.claims:
        win = (
            f" (window: steps {c.window[0]:.0f}-{c.window[1]:.0f})"
            if c.window and None not in c.window
            else ""
        )
        items.append([("badge", c.result), ("", " "), ("i", c.claim), ("", f"{win} [{c.source}]: {c.line}")])
    blocks.append(Bullets(items))
    for fig in doc.get("figures") or []:
        blocks.append(Figure(os.path.join(s.folder or ".", fig["file"]), fig.get("caption", "")))
    for t in doc.get("tables") or []:
        inner: list = [Table([str(c) for c in t["columns"]], [[_fmt(v) for v in row] for row in t["rows"]])]
        if t.get("note"):
            inner.append(Para(t["note"]))
        blocks.append(Details(f"Table: {t['title']}", inner))
    return blocks


# --------------------------------------------------------------------------- renderers
def _md_inline(x, cell: bool = False) -> str:
    out = []
    for style, text in _spans(x):
        text = str(text)
        if cell:
            text = text.replace("|", "\\|").replace("\n", " ")
        if style == "b":
            out.append(f"**{text}**")
        elif style == "i":
            out.append(f"*{text}*")
        elif style == "code":
            out.append(f"`{text}`")
        elif style == "badge":
            out.append(f"**{BADGE.get(text, (text.upper(),))[0]}**")
        elif style.startswith("#"):
            out.append(f"[{text}]({style})")
        else:
            out.append(text)
    return "".join(out)


def render_markdown(blocks: list, out_path: str, title: str) -> str:
    base = os.path.dirname(os.path.abspath(out_path))
    lines = [
        f"# {title}",
        "",
        f"Generated {datetime.datetime.now():%Y-%m-%d %H:%M} by `python -m ntkdyn.report`.",
        "",
    ]

    def emit(block) -> None:
        if isinstance(block, Heading):
            lines.extend(
                [f"{'#' * block.level} {block.text}"]
                + ([f'<a id="{block.anchor}"></a>'] if block.anchor else [])
                + [""]
            )
        elif isinstance(block, Para):
            lines.extend([_md_inline(block.spans), ""])
        elif isinstance(block, Bullets):
            lines.extend([f"- {_md_inline(item)}" for item in block.items] + [""])
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(_md_inline(c, True) for c in block.columns) + " |")
            lines.append("| " + " | ".join("---" for _ in block.columns) + " |")
            lines.extend("| " + " | ".join(_md_inline(c, True) for c in row) + " |" for row in block.rows)
            lines.append("")
        elif isinstance(block, Figure):
            rel = os.path.relpath(os.path.abspath(block.path), base).replace(os.sep, "/")
            shown = (
                f"![{os.path.basename(block.path)}]({rel})"
                if os.path.exists(block.path)
                else f"(figure missing: {os.path.basename(block.path)})"
            )
            lines.extend([shown, "", f"*{block.caption}*", ""])
        elif isinstance(block, Details):
            lines.extend([f"<details><summary>{html.escape(block.summary)}</summary>", ""])
            for b in block.blocks:
                emit(b)
            lines.extend(["</details>", ""])

    for block in blocks:
        emit(block)
    return "\n".join(lines).rstrip("\n") + "\n"


CSS = (
    "body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1400px;"
    "margin:2em auto;padding:0 1em;color:#1f2328;line-height:1.45}"
    "h1,h2,h3{border-bottom:1px solid #d0d7de;padding-bottom:.2em}"
    "table{border-collapse:collapse;font-size:12px;margin:.5em 0}"
    "td,th{border:1px solid #d0d7de;padding:3px 6px;vertical-align:top}th{background:#f6f8fa}"
    ".badge{color:#fff;border-radius:4px;padding:1px 6px;font-size:11px;font-weight:600;white-space:nowrap}"
    "img{max-width:100%;border:1px solid #d0d7de}code{background:#f6f8fa;padding:1px 4px}"
    "li{margin:.35em 0}.cap{font-style:italic;color:#57606a;font-size:13px}details{margin:.5em 0}"
)
MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def _html_inline(x) -> str:
    e = html.escape
    out = []
    for style, text in _spans(x):
        text = str(text)
        if style == "b":
            out.append(f"<b>{e(text)}</b>")
        elif style == "i":
            out.append(f"<i>{e(text)}</i>")
        elif style == "code":
            out.append(f"<code>{e(text)}</code>")
        elif style == "badge":
            label, colour = BADGE.get(text, (text.upper(), "#6e7781"))
            out.append(f'<span class="badge" style="background:{colour}">{e(label)}</span>')
        elif style.startswith("#"):
            out.append(f"<a href='{e(style)}'>{e(text)}</a>")
        else:
            out.append(e(text))
    return "".join(out)


def _data_uri(path: str, mime: str) -> str:
    """The file at ``path`` as a ``data:`` URI (base64), so that a page carries it inside itself."""
    with open(path, "rb") as fh:
        return f"data:{mime};base64," + base64.b64encode(fh.read()).decode("ascii")


def _download(path: str, mime: str) -> str:
    """A link that saves the file at ``path`` under its own name, the file embedded in the link."""
    name = html.escape(os.path.basename(path))
    return f'<a download="{name}" href="{_data_uri(path, mime)}">{name}</a>'


def _img(path: str) -> str:
    """A figure embedded in the page: png/svg/jpeg as an image, anything else (e.g. a PDF figure
    of a study) as a download link; both as ``data:`` URIs, no file beside the page."""
    mime = MIME.get(os.path.splitext(path)[1].lower())
    if mime is None:
        return f"<p>{_download(path, 'application/octet-stream')}</p>"
    return f'<img alt="{html.escape(os.path.basename(path))}" src="{_data_uri(path, mime)}">'


def render_html(blocks: list, out_path: str, title: str) -> str:
    e = html.escape
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{CSS}</style>"
        f"</head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p>Generated {datetime.datetime.now():%Y-%m-%d %H:%M} by <code>python -m ntkdyn.report</code>.</p>",
    ]

    def emit(block) -> None:
        if isinstance(block, Heading):
            anchor = f" id='{e(block.anchor)}'" if block.anchor else ""
            parts.append(f"<h{block.level}{anchor}>{e(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            parts.append(f"<p>{_html_inline(block.spans)}</p>")
        elif isinstance(block, Bullets):
            parts.append("<ul>" + "".join(f"<li>{_html_inline(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            parts.append(
                "<table><tr>"
                + "".join(f"<th>{_html_inline(c)}</th>" for c in block.columns)
                + "</tr>"
                + "".join(
                    "<tr>" + "".join(f"<td>{_html_inline(c)}</td>" for c in row) + "</tr>"
                    for row in block.rows
                )
                + "</table>"
            )
        elif isinstance(block, Figure):
            parts.append(
                _img(block.path)
                if os.path.exists(block.path)
                else f"<p>(figure missing: {e(os.path.basename(block.path))})</p>"
            )
            caption = e(block.caption)
            data = os.path.splitext(block.path)[0] + ".csv"  # plots.data_path: the figure's data
            if os.path.exists(data):  # the caption's file name becomes the embedded file
                name = e(os.path.basename(data))
                link = _download(data, "text/csv")
                caption = caption.replace(name, link) if name in caption else f"{caption} Data: {link}."
            parts.append(f"<p class='cap'>{caption}</p>")
        elif isinstance(block, Details):
            parts.append(f"<details><summary>{e(block.summary)}</summary>")
            for b in block.blocks:
                emit(b)
            parts.append("</details>")

    for block in blocks:
        emit(block)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- entry points
def page_blocks(items: list[Loaded], assets: str, figures: str = "png") -> list:
    """The blocks of the page: runs and sweeps in argument order, then every study together."""
    blocks: list = []
    studies: list[results.StudyResult] = []
    for i, it in enumerate(items):
        if isinstance(it, results.RunResult):
            blocks += run_blocks(it, assets, figures, i)
        elif isinstance(it, results.SweepResult):
            blocks += sweep_blocks(it, assets, figures, i)
        elif isinstance(it, results.StudyResult):
            studies.append(it)
        else:
            studies.extend(it.studies)
    if studies:
        blocks += studies_blocks(studies)
    return blocks


PAGE_SUFFIXES = {".html": "html", ".htm": "html", ".md": "md"}


def page_format(out: str, fmt: str | None = None) -> str:
    """The page format (``md`` | ``html``) of the page ``out``, from its suffix (``PAGE_SUFFIXES``).

    Raises:
        ValueError: the suffix is not one of ``PAGE_SUFFIXES`` (a ``.pdf`` would receive Markdown),
            or ``fmt`` is given and names another format than the suffix.
    """
    suffix = os.path.splitext(out)[1].lower()
    if suffix not in PAGE_SUFFIXES:
        allowed = ", ".join(f"{k} ({v})" for k, v in PAGE_SUFFIXES.items())
        raise ValueError(
            f"--out {out!r}: suffix {suffix or '(none)'!r} is not a page format; allowed: {allowed}"
        )
    if fmt is not None and fmt != PAGE_SUFFIXES[suffix]:
        raise ValueError(f"format {fmt!r} does not match --out {out!r} ({PAGE_SUFFIXES[suffix]})")
    return PAGE_SUFFIXES[suffix]


def write_report(
    paths: str | list[str],
    out: str = "report.html",
    fmt: str | None = None,
    figures: str = "png",
    title: str | None = None,
) -> str:
    """Render results folders into one page.

    Args:
        paths: results folder(s): runs, sweeps, studies or folders of studies.
        out: the page: ``.html``/``.htm`` (one self-contained file: figures and their data
            embedded) or ``.md`` (figures and their .csv data in ``<out without extension>_files/``,
            linked relative to the page).
        fmt: ``md`` | ``html`` | None (from ``out``); when given it must agree with ``out``'s suffix.
        figures: ``png`` | ``svg``: format of the figures drawn for runs and sweeps.
        title: the page title; default: what was run (``default_title``).
    Returns:
        ``out``.
    Raises:
        ValueError: ``out``'s suffix is not a page format (``page_format``), a bad ``figures``, or
            a path is not a results folder; raised before anything is written.
    """
    paths = [paths] if isinstance(paths, str) else list(paths)
    if figures not in ("png", "svg"):
        raise ValueError(f"figures: {figures!r} is not allowed; allowed: png, svg")
    fmt = page_format(out, fmt)
    items = find_results(paths)
    title = title or default_title(items)
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    drawn = any(isinstance(it, (results.RunResult, results.SweepResult)) for it in items)
    if fmt == "html":  # figures drawn into a temporary folder, embedded, then removed
        with tempfile.TemporaryDirectory(prefix="ntkdyn-report-") as assets:
            text = render_html(page_blocks(items, assets, figures), out, title)
    else:
        assets = os.path.splitext(os.path.abspath(out))[0] + "_files"
        if drawn:
            os.makedirs(assets, exist_ok=True)
        text = render_markdown(page_blocks(items, assets, figures), out, title)
    results.write_text(out, text)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ntkdyn.report", description=__doc__.split("\n")[0])
    p.add_argument(
        "results", nargs="+", help="results folders: runs, sweeps, studies (or a folder of studies)"
    )
    p.add_argument(
        "--out",
        default="report.html",
        help="output page: .html/.htm (one self-contained file) or .md (Markdown, figures in "
        "<name>_files/); other suffixes are refused; default report.html",
    )
    p.add_argument("--format", choices=("md", "html"), help="the format; must agree with --out's suffix")
    p.add_argument("--figures", choices=("png", "svg"), default="png", help="format of run and sweep figures")
    p.add_argument("--title", help="page title (default: what was run)")
    args = p.parse_args(argv)
    try:
        out = write_report(args.results, args.out, args.format, args.figures, args.title)
    except ValueError as exc:
        print(f"ntkdyn.report: {exc}", file=sys.stderr)
        return 2
    print(f"report: {out} ({page_format(out)}, {len(args.results)} results folder(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
