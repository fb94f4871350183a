"""The finite-width correction: the network against its linearisation and its quadratic model, vs width.

    python experiments/finite_width.py [--quick] [--seed 0] --out DIR

A two-layer network with both layers trained (``_two_layer``: f = m^(-1/2) sum_r a_r phi(w_r . x),
NTK parametrisation, n = 16 points on S^4, teacher targets, L = (1/2n)||f - y||^2), with ReLU and with
softplus, trained full-batch by GD (eta = 1/lambda_0), heavy ball (beta = 0.9, eta = 1/lambda_0),
NAG-C (r = 3, eta = 1/lambda_0) and Adam (eta = 0.02 (256/m)^(1/2): the step that keeps Adam's move in
function space about the same at every width, as in adam_width), lambda_0 = lambda_max(K) at theta_0.
The same optimizer (ntkdyn's training faces) trains, from the same theta_0, the network, its
linearisation at theta_0 and its quadratic model at theta_0 (Zhu, Liu, Belkin 2022, arXiv 2205.11787;
``ntkdyn.quadratic``'s nested jvps), as one compiled program per width and activation.

Measured per run: the linear gap max_k |L_lin - L| / L_0 and the quadratic gap max_k |L_quad - L| / L_0
(``quadratic.relative_gap``), the share of the deviation the quadratic model explains, 1 - gap_quad /
gap_lin, and the kernel drift ||H(theta_k) - H(theta_0)||_F / ||H(theta_0)||_F at the snapshot steps,
measured on the network and predicted by the quadratic model (its Jacobian J_0 + Hess f(theta_0) d moves
linearly in d = theta - theta_0). Exponents: least squares of log gap on log m over every (width, seed)
point, with standard errors (``flips.power_fit``). For ReLU, Hess f(theta_0) has the a-W cross term only
(ReLU'' = 0 a.e.) and the quadratic model keeps every activation pattern of theta_0; there the
deviation is patterns flipping, so the study counts the flipped (unit, point) pairs at the end of
training (``flips.count_flips``) and predicts them from the linearised trajectory: a pair is predicted
to flip when its pre-activation's kernel-regime move crosses its margin at theta_0,
sign(z_ir(0) + dz_ir) != sign(z_ir(0)) (``flips.predict_flips``).

Rules (stated, computed): the quadratic model "explains" the deviation of an optimizer when its median
share at the largest width is >= 0.8 and its gap falls faster with m than the linear gap (p_quad <
p_lin); it "is not the correction" when that share is < 0.5. The flip prediction holds when the median
predicted / counted ratio is within [0.5, 2] at every width. The kernel drift is predicted when the
median (over seeds and snapshots) predicted / measured ratio at the largest width is within [0.8, 1.25].
"""

from __future__ import annotations

import sys

import _common as C
import _two_layer as T
import numpy as np

from ntkdyn import flips, quadratic

SIZES = {
    "full": {"widths": [256, 1024, 4096, 16384], "seeds": 3, "steps": 300, "every": 50},
    "quick": {"widths": [64, 128, 256], "seeds": 2, "steps": 200, "every": 50},
}
OPTIMIZERS = ("gd", "hb", "nag_c", "adam")
ACTIVATIONS = ("softplus", "relu")
BETA, R, ADAM_ETA, ADAM_M_REF = 0.9, 3.0, 0.02, 256
SHARE_EXPLAINS, SHARE_NOT = 0.8, 0.5
FLIP_RANGE, DRIFT_RANGE = (0.5, 2.0), (0.8, 1.25)
SOURCE_QUAD = "Zhu, Liu, Belkin 2022 (arXiv:2205.11787); issue 20's probe"
SOURCE_FLIPS = "Du, Zhai, Poczos, Singh 2019 (arXiv:1810.02054): the deviation of ReLU nets is flips"


def make_tx(h):
    """The four optimizers (ntkdyn's training faces), row-selected by h["kind"] (index in OPTIMIZERS)."""
    txs = [
        T.registry_tx("gd", {"eta": h["eta"]}),
        T.registry_tx("hb", {"eta": h["eta"], "beta": BETA}),
        T.registry_tx("nag_c", {"eta": h["eta"], "r": R}),
        T.registry_tx("adam", {"eta": h["eta"]}),
    ]
    return T.switch_tx(txs, h["kind"])


def drift(H: np.ndarray) -> np.ndarray:
    """||H_k - H_0||_F / ||H_0||_F along the snapshot axis (axis 0)."""
    return np.linalg.norm(H - H[0], axis=(-2, -1)) / np.linalg.norm(H[0])


def run_width(act: str, m: int, seeds: list[int], steps: int, every: int) -> dict:
    """All optimizers x seeds x (network, linear, quadratic) at one width: per (opt, seed) the losses,
    gaps, drifts and (ReLU) flips."""
    pb = T.problem(act, m, seeds)
    rows = [(k, s, w) for k in range(len(OPTIMIZERS)) for s in range(len(seeds)) for w in range(3)]
    kind = np.array([r[0] for r in rows])
    si = np.array([r[1] for r in rows])
    eta = np.where(kind == OPTIMIZERS.index("adam"), ADAM_ETA * np.sqrt(ADAM_M_REF / m), 1.0 / pb.lam0[si])
    tr = T.trajectories(pb, make_tx, {"eta": eta, "kind": kind}, si, [r[2] for r in rows], steps, every)
    out = {}
    for j in range(0, len(rows), 3):
        k, s, _ = rows[j]
        Ln, Ll, Lq = tr.loss[j], tr.loss[j + 1], tr.loss[j + 2]
        rec = {
            "loss": Ln,
            "loss_lin": Ll,
            "loss_quad": Lq,
            "gap_lin": quadratic.relative_gap(Ln, Ll),
            "gap_quad": quadratic.relative_gap(Ln, Lq),
            "drift": drift(tr.gram[j]),
            "drift_quad": drift(tr.gram[j + 2]),
            "eta": float(eta[j]),
            "lam0": float(pb.lam0[s]),
            "diverged": int(max(tr.diverged_at[j : j + 3])),
        }
        if act == "relu":
            p0 = T.row(pb.params0, s)
            cnt = flips.count_flips(p0, T.row(tr.final, j), pb.X)
            pred = flips.predict_flips(p0, T.row(tr.final, j + 1), pb.X, init_std=1.0)
            rec |= {"flipped": cnt.flipped, "flip_bound": cnt.bound, "flip_pred": pred.crossed}
        out[(OPTIMIZERS[k], seeds[s])] = rec
    return out


def fit(ms, vals) -> dict:
    ms, vals = np.asarray(ms, float), np.asarray(vals, float)
    ok = np.isfinite(vals) & (vals > 0)
    if ok.sum() < 3 or np.unique(ms[ok]).size < 2:
        return {"slope": None, "se": None, "points": int(ok.sum())}
    f = flips.power_fit(ms[ok], vals[ok])
    return {"slope": f.exponent, "se": f.stderr, "points": f.points}


def pm(f: dict) -> str:
    return "-" if f["slope"] is None else f"{f['slope']:.2f} ± {f['se']:.2f}"


def body(study: C.Study, args, sz: dict) -> None:
    widths, steps, every = sz["widths"], sz["steps"], sz["every"]
    seeds = [args.seed + i for i in range(sz["seeds"])]
    study.setting(
        widths=widths,
        seeds=seeds,
        steps=steps,
        snapshot_every=every,
        n=T.N_POINTS,
        d=T.DIM,
        optimizers=list(OPTIMIZERS),
        activations=list(ACTIVATIONS),
        beta_hb=BETA,
        r_nag_c=R,
        eta="1/lambda_0 (gd, hb, nag_c); adam 0.02 (256/m)^(1/2)",
        rules={
            "explains": f"median share >= {SHARE_EXPLAINS} at the largest width and p_quad < p_lin",
            "not_the_correction": f"median share < {SHARE_NOT} at the largest width",
            "flips": f"median predicted/counted in {list(FLIP_RANGE)} at every width",
            "drift": f"median predicted/measured drift in {list(DRIFT_RANGE)} at the largest width",
        },
    )
    res: dict = {}
    for act in ACTIVATIONS:
        for m in widths:
            res[act, m] = run_width(act, m, seeds, steps, every)
            C.clear_setups()
        study.lap(act)
    for (act, m), per in res.items():
        for (opt, s), r in per.items():
            study.add_arrays(
                f"{act}/{opt}/m={m}/seed={s}",
                {k: r[k] for k in ("loss", "loss_lin", "loss_quad", "drift", "drift_quad")},
            )
    study.add_arrays("snapshots", {"step": np.arange(0, steps + 1, every)})

    # fits and summaries per (act, opt)
    summ: dict = {}
    big = widths[-1]
    for act in ACTIVATIONS:
        for opt in OPTIMIZERS:
            pts = [(m, res[act, m][opt, s]) for m in widths for s in seeds]
            ms = [m for m, _ in pts]
            share_big = [1 - r["gap_quad"] / r["gap_lin"] for m, r in pts if m == big]
            ratio_big = [
                r["drift_quad"][1:] / r["drift"][1:] for m, r in pts if m == big and r["diverged"] < 0
            ]
            row = {
                "lin": fit(ms, [r["gap_lin"] for _, r in pts]),
                "quad": fit(ms, [r["gap_quad"] for _, r in pts]),
                "share_big": float(np.median(share_big)),
                "share_by_m": {
                    m: float(np.median([1 - r["gap_quad"] / r["gap_lin"] for mm, r in pts if mm == m]))
                    for m in widths
                },
                "drift_ratio_big": float(np.median(np.concatenate(ratio_big))) if ratio_big else None,
                "drift_big": float(np.median([r["drift"][-1] for m, r in pts if m == big])),
                "diverged": sum(r["diverged"] >= 0 for _, r in pts),
            }
            if act == "relu":
                row["flipped"] = fit(ms, [r["flipped"] for _, r in pts])
                row["flip_pred"] = fit(ms, [r["flip_pred"] for _, r in pts])
                row["flip_ratio_by_m"] = {
                    m: float(
                        np.median(
                            [r["flip_pred"] / r["flipped"] for mm, r in pts if mm == m and r["flipped"] > 0]
                        )
                    )
                    if any(r["flipped"] > 0 for mm, r in pts if mm == m)
                    else None
                    for m in widths
                }
            summ[act, opt] = row
            study.add_arrays(
                f"{act}/{opt}",
                {
                    "widths": np.asarray(ms),
                    "gap_lin": [r["gap_lin"] for _, r in pts],
                    "gap_quad": [r["gap_quad"] for _, r in pts],
                },
            )
            if act == "relu":
                study.add_arrays(
                    f"{act}/{opt}",
                    {
                        "flipped": [r["flipped"] for _, r in pts],
                        "flip_pred": [r["flip_pred"] for _, r in pts],
                    },
                )

    setting = (
        f"two-layer net, both layers trained, n = {T.N_POINTS}, m = {widths[0]}-{widths[-1]}, "
        f"{len(seeds)} seeds, {steps} steps"
    )
    # claim 1: softplus, the quadratic model explains the deviation
    ok = {
        o: summ["softplus", o]["share_big"] >= SHARE_EXPLAINS
        and summ["softplus", o]["quad"]["slope"] is not None
        and summ["softplus", o]["lin"]["slope"] is not None
        and summ["softplus", o]["quad"]["slope"] < summ["softplus", o]["lin"]["slope"]
        for o in OPTIMIZERS
    }
    parts = "; ".join(
        f"{o}: share {summ['softplus', o]['share_big']:.2f}, p_lin {pm(summ['softplus', o]['lin'])}, "
        f"p_quad {pm(summ['softplus', o]['quad'])}"
        for o in OPTIMIZERS
    )
    study.claim(
        "softplus_quadratic_explains",
        "With a smooth activation (softplus) the quadratic model explains the network's deviation from "
        "its linearisation: its gap is a small share of the linear one and shrinks faster with m.",
        C.count_result(sum(ok.values()), len(ok)),
        f"softplus, m = {big}: the quadratic model explains the deviation for {sum(ok.values())}/{len(ok)} "
        f"optimizers (median share 1 - gap_quad/gap_lin >= {SHARE_EXPLAINS} and p_quad < p_lin): {parts}.",
        source=SOURCE_QUAD,
        setting=setting,
        numbers={
            o: {
                "share": summ["softplus", o]["share_big"],
                "lin": summ["softplus", o]["lin"],
                "quad": summ["softplus", o]["quad"],
            }
            for o in OPTIMIZERS
        }
        | {"explains": ok},
        figure="finite_width.png",
    )
    # claim 2: relu, it does not
    notc = {o: summ["relu", o]["share_big"] < SHARE_NOT for o in OPTIMIZERS}
    parts = "; ".join(
        f"{o}: share {summ['relu', o]['share_big']:.2f}, p_lin {pm(summ['relu', o]['lin'])}, "
        f"p_quad {pm(summ['relu', o]['quad'])}"
        for o in OPTIMIZERS
    )
    study.claim(
        "relu_quadratic_not_the_correction",
        "With ReLU the quadratic model is not the finite-width correction: it keeps theta_0's activation "
        "patterns and explains little of the deviation.",
        C.count_result(sum(notc.values()), len(notc)),
        f"ReLU, m = {big}: the quadratic model explains less than {SHARE_NOT:g} of the deviation for "
        f"{sum(notc.values())}/{len(notc)} optimizers: {parts}.",
        source=SOURCE_FLIPS,
        setting=setting,
        numbers={
            o: {
                "share": summ["relu", o]["share_big"],
                "lin": summ["relu", o]["lin"],
                "quad": summ["relu", o]["quad"],
            }
            for o in OPTIMIZERS
        }
        | {"not_the_correction": notc},
        figure="finite_width.png",
    )
    # claim 3: relu flips predicted from the linearised trajectory
    fok = {
        o: all(
            v is not None and FLIP_RANGE[0] <= v <= FLIP_RANGE[1]
            for v in summ["relu", o]["flip_ratio_by_m"].values()
        )
        for o in OPTIMIZERS
    }
    parts = "; ".join(
        f"{o}: predicted/counted "
        + ", ".join(C.f3(v, ".2f") for v in summ["relu", o]["flip_ratio_by_m"].values())
        + f", exponents counted {pm(summ['relu', o]['flipped'])}, "
        f"predicted {pm(summ['relu', o]['flip_pred'])}"
        for o in OPTIMIZERS
    )
    study.claim(
        "relu_flips_predicted",
        "For ReLU, the fraction of activation patterns that flip is predicted from the linearised "
        "trajectory (each pre-activation's kernel-regime move against its margin at theta_0).",
        C.count_result(sum(fok.values()), len(fok)),
        f"ReLU flips predicted within {FLIP_RANGE[0]:g}-{FLIP_RANGE[1]:g}x at every width "
        f"(m = {', '.join(map(str, widths))}) for {sum(fok.values())}/{len(fok)} optimizers: {parts}.",
        source=SOURCE_FLIPS,
        setting=setting,
        numbers={
            o: {
                "ratio_by_m": summ["relu", o]["flip_ratio_by_m"],
                "counted": summ["relu", o]["flipped"],
                "predicted": summ["relu", o]["flip_pred"],
            }
            for o in OPTIMIZERS
        }
        | {"holds": fok},
        figure="finite_width.png",
    )
    # claim 4: kernel drift predicted by the quadratic model (softplus); ReLU reported beside
    dok = {
        o: summ["softplus", o]["drift_ratio_big"] is not None
        and DRIFT_RANGE[0] <= summ["softplus", o]["drift_ratio_big"] <= DRIFT_RANGE[1]
        for o in OPTIMIZERS
    }
    parts = "; ".join(
        f"{o}: {C.f3(summ['softplus', o]['drift_ratio_big'], '.2f')} "
        f"(drift {summ['softplus', o]['drift_big']:.2g}; "
        f"ReLU {C.f3(summ['relu', o]['drift_ratio_big'], '.2f')})"
        for o in OPTIMIZERS
    )
    study.claim(
        "kernel_drift_predicted",
        "The quadratic model predicts the kernel's drift ||H_k - H_0|| / ||H_0|| along training "
        "(its Jacobian moves linearly in theta - theta_0).",
        C.count_result(sum(dok.values()), len(dok)),
        f"softplus, m = {big}: median predicted/measured kernel drift over the snapshots within "
        f"{DRIFT_RANGE[0]:g}-{DRIFT_RANGE[1]:g} for {sum(dok.values())}/{len(dok)} optimizers: {parts}.",
        source=SOURCE_QUAD,
        setting=setting,
        numbers={
            f"{a}/{o}": {"ratio": summ[a, o]["drift_ratio_big"], "drift": summ[a, o]["drift_big"]}
            for a in ACTIVATIONS
            for o in OPTIMIZERS
        }
        | {"holds": dok},
        figure="finite_width.png",
    )

    table_rows = []
    for act in ACTIVATIONS:
        for o in OPTIMIZERS:
            s = summ[act, o]
            table_rows.append(
                [act, o, pm(s["lin"]), pm(s["quad"])]
                + [round(s["share_by_m"][m], 3) for m in widths]
                + [C.f3(s["drift_ratio_big"], ".2f"), pm(s["flipped"]) if act == "relu" else "-"]
            )
    study.table(
        "Finite-width gaps: exponents of max_k |L_model - L| / L_0 in m (± standard error) "
        "and the share 1 - gap_quad/gap_lin",
        ["activation", "optimizer", "p_lin", "p_quad"]
        + [f"share m={m}" for m in widths]
        + [f"drift pred/meas m={big}", "p_flipped"],
        table_rows,
        note="medians over seeds; exponents fitted over every (width, seed) point",
    )

    plt = C.plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colors = dict(zip(OPTIMIZERS, ("C0", "C1", "C2", "C3")))
    for ax, act in zip(axes[:2], ACTIVATIONS):
        for o in OPTIMIZERS:
            gl = [np.median([res[act, m][o, s]["gap_lin"] for s in seeds]) for m in widths]
            gq = [np.median([res[act, m][o, s]["gap_quad"] for s in seeds]) for m in widths]
            ax.loglog(widths, gl, "o-", color=colors[o], label=f"{o} linear")
            ax.loglog(widths, gq, "s--", color=colors[o], label=f"{o} quadratic")
        ax.set(title=f"{act}: max|L_model - L| / L_0", xlabel="width m")
        ax.legend(fontsize=7)
    ax = axes[2]
    for o in OPTIMIZERS:
        fc = [np.median([res["relu", m][o, s]["flipped"] for s in seeds]) for m in widths]
        fp = [np.median([res["relu", m][o, s]["flip_pred"] for s in seeds]) for m in widths]
        ax.loglog(widths, fc, "o-", color=colors[o], label=f"{o} counted")
        ax.loglog(widths, fp, "x:", color=colors[o], label=f"{o} predicted")
    ax.set(title="ReLU: flipped fraction of (unit, point) pairs", xlabel="width m")
    ax.legend(fontsize=7)
    fig.tight_layout()
    study.figure(
        fig,
        "finite_width.png",
        "Network - linearised (solid) and network - quadratic (dashed) loss gaps vs width; "
        "ReLU flips counted and predicted from the linearised trajectory.",
    )


if __name__ == "__main__":
    sys.exit(
        C.main(__doc__, "finite_width", "Finite-width correction: linearised vs quadratic model", body, SIZES)
    )
