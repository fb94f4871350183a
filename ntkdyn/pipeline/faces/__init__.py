"""Theory faces: each prediction of a trained run is an object (``Face``: name, when it applies,
what it predicts as a typed ``FaceValue``), and ``FACES`` is the one list of them, in the order
they run. Results, summary columns, the command line's table, the loss figure, the report and
``ntkdyn.load`` all follow this list (through the faces' ``compares`` names and ``series``).

A new face is a module here (a class with ``name``, ``compares``, ``series``, ``applies``,
``predict``) and its test; ``register`` adds one at run time (e.g. from a test or a study).

    from ntkdyn.pipeline import faces
    faces.register(MyFace())       # after the shipped ones; unregister("my_face") removes it

A face that needs a model trained (``Trains``: ``expansion(cfg, setup, spec)``) is asked before
training (``expansions``); training trains it beside the network, and the face reads the result.
"""

from __future__ import annotations

from collections.abc import Iterable

from ntkdyn import models, optimizers
from ntkdyn.config import Config
from ntkdyn.pipeline.faces.base import (
    NOTHING,
    Context,
    Face,
    FaceValue,
    Series,
    Trains,
    merged_arrays,
    merged_fields,
)
from ntkdyn.pipeline.faces.central_flow import CentralFlow
from ntkdyn.pipeline.faces.classification import ClassAccuracy
from ntkdyn.pipeline.faces.diffrax_check import DiffraxCheck
from ntkdyn.pipeline.faces.held_out import HeldOutPrediction
from ntkdyn.pipeline.faces.highres import HighResOde
from ntkdyn.pipeline.faces.linearized import LinearizedNetwork
from ntkdyn.pipeline.faces.minibatch import MiniBatch
from ntkdyn.pipeline.faces.ode import LimitingOde, OdeProblem, OdeValue
from ntkdyn.pipeline.faces.quadratic import QuadraticModel
from ntkdyn.pipeline.faces.recurrence import Recurrence
from ntkdyn.pipeline.setup import Setup

# The one list of faces, in the order they run (a face reads the values of those before it).
FACES: list[Face] = [
    Recurrence(),
    LimitingOde(),
    DiffraxCheck(),
    HighResOde(),
    MiniBatch(),
    LinearizedNetwork(),
    QuadraticModel(),
    CentralFlow(),  # off unless theory.central_flow
    HeldOutPrediction(),
    ClassAccuracy(),
]


def register(face: Face) -> Face:
    """Add ``face`` at the end of ``FACES`` (ValueError if a face of that name is there, or if it
    lacks the ``Face`` protocol's members). Returns it."""
    if not isinstance(face, Face):
        raise ValueError(f"register: {face!r} lacks name, compares, series, applies or predict (see Face)")
    if any(f.name == face.name for f in FACES):
        raise ValueError(f"register: a face named {face.name!r} is registered already")
    FACES.append(face)
    return face


def unregister(name: str) -> None:
    """Remove the face called ``name`` from ``FACES`` (nothing if there is none)."""
    FACES[:] = [f for f in FACES if f.name != name]


def expansions(
    cfg: Config, setup: Setup, spec: optimizers.OptimizerSpec, faces: Iterable[Face] | None = None
) -> dict[str, models.Model]:
    """What the faces (default ``FACES``) need trained beside the network for optimizer ``spec`` of
    this run: face name -> model, from each face with an ``expansion`` (``Trains``) that returns
    one. Asked before training; ``training.train_runs(expansions=...)`` trains them."""
    out: dict[str, models.Model] = {}
    for face in FACES if faces is None else faces:
        if isinstance(face, Trains):
            model = face.expansion(cfg, setup, spec)
            if model is not None:
                out[face.name] = model
    return out


def compared_names() -> list[str]:
    """The prediction names compared with training (each face's ``compares``, in ``FACES`` order)."""
    return [p for face in FACES for p in face.compares]


def drawn_series() -> list[Series]:
    """The per-step series the loss figure draws, in ``FACES`` order."""
    return [s for face in FACES for s in face.series]


__all__ = [
    "CentralFlow",
    "FACES", "NOTHING", "ClassAccuracy", "Context", "DiffraxCheck", "Face", "FaceValue", "HeldOutPrediction",
    "HighResOde",
    "LimitingOde", "LinearizedNetwork", "MiniBatch", "OdeProblem", "OdeValue", "QuadraticModel", "Recurrence",
    "Series", "Trains",
    "compared_names", "drawn_series", "expansions", "merged_arrays", "merged_fields", "register",
    "unregister",
]  # fmt: skip
