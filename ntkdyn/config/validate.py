"""Value checks of a parsed config, section by section, and the defaults that depend on other keys.

Keys that do not apply are refused, not recorded as if used: each data source declares its
``data.<key>`` (``ntkdyn.data.SOURCES``), each model its ``model.<key>`` (``schema.MODEL_KEYS``),
the mini-batch keys (train.sampling, theory.mc_runs) need train.batch_size and theory.rtol / atol
need theory.diffrax. Such keys default to null; validation fills the default where the key
applies and leaves null where it does not. No file is read here (``ntkdyn.checks.check_files``).
"""

from __future__ import annotations

import inspect
import math

import numpy as np

from ntkdyn import data as data_mod
from ntkdyn import models, optimizers, schedules
from ntkdyn.config.outputs import check_outputs
from ntkdyn.config.schema import (
    MODEL_DEFAULTS,
    MODEL_KEYS,
    SOLVERS,
    Config,
    ConfigError,
    DataConfig,
    ModelConfig,
    OptimizerConfig,
    RelativeStep,
    number_from_text,
)

_number_from_text = number_from_text


def _allowed(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not allowed; allowed: {', '.join(map(str, allowed))}")


def validate(cfg: Config) -> Config:
    """Value checks (types were checked by the parser), section by section; fills defaults that
    depend on others. Reads no file (``ntkdyn.checks.check_files`` does, before any compute).
    Raises ConfigError naming the key, the value and what is allowed."""
    _allowed("dtype", cfg.dtype, ("float32", "float64"))
    if cfg.seed < 0:
        raise ConfigError(f"seed: must be an integer >= 0 (numpy and jax seeds), got {cfg.seed}")
    _check_data(cfg.data)
    _check_model(cfg.model)
    check_outputs(cfg)  # model.outputs, data.target onehot, classification losses (config.outputs)
    _check_train(cfg)
    _check_theory_and_rates(cfg)
    labels = _check_optimizers(cfg)
    _check_beyond_full_batch(cfg)
    if cfg.control is not None:  # control: section (ntkdyn.control)
        _check_control(cfg, labels)
    return cfg


def _refuse_keys(
    section, prefix: str, applies: tuple[str, ...], owner: str, allowed_for: dict, why=None
) -> None:
    """ConfigError for the first optional key of ``section`` that is set (not None) but is not in
    ``applies``; ``allowed_for`` maps each key to the choices it applies to, ``why`` adds a reason."""
    for key, where in allowed_for.items():
        value = getattr(section, key)
        if value is not None and key not in applies:
            reason = f" ({why[key]})" if why and key in why else ""
            raise ConfigError(
                f"{prefix}.{key}: does not apply to {owner}{reason} (got {value!r}); {prefix}.{key} is for "
                f"{', '.join(where) or 'none'}; leave it out"
            )


def _check_data(d: DataConfig) -> None:
    """data: the source's keys only (``Source.keys``), filled with its defaults, then its value
    checks (``Source.validate``); n >= 1, normalize, data.test.n >= 1. No file is read."""
    _allowed("data.source", d.source, tuple(data_mod.SOURCES))
    src = data_mod.SOURCES[d.source]
    where = {
        key: tuple(f"data.source {name}" for name, s in data_mod.SOURCES.items() if key in s.keys)
        for key in data_mod.OPTIONAL_KEYS
    }
    _refuse_keys(d, "data", src.keys, f"data.source {d.source!r}", where, src.refusals)
    for key, value in src.defaults.items():
        if getattr(d, key) is None:
            setattr(d, key, value)
    if d.n is None:
        d.n = src.default_n
    if d.n is not None and d.n < 1:
        raise ConfigError(f"data.n: must be >= 1, got {d.n}")
    if d.test is not None and d.test.n is not None and d.test.n < 1:
        raise ConfigError(f"data.test.n: must be >= 1, got {d.test.n}")
    try:
        src.validate(d)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if src.default_normalize is None:
        if d.normalize is not None:
            takes = [f"data.source {n}" for n, s in data_mod.SOURCES.items() if s.default_normalize]
            raise ConfigError(
                f"data.normalize: does not apply to data.source {d.source!r} (its points are not "
                f"normalised; got {d.normalize!r}); data.normalize is for {', '.join(takes)}; leave it out"
            )
        return
    if d.normalize is None:
        d.normalize = src.default_normalize
    _allowed("data.normalize", d.normalize, data_mod.NORMALIZE)
    if d.normalize == "pixels" and src.pixel_max is None:
        raise ConfigError(
            f"data.normalize: 'pixels' is for image sources ({', '.join(data_mod.PIXEL_MAX)}), "
            f"not data.source {d.source!r}"
        )


def _check_model(m: ModelConfig) -> None:
    """model: name; the keys of that model only (``MODEL_KEYS``, filled with ``MODEL_DEFAULTS``);
    width, depth, init_std, init, loss, module."""
    _allowed("model.name", m.name, tuple(MODEL_KEYS))
    optional = sorted({k for keys in MODEL_KEYS.values() for k in keys})
    where = {k: tuple(f"model.name {n}" for n, keys in MODEL_KEYS.items() if k in keys) for k in optional}
    _refuse_keys(m, "model", MODEL_KEYS[m.name], f"model.name {m.name!r}", where)
    for key in MODEL_KEYS[m.name]:
        if getattr(m, key) is None and key in MODEL_DEFAULTS:
            setattr(m, key, MODEL_DEFAULTS[key])
    if m.width is not None and m.width < 1:
        raise ConfigError(f"model.width: must be >= 1, got {m.width}")
    if m.depth is not None and m.depth < 1:
        raise ConfigError(f"model.depth: must be >= 1, got {m.depth}")
    if m.init_std is not None and m.init_std <= 0:
        raise ConfigError(f"model.init_std: must be > 0, got {m.init_std}")
    if m.name == "released":
        m.init = m.init or "notebook"
        _allowed("model.init", m.init, models.RELEASED_INITS)
    if m.loss is not None:
        _allowed("model.loss", m.loss, models.ALL_LOSSES)
    if m.name == "flax" and not m.module:
        raise ConfigError("model.module: required when model.name is 'flax' ('package.module:factory')")


def _note(cfg: Config, text: str) -> None:
    if text not in cfg.notes:
        cfg.notes.append(text)


def _check_train(cfg: Config) -> None:
    """train: steps, record_every, divergence_factor, error_at, kernel_at (fills the step lists).

    error_at / kernel_at are absolute steps; steps past train.steps are CLIPPED to train.steps with
    a note in ``cfg.notes`` (recorded in config.yaml), so that ``--set train.steps=500`` works on a
    config written for more steps (the last snapshot stays at the last step); negative steps are
    refused."""
    t = cfg.train
    if t.steps < 1:
        raise ConfigError(f"train.steps: must be >= 1, got {t.steps}")
    if t.record_every < 1 or t.steps % t.record_every:
        raise ConfigError(
            f"train.record_every: must be >= 1 and divide train.steps={t.steps}, got {t.record_every}"
        )
    if t.divergence_factor <= 1:
        raise ConfigError(f"train.divergence_factor: must be > 1, got {t.divergence_factor}")
    defaults = {"error_at": [0, t.steps], "kernel_at": [0, t.steps // 4, t.steps // 2, t.steps]}
    for key, default in defaults.items():
        given = getattr(t, key)
        values = default if given is None else given
        for v in values:
            if v < 0:
                raise ConfigError(f"train.{key}: step {v} is negative; steps run 0..train.steps={t.steps}")
        past = sorted({v for v in values if v > t.steps})
        if past:
            _note(
                cfg,
                f"train.{key}: step(s) {', '.join(map(str, past))} past train.steps={t.steps} "
                f"clipped to {t.steps}",
            )
        setattr(t, key, sorted({min(v, t.steps) for v in values}))
    if 0 not in t.kernel_at:
        t.kernel_at = [0] + t.kernel_at
    _check_sharpness_every(t)


def _check_sharpness_every(t) -> None:
    """train.sharpness_every: null, or an integer k >= 1 that is a multiple of train.record_every
    and at most train.steps (sharpness is recorded at recorded steps only: 0, k, 2k, ... and steps)."""
    k = t.sharpness_every
    if k is None:
        return
    if isinstance(k, bool) or not isinstance(k, int):
        raise ConfigError(f"train.sharpness_every: must be an integer or null, got {k!r}")
    if k < 1 or k % t.record_every or k > t.steps:
        raise ConfigError(
            f"train.sharpness_every: must be a multiple of train.record_every={t.record_every} in "
            f"1..train.steps={t.steps} (or null: off), got {k}"
        )


def _check_theory_and_rates(cfg: Config) -> None:
    """theory.kernel (Hinf only where defined) and rates.window: two fractions of the steps (both
    <= 1) or two absolute steps (integers, end > 1), never one of each."""
    m = cfg.model
    _allowed("theory.kernel", cfg.theory.kernel, ("H0", "Hinf"))
    _allowed("theory.solver", cfg.theory.solver, SOLVERS)
    if cfg.theory.kernel == "Hinf" and m.name not in ("paper", "mlp"):
        raise ConfigError(
            f"theory.kernel: 'Hinf' is defined for model.name 'paper' and 'mlp' only "
            f"(got {m.name!r}); use 'H0'"
        )
    th = cfg.theory
    # the classification losses' function-space ODEs are diffrax solves too: they read rtol / atol
    # (unset: pipeline.faces.classification's FLOW_RTOL / FLOW_ATOL)
    flows = m.loss in models.CLASSIFICATION_LOSSES
    for key, default in (("rtol", 1e-10), ("atol", 1e-12)):
        value = getattr(th, key)
        if not th.diffrax and not flows and value is not None:
            raise ConfigError(
                f"theory.{key}: applies with theory.diffrax true only, or with model.loss softmax_ce / "
                f"logistic (got {value!r} with diffrax false); set theory.diffrax or leave it out"
            )
        if th.diffrax:
            setattr(th, key, default if value is None else value)
        if getattr(th, key) is not None and not getattr(th, key) > 0:
            raise ConfigError(f"theory.{key}: must be > 0, got {getattr(th, key)}")
    w = cfg.rates.window
    if len(w) != 2 or not 0 <= w[0] < w[1]:
        raise ConfigError(f"rates.window: expected [start, end] with 0 <= start < end, got {w}")
    if w[1] > 1 and not all(float(v).is_integer() for v in w):
        raise ConfigError(
            f"rates.window: {w} mixes a fraction and a step; give two fractions of train.steps "
            f"(0 <= start < end <= 1) or two steps (integers, e.g. [100, {int(w[1])}])"
        )


def _check_optimizers(cfg: Config) -> list[str]:
    """optimizers: at least one, registered names, each one's hyperparameters; returns the labels."""
    if not cfg.optimizers:
        raise ConfigError("optimizers: at least one optimizer is needed")
    labels: list[str] = []
    for i, o in enumerate(cfg.optimizers):
        key = f"optimizers[{i}]"
        if o.name not in optimizers.REGISTRY:
            raise ConfigError(
                f"{key}.name: unknown optimizer {o.name!r}; allowed: {', '.join(sorted(optimizers.REGISTRY))}"
            )
        _check_optimizer(key, o, optimizers.REGISTRY[o.name], labels)
    return labels


def _check_control(cfg: Config, labels: list[str]) -> None:
    """control: labels, extra (recurrence-only), band, map, locus and eta-sweep settings."""
    cc = cfg.control
    for lab in cc.labels or []:
        if lab not in labels:
            raise ConfigError(
                f"control.labels: {lab!r} is not an optimizer label; allowed: {', '.join(labels)}"
            )
    for i, o in enumerate(cc.extra or []):
        key = f"control.extra[{i}]"
        try:
            spec = optimizers.modal_spec(o.name)
        except ValueError:
            allowed = ", ".join(optimizers.modal_names())
            raise ConfigError(f"{key}.name: {o.name!r} has no recurrence; allowed: {allowed}") from None
        _check_optimizer(key, o, spec, labels)
    if not 0 < cc.band < 1:
        raise ConfigError(f"control.band: must be in (0, 1), got {cc.band}")
    if cc.max_iters < 1:
        raise ConfigError(f"control.max_iters: must be >= 1, got {cc.max_iters}")
    if cc.step_steps < 1:
        raise ConfigError(f"control.step_steps: must be >= 1, got {cc.step_steps}")
    for name in cc.map_optimizers:
        spec = optimizers.REGISTRY.get(name)
        if spec is None or not spec.has_theory or "beta" not in spec.hyper or spec.tune is not None:
            allowed = [
                n
                for n, s in optimizers.REGISTRY.items()
                if s.has_theory and "beta" in s.hyper and s.tune is None
            ]
            raise ConfigError(
                f"control.map_optimizers: {name!r} has no (eta, beta) map; allowed: {', '.join(allowed)}"
            )
    if len(cc.map_eta) != 2 or not 0 < cc.map_eta[0] < cc.map_eta[1]:
        raise ConfigError(
            f"control.map_eta: expected [lo, hi] with 0 < lo < hi (eta * lambda_max), got {cc.map_eta}"
        )
    if len(cc.map_beta) != 2 or not 0 <= cc.map_beta[0] <= cc.map_beta[1] < 1:
        raise ConfigError(f"control.map_beta: expected [lo, hi] with 0 <= lo <= hi < 1, got {cc.map_beta}")
    if len(cc.map_grid) != 2 or min(cc.map_grid) < 2:
        raise ConfigError(f"control.map_grid: expected [n_eta, n_beta], each >= 2, got {cc.map_grid}")
    if cc.map_steps < 0:
        raise ConfigError(f"control.map_steps: must be >= 0, got {cc.map_steps}")
    _allowed("control.map_dtype", cc.map_dtype, ("float32", "float64"))
    _allowed("control.locus", cc.locus, ("beta", "eta"))
    if cc.locus_points < 2:
        raise ConfigError(f"control.locus_points: must be >= 2, got {cc.locus_points}")
    if cc.sweep_etas:
        spec = optimizers.REGISTRY.get(cc.sweep_optimizer)
        if spec is None or not spec.has_theory or spec.ode is None or spec.tune is not None:
            raise ConfigError(
                f"control.sweep_optimizer: {cc.sweep_optimizer!r} needs a recurrence and an ODE"
            )
        for hp, default in spec.hyper.items():
            if default is None and not any(
                o.name == cc.sweep_optimizer and getattr(o, hp, None) is not None for o in cfg.optimizers
            ):
                raise ConfigError(
                    f"control.sweep_optimizer: {cc.sweep_optimizer!r} needs {hp!r}; list it in "
                    "optimizers with that value"
                )
        for e in cc.sweep_etas:
            if not (e > 0 and math.isfinite(e)):
                raise ConfigError(f"control.sweep_etas: every eta must be > 0, got {e}")
    if not cc.sweep_time > 0:
        raise ConfigError(f"control.sweep_time: must be > 0, got {cc.sweep_time}")


def _check_optimizer(key: str, o: OptimizerConfig, spec: optimizers.OptimizerSpec, labels: list[str]) -> None:
    """Checks of one optimizer entry against its declaration; fills its label (appended to labels)."""
    if spec.tune is None and o.eta is None:
        raise ConfigError(f"{key}.eta: required by optimizer {o.name!r}")
    if isinstance(o.eta, dict) and "per_lambda_max" in o.eta:
        o.eta = _relative_step(f"{key}.eta", o.eta)
    if isinstance(o.eta, RelativeStep):
        p = o.eta.per_lambda_max
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not (math.isfinite(p) and p > 0):
            raise ConfigError(f"{key}.eta.per_lambda_max: must be a finite number > 0, got {p!r}")
    elif isinstance(o.eta, dict):
        try:
            schedules.from_config(o.eta)
        except ValueError as exc:
            raise ConfigError(f"{key}.eta: {exc}") from None
    elif o.eta is not None and not (o.eta > 0 and math.isfinite(o.eta)):
        raise ConfigError(
            f"{key}.eta: must be > 0 and finite (or a schedule, or {{per_lambda_max: p}}), got {o.eta}"
        )
    takes = "eta" + "".join(f", {h}" for h in spec.hyper)
    for hp in ("beta", "r"):
        if getattr(o, hp) is not None and hp not in spec.hyper:
            raise ConfigError(f"{key}.{hp}: optimizer {o.name!r} takes no {hp!r}; it takes: {takes}")
    if o.beta is not None and not 0 <= o.beta < 1:
        raise ConfigError(f"{key}.beta: must be in [0, 1), got {o.beta}")
    if o.r is not None and o.r <= 0:
        raise ConfigError(f"{key}.r: must be > 0, got {o.r}")
    if spec.optax_factory is not None:
        accepted = [p for p in inspect.signature(spec.optax_factory).parameters if p != "learning_rate"]
        what = f"an argument of optax.{o.name}"
    else:  # declared hyperparameters other than beta and r (e.g. hb2's beta2, ogm's N)
        accepted = [h for h in spec.hyper if h not in ("beta", "r")]
        what = f"a hyperparameter of {o.name!r}"
    for kw in o.kwargs or {}:
        if kw not in accepted:
            raise ConfigError(f"{key}.kwargs.{kw}: not {what}; allowed: {', '.join(accepted) or 'none'}")
    for hp, default in spec.hyper.items():
        if default is None and getattr(o, hp, None) is None and hp not in (o.kwargs or {}):
            raise ConfigError(f"{key}.{hp}: required by optimizer {o.name!r}")
    o.label = o.label or o.name
    if o.label in labels or "/" in o.label:
        raise ConfigError(
            f"{key}.label: {o.label!r} repeats another label or contains '/'; labels must be unique"
        )
    labels.append(o.label)


def _relative_step(key: str, raw: dict) -> RelativeStep:
    """``{per_lambda_max: p}`` as a ``RelativeStep`` (no other key)."""
    extra = sorted(k for k in raw if k != "per_lambda_max")
    if extra:
        raise ConfigError(f"{key}: unknown key {extra[0]!r} beside per_lambda_max; allowed: per_lambda_max")
    p = raw["per_lambda_max"]
    if isinstance(p, str):
        p = _number_from_text(p, f"{key}.per_lambda_max", "a number")
    return RelativeStep(p)


def check_batch_size(cfg: Config) -> None:
    """train.batch_size in 1..data.n (skipped while data.n is unknown: an .npz's size is filled by
    its file check, which calls this again)."""
    b, n = cfg.train.batch_size, cfg.data.n
    if b is not None and not (b >= 1 and (n is None or b <= n)):
        raise ConfigError(f"train.batch_size: must be in 1..data.n={n} (or null: full batch), got {b}")


def _check_beyond_full_batch(cfg: Config) -> None:
    """Mini-batch (train.batch_size, train.sampling, train.sampling_runs), scheduled eta and the
    linearised prediction (theory.linearized, theory.mc_runs): values, and combinations not supported.
    train.sampling and theory.mc_runs apply to mini-batch runs only (filled there: replacement, 2000)."""
    t, th = cfg.train, cfg.theory
    if t.batch_size is None:
        for key, value in (("train.sampling", t.sampling), ("theory.mc_runs", th.mc_runs)):
            if value is not None:
                raise ConfigError(
                    f"{key}: applies to mini-batch runs only (got {value!r} with full-batch training); "
                    "set train.batch_size or leave it out"
                )
    else:
        t.sampling = t.sampling or "replacement"
        th.mc_runs = 2000 if th.mc_runs is None else th.mc_runs
        _allowed("train.sampling", t.sampling, ("replacement", "shuffle"))
    check_batch_size(cfg)
    if t.sampling_runs < 1:
        raise ConfigError(f"train.sampling_runs: must be >= 1, got {t.sampling_runs}")
    if t.sampling_runs > 1 and t.batch_size is None:
        raise ConfigError(
            f"train.sampling_runs: {t.sampling_runs} runs of full-batch training are "
            "identical; set train.batch_size or leave sampling_runs at 1"
        )
    _allowed("theory.linearized", th.linearized, ("auto", "always", "never"))
    _allowed("theory.quadratic", th.quadratic, ("never", "auto", "always"))
    _check_central_flow(cfg)
    if th.mc_runs is not None and th.mc_runs < 2:
        raise ConfigError(f"theory.mc_runs: must be >= 2, got {th.mc_runs}")
    for i, o in enumerate(cfg.optimizers):
        if isinstance(o.eta, dict):
            etas = schedules.eta_values(schedules.from_config(o.eta), t.steps)
            if not (np.all(np.isfinite(etas)) and np.all(etas >= 0) and np.any(etas > 0)):
                raise ConfigError(
                    f"optimizers[{i}].eta: the schedule must give finite eta_k >= 0, "
                    f"not all 0, over train.steps={t.steps}; got min {etas.min():.3g}, "
                    f"max {etas.max():.3g}"
                )
    if cfg.control is not None:
        scheduled = [
            o.label
            for o in cfg.optimizers
            if isinstance(o.eta, dict) and (cfg.control.labels is None or o.label in cfg.control.labels)
        ]
        if t.batch_size is not None or scheduled:
            what = (
                "train.batch_size"
                if t.batch_size is not None
                else f"the scheduled eta of {', '.join(scheduled)}"
            )
            raise ConfigError(
                f"control: the control view is full-batch with a constant eta; remove {what} "
                "or the control: section"
            )


def _check_central_flow(cfg: Config) -> None:
    """theory.central_flow: the GD central flow (``pipeline.faces.central_flow``) needs full-batch
    ``gd`` with a constant eta and a squared loss; a config asking it for anything else is refused
    here, naming the key, before any compute."""
    if not cfg.theory.central_flow:
        return
    why = None
    if cfg.train.batch_size is not None:
        why = f"full-batch training only (train.batch_size is {cfg.train.batch_size})"
    elif cfg.model.loss in models.CLASSIFICATION_LOSSES:
        why = f"squared losses only (model.loss is {cfg.model.loss})"
    else:
        for i, o in enumerate(cfg.optimizers):
            if o.name != "gd":
                why = f"gradient descent only (optimizers[{i}].name is {o.name!r}; allowed: gd)"
                break
            if isinstance(o.eta, dict) and "schedule" in o.eta:
                why = f"a constant eta only (optimizers[{i}].eta is a schedule)"
                break
    if why is not None:
        raise ConfigError(f"theory.central_flow: applies to {why}; set it false or change the run")
