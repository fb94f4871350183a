"""Where the continuous picture holds: deviation between training and the limiting ODE as the
step size shrinks at a fixed width, for GD, HB and NAG-C; and the order of every ODE against its
exact recurrence as eta -> 0.

    python experiments/ode_limit.py [--quick] [--seed 0] --out DIR

Paper model on digits. eta = c / lambda_max(K) for c = 1, 1/4, 1/16, ... Each run covers the same
span of ODE time, so smaller steps take more iterations: GD t = k eta (gradient flow e' = -K e),
HB t = k sqrt(eta) with gamma = (1 - beta)/sqrt(eta) held fixed (beta = 1 - gamma sqrt(eta), the
heavy-ball ODE e'' + gamma e' + K e = 0), NAG-C (r = 3) t = k sqrt(eta) (e'' + (3/t) e' + K e = 0).
Three gaps per run (max relative loss gap over the run): training vs ODE, kernel recurrence vs ODE
(discretisation only; width plays no part) and training vs kernel recurrence (finite width only).

Orders (no training): on the same spectrum and initial error, for c = eta lambda_max down to 1e-5, the
max over a fixed ODE-time horizon of ||e_k - e(t_k)|| / ||e_0|| between the exact kernel recurrence
(theory.discrete_modes) and each ODE (low resolution: theory.ode_modes; high resolution, Shi, Du,
Jordan, Su 2018: theory.highres_modes), regressed on log eta (as diffrax's test_ode_order): GD, HB,
NAG-SC (nag), NAG-C in the torch form (nag_c) and the classic form (nag_c_classic). Expected: 1 for
gradient flow (t = k eta), 0.5 for the second-order low-resolution ODEs, 1 for the high-resolution ones.
"""

from __future__ import annotations

import math
import sys

import _common as C
import numpy as np

from ntkdyn import optimizers, rates, theory

SIZES = {
    "full": {"n": 300, "width": 4096, "factors": [1.0, 1 / 4, 1 / 16, 1 / 64, 1 / 256]},
    "quick": {"n": 100, "width": 1024, "factors": [1.0, 1 / 4, 1 / 16]},
}
BASE_STEPS = 100  # iterations at c = 1; the ODE time span is the same for every c
HB_BETA0 = 0.5  # beta at c = 1; gamma = (1 - HB_BETA0) sqrt(lambda_max) is held fixed
NAG_R = 3.0
RECORDS = 400  # about this many recorded losses per run
EXPECTED_ORDER = {"gd": 1.0, "hb": 0.5, "nag_c": 0.5}  # local error of the time map: O(eta) / O(sqrt(eta))
ORDER_FACTORS = {
    "full": [1e-2, 1e-3, 1e-4, 1e-5],
    "quick": [1e-3, 1e-4, 1e-5],
}  # eta lambda_max of the order fits
ORDER_HORIZON = 8.0  # ODE time horizon of the order fits: 8 / sqrt(lambda_max) (GD: 8 / lambda_max)
ORDER_METHODS = ("gd", "hb", "nag", "nag_c", "nag_c_classic")
ORDER_EXPECTED = {"low": {"gd": 1.0}, "high": {}}  # default: 0.5 (low), 1.0 (high)


def steps_for(name: str, c: float) -> int:
    scale = 1.0 / c if name == "gd" else 1.0 / math.sqrt(c)
    return int(round(BASE_STEPS * scale))


def record_every(steps: int) -> int:
    k = max(1, steps // RECORDS)
    while steps % k:
        k -= 1
    return k


def run(study: C.Study, args, sz: dict) -> None:
    """The study (opened and finished by ``_common.main``)."""
    probe = C.digits_raw("paper", sz["n"], sz["width"], 10, {"name": "gd", "eta": 1.0}, seed=args.seed)
    _, setup = C.setup_for(probe)
    lam_max = float(setup.lam[-1])
    gamma = (1 - HB_BETA0) * math.sqrt(lam_max)
    study.setting(
        data=f"{C.DATA_TEXT}, n = {sz['n']}",
        model="paper",
        width=sz["width"],
        seed=args.seed,
        eta_factors=sz["factors"],
        eta="c / lambda_max(K)",
        spectrum=C.spectrum(setup),
        steps_at_c1=BASE_STEPS,
        hb=f"gamma = (1 - {HB_BETA0}) sqrt(lambda_max) = {gamma:.4g} fixed, beta = 1 - gamma sqrt(eta)",
        nag_c=f"r = {NAG_R:g}",
        dtype="float32 (training), float64 (theory)",
        deviation="max over recorded steps of |L_a - L_b| / L_b where both exceed the float32 floor",
    )
    out = {}
    for name in ("gd", "hb", "nag_c"):
        rows = []
        for c in sz["factors"]:
            eta = c / lam_max
            opt = {"name": name, "eta": eta}
            if name == "hb":
                opt["beta"] = 1.0 - gamma * math.sqrt(eta)
            if name == "nag_c":
                opt["r"] = NAG_R
            steps = steps_for(name, c)
            raw = C.digits_raw(
                "paper",
                sz["n"],
                sz["width"],
                steps,
                opt,
                seed=args.seed,
                record_every=record_every(steps),
                kernel_at=[0, steps],
            )
            ((arrays, result, cfg, s),) = C.run_group([raw], label=f"{name} c={c:g} ({steps} steps)")
            L0 = float(arrays["loss"][0])
            floor = C.floor_of("float32", L0)
            mask = (arrays["loss_ode"] > floor) & (arrays["loss_discrete"] > floor)
            disc_vs_ode = rates.max_relative_gap(arrays["loss_ode"], arrays["loss_discrete"], mask)
            hr = arrays.get("loss_ode_hr")
            if hr is None and name != "gd":
                hr = C.highres_loss(name, opt, s, arrays["step"])
            disc_vs_hr = train_vs_hr = None
            if hr is not None:
                arrays["loss_ode_hr"] = hr
                m_hr = (hr > floor) & (arrays["loss_discrete"] > floor)
                disc_vs_hr = rates.max_relative_gap(hr, arrays["loss_discrete"], m_hr)
                train_vs_hr = rates.max_relative_gap(hr, arrays["loss"], m_hr & (arrays["loss"] > floor))
            rows.append(
                {
                    "c": c,
                    "eta": eta,
                    "eta_lambda_max": c,
                    "steps": steps,
                    "beta": opt.get("beta"),
                    "train_vs_ode": result.deviation.ode,
                    "train_vs_discrete": result.deviation.discrete,
                    "discrete_vs_ode": C.num(disc_vs_ode),
                    "kernel_drift": result.kernel_drift,
                    "discrete_vs_ode_hr": C.num(disc_vs_hr),
                    "train_vs_ode_hr": C.num(train_vs_hr),
                    "ode_time_end": float(arrays["ode_time"][-1]),
                    "status": result.status,
                }
            )
            study.add_arrays(
                f"{name}/c={c:g}",
                {
                    k: arrays.get(k)
                    for k in ("step", "loss", "loss_discrete", "loss_ode", "loss_ode_hr", "ode_time")
                },
            )
            out.setdefault(name + "_arrays", []).append(arrays)
        out[name] = rows
        study.lap(name)
    _figure(study, out, sz)
    _table(study, out)
    for name in ("gd", "hb", "nag_c"):
        _claims(study, name, out[name], sz)
    study.lap("figures_and_verdicts")
    orders = ode_orders(
        setup.lam, setup.coef, lam_max, gamma, ORDER_FACTORS["quick" if args.quick else "full"]
    )
    _order_report(study, orders, sz)
    study.lap("orders")


LABEL = {"gd": "GD", "hb": "HB (gamma fixed)", "nag_c": "NAG-C (r = 3)"}
ORDER_LABEL = {
    "gd": "GD",
    "hb": "HB (gamma fixed)",
    "nag": "NAG-SC (gamma fixed, look-ahead iterate)",
    "nag_c": "NAG-C torch form (r = 3)",
    "nag_c_classic": "NAG-C classic form (r = 3)",
}


def order_hyper(name: str, eta: float, gamma: float) -> dict:
    """Hyperparameters of the order fits: beta = 1 - gamma sqrt(eta) for HB and NAG-SC, r = 3 for NAG-C."""
    h = {"eta": eta}
    if name in ("hb", "nag"):
        h["beta"] = 1.0 - gamma * math.sqrt(eta)
    if name.startswith("nag_c"):
        h["r"] = NAG_R
    return h


def ode_orders(lam, coef, lam_max: float, gamma: float, factors) -> dict:
    """For every method of ORDER_METHODS and each of its ODEs (low, high resolution): the max over
    t_k <= ORDER_HORIZON / sqrt(lambda_max) (GD: / lambda_max) of ||e_k - e(t_k)|| / ||e_0||, e_k the exact
    kernel recurrence, for eta = c / lambda_max, and the fitted order (slope of log error on log eta)."""
    norm0 = float(np.linalg.norm(coef))
    out = {}
    for name in ORDER_METHODS:
        spec = optimizers.get(name)
        rows = {"eta": [], "low": [], "high": []}
        for c in factors:
            eta = c / lam_max
            hyper = order_hyper(name, eta, gamma)
            low = spec.ode(hyper)
            horizon = ORDER_HORIZON / (lam_max if low.order == 1 else math.sqrt(lam_max))
            steps = int(horizon / low.time_step)
            exact = theory.discrete_modes(spec, hyper, lam, coef, steps)
            rows["eta"].append(eta)
            t = np.arange(steps + 1) * low.time_step
            rows["low"].append(
                float(np.max(np.linalg.norm(theory.ode_modes(low, lam, coef, t) - exact, axis=1))) / norm0
            )
            if spec.ode_hr is not None:
                hr = spec.ode_hr(hyper)
                t = np.arange(steps + 1) * hr.time_step
                rows["high"].append(
                    float(np.max(np.linalg.norm(theory.highres_modes(hr, lam, coef, t) - exact, axis=1)))
                    / norm0
                )
        out[name] = {
            "eta": rows["eta"],
            "c": list(factors),
            "errors": {k: rows[k] for k in ("low", "high") if rows[k]},
            "order": {k: C.loglog_slope(rows["eta"], rows[k]) for k in ("low", "high") if rows[k]},
            "ode": spec.ode(order_hyper(name, factors[-1] / lam_max, gamma)).description,
            "ode_hr": (
                spec.ode_hr(order_hyper(name, factors[-1] / lam_max, gamma)).description
                if spec.ode_hr is not None
                else None
            ),
        }
    return out


def _order_result(kind: str, name: str, order) -> tuple[str, float]:
    expected = ORDER_EXPECTED[kind].get(name, 0.5 if kind == "low" else 1.0)
    if order is None:
        return "inconclusive", expected
    if kind == "high":
        return ("agrees" if order >= 0.9 else ("partly" if order > 0.6 else "differs")), expected
    return ("agrees" if abs(order - expected) <= 0.15 else "differs"), expected


def _order_report(study, orders: dict, sz) -> None:
    """Claims (one per method), a table and a figure of the fitted orders."""
    rows = []
    for name, o in orders.items():
        parts, results = [], []
        for kind in ("low", "high"):
            if kind not in o["order"]:
                continue
            res, exp = _order_result(kind, name, o["order"][kind])
            results.append(res)
            parts.append(
                f"{'low' if kind == 'low' else 'high'}-resolution ODE order {C.f3(o['order'][kind], '.2f')} "
                f"(expected {'>= 0.9' if kind == 'high' else f'{exp:g}'}; max error "
                + ", ".join(f"{e:.2g}" for e in o["errors"][kind])
                + ")"
            )
            rows.append(
                [name, kind, o["ode_hr"] if kind == "high" else o["ode"], C.num(o["order"][kind], 3), exp]
                + [C.num(e, 4) for e in o["errors"][kind]]
            )
        result = (
            "agrees"
            if all(r == "agrees" for r in results)
            else ("differs" if all(r == "differs" for r in results) else "partly")
        )
        line = (
            f"{ORDER_LABEL[name]} against its exact kernel recurrence, eta lambda_max = "
            + ", ".join(f"{c:.0e}" for c in o["c"])
            + ": "
            + "; ".join(parts)
            + "."
        )
        study.claim(
            f"ode_order_{name}",
            "The high-resolution ODE tracks the discrete method to O(eta), the "
            "low-resolution ODE to O(sqrt(eta)) (gradient flow: O(eta))",
            result,
            line,
            source="ODE theory (Su, Boyd, Candes 2016; Shi, Du, Jordan, Su 2018)",
            setting=f"paper model kernel K = c H0 on digits n = {sz['n']}, m = {sz['width']}; horizon "
            f"{ORDER_HORIZON:g}/sqrt(lambda_max) of ODE time (GD {ORDER_HORIZON:g}/lambda_max)",
            figure="ode_order.png",
            numbers={
                "eta": o["eta"],
                "max_error": o["errors"],
                "order": o["order"],
                "ode": o["ode"],
                "ode_hr": o["ode_hr"],
            },
        )
    factors = next(iter(orders.values()))["c"]
    cols = ["optimizer", "ODE", "equation", "fitted order", "expected"] + [
        f"error, eta lambda_max={c:.0e}" for c in factors
    ]
    study.table(
        "Order of each ODE against the exact kernel recurrence",
        cols,
        rows,
        "max over the horizon of ||e_k - e(t_k)|| / ||e_0||; order = slope of log error on log eta "
        "(high resolution: expected 1, verdict agrees at >= 0.9).",
    )
    plt = C.plt()
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    cmap = plt.get_cmap("tab10")
    for i, (name, o) in enumerate(orders.items()):
        for kind, style in (("low", "o--"), ("high", "s-")):
            if kind in o["errors"]:
                ax.plot(
                    *C.positive(o["eta"], o["errors"][kind]),
                    style,
                    color=cmap(i),
                    label=f"{name} {kind} (order {C.f3(o['order'][kind], '.2f')})",
                )
    eta = np.asarray(next(iter(orders.values()))["eta"])
    for p, ls in ((0.5, ":"), (1.0, "-.")):
        ax.plot(eta, 1e-2 * (eta / eta[0]) ** p, "k", ls=ls, lw=0.8, label=f"eta^{p:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("eta")
    ax.set_ylabel("max ||e_k - e(t_k)|| / ||e_0||")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    study.figure(
        fig,
        "ode_order.png",
        "Max error of each ODE against the exact kernel recurrence vs eta (log-log), "
        "low resolution dashed, high resolution solid, with eta^0.5 and eta^1 slopes.",
    )


def _claims(study, name, rows, sz) -> None:
    eta = [r["eta"] for r in rows]
    d_disc = [r["discrete_vs_ode"] for r in rows]
    d_train = [r["train_vs_ode"] for r in rows]
    d_width = [r["train_vs_discrete"] for r in rows]
    order = C.loglog_slope(eta, d_disc)
    exp = EXPECTED_ORDER[name]
    res = (
        "inconclusive"
        if order is None
        else ("agrees" if order >= 0.5 * exp else ("partly" if order > 0 else "differs"))
    )
    line = (
        f"{LABEL[name]}: gap between the kernel recurrence and the ODE shrinks like eta^{C.f3(order, '.2f')} "
        f"(expected order {exp:g}); gaps "
        + ", ".join(f"eta lambda_max={r['c']:.3g}: {C.f3(r['discrete_vs_ode'])}" for r in rows)
        + "."
    )
    d_hr = [r["discrete_vs_ode_hr"] for r in rows]
    if any(v is not None for v in d_hr):
        order_hr = C.loglog_slope(eta, d_hr)
        line += (
            " High-resolution ODE (Shi et al. 2018): gaps "
            + ", ".join(C.f3(v) for v in d_hr)
            + f", order {C.f3(order_hr, '.2f')}; it is closer than the low-resolution ODE at "
            f"{sum(1 for a, b in zip(d_hr, d_disc) if a is not None and b is not None and a < b)}"
            f"/{len(rows)} step sizes."
        )
    study.claim(
        f"ode_discretisation_{name}",
        "The discrete method tends to its limiting ODE as eta -> 0 "
        "(the continuous-time analysis of the paper)",
        res,
        line,
        setting=f"paper model, digits n = {sz['n']}, m = {sz['width']}, same ODE time span for every eta",
        figure="ode_limit.png",
        numbers={
            "eta": eta,
            "discrete_vs_ode": d_disc,
            "order": order,
            "expected_order": exp,
            "discrete_vs_ode_highres": d_hr,
        },
    )
    ok = [r for r in rows if r["train_vs_ode"] is not None and r["train_vs_ode"] <= 0.1]
    first = d_train[0]
    last = d_train[-1]
    floor = d_width[-1]
    reached = last is not None and floor is not None and last <= 2.0 * floor + 1e-12
    shrinks = first is not None and last is not None and last < 0.5 * first
    res2 = "agrees" if (shrinks and reached) else ("partly" if (shrinks or reached) else "differs")
    holds = (
        f"the ODE is within 10% of training for eta lambda_max <= {max(r['c'] for r in ok):.3g}"
        if ok
        else "the ODE is not within 10% of training at any eta tried"
    )
    line2 = (
        f"{LABEL[name]}: training vs ODE gap "
        + ", ".join(f"{r['c']:.3g}: {C.f3(r['train_vs_ode'])}" for r in rows)
        + " (eta lambda_max: gap); the finite-width floor (training vs kernel recurrence) at the smallest "
        "eta is "
        f"{C.f3(floor)}; {holds}."
    )
    if not shrinks and reached:
        line2 += (
            " The finite-width gap dominates already at the largest eta, so shrinking eta cannot reduce it."
        )
    elif not shrinks:
        line2 += " The gap does not shrink with eta here."
    if shrinks and not reached:
        line2 += " The gap shrinks but has not yet reached the finite-width floor at the smallest eta."
    study.claim(
        f"ode_training_{name}",
        "Training follows the limiting ODE once the step is small (until the finite-width gap takes over)",
        res2,
        line2,
        setting=f"paper model, digits n = {sz['n']}, m = {sz['width']}",
        figure="ode_limit.png",
        numbers={
            "eta_lambda_max": [r["c"] for r in rows],
            "train_vs_ode": d_train,
            "train_vs_discrete": d_width,
        },
    )


def _table(study, out) -> None:
    cols = [
        "optimizer",
        "eta lambda_max",
        "eta",
        "beta",
        "steps",
        "ODE time span",
        "train vs ODE",
        "kernel vs ODE",
        "kernel vs high-res ODE",
        "train vs high-res ODE",
        "train vs kernel",
        "kernel drift",
        "status",
    ]
    rows = []
    for name in ("gd", "hb", "nag_c"):
        for r in out[name]:
            rows.append(
                [
                    name,
                    C.num(r["c"], 5),
                    C.num(r["eta"], 6),
                    C.num(r["beta"], 5),
                    r["steps"],
                    C.num(r["ode_time_end"], 4),
                    C.num(r["train_vs_ode"], 4),
                    C.num(r["discrete_vs_ode"], 4),
                    C.num(r["discrete_vs_ode_hr"], 4),
                    C.num(r["train_vs_ode_hr"], 4),
                    C.num(r["train_vs_discrete"], 4),
                    C.num(r["kernel_drift"], 4),
                    r["status"],
                ]
            )
    study.table(
        "Deviations as eta shrinks",
        cols,
        rows,
        "Max relative loss gap over the run (float32 floor excluded).",
    )


def _figure(study, out, sz) -> None:
    plt = C.plt()
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    for j, name in enumerate(("gd", "hb", "nag_c")):
        rows = out[name]
        ax = axes[0, j]
        x = np.asarray([r["c"] for r in rows])
        for key, style, lab in (
            ("train_vs_ode", "o-", "training vs ODE"),
            ("discrete_vs_ode", "s--", "kernel recurrence vs ODE"),
            ("train_vs_discrete", "^:", "training vs kernel recurrence (width)"),
            ("discrete_vs_ode_hr", "d-.", "kernel recurrence vs high-res ODE"),
        ):
            y = np.asarray([np.nan if r[key] is None else r[key] for r in rows], float)
            if np.isfinite(y).any():
                ax.plot(*C.positive(x, y), style, label=lab)
        d = np.asarray(
            [np.nan if r["discrete_vs_ode"] is None else r["discrete_vs_ode"] for r in rows], float
        )
        if np.isfinite(d[0]) and d[0] > 0:
            order = EXPECTED_ORDER[name]
            ax.plot(x, d[0] * (x / x[0]) ** order, "k:", lw=0.8, label=f"eta^{order:g} reference")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("eta * lambda_max")
        ax.set_ylabel("max relative loss gap")
        ax.set_title(LABEL[name], fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        ax = axes[1, j]
        arrs = out[name + "_arrays"]
        cmap = plt.get_cmap("viridis")
        for i, (r, a) in enumerate(zip(rows, arrs)):
            col = cmap(i / max(1, len(rows) - 1))
            ax.plot(
                *C.positive(a["ode_time"], a["loss"]),
                "-",
                color=col,
                lw=1.2,
                label=f"training, eta lambda_max={r['c']:.3g}",
            )
        a = arrs[-1]
        ax.plot(*C.positive(a["ode_time"], a["loss_ode"]), "k--", lw=1.0, label="ODE")
        ax.set_yscale("log")
        ax.set_xlabel("ODE time t" + (" = k eta" if name == "gd" else " = k sqrt(eta)"))
        ax.set_ylabel("training loss")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"Paper model on digits (n = {sz['n']}, m = {sz['width']}): training, kernel recurrence and ODE "
        "as eta -> 0",
        fontsize=11,
    )
    fig.tight_layout()
    study.figure(
        fig,
        "ode_limit.png",
        "Top: max relative loss gaps vs eta * lambda_max (log-log) with the expected "
        "order of the time discretisation. Bottom: training loss vs ODE time for every eta, ODE dashed.",
    )


def main(argv=None) -> int:
    return C.main(
        __doc__,
        "ode_limit",
        "Where the continuous (ODE) picture holds: step size to zero at fixed width",
        run,
        SIZES,
        argv,
        summary=1,
    )


if __name__ == "__main__":
    sys.exit(main())
