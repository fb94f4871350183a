"""Ensembles over initialisation: mean and covariance of an infinite-width network's outputs trained
on a squared loss (conventions: the ``ntkdyn.predict`` package docstring)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import numpy as np

from ntkdyn import theory
from ntkdyn.predict._core import (
    Gaussian,
    _check_positive,
    _discrete_modes,
    _linear_spec,
    _Setup,
    _setup,
    _shape_out,
    _steps,
    _targets,
    _times,
)

# --------------------------------------------------------------------------- ensembles over initialisation
Get = Literal["ntk", "nngp"]


@dataclasses.dataclass(frozen=True)
class EnsemblePredictor:
    """Mean and covariance over random initialisations of an infinite-width network trained on
    L = (c/2)||f - y||^2 (module docstring), at ``step=`` (discrete) or ``t=`` (limit ODE).

    At initialisation the outputs are a centred Gaussian process with the NNGP kernel (covariance
    K on every pair of points, independent across outputs). The outputs move linearly in the initial
    error: per eigenmode of the dynamics kernel G_reg = (G + diag_reg mean(diag G) I) (G the NTK,
    ``get="ntk"``: all layers trained, or the NNGP, ``get="nngp"``: only the readout trained), the
    error is multiplied by the method's response R(lambda) (``_discrete_modes``/``theory.ode_modes``
    with unit initial coefficient; GD: (1 - eta c lambda)^k, flow: exp(-c lambda t)). With
    P = V diag(1 - R) V^T on the training points and A = G_x V diag((1 - R)/lambda) V^T on the test
    points (f_x(t) = f_x(0) + A (y - f(0)); ``theory.held_out_map``):

        train: mean = P y,  cov = (I - P) K0 (I - P)^T
        test:  mean = A y,  cov = K_xx - A K_x^T - K_x A^T + A K0 A^T

    with K0 = K (``prior_noise=False``: the network with diag_reg as per-point parameters, module
    docstring) or K + r I (``prior_noise=True``: the regulariser also as observation noise on the
    training outputs, the GP-posterior reading). neural-tangents' ``gradient_descent_mse_ensemble``
    (a flow) is ``get="ntk"`` with ``prior_noise=False`` and ``get="nngp"`` with ``prior_noise=True``
    (identical at diag_reg = 0), at t = lr t_nt / (c N) (N = y_train.size).

    Call: ``predictor(step=... | t=..., nngp_test_train=None, kernel_test_train=None,
    nngp_test_test=None) -> Gaussian``: train moments without test kernels; test moments with all
    three (``kernel_test_train`` the test-train block of the dynamics kernel: the NTK for get="ntk",
    the NNGP for get="nngp", where it may be omitted).
    """

    setup: _Setup
    nngp: np.ndarray
    response: Callable[[np.ndarray], np.ndarray]  # lam (N,) -> ratios when.shape + (N,)
    discrete: bool
    prior_noise: bool
    reg: float  # absolute regulariser r added to G
    get: str

    def __call__(
        self, *, step=None, t=None, nngp_test_train=None, kernel_test_train=None, nngp_test_test=None
    ) -> Gaussian:
        if self.discrete and (step is None or t is not None):
            raise ValueError("a discrete ensemble predictor takes step= (number of updates), not t=")
        if not self.discrete and (t is None or step is not None):
            raise ValueError("a flow ensemble predictor takes t= (ODE time), not step=")
        s = self.setup
        R = self.response(_steps(step) if self.discrete else _times(t))  # when.shape + (n,)
        one_minus = 1.0 - R
        K0 = self.nngp + (self.reg * np.eye(self.nngp.shape[0]) if self.prior_noise else 0.0)
        if nngp_test_train is None and kernel_test_train is None and nngp_test_test is None:
            P = np.einsum("ij,...j,kj->...ik", s.V, one_minus, s.V)
            I_P = np.eye(s.H.shape[0]) - P
            mean = P @ s.y
            cov = I_P @ K0 @ np.swapaxes(I_P, -1, -2)
        else:
            if nngp_test_train is None or nngp_test_test is None:
                raise ValueError(
                    "test moments need nngp_test_train and nngp_test_test (and kernel_test_train)"
                )
            Kx = np.asarray(nngp_test_train, np.float64)
            Kxx = np.asarray(nngp_test_test, np.float64)
            if kernel_test_train is None:
                if self.get != "nngp":
                    raise ValueError("get='ntk' needs kernel_test_train (the NTK test-train block)")
                Gx = Kx
            else:
                Gx = np.asarray(kernel_test_train, np.float64)
            n = s.H.shape[0]
            for name, M, shape in (
                ("nngp_test_train", Kx, (Kx.shape[0], n)),
                ("kernel_test_train", Gx, (Kx.shape[0], n)),
                ("nngp_test_test", Kxx, (Kx.shape[0],) * 2),
            ):
                if M.shape != shape:
                    raise ValueError(f"{name}: shape {M.shape}; allowed: {shape}")
            M = theory.held_out_map(Gx, s.lam, s.V, s.null)  # G_x V diag(1/lambda)
            A = np.einsum("ij,...j,kj->...ik", M, one_minus, s.V)
            At = np.swapaxes(A, -1, -2)
            mean = A @ s.y
            cross = A @ Kx.T
            cov = Kxx - cross - np.swapaxes(cross, -1, -2) + A @ K0 @ At
        return Gaussian(_shape_out(s, mean), cov)


def _ensemble_setup(nngp_train_train, ntk_train_train, y_train, get: str, diag_reg: float):
    if get not in ("ntk", "nngp"):
        raise ValueError(f"get = {get!r}; allowed: 'ntk', 'nngp'")
    y, _ = _targets(y_train)
    n = y.shape[0]
    nngp = np.asarray(nngp_train_train, np.float64)
    if nngp.shape != (n, n):
        raise ValueError(f"nngp_train_train: shape {nngp.shape}; allowed: {(n, n)} (shared across outputs)")
    if get == "ntk":
        if ntk_train_train is None:
            raise ValueError("get='ntk' needs ntk_train_train")
        G = np.asarray(ntk_train_train, np.float64)
        if G.shape != (n, n):
            raise ValueError(f"ntk_train_train: shape {G.shape}; allowed: {(n, n)} (shared across outputs)")
    else:
        G = nngp
    s = _setup(G, y_train, diag_reg)
    reg = diag_reg * float(np.mean(np.diag(G)))
    return s, nngp, reg


def gradient_descent_mse_ensemble(
    nngp_train_train,
    ntk_train_train,
    y_train,
    *,
    eta: float,
    get: Get = "ntk",
    optimizer: str = "gd",
    loss_scale: float = 1.0,
    diag_reg: float = 0.0,
    prior_noise: bool = False,
    **hyper,
) -> EnsemblePredictor:
    """Ensemble mean and covariance after ``step`` updates of ``optimizer`` (gd, hb, nag, nag_c, ...)
    with step size eta on L = (c/2)||f - y||^2 (``EnsemblePredictor``: the formulas, kernels and the
    map to neural-tangents). Called with ``step=``."""
    _check_positive(eta=eta, loss_scale=loss_scale)
    spec, h = _linear_spec(optimizer, {"eta": eta, **hyper})
    s, nngp, reg = _ensemble_setup(nngp_train_train, ntk_train_train, y_train, get, diag_reg)
    lam = loss_scale * s.lam

    def response(steps):
        return _discrete_modes(spec, h, lam, np.ones_like(lam), steps)

    return EnsemblePredictor(s, nngp, response, True, bool(prior_noise), reg, get)


def gradient_flow_mse_ensemble(
    nngp_train_train,
    ntk_train_train,
    y_train,
    *,
    get: Get = "ntk",
    loss_scale: float = 1.0,
    diag_reg: float = 0.0,
    prior_noise: bool = False,
) -> EnsemblePredictor:
    """Ensemble mean and covariance under gradient flow (response exp(-c lambda t), t = k eta):
    neural-tangents' ``gradient_descent_mse_ensemble`` (``EnsemblePredictor`` for the map). Called
    with ``t=``."""
    _check_positive(loss_scale=loss_scale)
    s, nngp, reg = _ensemble_setup(nngp_train_train, ntk_train_train, y_train, get, diag_reg)
    lam = loss_scale * s.lam
    return EnsemblePredictor(
        s, nngp, lambda ts: theory.gradient_flow_modes(lam, ts), False, bool(prior_noise), reg, get
    )
