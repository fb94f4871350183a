"""The quadratic-model face (``quadratic``): the network's second-order Taylor expansion at theta_0,

    f_quad(theta) = f(theta_0) + J_0 d + 1/2 d^T Hess f(theta_0) d,   d = theta - theta_0

(``ntkdyn.quadratic``; Zhu, Liu, Belkin 2022, arXiv 2205.11787, use it for catapult dynamics),
evaluated through a jvp of a jvp (no Hessian materialised) and trained by the same training path,
optimizer, schedule and (mini-batch) batches as the network: the face asks for it before training
(``expansion``), ``training.train_runs`` trains it beside the network, and the face reads its
trajectory (``ctx.expanded("quadratic")``). Applies per theory.quadratic: never
(the default: it costs about as much as training the network again), auto or always. Where Hess f
vanishes on the data (the ``paper`` model: only W trained through ReLU, f piecewise linear in W) the
quadratic model is the linearisation: the face does not apply and says why (``quadratic.applies``).
Predicts ``loss_quadratic`` (and ``test_loss_quadratic`` with a held-out set); field ``quadratic``
(its divergence step, the batch orders averaged).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp

from ntkdyn import models, optimizers, quadratic
from ntkdyn.config import Config
from ntkdyn.pipeline.faces.base import Context, FaceValue, Series
from ntkdyn.pipeline.setup import Setup, jax_dtype
from ntkdyn.results import Quadratic


def applies_to(cfg: Config, setup: Setup) -> bool | str:
    """False under theory.quadratic: never; else True, or the reason the quadratic model is the
    linearisation here (``quadratic.applies``: Hess f(theta_0) vanishes on the training inputs)."""
    if cfg.theory.quadratic == "never":
        return False
    X = jnp.asarray(setup.X, jax_dtype(cfg))
    reason = quadratic.applies(setup.model, setup.params, setup.consts, X)
    return True if reason is None else f"quadratic model: {reason}"


class QuadraticModel:
    name = "quadratic"
    compares = ("quadratic",)
    series = (Series("loss_quadratic", (0, (3, 1, 1, 1, 1, 1)), "quadratic model"),)

    def expansion(self, cfg: Config, setup: Setup, spec: optimizers.OptimizerSpec) -> models.Model | None:
        """The network's quadratic model at theta_0 (``quadratic.quadratize``), when the face applies."""
        return quadratic.quadratize(setup.model) if applies_to(cfg, setup) is True else None

    def applies(self, ctx: Context) -> bool | str:
        if ctx.cfg.theory.quadratic == "never":
            return False
        if self.name in ctx.trained.expansions:  # asked and trained: applies_to was True
            return True
        return applies_to(ctx.cfg, ctx.setup)

    def predict(self, ctx: Context, earlier: Mapping[str, FaceValue]) -> FaceValue:
        quad = ctx.expanded(self.name)  # trained beside the network (training.train_runs)
        arrays = {"loss_quadratic": quad.loss}
        if quad.test_loss is not None:
            arrays["test_loss_quadratic"] = quad.test_loss
        fields = {"quadratic": Quadratic(diverged_at=quad.diverged_at, runs=ctx.cfg.train.sampling_runs)}
        return FaceValue(arrays=arrays, fields=fields)
