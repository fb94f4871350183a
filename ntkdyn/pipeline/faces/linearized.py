"""The linearised-network face (``linearized``): the network's first-order Taylor expansion at
theta_0, f_lin(theta) = f(theta_0) + J_0 (theta - theta_0) (``ntkdyn.linearized``), trained by the
same training path, optimizer, schedule and (mini-batch) batches as the network: the face asks for
it before training (``expansion``), ``training.train_runs`` trains it beside the network, and the
face reads its trajectory (``ctx.expanded("linearized")``). Applies per
theory.linearized: always, never, or auto (optimizers without a kernel-regime recurrence, e.g.
Adam, whose only prediction it is). Predicts ``loss_linearized`` (and ``test_loss_linearized``,
``loss_linearized_runs``); fields ``linearized`` (divergence, runs) and, inside the mini-batch band,
``stochastic.linearized`` (linear: only sampling noise separates it from E[L]).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ntkdyn import linearized, models, optimizers, stochastic
from ntkdyn.config import Config
from ntkdyn.pipeline.faces import classification
from ntkdyn.pipeline.faces.base import Context, FaceValue, Series, merged_arrays, merged_fields
from ntkdyn.pipeline.faces.minibatch import band_check
from ntkdyn.pipeline.setup import Setup
from ntkdyn.results import Linearized


def wanted(cfg: Config, spec: optimizers.OptimizerSpec) -> bool:
    """theory.linearized: always; or auto for optimizers without a kernel-regime recurrence (nor a
    restart rule), whose only prediction the linearised network is."""
    mode = cfg.theory.linearized
    return mode == "always" or (mode == "auto" and not spec.has_theory and spec.restart is None)


class LinearizedNetwork:
    name = "linearized"
    compares = ("linearized",)
    series = (Series("loss_linearized", (0, (5, 1, 1, 1)), "linearised network"),)

    def expansion(self, cfg: Config, setup: Setup, spec: optimizers.OptimizerSpec) -> models.Model | None:
        """The network's linearisation at theta_0 (``linearized.linearize``), when the face applies."""
        return linearized.linearize(setup.model) if wanted(cfg, spec) else None

    def applies(self, ctx: Context) -> bool | str:
        return wanted(ctx.cfg, ctx.spec)

    def predict(self, ctx: Context, earlier: Mapping[str, FaceValue]) -> FaceValue:
        t = ctx.cfg.train
        lin = ctx.expanded(self.name)  # trained beside the network (training.train_runs)
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
