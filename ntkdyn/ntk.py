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


# --------------------------------------------------------------------------- infinite width
def _relu_expectations(S: np.ndarray, d1: np.ndarray, d2: np.ndarray):
    """For (u, v) ~ N(0, [[q1, S], [S, q2]]): E[relu(u) relu(v)] and E[relu'(u) relu'(v)]
    (arc-cosine kernels of degree 1 and 0; Cho & Saul 2009):
    sqrt(q1 q2) (sin t + (pi - t) cos t) / (2 pi) and (pi - t) / (2 pi), cos t = S / sqrt(q1 q2)."""
    norm = np.sqrt(np.outer(d1, d2))
    safe = np.where(norm > 0, norm, 1.0)
    cos = np.clip(np.where(norm > 0, S / safe, 0.0), -1.0, 1.0)
    t = np.arccos(cos)
    return norm * (np.sin(t) + (np.pi - t) * cos) / (2 * np.pi), (np.pi - t) / (2 * np.pi)


def mlp_kernels(X1, X2=None, depth: int = 1, W_std: float = 1.0, b_std: float | None = None):
    """Infinite-width (NNGP, NTK) of a ReLU MLP in NTK parameterisation, float64.

    The network is neural-tangents' ``stax.serial([Dense(w, W_std, b_std), Relu()] * depth,
    Dense(1, W_std, b_std))``: z_{l+1} = W_std / sqrt(fan_in) h_l W + b_std b, W, b ~ N(0, 1)
    (``models.ntk_mlp``). Recursion (Jacot et al. 2018; Lee et al. 2019):
    Sigma_1 = W_std^2 x.x' / d + b_std^2, Theta_1 = Sigma_1, and per hidden layer
    Sigma_{l+1} = W_std^2 E[relu relu](Sigma_l) + b_std^2,
    Theta_{l+1} = Sigma_{l+1} + W_std^2 E[relu' relu'](Sigma_l) Theta_l.
    Returns (Sigma_{depth+1}, Theta_{depth+1}), each n1 x n2 (X2=None means X1).

    The paper model's H∞ (``models.paper_hinf``: only the first layer trained, w ~ N(0, I)) is
    the first-layer part of the depth-1 NTK rescaled by d: H∞ = d (Theta - Sigma) at W_std = 1,
    b_std = 0.
    """
    b2 = 0.0 if b_std is None else float(b_std) ** 2
    w2 = float(W_std) ** 2
    X1 = np.asarray(X1, np.float64)
    X2 = X1 if X2 is None else np.asarray(X2, np.float64)
    d = X1.shape[1]
    S = w2 * (X1 @ X2.T) / d + b2
    q1 = w2 * np.sum(X1 * X1, axis=1) / d + b2
    q2 = w2 * np.sum(X2 * X2, axis=1) / d + b2
    T = S.copy()
    for _ in range(depth):
        E, Ed = _relu_expectations(S, q1, q2)
        S = w2 * E + b2
        T = S + w2 * Ed * T
        q1 = w2 * q1 / 2 + b2  # E[relu(u)^2] = q / 2
        q2 = w2 * q2 / 2 + b2
    return S, T
