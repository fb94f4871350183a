"""The folder writer and the command line's handling of an existing folder and of bad input: a
single run does not overwrite a non-empty folder unless --overwrite; a sweep resumes only runs of
the same resolved config (a different one is an error naming the keys); stale zero-byte
temporaries are removed; bad input is one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import os

import pytest
import yaml

from ntkdyn.pipeline import claim
from ntkdyn.run import main

TINY = {
    "name": "tiny",
    "seed": 0,
    "dtype": "float64",
    "data": {"source": "sphere", "n": 6, "d": 3, "target": "teacher"},
    "model": {"name": "paper", "width": 32},
    "train": {"steps": 10, "kernel_at": [0, 10]},
    "theory": {"diffrax": False},
    "optimizers": [{"name": "gd", "eta": 0.5}],
}


def _config(tmp_path, raw, name="c.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def _one_line_exit_2(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    "raw, extra, words",
    [
        (TINY, ["--set", "train.steps=-3"], ["train.steps"]),
        (TINY, ["--set", "optimizers.0.name=nope"], ["nope"]),
        ({**TINY, "data": {"source": "npz", "path": "/nonexistent/x.npz"}}, [], ["/nonexistent/x.npz"]),
        ({**TINY, "sweep": {"seed": "zero"}}, [], ["sweep"]),
    ],
    ids=["bad_value", "bad_optimizer", "missing_file", "bad_sweep_axis"],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, raw, extra, words):
    err = _one_line_exit_2(capsys, [_config(tmp_path, raw), "--out", str(tmp_path / "o"), *extra])
    assert all(w in err for w in words), err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_out_is_a_file(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    err = _one_line_exit_2(capsys, [_config(tmp_path, TINY), "--out", str(target), "--quiet"])
    assert "is a file" in err


def test_single_run_does_not_overwrite_a_non_empty_folder(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    err = _one_line_exit_2(capsys, [_config(tmp_path, TINY), "--out", str(out), "--quiet"])
    assert "not empty" in err and "--overwrite" in err and (out / "notes.txt").read_text() == "mine"
    assert not (out / "metrics.json").exists()
    assert main([_config(tmp_path, TINY), "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert (out / "metrics.json").is_file()


def test_stale_zero_byte_temporaries_are_removed(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".tmp-abcmetrics.json").write_text("")  # an interrupted atomic write
    assert main([_config(tmp_path, TINY), "--out", str(out), "--quiet"]) == 0
    assert not any(n.startswith(".tmp-") for n in os.listdir(out))
    assert (out / "metrics.json").is_file()


def test_sweep_resumes_only_runs_of_the_same_config(tmp_path, capsys):
    raw = {**TINY, "name": "sw", "sweep": {"seed": [0, 1]}}
    out = tmp_path / "sweep"
    assert main([_config(tmp_path, raw), "--out", str(out), "--quiet"]) == 0
    run0 = out / "runs" / sorted(os.listdir(out / "runs"))[0] / "metrics.json"
    first = run0.stat().st_mtime_ns
    (out / "runs" / ".tmp-x").write_text("")
    capsys.readouterr()
    assert main([_config(tmp_path, raw), "--out", str(out)]) == 0  # same config: resumed, not recomputed
    assert "2 finished run(s) found, skipped" in capsys.readouterr().out
    assert run0.stat().st_mtime_ns == first and not (out / "runs" / ".tmp-x").exists()
    changed = {**raw, "train": {**raw["train"], "steps": 12, "kernel_at": [0, 12]}}
    err = _one_line_exit_2(capsys, [_config(tmp_path, changed, "d.yaml"), "--out", str(out), "--quiet"])
    assert "train.steps" in err and "train.kernel_at" in err and "--overwrite" in err
    assert run0.stat().st_mtime_ns == first
    assert main([_config(tmp_path, changed, "d.yaml"), "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert yaml.safe_load((run0.parent / "config.yaml").read_text())["train"]["steps"] == 12


def test_config_differences_name_every_dotted_key():
    old = {"a": 1, "b": {"c": [1, 2], "d": "x"}, "opts": [{"eta": 0.1}]}
    new = {"a": 1, "b": {"c": [1, 3]}, "opts": [{"eta": 0.2}], "e": None}
    assert claim.config_differences(old, new) == ["b.c", "b.d", "e", "opts.0.eta"]
    assert claim.config_differences(old, old) == []
