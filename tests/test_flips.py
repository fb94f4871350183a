"""Activation-pattern flips (ntkdyn.flips) against direct counting and the predicted width scaling.

References: the active set read from the model's own gradient (a unit r is active at x_i iff
d f(x_i) / d w_r != 0, via jax.jacrev of ``models.paper_apply`` / ``released_apply``); the Cauchy-Schwarz
bound checked on random moves; scipy.stats.linregress for the log-log fit; for the prediction, the
network trained by ``ntkdyn.train`` and counted, against the linearised network's trajectory.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from ntkdyn import data, flips, linearized, models, optimizers
from ntkdyn.train import TrainPlan, train

N, D = 16, 5


@pytest.fixture(scope="module")
def sphere():
    X, y = data.sphere(N, D, "teacher", 0, 0.0, 16)
    return jnp.asarray(X, jnp.float64), jnp.asarray(y, jnp.float64)


def _active_from_gradient(apply, params, consts, X):
    """(n, m) bool: d f(x_i) / d w_r != 0, read off the model's Jacobian."""
    J = jax.jacrev(lambda p: apply(p, consts, X))(params)["W"]  # (n, m, d)
    return np.asarray(jnp.any(J != 0, axis=-1))


def test_count_matches_the_gradient_active_sets(sphere):
    X, _ = sphere
    p0, c = models.paper_init(jax.random.PRNGKey(0), D, 40, 1.0, jnp.float64)
    pk = {"W": p0["W"] + 0.3 * jax.random.normal(jax.random.PRNGKey(1), p0["W"].shape, jnp.float64)}
    a0 = _active_from_gradient(models.paper_apply, p0, c, X)
    ak = _active_from_gradient(models.paper_apply, pk, c, X)
    got = flips.count_flips(p0, pk, X)
    assert 0 < got.flipped == np.mean(a0 != ak)
    assert got.bound >= got.flipped
    np.testing.assert_allclose(flips.flips_along(p0, jax.tree.map(lambda a, b: jnp.stack([a, b]), p0, pk), X),
                               [0.0, got.flipped])  # fmt: skip


@pytest.mark.parametrize("scale", [1e-3, 1e-2, 0.1, 1.0])
def test_bound_holds_with_bias_moves(sphere, scale):
    """released model (W, b, a): moves of W and b; the bound must count the bias's move too."""
    X, _ = sphere
    p0, c = models.released_init(jax.random.PRNGKey(2), D, 64, 0.5, jnp.float64, init="gaussian_bias")
    k = jax.random.split(jax.random.PRNGKey(3), 2)
    pk = {**p0, "W": p0["W"] + scale * jax.random.normal(k[0], p0["W"].shape, jnp.float64)}
    pb = {**p0, "b": p0["b"] + scale * jax.random.normal(k[1], p0["b"].shape, jnp.float64)}
    for moved in (pk, pb):
        a0 = _active_from_gradient(models.released_apply, p0, c, X)
        ak = _active_from_gradient(models.released_apply, moved, c, X)
        got = flips.count_flips(p0, moved, X)
        assert got.flipped == np.mean(a0 != ak) <= got.bound
    assert flips.count_flips(p0, pb, X).flipped > 0 or scale < 1e-2  # bias moves alone flip patterns


def _runs(X, y, m, seed, steps):
    p, c = models.paper_init(jax.random.PRNGKey(100 + seed), D, m, 1.0, jnp.float64)
    eta = 1.0 / np.linalg.eigvalsh(models.paper_hinf(np.asarray(X)))[-1]
    gd, plan = optimizers.get("gd"), TrainPlan(steps, steps)
    net = train(models.PAPER, gd, {"eta": eta}, 1.0, plan, p, c, X, y)
    lin = train(linearized.linearize(models.PAPER), gd, {"eta": eta}, 1.0, plan, p,
                linearized.linear_consts(p, c), X, y)  # fmt: skip
    return flips.count_flips(p, net.final_params, X), flips.predict_flips(
        p, lin.final_params, X, init_std=1.0
    )


def test_kernel_regime_prediction_of_the_flips(sphere):
    """Paper model, GD at eta = 1/lambda_max(H_inf), 200 steps, m = 1024: the linearised trajectory's
    margin crossings and the first-order density estimate predict the counted fraction (measured:
    within 5 % and 1 % for this seed; a seed sweep gave ratios 1.05 +- 0.1)."""
    X, y = sphere
    counted, pred = _runs(X, y, 1024, 0, 200)
    assert counted.flipped > 0.01
    assert abs(pred.crossed / counted.flipped - 1) < 0.15
    assert abs(pred.density / counted.flipped - 1) < 0.15
    assert counted.flipped <= counted.bound and pred.crossed <= pred.bound


def test_flips_shrink_like_m_to_the_minus_half(sphere):
    """Widths 512 ... 8192, three seeds, 100 steps: the fitted exponent of the counted fraction (and of
    the prediction) is about -1/2 (Du et al.: ||w_r(k) - w_r(0)|| = O(m^(-1/2))). Measured (3 seeds,
    m = 512 ... 8192): -0.475 +- 0.011 counted, -0.49 +- 0.02 predicted; m = 128 lies below the
    asymptote (sqrt(m) x fraction 0.7 ... 1.0 against about 1.0 from m = 512 on), which flattens fits
    that include it (-0.44 +- 0.02 over 128 ... 8192)."""
    X, y = sphere
    widths, counted, crossed = [], [], []
    for m in (512, 2048, 8192):
        for seed in range(3):
            c, p = _runs(X, y, m, seed, 100)
            widths.append(m)
            counted.append(c.flipped)
            crossed.append(p.crossed)
    fit, fit_pred = flips.power_fit(widths, counted), flips.power_fit(widths, crossed)
    print(f"flips ~ m^{fit.exponent:.3f} +- {fit.stderr:.3f}; ", end="")
    print(f"predicted m^{fit_pred.exponent:.3f} +- {fit_pred.stderr:.3f}")
    assert -0.6 < fit.exponent < -0.4 and fit.stderr < 0.05
    assert abs(fit.exponent - fit_pred.exponent) < 2 * np.hypot(fit.stderr, fit_pred.stderr)


def test_power_fit_against_linregress():
    rng = np.random.default_rng(0)
    m = np.repeat([64.0, 256, 1024, 4096], 3)
    v = 2.0 * m**-0.5 * np.exp(0.1 * rng.standard_normal(m.size))
    got = flips.power_fit(m, v)
    ref = scipy.stats.linregress(np.log(m), np.log(v))
    np.testing.assert_allclose([got.exponent, got.stderr, got.prefactor],
                               [ref.slope, ref.stderr, np.exp(ref.intercept)], rtol=1e-12)  # fmt: skip
    exact = flips.power_fit([10, 100, 1000], [3.0, 0.3, 0.03])
    np.testing.assert_allclose([exact.exponent, exact.prefactor], [-1.0, 30.0], rtol=1e-12)
    assert exact.stderr < 1e-12
    with pytest.raises(ValueError, match="positive"):
        flips.power_fit([1, 2, 3], [0.1, 0.0, 0.2])


def test_bad_params(sphere):
    X, _ = sphere
    with pytest.raises(ValueError, match="'W' of shape"):
        flips.count_flips({"kernel": X}, {"kernel": X}, X)
