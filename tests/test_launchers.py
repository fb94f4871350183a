"""Sweeps through the launchers (``ntkdyn.pipeline.launch``): submitit's local executor (the job
array a SLURM cluster would get, run as subprocesses of this machine) and a Ray cluster started
here by ``ray start --head``. Each must give the summary.csv of the local loop, to the last digit
(same programs, same seeds), with one writer per run folder; resume reruns only the unfinished
run; bad launcher flags are one-line errors (exit 2) before anything is computed. Ray is an
optional extra: its test is skipped where ``ray`` is not installed."""

import csv
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

from ntkdyn.pipeline import launch
from ntkdyn.run import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# two shape groups (width 24 and 32) of two seeds: a job array of two jobs
RAW = {
    "name": "launch",
    "dtype": "float64",
    "data": {"source": "sphere", "n": 6, "d": 4},
    "model": {"name": "paper", "width": 24},
    "train": {"steps": 20, "kernel_at": [0, 20]},
    "theory": {"diffrax": False},
    "optimizers": [{"label": "hb", "name": "hb", "eta": 0.2, "beta": 0.5}],
    "sweep": {"seed": [0, 1], "width": [24, 32]},
}


def _config(tmp_path) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(RAW))
    return str(path)


def _rows(out) -> list[dict]:
    with open(os.path.join(out, "summary.csv")) as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def local_summary(tmp_path_factory):
    """The local loop's summary.csv rows (the reference)."""
    tmp = tmp_path_factory.mktemp("local")
    assert main([_config(tmp), "--out", str(tmp / "out"), "--quiet"]) == 0
    rows = _rows(tmp / "out")
    assert len(rows) == 4
    return rows


def test_submitit_job_array_equals_local_and_resumes(tmp_path, local_summary, capsys):
    pytest.importorskip("submitit")
    config, out = _config(tmp_path), tmp_path / "out"
    assert main([config, "--out", str(out), "--quiet", "--launcher", "submitit", "--cluster", "local"]) == 0
    assert _rows(out) == local_summary  # every column of every row, as text: the same numbers
    logs = os.listdir(out / ".submitit")
    assert sum(name.endswith("_submitted.pkl") for name in logs) == 2  # one job per shape group
    runs = sorted(os.listdir(out / "runs"))
    assert len(runs) == 4 and all((out / "runs" / r / "metrics.json").is_file() for r in runs)
    # an interrupted sweep: one run unfinished; the rerun (in-process debug executor) redoes only it
    (out / "runs" / runs[1] / "metrics.json").unlink()
    stamps = {r: os.path.getmtime(out / "runs" / r / "metrics.json") for r in runs if r != runs[1]}
    capsys.readouterr()
    assert main([config, "--out", str(out), "--launcher", "submitit", "--cluster", "debug"]) == 0
    printed = capsys.readouterr().out
    assert "3 finished run(s) skipped; 1 task(s)" in printed, printed
    assert {r: os.path.getmtime(out / "runs" / r / "metrics.json") for r in stamps} == stamps
    assert (out / "runs" / runs[1] / "metrics.json").is_file()
    rerun = _rows(out)
    assert [r["run_id"] for r in rerun] == [r["run_id"] for r in local_summary]
    # the rerun trained that run's group of one: its numbers agree with the batch of two to rounding
    for new, old in zip(rerun, local_summary):
        for key in ("fitted.linear_rate", "predicted.linear_rate", "deviation.discrete", "lambda_max"):
            if old.get(key):
                assert float(new[key]) == pytest.approx(float(old[key]), rel=1e-9), (new["run_id"], key)
    # a finished run with another config is refused, as for the local loop (nothing submitted)
    code = main([config, "--out", str(out), "--launcher", "submitit", "--set", "train.steps=30", "--quiet"])
    assert code == 2 and "different config" in capsys.readouterr().err


def test_submitit_no_wait_then_summary(tmp_path, local_summary, capsys):
    """--no-wait returns after submitting (debug executor: runs when its result is asked for, so
    nothing has run); the same command without it then runs them and writes the summary."""
    pytest.importorskip("submitit")
    config, out = _config(tmp_path), tmp_path / "out"
    args = [config, "--out", str(out), "--quiet", "--launcher", "submitit", "--cluster", "debug"]
    assert main([*args, "--no-wait"]) == 0
    assert "submitted:" in capsys.readouterr().out
    assert not (out / "summary.csv").exists() and (out / "config.yaml").is_file()
    assert main(args) == 0
    assert [r["run_id"] for r in _rows(out)] == [r["run_id"] for r in local_summary]


def test_slurm_job_array_script(tmp_path, monkeypatch, capsys):
    """What SLURM would get: a stand-in ``sbatch`` on PATH records the script submitit writes and
    answers with a job id; --no-wait returns without asking SLURM about the jobs. The array has one
    job per shape group, with the partition, time limit and parallelism asked for."""
    pytest.importorskip("submitit")
    bin_dir, seen = tmp_path / "bin", tmp_path / "sbatch-script"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(f'#!/bin/sh\ncp "$1" {seen}\necho "Submitted batch job 4242"\n')
    sbatch.chmod(0o755)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for srun; never run here
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    flags = ["--launcher", "submitit", "--cluster", "slurm", "--partition", "gpu", "--timeout", "60"]
    flags += ["--array-parallelism", "8", "--executor-arg", "mem_gb=4", "--no-wait"]
    assert main([_config(tmp_path), "--out", str(out), *flags]) == 0
    printed = capsys.readouterr().out
    assert "group 1: 2 run(s) -> submitit job 4242_0" in printed and "4242_1" in printed, printed
    script = seen.read_text()
    for line in ("--partition=gpu", "--time=60", "--array=0-1%2", "--mem=4GB", "--job-name=ntkdyn"):
        assert f"#SBATCH {line}" in script, (line, script)
    assert not (out / "runs").exists() or not os.listdir(out / "runs")  # nothing ran here
    assert not (out / "summary.csv").exists()


def test_a_failed_job_keeps_the_others(tmp_path, monkeypatch, capsys):
    """A job that raises (here group 2's, in the in-process debug executor) is reported with its
    job id; group 1's runs are written and summarised, and the exit status is 1."""
    pytest.importorskip("submitit")
    from ntkdyn.pipeline import runner

    real = runner.sweep_group

    def group(g, *args, **kwargs):
        if g == 2:
            raise RuntimeError("node lost")
        return real(g, *args, **kwargs)

    monkeypatch.setattr(runner, "sweep_group", group)
    monkeypatch.setattr("pdb.post_mortem", lambda *a: None)  # the debug executor's debugger on failure
    out = tmp_path / "out"
    assert (
        main(
            [_config(tmp_path), "--out", str(out), "--quiet", "--launcher", "submitit", "--cluster", "debug"]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "group 2 (submitit job" in err and "RuntimeError: node lost" in err, err
    assert "2 run(s) not finished" in err
    assert {r["width"] for r in _rows(out)} == {"24"}


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--launcher", "slurm"], "--launcher: unknown launcher 'slurm'"),
        (["--partition", "gpu"], "--partition: only with --launcher submitit"),
        (["--timeout", "30", "--launcher", "ray"], "--timeout: only with --launcher submitit"),
        (["--launcher", "submitit", "--cluster", "pbs"], "--cluster: unknown submitit cluster"),
        (["--launcher", "submitit", "--timeout", "0"], "--timeout: minutes >= 1"),
        (["--launcher", "ray", "--no-wait"], "--no-wait: only with --launcher submitit"),
        (["--ray-address", "x:1"], "--ray-address: only with --launcher ray"),
        (["--launcher", "submitit", "--executor-arg", "mem_gb"], "--executor-arg: expected KEY=VALUE"),
        (["--launcher", "submitit", "--distributed"], "--distributed: not with --launcher submitit"),
        (["--executor-arg", "mem_gb=4"], "--executor-arg: only with --launcher submitit or ray"),
    ],
)
def test_bad_launcher_flags_are_one_line_errors(tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    assert main([_config(tmp_path), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()  # nothing computed or written


def test_unknown_executor_parameter_is_refused_before_writing(tmp_path, capsys):
    pytest.importorskip("submitit")
    out = tmp_path / "out"
    flags = ["--launcher", "submitit", "--cluster", "debug", "--executor-arg", "no_such_parameter=1"]
    assert main([_config(tmp_path), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert "--executor-arg: not a submitit parameter here" in err and err.count("\n") == 1, err
    assert not (out / "config.yaml").exists() and not (out / "runs").exists()


def test_launcher_only_for_sweeps(tmp_path, capsys):
    single = {k: v for k, v in RAW.items() if k != "sweep"}
    path = tmp_path / "single.yaml"
    path.write_text(yaml.safe_dump(single))
    assert main([str(path), "--out", str(tmp_path / "o"), "--launcher", "submitit"]) == 2
    assert "only for sweeps" in capsys.readouterr().err


def test_missing_engine_names_the_extra(monkeypatch):
    """Without the engine installed, the error says which extra to install."""
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    monkeypatch.setitem(sys.modules, "ray", None)
    for name in ("submitit", "ray"):
        with pytest.raises(launch.LauncherError, match=rf"pip install 'ntkdyn\[{name}\]'"):
            launch.check_available(launch.LaunchOptions(launcher=name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster():
    """A one-node Ray cluster started here (``ray start --head --block``, its own temp folder and
    port), stopped at the end by SIGTERM to that command (which stops the processes it started)."""
    ray = pytest.importorskip("ray")
    exe = os.path.join(os.path.dirname(sys.executable), "ray")
    if not os.path.isfile(exe):
        pytest.skip("the ray command is not installed beside this Python")
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    cmd = [exe, "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--include-dashboard=false"]
    cmd += [f"--temp-dir={temp}", "--disable-usage-stats", "--object-store-memory=100000000"]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                ray.init(address=address, log_to_driver=False)
                break
            except ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("ray start --head did not come up within 90 s")
                time.sleep(1)
        yield address
    finally:
        ray.shutdown()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_ray_tasks_equal_local(tmp_path, local_summary, ray_cluster):
    out = tmp_path / "out"
    assert (
        main(
            [
                _config(tmp_path),
                "--out",
                str(out),
                "--quiet",
                "--launcher",
                "ray",
                "--ray-address",
                ray_cluster,
            ]
        )
        == 0
    )
    assert _rows(out) == local_summary
    assert len(os.listdir(out / "runs")) == 4
