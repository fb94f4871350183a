"""Shared pieces of ``ntkdyn.predict``: results, input checks, the eigen-decomposed problem, and the
per-mode evaluation (conventions: the package docstring)."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np

from ntkdyn import optimizers, theory

LossName = Literal["squared", "softmax_ce", "sigmoid_ce"]
LOSSES: tuple[str, ...] = ("squared", "softmax_ce", "sigmoid_ce")


# --------------------------------------------------------------------------- results
@dataclasses.dataclass(frozen=True)
class Prediction:
    """Predicted outputs: ``train`` of shape when.shape + (n, k) (or + (n,) for one output), and
    ``test`` likewise over the test points (None when no test kernel was given)."""

    train: np.ndarray
    test: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Gaussian:
    """Mean (when.shape + (n_x, k)) and covariance (when.shape + (n_x, n_x), the same for every output:
    the outputs of an infinite-width network are independent) of the outputs over initialisations."""

    mean: np.ndarray
    cov: np.ndarray


# --------------------------------------------------------------------------- inputs
@dataclasses.dataclass(frozen=True)
class _Setup:
    """A checked problem: the regularised 2-D kernel and its eigen-decomposition."""

    H: np.ndarray  # (n, n) shared or (n k, n k) full, regularised
    shared: bool
    y: np.ndarray  # (n, k)
    scalar: bool  # y was (n,)
    lam: np.ndarray  # eigenvalues of H (not scaled by c)
    V: np.ndarray
    null: np.ndarray  # numerical null modes of H


def _targets(y_train) -> tuple[np.ndarray, bool]:
    y = np.asarray(y_train, np.float64)
    if y.ndim == 1:
        return y[:, None], True
    if y.ndim != 2:
        raise ValueError(f"y_train: shape {y.shape}; allowed: (n,) or (n, k)")
    return y, False


def _as_2d(kernel, rows: int, n: int, k: int, what: str) -> tuple[np.ndarray, bool]:
    """(2-D kernel, shared) from (rows, n), (rows k, n k) or (rows, n, k, k)."""
    K = np.asarray(kernel, np.float64)
    if K.ndim == 4:
        if K.shape != (rows, n, k, k):
            raise ValueError(
                f"{what}: shape {K.shape}; the (points, points, outputs, outputs) layout "
                f"must be {(rows, n, k, k)}"
            )
        return K.transpose(0, 2, 1, 3).reshape(rows * k, n * k), False
    if K.ndim == 2 and K.shape == (rows, n):
        return K, True
    if K.ndim == 2 and K.shape == (rows * k, n * k):
        return K, False
    raise ValueError(
        f"{what}: shape {K.shape}; allowed for {n} training points and {k} outputs: {(rows, n)} "
        f"(shared across outputs), {(rows * k, n * k)} (full Gram, index point*k + output) "
        f"or {(rows, n, k, k)}"
    )


def _check_positive(**values) -> None:
    for key, v in values.items():
        if not (isinstance(v, (int, float, np.floating)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{key} = {v!r}; allowed: a finite number > 0")


def _setup(k_train_train, y_train, diag_reg: float) -> _Setup:
    y, scalar = _targets(y_train)
    n, k = y.shape
    if not (isinstance(diag_reg, (int, float, np.floating)) and diag_reg >= 0 and math.isfinite(diag_reg)):
        raise ValueError(f"diag_reg = {diag_reg!r}; allowed: a finite number >= 0 (relative to mean(diag K))")
    H, shared = _as_2d(k_train_train, n, n, k, "k_train_train")
    if not np.allclose(H, H.T, rtol=1e-10, atol=1e-12 * np.abs(H).max(initial=0.0)):
        raise ValueError("k_train_train: not symmetric")
    H = add_diag_reg(H, diag_reg)
    lam, V = theory.eigen(H)
    null = theory.null_modes(lam, H.shape[0] * np.finfo(np.float64).eps)
    return _Setup(H, shared, y, scalar, lam, V, null)


def add_diag_reg(H: np.ndarray, diag_reg: float) -> np.ndarray:
    """H + diag_reg * mean(diag H) I: neural-tangents' relative ``diag_reg`` (its default,
    ``diag_reg_absolute_scale=False``), on the 2-D kernel."""
    H = np.asarray(H, np.float64)
    if diag_reg == 0:
        return H
    return H + diag_reg * float(np.mean(np.diag(H))) * np.eye(H.shape[0])


def _initial(fx, rows: int, k: int, what: str) -> np.ndarray:
    f = np.asarray(fx, np.float64)
    if f.ndim == 1 and k == 1 and f.shape[0] == rows:
        f = f[:, None]
    try:
        return np.broadcast_to(f, (rows, k)).astype(np.float64)
    except ValueError:
        raise ValueError(
            f"{what}: shape {f.shape}; allowed: a scalar, ({rows}, {k})"
            + (f" or ({rows},)" if k == 1 else "")
        ) from None


def _cross(s: _Setup, k_test_train, fx_test_0) -> tuple[np.ndarray, np.ndarray] | None:
    """(2-D test-train kernel in the train kernel's layout, initial test outputs (n_t, k))."""
    if k_test_train is None:
        if fx_test_0 is not None:
            raise ValueError("fx_test_0 given without k_test_train")
        return None
    n, k = s.y.shape
    Kx = np.asarray(k_test_train, np.float64)
    rows = Kx.shape[0] if (s.shared or Kx.ndim == 4) else Kx.shape[0] // k
    Kx, shared = _as_2d(Kx, rows, n, k, "k_test_train")
    if shared != s.shared:
        raise ValueError(
            "k_test_train: a shared (n_test, n) kernel needs a shared k_train_train and a full "
            "one a full k_train_train"
        )
    return Kx, _initial(0.0 if fx_test_0 is None else fx_test_0, rows, k, "fx_test_0")


def _to_modes(s: _Setup, e: np.ndarray) -> np.ndarray:
    """Error (n, k) -> coordinates in H's eigenbasis, flat (N,) with N = n k."""
    return (s.V.T @ e).ravel() if s.shared else s.V.T @ e.ravel()


def _from_modes(s: _Setup, c: np.ndarray) -> np.ndarray:
    """Coordinates (..., N) -> outputs (..., n, k)."""
    n, k = s.y.shape
    if s.shared:
        return np.einsum("ij,...jk->...ik", s.V, c.reshape(c.shape[:-1] + (n, k)))
    return (c @ s.V.T).reshape(c.shape[:-1] + (n, k))


def _lam_flat(s: _Setup) -> np.ndarray:
    return np.repeat(s.lam, s.y.shape[1]) if s.shared else s.lam


def _test_change(s: _Setup, Kx: np.ndarray, dc: np.ndarray) -> np.ndarray:
    """Test outputs' change from the train modes' change dc (..., N): K_x H^+ Delta f_train
    (``theory.held_out_map``: exact for the linearised network)."""
    M = theory.held_out_map(Kx, s.lam, s.V, s.null)
    n, k = s.y.shape
    if s.shared:
        return np.einsum("ij,...jk->...ik", M, dc.reshape(dc.shape[:-1] + (n, k)))
    return (dc @ M.T).reshape(dc.shape[:-1] + (Kx.shape[0] // k, k))


def _shape_out(s: _Setup, x: np.ndarray) -> np.ndarray:
    return x[..., 0] if s.scalar else x


# --------------------------------------------------------------------------- squared loss, closed forms
def _discrete_modes(spec, hyper: dict, lam, coef, steps: np.ndarray) -> np.ndarray:
    """Error modes after ``steps`` updates of a linear method (steps.shape + (N,)): for methods with
    constant coefficients the companion power A(lambda)^k X_0 (``optimizers.companion``), else
    ``theory.discrete_modes`` iterated to max(steps)."""
    flat = steps.ravel()
    if spec.constant:
        A = optimizers.companion(spec, hyper, lam, 1)
        X0 = optimizers.initial_state(spec, coef)[..., None]
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.stack([(np.linalg.matrix_power(A, int(k)) @ X0)[:, 0, 0] for k in flat])
    else:
        out = theory.discrete_modes(spec, hyper, lam, coef, int(flat.max(initial=0)))[flat]
    return out.reshape(steps.shape + (np.size(lam),))


def _steps(step) -> np.ndarray:
    k = np.asarray(step)
    if not np.issubdtype(k.dtype, np.integer) or np.any(k < 0):
        raise ValueError(f"step = {step!r}; allowed: integers >= 0 (number of updates); for ODE time use t=")
    return k.astype(np.int64)


def _times(t) -> np.ndarray:
    t = np.asarray(t, np.float64)
    if np.any(~np.isfinite(t)) or np.any(t < 0):
        raise ValueError(f"t = {t!r}; allowed: finite ODE times >= 0")
    return t


def _evaluate(s: _Setup, fx_train_0, fx_test_0, k_test_train, modes_of) -> Prediction:
    n, k = s.y.shape
    f0 = _initial(fx_train_0, n, k, "fx_train_0")
    cross = _cross(s, k_test_train, fx_test_0)
    coef = _to_modes(s, f0 - s.y)
    modes = modes_of(_lam_flat(s), coef)
    train = s.y + _from_modes(s, modes)
    test = None
    if cross is not None:
        Kx, ft0 = cross
        test = ft0 + _test_change(s, Kx, modes - coef)
    return Prediction(_shape_out(s, train), None if test is None else _shape_out(s, test))


def _linear_spec(optimizer: str, hyper: dict):
    spec = optimizers.get(optimizer)
    if spec.method is None:
        raise ValueError(
            f"optimizer {optimizer!r} has no kernel-regime recurrence; allowed: "
            f"{', '.join(n for n, x in sorted(optimizers.REGISTRY.items()) if x.method is not None)}"
        )
    unknown = set(hyper) - set(spec.hyper) - {"eta"}
    if unknown:
        raise ValueError(
            f"optimizer {optimizer!r}: unknown hyperparameter(s) {sorted(unknown)}; "
            f"allowed: eta, {', '.join(spec.hyper) or '(none)'}"
        )
    return spec, optimizers.resolve_hyper(spec, hyper)
