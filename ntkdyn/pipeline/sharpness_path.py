"""The sharpness along a run (train.sharpness_every): lambda_max of the loss Hessian and of the
dynamics kernel K = c H at the network's parameter snapshots, against the optimizer's stability limit.

The snapshots are taken inside the compiled training scan like the kernel snapshots
(``training.train_plan(cfg, sharpness=True)``; ``training.split_sharpness``), so a run without the
key compiles and runs exactly as before; the eigenvalues are computed after training, per snapshot,
by Lanczos on Hessian-vector and Gram-vector products (``ntkdyn.sharpness.sharpness``), in float64
whatever the run's dtype (the snapshot, consts, X and y are cast). Lanczos is a host loop of jitted
products and cannot run inside ``lax.scan``; snapshots cost (number of steps) x (parameter count)
floats of memory, and one Lanczos pair per step (about 3 gradient costs per product, at most 100
products each).

* Hessian: of the FULL-BATCH loss L = (c/2)||f(theta; X) - y||^2, c = ``models.loss_scale`` (the
  training loss's convention; for a mini-batch run the full-batch loss at the first batch order's
  parameters).
* NTK: lambda_max(K), K = c J J^T (the kernel of every face; at theta_0 it is ``Spectrum.lambda_max``
  for theory.kernel H0).
* Limit: h* / eta_k with h* the largest stable eta lambda of one mode of the method's asymptotic
  linear recurrence (``optimizers.largest_stable_step`` at eta = 1; GD 2, heavy ball 2 (1 + beta),
  Nesterov 2 (1 + beta) / (1 + 2 beta); ``ntkdyn.sharpness.stability_limit`` derives them) and eta_k
  the step size of the update after step k (``schedules.eta_values``; the last step uses the last
  update's). None for methods without a recurrence (Adam, ...).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ntkdyn import optimizers, schedules
from ntkdyn import sharpness as sharpness_mod
from ntkdyn.config import Config
from ntkdyn.pipeline.setup import Setup
from ntkdyn.results import Sharpness, finite
from ntkdyn.train import TrainResult


def _float64(tree):
    """Floating leaves of ``tree`` as float64 arrays (other leaves unchanged)."""
    return jax.tree.map(
        lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a,
        tree,
    )


def limits(spec, hyper: dict, steps: np.ndarray, total: int) -> np.ndarray | None:
    """The stability limit on lambda_max at each of ``steps`` (module docstring), or None."""
    try:
        h = optimizers.largest_stable_step(spec, {**hyper, "eta": 1.0})
    except (TypeError, ValueError, KeyError):
        return None
    if h is None:
        return None
    eta = schedules.eta_values(hyper["eta"], total)
    return h / eta[np.minimum(np.asarray(steps, int), total - 1)]


def record(cfg: Config, setup: Setup, spec, hyper: dict, res: TrainResult) -> tuple[Sharpness, dict] | None:
    """The run's ``results.Sharpness`` and its trajectories.npz arrays (sharpness_steps,
    sharpness_hessian, sharpness_ntk, and sharpness_limit when there is a limit) from ``res``'s
    sharpness snapshots; None when train.sharpness_every is null. Steps after a divergence are NaN."""
    if res.sharpness_at is None or cfg.train.sharpness_every is None:
        return None
    steps = np.asarray(res.sharpness_at, int)
    consts = _float64(setup.consts)
    X = jnp.asarray(setup.X, jnp.float64)
    y = jnp.asarray(setup.y, jnp.float64)
    hess = np.full(steps.size, np.nan)
    ntk = np.full(steps.size, np.nan)
    converged = np.zeros(steps.size, bool)
    with jax.enable_x64(True):
        for j, k in enumerate(steps):
            if res.diverged_at is not None and k > res.diverged_at:
                continue
            params = _float64(jax.tree.map(lambda a, j=j: a[j], res.sharpness_snapshots))
            if not all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(params)):
                continue
            s = sharpness_mod.sharpness(setup.model, params, consts, X, y)
            hess[j], ntk[j] = s.hessian.value, s.kernel_max
            converged[j] = s.hessian.converged and s.ntk.converged
    limit = limits(spec, hyper, steps, cfg.train.steps)
    arrays = {"sharpness_steps": steps, "sharpness_hessian": hess, "sharpness_ntk": ntk}
    if limit is not None:
        arrays["sharpness_limit"] = limit
    result = Sharpness(
        every=int(cfg.train.sharpness_every),
        steps=tuple(int(k) for k in steps),
        hessian_lambda_max=tuple(finite(v) for v in hess),
        ntk_lambda_max=tuple(finite(v) for v in ntk),
        stability_limit=None if limit is None else tuple(finite(v) for v in limit),
        converged=tuple(bool(c) for c in converged),
    )
    return result, arrays
