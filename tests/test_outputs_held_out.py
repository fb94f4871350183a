"""Held-out accuracy, the loss per output and the accuracy columns of k-output runs
(docs/outputs.md): the network's held-out accuracy is that of its own outputs on the held-out points,
each kernel prediction's held-out accuracy equals the linearised network's (the maps are exact for it),
the per-output losses add up to training's recorded loss, and the results read back."""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkdyn
from ntkdyn import config as config_mod
from ntkdyn import plots
from ntkdyn import run as cli

BASE = {
    "name": "held_out_accuracy",
    "seed": 2,
    "dtype": "float64",
    "data": {"source": "digits", "n": 18, "classes": [3, 5, 8], "target": "onehot", "test": {"n": 12}},
    "model": {"name": "paper", "width": 128},
    "train": {"steps": 30, "record_every": 1, "kernel_at": [0, 30]},
    "theory": {"diffrax": False, "linearized": "always"},
    "optimizers": [{"name": "hb", "eta": 0.3, "beta": 0.7}],
}


def _raw(loss: str, eta: float) -> dict:
    raw = copy.deepcopy(BASE)
    raw["model"]["loss"] = loss
    raw["optimizers"][0]["eta"] = eta
    return raw


def test_training_records_the_held_out_errors_at_the_error_steps():
    """``TrainResult.test_errors``: f(X_t; theta_k) - y_t at each error step k (inside a group, at a
    group edge, the last step), equal to the model applied to the parameters snapshotted there; two
    runs trained as one program, three outputs."""
    from ntkdyn import models, optimizers, train

    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        X, Xt = rng.normal(size=(10, 4)), rng.normal(size=(6, 4))
        y, yt = np.eye(3)[rng.integers(0, 3, 10)], np.eye(3)[rng.integers(0, 3, 6)]
        model = models.Model("paper", models.paper_apply, "half_mse", models.paper_gram, outputs=3)
        params, consts = models.paper_init(jax.random.PRNGKey(0), 4, 32, 1.0, jnp.float64, outputs=3)
        at = (0, 5, 64, 70, 100)
        plan = train.TrainPlan(steps=100, record_every=2, error_at=at, snapshot_at=at)
        runs = train.train_batch(
            model, optimizers.get("gd"), [{"eta": 0.5}, {"eta": 0.2}], 0.1, plan,
            [params] * 2, [consts] * 2, [jnp.asarray(X)] * 2, [jnp.asarray(y)] * 2,
            test=[(Xt, yt)] * 2,
        )  # fmt: skip
        for res in runs:
            assert res.test_errors.shape == (len(at), 6 * 3)
            for j in range(len(at)):
                p = jax.tree.map(lambda s, j=j: s[j], res.snapshots)
                expected = np.asarray(model.apply(p, consts, jnp.asarray(Xt))) - yt
                np.testing.assert_allclose(res.test_errors[j], expected.reshape(-1), rtol=1e-12, atol=1e-12)
        assert not np.allclose(runs[0].test_errors[-1], runs[1].test_errors[-1])
        single = train.train(model, optimizers.get("gd"), {"eta": 0.5}, 0.1, plan, params, consts, X, y)
        assert single.test_errors is None


@pytest.mark.parametrize("loss, eta", [("half_mse", 0.3), ("softmax_ce", 4.0)])
def test_held_out_accuracy_and_per_output_loss(tmp_path, loss, eta):
    raw = _raw(loss, eta)
    run = ntkdyn.run_study(raw, out=str(tmp_path / "run"))
    hb = run.optimizers["hb"]
    tr = hb.trajectory
    steps = tr["accuracy_steps"]
    assert tr["test_accuracy"].shape == steps.shape
    assert hb.accuracy.held_out_final == pytest.approx(tr["test_accuracy"][-1])
    # step 0: training's recorded held-out outputs and the setup's f(X_test; theta_0) (the predictions')
    assert (
        hb.accuracy.held_out_initial == tr["test_accuracy_discrete"][0] == tr["test_accuracy_linearized"][0]
    )
    # the kernel predictions carried to the held-out points are exact for the linearised network
    np.testing.assert_array_equal(tr["test_accuracy_discrete"], tr["test_accuracy_linearized"])
    assert {"discrete", "linearized"} <= set(hb.accuracy.held_out_predicted_final)
    # the per-output losses add up to the recorded loss at the error steps
    k = 3
    rows = np.searchsorted(tr["step"], steps)
    for name in ("", "_discrete", "_linearized"):
        per = tr[f"loss_outputs{name}"]
        assert per.shape == (steps.size, k)
        np.testing.assert_allclose(per.sum(1), tr[f"loss{name}"][rows], rtol=1e-10)
    np.testing.assert_allclose(tr["loss_outputs_linearized"], tr["loss_outputs_discrete"], rtol=1e-7)
    # metrics.json and trajectories.npz read back as the result
    back = ntkdyn.load(str(tmp_path / "run"))
    assert back.optimizers == run.optimizers
    np.testing.assert_array_equal(back.optimizers["hb"].trajectory["test_accuracy"], tr["test_accuracy"])
    # the command line's table and the per-output figure
    table = cli.summary_table(run)
    assert "acc train/pred" in table and "held-out acc" in table
    assert f"{hb.accuracy.final:.3f}/" in table
    path = str(tmp_path / "loss_outputs.png")
    assert plots.loss_outputs_figure({"hb": tr}, path)
    csv = (tmp_path / "loss_outputs.csv").read_text().splitlines()
    assert csv[0].split(",") == ["label", "series", "output", "step", "loss"]
    series = 1 + sum(key.startswith("loss_outputs_") for key in tr)  # training and each prediction
    assert len(csv) - 1 == series * k * steps.size


def test_rtol_applies_to_the_cross_entropy_flows():
    raw = _raw("softmax_ce", 4.0)
    raw["theory"].update(rtol=1e-6, atol=1e-8)
    cfg = config_mod.from_dict(raw)
    assert (cfg.theory.rtol, cfg.theory.atol) == (1e-6, 1e-8)
    raw = _raw("half_mse", 0.3)
    raw["theory"]["rtol"] = 1e-6
    with pytest.raises(config_mod.ConfigError, match=r"theory\.rtol"):
        config_mod.from_dict(raw)


def test_sphere_teacher_with_k_outputs(tmp_path):
    """model.outputs k with sphere data: a teacher with k outputs (n x k targets, each scaled to unit
    variance, held-out points labelled by the same teacher); the full output Gram's recurrence equals
    the linearised network, on the training and the held-out points."""
    raw = {
        "name": "sphere_k",
        "seed": 0,
        "dtype": "float64",
        "data": {"source": "sphere", "n": 12, "d": 5, "target": "teacher", "test": {"n": 6}},
        "model": {"name": "paper", "width": 64, "outputs": 3, "loss": "half_mse"},
        "train": {"steps": 20, "kernel_at": [0, 20]},
        "theory": {"diffrax": False, "linearized": "always"},
        "optimizers": [{"name": "hb", "eta": 0.5, "beta": 0.5}],
    }
    cfg = config_mod.from_dict(raw)
    assert cfg.model.outputs == 3 and cfg.theory.kernel_outputs == "full"
    setup = ntkdyn.prepare(raw)
    assert setup.y.shape == (12, 3) and setup.y_test.shape == (6, 3)
    np.testing.assert_allclose(setup.y.std(0), 1.0, rtol=1e-12)
    assert not np.allclose(setup.y[:, 0], setup.y[:, 1])
    run = ntkdyn.run_study(raw, out=str(tmp_path / "run"))
    tr = run.optimizers["hb"].trajectory
    np.testing.assert_allclose(tr["loss_linearized"], tr["loss_discrete"], rtol=1e-8)
    np.testing.assert_allclose(tr["test_loss_linearized"], tr["test_loss_discrete"], rtol=1e-8)
    assert run.optimizers["hb"].accuracy is None  # real-valued outputs: no classes
    with pytest.raises(config_mod.ConfigError, match=r"model\.outputs"):
        config_mod.from_dict({**raw, "data": {**raw["data"], "target": "smooth"}})


def _square_apply(params, consts, X):
    """f_b(x) = (1/m) sum_r a_rb (w_r . x)^2: exactly quadratic in W, three outputs."""
    return (X @ params["W"].T) ** 2 @ consts["a"] / params["W"].shape[0]


def test_quadratic_model_with_k_outputs_is_the_network():
    """The quadratic face's model (``quadratic.quadratize``, trained as ``training.train_expansion``
    does) of a network exactly quadratic in its parameters with k = 3 outputs equals the network: the
    same losses and held-out errors along heavy-ball training (float64)."""
    from ntkdyn import linearized, models, optimizers, quadratic, train

    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        X, Xt = jnp.asarray(rng.normal(size=(8, 4))), rng.normal(size=(5, 4))
        y, yt = jnp.asarray(rng.normal(size=(8, 3))), rng.normal(size=(5, 3))
        model = models.Model("square", _square_apply, "half_mse", outputs=3)
        params = {"W": jnp.asarray(rng.normal(size=(16, 4)))}
        consts = {"a": jnp.asarray(rng.choice([-1.0, 1.0], size=(16, 3)))}
        assert quadratic.applies(model, params, consts, X) is None  # not the linearisation
        plan = train.TrainPlan(steps=40, record_every=2, error_at=(0, 20, 40))
        spec, hyper = optimizers.get("hb"), {"eta": 0.05, "beta": 0.5}
        net = train.train(model, spec, hyper, 1 / 8, plan, params, consts, X, y, test=(Xt, yt))
        quad = train.train(
            quadratic.quadratize(model), spec, hyper, 1 / 8, plan, params,
            linearized.linear_consts(params, consts), X, y, test=(Xt, yt),
        )  # fmt: skip
        lin = train.train(
            linearized.linearize(model), spec, hyper, 1 / 8, plan, params,
            linearized.linear_consts(params, consts), X, y,
        )  # fmt: skip
    np.testing.assert_allclose(quad.loss, net.loss, rtol=1e-10)
    np.testing.assert_allclose(quad.test_errors, net.test_errors, rtol=1e-9, atol=1e-12)
    assert np.max(np.abs(lin.loss / net.loss - 1)) > 1e-3  # the linearisation is not the network
