"""Figures. Matplotlib only here; inputs are the arrays a run writes."""
from __future__ import annotations

import numpy as np


def loss_figure(trajectories: dict[str, dict[str, np.ndarray]], metrics: dict, path: str) -> None:
    """loss.png: log-y (left) and log-log (right); empirical solid, discrete dashed, ODE dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, arr) in enumerate(trajectories.items()):
        colour = colours[i % len(colours)]
        m = metrics.get(label, {})
        step, loss = arr["step"], arr["loss"]
        ok = np.isfinite(loss) & (loss > 0)
        for ax in axes:
            x = step if ax is axes[0] else np.maximum(step, 1)
            ax.plot(x[ok], loss[ok], "-", color=colour, label=f"{label}: {m.get('verdict', '?')}")
            for key, style, name in (("loss_discrete", "--", "kernel recurrence"), ("loss_ode", ":", "ODE")):
                if key in arr:
                    pred = arr[key]
                    shown = np.isfinite(pred) & (pred > 0) & (pred < 1e30)
                    ax.plot(x[shown], pred[shown], style, color=colour, alpha=0.8, label=f"{label} {name}")
            if m.get("diverged_at") is not None and ok.any():
                ax.plot(x[ok][-1], loss[ok][-1], "x", color=colour, markersize=10)
    axes[0].set_yscale("log")
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    for ax, title in zip(axes, ("log-y: straight = linear rate", "log-log: straight = power law")):
        ax.set_xlabel("iteration k")
        ax.set_ylabel("training loss")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    finite = [a["loss"][np.isfinite(a["loss"]) & (a["loss"] > 0)] for a in trajectories.values()]
    finite = np.concatenate(finite) if finite else np.array([1.0])
    if finite.size:
        for ax in axes:
            ax.set_ylim(max(finite.min() * 0.3, finite.max() * 1e-14), finite.max() * 3)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
