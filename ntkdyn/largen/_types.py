"""Result types, shared checks and the product K x (``matvec``) of ``ntkdyn.largen``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import numpy as np

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


def _check_scale(name: str, c) -> float:
    """c of L = (c/2)||e||^2: a finite number > 0."""
    if (
        isinstance(c, bool)
        or not isinstance(c, (int, float, np.integer, np.floating))
        or not (0 < c < np.inf)
    ):
        raise ValueError(f"{name}: expected a finite number > 0 (the loss scale), got {c!r}")
    return float(c)


PRODUCT_ROWS = 1024  # rows of K per block of a float32 product (``matvec``)
PRODUCT_COLS = 256  # columns per float32 partial sum: the length of every float32 dot product


def product_error_coefficient(n: int, cols: int = PRODUCT_COLS) -> float:
    """rho with fl(K x) = (K + F) x, |F_ij| <= rho |K_ij|, for ``matvec``'s product of a float32 K with a
    float64 x (componentwise backward error; Higham, *Accuracy and Stability of Numerical Algorithms*,
    2nd ed., 2002, sec. 3.1, eq. (3.4)-(3.5)).

    x is rounded to float32 once (x32 = x (1 + d), |d| <= u = 2^-24); each float32 partial sum over
    c <= ``cols`` columns carries its own factors (1 + theta), |theta| <= gamma_c = c u / (1 - c u); the
    ceil(n / cols) partial sums are added in float64 (|theta| <= gamma_B of u64 = 2^-53). So
    rho = (1 + u)(1 + gamma_c)(1 + gamma64_B) - 1 ~= (c + 1) u: 1.5e-5 at cols = 256 for any n, where one
    float32 dot product over all n columns could only be bounded by gamma_n (2e-3 at n = 32,768).
    Hence ||F||_2 <= || |F| ||_2 <= rho ||K||_F; each product may have its own F."""
    c = min(int(n), int(cols))
    B = -(-int(n) // c)
    gamma = lambda k, u: k * u / (1 - k * u)  # noqa: E731
    return (1 + U32) * (1 + gamma(c, U32)) * (1 + gamma(B, 2.0**-53)) - 1


def matvec(K, rows: int | None = None, cols: int = PRODUCT_COLS) -> Callable[[np.ndarray], np.ndarray]:
    """x -> K x for x of shape (n,) or (n, r), returned in float64. A float64 K: ``K @ x`` (unchanged). A
    float32 (stored) K: in float32, with no float64 copy of K: x rounded to float32 once, then for each
    block of ``rows`` rows (default ``PRODUCT_ROWS``) the float32 products of its ``cols``-column tiles
    (one batched matmul over the tiles, a strided view of K) summed in float64. Error: fl(K x) =
    (K + F) x with |F| <= rho |K|, rho = ``product_error_coefficient(n, cols)`` ~= (cols + 1) 2^-24
    (tested). Measured at n = 16,384: as fast as a plain float32 ``K @ x`` and ~3-7x faster than
    converting K to float64 block by block (docs/large-n.md)."""
    n = _check_square(K)
    K = np.asarray(K)
    if K.dtype == np.float64:
        return lambda x: K @ x
    rows = PRODUCT_ROWS if rows is None else rows
    if not (isinstance(rows, (int, np.integer)) and rows >= 1):
        raise ValueError(f"rows: expected an integer >= 1, got {rows!r}")
    if not (isinstance(cols, (int, np.integer)) and cols >= 1):
        raise ValueError(f"cols: expected an integer >= 1, got {cols!r}")
    if K.dtype != np.float32:
        K = K.astype(np.float64)
        return lambda x: K @ x
    c = min(n, int(cols))
    B, tail = divmod(n, c)  # B full tiles of c columns, then one of ``tail`` columns
    s0, s1 = K.strides

    def mv(x):
        x = np.asarray(x, np.float64)
        x32 = x.astype(np.float32)
        X = x32[: B * c].reshape(B, c, -1)  # (B, c, r)
        out = np.empty(x.shape, np.float64)
        for i in range(0, n, rows):
            r = min(rows, n - i)
            blk = np.lib.stride_tricks.as_strided(
                K[i:], shape=(B, r, c), strides=(c * s1, s0, s1), writeable=False
            )
            acc = np.sum(np.matmul(blk, X), axis=0, dtype=np.float64)  # (r, k)
            if tail:
                acc += K[i : i + r, B * c :] @ x32[B * c :].reshape(tail, -1)
            out[i : i + r] = acc.reshape(out[i : i + r].shape)
        return out

    return mv


def _check_keep(keep, size: int) -> np.ndarray:
    keep = np.asarray(list(keep), int)
    if keep.size and (keep.min() < 0 or keep.max() >= size):
        raise ValueError(f"keep: expected indices in [0, {size}), got {keep.tolist()}")
    return keep
