"""Control view (ntkdyn.control): per-mode state space, transfer functions, settling, stability
maps against training, the high-resolution ODEs and NAG-C's crossover.

References are independent: closed forms (characteristic polynomials, GD's settling, stability
regions), hand-written scalar recurrences, scipy's solve_ivp, diffrax in the full output space,
and training (a finite network, float64)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from ntkdyn import config, control, control_maps, models, ntk, optimizers, pipeline, rates, theory
from ntkdyn.train import TrainPlan, train

LAMS = np.array([1e-3, 0.05, 0.3, 1.0, 2.5, 3.9])


def _hb_output(eta, beta, lam, steps, y=1.0):
    """Hand-written HB in output space from rest: u_{k+1} = u_k + beta (u_k - u_{k-1}) - eta lam (u_k - y)."""
    u = np.zeros((steps + 1, np.size(lam)))
    u[1] = eta * lam * y
    for k in range(1, steps):
        u[k + 1] = u[k] + beta * (u[k] - u[k - 1]) - eta * lam * (u[k] - y)
    return u


def _three_term(p1, p0, c1, steps):
    """c_0 = 1, c_1 given, c_{k+1} = p1 c_k - p0 c_{k-1} (elementwise over modes)."""
    c = np.empty((steps + 1, np.size(p1)))
    c[0], c[1] = 1.0, c1
    for k in range(1, steps):
        c[k + 1] = p1 * c[k] - p0 * c[k - 1]
    return c


# --------------------------------------------------------------------------- poles and zeros
@pytest.mark.parametrize(
    "eta,beta", [(0.1, 0.0), (0.1, 0.5), (0.5, 0.9), (1.0, 0.3), (0.02, 0.99), (0.9, 0.6)]
)
def test_hb_poles_are_roots_of_characteristic_polynomial(eta, beta):
    p = control.poles(control.state_space(optimizers.get("hb"), {"eta": eta, "beta": beta}, LAMS))
    assert p.shape == (LAMS.size, 2)
    n_complex = 0
    for lam, pl in zip(LAMS, p):
        ref = np.roots([1.0, -(1 + beta - eta * lam), beta])
        np.testing.assert_allclose(
            np.sort_complex(pl), np.sort_complex(ref), atol=1e-7 if beta > 0.98 else 1e-10
        )
        if abs(ref[0].imag) > 1e-6:
            n_complex += 1
            np.testing.assert_allclose(np.abs(pl), math.sqrt(beta), rtol=1e-10)
    if beta >= 0.5:
        assert n_complex > 0  # the |z| = sqrt(beta) check ran


def test_nag_poles_are_roots_of_its_characteristic_polynomial():
    eta, beta = 0.37, 0.8  # (eta lam = 1 would be a double pole at 0: eigenvalues only to sqrt(eps))
    p = control.poles(control.state_space(optimizers.get("nag"), {"eta": eta, "beta": beta}, LAMS))
    for lam, pl in zip(LAMS, p):
        h = eta * lam
        ref = np.roots([1.0, -(1 + beta) * (1 - h), beta * (1 - h)])
        np.testing.assert_allclose(np.sort_complex(pl), np.sort_complex(ref), atol=1e-10)


def test_transfer_functions_closed_forms_and_nag_zero():
    """GD: eta lam / (z - 1 + h); HB: eta lam z / (z^2 - (1 + b - h) z + b) (zero only at z = 0);
    NAG: eta lam ((1 + b) z - b) / (z^2 - (1 + b)(1 - h) z + b (1 - h)): a finite zero b / (1 + b)."""
    eta, beta = 0.3, 0.7
    h = eta * LAMS
    nums, dens = control.transfer_function(control.state_space(optimizers.get("gd"), {"eta": eta}, LAMS))
    for num, den, hh in zip(nums, dens, h):
        np.testing.assert_allclose(num, [hh], rtol=1e-12)
        np.testing.assert_allclose(den, [1.0, -(1 - hh)], rtol=1e-12, atol=1e-15)
    hb = control.state_space(optimizers.get("hb"), {"eta": eta, "beta": beta}, LAMS)
    nums, dens = control.transfer_function(hb)
    for num, den, hh in zip(nums, dens, h):
        np.testing.assert_allclose(num, [hh, 0.0], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(den, [1.0, -(1 + beta - hh), beta], rtol=1e-12, atol=1e-15)
    nag = control.state_space(optimizers.get("nag"), {"eta": eta, "beta": beta}, LAMS)
    nums, dens = control.transfer_function(nag)
    for num, den, hh in zip(nums, dens, h):
        np.testing.assert_allclose(num, [hh * (1 + beta), -hh * beta], rtol=1e-12)
        np.testing.assert_allclose(
            den, [1.0, -(1 + beta) * (1 - hh), beta * (1 - hh)], rtol=1e-12, atol=1e-15
        )
    for z in control.zeros(nag):
        np.testing.assert_allclose(z, [beta / (1 + beta)], rtol=1e-12)
    for z in control.zeros(hb):
        assert z.size == 1 and abs(z[0]) < 1e-12  # HB lacks NAG's finite nonzero zero
    assert all(
        z.size == 0 for z in control.zeros(control.state_space(optimizers.get("gd"), {"eta": eta}, LAMS))
    )
    lam = np.array([0.8])
    assert control.analyse(optimizers.get("nag"), {"eta": eta, "beta": beta}, lam)["nonzero_zeros"]
    assert not control.analyse(optimizers.get("hb"), {"eta": eta, "beta": beta}, lam)["nonzero_zeros"]


CASES = [
    ("gd", {"eta": 0.3}),
    ("hb", {"eta": 0.3, "beta": 0.8}),
    ("nag", {"eta": 0.3, "beta": 0.8}),
    ("nag_c", {"eta": 0.2, "r": 3.0}),
    ("ogm", {"eta": 0.25}),
    ("ab2", {"eta": 0.2}),
    ("ab3", {"eta": 0.1}),
    ("hb2", {"eta": 0.2, "beta": 0.6}),
    ("hb_polyak", {"eta": 1.0}),
    ("implicit_gd", {"eta": 3.0}),
]


@pytest.mark.parametrize("name,hyper", CASES)
def test_dc_gain_is_one_and_output_tracks_target(name, hyper):
    """G(1) = 1 for every convergent method; simulating x_k = A x_{k-1} + B (y = 1) from rest gives
    1 - e_k / e_0, the step response read off the free error response (constant systems)."""
    spec = control.get(name)
    lam = np.array([0.1, 0.7, 2.4, 3.9])
    hyper = control.resolve(spec, hyper, lam)
    ss = control.state_space(spec, hyper, lam)
    np.testing.assert_allclose(control.dc_gain(ss), 1.0, rtol=1e-10)
    if spec.constant:
        x = np.zeros_like(ss.x0)
        sim = [x @ ss.C]
        for _ in range(60):
            x = np.einsum("nij,nj->ni", ss.A, x) + ss.B
            sim.append(x @ ss.C)
        np.testing.assert_allclose(np.asarray(sim), control.step_response(spec, hyper, lam, 60), atol=1e-12)


def test_step_response_matches_hand_written_hb():
    eta, beta = 0.25, 0.85
    got = control.step_response(optimizers.get("hb"), {"eta": eta, "beta": beta}, LAMS, 150)
    np.testing.assert_allclose(got, _hb_output(eta, beta, LAMS, 150), atol=1e-12)


# --------------------------------------------------------------------------- settling, overshoot
def test_gd_settling_closed_form():
    """|1 - h|^k <= band  <=>  k >= log(band) / log|1 - h|; overshoot = |1 - h| when 1 < h < 2."""
    eta = 1.0
    lam = np.array([0.001, 0.013, 0.2, 0.9, 1.0, 1.3, 1.95])
    settle, over = control.settling(optimizers.get("gd"), {"eta": eta}, lam)
    q = np.abs(1 - eta * lam)
    expected = np.where(q > 0, np.ceil(np.log(0.02) / np.log(np.maximum(q, 1e-300))), 1)
    np.testing.assert_array_equal(settle, expected.astype(int))
    np.testing.assert_allclose(over, np.where(eta * lam > 1, q, 0.0), rtol=1e-12)


@pytest.mark.parametrize("eta,beta", [(0.3, 0.9), (0.05, 0.95), (1.0, 0.5), (0.6, 0.0)])
def test_hb_settling_matches_the_recurrence_trajectory(eta, beta):
    lam = np.geomspace(0.02, 3.9 * (1 + beta) / 2, 25)
    settle, over = control.settling(optimizers.get("hb"), {"eta": eta, "beta": beta}, lam)
    h = eta * lam
    c = _three_term(1 + beta - h, beta, 1 - h, 40_000)  # independent, far past the certificate
    np.testing.assert_array_equal(settle, control.settling_from_trajectory(c))
    np.testing.assert_allclose(over, np.maximum(np.max(-c, axis=0), 0.0), rtol=1e-10, atol=1e-14)
    assert settle.min() >= 1 and settle.max() > 20  # non-trivial


@pytest.mark.parametrize("name,hyper", [c for c in CASES if c[0] not in ("gd", "hb")])
def test_settling_matches_long_trajectory(name, hyper):
    """Settling predicted per mode (certified by a Lyapunov bound) equals the settling read off the
    recurrence's own long trajectory (incl. Polyak HB's double poles and the scheduled methods)."""
    spec = control.get(name)
    lam = np.geomspace(0.02, 3.5, 12)
    hyper = control.resolve(spec, hyper, lam)
    settle, over = control.settling(spec, hyper, lam)
    c = control.free_response(spec, hyper, lam, 20_000)
    assert np.all(settle > 0)
    np.testing.assert_array_equal(settle, control.settling_from_trajectory(c))
    np.testing.assert_allclose(over, np.maximum(np.max(-c, axis=0), 0.0), rtol=1e-9, atol=1e-13)


def test_unstable_mode_has_no_settling():
    settle, over = control.settling(optimizers.get("hb"), {"eta": 1.0, "beta": 0.5}, np.array([0.5, 3.5]))
    assert settle[0] > 0 and settle[1] == -1


# --------------------------------------------------------------------------- continuous counterpart
def _measured_zeta_omega(damping: float, stiffness: float, tau: float, samples: int = 60):
    """(zeta, omega_n) measured on the solution of c'' + damping c' + stiffness c = 0, c(0) = 1,
    c'(0) = 0 integrated by scipy (DOP853): the samples c_j = c(j tau) obey c_{j+2} = p1 c_{j+1} + p0 c_j
    exactly (Prony); the roots z of z^2 - p1 z - p0 give s = log(z) / tau, omega_n^2 = s1 s2 and
    zeta = -(s1 + s2) / (2 omega_n)."""
    t = np.arange(samples) * tau
    c = solve_ivp(
        lambda _, y: [y[1], -damping * y[1] - stiffness * y[0]],
        (0, t[-1]),
        [1.0, 0.0],
        method="DOP853",
        t_eval=t,
        rtol=1e-13,
        atol=1e-15,
    ).y[0]
    (p1, p0), *_ = np.linalg.lstsq(np.stack([c[1:-1], c[:-2]], 1), c[2:], rcond=None)
    s = np.log(np.roots([1.0, -p1, -p0]).astype(complex)) / tau
    omega = math.sqrt((s[0] * s[1]).real)
    return -(s[0] + s[1]).real / (2 * omega), omega


def test_ode_damping_ratios():
    """zeta and omega_n reported for each ODE equal the ones measured on its solution (scipy), with the
    vector field written here from the ODE's declared coefficients: HB and NAG low- and high-resolution,
    NAG-C's high-resolution ODE at t -> infinity (r/t and the 1/t stiffness gone), and gradient flow
    (e' = -lambda e: omega_n is the decay rate, measured from the log-slope)."""
    eta, beta, lam = 0.04, 0.8, np.array([0.1, 1.0, 3.0])
    cases = [
        (optimizers.get("hb").ode({"eta": eta, "beta": beta}), lambda o, lm: (o.gamma, lm)),
        (
            optimizers.get("hb").ode_hr({"eta": eta, "beta": beta}),
            lambda o, lm: (o.gamma + o.hess_damping * lm, o.stiffness * lm),
        ),
        (
            optimizers.get("nag").ode_hr({"eta": eta, "beta": beta}),
            lambda o, lm: (o.gamma + o.hess_damping * lm, o.stiffness * lm),
        ),
        (
            optimizers.get("nag_c").ode_hr({"eta": eta, "r": 3.0}),
            lambda o, lm: (o.hess_damping * lm, o.stiffness * lm),
        ),
    ]
    for ode, field in cases:
        zeta, omega = control.ode_damping(ode, lam)
        for i, lm in enumerate(lam):
            g, w2 = field(ode, lm)
            z_ref, w_ref = _measured_zeta_omega(g, w2, 0.3 / math.sqrt(w2 + g * g))
            assert zeta[i] == pytest.approx(z_ref, rel=1e-7) and omega[i] == pytest.approx(w_ref, rel=1e-7)
    # the low-resolution NAG-C ODE has no damping left at t -> infinity
    zl, wl = control.ode_damping(optimizers.get("nag_c").ode({"eta": eta, "r": 3.0}), lam)
    np.testing.assert_array_equal(zl, 0.0)
    zeta, omega = control.ode_damping(optimizers.get("gd").ode({"eta": eta}), lam)
    t = np.linspace(0.0, 2.0, 5)
    for i, lm in enumerate(lam):
        field = lambda _, y, lm=lm: [-lm * y[0]]  # noqa: E731
        c = solve_ivp(field, (0, 2.0), [1.0], t_eval=t, rtol=1e-12, atol=1e-15).y[0]
        assert omega[i] == pytest.approx(-np.polyfit(t, np.log(c), 1)[0], rel=1e-8)
    assert zeta is None


def _hb_poles(eta, beta, lam):
    """Roots of z^2 - (1 + beta - eta lam) z + beta by the quadratic formula (complex sqrt)."""
    b = 1 + beta - eta * lam
    root = (b * b - 4 * beta + 0j) ** 0.5
    return (b + root) / 2, (b - root) / 2


def test_discrete_zeta_omega_from_both_poles_hand_computed():
    """HB, eta = 0.04, beta = 0.9 (gamma = (1 - beta)/sqrt(eta) = 0.5): an overdamped mode (lambda = 0.04,
    two real poles) and an underdamped one (lambda = 1, |z| = sqrt(beta)), computed by hand from the
    quadratic formula; z1 z2 = beta also gives zeta omega_n = -log(beta) / (2 sqrt(eta)) exactly."""
    eta, beta = 0.04, 0.9
    dt = math.sqrt(eta)
    e = control.analyse(optimizers.get("hb"), {"eta": eta, "beta": beta}, np.array([0.04, 1.0]), max_iters=10)
    over, under = e["modes"]
    z1, z2 = _hb_poles(eta, beta, 0.04)
    assert z1.imag == 0 and z2.imag == 0 and 0 < z2.real < z1.real < 1
    s1, s2 = math.log(z1.real) / dt, math.log(z2.real) / dt
    w = math.sqrt(s1 * s2)
    assert over["omega_n_discrete"] == pytest.approx(w, rel=1e-10)
    assert over["zeta_discrete"] == pytest.approx(-(s1 + s2) / (2 * w), rel=1e-10)
    assert over["zeta_discrete"] * over["omega_n_discrete"] == pytest.approx(
        -math.log(beta) / (2 * dt), rel=1e-10
    )
    assert over["zeta_discrete"] > 1.2  # overdamped, not the 1 a single real pole gives
    # underdamped: s = (log(beta)/2 +- i theta) / dt, cos(theta) = (1 + beta - eta lam) / (2 sqrt(beta))
    theta = math.acos((1 + beta - eta * 1.0) / (2 * math.sqrt(beta)))
    sr = 0.5 * math.log(beta)
    assert under["omega_n_discrete"] == pytest.approx(math.hypot(sr, theta) / dt, rel=1e-10)
    assert under["zeta_discrete"] == pytest.approx(-sr / math.hypot(sr, theta), rel=1e-10)
    # GD (first order): omega_n = -log(1 - eta lam) / eta, no damping ratio; a negative pole has no equivalent
    g = control.analyse(optimizers.get("gd"), {"eta": 0.5}, np.array([0.2, 3.0]), max_iters=10)["modes"]
    assert g[0]["omega_n_discrete"] == pytest.approx(-math.log(1 - 0.1) / 0.5, rel=1e-12)
    assert g[0]["zeta_discrete"] is None and g[1]["omega_n_discrete"] is None  # pole 1 - 1.5 < 0


def test_discrete_zeta_omega_tend_to_the_odes_as_eta_vanishes():
    """HB with gamma = (1 - beta)/sqrt(eta) = 0.5 held fixed: on lambda = 0.04 the ODE
    c'' + 0.5 c' + 0.04 c = 0
    has poles -0.1 and -0.4, so omega_n = 0.2 and zeta = 0.5 / (2 * 0.2) = 1.25 (worked out here, not read
    from ode_damping); lambda = 1: omega_n = 1, zeta = 0.25. The discrete values converge at O(sqrt(eta))."""
    lam = np.array([0.04, 1.0])
    ref = {"zeta": [1.25, 0.25], "omega_n": [0.2, 1.0]}
    errs = []
    for eta in (1e-2, 1e-4, 1e-6):
        e = control.analyse(
            optimizers.get("hb"), {"eta": eta, "beta": 1 - 0.5 * math.sqrt(eta)}, lam, max_iters=10
        )
        err = 0.0
        for i, m in enumerate(e["modes"]):
            assert m["zeta"] == pytest.approx(ref["zeta"][i], rel=1e-9)  # the ODE's own values
            assert m["omega_n"] == pytest.approx(ref["omega_n"][i], rel=1e-9)
            err = max(
                err,
                abs(m["zeta_discrete"] / ref["zeta"][i] - 1),
                abs(m["omega_n_discrete"] / ref["omega_n"][i] - 1),
            )
        errs.append(err)
    assert errs[-1] < 1e-3
    for a, b in zip(errs, errs[1:]):  # ~ sqrt(eta): a factor 10 per factor 100 in eta
        assert 7 < a / b < 14


# --------------------------------------------------------------------------- maps
def test_stability_maps_match_closed_form_regions():
    """HB is stable iff eta lam_max < 2 (1 + beta); NAG iff eta lam_max < 2 (1 + beta) / (1 + 2 beta)."""
    lam = np.array([0.05, 0.4, 2.0])
    etas = np.geomspace(0.05, 3.0, 37) * 1.0001
    betas = np.linspace(0.0, 0.95, 9)
    for name, limit in (("hb", lambda b: 2 * (1 + b)), ("nag", lambda b: 2 * (1 + b) / (1 + 2 * b))):
        rate, stable = control.rate_map(optimizers.get(name), {}, lam, etas, betas)
        expected = etas[None, :] * lam[-1] < limit(betas)[:, None]
        np.testing.assert_array_equal(stable, expected)
        assert stable.any() and (~stable).any()
        assert np.all(rate[stable] < 1) and np.all(rate[~stable] >= 1)


def _small_cfg(**control_kw):
    raw = {
        "seed": 0,
        "dtype": "float32",
        "data": {"source": "sphere", "n": 16, "d": 8, "target": "teacher"},
        "model": {"name": "paper", "width": 1024},
        "train": {"steps": 100},
        "optimizers": [{"name": "hb", "eta": 0.1, "beta": 0.5}],
        "control": control_kw,
    }
    return config.from_dict(raw)


def test_observed_divergence_boundary_within_one_grid_cell():
    """Training every (eta, beta) cell: the loss first grows above L_0 where the stability map puts
    the boundary (within one grid cell), for HB and NAG."""
    cfg = _small_cfg(
        map_optimizers=["hb", "nag"], map_grid=[10, 4], map_steps=60, map_eta=[0.3, 8.0], map_beta=[0.0, 0.9]
    )
    setup = pipeline.prepare(cfg)
    for name in ("hb", "nag"):
        rep, arr = control_maps._map(cfg, setup, name, 0.0)
        first = np.asarray(rep["predicted_first_unstable"])
        assert np.all((first > 0) & (first < 10))  # the boundary crosses every row of the grid
        grew = np.asarray(rep["observed_grew"])
        assert grew.any() and (~grew).any()
        assert rep["boundary_offset_max"] <= 1, rep["boundary_offset"]
        # away from the boundary the rate fitted on training equals the one fitted on the kernel
        # recurrence over the same 60 steps (like for like: both still contain transients)
        spec = optimizers.get(name)
        checked = 0
        for j in range(len(arr["betas"])):
            for i in range(max(first[j] - 3, 0)):
                h = {"eta": float(arr["etas"][i]), "beta": float(arr["betas"][j])}
                pred = theory.modal_loss(theory.discrete_modes(spec, h, setup.lam, setup.coef, 60), setup.c)
                if pred[-1] < 1e-6 * pred[0]:  # fits near float32's floor would compare round-off
                    continue
                checked += 1
                fit = rates.fit_rates(np.arange(61), pred, (0.5, 1.0)).linear_rate
                assert math.log(arr["obs_rate"][j, i]) == pytest.approx(math.log(fit), rel=0.1)
        assert checked >= 8


def test_config_control_section_validation():
    assert _small_cfg().control.map_optimizers == ["hb"]
    with pytest.raises(config.ConfigError, match="control.map_optimizers"):
        _small_cfg(map_optimizers=["gd"])
    with pytest.raises(config.ConfigError, match=r"control.extra\[0\].name"):
        _small_cfg(extra=[{"name": "adam", "eta": 0.1}])
    with pytest.raises(config.ConfigError, match="control.band"):
        _small_cfg(band=1.5)
    with pytest.raises(config.ConfigError, match="unknown key 'control.bogus'"):
        _small_cfg(bogus=1)
    cfg = _small_cfg(extra=[{"name": "implicit_gd", "eta": 2.0}])
    assert cfg.control.extra[0].label == "implicit_gd"


# --------------------------------------------------------------------------- high-resolution ODEs
@pytest.mark.parametrize(
    "name,hyper",
    [
        ("hb", {"eta": 0.04, "beta": 0.8}),
        ("nag", {"eta": 0.04, "beta": 0.8}),
        ("nag", {"eta": 0.25, "beta": 0.3}),
    ],
)
def test_highres_constant_damping_closed_form_vs_solve_ivp(name, hyper):
    ode = optimizers.get(name).ode_hr(hyper)
    t = np.linspace(0.0, 40.0, 201)
    lam = np.array([0.01, 0.5, 2.0, 9.0])
    got = theory.highres_modes(ode, lam, np.ones(4), t)
    for i, lm in enumerate(lam):
        g, w2 = ode.gamma + ode.hess_damping * lm, ode.stiffness * lm
        ref = solve_ivp(
            lambda s, y, g=g, w2=w2: [y[1], -g * y[1] - w2 * y[0]],
            (0, t[-1]),
            [1.0, -ode.velocity0 * lm],
            method="DOP853",
            t_eval=t,
            rtol=1e-12,
            atol=1e-14,
        ).y[0]
        np.testing.assert_allclose(got[:, i], ref, atol=1e-9)


def test_highres_vanishing_modes_vs_diffrax_full_space(random_spd):
    rng = np.random.default_rng(3)
    K = random_spd(rng, 5, kappa=50.0, lam_max=2.0)
    e0 = rng.standard_normal(5)
    ode = optimizers.get("nag_c").ode_hr({"eta": 0.04, "r": 3.0})
    t = np.arange(0, 401, 4) * ode.time_step
    lam, V = theory.eigen(K)
    modal = theory.highres_modes(ode, lam, V.T @ e0, t) @ V.T
    full = theory.highres_diffrax(ode, K, e0, t)
    np.testing.assert_allclose(modal[0], e0, atol=1e-15)
    np.testing.assert_allclose(full, modal, atol=1e-6 * np.max(np.abs(e0)))
    assert np.max(np.abs(modal[-1] - e0)) > 0.5


def test_nag_is_no_longer_predicted_by_hbs_ode():
    """Same low-resolution ODE, different high-resolution ones; at small eta the high-resolution
    NAG ODE is several times closer to the discrete NAG recurrence than the low-resolution one."""
    hyper = {"eta": 0.01, "beta": 0.8}
    hb, nag = optimizers.get("hb"), optimizers.get("nag")
    assert hb.ode(hyper) == nag.ode(hyper) and hb.ode_hr(hyper) != nag.ode_hr(hyper)
    lam = np.geomspace(0.1, 3.0, 6)
    steps = 600
    d = theory.discrete_modes(nag, hyper, lam, np.ones(6), steps)
    k = np.arange(steps + 1)
    lo = theory.ode_modes(nag.ode(hyper), lam, np.ones(6), k * nag.ode(hyper).time_step)
    hr = theory.highres_modes(nag.ode_hr(hyper), lam, np.ones(6), k * nag.ode_hr(hyper).time_step)
    assert np.max(np.abs(hr - d)) * 3 < np.max(np.abs(lo - d))


def _peaks(c):
    a = np.abs(c)
    return np.flatnonzero((a[1:-1] >= a[:-2]) & (a[1:-1] >= a[2:])) + 1


def test_highres_nag_c_tracks_discrete_tail_where_bessel_does_not():
    """Single mode, eta lam = 0.0158 (power-law transient, then a linear tail), tail window [2 k*, 8 k*]."""
    eta, lam = 0.01, np.array([1.58])
    spec, hyper = optimizers.get("nag_c"), {"eta": 0.01, "r": 3.0}
    ks = theory.vanishing_tail(eta, lam[0], 3.0)["crossover_step"]
    steps = int(8 * ks)
    k = np.arange(steps + 1)
    d = theory.discrete_modes(spec, hyper, lam, np.ones(1), steps)[:, 0]
    lo = theory.ode_modes(spec.ode(hyper), lam, np.ones(1), k * spec.ode(hyper).time_step)[:, 0]
    hr = theory.highres_modes(spec.ode_hr(hyper), lam, np.ones(1), k * spec.ode_hr(hyper).time_step)[:, 0]
    env = {}
    for name, c in (("disc", d), ("lo", lo), ("hr", hr)):
        pk = _peaks(c)
        pk = pk[pk >= 2 * ks]
        env[name] = (pk, np.abs(c[pk]))
        rate = np.polyfit(pk, 2 * np.log(np.abs(c[pk])), 1)[0]
        env[name + "_rate"] = rate
    # the envelopes: high-res within 25% of the discrete one at the last peak, Bessel off by > 100x
    assert abs(math.log(env["hr"][1][-1] / env["disc"][1][-1])) < 0.25
    assert env["lo"][1][-1] / env["disc"][1][-1] > 100
    assert env["hr_rate"] == pytest.approx(env["disc_rate"], rel=0.05)
    assert abs(env["lo_rate"] / env["disc_rate"] - 1) > 0.5


def test_vanishing_tail_prediction():
    """The envelope law behind vanishing_tail, L ~ C k^-r (1 - h)^k, against brute force: a hand-written
    torch-semantics NAG-C loop on one mode (eta = 1, lam = h). Regressing log L at the envelope peaks after
    k*/3 on (1, log k, k) recovers the predicted power exponent (within 0.1 r) and tail rate (log within
    2%)."""
    for r, h in ((3.0, 0.0158), (3.0, 1e-3), (5.0, 1e-3)):
        p = theory.vanishing_tail(1.0, h, r)
        ks = p["crossover_step"]
        e, v, c = 1.0, None, [1.0]
        for k in range(1, int(6 * ks) + 1):
            g, mu = h * e, (k - 1) / (k + r - 1)
            if mu != 0:
                v = g if v is None else mu * v + g
                g = g + mu * v
            e -= g
            c.append(e)
        a = np.abs(np.array(c))
        pk = np.flatnonzero((a[1:-1] >= a[:-2]) & (a[1:-1] >= a[2:])) + 1
        pk = pk[pk > ks / 3]
        fit = np.linalg.lstsq(
            np.stack([np.ones(pk.size), np.log(pk), pk], 1), np.log(a[pk] ** 2), rcond=None
        )[0]
        assert fit[1] == pytest.approx(p["power_exponent"], abs=0.1 * r), (r, h, fit)
        assert fit[2] == pytest.approx(math.log(p["tail_rate"]), rel=0.02), (r, h, fit)
        assert ks == theory.nag_c_crossover_step(1.0, h, r)
    assert (
        theory.vanishing_tail(1.0, 2.0)["crossover_step"] is None
        and theory.vanishing_tail(1.0, 2.0)["tail_rate"] is None
    )


def test_crossover_and_tail_measured_on_training_within_10_percent():
    """NAG-C trains a wide paper network whose initial error lies on the slowest NTK eigenvector:
    the crossover step and tail rate fitted on the training loss match the predicted
    k* = 3 / -log(1 - eta lam_min) and 1 - eta lam_min within 10% (log-rate)."""
    from ntkdyn import data

    with jax.enable_x64(True):
        X, _ = data.sphere(8, 4, "gaussian", 0)
        key = jax.random.PRNGKey(1)
        params, consts = models.paper_init(key, 4, 8192, 1.0, jnp.float64)
        Xj = jnp.asarray(X, jnp.float64)
        H = ntk.gram(models.PAPER, params, consts, Xj)
        lam, V = theory.eigen(H)
        u0 = np.asarray(models.PAPER.apply(params, consts, Xj))
        y = jnp.asarray(u0 - V[:, 0], jnp.float64)  # e0 = v_min
        eta = 0.02 / lam[0]
        pred = theory.vanishing_tail(eta, lam[0], 3.0)
        ks = pred["crossover_step"]
        steps = int(8 * ks) + 1
        res = train(
            models.PAPER,
            optimizers.get("nag_c"),
            {"eta": eta, "r": 3.0},
            1.0,
            TrainPlan(steps),
            params,
            consts,
            Xj,
            y,
        )
    assert res.diverged_at is None
    meas = control.measure_tail(res.step, res.loss, (0.25 * ks, 8 * ks))
    assert meas["peaks"] > 20
    assert meas["crossover_step"] == pytest.approx(ks, rel=0.1)
    assert math.log(meas["tail_rate"]) == pytest.approx(math.log(pred["tail_rate"]), rel=0.1)
    assert meas["power_exponent"] == pytest.approx(-3.0, rel=0.15)


def test_cli_writes_control_json_and_figures(tmp_path):
    import json

    from ntkdyn import run

    cfg = tmp_path / "c.yaml"
    cfg.write_text("""
name: ctl
dtype: float64
data: {source: sphere, n: 8, d: 4, target: teacher}
model: {name: paper, width: 128}
train: {steps: 200, kernel_at: [0]}
theory: {diffrax: false}
optimizers:
  - {name: nag, eta: 0.3, beta: 0.7}
  - {name: hb_polyak, eta: 1.0}
control:
  extra: [{name: implicit_gd, eta: 4.0}, {name: nag_c, eta: 0.5}]
  map_optimizers: [hb]
  map_grid: [3, 2]
  map_steps: 10
  locus_points: 20
  step_steps: 30
  sweep_etas: [0.5]
  sweep_time: 10
""")
    out = tmp_path / "out"
    code = run.main([str(cfg), "--out", str(out), "--quiet"])
    assert code == 0
    rep = json.loads((out / "control.json").read_text())
    assert set(rep["optimizers"]) == {"nag", "hb_polyak", "implicit_gd", "nag_c"}
    nag = rep["optimizers"]["nag"]
    assert {"eta", "beta", "modes", "rate", "stable", "spectral_radius"} <= set(nag)
    mode = nag["modes"][0]
    assert {
        "lambda",
        "poles",
        "zeros",
        "spectral_radius",
        "zeta",
        "omega_n",
        "settling_iters",
        "overshoot",
    } <= set(mode)
    assert len(mode["poles"]) == 2 and all(len(p) == 2 for p in mode["poles"])  # [re, im] pairs
    assert mode["zeros"] == [[pytest.approx(0.7 / 1.7), 0.0]]
    assert rep["optimizers"]["implicit_gd"]["observed"] == "recurrence only: no training face"
    assert rep["optimizers"]["nag_c"]["observed"] == "not trained"
    metrics = json.loads((out / "metrics.json").read_text())
    hp = metrics["optimizers"]["hb_polyak"]
    assert rep["optimizers"]["hb_polyak"]["eta"] == pytest.approx(hp["eta"]) and hp["eta"] != 1.0
    assert "hb" in rep["maps"] and len(rep["ode_sweep"]["rows"]) == 1
    for name in ("pole_zero.png", "step_response.png", "root_locus.png", "control_map.png", "highres.png"):
        assert (out / name).stat().st_size > 1000
