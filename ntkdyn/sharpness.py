"""Sharpness: the top eigenvalue of the loss Hessian and of the NTK, matrix-free, and the step-size
stability limits they are compared with.

* ``hessian_top(loss, params, *args)``: lambda_max(Hess_theta L), L = loss(params, *args) a scalar, by
  Lanczos on Hessian-vector products v -> d/dt grad L(theta + t v) (``jax.jvp`` of ``jax.grad``:
  forward over reverse, about 3 gradient costs per product; no Hessian is formed).
* ``ntk_top(apply, params, *args)``: lambda_max(H), H = J J^T the raw output Gram (the NTK on the
  points; ``apply(params, *args)`` of shape (n,)), by Lanczos on u -> J (J^T u): a ``jax.vjp`` then a
  ``jax.jvp``, in the n-dimensional output space. The dynamics kernel of L = (c/2)||f - y||^2 is
  K = c H (``models``), so gradient descent's kernel-regime stability reads eta c lambda_max(H) < 2.
* ``stability_limit(method, beta)``: the largest stable h = eta lambda of one linear mode
  (GD 2, heavy ball 2(1 + beta), Nesterov with constant beta 2(1 + beta)/(1 + 2 beta)).

Lanczos (Lanczos 1950; Golub & Van Loan, Matrix Computations 4th ed., sec. 10.1) with full
re-orthogonalisation (twice per step, "twice is enough"): from a random unit start vector, after j steps
the tridiagonal T_j's largest eigenvalue theta with eigenvector s is the Ritz value; its residual is
||A x - theta x|| = beta_j |s_j| for the Ritz vector x = Q_j s. The iteration stops when that residual
is at most ``tol * |theta|`` or the Krylov space is exhausted (beta_j ~ 0), after ``max_iter`` steps at
most. A symmetric A has an eigenvalue within the residual of theta (and within residual^2 / gap when
the top eigenvalue is separated by gap), so with the defaults (tol = 1e-10, max_iter = 100) the value's
relative error is at most 1e-10 once ``converged``; near-degenerate top eigenvalues (a cluster) do not
slow the value, only the vector. The returned ``residual`` is recomputed explicitly (one more product).
Caveat of every Krylov method: a start vector with no component along the top eigenvector would miss
it; a random start has one with probability 1. The basis is stored: memory max_iter x dim x 8 bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ntkdyn.models import Model, loss_scale

TOL = 1e-10
MAX_ITER = 100


@dataclasses.dataclass(frozen=True)
class TopEigen:
    """The largest eigenvalue of a symmetric operator found by ``lanczos_top``.

    ``value``: the top Ritz value (units of the operator: loss / param^2 for the loss Hessian,
    output^2 / param^2 for H = J J^T); ``residual``: ||A x - value x|| for the unit Ritz vector x,
    computed explicitly; ``iterations``: Lanczos steps taken (matrix-vector products, plus one for the
    residual); ``converged``: the Ritz residual reached ``tol * |value|`` (or the Krylov space was
    exhausted) within ``max_iter``; ``vector``: x, flat (length ``dim``)."""

    value: float
    residual: float
    iterations: int
    converged: bool
    vector: np.ndarray

    @property
    def relative_residual(self) -> float:
        return self.residual / abs(self.value) if self.value else math.inf


def lanczos_top(
    matvec: Callable[[jax.Array], jax.Array],
    dim: int,
    dtype,
    *,
    key: jax.Array | None = None,
    tol: float = TOL,
    max_iter: int = MAX_ITER,
) -> TopEigen:
    """lambda_max (largest algebraic) of the symmetric linear map ``matvec`` on R^dim (module docstring).

    Args:
        matvec: v (dim,) -> A v (dim,), A symmetric (jit it: it is called once per step).
        dim: the dimension; dtype: of the vectors (float64 for 1e-10 accuracy).
        key: start vector N(0, I) from this key (PRNGKey(0) if None).
        tol: stop when the Ritz residual <= tol * |theta|. max_iter: at most this many steps (capped at dim).
    """
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    if not (tol > 0) or max_iter < 1:
        raise ValueError(f"need tol > 0 and max_iter >= 1, got tol={tol}, max_iter={max_iter}")
    key = jax.random.PRNGKey(0) if key is None else key
    # the vector arithmetic runs in numpy on the host: eager jnp ops on a basis that grows by one row
    # per step would compile a kernel per shape (seconds per call); only the products are jax
    mv = lambda v: np.asarray(matvec(jnp.asarray(v)))  # noqa: E731
    q = np.asarray(jax.random.normal(key, (dim,), dtype))
    q = q / np.linalg.norm(q)
    Q = [q]
    alphas: list[float] = []
    betas: list[float] = []
    w = mv(q)
    converged = False
    theta, s = float("nan"), np.ones(1)
    steps = min(max_iter, dim)
    for j in range(steps):
        alpha = float(np.vdot(Q[j], w))
        alphas.append(alpha)
        Qm = np.stack(Q)
        for _ in range(2):  # full re-orthogonalisation against every basis vector, twice
            w = w - Qm.T @ (Qm @ w)
        beta = float(np.linalg.norm(w))
        T = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        evals, evecs = np.linalg.eigh(T)
        theta, s = float(evals[-1]), evecs[:, -1]
        scale = max(abs(theta), float(np.max(np.abs(evals))), np.finfo(np.float64).tiny)
        if beta * abs(s[-1]) <= tol * abs(theta) or beta <= 1e-14 * scale:
            converged = True
            break
        if j + 1 == steps:
            break
        betas.append(beta)
        Q.append(w / beta)
        w = mv(Q[-1])
    x = np.stack(Q[: len(s)]).T @ np.asarray(s, Q[0].dtype)
    x = x / np.linalg.norm(x)
    residual = float(np.linalg.norm(mv(x) - theta * x))
    return TopEigen(theta, residual, len(alphas), converged, np.asarray(x))


@functools.partial(jax.jit, static_argnums=0)
def _hvp(loss, p, v, *a):
    """Hess_theta loss(theta, *a) v at theta = p, v flat: forward over reverse."""
    unravel = ravel_pytree(p)[1]
    return ravel_pytree(jax.jvp(lambda q: jax.grad(loss)(q, *a), (p,), (unravel(v),))[1])[0]


@functools.partial(jax.jit, static_argnums=0)
def _gram_vec(apply, p, u, *a):
    """J (J^T u), J = d apply(p, *a) / dp: a vjp, then a jvp."""
    f = lambda q: apply(q, *a)  # noqa: E731
    _, pullback = jax.vjp(f, p)
    return jax.jvp(f, (p,), pullback(u))[1]


def hessian_top(
    loss: Callable[..., jax.Array],
    params,
    *args,
    key: jax.Array | None = None,
    tol: float = TOL,
    max_iter: int = MAX_ITER,
) -> TopEigen:
    """lambda_max of Hess_theta loss(theta, *args) at theta = ``params`` (any pytree), by Lanczos on
    Hessian-vector products jvp(grad loss) (``lanczos_top``). The vector is over the flattened
    parameters (``jax.flatten_util.ravel_pytree`` order)."""
    flat, _ = ravel_pytree(params)
    mv = lambda v: _hvp(loss, params, v, *args)  # noqa: E731
    return lanczos_top(mv, flat.shape[0], flat.dtype, key=key, tol=tol, max_iter=max_iter)


def ntk_top(
    apply: Callable[..., jax.Array],
    params,
    *args,
    key: jax.Array | None = None,
    tol: float = TOL,
    max_iter: int = MAX_ITER,
) -> TopEigen:
    """lambda_max of H = J J^T, J = d apply(params, *args) / d params (apply of shape (n,)): Lanczos on
    u -> J (J^T u) (a vjp, then a jvp; ``lanczos_top``) in R^n. Multiply by c for K = c H."""
    out = jax.eval_shape(lambda p: apply(p, *args), params)
    if len(out.shape) != 1:
        raise ValueError(f"ntk_top: apply must return shape (n,), got {out.shape}")
    mv = lambda u: _gram_vec(apply, params, u, *args)  # noqa: E731
    return lanczos_top(mv, out.shape[0], out.dtype, key=key, tol=tol, max_iter=max_iter)


@functools.lru_cache(maxsize=32)
def squared_loss(model: Model) -> Callable:
    """(params, consts, X, y) -> L = (c/2)||model.apply(params, consts, X) - y||^2,
    c = loss_scale(model.loss, n). Cached per model (one compiled Hessian-vector product)."""

    def loss(params, consts, X, y):
        e = model.apply(params, consts, X) - y
        return 0.5 * loss_scale(model.loss, y.shape[0]) * jnp.sum(e * e)

    return loss


@dataclasses.dataclass(frozen=True)
class Sharpness:
    """Both sharpnesses of a model at one parameter point. ``hessian``: lambda_max(Hess L); ``ntk``:
    lambda_max(H = J J^T); ``c``: the loss scale, so ``kernel_max`` = c lambda_max(H) = lambda_max(K),
    the Gauss-Newton part of Hess L (equal to lambda_max(Hess L) at an interpolating minimum)."""

    hessian: TopEigen
    ntk: TopEigen
    c: float

    @property
    def kernel_max(self) -> float:
        return self.c * self.ntk.value


def sharpness(
    model: Model, params, consts, X, y, *, key=None, tol: float = TOL, max_iter: int = MAX_ITER
) -> Sharpness:
    """``Sharpness`` of ``model`` at ``params`` on (X, y) (loss convention of ``models``)."""
    kw = dict(key=key, tol=tol, max_iter=max_iter)
    return Sharpness(
        hessian_top(squared_loss(model), params, consts, X, y, **kw),
        ntk_top(model.apply, params, consts, X, **kw),
        loss_scale(model.loss, y.shape[0]),
    )


@dataclasses.dataclass(frozen=True)
class SharpnessPath:
    """Sharpness at recorded steps. ``hessian[j]``: lambda_max(Hess L) at ``step[j]``; ``kernel[j]``:
    lambda_max(K) = c lambda_max(H) (the units of the stability limit: eta * kernel < limit);
    ``converged[j]``: both Lanczos runs converged."""

    step: np.ndarray
    hessian: np.ndarray
    kernel: np.ndarray
    converged: np.ndarray


def sharpness_path(model: Model, steps, snapshots, consts, X, y, **lanczos) -> SharpnessPath:
    """``sharpness`` at each snapshot (a params pytree with a leading axis, as ``TrainResult.snapshots``
    taken at ``steps``, e.g. ``TrainPlan.snapshot_at``); ``lanczos``: key, tol, max_iter."""
    steps = np.asarray(steps, int)
    count = {leaf.shape[0] for leaf in jax.tree.leaves(snapshots)}
    if count != {steps.size}:
        raise ValueError(f"sharpness_path: {steps.size} steps but snapshots of leading sizes {sorted(count)}")
    out = [
        sharpness(model, jax.tree.map(lambda a, j=j: a[j], snapshots), consts, X, y, **lanczos)
        for j in range(steps.size)
    ]
    return SharpnessPath(
        steps,
        np.array([s.hessian.value for s in out]),
        np.array([s.kernel_max for s in out]),
        np.array([s.hessian.converged and s.ntk.converged for s in out]),
    )


# --------------------------------------------------------------------------- stability limits
STABILITY_METHODS = ("gd", "hb", "nag")


def stability_limit(method: str, beta: float = 0.0) -> float:
    """The largest h = eta lambda for which one mode of a quadratic (linear model, eigenvalue lambda of
    K or of Hess L) does not grow; the step is stable iff 0 < h < limit.

    gd:  c_{k+1} = (1 - h) c_k                                            -> h < 2.
    hb:  c_{k+1} = (1 + beta - h) c_k - beta c_{k-1}                      -> h < 2 (1 + beta).
    nag: c_{k+1} = (1 + beta)(1 - h) c_k - beta (1 - h) c_{k-1}           -> h < 2 (1 + beta) / (1 + 2 beta)
         (optax/torch Nesterov, constant beta: NAG-SC's form).
    Derivation (nag): the characteristic polynomial z^2 + a1 z + a0, a1 = -(1 + beta)(1 - h),
    a0 = beta (1 - h), has both roots in the open unit disc iff |a0| < 1 and |a1| < 1 + a0 (Jury /
    Schur-Cohn for degree 2). For 0 < h <= 1 both hold (a0 in [0, beta), |a1| = (1 + beta)(1 - h) <
    1 + beta (1 - h) as 1 - h < 1). For h > 1: |a1| < 1 + a0 is (1 + beta)(h - 1) < 1 - beta (h - 1), i.e.
    h < 1 + 1/(1 + 2 beta), tighter than |a0| < 1 (h < 1 + 1/beta); at the limit the root z = -1 leaves
    the disc. beta = 0 gives GD's 2; beta -> 1 gives 4/3. hb is the same test with a1 = -(1 + beta - h),
    a0 = beta: |a1| < 1 + beta, i.e. h < 2 (1 + beta). Requires 0 <= beta < 1."""
    if method not in STABILITY_METHODS:
        raise ValueError(f"stability_limit: method {method!r}; allowed: {', '.join(STABILITY_METHODS)}")
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"stability_limit: beta = {beta!r}; allowed: 0 <= beta < 1")
    if method == "gd":
        if beta:
            raise ValueError(f"stability_limit: gd has no beta (got {beta})")
        return 2.0
    if method == "hb":
        return 2.0 * (1.0 + beta)
    return 2.0 * (1.0 + beta) / (1.0 + 2.0 * beta)
