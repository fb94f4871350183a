"""Width sweeps (hb_width, nag_width): loss after a fixed number of steps vs width, averaged over
initialisation seeds (one data set), with the kernel drift and the deviation from the
kernel-regime prediction vs width on log-log axes against the m^(-1/2) reference slope.

Released notebook: widths m = 2000 ... 8000, 200 epochs at lr 5e-5, HB with beta in {0, 0.6, 0.9},
NAG averaged over 10 seeds. Here both the released-code model (lr 5e-5, as in the notebook) and
the paper model (eta = 1 / lambda_max of the infinite-width K, the same for every width) run on
digits; NAG is NAG-C with r = 3 (Nesterov's beta_k = (k-1)/(k+2)).
"""

from __future__ import annotations

import _common as C
import numpy as np

SIZES = {
    "full": {"n": 600, "widths": [2000, 3000, 4000, 6000, 8000], "steps": 200},
    "quick": {"n": 100, "widths": [256, 512, 1024, 2048], "steps": 100},
}
SEEDS = {("hb", "full"): 3, ("hb", "quick"): 2, ("nag", "full"): 10, ("nag", "quick"): 3}
RELEASED_LR = 5e-5  # the notebook's learning rate for the width sweeps
PAPER_ETA_FACTOR = 1.0  # paper model: eta = factor / lambda_max(c H_inf)
VALUES = {"hb": [0.0, 0.6, 0.9], "nag": [3.0]}
# The NTK results are bounds, O(m^(-1/2)): a fitted log-log slope <= SLOPE_MAX (-1/2 with 0.25 slack)
# counts as consistent; steeper is reported as "faster than m^(-1/2)".
SLOPE_MAX = -0.25


def _slope_class(s) -> str:
    if s is None:
        return "undefined"
    if s < -0.75:
        return "faster than m^(-1/2)"
    if s <= SLOPE_MAX:
        return "about m^(-1/2)"
    return "slower than m^(-1/2)" if s < 0 else "does not shrink"


def run(kind: str, args) -> dict:
    mode = "quick" if args.quick else "full"
    sizes = SIZES[mode]
    n_seeds = SEEDS[(kind, mode)]
    opt_name, hname = ("hb", "beta") if kind == "hb" else ("nag_c", "r")
    name = f"{kind}_width"
    title = (
        "Heavy ball: loss after a fixed number of steps vs width"
        if kind == "hb"
        else "NAG-C (r = 3): loss after a fixed number of steps vs width"
    )
    study = C.Study(name, title, args, summary=__doc__.split("\n\n")[0].replace("\n", " "))
    seeds = [args.seed + i for i in range(n_seeds)]
    study.setting(
        data=f"{C.DATA_TEXT}, n = {sizes['n']} (one draw, seed {args.seed}; seeds vary the initialisation)",
        widths=sizes["widths"],
        steps=sizes["steps"],
        seeds=seeds,
        optimizer=opt_name,
        values={hname: VALUES[kind]},
        released_eta=RELEASED_LR,
        paper_eta=f"{PAPER_ETA_FACTOR:g} / lambda_max(c H_inf) (width independent)",
        kernel="predictions use the empirical NTK at initialisation (H0) of each run",
        dtype="float32 (training), float64 (theory)",
    )
    T = sizes["steps"]
    models = {}
    for model in ("paper", "released"):
        eta = RELEASED_LR
        if model == "paper":
            probe = C.digits_raw(
                "paper", sizes["n"], sizes["widths"][0], T, {"name": "gd", "eta": 1.0}, seed=args.seed
            )
            _, s0 = C.setup_for(probe, data_seed=args.seed)
            lam_inf = np.linalg.eigvalsh(s0.c * np.asarray(s0.Hinf, np.float64))
            eta = PAPER_ETA_FACTOR / float(lam_inf[-1])
        per_width = []
        for m in sizes["widths"]:
            raws, keys = [], []
            for v in VALUES[kind]:
                for sd in seeds:
                    raws.append(
                        C.digits_raw(
                            model,
                            sizes["n"],
                            m,
                            T,
                            {"name": opt_name, "eta": eta, hname: v},
                            seed=sd,
                            kernel_at=[0, T],
                        )
                    )
                    keys.append((v, sd))
            runs = C.run_group(raws, data_seed=args.seed, label=f"{opt_name} {model} m={m}")
            recs = []
            for (v, sd), (arrays, result, _cfg, s) in zip(keys, runs):
                recs.append(
                    {
                        hname: v,
                        "seed": sd,
                        "L0": float(arrays["loss"][0]),
                        "LT": float(arrays["loss"][-1]),
                        "LT_kernel": float(arrays["loss_discrete"][-1]),
                        "dev": result.deviation.discrete,
                        "drift": result.kernel_drift,
                        "status": result.status,
                        "lam_max": float(s.lam[-1]),
                        "lam_min": float(s.lam[0]),
                    }
                )
                study.add_arrays(
                    f"{model}/m={m}/{hname}={v:g}/seed={sd}",
                    {
                        "step": arrays["step"],
                        "loss": arrays["loss"],
                        "loss_discrete": arrays["loss_discrete"],
                    },
                )
            per_width.append({"width": m, "records": recs})
            C.clear_setups()
        models[model] = {"eta": eta, "widths": per_width}
        study.lap(model)

    summary = _summarise(models, VALUES[kind], hname)
    fig = f"{name}.png"
    _figure(study, kind, summary, hname, sizes, fig)
    _table(study, summary, hname)
    for model in ("paper", "released"):
        _claims(study, kind, model, summary[model], models[model]["eta"], hname, sizes, fig)
    study.lap("figures_and_verdicts")
    return study.finish()


def _stats(values) -> dict:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if v.size == 0:
        return {"mean": None, "min": None, "max": None, "std": None, "n": 0}
    return {
        "mean": float(v.mean()),
        "min": float(v.min()),
        "max": float(v.max()),
        "std": float(v.std()),
        "n": int(v.size),
    }


def _summarise(models, values, hname) -> dict:
    out = {}
    for model, mdat in models.items():
        rows = []
        for w in mdat["widths"]:
            for v in values:
                recs = [r for r in w["records"] if r[hname] == v]
                rows.append(
                    {
                        "width": w["width"],
                        hname: v,
                        "LT": _stats([r["LT"] for r in recs]),
                        "LT_rel": _stats([r["LT"] / r["L0"] for r in recs]),
                        "LT_kernel": _stats([r["LT_kernel"] for r in recs]),
                        "dev": _stats([r["dev"] for r in recs]),
                        "drift": _stats([r["drift"] for r in recs]),
                        "lam_max": _stats([r["lam_max"] for r in recs]),
                        "lam_min": _stats([r["lam_min"] for r in recs]),
                        "diverged": sum(r["status"] != "ok" for r in recs),
                    }
                )
        out[model] = {"eta": mdat["eta"], "rows": rows}
    return out


def _series(summary_model, hname, v, key, stat="mean"):
    rows = [r for r in summary_model["rows"] if r[hname] == v]
    return np.asarray([r["width"] for r in rows], float), np.asarray(
        [np.nan if r[key][stat] is None else r[key][stat] for r in rows], float
    )


def _claims(study, kind, model, sm, eta, hname, sizes, fig) -> None:
    values = sorted({r[hname] for r in sm["rows"]})
    label = "HB" if kind == "hb" else "NAG-C"
    setting = (
        f"{model} model, digits n = {sizes['n']}, eta = {eta:.3g}, {sizes['steps']} steps, widths "
        f"{sizes['widths'][0]}-{sizes['widths'][-1]}"
    )
    for key, what, claim in (
        (
            "dev",
            "deviation from the kernel-regime prediction (max relative loss gap)",
            "The finite network approaches the kernel regime as width grows: the deviation shrinks "
            "at least like m^(-1/2)",
        ),
        (
            "drift",
            "kernel drift ||H_T - H_0||_F / ||H_0||_F",
            "The NTK moves by at most O(m^(-1/2)) during training",
        ),
    ):
        slopes = {}
        for v in values:
            x, y = _series(sm, hname, v, key)
            slopes[v] = C.loglog_slope(x, y)
        ok = [v for v, s in slopes.items() if s is not None and s <= SLOPE_MAX]
        result = C.count_result(len(ok), len(values))
        if all(s is None for s in slopes.values()):
            result = "inconclusive"
        line = (
            f"{label}, {model} model: log-log slope of the {what} vs width: "
            + ", ".join(f"{hname}={v:g}: {C.f3(s, '.2f')} ({_slope_class(s)})" for v, s in slopes.items())
            + f"; consistent with the O(m^(-1/2)) bound (slope <= {SLOPE_MAX}, i.e. -1/2 with 0.25 slack) "
            + f"for {len(ok)}/{len(values)}."
        )
        if result in ("differs", "partly"):
            x, lmax = _series(sm, hname, values[0], "lam_max")
            ks = C.loglog_slope(x, lmax)
            if ks is not None and ks > 0.25:
                line += (
                    f" Here lambda_max(K) grows like m^{ks:.2f} at a fixed step size (eta lambda_max from "
                    f"{eta * lmax[0]:.3g} to {eta * lmax[-1]:.3g}): this parameterisation has no "
                    "width-independent "
                    f"kernel limit at a fixed learning rate, so the NTK argument does not apply as m grows."
                )
        study.claim(
            f"{kind}_{key}_slope_{model}",
            claim,
            result,
            line,
            source="NTK theory (Du et al. 2019; Jacot et al. 2018)",
            setting=setting,
            figure=fig,
            numbers={"slopes": {f"{v:g}": s for v, s in slopes.items()}, "slope_max": SLOPE_MAX},
        )
    # loss after T steps
    xs = sorted({r["width"] for r in sm["rows"]})
    if kind == "hb":
        beats, same_order = [], []
        for m in xs:
            at = {v: next(r for r in sm["rows"] if r["width"] == m and r[hname] == v) for v in values}
            gd = at[values[0]]["LT"]["mean"]
            beats.append(
                all(
                    at[v]["LT"]["mean"] is not None and gd is not None and at[v]["LT"]["mean"] < gd
                    for v in values[1:]
                )
            )
            order_train = sorted(
                values, key=lambda v: at[v]["LT"]["mean"] if at[v]["LT"]["mean"] is not None else np.inf
            )
            order_kernel = sorted(
                values,
                key=lambda v: (
                    at[v]["LT_kernel"]["mean"] if at[v]["LT_kernel"]["mean"] is not None else np.inf
                ),
            )
            same_order.append(order_train == order_kernel)
        k = sum(beats)
        last = {v: next(r for r in sm["rows"] if r["width"] == xs[-1] and r[hname] == v) for v in values}
        line = (
            f"HB, {model} model: after {sizes['steps']} steps every beta > 0 "
            f"({', '.join(f'{v:g}' for v in values[1:])}) "
            f"is below GD (beta = 0) at {k}/{len(xs)} widths; the ordering of the betas by loss matches the "
            f"kernel-regime prediction at {sum(same_order)}/{len(xs)} widths; mean loss at m = {xs[-1]}: "
            + ", ".join(
                f"beta={v:g}: {C.f3(last[v]['LT']['mean'])} (kernel {C.f3(last[v]['LT_kernel']['mean'])})"
                for v in values
            )
            + "."
        )
        study.claim(
            f"hb_momentum_faster_{model}",
            "Heavy ball (beta > 0) reaches a lower loss than GD (beta = 0) after a fixed number of steps",
            C.count_result(k, len(xs)),
            line,
            source="the released notebook's width sweep; kernel-regime theory (effective step eta/(1-beta))",
            setting=setting,
            figure=fig,
            numbers={
                "beats_gd_at_width": dict(zip(map(str, xs), beats)),
                "order_matches_kernel": dict(zip(map(str, xs), same_order)),
            },
        )
    for v in values:
        x, y = _series(sm, hname, v, "LT_rel")
        _, lo = _series(sm, hname, v, "LT_rel", "min")
        _, hi = _series(sm, hname, v, "LT_rel", "max")
        _, yk = _series(sm, hname, v, "LT_kernel")
        _, yt = _series(sm, hname, v, "LT")
        change_first = abs(y[1] / y[0] - 1) if len(y) > 1 else None
        change_last = abs(y[-1] / y[-2] - 1) if len(y) > 1 else None
        gap = [abs(a / b - 1) for a, b in zip(yt, yk)]
        line = (
            f"{label} ({hname}={v:g}), {model} model: loss after {sizes['steps']} steps / L0 vs width "
            + ", ".join(f"m={int(m)}: {C.f3(a)} [{C.f3(b)}, {C.f3(c)}]" for m, a, b, c in zip(x, y, lo, hi))
            + " (mean [min, max] over seeds); change between the two smallest widths "
            + f"{C.f3(change_first, '.1%')}, "
            f"between the two largest {C.f3(change_last, '.1%')}; training vs kernel prediction at the "
            "widest "
            f"{C.f3(gap[-1], '.1%')} (smallest {C.f3(gap[0], '.1%')})."
        )
        study.claim(
            f"{kind}_loss_vs_width_{model}_{hname}{v:g}",
            "Loss after a fixed number of steps vs width (seed average and spread)",
            "info",
            line,
            setting=setting,
            figure=fig,
            numbers={
                "width": x,
                "loss_over_L0": y,
                "min": lo,
                "max": hi,
                "kernel_loss": yk,
                "train_vs_kernel_gap": gap,
            },
        )


def _table(study, summary, hname) -> None:
    cols = [
        "model",
        "width",
        hname,
        "loss T mean",
        "loss T min",
        "loss T max",
        "kernel loss T",
        "dev mean",
        "dev spread",
        "drift mean",
        "drift spread",
        "diverged",
    ]
    rows = []
    for model, sm in summary.items():
        for r in sm["rows"]:
            rows.append(
                [
                    model,
                    r["width"],
                    r[hname],
                    C.num(r["LT"]["mean"], 6),
                    C.num(r["LT"]["min"], 6),
                    C.num(r["LT"]["max"], 6),
                    C.num(r["LT_kernel"]["mean"], 6),
                    C.num(r["dev"]["mean"], 4),
                    f"{C.f3(r['dev']['min'])}-{C.f3(r['dev']['max'])}",
                    C.num(r["drift"]["mean"], 4),
                    f"{C.f3(r['drift']['min'])}-{C.f3(r['drift']['max'])}",
                    r["diverged"],
                ]
            )
    study.table(
        "Width sweep: seed statistics",
        cols,
        rows,
        "dev: max relative gap between the training loss and the kernel-regime recurrence over all steps; "
        "drift: ||H_T - H_0||_F / ||H_0||_F at the last step.",
    )


def _figure(study, kind, summary, hname, sizes, fig_name) -> None:
    plt = C.plt()
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, (model, sm) in enumerate(summary.items()):
        values = sorted({r[hname] for r in sm["rows"]})
        for i, v in enumerate(values):
            col = colours[i % len(colours)]
            x, y = _series(sm, hname, v, "LT")
            _, lo = _series(sm, hname, v, "LT", "min")
            _, hi = _series(sm, hname, v, "LT", "max")
            _, yk = _series(sm, hname, v, "LT_kernel")
            ax = axes[row, 0]
            ax.plot(x, y, "o-", color=col, label=f"{hname}={v:g} training (mean)")
            ax.fill_between(x, lo, hi, color=col, alpha=0.2)
            ax.plot(x, yk, "s--", color=col, alpha=0.7, label=f"{hname}={v:g} kernel prediction")
            for j, key in ((1, "dev"), (2, "drift")):
                _, ym = _series(sm, hname, v, key)
                _, ylo = _series(sm, hname, v, key, "min")
                _, yhi = _series(sm, hname, v, key, "max")
                axes[row, j].plot(x, ym, "o-", color=col, label=f"{hname}={v:g}")
                axes[row, j].fill_between(x, ylo, yhi, color=col, alpha=0.2)
        for j, (key, ylabel) in enumerate(
            (
                ("LT", f"loss after {sizes['steps']} steps"),
                ("dev", "max relative gap to kernel prediction"),
                ("drift", "kernel drift ||H_T - H_0|| / ||H_0||"),
            )
        ):
            ax = axes[row, j]
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("width m")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            if j > 0:
                xs = np.asarray(sorted({r["width"] for r in sm["rows"]}), float)
                ys = [r[key]["mean"] for r in sm["rows"] if r["width"] == xs[0] and r[key]["mean"]]
                if ys:
                    y0 = float(np.exp(np.mean(np.log(ys))))
                    ax.plot(xs, y0 * np.sqrt(xs[0] / xs), "k:", label="m^(-1/2) reference")
            ax.set_title(f"{model} model (eta = {sm['eta']:.3g})", fontsize=10)
            ax.legend(fontsize=7)
    fig.suptitle(
        f"{'HB' if kind == 'hb' else 'NAG-C (r = 3)'} on digits (n = {sizes['n']}), {sizes['steps']} steps; "
        f"bands: min-max over seeds",
        fontsize=11,
    )
    fig.tight_layout()
    study.figure(
        fig,
        fig_name,
        "Left: loss after a fixed number of steps vs width (training mean with min-max band; "
        "kernel prediction dashed). Middle: deviation from the kernel-regime prediction. "
        "Right: kernel drift. "
        "Dotted: the m^(-1/2) reference slope.",
    )
