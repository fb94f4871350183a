"""Adaptive restart of NAG-C (O'Donoghue & Candes 2015), tuned NAG-SC and the predicted squared
gradient norm: each face against an independent reference — a hand-written numpy loop with
torch's SGD(nesterov=True) semantics and the restart tests written from the paper's x-sequence,
training a linear model (exact kernel regime), and closed-form rates."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ntkdyn import config, control, optimizers, pipeline, theory
from ntkdyn.models import Model
from ntkdyn.train import TrainPlan, train

LINEAR = Model("lin", lambda p, c, X: X @ p["w"], "half_sum")


def _quadratic(seed=0, n=10, mu=1e-3, L=1.0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.geomspace(mu, L, n)
    return (Q * lam) @ Q.T, rng.standard_normal(n), rng.standard_normal(n), lam


def _restarted_nag_c_numpy(A, b, x0, eta, r, steps, rule):
    """Torch SGD(nesterov=True) with momentum mu_j = (j-1)/(j+r-1), j = updates since the last restart
    (no buffer while mu = 0; the buffer is created as a copy of g), held iterate theta = y (the gradient
    point). Before update k: x_k = theta_{k-1} - eta g_k; restart when f(theta_{k-1}) > f(theta_{k-2})
    (function) or g_k . (x_k - x_{k-1}) > 0 (gradient; x_0 = theta_0) or never; a restart drops the buffer and
    sets j = 0 so that update k is a plain gradient step. Returns the iterates and the restart steps."""
    f = lambda x: 0.5 * x @ A @ x - b @ x
    theta, buf, j = x0.copy(), None, 0
    x_prev, f_prev = x0.copy(), math.inf
    thetas, hits = [theta.copy()], []
    for k in range(1, steps + 1):
        g = A @ theta - b
        x = theta - eta * g
        fk = f(theta)
        hit = {"function": fk > f_prev, "gradient": g @ (x - x_prev) > 0, "never": False}[rule]
        if hit:
            hits.append(k)
            buf, j = None, 0
        j += 1
        mu = (j - 1) / (j + r - 1)
        d = g
        if mu != 0:
            buf = g.copy() if buf is None else mu * buf + g
            d = g + mu * buf
        theta = theta - eta * d
        x_prev, f_prev = x, fk
        thetas.append(theta.copy())
    return np.asarray(thetas), hits


def _run_tx(tx, A, b, x0, steps):
    """The optax face on f = 1/2 x^T A x - b^T x (float64), called as train.py calls it (value = f)."""
    theta = jnp.asarray(x0, jnp.float64)
    A, b = jnp.asarray(A), jnp.asarray(b)
    tx = optax.with_extra_args_support(tx)
    state = tx.init(theta)
    update = jax.jit(tx.update)
    out = [theta]
    for _ in range(steps):
        updates, state = update(A @ theta - b, state, theta, value=0.5 * theta @ A @ theta - b @ theta)
        theta = optax.apply_updates(theta, updates)
        out.append(theta)
    return np.asarray(jnp.stack(out)), int(getattr(state, "restarts", 0))


@pytest.mark.parametrize("rule", ["function", "gradient"])
def test_restart_transformation_is_the_hand_written_loop(rule):
    A, b, x0, lam = _quadratic()
    eta, steps = 1.0 / lam[-1], 400
    spec = optimizers.get(f"nag_c_{'fn' if rule == 'function' else 'grad'}_restart")
    ours, n_restarts = _run_tx(optimizers.transformation(spec, {"eta": eta, "r": 3.0}), A, b, x0, steps)
    ref, hits = _restarted_nag_c_numpy(A, b, x0, eta, 3.0, steps, rule)
    assert len(hits) >= 3 and n_restarts == len(hits)
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)
    # without restarts the same loop is plain NAG-C, the registry's nag_c
    plain, none = _restarted_nag_c_numpy(A, b, x0, eta, 3.0, steps, "never")
    assert not none
    nag_c, _ = _run_tx(
        optimizers.transformation(optimizers.get("nag_c"), {"eta": eta, "r": 3.0}), A, b, x0, steps
    )
    np.testing.assert_allclose(nag_c, plain, rtol=1e-10, atol=1e-12)


def test_function_restart_needs_the_loss():
    tx = optimizers.transformation(optimizers.get("nag_c_fn_restart"), {"eta": 0.1, "r": 3.0})
    theta = jnp.ones(3)
    with pytest.raises(ValueError, match="value"):
        tx.update(theta, tx.init(theta), theta)
    with pytest.raises(ValueError, match="schedule"):
        optimizers.restart_transformation(
            optimizers.Restart("nag_c", "gradient"), {"eta": optax.constant_schedule(0.1)}
        )
    with pytest.raises(ValueError, match="allowed: function, gradient"):
        optimizers.Restart("nag_c", "speed")


@pytest.mark.parametrize("name", ["nag_c_fn_restart", "nag_c_grad_restart"])
def test_restart_prediction_is_training_of_a_linear_model(name):
    """Training a linear model (the exact kernel regime, float64, ``train`` passing value = L) against the
    restart rule applied to the predicted trajectory in the eigenbasis of K = X X^T."""
    rng = np.random.default_rng(1)
    n, d = 8, 30
    Xn = rng.standard_normal((n, d)) / np.sqrt(d)
    Xn[:, :n] *= np.geomspace(0.05, 1.0, n)  # spread the spectrum: kappa ~ 100s
    X, y = jnp.asarray(Xn), jnp.asarray(rng.standard_normal(n))
    params = {"w": jnp.asarray(0.3 * rng.standard_normal(d))}
    lam, V = theory.eigen(Xn @ Xn.T)
    spec = optimizers.get(name)
    hyper = {"eta": 1.0 / lam[-1], "r": 3.0}
    steps = 300
    res = train(LINEAR, spec, hyper, 1.0, TrainPlan(steps), params, {}, X, y)
    e0 = Xn @ np.asarray(params["w"]) - np.asarray(y)
    modes, hits = theory.restarted_modes(spec, hyper, lam, V.T @ e0, steps)
    pred = theory.modal_loss(modes, 1.0)
    assert res.diverged_at is None and hits.size >= 2
    gap = np.abs(np.sqrt(2 * res.loss) - np.sqrt(2 * pred))
    assert np.all(gap <= 1e-9 * np.sqrt(2 * pred) + 1e-13 * np.linalg.norm(e0))
    np.testing.assert_allclose(
        res.grad_norm_sq,
        theory.modal_grad_norm_sq(modes, lam, 1.0),
        rtol=1e-8,
        atol=1e-24 * float(np.sum(e0**2)),
    )
    # and the restarts pay: far below plain NAG-C at the end
    plain = theory.modal_loss(
        theory.discrete_modes(optimizers.get("nag_c"), hyper, lam, V.T @ e0, steps), 1.0
    )
    assert pred[-1] < 1e-3 * plain[-1]


def test_restart_restores_linear_convergence_on_a_quadratic():
    """Kernel-regime prediction on a spectrum [1e-4, 1] (eta = 1, before NAG-C's crossover k* ~ 3e4):
    plain NAG-C falls like a power of k (log-log slope of the running max about -3 over k = 300..3000)
    while both restarts fall geometrically: the log-loss drops at least sqrt(eta lambda_min) = 0.01 per step
    over the same window (O'Donoghue-Candes: restarting recovers a rate ~ 1 - c sqrt(mu / L); the accelerated
    optimum is 2 sqrt(mu / L) = 0.02, GD's 2 eta mu = 2e-4, NAG-C's fixed-step tail eta mu = 1e-4)."""
    lam = np.geomspace(1e-4, 1.0, 40)
    coef = np.ones(40)
    steps = 3000
    k = np.arange(steps + 1)
    window = (k >= 300) & (k <= steps)
    hyper = {"eta": 1.0, "r": 3.0}
    plain = theory.modal_loss(theory.discrete_modes(optimizers.get("nag_c"), hyper, lam, coef, steps), 1.0)
    env = np.maximum.accumulate(plain[::-1])[::-1]  # the upper envelope (NAG-C oscillates)
    slope = np.polyfit(np.log(k[window]), np.log(env[window]), 1)[0]
    assert -4.0 < slope < -2.0
    for name in ("nag_c_fn_restart", "nag_c_grad_restart"):
        modes, hits = theory.restarted_modes(optimizers.get(name), hyper, lam, coef, steps)
        loss = theory.modal_loss(modes, 1.0)
        ok = window & (loss > 1e-28 * loss[0])
        per_step = -np.polyfit(k[ok], np.log(loss[ok]), 1)[0]
        assert 0.01 < per_step < 0.02, (name, per_step)
        assert loss[ok][-1] < 1e-6 * plain[k[ok][-1]]
        assert hits.size >= 3


# --------------------------------------------------------------------------- tuned NAG-SC
def test_tuned_nag_sc_rate_is_one_minus_inverse_sqrt_kappa():
    """eta = 1/L, beta = (sqrt kappa - 1)/(sqrt kappa + 1): the slowest mode has the double pole
    1 - 1/sqrt(kappa) (worked out by hand: z^2 - 2(1 - q) z + (1 - q)^2, q = 1/sqrt(kappa)) and every
    other mode is faster; training on a quadratic contracts ||x_k - x*|| like (a + b k)(1 - q)^k."""
    A, b, x0, lam = _quadratic(seed=3, mu=1e-3, L=2.0)
    spec = optimizers.get("nag_sc_tuned")
    hyper = optimizers.resolve_hyper(spec, {"eta": 99.0}, lam)
    kappa = lam[-1] / lam[0]
    q = 1 / math.sqrt(kappa)
    assert hyper["eta"] == pytest.approx(1 / lam[-1]) and hyper["beta"] == pytest.approx((1 - q) / (1 + q))
    poles = control.poles(control.state_space(spec, hyper, lam[:1]))[0]
    np.testing.assert_allclose(poles, [1 - q, 1 - q], rtol=1e-6)  # a double root: sqrt(eps)-accurate
    dense = np.geomspace(lam[0], lam[-1], 500)
    rho = control.spectral_radius(control.state_space(spec, hyper, dense))
    assert np.max(rho) == pytest.approx(1 - q, rel=1e-6) and np.all(rho <= (1 - q) * (1 + 1e-6))
    assert theory.predicted_linear_rate(spec, hyper, lam) == pytest.approx((1 - q) ** 2, rel=1e-6)
    xs = _run_tx(optimizers.transformation(spec, hyper), A, b, x0, 600)[0]
    err = np.linalg.norm(xs - np.linalg.solve(A, b), axis=1)
    k = np.flatnonzero((np.arange(601) >= 30) & (err > 1e-11 * err[0]))
    assert k.size > 200
    coef = np.linalg.lstsq(np.stack([np.ones(k.size), np.log(k), k], 1), np.log(err[k]), rcond=None)[0]
    assert math.exp(coef[2]) == pytest.approx(1 - q, rel=2e-3)
    # Polyak-tuned HB on the same spectrum is faster per step: (sqrt kappa - 1)/(sqrt kappa + 1) < 1 - q
    hb = optimizers.resolve_hyper(optimizers.get("hb_polyak"), {}, lam)
    assert math.sqrt(hb["beta"]) == pytest.approx((1 - q) / (1 + q)) and (1 - q) / (1 + q) < 1 - q


# --------------------------------------------------------------------------- gradient norms
@pytest.mark.parametrize("name,hyper", [("gd", {"eta": 0.5}), ("nag_c", {"eta": 0.2, "r": 3.0})])
def test_gradient_norm_prediction_on_a_wide_network(name, hyper):
    """||grad L||^2 recorded by training (jax.grad over the network's weights) against the kernel-regime
    prediction c e^T K e along the recurrence: equal at step 0 (K = c H(0) is the exact Gram there, computed
    by ntkdyn.ntk) and within a few percent while the kernel drifts by O(1/sqrt(m))."""
    cfg = config.from_dict(
        {
            "dtype": "float64",
            "data": {"source": "sphere", "n": 16, "d": 8, "target": "teacher"},
            "model": {"name": "paper", "width": 4096},
            "theory": {"diffrax": False},
            "train": {"steps": 150, "kernel_at": [0]},
            "optimizers": [{"name": name, **hyper}],
        }
    )
    setup = pipeline.prepare(cfg)
    arrays, m = pipeline.run_optimizer(cfg, setup, cfg.optimizers[0])
    g, pred = arrays["grad_norm_sq"], arrays["grad_norm_sq_discrete"]
    assert g.shape == arrays["loss"].shape == pred.shape
    assert g[0] == pytest.approx(setup.c * setup.e0 @ setup.K @ setup.e0, rel=1e-9)
    ok = pred > 1e-4 * pred[0]  # the first four decades (later the slow modes feel the finite width)
    assert ok.sum() >= 20 and pred[-1] < 1e-4 * pred[0]
    gap_g = np.max(np.abs(np.log(g[ok] / pred[ok])))
    gap_loss = np.max(np.abs(np.log(arrays["loss"][ok] / arrays["loss_discrete"][ok])))
    assert gap_g < 0.1 and gap_g < 1.5 * gap_loss + 0.01  # as close as the loss itself
    assert m["deviation"]["grad_norm_sq"] >= np.max(np.abs(pred[ok] - g[ok]) / g[ok])
