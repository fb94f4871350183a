"""Mini-batch (stochastic) gradient methods in the kernel regime: exact mean loss, sampled bands,
linear rates and the batch-size picture of Ma, Bassily & Belkin (2018).

Setting (as ``theory``): error e = u - y, loss L = (c/2)||e||^2, dynamics kernel K = c H with
ascending eigenvalues ``lam`` and orthonormal eigenvectors ``V``; n = number of training points.
A mini-batch step with batch B (b indices) uses the gradient of (c/2)(n/b) sum_{i in B} e_i^2, i.e.

    g = c J^T S e,   S = (n/b) diag(counts of each index in B),   E[S] = I,

so the expected gradient is the full-batch one. Sampling (``train.sampling``):

* ``replacement``: the b indices are i.i.d. uniform on {1..n} (a batch may repeat an index);
* ``shuffle``: each epoch is a fresh uniform permutation cut into n // b batches of b; the last
  n mod b indices of the permutation are skipped that epoch (drop-last). Every batch is then a
  uniform b-subset, so E[S] = I still holds, but the batches of one epoch are dependent.

For a linear method (``optimizers.LinearMethod``) with output-space state X = (e, J z_1, ...),
the kernel-regime recurrence becomes

    X_k = A_k X_{k-1} + u_k (x) K (S_k - I) e_{k-1},        A_k = T_k (x) I + (u_k e_0^T) (x) K,

exact for a linear model. With ``replacement`` the mean E[X_k] follows the full-batch recurrence
and the second moment Q_k = E[X_k X_k^T] follows the exact linear recurrence

    Q_k = A_k Q_{k-1} A_k^T + (u_k u_k^T) (x) K (E[S W S] - W) K,    W = E[e e^T] (block (0, 0) of Q),
    E[S W S] = (1 - 1/b) W + (n/b) Diag(W)      (``batch_moment``; b i.i.d. indices),

so E[L_k] = (c/2) tr W_k is predicted exactly (``second_moment_loss``). ``shuffle`` has no such
closed form; it is predicted by simulating the linear recurrence itself over many sampled orders
(``simulate_losses``). Everything here is float64 numpy; K is n x n, so the exact recurrence costs
O(n^3) per step and the simulation O(runs n^2) per step.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ntkdyn import schedules
from ntkdyn.optimizers import OptimizerSpec, companion, initial_state

SAMPLING = ("replacement", "shuffle")


# --------------------------------------------------------------------------- the batch selector
def batch_moment(M: np.ndarray, b: int) -> np.ndarray:
    """E[S M S] for S = (n/b) diag(counts) of b i.i.d. uniform indices on {1..n}:

        (n/b)^2 [ b(b-1) M / n^2 + b Diag(M) / n ] = (1 - 1/b) M + (n/b) Diag(M)

    (distinct draws are independent with E[E_i] = I/n; a draw with itself gives E[E_i M E_i] =
    Diag(M)/n). ``M`` is n x n; Diag keeps its diagonal."""
    M = np.asarray(M, np.float64)
    n = M.shape[0]
    return (1.0 - 1.0 / b) * M + (n / b) * np.diag(np.diag(M))


def check_batch(n: int, batch_size: int, sampling: str) -> None:
    """ValueError naming the bad value unless 1 <= b (<= n for shuffle) and sampling is known."""
    if sampling not in SAMPLING:
        raise ValueError(f"sampling {sampling!r} is not allowed; allowed: {', '.join(SAMPLING)}")
    if batch_size < 1 or (sampling == "shuffle" and batch_size > n):
        raise ValueError(f"batch_size {batch_size} must be in 1..n = {n} for sampling {sampling!r}")


def batch_counts(rng: np.random.Generator, runs: int, n: int, b: int, sampling: str):
    """An endless stream of (runs, n) index counts per step (``replacement`` or ``shuffle``, module
    docstring), one independent sampler per run."""
    check_batch(n, b, sampling)
    rows = np.arange(runs)[:, None]
    if sampling == "replacement":
        while True:
            flat = (rows * n + rng.integers(0, n, (runs, b))).ravel()
            yield np.bincount(flat, minlength=runs * n).reshape(runs, n).astype(np.float64)
    per_epoch = n // b
    while True:
        perm = rng.permuted(np.broadcast_to(np.arange(n), (runs, n)), axis=1)
        for j in range(per_epoch):
            counts = np.zeros((runs, n))
            counts[np.broadcast_to(rows, (runs, b)), perm[:, j * b : (j + 1) * b]] = 1.0
            yield counts


# --------------------------------------------------------------------------- exact mean loss
def _step_hyper(hyper: dict, etas, k: int) -> dict:
    return schedules.hyper_at(hyper, etas[k - 1]) if etas is not None else hyper


@dataclasses.dataclass(frozen=True)
class HeldOutMap:
    """Held-out outputs in the kernel regime, e_test(k) = e0_test + M (c_k - c_0), c_k = V^T e_k the
    training error's modes (``theory.held_out_map``: M = K_x K^+ V, shape (n_test, n)). The map holds
    along every path of a linearised model, mini-batch ones included: every update (full or
    mini-batch gradient c J^T S e) moves the parameters within the row space of J. ``c_test``: the
    held-out loss scale, L_test = (c_test/2) ||e_test||^2."""

    M: np.ndarray
    e0_test: np.ndarray
    c_test: float


def second_moment_loss(
    spec: OptimizerSpec,
    hyper: dict,
    lam,
    V,
    coef,
    c: float,
    steps: int,
    batch_size: int,
    held_out: HeldOutMap | None = None,
):
    """Exact E[L_k], k = 0..steps, of mini-batch training with ``replacement`` sampling, batch size b,
    in the kernel regime (module docstring): the second moment Q_k of the state X_k in the
    eigenbasis of K (Q has shape (p+1, p+1, n, n)),

        Q_k[r, s] = sum_{p, q} A_k(lam_i)[r, p] A_k(lam_j)[s, q] Q_{k-1}[p, q]_{ij}
                    + u_k[r] u_k[s] (1/b) Lam (n V^T Diag(V W V^T) V - W) Lam,   W = Q_{k-1}[0, 0],

    E[L_k] = (c/2) tr W_k. A scheduled eta uses eta_k (``schedules``). Shape (steps + 1,), float64
    (inf where the prediction overflows: diverging).

    With ``held_out`` (``HeldOutMap``) also the exact mean held-out loss, returned as a second array:
    with d = e0_test - M c_0 and the mean modes m_k = E[c_k] (the full-batch recurrence: the batch
    noise has mean zero),

        E[L_test,k] = (c_test/2) (|d|^2 + 2 d^T M m_k + tr(M W_k M^T)).
    """
    lam = np.asarray(lam, np.float64)
    V = np.asarray(V, np.float64)
    n = lam.size
    X0 = initial_state(spec, coef)  # (n, p+1)
    Q = np.einsum("ir,js->rsij", X0, X0)
    mean = X0.copy()
    step = schedules.step_of(hyper)
    etas = step.values(steps) if step.scheduled else None
    out = np.empty(steps + 1)
    test = None if held_out is None else np.empty(steps + 1)
    if held_out is not None:
        M = np.asarray(held_out.M, np.float64)
        d = np.asarray(held_out.e0_test, np.float64) - M @ np.asarray(coef, np.float64)
        c_test = held_out.c_test

    def record(k):
        out[k] = 0.5 * c * np.trace(Q[0, 0])
        if test is not None:
            quad = np.einsum("ti,ij,tj->", M, Q[0, 0], M)
            test[k] = 0.5 * c_test * (d @ d + 2.0 * d @ (M @ mean[:, 0]) + quad)

    record(0)
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(1, steps + 1):
            h = _step_hyper(hyper, etas, k)
            A = companion(spec, h, lam, k)  # (n, p+1, p+1)
            u = np.asarray(spec.linear.step(h, float(k))[1], np.float64)
            W = Q[0, 0]
            diag = np.einsum("ai,ai->a", V @ W, V)  # diagonal of W in the data basis
            noise = lam[:, None] * (n * (V.T * diag) @ V - W) * lam[None, :] / batch_size
            Q = np.einsum("jsq,rqij->rsij", A, np.einsum("irp,pqij->rqij", A, Q))
            Q += u[:, None, None, None] * u[None, :, None, None] * noise
            mean = np.einsum("irp,ip->ir", A, mean)
            record(k)
    return out if test is None else (out, test)


# --------------------------------------------------------------------------- sampled recurrence
def simulate_losses(
    spec: OptimizerSpec,
    hyper: dict,
    K,
    e0,
    c: float,
    steps: int,
    batch_size: int,
    sampling: str,
    runs: int,
    seed: int = 0,
    held_out: HeldOutMap | None = None,
    V=None,
):
    """L_k, k = 0..steps, of ``runs`` independently sampled orders of the kernel-regime linear
    recurrence X_k = T_k X_{k-1} + u_k (x) K S_k e_{k-1} (output space, float64): shape (runs, steps + 1).
    The Monte-Carlo prediction for ``shuffle`` (and a check of the exact one for ``replacement``).
    With ``held_out`` (and K's eigenvectors ``V``) also each order's held-out loss
    (c_test/2) ||e0_test + M V^T (e_k - e_0)||^2, returned as a second array of the same shape."""
    K = np.asarray(K, np.float64)
    e0 = np.asarray(e0, np.float64)
    n = e0.size
    X = np.broadcast_to(
        initial_state(spec, e0)[None].transpose(0, 2, 1), (runs, len(spec.linear.states) + 1, n)
    ).copy()
    step = schedules.step_of(hyper)
    etas = step.values(steps) if step.scheduled else None
    stream = batch_counts(np.random.default_rng(seed), runs, n, batch_size, sampling)
    out = np.empty((runs, steps + 1))
    test = None if held_out is None else np.empty((runs, steps + 1))
    if held_out is not None:
        M_out = np.asarray(held_out.M, np.float64) @ np.asarray(V, np.float64).T  # K_x K^+, (n_test, n)
        e0_test, c_test = np.asarray(held_out.e0_test, np.float64), held_out.c_test

    def record(k):
        out[:, k] = 0.5 * c * np.sum(X[:, 0] ** 2, axis=1)
        if test is not None:
            e_test = e0_test + (X[:, 0] - e0) @ M_out.T
            test[:, k] = 0.5 * c_test * np.sum(e_test**2, axis=1)

    record(0)
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(1, steps + 1):
            T_rows, u_rows = spec.linear.step(_step_hyper(hyper, etas, k), float(k))
            T, u = np.asarray(T_rows, np.float64), np.asarray(u_rows, np.float64)
            g = ((n / batch_size) * next(stream) * X[:, 0]) @ K  # K S e (K symmetric), (runs, n)
            X = np.einsum("rs,Rsn->Rrn", T, X) + u[None, :, None] * g[:, None, :]
            record(k)
    return out if test is None else (out, test)


@dataclasses.dataclass(frozen=True)
class MeanBand:
    """Predicted mean loss of mini-batch training and the 95 % band for the mean of ``runs`` runs.

    ``mean``: exact (``second_moment``) or sampled (``monte_carlo``). ``sd``: the standard deviation
    of one run's loss at each step (sampled). Band: mean +- z sqrt(sd^2 / runs + var_mean), with
    var_mean = sd^2 / mc_runs when the mean itself is sampled, else 0 (z = 1.96, normal
    approximation of the mean of ``runs`` runs)."""

    mean: np.ndarray
    sd: np.ndarray | None
    lo: np.ndarray
    hi: np.ndarray
    runs: int
    mc_runs: int
    source: str  # "second_moment" | "monte_carlo"


def mean_band(mean_exact, sims: np.ndarray, runs: int, z: float = 1.959963984540054) -> MeanBand:
    """``MeanBand`` from Monte-Carlo losses ``sims`` (mc_runs, T); ``mean_exact`` (T,) or None
    (then the sampled mean is used and its own sampling error widens the band)."""
    sims = np.asarray(sims, np.float64)
    mc = sims.shape[0]
    with np.errstate(invalid="ignore", over="ignore"):
        sd = np.std(sims, axis=0, ddof=1)
        if mean_exact is None:
            mean, half, source = (
                np.mean(sims, axis=0),
                z * sd * math.sqrt(1.0 / runs + 1.0 / mc),
                "monte_carlo",
            )
        else:
            mean, half, source = np.asarray(mean_exact, np.float64), z * sd / math.sqrt(runs), "second_moment"
    return MeanBand(mean, sd, mean - half, mean + half, runs, mc, source)


# --------------------------------------------------------------------------- linear rate
def second_moment_rate(spec: OptimizerSpec, hyper: dict, lam, V, batch_size: int) -> float:
    """Per-step loss factor of mini-batch training (``replacement``) in the kernel regime: the
    spectral radius of the second-moment operator Q -> A Q A^T + (u u^T) (x) (1/b) Lam (n V^T
    Diag(V W V^T) V - W) Lam (``second_moment_loss``, constant methods with a constant eta), so
    that E[L_k] ~ rate^k. Full batch (b -> infinity) gives max_i rho(A(lam_i))^2. Computed with
    ARPACK (``scipy.sparse.linalg.eigs``) on the (p+1)^2 n^2-dimensional operator; 1.0 or more
    means the mean loss does not converge."""
    from scipy.sparse.linalg import LinearOperator, eigs

    if not spec.constant or schedules.step_of(hyper).scheduled:
        raise ValueError(f"second_moment_rate: {spec.name} with this eta is not a constant method")
    lam = np.asarray(lam, np.float64)
    V = np.asarray(V, np.float64)
    n = lam.size
    A = companion(spec, hyper, lam, 1)
    u = np.asarray(spec.linear.step(hyper, 1.0)[1], np.float64)
    P = A.shape[-1]
    if P == 1 and n * n > 400:
        return _first_order_rate(A[:, 0, 0], float(u[0]), lam, V, batch_size)
    uu = np.outer(u, u)[:, :, None, None]

    def apply(q):
        Q = q.reshape(P, P, n, n)
        W = Q[0, 0]
        d = np.einsum("ai,ai->a", V @ W, V)
        noise = lam[:, None] * (n * (V.T * d) @ V - W) * lam[None, :] / batch_size
        out = np.einsum("jsq,rqij->rsij", A, np.einsum("irp,pqij->rqij", A, Q)) + uu * noise
        return out.ravel()

    dim = P * P * n * n
    if dim <= 400:  # small: dense
        M = np.stack([apply(col) for col in np.eye(dim)], axis=1)
        return float(np.max(np.abs(np.linalg.eigvals(M))))
    op = LinearOperator((dim, dim), matvec=apply, dtype=np.float64)
    start = np.einsum("rs,ij->rsij", np.eye(P), np.eye(n)).ravel()
    vals = eigs(op, k=1, which="LM", v0=start, tol=1e-10, maxiter=20000, return_eigenvectors=False)
    return float(np.max(np.abs(vals)))


def _first_order_rate(a, u: float, lam, V, b: int) -> float:
    """``second_moment_rate`` of a method with no auxiliary state (GD-like: x_k = a(lam) x + u lam S e).

    In the eigenbasis the operator is T(W) = D o W + c Lam (V^T Diag(V W V^T) V) Lam with
    D_ij = a_i a_j - u^2 lam_i lam_j / b and c = n u^2 / b: a diagonal part plus a rank-n coupling through
    d = diag(V W V^T). T maps PSD matrices to PSD matrices (an expectation of congruences), so its
    spectral radius is its largest real eigenvalue mu (Krein-Rutman), the root above max D of
    lambda_max(M(mu)) = 1, M(mu)_ab = c sum_ij V_ai V_aj V_bi V_bj lam_i lam_j / (mu - D_ij) (a PSD
    matrix decreasing in mu): found by bisection, O(n^4) per step instead of ARPACK on n^2 unknowns."""
    n = lam.size
    D = np.outer(a, a) - (u * u / b) * np.outer(lam, lam)
    c = n * u * u / b
    P = (V[:, None, :] * V[None, :, :]).reshape(n * n, n)  # P[(a, b), i] = V_ai V_bi
    w = c * np.outer(lam, lam)
    top = float(D.max())

    def excess(mu):  # M_ab = p_ab^T F p_ab, F_ij = c lam_i lam_j / (mu - D_ij)
        M = np.sum((P @ (w / (mu - D))) * P, axis=1).reshape(n, n)
        return float(np.linalg.eigvalsh(0.5 * (M + M.T))[-1]) - 1.0

    lo, step = top, max(abs(top), 1e-12)
    hi = top + step
    while excess(hi) > 0:
        lo, hi, step = hi, hi + 2 * step, 2 * step
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi) or hi - lo <= 1e-14 * abs(hi):
            break
        lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
    return hi


def best_step_size(
    spec: OptimizerSpec, hyper: dict, lam, V, batch_size: int, grid: int = 40
) -> tuple[float, float]:
    """(eta*, rate*): the eta minimising ``second_moment_rate`` at batch size b (other
    hyperparameters fixed), searched on a log grid of ``grid`` points over eta lam_max in
    [1e-3, 4] and refined by a bounded scalar search around the best grid point."""
    from scipy.optimize import minimize_scalar

    lam_max = float(np.max(lam))

    def rate(log_eta):
        return second_moment_rate(spec, {**hyper, "eta": math.exp(log_eta)}, lam, V, batch_size)

    logs = np.linspace(math.log(1e-3 / lam_max), math.log(4.0 / lam_max), grid)
    values = np.array([rate(x) for x in logs])
    i = int(np.argmin(values))
    lo, hi = logs[max(i - 1, 0)], logs[min(i + 1, grid - 1)]
    res = minimize_scalar(rate, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    if res.fun <= values[i]:
        return float(math.exp(res.x)), float(res.fun)
    return float(math.exp(logs[i])), float(values[i])


def steps_to(loss: np.ndarray, eps: float) -> int | None:
    """First k with loss[k] <= eps * loss[0], or None if never within the horizon."""
    hit = np.flatnonzero(np.asarray(loss) <= eps * loss[0])
    return int(hit[0]) if hit.size else None


# --------------------------------------------------------------------------- Ma, Bassily, Belkin (2018)
@dataclasses.dataclass(frozen=True)
class MBBConstants:
    """The constants of Ma, Bassily & Belkin (2018), "The power of interpolation" (arXiv 1712.06559),
    for the kernel regime of L = (c/2)||e||^2 = (1/n) sum_i l_i with per-sample losses
    l_i = (n c / 2) e_i^2: per-sample smoothness beta = max_i n K_ii (the Hessian of l_i is
    H_i = n c J_i^T J_i, and H_i^2 = n K_ii H_i), and the extreme nonzero eigenvalues
    lam_1 = lambda_max(K), lam_n = lambda_min(K) of the Hessian H = c J^T J on the span of the data.
    Their mini-batch SGD w <- w - (eta/b) sum_{i in B} grad l_i is the step used here (g = c J^T S e),
    so their eta is this eta.

    Their bound. With v = w - w* in the span and H_B the mini-batch Hessian (E[H_B] = H),
    E[H_B^2] = (1/b) E[H_i^2] + (1 - 1/b) H^2 <= (beta/b) H + (1 - 1/b) H^2, so one step gives

        E||v'||^2 <= v^T (I - 2 eta H + eta^2 [(beta/b) H + (1 - 1/b) H^2]) v <= g(eta) ||v||^2,
        g(eta) = max over lam in {lam_n, lam_1} of 1 - 2 eta lam + eta^2 lam L_b(lam),
        L_b(lam) = (beta + (b - 1) lam) / b

    (the bracket is a convex quadratic in each eigenvalue lam of H, so its maximum over
    [lam_n, lam_1] is at an end). Two step sizes come from it:

    * ``smooth_step_size`` b / (beta + (b - 1) lam_1) = 1 / L_b(lam_1), knee
      ``smooth_knee_batch_size`` 1 + beta / lam_1: the general convex, beta-smooth form (the step
      that makes eta L_b(lam) <= 1 for every eigenvalue); for a quadratic loss it does not minimise
      the bound unless lam_n = lam_1.
    * ``quadratic_step_size``: the minimiser of g (derived here; the paper states explicit optimal
      step and batch sizes for the quadratic loss). g(lam_1) - g(lam_n) = eta (lam_1 - lam_n)
      (eta [beta/b + (1 - 1/b)(lam_1 + lam_n)] - 2), so g = g(lam_n) for eta <= eta_c =
      2b / (beta + (b - 1)(lam_1 + lam_n)) and g(lam_1) above. g(lam_n) is least at
      eta_n = b / (beta + (b - 1) lam_n), which is <= eta_c iff b <= m* = beta / (lam_1 - lam_n) + 1
      (``quadratic_critical_batch_size``); then eta_n is optimal. Above m*, g(lam_n) still falls
      and g(lam_1) already rises at eta_c (its own minimiser 1 / L_b(lam_1) <= eta_c), so eta_c is.

    These are bounds on E||w - w*||^2; ``best_step_size`` gives the exact best eta(b) of the mean
    loss (the spectral radius of the exact second-moment operator)."""

    beta: float
    lam_1: float
    lam_n: float

    def smooth_step_size(self, b) -> np.ndarray:
        """b / (beta + (b - 1) lam_1) = 1 / L_b(lam_1): MBB's step for a general convex, beta-smooth loss."""
        b = np.asarray(b, np.float64)
        return b / (self.beta + (b - 1.0) * self.lam_1)

    @property
    def smooth_knee_batch_size(self) -> float:
        """1 + beta / lam_1, where the two terms of b L_b(lam_1) = beta + (b - 1) lam_1 are equal: below
        it ``smooth_step_size`` grows about linearly in b, above it it saturates at about 1 / lam_1."""
        return 1.0 + self.beta / self.lam_1

    @property
    def quadratic_critical_batch_size(self) -> float:
        """m* = beta / (lam_1 - lam_n) + 1: up to it ``quadratic_step_size`` is b / (beta + (b - 1) lam_n)
        (linear scaling), above it 2b / (beta + (b - 1)(lam_1 + lam_n)) (saturating at 2 / (lam_1 + lam_n),
        the full-batch GD optimum). inf when lam_1 = lam_n."""
        gap = self.lam_1 - self.lam_n
        return self.beta / gap + 1.0 if gap > 0 else math.inf

    def quadratic_step_size(self, b) -> np.ndarray:
        """The eta minimising the bound's one-step factor ``quadratic_bound_factor`` at batch size b
        (class docstring): b / (beta + (b - 1) lam_n) for b <= m*, else
        2b / (beta + (b - 1)(lam_1 + lam_n))."""
        b = np.asarray(b, np.float64)
        low = b / (self.beta + (b - 1.0) * self.lam_n)
        high = 2.0 * b / (self.beta + (b - 1.0) * (self.lam_1 + self.lam_n))
        return np.where(b <= self.quadratic_critical_batch_size, low, high)

    def quadratic_bound_factor(self, b, eta) -> np.ndarray:
        """g(eta) = max over lam in {lam_n, lam_1} of 1 - 2 eta lam + eta^2 lam (beta + (b - 1) lam) / b:
        the bound's per-step factor for E||w - w*||^2 (class docstring)."""
        b, eta = np.asarray(b, np.float64), np.asarray(eta, np.float64)

        def g(lam):
            return 1.0 - 2.0 * eta * lam + eta**2 * lam * (self.beta + (b - 1.0) * lam) / b

        return np.maximum(g(self.lam_n), g(self.lam_1))

    def quadratic_bound_rate(self, b) -> np.ndarray:
        """The bound's per-step factor at its optimum:
        ``quadratic_bound_factor(b, quadratic_step_size(b))``."""
        return self.quadratic_bound_factor(b, self.quadratic_step_size(b))

    # old names (pipeline.py reads them); they are the general convex-smooth forms
    def bound_step_size(self, b) -> np.ndarray:
        """Old name of ``smooth_step_size`` (the general convex-smooth form, not the quadratic optimum)."""
        return self.smooth_step_size(b)

    @property
    def knee_batch_size(self) -> float:
        """Old name of ``smooth_knee_batch_size``."""
        return self.smooth_knee_batch_size


def mbb_constants(K) -> MBBConstants:
    """``MBBConstants`` of the dynamics kernel K = c H (n x n)."""
    K = np.asarray(K, np.float64)
    lam = np.linalg.eigvalsh(0.5 * (K + K.T))
    return MBBConstants(
        beta=float(K.shape[0] * np.max(np.diag(K))), lam_1=float(lam[-1]), lam_n=float(lam[0])
    )
