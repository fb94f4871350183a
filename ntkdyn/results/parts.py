"""The result parts that faces and options add to an optimizer's result (``OptimizerResult`` holds
them): the log gap, the regime and loss floor, the mini-batch checks, the linearised and quadratic
models, the central flow, accuracy, held-out losses, sharpness along training and the Krylov solver.
Each a frozen ``Record`` (its metrics.json mapping is its fields by name)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from ntkdyn.results.record import Record, _field


@dataclasses.dataclass(frozen=True)
class LogGap(Record):
    """max / mean |log10 L_pred - log10 L_train| (decades) over the ``steps`` of the fit window where
    both are above the float floor (``rates.log_gap``); None where no step qualifies."""

    max: float | None
    mean: float | None
    steps: int


@dataclasses.dataclass(frozen=True)
class Regime(Record):
    """The regime a fixed-step, full-batch run ends in (``theory.asymptotic_regime``): ``regime``
    (linear | growing | stalled), its loss factor ``rate`` per step, the ``horizon`` step of kind
    ``horizon_kind`` (crossover | slowest-mode time) and where the fit window lies relative to it
    (``window_position``: before | straddles | after)."""

    regime: str | None
    rate: float | None
    horizon: float | None
    horizon_kind: str | None
    window_position: str | None = None


@dataclasses.dataclass(frozen=True)
class LossFloor(Record):
    """The least-squares floor L* = (c/2) sum over K's null modes of (V^T e0)^2 (``floor``; modes with
    eigenvalue below ``rtol`` lambda_max, ``null_modes`` of them) and whether the rates were fitted
    on L - L* (``subtracted``: L* above the float floor)."""

    floor: float
    null_modes: int
    rtol: float
    subtracted: bool


@dataclasses.dataclass(frozen=True)
class BandCheck(Record):
    """Is a trained mean loss inside the predicted mean's 95 % band: the fraction of recorded steps
    inside (``inside_band``), whether all are, and the first step outside."""

    inside_band: float | None
    all_inside: bool
    first_outside_step: int | None


@dataclasses.dataclass(frozen=True)
class MiniBatchBound(Record):
    """Ma, Bassily, Belkin's (2018, arXiv 1712.06559) mini-batch constants of K
    (``stochastic.mbb_constants``): beta = n max_i K_ii, lam_1, lam_n; their step for a general convex
    beta-smooth loss at this batch size, b / (beta + (b - 1) lam_1), and its knee 1 + beta / lam_1
    (``smooth_*``); the optimum of their bound E[H_b^2] <= (beta/b) H + (1 - 1/b) H^2 for this quadratic
    loss, b / (beta + (b - 1) lam_n) up to m* = beta / (lam_1 - lam_n) + 1 and
    2b / (beta + (b - 1)(lam_1 + lam_n)) above (``quadratic_*``); and, beside them, the exact best
    step of the mini-batch recurrence at this b (``best_step_size``: the eta minimising the rate of
    E[L_k], ``stochastic.best_step_size``; sampling with replacement and constant methods only)."""

    beta: float
    lam_1: float
    lam_n: float
    smooth_knee_batch_size: float | None = _field(omit_none=True)
    smooth_step_size: float | None = _field(omit_none=True)
    quadratic_critical_batch_size: float | None = _field(omit_none=True)
    quadratic_step_size: float | None = _field(omit_none=True)
    best_step_size: float | None = _field(omit_none=True)


@dataclasses.dataclass(frozen=True)
class Stochastic(Record):
    """The mini-batch face: batch size b, ``sampling``, ``sampling_runs`` trained orders,
    ``mc_runs`` sampled orders of the recurrence, how the predicted mean was computed (``mean``:
    second_moment | monte_carlo), whether the trained mean lies in its band (``BandCheck`` fields),
    the mini-batch constants (``mbb``), the rate of E[L_k] (``linear_rate``, replacement and
    constant hyperparameters only) and the trained linearisation's band check (``linearized``)."""

    batch_size: int
    sampling: str
    sampling_runs: int
    mc_runs: int
    mean: str
    inside_band: float | None
    all_inside: bool
    first_outside_step: int | None
    mbb: MiniBatchBound
    linear_rate: float | None = _field(omit_none=True)
    linearized: BandCheck | None = _field(omit_none=True)

    _NESTED = {"mbb": MiniBatchBound, "linearized": BandCheck}


@dataclasses.dataclass(frozen=True)
class Linearized(Record):
    """The network's linearisation at theta_0 trained alike: the step it diverged at (or None) and
    the number of batch orders averaged (``runs``)."""

    diverged_at: int | None
    runs: int


@dataclasses.dataclass(frozen=True)
class Quadratic(Record):
    """The network's second-order Taylor model at theta_0 (``ntkdyn.quadratic``) trained alike: the
    step it diverged at (or None) and the number of batch orders averaged (``runs``)."""

    diverged_at: int | None
    runs: int


@dataclasses.dataclass(frozen=True)
class CentralFlowFace(Record):
    """The GD central flow against the network (theory.central_flow; ``pipeline.faces.central_flow``),
    averaged over GD's self-stabilisation cycles (``window_rule`` "gd_sharpness_cycles": from one
    upward crossing of ``threshold`` = 2/eta by the network's sharpness trace to the next;
    ``central_flow.cycle_agreement``). ``verdict`` over the whole run: "agrees" (the loss within
    ``loss_tolerance`` over every cycle, the tail and, pointwise, before the edge; GD's mean sharpness
    within ``sharpness_tolerance`` of 2/eta over every cycle and the tail), "misses", or None with the
    reason in ``unavailable`` (no sharpness trace, an even record_every, divergence, GD never at the
    edge). ``edge_step``: GD's first sharpness sample at or above 2/eta;
    ``flow_edge_step``: the flow's first step with Sigma != 0; ``flow_sharpness_error``: max
    |S_flow eta/2 - 1| after that step; ``cycles``: (start, end) steps; ``loss_error`` /
    ``sharpness_error``: per cycle (relative); ``tail_*``: the incomplete cycle after the last crossing;
    ``before_edge_loss_error``: max pointwise relative loss error before GD's edge."""

    verdict: str | None
    unavailable: str | None
    threshold: float
    window_rule: str
    loss_tolerance: float
    sharpness_tolerance: float
    flow_edge_step: int | None = None
    flow_sharpness_error: float | None = None
    edge_step: int | None = None
    cycles: tuple[tuple[int, int], ...] = ()
    loss_error: tuple[float, ...] = ()
    sharpness_error: tuple[float, ...] = ()
    tail_loss_error: float | None = None
    tail_sharpness_error: float | None = None
    before_edge_loss_error: float | None = None

    _TUPLES: ClassVar[tuple[str, ...]] = ("loss_error", "sharpness_error")

    @classmethod
    def from_json(cls, doc: Mapping):
        out = super().from_json(doc)
        return dataclasses.replace(out, cycles=tuple(tuple(int(k) for k in c) for c in out.cycles))


@dataclasses.dataclass(frozen=True)
class Accuracy(Record):
    """Classification accuracy beside the loss (one-hot targets: argmax; one output with ±1 targets:
    sign; ``pipeline.faces.classification``): training's at step 0 (``initial``) and at
    ``final_step`` (the last of train.error_at reached before any divergence), and each prediction's
    there (``predicted_final``: discrete, ode, ode_hr, linearized, ...). With a held-out set the
    same on its points (``held_out_initial``, ``held_out_final`` at ``final_step``,
    ``held_out_predicted_final``: each prediction mapped to the held-out points). The per-step values
    are the arrays ``accuracy``, ``accuracy_<name>``, ``test_accuracy`` and ``test_accuracy_<name>``
    of trajectories.npz over ``accuracy_steps``."""

    initial: float | None
    final: float | None
    final_step: int | None
    predicted_final: Mapping[str, float | None] = dataclasses.field(default_factory=dict)
    held_out_initial: float | None = _field(omit_none=True)
    held_out_final: float | None = _field(omit_none=True)
    held_out_predicted_final: Mapping[str, float | None] | None = _field(omit_none=True)


@dataclasses.dataclass(frozen=True)
class HeldOut(Record):
    """The held-out set of a run (data.test / ``test_data=``): its size ``n`` and ``loss_scale`` c_t
    (L_test = (c_t/2)||f(X_test) - y_test||^2, the training loss's convention), training's held-out
    loss at step 0 and at ``final_step`` (the last recorded step before any divergence), each
    prediction's value there (``predicted_final``: discrete = K_x K^+ times the kernel recurrence's
    change on the training points, ode, linearized) and its max relative gap to training's
    (``deviation``, as ``Deviation``)."""

    n: int
    loss_scale: float
    loss_initial: float | None
    loss_final: float | None
    final_step: int | None
    predicted_final: Mapping[str, float | None] = dataclasses.field(default_factory=dict)
    deviation: Mapping[str, float | None] = dataclasses.field(default_factory=dict)
    note: str | None = _field(omit_none=True)


@dataclasses.dataclass(frozen=True)
class Sharpness(Record):
    """The sharpness along training (train.sharpness_every = ``every``), recorded at ``steps`` (0,
    every, 2 every, ... and train.steps) from the network's parameter snapshots, in float64:

    * ``hessian_lambda_max[j]``: lambda_max(Hess_theta L) of the FULL-BATCH loss
      L = (c/2)||f(theta) - y||^2 (mini-batch runs too; their first batch order's parameters);
    * ``ntk_lambda_max[j]``: lambda_max(K) of the dynamics kernel K = c H, H = J J^T the empirical NTK on
      the training points (the convention of every face; ``Spectrum.lambda_max`` is its value at
      theta_0 for the H0 kernel), so that eta lambda_max(K) is compared with the limits below;
    * ``stability_limit[j]``: h* / eta_k, the largest sharpness at which one mode of the optimizer's
      linear recurrence does not grow at step k (h* the largest stable eta lambda:
      ``optimizers.largest_stable_step``, GD 2, heavy ball 2 (1 + beta), Nesterov
      2 (1 + beta) / (1 + 2 beta); eta_k the step size of the update after step k, so a schedule
      gives a limit per step); None when the method has no recurrence;
    * ``converged[j]``: both Lanczos runs (``ntkdyn.sharpness``, tol 1e-10) converged.

    Steps after a divergence have None values. Both values are Lanczos estimates on
    Hessian-vector / Gram-vector products (``ntkdyn.sharpness.sharpness``)."""

    every: int
    steps: tuple[int, ...]
    hessian_lambda_max: tuple[float | None, ...]
    ntk_lambda_max: tuple[float | None, ...]
    stability_limit: tuple[float | None, ...] | None
    converged: tuple[bool, ...]

    _TUPLES = ("steps", "hessian_lambda_max", "ntk_lambda_max", "stability_limit", "converged")

    def summary(self, which: str = "hessian") -> dict[str, float | None]:
        """initial, final (last finite) and max of ``which`` ("hessian" or "ntk"), with the stability
        limit at the first and last steps and max over steps of value / limit (``max_ratio``)."""
        values = np.array(
            [np.nan if v is None else v for v in getattr(self, f"{which}_lambda_max")], np.float64
        )
        ok = np.isfinite(values)
        lim = (
            None
            if self.stability_limit is None
            else [np.nan if v is None else v for v in self.stability_limit]
        )
        ratio = None if lim is None else values / np.asarray(lim, np.float64)
        last = int(np.flatnonzero(ok)[-1]) if ok.any() else None
        return {
            "initial": float(values[0]) if ok[0] else None,
            "final": None if last is None else float(values[last]),
            "max": float(np.max(values[ok])) if ok.any() else None,
            "limit_initial": None if lim is None or not np.isfinite(lim[0]) else float(lim[0]),
            "limit_final": None if lim is None or last is None else float(lim[last]),
            "max_ratio": None if ratio is None or not ok.any() else float(np.nanmax(ratio[ok])),
        }


@dataclasses.dataclass(frozen=True)
class KrylovFace(Record):
    """How one face's Krylov-path prediction was made (``largen.LargeNPrediction``): ``method``
    "matvec" (the exact recurrence by products with K; no truncation, ``error_estimate`` None) or
    "lanczos" (a matrix function in the Krylov space of (K, e0)); ``iterations``: products with K
    (matvec: steps; lanczos: the Krylov dimension); ``error_estimate``: lanczos: max over the
    recorded times of ||e_m - e_(m+d)|| / ||e_(m+d)||, relative error of e (the loss's about twice
    it); ``tolerance``: the rtol it was held to; ``converged``: it held at every time."""

    method: str
    iterations: int
    error_estimate: float | None = _field(omit_none=True)
    tolerance: float | None = _field(omit_none=True)
    converged: bool = True


@dataclasses.dataclass(frozen=True)
class Solver(Record):
    """Which solver made the predictions (theory.solver): ``solver`` "eigen" (K's
    eigendecomposition) or "krylov" (``ntkdyn.largen``: products with K, no eigenvectors). Krylov
    only: ``storage`` the dtype K was stored in and ``storage_error_bound`` a bound on ||E||_2 of
    that storage (float32: 2^-24 ||K||_F; 0 for float64); ``extremes_iterations`` the Lanczos
    steps for lambda_min / lambda_max, ``extremes_converged``, and their residuals ||K y - theta
    y|| (an eigenvalue lies within it; an unconverged lambda_min is an upper bound);
    ``faces``: per face name its ``KrylovFace``."""

    solver: str
    storage: str | None = _field(omit_none=True)
    storage_error_bound: float | None = _field(omit_none=True)
    extremes_iterations: int | None = _field(omit_none=True)
    extremes_converged: bool | None = _field(omit_none=True)
    lambda_min_residual: float | None = _field(omit_none=True)
    lambda_max_residual: float | None = _field(omit_none=True)
    faces: Mapping[str, KrylovFace] = dataclasses.field(default_factory=dict)

    _NESTED: ClassVar[Mapping[str, type]] = {"faces": KrylovFace}
    _MAPPED: ClassVar[tuple[str, ...]] = ("faces",)
