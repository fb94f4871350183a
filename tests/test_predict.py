"""ntkdyn.predict against independent implementations: hand-written numpy loops of each method in
function space, linear models trained in parameter space (whose kernel is the given K), and the
discrete methods as eta -> 0 for the limits (measured order)."""

import os
import re

import numpy as np
import pytest

from ntkdyn import ntk, predict

N, NT, K_OUT, P = 6, 3, 3, 14


def _features(seed=0, full=False):
    """Random features Phi (train), Phi_t (test): a linear model f = Phi theta whose NTK is Phi Phi^T.
    full: one feature row per (point, output) pair, index i*k + a (full Gram)."""
    rng = np.random.default_rng(seed)
    rows, rows_t = (N * K_OUT, NT * K_OUT) if full else (N, NT)
    return rng.standard_normal((rows, P)) / np.sqrt(P), rng.standard_normal((rows_t, P)) / np.sqrt(P)


def _targets(seed=1):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((N, K_OUT)),
        0.3 * rng.standard_normal((N, K_OUT)),
        rng.standard_normal((NT, K_OUT)),
    )


def _loop(method, H, y, f0, c, eta, steps, beta=0.0, r=3.0):
    """The methods written out in function space (u the velocity J v in output space), shared H."""
    f, u, out = f0.copy(), np.zeros_like(f0), [f0.copy()]
    for k in range(1, steps + 1):
        g = c * H @ (f - y)
        if method == "gd":
            f = f - eta * g
        elif method == "hb":
            u = beta * u + g
            f = f - eta * u
        elif method == "nag":
            u = beta * u + g
            f = f - eta * (g + beta * u)
        elif method == "nag_c":  # torch form: no velocity at update 1, created as g at update 2
            b = (k - 1) / (k + r - 1)
            u = g if k <= 2 else b * u + g
            f = f - eta * (g + b * u)
        out.append(f.copy())
    return np.stack(out)


@pytest.mark.parametrize(
    "method,kw",
    [("gd", {}), ("hb", {"beta": 0.7}), ("nag", {"beta": 0.6}), ("nag_c", {"r": 3.0})],
)
def test_closed_forms_match_function_space_loop_many_outputs(method, kw):
    Phi, _ = _features()
    H = Phi @ Phi.T
    y, f0, _ = _targets()
    c, eta, steps = 0.5, 0.8, 25
    want = _loop(method, H, y, f0, c, eta, steps, beta=kw.get("beta", 0.0), r=kw.get("r", 3.0))
    pred = predict.linear_method_mse(H, y, optimizer=method, eta=eta, loss_scale=c, **kw)
    got = pred(step=np.arange(steps + 1), fx_train_0=f0).train
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)
    # the named entry points are the same predictions
    named = {
        "gd": lambda: predict.gradient_descent_mse(H, y, eta=eta, loss_scale=c),
        "hb": lambda: predict.heavy_ball_mse(H, y, eta=eta, beta=0.7, loss_scale=c),
        "nag": lambda: predict.nesterov_mse(H, y, eta=eta, beta=0.6, loss_scale=c),
        "nag_c": lambda: predict.nesterov_mse(H, y, eta=eta, r=3.0, loss_scale=c),
    }[method]()
    np.testing.assert_allclose(named(step=steps, fx_train_0=f0).train, want[-1], rtol=1e-9, atol=1e-11)


def test_held_out_and_diag_reg_match_a_linear_model_in_parameter_space():
    """HB on f = Phi theta + f0, with diag_reg as one private parameter per training point
    (f(x_i) += sqrt(r) b_i): the test outputs are Phi_t theta (no b)."""
    Phi, Phit = _features(2)
    H, Hx = Phi @ Phi.T, Phit @ Phi.T
    y, f0, ft0 = _targets(3)
    diag_reg, c, eta, beta, steps = 0.3, 1.0, 0.5, 0.5, 30
    r = diag_reg * np.mean(np.diag(H))
    A = np.hstack([Phi, np.sqrt(r) * np.eye(N)])  # train features incl. private ones
    At = np.hstack([Phit, np.zeros((NT, N))])
    theta, v = np.zeros((P + N, K_OUT)), np.zeros((P + N, K_OUT))
    for _ in range(steps):
        g = c * A.T @ (A @ theta + f0 - y)
        v = beta * v + g
        theta = theta - eta * v
    pred = predict.heavy_ball_mse(H, y, eta=eta, beta=beta, loss_scale=c, diag_reg=diag_reg)
    out = pred(step=steps, fx_train_0=f0, fx_test_0=ft0, k_test_train=Hx)
    np.testing.assert_allclose(out.train, A @ theta + f0, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(out.test, At @ theta + ft0, rtol=1e-9, atol=1e-11)


def test_full_gram_matches_a_linear_model_with_per_output_features():
    """A full (n k x n k) Gram (outputs coupled) and nt's (n, n, k, k) layout: GD on f = Phi theta with
    one feature row per (point, output)."""
    Phi, Phit = _features(4, full=True)
    H, Hx = Phi @ Phi.T, Phit @ Phi.T
    y, f0, ft0 = _targets(5)
    eta, steps = 0.7, 12
    theta = np.zeros(P)
    for _ in range(steps):
        theta = theta - eta * Phi.T @ (Phi @ theta + f0.ravel() - y.ravel())
    pred = predict.gradient_descent_mse(H, y, eta=eta)
    out = pred(step=steps, fx_train_0=f0, fx_test_0=ft0, k_test_train=Hx)
    np.testing.assert_allclose(out.train, (Phi @ theta).reshape(N, K_OUT) + f0, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(out.test, (Phit @ theta).reshape(NT, K_OUT) + ft0, rtol=1e-9, atol=1e-11)
    H4 = H.reshape(N, K_OUT, N, K_OUT).transpose(0, 2, 1, 3)
    Hx4 = Hx.reshape(NT, K_OUT, N, K_OUT).transpose(0, 2, 1, 3)
    out4 = predict.gradient_descent_mse(H4, y, eta=eta)(
        step=steps, fx_train_0=f0, fx_test_0=ft0, k_test_train=Hx4
    )
    np.testing.assert_allclose(out4.test, out.test, rtol=1e-12, atol=1e-13)


def test_shared_kernel_equals_its_kronecker_full_gram():
    Phi, Phit = _features(6)
    H, Hx = Phi @ Phi.T, Phit @ Phi.T
    y, f0, ft0 = _targets(7)
    I = np.eye(K_OUT)
    a = predict.nesterov_mse(H, y, eta=0.4, beta=0.8)(
        step=[3, 9], fx_train_0=f0, fx_test_0=ft0, k_test_train=Hx
    )
    b = predict.nesterov_mse(np.kron(H, I), y, eta=0.4, beta=0.8)(
        step=[3, 9], fx_train_0=f0, fx_test_0=ft0, k_test_train=np.kron(Hx, I)
    )
    assert a.train.shape == (2, N, K_OUT) and a.test.shape == (2, NT, K_OUT)
    np.testing.assert_allclose(a.train, b.train, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a.test, b.test, rtol=1e-10, atol=1e-12)


def _order(errs, hs):
    return float(np.polyfit(np.log(hs), np.log(errs), 1)[0])


@pytest.mark.parametrize("method", ["gd", "hb", "nag_c"])
def test_flows_are_the_eta_to_zero_limit_of_the_discrete_methods(method):
    """At fixed ODE time t the discrete method (k = t / time_step updates) approaches the flow with an
    error of order one in the time step (eta for GD, sqrt(eta) for HB at fixed gamma and NAG-C)."""
    Phi, Phit = _features(8)
    H, Hx = Phi @ Phi.T, Phit @ Phi.T
    y, f0, ft0 = _targets(9)
    t, gamma, c = 2.0, 1.5, 2.0
    errs, hs = [], []
    for h in (0.04, 0.02, 0.01):
        eta = h if method == "gd" else h * h
        kw = {"beta": 1 - gamma * h} if method == "hb" else ({"r": 3.0} if method == "nag_c" else {})
        disc = predict.linear_method_mse(H, y, optimizer=method, eta=eta, loss_scale=c, **kw)
        flow = predict.limit_ode_mse(H, y, optimizer=method, eta=eta, loss_scale=c, **kw)
        assert flow.time_step == pytest.approx(h) and disc.time_step == pytest.approx(h)
        k = round(t / h)
        a = disc(step=k, fx_train_0=f0, fx_test_0=ft0, k_test_train=Hx)
        b = flow(t=k * h, fx_train_0=f0, fx_test_0=ft0, k_test_train=Hx)
        errs.append(max(np.abs(a.train - b.train).max(), np.abs(a.test - b.test).max()))
        hs.append(h)
    assert _order(errs, hs) == pytest.approx(1.0, abs=0.15), errs
    if method == "gd":  # the named flow (no eta) is the same ODE
        g = predict.gradient_flow_mse(H, y, loss_scale=c)(t=t, fx_train_0=f0)
        np.testing.assert_allclose(g.train, flow(t=t, fx_train_0=f0).train, rtol=1e-12)


# --------------------------------------------------------------------------- any loss
def _softmax(f):
    z = np.exp(f - f.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _onehot(seed):
    labels = np.random.default_rng(seed).integers(0, K_OUT, N)
    return np.eye(K_OUT)[labels]


@pytest.mark.parametrize("method", ["gd", "hb", "nag"])
def test_cross_entropy_recurrence_matches_parameter_space_training(method):
    """Softmax cross-entropy: GD / HB / Nesterov (optax form) on theta of f = Phi theta + f0
    (Phi Phi^T = H), grad written by hand (softmax(f) - y), train and held-out."""
    Phi, Phit = _features(10)
    H, Hx = Phi @ Phi.T, Phit @ Phi.T
    y = _onehot(11)
    _, f0, ft0 = _targets(12)
    c, eta, beta, steps = 0.5, 2.0, 0.6, 20
    theta, v = np.zeros((P, K_OUT)), np.zeros((P, K_OUT))
    tr, te = [f0], [ft0]
    for _ in range(steps):
        g = c * Phi.T @ (_softmax(Phi @ theta + f0) - y)
        if method == "gd":
            theta = theta - eta * g
        elif method == "hb":
            v = beta * v + g
            theta = theta - eta * v
        else:
            v = beta * v + g
            theta = theta - eta * (g + beta * v)
        tr.append(Phi @ theta + f0)
        te.append(Phit @ theta + ft0)
    kw = {"beta": beta} if method != "gd" else {}
    pred = predict.gradient_descent("softmax_ce", H, y, eta=eta, optimizer=method, loss_scale=c, **kw)
    out = pred(step=np.arange(steps + 1), fx_train_0=f0, fx_test_0=ft0, k_test_train=Hx)
    np.testing.assert_allclose(out.train, np.stack(tr), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(out.test, np.stack(te), rtol=1e-9, atol=1e-11)


def test_logistic_recurrence_matches_parameter_space_training():
    Phi, Phit = _features(13)
    H, Hx = Phi @ Phi.T, Phit @ Phi.T
    y = np.random.default_rng(14).integers(0, 2, N).astype(float)
    eta, steps = 3.0, 15
    theta = np.zeros(P)
    for _ in range(steps):
        theta = theta - eta * Phi.T @ (1 / (1 + np.exp(-(Phi @ theta))) - y)
    out = predict.gradient_descent("sigmoid_ce", H, y, eta=eta)(step=steps, k_test_train=Hx)
    assert out.train.shape == (N,)
    np.testing.assert_allclose(out.train, Phi @ theta, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(out.test, Phit @ theta, rtol=1e-9, atol=1e-11)


def test_cross_entropy_flow_is_the_eta_to_zero_limit_of_gradient_descent():
    Phi, Phit = _features(15)
    H, Hx = Phi @ Phi.T, Phit @ Phi.T
    y = _onehot(16)
    t = 3.0
    flow = predict.gradient_flow("softmax_ce", H, y)(t=[0.0, t], k_test_train=Hx)
    errs, hs = [], (0.2, 0.1, 0.05)
    for eta in hs:
        d = predict.gradient_descent("softmax_ce", H, y, eta=eta)(step=round(t / eta), k_test_train=Hx)
        errs.append(max(np.abs(d.train - flow.train[1]).max(), np.abs(d.test - flow.test[1]).max()))
    assert _order(errs, hs) == pytest.approx(1.0, abs=0.15), errs
    np.testing.assert_allclose(flow.train[0], 0.0)


# --------------------------------------------------------------------------- input checking
def test_time_and_step_are_explicit_and_bad_inputs_are_named():
    Phi, _ = _features()
    H = Phi @ Phi.T
    y, _, _ = _targets()
    disc = predict.gradient_descent_mse(H, y, eta=0.1)
    flow = predict.gradient_flow_mse(H, y)
    with pytest.raises(TypeError):
        disc(10)  # positional: ambiguous, refused
    with pytest.raises(TypeError):
        flow(t=1.0, step=3)
    with pytest.raises(ValueError, match="step"):
        disc(step=1.5)
    with pytest.raises(ValueError, match="k_train_train"):
        predict.gradient_descent_mse(H[:4], y, eta=0.1)
    with pytest.raises(ValueError, match="diag_reg"):
        predict.gradient_descent_mse(H, y, eta=0.1, diag_reg=-1.0)
    with pytest.raises(ValueError, match="eta"):
        predict.gradient_descent_mse(H, y, eta=0.0)
    with pytest.raises(ValueError, match="loss"):
        predict.gradient_descent("hinge", H, y, eta=0.1)
    with pytest.raises(ValueError, match="beta"):
        predict.heavy_ball_mse(H, y, eta=0.1, beta=None)
    with pytest.raises(ValueError, match="exactly one"):
        predict.nesterov_mse(H, y, eta=0.1)
    with pytest.raises(ValueError, match="no kernel-regime recurrence"):
        predict.linear_method_mse(H, y, optimizer="adam", eta=0.1)


# --------------------------------------------------------------------------- parity with neural-tangents
REF = os.path.join(os.path.dirname(__file__), "data", "nt_predict_reference.npz")


@pytest.fixture(scope="module")
def nt_ref():
    with np.load(REF) as f:
        return {k: f[k] for k in f.files}


def _close(ours, want, rtol=1e-6):
    """1e-6 relative per entry, with an absolute floor of 1e-9 of the array's scale."""
    assert ours.shape == want.shape
    np.testing.assert_allclose(ours, want, rtol=rtol, atol=1e-9 * np.abs(want).max())


def test_nt_reference_file_is_what_the_tests_expect(nt_ref):
    assert any("neural-tangents 0.6.5" in str(v) for v in nt_ref["versions"])
    assert nt_ref["y_train"].shape[1] > 1 and nt_ref["t_nt"].max() > 0


def test_our_kernels_are_nts_for_the_stored_network(nt_ref):
    """The analytic kernels the parity tests use are ntkdyn's own (``ntk.mlp_kernels``)."""
    r = nt_ref
    for X2, names in ((None, ("nngp_tt", "ntk_tt")), (r["x_train"], ("nngp_xt", "ntk_xt"))):
        X1 = r["x_train"] if X2 is None else r["x_test"]
        for ours, name in zip(ntk.mlp_kernels(X1, X2, 1, float(r["W_std"]), float(r["b_std"])), names):
            _close(ours, r[name], 1e-9)


def _kernels(r):
    W, b = float(r["W_std"]), float(r["b_std"])
    nngp, ntk_k = ntk.mlp_kernels(r["x_train"], None, 1, W, b)
    nngp_x, ntk_x = ntk.mlp_kernels(r["x_test"], r["x_train"], 1, W, b)
    nngp_xx, _ = ntk.mlp_kernels(r["x_test"], None, 1, W, b)
    return nngp, ntk_k, nngp_x, ntk_x, nngp_xx


@pytest.mark.parametrize("loss_scale", ["half_sum", "half_mse_entries"])
def test_gradient_descent_mse_matches_nt_shared_kernel(nt_ref, loss_scale):
    """nt's gradient_descent_mse(k, y, lr, diag_reg) at t_nt is gradient_flow_mse at t = lr t_nt / (c N),
    N = y.size; for c = 1/N (half_mse over entries) the times coincide at lr = 1."""
    r = nt_ref
    y, N_ = r["y_train"], r["y_train"].size
    c = 1.0 if loss_scale == "half_sum" else 1.0 / N_
    _, ntk_k, _, ntk_x, _ = _kernels(r)
    pred = predict.gradient_flow_mse(ntk_k, y, loss_scale=c, diag_reg=float(r["gd_mse_diag_reg"]))
    out = pred(
        t=float(r["gd_mse_lr"]) * r["t_nt"] / (c * N_),
        fx_train_0=r["fx_train_0"],
        fx_test_0=r["fx_test_0"],
        k_test_train=ntk_x,
    )
    _close(out.train, r["gd_mse_train"])
    _close(out.test, r["gd_mse_test"])


def test_gradient_descent_mse_matches_nt_full_gram(nt_ref):
    """trace_axes=(): nt's (n, n, k, k) Gram passed as is."""
    r = nt_ref
    y = r["y_train"]
    pred = predict.gradient_flow_mse(r["full_k_tt"], y, diag_reg=float(r["gd_mse_diag_reg"]))
    out = pred(
        t=float(r["gd_mse_lr"]) * r["t_nt"] / y.size,
        fx_train_0=r["fx_train_0"],
        fx_test_0=r["fx_test_0"],
        k_test_train=r["full_k_xt"],
    )
    _close(out.train, r["full_train"])
    _close(out.test, r["full_test"])


@pytest.mark.parametrize("get", ["nngp", "ntk"])
@pytest.mark.parametrize("reg", ["0", "1"])
def test_gradient_descent_mse_ensemble_matches_nt(nt_ref, get, reg):
    """nt's ensemble: get='ntk' is prior_noise=False, get='nngp' prior_noise=True; t = lr t_nt / N."""
    r = nt_ref
    nngp, ntk_k, nngp_x, ntk_x, nngp_xx = _kernels(r)
    y = r["y_train"]
    diag_reg = float(r["ens_diag_reg"]) if reg == "1" else 0.0
    pred = predict.gradient_flow_mse_ensemble(
        nngp, ntk_k, y, get=get, diag_reg=diag_reg, prior_noise=get == "nngp"
    )
    t = float(r["ens_lr"]) * r["t_nt"] / y.size
    train = pred(t=t)
    test = pred(
        t=t,
        nngp_test_train=nngp_x,
        kernel_test_train=ntk_x if get == "ntk" else nngp_x,
        nngp_test_test=nngp_xx,
    )
    for where, g in (("train", train), ("test", test)):
        _close(g.mean, r[f"ens_{get}_{reg}_{where}_mean"])
        _close(g.cov, r[f"ens_{get}_{reg}_{where}_cov"])


def test_gradient_descent_momentum_matches_nt(nt_ref):
    """nt's gradient_descent(0.5 ||f - y||^2, k, y, lr, momentum) at t_nt is the heavy-ball ODE with
    eta = lr, beta = momentum at t = sqrt(lr) t_nt (nt's ODE tolerance is 1.4e-8)."""
    r = nt_ref
    _, ntk_k, _, ntk_x, _ = _kernels(r)
    lr = float(r["mom_lr"])
    pred = predict.heavy_ball_flow_mse(ntk_k, r["y_train"], eta=lr, beta=float(r["mom_momentum"]))
    out = pred(
        t=np.sqrt(lr) * r["t_nt"], fx_train_0=r["fx_train_0"], fx_test_0=r["fx_test_0"], k_test_train=ntk_x
    )
    _close(out.train, r["mom_train"])
    _close(out.test, r["mom_test"])


def test_gradient_descent_cross_entropy_matches_nt(nt_ref):
    """nt's gradient_descent(softmax CE summed over points, k, y, lr) at t_nt is gradient_flow at
    t = lr t_nt."""
    r = nt_ref
    _, ntk_k, _, ntk_x, _ = _kernels(r)
    pred = predict.gradient_flow("softmax_ce", ntk_k, r["ce_y"])
    out = pred(
        t=float(r["ce_lr"]) * r["t_nt"],
        fx_train_0=r["fx_train_0"],
        fx_test_0=r["fx_test_0"],
        k_test_train=ntk_x,
    )
    _close(out.train, r["ce_train"])
    _close(out.test, r["ce_test"])


# --------------------------------------------------------------------------- docs/migration.md
def test_migration_page_examples_run():
    """Every ```python block of docs/migration.md, in order, in one namespace."""
    path = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "migration.md")
    with open(path) as f:
        blocks = re.findall(r"^```python\n(.*?)^```", f.read(), flags=re.S | re.M)
    assert len(blocks) >= 6
    namespace: dict = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"docs/migration.md python block {i + 1}", "exec"), namespace)  # noqa: S102
