"""Numerical-methods optimizers: Polyak-tuned HB, Kim-Fessler OGM, Adams-Bashforth multistep GD,
two-lag ("higher momentum") HB and implicit (proximal) GD — each face against an independent
reference: hand-written numpy iterations, closed forms (Polyak's rate, OGM's worst-case bound,
AB stability intervals and orders), exact proximal steps, and training."""

import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ntkdyn import config, control, optimizers, pipeline, theory
from ntkdyn.models import Model
from ntkdyn.train import TrainPlan, train

LINEAR = Model("lin", lambda p, c, X: X @ p["w"], "half_sum")


def _quadratic(seed=0, n=8, mu=0.01, L=1.0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.geomspace(mu, L, n)
    return (Q * lam) @ Q.T, rng.standard_normal(n), rng.standard_normal(n), lam


def _run_tx(tx, A, b, theta, steps):
    """Apply an optax transformation to f = 1/2 x^T A x - b^T x (float64); all iterates."""
    theta = jnp.asarray(theta, jnp.float64)
    A, b = jnp.asarray(A), jnp.asarray(b)
    state = tx.init(theta)
    out = [theta]
    for _ in range(steps):
        updates, state = tx.update(A @ theta - b, state, theta)
        theta = optax.apply_updates(theta, updates)
        out.append(theta)
    return np.asarray(jnp.stack(out))


def _tx(name, hyper):
    return optimizers.transformation(optimizers.get(name), hyper)


# --------------------------------------------------------------------------- Polyak-tuned HB
def test_polyak_hb_rate_on_a_quadratic():
    A, b, x0, lam = _quadratic(mu=0.01, L=1.0)
    spec = optimizers.get("hb_polyak")
    hyper = spec.tune({"eta": 123.0}, lam)
    kappa = lam[-1] / lam[0]
    rate = (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)
    assert hyper["eta"] == pytest.approx(4 / (1 + math.sqrt(0.01)) ** 2)
    assert math.sqrt(hyper["beta"]) == pytest.approx(rate)
    # every mode of [mu, L] has |z| = sqrt(beta) (the extremes are double poles)
    dense = np.geomspace(lam[0], lam[-1], 400)
    rho = control.spectral_radius(control.state_space(spec, hyper, dense))
    np.testing.assert_allclose(rho, rate, rtol=1e-6)
    assert theory.predicted_linear_rate(spec, hyper, lam) == pytest.approx(rate**2, rel=1e-6)
    # training face on the quadratic: ||x_k - x*|| = (a + b k) rate^k (Jordan blocks at mu and L)
    xs = _run_tx(_tx("hb_polyak", hyper), A, b, x0, 250)
    err = np.linalg.norm(xs - np.linalg.solve(A, b), axis=1)
    k = np.flatnonzero((np.arange(251) >= 20) & (err > 1e-10 * err[0]))  # above float64 round-off
    assert k.size > 100
    coef = np.linalg.lstsq(np.stack([np.ones(k.size), np.log(k), k], 1), np.log(err[k]), rcond=None)[0]
    assert math.exp(coef[2]) == pytest.approx(rate, rel=2e-3)
    # and it beats GD with its best step 2 / (mu + L) (rate (kappa - 1)/(kappa + 1)) by far
    gd = np.linalg.norm(
        _run_tx(_tx("gd", {"eta": 2 / (lam[0] + lam[-1])}), A, b, x0, 100) - np.linalg.solve(A, b), axis=1
    )
    assert gd[100] <= ((kappa - 1) / (kappa + 1)) ** 100 * gd[0] * (1 + 1e-9)
    assert err[100] < 1e-4 * gd[100]


def test_polyak_hb_on_the_kernel_regime_run():
    """Through the pipeline's tune hook: eta, beta from the run's spectrum; the wide network's loss
    decays at rate^2 = beta per step (fit log L = a + p log k + k log q)."""
    cfg = config.from_dict(
        {
            "dtype": "float64",
            "data": {"source": "sphere", "n": 16, "d": 8, "target": "teacher"},
            "model": {"name": "paper", "width": 8192},
            "theory": {"diffrax": False},
            "train": {"steps": 300, "kernel_at": [0]},
            "optimizers": [{"name": "hb_polyak", "eta": 1.0}],
        }
    )
    setup = pipeline.prepare(cfg)
    arrays, m = pipeline.run_optimizer(cfg, setup, cfg.optimizers[0])
    eta, beta = optimizers.polyak_hb(setup.lam[0], setup.lam[-1])
    assert m["eta"] == pytest.approx(eta) and m["beta"] == pytest.approx(beta)
    kappa = setup.lam[-1] / setup.lam[0]
    assert math.sqrt(beta) == pytest.approx((math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1))
    loss = arrays["loss"]
    k = np.arange(loss.size)
    sel = (k >= 5) & (loss > 1e-24 * loss[0])
    assert sel.sum() > 30
    coef = np.linalg.lstsq(
        np.stack([np.ones(sel.sum()), np.log(k[sel]), k[sel]], 1), np.log(loss[sel]), rcond=None
    )[0]
    assert coef[2] == pytest.approx(math.log(beta), rel=0.05)


# --------------------------------------------------------------------------- OGM
def _ogm_numpy(grad, x0, L, N, special_last):
    """Kim & Fessler (2016), Algorithm OGM1, written out; returns x_0..x_N."""
    x, y, th = x0.copy(), x0.copy(), 1.0
    xs = [x.copy()]
    for i in range(N):
        y_new = x - grad(x) / L
        c = 8.0 if (special_last and i == N - 1) else 4.0
        th_new = 0.5 * (1 + math.sqrt(1 + c * th * th))
        x = y_new + (th - 1) / th_new * (y_new - y) + th / th_new * (y_new - x)
        y, th = y_new, th_new
        xs.append(x.copy())
    return np.asarray(xs)


@pytest.mark.parametrize("N", [0, 37])
def test_ogm_training_face_is_kim_fessler(N):
    A, b, x0, lam = _quadratic(mu=1e-3)
    steps = 37 if N else 120
    ours = _run_tx(_tx("ogm", {"eta": 1.0 / lam[-1], "N": float(N)}), A, b, x0, steps)
    ref = _ogm_numpy(lambda x: A @ x - b, x0, lam[-1], steps, special_last=bool(N))
    np.testing.assert_allclose(ours, ref, rtol=1e-11, atol=1e-12)


def test_ogm_meets_its_worst_case_bound_on_a_quadratic():
    """f(x_N) - f* <= L R^2 / (2 theta_N^2) (<= L R^2 / (N + 1)^2 with the special last step) over
    every quadratic with spectrum in (0, L]; equality on f = L/2 ||x - x*||^2."""
    L = 2.0
    lam = np.linspace(L / 4000, L, 4000)
    theta = optimizers._theta_table(200)
    for N in (1, 2, 5, 20, 100):
        for special in (False, True):
            # per eigen-direction the error obeys the scalar recurrence (independent numpy OGM)
            c = _ogm_numpy(lambda x: lam * x, np.ones_like(lam), L, N, special)[N]
            gap = 0.5 * lam * c * c  # R = 1
            thN = 0.5 * (1 + math.sqrt(1 + 8 * theta[N - 1] ** 2)) if special else theta[N]
            bound = L / (2 * thN**2)
            assert gap.max() <= bound * (1 + 1e-12)
            assert gap[-1] == pytest.approx(bound, rel=1e-10)  # attained at lambda = L
            if special:
                assert bound <= L / (N + 1) ** 2
            # the recurrence face agrees
            spec = optimizers.get("ogm")
            modes = theory.discrete_modes(
                spec, {"eta": 1 / L, "N": float(N) if special else 0.0}, lam[::400], np.ones(10), N
            )[N]
            np.testing.assert_allclose(modes, c[::400], rtol=1e-9, atol=1e-13)
    # a random quadratic trained with the optax face stays under the bound
    A, b, x0, lam8 = _quadratic(seed=2, mu=1e-4, L=L)
    xstar = np.linalg.solve(A, b)
    f = lambda x: 0.5 * x @ A @ x - b @ x
    N = 30
    xs = _run_tx(_tx("ogm", {"eta": 1 / L, "N": float(N)}), A, b, x0, N)
    thN = 0.5 * (1 + math.sqrt(1 + 8 * theta[N - 1] ** 2))
    assert f(xs[N]) - f(xstar) <= L * np.sum((x0 - xstar) ** 2) / (2 * thN**2)


def test_ogm_theta_table_and_continuation():
    """theta_k of OGM against references that do not use its table: a loop written here (Python floats)
    out to k = 3e5, far past the table's 2^16 where ogm_theta switches to its fitted expansion; the
    defining invariant theta_k^2 - theta_k = theta_{k-1}^2 on ogm_theta's own values (table and
    continuation, incl. k = 1e7); Kim & Fessler's bound theta_k >= (k + 2)/2; the traced (jax) path."""
    import jax

    marks = [1, 2, 5, 100, 65535, 65536, 65537, 70_000, 100_000, 200_000, 300_000]
    ref, th = {}, 1.0
    for k in range(1, marks[-1] + 1):
        th = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * th * th))
        if k in marks:
            ref[k] = th
    for k in marks:
        assert optimizers.ogm_theta(float(k)) == pytest.approx(ref[k], rel=1e-12)
    assert optimizers.ogm_theta(0.0) == 1.0
    k = np.concatenate([np.arange(1.0, 70_001.0), np.geomspace(7e4, 1e7, 200).round()])
    th, prev = optimizers.ogm_theta(k), optimizers.ogm_theta(k - 1)
    np.testing.assert_allclose(th * th - th, prev * prev, rtol=1e-13)
    assert np.all(th >= (k + 2) / 2)
    with jax.enable_x64(True):
        traced = jax.jit(optimizers.ogm_theta)(jnp.asarray(k))
    np.testing.assert_allclose(np.asarray(traced), th, rtol=1e-13)


def test_ogm_ode_is_nesterovs_with_doubled_step():
    """Discrete OGM approaches e'' + (3/t) e' + 2 K e = 0 in t = k sqrt(eta), i.e. the Bessel mode in
    t = k sqrt(2 eta): the gap shrinks as eta -> 0."""
    spec = optimizers.get("ogm")
    lam = np.array([0.3, 1.0])
    gaps = []
    for eta in (0.04, 0.01, 0.0025):
        ode = spec.ode({"eta": eta})
        steps = int(round(15 / ode.time_step))
        d = theory.discrete_modes(spec, {"eta": eta}, lam, np.ones(2), steps)
        o = theory.ode_modes(ode, lam, np.ones(2), np.arange(steps + 1) * ode.time_step)
        gaps.append(np.max(np.abs(d - o)))
    assert gaps[0] > 1.6 * gaps[1] > 2.56 * gaps[2]


# --------------------------------------------------------------------------- Adams-Bashforth
AB = {1: [1.0], 2: [1.5, -0.5], 3: [23 / 12, -16 / 12, 5 / 12]}


def _ab_numpy(grad, x0, eta, order, steps):
    """theta_k = theta_{k-1} - eta sum_j c_j g_{k-j}, order min(k, p) (Euler, then AB2, ...)."""
    x, hist, xs = x0.copy(), [], [x0.copy()]
    for k in range(1, steps + 1):
        hist.insert(0, grad(x))
        c = AB[min(k, order)]
        x = x - eta * sum(cj * g for cj, g in zip(c, hist))
        xs.append(x.copy())
    return np.asarray(xs)


@pytest.mark.parametrize("name,order", [("ab2", 2), ("ab3", 3)])
def test_adams_bashforth_training_face(name, order):
    A, b, x0, lam = _quadratic(mu=0.05)
    eta = 0.4
    ours = _run_tx(_tx(name, {"eta": eta}), A, b, x0, 80)
    ref = _ab_numpy(lambda x: A @ x - b, x0, eta, order, 80)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-13)


def test_adams_bashforth_order_and_stability():
    """On the test equation c' = -lam c the principal pole approximates e^{-h} to O(h^{p+1})
    (p = 1, 2, 3 for GD, AB2, AB3), and the stability intervals are h < 2, 1, 6/11."""
    hs = np.array([0.08, 0.04, 0.02, 0.01])
    for name, p, limit in (("gd", 1, 2.0), ("ab2", 2, 1.0), ("ab3", 3, 6 / 11)):
        spec = optimizers.get(name)
        err = []
        for h in hs:
            poles = control.poles(control.state_space(spec, {"eta": h}, [1.0]))[0]
            err.append(np.min(np.abs(poles - math.exp(-h))))
        slope = np.polyfit(np.log(hs), np.log(err), 1)[0]
        assert slope == pytest.approx(p + 1, abs=0.1)
        assert control.stability_limit(spec, {"eta": 1.0}, 1.0) == pytest.approx(limit, rel=1e-9)


def test_ab2_tracks_gradient_flow_to_second_order():
    """Global error to the flow e(k eta) over a fixed time: O(eta) for GD, O(eta^2) for AB2."""
    lam = np.array([0.2, 1.0, 3.0])
    T = 4.0
    for name, p in (("gd", 1), ("ab2", 2)):
        spec = optimizers.get(name)
        errs, etas = [], np.array([0.04, 0.02, 0.01])
        for eta in etas:
            steps = int(round(T / eta))
            d = theory.discrete_modes(spec, {"eta": eta}, lam, np.ones(3), steps)
            errs.append(np.max(np.abs(d - theory.gradient_flow_modes(lam, np.arange(steps + 1) * eta))))
        assert np.polyfit(np.log(etas), np.log(errs), 1)[0] == pytest.approx(p, abs=0.15)


# --------------------------------------------------------------------------- two-lag heavy ball
def test_hb2_training_face_and_reduction_to_hb():
    A, b, x0, lam = _quadratic(mu=0.05)
    eta, b1, b2 = 0.5, 0.6, 0.25
    ours = _run_tx(_tx("hb2", {"eta": eta, "beta": b1, "beta2": b2}), A, b, x0, 100)
    x, v1, v2, ref = x0.copy(), np.zeros_like(x0), np.zeros_like(x0), [x0.copy()]
    for _ in range(100):
        v = b1 * v1 + b2 * v2 + (A @ x - b)
        x = x - eta * v
        v1, v2 = v, v1
        ref.append(x.copy())
    np.testing.assert_allclose(ours, np.asarray(ref), rtol=1e-12, atol=1e-13)
    hb = _run_tx(_tx("hb", {"eta": eta, "beta": b1}), A, b, x0, 100)
    np.testing.assert_allclose(
        _run_tx(_tx("hb2", {"eta": eta, "beta": b1, "beta2": 0.0}), A, b, x0, 100), hb, rtol=1e-12, atol=1e-13
    )


def test_hb2_ode_limit():
    """With beta + beta2 = 1 - gamma sqrt(eta): (1 + beta2) e'' + gamma e' + K e = 0 (declared with unit
    mass in t = k sqrt(eta / (1 + beta2))); the gap to the recurrence shrinks as eta -> 0."""
    spec, lam, gamma, b2 = optimizers.get("hb2"), np.array([0.2, 1.0, 2.0]), 1.0, 0.3
    gaps = []
    for eta in (0.01, 0.0025, 0.000625):
        hyper = {"eta": eta, "beta": 1 - gamma * math.sqrt(eta) - b2, "beta2": b2}
        ode = spec.ode(hyper)
        assert ode.gamma * ode.time_step == pytest.approx(gamma * math.sqrt(eta) / (1 + b2))
        steps = int(round(10 / ode.time_step))
        d = theory.discrete_modes(spec, hyper, lam, np.ones(3), steps)
        gaps.append(
            np.max(np.abs(d - theory.ode_modes(ode, lam, np.ones(3), np.arange(steps + 1) * ode.time_step)))
        )
    assert gaps[0] > 1.6 * gaps[1] > 2.56 * gaps[2]


# --------------------------------------------------------------------------- implicit GD
def test_implicit_gd_is_stable_for_every_eta():
    spec = control.get("implicit_gd")
    lam = np.geomspace(1e-6, 1e3, 50)
    for eta in np.geomspace(1e-6, 1e6, 25):
        ss = control.state_space(spec, {"eta": eta}, lam)
        rho = control.spectral_radius(ss)
        assert np.all(rho < 1.0)
        np.testing.assert_allclose(rho, 1 / (1 + eta * lam), rtol=1e-14)
        np.testing.assert_allclose(control.dc_gain(ss), 1.0, rtol=1e-9)
    assert control.stability_limit(spec, {"eta": 1.0}, 1e3, hi=1e9) is None
    assert control.stability_limit(optimizers.get("gd"), {"eta": 1.0}, 4.0) == pytest.approx(0.5)


def test_implicit_gd_recurrence_is_the_proximal_step():
    """theta_{k+1} = argmin 1/2 ||X theta - y||^2 + ||theta - theta_k||^2 / (2 eta), solved directly,
    versus the per-mode recurrence (1 + eta lam)^-1 in the eigenbasis of K = X X^T."""
    rng = np.random.default_rng(5)
    n, d, eta, steps = 6, 15, 7.0, 12
    X, y, th = rng.standard_normal((n, d)), rng.standard_normal(n), rng.standard_normal(d)
    lam, V = theory.eigen(X @ X.T)
    e0 = X @ th - y
    errs = [e0]
    for _ in range(steps):
        th = np.linalg.solve(np.eye(d) + eta * X.T @ X, th + eta * X.T @ y)
        errs.append(X @ th - y)
    modes = control.free_response(control.get("implicit_gd"), {"eta": eta}, lam, steps) * (V.T @ e0)
    np.testing.assert_allclose(np.asarray(errs), modes @ V.T, atol=1e-10 * np.linalg.norm(e0))
    assert np.linalg.norm(errs[-1]) < 0.5 * np.linalg.norm(e0)


# --------------------------------------------------------------------------- training = recurrence
@pytest.mark.parametrize(
    "name,extra", [("hb_polyak", {}), ("ogm", {}), ("ab2", {}), ("ab3", {}), ("hb2", {"beta": 0.5})]
)
def test_linear_model_training_is_the_exact_recurrence(name, extra):
    rng = np.random.default_rng(0)
    n, d = 6, 20
    Xn = rng.standard_normal((n, d)) / np.sqrt(d)
    X, y = jnp.asarray(Xn), jnp.asarray(rng.standard_normal(n))
    params = {"w": jnp.asarray(0.3 * rng.standard_normal(d))}
    lam, V = theory.eigen(Xn @ Xn.T)
    spec = optimizers.get(name)
    hyper = control.resolve(spec, {"eta": 0.4 / lam[-1], **extra}, lam)
    steps = 150
    res = train(LINEAR, spec, hyper, 1.0, TrainPlan(steps), params, {}, X, y)
    e0 = Xn @ np.asarray(params["w"]) - np.asarray(y)
    ref = theory.modal_loss(theory.discrete_modes(spec, hyper, lam, V.T @ e0, steps), 1.0)
    assert res.diverged_at is None and ref[-1] < 1e-2 * ref[0]
    floor = 1e-14 * np.linalg.norm(np.asarray(y))
    gap = np.abs(np.sqrt(2 * res.loss) - np.sqrt(2 * ref))
    assert np.all(gap <= 1e-10 * np.sqrt(2 * ref) + floor)
