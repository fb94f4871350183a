"""Data builders and configuration parsing / validation."""

import copy

import numpy as np
import pytest
import yaml

from ntkdyn import checks, config, data
from ntkdyn.config import ConfigError


def _resolved(raw):
    """A config as the entry points see it: parsed and validated (no file read), then the checks
    that read files (``checks.check_files``: the data source's, data.n of an .npz)."""
    return checks.check_files(config.from_dict(raw))


# --------------------------------------------------------------------------- data
@pytest.mark.parametrize("target", ["gaussian", "teacher", "smooth"])
def test_sphere_unit_norm_and_deterministic(target):
    X, y = data.sphere(40, 7, target, seed=3)
    assert X.shape == (40, 7) and y.shape == (40,)
    assert X.dtype == y.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-14)
    X2, y2 = data.sphere(40, 7, target, seed=3)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    X3, y3 = data.sphere(40, 7, target, seed=4)
    assert not np.allclose(X, X3) and not np.allclose(y, y3)
    if target != "gaussian":  # standardised
        assert abs(y.mean()) < 1e-12 and y.std() == pytest.approx(1.0, rel=1e-9)


def test_sphere_noise_is_added():
    _, y0 = data.sphere(30, 4, "teacher", seed=0)
    _, y1 = data.sphere(30, 4, "teacher", seed=0, noise=0.1)
    diff = y1 - y0
    assert 0.0 < np.std(diff) < 0.3
    _, y2 = data.sphere(30, 4, "teacher", seed=0, noise=0.0)
    np.testing.assert_array_equal(y0, y2)


def test_sphere_teacher_is_a_relu_network_of_the_inputs():
    """Same inputs -> same targets; the teacher is a function of x (duplicate rows agree)."""
    rng = np.random.default_rng(0)
    X = data.unit_sphere(rng, 5, 3)
    X = np.concatenate([X, X[:2]])
    y = data.sphere_targets(np.random.default_rng(1), X, "teacher", 0.0, 16)
    np.testing.assert_allclose(y[5:], y[:2], rtol=1e-14)


def test_sphere_unknown_target():
    with pytest.raises(ValueError, match="unknown rule 'cosine'; allowed: gaussian, teacher, smooth"):
        data.sphere(5, 3, "cosine", seed=0)


def _digit_labels(X):
    """Labels of digits rows (normalize='none') by lookup in the bundled set."""
    from sklearn.datasets import load_digits

    d = load_digits()
    lookup = {row.tobytes(): lab for row, lab in zip(d.data.astype(np.float64), d.target)}
    return np.array([lookup[row.tobytes()] for row in X])


def test_digits_classes_and_pm1_targets():
    X, y = data.digits(60, [3, 5], "pm1", "none", seed=0)
    assert X.shape == (60, 64)
    labels = _digit_labels(X)
    assert set(labels) <= {3, 5} and len(set(labels)) == 2
    np.testing.assert_array_equal(y, np.where(labels == 3, 1.0, -1.0))
    X2, y2 = data.digits(60, [3, 5], "pm1", "none", seed=0)
    np.testing.assert_array_equal(X, X2)
    X3, _ = data.digits(60, [3, 5], "pm1", "none", seed=1)
    assert not np.array_equal(X, X3)


def test_digits_label_target_and_normalisation():
    X, y = data.digits(50, None, "label", "none", seed=2)
    np.testing.assert_array_equal(y, _digit_labels(X).astype(float))
    Xu, _ = data.digits(50, None, "label", "unit", seed=2)
    np.testing.assert_allclose(np.linalg.norm(Xu, axis=1), 1.0, rtol=1e-14)
    np.testing.assert_allclose(Xu, X / np.linalg.norm(X, axis=1, keepdims=True))


def test_digits_errors():
    with pytest.raises(ValueError, match=r"data.n=500 is more than the \d+ digits of classes \[0, 1\]"):
        data.digits(500, [0, 1], "pm1", "none", seed=0)
    with pytest.raises(ValueError, match="data.target: unknown 'teacher' for digits"):
        data.digits(10, None, "teacher", "none", seed=0)


def test_normalise():
    X = np.array([[3.0, 4.0, 1.0], [0.0, 2.0, 1.0], [6.0, 0.0, 1.0]])
    np.testing.assert_allclose(np.linalg.norm(data.normalise(X, "unit"), axis=1), 1.0)
    S = data.normalise(X, "standardize")
    np.testing.assert_allclose(S.mean(axis=0), 0.0, atol=1e-15)
    np.testing.assert_allclose(S.std(axis=0)[:2], 1.0)
    np.testing.assert_array_equal(S[:, 2], 0.0)  # constant column: no division by zero
    assert data.normalise(X, "none") is X
    with pytest.raises(ValueError, match="data.normalize: unknown 'zscore'"):
        data.normalise(X, "zscore")


def test_from_npz_ok(tmp_path):
    X = np.arange(12.0).reshape(4, 3)
    path = tmp_path / "d.npz"
    np.savez(path, X=X, y=np.arange(4.0).reshape(4, 1))
    X2, y2 = data.from_npz(str(path))
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, np.arange(4.0))
    Xu, _ = data.from_npz(str(path), "unit")
    np.testing.assert_allclose(np.linalg.norm(Xu[1:], axis=1), 1.0)


@pytest.mark.parametrize(
    "arrays,message",
    [
        ({"X": np.zeros((4, 3))}, r"has no array 'y' \(it has \['X'\]\)"),
        ({"y": np.zeros(4)}, r"has no array 'X'"),
        ({"X": np.zeros(4), "y": np.zeros(4)}, r"X must be 2-D \(n, d\), got shape \(4,\)"),
        ({"X": np.zeros((4, 3)), "y": np.zeros(5)}, r"y must have shape \(4,\), got \(5,\)"),
        ({"X": np.zeros((4, 3)), "y": np.zeros((4, 2))}, r"y must have shape \(4,\), got \(4, 2\)"),
        ({"X": np.full((4, 3), np.nan), "y": np.zeros(4)}, r"non-finite values"),
    ],
)
def test_from_npz_errors_name_the_problem(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="data.path: .*" + message):
        data.from_npz(str(path))


def test_from_npz_missing_or_unreadable(tmp_path):
    with pytest.raises(ValueError, match="data.path: file not found: .*nope.npz"):
        data.from_npz(str(tmp_path / "nope.npz"))
    junk = tmp_path / "junk.npz"
    junk.write_text("hello")
    with pytest.raises(ValueError, match="data.path: cannot read .*junk.npz as .npz"):
        data.from_npz(str(junk))


# --------------------------------------------------------------------------- config
MINIMAL = {"optimizers": [{"name": "gd", "eta": 0.1}]}


def _with(**sections):
    raw = copy.deepcopy(MINIMAL)
    raw.update(copy.deepcopy(sections))
    return raw


def test_minimal_config_fills_defaults():
    cfg = config.from_dict(copy.deepcopy(MINIMAL))
    assert cfg.train.steps == 1000
    assert cfg.train.error_at == [0, 1000]
    assert cfg.train.kernel_at == [0, 250, 500, 1000]
    assert cfg.optimizers[0].label == "gd"
    assert cfg.optimizers[0].hyper() == {"eta": 0.1}
    assert cfg.model.name == "paper" and cfg.data.source == "sphere" and cfg.dtype == "float32"


def test_defaults_follow_steps_and_kernel_at_gets_zero():
    cfg = config.from_dict(_with(train={"steps": 40, "kernel_at": [40, 10, 10]}))
    assert cfg.train.error_at == [0, 40]
    assert cfg.train.kernel_at == [0, 10, 40]


def test_labels_and_hyper():
    cfg = config.from_dict(
        {
            "optimizers": [
                {"name": "hb", "eta": 0.1, "beta": 0.9},
                {"name": "hb", "eta": 0.1, "beta": 0.5, "label": "hb-slow"},
                {"name": "nag_c", "eta": 0.01, "r": 5},
                {"name": "adam", "eta": 0.01, "kwargs": {"b1": 0.8}},
            ]
        }
    )
    assert [o.label for o in cfg.optimizers] == ["hb", "hb-slow", "nag_c", "adam"]
    assert cfg.optimizers[2].hyper() == {"eta": 0.01, "r": 5.0}
    assert cfg.optimizers[3].hyper() == {"eta": 0.01, "b1": 0.8}


def test_dump_round_trip():
    cfg = config.from_dict(_with(train={"steps": 20, "record_every": 5}, model={"width": 64}))
    again = config.from_dict(yaml.safe_load(config.dump(cfg)))
    assert again == cfg


BAD = [
    ({"foo": 1}, "unknown key 'foo'"),
    ({"data": {"foo": 1}}, "unknown key 'data.foo'"),
    (
        {"optimizers": [{"name": "gd", "eta": 0.1, "momentum": 0.9}]},
        r"unknown key 'optimizers\[0\].momentum'",
    ),
    ({"train": {"steps": "ten"}}, "train.steps: expected (an integer|a number), got 'ten'"),
    ({"train": {"steps": True}}, "train.steps: expected an integer"),
    ({"train": {"steps": 0}}, "train.steps: must be >= 1"),
    ({"data": "sphere"}, "data: expected a mapping"),
    ({"rates": {"window": 0.5}}, "rates.window: expected a list"),
    ({"optimizers": [{"name": "gd", "eta": 0.0}]}, r"optimizers\[0\].eta: must be > 0"),
    ({"optimizers": [{"name": "gd", "eta": -0.1}]}, r"optimizers\[0\].eta: must be > 0"),
    ({"optimizers": [{"name": "gd", "eta": float("inf")}]}, r"optimizers\[0\].eta: must be a finite number"),
    ({"optimizers": [{"name": "gd", "eta": "fast"}]}, r"optimizers\[0\].eta: expected a number"),
    ({"optimizers": [{"name": "hb", "eta": 0.1, "beta": 1.0}]}, r"optimizers\[0\].beta: must be in \[0, 1\)"),
    (
        {"optimizers": [{"name": "hb", "eta": 0.1, "beta": -0.1}]},
        r"optimizers\[0\].beta: must be in \[0, 1\)",
    ),
    ({"optimizers": [{"name": "nag_c", "eta": 0.1, "r": 0}]}, r"optimizers\[0\].r: must be > 0"),
    ({"model": {"width": 0}}, "model.width: must be >= 1"),
    (
        {"model": {"name": "resnet"}},
        "model.name: 'resnet' is not allowed; allowed: paper, released, mlp, flax",
    ),
    (
        {"optimizers": [{"name": "sgdm", "eta": 0.1}]},
        r"optimizers\[0\].name: unknown optimizer 'sgdm'; allowed: .*hb",
    ),
    (
        {"optimizers": [{"name": "gd", "eta": 0.1, "beta": 0.9}]},
        r"optimizers\[0\].beta: optimizer 'gd' takes no 'beta'",
    ),
    ({"optimizers": [{"name": "hb", "eta": 0.1}]}, r"optimizers\[0\].beta: required by optimizer 'hb'"),
    ({"optimizers": [{"name": "gd", "eta": 0.1, "kwargs": {"x": 1}}]}, r"optimizers\[0\].kwargs"),
    (
        {"optimizers": [{"name": "gd", "eta": 0.1}, {"name": "gd", "eta": 0.2}]},
        r"optimizers\[1\].label: 'gd' repeats",
    ),
    (
        {
            "optimizers": [
                {"name": "gd", "eta": 0.1, "label": "a"},
                {"name": "hb", "eta": 0.2, "beta": 0.5, "label": "a"},
            ]
        },
        r"optimizers\[1\].label",
    ),
    ({"optimizers": [{"name": "gd", "eta": 0.1, "label": "a/b"}]}, r"optimizers\[0\].label"),
    ({"optimizers": []}, "optimizers: at least one optimizer"),
    (
        {"model": {"name": "released"}, "theory": {"kernel": "Hinf"}},
        r"theory.kernel: 'Hinf' is defined for model.name 'paper'.*\(got 'released'\)",
    ),
    (
        {"optimizers": [{"name": "adam", "eta": 0.01, "kwargs": {"bogus": 1}}]},
        r"optimizers\[0\].kwargs.bogus",
    ),
    (
        {"train": {"steps": 10, "record_every": 3}},
        "train.record_every: must be >= 1 and divide train.steps=10, got 3",
    ),
    ({"train": {"steps": 10, "error_at": [0, -1]}}, "train.error_at: step -1 is negative"),
    ({"dtype": "float16"}, "dtype: 'float16' is not allowed"),
    ({"data": {"source": "npz"}}, "data.path: required"),
    ({"data": {"source": "digits", "target": "pm1", "classes": [3, 12]}}, "data.classes: 12 is not a digit"),
    ({"rates": {"window": [0.5, 0.2]}}, "rates.window"),
    ({"model": {"name": "flax"}}, "model.module: required"),
]


@pytest.mark.parametrize("sections,message", BAD)
def test_bad_config_names_the_key(sections, message):
    with pytest.raises(ConfigError, match=message):
        config.from_dict(_with(**sections))


def test_missing_optimizers_and_non_mapping():
    with pytest.raises(ConfigError, match="missing key 'optimizers'"):
        config.from_dict({})
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        config.from_dict([1, 2])
    with pytest.raises(ConfigError, match=r"optimizers\[0\].eta: required by optimizer 'gd'"):
        config.from_dict({"optimizers": [{"name": "gd"}]})
    # Polyak-tuned HB sets eta from the spectrum: no eta needed
    assert config.from_dict({"optimizers": [{"name": "hb_polyak"}]}).optimizers[0].eta is None
    with pytest.raises(ConfigError, match=r"optimizers\[0\].kwargs.gamma: not a hyperparameter of 'hb2'"):
        config.from_dict({"optimizers": [{"name": "hb2", "eta": 0.1, "beta": 0.5, "kwargs": {"gamma": 1}}]})
    assert (
        config.from_dict({"optimizers": [{"name": "hb2", "eta": 0.1, "beta": 0.5, "kwargs": {"beta2": 0.2}}]})
        .optimizers[0]
        .hyper()["beta2"]
        == 0.2
    )


def test_apply_override():
    raw = {
        "train": {"steps": 100},
        "optimizers": [{"name": "gd", "eta": 0.1}, {"name": "hb", "eta": 0.1, "beta": 0.9}],
    }
    config.apply_override(raw, "optimizers.1.eta=0.5")
    assert raw["optimizers"][1]["eta"] == 0.5 and raw["optimizers"][0]["eta"] == 0.1
    config.apply_override(raw, "train.steps=500")
    assert raw["train"]["steps"] == 500
    config.apply_override(raw, "model.width=64")  # a new section
    assert raw["model"] == {"width": 64}
    config.apply_override(raw, "train.error_at=[0, 10]")
    assert raw["train"]["error_at"] == [0, 10]
    cfg = config.from_dict(raw)
    assert cfg.optimizers[1].eta == 0.5 and cfg.train.steps == 500 and cfg.model.width == 64


@pytest.mark.parametrize(
    "assignment,message",
    [
        ("optimizers.5.eta=0.5", "'5' is not an index of a list of length 1"),
        ("optimizers.x.eta=0.5", "'x' is not an index"),
        ("optimizers.-1.eta=0.5", "is not an index"),
        ("train.steps.max=3", "train.steps is not a mapping"),
        ("train.steps", "expected KEY=VALUE"),
    ],
)
def test_apply_override_errors(assignment, message):
    raw = {"train": {"steps": 100}, "optimizers": [{"name": "gd", "eta": 0.1}]}
    with pytest.raises(ConfigError, match=message):
        config.apply_override(raw, assignment)


def test_load_file_with_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"optimizers": [{"name": "gd", "eta": 0.1}], "train": {"steps": 20}}))
    cfg = config.load(str(path), ["optimizers.0.eta=0.25", "train.record_every=4"])
    assert cfg.optimizers[0].eta == 0.25 and cfg.train.record_every == 4
    with pytest.raises(ConfigError, match="train.record_every"):
        config.load(str(path), ["train.record_every=3"])
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        config.load(str(bad))


@pytest.mark.parametrize("name", ["quickstart", "digits"])
def test_shipped_configs_validate(name):
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml"
    cfg = config.load(str(path))
    assert cfg.optimizers and cfg.train.steps >= 1


def test_scientific_notation_numbers_are_numbers(tmp_path):
    """PyYAML (YAML 1.1) reads '1e-3' (no dot) as a string; step sizes are routinely written that
    way in files and in --set overrides, so the config must accept them as numbers."""
    path = tmp_path / "c.yaml"
    path.write_text("optimizers:\n  - {name: gd, eta: 1e-3}\ntheory:\n  rtol: 1e-8\n")
    cfg = config.load(str(path))
    assert cfg.optimizers[0].eta == pytest.approx(1e-3)
    assert cfg.theory.rtol == pytest.approx(1e-8)
    raw = config.apply_override(copy.deepcopy(MINIMAL), "optimizers.0.eta=5e-4")
    assert config.from_dict(raw).optimizers[0].eta == pytest.approx(5e-4)


# --------------------------------------------------------------------------- npz: all points unless data.n
def _npz(tmp_path, n=37, d=3):
    X = np.arange(n * d, dtype=np.float64).reshape(n, d) + 1.0
    path = tmp_path / "pts.npz"
    np.savez(path, X=X, y=np.arange(n, dtype=np.float64))
    return str(path), X


def test_npz_uses_all_points_unless_n_is_given(tmp_path):
    from ntkdyn import pipeline

    path, X = _npz(tmp_path)
    cfg = _resolved(_with(data={"source": "npz", "path": path, "normalize": "none"}))
    assert cfg.data.n == 37  # the file's size, stated in the config
    X2, y2 = pipeline.load_data(cfg)
    np.testing.assert_array_equal(X2, X)  # all points, in the file's order
    np.testing.assert_array_equal(y2, np.arange(37.0))
    cfg = _resolved(_with(data={"source": "npz", "path": path, "normalize": "none", "n": 10}))
    X3, y3 = pipeline.load_data(cfg)
    assert X3.shape == (10, 3)
    np.testing.assert_array_equal(X3, X[y3.astype(int)])  # a subset of the file's rows, y kept with its x
    with pytest.raises(ConfigError, match=r"data.n: 38 is more than the 37 points in data.path .*pts.npz"):
        _resolved(_with(data={"source": "npz", "path": path, "n": 38}))


def test_npz_without_X_is_a_config_error(tmp_path):
    path = tmp_path / "noX.npz"
    np.savez(path, Z=np.zeros((3, 2)), y=np.zeros(3))
    with pytest.raises(ConfigError, match=r"data.path: .*noX.npz has no array 'X' \(it has \['Z', 'y'\]\)"):
        _resolved(_with(data={"source": "npz", "path": str(path)}))


# --------------------------------------------------------------------------- MNIST from local files
def _write_idx(path, array: np.ndarray, code: int = 0x08) -> None:
    """An IDX file as specified by LeCun (magic 0 0 type ndim, big-endian uint32 sizes, data)."""
    import gzip

    header = bytes([0, 0, code, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        with open(path, "wb") as fh:
            fh.write(payload)


def _tiny_mnist(tmp_path, gz: bool, count=9):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[1, 0, 0] = 255, 0
    labels = rng.integers(0, 10, size=count, dtype=np.uint8)
    z = ".gz" if gz else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{z}", images)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{z}", labels)
    return images, labels


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("where", ["folder", "images_file"])
def test_mnist_idx_notebook_preprocessing(tmp_path, gz, where):
    """First n images, flattened, / 255 (torchvision ToTensor), the digit as float target."""
    from ntkdyn import pipeline

    images, labels = _tiny_mnist(tmp_path, gz)
    path = (
        str(tmp_path)
        if where == "folder"
        else str(tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else "")))
    )
    cfg = config.from_dict(_with(data={"source": "mnist", "path": path, "n": 6}))
    assert cfg.data.normalize == "pixels"
    X, y = pipeline.load_data(cfg)
    assert X.shape == (6, 784) and X.dtype == np.float64
    for i in range(6):
        np.testing.assert_array_equal(X[i], images[i].reshape(-1) / 255.0)
    assert X[0, 0] == 1.0 and X[1, 0] == 0.0
    np.testing.assert_array_equal(y, labels[:6].astype(np.float64))
    # unit normalisation on request, raw intensities with 'none'
    Xn, _ = pipeline.load_data(
        config.from_dict(_with(data={"source": "mnist", "path": path, "n": 6, "normalize": "none"}))
    )
    np.testing.assert_array_equal(Xn, images[:6].reshape(6, -1).astype(np.float64))


def test_mnist_npz_and_default_n(tmp_path):
    from ntkdyn import pipeline

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(700, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, size=700, dtype=np.uint8)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x[:5], y_test=y[:5])
    cfg = _resolved(_with(data={"source": "mnist", "path": str(path)}))
    assert cfg.data.n == 600  # the released notebook's default
    X, yy = pipeline.load_data(cfg)
    np.testing.assert_array_equal(X, x[:600].reshape(600, -1) / 255.0)
    np.testing.assert_array_equal(yy, y[:600].astype(float))
    bad = tmp_path / "other.npz"
    np.savez(bad, X=np.zeros((3, 2)))
    with pytest.raises(ConfigError, match=r"data.path: .*other.npz has no array 'x_train'"):
        _resolved(_with(data={"source": "mnist", "path": str(bad), "n": 2}))


def test_mnist_errors_name_the_key(tmp_path):
    _tiny_mnist(tmp_path, gz=False, count=9)
    with pytest.raises(ConfigError, match=r"data.n: 10 is more than the 9 points in data.path"):
        _resolved(_with(data={"source": "mnist", "path": str(tmp_path), "n": 10}))
    with pytest.raises(ConfigError, match=r"data.n: 600 is more than the 9 points"):  # the default n
        _resolved(_with(data={"source": "mnist", "path": str(tmp_path)}))
    with pytest.raises(ConfigError, match="data.path: required when data.source is 'mnist'"):
        _resolved(_with(data={"source": "mnist"}))
    with pytest.raises(ConfigError, match="data.path: not found"):
        _resolved(_with(data={"source": "mnist", "path": str(tmp_path / "nowhere")}))
    with pytest.raises(ConfigError, match="data.normalize: 'pixels' is for image sources"):
        config.from_dict(_with(data={"source": "npz", "path": "x.npz", "normalize": "pixels"}))
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    _write_idx(lonely / "t10k-images-idx3-ubyte", np.zeros((2, 28, 28)))
    with pytest.raises(ConfigError, match="data.path: no labels file t10k-labels-idx1-ubyte"):
        _resolved(_with(data={"source": "mnist", "path": str(lonely / "t10k-images-idx3-ubyte"), "n": 1}))
    _write_idx(lonely / "t10k-labels-idx1-ubyte", np.zeros(3))
    with pytest.raises(ConfigError, match="holds 2 images but .* 3 labels"):
        _resolved(_with(data={"source": "mnist", "path": str(lonely / "t10k-images-idx3-ubyte"), "n": 1}))
    junk = tmp_path / "junk-images-idx3-ubyte"
    junk.write_bytes(b"\x08\x03\x00\x00" + bytes(20))
    (tmp_path / "junk-labels-idx1-ubyte").write_bytes(b"")
    with pytest.raises(ConfigError, match="is not an IDX file"):
        _resolved(_with(data={"source": "mnist", "path": str(junk), "n": 1}))
    short = tmp_path / "short"
    short.mkdir()
    images = np.zeros((4, 28, 28), np.uint8)
    _write_idx(short / "train-images-idx3-ubyte", images)
    _write_idx(short / "train-labels-idx1-ubyte", np.zeros(4))
    with open(short / "train-images-idx3-ubyte", "r+b") as fh:  # cut inside the 3rd image
        fh.truncate(16 + 2 * 784 + 100)
    with pytest.raises(ValueError, match="is truncated"):
        data.mnist(str(short), 3)


def test_digits_pixels_is_over_16():
    X, _ = data.digits(30, None, "label", "none", seed=1)
    Xp, _ = data.digits(30, None, "label", "pixels", seed=1)
    np.testing.assert_array_equal(Xp, X / 16.0)
    assert X.max() == 16.0  # the bundled intensities run 0..16


def test_targets_per_source(tmp_path):
    assert config.from_dict(_with()).data.target == "teacher"  # sphere's default
    with pytest.raises(
        ConfigError, match="data.target: required when data.source is 'digits'; allowed: pm1, label"
    ):
        config.from_dict(_with(data={"source": "digits"}))
    _tiny_mnist(tmp_path, gz=False, count=9)
    cfg = config.from_dict(_with(data={"source": "mnist", "path": str(tmp_path), "n": 3}))
    assert cfg.data.target == "label"
    with pytest.raises(ConfigError, match="data.target: 'pm1' is not allowed; allowed: label"):
        config.from_dict(_with(data={"source": "mnist", "path": str(tmp_path), "n": 3, "target": "pm1"}))
    with pytest.raises(
        ConfigError, match=r"data.classes: does not apply to data.source 'mnist' .*\(got \[3, 5\]\)"
    ):
        config.from_dict(_with(data={"source": "mnist", "path": str(tmp_path), "n": 3, "classes": [3, 5]}))
    path, _ = _npz(tmp_path)
    with pytest.raises(
        ConfigError, match="data.target: 'teacher' is not allowed for data.source 'npz' .*onehot"
    ):
        config.from_dict(_with(data={"source": "npz", "path": path, "target": "teacher"}))


# --------------------------------------------------------------------------- data sources as a registry
def test_every_source_is_declared_once_with_its_keys():
    assert list(data.SOURCES) == ["sphere", "digits", "npz", "mnist"]
    for name, src in data.SOURCES.items():
        assert src.name == name and set(src.keys) <= set(data.OPTIONAL_KEYS)
        assert set(src.defaults) <= set(src.keys)
    assert data.PIXEL_MAX == {"digits": 16.0, "mnist": 255.0}
    assert config.from_dict(_with(data={"source": "digits", "target": "label"})).data.d is None
    sph = config.from_dict(_with()).data
    assert (sph.d, sph.noise, sph.teacher_width, sph.n) == (16, 0.0, 64, 64)


def test_load_is_the_source_functions(tmp_path):
    """ntkdyn.data.load / load_held_out call the declared source with the config's values."""
    cfg = config.from_dict(_with(seed=5, data={"n": 12, "d": 3, "target": "smooth", "test": {"n": 4}}))
    X, y = data.load(cfg)
    X0, y0 = data.sphere(12, 3, "smooth", 5)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(y, y0)
    Xt, yt = data.load_held_out(cfg)
    np.testing.assert_array_equal(Xt, data.sphere_test(12, 3, "smooth", 5, 4)[0])
    assert data.load_held_out(config.from_dict(_with())) is None
    assert data.input_dim(cfg) == 3
    path, _ = _npz(tmp_path, n=9, d=4)
    assert data.input_dim(_resolved(_with(data={"source": "npz", "path": path}))) == 4


def test_a_new_source_is_one_declaration(monkeypatch):
    """A toy source registered in SOURCES: the config accepts its keys, refuses the others, and
    load / load_held_out / input_dim / check go through its declaration."""
    calls = []

    def load(d, seed):
        calls.append(("load", d.n, seed))
        return np.ones((d.n, 2)), np.zeros(d.n)

    toy = data.Source(
        name="toy",
        keys=("d",),
        defaults={"d": 2},
        default_n=3,
        load=load,
        load_held_out=lambda d, seed: (np.ones((d.test.n, 2)), np.zeros(d.test.n)),
        input_dim=lambda d: 2,
        validate=lambda d: None,
        check=lambda d: calls.append(("check", d.n)),
    )
    monkeypatch.setitem(data.SOURCES, "toy", toy)
    cfg = _resolved(_with(seed=7, data={"source": "toy", "test": {"n": 2}}))
    assert data.load(cfg)[0].shape == (3, 2) and data.load_held_out(cfg)[0].shape == (2, 2)
    assert calls == [("check", 3), ("load", 3, 7)]
    with pytest.raises(ConfigError, match="data.classes: does not apply to data.source 'toy'"):
        config.from_dict(_with(data={"source": "toy", "classes": [1]}))


def test_config_reads_no_file(tmp_path):
    """config.from_dict checks values only; the file checks are the source's (checks.check_files)."""
    missing = str(tmp_path / "nope.npz")
    cfg = config.from_dict(_with(data={"source": "npz", "path": missing}))
    assert cfg.data.n is None  # unknown until the file is read
    with pytest.raises(ConfigError, match="data.path: file not found"):
        checks.check_files(cfg)
    cfg = config.from_dict(_with(model={"init_params": missing}))
    with pytest.raises(ConfigError, match="model.init_params: file not found"):
        checks.check_files(cfg)
    path, _ = _npz(tmp_path, n=5)
    with pytest.raises(ConfigError, match="train.batch_size: must be in 1..data.n=5"):
        _resolved(_with(data={"source": "npz", "path": path}, train={"batch_size": 6}))


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"X": np.zeros((0, 3)), "y": np.zeros(0)}, r"holds no points \(X has shape \(0, 3\)\)"),
        ({"X": np.zeros((4, 0)), "y": np.zeros(4)}, "holds no features"),
        ({"X": np.zeros((3, 2)), "y": np.array(["a", "b", "c"])}, "y of .*s.npz holds strings"),
        ({"X": np.array([["a"], ["b"]]), "y": np.zeros(2)}, "X of .*s.npz holds strings"),
    ],
)
def test_npz_file_checks_read_headers(tmp_path, arrays, message):
    path = tmp_path / "s.npz"
    np.savez(path, **arrays)
    with pytest.raises(ConfigError, match="data.path: .*" + message):
        _resolved(_with(data={"source": "npz", "path": str(path)}))
    with pytest.raises(ValueError, match="data.path: .*" + message):
        data.from_npz(str(path))


def test_held_out_file_of_another_dimension(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    np.savez(a, X=np.ones((5, 3)), y=np.zeros(5))
    np.savez(b, X=np.ones((4, 2)), y=np.zeros(4))
    raw = _with(data={"source": "npz", "path": str(a), "test": {"path": str(b)}})
    with pytest.raises(
        ConfigError, match="data.test.path: X of .*b.npz has d=2 columns but data.path's X has d=3"
    ):
        _resolved(raw)
    np.savez(b, X=np.ones((4, 3)), y=np.zeros(4))
    assert _resolved(raw).data.test.n == 4  # default: all of the file


# --------------------------------------------------------------------------- keys that do not apply
NOT_APPLYING = [
    (
        {"data": {"source": "digits", "target": "pm1", "d": 5}},
        "data.d: does not apply to data.source 'digits'",
    ),
    (
        {"data": {"source": "digits", "target": "pm1", "noise": 0.1}},
        "data.noise: .* is for data.source sphere",
    ),
    (
        {"data": {"classes": [1, 2]}},
        "data.classes: does not apply to data.source 'sphere'.*data.source digits",
    ),
    (
        {"data": {"target": "smooth", "teacher_width": 8}},
        "data.teacher_width: applies to data.target 'teacher'",
    ),
    ({"data": {"source": "npz", "path": "x.npz", "d": 3}}, "data.d: does not apply to data.source 'npz'"),
    ({"model": {"depth": 3}}, "model.depth: does not apply to model.name 'paper'.*model.name mlp"),
    ({"model": {"name": "mlp", "init_std": 0.5}}, "model.init_std: .*model.name paper, model.name released"),
    ({"model": {"name": "released", "b_std": 0.5}}, "model.b_std: does not apply to model.name 'released'"),
    (
        {"model": {"name": "flax", "module": "m:f", "width": 8}},
        "model.width: does not apply to model.name 'flax'",
    ),
    ({"model": {"module": "m:f"}}, "model.module: .*model.name flax"),
    ({"model": {"name": "mlp", "init": "notebook"}}, "model.init: .*model.name released"),
    ({"train": {"sampling": "shuffle"}}, "train.sampling: applies to mini-batch runs only"),
    ({"theory": {"mc_runs": 10}}, "theory.mc_runs: applies to mini-batch runs only"),
    ({"train": {"sampling_runs": 2}}, "train.sampling_runs: 2 runs of full-batch training are identical"),
    ({"rates": {"window": [0.1, 5]}}, r"rates.window: \[0.1, 5.0\] mixes a fraction and a step"),
    ({"data": {"normalize": "unit"}}, "data.normalize: does not apply to data.source 'sphere'"),
    ({"theory": {"diffrax": False, "rtol": 1e-8}}, "theory.rtol: applies with theory.diffrax true only"),
    ({"theory": {"diffrax": False, "atol": 1e-8}}, "theory.atol: applies with theory.diffrax true only"),
    ({"rates": {"window": [10, 50.5]}}, "rates.window: .* mixes a fraction and a step"),
]


@pytest.mark.parametrize("sections, message", NOT_APPLYING)
def test_keys_that_do_not_apply_are_refused(sections, message):
    with pytest.raises(ConfigError, match=message):
        config.from_dict(_with(**sections))


def test_applicable_keys_are_filled_and_others_left_null():
    cfg = config.from_dict(_with(model={"name": "mlp"}, train={"batch_size": 8}))
    m, t = cfg.model, cfg.train
    assert (m.width, m.depth, m.W_std, m.b_std, m.init_std) == (2048, 2, np.sqrt(2.0), 0.0, None)
    assert (t.sampling, cfg.theory.mc_runs) == ("replacement", 2000)
    full = config.from_dict(_with())
    assert (full.train.sampling, full.theory.mc_runs, full.model.depth) == (None, None, None)
    assert (full.theory.rtol, full.theory.atol, full.data.normalize) == (1e-10, 1e-12, None)
    quiet = config.from_dict(_with(theory={"diffrax": False}))
    assert (quiet.theory.rtol, quiet.theory.atol) == (None, None)
    assert config.from_dict(_with(rates={"window": [100, 500]})).rates.window == [100, 500]
    assert config.from_dict(_with(rates={"window": [0, 0.5]})).rates.window == [0, 0.5]


# --------------------------------------------------------------------------- bad values
@pytest.mark.parametrize(
    "sections, message",
    [
        ({"seed": -1}, "seed: must be an integer >= 0"),
        (
            {"optimizers": [{"name": "gd", "eta": float("nan")}]},
            r"optimizers\[0\].eta: must be a finite number",
        ),
        ({"optimizers": [{"name": "gd", "eta": "inf"}]}, r"optimizers\[0\].eta: must be a finite number"),
        (
            {"optimizers": [{"name": "nag_c", "eta": 0.1, "r": float("nan")}]},
            r"optimizers\[0\].r: must be a finite",
        ),
        ({"data": {"noise": float("nan")}}, "data.noise: must be a finite number"),
        ({"theory": {"rtol": float("inf")}}, "theory.rtol: must be a finite number"),
    ],
)
def test_non_finite_and_negative_values(sections, message):
    with pytest.raises(ConfigError, match=message):
        config.from_dict(_with(**sections))
    assert (
        config.from_dict(_with(train={"divergence_factor": float("inf")})).train.divergence_factor == np.inf
    )


@pytest.mark.parametrize("text", ["[0.1", "{a: 1", "'open", "a: b: c"])
def test_set_value_that_is_not_yaml_is_one_line(text):
    with pytest.raises(ConfigError) as info:
        config.apply_override(copy.deepcopy(MINIMAL), f"optimizers.0.eta={text}")
    message = str(info.value)
    assert message.startswith("--set ") and f"optimizers.0.eta={text}" in message and "is not YAML" in message
    assert "\n" not in message


def test_step_lists_past_the_steps_are_clipped_with_a_note():
    cfg = config.from_dict(_with(train={"steps": 50, "error_at": [0, 20, 80, 100], "kernel_at": [30, 200]}))
    assert cfg.train.error_at == [0, 20, 50] and cfg.train.kernel_at == [0, 30, 50]
    assert cfg.notes == [
        "train.error_at: step(s) 80, 100 past train.steps=50 clipped to 50",
        "train.kernel_at: step(s) 200 past train.steps=50 clipped to 50",
    ]
    again = config.from_dict(yaml.safe_load(config.dump(cfg)))  # config.yaml (with its notes) reads back
    assert again.train == cfg.train and again.notes == []
    assert config.validate(cfg).notes == cfg.notes  # validation is idempotent


# --------------------------------------------------------------------------- eta relative to lambda_max
def test_eta_per_lambda_max():
    cfg = config.from_dict(_with(optimizers=[{"name": "hb", "eta": {"per_lambda_max": 1.5}, "beta": 0.5}]))
    eta = cfg.optimizers[0].eta
    assert eta == config.RelativeStep(1.5) and cfg.optimizers[0].hyper()["eta"] is eta
    assert config.from_dict(yaml.safe_load(config.dump(cfg))) == cfg
    assert config.resolve_eta(eta, 3.0) == 0.5  # eta * lambda_max = 1.5
    assert config.resolve_eta(0.25, 3.0) == 0.25  # a number is used as given
    with pytest.raises(ConfigError, match="needs the kernel's lambda_max > 0"):
        config.resolve_eta(eta, 0.0)
    for bad, message in (
        ({"per_lambda_max": -1.0}, r"optimizers\[0\].eta.per_lambda_max: must be a finite number > 0"),
        ({"per_lambda_max": "x"}, r"optimizers\[0\].eta.per_lambda_max: expected a number"),
        (
            {"per_lambda_max": 1.0, "scale": 2},
            r"optimizers\[0\].eta: unknown key 'scale' beside per_lambda_max",
        ),
    ):
        with pytest.raises(ConfigError, match=message):
            config.from_dict(_with(optimizers=[{"name": "gd", "eta": bad}]))


def test_mnist_npz_with_string_labels_names_key_and_file(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, x_train=np.zeros((3, 28, 28), np.uint8), y_train=np.array(["1", "2", "3"]))
    with pytest.raises(ConfigError, match=r"data.path: y_train of .*m.npz holds strings"):
        _resolved(_with(data={"source": "mnist", "path": str(path), "n": 2}))
