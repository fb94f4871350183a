"""Typed results of one run, each a frozen dataclass with ``to_json`` / ``from_json`` (its part of
metrics.json; the schema is in ``ntkdyn.results``' docstring). Every key of metrics.json is a field:
nothing is kept in an untyped ``extra`` mapping. Keys that a reader does not know (written by a
newer version) are ignored when read.

Parts: ``Spectrum``, ``Fitted``, ``Predicted``, ``Deviation`` here; those that faces and options add
(``LogGap``, ``Regime``, ``LossFloor``, the mini-batch checks, ``Linearized``, ``Quadratic``,
``CentralFlowFace``, ``Accuracy``, ``HeldOut``, ``Sharpness``, ``Solver``) in ``results.parts``, on
the ``Record`` base of ``results.record``; assembled: ``OptimizerResult`` (one optimizer of one run)
and ``RunResult`` (one run).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ntkdyn.results.parts import (
    Accuracy,
    CentralFlowFace,
    HeldOut,
    Linearized,
    LogGap,
    LossFloor,
    Quadratic,
    Regime,
    Sharpness,
    Solver,
    Stochastic,
)
from ntkdyn.results.record import _OMIT, Record, _field, _plain_json  # noqa: F401  (re-exported)
from ntkdyn.results.tables import describe_config, long_table


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
    central_flow: CentralFlowFace | None = None  # theory.central_flow: the GD central flow face
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
        "central_flow": CentralFlowFace,
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
