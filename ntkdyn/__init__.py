"""ntkdyn: how optimizers converge on wide neural networks, trained in JAX and predicted from the
neural tangent kernel (kernel-regime recurrences, limiting ODEs), with rate verdicts.

The public API (README "Python API"); everything else lives in the submodules, whose names may
change between versions:

Running
    run_study(config, *, model=None, data=None, out=None, progress=False) -> RunResult
    run_group(configs, *, models=None, data=None) -> [RunResult]: runs of equal shapes as one program
    load_config(path, overrides=()) -> Config;  Config, OptimizerConfig, ConfigError
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

Names are imported on first use, so ``import ntkdyn`` stays cheap.
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
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'ntkdyn' has no attribute {name!r}")
    module, attr = target if isinstance(target, tuple) else (target, name)
    value = getattr(importlib.import_module(f"ntkdyn.{module}"), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
