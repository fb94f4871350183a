"""ntkdyn benchmarks: throughput against peers measured in the same run, reported as ratios.

    python benchmarks/run.py [--quick] [--json OUT] [--only NAME ...] [--peers NAME ...] [--threads N]
                             [--reps K] [--require-idle] [--readme]
    python benchmarks/run.py --scaling [--quick] [--json OUT] [--plot OUT.png]

Sections (keys of the JSON):
  gemm_gflops      fp32 GEMM of this machine (jax), the yardstick
  bandwidth_gbs    memory copy bandwidth (numpy, 256 MB arrays)
  train_large      paper model, HB, n=512 d=256 m=16384, one run
  train_small      paper model, HB, n=64 d=16 m=1024, one run
  released         the released code's setting: both layers trained (models.RELEASED, mean squared
                   loss), digits n=600, d=64, width 3000, HB
                   Peers of each: ``plain_scan`` (jit of a lax.scan of the optax step, per-step
                   losses out: what a JAX user writes by hand), ``handgrad_scan`` (the same with
                   the gradient written out: two GEMMs and one mask; paper model only), a per-step
                   Python loop over a jitted optax step, PyTorch eager (when torch is importable).
  sweep32          32 small runs (paper, n=64 d=16 m=1024, 32 seeds x beta): ntkdyn ``train_batch``
                   vs the plain vmap peer (jit of vmap over runs of the plain scan) and 32 Python
                   loops; one sweep invocation vs 32 CLI invocations
  sweep_memory     peak RSS of a 32-run sweep at n=256, m=4096 (a child process)
  ntk              empirical NTK vs naive (benchmarks/ntk_bench.py)
  ode              closed-form ODE vs diffrax at 1e-8 agreement
  scaling          (--scaling) one full run per size through ``python -m ntkdyn.run`` (gd, hb, nag_c,
                   diffrax on): wall time per stage vs n in {64, 256, 1024, 4096} (d=64, m=4096,
                   1000 steps) and vs m in {1k .. 64k} (n=256); fitted exponent per stage; log-log plot

How a figure is taken (every peer the same way): all peers run in this one process, pinned to
the same CPUs (``sched_setaffinity``) with the same thread counts (XLA's intra-op pool,
OMP/MKL/OpenBLAS, torch intra-op; torch inter-op 1), set before jax or torch is imported. Each
figure is one warm-up call, then ``--reps`` (>= 3) repetitions taken round-robin across the peers
of a row (so a change of load hits all of them alike); the median is reported and the raw
repetitions are stored. For every repetition the 1-minute load average before and after is
stored, and the CPU time other processes used during it (from /proc/stat minus this process's
own); a figure is marked ``"reliable": false`` when other processes used more than 0.5 core per
core of this machine during any repetition, or the load average before it, less this process's
own threads, was above 0.5 per core. ``--require-idle`` refuses to start (exit 3) on a loaded
machine. Ratios are ntkdyn / peer (> 1: ntkdyn faster) and are computed from medians of one run.
``--readme`` prints the table of docs/performance.md from the JSON (``--from JSON`` to reuse one).

Steps per call (``STEPS``; quick / full): enough that a call's fixed costs do not set the ratio. A
call of ntkdyn ``train`` evaluates the loss, e and ||g||^2 once more after the last update (step T
is recorded: T + 1 gradient evaluations where the peers do T) and moves its inputs and results
between host and device: about one step's work per call, i.e. a ratio of at most T / (T + 1) from
that alone. A real run has thousands of steps; the quick mode of 10 steps on the large row
measured mostly this fixed cost (ratio 0.73 there), so it now times 100.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# steps per timed call (quick, full); see the module docstring
STEPS = {
    "train_large": (100, 200),
    "train_small": (2000, 10000),
    "released": (200, 1000),
    "sweep32": (200, 1000),
}


# --------------------------------------------------------------------------- threads and load (before jax)
def pin_threads(threads: int) -> list[int]:
    """Pin this process (and every library's pool) to ``threads`` CPUs; call before importing
    jax, numpy's BLAS or torch. Returns the CPUs used."""
    cpus = sorted(os.sched_getaffinity(0))[:threads]
    os.sched_setaffinity(0, cpus)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = (
        flags + f" --xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}"
        f" intra_op_parallelism_threads={threads}"
    ).strip()
    return cpus


def _busy_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine from /proc/stat."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _own_ticks() -> int:
    """CPU ticks of this process and its waited-for children (utime, stime, cutime, cstime)."""
    with open("/proc/self/stat") as fh:
        parts = fh.read().rsplit(")", 1)[1].split()
    return sum(int(parts[i]) for i in (11, 12, 13, 14))


class LoadProbe:
    """Load around one repetition: 1-minute load average before/after, and the cores other
    processes kept busy in between (machine busy ticks minus this process's own, per wall second)."""

    def __init__(self, cores: int):
        self.cores = cores

    def __enter__(self):
        self.load_before = os.getloadavg()[0]
        self.busy0, self.total0 = _busy_ticks()
        self.own0 = _own_ticks()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        busy1, total1 = _busy_ticks()
        own1 = _own_ticks()
        ncpu = os.cpu_count() or 1
        wall_ticks = max((total1 - self.total0) / ncpu, 1)  # ticks per CPU in the interval
        self.others_cores = max(busy1 - self.busy0 - (own1 - self.own0), 0) / wall_ticks
        self.load_after = os.getloadavg()[0]
        return False


def measure(peers: dict, reps: int, cores: int, own_threads: int) -> dict:
    """{name: figure} for ``peers`` = {name: fn}; fn() does the work once and returns None.
    A figure: median_s, reps_s (wall), cpu_s and median_cpu_s (this process's CPU time: less
    sensitive to other processes than wall time, a cross-check on a loaded machine), load_before,
    load_after, others_cores, reliable."""
    for fn in peers.values():
        fn()  # warm-up (compilation, caches)
    figs = {
        name: {"reps_s": [], "cpu_s": [], "load_before": [], "load_after": [], "others_cores": []}
        for name in peers
    }
    for _ in range(reps):
        for name, fn in peers.items():
            with LoadProbe(cores) as probe:
                t, c = time.perf_counter(), time.process_time()
                fn()
                dt, dc = time.perf_counter() - t, time.process_time() - c
            f = figs[name]
            f["reps_s"].append(dt)
            f["cpu_s"].append(dc)
            f["load_before"].append(probe.load_before)
            f["load_after"].append(probe.load_after)
            f["others_cores"].append(probe.others_cores)
    for f in figs.values():
        f["median_s"] = statistics.median(f["reps_s"])
        f["median_cpu_s"] = statistics.median(f["cpu_s"])
        f["reliable"] = bool(
            max(f["others_cores"]) <= 0.5 * cores and min(f["load_before"]) - own_threads <= 0.5 * cores
        )
    return figs


# --------------------------------------------------------------------------- the problems and peers
def _jax():
    import jax

    jax.config.update("jax_enable_x64", True)
    return jax


def paper_problem(n: int, d: int, m: int, seed: int = 0):
    import jax
    import jax.numpy as jnp

    from ntkdyn import data as data_mod
    from ntkdyn import models

    X, y = data_mod.sphere(n, d, "teacher", seed)
    params, consts = models.paper_init(jax.random.PRNGKey(seed), d, m, 1.0, jnp.float32)
    return jnp.asarray(X, jnp.float32), jnp.asarray(y, jnp.float32), params, consts


def released_problem(n: int = 600, m: int = 3000, seed: int = 0):
    """The released notebook's setting on scikit-learn's digits (d = 64), both layers trained."""
    import jax
    import jax.numpy as jnp

    from ntkdyn import data as data_mod
    from ntkdyn import models

    X, y = data_mod.digits(n, None, "label", "pixels", seed)
    params, consts = models.released_init(jax.random.PRNGKey(seed), X.shape[1], m, None, jnp.float32)
    return jnp.asarray(X, jnp.float32), jnp.asarray(y, jnp.float32), params, consts


def _loss_fn(model, c, consts, X, y):
    import jax.numpy as jnp

    return lambda p: 0.5 * c * jnp.sum((model.apply(p, consts, X) - y) ** 2)


def plain_scan(model, c, X, y, params, consts, eta, beta, steps):
    """The peer a JAX user writes: jit(lax.scan(optax step)), per-step losses out."""
    import jax
    import numpy as np
    import optax

    tx = optax.sgd(eta, momentum=beta)
    loss = _loss_fn(model, c, consts, X, y)

    @jax.jit
    def run(p):
        def step(carry, _):
            p, s = carry
            L, g = jax.value_and_grad(loss)(p)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), L

        (p, _), Ls = jax.lax.scan(step, (p, tx.init(p)), None, length=steps)
        return p, Ls

    return lambda: np.asarray(run(params)[1])


def handgrad_scan(X, y, params, consts, eta, beta, steps):
    """The plain scan of HB on the paper model with dL/dW written out:
    G = (1/sqrt m) ((e a^T) * 1[X W^T > 0])^T X, two GEMMs and one fused mask."""
    import math

    import jax
    import jax.numpy as jnp
    import numpy as np

    a = consts["a"]
    scale = 1.0 / math.sqrt(params["W"].shape[0])

    @jax.jit
    def run(W):
        def step(carry, _):
            W, v = carry
            pre = X @ W.T
            e = jnp.maximum(pre, 0) @ a * scale - y
            G = ((e[:, None] * (a * scale)) * (pre > 0)).T @ X
            v = beta * v + G
            return (W - eta * v, v), 0.5 * jnp.sum(e * e)

        (W, _), Ls = jax.lax.scan(step, (W, jnp.zeros_like(W)), None, length=steps)
        return W, Ls

    return lambda: np.asarray(run(params["W"])[1])


def python_loop(model, c, X, y, params, consts, eta, beta, steps):
    """What most research code does: a Python loop over a jitted optax step."""
    import jax
    import optax

    tx = optax.sgd(eta, momentum=beta)
    loss = _loss_fn(model, c, consts, X, y)

    @jax.jit
    def step(p, s):
        L, g = jax.value_and_grad(loss)(p)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s, L

    def run():
        p, s = params, tx.init(params)
        for _ in range(steps):
            p, s, L = step(p, s)
        L.block_until_ready()

    return run


def torch_eager(kind: str, c, X, y, params, consts, eta, beta, steps, threads: int):
    """PyTorch eager, as the released notebook runs it: torch.optim.SGD(momentum), autograd."""
    try:
        import torch
    except ImportError:
        return None
    import numpy as np

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process
    Xt, yt = torch.tensor(np.asarray(X)), torch.tensor(np.asarray(y))
    if kind == "paper":
        W = torch.tensor(np.asarray(params["W"]), requires_grad=True)
        a = torch.tensor(np.asarray(consts["a"]))
        scale = 1.0 / np.sqrt(W.shape[0])
        trained = [W]
        forward = lambda: torch.relu(Xt @ W.T) @ a * scale
    else:
        W, b, a = (torch.tensor(np.asarray(params[k]), requires_grad=True) for k in ("W", "b", "a"))
        trained = [W, b, a]
        forward = lambda: torch.relu(Xt @ W.T + b) @ a
    opt = torch.optim.SGD(trained, lr=eta, momentum=beta)

    def run():
        for _ in range(steps):
            opt.zero_grad()
            loss = 0.5 * c * ((forward() - yt) ** 2).sum()
            loss.backward()
            opt.step()

    return run


def ntkdyn_train(model, c, X, y, params, consts, eta, beta, steps):
    """ntkdyn.train: one recorded loss per step (record_every=1, the config default), errors at
    the first and last step; the whole call (data in, results out) is timed."""
    from ntkdyn import optimizers
    from ntkdyn.train import TrainPlan, train

    plan = TrainPlan(steps, record_every=1, error_at=(0, steps))
    spec = optimizers.get("hb")
    return lambda: train(model, spec, {"eta": eta, "beta": beta}, c, plan, params, consts, X, y)


def gemm_gflops(size: int = 2048) -> float:
    jax = _jax()
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32)
    mm = jax.jit(lambda x, y: x @ y)
    mm(a, b).block_until_ready()
    times = []
    for _ in range(5):
        t = time.perf_counter()
        mm(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * size**3 / statistics.median(times) / 1e9


def bandwidth_gbs() -> float:
    import numpy as np

    x = np.ones(2**26, np.float32)  # 256 MB
    y = np.empty_like(x)
    np.copyto(y, x)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(y, x)
        times.append(time.perf_counter() - t)
    return 2 * x.nbytes / statistics.median(times) / 1e9  # read + write


def bench_train(kind: str, n, d, m, steps, gemm, ctx) -> dict:
    """One training row: ntkdyn and its peers on the same problem, figures and ratios."""
    from ntkdyn import models

    if kind == "paper":
        X, y, params, consts = paper_problem(n, d, m)
        model, c, eta = models.PAPER, 1.0, 0.5 / n
        flop = 4.0 * n * d * m  # X W^T and G^T X
    else:
        X, y, params, consts = released_problem(n, m)
        d = X.shape[1]
        model, c, eta = models.RELEASED, 2.0 / n, 0.05
        flop = 4.0 * n * d * m + 6.0 * n * m  # the two GEMMs, plus the second layer's products
    beta = 0.9
    args = (model, c, X, y, params, consts, eta, beta, steps)
    want = lambda name: ctx.get("peers") is None or name in ctx["peers"]
    peers = {"ntkdyn": ntkdyn_train(*args), "plain_scan": plain_scan(*args)}
    if kind == "paper" and want("handgrad_scan"):
        peers["handgrad_scan"] = handgrad_scan(X, y, params, consts, eta, beta, steps)
    if want("python_loop"):
        peers["python_loop"] = python_loop(*args)
    torch_run = (
        torch_eager(kind, c, X, y, params, consts, eta, beta, steps, ctx["threads"])
        if want("torch_eager")
        else None
    )
    if torch_run is not None:
        peers["torch_eager"] = torch_run
    figs = measure(peers, ctx["reps"], ctx["cores"], ctx["threads"])
    rate = {name: steps / f["median_s"] for name, f in figs.items()}
    cpu = {name: f["median_cpu_s"] for name, f in figs.items()}
    out = {
        "n": n,
        "d": d,
        "m": m,
        "steps": steps,
        "flop_per_step": flop,
        "figures": figs,
        "ratio_cpu_time": {f"ntkdyn/{k}": v / cpu["ntkdyn"] for k, v in cpu.items() if k != "ntkdyn"},
        "steps_per_s": rate,
        "gflops": {k: v * flop / 1e9 for k, v in rate.items()},
        "frac_of_gemm": {k: v * flop / 1e9 / gemm for k, v in rate.items()},
        "ratio": {f"ntkdyn/{k}": rate["ntkdyn"] / v for k, v in rate.items() if k != "ntkdyn"},
        "reliable": all(f["reliable"] for f in figs.values()),
        "fixed_cost": "ntkdyn: steps + 1 gradient evaluations per call (the peers: steps), see STEPS",
    }
    if torch_run is None and want("torch_eager"):
        out["torch_eager"] = "not measured: torch is not importable (pip install torch==2.13.0)"
    return out


def bench_sweep32(steps: int, invocations: int, ctx) -> dict:
    import jax
    import numpy as np

    from ntkdyn import models, optimizers
    from ntkdyn.train import TrainPlan, train_batch

    n, d, m, R = 64, 16, 1024, 32
    problems = [paper_problem(n, d, m, seed) for seed in range(R)]
    betas = np.linspace(0.0, 0.9, R)
    hypers = [{"eta": 0.01, "beta": float(b)} for b in betas]
    spec = optimizers.get("hb")
    plan = TrainPlan(steps, record_every=1, error_at=(0, steps))
    Xs, ys, ps, cs = ([p[i] for p in problems] for i in range(4))

    def ours():
        train_batch(models.PAPER, spec, hypers, 1.0, plan, ps, cs, Xs, ys)

    import jax.numpy as jnp
    import optax

    stack = lambda trees: jax.tree.map(lambda *x: jnp.stack(x), *trees)
    P, C, XX, YY = stack(ps), stack(cs), jnp.stack(Xs), jnp.stack(ys)
    B = jnp.asarray(betas, jnp.float32)

    @jax.jit
    def vmapped(P, C, XX, YY, B):
        def one(p, c, X, y, beta):
            tx = optax.sgd(0.01, momentum=beta)
            loss = _loss_fn(models.PAPER, 1.0, c, X, y)

            def step(carry, _):
                q, s = carry
                L, g = jax.value_and_grad(loss)(q)
                u, s = tx.update(g, s, q)
                return (optax.apply_updates(q, u), s), L

            return jax.lax.scan(step, (p, tx.init(p)), None, length=steps)[1]

        return jax.vmap(one)(P, C, XX, YY, B)

    peers = {"ntkdyn": ours, "plain_vmap": lambda: np.asarray(vmapped(P, C, XX, YY, B))}
    loop = python_loop(models.PAPER, 1.0, *problems[0][:2], problems[0][2], problems[0][3], 0.01, 0.5, steps)
    peers["python_loop_x1"] = loop  # one of the 32 loops; 32 loops take 32 times as long
    figs = measure(peers, ctx["reps"], ctx["cores"], ctx["threads"])
    figs["python_loop_x32"] = {
        "median_s": 32 * figs["python_loop_x1"]["median_s"],
        "derived": "32 x python_loop_x1",
    }
    rate = {k: R * steps / f["median_s"] for k, f in figs.items() if k != "python_loop_x1"}
    out = {
        "runs": R,
        "n": n,
        "d": d,
        "m": m,
        "steps": steps,
        "figures": figs,
        "run_steps_per_s": rate,
        "ratio": {f"ntkdyn/{k}": rate["ntkdyn"] / v for k, v in rate.items() if k != "ntkdyn"},
        "reliable": all(f.get("reliable", True) for f in figs.values()),
    }
    out["cli"] = bench_cli(n, d, m, steps, R, invocations, ctx)
    return out


def _write_yaml(path, cfg):
    import yaml

    with open(path, "w") as fh:
        yaml.safe_dump(cfg, fh)


def bench_cli(n, d, m, steps, R, invocations, ctx) -> dict:
    """One sweep invocation of R runs vs R single-run invocations (measured on ``invocations``)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = {
            "name": "bench",
            "dtype": "float32",
            "data": {"source": "sphere", "n": n, "d": d},
            "model": {"name": "paper", "width": m},
            "train": {"steps": steps, "kernel_at": [0, steps]},
            "theory": {"diffrax": False},
            "optimizers": [{"name": "hb", "eta": 0.01, "beta": 0.5}],
        }
        single = os.path.join(tmp, "single.yaml")
        _write_yaml(single, cfg)
        _write_yaml(os.path.join(tmp, "sweep.yaml"), {**cfg, "sweep": {"seed": {"range": [0, R]}}})
        cmd = [sys.executable, "-m", "ntkdyn.run", "--quiet"]
        counter = iter(range(10**6))

        def one():
            i = next(counter)
            subprocess.run(
                cmd + [single, "--set", f"seed={i % R}", "--out", os.path.join(tmp, f"s{i}")],
                check=True,
                capture_output=True,
                cwd=ROOT,
            )

        def sweep():
            i = next(counter)
            subprocess.run(
                cmd + [os.path.join(tmp, "sweep.yaml"), "--out", os.path.join(tmp, f"sw{i}")],
                check=True,
                capture_output=True,
                cwd=ROOT,
            )

        figs = measure(
            {"single_invocation": one, "sweep_invocation": sweep},
            max(3, invocations // 3),
            ctx["cores"],
            ctx["threads"],
        )
    return {
        "figures": figs,
        "speedup_vs_invocations": R
        * figs["single_invocation"]["median_s"]
        / figs["sweep_invocation"]["median_s"],
        "reliable": all(f["reliable"] for f in figs.values()),
    }


def bench_sweep_memory(steps: int) -> dict:
    """Peak RSS of one `python -m ntkdyn.run` sweep of 32 runs at n=256, m=4096 (a child process)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = {
            "name": "mem",
            "dtype": "float32",
            "data": {"source": "sphere", "n": 256, "d": 32},
            "model": {"name": "paper", "width": 4096},
            "train": {"steps": steps, "kernel_at": [0, steps]},
            "theory": {"diffrax": False},
            "optimizers": [{"name": "hb", "eta": 0.002, "beta": 0.9}],
            "sweep": {"seed": {"range": [0, 32]}},
        }
        path = os.path.join(tmp, "mem.yaml")
        _write_yaml(path, cfg)
        # peak RSS read by the child itself (VmHWM): ru_maxrss of a child counts this process too
        code = (
            "import runpy, sys; sys.argv = ['ntkdyn.run', '--quiet', sys.argv[1], '--out', sys.argv[2]]\n"
            "try:\n    runpy.run_module('ntkdyn.run', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, path, os.path.join(tmp, "o")],
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        peak_kb = int(proc.stdout.strip().splitlines()[-1])
    return {"runs": 32, "n": 256, "m": 4096, "steps": steps, "peak_rss_gb": peak_kb / 1e6}


MEMORY_CHILD = """
import json, sys, time
import yaml
from ntkdyn import config, memory
from ntkdyn import run as cli
path, out = sys.argv[1], sys.argv[2]
with open(path) as fh:
    cfg = config.from_dict(yaml.safe_load(fh))
t = time.perf_counter()
est = memory.estimate(cfg)
est_s = time.perf_counter() - t
t = time.perf_counter()
code = cli.main([path, "--out", out, "--quiet", "--overwrite"])
wall = time.perf_counter() - t
hwm = [x for x in open("/proc/self/status") if x.startswith("VmHWM")][0].split()[1]
print(json.dumps({"exit": code, "wall_s": wall, "estimate_s": est_s, "parts": est.parts,
                  "process": est.process, "compiled": est.compiled, "peak_kb": int(hwm)}))
"""


def memory_point(path: str, n: int, tmp: str, sets: dict) -> dict:
    """One ``python -m ntkdyn.run`` of the config at ``path`` with data.n = n in a child process: the
    memory estimate made there before anything is built (``memory.estimate``: parts, the process's
    resident memory then, whether the training part came from the compiled program), the peak RSS the
    child read itself at the end (VmHWM), and the time split from env.json: training (train_run_s,
    compile apart), predictions (Lanczos / eigendecomposition + every face), the kernels and the drift."""
    import yaml

    with open(path) as fh:
        raw = yaml.safe_load(fh)
    raw["data"]["n"] = n
    for key, value in sets.items():
        node = raw
        *head, last = key.split(".")
        for k in head:
            node = node[int(k)] if isinstance(node, list) else node.setdefault(k, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    cfg_path, out = os.path.join(tmp, f"mem-n{n}.yaml"), os.path.join(tmp, f"mem-n{n}")
    _write_yaml(cfg_path, raw)
    load_before = os.getloadavg()[0]
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, cfg_path, out], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
    )  # fmt: skip
    if proc.returncode != 0:
        return {"n": n, "error": proc.stderr[-2000:]}
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    with open(os.path.join(out, "env.json")) as fh:
        times = json.load(fh)["times_s"]
    labels = [o["label"] for o in raw["optimizers"]]
    per = {lab: times[lab] for lab in labels}
    faces = sum(v for p in per.values() for k, v in p.items() if k.startswith("face_"))
    train = sum(p["train_run_s"] for p in per.values())
    estimate = got["process"] + sum(got["parts"].values())
    peak = got["peak_kb"] * 1024
    return {
        "n": n,
        "m": raw["model"]["width"],
        "steps": raw["train"]["steps"],
        "solver": raw["theory"].get("solver", "auto"),
        "exit": got["exit"],
        "wall_s": got["wall_s"],
        "estimate_parts_gb": {k: v / 1e9 for k, v in got["parts"].items()},
        "estimate_process_gb": got["process"] / 1e9,
        "estimate_compiled": got["compiled"],
        "estimate_s": got["estimate_s"],
        "estimate_peak_rss_gb": estimate / 1e9,
        "peak_rss_gb": peak / 1e9,
        "estimate_over_peak": estimate / peak,
        "stages_s": {
            "kernels": times["kernels"],
            "lanczos_or_eigen": times.get("eigen", 0.0),
            "train_compile": sum(p["train_compile_s"] for p in per.values()),
            "train": train,
            "faces": faces,
            "drift": sum(p["kernel_drift_s"] for p in per.values()),
        },
        "predictions_over_train": (faces + times.get("eigen", 0.0)) / train,
        "faces_over_train": faces / train,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def bench_memory(ns: list[int], path: str, sets: dict) -> dict:
    """The memory table (issue 18 part 2): estimate before the run vs the child's peak RSS per n."""
    with tempfile.TemporaryDirectory() as tmp:
        rows = [memory_point(path, n, tmp, sets) for n in ns]
    ok = [r for r in rows if "estimate_over_peak" in r]
    return {
        "config": os.path.relpath(path, ROOT),
        "set": sets,
        "rows": rows,
        "within_30_percent": all(0.7 <= r["estimate_over_peak"] <= 1.3 for r in ok) if ok else None,
    }


def bench_ode(ctx, n: int = 64, steps: int = 2000) -> dict:
    """NAG-C (Bessel) and HB (damped oscillator) closed forms vs diffrax, both to ~1e-8."""
    import numpy as np

    from ntkdyn import optimizers, theory

    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.geomspace(1e-2, 2.0, n)
    K = (Q * lam) @ Q.T
    e0 = rng.standard_normal(n)
    out = {}
    for name, hyper in (("hb", {"eta": 0.01, "beta": 0.9}), ("nag_c", {"eta": 0.01, "r": 3.0})):
        ode = optimizers.get(name).ode(hyper)
        times = np.arange(steps + 1) * ode.time_step
        closed = lambda: theory.ode_modes(ode, lam, Q.T @ e0, times) @ Q.T
        numeric = lambda: theory.ode_diffrax(ode, K, e0, times, rtol=1e-10, atol=1e-12)
        start = time.perf_counter()
        e_numeric = numeric()  # first call: tracing and compilation included
        t_cold = time.perf_counter() - start
        gap = float(np.max(np.abs(closed() - e_numeric)) / np.linalg.norm(e0))
        figs = measure({"closed": closed, "diffrax": numeric}, ctx["reps"], ctx["cores"], ctx["threads"])
        out[name] = {
            "figures": figs,
            "diffrax_first_call_s": t_cold,
            "max_gap_rel": gap,
            "speedup": figs["diffrax"]["median_s"] / figs["closed"]["median_s"],
            "speedup_first_call": t_cold / figs["closed"]["median_s"],
        }
    out["speedup_vs_diffrax"] = min(v["speedup"] for v in out.values())
    out["speedup_vs_diffrax_first_call"] = min(
        v["speedup_first_call"] for v in out.values() if isinstance(v, dict)
    )
    return out


def bench_ntk(quick: bool) -> dict:
    try:
        sys.path.insert(0, HERE)
        from ntk_bench import bench_ntk as run
    except ImportError as exc:
        return {"error": f"benchmarks/ntk_bench.py unavailable: {exc}"}
    return run(quick)


# --------------------------------------------------------------------------- scaling
STAGES = (
    "data_model",
    "kernels",
    "eigen",
    "train_compile",
    "train",
    "predictions",
    "diffrax",
    "drift",
    "plot",
)


def scaling_point(n: int, d: int, m: int, steps: int, tmp: str) -> dict:
    """One full ``python -m ntkdyn.run`` (in this process) of gd, hb, nag_c with diffrax; wall time
    per stage from its env.json, plus the eigendecomposition and a warm diffrax call timed here."""
    import numpy as np

    from ntkdyn import optimizers, theory
    from ntkdyn import run as cli

    eta = 0.5 / (
        0.5 + n / (2 * np.pi * d)
    )  # below 1/lambda_max(H) for sphere data (lambda_max ~ 1/2 + n/(2 pi d))
    cfg = {
        "name": f"scale-n{n}-m{m}",
        "dtype": "float32",
        "data": {"source": "sphere", "n": n, "d": d},
        "model": {"name": "paper", "width": m},
        "train": {"steps": steps},
        "theory": {"kernel": "H0", "diffrax": True},
        "rates": {"window": [0.3, 1.0]},
        "optimizers": [
            {"label": "gd", "name": "gd", "eta": eta},
            {"label": "hb", "name": "hb", "eta": eta / 4, "beta": 0.5},
            {"label": "nag_c", "name": "nag_c", "eta": eta / 4, "r": 3},
        ],
    }
    path, out = os.path.join(tmp, f"n{n}-m{m}.yaml"), os.path.join(tmp, f"n{n}-m{m}")
    _write_yaml(path, cfg)
    load_before = os.getloadavg()[0]
    import contextlib
    import io

    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the run's own summary tables
        code = cli.main([path, "--out", out, "--quiet"])
    wall = time.perf_counter() - t
    with open(os.path.join(out, "env.json")) as fh:
        times = json.load(fh)["times_s"]
    with open(os.path.join(out, "metrics.json")) as fh:
        metrics = json.load(fh)
    labels = [o["label"] for o in cfg["optimizers"]]
    per = {lab: times[lab] for lab in labels}
    stage = {
        "data_model": times["data"] + times["model"],
        "kernels": times["kernels"],
        "train_compile": sum(p["train_compile_s"] for p in per.values()),
        "train": sum(p["train_run_s"] for p in per.values()),
        # every face's time (env.json face_<name>_s) but the diffrax check's, which is its own stage
        "predictions": sum(
            v
            for p in per.values()
            for k, v in p.items()
            if k.startswith("face_") and k != "face_ode_diffrax_s"
        ),
        "diffrax": sum(p.get("face_ode_diffrax_s", 0.0) for p in per.values()),
        "drift": sum(p["kernel_drift_s"] for p in per.values()),
        "plot": times.get("plot", 0.0),
    }
    # the eigendecomposition runs inside "kernels" (pipeline.prepare); timed here on the same K
    with np.load(os.path.join(out, "kernels.npz")) as z:
        H0 = z["H0"]
    with np.load(os.path.join(out, "data.npz")) as z:
        e0 = z["e0"]
    t = time.perf_counter()
    lam, V = theory.eigen(H0)
    stage["eigen"] = time.perf_counter() - t
    stage["predictions"] += stage["eigen"]
    # closed-form ODE vs diffrax at this n: HB's ODE, first call (inside the run) and warm (here)
    hyper = cfg["optimizers"][1]
    ode = optimizers.get("hb").ode({"eta": hyper["eta"], "beta": hyper["beta"]})
    ts = np.arange(steps + 1) * ode.time_step
    t = time.perf_counter()
    theory.ode_modes(ode, lam, V.T @ e0, ts)
    closed_s = time.perf_counter() - t
    t = time.perf_counter()
    theory.ode_diffrax(ode, (V * lam) @ V.T, e0, ts, 1e-10, 1e-12)
    warm_s = time.perf_counter() - t
    from ntkdyn import config as config_mod
    from ntkdyn import memory

    estimate_gb = memory.estimate(config_mod.from_dict(cfg)).total / 1e9
    with open("/proc/self/status") as fh:  # peak RSS of this process so far (sizes run in increasing order)
        peak_gb = int([x for x in fh if x.startswith("VmHWM")][0].split()[1]) / 1e6
    return {
        "n": n,
        "d": d,
        "m": m,
        "steps": steps,
        "exit": code,
        "wall_s": wall,
        "stages_s": stage,
        "memory_estimate_gb": estimate_gb,
        "peak_rss_so_far_gb": peak_gb,
        "status": {lab: metrics["optimizers"][lab]["status"] for lab in labels},
        "predictions_over_train": stage["predictions"] / stage["train"],
        "ode_closed_s": closed_s,
        "ode_diffrax_first_call_s": per["hb"].get("face_ode_diffrax_s"),
        "ode_diffrax_warm_s": warm_s,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def fit_exponents(points: list[dict], axis: str) -> dict:
    """Slope of log(time) against log(size) per stage (least squares over the sizes)."""
    import numpy as np

    x = np.log([p[axis] for p in points])
    out = {}
    for s in STAGES:
        t = np.array([p["stages_s"][s] for p in points])
        out[s] = float(np.polyfit(x, np.log(np.maximum(t, 1e-6)), 1)[0]) if len(t) > 1 else None
    return out


def bench_scaling(quick: bool, plot_path: str | None) -> dict:
    ns = [64, 128, 256] if quick else [64, 256, 1024, 4096]
    ms = [1024, 2048, 4096] if quick else [1024, 2048, 4096, 8192, 16384, 32768, 65536]
    steps = 100 if quick else 1000
    d = 64
    with tempfile.TemporaryDirectory() as tmp:
        # a first run pays the process's one-time costs (imports, jit of shared helpers): kept apart
        warmup = scaling_point(32, d, 256, 20, tmp)
        by_n = [scaling_point(n, d, 512 if quick else 4096, steps, tmp) for n in ns]
        by_m = [scaling_point(64 if quick else 256, d, m, steps, tmp) for m in ms]
    out = {
        "warmup_first_run": warmup,
        "by_n": by_n,
        "by_m": by_m,
        "exponent_n": fit_exponents(by_n, "n"),
        "exponent_m": fit_exponents(by_m, "m"),
        "predictions_over_train_max": max(p["predictions_over_train"] for p in by_n + by_m),
    }
    if plot_path:
        scaling_plot(out, plot_path)
        out["plot"] = plot_path
    return out


def scaling_plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, axis in ((axes[0], "by_n", "n"), (axes[1], "by_m", "m")):
        pts = res[key]
        for s in STAGES:
            ax.loglog(
                [p[axis] for p in pts],
                [max(p["stages_s"][s], 1e-4) for p in pts],
                "o-",
                label=f"{s} ({res['exponent_' + axis][s]:.2f})",
            )
        ax.set_xlabel(axis)
        ax.set_ylabel("wall time of the stage (s)")
        fixed = "d=64, m=4096" if axis == "n" else "d=64, n=256"
        ax.set_title(f"one full run vs {axis} ({fixed}, {pts[0]['steps']} steps)")
        ax.legend(fontsize=7, title="stage (fitted exponent)", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- tables
def _fmt(v, spec=".3g"):
    return "-" if v is None else format(v, spec)


def table(results: dict) -> str:
    lines = [
        f"load average at start {results['load_start']:.2f} on {results['cores']} cores "
        f"({'IDLE' if results['idle_at_start'] else 'LOADED: figures unreliable'}); "
        f"threads {results['threads']}"
    ]
    lines.append(
        f"GEMM fp32 {results['gemm_gflops']:.1f} GFLOP/s, copy bandwidth {results['bandwidth_gbs']:.1f} GB/s"
    )
    lines.append(
        "steps per call: enough that a call's fixed costs (ntkdyn: one gradient evaluation more, at the last "
        "step; host <-> device) do not set the ratio (benchmarks/run.py, STEPS)"
    )
    for key in ("train_large", "train_small", "released"):
        r = results.get(key)
        if not r:
            continue
        lines.append(
            f"{key} (n={r['n']}, d={r['d']}, m={r['m']}, {r['steps']} steps)"
            f"{'' if r['reliable'] else '  [unreliable: load]'}"
        )
        for name, sps in r["steps_per_s"].items():
            ratio = r["ratio"].get(f"ntkdyn/{name}")
            lines.append(
                f"  {name:<14} {sps:10.1f} steps/s  {r['gflops'][name]:7.1f} GFLOP/s "
                f"({100 * r['frac_of_gemm'][name]:4.0f} % of GEMM)"
                + (
                    f"  ntkdyn/{name} = {ratio:.2f} (CPU time: {r['ratio_cpu_time'][f'ntkdyn/{name}']:.2f})"
                    if ratio
                    else ""
                )
            )
    r = results.get("sweep32")
    if r:
        lines.append(
            f"sweep32 (32 runs x {r['steps']} steps){'' if r['reliable'] else '  [unreliable: load]'}"
        )
        for name, rate in r["run_steps_per_s"].items():
            ratio = r["ratio"].get(f"ntkdyn/{name}")
            lines.append(
                f"  {name:<14} {rate:10.1f} run-steps/s" + (f"  ntkdyn/{name} = {ratio:.2f}" if ratio else "")
            )
        lines.append(f"  one sweep vs 32 CLI invocations: {r['cli']['speedup_vs_invocations']:.1f}x")
    r = results.get("sweep_memory")
    if r:
        lines.append(f"sweep32 n=256 m=4096 peak RSS {r['peak_rss_gb']:.2f} GB")
    r = results.get("ode")
    if r:
        lines.append(
            f"closed-form ODE vs diffrax: {r['speedup_vs_diffrax']:.0f}x warm, "
            f"{r['speedup_vs_diffrax_first_call']:.0f}x first call"
        )
    r = results.get("ntk")
    if r and "speedup_vs_naive" in r:
        lines.append(f"empirical NTK vs naive: {r['speedup_vs_naive']:.1f}x")
    return "\n".join(lines)


def scaling_table(res: dict) -> str:
    lines = []
    for key, axis in (("by_n", "n"), ("by_m", "m")):
        head = [axis] + list(STAGES) + ["total", "pred/train"]
        lines.append(" ".join(f"{h:>13}" for h in head))
        for p in res[key]:
            row = (
                [str(p[axis])]
                + [f"{p['stages_s'][s]:.3g}" for s in STAGES]
                + [f"{p['wall_s']:.3g}", f"{p['predictions_over_train']:.2f}"]
            )
            lines.append(" ".join(f"{c:>13}" for c in row))
        lines.append(
            " ".join(
                f"{c:>13}" for c in ["exponent"] + [_fmt(res["exponent_" + axis][s], ".2f") for s in STAGES]
            )
        )
        lines.append("")
    return "\n".join(lines)


def readme_scaling(results: dict) -> str:
    """The scaling tables of docs/performance.md (markdown) from one ``--scaling`` JSON."""
    res = results["scaling"]
    out = [
        f"Measured {results['date']} ({results['cores']} cores), load average {results['load_start']:.2f} at "
        f"the start ({'idle' if results['idle_at_start'] else 'LOADED: not idle figures'}), "
        f"{res['by_n'][0]['steps']} steps; seconds per stage "
        "(compile: the three optimizers' training programs)."
    ]
    for key, axis in (("by_n", "n"), ("by_m", "m")):
        out += [
            "",
            "| "
            + " | ".join(
                [
                    axis,
                    *STAGES,
                    "total",
                    "predictions / train",
                    "diffrax 1st / warm",
                    "memory est. / peak RSS (GB)",
                ]
            )
            + " |",
            "|---" * (len(STAGES) + 5) + "|",
        ]
        for p in res[key]:
            out.append(
                "| "
                + " | ".join(
                    [
                        str(p[axis]),
                        *(f"{p['stages_s'][s]:.3g}" for s in STAGES),
                        f"{p['wall_s']:.3g}",
                        f"{p['predictions_over_train']:.2f}",
                        f"{_fmt(p['ode_diffrax_first_call_s'])} / {p['ode_diffrax_warm_s']:.3g}",
                        f"{p.get('memory_estimate_gb', 0):.2g} / {p.get('peak_rss_so_far_gb', 0):.2g}",
                    ]
                )
                + " |"
            )
        out.append(
            "| exponent | "
            + " | ".join(_fmt(res["exponent_" + axis][s], ".2f") for s in STAGES)
            + " | | | | |"
        )
    return "\n".join(out)


def readme_memory(results: dict) -> str:
    """The memory table of docs/large-n.md (markdown) from one ``--memory`` JSON: per n the estimate
    made before the run (process + parts), the peak RSS, their ratio, and the time split."""
    rows = [
        "| n | estimate (GB) | peak RSS (GB) | estimate / peak | compiled | kernels (s) | Lanczos (s) | "
        "training (s) | faces (s) | predictions / training | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["memory"]["rows"]:
        if "error" in r:
            rows.append(f"| {r['n']} | failed | | | | | | | | | |")
            continue
        st = r["stages_s"]
        rows.append(
            f"| {r['n']} | {r['estimate_peak_rss_gb']:.2f} | {r['peak_rss_gb']:.2f} | "
            f"{r['estimate_over_peak']:.2f} | {'yes' if r['estimate_compiled'] else 'no'} | "
            f"{st['kernels']:.3g} | {st['lanczos_or_eigen']:.3g} | {st['train']:.3g} | {st['faces']:.3g} | "
            f"{r['predictions_over_train']:.2f} | {r['load_before']:.1f}-{r['load_after']:.1f} |"
        )
    return "\n".join(rows)


def readme_table(results: dict) -> str:
    """The table of docs/performance.md (markdown) from one benchmark JSON."""
    if "memory" in results:
        return readme_memory(results)
    if "scaling" in results:
        return readme_scaling(results)
    rows = [
        "| problem | ntkdyn | plain scan | ntkdyn / plain scan | hand-written gradient | Python loop | "
        "PyTorch eager | ntkdyn / PyTorch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, label in (
        ("train_large", "paper, n=512 d=256 m=16384"),
        ("train_small", "paper, n=64 d=16 m=1024"),
        ("released", "released, digits n=600 d=64 m=3000, both layers"),
    ):
        r = results.get(key)
        if not r:
            continue
        sps = r["steps_per_s"]
        unit = "steps/s"
        cell = lambda k: f"{sps[k]:,.0f} {unit}" if k in sps else "-"
        rows.append(
            f"| {label}{'' if r['reliable'] else ' (unreliable: load)'} | {cell('ntkdyn')} "
            f"({100 * r['frac_of_gemm']['ntkdyn']:.0f} % of GEMM) | {cell('plain_scan')} | "
            f"{r['ratio']['ntkdyn/plain_scan']:.2f} | {cell('handgrad_scan')} | {cell('python_loop')} | "
            f"{cell('torch_eager')} | {_fmt(r['ratio'].get('ntkdyn/torch_eager'), '.1f')} |"
        )
    r = results.get("sweep32")
    if r:
        rate = r["run_steps_per_s"]
        rows.append(
            f"| 32 runs batched, n=64 d=16 m=1024{'' if r['reliable'] else ' (unreliable: load)'} | "
            f"{rate['ntkdyn']:,.0f} run-steps/s | {rate['plain_vmap']:,.0f} (plain vmap) | "
            f"{r['ratio']['ntkdyn/plain_vmap']:.2f} | - | {rate['python_loop_x32']:,.0f} (32 loops) | - | - |"
        )
    head = (
        f"Measured {results['date']} on {results['machine']} ({results['cores']} cores, {results['threads']} "
        f"threads per peer), load average {results['load_start']:.2f} at the start "
        f"({'idle' if results['idle_at_start'] else 'LOADED: these figures are not idle figures'}); GEMM "
        f"{results['gemm_gflops']:.0f} GFLOP/s; medians of {results['reps']} repetitions."
    )
    return head + "\n\n" + "\n".join(rows)


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer steps (a few minutes; for development)")
    p.add_argument(
        "--peers", nargs="*", help="train rows: time only these peers besides ntkdyn and plain_scan"
    )
    p.add_argument("--json", help="write the results here")
    p.add_argument("--only", nargs="*", help="run only these sections")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="threads of every peer")
    p.add_argument("--reps", type=int, default=3, help="repetitions per figure (>= 3)")
    p.add_argument("--require-idle", action="store_true", help="refuse to run at load > 0.5 per core")
    p.add_argument("--scaling", action="store_true", help="the scaling study instead of the peers")
    p.add_argument("--plot", help="--scaling: write the log-log plot here")
    p.add_argument(
        "--memory", nargs="*", type=int, help="the memory table instead: these n (child runs of --config)"
    )
    p.add_argument("--config", default=os.path.join("configs", "large_n.yaml"), help="--memory: the config")
    p.add_argument("--set", dest="sets", action="append", default=[], help="--memory: KEY=VALUE (yaml)")
    p.add_argument("--readme", action="store_true", help="print the table of docs/performance.md")
    p.add_argument("--from", dest="source", help="with --readme: read this JSON instead of measuring")
    args = p.parse_args(argv)
    if args.readme and args.source:
        with open(args.source) as fh:
            print(readme_table(json.load(fh)))
        return 0
    if args.reps < 3:
        p.error("--reps must be >= 3")
    cpus = pin_threads(args.threads)
    load_start = os.getloadavg()[0]
    idle = load_start <= 0.5 * (os.cpu_count() or 1)
    if args.require_idle and not idle:
        print(
            f"benchmarks: load average {load_start:.2f} on {os.cpu_count()} cores is above 0.5 per core; "
            f"refusing (drop --require-idle to measure anyway; figures are then marked unreliable)",
            file=sys.stderr,
        )
        return 3
    sys.path.insert(0, ROOT)
    jax = _jax()
    import datetime
    import platform

    ctx = {"threads": args.threads, "cores": os.cpu_count() or 1, "reps": args.reps, "peers": args.peers}
    results: dict = {
        "date": datetime.datetime.now().isoformat(timespec="minutes"),
        "machine": platform.node() or "?",
        "device": str(jax.devices()[0]),
        "quick": args.quick,
        "threads": args.threads,
        "cpus": cpus,
        "cores": ctx["cores"],
        "reps": args.reps,
        "load_start": load_start,
        "idle_at_start": idle,
        "jax": jax.__version__,
    }
    try:
        import torch

        results["torch"] = torch.__version__
    except ImportError:
        results["torch"] = None
    if args.memory:
        import yaml

        sets = {k: yaml.safe_load(v) for k, v in (x.split("=", 1) for x in args.sets)}
        results["memory"] = bench_memory(args.memory, os.path.join(ROOT, args.config), sets)
        results["load_end"] = os.getloadavg()[0]
        for r in results["memory"]["rows"]:
            print(json.dumps(r, default=float))
    elif args.scaling:
        results["scaling"] = bench_scaling(args.quick, args.plot)
        results["load_end"] = os.getloadavg()[0]
        print(scaling_table(results["scaling"]))
    else:
        q = args.quick
        want = lambda name: not args.only or name in args.only
        results["gemm_gflops"] = gemm_gflops()
        results["bandwidth_gbs"] = bandwidth_gbs()
        steps = {key: quick if q else full for key, (quick, full) in STEPS.items()}
        if want("train_large"):
            results["train_large"] = bench_train(
                "paper", 512, 256, 16384, steps["train_large"], results["gemm_gflops"], ctx
            )
        if want("train_small"):
            results["train_small"] = bench_train(
                "paper", 64, 16, 1024, steps["train_small"], results["gemm_gflops"], ctx
            )
        if want("released"):
            results["released"] = bench_train(
                "released", 600, 64, 3000, steps["released"], results["gemm_gflops"], ctx
            )
        if want("sweep32"):
            results["sweep32"] = bench_sweep32(steps["sweep32"], 3 if q else 8, ctx)
        if want("sweep_memory"):
            results["sweep_memory"] = bench_sweep_memory(50 if q else 200)
        if want("ntk"):
            results["ntk"] = bench_ntk(q)
        if want("ode"):
            results["ode"] = bench_ode(ctx, steps=1000 if q else 4000)
        results["load_end"] = os.getloadavg()[0]
        print(table(results))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
