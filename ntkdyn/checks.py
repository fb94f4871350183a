"""Checks of what the entry points are given, run before any compute: the files a config names,
the arrays and model passed from Python, a group's shapes, the output folder and the memory.

Each raises ``InputError`` (a ``ConfigError``, so a ValueError) or ``memory.TooLarge`` (also a
``ConfigError``) whose one-line message names the argument or key and what is allowed; the command
line prints it as one line with exit status 2.

    check_files(cfg) -> cfg                 the config's files (data source, model.init_params)
    check_inputs(cfg, X, y, X_test, y_test, built)  arrays and a model from Python
    check_group(cfgs, models, data)         runs trained as one program have equal shapes
    check_out_folder(path, key)             a folder that can be created or written
    check_memory(cfg, runs, X, params)      the memory estimate (ntkdyn.memory) fits
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from ntkdyn import data as data_mod
from ntkdyn import memory
from ntkdyn.config import Config, ConfigError, check_batch_size


class InputError(ConfigError):
    """Bad input given to an entry point (arrays, a model, a folder): the message names it."""


def check_files(cfg: Config) -> Config:
    """The checks of ``cfg`` that read files, in place: the data source's (``ntkdyn.data.check``:
    existence, shapes and dtypes from headers, data.n / data.test.n filled and bounded), then
    model.init_params exists and train.batch_size <= data.n. Returns ``cfg``."""
    data_mod.check(cfg)
    path = cfg.model.init_params
    if path and not os.path.isfile(path):
        raise ConfigError(f"model.init_params: file not found: {path}")
    check_batch_size(cfg)
    return cfg


def _pair(X, y, key: str, outputs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """X (n, d) and y (n,) as float64, n >= 1, d >= 1, numbers, finite; y (n, 1) is flattened;
    with k = ``outputs`` > 1 outputs y is (n, k)."""
    try:
        X, y = np.asarray(X), np.asarray(y)
    except Exception as exc:  # noqa: BLE001 - ragged lists and the like
        raise InputError(f"{key}: X and y must be arrays of numbers ({type(exc).__name__}: {exc})") from None
    for name, a in (("X", X), ("y", y)):
        if a.dtype.kind not in "biuf":
            raise InputError(f"{key}: {name} must hold numbers, got dtype {a.dtype}")
    X, y = X.astype(np.float64), y.astype(np.float64)
    if X.ndim != 2:
        raise InputError(f"{key}: X must be 2-D (n, d), got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"{key}: X is empty (shape {X.shape}); it needs n >= 1 points of d >= 1 features")
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 and outputs == 1 else y
    want = (X.shape[0],) if outputs == 1 else (X.shape[0], outputs)
    if y.shape != want:
        raise InputError(f"{key}: y must have shape {want} to match X, got {y.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise InputError(f"{key}: X and y must be finite")
    return X, y


def check_inputs(
    cfg: Config,
    X,
    y,
    X_test=None,
    y_test=None,
    built: tuple[Any, Any, Any] | None = None,
    key: str = "data",
) -> tuple[np.ndarray, np.ndarray]:
    """The training set (X, y), the held-out set (X_test, y_test) if any, and the model before any
    kernel is computed: shapes (X (n, d) with n, d >= 1; y (n,)), finite numbers, the held-out X of
    the same d, and one forward pass of the model on X (in the config's dtype; the pass that gives
    f(X; theta_0), no kernel): it must run (an input dimension the model does not take, or params
    missing a key the model reads, fail here) and give one finite output per point.

    Args:
        cfg: the validated config (its dtype); X, y: the training set; X_test, y_test: the held-out
            set or None; built: (Model, params, consts) or None (no model check); key: the name of
            the argument in messages ("data", "data.path", ...).
    Returns:
        (X, y) as float64 arrays (y flattened).
    Raises:
        InputError: naming the argument and what is allowed.
    """
    outputs = getattr(cfg.model, "outputs", None) or 1
    X, y = _pair(X, y, key, outputs)
    if (X_test is None) != (y_test is None):
        raise InputError("test_data: give both X_test and y_test, or neither")
    if X_test is not None:
        X_t, _ = _pair(X_test, y_test, "test_data", outputs)
        if X_t.shape[1] != X.shape[1]:
            raise InputError(
                f"test_data: X_test has d={X_t.shape[1]} columns but the training X has d={X.shape[1]}; "
                "held-out points need the training points' dimension"
            )
    if built is not None:
        _probe_model(cfg, built, X)
    return X, y


def _probe_model(cfg: Config, built, X: np.ndarray) -> None:
    """One forward pass on X: it runs and gives one finite number per point."""
    import jax
    import jax.numpy as jnp

    model, params, consts = built
    k = X.shape[0]
    with jax.enable_x64(True):
        dtype = jnp.float64 if cfg.dtype == "float64" else jnp.float32
        try:
            out = np.asarray(model.apply(params, consts, jnp.asarray(X[:k], dtype)))
        except KeyError as exc:
            raise InputError(
                f"model: the model reads params[{exc.args[0]!r}], which the params do not have "
                f"(their keys: {_keys(params)})"
            ) from None
        except ValueError as exc:  # ntkdyn's model wrappers name the problem (e.g. the output shape)
            raise InputError(f"model: {_first_line(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - any failure of the user's apply_fn, named here
            raise InputError(
                f"model: a forward pass on {k} points of X (d={X.shape[1]}) failed ({type(exc).__name__}: "
                f"{_first_line(exc)[:200]}); does the model take inputs of dimension {X.shape[1]}?"
            ) from None
    outputs = getattr(model, "outputs", 1)
    if out.size != k * outputs:
        raise InputError(
            f"model: {k} points gave outputs of shape {out.shape}; expected {outputs} number(s) per point"
        )
    if not np.all(np.isfinite(out)):
        raise InputError(
            f"model: its outputs at initialisation are not finite ({int(np.sum(~np.isfinite(out)))} of {k} "
            "points of X); check the parameters and the model"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _keys(params) -> str:
    if isinstance(params, dict):
        return ", ".join(map(str, params)) or "none"
    return type(params).__name__


def _signature(cfg: Config, built, pair) -> list[tuple[str, Any]]:
    """(name, value) pairs that runs trained as one program must share: dtype, train section,
    optimizer names, the data's n and d, and the model's parameter shapes (or its config sizes)."""
    import jax

    n, d = pair[0].shape if pair is not None else (cfg.data.n, data_mod.input_dim(cfg))
    sig = [("dtype", cfg.dtype), ("train", vars(cfg.train)), ("data.n", n), ("d", d)]
    if built is not None:
        shapes = jax.tree.map(lambda a: tuple(np.shape(a)), built[1])
        sig.append(("model parameter shapes", shapes))
    else:
        m = cfg.model
        sig += [("model.name", m.name), ("model.width", m.width), ("model.depth", m.depth)]
    return sig


def check_group(
    cfgs: Sequence[Config],
    models: Sequence[tuple[Any, Any, Any] | None] | None = None,
    data: Sequence[tuple[np.ndarray, np.ndarray] | None] | None = None,
) -> None:
    """Runs trained as ONE program (``run_group``) share dtype, train section, n, d and the model's
    shapes (widths): the first difference from run 0 is an InputError naming it."""
    models = list(models) if models is not None else [None] * len(cfgs)
    data = list(data) if data is not None else [None] * len(cfgs)
    first = _signature(cfgs[0], models[0], data[0])
    for i in range(1, len(cfgs)):
        for (name, want), (_, got) in zip(first, _signature(cfgs[i], models[i], data[i])):
            if got != want:
                raise InputError(
                    f"configs[{i}]: {name} is {got} but run 0 has {want}; runs of one group train as one "
                    "program and need equal shapes (run them separately)"
                )


def _probe_write(folder: str, key: str, path: str) -> None:
    try:
        fd, name = tempfile.mkstemp(prefix=".ntkdyn-probe-", dir=folder)
        os.close(fd)
        os.remove(name)
    except OSError as exc:
        where = "in it" if os.path.abspath(folder) == os.path.abspath(path) else f"in {folder}"
        raise InputError(
            f"{key}: cannot write {where} ({exc.strerror or exc}); {path!r} must be a folder that can be "
            "created or written"
        ) from None


def check_out_folder(path: str, key: str = "out") -> None:
    """``path`` can hold a results folder: an existing folder we can write in, or a new one whose
    nearest existing parent is a folder we can write in (relative paths: under the working
    directory). A file, a read-only or immutable folder or parent is an InputError naming ``key``.
    Nothing is left behind (a probe file is created and removed)."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise InputError(f"{key}: expected a folder path, got {path!r}")
    full = os.path.abspath(path)
    if os.path.exists(full):
        if not os.path.isdir(full):
            raise InputError(f"{key}: {path} is a file, not a folder; give a folder path")
        _probe_write(full, key, path)
        return
    parent = os.path.dirname(full)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise InputError(f"{key}: {parent} is a file, so the folder {path} cannot be made under it")
    _probe_write(parent, key, path)


def check_memory(cfg: Config, runs: int = 1, X=None, params=None) -> memory.Estimate:
    """``memory.check`` (the estimate of the run's large arrays against the host's and the
    accelerator's memory) before anything is built. ``X``: the training inputs when already loaded
    or given from Python (their n and d replace the config's); ``params``: a model given from
    Python, whose parameters are counted instead of the config's model. Raises ``memory.TooLarge``."""
    n, d = np.shape(X) if X is not None else (None, None)
    return memory.check(cfg, runs, d, params=params, n=n)
