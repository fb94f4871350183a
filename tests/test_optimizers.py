"""Optimizers' training face (vs optax), training on a linear model (vs the exact recurrence),
the registry, divergence handling and recording."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ntkdyn import optimizers, theory
from ntkdyn.models import Model
from ntkdyn.train import TrainPlan, train

LINEAR = Model("lin", lambda p, c, X: X @ p["w"], "half_sum")


def _quadratic(seed=0, n=7):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = (Q * np.geomspace(0.05, 1.0, n)) @ Q.T
    return jnp.asarray(A), jnp.asarray(rng.standard_normal(n)), jnp.asarray(rng.standard_normal(n))


def _run(tx, A, b, theta, steps):
    state = tx.init(theta)
    out = [theta]
    for _ in range(steps):
        g = A @ theta - b
        updates, state = tx.update(g, state, theta)
        theta = optax.apply_updates(theta, updates)
        out.append(theta)
    return np.asarray(jnp.stack(out))


@pytest.mark.parametrize(
    "name,beta,nesterov",
    [("gd", None, False), ("hb", 0.9, False), ("hb", 0.5, False), ("nag", 0.9, True), ("nag", 0.3, True)],
)
def test_linear_method_equals_optax_sgd(name, beta, nesterov):
    A, b, theta0 = _quadratic()
    eta, steps = 0.7, 150
    spec = optimizers.get(name)
    hyper = {"eta": eta} if beta is None else {"eta": eta, "beta": beta}
    ours = _run(optimizers.transformation(spec, hyper), A, b, theta0, steps)
    ref = _run(
        optax.sgd(eta) if beta is None else optax.sgd(eta, momentum=beta, nesterov=nesterov),
        A,
        b,
        theta0,
        steps,
    )
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-14)
    assert np.linalg.norm(ours[-1] - ours[0]) > 0.1  # it moved


def test_linear_method_pytree_and_dtype():
    """Works on pytrees and keeps each leaf's dtype (float32 params stay float32)."""
    tx = optimizers.transformation(optimizers.get("nag"), {"eta": 0.1, "beta": 0.9})
    params = {"a": jnp.ones(3, jnp.float32), "b": {"c": jnp.ones((2, 2), jnp.float32)}}
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, state = tx.update(grads, state, params)
    updates, state = tx.update(grads, state, params)
    assert jax.tree.map(lambda u: u.dtype, updates) == {"a": jnp.float32, "b": {"c": jnp.float32}}
    # v_2 = 0.9 + 1 = 1.9; update = -0.1 (g + beta v_2) = -0.1 (1 + 1.71)
    np.testing.assert_allclose(np.asarray(updates["a"]), -0.1 * (1 + 0.9 * 1.9), rtol=1e-6)
    assert int(state.count) == 2


def _torch_sgd(A, b, theta0, eta, momentum_at, nesterov, steps):
    """numpy loop of torch.optim.SGD's step (torch/optim/sgd.py) on L = theta.A.theta/2 - b.theta, with
    the group's momentum set to momentum_at(k) before step k (as the released notebook does):
    no buffer while momentum is 0; at the first step with momentum != 0 buf = g (a copy), then
    buf = mu buf + g; the step is g + mu buf (nesterov) or buf."""
    A, b, theta = np.asarray(A), np.asarray(b), np.array(theta0, np.float64)
    buf, out = None, [theta.copy()]
    for k in range(1, steps + 1):
        mu, g = momentum_at(k), A @ theta - b
        if mu != 0:
            buf = g.copy() if buf is None else mu * buf + g
            g = g + mu * buf if nesterov else buf
        theta = theta - eta * g
        out.append(theta.copy())
    return np.array(out)


@pytest.mark.parametrize("r", [2.0, 3.0, 8.0])
def test_nag_c_is_torch_sgd_with_momentum_reset_each_step(r):
    """nag_c = the released notebook's loop: SGD(nesterov=True), momentum (k-1)/(k+r-1) set before step k."""
    A, b, theta0 = _quadratic(seed=2)
    eta, steps = 0.9, 120
    ours = _run(optimizers.transformation(optimizers.get("nag_c"), {"eta": eta, "r": r}), A, b, theta0, steps)
    ref = _torch_sgd(A, b, theta0, eta, lambda k: (k - 1) / (k + r - 1), True, steps)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-14)
    # the buffer starting at update 2 (v_2 = g_2) matters: the form with v_2 = beta_2 g_1 + g_2 differs
    ref_v1 = _run(_optax_scheduled_nesterov(eta, r), A, b, theta0, steps)
    assert np.max(np.abs(ref_v1[2] - ref[2])) > 1e-3
    assert optimizers.nag_c_beta(1, r) == 0.0 and optimizers.nag_c_beta(1e12, r) == pytest.approx(1.0)


def _optax_scheduled_nesterov(eta, r):
    """optax-style Nesterov with beta_k: v_k = beta_k v_{k-1} + g_k from v_0 = 0
    (so v_2 = beta_2 g_1 + g_2)."""

    def init(p):
        return (jnp.zeros([]), jnp.zeros_like(p))

    def update(g, state, params=None):
        k, v = state[0] + 1, state[1]
        beta = (k - 1) / (k + r - 1)
        v = beta * v + g
        return -eta * (g + beta * v), (k, v)

    return optax.GradientTransformation(init, update)


def test_companion_matrices_are_the_designed_recurrences():
    """HB: [[1 - eta lam, -eta beta], [lam, beta]] on (e, J v); NAG: trace (1+beta)(1-eta lam),
    determinant beta (1 - eta lam) (the kernel-regime recurrences c_{k+1} = (1+beta)(1-eta lam) c_k
    - beta (1-eta lam) c_{k-1} and c_{k+1} = (1 + beta - eta lam) c_k - beta c_{k-1})."""
    lam = np.array([0.0, 0.4, 1.7])
    eta, beta = 0.3, 0.8
    A = optimizers.companion(optimizers.get("hb"), {"eta": eta, "beta": beta}, lam, 1)
    expected = np.stack([np.array([[1 - eta * x, -eta * beta], [x, beta]]) for x in lam])
    np.testing.assert_allclose(A, expected, rtol=1e-15)
    A = optimizers.companion(optimizers.get("nag"), {"eta": eta, "beta": beta}, lam, 1)
    np.testing.assert_allclose(np.trace(A, axis1=1, axis2=2), (1 + beta) * (1 - eta * lam), rtol=1e-14)
    np.testing.assert_allclose(np.linalg.det(A), beta * (1 - eta * lam), rtol=1e-12, atol=1e-15)
    A = optimizers.companion(optimizers.get("gd"), {"eta": eta}, lam, 1)
    np.testing.assert_allclose(A[:, 0, 0], 1 - eta * lam, rtol=1e-15)


# --------------------------------------------------------------------------- linear model vs recurrence
def _linear_problem(dtype=jnp.float64, n=6, d=10, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) / np.sqrt(d)
    y = rng.standard_normal(n)
    w0 = 0.3 * rng.standard_normal(d)
    return jnp.asarray(X, dtype), jnp.asarray(y, dtype), {"w": jnp.asarray(w0, dtype)}


@pytest.mark.parametrize(
    "name,extra",
    [("gd", {}), ("hb", {"beta": 0.9}), ("nag", {"beta": 0.8}), ("nag_c", {"r": 3.0}), ("nag_c", {"r": 5.0})],
)
def test_linear_model_training_is_the_exact_recurrence(name, extra):
    X, y, params = _linear_problem()
    Xn = np.asarray(X)
    lam, V = theory.eigen(Xn @ Xn.T)  # K = c H with c = 1 (half_sum), H = X X^T
    hyper = {"eta": 0.8 / lam[-1], **extra}
    spec = optimizers.get(name)
    steps = 200
    error_at = (0, 1, 2, 17, 100, 199, 200)
    res = train(LINEAR, spec, hyper, 1.0, TrainPlan(steps, error_at=error_at), params, {}, X, y)
    e0 = Xn @ np.asarray(params["w"]) - np.asarray(y)
    modes = theory.discrete_modes(spec, hyper, lam, V.T @ e0, steps)
    errors = modes @ V.T
    assert res.diverged_at is None
    np.testing.assert_array_equal(res.step, np.arange(steps + 1))
    ref_loss = theory.modal_loss(modes, 1.0)
    assert ref_loss[-1] < 1e-2 * ref_loss[0]  # it trained
    # e = X w - y is computed with cancellation once e << y: allow float64 rounding of y on top of
    # 1e-10 relative; ||e|| = sqrt(2 L) is then within the same bound
    floor = 1e-14 * np.linalg.norm(np.asarray(y))
    gap = np.abs(np.sqrt(2 * res.loss) - np.sqrt(2 * ref_loss))
    assert np.all(gap <= 1e-10 * np.sqrt(2 * ref_loss) + floor), np.max(gap / np.sqrt(2 * ref_loss))
    np.testing.assert_array_equal(res.error_at, error_at)
    assert res.errors.shape == (len(error_at), 6)
    for row, k in zip(res.errors, error_at):
        assert np.linalg.norm(row - errors[k]) <= 1e-10 * np.linalg.norm(errors[k]) + floor, k


def test_float32_training_runs_in_float32():
    X, y, params = _linear_problem(jnp.float32)
    res = train(
        LINEAR,
        optimizers.get("hb"),
        {"eta": 0.5, "beta": 0.5},
        1.0,
        TrainPlan(50, error_at=(50,)),
        params,
        {},
        X,
        y,
    )
    assert res.final_params["w"].dtype == jnp.float32
    assert res.errors.dtype == np.float32
    Xn, yn = np.asarray(X, np.float64), np.asarray(y, np.float64)
    lam, V = theory.eigen(Xn @ Xn.T)
    e0 = Xn @ np.asarray(params["w"], np.float64) - yn
    ref = theory.modal_loss(
        theory.discrete_modes(optimizers.get("hb"), {"eta": 0.5, "beta": 0.5}, lam, V.T @ e0, 50), 1.0
    )
    np.testing.assert_allclose(res.loss, ref, rtol=1e-4)


def test_snapshots_are_params_at_those_steps():
    X, y, params = _linear_problem()
    spec = optimizers.get("gd")
    plan = TrainPlan(20, snapshot_at=(0, 5, 20))
    res = train(LINEAR, spec, {"eta": 0.3}, 1.0, plan, params, {}, X, y)
    w = np.asarray(params["w"])
    Xn, yn = np.asarray(X), np.asarray(y)
    snaps = {}
    for k in range(21):
        snaps[k] = w.copy()
        w = w - 0.3 * Xn.T @ (Xn @ w - yn)
    for i, k in enumerate((0, 5, 20)):
        np.testing.assert_allclose(np.asarray(res.snapshots["w"][i]), snaps[k], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(res.final_params["w"]), snaps[20], rtol=1e-12)


def test_loss_scale_enters_the_gradient():
    """With c = 2/n (mse) the run equals the half_sum run at eta * c."""
    X, y, params = _linear_problem()
    n = X.shape[0]
    mse = Model("lin", LINEAR.apply, "mse")
    spec = optimizers.get("hb")
    a = train(mse, spec, {"eta": 0.9, "beta": 0.5}, 2.0 / n, TrainPlan(30, error_at=(30,)), params, {}, X, y)
    b = train(
        LINEAR,
        spec,
        {"eta": 0.9 * 2.0 / n, "beta": 0.5},
        1.0,
        TrainPlan(30, error_at=(30,)),
        params,
        {},
        X,
        y,
    )
    np.testing.assert_allclose(a.errors, b.errors, rtol=1e-12)
    np.testing.assert_allclose(a.loss, b.loss * 2.0 / n, rtol=1e-12)


# --------------------------------------------------------------------------- registry
def test_unknown_optimizer_lists_allowed():
    with pytest.raises(ValueError) as info:
        optimizers.get("sgdd")
    msg = str(info.value)
    assert "sgdd" in msg
    for name in ("gd", "hb", "nag", "nag_c", "adam"):
        assert name in msg


def test_resolve_hyper():
    with pytest.raises(ValueError, match="'hb' needs 'beta'"):
        optimizers.resolve_hyper(optimizers.get("hb"), {"eta": 0.1})
    with pytest.raises(ValueError, match="needs 'beta'"):
        optimizers.resolve_hyper(optimizers.get("nag"), {"eta": 0.1, "beta": None})
    assert optimizers.resolve_hyper(optimizers.get("nag_c"), {"eta": 0.1}) == {"eta": 0.1, "r": 3.0}
    assert optimizers.resolve_hyper(optimizers.get("nag_c"), {"eta": 0.1, "r": 5.0})["r"] == 5.0
    given = {"eta": 0.1, "beta": 0.9}
    assert optimizers.resolve_hyper(optimizers.get("hb"), given) == given


def test_theory_faces_present_for_linear_methods():
    """Every registered linear method has a recurrence face and an ODE face, and its training face (the
    optax transformation, run here by a plain loop on a quadratic) moves the error exactly as its
    recurrence face (companion matrices in the eigenbasis) predicts; NAG-C's classic form also equals
    Su-Boyd-Candes's x/y iteration written out by hand. (That each ODE face is the eta -> 0 limit of its
    recurrence: tests/test_theory.py::test_limit_ode_faces.)"""
    A, b, theta0 = _quadratic(seed=4)
    lam, V = theory.eigen(np.asarray(A))
    theta_star = np.linalg.solve(np.asarray(A), np.asarray(b))
    steps = 40
    names = [n for n, s in optimizers.REGISTRY.items() if s.method is not None]
    assert {"gd", "hb", "nag", "nag_c", "nag_c_classic"} <= set(names)
    for name in names:
        spec = optimizers.get(name)
        assert spec.has_theory and spec.ode is not None, name
        given = {"eta": 0.5 / lam[-1], **({"beta": 0.7} if "beta" in spec.hyper else {})}
        hyper = optimizers.resolve_hyper(spec, given, lam)  # tuned methods set eta, beta from lam
        run = _run(optimizers.transformation(spec, hyper), A, b, theta0, steps) - theta_star
        modes = theory.discrete_modes(spec, hyper, lam, V.T @ (np.asarray(theta0) - theta_star), steps)
        np.testing.assert_allclose(run @ V, modes, rtol=0, atol=1e-12 * np.max(np.abs(modes)), err_msg=name)
        assert np.max(np.abs(run[-1] - run[0])) > 0.05, name
    # classic NAG-C by hand: x_{k+1} = y_k - eta grad(y_k),
    # y_{k+1} = x_{k+1} + k/(k+3) (x_{k+1} - x_k), y_0 = x_0
    eta = 0.5 / lam[-1]
    y = np.asarray(theta0, np.float64).copy()
    x_prev, ref = y.copy(), [y.copy()]
    for k in range(steps):
        x = y - eta * (np.asarray(A) @ y - np.asarray(b))
        y = x + k / (k + 3.0) * (x - x_prev)
        x_prev = x
        ref.append(y.copy())
    ours = _run(
        optimizers.transformation(optimizers.get("nag_c_classic"), {"eta": eta, "r": 3.0}),
        A,
        b,
        theta0,
        steps,
    )
    np.testing.assert_allclose(ours, np.array(ref), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(
    "name,hyper", [("adam", {"eta": 0.05}), ("rmsprop", {"eta": 0.01}), ("adam", {"eta": 0.05, "b1": 0.5})]
)
def test_empirical_only_optimizer_trains(name, hyper):
    spec = optimizers.get(name)
    assert spec.method is None and spec.ode is None and not spec.has_theory
    X, y, params = _linear_problem()
    res = train(LINEAR, spec, hyper, 1.0, TrainPlan(100, error_at=(100,)), params, {}, X, y)
    assert res.diverged_at is None
    assert np.all(np.isfinite(res.loss))
    assert res.loss[-1] < 0.5 * res.loss[0]
    # the first step is the optax optimizer's own
    tx = getattr(optax, name)(hyper["eta"], **{k: v for k, v in hyper.items() if k != "eta"})
    g = jax.grad(lambda p: 0.5 * jnp.sum((LINEAR.apply(p, {}, X) - y) ** 2))(params)
    upd, _ = tx.update(g, tx.init(params), params)
    w1 = params["w"] + upd["w"]
    np.testing.assert_allclose(res.loss[1], 0.5 * np.sum((np.asarray(X @ w1 - y)) ** 2), rtol=1e-10)


# --------------------------------------------------------------------------- divergence
def _gd_divergence_run(steps=40, error_at=()):
    X, y, params = _linear_problem()
    Xn = np.asarray(X)
    lam, V = theory.eigen(Xn @ Xn.T)
    eta = 3.0 / lam[-1]  # |1 - eta lam_max| = 2 > 1
    plan = TrainPlan(steps, error_at=error_at, divergence_factor=1e6)
    res = train(LINEAR, optimizers.get("gd"), {"eta": eta}, 1.0, plan, params, {}, X, y)
    e0 = Xn @ np.asarray(params["w"]) - np.asarray(y)
    modes = theory.discrete_modes(optimizers.get("gd"), {"eta": eta}, lam, V.T @ e0, steps)
    return res, modes, V, (X, y)


def test_gd_divergence_detected_at_predicted_step():
    res, modes, V, (X, y) = _gd_divergence_run()
    ref = theory.modal_loss(modes, 1.0)
    expected = int(np.argmax(ref > 1e6 * ref[0]))
    assert expected > 0
    assert res.diverged_at == expected
    k = res.diverged_at
    assert np.all(np.isfinite(res.loss[: k + 1]))
    np.testing.assert_allclose(res.loss[: k + 1], ref[: k + 1], rtol=1e-9)
    assert np.all(np.isnan(res.loss[k + 1 :]))
    # parameters freeze at the step that diverged
    e_final = np.asarray(LINEAR.apply(res.final_params, {}, X) - y)
    np.testing.assert_allclose(e_final, modes[k] @ V.T, rtol=1e-9)


def test_errors_after_divergence_are_not_reported_as_zero():
    """error_at steps the run never reached must not come back as e = 0 (a perfect fit)."""
    res, modes, V, _ = _gd_divergence_run(steps=40, error_at=(0, 5, 30, 40))
    assert res.diverged_at is not None and res.diverged_at < 30
    np.testing.assert_allclose(res.errors[0], modes[0] @ V.T, rtol=1e-12)
    np.testing.assert_allclose(res.errors[1], modes[5] @ V.T, rtol=1e-9)
    assert not np.any(res.errors[2:] == 0.0), res.errors[2:]
    assert np.all(np.isnan(res.errors[2:]))


def test_stable_run_has_no_divergence():
    X, y, params = _linear_problem()
    Xn = np.asarray(X)
    lam_max = np.linalg.eigvalsh(Xn @ Xn.T)[-1]
    res = train(LINEAR, optimizers.get("gd"), {"eta": 1.9 / lam_max}, 1.0, TrainPlan(60), params, {}, X, y)
    assert res.diverged_at is None
    assert np.all(np.isfinite(res.loss))


def test_nonfinite_loss_counts_as_divergence():
    X, y, params = _linear_problem()
    params = {"w": params["w"].at[0].set(jnp.inf)}
    res = train(LINEAR, optimizers.get("gd"), {"eta": 0.1}, 1.0, TrainPlan(10), params, {}, X, y)
    assert res.diverged_at == 0
    assert np.all(np.isnan(res.loss[1:]))


# --------------------------------------------------------------------------- recording
@pytest.mark.parametrize("every", [2, 5, 30])
def test_record_every_subsamples(every):
    X, y, params = _linear_problem()
    spec, hyper = optimizers.get("nag_c"), {"eta": 0.5, "r": 3.0}
    full = train(LINEAR, spec, hyper, 1.0, TrainPlan(60), params, {}, X, y)
    sub = train(LINEAR, spec, hyper, 1.0, TrainPlan(60, record_every=every), params, {}, X, y)
    np.testing.assert_array_equal(sub.step, np.arange(0, 61, every))
    np.testing.assert_allclose(sub.loss, full.loss[::every], rtol=1e-12)


def test_record_every_must_divide_steps():
    X, y, params = _linear_problem()
    with pytest.raises(ValueError, match="multiple of train.record_every"):
        train(
            LINEAR, optimizers.get("gd"), {"eta": 0.1}, 1.0, TrainPlan(10, record_every=3), params, {}, X, y
        )


def test_chunked_scan_equals_one_scan():
    X, y, params = _linear_problem()
    spec, hyper = optimizers.get("hb"), {"eta": 0.5, "beta": 0.7}
    one = train(
        LINEAR, spec, hyper, 1.0, TrainPlan(60, record_every=2, error_at=(0, 31, 60)), params, {}, X, y
    )
    seen = []
    three = train(
        LINEAR,
        spec,
        hyper,
        1.0,
        TrainPlan(60, record_every=2, error_at=(0, 31, 60), chunks=3),
        params,
        {},
        X,
        y,
        progress=lambda step, eta_s: seen.append(step),
    )
    assert seen == [20, 40, 60]
    np.testing.assert_allclose(three.loss, one.loss, rtol=1e-12)
    np.testing.assert_allclose(three.errors, one.errors, rtol=1e-12)
    with pytest.raises(ValueError, match="cannot be cut into 7 equal chunks"):
        train(LINEAR, spec, hyper, 1.0, TrainPlan(60, record_every=2, chunks=7), params, {}, X, y)


def test_train_batch_equals_separate_runs():
    from ntkdyn.train import train_batch

    X, y, params = _linear_problem()
    _, _, params2 = _linear_problem(seed=1)
    spec = optimizers.get("nag")
    hypers = [{"eta": 0.3, "beta": 0.5}, {"eta": 0.6, "beta": 0.9}, {"eta": 0.2, "beta": 0.0}]
    plist = [params, params2, params]
    plan = TrainPlan(40, error_at=(40,))
    batch = train_batch(LINEAR, spec, hypers, 1.0, plan, plist, [{}] * 3, [X] * 3, [y] * 3)
    assert len(batch) == 3
    for hyper, p, res in zip(hypers, plist, batch):
        alone = train(LINEAR, spec, hyper, 1.0, plan, p, {}, X, y)
        np.testing.assert_allclose(res.loss, alone.loss, rtol=1e-12)
        np.testing.assert_allclose(res.errors, alone.errors, rtol=1e-12)
    assert not np.allclose(batch[0].loss, batch[1].loss)


def test_string_choices_are_checked_on_construction():
    """State kinds, high-resolution forms and NTK methods are Literal choices checked once, naming the
    allowed values; the ODE kinds are types (``ntkdyn.odes``) that check their coefficients."""
    from ntkdyn import ntk, odes
    from ntkdyn.optimizers import HighResODE, LimitODE, LinearMethod

    with pytest.raises(TypeError, match="base of the ODE kinds"):
        LimitODE(time_step=0.1)
    with pytest.raises(ValueError, match="ConstantDamping.time_step: expected a finite number > 0"):
        odes.ConstantDamping(time_step=0.0, gamma=1.0)
    with pytest.raises(ValueError, match="VanishingDamping.r: expected a finite number > 0"):
        odes.VanishingDamping(time_step=0.1, r=-3.0)
    with pytest.raises(ValueError, match="ConstantDamping.gamma: expected a finite number"):
        odes.ConstantDamping(time_step=0.1, gamma=math.inf)
    with pytest.raises(ValueError, match="LinearMethod.states = 'pt'; allowed: 'point', 'vector'"):
        LinearMethod(("vector", "pt"), lambda h, k: ([[1.0]], [1.0]))
    with pytest.raises(ValueError, match="HighResODE.damping = 'none'"):
        HighResODE(time_step=0.1, damping="none")
    assert ntk.METHODS == ("auto", "jacobian", "ntvp")


def test_through_new_is_row_0():
    """Every method declaring its parameter row through the new state (``LinearMethod.through_new``:
    theta_k - theta_{k-1} = sum_j c_j z_{j,k} + d g_k) agrees with row 0 of its (T_k, u_k): with
    z_{j,k} = T_j S_{k-1} + u_j g_k, sum_j c_j (T_j, u_j) + d (0, 1) = (T_0 - e_0, u_0), at every k."""
    h = {"eta": 0.37, "beta": 0.71, "beta2": 0.13, "r": 3.5, "N": 0.0}
    declared = [s for s in optimizers.REGISTRY.values() if s.method is not None and s.method.through_new]
    assert {"hb", "nag", "nag_c", "nag_c_classic", "hb2"} <= {s.name for s in declared}
    for spec in declared:
        for k in (1.0, 2.0, 3.0, 4.0, 7.0, 250.0):
            T, u = spec.method.step(h, k)
            rows = np.column_stack([np.asarray(T, np.float64), np.asarray(u, np.float64)])
            c, d = spec.method.through_new(h, k)
            p = len(spec.method.states)
            lhs = np.asarray(c, np.float64) @ rows[1:] + d * np.eye(p + 2)[p + 1]
            expected = rows[0] - np.eye(p + 2)[0]
            np.testing.assert_allclose(lhs, expected, rtol=1e-14, atol=1e-15, err_msg=spec.name)


@pytest.mark.parametrize(
    "sched",
    [
        {"schedule": "exponential", "init_value": 0.7, "transition_steps": 10, "decay_rate": 0.7},
        {
            "schedule": "warmup_cosine",
            "init_value": 0.0,
            "peak_value": 0.7,
            "warmup_steps": 10,
            "decay_steps": 150,
        },
        {"schedule": "piecewise", "init_value": 0.7, "boundaries_and_scales": {40: 0.1}},
    ],
)
@pytest.mark.parametrize("name,nesterov", [("hb", False), ("nag", True)])
def test_scheduled_momentum_equals_optax_sgd_in_float64(sched, name, nesterov):
    """A scheduled HB / NAG-SC in a float64 run is optax.sgd(schedule, momentum, nesterov) to 1e-12: the
    coefficients eta_k beta, eta_k (1 + beta) are formed in the gradients' dtype although these optax
    schedules return float32 (the float32 product eta_k beta was 1e-8 relative off here). The recurrence's
    eta_k (``schedules.eta_values``) are the values the compiled training program uses, bit for bit."""
    from ntkdyn import schedules

    jax.config.update("jax_enable_x64", True)
    A, b, theta0 = _quadratic()
    s = schedules.from_config(sched)
    ours = _run(optimizers.transformation(optimizers.get(name), {"eta": s, "beta": 0.9}), A, b, theta0, 150)
    ref = _run(optax.sgd(s, momentum=0.9, nesterov=nesterov), A, b, theta0, 150)
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-14)
    assert np.linalg.norm(ours[-1] - ours[0]) > 0.1
    step = jax.jit(
        s
    )  # the training program evaluates eta_k compiled (eager float32 can differ in the last bit)
    used = np.array([np.float64(step(jnp.asarray(k, jnp.int32))) for k in range(150)])
    np.testing.assert_array_equal(schedules.eta_values(s, 150), used)
