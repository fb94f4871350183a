"""Classification on the run path (docs/outputs.md): the function-space predictions of the
cross-entropy losses and the accuracy beside the loss.

Squared losses move the outputs linearly (the recurrence and ODE faces predict them per mode). The
classification losses (``models.loss_value``: softmax_ce over k >= 2 outputs, logistic for one
output) do not: for the linearised network every linear method (GD, HB, NAG, NAG-C, ...) is exactly
the function-space recurrence with its velocity in function space, f_{k+1} = f_k - eta H grad_f L(f_k)
for GD (``predict.gradient_descent``: ``RecurrencePredictor``), and its limit is an ODE with no closed
form, integrated with diffrax: the gradient flow df/dt = -H grad_f L(f) (``predict.gradient_flow``,
t = k eta) and the damped f'' + gamma(t) f' + H grad_f L(f) = 0 of heavy ball (gamma constant) and
NAG-C (gamma = r / t) at t = k sqrt(eta) (``damped_flow``). H is the raw kernel of ``Setup.H_pred``:
shared (n x n, the traced H ⊗ I_k) or the full (n k x n k) output Gram; L = c sum_i l(f_i, y_i).

Accuracy (``accuracy``): the fraction of points whose largest output is the one-hot target's class
(one output: sign(f) = y for ±1 targets). Training's accuracy is read from the recorded errors at
``train.error_at`` (f = e + y); each prediction's at the same steps (``accuracy_steps``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from ntkdyn import models, theory
from ntkdyn.pipeline.faces.base import Context, FaceValue
from ntkdyn.predict import _core as predict_core
from ntkdyn.predict import losses as predict_losses
from ntkdyn.results import finite
from ntkdyn.results.parts import Accuracy

# diffrax tolerances of the function-space ODEs when theory.diffrax is off (theory.rtol / atol unset):
# far below the gaps to training they are compared with, looser than the squared loss's closed forms need
FLOW_RTOL, FLOW_ATOL = 1e-8, 1e-10


def _problem(ctx: Context) -> predict_core._Setup:
    """``predict``'s problem for the run's kernel ``Setup.H_pred`` and targets, without its
    eigen-decomposition (the function-space programs use H, the layout and y only; the run has
    decomposed K already)."""
    s = ctx.setup
    assert s.H_pred is not None  # the eigen path
    H = np.asarray(s.H_pred, np.float64)
    y = np.asarray(_targets(ctx, s.y), np.float64)
    scalar = y.ndim == 1
    y2 = y[:, None] if scalar else y
    shared = H.shape[0] == y2.shape[0]
    empty = np.zeros(0)
    return predict_core._Setup(H, shared, y2, scalar, empty, np.zeros((0, 0)), np.zeros(0, bool))


def is_classification_loss(ctx: Context) -> bool:
    return not models.is_squared(ctx.setup.model.loss)


def records_accuracy(ctx: Context) -> bool:
    """Are the targets classes: one-hot rows (k > 1 outputs) or the ±1 labels of one output (not the
    k real outputs of a sphere teacher)."""
    return ctx.cfg.data.target in ("onehot", "pm1")


def accuracy(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The fraction of points classified right, per leading index of ``f``: f (..., n, k) against
    one-hot y (n, k) by argmax; k = 1 (f (..., n), y = ±1) by sign (f = 0 counts as wrong)."""
    f, y = np.asarray(f, np.float64), np.asarray(y, np.float64)
    if y.ndim == 2:
        return np.mean(np.argmax(f, axis=-1) == np.argmax(y, axis=-1), axis=-1)
    return np.mean(np.sign(f) == np.sign(y), axis=-1)


def outputs_of(ctx: Context, e_flat: np.ndarray, held_out: bool = False) -> np.ndarray:
    """Outputs f = e + y from flattened errors (..., n k) (row-major), shaped (..., n, k) or (..., n);
    ``held_out``: of the held-out points (e_t, y_t)."""
    y = np.asarray(ctx.setup.y_test if held_out else ctx.setup.y, np.float64)
    return np.asarray(e_flat, np.float64).reshape(e_flat.shape[:-1] + y.shape) + y


def per_output_loss(ctx: Context, f: np.ndarray, y: np.ndarray, c: float) -> np.ndarray:
    """The loss split over the k outputs, (..., k), summing to the loss over the last axis: squared
    losses per output column, L_b = (c/2) sum_i (f_ib - y_ib)^2; softmax_ce per class (the outputs are
    coupled through the softmax, the points are not), L_b = c sum_{i: y_i = e_b} l(f_i, y_i)."""
    f, y = np.asarray(f, np.float64), np.asarray(y, np.float64)
    if models.is_squared(ctx.setup.model.loss):
        return 0.5 * c * np.sum((f - y) ** 2, axis=-2)
    top = f.max(-1, keepdims=True)
    per_point = np.log(np.sum(np.exp(f - top), -1)) + top[..., 0] - np.sum(y * f, -1)  # (..., n)
    return c * np.einsum("...i,ib->...b", per_point, y)


def class_arrays(ctx: Context, name: str, f_at: np.ndarray, ft_at: np.ndarray | None = None) -> dict:
    """The classification arrays of one trajectory of outputs at the error steps: ``accuracy_<name>``,
    with held-out outputs ``test_accuracy_<name>``, and with k > 1 outputs ``loss_outputs_<name>``
    (``per_output_loss``, steps x k); name "" is training's (``accuracy``, ``test_accuracy``,
    ``loss_outputs``)."""
    s, tail = ctx.setup, f"_{name}" if name else ""
    out = {f"accuracy{tail}": accuracy(f_at, s.y)}
    if ft_at is not None and s.y_test is not None:
        out[f"test_accuracy{tail}"] = accuracy(ft_at, s.y_test)
    if s.outputs > 1:
        out[f"loss_outputs{tail}"] = per_output_loss(ctx, f_at, s.y, s.c)
    return out


def _loss_name(ctx: Context) -> Any:
    """``predict``'s name of the run's loss (``predict.LossName``)."""
    return "softmax_ce" if ctx.setup.model.loss == "softmax_ce" else "sigmoid_ce"


def _targets(ctx: Context, y: np.ndarray) -> np.ndarray:
    """The targets as ``predict``'s loss takes them: one-hot rows; logistic's ±1 labels as 0/1
    (sigmoid_ce softplus(f) - y01 f = softplus(-y f) for y = 2 y01 - 1)."""
    return y if ctx.setup.model.loss == "softmax_ce" else (np.asarray(y) + 1.0) / 2.0


def _loss(ctx: Context, f: np.ndarray, y: np.ndarray, c: float) -> np.ndarray:
    """c sum_i l(f_i, y_i) per leading index (numpy; ``models.loss_value``'s losses)."""
    f = np.asarray(f, np.float64)
    if ctx.setup.model.loss == "softmax_ce":
        top = f.max(-1, keepdims=True)
        lse = np.log(np.sum(np.exp(f - top), -1)) + top[..., 0]
        return c * np.sum(lse - np.sum(y * f, -1), -1)
    return c * np.sum(np.logaddexp(0.0, -np.asarray(y) * f), -1)


def _initial(ctx: Context) -> tuple[np.ndarray, np.ndarray | None]:
    """f(X; theta_0) and f(X_test; theta_0) in the targets' shape."""
    s = ctx.setup
    f0 = s.e0.reshape(s.y.shape) + s.y
    if s.e0_test is None or s.y_test is None:
        return f0, None
    return f0, s.e0_test.reshape(s.y_test.shape) + s.y_test


def _arrays(ctx: Context, key: str, train, test, train_at, test_at=None) -> FaceValue:
    """The loss (and held-out loss) at the recorded steps, the accuracy (and held-out accuracy) at the
    error steps, of the outputs a function-space face predicts."""
    s = ctx.setup
    arrays = {f"loss_{key}": _loss(ctx, train, s.y, s.c)}
    if test is not None:
        assert s.c_test is not None and s.y_test is not None  # set with the held-out set
        arrays[f"test_loss_{key}"] = _loss(ctx, test, s.y_test, s.c_test)
    if train_at is not None:
        arrays.update(class_arrays(ctx, key, train_at, test_at))
    return FaceValue(arrays=arrays)


def discrete(ctx: Context) -> FaceValue:
    """The function-space recurrence of the optimizer (module docstring): loss (and held-out loss) at
    the recorded steps, accuracy at the error steps."""
    s, hyper = ctx.setup, dict(ctx.hyper)
    eta = hyper.pop("eta")
    assert s.H_pred is not None  # the eigen path
    try:
        spec, h = predict_core._linear_spec(ctx.spec.name, {"eta": float(eta), **hyper})
    except (TypeError, ValueError) as exc:  # e.g. hyperparameters set from the spectrum
        return FaceValue(note=f"cross-entropy: no function-space recurrence for {ctx.spec.name} ({exc})")
    pred = predict_losses.RecurrencePredictor(
        _problem(ctx), spec, h, predict_losses._loss_fn(_loss_name(ctx)), float(s.c)
    )
    f0, ft0 = _initial(ctx)
    test = {} if ft0 is None else {"fx_test_0": ft0, "k_test_train": s.H_test}
    steps, at_steps = ctx.trained.step, ctx.trained.error_at
    out = pred(step=np.concatenate([steps, at_steps]), fx_train_0=f0, **test)  # one compiled run
    m = steps.size
    at = out.train[m:] if records_accuracy(ctx) else None
    test_at = None if out.test is None else out.test[m:]
    value = _arrays(ctx, "discrete", out.train[:m], None if out.test is None else out.test[:m], at, test_at)
    return FaceValue(arrays=value.arrays, fields={"predicted": _no_rate()})


def _no_rate():
    from ntkdyn.results import Predicted

    return Predicted(None)


def flow(ctx: Context) -> FaceValue:
    """The limiting ODE in function space (module docstring), read at t_k = k * time_step."""
    s, ode = ctx.setup, ctx.ode
    assert ode is not None and s.H_pred is not None  # LimitingOde.applies: full batch, constant eta
    th = ctx.cfg.theory
    rtol, atol = th.rtol or FLOW_RTOL, th.atol or FLOW_ATOL
    f0, ft0 = _initial(ctx)
    y = _targets(ctx, s.y)
    times = ctx.trained.step * ode.time_step
    t_acc = ctx.trained.error_at * ode.time_step
    both = np.concatenate([times, t_acc])  # one solve for the recorded and the accuracy steps
    if ode.order == 1:
        loss = predict_losses._loss_fn(_loss_name(ctx))
        pred = predict_losses.LossFlowPredictor(_problem(ctx), loss, float(s.c), float(rtol), float(atol))
        test = {} if ft0 is None else {"fx_test_0": ft0, "k_test_train": s.H_test}
        out = pred(t=both, fx_train_0=f0, **test)
        fs, fts = out.train, out.test
    else:
        fs, fts = damped_flow(ctx, ode, y, f0, ft0, both, rtol, atol)
    train = fs[: times.size]
    held = None if fts is None else fts[: times.size]
    at = fs[times.size :] if records_accuracy(ctx) else None
    value = _arrays(ctx, "ode", train, held, at, None if fts is None else fts[times.size :])
    arrays = {"ode_time": times, **value.arrays}
    return FaceValue(arrays=arrays, fields={"ode": _describe(ode)})


def _describe(ode) -> str:
    if ode.order == 1:
        return "f' = -H grad_f L(f) (any loss, diffrax), t = k*eta"
    damping = f"{ode.gamma:.6g}" if ode.damping == "constant" else f"{ode.r:g}/t"
    return f"f'' + {damping} f' + H grad_f L(f) = 0 (any loss, diffrax), t = k*sqrt(eta)"


def _apply(H: Any, G, k: int):
    """H acting on an (rows, k) array: shared H @ G, full (H @ vec G) reshaped."""
    import jax.numpy as jnp

    if G.ndim == 1 or H.shape[1] == G.shape[0]:
        return H @ G
    return jnp.reshape(H @ jnp.reshape(G, (-1,)), (-1, k))


def damped_flow(ctx: Context, ode, y, f0, ft0, t: np.ndarray, rtol: float, atol: float):
    """f'' + gamma(t) f' + H grad_f L(f) = 0 from f(0) = f0, f'(0) = 0 (with the held-out outputs
    f_test'' + gamma f_test' + K_x grad_f L(f) = 0) by diffrax Tsit5, at the times ``t`` (any order).
    Vanishing damping (gamma = r / t, NAG-C) is singular at 0: it starts at t0 = min(t_1, 1e-3 /
    sqrt(||H|| c)) from the series f(t0) = f0 - t0^2 g0 / (4(nu+1)), f'(t0) = -t0 g0 / (2(nu+1)),
    g0 = H grad_f L(f0), nu = (r - 1)/2 (as ``theory.ode_diffrax`` does for the squared loss)."""
    import jax
    import jax.numpy as jnp

    s = ctx.setup
    k = s.outputs
    name, c = _loss_name(ctx), s.c
    loss = {"softmax_ce": _softmax_ce, "sigmoid_ce": _sigmoid_ce}[name]
    grad = jax.grad(lambda f, yy: c * loss(f, yy))
    vanishing = ode.damping == "vanishing"
    coeff = ode.r if vanishing else ode.gamma
    H = np.asarray(s.H_pred, np.float64)
    Kx = None if ft0 is None else np.asarray(s.H_test, np.float64)
    order = np.argsort(t)
    ts = np.asarray(t, np.float64)[order]
    with jax.enable_x64(True):
        f0j = jnp.asarray(f0, jnp.float64)
        ft0j = jnp.zeros((0,) + f0j.shape[1:]) if ft0 is None else jnp.asarray(ft0, jnp.float64)
        Kxj = jnp.zeros((0, H.shape[1])) if Kx is None else jnp.asarray(Kx)
        G0 = grad(f0j, jnp.asarray(y))
        g0, gt0 = _apply(jnp.asarray(H), G0, k), _apply(Kxj, G0, k)
        t_start = 0.0
        if vanishing:
            nu = 0.5 * (ode.r - 1.0)
            top = float(np.max(np.abs(np.linalg.eigvalsh(c * H))))
            positive = ts[ts > 0]
            t_start = min(float(positive[0]) if positive.size else 1.0, 1e-3 / np.sqrt(max(top, 1e-300)))
            a, b = t_start**2 / (4 * (nu + 1)), t_start / (2 * (nu + 1))
            y0 = (f0j - a * g0, ft0j - a * gt0, -b * g0, -b * gt0)
        else:
            y0 = (f0j, ft0j, jnp.zeros_like(f0j), jnp.zeros_like(ft0j))
        solve = _damped_program(name, c, vanishing, k, rtol, atol)
        later = ts[ts >= t_start]
        ys = solve(jnp.asarray(H), Kxj, jnp.asarray(y), coeff, y0, t_start, later)
        fs, fts = np.asarray(ys[0]), np.asarray(ys[1])
    early = ts.size - later.size  # t = 0 before t0: the initial outputs
    fs = np.concatenate([np.repeat(np.asarray(f0)[None], early, 0), fs])
    inv = np.empty_like(order)
    inv[order] = np.arange(order.size)
    if ft0 is None:
        return fs[inv], None
    fts = np.concatenate([np.repeat(np.asarray(ft0)[None], early, 0), fts])
    return fs[inv], fts[inv]


def _softmax_ce(f, y):
    import jax
    import jax.numpy as jnp

    return jnp.sum(jax.nn.logsumexp(f, axis=-1) - jnp.sum(y * f, axis=-1))


def _sigmoid_ce(f, y):
    import jax
    import jax.numpy as jnp

    return jnp.sum(jax.nn.softplus(f) - y * f)


@functools.lru_cache(maxsize=16)
def _damped_program(name: str, c: float, vanishing: bool, k: int, rtol: float, atol: float):
    """A compiled diffrax solve of ``damped_flow``'s system, cached per loss and damping kind."""
    import jax

    loss = {"softmax_ce": _softmax_ce, "sigmoid_ce": _sigmoid_ce}[name]
    grad = jax.grad(lambda f, yy: c * loss(f, yy))

    def field(t, state, args):
        H, Kx, y, coeff = args
        f, ft, v, vt = state
        G = grad(f, y)
        gamma = coeff / t if vanishing else coeff
        return v, vt, -gamma * v - _apply(H, G, k), -gamma * vt - _apply(Kx, G, k)

    @jax.jit
    def solve(H, Kx, y, coeff, y0, t_start, ts):
        return theory._tsit5(field, t_start, ts, y0, (H, Kx, y, coeff), rtol, atol, 1_000_000)

    return solve


class ClassAccuracy:
    """Accuracy beside the loss (module docstring): training's at ``train.error_at`` (array
    ``accuracy`` over ``accuracy_steps``), each squared-loss prediction's from its modes (e = V c,
    f = e + y) at the same steps; the cross-entropy faces and the linearised network record their own
    ``accuracy_<name>``. With a held-out set the same on the held-out points: the network's
    (``test_accuracy``, from its outputs f(X_t) recorded at the error steps) and each prediction's
    (``test_accuracy_<name>``; squared losses: its modes mapped to the new points,
    e_t(k) = e_t(0) + K_x K^+ (e_k - e_0), ``theory.held_out_errors``). Field ``accuracy``
    (``results.Accuracy``): the initial and final values."""

    name = "accuracy"
    compares = ()
    series = ()

    def applies(self, ctx: Context) -> bool | str:
        return records_accuracy(ctx) and ctx.trained.errors.size > 0

    def predict(self, ctx: Context, earlier: Mapping[str, FaceValue]) -> FaceValue:
        s, res = ctx.setup, ctx.trained
        steps = np.asarray(res.error_at, int)
        held = res.test_errors is not None and s.y_test is not None
        f_test = outputs_of(ctx, np.asarray(res.test_errors), True) if held else None
        arrays: dict[str, np.ndarray] = {
            "accuracy_steps": steps,
            **class_arrays(ctx, "", outputs_of(ctx, res.errors), f_test),
        }
        train = arrays["accuracy"]
        where = {int(k): i for i, k in enumerate(res.step)}
        for value in earlier.values():
            for name, modes in value.modes.items():
                found = [where.get(int(k)) for k in steps]
                if s.V is None or any(r is None for r in found):
                    continue
                rows = np.asarray(found, int)
                e = np.asarray(modes)[rows] @ s.V.T
                ft = None
                if held and s.test_map is not None and s.e0_test is not None:
                    e_t = theory.held_out_errors(np.asarray(modes)[rows], s.coef, s.test_map, s.e0_test)
                    ft = outputs_of(ctx, e_t, True)
                arrays.update(class_arrays(ctx, name, outputs_of(ctx, e), ft))
        for value in earlier.values():
            for key, arr in value.arrays.items():
                if key.startswith(("accuracy_", "test_accuracy_", "loss_outputs_")):
                    arrays.setdefault(key, arr)
        live = np.isfinite(res.errors).all(axis=1)
        last = int(np.flatnonzero(live)[-1]) if live.any() else None

        def at_last(prefix: str) -> dict[str, float | None]:
            return {
                key[len(prefix) :]: (None if last is None else finite(arr[last]))
                for key, arr in arrays.items()
                if key.startswith(prefix) and key != "accuracy_steps"
            }

        test = arrays.get("test_accuracy")
        field = Accuracy(
            initial=finite(train[0]) if live[0] else None,
            final=None if last is None else finite(train[last]),
            final_step=None if last is None else int(steps[last]),
            predicted_final=at_last("accuracy_"),
            held_out_initial=None if test is None or not live[0] else finite(test[0]),
            held_out_final=None if test is None or last is None else finite(test[last]),
            held_out_predicted_final=None if test is None else at_last("test_accuracy_"),
        )
        return FaceValue(arrays=arrays, fields={"accuracy": field})
