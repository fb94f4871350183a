"""Theory faces as objects: a face defined only in this file, once registered, appears in
metrics.json, summary.csv, the command line's table, the loss figure's data, the report and
``ntkdyn.load`` -- no other file knows it. Also: every shipped face keeps the ``Face`` protocol,
and a folder read back gives an object equal to the one the run returned (round trip)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml

import ntkdyn
from ntkdyn import rates, report
from ntkdyn.pipeline import faces
from ntkdyn.run import main

BASE = {
    "name": "toy",
    "seed": 3,
    "dtype": "float64",
    "data": {"source": "sphere", "n": 8, "d": 3, "target": "teacher"},
    "model": {"name": "paper", "width": 64},
    "train": {"steps": 40, "record_every": 2, "kernel_at": [0, 40]},
    "theory": {"diffrax": False},
    "rates": {"window": [0.1, 1.0]},
    "optimizers": [{"name": "gd", "eta": 0.5}],
}


class DoubledRecurrence:
    """A toy face: twice the kernel recurrence's loss (a prediction known to be off by a factor 2
    while the recurrence is close, so its deviation is near 1/2: |L - 2 L_d| / (2 L_d))."""

    name = "toy"
    compares = ("toy",)
    series = (faces.Series("loss_toy", ":", "toy (2 x recurrence)"),)

    def applies(self, ctx):
        return ctx.spec.has_theory or "toy: needs a recurrence"

    def predict(self, ctx, earlier):
        return faces.FaceValue(arrays={"loss_toy": 2.0 * faces.merged_arrays(earlier)["loss_discrete"]})


@pytest.fixture
def toy_face():
    face = faces.register(DoubledRecurrence())
    try:
        yield face
    finally:
        faces.unregister("toy")
    assert all(f.name != "toy" for f in faces.FACES)


def _write(path, raw):
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def test_shipped_faces_keep_the_protocol_and_unique_names():
    assert all(isinstance(f, faces.Face) for f in faces.FACES)
    names = [f.name for f in faces.FACES]
    assert len(set(names)) == len(names)
    assert faces.compared_names() == ["discrete", "ode", "ode_hr", "linearized", "quadratic"]
    with pytest.raises(ValueError, match="registered already"):
        faces.register(faces.FACES[0])
    with pytest.raises(ValueError, match="lacks"):
        faces.register(object())


def test_a_face_defined_here_reaches_every_output(toy_face, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([_write(tmp_path / "toy.yaml", BASE), "--out", str(out), "--quiet"]) == 0
    table = capsys.readouterr().out
    # metrics.json: its deviation, log10 gap and verdict, computed by the shared assembly
    m = json.loads((out / "metrics.json").read_text())["optimizers"]["gd"]
    traj = np.load(out / "trajectories.npz")
    loss, toy, disc = traj["gd/loss"], traj["gd/loss_toy"], traj["gd/loss_discrete"]
    np.testing.assert_array_equal(toy, 2.0 * disc)
    floor = rates.loss_floor("float64", float(loss[0]))
    keep = (toy > floor) & (loss > floor)
    expected = float(np.max(np.abs(loss[keep] - toy[keep]) / toy[keep]))  # not rates.max_relative_gap
    assert m["deviation"]["toy"] == pytest.approx(expected, rel=1e-12)
    # L / L_d lies in [1 - d, 1 + d] (d: the recurrence's deviation),
    # so |L - 2 L_d| / (2 L_d) lies in [(1 - d)/2, (1 + d)/2]
    d = m["deviation"]["discrete"]
    assert 0.5 * (1 - d) - 1e-12 <= m["deviation"]["toy"] <= 0.5 * (1 + d) + 1e-12
    assert "toy" in m["theory_verdicts"] and m["deviation_log10"]["toy"]["steps"] > 0
    # the command line's table
    head = table.splitlines()[0]
    assert "dev toy" in head and "dev discrete" in head
    # the loss figure's data
    with open(out / "loss.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    np.testing.assert_allclose([float(r["loss_toy"]) for r in rows], toy, rtol=1e-12)
    # ntkdyn.load
    run = ntkdyn.load(str(out))
    assert run["gd"].deviation.get("toy") == m["deviation"]["toy"]
    # the report
    page = tmp_path / "page.md"
    assert report.main([str(out), "--out", str(page)]) == 0
    assert "dev. toy" in page.read_text()
    # summary.csv of a sweep
    sweep_out = tmp_path / "sweep"
    raw = {**BASE, "name": "toy_sweep", "sweep": {"seed": [0, 1]}}
    assert main([_write(tmp_path / "sweep.yaml", raw), "--out", str(sweep_out), "--quiet"]) == 0
    with open(sweep_out / "summary.csv", newline="") as fh:
        srows = list(csv.DictReader(fh))
    assert len(srows) == 2 and all(
        float(r["deviation.toy"]) > 0.5 * (1 - float(r["deviation.discrete"])) for r in srows
    )
    sweep = ntkdyn.load(str(sweep_out))
    assert all(row.deviation.get("toy") is not None for row in sweep.rows)


def test_a_face_that_does_not_apply_gives_its_reason_as_the_note(toy_face, tmp_path):
    raw = {
        **BASE,
        "optimizers": [{"name": "adam", "eta": 0.01}],
        "theory": {"diffrax": False, "linearized": "never"},
    }
    run = ntkdyn.run_study(raw)
    assert run["adam"].note == "toy: needs a recurrence"
    assert "toy" not in run["adam"].deviation.values and "loss_toy" not in run["adam"].trajectory


@pytest.mark.parametrize(
    "changes",
    [
        {},  # full batch: recurrence, ODE, diffrax, high-resolution ODE, held-out
        {"train": {"steps": 40, "record_every": 2, "kernel_at": [0, 40], "batch_size": 4, "sampling_runs": 2},
         "theory": {"diffrax": False, "linearized": "always", "mc_runs": 16}},
    ],
    ids=["full_batch", "mini_batch"],
)  # fmt: skip
def test_a_folder_reads_back_as_an_equal_result(tmp_path, changes):
    raw = {
        **BASE,
        "data": {**BASE["data"], "test": {"n": 5}},
        "theory": {"diffrax": True},
        "optimizers": [{"name": "gd", "eta": 0.5}, {"name": "hb", "eta": 0.3, "beta": 0.5}],
        **changes,
    }
    run = ntkdyn.run_study(raw, out=str(tmp_path / "run"))
    back = ntkdyn.load(str(tmp_path / "run"))
    assert back.spectrum == run.spectrum
    assert back.optimizers == run.optimizers  # every field, typed (trajectories compared below)
    assert back.to_json() == json.loads((tmp_path / "run" / "metrics.json").read_text())
    for label, o in run.optimizers.items():
        assert set(back[label].trajectory) == set(o.trajectory)
        for k, v in o.trajectory.items():
            np.testing.assert_array_equal(back[label].trajectory[k], v)
    gd = back["gd"]
    assert gd.loss_floor is not None and gd.test is not None
    if changes:
        assert gd.stochastic is not None and gd.stochastic.linearized is not None
        assert gd.linearized is not None and gd.linearized.runs == 2
        assert gd.predicted.full_batch_linear_rate is not None
    else:
        assert gd.regime is not None and gd.regime.horizon is not None
        assert gd.ode_closed_vs_diffrax is not None and gd.ode_closed_vs_diffrax < 1e-5
        assert back["hb"].ode_hr is not None
