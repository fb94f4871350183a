"""Step-size schedules: a config mapping -> an optax schedule, and the step sizes eta_k it gives.

In a config, ``eta`` is a number or a mapping naming an optax schedule and its arguments,
spelled exactly as optax spells them, e.g.

    eta: {schedule: cosine_decay, init_value: 0.1, decay_steps: 1000, alpha: 0.0}
    eta: {schedule: warmup_cosine, init_value: 0.0, peak_value: 0.1, warmup_steps: 100, decay_steps: 1000}
    eta: {schedule: piecewise, init_value: 0.1, boundaries_and_scales: {500: 0.1, 800: 0.1}}
    eta: {schedule: exponential, init_value: 0.1, transition_steps: 100, decay_rate: 0.5}

Convention (optax's): the k-th update, k = 1, 2, ..., uses eta_k = schedule(k - 1), i.e. the
schedule is evaluated at the number of updates already done. The kernel-regime recurrence with
these eta_k is exact for a linear model (``theory.discrete_modes``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import optax

# config name -> optax schedule factory (arguments are the factory's own)
FACTORIES: dict[str, Callable[..., optax.Schedule]] = {
    "constant": optax.constant_schedule,
    "cosine_decay": optax.cosine_decay_schedule,
    "warmup_cosine": optax.warmup_cosine_decay_schedule,
    "warmup_constant": optax.warmup_constant_schedule,
    "piecewise": optax.piecewise_constant_schedule,
    "exponential": optax.exponential_decay,
    "warmup_exponential": optax.warmup_exponential_decay_schedule,
    "linear": optax.linear_schedule,
    "polynomial": optax.polynomial_schedule,
}


def _freeze(value):
    if isinstance(value, dict):
        return tuple(sorted((_freeze(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A named optax schedule with its arguments; hashable (compiled into training programs) and
    callable like the optax schedule itself: ``Schedule(...)(count) = eta`` for the update after
    ``count`` updates. ``args`` holds (name, value) pairs; mappings (``boundaries_and_scales``) are
    stored as sorted pairs and rebuilt as dicts for optax."""

    name: str
    args: tuple[tuple[str, Any], ...]

    def kwargs(self) -> dict:
        out = {}
        for key, value in self.args:
            if key == "boundaries_and_scales" and value is not None:
                value = {int(b): float(s) for b, s in value}
            out[key] = value
        return out

    def __call__(self, count):
        return _optax(self)(count)

    def describe(self) -> dict:
        """The config mapping (JSON-ready)."""
        return {"schedule": self.name, **self.kwargs()}


@functools.lru_cache(maxsize=64)
def _optax(schedule: Schedule) -> optax.Schedule:
    return FACTORIES[schedule.name](**schedule.kwargs())


def from_config(raw: dict) -> Schedule:
    """``{schedule: NAME, **optax arguments}`` -> Schedule. Raises ValueError naming the bad key:
    an unknown schedule, an argument the optax factory does not take, a missing required one."""
    if not isinstance(raw, dict) or "schedule" not in raw:
        raise ValueError(
            f"a schedule mapping needs the key 'schedule' (one of {', '.join(FACTORIES)}), got {raw!r}"
        )
    name = raw["schedule"]
    if name not in FACTORIES:
        raise ValueError(f"schedule: {name!r} is not allowed; allowed: {', '.join(FACTORIES)}")
    params = inspect.signature(FACTORIES[name]).parameters
    args = {k: v for k, v in raw.items() if k != "schedule"}
    for key in args:
        if key not in params:
            raise ValueError(
                f"{key}: not an argument of optax's {FACTORIES[name].__name__}; allowed: {', '.join(params)}"
            )
    for key, p in params.items():
        if p.default is inspect.Parameter.empty and key not in args:
            raise ValueError(f"{key}: required by schedule {name!r} (optax {FACTORIES[name].__name__})")
    for key, value in args.items():
        if key == "boundaries_and_scales":
            if value is not None and not (
                isinstance(value, dict) and all(_is_int(b) and _is_number(s) for b, s in value.items())
            ):
                raise ValueError(f"boundaries_and_scales: expected a mapping {{step: scale}}, got {value!r}")
        elif key == "staircase":
            if not isinstance(value, bool):
                raise ValueError(f"staircase: expected true or false, got {value!r}")
        elif key.endswith("_steps") or key == "transition_begin":
            if not _is_int(value) or value < 0 or (key in ("decay_steps", "transition_steps") and value < 1):
                raise ValueError(
                    f"{key}: expected an integer >= {1 if key in ('decay_steps', 'transition_steps') else 0},"
                    f" got {value!r}"
                )
        elif value is not None and not _is_number(value):
            raise ValueError(f"{key}: expected a number, got {value!r}")
    return Schedule(
        name,
        _freeze(
            {
                k: (int(v) if _is_int(v) and (k.endswith("_steps") or k == "transition_begin") else v)
                for k, v in args.items()
            }
        ),
    )


def _is_int(v) -> bool:
    return (
        isinstance(v, (int, np.integer))
        and not isinstance(v, bool)
        or (isinstance(v, float) and v.is_integer())
    )


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def is_scheduled(eta) -> bool:
    """True when ``eta`` is a step-size schedule (any callable count -> eta), False for a number.
    The one place where this is decided: ``Step.of`` asks it once, and code holding a ``Step``
    (``step_of``) asks ``Step.scheduled``."""
    return callable(eta)


@dataclasses.dataclass(frozen=True)
class Step:
    """A step size, decided once (``Step.of``): a constant number ``eta``, or a schedule (a
    ``Schedule``, or any callable count -> eta) giving eta_k = eta(k - 1) for the k-th update.
    ``scheduled`` says which; ``values`` gives eta_k for k = 1..steps either way."""

    eta: Any  # float | Schedule | Callable[[int], float]
    scheduled: bool

    @classmethod
    def of(cls, eta) -> Step:
        """The step of ``eta`` (a number or a schedule)."""
        return cls(eta, is_scheduled(eta))

    def values(self, steps: int) -> np.ndarray:
        """eta_k for the updates k = 1..steps (``eta_values``)."""
        return eta_values(self.eta, steps)

    def describe(self):
        """JSON-ready form: the number, or the schedule's config mapping (``describe``)."""
        return describe(self.eta)


def step_of(hyper) -> Step:
    """The step size of a hyperparameter mapping: the ``Step`` that its resolution decided (the
    ``step`` of ``optimizers.Resolved``, what the run path passes), or for a plain mapping (a study's
    own ``{"eta": ..., ...}``) ``Step.of(hyper["eta"])``."""
    step = getattr(hyper, "step", None)
    return step if isinstance(step, Step) else Step.of(hyper.get("eta"))


def eta_values(eta, steps: int) -> np.ndarray:
    """eta_k for the updates k = 1..steps (index k - 1), float64: ``eta(k - 1)`` for a schedule,
    a constant array for a number. The schedule is evaluated at the int32 update count that optax's
    states and the training face pass it (x64 on), so these are exactly the values training uses:
    float64 for some optax schedules (cosine_decay, piecewise), float32 values for others (exponential,
    warmup_*, linear, polynomial compute in float32 at an int32 count), both as optax.sgd uses them."""
    if not is_scheduled(eta):
        return np.full(steps, float(eta))
    import jax
    import jax.numpy as jnp

    with jax.enable_x64(True):
        # one scalar count at a time (lax.map), as the training step evaluates it: a vectorised float32
        # evaluation can differ from it in the last bit
        values = np.asarray(jax.lax.map(eta, jnp.arange(steps, dtype=jnp.int32)), np.float64)
        return np.broadcast_to(values, (steps,)).copy()  # constant_schedule ignores the count


def hyper_at(hyper: dict, eta_k: float) -> dict:
    """``hyper`` with its (scheduled) eta replaced by the number eta_k of one update."""
    return {**hyper, "eta": float(eta_k)}


def describe(eta):
    """JSON-ready form of an eta: the number, or the schedule's config mapping."""
    if isinstance(eta, Schedule):
        return eta.describe()
    return eta
