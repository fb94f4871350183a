"""--distributed for real: two CPU processes (jax.distributed with a coordinator on localhost,
gloo collectives, one CPU device each) run a small configs/sweep_beta.yaml; the run axis spans
both processes. summary.csv must equal a one-process run's, and only process 0 writes."""

import csv
import os
import socket
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = [
    "--set",
    "data.n=12",
    "--set",
    "model.width=96",
    "--set",
    "train.steps=60",
    "--set",
    "train.kernel_at=[0,60]",
    "--set",
    "sweep.seed.range=[0,2]",
    "--set",
    "sweep.beta=[0.0,0.5,0.9]",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _cmd(out, *extra):
    return [
        sys.executable,
        "-m",
        "ntkdyn.run",
        os.path.join(ROOT, "configs", "sweep_beta.yaml"),
        *SMALL,
        "--quiet",
        "--out",
        str(out),
        *extra,
    ]


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_two_processes_equal_one_process(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    port = _free_port()
    # process 1 is told another folder: it must write nothing there (process 0 alone writes)
    procs = [
        subprocess.Popen(
            _cmd(
                tmp_path / f"two{i}",
                "--distributed",
                "--coordinator",
                f"localhost:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in (0, 1)
    ]
    one = subprocess.run(
        _cmd(tmp_path / "one"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    logs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    assert one.returncode == 0, one.stderr[-2000:]
    assert not (tmp_path / "two1").exists()
    env_json = (tmp_path / "two0" / "env.json").read_text()
    assert '"processes": 2' in env_json and '"devices_on_run_axis": 2' in env_json
    two, single = _rows(tmp_path / "two0" / "summary.csv"), _rows(tmp_path / "one" / "summary.csv")
    assert len(two) == len(single) == 6
    assert [r["run_id"] for r in two] == [r["run_id"] for r in single]
    for a, b in zip(two, single):
        assert a.keys() == b.keys()
        for key in a:
            try:
                x, y = float(a[key]), float(b[key])
            except ValueError:
                assert a[key] == b[key], key
                continue
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7, err_msg=key)  # float32 training
    assert len(set(r["fitted.linear_rate"] for r in two)) > 1  # the runs differ
