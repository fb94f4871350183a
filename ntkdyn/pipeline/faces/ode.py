"""The limiting-ODE face (``ode``): the kernel-regime ODE of the optimizer (``spec.ode``: gradient
flow e' = -K e, or e'' + gamma(t) e' + K e = 0) solved in closed form per mode
(``theory.ode_modes``) and read at t_k = k * time_step. Full batch only (the ODEs describe the mean
error, not the mean loss of mini-batch runs). With a scheduled eta: gradient flow at
t_k = sum_{j<k} eta_j, or for constant damping the piecewise ODE with each step's own time step
and damping (``theory.piecewise_damped_modes``). Predicts ``loss_ode`` and ``ode_time``; its field
``ode`` is the equation solved. ``problem`` carries the equation to the diffrax face.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from ntkdyn import schedules, theory
from ntkdyn.pipeline.faces.base import Context, FaceValue, Series


@dataclasses.dataclass(frozen=True)
class OdeProblem:
    """The ODE a run was compared with, for a numerical check: ``kind`` constant (``ode`` at
    ``time``), first_order_scheduled (gradient flow at ``time``) or piecewise (damping ``gamma`` and
    time steps ``dt`` per update, read at the recorded ``steps``)."""

    kind: Literal["constant", "first_order_scheduled", "piecewise"]
    ode: Any
    time: np.ndarray
    dt: np.ndarray | None = None
    gamma: np.ndarray | None = None
    steps: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class OdeValue(FaceValue):
    problem: OdeProblem | None = None


class LimitingOde:
    name = "ode"
    compares = ("ode",)
    series = (Series("loss_ode", ":", "ODE"),)

    def applies(self, ctx: Context) -> bool | str:
        spec = ctx.spec
        if spec.ode is None:
            return "no limiting ODE is declared for this optimizer" if spec.has_theory else False
        if ctx.full_batch_constant:
            return True
        if ctx.full_batch and spec.has_theory and _scheduled_ode(ctx) is not None:
            return True
        return "the limiting ODEs are not compared: " + (
            "mini-batch runs (the ODEs describe the mean error, not the mean loss)"
            if not ctx.full_batch
            else "the step size is scheduled (the recurrence uses eta_k)"
        )

    def predict(self, ctx: Context, earlier: Mapping[str, FaceValue]) -> FaceValue:
        s, res = ctx.setup, ctx.trained
        if ctx.ode is not None:
            ode_time = res.step * ctx.ode.time_step
            modes = theory.ode_modes(ctx.ode, s.lam, s.coef, ode_time)
            return OdeValue(
                arrays={"ode_time": ode_time, "loss_ode": theory.modal_loss(modes, s.c)},
                modes={"ode": modes},
                fields={"ode": ctx.ode.description},
                problem=OdeProblem("constant", ctx.ode, ode_time),
            )
        etas = schedules.eta_values(ctx.hyper["eta"], ctx.cfg.train.steps)
        ode = _scheduled_ode(ctx)
        if ode.order == 1:  # gradient flow read at t_k = sum_{j<k} eta_j
            ode_time = np.concatenate([[0.0], np.cumsum(etas)])[res.step]
            loss = theory.modal_loss(theory.ode_modes(ode, s.lam, s.coef, ode_time), s.c)
            return OdeValue(
                arrays={"ode_time": ode_time, "loss_ode": loss},
                fields={"ode": "e' = -K e, t_k = sum_{j<k} eta_j (scheduled eta)"},
                note="scheduled eta: the first-order ODE is compared at t_k = sum_{j<k} eta_j",
                problem=OdeProblem("first_order_scheduled", ode, ode_time),
            )
        return _piecewise(ctx, etas)


def _scheduled_ode(ctx: Context):
    """The ODE of a scheduled eta's first positive value when it has a scheduled form here (first
    order, or second order with constant damping), else None."""
    etas = schedules.eta_values(ctx.hyper["eta"], ctx.cfg.train.steps)
    live_eta = etas[etas > 0]
    if not live_eta.size:
        return None
    ode = ctx.spec.ode(schedules.hyper_at(ctx.hyper, live_eta[0]))
    if ode is None or not (ode.order == 1 or (ode.order == 2 and ode.damping == "constant")):
        return None
    return ode


def _piecewise(ctx: Context, etas: np.ndarray) -> OdeValue:
    """A second-order method with constant damping (HB, NAG-SC, ...) under a scheduled eta: update
    k spans dt_k = ``time_step`` of its own constant-eta ODE (sqrt(eta_k)) with that ODE's damping
    gamma_k ((1 - beta) / sqrt(eta_k) for HB), held over [t_k, t_{k+1})
    (``theory.piecewise_damped_modes``, exact per interval)."""
    s, spec, hyper, res = ctx.setup, ctx.spec, ctx.hyper, ctx.trained
    dt, gamma = np.zeros(etas.size), np.zeros(etas.size)
    for k, e in enumerate(etas):
        if e > 0:
            ode_k = spec.ode(schedules.hyper_at(hyper, e))
            dt[k], gamma[k] = ode_k.time_step, ode_k.gamma
    ode_time = np.concatenate([[0.0], np.cumsum(dt)])[res.step]
    modes = theory.piecewise_damped_modes(s.lam, s.coef, dt, gamma, res.step)
    return OdeValue(
        arrays={"ode_time": ode_time, "loss_ode": theory.modal_loss(modes, s.c)},
        fields={
            "ode": "e'' + gamma_k e' + K e = 0 on [t_k, t_k+1), t_k+1 = t_k + sqrt(eta_k), gamma_k of "
            "eta_k (scheduled eta)"
        },
        note="scheduled eta: the second-order ODE is compared with gamma_k and the time map t_k = "
        "sum_{j<k} sqrt(eta_j) of each step's eta; the high-resolution ODE is not",
        problem=OdeProblem("piecewise", None, ode_time, dt, gamma, res.step),
    )
