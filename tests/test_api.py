"""The Python API: typed results that keep metrics.json's schema, ``load`` of run and sweep
folders written by the command line, and a user's own model (plain function, flax Linen, NNX)
through ``run_study``, compared with the built-in model and with a hand-built Jacobian Gram."""

import csv
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from results_folders import quickstart_folder, sweep_folder

import ntkdyn
from ntkdyn import models, results
from ntkdyn import run as cli

# --------------------------------------------------------------------------- typed results


def test_metrics_round_trip_on_a_real_run():
    folder = quickstart_folder()
    with open(os.path.join(folder, "metrics.json")) as fh:
        doc = json.load(fh)
    run = results.RunResult.from_json(doc)
    assert run.to_json() == doc  # every key is a typed field: nothing lost, nothing added
    for label, entry in doc["optimizers"].items():
        o = run[label]
        assert (o.verdict, o.status, o.eta) == (entry["verdict"], entry["status"], entry["eta"])
        assert o.fitted.linear_rate == entry["fitted"]["linear_rate"]
        assert o.predicted.linear_rate == entry["predicted"]["linear_rate"]
        assert o.deviation.discrete == entry["deviation"]["discrete"]
    assert run.spectrum.lambda_min == doc["spectrum"]["lambda_min"]


def test_every_key_is_a_field_unknown_keys_are_dropped_and_failed_entries_keep_their_form():
    """No untyped ``extra``: the keys of the schema become fields (nested ones typed), keys of no
    field (a newer writer's) are dropped when read, and a failed entry keeps its short form."""
    entry = {
        "optimizer": "hb",
        "eta": 0.1,
        "beta": 0.5,
        "r": None,
        "status": "ok",
        "verdict": "linear",
        "diverged_at": None,
        "horizon": {"k": 3},
        "fitted": {
            "linear_rate": 0.9,
            "r2_linear": 1.0,
            "power_exponent": -2.0,
            "r2_power": 0.8,
            "window": [2, 10],
            "margin": 0.2,
        },
        "predicted": {"linear_rate": 0.8, "stable": True},
        "deviation": {"discrete": 0.1, "ode": None, "ode_hr": None, "linearized": 0.3},
        "deviation_log10": {"discrete": {"max": 0.5, "mean": 0.1, "steps": 7}},
        "loss_floor": {"floor": 0.0, "null_modes": 0, "rtol": 1e-12, "subtracted": False},
        "regime": {"regime": "linear", "rate": 0.8, "horizon": 5.0, "horizon_kind": "slowest-mode time"},
        "stochastic": {
            "batch_size": 2, "sampling": "shuffle", "sampling_runs": 3, "mc_runs": 9, "mean": "monte_carlo",
            "inside_band": 1.0, "all_inside": True, "first_outside_step": None,
            "mbb": {
                "beta": 2.0, "lam_1": 1.0, "lam_n": 0.1,
                "smooth_knee_batch_size": 3.0, "smooth_step_size": 0.5,
            },
            "linearized": {"inside_band": 0.5, "all_inside": False, "first_outside_step": 4},
        },
        "linearized": {"diverged_at": None, "runs": 3},
        "theory_verdicts": {"discrete": "linear"},
        "kernel_drift": 0.01,
        "ode": "e' = -K e",
        "grad_norm": [1.0, 0.5],
    }  # fmt: skip
    doc = {
        "spectrum": {"lambda_min": 0.1, "lambda_max": 2.0, "kappa": 20.0, "loss_scale": 1.0, "new": 1},
        "optimizers": {
            "hb": entry,
            "bad": {"optimizer": "gd", "eta": 1.0, "status": "failed", "error": "boom"},
        },
        "schema": 2,
    }
    run = results.RunResult.from_json(json.loads(json.dumps(doc)))
    hb = run["hb"]
    assert hb.fitted.margin == 0.2 and hb.fitted.window == (2, 10) and hb.predicted.stable is True
    assert hb.deviation.linearized == 0.3 and hb.deviation_log10["discrete"].steps == 7
    assert hb.regime.horizon == 5.0 and hb.regime.window_position is None and hb.loss_floor.null_modes == 0
    assert (
        hb.stochastic.mbb.smooth_knee_batch_size == 3.0 and hb.stochastic.linearized.first_outside_step == 4
    )
    assert hb.linearized.runs == 3
    written = run.to_json()
    assert "schema" not in written and "new" not in written["spectrum"]
    out = written["optimizers"]["hb"]
    assert "horizon" not in out and "grad_norm" not in out
    for key in ("deviation", "deviation_log10", "loss_floor", "stochastic", "linearized", "theory_verdicts"):
        assert out[key] == entry[key], key
    assert out["regime"] == {**entry["regime"], "window_position": None}
    assert {k: out["fitted"][k] for k in entry["fitted"]} == entry["fitted"]
    assert results.RunResult.from_json(written) == run  # what is written reads back equal
    assert written["optimizers"]["bad"] == doc["optimizers"]["bad"]
    for obj in (run, hb, hb.fitted, hb.predicted, hb.stochastic, run.spectrum):
        assert not hasattr(obj, "extra")


# --------------------------------------------------------------------------- load
def test_load_run_folder_typed_metrics_and_long_table():
    folder = quickstart_folder()
    run = ntkdyn.load(folder)
    assert isinstance(run, results.RunResult)
    assert list(run.optimizers) == ["gd", "hb", "nag_c"] and run.config["name"] == "quickstart"
    assert run.describe().startswith("quickstart: paper model (m=4096) on sphere data (n=64, d=16")
    traj = np.load(os.path.join(folder, "trajectories.npz"))
    np.testing.assert_array_equal(run.kernels["H0"], np.load(os.path.join(folder, "kernels.npz"))["H0"])
    table = run.table(pandas=False)
    assert len(table["step"]) == sum(traj[f"{lab}/step"].size for lab in ("gd", "hb", "nag_c")) == 3 * 201
    for lab in ("gd", "hb", "nag_c"):
        rows = table["label"] == lab
        np.testing.assert_array_equal(table["step"][rows], traj[f"{lab}/step"])
        for col in ("loss", "loss_discrete", "loss_ode", "loss_ode_diffrax"):
            np.testing.assert_array_equal(table[col][rows], traj[f"{lab}/{col}"])
    assert np.all(np.isnan(table["loss_ode_hr"][table["label"] == "gd"]))  # GD declares no high-res ODE
    assert set(table["run_id"]) == {"quickstart"}
    pd = pytest.importorskip("pandas")
    frame = run.trajectories
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == list(table)
    np.testing.assert_array_equal(frame["loss"].to_numpy(), table["loss"])


def test_sharpness_of_the_recorded_kernels(tmp_path):
    from ntkdyn import plots

    folder = quickstart_folder()
    run = ntkdyn.load(folder)
    table = run.sharpness(pandas=False)
    traj = np.load(os.path.join(folder, "trajectories.npz"))
    for label in ("gd", "hb", "nag_c"):
        rows = table["label"] == label
        np.testing.assert_array_equal(table["step"][rows], [0, 100, 200])
        # at step 0 the kernel is H0, whose K = c H0 spectrum metrics.json reports
        np.testing.assert_allclose(table["lambda_max"][rows][0], run.spectrum.lambda_max, rtol=1e-9)
        np.testing.assert_allclose(table["eta_lambda_max"][rows], run[label].eta * table["lambda_max"][rows])
        np.testing.assert_array_equal(table["kernel_drift"][rows], traj[f"{label}/kernel_drift"])
    path = plots.sharpness_figure(run, str(tmp_path / "sharp.svg"))
    limits = {r["label"]: float(r["stability_limit"]) for r in _read_csv(plots.data_path(path))}
    # closed forms: GD eta lambda < 2, HB < 2 (1 + beta), NAG at beta -> 1: 2 (1 + b) / (1 + 2 b) -> 4/3
    np.testing.assert_allclose(limits["gd"], 2.0, rtol=1e-9)
    np.testing.assert_allclose(limits["hb"], 2.0 * (1 + 0.9), rtol=1e-9)
    np.testing.assert_allclose(limits["nag_c"], 4.0 / 3.0, rtol=1e-3)


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_load_sweep_rows_runs_and_table():
    folder = sweep_folder()
    sweep = ntkdyn.load(folder)
    assert isinstance(sweep, results.SweepResult) and sweep.axes == ("seed", "beta")
    assert len(sweep.runs) == 4 and len(sweep.rows) == 8
    for (
        row
    ) in sweep.rows:  # the CSV row, parsed from text, equals the row rebuilt from the run's metrics.json
        run = sweep.runs[row.run_id]
        assert row == results.SweepRow.from_result(row.run_id, row.values, run.spectrum, run[row.label])
        with open(os.path.join(folder, "runs", row.run_id, "metrics.json")) as fh:
            metrics = json.load(fh)
        expected = [r for r in cli.summary_rows(row.run_id, row.values, metrics) if r["label"] == row.label]
        assert [row.to_json()] == expected  # the same columns and values as the sweep writer
        assert run.config["seed"] == row.values["seed"]
    # summary(): summary.csv as a DataFrame, its columns and cells as the file holds them
    frame = sweep.summary()
    with open(os.path.join(folder, "summary.csv"), newline="") as fh:
        written = list(csv.DictReader(fh))
    assert list(frame.columns) == list(written[0]) and len(frame) == len(written)
    for i, line in enumerate(written):
        for column, text in line.items():
            value = frame[column].iloc[i]
            if text == "":
                assert value is None or (isinstance(value, float) and np.isnan(value)), (column, value)
            else:
                same = str(value) == text or np.isclose(float(value), float(text), rtol=1e-12)
                assert same, (column, value, text)
    table = sweep.table(pandas=False)
    for run_id, run in sweep.runs.items():
        sel = table["run_id"] == run_id
        assert sel.sum() == sum(o.trajectory["step"].size for o in run.optimizers.values())
        assert set(table["beta"][sel]) == {next(r.values["beta"] for r in sweep.rows if r.run_id == run_id)}
    # the sweep figure was written as svg with its data beside it
    assert open(os.path.join(folder, "sweep.svg")).read(200).lstrip().startswith("<?xml")
    data = _read_csv(os.path.join(folder, "sweep.csv"))
    assert len(data) == 8 and {"fitted_log_rate", "predicted_log_rate", "seed", "beta"} <= set(data[0])
    for d, row in zip(data, sweep.rows):
        assert np.isclose(float(d["fitted_log_rate"]), -np.log(row.fitted_linear_rate))


def test_load_rejects_other_folders(tmp_path):
    with pytest.raises(ValueError, match="not a results folder"):
        ntkdyn.load(str(tmp_path))


# --------------------------------------------------------------------------- bring your own model
SMALL = {
    "name": "own",
    "dtype": "float64",
    "train": {"steps": 40, "kernel_at": [0, 40]},
    "theory": {"diffrax": False},
    "rates": {"window": [0.2, 1.0]},
}


def _data(n=10, d=4):
    return ntkdyn.sphere(n, d, "teacher", seed=3)


def test_plain_apply_fn_matches_the_built_in_paper_model():
    """The paper model written by the user as apply_fn(params, X): the generic Jacobian NTK, training,
    predictions and verdicts equal those of model.name 'paper' (whose H0 is the closed form)."""
    X, y = _data()
    cfg = {
        **SMALL,
        "model": {"name": "paper", "width": 128},
        "optimizers": [{"name": "hb", "eta": 0.3, "beta": 0.5}],
    }
    built_in = ntkdyn.run_study(cfg, data=(X, y))
    params, consts = models.paper_init(jax.random.PRNGKey(0), 4, 128, 1.0, jnp.float64)  # what seed 0 builds

    def apply_fn(p, X):
        return jax.nn.relu(X @ p["W"].T) @ consts["a"] / jnp.sqrt(128.0)

    own = ntkdyn.run_study(
        {k: v for k, v in cfg.items() if k != "model"},
        model=ntkdyn.from_apply_fn(apply_fn, params),
        data=(X, y),
    )
    np.testing.assert_allclose(own.kernels["H0"], built_in.kernels["H0"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(own.data["e0"], built_in.data["e0"], rtol=1e-12, atol=1e-14)
    a, b = own["hb"], built_in["hb"]
    for key in ("loss", "loss_discrete", "loss_ode", "loss_ode_hr"):
        np.testing.assert_allclose(a.trajectory[key], b.trajectory[key], rtol=1e-9, err_msg=key)
    assert (a.verdict, a.theory_verdicts) == (b.verdict, b.theory_verdicts)
    np.testing.assert_allclose(a.predicted.linear_rate, b.predicted.linear_rate, rtol=1e-10)
    np.testing.assert_allclose(a.kernel_drift, b.kernel_drift, rtol=1e-6)
    assert own.config["model"]["source"] == "python" and own.config["data"] == {
        "source": "python",
        "n": 10,
        "d": 4,
    }


def _hand_gram(fn, params, X) -> np.ndarray:
    """J J^T with J the (n, P) Jacobian of fn(params, X) built leaf by leaf with jax.jacrev."""
    J = jax.jacrev(fn)(params, X)
    rows = [np.asarray(leaf).reshape(X.shape[0], -1) for leaf in jax.tree.leaves(J)]
    J = np.concatenate(rows, axis=1)
    return J @ J.T


def test_flax_linen_and_nnx_models_go_through_the_study():
    import flax.linen as nn
    from flax import nnx

    from ntkdyn import config, pipeline

    X, y = _data()

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1, param_dtype=jnp.float64)(jnp.tanh(nn.Dense(16, param_dtype=jnp.float64)(x)))

    net = Net()
    variables = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))
    hand = _hand_gram(lambda p, X: net.apply({"params": p}, X)[:, 0], variables["params"], jnp.asarray(X))
    lam = np.linalg.eigvalsh(hand)
    eta = 1.0 / lam[-1]
    run = ntkdyn.run_study(
        {**SMALL, "optimizers": [{"name": "gd", "eta": eta}]},
        model=ntkdyn.from_linen(net, variables),
        data=(X, y),
    )
    np.testing.assert_allclose(run.kernels["H0"], hand, rtol=1e-10, atol=1e-12)
    gd = run["gd"]
    assert gd.status == "ok" and gd.verdict is not None and gd.deviation.discrete is not None
    np.testing.assert_allclose(gd.trajectory["loss_discrete"][0], gd.trajectory["loss"][0], rtol=1e-10)
    # GD's kernel-regime loss factor per step: max_i (1 - eta lambda_i)^2
    np.testing.assert_allclose(gd.predicted.linear_rate, np.max((1 - eta * lam) ** 2), rtol=1e-8)

    module = nnx.Sequential(
        nnx.Linear(4, 8, param_dtype=jnp.float64, rngs=nnx.Rngs(1)),
        jnp.tanh,
        nnx.Linear(8, 1, param_dtype=jnp.float64, rngs=nnx.Rngs(2)),
    )
    model, params, consts = ntkdyn.from_flax(module)
    cfg = config.validate(ntkdyn.Config(optimizers=[ntkdyn.OptimizerConfig("gd", 0.2)], dtype="float64"))
    setup = pipeline.prepare(cfg, (X, y), (model, params, consts))

    def by_hand(p, X):
        W1, b1 = p["layers"][0]["kernel"], p["layers"][0]["bias"]
        W2, b2 = p["layers"][2]["kernel"], p["layers"][2]["bias"]
        return (jnp.tanh(X @ W1 + b1) @ W2 + b2)[:, 0]

    plain = {
        "layers": {
            i: {k: jnp.asarray(params["layers"][i][k][...]) for k in ("kernel", "bias")} for i in (0, 2)
        }
    }
    np.testing.assert_allclose(setup.H0, _hand_gram(by_hand, plain, jnp.asarray(X)), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        setup.e0, np.asarray(by_hand(plain, jnp.asarray(X))) - y, rtol=1e-12, atol=1e-14
    )


def test_config_factory_may_return_a_linen_pair():
    import flax.linen as nn

    net = nn.Dense(1, param_dtype=jnp.float64)
    variables = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)))
    model, params, consts = models.from_flax((net, variables), "mse", "linear")
    X = jnp.asarray(np.random.default_rng(0).standard_normal((5, 3)))
    np.testing.assert_allclose(model.apply(params, consts, X), X @ params["kernel"][:, 0] + params["bias"][0])
    assert model.loss == "mse" and consts == {}


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"dtype": "float32"}, ntkdyn.ConfigError, "dtype: the model's parameters are float64"),
        ({"theory": {"kernel": "Hinf", "diffrax": False}}, ntkdyn.ConfigError, "theory.kernel: 'Hinf' needs"),
        ({"model": {"name": "paper"}}, ntkdyn.ConfigError, "model: given both in the config and as model="),
        ({"optimizers": [{"name": "gd", "eta": -1.0}]}, ntkdyn.ConfigError, "optimizers[0].eta: must be > 0"),
    ],
)
def test_bad_input_is_named_before_compute(kwargs, error, message):
    X, y = _data()
    params = {"w": jnp.ones(4, jnp.float64)}
    model = ntkdyn.from_apply_fn(lambda p, X: X @ p["w"], params)
    cfg = {**SMALL, "optimizers": [{"name": "gd", "eta": 0.1}], **kwargs}
    with pytest.raises(error, match=message.replace("(", r"\(").replace("[", r"\[")):
        ntkdyn.run_study(cfg, model=model, data=(X, y))


def test_bad_models_and_data_are_named():
    X, y = _data()
    with pytest.raises(
        ValueError, match=r"must return one output per input, shape \(10,\) or \(10, 1\); got \(10, 2\)"
    ):
        ntkdyn.run_study(
            {**SMALL, "optimizers": [{"name": "gd", "eta": 0.1}]},
            model=ntkdyn.from_apply_fn(lambda p, X: X @ p, jnp.ones((4, 2))),
            data=(X, y),
        )
    with pytest.raises(ValueError, match=r"data: y must have shape \(10,\)"):
        ntkdyn.run_study({**SMALL, "optimizers": [{"name": "gd", "eta": 0.1}]}, data=(X, y[:5]))
    with pytest.raises(ValueError, match="loss: unknown 'l1'"):
        ntkdyn.from_apply_fn(lambda p, X: X @ p, jnp.ones(4), loss="l1")
    with pytest.raises(ValueError, match="'params' collection"):
        ntkdyn.from_linen(object(), {"batch_stats": {}})


def test_run_group_trains_runs_together_as_they_train_alone():
    """Two runs (other seed, other eta) trained as one batched program equal the runs made one by one."""
    X, y = _data()
    base = {**SMALL, "model": {"name": "paper", "width": 64}}
    cfgs = [
        {**base, "seed": s, "optimizers": [{"name": "hb", "eta": eta, "beta": 0.5}]}
        for s, eta in ((0, 0.3), (1, 0.2))
    ]
    together = ntkdyn.run_group(cfgs, data=[(X, y), (X, y)], run_ids=["a", "b"])
    assert [r.run_id for r in together] == ["a", "b"]
    for cfg, grouped in zip(cfgs, together):
        alone = ntkdyn.run_study(cfg, data=(X, y))
        np.testing.assert_array_equal(grouped.kernels["H0"], alone.kernels["H0"])
        for key in ("loss", "loss_discrete", "loss_ode"):
            np.testing.assert_allclose(grouped["hb"].trajectory[key], alone["hb"].trajectory[key], rtol=1e-10)
        assert grouped["hb"].verdict == alone["hb"].verdict
        g, a = grouped["hb"].fitted, alone["hb"].fitted
        np.testing.assert_allclose(g.linear_rate, a.linear_rate, rtol=1e-9)
    with pytest.raises(ntkdyn.ConfigError, match="same optimizer names"):
        ntkdyn.run_group(
            [cfgs[0], {**base, "optimizers": [{"name": "gd", "eta": 0.1}]}], data=[(X, y), (X, y)]
        )


def test_equinox_model_through_from_apply_fn():
    """An equinox module split by eqx.partition: the empirical NTK equals the hand-built Jacobian Gram."""
    eqx = pytest.importorskip("equinox")
    from ntkdyn import config, pipeline

    X, y = _data(6, 4)
    mlp = eqx.nn.MLP(4, "scalar", 8, 1, activation=jnp.tanh, key=jax.random.PRNGKey(0), dtype=jnp.float64)
    params, static = eqx.partition(mlp, eqx.is_array)

    def apply_fn(p, X):
        return jax.vmap(eqx.combine(p, static))(X)

    cfg = config.validate(ntkdyn.Config(optimizers=[ntkdyn.OptimizerConfig("gd", 0.1)], dtype="float64"))
    setup = pipeline.prepare(cfg, (X, y), ntkdyn.from_apply_fn(apply_fn, params))
    np.testing.assert_allclose(setup.H0, _hand_gram(apply_fn, params, jnp.asarray(X)), rtol=1e-10, atol=1e-12)


def test_cli_help_lists_configs_sections_sweeps_and_exit_codes(capsys):
    with pytest.raises(SystemExit) as done:
        cli.parse_args(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    shipped = sorted(
        f for f in os.listdir(os.path.join(os.path.dirname(__file__), "..", "configs")) if f.endswith(".yaml")
    )
    assert shipped and all(f"configs/{name}" in text for name in shipped)
    for word in ("optimizers:", "sweep:", "{range: [0, 8]}", "exit status", "--format {png,svg,pdf}"):
        assert word in text, word


def test_experiments_and_tools_import_only_the_public_api():
    """Every ntkdyn import in experiments/ and tools/ names something in ``ntkdyn.__all__`` (the
    curated names and the public submodules)."""
    import ast
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    public = set(ntkdyn.__all__)
    offending = []
    files = sorted([*root.glob("experiments/*.py"), *root.glob("tools/*.py")])
    assert len(files) >= 10
    for path in files:
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ntkdyn":
                parts = node.module.split(".")
                names = [parts[1]] if len(parts) > 1 else [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name.split(".")[1] for a in node.names if a.name.startswith("ntkdyn.")]
            else:
                continue
            offending += [f"{rel}:{node.lineno} {n}" for n in names if n not in public]
    assert not offending, offending
    for name in ntkdyn.PUBLIC_SUBMODULES:
        assert getattr(ntkdyn, name).__name__ == f"ntkdyn.{name}"
