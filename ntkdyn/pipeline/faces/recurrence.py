"""The kernel-regime recurrence face (``discrete``): training's error in K's eigenbasis iterated by
the optimizer's linear recurrence e_{k+1} = A_k(lambda) e_k (``theory.discrete_modes``; eta_k for a
scheduled eta), or its adaptive-restart rule applied to the predicted trajectory
(``theory.restarted_modes``). Predicts ``loss_discrete`` = (c/2)||e_k||^2 and, full batch, the
squared gradient norm c e^T K e; its typed fields: ``predicted`` (asymptotic loss factor and
stability, NAG-C's fixed-step tail, or the per-step stability of a schedule), and for a full-batch
constant-eta run the asymptotic ``regime`` and the verdict's ``scope``.

On the Krylov path (``Setup.krylov``, theory.solver) the same recurrence runs in the output space by
the recurrence polynomial evaluated in the run's shared Krylov basis of (K, e0)
(``largen.discrete_lanczos``: exact once the basis is longer than the steps, a-posteriori estimate to
``setup.ODE_RTOL`` before; the exact ``largen.discrete_matvec``, one product with K per step, where it
does not converge), with the held-out
errors through the cross kernel (``test_loss_discrete``), and the rate, stability and regime come
from lambda_min and lambda_max alone (``largen.regime_from_extremes``; ``unstable_modes`` None). Its
field ``solver`` records which solver ran (``results.Solver``). Restart rules and mini-batch
runs need the eigenbasis there: the face says so and does not apply.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ntkdyn import largen, optimizers, rates, schedules, theory
from ntkdyn.pipeline.faces import classification
from ntkdyn.pipeline.faces.base import Context, FaceValue, Series
from ntkdyn.pipeline.setup import kernel_rtol
from ntkdyn.results import Predicted, Regime, finite
from ntkdyn.results.parts import KrylovFace, Solver


class Recurrence:
    name = "discrete"
    compares = ("discrete",)
    series = (Series("loss_discrete", "--", "kernel recurrence"),)

    def applies(self, ctx: Context) -> bool | str:
        if classification.is_classification_loss(ctx):  # nonlinear: the function-space recurrence
            if ctx.spec.restart is not None or ctx.spec.method is None:
                return "empirical only: no function-space recurrence for this optimizer (cross-entropy)"
            if ctx.scheduled:
                return "cross-entropy: the function-space recurrence takes a constant eta"
            return True
        if ctx.spec.restart is not None and not ctx.full_batch:
            return "restart predictions are full-batch: not compared with mini-batch training"
        if ctx.spec.restart is None and not ctx.spec.has_theory:
            return "empirical only: this optimizer has no kernel-regime recurrence or limiting ODE"
        missing = ctx.setup.no_eigenbasis
        if missing is not None and ctx.spec.restart is not None:
            return "the adaptive-restart prediction " + missing
        if missing is not None and not ctx.full_batch:
            return "the mini-batch recurrence (its mean over batch orders) " + missing
        return True

    def predict(self, ctx: Context, earlier: Mapping[str, FaceValue]) -> FaceValue:
        if classification.is_classification_loss(ctx):
            return classification.discrete(ctx)
        if ctx.setup.krylov is not None:
            return _krylov(ctx)
        if ctx.spec.restart is not None:
            return _restarted(ctx)
        s, spec, hyper, res = ctx.setup, ctx.spec, ctx.hyper, ctx.trained
        modes = theory.discrete_modes(spec, hyper, s.lam, s.coef, ctx.cfg.train.steps)[res.step]
        arrays = {"loss_discrete": theory.modal_loss(modes, s.c)}
        if ctx.full_batch:  # ||grad L||^2 = c e^T K e along the full-batch recurrence
            arrays["grad_norm_sq_discrete"] = theory.modal_grad_norm_sq(modes, s.lam, s.c)
        fields: dict = {"solver": Solver("eigen")}
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


def _krylov(ctx: Context) -> FaceValue:
    """The Krylov path (module docstring): full batch, no restart (``applies``)."""
    s, spec, hyper, res = ctx.setup, ctx.spec, ctx.hyper, ctx.trained
    kry = s.krylov
    assert kry is not None  # the Krylov path
    from ntkdyn.pipeline.faces.ode import _basis
    from ntkdyn.pipeline.setup import ODE_MAX_ITER, ODE_RTOL

    # the recurrence polynomial on the run's shared Krylov basis (m products for every face and
    # optimizer together); the exact matvec recurrence (one product per step) where it does not converge
    pred = largen.discrete_lanczos(
        spec, hyper, kry.K, s.e0, ctx.cfg.train.steps, s.c, record=res.step, rtol=ODE_RTOL,
        max_iter=ODE_MAX_ITER, K_cross=kry.K_cross, e0_test=s.e0_test, c_test=s.c_test,
        null_rtol=kernel_rtol(ctx.cfg, s.X.shape[0]), basis=_basis(kry, s.e0),
    )  # fmt: skip
    if not pred.converged:
        pred = largen.discrete_matvec(
            spec, hyper, kry.K, s.e0, ctx.cfg.train.steps, s.c, record=res.step,
            K_cross=kry.K_cross, e0_test=s.e0_test, c_test=s.c_test,
        )  # fmt: skip
    assert pred.grad_norm_sq is not None  # discrete_matvec always records it
    arrays = {"loss_discrete": pred.loss, "grad_norm_sq_discrete": pred.grad_norm_sq}
    if pred.test_loss is not None:
        arrays["test_loss_discrete"] = pred.test_loss
    fields: dict = {"solver": solver_record(s, "discrete", pred)}
    note = None
    if ctx.scheduled:
        fields["predicted"] = scheduled_stability(ctx)
    elif krylov_singular(ctx):
        note = (
            f"K is numerically singular (Lanczos lambda_min {kry.lambda_min:.3g} <= n eps lambda_max): "
            "the rate and regime need its smallest nonzero eigenvalue, which the Krylov path "
            "(theory.solver krylov) does not resolve; set theory.solver: eigen"
        )
        fields["predicted"] = Predicted(None)
    else:
        lo, hi = kry.lambda_min, kry.lambda_max
        if not kry.extremes.converged:
            note = (
                f"Lanczos stopped at {kry.extremes.iterations} steps before lambda_min converged (Ritz "
                f"value {lo:.4g}, residual {kry.extremes.bottom_residual[0]:.2g}): it is an upper bound "
                "on lambda_min, so the predicted slowest-mode rate is a lower bound on the loss factor "
                "and the horizon a lower bound"
            )
        ends = largen.regime_from_extremes(spec, hyper, lo, hi, ctx.ode)
        predicted = Predicted(
            ends["rate"], stable=ends["stable"], unstable_modes=None,
            max_spectral_radius=ends["max_spectral_radius"],
        )  # fmt: skip
        if ctx.ode is not None and ctx.ode.damping == "vanishing":  # fixed-step tail (NAG-C, OGM)
            tail = theory.vanishing_tail(hyper["eta"], lo, ctx.ode.r)
            predicted = _with(predicted, crossover_step=tail["crossover_step"], tail_rate=tail["tail_rate"])
        fields["predicted"] = predicted
        if ctx.full_batch_constant:
            regime = {k: ends[k] for k in ("regime", "rate", "horizon", "horizon_kind")}
            position = rates.window_position(ctx.fit.window, regime["horizon"])
            fields["regime"] = Regime(**regime, window_position=position)
            fields["scope"] = rates.scope(ctx.fit, regime)
    return FaceValue(arrays=arrays, fields=fields, note=note)


def krylov_singular(ctx: Context) -> bool:
    """On the Krylov path: is K numerically singular, lambda_min <= n eps lambda_max (the eigen
    path's null-mode rule, ``theory.null_modes`` with ``kernel_rtol``)? Lanczos' lambda_min is an
    upper bound on the true one, so False means only that no null mode was seen by it."""
    kry = ctx.setup.krylov
    assert kry is not None  # the Krylov path
    return kry.lambda_min <= kernel_rtol(ctx.cfg, ctx.setup.X.shape[0]) * abs(kry.lambda_max)


def solver_record(s, face: str, pred: largen.LargeNPrediction, before: Solver | None = None) -> Solver:
    """``results.Solver`` of the Krylov path with ``face``'s ``KrylovFace`` added (to ``before``'s)."""
    kry = s.krylov
    ext = kry.extremes
    faces = dict(before.faces) if before is not None else {}
    faces[face] = KrylovFace(
        pred.method, int(pred.iterations), finite(pred.error_estimate) if pred.error_estimate is not None
        else None, pred.tolerance, bool(pred.converged),
    )  # fmt: skip
    return Solver(
        "krylov",
        storage=kry.storage,
        storage_error_bound=float(kry.storage_error_bound),
        extremes_iterations=int(ext.iterations),
        extremes_converged=bool(ext.converged),
        lambda_min_residual=float(ext.bottom_residual[0]),
        lambda_max_residual=float(ext.top_residual[0]),
        faces=faces,
    )


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
    (``stable``: at most 1 + 1e-12), and the range of eta_k. On the Krylov path ``setup.lam`` holds
    lambda_min and lambda_max only: the maximum over them, exact where rho(A_k(lambda)) is
    quasi-convex in lambda (``largen.regime_from_extremes``)."""
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
