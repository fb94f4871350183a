"""Every bad input named in issue 17 (sections 2-4) gives, before any compute, an error naming the
key or argument and what is allowed: from the command line ONE line on stderr and exit status 2
(run in a subprocess, as a user runs it), from Python (``run_study``, ``run_group``, ``prepare``)
a ``ConfigError`` (a ValueError).

The CLI and Python-entry sections use only the public entry points, so the same file measures the
code before this change (issue 17's closing note: how many of these gave a traceback or a vague
error before and after)."""

import copy
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

import ntkdyn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(ntkdyn.__file__)))
CONFIGS = os.path.join(ROOT, "configs")
TINY = {
    "name": "tiny",
    "seed": 0,
    "dtype": "float64",
    "data": {"source": "sphere", "n": 8, "d": 3},
    "model": {"name": "paper", "width": 16},
    "train": {"steps": 4, "error_at": [0], "kernel_at": [0]},
    "theory": {"diffrax": False},
    "optimizers": [{"name": "gd", "eta": 0.1}],
}


def _tiny(**sections):
    """TINY with sections merged in (``data`` of another source replaces TINY's data section)."""
    raw = copy.deepcopy(TINY)
    for key, value in sections.items():
        other_source = key == "data" and value.get("source", "sphere") != "sphere"
        if isinstance(value, dict) and isinstance(raw.get(key), dict) and not other_source:
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


def _cli(tmp_path, raw, *args, cwd=None, out="default"):
    """``python -m ntkdyn.run`` on ``raw`` (written to tmp_path) in a fresh process."""
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    out_args = (
        ["--out", str(tmp_path / "out")] if out == "default" else ([] if out is None else ["--out", out])
    )
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-m", "ntkdyn.run", str(path), "--quiet", *out_args, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or tmp_path,
        timeout=300,
    )


def _one_line(result, *words):
    """Exit status 2 and ONE stderr line holding every word (the key and what is wrong)."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


# --------------------------------------------------------------------------- command line
def test_cli_out_is_a_file(tmp_path):
    target = tmp_path / "taken"
    target.write_text("x")
    line = _one_line(_cli(tmp_path, _tiny(), out=str(target)), "--out", "is a file")
    assert str(target) in line
    assert target.read_text() == "x"


def test_cli_out_immutable_folder(tmp_path):
    folder = tmp_path / "frozen"
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        _one_line(_cli(tmp_path, _tiny(), out=str(folder / "run")), "--out", "cannot write")
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def _read_only_folder(tmp_path):
    """A folder nobody can write in: chmod 555 (not root), or /sys (read-only for root in a container)."""
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        return str(folder)
    if os.path.isdir("/sys") and not os.access("/sys", os.W_OK):
        return "/sys"
    import tempfile

    try:  # root may write in /sys: then no read-only folder can be made here
        os.close(tempfile.mkstemp(dir="/sys")[0])
    except OSError:
        return "/sys"
    pytest.skip("no read-only folder available")


def test_cli_out_read_only(tmp_path):
    folder = _read_only_folder(tmp_path)
    _one_line(_cli(tmp_path, _tiny(), out=os.path.join(folder, "ntkdyn-run")), "--out", "cannot write")


def test_cli_read_only_working_directory(tmp_path):
    """No --out: the default results/<name>-<time> under a working directory that cannot be written."""
    folder = _read_only_folder(tmp_path)
    _one_line(_cli(tmp_path, _tiny(), cwd=folder, out=None), "--out", "cannot write")


def test_cli_set_value_not_yaml(tmp_path):
    line = _one_line(
        _cli(tmp_path, _tiny(), "--set", "optimizers.0.eta=[0.1"), "optimizers.0.eta=[0.1", "YAML"
    )
    assert "Traceback" not in line


def test_cli_npz_with_empty_X_and_y(tmp_path):
    path = _npz(tmp_path / "empty.npz", X=np.zeros((0, 3)), y=np.zeros(0))
    _one_line(
        _cli(tmp_path, _tiny(data={"source": "npz", "path": path})),
        "data.path",
        "no points",
    )
    assert not (tmp_path / "out" / "config.yaml").exists() and not (tmp_path / "out" / "env.json").exists()


def test_cli_held_out_file_of_another_dimension(tmp_path):
    train = _npz(tmp_path / "a.npz", X=np.ones((6, 3)), y=np.zeros(6))
    other = _npz(tmp_path / "b.npz", X=np.ones((4, 5)), y=np.zeros(4))
    raw = _tiny(data={"source": "npz", "path": train, "test": {"path": other}})
    _one_line(_cli(tmp_path, raw), "data.test.path", "d=5")


@pytest.mark.parametrize("axis", [{"seed": {"range": [3, 3]}}, {"eta": {"linspace": [0.1, 0.2, 0]}}, {}])
def test_cli_empty_sweep_grid(tmp_path, axis):
    _one_line(_cli(tmp_path, {**_tiny(), "sweep": axis}), "sweep")


@pytest.mark.parametrize("value", [".inf", ".nan", "inf", "-.inf"])
def test_cli_eta_not_finite(tmp_path, value):
    _one_line(_cli(tmp_path, _tiny(), "--set", f"optimizers.0.eta={value}"), "optimizers[0].eta", "finite")


def test_cli_string_targets_name_key_and_file(tmp_path):
    path = _npz(tmp_path / "s.npz", X=np.ones((6, 3)), y=np.array(["a", "b", "c", "a", "b", "c"]))
    line = _one_line(_cli(tmp_path, _tiny(data={"source": "npz", "path": path})), "y of")
    assert "s.npz" in line and "data.path" in line and "strings" in line


def test_cli_negative_seed(tmp_path):
    _one_line(_cli(tmp_path, _tiny(seed=-1)), "seed:", ">= 0")


NOT_APPLYING = [
    ({"data": {"source": "digits", "target": "pm1", "d": 5}}, "data.d", "data.source sphere"),
    (
        {"data": {"source": "digits", "target": "pm1", "noise": 0.1}},
        "data.noise",
        "data.source sphere",
    ),
    ({"model": {"name": "paper", "depth": 3}}, "model.depth", "model.name mlp"),
    ({"data": {"classes": [1, 2]}}, "data.classes", "data.source digits"),
    ({"train": {"sampling": "shuffle"}}, "train.sampling", "train.batch_size"),
    ({"theory": {"mc_runs": 100}}, "theory.mc_runs", "train.batch_size"),
    ({"data": {"target": "gaussian", "teacher_width": 8}}, "data.teacher_width", "'teacher'"),
    ({"model": {"name": "mlp", "init_std": 0.5}}, "model.init_std", "model.name paper"),
    ({"model": {"name": "paper", "W_std": 1.0}}, "model.W_std", "model.name mlp"),
    ({"model": {"name": "paper", "kwargs": {"a": 1}}}, "model.kwargs", "model.name flax"),
    ({"rates": {"window": [0.1, 5]}}, "rates.window", "mixes a fraction and a step"),
    ({"data": {"normalize": "standardize"}}, "data.normalize", "data.source digits"),
    ({"theory": {"rtol": 1e-6}}, "theory.rtol", "theory.diffrax true"),
]


@pytest.mark.parametrize("change,key,allowed", NOT_APPLYING, ids=[c[1] for c in NOT_APPLYING])
def test_cli_keys_that_do_not_apply_are_refused(tmp_path, change, key, allowed):
    line = _one_line(_cli(tmp_path, _tiny(**change)), key, allowed)
    assert not (tmp_path / "out").exists(), line


def test_cli_model_with_nan_outputs(tmp_path):
    """model.init_params whose weights are NaN: named before any folder is written or kernel computed."""
    path = _npz(tmp_path / "w.npz", W=np.full((16, 3), np.nan), a=np.ones(16))
    _one_line(_cli(tmp_path, _tiny(model={"init_params": path})), "model:", "not finite")
    assert not (tmp_path / "out").exists()


def test_cli_memory(tmp_path):
    _one_line(_cli(tmp_path, _tiny(), "--set", "model.width=2000000000"), "model.width", "GB")


# --------------------------------------------------------------------------- Python entry points
def _linear_model(d=3, key="w"):
    return ntkdyn.from_apply_fn(lambda p, X: X @ p[key], {key: np.full(d, 0.5)})


PY_CFG = {
    "dtype": "float64",
    "train": {"steps": 4, "error_at": [0], "kernel_at": [0]},
    "theory": {"diffrax": False},
    "optimizers": [{"name": "gd", "eta": 0.1}],
}
X5 = np.random.default_rng(0).standard_normal((6, 5))
Y6 = np.random.default_rng(1).standard_normal(6)


def test_python_memory_check_names_width():
    with pytest.raises(ValueError, match="model.width") as info:
        ntkdyn.run_study({**PY_CFG, "model": {"name": "paper", "width": 2_000_000_000}})
    assert "GB" in str(info.value) and isinstance(info.value, ntkdyn.ConfigError)


def test_python_X_of_the_wrong_dimension():
    with pytest.raises(ValueError, match=r"model: a forward pass on 6 points of X \(d=5\) failed") as info:
        ntkdyn.run_study(PY_CFG, model=_linear_model(d=3), data=(X5, Y6))
    assert isinstance(info.value, ntkdyn.ConfigError)


def test_python_mismatched_widths_in_a_group():
    cfgs = [{**PY_CFG, "model": {"name": "paper", "width": w}} for w in (16, 32)]
    with pytest.raises(ValueError, match=r"configs\[1\]: model.width is 32 but run 0 has 16") as info:
        ntkdyn.run_group(cfgs)
    assert isinstance(info.value, ntkdyn.ConfigError)


def test_python_mismatched_user_models_in_a_group():
    models = [_linear_model(d=5), ntkdyn.from_apply_fn(lambda p, X: X @ p["w"][:5], {"w": np.ones(7)})]
    with pytest.raises(ValueError, match=r"configs\[1\]: model parameter shapes"):
        ntkdyn.run_group([PY_CFG, PY_CFG], models=models, data=[(X5, Y6), (X5, Y6)])


def test_python_model_with_nan_outputs():
    model = ntkdyn.from_apply_fn(lambda p, X: X @ p["w"], {"w": np.full(5, np.nan)})
    with pytest.raises(ValueError, match="model: its outputs at initialisation are not finite") as info:
        ntkdyn.run_study(PY_CFG, model=model, data=(X5, Y6))
    assert isinstance(info.value, ntkdyn.ConfigError)


@pytest.mark.parametrize(
    "X,y",
    [(np.zeros((0, 5)), np.zeros(0)), (np.zeros((6, 0)), np.zeros(6))],
    ids=["no-points", "no-features"],
)
def test_python_empty_arrays(X, y):
    with pytest.raises(ValueError, match="data: X is empty") as info:
        ntkdyn.run_study(PY_CFG, data=(X, y))
    assert isinstance(info.value, ntkdyn.ConfigError)


def test_python_params_missing_a_key():
    model, _, consts = _linear_model(d=5, key="w")
    with pytest.raises(
        ValueError, match=r"model: the model reads params\['w'\], which the params do not have"
    ) as info:
        ntkdyn.run_study(PY_CFG, model=(model, {"v": np.ones(5)}, consts), data=(X5, Y6))
    assert isinstance(info.value, ntkdyn.ConfigError)


def test_python_out_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ValueError, match="out: .* is a file") as info:
        ntkdyn.run_study(PY_CFG, data=(X5, Y6), out=str(target))
    assert isinstance(info.value, ntkdyn.ConfigError)


def test_python_prepare_checks_the_model(tmp_path):
    """``prepare`` (the stage entry) runs the same input checks before any kernel."""
    cfg = ntkdyn.load_config(_write(tmp_path, PY_CFG))
    model = ntkdyn.from_apply_fn(lambda p, X: X @ p["w"], {"w": np.full(5, np.inf)})
    with pytest.raises(ValueError, match="model: its outputs at initialisation are not finite"):
        ntkdyn.prepare(cfg, (X5, Y6), model)


def _write(tmp_path, raw):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


# --------------------------------------------------------------------------- issue 17 section 4
@pytest.mark.parametrize("name", ["quickstart", "deep_mlp", "control"])
def test_set_train_steps_500_on_shipped_configs(name):
    """``--set train.steps=500`` (the README's example): error_at / kernel_at steps past 500 are
    clipped to 500, with a note that names each clipped key (recorded in config.yaml)."""
    from ntkdyn import checks, config

    raw = config.apply_override(config.load_raw(os.path.join(CONFIGS, f"{name}.yaml")), "train.steps=500")
    cfg = checks.check_files(config.from_dict(raw))
    assert cfg.train.steps == 500
    for key in ("error_at", "kernel_at"):
        values = getattr(cfg.train, key)
        assert max(values) == 500 and min(values) == 0 and values == sorted(set(values))
        original = raw["train"][key]
        assert [v for v in original if v < 500] == [v for v in values if v < 500]  # the others kept
        if max(original) > 500:
            assert any(note.startswith(f"train.{key}:") and "clipped to 500" in note for note in cfg.notes)
    assert "notes" in yaml.safe_load(config.dump(cfg))
    again = config.from_dict(yaml.safe_load(config.dump(cfg)))  # config.yaml reads back
    assert again.train.error_at == cfg.train.error_at and again.train.kernel_at == cfg.train.kernel_at


def test_cli_python_dash_m_ntkdyn_runs_the_cli(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    r = subprocess.run(
        [sys.executable, "-m", "ntkdyn", "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode == 0 and "python -m ntkdyn.run" in r.stdout and "--set" in r.stdout
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_tiny(seed=-1)))
    r = subprocess.run(
        [sys.executable, "-m", "ntkdyn", str(path)], capture_output=True, text=True, env=env, timeout=120
    )
    _one_line(r, "seed")


# --------------------------------------------------------------------------- checks.py directly
def test_check_out_folder_accepts_new_and_writable_folders_and_leaves_nothing(tmp_path):
    from ntkdyn import checks

    checks.check_out_folder(str(tmp_path))  # an existing writable folder
    checks.check_out_folder(str(tmp_path / "a" / "b"), "out")  # to be made under a writable one
    assert sorted(os.listdir(tmp_path)) == []  # the probe is removed, nothing is made
    (tmp_path / "f").write_text("x")
    with pytest.raises(checks.InputError, match="out: .*/f is a file, so the folder .* cannot be made"):
        checks.check_out_folder(str(tmp_path / "f" / "run"), "out")


def test_check_group_and_memory_name_what_differs():
    from ntkdyn import checks, config, memory

    cfgs = [config.from_dict({**PY_CFG, "model": {"name": "paper", "width": 8}}) for _ in range(2)]
    checks.check_group(cfgs)  # equal shapes
    cfgs[1].train.steps = 8
    with pytest.raises(checks.InputError, match=r"configs\[1\]: train is .*'steps': 8"):
        checks.check_group(cfgs)
    est = checks.check_memory(cfgs[0], 3, X5, {"w": np.ones(5)})
    assert (est.n, est.d, est.params, est.runs) == (6, 5, 5, 3)  # n, d of X; P of the given params
    assert issubclass(memory.TooLarge, ntkdyn.ConfigError)
