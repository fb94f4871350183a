"""The run path, one job per module, layered bottom to top (each imports only those above it in
this list):

    claim      what an existing results folder means, decided before anything is computed
    setup      config -> data, model and parameters, kernels (H0, H∞), eigenpairs of K = c H
    training   a group of runs of equal shapes trained as ONE compiled program -> ``TrainResult``
               (with the hyperparameters it resolved once, step size included, and the models the
               faces asked for trained beside the network: ``TrainResult.expansions``)
    faces      the theory faces (``Face``) and ``FACES``, the one list of them; they predict from
               the setup and training's results and never train (``faces.expansions`` says, before
               training, what a face needs trained)
    evaluate   assembly: training's trajectory + the faces' values -> ``results.OptimizerResult``
    entry      the Python entry points: run_study, run_group, prepare, evaluate_group, and
               ``stages`` (a group of runs as it proceeds, as typed runs)
    folder     the writer of run and sweep folders (atomic files)
    runner     a single run or a sweep's shape group into a folder (what the command line runs)
    launch     a sweep's shape groups handed to an executor: this process, submitit, Ray
               (imported on use: ``from ntkdyn.pipeline import launch``; the engines are extras)

The command line (``ntkdyn.run``) parses, prints and sets exit codes; it calls ``runner``, which
goes down the path once: claim -> setup -> entry (training, then evaluate with its faces) -> folder (or
``launch`` with ``--launcher``, which hands the sweep's groups to ``runner`` on an executor).
"""

from __future__ import annotations

from ntkdyn.pipeline import claim, entry, evaluate, faces, folder, runner, setup, training  # noqa: I001  (layer order)
from ntkdyn.pipeline.entry import (
    Evaluated,
    Stage,
    evaluate_group,
    prepare,
    run_group,
    run_optimizer,
    run_study,
    stages,
)
from ntkdyn.pipeline.evaluate import failed_result, run_result, spectrum_of
from ntkdyn.pipeline.faces import FACES, Context, Face, FaceValue, Series
from ntkdyn.pipeline.runner import SingleRun
from ntkdyn.pipeline.setup import (
    Setup,
    build_model,
    jax_dtype,
    kernel_rtol,
    load_data,
    load_test_data,
    with_held_out,
)
from ntkdyn.pipeline.training import (
    StabilityWarning,
    held_out_sets,
    mean_result,
    optimizer_hyper,
    progress_chunks,
    sampling_keys,
    train_expansion,
    train_linearized,
    train_plan,
    train_quadratic,
    train_runs,
    train_sampled,
)

__all__ = [
    "FACES", "Context", "Evaluated", "Face", "FaceValue", "Series", "Setup", "SingleRun",
    "StabilityWarning", "Stage", "build_model", "claim", "entry", "evaluate", "evaluate_group", "faces",
    "failed_result", "folder", "held_out_sets", "jax_dtype", "kernel_rtol", "load_data", "load_test_data",
    "mean_result", "optimizer_hyper", "prepare", "progress_chunks", "run_group", "run_optimizer",
    "run_result", "run_study", "runner", "sampling_keys", "setup", "spectrum_of", "stages",
    "train_expansion", "train_linearized", "train_plan", "train_quadratic", "train_runs", "train_sampled",
    "training", "with_held_out",
]  # fmt: skip
