"""Kernel-regime predictions in neural-tangents' shape: a kernel, targets and hyperparameters in, a
prediction function of the step (discrete methods) or of the ODE time (limits) out.

Conventions (every function here):

* **Kernel.** ``k_train_train`` is the raw NTK H = J J^T of the network outputs (no loss scale, as in
  neural-tangents and ``ntkdyn.ntk``): either shared across the k outputs, shape (n, n) (the traced
  form H ⊗ I_k, exact for infinite-width kernels), or the full Gram over (point, output) pairs, shape
  (n k, n k) with row index i k + a, or neural-tangents' (n, n, k, k) layout (converted). The
  test-train kernel ``k_test_train`` is (n_test, n), (n_test k, n k) or (n_test, n, k, k) alike.
* **Targets.** ``y_train`` of shape (n, k), or (n,) for one output (then the predictions are (n,)).
* **Loss.** Squared: L = (c/2) ||f - y||_F^2 summed over all n k entries, c = ``loss_scale``
  (``models.loss_scale``: half_sum 1, mse 2/n, half_mse 1/n). Other losses: ``loss_scale`` times the
  sum over points of a per-point loss (``LOSSES``).
* **Learning rate.** ``eta`` is the step of gradient descent on the parameters, theta <- theta - eta
  grad L, which moves the outputs by f <- f - eta H grad_f L (exact for the linearised network); for
  squared losses the dynamics kernel is K = c H (``theory``).
* **Time.** Discrete predictors are called with ``step=`` (updates, integers). Limits are called
  with ``t=``, the ODE time of ``optimizers.LimitODE``: t = k eta (first order: gradient flow) and
  t = k sqrt(eta) (second order: heavy ball, NAG-C); ``predictor.time_step`` is the time of one update.
  The two are separate keyword-only arguments so that a step count is never read as a time.
* **diag_reg** is relative, as neural-tangents' default (``diag_reg_absolute_scale=False``): the
  training kernel becomes H + diag_reg * mean(diag H) I (mean over the diagonal of the 2-D kernel);
  the test-train kernel is unchanged. It is exactly the NTK of the network with one extra trainable
  parameter b_i per training point, f(x_i) + sqrt(r) b_i, b_i(0) = 0, r = diag_reg * mean(diag H).

neural-tangents' conventions (``predict`` of neural-tangents 0.6.5), and how they map here:

* ``gradient_descent_mse`` hard-codes L = 1/(2N) ||f - y||^2 with N = ``y_train.size`` (points x
  outputs, even for a shared kernel), so its ``learning_rate`` lr is ntkdyn's c N eta, and its time
  t_nt (steps, may be fractional) is ntkdyn's ODE time t = lr t_nt / (c N). The two coincide
  (t = t_nt, lr = 1, its default) only for c = 1/N, i.e. ``half_mse`` over all entries.
* ``gradient_descent(loss, ..., learning_rate=lr)`` takes the user's loss (no 1/N): eta = lr and
  t = lr t_nt. With ``momentum=m`` it integrates f'' + (1 - m)/sqrt(lr) f' + H grad L = 0 in time
  sqrt(lr) t_nt: the heavy-ball ODE here with eta = lr, beta = m, t = sqrt(lr) t_nt.
* ``diag_reg`` as above; neural-tangents' ``diag_reg_absolute_scale=True`` is ``diag_reg`` divided by
  mean(diag H) here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
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


# --------------------------------------------------------------------------- any loss
def _loss_fn(loss: str | Callable) -> Callable:
    """The per-problem loss sum (before ``loss_scale``): squared 1/2 sum (f - y)^2; softmax_ce
    sum_i [logsumexp(f_i) - y_i . f_i] (y one-hot or probabilities, k >= 2; optax's
    softmax_cross_entropy summed over points); sigmoid_ce sum [softplus(f) - y f], y in {0, 1} (optax's
    sigmoid_binary_cross_entropy summed); or a callable (f, y) -> scalar used as is."""
    import jax
    import jax.numpy as jnp

    if callable(loss):
        return loss
    if loss == "squared":
        return lambda f, y: 0.5 * jnp.sum(jnp.square(f - y))
    if loss == "softmax_ce":
        return lambda f, y: jnp.sum(jax.nn.logsumexp(f, axis=-1) - jnp.sum(y * f, axis=-1))
    if loss == "sigmoid_ce":
        return lambda f, y: jnp.sum(jax.nn.softplus(f) - y * f)
    raise ValueError(f"loss = {loss!r}; allowed: {', '.join(LOSSES)} or a callable (f, y) -> scalar")


def _apply(s: _Setup, K, G):
    """K acting on an output-shaped array G (rows, k): K @ G (shared) or K @ vec(G) (full)."""
    if s.shared:
        return K @ G
    return (K @ G.reshape(-1)).reshape(-1, G.shape[1])


def _check_any_loss(s: _Setup, loss) -> None:
    if loss == "softmax_ce" and s.y.shape[1] < 2:
        raise ValueError("loss 'softmax_ce' needs k >= 2 outputs (one per class); y_train has 1")


@dataclasses.dataclass(frozen=True)
class RecurrencePredictor:
    """Outputs after ``step`` updates of a linear method (``optimizers``) on any loss, in function
    space and exact for the linearised network: with the state X = (f, J z_1, ...) of the method
    (points as outputs, vectors through J), g_k = H grad_f L(f_{k-1}) and X_k = T_k X_{k-1} + u_k g_k
    (training points, kernel H_reg; held-out points the same with K_x in place of H_reg).
    Call: ``predictor(step=..., fx_train_0=0.0, fx_test_0=None, k_test_train=None)``."""

    setup: _Setup
    spec: optimizers.OptimizerSpec
    hyper: dict
    loss: Callable
    loss_scale: float

    def __call__(self, *, step, fx_train_0=0.0, fx_test_0=None, k_test_train=None) -> Prediction:
        import jax
        import jax.numpy as jnp

        s = self.setup
        steps = _steps(step)
        n, k = s.y.shape
        f0 = _initial(fx_train_0, n, k, "fx_train_0")
        cross = _cross(s, k_test_train, fx_test_0)
        Kx, ft0 = cross if cross is not None else (np.zeros((0, n if s.shared else n * k)), np.zeros((0, k)))
        kinds = self.spec.method.states
        with jax.enable_x64(True):
            grad = jax.grad(lambda f: self.loss_scale * self.loss(f, jnp.asarray(s.y)))

            def init(f):
                return (f,) + tuple(f if kind == "point" else jnp.zeros_like(f) for kind in kinds)

            def update(X, Xt, kk):
                T, u = self.spec.method.step(self.hyper, kk)
                G = grad(X[0])
                g, gt = _apply(s, s.H, G), _apply(s, Kx, G)

                def new(X, g):
                    return tuple(sum(T[j][i] * X[i] for i in range(len(X))) + u[j] * g for j in range(len(X)))

                return new(X, g), new(Xt, gt)

            @jax.jit
            def run(f0, ft0):
                def body(carry, kk):
                    X, Xt = update(*carry, kk)
                    return (X, Xt), (X[0], Xt[0])

                ks = jnp.arange(1, int(steps.max(initial=0)) + 1, dtype=jnp.float64)
                _, (fs, fts) = jax.lax.scan(body, (init(f0), init(ft0)), ks)
                return jnp.concatenate([f0[None], fs]), jnp.concatenate([ft0[None], fts])

            fs, fts = (np.asarray(a) for a in run(jnp.asarray(f0), jnp.asarray(ft0)))
        train = fs[steps]
        test = fts[steps] if cross is not None else None
        return Prediction(_shape_out(s, train), None if test is None else _shape_out(s, test))


def gradient_descent(
    loss: LossName | Callable,
    k_train_train,
    y_train,
    *,
    eta: float,
    optimizer: str = "gd",
    loss_scale: float = 1.0,
    diag_reg: float = 0.0,
    **hyper,
) -> RecurrencePredictor:
    """Discrete training with any loss in function space: f_{k+1} = f_k - eta H_reg grad_f L(f_k) for
    ``optimizer="gd"``; any registered linear method (hb, nag, nag_c, ...) with its velocity in
    function space (``RecurrencePredictor``). L = loss_scale * ``loss`` summed over points
    (``_loss_fn``: "squared", "softmax_ce", "sigmoid_ce" or a callable (f, y) -> scalar on (n, k)
    arrays). Exact for the linearised network. Called with ``step=``. neural-tangents has no discrete
    counterpart (its ``gradient_descent`` is the flow: ``gradient_flow``)."""
    _check_positive(eta=eta, loss_scale=loss_scale)
    spec, h = _linear_spec(optimizer, {"eta": eta, **hyper})
    s = _setup(k_train_train, y_train, diag_reg)
    _check_any_loss(s, loss)
    return RecurrencePredictor(s, spec, h, _loss_fn(loss), float(loss_scale))


@dataclasses.dataclass(frozen=True)
class LossFlowPredictor:
    """The gradient flow df/dt = -H_reg grad_f L(f), d f_test/dt = -K_x grad_f L(f) (any loss; no closed
    form), integrated with diffrax Tsit5 (``theory._tsit5``, rtol/atol as given); t = k eta.
    Call: ``predictor(t=..., fx_train_0=0.0, fx_test_0=None, k_test_train=None)``."""

    setup: _Setup
    loss: Callable
    loss_scale: float
    rtol: float
    atol: float

    time_step = 1.0  # t = k * eta: one update of GD at eta = 1 spans t = 1

    def __call__(self, *, t, fx_train_0=0.0, fx_test_0=None, k_test_train=None) -> Prediction:
        import jax
        import jax.numpy as jnp

        s = self.setup
        ts = _times(t)
        flat = ts.ravel()
        order = np.argsort(flat)
        n, k = s.y.shape
        f0 = _initial(fx_train_0, n, k, "fx_train_0")
        cross = _cross(s, k_test_train, fx_test_0)
        Kx, ft0 = cross if cross is not None else (np.zeros((0, n if s.shared else n * k)), np.zeros((0, k)))
        with jax.enable_x64(True):
            grad = jax.grad(lambda f: self.loss_scale * self.loss(f, jnp.asarray(s.y)))

            def field(_, y, args):
                H, Kx = args
                G = grad(y[0])
                return -_apply(s, H, G), -_apply(s, Kx, G)

            sorted_t = np.concatenate([[0.0], flat[order]])
            ys = theory._tsit5(
                field,
                0.0,
                jnp.asarray(sorted_t),
                (jnp.asarray(f0), jnp.asarray(ft0)),
                (jnp.asarray(s.H), jnp.asarray(Kx)),
                self.rtol,
                self.atol,
                1_000_000,
            )
            fs, fts = (np.asarray(a)[1:] for a in ys)
        inv = np.empty_like(order)
        inv[order] = np.arange(order.size)
        train = fs[inv].reshape(ts.shape + (n, k))
        test = fts[inv].reshape(ts.shape + ft0.shape) if cross is not None else None
        return Prediction(_shape_out(s, train), None if test is None else _shape_out(s, test))


def gradient_flow(
    loss: LossName | Callable,
    k_train_train,
    y_train,
    *,
    loss_scale: float = 1.0,
    diag_reg: float = 0.0,
    rtol: float = 1e-10,
    atol: float = 1e-12,
) -> LossFlowPredictor:
    """Gradient flow with any loss, df/dt = -H_reg grad_f L(f), the eta -> 0 limit of
    ``gradient_descent`` at t = k eta; integrated with diffrax (no closed form). neural-tangents'
    ``gradient_descent(loss, k, y, learning_rate=lr)`` (momentum=None) at t_nt = t / lr, with its loss
    equal to loss_scale * ``loss``. Called with ``t=``."""
    _check_positive(loss_scale=loss_scale, rtol=rtol, atol=atol)
    s = _setup(k_train_train, y_train, diag_reg)
    _check_any_loss(s, loss)
    return LossFlowPredictor(s, _loss_fn(loss), float(loss_scale), float(rtol), float(atol))


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
    ):
        if self.discrete and (step is None or t is not None):
            raise ValueError("a discrete ensemble predictor takes step= (number of updates), not t=")
        if not self.discrete and (t is None or step is not None):
            raise ValueError("a flow ensemble predictor takes t= (ODE time), not step=")
        s = self.setup
        R = self.response(_steps(step) if self.discrete else _times(t))  # when.shape + (n,)
        keep = s.V * 1.0  # columns: eigenvectors
        one_minus = 1.0 - R
        K0 = self.nngp + (self.reg * np.eye(self.nngp.shape[0]) if self.prior_noise else 0.0)
        if nngp_test_train is None and kernel_test_train is None and nngp_test_test is None:
            P = np.einsum("ij,...j,kj->...ik", keep, one_minus, keep)
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
            A = np.einsum("ij,...j,kj->...ik", M, one_minus, keep)
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
