"""Typed results, the results-folder files and ``load``. Every file is written atomically.

The package: ``types`` (the typed results of a run, with ``parts`` and ``record``), ``sweep`` (summary rows, sweeps), ``study``
(experiments/ studies), ``tables`` (long tables), ``files`` (atomic files), ``load`` (reading a
folder). The one writer of run and sweep folders is ``ntkdyn.pipeline.folder``.

Results folder of one run (written by ``python -m ntkdyn.run`` and by ``pipeline.folder.write_run``)::

    config.yaml        the resolved config (for a model or data given from Python, ``model`` and
                       ``data`` describe them instead: ``{name, source: python, ...}``)
    env.json           versions, device, command, wall time per stage
    data.npz           X (n, d), y (n,), e0 (n,) = f(X; theta_0) - y; with a held-out set (data.test)
                       also X_test, y_test, e0_test = f(X_test; theta_0) - y_test
    kernels.npz        H0 (n, n) empirical NTK at initialisation, eigvals (of K = c H, ascending),
                       Hinf (where defined), kernel_used, loss_scale c; with a held-out set H_test
                       (n_test, n) = H(X_test, X) of kernel_used, and test_loss_scale
    trajectories.npz   per optimizer label L: L/step, L/loss, L/loss_discrete, L/loss_ode,
                       L/loss_ode_diffrax, L/loss_ode_hr, L/ode_time (one value per recorded step),
                       L/error_steps + L/errors (n-vectors), L/kernel_steps + L/kernels + L/kernel_drift;
                       with a held-out set L/test_loss (training's) and its predictions
                       L/test_loss_discrete, L/test_loss_ode, L/test_loss_linearized; with
                       train.sharpness_every L/sharpness_steps, L/sharpness_hessian, L/sharpness_ntk
                       (lambda_max of K = c H) and L/sharpness_limit (when the method has one)
    metrics.json       the schema below
    loss.<png|svg|pdf> (+ loss.csv: the data behind the figure)

A sweep folder holds config.yaml (the sweep), env.json, summary.csv (one ``SweepRow`` per run
and optimizer), sweep.<fmt> and runs/<run_id>/ (each a run folder, written by ``write_run``,
without env.json). A study folder
(``experiments/<study>.py``) holds verdicts.json, arrays.npz and its figures.

metrics.json (one run; keys in ``[]`` are written only when they have a value, ``|null`` may be null)::

    {"spectrum": {"lambda_min", "lambda_max", "kappa"|null, "loss_scale", ["kernel": "H0"|"Hinf"]},
     "optimizers": {LABEL: {
        "optimizer": registry name, "eta", "beta"|null, "r"|null,
        "status": "ok" | "diverged" | "failed",
        "verdict": one of ``rates.VERDICTS`` (linear, sublinear, stalled, diverged, ...),
        "diverged_at": step|null,
        "fitted": {"linear_rate", "r2_linear", "power_exponent", "r2_power", "window": [k0, k1]} (nulls: NaN),
        "predicted": {"linear_rate"|null, ["stable", "unstable_modes", "max_spectral_radius",
                      "crossover_step", "tail_rate", "full_batch_linear_rate", "eta_range",
                      "restart_rule", "restarts", "first_restarts"]},
        "deviation": {"discrete"|null, "ode"|null, "ode_hr"|null, [FACE: gap], ["grad_norm_sq"]},
        "deviation_log10": {FACE: {"max", "mean", "steps"}},
        "theory_verdicts": {FACE: verdict},
        ["predictions_diverged": {FACE: first step at which its loss prediction overflowed}],
        "kernel_drift"|null, "ode": description|null,
        "loss_floor": {"floor", "null_modes", "rtol", "subtracted"},
        "regime": {"regime", "rate", "horizon", "horizon_kind", "window_position"}|null,
        "scope": sentence,
        ["ode_hr": description], ["ode_closed_vs_diffrax"], ["note"], ["error"],
        ["stochastic": {"batch_size", "sampling", "sampling_runs", "mc_runs", "mean", "inside_band",
                        "all_inside", "first_outside_step", "mbb": {"beta", "lam_1", "lam_n",
                        "smooth_knee_batch_size", "smooth_step_size", "quadratic_critical_batch_size",
                        "quadratic_step_size", ["best_step_size"]}, ["linear_rate"],
                        ["linearized": {"inside_band", "all_inside", "first_outside_step"}]}],
        ["linearized": {"diverged_at", "runs"}], ["quadratic": {"diverged_at", "runs"}],
        ["test": {"n", "loss_scale", "loss_initial", "loss_final", "final_step",
                  "predicted_final": {"discrete"|"ode"|"linearized": loss}, "deviation": {same keys},
                  ["note"]}],
        ["sharpness": {"every", "steps", "hessian_lambda_max", "ntk_lambda_max",
                       "stability_limit"|null, "converged"}],
        ["central_flow": {"verdict"|null, "unavailable"|null, "threshold", "window_rule",
                          "loss_tolerance", "sharpness_tolerance", "flow_edge_step", "flow_sharpness_error",
                          "edge_step", "cycles", "loss_error", "sharpness_error", "tail_loss_error",
                          "tail_sharpness_error", "before_edge_loss_error"}]}}}

An optimizer that failed is written as ``{"optimizer", "eta", "status": "failed", "error"}`` (sweep
folders written before the sweep used ``write_run`` hold it without "eta"; read back, eta is None).
Units: rates are loss factors per iteration, deviations relative, drift ||H_k - H_0||_F / ||H_0||_F
(docs/definitions.md). FACE: the compared name of a theory face (``ntkdyn.pipeline.faces``:
discrete, ode, ode_hr, linearized, quadratic, and any face registered later). Every key is a field of the
typed result (``types``); keys a reader does not know are ignored.
"""

from ntkdyn.results.files import (
    VERSIONED,
    atomic_write,
    finite,
    read_npz_groups,
    versions,
    write_csv,
    write_json,
    write_npz,
    write_text,
)
from ntkdyn.results.load import kind_of, load, load_run, load_study, load_sweep
from ntkdyn.results.study import CLAIM_RESULTS, Claim, ClaimResult, StudyCollection, StudyResult
from ntkdyn.results.sweep import DEVIATION_COLUMNS, SUMMARY_COLUMNS, SweepResult, SweepRow
from ntkdyn.results.tables import describe_config, long_table, per_step_columns
from ntkdyn.results.parts import (
    Accuracy,
    BandCheck,
    CentralFlowFace,
    HeldOut,
    KrylovFace,
    Linearized,
    LogGap,
    LossFloor,
    MiniBatchBound,
    Quadratic,
    Regime,
    Sharpness,
    Solver,
    Stochastic,
)
from ntkdyn.results.types import (
    ALWAYS_COMPARED,
    Deviation,
    Fitted,
    OptimizerResult,
    Predicted,
    RunResult,
    Spectrum,
)

__all__ = [
    "CentralFlowFace",
    "ALWAYS_COMPARED", "Accuracy", "BandCheck", "CLAIM_RESULTS", "Claim", "ClaimResult", "DEVIATION_COLUMNS", "Deviation",
    "Fitted", "HeldOut", "Linearized", "LogGap", "LossFloor", "MiniBatchBound", "OptimizerResult", "Quadratic", "Solver", "KrylovFace",
    "Predicted", "Regime", "RunResult", "SUMMARY_COLUMNS", "Sharpness", "Spectrum", "Stochastic", "StudyCollection",
    "StudyResult", "SweepResult", "SweepRow", "VERSIONED", "atomic_write", "describe_config", "finite",
    "kind_of", "load", "load_run", "load_study", "load_sweep", "long_table", "per_step_columns",
    "read_npz_groups", "versions", "write_csv", "write_json", "write_npz", "write_text",
]  # fmt: skip
