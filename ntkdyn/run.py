"""Command line: ``python -m ntkdyn.run CONFIG [--set a.b=value ...] [--out DIR]``.

Writes a results folder (see docs/results-folder.md) and prints a summary table. Files are
written atomically as soon as their stage finishes, so a later failure loses nothing. This module
only parses, prints and sets exit codes: the runs are ``pipeline.runner``'s, the folder
``pipeline.folder``'s. Exit status: 0 ok, 1 an optimizer or an output stage failed (the rest is
written), 2 bad input (one line on stderr, nothing computed).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from ntkdyn import checks, results
from ntkdyn import config as config_mod
from ntkdyn.cli_tables import summary_table, sweep_table

HELP_EPILOG = """\
config keys (docs/configuration.md; each section's keys on the lines below it):
  name, seed, dtype    run name; data and initialisation seed; float32 | float64 (training; theory float64)
  notes              written by ntkdyn into config.yaml: what validation changed (clipped step lists)
  data:
    source             sphere | digits | npz | mnist (files you have; nothing is downloaded)
    n, d               points (default 64; npz: all; mnist: 600); input dimension (sphere)
    target             sphere: gaussian | teacher (default) | smooth; digits: pm1 | label | onehot;
                       mnist: label | onehot; npz: onehot (integer labels as one-hot rows)
    noise, teacher_width     sphere: target noise std; width of the teacher network
    classes            digits to keep (digits)
    normalize          unit | standardize | none | pixels (image sources; mnist's default)
    path               npz file with X, y; mnist: IDX images file, its folder, or an .npz
    test               a held-out set, evaluated but not trained on (docs/configuration.md)
  model:
    name               paper | released | mlp | flax
    width, depth       hidden width; hidden layers (mlp)
    init_std, init     first-layer std; released only: notebook (default) | gaussian_bias
    W_std, b_std       mlp weight and bias std (NTK parameterisation)
    loss               half_sum | mse | half_mse | softmax_ce | logistic (default: the model's)
    outputs            k outputs (default 1; data.target onehot: the number of classes; docs/outputs.md)
    module, kwargs     flax: 'package.module:factory', called as factory(key, d, **kwargs)
    init_params        .npz with the initial parameters
  train:
    steps, record_every      steps; loss recorded every record_every steps
    error_at, kernel_at      steps whose error vector / NTK (kernel drift) are kept
    divergence_factor        loss above this x L_0 (or non-finite) marks divergence
    batch_size               mini-batch size b, 1..n (default null: full batch)
    sampling                 replacement (b i.i.d. indices a step) | shuffle (epochs of a permutation)
    sampling_runs            batch orders trained per optimizer as one program (mini-batch only)
    sharpness_every          lambda_max of Hess L and of K = c H every k steps (a multiple of record_every)
  theory:
    kernel             H0 | Hinf
    diffrax, rtol, atol      also integrate each ODE numerically, with these tolerances
    linearized         auto (optimizers without a recurrence) | always | never: train the linearisation too
    quadratic          never | auto | always: train the second-order Taylor model too (where Hess f != 0)
    central_flow       true: the GD central flow at the edge of stability too (full-batch gd, constant eta)
    solver             auto (krylov when n > 4096) | eigen | krylov: predictions through K's eigenbasis, or
                       by products with K (Lanczos; no eigendecomposition, see docs/large-n.md)
    mc_runs            sampled batch orders of the kernel recurrence (mini-batch bands, shuffle's mean)
    kernel_outputs     k outputs: traced (H (x) I_k; default with Hinf) | full (the nk x nk Gram; with H0)
  rates:
    window             [start, end]: fractions of steps, or absolute steps when > 1
    stall_factor       loss-envelope factor over the window: risen by more, growing; moved less, stalled
  optimizers:          list of {name, eta, label, beta, r, kwargs}: gd, hb, nag, nag_c, ... or any optax
                       name (adam, rmsprop, ...; extra arguments in kwargs); eta is a number, a step
                       relative to the spectrum {per_lambda_max: p} (p / lambda_max(K)) or a schedule
                       {schedule: NAME, ...its optax arguments}, e.g.
                       {schedule: warmup_cosine, init_value: 0, peak_value: 0.01, warmup_steps: 100,
                        decay_steps: 1000} (cosine_decay, piecewise, exponential, ...;
                       docs/beyond-full-batch.md)
  control:             optional control view (configs/control.yaml)
    labels, extra      optimizers analysed (default: every one with a recurrence); analysed, not trained
    band, max_iters, step_steps    settling band, iteration limit, step-response length
    map_optimizers, map_eta, map_beta, map_grid, map_steps, map_dtype    (eta, beta) maps
    locus, locus_points            root locus parameter (beta | eta) and points
    sweep_optimizer, sweep_etas, sweep_time    eta sweep: low- vs high-resolution ODE vs training

sweeps: a 'sweep:' section makes a grid (the product of its axes), e.g.
  sweep:
    seed: {range: [0, 8]}          # 0..7; also {linspace: [a, b, num]}, {geom: [a, b, num]}
    beta: [0.0, 0.5, 0.9]          # eta, beta, r apply to every optimizer that takes them
    width: [1024, 4096]            # aliases seed, width, n, d, steps; or any dotted key
    optimizers.0.eta.peak_value: [0.001, 0.01]   # a schedule's fields (one program per schedule)
  or on the command line: --set 'sweep={beta: [0.0, 0.5, 0.9]}'

exit status: 0 ok; 1 an optimizer, the plot or the control stage failed (the rest is written);
2 bad config or input (nothing computed).
"""


def _config_list() -> str:
    """The configs/ shipped beside the package, each with its first comment line."""
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
    if not os.path.isdir(folder):
        return ""
    lines = []
    for name in sorted(f for f in os.listdir(folder) if f.endswith(".yaml")):
        with open(os.path.join(folder, name)) as fh:
            first = fh.readline().strip()
        lines.append(f"  configs/{name:<18} {first.lstrip('# ') if first.startswith('#') else ''}")
    return "configs:\n" + "\n".join(lines) + "\n\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m ntkdyn.run",
        description=__doc__.split("\n")[0],
        epilog=_config_list() + HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="YAML config file (see configs/)")
    p.add_argument(
        "--format",
        choices=("png", "svg", "pdf"),
        default="png",
        help="figure format (default png); each figure's data is written beside it as .csv",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.steps=500 --set optimizers.0.eta=0.1",
    )
    p.add_argument("--out", help="results folder (default results/<name>-<time>)")
    p.add_argument("--quiet", action="store_true", help="print only the summary table")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace what --out holds: a single run into a non-empty folder, or a sweep whose finished "
        "runs were made with a different config (default: refuse; a sweep resumes runs of the same config)",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help='call jax.distributed.initialize() first (multi-process sweeps; docs/running.md "Scaling out")',
    )
    p.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="with --distributed: coordinator address "
        "(default: found by jax on a cluster, or JAX_COORDINATOR_ADDRESS)",
    )
    p.add_argument("--num-processes", type=int, help="with --distributed: number of processes")
    add_launcher_args(p)
    p.add_argument(
        "--process-id", type=int, help="with --distributed: this process's id (0 writes the results)"
    )
    return p.parse_args(argv)


def add_launcher_args(p: argparse.ArgumentParser) -> None:
    """The sweep launcher's flags (``pipeline.launch``; docs/running.md "Clusters")."""
    g = p.add_argument_group("sweeps on a cluster (docs/running.md, Clusters)")
    g.add_argument(
        "--launcher",
        default="local",
        help="local (default: this process) | submitit (a job array: SLURM, or submitit's local executor) "
        "| ray (tasks on an existing Ray cluster): where a sweep's shape groups run",
    )
    g.add_argument("--partition", help="submitit: SLURM partition")
    g.add_argument("--timeout", type=int, metavar="MIN", help="submitit: time limit of each job, in minutes")
    g.add_argument("--array-parallelism", type=int, metavar="N", help="submitit: jobs of the array at once")
    g.add_argument(
        "--cluster",
        help="submitit: slurm | local | debug (default: slurm where sbatch is found, else local)",
    )
    g.add_argument(
        "--executor-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="submitit: another executor parameter (mem_gb=16, gpus_per_node=1, slurm_account=abc, ...); "
        "ray: a task option (num_cpus=2, num_gpus=1, ...)",
    )
    g.add_argument("--ray-address", help="ray: the cluster's address (default: RAY_ADDRESS, else auto)")
    g.add_argument(
        "--no-wait",
        action="store_true",
        help="submitit: print the job ids and return; once the jobs have finished, the same command "
        "without --no-wait writes summary.csv (every run found finished)",
    )


def launch_options(args: argparse.Namespace):
    """``pipeline.launch.LaunchOptions`` from the command line; LauncherError (exit 2) on a bad
    combination, e.g. --partition without --launcher submitit."""
    import yaml

    from ntkdyn.pipeline import launch

    extra = []
    for item in args.executor_arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise launch.LauncherError(f"--executor-arg: expected KEY=VALUE, got {item!r}")
        extra.append((key.strip(), yaml.safe_load(value)))
    return launch.LaunchOptions(
        launcher=args.launcher,
        cluster=args.cluster,
        partition=args.partition,
        timeout_min=args.timeout,
        array_parallelism=args.array_parallelism,
        executor_args=tuple(extra),
        address=args.ray_address,
        wait=not args.no_wait,
    )


versions = results.versions


def device_info() -> dict:
    import jax

    devices = jax.devices()
    return {
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "devices": [str(d) for d in devices],
        "host": platform.node(),
        "machine": platform.machine(),
    }


def output_folder(args: argparse.Namespace, name: str) -> str:
    return args.out or os.path.join("results", f"{name}-{datetime.datetime.now():%Y%m%d-%H%M%S}")


def new_env(**extra) -> dict:
    """The env.json skeleton: versions, device, command, start time, stage times."""
    return {
        "versions": versions(),
        "device": device_info(),
        **extra,
        "command": " ".join(sys.argv),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "times_s": {},
    }


def guarded_stage(env: dict, name: str, stage) -> bool:
    """Run an output stage (a plot, the control view) that must not lose what is already written:
    a failure is printed and recorded as env[name + '_error']. Returns whether it succeeded."""
    t = time.perf_counter()
    try:
        stage()
        ok = True
    except Exception as exc:  # noqa: BLE001 - any failure of an output stage is reported the same way
        env[f"{name}_error"] = f"{type(exc).__name__}: {exc}"
        print(
            f"ntkdyn: {name} stage failed ({type(exc).__name__}: {exc}); the other outputs are written",
            file=sys.stderr,
        )
        ok = False
    env["times_s"][name] = time.perf_counter() - t
    return ok


def read_config(args: argparse.Namespace) -> tuple[dict, config_mod.Config | None, list | None]:
    """(raw mapping, Config, None) for a single run or (raw, None, sweep points) for a sweep, with
    the --set overrides applied. Raises ConfigError."""
    raw = config_mod.load_raw(args.config)
    for assignment in args.set:
        raw = config_mod.apply_override(raw, assignment)
    if isinstance(raw, dict) and "sweep" in raw:
        from ntkdyn import sweep

        return raw, None, sweep.expand(raw)
    return raw, checks.check_files(config_mod.from_dict(raw)), None


def check_memory(cfg: config_mod.Config | None, points: list | None) -> int:
    """The memory estimate (``ntkdyn.memory``) before any data, parameter or kernel is computed:
    0 when it fits, else the message printed and exit status 2."""
    from ntkdyn import memory, sweep

    try:
        if points is not None:
            for group in sweep.group_by_shape(points):
                memory.check(group[0].cfg, len(group))
        elif cfg is not None:
            memory.check(cfg)
    except memory.TooLarge as exc:
        print(f"ntkdyn: too large for memory: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"ntkdyn: bad input: {exc}", file=sys.stderr)
        return 2
    return 0


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning (e.g. ``StabilityWarning``) as one line on stderr, without the source line."""
    return f"ntkdyn: warning: {message}\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    formatwarning, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        return _main(args)
    except (config_mod.ConfigError, ValueError) as exc:  # bad input: one line, no traceback
        kind = "bad config" if isinstance(exc, config_mod.ConfigError) else "bad input"
        print(f"ntkdyn: {kind}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    finally:  # a caller's process (main() called from Python) keeps its own warning format
        warnings.formatwarning = formatwarning


def _main(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    raw, cfg, points = read_config(args)
    checks.check_out_folder(args.out or "results", "--out")
    options = launch_options(args)
    if options.launcher != "local":
        from ntkdyn.pipeline import launch

        if points is None:
            raise launch.LauncherError(
                f"--launcher {options.launcher}: only for sweeps (a config with sweep:)"
            )
        if args.distributed:
            raise launch.LauncherError(
                f"--distributed: not with --launcher {options.launcher} (jax.distributed spreads one "
                "process's sweep over hosts; a launcher runs each shape group as its own job)"
            )
        launch.check_available(options)

    import jax

    if args.distributed:
        from ntkdyn.train import init_distributed

        init_distributed(args.coordinator, args.num_processes, args.process_id)
    jax.config.update("jax_enable_x64", True)  # float64 available; training uses cfg.dtype explicitly
    code = check_memory(cfg, points)
    if code:
        return code
    if points is not None:
        return run_sweep(raw, points, args, say, t_start)
    assert cfg is not None  # read_config gives a Config or sweep points
    return run_single(cfg, args, say, t_start)


def run_single(cfg: config_mod.Config, args: argparse.Namespace, say, t_start: float) -> int:
    """A single run (``runner.single_run``), then the loss figure, the control section, env.json and
    the summary table. Exit status 0 or 1 (an optimizer or output stage failed); bad input raises
    ValueError / ConfigError (``main``: exit status 2) before anything is written."""
    from ntkdyn import plots
    from ntkdyn.pipeline import folder, runner

    out = output_folder(args, cfg.name)
    env = new_env(dtype=cfg.dtype, seed=cfg.seed)
    warn = lambda text: print(text, file=sys.stderr)  # noqa: E731
    done = runner.single_run(cfg, out, env, say, warn, progress=not args.quiet, overwrite=args.overwrite)
    failed, trajectories, opts = done.failed, done.trajectories, done.run.optimizers
    failed |= not guarded_stage(
        env, "plot", lambda: plots.loss_figure(trajectories, opts, os.path.join(out, f"loss.{args.format}"))
    )
    if any("accuracy" in a for a in trajectories.values()):  # classification targets
        failed |= not guarded_stage(
            env, "plot_accuracy",
            lambda: plots.accuracy_figure(trajectories, os.path.join(out, f"accuracy.{args.format}")),
        )  # fmt: skip
    if any("loss_outputs" in a for a in trajectories.values()):  # k > 1 outputs: the loss per output
        failed |= not guarded_stage(
            env, "plot_loss_outputs",
            lambda: plots.loss_outputs_figure(trajectories, os.path.join(out, f"loss_outputs.{args.format}")),
        )  # fmt: skip
    if cfg.control is not None:  # control.json and the control figures (ntkdyn.control)

        def control_stage():
            from ntkdyn import control_plots

            print(control_plots.run_section(cfg, done.setup, opts, trajectories, out, say))

        failed |= not guarded_stage(env, "control", control_stage)
    env["times_s"]["total"] = time.perf_counter() - t_start
    folder.write_env(out, env)
    print(summary_table(done.run))
    print(f"results: {out}  (total {env['times_s']['total']:.1f} s)")
    return 1 if failed else 0


def summary_rows(run_id: str, values: dict, metrics: dict) -> list[dict]:
    """One summary.csv row per optimizer of a run (``runner.summary_rows``)."""
    from ntkdyn.pipeline import runner

    return runner.summary_rows(run_id, values, metrics)


def run_sweep(raw: dict, points, args, say, t_start: float) -> int:
    """Every grid point (``runner.sweep``: resumes finished runs of the same config, writes the run
    folders and summary.csv), then the sweep figure, env.json and the table."""
    import jax

    from ntkdyn import plots
    from ntkdyn.pipeline import folder, runner

    out = output_folder(args, raw.get("name", "sweep"))
    writer = jax.process_index() == 0  # multi-host: one process writes
    env = new_env(processes=jax.process_count(), devices_on_run_axis=len(jax.devices()), runs=len(points))
    warn = lambda text: print(text, file=sys.stderr)  # noqa: E731
    options = launch_options(args)
    if options.launcher == "local":
        done = runner.sweep(raw, points, out, env, writer, say, warn, not args.quiet, args.overwrite)
    else:  # the groups as jobs (pipeline.launch): the run folders are theirs, summary.csv read back
        from ntkdyn.pipeline import launch

        done = launch.sweep(raw, points, out, env, options, say, warn, not args.quiet, args.overwrite)
        if not options.wait:
            env["times_s"]["total"] = time.perf_counter() - t_start
            folder.write_env(out, env)
            print(
                f"submitted: {out}; once the jobs have finished, the same command without --no-wait "
                "writes summary.csv"
            )
            return 0
    env["compiles"] = done.compiles
    failed = done.failed
    if writer:
        failed |= not guarded_stage(
            env,
            "plot",
            lambda: plots.sweep_figure(
                done.rows, list(points[0].values), os.path.join(out, f"sweep.{args.format}")
            ),
        )
        env["times_s"]["total"] = time.perf_counter() - t_start
        folder.write_env(out, env)
    print(sweep_table(done.rows, list(points[0].values)))
    print(
        f"results: {out}  ({len(points)} runs, {env['compiles']} compilations, "
        f"total {time.perf_counter() - t_start:.1f} s)"
    )
    return 1 if failed else 0


def summary_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """summary.csv's text (``folder.summary_csv``)."""
    from ntkdyn.pipeline import folder

    return folder.summary_csv(rows)


if __name__ == "__main__":
    sys.exit(main())
