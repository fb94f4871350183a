"""Run configuration: typed sections, YAML in and out, ``--set`` overrides, validation.

Every problem is reported before any compute as one ``ConfigError`` line naming the key, the
bad value and what is allowed. This package reads no data file: the checks that need files (their
existence, shapes and sizes; data.n of an .npz) are the data source's (``ntkdyn.data.check``), run
by the entry points through ``ntkdyn.checks.check_files`` before any compute.

    schema     the typed sections (``Config``, ``DataConfig``, ...), ``ConfigError``, ``RelativeStep``
    parse      YAML, ``--set`` overrides, the typed parse (``from_dict``, ``load``, ``dump``)
    validate   value checks, keys that do not apply, defaults that depend on other keys
"""

from ntkdyn.config.parse import INFINITE_OK, apply_override, dump, from_dict, load, load_raw, to_dict
from ntkdyn.config.schema import (
    MODEL_DEFAULTS,
    MODEL_KEYS,
    Config,
    ConfigError,
    ControlConfig,
    DataConfig,
    HeldOutConfig,
    ModelConfig,
    OptimizerConfig,
    RatesConfig,
    RelativeStep,
    TheoryConfig,
    TrainConfig,
    resolve_eta,
)
from ntkdyn.config.validate import check_batch_size, validate

__all__ = [
    "INFINITE_OK",
    "MODEL_DEFAULTS",
    "MODEL_KEYS",
    "Config",
    "ConfigError",
    "ControlConfig",
    "DataConfig",
    "HeldOutConfig",
    "ModelConfig",
    "OptimizerConfig",
    "RatesConfig",
    "RelativeStep",
    "TheoryConfig",
    "TrainConfig",
    "apply_override",
    "check_batch_size",
    "dump",
    "from_dict",
    "load",
    "load_raw",
    "resolve_eta",
    "to_dict",
    "validate",
]
