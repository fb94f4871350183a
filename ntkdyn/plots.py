"""Figures. Matplotlib only here; inputs are typed results (``ntkdyn.results``) or the arrays a
run writes. The format follows the file extension (``FORMATS``); every figure is written with the
data behind it beside it: ``<name>.csv`` (the plotted series, one row per point).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from ntkdyn import results

FORMATS = ("png", "svg", "pdf")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_format(path: str) -> str:
    """The format of ``path`` from its extension; ValueError unless one of ``FORMATS``."""
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    if ext not in FORMATS:
        raise ValueError(f"figure {path}: format {ext!r} is not allowed; allowed: {', '.join(FORMATS)}")
    return ext


def data_path(path: str) -> str:
    """Where the data behind the figure at ``path`` is written: the same name with .csv."""
    return os.path.splitext(path)[0] + ".csv"


def plot_loss(run: results.RunResult, path: str) -> str:
    """The loss figure of a run (``loss_figure``) at ``path`` (.png, .svg or .pdf), and its data
    (``data_path``). Returns ``path``."""
    loss_figure({label: o.trajectory for label, o in run.optimizers.items()}, run.optimizers, path)
    return path


def loss_figure(
    trajectories: Mapping[str, Mapping[str, np.ndarray]],
    metrics: Mapping[str, results.OptimizerResult | Mapping],
    path: str,
) -> None:
    """Loss vs iteration, log-y (left) and log-log (right): training solid, then every series of
    every theory face (``faces.FACES``' ``series``: kernel recurrence dashed, ODE dotted,
    high-resolution ODE dash-dot, linearised network dense dash-dot, quadratic model dash-dot-dot,
    the mini-batch mean's 95 % band shaded; a held-out loss faded and thick) in the optimizer's
    colour; x at a diverged run's last finite loss. The data file holds exactly the drawn series
    (step, loss and each face's key).

    Args:
        trajectories: label -> arrays (``step``, ``loss``, ``loss_discrete``, ...).
        metrics: label -> ``OptimizerResult`` (or its metrics.json entry) for the verdict in the legend.
        path: the figure file; its extension sets the format. The data goes to ``data_path(path)``.
    """
    from ntkdyn.pipeline import faces

    fmt = figure_format(path)
    typed = {
        label: m if isinstance(m, results.OptimizerResult) else results.OptimizerResult.from_json(label, m)
        for label, m in metrics.items()
    }
    series = faces.drawn_series()
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn: dict[str, dict[str, np.ndarray]] = {}
    for i, (label, arr) in enumerate(trajectories.items()):
        colour = colours[i % len(colours)]
        m = typed.get(label)
        step, loss = arr["step"], arr["loss"]
        drawn[label] = {"step": step, "loss": loss}
        ok = np.isfinite(loss) & (loss > 0)
        for ax in axes:
            x = step if ax is axes[0] else np.maximum(step, 1)
            ax.plot(x[ok], loss[ok], "-", color=colour, label=f"{label}: {(m and m.verdict) or '?'}")
            for s in series:
                if s.key not in arr or np.shape(arr[s.key]) != np.shape(step):
                    continue
                y = np.asarray(arr[s.key], np.float64)
                drawn[label][s.key] = y
                shown = np.isfinite(y) & (y > 0) & (y < 1e30)
                if s.kind == "band_hi":
                    continue  # drawn with its band_lo
                if s.kind == "band_lo":
                    hi_key = s.key[: -len("lo")] + "hi"
                    hi = np.asarray(arr.get(hi_key, y), np.float64)
                    both = shown & np.isfinite(hi) & (hi > 0)
                    ax.fill_between(x[both], y[both], hi[both], color=colour, alpha=0.2, lw=0,
                                    label=f"{label} {s.name}")  # fmt: skip
                elif s.kind == "held_out":
                    ax.plot(
                        x[shown],
                        y[shown],
                        linestyle=s.style,
                        color=colour,
                        alpha=0.35,
                        lw=3,
                        label=f"{label} {s.name}",
                    )
                else:
                    ax.plot(
                        x[shown],
                        y[shown],
                        linestyle=s.style,
                        color=colour,
                        alpha=0.8,
                        label=f"{label} {s.name}",
                    )
            if m is not None and m.diverged_at is not None and ok.any():
                ax.plot(x[ok][-1], loss[ok][-1], "x", color=colour, markersize=10)
    axes[0].set_yscale("log")
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    for ax, title in zip(axes, ("log-y: straight = linear rate", "log-log: straight = power law")):
        ax.set_xlabel("iteration k")
        ax.set_ylabel(
            "loss (held-out: faded)"
            if any("test_loss" in a for a in trajectories.values())
            else "training loss"
        )
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    positive = [
        a[k][np.isfinite(a[k]) & (a[k] > 0)]
        for a in trajectories.values()
        for k in ("loss", "test_loss")
        if k in a
    ]
    finite = np.concatenate(positive) if positive else np.array([1.0])
    if finite.size:
        for ax in axes:
            ax.set_ylim(max(finite.min() * 0.3, finite.max() * 1e-14), finite.max() * 3)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format=fmt)
    plt.close(fig)
    columns = {
        k: v
        for k, v in results.long_table(
            [("", label, arr) for label, arr in drawn.items()], pandas=False
        ).items()
        if k != "run_id"
    }
    results.write_csv(data_path(path), columns)


def accuracy_figure(trajectories: Mapping[str, Mapping[str, np.ndarray]], path: str) -> bool:
    """Accuracy against iteration for classification targets (``results.Accuracy``): training's
    (solid) and each prediction's ``accuracy_<name>`` (discrete dashed, ode dotted, linearised network
    dash-dot) at ``accuracy_steps``, in the optimizer's colour; with a held-out set a second panel,
    the same for ``test_accuracy`` and ``test_accuracy_<name>``. The data beside it (``data_path``;
    column ``set``: train or held_out). Returns False (nothing written) when no trajectory has an
    accuracy."""
    if not any("accuracy" in a for a in trajectories.values()):
        return False
    styles = {"discrete": "--", "ode": ":", "ode_hr": "-.", "linearized": (0, (5, 1, 1, 1))}
    held = any("test_accuracy" in a for a in trajectories.values())
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2 if held else 1, figsize=(12 if held else 7, 4.5), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    columns: dict[str, list] = {"label": [], "set": [], "series": [], "step": [], "accuracy": []}
    panels = [("accuracy", "train", "training accuracy")]
    if held:
        panels.append(("test_accuracy", "held_out", "held-out accuracy"))
    for ax, (base, which, title) in zip(axes[0], panels):
        for i, (label, arr) in enumerate(trajectories.items()):
            if base not in arr:
                continue
            colour, steps = colours[i % len(colours)], np.asarray(arr["accuracy_steps"])
            keys = [base] + [f"{base}_{n}" for n in styles if f"{base}_{n}" in arr]
            for key in keys:
                name = key[len(base) + 1 :] if key != base else "training"
                y = np.asarray(arr[key], np.float64)
                ax.plot(steps, y, linestyle=styles.get(name, "-"), color=colour, label=f"{label} {name}")
                columns["label"] += [label] * y.size
                columns["set"] += [which] * y.size
                columns["series"] += [name] * y.size
                columns["step"] += steps.tolist()
                columns["accuracy"] += y.tolist()
        ax.set_xlabel("iteration k")
        ax.set_ylabel(title)
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format=figure_format(path))
    plt.close(fig)
    results.write_csv(data_path(path), {k: np.asarray(v) for k, v in columns.items()})
    return True


def loss_outputs_figure(trajectories: Mapping[str, Mapping[str, np.ndarray]], path: str) -> bool:
    """The loss per output against iteration for k > 1 outputs (``loss_outputs`` of trajectories.npz,
    ``pipeline.faces.classification.per_output_loss``: per output column for squared losses, per class
    for softmax_ce; they sum to the loss): one panel per optimizer, one colour per output, training
    solid at ``accuracy_steps`` and the first prediction there is (discrete, else the linearised
    network) dashed. The data beside it (``data_path``: label, series, output, step, loss; every
    prediction). Returns False (nothing written) when no trajectory has per-output losses."""
    shown = {label: arr for label, arr in trajectories.items() if "loss_outputs" in arr}
    if not shown:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(shown), figsize=(4.5 * len(shown), 4.2), squeeze=False, sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    columns: dict[str, list] = {"label": [], "series": [], "output": [], "step": [], "loss": []}
    for ax, (label, arr) in zip(axes[0], shown.items()):
        steps = np.asarray(arr["accuracy_steps"])
        names = ["training"] + [k[len("loss_outputs_") :] for k in arr if k.startswith("loss_outputs_")]
        drawn = next((n for n in ("discrete", "linearized") if n in names), None)
        for name in names:
            key = "loss_outputs" if name == "training" else f"loss_outputs_{name}"
            L = np.asarray(arr[key], np.float64)  # (steps, k)
            for b in range(L.shape[1]):
                columns["label"] += [label] * steps.size
                columns["series"] += [name] * steps.size
                columns["output"] += [b] * steps.size
                columns["step"] += steps.tolist()
                columns["loss"] += L[:, b].tolist()
                if name in ("training", drawn):
                    ok = np.isfinite(L[:, b]) & (L[:, b] > 0)
                    ax.plot(
                        steps[ok], L[ok, b], "-" if name == "training" else "--",
                        color=colours[b % len(colours)], lw=1.2,
                        label=(f"output {b}" if name == "training" else None),
                    )  # fmt: skip
        ax.set_yscale("log")
        ax.set_title(f"{label}: solid training" + (f", dashed {drawn}" if drawn else ""), fontsize=9)
        ax.set_xlabel("iteration k")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("loss per output (sums to the loss)")
    axes[0][-1].legend(fontsize=6, loc="upper right", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format=figure_format(path))
    plt.close(fig)
    results.write_csv(data_path(path), {k: np.asarray(v) for k, v in columns.items()})
    return True


def _finish_steps_figure(plt, fig, axes, path: str, fmt: str) -> None:
    """Panels over the iteration k (x label, grid, legend), laid out, written to ``path``, closed."""
    for ax in axes:
        ax.set_xlabel("iteration k")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format=fmt)
    plt.close(fig)


def _rate_exponent(q):
    """-log q: the per-iteration log-rate (bigger is faster); NaN where undefined."""
    q = np.asarray([np.nan if v is None or v == "" else float(v) for v in q])
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.log(q)


def plot_sweep(sweep: results.SweepResult, path: str) -> str:
    """The sweep figure (``sweep_figure``) of a loaded sweep at ``path``, with its data. Returns ``path``."""
    sweep_figure([r.to_json() for r in sweep.rows], list(sweep.axes), path)
    return path


def sweep_figure(rows: list[dict], axes: list[str], path: str) -> None:
    """Fitted vs predicted log-rate; log-rate vs the first of eta/beta/r swept (mean over other
    axes, with min-max spread); deviation and kernel drift vs width.

    Args:
        rows: summary.csv rows (``SweepRow.to_json()``).
        axes: the swept columns.
        path: the figure file (.png, .svg or .pdf); the rows plotted, with the log-rates, go to
            ``data_path(path)``.
    """
    fmt = figure_format(path)
    plt = _pyplot()
    labels = list(dict.fromkeys(r["label"] for r in rows))
    hyper_axis = next((a for a in axes if a.split(".")[-1] in ("eta", "beta", "r")), None)
    width_axis = next((a for a in axes if a in ("width", "model.width")), None)
    panels = 1 + (hyper_axis is not None) + (width_axis is not None)
    fig, axs = plt.subplots(1, panels, figsize=(5.5 * panels, 4.5), squeeze=False)
    axs = axs[0]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ax = axs[0]
    for i, label in enumerate(labels):
        sel = [r for r in rows if r["label"] == label]
        ax.scatter(
            _rate_exponent([r["predicted.linear_rate"] for r in sel]),
            _rate_exponent([r["fitted.linear_rate"] for r in sel]),
            s=14,
            color=colours[i % 10],
            label=label,
        )
    lims = [v for line in ax.collections for v in np.ravel(line.get_offsets()) if np.isfinite(v) and v > 0]
    if lims:
        lo, hi = min(lims) / 2, max(lims) * 2
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="fitted = predicted")
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("predicted -log(loss rate) per iteration")
    ax.set_ylabel("fitted -log(loss rate) per iteration")
    ax.set_title("rates: training vs kernel-regime theory")
    ax.legend(fontsize=7)
    k = 1
    for axis, ykeys, title in (
        (hyper_axis, ("fitted.linear_rate", "predicted.linear_rate"), "rate vs "),
        (width_axis, ("deviation.discrete", "kernel_drift"), "vs "),
    ):
        if axis is None:
            continue
        ax = axs[k]
        k += 1
        for i, label in enumerate(labels):
            sel = [r for r in rows if r["label"] == label]
            xs = sorted({float(r[axis]) for r in sel})
            for ykey, style in zip(ykeys, ("o-", "s--")):
                vals = [
                    [
                        (
                            _rate_exponent([r[ykey]])[0]
                            if "rate" in ykey
                            else (np.nan if r[ykey] in (None, "") else float(r[ykey]))
                        )
                        for r in sel
                        if float(r[axis]) == x
                    ]
                    for x in xs
                ]
                mean = [np.nanmean(v) if np.any(np.isfinite(v)) else np.nan for v in vals]
                lo = [np.nanmin(v) if np.any(np.isfinite(v)) else np.nan for v in vals]
                hi = [np.nanmax(v) if np.any(np.isfinite(v)) else np.nan for v in vals]
                ax.plot(xs, mean, style, color=colours[i % 10], label=f"{label} {ykey}")
                ax.fill_between(xs, lo, hi, color=colours[i % 10], alpha=0.15)
        if axis == width_axis:
            widths = np.asarray(sorted({float(r[axis]) for r in rows}))
            ref = [r for r in rows if r.get("deviation.discrete") not in (None, "")]
            if ref and widths.size:
                y0 = float(
                    np.nanmedian([float(r["deviation.discrete"]) for r in ref if float(r[axis]) == widths[0]])
                )
                ax.plot(widths, y0 * np.sqrt(widths[0] / widths), "k:", label="1/sqrt(m) reference")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title("deviation from kernel regime and kernel drift vs width")
        else:
            ax.set_ylabel("-log(loss rate) per iteration")
            ax.set_title(title + axis)
            if axis.split(".")[-1] == "eta":
                ax.set_xscale("log")
        ax.set_xlabel(axis)
        ax.legend(fontsize=7)
    from matplotlib.ticker import NullFormatter

    for ax in axs:  # minor tick labels of short log axes overlap
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    fig.savefig(path, dpi=110, format=fmt)
    plt.close(fig)
    keys = [
        "run_id",
        "label",
        *axes,
        "fitted.linear_rate",
        "predicted.linear_rate",
        "deviation.discrete",
        "kernel_drift",
    ]
    columns = {k: [r.get(k) for r in rows] for k in keys}
    columns["fitted_log_rate"] = _rate_exponent(columns["fitted.linear_rate"])
    columns["predicted_log_rate"] = _rate_exponent(columns["predicted.linear_rate"])
    results.write_csv(data_path(path), columns)


def stability_limit(result: results.OptimizerResult) -> float | None:
    """The largest eta * lambda keeping the optimizer's kernel-regime recurrence stable on a mode
    lambda (``control.stability_limit`` at lambda = 1, the optimizer's other hyperparameters fixed;
    GD 2, HB 2 (1 + beta)); None for an optimizer without a recurrence or stable for every eta."""
    from ntkdyn import control, optimizers

    try:
        spec = control.get(result.optimizer)
        hyper = {
            k: v for k, v in (("eta", result.eta), ("beta", result.beta), ("r", result.r)) if v is not None
        }
        hyper = optimizers.resolve_hyper(spec, hyper) if isinstance(spec, optimizers.OptimizerSpec) else hyper
        return control.stability_limit(spec, hyper, 1.0, "eta")
    except (ValueError, KeyError, TypeError):  # no recurrence, or hyperparameters it cannot resolve
        return None


def sharpness_figure(run: results.RunResult, path: str) -> str:
    """lambda_max(K_k) at the recorded kernel steps (left) and eta * lambda_max(K_k) against each
    optimizer's stability limit (right, dashed), from ``RunResult.sharpness``; the data (with the
    limit as a column) goes to ``data_path(path)``. Returns ``path``."""
    fmt = figure_format(path)
    table = run.sharpness(pandas=False)
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    limits = np.full(table["label"].shape, np.nan)
    for i, label in enumerate(dict.fromkeys(table["label"])):
        rows = table["label"] == label
        colour = colours[i % len(colours)]
        limit = stability_limit(run.optimizers[label])
        axes[0].plot(table["step"][rows], table["lambda_max"][rows], "o-", color=colour, label=label)
        axes[1].plot(table["step"][rows], table["eta_lambda_max"][rows], "o-", color=colour, label=label)
        if limit is not None:
            limits[rows] = limit
            axes[1].axhline(limit, color=colour, ls="--", lw=1, label=f"{label} stability limit {limit:.3g}")
    axes[0].set_title("sharpness: largest eigenvalue of K_k = c H_k")
    axes[0].set_ylabel("lambda_max(K_k)")
    axes[1].set_title("eta * lambda_max(K_k) and the stability limit")
    axes[1].set_yscale("log")
    _finish_steps_figure(plt, fig, axes, path, fmt)
    columns = {k: v for k, v in table.items() if k != "run_id"}
    results.write_csv(data_path(path), {**columns, "stability_limit": limits})
    return path


def sharpness_path_figure(run: results.RunResult, path: str) -> str:
    """The sharpness recorded along training (train.sharpness_every; ``OptimizerResult.sharpness``):
    lambda_max of the full-batch loss Hessian (left) and of K = c H (right) at the recorded steps, with
    each optimizer's stability limit h*/eta_k drawn dashed (a horizontal line for a constant step, a
    line per step for a schedule). The data (one row per label and step) goes to ``data_path(path)``.
    Returns ``path``."""
    fmt = figure_format(path)
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    cols: dict[str, list] = {
        k: [] for k in ("label", "step", "hessian_lambda_max", "ntk_lambda_max", "limit")
    }
    nan = lambda vs: np.array([np.nan if v is None else v for v in vs], np.float64)  # noqa: E731
    for i, (label, o) in enumerate((k, o) for k, o in run.optimizers.items() if o.sharpness is not None):
        s, colour = o.sharpness, colours[i % len(colours)]
        assert s is not None
        steps = np.asarray(s.steps)
        limit = None if s.stability_limit is None else nan(s.stability_limit)
        for ax, values in zip(axes, (nan(s.hessian_lambda_max), nan(s.ntk_lambda_max))):
            ax.plot(steps, values, "o-", color=colour, label=label)
            if limit is not None and np.all(limit == limit[0]):
                ax.axhline(limit[0], color=colour, ls="--", lw=1, label=f"{label} limit {limit[0]:.3g}")
            elif limit is not None:
                ax.step(
                    steps, limit, where="post", color=colour, ls="--", lw=1, label=f"{label} limit h*/eta_k"
                )
        cols["label"] += [label] * steps.size
        cols["step"] += list(steps)
        cols["hessian_lambda_max"] += list(nan(s.hessian_lambda_max))
        cols["ntk_lambda_max"] += list(nan(s.ntk_lambda_max))
        cols["limit"] += list(limit if limit is not None else np.full(steps.size, np.nan))
    axes[0].set_title("lambda_max of the loss Hessian (full batch)")
    axes[1].set_title("lambda_max of K = c H")
    _finish_steps_figure(plt, fig, axes, path, fmt)
    results.write_csv(data_path(path), {k: np.asarray(v) for k, v in cols.items()})
    return path
