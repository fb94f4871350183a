"""Results folders made once per test session by the command line (shared by test_api and
test_report): the quickstart at 200 steps, and a small sweep (2 seeds x 2 beta, gd and hb)."""

import atexit
import functools
import os
import shutil
import tempfile

import yaml

from ntkdyn.run import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BASE = tempfile.mkdtemp(prefix="ntkdyn-test-folders-")
atexit.register(shutil.rmtree, _BASE, ignore_errors=True)

SWEEP = {
    "name": "tiny_sweep",
    "seed": 1,
    "dtype": "float64",
    "data": {"source": "sphere", "n": 12, "d": 5, "target": "teacher"},
    "model": {"name": "paper", "width": 256},
    "train": {"steps": 60, "record_every": 2, "kernel_at": [0, 60]},
    "theory": {"diffrax": False},
    "optimizers": [{"name": "gd", "eta": 0.5}, {"name": "hb", "eta": 0.1, "beta": 0.6}],
    "sweep": {"seed": [0, 1], "beta": [0.3, 0.6]},
}


@functools.cache
def quickstart_folder() -> str:
    """``python -m ntkdyn.run configs/quickstart.yaml --set train.steps=200 --out ...`` (errors kept at
    steps 0 and 200, kernels at 0, 100, 200: the config's own steps lie beyond 200)."""
    out = os.path.join(_BASE, "quickstart")
    rc = main(
        [
            os.path.join(ROOT, "configs", "quickstart.yaml"),
            "--set",
            "train.steps=200",
            "--set",
            "train.error_at=[0, 200]",
            "--set",
            "train.kernel_at=[0, 100, 200]",
            "--out",
            out,
            "--quiet",
        ]
    )
    assert rc == 0
    return out


@functools.cache
def sweep_folder() -> str:
    path = os.path.join(_BASE, "sweep.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump(SWEEP, fh, sort_keys=False)
    out = os.path.join(_BASE, "sweep")
    assert main([path, "--out", out, "--quiet", "--format", "svg"]) == 0
    return out
