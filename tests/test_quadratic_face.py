"""The quadratic-model face in a run (theory.quadratic): its loss equals the quadratic model trained by
``ntkdyn.quadratic.train_taylor`` (a separate scan loop over the same Taylor polynomial, not the run
path's trainer) on the run's own data and initial parameters; a model whose Hessian vanishes (the
paper model) gets the reason, not a prediction; the default is off."""

import numpy as np
import optax
import pytest

import ntkdyn
from ntkdyn import quadratic


def _raw(model, quad="always", opts=None):
    return {
        "name": "q",
        "seed": 3,
        "dtype": "float64",
        "data": {"source": "sphere", "n": 10, "d": 3},
        "model": model,
        "train": {"steps": 40},
        "theory": {"diffrax": False, "quadratic": quad},
        "optimizers": opts or [{"label": "gd", "name": "gd", "eta": 0.3}],
    }


@pytest.mark.parametrize(
    "opt, tx",
    [
        ({"label": "gd", "name": "gd", "eta": 0.3}, optax.sgd(0.3)),
        ({"label": "hb", "name": "hb", "eta": 0.2, "beta": 0.5}, optax.sgd(0.2, momentum=0.5)),
    ],
)
def test_loss_quadratic_equals_the_taylor_loop(opt, tx):
    raw = _raw({"name": "mlp", "width": 32, "depth": 1}, opts=[opt])
    run = ntkdyn.run_study(raw)
    o = run.optimizers[opt["label"]]
    setup = ntkdyn.prepare(ntkdyn.config.from_dict(raw))
    ref = quadratic.train_taylor(
        setup.model, setup.params, setup.consts, setup.X, setup.y, tx, raw["train"]["steps"]
    )
    steps = o.trajectory["step"]
    np.testing.assert_allclose(o.trajectory["loss_quadratic"], np.asarray(ref.loss)[steps], rtol=1e-9)
    assert o.quadratic.diverged_at is None and o.deviation.get("quadratic") is not None
    # the quadratic model is not the linearisation here (both layers trained): it differs from it
    lin = ntkdyn.run_study({**raw, "theory": {**raw["theory"], "linearized": "always"}})
    assert (
        np.max(
            np.abs(
                lin.optimizers[opt["label"]].trajectory["loss_linearized"] / o.trajectory["loss_quadratic"]
                - 1
            )
        )
        > 1e-3
    )


def test_paper_model_says_why_and_default_is_off(tmp_path):
    run = ntkdyn.run_study(_raw({"name": "paper", "width": 32}))
    o = run.optimizers["gd"]
    assert o.quadratic is None and "loss_quadratic" not in o.trajectory
    assert "Hess f = 0" in o.note
    off = ntkdyn.run_study(
        _raw({"name": "mlp", "width": 32, "depth": 1}, quad="never"), out=str(tmp_path / "r")
    )
    assert off.optimizers["gd"].quadratic is None and "loss_quadratic" not in off.optimizers["gd"].trajectory
    assert ntkdyn.config.from_dict({"optimizers": [{"name": "gd", "eta": 0.1}]}).theory.quadratic == "never"
    with pytest.raises(ntkdyn.ConfigError, match="theory.quadratic"):
        ntkdyn.config.from_dict(
            {"theory": {"quadratic": "sometimes"}, "optimizers": [{"name": "gd", "eta": 0.1}]}
        )
