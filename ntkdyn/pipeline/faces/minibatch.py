"""The mini-batch face (``stochastic``): for train.batch_size = b, the kernel recurrence with the
batch's random projection, whose mean loss E[L_k] is predicted exactly from its second moment
(sampling with replacement, ``stochastic.second_moment_loss``) or as the mean of theory.mc_runs
sampled batch orders (shuffle, ``stochastic.simulate_losses``), with the 95 % band of the mean of
train.sampling_runs trained runs (``stochastic.mean_band``). It refines the recurrence face:
``loss_discrete`` becomes E[L_k] and ``loss_full_batch`` keeps the full-batch recurrence;
``loss_band_lo`` / ``loss_band_hi`` are the band; with a held-out set ``test_loss_discrete`` is the
predicted mean held-out loss. Fields: ``stochastic`` (the band check, the mini-batch constants) and
``predicted`` (the rate of E[L_k], replacement only; the full-batch rate kept beside it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from ntkdyn import stochastic
from ntkdyn.config import Config
from ntkdyn.pipeline.faces.base import Context, FaceValue, Series, merged_arrays, merged_fields
from ntkdyn.results import BandCheck, MiniBatchBound, Predicted, Stochastic, finite
from ntkdyn.train import TrainResult


class MiniBatch:
    name = "stochastic"
    compares = ()  # it refines loss_discrete, compared by the recurrence face
    series = (
        Series("loss_band_lo", "", "95 % band of the mean", "band_lo"),
        Series("loss_band_hi", "", "95 % band of the mean", "band_hi"),
    )

    def applies(self, ctx: Context) -> bool | str:
        if ctx.full_batch or not ctx.spec.has_theory:
            return False
        missing = ctx.setup.no_eigenbasis
        return True if missing is None else "the mini-batch moments " + missing

    def predict(self, ctx: Context, earlier: Mapping[str, FaceValue]) -> FaceValue:
        cfg, s, spec, hyper, res = ctx.cfg, ctx.setup, ctx.spec, ctx.hyper, ctx.trained
        t = cfg.train
        b = t.batch_size
        # mini-batch (applies); validate fills train.sampling and theory.mc_runs there
        assert b is not None and t.sampling is not None and cfg.theory.mc_runs is not None
        held: stochastic.HeldOutMap | None = None
        if s.test_map is not None:
            assert s.e0_test is not None and s.c_test is not None  # set with test_map
            held = stochastic.HeldOutMap(s.test_map, s.e0_test, s.c_test)
        sims = stochastic.simulate_losses(
            spec, hyper, s.K, s.e0, s.c, t.steps, b, t.sampling, cfg.theory.mc_runs,
            seed=cfg.seed, held_out=held, V=s.V,
        )  # fmt: skip
        sims, sims_test = sims if held is not None else (sims, None)
        sims = sims[:, res.step]
        exact = exact_test = None
        if t.sampling == "replacement":
            exact = stochastic.second_moment_loss(
                spec, hyper, s.lam, s.V, s.coef, s.c, t.steps, b, held_out=held
            )
            exact, exact_test = exact if held is not None else (exact, None)
            exact = exact[res.step]
        arrays: dict[str, np.ndarray] = {}
        if held is not None:  # the predicted mean held-out loss: exact (replacement) or sampled (shuffle)
            assert sims_test is not None  # simulate_losses returns it with held_out
            mean_test = exact_test if exact_test is not None else sims_test.mean(axis=0)
            arrays["test_loss_discrete"] = mean_test[res.step]
        band = stochastic.mean_band(exact, sims, t.sampling_runs)
        full_batch = merged_arrays(earlier).get("loss_discrete")
        if full_batch is not None:
            arrays["loss_full_batch"] = full_batch
        arrays.update(loss_discrete=band.mean, loss_band_lo=band.lo, loss_band_hi=band.hi)
        mbb = stochastic.mbb_constants(s.K)
        before = merged_fields(earlier).get("predicted") or Predicted(None)
        rate = best = None  # the rate of E[L_k]: replacement only (shuffle has no closed form)
        if t.sampling == "replacement" and spec.constant and not ctx.scheduled:
            rate = stochastic.second_moment_rate(spec, hyper, s.lam, s.V, b)
            if spec.name == "gd":  # the exact best eta(b) of SGD, beside MBB's two formulas
                best = float(stochastic.best_step_size(spec, hyper, s.lam, s.V, b)[0])
        info = Stochastic(
            batch_size=b,
            sampling=t.sampling,
            sampling_runs=t.sampling_runs,
            mc_runs=cfg.theory.mc_runs,
            mean=band.source,
            **dataclasses.asdict(band_check(cfg, band, res)),
            mbb=MiniBatchBound(
                beta=mbb.beta,
                lam_1=mbb.lam_1,
                lam_n=mbb.lam_n,
                smooth_knee_batch_size=mbb.smooth_knee_batch_size,
                smooth_step_size=float(mbb.smooth_step_size(b)),
                quadratic_critical_batch_size=mbb.quadratic_critical_batch_size,
                quadratic_step_size=float(mbb.quadratic_step_size(b)),
                best_step_size=best,
            ),
            linear_rate=rate,
        )
        predicted = dataclasses.replace(before, full_batch_linear_rate=before.linear_rate, linear_rate=rate)
        return FaceValue(arrays=arrays, fields={"stochastic": info, "predicted": predicted})


def band_check(cfg: Config, band: stochastic.MeanBand, res: TrainResult) -> BandCheck:
    """Is the trained mean loss inside the predicted mean's 95 % band at every recorded step? The band
    is widened by the rounding of the training dtype, 100 eps |mean| (at step 0 every run has the same
    loss, so the sampled band has zero width)."""
    tol = 100 * float(np.finfo(cfg.dtype).eps) * np.abs(band.mean)
    half = 0.5 * (band.hi - band.lo)
    live = np.isfinite(res.loss)
    with np.errstate(invalid="ignore"):
        inside = live & (np.abs(res.loss - band.mean) <= half + tol)
    outside = np.flatnonzero(live & ~inside)
    return BandCheck(
        inside_band=finite(np.mean(inside[live])) if live.any() else None,
        all_inside=bool(live.any() and outside.size == 0),
        first_outside_step=int(res.step[outside[0]]) if outside.size else None,
    )
