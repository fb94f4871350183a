"""ODE kinds as types: the limiting ODEs of the optimizers in the kernel regime, one small frozen type per
kind, each carrying its coefficients and its solution in the eigenbasis of K.

    GradientFlow          e' = -K e,                                       t = k * time_step (eta)
    ConstantDamping       e'' + gamma e' + K e = 0,                        t = k * time_step (sqrt eta)
    VanishingDamping      e'' + (r / t) e' + K e = 0,                      t = k * time_step (sqrt eta)
    ScheduledDamping      e'' + [(1 - beta)/s - beta (ln s)'] e' + K e = 0, s = sqrt(eta_k) (a schedule)
    HighResODE            the high-resolution forms (Shi, Du, Jordan, Su 2018)

with e(0) = e0 and, for second order, e'(0) = 0. The first three are ``LimitODE``s (an optimizer's
``spec.ode(hyper)`` returns one); callers dispatch on the object, not on a string:

    ode = spec.ode(hyper)
    modes = ode.modes(lam, coef, t)              # closed form per mode, shape t.shape + (n,)
    e = ode.diffrax(K, e0, t, rtol, atol)        # the full-space diffrax check, shape (len(t), n)
    isinstance(ode, odes.VanishingDamping)       # instead of ode.damping == "vanishing"

``kind.name`` (also ``kind.damping``) keeps the old strings "none", "constant", "vanishing" (and
"scheduled") for callers that still compare them. The closed forms and solvers live in ``ntkdyn.theory``;
the types call them (imported on use: theory imports the optimizer declarations, which import these).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import numpy as np


def _check_choice(owner: str, field: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{owner}.{field} = {value!r}; allowed: {', '.join(map(repr, allowed))}")


def _real(value) -> float | None:
    """float(value) for a real scalar (Python, numpy, 0-d array), None otherwise."""
    if isinstance(value, (bool, str)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _check_positive(owner: str, field: str, value) -> None:
    v = _real(value)
    if v is None or not (math.isfinite(v) and v > 0):
        raise ValueError(f"{owner}.{field}: expected a finite number > 0, got {value!r}")


def _check_finite(owner: str, field: str, value) -> None:
    v = _real(value)
    if v is None or not math.isfinite(v):
        raise ValueError(f"{owner}.{field}: expected a finite number, got {value!r}")


@dataclasses.dataclass(frozen=True)
class LimitODE:
    """Base of the low-resolution limiting ODEs (t_k = k * time_step). Subclasses set ``name`` (the legacy
    damping string), ``order`` and implement ``modes`` (closed form) and ``damping_at``."""

    time_step: float
    name: ClassVar[str] = ""
    order: ClassVar[int] = 0

    def __post_init__(self):
        if type(self) is LimitODE:
            raise TypeError("LimitODE is the base of the ODE kinds; use GradientFlow, ConstantDamping, ...")
        _check_positive(type(self).__name__, "time_step", self.time_step)

    @property
    def damping(self) -> str:
        """The legacy kind string ("none", "constant", "vanishing"): ``name``."""
        return self.name

    @property
    def gamma(self) -> float:
        """Constant damping coefficient (0 for the kinds without one)."""
        return 0.0

    @property
    def r(self) -> float:
        """r of the r / t damping (0 for the kinds without one)."""
        return 0.0

    @property
    def description(self) -> str:
        raise NotImplementedError

    def damping_at(self, t):
        raise NotImplementedError

    def modes(self, lam, coef, t) -> np.ndarray:
        """e(t) per mode (closed form), shape t.shape + (n,), from e(0) = coef (, e'(0) = 0)."""
        raise NotImplementedError

    def diffrax(self, K, e0, t, rtol: float = 1e-10, atol: float = 1e-12, max_steps: int = 1_000_000):
        """The same ODE integrated in the full output space with diffrax (``theory.ode_diffrax``)."""
        from ntkdyn import theory

        return theory.ode_diffrax(self, K, e0, t, rtol, atol, max_steps)


@dataclasses.dataclass(frozen=True)
class GradientFlow(LimitODE):
    """e' = -K e, t = k * time_step (time_step = eta for GD): e_i(t) = exp(-lambda_i t) coef_i."""

    name: ClassVar[str] = "none"
    order: ClassVar[int] = 1

    @property
    def description(self) -> str:
        return "e' = -K e, t = k*eta"

    def damping_at(self, t):
        raise ValueError("a first-order ODE (gradient flow) has no damping")

    def modes(self, lam, coef, t) -> np.ndarray:
        from ntkdyn import theory

        return theory.gradient_flow_modes(lam, t) * np.asarray(coef, np.float64)


@dataclasses.dataclass(frozen=True)
class ConstantDamping(LimitODE):
    """e'' + gamma e' + K e = 0, t = k * time_step (heavy-ball ODE: gamma = (1 - beta) / sqrt(eta),
    time_step = sqrt(eta)); per mode the damped oscillator ``theory.damped_oscillator_modes``."""

    gamma: float = 0.0  # a field here, a property on the base
    name: ClassVar[str] = "constant"
    order: ClassVar[int] = 2

    def __post_init__(self):
        super().__post_init__()
        _check_finite("ConstantDamping", "gamma", self.gamma)

    @property
    def description(self) -> str:
        return f"e'' + {self.gamma:.6g} e' + K e = 0, t = k*sqrt(eta)"

    def damping_at(self, t):
        """gamma (numpy or jax t)."""
        return self.gamma + 0.0 * t

    def modes(self, lam, coef, t) -> np.ndarray:
        from ntkdyn import theory

        return theory.damped_oscillator_modes(lam, self.gamma, t) * np.asarray(coef, np.float64)


@dataclasses.dataclass(frozen=True)
class VanishingDamping(LimitODE):
    """e'' + (r / t) e' + K e = 0, t = k * time_step (Su-Boyd-Candes NAG-C ODE, r = 3); per mode
    Gamma(nu + 1) (2/z)^nu J_nu(z), z = sqrt(lambda) t, nu = (r - 1)/2 (``theory.bessel_modes``)."""

    r: float = 3.0
    name: ClassVar[str] = "vanishing"
    order: ClassVar[int] = 2

    def __post_init__(self):
        super().__post_init__()
        _check_positive("VanishingDamping", "r", self.r)

    @property
    def description(self) -> str:
        return f"e'' + ({self.r:g}/t) e' + K e = 0, t = k*sqrt(eta)"

    def damping_at(self, t):
        """r / t (numpy or jax t)."""
        return self.r / t

    def modes(self, lam, coef, t) -> np.ndarray:
        from ntkdyn import theory

        return theory.bessel_modes(lam, self.r, t) * np.asarray(coef, np.float64)


@dataclasses.dataclass(frozen=True)
class ScheduledDamping:
    """The eta -> 0 limit of a constant-damping momentum method (HB, NAG-SC, two-lag HB) under a scheduled
    step size (``theory.piecewise_damped_modes``): update k spans dt_k of ODE time with damping gamma_k (the
    constant-eta ODE of eta_k), e' rescaled by (dt_k / dt_{k-1})^carry where dt changes (carry = beta:
    optax keeps its velocity buffer). Read at the step times t_k, k in ``at``.

    ``dt``, ``gamma``: per update (tuples, so the kind is hashable); ``carry``: None = 1 - gamma_k dt_k."""

    dt: tuple[float, ...]
    gamma: tuple[float, ...]
    carry: float | None = None
    name: ClassVar[str] = "scheduled"
    order: ClassVar[int] = 2

    def __post_init__(self):
        if len(self.dt) != len(self.gamma):
            raise ValueError(
                f"ScheduledDamping: dt and gamma need one value per update, got {len(self.dt)} and "
                f"{len(self.gamma)}"
            )
        if any(not (math.isfinite(d) and d >= 0) for d in self.dt):
            raise ValueError("ScheduledDamping.dt: expected finite values >= 0 (sqrt(eta_k))")

    @classmethod
    def of(cls, ode_at: Callable[[float], ConstantDamping], etas, carry: float | None = None):
        """From the constant-eta ODE of each update, ``ode_at(eta_k)`` (e.g. ``lambda e: spec.ode({**hyper,
        "eta": e})``); an update with eta_k = 0 spans no time."""
        dt, gamma = [], []
        for e in np.asarray(etas, np.float64):
            if e > 0:
                o = ode_at(float(e))
                if not isinstance(o, ConstantDamping):
                    raise ValueError(f"ScheduledDamping needs a constant-damping ODE per update, got {o!r}")
                dt.append(o.time_step)
                gamma.append(o.gamma)
            else:
                dt.append(0.0)
                gamma.append(0.0)
        return cls(tuple(dt), tuple(gamma), carry)

    @property
    def damping(self) -> str:
        return self.name

    @property
    def description(self) -> str:
        return (
            "e'' + gamma_k e' + K e = 0 on [t_k, t_k+1), t_k+1 = t_k + sqrt(eta_k), gamma_k of eta_k, e' x "
            "(eta_k/eta_k-1)^(beta/2) where eta changes (limit of e'' + [(1-beta)/s - beta (ln s)'] e' + K e "
            "= 0, s = sqrt(eta))"
        )

    def times(self, at) -> np.ndarray:
        """t_k = sum_{j<k} dt_j for the steps ``at``."""
        return np.concatenate([[0.0], np.cumsum(self.dt)])[np.asarray(at, int)]

    def modes(self, lam, coef, at) -> np.ndarray:
        """e(t_k) per mode for the steps ``at`` (ascending), shape (len(at), n)."""
        from ntkdyn import theory

        return theory.piecewise_damped_modes(lam, coef, self.dt, self.gamma, at, self.carry)

    def diffrax(self, K, e0, at, rtol: float = 1e-10, atol: float = 1e-12) -> np.ndarray:
        """The same in the full output space with diffrax (``theory.piecewise_damped_diffrax``)."""
        from ntkdyn import theory

        return theory.piecewise_damped_diffrax(K, e0, self.dt, self.gamma, at, rtol, atol, self.carry)


@dataclasses.dataclass(frozen=True)
class HighResODE:
    """High-resolution ODE (Shi, Du, Jordan, Su 2018) in the kernel regime. At update k its own time is
    tau_k = (k + time_offset) * time_step, and

        e'' + (gamma(tau) + hess_damping K) e'
            + (stiffness + stiffness_t / tau + stiffness_t2 / tau^2) K e = 0,
        e(tau_0) = e0,  e'(tau_0) = -velocity0 K e0,   tau_0 = time_offset * time_step (``start``),

    gamma(tau) = gamma (``damping = "constant"``) or r / tau (``"vanishing"``). ``hess_damping K e'`` is
    the gradient-correction term ~ sqrt(eta) K e' that separates NAG from HB. Vanishing damping with
    time_offset = 0 starts at the singular point tau = 0: there e'(0) is forced by regularity
    (velocity0 must be stiffness_t / r, stiffness_t2 must be 0).

    Callers pass the step clock t = k * time_step, as for ``LimitODE`` (``theory.highres_modes``);
    ``ode_time(t) = t + start`` is the ODE's own time. Every ``ode_hr`` below is the modified equation of
    its exact recurrence with a consistent start, so that it tracks e_k to O(eta) on a fixed horizon of
    ODE time as eta -> 0 (the low-resolution ODEs: O(sqrt eta)); ``experiments/ode_limit.py`` fits the
    orders and tests/test_theory.py checks them against hand-written recurrences.
    """

    time_step: float
    damping: Literal["constant", "vanishing"]  # the form's damping: constant gamma or r / tau
    gamma: float = 0.0
    r: float = 0.0
    hess_damping: float = 0.0
    stiffness: float = 1.0
    stiffness_t: float = 0.0
    stiffness_t2: float = 0.0
    velocity0: float = 0.0
    time_offset: float = 0.0

    def __post_init__(self):
        _check_choice("HighResODE", "damping", self.damping, ("constant", "vanishing"))
        if not (self.time_step > 0 and self.time_offset >= 0):
            raise ValueError(
                f"HighResODE needs time_step > 0 and time_offset >= 0, got time_step = "
                f"{self.time_step}, time_offset = {self.time_offset}"
            )
        if self.damping == "vanishing" and self.time_offset == 0:
            if self.stiffness_t2 != 0:
                raise ValueError(
                    "HighResODE: stiffness_t2 / tau^2 needs a start tau_0 > 0 (time_offset > 0),"
                    f" got stiffness_t2 = {self.stiffness_t2} with time_offset = 0"
                )
            if not math.isclose(self.velocity0, self.stiffness_t / self.r, rel_tol=1e-12, abs_tol=1e-300):
                raise ValueError(
                    "HighResODE: starting at tau = 0, regularity forces velocity0 = "
                    f"stiffness_t / r = {self.stiffness_t / self.r}, got {self.velocity0}"
                )

    @property
    def vanishing(self) -> bool:
        """True for r / tau damping (NAG-C forms), False for constant damping (HB, NAG-SC)."""
        return self.damping == "vanishing"

    @property
    def start(self) -> float:
        """tau_0 = time_offset * time_step, where e = e0."""
        return self.time_offset * self.time_step

    def ode_time(self, t):
        """tau = t + tau_0 for the step clock t = k * time_step."""
        return t + self.start

    @property
    def description(self) -> str:
        damp = f"{self.gamma:.6g}" if self.damping == "constant" else f"{self.r:g}/tau"
        corr = f" + {self.hess_damping:.4g} K e'" if self.hess_damping else ""
        stiff = f"{self.stiffness:.6g}"
        if self.stiffness_t:
            stiff += f" + {self.stiffness_t:.4g}/tau"
        if self.stiffness_t2:
            stiff += f" {'-' if self.stiffness_t2 < 0 else '+'} {abs(self.stiffness_t2):.4g}/tau^2"
        stiff = f"({stiff})" if (self.stiffness_t or self.stiffness_t2) else stiff
        clock = (
            f"tau = (k + {self.time_offset:g})*{self.time_step:.4g}"
            if self.time_offset
            else f"tau = k*{self.time_step:.4g}"
        )
        return (
            f"e'' + {damp} e'{corr} + {stiff} K e = 0, {clock}, e(tau0) = e0, "
            f"e'(tau0) = -{self.velocity0:.4g} K e0"
        )

    def damping_at(self, tau):
        """gamma(tau) (numpy or jax)."""
        return self.gamma + 0.0 * tau if self.damping == "constant" else self.r / tau

    def stiffness_at(self, tau):
        """stiffness + stiffness_t / tau + stiffness_t2 / tau^2 (numpy or jax; constant damping:
        stiffness)."""
        if self.damping == "constant":
            return self.stiffness + 0.0 * tau
        return self.stiffness + self.stiffness_t / tau + self.stiffness_t2 / (tau * tau)

    def modes(self, lam, coef, t) -> np.ndarray:
        """e per mode at the step clock t = k * time_step (``theory.highres_modes``), shape t.shape + (n,)."""
        from ntkdyn import theory

        return theory.highres_modes(self, lam, coef, t)

    def diffrax(self, K, e0, t, rtol: float = 1e-10, atol: float = 1e-12, max_steps: int = 1_000_000):
        """The same in the full output space with diffrax (``theory.highres_diffrax``)."""
        from ntkdyn import theory

        return theory.highres_diffrax(self, K, e0, t, rtol, atol, max_steps)


KINDS: tuple[type, ...] = (GradientFlow, ConstantDamping, VanishingDamping, ScheduledDamping, HighResODE)


def kind_of(ode: Any) -> str:
    """The kind's string (``name``) of any ODE object, for callers that still compare strings."""
    return ode.name if hasattr(ode, "name") else ode.damping
