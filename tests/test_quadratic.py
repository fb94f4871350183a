"""The quadratic model (ntkdyn.quadratic) against independent references.

References: a hand-written numpy loop on the explicit second-order Taylor polynomial, built from a dense
Jacobian (jax.jacrev) and dense per-output Hessians (jax.hessian), materialised here only; a model that
is itself quadratic in theta (its quadratic model is the network); the linearised network of
``ntkdyn.linearized`` trained through ``ntkdyn.train``.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from ntkdyn import linearized, models, optimizers, quadratic
from ntkdyn.train import TrainPlan, train

N, D, M = 6, 3, 5


def _tanh_net(p, X):
    """Two layers, both trained, smooth: f(x) = a . tanh(W x + b) / sqrt(m)."""
    return jnp.tanh(X @ p["W"].T + p["b"]) @ p["a"] / math.sqrt(p["a"].shape[0])


@pytest.fixture(scope="module")
def problem():
    k = jax.random.split(jax.random.PRNGKey(7), 5)
    X = jax.random.normal(k[0], (N, D), jnp.float64)
    y = jax.random.normal(k[1], (N,), jnp.float64)
    p0 = {
        "W": jax.random.normal(k[2], (M, D), jnp.float64),
        "b": 0.5 * jax.random.normal(k[3], (M,), jnp.float64),
        "a": jax.random.normal(k[4], (M,), jnp.float64),
    }
    model, params, consts = models.from_apply_fn(_tanh_net, p0, loss="half_sum", name="tanh2")
    return model, params, consts, X, y


def _dense_taylor(model, params, consts, X):
    """f0 (n,), J (n, P), Hf (n, P, P) at theta_0 in the flat parameter vector, materialised."""
    flat, unravel = ravel_pytree(params)
    f = lambda v: model.apply(unravel(v), consts, X)  # noqa: E731
    return np.asarray(f(flat)), np.asarray(jax.jacrev(f)(flat)), np.asarray(jax.hessian(f)(flat)), unravel


def _numpy_taylor_loop(f0, J, Hf, y, c, steps, eta, beta=0.0, batches=None):
    """Heavy ball v <- beta v + g, delta <- delta - eta v (optax.sgd's form; beta = 0: GD) on
    L(delta) = (c/2)||f0 + J delta + 1/2 delta^T Hf delta - y||^2; with ``batches``, g is (n/b) times the
    gradient of the batch's part of L. Returns the full-set loss at steps 0..steps."""
    n = len(y)
    delta, v = np.zeros(J.shape[1]), np.zeros(J.shape[1])
    losses = []
    for k in range(steps + 1):
        Hd = np.einsum("ipq,q->ip", Hf, delta)
        e = f0 + J @ delta + 0.5 * Hd @ delta - y
        losses.append(0.5 * c * e @ e)
        if k == steps:
            break
        rows = np.arange(n) if batches is None else np.asarray(batches[k])
        g = (n / len(rows)) * c * (J[rows] + Hd[rows]).T @ e[rows]
        v = beta * v + g
        delta = delta - eta * v
    return np.asarray(losses)


@pytest.mark.parametrize("eta,beta", [(0.3, 0.0), (0.1, 0.9)])
def test_quadratic_training_equals_hand_written_taylor_loop(problem, eta, beta):
    model, params, consts, X, y = problem
    f0, J, Hf, _ = _dense_taylor(model, params, consts, X)
    want = _numpy_taylor_loop(f0, J, Hf, np.asarray(y), 1.0, 80, eta, beta)
    got = quadratic.train_taylor(model, params, consts, X, y, optax.sgd(eta, momentum=beta or None), 80)
    np.testing.assert_allclose(got.loss, want, rtol=1e-10)
    # the loop is not trivially the linear one: dropping the Hessian term moves the loss visibly
    lin = _numpy_taylor_loop(f0, J, 0 * Hf, np.asarray(y), 1.0, 80, eta, beta)
    assert np.max(np.abs(lin / want - 1)) > 1e-3


def test_quadratic_minibatch_uses_the_network_batches(problem):
    model, params, consts, X, y = problem
    key, b, steps = jax.random.PRNGKey(11), 2, 40
    batches = quadratic.network_batches(key, steps, N, b, "shuffle")
    f0, J, Hf, _ = _dense_taylor(model, params, consts, X)
    want = _numpy_taylor_loop(f0, J, Hf, np.asarray(y), 1.0, steps, 0.1, 0.5, batches=batches)
    got = quadratic.train_taylor(
        model, params, consts, X, y, optax.sgd(0.1, momentum=0.5), steps, batches=batches
    )
    np.testing.assert_allclose(got.loss, want, rtol=1e-10)
    # the Model face through the training path, same sampling key: the same batches, the same losses
    quad = quadratic.quadratize(model)
    qc = quadratic.expansion_consts(params, consts)
    plan = TrainPlan(steps, 1, batch_size=b, sampling="shuffle")
    res = train(quad, optimizers.get("hb"), {"eta": 0.1, "beta": 0.5}, 1.0, plan, params, qc, X, y, key=key)
    np.testing.assert_allclose(res.loss, want, rtol=1e-10)


def test_held_out_and_errors(problem):
    model, params, consts, X, y = problem
    Xt, yt = X[:3] + 0.1, y[:3]
    got = quadratic.train_taylor(
        model, params, consts, X, y, optax.sgd(0.3), 20, record_every=5, error_at=(0, 20), test=(Xt, yt)
    )
    quad = quadratic.quadratize(model)
    qc = quadratic.expansion_consts(params, consts)
    res = train(quad, optimizers.get("gd"), {"eta": 0.3}, 1.0, TrainPlan(20, 5, error_at=(0, 20)), params, qc,
                X, y, test=(Xt, yt))  # fmt: skip
    np.testing.assert_allclose(got.test_loss, res.test_loss, rtol=1e-11)
    np.testing.assert_allclose(got.errors, res.errors, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(got.errors[0], np.asarray(model.apply(params, consts, X) - y), rtol=1e-13)


def _quadratic_in_theta(p, X):
    """f(theta; x) = (x.u)(x.v) + x.w: exactly quadratic in theta = (u, v, w)."""
    return (X @ p["u"]) * (X @ p["v"]) + X @ p["w"]


def test_model_quadratic_in_theta_is_its_own_quadratic_model(problem):
    _, _, _, X, y = problem
    k = jax.random.split(jax.random.PRNGKey(2), 3)
    p0 = {name: 0.7 * jax.random.normal(kk, (D,), jnp.float64) for name, kk in zip("uvw", k)}
    model, params, consts = models.from_apply_fn(_quadratic_in_theta, p0, name="quad_in_theta")
    spec, hyper = optimizers.get("nag"), {"eta": 0.02, "beta": 0.8}
    net = train(model, spec, hyper, 1.0, TrainPlan(100, 10), params, consts, X, y)
    tx = optimizers.transformation(spec, hyper)
    quad = quadratic.train_taylor(model, params, consts, X, y, tx, 100, record_every=10)
    np.testing.assert_allclose(quad.loss, net.loss, rtol=1e-11)
    lin = quadratic.train_taylor(model, params, consts, X, y, tx, 100, record_every=10, order=1)
    assert np.max(np.abs(lin.loss / net.loss - 1)) > 1e-2  # the linear model is not the network here
    assert quadratic.relative_gap(net.loss, quad.loss) < 1e-11 < quadratic.relative_gap(net.loss, lin.loss)


def test_linear_part_is_the_linearised_network(problem):
    model, params, consts, X, y = problem
    lc = linearized.linear_consts(params, consts)
    moved = jax.tree.map(lambda p: p + 0.3, params)
    f0, jd, dhd = quadratic.taylor_terms(
        model.apply, params, consts, X, jax.tree.map(lambda p: 0 * p + 0.3, params)
    )
    np.testing.assert_allclose(
        f0 + jd, linearized.linearize(model).apply(moved, lc, X), rtol=1e-12, atol=1e-14
    )
    _, J, Hf, unravel = _dense_taylor(model, params, consts, X)
    d = np.full(J.shape[1], 0.3)
    np.testing.assert_allclose(dhd, np.einsum("p,ipq,q->i", d, Hf, d), rtol=1e-11)
    spec, hyper = optimizers.get("hb"), {"eta": 0.2, "beta": 0.7}
    net_lin = train(linearized.linearize(model), spec, hyper, 1.0, TrainPlan(60, 5), params, lc, X, y)
    ours = quadratic.train_taylor(
        model, params, consts, X, y, optimizers.transformation(spec, hyper), 60, record_every=5, order=1
    )
    np.testing.assert_allclose(ours.loss, net_lin.loss, rtol=1e-12)


def test_quadratic_kernel_is_the_moved_jacobians_gram(problem):
    """The quadratic model's tangent kernel at theta_0 + d (ntk.gram of ``quadratize``) is
    (J_0 + d^T Hf)(J_0 + d^T Hf)^T: its Jacobian moves linearly in d."""
    from ntkdyn import ntk

    model, params, consts, X, _ = problem
    _, J, Hf, unravel = _dense_taylor(model, params, consts, X)
    d = 0.2 * np.random.default_rng(1).standard_normal(J.shape[1])
    moved = jax.tree.map(lambda a, b: a + b, params, unravel(jnp.asarray(d)))
    Jq = J + np.einsum("ipq,q->ip", Hf, d)
    qc = quadratic.expansion_consts(params, consts)
    np.testing.assert_allclose(ntk.gram(quadratic.quadratize(model), moved, qc, X), Jq @ Jq.T, rtol=1e-10)


def test_applies():
    X = jax.random.normal(jax.random.PRNGKey(0), (N, D), jnp.float64)
    p, c = models.paper_init(jax.random.PRNGKey(1), D, 8, 1.0, jnp.float64)
    assert "almost everywhere" in quadratic.applies(models.PAPER, p, c, X)
    rp, rc = models.released_init(jax.random.PRNGKey(1), D, 8, None, jnp.float64)
    assert quadratic.applies(models.RELEASED, rp, rc, X) is None  # a-W cross terms: Hess f != 0
    # the paper model under another name: found by the probe, not by the name
    relu_w = models.Model("relu_w_only", models.paper_apply, "half_sum")
    assert "vanishes" in quadratic.applies(relu_w, p, c, X)
    tanh, tp, tc = models.from_apply_fn(_tanh_net, {"W": p["W"], "b": 0 * p["W"][:, 0], "a": c["a"]})
    assert quadratic.applies(tanh, tp, tc, X) is None


def test_bad_input(problem):
    model, params, consts, X, y = problem
    with pytest.raises(ValueError, match="order"):
        quadratic.train_taylor(model, params, consts, X, y, optax.sgd(0.1), 4, order=3)
    with pytest.raises(ValueError, match="batches"):
        quadratic.train_taylor(model, params, consts, X, y, optax.sgd(0.1), 4, batches=jnp.zeros((3, 2), int))
    with pytest.raises(ValueError, match="record_every"):
        quadratic.train_taylor(model, params, consts, X, y, optax.sgd(0.1), 5, record_every=2)


def test_divergence_freezes(problem):
    model, params, consts, X, y = problem
    got = quadratic.train_taylor(model, params, consts, X, y, optax.sgd(50.0), 30, divergence_factor=1e3)
    assert got.diverged_at is not None and got.diverged_at > 0
    assert np.all(np.isnan(got.loss[got.diverged_at :])) and np.all(np.isfinite(got.loss[: got.diverged_at]))


def test_float32_targets_with_float64_parameters(problem):
    """With x64 on, float64 parameters and float32 targets (jax.random's default dtype without x64) train
    in the loss's dtype (the divergence limit took y's dtype before and the scan's carry failed); the
    losses equal those of float64 targets holding the same values."""
    model, params, consts, X, y = problem
    y32 = y.astype(jnp.float32)
    tx = optax.sgd(0.05)
    a = quadratic.train_taylor(model, params, consts, X, y32, tx, 5)
    b = quadratic.train_taylor(model, params, consts, X, y32.astype(jnp.float64), tx, 5)
    np.testing.assert_allclose(np.asarray(a.loss), np.asarray(b.loss), rtol=1e-12)
