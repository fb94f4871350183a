"""Empirical NTK speed: ntkdyn's paths against the naive Jacobian path and neural-tangents.

    python benchmarks/ntk_bench.py [--quick] [--json OUT] [--no-nt] [--no-memory]

Cases (float32 parameters and inputs, inputs on the unit sphere, same draws in every library):

* ``paper``: the paper model, n = 512, d = 64, m = 8192 (P = 524,288; quick: n = 256, m = 4096).
* ``mlp3``: a depth-3 ReLU MLP in NTK parameterisation, d = 64, width 512 (P = 558,593),
  n = 256 (quick: width 256, n = 128).
* ``memory``: n = 2,000 inputs and a 10^6-parameter depth-3 MLP (width 700), generic path with
  the default 2 GiB Jacobian budget; peak RSS of a child process (skipped with ``--quick``).

Paths timed (seconds, best of ``repeat`` after a warm-up call that compiles):

* ``naive``: ``jax.jacrev`` of f(X) over the whole batch (n x P in memory), then J J^T;
* ``blocked_recompute``: ntkdyn's previous ``ntk_gram`` (both Jacobians recomputed for every
  block pair), for reference;
* ``jacobian`` / ``ntvp``: ``ntk.ntk_gram`` with that method, float32 accumulation, and
  ``jacobian_f64acc``: float64 accumulation (the default when x64 is on);
* ``fast``: the exact closed form (``models.paper_gram``; ``ntk.mlp_gram`` for the MLP);
* ``nt_impl1`` / ``nt_impl2``: neural-tangents 0.6.5 ``empirical_ntk_fn`` implementations 1
  (Jacobian contraction) and 2 (NTK-vector products), jitted, run by
  ``tools/make_nt_reference.py --bench`` in the pinned environment (``NTKDYN_NT_PYTHON``, default
  ``/work/ntref-venv/bin/python``) when it exists. That runs jax 0.4.38 against ntkdyn's jax, on
  the same machine minutes apart: read those ratios as indicative.

``bench_ntk(quick)`` returns a dict; ``speedup_vs_naive`` is naive / ``jacobian`` (the generic path
every flax model gets) on ``mlp3``; per-case ratios are under ``cases``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from functools import partial

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from ntkdyn import models, ntk  # noqa: E402

W_STD, B_STD = 1.4142135623730951, 0.1  # as tools/make_nt_reference.py:mlp_apply
NT_PYTHON = os.environ.get("NTKDYN_NT_PYTHON", "/work/ntref-venv/bin/python")


# ------------------------------------------------------------- models (same draws as the NT side)
def mlp_apply(params, consts, X):
    h = X
    layers = params["layers"]
    for l, layer in enumerate(layers):
        W = layer["kernel"]
        h = W_STD / math.sqrt(W.shape[0]) * (h @ W) + B_STD * layer["bias"]
        if l < len(layers) - 1:
            h = jax.nn.relu(h)
    return h[:, 0]


def make_case(case: dict):
    """(apply, params, consts, X, fast) drawn exactly as ``tools/make_nt_reference.py:bench``."""
    rng = np.random.default_rng(case.get("seed", 0))
    X = rng.standard_normal((case["n"], case["d"]))
    X = jnp.asarray(X / np.linalg.norm(X, axis=1, keepdims=True), jnp.float32)
    if case["model"] == "mlp":
        sizes = [case["d"]] + [case["width"]] * case["depth"] + [1]
        layers = [
            {
                "kernel": jnp.asarray(rng.standard_normal((i, o)), jnp.float32),
                "bias": jnp.asarray(rng.standard_normal(o), jnp.float32),
            }
            for i, o in zip(sizes[:-1], sizes[1:])
        ]
        params = {"layers": layers}
        return mlp_apply, params, {}, X, jax.jit(lambda p, c, x: ntk.mlp_gram(p, x, W_STD, B_STD))
    W = jnp.asarray(rng.standard_normal((case["width"], case["d"])), jnp.float32)
    a = jnp.asarray(np.where(rng.random(case["width"]) < 0.5, -1.0, 1.0), jnp.float32)
    return models.paper_apply, {"W": W}, {"a": a}, X, jax.jit(models.paper_gram)


# --------------------------------------------------------------------------- baselines
def jacobian_rows(apply, params, consts, X):
    """Per-example Jacobians of f wrt params (a pytree of (len(X), *leaf.shape) leaves): vmap of grad,
    the baseline's own, written here so the benchmark uses no private ntkdyn name."""
    return jax.vmap(jax.grad(lambda p, x: apply(p, consts, x[None])[0]), in_axes=(None, 0))(params, X)


@partial(jax.jit, static_argnums=0)
def _old_block(apply, params, consts, Xa, Xb):
    Ja = jacobian_rows(apply, params, consts, Xa)
    Jb = jacobian_rows(apply, params, consts, Xb)
    blocks = jax.tree.map(lambda a, b: a.reshape(a.shape[0], -1) @ b.reshape(b.shape[0], -1).T, Ja, Jb)
    return sum(jax.tree.leaves(blocks))


def blocked_recompute(apply, params, consts, X, chunk=256):
    """ntkdyn's ``ntk_gram`` before this benchmark's rewrite: Jacobians recomputed per block pair."""
    n = X.shape[0]
    starts = list(range(0, n, chunk))
    H = np.zeros((n, n))
    for i in starts:
        for j in starts:
            if j > i:
                continue
            block = np.asarray(
                _old_block(apply, params, consts, X[i : i + chunk], X[j : j + chunk]), np.float64
            )
            H[i : i + chunk, j : j + chunk] = block
            H[j : j + chunk, i : i + chunk] = block.T
    return H


def _time(fn, repeat: int) -> tuple[float, float, np.ndarray]:
    t = time.perf_counter()
    out = np.asarray(jax.block_until_ready(fn()), np.float64)
    first = time.perf_counter() - t
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return best, first, out


def nt_timings(cases: list[dict], repeat: int) -> dict | None:
    """neural-tangents implementations 1 and 2 in the pinned environment (None if absent)."""
    if not os.path.exists(NT_PYTHON):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        spec = os.path.join(tmp, "spec.json")
        with open(spec, "w") as fh:
            json.dump({"cases": cases, "repeat": repeat}, fh)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        proc = subprocess.run(
            [NT_PYTHON, os.path.join(ROOT, "tools", "make_nt_reference.py"), "--bench", spec],
            capture_output=True,
            text=True,
            env=env,
            timeout=3600,
        )
    if proc.returncode != 0:
        return {
            "error": proc.stderr.strip().splitlines()[-1]
            if proc.stderr.strip()
            else f"exit {proc.returncode}"
        }
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- memory (child process)
MEMORY_CASE = {"name": "memory", "model": "mlp", "n": 2000, "d": 64, "width": 700, "depth": 3, "seed": 0}


def peak_rss_bytes() -> int:
    """This process's peak resident set. /proc/self/status VmHWM where there is one: ru_maxrss
    of a child started by fork + exec also counts the parent's resident set at the fork (Linux)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_child(accumulate: str) -> dict:
    apply, params, consts, X, _ = make_case(MEMORY_CASE)
    jax.block_until_ready(params)
    base = peak_rss_bytes()
    plan = ntk.plan_ntk(apply, params, consts, X, accumulate=accumulate)
    t = time.perf_counter()
    H = ntk.ntk_gram(apply, params, consts, X, accumulate=accumulate)
    dt = time.perf_counter() - t
    peak = peak_rss_bytes()
    P = sum(leaf.size for leaf in jax.tree.leaves(params))
    return {
        "n": X.shape[0],
        "n_params": int(P),
        "accumulate": accumulate,
        "method": plan.method,
        "chunk": plan.chunk,
        "group": plan.group,
        "jacobian_blocks": plan.jacobian_blocks,
        "plan_jacobian_gb": plan.peak_jacobian_bytes / 2**30,
        "full_jacobian_gb": X.shape[0] * P * 4 / 2**30,
        "time_s": dt,
        "peak_rss_gb": peak / 2**30,
        "rss_before_gb": base / 2**30,
        "finite": bool(np.all(np.isfinite(H))),
    }


def bench_memory(accumulate: str = "float32") -> dict:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--memory-child", accumulate],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- main entry
def bench_ntk(quick: bool, nt: bool = True, memory: bool | None = None) -> dict:
    repeat = 1 if quick else 2
    cases = [
        {
            "name": "paper",
            "model": "paper",
            "n": 256 if quick else 512,
            "d": 64,
            "width": 4096 if quick else 8192,
            "seed": 0,
        },
        {
            "name": "mlp3",
            "model": "mlp",
            "n": 128 if quick else 256,
            "d": 64,
            "width": 256 if quick else 512,
            "depth": 3,
            "seed": 0,
        },
    ]
    out: dict = {"quick": quick, "device": str(jax.devices()[0]), "jax": jax.__version__, "cases": {}}
    for case in cases:
        apply, params, consts, X, fast = make_case(case)
        P = sum(leaf.size for leaf in jax.tree.leaves(params))
        row: dict = {"n": case["n"], "n_params": int(P)}
        paths = {
            "naive": lambda: ntk.naive_ntk_gram(apply, params, consts, X),
            "blocked_recompute": lambda: blocked_recompute(apply, params, consts, X),
            "jacobian": lambda: ntk.ntk_gram(
                apply, params, consts, X, method="jacobian", accumulate="float32"
            ),
            "jacobian_f64acc": lambda: ntk.ntk_gram(
                apply, params, consts, X, method="jacobian", accumulate="float64"
            ),
            "ntvp": lambda: ntk.ntk_gram(apply, params, consts, X, method="ntvp", accumulate="float32"),
            "fast": lambda: fast(params, consts, X),
        }
        ref = None
        for name, fn in paths.items():
            best, first, H = _time(fn, repeat)
            row[f"{name}_s"], row[f"{name}_first_s"] = best, first
            if ref is None:
                ref = H
            row[f"{name}_rel_diff"] = float(np.max(np.abs(H - ref)) / np.max(np.abs(ref)))
        row["trace"] = float(np.trace(ref))
        plan = ntk.plan_ntk(apply, params, consts, X)
        row["auto_method"] = plan.method
        for name in ("blocked_recompute", "jacobian", "jacobian_f64acc", "ntvp", "fast"):
            row[f"{name}_vs_naive"] = row["naive_s"] / row[f"{name}_s"]
        out["cases"][case["name"]] = row
    if nt:
        ntres = nt_timings(cases, repeat)
        out["neural_tangents"] = (
            ntres if ntres is not None else "not run: no pinned environment at " + NT_PYTHON
        )
        if ntres and "cases" in ntres:
            for name, row in out["cases"].items():
                for impl in (1, 2):
                    t = ntres["cases"].get(name, {}).get(f"impl{impl}_s")
                    if t:
                        row[f"nt_impl{impl}_s"] = t
                        nt_trace = ntres["cases"][name][f"impl{impl}_trace"]
                        row[f"nt_impl{impl}_trace_rel_diff"] = abs(nt_trace - row["trace"]) / row["trace"]
                        row[f"jacobian_vs_nt_impl{impl}"] = t / row["jacobian_s"]
                        row[f"fast_vs_nt_impl{impl}"] = t / row["fast_s"]
                err = ntres["cases"].get(name, {}).get("impl3_error")
                if err:
                    row["nt_impl3_error"] = err
    if memory if memory is not None else not quick:
        out["memory"] = bench_memory("float32")
    out["speedup_vs_naive"] = out["cases"]["mlp3"]["jacobian_vs_naive"]
    out["speedup_fast_vs_naive"] = {k: v["fast_vs_naive"] for k, v in out["cases"].items()}
    return out


def table(res: dict) -> str:
    lines = [f"empirical NTK ({res['device']}, jax {res['jax']}; seconds, best of runs after compile)"]
    cols = [
        "naive",
        "blocked_recompute",
        "jacobian",
        "jacobian_f64acc",
        "ntvp",
        "fast",
        "nt_impl1",
        "nt_impl2",
    ]
    lines.append(f"{'case':<8} {'n':>5} {'P':>9} " + " ".join(f"{c:>12}" for c in cols))
    for name, row in res["cases"].items():
        vals = " ".join(f"{row[c + '_s']:>12.4g}" if c + "_s" in row else f"{'-':>12}" for c in cols)
        lines.append(f"{name:<8} {row['n']:>5} {row['n_params']:>9} {vals}")
    lines.append("speed-up (time of the baseline / time of ntkdyn's path):")
    for name, row in res["cases"].items():
        parts = [
            f"jacobian vs naive {row['jacobian_vs_naive']:.2f}x",
            f"fast vs naive {row['fast_vs_naive']:.1f}x",
            f"jacobian vs previous {row['blocked_recompute_s'] / row['jacobian_s']:.2f}x",
        ]
        for impl in (1, 2):
            if f"jacobian_vs_nt_impl{impl}" in row:
                parts.append(f"jacobian vs NT impl {impl} {row[f'jacobian_vs_nt_impl{impl}']:.2f}x")
                parts.append(f"fast vs NT impl {impl} {row[f'fast_vs_nt_impl{impl}']:.1f}x")
        lines.append(f"  {name}: " + ", ".join(parts) + f"  (auto picks {row['auto_method']})")
    m = res.get("memory")
    if m and "error" not in m:
        lines.append(
            f"memory: n={m['n']}, P={m['n_params']}: {m['time_s']:.1f} s, peak RSS {m['peak_rss_gb']:.2f} GB "
            f"(Jacobian blocks planned {m['plan_jacobian_gb']:.2f} GB; the full Jacobian would be "
            f"{m['full_jacobian_gb']:.1f} GB), chunk {m['chunk']}, {m['jacobian_blocks']} Jacobian blocks, "
            f"{m['accumulate']} accumulation"
        )
    elif m:
        lines.append(f"memory: {m['error']}")
    if isinstance(res.get("neural_tangents"), str):
        lines.append(f"neural-tangents: {res['neural_tangents']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    ap.add_argument(
        "--no-nt", action="store_true", help="skip neural-tangents even if the pinned environment exists"
    )
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--memory-child", metavar="ACCUMULATE", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child)))
        return 0
    res = bench_ntk(args.quick, nt=not args.no_nt, memory=False if args.no_memory else None)
    print(table(res))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
