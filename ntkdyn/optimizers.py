"""Optimizers, each declared once with three faces.

Every optimizer with a kernel-regime theory is a *linear momentum method*: at update
k = 1, 2, ... it uses coefficients (beta_k, a_k, b_k) and

    v_k = beta_k v_{k-1} + g_k,        theta_k = theta_{k-1} - eta (a_k g_k + b_k v_k),

with v_0 = 0 and g_k the gradient at theta_{k-1}. This is optax's ``trace`` + ``scale``
(and torch.optim.SGD's momentum): GD is (0, 1, 0), Polyak heavy ball (beta, 0, 1), NAG in the
Sutskever/optax/torch form (beta, 1, beta). The parameters held are always theta_k, so for the
Nesterov methods the logged iterate is optax's *look-ahead* point, the point where the
gradient is evaluated.

From the same coefficients follow the two other faces:

* **Kernel-regime recurrence.** With e = u - y, kernel K = c H (c from the loss, see
  ``models.loss_scale``) and one eigenmode lambda of K, the output-space momentum m = J v obeys
  m_k = beta_k m_{k-1} + lambda e_{k-1} and e_k = e_{k-1} - eta (a_k lambda e_{k-1} + b_k m_k):

      [e_k, m_k]^T = A_k(lambda) [e_{k-1}, m_{k-1}]^T,
      A_k = [[1 - eta lambda (a_k + b_k), -eta b_k beta_k], [lambda, beta_k]].

  Its characteristic polynomial is z^2 - (1 + beta - eta lambda) z + beta for HB and
  z^2 - (1 + beta)(1 - eta lambda) z + beta (1 - eta lambda) for NAG (DESIGN.md section 1).
* **Limiting ODE** (``LimitODE``): first order e' = -K e with t = k eta, or second order
  e'' + gamma(t) e' + K e = 0 with t = k sqrt(eta).

Optimizers without a recurrence (adam, rmsprop, ...) are "empirical only": their
``coefficients`` and ``ode`` faces are ``None`` and every prediction for them is absent.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

Hyper = dict[str, float]
Coefficients = Callable[[Hyper, "jax.Array | np.ndarray | int"], tuple]


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
class OptimizerSpec:
    """One optimizer, declared once.

    ``hyper``: the hyperparameters it takes besides ``eta`` with their defaults (None means
    required). ``coefficients(hyper, k) -> (beta_k, a_k, b_k)`` for k >= 1 (numpy or jax
    arrays), or None. ``ode(hyper) -> LimitODE`` or None. ``optax_factory(eta, **hyper)`` for
    empirical-only optimizers.
    """

    name: str
    summary: str
    hyper: dict[str, float | None]
    coefficients: Coefficients | None = None
    ode: Callable[[Hyper], LimitODE] | None = None
    optax_factory: Callable[..., optax.GradientTransformation] | None = None
    constant: bool = True  # coefficients independent of k

    @property
    def has_theory(self) -> bool:
        return self.coefficients is not None


def _gd(h: Hyper, k):
    return 0.0 * k, 1.0 + 0.0 * k, 0.0 * k


def _hb(h: Hyper, k):
    return h["beta"] + 0.0 * k, 0.0 * k, 1.0 + 0.0 * k


def _nag(h: Hyper, k):
    return h["beta"] + 0.0 * k, 1.0 + 0.0 * k, h["beta"] + 0.0 * k


def nag_c_beta(k, r):
    """beta_k = (k - 1) / (k + r - 1), k = 1, 2, ... (r = 3 is Nesterov's choice)."""
    return (k - 1.0) / (k + r - 1.0)


def _nag_c(h: Hyper, k):
    beta = nag_c_beta(k, h["r"])
    return beta, 1.0 + 0.0 * k, beta


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


register(OptimizerSpec("gd", "gradient descent", {}, _gd, _gd_ode))
register(OptimizerSpec("hb", "Polyak heavy ball (optax sgd with momentum)", {"beta": None}, _hb, _hb_ode))
register(OptimizerSpec(
    "nag", "Nesterov, constant beta (optax sgd nesterov=True; look-ahead iterate)",
    {"beta": None}, _nag, _hb_ode))
register(OptimizerSpec(
    "nag_c", "Nesterov with beta_k = (k-1)/(k+r-1) (look-ahead iterate)",
    {"r": 3.0}, _nag_c, _nag_c_ode, constant=False))

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
class MomentumState(NamedTuple):
    count: jax.Array  # number of updates done
    velocity: optax.Updates


def linear_momentum(spec: OptimizerSpec, hyper: Hyper) -> optax.GradientTransformation:
    """The training face of ``spec``: v_k = beta_k v_{k-1} + g_k; update = -eta (a_k g_k + b_k v_k).

    ``hyper`` values may be traced arrays (one compiled program serves every eta, beta, r).
    """
    coefficients = spec.coefficients
    eta = hyper["eta"]

    def init(params):
        return MomentumState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        del params
        k = state.count + 1
        beta, a, b = coefficients(hyper, k.astype(jnp.result_type(float)))
        velocity = jax.tree.map(lambda v, g: (beta * v + g).astype(g.dtype), state.velocity, grads)
        updates = jax.tree.map(lambda g, v: (-eta * (a * g + b * v)).astype(g.dtype), grads, velocity)
        return updates, MomentumState(k, velocity)

    return optax.GradientTransformation(init, update)


def transformation(spec: OptimizerSpec, hyper: Hyper) -> optax.GradientTransformation:
    """optax transformation for training (any spec)."""
    if spec.coefficients is not None:
        return linear_momentum(spec, hyper)
    extra = {k: v for k, v in hyper.items() if k != "eta"}
    return spec.optax_factory(hyper["eta"], **extra)


# --------------------------------------------------------------------------- recurrence face
def companion(spec: OptimizerSpec, hyper: Hyper, lam, k):
    """A_k(lambda), shape lam.shape + (2, 2), acting on (e_{k-1}, m_{k-1}) (module docstring)."""
    lam = np.asarray(lam, dtype=np.float64)
    beta, a, b = (np.broadcast_to(np.asarray(c, np.float64), lam.shape) for c in spec.coefficients(hyper, np.float64(k)))
    eta = hyper["eta"]
    A = np.empty(lam.shape + (2, 2))
    A[..., 0, 0] = 1.0 - eta * lam * (a + b)
    A[..., 0, 1] = -eta * b * beta
    A[..., 1, 0] = lam
    A[..., 1, 1] = beta
    return A


def asymptotic_companion(spec: OptimizerSpec, hyper: Hyper, lam):
    """A(lambda) for constant methods; the k -> infinity limit for scheduled ones."""
    if spec.constant:
        return companion(spec, hyper, lam, 1)
    return companion(spec, hyper, lam, 1e12)


def spectral_radius(A) -> np.ndarray:
    """max |eigenvalue| of each 2x2 matrix in a stack (closed form, float64)."""
    A = np.asarray(A, np.float64)
    tr = A[..., 0, 0] + A[..., 1, 1]
    det = A[..., 0, 0] * A[..., 1, 1] - A[..., 0, 1] * A[..., 1, 0]
    disc = np.sqrt((tr * tr - 4.0 * det).astype(np.complex128))
    return np.maximum(np.abs((tr + disc) / 2), np.abs((tr - disc) / 2))
