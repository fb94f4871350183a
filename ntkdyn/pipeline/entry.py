"""The Python entry points of the run path (run_study, run_group, prepare, evaluate_group): a run
from Python is a config (a ``Config``, a mapping or a YAML path), optionally your own model and
data, then training, the empirical NTK, every prediction and the verdicts, as a typed
``results.RunResult``.

    model = ntkdyn.from_apply_fn(apply_fn, params)            # or from_linen / from_flax
    run = ntkdyn.run_study({"train": {"steps": 300}, "optimizers": [{"name": "gd", "eta": 0.5}]},
                           model=model, data=(X, y))
    run["gd"].verdict, run["gd"].fitted.linear_rate, run["gd"].predicted.linear_rate

The stages are ``setup.prepare`` (data, model, H0, spectrum of K = c H) and, per optimizer,
``training.train_runs`` (one compiled scan for a whole group of runs of equal shapes,
``run_group``; with the models the faces ask for, ``faces.expansions``, trained in the same call) then
``evaluate.evaluate`` (the faces, assembled into a typed result): the same code
as ``python -m ntkdyn.run``. Float64 (used by the theory) is switched on inside these calls only
(``jax.enable_x64``); training runs in the config's ``dtype``. Writing a folder (``out=``) is
``folder.write_run``'s job.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from ntkdyn import checks, optimizers, results, train
from ntkdyn import config as config_mod
from ntkdyn.models import Model
from ntkdyn.pipeline import evaluate as evaluate_mod
from ntkdyn.pipeline import faces, training
from ntkdyn.pipeline import setup as setup_mod
from ntkdyn.pipeline.evaluate import run_result
from ntkdyn.pipeline.setup import Setup
from ntkdyn.pipeline.training import StabilityWarning  # noqa: F401  (re-exported: warned before training)

_TEST_TWICE = "data.test: given both in the config and as test_data=...; give it once"


def _config(
    config: config_mod.Config | Mapping | str, user_model: bool, user_data: bool, user_test: bool = False
) -> config_mod.Config:
    if isinstance(config, config_mod.Config):
        if user_test and config.data.test is not None:
            raise config_mod.ConfigError(_TEST_TWICE)
        return checks.check_files(config_mod.validate(config))
    if isinstance(config, (str, os.PathLike)):
        raw = config_mod.load_raw(str(config))
    elif isinstance(config, Mapping):
        raw = dict(config)
    else:
        raise config_mod.ConfigError(
            f"config: expected a Config, a mapping or a YAML path, got {type(config).__name__}"
        )
    if "sweep" in raw:
        raise config_mod.ConfigError("sweep: run_study runs one config; run sweeps with python -m ntkdyn.run")
    for key, given in (("model", user_model), ("data", user_data)):
        if given and key in raw:
            raise config_mod.ConfigError(f"{key}: given both in the config and as {key}=...; give it once")
    if user_test and isinstance(raw.get("data"), Mapping) and raw["data"].get("test") is not None:
        raise config_mod.ConfigError(_TEST_TWICE)
    return checks.check_files(config_mod.from_dict(raw))


def _check_data(data, key: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """(X, y) as float64 arrays: X (n, d), y (n,) or (n, 1), finite (``key`` names the argument)."""
    try:
        X, y = data
    except (TypeError, ValueError):
        raise ValueError(f"{key}: expected a pair (X, y), got {type(data).__name__}") from None
    X, y = np.asarray(X, np.float64), np.asarray(y, np.float64)
    if X.ndim != 2:
        raise ValueError(f"{key}: X must be 2-D (n, d), got shape {X.shape}")
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.shape != (X.shape[0],):
        raise ValueError(f"{key}: y must have shape ({X.shape[0]},) to match X, got {y.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError(f"{key}: X and y must be finite")
    return X, y


def _check_inputs(
    cfgs: Sequence[config_mod.Config], models: Sequence, data: Sequence, tests: Sequence
) -> tuple[list, list, list]:
    """The input checks of the Python entry points, before anything is computed: per run the
    (Model, params, consts), (X, y) and held-out (X_test, y_test) given from Python, checked and
    converted (None entries stay None). Raises ConfigError / ValueError naming the bad argument."""
    built = [_check_model(m, c) if m is not None else None for m, c in zip(models, cfgs)]
    pairs = [_check_data(d) if d is not None else None for d in data]
    test_pairs = [_check_data(t, "test_data") if t is not None else None for t in tests]
    checks.check_group(cfgs, built, pairs)
    if pairs[0] is not None or cfgs[0].data.n is not None:  # else n is known once loaded (setup checks)
        checks.check_memory(cfgs[0], len(cfgs), pairs[0] and pairs[0][0], built[0] and built[0][1])
    return built, pairs, test_pairs


def _check_model(built, cfg: config_mod.Config):
    try:
        model, params, consts = built
    except (TypeError, ValueError):
        raise ValueError(
            "model: expected (Model, params, consts) from models.from_apply_fn, from_linen or "
            f"from_flax, got {type(built).__name__}"
        ) from None
    if not isinstance(model, Model):
        raise ValueError(f"model: the first item must be an ntkdyn Model, got {type(model).__name__}")
    if cfg.theory.kernel == "Hinf" and model.hinf is None:
        raise config_mod.ConfigError(
            f"theory.kernel: 'Hinf' needs an infinite-width kernel, which model "
            f"{model.name!r} does not have; use 'H0'"
        )
    wrong = sorted(
        {
            str(leaf.dtype)
            for leaf in jax.tree.leaves(params)
            if np.issubdtype(leaf.dtype, np.inexact) and leaf.dtype != np.dtype(cfg.dtype)
        }
    )
    if wrong:
        raise config_mod.ConfigError(
            f"dtype: the model's parameters are {', '.join(wrong)} but dtype is "
            f"{cfg.dtype!r}; make them {cfg.dtype} or set dtype to match"
        )
    return model, params, consts


def _described_config(
    cfg: config_mod.Config, setup: Setup, user_model: bool, user_data: bool, user_test: bool = False
) -> dict:
    doc = config_mod.to_dict(cfg)
    if user_model:
        doc["model"] = {
            "name": setup.model.name,
            "source": "python",
            "loss": setup.model.loss,
            "parameters": int(sum(np.size(leaf) for leaf in jax.tree.leaves(setup.params))),
        }
    if user_data:
        doc["data"] = {"source": "python", "n": int(setup.X.shape[0]), "d": int(setup.X.shape[1])}
    if user_test:
        assert setup.X_test is not None  # the user's held-out set
        doc["data"]["test"] = {"source": "python", "n": int(setup.X_test.shape[0])}
    return doc


@dataclasses.dataclass(frozen=True)
class Evaluated:
    """One optimizer of one run, trained and evaluated (``evaluate_group``).

    ``result``: the typed ``results.OptimizerResult`` (its ``trajectory``: the arrays of
    trajectories.npz under its label); ``trained``: training's ``train.TrainResult`` (parameter
    snapshots, final parameters, ``expansions``); ``times``: seconds per stage (train_compile_s,
    train_run_s, train_<face>_compile_s / train_<face>_run_s for a face's trained model,
    kernel_drift_s, face_<name>_s, evaluate_s). ``arrays`` and ``metrics`` are views of ``result``
    (its trajectory and its metrics.json entry) for code that reads them by key.
    """

    label: str
    result: results.OptimizerResult
    trained: Any
    times: Mapping[str, float]

    @property
    def arrays(self) -> Mapping[str, np.ndarray]:
        """The trajectories (trajectories.npz's arrays under this label)."""
        return self.result.trajectory

    @property
    def metrics(self) -> dict[str, Any]:
        """The metrics.json entry of this optimizer (``result.to_json()``)."""
        return self.result.to_json()


def evaluate_group(
    cfgs: Sequence[config_mod.Config], setups: Sequence, index: int, progress=None
) -> list[Evaluated]:
    """THE run path: optimizer ``index`` of every run (equal shapes) trained as ONE compiled,
    batched program (``training.train_runs``), with the models the faces ask for trained beside it
    in the same call (``faces.expansions``: the linearised network, the quadratic model), then each
    run evaluated (``evaluate.evaluate``: kernel drift, the verdict, every face of ``faces.FACES``,
    deviations; the faces predict, they do not train). Used by ``run_group``, the CLI's single runs
    and sweeps, and the studies in ``experiments/``.

    Args:
        cfgs: validated configs of the runs; setups: their ``prepare`` results.
        index: which optimizer of ``cfgs[i].optimizers``; progress: ``train.progress_printer`` or None.
    Returns:
        One ``Evaluated`` per run, in order.
    """
    with jax.enable_x64(True):
        spec = optimizers.get(cfgs[0].optimizers[index].name)
        asked = [faces.expansions(cfg, setup, spec) for cfg, setup in zip(cfgs, setups)]
        trained = training.train_runs(list(cfgs), list(setups), index, progress, expansions=asked)
        out = []
        for cfg, setup, res in zip(cfgs, setups, trained):
            t = time.perf_counter()
            oc = cfg.optimizers[index]
            assert oc.label is not None  # validate fills it
            result, times = evaluate_mod.evaluate(cfg, setup, oc, res)
            out.append(Evaluated(oc.label, result, res, {**times, "evaluate_s": time.perf_counter() - t}))
    return out


@dataclasses.dataclass(frozen=True)
class Stage:
    """How far a group of runs has gone (``stages``), as typed runs: before any optimizer
    (``label`` None: what the runs know before training), then after each optimizer (its
    ``label``; ``evaluated`` its ``Evaluated`` per run, or ``error`` where it raised: it is then
    recorded as failed in every run and the next optimizer still runs). ``seconds``: the optimizer's
    training and evaluation time."""

    runs: list[results.RunResult]
    label: str | None = None
    evaluated: list[Evaluated] = dataclasses.field(default_factory=list)
    error: Exception | None = None
    seconds: float = 0.0


def stages(
    cfgs: Sequence[config_mod.Config],
    setups: Sequence[Setup],
    run_ids: Sequence[str],
    progress: Callable[[str], Any] | None = None,
) -> Iterator[Stage]:
    """The runs of a group (equal shapes, prepared) as they proceed: a ``Stage`` before training,
    then one after each optimizer (``evaluate_group``: trained as ONE program, then each run
    evaluated). Each stage's runs hold every optimizer done so far (``evaluate.run_result``), so a
    caller may write them as they come (``folder.write_progress``) and lose nothing on a later
    failure. ``progress``: label -> ``train.progress_printer`` (or None)."""
    opts: list[dict[str, results.OptimizerResult]] = [{} for _ in cfgs]

    def runs() -> list[results.RunResult]:
        return [run_result(c, s, o, run_id=r) for c, s, o, r in zip(cfgs, setups, opts, run_ids)]

    yield Stage(runs())
    for i, oc in enumerate(cfgs[0].optimizers):
        assert oc.label is not None  # validate fills it
        t = time.perf_counter()
        try:
            evaluated = evaluate_group(cfgs, setups, i, progress(oc.label) if progress else None)
        except Exception as exc:  # noqa: BLE001 - recorded as failed; the next optimizer still runs
            for o in opts:
                o[oc.label] = evaluate_mod.failed_result(oc, exc)
            yield Stage(runs(), oc.label, error=exc, seconds=time.perf_counter() - t)
            continue
        for o, ev in zip(opts, evaluated):
            o[oc.label] = ev.result
        yield Stage(runs(), oc.label, evaluated, seconds=time.perf_counter() - t)


def run_group(
    configs: Sequence[config_mod.Config | Mapping | str],
    *,
    models: Sequence[tuple[Model, Any, Any] | None] | None = None,
    data: Sequence[tuple[Any, Any] | None] | None = None,
    run_ids: Sequence[str] | None = None,
    progress: bool = False,
    test_data: Sequence[tuple[Any, Any] | None] | None = None,
) -> list[results.RunResult]:
    """Runs of equal shapes (they may differ in seed, data values and optimizer hyperparameters,
    not in sizes or optimizer names): each optimizer trains every run as ONE compiled, batched
    program (``training.train_runs``), then each run is evaluated (``evaluate.evaluate``).

    Args:
        configs: one config per run (as in ``run_study``), with the same optimizer names in order.
        models, data: per run, as ``run_study``'s ``model`` and ``data`` (None entries: the config's).
        run_ids: names of the runs in the results (default: each config's name).
        progress: print a progress line per chunk of steps.
        test_data: per run, as ``run_study``'s ``test_data`` (None entries: the config's data.test).
    Returns:
        One ``results.RunResult`` per config, in order.
    Raises:
        ConfigError / ValueError: bad configs, models or data, or optimizer lists that differ.
    """
    n = len(configs)
    models = list(models) if models is not None else [None] * n
    data = list(data) if data is not None else [None] * n
    tests = list(test_data) if test_data is not None else [None] * n
    if (
        not n
        or len(models) != n
        or len(data) != n
        or len(tests) != n
        or (run_ids is not None and len(run_ids) != n)
    ):
        raise ValueError(
            f"run_group: {n} configs need as many models, data, test_data and run_ids (None for the config's)"
        )
    cfgs = [
        _config(c, m is not None, d is not None, t is not None)
        for c, m, d, t in zip(configs, models, data, tests)
    ]
    names = [[o.name for o in c.optimizers] for c in cfgs]
    if any(x != names[0] for x in names):
        raise config_mod.ConfigError(
            f"optimizers: runs of one group need the same optimizer names, got {names}"
        )
    built, pairs, test_pairs = _check_inputs(cfgs, models, data, tests)
    t_start = time.perf_counter()
    with jax.enable_x64(True):
        setups = [
            setup_mod.prepare(c, xy if xy is not None else setup_mod.load_data(c), b, t)
            for c, xy, b, t in zip(cfgs, pairs, built, test_pairs)
        ]
        times: list[dict] = [dict(s.times) for s in setups]
        steps = cfgs[0].train.steps
        printer = (lambda label: train.progress_printer(label, steps, n)) if progress else None
        ids = list(run_ids) if run_ids is not None else [c.name for c in cfgs]
        for stage in stages(cfgs, setups, ids, printer):
            if stage.error is not None:
                raise stage.error
            for j, ev in enumerate(stage.evaluated):
                times[j][ev.label] = dict(ev.times)
    total = time.perf_counter() - t_start
    out = []
    for j, (cfg, setup, run) in enumerate(zip(cfgs, setups, stage.runs)):
        times[j]["group_total"] = total
        env = {"dtype": cfg.dtype, "seed": cfg.seed, "command": "ntkdyn.run_study", "times_s": times[j]}
        doc = _described_config(cfg, setup, models[j] is not None, data[j] is not None, tests[j] is not None)
        out.append(dataclasses.replace(run, env=env, config=doc))
    return out


def run_study(
    config: config_mod.Config | Mapping | str,
    *,
    model: tuple[Model, Any, Any] | None = None,
    data: tuple[Any, Any] | None = None,
    out: str | None = None,
    progress: bool = False,
    test_data: tuple[Any, Any] | None = None,
) -> results.RunResult:
    """Train every optimizer of ``config`` and predict it from theory (as ``python -m ntkdyn.run``).

    Args:
        config: a ``Config``, a mapping as in the YAML files (``config.from_dict``) or a YAML path.
            With ``model``/``data`` given, the mapping must not have a ``model``/``data`` section.
        model: ``(Model, params, consts)`` from ``models.from_apply_fn``, ``from_linen`` or
            ``from_flax``; its floating parameters must have the config's ``dtype``. Default: the
            config's model.
        data: ``(X, y)`` with X (n, d) and y (n,); default: the config's data.
        test_data: a held-out set ``(X_test, y_test)`` (X_test with d columns, used as given, like
            ``data``); default: the config's data.test, if any. Its loss is recorded at every
            recorded step (``test_loss``) and predicted (``test_loss_discrete``, ``test_loss_ode``:
            outputs on new points move by K_test,train K^+ times the change on the training points).
        out: a folder to write the run into (``folder.write_run``), or None.
        progress: print a progress line per chunk of steps.
    Returns:
        ``results.RunResult``: spectrum, one ``OptimizerResult`` per label (verdict, fitted,
        predicted, deviation, kernel drift, trajectories), data (X, y, e0), kernels (H0, eigvals, Hinf).
    Raises:
        ConfigError / ValueError: bad config, model or data, before any training.
    """
    if out is not None:
        from ntkdyn.pipeline import claim

        checks.check_out_folder(out, "out")
        claim.check_out_path(out)
    (run,) = run_group([config], models=[model], data=[data], progress=progress, test_data=[test_data])
    if out is not None:
        from ntkdyn.pipeline import folder

        run = dataclasses.replace(run, folder=out)
        folder.write_run(out, run)
    return run


def prepare(
    config: config_mod.Config | Mapping | str,
    data: tuple[Any, Any] | None = None,
    built: tuple[Model, Any, Any] | None = None,
    test: tuple[Any, Any] | None = None,
) -> Setup:
    """Data, model, initial error and kernels of one run (``setup.prepare``), for studies that
    reuse a prepared run across ``evaluate_group`` calls.

    Args:
        config: a ``Config``, a mapping or a YAML path (as ``run_study``).
        data: (X, y) or None (the config's data); built: (Model, params, consts) or None (the
            config's model); test: a held-out set (X_test, y_test) or None (the config's data.test).
    Returns:
        ``setup.Setup`` (X, y, model, params, consts, c, e0, H0, Hinf, lam, V, coef, times, held-out set).
    Raises:
        ConfigError / ValueError: bad config, model or data.
    """
    cfg = config if isinstance(config, config_mod.Config) else _config(config, False, False)
    (built,), (pair,), (test_pair,) = _check_inputs([cfg], [built], [data], [test])
    return setup_mod.prepare(cfg, pair, built, test_pair)


def run_optimizer(
    cfg: config_mod.Config, setup: Setup, oc: config_mod.OptimizerConfig, progress=None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Train and evaluate one optimizer of one prepared run (``evaluate_group`` on a group of one).
    Returns its (trajectory arrays, metrics.json entry): views of the typed result, for code that
    reads them by key."""
    (ev,) = evaluate_group([cfg], [setup], cfg.optimizers.index(oc), progress)
    return dict(ev.arrays), ev.metrics
