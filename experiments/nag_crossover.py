"""NAG-C at a fixed step size: the crossover from its power-law transient to a linear tail.

    python experiments/nag_crossover.py [--quick] [--seed 0] --out DIR

Problem B of ``_nag`` (small, float64; eta = 1 / lambda_max so that the crossover is reached):
NAG-C with r = 3 run to 10 k*, past the predicted crossover k* = r / -log(1 - eta lambda_min) of the
slowest mode (``theory.vanishing_tail``). The error is recorded at every step and projected on the
slowest NTK eigenvector; a fit log c_k^2 = a + p log k + k log q over [k*/4, 8 k*] gives the
measured power p, tail factor q and crossover p / log q, for training and for the kernel
recurrence (the same fit on the total loss is reported too); local log-log slopes against
-r + k log(1 - eta lambda_min); the high-resolution ODE (gradient correction sqrt(eta) K e')
against the low-resolution (Bessel) one over the tail.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any

import _common as C
import numpy as np
from _nag import R_B, SIZES

from ntkdyn import rates

ETA_FACTOR_B = 1.0
CROSSOVER_TOL = 0.25  # |k*_measured / k*_predicted - 1| <= CROSSOVER_TOL counts as "matches"


# --------------------------------------------------------------------------- measurements
def envelope_fit(step, loss, window, floor) -> dict:
    """log L = a + p log k + k log q over ``window`` (all recorded points above ``floor``, at least
    10): power exponent p, tail loss factor q and the crossover k = p / log q (``rates.tail_fit``)."""
    return rates.tail_fit(step, loss, window, floor, peaks_only=False, min_points=10)


def local_slope(step, loss, floor, per_decade: int = 6):
    """d log L / d log k of the upper envelope (the local maxima of L, so that oscillations through
    zero do not count) by least squares in overlapping log-spaced bins of k."""
    step, loss = np.asarray(step, np.float64), np.asarray(loss, np.float64)
    peak = np.zeros(loss.shape, bool)
    peak[1:-1] = (loss[1:-1] >= loss[:-2]) & (loss[1:-1] >= loss[2:])
    ok = peak & (step >= 1) & np.isfinite(loss) & (loss > floor)
    k, L = step[ok], np.log(loss[ok])
    if k.size < 6:
        return np.array([]), np.array([])
    edges = np.geomspace(max(k[0], 2.0), k[-1], int(per_decade * np.log10(k[-1] / max(k[0], 2.0))) + 2)
    xs, ys = [], []
    for a, b in zip(edges[:-2], edges[2:]):  # overlapping bins of two widths
        m = (k >= a) & (k <= b)
        if m.sum() >= 2:
            xs.append(math.sqrt(a * b))
            ys.append(np.polyfit(np.log(k[m]), L[m], 1)[0])
    return np.asarray(xs), np.asarray(ys)


@dataclasses.dataclass(frozen=True)
class Crossover:
    """The measurements: NAG-C at a fixed eta on one run (float64): the predicted crossover
    (``pred``, ``ks``), the trained and predicted losses and slowest mode, their tail fits over
    ``window`` (``envelope_fit``) and the mean log10 gaps of each prediction over the ``tail``."""

    eta: Any
    lam_min: Any
    T: Any
    ks: Any
    pred: Any
    window: Any
    tail: Any
    step: Any
    loss: Any
    floor: Any
    L0: Any
    hr: Any
    loss_discrete: Any
    loss_ode: Any
    mode_train: Any
    mode_disc: Any
    mode_floor: Any
    fit_mode: Any
    fit_mode_disc: Any
    fit_train: Any
    fit_disc: Any
    fit_hr: Any
    gaps: Any
    lam: Any


def crossover_run(study, args, sz) -> Crossover:
    """Train NAG-C past its predicted crossover and fit the slowest mode and the total loss."""
    probe = C.digits_raw(
        "paper", sz["b_n"], sz["b_width"], 10, {"name": "gd", "eta": 1.0}, seed=args.seed, dtype="float64"
    )
    _, setup = C.setup_for(probe)
    lam_min, lam_max = float(setup.lam[0]), float(setup.lam[-1])
    eta = ETA_FACTOR_B / lam_max
    pred = C.theory.vanishing_tail(eta, lam_min, R_B)
    ks = float(pred["crossover_step"])
    T = int(math.ceil(10 * ks / 100.0) * 100)
    study.setting(
        problem_b={
            "data": f"{C.DATA_TEXT}, n = {sz['b_n']}",
            "model": "paper",
            "width": sz["b_width"],
            "dtype": "float64",
            "eta": eta,
            "eta_rule": f"{ETA_FACTOR_B:g} / lambda_max(K)",
            "r": R_B,
            "steps": T,
            "spectrum": C.spectrum(setup),
            "predicted_slowest_mode": pred,
            "measured_on": "the slowest NTK eigenmode: c_k = (v_min . e_k) / (v_min . e_0), error "
            "recorded at every step; and the total loss",
        }
    )
    raw = C.digits_raw(
        "paper",
        sz["b_n"],
        sz["b_width"],
        T,
        {"name": "nag_c", "eta": eta, "r": R_B},
        seed=args.seed,
        dtype="float64",
        error_at=list(range(T + 1)),
        kernel_at=[0, T],
    )
    ((arrays, _result, cfg, s),) = C.run_group([raw], label=f"nag_c crossover ({T} steps, float64)")
    step, loss = arrays["step"], arrays["loss"]
    L0 = float(loss[0])
    floor = C.floor_of("float64", L0)
    hr = arrays.get("loss_ode_hr")
    if hr is None:
        hr = C.highres_loss("nag_c", {"eta": eta, "r": R_B}, s, step)
    # the slowest mode, from training and from the kernel recurrence
    v, c0 = s.V[:, 0], float(s.coef[0])
    mode_train = (np.asarray(arrays["errors"], np.float64) @ v / c0) ** 2
    spec = C.optimizers.get("nag_c")
    mode_disc = (
        C.theory.discrete_modes(spec, {"eta": eta, "r": R_B}, s.lam[:1], s.coef[:1], T)[:, 0] / c0
    ) ** 2
    mode_floor = rates.loss_floor("float64", 1.0)  # modes normalised to 1 at k = 0
    window = [0.25 * ks, min(8.0 * ks, float(T))]
    fit_mode = envelope_fit(step, mode_train, window, mode_floor)
    fit_mode_disc = envelope_fit(step, mode_disc, window, mode_floor)
    fit_train = envelope_fit(step, loss, window, floor)
    fit_disc = envelope_fit(step, arrays["loss_discrete"], window, floor)
    fit_hr = envelope_fit(step, hr, window, floor) if hr is not None else None
    study.add_arrays(
        "B",
        {
            "step": step,
            "loss": loss,
            "loss_discrete": arrays["loss_discrete"],
            "loss_ode": arrays["loss_ode"],
            "loss_ode_hr": hr,
            "slowest_mode_train": mode_train,
            "slowest_mode_discrete": mode_disc,
        },
    )

    def log_gap(pred_loss, lo, hi):  # mean |log10 L_pred - log10 L_train| over [lo, hi] (rates.log_gap)
        if pred_loss is None:
            return None
        return rates.log_gap(pred_loss, loss, floor, (step >= lo) & (step <= hi)).as_dict()["mean"]

    tail = [ks, float(T)]
    gaps = {
        "low_res_ode": log_gap(arrays["loss_ode"], *tail),
        "high_res_ode": log_gap(hr, *tail),
        "kernel_recurrence": log_gap(arrays["loss_discrete"], *tail),
    }

    return Crossover(
        eta=eta,
        lam_min=lam_min,
        T=T,
        ks=ks,
        pred=pred,
        window=window,
        tail=tail,
        step=step,
        loss=loss,
        floor=floor,
        L0=L0,
        hr=hr,
        loss_discrete=arrays["loss_discrete"],
        loss_ode=arrays["loss_ode"],
        mode_train=mode_train,
        mode_disc=mode_disc,
        mode_floor=mode_floor,
        fit_mode=fit_mode,
        fit_mode_disc=fit_mode_disc,
        fit_train=fit_train,
        fit_disc=fit_disc,
        fit_hr=fit_hr,
        gaps=gaps,
        lam=s.lam,
    )


def crossover_figure(study, c: Crossover, sz) -> None:
    """nag_crossover.png: total loss, slowest mode and local log-log slopes."""
    plt = C.plt()
    fig, axes = plt.subplots(1, 3, figsize=(18, 5))
    x = np.maximum(c.step, 1)
    ax = axes[0]
    ax.plot(*C.positive(x, c.loss), "-", lw=1.8, label="training (float64)")
    ax.plot(*C.positive(x, c.loss_discrete), "--", lw=1.0, label="kernel recurrence")
    ax.plot(*C.positive(x, c.loss_ode), ":", lw=1.2, label="low-resolution ODE (Bessel, pure power law)")
    if c.hr is not None:
        ax.plot(*C.positive(x, c.hr), "-.", lw=1.0, label="high-resolution ODE (+ sqrt(eta) K e')")
    ax.axvline(c.ks, color="k", lw=0.8, ls="--", label=f"predicted crossover k* = {c.ks:.0f}")
    ax.set_title(
        f"total loss: NAG-C r = {R_B:g}, eta = 1/lambda_max (n = {sz['b_n']}, m = {sz['b_width']})",
        fontsize=10,
    )
    ax.set_ylim(max(c.floor, np.nanmin(C.positive(x, c.loss)[1]) * 0.1), c.L0 * 3)
    ax.set_ylabel("loss")
    ax = axes[1]
    ax.plot(*C.positive(x, c.mode_train), "-", lw=1.5, label="slowest mode, training")
    ax.plot(*C.positive(x, c.mode_disc), "--", lw=1.0, label="slowest mode, kernel recurrence")
    env = np.exp(-R_B * np.log(x) + c.step * math.log(c.pred["tail_rate"]))
    k0 = np.searchsorted(c.step, c.window[0])
    env *= np.nanmax(c.mode_disc[k0 : k0 + 50]) / env[k0] if k0 < len(env) else 1.0
    ax.plot(x, env, "k-", lw=0.8, label="k^(-r) (1 - eta lambda_min)^k")
    ax.axvline(c.ks, color="k", lw=0.8, ls="--")
    if c.fit_mode["crossover_step"]:
        ax.axvline(
            c.fit_mode["crossover_step"],
            color="r",
            lw=0.8,
            label=f"measured k* = {c.fit_mode['crossover_step']:.0f}",
        )
    ax.set_ylim(max(c.mode_floor, np.nanmin(C.positive(x, c.mode_train)[1]) * 0.1), 10)
    ax.set_title(
        f"slowest eigenmode (lambda_min = {c.lam_min:.3g}, eta lambda_min = {c.eta * c.lam_min:.3g}): c_k^2",
        fontsize=10,
    )
    ax.set_ylabel("(v_min . e_k / v_min . e_0)^2")
    for ax in axes[:2]:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("iteration k")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    ax = axes[2]
    for y, fl, style, lab in (
        (c.mode_train, c.mode_floor, "-", "slowest mode, training"),
        (c.mode_disc, c.mode_floor, "--", "slowest mode, kernel recurrence"),
        (c.loss, c.floor, ":", "total loss, training"),
    ):
        xs, sl = local_slope(c.step, y, fl)
        ax.plot(xs, sl, style, label=lab)
    kk = np.geomspace(max(2.0, 0.02 * c.ks), c.T, 200)
    ax.plot(
        kk, -R_B + kk * math.log(c.pred["tail_rate"]), "k-", lw=0.8, label="-r + k log(1 - eta lambda_min)"
    )
    ax.axhline(-R_B, color="grey", lw=0.8, ls=":")
    ax.axvline(c.ks, color="k", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_ylim(max(-8 * R_B, -40), 1)
    ax.set_xlabel("iteration k")
    ax.set_ylabel("local log-log slope d log L / d log k")
    ax.set_title("power law (slope -r), then linear tail (slope -> -infinity)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    study.figure(
        fig,
        "nag_crossover.png",
        "NAG-C at a fixed step: total loss with the low- and high-resolution "
        "ODEs (left); the slowest NTK eigenmode of training and of the kernel recurrence against the "
        "envelope "
        "k^(-r) (1 - eta lambda_min)^k (middle); local log-log slopes against -r + k log(1 - eta lambda_min) "
        "(right). Dashed vertical line: the predicted crossover k*.",
    )


def crossover_claims(study, c: Crossover, sz) -> None:
    """The crossover claims (slowest mode, total loss) and the high-resolution ODE over the tail."""
    setting = (
        f"paper model, digits n = {sz['b_n']}, m = {sz['b_width']}, float64, "
        f"eta = {c.eta:.3g} = 1/lambda_max, "
        f"eta lambda_min = {c.eta * c.lam_min:.3g}, r = {R_B:g}, {c.T} steps"
    )

    def rel(fit):
        return None if fit["crossover_step"] is None else fit["crossover_step"] / c.ks - 1.0

    r_mode, r_mode_disc = rel(c.fit_mode), rel(c.fit_mode_disc)
    tail_rel = None
    if c.fit_mode["tail_rate"] and c.pred.get("tail_rate"):
        tail_rel = math.log(c.fit_mode["tail_rate"]) / math.log(c.pred["tail_rate"]) - 1.0
    res = "inconclusive" if r_mode is None else ("agrees" if abs(r_mode) <= CROSSOVER_TOL else "differs")
    line = (
        f"NAG-C at fixed eta ({setting}), slowest eigenmode: predicted crossover k* = r / -log(1 - eta "
        "lambda_min) = "
        f"{c.ks:.0f}; fitting log c_k^2 = a + p log k + k log q over steps "
        f"{int(c.window[0])}-{int(c.window[1])} "
        "gives "
        f"k* = p / log q = {C.f3(c.fit_mode['crossover_step'], '.0f')} for training ({C.f3(r_mode, '+.0%')}) "
        "and "
        f"{C.f3(c.fit_mode_disc['crossover_step'], '.0f')} for the kernel recurrence "
        f"({C.f3(r_mode_disc, '+.0%')}); power "
        f"part p = {C.f3(c.fit_mode['power_exponent'], '.2f')} (prediction {-R_B:g}); tail factor per step "
        f"{C.f3(c.fit_mode['tail_rate'], '.6f')} vs 1 - eta lambda_min = "
        f"{C.f3(c.pred.get('tail_rate'), '.6f')} "
        f"(log-rate {C.f3(tail_rel, '+.0%')}). So 'NAG-C is sublinear' holds only before k*; after it the "
        f"convergence is linear."
    )
    study.claim(
        "nag_c_crossover",
        "At a fixed step size NAG-C leaves its power law for a linear tail near "
        "k* = r / -log(1 - eta lambda_min)",
        res,
        line,
        source="fixed-step NAG-C roots: |z|^2 -> 1 - eta lambda as beta_k -> 1",
        setting=setting,
        window=c.window,
        figure="nag_crossover.png",
        numbers={
            "predicted": c.pred,
            "fit_slowest_mode_train": c.fit_mode,
            "fit_slowest_mode_kernel": c.fit_mode_disc,
            "tolerance": CROSSOVER_TOL,
        },
    )
    line_total = (
        "Same fit on the total loss (all modes mixed): "
        f"k* = {C.f3(c.fit_train['crossover_step'], '.0f')} for "
        f"training, {C.f3(c.fit_disc['crossover_step'], '.0f')} for the kernel recurrence and "
        f"{C.f3(c.fit_hr['crossover_step'] if c.fit_hr else None, '.0f')} for the high-resolution ODE "
        "(single-mode "
        f"prediction {c.ks:.0f}); p = {C.f3(c.fit_train['power_exponent'], '.2f')}, tail factor "
        f"{C.f3(c.fit_train['tail_rate'], '.6f')}. The next-slowest modes (lambda_2/lambda_min = "
        f"{c.lam[1] / c.lam[0]:.3g}) still contribute in this window, so the total loss bends later than "
        "one mode."
    )
    study.claim(
        "nag_c_crossover_total_loss",
        "Crossover seen in the total loss",
        "info",
        line_total,
        source="fixed-step NAG-C: envelope k^(-r) (1 - eta lambda_min)^k per mode",
        setting=setting,
        window=c.window,
        figure="nag_crossover.png",
        numbers={
            "fit_total_train": c.fit_train,
            "fit_total_kernel": c.fit_disc,
            "fit_total_high_res_ode": c.fit_hr,
        },
    )
    if c.gaps["high_res_ode"] is not None:
        better = c.gaps["high_res_ode"] < c.gaps["low_res_ode"]
        line2 = (
            f"Over the tail (steps {int(c.ks)}-{c.T}) the mean |log10 L_pred - log10 L_train| is "
            f"{C.f3(c.gaps['high_res_ode'])} decades for the high-resolution ODE, "
            f"{C.f3(c.gaps['low_res_ode'])} "
            "for the "
            f"low-resolution (Bessel) ODE and {C.f3(c.gaps['kernel_recurrence'])} for the kernel recurrence: "
            "the "
            f"gradient-correction term sqrt(eta) K e' {'does' if better else 'does not'} account for the "
            "tail."
        )
        study.claim(
            "nag_c_highres_tail",
            "The high-resolution ODE (gradient correction sqrt(eta) K e') explains the "
            "linear tail that the low-resolution ODE misses",
            "agrees" if better else "differs",
            line2,
            source="Shi, Du, Jordan, Su 2018",
            setting=setting,
            window=c.tail,
            figure="nag_crossover.png",
            numbers=c.gaps,
        )


def run(study: C.Study, args, sz: dict) -> None:
    """Train past the crossover, draw, claim (opened and finished by ``_common.main``)."""
    c = crossover_run(study, args, sz)
    study.lap("training")
    crossover_figure(study, c, sz)
    crossover_claims(study, c, sz)


def main(argv=None) -> int:
    return C.main(
        __doc__,
        "nag_crossover",
        "NAG-C at a fixed step size: the crossover from the power law to a linear tail",
        run,
        SIZES,
        argv,
        summary=2,
    )


if __name__ == "__main__":
    sys.exit(main())
