"""Kernel-regime predictions at large n without an eigendecomposition (issue 18 §1).

Everything acts on the dynamics kernel K = c H (n x n, symmetric PSD; numpy or jax, float64 or float32
storage) and the initial error e0 = u0 - y only through products K x, so a prediction costs O(n^2) per
product instead of the O(n^3) of ``theory.eigen``. Loss convention as in ``ntkdyn.theory``:
L = (c / 2) ||e||^2 (c from ``models.loss_scale``).

* **Kernels in tiles** (``gram_tiled`` with ``hinf_tile`` / ``empirical_tile``): the lower triangle of
  the Gram in square tiles, each computed in float64 and stored into one preallocated n x n array of
  the requested dtype (mirrored: the result is exactly symmetric). Peak memory: the result plus one
  tile and its temporaries. Storing float32 perturbs K by E with |E_ij| <= 2^-24 |K_ij|
  (``float32_storage_bound`` turns that into a bound on the predicted loss).
* **Extreme eigenvalues** (``extreme_eigenvalues``): Lanczos with full reorthogonalisation; Ritz values
  with explicitly computed residuals ||K y - theta y|| (an eigenvalue of K lies within that distance of
  theta) and the Kato-Temple bound r^2 / gap.
* **Discrete recurrences** (``discrete_matvec``, ``discrete_matvec_batch``): the method's state-space
  recurrence X_k = T_k X_{k-1} + u_k (K e_{k-1}) of ``ntkdyn.optimizers`` in the output space, one
  product with K per step; exact (no truncation), round-off only.
* **ODE solutions** (``ode_lanczos``, ``lanczos_function``): e(t) = f_t(K) e0 for the limiting ODEs
  (exp(-tK) e0, the damped oscillator, the Bessel solution of NAG-C), f_t(K) e0 ~= ||e0|| V_m f_t(T_m) e_1
  on the Krylov space of (K, e0), with m chosen adaptively until the a-posteriori estimate
  ||e_m(t) - e_{m+d}(t)|| <= rtol ||e_{m+d}(t)|| + atol ||e0|| holds at every time.

Every prediction returns a ``LargeNPrediction`` (frozen) that records how it was made.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from scipy import linalg as sla

from ntkdyn import ntk
from ntkdyn.optimizers import OptimizerSpec

Method = Literal["lanczos", "matvec"]
METHODS: tuple[str, ...] = ("lanczos", "matvec")
STORAGE_DTYPES: tuple[str, ...] = ("float64", "float32")
U32 = 2.0**-24  # unit round-off of float32 (round to nearest): |fl(x) - x| <= U32 |x|
Tile = Callable[[slice, slice], np.ndarray]


# --------------------------------------------------------------------------- results
@dataclasses.dataclass(frozen=True)
class LargeNPrediction:
    """A large-n kernel-regime prediction.

    ``steps``: the updates k the rows refer to (matvec; for an ODE read at k * time_step, the steps given,
    else None); ``times``: ODE time of each row (lanczos; None for matvec); ``loss``: (c/2)||e||^2 per row;
    ``errors``: e at the rows ``kept`` (shape (len(kept), n)) or None; ``method``: "matvec" (exact
    recurrence) or "lanczos" (Krylov matrix function); ``iterations``: products with K used (matvec:
    steps; lanczos: the Krylov dimension m + d); ``error_estimate``: lanczos: max over rows of
    ||e_m - e_{m+d}|| / ||e_{m+d}||, an estimate of the relative error of e (the loss's is about twice
    it); matvec: None (no truncation; round-off only, ~ steps * 1e-16 relative); ``tolerance``: the rtol
    the estimate was held to (None for matvec); ``converged``: estimate <= rtol ||e|| + atol ||e0||
    everywhere (always True for matvec). ``grad_norm_sq``: ||grad_theta L||^2 = c e^T K e per row
    (``theory.modal_grad_norm_sq``; lanczos: c C T C^T in the basis, exact there). ``test_loss``,
    ``test_errors``: held-out loss (c_test/2)||e_test||^2 per row and e_test at ``kept`` (matvec with
    ``K_cross``), else None."""

    method: Method
    loss: np.ndarray
    steps: np.ndarray | None
    times: np.ndarray | None
    errors: np.ndarray | None
    kept: np.ndarray
    iterations: int
    error_estimate: float | None
    tolerance: float | None
    converged: bool
    grad_norm_sq: np.ndarray | None = None
    test_loss: np.ndarray | None = None
    test_errors: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class KrylovAction:
    """f_t(K) e0 ~= coef[t] @ basis for several t (``lanczos_function``).

    ``coef``: (n_t, m) coordinates in the orthonormal Krylov basis ``basis`` (m, n), so that
    ||f_t(K) e0|| = ||coef[t]||; ``alpha``, ``beta``: T_m's diagonal (m,) and off-diagonal (m - 1,)
    (V^T K V = T_m, so e^T K e = coef T_m coef^T); ``iterations`` = m; ``estimate``: max over t of
    ||y_{m-d} - y_m|| / ||y_m||; ``converged``: the tolerance held at every t (or the space is invariant)."""

    coef: np.ndarray
    basis: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    iterations: int
    estimate: float
    converged: bool

    def vectors(self, rows=slice(None)) -> np.ndarray:
        """f_t(K) e0 for the chosen rows of t, shape (rows, n)."""
        return self.coef[rows] @ self.basis

    def quadratic(self) -> np.ndarray:
        """e(t)^T K e(t) per t, from T_m (no product with K)."""
        C = self.coef
        TC = C * self.alpha
        TC[:, :-1] += C[:, 1:] * self.beta
        TC[:, 1:] += C[:, :-1] * self.beta
        return np.sum(C * TC, axis=1)


@dataclasses.dataclass(frozen=True)
class ExtremeEigenvalues:
    """Extreme eigenvalues of a symmetric K by Lanczos.

    ``top``: the largest Ritz values, descending; ``bottom``: the smallest, ascending. ``*_residual``:
    ||K y - theta y|| for the unit Ritz vector y (computed with one product each, not the recurrence's
    estimate): some eigenvalue of K lies in [theta - r, theta + r]. ``*_gap_bound``: Kato-Temple
    r^2 / delta, delta the distance from theta to the next Ritz value (a tighter bound once the Ritz
    values around it have converged). ``iterations``: Lanczos steps (products with K). ``converged``:
    every residual estimate <= rtol * |theta_max|. A Ritz value never lies outside the spectrum (Cauchy
    interlacing), so ``bottom[0] >= lambda_min`` and ``top[0] <= lambda_max`` always; an unconverged
    ``bottom[0]`` is an upper bound on lambda_min only."""

    top: np.ndarray
    bottom: np.ndarray
    top_residual: np.ndarray
    bottom_residual: np.ndarray
    top_gap_bound: np.ndarray
    bottom_gap_bound: np.ndarray
    iterations: int
    converged: bool

    @property
    def lambda_max(self) -> float:
        return float(self.top[0])

    @property
    def lambda_min(self) -> float:
        return float(self.bottom[0])


# --------------------------------------------------------------------------- checks, products
def _check_square(K) -> int:
    shape = np.shape(K)
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] == 0:
        raise ValueError(f"K: expected a non-empty square n x n matrix, got shape {shape}")
    return int(shape[0])


def _check_vector(name: str, v, n: int) -> np.ndarray:
    v = np.asarray(v, np.float64)
    if v.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},) to match K, got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name}: expected finite values")
    return v


def matvec(K, rows: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """x -> K x in float64 for x of shape (n,) or (n, r). A float64 K is used as is; a float32 (stored) K
    is converted ``rows`` rows at a time, so no float64 copy of K is made (peak: rows x n float64;
    None: 2^18 / n rows, a 2 MiB block that stays in cache, measured as fast as a float64 K @ x)."""
    n = _check_square(K)
    K = np.asarray(K)
    if K.dtype == np.float64:
        return lambda x: K @ x
    rows = max(1, 2**18 // n) if rows is None else rows
    if not (isinstance(rows, (int, np.integer)) and rows >= 1):
        raise ValueError(f"rows: expected an integer >= 1, got {rows!r}")

    def mv(x):
        out = np.empty(x.shape, np.float64)
        for i in range(0, n, rows):
            out[i : i + rows] = K[i : i + rows].astype(np.float64) @ x
        return out

    return mv


# --------------------------------------------------------------------------- kernels in tiles
def gram_tiled(tile: Tile, n: int, *, dtype: str = "float64", rows: int = 1024, out=None) -> np.ndarray:
    """The symmetric n x n Gram whose block (a, b) is ``tile(a, b)`` (a, b slices of at most ``rows``
    indices; called for the lower triangle b <= a only, diagonal tiles with a == b), computed in float64
    and stored, with its mirror, into ``out`` (preallocated n x n of ``dtype``, or made here).

    Diagonal tiles are symmetrised (T + T^T) / 2, so the result is exactly symmetric. Memory: the result
    and one tile with its temporaries, never a second n x n array. ``dtype="float32"`` stores each entry
    rounded to nearest: K32 = K + E, |E_ij| <= 2^-24 |K_ij| (``float32_storage_bound``)."""
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype: {dtype!r} is not allowed; allowed: {', '.join(STORAGE_DTYPES)}")
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"n: expected an integer >= 1, got {n!r}")
    if not (isinstance(rows, (int, np.integer)) and rows >= 1):
        raise ValueError(f"rows: expected an integer >= 1, got {rows!r}")
    if out is None:
        out = np.empty((n, n), dtype)
    elif out.shape != (n, n) or out.dtype != np.dtype(dtype):
        raise ValueError(f"out: expected a ({n}, {n}) {dtype} array, got {out.shape} {out.dtype}")
    for i0 in range(0, n, rows):
        a = slice(i0, min(n, i0 + rows))
        for j0 in range(0, i0 + 1, rows):
            b = slice(j0, min(n, j0 + rows))
            blk = np.asarray(tile(a, b), np.float64)
            if blk.shape != (a.stop - a.start, b.stop - b.start):
                raise ValueError(f"tile({a}, {b}) returned shape {blk.shape}")
            if i0 == j0:
                blk = 0.5 * (blk + blk.T)
            out[a, b] = blk
            out[b, a] = blk.T
    return out


def hinf_tile(X) -> Tile:
    """Tiles of the paper model's H-infinity, H_ij = x_i.x_j (pi - t_ij) / (2 pi), cos t = x_i.x_j /
    (|x_i||x_j|) (``ntk.paper_kernels``, = ``models.paper_hinf``); diagonal tiles get the exact diagonal
    |x_i|^2 / 2."""
    X = np.asarray(X, np.float64)

    def tile(a: slice, b: slice) -> np.ndarray:
        if a == b:
            return ntk.paper_kernels(X[a])[1]
        return ntk.paper_kernels(X[a], X[b])[1]

    return tile


def mlp_hinf_tile(X, depth: int = 1, W_std: float = 1.0, b_std: float | None = None) -> Tile:
    """Tiles of the infinite-width NTK of a ReLU MLP (``ntk.mlp_kernels``), exact diagonal on diagonal
    tiles."""
    X = np.asarray(X, np.float64)

    def tile(a: slice, b: slice) -> np.ndarray:
        X2 = None if a == b else X[b]
        return ntk.mlp_kernels(X[a], X2, depth, W_std, b_std)[1]

    return tile


def empirical_tile(model, params, consts, X, chunk: int = 256) -> Tile:
    """Tiles of the empirical NTK H(X_a, X_b) at ``params`` (``ntk.cross_gram``: the model's exact fast
    path on the two tiles' inputs, else per-example Jacobian blocks); raw Gram, no loss scale."""
    import jax.numpy as jnp

    X = jnp.asarray(X)

    def tile(a: slice, b: slice) -> np.ndarray:
        return ntk.cross_gram(model, params, consts, X[a], X[b], chunk)

    return tile


def float32_storage_bound(t, norm_E: float, loss0: float, loss_t) -> np.ndarray:
    """Bound on the relative change |L'(t) - L(t)| / L(t) of the gradient-flow / GD loss when K is
    replaced by K' = K + E (e.g. float32 storage: ||E||_2 <= ||E||_F <= 2^-24 ||K||_F).

    Gradient flow, by Duhamel: e'(t) - e(t) = -int_0^t exp(-(t-s)K') E exp(-sK) e0 ds, and
    ||exp(-sK')|| <= e^{s||E||} (lambda_min(K') >= -||E||), so ||delta e|| <= t ||E|| e^{t||E||} ||e0||.
    GD (t = k eta, 0 <= eta lambda <= 2): A'^k - A^k = sum_j A'^j (-eta E) A^{k-1-j} with ||A|| <= 1,
    ||A'|| <= 1 + eta ||E||, the same bound. With delta = ||delta e|| / ||e(t)|| and
    ||e|| = sqrt(2 L / c): |L' - L| / L <= 2 delta + delta^2. Momentum methods have no such norm bound
    (their companion powers are not contractions); their effect is measured in tests/test_largen.py."""
    t = np.asarray(t, np.float64)
    grow = t * norm_E * np.exp(t * norm_E)
    delta = grow * np.sqrt(loss0 / np.asarray(loss_t, np.float64))
    return 2 * delta + delta * delta


# --------------------------------------------------------------------------- Lanczos
class _Lanczos:
    """Lanczos on (K, v0) with full reorthogonalisation (two classical Gram-Schmidt passes per step):
    K V_m = V_m T_m + beta_m v_{m+1} e_m^T, V_m^T V_m = I. Vectors are rows of ``V`` (grown in place)."""

    def __init__(self, mv, v0: np.ndarray, capacity: int):
        n = v0.size
        self.mv, self.n = mv, n
        self.capacity = min(capacity, n)
        self.V = np.empty((self.capacity + 1, n))
        self.alpha = np.empty(self.capacity)
        self.beta = np.empty(self.capacity)
        self.norm = float(np.linalg.norm(v0))
        self.V[0] = v0 / self.norm
        self.m = 0
        self.breakdown = False
        self.scale = 0.0  # running max |alpha|, |beta| (~ ||K||) for the breakdown test

    def extend(self, m: int) -> int:
        m = min(m, self.capacity)
        while self.m < m and not self.breakdown:
            j = self.m
            w = self.mv(self.V[j])
            if j > 0:
                w -= self.beta[j - 1] * self.V[j - 1]
            a = float(self.V[j] @ w)
            w -= a * self.V[j]
            for _ in range(2):
                w -= self.V[: j + 1].T @ (self.V[: j + 1] @ w)
            b = float(np.linalg.norm(w))
            self.alpha[j], self.beta[j] = a, b
            self.scale = max(self.scale, abs(a), b)
            self.m = j + 1
            if b <= 1e-13 * self.scale or self.m == self.n:
                self.breakdown = True  # invariant subspace: the Ritz values are eigenvalues
            else:
                self.V[j + 1] = w / b
        return self.m

    def ritz(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (ascending) and eigenvectors of T_m."""
        if m == 1:
            return self.alpha[:1].copy(), np.ones((1, 1))
        return sla.eigh_tridiagonal(self.alpha[:m], self.beta[: m - 1])


def extreme_eigenvalues(
    K,
    top: int = 1,
    bottom: int = 1,
    *,
    rtol: float = 1e-10,
    max_iter: int = 300,
    seed: int = 0,
    rows: int | None = None,
) -> ExtremeEigenvalues:
    """The ``top`` largest and ``bottom`` smallest eigenvalues of the symmetric K by Lanczos (full
    reorthogonalisation, products with K only; random start, ``seed``).

    Steps are added (10 at a time from 20) until the recurrence's residual estimate beta_m |s_{m,i}| of
    every wanted Ritz pair is <= rtol * |theta_max|, or ``max_iter``, or an invariant subspace is found.
    The residuals returned are then computed explicitly (one product per pair). Convergence is fast for
    a well separated extreme eigenvalue (relative gap g: error ~ exp(-4 m sqrt g)); the small end of an
    NTK spectrum is usually dense (tiny relative gaps), so ``bottom`` may stop unconverged at max_iter:
    its Ritz value is then an upper bound on lambda_min and ``converged`` is False. Absolute accuracy is
    ~ 1e-16 ||K|| (so lambda_min to ~ 1e-16 kappa relative)."""
    n = _check_square(K)
    for name, v in (("top", top), ("bottom", bottom)):
        if not (isinstance(v, (int, np.integer)) and 0 <= v <= n):
            raise ValueError(f"{name}: expected an integer in [0, {n}], got {v!r}")
    if top + bottom == 0:
        raise ValueError("top, bottom: ask for at least one eigenvalue")
    if not (rtol > 0 and max_iter >= 1):
        raise ValueError(f"rtol, max_iter: expected rtol > 0 and max_iter >= 1, got {rtol!r}, {max_iter!r}")
    mv = matvec(K, rows)
    v0 = np.random.default_rng(seed).standard_normal(n)
    lz = _Lanczos(mv, v0, max_iter)
    m = min(20, lz.capacity)
    while True:
        m = lz.extend(m)
        theta, S = lz.ritz(m)
        est = np.abs(lz.beta[m - 1] * S[-1]) if not lz.breakdown else np.zeros(m)
        idx = _wanted(m, top, bottom)
        ok = bool(np.all(est[idx] <= rtol * np.max(np.abs(theta))))
        if ok or lz.breakdown or m >= lz.capacity:
            break
        m += 10

    def pairs(ix):
        vals = theta[ix]
        Y = S[:, ix].T @ lz.V[:m]  # the wanted Ritz vectors, rows
        res = np.array([np.linalg.norm(mv(y) - th * y) for y, th in zip(Y, vals)])
        gap = np.array([np.min(np.abs(np.delete(theta, i) - theta[i])) if m > 1 else np.inf for i in ix])
        return vals, res, res * res / gap

    t_ix = list(range(m - 1, m - 1 - min(top, m), -1))
    b_ix = list(range(min(bottom, m)))
    tv, tr, tg = pairs(t_ix)
    bv, br, bg = pairs(b_ix)
    return ExtremeEigenvalues(tv, bv, tr, br, tg, bg, m, ok or lz.breakdown)


def _wanted(m: int, top: int, bottom: int) -> np.ndarray:
    return np.unique(np.r_[np.arange(min(bottom, m)), np.arange(m - min(top, m), m)]).astype(int)


# --------------------------------------------------------------------------- matrix functions
def lanczos_function(
    fn: Callable[[np.ndarray], np.ndarray],
    K,
    e0,
    *,
    rtol: float = 1e-10,
    atol: float = 1e-14,
    extra: int = 5,
    start: int = 20,
    max_iter: int = 800,
    rows: int | None = None,
) -> KrylovAction:
    """f_t(K) e0 for several t at once, in the Krylov space of (K, e0): with the Lanczos relation
    K V_m = V_m T_m + ..., V_m^T V_m = I, v_1 = e0 / ||e0||,

        f_t(K) e0 ~= ||e0|| V_m f_t(T_m) e_1,   f_t(T_m) = S f_t(Theta) S^T  (T_m = S Theta S^T),

    exact when f_t is a polynomial of degree < m, so the error is that of the best polynomial
    approximation of f_t on the spectrum (Saad 1992; Hochbruck & Lubich 1997: for exp(-tK) it falls
    superlinearly once m > sqrt(t lambda_max); for the oscillators once m exceeds ~ t sqrt(lambda_max) / 2).

    ``fn(theta) -> array (n_t, len(theta))``: f_t at the Ritz values for every t (an entire function,
    evaluated on [lambda_min, lambda_max] only). m grows (x1.5 from ``start``) until, at every t,
    ||y_m(t) - y_{m+d}(t)|| <= rtol ||y_{m+d}(t)|| + atol ||e0|| (d = ``extra``), measured in the basis
    (V orthonormal), or the Krylov space is invariant (exact), or m + d reaches ``max_iter``.

    Returns a ``KrylovAction`` at dimension m + d (the better of the two), with the estimate
    max_t ||y_m - y_{m+d}|| / ||y_{m+d}|| (an estimate of y_m's error, so on the upper side for y_{m+d}
    once convergence is superlinear; measured in tests/test_largen.py)."""
    n = _check_square(K)
    e0 = _check_vector("e0", e0, n)
    if not (rtol > 0 and atol >= 0 and extra >= 1 and start >= 1 and max_iter > extra):
        raise ValueError(
            "rtol > 0, atol >= 0, extra >= 1, start >= 1, max_iter > extra expected, got "
            f"rtol={rtol!r}, atol={atol!r}, extra={extra!r}, start={start!r}, max_iter={max_iter!r}"
        )
    norm0 = float(np.linalg.norm(e0))
    if norm0 == 0.0:
        C = np.zeros((np.asarray(fn(np.zeros(1))).shape[0], 1))
        return KrylovAction(C, np.zeros((1, n)), np.zeros(1), np.zeros(0), 0, 0.0, True)
    lz = _Lanczos(matvec(K, rows), e0, max_iter)

    def coefs(m):
        theta, S = lz.ritz(m)
        F = np.asarray(fn(theta), np.float64)
        return norm0 * (F * S[0]) @ S.T  # (n_t, m): ||e0|| S f(Theta) S^T e_1

    cap = lz.capacity
    m = max(1, min(start, cap - extra))
    while True:
        hi = lz.extend(m + extra)
        if lz.breakdown:  # the Krylov space is invariant: exact at its full dimension
            return _action(lz, coefs(hi), hi, 0.0, True)
        lo = max(1, hi - extra)
        C_hi, C_lo = coefs(hi), coefs(lo)
        diff = np.sqrt(np.linalg.norm(C_hi[:, :lo] - C_lo, axis=1) ** 2 + np.sum(C_hi[:, lo:] ** 2, axis=1))
        size = np.linalg.norm(C_hi, axis=1)
        ok = bool(np.all(diff <= rtol * size + atol * norm0))
        with np.errstate(divide="ignore", invalid="ignore"):
            est = float(np.max(np.where(size > 0, diff / size, np.where(diff > 0, np.inf, 0.0))))
        if ok or hi >= cap:
            return _action(lz, C_hi, hi, est, ok)
        m = max(m + 1, int(1.5 * m))


def _action(lz: _Lanczos, C: np.ndarray, m: int, est: float, ok: bool) -> KrylovAction:
    return KrylovAction(C, lz.V[:m], lz.alpha[:m].copy(), lz.beta[: m - 1].copy(), m, est, ok)


def ode_lanczos(
    ode,
    K,
    e0,
    t,
    c: float,
    *,
    keep: Sequence[int] = (),
    steps=None,
    rtol: float = 1e-10,
    atol: float = 1e-14,
    extra: int = 5,
    max_iter: int = 800,
    rows: int | None = None,
) -> LargeNPrediction:
    """The limiting ODE's solution e(t) = f_t(K) e0 at the times ``t`` by ``lanczos_function``, for any
    ODE kind whose per-mode solution is e_i(t) = f_t(lambda_i) coef_i (``ode.modes(lam, coef, t)``
    linear in coef, the modes uncoupled): ``odes.GradientFlow`` (f = exp(-lambda t)),
    ``odes.ConstantDamping`` (the damped oscillator e^{-gamma t/2} (cosh wt + (gamma/2) sinh(wt)/w),
    w = sqrt(gamma^2/4 - lambda), entire in lambda: ``theory.damped_oscillator_modes``, overflow-free
    for every sign of w^2), ``odes.VanishingDamping`` (Gamma(nu+1) (2/z)^nu J_nu(z), z = sqrt(lambda) t:
    ``theory.bessel_modes``). Each is evaluated on the Ritz values of (K, e0) only.

    ``t``: ODE times (>= 0; e.g. k * ode.time_step); ``c``: the loss scale (L = (c/2)||e||^2);
    ``keep``: indices into t at which e(t) is returned; ``steps``: recorded alongside (optional).
    The result's ``error_estimate`` is the relative estimate of ``lanczos_function``."""
    n = _check_square(K)
    t = np.asarray(t, np.float64)
    if t.ndim != 1 or t.size == 0 or not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError(f"t: expected a non-empty 1-d array of finite times >= 0, got shape {t.shape}")
    if not hasattr(ode, "modes"):
        raise ValueError(f"ode: expected an ntkdyn.odes kind with .modes(lam, coef, t), got {ode!r}")
    keep = _check_keep(keep, t.size)
    act = lanczos_function(
        lambda theta: ode.modes(theta, np.ones_like(theta), t),
        K,
        _check_vector("e0", e0, n),
        rtol=rtol,
        atol=atol,
        extra=extra,
        max_iter=max_iter,
        rows=rows,
    )
    loss = 0.5 * c * np.sum(act.coef * act.coef, axis=1)
    errors = act.vectors(keep) if keep.size else None
    st = None if steps is None else np.asarray(steps)
    return LargeNPrediction(
        "lanczos",
        loss,
        st,
        t,
        errors,
        keep,
        act.iterations,
        act.estimate,
        rtol,
        act.converged,
        grad_norm_sq=c * act.quadratic(),
    )


def _check_keep(keep, size: int) -> np.ndarray:
    keep = np.asarray(list(keep), int)
    if keep.size and (keep.min() < 0 or keep.max() >= size):
        raise ValueError(f"keep: expected indices in [0, {size}), got {keep.tolist()}")
    return keep


# --------------------------------------------------------------------------- discrete recurrences
def discrete_matvec_batch(
    spec: OptimizerSpec,
    hypers: Sequence[dict],
    K,
    e0,
    steps: int,
    c: float,
    *,
    record=None,
    keep: Sequence[int] = (),
    K_cross=None,
    e0_test=None,
    c_test: float | None = None,
    rows: int | None = None,
) -> list[LargeNPrediction]:
    """R runs of one linear method (``spec.method``: GD, HB, NAG, NAG-C, ...; per-run ``hypers``, with
    ``eta`` a number or a schedule) iterated together in the output space, one product K E (n x R) per
    update:

        X_k = T_k X_{k-1} + u_k (K e_{k-1}),   X = (e, J z_1, ..., J z_p),

    X_0 = (e0, e0 for "point" states, 0 for "vector" states), (T_k, u_k) = ``spec.method.step(hyper_k, k)``
    with hyper_k's eta = eta_k (schedule(k - 1), ``schedules.eta_values``). In K's eigenbasis this is
    ``theory.discrete_modes`` mode by mode (A_k(lambda) = T_k + lambda u_k e_0^T); here no eigenvectors.

    Held-out points (``K_cross`` = c H(X_test, X), (n_test, n); ``e0_test``; ``c_test``): the parameters
    move by J^T w (gradients c J^T e), with W_k = T_k W_{k-1} + u_k e_{k-1}, W_0 = 0 (c folded in), so
    e_k = e0 + K W_k[0] and e_test(k) = e_test(0) + K_cross W_k[0]: exact for the linearised model, the
    same as ``theory.held_out_errors`` without K's pseudo-inverse.

    ``e0``: (n,) shared or (n, R) per run; ``record``: the steps whose loss (c/2)||e_k||^2 and squared
    gradient norm c e_k^T K e_k are returned (default 0..steps, ascending); ``keep``: indices into
    ``record`` at which e_k (and e_test) are returned. Cost: steps (+1) products K E (O(n^2 R) each),
    O(n R p^2) per update, and one product K_cross W per recorded step."""
    from ntkdyn import schedules

    n = _check_square(K)
    if spec.method is None:
        raise ValueError(
            f"optimizer {spec.name!r} has no linear recurrence (spec.method is None); "
            "allowed: a method with a LinearMethod, e.g. gd, hb, nag, nag_c"
        )
    if not (isinstance(steps, (int, np.integer)) and steps >= 0):
        raise ValueError(f"steps: expected an integer >= 0, got {steps!r}")
    R = len(hypers)
    if R == 0:
        raise ValueError("hypers: expected at least one run")
    E0 = np.asarray(e0, np.float64)
    E0 = np.repeat(E0[:, None], R, axis=1) if E0.ndim == 1 else E0
    if E0.shape != (n, R) or not np.all(np.isfinite(E0)):
        raise ValueError(f"e0: expected finite values of shape ({n},) or ({n}, {R}), got {np.shape(e0)}")
    rec = np.arange(steps + 1) if record is None else np.asarray(record, int)
    if rec.ndim != 1 or rec.size == 0 or rec.min() < 0 or rec.max() > steps or np.any(np.diff(rec) <= 0):
        raise ValueError(f"record: expected ascending distinct steps in [0, {steps}]")
    keep = _check_keep(keep, rec.size)
    test = K_cross is not None
    if test:
        K_cross = np.asarray(K_cross)
        if K_cross.ndim != 2 or K_cross.shape[1] != n:
            raise ValueError(f"K_cross: expected shape (n_test, {n}), got {K_cross.shape}")
        E0t = np.asarray(e0_test, np.float64)
        E0t = np.repeat(E0t[:, None], R, axis=1) if E0t.ndim == 1 else E0t
        if E0t.shape != (K_cross.shape[0], R):
            raise ValueError(
                f"e0_test: expected shape ({K_cross.shape[0]},) or ({K_cross.shape[0]}, {R}), "
                f"got {np.shape(e0_test)}"
            )
        if c_test is None:
            raise ValueError("c_test: the held-out loss scale is needed with K_cross")
    kinds = spec.method.states
    p = len(kinds)
    X = np.zeros((p + 1, n, R))
    X[0] = E0
    for j, kind in enumerate(kinds, start=1):
        if kind == "point":
            X[j] = E0
    W = np.zeros((p + 1, n, R)) if test else None
    etas = [schedules.eta_values(h["eta"], steps) for h in hypers]
    fixed = spec.constant and not any(schedules.is_scheduled(h.get("eta")) for h in hypers)

    def coeffs(k):
        Ts, us = [], []
        for h, eta in zip(hypers, etas):
            T, u = spec.method.step(schedules.hyper_at(h, eta[k - 1]), float(k))
            Ts.append(np.asarray(T, np.float64))
            us.append(np.asarray(u, np.float64))
        return np.stack(Ts), np.stack(us)  # (R, p+1, p+1), (R, p+1)

    mv = matvec(K, rows)
    loss, grad = np.empty((rec.size, R)), np.empty((rec.size, R))
    kept = np.empty((keep.size, n, R))
    t_loss = np.empty((rec.size, R)) if test else None
    t_kept = np.empty((keep.size, K_cross.shape[0], R)) if test else None
    TU = coeffs(1) if fixed and steps >= 1 else None
    r = 0
    for k in range(steps + 1):
        at = r < rec.size and rec[r] == k
        G = mv(X[0]) if (k < steps or at) else None  # K e_k
        if at:
            loss[r] = 0.5 * c * np.sum(X[0] * X[0], axis=0)
            grad[r] = c * np.sum(X[0] * G, axis=0)
            slots = np.flatnonzero(keep == r)
            kept[slots] = X[0]
            if test:
                et = E0t + K_cross @ W[0]
                t_loss[r] = 0.5 * c_test * np.sum(et * et, axis=0)
                t_kept[slots] = et
            r += 1
        if k < steps:
            T, u = TU if fixed else coeffs(k + 1)
            if test:
                W = np.einsum("rji,inr->jnr", T, W) + np.einsum("rj,nr->jnr", u, X[0])
            X = np.einsum("rji,inr->jnr", T, X) + np.einsum("rj,nr->jnr", u, G)
    return [
        LargeNPrediction(
            "matvec",
            loss[:, i].copy(),
            rec,
            None,
            kept[:, :, i].copy() if keep.size else None,
            keep,
            int(steps),
            None,
            None,
            True,
            grad_norm_sq=grad[:, i].copy(),
            test_loss=t_loss[:, i].copy() if test else None,
            test_errors=t_kept[:, :, i].copy() if test and keep.size else None,
        )
        for i in range(R)
    ]


def discrete_matvec(
    spec: OptimizerSpec,
    hyper: dict,
    K,
    e0,
    steps: int,
    c: float,
    *,
    record=None,
    keep: Sequence[int] = (),
    K_cross=None,
    e0_test=None,
    c_test: float | None = None,
    rows: int | None = None,
) -> LargeNPrediction:
    """One run of ``discrete_matvec_batch`` (the method's exact recurrence by products with K)."""
    return discrete_matvec_batch(
        spec,
        [hyper],
        K,
        e0,
        steps,
        c,
        record=record,
        keep=keep,
        K_cross=K_cross,
        e0_test=e0_test,
        c_test=c_test,
        rows=rows,
    )[0]


def spectral_norm_bound(K) -> float:
    """||K||_F (an upper bound on ||K||_2), accumulated in float64 row by row (no copy of K)."""
    n = _check_square(K)
    K = np.asarray(K)
    acc = 0.0
    for i in range(0, n, 1024):
        blk = K[i : i + 1024].astype(np.float64)
        acc += float(np.sum(blk * blk))
    return math.sqrt(acc)


# --------------------------------------------------------------------------- regimes from the extremes
def regime_from_extremes(spec: OptimizerSpec, hyper: dict, lam_min: float, lam_max: float, ode=None) -> dict:
    """``theory.asymptotic_regime`` (regime, rate, horizon, horizon_kind) and ``theory.stability``'s
    ``stable`` / ``max_spectral_radius`` from the two extreme (live) eigenvalues of K only.

    Exact where rho(A(lambda)) is quasi-convex in lambda, so that its maximum over [lam_min, lam_max] sits
    at an end: GD (|1 - eta lambda|); HB and NAG with constant beta (rho falls while the roots are real at
    small eta lambda, is sqrt(beta) (HB) or sqrt(beta (1 - eta lambda)) (NAG) while they are complex, and
    rises where they are real again); NAG-C's k -> infinity companion (beta -> 1). The horizon of r/t
    damping uses lam_min (``theory.nag_c_crossover_step``). tests/test_largen.py checks the equality with
    the full-spectrum functions on grids of eta and beta, stable and unstable. With an unconverged
    lam_min (``ExtremeEigenvalues.converged`` False: an upper bound) the slowest-mode horizon is a lower
    bound. The count of unstable modes needs the whole spectrum and is not returned."""
    from ntkdyn import theory

    if not (math.isfinite(lam_min) and math.isfinite(lam_max) and lam_min <= lam_max):
        raise ValueError(
            f"lam_min, lam_max: expected finite lam_min <= lam_max, got {lam_min!r}, {lam_max!r}"
        )
    ends = np.array([lam_min, lam_max], np.float64)
    st = theory.stability(spec, hyper, ends)
    return {
        **theory.asymptotic_regime(spec, hyper, ends, ode),
        "stable": st["stable"],
        "max_spectral_radius": st["max_spectral_radius"],
    }
