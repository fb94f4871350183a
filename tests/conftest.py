"""Shared test setup: float64 everywhere for the theory checks (training tests pass explicit dtypes)."""

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)


def _random_spd(rng: np.random.Generator, n: int, kappa: float, lam_max: float = 1.0) -> np.ndarray:
    """Random symmetric positive definite matrix, eigenvalues log-spaced in [lam_max/kappa, lam_max]."""
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = lam_max * np.geomspace(1.0 / kappa, 1.0, n)
    return (Q * lam) @ Q.T


def version_lines() -> list[str]:
    """The versions this run used (``results.versions``: python, jax, jaxlib, optax, flax, diffrax,
    numpy, ...) and jax's backend and devices."""
    from ntkdyn import results

    versions = ", ".join(f"{k} {v}" for k, v in results.versions().items() if v is not None)
    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    return [
        f"ntkdyn versions: {versions}",
        f"jax backend: {jax.default_backend()}, {len(devices)} device(s): {', '.join(kinds)}",
    ]


@pytest.hookimpl(wrapper=True)
def pytest_sessionstart(session):
    """Print ``version_lines`` after pytest's own header, under ``pytest -q`` too, so that a CI log
    says what it ran (``pytest_report_header``'s lines are not shown under -q)."""
    result = yield
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        for line in version_lines():
            reporter.write_line(line)
    return result


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def random_spd():
    return _random_spd
