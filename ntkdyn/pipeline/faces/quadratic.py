"""The quadratic-model face (``quadratic``): the network's second-order Taylor expansion at theta_0,

    f_quad(theta) = f(theta_0) + J_0 d + 1/2 d^T Hess f(theta_0) d,   d = theta - theta_0

(``ntkdyn.quadratic``; Zhu, Liu, Belkin 2022, arXiv 2205.11787, use it for catapult dynamics),
evaluated through a jvp of a jvp (no Hessian materialised) and trained by the same training path,
optimizer, schedule and (mini-batch) batches as the network. Applies per theory.quadratic: never
(the default: it costs about as much as training the network again), auto or always. Where Hess f
vanishes on the data (the ``paper`` model: only W trained through ReLU, f piecewise linear in W) the
quadratic model is the linearisation: the face does not apply and says why (``quadratic.applies``).
Predicts ``loss_quadratic`` (and ``test_loss_quadratic`` with a held-out set); field ``quadratic``
(its divergence step, the batch orders averaged).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp

from ntkdyn import quadratic
from ntkdyn.pipeline import training
from ntkdyn.pipeline.faces.base import Context, FaceValue, Series
from ntkdyn.pipeline.setup import jax_dtype
from ntkdyn.results import Quadratic


class QuadraticModel:
    name = "quadratic"
    compares = ("quadratic",)
    series = (Series("loss_quadratic", (0, (3, 1, 1, 1, 1, 1)), "quadratic model"),)

    def applies(self, ctx: Context) -> bool | str:
        if ctx.cfg.theory.quadratic == "never":
            return False
        s = ctx.setup
        X = jnp.asarray(s.X, jax_dtype(ctx.cfg))
        reason = quadratic.applies(s.model, s.params, s.consts, X)
        return True if reason is None else f"quadratic model: {reason}"

    def predict(self, ctx: Context, earlier: Mapping[str, FaceValue]) -> FaceValue:
        quad = training.train_quadratic(ctx.cfg, ctx.setup, ctx.spec, ctx.hyper)
        arrays = {"loss_quadratic": quad.loss}
        if quad.test_loss is not None:
            arrays["test_loss_quadratic"] = quad.test_loss
        fields = {"quadratic": Quadratic(diverged_at=quad.diverged_at, runs=ctx.cfg.train.sampling_runs)}
        return FaceValue(arrays=arrays, fields=fields)
