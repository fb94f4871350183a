"""A sweep's typed results: ``SweepRow`` (one row of summary.csv) and ``SweepResult``."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from ntkdyn.results.tables import _as_frame, describe_config, long_table
from ntkdyn.results.types import ALWAYS_COMPARED, OptimizerResult, RunResult, Spectrum

# summary.csv columns after run_id, the swept values, lambda_min and lambda_max: (column, SweepRow
# field); then one ``deviation.<name>`` column per compared prediction (``SweepRow.deviation``: the
# faces' names, ``ALWAYS_COMPARED`` and linearized first), then ``kernel_drift``.
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
)
DEVIATION_COLUMNS = (*ALWAYS_COMPARED, "linearized")  # written on every row, empty where not predicted


@dataclasses.dataclass(frozen=True)
class SweepRow:
    """One row of a sweep's summary.csv: one optimizer of one run, with the swept ``values``
    (axis -> value) and each prediction's deviation (``deviation``: name -> max relative gap).
    ``to_json`` gives the CSV row as a mapping with the column names."""

    run_id: str
    values: Mapping[str, Any]
    lambda_min: float | None
    lambda_max: float | None
    label: str
    optimizer: str | None
    eta: Any
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
    deviation: Mapping[str, float | None]
    kernel_drift: float | None
    # classification targets (results.Accuracy): "final" (training's) and each prediction's final
    # accuracy; columns accuracy.<key>, written only when there are some
    accuracy: Mapping[str, float | None] = dataclasses.field(default_factory=dict)

    @property
    def deviation_discrete(self) -> float | None:
        return self.deviation.get("discrete")

    @property
    def deviation_ode(self) -> float | None:
        return self.deviation.get("ode")

    @property
    def deviation_ode_hr(self) -> float | None:
        return self.deviation.get("ode_hr")

    @property
    def deviation_linearized(self) -> float | None:
        return self.deviation.get("linearized")

    def to_json(self) -> dict:
        out = {
            "run_id": self.run_id,
            **self.values,
            "lambda_min": self.lambda_min,
            "lambda_max": self.lambda_max,
        }
        out.update({column: getattr(self, field) for column, field in SUMMARY_COLUMNS})
        out.update({f"deviation.{k}": self.deviation.get(k) for k in DEVIATION_COLUMNS})
        out.update({f"deviation.{k}": v for k, v in self.deviation.items() if k not in DEVIATION_COLUMNS})
        out["kernel_drift"] = self.kernel_drift
        out.update({f"accuracy.{k}": v for k, v in self.accuracy.items()})
        return out

    @classmethod
    def from_json(cls, row: Mapping, axes: Iterable[str]) -> SweepRow:
        """From a summary.csv row (text cells are parsed: '' -> None, numbers, True/False); ``axes``
        are the swept columns. Columns it does not know are ignored."""
        row = {k: _parse_cell(v) for k, v in row.items()}
        axes = list(axes)
        fields: dict[str, Any] = {field: row.get(column) for column, field in SUMMARY_COLUMNS}
        return cls(
            run_id=str(row["run_id"]),
            values={a: row.get(a) for a in axes},
            lambda_min=row.get("lambda_min"),
            lambda_max=row.get("lambda_max"),
            **{**fields, "label": str(fields["label"])},
            deviation={k.split(".", 1)[1]: v for k, v in row.items() if k.startswith("deviation.")},
            kernel_drift=row.get("kernel_drift"),
            accuracy={k.split(".", 1)[1]: v for k, v in row.items() if k.startswith("accuracy.")},
        )

    @classmethod
    def from_result(
        cls, run_id: str, values: Mapping[str, Any], spectrum: Spectrum | None, result: OptimizerResult
    ) -> SweepRow:
        f, p, d = result.fitted, result.predicted, result.deviation
        deviation = {k: v for k, v in d.values.items() if k != "grad_norm_sq"} if d is not None else {}
        return cls(
            run_id=run_id,
            values=dict(values),
            lambda_min=None if spectrum is None else spectrum.lambda_min,
            lambda_max=None if spectrum is None else spectrum.lambda_max,
            label=result.label,
            optimizer=result.optimizer,
            eta=result.eta,
            beta=result.beta,
            r=result.r,
            status=result.status,
            verdict=result.verdict,
            diverged_at=result.diverged_at,
            fitted_linear_rate=None if f is None else f.linear_rate,
            fitted_r2_linear=None if f is None else f.r2_linear,
            fitted_power_exponent=None if f is None else f.power_exponent,
            fitted_r2_power=None if f is None else f.r2_power,
            predicted_linear_rate=None if p is None else p.linear_rate,
            predicted_stable=None if p is None else p.stable,
            predicted_crossover_step=None if p is None else p.crossover_step,
            deviation={k: deviation.get(k) for k in DEVIATION_COLUMNS} | deviation,
            kernel_drift=result.kernel_drift,
            accuracy=(
                {}
                if result.accuracy is None
                else {"final": result.accuracy.final, **dict(result.accuracy.predicted_final)}
            ),
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

    def summary(self, pandas: bool | None = None):
        """summary.csv as a table: one row per (run, optimizer), the columns of summary.csv in its order
        (run_id, the swept axes, lambda_min, lambda_max, ``SUMMARY_COLUMNS``, the deviations). A pandas
        DataFrame when pandas is installed (``pandas=None``) or asked for; else a dict of columns."""
        docs = [row.to_json() for row in self.rows]
        columns: list[str] = []
        for doc in docs:
            columns += [c for c in doc if c not in columns]
        return _as_frame({c: [doc.get(c) for doc in docs] for c in columns}, pandas)

    def describe(self) -> str:
        name = self.config.get("name", "sweep")
        return f"sweep '{name}': {len(self.runs)} runs over {' x '.join(self.axes)}; " + describe_config(
            {k: v for k, v in self.config.items() if k != "sweep"}, with_name=False
        )
