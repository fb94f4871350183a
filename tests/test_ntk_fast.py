"""Fast empirical NTK: Jacobian contraction vs NTK-vector products vs exact closed forms,
chunking, memory plan, float64 accumulation, and the 1/sqrt(m) approach to the analytic kernel."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from ntkdyn import data, models, ntk


def _mlp(width=12, depth=2, b_std=0.1, d=4, seed=0, dtype=jnp.float64, W_std=1.4):
    module = models.ntk_mlp(jax.random.PRNGKey(seed), d, width, depth, W_std, b_std, dtype)
    return models.from_flax(module, "half_sum", "mlp")


def _flat_jacobian(apply, params, consts, X):
    """Independent J (n x P) by jax.jacrev over the flattened parameter vector."""
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    return np.asarray(jax.jacrev(lambda v: apply(unravel(v), consts, X))(flat))


# --------------------------------------------------------------------------- exact paths
@pytest.mark.parametrize("method", ["jacobian", "ntvp"])
@pytest.mark.parametrize("chunk", [3, 100])
def test_paper_fast_path_equals_generic_paths(method, chunk):
    X, _ = data.sphere(11, 6, "gaussian", 2)
    X = jnp.asarray(X)
    params, consts = models.paper_init(jax.random.PRNGKey(5), 6, 257, 1.0, jnp.float64)
    fast = np.asarray(models.paper_gram(params, consts, X))
    H = ntk.ntk_gram(models.PAPER.apply, params, consts, X, chunk=chunk, method=method)
    np.testing.assert_allclose(H, fast, rtol=1e-10, atol=1e-12 * np.abs(fast).max())
    assert np.array_equal(H, H.T)


@pytest.mark.parametrize("depth, b_std", [(1, 0.0), (2, 0.3), (3, 0.0), (3, 0.1)])
def test_structured_mlp_gram_equals_jacobian(depth, b_std):
    model, params, consts = _mlp(width=10, depth=depth, b_std=b_std, seed=depth)
    X = jnp.asarray(np.random.default_rng(depth).standard_normal((9, 4)))
    J = _flat_jacobian(model.apply, params, consts, X)
    want = J @ J.T
    np.testing.assert_allclose(np.asarray(ntk.mlp_gram(params, X, 1.4, b_std)), want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        ntk.ntk_gram(model.apply, params, consts, X, chunk=4), want, rtol=1e-10, atol=1e-12
    )
    fast_model = model.__class__(model.name, model.apply, model.loss, ntk.mlp_fast_gram(1.4, b_std))
    np.testing.assert_allclose(ntk.gram(fast_model, params, consts, X), want, rtol=1e-10, atol=1e-12)


def test_naive_reference_equals_flat_jacobian():
    model, params, consts = _mlp(width=7, depth=2)
    X = jnp.asarray(np.random.default_rng(1).standard_normal((5, 4)))
    J = _flat_jacobian(model.apply, params, consts, X)
    np.testing.assert_allclose(
        ntk.naive_ntk_gram(model.apply, params, consts, X), J @ J.T, rtol=1e-12, atol=1e-13
    )


# --------------------------------------------------------------------------- chunking and memory
def test_chunked_unchunked_and_streamed_results_agree():
    """Every block layout and method gives the same H (unpadded, padded, grouped with column
    blocks recomputed, NTK-vector products)."""
    model, params, consts = _mlp(width=16, depth=3, b_std=0.2)
    X = jnp.asarray(np.random.default_rng(0).standard_normal((23, 4)))
    whole = ntk.ntk_gram(model.apply, params, consts, X, chunk=1000, method="jacobian")
    P = sum(leaf.size for leaf in jax.tree.leaves(params))
    tiny = 3 * 5 * P * 8 / 2**30  # room for 3 blocks of 5 rows: groups of 2 + 1 recomputed column block
    plan = ntk.plan_ntk(model.apply, params, consts, X, chunk=5, method="jacobian", memory_gb=tiny)
    assert plan.blocks == 5 and plan.group == 2 and plan.jacobian_blocks > plan.blocks
    assert plan.peak_jacobian_bytes <= tiny * 2**30
    for kw in [dict(chunk=4), dict(chunk=5, memory_gb=tiny), dict(chunk=7, method="ntvp")]:
        H = ntk.ntk_gram(model.apply, params, consts, X, **kw)
        np.testing.assert_allclose(H, whole, rtol=1e-13, atol=1e-13 * np.abs(whole).max(), err_msg=str(kw))
        assert np.array_equal(H, H.T)


def test_memory_plan_for_2000_inputs_and_a_million_parameters():
    """The plan (no compute) keeps the Jacobian blocks within the budget for n = 2000, P ~ 1e6."""
    model, params, consts = _mlp(width=700, depth=3, b_std=0.0, d=64, dtype=jnp.float32)
    P = sum(leaf.size for leaf in jax.tree.leaves(params))
    assert P > 10**6
    X = jnp.zeros((2000, 64), jnp.float32)
    for gb in (0.5, 2.0):
        plan = ntk.plan_ntk(model.apply, params, consts, X, memory_gb=gb)
        assert plan.method == "jacobian"  # dense layers: F ~ 2P, contraction is cheaper
        assert plan.peak_jacobian_bytes <= gb * 2**30
        assert plan.chunk * plan.blocks >= 2000 and plan.chunk * (plan.blocks - 1) < 2000
        full = 2000 * P * 4
        assert full > gb * 2**30 and plan.jacobian_blocks > plan.blocks  # streamed, not stored whole


def test_auto_prefers_ntvp_when_forward_is_cheap():
    """A model whose forward pass touches few FLOPs per parameter (a lookup table): NTK-vector
    products are cheaper than materialising per-example Jacobians; results agree."""

    def apply(p, c, X):
        idx = jnp.clip((X[:, 0] * 1000).astype(jnp.int32) % p["table"].shape[0], 0)
        return jnp.tanh(X @ p["w"]) + p["table"][idx] * X[:, 1]

    rng = np.random.default_rng(3)
    params = {"w": jnp.asarray(rng.standard_normal(3)), "table": jnp.asarray(rng.standard_normal(5000))}
    X = jnp.asarray(rng.uniform(0, 1, (40, 3)))
    plan = ntk.plan_ntk(apply, params, {}, X, chunk=8)
    assert plan.method == "ntvp" and plan.cost_ntvp < plan.cost_jacobian
    mlp_model, mlp_params, mlp_consts = _mlp()
    assert ntk.plan_ntk(mlp_model.apply, mlp_params, mlp_consts, jnp.ones((40, 4))).method == "jacobian"
    H = ntk.ntk_gram(apply, params, {}, X, chunk=8)
    J = _flat_jacobian(apply, params, {}, X)
    np.testing.assert_allclose(H, J @ J.T, rtol=1e-12, atol=1e-12)


def test_bad_method_is_rejected():
    model, params, consts = _mlp()
    with pytest.raises(ValueError, match="method"):
        ntk.ntk_gram(model.apply, params, consts, jnp.ones((3, 4)), method="fast")


# --------------------------------------------------------------------------- precision
def test_float64_accumulation_of_float32_jacobians():
    """accumulate='float64' returns the exact Gram of the float32 Jacobian (products of float32
    numbers are exact in float64), so H stays positive semi-definite even when lambda_min is far
    below float32 resolution (near-duplicate inputs)."""
    model, params, consts = _mlp(width=64, depth=2, b_std=0.1, dtype=jnp.float32)
    rng = np.random.default_rng(7)
    base = rng.standard_normal((6, 4))
    X = np.concatenate([base, base + 1e-4 * rng.standard_normal((6, 4))])
    X = jnp.asarray(X, jnp.float32)
    J32 = _flat_jacobian(model.apply, params, consts, X).astype(
        np.float64
    )  # float32 values, exact in float64
    exact = J32 @ J32.T
    H = ntk.ntk_gram(model.apply, params, consts, X, chunk=6, accumulate="float64")
    np.testing.assert_allclose(
        H, exact, rtol=1e-6, atol=1e-6 * np.abs(exact).max()
    )  # J itself differs by f32 round-off
    lam = np.linalg.eigvalsh(H)
    assert lam[0] > -1e-12 * lam[-1], lam[:3]
    assert lam[0] < 1e-6 * lam[-1]  # the problem really is below float32 resolution
    H32 = ntk.ntk_gram(model.apply, params, consts, X, chunk=6, accumulate="float32")
    np.testing.assert_allclose(H32, H, rtol=0, atol=1e-5 * np.abs(H).max())
    # accumulate="auto" (the default): float64 here, where lambda_min is tiny ...
    assert np.array_equal(ntk.ntk_gram(model.apply, params, consts, X, chunk=6), H)
    # ... and float32 for well-separated inputs
    Xw = X[:6]
    Hw = ntk.ntk_gram(model.apply, params, consts, Xw, chunk=6, accumulate="float32")
    lam = np.linalg.eigvalsh(Hw)
    assert lam[0] > 10 * ntk.F64_BELOW * lam[-1]
    assert np.array_equal(ntk.ntk_gram(model.apply, params, consts, Xw, chunk=6), Hw)


# --------------------------------------------------------------------------- infinite width
def test_depth3_empirical_ntk_approaches_analytic_like_inverse_sqrt_width():
    """Monte-Carlo: ||H_m - Theta|| / ||Theta|| ~ m^(-1/2) for a depth-3 MLP with biases
    (exact finite-width H by the structured fast path, so large widths are cheap; the weights are
    N(0, 1) as in ``models.ntk_mlp``, drawn with numpy to avoid compiling an initialiser per width)."""
    X, _ = data.sphere(6, 5, "gaussian", 4)
    X = jnp.asarray(1.3 * X)
    W_std, b_std = 1.4, 0.2
    _, theta = ntk.mlp_kernels(np.asarray(X), None, 3, W_std, b_std)
    gram = jax.jit(ntk.mlp_gram, static_argnums=(2, 3))
    widths = [128, 512, 2048]
    errors = []
    for width in widths:
        errs = []
        for seed in range(6):
            rng = np.random.default_rng(100 + seed)
            sizes = [5, width, width, width, 1]
            params = {
                "layers": [
                    {"kernel": rng.standard_normal((i, o)), "bias": rng.standard_normal(o)}
                    for i, o in zip(sizes[:-1], sizes[1:])
                ]
            }
            H = np.asarray(gram(params, X, W_std, b_std))
            errs.append(np.linalg.norm(H - theta) / np.linalg.norm(theta))
        errors.append(np.mean(errs))
    slope = np.polyfit(np.log(widths), np.log(errors), 1)[0]
    assert -0.75 < slope < -0.3, (errors, slope)
    assert errors[-1] < 0.1, errors
