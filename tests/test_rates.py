"""Rate fits and verdicts on sequences with known rates."""
import math

import numpy as np
import pytest

from ntkdyn import rates


@pytest.mark.parametrize("q", [0.9, 0.99])
def test_geometric_is_linear(q):
    k = np.arange(0, 1001)
    fit = rates.fit_rates(k, 3.0 * q**k)
    assert fit.verdict == "linear"
    assert fit.linear_rate == pytest.approx(q, abs=1e-10)
    assert fit.r2_linear == pytest.approx(1.0, abs=1e-12)
    assert fit.r2_power < fit.r2_linear
    assert fit.window == (100, 1000)


@pytest.mark.parametrize("p", [1, 2, 3])
def test_power_law_is_sublinear(p):
    k = np.arange(1, 1001)
    fit = rates.fit_rates(k, 5.0 * k.astype(float) ** -p)
    assert fit.verdict == "sublinear"
    assert fit.power_exponent == pytest.approx(-p, abs=1e-10)
    assert fit.r2_power == pytest.approx(1.0, abs=1e-12)
    assert fit.r2_linear < fit.r2_power


def test_power_law_with_step_zero_ignores_it():
    """Step 0 (log k = -inf) is outside every window; a finite L_0 is fine."""
    k = np.arange(0, 501)
    loss = np.where(k == 0, 10.0, np.maximum(k, 1).astype(float) ** -2.0)
    fit = rates.fit_rates(k, loss, window=(0.0, 1.0))
    assert fit.verdict == "sublinear"
    assert fit.window[0] == 1
    assert fit.power_exponent == pytest.approx(-2.0, abs=1e-10)


def test_constant_is_stalled():
    k = np.arange(0, 200)
    fit = rates.fit_rates(k, np.full(200, 0.7))
    assert fit.verdict == "stalled"
    assert fit.linear_rate == pytest.approx(1.0)


def test_slow_decrease_below_stall_factor_is_stalled():
    k = np.arange(0, 101)
    loss = 1.0 - 1e-4 * k  # falls by ~1% over the window, below the default factor 1.01
    assert rates.fit_rates(k, loss).verdict == "stalled"
    assert rates.fit_rates(k, loss, stall_factor=1.001).verdict != "stalled"


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_is_diverged(bad):
    k = np.arange(0, 50)
    loss = 0.9 ** k.astype(float)
    loss[30] = bad
    fit = rates.fit_rates(k, loss)
    assert fit.verdict == "diverged"
    assert math.isnan(fit.linear_rate) and math.isnan(fit.power_exponent)


def test_diverged_flag():
    k = np.arange(0, 50)
    assert rates.fit_rates(k, 0.9 ** k.astype(float), diverged=True).verdict == "diverged"


def test_floor_excluded_from_fit():
    """A geometric sequence that reaches the float floor and stays there: only the part above
    the floor is fitted, so the rate is the true one."""
    k = np.arange(0, 1001)
    q = 0.9
    loss = np.maximum(q ** k.astype(float), 1e-30)  # hits 1e-30 at k ~ 656
    fit = rates.fit_rates(k, loss, floor=1e-30)
    assert fit.verdict == "linear"
    assert fit.linear_rate == pytest.approx(q, abs=1e-10)
    assert fit.window[1] < 660
    # without the floor the flat tail would bias the fit
    assert abs(rates.fit_rates(k, loss).linear_rate - q) > 1e-3


def test_floor_reached_before_window_refits_from_step_one():
    """The loss reaches the floor (k ~ 100) before the window starts (0.1 * 1000 = 100):
    the fit falls back to the steps from 1 on that are above the floor (rates.fit_rates)."""
    k = np.arange(0, 1001)
    loss = np.maximum(0.5 ** k.astype(float), 1e-30)
    fit = rates.fit_rates(k, loss, floor=1e-30)
    assert fit.verdict == "linear"
    assert fit.linear_rate == pytest.approx(0.5, abs=1e-10)
    assert fit.window[0] == 1


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


def test_ratefit_as_dict():
    fit = rates.fit_rates(np.arange(0, 101), 0.8 ** np.arange(0, 101.0))
    d = fit.as_dict()
    assert d["verdict"] == "linear" and d["window"] == [10, 100]
    assert set(d) == {"verdict", "linear_rate", "r2_linear", "power_exponent", "r2_power", "window"}


def test_max_relative_gap():
    ref = np.array([1.0, 2.0, 4.0, 8.0])
    other = np.array([1.1, 2.0, 3.0, 100.0])
    mask = np.array([True, True, True, False])
    assert rates.max_relative_gap(ref, other, mask) == pytest.approx(0.25)
    assert rates.max_relative_gap(ref, other, np.ones(4, bool)) == pytest.approx(11.5)
    assert math.isnan(rates.max_relative_gap(ref, other, np.zeros(4, bool)))
    assert rates.max_relative_gap(ref, ref, np.ones(4, bool)) == 0.0
