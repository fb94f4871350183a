"""Assembly: one optimizer of one run, trained, becomes its typed ``results.OptimizerResult``;
a prepared run and its optimizers' results become a ``results.RunResult`` (``run_result``).

From training's typed trajectory (``train.TrainResult``): the kernel drift at the recorded
snapshots, the verdict on training's loss (``rates.fit_rates``, on L - L* above the least-squares
floor), then every face of ``faces.FACES`` in order (each returns a typed ``FaceValue``), then each
compared prediction against training (max relative gap, log10 gap over the window, the verdict on
the prediction) and the held-out comparison. No dict is edited along the way: the result is built
once from these values.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ntkdyn import config as config_mod
from ntkdyn import largen, models, ntk, optimizers, rates, theory
from ntkdyn.config import Config, OptimizerConfig, RelativeStep
from ntkdyn.pipeline import faces as faces_mod
from ntkdyn.pipeline import sharpness_path
from ntkdyn.pipeline.faces import Context, Face, FaceValue
from ntkdyn.pipeline.setup import Setup, jax_dtype, kernel_rtol
from ntkdyn.results import (
    Deviation,
    Fitted,
    HeldOut,
    LogGap,
    LossFloor,
    OptimizerResult,
    Predicted,
    RunResult,
    Spectrum,
    finite,
)
from ntkdyn.train import TrainResult


@dataclasses.dataclass(frozen=True)
class Floors:
    """Loss levels of one run: L0, the float floor, the least-squares floor L* (0 unless above the
    float floor), ``theory.loss_floor_star``'s info and the rate window; ``separable``: for a
    cross-entropy loss, whether K has no null mode (``rates.cross_entropy_verdict``), None for the
    squared losses."""

    L0: float
    floor: float
    L_star: float
    info: Mapping[str, Any]
    window: tuple
    separable: bool | None = None


def evaluate(
    cfg: Config, setup: Setup, oc: OptimizerConfig, res: TrainResult, faces: Iterable[Face] | None = None
) -> tuple[OptimizerResult, dict[str, float]]:
    """The typed result of optimizer ``oc`` trained as ``res`` (module docstring), and the seconds
    spent per stage (train_*_s, kernel_drift_s, face_<name>_s). ``faces``: default ``faces.FACES``;
    a face that reads a trained model (``faces.Trains``) finds it in ``res.expansions``
    (``training.train_runs(expansions=faces.expansions(...))``)."""
    spec = optimizers.get(oc.name)
    hyper = res.hyper  # resolved once, before training (``training.optimizer_hyper``)
    if not isinstance(hyper, optimizers.Resolved):
        raise ValueError(
            "evaluate: res must come from training.train_runs (its hyper: the resolved hyperparameters)"
        )
    times = {"train_compile_s": res.compile_s, "train_run_s": res.run_s}
    for name, trained in res.expansions.items():  # the faces' models, trained beside the network
        times[f"train_{name}_compile_s"] = trained.compile_s
        times[f"train_{name}_run_s"] = trained.run_s
    arrays = training_arrays(res)
    t = time.perf_counter()
    drift_arrays = kernel_drift(cfg, setup, res)
    times["kernel_drift_s"] = time.perf_counter() - t
    t = time.perf_counter()
    sharp = sharpness_path.record(cfg, setup, spec, hyper, res)  # None unless train.sharpness_every
    if sharp is not None:
        times["sharpness_s"] = time.perf_counter() - t
    fit, floors, null = training_fit(cfg, setup, res)
    ode = spec.ode(hyper) if spec.ode is not None and _full_batch_constant(cfg, hyper) else None
    ctx = Context(cfg, setup, spec, hyper, res, fit, null, ode)
    values: dict[str, FaceValue] = {}
    for face in faces_mod.FACES if faces is None else faces:
        t = time.perf_counter()
        applies = face.applies(ctx)
        if applies is True:
            values[face.name] = face.predict(ctx, values)
        elif isinstance(applies, str):  # the reason it does not apply is the run's note
            values[face.name] = FaceValue(note=applies)
        times[f"face_{face.name}_s"] = time.perf_counter() - t
    arrays.update(drift_arrays)
    if sharp is not None:
        arrays.update(sharp[1])
    arrays.update(faces_mod.merged_arrays(values))
    compared = [p for face in (faces_mod.FACES if faces is None else faces) for p in face.compares]
    deviation, log_gaps, verdicts, diverged = deviations(cfg, res, floors, arrays, compared)
    notes = [v.note for v in values.values() if v.note is not None]
    drift = drift_arrays["kernel_drift"]
    assert oc.label is not None  # validate fills it
    result = OptimizerResult(
        label=oc.label,
        optimizer=oc.name,
        eta=hyper.step.describe(),
        status="diverged" if res.diverged_at is not None else "ok",
        beta=hyper.get("beta"),
        r=hyper.get("r"),
        verdict=fit.verdict,
        diverged_at=res.diverged_at,
        fitted=fitted_of(fit),
        predicted=Predicted(None),
        deviation=deviation,
        deviation_log10=log_gaps,
        theory_verdicts=verdicts,
        predictions_diverged=diverged,
        kernel_drift=finite(drift[-1]) if drift.size else None,
        loss_floor=LossFloor(**floors.info, subtracted=floors.L_star > 0),
        scope=rates.scope(fit, None),
        note=notes[-1] if notes else None,
        test=held_out(cfg, setup, res, arrays, compared) if res.test_loss is not None else None,
        trajectory=arrays,
        sharpness=None if sharp is None else sharp[0],
    )
    return dataclasses.replace(result, **faces_mod.merged_fields(values)), times


def _full_batch_constant(cfg: Config, hyper: optimizers.Resolved) -> bool:
    return cfg.train.batch_size is None and not hyper.step.scheduled


def training_arrays(res: TrainResult) -> dict[str, np.ndarray]:
    """Training's own per-step arrays: step, loss, errors at error_steps, grad_norm_sq, the held-out
    loss and the sampled orders' losses where recorded."""
    arrays = {"step": res.step, "loss": res.loss, "error_steps": res.error_at, "errors": res.errors}
    if res.test_loss is not None:
        arrays["test_loss"] = res.test_loss
    arrays["grad_norm_sq"] = res.grad_norm_sq
    if res.loss_runs is not None:
        arrays["loss_runs"] = res.loss_runs
    return arrays


def kernel_drift(cfg: Config, setup: Setup, res: TrainResult) -> dict[str, np.ndarray]:
    """The empirical NTK at each recorded snapshot reached before a divergence, and its drift
    ||H_k - H_0||_F / ||H_0||_F (arrays kernel_steps, kernels, kernel_drift). k > 1 outputs: the drift
    of the full (n k x n k) output Gram; ``kernels`` holds its trace over the outputs (n x n). On the
    Krylov path (large n) the drift only, by tiles (``largen.drift_tiled``: no n x n Gram per snapshot;
    the snapshot at step 0 is theta_0 itself, drift 0)."""
    X = jnp.asarray(setup.X, jax_dtype(cfg))
    reached = [i for i, k in enumerate(res.snapshot_at) if res.diverged_at is None or k <= res.diverged_at]
    snapshot = lambda i: jax.tree.map(lambda s: s[i], res.snapshots)  # noqa: E731
    if setup.krylov is not None:  # large n: the drift by tiles, no n x n Gram per snapshot kept
        tile = lambda i: largen.empirical_tile(setup.model, snapshot(i), setup.consts, X)  # noqa: E731
        # the snapshot at step 0 is theta_0 itself: H_0 = H0, drift 0
        drift = [0.0 if res.snapshot_at[i] == 0 else largen.drift_tiled(tile(i), setup.H0) for i in reached]
        return {"kernel_steps": res.snapshot_at[reached], "kernel_drift": np.asarray(drift, np.float64)}
    grams = [ntk.gram(setup.model, snapshot(i), setup.consts, X) for i in reached]
    drift = [ntk.kernel_drift(H, setup.H0) for H in grams]
    if setup.outputs > 1:  # drift of the full output Gram; stored: its shared (n x n) trace, k^2 x smaller
        grams = [ntk.trace_outputs(H, setup.outputs) for H in grams]
    n = setup.X.shape[0]
    return {
        "kernel_steps": res.snapshot_at[reached],
        "kernels": np.asarray(grams).reshape(len(grams), n, n),
        "kernel_drift": np.asarray(drift),
    }


def training_fit(cfg: Config, setup: Setup, res: TrainResult) -> tuple[rates.RateFit, Floors, np.ndarray]:
    """The verdict on training's loss (``rates.fit_rates``; on L - L* when the least-squares floor L*
    is above the float floor), the run's ``Floors`` and the null modes of K."""
    L0 = float(res.loss[0])
    floor = rates.loss_floor(cfg.dtype, L0)
    window = tuple(cfg.rates.window)
    # least-squares floor L* (part of e0 in K's numerical null space; rtol = n eps of K's dtype): when it
    # is above the float floor, rates are fitted on L - L* (rates.fit_rates, docs/verdicts.md)
    floor_info = theory.loss_floor_star(setup.lam, setup.coef, setup.c, kernel_rtol(cfg, setup.lam.size))
    L_star = floor_info["floor"] if floor_info["floor"] > floor else 0.0
    squared = models.is_squared(setup.model.loss)
    if not squared:  # cross-entropy: no least-squares floor
        L_star = 0.0
    null = theory.null_modes(setup.lam, floor_info["rtol"])
    fit_floor = rates.difference_floor(floor, L_star, float(np.finfo(cfg.dtype).eps))
    fit = rates.fit_rates(
        res.step, res.loss, window, fit_floor, res.diverged_at is not None, cfg.rates.stall_factor,
        floor_star=L_star,
    )  # fmt: skip
    separable = None if squared else not null.any()  # cross-entropy: separable when K has no null mode
    if separable is not None:
        fit = rates.cross_entropy_verdict(fit, separable=separable)
    return fit, Floors(L0, floor, L_star, floor_info, window, separable), null


def fitted_of(fit: rates.RateFit) -> Fitted:
    """``results.Fitted`` of a rate fit (NaN values None)."""
    doc = {
        k: v if isinstance(v, (str, int)) else finite(v) for k, v in fit.as_dict().items() if k != "verdict"
    }
    return Fitted.from_json(doc)


def diverged_step(step: np.ndarray, pred: np.ndarray) -> int | None:
    """The first recorded step at which a predicted loss is no longer a finite number (it overflowed:
    an unstable recurrence grows like rho^(2k)), or None."""
    bad = ~np.isfinite(np.asarray(pred, np.float64))
    return int(step[int(np.argmax(bad))]) if bad.any() else None


def deviations(
    cfg: Config, res: TrainResult, floors: Floors, arrays: Mapping[str, np.ndarray], compared: list[str]
) -> tuple[Deviation, dict[str, LogGap], dict[str, str], dict[str, int]]:
    """Each compared prediction ``loss_<name>`` against training: max relative gap over the steps
    above the float floor, log10 gap over the window, and the verdict on the prediction itself
    (fitted above its own float floor); and the predicted squared gradient norm against training's.
    A prediction that overflows (``diverged_step``) has no deviation: it is listed with its step in
    the fourth value (``OptimizerResult.predictions_diverged``), and its gaps are taken over the
    steps before it."""
    L0, floor, L_star, window = floors.L0, floors.floor, floors.L_star, floors.window
    ok = np.isfinite(res.loss)
    values: dict[str, float | None] = {"discrete": None, "ode": None, "ode_hr": None}
    gaps: dict[str, LogGap] = {}
    verdicts: dict[str, str] = {}
    diverged: dict[str, int] = {}
    for name in compared:
        pred = arrays.get(f"loss_{name}")
        if pred is None:
            continue
        pred = np.asarray(pred, np.float64)
        live = ok & np.isfinite(pred)
        at = diverged_step(res.step, pred)
        if at is not None:
            diverged[name] = at
        mask = live & (pred > floor) & (res.loss > floor)
        values[name] = None if at is not None else finite(rates.max_relative_gap(pred, res.loss, mask))
        in_window = rates.window_mask(res.step, res.loss, window, floor) & live
        with np.errstate(invalid="ignore", over="ignore"):
            gap = rates.log_gap(np.where(live, pred, np.nan), res.loss, floor, in_window)
        gaps[name] = LogGap.from_json(gap.as_dict())
        pred_floor = rates.difference_floor(
            rates.loss_floor("float64", L0), L_star, float(np.finfo("float64").eps), cfg.train.steps
        )
        theory_fit = rates.fit_rates(
            res.step, pred, window, pred_floor, stall_factor=cfg.rates.stall_factor, floor_star=L_star
        )
        if floors.separable is not None:  # cross-entropy: the same rule as training's verdict
            theory_fit = rates.cross_entropy_verdict(theory_fit, separable=floors.separable)
        verdicts[name] = theory_fit.verdict
    if "grad_norm_sq_discrete" in arrays:  # the predicted squared gradient norm against training's
        g_pred, g_train = arrays["grad_norm_sq_discrete"], np.asarray(res.grad_norm_sq, np.float64)
        g_floor = rates.loss_floor(cfg.dtype, float(g_train[0])) if np.isfinite(g_train[0]) else 0.0
        g_mask = np.isfinite(g_train) & (g_pred > g_floor) & (g_train > g_floor)
        g_mask &= np.isfinite(g_pred)
        values["grad_norm_sq"] = finite(rates.max_relative_gap(g_pred, g_train, g_mask))
    return Deviation(values), gaps, verdicts, diverged


def held_out(
    cfg: Config, setup: Setup, res: TrainResult, arrays: Mapping[str, np.ndarray], compared: list[str]
) -> HeldOut:
    """metrics.json's "test": n, loss_scale, training's held-out loss at step 0 and at the last
    recorded step before any divergence (``final_step``), each prediction's value there
    (``predicted_final``) and max_k |L_train - L_pred| / L_pred over the steps above the float floor
    (``deviation``, as for the training loss), for every compared name with a ``test_loss_<name>``."""
    L = np.asarray(res.test_loss, np.float64)
    ok = np.isfinite(L)
    last = int(np.flatnonzero(ok)[-1]) if ok.any() else None
    floor = rates.loss_floor(cfg.dtype, float(L[0])) if ok[0] else 0.0
    predicted_final, deviation = {}, {}
    for name in compared:
        pred = arrays.get(f"test_loss_{name}")
        if pred is None:
            continue
        mask = ok & (pred > floor) & (L > floor)
        deviation[name] = finite(rates.max_relative_gap(pred, L, mask))
        predicted_final[name] = None if last is None else finite(pred[last])
    note = None
    if cfg.train.batch_size is not None:
        note = (
            "mini-batch: test_loss_discrete is the predicted mean held-out loss (exact second moment for "
            "replacement, the mean of theory.mc_runs sampled orders for shuffle); loss is the mean of the "
            "sampled orders"
        )
    assert setup.X_test is not None and setup.c_test is not None  # a held-out loss was recorded
    return HeldOut(
        n=int(setup.X_test.shape[0]),
        loss_scale=float(setup.c_test),
        loss_initial=finite(L[0]),
        loss_final=None if last is None else finite(L[last]),
        final_step=None if last is None else int(res.step[last]),
        predicted_final=predicted_final,
        deviation=deviation,
        note=note,
    )


def spectrum_of(cfg: Config, setup: Setup) -> Spectrum:
    """The spectrum of K = c H the predictions use (``setup.lam`` ascending; kappa None if lam_min <= 0)."""
    return Spectrum.of(setup.lam, setup.c, cfg.theory.kernel)


def run_result(
    cfg: Config,
    setup: Setup,
    opts: Mapping[str, OptimizerResult],
    *,
    env: Mapping[str, Any] | None = None,
    run_id: str = "",
    config_doc: Mapping[str, Any] | None = None,
) -> RunResult:
    """A run's ``RunResult`` from its prepared ``setup`` (data.npz: X, y, e0; kernels.npz:
    H0, eigvals, kernel_used, loss_scale and Hinf where defined; with a held-out set also X_test,
    y_test, e0_test and H_test, test_loss_scale) and its optimizers' results.

    Args:
        cfg, setup: the run's config and ``prepare`` result.
        opts: label -> ``OptimizerResult``, in config order (may be partial while a run proceeds).
        env: env.json content (empty: no env.json is written).
        run_id: the run's name; config_doc: config.yaml's mapping (default ``config.to_dict(cfg)``).
    """
    kernels = {
        "H0": setup.H0,
        "eigvals": setup.lam,
        "kernel_used": np.asarray(cfg.theory.kernel),
        "loss_scale": np.asarray(setup.c),
    }
    if setup.Hinf is not None:
        kernels["Hinf"] = setup.Hinf
    data = {"X": setup.X, "y": setup.y, "e0": setup.e0}
    if setup.X_test is not None:
        # with_held_out sets these together
        assert setup.y_test is not None and setup.e0_test is not None and setup.H_test is not None
        data.update(X_test=setup.X_test, y_test=setup.y_test, e0_test=setup.e0_test)
        kernels.update(H_test=setup.H_test, test_loss_scale=np.asarray(setup.c_test))
    return RunResult(
        config=dict(config_doc) if config_doc is not None else config_mod.to_dict(cfg),
        spectrum=spectrum_of(cfg, setup),
        optimizers=dict(opts),
        data=data,
        kernels=kernels,
        env=dict(env or {}),
        run_id=run_id,
    )


def failed_result(oc: OptimizerConfig, exc: BaseException) -> OptimizerResult:
    """The metrics.json entry of an optimizer whose training or evaluation raised ``exc``."""
    label = oc.label or oc.name
    eta = f"{oc.eta.per_lambda_max:g}/lambda_max" if isinstance(oc.eta, RelativeStep) else oc.eta
    return OptimizerResult(label, oc.name, eta, "failed", error=f"{type(exc).__name__}: {exc}")
