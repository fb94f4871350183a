"""A quick probe of the catapult phase (Lewkowycz et al. 2020, arXiv 2003.02218), standalone.

Gradient descent on a two-layer network in NTK parametrisation with both layers trained,

    f(x) = (1/sqrt m) sum_r a_r phi(w_r . x),   w_r ~ N(0, I_d), a_r ~ N(0, 1),

on n points of the unit sphere in R^d (teacher targets, ``ntkdyn.sphere``), loss
L = (1/2n) ||f(X) - y||^2 (``half_mse``: K = H / n). eta_crit = 2 / lambda_0, lambda_0 = lambda_max(K)
at initialisation. For each width m and each eta / eta_crit the network and its quadratic model
(``ntkdyn.quadratic``, the same GD) are trained; recorded: the final lambda_max(K) against lambda_0
(``ntkdyn.sharpness.ntk_top``; for the quadratic model, the Gram of its own Jacobian J_0 + Hess f d),
the loss spike max_k L_k / L_0, and divergence (loss above 1e8 L_0 or non-finite).

Classification per run: diverged; catapult (finite, lambda_end < lambda_0 (1 - tol)); lazy otherwise.
Lewkowycz et al.'s solvable model: catapult for 2 < eta lambda_0 < 4, diverging above 4 (ReLU nets in
their experiments up to about 12). Nothing here is wired into run_all: it prints a table and, with
--out, writes the numbers as JSON.

    PYTHONPATH=. python experiments/catapult_probe.py [--quick] [--act relu|softplus|tanh] [--out f.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import ntkdyn  # noqa: E402
from ntkdyn import quadratic, sharpness  # noqa: E402

ACTS = {"relu": jax.nn.relu, "softplus": jax.nn.softplus, "tanh": jnp.tanh}
RATIOS = (0.5, 0.9, 1.1, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)
SHRINK_TOL = 0.02  # lambda_end < (1 - SHRINK_TOL) lambda_0 counts as a catapult


def two_layer(act: str):
    phi = ACTS[act]

    def apply(p, X):
        return phi(X @ p["W"].T) @ p["a"] / math.sqrt(p["a"].shape[0])

    return apply


@dataclasses.dataclass(frozen=True)
class ProbeRun:
    """One (width, eta) run of the network or its quadratic model."""

    m: int
    ratio: float  # eta / eta_crit, eta_crit = 2 / lambda_0
    which: str  # network | quadratic
    lam0: float  # lambda_max(K) at theta_0
    lam_end: float  # lambda_max(K) at the last step (NaN if diverged)
    spike: float  # max_k L_k / L_0 over the finite losses
    loss_end: float
    diverged_at: int | None

    @property
    def phase(self) -> str:
        if self.diverged_at is not None:
            return "diverged"
        return "catapult" if self.lam_end < (1 - SHRINK_TOL) * self.lam0 else "lazy"


DIVERGENCE_FACTOR = 1e8


def gd_runs(apply, params, consts, X, y, c: float, etas, steps: int) -> tuple[np.ndarray, list]:
    """Plain gradient descent theta <- theta - eta grad L, L = (c/2)||apply(theta, consts, X) - y||^2,
    for every eta (vmapped): losses (R, steps + 1), NaN from the first step whose loss is non-finite or
    above DIVERGENCE_FACTOR * L_0 (that step's update is not applied), and the final parameters."""

    def loss(p):
        e = apply(p, consts, X) - y
        return 0.5 * c * jnp.sum(e * e)

    limit = DIVERGENCE_FACTOR * loss(params)

    def one(eta):
        def body(carry, _):
            p, dead = carry
            L, g = jax.value_and_grad(loss)(p)
            dead = dead | ~jnp.isfinite(L) | (L > limit)
            p = jax.tree.map(lambda a, b: jnp.where(dead, a, a - eta * b), p, g)
            return (p, dead), jnp.where(dead, jnp.nan, L)

        (p, dead), Ls = jax.lax.scan(body, (params, jnp.asarray(False)), None, length=steps)
        L = loss(p)
        return jnp.append(Ls, jnp.where(dead | ~jnp.isfinite(L) | (L > limit), jnp.nan, L)), p

    Ls, ps = jax.jit(jax.vmap(one))(jnp.asarray(etas, y.dtype))
    return np.asarray(Ls), [jax.tree.map(lambda a, j=j: a[j], ps) for j in range(len(etas))]


def probe(m: int, act: str, n: int, d: int, steps: int, seed: int, ratios) -> list[ProbeRun]:
    X, y = ntkdyn.sphere(n, d, "teacher", seed, 0.0, 16)
    X, y = jnp.asarray(X, jnp.float64), jnp.asarray(y, jnp.float64)
    kw, ka = jax.random.split(jax.random.PRNGKey(1000 + seed))
    p0 = {"W": jax.random.normal(kw, (m, d), jnp.float64), "a": jax.random.normal(ka, (m,), jnp.float64)}
    model, params, consts = ntkdyn.from_apply_fn(two_layer(act), p0, loss="half_mse", name=f"two_{act}")
    c = 1.0 / n
    lam0 = c * sharpness.ntk_top(model.apply, params, consts, X).value
    etas = [2.0 * r / lam0 for r in ratios]
    quad = quadratic.quadratize(model)
    qc = quadratic.expansion_consts(params, consts)
    out = []
    for which, mdl, cs in (("network", model, consts), ("quadratic", quad, qc)):
        losses, finals = gd_runs(mdl.apply, params, cs, X, y, c, etas, steps)
        for r, L, p in zip(ratios, losses, finals):
            bad = np.flatnonzero(~np.isfinite(L))
            diverged_at = int(bad[0]) if bad.size else None
            lam_end = math.nan if bad.size else c * sharpness.ntk_top(mdl.apply, p, cs, X).value
            finite = L[np.isfinite(L)]
            spike = float(finite.max() / L[0])
            out.append(ProbeRun(m, r, which, lam0, lam_end, spike, float(L[-1]), diverged_at))
    return out


def brackets(runs: list[ProbeRun]) -> dict[tuple[int, str], dict]:
    """Per (m, which): the onset bracket (the largest lazy ratio below the smallest catapult ratio),
    the divergence bracket (the largest finite ratio below the smallest diverged one), the largest
    finite ratio of all (the edge need not be monotone: finite runs above a diverged one), and whether
    every catapult run ended with lambda_end <= 2 / eta (lambda_end / lambda_0 <= 1 / ratio)."""
    out = {}
    for key in sorted({(r.m, r.which) for r in runs}):
        rs = sorted((r for r in runs if (r.m, r.which) == key), key=lambda r: r.ratio)
        cat = [r.ratio for r in rs if r.phase == "catapult"]
        div = [r.ratio for r in rs if r.phase == "diverged"]
        first_cat = min(cat) if cat else math.nan
        first_div = min(div) if div else math.nan
        lazy_below = [r.ratio for r in rs if r.phase == "lazy" and not r.ratio > first_cat]
        finite_below = [r.ratio for r in rs if r.phase != "diverged" and not r.ratio > first_div]
        out[key] = {
            "onset": (max(lazy_below, default=math.nan), first_cat),
            "edge": (max(finite_below, default=math.nan), first_div),
            "last_finite": max((r.ratio for r in rs if r.phase != "diverged"), default=math.nan),
            "below_limit": all(r.lam_end / r.lam0 <= 1 / r.ratio for r in rs if r.phase == "catapult"),
        }
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--act", default="relu", choices=sorted(ACTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--widths", default=None, help="comma-separated widths (default 256,1024[,4096])")
    ap.add_argument("--ratios", default=None, help="comma-separated eta / eta_crit values")
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args(argv)
    widths = (256, 1024) if args.quick else (256, 1024, 4096)
    widths = tuple(int(w) for w in args.widths.split(",")) if args.widths else widths
    ratios = tuple(float(r) for r in args.ratios.split(",")) if args.ratios else RATIOS
    n, d = 16, 5
    steps = args.steps or (300 if args.quick else 1000)
    t0 = time.perf_counter()
    runs = [r for m in widths for r in probe(m, args.act, n, d, steps, args.seed, ratios)]
    print(f"act {args.act}, n {n}, d {d}, steps {steps}, seed {args.seed}; lambda = lambda_max(K), K = H/n")
    print(f"{'m':>6} {'eta/crit':>8} {'which':>9} {'lam_end/lam0':>12} {'spike':>10} {'loss_end':>10} phase")
    for r in runs:
        at = "" if r.diverged_at is None else f" @{r.diverged_at}"
        print(
            f"{r.m:6d} {r.ratio:8.2f} {r.which:>9} {r.lam_end / r.lam0:12.4f} {r.spike:10.3g} "
            f"{r.loss_end:10.3g} {r.phase}{at}"
        )
    summary = brackets(runs)
    for (m, which), b in summary.items():
        print(
            f"m {m:5d} {which:>9}: onset in ({b['onset'][0]:g}, {b['onset'][1]:g}], divergence in "
            f"({b['edge'][0]:g}, {b['edge'][1]:g}] x eta_crit (largest finite {b['last_finite']:g}); "
            f"catapults end at lambda <= 2/eta: {b['below_limit']}"
        )
    print(f"time {time.perf_counter() - t0:.1f} s")
    if args.out:
        doc = {
            "act": args.act,
            "n": n,
            "d": d,
            "steps": steps,
            "seed": args.seed,
            "runs": [dataclasses.asdict(r) | {"phase": r.phase} for r in runs],
            "brackets": [{"m": m, "which": w, **b} for (m, w), b in summary.items()],
        }
        with open(args.out, "w") as fh:
            json.dump(doc, fh, indent=1)


if __name__ == "__main__":
    main()
