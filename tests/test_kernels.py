"""Infinite-width MLP kernels: the paper-model mapping, Monte-Carlo convergence, invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from ntkdyn import data, models, ntk


def test_paper_hinf_is_first_layer_part_of_depth1_ntk():
    X, _ = data.sphere(9, 5, "gaussian", 3)
    nngp, theta = ntk.mlp_kernels(X, depth=1, W_std=1.0, b_std=None)
    np.testing.assert_allclose(5 * (theta - nngp), models.paper_hinf(X), atol=1e-7)


def test_relu_expectation_against_quadrature():
    """E[relu(u) relu(v)] and E[relu'(u) relu'(v)] for a 2-D Gaussian, by numerical integration."""
    q1, q2, s = 1.3, 0.7, 0.4
    cov = np.array([[q1, s], [s, q2]])
    inv, det = np.linalg.inv(cov), np.linalg.det(cov)

    def density(u, v):
        z = np.array([u, v])
        return np.exp(-0.5 * z @ inv @ z) / (2 * np.pi * np.sqrt(det))

    e1 = integrate.dblquad(lambda v, u: u * v * density(u, v), 0, 12, 0, 12, epsabs=1e-11)[0]
    e0 = integrate.dblquad(lambda v, u: density(u, v), 0, 12, 0, 12, epsabs=1e-11)[0]
    E, Ed = ntk._relu_expectations(np.array([[s]]), np.array([q1]), np.array([q2]))
    np.testing.assert_allclose(E[0, 0], e1, rtol=1e-7)
    np.testing.assert_allclose(Ed[0, 0], e0, rtol=1e-7)


def test_cross_kernel_is_block_of_joint_kernel():
    X, _ = data.sphere(10, 4, "gaussian", 0)
    full = ntk.mlp_kernels(X, depth=3, W_std=1.2, b_std=0.2)
    part = ntk.mlp_kernels(X[:4], X[4:], depth=3, W_std=1.2, b_std=0.2)
    for f, p in zip(full, part):
        np.testing.assert_allclose(p, f[:4, 4:], rtol=1e-12)
        assert np.min(np.linalg.eigvalsh(f)) > -1e-12  # positive semi-definite


@pytest.mark.parametrize("depth, b_std, widths", [(1, 0.0, [256, 2048, 16384]), (2, 0.2, [128, 512, 2048])])
def test_empirical_mlp_ntk_converges_like_inverse_sqrt_width(depth, b_std, widths):
    X, _ = data.sphere(6, 4, "gaussian", 1)
    X = 1.5 * X
    _, theta = ntk.mlp_kernels(X, depth=depth, W_std=1.4, b_std=b_std)
    errors = []
    for width in widths:
        errs = []
        for seed in range(4):
            module = models.ntk_mlp(jax.random.PRNGKey(seed), 4, width, depth, 1.4, b_std, jnp.float64)
            model, params, consts = models.from_flax(module)
            H = ntk.ntk_gram(model.apply, params, consts, jnp.asarray(X))
            errs.append(np.linalg.norm(H - theta) / np.linalg.norm(theta))
        errors.append(np.mean(errs))
    slope = np.polyfit(np.log(widths), np.log(errors), 1)[0]
    assert -0.75 < slope < -0.3, (errors, slope)
    assert errors[-1] < 0.08
