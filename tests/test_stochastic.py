"""Mini-batch theory (ntkdyn.stochastic) against independent references.

References: Monte-Carlo of the batch selector; a hand-written numpy loop of mini-batch SGD / heavy
ball in *parameter space* on a linear model f(theta) = Phi theta (no kernel, no eigenbasis, no
ntkdyn code); the exact average over every batch, enumerated; grid searches of a dense operator
assembled in data coordinates; for Ma-Bassily-Belkin's bound, brute-force minimisation over eta of its
factor computed from per-sample Hessians in parameter space, and Monte-Carlo of E[H_B^2]. No test uses
K = kappa I, where every one of these references collapses onto the same closed form.
"""

import math

import numpy as np
import pytest

from ntkdyn import optimizers, stochastic, theory


def _linear_problem(n=8, p=24, seed=1):
    rng = np.random.default_rng(seed)
    Phi = rng.standard_normal((n, p)) / math.sqrt(p)
    y = rng.standard_normal(n)
    return Phi, y


def _param_space_runs(Phi, y, eta, beta, b, steps, runs, sampling, seed, c=1.0, test=None):
    """Mini-batch HB (beta = 0: SGD) on L = (c/2)||Phi theta - y||^2 from theta = 0, written out
    directly: batch indices drawn per run, gradient c (n/b) Phi_B^T (Phi_B theta - y_B),
    v <- beta v + g, theta <- theta - eta v. Returns the full-set losses, (runs, steps + 1); with
    ``test`` = (Phi_t, y_t) also the held-out losses (1/2)||Phi_t theta - y_t||^2."""
    rng = np.random.default_rng(seed)
    n, p = Phi.shape
    theta = np.zeros((runs, p))
    v = np.zeros((runs, p))
    losses = [0.5 * c * np.sum((theta @ Phi.T - y) ** 2, axis=1)]
    held = [] if test is None else [0.5 * np.sum((theta @ test[0].T - test[1]) ** 2, axis=1)]
    order, pos = None, n  # shuffle: current permutation per run and position in it
    for _ in range(steps):
        if sampling == "replacement":
            idx = rng.integers(0, n, (runs, b))
        else:
            if pos + b > n:  # drop-last: a fresh permutation when fewer than b indices are left
                order = np.argsort(rng.random((runs, n)), axis=1)
                pos = 0
            idx = order[:, pos : pos + b]
            pos += b
        PB = Phi[idx]  # (runs, b, p)
        r = np.einsum("rbp,rp->rb", PB, theta) - y[idx]
        g = c * (n / b) * np.einsum("rbp,rb->rp", PB, r)
        v = beta * v + g
        theta = theta - eta * v
        losses.append(0.5 * c * np.sum((theta @ Phi.T - y) ** 2, axis=1))
        if test is not None:
            held.append(0.5 * np.sum((theta @ test[0].T - test[1]) ** 2, axis=1))
    if test is not None:
        return np.stack(losses, axis=1), np.stack(held, axis=1)
    return np.stack(losses, axis=1)


def test_batch_moment_matches_monte_carlo():
    rng = np.random.default_rng(0)
    n, b, N = 5, 3, 200_000
    A = rng.standard_normal((n, n))
    M = A @ A.T
    idx = rng.integers(0, n, (N, b))
    counts = np.zeros((N, n))
    np.add.at(counts, (np.repeat(np.arange(N), b), idx.ravel()), 1.0)
    s = (n / b) * counts
    samples = s[:, :, None] * s[:, None, :] * M  # (S M S)_ij = s_i M_ij s_j
    mc, se = samples.mean(0), samples.std(0) / math.sqrt(N)
    got = stochastic.batch_moment(M, b)
    assert np.all(np.abs(got - mc) < 5 * se + 1e-12)
    # the identity differs from the naive E[S] M E[S] = M by more than the Monte-Carlo error
    assert np.max(np.abs(M - mc) / se) > 20


@pytest.mark.parametrize("name,beta,eta", [("gd", 0.0, 0.2), ("hb", 0.6, 0.08)])
def test_exact_second_moment_vs_parameter_space_monte_carlo(name, beta, eta):
    Phi, y = _linear_problem()
    K = Phi @ Phi.T
    lam, V = theory.eigen(K)
    e0 = -y
    spec = optimizers.get(name)
    hyper = {"eta": eta} if name == "gd" else {"eta": eta, "beta": beta}
    steps, b, R = 60, 2, 20_000
    exact = stochastic.second_moment_loss(spec, hyper, lam, V, V.T @ e0, 1.0, steps, b)
    runs = _param_space_runs(Phi, y, eta, beta, b, steps, R, "replacement", seed=3)
    mean, se = runs.mean(0), runs.std(0) / math.sqrt(R)
    assert exact[0] == pytest.approx(0.5 * np.sum(y**2), rel=1e-12)
    assert np.all(np.abs(exact - mean) <= 5 * se + 1e-9 * exact), np.max(np.abs(exact - mean) / (se + 1e-300))
    full = theory.modal_loss(theory.discrete_modes(spec, hyper, lam, V.T @ e0, steps), 1.0)
    assert np.max((mean - full) / (se + 1e-300)) > 10  # the noise term matters here: the test can fail


@pytest.mark.parametrize("name,beta,sampling", [("gd", 0.0, "replacement"), ("hb", 0.5, "shuffle")])
def test_held_out_mean_loss_vs_parameter_space_monte_carlo(name, beta, sampling):
    """Mean held-out loss of mini-batch runs on a linear model f = Phi theta (exact: K = Phi Phi^T,
    K_x = Phi_t Phi^T): the exact second-moment prediction (replacement) and the sampled kernel
    recurrence (shuffle) against parameter-space runs on new points Phi_t, within 5 standard errors;
    p < n, so K is singular and the pseudo-inverse path is used."""
    rng = np.random.default_rng(8)
    n, p, nt = 8, 6, 5
    Phi, Phi_t = rng.standard_normal((n, p)) / math.sqrt(p), rng.standard_normal((nt, p)) / math.sqrt(p)
    y, y_t = rng.standard_normal(n), rng.standard_normal(nt)
    lam, V = theory.eigen(Phi @ Phi.T)
    null = theory.null_modes(lam, 1e-10)
    assert null.sum() == n - p
    held = stochastic.HeldOutMap(theory.held_out_map(Phi_t @ Phi.T, lam, V, null), -y_t, 1.0)
    spec = optimizers.get(name)
    hyper = {"eta": 0.2} if name == "gd" else {"eta": 0.1, "beta": beta}
    steps, b, R = 40, 3, 20_000
    _, ref = _param_space_runs(Phi, y, hyper["eta"], beta, b, steps, R, sampling, seed=4, test=(Phi_t, y_t))
    if sampling == "replacement":
        pred = stochastic.second_moment_loss(spec, hyper, lam, V, V.T @ -y, 1.0, steps, b, held_out=held)[1]
        se = ref.std(0) / math.sqrt(R)
    else:
        sims = stochastic.simulate_losses(
            spec, hyper, Phi @ Phi.T, -y, 1.0, steps, b, sampling, R, seed=6, held_out=held, V=V
        )[1]
        pred, se = sims.mean(0), np.sqrt(sims.var(0) / R + ref.var(0) / R)
    assert pred[0] == pytest.approx(0.5 * y_t @ y_t, rel=1e-12)
    assert np.all(np.abs(pred - ref.mean(0)) <= 5 * se + 1e-12), np.max(np.abs(pred - ref.mean(0)) / se)
    assert abs(ref.mean(0)[-1] / pred[0] - 1) > 0.05  # the held-out loss moved: the test can fail


@pytest.mark.parametrize("sampling", ["replacement", "shuffle"])
def test_simulated_recurrence_vs_parameter_space_loop(sampling):
    Phi, y = _linear_problem(n=8)
    K = Phi @ Phi.T
    spec = optimizers.get("hb")
    hyper = {"eta": 0.3, "beta": 0.5}
    steps, b, R = 40, 3, 6000  # n = 8, b = 3: shuffle drops 2 indices per epoch
    sim = stochastic.simulate_losses(spec, hyper, K, -y, 1.0, steps, b, sampling, R, seed=5)
    ref = _param_space_runs(Phi, y, 0.3, 0.5, b, steps, R, sampling, seed=7)
    se = np.sqrt(sim.var(0) / R + ref.var(0) / R)
    assert np.all(np.abs(sim.mean(0) - ref.mean(0)) <= 5 * se + 1e-12)


def test_shuffle_differs_from_replacement():
    # n = b: every shuffle step is the full batch (S = I), so shuffle is deterministic full-batch GD,
    # while replacement with b = n is still noisy
    Phi, y = _linear_problem(n=6)
    K = Phi @ Phi.T
    lam, V = theory.eigen(K)
    spec, hyper = optimizers.get("gd"), {"eta": 0.5}
    sim = stochastic.simulate_losses(spec, hyper, K, -y, 1.0, 30, 6, "shuffle", 50, seed=0)
    full = theory.modal_loss(theory.discrete_modes(spec, hyper, lam, V.T @ -y, 30), 1.0)
    np.testing.assert_allclose(sim, np.broadcast_to(full, sim.shape), rtol=1e-10)
    rep = stochastic.second_moment_loss(spec, hyper, lam, V, V.T @ -y, 1.0, 30, 6)
    assert rep[-1] > 1.2 * full[-1]


@pytest.mark.parametrize("b", [1, 2, 3])
def test_rate_against_every_batch_enumerated_on_a_random_spectrum(random_spd, rng, b):
    """The mini-batch GD error update e' = (I - eta K S_B) e, S_B = (n/b) diag(counts of B), averaged
    exactly over all n^b equally likely index tuples B (no ``batch_moment``, no eigenbasis): the second
    moment W' = E_B[(I - eta K S_B) W (I - eta K S_B)^T] as a dense operator on n x n matrices. Its
    spectral radius is the loss factor ``second_moment_rate`` reports, on a random spread spectrum at
    eta below and near the best step."""
    import itertools

    n = 5
    K = random_spd(rng, n, 12.0, 1.0)
    lam, V = theory.eigen(K)
    Ss = [
        (n / b) * np.diag(np.bincount(B, minlength=n).astype(float))
        for B in itertools.product(range(n), repeat=b)
    ]
    for eta in (0.2, 0.6):
        G = [np.eye(n) - eta * K @ S for S in Ss]
        cols = [
            (sum(g @ E.reshape(n, n) @ g.T for g in G) / len(G)).ravel() for E in np.eye(n * n)
        ]  # fmt: skip
        want = np.max(np.abs(np.linalg.eigvals(np.stack(cols, 1))))
        got = stochastic.second_moment_rate(optimizers.get("gd"), {"eta": eta}, lam, V, b)
        assert got == pytest.approx(want, rel=1e-9)


def test_rate_matches_long_run_decay_and_full_batch_limit(random_spd, rng):
    n = 16  # (p+1)^2 n^2 = 1024 > 400: the ARPACK path
    K = random_spd(rng, n, 20.0, 1.0)
    lam, V = theory.eigen(K)
    spec, hyper = optimizers.get("hb"), {"eta": 0.8, "beta": 0.5}
    rate = stochastic.second_moment_rate(spec, hyper, lam, V, 4)
    loss = stochastic.second_moment_loss(spec, hyper, lam, V, V.T @ rng.standard_normal(n), 1.0, 600, 4)
    slope = (math.log(loss[600]) - math.log(loss[400])) / 200
    assert math.exp(slope) == pytest.approx(rate, rel=2e-3)
    full = stochastic.second_moment_rate(spec, hyper, lam, V, 10**12)
    assert full == pytest.approx(theory.predicted_linear_rate(spec, hyper, lam), rel=1e-8)
    assert rate > full * 1.001


def test_first_order_rate_vs_dense_operator_in_data_coordinates(random_spd, rng):
    # n = 24: n^2 = 576 > 400, the secular-equation path; reference: the operator
    # M -> (I - eta K) M (I - eta K) + eta^2 K (E[S M S] - M) K assembled densely in data coordinates
    n, b = 24, 3
    K = random_spd(rng, n, 30.0, 2.0)
    lam, V = theory.eigen(K)
    for eta in (0.05, 0.3):
        G = np.eye(n) - eta * K
        cols = []
        for E in np.eye(n * n):
            M = E.reshape(n, n)
            cols.append((G @ M @ G + eta**2 * K @ (stochastic.batch_moment(M, b) - M) @ K).ravel())
        want = np.max(np.abs(np.linalg.eigvals(np.stack(cols, 1))))
        got = stochastic.second_moment_rate(optimizers.get("gd"), {"eta": eta}, lam, V, b)
        assert got == pytest.approx(want, rel=1e-9)


def _dense_rate(K, eta, b):
    """Spectral radius of M -> (I - eta K) M (I - eta K) + eta^2 K (E[S M S] - M) K, assembled column by
    column in data coordinates (no eigenbasis); E[S M S] from ``batch_moment`` (tested against
    Monte-Carlo above)."""
    n = K.shape[0]
    G = np.eye(n) - eta * K
    cols = []
    for E in np.eye(n * n):
        M = E.reshape(n, n)
        cols.append((G @ M @ G + eta**2 * K @ (stochastic.batch_moment(M, b) - M) @ K).ravel())
    return float(np.max(np.abs(np.linalg.eigvals(np.stack(cols, 1)))))


@pytest.mark.parametrize("b", [1, 3, 20])
def test_best_step_size_against_brute_force_on_a_random_spectrum(random_spd, rng, b):
    """eta*(b) against a grid search of the dense data-coordinate operator (``_dense_rate``) on a random
    kernel with spread eigenvalues (not K = kappa I): the grid's best point is within one grid step
    and its rate is not below the reported optimum."""
    n = 5
    K = random_spd(rng, n, 15.0, 1.0)
    lam, V = theory.eigen(K)
    eta, rate = stochastic.best_step_size(optimizers.get("gd"), {}, lam, V, b, grid=40)
    etas = np.linspace(0.02, 2.2, 400)
    rates_ = np.array([_dense_rate(K, e, b) for e in etas])
    i = int(np.argmin(rates_))
    assert abs(eta - etas[i]) <= etas[1] - etas[0]
    assert rate <= rates_[i] + 1e-9 and rate == pytest.approx(_dense_rate(K, eta, b), rel=1e-8)


def _per_sample_problem(n=8, p=24, seed=7, c=0.7):
    """A linear model's per-sample Hessians in parameter space, from scratch: L = (c/2)||Phi theta - y||^2
    = (1/n) sum_i l_i, l_i = (n c / 2)(phi_i theta - y_i)^2, H_i = n c phi_i phi_i^T, H = c Phi^T Phi;
    an orthonormal basis U (p x n) of the row space of Phi, where w - w* lives."""
    rng = np.random.default_rng(seed)
    Phi = rng.standard_normal((n, p)) * rng.uniform(0.3, 1.5, (n, 1)) / math.sqrt(p)
    Hs = np.stack([n * c * np.outer(f, f) for f in Phi])
    U = np.linalg.svd(Phi, full_matrices=False)[2].T
    return Phi, Hs, U, c


def test_mbb_quadratic_step_minimises_its_own_bound_by_brute_force():
    """The bound's factor max_v v^T (I - 2 eta H + eta^2 [(beta/b) H + (1 - 1/b) H^2]) v / ||v||^2 over the
    row space, from numpy's eigvalsh in parameter space, minimised over eta on a fine grid then by
    scipy's bounded search: its minimiser is ``quadratic_step_size`` and its value
    ``quadratic_bound_rate``, below and above m*; the convex-smooth step gives a larger bound."""
    from scipy.optimize import minimize_scalar

    Phi, Hs, U, c = _per_sample_problem()
    n = Phi.shape[0]
    H = Hs.mean(axis=0)
    beta = max(float(np.trace(Hi)) for Hi in Hs)  # H_i = n c phi phi^T: its one eigenvalue
    mbb = stochastic.mbb_constants(c * Phi @ Phi.T)
    assert mbb.beta == pytest.approx(beta, rel=1e-12)
    Hr = U.T @ H @ U

    def bound(eta, b):
        M = np.eye(n) - 2 * eta * Hr + eta**2 * ((beta / b) * Hr + (1 - 1 / b) * Hr @ Hr)
        return float(np.linalg.eigvalsh(M)[-1])

    m_star = mbb.quadratic_critical_batch_size
    assert 2 < m_star < 200
    for b in (1.0, 2.0, 0.5 * m_star, 2.0 * m_star, 10.0 * m_star):
        grid = np.linspace(1e-4, 2.5 / mbb.lam_1, 4001)
        vals = np.array([bound(e, b) for e in grid])
        i = int(np.argmin(vals))
        res = minimize_scalar(
            lambda e, b=b: bound(e, b), bounds=(grid[max(i - 1, 0)], grid[i + 1]), method="bounded",
            options={"xatol": 1e-12},
        )  # fmt: skip
        want = float(mbb.quadratic_step_size(b))
        assert res.x == pytest.approx(want, rel=1e-5)
        assert float(mbb.quadratic_bound_rate(b)) == pytest.approx(bound(want, b), rel=1e-10, abs=1e-13)
        assert res.fun >= bound(want, b) - 1e-12
        if b > 1:  # at b = 1 both steps are 1 / beta
            assert bound(float(mbb.smooth_step_size(b)), b) > bound(want, b)
            assert float(mbb.smooth_step_size(b)) < want


def test_mbb_bound_holds_for_the_exact_second_moment(rng):
    """What the bound rests on, checked independently: E[H_B^2] for b i.i.d. samples by Monte-Carlo in
    parameter space (200k batches, through their index counts) equals (1/b) E[H_i^2] + (1 - 1/b) H^2
    within its error, and stays
    below (beta/b) H + (1 - 1/b) H^2; the exact mean-loss rate (``second_moment_rate``) at the
    quadratic step is below the bound's factor there, and the exact best eta(b) is reported beside both."""
    Phi, Hs, U, c = _per_sample_problem()
    n = Phi.shape[0]
    H = Hs.mean(axis=0)
    beta = max(float(np.trace(Hi)) for Hi in Hs)
    b, N = 3, 200_000
    idx = rng.integers(0, n, (N, b))
    w = (idx[:, :, None] == np.arange(n)).sum(axis=1) / b  # H_B = sum_i w_i H_i, w = counts / b
    mc = np.einsum("ij,iab,jbc->ac", w.T @ w / N, Hs, Hs)  # E[H_B^2] = sum_ij E[w_i w_j] H_i H_j
    exact = (1 / b) * np.mean([Hi @ Hi for Hi in Hs], axis=0) + (1 - 1 / b) * H @ H
    assert np.max(np.abs(U.T @ (mc - exact) @ U)) < 0.02 * np.max(np.abs(U.T @ exact @ U))
    gap = U.T @ ((beta / b) * H + (1 - 1 / b) * H @ H - exact) @ U
    assert np.linalg.eigvalsh(0.5 * (gap + gap.T))[0] > -1e-12

    K = c * Phi @ Phi.T
    lam, V = theory.eigen(K)
    mbb = stochastic.mbb_constants(K)
    gd = optimizers.get("gd")
    for bb in (1, 4, int(3 * mbb.quadratic_critical_batch_size)):
        eta_q = float(mbb.quadratic_step_size(bb))
        exact_rate = stochastic.second_moment_rate(gd, {"eta": eta_q}, lam, V, bb)
        assert exact_rate <= float(mbb.quadratic_bound_rate(bb)) + 1e-12
        eta_best, rate_best = stochastic.best_step_size(gd, {}, lam, V, bb, grid=30)
        assert rate_best <= exact_rate + 1e-9
        # the bound's steps are conservative here: both below the exact optimum of the mean loss
        assert float(mbb.smooth_step_size(bb)) <= eta_q < eta_best  # equal at b = 1 (both 1 / beta)


def test_check_batch_errors():
    with pytest.raises(ValueError, match="sampling 'cyclic'"):
        stochastic.check_batch(8, 2, "cyclic")
    with pytest.raises(ValueError, match="batch_size 9"):
        stochastic.check_batch(8, 9, "shuffle")


def test_mean_band_covers_sampled_means():
    # the 95% band of the mean of 32 runs covers the mean of 32 fresh parameter-space runs at
    # (nearly) every step, and is narrower than the spread of single runs
    Phi, y = _linear_problem(n=8)
    K = Phi @ Phi.T
    lam, V = theory.eigen(K)
    spec, hyper = optimizers.get("gd"), {"eta": 0.4}
    exact = stochastic.second_moment_loss(spec, hyper, lam, V, V.T @ -y, 1.0, 50, 2)
    sims = stochastic.simulate_losses(spec, hyper, K, -y, 1.0, 50, 2, "replacement", 4000, seed=1)
    band = stochastic.mean_band(exact, sims, 32)
    inside = []
    for rep in range(20):
        runs = _param_space_runs(Phi, y, 0.4, 0.0, 2, 50, 32, "replacement", seed=100 + rep)
        m = runs.mean(0)[1:]
        inside.append(np.mean((m >= band.lo[1:]) & (m <= band.hi[1:])))
    assert 0.85 < np.mean(inside) <= 1.0
    assert np.all(band.hi[1:] - band.lo[1:] < 2 * 1.96 * band.sd[1:] / 5)


# ------------------------------------------------------------------- mini-batch training (ntkdyn.train)
def _linear_model():
    from ntkdyn import models

    return models.Model("linear", lambda th, c, X: X @ th["w"], "half_sum")


def test_batch_indices_laws():
    import jax

    from ntkdyn.train import batch_indices

    key = jax.random.PRNGKey(4)
    n, b = 10, 3  # shuffle: 3 batches an epoch, 1 index skipped

    def draw(sampling, steps):
        return np.asarray(jax.vmap(lambda k: batch_indices(key, k, n, b, sampling))(np.arange(steps)))

    shuffle = draw("shuffle", 6)
    assert len(set(shuffle[:3].ravel().tolist())) == 9 and len(set(shuffle[3:].ravel().tolist())) == 9
    assert not np.array_equal(shuffle[:3], shuffle[3:])  # a fresh permutation each epoch
    draws = draw("replacement", 2000)
    freq = np.bincount(draws.ravel(), minlength=n) / draws.size
    assert np.all(np.abs(freq - 0.1) < 5 * math.sqrt(0.1 * 0.9 / draws.size))
    assert any(len(set(row.tolist())) < b for row in draws)  # with replacement: repeats occur


@pytest.mark.parametrize("sampling", ["replacement", "shuffle"])
def test_minibatch_training_equals_a_numpy_loop_on_the_same_batches(sampling):
    import jax
    import jax.numpy as jnp

    from ntkdyn.train import TrainPlan, batch_indices, train

    Phi, y = _linear_problem(n=7, p=12)
    key = jax.random.PRNGKey(11)
    steps, b, eta, beta = 25, 3, 0.05, 0.5
    res = train(
        _linear_model(),
        optimizers.get("hb"),
        {"eta": eta, "beta": beta},
        1.0,
        TrainPlan(steps, 1, batch_size=b, sampling=sampling),
        {"w": jnp.zeros(12, jnp.float64)},
        {},
        jnp.asarray(Phi),
        jnp.asarray(y),
        key=key,
    )
    batches = np.asarray(jax.vmap(lambda k: batch_indices(key, k, 7, b, sampling))(np.arange(steps)))

    def loop(batches):  # the update written out, on the given batches (None: full batch)
        theta, v, out = np.zeros(12), np.zeros(12), [0.5 * y @ y]
        for idx in batches:
            idx = np.arange(7) if idx is None else idx
            g = (7 / len(idx)) * Phi[idx].T @ (Phi[idx] @ theta - y[idx])
            v = beta * v + g
            theta = theta - eta * v
            out.append(0.5 * np.sum((Phi @ theta - y) ** 2))
        return np.array(out)

    want = loop(batches)
    np.testing.assert_allclose(res.loss, want, rtol=1e-10)
    assert np.max(np.abs(loop([None] * steps) / want - 1)) > 1e-3  # the batches matter: the test can fail


def test_minibatch_sparse_recording_and_divergence_vs_a_numpy_loop():
    """Full-set L, e and ||g||^2 are evaluated only at record and error steps (the other steps see the
    batch estimate L_B): recorded values, errors at off-grid steps and the gradient norm must still
    equal a numpy loop on the same batches; a step size that blows up is reported diverged at the
    first step whose full loss (record step) or batch estimate (other steps) exceeds 1e6 L_0."""
    import jax
    import jax.numpy as jnp

    from ntkdyn.train import TrainPlan, batch_indices, train

    Phi, y = _linear_problem(n=7, p=12)
    key = jax.random.PRNGKey(3)
    steps, b, k = 24, 2, 4
    batches = np.asarray(jax.vmap(lambda s: batch_indices(key, s, 7, b, "replacement"))(np.arange(steps)))

    def loop(eta):  # SGD written out: every step's full loss, batch estimate, error and ||g||^2
        theta, out = np.zeros(12), []
        for idx in [*batches, None]:
            e = Phi @ theta - y
            g_full = Phi.T @ e
            out.append(
                (
                    0.5 * e @ e,
                    0.5 * (7 / b) * np.sum(e[idx] ** 2) if idx is not None else None,
                    e,
                    g_full @ g_full,
                )
            )
            if idx is not None:
                theta = theta - eta * (7 / b) * Phi[idx].T @ e[idx]
        return out

    def run(eta):
        return train(
            _linear_model(),
            optimizers.get("gd"),
            {"eta": eta},
            1.0,
            TrainPlan(steps, k, error_at=(6, 24), batch_size=b),
            {"w": jnp.zeros(12, jnp.float64)},
            {},
            jnp.asarray(Phi),
            jnp.asarray(y),
            key=key,
        )

    want, res = loop(0.1), run(0.1)
    assert res.diverged_at is None
    np.testing.assert_array_equal(res.step, np.arange(0, steps + 1, k))
    np.testing.assert_allclose(res.loss, [want[s][0] for s in res.step], rtol=1e-10)
    np.testing.assert_allclose(res.grad_norm_sq, [want[s][3] for s in res.step], rtol=1e-10)
    np.testing.assert_allclose(res.errors, [want[6][2], want[24][2]], rtol=1e-10, atol=1e-12)

    for eta in (2.0, 3.0):  # 7/b * ||Phi_B||^2 eta >> 2: the batch steps blow up
        want, res = loop(eta), run(eta)
        limit = 1e6 * want[0][0]
        seen = [w[0] if s % k == 0 else w[1] for s, w in enumerate(want[:steps])]
        first = next(s for s, v in enumerate(seen) if not np.isfinite(v) or v > limit)
        assert res.diverged_at == first
    assert first % k == 0 and run(2.0).diverged_at % k != 0  # caught at a record step and off the grid
    assert np.all(np.isnan(res.loss[res.step > first])) and np.all(np.isfinite(res.loss[res.step <= first]))


def test_minibatch_training_mean_is_the_exact_second_moment():
    import jax
    import jax.numpy as jnp

    from ntkdyn.train import TrainPlan, train_batch

    Phi, y = _linear_problem(n=8, p=16)
    R, steps, b = 512, 30, 2
    hyper = {"eta": 0.2}
    plan = TrainPlan(steps, 1, batch_size=b, sampling="replacement")
    w0 = {"w": jnp.zeros(16, jnp.float64)}
    res = train_batch(
        _linear_model(),
        optimizers.get("gd"),
        [hyper] * R,
        1.0,
        plan,
        [w0] * R,
        [{}] * R,
        [jnp.asarray(Phi)] * R,
        [jnp.asarray(y)] * R,
        keys=[jax.random.fold_in(jax.random.PRNGKey(0), i) for i in range(R)],
    )
    runs = np.stack([r.loss for r in res])
    lam, V = theory.eigen(Phi @ Phi.T)
    exact = stochastic.second_moment_loss(optimizers.get("gd"), hyper, lam, V, V.T @ -y, 1.0, steps, b)
    se = runs.std(0) / math.sqrt(R)
    assert np.all(np.abs(runs.mean(0) - exact) <= 5 * se + 1e-9 * exact)


def test_pipeline_minibatch_run_with_linearised_check():
    """One config end to end: 16 batch orders of HB trained as one program. The linearised network's
    runs equal the kernel-regime recurrence replayed in output space on the batches each order drew."""
    import jax

    from ntkdyn import config, pipeline
    from ntkdyn.train import batch_indices

    raw = {
        "name": "t",
        "dtype": "float64",
        "data": {"n": 10, "d": 6, "test": {"n": 4}},
        "model": {"width": 128},
        "train": {"steps": 40, "record_every": 5, "batch_size": 3, "sampling_runs": 16, "kernel_at": [0]},
        "theory": {"diffrax": False, "linearized": "always", "mc_runs": 2000},
        "optimizers": [{"name": "hb", "eta": 0.1, "beta": 0.5}],
    }
    cfg = config.from_dict(raw)
    setup = pipeline.prepare(cfg)
    arrays, m = pipeline.run_optimizer(cfg, setup, cfg.optimizers[0])
    assert arrays["loss_runs"].shape == (16, 9) and arrays["loss_linearized_runs"].shape == (16, 9)
    np.testing.assert_allclose(arrays["loss"], arrays["loss_runs"].mean(0))
    for i, key in enumerate(pipeline.sampling_keys(cfg)[:3]):  # replay: e <- e - eta v, v <- beta v + K S e
        draw = jax.vmap(lambda k, key=key: batch_indices(key, k, 10, 3, "replacement"))
        batches = np.asarray(draw(np.arange(40)))
        e, v, want = setup.e0.copy(), np.zeros(10), [0.5 * setup.e0 @ setup.e0]
        for idx in batches:
            v = 0.5 * v + setup.K @ (np.bincount(idx, minlength=10) * (10 / 3) * e)
            e = e - 0.1 * v
            want.append(0.5 * e @ e)
        np.testing.assert_allclose(arrays["loss_linearized_runs"][i], np.array(want)[::5], rtol=1e-9)
    st = m["stochastic"]
    assert st["mean"] == "second_moment" and 0 <= st["linearized"]["inside_band"] <= 1
    assert np.all(
        arrays["loss_discrete"][1:] > arrays["loss_full_batch"][1:]
    )  # E[L] above the full-batch loss
    assert 0 < st["linear_rate"] < 1 and m["ode"] is None and "mini-batch" in m["note"]
    assert m["predicted"]["linear_rate"] == st["linear_rate"] > m["predicted"]["full_batch_linear_rate"]
    # held-out points: the predicted mean held-out loss (HeldOutMap through the second moment) starts at
    # the network's held-out loss and is reported against the trained mean (MC-tested above)
    np.testing.assert_allclose(arrays["test_loss_discrete"][0], arrays["test_loss"][0], rtol=1e-12)
    assert arrays["test_loss_discrete"].shape == (9,) and np.all(np.isfinite(arrays["test_loss_discrete"]))
    assert "discrete" in m["test"]["deviation"] and "mean held-out loss" in m["test"]["note"]
