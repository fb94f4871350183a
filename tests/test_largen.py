"""Large-n predictions without an eigendecomposition (``ntkdyn.largen``).

References are independent of the code under test: numpy's ``eigh`` / ``eigvalsh`` and the eigenbasis
path of ``ntkdyn.theory`` (``discrete_modes``, ``ode.modes``), hand-written output-space loops (GD, heavy
ball in optax form, NAG-C's three-term recurrence from its docstring), the full-matrix kernels
(``models.paper_hinf``, ``ntk.mlp_kernels``, ``ntk.gram`` / ``ntk.naive_ntk_gram``), and invariants
(e(0) = e0, the semigroup property of exp(-tK), energy of the undamped oscillator, the eta -> 0 limit).
"""

import math

import numpy as np
import pytest

from ntkdyn import largen, models, ntk, odes, optimizers, schedules, theory
from ntkdyn.data.sphere import unit_sphere


def _sphere_kernel(n: int, d: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = unit_sphere(rng, n, d)
    return X, largen.gram_tiled(largen.hinf_tile(X), n, rows=128), rng.standard_normal(n)


@pytest.fixture(scope="module")
def k512():
    X, K, e0 = _sphere_kernel(512)
    lam, V = theory.eigen(K)
    return K, e0, lam, V, V.T @ e0


def _hyper(name: str, eta: float, **kw):
    spec = optimizers.get(name)
    return spec, optimizers.resolve_hyper(spec, {"eta": eta, **kw})


# --------------------------------------------------------------------------- kernels in tiles
def test_hinf_tiles_equal_full_kernel_and_hold_one_tile():
    rng = np.random.default_rng(1)
    X = unit_sphere(rng, 300, 7)
    shapes = []
    inner = largen.hinf_tile(X)

    def tile(a, b):
        shapes.append((a.stop - a.start, b.stop - b.start))
        return inner(a, b)

    K = largen.gram_tiled(tile, 300, rows=64)
    ref = models.paper_hinf(X)
    assert np.max(np.abs(K - ref)) <= 1e-13 * np.max(np.abs(ref))
    np.testing.assert_array_equal(K, K.T)
    np.testing.assert_allclose(np.diag(K), 0.5 * np.sum(X * X, 1), rtol=1e-15)
    assert max(r * c for r, c in shapes) <= 64 * 64
    assert len(shapes) == 5 * 6 // 2  # lower triangle of 5 x 5 tiles, each once
    # float32 storage is the float64 result rounded to nearest, entry by entry
    K32 = largen.gram_tiled(largen.hinf_tile(X), 300, rows=64, dtype="float32")
    assert K32.dtype == np.float32
    np.testing.assert_array_equal(K32, K.astype(np.float32))


def test_mlp_hinf_tiles_equal_full_kernel():
    X = unit_sphere(np.random.default_rng(2), 130, 5)
    K = largen.gram_tiled(largen.mlp_hinf_tile(X, 2, 1.3, 0.2), 130, rows=50)
    ref = ntk.mlp_kernels(X, None, 2, 1.3, 0.2)[1]
    assert np.max(np.abs(K - ref)) <= 1e-12 * np.max(np.abs(ref))


def test_empirical_tiles_equal_gram_fast_path_and_jacobians():
    import jax
    import jax.numpy as jnp

    X = jnp.asarray(unit_sphere(np.random.default_rng(3), 90, 6))
    params, consts = models.paper_init(jax.random.PRNGKey(0), 6, 48, 1.0, jnp.float64)
    K = largen.gram_tiled(largen.empirical_tile(models.PAPER, params, consts, X), 90, rows=32)
    ref = ntk.gram(models.PAPER, params, consts, X)
    assert np.max(np.abs(K - ref)) <= 1e-12 * np.max(np.abs(ref))
    plain = models.Model("plain", models.paper_apply, "half_sum", None, None)  # no fast path: Jacobians
    Kj = largen.gram_tiled(largen.empirical_tile(plain, params, consts, X, chunk=16), 90, rows=32)
    ref_j = ntk.naive_ntk_gram(models.paper_apply, params, consts, X)
    assert np.max(np.abs(Kj - ref_j)) <= 1e-12 * np.max(np.abs(ref_j))


def test_drift_tiled_equals_full_gram_drift():
    """||H - H0||_F / ||H0||_F from tiles (no n x n H) equals ntk.kernel_drift on the full Grams, for
    H0 stored float64 and float32 (then to float32's rounding)."""
    import jax
    import jax.numpy as jnp

    X = jnp.asarray(unit_sphere(np.random.default_rng(4), 90, 6))
    params, consts = models.paper_init(jax.random.PRNGKey(0), 6, 48, 1.0, jnp.float64)
    moved = jax.tree.map(lambda p: p + 0.05 * jnp.sin(jnp.arange(p.size).reshape(p.shape)), params)
    H0 = ntk.gram(models.PAPER, params, consts, X)
    ref = ntk.kernel_drift(ntk.gram(models.PAPER, moved, consts, X), H0)
    tile = largen.empirical_tile(models.PAPER, moved, consts, X)
    assert ref > 1e-3
    assert abs(largen.drift_tiled(tile, H0, rows=32) - ref) <= 1e-12 * ref
    assert abs(largen.drift_tiled(tile, H0.astype(np.float32), rows=40) - ref) <= 1e-6 * ref
    with pytest.raises(ValueError, match="rows"):
        largen.drift_tiled(tile, H0, rows=0)


def test_float32_storage_error_on_predicted_loss(k512):
    """K stored in float32 = K + E, |E_ij| <= 2^-24 |K_ij|, and every product made in float32 tiles,
    fl(K32 x) = (K32 + F_k) x with |F_k| <= rho |K32| (``largen.matvec``). For GD the relative loss
    change is within ``float32_storage_bound`` with ||E||_2 + rho ||K32||_F (the Duhamel / telescoping
    argument holds with a different F_k at each step, ||I - eta (K + E + F_k)|| <= 1 + eta ||E + F_k||),
    and with the computable (2^-24 + rho (1 + 2^-24)) ||K||_F; for the momentum methods (no norm bound)
    the measured change stays below 1e-5 over 300 steps at eta = 1 / lambda_max although their loss
    falls by up to 1e-14."""
    K, e0, lam, V, coef = k512
    K32 = K.astype(np.float32)
    E = K32.astype(np.float64) - K
    norm_E = float(np.max(np.abs(np.linalg.eigvalsh(E))))
    assert norm_E <= largen.U32 * largen.spectral_norm_bound(K)
    rho = largen.product_error_coefficient(K.shape[0])
    norm_EF = norm_E + rho * largen.spectral_norm_bound(K32)
    eta = 1.0 / lam[-1]
    t = np.arange(301) * eta
    for name, kw in (("gd", {}), ("hb", {"beta": 0.9}), ("nag_c", {})):
        spec, h = _hyper(name, eta, **kw)
        ref = theory.modal_loss(theory.discrete_modes(spec, h, lam, coef, 300), 1.0)
        got = largen.discrete_matvec(spec, h, K32, e0, 300, 1.0).loss
        rel = np.abs(got / ref - 1)
        if name == "gd":
            assert np.all(rel <= largen.float32_storage_bound(t, norm_EF, ref[0], ref) + 1e-13)  # + round-off
            frob = (largen.U32 + rho * (1 + largen.U32)) * largen.spectral_norm_bound(K)
            assert np.all(rel <= largen.float32_storage_bound(t, frob, ref[0], ref) + 1e-13)
            assert rel.max() > 1e-10  # the float32 error is really there (the test can fail)
        assert rel.max() < 1e-5


@pytest.mark.parametrize("n, rows, cols", [(300, 64, 16), (300, 1024, 256), (257, 100, 300)])
def test_float32_products_within_their_bound(n, rows, cols):
    """``matvec`` of a float32 K (tiles of ``cols`` columns: full tiles and a remainder, several row
    blocks) against the exact product of the stored K with x, formed in float64:
    |fl(K32 x) - K32 x| <= rho |K32| |x| entry by entry, rho = ``product_error_coefficient(n, cols)``,
    for one vector and a block of vectors; the error is there (float32 is used); a float64 K's product
    is ``K @ x`` bit for bit."""
    rng = np.random.default_rng(n + cols)
    X = unit_sphere(rng, n, 5)
    K = largen.gram_tiled(largen.hinf_tile(X), n)
    K32 = K.astype(np.float32)
    exact = K32.astype(np.float64)
    rho = largen.product_error_coefficient(n, cols)
    mv = largen.matvec(K32, rows, cols)
    for x in (rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 3, n), rng.standard_normal((n, 3))):
        got = mv(x)
        assert got.dtype == np.float64 and got.shape == x.shape
        err = np.abs(got - exact @ x)
        assert np.all(err <= rho * (np.abs(exact) @ np.abs(x)))
        assert err.max() > 0
    x = rng.standard_normal(n)
    assert np.array_equal(largen.matvec(K, rows, cols)(x), K @ x)
    with pytest.raises(ValueError, match="cols: expected an integer >= 1, got 0"):
        largen.matvec(K32, rows, 0)


# --------------------------------------------------------------------------- Lanczos
@pytest.mark.parametrize("n", [256, 1024])
def test_lanczos_lambda_max_vs_eigvalsh(n):
    _, K, _ = _sphere_kernel(n)
    lam = np.linalg.eigvalsh(K)
    ex = largen.extreme_eigenvalues(K, top=3, bottom=0)
    assert ex.converged
    np.testing.assert_allclose(ex.top, lam[::-1][:3], rtol=1e-8)
    assert abs(ex.lambda_max - lam[-1]) <= 1e-8 * lam[-1]
    for theta, r in zip(ex.top, ex.top_residual):  # an eigenvalue lies within the residual
        assert np.min(np.abs(lam - theta)) <= r + 1e-13 * lam[-1]
    assert ex.iterations < n // 4


def test_lanczos_lambda_min_separated(rng):
    """A well separated lambda_min (relative gap 1e-2 of the spread) converges to 1e-8; the residual
    bound holds."""
    n = 400
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.r_[1e-3, np.linspace(0.02, 5.0, n - 1)]
    K = (Q * lam) @ Q.T
    ex = largen.extreme_eigenvalues(K, top=1, bottom=1, max_iter=400)
    assert ex.converged
    assert abs(ex.lambda_min - 1e-3) <= 1e-8 * 1e-3 + 2e-15 * 5.0 * n**0.5
    assert abs(ex.lambda_min - 1e-3) <= ex.bottom_residual[0]
    assert abs(ex.lambda_max - 5.0) <= 1e-8 * 5.0


def test_lanczos_lambda_min_dense_end_is_an_upper_bound():
    """The NTK's small end is dense: stopped early, the smallest Ritz value is an upper bound on
    lambda_min (interlacing), ``converged`` is False, and the residual still brackets an eigenvalue."""
    _, K, _ = _sphere_kernel(512)
    lam = np.linalg.eigvalsh(K)
    ex = largen.extreme_eigenvalues(K, top=1, bottom=1, max_iter=30)
    assert not ex.converged
    assert ex.lambda_min >= lam[0] - 1e-12 * lam[-1]
    assert np.min(np.abs(lam - ex.lambda_min)) <= ex.bottom_residual[0]
    full = largen.extreme_eigenvalues(K, top=1, bottom=1, max_iter=512)
    assert full.converged
    assert abs(full.lambda_min - lam[0]) <= 1e-8 * lam[0]


# --------------------------------------------------------------------------- discrete recurrences
CASES = [
    ("gd", {}),
    ("hb", {"beta": 0.9}),
    ("nag", {"beta": 0.8}),
    ("nag_c", {"r": 3.0}),
    ("nag_c", {"r": 5.0}),
]


@pytest.mark.parametrize("name,kw", CASES)
def test_discrete_matvec_equals_eigenbasis(k512, name, kw):
    K, e0, lam, V, coef = k512
    spec, h = _hyper(name, 1.0 / lam[-1], **kw)
    record = np.r_[0:20, 20:201:9]
    got = largen.discrete_matvec(spec, h, K, e0, 200, 0.7, record=record, keep=[0, 5, len(record) - 1])
    modes = theory.discrete_modes(spec, h, lam, coef, 200)
    np.testing.assert_allclose(got.loss, theory.modal_loss(modes[record], 0.7), rtol=1e-8)
    ref_e = modes[record[got.kept]] @ V.T
    err = np.linalg.norm(got.errors - ref_e, axis=1) / np.linalg.norm(ref_e, axis=1)
    assert err.max() <= 1e-8
    assert got.method == "matvec" and got.iterations == 200 and got.converged


@pytest.mark.parametrize(
    "name,kw,sched",
    [
        ("gd", {}, {"schedule": "cosine_decay", "init_value": 1.0, "decay_steps": 150, "alpha": 0.1}),
        (
            "hb",
            {"beta": 0.9},
            {"schedule": "piecewise", "init_value": 1.0, "boundaries_and_scales": {60: 0.3}},
        ),
    ],
)
def test_discrete_matvec_scheduled_equals_eigenbasis(k512, name, kw, sched):
    K, e0, lam, V, coef = k512
    sched = dict(sched, init_value=sched["init_value"] / lam[-1])
    spec, h = _hyper(name, schedules.from_config(sched), **kw)
    got = largen.discrete_matvec(spec, h, K, e0, 150, 1.0)
    ref = theory.modal_loss(theory.discrete_modes(spec, h, lam, coef, 150), 1.0)
    np.testing.assert_allclose(got.loss, ref, rtol=1e-8)


def test_discrete_matvec_equals_hand_written_loops(k512):
    K, e0, lam, _, _ = k512
    eta, beta, steps = 0.9 / lam[-1], 0.85, 120
    loss = lambda e: 0.5 * float(e @ e)  # noqa: E731
    # GD: e_k = e_{k-1} - eta K e_{k-1}
    e, ref = e0.copy(), [loss(e0)]
    for _ in range(steps):
        e = e - eta * (K @ e)
        ref.append(loss(e))
    np.testing.assert_allclose(
        largen.discrete_matvec(*_hyper("gd", eta), K, e0, steps, 1.0).loss, ref, rtol=1e-10
    )
    # heavy ball, optax form in the output space: v_k = beta v_{k-1} + K e_{k-1}, e_k = e_{k-1} - eta v_k
    e, v, ref = e0.copy(), np.zeros_like(e0), [loss(e0)]
    for _ in range(steps):
        v = beta * v + K @ e
        e = e - eta * v
        ref.append(loss(e))
    got = largen.discrete_matvec(*_hyper("hb", eta, beta=beta), K, e0, steps, 1.0).loss
    np.testing.assert_allclose(got, ref, rtol=1e-10)
    # NAG-C (torch form, r = 3): e_1 = (I - eta K) e_0, e_2 = (I - eta (1 + b_2) K) e_1,
    # e_{k+1} = (I - eta (1 + b_{k+1}) K + q_k) e_k - q_k (I - eta K) e_{k-1}, q_k = b_{k+1}^2 / b_k
    b = lambda k: (k - 1.0) / (k + 2.0)  # noqa: E731
    es = [e0, e0 - eta * (K @ e0)]
    es.append(es[1] - eta * (1 + b(2)) * (K @ es[1]))
    for k in range(2, steps):
        q = b(k + 1) ** 2 / b(k)
        e, p = es[-1], es[-2]
        es.append(e - eta * (1 + b(k + 1)) * (K @ e) + q * e - q * (p - eta * (K @ p)))
    got = largen.discrete_matvec(*_hyper("nag_c", eta), K, e0, steps, 1.0).loss
    np.testing.assert_allclose(got, [loss(e) for e in es], rtol=1e-9)


def test_discrete_matvec_batch_equals_single_runs(k512):
    K, e0, lam, _, _ = k512
    spec = optimizers.get("hb")
    hypers = [{"eta": 1.0 / lam[-1], "beta": 0.5}, {"eta": 0.5 / lam[-1], "beta": 0.95}]
    E0 = np.stack([e0, np.roll(e0, 3)], axis=1)
    batch = largen.discrete_matvec_batch(spec, hypers, K, E0, 80, 2.0, keep=[80])
    for i, h in enumerate(hypers):
        one = largen.discrete_matvec(spec, h, K, E0[:, i], 80, 2.0, keep=[80])
        np.testing.assert_allclose(batch[i].loss, one.loss, rtol=1e-13)
        np.testing.assert_allclose(batch[i].errors, one.errors, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name,kw", CASES)
def test_discrete_lanczos_equals_eigenbasis_and_matvec(k512, name, kw):
    """The recurrence as a Krylov matrix function equals the eigenbasis path (loss, e_k, c e^T K e) and
    the exact matvec recurrence to 1e-8, in fewer products than steps for GD."""
    K, e0, lam, V, coef = k512
    spec, h = _hyper(name, 1.0 / lam[-1], **kw)
    record = np.r_[0:20, 20:201:9]
    got = largen.discrete_lanczos(spec, h, K, e0, 200, 0.7, record=record, keep=[0, 5, len(record) - 1])
    modes = theory.discrete_modes(spec, h, lam, coef, 200)[record]
    np.testing.assert_allclose(got.loss, theory.modal_loss(modes, 0.7), rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(
        got.grad_norm_sq, theory.modal_grad_norm_sq(modes, lam, 0.7), rtol=1e-8, atol=1e-14
    )
    ref_e = modes[got.kept] @ V.T
    err = np.linalg.norm(got.errors - ref_e, axis=1) / np.linalg.norm(ref_e, axis=1)
    assert err.max() <= 1e-8
    mv = largen.discrete_matvec(spec, h, K, e0, 200, 0.7, record=record)
    np.testing.assert_allclose(got.loss, mv.loss, rtol=1e-8, atol=1e-14)
    assert got.method == "lanczos" and got.converged and np.array_equal(got.steps, record)
    if name == "gd":
        assert got.iterations < 100  # m ~ sqrt(k eta lambda_max) products, not one per step


def test_discrete_lanczos_scheduled_and_exact_at_full_degree(k512):
    """A scheduled eta goes through the same polynomials; with rtol below round-off the basis reaches
    m = steps + 1, where the projection is exact (deg p_k < m)."""
    K, e0, lam, V, coef = k512
    sched = schedules.from_config(
        {"schedule": "cosine_decay", "init_value": 1.0 / lam[-1], "decay_steps": 60, "alpha": 0.1}
    )
    spec, h = _hyper("hb", sched, beta=0.9)
    got = largen.discrete_lanczos(spec, h, K, e0, 60, 1.0, rtol=1e-30, atol=0.0)
    ref = theory.modal_loss(theory.discrete_modes(spec, h, lam, coef, 60), 1.0)
    np.testing.assert_allclose(got.loss, ref, rtol=1e-9)
    assert got.iterations >= 61


def test_discrete_lanczos_overflow_stops_unconverged(k512):
    """A diverging recurrence whose polynomial overflows: no estimate, so the result says unconverged
    at once (the recurrence face then runs the exact matvec recurrence) instead of growing the basis."""
    K, e0, lam, _, _ = k512
    got = largen.discrete_lanczos(*_hyper("gd", 2.5 / lam[-1]), K, e0, 2000, 1.0)
    assert not got.converged and got.iterations <= 25 and got.error_estimate == np.inf


def test_shared_basis_serves_every_face_with_max_products(k512):
    """One KrylovBasis of (K, e0) for a recurrence and two ODEs: the same results as separate bases,
    and the products made are the largest m any of them needed, not the sum."""
    K, e0, lam, _, _ = k512
    eta = 1.0 / lam[-1]
    spec, h = _hyper("hb", eta, beta=0.9)
    ode_a, ode_b = _odes(lam[-1], eta)[1], _odes(lam[-1], eta)[0]
    t_a, t_b = np.arange(101) * ode_a.time_step, np.arange(101) * ode_b.time_step
    alone = [
        largen.discrete_lanczos(spec, h, K, e0, 100, 1.0),
        largen.ode_lanczos(ode_a, K, e0, t_a, 1.0),
        largen.ode_lanczos(ode_b, K, e0, t_b, 1.0),
    ]
    basis = largen.KrylovBasis(K, e0, capacity=800)
    shared = [
        largen.discrete_lanczos(spec, h, K, e0, 100, 1.0, basis=basis),
        largen.ode_lanczos(ode_a, K, e0, t_a, 1.0, basis=basis),
        largen.ode_lanczos(ode_b, K, e0, t_b, 1.0, basis=basis),
    ]
    for a, b in zip(alone, shared):
        np.testing.assert_allclose(b.loss, a.loss, rtol=1e-12)
        assert a.iterations == b.iterations
    assert basis.products == max(a.iterations for a in alone)
    with pytest.raises(ValueError, match="another e0"):
        largen.ode_lanczos(ode_b, K, 2 * e0, t_b, 1.0, basis=basis)


# --------------------------------------------------------------------------- ODE solutions
def _odes(lam_max: float, eta: float):
    s = math.sqrt(eta)
    return [
        odes.GradientFlow(time_step=eta),
        odes.ConstantDamping(time_step=s, gamma=(1 - 0.9) / s),  # HB's ODE: most modes underdamped
        odes.ConstantDamping(time_step=s, gamma=2.0 * math.sqrt(0.05 * lam_max)),  # over- and underdamped
        odes.ConstantDamping(time_step=s, gamma=6.0 * math.sqrt(lam_max)),  # all overdamped
        odes.VanishingDamping(time_step=s, r=3.0),
        odes.VanishingDamping(time_step=s, r=5.0),
    ]


@pytest.mark.parametrize("i", range(6))
def test_ode_lanczos_equals_eigenbasis(k512, i):
    K, e0, lam, V, coef = k512
    eta = 1.0 / lam[-1]
    ode = _odes(lam[-1], eta)[i]
    t = np.linspace(0.0, 300.0, 50) * ode.time_step
    got = largen.ode_lanczos(ode, K, e0, t, 0.5, keep=range(50))
    modes = ode.modes(lam, coef, t)
    np.testing.assert_allclose(got.loss, theory.modal_loss(modes, 0.5), rtol=1e-8)
    ref_e = modes @ V.T
    err = np.linalg.norm(got.errors - ref_e, axis=1) / np.linalg.norm(ref_e, axis=1)
    assert err.max() <= 1e-8
    assert got.converged and got.error_estimate <= 1e-10 and got.method == "lanczos"
    assert got.iterations < 200


@pytest.mark.parametrize("name", ["nag", "nag_c"])
def test_highres_ode_lanczos_equals_eigenbasis(k512, name):
    """The high-resolution ODEs (constant damping: closed form; vanishing: DOP853 per Ritz value) are
    matrix functions too (e'(0) = -v0 K e0 is one as well)."""
    K, e0, lam, V, coef = k512
    spec, h = _hyper(name, 0.5 / lam[-1], **({"beta": 0.9} if name == "nag" else {}))
    hr = spec.ode_hr(h)
    t = np.arange(0, 201, 8) * hr.time_step
    got = largen.ode_lanczos(hr, K, e0, t, 1.0)
    np.testing.assert_allclose(got.loss, theory.modal_loss(hr.modes(lam, coef, t), 1.0), rtol=1e-8)


def test_ode_lanczos_equals_eigenbasis_n1024():
    _, K, e0 = _sphere_kernel(1024, d=12, seed=4)
    lam, V = theory.eigen(K)
    coef = V.T @ e0
    eta = 1.0 / lam[-1]
    for ode in _odes(lam[-1], eta)[:2] + _odes(lam[-1], eta)[4:5]:
        t = np.linspace(0.0, 300.0, 50) * ode.time_step
        got = largen.ode_lanczos(ode, K, e0, t, 1.0)
        np.testing.assert_allclose(got.loss, theory.modal_loss(ode.modes(lam, coef, t), 1.0), rtol=1e-8)


def test_ode_lanczos_unconverged_estimate_is_honest(k512):
    """With too few iterations the flag is False and the estimate is not below the true error."""
    K, e0, lam, V, coef = k512
    ode = _odes(lam[-1], 1.0 / lam[-1])[1]
    t = np.linspace(0.0, 300.0, 30) * ode.time_step
    ref = ode.modes(lam, coef, t) @ V.T
    for max_iter in (30, 50, 60):
        got = largen.ode_lanczos(ode, K, e0, t, 1.0, keep=range(30), max_iter=max_iter)
        true = np.max(np.linalg.norm(got.errors - ref, axis=1) / np.linalg.norm(ref, axis=1))
        assert not got.converged
        assert true <= got.error_estimate


def test_matrix_function_invariants(k512):
    K, e0, lam, _, _ = k512
    # e(0) = e0
    t = np.array([0.0, 0.3, 1.1])
    for ode in _odes(lam[-1], 1.0 / lam[-1]):
        got = largen.ode_lanczos(ode, K, e0, t * ode.time_step, 1.0, keep=[0])
        np.testing.assert_allclose(got.errors[0], e0, rtol=0, atol=1e-12 * np.linalg.norm(e0))
    # semigroup: exp(-(s + t) K) e0 = exp(-s K) exp(-t K) e0
    flow = odes.GradientFlow(time_step=1.0)
    s, u = 2.0 / lam[-1], 30.0 / lam[-1]
    mid = largen.ode_lanczos(flow, K, e0, [u], 1.0, keep=[0]).errors[0]
    two = largen.ode_lanczos(flow, K, mid, [s], 1.0, keep=[0]).errors[0]
    one = largen.ode_lanczos(flow, K, e0, [s + u], 1.0, keep=[0]).errors[0]
    assert np.linalg.norm(two - one) <= 1e-10 * np.linalg.norm(one)
    # undamped oscillator e'' + K e = 0: e = cos(t sqrt K) e0, e' = -sqrt K sin(t sqrt K) e0, energy
    # (|e'|^2 + e.K e) / 2 = e0.K e0 / 2 at every t
    ts = np.linspace(0.0, 40.0, 21) / math.sqrt(lam[-1])
    w = lambda th: np.sqrt(np.maximum(th, 0.0))  # noqa: E731
    pos = largen.lanczos_function(lambda th: np.cos(np.outer(ts, w(th))), K, e0)
    vel = largen.lanczos_function(lambda th: -w(th) * np.sin(np.outer(ts, w(th))), K, e0)
    E, dE = pos.vectors(), vel.vectors()
    np.testing.assert_allclose(pos.quadratic(), np.sum(E * (E @ K), 1), rtol=1e-10)
    energy = 0.5 * (np.sum(dE * dE, 1) + np.sum(E * (E @ K), 1))
    np.testing.assert_allclose(energy, 0.5 * e0 @ K @ e0, rtol=1e-9)


def test_flow_is_the_eta_to_zero_limit_of_gd_and_hb(k512):
    """GD -> gradient flow at order 1 in eta, HB -> its constant-damping ODE at order 1/2, both in the
    output space (matvec recurrence vs Lanczos matrix function) at a fixed ODE time."""
    K, e0, lam, _, _ = k512
    gaps = {"gd": [], "hb": []}
    for f in (0.04, 0.02, 0.01):
        eta = f / lam[-1]
        spec, h = _hyper("gd", eta)
        steps = round(2.0 / f)
        d = largen.discrete_matvec(spec, h, K, e0, steps, 1.0, record=[steps], keep=[0]).errors[0]
        o = largen.ode_lanczos(spec.ode(h), K, e0, [steps * eta], 1.0, keep=[0]).errors[0]
        gaps["gd"].append(np.linalg.norm(d - o))
        beta = 1.0 - 0.5 * math.sqrt(eta)  # gamma = (1 - beta) / sqrt(eta) = 0.5 fixed
        spec, h = _hyper("hb", eta, beta=beta)
        ode = spec.ode(h)
        steps = round(3.0 / ode.time_step)
        d = largen.discrete_matvec(spec, h, K, e0, steps, 1.0, record=[steps], keep=[0]).errors[0]
        o = largen.ode_lanczos(ode, K, e0, [steps * ode.time_step], 1.0, keep=[0]).errors[0]
        gaps["hb"].append(np.linalg.norm(d - o))
    order = {k: np.log2(np.array(v[:-1]) / np.array(v[1:])) for k, v in gaps.items()}
    assert np.all(np.abs(order["gd"] - 1.0) < 0.15), order
    assert np.all(np.abs(order["hb"] - 0.5) < 0.2), order


# --------------------------------------------------------------------------- bad input
def test_bad_inputs_name_the_value(k512):
    K, e0, lam, _, _ = k512
    spec, h = _hyper("gd", 0.1)
    flow = odes.GradientFlow(time_step=0.1)
    with pytest.raises(ValueError, match="K: expected a non-empty square"):
        largen.discrete_matvec(spec, h, K[:, :5], e0, 3, 1.0)
    with pytest.raises(ValueError, match=r"e0: expected"):
        largen.discrete_matvec(spec, h, K, e0[:5], 3, 1.0)
    with pytest.raises(ValueError, match="steps: expected an integer >= 0"):
        largen.discrete_matvec(spec, h, K, e0, -1, 1.0)
    with pytest.raises(ValueError, match="record: expected ascending"):
        largen.discrete_matvec(spec, h, K, e0, 3, 1.0, record=[0, 4])
    with pytest.raises(ValueError, match=r"keep: expected indices in \[0, 4\)"):
        largen.discrete_matvec(spec, h, K, e0, 3, 1.0, keep=[4])
    with pytest.raises(ValueError, match="'adam' has no linear recurrence"):
        largen.discrete_matvec(optimizers.get("adam"), {"eta": 0.1}, K, e0, 3, 1.0)
    with pytest.raises(ValueError, match=r"c: expected a finite number > 0 \(the loss scale\), got -1.0"):
        largen.discrete_matvec(spec, h, K, e0, 3, -1.0)
    with pytest.raises(
        ValueError, match=r"c_test: expected a finite number > 0 \(the loss scale\), got None"
    ):
        largen.ode_lanczos(flow, K, e0, [1.0], 1.0, K_cross=K[:3], e0_test=e0[:3])
    with pytest.raises(ValueError, match="t: expected a non-empty 1-d array of finite times >= 0"):
        largen.ode_lanczos(flow, K, e0, [-1.0], 1.0)
    with pytest.raises(ValueError, match="ode: expected an ntkdyn.odes kind"):
        largen.ode_lanczos("flow", K, e0, [1.0], 1.0)
    with pytest.raises(ValueError, match="dtype: 'float16' is not allowed; allowed: float64, float32"):
        largen.gram_tiled(largen.hinf_tile(np.eye(3)), 3, dtype="float16")
    with pytest.raises(ValueError, match=r"out: expected a \(3, 3\) float32 array"):
        largen.gram_tiled(largen.hinf_tile(np.eye(3)), 3, dtype="float32", out=np.empty((3, 3)))
    with pytest.raises(ValueError, match=r"top: expected an integer in \[0, 512\]"):
        largen.extreme_eigenvalues(K, top=-1)


# ------------------------------------------------------------------ gradient norms, held-out, regimes
def test_grad_norm_sq_equals_eigenbasis(k512):
    K, e0, lam, V, coef = k512
    spec, h = _hyper("hb", 1.0 / lam[-1], beta=0.9)
    got = largen.discrete_matvec(spec, h, K, e0, 60, 0.3, record=[0, 7, 60])
    ref = theory.modal_grad_norm_sq(theory.discrete_modes(spec, h, lam, coef, 60)[[0, 7, 60]], lam, 0.3)
    np.testing.assert_allclose(got.grad_norm_sq, ref, rtol=1e-9)
    ode = spec.ode(h)
    t = np.linspace(0.0, 60.0, 7) * ode.time_step
    got = largen.ode_lanczos(ode, K, e0, t, 0.3)
    np.testing.assert_allclose(
        got.grad_norm_sq, theory.modal_grad_norm_sq(ode.modes(lam, coef, t), lam, 0.3), rtol=1e-8
    )


def test_held_out_matvec_and_lanczos_equal_pseudo_inverse_path():
    rng = np.random.default_rng(5)
    X, Xt = unit_sphere(rng, 300, 8), unit_sphere(rng, 70, 8)
    c = 2.0 / 300
    K = c * ntk.paper_kernels(X)[1]
    K_cross = c * ntk.paper_kernels(Xt, X)[1]
    e0, e0t = rng.standard_normal(300), rng.standard_normal(70)
    lam, V = theory.eigen(K)
    coef = V.T @ e0
    M = theory.held_out_map(K_cross, lam, V, theory.null_modes(lam, 300 * np.finfo(float).eps))
    for name, kw in (("gd", {}), ("nag", {"beta": 0.9}), ("nag_c", {})):
        spec, h = _hyper(name, 1.0 / lam[-1], **kw)
        rec = np.arange(0, 101, 10)
        got = largen.discrete_matvec(
            spec, h, K, e0, 100, c, record=rec, keep=[3, 10], K_cross=K_cross, e0_test=e0t, c_test=1 / 70
        )
        modes = theory.discrete_modes(spec, h, lam, coef, 100)[rec]
        ref = theory.held_out_errors(modes, coef, M, e0t)
        np.testing.assert_allclose(got.test_loss, theory.modal_loss(ref, 1 / 70), rtol=1e-8)
        np.testing.assert_allclose(got.test_errors, ref[[3, 10]], rtol=1e-8, atol=1e-10)
        ode = spec.ode(h)
        t = rec * ode.time_step
        got = largen.ode_lanczos(ode, K, e0, t, c, keep=[3, 10], K_cross=K_cross, e0_test=e0t, c_test=1 / 70)
        ref = theory.held_out_errors(ode.modes(lam, coef, t), coef, M, e0t)
        np.testing.assert_allclose(got.test_loss, theory.modal_loss(ref, 1 / 70), rtol=1e-8)
        np.testing.assert_allclose(got.test_errors, ref[[3, 10]], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", ["gd", "hb", "nag", "nag_c"])
def test_regime_from_extremes_equals_full_spectrum(name):
    lam = np.r_[0.01, np.geomspace(0.02, 1.0, 300)]
    spec = optimizers.get(name)
    betas = [0.3, 0.9, 0.99] if name in ("hb", "nag") else [None]
    for f in (0.05, 0.5, 1.0, 1.9, 2.2, 4.5):
        for beta in betas:
            h = optimizers.resolve_hyper(spec, {"eta": f} if beta is None else {"eta": f, "beta": beta})
            ode = spec.ode(h)
            got = largen.regime_from_extremes(spec, h, lam[0], lam[-1], ode)
            ref = theory.asymptotic_regime(spec, h, lam, ode)
            st = theory.stability(spec, h, lam)
            assert got["regime"] == ref["regime"] and got["stable"] == st["stable"], (f, beta)
            assert math.isclose(got["rate"], ref["rate"], rel_tol=1e-12)
            assert math.isclose(got["max_spectral_radius"], st["max_spectral_radius"], rel_tol=1e-12)
            if ref["horizon"] is not None:
                assert math.isclose(got["horizon"], ref["horizon"], rel_tol=1e-12)


def test_extremes_from_the_shared_basis_cost_the_faces_nothing(k512):
    """``extreme_eigenvalues(basis=)``: Lanczos started from e0 in the run's ``KrylovBasis``. lambda_max
    equals eigvalsh's, lambda_min's Ritz value is >= the smallest eigenvalue (interlacing) with a true
    residual; the basis keeps the products, so the ODE face given the same basis afterwards makes only
    the products it needs beyond them (max, not sum)."""
    K, e0, lam, V, coef = k512
    basis = largen.KrylovBasis(K, e0, capacity=400)
    ext = largen.extreme_eigenvalues(K, 1, 1, max_iter=60, basis=basis)
    assert basis.products == ext.iterations <= 60
    np.testing.assert_allclose(ext.lambda_max, lam[-1], rtol=1e-10)
    assert ext.lambda_min >= lam[0] - 1e-12 * lam[-1]
    lo = np.abs(lam - ext.lambda_min).min()
    assert lo <= ext.bottom_residual[0] + 1e-12 * lam[-1]
    ode = _odes(lam[-1], 1.0 / lam[-1])[1]
    t = np.arange(101) * ode.time_step
    alone = largen.ode_lanczos(ode, K, e0, t, 1.0)
    shared = largen.ode_lanczos(ode, K, e0, t, 1.0, basis=basis)
    np.testing.assert_allclose(shared.loss, alone.loss, rtol=1e-12)
    assert basis.products == max(ext.iterations, alone.iterations)
    with pytest.raises(ValueError, match="basis: built for n = 512, K has n = 100"):
        largen.extreme_eigenvalues(K[:100, :100], basis=basis)
