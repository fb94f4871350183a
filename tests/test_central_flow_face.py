"""The GD central-flow face (theory.central_flow; ``ntkdyn.pipeline.faces.central_flow``) and its window
rule (``ntkdyn.central_flow.cycle_agreement``: GD averaged over its own self-stabilisation cycles).

* the window rule on a hand-built trace whose cycles and means are known by construction;
* a run of a small tanh network (flax, standard parametrisation, half-MSE, float64) whose GD reaches
  the edge of stability: the flow, integrated by the face, holds its sharpness at 2/eta while GD's
  cycle means of the loss lie within 10 % of the flow's prediction (the discrete GD it averages);
* validation: refused for anything but full-batch gd with a constant eta and a squared loss; off by
  default."""

import sys
from pathlib import Path

import numpy as np
import pytest

import ntkdyn
from ntkdyn.central_flow import cycle_agreement

sys.path.insert(0, str(Path(__file__).parent))  # user_model.py (a flax tanh network)


def test_cycle_rule_on_a_constructed_trace():
    """Sharpness: below 2 until step 10, then a sawtooth crossing 2 upward at steps 10, 30, 60 (cycles
    of 20 and 30 steps) and a tail from 60. Loss: GD alternates 1 +- 0.5 (a period-2 oscillation) and
    is 1 on average; the 'flow' predicts 1.05 everywhere, so each cycle's error is 5 % (both means are
    over the same even-length windows), while a pointwise comparison would see 50 %."""
    steps = np.arange(101)
    gd = 1.0 + 0.5 * (-1.0) ** steps
    gd[:10] = 1.0  # below the edge: no oscillation
    pred = np.full(steps.size, 1.05)
    pred[:10] = 1.02
    sharp_step = np.arange(0, 101, 2)
    thr = 2.0
    S = np.where(sharp_step < 10, 1.5, 0.0)
    for a, b in ((10, 30), (30, 60), (60, 101)):
        sel = (sharp_step >= a) & (sharp_step < b)
        S[sel] = np.linspace(thr, 1.1 * thr, sel.sum()) if a < 60 else thr * 1.01
    S[(sharp_step >= 24) & (sharp_step < 30)] = 0.95 * thr  # the fall back before the next crossing
    S[(sharp_step >= 54) & (sharp_step < 60)] = 0.95 * thr
    a = cycle_agreement(steps, gd, sharp_step, S, pred, thr)
    assert a.edge_step == 10 and a.cycles == ((10, 30), (30, 60))
    np.testing.assert_allclose(a.loss_error, [0.05, 0.05], rtol=1e-12)
    np.testing.assert_allclose(a.before_edge_loss_error, 0.02, rtol=1e-12)
    # the tail 60..100 holds 41 steps (odd): GD's mean there is 1 + 0.5/41
    np.testing.assert_allclose(a.tail_loss_error, abs(1.05 - (1 + 0.5 / 41)) / (1 + 0.5 / 41), rtol=1e-12)
    for (lo, hi), err in zip(a.cycles, a.sharpness_error):
        sel = (sharp_step >= lo) & (sharp_step < hi)
        np.testing.assert_allclose(err, abs(S[sel].mean() / thr - 1), rtol=1e-12)
    assert a.agrees(0.10, 0.05) is (max(a.sharpness_error) <= 0.05)
    none = cycle_agreement(steps, gd, sharp_step, np.ones_like(S), pred, thr)
    assert none.edge_step is None and none.agrees() is None


def _raw(steps=100, **theory):
    return {
        "name": "cf",
        "seed": 0,
        "dtype": "float64",
        "data": {"source": "sphere", "n": 16, "d": 3},
        "model": {"name": "flax", "module": "user_model:make", "kwargs": {"width": 8}, "loss": "half_mse"},
        "train": {"steps": steps, "sharpness_every": 4},
        "theory": {"diffrax": False, "central_flow": True, **theory},
        "optimizers": [{"label": "gd", "name": "gd", "eta": {"per_lambda_max": 1.4}}],
    }


def test_face_in_a_run_holds_the_edge_and_matches_gd_cycle_means():
    """eta = 1.4 / lambda_max(K_0): GD's sharpness rises to 2/eta within ~20 steps and self-stabilises
    in cycles of 30-40 steps. The face's flow starts where training starts (the same loss at step 0),
    turns on within a few steps of GD's edge and then holds S = 2/eta (to 1e-4); over each complete
    cycle of GD the flow's mean predicted loss is within 10 % of GD's mean loss (measured 2.7, 6.8,
    6.0 % over 400 steps). The verdict is the rule's over the whole run; here it is "misses": GD's first steps
    (eta lambda = 1.4) are not the gradient flow (before the edge, pointwise, ~20 %) and its onset
    excursion (to 1.29 x 2/eta) puts the first cycle's mean sharpness 5.6 % above 2/eta."""
    run = ntkdyn.run_study(_raw())
    o = run.optimizers["gd"]
    c = o.central_flow
    t = o.trajectory
    thr = c.threshold
    np.testing.assert_allclose(thr, 2 / o.eta, rtol=1e-12)
    np.testing.assert_allclose(t["loss_central_flow"][0], t["loss"][0], rtol=1e-6)
    assert c.window_rule == "gd_sharpness_cycles" and c.edge_step is not None
    assert abs(c.flow_edge_step - c.edge_step) <= 10, (c.flow_edge_step, c.edge_step)
    on = t["step"] > c.flow_edge_step
    np.testing.assert_allclose(t["sharpness_central_flow"][on], thr, rtol=1e-4)
    assert c.flow_sharpness_error < 1e-4
    assert len(c.cycles) >= 2 and max(c.loss_error) < 0.10, c.loss_error
    agrees = (
        max((*c.loss_error, c.tail_loss_error or 0.0, c.before_edge_loss_error or 0.0)) <= 0.10
        and max((*c.sharpness_error, c.tail_sharpness_error or 0.0)) <= 0.05
    )
    assert c.verdict == ("agrees" if agrees else "misses")
    assert o.deviation.get("central_flow") is None  # no pointwise deviation: the cycle means compare


@pytest.mark.parametrize(
    "change, match",
    [
        ({"optimizers": [{"name": "hb", "eta": 0.1, "beta": 0.5}]}, "gradient descent only"),
        ({"train": {"steps": 10, "batch_size": 4}}, "full-batch"),
        (
            {"optimizers": [{"name": "gd", "eta": {"schedule": "exponential", "init_value": 0.1,
                                                   "transition_steps": 5, "decay_rate": 0.5}}]},
            "constant eta",
        ),
    ],
)  # fmt: skip
def test_refused_outside_full_batch_constant_gd(change, match):
    raw = {"data": {"source": "sphere", "n": 8, "d": 3}, "theory": {"central_flow": True}}
    raw.update({"optimizers": [{"name": "gd", "eta": 0.1}], **change})
    with pytest.raises(ntkdyn.ConfigError, match=f"theory.central_flow: .*{match}"):
        ntkdyn.config.from_dict(raw)


def test_off_by_default():
    cfg = ntkdyn.config.from_dict({"optimizers": [{"name": "gd", "eta": 0.1}]})
    assert cfg.theory.central_flow is False
    raw = _raw(steps=4)
    raw["train"] = {"steps": 4}
    run = ntkdyn.run_study({**raw, "theory": {"diffrax": False}})
    o = run.optimizers["gd"]
    assert o.central_flow is None and "loss_central_flow" not in o.trajectory
