"""The diffrax face (``ode_diffrax``): the limiting ODE of the ``ode`` face integrated numerically in
the full output space (``theory.ode_diffrax``, Tsit5 with theory.rtol / theory.atol; the piecewise
ODE of a scheduled eta by ``theory.piecewise_damped_diffrax``), when theory.diffrax. Predicts
``loss_ode_diffrax``; for a constant eta also ``ode_closed_vs_diffrax`` = max_k ||e_closed(t_k) -
e_diffrax(t_k)|| / ||e_0||, the check of the closed form.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ntkdyn import models, theory
from ntkdyn.pipeline.faces.base import Context, FaceValue
from ntkdyn.pipeline.faces.ode import OdeValue
from ntkdyn.results import finite


class DiffraxCheck:
    name = "ode_diffrax"
    compares = ()
    series = ()  # a check of the ODE face's closed form: not drawn over it

    def applies(self, ctx: Context) -> bool | str:
        if not ctx.cfg.theory.diffrax or not models.is_squared(ctx.setup.model.loss):
            return False  # cross-entropy: the ODE face itself is the diffrax solution
        missing = ctx.setup.no_eigenbasis
        return True if missing is None else "the diffrax check " + missing

    def predict(self, ctx: Context, earlier: Mapping[str, FaceValue]) -> FaceValue:
        ode_value = earlier.get("ode")
        if not isinstance(ode_value, OdeValue) or ode_value.problem is None:
            return FaceValue()
        p, s, th = ode_value.problem, ctx.setup, ctx.cfg.theory
        assert th.rtol is not None and th.atol is not None  # validate fills them with theory.diffrax
        if p.kind == "piecewise":
            e_num = theory.piecewise_damped_diffrax(s.K, s.e0, p.dt, p.gamma, p.steps, th.rtol, th.atol)
            return FaceValue(arrays={"loss_ode_diffrax": theory.modal_loss(e_num, s.c)})
        e_num = theory.ode_diffrax(p.ode, s.K, s.e0, p.time, th.rtol, th.atol)
        arrays = {"loss_ode_diffrax": theory.modal_loss(e_num, s.c)}
        if p.kind != "constant":
            return FaceValue(arrays=arrays)
        assert s.V is not None  # the eigen path (applies)
        gap = np.linalg.norm(ode_value.modes["ode"] @ s.V.T - e_num, axis=1) / np.linalg.norm(s.e0)
        return FaceValue(arrays=arrays, fields={"ode_closed_vs_diffrax": finite(np.max(gap))})
