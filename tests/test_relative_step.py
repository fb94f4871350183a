"""A step size relative to the spectrum (eta: {per_lambda_max: p}), the stability warning before
training, and a kernel prediction that diverges (issue "Nothing silently wrong" §4).

References: lambda_max from numpy's eigvalsh of c H0 (the kernel the predictions use, read back from
the run), the closed-form stability limits 2 (GD) and 2 (1 + beta) (heavy ball) of the per-mode
recurrences c_{k+1} = (1 - h) c_k and c_{k+1} = (1 + beta - h) c_k - beta c_{k-1}, and a run given the
same eta as a number."""

import subprocess
import sys
import warnings

import numpy as np
import pytest

import ntkdyn
from ntkdyn.pipeline.entry import StabilityWarning


def _raw(optimizers, steps=40, dtype="float64"):
    return {
        "name": "rel",
        "seed": 1,
        "dtype": dtype,
        "data": {"source": "sphere", "n": 12, "d": 3},
        "model": {"name": "paper", "width": 128},
        "train": {"steps": steps},
        "theory": {"diffrax": False},
        "optimizers": optimizers,
    }


def _run(raw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = ntkdyn.run_study(raw)
    return run, [w for w in caught if issubclass(w.category, StabilityWarning)]


def test_per_lambda_max_is_p_over_lambda_max_and_equals_the_explicit_step():
    run, caught = _run(_raw([{"label": "gd", "name": "gd", "eta": {"per_lambda_max": 1.5}}]))
    H0 = np.asarray(run.kernels["H0"], np.float64)
    lam_max = np.linalg.eigvalsh(run.spectrum.loss_scale * H0)[-1]
    eta = run.optimizers["gd"].eta
    assert eta == pytest.approx(1.5 / lam_max, rel=1e-10)
    assert not caught
    explicit, _ = _run(_raw([{"label": "gd", "name": "gd", "eta": float(eta)}]))
    np.testing.assert_allclose(
        run.optimizers["gd"].trajectory["loss"], explicit.optimizers["gd"].trajectory["loss"], rtol=1e-12
    )


@pytest.mark.parametrize(
    "opt, limit, warned",
    [
        ({"name": "gd", "eta": {"per_lambda_max": 1.95}}, 2.0, False),
        ({"name": "gd", "eta": {"per_lambda_max": 2.05}}, 2.0, True),
        ({"name": "hb", "beta": 0.5, "eta": {"per_lambda_max": 2.9}}, 3.0, False),
        ({"name": "hb", "beta": 0.5, "eta": {"per_lambda_max": 3.1}}, 3.0, True),
    ],
)
def test_stability_warning_names_the_method_limit(opt, limit, warned):
    _, caught = _run(_raw([{"label": "x", **opt}], steps=5))
    assert bool(caught) == warned
    if warned:
        text = str(caught[0].message)
        assert f"stability limit {limit:.4g}" in text and "optimizer x" in text and "diverges" in text


def test_a_diverging_prediction_says_so_without_runtime_warnings(tmp_path):
    """GD at eta lambda_max = 2.3: the kernel recurrence grows like 1.3^(2k) and overflows float64
    after about 1350 steps; the result lists the step, the deviation is None (not inf or NaN), no
    numpy RuntimeWarning is raised, and the CLI table says diverges@<step>."""
    raw = _raw([{"label": "gd", "name": "gd", "eta": {"per_lambda_max": 2.3}}], steps=1500)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        warnings.simplefilter("ignore", StabilityWarning)
        run = ntkdyn.run_study(raw)
    o = run.optimizers["gd"]
    loss = o.trajectory["loss_discrete"]
    first_bad = int(o.trajectory["step"][np.argmax(~np.isfinite(loss))])
    assert not np.isfinite(loss).all() and o.predictions_diverged == {"discrete": first_bad}
    assert o.deviation.get("discrete") is None and o.theory_verdicts["discrete"] == "diverged"
    # the kernel recurrence's top mode: |1 - h|^(2k) times its initial weight reaches float64's max
    h = 2.3
    assert 0.5 * np.log(np.finfo(np.float64).max) / np.log(h - 1) == pytest.approx(first_bad, rel=0.05)
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "ntkdyn.run", str(path), "--out",
         str(tmp_path / "out"), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"diverges@{first_bad}" in proc.stdout
    assert "stability limit 2" in proc.stderr
    back = ntkdyn.load(str(tmp_path / "out"))
    assert back.optimizers["gd"].predictions_diverged == {"discrete": first_bad}
