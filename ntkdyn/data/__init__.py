"""Data sources as a registry: synthetic sphere data, scikit-learn's bundled digits, your own .npz,
MNIST from local files. Nothing downloads.

Each source is one module of this package declaring a ``Source`` (``_base.Source``): which
``data.<key>`` apply to it, their defaults, value checks (no files), file checks (headers only,
run by the entry points before any compute), the loader of the training points, the loader of
the held-out points and the input dimension. A new source is one module added to ``SOURCES``.

    load(cfg) -> (X (n, d), y (n,))              float64 numpy arrays
    load_held_out(cfg) -> (X_test, y_test) | None
    input_dim(cfg) -> d                          without loading the points
    check(cfg) -> cfg                            file checks; fills data.n / data.test.n from files
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ntkdyn.data import digits as _digits_mod
from ntkdyn.data import mnist as _mnist_mod
from ntkdyn.data import npz as _npz_mod
from ntkdyn.data import onehot
from ntkdyn.data import sphere as _sphere_mod
from ntkdyn.data._base import (
    COMMON_KEYS,
    NORMALIZE,
    OPTIONAL_KEYS,
    Source,
    normalise,
    npz_header,
    npz_rows,
    random_rows,
)
from ntkdyn.data.digits import digits, digits_count, digits_test
from ntkdyn.data.mnist import (
    MNIST_NPZ_KEYS,
    idx_length,
    mnist,
    mnist_files,
    mnist_length,
    mnist_test,
    read_idx,
)
from ntkdyn.data.npz import from_npz, npz_shape, npz_test
from ntkdyn.data.sphere import (
    TARGETS,
    TEST_STREAM,
    sphere,
    sphere_targets,
    sphere_test,
    target_function,
    unit_sphere,
)

if TYPE_CHECKING:
    import numpy as np

    from ntkdyn.config import Config

SOURCES: dict[str, Source] = {
    m.SOURCE.name: m.SOURCE for m in (_sphere_mod, _digits_mod, _npz_mod, _mnist_mod)
}
PIXEL_MAX = {name: s.pixel_max for name, s in SOURCES.items() if s.pixel_max is not None}

__all__ = [
    "COMMON_KEYS",
    "MNIST_NPZ_KEYS",
    "NORMALIZE",
    "OPTIONAL_KEYS",
    "PIXEL_MAX",
    "SOURCES",
    "TARGETS",
    "TEST_STREAM",
    "Source",
    "check",
    "digits",
    "digits_count",
    "digits_test",
    "from_npz",
    "get",
    "idx_length",
    "input_dim",
    "load",
    "load_held_out",
    "mnist",
    "mnist_files",
    "mnist_length",
    "mnist_test",
    "normalise",
    "npz_header",
    "npz_rows",
    "npz_shape",
    "npz_test",
    "random_rows",
    "read_idx",
    "sphere",
    "sphere_targets",
    "sphere_test",
    "target_function",
    "unit_sphere",
]


def get(name: str) -> Source:
    """The source registered as ``name``; ValueError naming ``data.source`` and the allowed names."""
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"data.source: {name!r} is not allowed; allowed: {', '.join(SOURCES)}") from None


def load(cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of a validated config (``config.validate`` fills the source's defaults): sphere: new
    points of ``default_rng(seed)``; digits: data.n bundled images in a seeded order; npz: all
    points unless data.n is smaller (then a random subset drawn with the run's seed); mnist: the
    first data.n images (the released notebook's preprocessing).

    Returns:
        X (n, d) and y (n,), float64 numpy arrays.
    Raises:
        ValueError: a data file that does not hold data.n points or cannot be read.
    """
    if onehot.is_onehot(cfg.data):  # integer labels -> (n, k) one-hot rows (data.onehot)
        X, labels = get(cfg.data.source).load(onehot.as_labels(cfg.data), cfg.seed)
        return X, onehot.encode(labels, onehot.classes_of(cfg.data))
    if cfg.data.source == "sphere" and (cfg.model.outputs or 1) > 1:  # a teacher with k outputs
        from ntkdyn.data.sphere import load_outputs

        return load_outputs(cfg.data, cfg.seed, cfg.model.outputs or 1)
    return get(cfg.data.source).load(cfg.data, cfg.seed)


def load_held_out(cfg: Config) -> tuple[np.ndarray, np.ndarray] | None:
    """(X_test, y_test) of a validated config's ``data.test``, or None without one: sphere: new
    points of the same distribution and target function (``sphere_test``); digits, npz, mnist:
    the points after the data.n training ones, or those of ``data.test.path`` (``digits_test``,
    ``npz_test``, ``mnist_test``). Disjoint from the training points; normalised as they are."""
    if cfg.data.test is None:
        return None
    if onehot.is_onehot(cfg.data):
        X, labels = get(cfg.data.source).load_held_out(onehot.as_labels(cfg.data), cfg.seed)
        return X, onehot.encode(labels, onehot.classes_of(cfg.data), "data.test")
    if cfg.data.source == "sphere" and (cfg.model.outputs or 1) > 1:
        from ntkdyn.data.sphere import load_held_out_outputs

        return load_held_out_outputs(cfg.data, cfg.seed, cfg.model.outputs or 1)
    return get(cfg.data.source).load_held_out(cfg.data, cfg.seed)


def input_dim(cfg: Config) -> int:
    """d of the inputs, read without loading the data (files: their headers only)."""
    return get(cfg.data.source).input_dim(cfg.data)


def check(cfg: Config) -> Config:
    """The source's file checks (``Source.check``: files exist and are readable, shapes and dtypes
    from their headers, data.n and data.test.n within them; fills data.n / data.test.n where they
    default to the file's size). Returns ``cfg``; raises ``ConfigError`` naming the key."""
    from ntkdyn.config import ConfigError

    try:
        get(cfg.data.source).check(cfg.data)
        if onehot.is_onehot(cfg.data):  # npz: k from the file's labels (digits, mnist: validate)
            from ntkdyn.config.outputs import check_class_count

            check_class_count(cfg, len(onehot.classes_of(cfg.data)))
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return cfg
