"""Neural tangent kernels: empirical Gram for any model, exact fast paths, spectrum, drift.

H_ij = <d f(x_i)/d theta, d f(x_j)/d theta> over the *trained* parameters only (raw Gram, no
loss scale; the dynamics kernel is K = c H, see ``models.loss_scale``).
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ntkdyn.models import Model


def _jacobian_rows(apply, params, consts, X):
    """Per-example Jacobians of f wrt params: a pytree whose leaves are (len(X), *leaf.shape)."""
    def f_single(p, x):
        return apply(p, consts, x[None])[0]
    return jax.vmap(jax.grad(f_single), in_axes=(None, 0))(params, X)


@partial(jax.jit, static_argnums=0)
def _block(apply, params, consts, Xa, Xb):
    Ja = _jacobian_rows(apply, params, consts, Xa)
    Jb = _jacobian_rows(apply, params, consts, Xb)
    blocks = jax.tree.map(lambda a, b: a.reshape(a.shape[0], -1) @ b.reshape(b.shape[0], -1).T, Ja, Jb)
    return sum(jax.tree.leaves(blocks))


def ntk_gram(apply, params, consts, X, chunk: int = 256) -> np.ndarray:
    """Empirical NTK Gram by Jacobian contraction, in blocks of ``chunk`` inputs.

    Memory: two Jacobian blocks of chunk x P entries at a time (P = number of trained
    parameters), e.g. 2 x 256 x 10^6 x 4 B = 2 GB in float32. Returns a float64 numpy array.
    """
    n = X.shape[0]
    starts = list(range(0, n, chunk))
    H = np.zeros((n, n))
    for i in starts:
        for j in starts:
            if j > i:
                continue
            block = np.asarray(_block(apply, params, consts, X[i:i + chunk], X[j:j + chunk]), np.float64)
            H[i:i + chunk, j:j + chunk] = block
            H[j:j + chunk, i:i + chunk] = block.T
    return H


def gram(model: Model, params, consts, X, chunk: int = 256) -> np.ndarray:
    """H for ``model`` at ``params``: its exact fast path when it has one, else ``ntk_gram``."""
    if model.fast_gram is not None:
        return np.asarray(jax.jit(model.fast_gram)(params, consts, X), np.float64)
    return ntk_gram(model.apply, params, consts, X, chunk)


def spectrum(H: np.ndarray) -> dict:
    """lambda_min, lambda_max and condition number kappa of a symmetric PSD matrix."""
    lam = np.linalg.eigvalsh(np.asarray(H, np.float64))
    lo, hi = float(lam[0]), float(lam[-1])
    return {"lambda_min": lo, "lambda_max": hi, "kappa": hi / lo if lo > 0 else float("inf")}


def kernel_drift(H: np.ndarray, H0: np.ndarray) -> float:
    """||H - H0||_F / ||H0||_F."""
    return float(np.linalg.norm(H - H0) / np.linalg.norm(H0))
