"""train.sharpness_every in a run: the recorded lambda_max of the loss Hessian equals the top
eigenvalue of a DENSE Hessian (jax.hessian of the flattened loss, numpy eigvalsh) at the parameters
of a recorded step, obtained by an independent plain gradient-descent loop; the recorded NTK value
equals eigvalsh of c J J^T from a dense Jacobian; the stability limit follows the step size per
step; the key is off by default (nothing added to metrics.json or trajectories.npz, training
unchanged); bad values are refused naming the key, before any compute; metrics.json round-trips."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import ntkdyn
from ntkdyn.config import ConfigError


def _raw(train=None, opts=None, **extra):
    return {
        "name": "s",
        "seed": 3,
        "dtype": "float64",
        "data": {"source": "sphere", "n": 8, "d": 3},
        "model": {"name": "mlp", "width": 8, "depth": 1},
        "train": {"steps": 20, "record_every": 2, **(train or {})},
        "theory": {"diffrax": False},
        "optimizers": opts or [{"label": "gd", "name": "gd", "eta": 0.3}],
        **extra,
    }


def _dense(setup, params):
    """(lambda_max of the dense loss Hessian, lambda_max of c J J^T), both by numpy eigvalsh."""
    with jax.enable_x64(True):
        flat, unravel = ravel_pytree(params)
        X, y = jnp.asarray(setup.X), jnp.asarray(setup.y)
        f = lambda v: setup.model.apply(unravel(v), setup.consts, X)  # noqa: E731
        loss = lambda v: 0.5 * setup.c * jnp.sum((f(v) - y) ** 2)  # noqa: E731
        hess = np.asarray(jax.hessian(loss)(flat), np.float64)
        J = np.asarray(jax.jacfwd(f)(flat), np.float64)
    return np.linalg.eigvalsh(0.5 * (hess + hess.T))[-1], np.linalg.eigvalsh(setup.c * J @ J.T)[-1]


def _gd(setup, eta, steps):
    """Plain gradient descent on L = (c/2)||f - y||^2 (not the run path's trainer)."""
    with jax.enable_x64(True):
        X, y = jnp.asarray(setup.X), jnp.asarray(setup.y)
        loss = lambda p: 0.5 * setup.c * jnp.sum((setup.model.apply(p, setup.consts, X) - y) ** 2)  # noqa: E731
        grad = jax.jit(jax.grad(loss))
        p = setup.params
        for _ in range(steps):
            p = jax.tree.map(lambda a, g: a - eta * g, p, grad(p))
    return p


def test_recorded_sharpness_equals_dense_eigenvalues_and_round_trips(tmp_path):
    raw = _raw({"sharpness_every": 10})
    run = ntkdyn.run_study(raw, out=str(tmp_path / "run"))
    s = run.optimizers["gd"].sharpness
    assert s.every == 10 and s.steps == (0, 10, 20) and all(s.converged)
    setup = ntkdyn.prepare(ntkdyn.config.from_dict(raw))
    for j, k in ((0, 0), (1, 10)):
        hess, kern = _dense(setup, _gd(setup, 0.3, k))
        assert s.hessian_lambda_max[j] == pytest.approx(hess, rel=1e-6)
        assert s.ntk_lambda_max[j] == pytest.approx(kern, rel=1e-6)
    # at theta_0 the NTK value is the spectrum's lambda_max of K = c H
    assert s.ntk_lambda_max[0] == pytest.approx(run.spectrum.lambda_max, rel=1e-8)
    np.testing.assert_allclose(s.stability_limit, 2 / 0.3, rtol=1e-9)  # GD: 2 / eta
    tr = run.optimizers["gd"].trajectory
    np.testing.assert_array_equal(tr["sharpness_steps"], [0, 10, 20])
    np.testing.assert_allclose(tr["sharpness_hessian"], s.hessian_lambda_max)
    # the kernel snapshots stay those of train.kernel_at (default [0, 5, 10, 20])
    np.testing.assert_array_equal(tr["kernel_steps"], [0, 5, 10, 20])
    # not a per-step column of the long table, even when as long as ``step``
    assert not any(c.startswith("sharpness") for c in run.table(pandas=False))
    # round trip: metrics.json and trajectories.npz back to the same typed value
    back = ntkdyn.load(str(tmp_path / "run"))
    assert back.optimizers["gd"].sharpness == s
    np.testing.assert_array_equal(back.optimizers["gd"].trajectory["sharpness_ntk"], tr["sharpness_ntk"])
    doc = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert doc["optimizers"]["gd"]["sharpness"]["steps"] == [0, 10, 20]
    # the report's section and figure (with its data)
    page = tmp_path / "report.md"
    ntkdyn.write_report([str(tmp_path / "run")], str(page))
    text = page.read_text()
    assert "Sharpness along training" in text and "_sharpness_path." in text
    csv = next(tmp_path.glob("report_files/*_sharpness_path.csv")).read_text().splitlines()
    assert csv[0] == "label,step,hessian_lambda_max,ntk_lambda_max,limit" and len(csv) == 4


def test_off_by_default_changes_nothing():
    on = ntkdyn.run_study(_raw({"sharpness_every": 4}))
    off = ntkdyn.run_study(_raw())
    assert off.optimizers["gd"].sharpness is None
    assert "sharpness" not in off.optimizers["gd"].to_json()
    assert not any(k.startswith("sharpness") for k in off.optimizers["gd"].trajectory)
    a, b = on.optimizers["gd"].trajectory, off.optimizers["gd"].trajectory
    for key in ("loss", "kernel_steps", "kernel_drift"):
        np.testing.assert_array_equal(a[key], b[key])
    assert on.optimizers["gd"].sharpness.steps == (0, 4, 8, 12, 16, 20)


def test_scheduled_step_limit_per_step_and_minibatch_full_batch_hessian():
    sched = {"schedule": "piecewise", "init_value": 0.2, "boundaries_and_scales": {10: 0.5}}
    raw = _raw(
        {"sharpness_every": 10, "batch_size": 4},
        opts=[
            {"label": "hb", "name": "hb", "eta": sched, "beta": 0.5},
            {"label": "adam", "name": "adam", "eta": 0.01},
        ],
    )
    run = ntkdyn.run_study(raw)
    s = run.optimizers["hb"].sharpness
    # HB: 2 (1 + beta) / eta_k; eta_k = 0.2 for the updates before step 10, 0.1 from it on
    np.testing.assert_allclose(s.stability_limit, [3 / 0.2, 3 / 0.1, 3 / 0.1], rtol=1e-9)
    # the FULL-batch loss Hessian (not a mini-batch's) at theta_0
    setup = ntkdyn.prepare(ntkdyn.config.from_dict(raw))
    hess, _ = _dense(setup, setup.params)
    assert s.hessian_lambda_max[0] == pytest.approx(hess, rel=1e-6)
    assert run.optimizers["adam"].sharpness.stability_limit is None  # no linear recurrence
    assert "sharpness_limit" not in run.optimizers["adam"].trajectory


@pytest.mark.parametrize("value", [3, 0, -2, 40, True, 2.5])
def test_bad_sharpness_every_names_the_key(value):
    with pytest.raises(ConfigError, match="train.sharpness_every"):
        ntkdyn.config.from_dict(_raw({"sharpness_every": value}))
