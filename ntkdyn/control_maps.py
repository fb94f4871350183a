"""A run's control section: the per-mode analysis of its optimizers (``ntkdyn.control``, pure)
beside its training, the (eta, beta) stability maps and the eta sweep of the low- against the
high-resolution ODE, whose cells train through the run path (``pipeline.train_runs``).

``compute`` returns (control.json content, arrays for the figures); ``summary_table`` the text
table printed by the CLI.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ntkdyn import odes, optimizers, rates, results, theory
from ntkdyn.control import analyse, first_unstable, get, log_gap, measure_tail, ode_losses, rate_map, resolve
from ntkdyn.results import finite as _num


def _train(setup, cfg, spec, hypers: list[dict], steps: int, dtype: str | None = None):
    """Train ``hypers`` of optimizer ``spec`` on the run's model and data as one batched program,
    through the run path's training (``pipeline.train_runs``): each hyperparameter set is a run
    config (``steps`` steps, every step recorded, no error or kernel snapshots, full batch) and the
    run's parameters are cast to ``dtype`` (default the run's)."""
    import jax
    import jax.numpy as jnp

    from ntkdyn import pipeline

    dtype = dtype or cfg.dtype
    jdt = jnp.float64 if dtype == "float64" else jnp.float32
    cast = lambda a: jnp.asarray(a, jdt) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a  # noqa: E731
    cell = dataclasses.replace(
        setup, params=jax.tree.map(cast, setup.params), consts=jax.tree.map(cast, setup.consts)
    )
    plan = dataclasses.replace(
        cfg.train, steps=steps, record_every=1, error_at=[], kernel_at=[], batch_size=None
    )
    cfgs = [
        dataclasses.replace(cfg, dtype=dtype, train=plan, optimizers=[_optimizer_config(spec.name, h)])
        for h in hypers
    ]
    return pipeline.train_runs(cfgs, [cell] * len(cfgs), 0)


def _optimizer_config(name: str, hyper: dict):
    """An ``OptimizerConfig`` whose ``hyper()`` is ``hyper`` (eta, beta, r as fields, the rest as kwargs)."""
    from ntkdyn.config import OptimizerConfig

    fields = {k: hyper[k] for k in ("eta", "beta", "r") if k in hyper}
    rest = {k: v for k, v in hyper.items() if k not in fields}
    return OptimizerConfig(name, label=name, kwargs=rest or None, **fields)


def compute(
    cfg,
    setup,
    trained_results: Mapping[str, results.OptimizerResult] | None = None,
    trajectories: dict | None = None,
    say=print,
) -> tuple[dict, dict]:
    """The ``control:`` section of a run: (control.json content, arrays for the plots).

    Uses the run's spectrum (``setup.lam``), its optimizers with a recurrence (and
    ``control.extra``, not trained), the trained losses in ``trajectories`` and the typed results
    ``trained_results`` (label -> ``results.OptimizerResult``: status, verdict, fitted rate); trains
    the (eta, beta) map and the eta sweep itself (batched)."""
    cc = cfg.control
    trained_results = trained_results or {}
    trajectories = trajectories or {}
    lam, coef = np.asarray(setup.lam, np.float64), np.asarray(setup.coef, np.float64)
    report: dict[str, Any] = {
        "transfer_function": "G(z) = U(z)/Y(z) = C (zI - A)^-1 B, target y -> output u, zero initial state; "
        "scheduled methods frozen at k -> infinity; zeros include z = 0 (a one-step advance)",
        "rate": "loss factor per iteration = spectral_radius^2",
        "band": cc.band,
        "spectrum": results.Spectrum.of(lam, setup.c, n=int(lam.size)).to_json(),
        "optimizers": {},
    }
    plot: dict[str, Any] = {"lam": lam, "optimizers": {}}
    entries = [(oc, True) for oc in cfg.optimizers if (cc.labels is None or oc.label in cc.labels)]
    entries += [(oc, False) for oc in (cc.extra or [])]
    L0 = 0.5 * setup.c * float(np.sum(coef**2))
    # comparisons with training stop 1000 eps above zero (relative to L_0): below, round-off of the
    # trained network's outputs, not the dynamics, sets the loss
    floor = rates.loss_floor(cfg.dtype, L0, margin=1000)
    for oc, trained in entries:
        label = oc.label or oc.name
        try:
            spec = get(oc.name)
        except ValueError:
            continue
        hyper = resolve(spec, oc.hyper(), lam)
        entry = analyse(spec, hyper, lam, cc.band, cc.max_iters)
        o = trained_results.get(label) if trained else None
        entry["trained"] = bool(trained and label in trajectories)
        entry["observed"] = (
            {
                "status": o.status if o else None,
                "verdict": o.verdict if o else None,
                "linear_rate": o.fitted.linear_rate if o and o.fitted else None,
                "diverged_at": o.diverged_at if o else None,
            }
            if entry["trained"]
            else "recurrence only: no training face"
            if isinstance(spec, optimizers.ModalSpec)
            else "not trained"
        )
        arrays: dict[str, Any] = {"hyper": hyper, "spec": spec}
        if entry["trained"]:
            arr = trajectories[label]
            preds = ode_losses(spec, hyper, lam, coef, setup.c, arr["step"])
            entry["ode_match"] = {f"{k}_log10_gap": log_gap(v, arr["loss"], floor) for k, v in preds.items()}
            if "loss_discrete" in arr:
                entry["ode_match"]["discrete_log10_gap"] = log_gap(arr["loss_discrete"], arr["loss"], floor)
            arrays.update(
                step=arr["step"],
                loss=arr["loss"],
                loss_discrete=arr.get("loss_discrete"),
                **{f"loss_ode_{k}": v for k, v in preds.items()},
            )
            if spec.ode is not None and isinstance(spec.ode(hyper), odes.VanishingDamping) and lam[0] > 0:
                entry["tail"] = _tail(spec, hyper, lam, arr, floor)
        report["optimizers"][label] = entry
        plot["optimizers"][label] = arrays
        say(
            f"  control: {label}: rho = {entry['spectral_radius']:.6f}, rate {entry['rate']:.6f}, "
            f"{'stable' if entry['stable'] else 'UNSTABLE'}"
        )

    if cc.map_steps >= 0 and cc.map_optimizers:
        report["maps"], plot["maps"] = {}, {}
        for name in cc.map_optimizers:
            rep, arr = _map(cfg, setup, name, floor)
            report["maps"][name], plot["maps"][name] = rep, arr
            say(
                f"  control: map {name}: boundary offset (cells): linear growth "
                f"{rep.get('boundary_offset_max')}, "
                f"blow-up {rep.get('divergence_offset_max')}"
            )
    if cc.sweep_etas:
        report["ode_sweep"], plot["ode_sweep"] = _sweep(cfg, setup, floor)
    return report, plot


def _tail(spec, hyper, lam, arr, floor) -> dict:
    # NAG-C: det A_k = beta_k (1 - h); OGM: a_k (1 - h), a_k ~ 1 - 3/k:
    # both envelopes k^-r (1 - h)^k, h = eta lam
    eta, r = hyper["eta"], spec.ode(hyper).r
    pred = theory.vanishing_tail(eta, float(lam[0]), r)
    out: dict[str, Any] = {"predicted": pred}
    ks = pred["crossover_step"]
    if ks is None:
        return out
    window = (0.25 * ks, 8.0 * ks)
    step = np.asarray(arr["step"])
    out["window"] = list(window)
    out["window_covered"] = bool(step[-1] >= window[1])
    out["measured"] = measure_tail(step, arr["loss"], window, floor)
    if arr.get("loss_discrete") is not None:
        out["discrete"] = measure_tail(step, arr["loss_discrete"], window, floor)
    meas = out["measured"]
    if meas["crossover_step"] and meas["tail_rate"]:
        out["crossover_rel_error"] = meas["crossover_step"] / ks - 1.0
        out["tail_log_rate_rel_error"] = math.log(meas["tail_rate"]) / math.log(pred["tail_rate"]) - 1.0
    return out


def _map(cfg, setup, name: str, floor: float) -> tuple[dict, dict]:
    """Predicted rate and stability over the (eta, beta) grid; with ``map_steps`` > 0 every cell is
    also trained (one batched program, ``map_dtype``). Observed per cell: ``grew`` (the loss rose
    above L_0 at some step: the linear instability the kernel regime predicts), ``diverged`` (training
    blew up or ended above L_0) and the fitted rate. A wide network can leave the kernel regime and
    recover between the two boundaries (the catapult phase, Lewkowycz et al. 2020)."""
    cc = cfg.control
    spec = get(name)
    lam = np.asarray(setup.lam, np.float64)
    etas = np.geomspace(cc.map_eta[0], cc.map_eta[1], cc.map_grid[0]) / lam[-1]
    betas = np.linspace(cc.map_beta[0], cc.map_beta[1], cc.map_grid[1])
    base = resolve(spec, {"eta": 1.0, "beta": 0.0}, lam)
    rate, stable = rate_map(spec, base, lam, etas, betas)
    rep = {
        "optimizer": name,
        "eta": etas.tolist(),
        "beta": betas.tolist(),
        "eta_lambda_max": (etas * lam[-1]).tolist(),
        "predicted_rate": rate.tolist(),
        "predicted_stable": stable.tolist(),
        "predicted_first_unstable": first_unstable(~stable).tolist(),
    }
    arr = {"etas": etas, "betas": betas, "rate": rate, "stable": stable}
    if cc.map_steps > 0:
        hypers = [{**base, "eta": float(e), "beta": float(b)} for b in betas for e in etas]
        res = _train(setup, cfg, spec, hypers, cc.map_steps, cc.map_dtype)
        shape = (len(betas), len(etas))
        grew, diverged = np.zeros(shape, bool), np.zeros(shape, bool)
        obs_rate = np.full(shape, np.nan)
        map_floor = rates.loss_floor(cc.map_dtype, res[0].loss[0])
        for idx, r in enumerate(res):
            j, i = divmod(idx, len(etas))
            L = r.loss
            blew = r.diverged_at is not None or not np.all(np.isfinite(L))
            diverged[j, i] = blew or L[-1] > L[0]
            grew[j, i] = blew or np.nanmax(L[1:]) > L[0]
            if not diverged[j, i]:
                obs_rate[j, i] = rates.fit_rates(r.step, L, (0.5, 1.0), map_floor).linear_rate
        off = first_unstable(grew) - first_unstable(~stable)
        off_div = first_unstable(diverged) - first_unstable(~stable)
        rep.update(
            steps=cc.map_steps,
            dtype=cc.map_dtype,
            observed_grew=grew.tolist(),
            observed_diverged=diverged.tolist(),
            observed_rate=[[_num(v) for v in row] for row in obs_rate],
            observed_first_grew=first_unstable(grew).tolist(),
            observed_first_diverged=first_unstable(diverged).tolist(),
            boundary_offset=off.tolist(),
            boundary_offset_max=int(np.max(np.abs(off))),
            divergence_offset=off_div.tolist(),
            divergence_offset_max=int(np.max(np.abs(off_div))),
        )
        arr.update(grew=grew, diverged=diverged, obs_rate=obs_rate)
    return rep, arr


def _sweep(cfg, setup, floor: float) -> tuple[dict, dict]:
    """Train one optimizer (``control.sweep_optimizer``) at each eta of ``control.sweep_etas`` for
    ``sweep_time`` units of ODE time and compare the low- and high-resolution ODEs with training."""
    cc = cfg.control
    spec = get(cc.sweep_optimizer)
    if not isinstance(spec, optimizers.OptimizerSpec) or spec.ode is None:  # validate refuses it
        raise ValueError(f"control.sweep_optimizer: {cc.sweep_optimizer!r} needs a recurrence and an ODE")
    lam, coef = np.asarray(setup.lam, np.float64), np.asarray(setup.coef, np.float64)
    base: dict[str, Any] = next((oc.hyper() for oc in cfg.optimizers if oc.name == cc.sweep_optimizer), {})
    rows, arrays = [], []
    for eta in cc.sweep_etas:
        hyper = resolve(spec, {**base, "eta": float(eta)}, lam)
        ode = spec.ode(hyper)
        steps = max(int(round(cc.sweep_time / ode.time_step)), 10)
        res = _train(setup, cfg, spec, [hyper], steps)[0]
        preds = ode_losses(spec, hyper, lam, coef, setup.c, res.step)
        disc = theory.modal_loss(theory.discrete_modes(spec, hyper, lam, coef, steps), setup.c)
        row = {
            "eta": float(eta),
            "steps": steps,
            "status": "diverged" if res.diverged_at is not None else "ok",
            "discrete_log10_gap": log_gap(disc, res.loss, floor),
            **{f"{k}_log10_gap": log_gap(v, res.loss, floor) for k, v in preds.items()},
        }
        if isinstance(ode, odes.VanishingDamping) and lam[0] > 0:
            row["crossover_step"] = theory.vanishing_tail(float(eta), float(lam[0]), ode.r)["crossover_step"]
        rows.append(row)
        arrays.append({"eta": float(eta), "step": res.step, "loss": res.loss, "loss_discrete": disc, **preds})
    return {
        "optimizer": cc.sweep_optimizer,
        "ode_time": cc.sweep_time,
        "rows": rows,
        "metric": "mean |log10 L_pred - log10 L_train| over the steps where both exceed (1000 eps)^2 L_0",
    }, {"runs": arrays}


def summary_table(report: dict) -> str:
    """Side-by-side text table: predicted (control) vs observed (training) per optimizer."""
    head = [
        "label",
        "optimizer",
        "eta",
        "beta",
        "spectral radius",
        "predicted rate",
        "fitted rate",
        "stable",
        "status",
        "settling max",
        "overshoot max",
        "zeros != 0",
        "zeta(l_min) disc/lo/hr",
        "omega_n(l_min) disc/lo",
    ]
    rows = [head]
    f = lambda v, s=".6f": "-" if v is None else format(v, s)
    for label, e in report["optimizers"].items():
        obs = e["observed"] if isinstance(e["observed"], dict) else {}
        m0 = e["modes"][0]
        rows.append(
            [
                label,
                e["optimizer"],
                f(e["eta"], ".4g"),
                f(e["beta"], ".4g"),
                f(e["spectral_radius"]),
                f(e["rate"]),
                f(obs.get("linear_rate")),
                str(e["stable"]),
                obs.get("status") or ("recurrence only" if not e["trained"] else "-"),
                f(e["settling_iters_max"], "d"),
                f(e["overshoot_max"], ".3f"),
                str(e["nonzero_zeros"]),
                f"{f(m0['zeta_discrete'], '.3g')}/{f(m0['zeta'], '.3g')}/{f(m0['zeta_hr'], '.3g')}",
                f"{f(m0['omega_n_discrete'], '.3g')}/{f(m0['omega_n'], '.3g')}",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
