"""The high-resolution ODE face (``ode_hr``; Shi, Du, Jordan, Su 2018): the optimizer's modified
equation with its O(sqrt(eta)) gradient-correction term (``spec.ode_hr``), solved per mode
(``theory.highres_modes``) and read at t_k = k * time_step. Full batch, constant eta only.
Predicts ``loss_ode_hr``; its field ``ode_hr`` is the equation solved. On the Krylov path
(``Setup.krylov``) the same solution as a matrix function of K (``largen.ode_lanczos``: the
per-mode solution evaluated at the Ritz values of (K, e0)), recorded in the field ``solver``.
"""

from __future__ import annotations

from collections.abc import Mapping

from ntkdyn import models, theory
from ntkdyn.pipeline.faces.base import Context, FaceValue, Series
from ntkdyn.pipeline.faces.ode import krylov_solution, krylov_value


class HighResOde:
    name = "ode_hr"
    compares = ("ode_hr",)
    series = (Series("loss_ode_hr", "-.", "high-res ODE"),)

    def applies(self, ctx: Context) -> bool | str:
        if ctx.spec.ode_hr is not None and not models.is_squared(ctx.setup.model.loss):
            return False  # the high-resolution ODEs are written for the squared loss (per mode)
        return ctx.spec.ode_hr is not None and ctx.full_batch_constant

    def predict(self, ctx: Context, earlier: Mapping[str, FaceValue]) -> FaceValue:
        s = ctx.setup
        assert ctx.spec.ode_hr is not None  # applies
        hr = ctx.spec.ode_hr(ctx.hyper)
        if s.krylov is not None:
            # no held-out loss: the eigen path maps only the recurrence's and the ODE's modes
            pred = krylov_solution(ctx, hr, ctx.trained.step * hr.time_step, held_out=False)
            return krylov_value(ctx, earlier, "ode_hr", "ode_hr", pred, {"ode_hr": hr.description})
        modes = theory.highres_modes(hr, s.lam, s.coef, ctx.trained.step * hr.time_step)
        return FaceValue(
            arrays={"loss_ode_hr": theory.modal_loss(modes, s.c)}, fields={"ode_hr": hr.description}
        )
