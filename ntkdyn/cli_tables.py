"""The command line's tables: a run's summary table (one row per optimizer: verdict, fits, the
compared faces' deviations and log gaps, held-out and accuracy columns where a run has them) and a
sweep's table (one row per run and optimizer). Text only; ``ntkdyn.run`` prints them."""

from __future__ import annotations

from collections.abc import Callable

from ntkdyn import results


def fmt(x, spec=".4g") -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


def _beta_or_r(o: results.OptimizerResult):
    return o.beta if o.beta is not None else (f"r={o.r:g}" if o.r is not None else None)


def _fit_cells(o: results.OptimizerResult) -> list[str]:
    """verdict, margin, window, kernel/ODE verdicts, local rate, local exponent."""
    fit = o.fitted or results.Fitted(None, None, None, None, None)
    verdict = (o.verdict or "-") + (" (L-L*)" if fit.fitted_on == "L - L*" else "")
    win = fit.window
    tv = o.theory_verdicts
    return [
        verdict,
        fmt(fit.margin, "+.2f"),
        f"{win[0]:g}-{win[1]:g}" if win and win[1] else "-",
        "/".join(tv.get(k, "-") for k in ("discrete", "ode")) if tv else "-",
        fmt(fit.local_linear_rate, ".6f"),
        fmt(fit.local_power_exponent, ".3f"),
    ]


def _theory_cells(o: results.OptimizerResult) -> list[str]:
    """predicted rate, and the window's position against theory's horizon (k* crossover, k_s)."""
    reg = o.regime
    horizon = "-"
    if reg is not None and reg.horizon is not None:
        name = "k*" if reg.horizon_kind == "crossover" else "k_s"
        horizon = f"{reg.window_position or ''} {name}={reg.horizon:.4g}".strip()
    return [fmt(o.predicted.linear_rate if o.predicted else None, ".6f"), horizon]


def _compared(run: results.RunResult) -> list[str]:
    """The compared predictions shown: every face's compared name (``faces.FACES`` order) and any
    other name a result holds (a face registered when it was written); a face's column only where
    some optimizer has its deviation (or its prediction diverged), the recurrence's always."""
    from ntkdyn.pipeline import faces

    names = faces.compared_names()
    for o in run.optimizers.values():
        names += [
            k for k in (o.deviation.values if o.deviation else {}) if k not in names and k != "grad_norm_sq"
        ]

    def shown(name: str) -> bool:  # the recurrence always; another face where some optimizer has it
        return name == "discrete" or any(
            (o.deviation is not None and o.deviation.get(name) is not None) or name in o.predictions_diverged
            for o in run.optimizers.values()
        )

    return [name for name in names if shown(name)]


def _held_out_names(run: results.RunResult) -> list[str]:
    names: list[str] = []
    for o in run.optimizers.values():
        names += [k for k in (o.test.deviation if o.test else {}) if k not in names]
    return names


def _deviation_cells(o: results.OptimizerResult, compared: list[str], held_out: list[str]) -> list[str]:
    """max relative gap of each compared prediction (and of each held-out prediction); log10 gap
    (discrete)."""
    dev = o.deviation or results.Deviation()
    gap = o.deviation_log10.get("discrete")
    test = o.test.deviation if o.test else {}
    gone = o.predictions_diverged
    return [
        *(f"diverges@{gone[name]}" if name in gone else fmt(dev.get(name), ".3g") for name in compared),
        *(fmt(test.get(name), ".3g") for name in held_out),
        f"{fmt(gap.max, '.2g')}/{fmt(gap.mean, '.2g')}" if gap else "-",
    ]


def _accuracy_columns(run: results.RunResult) -> list[tuple[str, Callable[[results.OptimizerResult], str]]]:
    """Classification targets: the final accuracy of training and of its first prediction
    (``acc train/pred``: discrete, else ode, else the linearised network), and the same on the
    held-out set (``held-out acc``) where there is one; none otherwise."""
    accs = [o.accuracy for o in run.optimizers.values() if o.accuracy is not None]
    if not accs:
        return []

    def pair(final, predicted) -> str:
        first = next(
            (predicted[n] for n in ("discrete", "ode", "linearized") if n in (predicted or {})), None
        )
        return f"{fmt(final, '.3f')}/{fmt(first, '.3f')}"

    cols: list[tuple[str, Callable[[results.OptimizerResult], str]]] = [
        (
            "acc train/pred",
            lambda o: "-" if o.accuracy is None else pair(o.accuracy.final, o.accuracy.predicted_final),
        )
    ]
    if any(a.held_out_final is not None for a in accs):
        cols.append(
            (
                "held-out acc",
                lambda o: (
                    "-"
                    if o.accuracy is None
                    else pair(o.accuracy.held_out_final, o.accuracy.held_out_predicted_final)
                ),
            )
        )
    return cols


def summary_table(run: results.RunResult) -> str:
    """One row per optimizer (docs/verdicts.md): verdict (on L - L* where marked) and its
    margin over the fitted steps; local (envelope) rate and exponent; theory's asymptotic loss factor
    and where the window lies relative to its horizon (k* crossover, k_s slowest-mode time);
    deviations: max relative gap of each face's prediction (``dev <name>``) and of each held-out
    prediction (``held-out <name>``), max/mean log10 gap of the recurrence."""
    compared, held_out = _compared(run), _held_out_names(run)
    head = [
        "label",
        "optimizer",
        "eta",
        "beta/r",
        "status",
        "verdict",
        "margin",
        "window",
        "kernel/ODE verdicts",
        "local rate",
        "local exp",
        "predicted rate",
        "window vs horizon",
        *(f"dev {name}" for name in compared),
        *(f"held-out {name}" for name in held_out),
        "log10 gap disc",
        "drift",
    ]
    acc = _accuracy_columns(run)
    head += [title for title, _ in acc]
    rows = [head]
    for label, o in run.optimizers.items():
        rows.append(
            [
                label,
                o.optimizer,
                fmt(o.eta),
                fmt(_beta_or_r(o)),
                o.status,
                *_fit_cells(o),
                *_theory_cells(o),
                *_deviation_cells(o, compared, held_out),
                fmt(o.kernel_drift, ".3g"),
                *(cell(o) for _, cell in acc),
            ]
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def sweep_table(rows: list[dict], axes: list[str], limit: int = 40) -> str:
    head = [
        "run_id",
        "label",
        *axes,
        "verdict",
        "fitted.linear_rate",
        "predicted.linear_rate",
        "deviation.discrete",
    ]
    lines = [[str(h) for h in head]]
    for row in rows[:limit]:
        lines.append(
            [fmt(row.get(h), ".6g") if isinstance(row.get(h), float) else str(row.get(h, "-")) for h in head]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines)
    return text + (f"\n... {len(rows) - limit} more rows in summary.csv" if len(rows) > limit else "")
