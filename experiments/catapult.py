"""The catapult phase of GD, heavy ball and NAG-SC: onset and divergence edge, predicted and measured.

    python experiments/catapult.py [--quick] [--seed 0] --out DIR

A two-layer ReLU network with both layers trained (``_two_layer``: f = m^(-1/2) sum_r a_r relu(w_r . x),
NTK parametrisation, n = 16 points on S^4, teacher targets, L = (1/2n)||f - y||^2, K = H/n), trained
full-batch at eta = ratio x eta_crit, eta_crit = limit / lambda_0, lambda_0 = lambda_max(K) at theta_0 and
limit the method's stability limit of one linear mode (``sharpness.stability_limit``: GD 2, heavy ball
2(1 + beta), NAG-SC with constant beta 2(1 + beta)/(1 + 2 beta), derived there by the Jury test of its
2x2 iteration and checked against the companion matrix's spectral radius in tests/test_sharpness.py).
Methods: GD, HB (beta = 0.5, 0.9), NAG-SC (optax/torch Nesterov, beta = 0.9), ntkdyn's training faces.
Beside each network run its quadratic model at theta_0 (Zhu, Liu, Belkin 2022, arXiv 2205.11787;
``ntkdyn.quadratic``) is trained by the same method and step.

Recorded: the loss at every step, lambda_max(K) of the run's own model every ``every`` steps (the
exact n x n Gram), divergence (loss non-finite or above 1e8 L_0). Phase of a run: diverged; catapult
(finite, and lambda_max(K) ends below (1 - 0.02) lambda_0: the sharpness, not the loss spike, whose size
depends on how much of the initial error lies along the top mode); lazy otherwise. Predicted
boundaries: the onset at ratio 1 (the linear mode along lambda_0 turns unstable: Lewkowycz et al.
2020, arXiv 2003.02218); the divergence edge where the quadratic model diverges (Lewkowycz et al.'s
solvable model: eta = 4/lambda_0, ratio 2 for GD). Measured brackets: onset in (largest lazy ratio
below the first catapult, first catapult]; edge in (largest finite ratio below the first diverged,
first diverged]. Rules: the onset is "predicted within 5 %" when its bracket lies in [0.95, 1.05]; the
quadratic model "predicts the edge" when its bracket is the network's; the gap is stated either way.
"""

from __future__ import annotations

import math
import sys

import _common as C
import _two_layer as T
import numpy as np

from ntkdyn import sharpness

SIZES = {
    "full": {"widths": [256, 1024, 4096], "seeds": 1, "steps": 300, "every": 20},
    "quick": {"widths": [64, 128, 256], "seeds": 1, "steps": 200, "every": 20},
}
ACT = "relu"
RATIOS = (0.5, 0.9, 0.96, 1.04, 1.1, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 4.0, 6.0)
METHODS = {  # label: (registry name, beta)
    "gd": ("hb", 0.0),
    "hb_0.5": ("hb", 0.5),
    "hb_0.9": ("hb", 0.9),
    "nag_sc_0.9": ("nag", 0.9),
}
SHRINK_TOL = 0.02  # lambda_end < (1 - SHRINK_TOL) lambda_0 counts as a catapult
ONSET_TOL = 0.05
SOURCE = "Lewkowycz, Bahri, Dyer, Sohl-Dickstein, Gur-Ari 2020 (arXiv:2003.02218)"
SOURCE_QUAD = "Zhu, Liu, Belkin 2022 (arXiv:2205.11787)"


def limit_of(label: str) -> float:
    name, beta = METHODS[label]
    return sharpness.stability_limit("gd" if beta == 0.0 else name, beta)


def make_tx(h):
    """Heavy ball (GD at beta = 0) or NAG-SC, row-selected by h["nesterov"]; eta and beta traced."""
    return T.switch_tx(
        [
            T.registry_tx("hb", {"eta": h["eta"], "beta": h["beta"]}),
            T.registry_tx("nag", {"eta": h["eta"], "beta": h["beta"]}),
        ],
        h["nesterov"],
    )


def phase(diverged_at: int, lam_end: float, lam0: float) -> str:
    if diverged_at >= 0 or not math.isfinite(lam_end):
        return "diverged"
    return "catapult" if lam_end < (1 - SHRINK_TOL) * lam0 else "lazy"


def brackets(ratios, phases) -> dict:
    """Onset bracket (largest lazy ratio below the first catapult, first catapult], edge bracket
    (largest finite ratio below the first diverged, first diverged] and the largest finite ratio."""
    rs = sorted(zip(ratios, phases))
    cat = [r for r, p in rs if p == "catapult"]
    div = [r for r, p in rs if p == "diverged"]
    fc, fd = (min(cat) if cat else math.nan), (min(div) if div else math.nan)
    return {
        "onset": [max((r for r, p in rs if p == "lazy" and not r > fc), default=math.nan), fc],
        "edge": [max((r for r, p in rs if p != "diverged" and not r > fd), default=math.nan), fd],
        "last_finite": max((r for r, p in rs if p != "diverged"), default=math.nan),
    }


def fb(b) -> str:
    """A bracket [lo, hi] as (lo, hi]."""
    return f"({b[0]:g}, {b[1]:g}]"


def run_width(m: int, seeds: list[int], steps: int, every: int) -> list[dict]:
    pb = T.problem(ACT, m, seeds)
    rows = [
        (label, r, s, w)
        for label in METHODS
        for r in RATIOS
        for s in range(len(seeds))
        for w in (T.WHICH["network"], T.WHICH["quadratic"])
    ]
    si = np.array([x[2] for x in rows])
    eta = np.array([x[1] * limit_of(x[0]) for x in rows]) / pb.lam0[si]
    hyper = {
        "eta": eta,
        "beta": [METHODS[x[0]][1] for x in rows],
        "nesterov": [int(METHODS[x[0]][0] == "nag") for x in rows],
    }
    tr = T.trajectories(pb, make_tx, hyper, si, [x[3] for x in rows], steps, every)
    lam = tr.lam_max(pb.c)
    out = []
    for j, (label, r, s, w) in enumerate(rows):
        lam0 = float(pb.lam0[s])
        L = tr.loss[j]
        fin = L[np.isfinite(L)]
        out.append(
            {
                "m": m,
                "method": label,
                "ratio": r,
                "seed": seeds[s],
                "which": "network" if w == 0 else "quadratic",
                "lam0": lam0,
                "eta": float(eta[j]),
                "lam_end": float(lam[j, -1]),
                "lam": lam[j],
                "loss": L,
                "spike": float(fin.max() / L[0]),
                "diverged_at": int(tr.diverged_at[j]),
                "phase": phase(int(tr.diverged_at[j]), float(lam[j, -1]), lam0),
            }
        )
    return out


def body(study: C.Study, args, sz: dict) -> None:
    widths, steps, every = sz["widths"], sz["steps"], sz["every"]
    seeds = [args.seed + i for i in range(sz["seeds"])]
    study.setting(
        widths=widths,
        seeds=seeds,
        steps=steps,
        lam_every=every,
        activation=ACT,
        n=T.N_POINTS,
        d=T.DIM,
        ratios=list(RATIOS),
        methods={k: {"optimizer": v[0], "beta": v[1], "limit": limit_of(k)} for k, v in METHODS.items()},
        shrink_tol=SHRINK_TOL,
        onset_tol=ONSET_TOL,
        divergence_factor=T.DIVERGENCE_FACTOR,
    )
    runs = [x for m in widths for x in run_width(m, seeds, steps, every)]
    study.lap("train")
    for x in runs:
        study.add_arrays(
            f"{x['which']}/{x['method']}/m={x['m']}/ratio={x['ratio']:g}/seed={x['seed']}",
            {"loss": x["loss"], "lam_max": x["lam"], "lam0": x["lam0"], "eta": x["eta"]},
        )
    study.add_arrays("lam_steps", {"step": np.arange(0, steps + 1, every)})

    br: dict = {}
    for m in widths:
        for label in METHODS:
            for s in seeds:
                for which in ("network", "quadratic"):
                    sel = [
                        x
                        for x in runs
                        if (x["m"], x["method"], x["seed"], x["which"]) == (m, label, s, which)
                    ]
                    br[m, label, s, which] = brackets([x["ratio"] for x in sel], [x["phase"] for x in sel])
    big = widths[-1]
    setting = f"two-layer ReLU net, both layers trained, NTK parametrisation, n = {T.N_POINTS}, {steps} steps"

    # claim 1: onset within 5 % at the largest width (by the sharpness)
    ok = {}
    for label in METHODS:
        for s in seeds:
            lo, hi = br[big, label, s, "network"]["onset"]
            ok[f"{label}/seed={s}"] = bool(lo >= 1 - ONSET_TOL and hi <= 1 + ONSET_TOL)
    parts = "; ".join(
        f"{label}: {fb(br[big, label, s, 'network']['onset'])}" for label in METHODS for s in seeds
    )
    per_width = "; ".join(
        f"m = {m}: "
        + ", ".join(f"{label} {fb(br[m, label, seeds[0], 'network']['onset'])}" for label in METHODS)
        for m in widths[:-1]
    )
    # below the predicted onset: the sharpness drop 1 - lambda_end / lambda_0 at the largest ratio < 1,
    # per width (a finite-width drift shrinks with m; a catapult's drop does not)
    below_r = max(r for r in RATIOS if r < 1)
    drop = {
        label: {
            m: next(
                1 - x["lam_end"] / x["lam0"]
                for x in runs
                if (x["m"], x["method"], x["ratio"], x["seed"], x["which"])
                == (m, label, below_r, seeds[0], "network")
            )
            for m in widths
        }
        for label in METHODS
    }
    drop_text = "; ".join(
        f"{label} " + ", ".join(f"{100 * v:.1f} %" for v in d.values()) for label, d in drop.items()
    )
    study.claim(
        "onset_at_stability_limit",
        "The catapult starts where the top linear mode turns unstable, eta = limit / lambda_0 "
        "(GD 2, HB 2(1 + beta), NAG-SC 2(1 + beta)/(1 + 2 beta)), within 5 % at the largest width, "
        "measured by the sharpness (lambda_max(K) ends below lambda_0).",
        C.count_result(sum(ok.values()), len(ok)),
        f"m = {big}: onset bracket (eta/eta_crit) within [{1 - ONSET_TOL:g}, {1 + ONSET_TOL:g}] for "
        f"{sum(ok.values())}/{len(ok)} runs: {parts} (smaller widths: {per_width}). Sharpness drop "
        f"1 - lambda_end/lambda_0 at eta/eta_crit = {below_r:g} (m = {', '.join(map(str, widths))}): "
        f"{drop_text}.",
        source=SOURCE,
        setting=setting,
        numbers={
            "onset": {
                f"m={m}/{label}/seed={s}": br[m, label, s, "network"]["onset"]
                for m in widths
                for label in METHODS
                for s in seeds
            },
            "within": ok,
            "drop_below_onset": drop,
            "drop_ratio": below_r,
        },
        figure="catapult_phases.png",
    )
    # claim 2: catapults end below the method's stability limit
    cats = [x for x in runs if x["which"] == "network" and x["phase"] == "catapult"]
    below = [x for x in cats if x["eta"] * x["lam_end"] <= limit_of(x["method"])]
    worst = max((x["eta"] * x["lam_end"] / limit_of(x["method"]) for x in cats), default=math.nan)
    study.claim(
        "catapult_ends_below_limit",
        "After a catapult the sharpness settles below the method's stability limit: "
        "eta lambda_max(K) <= limit.",
        C.count_result(len(below), len(cats)),
        f"{len(below)}/{len(cats)} network catapult runs end with eta lambda_max(K) <= the limit "
        f"(largest eta lambda_end / limit {worst:.3f}).",
        source=SOURCE,
        setting=setting,
        numbers={"below": len(below), "catapults": len(cats), "worst_ratio": worst},
        figure="catapult_sharpness.png",
    )
    # claim 3: the divergence edge from the quadratic model
    eok, gaps = {}, {}
    for label in METHODS:
        for s in seeds:
            bn, bq = br[big, label, s, "network"]["edge"], br[big, label, s, "quadratic"]["edge"]
            eok[f"{label}/seed={s}"] = bool(bn == bq or (math.isnan(bn[1]) and math.isnan(bq[1])))
            gaps[f"{label}/seed={s}"] = (bq[0] - bn[0]) / bn[0] if bn[0] == bn[0] and bq[0] == bq[0] else None
    parts = "; ".join(
        f"{label}: network {fb(br[big, label, s, 'network']['edge'])}, "
        f"quadratic {fb(br[big, label, s, 'quadratic']['edge'])}"
        + ("" if gaps[f"{label}/seed={s}"] is None else f" (gap {100 * gaps[f'{label}/seed={s}']:+.0f} %)")
        for label in METHODS
        for s in seeds
    )
    study.claim(
        "edge_from_quadratic_model",
        "The quadratic model predicts where the network diverges (the catapult's upper edge).",
        C.count_result(sum(eok.values()), len(eok)),
        f"m = {big}: the quadratic model's divergence bracket (eta/eta_crit) is the network's for "
        f"{sum(eok.values())}/{len(eok)} runs: {parts}; gap = (quadratic - network) / network on the "
        f"largest finite ratio, grid {', '.join(f'{r:g}' for r in RATIOS)}.",
        source=SOURCE_QUAD,
        setting=setting,
        numbers={
            "network": {
                f"m={m}/{l}/seed={s}": br[m, l, s, "network"]["edge"]
                for m in widths
                for l in METHODS
                for s in seeds
            },
            "quadratic": {
                f"m={m}/{l}/seed={s}": br[m, l, s, "quadratic"]["edge"]
                for m in widths
                for l in METHODS
                for s in seeds
            },
            "same_bracket": eok,
            "gap": gaps,
        },
        figure="catapult_phases.png",
    )
    # claim 4: GD's edge against Lewkowycz et al.'s 4/lambda_0 (ratio 2)
    gd_in = {f"m={m}/seed={s}": br[m, "gd", s, "network"]["edge"] for m in widths for s in seeds}
    hits = sum(1 for lo, hi in gd_in.values() if lo <= 2.0 < hi or (lo == 2.0))
    study.claim(
        "gd_edge_4_over_lambda0",
        "For GD the network diverges near eta = 4/lambda_0 (Lewkowycz et al.'s solvable model; their "
        "ReLU networks up to about 12/lambda_0).",
        C.count_result(hits, len(gd_in)),
        f"GD divergence bracket (eta/eta_crit; 4/lambda_0 is 2) contains 2 for {hits}/{len(gd_in)} widths: "
        + ", ".join(f"{k} ({v[0]:g}, {v[1]:g}]" for k, v in gd_in.items())
        + ".",
        source=SOURCE,
        setting=setting,
        numbers={"edge": gd_in},
        figure="catapult_phases.png",
    )
    # claim 5 (info): a loss-spike rule against the sharpness rule
    net = [x for x in runs if x["which"] == "network" and x["phase"] != "diverged"]
    mis = [x for x in net if (x["spike"] > 1.0) != (x["phase"] == "catapult")]
    by = {label: sum(1 for x in mis if x["method"] == label) for label in METHODS}
    study.claim(
        "loss_spike_rule",
        "A loss-spike rule (max_k L_k > L_0) classifies catapults as the sharpness does.",
        "agrees" if not mis else "differs",
        f"the spike rule disagrees with the sharpness rule on {len(mis)}/{len(net)} finite network runs "
        f"({', '.join(f'{k} {v}' for k, v in by.items())}); e.g. "
        + ", ".join(
            f"{x['method']} m={x['m']} ratio {x['ratio']:g}: spike {x['spike']:.3g}, {x['phase']}"
            for x in mis[:3]
        )
        + ".",
        source="issue 20 (a loss-spike rule misclassifies heavy ball at beta = 0.9)",
        setting=setting,
        numbers={"disagree": len(mis), "runs": len(net), "by_method": by},
    )

    rows = []
    for m in widths:
        for label in METHODS:
            for s in seeds:
                bn, bq = br[m, label, s, "network"], br[m, label, s, "quadratic"]
                rows.append(
                    [
                        m,
                        label,
                        s,
                        f"({bn['onset'][0]:g}, {bn['onset'][1]:g}]",
                        f"({bq['onset'][0]:g}, {bq['onset'][1]:g}]",
                        f"({bn['edge'][0]:g}, {bn['edge'][1]:g}]",
                        f"({bq['edge'][0]:g}, {bq['edge'][1]:g}]",
                    ]
                )
    study.table(
        "Phase boundaries in eta / eta_crit (eta_crit = limit / lambda_0): measured brackets, "
        "network and quadratic model",
        ["m", "method", "seed", "onset network", "onset quadratic", "edge network", "edge quadratic"],
        rows,
        note="onset: (largest lazy, first catapult]; edge: (largest finite, first diverged]; "
        "nan: not reached on the grid",
    )

    plt = C.plt()
    colors = {"lazy": "C0", "catapult": "C1", "diverged": "C3"}
    fig, axes = plt.subplots(1, len(METHODS), figsize=(4 * len(METHODS), 3.6), sharey=True)
    for ax, label in zip(axes, METHODS):
        for k, m in enumerate(widths):
            for which, off, mk in (("network", 0.12, "o"), ("quadratic", -0.12, "x")):
                sel = [
                    x
                    for x in runs
                    if (x["m"], x["method"], x["seed"], x["which"]) == (m, label, seeds[0], which)
                ]
                ax.scatter(
                    [x["ratio"] for x in sel],
                    [k + off] * len(sel),
                    c=[colors[x["phase"]] for x in sel],
                    marker=mk,
                    s=30,
                )
        ax.axvline(1.0, color="k", lw=0.8, ls="--")
        ax.set(xscale="log", title=f"{label} (limit {limit_of(label):.3g})", xlabel="eta / eta_crit")
        ax.set_yticks(range(len(widths)), [f"m={m}" for m in widths])
    fig.suptitle("phases: lazy (blue), catapult (orange), diverged (red); o network, x quadratic model")
    fig.tight_layout()
    study.figure(
        fig,
        "catapult_phases.png",
        "Measured phases per method and width (o network, x quadratic model) against eta/eta_crit; "
        "dashed: the predicted onset.",
    )

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    step_l = np.arange(0, steps + 1, every)
    for r in (0.9, 1.1, 1.5, 2.0):
        x = next(
            (x for x in runs if (x["m"], x["method"], x["ratio"], x["which"]) == (big, "gd", r, "network")),
            None,
        )
        if x is None:
            continue
        axes[0].semilogy(np.arange(steps + 1), x["loss"], label=f"{r:g}")
        axes[1].plot(step_l, x["lam"] / x["lam0"], label=f"{r:g}")
        axes[1].axhline(1 / r, color=axes[1].lines[-1].get_color(), ls=":", lw=0.8)
    axes[0].set(title=f"GD, m = {big}: loss", xlabel="step")
    axes[1].set(title="lambda_max(K) / lambda_0 (dotted: 2/(eta lambda_0))", xlabel="step")
    axes[0].legend(title="eta/eta_crit")
    fig.tight_layout()
    study.figure(
        fig,
        "catapult_sharpness.png",
        "GD at the largest width: the loss spike and the sharpness falling below 2/eta in a catapult.",
    )


if __name__ == "__main__":
    sys.exit(C.main(__doc__, "catapult", "The catapult phase: onset and divergence edge", body, SIZES))
