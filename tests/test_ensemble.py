"""Ensembles over initialisation (``predict.gradient_descent_mse_ensemble``) against a Monte-Carlo of
wide networks trained with gradient descent, all seeds in one compiled program (vmap over seeds).

Network: the paper model with k = 2 outputs, f_a(x) = m^{-1/2} sum_r a_ra relu(w_r . x),
w_r ~ N(0, init_std^2 I), a_ra = +-1 (``ntk.paper_kernels``: NNGP = degree-1 arc-cosine kernel times
init_std^2, NTK of W = degree-0 kernel). get="ntk": W trained (a fixed), with diag_reg realised as one
private parameter per training point and output (f(x_i) + sqrt(r) b_i, b(0) = 0); get="nngp": only a
trained (its NTK is the empirical NNGP). Loss L = (c/2)||f - y||^2, GD at step eta.

Statistical error: S = 512 seeds; each mean is checked within 4 standard errors (sample std / sqrt(S))
and each covariance entry (averaged over the 2 outputs) within 4 standard errors of the sample
covariance (std over seeds of the centred products / sqrt(S)); the errors of one seed set are
correlated across steps (the step-0 fluctuation is carried forward).

Finite width: the comparison is with the analytic infinite-width kernels, so the finite-width bias must
stay below the MC error. Measured beforehand (get="ntk", diag_reg = 0, same data): the bias of the mean
grows with t = k eta and shrinks between 1/sqrt(m) and 1/m (max over entries at t = 7.5: 0.013, 0.005,
0.003 at m = 512, 2048, 8192, against an MC standard error of 0.003), and at late times the training
variance collapses (outputs -> y) so that any bias exceeds the MC error. Hence m = 4096 and t <= 4 here,
where the largest |z| is below 4 (printed with -s).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkdyn import ntk, predict

D, N, NT, K_OUT, M, S = 3, 5, 3, 2, 4096, 512
INIT_STD, C, ETA, STEPS = 1.0, 1.0, 0.5, (0, 3, 8)


def _data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N + NT, D))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X[:N], X[N:], rng.standard_normal((N, K_OUT))


@functools.partial(jax.jit, static_argnames=("train_w",))
def _monte_carlo(X, Xt, y, reg, keys, train_w: bool):
    """Outputs on train and test points at the steps ``STEPS`` for every seed: (S, len(STEPS), n, k)."""
    last = max(STEPS)

    def one(key):
        kw, ka = jax.random.split(key)
        W = INIT_STD * jax.random.normal(kw, (M, D))
        a = jnp.where(jax.random.bernoulli(ka, 0.5, (M, K_OUT)), 1.0, -1.0)
        b = jnp.zeros((N, K_OUT))

        def f(W, a, Z):
            return jax.nn.relu(Z @ W.T) @ a / np.sqrt(M)

        def loss(p):
            W_, a_, b_ = p
            return 0.5 * C * jnp.sum((f(W_, a_, X) + jnp.sqrt(reg) * b_ - y) ** 2)

        def step(p, _):
            g = jax.grad(loss)(p)
            W_, a_, b_ = p
            p = (W_ - ETA * g[0], a_, b_ - ETA * g[2]) if train_w else (W_, a_ - ETA * g[1], b_)
            return p, (f(p[0], p[1], X) + jnp.sqrt(reg) * p[2], f(p[0], p[1], Xt))

        p0 = (W, a, b)
        _, (tr, te) = jax.lax.scan(step, p0, None, length=last)
        tr = jnp.concatenate([f(W, a, X)[None], tr])
        te = jnp.concatenate([f(W, a, Xt)[None], te])
        idx = jnp.asarray(STEPS)
        return tr[idx], te[idx]

    return jax.vmap(one)(keys)


def _check_moments(samples, pred: predict.Gaussian, what: str):
    """samples (S, T, n, k); pred.mean (T, n, k), pred.cov (T, n, n)."""
    mean = samples.mean(0)
    se = samples.std(0, ddof=1) / np.sqrt(S)
    z = np.abs(mean - pred.mean) / np.maximum(se, 1e-300)
    assert z.max() < 4.0, f"{what} mean: max |z| = {z.max():.2f}"
    dev = samples - mean
    prods = np.einsum("stia,stja->stij", dev, dev) / K_OUT  # per seed, averaged over the outputs
    cov = prods.mean(0) * S / (S - 1)
    se_c = prods.std(0, ddof=1) / np.sqrt(S)
    zc = np.abs(cov - pred.cov) / np.maximum(se_c, 1e-300)
    zc[0] = np.where(se_c[0] > 0, zc[0], 0.0)
    assert zc.max() < 4.0, f"{what} covariance: max |z| = {zc.max():.2f}"
    return float(z.max()), float(zc.max())


@pytest.mark.parametrize("get,diag_reg", [("ntk", 0.5), ("nngp", 0.0)])
def test_ensemble_moments_match_monte_carlo_of_wide_networks(get, diag_reg):
    X, Xt, y = _data()
    nngp, ntk_k = ntk.paper_kernels(X, init_std=INIT_STD)
    nngp_x, ntk_x = ntk.paper_kernels(Xt, X, init_std=INIT_STD)
    nngp_xx, _ = ntk.paper_kernels(Xt, init_std=INIT_STD)
    G = ntk_k if get == "ntk" else nngp
    reg = diag_reg * float(np.mean(np.diag(G)))
    keys = jax.random.split(jax.random.PRNGKey(7), S)
    tr, te = (np.asarray(a) for a in _monte_carlo(X, Xt, y, reg, keys, train_w=get == "ntk"))
    pred = predict.gradient_descent_mse_ensemble(
        nngp, ntk_k, y, eta=ETA, get=get, loss_scale=C, diag_reg=diag_reg
    )
    steps = np.asarray(STEPS)
    train = pred(step=steps)
    test = pred(
        step=steps,
        nngp_test_train=nngp_x,
        kernel_test_train=ntk_x if get == "ntk" else None,
        nngp_test_test=nngp_xx,
    )
    assert train.mean.shape == (len(STEPS), N, K_OUT) and test.cov.shape == (len(STEPS), NT, NT)
    z_train = _check_moments(tr, train, f"{get} train")
    z_test = _check_moments(te, test, f"{get} test")
    print(f"{get}: max |z| mean, covariance: train {z_train}, test {z_test}")
    # the check has power: the moments move by many standard errors between the first and last step
    se = te.std(0, ddof=1) / np.sqrt(S)
    assert np.max(np.abs(test.mean[-1] - test.mean[0]) / se[-1]) > 20


def test_ensemble_flow_is_the_eta_to_zero_limit_and_matches_nt_algebra_at_zero_reg():
    """gradient_flow_mse_ensemble at t = k eta against the discrete ensemble as eta -> 0 (order 1),
    and prior_noise changes nothing at diag_reg = 0."""
    X, Xt, y = _data()
    nngp, ntk_k = ntk.paper_kernels(X)
    nngp_x, ntk_x = ntk.paper_kernels(Xt, X)
    nngp_xx, _ = ntk.paper_kernels(Xt)
    kw = {"nngp_test_train": nngp_x, "kernel_test_train": ntk_x, "nngp_test_test": nngp_xx}
    t = 4.0
    flow = predict.gradient_flow_mse_ensemble(nngp, ntk_k, y, diag_reg=0.2)(t=t, **kw)
    errs, hs = [], (0.1, 0.05, 0.025)
    for eta in hs:
        d = predict.gradient_descent_mse_ensemble(nngp, ntk_k, y, eta=eta, diag_reg=0.2)(
            step=round(t / eta), **kw
        )
        errs.append(max(np.abs(d.mean - flow.mean).max(), np.abs(d.cov - flow.cov).max()))
    order = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert order == pytest.approx(1.0, abs=0.1), errs
    a = predict.gradient_flow_mse_ensemble(nngp, ntk_k, y, get="nngp")(t=t, **kw)
    b = predict.gradient_flow_mse_ensemble(nngp, ntk_k, y, get="nngp", prior_noise=True)(t=t, **kw)
    np.testing.assert_allclose(a.cov, b.cov, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="step="):
        predict.gradient_flow_mse_ensemble(nngp, ntk_k, y)(step=3)
    with pytest.raises(ValueError, match="get"):
        predict.gradient_flow_mse_ensemble(nngp, ntk_k, y, get="both")
