"""Atomic files and JSON-safe numbers: every results file is written through ``atomic_write``."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Any, cast

import numpy as np


def atomic_write(path: str, write: Callable[[IO[Any]], object], binary: bool = False) -> None:
    """Write via ``write(fh)`` to a temporary file in the same folder, then rename over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb" if binary else "w") as fh:
            write(fh)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path: str, obj) -> None:
    atomic_write(path, lambda fh: json.dump(obj, fh, indent=2, default=_json_default))


def write_text(path: str, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text))


def write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    atomic_write(path, lambda fh: np.savez(fh, **cast(dict[str, Any], arrays)), binary=True)


def write_csv(path: str, columns: Mapping[str, Iterable]) -> None:
    """A CSV with one column per key (all of the same length); None and NaN are written empty."""
    names = list(columns)
    cols = [list(v) for v in columns.values()]
    if len({len(c) for c in cols}) > 1:
        raise ValueError(f"write_csv {path}: columns of different lengths {[len(c) for c in cols]}")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(names)
    for row in zip(*cols):
        writer.writerow(["" if _missing(v) else _plain(v) for v in row])
    write_text(path, buffer.getvalue())


def read_npz_groups(path: str) -> dict[str, dict[str, np.ndarray]]:
    """{'hb': {'step': ..., 'loss': ...}, ...} from keys 'hb/step', 'hb/loss', ... (split at the last '/')."""
    out: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path) as f:
        for key in f.files:
            label, _, name = key.rpartition("/")
            out.setdefault(label, {})[name] = f[key]
    return out


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


VERSIONED = tuple("ntkdyn jax jaxlib optax flax diffrax numpy scipy scikit-learn matplotlib".split())


def versions() -> dict[str, str | None]:
    """Python's version and the installed version of each package in ``VERSIONED`` (None where
    not installed): env.json's and verdicts.json's "versions"."""
    import importlib.metadata
    import platform

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in VERSIONED:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def finite(x):
    """A JSON-safe number: ``float(x)`` if finite, None for None, NaN or +-inf; lists and tuples
    element by element (the one finite cleanup of metrics written to JSON)."""
    if x is None:
        return None
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    x = float(x)
    return x if math.isfinite(x) else None


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v
