"""ntkdyn's kernels against stored neural-tangents 0.6.5 values (tests/data/nt_reference.npz).

The file is made by ``tools/make_nt_reference.py`` in a separate pinned environment (see its
docstring); neural-tangents is never imported here.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkdyn import models, ntk

REF_PATH = os.path.join(os.path.dirname(__file__), "data", "nt_reference.npz")


@pytest.fixture(scope="module")
def ref():
    with np.load(REF_PATH) as f:
        return {k: f[k] for k in f.files}


def _cases(ref):
    for k in range(len(ref["case_depth"])):
        b = float(ref["case_b_std"][k])
        x2 = str(ref["case_x2"][k])
        yield (
            k,
            int(ref["case_depth"][k]),
            float(ref["case_W_std"][k]),
            None if np.isnan(b) else b,
            str(ref["case_x1"][k]),
            x2 or None,
        )


def test_reference_file_is_what_the_tests_expect(ref):
    assert any("neural-tangents 0.6.5" in str(v) for v in ref["versions"])
    depths = set(ref["case_depth"].tolist())
    assert {1, 2, 3, 5} <= depths
    assert len(ref["case_depth"]) >= 60
    assert np.isnan(ref["case_b_std"]).any() and (ref["case_b_std"] > 0).any()
    assert (ref["case_x2"] != "").any()  # cross kernels too


def test_mlp_kernels_match_neural_tangents(ref):
    """NNGP and NTK of stax.serial([Dense, Relu] * depth, Dense(1)), all cases, rtol 1e-6."""
    for k, depth, W_std, b_std, x1, x2 in _cases(ref):
        X1 = ref[f"X_{x1}"]
        X2 = ref[f"X_{x2}"] if x2 else None
        nngp, theta = ntk.mlp_kernels(X1, X2, depth, W_std, b_std)
        for ours, key in ((nngp, "nngp"), (theta, "ntk")):
            want = ref[f"case{k}_{key}"]
            assert ours.shape == want.shape
            np.testing.assert_allclose(
                ours,
                want,
                rtol=1e-6,
                atol=1e-12 * np.abs(want).max(),
                err_msg=f"case {k}: {key}, depth {depth}, W_std {W_std}, b_std {b_std}, {x1}/{x2}",
            )


def test_mlp_kernels_match_tightly_on_generic_inputs(ref):
    """Away from (numerically) parallel inputs the two implementations agree to round-off."""
    for k, depth, W_std, b_std, x1, x2 in _cases(ref):
        if x1 == "edge":
            continue
        nngp, theta = ntk.mlp_kernels(ref[f"X_{x1}"], ref[f"X_{x2}"] if x2 else None, depth, W_std, b_std)
        np.testing.assert_allclose(nngp, ref[f"case{k}_nngp"], rtol=1e-10)
        np.testing.assert_allclose(theta, ref[f"case{k}_ntk"], rtol=1e-10)


def test_paper_hinf_mapping_holds_for_reference_values(ref):
    """The paper model's H∞ (first layer only, unit inputs) = d (Theta - Sigma) at depth 1,
    W_std = 1, no bias, here with neural-tangents' own numbers."""
    for k, depth, W_std, b_std, x1, x2 in _cases(ref):
        if depth == 1 and W_std == 1.0 and b_std is None and x1 == "sphere" and x2 is None:
            X = ref["X_sphere"]
            Hinf = X.shape[1] * (ref[f"case{k}_ntk"] - ref[f"case{k}_nngp"])
            np.testing.assert_allclose(Hinf, models.paper_hinf(X), rtol=1e-9, atol=1e-14)
            return
    pytest.fail("no depth-1, W_std=1, bias-free sphere case in the reference file")


def _load_stax_params(ref, depth):
    """The stax network's parameters in ntkdyn's flax MLP (same architecture and scalings)."""
    W_std, b_std, width = float(ref["fin_W_std"]), float(ref["fin_b_std"]), int(ref["fin_width"])
    X = ref["X_fin"]
    module = models.ntk_mlp(jax.random.PRNGKey(0), X.shape[1], width, depth, W_std, b_std, jnp.float64)
    model, params, consts = models.from_flax(module)

    def fill(path, leaf):
        keys = [str(getattr(p, "key", getattr(p, "idx", getattr(p, "name", p)))) for p in path]
        layer, kind = int(keys[1]), keys[2]
        arr = ref[f"fin{depth}_{'W' if kind == 'kernel' else 'b'}{layer}"]
        assert arr.size == leaf.size, (keys, arr.shape, leaf.shape)  # stax keeps biases as (1, width)
        return jnp.asarray(arr.reshape(leaf.shape))

    params = jax.tree_util.tree_map_with_path(fill, params)
    return model, params, consts, jnp.asarray(X), W_std, b_std


@pytest.mark.parametrize("depth", [2, 3])
def test_finite_network_and_empirical_ntk_match_neural_tangents(ref, depth):
    """Same weights -> same outputs and same empirical NTK (nt.empirical_ntk_fn) as stax."""
    model, params, consts, X, W_std, b_std = _load_stax_params(ref, depth)
    np.testing.assert_allclose(
        np.asarray(model.apply(params, consts, X)), ref[f"fin{depth}_f"], rtol=1e-12, atol=1e-13
    )
    want = ref[f"fin{depth}_entk"]
    for method in ("jacobian", "ntvp"):
        H = ntk.ntk_gram(model.apply, params, consts, X, chunk=4, method=method)
        np.testing.assert_allclose(H, want, rtol=1e-10, atol=1e-12 * np.abs(want).max())
    H = np.asarray(ntk.mlp_gram(params, X, W_std, b_std))
    np.testing.assert_allclose(H, want, rtol=1e-10, atol=1e-12 * np.abs(want).max())
