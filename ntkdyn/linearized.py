"""The network's linearisation at initialisation, as a ``models.Model``.

    f_lin(theta; x) = f(theta_0; x) + J(theta_0; x) (theta - theta_0)

computed with one ``jax.jvp`` of f at theta_0 in the direction theta - theta_0 (no Jacobian is
materialised; its gradient is the transposed jvp, i.e. a vjp at theta_0). Training f_lin with any
optimizer, schedule and batches through the same training path (``train``) gives the kernel-regime
prediction for optimizers that have no recurrence (Adam, RMSProp, Lion, ...); for the linear methods
(GD, HB, NAG, ...) it equals the exact recurrence of ``theory`` with K = c H(theta_0). The gap
between the network and its linearisation is the finite-width effect for that optimizer.

theta_0 travels in the consts, not in a closure: ``linear_consts(params0, consts0)`` ->
{"theta0": params0, "base": consts0}, so runs with different initialisations still batch into one
program (``train.train_batch`` stacks consts per run).
"""

from __future__ import annotations

import dataclasses
import functools

import jax

from ntkdyn.models import Model


def linear_consts(params0, consts0) -> dict:
    """The consts of the linearised model: the expansion point theta_0 and the model's own consts."""
    return {"theta0": params0, "base": consts0}


@functools.lru_cache(maxsize=32)
def linearize(model: Model) -> Model:
    """``model`` linearised at the theta_0 held in its consts (``linear_consts``); the same loss.

    Its ``fast_gram`` (when the model has one) is the model's Gram at theta_0 at every theta (the
    linearisation's tangent kernel is frozen); ``hinf`` is the model's. Cached per model, so
    repeated calls return the same ``Model`` (and training compiles once)."""

    def apply(params, consts, X):
        theta0, base = consts["theta0"], consts["base"]
        delta = jax.tree.map(lambda p, p0: p - p0, params, theta0)
        f0, df = jax.jvp(lambda p: model.apply(p, base, X), (theta0,), (delta,))
        return f0 + df

    fast_gram = model.fast_gram
    fast = None
    if fast_gram is not None:

        def fast(params, consts, X):
            return fast_gram(consts["theta0"], consts["base"], X)

    return dataclasses.replace(model, name=f"{model.name}_lin", apply=apply, fast_gram=fast)
