"""The held-out face: each earlier face's predicted trajectory mapped to the held-out points,
e_test(k) = e_test(0) + K_x K^+ (e_k - e_0) (``theory.held_out_errors``; K_x = c H(X_test, X) of
theory.kernel), and its loss (c_test/2)||e_test(k)||^2 as ``test_loss_<name>`` (discrete, ode).
Full batch only: the mean held-out loss of mini-batch runs needs the second moment (the
mini-batch face predicts it). The comparison with training's held-out loss is the result's
``test`` (``pipeline.evaluate``). On the Krylov path there is no K^+ nor eigenbasis to map modes
with: the recurrence and ODE faces carry the held-out points through their own products with the
cross kernel and set ``test_loss_<name>`` themselves, and this face does not apply (``test_map`` is
None there).
"""

from __future__ import annotations

from collections.abc import Mapping

from ntkdyn import theory
from ntkdyn.pipeline.faces.base import Context, FaceValue, Series


class HeldOutPrediction:
    name = "held_out"
    compares = ()
    series = (
        Series("test_loss", "-", "held-out", "held_out"),
        Series("test_loss_discrete", "--", "held-out kernel", "held_out"),
    )

    def applies(self, ctx: Context) -> bool | str:
        return ctx.setup.test_map is not None and ctx.full_batch

    def predict(self, ctx: Context, earlier: Mapping[str, FaceValue]) -> FaceValue:
        s = ctx.setup
        assert s.test_map is not None and s.e0_test is not None and s.c_test is not None  # applies
        arrays = {
            f"test_loss_{name}": theory.modal_loss(
                theory.held_out_errors(modes, s.coef, s.test_map, s.e0_test), s.c_test
            )
            for value in earlier.values()
            for name, modes in value.modes.items()
        }
        return FaceValue(arrays=arrays)
