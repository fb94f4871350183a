"""The kernel-regime recurrence face (``discrete``): training's error in K's eigenbasis iterated by
the optimizer's linear recurrence e_{k+1} = A_k(lambda) e_k (``theory.discrete_modes``; eta_k for a
scheduled eta), or its adaptive-restart rule applied to the predicted trajectory
(``theory.restarted_modes``). Predicts ``loss_discrete`` = (c/2)||e_k||^2 and, full batch, the
squared gradient norm c e^T K e; its typed fields: ``predicted`` (asymptotic loss factor and
stability, NAG-C's fixed-step tail, or the per-step stability of a schedule), and for a full-batch
constant-eta run the asymptotic ``regime`` and the verdict's ``scope``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ntkdyn import optimizers, rates, schedules, theory
from ntkdyn.pipeline.faces.base import Context, FaceValue, Series
from ntkdyn.results import Predicted, Regime, finite


class Recurrence:
    name = "discrete"
    compares = ("discrete",)
    series = (Series("loss_discrete", "--", "kernel recurrence"),)

    def applies(self, ctx: Context) -> bool | str:
        if ctx.spec.restart is not None and not ctx.full_batch:
            return "restart predictions are full-batch: not compared with mini-batch training"
        if ctx.spec.restart is None and not ctx.spec.has_theory:
            return "empirical only: this optimizer has no kernel-regime recurrence or limiting ODE"
        return True

    def predict(self, ctx: Context, earlier: Mapping[str, FaceValue]) -> FaceValue:
        if ctx.spec.restart is not None:
            return _restarted(ctx)
        s, spec, hyper, res = ctx.setup, ctx.spec, ctx.hyper, ctx.trained
        modes = theory.discrete_modes(spec, hyper, s.lam, s.coef, ctx.cfg.train.steps)[res.step]
        arrays = {"loss_discrete": theory.modal_loss(modes, s.c)}
        if ctx.full_batch:  # ||grad L||^2 = c e^T K e along the full-batch recurrence
            arrays["grad_norm_sq_discrete"] = theory.modal_grad_norm_sq(modes, s.lam, s.c)
        fields: dict = {}
        if ctx.scheduled:
            fields["predicted"] = scheduled_stability(ctx)
        else:
            predicted = Predicted(
                theory.predicted_linear_rate(spec, hyper, ctx.live), **theory.stability(spec, hyper, s.lam)
            )
            if ctx.ode is not None and ctx.ode.damping == "vanishing":  # fixed-step tail (NAG-C, OGM)
                tail = theory.vanishing_tail(hyper["eta"], float(ctx.live[0]), ctx.ode.r)
                predicted = _with(
                    predicted, crossover_step=tail["crossover_step"], tail_rate=tail["tail_rate"]
                )
            fields["predicted"] = predicted
        if ctx.full_batch_constant:  # fixed eta, full batch: the regime it ends in, and when
            regime = theory.asymptotic_regime(spec, hyper, ctx.live, ctx.ode)
            position = rates.window_position(ctx.fit.window, regime["horizon"])
            fields["regime"] = Regime(**regime, window_position=position)
            fields["scope"] = rates.scope(ctx.fit, regime)
        return FaceValue(arrays=arrays, modes={"discrete": modes}, fields=fields)


def _with(p: Predicted, **changes) -> Predicted:
    import dataclasses

    return dataclasses.replace(p, **changes)


def _restarted(ctx: Context) -> FaceValue:
    """Adaptive restart: its rule on the predicted trajectory (full batch)."""
    s, spec = ctx.setup, ctx.spec
    modes, hits = theory.restarted_modes(spec, ctx.hyper, s.lam, s.coef, ctx.cfg.train.steps)
    modes = modes[ctx.trained.step]
    arrays = {
        "loss_discrete": theory.modal_loss(modes, s.c),
        "grad_norm_sq_discrete": theory.modal_grad_norm_sq(modes, s.lam, s.c),
        "restart_steps_discrete": hits,
    }
    predicted = Predicted(
        None,
        restart_rule=spec.restart.rule,
        restarts=int(hits.size),
        first_restarts=tuple(hits[:10].tolist()),
    )
    return FaceValue(arrays=arrays, modes={"discrete": modes}, fields={"predicted": predicted})


def scheduled_stability(ctx: Context) -> Predicted:
    """A scheduled eta: the largest spectral radius of A_k(lambda) with eta_k over the steps and modes
    (``stable``: at most 1 + 1e-12), and the range of eta_k."""
    spec, hyper = ctx.spec, ctx.hyper
    etas = schedules.eta_values(hyper["eta"], ctx.cfg.train.steps)
    rho = max(
        float(
            np.max(
                optimizers.spectral_radius(
                    optimizers.companion(spec, schedules.hyper_at(hyper, e), ctx.setup.lam, k + 1)
                )
            )
        )
        for k, e in enumerate(etas)
    )
    return Predicted(
        None,
        stable=bool(rho <= 1.0 + 1e-12),
        max_spectral_radius=finite(rho),
        eta_range=(float(etas.min()), float(etas.max())),
    )
