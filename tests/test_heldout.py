"""Held-out points (data.test / test_data=): the recorded held-out loss and its kernel prediction.

Each prediction is compared with something computed another way: training the jvp linearisation
of the network and reading its outputs on the held-out points; a hand-written numpy loop on a
linear model (where the NTK is exact); a numpy evaluation of the trained network.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

import ntkdyn
from ntkdyn import checks, config, data, linearized, models, optimizers, pipeline, theory, train
from ntkdyn.run import main

OPTS = [{"name": "gd", "eta": 0.5}, {"name": "hb", "eta": 0.3, "beta": 0.6}]


def _cfg(**over):
    raw = {
        "seed": 3,
        "dtype": "float64",
        "data": {"source": "sphere", "n": 10, "d": 4, "test": {"n": 6}},
        "model": {"name": "paper", "width": 48},
        "train": {"steps": 30, "record_every": 3},
        "theory": {"diffrax": False, "linearized": "never"},
        "optimizers": OPTS,
    }
    raw.update(over)
    return raw


# --------------------------------------------------------------------------- (1) vs the linearisation
@pytest.mark.parametrize("index", [0, 1], ids=["gd", "hb"])
def test_prediction_equals_trained_linearisation(index):
    """e_test(k) = e_test(0) + K_x K^+ (e_k - e_0) from the kernel recurrence equals the outputs of
    the network's jvp linearisation trained by optax (parameter space, ``linearized``) on the
    held-out points: the final error vector, and the recorded held-out loss at every recorded step."""
    cfg = config.from_dict(_cfg())
    with jax.enable_x64(True):
        setup = pipeline.prepare(cfg)
        oc = cfg.optimizers[index]
        spec = optimizers.get(oc.name)
        hyper = pipeline.optimizer_hyper(setup, oc)
        lin = pipeline.train_linearized(cfg, setup, spec, hyper)
        model = linearized.linearize(setup.model)
        consts = linearized.linear_consts(setup.params, setup.consts)
        e_lin = np.asarray(model.apply(lin.final_params, consts, jnp.asarray(setup.X_test)) - setup.y_test)
    assert lin.diverged_at is None
    modes = theory.discrete_modes(spec, hyper, setup.lam, setup.coef, cfg.train.steps)
    errors = theory.held_out_errors(modes, setup.coef, setup.test_map, setup.e0_test)
    moved = np.linalg.norm(e_lin - setup.e0_test)
    assert moved > 0.1 * np.linalg.norm(setup.e0_test)  # the held-out outputs did move
    np.testing.assert_allclose(errors[-1], e_lin, rtol=0, atol=1e-11 * np.linalg.norm(setup.e0_test))
    pred_loss = theory.modal_loss(errors[lin.step], setup.c_test)
    np.testing.assert_allclose(pred_loss, lin.test_loss, rtol=1e-10)


def test_prediction_through_evaluate_and_hinf_kernel():
    """Through the run path: test_loss_discrete equals the trained linearisation's held-out loss
    (theory.linearized: always); with theory.kernel Hinf the cross kernel is the arc-cosine H∞
    block (numpy formula of the paper) and the map uses it."""
    raw = _cfg(theory={"diffrax": False, "linearized": "always"}, optimizers=OPTS[1:])
    run = ntkdyn.run_study(raw)
    t = run["hb"].trajectory
    np.testing.assert_allclose(t["test_loss_discrete"], t["test_loss_linearized"], rtol=1e-10)
    assert run["hb"].test.deviation["linearized"] == pytest.approx(run["hb"].test.deviation["discrete"])
    cfg = config.from_dict(_cfg(theory={"kernel": "Hinf", "diffrax": False}))
    with jax.enable_x64(True):
        setup = pipeline.prepare(cfg)
    X, Xt = setup.X, setup.X_test
    cos = np.clip(Xt @ X.T, -1, 1)  # unit vectors
    np.testing.assert_allclose(setup.H_test, cos * (np.pi - np.arccos(cos)) / (2 * np.pi), atol=1e-12)


# --------------------------------------------------------------------------- (2) vs numpy, linear model
def _numpy_linear_run(X, y, Xt, yt, w0, eta, beta, steps):
    """Heavy ball (beta = 0: GD) on L = 1/2 ||X w - y||^2 in the optax form v = beta v + g,
    w -= eta v; the held-out loss 1/2 ||X_t w - y_t||^2 after every step (index k = step k)."""
    w, v = w0.copy(), np.zeros_like(w0)
    out = [0.5 * np.sum((Xt @ w - yt) ** 2)]
    for _ in range(steps):
        g = X.T @ (X @ w - y)
        v = beta * v + g
        w = w - eta * v
        out.append(0.5 * np.sum((Xt @ w - yt) ** 2))
    return np.asarray(out)


def test_linear_model_against_numpy_loop():
    """f = X w: the NTK is exactly K = X X^T (rank d < n: singular, the pseudo-inverse path) and
    training is linear, so the recorded held-out loss and its kernel prediction (recurrence and
    cross kernel K_x = X_t X^T from ntkdyn's own kernel code) both equal a numpy loop."""
    rng = np.random.default_rng(0)
    n, d, nt = 9, 3, 5
    X, Xt = rng.standard_normal((n, d)), rng.standard_normal((nt, d))
    w_true = rng.standard_normal(d)
    y = X @ w_true + 0.3 * rng.standard_normal(n)  # not interpolable: L* > 0
    yt = Xt @ w_true + 0.3 * rng.standard_normal(nt)
    w0 = 0.1 * rng.standard_normal(d)
    model = ntkdyn.from_apply_fn(lambda p, Z: Z @ p["w"], {"w": jnp.asarray(w0)})
    lam_max = np.linalg.eigvalsh(X.T @ X)[-1]
    steps = 40
    run = ntkdyn.run_study(
        {
            "dtype": "float64",
            "train": {"steps": steps, "record_every": 2},
            "theory": {"diffrax": False},
            "optimizers": [
                {"name": "gd", "eta": 1.0 / lam_max},
                {"name": "hb", "eta": 0.5 / lam_max, "beta": 0.5},
            ],
        },
        model=model,
        data=(X, y),
        test_data=(Xt, yt),
    )
    np.testing.assert_allclose(run.kernels["H_test"], Xt @ X.T, rtol=1e-12, atol=1e-12)
    for label, eta, beta in (("gd", 1.0 / lam_max, 0.0), ("hb", 0.5 / lam_max, 0.5)):
        ref = _numpy_linear_run(X, y, Xt, yt, w0, eta, beta, steps)[::2]
        t = run[label].trajectory
        np.testing.assert_allclose(t["test_loss"], ref, rtol=1e-11)
        np.testing.assert_allclose(t["test_loss_discrete"], ref, rtol=1e-10)
        assert ref[-1] < 0.5 * ref[0]
        assert run[label].test.loss_final == pytest.approx(ref[-1], rel=1e-11)


# --------------------------------------------------------------------------- (3) config errors
NPZ = {"source": "npz", "path": "NPZ", "n": 20}


@pytest.mark.parametrize(
    "section, message",
    [
        ({"test": {"n": 0}}, "data.test.n: must be >= 1, got 0"),
        ({"test": {}}, "data.test.n: required for data.source 'sphere'"),
        ({"test": {"n": 4, "path": "x.npz"}}, "data.test.path: not used for data.source 'sphere'"),
        ({"test": 5}, "data.test: expected a mapping"),
        ({"test": {"size": 4}}, "unknown key 'data.test.size'"),
        ({"source": "digits", "target": "pm1", "n": 64, "test": {"n": 1750}}, "data.test.n: data.n=64 + "),
        ({**NPZ, "test": {"n": 11}}, "data.test.n: data.n=20 + data.test.n=11 is more than the 30 points"),
        ({**NPZ, "n": None, "test": {"n": 5}}, "data.test.n: data.n=30 + data.test.n=5"),
        ({**NPZ, "test": {"path": "missing.npz"}}, "data.test.path: not found"),
        ({**NPZ, "test": {"path": "NPZ"}}, "is data.path itself"),
        ({**NPZ, "test": {"path": "BAD", "n": 3}}, "has no array 'X'"),
        ({**NPZ, "test": {"path": "OTHER", "n": 9}}, "data.test.n: 9 is more than the 8 points"),
    ],
)
def test_bad_held_out_config(tmp_path, section, message):
    """Each bad data.test is a ConfigError naming the key, raised by the config parser (before any
    data is loaded or anything computed)."""
    rng = np.random.default_rng(0)
    paths = {name: str(tmp_path / f"{name}.npz") for name in ("NPZ", "OTHER", "BAD")}
    np.savez(paths["NPZ"], X=rng.standard_normal((30, 3)), y=rng.standard_normal(30))
    np.savez(paths["OTHER"], X=rng.standard_normal((8, 3)), y=rng.standard_normal(8))
    np.savez(paths["BAD"], Z=np.zeros(3))
    section = {k: paths.get(v, v) if k == "path" else v for k, v in section.items() if v is not None}
    if isinstance(section.get("test"), dict) and "path" in section["test"]:
        section["test"] = {
            **section["test"],
            "path": paths.get(section["test"]["path"], section["test"]["path"]),
        }
    with pytest.raises(config.ConfigError) as info:
        checks.check_files(config.from_dict({"data": section, "optimizers": OPTS}))
    assert message in str(info.value) and str(info.value).startswith(("data.test", "unknown key 'data.test"))


def test_held_out_given_twice_or_misshapen():
    with pytest.raises(config.ConfigError, match="data.test: given both"):
        ntkdyn.run_study(_cfg(), test_data=(np.zeros((3, 4)), np.zeros(3)))
    raw = _cfg()
    raw["data"] = {k: v for k, v in raw["data"].items() if k != "test"}
    with pytest.raises(ValueError, match="test_data: X_test has d=5 columns but the training X has d=4"):
        ntkdyn.run_study(raw, test_data=(np.zeros((3, 5)), np.zeros(3)))
    with pytest.raises(ValueError, match="test_data: X and y must be finite"):
        ntkdyn.run_study(raw, test_data=(np.full((3, 4), np.nan), np.zeros(3)))


def test_held_out_points_are_disjoint_and_from_the_same_teacher(tmp_path):
    """sphere: the training set is unchanged; the held-out points are new points labelled by the
    training set's teacher (re-drawn here by hand from the training stream: W, a after X, targets
    centred and scaled by the training sample). npz: the held-out rows are the next ones of the
    seeded order, none shared with training (all 25 rows are used exactly once)."""
    X, y = data.sphere(20, 5, "teacher", 7)
    Xt, yt = data.sphere_test(20, 5, "teacher", 7, 30)
    X2, y2 = data.sphere(20, 5, "teacher", 7)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    assert np.min(np.linalg.norm(Xt[:, None] - X[None], axis=-1)) > 1e-3
    # the same teacher: recompute the teacher from the training stream and label the test points
    rng = np.random.default_rng(7)
    data.unit_sphere(rng, 20, 5)
    W, a = rng.standard_normal((64, 5)), rng.standard_normal(64)
    raw = lambda Z: np.maximum(Z @ W.T, 0) @ a / 8.0  # noqa: E731
    r = raw(X)
    np.testing.assert_allclose(yt, (raw(Xt) - r.mean()) / r.std(), rtol=1e-12)
    path = tmp_path / "d.npz"
    rng = np.random.default_rng(1)
    Xa = rng.standard_normal((25, 3))
    np.savez(path, X=Xa, y=np.arange(25.0))
    cfg = config.from_dict(
        {
            "seed": 2,
            "data": {"source": "npz", "path": str(path), "n": 15, "test": {"n": 10}},
            "optimizers": OPTS,
        }
    )
    (_, ytr), (_, yte) = pipeline.load_data(cfg), pipeline.load_test_data(cfg)
    assert sorted(np.concatenate([ytr, yte]).tolist()) == list(np.arange(25.0))  # disjoint, all rows


# --------------------------------------------------------------------------- (4) recorded = numpy
def _numpy_paper_loss(params, consts, Xt, yt):
    W, a = np.asarray(params["W"]), np.asarray(consts["a"])
    f = np.maximum(Xt @ W.T, 0.0) @ a / np.sqrt(W.shape[0])
    return 0.5 * np.sum((f - yt) ** 2)


@pytest.mark.parametrize(
    "plan",
    [
        train.TrainPlan(24, 1),
        train.TrainPlan(24, 4, error_at=(6,), snapshot_at=(0, 24)),  # an error step inside a group
        train.TrainPlan(24, 4, batch_size=4),
    ],
    ids=["every-step", "careful-group", "mini-batch"],
)
def test_recorded_held_out_loss_is_the_trained_model_on_the_test_set(plan):
    """The held-out loss recorded at the final step equals a numpy evaluation of the trained
    network's final parameters on the held-out set, for two runs trained as one program; without a
    held-out set the training loss is unchanged and nothing is recorded."""
    X, y = data.sphere(10, 4, "teacher", 0)
    Xt, yt = data.sphere_test(10, 4, "teacher", 0, 7)
    params, consts = models.paper_init(jax.random.PRNGKey(0), 4, 32, 1.0, jnp.float64)
    spec = optimizers.get("hb")
    hypers = [{"eta": 0.4, "beta": 0.5}, {"eta": 0.2, "beta": 0.3}]
    keys = [jax.random.PRNGKey(1), jax.random.PRNGKey(2)] if plan.batch_size else None
    args = (
        models.PAPER,
        spec,
        hypers,
        1.0,
        plan,
        [params] * 2,
        [consts] * 2,
        [jnp.asarray(X)] * 2,
        [jnp.asarray(y)] * 2,
    )
    with jax.enable_x64(True):
        runs = train.train_batch(*args, keys=keys, test=[(Xt, yt)] * 2)
        plain = train.train_batch(*args, keys=keys)
    for r, p in zip(runs, plain):
        assert r.test_loss.shape == r.loss.shape
        assert r.test_loss[-1] == pytest.approx(_numpy_paper_loss(r.final_params, consts, Xt, yt), rel=1e-12)
        assert r.test_loss[0] == pytest.approx(_numpy_paper_loss(params, consts, Xt, yt), rel=1e-12)
        np.testing.assert_array_equal(r.loss, p.loss)
        assert p.test_loss is None
    assert runs[0].test_loss[-1] != runs[1].test_loss[-1]


def test_held_out_loss_stops_at_divergence():
    X, y = data.sphere(10, 4, "teacher", 0)
    Xt, yt = data.sphere_test(10, 4, "teacher", 0, 5)
    params, consts = models.paper_init(jax.random.PRNGKey(0), 4, 32, 1.0, jnp.float64)
    with jax.enable_x64(True):
        r = train.train(
            models.PAPER,
            optimizers.get("gd"),
            {"eta": 40.0},
            1.0,
            train.TrainPlan(20, 2),
            params,
            consts,
            jnp.asarray(X),
            jnp.asarray(y),
            test=(Xt, yt),
        )
    assert r.diverged_at is not None
    np.testing.assert_array_equal(np.isnan(r.test_loss), np.isnan(r.loss))
    assert np.isfinite(r.test_loss[0])


# --------------------------------------------------------------------------- CLI
def test_cli_writes_held_out_columns(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    raw = _cfg(name="held", optimizers=OPTS[:1])
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    assert main([str(path), "--out", str(out), "--quiet"]) == 0
    table = capsys.readouterr().out.splitlines()  # head, rule, one row per optimizer
    assert "held-out discrete" in table[0] and "held-out ode" in table[0]
    traj = np.load(out / "trajectories.npz")
    assert {"gd/test_loss", "gd/test_loss_discrete", "gd/test_loss_ode"} <= set(traj.files)
    assert traj["gd/test_loss"].shape == traj["gd/step"].shape
    header = (out / "loss.csv").read_text().splitlines()[0].split(",")
    assert {"test_loss", "test_loss_discrete"} <= set(header)
    metrics = json.loads((out / "metrics.json").read_text())["optimizers"]["gd"]["test"]
    assert metrics["n"] == 6 and metrics["loss_final"] == pytest.approx(traj["gd/test_loss"][-1])
    row = table[2].split()  # ..., held-out discrete, held-out ode, log10 gap, drift
    assert row[0] == "gd" and float(row[-3]) == float(f"{metrics['deviation']['ode']:.3g}")
    assert float(row[-4]) == float(f"{metrics['deviation']['discrete']:.3g}")
    saved = np.load(out / "data.npz")
    assert saved["X_test"].shape == (6, 4) and np.load(out / "kernels.npz")["H_test"].shape == (6, 10)
    run = ntkdyn.load(str(out))
    assert run["gd"].test.n == 6 and "test_loss_discrete" in run.table(pandas=False)


# --------------------------------------------------------------------------- file sources
def _idx(path, array: np.ndarray) -> None:
    """A uint8 IDX file (LeCun's format: 0 0 0x08 ndim, big-endian uint32 sizes, data)."""
    sizes = b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    path.write_bytes(bytes([0, 0, 0x08, array.ndim]) + sizes + array.astype(np.uint8).tobytes())


def test_mnist_held_out_after_training_images_or_from_t10k(tmp_path):
    rng = np.random.default_rng(0)
    train_img, train_lab = rng.integers(0, 256, (9, 28, 28)), rng.integers(0, 10, 9)
    t10k_img, t10k_lab = rng.integers(0, 256, (4, 28, 28)), rng.integers(0, 10, 4)
    _idx(tmp_path / "train-images-idx3-ubyte", train_img)
    _idx(tmp_path / "train-labels-idx1-ubyte", train_lab)
    _idx(tmp_path / "t10k-images-idx3-ubyte", t10k_img)
    _idx(tmp_path / "t10k-labels-idx1-ubyte", t10k_lab)
    base = {"source": "mnist", "path": str(tmp_path), "n": 5}
    cfg = checks.check_files(config.from_dict({"data": {**base, "test": {"n": 3}}, "optimizers": OPTS}))
    Xt, yt = pipeline.load_test_data(cfg)
    np.testing.assert_array_equal(Xt, train_img[5:8].reshape(3, -1) / 255.0)
    np.testing.assert_array_equal(yt, train_lab[5:8])
    t10k = str(tmp_path / "t10k-images-idx3-ubyte")
    cfg = checks.check_files(config.from_dict({"data": {**base, "test": {"path": t10k}}, "optimizers": OPTS}))
    assert cfg.data.test.n == 4  # default: all of the file
    Xt, yt = pipeline.load_test_data(cfg)
    np.testing.assert_array_equal(Xt, t10k_img.reshape(4, -1) / 255.0)
    np.testing.assert_array_equal(yt, t10k_lab)
    with pytest.raises(
        config.ConfigError, match="data.test.n: data.n=5 \\+ data.test.n=5 is more than the 9"
    ):
        checks.check_files(config.from_dict({"data": {**base, "test": {"n": 5}}, "optimizers": OPTS}))
    same = str(tmp_path / "train-images-idx3-ubyte")
    with pytest.raises(config.ConfigError, match="data.test.path: .* holds the training images"):
        checks.check_files(config.from_dict({"data": {**base, "test": {"path": same}}, "optimizers": OPTS}))


def test_standardize_uses_the_training_statistics(tmp_path):
    """npz with normalize standardize: held-out points of another file are standardized with the
    training file's column means and stds (not their own)."""
    rng = np.random.default_rng(3)
    X, Xo = rng.normal(2.0, 3.0, (20, 3)), rng.normal(-1.0, 0.5, (6, 3))
    np.savez(tmp_path / "a.npz", X=X, y=np.zeros(20))
    np.savez(tmp_path / "b.npz", X=Xo, y=np.ones(6))
    section = {"source": "npz", "path": str(tmp_path / "a.npz"), "normalize": "standardize"}
    cfg = config.from_dict(
        {"data": {**section, "test": {"path": str(tmp_path / "b.npz")}}, "optimizers": OPTS}
    )
    Xt, yt = pipeline.load_test_data(cfg)
    np.testing.assert_allclose(Xt, (Xo - X.mean(0)) / X.std(0), rtol=1e-13)
    np.testing.assert_array_equal(yt, np.ones(6))
    Xtr, _ = pipeline.load_data(cfg)
    np.testing.assert_allclose(Xtr.mean(0), 0.0, atol=1e-13)  # the training points themselves unchanged


def test_digits_held_out_are_the_next_of_the_seeded_order():
    from sklearn.datasets import load_digits

    section = {"source": "digits", "target": "label", "n": 30, "normalize": "none", "test": {"n": 20}}
    cfg = config.from_dict({"seed": 4, "data": section, "optimizers": OPTS})
    (X, _), (Xt, yt) = pipeline.load_data(cfg), pipeline.load_test_data(cfg)
    digits = load_digits()
    order = np.random.default_rng(4).permutation(len(digits.target))
    np.testing.assert_array_equal(X, digits.data[order[:30]])
    np.testing.assert_array_equal(Xt, digits.data[order[30:50]])
    np.testing.assert_array_equal(yt, digits.target[order[30:50]])
