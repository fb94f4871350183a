"""The released notebook's setting (ShiyunXu/NTK_Optimizer): the ``released`` model's init, its
training against an independent numpy reimplementation of the notebook step
(``tools/check_released.py``, no PyTorch), and NAG-C in torch form (velocity from update 2)."""

import importlib.util
import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from ntkdyn import config, models, optimizers, pipeline, theory
from ntkdyn.config import ConfigError
from ntkdyn.train import TrainPlan, train

_TOOL = pathlib.Path(__file__).resolve().parents[1] / "tools" / "check_released.py"
_spec = importlib.util.spec_from_file_location("check_released", _TOOL)
check = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("check_released", check)  # dataclasses look their module up there
_spec.loader.exec_module(check)


# --------------------------------------------------------------------------- init
def test_notebook_init_distributions():
    """W ~ N(0, (1/m)^2), b ~ U(-1/sqrt d, 1/sqrt d) (PyTorch's Linear default, kept by the notebook),
    a ~ U(-1, 1); no other parameters (the second layer has no bias)."""
    d, m = 49, 3000
    p, consts = models.released_init(jax.random.PRNGKey(0), d, m, None, jnp.float64, "notebook")
    assert set(p) == {"W", "b", "a"} and consts == {}
    assert p["W"].shape == (m, d) and p["b"].shape == (m,) and p["a"].shape == (m,)
    W, b, a = (np.asarray(p[k]) for k in ("W", "b", "a"))
    assert stats.kstest(W.ravel() * m, "norm").pvalue > 1e-3
    assert np.std(W) * m == pytest.approx(1.0, rel=0.01)  # 147k draws: std error 0.2%
    bound = 1.0 / math.sqrt(d)  # 1/7
    assert np.all(np.abs(b) <= bound) and np.max(np.abs(b)) > 0.95 * bound
    assert stats.kstest(b, "uniform", args=(-bound, 2 * bound)).pvalue > 1e-3
    assert stats.kstest(a, "uniform", args=(-1.0, 2.0)).pvalue > 1e-3
    # the earlier ntkdyn init, kept by name: the bias is Gaussian with the weight's std
    pg, _ = models.released_init(jax.random.PRNGKey(0), d, m, None, jnp.float64, "gaussian_bias")
    bg = np.asarray(pg["b"])
    assert stats.kstest(bg * m, "norm").pvalue > 1e-3
    # init_std overrides the first-layer weight std only (notebook init)
    p2, _ = models.released_init(jax.random.PRNGKey(0), d, m, 0.5, jnp.float64, "notebook")
    assert np.std(np.asarray(p2["W"])) == pytest.approx(0.5, rel=0.01)
    assert np.all(np.abs(np.asarray(p2["b"])) <= bound)
    with pytest.raises(ValueError, match="model.init: unknown 'torch'.*notebook, gaussian_bias"):
        models.released_init(jax.random.PRNGKey(0), d, m, None, jnp.float64, "torch")


def test_model_init_config():
    base = {"optimizers": [{"name": "gd", "eta": 0.1}]}
    assert config.from_dict({**base, "model": {"name": "released"}}).model.init == "notebook"
    cfg = config.from_dict({**base, "model": {"name": "released", "init": "gaussian_bias"}})
    assert cfg.model.init == "gaussian_bias"
    with pytest.raises(
        ConfigError, match="model.init: 'uniform' is not allowed; allowed: notebook, gaussian_bias"
    ):
        config.from_dict({**base, "model": {"name": "released", "init": "uniform"}})
    with pytest.raises(
        ConfigError, match="model.init: does not apply to model.name 'paper'.*is for model.name released"
    ):
        config.from_dict({**base, "model": {"name": "paper", "init": "notebook"}})
    assert config.from_dict(base).model.init is None


# ---------------------------------------------------------------------- training vs the notebook in numpy
def _setup(n=60, width=96, steps=40, opt=None, dtype="float64"):
    raw = check.digits_config(n, width, 1e-3, steps, dtype, 0, opt or {"name": "gd"})
    cfg = config.from_dict(raw)
    X, y = pipeline.load_data(cfg)
    model, params, consts = pipeline.build_model(cfg, X.shape[1])
    return cfg, X, y, model, params, consts


def test_digits_setting_is_pixels_over_16_and_digit_targets():
    cfg, X, y, *_ = _setup()
    assert cfg.data.normalize == "pixels" and cfg.model.init == "notebook"
    assert X.shape == (60, 64) and 0.0 <= X.min() and X.max() <= 1.0
    np.testing.assert_array_equal(X * 16, np.round(X * 16))  # integer intensities 0..16
    assert set(np.unique(y)) <= set(range(10)) and len(np.unique(y)) > 5


@pytest.mark.parametrize("opt", [{"name": "gd"}, {"name": "hb", "beta": 0.8}, {"name": "nag_c", "r": 3.0}])
def test_training_equals_numpy_notebook_step(opt):
    """ntkdyn's full-batch training of the released model (float64) = the notebook's step written in
    numpy by hand (forward, MSE, backward, torch SGD), from the same initial parameters."""
    steps, lr = 40, 1e-3
    cfg, X, y, model, params, consts = _setup(steps=steps, opt=opt)
    spec = optimizers.get(opt["name"])
    res = train(
        model,
        spec,
        optimizers.resolve_hyper(spec, cfg.optimizers[0].hyper()),
        2.0 / len(y),
        TrainPlan(steps),
        params,
        consts,
        jnp.asarray(X),
        jnp.asarray(y),
    )
    mom, nest = check.notebook_momentum(opt)
    ref = check.notebook_train({k: np.asarray(v) for k, v in params.items()}, X, y, lr, steps, mom, nest)
    assert ref[-1] < 0.5 * ref[0]  # it trained
    np.testing.assert_allclose(res.loss, ref, rtol=1e-10)


def test_notebook_numpy_gradient_is_the_gradient():
    """The hand-written backward pass of the reference against central differences."""
    _, X, y, _, params, _ = _setup(n=12, width=8)
    p = {k: np.asarray(v) for k, v in params.items()}
    _, g = check.notebook_loss_and_grads(p, X, y)
    rng = np.random.default_rng(0)
    for name in ("W", "b", "a"):
        D = rng.standard_normal(p[name].shape)
        h = 1e-6
        plus = check.notebook_loss_and_grads({**p, name: p[name] + h * D}, X, y)[0]
        minus = check.notebook_loss_and_grads({**p, name: p[name] - h * D}, X, y)[0]
        assert (plus - minus) / (2 * h) == pytest.approx(np.sum(g[name] * D), rel=1e-6)


# --------------------------------------------------------------------------- NAG-C, torch form
def test_nag_c_first_steps_are_torchs():
    """torch.optim.SGD(nesterov=True), momentum (k-1)/(k+r-1) set before step k: step 1 has momentum 0
    and creates no buffer; step 2 creates it as buf = g_2, so theta_2 = theta_1 - lr (1 + beta_2) g_2
    (not theta_1 - lr (g_2 + beta_2 (beta_2 g_1 + g_2))); step 3: buf = beta_3 g_2 + g_3."""
    r, lr = 3.0, 1e-3
    cfg, X, y, model, params, consts = _setup(steps=3, opt={"name": "nag_c", "r": r})
    spec = optimizers.get("nag_c")
    res = train(
        model,
        spec,
        {"eta": lr, "r": r},
        2.0 / len(y),
        TrainPlan(3, snapshot_at=(0, 1, 2, 3)),
        params,
        consts,
        jnp.asarray(X),
        jnp.asarray(y),
    )
    got = [{k: np.asarray(v[i]) for k, v in res.snapshots.items()} for i in range(4)]

    def grad(p):
        return check.notebook_loss_and_grads(p, X, y)[1]

    def step(p, d):
        return {k: p[k] - lr * d[k] for k in p}

    b2, b3 = 1 / (r + 1), 2 / (r + 2)
    th0 = {k: np.asarray(v) for k, v in params.items()}
    g1 = grad(th0)
    th1 = step(th0, g1)
    g2 = grad(th1)
    th2 = step(th1, {k: (1 + b2) * g2[k] for k in g2})
    g3 = grad(th2)
    buf3 = {k: b3 * g2[k] + g3[k] for k in g3}
    th3 = step(th2, {k: g3[k] + b3 * buf3[k] for k in g3})
    for want, have in zip((th0, th1, th2, th3), got):
        for k in want:
            np.testing.assert_allclose(have[k], want[k], rtol=1e-12, atol=1e-15)
    # the form whose buffer starts at step 1 (v_1 = g_1) is measurably different at step 2
    th2_alt = step(th1, {k: g2[k] + b2 * (b2 * g1[k] + g2[k]) for k in g2})
    assert np.max(np.abs(th2_alt["a"] - th2["a"])) > 1e3 * np.max(np.abs(got[2]["a"] - th2["a"])) + 1e-12


@pytest.mark.parametrize("r", [2.0, 3.0, 8.0])
def test_nag_c_recurrence_is_the_eliminated_three_term_form(r):
    """Per mode, eliminating the velocity from the torch form gives e_1 = (1 - h) e_0,
    e_2 = (1 - h (1 + b_2)) e_1 and for k >= 2 e_{k+1} = (1 - h (1 + b_{k+1}) + q) e_k - q (1 - h) e_{k-1},
    q = b_{k+1}^2 / b_k, b_k = (k-1)/(k+r-1), h = eta lam."""
    lam = np.array([1e-3, 0.05, 0.4, 1.3])
    coef = np.array([1.0, -0.7, 0.3, 2.0])
    eta, steps = 0.7, 300
    got = theory.discrete_modes(optimizers.get("nag_c"), {"eta": eta, "r": r}, lam, coef, steps)
    h = eta * lam
    b = lambda k: (k - 1) / (k + r - 1)
    ref = np.empty((steps + 1, lam.size))
    ref[0] = coef
    ref[1] = (1 - h) * coef
    ref[2] = (1 - h * (1 + b(2))) * ref[1]
    for k in range(2, steps):
        q = b(k + 1) ** 2 / b(k)
        ref[k + 1] = (1 - h * (1 + b(k + 1)) + q) * ref[k] - q * (1 - h) * ref[k - 1]
    scale = np.max(np.abs(ref), axis=0)
    np.testing.assert_allclose(got / scale, ref / scale, rtol=0, atol=1e-12)


def test_mnist_files_into_the_released_model(tmp_path):
    """A run's setup from local MNIST IDX files (written here): 784 inputs in [0, 1], digit targets,
    the notebook init's bias bound 1/sqrt(784) = 1/28, MSE loss scale c = 2/n."""
    import gzip

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=12, dtype=np.uint8)
    for name, arr in (("train-images-idx3-ubyte.gz", images), ("train-labels-idx1-ubyte.gz", labels)):
        with gzip.open(tmp_path / name, "wb") as fh:
            fh.write(
                bytes([0, 0, 8, arr.ndim])
                + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
                + arr.tobytes()
            )
    cfg = config.from_dict(
        {
            "dtype": "float64",
            "data": {"source": "mnist", "path": str(tmp_path), "n": 10},
            "model": {"name": "released", "width": 64},
            "train": {"steps": 1},
            "optimizers": [{"name": "gd", "eta": 1e-4}],
        }
    )
    setup = pipeline.prepare(cfg)
    assert setup.X.shape == (10, 784) and setup.X.max() <= 1.0
    np.testing.assert_array_equal(setup.y, labels[:10])
    assert np.all(np.abs(np.asarray(setup.params["b"])) <= 1 / 28) and setup.c == pytest.approx(2 / 10)
    assert np.all(np.isfinite(setup.e0)) and setup.lam[0] > 0
