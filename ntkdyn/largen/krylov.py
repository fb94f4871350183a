"""Lanczos: extreme eigenvalues and matrix functions f_t(K) e0 (the limiting ODEs' solutions)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import linalg as sla

from ntkdyn.largen._types import (
    ExtremeEigenvalues,
    KrylovAction,
    LargeNPrediction,
    _check_keep,
    _check_scale,
    _check_square,
    _check_vector,
    matvec,
)


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


class KrylovBasis:
    """One Lanczos basis of (K, e0), grown on demand and shared by every matrix function of the same
    (K, e0): ``lanczos_function``, ``ode_lanczos`` and ``discrete_lanczos`` given ``basis=`` extend it
    only as far as their tolerance needs, so the ODE, high-resolution ODE and recurrence predictions of
    all optimizers of a run cost max(m) products with K in all instead of the sum of their m.
    ``capacity``: the largest dimension (<= n); memory (capacity + 1) x n float64 (pages touched as the
    basis grows). ``products``: products with K made so far."""

    def __init__(self, K, e0, capacity: int = 800, rows: int | None = None):
        n = _check_square(K)
        self.e0 = _check_vector("e0", e0, n)
        if not (isinstance(capacity, (int, np.integer)) and capacity >= 1):
            raise ValueError(f"capacity: expected an integer >= 1, got {capacity!r}")
        self.n = n
        self.norm0 = float(np.linalg.norm(self.e0))
        self.lanczos = _Lanczos(matvec(K, rows), self.e0, capacity) if self.norm0 > 0 else None

    @property
    def products(self) -> int:
        return 0 if self.lanczos is None else self.lanczos.m

    def check(self, e0: np.ndarray) -> None:
        if e0.shape != self.e0.shape or not np.array_equal(e0, self.e0):
            raise ValueError("basis: it was built for another e0 (a KrylovBasis serves one (K, e0))")


def extreme_eigenvalues(
    K,
    top: int = 1,
    bottom: int = 1,
    *,
    rtol: float = 1e-10,
    max_iter: int = 300,
    seed: int = 0,
    rows: int | None = None,
    basis: KrylovBasis | None = None,
) -> ExtremeEigenvalues:
    """The ``top`` largest and ``bottom`` smallest eigenvalues of the symmetric K by Lanczos (full
    reorthogonalisation, products with K only; random start, ``seed``). With ``basis`` (a
    ``KrylovBasis`` of (K, e0), e0 != 0) the start is e0 and its basis is grown and kept: the matrix
    functions given the same basis later reuse these products (the run's extremes then cost no
    products beyond those its faces make anyway). Ritz values of any Krylov space interlace, so the
    guarantees below are the same for either start; only the modes e0 reaches are seen (those the
    predicted dynamics of e0 involve), and the explicit residuals bound the distance to some
    eigenvalue.

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
    if basis is not None and basis.lanczos is not None:
        if basis.n != n:
            raise ValueError(f"basis: built for n = {basis.n}, K has n = {n}")
        lz = basis.lanczos
        cap = min(max_iter, lz.capacity)
    else:
        lz = _Lanczos(matvec(K, rows), np.random.default_rng(seed).standard_normal(n), max_iter)
        cap = lz.capacity
    mv = lz.mv
    m = min(20, cap)
    while True:
        m = min(lz.extend(m), m)  # a shared basis may be longer already: its first m vectors
        broke = lz.breakdown and m == lz.m
        theta, S = lz.ritz(m)
        est = np.abs(lz.beta[m - 1] * S[-1]) if not broke else np.zeros(m)
        idx = _wanted(m, top, bottom)
        ok = bool(np.all(est[idx] <= rtol * np.max(np.abs(theta))))
        if ok or broke or m >= cap:
            break
        m = min(m + 10, cap)

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
    return ExtremeEigenvalues(tv, bv, tr, br, tg, bg, m, ok or broke)


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
    basis: KrylovBasis | None = None,
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
    once convergence is superlinear; measured in tests/test_largen.py).

    ``basis``: a ``KrylovBasis`` of the same (K, e0) to use and grow (shared with other calls); its
    capacity caps m together with ``max_iter``. Where f_t overflows at the Ritz values (a diverging
    recurrence) it stops at once, unconverged (estimate inf), instead of growing the basis to the cap."""
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
    if basis is not None:
        basis.check(e0)
        assert basis.lanczos is not None  # e0 != 0
        lz = basis.lanczos
    else:
        lz = _Lanczos(matvec(K, rows), e0, max_iter)

    def coefs(m):
        theta, S = lz.ritz(m)
        F = np.asarray(fn(theta), np.float64)
        return norm0 * (F * S[0]) @ S.T  # (n_t, m): ||e0|| S f(Theta) S^T e_1

    cap = min(lz.capacity, max_iter)
    m = max(1, min(start, cap - extra))
    while True:
        want = min(m + extra, cap)
        hi = min(lz.extend(want), want)  # a shared basis may already be longer: use its first rows
        if lz.breakdown and hi == lz.m:  # the Krylov space is invariant: exact at its full dimension
            return _action(lz, coefs(hi), hi, 0.0, True)
        lo = max(1, hi - extra)
        C_hi, C_lo = coefs(hi), coefs(lo)
        if not (np.all(np.isfinite(C_hi)) and np.all(np.isfinite(C_lo))):  # f_t overflows: no estimate
            return _action(lz, C_hi, hi, float("inf"), False)
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
    K_cross=None,
    e0_test=None,
    c_test: float | None = None,
    null_rtol: float | None = None,
    rows: int | None = None,
    basis: KrylovBasis | None = None,
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
    The result's ``error_estimate`` is the relative estimate of ``lanczos_function``; ``basis``: a
    shared ``KrylovBasis`` of (K, e0) (``lanczos_function``).

    Held-out points (``K_cross`` = c H(X_test, X), ``e0_test``, ``c_test``): e_test(t) = e_test(0) +
    K_cross K^+ (e(t) - e0) (``theory.held_out_map``) = e_test(0) + K_cross g_t(K) e0 with the entire
    g_t(lambda) = (f_t(lambda) - 1) / lambda (f_t(0) = 1 for every kind), taken in the same Krylov space
    at the same dimension: ||e0|| V_m S g_t(Theta) S^T e_1, Ritz values below ``null_rtol`` * theta_max
    (default n * eps, ``theory.null_modes``' rule) dropped as K's null modes are there."""
    t = np.asarray(t, np.float64)
    if t.ndim != 1 or t.size == 0 or not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError(f"t: expected a non-empty 1-d array of finite times >= 0, got shape {t.shape}")
    if not hasattr(ode, "modes"):
        raise ValueError(f"ode: expected an ntkdyn.odes kind with .modes(lam, coef, t), got {ode!r}")
    return _function_prediction(
        lambda theta: ode.modes(theta, np.ones_like(theta), t),
        K, e0, c, t.size, keep=keep, steps=None if steps is None else np.asarray(steps), times=t,
        rtol=rtol, atol=atol, extra=extra, max_iter=max_iter, K_cross=K_cross, e0_test=e0_test,
        c_test=c_test, null_rtol=null_rtol, rows=rows, basis=basis,
    )  # fmt: skip


def discrete_lanczos(
    spec,
    hyper: dict,
    K,
    e0,
    steps: int,
    c: float,
    *,
    record=None,
    keep: Sequence[int] = (),
    rtol: float = 1e-10,
    atol: float = 1e-14,
    extra: int = 5,
    max_iter: int = 800,
    K_cross=None,
    e0_test=None,
    c_test: float | None = None,
    null_rtol: float | None = None,
    rows: int | None = None,
    basis: KrylovBasis | None = None,
) -> LargeNPrediction:
    """The optimizer's discrete recurrence (``spec``, ``hyper``; eta a number or a schedule) as a
    matrix function: e_k = p_k(K) e0 with p_k the per-mode recurrence polynomial of degree k
    (``theory.discrete_modes``: X_k = A_k(lambda) X_{k-1}, e the first component), so

        e_k ~= ||e0|| V_m S p_k(Theta) S^T e_1     (``lanczos_function``),

    the eigenbasis path evaluated on the Ritz values of (K, e0) instead of K's eigenvalues. Exact
    (round-off only) once m > k, since p_k(K) e0 = ||e0|| V_m p_k(T_m) e_1 for deg p_k < m; earlier
    when p_k is well approximated on the spectrum (GD's (1 - eta lambda)^k like exp(-k eta lambda):
    m ~ sqrt(k eta lambda_max)), with the a-posteriori estimate of ``lanczos_function``. So the cost is m
    products with K (m <= steps + 1; shared with the ODE faces through ``basis``) instead of the
    ``steps`` products of ``recurrence.discrete_matvec``, which stays the exact reference.

    ``record``: the steps returned (default 0..steps); ``keep``: indices into ``record`` whose e_k is
    returned. Held-out points as in ``ode_lanczos`` (g_k = (p_k(lambda) - 1) / lambda, p_k(0) = 1: no
    update moves a null mode). The result's ``steps`` is ``record``, ``times`` None."""
    from ntkdyn import theory

    if not (isinstance(steps, (int, np.integer)) and steps >= 0):
        raise ValueError(f"steps: expected an integer >= 0, got {steps!r}")
    rec = np.arange(steps + 1) if record is None else np.asarray(record, int)
    if rec.ndim != 1 or rec.size == 0 or rec.min() < 0 or rec.max() > steps or np.any(np.diff(rec) <= 0):
        raise ValueError(f"record: expected ascending distinct steps in [0, {steps}]")
    last = int(rec.max())

    def fn(theta):
        return theory.discrete_modes(spec, hyper, theta, np.ones_like(theta), last)[rec]

    return _function_prediction(
        fn, K, e0, c, rec.size, keep=keep, steps=rec, times=None, rtol=rtol, atol=atol, extra=extra,
        max_iter=max_iter, K_cross=K_cross, e0_test=e0_test, c_test=c_test, null_rtol=null_rtol,
        rows=rows, basis=basis,
    )  # fmt: skip


def _function_prediction(
    fn, K, e0, c, size: int, *, keep, steps, times, rtol, atol, extra, max_iter, K_cross, e0_test, c_test,
    null_rtol, rows, basis,
) -> LargeNPrediction:  # fmt: skip
    """A ``LargeNPrediction`` of e_j = f_j(K) e0 (j < ``size`` rows of ``fn(theta)``): the loss, c e^T K e,
    e at ``keep`` and the held-out errors (``ode_lanczos``)."""
    n = _check_square(K)
    e0 = _check_vector("e0", e0, n)
    c = _check_scale("c", c)
    keep_ix = _check_keep(keep, size)
    act = lanczos_function(
        fn, K, e0, rtol=rtol, atol=atol, extra=extra, max_iter=max_iter, rows=rows, basis=basis
    )
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging recurrence: inf, as the eigen path
        loss = 0.5 * c * np.sum(act.coef * act.coef, axis=1)
        grad = c * act.quadratic()
        errors = act.vectors(keep_ix) if keep_ix.size else None
    test_loss = test_errors = None
    if K_cross is not None:
        K_cross = np.asarray(K_cross)
        e0t = np.asarray(e0_test, np.float64)
        if K_cross.ndim != 2 or K_cross.shape[1] != n or e0t.shape != (K_cross.shape[0],):
            raise ValueError(
                f"K_cross, e0_test: expected shapes (n_test, {n}) and (n_test,), got {K_cross.shape}, "
                f"{e0t.shape}"
            )
        c_test = _check_scale("c_test", c_test)
        m = act.iterations
        theta, S = sla.eigh_tridiagonal(act.alpha, act.beta) if m > 1 else (act.alpha[:1], np.ones((1, 1)))
        tol = (n * np.finfo(np.float64).eps if null_rtol is None else null_rtol) * np.max(np.abs(theta))
        live = np.abs(theta) > tol
        F = np.asarray(fn(theta), np.float64)
        g = np.where(live, (F - 1.0) / np.where(live, theta, 1.0), 0.0)
        G = np.linalg.norm(e0) * (g * S[0]) @ S.T  # (rows, m): K^+ (e_j - e0) in the basis
        et = e0t + (G @ act.basis) @ K_cross.T
        test_loss = 0.5 * c_test * np.sum(et * et, axis=1)
        test_errors = et[keep_ix] if keep_ix.size else None
    return LargeNPrediction(
        "lanczos",
        loss,
        steps,
        times,
        errors,
        keep_ix,
        act.iterations,
        act.estimate,
        rtol,
        act.converged,
        grad_norm_sq=grad,
        test_loss=test_loss,
        test_errors=test_errors,
    )
