"""Rate fits and verdicts on trajectories whose answer is known independently: closed forms
(geometric, power laws, scipy's Bessel J_1), hand-written recurrences, and, for a spread
spectrum, the exact instantaneous rates of the sum of modes."""

import math

import numpy as np
import pytest
from scipy import special

from ntkdyn import optimizers, rates, theory


def one_fit(k, loss, **kw):
    return rates.fit_rates(np.asarray(k, float), np.asarray(loss, float), **kw)


# --------------------------------------------------------------------------- exact rates
@pytest.mark.parametrize("q", [0.9, 0.99])
def test_geometric_is_linear(q):
    k = np.arange(0, 1001)
    fit = one_fit(k, 3.0 * q**k)
    assert fit.verdict == "linear"
    assert fit.linear_rate == pytest.approx(q, abs=1e-10)
    assert fit.local_linear_rate == pytest.approx(q, abs=1e-10)
    assert fit.r2_linear == pytest.approx(1.0, abs=1e-12)
    assert fit.r2_power < fit.r2_linear
    assert fit.rate_trend == pytest.approx(0.0, abs=1e-6) and fit.margin == pytest.approx(1.0, abs=1e-5)
    assert fit.window == (100, 1000)
    assert fit.fitted_on == "L" and fit.floor_star == 0.0


@pytest.mark.parametrize("p", [1, 2, 3])
def test_power_law_is_sublinear(p):
    k = np.arange(1, 1001)
    fit = one_fit(k, 5.0 * k.astype(float) ** -p)
    assert fit.verdict == "sublinear"
    assert fit.power_exponent == pytest.approx(-p, abs=1e-10)
    assert fit.local_power_exponent == pytest.approx(-p, abs=1e-10)
    assert fit.r2_power == pytest.approx(1.0, abs=1e-12)
    assert fit.r2_linear < fit.r2_power
    assert fit.rate_trend == pytest.approx(-1.0, abs=0.02) and fit.margin < -0.95


def test_power_law_with_step_zero_ignores_it():
    """Step 0 (log k = -inf) is outside every window; a finite L_0 is fine."""
    k = np.arange(0, 501)
    loss = np.where(k == 0, 10.0, np.maximum(k, 1).astype(float) ** -2.0)
    fit = one_fit(k, loss, window=(0.0, 1.0))
    assert fit.verdict == "sublinear"
    assert fit.window[0] == 1
    assert fit.power_exponent == pytest.approx(-2.0, abs=1e-10)


# --------------------------------------------------------------------------- oscillations
@pytest.mark.parametrize("p", [1, 2, 3])
def test_power_law_with_oscillation_is_sublinear(p):
    """k^-p (0.2 + cos^2(0.03 k)): the envelope is exactly 1.2 k^-p at the peaks."""
    k = np.arange(1, 3001, dtype=float)
    fit = one_fit(k, k**-p * (0.2 + np.cos(0.03 * k) ** 2))
    assert fit.verdict == "sublinear"
    assert fit.local_power_exponent == pytest.approx(-p, abs=0.05)
    assert fit.rate_trend == pytest.approx(-1.0, abs=0.1)


def bessel_mode_loss(h: float, k) -> np.ndarray:
    """Loss of one NAG-C ODE mode (r = 3, nu = 1) at t = k sqrt(eta): (2 J_1(x) / x)^2, x = sqrt(h) k,
    from scipy's J_1 directly. Its peaks follow (8 / pi) x^-3 (J_1(x)^2 ~ 2 / (pi x) cos^2(...))."""
    x = np.sqrt(h) * np.asarray(k, float)
    xs = np.where(x > 0, x, 1.0)
    return np.where(x > 0, (2 * special.jv(1, xs) / xs) ** 2, 1.0)


def test_one_bessel_mode_is_sublinear_where_r2_is_a_coin_toss():
    h, T = 1e-4, 20000  # x = 0.01 k: ~57 periods of J_1^2 in the window [2000, 20000]
    k = np.arange(T + 1)
    fit = one_fit(k, bessel_mode_loss(h, k))
    # the old criterion (larger R^2) is a coin toss here
    assert abs(fit.r2_linear - fit.r2_power) < 0.1 and max(fit.r2_linear, fit.r2_power) < 0.6
    assert fit.verdict == "sublinear"
    assert fit.local_power_exponent == pytest.approx(-3.0, abs=0.05)  # envelope x^-3
    assert fit.rate_trend == pytest.approx(-1.0, abs=0.05) and fit.margin < -0.8


def test_window_starting_at_a_zero_of_the_oscillation_is_not_stalled():
    """The window starts at the 6th zero of J_1, where L ~ 6e-9 while its envelope is ~1e-4; the
    envelope falls (k_end / k_0)^3 = 1000x over the window."""
    h = 1e-4
    k0 = int(round(special.jn_zeros(1, 6)[-1] / math.sqrt(h)))
    k = np.arange(0, 10 * k0 + 1)
    loss = bessel_mode_loss(h, k)
    assert loss[k0] < 1e-3 * loss[k0 - 160 : k0 + 160].max()
    fit = one_fit(k, loss, window=(k0, 10 * k0))
    assert fit.window[0] == k0
    assert fit.verdict == "sublinear"
    assert -3.05 < fit.change_log10 < -2.6  # from the first peak after k0 to the last one


def test_underdamped_heavy_ball_mode_is_linear():
    """One HB mode by hand: c_{k+1} = (1 + beta - h) c_k - beta c_{k-1}, c_1 = c_0. Complex roots
    ((1 + beta - h)^2 < 4 beta) have |z|^2 = beta, so the loss c^2 is beta^k times an oscillation."""
    beta, h, T = 0.95, 0.1, 2000
    assert (1 + beta - h) ** 2 < 4 * beta
    c = np.empty(T + 1)
    c[0] = c[1] = 1.0
    for j in range(1, T):
        c[j + 1] = (1 + beta - h) * c[j] - beta * c[j - 1]
    fit = one_fit(np.arange(T + 1), 0.5 * c**2)
    assert fit.verdict == "linear"
    assert fit.local_linear_rate == pytest.approx(beta, rel=1e-4)
    assert fit.rate_trend == pytest.approx(0.0, abs=0.05) and fit.margin > 0.8


def test_envelope_points_of_an_oscillation_and_of_a_monotone_sequence():
    """q^k cos^2(wk + phi): the envelope is q^k, so the points kept (within a factor 1.25 of the line
    through neighbouring peaks) are those with cos^2 >~ 0.8 and never those near the zeros."""
    k = np.arange(2000.0)
    c2 = np.cos(0.05 * k + 0.3) ** 2
    env = rates.envelope_points(0.995**k * c2)
    assert c2[env].min() > 0.75 and np.all(c2[np.setdiff1d(np.arange(k.size), env)] < 0.85)
    assert np.all(np.diff(env) < 63)  # every period (pi / 0.05 = 63 steps) keeps points
    assert rates.oscillation_period(0.995**k * c2) == pytest.approx(np.pi / 0.05, abs=1)
    mono = 1.0 / (1.0 + k)
    np.testing.assert_array_equal(rates.envelope_points(mono), np.arange(k.size))
    assert rates.oscillation_period(mono) == 0.0


# --------------------------------------------------------------------------- a spread spectrum
def gd_spread(steps):
    """GD, eta = 1, on 40 eigenvalues log-spaced in [3e-5, 1], unit coefficients:
    L = 1/2 sum (1 - lam)^(2k)."""
    lam = np.geomspace(3e-5, 1.0, 40)
    return lam, 0.5 * np.sum((1.0 - lam) ** (2 * np.asarray(steps, float)[:, None]), axis=1)


def test_gd_on_a_spread_spectrum_is_sublinear_before_its_horizon_and_linear_after():
    """What is true over k = 300..3000: the exact instantaneous per-step rate -dlogL/dk (a weighted
    mean of -2 log(1 - lam)) falls 4.6x while the exponent -dlogL/dlogk changes 2.2x: the local rate
    scales as k^b with b < -1/2, so the power law is the more nearly constant model, and no geometric
    law holds there. Theory says why: the slowest mode needs 1 / -log(1 - 3e-5) = 33333 steps to decay,
    so the window ends long before the linear regime; past it the verdict is linear at its rate."""
    k = np.arange(3001)
    lam, loss = gd_spread(k)
    slow = lam[:-1]  # lam = 1 dies at step 1
    ks = np.geomspace(300, 3000, 50)
    w = (1.0 - slow) ** (2 * ks[:, None])
    rate = (w @ (-2 * np.log1p(-slow))) / w.sum(axis=1)
    b = np.polyfit(np.log(ks), np.log(rate), 1)[0]
    assert b < -0.6 and rate[0] / rate[-1] > 4

    fit = one_fit(k, loss)
    assert fit.window == (300, 3000)
    assert fit.verdict == "sublinear" and fit.margin < -0.3
    spec = optimizers.get("gd")
    regime = theory.asymptotic_regime(spec, {"eta": 1.0}, lam)
    assert regime["regime"] == "linear"
    assert regime["rate"] == pytest.approx((1 - 3e-5) ** 2, rel=1e-12)
    assert regime["horizon"] == pytest.approx(1 / -math.log1p(-3e-5), rel=1e-9)
    assert rates.window_position(fit.window, regime["horizon"]) == "before"
    assert "ends before the slowest-mode time" in rates.scope(fit, regime)

    late_k = np.arange(0, 400001, 100)
    late = one_fit(late_k, gd_spread(late_k)[1], window=(1e5, 4e5))
    assert late.verdict == "linear"
    assert (1 - lam[1]) ** 2 < late.local_linear_rate <= (1 - lam[0]) ** 2


# --------------------------------------------------------------------------- growing, stalled, diverged
def test_unstable_run_growing_under_the_divergence_factor_is_growing():
    k = np.arange(0, 1160)
    loss = 1.01**k  # grows 1e5x, below train.divergence_factor = 1e6
    assert loss[-1] > 1e5 and loss[-1] < 1e6
    fit = one_fit(k, loss)
    assert fit.verdict == "growing"
    assert fit.local_linear_rate == pytest.approx(1.01, rel=1e-9)
    # an oscillating unstable mode (|z| > 1, complex): growing too
    osc = 1.004**k * np.cos(0.1 * k) ** 2
    assert one_fit(k, osc).verdict == "growing"


def test_constant_is_stalled():
    k = np.arange(0, 200)
    fit = one_fit(k, np.full(200, 0.7))
    assert fit.verdict == "stalled"
    assert fit.linear_rate == pytest.approx(1.0)


def test_slow_decrease_below_stall_factor_is_stalled():
    k = np.arange(0, 101)
    loss = 1.0 - 1e-4 * k  # falls by ~1% over the window, below the default factor 1.01
    assert one_fit(k, loss).verdict == "stalled"
    assert one_fit(k, loss, stall_factor=1.001).verdict != "stalled"


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_is_diverged(bad):
    k = np.arange(0, 50)
    loss = 0.9 ** k.astype(float)
    loss[30] = bad
    fit = one_fit(k, loss)
    assert fit.verdict == "diverged"
    assert math.isnan(fit.linear_rate) and math.isnan(fit.power_exponent)


def test_nan_tail_is_diverged():
    """Training writes NaN after the step it diverged at (train.py); a NaN tail is a divergence
    even when the finite part decreases."""
    k = np.arange(0, 1000)
    loss = 0.99 ** k.astype(float)
    loss[700:] = np.nan
    assert one_fit(k, loss).verdict == "diverged"
    assert one_fit(k, 0.99 ** k.astype(float), diverged=True).verdict == "diverged"


# --------------------------------------------------------------------------- a rise at the end of the window
def test_rise_over_the_last_tenth_is_growing():
    """0.99^k, then x1.05 per step from step 900 of 1000: the loss rose 1.05^100 = 131x over the last
    100 steps while the envelope still ended 24x below its start (the end-minus-start rule alone
    said "linear", margin +1.00)."""
    k = np.arange(1001.0)
    loss = np.where(k <= 900, 0.99**k, 0.99**900 * 1.05 ** (k - 900))
    assert loss[-1] / loss[900] == pytest.approx(1.05**100) and loss[-1] < loss[100]
    fit = one_fit(k, loss)
    assert fit.verdict == "growing" and "rose by a factor" in fit.reason
    # the tail is the last 10 % of the window's steps (900 steps -> 910..1000), all on the rise
    assert fit.tail_start == 910 and fit.tail_rise_log10 == pytest.approx(90 * math.log10(1.05), rel=1e-9)
    assert one_fit(k, loss, window=(0.1, 0.9)).verdict == "linear"  # before the rise: linear
    assert one_fit(k, loss, rise_factor=1e9).verdict == "linear"  # what the end-minus-start rule said


@pytest.mark.parametrize("lam_slow, T", [(0.005, 800), (0.01, 700)])
def test_gd_past_its_stability_limit_with_a_tiny_unstable_mode_is_growing(lam_slow, T):
    """GD at eta lam_max = 2.03 by hand on two modes, the unstable one (factor |1 - 2.03|^2 = 1.0609 per
    step) seeded at 1e-11: it overtakes the slow stable mode late and the loss rises 1.0609^100 = 370x
    over the last 100 steps, while the window's end is still below its start."""
    lam, coef = np.array([lam_slow, 1.0]), np.array([1.0, 1e-11])
    k = np.arange(T + 1.0)
    loss = 0.5 * np.sum((coef * (1.0 - 2.03 * lam) ** k[:, None]) ** 2, axis=1)
    assert loss[-1] / loss[-101] == pytest.approx(1.0609**100, rel=0.02)  # the stable mode's share
    assert loss[-1] < loss[T // 10]
    assert one_fit(k, loss, rise_factor=1e9).verdict == "linear"  # the end-minus-start rule alone
    fit = one_fit(k, loss)
    assert fit.verdict == "growing" and fit.tail_rise_log10 > 1.5


@pytest.mark.parametrize("seed", range(4))
def test_noisy_float_floor_is_not_a_rise(seed):
    """0.9^k reaches 1e-28 at k ~ 610 and then only round-off is left: chi^2 noise of 8 outputs at the
    1e-28 level. With the floor above the noise (as the run path sets it) the flat part is left out;
    with a floor below the noise, the noise's fitted tail changes by far less than a decade."""
    rng = np.random.default_rng(seed)
    k = np.arange(1001.0)
    noise = 1e-28 * np.sum(rng.standard_normal((k.size, 8)) ** 2, axis=1) / 8
    loss = 0.5 * 0.9**k + noise
    above = one_fit(k, loss, floor=1e-26)
    assert above.verdict == "linear" and above.window[1] < 600
    low = one_fit(k, loss, floor=1e-34)
    assert low.verdict != "growing" and abs(low.tail_rise_log10) < 0.5 and "note" not in low.reason


def _momentum_loss(lam, eta, beta, T, nesterov):
    """Heavy ball or Nesterov (constant beta) by hand on modes lam, unit coefficients, zero velocity."""
    x = np.ones_like(lam)
    x_prev, y, out = x.copy(), x.copy(), [0.5 * np.sum(x**2)]
    for _ in range(T):
        if nesterov:  # x_{k+1} = y_k - eta lam y_k, y_{k+1} = x_{k+1} + beta (x_{k+1} - x_k)
            x_new = y - eta * lam * y
            y = x_new + beta * (x_new - x)
        else:  # x_{k+1} = x_k - eta lam x_k + beta (x_k - x_{k-1})
            x_new = x - eta * lam * x + beta * (x - x_prev)
        x_prev, x = x, x_new
        out.append(0.5 * np.sum(x**2))
    return np.array(out)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("beta", [0.95, 0.99])
def test_decaying_momentum_oscillations_and_ripples_stay_linear(nesterov, beta):
    """HB's oscillating loss and NAG's ripples on 20 modes in [1e-3, 1] (eta = 1): not monotone, but
    decaying; no tail rise, and the verdict stays linear."""
    lam = np.geomspace(1e-3, 1.0, 20)
    loss = _momentum_loss(lam, 1.0, beta, 3000, nesterov)
    assert np.any(np.diff(loss[300:]) > 0)  # it does rise between steps
    fit = one_fit(np.arange(3001.0), loss)
    assert fit.verdict == "linear" and fit.tail_rise_log10 < 0 and "note" not in fit.reason


def test_tail_rise_line_against_numpy_polyfit():
    rng = np.random.default_rng(5)
    k = np.arange(1.0, 201.0)
    logy = -0.01 * k + 0.1 * rng.standard_normal(k.size)
    tr = rates.tail_rise(k, logy, fraction=0.25)
    sel = k >= 200 - 0.25 * 199
    (slope, _), cov = np.polyfit(k[sel], logy[sel], 1, cov="unscaled")
    res = logy[sel] - np.polyval([slope, _], k[sel])
    se = math.sqrt(res @ res / (sel.sum() - 2) * cov[0, 0])
    assert (tr.start, tr.end, tr.points) == (151, 200, 50)
    assert tr.slope == pytest.approx(slope, rel=1e-10) and tr.slope_se == pytest.approx(se, rel=1e-8)
    assert tr.rise == pytest.approx(slope * 49, rel=1e-10) and not tr.significant(10.0, 2.0)


# --------------------------------------------------------------------------- superlinear
@pytest.mark.parametrize("a", [1.5, 2.0])
def test_superlinear_decay_is_superlinear(a):
    """exp(-c k^a), a > 1: the per-step rate c a k^(a-1) grows, b = a - 1 > 0, which no sum of
    geometric modes (log-convex, b <= 0) can do; c sets y(1000) = e^-50."""
    k = np.arange(1001.0)
    fit = one_fit(k, np.exp(-50.0 * (k / 1000.0) ** a))
    assert fit.verdict == "superlinear" and "grows" in fit.reason
    assert fit.rate_trend == pytest.approx(a - 1.0, abs=1e-3)


def test_geometric_and_power_laws_are_not_superlinear():
    k = np.arange(1001.0)
    assert one_fit(k, np.exp(-50.0 * k / 1000.0)).verdict == "linear"  # a = 1
    for p in (0.5, 1, 3):
        assert one_fit(k[1:], k[1:] ** -p).verdict == "sublinear"
    # a sum of modes is log-convex: b <= 0 even on a spread spectrum
    assert one_fit(np.arange(3001), gd_spread(np.arange(3001))[1]).rate_trend < 0


def test_mildly_accelerating_decay_below_the_superlinear_edge_is_linear():
    """exp(-c k^1.2): b = 0.2 < 1/4 (``super_min``): its per-step rate grows by only 10^0.2 = 1.6x over
    the window [100, 1000], called linear; with the edge moved below b it is superlinear."""
    k = np.arange(1001.0)
    loss = np.exp(-50.0 * (k / 1000.0) ** 1.2)
    assert one_fit(k, loss).verdict == "linear"
    assert one_fit(k, loss, super_min=0.1).verdict == "superlinear"


# --------------------------------------------------------------------------- undecided
def test_stretched_exponential_is_undecided():
    """exp(-2 sqrt k): the local per-step rate k^-1/2 and the local exponent -k^1/2 vary equally:
    neither model is the more nearly constant."""
    k = np.arange(0, 1001)
    fit = one_fit(k, np.exp(-2.0 * np.sqrt(k)))
    assert fit.verdict == "undecided"
    assert abs(fit.margin) < 0.05
    assert "margin" in fit.reason


def test_short_windows_are_undecided():
    k = np.arange(0, 6)
    fit = one_fit(k, 0.5**k)  # window = steps 1..5: too few sub-windows of two points
    assert fit.verdict == "undecided" and "too short" in fit.reason
    assert fit.linear_rate == pytest.approx(0.5)  # the global fit is still reported
    two = one_fit(np.arange(3), np.array([1.0, 0.5, 0.25]))
    assert two.verdict == "undecided" and "fewer than 3" in two.reason


# --------------------------------------------------------------------------- floors
def test_floor_excluded_from_fit():
    """A geometric sequence that reaches the float floor and stays there: only the part above
    the floor is fitted, so the rate is the true one."""
    k = np.arange(0, 1001)
    q = 0.9
    loss = np.maximum(q ** k.astype(float), 1e-30)  # hits 1e-30 at k ~ 656
    fit = one_fit(k, loss, floor=1e-30)
    assert fit.verdict == "linear"
    assert fit.linear_rate == pytest.approx(q, abs=1e-10)
    assert fit.window[1] < 660
    # without the floor the flat tail would bias the fit
    assert abs(one_fit(k, loss).linear_rate - q) > 1e-3


def test_floor_reached_before_window_refits_from_step_one():
    """The loss reaches the floor (k ~ 100) before the window starts (0.1 * 1000 = 100):
    the fit falls back to the steps from 1 on that are above the floor (rates.fit_rates)."""
    k = np.arange(0, 1001)
    loss = np.maximum(0.5 ** k.astype(float), 1e-30)
    fit = one_fit(k, loss, floor=1e-30)
    assert fit.verdict == "linear"
    assert fit.linear_rate == pytest.approx(0.5, abs=1e-10)
    assert fit.window[0] == 1


def arccos_kernel(X: np.ndarray) -> np.ndarray:
    """H_inf of the paper model for unit inputs (Du et al. 2019): x.x' (pi - arccos x.x') / (2 pi)."""
    G = np.clip(X @ X.T, -1.0, 1.0)
    return G * (np.pi - np.arccos(G)) / (2 * np.pi)


def test_repeated_inputs_fit_on_loss_minus_floor_and_are_linear():
    """5 distinct unit inputs, each twice with different targets: K has 5 null directions (the
    differences within pairs), GD cannot fit the within-pair spread, and L -> L* = 1/2 sum over pairs
    of sum (y_i - mean_pair y)^2 (u_0 is equal within a pair). GD is run by hand."""
    rng = np.random.default_rng(3)
    Xd = rng.standard_normal((5, 3))
    Xd /= np.linalg.norm(Xd, axis=1, keepdims=True)
    X = np.repeat(Xd, 2, axis=0)
    y = rng.standard_normal(10)
    u0 = 0.3 * X[:, 0]
    K = arccos_kernel(X)
    lam, V = np.linalg.eigh(K)
    e = u0 - y
    floor_star = 0.5 * np.sum((y - np.repeat(y.reshape(5, 2).mean(axis=1), 2)) ** 2)
    info = theory.loss_floor_star(lam, V.T @ e, 1.0, 10 * np.finfo(float).eps)
    assert info["null_modes"] == 5
    assert info["floor"] == pytest.approx(floor_star, rel=1e-10)

    eta, T = 1.0 / lam[-1], 200
    loss = np.empty(T + 1)
    for j in range(T + 1):
        loss[j] = 0.5 * e @ e
        e = e - eta * (K @ e)
    floor = rates.difference_floor(1e-28 * loss[0], info["floor"], np.finfo(float).eps)
    fit = one_fit(np.arange(T + 1), loss, floor=floor, floor_star=info["floor"])
    assert fit.fitted_on == "L - L*" and fit.floor_star == info["floor"]
    assert fit.verdict == "linear"
    lam_plus = lam[~theory.null_modes(lam, 10 * np.finfo(float).eps)]
    assert fit.local_linear_rate == pytest.approx((1 - eta * lam_plus[0]) ** 2, rel=1e-5)
    # on L itself the loss flattens at L*: not linear
    assert one_fit(np.arange(T + 1), loss).verdict in ("stalled", "sublinear", "undecided")


# --------------------------------------------------------------------------- theory regimes
def _peaks_envelope(loss, k0, k1):
    """Per period: the largest loss in each block of 50 steps between k0 and k1 (hand-made envelope)."""
    blocks = loss[k0:k1].reshape(-1, 50)
    return k0 + 50 * np.arange(blocks.shape[0]) + np.argmax(blocks, axis=1), blocks.max(axis=1)


def test_asymptotic_regimes_against_hand_run_recurrences():
    """``theory.asymptotic_regime`` against loss factors measured on recurrences written out here
    (one mode each, numpy), not against the closed forms it evaluates."""
    lam = np.array([0.05, 0.4, 1.0])
    # heavy ball, eta = 0.1, beta = 0.9: c_{k+1} = (1 + beta - eta lam) c_k - beta c_{k-1}, c_1 = c_0
    T = 4000
    c = np.empty((T + 1, 3))
    c[0] = c[1] = 1.0
    for j in range(1, T):
        c[j + 1] = (1.9 - 0.1 * lam) * c[j] - 0.9 * c[j - 1]
    loss = 0.5 * np.sum(c**2, axis=1)
    kp, env = _peaks_envelope(loss, 2000, 4000)
    measured = math.exp(np.polyfit(kp, np.log(env), 1)[0])  # loss factor per step of the envelope
    hb = theory.asymptotic_regime(optimizers.get("hb"), {"eta": 0.1, "beta": 0.9}, lam)
    assert hb["regime"] == "linear" and hb["rate"] == pytest.approx(measured, rel=1e-3)
    # horizon: the steps over which the slowest mode's amplitude (sqrt of the loss) changes by e
    assert hb["horizon"] == pytest.approx(1.0 / (-0.5 * math.log(measured)), rel=2e-3)

    # NAG-C, r = 3, eta = 0.01: x_k = (1 - h) y_{k-1}, y_k = x_k + (k - 1)/(k + 2) (x_k - x_{k-1}),
    # on the slowest mode h = eta lam_min = 5e-4 alone (it sets the tail); the envelope is fitted as
    # log L = a + p log k + k log q by numpy least squares, so k* = p / log q is measured
    h, T = 0.01 * 0.05, 60000
    x = np.empty(T + 1)
    x_prev, y = 1.0, 1.0
    x[0] = 1.0
    for j in range(1, T + 1):
        xj = (1.0 - h) * y
        y = xj + (j - 1) / (j + 2) * (xj - x_prev)
        x_prev, x[j] = xj, xj
    kp, env = _peaks_envelope(0.5 * x**2, 1000, 60000)
    M = np.stack([np.ones_like(kp, dtype=float), np.log(kp), kp], axis=1)
    _, p, logq = np.linalg.lstsq(M, np.log(env), rcond=None)[0]
    assert p == pytest.approx(-3.0, abs=0.1)
    nagc = theory.asymptotic_regime(
        optimizers.get("nag_c"),
        {"eta": 0.01, "r": 3.0},
        lam,
        optimizers.get("nag_c").ode({"eta": 0.01, "r": 3.0}),
    )
    assert nagc["horizon_kind"] == "crossover"
    assert nagc["rate"] == pytest.approx(math.exp(logq), rel=1e-5)
    assert nagc["horizon"] == pytest.approx(p / logq, rel=0.05)

    # GD at eta = 2.5 on the same modes: the loss of a hand-run GD grows by the measured factor
    e = np.ones(3)
    for _ in range(200):
        e = e - 2.5 * lam * e
    grown = 0.5 * e @ e
    e_next = e - 2.5 * lam * e
    bad = theory.asymptotic_regime(optimizers.get("gd"), {"eta": 2.5}, lam)
    assert bad["regime"] == "growing" and bad["rate"] == pytest.approx(
        0.5 * e_next @ e_next / grown, rel=1e-6
    )


def test_window_position_and_scope():
    assert rates.window_position((100, 200), 300.0) == "before"
    assert rates.window_position((100, 200), 50.0) == "after"
    assert rates.window_position((100, 200), 150.0) == "straddles"
    assert rates.window_position((100, 200), None) is None
    fit = one_fit(np.arange(1, 1001), np.arange(1, 1001.0) ** -3)
    regime = {"regime": "linear", "rate": 0.999, "horizon": 3000.0, "horizon_kind": "crossover"}
    text = rates.scope(fit, regime)
    assert text.startswith("sublinear over k = 100..1000") and "ends before the crossover k = 3000" in text


# --------------------------------------------------------------------------- helpers
def test_window_mask_fractions_and_absolute_steps():
    k = np.arange(0, 101, dtype=float)
    loss = np.ones(101)
    m = rates.window_mask(k, loss, (0.5, 1.0), 0.0)
    assert k[m][0] == 50 and k[m][-1] == 100
    m = rates.window_mask(k, loss, (20, 40), 0.0)
    assert k[m][0] == 20 and k[m][-1] == 40 and m.sum() == 21
    m = rates.window_mask(k, loss, (0.0, 0.1), 0.0)
    assert k[m][0] == 1  # k = 0 is never fitted
    loss[60] = np.nan
    loss[70] = 1e-40
    m = rates.window_mask(k, loss, (0.5, 1.0), 1e-30)
    assert not m[60] and not m[70] and m[61]


def test_ratefit_as_dict_keeps_the_old_keys():
    fit = one_fit(np.arange(0, 101), 0.8 ** np.arange(0, 101.0))
    d = fit.as_dict()
    assert d["verdict"] == "linear" and d["window"] == [10, 100]
    assert {"verdict", "linear_rate", "r2_linear", "power_exponent", "r2_power", "window"} <= set(d)
    assert {
        "fitted_on",
        "floor_star",
        "margin",
        "rate_trend",
        "rate_trend_se",
        "local_linear_rate",
        "local_power_exponent",
        "reason",
    } <= set(d)


def test_max_relative_gap():
    ref = np.array([1.0, 2.0, 4.0, 8.0])
    other = np.array([1.1, 2.0, 3.0, 100.0])
    mask = np.array([True, True, True, False])
    assert rates.max_relative_gap(ref, other, mask) == pytest.approx(0.25)
    assert rates.max_relative_gap(ref, other, np.ones(4, bool)) == pytest.approx(11.5)
    assert math.isnan(rates.max_relative_gap(ref, other, np.zeros(4, bool)))
    assert rates.max_relative_gap(ref, ref, np.ones(4, bool)) == 0.0


def test_log_gap():
    ref = np.array([1.0, 1.0, 1.0, 1.0, 1e-40])
    pred = np.array([10.0, 0.01, 1.0, np.nan, 1.0])
    g = rates.log_gap(pred, ref, floor=1e-30)  # steps 0..2 count: |1|, |-2|, 0 decades
    assert (g.max, g.steps) == (pytest.approx(2.0), 3) and g.mean == pytest.approx(1.0)
    assert rates.log_gap(ref, pred, floor=1e-30) == g  # symmetric
    assert rates.log_gap(pred, ref, 1e-30, mask=[True, False, False, False, False]).max == pytest.approx(1.0)
    empty = rates.log_gap(pred, ref, 1e-30, mask=np.zeros(5, bool))
    assert empty.steps == 0 and empty.as_dict() == {"max": None, "mean": None, "steps": 0}


# --------------------------------------------------------------------------- end to end
def test_pipeline_on_repeated_inputs_fits_loss_minus_floor(tmp_path):
    """A tiny dataset with every input twice and different targets, through pipeline.prepare and
    run_optimizer: the floor L* matches the within-pair spread of y (the network's outputs on equal
    inputs are equal), the verdict is linear on L - L*, the predicted rate leaves the null modes out."""
    from ntkdyn import config, pipeline

    rng = np.random.default_rng(0)
    Xd = rng.standard_normal((4, 3))
    X, y = np.repeat(Xd, 2, axis=0), rng.standard_normal(8)
    path = tmp_path / "pairs.npz"
    np.savez(path, X=X, y=y)
    cfg = config.from_dict(
        {
            "name": "pairs",
            "seed": 0,
            "dtype": "float64",
            "data": {"source": "npz", "path": str(path), "normalize": "unit"},
            "model": {"name": "paper", "width": 512},
            "train": {"steps": 300, "error_at": [0], "kernel_at": [0]},
            "theory": {"diffrax": False},
            "optimizers": [{"name": "gd", "eta": 0.5}],
        }
    )
    setup = pipeline.prepare(cfg)
    _, m = pipeline.run_optimizer(cfg, setup, cfg.optimizers[0])
    within = 0.5 * np.sum((y - np.repeat(y.reshape(4, 2).mean(axis=1), 2)) ** 2)
    assert m["loss_floor"]["null_modes"] == 4 and m["loss_floor"]["subtracted"]
    assert m["loss_floor"]["floor"] == pytest.approx(within, rel=1e-8)
    assert m["fitted"]["fitted_on"] == "L - L*"
    assert m["fitted"]["floor_star"] == pytest.approx(within, rel=1e-8)
    assert m["verdict"] == "linear" and m["theory_verdicts"]["discrete"] == "linear"
    lam = np.linalg.eigvalsh(setup.K)
    live = lam[lam > 1e-8 * lam[-1]]
    expected = max((1 - 0.5 * live[0]) ** 2, (1 - 0.5 * live[-1]) ** 2)
    assert m["predicted"]["linear_rate"] == pytest.approx(expected, rel=1e-9)
    assert m["regime"]["regime"] == "linear" and m["regime"]["rate"] == pytest.approx(expected, rel=1e-9)
    assert m["regime"]["window_position"] in ("before", "after", "straddles")
    assert set(m["deviation_log10"]["discrete"]) == {"max", "mean", "steps"}
    assert {"linear_rate", "r2_linear", "power_exponent", "r2_power", "window"} <= set(m["fitted"])


def test_tail_fit_recovers_a_power_times_exponential_law():
    """L_k = 3 k^p q^k exactly (all points), and the same times an alternating factor 1.5 / 0.5
    (peaks only: every other point, factor 1.5): p, q and k* = p / log q recovered."""
    k = np.arange(1, 2001, dtype=np.float64)
    p, q = -3.0, 0.997
    loss = 3.0 * k**p * q**k
    fit = rates.tail_fit(k, loss, (50, 1500), peaks_only=False, min_points=10)
    assert fit["points"] == 1451
    assert abs(fit["power_exponent"] - p) < 1e-8 and abs(fit["tail_rate"] - q) < 1e-10
    assert abs(fit["crossover_step"] - p / np.log(q)) < 1e-5
    wiggly = loss * np.where(k % 2 == 0, 1.5, 0.5)
    fit = rates.tail_fit(k, wiggly, (50, 1500), peaks_only=True)
    assert fit["peaks"] == 726 and abs(fit["power_exponent"] - p) < 1e-8 and abs(fit["tail_rate"] - q) < 1e-10
    assert rates.tail_fit(k, loss, (50, 52), peaks_only=False, min_points=10)["tail_rate"] is None
    assert rates.loss_floor("float32", 2.0) == (100 * np.finfo(np.float32).eps) ** 2 * 2.0


def test_a_small_significant_rise_is_noted_not_a_verdict():
    """0.99^k, then x1.01 per step from step 950 of 1000: the loss rose 1.01^50 = 1.6x at the end, a
    significant slope but under the decade of ``rise_factor``: the verdict stays, its reason says so."""
    k = np.arange(1001.0)
    loss = np.where(k <= 950, 0.99**k, 0.99**950 * 1.01 ** (k - 950))
    fit = one_fit(k, loss)
    assert fit.verdict != "growing" and "note: it rises by a factor" in fit.reason
    assert 0 < fit.tail_rise_log10 < 1
    assert "note" not in one_fit(k, 0.99**k).reason
