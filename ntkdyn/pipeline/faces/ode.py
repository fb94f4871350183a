"""The limiting-ODE face (``ode``): the kernel-regime ODE of the optimizer (``spec.ode``: gradient
flow e' = -K e, or e'' + gamma(t) e' + K e = 0) solved in closed form per mode
(``theory.ode_modes``) and read at t_k = k * time_step. Full batch only (the ODEs describe the mean
error, not the mean loss of mini-batch runs). With a scheduled eta: gradient flow at
t_k = sum_{j<k} eta_j, or for constant damping the piecewise ODE with each step's own time step
and damping (``theory.piecewise_damped_modes``). Predicts ``loss_ode`` and ``ode_time``; its field
``ode`` is the equation solved. ``problem`` carries the equation to the diffrax face.

On the Krylov path (``Setup.krylov``, theory.solver) e(t) = f_t(K) e0 is a matrix function taken in
the Krylov space of (K, e0) (``largen.ode_lanczos``, with its a-posteriori error estimate; the
held-out loss ``test_loss_ode`` through the cross kernel), for the constant-eta ODEs and the
scheduled gradient flow; the scheduled second-order (piecewise) ODE needs the eigenbasis there and
the face says so. No ``problem`` is passed on (the diffrax check needs the eigenbasis).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from ntkdyn import largen, schedules, theory
from ntkdyn.pipeline import setup as setup_mod
from ntkdyn.pipeline.faces import classification
from ntkdyn.pipeline.faces.base import Context, FaceValue, Series, merged_fields
from ntkdyn.pipeline.faces.recurrence import solver_record


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
        if classification.is_classification_loss(ctx):  # function space, constant eta only
            if ctx.ode is None or ctx.ode.order == 2 and ctx.ode.damping not in ("constant", "vanishing"):
                return "cross-entropy: the limiting ODE in function space needs a constant eta"
            return True
        if ctx.full_batch_constant:
            return True
        if ctx.full_batch and spec.has_theory and _scheduled_ode(ctx) is not None:
            missing = ctx.setup.no_eigenbasis
            if missing is not None and _scheduled_ode(ctx).order != 1:
                return "the scheduled second-order (piecewise) ODE " + missing
            return True
        return "the limiting ODEs are not compared: " + (
            "mini-batch runs (the ODEs describe the mean error, not the mean loss)"
            if not ctx.full_batch
            else "the step size is scheduled (the recurrence uses eta_k)"
        )

    def predict(self, ctx: Context, earlier: Mapping[str, FaceValue]) -> FaceValue:
        s, res = ctx.setup, ctx.trained
        if classification.is_classification_loss(ctx):
            return classification.flow(ctx)
        if s.krylov is not None:
            return _krylov(ctx, earlier)
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


def krylov_solution(ctx: Context, ode, t: np.ndarray, held_out: bool = True) -> largen.LargeNPrediction:
    """e(t) = f_t(K) e0 of ``ode`` (any ``ntkdyn.odes`` kind with per-mode ``modes``) at the times
    ``t`` by ``largen.ode_lanczos`` on the stored K, with the held-out points' loss where there are
    some and ``held_out`` (K's null modes dropped by the eigen path's rule, ``setup.kernel_rtol``)."""
    s, kry = ctx.setup, ctx.setup.krylov
    assert kry is not None  # the Krylov path
    cross = kry.K_cross if held_out else None
    return largen.ode_lanczos(
        ode, kry.K, s.e0, t, s.c, steps=ctx.trained.step, rtol=setup_mod.ODE_RTOL,
        max_iter=setup_mod.ODE_MAX_ITER, K_cross=cross, e0_test=s.e0_test, c_test=s.c_test,
        null_rtol=setup_mod.kernel_rtol(ctx.cfg, s.X.shape[0]), basis=_basis(kry, s.e0),
    )  # fmt: skip


def _basis(kry, e0) -> largen.KrylovBasis | None:
    """The run's shared Krylov basis of (K, e0) (``KrylovSetup.basis``), None where e0 = 0."""
    return kry.basis(e0) if np.any(e0) else None


def krylov_value(ctx: Context, earlier, face: str, key: str, pred, fields: dict, note=None) -> FaceValue:
    """The Krylov path's value of an ODE face: ``loss_<key>`` (and ``test_loss_<key>``) from ``pred``,
    ``fields`` with the run's ``results.Solver`` extended by this face's record; the note says when the
    estimate did not meet its tolerance."""
    arrays = {f"loss_{key}": pred.loss}
    if pred.test_loss is not None:
        arrays[f"test_loss_{key}"] = pred.test_loss
    before = merged_fields(earlier).get("solver")
    fields = {**fields, "solver": solver_record(ctx.setup, face, pred, before)}
    if not pred.converged:
        note = (
            f"{face}: the Krylov solution did not reach rtol {pred.tolerance:g} within "
            f"{pred.iterations} products (estimate {pred.error_estimate:.3g})"
        )
    return FaceValue(arrays=arrays, fields=fields, note=note)


def _krylov(ctx: Context, earlier: Mapping[str, FaceValue]) -> FaceValue:
    """The Krylov path: constant eta (e(t_k), t_k = k time_step) or the scheduled gradient flow
    (t_k = sum_{j<k} eta_j); ``applies`` has excluded the piecewise ODE."""
    res = ctx.trained
    note = None
    if ctx.cfg.theory.diffrax:
        missing = ctx.setup.no_eigenbasis
        assert missing is not None  # the Krylov path
        note = "theory.diffrax: the diffrax check " + missing
    if ctx.ode is not None:
        ode_time = res.step * ctx.ode.time_step
        pred = krylov_solution(ctx, ctx.ode, ode_time)
        value = krylov_value(ctx, earlier, "ode", "ode", pred, {"ode": ctx.ode.description}, note)
    else:
        etas = schedules.eta_values(ctx.hyper["eta"], ctx.cfg.train.steps)
        ode_time = np.concatenate([[0.0], np.cumsum(etas)])[res.step]
        # no held-out loss: the eigen path maps the modes of the constant-eta ODE only
        pred = krylov_solution(ctx, _scheduled_ode(ctx), ode_time, held_out=False)
        fields = {"ode": "e' = -K e, t_k = sum_{j<k} eta_j (scheduled eta)"}
        note = note or "scheduled eta: the first-order ODE is compared at t_k = sum_{j<k} eta_j"
        value = krylov_value(ctx, earlier, "ode", "ode", pred, fields, note)
    return dataclasses.replace(value, arrays={"ode_time": ode_time, **value.arrays})


def _scheduled_ode(ctx: Context):
    """The ODE of a scheduled eta's first positive value when it has a scheduled form here (first
    order, or second order with constant damping), else None."""
    etas = schedules.eta_values(ctx.hyper["eta"], ctx.cfg.train.steps)
    live_eta = etas[etas > 0]
    if not live_eta.size:
        return None
    assert ctx.spec.ode is not None  # LimitingOde.applies
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
            assert spec.ode is not None  # LimitingOde.applies
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
