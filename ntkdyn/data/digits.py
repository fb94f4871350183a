"""data.source 'digits': scikit-learn's bundled 8x8 digits (1797 images, no download), drawn in a
seeded random order; held-out images are the next ones of that order."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ntkdyn.data._base import Source, given, normalise, random_rows

if TYPE_CHECKING:
    from ntkdyn.config import DataConfig

PIXEL_MAX = 16.0  # the bundled intensities run 0..16
TARGETS = ("pm1", "label", "onehot")  # onehot: data.onehot (labels -> (n, k) rows)
D = 64  # 8 x 8 pixels


def _digits_pool(classes: list[int] | None):
    """scikit-learn's bundled digits (pixels as float64, labels), only ``classes`` when given."""
    from sklearn.datasets import load_digits

    data = load_digits()
    X, labels = data.data.astype(np.float64), data.target
    if classes:
        keep = np.isin(labels, classes)
        X, labels = X[keep], labels[keep]
    return X, labels


def digits_count(classes: list[int] | None) -> int:
    """Number of bundled digits of ``classes`` (all 1797 when None or empty)."""
    return len(_digits_pool(classes)[0])


def _digits_targets(labels: np.ndarray, classes: list[int] | None, target: str) -> np.ndarray:
    if target == "pm1":
        first = classes[0] if classes else 0
        return np.where(labels == first, 1.0, -1.0)
    if target == "label":
        return labels.astype(np.float64)
    raise ValueError(f"data.target: unknown {target!r} for digits; allowed: pm1, label")


def digits(n: int, classes: list[int] | None, target: str, normalize: str, seed: int):
    """scikit-learn's bundled 8x8 digits (1797 images, no download), n drawn at random.

    target 'pm1': +1 for the first listed class, -1 for the others; 'label': the digit as float.
    normalize 'pixels' divides by 16 (intensities 0..16 to [0, 1]).
    """
    X, labels = _digits_pool(classes)
    if n > len(X):
        raise ValueError(f"data.n={n} is more than the {len(X)} digits of classes {classes}")
    idx = random_rows(len(X), seed)[:n]
    X, labels = X[idx], labels[idx]
    return normalise(X, normalize, PIXEL_MAX), _digits_targets(labels, classes, target)


def digits_test(n: int, n_test: int, classes: list[int] | None, target: str, normalize: str, seed: int):
    """Held-out digits for ``digits(n, classes, target, normalize, seed)``: the next n_test images of
    the same random order (``random_rows``), disjoint from the n training images; 'standardize' uses
    the training images' column statistics. Returns (X_test, y_test)."""
    X, labels = _digits_pool(classes)
    if n + n_test > len(X):
        raise ValueError(
            f"data.test.n: data.n={n} + data.test.n={n_test} is more than the {len(X)} digits of "
            f"classes {classes}"
        )
    order = random_rows(len(X), seed)
    train, test = order[:n], order[n : n + n_test]
    X_t = normalise(X[test], normalize, PIXEL_MAX, reference=X[train])
    return X_t, _digits_targets(labels[test], classes, target)


# --------------------------------------------------------------------------- the declaration
def _validate(d: DataConfig) -> None:
    """target required (pm1 | label); classes are digits 0..9; data.test: n required, no path."""
    if d.target is None:
        raise ValueError("data.target: required when data.source is 'digits'; allowed: pm1, label, onehot")
    if d.target not in TARGETS:
        raise ValueError(f"data.target: {d.target!r} is not allowed; allowed: {', '.join(TARGETS)}")
    for c in d.classes or []:
        if not 0 <= c <= 9:
            raise ValueError(f"data.classes: {c} is not a digit; allowed: 0..9")
    if d.test is not None:
        if d.test.path is not None:
            raise ValueError(
                f"data.test.path: not used for data.source 'digits' (its held-out points are drawn "
                f"like the training points; got {d.test.path!r}); leave it out"
            )
        if d.test.n is None:
            raise ValueError("data.test.n: required for data.source 'digits' (held-out points)")


def _check(d: DataConfig) -> None:
    """data.n (+ data.test.n) within the bundled images of ``classes``."""
    count, n = digits_count(d.classes), given(d.n, "data.n")
    if n > count:
        raise ValueError(f"data.n: {d.n} is more than the {count} digits of classes {d.classes}")
    if d.test is not None and n + given(d.test.n, "data.test.n") > count:
        raise ValueError(
            f"data.test.n: data.n={d.n} + data.test.n={d.test.n} is more than the {count} digits "
            f"of classes {d.classes}"
        )


def _rules(d: DataConfig) -> tuple[str, str]:
    """(target, normalize) of a validated config."""
    return given(d.target, "data.target"), given(d.normalize, "data.normalize")


def _load(d: DataConfig, seed: int):
    return digits(given(d.n, "data.n"), d.classes, *_rules(d), seed)


def _load_held_out(d: DataConfig, seed: int):
    n_test = given(given(d.test, "data.test").n, "data.test.n")
    return digits_test(given(d.n, "data.n"), n_test, d.classes, *_rules(d), seed)


SOURCE = Source(
    name="digits",
    keys=("target", "classes"),
    default_n=64,
    pixel_max=PIXEL_MAX,
    load=_load,
    load_held_out=_load_held_out,
    input_dim=lambda d: D,
    validate=_validate,
    check=_check,
)
