"""theory.solver: the Krylov path of the run (ntkdyn.largen wired into ntkdyn.pipeline) against the
eigendecomposition path on the same small runs; the faces without a Krylov form say why they do not
apply; the float32 storage stays within its recorded bound; the config key and the memory estimate."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import ntkdyn
from ntkdyn import config, largen, memory, optimizers
from ntkdyn.config.schema import KRYLOV_AUTO_N, resolve_solver
from ntkdyn.pipeline import faces, training
from ntkdyn.pipeline import setup as setup_mod

OPTS = [
    {"name": "gd", "eta": {"per_lambda_max": 1.0}},
    {"name": "hb", "eta": {"per_lambda_max": 0.5}, "beta": 0.6},
    {"name": "nag_c", "eta": {"per_lambda_max": 0.5}},
    {
        "name": "gd",
        "label": "gd_cosine",
        "eta": {"schedule": "cosine_decay", "init_value": 0.05, "decay_steps": 40},
    },
]
RTOL = 1e-8


def _raw(solver: str, kernel: str = "H0", optimizers=OPTS, **theory) -> dict:
    return {
        "seed": 5,
        "dtype": "float64",
        "data": {"source": "sphere", "n": 64, "d": 4, "test": {"n": 16}},
        "model": {"name": "paper", "width": 128},
        "train": {"steps": 40, "record_every": 2, "kernel_at": [0]},
        "theory": {"diffrax": False, "linearized": "never", "kernel": kernel, "solver": solver, **theory},
        "optimizers": optimizers,
    }


def _close(a, b, what: str) -> None:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, what
    np.testing.assert_allclose(b, a, rtol=RTOL, atol=0, err_msg=what)


@pytest.fixture(scope="module", params=["H0", "Hinf"])
def both(request):
    kernel = request.param
    return kernel, ntkdyn.run_study(_raw("eigen", kernel)), ntkdyn.run_study(_raw("krylov", kernel))


_BASE = ("loss_discrete", "grad_norm_sq_discrete", "loss_ode", "test_loss_discrete", "test_loss_ode")
ARRAYS = {
    "gd": _BASE,
    "hb": (*_BASE, "loss_ode_hr"),
    "nag_c": (*_BASE, "loss_ode_hr"),
    "gd_cosine": _BASE[:-1],
}


def test_krylov_equals_eigen(both):
    """Same run, theory.solver eigen vs krylov: every per-step prediction (recurrence, ODE,
    high-resolution ODE, held-out, gradient norm), the predicted rate, stability, NAG-C's tail, the
    regime and horizon, the deviations and the spectrum's ends agree to 1e-8 relative; the results
    record which solver ran."""
    kernel, eig, kry = both
    assert eig.spectrum.kernel == kernel
    _close(eig.spectrum.lambda_min, kry.spectrum.lambda_min, "lambda_min")
    _close(eig.spectrum.lambda_max, kry.spectrum.lambda_max, "lambda_max")
    for label, keys in ARRAYS.items():
        a, b = eig[label], kry[label]
        assert a.status == b.status == "ok"
        for key in keys:
            assert key in a.trajectory and key in b.trajectory, (label, key)
            _close(a.trajectory[key], b.trajectory[key], f"{label} {key}")
        pa, pb = a.predicted, b.predicted
        for field in ("linear_rate", "max_spectral_radius", "crossover_step", "tail_rate"):
            if getattr(pa, field) is None:
                assert getattr(pb, field) is None, (label, field)
            else:
                _close(getattr(pa, field), getattr(pb, field), f"{label} predicted.{field}")
        assert pa.stable == pb.stable
        if label != "gd_cosine":
            assert pa.unstable_modes == 0 and pb.unstable_modes is None  # a count needs the spectrum
            assert a.regime.regime == b.regime.regime and a.regime.horizon_kind == b.regime.horizon_kind
            _close(a.regime.rate, b.regime.rate, f"{label} regime.rate")
            _close(a.regime.horizon, b.regime.horizon, f"{label} regime.horizon")
            assert a.regime.window_position == b.regime.window_position and a.scope == b.scope
        for name, value in a.deviation.values.items():
            if value is not None:
                _close(value, b.deviation.values[name], f"{label} deviation {name}")
        for name, value in a.test.deviation.items():
            _close(value, b.test.deviation[name], f"{label} held-out deviation {name}")
        assert a.solver.solver == "eigen" and not a.solver.faces
        s = b.solver
        assert s.solver == "krylov" and s.storage == "float64" and s.storage_error_bound == 0.0
        assert s.extremes_converged and s.extremes_iterations >= 2
        d = s.faces["discrete"]  # the recurrence polynomial in the shared Krylov basis, <= steps + 1
        assert d.method == "lanczos" and d.converged and d.iterations <= 41
        # the kernel drift by tiles (no n x n Gram per snapshot kept) equals the dense one
        _close(a.trajectory["kernel_drift"], b.trajectory["kernel_drift"], f"{label} kernel_drift")
        assert "kernels" in a.trajectory and "kernels" not in b.trajectory
        assert s.faces["ode"].method == "lanczos" and s.faces["ode"].converged
        assert s.faces["ode"].error_estimate <= s.faces["ode"].tolerance
        assert ("ode_hr" in s.faces) == ("loss_ode_hr" in keys)


def test_solver_survives_metrics_json(both):
    """The typed ``solver`` field goes to metrics.json and back unchanged."""
    _, _, kry = both
    doc = kry["hb"].to_json()
    assert doc["solver"]["solver"] == "krylov" and doc["solver"]["faces"]["ode"]["method"] == "lanczos"
    back = ntkdyn.results.OptimizerResult.from_json("hb", doc)
    assert back.solver == kry["hb"].solver


def _context(cfg, setup, index: int):
    oc = cfg.optimizers[index]
    spec = optimizers.get(oc.name)
    hyper = training.optimizer_hyper(setup, oc)
    null = np.zeros(setup.lam.size, bool)
    return faces.Context(cfg, setup, spec, hyper, None, None, null, None)


def test_faces_without_a_krylov_path_say_why():
    """On the Krylov path: the restart rule, the mini-batch recurrence and the scheduled second-order
    ODE return the reason they do not apply (naming theory.solver); on the eigen path the same faces
    apply. Through a run, theory.diffrax's check is reported as not run, in the result's note."""
    opts = [
        {"name": "nag_c_fn_restart", "eta": 0.5},
        {
            "name": "hb",
            "beta": 0.6,
            "eta": {"schedule": "cosine_decay", "init_value": 1.0, "decay_steps": 40},
        },
    ]
    for solver in ("krylov", "eigen"):
        cfg = config.from_dict(_raw(solver, optimizers=opts))
        cfg_mb = config.from_dict({**_raw(solver, optimizers=opts), "train": {"steps": 40, "batch_size": 16}})
        with jax.enable_x64(True):
            setup = setup_mod.prepare(cfg)
        restart, scheduled = _context(cfg, setup, 0), _context(cfg, setup, 1)
        minibatch = _context(cfg_mb, setup, 1)
        got = [
            faces.Recurrence().applies(restart),
            faces.Recurrence().applies(minibatch),
            faces.LimitingOde().applies(scheduled),
        ]
        if solver == "eigen":
            assert got == [True, True, True]
            continue
        for reason, what in zip(got, ("adaptive-restart", "mini-batch", "piecewise")):
            assert isinstance(reason, str) and what in reason
            assert "eigenbasis" in reason and "theory.solver: eigen" in reason
        assert faces.Recurrence().applies(scheduled) is True  # the scheduled recurrence has a Krylov form
    run = ntkdyn.run_study(_raw("krylov", optimizers=OPTS[:1], diffrax=True))
    assert "diffrax check" in run["gd"].note and "eigenbasis" in run["gd"].note
    assert "loss_ode_diffrax" not in run["gd"].trajectory


def test_float32_storage_within_its_bound(monkeypatch):
    """K stored in float32 (the n threshold lowered for the test): the recorded bound on ||E||_2 holds
    for the measured ||K32 - K64||_2, and GD's predicted loss moves from the float64 one by no more
    than ``largen.float32_storage_bound`` (Duhamel) allows, while it does move (float32 is used)."""
    opts = OPTS[:1]
    eig = ntkdyn.run_study(_raw("eigen", optimizers=opts))
    monkeypatch.setattr(setup_mod, "FLOAT32_STORAGE_N", 32)
    cfg = config.from_dict(_raw("krylov", optimizers=opts))
    with jax.enable_x64(True):
        setup = setup_mod.prepare(cfg)
        K64 = setup.c * np.asarray(
            setup_mod.ntk.gram(setup.model, setup.params, setup.consts, setup.X), np.float64
        )
    assert setup.krylov.K.dtype == np.float32
    E = setup.krylov.K.astype(np.float64) - K64
    assert 0 < np.linalg.norm(E, 2) <= setup.krylov.storage_error_bound
    kry = ntkdyn.run_study(_raw("krylov", optimizers=opts))
    s = kry["gd"].solver
    assert s.storage == "float32" and s.storage_error_bound > 0
    a, b = eig["gd"].trajectory, kry["gd"].trajectory
    rel = np.abs(b["loss_discrete"] - a["loss_discrete"]) / a["loss_discrete"]
    eta = 1.0 / eig.spectrum.lambda_max
    bound = largen.float32_storage_bound(
        a["step"] * eta, s.storage_error_bound, a["loss_discrete"][0], a["loss_discrete"]
    )
    # + the Krylov recurrence's own tolerance (ODE_RTOL 1e-10 on e, so ~2e-10 on the loss) and round-off
    assert rel.max() > 0 and np.all(rel <= bound + 1e-9)


def test_bad_solver_is_a_config_error():
    with pytest.raises(
        config.ConfigError, match="theory.solver: 'lanczos' is not allowed; allowed: auto, eigen, krylov"
    ):
        config.from_dict(_raw("lanczos"))


def test_auto_threshold_and_memory_estimate(monkeypatch):
    """auto: krylov above KRYLOV_AUTO_N points only; a small run with auto takes the eigen path. The
    memory estimate of the Krylov path covers the kernels its setup actually holds (float64 and
    float32 storage), and at n = 32,768 it fits where the eigen path's does not."""
    assert KRYLOV_AUTO_N == 4096
    assert resolve_solver("auto", 4096) == "eigen" and resolve_solver("auto", 4097) == "krylov"
    assert resolve_solver("eigen", 10**6) == "eigen" and resolve_solver("krylov", 3) == "krylov"
    cfg = config.from_dict(_raw("auto"))
    with jax.enable_x64(True):
        assert setup_mod.prepare(cfg).solver == "eigen"
    for limit in (10**9, 32):
        monkeypatch.setattr(setup_mod, "FLOAT32_STORAGE_N", limit)
        for kernel in ("H0", "Hinf"):
            cfg = config.from_dict(_raw("krylov", kernel))
            with jax.enable_x64(True):
                s = setup_mod.prepare(cfg)
            held = {id(x): x.nbytes for x in (s.H0, s.Hinf, s.krylov.K) if x is not None}
            est = memory.estimate(cfg, n=64, d=4)
            assert sum(held.values()) <= est.parts["kernels"]
    monkeypatch.undo()
    big = {"data": {"source": "sphere", "n": 32768, "d": 16}, "model": {"name": "paper", "width": 1024}}
    big["train"] = {"steps": 300, "kernel_at": [0]}
    est = {
        solver: memory.estimate(config.from_dict({**_raw(solver, optimizers=OPTS[:1]), **big}), d=16).total
        for solver in ("eigen", "krylov")
    }
    assert est["krylov"] < 24e9 < est["eigen"]


def test_memory_estimate_from_the_compiled_program(monkeypatch):
    """Above COMPILED_ABOVE the training part comes from the compiled chunk program on abstract shapes
    (nothing built): at least the training state it carries, computed once per run shape; the
    Krylov path's kernels part holds no Gram per snapshot, so more snapshots do not change it."""
    monkeypatch.setattr(memory, "COMPILED_ABOVE", 0.0)
    monkeypatch.setattr(memory, "_COMPILED", {})
    raw = _raw("krylov", optimizers=OPTS[:2])
    cfg = config.from_dict(raw)
    est = memory.estimate(cfg, n=64, d=4)
    assert est.compiled and len(memory._COMPILED) == 1
    assert est.peak_rss == est.process + est.total and est.process >= memory.RUNTIME
    P = 4 * cfg.model.width
    assert est.parts["training"] >= 2 * P * 8  # parameters and their update at least (float64)
    memory.estimate(cfg, n=64, d=4)
    assert len(memory._COMPILED) == 1  # cached: the CLI and setup.prepare compile once
    more = config.from_dict({**raw, "train": {**raw["train"], "kernel_at": [0, 5, 10, 20]}})
    assert memory.estimate(more, n=64, d=4).parts["kernels"] == est.parts["kernels"]


def test_control_view_refused_on_the_krylov_path():
    """The control view reads K's eigenbasis: with theory.solver krylov the run stops before any
    kernel with a ConfigError naming control and theory.solver."""
    cfg = config.load("configs/control.yaml")
    cfg.theory.solver = "krylov"
    with pytest.raises(
        config.ConfigError, match="control: the control view needs K's eigenbasis.*theory.solver"
    ):
        setup_mod.prepare(cfg)
