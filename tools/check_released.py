"""Check ntkdyn's ``released`` model against an independent, PyTorch-free reimplementation of the
released notebook's training step (ShiyunXu/NTK_Optimizer, ``simulation_HB_NAG_GD.ipynb``).

The notebook (read from the authors' repository) trains

    TwoLayerMLP: Linear(d, m) -> ReLU -> Linear(m, 1, bias=False), no 1/sqrt(m);
    init: first-layer weight re-drawn N(0, (1/m)^2), first-layer bias left at PyTorch's default
          U(-1/sqrt(d), 1/sqrt(d)), second-layer weight re-drawn U(-1, 1);
    loss: nn.MSELoss() = mean_i (u_i - y_i)^2 over the full batch (one step per epoch);
    optimizer: torch.optim.SGD(lr) (GD), SGD(lr, momentum=beta) (HB), SGD(lr, nesterov=True) with
          the momentum set to (k-1)/(k+r-1) before epoch k (NAG-C, r is the notebook's ``d``);
    record: the loss of the batch before each step, i.e. L(theta_0), ..., L(theta_{E-1}).

This file reimplements that with numpy only: the forward pass, the MSE loss, the backward pass
by hand (ReLU derivative 1[pre > 0], as torch's threshold_backward) and torch's SGD step (the
momentum buffer does not exist while the momentum is 0; it is created as a copy of the gradient
at the first step with momentum != 0, then buf = mu buf + g; the step is g + mu buf with
nesterov, else buf). Both sides start from the same initial parameters (drawn by ntkdyn with
the notebook's init) on the same data, and the tool prints the largest relative gap between the
two loss curves for each optimizer: ntkdyn trained in float64 and in float32 (the studies' dtype)
against the numpy reference in float64.

    python tools/check_released.py
        # digits, n 600, m 3000, lr 1e-4, 5000 steps; GD, HB 0.2/0.5/0.8, NAG-C r=3
    python tools/check_released.py --steps 500 --width 512 --dtypes float32

Data: scikit-learn's bundled digits (no download), the first ``--n`` of a seeded permutation
(ntkdyn's ``data.digits``), pixels / 16 (to [0, 1], as ToTensor does for MNIST), the digit (0-9)
as the target. Exit status 0 when every gap is within ``--tol`` (default 1e-4).

Measured (2026-11-30, this 2-core machine shared with other jobs, load average 4-12): defaults with
``--dtypes float64``, max relative loss gap over steps 0..5000: GD 7.2e-16, HB beta=0.5 7.0e-16
(one run: wall 3049 s, the numpy side 1474 s and 811 s); HB beta=0.2 7.9e-16, HB beta=0.8 6.8e-16,
NAG-C r=3 3.0e-14 (loss 27.86 -> 6.5e-4; second run: wall 1838 s). ntkdyn in float32 (the studies'
dtype) against the float64 reference: HB beta=0.8 1.5e-5, but NAG-C r=3 0.16 (float32 rounding
grows along NAG-C's trajectory down to loss 6.5e-4; float64 agrees to 3e-14): use float64 for NAG-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import numpy as np


# --------------------------------------------------------------------------- the notebook, in numpy
def notebook_loss_and_grads(params: dict, X: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
    """MSE loss mean_i (u_i - y_i)^2 of u = relu(X W^T + b) a and its gradients, by hand.

    dL/du = 2 (u - y) / n;  dL/da = relu(P)^T dL/du;  dL/dP = (dL/du a^T) * 1[P > 0];
    dL/dW = (dL/dP)^T X;  dL/db = sum_i dL/dP_i  (P = X W^T + b, the pre-activations)."""
    W, b, a = params["W"], params["b"], params["a"]
    P = X @ W.T + b
    R = np.maximum(P, 0)
    e = R @ a - y
    n = X.shape[0]
    du = (2.0 / n) * e
    dP = np.outer(du, a) * (P > 0)
    return float(np.mean(e * e)), {"W": dP.T @ X, "b": dP.sum(axis=0), "a": R.T @ du}


def notebook_train(
    params: dict,
    X: np.ndarray,
    y: np.ndarray,
    lr: float,
    steps: int,
    momentum_at=None,
    nesterov: bool = False,
) -> np.ndarray:
    """Losses L(theta_0..theta_steps) of full-batch training with torch.optim.SGD's step, the
    momentum set to ``momentum_at(k)`` before step k (None: plain SGD)."""
    p = {k: np.array(v, copy=True) for k, v in params.items()}
    buf: dict | None = None
    losses = np.empty(steps + 1)
    for k in range(1, steps + 1):
        losses[k - 1], g = notebook_loss_and_grads(p, X, y)
        mu = 0.0 if momentum_at is None else momentum_at(k)
        if mu != 0:
            buf = {n: g[n].copy() for n in g} if buf is None else {n: mu * buf[n] + g[n] for n in g}
            step = {n: g[n] + mu * buf[n] for n in g} if nesterov else buf
        else:
            step = g
        p = {n: (p[n] - lr * step[n]).astype(p[n].dtype) for n in p}
    losses[steps] = notebook_loss_and_grads(p, X, y)[0]
    return losses


def notebook_momentum(opt: dict):
    """(momentum_at, nesterov) of an ntkdyn optimizer entry as the notebook sets it."""
    if opt["name"] == "gd":
        return None, False
    if opt["name"] == "hb":
        return (lambda k: opt["beta"]), False
    if opt["name"] == "nag_c":
        return (lambda k: (k - 1) / (k + opt["r"] - 1)), True
    raise ValueError(f"no notebook form for optimizer {opt['name']!r}")


# --------------------------------------------------------------------------- ntkdyn side
@dataclasses.dataclass(frozen=True)
class Comparison:
    optimizer: str
    ntkdyn_dtype: str
    max_rel_gap: float  # max_k |L_ntkdyn(k) - L_numpy(k)| / L_numpy(k), k = 0..steps
    loss_first: float
    loss_last: float
    ntkdyn_s: float
    numpy_s: float


def digits_config(n: int, width: int, lr: float, steps: int, dtype: str, seed: int, opt: dict) -> dict:
    """The raw ntkdyn config of the notebook's setting on digits (pixels / 16, digit target)."""
    return {
        "seed": seed,
        "dtype": dtype,
        "data": {"source": "digits", "n": n, "target": "label", "normalize": "pixels"},
        "model": {"name": "released", "width": width, "init": "notebook"},
        "train": {"steps": steps, "kernel_at": [0]},
        "optimizers": [{"eta": lr, **opt}],
    }


def compare(
    n: int,
    width: int,
    lr: float,
    steps: int,
    seed: int,
    opts: list[dict],
    dtypes=("float64",),
    ref_dtype: str = "float64",
    log=print,
) -> list[Comparison]:
    """For each optimizer: the numpy reference in ``ref_dtype``, ntkdyn training in each of ``dtypes``,
    all from ntkdyn's initial parameters of the float64 config (rounded to the run's dtype). ntkdyn's
    side goes through the public API only: ``ntkdyn.prepare`` builds the released model and its
    notebook initialisation, ``ntkdyn.run_study`` trains every optimizer of one dtype (the model and
    data passed in, the loss recorded at every step, no divergence cut-off)."""
    import ntkdyn

    labels = [_label(opt) for opt in opts]
    setup = ntkdyn.prepare(
        ntkdyn.config.from_dict(digits_config(n, width, lr, steps, "float64", seed, opts[0]))
    )
    X, y = setup.X, setup.y
    npdt = np.dtype(ref_dtype)
    refs, t_np = {}, {}
    for opt, label in zip(opts, labels):
        t = time.perf_counter()
        mom, nest = notebook_momentum(opt)
        refs[label] = notebook_train(
            {k: np.asarray(v, npdt) for k, v in setup.params.items()},
            X.astype(npdt),
            y.astype(npdt),
            lr,
            steps,
            mom,
            nest,
        )
        t_np[label] = time.perf_counter() - t
    out = []
    for dtype in dtypes:
        raw = {
            "seed": seed,
            "dtype": dtype,
            "train": {"steps": steps, "divergence_factor": 1e30},  # mse: L = (c/2)||e||^2, c = 2/n
            "theory": {"diffrax": False},
            "optimizers": [{"eta": lr, "label": label, **opt} for opt, label in zip(opts, labels)],
        }
        params = {k: np.asarray(v, dtype) for k, v in setup.params.items()}
        t = time.perf_counter()
        run = ntkdyn.run_study(raw, model=(setup.model, params, setup.consts), data=(X, y))
        t_ntk = (time.perf_counter() - t) / len(opts)
        for label in labels:
            ref, loss = refs[label], np.asarray(run[label].trajectory["loss"], np.float64)
            gap = float(np.max(np.abs(loss - ref) / np.abs(ref)))
            out.append(Comparison(label, dtype, gap, float(ref[0]), float(ref[-1]), t_ntk, t_np[label]))
            log(
                f"{label:>14}: ntkdyn {dtype} vs numpy {ref_dtype}: max relative loss gap {gap:.3e}  "
                f"(loss {ref[0]:.4g} -> {ref[-1]:.4g}; ntkdyn {t_ntk:.1f} s per optimizer incl. its "
                f"predictions, numpy {t_np[label]:.1f} s)"
            )
    return out


def _label(opt: dict) -> str:
    return opt["name"] + "".join(f" {k}={v:g}" for k, v in opt.items() if k != "name")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=600)
    p.add_argument("--width", type=int, default=3000)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument(
        "--dtypes",
        nargs="+",
        choices=("float64", "float32"),
        default=["float64", "float32"],
        help="ntkdyn training dtypes checked against the reference",
    )
    p.add_argument(
        "--ref-dtype", choices=("float64", "float32"), default="float64", help="numpy reference dtype"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--betas", type=float, nargs="*", default=[0.2, 0.5, 0.8], help="HB momenta (the notebook's)"
    )
    p.add_argument("--r", type=float, nargs="*", default=[3.0], help="NAG-C r values (none: skip NAG-C)")
    p.add_argument("--gd", action=argparse.BooleanOptionalAction, default=True, help="include GD")
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    opts = (
        [{"name": "gd"}] * args.gd
        + [{"name": "hb", "beta": b} for b in args.betas]
        + [{"name": "nag_c", "r": r} for r in args.r]
    )
    t = time.perf_counter()
    print(
        f"released model, notebook init; digits n={args.n} (pixels/16, digit target), m={args.width}, "
        f"lr={args.lr:g}, {args.steps} steps",
        flush=True,
    )
    res = compare(
        args.n,
        args.width,
        args.lr,
        args.steps,
        args.seed,
        opts,
        args.dtypes,
        args.ref_dtype,
        log=lambda s: print(s, flush=True),
    )
    wall = time.perf_counter() - t
    worst = max(r.max_rel_gap for r in res)
    ok = worst <= args.tol
    print(
        f"max over optimizers {worst:.3e} (tolerance {args.tol:g}): "
        f"{'OK' if ok else 'FAILED'}; wall {wall:.1f} s"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "args": vars(args),
                    "wall_s": wall,
                    "ok": ok,
                    "results": [dataclasses.asdict(r) for r in res],
                },
                fh,
                indent=1,
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
