"""Reference values from neural-tangents 0.6.5, for ``tests/test_nt_reference.py``.

neural-tangents (the reference library for NNGP/NTK kernels) cannot be imported with jax >= 0.5
and needs TensorFlow, so ntkdyn does not depend on it. This script runs in a *separate*,
pinned environment, writes ``tests/data/nt_reference.npz``, and the tests compare ntkdyn's own
kernels with the stored values. It imports only numpy, jax and neural_tangents (not ntkdyn).

Environment (Python 3.11; the exact install line used to make the stored file):

    python3.11 -m venv /work/ntref-venv
    /work/ntref-venv/bin/pip install "jax==0.4.38" "jaxlib==0.4.38" "tensorflow-cpu==2.18.1" \
        "tf2jax==0.3.7" "neural-tangents==0.6.5"

(tf2jax pulls in ``tensorflow`` 2.18.1 as well; ~2.7 GB in all.) Then, from the repo root:

    /work/ntref-venv/bin/python tools/make_nt_reference.py            # writes tests/data/nt_reference.npz
    /work/ntref-venv/bin/python tools/make_nt_reference.py --bench SPEC.json   # NT timings, JSON on stdout

What is stored (all float64, computed with jax x64 enabled):

* Analytic kernels of ``stax.serial([Dense(w, W_std, b_std), Relu()] * depth, Dense(1, W_std, b_std))``
  (NTK parameterisation) for a grid of depth, W_std, b_std (``nan`` = no bias, ``b_std=None``)
  and input sets: ``case{k}_nngp``, ``case{k}_ntk`` for inputs ``X_{name}`` (and a second set
  for cross kernels). The case table is ``case_depth``, ``case_W_std``, ``case_b_std``,
  ``case_x1``, ``case_x2`` (input-set names, '' = same as x1).
* Finite networks: for depth 2 and 3, the parameters of a stax MLP of width 24
  (``fin{depth}_W{l}``, ``fin{depth}_b{l}``; stax stores W as (fan_in, fan_out) with N(0, 1)
  entries), its outputs ``fin{depth}_f`` on ``X_fin`` and its empirical NTK ``fin{depth}_entk``
  (``nt.empirical_ntk_fn``, implementation 1; implementation 2 agrees, checked here).
* ``versions``: the library versions that made the file.

``--bench SPEC.json`` times neural-tangents' empirical NTK implementations 1 (Jacobian
contraction) and 2 (NTK-vector products) on the plain-jax models described in the JSON spec
(used by ``benchmarks/ntk_bench.py``; implementation 3, structured derivatives, is tried and
reported as failed where it does not run with these versions).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, os.pardir, "tests", "data", "nt_reference.npz")


def input_sets() -> dict[str, np.ndarray]:
    """Inputs: unit sphere, Gaussian (non-unit norms), and edge cases (x, -x, 2x, duplicates)."""
    rng = np.random.default_rng(20240501)
    sph = rng.standard_normal((7, 5))
    sph /= np.linalg.norm(sph, axis=1, keepdims=True)
    gauss = rng.standard_normal((6, 7)) * rng.uniform(0.3, 2.5, (6, 1))
    x = rng.standard_normal(4)
    y = rng.standard_normal(4)
    edge = np.stack([x, -x, 2.0 * x, x, y, x + 1e-3 * y, np.abs(x)])
    cross = rng.standard_normal((4, 7)) * 1.3
    return {"sphere": sph, "gauss": gauss, "edge": edge, "gauss2": cross}


def grid():
    """(depth, W_std, b_std or None, x1, x2 or '') cases."""
    cases = []
    for depth in (1, 2, 3, 5):
        for W_std, b_std in (
            (1.0, None),
            (math.sqrt(2.0), None),
            (math.sqrt(2.0), 0.1),
            (1.5, 0.5),
            (0.8, 1.0),
        ):
            for x1 in ("sphere", "gauss", "edge"):
                cases.append((depth, W_std, b_std, x1, ""))
    for depth in (1, 3, 8):
        cases.append((depth, 1.3, 0.2, "gauss", "gauss2"))
        cases.append((depth, math.sqrt(2.0), None, "gauss", "gauss2"))
    return cases


def stax_mlp(width: int, depth: int, W_std: float, b_std: float | None):
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(width, W_std=W_std, b_std=b_std), stax.Relu()]
    return stax.serial(*layers, stax.Dense(1, W_std=W_std, b_std=b_std))


def reference() -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    X = input_sets()
    for name, arr in X.items():
        out[f"X_{name}"] = arr
    cases = grid()
    out["case_depth"] = np.array([c[0] for c in cases])
    out["case_W_std"] = np.array([c[1] for c in cases])
    out["case_b_std"] = np.array([np.nan if c[2] is None else c[2] for c in cases])
    out["case_x1"] = np.array([c[3] for c in cases])
    out["case_x2"] = np.array([c[4] for c in cases])
    for k, (depth, W_std, b_std, x1, x2) in enumerate(cases):
        _, _, kernel_fn = stax_mlp(512, depth, W_std, b_std)  # width is irrelevant to kernel_fn
        kern = kernel_fn(X[x1], X[x2] if x2 else None, ("nngp", "ntk"))
        out[f"case{k}_nngp"] = np.asarray(kern.nngp, np.float64)
        out[f"case{k}_ntk"] = np.asarray(kern.ntk, np.float64)

    # finite networks: parameters, outputs and empirical NTK
    Xf = X["gauss"]
    out["X_fin"] = Xf
    W_std, b_std, width = 1.5, 0.2, 24
    out["fin_W_std"], out["fin_b_std"], out["fin_width"] = np.array(W_std), np.array(b_std), np.array(width)
    for depth in (2, 3):
        init_fn, apply_fn, _ = stax_mlp(width, depth, W_std, b_std)
        _, params = init_fn(jax.random.PRNGKey(depth), Xf.shape)
        dense = [p for p in params if p]  # Relu layers have empty params
        for l, (W, b) in enumerate(dense):
            out[f"fin{depth}_W{l}"] = np.asarray(W, np.float64)
            out[f"fin{depth}_b{l}"] = np.asarray(b, np.float64)
        out[f"fin{depth}_f"] = np.asarray(apply_fn(params, Xf), np.float64)[:, 0]
        e1 = nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0, implementation=1)(Xf, None, params)
        e2 = nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0, implementation=2)(Xf, None, params)
        e1 = np.asarray(e1, np.float64).reshape(Xf.shape[0], Xf.shape[0])
        e2 = np.asarray(e2, np.float64).reshape(Xf.shape[0], Xf.shape[0])
        assert np.allclose(e1, e2, rtol=1e-12, atol=1e-12), np.max(np.abs(e1 - e2))
        out[f"fin{depth}_entk"] = e1
    out["versions"] = np.array(
        [f"jax {jax.__version__}", f"neural-tangents {nt.__version__}", f"numpy {np.__version__}"]
    )
    return out


# --------------------------------------------------------------------------- timings
def mlp_apply(params, X):
    """Plain-jax NTK-parameterised ReLU MLP (the same function as in benchmarks/ntk_bench.py)."""
    W_std, b_std = 1.4142135623730951, 0.1
    h = X
    for l, (W, b) in enumerate(params):
        h = W_std / math.sqrt(W.shape[0]) * (h @ W) + b_std * b
        if l < len(params) - 1:
            h = jax.nn.relu(h)
    return h


def paper_apply(params, X, a):
    (W,) = params
    return (jax.nn.relu(X @ W.T) @ a / math.sqrt(W.shape[0]))[:, None]


def _time(fn, repeat: int) -> tuple[float, float]:
    t = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return first, best


def bench(spec: dict) -> dict:
    """spec: {"cases": [{"name", "model": "mlp"|"paper", "n", "d", "width", "depth", "dtype", "seed"}],
    "repeat": int}. Params are drawn with numpy from ``seed`` exactly as benchmarks/ntk_bench.py does."""
    results = {"versions": {"jax": jax.__version__, "neural_tangents": nt.__version__}, "cases": {}}
    for case in spec["cases"]:
        dt = np.dtype(case.get("dtype", "float32"))
        rng = np.random.default_rng(case.get("seed", 0))
        X = rng.standard_normal((case["n"], case["d"]))
        X = jnp.asarray(X / np.linalg.norm(X, axis=1, keepdims=True), dt)
        if case["model"] == "mlp":
            sizes = [case["d"]] + [case["width"]] * case["depth"] + [1]
            params = [
                (jnp.asarray(rng.standard_normal((i, o)), dt), jnp.asarray(rng.standard_normal(o), dt))
                for i, o in zip(sizes[:-1], sizes[1:])
            ]
            f = mlp_apply
        else:
            params = [jnp.asarray(rng.standard_normal((case["width"], case["d"])), dt)]
            a = jnp.asarray(np.where(rng.random(case["width"]) < 0.5, -1.0, 1.0), dt)

            def f(p, x, a=a):
                return paper_apply(p, x, a)

        row = {}
        for impl in (1, 2, 3):
            try:
                kfn = jax.jit(nt.empirical_ntk_fn(f, trace_axes=(), vmap_axes=0, implementation=impl))
                first, best = _time(lambda: kfn(X, None, params), spec.get("repeat", 2))
                row[f"impl{impl}_s"] = best
                row[f"impl{impl}_first_s"] = first
                K = np.asarray(kfn(X, None, params), np.float64).reshape(X.shape[0], X.shape[0])
                row[f"impl{impl}_trace"] = float(np.trace(K))  # to check it is the same kernel
            except Exception as exc:  # noqa: BLE001 - report which implementation fails and why
                row[f"impl{impl}_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        results["cases"][case["name"]] = row
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument(
        "--bench", metavar="SPEC.json", help="time NT's empirical NTK implementations; JSON on stdout"
    )
    args = ap.parse_args(argv)
    if args.bench:
        with open(args.bench) as fh:
            spec = json.load(fh)
        json.dump(bench(spec), sys.stdout)
        return 0
    ref = reference()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.savez_compressed(args.out, **ref)
    print(
        f"wrote {os.path.normpath(args.out)}: {len([k for k in ref if k.endswith('_ntk')])} analytic cases, "
        f"{os.path.getsize(args.out) / 1024:.1f} KiB; {', '.join(ref['versions'])}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
