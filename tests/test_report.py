"""``python -m ntkdyn.report`` on the folders the command line writes (the quickstart at 200 steps,
a small sweep) and on a study folder: the title says what was run, the tables hold the values of
metrics.json / summary.csv, figures come with their data."""

import base64
import csv
import io
import json
import os
import re
import tempfile

import numpy as np
from results_folders import quickstart_folder, sweep_folder

import ntkdyn
from ntkdyn import report


def _rows(text: str, first: str) -> list[list[str]]:
    """Markdown table rows whose first cell is ``first``, as lists of stripped cells."""
    return [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith(f"| {first} |")
    ]


def test_report_of_the_quickstart_run(tmp_path, capsys):
    folder = quickstart_folder()
    page = tmp_path / "q.md"
    assert report.main([folder, "--out", str(page)]) == 0
    text = page.read_text()
    title = text.splitlines()[0]
    assert title.startswith("# ntkdyn quickstart: paper model (m=4096) on sphere data (n=64, d=16, teacher)")
    assert "gd, hb, nag_c; 200 steps" in title and "Bu, Xu, Chen" not in title
    with open(os.path.join(folder, "metrics.json")) as fh:
        metrics = json.load(fh)
    cols = None
    for line in text.splitlines():
        if line.startswith("| label | optimizer |"):
            cols = [c.strip() for c in line.strip().strip("|").split("|")]
    for label, m in metrics["optimizers"].items():
        (row,) = [r for r in _rows(text, label) if len(r) == len(cols)]
        cell = dict(zip(cols, row))
        assert cell["verdict"] == m["verdict"] and cell["status"] == m["status"]
        assert float(cell["fitted rate"]) == float(f"{m['fitted']['linear_rate']:.4g}")
        assert float(cell["predicted rate"]) == float(f"{m['predicted']['linear_rate']:.4g}")
        assert float(cell["kernel drift"]) == float(f"{m['kernel_drift']:.4g}")
    # the figure is linked relative to the page, and its data equals the trajectories
    figure = tmp_path / "q_files" / "run0_quickstart_loss.png"
    assert "](q_files/run0_quickstart_loss.png)" in text and figure.stat().st_size > 10_000
    with open(tmp_path / "q_files" / "run0_quickstart_loss.csv", newline="") as fh:
        data = list(csv.DictReader(fh))
    traj = np.load(os.path.join(folder, "trajectories.npz"))
    hb = [r for r in data if r["label"] == "hb"]
    np.testing.assert_allclose([float(r["loss"]) for r in hb], traj["hb/loss"], rtol=1e-12)
    np.testing.assert_allclose([float(r["loss_ode_hr"]) for r in hb], traj["hb/loss_ode_hr"], rtol=1e-12)

    html_page = tmp_path / "q.html"
    assert report.main([folder, "--out", str(html_page), "--figures", "svg", "--title", "My run"]) == 0
    body = html_page.read_text()
    assert (
        body.startswith("<!DOCTYPE html>")
        and "<h1>My run</h1>" in body
        and "data:image/svg+xml;base64," in body
    )


def test_report_of_a_sweep_and_a_run_together(tmp_path):
    sweep, run = sweep_folder(), quickstart_folder()
    page = tmp_path / "both.md"
    assert ntkdyn.write_report([sweep, run], str(page)) == str(page)
    text = page.read_text()
    assert text.splitlines()[0] == "# ntkdyn results: sweep tiny_sweep; run quickstart"
    with open(os.path.join(sweep, "summary.csv"), newline="") as fh:
        summary = list(csv.DictReader(fh))
    header = next(line for line in text.splitlines() if line.startswith("| label | ") and "linear" in line)
    verdicts = [c.strip() for c in header.strip().strip("|").split("|")][1:]
    for label in ("gd", "hb"):
        (row,) = [r for r in _rows(text, label) if len(r) == len(verdicts) + 1]
        counted = {v: sum(s["label"] == label and s["verdict"] == v for s in summary) for v in verdicts}
        assert dict(zip(verdicts, map(int, row[1:]))) == counted
    assert (tmp_path / "both_files" / "sweep0_tiny_sweep.png").is_file()
    assert (tmp_path / "both_files" / "sweep0_tiny_sweep.csv").is_file()


def test_report_of_a_study_folder(tmp_path):
    study = tmp_path / "results" / "toy_study"
    study.mkdir(parents=True)
    claims = [
        {
            "id": "a",
            "claim": "HB is linear",
            "source": "Bu, Xu, Chen 2021",
            "result": "differs",
            "line": "sublinear in 2/3 | runs",
            "window": [10, 100],
            "numbers": {},
            "differs_from_paper": True,
        },
        {
            "id": "b",
            "claim": "ODE matches",
            "source": "theory",
            "result": "agrees",
            "line": "gap 1e-3",
            "window": None,
            "numbers": {},
            "differs_from_paper": False,
        },
    ]
    (study / "verdicts.json").write_text(
        json.dumps(
            {
                "study": "toy_study",
                "title": "A toy",
                "mode": "quick",
                "command": "python toy.py",
                "settings": {"eta": 0.1},
                "claims": claims,
                "figures": [],
                "tables": [],
            }
        )
    )
    page = tmp_path / "s.md"
    assert report.main([str(tmp_path / "results"), "--out", str(page)]) == 0
    text = page.read_text()
    assert text.splitlines()[0] == "# ntkdyn 1 study: toy_study"
    paper = text.split("## Where our results differ from the paper's claims")[1].split("## ")[0]
    assert "HB is linear" in paper and "ODE matches" not in paper
    assert "sublinear in 2/3 \\| runs" in text and "(window: steps 10-100)" in text


def test_report_bad_input(tmp_path, capsys):
    assert report.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.md")]) == 2
    assert "nowhere: not a folder" in capsys.readouterr().err
    assert report.main([str(tmp_path), "--out", str(tmp_path / "x.md")]) == 2
    assert "not a results folder" in capsys.readouterr().err


def test_report_refuses_a_suffix_it_cannot_write(tmp_path, capsys):
    """``--out x.pdf`` (and no suffix, or a --format that contradicts the suffix) stops with one line
    and exit 2 before anything is read or written; before, x.pdf received Markdown."""
    folder = quickstart_folder()
    for argv, named in (
        (["--out", str(tmp_path / "x.pdf")], "'.pdf'"),
        (["--out", str(tmp_path / "x")], "'(none)'"),
        (["--out", str(tmp_path / "x.html"), "--format", "md"], "'md'"),
    ):
        assert report.main([folder, *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and named in err and ".html" in err, err
    assert os.listdir(tmp_path) == []


def _embedded(body: str, name: str) -> bytes:
    """The bytes of the file embedded in an HTML page as ``download="name" href="data:..."``."""
    start = body.index(f'download="{name}" href="data:')
    uri = body[start:].split('href="', 1)[1].split('"', 1)[0]
    return base64.b64decode(uri.split(";base64,", 1)[1])


def test_report_html_is_one_self_contained_file(tmp_path, monkeypatch):
    """An HTML page of a run and a sweep is the only file written: no ``_files/`` folder beside it,
    no drawing folder left in the temporary directory; its figures are embedded images and the
    data behind the loss figure is embedded as .csv, equal to the run's trajectories.npz."""
    run, sweep = quickstart_folder(), sweep_folder()
    scratch = tmp_path / "scratch"  # the temporary directory of this call (the drawing folder)
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    out = tmp_path / "out"
    out.mkdir()
    page = out / "page.html"
    assert report.main([run, sweep, "--out", str(page)]) == 0
    assert os.listdir(out) == ["page.html"] and os.listdir(scratch) == []
    body = page.read_text()
    images = [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', body)]
    assert len(images) >= 2 and all(im.startswith(b"\x89PNG\r\n\x1a\n") for im in images)
    assert 'src="' not in body.replace('src="data:', "")  # no image read from a path
    data = list(csv.DictReader(io.StringIO(_embedded(body, "run0_quickstart_loss.csv").decode())))
    traj = np.load(os.path.join(run, "trajectories.npz"))
    gd = [r for r in data if r["label"] == "gd"]
    np.testing.assert_allclose([float(r["loss"]) for r in gd], traj["gd/loss"], rtol=1e-12)
    np.testing.assert_allclose([float(r["step"]) for r in gd], traj["gd/step"])
    with open(os.path.join(sweep, "sweep.csv"), "rb") as fh:  # the CLI drew the same figure's data
        assert _embedded(body, "sweep1_tiny_sweep.csv") == fh.read()
