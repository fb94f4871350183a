"""ntkdyn: how optimizers converge on wide neural networks, trained in JAX and predicted from the
neural tangent kernel (kernel-regime recurrences, limiting ODEs), with rate verdicts.

The public API (docs/python-api.md); everything else lives in the submodules, whose names may
change between versions:

Running
    run_study(config, *, model=None, data=None, test_data=None, out=None, progress=False) -> RunResult
        (test_data=(X_test, y_test): held-out loss along training and its kernel prediction)
    run_group(configs, *, models=None, data=None, test_data=None) -> [RunResult]: runs of equal
        shapes as one program
    load_config(path, overrides=()) -> Config;  Config, OptimizerConfig, ConfigError
The run path, stage by stage (for studies that reuse prepared runs; ``ntkdyn.pipeline``)
    load_data(config) -> (X, y);  prepare(config, data=None, built=None) -> Setup (model, H0, spectrum)
    evaluate_group(configs, setups, index) -> [Evaluated]: train optimizer ``index`` of every run as
        one program, then evaluate each (what run_study, run_group and the command line call)
    The theory faces: ``ntkdyn.pipeline.faces`` (Face, FaceValue, Context, FACES, register)
Models and data
    from_apply_fn(apply_fn, params, loss="half_sum") -> (Model, params, consts): any apply_fn(params, X)
    from_linen(module, variables, loss="half_sum"), from_flax(nnx_module, loss="half_sum");  Model
    sphere(n, d, target, seed) -> (X, y);  digits(n, classes, target, normalize, seed) -> (X, y)
Results
    load(folder) -> RunResult | SweepResult | StudyResult | StudyCollection
    RunResult, OptimizerResult, SweepResult, SweepRow, StudyResult, StudyCollection (frozen
    dataclasses, ``to_json``; their parts Spectrum, Fitted, Predicted, Deviation, ... in ``results``)
Figures and pages
    plot_loss(run, path), plot_sweep(sweep, path), write_report(folders, out)
__version__

Submodules with a public API (their documented functions; ``ntkdyn.theory.discrete_modes`` etc.)
    config (from_dict, load_raw, apply_override), optimizers (the registry: get, resolve_hyper),
    theory (recurrences, ODEs), rates (fits, verdicts, loss_floor, tail_fit), results (the typed
    results and folder files), control (per-mode analysis), stochastic (mini-batch moments), ntk
    (kernels), odes (ODE kinds as types), predict (neural-tangents-shaped predictions: many outputs, any
    loss, ensembles), quadratic (the second-order Taylor model), sharpness (Hessian / NTK top eigenvalue,
    stability limits), flips (ReLU activation-pattern flips, counted and predicted), central_flow (GD's
    central flow at the edge of stability, matrix form; measured, not a face); the run path's
    modules are in ``ntkdyn.pipeline`` (setup, training, faces, evaluate, entry, folder, runner)

Every name is imported explicitly below (visible to editors and type checkers); ``import ntkdyn``
therefore imports jax. ``experiments/`` and ``tools/`` use only these names (tests/test_api.py
checks their imports).
"""

from __future__ import annotations

import importlib.metadata

from ntkdyn import (
    central_flow,
    config,
    control,
    flips,
    ntk,
    odes,
    optimizers,
    predict,
    quadratic,
    rates,
    results,
    sharpness,
    stochastic,
    theory,
)
from ntkdyn.config import Config, ConfigError, OptimizerConfig
from ntkdyn.config import load as load_config
from ntkdyn.data import digits, sphere
from ntkdyn.models import Model, from_apply_fn, from_flax, from_linen
from ntkdyn.pipeline import (
    Evaluated,
    Setup,
    evaluate_group,
    load_data,
    prepare,
    run_group,
    run_study,
)
from ntkdyn.plots import plot_loss, plot_sweep
from ntkdyn.report import write_report
from ntkdyn.results import (
    OptimizerResult,
    RunResult,
    StudyCollection,
    StudyResult,
    SweepResult,
    SweepRow,
    load,
)

try:
    __version__ = importlib.metadata.version("ntkdyn")
except importlib.metadata.PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "__version__",
    "run_study", "run_group", "evaluate_group", "load_data", "prepare", "Setup", "Evaluated",
    "load_config", "Config", "OptimizerConfig", "ConfigError",
    "from_apply_fn", "from_linen", "from_flax", "Model", "sphere", "digits",
    "load", "RunResult", "OptimizerResult", "SweepResult", "SweepRow", "StudyResult", "StudyCollection",
    "plot_loss", "plot_sweep", "write_report",
    "config", "optimizers", "theory", "rates", "results", "control", "stochastic", "ntk",
    "odes", "predict", "quadratic", "sharpness", "flips", "central_flow",
]  # fmt: skip
PUBLIC_SUBMODULES = (
    "config",
    "optimizers",
    "theory",
    "rates",
    "results",
    "control",
    "stochastic",
    "ntk",
    "odes",
    "predict",
    "quadratic",
    "sharpness",
    "flips",
    "central_flow",
)
