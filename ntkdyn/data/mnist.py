"""data.source 'mnist': MNIST from files you have (IDX files, their folder, or Keras' mnist.npz),
prepared as the released notebook does (the first data.n images, / 255); nothing downloads."""

from __future__ import annotations

import gzip
import os
import zipfile
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
    npz_rows,
)

if TYPE_CHECKING:
    from ntkdyn.config import DataConfig

PIXEL_MAX = 255.0  # MNIST intensities 0..255 (torchvision's ToTensor divides by it)
MNIST_NPZ_KEYS = ("x_train", "y_train")  # the layout of Keras' mnist.npz
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _open(path: str):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _idx_header(f, path: str) -> tuple[type, tuple[int, ...]]:
    """(dtype, shape) from an IDX header: two zero bytes, a type code, the number of dimensions,
    then each dimension as a big-endian uint32 (LeCun's MNIST file format)."""
    magic = f.read(4)
    if len(magic) != 4 or magic[:2] != b"\0\0" or magic[2] not in _IDX_DTYPES or magic[3] < 1:
        raise ValueError(f"data.path: {path} is not an IDX file (header {magic!r})")
    dims = f.read(4 * magic[3])
    if len(dims) != 4 * magic[3]:
        raise ValueError(f"data.path: {path} ends inside its IDX header")
    return _IDX_DTYPES[magic[2]], tuple(int(v) for v in np.frombuffer(dims, ">u4"))


def read_idx(path: str, count: int | None = None) -> np.ndarray:
    """The array of an IDX file (optionally gzip-compressed, by the .gz suffix); only its first
    ``count`` items along axis 0 when given."""
    try:
        with _open(path) as f:
            dtype, shape = _idx_header(f, path)
            rows = shape[0] if count is None else min(count, shape[0])
            per = int(np.prod(shape[1:], dtype=np.int64))
            want = rows * per * np.dtype(dtype).itemsize
            buf = f.read(want)
    except (OSError, EOFError) as exc:
        raise ValueError(f"data.path: cannot read {path} ({exc})") from None
    if len(buf) != want:
        raise ValueError(f"data.path: {path} is truncated: {len(buf)} of {want} data bytes")
    return np.frombuffer(buf, dtype).reshape((rows,) + shape[1:])


def idx_shape(path: str) -> tuple[int, ...]:
    """The shape of an IDX file's array, from its header."""
    try:
        with _open(path) as f:
            return _idx_header(f, path)[1]
    except (OSError, EOFError) as exc:
        raise ValueError(f"data.path: cannot read {path} ({exc})") from None


def idx_length(path: str) -> int:
    """Number of items (the first dimension) of an IDX file, from its header."""
    return idx_shape(path)[0]


def _first_existing(candidates: list[str]) -> str | None:
    return next((c for c in candidates if os.path.isfile(c)), None)


def mnist_files(path: str) -> tuple[str, str | None]:
    """(images, labels) for ``data.path``: an .npz (Keras layout: x_train, y_train; labels None),
    an images IDX file (``*-images-idx3-ubyte[.gz]``; its labels file ``*-labels-idx1-ubyte[.gz]``
    beside it), or a folder holding ``train-images-idx3-ubyte[.gz]`` and ``train-labels-idx1-ubyte[.gz]``
    (e.g. torchvision's ``MNIST/raw``)."""
    if os.path.isdir(path):
        images = _first_existing([os.path.join(path, "train-images-idx3-ubyte" + z) for z in ("", ".gz")])
        if images is None:
            raise ValueError(f"data.path: folder {path} holds no train-images-idx3-ubyte[.gz]")
    elif not os.path.isfile(path):
        raise ValueError(f"data.path: file not found: {path}")
    elif path.endswith(".npz"):
        return path, None
    else:
        images = path
    base = os.path.basename(images)
    if "images-idx3-ubyte" not in base:
        raise ValueError(
            f"data.path: {path}: expected an .npz, an '*-images-idx3-ubyte[.gz]' file or a folder "
            "holding train-images-idx3-ubyte[.gz]"
        )
    stem = os.path.join(os.path.dirname(images), base.replace("images-idx3-ubyte", "labels-idx1-ubyte"))
    stem = stem[:-3] if stem.endswith(".gz") else stem
    labels = _first_existing([stem, stem + ".gz"])
    if labels is None:
        raise ValueError(f"data.path: no labels file {os.path.basename(stem)}[.gz] beside {images}")
    return images, labels


def mnist_length(path: str) -> int:
    """Number of images behind ``data.path`` (headers only)."""
    images, labels = mnist_files(path)
    if labels is None:
        return npz_rows(images, MNIST_NPZ_KEYS[0])
    n_img, n_lab = idx_length(images), idx_length(labels)
    if n_img != n_lab:
        raise ValueError(f"data.path: {images} holds {n_img} images but {labels} {n_lab} labels")
    return n_img


def mnist(path: str, n: int, normalize: str = "pixels"):
    """MNIST from local files (``mnist_files``), as the released notebook prepares it: the first
    ``n`` training images (its ``SubsetRandomSampler(range(n))`` full batch: the first n, in any
    order), flattened to 784 pixels, scaled by ToTensor to [0, 1] (``normalize='pixels'``: / 255),
    the digit label (0-9) as the float target."""
    images, labels = mnist_files(path)
    if labels is None:
        try:
            with np.load(images) as f:
                missing = [k for k in MNIST_NPZ_KEYS if k not in f.files]
                if missing:
                    raise ValueError(
                        f"data.path: {images} has no array {missing[0]!r} (an MNIST .npz holds "
                        f"{', '.join(MNIST_NPZ_KEYS)}; it has {sorted(f.files)})"
                    )
                X, y = f[MNIST_NPZ_KEYS[0]][:n], f[MNIST_NPZ_KEYS[1]][:n]
        except (zipfile.BadZipFile, OSError) as exc:
            raise ValueError(f"data.path: cannot read {images} as .npz ({exc})") from None
    else:
        X, y = read_idx(images, n), read_idx(labels, n)
    if X.shape[0] < n or y.shape[0] < n:
        raise ValueError(f"data.n={n} is more than the {min(X.shape[0], y.shape[0])} images in {path}")
    X = np.asarray(X, np.float64).reshape(n, -1)
    y = np.asarray(y, np.float64).reshape(-1)
    if y.shape != (n,):
        raise ValueError(f"data.path: MNIST labels must be one digit per image, got shape {y.shape}")
    return normalise(X, normalize, PIXEL_MAX), y


def mnist_test(path: str, n: int, n_test: int | None, test_path: str | None, normalize: str = "pixels"):
    """Held-out MNIST images for ``mnist(path, n, normalize)``: without ``test_path`` the n_test
    images after the first n of the same source (disjoint from the training images); with it the
    first n_test images of that source (``mnist_files``: e.g. ``t10k-images-idx3-ubyte``, its labels
    beside it; all of them when n_test is None). 'standardize' uses the training images' column
    statistics. Returns (X_test, y_test)."""
    if test_path is None:
        X, y = mnist(path, n + n_test, "none")
        return normalise(X[n:], normalize, PIXEL_MAX, reference=X[:n]), y[n:]
    try:
        n_test = mnist_length(test_path) if n_test is None else n_test
        X_t, y_t = mnist(test_path, n_test, "none")
    except ValueError as exc:
        raise as_test_path(exc) from None
    reference = mnist(path, n, "none")[0] if normalize == "standardize" else None
    return normalise(X_t, normalize, PIXEL_MAX, reference=reference), y_t


def image_dim(path: str) -> int:
    """Pixels per image behind ``data.path`` (784 for MNIST), from the headers; an .npz's images and
    labels must be numbers."""
    images, labels = mnist_files(path)
    if labels is None:
        for key in MNIST_NPZ_KEYS:
            check_numeric(images, key, npz_header(images, key)[1])
    shape = npz_header(images, MNIST_NPZ_KEYS[0])[0] if labels is None else idx_shape(images)
    return int(np.prod(shape[1:], dtype=np.int64))


# --------------------------------------------------------------------------- the declaration
DEFAULT_N = 600  # the released notebook's


def _validate(d: DataConfig) -> None:
    """data.path required; target 'label' only; data.test: n required without its own path."""
    if not d.path:
        raise ValueError("data.path: required when data.source is 'mnist'")
    if d.target not in ("label", "onehot"):
        raise ValueError(f"data.target: {d.target!r} is not allowed; allowed: label, onehot")
    if d.test is not None and d.test.path is None and d.test.n is None:
        raise ValueError(
            "data.test.n: required without data.test.path (the held-out points are those of "
            "data.path after the data.n training points)"
        )


def _check(d: DataConfig) -> None:
    """The files' headers: data.n (+ data.test.n) within the images of data.path; data.test.path
    another source of the same image size (data.test.n defaults to all of it)."""
    if not os.path.exists(d.path):
        raise ValueError(f"data.path: not found: {d.path}")
    count = mnist_length(d.path)
    image_dim(d.path)  # an .npz's arrays are numbers
    if not check_counts(d, count):
        return
    t = d.test
    if not os.path.exists(t.path):
        raise ValueError(f"data.test.path: not found: {t.path}")
    try:
        if os.path.realpath(mnist_files(t.path)[0]) == os.path.realpath(mnist_files(d.path)[0]):
            raise ValueError(
                f"data.test.path: {t.path} holds the training images of data.path; leave data.test.path "
                "out to hold out the images after the first data.n"
            )
        count_t = mnist_length(t.path)
        dim, dim_t = image_dim(d.path), image_dim(t.path)
    except ValueError as exc:
        raise as_test_path(exc) if str(exc).startswith("data.path") else exc from None
    if dim_t != dim:
        raise ValueError(
            f"data.test.path: the images of {t.path} have {dim_t} pixels, data.path's {dim}; held-out "
            "points need the training points' dimension"
        )
    fill_test_count(d, count_t)


SOURCE = Source(
    name="mnist",
    keys=("path", "target"),
    defaults={"target": "label"},
    default_n=DEFAULT_N,
    default_normalize="pixels",
    pixel_max=PIXEL_MAX,
    load=lambda d, seed: mnist(d.path, d.n if d.n is not None else DEFAULT_N, d.normalize),
    load_held_out=lambda d, seed: mnist_test(
        d.path, d.n if d.n is not None else DEFAULT_N, d.test.n, d.test.path, d.normalize
    ),
    input_dim=lambda d: image_dim(d.path),
    validate=_validate,
    check=_check,
    refusals={"classes": "MNIST keeps every class"},
)
