"""Any loss in function space: the exact recurrence of a linear method for the linearised network and
the gradient flow integrated with diffrax (conventions: the ``ntkdyn.predict`` package docstring)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import numpy as np

from ntkdyn import optimizers, theory
from ntkdyn.predict._core import (
    LOSSES,
    LossName,
    Prediction,
    _check_positive,
    _cross,
    _initial,
    _linear_spec,
    _Setup,
    _setup,
    _shape_out,
    _steps,
    _times,
)


# --------------------------------------------------------------------------- any loss
def _squared(f, y):
    import jax.numpy as jnp

    return 0.5 * jnp.sum(jnp.square(f - y))


def _softmax_ce(f, y):
    import jax
    import jax.numpy as jnp

    return jnp.sum(jax.nn.logsumexp(f, axis=-1) - jnp.sum(y * f, axis=-1))


def _sigmoid_ce(f, y):
    import jax
    import jax.numpy as jnp

    return jnp.sum(jax.nn.softplus(f) - y * f)


_NAMED = {"squared": _squared, "softmax_ce": _softmax_ce, "sigmoid_ce": _sigmoid_ce}


def _loss_fn(loss: str | Callable) -> Callable:
    """The per-problem loss sum (before ``loss_scale``): squared 1/2 sum (f - y)^2; softmax_ce
    sum_i [logsumexp(f_i) - y_i . f_i] (y one-hot or probabilities, k >= 2; optax's
    softmax_cross_entropy summed over points); sigmoid_ce sum [softplus(f) - y f], y in {0, 1} (optax's
    sigmoid_binary_cross_entropy summed); or a callable (f, y) -> scalar used as is."""
    if callable(loss):
        return loss
    if loss in _NAMED:
        return _NAMED[loss]
    raise ValueError(f"loss = {loss!r}; allowed: {', '.join(LOSSES)} or a callable (f, y) -> scalar")


def _apply(shared: bool, K, G):
    """K acting on an output-shaped array G (rows, k): K @ G (shared) or K @ vec(G) (full)."""
    if shared:
        return K @ G
    return (K @ G.reshape(-1)).reshape(-1, G.shape[1])


def _check_any_loss(s: _Setup, loss) -> None:
    if loss == "softmax_ce" and s.y.shape[1] < 2:
        raise ValueError("loss 'softmax_ce' needs k >= 2 outputs (one per class); y_train has 1")


def _test_inputs(s: _Setup, k_test_train, fx_test_0):
    """(test-train kernel, initial test outputs, whether given): empty arrays when not given."""
    n, k = s.y.shape
    cross = _cross(s, k_test_train, fx_test_0)
    if cross is None:
        return np.zeros((0, n if s.shared else n * k)), np.zeros((0, k)), False
    return cross[0], cross[1], True


@functools.lru_cache(maxsize=32)
def _recurrence_program(
    loss: Callable, optimizer: str, hyper: tuple, shared: bool, loss_scale: float, steps: int
):
    """A compiled run (H, Kx, y, f0, ft0) -> (f_k, f_test_k) for k = 0..steps (``RecurrencePredictor``),
    cached per loss, method, hyperparameters, kernel layout and length; the kernels are arguments."""
    import jax
    import jax.numpy as jnp

    spec, h = optimizers.get(optimizer), dict(hyper)
    method = spec.linear
    kinds = method.states
    grad = jax.grad(lambda f, y: loss_scale * loss(f, y))

    def init(f):
        return (f,) + tuple(f if kind == "point" else jnp.zeros_like(f) for kind in kinds)

    def new(T, u, X, g):
        return tuple(sum(T[j][i] * X[i] for i in range(len(X))) + u[j] * g for j in range(len(X)))

    @jax.jit
    def run(H, Kx, y, f0, ft0):
        def body(carry, kk):
            X, Xt = carry
            T, u = method.step(h, kk)
            G = grad(X[0], y)
            X, Xt = new(T, u, X, _apply(shared, H, G)), new(T, u, Xt, _apply(shared, Kx, G))
            return (X, Xt), (X[0], Xt[0])

        ks = jnp.arange(1, steps + 1, dtype=jnp.float64)
        _, (fs, fts) = jax.lax.scan(body, (init(f0), init(ft0)), ks)
        return jnp.concatenate([f0[None], fs]), jnp.concatenate([ft0[None], fts])

    return run


@dataclasses.dataclass(frozen=True)
class RecurrencePredictor:
    """Outputs after ``step`` updates of a linear method (``optimizers``) on any loss, in function
    space and exact for the linearised network: with the state X = (f, J z_1, ...) of the method
    (points as outputs, vectors through J), g_k = H grad_f L(f_{k-1}) and X_k = T_k X_{k-1} + u_k g_k
    (training points, kernel H_reg; held-out points the same with K_x in place of H_reg). One compiled
    ``lax.scan`` to max(step), cached across calls of equal length.
    Call: ``predictor(step=..., fx_train_0=0.0, fx_test_0=None, k_test_train=None)``."""

    setup: _Setup
    spec: optimizers.OptimizerSpec
    hyper: dict
    loss: Callable
    loss_scale: float

    def __call__(self, *, step, fx_train_0=0.0, fx_test_0=None, k_test_train=None) -> Prediction:
        import jax

        s = self.setup
        steps = _steps(step)
        n, k = s.y.shape
        f0 = _initial(fx_train_0, n, k, "fx_train_0")
        Kx, ft0, given = _test_inputs(s, k_test_train, fx_test_0)
        hyper = tuple(sorted(self.hyper.items()))
        with jax.enable_x64(True):
            run = _recurrence_program(
                self.loss, self.spec.name, hyper, s.shared, self.loss_scale, int(steps.max(initial=0))
            )
            fs, fts = (np.asarray(a) for a in run(s.H, Kx, s.y, f0, ft0))
        train = fs[steps]
        test = fts[steps] if given else None
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


@functools.lru_cache(maxsize=32)
def _flow_program(loss: Callable, shared: bool, loss_scale: float, rtol: float, atol: float):
    """A compiled diffrax solve (H, Kx, y, f0, ft0, ts) -> (f(ts), f_test(ts)) (``LossFlowPredictor``),
    cached per loss, kernel layout and tolerances."""
    import jax

    grad = jax.grad(lambda f, y: loss_scale * loss(f, y))

    def field(_, state, args):
        H, Kx, y = args
        G = grad(state[0], y)
        return -_apply(shared, H, G), -_apply(shared, Kx, G)

    @jax.jit
    def solve(H, Kx, y, f0, ft0, ts):
        return theory._tsit5(field, 0.0, ts, (f0, ft0), (H, Kx, y), rtol, atol, 1_000_000)

    return solve


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

        s = self.setup
        ts = _times(t)
        flat = ts.ravel()
        order = np.argsort(flat)
        n, k = s.y.shape
        f0 = _initial(fx_train_0, n, k, "fx_train_0")
        Kx, ft0, given = _test_inputs(s, k_test_train, fx_test_0)
        with jax.enable_x64(True):
            solve = _flow_program(self.loss, s.shared, self.loss_scale, self.rtol, self.atol)
            ys = solve(s.H, Kx, s.y, f0, ft0, np.concatenate([[0.0], flat[order]]))
            fs, fts = (np.asarray(a)[1:] for a in ys)
        inv = np.empty_like(order)
        inv[order] = np.arange(order.size)
        train = fs[inv].reshape(ts.shape + (n, k))
        test = fts[inv].reshape(ts.shape + ft0.shape) if given else None
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
