"""Models: a pure ``apply(params, consts, X) -> u`` (shape (n,), or (n, k) for a model with k =
``Model.outputs`` > 1 outputs) plus what theory knows about it.

``params`` are trained, ``consts`` are fixed (e.g. the paper model's output signs). The squared
losses are of the form L = (c / 2) ||u - y||^2 (``loss_scale``; summed over all n k entries), so
gradient descent on the weights moves the error as e' = -c H e with H the raw output Gram J J^T:
the dynamics kernel is K = c H. With k outputs the error is n x k; the theory works on its
row-major flattening vec(e) (index i k + a, point i, output a) and H is the (n k x n k) Gram of
the outputs (``ntk.gram``), or the traced form H_shared ⊗ I_k.

The classification losses (``loss_value``) are c times a sum over points: ``softmax_ce``
(k >= 2 outputs, one-hot y) sum_i [logsumexp(u_i) - y_i . u_i] and ``logistic`` (one output,
y = ±1) sum_i log(1 + exp(-y_i u_i)), with c = 1/n (the mean over points). Their function-space
dynamics are nonlinear (``ntkdyn.predict.losses``).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Params = Any
LOSSES = ("half_sum", "mse", "half_mse")
SQUARED_LOSSES = LOSSES
CLASSIFICATION_LOSSES = ("softmax_ce", "logistic")  # nonlinear in function space (module docstring)
ALL_LOSSES = SQUARED_LOSSES + CLASSIFICATION_LOSSES


def loss_scale(loss: str, n: int) -> float:
    """c in L = (c/2)||e||^2: half_sum ½||e||² -> 1; mse (1/n)||e||² -> 2/n; half_mse (1/2n)||e||² -> 1/n;
    softmax_ce and logistic: c = 1/n in L = c sum_i l(u_i, y_i) (the mean over the n points)."""
    if loss == "half_sum":
        return 1.0
    if loss == "mse":
        return 2.0 / n
    if loss in ("half_mse", "softmax_ce", "logistic"):
        return 1.0 / n
    raise ValueError(f"unknown loss {loss!r}; allowed: {', '.join(ALL_LOSSES)}")


def is_squared(loss: str) -> bool:
    """Is ``loss`` one of the squared losses (linear dynamics in function space)?"""
    return loss in SQUARED_LOSSES


def loss_value(loss: str, c: float, u, y):
    """The loss of outputs ``u`` against targets ``y`` (jax arrays of one shape, (n,) or (n, k)):
    squared (c/2) sum (u - y)^2; softmax_ce c sum_i [logsumexp(u_i) - y_i . u_i] (rows are points,
    y one-hot); logistic c sum_i log(1 + exp(-y_i u_i)) = c sum softplus(-y u) (y = ±1)."""
    if loss == "softmax_ce":
        return c * jnp.sum(jax.nn.logsumexp(u, axis=-1) - jnp.sum(y * u, axis=-1))
    if loss == "logistic":
        return c * jnp.sum(jax.nn.softplus(-y * u))
    e = u - y
    return 0.5 * c * jnp.sum(e * e)


@dataclasses.dataclass(frozen=True)
class Model:
    """A model definition. ``fast_gram(params, consts, X)`` is an exact closed-form H (or None);
    ``hinf(X)`` the infinite-width H (or None). ``outputs``: k, the number of outputs (``apply``
    returns (n,) for 1, (n, k) otherwise); for k > 1 ``fast_gram`` takes the augmented inputs of
    ``augment`` (one row per (point, output) pair) and ``hinf`` is the kernel shared by the outputs
    (the infinite-width NTK is H∞ ⊗ I_k)."""

    name: str
    apply: Callable[[Params, Params, jax.Array], jax.Array]
    loss: str
    fast_gram: Callable | None = None
    hinf: Callable[[np.ndarray], np.ndarray] | None = None
    outputs: int = 1


# --------------------------------------------------------------------------- paper model
def paper_apply(params, consts, X):
    """f(x) = (1/sqrt m) sum_r a_r relu(w_r . x)  (Du et al. 2019; Bu, Xu, Chen 2021); with k outputs
    a is m x k and f_b(x) = (1/sqrt m) sum_r a_rb relu(w_r . x), shape (n, k)."""
    W, a = params["W"], consts["a"]
    return jax.nn.relu(X @ W.T) @ a / math.sqrt(W.shape[0])


def paper_gram(params, consts, X):
    """Exact H_ij = (x_i.x_j / m) sum_r a_r^2 1[w_r.x_i >= 0] 1[w_r.x_j >= 0] (grad wrt W only).

    k outputs (a of shape m x k): X holds the augmented rows [x_i, s] of ``augment`` (s the one-hot
    output selector) and H_(ib),(jc) = (x_i.x_j / m) sum_r a_rb a_rc 1[w_r.x_i >= 0] 1[w_r.x_j >= 0]:
    the same formula with a_r replaced by the row's a_r . s."""
    W, a = params["W"], consts["a"]
    if a.ndim == 2:
        k = a.shape[1]
        X, sel = X[:, :-k], X[:, -k:]
        S = (X @ W.T >= 0).astype(X.dtype) * (sel @ a.T)
    else:
        S = (X @ W.T >= 0).astype(X.dtype) * a
    return (X @ X.T) * (S @ S.T) / W.shape[0]


def paper_hinf(X) -> np.ndarray:
    """H∞_ij = x_i.x_j (pi - arccos(cos theta_ij)) / (2 pi), the arc-cosine kernel of degree 0.

    Independent of the first-layer scale kappa (the indicator is scale invariant)."""
    X = np.asarray(X, np.float64)
    G = X @ X.T
    norms = np.sqrt(np.diag(G))
    cos = np.clip(G / np.outer(norms, norms), -1.0, 1.0)
    return G * (np.pi - np.arccos(cos)) / (2 * np.pi)


def paper_init(key, d: int, width: int, init_std: float, dtype, outputs: int = 1):
    """W ~ N(0, init_std^2) (width x d), a_r = ±1 with probability 1/2 each (fixed); with k = ``outputs``
    > 1, a is width x k with the same law per entry (one output: today's draw, unchanged)."""
    kw, ka = jax.random.split(key)
    W = init_std * jax.random.normal(kw, (width, d), dtype)
    shape = (width,) if outputs == 1 else (width, outputs)
    a = jnp.where(jax.random.bernoulli(ka, 0.5, shape), 1.0, -1.0).astype(dtype)
    return {"W": W}, {"a": a}


PAPER = Model("paper", paper_apply, "half_sum", paper_gram, paper_hinf)


# --------------------------------------------------------------------------- released-code model
def released_apply(params, consts, X):
    """f(x) = sum_r a_r relu(w_r . x + b_r) (standard parameterisation, both layers trained, no output bias:
    the released notebook's ``Linear(d, m) -> ReLU -> Linear(m, 1, bias=False)``, no 1/sqrt(m))."""
    return jax.nn.relu(X @ params["W"].T + params["b"]) @ params["a"]


def released_gram(params, consts, X):
    """Exact H = H_W + H_b + H_a for ``released_apply``:
    H_W = (X X^T + 1) * (D D^T), D_ir = a_r 1[w_r.x_i + b_r > 0]; H_a = R R^T, R = relu(X W^T + b)."""
    pre = X @ params["W"].T + params["b"]
    D = (pre > 0).astype(X.dtype) * params["a"]
    R = jax.nn.relu(pre)
    return (X @ X.T + 1.0) * (D @ D.T) + R @ R.T


RELEASED_INITS = ("notebook", "gaussian_bias")


def released_init(key, d: int, width: int, init_std: float | None, dtype, init: str = "notebook"):
    """Initial parameters of ``released_apply`` (m = width, d = input dimension).

    ``notebook`` (the released notebook, ShiyunXu/NTK_Optimizer ``TwoLayerMLP``): it re-draws only the
    first layer's weight, W ~ N(0, (1/m)^2) (``normal_(.., 0, 1/m)``: std 1/m), and the second layer's
    weight, a ~ U(-1, 1); the first layer's bias keeps PyTorch's ``nn.Linear`` default
    b ~ U(-1/sqrt(d), 1/sqrt(d)); the second layer has no bias.
    ``gaussian_bias``: as ``notebook`` but b ~ N(0, std^2) like W (ntkdyn's earlier released init;
    not the notebook's: its kernel moves far more during training).
    ``init_std`` overrides the first-layer weight std 1/m (and the bias std of ``gaussian_bias``).
    The draws follow these distributions from a JAX key; PyTorch's random stream (torch seed 218)
    is not reproduced."""
    if init not in RELEASED_INITS:
        raise ValueError(
            f"model.init: unknown {init!r} for the released model; allowed: {', '.join(RELEASED_INITS)}"
        )
    kw, kb, ka = jax.random.split(key, 3)
    std = 1.0 / width if init_std is None else init_std
    if init == "notebook":
        bound = 1.0 / math.sqrt(d)
        b = jax.random.uniform(kb, (width,), dtype, -bound, bound)
    else:
        b = std * jax.random.normal(kb, (width,), dtype)
    return (
        {
            "W": std * jax.random.normal(kw, (width, d), dtype),
            "b": b,
            "a": jax.random.uniform(ka, (width,), dtype, -1.0, 1.0),
        },
        {},
    )


RELEASED = Model("released", released_apply, "mse", released_gram, None)


# --------------------------------------------------------------------------- flax models
def from_flax(
    module, loss: str = "half_sum", name: str = "flax", outputs: int = 1
) -> tuple[Model, Params, Params]:
    """Wrap any flax NNX module (``module(X)`` of shape (n,) or (n, 1); (n, k) with k = ``outputs``
    > 1): trained = its nnx.Param. A pair ``(linen_module, variables)`` goes to ``from_linen`` (so a
    ``model.module`` factory may return either)."""
    if isinstance(module, tuple) and len(module) == 2:
        return from_linen(module[0], module[1], loss, name)
    from flax import nnx

    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    def apply(p, c, X):
        out = nnx.merge(graphdef, p, c)(X)
        return out.reshape(X.shape[0]) if outputs == 1 else out.reshape(X.shape[0], outputs)

    return Model(name, apply, loss, outputs=outputs), params, rest


def augment(X, k: int):
    """The (n k, d + k) rows [x_i, e_b] for point i and output b, row index i k + b (the row-major
    flattening of an (n, k) output array): the inputs of ``scalarized``. numpy or jax arrays."""
    xp = jnp if isinstance(X, jax.Array) else np
    n = X.shape[0]
    rows = xp.repeat(X, k, axis=0)
    sel = xp.tile(xp.eye(k, dtype=X.dtype), (n, 1))
    return xp.concatenate([rows, sel], axis=1)


def scalarized(model: Model) -> Model:
    """A model with k outputs as a one-output model of the augmented inputs (``augment``):
    g(theta; [x, e_b]) = f_b(theta; x). Its Gram over ``augment(X, k)`` is the (n k x n k) output
    Gram H_(ib),(jc) = <grad f_b(x_i), grad f_c(x_j)> of the k-output model (row i k + b). The
    model's ``fast_gram`` (which takes augmented inputs, ``Model``) is kept."""
    k = model.outputs

    def apply(p, c, Xa):
        return jnp.sum(model.apply(p, c, Xa[:, :-k]) * Xa[:, -k:], axis=1)

    return dataclasses.replace(model, name=f"{model.name}_scalar", apply=apply, outputs=1, hinf=None)


def ntk_mlp(key, d: int, width: int, depth: int, W_std: float, b_std: float, dtype, outputs: int = 1):
    """Depth-``depth`` ReLU MLP in NTK parameterisation as a flax NNX module:
    h_{l+1} = W_std / sqrt(fan_in) * h_l @ W + b_std * b, W, b ~ N(0, 1), scalar output (k =
    ``outputs`` > 1: a last layer of k columns, output (n, k))."""
    from flax import nnx

    class NTKDense(nnx.Module):
        def __init__(self, fan_in: int, fan_out: int, rngs: nnx.Rngs):
            self.kernel = nnx.Param(jax.random.normal(rngs.params(), (fan_in, fan_out), dtype))
            self.bias = nnx.Param(jax.random.normal(rngs.params(), (fan_out,), dtype)) if b_std else None
            self.scale = W_std / math.sqrt(fan_in)

        def __call__(self, x):
            y = self.scale * (x @ self.kernel)
            return y + b_std * self.bias if self.bias is not None else y

    class MLP(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            sizes = [d] + [width] * depth + [outputs]
            self.layers = nnx.List([NTKDense(i, o, rngs) for i, o in zip(sizes[:-1], sizes[1:])])

        def __call__(self, x):
            for layer in self.layers[:-1]:
                x = jax.nn.relu(layer(x))
            out = self.layers[-1](x)
            return out[..., 0] if outputs == 1 else out

    seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    return MLP(nnx.Rngs(params=seed))


def load_factory(spec: str):
    """'package.module:callable' -> the callable."""
    if ":" not in spec:
        raise ValueError(f"model.module must look like 'package.module:factory', got {spec!r}")
    mod, attr = spec.split(":", 1)
    return getattr(importlib.import_module(mod), attr)


# --------------------------------------------------------------------------- parameters from .npz
def flat_names(tree) -> dict[str, Any]:
    """{'W': ..., 'layers/0/kernel': ...}: the names used in parameter .npz files."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path): leaf
        for path, leaf in leaves
    }


def load_params(path: str, params, consts):
    """Replace the leaves of (params, consts) by the arrays of the same name in an .npz file."""
    import os

    if not os.path.exists(path):
        raise ValueError(f"model.init_params: file not found: {path}")
    try:
        arrays = dict(np.load(path))
    except Exception as exc:  # noqa: BLE001 - report any unreadable file the same way
        raise ValueError(f"model.init_params: cannot read {path} as .npz ({exc})") from None

    def fill(tree, what):
        names = flat_names(tree)
        missing = [k for k in names if k not in arrays]
        if missing:
            raise ValueError(
                f"model.init_params: {path} lacks {what} arrays {missing}; it has {sorted(arrays)}"
            )
        new = []
        for name, leaf in names.items():
            arr = arrays[name]
            if arr.shape != leaf.shape:
                raise ValueError(
                    f"model.init_params: {name} has shape {arr.shape}, the model needs {leaf.shape}"
                )
            new.append(jnp.asarray(arr, leaf.dtype))
        return jax.tree.unflatten(jax.tree.structure(tree), new)

    return fill(params, "parameter"), fill(consts, "constant")


def save_params(path: str, params, consts) -> None:
    np.savez(path, **{k: np.asarray(v) for k, v in {**flat_names(consts), **flat_names(params)}.items()})


# --------------------------------------------------------------------------- user models
def _scalar_output(out, n: int, what: str):
    """``out`` as shape (n,): (n,) and (n, 1) are accepted, anything else is an error naming ``what``."""
    if out.shape == (n, 1):
        return out.reshape(n)
    if out.shape != (n,):
        raise ValueError(
            f"{what} must return one output per input, shape ({n},) or ({n}, 1); got {out.shape}"
        )
    return out


def _check_loss(loss: str) -> None:
    if loss not in ALL_LOSSES:
        raise ValueError(f"loss: unknown {loss!r}; allowed: {', '.join(ALL_LOSSES)}")


def from_linen(
    module, variables, loss: str = "half_sum", name: str = "linen"
) -> tuple[Model, Params, Params]:
    """Wrap a flax Linen module and its ``variables`` (from ``module.init``): the ``params``
    collection is trained, the other collections (e.g. ``batch_stats``) are held fixed.

    Args:
        module: a ``flax.linen.Module`` whose ``apply(variables, X)`` has shape (n,) or (n, 1).
        variables: ``module.init(key, X)``; must hold a ``params`` collection.
        loss: ``half_sum`` | ``mse`` | ``half_mse`` (``loss_scale``).
    Returns:
        (Model, params, consts) as the pipeline takes them (``pipeline.prepare(..., built=...)``).
    """
    _check_loss(loss)
    if not hasattr(variables, "keys") or "params" not in variables:
        raise ValueError(
            f"from_linen: variables must be module.init(...)'s mapping with a 'params' collection; "
            f"got {type(variables).__name__}"
            + (f" with keys {sorted(variables)}" if hasattr(variables, "keys") else "")
        )
    params = variables["params"]
    consts = {k: v for k, v in variables.items() if k != "params"}

    def apply(p, c, X):
        return _scalar_output(
            module.apply({"params": p, **c}, X), X.shape[0], f"linen module {type(module).__name__}"
        )

    return Model(name, apply, loss), params, consts


def from_apply_fn(
    apply_fn: Callable[[Params, jax.Array], jax.Array], params, loss: str = "half_sum", name: str = "apply_fn"
) -> tuple[Model, Params, Params]:
    """Wrap any JAX function ``apply_fn(params, X)`` of shape (n,) or (n, 1), with ``params`` any
    pytree of arrays (all of it is trained): a plain function, a flax Linen ``module.apply`` with
    its variables (every collection then trained: use ``from_linen`` to train ``params`` only),
    a stax ``apply_fn``, or an equinox model split by ``eqx.partition``.

    The empirical NTK of such a model is computed by ``ntk.gram`` (Jacobian contraction or NTK-vector
    products); it has no infinite-width kernel, so predictions use ``theory.kernel: H0``.

    Args:
        apply_fn: pure function of (params, X (n, d)) -> outputs.
        params: the initial parameters.
        loss: ``half_sum`` (1/2 ||u - y||^2) | ``mse`` | ``half_mse``; K = c H with c from ``loss_scale``.
        name: the model's name in results.
    Returns:
        (Model, params, consts) with empty consts.
    """
    _check_loss(loss)
    if not callable(apply_fn):
        raise ValueError(f"from_apply_fn: apply_fn must be callable, got {type(apply_fn).__name__}")
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError("from_apply_fn: params has no array leaves (nothing to train)")

    def apply(p, c, X):
        return _scalar_output(
            apply_fn(p, X), X.shape[0], f"apply_fn {getattr(apply_fn, '__name__', '')}".strip()
        )

    return Model(name, apply, loss), params, {}
