"""Optimizers, each declared once with three faces.

Every optimizer with a kernel-regime theory is declared as a **linear method**: a state
S = (theta, z_1, ..., z_p) of parameter-shaped vectors and, at update k = 1, 2, ...,

    S_k = T_k S_{k-1} + u_k g_k,        g_k = grad L(theta_{k-1}),

with (p+1) x (p+1) matrices T_k and vectors u_k that depend on the hyperparameters and k only.
Each z_j is a "point" (an iterate such as OGM's y_k; starts at theta_0) or a "vector" (a
velocity or a past gradient; starts at 0). Row 0 is the parameter update. Examples:

    GD        p = 0: T = [[1]],                        u = [-eta]
    HB        z = v: T = [[1, -eta b], [0, b]],        u = [-eta, 1]         (v_k = b v + g)
    NAG       z = v: T = [[1, -eta b^2], [0, b]],      u = [-eta (1 + b), 1] (optax/torch form)
    NAG-C     as NAG with b = beta_k = (k-1)/(k+r-1)

The parameters held are theta_k, the point where the gradient is evaluated: for the Nesterov
methods in optax/torch form that is the *look-ahead* iterate.

From the one declaration follow

* **training**: ``transformation`` (an optax GradientTransformation; structural zeros of T, u
  given as Python numbers are skipped, so HB costs what optax.sgd costs);
* **kernel-regime recurrence**: in the eigenbasis of K = c H, the gradient of one mode is
  lambda e, so the output-space state X = (e, J z_1, ...) (points as errors) evolves by
  X_k = A_k(lambda) X_{k-1}, A_k = T_k + lambda u_k e_0^T (``companion``), exactly for a
  linear model;
* **limiting ODE** (``LimitODE``): first order e' = -K e, t = k eta, or second order
  e'' + gamma(t) e' + K e = 0, t = k sqrt(eta).

Optimizers without a recurrence (adam, rmsprop, ...) are "empirical only": their ``method``
and ``ode`` are None and every prediction for them is absent.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

Hyper = dict[str, Any]
Scalar = Any  # Python number, numpy scalar or traced jax scalar


# --------------------------------------------------------------------------- ODE face
@dataclasses.dataclass(frozen=True)
class LimitODE:
    """The limiting ODE of an optimizer in the kernel regime.

    order 1: e' = -K e, t = k * eta (gradient flow).
    order 2: e'' + gamma(t) e' + K e = 0, t = k * sqrt(eta), e(0) = e0, e'(0) = 0, with
      ``damping = "constant"``: gamma = (1 - beta) / sqrt(eta) (heavy-ball ODE), or
      ``damping = "vanishing"``: gamma = r / t (Su-Boyd-Candes NAG-C ODE).
    """

    order: int
    time_step: float  # t_k = k * time_step
    damping: str = "none"  # "none" | "constant" | "vanishing"
    gamma: float = 0.0  # constant damping
    r: float = 0.0  # vanishing damping r / t

    @property
    def description(self) -> str:
        if self.order == 1:
            return "e' = -K e, t = k*eta"
        if self.damping == "constant":
            return f"e'' + {self.gamma:.6g} e' + K e = 0, t = k*sqrt(eta)"
        return f"e'' + ({self.r:g}/t) e' + K e = 0, t = k*sqrt(eta)"

    def damping_at(self, t):
        """gamma(t); works on numpy and jax arrays."""
        if self.damping == "constant":
            return self.gamma + 0.0 * t
        if self.damping == "vanishing":
            return self.r / t
        raise ValueError(f"first-order ODE has no damping (damping={self.damping!r})")


# --------------------------------------------------------------------------- declarations
@dataclasses.dataclass(frozen=True)
class LinearMethod:
    """S_k = T_k S_{k-1} + u_k g_k (module docstring). ``step(hyper, k) -> (T, u)`` returns
    nested lists of scalars; ``states`` gives the kind of each z_j ("point" or "vector")."""

    states: tuple[str, ...]
    step: Callable[[Hyper, Scalar], tuple[list[list[Scalar]], list[Scalar]]]


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer, declared once.

    ``hyper``: hyperparameters besides ``eta`` with defaults (None = required). ``method``: the
    linear method (training + recurrence), or None. ``ode(hyper) -> LimitODE`` or None.
    ``optax_factory(eta, **kwargs)`` for empirical-only optimizers. ``constant``: T, u do not
    depend on k.
    """

    name: str
    summary: str
    hyper: dict[str, float | None]
    method: LinearMethod | None = None
    ode: Callable[[Hyper], LimitODE] | None = None
    optax_factory: Callable[..., optax.GradientTransformation] | None = None
    constant: bool = True

    @property
    def has_theory(self) -> bool:
        return self.method is not None


def _gd(h: Hyper, k):
    return [[1.0]], [-h["eta"]]


def _hb(h: Hyper, k):
    eta, b = h["eta"], h["beta"]
    return [[1.0, -eta * b], [0.0, b]], [-eta, 1.0]


def _nesterov(eta, b):
    return [[1.0, -eta * b * b], [0.0, b]], [-eta * (1.0 + b), 1.0]


def _nag(h: Hyper, k):
    return _nesterov(h["eta"], h["beta"])


def nag_c_beta(k, r):
    """beta_k = (k - 1) / (k + r - 1), k = 1, 2, ... (r = 3 is Nesterov's choice)."""
    return (k - 1.0) / (k + r - 1.0)


def _nag_c(h: Hyper, k):
    return _nesterov(h["eta"], nag_c_beta(k, h["r"]))


def _gd_ode(h: Hyper) -> LimitODE:
    return LimitODE(order=1, time_step=h["eta"])


def _hb_ode(h: Hyper) -> LimitODE:
    s = math.sqrt(h["eta"])
    return LimitODE(order=2, time_step=s, damping="constant", gamma=(1.0 - h["beta"]) / s)


def _nag_c_ode(h: Hyper) -> LimitODE:
    return LimitODE(order=2, time_step=math.sqrt(h["eta"]), damping="vanishing", r=h["r"])


REGISTRY: dict[str, OptimizerSpec] = {}


def register(spec: OptimizerSpec) -> OptimizerSpec:
    REGISTRY[spec.name] = spec
    return spec


register(OptimizerSpec("gd", "gradient descent", {}, LinearMethod((), _gd), _gd_ode))
register(OptimizerSpec("hb", "Polyak heavy ball (optax sgd with momentum)", {"beta": None},
                       LinearMethod(("vector",), _hb), _hb_ode))
register(OptimizerSpec("nag", "Nesterov, constant beta (optax sgd nesterov=True; look-ahead iterate)",
                       {"beta": None}, LinearMethod(("vector",), _nag), _hb_ode))
register(OptimizerSpec("nag_c", "Nesterov with beta_k = (k-1)/(k+r-1) (look-ahead iterate)", {"r": 3.0},
                       LinearMethod(("vector",), _nag_c), _nag_c_ode, constant=False))

EMPIRICAL_ONLY = ("adam", "adamw", "rmsprop", "adagrad", "adabelief", "lion", "lamb", "sgd", "adafactor", "yogi")
for _name in EMPIRICAL_ONLY:
    register(OptimizerSpec(_name, f"optax.{_name} (empirical only: no recurrence, no ODE)", {},
                           optax_factory=getattr(optax, _name)))


def get(name: str) -> OptimizerSpec:
    if name not in REGISTRY:
        raise ValueError(f"unknown optimizer {name!r}; allowed: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def resolve_hyper(spec: OptimizerSpec, hyper: Hyper) -> Hyper:
    """Fill defaults; check that every required hyperparameter is given."""
    out = dict(hyper)
    for key, default in spec.hyper.items():
        if out.get(key) is None:
            if default is None:
                raise ValueError(f"optimizer {spec.name!r} needs {key!r}")
            out[key] = default
    return out


# --------------------------------------------------------------------------- training face
class LinearMethodState(NamedTuple):
    count: jax.Array  # number of updates done
    z: tuple  # the auxiliary vectors z_1..z_p (pytrees like params)


def _is_zero(c) -> bool:
    return isinstance(c, (int, float)) and c == 0


def _combine(terms, like):
    """sum_i c_i * x_i over pytrees, skipping structural zeros; zeros_like(like) if empty."""
    terms = [(c, x) for c, x in terms if not _is_zero(c)]
    if not terms:
        return jax.tree.map(jnp.zeros_like, like)
    return jax.tree.map(lambda *leaves: sum(c * leaf for (c, _), leaf in zip(terms, leaves)).astype(leaves[0].dtype),
                        *[x for _, x in terms])


def linear_method_transformation(spec: OptimizerSpec, hyper: Hyper) -> optax.GradientTransformation:
    """The training face of a linear method: z_j <- T_j0 theta + sum_i T_ji z_i + u_j g and
    update = (T_00 - 1) theta + sum_i T_0i z_i + u_0 g. ``hyper`` values may be traced."""
    method = spec.method

    def init(params):
        z = tuple(params if kind == "point" else jax.tree.map(jnp.zeros_like, params) for kind in method.states)
        return LinearMethodState(jnp.zeros([], jnp.int32), z)

    def update(grads, state, params=None):
        if params is None and method.states and "point" in method.states:
            raise ValueError(f"{spec.name} needs params in update()")
        k = (state.count + 1).astype(jnp.result_type(float))
        T, u = method.step(hyper, k)
        vectors = (params,) + state.z

        def row(j):
            t0 = T[j][0] - 1.0 if j == 0 else T[j][0]
            terms = [(t0, params)] if params is not None else []
            terms += [(T[j][i], vectors[i]) for i in range(1, len(vectors))] + [(u[j], grads)]
            return _combine(terms, grads)

        new_z = tuple(row(j) for j in range(1, len(vectors)))
        return row(0), LinearMethodState(state.count + 1, new_z)

    return optax.GradientTransformation(init, update)


def transformation(spec: OptimizerSpec, hyper: Hyper) -> optax.GradientTransformation:
    """optax transformation for training (any spec)."""
    if spec.method is not None:
        return linear_method_transformation(spec, hyper)
    extra = {k: v for k, v in hyper.items() if k != "eta"}
    return spec.optax_factory(hyper["eta"], **extra)


# --------------------------------------------------------------------------- recurrence face
def companion(spec: OptimizerSpec, hyper: Hyper, lam, k) -> np.ndarray:
    """A_k(lambda) = T_k + lambda u_k e_0^T, shape lam.shape + (p+1, p+1), float64."""
    T, u = spec.method.step(hyper, float(k))
    T = np.asarray(T, np.float64)
    u = np.asarray(u, np.float64)
    lam = np.asarray(lam, np.float64)
    A = np.broadcast_to(T, lam.shape + T.shape).copy()
    A[..., :, 0] += lam[..., None] * u
    return A


def initial_state(spec: OptimizerSpec, coef) -> np.ndarray:
    """X_0 per mode: (e_0, then e_0 for point states and 0 for vector states), shape (n, p+1)."""
    coef = np.asarray(coef, np.float64)
    cols = [coef] + [coef if kind == "point" else np.zeros_like(coef) for kind in spec.method.states]
    return np.stack(cols, axis=-1)


def asymptotic_companion(spec: OptimizerSpec, hyper: Hyper, lam) -> np.ndarray:
    """A(lambda) for constant methods; the k -> infinity limit (k = 1e12) for scheduled ones."""
    return companion(spec, hyper, lam, 1 if spec.constant else 1e12)


def spectral_radius(A) -> np.ndarray:
    """max |eigenvalue| of each square matrix in a stack (float64)."""
    return np.max(np.abs(np.linalg.eigvals(np.asarray(A, np.float64))), axis=-1)
