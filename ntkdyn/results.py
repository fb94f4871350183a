"""Typed results, the results-folder files and ``load``. Every file is written atomically.

Results folder of one run (written by ``python -m ntkdyn.run`` and by ``write_run``)::

    config.yaml        the resolved config (for a model or data given from Python, ``model`` and
                       ``data`` describe them instead: ``{name, source: python, ...}``)
    env.json           versions, device, command, wall time per stage
    data.npz           X (n, d), y (n,), e0 (n,) = f(X; theta_0) - y; with a held-out set (data.test)
                       also X_test, y_test, e0_test = f(X_test; theta_0) - y_test
    kernels.npz        H0 (n, n) empirical NTK at initialisation, eigvals (of K = c H, ascending),
                       Hinf (where defined), kernel_used, loss_scale c; with a held-out set H_test
                       (n_test, n) = H(X_test, X) of kernel_used, and test_loss_scale
    trajectories.npz   per optimizer label L: L/step, L/loss, L/loss_discrete, L/loss_ode,
                       L/loss_ode_diffrax, L/loss_ode_hr, L/ode_time (one value per recorded step),
                       L/error_steps + L/errors (n-vectors), L/kernel_steps + L/kernels + L/kernel_drift;
                       with a held-out set L/test_loss (training's) and its predictions
                       L/test_loss_discrete, L/test_loss_ode, L/test_loss_linearized
    metrics.json       the schema below
    loss.<png|svg|pdf> (+ loss.csv: the data behind the figure)

A sweep folder holds config.yaml (the sweep), env.json, summary.csv (one ``SweepRow`` per run
and optimizer), sweep.<fmt> and runs/<run_id>/ (each a run folder, written by ``write_run``,
without env.json). A study folder
(``experiments/<study>.py``) holds verdicts.json, arrays.npz and its figures.

metrics.json (one run; keys in ``[]`` are written only when they have a value, ``|null`` may be null)::

    {"spectrum": {"lambda_min", "lambda_max", "kappa"|null, "loss_scale", ["kernel": "H0"|"Hinf"]},
     "optimizers": {LABEL: {
        "optimizer": registry name, "eta", "beta"|null, "r"|null,
        "status": "ok" | "diverged" | "failed",
        "verdict": one of ``rates.VERDICTS`` (linear, sublinear, stalled, diverged, ...),
        "diverged_at": step|null,
        "fitted": {"linear_rate", "r2_linear", "power_exponent", "r2_power", "window": [k0, k1]} (nulls: NaN),
        "predicted": {"linear_rate"|null, ["stable", "unstable_modes", "max_spectral_radius",
                      "crossover_step", "tail_rate"]},
        "deviation": {"discrete"|null, "ode"|null, "ode_hr"|null},
        "theory_verdicts": {"discrete"|"ode"|"ode_hr": verdict},
        "kernel_drift"|null, "ode": description|null,
        ["ode_hr": description], ["ode_closed_vs_diffrax"], ["note"], ["error"],
        ["test": {"n", "loss_scale", "loss_initial", "loss_final", "final_step",
                  "predicted_final": {"discrete"|"ode"|"linearized": loss}, "deviation": {same keys},
                  ["note"]}]}}}

An optimizer that failed is written as ``{"optimizer", "eta", "status": "failed", "error"}`` (sweep
folders written before the sweep used ``write_run`` hold it without "eta"; read back, eta is None).
Units: rates are loss factors per iteration, deviations relative, drift ||H_k - H_0||_F / ||H_0||_F
(README "Definitions"). Keys not listed here (added by newer versions) are kept, unchanged, in
the ``extra`` mapping of the object at that level, and written back by ``to_json``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import tempfile
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

# --------------------------------------------------------------------------- atomic files


def atomic_write(path: str, write: Callable[[io.IOBase], None], binary: bool = False) -> None:
    """Write via ``write(fh)`` to a temporary file in the same folder, then rename over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb" if binary else "w") as fh:
            write(fh)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path: str, obj) -> None:
    atomic_write(path, lambda fh: json.dump(obj, fh, indent=2, default=_json_default))


def write_text(path: str, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text))


def write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    atomic_write(path, lambda fh: np.savez(fh, **arrays), binary=True)


def write_csv(path: str, columns: Mapping[str, Iterable]) -> None:
    """A CSV with one column per key (all of the same length); None and NaN are written empty."""
    names = list(columns)
    cols = [list(v) for v in columns.values()]
    if len({len(c) for c in cols}) > 1:
        raise ValueError(f"write_csv {path}: columns of different lengths {[len(c) for c in cols]}")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(names)
    for row in zip(*cols):
        writer.writerow(["" if _missing(v) else _plain(v) for v in row])
    write_text(path, buffer.getvalue())


def read_npz_groups(path: str) -> dict[str, dict[str, np.ndarray]]:
    """{'hb': {'step': ..., 'loss': ...}, ...} from keys 'hb/step', 'hb/loss', ... (split at the last '/')."""
    out: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path) as f:
        for key in f.files:
            label, _, name = key.rpartition("/")
            out.setdefault(label, {})[name] = f[key]
    return out


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


VERSIONED = tuple("ntkdyn jax jaxlib optax flax diffrax numpy scipy scikit-learn matplotlib".split())


def versions() -> dict[str, str | None]:
    """Python's version and the installed version of each package in ``VERSIONED`` (None where
    not installed): env.json's and verdicts.json's "versions"."""
    import importlib.metadata
    import platform

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in VERSIONED:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def finite(x):
    """A JSON-safe number: ``float(x)`` if finite, None for None, NaN or +-inf; lists and tuples
    element by element (the one finite cleanup of metrics written to JSON)."""
    if x is None:
        return None
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    x = float(x)
    return x if math.isfinite(x) else None


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


# --------------------------------------------------------------------------- typed results
def _split(doc: Mapping, known: Iterable[str]) -> tuple[dict, dict]:
    """(the known keys of ``doc``, every other key) -- the others become ``extra``."""
    known = set(known)
    return ({k: v for k, v in doc.items() if k in known}, {k: v for k, v in doc.items() if k not in known})


def _put_optional(out: dict, **values) -> dict:
    out.update({k: v for k, v in values.items() if v is not None})
    return out


@dataclasses.dataclass(frozen=True)
class Spectrum:
    """Eigenvalues of the dynamics kernel K = c H the predictions use (``kernel``: H0 or Hinf)."""

    lambda_min: float
    lambda_max: float
    kappa: float | None
    loss_scale: float
    kernel: str | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        out = {
            "lambda_min": self.lambda_min,
            "lambda_max": self.lambda_max,
            "kappa": self.kappa,
            "loss_scale": self.loss_scale,
        }
        return {**_put_optional(out, kernel=self.kernel), **self.extra}

    @classmethod
    def of(cls, lam, loss_scale: float, kernel: str | None = None, **extra) -> Spectrum:
        """From the ascending eigenvalues ``lam`` of K = c H (``loss_scale`` c): kappa =
        lambda_max / lambda_min, None unless lambda_min > 0. The one place a spectrum summary is made."""
        lam = np.asarray(lam, np.float64)
        kappa = float(lam[-1] / lam[0]) if lam[0] > 0 else None
        return cls(float(lam[0]), float(lam[-1]), kappa, float(loss_scale), kernel, extra)

    @classmethod
    def from_json(cls, doc: Mapping) -> Spectrum:
        known, extra = _split(doc, ("lambda_min", "lambda_max", "kappa", "loss_scale", "kernel"))
        return cls(
            known["lambda_min"],
            known["lambda_max"],
            known.get("kappa"),
            known["loss_scale"],
            known.get("kernel"),
            extra,
        )


@dataclasses.dataclass(frozen=True)
class Fitted:
    """Least-squares fits of the training loss over the rate window (``ntkdyn.rates``):
    log L_k = a + k log q (``linear_rate`` q per iteration) and log L_k = a + p log k (``power_exponent`` p).
    NaN fits are None."""

    linear_rate: float | None
    r2_linear: float | None
    power_exponent: float | None
    r2_power: float | None
    window: tuple[float, float] | None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "linear_rate": self.linear_rate,
            "r2_linear": self.r2_linear,
            "power_exponent": self.power_exponent,
            "r2_power": self.r2_power,
            "window": None if self.window is None else list(self.window),
            **self.extra,
        }

    @property
    def margin(self) -> float | None:
        """Verdict margin over the fitted steps (``rates.RateFit.margin``); None if not recorded."""
        return self.extra.get("margin")

    @property
    def local_linear_rate(self) -> float | None:
        """Loss factor per step of the envelope's local rate at the window's end."""
        return self.extra.get("local_linear_rate")

    @property
    def local_power_exponent(self) -> float | None:
        """Local log-log slope of the envelope at the window's end."""
        return self.extra.get("local_power_exponent")

    @property
    def fitted_on(self) -> str | None:
        """Either L or L - L* (fits on the excess over the loss floor L* of non-interpolable data)."""
        return self.extra.get("fitted_on")

    @classmethod
    def from_json(cls, doc: Mapping) -> Fitted:
        known, extra = _split(doc, ("linear_rate", "r2_linear", "power_exponent", "r2_power", "window"))
        window = known.get("window")
        return cls(
            known.get("linear_rate"),
            known.get("r2_linear"),
            known.get("power_exponent"),
            known.get("r2_power"),
            None if window is None else tuple(window),
            extra,
        )


@dataclasses.dataclass(frozen=True)
class Predicted:
    """Kernel-regime predictions: ``linear_rate`` = max over modes of rho(A(lambda))^2 (None for an
    optimizer without a recurrence), ``stable`` (rho <= 1 on every mode), for r/t damping the
    ``crossover_step`` and ``tail_rate`` of the fixed-step linear tail."""

    linear_rate: float | None
    stable: bool | None = None
    unstable_modes: int | None = None
    max_spectral_radius: float | None = None
    crossover_step: float | None = None
    tail_rate: float | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        out = _put_optional(
            {"linear_rate": self.linear_rate},
            stable=self.stable,
            unstable_modes=self.unstable_modes,
            max_spectral_radius=self.max_spectral_radius,
            crossover_step=self.crossover_step,
            tail_rate=self.tail_rate,
        )
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, doc: Mapping) -> Predicted:
        names = (
            "linear_rate",
            "stable",
            "unstable_modes",
            "max_spectral_radius",
            "crossover_step",
            "tail_rate",
        )
        known, extra = _split(doc, names)
        return cls(*(known.get(k) for k in names), extra=extra)


@dataclasses.dataclass(frozen=True)
class Deviation:
    """max_k |L_train(k) - L_pred(k)| / L_pred(k) over the steps above the float floor, for the
    kernel recurrence (``discrete``), the ODE, the high-resolution ODE and the trained linearisation
    (``linearized``) (None where not predicted)."""

    discrete: float | None = None
    ode: float | None = None
    ode_hr: float | None = None
    linearized: float | None = (
        None  # the network's linearisation at theta_0 trained alike (theory.linearized)
    )
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        out = {"discrete": self.discrete, "ode": self.ode, "ode_hr": self.ode_hr}
        if self.linearized is not None:
            out["linearized"] = self.linearized
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, doc: Mapping) -> Deviation:
        known, extra = _split(doc, ("discrete", "ode", "ode_hr", "linearized"))
        return cls(
            known.get("discrete"), known.get("ode"), known.get("ode_hr"), known.get("linearized"), extra
        )


@dataclasses.dataclass(frozen=True)
class HeldOut:
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
    note: str | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    _NAMES = ("n", "loss_scale", "loss_initial", "loss_final", "final_step", "predicted_final", "deviation")

    def to_json(self) -> dict:
        out = {
            "n": self.n,
            "loss_scale": self.loss_scale,
            "loss_initial": self.loss_initial,
            "loss_final": self.loss_final,
            "final_step": self.final_step,
            "predicted_final": dict(self.predicted_final),
            "deviation": dict(self.deviation),
        }
        return {**_put_optional(out, note=self.note), **self.extra}

    @classmethod
    def from_json(cls, doc: Mapping) -> HeldOut:
        k, extra = _split(doc, (*cls._NAMES, "note"))
        return cls(
            *(k.get(name) for name in cls._NAMES[:5]),
            predicted_final=dict(k.get("predicted_final") or {}),
            deviation=dict(k.get("deviation") or {}),
            note=k.get("note"),
            extra=extra,
        )


_OPT_KEYS = (
    "optimizer",
    "eta",
    "beta",
    "r",
    "status",
    "verdict",
    "diverged_at",
    "fitted",
    "predicted",
    "deviation",
    "theory_verdicts",
    "kernel_drift",
    "ode",
    "ode_hr",
    "ode_closed_vs_diffrax",
    "note",
    "error",
    "test",
)


@dataclasses.dataclass(frozen=True)
class OptimizerResult:
    """One optimizer of one run: status, verdict, fits, predictions, deviations, drift and its
    trajectories (``trajectory``: the arrays of trajectories.npz under its label, e.g. ``step``,
    ``loss``, ``loss_discrete``, ``loss_ode``, ``errors``, ``kernels``; empty if not loaded)."""

    label: str
    optimizer: str
    eta: float | None
    status: str
    beta: float | None = None
    r: float | None = None
    verdict: str | None = None
    diverged_at: int | None = None
    fitted: Fitted | None = None
    predicted: Predicted | None = None
    deviation: Deviation | None = None
    theory_verdicts: Mapping[str, str] = dataclasses.field(default_factory=dict)
    kernel_drift: float | None = None
    ode: str | None = None
    ode_hr: str | None = None
    ode_closed_vs_diffrax: float | None = None
    note: str | None = None
    error: str | None = None
    test: HeldOut | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    trajectory: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def to_json(self) -> dict:
        """This optimizer's entry of metrics.json (the module docstring's schema)."""
        if self.status == "failed":
            return {
                "optimizer": self.optimizer,
                "eta": self.eta,
                "status": "failed",
                "error": self.error,
                **self.extra,
            }
        out = {
            "optimizer": self.optimizer,
            "eta": self.eta,
            "beta": self.beta,
            "r": self.r,
            "status": self.status,
            "verdict": self.verdict,
            "diverged_at": self.diverged_at,
            "fitted": None if self.fitted is None else self.fitted.to_json(),
            "predicted": (self.predicted or Predicted(None)).to_json(),
            "deviation": (self.deviation or Deviation()).to_json(),
            "theory_verdicts": dict(self.theory_verdicts),
            "kernel_drift": self.kernel_drift,
            "ode": self.ode,
        }
        _put_optional(
            out,
            ode_hr=self.ode_hr,
            ode_closed_vs_diffrax=self.ode_closed_vs_diffrax,
            note=self.note,
            error=self.error,
            test=None if self.test is None else self.test.to_json(),
        )
        return {**out, **self.extra}

    @classmethod
    def from_json(
        cls, label: str, doc: Mapping, trajectory: Mapping[str, np.ndarray] | None = None
    ) -> OptimizerResult:
        """From a metrics.json entry (and the arrays under ``label`` in trajectories.npz)."""
        k, extra = _split(doc, _OPT_KEYS)
        return cls(
            label=label,
            optimizer=k.get("optimizer"),
            eta=k.get("eta"),
            status=k.get("status", "ok"),
            beta=k.get("beta"),
            r=k.get("r"),
            verdict=k.get("verdict"),
            diverged_at=k.get("diverged_at"),
            fitted=None if k.get("fitted") is None else Fitted.from_json(k["fitted"]),
            predicted=None if k.get("predicted") is None else Predicted.from_json(k["predicted"]),
            deviation=None if k.get("deviation") is None else Deviation.from_json(k["deviation"]),
            theory_verdicts=dict(k.get("theory_verdicts") or {}),
            kernel_drift=k.get("kernel_drift"),
            ode=k.get("ode"),
            ode_hr=k.get("ode_hr"),
            ode_closed_vs_diffrax=k.get("ode_closed_vs_diffrax"),
            note=k.get("note"),
            error=k.get("error"),
            test=None if k.get("test") is None else HeldOut.from_json(k["test"]),
            extra=extra,
            trajectory=dict(trajectory or {}),
        )

    @property
    def regime(self) -> Mapping[str, Any]:
        """Theory's asymptotic regime of this run (``horizon``, ``horizon_kind``, ``window_position``,
        ...; empty where not recorded)."""
        return self.extra.get("regime") or {}

    @property
    def deviation_log10(self) -> Mapping[str, Mapping[str, Any]]:
        """Per prediction (discrete, ode, ode_hr): max / mean |log10 L_pred - log10 L_train| over the
        fit window (``rates.log_gap``); empty where not recorded."""
        return self.extra.get("deviation_log10") or {}

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
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        """The content of metrics.json."""
        return {
            "spectrum": None if self.spectrum is None else self.spectrum.to_json(),
            "optimizers": {label: o.to_json() for label, o in self.optimizers.items()},
            **self.extra,
        }

    @classmethod
    def from_json(
        cls, metrics: Mapping, trajectories: Mapping[str, Mapping[str, np.ndarray]] | None = None, **fields
    ) -> RunResult:
        """From metrics.json content and the label groups of trajectories.npz; ``fields`` fill the
        other attributes (config, data, kernels, env, run_id, folder)."""
        known, extra = _split(metrics, ("spectrum", "optimizers"))
        trajectories = trajectories or {}
        opts = {
            label: OptimizerResult.from_json(label, doc, trajectories.get(label))
            for label, doc in (known.get("optimizers") or {}).items()
        }
        spectrum = None if known.get("spectrum") is None else Spectrum.from_json(known["spectrum"])
        return cls(config=fields.pop("config", {}), spectrum=spectrum, optimizers=opts, extra=extra, **fields)

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
            eta = np.nan if o.eta is None else float(o.eta)
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


# --------------------------------------------------------------------------- sweeps
# summary.csv columns after run_id, the swept values, lambda_min and lambda_max: (column, SweepRow field)
SUMMARY_COLUMNS = (
    ("label", "label"),
    ("optimizer", "optimizer"),
    ("opt_eta", "eta"),
    ("opt_beta", "beta"),
    ("opt_r", "r"),
    ("status", "status"),
    ("verdict", "verdict"),
    ("diverged_at", "diverged_at"),
    ("fitted.linear_rate", "fitted_linear_rate"),
    ("fitted.r2_linear", "fitted_r2_linear"),
    ("fitted.power_exponent", "fitted_power_exponent"),
    ("fitted.r2_power", "fitted_r2_power"),
    ("predicted.linear_rate", "predicted_linear_rate"),
    ("predicted.stable", "predicted_stable"),
    ("predicted.crossover_step", "predicted_crossover_step"),
    ("deviation.discrete", "deviation_discrete"),
    ("deviation.ode", "deviation_ode"),
    ("deviation.linearized", "deviation_linearized"),
    ("kernel_drift", "kernel_drift"),
)


@dataclasses.dataclass(frozen=True)
class SweepRow:
    """One row of a sweep's summary.csv: one optimizer of one run, with the swept ``values``
    (axis -> value). ``to_json`` gives the CSV row as a mapping with the column names."""

    run_id: str
    values: Mapping[str, Any]
    lambda_min: float | None
    lambda_max: float | None
    label: str
    optimizer: str | None
    eta: float | None
    beta: float | None
    r: float | None
    status: str | None
    verdict: str | None
    diverged_at: int | None
    fitted_linear_rate: float | None
    fitted_r2_linear: float | None
    fitted_power_exponent: float | None
    fitted_r2_power: float | None
    predicted_linear_rate: float | None
    predicted_stable: bool | None
    predicted_crossover_step: float | None
    deviation_discrete: float | None
    deviation_ode: float | None
    deviation_linearized: float | None
    kernel_drift: float | None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        out = {
            "run_id": self.run_id,
            **self.values,
            "lambda_min": self.lambda_min,
            "lambda_max": self.lambda_max,
        }
        out.update({column: getattr(self, field) for column, field in SUMMARY_COLUMNS})
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, row: Mapping, axes: Iterable[str]) -> SweepRow:
        """From a summary.csv row (text cells are parsed: '' -> None, numbers, True/False); ``axes``
        are the swept columns."""
        row = {k: _parse_cell(v) for k, v in row.items()}
        axes = list(axes)
        fields = {field: row.get(column) for column, field in SUMMARY_COLUMNS}
        known = {"run_id", "lambda_min", "lambda_max", *axes, *(c for c, _ in SUMMARY_COLUMNS)}
        return cls(
            run_id=str(row["run_id"]),
            values={a: row.get(a) for a in axes},
            lambda_min=row.get("lambda_min"),
            lambda_max=row.get("lambda_max"),
            **{**fields, "label": str(fields["label"])},
            extra={k: v for k, v in row.items() if k not in known},
        )

    @classmethod
    def from_result(
        cls, run_id: str, values: Mapping[str, Any], spectrum: Spectrum | None, result: OptimizerResult
    ) -> SweepRow:
        f, p, d = result.fitted, result.predicted, result.deviation
        return cls(
            run_id=run_id,
            values=dict(values),
            lambda_min=spectrum and spectrum.lambda_min,
            lambda_max=spectrum and spectrum.lambda_max,
            label=result.label,
            optimizer=result.optimizer,
            eta=result.eta,
            beta=result.beta,
            r=result.r,
            status=result.status,
            verdict=result.verdict,
            diverged_at=result.diverged_at,
            fitted_linear_rate=f and f.linear_rate,
            fitted_r2_linear=f and f.r2_linear,
            fitted_power_exponent=f and f.power_exponent,
            fitted_r2_power=f and f.r2_power,
            predicted_linear_rate=p and p.linear_rate,
            predicted_stable=p and p.stable,
            predicted_crossover_step=p and p.crossover_step,
            deviation_discrete=d and d.discrete,
            deviation_ode=d and d.ode,
            deviation_linearized=d and d.linearized,
            kernel_drift=result.kernel_drift,
        )


def _parse_cell(v):
    if not isinstance(v, str):
        return v
    if v == "":
        return None
    if v in ("True", "False"):
        return v == "True"
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """A sweep: its config (the sweep's config.yaml), the swept ``axes``, the summary ``rows`` and
    each finished run (``runs``: run_id -> RunResult, in grid order)."""

    config: Mapping[str, Any]
    axes: tuple[str, ...]
    rows: tuple[SweepRow, ...]
    runs: Mapping[str, RunResult]
    env: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)
    folder: str | None = None

    @property
    def trajectories(self):
        return self.table()

    def table(self, pandas: bool | None = None):
        """Every run's trajectories as one long table, with a column per swept axis."""
        values = {r.run_id: r.values for r in self.rows}
        groups = [
            (run_id, label, o.trajectory)
            for run_id, run in self.runs.items()
            for label, o in run.optimizers.items()
        ]
        return long_table(
            groups,
            pandas=pandas,
            constants={run_id: values.get(run_id, {}) for run_id in self.runs},
            constant_names=self.axes,
        )

    def describe(self) -> str:
        name = self.config.get("name", "sweep")
        return f"sweep '{name}': {len(self.runs)} runs over {' x '.join(self.axes)}; " + describe_config(
            {k: v for k, v in self.config.items() if k != "sweep"}, with_name=False
        )


# --------------------------------------------------------------------------- studies (experiments/)
ClaimResult = Literal["differs", "partly", "inconclusive", "agrees", "info"]
CLAIM_RESULTS: tuple[str, ...] = typing.get_args(ClaimResult)  # most severe first (the report's order)


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of a study's verdicts.json: ``result`` is one of ``CLAIM_RESULTS`` (agrees | differs |
    partly | inconclusive | info), ``line`` the sentence computed from the data, ``numbers`` the
    values behind it."""

    id: str
    claim: str
    result: ClaimResult
    line: str
    source: str = ""
    window: tuple[float | None, float | None] | None = None
    numbers: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    differs_from_paper: bool | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        out = {
            "id": self.id,
            "claim": self.claim,
            "source": self.source,
            "result": self.result,
            "line": self.line,
            "window": None if self.window is None else list(self.window),
            "numbers": dict(self.numbers),
        }
        return {**_put_optional(out, differs_from_paper=self.differs_from_paper), **self.extra}

    @classmethod
    def from_json(cls, doc: Mapping) -> Claim:
        names = ("id", "claim", "source", "result", "line", "window", "numbers", "differs_from_paper")
        k, extra = _split(doc, names)
        window = k.get("window")
        return cls(
            id=k.get("id", ""),
            claim=k.get("claim", ""),
            result=k.get("result", "info"),
            line=k.get("line", ""),
            source=k.get("source", ""),
            window=None if window is None else tuple(window),
            numbers=k.get("numbers") or {},
            differs_from_paper=k.get("differs_from_paper"),
            extra=extra,
        )


@dataclasses.dataclass(frozen=True)
class StudyResult:
    """A study folder of ``experiments/``: verdicts.json as typed claims (``doc`` keeps the whole
    document: settings, figures, tables, times) and arrays.npz (``arrays``: 'group/name' -> array)."""

    study: str
    title: str
    mode: str | None
    claims: tuple[Claim, ...]
    doc: Mapping[str, Any] = dataclasses.field(repr=False, compare=False)
    arrays: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False, compare=False)
    folder: str | None = None

    @property
    def config(self) -> Mapping[str, Any]:
        return self.doc.get("settings", {})

    @property
    def trajectories(self):
        return self.table()

    def table(self, pandas: bool | None = None):
        """The array groups that have a ``step`` as one long table (run_id = study, label = group)."""
        return long_table(_study_groups(self), pandas=pandas)

    def describe(self) -> str:
        return f"study {self.study} ({self.mode}): {self.title}"


@dataclasses.dataclass(frozen=True)
class StudyCollection:
    """Several studies (a folder whose sub-folders hold verdicts.json, e.g. experiments/run_all.py's)."""

    studies: tuple[StudyResult, ...]
    folder: str | None = None

    @property
    def config(self) -> Mapping[str, Any]:
        return {s.study: s.config for s in self.studies}

    @property
    def trajectories(self):
        return self.table()

    def table(self, pandas: bool | None = None):
        groups = [(s.study, g, arrs) for s in self.studies for (_, g, arrs) in _study_groups(s)]
        return long_table(groups, pandas=pandas)

    def describe(self) -> str:
        return f"{len(self.studies)} stud{'y' if len(self.studies) == 1 else 'ies'}: " + ", ".join(
            s.study for s in self.studies
        )


def _study_groups(s: StudyResult):
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, arr in s.arrays.items():
        group, _, name = key.rpartition("/")
        groups.setdefault(group, {})[name] = arr
    return [(s.study, g, arrs) for g, arrs in groups.items() if "step" in arrs]


# --------------------------------------------------------------------------- long tables
def per_step_columns(arrays: Mapping[str, np.ndarray]) -> list[str]:
    """Names of the arrays indexed by the recorded steps: 1-D, as long as ``step``, and not one of
    the series indexed by ``error_steps`` or ``kernel_steps`` (names starting 'error' or 'kernel')."""
    step = arrays.get("step")
    if step is None:
        return []
    n = np.shape(step)[0]
    return [
        k
        for k, v in arrays.items()
        if np.ndim(v) == 1 and np.shape(v)[0] == n and not k.startswith(("error", "kernel"))
    ]


def long_table(
    groups: Iterable[tuple[str, str, Mapping[str, np.ndarray]]],
    pandas: bool | None = None,
    constants: Mapping[str, Mapping[str, Any]] | None = None,
    constant_names: Iterable[str] = (),
    fixed: Sequence[str] | None = None,
):
    """One row per (run_id, label, recorded step): columns run_id, label, [swept values], step,
    loss, then every other per-step array (``per_step_columns``; absent ones are NaN).

    Args:
        groups: (run_id, label, arrays) triples.
        pandas: True -> a pandas DataFrame, False -> a dict of numpy columns, None -> a DataFrame
            when pandas is installed.
        constants: run_id -> {name: value} repeated on every row of that run (e.g. swept values).
        constant_names: the names of those columns, in order.
        fixed: exactly these array columns (all of one length per group) instead of the per-step ones.
    Returns:
        A DataFrame or a dict name -> 1-D numpy array (all of equal length).
    """
    groups = [(run_id, label, arrs) for run_id, label, arrs in groups if "step" in arrs]
    constant_names = list(constant_names)
    names: list[str] = list(fixed) if fixed is not None else ["step", "loss"]
    for _, _, arrs in groups if fixed is None else ():
        names += [k for k in per_step_columns(arrs) if k not in names]
    take = (lambda arrs: set(fixed)) if fixed is not None else per_step_columns
    cols: dict[str, list] = {
        "run_id": [],
        "label": [],
        **{c: [] for c in constant_names},
        **{k: [] for k in names},
    }
    for run_id, label, arrs in groups:
        n = np.shape(arrs["step"])[0]
        cols["run_id"].append(np.full(n, run_id, dtype=object))
        cols["label"].append(np.full(n, label, dtype=object))
        for c in constant_names:
            cols[c].append(np.full(n, (constants or {}).get(run_id, {}).get(c), dtype=object))
        columns = take(arrs)
        for k in names:
            cols[k].append(np.asarray(arrs[k]) if k in arrs and k in columns else np.full(n, np.nan))
    table = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()}
    for c in constant_names:  # numeric swept values as numbers
        try:
            table[c] = table[c].astype(float)
        except (TypeError, ValueError):
            pass
    if "step" in table and table["step"].size:
        table["step"] = table["step"].astype(np.int64)
    return _as_frame(table, pandas)


def _as_frame(table: dict[str, np.ndarray], pandas: bool | None):
    if pandas is False:
        return table
    try:
        import pandas as pd
    except ImportError:
        if pandas:
            raise ImportError("pandas=True needs pandas installed (pip install pandas)") from None
        return table
    return pd.DataFrame(table)


# --------------------------------------------------------------------------- describing what was run
def describe_config(cfg: Mapping[str, Any], with_name: bool = True) -> str:
    """'quickstart: paper model (m=4096) on sphere data (n=64, d=16, teacher); gd, hb, nag_c; 1500 steps'."""
    model, data, train = cfg.get("model") or {}, cfg.get("data") or {}, cfg.get("train") or {}
    mdesc = f"{model.get('name', '?')} model"
    if model.get("width") is not None and model.get("name") in ("paper", "released", "mlp"):
        mdesc += (
            f" (m={model['width']}"
            + (f", depth {model['depth']}" if model.get("name") == "mlp" else "")
            + ")"
        )
    elif model.get("parameters") is not None:
        mdesc += f" ({model['parameters']} parameters)"
    source = data.get("source", "?")
    details = [
        f"{k}={data[k]}"
        for k in ("n", "d")
        if data.get(k) is not None and not (k == "d" and source == "digits")
    ]
    if data.get("target") and source != "python":
        details.append(str(data["target"]))
    ddesc = f"{source} data" + (f" ({', '.join(details)})" if details else "")
    opts = ", ".join(str(o.get("label") or o.get("name")) for o in cfg.get("optimizers") or [])
    steps = f"; {train['steps']} steps" if train.get("steps") is not None else ""
    head = f"{cfg.get('name', 'run')}: " if with_name else ""
    return f"{head}{mdesc} on {ddesc}; {opts}{steps}"


# --------------------------------------------------------------------------- load
def _read_json(path: str):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read ({exc})") from None


def _read_yaml(path: str) -> dict:
    import yaml

    if not os.path.isfile(path):
        return {}
    with open(path) as fh:
        return yaml.safe_load(fh) or {}


def _read_npz(path: str) -> dict[str, np.ndarray]:
    if not os.path.isfile(path):
        return {}
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def load_run(folder: str, run_id: str | None = None) -> RunResult:
    """A run folder (metrics.json, trajectories.npz, config.yaml, data.npz, kernels.npz, env.json)."""
    metrics = _read_json(os.path.join(folder, "metrics.json"))
    traj = (
        read_npz_groups(os.path.join(folder, "trajectories.npz"))
        if os.path.isfile(os.path.join(folder, "trajectories.npz"))
        else {}
    )
    env_path, control_path = os.path.join(folder, "env.json"), os.path.join(folder, "control.json")
    return RunResult.from_json(
        metrics,
        traj,
        config=_read_yaml(os.path.join(folder, "config.yaml")),
        data=_read_npz(os.path.join(folder, "data.npz")),
        kernels=_read_npz(os.path.join(folder, "kernels.npz")),
        env=_read_json(env_path) if os.path.isfile(env_path) else {},
        control=_read_json(control_path) if os.path.isfile(control_path) else None,
        run_id=run_id if run_id is not None else os.path.basename(os.path.normpath(folder)),
        folder=folder,
    )


def load_sweep(folder: str) -> SweepResult:
    """A sweep folder: summary.csv, config.yaml, env.json and runs/<run_id>/ (finished runs only)."""
    summary = os.path.join(folder, "summary.csv")
    rows: list[SweepRow] = []
    axes: list[str] = []
    if os.path.isfile(summary):
        with open(summary, newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            if "run_id" in header and "lambda_min" in header:
                axes = header[header.index("run_id") + 1 : header.index("lambda_min")]
            rows = [SweepRow.from_json(r, axes) for r in reader]
    runs_dir = os.path.join(folder, "runs")
    ids = (
        sorted(d for d in os.listdir(runs_dir) if os.path.isfile(os.path.join(runs_dir, d, "metrics.json")))
        if os.path.isdir(runs_dir)
        else []
    )
    env_path = os.path.join(folder, "env.json")
    return SweepResult(
        config=_read_yaml(os.path.join(folder, "config.yaml")),
        axes=tuple(axes),
        rows=tuple(rows),
        runs={i: load_run(os.path.join(runs_dir, i), i) for i in ids},
        env=_read_json(env_path) if os.path.isfile(env_path) else {},
        folder=folder,
    )


def load_study(folder: str) -> StudyResult:
    doc = _read_json(os.path.join(folder, "verdicts.json"))
    if not isinstance(doc, dict) or "claims" not in doc:
        raise ValueError(
            f"{os.path.join(folder, 'verdicts.json')}: not a study's verdicts.json (no 'claims')"
        )
    return StudyResult(
        study=str(doc.get("study", os.path.basename(os.path.normpath(folder)))),
        title=str(doc.get("title", "")),
        mode=doc.get("mode"),
        claims=tuple(Claim.from_json(c) for c in doc["claims"]),
        doc=doc,
        arrays=_read_npz(os.path.join(folder, "arrays.npz")),
        folder=folder,
    )


def kind_of(folder: str) -> str:
    """'run' (metrics.json), 'sweep' (summary.csv or runs/), 'study' (verdicts.json), 'studies'
    (sub-folders with verdicts.json); ValueError otherwise."""
    has = lambda name: os.path.isfile(os.path.join(folder, name))  # noqa: E731
    if not os.path.isdir(folder):
        raise ValueError(f"{folder}: not a folder")
    if has("verdicts.json"):
        return "study"
    if has("summary.csv") or os.path.isdir(os.path.join(folder, "runs")):
        return "sweep"
    if has("metrics.json"):
        return "run"
    if any(os.path.isfile(os.path.join(folder, d, "verdicts.json")) for d in os.listdir(folder)):
        return "studies"
    raise ValueError(
        f"{folder}: not a results folder (no metrics.json, summary.csv, runs/ or verdicts.json, "
        "nor sub-folders with verdicts.json)"
    )


def load(folder: str) -> RunResult | SweepResult | StudyResult | StudyCollection:
    """Load a results folder: a run, a sweep, a study of ``experiments/`` or a folder of studies.

    Args:
        folder: the folder ``python -m ntkdyn.run``, ``run_study(..., out=...)`` or a study wrote.
    Returns:
        ``RunResult`` / ``SweepResult`` / ``StudyResult`` / ``StudyCollection``. Each has
        ``config`` (a mapping), typed metrics, ``trajectories`` (one long table: a pandas
        DataFrame when pandas is installed, else a dict of numpy columns run_id, label, step,
        loss, loss_discrete, loss_ode, ...) and ``describe()``.
    Raises:
        ValueError: the folder holds none of these.
    """
    kind = kind_of(folder)
    if kind == "run":
        return load_run(folder)
    if kind == "sweep":
        return load_sweep(folder)
    if kind == "study":
        return load_study(folder)
    subs = [
        os.path.join(folder, d)
        for d in sorted(os.listdir(folder))
        if os.path.isfile(os.path.join(folder, d, "verdicts.json"))
    ]
    return StudyCollection(tuple(load_study(s) for s in subs), folder)


# --------------------------------------------------------------------------- the run-folder writer
def write_run(folder: str, run: RunResult, config_text: str | None = None) -> None:
    """Write ``run`` as a run folder (module docstring): the one writer of run folders (CLI single
    runs, each run of a sweep, ``run_study(out=...)``). ``write_run_inputs`` then ``write_run_outputs``.

    Args:
        folder: the run folder (created).
        run: the run; an empty ``run.env`` writes no env.json.
        config_text: config.yaml's text (default ``run.config`` as YAML).
    """
    write_run_inputs(folder, run, config_text)
    write_run_outputs(folder, run)


def write_run_inputs(folder: str, run: RunResult, config_text: str | None = None) -> None:
    """What a run knows before training: config.yaml, data.npz and kernels.npz (where present)."""
    import yaml

    os.makedirs(folder, exist_ok=True)
    write_text(
        os.path.join(folder, "config.yaml"),
        config_text if config_text is not None else yaml.safe_dump(_yaml_safe(run.config), sort_keys=False),
    )
    if run.data:
        write_npz(os.path.join(folder, "data.npz"), dict(run.data))
    if run.kernels:
        write_npz(os.path.join(folder, "kernels.npz"), dict(run.kernels))


def write_run_outputs(folder: str, run: RunResult) -> None:
    """trajectories.npz, env.json (if ``run.env``) and metrics.json, last: a run folder whose
    metrics.json lists every optimizer is complete (a sweep skips such runs when resumed)."""
    os.makedirs(folder, exist_ok=True)
    write_npz(
        os.path.join(folder, "trajectories.npz"),
        {f"{label}/{k}": v for label, o in run.optimizers.items() for k, v in o.trajectory.items()},
    )
    if run.env:
        write_json(os.path.join(folder, "env.json"), dict(run.env))
    write_json(os.path.join(folder, "metrics.json"), run.to_json())


def _yaml_safe(obj):
    if isinstance(obj, Mapping):
        return {str(k): _yaml_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_yaml_safe(v) for v in obj]
    return _plain(obj)
