"""The training loop (ntkdyn.train) against loops written by hand: a numpy loop with the paper
model's gradient written out, and a plain ``lax.scan`` of the vmapped optax step. Divergence
steps, errors and snapshots are checked at steps inside record blocks, not only at their edges."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ntkdyn import models, optimizers
from ntkdyn.train import TrainPlan, train, train_batch

N, D, M = 12, 5, 64


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, D))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = rng.standard_normal(N)
    params, consts = models.paper_init(jax.random.PRNGKey(seed), D, M, 1.0, jnp.float64)
    return jnp.asarray(X), jnp.asarray(y), params, consts


def _numpy_loop(X, y, W, a, eta, beta, steps, step_rule="hb", factor=1e6):
    """Heavy ball v <- beta v + g, W <- W - eta v (optax/torch form) on the paper model, with
    the gradient written out: dL/dW = (1/sqrt m) ((e a^T) * 1[X W^T > 0])^T X.
    step_rule="polyak": W <- W - (L / ||g||^2) g. Stops (freezes) at the first step whose loss is
    non-finite or above factor * L_0. Returns per-step (loss, ||g||^2, e, W) lists and the step."""
    X, y, W, a = (np.asarray(v, np.float64) for v in (X, y, W, a))
    m = W.shape[0]
    v = np.zeros_like(W)
    out = {"loss": [], "gn": [], "e": [], "W": []}
    limit, diverged = None, None
    for k in range(steps + 1):
        pre = X @ W.T
        e = np.maximum(pre, 0) @ a / np.sqrt(m) - y
        L = 0.5 * e @ e
        g = ((e[:, None] * a[None, :]) * (pre > 0)).T @ X / np.sqrt(m)
        limit = factor * L if limit is None else limit
        out["loss"].append(L), out["gn"].append(np.sum(g * g)), out["e"].append(e), out["W"].append(W.copy())
        if not np.isfinite(L) or L > limit:
            diverged = k
            break
        if k == steps:
            break
        if step_rule == "polyak":
            W = W - L / np.sum(g * g) * g
        else:
            v = beta * v + g
            W = W - eta * v
    return out, diverged


@pytest.mark.parametrize("every", [1, 4])
def test_losses_and_grad_norms_equal_numpy_loop(every):
    X, y, params, consts = _problem()
    eta, beta, steps = 0.3, 0.8, 48
    res = train(
        models.PAPER,
        optimizers.get("hb"),
        {"eta": eta, "beta": beta},
        1.0,
        TrainPlan(steps, record_every=every),
        params,
        consts,
        X,
        y,
    )
    ref, div = _numpy_loop(X, y, params["W"], consts["a"], eta, beta, steps)
    assert div is None and res.diverged_at is None
    np.testing.assert_array_equal(res.step, np.arange(0, steps + 1, every))
    np.testing.assert_allclose(res.loss, np.array(ref["loss"])[::every], rtol=1e-10)
    np.testing.assert_allclose(res.grad_norm_sq, np.array(ref["gn"])[::every], rtol=1e-10)
    np.testing.assert_allclose(res.final_params["W"], ref["W"][-1], rtol=1e-10, atol=1e-12)
    assert res.loss[-1] < 0.1 * res.loss[0]  # it trained


def test_batch_equals_plain_scan_of_optax_step():
    """Three runs (different eta, beta, init) against the 15-line lax.scan a user writes."""
    probs = [_problem(s) for s in (0, 1, 2)]
    hypers = [{"eta": 0.3, "beta": 0.8}, {"eta": 0.1, "beta": 0.0}, {"eta": 0.5, "beta": 0.5}]
    steps = 30
    res = train_batch(
        models.PAPER,
        optimizers.get("hb"),
        hypers,
        1.0,
        TrainPlan(steps, chunks=3),
        [p[2] for p in probs],
        [p[3] for p in probs],
        [p[0] for p in probs],
        [p[1] for p in probs],
    )

    def plain(X, y, params, consts, eta, beta):
        tx = optax.sgd(eta, momentum=beta)
        loss = lambda p: 0.5 * jnp.sum((models.paper_apply(p, consts, X) - y) ** 2)

        def step(carry, _):
            p, s = carry
            L, g = jax.value_and_grad(loss)(p)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), L

        (p, _), Ls = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
        return jnp.append(Ls, loss(p))

    for (X, y, params, consts), hp, r in zip(probs, hypers, res):
        np.testing.assert_allclose(r.loss, plain(X, y, params, consts, hp["eta"], hp["beta"]), rtol=1e-10)


def _diverging(every):
    X, y, params, consts = _problem()
    eta, steps = 2.05, 60  # |1 - eta lambda_max| > 1: the loss passes 1e3 L_0 at step 10
    ref, div = _numpy_loop(X, y, params["W"], consts["a"], eta, 0.0, steps, factor=1e3)
    plan = TrainPlan(
        steps, record_every=every, error_at=(0, 5, 58), snapshot_at=(0, 3, 59), divergence_factor=1e3
    )
    return X, y, params, consts, eta, plan, ref, div


@pytest.mark.parametrize("every", [1, 3])
def test_divergence_step_exact_inside_a_block(every):
    X, y, params, consts, eta, plan, ref, div = _diverging(every)
    assert div is not None and 5 < div < 58
    if every == 3:
        assert div % 3 != 0  # the divergence lies strictly inside a record block
    res = train(models.PAPER, optimizers.get("gd"), {"eta": eta}, 1.0, plan, params, consts, X, y)
    assert res.diverged_at == div
    rec = res.step <= div
    np.testing.assert_allclose(res.loss[rec], np.array(ref["loss"])[res.step[rec]], rtol=1e-9)
    np.testing.assert_allclose(res.grad_norm_sq[rec], np.array(ref["gn"])[res.step[rec]], rtol=1e-9)
    assert np.all(np.isnan(res.loss[~rec])) and np.all(np.isnan(res.grad_norm_sq[~rec]))
    # frozen at the diverged step: the update of that step is not applied
    np.testing.assert_allclose(res.final_params["W"], ref["W"][div], rtol=1e-9)
    # errors: reached steps recorded, the step after divergence NaN (never reached, not zero)
    np.testing.assert_allclose(res.errors[:2], np.array(ref["e"])[[0, 5]], rtol=1e-9, atol=1e-12)
    assert np.all(np.isnan(res.errors[2]))
    np.testing.assert_allclose(res.snapshots["W"][1], ref["W"][3], rtol=1e-12)


def test_diverging_run_does_not_disturb_its_batch():
    X, y, params, consts, eta, plan, ref, div = _diverging(3)
    spec = optimizers.get("gd")
    batch = train_batch(
        models.PAPER,
        spec,
        [{"eta": 0.2}, {"eta": eta}, {"eta": 0.4}],
        1.0,
        plan,
        [params] * 3,
        [consts] * 3,
        [X] * 3,
        [y] * 3,
    )
    assert [r.diverged_at for r in batch] == [None, div, None]
    for r, eta_i in zip(batch[::2], (0.2, 0.4)):
        alone = train(models.PAPER, spec, {"eta": eta_i}, 1.0, plan, params, consts, X, y)
        np.testing.assert_allclose(r.loss, alone.loss, rtol=1e-12)
        np.testing.assert_allclose(r.errors, alone.errors, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(r.snapshots["W"], alone.snapshots["W"], rtol=1e-12)


def test_errors_and_snapshots_at_steps_inside_blocks():
    X, y, params, consts = _problem(3)
    eta, beta, steps = 0.2, 0.6, 40
    error_at, snapshot_at = (0, 3, 10, 17, 39, 40), (0, 7, 20, 33, 40)
    res = train(
        models.PAPER,
        optimizers.get("hb"),
        {"eta": eta, "beta": beta},
        1.0,
        TrainPlan(steps, record_every=5, error_at=error_at, snapshot_at=snapshot_at, chunks=2),
        params,
        consts,
        X,
        y,
    )
    ref, _ = _numpy_loop(X, y, params["W"], consts["a"], eta, beta, steps)
    np.testing.assert_allclose(res.errors, np.array(ref["e"])[list(error_at)], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        res.snapshots["W"], np.array(ref["W"])[list(snapshot_at)], rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(res.loss, np.array(ref["loss"])[::5], rtol=1e-10)


def _polyak(eta):
    """W <- W - eta (L / ||g||^2) g: a rule that reads the loss through update(..., value=L)."""

    def init(params):
        return optax.EmptyState()

    def update(grads, state, params=None, *, value, **extra):
        gn = sum(jnp.sum(g * g) for g in jax.tree.leaves(grads))
        return jax.tree.map(lambda g: -eta * value / gn * g, grads), state

    return optax.GradientTransformationExtraArgs(init, update)


def test_update_receives_the_loss():
    X, y, params, consts = _problem(4)
    spec = optimizers.OptimizerSpec("polyak_test", "Polyak step (test)", {}, optax_factory=_polyak)
    res = train(models.PAPER, spec, {"eta": 1.0}, 1.0, TrainPlan(20), params, consts, X, y)
    ref, _ = _numpy_loop(X, y, params["W"], consts["a"], None, None, 20, step_rule="polyak")
    np.testing.assert_allclose(res.loss, ref["loss"], rtol=1e-9)


# --------------------------------------------------------------------------- memory check before compute
def test_too_large_run_stops_before_compute(tmp_path, capsys, monkeypatch):
    from ntkdyn import pipeline
    from ntkdyn.run import main

    def no_compute(*args, **kwargs):
        raise AssertionError("the memory check must stop the run before data, model or kernels")

    for stage in ("load_data", "build_model", "prepare"):
        monkeypatch.setattr(pipeline, stage, no_compute)
    out = tmp_path / "out"
    assert (
        main(["configs/quickstart.yaml", "--set", "model.width=2000000000", "--out", str(out), "--quiet"])
        == 2
    )
    err = capsys.readouterr().err
    assert "too large for memory" in err and "needs about" in err and "GB available" in err, err
    assert "width 2000000000" in err
    assert not out.exists()  # nothing written; no stage ran (no_compute above)


def test_memory_estimate_covers_the_training_state():
    """The estimate's training part is at least the bytes of the real batched TrainState."""
    from ntkdyn import config, memory, pipeline
    from ntkdyn.train import batched_fns

    cfg = config.from_dict(
        {
            "name": "m",
            "dtype": "float64",
            "data": {"source": "sphere", "n": 10, "d": 4},
            "model": {"name": "paper", "width": 96},
            "train": {"steps": 20, "kernel_at": [0, 5, 20]},
            "optimizers": [{"name": "hb", "eta": 0.1, "beta": 0.5}],
        }
    )
    R = 3
    est = memory.estimate(cfg, runs=R)
    init, _, _ = batched_fns(
        models.PAPER, optimizers.get("hb"), {}, 1.0, pipeline.train_plan(cfg), (None,) * 3
    )
    sds = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float64)
    state = jax.eval_shape(
        init, {"eta": sds(R), "beta": sds(R)}, {"W": sds(R, 96, 4)}, {"a": sds(96)}, sds(10, 4), sds(10)
    )
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
    assert est.params == 96 * 4 and est.n == 10 and est.d == 4
    assert state_bytes <= est.parts["training"]
    with pytest.raises(memory.TooLarge, match="on the accelerator"):
        memory.check(cfg, R, host=1e9, device=1e4)
    with pytest.raises(memory.TooLarge, match="has 1e-05 GB available"):
        memory.check(cfg, R, host=1e4)


def test_groups_align_with_record_events():
    """Groups divide each chunk, hold at most GROUP_STEPS steps, and exactly the groups with an
    error/snapshot step strictly inside are flagged for the careful path (checked by brute force)."""
    from ntkdyn.train import GROUP_STEPS, careful_groups, group_size

    plans = [
        TrainPlan(1000, 1, (0, 1000), (0, 250, 500, 1000), chunks=10),
        TrainPlan(60, 2, (0, 31, 60), chunks=3),
        TrainPlan(48, 4, (0, 5, 48), (0, 20)),
        TrainPlan(50, 1, (0, 50), chunks=10),
        TrainPlan(200, 100),
    ]
    for plan in plans:
        G, k = group_size(plan), plan.record_every
        bpc = plan.steps // k // plan.chunks
        assert bpc % G == 0 and (G * k <= GROUP_STEPS or G == 1)
        flags = careful_groups(plan)
        events = set(plan.error_at) | set(plan.snapshot_at)
        expected = [any(g * G * k < s < (g + 1) * G * k for s in events) for g in range(len(flags))]
        assert list(flags) == expected, plan
    assert group_size(plans[0]) == 50 and not careful_groups(plans[0]).any()  # 250, 500 are group edges
