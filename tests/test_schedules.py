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
    t_k = sum_{j<k} eta_j (checked against expm of K); HB's scheduled second-order ODE (gamma_k over
    dt_k = sqrt(eta_k), e' rescaled by (eta_k / eta_{k-1})^{beta/2} where eta changes) against scipy
    in the output space."""
    from scipy.integrate import solve_ivp
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
    # HB: each record block solved by scipy one constant-damping piece at a time, e' rescaled at the jump
    arrays, m = pipeline.run_optimizer(cfg, setup, cfg.optimizers[1])
    dt, gam = np.sqrt(etas), 0.5 / np.sqrt(etas)
    edges = np.concatenate([[0.0], np.cumsum(dt)])
    K, n, y = setup.K, setup.e0.size, np.concatenate([setup.e0, np.zeros(setup.e0.size)])
    want = [0.5 * np.sum(setup.e0**2)]
    for k0 in range(0, 30, 5):
        for k in range(k0, k0 + 5):
            if k > 0:
                y[n:] *= (etas[k] / etas[k - 1]) ** (0.5 / 2)  # beta = 0.5
            f = lambda t, z, g=gam[k]: np.concatenate([z[n:], -g * z[n:] - K @ z[:n]])  # noqa: E731
            y = solve_ivp(f, (edges[k], edges[k + 1]), y, rtol=1e-12, atol=1e-14, method="DOP853").y[:, -1]
        want.append(0.5 * np.sum(y[:n] ** 2))
    np.testing.assert_allclose(arrays["ode_time"], edges[::5], rtol=1e-14)
    np.testing.assert_allclose(arrays["loss_ode"], want, rtol=1e-8)
    np.testing.assert_allclose(arrays["loss_ode_diffrax"], want, rtol=1e-6)
    assert arrays["loss_discrete"].shape == (7,)


# --------------------------------------------------------------------------- the scheduled momentum limit
def _optax_momentum_loop(lam, coef, etas, beta, nesterov):
    """Kernel-regime error per mode of optax.sgd(schedule, momentum=beta, nesterov) written out by hand:
    g = lam e, v <- beta v + g (the buffer kept when eta changes), e <- e - eta_k (g + beta v) (Nesterov)
    or e - eta_k v; rows k = 0..T."""
    e, v, out = np.array(coef, np.float64), np.zeros_like(coef), [np.array(coef, np.float64)]
    for eta in etas:
        g = lam * e
        v = beta * v + g
        e = e - eta * (g + beta * v if nesterov else v)
        out.append(e)
    return np.array(out)


def _schedule(kind, eta0, T):
    k = np.arange(T)
    if kind == "step":  # x 0.1 at T/4
        return np.where(k < T // 4, eta0, 0.1 * eta0)
    return eta0 * 0.5 * (1 + np.cos(np.pi * k / T))  # cosine decay to 0


def _limit_gaps(kind, nesterov, carry, eta0s=(2.5e-3, 6.25e-4, 1.5625e-4, 3.90625e-5), horizon=30.0, c=0.6):
    """Final relative ||e|| gap and final loss gap between the scheduled ODE (``carry``) and the optax
    loop for eta_0 -> 0 with (1 - beta) / sqrt(eta_0) = c and a fixed ODE horizon
    (T = horizon / sqrt(eta_0) steps)."""
    lam = np.geomspace(0.05, 1.0, 6)
    coef = np.random.default_rng(0).standard_normal(6)
    e_gap, l_gap = [], []
    for eta0 in eta0s:
        beta, T = 1 - c * math.sqrt(eta0), int(round(horizon / math.sqrt(eta0)))
        etas = _schedule(kind, eta0, T)
        ref = _optax_momentum_loop(lam, coef, etas, beta, nesterov)[-1]
        dt = np.sqrt(etas)
        gam = (1 - beta) / np.where(dt > 0, dt, 1.0)
        got = theory.piecewise_damped_modes(lam, coef, dt, gam, [T], carry=carry)[-1]
        e_gap.append(np.linalg.norm(got - ref) / np.linalg.norm(ref))
        l_gap.append(abs(np.sum(got**2) / np.sum(ref**2) - 1))
    order = lambda gaps: np.polyfit(np.log(eta0s), np.log(gaps), 1)[0]  # noqa: E731
    return np.array(e_gap), np.array(l_gap), order(e_gap), order(l_gap)


@pytest.mark.parametrize("kind", ["step", "cosine"])
@pytest.mark.parametrize("name", ["hb", "nag"])
def test_scheduled_momentum_ode_is_the_limit_of_the_optax_loop(kind, name):
    """The scheduled HB / NAG-SC ODE (default carry: 1 - gamma dt = beta) against a hand-written optax loop
    with the schedule: the final ||e|| and loss gaps shrink like eta_0^{1/2} (fitted order >= 0.45) for a
    x0.1 step at T/4 and a cosine decay. With e' kept continuous (carry = 0, the model before issue 17)
    they do not shrink, so the rescaling is what makes it the limit."""
    e_gap, l_gap, e_order, l_order = _limit_gaps(kind, name == "nag", None)
    assert e_order >= 0.45 and l_order >= 0.45, (e_gap, l_gap, e_order, l_order)
    assert e_gap[-1] < 0.01 and l_gap[-1] < 0.01
    old_e, old_l, old_order, _ = _limit_gaps(kind, name == "nag", 0.0)
    assert old_order < 0.2 and old_l[-1] > 0.05, (old_e, old_l)


def _smooth_cosine_gaps(T: int, alpha: float = 0.05) -> tuple[float, float]:
    """Relative final gaps of the staircase (carry = beta, and carry = 0) to the smooth scheduled ODE
    solved by scipy in the step variable k, eta_0 = (30 / T)^2, (1 - beta) / sqrt(eta_0) = 0.6."""
    from scipy.integrate import solve_ivp

    lam = np.geomspace(0.05, 1.0, 5)
    coef = np.random.default_rng(1).standard_normal(5)
    eta0 = (30.0 / T) ** 2
    beta = 1 - 0.6 * math.sqrt(eta0)

    def eta(k):
        return eta0 * (alpha + (1 - alpha) * 0.5 * (1 + np.cos(np.pi * k / T)))

    def field(k, z):
        s = math.sqrt(eta(k))
        dlns = 0.5 * (-eta0 * (1 - alpha) * 0.5 * np.pi / T * np.sin(np.pi * k / T)) / eta(k)
        e, de = z[:5], z[5:]
        return np.concatenate([s * de, -(1 - beta) * de + beta * dlns * de - s * lam * e])

    ref = solve_ivp(
        field, (0, T), np.concatenate([coef, np.zeros(5)]), rtol=1e-11, atol=1e-13, method="DOP853"
    )
    ref = ref.y[:5, -1]
    dt = np.sqrt(eta(np.arange(T) + 0.5))  # each update's eta at its midpoint
    got = theory.piecewise_damped_modes(lam, coef, dt, (1 - beta) / dt, [T])[-1]
    old = theory.piecewise_damped_modes(lam, coef, dt, (1 - beta) / dt, [T], carry=0.0)[-1]
    scale = np.linalg.norm(ref)
    return np.linalg.norm(got - ref) / scale, np.linalg.norm(old - ref) / scale


def test_staircase_converges_to_the_smooth_scheduled_ode():
    """For a smooth schedule the per-update staircase of ``piecewise_damped_modes`` tends to the smooth ODE
    e'' + [(1 - beta)/s - beta (ln s)'] e' + lambda e = 0, s(t) = sqrt(eta(t)), solved by scipy in the
    step variable k (dt/dk = s): de/dk = s e', de'/dk = -(1 - beta) e' + beta (d ln s / dk) e' - s lambda e,
    eta(k) = eta_0 (alpha + (1 - alpha)(1 + cos(pi k / T)) / 2). The gap shrinks like 1 / T; the staircase
    with e' continuous (carry = 0) tends to the ODE without the beta (ln s)' term, not to this one."""
    (g1, old1), (g2, old2) = _smooth_cosine_gaps(200), _smooth_cosine_gaps(800)
    assert g2 < g1 / 3 and g2 < 1e-3, (g1, g2)
    assert min(old1, old2) > 0.05, (old1, old2)


def test_piecewise_damped_modes_closed_form_and_diffrax():
    """Secondary checks of the solver: a constant schedule is the damped oscillator's closed form; diffrax
    in the full output space (continuous (e, W) variables) agrees with the per-mode closed form on a
    warmup-from-zero cosine (eta_k = 0 steps span no time); carry must be constant."""
    rng = np.random.default_rng(0)
    lam, coef = np.sort(rng.uniform(0.01, 3.0, 5)), rng.standard_normal(5)
    T, beta, at = 400, 0.9, np.arange(0, 401, 20)
    dt, gam = np.full(T, 0.1), np.full(T, (1 - beta) / 0.1)
    want = theory.damped_oscillator_modes(lam, gam[0], at * 0.1) * coef
    np.testing.assert_allclose(theory.piecewise_damped_modes(lam, coef, dt, gam, at), want, atol=1e-13)
    k = np.arange(T)
    etas = 0.02 * 0.5 * (1 + np.cos(np.pi * k / T)) + 1e-4
    etas[:3] = 0.0
    dt = np.sqrt(etas)
    gam = np.where(etas > 0, (1 - beta) / np.where(etas > 0, dt, 1.0), 0.0)
    got = theory.piecewise_damped_modes(lam, coef, dt, gam, at)
    V = np.linalg.qr(rng.standard_normal((5, 5)))[0]
    num = theory.piecewise_damped_diffrax((V * lam) @ V.T, V @ coef, dt, gam, at)
    np.testing.assert_allclose(num, got @ V.T, atol=1e-9)
    assert np.max(np.abs(got[-1] - coef)) > 0.1
    with pytest.raises(ValueError, match="carry"):
        theory.piecewise_damped_modes(lam, coef, dt, gam * np.linspace(1, 2, T), at)


def _print_orders():
    """The report's figures: python -c "import tests.test_schedules as t; t._print_orders()"."""
    for kind in ("step", "cosine"):
        for name in ("hb", "nag"):
            for carry in (0.0, None):
                e, l, oe, ol = _limit_gaps(kind, name == "nag", carry)
                print(kind, name, carry, np.round(e, 5), np.round(l, 5), round(oe, 2), round(ol, 2))
