"""Data sets: synthetic sphere data, scikit-learn's bundled digits, user .npz, MNIST from local
files. Nothing downloads.

Each builder returns float64 numpy arrays X (n, d) and y (n,).
"""

from __future__ import annotations

import gzip
import os
import zipfile

import numpy as np

TARGETS = ("gaussian", "teacher", "smooth")
NORMALIZE = ("unit", "standardize", "none", "pixels")
PIXEL_MAX = {"digits": 16.0, "mnist": 255.0}  # largest pixel intensity of each image source


def unit_sphere(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """n points uniform on the unit sphere S^{d-1} (normalised Gaussians)."""
    X = rng.standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def target_function(rng: np.random.Generator, rule: str, d: int, teacher_width: int):
    """The target rule as a function of x (before centring and scaling), its random parts drawn from
    ``rng``: teacher W (teacher_width, d) and a (teacher_width,), smooth v, v' (two unit vectors);
    None for gaussian (the targets are not a function of x). Raises ValueError for an unknown rule."""
    if rule == "gaussian":
        return None
    if rule == "teacher":
        W = rng.standard_normal((teacher_width, d))
        a = rng.standard_normal(teacher_width)
        return lambda X: np.maximum(X @ W.T, 0) @ a / np.sqrt(teacher_width)
    if rule == "smooth":
        v, w = unit_sphere(rng, 2, d)
        return lambda X: np.sin(np.pi * X @ v) + (X @ w) ** 2
    raise ValueError(f"data.target: unknown rule {rule!r}; allowed: {', '.join(TARGETS)}")


def _sphere_draw(rng: np.random.Generator, X: np.ndarray, rule: str, noise: float, teacher_width: int):
    """(y, f, shift, scale): targets of X (``sphere_targets``), the target function f and the centring
    shift and scale fixed by this sample (0 and 1 for gaussian)."""
    n, d = X.shape
    f = target_function(rng, rule, d, teacher_width)
    raw = rng.standard_normal(n) if f is None else f(X)
    shift, scale = (0.0, 1.0) if f is None else (raw.mean(), raw.std() + 1e-300)
    return (raw - shift) / scale + noise * rng.standard_normal(n), f, shift, scale


def sphere_targets(
    rng: np.random.Generator, X: np.ndarray, rule: str, noise: float, teacher_width: int
) -> np.ndarray:
    """Targets for sphere data.

    gaussian: y ~ N(0, 1). teacher: a random two-layer ReLU network
    y = (1/sqrt m_t) sum_r a_r relu(w_r . x) with w_r ~ N(0, I), a_r ~ N(0, 1), scaled to unit
    variance. smooth: y = sin(pi v.x) + (v'.x)^2 for random unit v, v', centred and scaled to unit
    variance. Then y += noise * N(0, 1).
    """
    return _sphere_draw(rng, X, rule, noise, teacher_width)[0]


def sphere(n: int, d: int, target: str, seed: int, noise: float = 0.0, teacher_width: int = 64):
    rng = np.random.default_rng(seed)
    X = unit_sphere(rng, n, d)
    return X, sphere_targets(rng, X, target, noise, teacher_width)


TEST_STREAM = 0x7E57  # held-out points of synthetic data: seed stream default_rng([seed, TEST_STREAM])


def sphere_test(
    n: int, d: int, target: str, seed: int, n_test: int, noise: float = 0.0, teacher_width: int = 64
):
    """Held-out points for ``sphere(n, d, target, seed, noise, teacher_width)``: n_test new points
    uniform on the sphere from their own stream ``default_rng([seed, TEST_STREAM])`` (apart from the
    training stream ``default_rng(seed)``; distinct from the training points with probability 1),
    labelled by the SAME target function (teacher / smooth: the one drawn for the training set,
    centred and scaled by the training sample's mean and std) plus fresh noise * N(0, 1);
    gaussian: fresh N(0, 1) targets. Returns (X_test (n_test, d), y_test (n_test,))."""
    rng = np.random.default_rng(seed)
    X = unit_sphere(rng, n, d)
    _, f, shift, scale = _sphere_draw(rng, X, target, noise, teacher_width)
    rng_t = np.random.default_rng([seed, TEST_STREAM])
    X_t = unit_sphere(rng_t, n_test, d)
    raw = rng_t.standard_normal(n_test) if f is None else f(X_t)
    return X_t, (raw - shift) / scale + noise * rng_t.standard_normal(n_test)


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
            raise ValueError(
                f"data.normalize: 'pixels' is defined for image sources only ({', '.join(PIXEL_MAX)})"
            )
        return X / pixel_max
    raise ValueError(f"data.normalize: unknown {how!r}; allowed: {', '.join(NORMALIZE)}")


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
    return normalise(X, normalize, PIXEL_MAX["digits"]), _digits_targets(labels, classes, target)


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
    X_t = normalise(X[test], normalize, PIXEL_MAX["digits"], reference=X[train])
    return X_t, _digits_targets(labels[test], classes, target)


def from_npz(path: str, normalize: str = "none"):
    """User data: an .npz with X (n, d) and y (n,) or (n, 1)."""
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
    X, y = np.asarray(arrays["X"], np.float64), np.asarray(arrays["y"], np.float64)
    if X.ndim != 2:
        raise ValueError(f"data.path: X must be 2-D (n, d), got shape {X.shape}")
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.shape != (X.shape[0],):
        raise ValueError(f"data.path: y must have shape ({X.shape[0]},), got {y.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError(f"data.path: {path} holds non-finite values")
    return normalise(X, normalize), y


def _as_test_path(exc: ValueError) -> ValueError:
    """A data.path error raised while reading data.test.path, renamed to the key the user set."""
    return ValueError(str(exc).replace("data.path", "data.test.path", 1))


def npz_test(path: str, n: int, seed: int, n_test: int, test_path: str | None, normalize: str = "none"):
    """Held-out points for the npz training set of ``data.path`` (data.n points, ``random_rows``).

    Without ``test_path``: the next n_test points of the same random order (disjoint from the
    training points), normalised as the training points are (over the whole file). With
    ``test_path``: the first n_test points of that .npz (X, y as ``from_npz``), normalised with the
    training file's column statistics. Returns (X_test, y_test)."""
    X, y = from_npz(path, normalize if test_path is None else "none")
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
        raise _as_test_path(exc) from None
    if X_t.shape[1] != X.shape[1]:
        raise ValueError(
            f"data.test.path: X of {test_path} has {X_t.shape[1]} columns, data.path's has {X.shape[1]}"
        )
    if n_test > X_t.shape[0]:
        raise ValueError(f"data.test.n: {n_test} is more than the {X_t.shape[0]} points in {test_path}")
    return normalise(X_t[:n_test], normalize, reference=X), y_t[:n_test]


def npz_rows(path: str, key: str = "X") -> int:
    """Number of rows of array ``key`` in an .npz, read from its .npy header (the array is not loaded)."""
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
                shape = read(f)[0]
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"data.path: cannot read {path} as .npz ({exc})") from None
    if len(shape) < 1:
        raise ValueError(f"data.path: {key} in {path} is a scalar, expected an array of points")
    return int(shape[0])


# --------------------------------------------------------------------------- MNIST from local files
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


def idx_length(path: str) -> int:
    """Number of items (the first dimension) of an IDX file, from its header."""
    try:
        with _open(path) as f:
            return _idx_header(f, path)[1][0]
    except (OSError, EOFError) as exc:
        raise ValueError(f"data.path: cannot read {path} ({exc})") from None


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
    return normalise(X, normalize, PIXEL_MAX["mnist"]), y


def mnist_test(path: str, n: int, n_test: int, test_path: str | None, normalize: str = "pixels"):
    """Held-out MNIST images for ``mnist(path, n, normalize)``: without ``test_path`` the n_test
    images after the first n of the same source (disjoint from the training images); with it the
    first n_test images of that source (``mnist_files``: e.g. ``t10k-images-idx3-ubyte``, its labels
    beside it). 'standardize' uses the training images' column statistics. Returns (X_test, y_test)."""
    if test_path is None:
        X, y = mnist(path, n + n_test, "none")
        return normalise(X[n:], normalize, PIXEL_MAX["mnist"], reference=X[:n]), y[n:]
    try:
        X_t, y_t = mnist(test_path, n_test, "none")
    except ValueError as exc:
        raise _as_test_path(exc) from None
    reference = mnist(path, n, "none")[0] if normalize == "standardize" else None
    return normalise(X_t, normalize, PIXEL_MAX["mnist"], reference=reference), y_t
