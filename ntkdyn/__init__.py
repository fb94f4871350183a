"""ntkdyn: how optimizers converge on wide neural networks, trained in JAX and predicted from the
neural tangent kernel (kernel-regime recurrences, limiting ODEs), with rate verdicts.

The public API (README "Python API"); everything else lives in the submodules, whose names may
change between versions:

Running
    run_study(config, *, model=None, data=None, test_data=None, out=None, progress=False) -> RunResult
        (test_data=(X_test, y_test): held-out loss along training and its kernel prediction)
    run_group(configs, *, models=None, data=None, test_data=None) -> [RunResult]: runs of equal
        shapes as one program
    load_config(path, overrides=()) -> Config;  Config, OptimizerConfig, ConfigError
The run path, stage by stage (for studies that reuse prepared runs)
    load_data(config) -> (X, y);  prepare(config, data=None, built=None) -> Setup (model, H0, spectrum)
    evaluate_group(configs, setups, index) -> [Evaluated]: train optimizer ``index`` of every run as
        one program, then evaluate each (what run_study, run_group and the command line call)
Models and data
    from_apply_fn(apply_fn, params, loss="half_sum") -> (Model, params, consts): any apply_fn(params, X)
    from_linen(module, variables, loss="half_sum"), from_flax(nnx_module, loss="half_sum");  Model
    sphere(n, d, target, seed) -> (X, y);  digits(n, classes, target, normalize, seed) -> (X, y)
Results
    load(folder) -> RunResult | SweepResult | StudyResult | StudyCollection
    RunResult, OptimizerResult, SweepResult, SweepRow, StudyResult (frozen dataclasses, ``to_json``)
Figures and pages
    plot_loss(run, path), plot_sweep(sweep, path), write_report(folders, out)
__version__

Submodules with a public API (their documented functions; ``ntkdyn.theory.discrete_modes`` etc.)
    config (from_dict, load_raw, apply_override), optimizers (the registry: get, resolve_hyper),
    theory (recurrences, ODEs), rates (fits, verdicts, loss_floor, tail_fit), results (the typed
    results and folder files), control (per-mode analysis), stochastic (mini-batch moments), ntk (kernels),
    odes (ODE kinds as types), predict (neural-tangents-shaped predictions: many outputs, any loss,
    ensembles), quadratic (the second-order Taylor model), sharpness (Hessian / NTK top eigenvalue, stability
    limits), flips (ReLU activation-pattern flips, counted and predicted)

Names are imported on first use, so ``import ntkdyn`` stays cheap. ``experiments/`` and ``tools/``
use only these names (tests/test_api.py checks their imports).
"""

from __future__ import annotations

import importlib
import importlib.metadata

try:
    __version__ = importlib.metadata.version("ntkdyn")
except importlib.metadata.PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"

_EXPORTS = {
    "run_study": "study",
    "run_group": "study",
    "evaluate_group": "study",
    "load_data": "pipeline",
    "prepare": "pipeline",
    "load_config": ("config", "load"),
    "Config": "config",
    "OptimizerConfig": "config",
    "ConfigError": "config",
    "from_apply_fn": "models",
    "from_linen": "models",
    "from_flax": "models",
    "Model": "models",
    "sphere": "data",
    "digits": "data",
    "load": "results",
    "RunResult": "results",
    "OptimizerResult": "results",
    "SweepResult": "results",
    "SweepRow": "results",
    "StudyResult": "results",
    "plot_loss": "plots",
    "plot_sweep": "plots",
    "write_report": "report",
}
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
)
__all__ = ["__version__", *_EXPORTS, *PUBLIC_SUBMODULES]


def __getattr__(name: str):
    if name in PUBLIC_SUBMODULES:
        module = importlib.import_module(f"ntkdyn.{name}")
        globals()[name] = module
        return module
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'ntkdyn' has no attribute {name!r}")
    module, attr = target if isinstance(target, tuple) else (target, name)
    value = getattr(importlib.import_module(f"ntkdyn.{module}"), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(PUBLIC_SUBMODULES))
