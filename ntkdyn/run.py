"""Command line: ``python -m ntkdyn.run CONFIG [--set a.b=value ...] [--out DIR]``.

Writes a results folder (see README "Results folder") and prints a summary table. Files are
written atomically as soon as their stage finishes, so a later failure loses nothing.
Exit status: 0 ok, 1 an optimizer or the plot failed (the rest is written), 2 bad input.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import sys
import time

from ntkdyn import config as config_mod
from ntkdyn import results


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ntkdyn.run", description=__doc__.split("\n")[0])
    p.add_argument("config", help="YAML config file (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.steps=500 --set optimizers.0.eta=0.1")
    p.add_argument("--out", help="results folder (default results/<name>-<time>)")
    p.add_argument("--quiet", action="store_true", help="print only the summary table")
    return p.parse_args(argv)


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("ntkdyn", "jax", "jaxlib", "optax", "flax", "diffrax", "numpy", "scipy", "scikit-learn", "matplotlib"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def device_info() -> dict:
    import jax

    devices = jax.devices()
    return {"platform": devices[0].platform, "device_kind": devices[0].device_kind,
            "devices": [str(d) for d in devices], "host": platform.node(), "machine": platform.machine()}


def fmt(x, spec=".4g") -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


def summary_table(metrics: dict) -> str:
    head = ["label", "optimizer", "eta", "beta/r", "status", "verdict", "kernel/ODE verdicts",
            "fitted rate", "predicted rate", "power exp", "dev discrete", "dev ODE", "drift"]
    rows = [head]
    for label, m in metrics["optimizers"].items():
        hp = m.get("beta") if m.get("beta") is not None else (f"r={m['r']:g}" if m.get("r") is not None else None)
        tv = m.get("theory_verdicts") or {}
        rows.append([label, m.get("optimizer"), fmt(m.get("eta")), fmt(hp), m.get("status"), m.get("verdict", "-"),
                     "/".join(tv.get(k, "-") for k in ("discrete", "ode")) if tv else "-",
                     fmt((m.get("fitted") or {}).get("linear_rate"), ".6f"),
                     fmt((m.get("predicted") or {}).get("linear_rate"), ".6f"),
                     fmt((m.get("fitted") or {}).get("power_exponent"), ".3f"),
                     fmt((m.get("deviation") or {}).get("discrete"), ".3g"),
                     fmt((m.get("deviation") or {}).get("ode"), ".3g"), fmt(m.get("kernel_drift"), ".3g")])
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    try:
        cfg = config_mod.load(args.config, args.set)
    except config_mod.ConfigError as exc:
        print(f"ntkdyn: bad config: {exc}", file=sys.stderr)
        return 2

    import jax

    jax.config.update("jax_enable_x64", True)  # float64 available; training uses cfg.dtype explicitly
    import numpy as np

    from ntkdyn import pipeline, plots

    try:  # input files are read before anything is written or computed
        data = pipeline.load_data(cfg)
        built = pipeline.build_model(cfg, data[0].shape[1])
    except ValueError as exc:
        print(f"ntkdyn: bad input: {exc}", file=sys.stderr)
        return 2

    out = args.out or os.path.join("results", f"{cfg.name}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    os.makedirs(out, exist_ok=True)
    results.write_text(os.path.join(out, "config.yaml"), config_mod.dump(cfg))
    env = {"versions": versions(), "device": device_info(), "dtype": cfg.dtype, "seed": cfg.seed,
           "command": " ".join(sys.argv), "started": datetime.datetime.now().isoformat(timespec="seconds"),
           "times_s": {}}
    results.write_json(os.path.join(out, "env.json"), env)
    say(f"ntkdyn: {cfg.name} -> {out} ({env['device']['platform']}, {cfg.dtype})")

    setup = pipeline.prepare(cfg, data, built)
    env["times_s"].update(setup.times)
    results.write_npz(os.path.join(out, "data.npz"), {"X": setup.X, "y": setup.y, "e0": setup.e0})
    kernels = {"H0": setup.H0, "eigvals": setup.lam, "kernel_used": np.asarray(cfg.theory.kernel),
               "loss_scale": np.asarray(setup.c)}
    if setup.Hinf is not None:
        kernels["Hinf"] = setup.Hinf
    results.write_npz(os.path.join(out, "kernels.npz"), kernels)
    lam = setup.lam
    metrics = {"spectrum": {"lambda_min": float(lam[0]), "lambda_max": float(lam[-1]),
                            "kappa": float(lam[-1] / lam[0]) if lam[0] > 0 else None,
                            "kernel": cfg.theory.kernel, "loss_scale": setup.c},
               "optimizers": {}}
    say(f"  n={setup.X.shape[0]} d={setup.X.shape[1]}  K = {setup.c:g} * {cfg.theory.kernel}: "
        f"lambda_min={lam[0]:.4g} lambda_max={lam[-1]:.4g}")
    trajectories: dict[str, dict[str, np.ndarray]] = {}
    failed = False
    for oc in cfg.optimizers:
        t = time.perf_counter()
        try:
            arrays, m = pipeline.run_optimizer(cfg, setup, oc)
        except Exception as exc:  # noqa: BLE001 - one optimizer failing must not lose the others
            failed = True
            metrics["optimizers"][oc.label] = {"optimizer": oc.name, "eta": oc.eta, "status": "failed",
                                               "error": f"{type(exc).__name__}: {exc}"}
            print(f"ntkdyn: optimizer {oc.label} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        trajectories[oc.label] = arrays
        metrics["optimizers"][oc.label] = m
        env["times_s"][oc.label] = {**m.pop("times"), "total_s": time.perf_counter() - t}
        results.write_npz(os.path.join(out, "trajectories.npz"),
                          {f"{lab}/{k}": v for lab, arr in trajectories.items() for k, v in arr.items()})
        results.write_json(os.path.join(out, "metrics.json"), metrics)
        say(f"  {oc.label}: {m['status']}, {m['verdict']} "
            f"(train {env['times_s'][oc.label]['train_run_s']:.2f} s + compile "
            f"{env['times_s'][oc.label]['train_compile_s']:.2f} s)")
    results.write_json(os.path.join(out, "metrics.json"), metrics)

    t = time.perf_counter()
    try:
        plots.loss_figure(trajectories, metrics["optimizers"], os.path.join(out, "loss.png"))
    except Exception as exc:  # noqa: BLE001 - a failing plot must not lose the arrays
        failed = True
        env["plot_error"] = f"{type(exc).__name__}: {exc}"
        print(f"ntkdyn: plotting failed ({exc}); arrays and metrics are written", file=sys.stderr)
    env["times_s"]["plots"] = time.perf_counter() - t
    env["times_s"]["total"] = time.perf_counter() - t_start
    results.write_json(os.path.join(out, "env.json"), env)
    print(summary_table(metrics))
    print(f"results: {out}  (total {env['times_s']['total']:.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
