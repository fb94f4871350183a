"""Central flows: the time-averaged trajectory of full-batch gradient descent (and of heavy ball) at the
edge of stability, in the matrix (several eigenvalues at the edge) form.

Gradient descent (Cohen, Damian et al., "Understanding Optimization in Deep Learning with Central
Flows", ICLR 2025, arXiv 2410.24206, sec. 3). GD w_{k+1} = w_k - eta grad L is modelled as
w_k = w(t) + delta_k with E[delta_k] = 0 and E[delta_k delta_k^T] = Sigma(t), an oscillation inside the
eigenspace of the Hessian eigenvalues at 2/eta; a third-order Taylor expansion of grad L around w(t)
averages to grad L(w) + 1/2 grad <Sigma, Hess L(w)>, so

    dw/dt = -[grad L(w) + 1/2 grad_w <Sigma(t), Hess L(w)>],     t = k eta (flow time; the paper
                                                                  writes dw/dk = -eta [...], the same curve),

with Sigma = U X U^T (U: the top-k eigenvectors of Hess L(w), X a k x k symmetric matrix) the solution of
the complementarity problem that keeps every eigenvalue <= 2/eta:

    X >= 0,   -d/dt (U^T Hess L U) >= 0 where the eigenvalues sit at 2/eta,   <X, d/dt U^T Hess L U> = 0

(>= 0: positive semidefinite). With H_ij = u_i^T Hess L u_j and G_ij = grad_w H_ij = D^3 L(w)[u_i, u_j, .]
(u held fixed: the derivative of the eigenvalues for a simple spectrum, of the restricted Hessian for a
multiple one), d/dt H_ij = -<G_ij, grad L> - 1/2 sum_kl X_kl <G_ij, G_kl>: linear in X, through the
Gram operator of the G's (positive semidefinite), so the problem is the convex program
min_{X >= 0} 1/2 <X, A X> + <c, X> (its KKT conditions are the complementarity problem). With one
eigenvalue at the edge it reduces to the scalar rule Sigma = sigma^2 u u^T,

    sigma^2 = 2 max(0, -<grad S, grad L>) / ||grad S||^2,      so that dS/dt = 0   (grad S = G_11).

G_ij is a ``jax.jvp`` along u_j of the Hessian-vector product w -> Hess L(w) u_i (forward over forward
over reverse; no third-order tensor is formed). The prediction of GD's time-averaged loss is the paper's
E[L(w_k)] ~ L(w(t)) + 1/2 <Sigma, Hess L> = L(w(t)) + (1/eta) tr Sigma at the edge: ``loss_predicted``.

Heavy ball (not in the paper; derived here). HB: v_{k+1} = beta v_k + grad L(w_k),
w_{k+1} = w_k - eta v_{k+1}, 0 <= beta < 1.
(1) Stability limit of the top mode: on a quadratic with curvature S the mode obeys
    x_{k+1} = (1 + beta - eta S) x_k - beta x_{k-1}; its roots leave the unit disc through z = -1 at
    eta S = 2(1 + beta) (then the roots are -1 and -beta): so the edge is S = 2(1 + beta)/eta, and the
    unstable motion at the edge is again a period-2 oscillation along u, w_k = w(t) + x_k u with
    E[x_k] = 0 (the -beta root decays).
(2) Time-averaged velocity: averaging v over the oscillation, E[v_{k+1}] = beta E[v_k] + E[grad L(w_k)];
    on time scales long against 1/(1 - beta) steps E[v] = E[grad L]/(1 - beta), and by the same Taylor
    argument as for GD E[grad L(w_k)] = grad L(w) + 1/2 sigma^2 grad S(w). Hence
        dw/dt = -[grad L(w) + 1/2 sigma^2 grad S(w)],   t = k eta / (1 - beta)  (the effective step).
(3) sigma^2 is again the smallest value >= 0 keeping S <= 2(1 + beta)/eta; the condition dS/dt = 0 is
    <grad S, dw/dt> = 0, independent of the time unit and of the threshold's value, so at the edge
    sigma^2 = 2 max(0, -<grad S, grad L>)/||grad S||^2, the same formula as GD's.
(4) The time-averaged loss is L(w) + 1/2 sigma^2 S with S = 2(1 + beta)/eta.
So HB's constrained flow is GD's central flow with threshold 2(1 + beta)/eta, run in effective time
k eta/(1 - beta). Its assumptions (the momentum average has settled; the oscillation is the -1 root
only; every other mode follows the gradient flow) are not proved; the period-2 orbit of the toy in
``tests/test_central_flow.py`` satisfies them exactly, the MLP runs of the probe do not (below).

Discretisation (units: one substep is ``dt`` optimizer steps, i.e. dt * eta_eff of flow time,
eta_eff = eta/(1 - beta)): explicit Euler in the flattened parameters; the constraint is imposed on
the linearised next restricted Hessian, as the paper's code does for its complementarity problem: X is the
solution of the problem above with c = (S_max I - Theta)/h + [<G_ij, grad L>] (Theta: the top-k
eigenvalues, h = dt eta_eff), i.e. U^T Hess L U + h d/dt U^T Hess L U <= S_max I. In the scalar case

    sigma^2 = max(0, 2 [(S - S_max)/h - <grad S, grad L>] / ||grad S||^2),

which equals the continuous rule at S = S_max, is 0 while S + h dS/dt (gradient flow) stays below S_max,
and pulls a value that overshot S_max back onto it in one substep; eigenvalues well below S_max have a
large c_ii and take no part. The k x k problem is solved by accelerated projected gradient (FISTA; the
projection onto X >= 0 clips a k x k eigendecomposition), ``qp_iters`` iterations per substep,
warm-started from the previous substep's X carried into the new eigenbasis.

Measured (``experiments/central_flow_probe.py``, defaults: tanh MLP 2 x 12 hidden, P = 228, n = 100,
standard parametrisation, half-MSE, float64, eta = 0.25, 3000 steps, dt = 1/4; docs/beyond-kernel-regime.md).
What holds: the flow's S stays at 2/eta to 7e-9 once Sigma != 0; grad S matches finite differences of
the dense top eigenvalue; below the edge the flow is the gradient flow and GD's gap to it shrinks like
eta (order 1.08-1.19); the flow reaches the edge 32 steps after GD (1200); the toys' period-2 orbits
(one and two directions at the edge) are reproduced exactly. On that run lambda_2 stays below 0.86 x 2/eta
(GD and flow), so Sigma has rank 1 throughout and the matrix form gives the scalar one's figures: the
misses are not a multi-eigenvalue effect. They are GD's self-stabilisation cycles: GD's sharpness climbs
to 1.09 x 2/eta over ~300 steps, then a loss spike (x4 for ~20 steps) throws it back to 0.94, so GD's
loss is below the flow's prediction between spikes (by ~7 %) and far above it during them. Averaged
over windows that span a cycle the prediction holds: 400-step centred means, after GD's edge, loss
error max 8.8 % (median 3.9 %, every step within 10 %) and GD's mean sharpness within 4.5 % of 2/eta
(median 0.3 %); 300-step means: loss max 9.0 %, sharpness max 6.0 % (96 % of steps within 5 %); 200-step
means: loss max 10.2 %, sharpness max 7.4 %; 40-step means: loss max 43 %, 88 % of steps within 10 %.
Fixed windows are a choice; GD's own cycles are not: averaged over each self-stabilisation cycle (from
one upward crossing of 2/eta by GD's sharpness to the next; ``cycle_agreement``) the loss error is 1.5,
2.8, 3.4, 4.3 % and GD's mean sharpness is within 3.0 % of 2/eta (6.3 % / 0.1 % over the incomplete last
cycle). On smaller networks the first cycle and a late, oscillation-dominated phase miss (10-35 %;
docs/beyond-kernel-regime.md): the flow is an opt-in face (``pipeline.faces.central_flow``) whose
verdict is measured per run. The Euler error is part of the residual: on the tests' MLP (P = 72,
eta = 0.72, 400 steps) the loss
prediction moves by 2.2 % from dt = 1/4 to 1/16 (0.7 % from 1/8 to 1/16). For heavy ball the derived
flow fails: HB's sharpness does stay near 2(1 + beta)/eta (median deviation 2 %), but the loss
prediction is off by factors 2-5 (median error 80-110 %): at the edge eta_eff S = 2(1 + beta)/(1 - beta)
(6 at beta = 0.5), so the modes next to the top one are far from the small-step regime that step (2) of
the derivation assumes (HB's modes with eta lambda > (1 - sqrt(beta))^2 are under-damped oscillators,
not gradient flow), and the measurements bear that out. A second derivation, HB's own iteration on the
averaged gradient (``experiments/central_flow_hb_map.py``), misses too (median 12-22 %).

What it does not do: the matrix form is solved over the top ``edge_dim`` eigenvectors only (an edge
space wider than that is cut; ``CentralFlow.n_edge`` is the rank of Sigma reached); ``eigen="lanczos"``
is the scalar form. The flow starts from w_0 with no oscillation; it does not model the transient at
the onset (GD's first loss spike) nor the self-stabilisation cycles around 2/eta, and it is exact for
neither method: its agreement with GD/HB is measured, not guaranteed.

Eigenpair: ``eigen="dense"`` forms Hess L (``jax.hessian``) inside one compiled ``lax.scan`` and takes
its top eigenpairs by LOBPCG (``jax.experimental.sparse.linalg.lobpcg_standard``, the top 3, warm-started
from the previous substep; a full ``eigh`` below P = 16), for small models (memory P^2; jax's CPU
``eigh`` of a few hundred is ~100x slower than the warm LOBPCG); ``eigen="lanczos"`` is matrix-free,
``sharpness.hessian_top`` (Lanczos on Hessian-vector products) at every substep, from Python (slow;
for models too large for a dense Hessian). Float64 is advised (the third derivative is a difference of
small quantities in float32).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.sparse.linalg import lobpcg_standard
from jax.flatten_util import ravel_pytree

from ntkdyn.sharpness import hessian_top, stability_limit

EIGEN = ("dense", "lanczos")
BLOCK = 3  # the top eigenspace tracked (LOBPCG block; the edge problem lives in it)
DENSE_EIGH_MAX = 16  # below this P the top pair comes from a full eigh, above from LOBPCG
LOBPCG_ITER, LOBPCG_TOL = 200, 1e-12
QP_ITERS = 60  # FISTA iterations of the edge problem per substep (warm-started from the last substep)


@dataclasses.dataclass(frozen=True)
class CentralFlow:
    """A central-flow trajectory recorded at optimizer steps ``step`` (k = 0, record_every, ...).

    ``t``: flow time k eta/(1 - beta); ``loss``: L(w(t)); ``loss_predicted``: L(w(t)) + 1/2 sigma^2 S,
    the prediction of the optimizer's time-averaged loss; ``sharpness``: S = lambda_max(Hess L(w(t)));
    ``second``: lambda_2 (NaN with ``eigen="lanczos"``); ``sigma2``: tr Sigma (units of param^2, the
    predicted variance of the oscillation; sigma^2 in the single-eigenvalue form); ``n_edge``: the rank
    of Sigma (how many directions oscillate); ``threshold``: the edge 2(1 + beta)/eta;
    ``params``: w at the last recorded step (the input's pytree structure)."""

    step: np.ndarray
    t: np.ndarray
    loss: np.ndarray
    loss_predicted: np.ndarray
    sharpness: np.ndarray
    second: np.ndarray
    sigma2: np.ndarray
    n_edge: np.ndarray
    threshold: float
    eta: float
    beta: float
    params: Any

    @property
    def at_edge(self) -> np.ndarray:
        """sigma^2 > 0: the constraint is active (the flow is not the gradient flow)."""
        return self.sigma2 > 0

    @property
    def single_edge(self) -> bool:
        """At most one direction oscillated (Sigma of rank <= 1) at every recorded step."""
        return bool(np.all(self.n_edge <= 1))


def _validate(eta, beta, steps, dt, record_every, eigen) -> None:
    if not (isinstance(eta, int | float) and eta > 0):
        raise ValueError(f"central_flow: eta = {eta!r}; allowed: a number > 0")
    if not (isinstance(beta, int | float) and 0.0 <= beta < 1.0):
        raise ValueError(f"central_flow: beta = {beta!r}; allowed: 0 <= beta < 1")
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"central_flow: steps = {steps!r}; allowed: an integer >= 1")
    if dt is not None:
        if not (isinstance(dt, int | float) and 0 < dt <= 1 and abs(1 / dt - round(1 / dt)) < 1e-9):
            raise ValueError(
                f"central_flow: dt = {dt!r}; allowed: 1/q for an integer q >= 1 (0.5, 0.25, ...)"
            )
        dt_max = (1 - beta) / (2 * (1 + beta)) if 0 <= beta < 1 else 0.5
        if dt > dt_max * (1 + 1e-12):
            raise ValueError(
                f"central_flow: dt = {dt!r} is above the Euler limit dt <= (1 - beta)/(2 (1 + beta)) = "
                f"{dt_max:.4g} for beta = {beta} (h S_max <= 1 at the edge); allowed: a smaller 1/q, or None"
            )
    if not (isinstance(record_every, int) and record_every >= 1):
        raise ValueError(f"central_flow: record_every = {record_every!r}; allowed: an integer >= 1")
    if eigen not in EIGEN:
        raise ValueError(f"central_flow: eigen = {eigen!r}; allowed: {', '.join(EIGEN)}")


def _derivatives(flat_loss: Callable[[jax.Array], jax.Array]):
    """grad L and grad S = D^3 L[u, u, .] for a loss of the flat parameters."""
    grad = jax.grad(flat_loss)

    def hvp(w, u):
        return jax.jvp(grad, (w,), (u,))[1]

    def grad_sharpness(w, u):
        return jax.jvp(lambda q: hvp(q, u), (w,), (u,))[1]

    return grad, grad_sharpness


def _sigma2(S, gS, g, threshold, h):
    """The smallest sigma^2 >= 0 with S + h dS/dt <= threshold, dS/dt = -<gS, g> - sigma^2 ||gS||^2 / 2
    (h = dt * eta_eff: the substep in flow time)."""
    num = 2.0 * ((S - threshold) / h - jnp.vdot(gS, g))
    return jnp.maximum(0.0, num / jnp.maximum(jnp.vdot(gS, gS), jnp.finfo(g.dtype).tiny))


def central_flow(
    loss: Callable[..., jax.Array],
    params,
    eta: float,
    steps: int,
    *args,
    beta: float = 0.0,
    dt: float | None = None,
    record_every: int = 1,
    eigen: str = "dense",
    key: jax.Array | None = None,
    edge_dim: int = BLOCK,
    qp_iters: int = QP_ITERS,
) -> CentralFlow:
    """Integrate the central flow of GD (beta = 0) or of heavy ball (module docstring) from ``params``
    over ``steps`` optimizer steps (flow time steps * eta/(1 - beta)).

    Args:
        loss: (params, *args) -> scalar L (any pytree params; e.g. ``sharpness.squared_loss(model)`` with
            args (consts, X, y)).
        params: w_0. eta: the optimizer's step size; beta: heavy ball's momentum (0: GD).
        steps: optimizer steps to cover. dt: substep in optimizer steps (1/q; Euler in flow time
            h = dt * eta/(1 - beta)); at most (1 - beta)/(2 (1 + beta)) so that h S_max <= 1; None: 1/q with
            q = ceil(4 (1 + beta)/(1 - beta)), h S_max <= 1/2 (GD 1/4, beta = 0.5 1/12, beta = 0.9 1/76).
        record_every: record at steps 0, record_every, ... (and ``steps``).
        eigen: "dense" (Hessian + LOBPCG, one compiled scan) or "lanczos" (``sharpness.hessian_top``).
        key: the start block (dense) or start vector (lanczos) of the eigensolver.
        edge_dim: (dense) the top eigenspace tracked, k: Sigma = U X U^T lives in the span U of the top
            k eigenvectors (the matrix form; 1 gives the single-eigenvalue form). With ``eigen="lanczos"``
            the form is the single-eigenvalue one.
        qp_iters: (dense) FISTA iterations of the k x k edge problem per substep (warm-started).
    Returns:
        ``CentralFlow``.
    """
    _validate(eta, beta, steps, dt, record_every, eigen)
    if not (isinstance(edge_dim, int) and edge_dim >= 1):
        raise ValueError(f"central_flow: edge_dim = {edge_dim!r}; allowed: an integer >= 1")
    if not (isinstance(qp_iters, int) and qp_iters >= 1):
        raise ValueError(f"central_flow: qp_iters = {qp_iters!r}; allowed: an integer >= 1")
    if beta:
        warnings.warn(
            "central_flow with beta > 0 integrates a heavy-ball extension derived here, which did not "
            "predict heavy ball in the measurements (median loss error 80 % after the edge on a tanh MLP, "
            "docs/beyond-kernel-regime.md): not a prediction",
            stacklevel=2,
        )
    flat0, unravel = ravel_pytree(params)
    flat_loss = lambda w: loss(unravel(w), *args)  # noqa: E731
    threshold = stability_limit("hb", beta) / eta if beta else stability_limit("gd") / eta
    eta_eff = eta / (1.0 - beta)
    q = int(round(1 / dt)) if dt is not None else math.ceil(4 * (1 + beta) / (1 - beta) - 1e-9)
    h = eta_eff / q
    record = list(range(0, steps, record_every)) + [steps]
    if eigen == "dense":
        k = min(edge_dim, flat0.shape[0])
        out = _run_dense(flat_loss, flat0, threshold, h, q, tuple(np.diff(record)), key, k, qp_iters)
    else:
        out = _run_lanczos(flat_loss, flat0, threshold, h, q, np.diff(record), key)
    w_last, L, S, S2, s2, extra, rank = out
    return CentralFlow(
        step=np.asarray(record),
        t=np.asarray(record, float) * eta_eff,
        loss=L,
        loss_predicted=L + extra,
        sharpness=S,
        second=S2,
        sigma2=s2,
        n_edge=rank.astype(int),
        threshold=float(threshold),
        eta=float(eta),
        beta=float(beta),
        params=unravel(w_last),
    )


def _top_pair(H, U):
    """Top eigenvalues (descending) and eigenvectors of the dense symmetric H: ``eigh`` for small P, else
    LOBPCG (``jax.experimental.sparse.linalg.lobpcg_standard``) warm-started from the block U."""
    if H.shape[0] < DENSE_EIGH_MAX:
        evals, evecs = jnp.linalg.eigh(H)
        k = U.shape[1]
        return evals[::-1][:k], evecs[:, ::-1][:, :k]
    theta, vecs, _ = lobpcg_standard(H, U, m=LOBPCG_ITER, tol=LOBPCG_TOL)
    return theta, vecs


def _pairs(k):
    """Index pairs (i <= j) of a k x k symmetric matrix in svec order, and their weights (1 on the
    diagonal, sqrt 2 off it: svec(A) . svec(B) = <A, B>)."""
    ii, jj = np.triu_indices(k)
    return ii, jj, np.where(ii == jj, 1.0, math.sqrt(2.0))


def _smat(x, k):
    """The symmetric k x k matrix of the svec vector x (inverse of ``svec``)."""
    ii, jj, wts = _pairs(k)
    M = jnp.zeros((k, k), x.dtype).at[ii, jj].set(x / wts)
    return M + M.T - jnp.diag(jnp.diag(M))


def _svec(M):
    ii, jj, wts = _pairs(M.shape[0])
    return M[ii, jj] * wts


def _psd_project(M):
    evals, evecs = jnp.linalg.eigh(M)
    return (evecs * jnp.maximum(evals, 0.0)) @ evecs.T


def _edge_qp(Q, c, x0, k, iters):
    """min_{X >= 0 (PSD)} 1/2 x^T Q x + c^T x over x = svec(X): the complementarity problem
    X >= 0, c + Q x >= 0 (as matrices), <X, c + Q x> = 0 (its KKT conditions; Q is PSD), by accelerated
    projected gradient (FISTA, step 1/lambda_max(Q)) warm-started at x0."""
    step = 1.0 / jnp.maximum(jnp.linalg.eigvalsh(Q)[-1], jnp.finfo(Q.dtype).tiny)
    proj = lambda z: _svec(_psd_project(_smat(z, k)))  # noqa: E731

    def body(carry, _):
        x, z, tk = carry
        x_new = proj(z - step * (Q @ z + c))
        t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * tk * tk))
        return (x_new, x_new + ((tk - 1.0) / t_new) * (x_new - x), t_new), None

    x0 = proj(x0)
    return jax.lax.scan(body, (x0, x0, jnp.ones((), Q.dtype)), None, length=iters)[0][0]


def _run_dense(flat_loss, w0, threshold, h, q, gaps, key, k, qp_iters):
    """Compiled: a ``lax.scan`` of Euler substeps; at each the dense Hessian's top-k block (``_top_pair``,
    warm-started from the previous substep's block) and the edge complementarity problem (``_edge_qp``)
    over it, warm-started from the previous substep's X (carried into the new basis)."""
    grad = jax.grad(flat_loss)
    hessian = jax.hessian(flat_loss)
    ii, jj, wts = _pairs(k)

    def hvp(w, u):
        return jax.jvp(grad, (w,), (u,))[1]

    def d3(w, a, b):  # D^3 L(w)[a, b, .] = grad_w (a^T Hess L(w) b)
        return jax.jvp(lambda z: hvp(z, a), (w,), (b,))[1]

    key = jax.random.PRNGKey(0) if key is None else key
    U0 = jnp.linalg.qr(jax.random.normal(key, (w0.shape[0], k), w0.dtype))[0]
    x0 = jnp.zeros(ii.size, w0.dtype)

    def state(w, U_old, x_old):
        g = grad(w)
        theta, U = _top_pair(hessian(w), U_old)
        G = jax.vmap(lambda a, b: d3(w, a, b))(U[:, ii].T, U[:, jj].T) * wts[:, None]  # (pairs, P)
        Q = 0.5 * G @ G.T
        c = _svec(jnp.diag(threshold - theta)) / h + G @ g
        R = U.T @ U_old  # X_old in the new basis: R X_old R^T
        X = _smat(_edge_qp(Q, c, _svec(R @ _smat(x_old, k) @ R.T), k, qp_iters), k)
        x = _svec(X)
        return g, G, theta, x, X, U

    def substep(carry, _):
        w, U, x = carry
        g, G, _, x, _, U = state(w, U, x)
        return (w - h * (g + 0.5 * (G.T @ x)), U, x), None

    @functools.partial(jax.jit, static_argnums=3)
    def advance(w, U, x, n_sub):
        return jax.lax.scan(substep, (w, U, x), None, length=n_sub)[0]

    @jax.jit
    def observe(w, U, x):
        g, G, theta, x, X, U = state(w, U, x)
        var = jnp.linalg.eigvalsh(X)
        rank = jnp.sum(var > 1e-9 * jnp.maximum(var[-1], jnp.finfo(w.dtype).tiny))
        extra = 0.5 * jnp.sum(jnp.diag(X) * theta)  # 1/2 <X, Theta>: the oscillation's mean loss
        return (flat_loss(w), theta[0], theta[1] if k > 1 else -jnp.inf, jnp.trace(X), extra, rank), U, x

    row, U, x = observe(w0, U0, x0)
    rows, w = [row], w0
    for gap in gaps:
        w, U, x = advance(w, U, x, int(gap) * q)
        row, U, x = observe(w, U, x)
        rows.append(row)
    return (w,) + tuple(np.array([float(r[i]) for r in rows]) for i in range(6))


def _run_lanczos(flat_loss, w0, threshold, h, q, gaps, key):
    """Matrix-free: ``sharpness.hessian_top`` at each substep (Python loop)."""
    grad, grad_sharpness = _derivatives(flat_loss)
    grad, grad_sharpness = jax.jit(grad), jax.jit(grad_sharpness)
    loss_of = lambda w: flat_loss(w)  # noqa: E731
    sigma2 = jax.jit(_sigma2, static_argnums=(3, 4))

    def state(w):
        top = hessian_top(loss_of, w, key=key)
        u = jnp.asarray(top.vector, w.dtype)
        g, gS = grad(w), grad_sharpness(w, u)
        return g, gS, top.value, float(sigma2(top.value, gS, g, threshold, h))

    rows, w = [], w0
    for gap in list(gaps) + [0]:
        g, gS, S, s2 = state(w)
        rows.append((float(flat_loss(w)), S, np.nan, s2))
        for j in range(int(gap) * q):
            if j:
                g, gS, S, s2 = state(w)
            w = w - h * (g + 0.5 * s2 * gS)
    L, S, S2, s2 = (np.array([r[i] for r in rows]) for i in range(4))
    return w, L, S, S2, s2, 0.5 * s2 * S, (s2 > 0).astype(int)


@dataclasses.dataclass(frozen=True)
class CycleAgreement:
    """The central flow against gradient descent, averaged over GD's own self-stabilisation cycles
    (``cycle_agreement``). ``edge_step``: GD's first recorded step with S >= 2/eta (None: GD never
    reached the edge; then no cycle and every figure is None); ``cycles``: the (start, end) steps of the
    complete cycles; ``loss_error``: per complete cycle |mean_flow - mean_GD| / mean_GD of the loss
    (the flow's ``loss_predicted`` and GD's loss, each averaged over the cycle's recorded steps);
    ``sharpness_error``: per complete cycle |mean S_GD / (2/eta) - 1|; ``tail_loss_error``,
    ``tail_sharpness_error``: the same over the incomplete cycle after the last crossing (None if it
    holds fewer than two recorded steps); ``before_edge_loss_error``: max over the recorded steps before
    the edge of |L_flow - L_GD| / L_GD (pointwise: GD does not oscillate there)."""

    edge_step: int | None
    cycles: tuple[tuple[int, int], ...]
    loss_error: tuple[float, ...]
    sharpness_error: tuple[float, ...]
    tail_loss_error: float | None
    tail_sharpness_error: float | None
    before_edge_loss_error: float | None

    def agrees(self, loss_tol: float = 0.10, sharpness_tol: float = 0.05) -> bool | None:
        """Over the whole run: the loss within ``loss_tol`` before the edge (pointwise), over every
        complete cycle and over the tail, and GD's mean sharpness within ``sharpness_tol`` of 2/eta over
        every cycle and the tail; None when GD never reached the edge (no edge to judge)."""
        if self.edge_step is None:
            return None
        loss = [
            e for e in (*self.loss_error, self.tail_loss_error, self.before_edge_loss_error) if e is not None
        ]
        sharp = [e for e in (*self.sharpness_error, self.tail_sharpness_error) if e is not None]
        return max(loss, default=0.0) <= loss_tol and max(sharp, default=0.0) <= sharpness_tol


def cycle_agreement(
    step: np.ndarray,
    loss: np.ndarray,
    sharp_step: np.ndarray,
    sharpness: np.ndarray,
    flow_loss_predicted: np.ndarray,
    threshold: float,
) -> CycleAgreement:
    """Compare the flow's time-averaged loss prediction with GD over GD's self-stabilisation cycles.

    The window rule (fixed, not tuned): a cycle runs from one upward crossing of the threshold 2/eta by
    GD's sharpness trace (``sharp_step``, ``sharpness``: S_{j-1} < 2/eta <= S_j, the crossing dated
    at step sharp_step[j]) to the next; GD's loss and the flow's prediction (both at the recorded steps
    ``step``, the flow's ``flow_loss_predicted`` aligned with ``step``) are averaged over the recorded
    steps k with start <= k < end, and GD's sharpness over its samples in the cycle. A cycle holds one
    excursion above 2/eta and its fall back (Damian et al., "Self-stabilization", arXiv 2209.15594),
    so its mean is GD's time average at that stage of training; a window shorter than a cycle compares
    the flow with part of an excursion. ``loss`` must be recorded at every step (or an odd spacing):
    GD oscillates with period 2 at the edge, and an even spacing samples one phase of it."""
    step = np.asarray(step)
    loss = np.asarray(loss, float)
    pred = np.asarray(flow_loss_predicted, float)
    sharp_step = np.asarray(sharp_step)
    S = np.asarray(sharpness, float)
    if not (step.shape == loss.shape == pred.shape and sharp_step.shape == S.shape):
        raise ValueError("cycle_agreement: step/loss/flow_loss_predicted and sharp_step/sharpness must match")
    hit = np.nonzero(S >= threshold)[0]
    if hit.size == 0:
        return CycleAgreement(None, (), (), (), None, None, None)
    edge = int(sharp_step[hit[0]])
    up = [int(sharp_step[j]) for j in range(1, S.size) if S[j - 1] < threshold <= S[j]]
    if not up or up[0] != edge:  # at the edge from the first sample: the edge is a crossing
        up = [edge] + [k for k in up if k > edge]
    before = step < edge
    pre = float(np.max(np.abs(pred[before] - loss[before]) / loss[before])) if before.any() else None

    def errors(a: int, b: int) -> tuple[float | None, float | None]:
        sel = (step >= a) & (step < b)
        ssel = (sharp_step >= a) & (sharp_step < b)
        if sel.sum() < 2 or not ssel.any():
            return None, None
        gd = float(np.mean(loss[sel]))
        return abs(float(np.mean(pred[sel])) - gd) / gd, abs(float(np.mean(S[ssel])) / threshold - 1.0)

    cycles, lerr, serr = [], [], []
    for a, b in zip(up[:-1], up[1:]):
        le, se = errors(a, b)
        if le is not None and se is not None:
            cycles.append((a, b))
            lerr.append(le)
            serr.append(se)
    tail_l, tail_s = errors(up[-1], int(step[-1]) + 1)
    return CycleAgreement(edge, tuple(cycles), tuple(lerr), tuple(serr), tail_l, tail_s, pre)
