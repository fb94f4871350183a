"""Sweeps: grid expansion, shape groups, batched training = separate runs, one compilation per
shape, resume, and identical results on 1 and 4 (forced host) devices."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from ntkdyn import config, pipeline, sweep, train
from ntkdyn.run import main

BASE = {
    "name": "s",
    "dtype": "float64",
    "data": {"source": "sphere", "n": 10, "d": 4},
    "model": {"name": "paper", "width": 128},
    "train": {"steps": 60, "kernel_at": [0, 60]},
    "theory": {"diffrax": False},
    "optimizers": [{"name": "gd", "eta": 0.3}, {"label": "hb", "name": "hb", "eta": 0.1, "beta": 0.5}],
}


def test_expand_grid_and_aliases():
    axes = {"seed": {"range": [0, 3]}, "beta": [0.2, 0.7], "width": [64, 128]}
    runs = sweep.expand({**BASE, "sweep": axes})
    assert len(runs) == 12
    assert runs[0].values == {"seed": 0, "beta": 0.2, "width": 64}
    assert runs[-1].cfg.seed == 2 and runs[-1].cfg.model.width == 128
    # gd takes no beta
    assert runs[-1].cfg.optimizers[1].beta == 0.7 and runs[-1].cfg.optimizers[0].beta is None
    assert len({r.run_id for r in runs}) == 12
    groups = sweep.group_by_shape(runs)
    assert sorted(len(g) for g in groups) == [6, 6]  # width changes shapes; seed and beta do not


def test_expand_ranges_and_errors():
    assert sweep.axis_values("eta", {"geom": [1e-3, 1e-1, 3]}) == pytest.approx([1e-3, 1e-2, 1e-1])
    assert sweep.axis_values("eta", {"linspace": [0, 1, 3]}) == [0.0, 0.5, 1.0]
    with pytest.raises(config.ConfigError, match="sweep.eta: expected a list"):
        sweep.axis_values("eta", {"logspace": [1, 2]})
    with pytest.raises(config.ConfigError, match="beta: must be in"):
        sweep.expand({**BASE, "sweep": {"beta": [0.5, 1.5]}})
    with pytest.raises(config.ConfigError, match="no optimizer"):
        sweep.expand({**BASE, "optimizers": [{"name": "gd", "eta": 0.1}], "sweep": {"beta": [0.5]}})


@pytest.mark.parametrize(
    "axes, message",
    [
        ({"seed": {"range": [3, 3]}}, r"sweep.seed: \{'range': \[3, 3\]\} gives no values"),
        ({"eta": {"geom": [0.1, 1.0, 0]}}, "sweep.eta: .* gives no values"),
        ({"beta": []}, "sweep.beta: empty list"),
        ({}, "sweep: expected a non-empty mapping"),
    ],
)
def test_empty_grid_is_refused(axes, message):
    with pytest.raises(config.ConfigError, match=message):
        sweep.expand({**BASE, "sweep": axes})


def test_axis_over_a_key_that_does_not_apply_is_refused():
    """The alias d (data.d) on digits data: refused at the first grid point, naming the point."""
    raw = {**BASE, "data": {"source": "digits", "target": "pm1", "n": 10}, "sweep": {"d": [4, 8]}}
    with pytest.raises(config.ConfigError, match=r"sweep point \{'d': 4\}: data.d: does not apply"):
        sweep.expand(raw)


def test_notes_and_relative_steps_in_shape_groups():
    """Clipping notes do not split a group; a step relative to lambda_max is compiled per value."""
    runs = sweep.expand({**BASE, "train": {"steps": 60, "kernel_at": [0, 100]}, "sweep": {"seed": [0, 1]}})
    assert all(r.cfg.notes for r in runs) and len(sweep.group_by_shape(runs)) == 1
    raw = {**BASE, "optimizers": [{"name": "gd", "eta": {"per_lambda_max": 1.0}}]}
    runs = sweep.expand({**raw, "sweep": {"optimizers.0.eta.per_lambda_max": [0.5, 1.0]}})
    assert [r.cfg.optimizers[0].eta for r in runs] == [config.RelativeStep(0.5), config.RelativeStep(1.0)]


def test_batched_training_equals_separate_runs():
    runs = sweep.expand({**BASE, "sweep": {"seed": [0, 1], "eta": [0.05, 0.2]}})
    setups = [pipeline.prepare(r.cfg) for r in runs]
    cfgs = [r.cfg for r in runs]
    before = train.COMPILE_COUNT["n"]
    batched = pipeline.train_runs(cfgs, setups, 1)
    assert train.COMPILE_COUNT["n"] - before == 3  # init, chunk, finish: once for all runs
    again = pipeline.train_runs(cfgs, setups, 1)
    assert train.COMPILE_COUNT["n"] - before == 3  # equal shapes: no recompilation
    for cfg, setup, res, res2 in zip(cfgs, setups, batched, again):
        single = pipeline.train_runs([cfg], [setup], 1)[0]
        np.testing.assert_allclose(res.loss, single.loss, rtol=1e-12)
        np.testing.assert_array_equal(res.loss, res2.loss)
    assert not np.allclose(batched[0].loss, batched[1].loss)  # eta differs


def _write(tmp_path, raw):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_sweep_cli_summary_and_resume(tmp_path):
    raw = {**BASE, "sweep": {"seed": [0, 1], "beta": [0.3, 0.6]}}
    out = tmp_path / "out"
    assert main([_write(tmp_path, raw), "--out", str(out), "--quiet"]) == 0
    with open(out / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8  # 4 runs x 2 optimizers
    assert {
        "run_id",
        "seed",
        "beta",
        "label",
        "verdict",
        "fitted.linear_rate",
        "predicted.linear_rate",
        "deviation.discrete",
        "kernel_drift",
        "status",
    } <= set(rows[0])
    assert (out / "sweep.png").is_file()
    env = json.loads((out / "env.json").read_text())
    assert env["runs"] == 4
    run_dirs = sorted(os.listdir(out / "runs"))
    assert len(run_dirs) == 4
    # interrupted sweep: remove one run's completion marker; the re-run redoes only that run
    victim = out / "runs" / run_dirs[2]
    (victim / "metrics.json").unlink()
    stamp = {d: os.path.getmtime(out / "runs" / d / "metrics.json") for d in run_dirs if d != run_dirs[2]}
    assert main([_write(tmp_path, raw), "--out", str(out), "--quiet"]) == 0
    assert (victim / "metrics.json").is_file()
    for d, t in stamp.items():
        assert os.path.getmtime(out / "runs" / d / "metrics.json") == t
    with open(out / "summary.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 8
    # one run path, one writer: a sweep's run folder holds what a single run of its config writes
    first = out / "runs" / run_dirs[0]
    single = tmp_path / "single"
    assert main([str(first / "config.yaml"), "--out", str(single), "--quiet"]) == 0
    for name in ("data.npz", "kernels.npz", "trajectories.npz"):
        a, b = np.load(first / name), np.load(single / name)
        assert sorted(a.files) == sorted(b.files), name
        for key in a.files:
            if a[key].dtype.kind in "US":  # kernel_used
                assert a[key] == b[key], f"{name}:{key}"
            else:
                np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-12, err_msg=f"{name}:{key}")
    assert {"H0", "eigvals", "kernel_used", "loss_scale"} <= set(np.load(first / "kernels.npz").files)
    m_sweep = json.loads((first / "metrics.json").read_text())
    m_single = json.loads((single / "metrics.json").read_text())
    assert m_sweep["spectrum"] == m_single["spectrum"]
    for label, m in m_single["optimizers"].items():
        assert set(m_sweep["optimizers"][label]) == set(m), label
        assert m_sweep["optimizers"][label]["verdict"] == m["verdict"], label


SCRIPT = """
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
from ntkdyn import pipeline, sweep
raw = json.loads(sys.argv[1])
runs = sweep.expand(raw)
setups = [pipeline.prepare(r.cfg) for r in runs]
res = pipeline.train_runs([r.cfg for r in runs], setups, 1)
print(json.dumps({"devices": len(jax.devices()), "loss": [r.loss.tolist() for r in res]}))
"""


def test_same_results_on_one_and_four_devices():
    raw = {**BASE, "sweep": {"seed": [0, 1, 2], "eta": [0.05, 0.1]}}  # 6 runs: padded to 8 on 4 devices
    out = {}
    for count in (1, 4):
        flags = f"--xla_force_host_platform_device_count={count}"
        env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT, json.dumps(raw)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        out[count] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out[1]["devices"] == 1 and out[4]["devices"] == 4
    np.testing.assert_allclose(np.array(out[4]["loss"]), np.array(out[1]["loss"]), rtol=1e-10)


def test_shared_data_path_equals_separate_runs():
    """One seed, several eta: X, y and the output signs are shared (one wide GEMM); same numbers."""
    runs = sweep.expand({**BASE, "sweep": {"eta": [0.05, 0.1, 0.2]}})
    setups = [pipeline.prepare(r.cfg) for r in runs]
    assert train._all_equal([s.X for s in setups])
    assert not train._all_equal([setups[0].params, {"W": setups[0].params["W"] + 1}])
    batched = pipeline.train_runs([r.cfg for r in runs], setups, 1)
    for run, setup, res in zip(runs, setups, batched):
        single = pipeline.train_runs([run.cfg], [setup], 1)[0]
        np.testing.assert_allclose(res.loss, single.loss, rtol=1e-12)
        np.testing.assert_allclose(res.errors, single.errors, rtol=1e-12, atol=1e-14)


def test_sweep_over_schedules_groups_by_schedule():
    """A scheduled eta is compiled into the training program, so runs with different schedules (or
    different fields of one) form separate shape groups; seeds still batch within a group."""
    cosine = {"schedule": "cosine_decay", "init_value": 0.3, "decay_steps": 60}
    raw = {
        **BASE,
        "optimizers": [{"name": "gd", "eta": cosine}],
        "sweep": {"seed": [0, 1], "optimizers.0.eta.init_value": [0.1, 0.3]},
    }
    groups = sweep.group_by_shape(sweep.expand(raw))
    assert sorted(len(g) for g in groups) == [2, 2]
    for group in groups:
        values = {r.values["optimizers.0.eta.init_value"] for r in group}
        assert len(values) == 1 and {r.cfg.optimizers[0].eta["init_value"] for r in group} == values
        assert {r.cfg.seed for r in group} == {0, 1}
    # each schedule's group trains its seeds as one program (refused before): a constant schedule
    # {schedule: constant, value: v} trains exactly like the number v
    constant = {"schedule": "constant", "value": 0.2}
    axes = {"seed": [0, 1], "optimizers.0.eta.value": [0.2, 0.3]}
    scheduled = sweep.group_by_shape(
        sweep.expand({**BASE, "optimizers": [{"name": "gd", "eta": constant}], "sweep": axes})
    )
    numbers = sweep.group_by_shape(sweep.expand({**BASE, "sweep": {"seed": [0, 1], "eta": [0.2, 0.3]}}))
    assert [len(g) for g in scheduled] == [2, 2] and [len(g) for g in numbers] == [4]
    losses = {}
    for name, group in (("schedule", scheduled[0]), ("number", numbers[0])):
        setups = [pipeline.prepare(r.cfg) for r in group]
        losses[name] = [res.loss for res in pipeline.train_runs([r.cfg for r in group], setups, 0)]
    assert [r.values for r in numbers[0]][::2] == [{"seed": 0, "eta": 0.2}, {"seed": 1, "eta": 0.2}]
    for sched, number in zip(losses["schedule"], losses["number"][::2]):
        np.testing.assert_allclose(sched, number, rtol=1e-12)
    assert not np.allclose(losses["schedule"][0], losses["schedule"][1])  # the seeds differ
    # a whole schedule is not an axis value (summary.csv and sweep.png need scalars): named, with the fix
    with pytest.raises(
        config.ConfigError, match=r"sweep\.eta: .*not mappings.*optimizers\.0\.eta\.peak_value"
    ):
        sweep.expand({**BASE, "sweep": {"eta": [0.2, constant]}})
