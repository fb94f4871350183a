"""Deviation from the kernel regime vs width for the depth-3 MLP of ``configs/deep_mlp.yaml``.

    python experiments/deep_mlp_width.py [--quick] [--seed 0] --out DIR

For each width, the seeds of one optimizer (GD, HB, NAG-C) train as one program
(``study.evaluate_group`` through ``_common.run_group``) and each run is compared with the exact
kernel-regime recurrences driven by two kernels: the analytic infinite-width NTK (``Hinf``,
``ntkdyn.ntk.mlp_kernels``) and the empirical NTK at initialisation (``H0``). Per run:
``err_dev`` = max_k ||e_k - e_pred_k|| / ||e_0|| over k = 0, every, 2 every, ..., steps (the error
vector, as in Du et al. and Lee et al. 2019), ``loss_dev`` (max relative loss gap over the steps
where both losses exceed the float floor), the kernel drift ||H_T - H_0|| / ||H_0|| and
||H_0 - H∞|| / ||H∞||. The claim: in NTK parameterisation the deviation shrinks like m^(-1/2)
(Lee et al. 2019); the fitted log-log slope of the seed-mean err_dev vs m is compared with -1/2.
"""

import os
import sys

import _common as C
import numpy as np

CONFIG = "configs/deep_mlp.yaml"
SOURCE = "Lee et al. 2019 (arXiv:1902.06720): a wide network stays within O(m^-1/2) of its linearisation"
SIZES = {
    "quick": {"widths": [128, 256, 512], "steps": 100, "seeds": 2, "every": 10},
    "full": {"widths": [128, 256, 512, 1024], "steps": 300, "seeds": 2, "every": 10},
}
SLOPE_TOL = 0.2  # |fitted slope + 1/2| within this counts as the m^(-1/2) law


def config_path() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, CONFIG)


def raw_for(width: int, seed: int, steps: int, every: int, optimizer: dict) -> dict:
    """``configs/deep_mlp.yaml`` at this width and seed, one optimizer, error vectors every ``every``."""
    raw = C.config_mod.load_raw(config_path())
    for assignment in (
        f"model.width={width}",
        f"seed={seed}",
        f"train.steps={steps}",
        "train.record_every=1",
        f"train.error_at={list(range(0, steps + 1, every))}",
        f"train.kernel_at=[0, {steps}]",
        "theory.kernel=Hinf",
        "theory.diffrax=false",
    ):
        raw = C.config_mod.apply_override(raw, assignment)
    return {**raw, "optimizers": [optimizer]}


def deviations(arrays: dict, result: C.results.OptimizerResult, cfg, setup, hyper: dict) -> dict:
    """err_dev and loss_dev against the Hinf and H0 recurrences of one trained run; ``hyper``: the
    hyperparameters it trained with (its ``TrainResult.hyper``, resolved once by training)."""
    spec = C.optimizers.get(cfg.optimizers[0].name)
    steps = cfg.train.steps
    ks, errs = np.asarray(arrays["error_steps"]), np.asarray(arrays["errors"], np.float64)
    loss = np.asarray(arrays["loss"], np.float64)
    floor = C.floor_of(cfg.dtype, float(loss[0]))
    lam0, V0 = C.theory.eigen(setup.c * setup.H0)
    out = {
        "drift": result.kernel_drift,
        "h0_vs_hinf": float(np.linalg.norm(setup.H0 - setup.Hinf) / np.linalg.norm(setup.Hinf)),
    }
    for name, (lam, V) in (("Hinf", (setup.lam, setup.V)), ("H0", (lam0, V0))):
        modes = C.theory.discrete_modes(spec, hyper, lam, V.T @ setup.e0, steps)
        e_pred, L_pred = modes @ V.T, C.theory.modal_loss(modes, setup.c)
        out[f"err_dev_{name}"] = float(
            np.max(np.linalg.norm(errs - e_pred[ks], axis=1) / np.linalg.norm(setup.e0))
        )
        L_pred = L_pred[np.asarray(arrays["step"])]
        mask = np.isfinite(loss) & (L_pred > floor) & (loss > floor)
        out[f"loss_dev_{name}"] = C.rates.max_relative_gap(L_pred, loss, mask)
    return out


def slope(widths, values) -> float | None:
    return C.loglog_slope(np.asarray(widths, np.float64), np.asarray(values, np.float64))


def figure(study, widths, means: dict, slopes: dict) -> None:
    plt = C.plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for i, (label, by_kernel) in enumerate(means.items()):
        for kernel, style in (("Hinf", "-o"), ("H0", "--s")):
            ax.loglog(
                widths,
                by_kernel[kernel],
                style,
                color=f"C{i}",
                label=f"{label} vs {kernel} (slope {C.f3(slopes[label][kernel], '.2f')})",
            )
    first = next(iter(means.values()))["Hinf"][0]
    ax.loglog(
        widths, first * np.sqrt(widths[0] / np.asarray(widths, float)), "k:", label=r"$\propto m^{-1/2}$"
    )
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.minorticks_off()
    ax.set_xlabel("width m")
    ax.set_ylabel(r"$\max_k \|e_k - e_k^{\rm kernel}\| / \|e_0\|$ (mean over seeds)")
    ax.set_title("depth-3 ReLU MLP: deviation from the kernel regime")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    study.figure(
        fig,
        "deep_mlp_width.png",
        "Error deviation from the kernel-regime recurrence vs width (log-log; solid: driven by H∞, "
        "dashed: by H0), mean over seeds, with the m^(-1/2) reference.",
    )


def run(study: C.Study, args, sz: dict) -> None:
    """The study (opened and finished by ``_common.main``)."""
    base = raw_for(sz["widths"][0], args.seed, sz["steps"], sz["every"], {})
    optimizers = C.config_mod.load_raw(config_path())["optimizers"]
    study.setting(
        config=CONFIG,
        widths=sz["widths"],
        steps=sz["steps"],
        seeds=sz["seeds"],
        every=sz["every"],
        data=base["data"],
        model={k: v for k, v in base["model"].items() if k != "width"},
        optimizers=optimizers,
    )
    rows = []
    for width in sz["widths"]:
        for opt in optimizers:
            raws = [raw_for(width, args.seed + s, sz["steps"], sz["every"], opt) for s in range(sz["seeds"])]
            for s, (arrays, result, cfg, setup, trained) in enumerate(
                C.run_group(raws, label=f"{opt['label']} m={width}", keep=True)
            ):
                rows.append(
                    {
                        "width": width,
                        "seed": args.seed + s,
                        "label": opt["label"],
                        **deviations(arrays, result, cfg, setup, trained.hyper),
                    }
                )
                study.add_arrays(
                    f"m{width}/seed{args.seed + s}/{opt['label']}",
                    {
                        "step": arrays["step"],
                        "loss": arrays["loss"],
                        "loss_discrete": arrays.get("loss_discrete"),
                    },
                )
        C.clear_setups()
    study.lap("train")
    widths = sz["widths"]
    labels = [o["label"] for o in optimizers]
    mean = lambda key, label, w: float(
        np.mean([r[key] for r in rows if r["label"] == label and r["width"] == w])
    )  # noqa: E731
    means = {
        lab: {k: [mean(f"err_dev_{k}", lab, w) for w in widths] for k in ("Hinf", "H0")} for lab in labels
    }
    slopes = {lab: {k: slope(widths, means[lab][k]) for k in ("Hinf", "H0")} for lab in labels}
    study.table(
        "Deviation from the kernel regime (mean over seeds)",
        [
            "width",
            "label",
            "err_dev Hinf",
            "err_dev H0",
            "loss_dev Hinf",
            "loss_dev H0",
            "drift",
            "||H0 - Hinf|| / ||Hinf||",
        ],
        [
            [
                w,
                lab,
                *(
                    mean(k, lab, w)
                    for k in (
                        "err_dev_Hinf",
                        "err_dev_H0",
                        "loss_dev_Hinf",
                        "loss_dev_H0",
                        "drift",
                        "h0_vs_hinf",
                    )
                ),
            ]
            for w in widths
            for lab in labels
        ],
    )
    figure(study, widths, means, slopes)
    fitted = {f"{lab}/{k}": v for lab, d in slopes.items() for k, v in d.items()}
    close = [key for key, v in fitted.items() if v is not None and abs(v + 0.5) <= SLOPE_TOL]
    result = C.count_result(len(close), sum(v is not None for v in fitted.values()))
    slope_text = ", ".join(f"{k} {C.f3(v, '.2f')}" for k, v in fitted.items())
    study.claim(
        "deviation_m_half",
        "The deviation of training from the kernel regime shrinks like m^(-1/2).",
        result,
        f"fitted slopes of err_dev vs m: {slope_text}; {len(close)}/{len(fitted)} within {SLOPE_TOL} of -0.5",
        source=SOURCE,
        setting=f"depth-3 MLP, m = {widths[0]}..{widths[-1]}, {sz['seeds']} seeds",
        numbers={"slopes": fitted, "tolerance": SLOPE_TOL},
        figure="deep_mlp_width.png",
    )


def main(argv=None) -> int:
    return C.main(
        __doc__,
        "deep_mlp_width",
        "Depth-3 MLP: deviation from the kernel regime vs width",
        run,
        SIZES,
        argv,
        summary=2,
    )


if __name__ == "__main__":
    sys.exit(main())
