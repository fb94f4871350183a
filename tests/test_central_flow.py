"""Central flows (ntkdyn.central_flow) against closed forms and against gradient descent / heavy ball.

References, derived apart from the module:
* the toy L(x, y) = -g y + 1/2 (s0 + y) x^2 (sharpness S = s0 + y along x at x = 0, rising under the
  gradient flow at rate g): GD and HB have an exact period-2 orbit x_k = +-sqrt(2g), y = 2(1 + beta)/eta - s0
  (y is stationary iff E[x^2] = 2g; x_{k+1} = -x_k iff eta S = 2(1 + beta)), checked by a hand-written
  loop; the flow must stop on it with sigma^2 = 2g and predict the orbit's mean loss;
* a dense ``numpy.linalg.eigh`` of the materialised Hessian (the flow's sharpness and sigma^2 formula);
* a hand-written GD loop on a tanh MLP (before the edge: the flow is the gradient flow, GD's gap to it
  is O(eta); at the edge: measured agreement, with the thresholds the probe's figures justify).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from ntkdyn.central_flow import CentralFlow, central_flow

G, S0_GAP = 0.05, 1.0


def _toy_loss(p, s0, g):
    return -g * p[1] + 0.5 * (s0 + p[1]) * p[0] ** 2


def _hb_loop(grad, w, eta, beta, steps, v=None):
    """Hand-written heavy ball (GD at beta = 0): v <- beta v + grad(w), w <- w - eta v."""
    v = np.zeros_like(w) if v is None else v
    out = [w]
    for _ in range(steps):
        v = beta * v + grad(w)
        w = w - eta * v
        out.append(w)
    return np.array(out)


@pytest.mark.parametrize("eta,beta", [(0.1, 0.0), (0.15, 0.5), (0.19, 0.9)])
def test_toy_flow_stops_on_the_period_two_orbit(eta, beta):
    thr = 2 * (1 + beta) / eta
    s0 = thr - S0_GAP
    y_star = thr - s0
    # the orbit, by a hand-written loop started on it (HB's velocity as on the orbit: v = -2 x / eta)
    x0 = math.sqrt(2 * G)

    def grad(w):
        return np.array([(s0 + w[1]) * w[0], -G + 0.5 * w[0] ** 2])

    orbit = _hb_loop(grad, np.array([x0, y_star]), eta, beta, 40, v=np.array([-2 * x0 / eta, 0.0]))
    np.testing.assert_allclose(orbit[:, 0], x0 * (-1.0) ** np.arange(41), rtol=1e-9)
    np.testing.assert_allclose(orbit[:, 1], y_star, rtol=1e-9)
    orbit_loss = np.mean([float(_toy_loss(w, s0, G)) for w in orbit[:40]])
    # the flow from below the edge: gradient flow until S = thr, then pinned there
    steps = int(round(1.5 * S0_GAP / G * (1 - beta) / eta))  # flow time 1.5 * (time to reach the edge)
    cf = central_flow(
        _toy_loss, jnp.array([0.2, 0.0]), eta, steps, s0, G, beta=beta, record_every=steps // 10
    )
    assert isinstance(cf, CentralFlow) and cf.threshold == pytest.approx(thr)
    assert cf.sigma2[0] == 0 and cf.sigma2[-1] > 0 and cf.single_edge
    np.testing.assert_allclose(cf.sharpness[-1], thr, rtol=1e-6)
    np.testing.assert_allclose(float(cf.params[1]), y_star, rtol=1e-5)
    np.testing.assert_allclose(cf.sigma2[-1], 2 * G, rtol=1e-4)
    np.testing.assert_allclose(cf.loss_predicted[-1], orbit_loss, rtol=1e-4)
    np.testing.assert_allclose(cf.t, cf.step * eta / (1 - beta))


def test_toy_below_the_edge_is_gradient_flow():
    """Far below the edge sigma^2 = 0 and the flow is the gradient flow: for the toy x(t) ~ x0 e^{-s0 t}
    while y stays ~0, and y' = g - x^2/2 integrates to y = g t - x0^2 (1 - e^{-2 s0 t})/(4 s0)."""
    eta, s0, x0 = 0.01, 20.0, 0.3
    cf = central_flow(_toy_loss, jnp.array([x0, 0.0]), eta, 40, s0, G, dt=1 / 64, record_every=40)
    assert np.all(cf.sigma2 == 0)
    t = cf.t[-1]
    # Euler error O(h) with h = eta / 64: a relative 1e-3 tolerance on x (x drops by e^{-8})
    y_exact = G * t - x0**2 * (1 - math.exp(-2 * s0 * t)) / (4 * s0)
    x_exact = x0 * math.exp(-s0 * t)  # while y stays small (y <= g t = 0.02, s0 + y ~ s0 (1 + 1e-3))
    np.testing.assert_allclose(float(cf.params[1]), y_exact, rtol=2e-3)
    np.testing.assert_allclose(float(cf.params[0]), x_exact, rtol=2e-2)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(eta=0.0), "eta"),
        (dict(beta=1.0), "beta"),
        (dict(steps=0), "steps"),
        (dict(dt=0.3), "dt"),
        (dict(dt=0.5, beta=0.5), "Euler limit"),
        (dict(record_every=0), "record_every"),
        (dict(eigen="eigh"), "eigen"),
        (dict(edge_dim=0), "edge_dim"),
        (dict(qp_iters=0), "qp_iters"),
    ],
)
def test_bad_inputs(kw, match):
    args = dict(eta=0.1, steps=10)
    args.update({k: v for k, v in kw.items() if k in args})
    opts = {k: v for k, v in kw.items() if k not in args}
    with pytest.raises(ValueError, match=match):
        central_flow(_toy_loss, jnp.array([0.1, 0.0]), args["eta"], args["steps"], 1.0, G, **opts)


# --------------------------------------------------------------------------- a small tanh MLP
def _mlp_problem(n=16, d=3, width=6, seed=1):
    """Two tanh hidden layers, standard parametrisation (N(0, 1/fan_in)), L = 1/(2n) ||f - y||^2."""
    k = jax.random.split(jax.random.PRNGKey(seed), 6)
    X = jax.random.normal(k[0], (n, d), jnp.float64)
    y = jnp.sin(2 * X @ jax.random.normal(k[1], (d,), jnp.float64))
    p = {
        "W0": jax.random.normal(k[2], (width, d), jnp.float64) / math.sqrt(d),
        "W1": jax.random.normal(k[3], (width, width), jnp.float64) / math.sqrt(width),
        "b0": jnp.zeros(width, jnp.float64),
        "b1": jnp.zeros(width, jnp.float64),
        "a": jax.random.normal(k[4], (width,), jnp.float64) / math.sqrt(width),
    }

    def loss(p, X, y):
        h = jnp.tanh(jnp.tanh(X @ p["W0"].T + p["b0"]) @ p["W1"].T + p["b1"])
        e = h @ p["a"] - y
        return 0.5 * jnp.mean(e * e)

    return loss, p, X, y


def test_grad_sharpness_against_finite_differences_of_dense_eigenvalues():
    """grad S (the jvp of the Hessian-vector product along u) against central differences of the dense
    Hessian's top eigenvalue (numpy eigvalsh of jax.hessian) along random directions."""
    from ntkdyn.central_flow import _derivatives

    loss, p, X, y = _mlp_problem()
    w, unravel = ravel_pytree(p)
    f = lambda v: loss(unravel(v), X, y)  # noqa: E731
    hess = jax.jit(jax.hessian(f))
    evals, evecs = np.linalg.eigh(np.asarray(hess(w)))
    assert evals[-1] - evals[-2] > 1e-2 * evals[-1]  # a simple top eigenvalue
    grad_sharpness = jax.jit(_derivatives(f)[1])
    gS = np.asarray(grad_sharpness(w, jnp.asarray(evecs[:, -1])))
    rng = np.random.default_rng(0)
    eps = 1e-5
    for _ in range(3):
        d = rng.standard_normal(w.size)
        d /= np.linalg.norm(d)
        up = np.linalg.eigvalsh(np.asarray(hess(w + eps * d)))[-1]
        down = np.linalg.eigvalsh(np.asarray(hess(w - eps * d)))[-1]
        np.testing.assert_allclose(gS @ d, (up - down) / (2 * eps), rtol=1e-5, atol=1e-8 * np.abs(gS).sum())


def test_mlp_below_the_edge_gd_tracks_the_flow_to_first_order():
    """On a segment below the edge (sigma^2 = 0 throughout) the central flow is the gradient flow
    (against diffrax Tsit5 at rtol 1e-10, to O(h)), and GD's gap to it at the same time t = k eta
    shrinks like eta (measured order in [0.9, 1.1] over eta, eta/2, eta/4)."""
    import diffrax

    loss, p, X, y = _mlp_problem()
    w0, unravel = ravel_pytree(p)
    f = lambda v: loss(unravel(v), X, y)  # noqa: E731
    grad = jax.jit(jax.grad(f))
    eta, k = 0.1, 40
    T = eta * k
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, w, a: -grad(w)),
        diffrax.Tsit5(),
        0.0,
        T,
        eta / 10,
        w0,
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-12),
        max_steps=100_000,
    )
    w_gf = np.asarray(sol.ys[-1])
    gaps = [
        np.linalg.norm(_hb_loop(lambda w: np.asarray(grad(w)), w0, eta / r, 0.0, r * k)[-1] - w_gf)
        for r in (1, 2, 4)
    ]
    orders = np.log2(np.array(gaps[:-1]) / np.array(gaps[1:]))
    assert np.all((orders > 0.9) & (orders < 1.1)), (gaps, orders)
    cf = central_flow(loss, p, eta, k, X, y, dt=1 / 8, record_every=k)
    assert np.all(cf.sigma2 == 0) and cf.sharpness.max() < 0.8 * cf.threshold
    flow_gap = np.linalg.norm(np.asarray(ravel_pytree(cf.params)[0]) - w_gf)
    assert flow_gap < gaps[0] / 4  # Euler at h = eta/8: ~ 1/8 of GD's (Euler at h = eta) gap


def test_mlp_at_the_edge_measured_agreement_with_gd():
    """GD (hand-written loop) on the tiny MLP at eta = 0.72 (eta S_0 / 2 = 0.69) reaches the edge within
    ~30 steps. Measured properties, with the thresholds the measurements support (figures in the module
    docstring): GD's sharpness (dense eigvalsh every 10 steps) stays within 5 % of 2/eta from 100 steps
    after the edge (measured <= 1 %); the flow reaches the edge within 20 steps of GD and then holds
    S = 2/eta (sigma^2 > 0 there, |S eta/2 - 1| <= 1e-4); its loss prediction L + 1/2 sigma^2 S is closer
    to GD's 40-step mean loss than L(w(t)) alone (median relative error over steps 130-380: 0.30 against
    0.46), but NOT within the issue's 10 % (so the test does not claim it)."""
    loss, p, X, y = _mlp_problem()
    w0, unravel = ravel_pytree(p)
    f = jax.jit(lambda v: loss(unravel(v), X, y))
    grad, hess = jax.jit(jax.grad(f)), jax.jit(jax.hessian(f))
    eta, steps, window = 0.72, 400, 40
    traj = _hb_loop(lambda v: np.asarray(grad(v)), np.asarray(w0), eta, 0.0, steps)
    L = np.array([float(f(v)) for v in traj])
    idx = np.arange(0, steps + 1, 10)
    S = np.array([np.linalg.eigvalsh(np.asarray(hess(traj[i])))[-1] for i in idx])
    cf = central_flow(loss, p, eta, steps, X, y)
    thr = 2 / eta
    k_edge = int(idx[np.nonzero(S >= thr)[0][0]])
    flow_edge = int(np.nonzero(cf.sigma2 > 0)[0][0])
    assert k_edge <= 60 and abs(flow_edge - k_edge) <= 20, (k_edge, flow_edge)
    assert np.abs(S[idx >= k_edge + 100] / thr - 1).max() < 0.05
    on = cf.sigma2 > 0
    assert on[flow_edge:].all() and cf.single_edge
    # from the step after it turns on (it turns on once S + h dS/dt passes 2/eta, ~1 % below the edge)
    assert np.abs(cf.sharpness[flow_edge + 1 :] / thr - 1).max() < 1e-4
    mean = np.convolve(L, np.ones(window) / window, mode="valid")
    centre = np.arange(mean.size) + window // 2
    after = centre >= k_edge + 100
    err_pred = np.median(np.abs(cf.loss_predicted[centre] - mean)[after] / mean[after])
    err_flow = np.median(np.abs(cf.loss[centre] - mean)[after] / mean[after])
    assert err_pred < err_flow, (err_pred, err_flow)


def test_lanczos_eigenpair_gives_the_dense_flow():
    """eigen="lanczos" (sharpness.hessian_top at every substep) against eigen="dense" on the toy, across
    the edge: the same trajectory (both eigensolvers converge to 1e-10)."""
    eta = 0.1
    s0 = 2 / eta - S0_GAP
    kw = dict(record_every=40, dt=0.5)
    w0 = jnp.array([0.2, 0.0])
    dense = central_flow(_toy_loss, w0, eta, 240, s0, G, eigen="dense", **kw)
    lanczos = central_flow(_toy_loss, w0, eta, 240, s0, G, eigen="lanczos", **kw)
    assert dense.sigma2[-1] > 0 and np.isnan(lanczos.second).all()
    for a, b in (
        (dense.sharpness, lanczos.sharpness),
        (dense.sigma2, lanczos.sigma2),
        (dense.loss, lanczos.loss),
    ):
        np.testing.assert_allclose(b, a, rtol=1e-7, atol=1e-12)


# --------------------------------------------------------------------------- two directions at the edge
G2 = (0.05, 0.02)


def _two_edge_loss(p, s0):
    """Two copies of the toy: L = sum_i -g_i y_i + 1/2 (s0_i + y_i) x_i^2 (p = (x1, x2, y1, y2)); both
    curvatures s0_i + y_i rise under gradient flow and reach the edge, so Sigma has rank 2 there."""
    return sum(-G2[i] * p[2 + i] + 0.5 * (s0[i] + p[2 + i]) * p[i] ** 2 for i in range(2))


def test_two_eigenvalues_at_the_edge_matrix_form_against_gd_orbits():
    """With two eigenvalues at the edge GD has the orbit x_i = +-sqrt(2 g_i), y_i = 2/eta - s0_i (each copy
    is the toy's); a hand-written GD loop started on it stays there. The matrix form must stop on it with
    Sigma = diag(2 g_1, 2 g_2) (tr Sigma = 2 (g_1 + g_2), rank 2) and predict the orbit's mean loss; the
    single-eigenvalue form (edge_dim = 1) cannot."""
    eta = 0.1
    thr = 2 / eta
    s0 = jnp.array([thr - 1.0, thr - 0.6])
    x_star = np.sqrt(2 * np.array(G2))
    y_star = thr - np.asarray(s0)

    def grad(w):
        return np.concatenate([(np.asarray(s0) + w[2:]) * w[:2], -np.array(G2) + 0.5 * w[:2] ** 2])

    orbit = _hb_loop(grad, np.concatenate([x_star, y_star]), eta, 0.0, 40)
    np.testing.assert_allclose(orbit[:, :2], x_star * (-1.0) ** np.arange(41)[:, None], rtol=1e-9)
    orbit_loss = np.mean([float(_two_edge_loss(w, s0)) for w in orbit[:40]])
    steps = 600  # flow time 60: both copies reach the edge (after 1/g_1 = 20 and 0.6/g_2 = 30)
    w0 = jnp.array([0.2, 0.1, 0.0, 0.0])
    cf = central_flow(_two_edge_loss, w0, eta, steps, s0, record_every=50, qp_iters=200)
    assert cf.n_edge[-1] == 2 and not cf.single_edge
    np.testing.assert_allclose([cf.sharpness[-1], cf.second[-1]], thr, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(cf.params)[2:], y_star, rtol=1e-4)
    np.testing.assert_allclose(cf.sigma2[-1], 2 * sum(G2), rtol=1e-4)
    np.testing.assert_allclose(cf.loss_predicted[-1], orbit_loss, rtol=1e-4)
    # the scalar form holds lambda_max near 2/eta by switching between the two directions, but its
    # sigma^2 (one direction's at a time) misses the mean loss (measured: 1.94 against 1.34)
    scalar = central_flow(_two_edge_loss, w0, eta, steps, s0, record_every=50, edge_dim=1)
    assert scalar.single_edge
    assert abs(scalar.loss_predicted[-1] / orbit_loss - 1) > 0.2
