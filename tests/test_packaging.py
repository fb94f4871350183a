"""The package as released: it builds as a wheel that carries ``py.typed`` and the licence, and the
wheel installs into a fresh virtual environment (no dependencies installed: they are seen from this
environment's site-packages) where ``import ntkdyn`` loads the installed copy, not this source tree.
Also: ``pytest -q`` prints the versions the tests ran with (README "Set-up")."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(cmd: list[str], cwd: str) -> subprocess.CompletedProcess:
    """``cmd`` without PYTHONPATH (a source tree on it would stand in for the installed package)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def test_wheel_builds_ships_py_typed_and_installs_in_a_fresh_venv(tmp_path):
    dist = tmp_path / "dist"
    # no build isolation: setuptools comes with the test extra, so nothing is downloaded
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            ROOT,
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
        ],
        cwd=str(tmp_path),
    )
    (wheel,) = dist.glob("ntkdyn-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "ntkdyn/py.typed" in names and "ntkdyn/__init__.py" in names
    assert any(n.endswith("LICENSE") for n in names), names
    assert not [n for n in names if n.startswith(("tests/", "experiments/", "docs/"))]
    assert "Requires-Dist: pandas" in metadata and "Requires-Dist: jax" in metadata

    env = tmp_path / "fresh"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    fresh_site = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=str(tmp_path)
    ).stdout.strip()
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        cwd=str(tmp_path),
    )
    # the dependencies (jax, optax, ...) from this environment, seen after the fresh one's own
    # packages (added after the install, so that pip does not take this environment's ntkdyn
    # for the wheel's)
    with open(os.path.join(fresh_site, "deps.pth"), "w") as fh:
        fh.write(sysconfig.get_paths()["purelib"] + "\n")
    probe = (
        "import os, ntkdyn; from ntkdyn import results; "
        "d = os.path.dirname(ntkdyn.__file__); "
        "print(d); print(os.path.isfile(os.path.join(d, 'py.typed'))); print(ntkdyn.__version__)"
    )
    where, typed, version = _run([str(python), "-c", probe], cwd=str(tmp_path)).stdout.split()
    assert where == os.path.join(fresh_site, "ntkdyn"), where  # the installed copy, not the source tree
    assert typed == "True" and version != "0+unknown"


def test_pytest_q_prints_the_versions(tmp_path):
    """tests/conftest.py prints the versions and the device in the header under -q too."""
    out = _run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--collect-only",
            "tests/test_readme.py",
        ],
        cwd=ROOT,
    ).stdout
    versions = next(line for line in out.splitlines() if line.startswith("ntkdyn versions:"))
    for package in ("jax", "jaxlib", "optax", "flax", "diffrax", "numpy"):
        assert f" {package} " in versions, versions
    assert any(line.startswith("jax backend: ") and "device(s)" in line for line in out.splitlines()), out
