"""Critical batch size of mini-batch SGD in the kernel regime: predicted best step size and
epochs-to-epsilon against the batch size b, with training overlaid.

    python experiments/batch_size.py [--quick] [--seed 0] --out DIR

Paper model on sphere data (the quickstart's: n = 64, d = 16, teacher targets), GD with b indices
drawn i.i.d. a step (train.sampling: replacement), gradient scaled n/b. For every b, from the
network's NTK at initialisation (K = H0, float64):

* eta*(b): the step size minimising the spectral radius of the second-moment operator
  (``stochastic.best_step_size``), i.e. the best asymptotic rate of the mean loss E[L_k];
* two Ma-Bassily-Belkin (2018) steps from their one-step bound E[H_B^2] <= (beta/b) H + (1 - 1/b) H^2
  (beta = n max_i K_ii, lam_1 >= lam_n the extreme nonzero eigenvalues of K; ``stochastic.MBBConstants``):
  the general convex-smooth step b / (beta + (b - 1) lam_1) (knee 1 + beta / lam_1), and the minimiser
  of the bound for this quadratic loss, b / (beta + (b - 1) lam_n) up to the critical batch size
  m* = beta / (lam_1 - lam_n) + 1 and 2b / (beta + (b - 1)(lam_1 + lam_n)) above it;
* steps and epochs (steps x b / n) until E[L_k] <= eps L_0 at eta*(b), from the exact second-moment
  recurrence (``stochastic.second_moment_loss``).

Training: at every b, ``sampling_runs`` batch orders at eta*(b) as one compiled program; the mean
loss gives the measured steps and epochs to eps. Expected (MBB): eta* grows linearly in b below the
critical batch size m* and saturates above it; epochs to eps stay about flat below m* and grow about linearly
above it (each step past m* is worth about one full-batch step).
"""

from __future__ import annotations

import math
import sys

import _common as C
import numpy as np

from ntkdyn import optimizers, stochastic

SIZES = {
    "full": {"width": 4096, "batches": [1, 2, 4, 8, 16, 32, 64], "runs": 32},
    "quick": {"width": 2048, "batches": [1, 4, 32, 64], "runs": 8},
}
N, D = 64, 16
EPS = 1e-2  # loss reduction factor
HORIZON = 20000  # steps searched for the predicted steps-to-eps
SOURCE = "Ma, Bassily, Belkin 2018 (arXiv:1712.06559)"


def raw_config(width: int, seed: int, b: int, eta: float, steps: int, runs: int) -> dict:
    return {
        "name": "batch_size",
        "seed": int(seed),
        "dtype": "float32",
        "data": {"source": "sphere", "n": N, "d": D, "target": "teacher"},
        "model": {"name": "paper", "width": int(width)},
        "train": {
            "steps": int(steps),
            "record_every": 1,
            "batch_size": int(b),
            "sampling": "replacement",
            "sampling_runs": int(runs),
            "kernel_at": [0],
        },
        "theory": {"kernel": "H0", "diffrax": False, "mc_runs": 200, "linearized": "never"},
        "rates": {"window": [0.1, 1.0]},
        "optimizers": [{"name": "gd", "eta": float(eta), "label": f"b{b}"}],
    }


def slope(bs, values) -> float | None:
    return C.loglog_slope(bs, values) if len(bs) >= 2 else None


def run(study: C.Study, args, sz: dict) -> None:
    """The study (opened and finished by ``_common.main``)."""
    probe = raw_config(sz["width"], args.seed, 1, 0.01, 10, 1)
    _, setup = C.setup_for(probe)
    spec = optimizers.get("gd")
    mbb = stochastic.mbb_constants(setup.K)
    study.setting(
        data=f"sphere, n = {N}, d = {D}, teacher targets",
        model="paper",
        width=sz["width"],
        seed=args.seed,
        optimizer="gd (SGD), replacement sampling",
        batches=sz["batches"],
        sampling_runs=sz["runs"],
        eps=EPS,
        kernel="H0 (float64)",
        beta=mbb.beta,
        lam_1=mbb.lam_1,
        lam_n=mbb.lam_n,
        smooth_knee=mbb.smooth_knee_batch_size,
        critical_batch_size=mbb.quadratic_critical_batch_size,
    )

    rows, pred, trained = [], {}, {}
    for b in sz["batches"]:
        eta, rate = stochastic.best_step_size(spec, {}, setup.lam, setup.V, b, grid=16)
        loss = stochastic.second_moment_loss(
            spec, {"eta": eta}, setup.lam, setup.V, setup.coef, setup.c, HORIZON, b
        )
        k = stochastic.steps_to(loss, EPS)
        pred[b] = {
            "eta": eta,
            "rate": rate,
            "steps": k,
            "epochs": None if k is None else k * b / N,
            "mbb_smooth_eta": float(mbb.smooth_step_size(b)),
            "mbb_quadratic_eta": float(mbb.quadratic_step_size(b)),
        }
    study.lap("theory")

    for b in sz["batches"]:
        p = pred[b]
        if p["steps"] is None:
            continue
        steps = int(math.ceil(1.5 * p["steps"]))
        raw = raw_config(sz["width"], args.seed, b, p["eta"], steps, sz["runs"])
        arrays, result, cfg, _ = C.run_group([raw], label=f"b={b}")[0]
        k = stochastic.steps_to(arrays["loss"], EPS)
        trained[b] = {
            "steps": k,
            "epochs": None if k is None else k * b / N,
            "status": result.status,
            "inside_band": result.stochastic.inside_band if result.stochastic else None,
            "deviation": result.deviation.discrete,
        }
        study.add_arrays(
            f"b{b}",
            {
                "step": arrays["step"],
                "loss": arrays["loss"],
                "loss_mean_pred": arrays["loss_discrete"],
                "loss_band_lo": arrays.get("loss_band_lo"),
                "loss_band_hi": arrays.get("loss_band_hi"),
            },
        )
        rows.append(
            [
                b,
                p["eta"],
                p["mbb_smooth_eta"],
                p["mbb_quadratic_eta"],
                p["rate"],
                p["steps"],
                p["epochs"],
                k,
                trained[b]["epochs"],
                trained[b]["inside_band"],
            ]
        )
    study.lap("training")
    study.table(
        "Best step size and epochs to eps vs batch size (GD, replacement)",
        [
            "b",
            "eta* (second moment)",
            "MBB convex-smooth step",
            "MBB quadratic-bound optimum",
            "rate at eta*",
            "steps to eps (pred)",
            "epochs (pred)",
            "steps to eps (train)",
            "epochs (train)",
            "trained mean inside band",
        ],
        rows,
        note=f"eps = {EPS}; epochs = steps x b / n, n = {N}; "
        f"critical batch size m* = beta/(lam_1 - lam_n) + 1 = {mbb.quadratic_critical_batch_size:.3g} "
        f"(convex-smooth knee 1 + beta/lam_1 = {mbb.smooth_knee_batch_size:.3g})",
    )

    bs = np.array(sz["batches"], float)
    etas = np.array([pred[b]["eta"] for b in sz["batches"]])
    knee = mbb.quadratic_critical_batch_size
    low, high = bs <= knee / 2, bs >= 2 * knee
    s_low = slope(bs[low], etas[low]) if low.sum() >= 2 else None
    s_high = slope(bs[high], etas[high]) if high.sum() >= 2 else None
    if s_low is None or s_high is None:
        result, line = (
            "inconclusive",
            (
                f"too few batch sizes on one side of m* = {knee:.3g} "
                f"({int(low.sum())} below b*/2, {int(high.sum())} above 2 b*)"
            ),
        )
    else:
        ok = s_low >= 0.6 and s_high <= 0.35
        result = "agrees" if ok else "differs"
        line = (
            f"eta*(b) from the second-moment operator grows like b^{s_low:.2f} below b*/2 and b^{s_high:.2f} "
            f"above 2 b* (b* = m* = beta/(lam_1 - lam_n) + 1 = {knee:.3g}); linear scaling then saturation "
            f"{'holds' if ok else 'does not hold'} (thresholds: slope >= 0.6 below, <= 0.35 above)"
        )
    study.claim(
        "linear_scaling",
        "The best step size grows linearly with the batch size up to a critical batch "
        "size and saturates beyond it",
        result,
        line,
        source=SOURCE,
        numbers={"slope_below": s_low, "slope_above": s_high, "knee": knee},
        figure="batch_size.png",
    )

    smooth = [pred[b]["mbb_smooth_eta"] / pred[b]["eta"] for b in sz["batches"]]
    quad = [pred[b]["mbb_quadratic_eta"] / pred[b]["eta"] for b in sz["batches"]]
    study.claim(
        "mbb_step",
        "MBB's steps (the convex-smooth form and the optimum of their bound for this quadratic loss) "
        "against the exact best step",
        "info",
        "step / eta*(b): convex-smooth "
        + ", ".join(f"{r:.2f} (b={b})" for r, b in zip(smooth, sz["batches"]))
        + "; quadratic-bound optimum "
        + ", ".join(f"{r:.2f} (b={b})" for r, b in zip(quad, sz["batches"]))
        + ": both are best steps of an upper bound on E||w - w*||^2, "
        "the exact one comes from the second-moment operator of the mean loss",
        source=SOURCE,
        numbers={"smooth_ratio": smooth, "quadratic_ratio": quad},
    )

    epochs = {b: pred[b]["epochs"] for b in sz["batches"] if pred[b]["epochs"] is not None}
    if epochs:
        e1 = epochs[min(epochs)]
        b_crit = max((b for b, e in epochs.items() if e <= 2 * e1), default=None)
        result = "agrees" if b_crit is not None and knee / 4 <= b_crit <= 4 * knee else "differs"
        study.claim(
            "critical_batch",
            "The critical batch size (linear-scaling limit) is about MBB's m* = beta / (lam_1 - lam_n) + 1",
            result,
            f"largest b with predicted epochs to eps within 2x of b = {min(epochs)}: b = {b_crit}; "
            f"MBB m* = {knee:.3g} (agrees within a factor 4: {result == 'agrees'})",
            source=SOURCE,
            numbers={"b_crit": b_crit, "knee": knee, "epochs": epochs},
        )

    hits, total, parts = 0, 0, []
    for b, t in trained.items():
        p = pred[b]
        if t["epochs"] is None or p["epochs"] is None:
            parts.append(f"b={b}: not reached")
            total += 1
            continue
        total += 1
        close = abs(t["epochs"] / p["epochs"] - 1) <= 0.25
        hits += close
        parts.append(f"b={b}: {t['epochs']:.3g} vs {p['epochs']:.3g}")
    study.claim(
        "training_epochs",
        "Training reaches eps L0 after the predicted number of epochs (within 25 %)",
        C.count_result(hits, total),
        f"trained vs predicted epochs to eps = {EPS}: " + "; ".join(parts) + f" ({hits}/{total} within 25 %)",
        source="kernel-regime second-moment recurrence (ntkdyn.stochastic)",
        numbers={"trained": trained, "predicted": pred},
    )

    plt = C.plt()
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    ax[0].loglog(bs, etas, "o-", label="eta*(b): second-moment operator")
    ax[0].loglog(
        bs, [pred[b]["mbb_smooth_eta"] for b in sz["batches"]], "s--", label="MBB convex-smooth step"
    )
    ax[0].loglog(
        bs, [pred[b]["mbb_quadratic_eta"] for b in sz["batches"]], "^--", label="MBB quadratic-bound optimum"
    )
    ax[0].axvline(knee, color="gray", ls=":", label=f"m* = {knee:.3g}")
    ax[0].set_xlabel("batch size b")
    ax[0].set_ylabel("step size")
    ax[0].legend()
    eb = [b for b in sz["batches"] if pred[b]["epochs"] is not None]
    ax[1].loglog(eb, [pred[b]["epochs"] for b in eb], "o-", label="predicted (exact E[L])")
    tb = [b for b in trained if trained[b]["epochs"] is not None]
    ax[1].loglog(
        tb, [trained[b]["epochs"] for b in tb], "x", ms=10, mew=2, label=f"training (mean of {sz['runs']})"
    )
    ax[1].axvline(knee, color="gray", ls=":")
    ax[1].set_xlabel("batch size b")
    ax[1].set_ylabel(f"epochs to L <= {EPS:g} L0")
    ax[1].legend()
    fig.tight_layout()
    study.figure(
        fig,
        "batch_size.png",
        "Left: best step size vs batch size (exact, and MBB's two bound steps), critical batch size "
        "m* = beta/(lam_1 - lam_n) + 1. Right: epochs to eps at eta*(b), predicted and trained.",
    )


def main(argv=None) -> int:
    return C.main(
        __doc__,
        "batch_size",
        "Critical batch size: best step size and epochs to epsilon vs batch size",
        run,
        SIZES,
        argv,
        summary=1,
    )


if __name__ == "__main__":
    sys.exit(main())
