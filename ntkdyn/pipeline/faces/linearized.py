"""The linearised-network face (``linearized``): the network's first-order Taylor expansion at
theta_0, f_lin(theta) = f(theta_0) + J_0 (theta - theta_0) (``ntkdyn.linearized``), trained by the
same training path, optimizer, schedule and (mini-batch) batches as the network. Applies per
theory.linearized: always, never, or auto (optimizers without a kernel-regime recurrence, e.g.
Adam, whose only prediction it is). Predicts ``loss_linearized`` (and ``test_loss_linearized``,
``loss_linearized_runs``); fields ``linearized`` (divergence, runs) and, inside the mini-batch band,
``stochastic.linearized`` (linear: only sampling noise separates it from E[L]).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ntkdyn import stochastic
from ntkdyn.pipeline import training
from ntkdyn.pipeline.faces import classification
from ntkdyn.pipeline.faces.base import Context, FaceValue, Series, merged_arrays, merged_fields
from ntkdyn.pipeline.faces.minibatch import band_check
from ntkdyn.results import Linearized


class LinearizedNetwork:
    name = "linearized"
    compares = ("linearized",)
    series = (Series("loss_linearized", (0, (5, 1, 1, 1)), "linearised network"),)

    def applies(self, ctx: Context) -> bool | str:
        mode = ctx.cfg.theory.linearized
        return mode == "always" or (mode == "auto" and not ctx.spec.has_theory and ctx.spec.restart is None)

    def predict(self, ctx: Context, earlier: Mapping[str, FaceValue]) -> FaceValue:
        t = ctx.cfg.train
        lin = training.train_linearized(ctx.cfg, ctx.setup, ctx.spec, ctx.hyper)
        arrays = {"loss_linearized": lin.loss}
        if lin.test_loss is not None:
            arrays["test_loss_linearized"] = lin.test_loss
        if classification.records_accuracy(ctx) and lin.errors.size:  # at train.error_at, as training's
            held = None if lin.test_errors is None else classification.outputs_of(ctx, lin.test_errors, True)
            f_at = classification.outputs_of(ctx, lin.errors)
            arrays.update(classification.class_arrays(ctx, "linearized", f_at, held))
        fields: dict = {"linearized": Linearized(diverged_at=lin.diverged_at, runs=t.sampling_runs)}
        if lin.loss_runs is not None:
            arrays["loss_linearized_runs"] = lin.loss_runs
            before, info = merged_arrays(earlier), merged_fields(earlier).get("stochastic")
            if "loss_band_lo" in before and info is not None:
                assert ctx.cfg.theory.mc_runs is not None  # a mini-batch run's (config.validate fills it)
                band = stochastic.MeanBand(
                    before["loss_discrete"], None, before["loss_band_lo"], before["loss_band_hi"],
                    t.sampling_runs, ctx.cfg.theory.mc_runs, "",
                )  # fmt: skip
                fields["stochastic"] = dataclasses.replace(info, linearized=band_check(ctx.cfg, band, lin))
        return FaceValue(arrays=arrays, fields=fields)
