"""Adam against its linearisation at initialisation, vs width: the finite-width effect for Adam, beside
GD and heavy ball.

    python experiments/adam_width.py [--quick] [--seed 0] --out DIR

The network of ``configs/adam.yaml`` (paper model, NTK parameterisation, the quickstart's sphere data:
n = 64, d = 16, teacher targets) and its linearisation at theta_0, f_lin(theta) = f(theta_0) +
J(theta_0)(theta - theta_0), trained with the same optimizer and schedule (``theory.linearized``). The
gap between the two is the finite-width effect for that optimizer. Series (each over widths and
initialisation seeds on one data draw):

* ``adam``: ``configs/adam.yaml``'s Adam, warmup-cosine to peak 5e-4, the same schedule at every width;
* ``adam_scaled``: the same schedule with peak_value x (m_ref / m)^(1/2), m_ref = ``configs/adam.yaml``'s
  width (4096, where the two series coincide). Adam moves each weight by about eta a step whatever
  the gradient's size, and with f = m^(-1/2) sum_r a_r relu(w_r . x) the m neurons' moves add up
  coherently, so the output moves by O(sqrt(m) eta) a step: at a fixed eta a wider network takes a
  larger step in function space. eta ~ m^(-1/2) keeps that step (and the loss reached) about the
  same at every width, and each weight then moves by O(m^(-1/2)) as under GD;
* ``gd``: ``configs/quickstart.yaml``'s GD (eta = 0.02); ``hb``: ``configs/adam.yaml``'s heavy ball
  (beta = 0.9, cosine-decayed eta). For these linear methods the linearisation is the exact
  kernel-regime recurrence with K = c H(theta_0) (``loss_discrete``; equal to the trained
  linearisation, tests/test_linearized.py), so it is not trained a second time.

Per run: deviation = max over the recorded steps of |L_k - L_lin,k| / L_lin,k (``deviation.linearized``;
``deviation.discrete`` for GD/HB), final = the same at the last step, absolute gap = max_k |L_k -
L_lin,k| / L_0, and for GD/HB the output gap ||e_T - e_T^lin|| / ||e_0||. Fit: least squares of log
deviation on log m over every (width, seed) point, slope p with its standard error se. A series counts
as "about m^(-1/2)" when |p + 1/2| <= max(2 se, 0.2) (0.2: deep_mlp_width's tolerance); NTK theory
expects that (or faster) of GD and HB (Lee et al. 2019).
"""

from __future__ import annotations

import math
import os
import sys

import _common as C
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
ADAM_CONFIG, GD_CONFIG = "configs/adam.yaml", "configs/quickstart.yaml"
SIZES = {
    "full": {"widths": [256, 1024, 4096, 16384], "seeds": 4, "series": ["adam", "adam_scaled", "gd", "hb"]},
    "quick": {"widths": [256, 1024], "seeds": 2, "series": ["adam", "gd"]},
}
SLOPE_TOL = 0.2  # |p + 1/2| within max(2 se, SLOPE_TOL) counts as m^(-1/2) (deep_mlp_width's tolerance)
NTK_SOURCE = "NTK theory (Lee et al. 2019, arXiv:1902.06720; Du et al. 2019)"
LIN_SOURCE = "ntkdyn's linearised prediction for optimizers without a recurrence (issue 12)"


def shipped(path: str) -> dict:
    """The raw mapping of a config shipped in configs/."""
    return C.config_mod.load_raw(os.path.join(ROOT, path))


def series_optimizers() -> tuple[dict, int, dict]:
    """(series -> optimizer entry at m_ref, m_ref, the base config): adam.yaml's adam and hb_cosine,
    quickstart.yaml's gd."""
    base = shipped(ADAM_CONFIG)
    by_label = {o["label"]: o for o in base["optimizers"]}
    gd = next(o for o in shipped(GD_CONFIG)["optimizers"] if o["label"] == "gd")
    opts = {"adam": by_label["adam"], "adam_scaled": by_label["adam"], "gd": gd, "hb": by_label["hb_cosine"]}
    return opts, int(base["model"]["width"]), base


def optimizer_at(series: str, entry: dict, width: int, m_ref: int) -> dict:
    """The series' optimizer entry at ``width``: adam_scaled's peak_value times (m_ref / width)^(1/2)."""
    entry = {**entry, "label": series}
    if series == "adam_scaled":
        entry["eta"] = {**entry["eta"], "peak_value": entry["eta"]["peak_value"] * math.sqrt(m_ref / width)}
    return entry


def raw_for(base: dict, width: int, seed: int, optimizer: dict) -> dict:
    """adam.yaml at this width and seed with one optimizer; the linearisation trained for Adam only."""
    steps = int(base["train"]["steps"])
    return {
        **base,
        "name": "adam_width",
        "seed": int(seed),
        "model": {**base["model"], "width": int(width)},
        "train": {**base["train"], "kernel_at": [0, steps], "error_at": [0, steps]},
        "theory": {**base["theory"], "linearized": "auto"},
        "optimizers": [optimizer],
    }


def run_deviations(
    series: str, arrays: dict, result: C.results.OptimizerResult, cfg, setup, hyper: dict
) -> dict:
    """One run against its linearisation: deviation (max relative loss gap), final gap, absolute gap
    (units of L_0), losses at T / L_0, kernel drift; GD/HB also the output gap at T. ``hyper``: the
    hyperparameters the run trained with (its ``TrainResult.hyper``, resolved once by training)."""
    adaptive = series.startswith("adam")
    key = "linearized" if adaptive else "discrete"
    loss = np.asarray(arrays["loss"], np.float64)
    lin = np.asarray(arrays[f"loss_{key}"], np.float64)
    L0 = float(loss[0])
    out = {
        "status": result.status,
        "dev": result.deviation.get(key),
        "final": float(abs(loss[-1] - lin[-1]) / lin[-1]),
        "abs": float(np.max(np.abs(loss - lin)) / L0),
        "LT": float(loss[-1] / L0),
        "LT_lin": float(lin[-1] / L0),
        "drift": result.kernel_drift,
        "out": None,
    }
    if not adaptive:  # the linearisation's error vector is the recurrence's: e_T = V modes_T
        spec = C.optimizers.get(cfg.optimizers[0].name)
        modes = C.theory.discrete_modes(spec, hyper, setup.lam, setup.coef, cfg.train.steps)
        e_lin = modes[-1] @ setup.V.T
        e_T = np.asarray(arrays["errors"], np.float64)[list(arrays["error_steps"]).index(cfg.train.steps)]
        out["out"] = float(np.linalg.norm(e_T - e_lin) / np.linalg.norm(setup.e0))
    return out


def loglog_fit(widths, values) -> dict:
    """Least squares of log y on log m over the finite positive points: slope p, its standard error
    sqrt(RSS / (N - 2) / S_xx) (None with fewer than 3 points), and N."""
    x, y = np.asarray(widths, np.float64), np.asarray(values, np.float64)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    x, y = np.log(x[ok]), np.log(y[ok])
    if x.size < 2 or np.ptp(x) == 0:
        return {"slope": None, "se": None, "points": int(x.size)}
    p, a = np.polyfit(x, y, 1)
    se = None
    if x.size >= 3:
        rss = float(np.sum((y - (a + p * x)) ** 2))
        se = math.sqrt(rss / (x.size - 2) / float(np.sum((x - x.mean()) ** 2)))
    return {"slope": float(p), "se": se, "points": int(x.size)}


def slope_class(fit: dict) -> str:
    """about m^(-1/2) | faster | slower | no significant trend | grows (two standard errors)."""
    p, se = fit["slope"], fit["se"] or 0.0
    if p is None:
        return "undefined"
    if abs(p + 0.5) <= max(2 * se, SLOPE_TOL):
        return "about m^(-1/2)"
    if p + 2 * se < 0:
        return "faster than m^(-1/2)" if p < -0.5 else "slower than m^(-1/2)"
    return "grows with m" if p - 2 * se > 0 else "no significant trend"


def fit_text(fit: dict) -> str:
    """'p +- se (class)'."""
    se = "" if fit["se"] is None else f" +- {fit['se']:.2f}"
    return f"{C.f3(fit['slope'], '.2f')}{se} ({slope_class(fit)})"


def stats(values) -> dict:
    """mean, min and max of the finite values (None when there are none)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if v.size == 0:
        return {"mean": None, "min": None, "max": None}
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}


def run(study: C.Study, args, sz: dict) -> None:
    """The study (opened and finished by ``_common.main``)."""
    opts, m_ref, base = series_optimizers()
    seeds = [args.seed + i for i in range(sz["seeds"])]
    study.setting(
        config=ADAM_CONFIG,
        data=f"{base['data']} (one draw, seed {args.seed}; seeds vary the initialisation)",
        model=base["model"]["name"],
        widths=sz["widths"],
        seeds=seeds,
        steps=base["train"]["steps"],
        series={s: optimizer_at(s, opts[s], m_ref, m_ref) for s in sz["series"]},
        adam_scaled=f"peak_value x (m_ref / m)^(1/2), m_ref = {m_ref}",
        linearisation="Adam: trained (theory.linearized); GD/HB: the kernel recurrence with H0 (exact)",
        dtype=f"{base['dtype']} (training), float64 (theory)",
        load_average_start=[round(x, 2) for x in os.getloadavg()],
    )
    rows = []
    for width in sz["widths"]:
        for series in sz["series"]:
            opt = optimizer_at(series, opts[series], width, m_ref)
            raws = [raw_for(base, width, sd, opt) for sd in seeds]
            for sd, (arrays, result, cfg, setup, trained) in zip(
                seeds, C.run_group(raws, data_seed=args.seed, label=f"{series} m={width}", keep=True)
            ):
                rows.append(
                    {
                        "series": series,
                        "width": width,
                        "seed": sd,
                        **run_deviations(series, arrays, result, cfg, setup, trained.hyper),
                    }
                )
                lin = "loss_linearized" if series.startswith("adam") else "loss_discrete"
                study.add_arrays(
                    f"{series}/m={width}/seed={sd}",
                    {"step": arrays["step"], "loss": arrays["loss"], "loss_lin": arrays[lin]},
                )
        C.clear_setups()
        study.lap(f"m={width}")
    study.setting(load_average_end=[round(x, 2) for x in os.getloadavg()])

    fits = summarise(study, rows, sz)
    figure(study, rows, sz, fits)
    claims(study, rows, sz, fits, opts, m_ref)
    study.lap("figures_and_verdicts")


def _select(rows: list[dict], series: str, key: str, width: int | None = None) -> list:
    return [r[key] for r in rows if r["series"] == series and (width is None or r["width"] == width)]


def summarise(study: C.Study, rows: list[dict], sz: dict) -> dict:
    """Per series: the log-log fits of the deviation, final gap, absolute gap and output gap vs m; the
    table of seed statistics."""
    fits = {}
    for series in sz["series"]:
        ok = [r for r in rows if r["series"] == series and r["status"] == "ok"]
        fits[series] = {
            key: loglog_fit([r["width"] for r in ok], [r[key] for r in ok])
            for key in ("dev", "final", "abs", "out")
        }
    table = []
    for series in sz["series"]:
        for width in sz["widths"]:
            st = {
                k: stats(_select(rows, series, k, width))
                for k in ("dev", "final", "abs", "LT", "LT_lin", "drift", "out")
            }
            table.append(
                [
                    series,
                    width,
                    C.num(st["dev"]["mean"], 4),
                    f"{C.f3(st['dev']['min'])}-{C.f3(st['dev']['max'])}",
                    C.num(st["final"]["mean"], 4),
                    C.num(st["abs"]["mean"], 4),
                    C.num(st["LT"]["mean"], 5),
                    C.num(st["LT_lin"]["mean"], 5),
                    C.num(st["drift"]["mean"], 4),
                    C.num(st["out"]["mean"], 4),
                    sum(s != "ok" for s in _select(rows, series, "status", width)),
                ]
            )
    study.table(
        "Network vs its linearisation: seed statistics",
        [
            "series",
            "width",
            "dev mean",
            "dev min-max",
            "final gap",
            "abs gap / L0",
            "L_T / L0",
            "L_T / L0 (lin)",
            "kernel drift",
            "output gap",
            "diverged",
        ],
        table,
        note="dev: max_k |L_k - L_lin,k| / L_lin,k; final: the same at the last step; abs gap: max_k "
        "|L_k - L_lin,k| / L_0; output gap: ||e_T - e_T^lin|| / ||e_0|| (GD/HB, from the recurrence); "
        "kernel drift ||H_T - H_0||_F / ||H_0||_F.",
    )
    study.table(
        "Fitted exponents p of gap ~ m^p (least squares over every width and seed)",
        ["series", "dev p", "dev se", "final p", "final se", "abs p", "abs se", "output p", "output se"],
        [
            [
                series,
                *[
                    C.num(f[key][part], 3)
                    for key in ("dev", "final", "abs", "out")
                    for part in ("slope", "se")
                ],
            ]
            for series, f in fits.items()
        ],
        note=f"se: the least-squares standard error of the slope; about m^(-1/2): |p + 1/2| <= max(2 se, "
        f"{SLOPE_TOL})",
    )
    return fits


def claims(study: C.Study, rows: list[dict], sz: dict, fits: dict, opts: dict, m_ref: int) -> None:
    """The verdicts: the linear methods' m^(-1/2), each Adam series against it, GD/HB output gaps."""
    widths = sz["widths"]
    setting = (
        f"paper model on the quickstart data, widths {widths[0]}-{widths[-1]}, {sz['seeds']} seeds a width, "
        f"{ADAM_CONFIG}'s steps and schedules"
    )
    linear = [s for s in ("gd", "hb") if s in sz["series"]]
    if linear:
        ok = [s for s in linear if slope_class(fits[s]["dev"]) in ("about m^(-1/2)", "faster than m^(-1/2)")]
        study.claim(
            "linear_methods_m_half",
            "GD and heavy ball stay within O(m^(-1/2)) of their linearisation (NTK parameterisation)",
            C.count_result(len(ok), len(linear)),
            "deviation (max relative loss gap to the linearisation) ~ m^p: "
            + "; ".join(f"{s}: p = {fit_text(fits[s]['dev'])}" for s in linear)
            + f"; {len(ok)}/{len(linear)} about m^(-1/2) or faster.",
            source=NTK_SOURCE,
            setting=setting,
            numbers={s: fits[s]["dev"] for s in linear},
            figure="adam_width.png",
        )
    for series in [s for s in ("adam", "adam_scaled") if s in sz["series"]]:
        fit = fits[series]["dev"]
        cls = slope_class(fit)
        result = {
            "about m^(-1/2)": "agrees",
            "faster than m^(-1/2)": "agrees",
            "slower than m^(-1/2)": "partly",
        }
        LT = [stats(_select(rows, series, "LT", w))["mean"] for w in widths]
        peak = [optimizer_at(series, opts[series], w, m_ref)["eta"]["peak_value"] for w in widths]
        gd_fit = fits["gd"]["dev"] if "gd" in fits else None
        line = (
            f"{series} (peak eta {', '.join(f'{p:.3g}' for p in peak)} at m = "
            f"{', '.join(map(str, widths))}): deviation from the linearisation ~ m^p with p = {fit_text(fit)}"
            + (f" (GD: {fit_text(gd_fit)})" if gd_fit else "")
            + "; mean deviation "
            + ", ".join(f"{C.f3(stats(_select(rows, series, 'dev', w))['mean'])}" for w in widths)
            + "; loss reached L_T/L_0 "
            + ", ".join(C.f3(v) for v in LT)
            + f"; absolute gap / L_0 ~ m^p, p = {fit_text(fits[series]['abs'])}."
        )
        if series == "adam" and LT[0] and LT[-1] and LT[0] / LT[-1] > 3:
            line += (
                f" At a fixed eta the wider network goes {LT[0] / LT[-1]:.3g}x lower in the same steps "
                "(Adam's function-space step grows ~ sqrt(m) eta), so width and effective step change "
                "together here: see adam_scaled."
            )
        study.claim(
            f"{series}_vs_linearisation",
            f"Adam ({series}) approaches its linearisation as the width grows, like GD (gap ~ m^(-1/2))",
            result.get(cls, "differs") if fit["slope"] is not None else "inconclusive",
            line,
            source=LIN_SOURCE,
            setting=setting,
            numbers={
                "fit": fit,
                "abs_fit": fits[series]["abs"],
                "final_fit": fits[series]["final"],
                "loss_over_L0": LT,
                "peak_eta": peak,
            },
            figure="adam_width.png",
        )
    for series in [s for s in ("gd", "hb") if s in sz["series"]]:
        study.claim(
            f"{series}_output_gap",
            "Output gap to the linearisation at the last step, ||e_T - e_T^lin|| / ||e_0||, vs width",
            "info",
            f"{series}: output gap "
            + ", ".join(f"m={w}: {C.f3(stats(_select(rows, series, 'out', w))['mean'])}" for w in widths)
            + f" (seed means); ~ m^p, p = {fit_text(fits[series]['out'])}. Adam's linearised outputs are not "
            "recorded (only its loss), so Adam has no output gap here.",
            source=NTK_SOURCE,
            setting=setting,
            numbers={"fit": fits[series]["out"]},
        )


def figure(study: C.Study, rows: list[dict], sz: dict, fits: dict) -> None:
    """adam_width.png: relative gap, gap / L_0 and loss reached vs width."""
    plt = C.plt()
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.4))
    widths = np.asarray(sz["widths"], np.float64)
    for i, series in enumerate(sz["series"]):
        col = f"C{i}"
        for j, key in enumerate(("dev", "abs")):
            pts = [(r["width"], r[key]) for r in rows if r["series"] == series and r[key] is not None]
            ax[j].loglog(
                *C.positive([p[0] for p in pts], [p[1] for p in pts]), "o", color=col, alpha=0.35, ms=4
            )
            mean = [stats(_select(rows, series, key, w))["mean"] for w in sz["widths"]]
            ax[j].loglog(
                *C.positive(widths, [np.nan if m is None else m for m in mean]),
                "-",
                color=col,
                label=f"{series}: p = {fit_text(fits[series][key])}",
            )
        LT = [stats(_select(rows, series, "LT", w))["mean"] for w in sz["widths"]]
        LTl = [stats(_select(rows, series, "LT_lin", w))["mean"] for w in sz["widths"]]
        ax[2].loglog(widths, LT, "o-", color=col, label=f"{series}: network")
        ax[2].loglog(widths, LTl, "s--", color=col, alpha=0.7, label=f"{series}: linearisation")
    for j, ylabel in enumerate(
        (r"$\max_k |L_k - L^{\rm lin}_k| / L^{\rm lin}_k$", r"$\max_k |L_k - L^{\rm lin}_k| / L_0$")
    ):
        means = [
            stats(_select(rows, s, "dev" if j == 0 else "abs", sz["widths"][0]))["mean"] for s in sz["series"]
        ]
        y0 = float(np.exp(np.mean(np.log([m for m in means if m]))))
        ax[j].loglog(widths, y0 * np.sqrt(widths[0] / widths), "k:", label=r"$\propto m^{-1/2}$")
        ax[j].set_ylabel(ylabel)
    ax[2].set_ylabel(r"$L_T / L_0$ (seed mean)")
    for a in ax:
        a.set_xlabel("width m")
        a.set_xticks(widths, [str(int(w)) for w in widths])
        a.minorticks_off()
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=7)
    fig.suptitle(
        "Network vs its linearisation at initialisation, same optimizer and schedule (dots: seeds)",
        fontsize=11,
    )
    fig.tight_layout()
    study.figure(
        fig,
        "adam_width.png",
        "Left: max relative loss gap between the network and its linearisation vs width, per seed (dots) and "
        "seed mean (line), fitted exponent p +- se; middle: the same gap in units of L_0; right: the loss "
        "reached (network solid, linearisation dashed). Dotted: m^(-1/2).",
    )


def main(argv=None) -> int:
    return C.main(
        __doc__,
        "adam_width",
        "Adam vs its linearisation: the finite-width gap against width, beside GD and heavy ball",
        run,
        SIZES,
        argv,
        summary=2,
    )


if __name__ == "__main__":
    sys.exit(main())
