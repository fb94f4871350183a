"""Empirical-only optimizers: optax's adaptive methods, with no kernel-regime recurrence and no ODE."""

from __future__ import annotations

import optax

from ntkdyn.optimizers.spec import OptimizerSpec, register

EMPIRICAL_ONLY = (
    "adam",
    "adamw",
    "rmsprop",
    "adagrad",
    "adabelief",
    "lion",
    "lamb",
    "sgd",
    "adafactor",
    "yogi",
)
for _name in EMPIRICAL_ONLY:
    register(
        OptimizerSpec(
            _name,
            f"optax.{_name} (empirical only: no recurrence, no ODE)",
            {},
            optax_factory=getattr(optax, _name),
        )
    )
