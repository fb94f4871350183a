"""One run, stage by stage, as library functions (no file I/O here; ``run`` does that).

config -> data -> model + params -> kernels (H0, H∞, spectrum) -> per optimizer:
train (one compiled scan) + predict (discrete recurrence, ODE closed form, diffrax) -> metrics.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ntkdyn import checks, linearized, models, ntk, optimizers, rates, results, schedules, stochastic, theory
from ntkdyn import data as data_mod
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
    # held-out set (data.test or test_data=), None without one
    X_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    e0_test: np.ndarray | None = None  # f(X_test; theta_0) - y_test
    H_test: np.ndarray | None = None  # H(X_test, X) of theory.kernel (H0: empirical at theta_0, or Hinf)
    c_test: float | None = None  # loss scale on the held-out set (models.loss_scale(loss, n_test))
    test_map: np.ndarray | None = None  # theory.held_out_map: K_x K^+ in K's eigenbasis

    @property
    def K(self) -> np.ndarray:
        return (self.V * self.lam) @ self.V.T


def jax_dtype(cfg: Config):
    return jnp.float64 if cfg.dtype == "float64" else jnp.float32


def load_data(cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of a validated config (``config.validate`` fills data.n and data.normalize). npz: all
    points unless data.n is smaller (then a random subset drawn with the run's seed); mnist: the
    first data.n images (the released notebook's preprocessing, ``data.mnist``).

    Args:
        cfg: a validated ``Config`` (its ``data`` section and ``seed``).
    Returns:
        X (n, d) and y (n,), float64 numpy arrays.
    Raises:
        ValueError: a data file that does not hold data.n points or cannot be read.
    """
    return data_mod.load(cfg)


def load_test_data(cfg: Config) -> tuple[np.ndarray, np.ndarray] | None:
    """(X_test, y_test) of a validated config's ``data.test``, or None without one: sphere: new
    points of the same distribution and target function (``data.sphere_test``); digits, npz, mnist:
    the points after the data.n training ones, or those of ``data.test.path`` (``data.digits_test``,
    ``npz_test``, ``mnist_test``). Disjoint from the training points; normalised as they are.

    Args:
        cfg: a validated ``Config``.
    Returns:
        X_test (n_test, d) and y_test (n_test,) float64 numpy arrays, or None.
    Raises:
        ValueError: a data file that does not hold the points asked for.
    """
    return data_mod.load_held_out(cfg)


def kernel_rtol(cfg: Config, n: int) -> float:
    """rtol of K's numerical null space (``theory.null_modes``): n eps of the dtype K was computed in."""
    return n * float(np.finfo(cfg.dtype if cfg.theory.kernel == "H0" else "float64").eps)


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
        model = dataclasses.replace(
            model,
            hinf=lambda X: ntk.mlp_kernels(X, None, m.depth, m.W_std, m.b_std)[1],
            fast_gram=ntk.mlp_fast_gram(m.W_std, m.b_std),
        )
    else:
        module = models.load_factory(m.module)(key, d, **(m.kwargs or {}))
        model, params, consts = models.from_flax(module, "half_sum", "flax")
    if m.loss is not None:
        model = dataclasses.replace(model, loss=m.loss)
    if m.init_params:
        params, consts = models.load_params(m.init_params, params, consts)
    return model, params, consts


def prepare(
    cfg: Config,
    data: tuple[np.ndarray, np.ndarray] | None = None,
    built=None,
    test: tuple[np.ndarray, np.ndarray] | None = None,
) -> Setup:
    """Data, model, initial error and kernels. ``data`` and ``built`` (from ``load_data`` and
    ``build_model``) may be given when the caller has already loaded them to check the input.

    Args:
        cfg: a validated ``Config``; data: (X, y) or None (``load_data(cfg)``); built: (Model,
            params, consts) or None (``build_model``); test: a held-out set (X_test, y_test) or
            None (``load_test_data(cfg)``: data.test's points, or none).
    Returns:
        ``Setup``: X, y, model, params, consts, loss scale c, e0 = f(X; theta_0) - y, H0, Hinf, the
        ascending eigenpairs (lam, V) of K = c H (H0 or Hinf per theory.kernel), coef = V^T e0, times;
        with a held-out set also X_test, y_test, e0_test, the cross kernel H_test = H(X_test, X) of
        the same source, c_test and test_map = K_x K^+ (``theory.held_out_map``).

    Float64 (the theory's kernels and eigenvectors) is switched on inside this call only
    (``jax.enable_x64``); the model and data are built in the config's ``dtype``.

    Raises:
        ValueError: a held-out set whose points do not have the training points' dimension.
    """
    with jax.enable_x64(True):
        return _prepare(cfg, data, built, test)


def _prepare(cfg: Config, data, built, test) -> Setup:
    times = {}
    t = time.perf_counter()
    X, y = data if data is not None else load_data(cfg)
    test = test if test is not None else load_test_data(cfg)
    times["data"] = time.perf_counter() - t
    t = time.perf_counter()
    checks.check_memory(cfg, 1, X, built[1] if built is not None else None)
    model, params, consts = built if built is not None else build_model(cfg, X.shape[1])
    checks.check_inputs(cfg, X, y, *(test if test is not None else (None, None)), (model, params, consts))
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
    setup = Setup(X, y, model, params, consts, c, e0, H0, Hinf, lam, V, V.T @ e0, times)
    return setup if test is None else with_held_out(cfg, setup, *test)


def with_held_out(cfg: Config, setup: Setup, X_test: np.ndarray, y_test: np.ndarray) -> Setup:
    """``setup`` with its held-out set: e0_test = f(X_test; theta_0) - y_test (training dtype), the
    cross kernel H_test = H(X_test, X) of theory.kernel (H0: ``ntk.cross_gram`` at theta_0; Hinf: the
    off-diagonal block of the model's H∞ on [X; X_test]), c_test and test_map (``theory.held_out_map``
    over the modes of K above ``kernel_rtol``)."""
    t = time.perf_counter()
    X_test, y_test = np.asarray(X_test, np.float64), np.asarray(y_test, np.float64)
    n, d = setup.X.shape
    if X_test.ndim != 2 or X_test.shape[1] != d or y_test.shape != (X_test.shape[0],):
        raise ValueError(
            f"test_data: expected X_test (n_test, {d}) and y_test (n_test,) to match the training X, "
            f"got {X_test.shape} and {y_test.shape}"
        )
    dtype = jax_dtype(cfg)
    Xj = jnp.asarray(X_test, dtype)
    f0 = setup.model.apply(setup.params, setup.consts, Xj)
    e0_test = np.asarray(f0 - jnp.asarray(y_test, dtype), np.float64)
    if cfg.theory.kernel == "Hinf":
        H_test = setup.model.hinf(np.concatenate([setup.X, X_test]))[n:, :n]
    else:
        H_test = ntk.cross_gram(setup.model, setup.params, setup.consts, Xj, jnp.asarray(setup.X, dtype))
    null = theory.null_modes(setup.lam, kernel_rtol(cfg, setup.lam.size))
    test_map = theory.held_out_map(setup.c * H_test, setup.lam, setup.V, null)
    c_test = models.loss_scale(setup.model.loss, X_test.shape[0])
    times = {**setup.times, "held_out": time.perf_counter() - t}
    return dataclasses.replace(
        setup,
        X_test=X_test,
        y_test=y_test,
        e0_test=e0_test,
        H_test=H_test,
        c_test=c_test,
        test_map=test_map,
        times=times,
    )


def train_plan(cfg: Config) -> TrainPlan:
    t = cfg.train
    return TrainPlan(
        t.steps,
        t.record_every,
        tuple(t.error_at),
        tuple(t.kernel_at),
        t.divergence_factor,
        chunks=progress_chunks(t.steps // t.record_every),
        batch_size=t.batch_size,
        sampling=t.sampling,
    )


def progress_chunks(blocks: int, target: int = 10) -> int:
    """The divisor of ``blocks`` closest to ``target``: the scan runs as that many equal calls."""
    divisors = [c for c in range(1, blocks + 1) if blocks % c == 0]
    return min(divisors, key=lambda c: (abs(c - target), c))


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
    scheduled = [h["eta"] for h in hypers if schedules.is_scheduled(h["eta"])]
    if scheduled and (len(scheduled) < len(hypers) or len(set(scheduled)) > 1):  # a schedule is compiled in
        raise ValueError(
            "runs with different step-size schedules cannot train as one program; run them separately"
        )
    if cfg.train.batch_size is None:
        return train_batch(
            setups[0].model,
            spec,
            hypers,
            setups[0].c,
            train_plan(cfg),
            [s.params for s in setups],
            [s.consts for s in setups],
            [jnp.asarray(s.X, dtype) for s in setups],
            [jnp.asarray(s.y, dtype) for s in setups],
            progress,
            test=held_out_sets(setups),
        )
    return train_sampled(
        setups[0].model, spec, cfgs, setups, hypers, [(s.params, s.consts) for s in setups], progress
    )


def held_out_sets(setups: list[Setup]) -> list[tuple] | None:
    """Per run its held-out set (X_test, y_test) for ``train.train_batch``, or None when the runs have
    none; runs of one group either all have one (of equal shapes) or none."""
    given = [s.X_test is not None for s in setups]
    if not any(given):
        return None
    if not all(given):
        raise ValueError("runs trained as one program must all have a held-out set, or none")
    return [(s.X_test, s.y_test) for s in setups]


def sampling_keys(cfg: Config) -> list:
    """The sampling keys of run ``cfg``: fold_in(fold_in(PRNGKey(seed), 0x5EED), i), i < train.sampling_runs
    (a stream apart from the initialisation, which uses PRNGKey(seed) itself)."""
    base = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 0x5EED)
    return [jax.random.fold_in(base, i) for i in range(cfg.train.sampling_runs)]


def train_sampled(
    model: models.Model,
    spec: optimizers.OptimizerSpec,
    cfgs: list[Config],
    setups: list[Setup],
    hypers: list[dict],
    inits: list[tuple],
    progress=None,
) -> list[TrainResult]:
    """Mini-batch training of every config with its ``train.sampling_runs`` batch orders as ONE
    program (runs x orders); per config one TrainResult whose ``loss`` (and gradient norm, errors)
    is the mean over its orders, ``loss_runs`` the orders' losses, ``diverged_at`` the earliest
    divergence; snapshots and final parameters are those of the first order. ``inits[i]`` =
    (params, consts) of config i (the network's, or its linearisation's)."""
    dtype = jax_dtype(cfgs[0])
    R = cfgs[0].train.sampling_runs
    rep = lambda items: [x for x in items for _ in range(R)]
    keys = [k for c in cfgs for k in sampling_keys(c)]
    flat = train_batch(
        model,
        spec,
        rep(hypers),
        setups[0].c,
        train_plan(cfgs[0]),
        rep([p for p, _ in inits]),
        rep([c for _, c in inits]),
        rep([jnp.asarray(s.X, dtype) for s in setups]),
        rep([jnp.asarray(s.y, dtype) for s in setups]),
        progress,
        keys=keys,
        test=None if held_out_sets(setups) is None else rep(held_out_sets(setups)),
    )
    return [mean_result(flat[i * R : (i + 1) * R]) for i in range(len(cfgs))]


def mean_result(results: list[TrainResult]) -> TrainResult:
    """One TrainResult for R sampled runs of one config (``train_sampled``)."""
    runs = np.stack([r.loss for r in results])
    div = [r.diverged_at for r in results if r.diverged_at is not None]
    return dataclasses.replace(
        results[0],
        loss=runs.mean(0),
        loss_runs=runs,
        grad_norm_sq=np.stack([r.grad_norm_sq for r in results]).mean(0),
        errors=np.stack([r.errors for r in results]).mean(0),
        test_loss=None if results[0].test_loss is None else np.stack([r.test_loss for r in results]).mean(0),
        diverged_at=min(div) if div else None,
        compile_s=sum(r.compile_s for r in results),
        run_s=sum(r.run_s for r in results),
    )


def run_optimizer(cfg: Config, setup: Setup, oc: OptimizerConfig, progress=None) -> tuple[dict, dict]:
    """Train and predict one optimizer. Returns (arrays keyed by name, metrics)."""
    res = train_runs([cfg], [setup], cfg.optimizers.index(oc), progress)[0]
    return evaluate(cfg, setup, oc, res)


def evaluate(cfg: Config, setup: Setup, oc: OptimizerConfig, res: TrainResult) -> tuple[dict, dict]:
    """Kernel drift, predictions (discrete, ODE closed form, diffrax), rate fits, deviations.

    Returns (arrays: the trajectories of trajectories.npz under this label, metrics: its metrics.json
    entry with "times"). The stages: ``_kernel_drift`` (recorded kernels), ``_training_fit`` (the
    verdict on training's loss), ``_discrete_predictions``, ``_ode_predictions``, ``_beyond_full_batch``
    (mini-batch, schedules, linearisation) and ``_deviations`` (each prediction against training)."""
    spec = optimizers.get(oc.name)
    hyper = optimizer_hyper(setup, oc)
    arrays = {"step": res.step, "loss": res.loss, "error_steps": res.error_at, "errors": res.errors}
    if res.test_loss is not None:
        arrays["test_loss"] = res.test_loss
    times = {"train_compile_s": res.compile_s, "train_run_s": res.run_s}
    drift = _kernel_drift(cfg, setup, res, arrays, times)
    fit, floors, null = _training_fit(cfg, setup, res)
    metrics = {
        "optimizer": oc.name,
        "eta": oc.eta,
        "beta": hyper.get("beta"),
        "r": hyper.get("r"),
        "status": "diverged" if res.diverged_at is not None else "ok",
        "verdict": fit.verdict,
        "diverged_at": res.diverged_at,
        "fitted": {
            k: v if isinstance(v, (str, int)) else results.finite(v)
            for k, v in fit.as_dict().items()
            if k != "verdict"
        },
        "loss_floor": {**floors.info, "subtracted": floors.L_star > 0},
        "predicted": {"linear_rate": None},
        "deviation": {"discrete": None, "ode": None, "ode_hr": None},
        "deviation_log10": {},
        "theory_verdicts": {},
        "regime": None,
        "scope": rates.scope(fit, None),
        "kernel_drift": results.finite(drift[-1]) if drift else None,
    }

    metrics["eta"] = schedules.describe(hyper["eta"])
    metrics["ode"] = None
    ode = spec.ode(hyper) if spec.ode is not None and full_batch_constant(cfg, hyper) else None
    arrays["grad_norm_sq"] = res.grad_norm_sq
    _discrete_predictions(cfg, setup, spec, hyper, res, fit, null, ode, arrays, metrics, times)
    _ode_predictions(cfg, setup, spec, hyper, res, ode, arrays, metrics, times)
    _beyond_full_batch(cfg, setup, spec, hyper, res, arrays, metrics, times)
    _deviations(cfg, res, floors, arrays, metrics)
    if res.test_loss is not None:
        metrics["test"] = _held_out_metrics(cfg, setup, res, arrays)
    metrics["times"] = times
    return arrays, metrics


def _kernel_drift(cfg: Config, setup: Setup, res: TrainResult, arrays: dict, times: dict) -> list[float]:
    """The empirical NTK at each recorded snapshot reached before a divergence, and its drift
    ||H_k - H_0||_F / ||H_0||_F (arrays kernel_steps, kernels, kernel_drift)."""
    X = jnp.asarray(setup.X, jax_dtype(cfg))
    t = time.perf_counter()
    reached = [i for i, k in enumerate(res.snapshot_at) if res.diverged_at is None or k <= res.diverged_at]
    snapshot = lambda i: jax.tree.map(lambda s: s[i], res.snapshots)  # noqa: E731
    grams = [ntk.gram(setup.model, snapshot(i), setup.consts, X) for i in reached]
    drift = [ntk.kernel_drift(H, setup.H0) for H in grams]
    arrays["kernel_steps"] = res.snapshot_at[reached]
    arrays["kernels"] = np.asarray(grams).reshape(len(grams), *setup.H0.shape)
    arrays["kernel_drift"] = np.asarray(drift)
    times["kernel_drift_s"] = time.perf_counter() - t
    return drift


@dataclasses.dataclass(frozen=True)
class _Floors:
    """Loss levels of one run: L0, the float floor, the least-squares floor L* (0 unless above the
    float floor) with ``theory.loss_floor_star``'s ``info``, and the rate window."""

    L0: float
    floor: float
    L_star: float
    info: dict
    window: tuple


def _training_fit(cfg: Config, setup: Setup, res: TrainResult):
    """The verdict on training's loss (``rates.fit_rates``; on L - L* when the least-squares floor L*
    is above the float floor), the run's ``_Floors`` and the null modes of K."""
    L0 = float(res.loss[0])
    floor = rates.loss_floor(cfg.dtype, L0)
    window = tuple(cfg.rates.window)
    # least-squares floor L* (part of e0 in K's numerical null space; rtol = n eps of K's dtype): when it
    # is above the float floor, rates are fitted on L - L* (rates.fit_rates, README "Reading the verdicts")
    floor_info = theory.loss_floor_star(setup.lam, setup.coef, setup.c, kernel_rtol(cfg, setup.lam.size))
    L_star = floor_info["floor"] if floor_info["floor"] > floor else 0.0
    null = theory.null_modes(setup.lam, floor_info["rtol"])
    fit_floor = rates.difference_floor(floor, L_star, np.finfo(cfg.dtype).eps)
    fit = rates.fit_rates(
        res.step,
        res.loss,
        window,
        fit_floor,
        res.diverged_at is not None,
        cfg.rates.stall_factor,
        floor_star=L_star,
    )
    return fit, _Floors(L0, floor, L_star, floor_info, window), null


def _discrete_predictions(
    cfg: Config,
    setup: Setup,
    spec,
    hyper: dict,
    res: TrainResult,
    fit,
    null,
    ode,
    arrays: dict,
    metrics: dict,
    times: dict,
) -> None:
    """The kernel-regime recurrence (or the restart rule on it): loss_discrete, grad_norm_sq_discrete,
    predicted rate and stability, NAG-C's fixed-step tail and the asymptotic regime."""
    if spec.restart is not None and cfg.train.batch_size is not None:
        metrics["note"] = "restart predictions are full-batch: not compared with mini-batch training"
    elif spec.restart is not None:  # adaptive restart: its rule on the predicted trajectory
        t = time.perf_counter()
        modes, hits = theory.restarted_modes(spec, hyper, setup.lam, setup.coef, cfg.train.steps)
        modes = modes[res.step]
        arrays["loss_discrete"] = theory.modal_loss(modes, setup.c)
        arrays["grad_norm_sq_discrete"] = theory.modal_grad_norm_sq(modes, setup.lam, setup.c)
        arrays["restart_steps_discrete"] = hits
        _held_out_prediction(cfg, setup, modes, "discrete", arrays)
        metrics["predicted"] = {
            "linear_rate": None,
            "restart_rule": spec.restart.rule,
            "restarts": int(hits.size),
            "first_restarts": hits[:10].tolist(),
        }
        times["theory_discrete_s"] = time.perf_counter() - t
    elif not spec.has_theory:
        metrics["note"] = "empirical only: this optimizer has no kernel-regime recurrence or limiting ODE"
    else:
        t = time.perf_counter()
        modes = theory.discrete_modes(spec, hyper, setup.lam, setup.coef, cfg.train.steps)[res.step]
        arrays["loss_discrete"] = theory.modal_loss(modes, setup.c)
        _held_out_prediction(cfg, setup, modes, "discrete", arrays)
        if cfg.train.batch_size is None:  # ||grad L||^2 = c e^T K e along the full-batch recurrence
            arrays["grad_norm_sq_discrete"] = theory.modal_grad_norm_sq(modes, setup.lam, setup.c)
        live = setup.lam[~null] if (~null).any() else setup.lam  # null modes hold L*, they do not decay
        if not schedules.is_scheduled(hyper["eta"]):  # a schedule: per-step stability, _beyond_full_batch
            metrics["predicted"] = {
                "linear_rate": theory.predicted_linear_rate(spec, hyper, live),
                **theory.stability(spec, hyper, setup.lam),
            }
        if ode is not None and ode.damping == "vanishing":  # fixed-step tail of r/t damping (NAG-C, OGM)
            tail = theory.vanishing_tail(hyper["eta"], float(live[0]), ode.r)
            metrics["predicted"].update(crossover_step=tail["crossover_step"], tail_rate=tail["tail_rate"])
        if full_batch_constant(cfg, hyper):  # fixed eta, full batch: the regime it ends in, and when
            regime = theory.asymptotic_regime(spec, hyper, live, ode)
            position = rates.window_position(fit.window, regime["horizon"])
            metrics["regime"] = {**regime, "window_position": position}
            metrics["scope"] = rates.scope(fit, regime)
        times["theory_discrete_s"] = time.perf_counter() - t


def _ode_predictions(
    cfg: Config,
    setup: Setup,
    spec,
    hyper: dict,
    res: TrainResult,
    ode,
    arrays: dict,
    metrics: dict,
    times: dict,
) -> None:
    """The limiting ODE (closed form and diffrax) and the high-resolution ODE (Shi, Du, Jordan, Su 2018)."""
    if ode is None and spec.has_theory:
        metrics["note"] = "no limiting ODE is declared for this optimizer"
    if ode is not None:
        t = time.perf_counter()
        metrics["ode"] = ode.description
        ode_time = res.step * ode.time_step
        arrays["ode_time"] = ode_time
        ode_modes = theory.ode_modes(ode, setup.lam, setup.coef, ode_time)
        arrays["loss_ode"] = theory.modal_loss(ode_modes, setup.c)
        _held_out_prediction(cfg, setup, ode_modes, "ode", arrays)
        times["theory_closed_form_s"] = time.perf_counter() - t
        if cfg.theory.diffrax:
            t = time.perf_counter()
            e_num = theory.ode_diffrax(ode, setup.K, setup.e0, ode_time, cfg.theory.rtol, cfg.theory.atol)
            arrays["loss_ode_diffrax"] = theory.modal_loss(e_num, setup.c)
            times["theory_diffrax_s"] = time.perf_counter() - t
            gap = np.linalg.norm(ode_modes @ setup.V.T - e_num, axis=1) / np.linalg.norm(setup.e0)
            metrics["ode_closed_vs_diffrax"] = results.finite(np.max(gap))
    # high-resolution ODE (Shi, Du, Jordan, Su 2018)
    if spec.ode_hr is not None and full_batch_constant(cfg, hyper):
        t = time.perf_counter()
        hr = spec.ode_hr(hyper)
        metrics["ode_hr"] = hr.description
        hr_modes = theory.highres_modes(hr, setup.lam, setup.coef, res.step * hr.time_step)
        arrays["loss_ode_hr"] = theory.modal_loss(hr_modes, setup.c)
        times["theory_ode_hr_s"] = time.perf_counter() - t


def _deviations(cfg: Config, res: TrainResult, floors: _Floors, arrays: dict, metrics: dict) -> None:
    """Each prediction against training: max relative gap and log10 gap over the window, the verdict
    on the prediction itself, and the predicted squared gradient norm against training's."""
    L0, floor, L_star, window = floors.L0, floors.floor, floors.L_star, floors.window
    ok = np.isfinite(res.loss)
    for name in ("discrete", "ode", "ode_hr", "linearized"):
        pred = arrays.get(f"loss_{name}")
        if pred is None:
            continue
        mask = ok & (pred > floor) & (res.loss > floor)
        metrics["deviation"][name] = results.finite(rates.max_relative_gap(pred, res.loss, mask))
        metrics["deviation_log10"][name] = rates.log_gap(
            pred, res.loss, floor, rates.window_mask(res.step, res.loss, window, floor)
        ).as_dict()
        pred_floor = rates.difference_floor(
            rates.loss_floor("float64", L0), L_star, np.finfo("float64").eps, cfg.train.steps
        )
        theory_fit = rates.fit_rates(
            res.step, pred, window, pred_floor, stall_factor=cfg.rates.stall_factor, floor_star=L_star
        )
        metrics["theory_verdicts"][name] = theory_fit.verdict
    if "grad_norm_sq_discrete" in arrays:  # the predicted squared gradient norm against training's
        g_pred, g_train = arrays["grad_norm_sq_discrete"], np.asarray(res.grad_norm_sq, np.float64)
        g_floor = rates.loss_floor(cfg.dtype, float(g_train[0])) if np.isfinite(g_train[0]) else 0.0
        g_mask = np.isfinite(g_train) & (g_pred > g_floor) & (g_train > g_floor)
        metrics["deviation"]["grad_norm_sq"] = results.finite(rates.max_relative_gap(g_pred, g_train, g_mask))


def _held_out_prediction(cfg: Config, setup: Setup, modes: np.ndarray, name: str, arrays: dict) -> None:
    """``test_loss_<name>``: the held-out loss (c_test/2)||e_test(k)||^2 predicted from the training
    modes ``modes`` (``theory.held_out_errors``: e_test(0) + K_x K^+ (e_k - e_0)). Full batch only:
    the mean held-out loss of mini-batch runs needs the second moment (``_beyond_full_batch``)."""
    if setup.test_map is None or cfg.train.batch_size is not None:
        return
    errors = theory.held_out_errors(modes, setup.coef, setup.test_map, setup.e0_test)
    arrays[f"test_loss_{name}"] = theory.modal_loss(errors, setup.c_test)


HELD_OUT_PREDICTIONS = ("discrete", "ode", "linearized")  # test_loss_<name> arrays compared with training's


def _held_out_metrics(cfg: Config, setup: Setup, res: TrainResult, arrays: dict) -> dict:
    """metrics.json's "test": n, loss_scale, training's held-out loss at step 0 and at the last
    recorded step before any divergence (``final_step``), each prediction's value there
    (``predicted_final``) and max_k |L_train - L_pred| / L_pred over the steps above the float floor
    (``deviation``, as for the training loss)."""
    L = np.asarray(res.test_loss, np.float64)
    ok = np.isfinite(L)
    last = int(np.flatnonzero(ok)[-1]) if ok.any() else None
    floor = rates.loss_floor(cfg.dtype, float(L[0])) if ok[0] else 0.0
    out = {
        "n": int(setup.X_test.shape[0]),
        "loss_scale": float(setup.c_test),
        "loss_initial": results.finite(L[0]),
        "loss_final": None if last is None else results.finite(L[last]),
        "final_step": None if last is None else int(res.step[last]),
        "predicted_final": {},
        "deviation": {},
    }
    for name in HELD_OUT_PREDICTIONS:
        pred = arrays.get(f"test_loss_{name}")
        if pred is None:
            continue
        mask = ok & (pred > floor) & (L > floor)
        out["deviation"][name] = results.finite(rates.max_relative_gap(pred, L, mask))
        out["predicted_final"][name] = None if last is None else results.finite(pred[last])
    if cfg.train.batch_size is not None:
        out["note"] = (
            "mini-batch: test_loss_discrete is the predicted mean held-out loss (exact second moment for "
            "replacement, the mean of theory.mc_runs sampled orders for shuffle); loss is the mean of the "
            "sampled orders"
        )
    return out


def full_batch_constant(cfg: Config, hyper: dict) -> bool:
    """True for full-batch training with a constant eta: the setting of the limiting ODEs (which
    describe the mean error, not the mean loss of mini-batch runs) and of the fixed-eta rates."""
    return cfg.train.batch_size is None and not schedules.is_scheduled(hyper["eta"])


def wants_linearized(cfg: Config, spec: optimizers.OptimizerSpec) -> bool:
    """theory.linearized: always, never, or auto (optimizers without a kernel-regime recurrence)."""
    return cfg.theory.linearized == "always" or (
        cfg.theory.linearized == "auto" and not spec.has_theory and spec.restart is None
    )


def _beyond_full_batch(
    cfg: Config,
    setup: Setup,
    spec: optimizers.OptimizerSpec,
    hyper: dict,
    res: TrainResult,
    arrays: dict,
    metrics: dict,
    times: dict,
) -> None:
    """Predictions beyond full batch and constant eta, added to ``arrays`` / ``metrics`` in place:

    * scheduled eta: per-step stability (max spectral radius of A_k(lambda) with eta_k) in
      ``metrics["predicted"]``; the recurrence with eta_k is ``loss_discrete`` (``theory.discrete_modes``);
    * mini-batch (``train.batch_size``): ``loss_discrete`` becomes the predicted mean loss E[L_k]
      (exact second moment for ``replacement``, the mean of ``theory.mc_runs`` sampled orders for
      ``shuffle``; ``stochastic``), ``loss_full_batch`` keeps the full-batch recurrence, and
      ``loss_band_lo`` / ``loss_band_hi`` the 95 % band of the mean of ``train.sampling_runs`` runs;
      ``metrics["stochastic"]`` says whether the trained mean lies inside it at every recorded step;
    * ``theory.linearized``: the network's linearisation at theta_0 trained through the same path
      with the same optimizer, schedule and batches (``loss_linearized``; ``linearized``).
    """
    t = cfg.train
    scheduled = schedules.is_scheduled(hyper["eta"])
    if res.loss_runs is not None:
        arrays["loss_runs"] = res.loss_runs
    if not full_batch_constant(cfg, hyper) and spec.ode is not None:
        metrics["note"] = "the limiting ODEs are not compared: " + (
            "mini-batch runs (the ODEs describe the mean error, not the mean loss)"
            if t.batch_size is not None
            else "the step size is scheduled (the recurrence uses eta_k)"
        )
    if scheduled and spec.has_theory:
        start = time.perf_counter()
        etas = schedules.eta_values(hyper["eta"], t.steps)
        rho = max(
            float(
                np.max(
                    optimizers.spectral_radius(
                        optimizers.companion(spec, schedules.hyper_at(hyper, e), setup.lam, k + 1)
                    )
                )
            )
            for k, e in enumerate(etas)
        )
        metrics["predicted"] = {
            "linear_rate": None,
            "stable": bool(rho <= 1.0 + 1e-12),
            "max_spectral_radius": results.finite(rho),
            "eta_range": [float(etas.min()), float(etas.max())],
        }
        live_eta = etas[etas > 0]
        ode = (
            spec.ode(schedules.hyper_at(hyper, live_eta[0]))
            if spec.ode is not None and live_eta.size
            else None
        )
        if ode is not None and ode.order == 2 and ode.damping == "constant" and t.batch_size is None:
            _scheduled_second_order(cfg, setup, spec, hyper, etas, res, arrays, metrics)
        # gradient flow read at t_k = sum_{j<k} eta_j
        if ode is not None and ode.order == 1 and t.batch_size is None:
            ode_time = np.concatenate([[0.0], np.cumsum(etas)])[res.step]
            arrays["ode_time"] = ode_time
            arrays["loss_ode"] = theory.modal_loss(
                theory.ode_modes(ode, setup.lam, setup.coef, ode_time), setup.c
            )
            metrics["ode"] = "e' = -K e, t_k = sum_{j<k} eta_j (scheduled eta)"
            metrics["note"] = "scheduled eta: the first-order ODE is compared at t_k = sum_{j<k} eta_j"
            if cfg.theory.diffrax:
                e_num = theory.ode_diffrax(ode, setup.K, setup.e0, ode_time, cfg.theory.rtol, cfg.theory.atol)
                arrays["loss_ode_diffrax"] = theory.modal_loss(e_num, setup.c)
        times["theory_schedule_s"] = time.perf_counter() - start
    if t.batch_size is not None and spec.has_theory:
        start = time.perf_counter()
        b = t.batch_size
        held = (
            None
            if setup.test_map is None
            else stochastic.HeldOutMap(setup.test_map, setup.e0_test, setup.c_test)
        )
        sims = stochastic.simulate_losses(
            spec, hyper, setup.K, setup.e0, setup.c, t.steps, b, t.sampling, cfg.theory.mc_runs,
            seed=cfg.seed, held_out=held, V=setup.V,
        )  # fmt: skip
        sims, sims_test = sims if held is not None else (sims, None)
        sims = sims[:, res.step]
        exact = exact_test = None
        if t.sampling == "replacement":
            exact = stochastic.second_moment_loss(
                spec, hyper, setup.lam, setup.V, setup.coef, setup.c, t.steps, b, held_out=held
            )
            exact, exact_test = exact if held is not None else (exact, None)
            exact = exact[res.step]
        if held is not None:  # the predicted mean held-out loss: exact (replacement) or sampled (shuffle)
            mean_test = exact_test if exact_test is not None else sims_test.mean(axis=0)
            arrays["test_loss_discrete"] = mean_test[res.step]
        band = stochastic.mean_band(exact, sims, t.sampling_runs)
        arrays["loss_full_batch"] = arrays.get("loss_discrete")
        arrays["loss_discrete"], arrays["loss_band_lo"], arrays["loss_band_hi"] = band.mean, band.lo, band.hi
        mbb = stochastic.mbb_constants(setup.K)
        info = {
            "batch_size": b,
            "sampling": t.sampling,
            "sampling_runs": t.sampling_runs,
            "mc_runs": cfg.theory.mc_runs,
            "mean": band.source,
            **_band_check(cfg, band, res),
            "mbb": {
                "beta": mbb.beta,
                "lam_1": mbb.lam_1,
                "lam_n": mbb.lam_n,
                "knee_batch_size": mbb.knee_batch_size,
                "bound_step_size": float(mbb.bound_step_size(b)),
            },
        }
        predicted = metrics.get("predicted") or {}
        predicted["full_batch_linear_rate"] = predicted.get("linear_rate")
        predicted["linear_rate"] = None  # the rate of E[L_k]: replacement only (shuffle has no closed form)
        if t.sampling == "replacement" and spec.constant and not scheduled:
            info["linear_rate"] = stochastic.second_moment_rate(spec, hyper, setup.lam, setup.V, b)
            predicted["linear_rate"] = info["linear_rate"]
        metrics["predicted"] = predicted
        metrics["stochastic"] = info
        times["theory_stochastic_s"] = time.perf_counter() - start
    if wants_linearized(cfg, spec):
        start = time.perf_counter()
        lin = train_linearized(cfg, setup, spec, hyper)
        arrays["loss_linearized"] = lin.loss
        if lin.test_loss is not None:
            arrays["test_loss_linearized"] = lin.test_loss
        metrics["linearized"] = {"diverged_at": lin.diverged_at, "runs": t.sampling_runs}
        if lin.loss_runs is not None:
            arrays["loss_linearized_runs"] = lin.loss_runs
            if "loss_band_lo" in arrays:  # linear: only sampling noise separates it from E[L]
                band = stochastic.MeanBand(
                    arrays["loss_discrete"],
                    None,
                    arrays["loss_band_lo"],
                    arrays["loss_band_hi"],
                    t.sampling_runs,
                    cfg.theory.mc_runs,
                    "",
                )
                metrics["stochastic"]["linearized"] = _band_check(cfg, band, lin)
        times["linearized_s"] = time.perf_counter() - start


def _scheduled_second_order(
    cfg: Config,
    setup: Setup,
    spec: optimizers.OptimizerSpec,
    hyper: dict,
    etas: np.ndarray,
    res: TrainResult,
    arrays: dict,
    metrics: dict,
) -> None:
    """The ODE face of a second-order method with constant damping (HB, NAG-SC, ...) under a
    scheduled eta: update k spans dt_k = ``time_step`` of its own constant-eta ODE (sqrt(eta_k)) with
    that ODE's damping gamma_k ((1 - beta) / sqrt(eta_k) for HB), held over [t_k, t_{k+1})
    (``theory.piecewise_damped_modes``, exact per interval; diffrax in the full output space when
    theory.diffrax). ``loss_ode`` and ``ode_time`` (t_k) at the recorded steps."""
    dt, gamma = np.zeros(etas.size), np.zeros(etas.size)
    for k, e in enumerate(etas):
        if e > 0:
            ode_k = spec.ode(schedules.hyper_at(hyper, e))
            dt[k], gamma[k] = ode_k.time_step, ode_k.gamma
    arrays["ode_time"] = np.concatenate([[0.0], np.cumsum(dt)])[res.step]
    modes = theory.piecewise_damped_modes(setup.lam, setup.coef, dt, gamma, res.step)
    arrays["loss_ode"] = theory.modal_loss(modes, setup.c)
    metrics["ode"] = (
        "e'' + gamma_k e' + K e = 0 on [t_k, t_k+1), t_k+1 = t_k + sqrt(eta_k), gamma_k of eta_k "
        "(scheduled eta)"
    )
    metrics["note"] = (
        "scheduled eta: the second-order ODE is compared with gamma_k and the time map t_k = sum_{j<k} "
        "sqrt(eta_j) of each step's eta; the high-resolution ODE is not"
    )
    if cfg.theory.diffrax:
        e_num = theory.piecewise_damped_diffrax(
            setup.K, setup.e0, dt, gamma, res.step, cfg.theory.rtol, cfg.theory.atol
        )
        arrays["loss_ode_diffrax"] = theory.modal_loss(e_num, setup.c)


def _band_check(cfg: Config, band: stochastic.MeanBand, res: TrainResult) -> dict:
    """Is the trained mean loss inside the predicted mean's 95 % band at every recorded step? The band
    is widened by the rounding of the training dtype, 100 eps |mean| (at step 0 every run has the same
    loss, so the sampled band has zero width)."""
    tol = 100 * float(np.finfo(cfg.dtype).eps) * np.abs(band.mean)
    half = 0.5 * (band.hi - band.lo)
    live = np.isfinite(res.loss)
    with np.errstate(invalid="ignore"):
        inside = live & (np.abs(res.loss - band.mean) <= half + tol)
    outside = np.flatnonzero(live & ~inside)
    return {
        "inside_band": results.finite(np.mean(inside[live])) if live.any() else None,
        "all_inside": bool(live.any() and outside.size == 0),
        "first_outside_step": int(res.step[outside[0]]) if outside.size else None,
    }


def train_linearized(cfg: Config, setup: Setup, spec: optimizers.OptimizerSpec, hyper: dict) -> TrainResult:
    """The network's linearisation at theta_0 (``linearized.linearize``) trained by the same
    training path, optimizer, schedule, plan and (for mini-batch runs) the same batches."""
    dtype = jax_dtype(cfg)
    model = linearized.linearize(setup.model)
    consts = linearized.linear_consts(setup.params, setup.consts)
    if cfg.train.batch_size is not None:
        return train_sampled(model, spec, [cfg], [setup], [hyper], [(setup.params, consts)])[0]
    return train_batch(
        model,
        spec,
        [hyper],
        setup.c,
        train_plan(cfg),
        [setup.params],
        [consts],
        [jnp.asarray(setup.X, dtype)],
        [jnp.asarray(setup.y, dtype)],
        test=held_out_sets([setup]),
    )[0]
