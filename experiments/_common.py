"""Shared helpers of the studies in ``experiments/`` (public ntkdyn API only).

Each study is ``python experiments/<name>.py [--quick] [--seed S] --out DIR`` and writes into DIR:
its figures (``*.png``), its arrays (``arrays.npz``) and ``verdicts.json``:

    {"study", "title", "mode" (quick | full), "command", "settings", "claims": [
        {"id", "claim", "source", "setting", "window", "result" (agrees | differs | partly |
         inconclusive | info), "line" (one sentence computed from the data), "numbers", "figure"}],
     "figures": [{"file", "caption"}], "tables": [{"title", "columns", "rows", "note"}],
     "times_s", "versions"}

Every ``result`` and ``line`` is produced by code from the measured numbers; nothing is written
by hand. ``python -m ntkdyn.report DIR...`` renders one page from these folders.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

# float64 available (theory; float64 studies); training dtype is explicit
jax.config.update("jax_enable_x64", True)

import ntkdyn  # noqa: E402
from ntkdyn import config as config_mod  # noqa: E402
from ntkdyn import optimizers, rates, results, theory  # noqa: E402

PAPER = "Bu, Xu, Chen 2021 (arXiv:2010.13165)"
RESULTS = results.CLAIM_RESULTS
# Digits inputs are standardised per pixel (zero mean, unit variance; |x| about 8 for d = 64). With
# unit-norm inputs instead, all digits lie in a narrow cone and K is 14-38x worse conditioned
# (kappa ~ 1.4e4 paper model, 3.8e4 released model at n = 600, m = 3000), so both the linear tail
# of HB and the kernel regime of the slow modes lie far beyond any affordable number of steps.
NORMALIZE = "standardize"
DATA_TEXT = (
    "scikit-learn digits, all ten classes, target = digit label (0-9), pixels standardised "
    "(zero mean, unit variance)"
)


# --------------------------------------------------------------------------- command line
def parse_args(description: str, argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes (a few minutes on a 2-core CPU)")
    p.add_argument("--out", required=True, help="results folder (created)")
    p.add_argument("--seed", type=int, default=0, help="data subset and initialisation seed (default 0)")
    return p.parse_args(argv)


def main(
    doc: str,
    name: str,
    title: str,
    body: Callable[[Study, argparse.Namespace, dict], None],
    sizes: dict,
    argv=None,
    summary: int | slice = 1,
) -> int:
    """The opening and closing every study shares: parse ``--quick``/``--out``/``--seed`` (help: the
    first line of the study's docstring ``doc``), pick ``sizes["quick"]`` or ``sizes["full"]``, open a
    ``Study`` whose summary is paragraph(s) ``summary`` of ``doc`` (blank-line separated, joined on
    one line), run ``body(study, args, sz)`` and write everything (``Study.finish``). Returns 0."""
    args = parse_args(doc.split("\n")[0], argv)
    sz = sizes["quick" if args.quick else "full"]
    paragraphs = doc.split("\n\n")
    text = paragraphs[summary] if isinstance(summary, int) else " ".join(paragraphs[summary])
    study = Study(name, title, args, summary=text.replace("\n", " "))
    body(study, args, sz)
    study.finish()
    return 0


# --------------------------------------------------------------------------- configs and runs
def digits_raw(
    model: str,
    n: int,
    width: int,
    steps: int,
    optimizer: dict,
    *,
    seed: int = 0,
    dtype: str = "float32",
    record_every: int = 1,
    kernel_at=None,
    error_at=None,
    window=(0.1, 1.0),
    target: str = "label",
    classes=None,
    normalize: str = NORMALIZE,
) -> dict:
    """A raw config (``config.from_dict``) for one optimizer on scikit-learn's digits."""
    train = {"steps": int(steps), "record_every": int(record_every)}
    if kernel_at is not None:
        train["kernel_at"] = [int(k) for k in kernel_at]
    if error_at is not None:
        train["error_at"] = [int(k) for k in error_at]
    return {
        "name": "study",
        "seed": int(seed),
        "dtype": dtype,
        "data": {
            "source": "digits",
            "n": int(n),
            "target": target,
            "classes": classes,
            "normalize": normalize,
        },
        "model": {"name": model, "width": int(width)},
        "train": train,
        "theory": {"kernel": "H0", "diffrax": False},
        "rates": {"window": [float(w) for w in window]},
        "optimizers": [{k: v for k, v in optimizer.items() if v is not None}],
    }


_SETUPS: dict[str, Any] = {}
_DATA: dict[str, Any] = {}


def _setup_key(raw: dict) -> str:
    return json.dumps({k: raw[k] for k in ("seed", "dtype", "data", "model", "theory")}, sort_keys=True)


def data_for(raw: dict, data_seed: int | None = None):
    """The (X, y) of ``raw`` drawn with ``data_seed`` (default: the config's seed)."""
    seed = raw["seed"] if data_seed is None else data_seed
    key = json.dumps({"data": raw["data"], "seed": seed}, sort_keys=True)
    if key not in _DATA:
        _DATA[key] = ntkdyn.load_data(config_mod.from_dict({**raw, "seed": seed}))
    return _DATA[key]


def setup_for(raw: dict, data_seed: int | None = None):
    """(Config, Setup) of ``raw``; setups are cached (same data, model, width, seed, dtype).

    ``data_seed`` fixes the data subset independently of the initialisation seed (seed averages
    over initialisations on one data set, as in the released notebook)."""
    cfg = config_mod.from_dict(raw)
    key = _setup_key(raw) + f"|data_seed={data_seed}"
    if key not in _SETUPS:
        _SETUPS[key] = ntkdyn.prepare(cfg, data_for(raw, data_seed))
    return cfg, _SETUPS[key]


def clear_setups() -> None:
    _SETUPS.clear()


def run_group(
    raws: list[dict], data_seed: int | None = None, label: str = "", keep: bool = False
) -> list[tuple]:
    """Train the single optimizer of every raw config as ONE compiled, batched program (the configs
    must share shapes: they may differ in seed, eta, beta, r) and evaluate each run.

    Returns [(arrays, result, cfg, setup)] in the order given, ``result`` the run's typed
    ``results.OptimizerResult`` (``keep``: with the ``train.TrainResult`` appended, e.g. for the
    parameter snapshots at ``train.kernel_at``)."""
    pairs = [setup_for(r, data_seed) for r in raws]
    cfgs, setups = [p[0] for p in pairs], [p[1] for p in pairs]
    t = time.perf_counter()
    evaluated = ntkdyn.evaluate_group(cfgs, setups, 0)  # the one run path (train as one program, evaluate)
    t_train = time.perf_counter() - t - sum(ev.times["evaluate_s"] for ev in evaluated)
    out = []
    for cfg, setup, ev in zip(cfgs, setups, evaluated):
        arrays = dict(ev.arrays)
        out.append((arrays, ev.result, cfg, setup, ev.trained) if keep else (arrays, ev.result, cfg, setup))
    steps = cfgs[0].train.steps
    print(
        f"  {label or cfgs[0].optimizers[0].name}: {len(raws)} run(s) x {steps} steps, model "
        f"{cfgs[0].model.name} m={cfgs[0].model.width} n={cfgs[0].data.n}: train {t_train:.1f} s",
        flush=True,
    )
    return out


# --------------------------------------------------------------------------- fits and theory helpers
floor_of = rates.loss_floor  # (100 eps)^2 L0 of the dtype: the float floor of a loss


def fit(step, loss, window, floor: float) -> dict:
    """``rates.fit_rates`` over an absolute window [lo, hi] of steps (lo >= 2), as a plain dict."""
    lo, hi = float(window[0]), float(window[1])
    lo = max(lo, 2.0)  # values <= 1 would be read as fractions
    f = rates.fit_rates(np.asarray(step), np.asarray(loss), (lo, max(hi, lo + 1.0)), floor)
    d = f.as_dict()
    return {k: (num(v) if isinstance(v, float) else v) for k, v in d.items()}


def num(x, digits: int | None = None):
    """A JSON-safe float (``results.finite``: None for NaN/inf/None and for non-numbers), rounded to
    ``digits`` where given."""
    try:
        x = None if isinstance(x, (list, tuple)) else results.finite(x)
    except (TypeError, ValueError):
        return None
    return round(x, digits) if x is not None and digits is not None else x


def bessel_onset(eta: float, lam_min: float, r: float) -> float:
    """Step after which the slowest mode of NAG-C is on its Bessel power-law envelope:
    z = sqrt(lam_min) t >= nu + 1 with t = k sqrt(eta), nu = (r - 1)/2."""
    return (0.5 * (r - 1.0) + 1.0) / math.sqrt(eta * lam_min)


def crossover_step(eta: float, lam_min: float, r: float) -> float | None:
    """Predicted NAG-C crossover from the power law to the linear tail (``theory.vanishing_tail``)."""
    return theory.vanishing_tail(eta, lam_min, r)["crossover_step"]


def highres_loss(name: str, hyper: dict, setup, step) -> np.ndarray | None:
    """Loss predicted by the high-resolution ODE (Shi, Du, Jordan, Su 2018) where declared."""
    spec = optimizers.get(name)
    if spec.ode_hr is None:
        return None
    ode = spec.ode_hr(optimizers.resolve_hyper(spec, hyper))
    modes = theory.highres_modes(ode, setup.lam, setup.coef, np.asarray(step, np.float64) * ode.time_step)
    return theory.modal_loss(modes, setup.c)


def final_lambda_max(setup, res, dtype: str) -> float:
    """Largest eigenvalue of K = c H at the last parameter snapshot of a TrainResult."""
    import jax.numpy as jnp

    from ntkdyn import ntk

    X = jnp.asarray(setup.X, jnp.float64 if dtype == "float64" else jnp.float32)
    snap = jax.tree.map(lambda s: s[-1], res.snapshots)
    H = np.asarray(ntk.gram(setup.model, snap, setup.consts, X), np.float64)
    return float(np.linalg.eigvalsh(setup.c * 0.5 * (H + H.T))[-1])


def spectrum(setup) -> dict:
    """The run's spectrum (``results.Spectrum.of``) with n and the initial loss L0 = (c/2)||e_0||^2."""
    L0 = float(0.5 * setup.c * np.sum(setup.coef**2))
    return results.Spectrum.of(setup.lam, setup.c, n=int(setup.lam.size), L0=L0).to_json()


def loglog_slope(x, y) -> float | None:
    """Least-squares slope of log y on log x over the finite positive points (None if < 2)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2:
        return None
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def exponent_misses(items, tol: float) -> str:
    """Why fitted exponents miss -r: ``items`` are (r, p_train, p_kernel). Where training matches the
    kernel recurrence at the same eta (within 0.1 r) the miss is a fixed-step effect of the
    discrete method; otherwise training has left the kernel regime."""
    miss = [(r, pt, pk) for r, pt, pk in items if pt is not None and abs(pt + r) > tol * r]
    if not miss:
        return ""
    fixed = [(r, pt, pk) for r, pt, pk in miss if pk is not None and abs(pt - pk) <= 0.1 * r]
    width = [(r, pt, pk) for r, pt, pk in miss if not (pk is not None and abs(pt - pk) <= 0.1 * r)]
    out = []
    if fixed:
        out.append(
            "for r = "
            + ", ".join(f"{r:g}" for r, _, _ in fixed)
            + " the kernel recurrence at the same eta has "
            "the same exponent as training ("
            + ", ".join(f"{pk:.2f} vs {pt:.2f}" for _, pt, pk in fixed)
            + "): a fixed-step effect of the discrete method, which the eta -> 0 ODE does not see"
        )
    if width:
        out.append(
            "for r = "
            + ", ".join(f"{r:g}" for r, _, _ in width)
            + " training departs from the kernel recurrence ("
            + ", ".join(f"{pt:.2f} vs kernel {'-' if pk is None else f'{pk:.2f}'}" for _, pt, pk in width)
            + "): the network is not in the kernel regime there"
        )
    return " Misses: " + "; ".join(out) + "."


def count_result(k: int, total: int) -> str:
    """agrees (all), differs (none), partly (some)."""
    if total == 0:
        return "inconclusive"
    return "agrees" if k == total else ("differs" if k == 0 else "partly")


def f3(x, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def steps_text(window) -> str:
    return f"steps {int(window[0])}-{int(window[1])}"


# --------------------------------------------------------------------------- plotting
def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def positive(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(y) & (y > 0) & (y < 1e300)
    return x[ok], y[ok]


# --------------------------------------------------------------------------- results folder
class Study:
    """Collects a study's claims, figures, tables and arrays and writes them atomically."""

    def __init__(self, name: str, title: str, args: argparse.Namespace, summary: str = ""):
        self.name, self.title, self.args = name, title, args
        self.out = args.out
        os.makedirs(self.out, exist_ok=True)
        self.t0 = time.perf_counter()
        self.doc = {
            "study": name,
            "title": title,
            "summary": summary,
            "mode": "quick" if args.quick else "full",
            "seed": args.seed,
            "command": "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "settings": {},
            "claims": [],
            "figures": [],
            "tables": [],
            "times_s": {},
            "versions": _versions(),
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "jax_backend": jax.default_backend(),
            },
        }
        self.arrays: dict[str, np.ndarray] = {}
        self._stage = time.perf_counter()
        print(f"{name} ({self.doc['mode']}) -> {self.out}", flush=True)

    def setting(self, **kw) -> None:
        self.doc["settings"].update(kw)

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.doc["times_s"][stage] = round(now - self._stage, 2)
        self._stage = now

    def claim(
        self,
        id: str,
        claim: str,
        result: str,
        line: str,
        *,
        source: str = PAPER,
        setting: str = "",
        window=None,
        numbers: dict | None = None,
        figure: str | None = None,
    ) -> None:
        if result not in RESULTS:
            raise ValueError(f"result must be one of {RESULTS}, got {result!r}")
        self.doc["claims"].append(
            {
                "id": id,
                "claim": claim,
                "source": source,
                "setting": setting,
                "window": None if window is None else [num(w) for w in window],
                "result": result,
                "line": line,
                "numbers": _clean(numbers or {}),
                "figure": figure,
                "differs_from_paper": source == PAPER and result in ("differs", "partly"),
            }
        )
        print(f"  [{result}] {line}", flush=True)

    def figure(self, fig, filename: str, caption: str) -> None:
        path = os.path.join(self.out, filename)
        results.atomic_write(path, lambda fh: fig.savefig(fh, dpi=100, format="png"), binary=True)
        plt().close(fig)
        self.doc["figures"].append({"file": filename, "caption": caption})

    def table(self, title: str, columns: list[str], rows: list[list], note: str = "") -> None:
        self.doc["tables"].append({"title": title, "columns": columns, "rows": _clean(rows), "note": note})

    def add_arrays(self, prefix: str, arrays: dict) -> None:
        for k, v in arrays.items():
            if v is None:
                continue
            self.arrays[f"{prefix}/{k}"] = np.asarray(v)

    def finish(self) -> dict:
        self.doc["times_s"]["total"] = round(time.perf_counter() - self.t0, 2)
        self.doc["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        if self.arrays:
            results.write_npz(os.path.join(self.out, "arrays.npz"), self.arrays)
            self.doc["arrays"] = "arrays.npz"
        results.write_json(os.path.join(self.out, "verdicts.json"), self.doc)
        print(
            f"{self.name}: {len(self.doc['claims'])} verdicts, total {self.doc['times_s']['total']:.1f} s "
            f"-> {os.path.join(self.out, 'verdicts.json')}",
            flush=True,
        )
        return self.doc


_versions = results.versions


def _clean(obj):
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return num(obj)
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    return obj
