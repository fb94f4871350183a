"""Kernels in tiles (stored float64 or float32) and the error float32 storage adds."""

from __future__ import annotations

import math

import numpy as np

from ntkdyn import ntk
from ntkdyn.largen._types import STORAGE_DTYPES, Tile, _check_square


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


def drift_tiled(tile: Tile, H0, *, rows: int = 1024) -> float:
    """||H - H0||_F / ||H0||_F for the symmetric H whose blocks are ``tile(a, b)`` (``gram_tiled``'s
    tiles, lower triangle b <= a, off-diagonal tiles counted twice) against the stored H0 (float64 or
    float32, converted a tile at a time): H is never formed, so the memory is one tile and its
    temporaries besides H0. Same value as ``ntk.kernel_drift(gram_tiled(tile, n), H0)`` up to
    round-off (the diagonal tiles are symmetrised as there)."""
    n = _check_square(H0)
    if not (isinstance(rows, (int, np.integer)) and rows >= 1):
        raise ValueError(f"rows: expected an integer >= 1, got {rows!r}")
    diff = ref = 0.0
    for i0 in range(0, n, rows):
        a = slice(i0, min(n, i0 + rows))
        for j0 in range(0, i0 + 1, rows):
            b = slice(j0, min(n, j0 + rows))
            blk = np.asarray(tile(a, b), np.float64)
            if i0 == j0:
                blk = 0.5 * (blk + blk.T)
            h0 = np.asarray(H0[a, b], np.float64)
            w = 1.0 if i0 == j0 else 2.0
            diff += w * float(np.sum((blk - h0) ** 2))
            ref += w * float(np.sum(h0 * h0))
    return math.sqrt(diff / ref) if ref > 0 else float("nan")


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


def spectral_norm_bound(K) -> float:
    """||K||_F (an upper bound on ||K||_2), accumulated in float64 row by row (no copy of K)."""
    n = _check_square(K)
    K = np.asarray(K)
    acc = 0.0
    for i in range(0, n, 1024):
        blk = K[i : i + 1024].astype(np.float64)
        acc += float(np.sum(blk * blk))
    return math.sqrt(acc)
