"""One page from the results folders of the studies in ``experiments/``.

    python -m ntkdyn.report RESULTS... [--out FILE] [--format md|html] [--title TEXT]

Each RESULTS argument is a folder holding a ``verdicts.json`` (written by ``experiments/<study>.py``)
or a folder whose sub-folders hold one. The page shows, for every study, its settings, the verdict
lines (each computed from the data by the study; nothing here is written by hand), its figures and
tables, and at the top a summary of every claim and a list of the results that differ from the claim
(of the paper or of theory). HTML pages embed the figures (one self-contained file); Markdown pages
link them by paths relative to the page. The format follows the extension of ``--out``
(``.html``/``.htm`` -> HTML, otherwise Markdown) unless ``--format`` is given.
Exit status: 0 written, 2 no verdicts found or unreadable input.
"""
from __future__ import annotations

import argparse
import base64
import datetime
import html
import json
import os
import sys

from ntkdyn import results

RESULT_ORDER = ("differs", "partly", "inconclusive", "agrees", "info")
BADGE = {"agrees": ("AGREES", "#1a7f37"), "differs": ("DIFFERS", "#cf222e"), "partly": ("PARTLY", "#bf8700"),
         "inconclusive": ("INCONCLUSIVE", "#6e7781"), "info": ("INFO", "#0969da")}


def find_studies(paths: list[str]) -> list[tuple[str, dict]]:
    """(folder, verdicts) for every folder given or directly below one given, in argument order."""
    found: list[tuple[str, dict]] = []
    for p in paths:
        if os.path.isfile(p) and os.path.basename(p) == "verdicts.json":
            p = os.path.dirname(p) or "."
        candidates = [p] if os.path.isfile(os.path.join(p, "verdicts.json")) else (
            [os.path.join(p, d) for d in sorted(os.listdir(p)) if os.path.isfile(os.path.join(p, d, "verdicts.json"))]
            if os.path.isdir(p) else [])
        if not candidates:
            raise ValueError(f"{p}: no verdicts.json here or in its sub-folders")
        for folder in candidates:
            path = os.path.join(folder, "verdicts.json")
            try:
                with open(path) as fh:
                    doc = json.load(fh)
            except (OSError, json.JSONDecodeError) as exc:
                raise ValueError(f"{path}: cannot read ({exc})") from None
            if not isinstance(doc, dict) or "claims" not in doc:
                raise ValueError(f"{path}: not a study's verdicts.json (no 'claims')")
            found.append((folder, doc))
    return found


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def _settings_items(settings: dict) -> list[tuple[str, str]]:
    out = []
    for k, v in settings.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}: {_fmt(b)}" for a, b in v.items())
        out.append((k, _fmt(v) if not isinstance(v, str) else v))
    return out


def _all_claims(studies):
    for folder, doc in studies:
        for c in doc.get("claims", []):
            yield folder, doc, c


def _differ_groups(studies):
    """[(heading, [(folder, doc, claim)])]: results that differ (fully or partly) from the paper's own
    claims (``differs_from_paper``), then from the other claims (NTK and ODE theory)."""
    differ = [(f, d, c) for f, d, c in _all_claims(studies) if c.get("result") in ("differs", "partly")]
    from_paper = lambda c: c.get("differs_from_paper", "Bu, Xu, Chen" in str(c.get("source", "")))
    paper = [x for x in differ if from_paper(x[2])]
    other = [x for x in differ if not from_paper(x[2])]
    return [("Where our results differ from the paper's claims", paper),
            ("Where our results differ from other theory claims tested here", other)]


def _counts(studies) -> dict:
    counts = {r: 0 for r in RESULT_ORDER}
    for _, _, c in _all_claims(studies):
        counts[c.get("result", "info")] = counts.get(c.get("result", "info"), 0) + 1
    return counts


# --------------------------------------------------------------------------- Markdown
def _md_cell(v) -> str:
    return _fmt(v).replace("|", "\\|").replace("\n", " ")


def render_markdown(studies, out_path: str, title: str) -> str:
    base = os.path.dirname(os.path.abspath(out_path))
    lines = [f"# {title}", "",
             f"Generated {datetime.datetime.now():%Y-%m-%d %H:%M} by `python -m ntkdyn.report` from "
             f"{len(studies)} results folder(s). Every verdict line below was computed from the data by the study "
             "script that wrote it (`verdicts.json`); none is written by hand.", ""]
    counts = _counts(studies)
    lines += ["Results: " + ", ".join(f"{counts[r]} {r}" for r in RESULT_ORDER if counts.get(r)), ""]
    lines += ["## Studies", "", "| study | mode | command | run time (s) | verdicts |", "| --- | --- | --- | --- | --- |"]
    for folder, doc in studies:
        res = [c["result"] for c in doc["claims"]]
        summary = ", ".join(f"{res.count(r)} {r}" for r in RESULT_ORDER if res.count(r))
        lines.append(f"| [{_md_cell(doc.get('study'))}](#{_anchor(doc)}) | {_md_cell(doc.get('mode'))} | "
                     f"`{_md_cell(doc.get('command'))}` | {_md_cell((doc.get('times_s') or {}).get('total'))} | {summary} |")
    for heading, group in _differ_groups(studies):
        lines += ["", f"## {heading}", ""]
        if not group:
            lines.append("None: every such claim tested here agrees with the data (or is marked inconclusive/info).")
        for _, doc, c in group:
            lines.append(f"- **{BADGE[c['result']][0]}** ({doc['study']}; claim from {c.get('source', '')}): "
                         f"*{c['claim']}*. {c['line']}")
    lines += ["", "## Claims and verdicts", "", "| study | claim | source | result | verdict (computed) |",
              "| --- | --- | --- | --- | --- |"]
    for _, doc, c in _all_claims(studies):
        lines.append(f"| {_md_cell(doc['study'])} | {_md_cell(c['claim'])} | {_md_cell(c.get('source'))} | "
                     f"**{BADGE.get(c['result'], (c['result'],))[0]}** | {_md_cell(c['line'])} |")
    for folder, doc in studies:
        lines += ["", f"## {doc.get('study')}: {doc.get('title', '')}", f'<a id="{_anchor(doc)}"></a>', ""]
        if doc.get("summary"):
            lines += [doc["summary"], ""]
        lines += [f"Mode **{doc.get('mode')}**, command `{doc.get('command')}`, run time "
                  f"{(doc.get('times_s') or {}).get('total')} s ({doc.get('machine', {}).get('cpus')} CPUs, "
                  f"{doc.get('machine', {}).get('jax_backend')}).", ""]
        lines += ["<details><summary>Settings</summary>", ""]
        lines += [f"- **{k}**: {v}" for k, v in _settings_items(doc.get("settings", {}))]
        lines += ["", "</details>", "", "### Verdicts", ""]
        for c in doc["claims"]:
            win = f" (window: steps {c['window'][0]:.0f}-{c['window'][1]:.0f})" if c.get("window") and None not in c["window"] else ""
            lines.append(f"- **{BADGE.get(c['result'], (c['result'],))[0]}** *{c['claim']}*{win} [{c.get('source', '')}]: {c['line']}")
        for figd in doc.get("figures", []):
            path = os.path.join(folder, figd["file"])
            rel = os.path.relpath(os.path.abspath(path), base)
            lines += ["", f"![{figd['file']}]({rel.replace(os.sep, '/')})" if os.path.exists(path)
                      else f"(figure missing: {figd['file']})", "", f"*{figd.get('caption', '')}*"]
        for t in doc.get("tables", []):
            lines += ["", f"<details><summary>Table: {t['title']}</summary>", "",
                      "| " + " | ".join(_md_cell(c) for c in t["columns"]) + " |",
                      "| " + " | ".join("---" for _ in t["columns"]) + " |"]
            lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in t["rows"]]
            if t.get("note"):
                lines += ["", t["note"]]
            lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def _anchor(doc) -> str:
    return "study-" + str(doc.get("study", "x")).replace("_", "-")


# --------------------------------------------------------------------------- HTML
CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1400px;margin:2em auto;
padding:0 1em;color:#1f2328;line-height:1.45}h1,h2,h3{border-bottom:1px solid #d0d7de;padding-bottom:.2em}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}td,th{border:1px solid #d0d7de;padding:3px 6px;
vertical-align:top}th{background:#f6f8fa}.badge{color:#fff;border-radius:4px;padding:1px 6px;font-size:11px;
font-weight:600;white-space:nowrap}img{max-width:100%;border:1px solid #d0d7de}code{background:#f6f8fa;padding:1px 4px}
.claim{margin:.35em 0}.cap{font-style:italic;color:#57606a;font-size:13px}details{margin:.5em 0}"""


def _badge(result: str) -> str:
    text, colour = BADGE.get(result, (result.upper(), "#6e7781"))
    return f'<span class="badge" style="background:{colour}">{text}</span>'


def _img(path: str) -> str:
    with open(path, "rb") as fh:
        data = base64.b64encode(fh.read()).decode("ascii")
    return f'<img alt="{html.escape(os.path.basename(path))}" src="data:image/png;base64,{data}">'


def render_html(studies, out_path: str, title: str) -> str:
    e = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{e(title)}</h1>",
             f"<p>Generated {datetime.datetime.now():%Y-%m-%d %H:%M} by <code>python -m ntkdyn.report</code> from "
             f"{len(studies)} results folder(s). Every verdict line was computed from the data by the study script that "
             "wrote it (<code>verdicts.json</code>); none is written by hand.</p>"]
    counts = _counts(studies)
    parts.append("<p>Results: " + ", ".join(f"{_badge(r)} {counts[r]}" for r in RESULT_ORDER if counts.get(r)) + "</p>")
    parts.append("<h2>Studies</h2><table><tr><th>study</th><th>mode</th><th>command</th><th>run time (s)</th><th>verdicts</th></tr>")
    for folder, doc in studies:
        res = [c["result"] for c in doc["claims"]]
        parts.append(f"<tr><td><a href='#{_anchor(doc)}'>{e(str(doc.get('study')))}</a></td><td>{e(str(doc.get('mode')))}</td>"
                     f"<td><code>{e(str(doc.get('command')))}</code></td><td>{e(_fmt((doc.get('times_s') or {}).get('total')))}</td>"
                     f"<td>{' '.join(f'{_badge(r)} {res.count(r)}' for r in RESULT_ORDER if res.count(r))}</td></tr>")
    parts.append("</table>")
    for heading, group in _differ_groups(studies):
        parts.append(f"<h2>{e(heading)}</h2>")
        if not group:
            parts.append("<p>None: every such claim tested here agrees with the data (or is marked inconclusive/info).</p>")
        else:
            parts.append("<ul>" + "".join(
                f"<li class='claim'>{_badge(c['result'])} <b>{e(doc['study'])}</b> (claim from {e(c.get('source', ''))}): "
                f"<i>{e(c['claim'])}</i>. {e(c['line'])}</li>" for _, doc, c in group) + "</ul>")
    parts.append("<h2>Claims and verdicts</h2><table><tr><th>study</th><th>claim</th><th>source</th><th>result</th>"
                 "<th>verdict (computed)</th></tr>")
    for _, doc, c in _all_claims(studies):
        parts.append(f"<tr><td>{e(doc['study'])}</td><td>{e(c['claim'])}</td><td>{e(c.get('source', ''))}</td>"
                     f"<td>{_badge(c['result'])}</td><td>{e(c['line'])}</td></tr>")
    parts.append("</table>")
    for folder, doc in studies:
        parts.append(f"<h2 id='{_anchor(doc)}'>{e(str(doc.get('study')))}: {e(doc.get('title', ''))}</h2>")
        if doc.get("summary"):
            parts.append(f"<p>{e(doc['summary'])}</p>")
        m = doc.get("machine", {})
        parts.append(f"<p>Mode <b>{e(str(doc.get('mode')))}</b>, command <code>{e(str(doc.get('command')))}</code>, run time "
                     f"{e(_fmt((doc.get('times_s') or {}).get('total')))} s ({e(str(m.get('cpus')))} CPUs, "
                     f"{e(str(m.get('jax_backend')))}).</p>")
        parts.append("<details><summary>Settings</summary><ul>" + "".join(
            f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in _settings_items(doc.get("settings", {}))) + "</ul></details>")
        parts.append("<h3>Verdicts</h3><ul>")
        for c in doc["claims"]:
            win = (f" (window: steps {c['window'][0]:.0f}-{c['window'][1]:.0f})"
                   if c.get("window") and None not in c["window"] else "")
            parts.append(f"<li class='claim'>{_badge(c['result'])} <i>{e(c['claim'])}</i>{e(win)} "
                         f"[{e(c.get('source', ''))}]: {e(c['line'])}</li>")
        parts.append("</ul>")
        for figd in doc.get("figures", []):
            path = os.path.join(folder, figd["file"])
            parts.append(_img(path) if os.path.exists(path) else f"<p>(figure missing: {e(figd['file'])})</p>")
            parts.append(f"<p class='cap'>{e(figd.get('caption', ''))}</p>")
        for t in doc.get("tables", []):
            parts.append(f"<details><summary>Table: {e(t['title'])}</summary><table><tr>"
                         + "".join(f"<th>{e(str(c))}</th>" for c in t["columns"]) + "</tr>"
                         + "".join("<tr>" + "".join(f"<td>{e(_fmt(v))}</td>" for v in row) + "</tr>" for row in t["rows"])
                         + "</table>" + (f"<p class='cap'>{e(t['note'])}</p>" if t.get("note") else "") + "</details>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ntkdyn.report", description=__doc__.split("\n")[0])
    p.add_argument("results", nargs="+", help="results folders of experiments/<study>.py (or their parent)")
    p.add_argument("--out", default="report.html", help="output file (.html: self-contained; .md: Markdown with "
                   "relative image links); default report.html")
    p.add_argument("--format", choices=("md", "html"), help="override the format chosen from --out")
    p.add_argument("--title", default="ntkdyn: reproducing Bu, Xu, Chen (2021) and where the theory stops matching")
    args = p.parse_args(argv)
    try:
        studies = find_studies(args.results)
    except ValueError as exc:
        print(f"ntkdyn.report: {exc}", file=sys.stderr)
        return 2
    fmt = args.format or ("html" if args.out.lower().endswith((".html", ".htm")) else "md")
    folder = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(folder, exist_ok=True)
    text = (render_html if fmt == "html" else render_markdown)(studies, args.out, args.title)
    results.write_text(args.out, text)
    n = sum(len(doc["claims"]) for _, doc in studies)
    print(f"report: {args.out} ({fmt}, {len(studies)} studies, {n} verdicts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
