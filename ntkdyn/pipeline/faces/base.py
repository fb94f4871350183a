"""The ``Face`` protocol: one theory prediction of a trained run, as an object.

A face has a ``name``; ``applies(ctx)`` says whether it predicts this optimizer under this config
(True, or a string: the reason it does not); ``predict(ctx, earlier)`` returns its typed
``FaceValue`` from the run's ``Context`` (config, setup, optimizer, training's trajectory and fit)
and the values of the faces before it in ``FACES`` (a face may refine an earlier one: the
mini-batch mean replaces the full-batch recurrence as ``loss_discrete``). ``compares``: the names
p whose prediction ``loss_p`` is compared with training's loss (deviation, log10 gap, verdict);
``series``: how its per-step arrays are drawn in the loss figure. The assembly
(``pipeline.evaluate``) runs the faces in order and builds the ``OptimizerResult`` from their values.

A face that predicts by training a model of its own (the linearised network, the quadratic model)
does not train it: it also has ``expansion(cfg, setup, spec)`` (the ``Trains`` protocol), which
says, before training, which model it needs trained (or None). The entry asks every face
(``faces.expansions``) and hands the models to the one training call
(``training.train_runs(expansions=...)``), which trains them beside the network; the face reads
its trained model's ``TrainResult`` from ``ctx.expanded(name)``. So a run goes down its layers
once: training trains everything, the faces only predict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from ntkdyn import models, optimizers, rates
from ntkdyn.config import Config
from ntkdyn.pipeline.setup import Setup
from ntkdyn.train import TrainResult


@dataclasses.dataclass(frozen=True)
class Context:
    """What every face reads about one optimizer of one run.

    ``hyper``: the resolved hyperparameters (eta a number or a schedule); ``trained``: training's
    typed trajectory; ``fit``: the verdict on training's loss (``rates.RateFit``); ``null``: the
    null modes of K (boolean, ascending order of ``setup.lam``); ``ode``: the limiting ODE of a
    full-batch, constant-eta run (``spec.ode(hyper)``), else None."""

    cfg: Config
    setup: Setup
    spec: optimizers.OptimizerSpec
    hyper: optimizers.Resolved
    trained: TrainResult
    fit: rates.RateFit
    null: np.ndarray
    ode: Any

    @property
    def scheduled(self) -> bool:
        """Is eta a schedule (a callable of the step) rather than a number? (``hyper.step``,
        decided once by ``training.optimizer_hyper``)"""
        return self.hyper.step.scheduled

    @property
    def full_batch(self) -> bool:
        return self.cfg.train.batch_size is None

    @property
    def full_batch_constant(self) -> bool:
        """Full-batch training with a constant eta: the setting of the limiting ODEs (which describe
        the mean error, not the mean loss of mini-batch runs) and of the fixed-eta rates."""
        return self.full_batch and not self.scheduled

    def expanded(self, name: str) -> TrainResult:
        """The trained model that face ``name`` asked for (``Trains.expansion``), trained beside the
        network by ``training.train_runs`` (``trained.expansions[name]``); ValueError when it was
        not trained (``trained`` did not come from ``train_runs`` with ``faces.expansions``)."""
        got = self.trained.expansions.get(name)
        if got is None:
            raise ValueError(
                f"face {name!r}: its model was not trained; train with training.train_runs(..., "
                "expansions=[faces.expansions(cfg, setup, spec), ...]) (entry.evaluate_group does)"
            )
        return got

    @property
    def live(self) -> np.ndarray:
        """The eigenvalues of K outside its null space (the null modes hold L*, they do not decay)."""
        lam = self.setup.lam
        return lam[~self.null] if (~self.null).any() else lam


@dataclasses.dataclass(frozen=True)
class FaceValue:
    """What a face predicts for one optimizer of one run.

    ``arrays``: arrays for trajectories.npz (per recorded step, e.g. ``loss_<name>``, or other);
    ``modes``: per predicted trajectory name, its modal coefficients at the recorded steps
    (recorded steps x n, in K's eigenbasis; the held-out face maps them to new points); ``fields``:
    the ``OptimizerResult`` fields this face sets, typed (``results.Predicted``, ``Regime``, a
    description string, ...); a later face's field replaces an earlier one's; ``note``: a sentence
    on what was or was not compared (the last face's note is kept)."""

    arrays: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    modes: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    note: str | None = None


NOTHING = FaceValue()


@dataclasses.dataclass(frozen=True)
class Series:
    """One per-step array of a face as the loss figure draws it: ``key`` in the trajectory, line
    ``style`` (matplotlib), the legend's ``name``; ``kind``: a prediction of the training loss
    (``line``), the lower/upper edge of a band (``band_lo``/``band_hi``, filled between) or a
    held-out loss (``held_out``, drawn faded)."""

    key: str
    style: str | tuple[float, tuple[float, ...]]  # a matplotlib linestyle: name or dash tuple
    name: str
    kind: Literal["line", "band_lo", "band_hi", "held_out"] = "line"


@runtime_checkable
class Face(Protocol):
    """A theory face (module docstring). ``name``, ``compares`` and ``series`` are read only (a
    class attribute satisfies them)."""

    @property
    def name(self) -> str: ...

    @property
    def compares(self) -> tuple[str, ...]: ...

    @property
    def series(self) -> tuple[Series, ...]: ...

    def applies(self, ctx: Context) -> bool | str: ...

    def predict(self, ctx: Context, earlier: Mapping[str, FaceValue]) -> FaceValue: ...


@runtime_checkable
class Trains(Protocol):
    """A face that predicts from a model trained beside the network (module docstring): an optional
    member, apart from ``Face``. ``expansion`` is asked before training, from what is known then
    (the config, the prepared setup, the optimizer's declaration); it returns the model to train
    (a ``models.Model`` with the network's parameters and consts: a Taylor model of the network at
    theta_0, whose expansion point travels in its consts, ``linearized.linear_consts``), or None
    when the face will not apply. It must agree with ``applies``: a face that applies reads its
    trained model from ``ctx.expanded(name)``."""

    def expansion(self, cfg: Config, setup: Setup, spec: optimizers.OptimizerSpec) -> models.Model | None: ...


def merged_arrays(earlier: Mapping[str, FaceValue]) -> dict[str, np.ndarray]:
    """The arrays of ``earlier`` faces, later ones replacing earlier ones of the same name."""
    out: dict[str, np.ndarray] = {}
    for value in earlier.values():
        out.update(value.arrays)
    return out


def merged_fields(earlier: Mapping[str, FaceValue]) -> dict[str, Any]:
    """The result fields set by ``earlier`` faces, later ones replacing earlier ones."""
    out: dict[str, Any] = {}
    for value in earlier.values():
        out.update(value.fields)
    return out
