"""Deviation from the kernel regime vs width for the depth-3 MLP of ``configs/deep_mlp.yaml``.

    python experiments/deep_mlp_width.py [--widths 128 256 512 1024] [--steps 300] [--seeds 2] [--out DIR]

For each width and seed the network is trained once per optimizer (GD, HB, NAG-C) and compared
with the exact kernel-regime recurrences driven by two kernels: the analytic infinite-width NTK
(``Hinf``, ``ntkdyn.ntk.mlp_kernels``) and the empirical NTK at initialisation (``H0``). Written
to ``DIR`` (default ``results/deep_mlp_width``):

* ``deviation.csv``: width, seed, label, ``err_dev_Hinf``/``err_dev_H0`` = max_k ||e_k - e_pred_k|| /
  ||e_0|| over k = 0, 10, 20, ..., steps (the error vector, as in Du et al. and Lee et al. 2019), ``loss_dev_Hinf``/
  ``loss_dev_H0`` (the pipeline's ``deviation.discrete``: max relative loss gap), ``drift`` (||H_T - H_0|| /
  ||H_0||), ``h0_vs_hinf`` (||H_0 - H∞|| / ||H∞||);
* ``deviation.png``: the error deviation vs width (mean over seeds), log-log, with a m^(-1/2)
  reference slope; the fitted slopes are printed.

Uses only library functions (``ntkdyn.config``, ``ntkdyn.pipeline``, ``ntkdyn.theory``).
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from ntkdyn import config, optimizers, pipeline, rates, theory  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(HERE, os.pardir, "configs", "deep_mlp.yaml")


def predicted_errors(spec, hyper, lam, V, e0, c, steps):
    """Kernel-regime error vectors e_k (k = 0..steps) and losses for the kernel with eigenpairs (lam, V) of c H."""
    modes = theory.discrete_modes(spec, hyper, lam, V.T @ e0, steps)
    return modes @ V.T, theory.modal_loss(modes, c)


def run_width(width: int, seed: int, steps: int, every: int) -> list[dict]:
    overrides = [f"model.width={width}", f"seed={seed}", f"train.steps={steps}", "train.record_every=1",
                 f"train.error_at={list(range(0, steps + 1, every))}", f"train.kernel_at=[0, {steps}]",
                 "theory.kernel=Hinf", "theory.diffrax=false"]
    cfg = config.load(CONFIG, overrides)
    setup = pipeline.prepare(cfg)
    c = setup.c
    lam0, V0 = theory.eigen(c * setup.H0)
    h0_vs_hinf = float(np.linalg.norm(setup.H0 - setup.Hinf) / np.linalg.norm(setup.Hinf))
    rows = []
    for oc in cfg.optimizers:
        arrays, metrics = pipeline.run_optimizer(cfg, setup, oc)
        spec = optimizers.get(oc.name)
        hyper = optimizers.resolve_hyper(spec, oc.hyper())
        ks, errs = np.asarray(arrays["error_steps"]), np.asarray(arrays["errors"], np.float64)
        loss = np.asarray(arrays["loss"], np.float64)
        floor = pipeline.loss_floor(cfg.dtype, float(loss[0]))
        row = {"width": width, "seed": seed, "label": oc.label, "h0_vs_hinf": h0_vs_hinf,
               "drift": metrics["kernel_drift"]}
        for name, (lam, V) in (("Hinf", (setup.lam, setup.V)), ("H0", (lam0, V0))):
            e_pred, L_pred = predicted_errors(spec, hyper, lam, V, setup.e0, c, steps)
            gap = np.linalg.norm(errs - e_pred[ks], axis=1) / np.linalg.norm(setup.e0)
            row[f"err_dev_{name}"] = float(np.max(gap))
            L_pred = L_pred[np.asarray(arrays["step"])]
            mask = np.isfinite(loss) & (L_pred > floor) & (loss > floor)
            row[f"loss_dev_{name}"] = rates.max_relative_gap(L_pred, loss, mask)
        rows.append(row)
    return rows


def plot(rows: list[dict], path: str) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    widths = sorted({r["width"] for r in rows})
    labels = list(dict.fromkeys(r["label"] for r in rows))
    slopes = {}
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for i, label in enumerate(labels):
        for kernel, style in (("Hinf", "-o"), ("H0", "--s")):
            y = [np.mean([r[f"err_dev_{kernel}"] for r in rows if r["width"] == w and r["label"] == label]) for w in widths]
            ax.loglog(widths, y, style, color=f"C{i}", label=f"{label} vs {kernel}")
            if len(widths) > 1:
                slopes[f"{label}/{kernel}"] = float(np.polyfit(np.log(widths), np.log(y), 1)[0])
    y0 = np.mean([r["err_dev_Hinf"] for r in rows if r["width"] == widths[0]])
    ax.loglog(widths, y0 * np.sqrt(widths[0] / np.asarray(widths, float)), "k:", label=r"$\propto m^{-1/2}$")
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("width m")
    ax.set_ylabel(r"$\max_k \|e_k - e_k^{\rm kernel}\| / \|e_0\|$")
    ax.set_title("depth-3 ReLU MLP: deviation from the kernel regime")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return slopes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[128, 256, 512, 1024])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--every", type=int, default=10, help="error vectors compared every this many steps")
    ap.add_argument("--out", default=os.path.join("results", "deep_mlp_width"))
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for width in args.widths:
        for seed in range(args.seeds):
            t = time.perf_counter()
            new = run_width(width, seed, args.steps, args.every)
            rows += new
            print(f"width {width:>5} seed {seed}: " + ", ".join(
                f"{r['label']} {r['err_dev_Hinf']:.3g}/{r['err_dev_H0']:.3g}" for r in new)
                + f"  (err dev vs Hinf/H0; {time.perf_counter() - t:.1f} s)", flush=True)
    path = os.path.join(args.out, "deviation.csv")
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    slopes = plot(rows, os.path.join(args.out, "deviation.png"))
    print("fitted log-log slopes of the error deviation vs width: "
          + ", ".join(f"{k} {v:.2f}" for k, v in slopes.items()))
    print(f"wrote {path} and deviation.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
