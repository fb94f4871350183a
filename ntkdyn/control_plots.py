"""Figures of the control section (matplotlib only here) and its I/O edge (``run_section``)."""

from __future__ import annotations

import math
import os

import numpy as np

from ntkdyn import control, control_maps, results


def run_section(cfg, setup, trained_results, trajectories: dict, out: str, say=print) -> str:
    """Compute the control section (``trained_results``: label -> ``results.OptimizerResult``),
    write ``control.json`` (first) and the figures; returns the side-by-side table
    (``control_maps.summary_table``)."""
    report, data = control_maps.compute(cfg, setup, trained_results, trajectories, say)
    results.write_json(os.path.join(out, "control.json"), report)
    figures(report, data, cfg.control, out)
    return control_maps.summary_table(report)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(n: int, width: float = 3.6, height: float = 3.3):
    plt = _plt()
    cols = min(n, 4)
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return plt, fig, axes.ravel()


def _unit_circle(ax):
    th = np.linspace(0, 2 * np.pi, 400)
    ax.plot(np.cos(th), np.sin(th), "k-", lw=0.6, alpha=0.6)
    ax.axhline(0, color="k", lw=0.3)
    ax.axvline(0, color="k", lw=0.3)
    ax.set_aspect("equal")


def figures(report: dict, data: dict, cc, out: str) -> list[str]:
    """Write every control figure; returns the paths written."""
    paths = []
    labels = list(report["optimizers"])
    if labels:
        paths.append(pole_zero(report, os.path.join(out, "pole_zero.png")))
        paths.append(step_responses(data, cc, os.path.join(out, "step_response.png")))
        paths.append(root_loci(data, cc, os.path.join(out, "root_locus.png")))
    if data.get("maps"):
        paths.append(maps(data["maps"], os.path.join(out, "control_map.png")))
    tails = [lab for lab, e in report["optimizers"].items() if "tail" in e]
    if tails or data.get("ode_sweep"):
        paths.append(highres(report, data, os.path.join(out, "highres.png")))
    return paths


def pole_zero(report: dict, path: str) -> str:
    """Poles (x, coloured by log lambda) and zeros (o) of every mode, per optimizer, in the z-plane."""
    plt, fig, axes = _grid(len(report["optimizers"]))
    lam = np.array([m["lambda"] for m in next(iter(report["optimizers"].values()))["modes"]])
    norm = plt.Normalize(np.log10(max(lam.min(), 1e-300)), np.log10(max(lam.max(), 1e-300)))
    for ax, (label, e) in zip(axes, report["optimizers"].items()):
        _unit_circle(ax)
        for m in e["modes"]:
            colour = plt.cm.viridis(norm(np.log10(max(m["lambda"], 1e-300))))
            p = np.array(m["poles"]).reshape(-1, 2)
            ax.plot(p[:, 0], p[:, 1], "x", color=colour, ms=5)
            z = np.array(m["zeros"]).reshape(-1, 2)
            if z.size:
                ax.plot(z[:, 0], z[:, 1], "o", mfc="none", color=colour, ms=6)
        ax.set_title(
            f"{label}: rho={e['spectral_radius']:.4f}" + ("" if e["stable"] else " UNSTABLE"), fontsize=9
        )
        ax.set_xlim(-1.3, 1.3)
        ax.set_ylim(-1.3, 1.3)
    fig.suptitle(
        "poles (x) and zeros (o) of G(z) = U/Y per NTK eigenmode (colour: log10 lambda)", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def step_responses(data: dict, cc, path: str) -> str:
    """Unit-step response s_k = 1 - e_k/e_0 of the lambda_min, median and lambda_max modes."""
    opts = data["optimizers"]
    plt, fig, axes = _grid(len(opts))
    lam = data["lam"]
    pick = np.unique([0, lam.size // 2, lam.size - 1])
    for ax, (label, d) in zip(axes, opts.items()):
        s = control.step_response(d["spec"], d["hyper"], lam[pick], cc.step_steps)
        k = np.arange(cc.step_steps + 1)
        for j, i in enumerate(pick):
            ok = np.isfinite(s[:, j]) & (np.abs(s[:, j]) < 1e3)
            ax.plot(k[ok], s[ok, j], lw=1, label=f"lambda={lam[i]:.3g}")
        ax.axhspan(1 - cc.band, 1 + cc.band, color="g", alpha=0.15)
        ax.axhline(1, color="k", lw=0.5)
        ax.set_ylim(-0.5, 2.0)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("iteration k")
        ax.legend(fontsize=6)
    fig.suptitle(f"step response per mode (target step; band +-{cc.band:g})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def root_loci(data: dict, cc, path: str) -> str:
    """Poles of the lambda_min (blue) and lambda_max (red) modes as beta (or eta) varies; the
    configured point is marked with a large symbol."""
    opts = data["optimizers"]
    plt, fig, axes = _grid(len(opts))
    lam = data["lam"]
    ends = np.array([lam[0], lam[-1]])
    for ax, (label, d) in zip(axes, opts.items()):
        spec, hyper = d["spec"], d["hyper"]
        _unit_circle(ax)
        key = "beta" if (cc.locus == "beta" and "beta" in hyper) else "eta"
        if key == "beta":
            values = np.linspace(0.0, 0.999, cc.locus_points)
        else:
            limit = control.stability_limit(spec, hyper, float(lam[-1]), "eta")
            top = 1.25 * limit if limit else 10 * hyper["eta"]
            values = np.linspace(top / cc.locus_points, top, cc.locus_points)
        P = control.root_locus(spec, hyper, ends, key, values)
        for j, colour in ((0, "tab:blue"), (1, "tab:red")):
            pts = P[:, j, :].ravel()
            ax.scatter(pts.real, pts.imag, s=2, color=colour, alpha=0.5)
            here = control.poles(control.state_space(spec, hyper, ends[j : j + 1]))[0]
            ax.plot(
                here.real,
                here.imag,
                "*",
                color=colour,
                ms=11,
                mec="k",
                label=f"{'lambda_min' if j == 0 else 'lambda_max'}={ends[j]:.3g}",
            )
        lim = max(1.3, float(np.nanmax(np.abs(P[np.isfinite(P)]))) if np.isfinite(P).any() else 1.3)
        lim = min(lim, 3.0)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_title(f"{label}: {key} varies (* = configured)", fontsize=9)
        ax.legend(fontsize=6, loc="lower left")
    fig.suptitle("root locus in the z-plane", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def maps(maps_data: dict, path: str) -> str:
    """Per map optimizer: predicted loss rate over (eta, beta) with the predicted stability boundary
    (white line), the cells where the training loss grew above L_0 and recovered (orange: the
    network left the kernel regime, catapult) and where training diverged (red x); right: the rate
    fitted on training over the same grid, with the same boundary."""
    plt = _plt()
    n = len(maps_data)
    fig, axes = plt.subplots(n, 2, figsize=(11, 4.2 * n), squeeze=False)
    for row, (name, d) in zip(axes, maps_data.items()):
        x = np.log10(np.asarray(d["etas"]))
        betas = np.asarray(d["betas"])
        dx = x[1] - x[0]
        first = control.first_unstable(~np.asarray(d["stable"]))
        xb = x[0] - 0.5 * dx + first * dx  # between the last stable and the first unstable cell
        for ax, field, title in (
            (row[0], "rate", "predicted loss rate max rho^2"),
            (row[1], "obs_rate", "fitted loss rate (training)"),
        ):
            if field not in d:
                ax.set_visible(False)
                continue
            Z = np.asarray(d[field], np.float64)
            Z = np.where(Z < 1, Z, np.nan)
            im = ax.pcolormesh(x, betas, np.log10(np.maximum(1 - Z, 1e-16)), shading="nearest", cmap="magma")
            fig.colorbar(im, ax=ax, label="log10(1 - rate)")
            ax.step(xb, betas, where="mid", color="w", lw=2, label="predicted stability boundary")
            if "grew" in d:
                jj, ii = np.nonzero(d["grew"] & ~d["diverged"])
                ax.plot(x[ii], betas[jj], "o", color="tab:orange", ms=4, label="loss grew, then recovered")
                jj, ii = np.nonzero(d["diverged"])
                ax.plot(x[ii], betas[jj], "x", color="r", ms=5, label="training diverged")
            ax.set_xlabel("log10 eta")
            ax.set_ylabel("beta")
            ax.set_title(f"{name}: {title}", fontsize=9)
            ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def highres(report: dict, data: dict, path: str) -> str:
    """Left: a vanishing-damping run (NAG-C/OGM) on log-log axes: training, kernel recurrence,
    low-resolution (Bessel) ODE and high-resolution ODE, with the predicted and measured crossover
    steps. Right: mean log10 gap of each prediction to training across the eta sweep."""
    plt = _plt()
    tails = [lab for lab, e in report["optimizers"].items() if "tail" in e]
    sweep = data.get("ode_sweep")
    ncol = len(tails) + (1 if sweep else 0)
    fig, axes = plt.subplots(1, max(ncol, 1), figsize=(6 * max(ncol, 1), 4.5), squeeze=False)
    axes = axes.ravel()
    for ax, label in zip(axes, tails):
        d = data["optimizers"][label]
        k = np.maximum(np.asarray(d["step"], float), 1)
        for key, style, name in (
            ("loss", "-", "training"),
            ("loss_discrete", "--", "kernel recurrence"),
            ("loss_ode_low", ":", "low-res ODE"),
            ("loss_ode_high", "-.", "high-res ODE"),
        ):
            y = d.get(key)
            if y is None:
                continue
            y = np.asarray(y)
            ok = np.isfinite(y) & (y > 0)
            ax.plot(k[ok], y[ok], style, lw=1, label=name)
        tail = report["optimizers"][label]["tail"]
        ks = tail["predicted"].get("crossover_step")
        if ks:
            ax.axvline(ks, color="k", ls="--", lw=0.8, label=f"predicted crossover {ks:.0f}")
        meas = (tail.get("measured") or {}).get("crossover_step")
        if meas:
            ax.axvline(meas, color="r", ls=":", lw=1, label=f"measured crossover {meas:.0f}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("iteration k")
        ax.set_ylabel("loss")
        ax.set_title(f"{label}: power-law transient, then linear tail", fontsize=9)
        ax.legend(fontsize=7)
    if sweep:
        ax = axes[len(tails)]
        rows = report["ode_sweep"]["rows"]
        etas = [r["eta"] for r in rows]
        for key, marker, name in (
            ("discrete_log10_gap", "s", "kernel recurrence"),
            ("low_log10_gap", "o", "low-res ODE"),
            ("high_log10_gap", "^", "high-res ODE"),
        ):
            ys = [r.get(key) for r in rows]
            if any(v is not None for v in ys):
                ax.plot(etas, [np.nan if v is None else v for v in ys], marker + "-", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("eta")
        ax.set_ylabel("mean |log10 L_pred - log10 L_train|")
        ax.set_title(
            f"{report['ode_sweep']['optimizer']}: which ODE matches training as eta shrinks "
            f"(ODE time {report['ode_sweep']['ode_time']:g})",
            fontsize=9,
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
