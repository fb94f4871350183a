"""Data sets: synthetic sphere data, scikit-learn's bundled digits, user .npz. Nothing downloads.

Each builder returns float64 numpy arrays X (n, d) and y (n,).
"""
from __future__ import annotations

import os

import numpy as np

TARGETS = ("gaussian", "teacher", "smooth")


def unit_sphere(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """n points uniform on the unit sphere S^{d-1} (normalised Gaussians)."""
    X = rng.standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def sphere_targets(rng: np.random.Generator, X: np.ndarray, rule: str, noise: float, teacher_width: int) -> np.ndarray:
    """Targets for sphere data.

    gaussian: y ~ N(0, 1). teacher: a random two-layer ReLU network
    y = (1/sqrt m_t) sum_r a_r relu(w_r . x) with w_r ~ N(0, I), a_r ~ N(0, 1), scaled to unit
    variance. smooth: y = sin(pi v.x) + (v'.x)^2 for random unit v, v', centred and scaled to unit
    variance. Then y += noise * N(0, 1).
    """
    n, d = X.shape
    if rule == "gaussian":
        y = rng.standard_normal(n)
    elif rule == "teacher":
        W = rng.standard_normal((teacher_width, d))
        a = rng.standard_normal(teacher_width)
        y = np.maximum(X @ W.T, 0) @ a / np.sqrt(teacher_width)
    elif rule == "smooth":
        v, w = unit_sphere(rng, 2, d)
        y = np.sin(np.pi * X @ v) + (X @ w) ** 2
    else:
        raise ValueError(f"data.target: unknown rule {rule!r}; allowed: {', '.join(TARGETS)}")
    if rule != "gaussian":
        y = (y - y.mean()) / (y.std() + 1e-300)
    return y + noise * rng.standard_normal(n)


def sphere(n: int, d: int, target: str, seed: int, noise: float = 0.0, teacher_width: int = 64):
    rng = np.random.default_rng(seed)
    X = unit_sphere(rng, n, d)
    return X, sphere_targets(rng, X, target, noise, teacher_width)


def normalise(X: np.ndarray, how: str) -> np.ndarray:
    """unit: each row scaled to norm 1; standardize: each column to mean 0, std 1; none."""
    if how == "unit":
        return X / np.linalg.norm(X, axis=1, keepdims=True)
    if how == "standardize":
        std = X.std(axis=0)
        return (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)
    if how == "none":
        return X
    raise ValueError(f"data.normalize: unknown {how!r}; allowed: unit, standardize, none")


def digits(n: int, classes: list[int] | None, target: str, normalize: str, seed: int):
    """scikit-learn's bundled 8x8 digits (1797 images, no download), n drawn at random.

    target 'pm1': +1 for the first listed class, -1 for the others; 'label': the digit as float.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    X, labels = data.data.astype(np.float64), data.target
    if classes:
        keep = np.isin(labels, classes)
        X, labels = X[keep], labels[keep]
    if n > len(X):
        raise ValueError(f"data.n={n} is more than the {len(X)} digits of classes {classes}")
    idx = np.random.default_rng(seed).permutation(len(X))[:n]
    X, labels = X[idx], labels[idx]
    if target == "pm1":
        first = classes[0] if classes else 0
        y = np.where(labels == first, 1.0, -1.0)
    elif target == "label":
        y = labels.astype(np.float64)
    else:
        raise ValueError(f"data.target: unknown {target!r} for digits; allowed: pm1, label")
    return normalise(X, normalize), y


def from_npz(path: str, normalize: str = "none"):
    """User data: an .npz with X (n, d) and y (n,) or (n, 1)."""
    if not os.path.exists(path):
        raise ValueError(f"data.path: file not found: {path}")
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"data.path: cannot read {path} as .npz ({exc})") from None
    for key in ("X", "y"):
        if key not in arrays:
            raise ValueError(f"data.path: {path} has no array {key!r} (it has {sorted(arrays)})")
    X, y = np.asarray(arrays["X"], np.float64), np.asarray(arrays["y"], np.float64)
    if X.ndim != 2:
        raise ValueError(f"data.path: X must be 2-D (n, d), got shape {X.shape}")
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.shape != (X.shape[0],):
        raise ValueError(f"data.path: y must have shape ({X.shape[0]},), got {y.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError(f"data.path: {path} holds non-finite values")
    return normalise(X, normalize), y
