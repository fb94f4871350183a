"""Sweeps: expand a ``sweep:`` section into run configs and group them by shape.

    sweep:
      seed: {range: [0, 8]}                 # 0..7
      eta: {geom: [1e-3, 1e-1, 5]}          # 5 values, log-spaced
      optimizers.0.beta: [0.0, 0.5, 0.9]    # any dotted config key
      width: [1024, 4096]                   # aliases: seed, width, n, d, steps

``eta``, ``beta`` and ``r`` without a path apply to every optimizer that takes them. The grid
is the Cartesian product of the axes, in the order written. Runs whose configs differ only in
seed and numeric optimizer hyperparameters share shapes and train as one compiled, vmapped program;
shape-changing axes (width, n, d, steps, ...) form separate groups, and so do step-size schedules
(a schedule is compiled in): an axis over one schedule's fields (``optimizers.0.eta.peak_value:
[0.01, 0.1]``) gives one group per schedule. Axis values are scalars (numbers, strings, ...), not
mappings: a whole schedule is not an axis value.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import re

import numpy as np

from ntkdyn import checks, optimizers
from ntkdyn import config as config_mod

ALIASES = {"width": "model.width", "n": "data.n", "d": "data.d", "steps": "train.steps"}
OPTIMIZER_AXES = ("eta", "beta", "r")
SHARED_SHAPE_KEYS = ("seed",)  # and the optimizers' numeric hyperparameters


@dataclasses.dataclass
class Run:
    run_id: str
    values: dict  # axis -> value
    cfg: config_mod.Config


def axis_values(key: str, spec) -> list:
    """A list, {range: [start, stop(, step)]} (integers, stop excluded), {linspace: [a, b, num]}
    or {geom: [a, b, num]} (log-spaced)."""
    if isinstance(spec, list):
        if not spec:
            raise config_mod.ConfigError(f"sweep.{key}: empty list")
        if any(isinstance(v, dict) for v in spec):  # summary.csv and sweep.png need scalar axis values
            raise config_mod.ConfigError(
                f"sweep.{key}: the values must be numbers or strings, not mappings (got {spec!r}); to "
                f"sweep a step-size schedule, put it in the config and sweep its fields, e.g. "
                f"'optimizers.0.eta.peak_value: [0.001, 0.01]' (one program per schedule)"
            )
        return spec
    values: list[int] | list[float] | None = None
    if isinstance(spec, dict) and len(spec) == 1:
        ((kind, args),) = spec.items()
        try:
            if kind == "range":
                values = list(range(*[int(a) for a in args]))
            elif kind == "linspace":
                values = [float(v) for v in np.linspace(float(args[0]), float(args[1]), int(args[2]))]
            elif kind == "geom":
                values = [float(v) for v in np.geomspace(float(args[0]), float(args[1]), int(args[2]))]
        except (TypeError, ValueError, IndexError, ZeroDivisionError):
            values = None
    if values == []:
        raise config_mod.ConfigError(f"sweep.{key}: {spec!r} gives no values; the grid would be empty")
    if values is not None:
        return values
    raise config_mod.ConfigError(
        f"sweep.{key}: expected a list or one of {{range: [start, stop]}}, {{linspace: [a, b, num]}}, "
        f"{{geom: [a, b, num]}}, got {spec!r}"
    )


def _assignments(raw: dict, key: str, value) -> list[str]:
    """The --set style assignments that one axis value stands for."""
    if key in OPTIMIZER_AXES:
        targets = []
        for i, o in enumerate(raw.get("optimizers") or []):
            name = o.get("name") if isinstance(o, dict) else None
            spec = optimizers.REGISTRY.get(name) if isinstance(name, str) else None
            if key == "eta" or (spec is not None and key in spec.hyper):
                targets.append(f"optimizers.{i}.{key}")
        if not targets:
            raise config_mod.ConfigError(f"sweep.{key}: no optimizer in 'optimizers' takes {key!r}")
        return [f"{t}={json.dumps(value)}" for t in targets]
    return [f"{ALIASES.get(key, key)}={json.dumps(value)}"]


def _slug(value) -> str:
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "_", text)


def expand(raw: dict) -> list[Run]:
    """Every grid point of ``raw['sweep']`` as a validated Config whose files are checked
    (``checks.check_files``; errors name the axis and the point). An axis with no values is refused."""
    sweep = raw.get("sweep")
    if not isinstance(sweep, dict) or not sweep:
        raise config_mod.ConfigError(
            f"sweep: expected a non-empty mapping of axis -> values (e.g. {{seed: [0, 1]}}), got {sweep!r}"
        )
    base = {k: v for k, v in raw.items() if k != "sweep"}
    axes = {key: axis_values(key, spec) for key, spec in sweep.items()}
    runs = []
    for i, combo in enumerate(itertools.product(*axes.values())):
        values = dict(zip(axes, combo))
        run_raw = copy.deepcopy(base)
        for key, value in values.items():
            for assignment in _assignments(run_raw, key, value):
                try:
                    run_raw = config_mod.apply_override(run_raw, assignment)
                except config_mod.ConfigError as exc:
                    raise config_mod.ConfigError(f"sweep.{key}: {exc}") from None
        try:
            cfg = checks.check_files(config_mod.from_dict(run_raw))
        except config_mod.ConfigError as exc:
            raise config_mod.ConfigError(f"sweep point {values}: {exc}") from None
        run_id = f"{i:04d}_" + "_".join(f"{k.split('.')[-1]}={_slug(v)}" for k, v in values.items())
        runs.append(Run(run_id, values, cfg))
    return runs


def shape_key(cfg: config_mod.Config) -> str:
    """Identical for configs that differ only in seed and numeric optimizer hyperparameters (eta, beta,
    r): those runs train as one program. A scheduled eta (a mapping, ``ntkdyn.schedules``) is compiled
    into the training program, so it stays in the key: runs with different schedules (or different
    fields of one, e.g. an axis ``optimizers.0.eta.peak_value``) form separate groups."""
    d = config_mod.to_dict(cfg)
    d.pop("seed")
    d.pop("name")
    d.pop("notes", None)
    numeric = lambda k, v: k in ("beta", "r") or (k == "eta" and not isinstance(v, dict))  # noqa: E731
    d["optimizers"] = [{k: v for k, v in o.items() if not numeric(k, v)} for o in d["optimizers"]]
    return json.dumps(d, sort_keys=True, default=str)


def group_by_shape(runs: list[Run]) -> list[list[Run]]:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(shape_key(run.cfg), []).append(run)
    return list(groups.values())
