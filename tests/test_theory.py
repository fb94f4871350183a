"""Kernel-regime theory: ODE closed forms, diffrax, discrete recurrences, predicted rates.

References are independent: scipy's solve_ivp, hand-written scalar recurrences (GD, HB, NAG and
NAG-C per eigenmode), and closed forms (Polyak's optimal heavy ball, GD's contraction factor).
"""

import dataclasses
import math

import numpy as np
import pytest
from scipy import special
from scipy.integrate import solve_ivp

from ntkdyn import optimizers, rates, theory

T_GRID = np.linspace(0.0, 30.0, 301)


def _ivp(rhs, y0, t0, t, method="DOP853", rtol=1e-13, atol=1e-16):
    sol = solve_ivp(rhs, (t0, t[-1]), y0, method=method, t_eval=t, rtol=rtol, atol=atol)
    assert sol.success, sol.message
    return sol.y[0]


# --------------------------------------------------------------------------- ODE closed forms
@pytest.mark.parametrize("lam", [0.0, 1e-12, 1e-6, 0.01, 0.3, 1.0, 4.0])
def test_gradient_flow_modes_vs_solve_ivp(lam):
    ref = _ivp(lambda s, y: [-lam * y[0]], [1.0], 0.0, T_GRID)
    got = theory.gradient_flow_modes(np.array([lam]), T_GRID)
    assert got.shape == (T_GRID.size, 1)
    np.testing.assert_allclose(got[:, 0], ref, rtol=1e-10, atol=1e-14)


def test_gradient_flow_modes_shape_and_values():
    lam = np.array([0.0, 0.5, 2.0])
    t = np.array([[0.0, 1.0], [2.0, 3.0]])
    got = theory.gradient_flow_modes(lam, t)
    assert got.shape == (2, 2, 3)
    np.testing.assert_allclose(got, np.exp(-t[..., None] * lam), rtol=0, atol=0)


# (gamma, lambda): lambda = 0, tiny, overdamped, nearly / exactly critical, underdamped, undamped
OSC_CASES = [
    (0.5, 0.0),
    (0.5, 1e-12),
    (0.5, 1e-3),
    (0.5, 0.0625),
    (0.5, 1.0),
    (0.5, 3.0),
    (2.0, 0.0),
    (2.0, 1e-10),
    (2.0, 0.0625),
    (2.0, 1.0),
    (2.0, 1.0 * (1 + 1e-10)),
    (2.0, 1.0 * (1 - 1e-10)),
    (2.0, 3.0),
    (3.0, 2.25),
    (10.0, 1.0),
    (0.0, 1.0),
    (0.0, 0.01),
]


@pytest.mark.parametrize("gamma,lam", OSC_CASES)
def test_damped_oscillator_modes_vs_solve_ivp(gamma, lam):
    # overdamped cases are stiff (DOP853 leaves ~1e-10 behind there): Radau; oscillating ones: DOP853
    method = "Radau" if gamma * gamma > 4 * lam else "DOP853"
    ref = _ivp(lambda s, y: [y[1], -gamma * y[1] - lam * y[0]], [1.0, 0.0], 0.0, T_GRID, method=method)
    got = theory.damped_oscillator_modes(np.array([lam]), gamma, T_GRID)
    assert got.shape == (T_GRID.size, 1)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got[:, 0], ref, rtol=0, atol=1e-10)


def test_damped_oscillator_critical_closed_form():
    """gamma^2 = 4 lambda exactly: c = e^{-gamma t/2} (1 + gamma t / 2)."""
    for gamma in (0.5, 2.0, 3.0):
        lam = gamma * gamma / 4
        got = theory.damped_oscillator_modes(np.array([lam]), gamma, T_GRID)[:, 0]
        np.testing.assert_allclose(
            got, np.exp(-gamma * T_GRID / 2) * (1 + gamma * T_GRID / 2), rtol=1e-13, atol=1e-300
        )


def test_damped_oscillator_long_horizon_no_overflow():
    """Strongly overdamped modes at large t (cosh(wt) would overflow in a naive formula). Reference: the
    state-transition matrix expm([[0, 1], [-lam, -gamma]] dt) (scipy.linalg.expm) applied t/dt times to
    (1, 0), which never forms a large intermediate; plus the late decay rate, the root of s^2 + gamma s
    + lam = 0 nearest 0 (numpy.roots)."""
    from scipy.linalg import expm

    gamma, lam, dt = 10.0, np.array([1.0, 1e-3]), 0.5
    t = np.arange(0, 4001) * dt  # up to t = 2000
    got = theory.damped_oscillator_modes(lam, gamma, t)
    assert np.all(np.isfinite(got))
    for i, lm in enumerate(lam):
        step = expm(np.array([[0.0, 1.0], [-lm, -gamma]]) * dt)
        x, ref = np.array([1.0, 0.0]), [1.0]
        for _ in range(t.size - 1):
            x = step @ x
            ref.append(x[0])
        np.testing.assert_allclose(got[:, i], ref, rtol=1e-9, atol=0)
        slow = max(np.roots([1.0, gamma, lm]).real)
        late = np.log(got[-1, i] / got[-2001, i]) / (t[-1] - t[-2001])
        assert late == pytest.approx(slow, rel=1e-9)
    assert 0 < got[-1, 0] < 1e-80  # the fast mode: ~ exp(-0.1 t), far below overflow of cosh(4.9 t)


def _bessel_ivp(lam, r, t):
    """c'' + (r/t) c' + lam c = 0 from t0 = 1e-4 with the two-term series (error ~ 1e-20)."""
    nu = (r - 1) / 2
    t0 = 1e-4
    c0 = 1 - lam * t0**2 / (4 * (nu + 1)) + lam**2 * t0**4 / (32 * (nu + 1) * (nu + 2))
    d0 = -lam * t0 / (2 * (nu + 1)) + lam**2 * t0**3 / (8 * (nu + 1) * (nu + 2))
    ts = t[t >= t0]
    return ts, _ivp(lambda s, y: [y[1], -(r / s) * y[1] - lam * y[0]], [c0, d0], t0, ts)


@pytest.mark.parametrize("r", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("lam", [0.0, 1e-8, 0.01, 1.0, 4.0])
def test_bessel_modes_vs_solve_ivp(r, lam):
    ts, ref = _bessel_ivp(lam, r, T_GRID)
    got = theory.bessel_modes(np.array([lam]), r, ts)[:, 0]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10)
    assert theory.bessel_modes(np.array([lam]), r, np.array([0.0]))[0, 0] == 1.0


def _poisson_bessel(lam, r, t, nodes=300):
    """Gamma(nu + 1) (2/z)^nu J_nu(z), z = sqrt(lam) t, nu = (r - 1)/2, from Poisson's integral
    Gamma(nu + 1) / (Gamma(nu + 1/2) sqrt(pi)) int_{-pi/2}^{pi/2} cos(th)^(2 nu) cos(z sin th) d th
    by Gauss-Legendre quadrature (no Bessel function involved; the integrand is smooth for nu >= 0)."""
    nu = (r - 1) / 2
    x, w = special.roots_legendre(
        nodes
    )  # a quadrature rule only (numpy's leggauss is slow beside jax's threads)
    th = 0.5 * np.pi * x
    z = np.multiply.outer(np.asarray(t, float), np.sqrt(lam))
    integral = 0.5 * np.pi * np.sum(w * np.cos(th) ** (2 * nu) * np.cos(z[..., None] * np.sin(th)), axis=-1)
    return math.exp(math.lgamma(nu + 1) - math.lgamma(nu + 0.5)) / math.sqrt(math.pi) * integral


@pytest.mark.parametrize("r", [1, 2, 3, 4, 5, 8])
def test_bessel_modes_special_cases(r):
    """r = 1, 2, 3 have their own branches (J0, sin z / z, 2 J1(z)/z) and the others the general J_nu:
    all against Poisson's integral for J_nu, computed here by quadrature."""
    lam = np.array([0.25, 1.0, 9.0])
    t = np.linspace(0.5, 40.0, 200)
    np.testing.assert_allclose(theory.bessel_modes(lam, r, t), _poisson_bessel(lam, r, t), rtol=0, atol=1e-13)


@pytest.mark.parametrize("r", [1, 2, 3, 5, 8])
def test_bessel_series_branch_continuity(r):
    """Around z = 1e-2 the series and the J_nu branch agree to rounding."""
    nu = (r - 1) / 2
    z = 1e-2 * (1 + np.array([-1e-6, -1e-9, 0.0, 1e-9, 1e-6]))
    got = theory.bessel_modes(np.array([1.0]), r, z)[:, 0]  # lam = 1, so t = z
    direct = special.gamma(nu + 1) * (2 / z) ** nu * special.jv(nu, z)
    np.testing.assert_allclose(got, direct, rtol=1e-14)
    assert np.max(np.abs(np.diff(got))) < 1e-10  # no jump across the branch point


@pytest.mark.parametrize("r", [1, 3, 5, 8])
def test_bessel_envelope_decays_like_t_to_minus_r_over_2(r):
    """NAG-C ODE: max |c| over late windows decays like t^(-r/2) (loss like t^(-r))."""
    starts = np.geomspace(1e3, 1e5, 9)
    env = []
    for z0 in starts:
        t = np.linspace(z0, z0 + 40.0, 4001)  # several periods (2 pi), lam = 1 so t = z
        env.append(np.max(np.abs(theory.bessel_modes(np.array([1.0]), r, t))))
    slope = np.polyfit(np.log(starts), np.log(env), 1)[0]
    assert slope == pytest.approx(-r / 2, rel=0.05)


# --------------------------------------------------------------------------- closed form vs diffrax
@pytest.mark.parametrize(
    "name,hyper",
    [
        ("gd", {"eta": 0.01}),
        ("hb", {"eta": 0.01, "beta": 0.9}),
        ("nag_c", {"eta": 0.01, "r": 3.0}),
    ],
)
def test_ode_modes_vs_diffrax(name, hyper, random_spd):
    rng = np.random.default_rng(1)
    K = random_spd(rng, 6, kappa=100.0)
    e0 = rng.standard_normal(6)
    spec = optimizers.get(name)
    ode = spec.ode(optimizers.resolve_hyper(spec, hyper))
    t = np.arange(0, 2001, 20) * ode.time_step
    lam, V = theory.eigen(K)
    closed = theory.ode_modes(ode, lam, V.T @ e0, t) @ V.T
    numeric = theory.ode_diffrax(ode, K, e0, t)
    assert numeric.shape == closed.shape == (t.size, 6)
    np.testing.assert_allclose(closed[0], e0, atol=1e-15)
    np.testing.assert_allclose(numeric, closed, rtol=0, atol=1e-8 * np.max(np.abs(e0)))
    # the prediction is not trivial: the error moved by O(1)
    assert np.max(np.abs(closed[-1] - e0)) > 0.1


@pytest.mark.parametrize("name,key,values", [("hb", "beta", (0.5, 0.9)), ("nag_c", "r", (3.0, 5.0))])
def test_diffrax_sweep_compiles_once_per_ode_form(name, key, values, random_spd):
    """The damping coefficient is traced: two values of beta (or r) reuse one compiled solver (one
    cache entry) and each still matches its own closed form."""
    rng = np.random.default_rng(2)
    K = random_spd(rng, 5, kappa=50.0)
    e0 = rng.standard_normal(5)
    lam, V = theory.eigen(K)
    spec = optimizers.get(name)
    theory._diffrax_solver.cache_clear()
    for v in values:
        ode = spec.ode(optimizers.resolve_hyper(spec, {"eta": 0.01, key: v}))
        t = np.arange(0, 1001, 25) * ode.time_step
        closed = theory.ode_modes(ode, lam, V.T @ e0, t) @ V.T
        np.testing.assert_allclose(theory.ode_diffrax(ode, K, e0, t), closed, atol=1e-8 * np.max(np.abs(e0)))
    assert theory._diffrax_solver.cache_info().currsize == 1


def _regime_hyper(spec, eta: float, gamma: float = 1.5) -> dict:
    """Hyperparameters in the regime of the low-resolution ODE: beta = 1 - beta2 - gamma sqrt(eta) (momentum
    methods; beta2 its default), r = 3 (scheduled), other defaults."""
    h = {"eta": eta, **{k: v for k, v in spec.hyper.items() if v is not None}}
    if "beta" in spec.hyper:
        h["beta"] = 1.0 - h.get("beta2", 0.0) - gamma * math.sqrt(eta)
    return h


def test_limit_ode_faces():
    """Every registered linear method's ODE face (declared apart from its update rule) is the eta -> 0
    limit of its recurrence face: the max gap over a fixed ODE-time horizon is small at the smaller eta
    (1e-5; first-order ODEs, t = k eta: 1e-3) and shrinks at least like eta^0.4 over a factor 100 (10) in
    eta (a wrong damping, time map or mass would not)."""
    lam, coef, horizon = np.array([0.3, 1.0, 2.5]), np.array([1.0, -0.5, 0.25]), 6.0
    names = [n for n, s in optimizers.REGISTRY.items() if s.method is not None and s.tune is None]
    assert {"gd", "hb", "nag", "nag_c", "nag_c_classic", "ogm", "ab2", "hb2"} <= set(names)
    for name in names:
        spec = optimizers.get(name)
        assert spec.ode is not None, name
        etas = (1e-2, 1e-3) if spec.ode(_regime_hyper(spec, 1e-3)).order == 1 else (1e-3, 1e-5)
        gaps = []
        for eta in etas:
            hyper = _regime_hyper(spec, eta)
            ode = spec.ode(hyper)
            steps = int(horizon / ode.time_step)
            exact = theory.discrete_modes(spec, hyper, lam, coef, steps)
            gaps.append(
                np.max(np.abs(theory.ode_modes(ode, lam, coef, np.arange(steps + 1) * ode.time_step) - exact))
            )
        assert gaps[1] < 0.02 and gaps[1] < gaps[0] * (etas[0] / etas[1]) ** -0.4, (name, gaps)
    with pytest.raises(ValueError, match="no damping"):
        optimizers.get("gd").ode({"eta": 0.1}).damping_at(1.0)


# --------------------------------------------------------------------------- discrete recurrences
LAMS = np.array([0.0, 1e-4, 0.05, 0.7, 1.3, 2.9])  # includes an unstable mode for large eta*lam
COEF = np.array([1.0, -0.3, 0.8, 0.5, -1.2, 0.1])


def _three_term(c0, c1, p1, p0, steps):
    """c_{k+1} = p1 c_k - p0 c_{k-1}, elementwise."""
    out = np.empty((steps + 1, c0.size))
    out[0], out[1] = c0, c1
    for k in range(1, steps):
        out[k + 1] = p1 * out[k] - p0 * out[k - 1]
    return out


def test_discrete_gd_matches_power():
    eta = 0.3
    got = theory.discrete_modes(optimizers.get("gd"), {"eta": eta}, LAMS, COEF, 60)
    k = np.arange(61)[:, None]
    np.testing.assert_allclose(got, COEF * (1 - eta * LAMS) ** k, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9])
def test_discrete_hb_matches_three_term_recurrence(beta):
    eta, steps = 0.3, 80
    got = theory.discrete_modes(optimizers.get("hb"), {"eta": eta, "beta": beta}, LAMS, COEF, steps)
    ref = _three_term(COEF, (1 - eta * LAMS) * COEF, 1 + beta - eta * LAMS, beta, steps)
    scale = np.max(np.abs(ref), axis=1, keepdims=True)
    np.testing.assert_allclose(got / scale, ref / scale, rtol=0, atol=1e-12)


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9])
def test_discrete_nag_matches_characteristic_polynomial(beta):
    """NAG (look-ahead iterate): e_1 = (1 - eta lam (1 + beta)) e_0, then
    e_{k+1} = (1 + beta)(1 - eta lam) e_k - beta (1 - eta lam) e_{k-1} (Cayley-Hamilton)."""
    eta, steps = 0.3, 80
    got = theory.discrete_modes(optimizers.get("nag"), {"eta": eta, "beta": beta}, LAMS, COEF, steps)
    q = 1 - eta * LAMS
    ref = _three_term(COEF, (1 - eta * LAMS * (1 + beta)) * COEF, (1 + beta) * q, beta * q, steps)
    scale = np.max(np.abs(ref), axis=1, keepdims=True)
    np.testing.assert_allclose(got / scale, ref / scale, rtol=0, atol=1e-12)


def _momentum_sgd_scalar(lam, e0, eta, betas, nesterov, steps):
    """torch.optim.SGD-style momentum on the quadratic lam e^2 / 2 (one mode, e = parameter),
    beta reset before every step (as the released notebook does for NAG-C)."""
    e, v = float(e0), None  # torch keeps no momentum buffer while the momentum is 0 (update 1 of NAG-C)
    out = [e]
    for k in range(1, steps + 1):
        g = lam * e
        if betas(k) != 0:
            v = g if v is None else betas(k) * v + g
            g = g + betas(k) * v if nesterov else v
        e = e - eta * g
        out.append(e)
    return np.array(out)


@pytest.mark.parametrize("r", [3.0, 5.0])
def test_discrete_nag_c_matches_scheduled_momentum_sgd(r):
    eta, steps = 0.2, 150
    got = theory.discrete_modes(optimizers.get("nag_c"), {"eta": eta, "r": r}, LAMS[:5], COEF[:5], steps)
    for i in range(5):
        ref = _momentum_sgd_scalar(LAMS[i], COEF[i], eta, lambda k: (k - 1) / (k + r - 1), True, steps)
        np.testing.assert_allclose(got[:, i], ref, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize(
    "name,dt_of_eta,order",
    [
        ("gd", lambda eta: eta, 1.0),  # t = k eta, error O(eta)
        ("hb", math.sqrt, 0.5),  # t = k sqrt(eta), beta = 1 - gamma sqrt(eta): O(sqrt(eta))
        ("nag_c", math.sqrt, 0.5),
    ],
)
def test_discrete_approaches_ode_as_eta_to_zero(name, dt_of_eta, order):
    lam, coef, T, gamma = np.array([0.3, 1.0, 2.5]), np.array([1.0, -0.5, 0.25]), 10.0, 1.5
    spec = optimizers.get(name)
    errors = []
    for eta in (1e-2, 1e-3, 1e-4):
        hyper = {"eta": eta, "beta": 1 - gamma * math.sqrt(eta), "r": 3.0}
        hyper = {k: v for k, v in hyper.items() if k == "eta" or k in spec.hyper}
        dt = dt_of_eta(eta)
        steps = int(round(T / dt))
        discrete = theory.discrete_modes(spec, hyper, lam, coef, steps)
        ode = theory.ode_modes(spec.ode(hyper), lam, coef, np.arange(steps + 1) * dt)
        errors.append(np.max(np.abs(discrete - ode)))
    errors = np.array(errors)
    assert np.all(np.diff(errors) < 0)
    fitted = np.polyfit(np.log([1e-2, 1e-3, 1e-4]), np.log(errors), 1)[0]
    assert fitted == pytest.approx(order, abs=0.1)


# --------------------------------------------------------------------------- predicted rates
@pytest.mark.parametrize("kappa", [10.0, 100.0])
def test_polyak_heavy_ball_rate(kappa):
    mu, L = 0.01, 0.01 * kappa
    sl, sm = math.sqrt(L), math.sqrt(mu)
    hyper = {"eta": 4 / (sl + sm) ** 2, "beta": ((sl - sm) / (sl + sm)) ** 2}
    lam = np.linspace(mu, L, 8)
    rho = (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)
    spec = optimizers.get("hb")
    # double roots at the ends of the spectrum: the root's rounding is sqrt(eps)
    assert theory.predicted_linear_rate(spec, hyper, lam) == pytest.approx(rho**2, rel=1e-7)
    interior = optimizers.spectral_radius(optimizers.companion(spec, hyper, lam[1:-1], 1))
    np.testing.assert_allclose(interior, rho, rtol=1e-12)  # complex roots: |z| = sqrt(beta) exactly
    # a long exact run decays at that rate
    coef = np.random.default_rng(2).standard_normal(lam.size)
    steps = 300
    loss = theory.modal_loss(theory.discrete_modes(spec, hyper, lam, coef, steps), 1.0)
    fit = rates.fit_rates(np.arange(steps + 1), loss, window=(0.5, 1.0))
    assert fit.verdict == "linear"
    assert math.log(fit.linear_rate) == pytest.approx(math.log(rho**2), rel=0.03)


def test_gd_predicted_rate_and_measured_rate():
    lam = np.array([0.1, 0.4, 1.0, 1.7])
    for eta in (0.2, 0.5, 1.0, 1.1):
        expected = float(np.max(np.abs(1 - eta * lam)) ** 2)
        got = theory.predicted_linear_rate(optimizers.get("gd"), {"eta": eta}, lam)
        assert got == pytest.approx(expected, rel=1e-12)
    eta = 0.5
    loss = theory.modal_loss(
        theory.discrete_modes(optimizers.get("gd"), {"eta": eta}, lam, np.ones(4), 400), 1.0
    )
    fit = rates.fit_rates(np.arange(401), loss, window=(0.5, 1.0))
    assert fit.linear_rate == pytest.approx(0.95**2, rel=1e-9)


def test_modal_loss():
    modes = np.array([[1.0, 2.0], [3.0, -4.0]])
    np.testing.assert_allclose(theory.modal_loss(modes, 0.5), [1.25, 6.25])


def test_eigen_reconstructs(random_spd):
    K = random_spd(np.random.default_rng(3), 5, 50.0)
    lam, V = theory.eigen(K)
    assert np.all(np.diff(lam) >= 0)
    np.testing.assert_allclose((V * lam) @ V.T, K, atol=1e-14)
    np.testing.assert_allclose(V.T @ V, np.eye(5), atol=1e-14)


def test_gd_stability_boundary():
    lam = np.array([0.2, 1.0, 4.0])
    spec = optimizers.get("gd")
    edge = 2 / lam.max()
    assert theory.stability(spec, {"eta": edge * (1 - 1e-6)}, lam)["stable"]
    bad = theory.stability(spec, {"eta": edge * (1 + 1e-6)}, lam)
    assert not bad["stable"] and bad["unstable_modes"] == 1
    worse = theory.stability(spec, {"eta": 2 / 0.2 * 1.01}, lam)
    assert worse["unstable_modes"] == 3
    assert worse["max_spectral_radius"] == pytest.approx(abs(1 - 2 / 0.2 * 1.01 * 4.0))


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.9, 0.99])
def test_hb_stability_region(beta):
    """HB is stable iff 0 < eta lam < 2 (1 + beta) (for 0 <= beta < 1)."""
    spec = optimizers.get("hb")
    edge = 2 * (1 + beta)
    for x in np.linspace(0.05, 1.5, 30) * edge:
        if abs(x - edge) < 1e-3 * edge:
            continue
        st = theory.stability(spec, {"eta": 1.0, "beta": beta}, np.array([x]))
        assert st["stable"] == (x < edge), (beta, x)


def test_nag_c_predicted_rate_is_one_minus_eta_lam_min():
    """As beta_k -> 1 the roots have |z|^2 -> 1 - eta lam: loss factor 1 - eta lam_min per step,
    half of GD's log-rate (1 - eta lam_min)^2."""
    lam = np.array([0.02, 0.3, 0.9])
    eta = 0.5
    got = theory.predicted_linear_rate(optimizers.get("nag_c"), {"eta": eta, "r": 3.0}, lam)
    assert got == pytest.approx(1 - eta * lam[0], rel=1e-9)
    gd = theory.predicted_linear_rate(optimizers.get("gd"), {"eta": eta}, lam)
    assert math.log(gd) == pytest.approx(2 * math.log(got), rel=1e-9)


def _nag_c_torch_mode(h: float, r: float, steps: int) -> np.ndarray:
    """One mode (eta = 1, lam = h) of torch.optim.SGD(nesterov=True) with momentum (k-1)/(k+r-1) set
    before step k (no buffer while it is 0), written out by hand."""
    e, v, out = 1.0, None, [1.0]
    for k in range(1, steps + 1):
        g = h * e
        mu = (k - 1) / (k + r - 1)
        if mu != 0:
            v = g if v is None else mu * v + g
            g = g + mu * v
        e = e - g
        out.append(e)
    return np.array(out)


def _envelope_peaks(c: np.ndarray, k_min: float):
    a = np.abs(c)
    pk = np.flatnonzero((a[1:-1] >= a[:-2]) & (a[1:-1] >= a[2:])) + 1
    pk = pk[pk > k_min]
    return pk, np.log(c[pk] ** 2)


@pytest.mark.parametrize("r,h", [(3.0, 1e-3), (3.0, 3e-3), (5.0, 1e-3)])
def test_nag_c_crossover_step(r, h):
    """Brute force: on a simulated NAG-C mode the local log-log slope of the loss envelope (over
    neighbouring peaks) reaches -2 r, where the exponential factor's share equals the power law's, at the
    predicted crossover step within 3%."""
    ks = theory.nag_c_crossover_step(1.0, h, r)
    pk, logL = _envelope_peaks(_nag_c_torch_mode(h, r, int(3 * ks)), 20)
    slope = (logL[2:] - logL[:-2]) / (np.log(pk[2:]) - np.log(pk[:-2]))
    i = int(np.argmax(slope < -2 * r))
    assert i > 0 and slope[i - 1] >= -2 * r
    measured = math.exp(np.interp(-2 * r, [slope[i], slope[i - 1]], [math.log(pk[i + 1]), math.log(pk[i])]))
    assert measured == pytest.approx(ks, rel=0.03)
    assert theory.nag_c_crossover_step(1.0, 2.5) is None and theory.nag_c_crossover_step(1.0, 0.0) is None


def test_nag_c_fixed_eta_turns_linear():
    """Fixed-step NAG-C, single mode, eta lam = 0.0158. The loss-envelope exponent steepens
    with k (about -6 on 100..300, -12 on 300..1000, -32 on 1000..3000) and the late loss decays
    linearly at about (1 - eta lam) per step (root modulus^2 -> 1 - eta lam as beta_k -> 1)."""
    eta_lam, steps = 0.0158, 6000
    c = theory.discrete_modes(
        optimizers.get("nag_c"), {"eta": 1.0, "r": 3.0}, np.array([eta_lam]), np.array([1.0]), steps
    )[:, 0]
    loss = c * c
    k = np.arange(steps + 1)

    def envelope_exponent(a, b):
        seg, ks = np.abs(c[a : b + 1]), k[a : b + 1]
        peak = np.flatnonzero((seg[1:-1] >= seg[:-2]) & (seg[1:-1] >= seg[2:])) + 1
        return np.polyfit(np.log(ks[peak]), 2 * np.log(seg[peak]), 1)[0]

    p1, p2, p3 = envelope_exponent(100, 300), envelope_exponent(300, 1000), envelope_exponent(1000, 3000)
    assert -8.0 < p1 < -4.0
    assert p2 < 1.5 * p1 and p3 < 2 * p2
    assert p3 < -25
    late = rates.fit_rates(k, loss, window=(3000, 6000))
    assert late.verdict == "linear"
    assert math.log(late.linear_rate) == pytest.approx(math.log(1 - eta_lam), rel=0.1)
    # the crossover step sits before the late window
    assert theory.nag_c_crossover_step(1.0, eta_lam) < 3000


# --------------------------------------------------------------------------- orders of the ODEs as eta -> 0
# Reference: the exact recurrences written out here from each method's update rule (not
# theory.discrete_modes), on three modes over a fixed horizon of ODE time. HB and NAG-SC use
# beta = 1 - GAMMA sqrt(eta) (GAMMA fixed: the regime of the heavy-ball ODE); NAG-C r = 3.
ORDER_LAM, ORDER_COEF = np.array([0.3, 1.0, 2.5]), np.array([1.0, -0.5, 0.25])
ORDER_T, ORDER_GAMMA, ORDER_ETAS = 8.0, 1.5, (1e-3, 1e-4, 1e-5)


def _hand_loop(name: str, eta: float, steps: int, r: float = 3.0) -> np.ndarray:
    """e_k, k = 0..steps, per mode (rows), of the update rules in parameter form on L = sum lam e^2 / 2."""
    lam, e = ORDER_LAM, ORDER_COEF.copy()
    beta = 1 - ORDER_GAMMA * math.sqrt(eta)
    out = [e.copy()]
    if (
        name == "nag_c_classic"
    ):  # Su-Boyd-Candes: x_{k+1} = y_k - eta grad(y_k), y_{k+1} = x_{k+1} + k/(k+r)(x_{k+1} - x_k)
        x_prev = e.copy()
        for k in range(steps):
            x = e - eta * lam * e
            e = x + k / (k + r) * (x - x_prev)
            x_prev = x
            out.append(e.copy())
        return np.array(out)
    v = None
    for k in range(1, steps + 1):
        g = lam * e
        if name == "gd":
            e = e - eta * g
        elif name == "hb":  # v = beta v + g, theta -= eta v
            v = g if v is None else beta * v + g
            e = e - eta * v
        elif name == "nag":  # optax/torch nesterov: theta -= eta (g + beta v)
            v = g if v is None else beta * v + g
            e = e - eta * (g + beta * v)
        elif name == "nag_c":  # torch SGD(nesterov=True), momentum (k-1)/(k+r-1) set before step k
            mu = (k - 1) / (k + r - 1)
            if mu != 0:
                v = g.copy() if v is None else mu * v + g
                g = g + mu * v
            e = e - eta * g
        out.append(e.copy())
    return np.array(out)


def _ode_hyper(name: str, eta: float) -> dict:
    return {
        "eta": eta,
        **({"beta": 1 - ORDER_GAMMA * math.sqrt(eta)} if name in ("hb", "nag") else {}),
        **({"r": 3.0} if name.startswith("nag_c") else {}),
    }


def _etas(name: str) -> tuple:
    """GD (t = k eta) needs ORDER_T / eta steps: a decade larger step sizes than the sqrt(eta) methods."""
    return tuple(10 * e for e in ORDER_ETAS) if name == "gd" else ORDER_ETAS


def _max_errors(name: str, kind: str, transform=None) -> np.ndarray:
    """max_k max_i |e_k - e(t_k)| over t_k <= ORDER_T for every eta in _etas(name)."""
    spec = optimizers.get(name)
    errs = []
    for eta in _etas(name):
        hyper = _ode_hyper(name, eta)
        ode = spec.ode(hyper) if kind == "low" else spec.ode_hr(hyper)
        if transform is not None:
            ode = transform(ode, eta)
        steps = int(ORDER_T / ode.time_step)
        t = np.arange(steps + 1) * ode.time_step
        pred = (
            theory.ode_modes(ode, ORDER_LAM, ORDER_COEF, t)
            if kind == "low"
            else theory.highres_modes(ode, ORDER_LAM, ORDER_COEF, t)
        )
        errs.append(np.max(np.abs(pred - _hand_loop(name, eta, steps))))
    return np.array(errs)


def _order(errs, name: str = "hb") -> float:
    return float(np.polyfit(np.log(_etas(name)), np.log(errs), 1)[0])


@pytest.mark.parametrize(
    "name,kind,expected",
    [
        ("gd", "low", 1.0),  # t = k eta: gradient flow is already O(eta)
        ("hb", "low", 0.5),
        ("nag", "low", 0.5),
        ("nag_c", "low", 0.5),
        ("nag_c_classic", "low", 0.5),
    ],
)
def test_low_resolution_ode_order(name, kind, expected):
    errs = _max_errors(name, kind)
    assert np.all(np.diff(errs) < 0), errs
    assert _order(errs, name) == pytest.approx(expected, abs=0.1), errs


@pytest.mark.parametrize("name", ["hb", "nag", "nag_c", "nag_c_classic"])
def test_high_resolution_ode_is_order_eta(name):
    """Issue 9 part 3: the high-resolution ODEs track the exact recurrence to O(eta): fitted order >= 0.9,
    and at the smallest eta several times closer than the low-resolution ODE."""
    errs = _max_errors(name, "high")
    assert np.all(np.diff(errs) < 0), errs
    assert _order(errs) >= 0.9, errs
    assert errs[-1] * 10 < _max_errors(name, "low")[-1]


def test_high_resolution_start_matters():
    """With the forward difference e'(0) = (e_1 - e_0)/sqrt(eta) (the old start) HB's high-resolution
    ODE is only O(sqrt eta); with NAG-C (torch form) started at tau = 0 instead of (r/2 + 1) sqrt(eta),
    too: the start and the time map are what make them O(eta)."""
    fd = _max_errors("hb", "high", lambda ode, eta: dataclasses.replace(ode, velocity0=math.sqrt(eta)))
    assert _order(fd) == pytest.approx(0.5, abs=0.1), fd
    at_zero = _max_errors(
        "nag_c",
        "high",
        lambda ode, eta: dataclasses.replace(
            ode, time_offset=0.0, stiffness_t2=0.0, velocity0=ode.stiffness_t / ode.r
        ),
    )
    assert _order(at_zero) == pytest.approx(0.5, abs=0.1), at_zero


def test_nag_sc_gradient_correction_coefficient_either_form():
    """Shi et al.'s sqrt(s) on the gradient-correction term and the expansion's 2 beta/(1 + beta) sqrt(eta)
    differ by O(eta) in the coefficient: both ODEs are O(eta) models of NAG-SC's look-ahead iterate."""
    shi = _max_errors("nag", "high", lambda ode, eta: dataclasses.replace(ode, hess_damping=math.sqrt(eta)))
    assert _order(shi) >= 0.9, shi


def test_highres_ode_rejects_bad_input():
    with pytest.raises(ValueError, match="damping = 'linear'"):
        optimizers.HighResODE(time_step=0.1, damping="linear")
    with pytest.raises(ValueError, match="stiffness_t2"):
        optimizers.HighResODE(time_step=0.1, damping="vanishing", r=3.0, stiffness_t2=-0.1)
    with pytest.raises(ValueError, match="regularity forces velocity0"):
        optimizers.HighResODE(time_step=0.1, damping="vanishing", r=3.0, stiffness_t=0.15, velocity0=0.1)
    with pytest.raises(ValueError, match="time_offset >= 0"):
        optimizers.HighResODE(time_step=0.1, damping="constant", time_offset=-1.0)
    ode = optimizers.get("nag_c").ode_hr({"eta": 0.01, "r": 3.0})
    with pytest.raises(ValueError, match="must be >= 0"):
        theory.highres_modes(ode, np.array([1.0]), np.array([1.0]), np.array([-0.1, 0.0]))
    # the step clock t = k time_step: t = 0 is the start tau_0 = 2.5 sqrt(eta), where e = e0
    assert ode.start == pytest.approx(0.25) and ode.ode_time(0.0) == ode.start
    np.testing.assert_array_equal(
        theory.highres_modes(ode, np.array([1.0, 4.0]), np.array([2.0, -1.0]), np.zeros(1)), [[2.0, -1.0]]
    )


# --------------------------------------------------------------------------- NAG-C's gradient-norm exponent
def _torch_nag_c_modes(lam, coef, eta, r, steps):
    """Kernel-regime NAG-C per mode by hand: torch SGD(nesterov=True) with momentum (k-1)/(k+r-1) set before
    step k (no buffer while it is 0; buf = g at the first step with momentum, then mu buf + g)."""
    e, buf, out = np.array(coef, np.float64), None, [np.array(coef, np.float64)]
    for k in range(1, steps + 1):
        mu, g = (k - 1) / (k + r - 1), lam * e
        if mu != 0:
            buf = g.copy() if buf is None else mu * buf + g
            g = g + mu * buf
        e = e - eta * g
        out.append(e)
    return np.array(out)


def _running_min_exponent(g, lo, hi):
    k = np.arange(g.size)
    run = np.fmin.accumulate(g)
    sel = (k >= lo) & (k <= hi)
    return np.polyfit(np.log(k[sel]), np.log(run[sel]), 1)[0]


def test_nag_c_gradient_norm_exponent_is_bessel_envelope_times_fixed_step_tail():
    """Fixed-step NAG-C (eta = 1/lambda_max, r = 3, 40 modes over 3 decades) below its crossover: the
    exponent p of min_{i<=k} ||grad L||^2 ~ k^p is steeper than -3. The low-resolution ODE (no
    gradient-correction term) gives ~ -3.1 (its Bessel envelope k^-3); the Bessel solution times the
    fixed-step tail (1 - eta lambda)^{k/2} per mode (``theory.nag_c_tail_modes``) gives the discrete
    exponent within 0.1 in every window, and so does the high-resolution ODE, whose sqrt(eta) K e' term
    damps each mode by ~ e^{-eta lambda k / 2}."""
    rng = np.random.default_rng(0)
    lam, coef = np.geomspace(1e-3, 1.0, 40), rng.standard_normal(40)
    eta, r, steps = 1.0, 3.0, 1000
    k = np.arange(steps + 1)
    grad = lambda modes: theory.modal_grad_norm_sq(modes, lam, 1.0)  # noqa: E731
    disc = grad(_torch_nag_c_modes(lam, coef, eta, r, steps))
    spec = optimizers.get("nag_c")
    low = grad(theory.ode_modes(spec.ode({"eta": eta, "r": r}), lam, coef, k * math.sqrt(eta)))
    high = grad(theory.highres_modes(spec.ode_hr({"eta": eta, "r": r}), lam, coef, k * math.sqrt(eta)))
    tail = grad(theory.nag_c_tail_modes(lam, coef, eta, r, k))
    for lo, hi in ((30, 300), (50, 500), (100, 1000)):
        p = {
            n: _running_min_exponent(g, lo, hi)
            for n, g in (("d", disc), ("l", low), ("h", high), ("t", tail))
        }
        assert p["d"] < -3.5, p
        assert abs(p["l"] + 3.0) < 0.25 and p["l"] - p["d"] > 0.4, p  # the ODE misses the steepening
        assert abs(p["t"] - p["d"]) < 0.1 and abs(p["h"] - p["d"]) < 0.1, p
    with pytest.raises(ValueError, match="eta \\* lambda"):
        theory.nag_c_tail_modes(lam, coef, 2.5, r, k)


# --------------------------------------------------------------------------- ODE kinds as types
def test_ode_kinds_are_types_with_the_legacy_strings():
    """Each registered ODE face returns one of the ``ntkdyn.odes`` types (not a string); ``name`` and
    ``damping`` keep the old strings; ``kind.modes`` is what ``theory.ode_modes`` gives; the diffrax face
    of a kind is its full-space solver (checked against the closed form in ``test_ode_modes_vs_diffrax``)."""
    from ntkdyn import odes

    want = {"gd": odes.GradientFlow, "hb": odes.ConstantDamping, "nag": odes.ConstantDamping}
    want |= {"nag_c": odes.VanishingDamping, "ogm": odes.VanishingDamping, "hb2": odes.ConstantDamping}
    for name, kind in want.items():
        spec = optimizers.get(name)
        ode = spec.ode(_regime_hyper(spec, 1e-3))
        assert type(ode) is kind and isinstance(ode, optimizers.LimitODE), name
        assert ode.name == ode.damping == {1: "none"}.get(ode.order, ode.name)
    names = {k.name for k in (odes.GradientFlow, odes.ConstantDamping, odes.VanishingDamping)}
    assert names == {"none", "constant", "vanishing"} and odes.ScheduledDamping.name == "scheduled"
    lam, coef, t = np.array([0.2, 1.0]), np.array([1.0, -2.0]), np.linspace(0, 5, 7)
    hb = odes.ConstantDamping(time_step=0.1, gamma=0.7)
    np.testing.assert_array_equal(theory.ode_modes(hb, lam, coef, t), hb.modes(lam, coef, t))
    assert isinstance(optimizers.get("nag_c").ode_hr({"eta": 0.01, "r": 3.0}), odes.HighResODE)


@pytest.mark.parametrize("name", ["hb", "nag"])
def test_scheduled_damping_kind_tracks_the_scheduled_recurrence(name, random_spd):
    """``odes.ScheduledDamping.of(spec.ode at eta_k, etas)``: at eta_0 = 1e-4 (1 - beta = 0.6 sqrt(eta_0)) its
    modes are within 1 % of the scheduled recurrence (``theory.discrete_modes`` with a x0.1 step schedule)
    at every recorded step, ten times closer than with e' kept continuous; its diffrax face agrees with its
    closed form in the full output space; a non-constant kind (NAG-C) is refused."""
    from ntkdyn import odes, schedules

    eta0 = 1e-4
    beta, T = 1 - 0.6 * math.sqrt(eta0), 2000
    sched = schedules.from_config(
        {"schedule": "piecewise", "init_value": eta0, "boundaries_and_scales": {500: 0.1}}
    )
    spec, hyper = optimizers.get(name), {"eta": sched, "beta": beta}
    etas = schedules.eta_values(sched, T)
    ode = odes.ScheduledDamping.of(lambda e: spec.ode(schedules.hyper_at(hyper, e)), etas)
    lam, coef, at = (
        np.geomspace(0.05, 1.0, 5),
        np.random.default_rng(3).standard_normal(5),
        np.arange(0, T + 1, 50),
    )
    exact = theory.discrete_modes(spec, hyper, lam, coef, T)[at]
    got = ode.modes(lam, coef, at)
    scale = np.linalg.norm(exact, axis=1)
    gap = np.max(np.linalg.norm(got - exact, axis=1) / scale)
    old = odes.ScheduledDamping(ode.dt, ode.gamma, carry=0.0).modes(lam, coef, at)
    assert gap < 0.01 and np.max(np.linalg.norm(old - exact, axis=1) / scale) > 10 * gap, gap
    np.testing.assert_allclose(
        ode.times(at), np.concatenate([[0.0], np.cumsum(np.sqrt(etas))])[at], rtol=1e-14
    )
    rng = np.random.default_rng(4)
    V = np.linalg.qr(rng.standard_normal((5, 5)))[0]
    K = (V * lam) @ V.T
    np.testing.assert_allclose(ode.diffrax(K, V @ coef, at[:9]), got[:9] @ V.T, atol=1e-8)
    with pytest.raises(ValueError, match="constant-damping ODE per update"):
        odes.ScheduledDamping.of(lambda e: optimizers.get("nag_c").ode({"eta": e, "r": 3.0}), etas[:3])
