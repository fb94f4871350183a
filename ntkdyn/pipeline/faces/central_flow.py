"""The central-flow face (``central_flow``, opt-in: theory.central_flow true): the time-averaged
trajectory of full-batch gradient descent at the edge of stability (Cohen, Damian et al.,
"Understanding Optimization in Deep Learning with Central Flows", ICLR 2025, arXiv 2410.24206),

    dw/dt = -[grad L(w) + 1/2 grad <Sigma, Hess L(w)>],   t = k eta,

Sigma the smallest oscillation covariance that keeps the Hessian's eigenvalues at or below 2/eta
(``ntkdyn.central_flow``: matrix form over the top 3 eigenvectors, explicit Euler with 4 substeps a
step, float64 whatever the run's dtype). Its prediction of GD's time-averaged loss,
L(w(t)) + 1/2 <Sigma, Hess L>, is ``loss_central_flow`` at the recorded steps (drawn in the loss
figure, but not in ``deviation``: step by step GD's oscillation and loss spikes, which the flow averages
out, would dominate that gap; so the face adds no summary column), with ``sharpness_central_flow``
(lambda_max of Hess L(w(t))) and ``sigma2_central_flow`` (tr Sigma).

The field ``central_flow`` (``results.CentralFlowFace``) is the comparison the flow is built for: GD's
loss and sharpness averaged over GD's own self-stabilisation cycles (from one upward crossing of 2/eta
by the network's sharpness trace to the next; ``central_flow.cycle_agreement``), against the flow's
prediction averaged over the same steps (the incomplete cycle after the last crossing likewise; before
the edge, where GD does not oscillate, step by step), and the verdict over the whole run "agrees" (the
loss within 10 % and GD's mean sharpness within 5 % of 2/eta everywhere: issue #20's figures) or
"misses". The cycles need
the sharpness trace (train.sharpness_every) and every step's loss (train.record_every 1, or odd: GD
oscillates with period 2 at the edge); without them the field says why no figure was computed.

Measured (docs/beyond-kernel-regime.md): on the probe's tanh MLP (P = 228, eta = 0.25, 3000 steps) every
cycle agrees (loss 1.5-4.3 %, sharpness 0-3.0 %); on a tiny MLP (P = 72) with a fast onset (eta S_0/2 =
0.53: the edge at step 40, GD's sharpness overshooting to 1.19 x 2/eta) the first cycle misses (10.4 %,
10.2 %) and later GD agrees (3.4 %). The verdict is per run, measured; the flow is not guaranteed.

Applies: full-batch ``gd`` with a constant eta and a squared loss only (validation refuses the rest;
``applies`` says why for a registered optimizer that is not gd). Cost: a dense Hessian and its top
eigenvectors (LOBPCG) at every substep (4 a step) for P <= ``DENSE_MAX`` parameters, else Lanczos on
Hessian-vector products from Python (much slower): minutes for a few hundred parameters and a few
thousand steps, many times training's cost.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ntkdyn import central_flow as cf_mod
from ntkdyn import models
from ntkdyn import sharpness as sharpness_mod
from ntkdyn.pipeline.faces.base import Context, FaceValue, Series
from ntkdyn.results import CentralFlowFace

DENSE_MAX = 1024  # dense Hessian + LOBPCG up to this many parameters, else Lanczos (central_flow.EIGEN)
SUBSTEPS = 4  # Euler substeps a step (dt = 1/4: h S_max = 1/2 at the edge)
LOSS_TOL, SHARPNESS_TOL = 0.10, 0.05  # issue #20: loss within 10 %, sharpness within 5 % of 2/eta


def _float64(tree):
    return jax.tree.map(
        lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a,
        tree,
    )


def why_not(ctx: Context) -> str | None:
    """None where the central flow predicts this optimizer, else the reason."""
    if ctx.spec.name != "gd":
        return f"central flow: gradient descent (gd) only, not {ctx.spec.name}"
    if not ctx.full_batch:
        return "central flow: full-batch training only (train.batch_size is set)"
    if ctx.scheduled:
        return "central flow: a constant eta only (this eta is a schedule)"
    if ctx.setup.model.loss not in models.SQUARED_LOSSES:
        return f"central flow: squared losses only, not {ctx.setup.model.loss}"
    return None


class CentralFlow:
    name = "central_flow"
    compares: tuple[str, ...] = ()  # pointwise, GD's oscillation would dominate: the field compares
    series = (Series("loss_central_flow", (0, (1, 1)), "central flow (GD)"),)

    def applies(self, ctx: Context) -> bool | str:
        if not ctx.cfg.theory.central_flow:
            return False
        reason = why_not(ctx)
        return True if reason is None else reason

    def predict(self, ctx: Context, earlier: Mapping[str, FaceValue]) -> FaceValue:
        cfg, s = ctx.cfg, ctx.setup
        eta = float(ctx.hyper["eta"])
        loss = sharpness_mod.squared_loss(s.model)
        with jax.enable_x64(True):
            params, consts = _float64(s.params), _float64(s.consts)
            X, y = jnp.asarray(s.X, jnp.float64), jnp.asarray(s.y, jnp.float64)
            P = int(ravel_pytree(params)[0].size)
            flow = cf_mod.central_flow(
                loss,
                params,
                eta,
                cfg.train.steps,
                consts,
                X,
                y,
                dt=1.0 / SUBSTEPS,
                record_every=cfg.train.record_every,
                eigen="dense" if P <= DENSE_MAX else "lanczos",
            )
            trace = self._network_sharpness(ctx, loss, consts, X, y)
        arrays = {
            "loss_central_flow": flow.loss_predicted,
            "sharpness_central_flow": flow.sharpness,
            "sigma2_central_flow": flow.sigma2,
        }
        on = np.nonzero(flow.sigma2 > 0)[0]
        flow_edge = int(flow.step[on[0]]) if on.size else None
        held = (
            float(np.max(np.abs(flow.sharpness[on[0] + 1 :] / flow.threshold - 1))) if on.size > 1 else None
        )
        common = dict(
            threshold=flow.threshold,
            flow_edge_step=flow_edge,
            flow_sharpness_error=held,
            window_rule="gd_sharpness_cycles",
            loss_tolerance=LOSS_TOL,
            sharpness_tolerance=SHARPNESS_TOL,
        )
        unavailable = None
        if trace is None:
            unavailable = "set train.sharpness_every: the cycles are read from the network's sharpness trace"
        elif cfg.train.record_every % 2 == 0:
            unavailable = (
                f"train.record_every={cfg.train.record_every} is even: it samples one phase of GD's "
                "period-2 oscillation; use 1 (or an odd value) for the cycle means"
            )
        elif ctx.trained.diverged_at is not None:
            unavailable = f"training diverged at step {ctx.trained.diverged_at}"
        if unavailable is not None or trace is None:
            field = CentralFlowFace(verdict=None, unavailable=unavailable, **common)  # type: ignore[arg-type]
            return FaceValue(arrays=arrays, fields={"central_flow": field})
        agreement = cf_mod.cycle_agreement(
            ctx.trained.step, ctx.trained.loss, trace[0], trace[1], flow.loss_predicted, flow.threshold
        )
        ok = agreement.agrees(LOSS_TOL, SHARPNESS_TOL)
        verdict = None if ok is None else ("agrees" if ok else "misses")
        field = CentralFlowFace(
            verdict=verdict,
            unavailable=None if ok is not None else "GD never reached the edge",
            edge_step=agreement.edge_step,
            cycles=tuple(agreement.cycles),
            loss_error=agreement.loss_error,
            sharpness_error=agreement.sharpness_error,
            tail_loss_error=agreement.tail_loss_error,
            tail_sharpness_error=agreement.tail_sharpness_error,
            before_edge_loss_error=agreement.before_edge_loss_error,
            **common,  # type: ignore[arg-type]
        )
        return FaceValue(arrays=arrays, fields={"central_flow": field})

    @staticmethod
    def _network_sharpness(ctx: Context, loss, consts, X, y) -> tuple[np.ndarray, np.ndarray] | None:
        """lambda_max(Hess L) of the network at its sharpness snapshots (train.sharpness_every; float64;
        dense ``eigvalsh`` up to ``DENSE_MAX`` parameters, else Lanczos, ``sharpness.hessian_top``), or
        None without them."""
        res = ctx.trained
        if res.sharpness_at is None or ctx.cfg.train.sharpness_every is None:
            return None
        steps = np.asarray(res.sharpness_at, int)
        values = np.full(steps.size, np.nan)
        first = _float64(jax.tree.map(lambda a: a[0], res.sharpness_snapshots))
        flat, unravel = ravel_pytree(first)
        dense = flat.size <= DENSE_MAX
        hessian = jax.jit(jax.hessian(lambda w: loss(unravel(w), consts, X, y)))
        for j in range(steps.size):
            params = _float64(jax.tree.map(lambda a, j=j: a[j], res.sharpness_snapshots))
            if dense:  # small models: the dense Hessian's top eigenvalue (exact, cheaper than Lanczos)
                H = np.asarray(hessian(ravel_pytree(params)[0]))
                values[j] = np.linalg.eigvalsh(H)[-1] if np.all(np.isfinite(H)) else np.nan
            else:
                values[j] = sharpness_mod.hessian_top(loss, params, consts, X, y).value
        ok = np.isfinite(values)
        return steps[ok], values[ok]
