"""One run, stage by stage, as library functions (no file I/O here; ``run`` does that).

config -> data -> model + params -> kernels (H0, H∞, spectrum) -> per optimizer:
train (one compiled scan) + predict (discrete recurrence, ODE closed form, diffrax) -> metrics.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ntkdyn import data as data_mod
from ntkdyn import models, ntk, optimizers, rates, theory
from ntkdyn.config import Config, OptimizerConfig
from ntkdyn.train import TrainPlan, TrainResult, train_batch


@dataclasses.dataclass
class Setup:
    """Everything shared by the optimizers of one run."""

    X: np.ndarray
    y: np.ndarray
    model: models.Model
    params: Any
    consts: Any
    c: float  # loss scale: L = (c/2)||e||^2, K = c H
    e0: np.ndarray
    H0: np.ndarray
    Hinf: np.ndarray | None
    lam: np.ndarray  # eigenvalues of K = c H_pred (ascending)
    V: np.ndarray
    coef: np.ndarray  # V^T e0
    times: dict[str, float]

    @property
    def K(self) -> np.ndarray:
        return (self.V * self.lam) @ self.V.T


def jax_dtype(cfg: Config):
    return jnp.float64 if cfg.dtype == "float64" else jnp.float32


def load_data(cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of a validated config (``config.validate`` fills data.n and data.normalize). npz: all
    points unless data.n is smaller (then a random subset drawn with the run's seed); mnist: the
    first data.n images (the released notebook's preprocessing, ``data.mnist``)."""
    d = cfg.data
    if d.source == "sphere":
        return data_mod.sphere(d.n, d.d, d.target, cfg.seed, d.noise, d.teacher_width)
    if d.source == "digits":
        return data_mod.digits(d.n, d.classes, d.target, d.normalize, cfg.seed)
    if d.source == "mnist":
        return data_mod.mnist(d.path, d.n, d.normalize)
    X, y = data_mod.from_npz(d.path, d.normalize)
    if d.n is not None and d.n > X.shape[0]:
        raise ValueError(f"data.n: {d.n} is more than the {X.shape[0]} points in data.path {d.path}")
    if d.n is not None and d.n < X.shape[0]:
        idx = np.random.default_rng(cfg.seed).permutation(X.shape[0])[: d.n]
        X, y = X[idx], y[idx]
    return X, y


def build_model(cfg: Config, d: int):
    """(Model, params, consts) initialised from ``cfg.seed`` (or ``model.init_params``)."""
    m = cfg.model
    dtype = jax_dtype(cfg)
    key = jax.random.PRNGKey(cfg.seed)
    if m.name == "paper":
        model = models.PAPER
        params, consts = models.paper_init(key, d, m.width, m.init_std or 1.0, dtype)
    elif m.name == "released":
        model = models.RELEASED
        params, consts = models.released_init(key, d, m.width, m.init_std, dtype, m.init or "notebook")
    elif m.name == "mlp":
        module = models.ntk_mlp(key, d, m.width, m.depth, m.W_std, m.b_std, dtype)
        model, params, consts = models.from_flax(module, "half_sum", "mlp")
        model = dataclasses.replace(model, hinf=lambda X: ntk.mlp_kernels(X, None, m.depth, m.W_std, m.b_std)[1],
                                    fast_gram=ntk.mlp_fast_gram(m.W_std, m.b_std))
    else:
        module = models.load_factory(m.module)(key, d, **(m.kwargs or {}))
        model, params, consts = models.from_flax(module, "half_sum", "flax")
    if m.loss is not None:
        model = dataclasses.replace(model, loss=m.loss)
    if m.init_params:
        params, consts = models.load_params(m.init_params, params, consts)
    return model, params, consts


def prepare(cfg: Config, data: tuple[np.ndarray, np.ndarray] | None = None, built=None) -> Setup:
    """Data, model, initial error and kernels. ``data`` and ``built`` (from ``load_data`` and
    ``build_model``) may be given when the caller has already loaded them to check the input."""
    times = {}
    t = time.perf_counter()
    X, y = data if data is not None else load_data(cfg)
    times["data"] = time.perf_counter() - t
    t = time.perf_counter()
    model, params, consts = built if built is not None else build_model(cfg, X.shape[1])
    dtype = jax_dtype(cfg)
    Xj, yj = jnp.asarray(X, dtype), jnp.asarray(y, dtype)
    e0 = np.asarray(model.apply(params, consts, Xj) - yj, np.float64)
    times["model"] = time.perf_counter() - t
    t = time.perf_counter()
    H0 = ntk.gram(model, params, consts, Xj)
    Hinf = model.hinf(X) if model.hinf is not None else None
    c = models.loss_scale(model.loss, X.shape[0])
    lam, V = theory.eigen(c * (Hinf if cfg.theory.kernel == "Hinf" else H0))
    times["kernels"] = time.perf_counter() - t
    return Setup(X, y, model, params, consts, c, e0, H0, Hinf, lam, V, V.T @ e0, times)


def train_plan(cfg: Config) -> TrainPlan:
    t = cfg.train
    return TrainPlan(t.steps, t.record_every, tuple(t.error_at), tuple(t.kernel_at), t.divergence_factor,
                     chunks=progress_chunks(t.steps // t.record_every))


def progress_chunks(blocks: int, target: int = 10) -> int:
    """The divisor of ``blocks`` closest to ``target``: the scan runs as that many equal calls."""
    divisors = [c for c in range(1, blocks + 1) if blocks % c == 0]
    return min(divisors, key=lambda c: (abs(c - target), c))


def loss_floor(dtype: str, L0: float) -> float:
    """Losses below (100 eps)^2 L0 are float noise and are left out of fits."""
    return (100 * float(np.finfo(dtype).eps)) ** 2 * L0


def optimizer_hyper(setup: Setup, oc: OptimizerConfig) -> dict:
    """Hyperparameters of ``oc`` with defaults filled; a spec with a ``tune(hyper, lam)`` hook
    (e.g. Polyak-tuned HB) sets them from the eigenvalues of K."""
    return optimizers.resolve_hyper(optimizers.get(oc.name), oc.hyper(), setup.lam)


def train_runs(cfgs: list[Config], setups: list[Setup], index: int, progress=None) -> list[TrainResult]:
    """Train optimizer ``index`` of every run (same shapes) as one batched program."""
    cfg = cfgs[0]
    spec = optimizers.get(cfg.optimizers[index].name)
    dtype = jax_dtype(cfg)
    hypers = [optimizer_hyper(s, c.optimizers[index]) for c, s in zip(cfgs, setups)]
    return train_batch(setups[0].model, spec, hypers, setups[0].c, train_plan(cfg),
                       [s.params for s in setups], [s.consts for s in setups],
                       [jnp.asarray(s.X, dtype) for s in setups], [jnp.asarray(s.y, dtype) for s in setups],
                       progress)


def run_optimizer(cfg: Config, setup: Setup, oc: OptimizerConfig, progress=None) -> tuple[dict, dict]:
    """Train and predict one optimizer. Returns (arrays keyed by name, metrics)."""
    res = train_runs([cfg], [setup], cfg.optimizers.index(oc), progress)[0]
    return evaluate(cfg, setup, oc, res)


def evaluate(cfg: Config, setup: Setup, oc: OptimizerConfig, res: TrainResult) -> tuple[dict, dict]:
    """Kernel drift, predictions (discrete, ODE closed form, diffrax), rate fits, deviations."""
    spec = optimizers.get(oc.name)
    hyper = optimizer_hyper(setup, oc)
    X = jnp.asarray(setup.X, jax_dtype(cfg))
    arrays = {"step": res.step, "loss": res.loss, "error_steps": res.error_at, "errors": res.errors}
    times = {"train_compile_s": res.compile_s, "train_run_s": res.run_s}

    t = time.perf_counter()
    reached = [i for i, k in enumerate(res.snapshot_at) if res.diverged_at is None or k <= res.diverged_at]
    grams = [ntk.gram(setup.model, jax.tree.map(lambda s: s[i], res.snapshots), setup.consts, X) for i in reached]
    drift = [ntk.kernel_drift(H, setup.H0) for H in grams]
    arrays["kernel_steps"] = res.snapshot_at[reached]
    arrays["kernels"] = np.asarray(grams).reshape(len(grams), *setup.H0.shape)
    arrays["kernel_drift"] = np.asarray(drift)
    times["kernel_drift_s"] = time.perf_counter() - t

    L0 = float(res.loss[0])
    floor = loss_floor(cfg.dtype, L0)
    window = tuple(cfg.rates.window)
    fit = rates.fit_rates(res.step, res.loss, window, floor, res.diverged_at is not None, cfg.rates.stall_factor)
    metrics = {"optimizer": oc.name, "eta": oc.eta, "beta": hyper.get("beta"), "r": hyper.get("r"),
               "status": "diverged" if res.diverged_at is not None else "ok",
               "verdict": fit.verdict, "diverged_at": res.diverged_at,
               "fitted": {k: _finite(v) for k, v in fit.as_dict().items() if k != "verdict"},
               "predicted": {"linear_rate": None}, "deviation": {"discrete": None, "ode": None, "ode_hr": None},
               "theory_verdicts": {}, "kernel_drift": _finite(drift[-1]) if drift else None}

    metrics["eta"] = hyper["eta"]
    metrics["ode"] = None
    ode = spec.ode(hyper) if spec.ode is not None else None
    if not spec.has_theory:
        metrics["note"] = "empirical only: this optimizer has no kernel-regime recurrence or limiting ODE"
    else:
        t = time.perf_counter()
        modes = theory.discrete_modes(spec, hyper, setup.lam, setup.coef, cfg.train.steps)[res.step]
        arrays["loss_discrete"] = theory.modal_loss(modes, setup.c)
        metrics["predicted"] = {"linear_rate": theory.predicted_linear_rate(spec, hyper, setup.lam),
                                **theory.stability(spec, hyper, setup.lam)}
        if ode is not None and ode.damping == "vanishing":  # fixed-step tail of r/t damping (NAG-C, OGM)
            tail = theory.vanishing_tail(hyper["eta"], float(setup.lam[0]), ode.r)
            metrics["predicted"].update(crossover_step=tail["crossover_step"], tail_rate=tail["tail_rate"])
        times["theory_discrete_s"] = time.perf_counter() - t
    if ode is None and spec.has_theory:
        metrics["note"] = "no limiting ODE is declared for this optimizer"
    if ode is not None:
        t = time.perf_counter()
        metrics["ode"] = ode.description
        ode_time = res.step * ode.time_step
        arrays["ode_time"] = ode_time
        ode_modes = theory.ode_modes(ode, setup.lam, setup.coef, ode_time)
        arrays["loss_ode"] = theory.modal_loss(ode_modes, setup.c)
        times["theory_closed_form_s"] = time.perf_counter() - t
        if cfg.theory.diffrax:
            t = time.perf_counter()
            e_num = theory.ode_diffrax(ode, setup.K, setup.e0, ode_time, cfg.theory.rtol, cfg.theory.atol)
            arrays["loss_ode_diffrax"] = theory.modal_loss(e_num, setup.c)
            times["theory_diffrax_s"] = time.perf_counter() - t
            gap = np.linalg.norm(ode_modes @ setup.V.T - e_num, axis=1) / np.linalg.norm(setup.e0)
            metrics["ode_closed_vs_diffrax"] = _finite(np.max(gap))
    if spec.ode_hr is not None:  # high-resolution ODE (Shi, Du, Jordan, Su 2018)
        t = time.perf_counter()
        hr = spec.ode_hr(hyper)
        metrics["ode_hr"] = hr.description
        hr_modes = theory.highres_modes(hr, setup.lam, setup.coef, res.step * hr.time_step)
        arrays["loss_ode_hr"] = theory.modal_loss(hr_modes, setup.c)
        times["theory_ode_hr_s"] = time.perf_counter() - t
    ok = np.isfinite(res.loss)
    for name in ("discrete", "ode", "ode_hr"):
        pred = arrays.get(f"loss_{name}")
        if pred is None:
            continue
        mask = ok & (pred > floor) & (res.loss > floor)
        metrics["deviation"][name] = _finite(rates.max_relative_gap(pred, res.loss, mask))
        metrics["theory_verdicts"][name] = rates.fit_rates(
            res.step, pred, window, loss_floor("float64", L0), stall_factor=cfg.rates.stall_factor).verdict
    metrics["times"] = times
    return arrays, metrics


def _finite(x):
    if x is None:
        return None
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    x = float(x)
    return x if math.isfinite(x) else None
