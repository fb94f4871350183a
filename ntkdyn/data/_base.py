"""What every data source shares: the ``Source`` declaration, normalisation, the seeded row order
and the .npz header reader (shapes and dtypes without loading the arrays)."""

from __future__ import annotations

import dataclasses
import os
import zipfile
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:  # the config types, for hints only (config imports this package)
    from ntkdyn.config import DataConfig

NORMALIZE = ("unit", "standardize", "none", "pixels")
COMMON_KEYS = ("source", "n", "normalize", "test")  # data.<key>s that apply to every source
OPTIONAL_KEYS = ("d", "target", "noise", "teacher_width", "classes", "path")  # per source

Arrays = tuple[np.ndarray, np.ndarray]
T = TypeVar("T")


def given(value: T | None, key: str) -> T:
    """``value`` of the config key ``key`` once validation has filled it (a default, or a required
    key): a ValueError naming the key when it is still None (a config that did not pass
    ``config.validate``)."""
    if value is None:
        raise ValueError(f"{key}: missing; a config gets it from config.from_dict / config.validate")
    return value


@dataclasses.dataclass(frozen=True)
class Source:
    """One data source (``data.source: <name>``), declared once in its own module.

    Attributes:
        name: the value of ``data.source``.
        keys: the optional ``data.<key>`` (of ``OPTIONAL_KEYS``) that apply to it; the others are
            refused when set (``data.source``, ``n``, ``normalize`` and ``test`` apply to all).
        defaults: values filled into unset applicable keys (e.g. sphere's d = 16).
        default_n: data.n when unset; None: every point of data.path (filled by ``check``).
        default_normalize: data.normalize when unset; None: the source takes no data.normalize
            (its points are not normalised: sphere's lie on the unit sphere).
        pixel_max: the largest pixel intensity of an image source (``normalize: pixels`` divides by
            it), None for sources that are not images.
        validate: value checks of the data section that read no file (raise ValueError naming the
            key); may fill keys that depend on others.
        check: checks that read files (headers only where possible) and fill data.n / data.test.n
            from them; raise ValueError naming the key. Run by the entry points before any compute.
        load: (data section, seed) -> (X (n, d), y (n,)) float64.
        load_held_out: (data section, seed) -> (X_test, y_test) float64 (data.test is set).
        input_dim: data section -> d, without loading the points.
        refusals: per not-applicable key, why (added to the generic message).
    """

    name: str
    keys: tuple[str, ...]
    load: Callable[[DataConfig, int], Arrays]
    load_held_out: Callable[[DataConfig, int], Arrays]
    input_dim: Callable[[DataConfig], int]
    validate: Callable[[DataConfig], None]
    check: Callable[[DataConfig], None]
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    default_n: int | None = None
    default_normalize: str | None = "unit"
    pixel_max: float | None = None
    refusals: Mapping[str, str] = dataclasses.field(default_factory=dict)


def random_rows(count: int, seed: int) -> np.ndarray:
    """The order in which a subset of ``count`` file points is drawn: ``default_rng(seed).permutation``;
    the training points are its first data.n entries, held-out points the next data.test.n."""
    return np.random.default_rng(seed).permutation(count)


def normalise(
    X: np.ndarray, how: str, pixel_max: float | None = None, reference: np.ndarray | None = None
) -> np.ndarray:
    """unit: each row scaled to norm 1; standardize: each column to mean 0, std 1; none;
    pixels: X / pixel_max (image intensities to [0, 1]: digits / 16; MNIST / 255 = torchvision's ToTensor).
    ``reference``: the raw points whose column statistics standardize uses (default X; held-out points
    are standardized with the training points' statistics)."""
    if how == "unit":
        return X / np.linalg.norm(X, axis=1, keepdims=True)
    if how == "standardize":
        ref = X if reference is None else reference
        std = ref.std(axis=0)
        return (X - ref.mean(axis=0)) / np.where(std > 0, std, 1.0)
    if how == "none":
        return X
    if how == "pixels":
        if pixel_max is None:
            raise ValueError("data.normalize: 'pixels' is defined for image sources only (digits, mnist)")
        return X / pixel_max
    raise ValueError(f"data.normalize: unknown {how!r}; allowed: {', '.join(NORMALIZE)}")


def as_test_path(exc: ValueError) -> ValueError:
    """A data.path error raised while reading data.test.path, renamed to the key the user set."""
    return ValueError(str(exc).replace("data.path", "data.test.path", 1))


def npz_header(path: str, key: str = "X") -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of array ``key`` in an .npz, read from its .npy header (not loaded).

    Raises:
        ValueError: ``data.path: ...`` for a missing or unreadable file or a missing array.
    """
    if not os.path.isfile(path):
        raise ValueError(f"data.path: file not found: {path}")
    try:
        with zipfile.ZipFile(path) as z:
            names = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
            if key not in names:
                raise ValueError(f"data.path: {path} has no array {key!r} (it has {sorted(names)})")
            with z.open(key + ".npy") as f:
                version = np.lib.format.read_magic(f)
                read = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read(f)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"data.path: cannot read {path} as .npz ({exc})") from None
    return tuple(int(s) for s in shape), np.dtype(dtype)


def npz_rows(path: str, key: str = "X") -> int:
    """Number of rows of array ``key`` in an .npz, read from its .npy header (the array is not loaded)."""
    shape, _ = npz_header(path, key)
    if len(shape) < 1:
        raise ValueError(f"data.path: {key} in {path} is a scalar, expected an array of points")
    return shape[0]


def check_numeric(path: str, key: str, dtype: np.dtype) -> None:
    """ValueError naming ``key`` and the file when an array holds strings or objects, not numbers."""
    if dtype.kind not in "biuf":
        what = "strings" if dtype.kind in "US" else f"{dtype} values"
        raise ValueError(f"data.path: {key} of {path} holds {what} (dtype {dtype}); {key} must be numbers")


def check_counts(d: DataConfig, count: int) -> bool:
    """data.n and (without data.test.path) data.n + data.test.n within the ``count`` points of
    data.path (ValueError naming the key otherwise). True when a held-out file (data.test.path) is
    left for the source to check."""
    assert d.n is not None  # the source fills data.n before (npz: all points by default)
    if d.n > count:
        raise ValueError(f"data.n: {d.n} is more than the {count} points in data.path {d.path}")
    t = d.test
    if t is None:
        return False
    if t.path is None:
        assert t.n is not None  # config.validate requires data.test.n without data.test.path
        if d.n + t.n > count:
            raise ValueError(
                f"data.test.n: data.n={d.n} + data.test.n={t.n} is more than the {count} points in "
                f"data.path {d.path}; lower data.n or give data.test.path"
            )
        return False
    return True


def fill_test_count(d: DataConfig, count_t: int) -> None:
    """data.test.n of a held-out file of ``count_t`` points: all of them by default, at most all."""
    t = d.test
    assert t is not None and t.path is not None
    t.n = count_t if t.n is None else t.n
    if t.n > count_t:
        raise ValueError(f"data.test.n: {t.n} is more than the {count_t} points in data.test.path {t.path}")
