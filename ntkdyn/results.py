"""Results folder I/O: every file is written to a temporary name and renamed (atomic)."""
from __future__ import annotations

import io
import json
import os
import tempfile
from typing import Callable

import numpy as np


def atomic_write(path: str, write: Callable[[io.IOBase], None], binary: bool = False) -> None:
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
    atomic_write(path, lambda fh: np.savez(fh, **arrays), binary=True)


def read_npz_groups(path: str) -> dict[str, dict[str, np.ndarray]]:
    """{'hb': {'step': ..., 'loss': ...}, ...} from keys 'hb/step', 'hb/loss', ..."""
    out: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path) as f:
        for key in f.files:
            label, name = key.split("/", 1)
            out.setdefault(label, {})[name] = f[key]
    return out


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
