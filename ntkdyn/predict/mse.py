"""Squared loss: exact discrete predictions of any linear method and closed-form limiting ODEs
(conventions: the ``ntkdyn.predict`` package docstring)."""

from __future__ import annotations

import dataclasses

from ntkdyn import optimizers, theory
from ntkdyn.predict._core import (
    Prediction,
    _check_positive,
    _discrete_modes,
    _evaluate,
    _linear_spec,
    _Setup,
    _setup,
    _steps,
    _times,
)


@dataclasses.dataclass(frozen=True)
class DiscretePredictor:
    """Outputs after ``step`` updates of a linear method on L = (c/2)||f - y||^2 (module docstring).

    Call: ``predictor(step=k, fx_train_0=0.0, fx_test_0=None, k_test_train=None) -> Prediction``;
    ``step`` an integer or an integer array (the result gains its shape in front).
    """

    setup: _Setup
    spec: optimizers.OptimizerSpec
    hyper: dict
    loss_scale: float

    @property
    def time_step(self) -> float:
        """ODE time of one update of this method's limit (t = k * time_step)."""
        if self.spec.ode is None:
            raise ValueError(f"optimizer {self.spec.name!r} has no limiting ODE, so no ODE time step")
        return self.spec.ode(self.hyper).time_step

    def __call__(self, *, step, fx_train_0=0.0, fx_test_0=None, k_test_train=None) -> Prediction:
        steps = _steps(step)
        return _evaluate(
            self.setup,
            fx_train_0,
            fx_test_0,
            k_test_train,
            lambda lam, coef: _discrete_modes(self.spec, self.hyper, self.loss_scale * lam, coef, steps),
        )


@dataclasses.dataclass(frozen=True)
class FlowPredictor:
    """Outputs at ODE time ``t`` of a limiting ODE (``optimizers.LimitODE``: e' = -K e, or
    e'' + gamma(t) e' + K e = 0 with e'(0) = 0), K = c H, by its closed form per mode
    (``theory.ode_modes``). Call: ``predictor(t=..., fx_train_0=0.0, fx_test_0=None, k_test_train=None)``.
    """

    setup: _Setup
    ode: optimizers.LimitODE
    loss_scale: float

    @property
    def time_step(self) -> float:
        """ODE time of one update of the discrete method this is the limit of."""
        return self.ode.time_step

    def __call__(self, *, t, fx_train_0=0.0, fx_test_0=None, k_test_train=None) -> Prediction:
        ts = _times(t)
        return _evaluate(
            self.setup,
            fx_train_0,
            fx_test_0,
            k_test_train,
            lambda lam, coef: theory.ode_modes(self.ode, self.loss_scale * lam, coef, ts),
        )


def linear_method_mse(
    k_train_train,
    y_train,
    *,
    optimizer: str,
    eta: float,
    loss_scale: float = 1.0,
    diag_reg: float = 0.0,
    **hyper,
) -> DiscretePredictor:
    """Any registered linear method (``optimizers``: gd, hb, nag, nag_c, ogm, ...) on the squared
    loss L = (c/2)||f - y||^2, c = ``loss_scale``, exactly for the linearised network: per eigenmode
    of K = c (H + diag_reg mean(diag H) I) the state X = (e, ...) moves by X_k = A_k(lambda) X_{k-1}
    (``optimizers.companion``); held-out outputs move by K_x K^+ (f_k - f_0). Called with ``step=``."""
    _check_positive(eta=eta, loss_scale=loss_scale)
    spec, h = _linear_spec(optimizer, {"eta": eta, **hyper})
    return DiscretePredictor(_setup(k_train_train, y_train, diag_reg), spec, h, float(loss_scale))


def gradient_descent_mse(
    k_train_train, y_train, *, eta: float, loss_scale: float = 1.0, diag_reg: float = 0.0
) -> DiscretePredictor:
    """Gradient descent on L = (c/2)||f - y||^2: f_k = y + (I - eta c H_reg)^k (f_0 - y), exactly (the
    discrete counterpart of neural-tangents' ``gradient_descent_mse``, module docstring for the map).
    Called with ``step=`` (number of updates)."""
    return linear_method_mse(
        k_train_train, y_train, optimizer="gd", eta=eta, loss_scale=loss_scale, diag_reg=diag_reg
    )


def heavy_ball_mse(
    k_train_train, y_train, *, eta: float, beta: float, loss_scale: float = 1.0, diag_reg: float = 0.0
) -> DiscretePredictor:
    """Heavy ball v_k = beta v_{k-1} + grad L, theta_k = theta_{k-1} - eta v_k (optax sgd with
    momentum) on L = (c/2)||f - y||^2, exactly per eigenmode. Called with ``step=``."""
    return linear_method_mse(
        k_train_train, y_train, optimizer="hb", eta=eta, beta=beta, loss_scale=loss_scale, diag_reg=diag_reg
    )


def nesterov_mse(
    k_train_train,
    y_train,
    *,
    eta: float,
    beta: float | None = None,
    r: float | None = None,
    loss_scale: float = 1.0,
    diag_reg: float = 0.0,
) -> DiscretePredictor:
    """Nesterov's method on L = (c/2)||f - y||^2, exactly per eigenmode, at the look-ahead iterate
    (optax/torch form, ``optimizers``): constant ``beta`` ('nag'), or ``r`` for NAG-C,
    beta_k = (k-1)/(k+r-1) ('nag_c', torch form). Exactly one of beta, r. Called with ``step=``."""
    if (beta is None) == (r is None):
        raise ValueError(
            f"nesterov_mse: give exactly one of beta (constant momentum) or r (NAG-C); got "
            f"beta={beta!r}, r={r!r}"
        )
    if beta is not None:
        return linear_method_mse(
            k_train_train,
            y_train,
            optimizer="nag",
            eta=eta,
            beta=beta,
            loss_scale=loss_scale,
            diag_reg=diag_reg,
        )
    return linear_method_mse(
        k_train_train, y_train, optimizer="nag_c", eta=eta, r=r, loss_scale=loss_scale, diag_reg=diag_reg
    )


def limit_ode_mse(
    k_train_train,
    y_train,
    *,
    optimizer: str,
    eta: float,
    loss_scale: float = 1.0,
    diag_reg: float = 0.0,
    **hyper,
) -> FlowPredictor:
    """The limiting ODE of ``optimizer`` (``optimizers.LimitODE`` of its declaration) on
    L = (c/2)||f - y||^2 in closed form per mode of K = c H_reg. Called with ``t=`` (ODE time:
    k eta for first order, k sqrt(eta) for second order; ``time_step``)."""
    _check_positive(eta=eta, loss_scale=loss_scale)
    spec, h = _linear_spec(optimizer, {"eta": eta, **hyper})
    if spec.ode is None:
        raise ValueError(f"optimizer {optimizer!r} has no limiting ODE")
    return FlowPredictor(_setup(k_train_train, y_train, diag_reg), spec.ode(h), float(loss_scale))


def gradient_flow_mse(
    k_train_train, y_train, *, loss_scale: float = 1.0, diag_reg: float = 0.0
) -> FlowPredictor:
    """Gradient flow f' = -c H_reg (f - y): f(t) = y + exp(-c H_reg t)(f_0 - y), t = k eta the ODE time
    of gradient descent (neural-tangents' ``gradient_descent_mse`` at t_nt = c N t / lr); ``time_step`` is
    1 (t in units of eta). Called with ``t=``."""
    return limit_ode_mse(
        k_train_train, y_train, optimizer="gd", eta=1.0, loss_scale=loss_scale, diag_reg=diag_reg
    )


def heavy_ball_flow_mse(
    k_train_train, y_train, *, eta: float, beta: float, loss_scale: float = 1.0, diag_reg: float = 0.0
) -> FlowPredictor:
    """Heavy-ball ODE e'' + (1 - beta)/sqrt(eta) e' + c H_reg e = 0, e(0) = f_0 - y, e'(0) = 0, in
    closed form (``theory.damped_oscillator_modes``); t = k sqrt(eta). neural-tangents'
    ``gradient_descent(loss, k, y, learning_rate=eta, momentum=beta)`` at t_nt = t / sqrt(eta)."""
    return limit_ode_mse(
        k_train_train, y_train, optimizer="hb", eta=eta, beta=beta, loss_scale=loss_scale, diag_reg=diag_reg
    )


def nag_c_flow_mse(
    k_train_train, y_train, *, eta: float, r: float = 3.0, loss_scale: float = 1.0, diag_reg: float = 0.0
) -> FlowPredictor:
    """Su-Boyd-Candes ODE e'' + (r/t) e' + c H_reg e = 0 (the limit of NAG-C), in closed form per mode
    (``theory.bessel_modes``); t = k sqrt(eta)."""
    return limit_ode_mse(
        k_train_train, y_train, optimizer="nag_c", eta=eta, r=r, loss_scale=loss_scale, diag_reg=diag_reg
    )
