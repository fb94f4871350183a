"""Typed results of one run, each a frozen dataclass with ``to_json`` / ``from_json`` (its part of
metrics.json; the schema is in ``ntkdyn.results``' docstring). Every key of metrics.json is a field:
nothing is kept in an untyped ``extra`` mapping. Keys that a reader does not know (written by a
newer version) are ignored when read.

Small parts: ``Spectrum``, ``Fitted``, ``Predicted``, ``Deviation``, ``LogGap``, ``Regime``,
``LossFloor``, ``BandCheck``, ``MiniBatchBound``, ``Stochastic``, ``Linearized``, ``HeldOut``,
``Sharpness``;
assembled: ``OptimizerResult`` (one optimizer of one run) and ``RunResult`` (one run).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ntkdyn.results.tables import describe_config, long_table

_OMIT = {"omit_none": True}  # field metadata: the key is written only when the value is not None


def _field(default=None, omit_none: bool = False, **kw):
    return dataclasses.field(default=default, metadata=_OMIT if omit_none else {}, **kw)


def _plain_json(value):
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, tuple):
        return [_plain_json(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain_json(v) for k, v in value.items()}
    return value


class Record:
    """A frozen dataclass whose metrics.json mapping is its fields by name: nested records through
    their own ``to_json``/``from_json`` (``_NESTED``: field -> record type, or a mapping of them when
    the field's name is in ``_MAPPED``), tuples as lists; fields marked ``omit_none`` are written
    only when they have a value."""

    _NESTED: ClassVar[Mapping[str, type]] = {}
    _MAPPED: ClassVar[tuple[str, ...]] = ()
    _TUPLES: ClassVar[tuple[str, ...]] = ()

    def to_json(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.metadata.get("omit_none"):
                continue
            out[f.name] = _plain_json(value)
        return out

    @classmethod
    def from_json(cls, doc: Mapping):
        kwargs = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name not in doc:
                continue
            value = doc[f.name]
            nested = cls._NESTED.get(f.name)
            if nested is not None and value is not None:
                if f.name in cls._MAPPED:
                    value = {k: nested.from_json(v) for k, v in value.items()}  # type: ignore[attr-defined]
                else:
                    value = nested.from_json(value)  # type: ignore[attr-defined]
            elif f.name in cls._TUPLES and value is not None:
                value = tuple(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            kwargs[f.name] = value
        return cls(**kwargs)


@dataclasses.dataclass(frozen=True)
class Spectrum(Record):
    """Eigenvalues of the dynamics kernel K = c H the predictions use (``kernel``: H0 or Hinf);
    ``n`` and ``L0`` where a study or the control view records them."""

    lambda_min: float
    lambda_max: float
    kappa: float | None
    loss_scale: float
    kernel: str | None = _field(omit_none=True)
    n: int | None = _field(omit_none=True)  # number of eigenvalues (studies, control view)
    L0: float | None = _field(omit_none=True)  # initial loss (studies)

    @classmethod
    def of(
        cls, lam, loss_scale: float, kernel: str | None = None, n: int | None = None, L0: float | None = None
    ) -> Spectrum:
        """From the ascending eigenvalues ``lam`` of K = c H (``loss_scale`` c): kappa =
        lambda_max / lambda_min, None unless lambda_min > 0. The one place a spectrum summary is made."""
        lam = np.asarray(lam, np.float64)
        kappa = float(lam[-1] / lam[0]) if lam[0] > 0 else None
        return cls(float(lam[0]), float(lam[-1]), kappa, float(loss_scale), kernel, n, L0)


@dataclasses.dataclass(frozen=True)
class Fitted(Record):
    """Least-squares fits of the training loss over the rate window (``rates.fit_rates``):
    log L_k = a + k log q (``linear_rate`` q per iteration) and log L_k = a + p log k
    (``power_exponent`` p); the verdict's ``margin``, the envelope's local rate and exponent at the
    window's end, what was fitted (``fitted_on``: "L" or "L - L*", ``floor_star`` L*), the change of
    log10 L over the window, the trend b of the local rate ~ k^b (``rate_trend`` +- ``rate_trend_se``
    over ``subwindows``) and the verdict's ``reason``. NaN values are None."""

    linear_rate: float | None
    r2_linear: float | None
    power_exponent: float | None
    r2_power: float | None
    window: tuple[float, float] | None
    margin: float | None = None
    local_linear_rate: float | None = None
    local_power_exponent: float | None = None
    fitted_on: str | None = None
    floor_star: float | None = None
    change_log10: float | None = None
    rate_trend: float | None = None
    rate_trend_se: float | None = None
    subwindows: int | None = None
    reason: str | None = None

    _TUPLES = ("window",)


@dataclasses.dataclass(frozen=True)
class Predicted(Record):
    """Kernel-regime predictions: ``linear_rate`` = max over modes of rho(A(lambda))^2 (None for an
    optimizer without a recurrence; for mini-batch runs the rate of E[L_k], sampling with
    replacement only, and ``full_batch_linear_rate`` the full-batch one), ``stable`` (rho <= 1 on
    every mode), ``unstable_modes``, ``max_spectral_radius`` (over the steps of a scheduled eta, whose
    ``eta_range`` is [min, max]), for r/t damping the ``crossover_step`` and ``tail_rate`` of the
    fixed-step linear tail, and for adaptive restart its ``restart_rule``, ``restarts`` and
    ``first_restarts`` (steps) on the predicted trajectory."""

    linear_rate: float | None
    stable: bool | None = _field(omit_none=True)
    unstable_modes: int | None = _field(omit_none=True)
    max_spectral_radius: float | None = _field(omit_none=True)
    crossover_step: float | None = _field(omit_none=True)
    tail_rate: float | None = _field(omit_none=True)
    full_batch_linear_rate: float | None = _field(omit_none=True)
    eta_range: tuple[float, float] | None = _field(omit_none=True)
    restart_rule: str | None = _field(omit_none=True)
    restarts: int | None = _field(omit_none=True)
    first_restarts: tuple[int, ...] | None = _field(omit_none=True)

    _TUPLES = ("eta_range", "first_restarts")


ALWAYS_COMPARED = ("discrete", "ode", "ode_hr")  # deviation keys written even when null


@dataclasses.dataclass(frozen=True)
class Deviation:
    """max_k |L_train(k) - L_pred(k)| / L_pred(k) over the steps above the float floor, per
    prediction (``values``: a face's compared name -> gap, None where not predicted): the kernel
    recurrence (``discrete``), the limiting ODE (``ode``), the high-resolution ODE (``ode_hr``), the
    trained linearisation (``linearized``), any face added later under its name, and the squared
    gradient norm (``grad_norm_sq``) of the recurrence against training's."""

    values: Mapping[str, float | None] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:  # as written: the always-compared names, others only with a value
        kept = {k: v for k, v in self.values.items() if k in ALWAYS_COMPARED or v is not None}
        object.__setattr__(self, "values", {**{k: kept.pop(k, None) for k in ALWAYS_COMPARED}, **kept})

    def get(self, name: str) -> float | None:
        return self.values.get(name)

    @property
    def discrete(self) -> float | None:
        return self.values.get("discrete")

    @property
    def ode(self) -> float | None:
        return self.values.get("ode")

    @property
    def ode_hr(self) -> float | None:
        return self.values.get("ode_hr")

    @property
    def linearized(self) -> float | None:
        return self.values.get("linearized")

    @property
    def grad_norm_sq(self) -> float | None:
        return self.values.get("grad_norm_sq")

    def to_json(self) -> dict:
        out: dict[str, float | None] = {k: self.values.get(k) for k in ALWAYS_COMPARED}
        out.update({k: v for k, v in self.values.items() if k not in ALWAYS_COMPARED and v is not None})
        return out

    @classmethod
    def from_json(cls, doc: Mapping) -> Deviation:
        return cls({k: v for k, v in doc.items() if k in ALWAYS_COMPARED or v is not None})


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
class Accuracy(Record):
    """Classification accuracy beside the loss (one-hot targets: argmax; one output with ±1 targets:
    sign; ``pipeline.faces.classification``): training's at step 0 (``initial``) and at
    ``final_step`` (the last of train.error_at reached before any divergence), and each prediction's
    there (``predicted_final``: discrete, ode, ode_hr, linearized, ...). The per-step values are the
    arrays ``accuracy`` and ``accuracy_<name>`` of trajectories.npz over ``accuracy_steps``."""

    initial: float | None
    final: float | None
    final_step: int | None
    predicted_final: Mapping[str, float | None] = dataclasses.field(default_factory=dict)


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


@dataclasses.dataclass(frozen=True)
class OptimizerResult:
    """One optimizer of one run: status, verdict, fits, predictions, deviations, drift and its
    trajectories (``trajectory``: the arrays of trajectories.npz under its label, e.g. ``step``,
    ``loss``, ``loss_discrete``, ``loss_ode``, ``errors``, ``kernels``; empty if not loaded).

    Assembled from training's typed trajectory and the faces' typed values
    (``ntkdyn.pipeline.evaluate``); ``to_json`` is its metrics.json entry and ``metrics()`` the same
    mapping (for code that reads metrics.json keys)."""

    label: str
    optimizer: str
    eta: Any  # a number or a schedule's mapping
    status: str
    beta: float | None = None
    r: float | None = None
    verdict: str | None = None
    diverged_at: int | None = None
    fitted: Fitted | None = None
    predicted: Predicted | None = None
    deviation: Deviation | None = None
    deviation_log10: Mapping[str, LogGap] = dataclasses.field(default_factory=dict)
    theory_verdicts: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # face name -> the first recorded step at which its loss prediction overflowed (an unstable
    # recurrence); such a prediction has no deviation and shows "diverges@k" (written only when any)
    predictions_diverged: Mapping[str, int] = dataclasses.field(default_factory=dict)
    kernel_drift: float | None = None
    loss_floor: LossFloor | None = None
    regime: Regime | None = None
    scope: str | None = None
    ode: str | None = None
    ode_hr: str | None = None
    ode_closed_vs_diffrax: float | None = None
    stochastic: Stochastic | None = None
    linearized: Linearized | None = None
    quadratic: Quadratic | None = None
    note: str | None = None
    error: str | None = None
    test: HeldOut | None = None
    solver: Solver | None = None  # which solver made the predictions (theory.solver), how
    sharpness: Sharpness | None = None  # train.sharpness_every: the sharpness along training
    accuracy: Accuracy | None = None  # classification targets: accuracy beside the loss
    trajectory: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    _FAILED: ClassVar[tuple[str, ...]] = ("optimizer", "eta", "status", "error")
    _ALWAYS: ClassVar[tuple[str, ...]] = (
        "optimizer", "eta", "beta", "r", "status", "verdict", "diverged_at", "fitted", "predicted",
        "deviation", "deviation_log10", "theory_verdicts", "kernel_drift", "loss_floor", "regime",
        "scope", "ode",
    )  # fmt: skip
    _NESTED: ClassVar[Mapping[str, type]] = {
        "fitted": Fitted,
        "predicted": Predicted,
        "deviation": Deviation,
        "loss_floor": LossFloor,
        "regime": Regime,
        "stochastic": Stochastic,
        "linearized": Linearized,
        "quadratic": Quadratic,
        "test": HeldOut,
        "solver": Solver,
        "sharpness": Sharpness,
        "accuracy": Accuracy,
    }

    def to_json(self) -> dict:
        """This optimizer's entry of metrics.json (the schema in ``ntkdyn.results``)."""
        if self.status == "failed":
            return {k: _plain_json(getattr(self, k)) for k in self._FAILED}
        out = {}
        for f in dataclasses.fields(self):
            if f.name in ("label", "trajectory"):
                continue
            value = getattr(self, f.name)
            if value is None and f.name not in self._ALWAYS:
                continue
            if f.name == "predictions_diverged" and not value:
                continue
            if f.name == "predicted" and value is None:
                value = Predicted(None)
            if f.name == "deviation" and value is None:
                value = Deviation()
            out[f.name] = _plain_json(value)
        return out

    def metrics(self) -> dict:
        """The metrics.json mapping of this optimizer (``to_json``): the keys studies read,
        e.g. ``["deviation"]["discrete"]``, ``["predicted"]["linear_rate"]``, ``["kernel_drift"]``."""
        return self.to_json()

    @classmethod
    def from_json(
        cls, label: str, doc: Mapping, trajectory: Mapping[str, np.ndarray] | None = None
    ) -> OptimizerResult:
        """From a metrics.json entry (and the arrays under ``label`` in trajectories.npz)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"label", "trajectory"}
        kwargs: dict[str, Any] = {k: doc[k] for k in names if k in doc}
        for name, kind in cls._NESTED.items():
            if kwargs.get(name) is not None:
                kwargs[name] = kind.from_json(kwargs[name])  # type: ignore[attr-defined]
        gaps = doc.get("deviation_log10") or {}
        kwargs["deviation_log10"] = {k: LogGap.from_json(v) for k, v in gaps.items()}
        kwargs["theory_verdicts"] = dict(doc.get("theory_verdicts") or {})
        kwargs["predictions_diverged"] = {
            k: int(v) for k, v in (doc.get("predictions_diverged") or {}).items()
        }
        kwargs.setdefault("status", "ok")
        kwargs.setdefault("optimizer", None)
        kwargs.setdefault("eta", None)
        return cls(label=label, trajectory=dict(trajectory or {}), **kwargs)

    def table(self, pandas: bool | None = None):
        """The per-step trajectories as a long table (see ``long_table``) with run_id '' and this label."""
        return long_table([("", self.label, self.trajectory)], pandas=pandas)


@dataclasses.dataclass(frozen=True)
class RunResult:
    """One run: its config (the mapping of config.yaml), spectrum, one ``OptimizerResult`` per label
    (in config order), and the arrays of data.npz (``data``: X, y, e0) and kernels.npz (``kernels``:
    H0, eigvals, Hinf, ...)."""

    config: Mapping[str, Any]
    spectrum: Spectrum | None
    optimizers: Mapping[str, OptimizerResult]
    data: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False, compare=False)
    kernels: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False, compare=False)
    env: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)
    control: Mapping[str, Any] | None = dataclasses.field(default=None, repr=False, compare=False)
    run_id: str = ""
    folder: str | None = None

    def to_json(self) -> dict:
        """The content of metrics.json."""
        return {
            "spectrum": None if self.spectrum is None else self.spectrum.to_json(),
            "optimizers": {label: o.to_json() for label, o in self.optimizers.items()},
        }

    @classmethod
    def from_json(
        cls, metrics: Mapping, trajectories: Mapping[str, Mapping[str, np.ndarray]] | None = None, **fields
    ) -> RunResult:
        """From metrics.json content and the label groups of trajectories.npz; ``fields`` fill the
        other attributes (config, data, kernels, env, run_id, folder)."""
        known = metrics
        trajectories = trajectories or {}
        opts = {
            label: OptimizerResult.from_json(label, doc, trajectories.get(label))
            for label, doc in (known.get("optimizers") or {}).items()
        }
        spectrum = None if known.get("spectrum") is None else Spectrum.from_json(known["spectrum"])
        return cls(config=fields.pop("config", {}), spectrum=spectrum, optimizers=opts, **fields)

    def __getitem__(self, label: str) -> OptimizerResult:
        return self.optimizers[label]

    @property
    def trajectories(self):
        """All per-step trajectories as one long table (``long_table``)."""
        return self.table()

    def table(self, pandas: bool | None = None):
        return long_table(
            [(self.run_id, label, o.trajectory) for label, o in self.optimizers.items()], pandas=pandas
        )

    def sharpness(self, pandas: bool | None = None):
        """lambda_max(K_k) of the dynamics kernel K_k = c H_k at every recorded kernel step of every
        label (``kernel_steps``, ``kernels``), and eta * lambda_max(K_k), the quantity a linear
        method's stability limit bounds (GD: 2, HB: 2 (1 + beta)).

        Returns:
            A long table (``long_table``'s ``pandas`` rule) with columns run_id, label, step (the
            kernel step), lambda_max, eta_lambda_max, kernel_drift; no rows for labels without kernels.
        """
        c = self.spectrum.loss_scale if self.spectrum is not None else 1.0
        groups = []
        for label, o in self.optimizers.items():
            H, steps = o.trajectory.get("kernels"), o.trajectory.get("kernel_steps")
            if H is None or steps is None or len(steps) == 0:
                continue
            H = np.asarray(H, np.float64)
            lam_max = np.linalg.eigvalsh(c * 0.5 * (H + np.swapaxes(H, -1, -2)))[:, -1]
            eta = float(o.eta) if isinstance(o.eta, (int, float)) else np.nan  # a schedule: no one eta
            drift = o.trajectory.get("kernel_drift", np.full(len(steps), np.nan))
            groups.append(
                (
                    self.run_id,
                    label,
                    {
                        "step": np.asarray(steps),
                        "lambda_max": lam_max,
                        "eta_lambda_max": eta * lam_max,
                        "kernel_drift": drift,
                    },
                )
            )
        return long_table(
            groups, pandas=pandas, fixed=("step", "lambda_max", "eta_lambda_max", "kernel_drift")
        )

    @property
    def held_out(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(X_test, y_test) of the run's held-out set (data.npz), or None without one."""
        if "X_test" not in self.data:
            return None
        return self.data["X_test"], self.data["y_test"]

    def describe(self) -> str:
        """One line saying what was run (model, data, optimizers, steps), from the config."""
        return describe_config(self.config)
