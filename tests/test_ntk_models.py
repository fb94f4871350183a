"""Models and neural tangent kernels: closed forms vs Jacobians, infinite-width limit, I/O."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkdyn import models, ntk


def _sphere(n, d, seed=0):
    X = np.random.default_rng(seed).standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _hinf_quadrature(X, N=400_000):
    """Independent H∞: for each pair, the Gaussian w projected on span{x_i, x_j} has a uniform
    angle, so P(w.x_i >= 0, w.x_j >= 0) is the fraction of a fine angle grid in both half-planes."""
    X = np.asarray(X, np.float64)
    phi = (np.arange(N) + 0.5) * (2 * np.pi / N)
    w = np.stack([np.cos(phi), np.sin(phi)])
    n = X.shape[0]
    H = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            u1 = X[i] / np.linalg.norm(X[i])
            r = X[j] - (X[j] @ u1) * u1
            u2 = r / np.linalg.norm(r) if np.linalg.norm(r) > 1e-12 else np.zeros_like(r)
            a = np.array([X[i] @ u1, X[i] @ u2])
            b = np.array([X[j] @ u1, X[j] @ u2])
            p = np.mean((a @ w >= 0) & (b @ w >= 0))
            H[i, j] = (X[i] @ X[j]) * p
    return H


# --------------------------------------------------------------------------- H∞
def test_paper_hinf_vs_quadrature():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 5)) * rng.uniform(0.5, 2.0, (6, 1))  # non-unit norms too
    H = models.paper_hinf(X)
    np.testing.assert_allclose(H, _hinf_quadrature(X), rtol=0, atol=1e-4 * np.max(np.abs(H)))
    np.testing.assert_allclose(H, H.T, atol=1e-15)
    assert np.linalg.eigvalsh(H)[0] > 0  # lambda_0 > 0 for distinct, non-parallel inputs


def test_paper_hinf_special_cases():
    x = np.array([0.6, 0.8, 0.0])
    y = np.array([0.0, 0.0, 1.0])
    X = np.stack([x, -x, 2 * x, y])
    H = models.paper_hinf(X)
    assert H[0, 0] == pytest.approx(0.5)  # |x|^2 / 2
    assert H[0, 1] == pytest.approx(0.0, abs=1e-15)  # antipodal: no common half-space
    assert H[0, 2] == pytest.approx(1.0)  # parallel: x.2x * pi / (2 pi)
    assert H[0, 3] == pytest.approx(0.0)  # orthogonal
    assert np.all(np.isfinite(H))


def test_paper_gram_converges_to_hinf_like_one_over_sqrt_width():
    X = jnp.asarray(_sphere(8, 5))
    Hinf = models.paper_hinf(np.asarray(X))
    widths = [256, 4096, 65536]
    err = []
    for m in widths:
        e = []
        for seed in range(6):
            params, consts = models.paper_init(jax.random.PRNGKey(seed), 5, m, 1.0, jnp.float64)
            H = np.asarray(models.paper_gram(params, consts, X))
            e.append(np.linalg.norm(H - Hinf) / np.linalg.norm(Hinf))
        err.append(np.mean(e))
    slope = np.polyfit(np.log(widths), np.log(err), 1)[0]
    assert -0.65 < slope < -0.35, (err, slope)
    assert err[-1] < 0.02


def test_paper_hinf_independent_of_init_scale():
    X = jnp.asarray(_sphere(5, 4, seed=3))
    p1, c1 = models.paper_init(jax.random.PRNGKey(0), 4, 512, 1.0, jnp.float64)
    p2 = {"W": 7.5 * p1["W"]}
    np.testing.assert_allclose(models.paper_gram(p1, c1, X), models.paper_gram(p2, c1, X), rtol=1e-14)


# --------------------------------------------------------------------------- fast paths vs Jacobians
def test_paper_fast_gram_equals_jacobian_gram():
    X = jnp.asarray(_sphere(9, 6, seed=1))
    params, consts = models.paper_init(jax.random.PRNGKey(1), 6, 300, 1.0, jnp.float64)
    fast = ntk.gram(models.PAPER, params, consts, X)
    slow = ntk.ntk_gram(models.PAPER.apply, params, consts, X, chunk=4)
    assert fast.dtype == slow.dtype == np.float64
    np.testing.assert_allclose(fast, slow, rtol=1e-10, atol=1e-12)


def test_paper_gram_equals_jacobian_product():
    X = jnp.asarray(_sphere(7, 4, seed=2))
    params, consts = models.paper_init(jax.random.PRNGKey(2), 4, 64, 1.0, jnp.float64)
    J = jax.jacobian(lambda W: models.paper_apply({"W": W}, consts, X))(params["W"])
    J = np.asarray(J).reshape(7, -1)
    np.testing.assert_allclose(
        np.asarray(models.paper_gram(params, consts, X)), J @ J.T, rtol=1e-12, atol=1e-14
    )


def test_released_fast_gram_equals_jacobian_gram():
    rng = np.random.default_rng(4)
    X = jnp.asarray(rng.standard_normal((8, 5)))
    params, consts = models.released_init(jax.random.PRNGKey(3), 5, 200, 0.5, jnp.float64)
    assert set(params) == {"W", "b", "a"} and consts == {}
    fast = ntk.gram(models.RELEASED, params, consts, X)
    slow = ntk.ntk_gram(models.RELEASED.apply, params, consts, X, chunk=3)
    np.testing.assert_allclose(fast, slow, rtol=1e-10, atol=1e-12)
    # the default init (std 1/m) is used when init_std is None
    p_def, _ = models.released_init(jax.random.PRNGKey(3), 5, 200, None, jnp.float64)
    p_one, _ = models.released_init(jax.random.PRNGKey(3), 5, 200, 1.0, jnp.float64)
    np.testing.assert_allclose(p_def["W"], p_one["W"] / 200, rtol=1e-14)
    assert np.all(np.abs(np.asarray(p_def["a"])) <= 1.0)


def _mlp(width=16, depth=2, b_std=0.1, seed=0):
    module = models.ntk_mlp(jax.random.PRNGKey(seed), 4, width, depth, 1.4, b_std, jnp.float64)
    return models.from_flax(module, "half_sum", "mlp")


def test_mlp_chunked_equals_unchunked_and_gram_dispatch():
    model, params, consts = _mlp()
    X = jnp.asarray(np.random.default_rng(0).standard_normal((7, 4)))
    H3 = ntk.ntk_gram(model.apply, params, consts, X, chunk=3)
    Hall = ntk.ntk_gram(model.apply, params, consts, X, chunk=1000)
    np.testing.assert_allclose(H3, Hall, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(H3, H3.T, rtol=0, atol=0)
    assert model.fast_gram is None
    np.testing.assert_allclose(ntk.gram(model, params, consts, X, chunk=2), Hall, rtol=1e-13, atol=1e-13)
    # and equals J J^T over all trained leaves
    leaves, treedef = jax.tree.flatten(params)

    def f(flat):
        return model.apply(jax.tree.unflatten(treedef, flat), consts, X)

    J = jax.jacobian(f)(leaves)
    J = np.concatenate([np.asarray(j).reshape(7, -1) for j in J], axis=1)
    np.testing.assert_allclose(Hall, J @ J.T, rtol=1e-12, atol=1e-12)


def test_mlp_forward_is_ntk_parameterisation():
    model, params, consts = _mlp(width=8, depth=2, b_std=0.1)
    X = np.random.default_rng(1).standard_normal((5, 4))
    layers = params["layers"]
    h = X
    for i in range(3):
        K = np.asarray(layers[i]["kernel"][...])
        b = np.asarray(layers[i]["bias"][...])
        h = 1.4 / math.sqrt(K.shape[0]) * h @ K + 0.1 * b
        if i < 2:
            h = np.maximum(h, 0)
    out = np.asarray(model.apply(params, consts, jnp.asarray(X)))
    assert out.shape == (5,)
    np.testing.assert_allclose(out, h[:, 0], rtol=1e-12)


# --------------------------------------------------------------------------- gradients
def test_paper_loss_gradient_vs_finite_differences():
    X = jnp.asarray(_sphere(6, 3, seed=5))
    y = jnp.asarray(np.random.default_rng(5).standard_normal(6))
    params, consts = models.paper_init(jax.random.PRNGKey(5), 3, 20, 1.0, jnp.float64)

    @jax.jit
    def loss(W):
        e = models.paper_apply({"W": W}, consts, X) - y
        return 0.5 * jnp.sum(e * e)

    W = np.asarray(params["W"])
    pre = np.asarray(X) @ W.T
    assert np.min(np.abs(pre)) > 1e-4  # no kink within the finite-difference step
    grad = np.asarray(jax.grad(loss)(jnp.asarray(W)))
    h = 1e-6
    fd = np.empty_like(W)
    for idx in np.ndindex(W.shape):
        dW = np.zeros_like(W)
        dW[idx] = h
        fd[idx] = (float(loss(jnp.asarray(W + dW))) - float(loss(jnp.asarray(W - dW)))) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9)
    # and grad = J^T e with H = J J^T, the paper's dynamics e' = -H e
    e = np.asarray(models.paper_apply(params, consts, X) - y)
    H = np.asarray(models.paper_gram(params, consts, X))
    J = np.asarray(jax.jacobian(lambda W: models.paper_apply({"W": W}, consts, X))(params["W"])).reshape(
        6, -1
    )
    np.testing.assert_allclose(J @ grad.reshape(-1), H @ e, rtol=1e-10, atol=1e-12)


def test_paper_apply_closed_form():
    X = _sphere(4, 3, seed=6)
    params, consts = models.paper_init(jax.random.PRNGKey(6), 3, 10, 1.0, jnp.float64)
    W, a = np.asarray(params["W"]), np.asarray(consts["a"])
    assert set(np.unique(a)) <= {-1.0, 1.0}
    expected = np.maximum(X @ W.T, 0) @ a / math.sqrt(10)
    np.testing.assert_allclose(
        np.asarray(models.paper_apply(params, consts, jnp.asarray(X))), expected, rtol=1e-13
    )


# --------------------------------------------------------------------------- small helpers
def test_kernel_drift_and_spectrum():
    H0 = np.diag([1.0, 2.0, 4.0])
    assert ntk.kernel_drift(H0, H0) == 0.0
    assert ntk.kernel_drift(2 * H0, H0) == pytest.approx(1.0)
    assert ntk.kernel_drift(H0 + np.eye(3), H0) == pytest.approx(math.sqrt(3) / math.sqrt(21))
    s = ntk.spectrum(H0)
    assert s == pytest.approx({"lambda_min": 1.0, "lambda_max": 4.0, "kappa": 4.0})
    Q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))
    assert ntk.spectrum(Q @ H0 @ Q.T)["kappa"] == pytest.approx(4.0)
    assert ntk.spectrum(np.diag([0.0, 1.0]))["kappa"] == math.inf


def test_loss_scale():
    assert models.loss_scale("half_sum", 10) == 1.0
    assert models.loss_scale("mse", 10) == pytest.approx(0.2)
    assert models.loss_scale("half_mse", 10) == pytest.approx(0.1)
    e = np.random.default_rng(0).standard_normal(10)
    assert 0.5 * models.loss_scale("mse", 10) * e @ e == pytest.approx(np.mean(e**2))
    assert 0.5 * models.loss_scale("half_mse", 10) * e @ e == pytest.approx(0.5 * np.mean(e**2))
    with pytest.raises(ValueError, match="allowed: half_sum, mse, half_mse"):
        models.loss_scale("l1", 10)


def test_load_factory():
    assert models.load_factory("ntkdyn.models:ntk_mlp") is models.ntk_mlp
    with pytest.raises(ValueError, match="package.module:factory"):
        models.load_factory("ntkdyn.models.ntk_mlp")


def test_save_load_params_round_trip_paper(tmp_path):
    params, consts = models.paper_init(jax.random.PRNGKey(0), 3, 8, 1.0, jnp.float32)
    path = str(tmp_path / "p.npz")
    models.save_params(path, params, consts)
    assert set(np.load(path).files) == {"W", "a"}
    fresh_p, fresh_c = models.paper_init(jax.random.PRNGKey(1), 3, 8, 1.0, jnp.float32)
    got_p, got_c = models.load_params(path, fresh_p, fresh_c)
    np.testing.assert_array_equal(np.asarray(got_p["W"]), np.asarray(params["W"]))
    np.testing.assert_array_equal(np.asarray(got_c["a"]), np.asarray(consts["a"]))
    assert got_p["W"].dtype == jnp.float32


def test_save_load_params_round_trip_flax(tmp_path):
    model, params, consts = _mlp(seed=0)
    path = str(tmp_path / "mlp.npz")
    models.save_params(path, params, consts)
    _, fresh, fresh_c = _mlp(seed=1)
    got, _ = models.load_params(path, fresh, fresh_c)
    X = jnp.asarray(np.random.default_rng(0).standard_normal((3, 4)))
    np.testing.assert_array_equal(
        np.asarray(model.apply(got, consts, X)), np.asarray(model.apply(params, consts, X))
    )


def test_load_params_errors_name_the_problem(tmp_path):
    params, consts = models.paper_init(jax.random.PRNGKey(0), 3, 8, 1.0, jnp.float32)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, W=np.zeros((4, 3), np.float32), a=np.ones(8, np.float32))
    with pytest.raises(ValueError, match=r"W has shape \(4, 3\), the model needs \(8, 3\)"):
        models.load_params(str(wrong), params, consts)
    missing = tmp_path / "missing.npz"
    np.savez(missing, W=np.zeros((8, 3), np.float32))
    with pytest.raises(ValueError, match=r"lacks constant arrays \['a'\]"):
        models.load_params(str(missing), params, consts)
    with pytest.raises(ValueError, match="file not found"):
        models.load_params(str(tmp_path / "nope.npz"), params, consts)
    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip")
    with pytest.raises(ValueError, match="cannot read"):
        models.load_params(str(junk), params, consts)
