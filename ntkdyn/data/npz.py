"""data.source 'npz': your own points, an .npz holding X (n, d) and y (n,) or (n, 1); a random
subset of data.n rows (the run's seed) or all of them; held-out points are the next rows of that
order or another file (data.test.path)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from ntkdyn.data._base import (
    Source,
    as_test_path,
    check_counts,
    check_numeric,
    fill_test_count,
    normalise,
    npz_header,
    random_rows,
)

if TYPE_CHECKING:
    from ntkdyn.config import DataConfig


def from_npz(path: str, normalize: str = "none"):
    """User data: an .npz with X (n, d) and y (n,) or (n, 1), numbers, finite, n >= 1 and d >= 1."""
    if not os.path.exists(path):
        raise ValueError(f"data.path: file not found: {path}")
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"data.path: cannot read {path} as .npz ({exc})") from None
    for key in ("X", "y"):
        if key not in arrays:
            raise ValueError(f"data.path: {path} has no array {key!r} (it has {sorted(arrays)})")
        check_numeric(path, key, arrays[key].dtype)
    X, y = np.asarray(arrays["X"], np.float64), np.asarray(arrays["y"], np.float64)
    _check_shapes(path, X.shape, y.shape)
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError(f"data.path: {path} holds non-finite values")
    return normalise(X, normalize), y


def _check_shapes(path: str, x_shape: tuple, y_shape: tuple) -> None:
    """X (n, d) with n, d >= 1; y (n,) or (n, 1)."""
    if len(x_shape) != 2:
        raise ValueError(f"data.path: X must be 2-D (n, d), got shape {tuple(x_shape)}")
    if x_shape[0] == 0 or x_shape[1] == 0:
        raise ValueError(
            f"data.path: {path} holds no {'points' if x_shape[0] == 0 else 'features'} "
            f"(X has shape {tuple(x_shape)}); X needs n >= 1 rows and d >= 1 columns"
        )
    y_flat = (y_shape[0],) if len(y_shape) == 2 and y_shape[1] == 1 else tuple(y_shape)
    if y_flat != (x_shape[0],):
        raise ValueError(f"data.path: y must have shape ({x_shape[0]},), got {tuple(y_shape)}")


def npz_shape(path: str) -> tuple[int, int]:
    """(n, d) of the .npz at ``path`` from its headers: X and y present, numbers, shapes as
    ``from_npz`` wants them (the arrays are not loaded)."""
    x_shape, x_dtype = npz_header(path, "X")
    y_shape, y_dtype = npz_header(path, "y")
    check_numeric(path, "X", x_dtype)
    check_numeric(path, "y", y_dtype)
    _check_shapes(path, x_shape, y_shape)
    return x_shape[0], x_shape[1]


def npz_test(
    path: str, n: int | None, seed: int, n_test: int | None, test_path: str | None, normalize: str = "none"
):
    """Held-out points for the npz training set of ``data.path`` (data.n points, ``random_rows``).

    Without ``test_path``: the next n_test points of the same random order (disjoint from the
    training points), normalised as the training points are (over the whole file). With
    ``test_path``: the first n_test points of that .npz (all of them when n_test is None; X, y as
    ``from_npz``), normalised with the training file's column statistics. Returns (X_test, y_test)."""
    X, y = from_npz(path, normalize if test_path is None else "none")
    n = X.shape[0] if n is None else n
    if test_path is None:
        if n + n_test > X.shape[0]:
            raise ValueError(
                f"data.test.n: data.n={n} + data.test.n={n_test} is more than the {X.shape[0]} points "
                f"in data.path {path}; lower data.n or give data.test.path"
            )
        idx = random_rows(X.shape[0], seed)[n : n + n_test]
        return X[idx], y[idx]
    try:
        X_t, y_t = from_npz(test_path, "none")
    except ValueError as exc:
        raise as_test_path(exc) from None
    if X_t.shape[1] != X.shape[1]:
        raise ValueError(
            f"data.test.path: X of {test_path} has {X_t.shape[1]} columns, data.path's has {X.shape[1]}"
        )
    n_test = X_t.shape[0] if n_test is None else n_test
    if n_test > X_t.shape[0]:
        raise ValueError(f"data.test.n: {n_test} is more than the {X_t.shape[0]} points in {test_path}")
    return normalise(X_t[:n_test], normalize, reference=X), y_t[:n_test]


# --------------------------------------------------------------------------- the declaration
def _validate(d: DataConfig) -> None:
    """data.path required; data.test: n required without its own path."""
    if not d.path:
        raise ValueError("data.path: required when data.source is 'npz'")
    if d.target not in (None, "onehot"):
        raise ValueError(
            f"data.target: {d.target!r} is not allowed for data.source 'npz' (its y are the targets); "
            "allowed: onehot (integer labels in y as one-hot rows), or leave it out"
        )
    if d.test is not None and d.test.path is None and d.test.n is None:
        raise ValueError(
            "data.test.n: required without data.test.path (the held-out points are those of "
            "data.path after the data.n training points)"
        )


def _check(d: DataConfig) -> None:
    """The file's headers: X (n, d), y (n,), numbers; data.n defaults to n and is at most n;
    data.test: the points after data.n (data.n + data.test.n <= n) or another file of the same d
    (data.test.n defaults to all of it)."""
    count, dim = npz_shape(d.path)
    d.n = count if d.n is None else d.n
    if not check_counts(d, count):
        return
    t = d.test
    if not os.path.isfile(t.path):
        raise ValueError(f"data.test.path: not found: {t.path}")
    if os.path.realpath(t.path) == os.path.realpath(d.path):
        raise ValueError(
            f"data.test.path: {t.path} is data.path itself; leave data.test.path out to hold out the "
            "points after the data.n training points"
        )
    try:
        count_t, dim_t = npz_shape(t.path)
    except ValueError as exc:
        raise as_test_path(exc) from None
    if dim_t != dim:
        raise ValueError(
            f"data.test.path: X of {t.path} has d={dim_t} columns but data.path's X has d={dim}; "
            "held-out points need the training points' dimension"
        )
    fill_test_count(d, count_t)


def _load(d: DataConfig, seed: int):
    """All points of data.path, or a random subset of data.n rows (``random_rows(count, seed)``)."""
    X, y = from_npz(d.path, d.normalize)
    if d.n is not None and d.n > X.shape[0]:
        raise ValueError(f"data.n: {d.n} is more than the {X.shape[0]} points in data.path {d.path}")
    if d.n is not None and d.n < X.shape[0]:
        idx = random_rows(X.shape[0], seed)[: d.n]
        X, y = X[idx], y[idx]
    return X, y


def _input_dim(d: DataConfig) -> int:
    shape, _ = npz_header(d.path, "X")
    return int(np.prod(shape[1:]))


SOURCE = Source(
    name="npz",
    keys=("path", "target"),
    default_n=None,  # every point of the file
    load=_load,
    load_held_out=lambda d, seed: npz_test(d.path, d.n, seed, d.test.n, d.test.path, d.normalize),
    input_dim=_input_dim,
    validate=_validate,
    check=_check,
)
