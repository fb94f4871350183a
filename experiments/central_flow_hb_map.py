"""Probe: a constrained mean iteration for heavy ball at the edge of stability, against heavy ball.

Derivation (not in Cohen, Damian et al. 2025; tested here, NOT verified). HB v <- beta v + grad L(w),
w <- w - eta v, at its edge S = 2(1 + beta)/eta oscillates with period 2 along the top eigenvector u
(the roots -1 and -beta of x_{k+1} = (1 + beta - eta S) x_k - beta x_{k-1}). Writing w_k = wbar_k + x_k u,
v_k = vbar_k + y_k u with E[x_k] = E[y_k] = 0 and E[x_k^2] = sigma^2, and averaging the third-order Taylor
expansion of grad L as for GD, the mean obeys HB itself on the corrected gradient:

    vbar <- beta vbar + grad L(wbar) + 1/2 grad <Sigma, Hess L(wbar)>,   wbar <- wbar - eta vbar,

with Sigma = U X U^T over the top-k eigenvectors the smallest (complementarity problem, as in
``ntkdyn.central_flow``) that keeps the linearised next restricted Hessian <= 2(1 + beta)/eta. Unlike the
rescaled flow of ``central_flow(beta > 0)`` it keeps HB's own discrete dynamics in the stable modes
(eta_eff lambda is not small next to the edge), so below the edge it is HB exactly. Predicted mean loss:
L(wbar) + 1/2 <X, Theta>.

Measured (defaults: the central_flow_probe MLP, n = 100, P = 228, beta = 0.5, eta = 0.375, threshold 8,
3000 steps): the iteration holds S at the edge to 3e-3, but its loss prediction misses HB's centred mean
loss: 40-step windows median error 22 % (max 111 %), 200-step windows median 12 % (max 73 %, 37 % of the
steps within 10 %); HB's 200-step mean sharpness strays from the edge by up to 21 %. Not a prediction.

Usage: python experiments/central_flow_hb_map.py [--beta 0.5] [--eta 0.25] [--steps 3000] [--n 100]
(eta is scaled by 1 + beta, so the threshold is 2/eta for every beta.)
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

jax.config.update("jax_enable_x64", True)

from central_flow_probe import problem, run_optimizer, windowed  # noqa: E402

from ntkdyn.central_flow import _edge_qp, _pairs, _smat, _svec, _top_pair  # noqa: E402


def mean_iteration(loss, p, X, y, eta, beta, steps, k=3, qp_iters=60):
    """The constrained mean iteration (module docstring): per step (loss, predicted mean loss, S, lambda_2,
    tr Sigma)."""
    w0, unravel = ravel_pytree(p)
    f = lambda w: loss(unravel(w), X, y)  # noqa: E731
    grad, hessian = jax.grad(f), jax.hessian(f)
    ii, jj, wts = _pairs(k)
    thr = 2 * (1 + beta) / eta

    def d3(w, a, b):
        return jax.jvp(lambda z: jax.jvp(grad, (z,), (a,))[1], (w,), (b,))[1]

    def step(carry, _):
        w, v, U, x = carry
        g = grad(w)
        theta, Un = _top_pair(hessian(w), U)
        G = jax.vmap(lambda a, b: d3(w, a, b))(Un[:, ii].T, Un[:, jj].T) * wts[:, None]
        # next restricted Hessian ~ Theta - eta [<G, beta v + g> + 1/2 G G^T x] <= thr I
        c = _svec(jnp.diag(thr - theta)) / eta + G @ (beta * v + g)
        R = Un.T @ U
        x = _edge_qp(0.5 * G @ G.T, c, _svec(R @ _smat(x, k) @ R.T), k, qp_iters)
        Xm = _smat(x, k)
        v = beta * v + g + 0.5 * G.T @ x
        out = (f(w), f(w) + 0.5 * jnp.sum(jnp.diag(Xm) * theta), theta[0], theta[1], jnp.trace(Xm))
        return (w - eta * v, v, Un, x), out

    U0 = jnp.linalg.qr(jax.random.normal(jax.random.PRNGKey(0), (w0.size, k), w0.dtype))[0]
    init = (w0, jnp.zeros_like(w0), U0, jnp.zeros(ii.size, w0.dtype))
    run = jax.jit(lambda c: jax.lax.scan(step, c, None, length=steps + 1)[1])
    return tuple(np.asarray(a) for a in run(init))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--beta", type=float, default=0.5)
    ap.add_argument("--eta", type=float, default=0.25)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--every", type=int, default=25)
    a = ap.parse_args()
    eta, beta = a.eta * (1 + a.beta), a.beta
    thr = 2 * (1 + beta) / eta
    loss, p, X, y = problem(n=a.n)
    t0 = time.time()
    _, pred, S, S2, tr = mean_iteration(loss, p, X, y, eta, beta, a.steps)
    t_map = time.time() - t0
    L, _, idx, Sh = run_optimizer(loss, p, X, y, eta, beta, a.steps, a.every)
    hit = np.nonzero(Sh[:, 0] >= thr)[0]
    if hit.size == 0:
        print("HB never reached the edge")
        return
    k_edge = int(idx[hit[0]])
    print(
        f"beta {beta}, eta {eta}, threshold {thr:.4f} (mean iteration {t_map:.0f}s): HB's edge at step "
        f"{k_edge}, the iteration's at {int(np.argmax(tr > 0))}; its |S/thr - 1| where Sigma != 0: max "
        f"{np.abs(S[tr > 0] / thr - 1).max():.2e}; lambda_2/thr max {S2.max() / thr:.3f}"
    )
    ks = np.arange(L.size)
    for win in (40, 200, 400):
        avg = windowed(L, win)
        rel = np.abs(pred - avg) / avg
        sel = np.isfinite(rel) & (ks >= k_edge)
        m = max(win // a.every, 1)
        Sa = windowed(Sh[:, 0], m) if m > 1 else Sh[:, 0]
        ss = np.isfinite(Sa) & (idx >= k_edge)
        print(
            f"  {win}-step means after the edge: loss error median {np.median(rel[sel]):.3f}, max "
            f"{rel[sel].max():.3f}, within 10 % {np.mean(rel[sel] <= 0.1):.3f}; HB's mean sharpness "
            f"|S/thr - 1| max {np.abs(Sa[ss] / thr - 1).max():.3f}"
        )


if __name__ == "__main__":
    main()
