"""Sharpness (ntkdyn.sharpness) against dense eigenvalues and the stability limits against the spectral
radius of the per-mode recurrence computed numerically.

References: jnp.linalg.eigvalsh of the dense loss Hessian (jax.hessian) and of J J^T (jax.jacrev), both
materialised here only; numpy's eigenvalues of the 2x2 companion matrices, found by bisection.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from ntkdyn import models, optimizers, sharpness

N, D, M = 7, 3, 6


def _tanh_net(p, X):
    return jnp.tanh(X @ p["W"].T + p["b"]) @ p["a"] / math.sqrt(p["a"].shape[0])


@pytest.fixture(scope="module")
def tanh_problem():
    k = jax.random.split(jax.random.PRNGKey(5), 5)
    X = jax.random.normal(k[0], (N, D), jnp.float64)
    y = jax.random.normal(k[1], (N,), jnp.float64)
    p0 = {
        "W": jax.random.normal(k[2], (M, D), jnp.float64),
        "b": 0.5 * jax.random.normal(k[3], (M,), jnp.float64),
        "a": jax.random.normal(k[4], (M,), jnp.float64),
    }
    model, params, consts = models.from_apply_fn(_tanh_net, p0, loss="mse", name="tanh2")
    return model, params, consts, X, y


def _dense(model, params, consts, X, y):
    """(eigenvalues of Hess L, eigenvalues of J J^T), ascending, from materialised matrices."""
    flat, unravel = ravel_pytree(params)
    loss = sharpness.squared_loss(model)
    Hess = jax.hessian(lambda v: loss(unravel(v), consts, X, y))(flat)
    J = jax.jacrev(lambda v: model.apply(unravel(v), consts, X))(flat)
    return np.linalg.eigvalsh(np.asarray(Hess)), np.linalg.eigvalsh(np.asarray(J @ J.T))


def test_tanh_net_against_dense_eigenvalues(tanh_problem):
    model, params, consts, X, y = tanh_problem
    hess_eigs, ntk_eigs = _dense(model, params, consts, X, y)
    assert hess_eigs[0] < 0  # an indefinite Hessian (away from a minimum): lambda_max is the algebraic top
    got = sharpness.sharpness(model, params, consts, X, y)
    assert got.hessian.converged and got.ntk.converged
    np.testing.assert_allclose(got.hessian.value, hess_eigs[-1], rtol=1e-8)
    np.testing.assert_allclose(got.ntk.value, ntk_eigs[-1], rtol=1e-8)
    np.testing.assert_allclose(got.kernel_max, (2.0 / N) * ntk_eigs[-1], rtol=1e-8)  # mse: c = 2/n
    assert got.hessian.relative_residual < 1e-8 and got.ntk.relative_residual < 1e-8
    # the Ritz vector is an eigenvector: x^T A x equals the value
    flat, unravel = ravel_pytree(params)
    x = got.hessian.vector
    hx = jax.jvp(
        lambda v: ravel_pytree(jax.grad(sharpness.squared_loss(model))(unravel(v), consts, X, y))[0],
        (flat,),
        (jnp.asarray(x),),
    )[1]
    np.testing.assert_allclose(float(x @ np.asarray(hx)), hess_eigs[-1], rtol=1e-8)


@pytest.mark.parametrize("split", [1e-9, 0.0, 1e-4])
def test_near_degenerate_top_eigenvalues(split):
    """A linear model f = X theta with X = U diag(s) V^T: J J^T has eigenvalues s^2 and Hess L =
    c X^T X the same nonzero ones; the top two are (3, 3 (1 - split))^2."""
    n, p = 150, 200  # larger than the Lanczos steps needed: convergence, not an exhausted Krylov space
    rng = np.random.default_rng(3)
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    V, _ = np.linalg.qr(rng.standard_normal((p, n)))
    s = np.concatenate([[3.0, 3.0 * (1 - split)], np.linspace(2.9, 0.1, n - 2)])
    X = jnp.asarray((U * s) @ V.T)
    y = jnp.asarray(rng.standard_normal(n))
    model, params, consts = models.from_apply_fn(lambda th, X: X @ th, jnp.zeros(p), loss="half_sum")
    got = sharpness.sharpness(model, params, consts, X, y)
    hess_eigs, ntk_eigs = _dense(model, params, consts, X, y)
    np.testing.assert_allclose(got.ntk.value, ntk_eigs[-1], rtol=1e-8)
    np.testing.assert_allclose(got.hessian.value, hess_eigs[-1], rtol=1e-8)
    np.testing.assert_allclose(got.ntk.value, 9.0, rtol=1e-8)
    assert got.ntk.converged and got.ntk.iterations < n and got.hessian.iterations < n


def test_lanczos_reports_non_convergence():
    """Too few steps on a spread spectrum: not converged, and the residual says how far off."""
    lam = np.linspace(1.0, 2.0, 200)
    A = jnp.asarray(np.diag(lam))
    got = sharpness.lanczos_top(lambda v: A @ v, 200, jnp.float64, max_iter=3)
    assert not got.converged and got.iterations == 3
    assert got.value <= 2.0 and got.residual > 1e-6
    with pytest.raises(ValueError, match="max_iter"):
        sharpness.lanczos_top(lambda v: v, 3, jnp.float64, max_iter=0)


def test_ntk_top_needs_vector_output(tanh_problem):
    _, params, _, X, _ = tanh_problem
    with pytest.raises(ValueError, match=r"shape \(n,\)"):
        sharpness.ntk_top(lambda p, X: jnp.tanh(X @ p["W"].T), params, X)


def test_sharpness_path_along_training(tanh_problem):
    """Snapshots of a GD run (ntkdyn.train): the path equals dense eigenvalues at each snapshot."""
    from ntkdyn.train import TrainPlan, train

    model, params, consts, X, y = tanh_problem
    plan = TrainPlan(20, 10, snapshot_at=(0, 10, 20))
    res = train(model, optimizers.get("gd"), {"eta": 1.0}, 2.0 / N, plan, params, consts, X, y)
    path = sharpness.sharpness_path(model, plan.snapshot_at, res.snapshots, consts, X, y)
    assert path.converged.all()
    for j in range(3):
        p_j = jax.tree.map(lambda a, j=j: a[j], res.snapshots)
        hess_eigs, ntk_eigs = _dense(model, p_j, consts, X, y)
        np.testing.assert_allclose(
            [path.hessian[j], path.kernel[j]], [hess_eigs[-1], 2 / N * ntk_eigs[-1]], rtol=1e-8
        )
    assert path.kernel[2] != path.kernel[0]  # the kernel moved (the comparison is not at one point)
    with pytest.raises(ValueError, match="2 steps"):
        sharpness.sharpness_path(model, (0, 10), res.snapshots, consts, X, y)


# --------------------------------------------------------------------------- stability limits
def _rho(method, beta, h):
    """Spectral radius of the 2x2 companion of one mode, written from the recurrence."""
    if method == "hb":
        A = [[1 + beta - h, -beta], [1.0, 0.0]]
    else:
        A = [[(1 + beta) * (1 - h), -beta * (1 - h)], [1.0, 0.0]]
    return float(np.max(np.abs(np.linalg.eigvals(np.asarray(A)))))


def _edge(rho, lo, hi):
    """Bisection for the step h where rho(h) crosses 1 (rho(lo) < 1 < rho(hi))."""
    assert rho(lo) < 1 < rho(hi)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if rho(mid) < 1 else (lo, mid)
    return 0.5 * (lo + hi)


@pytest.mark.parametrize("method", ["hb", "nag"])
@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 0.9, 0.99])
def test_stability_limit_is_the_companion_edge(method, beta):
    limit = sharpness.stability_limit(method, beta)
    edge = _edge(lambda h: _rho(method, beta, h), 1.0, 5.0)
    np.testing.assert_allclose(limit, edge, rtol=1e-9)
    # stable on the whole interval below (no earlier crossing), unstable above
    assert all(_rho(method, beta, h) < 1 for h in np.linspace(1e-3, limit * (1 - 1e-6), 400))
    # the registry's declaration (optimizers.companion of hb / nag, state (e, J v)) has the same edge
    spec = optimizers.get(method)
    rho_reg = lambda h: float(
        optimizers.spectral_radius(optimizers.companion(spec, {"eta": 1.0, "beta": beta}, h, 1))
    )  # noqa: E731, E501
    np.testing.assert_allclose(_edge(rho_reg, 1.0, 5.0), limit, rtol=1e-9)


def test_gd_limit_and_bad_input():
    np.testing.assert_allclose(
        sharpness.stability_limit("gd"), _edge(lambda h: abs(1 - h), 1.0, 5.0), rtol=1e-12
    )
    with pytest.raises(ValueError, match="allowed: gd, hb, nag"):
        sharpness.stability_limit("adam")
    with pytest.raises(ValueError, match="0 <= beta < 1"):
        sharpness.stability_limit("hb", 1.0)
