"""Probe: the central flow (``ntkdyn.central_flow``) against gradient descent and heavy ball on a small
network that reaches the edge of stability.

Problem: a tanh MLP (``--depth`` hidden layers of ``--width``, standard parametrisation: weights
N(0, 1/fan_in), zero biases, linear read-out), n points in R^d (X ~ N(0, I)), target
y = sin(2 X v) cos(1.5 X_1), loss L = 1/(2n) ||f - y||^2 (``half_mse``), float64.

Measured, for GD (beta = 0) and HB (each --beta):
* edge: the first step where the optimizer's sharpness (dense Hessian eigenvalue, every --every steps)
  reaches the threshold 2(1 + beta)/eta; the sharpness's deviation from the threshold after it,
  |S/threshold - 1| (max, median, 95th percentile), and the flow's;
* loss: the optimizer's loss averaged over a centred window of --window steps against the flow's
  ``loss_predicted`` at the window's centre: relative error (max, median) over the run (after the edge,
  and before it);
* GD (beta = 0): the face's window rule, ``central_flow.cycle_agreement`` (GD averaged over its own
  self-stabilisation cycles, from one upward crossing of 2/eta by its sharpness to the next);
* before the edge: ||w_k - w(t_k)|| at the last step before the edge for eta, eta/2, eta/4 (the same flow
  time): the order of the gap as eta -> 0 (1 expected for GD and HB against gradient flow).

Usage: python experiments/central_flow_probe.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

jax.config.update("jax_enable_x64", True)

from ntkdyn.central_flow import central_flow, cycle_agreement  # noqa: E402


def problem(n=100, d=4, width=12, depth=2, seed=2, scale=1.0):
    k = jax.random.split(jax.random.PRNGKey(seed), 4 + depth)
    X = jax.random.normal(k[0], (n, d), jnp.float64)
    y = scale * jnp.sin(2 * X @ jax.random.normal(k[1], (d,), jnp.float64)) * jnp.cos(1.5 * X[:, 1])
    dims = [d] + [width] * depth
    p = {
        f"W{i}": jax.random.normal(k[2 + i], (dims[i + 1], dims[i]), jnp.float64) / math.sqrt(dims[i])
        for i in range(depth)
    }
    p.update({f"b{i}": jnp.zeros(dims[i + 1], jnp.float64) for i in range(depth)})
    p["a"] = jax.random.normal(k[-1], (width,), jnp.float64) / math.sqrt(width)

    def loss(p, X, y):
        h = X
        for i in range(depth):
            h = jnp.tanh(h @ p[f"W{i}"].T + p[f"b{i}"])
        e = h @ p["a"] - y
        return 0.5 * jnp.mean(e * e)

    return loss, p, X, y


def run_optimizer(loss, p, X, y, eta, beta, steps, every):
    """Hand-written HB (GD at beta = 0): v <- beta v + g, w <- w - eta v. Returns per-step loss, the
    flat iterates at every step, and the dense top-2 Hessian eigenvalues every ``every`` steps."""
    flat, unravel = ravel_pytree(p)
    f = lambda w: loss(unravel(w), X, y)  # noqa: E731
    g = jax.grad(f)

    @jax.jit
    def run(w):
        def body(c, _):
            w, v = c
            v = beta * v + g(w)
            return (w - eta * v, v), (f(w), w)

        return jax.lax.scan(body, (w, jnp.zeros_like(w)), None, length=steps + 1)[1]

    L, W = run(flat)
    hess = jax.jit(jax.hessian(f))
    idx = np.arange(0, steps + 1, every)
    S = np.array([np.linalg.eigvalsh(np.asarray(hess(W[i])))[-2:][::-1] for i in idx])
    return np.asarray(L), np.asarray(W), idx, S


def windowed(L, window):
    """Centred moving average (NaN where the window does not fit)."""
    out = np.full(L.shape, np.nan)
    c = np.convolve(L, np.ones(window) / window, mode="valid")
    out[window // 2 : window // 2 + c.size] = c
    return out


def compare(loss, p, X, y, eta, beta, steps, every, window, dt, transient, save=None, windows=None):
    windows = windows or (window, 5 * window)
    t0 = time.time()
    L, W, idx, S = run_optimizer(loss, p, X, y, eta, beta, steps, every)
    t_opt = time.time() - t0
    t0 = time.time()
    cf = central_flow(loss, p, eta, steps, X, y, beta=beta, dt=dt if beta == 0 else None, record_every=1)
    t_cf = time.time() - t0
    thr = cf.threshold
    hit = np.nonzero(S[:, 0] >= thr)[0]
    name = "GD" if beta == 0 else f"HB beta={beta}"
    print(
        f"\n== {name}: eta={eta}, threshold={thr:.4f}, steps={steps} "
        f"(optimizer {t_opt:.1f}s, flow {t_cf:.1f}s)"
    )
    print(f"   S/thr at step 0: optimizer {S[0, 0] / thr:.4f}, flow {cf.sharpness[0] / thr:.4f}")
    if hit.size == 0:
        print(f"   optimizer never reached the edge (max S/thr {S[:, 0].max() / thr:.4f})")
        return None
    k_edge = int(idx[hit[0]])
    flow_edge = int(np.nonzero(cf.sigma2 > 0)[0][0]) if np.any(cf.sigma2 > 0) else None
    print(
        f"   edge: optimizer at step {k_edge}, flow at step {flow_edge}; lambda_2/thr max: optimizer "
        f"{S[:, 1].max() / thr:.4f}, flow {np.nanmax(cf.second) / thr:.4f}; single_edge {cf.single_edge}"
    )
    after = idx >= k_edge
    dev = np.abs(S[after, 0] / thr - 1)
    print(
        f"   optimizer |S/thr - 1| after the edge: max {dev.max():.4f}, median {np.median(dev):.4f}, "
        f"p95 {np.percentile(dev, 95):.4f}; after edge+{transient}: max "
        f"{np.abs(S[idx >= k_edge + transient, 0] / thr - 1).max():.4f}"
    )
    every_ = int(idx[1] - idx[0]) if idx.size > 1 else 1
    for win in windows:
        m = max(win // every_, 1)
        Sa = windowed(S[:, 0], m) if m > 1 else S[:, 0]
        sel = np.isfinite(Sa) & after
        if sel.any():
            d = np.abs(Sa[sel] / thr - 1)
            print(
                f"   optimizer's {m * every_}-step mean sharpness after the edge: |mean/thr - 1| max "
                f"{d.max():.4f}, median {np.median(d):.4f}, fraction within 5% {np.mean(d <= 0.05):.3f}"
            )
    if beta == 0:  # the window rule of the face (theory.central_flow): GD's own self-stabilisation cycles
        agr = cycle_agreement(np.arange(L.size), L, idx, S[:, 0], cf.loss_predicted, thr)
        pct = lambda xs: ", ".join(f"{100 * x:.1f}" for x in xs)  # noqa: E731
        tail = (agr.tail_loss_error, agr.tail_sharpness_error)
        print(
            f"   cycles (upward crossings of 2/eta by GD's sharpness) {list(agr.cycles)}: loss error % "
            f"[{pct(agr.loss_error)}], GD's mean sharpness off 2/eta % [{pct(agr.sharpness_error)}]; tail "
            + (f"{100 * tail[0]:.1f} % / {100 * tail[1]:.1f} %" if None not in tail else "-")
            + f"; verdict (10 %/5 %, whole run) {agr.agrees()}"
        )
    print(f"   flow: largest number of oscillating directions (rank Sigma) {cf.n_edge.max()}")
    fdev = np.abs(cf.sharpness[k_edge:] / thr - 1)
    on = cf.sigma2[k_edge:] > 0
    print(
        f"   flow |S/thr - 1| after the edge: max {fdev.max():.2e}; where sigma^2 > 0: "
        f"max {fdev[on].max() if on.any() else float('nan'):.2e}; "
        f"fraction of steps at the edge {on.mean():.3f}"
    )
    ks = np.arange(L.size)
    for win in windows:
        avg = windowed(L, win)
        rel = np.abs(cf.loss_predicted - avg) / avg
        ok = np.isfinite(rel)
        for label, sel in (
            ("before the edge", ok & (ks < k_edge)),
            ("after the edge", ok & (ks >= k_edge)),
            (f"after edge+{transient}", ok & (ks >= k_edge + transient)),
        ):
            if sel.any():
                print(
                    f"   loss: |pred - avg_{win}|/avg {label}: max {rel[sel].max():.4f}, median "
                    f"{np.median(rel[sel]):.4f}, p90 {np.percentile(rel[sel], 90):.4f}, "
                    f"fraction within 10% {np.mean(rel[sel] <= 0.1):.3f}"
                )
    avg = windowed(L, window)
    ok = np.isfinite(avg)
    rel_flow = np.abs(cf.loss - avg) / avg
    sel = ok & (ks >= k_edge + transient)
    if sel.any():
        print(
            f"   (without the 1/2 sigma^2 S term: median {np.median(rel_flow[sel]):.4f}, "
            f"max {rel_flow[sel].max():.4f})"
        )
    for k in sorted({k_edge // 2, k_edge, k_edge + transient, (k_edge + steps) // 2, steps - window}):
        if 0 <= k < L.size:
            print(
                f"     step {k:5d}: avg loss {avg[k]:.4e}  predicted {cf.loss_predicted[k]:.4e}  "
                f"L(w(t)) {cf.loss[k]:.4e}"
                f"  sigma2 {cf.sigma2[k]:.3e}  flow S/thr {cf.sharpness[k] / thr:.4f}"
            )
    if save:
        np.savez(
            f"{save}_beta{beta}.npz",
            loss=L,
            sharp_step=idx,
            sharp=S,
            flow_loss=cf.loss,
            flow_pred=cf.loss_predicted,
            flow_sharp=cf.sharpness,
            flow_sigma2=cf.sigma2,
            n_edge=cf.n_edge,
            threshold=thr,
        )
    return k_edge, L, W, cf


def order_before_edge(loss, p, X, y, eta, beta, k_stop, dt):
    """Before the edge: the gradient flow w(t) by diffrax (Tsit5, rtol 1e-10) at t = k_stop eta_eff;
    ||w_k - w(t)|| for the optimizer at eta, eta/2, eta/4 (k = k_stop, 2 k_stop, 4 k_stop) and for the
    central flow (whose sigma^2 must be 0 there) at its dt and dt/2."""
    import diffrax

    w0, unravel = ravel_pytree(p)
    grad = jax.jit(jax.grad(lambda w: loss(unravel(w), X, y)))
    T = k_stop * eta / (1 - beta)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, w, a: -grad(w)),
        diffrax.Tsit5(),
        0.0,
        T,
        T / 1000,
        w0,
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-12),
        max_steps=1_000_000,
    )
    w_gf = np.asarray(sol.ys[-1])
    gaps = []
    for r in (1, 2, 4):
        _, W, _, _ = run_optimizer(loss, p, X, y, eta / r, beta, r * k_stop, r * k_stop)
        gaps.append(np.linalg.norm(W[-1] - w_gf))
    orders = [math.log2(gaps[i] / gaps[i + 1]) for i in range(2)]
    print(
        f"   before the edge, t = {T:.3g}: ||w_k - w_GF(t)|| for eta, eta/2, eta/4: "
        + ", ".join(f"{x:.3e}" for x in gaps)
        + f"; orders {orders[0]:.3f}, {orders[1]:.3f}"
        f" (||w_GF(t) - w0|| = {np.linalg.norm(w_gf - np.asarray(w0)):.3e})"
    )
    fl = []
    base = dt if beta == 0 else (1 - beta) / (4 * (1 + beta))
    for sub in (base, base / 2):
        sub = 1 / math.ceil(1 / sub - 1e-9)
        cf = central_flow(loss, p, eta, k_stop, X, y, beta=beta, dt=sub, record_every=k_stop)
        assert not np.any(cf.sigma2 > 0)
        fl.append((sub, np.linalg.norm(np.asarray(ravel_pytree(cf.params)[0]) - w_gf)))
    print(
        "   central flow (sigma^2 = 0 there) vs diffrax: " + ", ".join(f"dt={a:.4g}: {b:.3e}" for a, b in fl)
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--eta", type=float, default=0.25)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--betas", type=float, nargs="*", default=[0.5])
    ap.add_argument("--window", type=int, default=40)
    ap.add_argument(
        "--windows",
        type=int,
        nargs="*",
        default=None,
        help="averaging windows (steps) for the loss and sharpness comparisons (default: window, 5 window); "
        "windows that span a self-stabilisation cycle (~300 steps in the default run) are the fair ones",
    )
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--dt", type=float, default=0.25)
    ap.add_argument("--transient", type=int, default=300)
    ap.add_argument("--width", type=int, default=12)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--save", default=None, help="path prefix: save the arrays of each run (npz)")
    a = ap.parse_args()
    if a.quick:
        a.steps, a.every = 2000, 25
    loss, p, X, y = problem(n=a.n, width=a.width, depth=a.depth)
    print(f"P = {ravel_pytree(p)[0].size}, n = {a.n}, width {a.width}, depth {a.depth}")
    for beta in [0.0] + list(a.betas):
        eta = a.eta * (1 + beta)  # the same threshold 2(1 + beta)/eta = 2/a.eta for every method
        res = compare(
            loss, p, X, y, eta, beta, a.steps, a.every, a.window, a.dt, a.transient, a.save, a.windows
        )
        if res is not None:
            order_before_edge(loss, p, X, y, eta, beta, max(res[0] // 3, 10), a.dt)


if __name__ == "__main__":
    main()
