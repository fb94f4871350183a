"""The linearised network (ntkdyn.linearized) against independent references.

References: an explicit Jacobian (jax.jacrev, materialised) for f_lin itself; the exact kernel-regime
recurrence (theory.discrete_modes with K = c H(theta_0)) for GD and HB trained through the training
path; a hand-written numpy Adam loop on the explicit linear model for Adam.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ntkdyn import data, linearized, models, ntk, optimizers, theory
from ntkdyn.train import TrainPlan, train

N, D, WIDTH = 10, 5, 64


@pytest.fixture(scope="module")
def problem():
    X, y = data.sphere(N, D, "teacher", 0, 0.0, 16)
    X, y = jnp.asarray(X, jnp.float64), jnp.asarray(y, jnp.float64)
    params, consts = models.paper_init(jax.random.PRNGKey(3), D, WIDTH, 1.0, jnp.float64)
    return X, y, params, consts


def _jacobian(params, consts, X):
    J = jax.jacrev(lambda p: models.paper_apply(p, consts, X))(params)["W"]
    return np.asarray(J.reshape(X.shape[0], -1))


def test_f_lin_is_the_first_order_expansion(problem):
    X, y, params, consts = problem
    lin = linearized.linearize(models.PAPER)
    lc = linearized.linear_consts(params, consts)
    np.testing.assert_allclose(lin.apply(params, lc, X), models.paper_apply(params, consts, X), rtol=1e-13)
    delta = {"W": 0.3 * jax.random.normal(jax.random.PRNGKey(1), params["W"].shape, jnp.float64)}
    moved = {"W": params["W"] + delta["W"]}
    want = (
        np.asarray(models.paper_apply(params, consts, X))
        + _jacobian(params, consts, X) @ np.asarray(delta["W"]).ravel()
    )
    np.testing.assert_allclose(lin.apply(moved, lc, X), want, rtol=1e-11, atol=1e-12)
    # the network itself is not linear at this distance: the comparison can fail
    assert np.max(np.abs(np.asarray(models.paper_apply(moved, consts, X)) - want)) > 1e-3
    assert linearized.linearize(models.PAPER) is lin  # cached: one compiled program per model


def test_fast_gram_is_frozen_at_theta0(problem):
    X, y, params, consts = problem
    lin = linearized.linearize(models.PAPER)
    lc = linearized.linear_consts(params, consts)
    moved = {"W": params["W"] + 1.0}
    J = _jacobian(params, consts, X)
    np.testing.assert_allclose(ntk.gram(lin, moved, lc, X), J @ J.T, rtol=1e-10)


@pytest.mark.parametrize("name,hyper", [("gd", {"eta": 0.5}), ("hb", {"eta": 0.2, "beta": 0.7})])
def test_linearised_training_equals_the_recurrence(problem, name, hyper):
    X, y, params, consts = problem
    lin = linearized.linearize(models.PAPER)
    lc = linearized.linear_consts(params, consts)
    spec = optimizers.get(name)
    res = train(lin, spec, hyper, 1.0, TrainPlan(60, 5), params, lc, X, y)
    J = _jacobian(params, consts, X)
    lam, V = theory.eigen(J @ J.T)
    e0 = np.asarray(models.paper_apply(params, consts, X) - y)
    want = theory.modal_loss(theory.discrete_modes(spec, hyper, lam, V.T @ e0, 60), 1.0)[res.step]
    np.testing.assert_allclose(res.loss, want, rtol=1e-9)
    net = train(models.PAPER, spec, hyper, 1.0, TrainPlan(60, 5), params, consts, X, y)
    assert np.max(np.abs(net.loss / want - 1)) > 1e-6  # the narrow network is not its linearisation


def _numpy_adam(J, e0, lr, steps, b1=0.9, b2=0.999, eps=1e-8):
    """Adam (Kingma & Ba, optax's defaults and bias correction) on L = 1/2 ||e0 + J delta||^2."""
    delta = np.zeros(J.shape[1])
    m = np.zeros_like(delta)
    v = np.zeros_like(delta)
    losses = []
    for t in range(1, steps + 1):
        e = e0 + J @ delta
        losses.append(0.5 * e @ e)
        g = J.T @ e
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mh, vh = m / (1 - b1**t), v / (1 - b2**t)
        delta = delta - lr(t - 1) * mh / (np.sqrt(vh) + eps)
    e = e0 + J @ delta
    return np.array(losses + [0.5 * e @ e])


def test_linearised_adam_equals_numpy_adam_with_warmup_cosine(problem):
    X, y, params, consts = problem
    lin = linearized.linearize(models.PAPER)
    lc = linearized.linear_consts(params, consts)
    steps, peak, warm = 40, 0.02, 10

    def lr(t):  # warmup-cosine written out: linear 0 -> peak over `warm`, then cosine to 0 at `steps`
        if t < warm:
            return peak * t / warm
        return 0.5 * peak * (1 + math.cos(math.pi * (t - warm) / (steps - warm)))

    sched = optax.warmup_cosine_decay_schedule(0.0, peak, warm, steps)
    res = train(lin, optimizers.get("adam"), {"eta": sched}, 1.0, TrainPlan(steps, 1), params, lc, X, y)
    J = _jacobian(params, consts, X)
    e0 = np.asarray(models.paper_apply(params, consts, X) - y)
    np.testing.assert_allclose(
        res.loss, _numpy_adam(J, e0, lr, steps), rtol=1e-6
    )  # optax evaluates the schedule in float32
