"""Long tables of per-step trajectories and one-line descriptions of what was run."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np


def per_step_columns(arrays: Mapping[str, np.ndarray]) -> list[str]:
    """Names of the arrays indexed by the recorded steps: 1-D, as long as ``step``, and not one of
    the series indexed by ``error_steps``, ``kernel_steps`` or ``sharpness_steps`` (names starting
    'error', 'kernel' or 'sharpness')."""
    step = arrays.get("step")
    if step is None:
        return []
    n = np.shape(step)[0]
    return [
        k
        for k, v in arrays.items()
        if np.ndim(v) == 1 and np.shape(v)[0] == n and not k.startswith(("error", "kernel", "sharpness"))
    ]


def long_table(
    groups: Iterable[tuple[str, str, Mapping[str, np.ndarray]]],
    pandas: bool | None = None,
    constants: Mapping[str, Mapping[str, Any]] | None = None,
    constant_names: Iterable[str] = (),
    fixed: Sequence[str] | None = None,
):
    """One row per (run_id, label, recorded step): columns run_id, label, [swept values], step,
    loss, then every other per-step array (``per_step_columns``; absent ones are NaN).

    Args:
        groups: (run_id, label, arrays) triples.
        pandas: True -> a pandas DataFrame, False -> a dict of numpy columns, None -> a DataFrame
            when pandas is installed.
        constants: run_id -> {name: value} repeated on every row of that run (e.g. swept values).
        constant_names: the names of those columns, in order.
        fixed: exactly these array columns (all of one length per group) instead of the per-step ones.
    Returns:
        A DataFrame or a dict name -> 1-D numpy array (all of equal length).
    """
    groups = [(run_id, label, arrs) for run_id, label, arrs in groups if "step" in arrs]
    constant_names = list(constant_names)
    names: list[str] = list(fixed) if fixed is not None else ["step", "loss"]
    for _, _, arrs in groups if fixed is None else ():
        names += [k for k in per_step_columns(arrs) if k not in names]
    take = (lambda arrs: set(fixed)) if fixed is not None else per_step_columns
    cols: dict[str, list] = {
        "run_id": [],
        "label": [],
        **{c: [] for c in constant_names},
        **{k: [] for k in names},
    }
    for run_id, label, arrs in groups:
        n = np.shape(arrs["step"])[0]
        cols["run_id"].append(np.full(n, run_id, dtype=object))
        cols["label"].append(np.full(n, label, dtype=object))
        for c in constant_names:
            cols[c].append(np.full(n, (constants or {}).get(run_id, {}).get(c), dtype=object))
        columns = take(arrs)
        for k in names:
            cols[k].append(np.asarray(arrs[k]) if k in arrs and k in columns else np.full(n, np.nan))
    table = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()}
    for c in constant_names:  # numeric swept values as numbers
        try:
            table[c] = table[c].astype(float)
        except (TypeError, ValueError):
            pass
    if "step" in table and table["step"].size:
        table["step"] = table["step"].astype(np.int64)
    return _as_frame(table, pandas)


def _as_frame(table: dict[str, Any], pandas: bool | None):
    if pandas is False:
        return table
    try:
        import pandas as pd
    except ImportError:
        if pandas:
            raise ImportError("pandas=True needs pandas installed (pip install pandas)") from None
        return table
    return pd.DataFrame(table)


# --------------------------------------------------------------------------- describing what was run
def describe_config(cfg: Mapping[str, Any], with_name: bool = True) -> str:
    """'quickstart: paper model (m=4096) on sphere data (n=64, d=16, teacher); gd, hb, nag_c; 1500 steps'."""
    model, data, train = cfg.get("model") or {}, cfg.get("data") or {}, cfg.get("train") or {}
    mdesc = f"{model.get('name', '?')} model"
    if model.get("width") is not None and model.get("name") in ("paper", "released", "mlp"):
        mdesc += (
            f" (m={model['width']}"
            + (f", depth {model['depth']}" if model.get("name") == "mlp" else "")
            + ")"
        )
    elif model.get("parameters") is not None:
        mdesc += f" ({model['parameters']} parameters)"
    source = data.get("source", "?")
    details = [
        f"{k}={data[k]}"
        for k in ("n", "d")
        if data.get(k) is not None and not (k == "d" and source == "digits")
    ]
    if data.get("target") and source != "python":
        details.append(str(data["target"]))
    ddesc = f"{source} data" + (f" ({', '.join(details)})" if details else "")
    opts = ", ".join(str(o.get("label") or o.get("name")) for o in cfg.get("optimizers") or [])
    steps = f"; {train['steps']} steps" if train.get("steps") is not None else ""
    head = f"{cfg.get('name', 'run')}: " if with_name else ""
    return f"{head}{mdesc} on {ddesc}; {opts}{steps}"
