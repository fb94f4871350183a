"""NAG-C's power-law exponent against the damping r, with constant-beta NAG beside it.

    python experiments/nag_exponents.py [--quick] [--seed 0] --out DIR

Problem A of ``_nag`` (paper model on digits, eta = 0.1 / lambda_max(K), float32): NAG-C with
beta_k = (k-1)/(k+r-1), r in {2, 3, 4, 6, 8, 10}; the fitted exponent p of L ~ k^p against the
Bessel prediction p = -r (ODE e'' + (r/t) e' + K e = 0, loss ~ t^(-r)), each over the window from
the Bessel onset of the slowest mode to k*/10; and constant-beta NAG (linear) at the same eta.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import _common as C
import numpy as np
from _nag import ETA_FACTOR_A, SIZES, power_law_window

RS = [2.0, 3.0, 4.0, 6.0, 8.0, 10.0]
CONST_BETAS = [0.9, 0.99]
EXPONENT_TOL = 0.25  # |p + r| <= EXPONENT_TOL * r counts as "matches -r"


@dataclasses.dataclass(frozen=True)
class Exponents:
    """The runs: NAG-C for every r in ``RS`` and constant-beta NAG for every beta in
    ``CONST_BETAS`` (``runs``/``cruns``: run_group's tuples; ``rows``/``crow``: their fits), at
    eta = ETA_FACTOR_A / lambda_max on one setup."""

    T: Any
    crow: Any
    cruns: Any
    eta: Any
    lam_max: Any
    lam_min: Any
    rows: Any
    runs: Any
    setup: Any


def exponents_run(study, args, sz) -> Exponents:
    """Train the r sweep and the constant-beta runs (one program each) and fit every run."""
    T = sz["steps"]
    probe = C.digits_raw("paper", sz["n"], sz["width"], T, {"name": "gd", "eta": 1.0}, seed=args.seed)
    _, setup = C.setup_for(probe)
    lam_min, lam_max = float(setup.lam[0]), float(setup.lam[-1])
    eta = ETA_FACTOR_A / lam_max
    study.setting(
        problem_a={
            "data": f"{C.DATA_TEXT}, n = {sz['n']}",
            "model": "paper",
            "width": sz["width"],
            "eta": eta,
            "eta_rule": f"{ETA_FACTOR_A:g} / lambda_max(K)",
            "steps": T,
            "r": RS,
            "constant_beta_nag": CONST_BETAS,
            "spectrum": C.spectrum(setup),
            "dtype": "float32",
        }
    )
    raws = [
        C.digits_raw(
            "paper",
            sz["n"],
            sz["width"],
            T,
            {"name": "nag_c", "eta": eta, "r": r},
            seed=args.seed,
            kernel_at=[0, T],
        )
        for r in RS
    ]
    runs = C.run_group(raws, label="nag_c r sweep")
    rows = []
    for r, (arrays, result, _cfg, _s) in zip(RS, runs):
        onset = C.bessel_onset(eta, lam_min, r)
        ks = C.crossover_step(eta, lam_min, r)
        window = power_law_window(eta, lam_min, r, T)
        testable = window[1] >= 2 * window[0]
        L0 = float(arrays["loss"][0])
        fits = {
            "train": C.fit(arrays["step"], arrays["loss"], window, C.floor_of("float32", L0)),
            "discrete": C.fit(arrays["step"], arrays["loss_discrete"], window, C.floor_of("float64", L0)),
            "ode": C.fit(arrays["step"], arrays["loss_ode"], window, C.floor_of("float64", L0)),
        }
        rows.append(
            {
                "r": r,
                "window": window,
                "testable": testable,
                "fits": fits,
                "onset": onset,
                "crossover": ks,
                "deviation": result.deviation.to_json(),
            }
        )
        study.add_arrays(
            f"A/nag_c/r={r:g}", {k: arrays[k] for k in ("step", "loss", "loss_discrete", "loss_ode")}
        )
    raws = [
        C.digits_raw(
            "paper",
            sz["n"],
            sz["width"],
            T,
            {"name": "nag", "eta": eta, "beta": b},
            seed=args.seed,
            kernel_at=[0, T],
        )
        for b in CONST_BETAS
    ]
    cruns = C.run_group(raws, label="nag constant beta")
    crow = []
    for b, (arrays, result, _cfg, _s) in zip(CONST_BETAS, cruns):
        L0 = float(arrays["loss"][0])
        window = [0.1 * T, float(T)]
        crow.append(
            {
                "beta": b,
                "window": window,
                "predicted_rate": result.predicted.linear_rate,
                "fits": {
                    "train": C.fit(arrays["step"], arrays["loss"], window, C.floor_of("float32", L0)),
                    "discrete": C.fit(
                        arrays["step"], arrays["loss_discrete"], window, C.floor_of("float64", L0)
                    ),
                },
            }
        )
        study.add_arrays(
            f"A/nag/beta={b:g}", {k: arrays[k] for k in ("step", "loss", "loss_discrete", "loss_ode")}
        )

    return Exponents(
        T=T,
        crow=crow,
        cruns=cruns,
        eta=eta,
        lam_max=lam_max,
        lam_min=lam_min,
        rows=rows,
        runs=runs,
        setup=setup,
    )


def exponents_figure(study, a: Exponents, sz) -> None:
    """nag_exponents.png: the losses on log-log axes and the fitted exponents vs r."""
    crow, cruns, rows, runs = a.crow, a.cruns, a.rows, a.runs
    # figure A
    plt = C.plt()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ax = axes[0]
    for i, (row, run) in enumerate(zip(rows, runs)):
        a = run[0]
        col = colours[i % len(colours)]
        x = np.maximum(a["step"], 1)
        ax.plot(
            *C.positive(x, a["loss"]),
            "-",
            color=col,
            lw=1.5,
            label=f"NAG-C r={row['r']:g}: p = {C.f3(row['fits']['train']['power_exponent'], '.2f')}",
        )
        ax.plot(*C.positive(x, a["loss_discrete"]), "--", color=col, lw=0.8)
        if row["testable"]:
            ax.axvspan(*row["fits"]["train"]["window"], color=col, alpha=0.05)
    for j, (row, run) in enumerate(zip(crow, cruns)):
        a = run[0]
        ax.plot(
            *C.positive(np.maximum(a["step"], 1), a["loss"]),
            "-",
            color="k",
            lw=1.0 + j,
            alpha=0.6,
            label=f"NAG beta={row['beta']:g} (constant): {row['fits']['train']['verdict']}",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("iteration k")
    ax.set_ylabel("training loss")
    ax.set_title(
        f"paper model, digits n = {sz['n']}, m = {sz['width']}, eta = {ETA_FACTOR_A:g}/lambda_max",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    lo = min(np.nanmin(C.positive(r[0]["step"], r[0]["loss"])[1]) for r in runs)
    ax.set_ylim(max(lo * 0.3, 1e-13 * max(r[0]["loss"][0] for r in runs)), None)
    ax = axes[1]
    rr = np.asarray([r["r"] for r in rows])
    for key, style, lab in (
        ("train", "o-", "training"),
        ("discrete", "s--", "kernel recurrence"),
        ("ode", "^:", "ODE (Bessel)"),
    ):
        p = np.asarray(
            [
                np.nan
                if (r["fits"][key]["power_exponent"] is None or not r["testable"])
                else r["fits"][key]["power_exponent"]
                for r in rows
            ],
            float,
        )
        ax.plot(rr, p, style, label=lab)
    ax.plot(rr, -rr, "k-", lw=0.8, label="prediction -r")
    ax.set_xlabel("damping r")
    ax.set_ylabel("fitted exponent p of L ~ k^p")
    ax.set_title("power-law exponent vs r (windows: Bessel onset to k*/10)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    study.figure(
        fig,
        "nag_exponents.png",
        "Left: NAG-C for r in {2, ..., 10} (training solid, kernel recurrence "
        "dashed) and constant-beta NAG (black) on log-log axes; shaded: fit windows. Right: fitted power-law "
        "exponent vs r against the Bessel prediction -r.",
    )


def exponents_claims(study, a: Exponents, sz) -> str:
    """The sublinear, exponent-vs-r and constant-beta claims; returns the setting text."""
    T, crow, eta, rows = a.T, a.crow, a.eta, a.rows
    testable = [r for r in rows if r["testable"]]
    sub = [r for r in testable if r["fits"]["train"]["verdict"] == "sublinear"]
    exps = ", ".join(f"{C.f3(r['fits']['train']['power_exponent'], '.2f')}" for r in testable)
    setting = (
        f"paper model, digits n = {sz['n']}, m = {sz['width']}, eta = {eta:.3g} = {ETA_FACTOR_A:g}/lambda_max"
    )
    xo = min(r["crossover"] for r in rows if r["crossover"])
    rs = ", ".join(f"{r['r']:g}" for r in testable)
    line = (
        f"NAG-C: sublinear in {len(sub)}/{len(testable)} r values (r = {rs}), "
        f"exponents {exps}, over windows "
        + ", ".join(
            f"{int(r['fits']['train']['window'][0])}-{int(r['fits']['train']['window'][1])}" for r in testable
        )
        + f" (all before the predicted crossover k* >= {xo:.3g})."
    )
    untestable = [r for r in rows if not r["testable"]]
    res = C.count_result(len(sub), len(testable))
    if untestable:
        rs = ", ".join(f"{r['r']:g}" for r in untestable)
        line += f" Untestable in T = {T} steps: r = {rs}."
        res = "partly" if res == "agrees" else res
    study.claim(
        "nag_c_sublinear_r_sweep",
        "NAG with vanishing damping r/t converges only sublinearly",
        res,
        line,
        setting=setting,
        figure="nag_exponents.png",
        numbers={
            "r": [r["r"] for r in rows],
            "verdict": [r["fits"]["train"]["verdict"] for r in rows],
            "exponent": [r["fits"]["train"]["power_exponent"] for r in rows],
            "windows": [r["fits"]["train"]["window"] for r in rows],
        },
    )
    close = [
        r
        for r in testable
        if r["fits"]["train"]["power_exponent"] is not None
        and abs(r["fits"]["train"]["power_exponent"] + r["r"]) <= EXPONENT_TOL * r["r"]
    ]
    pr = [
        (r["r"], r["fits"]["train"]["power_exponent"])
        for r in testable
        if r["fits"]["train"]["power_exponent"] is not None
    ]
    slope = float(np.polyfit([a for a, _ in pr], [b for _, b in pr], 1)[0]) if len(pr) >= 2 else None
    line2 = (
        "Fitted exponent vs Bessel prediction -r: "
        + ", ".join(
            f"r={r['r']:g}: {C.f3(r['fits']['train']['power_exponent'], '.2f')} (kernel "
            f"{C.f3(r['fits']['discrete']['power_exponent'], '.2f')}, "
            f"ODE {C.f3(r['fits']['ode']['power_exponent'], '.2f')})"
            for r in testable
        )
        + f"; within {EXPONENT_TOL:.0%} of -r for {len(close)}/{len(testable)}; slope dp/dr = "
        f"{C.f3(slope, '.2f')} (prediction -1)."
        + C.exponent_misses(
            [
                (r["r"], r["fits"]["train"]["power_exponent"], r["fits"]["discrete"]["power_exponent"])
                for r in testable
            ],
            EXPONENT_TOL,
        )
    )
    study.claim(
        "nag_c_exponent_vs_r",
        "The loss of NAG-C decays like k^(-r) (Bessel envelope)",
        C.count_result(len(close), len(testable)),
        line2,
        source="ODE theory (Su, Boyd, Candes 2016: e'' + (r/t) e' + K e = 0, envelope t^(-r/2))",
        setting=setting,
        figure="nag_exponents.png",
        numbers={"dp_dr": slope, "tolerance": EXPONENT_TOL},
    )
    lin = [r for r in crow if r["fits"]["train"]["verdict"] == "linear"]
    line3 = (
        "Constant-beta NAG at the same eta: "
        + ", ".join(
            f"beta={r['beta']:g}: {r['fits']['train']['verdict']} (margin "
            f"{C.f3(r['fits']['train']['margin'], '+.2f')}, "
            f"R2 lin {C.f3(r['fits']['train']['r2_linear'], '.4f')} vs power "
            f"{C.f3(r['fits']['train']['r2_power'], '.4f')}; fitted rate "
            f"{C.f3(r['fits']['train']['linear_rate'], '.6f')}, "
            f"kernel recurrence same window {C.f3(r['fits']['discrete']['linear_rate'], '.6f')}, predicted "
            "k->inf "
            f"{C.f3(r['predicted_rate'], '.6f')})"
            for r in crow
        )
        + f", steps {int(0.1 * T)}-{T}: linear in {len(lin)}/{len(crow)}."
    )
    study.claim(
        "nag_constant_beta_linear",
        "NAG with constant momentum (constant damping) converges linearly, like HB",
        C.count_result(len(lin), len(crow)),
        line3,
        setting=setting,
        window=[0.1 * T, T],
        figure="nag_exponents.png",
        numbers={"beta": CONST_BETAS, "verdict": [r["fits"]["train"]["verdict"] for r in crow]},
    )
    return setting


def exponents_table(study, a: Exponents) -> None:
    """The table: exponents and verdicts per run."""
    crow, rows = a.crow, a.rows
    cols = [
        "optimizer",
        "r / beta",
        "window",
        "verdict train",
        "kernel",
        "ODE",
        "exponent train",
        "exponent kernel",
        "exponent ODE",
        "Bessel -r",
        "fitted rate",
        "margin (R2 lin / pow)",
        "crossover k*",
        "dev kernel",
    ]
    trows = []
    for r in rows:
        f = r["fits"]
        trows.append(
            [
                "nag_c",
                r["r"],
                f"{int(f['train']['window'][0])}-{int(f['train']['window'][1])}",
                f["train"]["verdict"] + ("" if r["testable"] else " (untestable)"),
                f["discrete"]["verdict"],
                f["ode"]["verdict"],
                C.num(f["train"]["power_exponent"], 3),
                C.num(f["discrete"]["power_exponent"], 3),
                C.num(f["ode"]["power_exponent"], 3),
                -r["r"],
                C.num(f["train"]["linear_rate"], 7),
                f"{C.f3(f['train']['margin'], '+.2f')} ({C.f3(f['train']['r2_linear'], '.4f')} / "
                f"{C.f3(f['train']['r2_power'], '.4f')})",
                C.num(r["crossover"], 0),
                C.num(r["deviation"]["discrete"], 3),
            ]
        )
    for r in crow:
        f = r["fits"]
        trows.append(
            [
                "nag",
                r["beta"],
                f"{int(r['window'][0])}-{int(r['window'][1])}",
                f["train"]["verdict"],
                f["discrete"]["verdict"],
                "-",
                C.num(f["train"]["power_exponent"], 3),
                C.num(f["discrete"]["power_exponent"], 3),
                "-",
                "-",
                C.num(f["train"]["linear_rate"], 7),
                f"{C.f3(f['train']['margin'], '+.2f')} ({C.f3(f['train']['r2_linear'], '.4f')} / "
                f"{C.f3(f['train']['r2_power'], '.4f')})",
                "-",
                "-",
            ]
        )
    study.table("NAG-C exponents and constant-beta NAG verdicts", cols, trows)


def run(study: C.Study, args, sz: dict) -> None:
    """Train, fit, draw, claim, tabulate (opened and finished by ``_common.main``)."""
    a = exponents_run(study, args, sz)
    study.lap("training")
    exponents_figure(study, a, sz)
    exponents_claims(study, a, sz)
    exponents_table(study, a)


def main(argv=None) -> int:
    return C.main(
        __doc__,
        "nag_exponents",
        "NAG-C's loss exponent vs r, and constant-beta NAG beside it",
        run,
        SIZES,
        argv,
        summary=2,
    )


if __name__ == "__main__":
    sys.exit(main())
