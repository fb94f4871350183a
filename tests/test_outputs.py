"""Many outputs and cross-entropy on the run path (docs/outputs.md): k-output models with one-hot
targets, the traced and full output kernels, the function-space cross-entropy predictions, accuracy,
the verdict on cross-entropy and the config checks."""

from __future__ import annotations

import copy
import os

import jax
import numpy as np
import pytest

import ntkdyn
from ntkdyn import config as config_mod
from ntkdyn import models, ntk, optimizers, theory
from ntkdyn.config import ConfigError

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
BASE = {
    "name": "outputs",
    "seed": 1,
    "dtype": "float64",
    "data": {"source": "digits", "n": 18, "classes": [3, 5, 8], "target": "onehot"},
    "model": {"name": "paper", "width": 128},
    "train": {"steps": 30, "record_every": 1, "kernel_at": [0, 30]},
    "theory": {"diffrax": False},
    "optimizers": [{"name": "gd", "eta": 0.5}],
}


def _raw(**changes):
    raw = copy.deepcopy(BASE)
    for section, value in changes.items():
        if isinstance(value, dict) and isinstance(raw.get(section), dict):
            raw[section].update(value)
        else:
            raw[section] = value
    return raw


def _softmax(f):
    z = np.exp(f - f.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def test_cross_entropy_recurrence_is_a_numpy_loop_and_the_linearised_network():
    """GD on softmax cross-entropy: the face's function-space recurrence equals a plain numpy loop
    f <- f - eta H (c (softmax(f) - y)) on the full (n k x n k) Gram, and both equal the linearised
    network trained by the training path (float64)."""
    raw = _raw(
        model={"loss": "softmax_ce"},
        theory={"diffrax": False, "linearized": "always", "kernel_outputs": "full"},
        optimizers=[{"name": "gd", "eta": 4.0}],
    )
    run = ntkdyn.run_study(raw)
    setup = ntkdyn.prepare(raw)
    tr = run.optimizers["gd"].trajectory
    n, k = setup.y.shape
    assert setup.H0.shape == (n * k, n * k) and setup.H_pred is setup.H0
    c, eta, H, y = 1.0 / n, 4.0, setup.H0, setup.y
    f = setup.e0.reshape(n, k) + y
    losses = []
    for _ in range(31):
        lse = np.log(np.exp(f - f.max(1, keepdims=True)).sum(1)) + f.max(1)
        losses.append(c * np.sum(lse - np.sum(y * f, 1)))
        f = f - eta * (H @ (c * (_softmax(f) - y)).ravel()).reshape(n, k)
    np.testing.assert_allclose(tr["loss_discrete"], losses, rtol=1e-12)
    np.testing.assert_allclose(tr["loss_linearized"], tr["loss_discrete"], rtol=1e-8)
    assert run.optimizers["gd"].accuracy is not None


def test_traced_kernel_is_k_independent_scalar_runs(tmp_path):
    """Squared loss, H∞ traced: the k-output recurrence's loss is the sum over the outputs of k
    scalar recurrences on the shared kernel, each from its own column of the initial error."""
    raw = _raw(
        theory={"kernel": "Hinf", "diffrax": False}, optimizers=[{"name": "hb", "eta": 0.4, "beta": 0.6}]
    )
    run = ntkdyn.run_study(raw, out=str(tmp_path / "run"))
    setup = ntkdyn.prepare(raw)
    n, k = setup.y.shape
    lam, V = theory.eigen(setup.c * setup.Hinf)
    E0 = setup.e0.reshape(n, k)
    spec, hyper = optimizers.get("hb"), {"eta": 0.4, "beta": 0.6}
    total = sum(
        theory.modal_loss(theory.discrete_modes(spec, hyper, lam, V.T @ E0[:, b], 30), setup.c)
        for b in range(k)
    )
    np.testing.assert_allclose(run.optimizers["hb"].trajectory["loss_discrete"], total, rtol=1e-10)


def test_full_gram_recurrence_is_the_linearised_network(tmp_path):
    """Squared loss, full output Gram: the kernel recurrence equals the linearised network trained
    exactly (heavy ball, float64, 1e-8)."""
    raw = _raw(
        theory={"diffrax": False, "linearized": "always"},
        optimizers=[{"name": "hb", "eta": 0.3, "beta": 0.7}],
    )
    run = ntkdyn.run_study(raw, out=str(tmp_path / "run"))
    tr = run.optimizers["hb"].trajectory
    np.testing.assert_allclose(tr["loss_linearized"], tr["loss_discrete"], rtol=1e-8)
    np.testing.assert_allclose(tr["accuracy_linearized"], tr["accuracy_discrete"])
    assert tr["accuracy"].shape == tr["accuracy_steps"].shape


def test_paper_output_gram_closed_form_is_the_jacobian_gram():
    """The paper model's closed-form (n k x n k) output Gram equals the Jacobian contraction."""
    with jax.enable_x64(True):
        X = np.random.default_rng(0).normal(size=(5, 4))
        params, consts = models.paper_init(jax.random.PRNGKey(0), 4, 32, 1.0, np.float64, outputs=3)
        model = models.Model("paper", models.paper_apply, "half_sum", models.paper_gram, outputs=3)
        fast = ntk.gram(model, params, consts, X)
        slow = ntk.gram(models.Model("p", models.paper_apply, "half_sum", outputs=3), params, consts, X)
    np.testing.assert_allclose(fast, slow, rtol=1e-10, atol=1e-12)
    assert fast.shape == (15, 15)
    np.testing.assert_allclose(ntk.trace_outputs(fast, 3), np.mean([fast[b::3, b::3] for b in range(3)], 0))


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"model": {"outputs": 4}}, "model.outputs"),  # 3 classes
        ({"data": {"source": "sphere", "n": 8, "d": 3, "target": "onehot", "classes": None}}, "data.target"),
        ({"data": {"target": "pm1"}, "model": {"outputs": 2}}, "model.outputs"),
        ({"data": {"target": "pm1"}, "model": {"loss": "softmax_ce"}}, "model.loss"),
        ({"model": {"loss": "logistic"}}, "model.loss"),
        ({"model": {"loss": "hinge"}}, "model.loss"),
        ({"theory": {"kernel": "Hinf", "kernel_outputs": "full"}}, "theory.kernel_outputs"),
        ({"theory": {"kernel_outputs": "diagonal"}}, "theory.kernel_outputs"),
        ({"data": {"target": "pm1"}, "theory": {"kernel_outputs": "traced"}}, "theory.kernel_outputs"),
        ({"train": {"batch_size": 4}}, "train.batch_size"),
        ({"model": {"name": "released"}}, "model.outputs"),
    ],
)
def test_bad_output_configs_name_the_key(changes, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_mod.from_dict(_raw(**changes))


def test_onehot_fills_outputs_and_the_accuracy_steps():
    cfg = config_mod.from_dict(_raw())
    assert cfg.model.outputs == 3 and cfg.theory.kernel_outputs == "full"
    assert cfg.train.error_at[0] == 0 and cfg.train.error_at[-1] == 30 and len(cfg.train.error_at) > 2


def test_logistic_loss_one_output_and_its_verdict():
    """logistic loss, one output, ±1 targets: the recurrence is the numpy loop
    f <- f - eta H (c (-y sigmoid(-y f))), the accuracy is by sign, and on separable data (K positive
    definite) the verdict is not forced to linear or sublinear: it says why."""
    raw = _raw(
        data={"classes": [3, 5], "target": "pm1"},
        model={"loss": "logistic"},
        optimizers=[{"name": "gd", "eta": 8.0}],
        train={"steps": 60, "kernel_at": [0, 60]},
    )
    run = ntkdyn.run_study(raw)
    setup = ntkdyn.prepare(raw)
    gd = run.optimizers["gd"]
    c, y, H = 1.0 / setup.y.size, setup.y, setup.H0
    f, losses = setup.e0 + y, []
    for step in range(61):
        losses.append(c * np.sum(np.logaddexp(0.0, -y * f)))
        if step == 60:
            break
        f = f - 8.0 * H @ (c * -y / (1.0 + np.exp(y * f)))
    np.testing.assert_allclose(gd.trajectory["loss_discrete"], losses, rtol=1e-10)
    assert gd.accuracy.predicted_final["discrete"] == pytest.approx(np.mean(np.sign(f) == y))
    assert gd.verdict == "unclassified"
    assert "cross-entropy on separable data" in gd.fitted.reason
    assert gd.theory_verdicts["discrete"] == "unclassified"


@pytest.mark.parametrize("name", ["digits10", "digits10_ce"])
def test_digits10_configs_are_ten_classes(name):
    cfg = config_mod.load(os.path.join(CONFIGS, f"{name}.yaml"))
    assert cfg.model.outputs == 10 and cfg.theory.kernel_outputs == "full"
    assert {o.name for o in cfg.optimizers} == {"gd", "hb", "nag_c", "adam"}


def test_digits10_ce_runs_at_a_tiny_size(tmp_path):
    """configs/digits10_ce.yaml at a tiny size (the ten classes, 20 points), NAG-C: its damped flow in
    function space (diffrax, from the series start at t0), recurrence and linearised network, with
    accuracy; the folder reads back as the result."""
    raw = config_mod.load_raw(os.path.join(CONFIGS, "digits10_ce.yaml"))
    raw["data"].update(n=20, test={"n": 10})
    raw["model"]["width"] = 64
    raw["train"].update(steps=20, kernel_at=[0, 20])
    raw["theory"]["diffrax"] = True
    raw["optimizers"] = [o for o in raw["optimizers"] if o["name"] == "nag_c"]
    run = ntkdyn.run_study(raw, out=str(tmp_path / "run"))
    nag = run.optimizers["nag_c"]
    tr = nag.trajectory
    assert np.all(np.isfinite(tr["loss_ode"])) and np.all(np.isfinite(tr["test_loss_ode"]))
    assert tr["loss_ode"][0] == pytest.approx(tr["loss"][0], rel=1e-12)
    np.testing.assert_allclose(tr["loss_linearized"], tr["loss_discrete"], rtol=1e-8)
    assert set(nag.accuracy.predicted_final) == {"discrete", "ode", "linearized"}
    assert ntkdyn.load(str(tmp_path / "run")).optimizers == run.optimizers
