"""Models: a pure ``apply(params, consts, X) -> u`` (shape (n,)) plus what theory knows about it.

``params`` are trained, ``consts`` are fixed (e.g. the paper model's output signs). Losses are
all of the form L = (c / 2) ||u - y||^2 (``loss_scale``), so gradient descent on the weights
moves the error as e' = -c H e with H the raw output Gram J J^T: the dynamics kernel is K = c H.
"""
from __future__ import annotations

import dataclasses
import importlib
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

Params = Any
LOSSES = ("half_sum", "mse", "half_mse")


def loss_scale(loss: str, n: int) -> float:
    """c in L = (c/2)||e||^2: half_sum ½||e||² -> 1; mse (1/n)||e||² -> 2/n; half_mse (1/2n)||e||² -> 1/n."""
    if loss == "half_sum":
        return 1.0
    if loss == "mse":
        return 2.0 / n
    if loss == "half_mse":
        return 1.0 / n
    raise ValueError(f"unknown loss {loss!r}; allowed: {', '.join(LOSSES)}")


@dataclasses.dataclass(frozen=True)
class Model:
    """A model definition. ``fast_gram(params, consts, X)`` is an exact closed-form H (or None);
    ``hinf(X)`` the infinite-width H (or None)."""

    name: str
    apply: Callable[[Params, Params, jax.Array], jax.Array]
    loss: str
    fast_gram: Callable | None = None
    hinf: Callable[[np.ndarray], np.ndarray] | None = None


# --------------------------------------------------------------------------- paper model
def paper_apply(params, consts, X):
    """f(x) = (1/sqrt m) sum_r a_r relu(w_r . x)  (Du et al. 2019; Bu, Xu, Chen 2021)."""
    W, a = params["W"], consts["a"]
    return jax.nn.relu(X @ W.T) @ a / math.sqrt(W.shape[0])


def paper_gram(params, consts, X):
    """Exact H_ij = (x_i.x_j / m) sum_r a_r^2 1[w_r.x_i >= 0] 1[w_r.x_j >= 0] (grad wrt W only)."""
    W, a = params["W"], consts["a"]
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


def paper_init(key, d: int, width: int, init_std: float, dtype):
    kw, ka = jax.random.split(key)
    W = init_std * jax.random.normal(kw, (width, d), dtype)
    a = jnp.where(jax.random.bernoulli(ka, 0.5, (width,)), 1.0, -1.0).astype(dtype)
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
        raise ValueError(f"model.init: unknown {init!r} for the released model; allowed: {', '.join(RELEASED_INITS)}")
    kw, kb, ka = jax.random.split(key, 3)
    std = 1.0 / width if init_std is None else init_std
    if init == "notebook":
        bound = 1.0 / math.sqrt(d)
        b = jax.random.uniform(kb, (width,), dtype, -bound, bound)
    else:
        b = std * jax.random.normal(kb, (width,), dtype)
    return ({"W": std * jax.random.normal(kw, (width, d), dtype), "b": b,
             "a": jax.random.uniform(ka, (width,), dtype, -1.0, 1.0)}, {})


RELEASED = Model("released", released_apply, "mse", released_gram, None)


# --------------------------------------------------------------------------- flax models
def from_flax(module, loss: str = "half_sum", name: str = "flax") -> tuple[Model, Params, Params]:
    """Wrap any flax NNX module (``module(X)`` of shape (n,) or (n, 1)): trained = its nnx.Param."""
    from flax import nnx

    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    def apply(p, c, X):
        out = nnx.merge(graphdef, p, c)(X)
        return out.reshape(X.shape[0])

    return Model(name, apply, loss), params, rest


def ntk_mlp(key, d: int, width: int, depth: int, W_std: float, b_std: float, dtype):
    """Depth-``depth`` ReLU MLP in NTK parameterisation as a flax NNX module:
    h_{l+1} = W_std / sqrt(fan_in) * h_l @ W + b_std * b, W, b ~ N(0, 1), scalar output."""
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
            sizes = [d] + [width] * depth + [1]
            self.layers = nnx.List([NTKDense(i, o, rngs) for i, o in zip(sizes[:-1], sizes[1:])])

        def __call__(self, x):
            for layer in self.layers[:-1]:
                x = jax.nn.relu(layer(x))
            return self.layers[-1](x)[..., 0]

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
    return {"/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path): leaf
            for path, leaf in leaves}


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
            raise ValueError(f"model.init_params: {path} lacks {what} arrays {missing}; it has {sorted(arrays)}")
        new = []
        for name, leaf in names.items():
            arr = arrays[name]
            if arr.shape != leaf.shape:
                raise ValueError(f"model.init_params: {name} has shape {arr.shape}, the model needs {leaf.shape}")
            new.append(jnp.asarray(arr, leaf.dtype))
        return jax.tree.unflatten(jax.tree.structure(tree), new)

    return fill(params, "parameter"), fill(consts, "constant")


def save_params(path: str, params, consts) -> None:
    np.savez(path, **{k: np.asarray(v) for k, v in {**flat_names(consts), **flat_names(params)}.items()})
