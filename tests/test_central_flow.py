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
    """Far below the edge sigma^2 = 0 and the flow is the gradient flow: for the toy x(t) = x0 e^{-s0 t}
    while y stays ~0 (y' = g - x^2/2 is integrated in closed form: y = g t - x0^2 (1 - e^{-2 s0 t})/(4 s0))."""
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
    ],
)
def test_bad_inputs(kw, match):
    args = dict(eta=0.1, steps=10)
    args.update({k: v for k, v in kw.items() if k in args})
    opts = {k: v for k, v in kw.items() if k not in args}
    with pytest.raises(ValueError, match=match):
        central_flow(_toy_loss, jnp.array([0.1, 0.0]), args["eta"], args["steps"], 1.0, G, **opts)
