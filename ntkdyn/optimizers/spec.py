"""The optimizer declaration types and the registry: ``LinearMethod`` (S_k = T_k S_{k-1} + u_k g_k),
``OptimizerSpec`` (one optimizer, declared once), ``ModalSpec`` (a per-mode system only), ``REGISTRY`` /
``RECURRENCE_ONLY`` and their look-ups (``get``, ``modal_spec``, ``modal_names``, ``resolve_hyper``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Literal, NoReturn, get_args

import numpy as np
import optax

from ntkdyn.odes import LimitODE
from ntkdyn.schedules import Step

Hyper = dict[str, Any]


class Resolved(dict[str, Any]):
    """An optimizer's hyperparameters resolved for one run (defaults filled, a relative step made a
    number, tuned from the spectrum: ``pipeline.training.optimizer_hyper``): the mapping
    ``{"eta": ..., "beta": ..., ...}``, read-only (copy it with ``dict(hyper)`` or
    ``schedules.hyper_at`` to change a value), whose ``step`` is its step size decided once
    (``schedules.Step``: a number or a schedule). Code asks ``hyper.step`` instead of re-deriving it."""

    def __init__(self, values: Mapping[str, Any]):
        super().__init__(values)
        self.step = Step.of(self.get("eta"))

    def _read_only(self, *args, **kwargs) -> NoReturn:
        raise TypeError("resolved hyperparameters are read-only; copy them with dict(hyper) to change one")

    __setitem__ = __delitem__ = update = pop = popitem = setdefault = clear = _read_only
    __ior__ = _read_only

    def __reduce__(self):
        return (Resolved, (dict(self),))


Scalar = Any  # Python number, numpy scalar or traced jax scalar


# --------------------------------------------------------------------------- ODE face (``ntkdyn.odes``)
Damping = Literal["none", "constant", "vanishing"]  # the legacy kind strings, ``odes.LimitODE.name``
DAMPINGS: tuple[str, ...] = get_args(Damping)
StateKind = Literal["point", "vector"]  # a z_j that starts at theta_0 | one that starts at 0
STATE_KINDS: tuple[str, ...] = get_args(StateKind)


def _check_choice(owner: str, field: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{owner}.{field} = {value!r}; allowed: {', '.join(map(repr, allowed))}")


# --------------------------------------------------------------------------- declarations
@dataclasses.dataclass(frozen=True)
class LinearMethod:
    """S_k = T_k S_{k-1} + u_k g_k (module docstring). ``step(hyper, k) -> (T, u)`` returns
    nested lists of scalars; ``states`` gives the kind of each z_j ("point" or "vector").

    ``through_new(hyper, k) -> (c, d)``, optional: the same parameter row written through the *new*
    state, theta_k - theta_{k-1} = sum_j c_j z_{j,k} + d g_k, i.e. sum_j c_j (T_j, u_j) + d (0, 1) =
    (T_0 - e_0, u_0) (``test_through_new_is_row_0`` checks it per registered method). Training then
    reads the old z once (HB: v_k = beta v + g, theta_k = theta - eta v_k, optax.sgd's form), where
    row 0 from the old z makes XLA keep a copy of every z per step (the new z overwrites it in place
    while row 0 still reads it)."""

    states: tuple[StateKind, ...]
    step: Callable[[Hyper, Scalar], tuple[list[list[Scalar]], list[Scalar]]]
    through_new: Callable[[Hyper, Scalar], tuple[list[Scalar], Scalar]] | None = None

    def __post_init__(self):
        for kind in self.states:
            _check_choice("LinearMethod", "states", kind, STATE_KINDS)


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer, declared once.

    ``hyper``: hyperparameters besides ``eta`` with defaults (None = required). ``method``: the
    linear method (training + recurrence), or None. ``ode(hyper) -> odes.LimitODE`` (a kind) or None.
    ``optax_factory(eta, **kwargs)`` for empirical-only optimizers. ``constant``: T, u do not
    depend on k. ``tune(hyper, lam) -> hyper``: sets hyperparameters from the eigenvalues of K
    (e.g. Polyak-tuned HB), or None. ``ode_hr(hyper) -> HighResODE``: the high-resolution ODE
    (Shi, Du, Jordan, Su 2018), or None. ``restart``: a ``Restart`` (adaptive restart of a scheduled
    linear method: training through ``optax_factory``, kernel-regime prediction by
    ``theory.restarted_modes``; no linear recurrence, so ``method`` is None), or None.
    """

    name: str
    summary: str
    hyper: dict[str, float | None]
    method: LinearMethod | None = None
    ode: Callable[[Hyper], LimitODE] | None = None
    optax_factory: Callable[..., optax.GradientTransformation] | None = None
    constant: bool = True
    tune: Callable[[Hyper, np.ndarray], Hyper] | None = None
    ode_hr: Callable[[Hyper], Any] | None = None
    restart: Any = None

    @property
    def linear(self) -> LinearMethod:
        """``method``, for code that needs one: a ValueError naming the optimizer when it has none
        (an optax-only optimizer has no recurrence)."""
        if self.method is None:
            raise ValueError(f"optimizer {self.name!r} has no linear method (no recurrence)")
        return self.method

    @property
    def has_theory(self) -> bool:
        return self.method is not None


@dataclasses.dataclass(frozen=True)
class ModalSpec:
    """An optimizer declared only by its per-mode system (no training face): for one eigenvalue
    lambda of K, x_k = A x_{k-1} + B y, u_k = C x_k, free error response from x0.
    ``system(hyper, lam) -> (A (n, d, d), B (n, d), C (d,), x0 (n, d))``."""

    name: str
    summary: str
    hyper: dict[str, float | None]
    system: Callable[[Hyper, np.ndarray], tuple]
    ode: Callable[[Hyper], LimitODE] | None = None
    ode_hr: Callable[[Hyper], Any] | None = None
    constant: bool = True
    method = None  # the fields of OptimizerSpec it lacks, so that callers read both alike
    tune = None
    optax_factory = None
    restart = None

    @property
    def has_theory(self) -> bool:
        return True


REGISTRY: dict[str, OptimizerSpec] = {}


def register(spec: OptimizerSpec) -> OptimizerSpec:
    REGISTRY[spec.name] = spec
    return spec


RECURRENCE_ONLY: dict[str, ModalSpec] = {}  # recurrence-only declarations (filled by ``numerical``)


def get(name: str) -> OptimizerSpec:
    if name not in REGISTRY:
        raise ValueError(f"unknown optimizer {name!r}; allowed: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def modal_spec(name: str) -> OptimizerSpec | ModalSpec:
    """The declaration with a kernel-regime recurrence called ``name``: a registered
    ``OptimizerSpec`` with ``has_theory``, or a recurrence-only ``ModalSpec`` (``RECURRENCE_ONLY``).

    Raises:
        ValueError: ``name`` is unknown or empirical only; the message lists the allowed names.
    """
    if name in RECURRENCE_ONLY:
        return RECURRENCE_ONLY[name]
    spec = REGISTRY.get(name)
    if spec is None or not spec.has_theory:
        why = "is unknown" if spec is None else "has no kernel-regime recurrence (empirical only)"
        raise ValueError(f"optimizer {name!r} {why}; allowed: {', '.join(modal_names())}")
    return spec


def modal_names() -> list[str]:
    """Names of every declaration with a kernel-regime recurrence (``modal_spec``), sorted."""
    return sorted([*RECURRENCE_ONLY, *(n for n, s in REGISTRY.items() if s.has_theory)])


def resolve_hyper(spec: OptimizerSpec, hyper: Hyper, lam=None) -> Hyper:
    """Fill defaults; check that every required hyperparameter is given; with the eigenvalues
    ``lam`` of K, apply ``spec.tune`` where declared (e.g. Polyak-tuned HB)."""
    out = dict(hyper)
    for key, default in spec.hyper.items():
        if out.get(key) is None:
            if default is None:
                raise ValueError(f"optimizer {spec.name!r} needs {key!r}")
            out[key] = default
    return spec.tune(out, np.asarray(lam, np.float64)) if spec.tune is not None and lam is not None else out
