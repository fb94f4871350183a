"""Step-size schedules (ntkdyn.schedules) in the config, the training face and the recurrence.

References: the schedules' formulas written out in numpy; a hand-written parameter-space loop of
GD / heavy ball / Nesterov with eta_k on a linear model f(theta) = Phi theta; a parameter-space
Monte-Carlo for the mini-batch second moment with a schedule.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from ntkdyn import config, models, optimizers, schedules, stochastic, theory
from ntkdyn.train import TrainPlan, train

STEPS = 50


def _values(raw):
    return schedules.eta_values(schedules.from_config(raw), STEPS)


def test_schedule_values_match_their_formulas():
    t = np.arange(STEPS, dtype=float)
    got = _values({"schedule": "cosine_decay", "init_value": 0.3, "decay_steps": 40, "alpha": 0.1})
    frac = np.minimum(t, 40) / 40
    np.testing.assert_allclose(got, 0.3 * ((1 - 0.1) * 0.5 * (1 + np.cos(np.pi * frac)) + 0.1), rtol=1e-6)
    got = _values(
        {
            "schedule": "warmup_cosine",
            "init_value": 0.0,
            "peak_value": 0.2,
            "warmup_steps": 10,
            "decay_steps": 40,
        }
    )
    warm = 0.2 * t / 10
    cos = 0.5 * 0.2 * (1 + np.cos(np.pi * np.clip(t - 10, 0, 30) / 30))
    np.testing.assert_allclose(got, np.where(t < 10, warm, cos), rtol=1e-6, atol=1e-9)
    got = _values({"schedule": "piecewise", "init_value": 0.2, "boundaries_and_scales": {10: 0.5, 30: 0.1}})
    np.testing.assert_allclose(got, np.where(t < 10, 0.2, np.where(t < 30, 0.1, 0.01)), rtol=1e-6)
    got = _values({"schedule": "exponential", "init_value": 0.2, "transition_steps": 5, "decay_rate": 0.5})
    np.testing.assert_allclose(got, 0.2 * 0.5 ** (t / 5), rtol=1e-6)
    assert schedules.eta_values(0.1, 3).tolist() == [0.1, 0.1, 0.1]


def _param_loop(Phi, y, name, etas, beta):
    """GD / HB (v = beta v + g, theta -= eta_k v) / NAG (optax form: theta -= eta_k (g + beta v)),
    written out on L = 1/2 ||Phi theta - y||^2; losses at k = 0..len(etas)."""
    theta = np.zeros(Phi.shape[1])
    v = np.zeros_like(theta)
    out = [0.5 * np.sum((Phi @ theta - y) ** 2)]
    for eta in etas:
        g = Phi.T @ (Phi @ theta - y)
        if name == "gd":
            theta = theta - eta * g
        elif name == "hb":
            v = beta * v + g
            theta = theta - eta * v
        else:
            v = beta * v + g
            theta = theta - eta * (g + beta * v)
        out.append(0.5 * np.sum((Phi @ theta - y) ** 2))
    return np.array(out)


RAW = {
    "schedule": "warmup_cosine",
    "init_value": 0.05,
    "peak_value": 0.6,
    "warmup_steps": 10,
    "decay_steps": 50,
}


@pytest.mark.parametrize("name", ["gd", "hb", "nag"])
def test_scheduled_recurrence_and_training_match_a_hand_written_loop(name):
    rng = np.random.default_rng(0)
    n, p = 6, 20
    Phi = rng.standard_normal((n, p)) / math.sqrt(p)
    y = rng.standard_normal(n)
    sched = schedules.from_config(RAW)
    hyper = {"eta": sched} if name == "gd" else {"eta": sched, "beta": 0.5}
    etas = schedules.eta_values(sched, STEPS)
    want = _param_loop(Phi, y, name, etas, 0.5)
    lam, V = theory.eigen(Phi @ Phi.T)
    spec = optimizers.get(name)
    rec = theory.modal_loss(theory.discrete_modes(spec, hyper, lam, V.T @ -y, STEPS), 1.0)
    np.testing.assert_allclose(rec, want, rtol=1e-10)
    const = theory.modal_loss(theory.discrete_modes(spec, {**hyper, "eta": 0.6}, lam, V.T @ -y, STEPS), 1.0)
    assert np.max(np.abs(const / want - 1)) > 1e-2  # the schedule matters: the comparison can fail
    linear = models.Model("linear", lambda th, c, X: X @ th["w"], "half_sum")
    res = train(
        linear,
        spec,
        hyper,
        1.0,
        TrainPlan(STEPS, 1),
        {"w": jnp.zeros(p, jnp.float64)},
        {},
        jnp.asarray(Phi),
        jnp.asarray(y),
    )
    np.testing.assert_allclose(res.loss, want, rtol=1e-5)  # optax evaluates the schedule in float32


def test_scheduled_second_moment_vs_monte_carlo():
    rng = np.random.default_rng(1)
    n, p, b, R = 6, 18, 2, 20000
    Phi = rng.standard_normal((n, p)) / math.sqrt(p)
    y = rng.standard_normal(n)
    sched = schedules.from_config(
        {"schedule": "exponential", "init_value": 0.3, "transition_steps": 10, "decay_rate": 0.3}
    )
    etas = schedules.eta_values(sched, 30)
    lam, V = theory.eigen(Phi @ Phi.T)
    exact = stochastic.second_moment_loss(optimizers.get("gd"), {"eta": sched}, lam, V, V.T @ -y, 1.0, 30, b)
    theta = np.zeros((R, p))
    losses = [np.full(R, 0.5 * y @ y)]
    for eta in etas:  # SGD with eta_k, written out in parameter space
        idx = rng.integers(0, n, (R, b))
        r = np.einsum("rbp,rp->rb", Phi[idx], theta) - y[idx]
        theta = theta - eta * (n / b) * np.einsum("rbp,rb->rp", Phi[idx], r)
        losses.append(0.5 * np.sum((theta @ Phi.T - y) ** 2, axis=1))
    runs = np.stack(losses, 1)
    se = runs.std(0) / math.sqrt(R)
    assert np.all(np.abs(runs.mean(0) - exact) <= 5 * se + 1e-9 * exact)


def _cfg(eta, **train):
    raw = {"optimizers": [{"name": "gd", "eta": eta}], "data": {"n": 8}, "train": {"steps": 20, **train}}
    return config.from_dict(raw)


def test_config_schedule_and_batch_errors():
    cfg = _cfg({"schedule": "cosine_decay", "init_value": 0.1, "decay_steps": 20})
    assert isinstance(cfg.optimizers[0].hyper()["eta"], schedules.Schedule)
    for eta, match in [
        ({"schedule": "cosine"}, "optimizers\\[0\\].eta: schedule: 'cosine' is not allowed"),
        ({"schedule": "cosine_decay", "init_value": 0.1}, "decay_steps: required"),
        ({"schedule": "constant", "value": 0.1, "foo": 1}, "foo: not an argument"),
        ({"schedule": "constant", "value": -0.1}, "finite eta_k >= 0"),
        ({"schedule": "piecewise", "init_value": 0.1, "boundaries_and_scales": [1]}, "boundaries"),
    ]:
        with pytest.raises(config.ConfigError, match=match):
            _cfg(eta)
    with pytest.raises(config.ConfigError, match="train.batch_size: must be in 1..data.n=8"):
        _cfg(0.1, batch_size=9)
    with pytest.raises(config.ConfigError, match="train.sampling: 'cyclic' is not allowed"):
        _cfg(0.1, batch_size=2, sampling="cyclic")
    with pytest.raises(config.ConfigError, match="train.sampling_runs"):
        _cfg(0.1, sampling_runs=4)


def test_pipeline_scheduled_runs():
    """GD with a schedule: loss_discrete is the recurrence with eta_k, loss_ode the gradient flow at
    t_k = sum_{j<k} eta_j (checked against expm of K); HB's second-order ODE with gamma_k and
    t_k = sum_{j<k} sqrt(eta_j) against scipy in the output space."""
    from scipy.linalg import expm

    from ntkdyn import pipeline

    sched = {"schedule": "piecewise", "init_value": 0.4, "boundaries_and_scales": {10: 0.25}}
    raw = {
        "name": "t",
        "dtype": "float64",
        "data": {"n": 8, "d": 5},
        "model": {"width": 64},
        "train": {"steps": 30, "record_every": 5, "kernel_at": [0]},
        "theory": {"diffrax": True},
        "optimizers": [{"name": "gd", "eta": sched}, {"name": "hb", "eta": sched, "beta": 0.5}],
    }
    cfg = config.from_dict(raw)
    setup = pipeline.prepare(cfg)
    arrays, m = pipeline.run_optimizer(cfg, setup, cfg.optimizers[0])
    etas = np.where(np.arange(30) < 10, 0.4, 0.1)
    t = np.concatenate([[0.0], np.cumsum(etas)])[::5]
    want = [0.5 * np.sum((expm(-setup.K * s) @ setup.e0) ** 2) for s in t]
    np.testing.assert_allclose(arrays["loss_ode"], want, rtol=1e-10)
    np.testing.assert_allclose(arrays["loss_ode_diffrax"], want, rtol=1e-6)
    assert m["eta"] == {"schedule": "piecewise", "init_value": 0.4, "boundaries_and_scales": {10: 0.25}}
    assert m["predicted"]["stable"] and m["predicted"]["eta_range"] == [0.1, 0.4]
    # HB: e'' + gamma_k e' + K e = 0, gamma_k = (1 - beta)/sqrt(eta_k), over dt_k = sqrt(eta_k): solved
    # here with scipy in the output space (no eigenvectors), the damping switched at the interval edges
    from scipy.integrate import solve_ivp

    arrays, m = pipeline.run_optimizer(cfg, setup, cfg.optimizers[1])
    dt, gam = np.sqrt(etas), 0.5 / np.sqrt(etas)
    edges = np.concatenate([[0.0], np.cumsum(dt)])
    K, n, y = setup.K, setup.e0.size, np.concatenate([setup.e0, np.zeros(setup.e0.size)])
    want = [0.5 * np.sum(setup.e0**2)]
    for k0 in range(0, 30, 5):  # each record block, one constant-damping piece at a time
        for k in range(k0, k0 + 5):
            f = lambda t, z, g=gam[k]: np.concatenate([z[n:], -g * z[n:] - K @ z[:n]])  # noqa: E731
            y = solve_ivp(f, (edges[k], edges[k + 1]), y, rtol=1e-12, atol=1e-14, method="DOP853").y[:, -1]
        want.append(0.5 * np.sum(y[:n] ** 2))
    np.testing.assert_allclose(arrays["ode_time"], edges[::5], rtol=1e-14)
    np.testing.assert_allclose(arrays["loss_ode"], want, rtol=1e-8)
    np.testing.assert_allclose(arrays["loss_ode_diffrax"], want, rtol=1e-6)
    assert "second-order ODE" in m["note"] and arrays["loss_discrete"].shape == (7,)
    # the schedule matters: the constant-eta ODE at eta_0 differs
    const = theory.modal_loss(
        theory.ode_modes(
            optimizers.get("hb").ode({"eta": 0.4, "beta": 0.5}), setup.lam, setup.coef, edges[::5]
        ),
        setup.c,
    )
    assert np.max(np.abs(const / arrays["loss_ode"] - 1)) > 1e-2


def test_piecewise_damped_modes_vs_closed_form_and_solve_ivp():
    """theory.piecewise_damped_modes: a constant schedule is the damped oscillator's closed form; a
    cosine schedule matches scipy's DOP853 on the per-mode ODE with the damping switched at t_k;
    diffrax in the output space agrees; eta_k = 0 steps span no time."""
    from scipy.integrate import solve_ivp

    rng = np.random.default_rng(0)
    lam, coef = np.sort(rng.uniform(0.01, 3.0, 5)), rng.standard_normal(5)
    T, beta, at = 400, 0.9, np.arange(0, 401, 20)
    dt, gam = np.full(T, 0.1), np.full(T, (1 - beta) / 0.1)
    want = theory.damped_oscillator_modes(lam, gam[0], at * 0.1) * coef
    np.testing.assert_allclose(theory.piecewise_damped_modes(lam, coef, dt, gam, at), want, atol=1e-13)
    k = np.arange(T)
    etas = 0.02 * 0.5 * (1 + np.cos(np.pi * k / T)) + 1e-4
    etas[:3] = 0.0  # warmup from zero: no time passes
    dt = np.sqrt(etas)
    gam = np.where(etas > 0, (1 - beta) / np.where(etas > 0, dt, 1.0), 0.0)
    got = theory.piecewise_damped_modes(lam, coef, dt, gam, at)
    edges = np.concatenate([[0.0], np.cumsum(dt)])

    def field(t, z):
        g = gam[min(np.searchsorted(edges, t, side="right") - 1, T - 1)]
        return np.concatenate([z[5:], -g * z[5:] - lam * z[:5]])

    ref = solve_ivp(
        field,
        (0, edges[-1]),
        np.concatenate([coef, np.zeros(5)]),
        t_eval=edges[at],
        rtol=1e-12,
        atol=1e-14,
        method="DOP853",
    )
    np.testing.assert_allclose(got, ref.y[:5].T, atol=1e-9)
    V = np.linalg.qr(rng.standard_normal((5, 5)))[0]
    num = theory.piecewise_damped_diffrax((V * lam) @ V.T, V @ coef, dt, gam, at)
    np.testing.assert_allclose(num, got @ V.T, atol=1e-9)
    assert np.max(np.abs(got[-1] - coef)) > 0.1  # it moved
