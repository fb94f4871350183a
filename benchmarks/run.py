"""ntkdyn benchmarks: throughput against baselines measured in the same run, reported as ratios.

    python benchmarks/run.py [--quick] [--json OUT] [--only NAME ...]

Sections (keys of the JSON):
  gemm_gflops          fp32 GEMM throughput of this machine (jax), the yardstick
  bandwidth_gbs        memory copy bandwidth (numpy, 256 MB arrays), for the small problem
  train_large          paper model, HB, n=512 d=256 m=16384; train_small: n=64 d=16 m=1024.
                       steps_per_s, gflops (4 n d m FLOP per step), frac_of_gemm, vs_python_loop
                       (a per-step Python loop over a jitted optax step), vs_torch (PyTorch eager,
                       if installed); train_small adds bytes_per_step and frac_of_bandwidth
  sweep32              32 small runs: batched run-steps/s vs 32 per-step loops (batched_vs_loops),
                       and one sweep invocation vs 32 CLI invocations (speedup_vs_invocations;
                       the invocation time is measured on `invocations_measured` of them)
  sweep_memory         peak RSS of a 32-run sweep at n=256, m=4096 (target < 4 GB)
  ntk                  empirical NTK vs naive jacobian-then-matmul (benchmarks/ntk_bench.py)
  ode                  closed-form ODE vs diffrax at 1e-8 agreement
Nothing here is a test: machines are shared and noisy, so every figure is a ratio to a
baseline measured in the same process, minutes apart at most.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from ntkdyn import models, optimizers, pipeline, theory  # noqa: E402
from ntkdyn.train import TrainPlan, train, train_batch  # noqa: E402


def best_time(fn, repeats: int = 3) -> float:
    """Minimum wall time of ``fn()`` over ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def gemm_gflops(size: int = 2048) -> float:
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32)
    mm = jax.jit(lambda x, y: x @ y)
    t = best_time(lambda: mm(a, b).block_until_ready(), 5)
    return 2 * size**3 / t / 1e9


def bandwidth_gbs() -> float:
    x = np.ones(2**26, np.float32)  # 256 MB
    y = np.empty_like(x)
    t = best_time(lambda: np.copyto(y, x), 5)
    return 2 * x.nbytes / t / 1e9  # read + write


def paper_problem(n: int, d: int, m: int, seed: int = 0):
    X, y = pipeline.data_mod.sphere(n, d, "teacher", seed)
    params, consts = models.paper_init(jax.random.PRNGKey(seed), d, m, 1.0, jnp.float32)
    return jnp.asarray(X, jnp.float32), jnp.asarray(y, jnp.float32), params, consts


def python_loop_steps_per_s(X, y, params, consts, eta, beta, steps: int) -> float:
    """What most research code does: a Python loop over a jitted optax step."""
    tx = optax.sgd(eta, momentum=beta)

    @jax.jit
    def step(p, s):
        loss, g = jax.value_and_grad(lambda q: 0.5 * jnp.sum((models.paper_apply(q, consts, X) - y) ** 2))(p)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    def run():
        p, s = params, tx.init(params)
        for _ in range(steps):
            p, s, loss = step(p, s)
        loss.block_until_ready()

    return steps / best_time(run, 2)


def torch_steps_per_s(X, y, params, consts, eta, beta, steps: int) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    W = torch.tensor(np.asarray(params["W"]), requires_grad=True)
    a = torch.tensor(np.asarray(consts["a"]))
    Xt, yt = torch.tensor(np.asarray(X)), torch.tensor(np.asarray(y))
    opt = torch.optim.SGD([W], lr=eta, momentum=beta)
    scale = 1.0 / np.sqrt(W.shape[0])

    def run():
        for _ in range(steps):
            opt.zero_grad()
            loss = 0.5 * ((torch.relu(Xt @ W.T) @ a * scale - yt) ** 2).sum()
            loss.backward()
            opt.step()

    return steps / best_time(run, 2)


def ntkdyn_steps_per_s(X, y, params, consts, eta, beta, steps: int) -> float:
    spec = optimizers.get("hb")
    hyper = {"eta": eta, "beta": beta}
    train(models.PAPER, spec, hyper, 1.0, TrainPlan(steps, record_every=steps), params, consts, X, y)  # compile
    times = [train(models.PAPER, spec, hyper, 1.0, TrainPlan(steps, record_every=steps), params, consts, X, y).run_s
             for _ in range(2)]
    return steps / min(times)


def bench_train(n, d, m, steps, gemm, bandwidth=None) -> dict:
    X, y, params, consts = paper_problem(n, d, m)
    eta, beta = 0.5 / n, 0.9
    ours = ntkdyn_steps_per_s(X, y, params, consts, eta, beta, steps)
    loop = python_loop_steps_per_s(X, y, params, consts, eta, beta, steps)
    torch_sps = torch_steps_per_s(X, y, params, consts, eta, beta, max(steps // 4, 5))
    flop = 4.0 * n * d * m
    out = {"n": n, "d": d, "m": m, "steps_per_s": ours, "gflops": ours * flop / 1e9,
           "frac_of_gemm": ours * flop / 1e9 / gemm, "python_loop_steps_per_s": loop, "vs_python_loop": ours / loop,
           "torch_steps_per_s": torch_sps, "vs_torch": ours / torch_sps if torch_sps else None}
    if bandwidth:
        # per step at least: read X (n d), W (m d) twice, momentum (m d) r+w, W write, hidden (n m) w+r
        bytes_per_step = 4 * (n * d + 5 * m * d + 2 * n * m)
        out["bytes_per_step"] = bytes_per_step
        out["frac_of_bandwidth"] = ours * bytes_per_step / 1e9 / bandwidth
    return out


def bench_sweep32(steps: int, invocations: int) -> dict:
    n, d, m, R = 64, 16, 1024, 32
    problems = [paper_problem(n, d, m, seed) for seed in range(R)]
    hypers = [{"eta": 0.01, "beta": b} for b in np.linspace(0.0, 0.9, R)]
    spec = optimizers.get("hb")
    plan = TrainPlan(steps, record_every=steps)

    def batched():
        return train_batch(models.PAPER, spec, hypers, 1.0, plan, [p[2] for p in problems], [p[3] for p in problems],
                           [p[0] for p in problems], [p[1] for p in problems])

    batched()
    t_batched = min(sum(r.run_s for r in batched()) for _ in range(2))
    loop_sps = python_loop_steps_per_s(*problems[0], 0.01, 0.5, steps)
    t_loops = R * steps / loop_sps
    out = {"runs": R, "steps": steps, "batched_run_steps_per_s": R * steps / t_batched,
           "loops_run_steps_per_s": R * steps / t_loops, "batched_vs_loops": t_loops / t_batched}
    # CLI: one sweep of 32 runs vs single-run invocations of the same config
    with tempfile.TemporaryDirectory() as tmp:
        cfg = {"name": "bench", "dtype": "float32", "data": {"source": "sphere", "n": n, "d": d},
               "model": {"name": "paper", "width": m}, "train": {"steps": steps, "kernel_at": [0, steps]},
               "theory": {"diffrax": False}, "optimizers": [{"name": "hb", "eta": 0.01, "beta": 0.5}]}
        import yaml

        single = os.path.join(tmp, "single.yaml")
        with open(single, "w") as fh:
            yaml.safe_dump(cfg, fh)
        with open(os.path.join(tmp, "sweep.yaml"), "w") as fh:
            yaml.safe_dump({**cfg, "sweep": {"seed": {"range": [0, R]}}}, fh)
        cmd = [sys.executable, "-m", "ntkdyn.run", "--quiet"]
        t = time.perf_counter()
        for i in range(invocations):
            subprocess.run(cmd + [single, "--set", f"seed={i}", "--out", os.path.join(tmp, f"s{i}")], check=True,
                           capture_output=True)
        per_invocation = (time.perf_counter() - t) / invocations
        t = time.perf_counter()
        subprocess.run(cmd + [os.path.join(tmp, "sweep.yaml"), "--out", os.path.join(tmp, "sw")], check=True,
                       capture_output=True)
        t_sweep = time.perf_counter() - t
    out.update({"invocations_measured": invocations, "seconds_per_invocation": per_invocation,
                "sweep_seconds": t_sweep, "speedup_vs_invocations": R * per_invocation / t_sweep})
    return out


def bench_sweep_memory(steps: int) -> dict:
    """Peak RSS of one `python -m ntkdyn.run` sweep of 32 runs at n=256, m=4096 (a child process)."""
    with tempfile.TemporaryDirectory() as tmp:
        import yaml

        cfg = {"name": "mem", "dtype": "float32", "data": {"source": "sphere", "n": 256, "d": 32},
               "model": {"name": "paper", "width": 4096}, "train": {"steps": steps, "kernel_at": [0, steps]},
               "theory": {"diffrax": False}, "optimizers": [{"name": "hb", "eta": 0.002, "beta": 0.9}],
               "sweep": {"seed": {"range": [0, 32]}}}
        path = os.path.join(tmp, "mem.yaml")
        with open(path, "w") as fh:
            yaml.safe_dump(cfg, fh)
        # peak RSS read by the child itself (VmHWM): ru_maxrss of a child counts this process too
        code = ("import runpy, sys; sys.argv = ['ntkdyn.run', '--quiet', sys.argv[1], '--out', sys.argv[2]]\n"
                "try:\n    runpy.run_module('ntkdyn.run', run_name='__main__')\nexcept SystemExit:\n    pass\n"
                "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])")
        proc = subprocess.run([sys.executable, "-c", code, path, os.path.join(tmp, "o")], check=True,
                              capture_output=True, text=True)
        peak_kb = int(proc.stdout.strip().splitlines()[-1])
    return {"runs": 32, "n": 256, "m": 4096, "steps": steps, "peak_rss_gb": peak_kb / 1e6}


def bench_ode(n: int = 64, steps: int = 2000) -> dict:
    """NAG-C (Bessel) and HB (damped oscillator) closed forms vs diffrax, both to ~1e-8."""
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
        t_closed, t_numeric = best_time(closed, 3), best_time(numeric, 2)
        out[name] = {"closed_s": t_closed, "diffrax_s": t_numeric, "diffrax_first_call_s": t_cold,
                     "max_gap_rel": gap, "speedup": t_numeric / t_closed,
                     "speedup_first_call": t_cold / t_closed}
    out["speedup_vs_diffrax"] = min(v["speedup"] for v in out.values() if isinstance(v, dict))
    out["speedup_vs_diffrax_first_call"] = min(v["speedup_first_call"] for v in out.values() if isinstance(v, dict))
    return out


def bench_ntk(quick: bool) -> dict:
    try:
        sys.path.insert(0, HERE)
        from ntk_bench import bench_ntk as run
    except ImportError as exc:
        return {"error": f"benchmarks/ntk_bench.py unavailable: {exc}"}
    return run(quick)


def table(results: dict) -> str:
    lines = [f"{'benchmark':<34} {'value':>14}"]
    def add(name, value, unit=""):
        lines.append(f"{name:<34} {('-' if value is None else f'{value:.4g}') + unit:>14}")
    add("GEMM fp32 (GFLOP/s)", results.get("gemm_gflops"))
    add("copy bandwidth (GB/s)", results.get("bandwidth_gbs"))
    for key in ("train_large", "train_small"):
        r = results.get(key)
        if r:
            add(f"{key} steps/s", r["steps_per_s"])
            add(f"{key} GFLOP/s", r["gflops"])
            add(f"{key} fraction of GEMM", r["frac_of_gemm"])
            add(f"{key} vs Python loop", r["vs_python_loop"], "x")
            add(f"{key} vs PyTorch eager", r["vs_torch"], "x")
            if "frac_of_bandwidth" in r:
                add(f"{key} fraction of bandwidth", r["frac_of_bandwidth"])
    r = results.get("sweep32")
    if r:
        add("sweep32 batched vs 32 loops", r["batched_vs_loops"], "x")
        add("sweep32 vs 32 CLI invocations", r["speedup_vs_invocations"], "x")
    r = results.get("sweep_memory")
    if r:
        add("sweep32 n=256 m=4096 peak RSS (GB)", r["peak_rss_gb"])
    r = results.get("ntk")
    if r and "speedup_vs_naive" in r:
        add("empirical NTK vs naive", r["speedup_vs_naive"], "x")
    r = results.get("ode")
    if r:
        add("closed-form ODE vs diffrax (warm)", r["speedup_vs_diffrax"], "x")
        add("closed-form ODE vs diffrax (1st call)", r["speedup_vs_diffrax_first_call"], "x")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer steps and invocations (a minute or two)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--only", nargs="*", help="run only these sections")
    args = p.parse_args(argv)
    q = args.quick
    want = lambda name: not args.only or name in args.only
    results: dict = {"device": str(jax.devices()[0]), "quick": q}
    results["gemm_gflops"] = gemm_gflops()
    results["bandwidth_gbs"] = bandwidth_gbs()
    if want("train_large"):
        results["train_large"] = bench_train(512, 256, 16384, 10 if q else 50, results["gemm_gflops"])
    if want("train_small"):
        results["train_small"] = bench_train(64, 16, 1024, 500 if q else 3000, results["gemm_gflops"],
                                             results["bandwidth_gbs"])
    if want("sweep32"):
        results["sweep32"] = bench_sweep32(200 if q else 1000, 3 if q else 8)
    if want("sweep_memory"):
        results["sweep_memory"] = bench_sweep_memory(50 if q else 200)
    if want("ntk"):
        results["ntk"] = bench_ntk(q)
    if want("ode"):
        results["ode"] = bench_ode(steps=1000 if q else 4000)
    print(table(results))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
