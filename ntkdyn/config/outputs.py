"""Validation of many outputs and the classification losses (docs/outputs.md): ``model.outputs``,
``data.target: onehot``, ``model.loss`` softmax_ce / logistic and ``theory.kernel_outputs``. Runs
inside ``validate`` (no file read; an npz's class count is checked by ``data.check`` through
``check_class_count``). Every error names the key."""

from __future__ import annotations

from ntkdyn import models
from ntkdyn.config.schema import Config, ConfigError
from ntkdyn.data import onehot

KERNEL_OUTPUTS = ("traced", "full")
ACCURACY_POINTS = 21  # classification: train.error_at default, evenly spaced steps (accuracy along training)


def check_outputs(cfg: Config) -> None:
    """model.outputs (>= 1; k > 1 needs data.target onehot; with onehot it is the number of classes,
    filled when unset), model.loss (softmax_ce: onehot with k >= 2; logistic: one output with digits'
    pm1 targets), theory.kernel_outputs (k > 1 only; filled: traced for Hinf, full for H0), what k > 1
    does not support (train.batch_size, theory.solver krylov, model.name released) and, for
    classification targets, train.error_at's default (``ACCURACY_POINTS`` evenly spaced steps: the
    network's accuracy is read from its outputs there)."""
    m, d, th = cfg.model, cfg.data, cfg.theory
    if m.outputs is not None and m.outputs < 1:
        raise ConfigError(f"model.outputs: must be >= 1, got {m.outputs}")
    if onehot.is_onehot(d):
        if d.source not in onehot.ONEHOT_SOURCES:
            raise ConfigError(
                f"data.target: 'onehot' needs integer class labels: data.source "
                f"{', '.join(onehot.ONEHOT_SOURCES)}; got {d.source!r}"
            )
        k = onehot.count_without_files(d)
        if k is not None:
            check_class_count(cfg, k)
    elif m.outputs is not None and m.outputs > 1 and not (d.source == "sphere" and d.target == "teacher"):
        raise ConfigError(
            f"model.outputs: {m.outputs} outputs need targets with one column per output: set "
            f"data.target: onehot (digits, mnist, npz with integer labels), or data.source sphere with "
            f"data.target teacher (a teacher with k outputs); got data.source {d.source!r}, "
            f"data.target {d.target!r}"
        )
    k = m.outputs or 1
    several = onehot.is_onehot(d) or k > 1  # targets with one column per output
    if k > 1 and m.name == "released":
        raise ConfigError("model.outputs: the released model has one output; use model.name paper or mlp")
    if m.loss is not None:
        if m.loss not in models.ALL_LOSSES:
            raise ConfigError(
                f"model.loss: {m.loss!r} is not allowed; allowed: {', '.join(models.ALL_LOSSES)}"
            )
        if m.loss == "softmax_ce" and not onehot.is_onehot(d):
            raise ConfigError(
                f"model.loss: 'softmax_ce' needs one-hot targets (data.target: onehot), got data.target "
                f"{d.target!r}"
            )
        if m.loss == "logistic" and not (k == 1 and d.source == "digits" and d.target == "pm1"):
            raise ConfigError(
                "model.loss: 'logistic' needs one output with ±1 targets (data.source digits, "
                f"data.target pm1); got data.source {d.source!r}, data.target {d.target!r}, model.outputs {k}"
            )
    if m.loss in models.CLASSIFICATION_LOSSES:
        if cfg.train.batch_size is not None:
            raise ConfigError(
                f"train.batch_size: mini-batch runs with model.loss {m.loss!r} are not supported "
                "(the function-space predictions are full batch); leave train.batch_size out"
            )
        if th.solver == "krylov":
            raise ConfigError(
                f"theory.solver: 'krylov' does not take model.loss {m.loss!r}; use eigen or auto"
            )
    if not several and th.kernel_outputs is not None:
        raise ConfigError(
            f"theory.kernel_outputs: applies to models with several outputs (data.target onehot, or "
            f"model.outputs > 1 with a sphere teacher); got {th.kernel_outputs!r}; leave it out"
        )
    if several:
        if th.kernel_outputs is None:
            th.kernel_outputs = "traced" if th.kernel == "Hinf" else "full"
        if th.kernel_outputs not in KERNEL_OUTPUTS:
            raise ConfigError(
                f"theory.kernel_outputs: {th.kernel_outputs!r} is not allowed; allowed: "
                f"{', '.join(KERNEL_OUTPUTS)}"
            )
        if th.kernel == "Hinf" and th.kernel_outputs == "full":
            raise ConfigError(
                "theory.kernel_outputs: 'full' is the empirical Gram of the outputs (theory.kernel H0); "
                "the infinite-width kernel is shared by the outputs: use traced with theory.kernel Hinf"
            )
        if cfg.train.batch_size is not None:
            raise ConfigError(
                "train.batch_size: mini-batch runs with several outputs are not supported; leave "
                "train.batch_size out"
            )
        if th.solver == "krylov":
            raise ConfigError("theory.solver: 'krylov' does not take several outputs; use eigen or auto")
    if is_classification(cfg) and cfg.train.error_at is None and cfg.train.steps >= 1:
        s = cfg.train.steps
        cfg.train.error_at = sorted({round(i * s / (ACCURACY_POINTS - 1)) for i in range(ACCURACY_POINTS)})


def check_class_count(cfg: Config, k: int) -> None:
    """model.outputs against the k classes of a one-hot config: filled when unset, else equal."""
    m = cfg.model
    if k < 2:
        raise ConfigError(f"data.target: 'onehot' needs at least 2 classes, got {k}")
    if m.outputs is None:
        m.outputs = k
    elif m.outputs != k:
        raise ConfigError(
            f"model.outputs: {m.outputs} does not match the {k} classes of data.target onehot "
            f"(data.source {cfg.data.source!r}); set model.outputs: {k} or leave it out"
        )


def is_classification(cfg: Config) -> bool:
    """Are the targets classes (one-hot rows, or ±1 labels of one output): accuracy is recorded."""
    return cfg.data.target in ("onehot", "pm1")
