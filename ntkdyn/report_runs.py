"""The report's blocks of a run (settings, spectrum, the table of verdicts, rates and each theory
face's deviation, the loss and sharpness figures) and of a sweep (verdict counts, summary rows,
its figure)."""

from __future__ import annotations

import os

from ntkdyn import results
from ntkdyn.report_blocks import Bullets, Details, Figure, Heading, Para, Table, _fmt


def _flat(prefix: str, value) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [kv for k, v in value.items() for kv in _flat(f"{prefix}.{k}" if prefix else str(k), v)]
    return [] if value is None else [(prefix, _fmt(value))]


def _hyper(o: results.OptimizerResult) -> str:
    if o.beta is not None:
        return f"beta={o.beta:g}"
    return f"r={o.r:g}" if o.r is not None else ""


def _compared_names(run: results.RunResult) -> list[str]:
    """The deviation columns: every face's compared name (``faces.FACES`` order) that some optimizer
    of ``run`` has, and any other name a result holds (a face registered when it was written)."""
    from ntkdyn.pipeline import faces

    held = [k for o in run.optimizers.values() for k in (o.deviation.values if o.deviation else {})]
    names = [n for n in faces.compared_names() if n in held or n in results.ALWAYS_COMPARED]
    return names + [k for k in dict.fromkeys(held) if k not in names and k != "grad_norm_sq"]


def run_blocks(run: results.RunResult, assets: str, figures: str, index: int) -> list:
    """Settings, spectrum, the per-optimizer table and the loss figure of one run."""
    blocks: list = [Heading(2, f"Run {run.run_id or run.config.get('name', '')}: {run.describe()}")]
    s = run.spectrum
    if s is not None:
        blocks.append(
            Para(
                [
                    ("", "Kernel K = c·"),
                    ("code", str(s.kernel or "H")),
                    (
                        "",
                        f" with c = {s.loss_scale:g}: "
                        f"λ_min = {s.lambda_min:.4g}, "
                        f"λ_max = {s.lambda_max:.4g}, "
                        f"κ = {_fmt(s.kappa)}.",
                    ),
                ]
            )
        )
    settings = [
        kv
        for key in ("seed", "dtype", "data", "model", "train", "theory", "rates")
        if key in run.config
        for kv in _flat(key, run.config[key])
    ]
    blocks.append(Details("Settings", [Table(["key", "value"], settings)]))
    compared = _compared_names(run)
    cols = [
        "label",
        "optimizer",
        "eta",
        "β / r",
        "status",
        "verdict",
        "kernel / ODE verdicts",
        "fitted rate",
        "power exponent",
        "predicted rate",
        "stable",
        *(f"dev. {name}" for name in compared),
        "kernel drift",
    ]
    rows = []
    for label, o in run.optimizers.items():
        f, p, d = o.fitted, o.predicted, o.deviation or results.Deviation()
        tv = "/".join(o.theory_verdicts.get(k, "-") for k in ("discrete", "ode")) if o.theory_verdicts else ""
        rows.append(
            [
                label,
                o.optimizer,
                _fmt(o.eta),
                _hyper(o),
                o.status,
                o.verdict or "",
                tv,
                _fmt(f and f.linear_rate),
                _fmt(f and f.power_exponent),
                _fmt(p and p.linear_rate),
                _fmt(p and p.stable),
                *(_fmt(d.get(name)) for name in compared),
                _fmt(o.kernel_drift),
            ]
        )
    blocks.append(Table(cols, rows))
    notes = [
        [("b", label), ("", f": {o.note or ''} {o.error or ''}".rstrip())]
        for label, o in run.optimizers.items()
        if o.note or o.error
    ]
    if notes:
        blocks.append(Bullets(notes))
    if any(o.trajectory for o in run.optimizers.values()):
        from ntkdyn import plots

        path = os.path.join(assets, f"run{index}_{_safe(run.run_id)}_loss.{figures}")
        plots.plot_loss(run, path)
        blocks.append(
            Figure(
                path,
                "Training loss (solid) and each theory face's prediction: kernel recurrence (dashed), "
                "ODE (dotted), high-resolution ODE (dash-dot), linearised network (dash-dot-dot), "
                "mini-batch band (shaded); log-y left, log-log right. Data: "
                f"{os.path.basename(plots.data_path(path))}.",
            )
        )
        path = os.path.join(assets, f"run{index}_{_safe(run.run_id)}_accuracy.{figures}")
        if plots.accuracy_figure({label: o.trajectory for label, o in run.optimizers.items()}, path):
            blocks.append(
                Figure(
                    path,
                    "Training accuracy (argmax against the class; one output: sign) and each "
                    "prediction's at the same steps: kernel recurrence (dashed), ODE (dotted), "
                    f"linearised network (dash-dot). Data: {os.path.basename(plots.data_path(path))}.",
                )
            )
        if any("kernels" in o.trajectory for o in run.optimizers.values()):
            path = os.path.join(assets, f"run{index}_{_safe(run.run_id)}_sharpness.{figures}")
            plots.sharpness_figure(run, path)
            blocks.append(
                Figure(
                    path,
                    "Sharpness: λ_max of K_k = c·H_k at the recorded kernel steps, and η·λ_max against each "
                    "optimizer's stability limit (dashed; above it the kernel-regime recurrence diverges). "
                    f"Data: {os.path.basename(plots.data_path(path))}.",
                )
            )
    blocks += sharpness_blocks(run, assets, figures, index)
    return blocks


def sharpness_blocks(run: results.RunResult, assets: str, figures: str, index: int) -> list:
    """With train.sharpness_every: a short section, per optimizer the initial, final and max
    lambda_max of the loss Hessian and of K = c H against the stability limit (max_k of
    lambda_max / limit_k: above 1 the step is past the edge), and the figure; [] without it."""
    have = {label: o.sharpness for label, o in run.optimizers.items() if o.sharpness is not None}
    if not have:
        return []
    from ntkdyn import plots

    rows = []
    for label, s in have.items():
        h, k = s.summary("hessian"), s.summary("ntk")
        rows.append(
            [
                label,
                _fmt(h["initial"]),
                _fmt(h["final"]),
                _fmt(h["max"]),
                _fmt(k["initial"]),
                _fmt(k["final"]),
                _fmt(k["max"]),
                _fmt(h["limit_initial"])
                + ("" if h["limit_final"] == h["limit_initial"] else f" → {_fmt(h['limit_final'])}"),
                _fmt(h["max_ratio"]),
                _fmt(all(s.converged)),
            ]
        )
    every = sorted({s.every for s in have.values()})
    path = os.path.join(assets, f"run{index}_{_safe(run.run_id)}_sharpness_path.{figures}")
    plots.sharpness_path_figure(run, path)
    return [
        Heading(3, "Sharpness along training"),
        Para(
            f"λ_max of the full-batch loss Hessian and of K = c·H every {', '.join(map(str, every))} steps "
            "(Lanczos, float64), against the stability limit h*/η of the optimizer's linear recurrence "
            "(GD 2/η, heavy ball 2(1+β)/η); max ratio = max over the steps of λ_max(Hess L)/limit."
        ),
        Table(
            [
                "label",
                "Hess initial",
                "Hess final",
                "Hess max",
                "K initial",
                "K final",
                "K max",
                "limit",
                "max ratio",
                "converged",
            ],
            rows,
        ),  # fmt: skip
        Figure(
            path,
            "λ_max of the loss Hessian (left) and of K = c·H (right) along training; dashed: the "
            f"stability limit. Data: {os.path.basename(plots.data_path(path))}.",
        ),
    ]


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in str(text))


# --------------------------------------------------------------------------- sweeps
def sweep_blocks(sweep: results.SweepResult, assets: str, figures: str, index: int, limit: int = 200) -> list:
    """Verdict counts per label, the summary rows and the sweep figure."""
    blocks: list = [Heading(2, f"Sweep: {sweep.describe()}")]
    counts: dict[str, dict[str, int]] = {}
    for r in sweep.rows:
        counts.setdefault(r.label, {})
        counts[r.label][r.verdict or r.status or "-"] = (
            counts[r.label].get(r.verdict or r.status or "-", 0) + 1
        )
    verdicts = sorted({v for c in counts.values() for v in c})
    blocks.append(
        Table(
            ["label", *verdicts], [[lab, *(str(c.get(v, 0)) for v in verdicts)] for lab, c in counts.items()]
        )
    )
    cols = [
        "run_id",
        "label",
        *sweep.axes,
        "status",
        "verdict",
        "fitted rate",
        "predicted rate",
        "dev. discrete",
        "kernel drift",
    ]
    rows = [
        [
            r.run_id,
            r.label,
            *(_fmt(r.values.get(a)) for a in sweep.axes),
            r.status or "",
            r.verdict or "",
            _fmt(r.fitted_linear_rate),
            _fmt(r.predicted_linear_rate),
            _fmt(r.deviation_discrete),
            _fmt(r.kernel_drift),
        ]
        for r in sweep.rows[:limit]
    ]
    more = f" (first {limit} of {len(sweep.rows)})" if len(sweep.rows) > limit else ""
    blocks.append(Details(f"Summary rows{more}", [Table(cols, rows)]))
    if sweep.rows:
        from ntkdyn import plots

        path = os.path.join(assets, f"sweep{index}_{_safe(sweep.config.get('name', 'sweep'))}.{figures}")
        plots.plot_sweep(sweep, path)
        blocks.append(
            Figure(
                path,
                "Fitted vs predicted log-rate per iteration; rate against the swept "
                "hyperparameter; deviation and kernel drift against width where swept. Data: "
                f"{os.path.basename(plots.data_path(path))}.",
            )
        )
    return blocks
