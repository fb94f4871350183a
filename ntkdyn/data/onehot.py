"""``data.target: onehot``: integer class labels as one-hot rows, for models with one output per
class (``model.outputs`` = k, the number of classes; docs/outputs.md).

The classes and their order: digits, ``data.classes`` in the order listed (all ten digits 0..9
without it); mnist, the digits 0..9; npz, the sorted distinct values of the training file's y
(integers). Target row i is e_{c(i)} in R^k, c(i) the index of point i's label among the classes.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ntkdyn.config import DataConfig

ONEHOT_SOURCES = ("digits", "mnist", "npz")


def is_onehot(d: DataConfig) -> bool:
    return d.target == "onehot"


def as_labels(d: DataConfig) -> DataConfig:
    """The data section that loads the integer labels a one-hot config encodes (digits and mnist:
    target label; npz: its own y)."""
    return dataclasses.replace(d, target=None if d.source == "npz" else "label")


def classes_of(d: DataConfig) -> list[int]:
    """The class labels of a one-hot data section, in the order of the one-hot columns (module
    docstring). npz reads the training file's y. Raises ValueError naming data.path when its y are
    not integers."""
    if d.source == "digits":
        return list(d.classes) if d.classes else list(range(10))
    if d.source == "mnist":
        return list(range(10))
    assert d.path is not None  # validate: data.path required for npz
    with np.load(d.path) as f:
        y = np.asarray(f["y"]).reshape(-1)
    if not np.all(np.isfinite(y)) or not np.all(np.asarray(y, np.float64) == np.round(y)):
        raise ValueError(
            f"data.target: 'onehot' needs integer class labels in y of data.path {d.path}; it holds "
            "other values"
        )
    return sorted(int(v) for v in np.unique(y))


def count_without_files(d: DataConfig) -> int | None:
    """k of a one-hot data section when it is known without reading a file (digits, mnist), else None."""
    return None if d.source == "npz" else len(classes_of(d))


def encode(labels: np.ndarray, classes: list[int], what: str = "data.target") -> np.ndarray:
    """(n, k) float64 one-hot rows of ``labels`` over ``classes``. Raises ValueError naming ``what``
    for a label outside ``classes``."""
    labels = np.asarray(labels).reshape(-1)
    index = {c: j for j, c in enumerate(classes)}
    bad = sorted({int(v) for v in labels if int(v) not in index or v != int(v)})
    if bad:
        raise ValueError(f"{what}: labels {bad[:5]} are not among the classes {classes} (onehot)")
    out = np.zeros((labels.size, len(classes)))
    out[np.arange(labels.size), [index[int(v)] for v in labels]] = 1.0
    return out
