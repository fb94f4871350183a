"""Neural tangent kernels: empirical Gram for any model, exact fast paths, spectrum, drift,
and the infinite-width kernels of deep ReLU MLPs.

H_ij = <d f(x_i)/d theta, d f(x_j)/d theta> over the *trained* parameters only (raw Gram, no
loss scale; the dynamics kernel is K = c H, see ``models.loss_scale``).

Empirical NTK of a general model (``ntk_gram``), two implementations chosen by cost:

* ``"jacobian"`` (Jacobian contraction): per-example Jacobians of a block of ``chunk`` inputs
  (``vmap(grad)``), each block computed once while memory allows, then H_ab = J_a J_b^T leaf by
  leaf. Cost ~ n * 3F + n^2 P (F = forward FLOPs per input, P = number of trained parameters).
* ``"ntvp"`` (NTK-vector products): the Jacobian of one row block J_a is kept, and the column
  block H_ba = J_b J_a^T is the forward-mode derivative ``jvp`` of f(X_b) along each row of J_a,
  so no other Jacobian is ever held. Cost ~ n * 3F + n^2 * 3F / 2. Wins when F << P.

Memory is bounded by ``memory_gb``: the Jacobian blocks kept at once (``chunk`` x P entries each)
never exceed it. When the whole Jacobian does not fit, row blocks are held in groups and column
blocks recomputed (n * 3F * n_blocks / (2 * group) extra), or NTVP is used when cheaper.

Precision: float32 Jacobians contracted in float32 give H with an absolute error ~ eps32 *
lambda_max, which swamps eigenvalues below ~1e-6 lambda_max and can make H indefinite.
``accumulate="float64"`` contracts the float32 Jacobians in float64: H is then the exact Gram
of a Jacobian perturbed by eps32 relative, so it stays positive semi-definite and lambda_min is
perturbed by ~eps32 sqrt(kappa) relative instead of ~eps32 kappa. It costs 3-6x the float32
contraction on a CPU, so ``accumulate="auto"`` (the default) contracts in float32 and redoes the
contraction in float64 only where it matters: when jax x64 is enabled and the float32 result has
lambda_min < ``F64_BELOW`` * lambda_max (float64 parameters are always contracted in float64).
"""

from __future__ import annotations

import dataclasses
import math
import re
from functools import partial
from typing import Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np

from ntkdyn.models import Model, augment, scalarized

NTKMethod = Literal["auto", "jacobian", "ntvp"]  # module docstring; "auto": the cheaper by FLOP estimate
METHODS: tuple[str, ...] = get_args(NTKMethod)
F64_BELOW = 1e-4  # accumulate="auto": redo in float64 when lambda_min < F64_BELOW * lambda_max


# --------------------------------------------------------------------------- empirical NTK
def _jacobian_rows(apply, params, consts, X):
    """Per-example Jacobians of f wrt params: a pytree whose leaves are (len(X), *leaf.shape)."""

    def f_single(p, x):
        return apply(p, consts, x[None])[0]

    return jax.vmap(jax.grad(f_single), in_axes=(None, 0))(params, X)


@partial(jax.jit, static_argnums=0)
def _jacobian_block(apply, params, consts, Xb):
    return _jacobian_rows(apply, params, consts, Xb)


@partial(jax.jit, static_argnums=2)
def _contract(Ja, Jb, acc: str):
    """sum over leaves of Ja_leaf Jb_leaf^T, accumulated in ``acc`` (float32 products are exact
    in float64, so float64 accumulation gives the Gram of the float32 Jacobian to ~1e-16)."""
    dt = jnp.dtype(acc)
    out = None
    for a, b in zip(jax.tree.leaves(Ja), jax.tree.leaves(Jb)):
        a = a.reshape(a.shape[0], -1)
        b = b.reshape(b.shape[0], -1)
        if a.dtype != dt and jnp.finfo(a.dtype).bits > jnp.finfo(dt).bits:
            a, b = a.astype(dt), b.astype(dt)
        blk = jax.lax.dot_general(a, b, (((1,), (1,)), ((), ())), preferred_element_type=dt)
        out = blk if out is None else out + blk
    return out


@partial(jax.jit, static_argnums=0)
def _ntvp_block(apply, params, consts, Xb, Ja):
    """J_b J_a^T: the jvp of f(X_b) along each row of J_a (a pytree with a leading axis)."""

    def f(p):
        return apply(p, consts, Xb)

    def along(t):
        return jax.jvp(f, (params,), (t,))[1]

    return jax.vmap(along, out_axes=1)(Ja)


def _x64_enabled() -> bool:
    return jax.dtypes.canonicalize_dtype(jnp.float64) == jnp.dtype(jnp.float64)


def _params_dtype(params):
    leaves = jax.tree.leaves(params)
    return jnp.result_type(*leaves) if leaves else jnp.dtype(jnp.float32)


_FLOPS_CACHE: dict = {}


def forward_flops(apply, params, consts, X) -> float | None:
    """FLOPs of one forward pass per input, from XLA's cost analysis (None if unavailable)."""
    sig = lambda t: (
        jax.tree.structure(t),
        tuple((jnp.shape(a), jnp.result_type(a)) for a in jax.tree.leaves(t)),
    )  # noqa: E731
    try:
        key = (apply, sig(params), sig(consts), sig(X))
        hash(key)
    except TypeError:
        key = None
    if key is not None and key in _FLOPS_CACHE:
        return _FLOPS_CACHE[key]
    flops = _xla_flops(apply, params, consts, X)
    if key is not None:
        _FLOPS_CACHE[key] = flops
    return flops


def _xla_flops(apply, params, consts, X) -> float | None:
    try:
        ca = jax.jit(lambda p, c, x: apply(p, c, x)).lower(params, consts, X).cost_analysis()
        if isinstance(ca, (list, tuple)):
            ca = ca[0]
        flops = float(ca.get("flops", 0.0))
    except Exception:  # noqa: BLE001 - a backend without cost analysis
        return None
    return flops / X.shape[0] if flops > 0 else None


@dataclasses.dataclass(frozen=True)
class NTKPlan:
    """How ``ntk_gram`` computes H: blocks, memory and the cost estimates it chose by.

    ``jacobian_blocks`` counts Jacobian blocks computed (``blocks`` when all fit the memory
    budget; more when column blocks are recomputed). Costs are FLOP estimates.
    """

    method: Literal["jacobian", "ntvp"]
    n: int
    n_params: int
    chunk: int
    blocks: int
    group: int  # row blocks held at once (jacobian method)
    accumulate: str  # dtype of the (first) contraction
    refine_f64: bool  # accumulate="auto" with float32 parameters and x64 on: float64 where it matters
    forward_flops: float
    cost_jacobian: float
    cost_ntvp: float
    jacobian_blocks: int
    peak_jacobian_bytes: int


def plan_ntk(
    apply,
    params,
    consts,
    X,
    chunk: int = 256,
    method: NTKMethod = "auto",
    accumulate: str | None = "auto",
    memory_gb: float = 2.0,
) -> NTKPlan:
    """Choose block size, method and precision for ``ntk_gram`` (see the module docstring)."""
    if method not in METHODS:
        raise ValueError(f"method: {method!r} is not allowed; allowed: {', '.join(METHODS)}")
    n = int(X.shape[0])
    P = int(sum(np.size(leaf) for leaf in jax.tree.leaves(params)))
    pdt = jnp.dtype(_params_dtype(params))
    refine = False
    if accumulate in (None, "auto"):
        acc = pdt.name
        refine = _x64_enabled() and pdt.itemsize < 8
    else:
        acc = jnp.dtype(accumulate).name
        if acc == "float64" and not _x64_enabled():
            raise ValueError(
                "accumulate='float64' needs jax_enable_x64 (jax.config.update('jax_enable_x64', True))"
            )
    row_bytes = P * pdt.itemsize
    budget = float(memory_gb) * 2**30
    chunk = max(1, min(int(chunk), n, int(budget // (2 * row_bytes)) or 1))
    blocks = math.ceil(n / chunk)
    chunk = math.ceil(n / blocks)  # balanced blocks: padding < blocks rows
    # row blocks held at once; one more block for recomputed columns when not all fit
    group = max(1, min(blocks, int(budget // (chunk * row_bytes)) - 1))
    F = forward_flops(apply, params, consts, X[:chunk]) if method == "auto" else None
    F = F if F is not None else 2.0 * P
    # Jacobian blocks computed: each group's own blocks once, plus earlier column blocks again.
    jac_blocks = sum(min(group, blocks - g0) + g0 for g0 in range(0, blocks, group))
    pairs = blocks * (blocks + 1) // 2
    cost_jac = jac_blocks * chunk * 3 * F + pairs * chunk * chunk * 2 * P
    cost_ntvp = blocks * chunk * 3 * F + pairs * chunk * chunk * 3 * F
    if method == "auto":
        # ntvp evaluates in the parameter dtype; it is chosen only where that loses nothing
        ntvp_ok = acc == pdt.name
        method = "ntvp" if ntvp_ok and cost_ntvp < cost_jac else "jacobian"
    if method == "ntvp":
        jac_blocks, peak = blocks, chunk * row_bytes
    else:
        peak = (min(group, blocks) + (1 if group < blocks else 0)) * chunk * row_bytes
    return NTKPlan(
        method,
        n,
        P,
        chunk,
        blocks,
        group,
        acc,
        refine,
        F,
        float(cost_jac),
        float(cost_ntvp),
        jac_blocks,
        int(peak),
    )


def ntk_gram(
    apply,
    params,
    consts,
    X,
    chunk: int = 256,
    *,
    method: NTKMethod = "auto",
    accumulate: str | None = "auto",
    memory_gb: float = 2.0,
) -> np.ndarray:
    """Empirical NTK Gram H = J J^T of ``apply(params, consts, X)`` (shape (n,)), float64 numpy.

    ``chunk``: inputs per block (at most; reduced so that two Jacobian blocks fit ``memory_gb``).
    ``method``: ``"jacobian"`` (Jacobian contraction, each block's Jacobian computed once while
    the blocks fit ``memory_gb``, else row blocks in groups with column blocks recomputed),
    ``"ntvp"`` (NTK-vector products, only one Jacobian block held) or ``"auto"`` (the cheaper
    by the FLOP estimate of ``plan_ntk``). ``accumulate``: dtype of the contraction
    (``"float32"``, ``"float64"``) or ``"auto"``: the parameters' dtype, redone in float64 when
    x64 is enabled and lambda_min < ``F64_BELOW`` lambda_max (see the module docstring).
    Memory: at most ``memory_gb`` GiB of Jacobian blocks (chunk x P entries each; ``plan_ntk``
    tells the plan) plus the n x n result on the host. The result is exactly symmetric.
    """
    X = jnp.asarray(X)
    plan = plan_ntk(apply, params, consts, X, chunk, method, accumulate, memory_gb)
    H = _gram_with_plan(apply, params, consts, X, plan)
    if plan.refine_f64 and H.shape[0] > 1:
        lam = np.linalg.eigvalsh(H)
        if lam[0] < F64_BELOW * lam[-1]:
            plan = dataclasses.replace(plan, method="jacobian", accumulate="float64", refine_f64=False)
            H = _gram_with_plan(apply, params, consts, X, plan)
    return H


def _gram_with_plan(apply, params, consts, X, plan: NTKPlan) -> np.ndarray:
    n, c, nb = plan.n, plan.chunk, plan.blocks
    if nb * c > n:  # pad with zero inputs (their rows are dropped) so every block has one shape
        X = jnp.concatenate([X, jnp.zeros((nb * c - n,) + X.shape[1:], X.dtype)])
    Xb = [X[i * c : (i + 1) * c] for i in range(nb)]
    H = np.zeros((nb * c, nb * c))

    def put(i, j, block):  # block = H[i-block, j-block], j <= i
        block = np.asarray(block, np.float64)
        if i == j:
            block = 0.5 * (block + block.T)
        H[i * c : (i + 1) * c, j * c : (j + 1) * c] = block
        H[j * c : (j + 1) * c, i * c : (i + 1) * c] = block.T

    if plan.method == "ntvp":
        if plan.accumulate != jnp.dtype(_params_dtype(params)).name:
            dt = jnp.dtype(plan.accumulate)
            params, consts = jax.tree.map(
                lambda a: jnp.asarray(a, dt) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a,
                (params, consts),
            )
            Xb = [x.astype(dt) for x in Xb]
        for i in range(nb):
            Ji = _jacobian_block(apply, params, consts, Xb[i])
            for j in range(i + 1):
                put(i, j, _ntvp_block(apply, params, consts, Xb[j], Ji).T)  # (J_j J_i^T)^T
            del Ji
    else:
        acc = plan.accumulate
        for g0 in range(0, nb, plan.group):
            rows = range(g0, min(g0 + plan.group, nb))
            J = {i: _jacobian_block(apply, params, consts, Xb[i]) for i in rows}
            for i in rows:
                for j in range(g0, i + 1):
                    put(i, j, _contract(J[i], J[j], acc))
            for j in range(g0):  # column blocks of earlier groups: recomputed, one at a time
                Jj = _jacobian_block(apply, params, consts, Xb[j])
                for i in rows:
                    put(i, j, _contract(J[i], Jj, acc))
                del Jj
            del J
    return H[:n, :n].copy() if nb * c > n else H


def naive_ntk_gram(apply, params, consts, X) -> np.ndarray:
    """Reference: the full Jacobian of f(X) by ``jax.jacrev`` (n x P in memory), then J J^T."""
    X = jnp.asarray(X)

    @jax.jit
    def gram(p):
        J = jax.jacrev(lambda q: apply(q, consts, X))(p)
        return sum(j.reshape(X.shape[0], -1) @ j.reshape(X.shape[0], -1).T for j in jax.tree.leaves(J))

    return np.asarray(gram(params), np.float64)


# --------------------------------------------------------------------------- exact fast paths
def _mlp_layers(params) -> list[dict]:
    """The ``models.ntk_mlp`` parameters as [{'kernel': (fan_in, fan_out), 'bias': ...}, ...]."""
    layers: dict[int, dict] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
        keys = [k for k in keys if k != "value"]
        match = re.fullmatch(r"layers/(\d+)/(kernel|bias)", "/".join(keys))
        if match is None:
            raise ValueError(f"not an ntk_mlp parameter: {'/'.join(keys)}")
        layers.setdefault(int(match.group(1)), {})[match.group(2)] = leaf
    return [layers[i] for i in sorted(layers)]


def mlp_gram(params, X, W_std: float, b_std: float | None):
    """Exact empirical NTK of ``models.ntk_mlp`` without Jacobians, O(n^2 width depth):
    with h_l the input of layer l, s_l = W_std / sqrt(fan_in_l) and delta_l = df/d(pre-activation_l),
    d f / d K_l = s_l h_l (x) delta_l and d f / d b_l = b_std delta_l, so
    H = sum_l (s_l^2 h_l h_l'^T + b_std^2 [bias trained]) * (delta_l delta_l'^T)  (elementwise).
    The analogue of ``models.paper_gram`` for deep MLPs (neural-tangents' "structured derivatives")."""
    layers = _mlp_layers(params)
    b = float(b_std or 0.0)
    hs, pres, scales = [], [], []
    h = X
    for l, layer in enumerate(layers):
        K = layer["kernel"]
        s = W_std / math.sqrt(K.shape[0])
        pre = s * (h @ K) + (b * layer["bias"] if "bias" in layer else 0.0)
        hs.append(h)
        pres.append(pre)
        scales.append(s)
        h = jax.nn.relu(pre) if l < len(layers) - 1 else pre
    H = 0.0
    delta = jnp.ones((X.shape[0], 1), X.dtype)
    for l in reversed(range(len(layers))):
        layer = layers[l]
        G = scales[l] ** 2 * (hs[l] @ hs[l].T)
        if "bias" in layer:
            G = G + b * b
        H = H + G * (delta @ delta.T)
        if l > 0:
            delta = (delta @ (scales[l] * layer["kernel"]).T) * (pres[l - 1] > 0).astype(X.dtype)
    return H


def mlp_fast_gram(W_std: float, b_std: float | None):
    """``fast_gram(params, consts, X)`` for a ``models.ntk_mlp`` model (for ``Model.fast_gram``)."""

    def fast_gram(params, consts, X):
        return mlp_gram(params, X, W_std, b_std)

    return fast_gram


def gram(model: Model, params, consts, X, chunk: int = 256) -> np.ndarray:
    """H for ``model`` at ``params``: its exact fast path when it has one, else ``ntk_gram``.

    A model with k = ``model.outputs`` > 1 outputs: the full (n k x n k) output Gram
    H_(ib),(jc) = <grad f_b(x_i), grad f_c(x_j)>, row i k + b (``models.scalarized`` over
    ``models.augment(X, k)``); ``trace_outputs`` gives its shared (n x n) form."""
    if model.outputs > 1:
        return gram(_scalar(model), params, consts, augment(jnp.asarray(X), model.outputs), chunk)
    if model.fast_gram is not None:
        return np.asarray(_jit_fast(model.fast_gram)(params, consts, X), np.float64)
    return ntk_gram(model.apply, params, consts, X, chunk)


def cross_gram(model: Model, params, consts, Xa, Xb, chunk: int = 256, memory_gb: float = 2.0) -> np.ndarray:
    """The cross kernel H(Xa, Xb)_ij = <d f(a_i)/d theta, d f(b_j)/d theta> (na x nb, float64) at
    ``params``, e.g. held-out points against the training points (K_test,train = c H(X_test, X)).

    A model with an exact fast path: the off-diagonal block of its closed form on [Xb; Xa]
    (``gram``). Otherwise per-example Jacobian blocks of ``chunk`` inputs (``_jacobian_block``)
    contracted leaf by leaf (``_contract``; in float64 when x64 is enabled, else in the parameters'
    dtype); the Xb blocks are held while they fit ``memory_gb`` (else recomputed per Xa block), so
    at most one Xa block and the Xb blocks (chunk x P entries each) are in memory, never the full
    Jacobian.
    """
    Xa, Xb = jnp.asarray(Xa), jnp.asarray(Xb)
    if model.outputs > 1:  # (na k x nb k), rows i k + b as ``gram``
        k = model.outputs
        return cross_gram(_scalar(model), params, consts, augment(Xa, k), augment(Xb, k), chunk, memory_gb)
    na, nb = int(Xa.shape[0]), int(Xb.shape[0])
    if model.fast_gram is not None:
        return gram(model, params, consts, jnp.concatenate([Xb, Xa]))[nb:, :nb].copy()
    pdt = jnp.dtype(_params_dtype(params))
    acc = "float64" if _x64_enabled() else pdt.name
    c = max(1, min(int(chunk), max(na, nb)))

    def blocks(X):  # equal blocks (zero-padded: one compiled shape), and the real rows of each
        n = int(X.shape[0])
        pad = -n % c
        Xp = jnp.concatenate([X, jnp.zeros((pad,) + X.shape[1:], X.dtype)]) if pad else X
        return [(Xp[i : i + c], min(c, n - i)) for i in range(0, n, c)]

    P = int(sum(np.size(leaf) for leaf in jax.tree.leaves(params)))
    hold = len(blocks(Xb)) * c * P * pdt.itemsize <= memory_gb * 2**30
    jac = lambda B: _jacobian_block(model.apply, params, consts, B)  # noqa: E731
    held = [jac(B) for B, _ in blocks(Xb)] if hold else None
    out = np.zeros((na, nb))
    for i, (A, ra) in enumerate(blocks(Xa)):
        Ja = jac(A)
        for j, (B, rb) in enumerate(blocks(Xb)):
            Jb = held[j] if hold else jac(B)
            block = np.asarray(_contract(Ja, Jb, acc), np.float64)
            out[i * c : i * c + ra, j * c : j * c + rb] = block[:ra, :rb]
    return out


_FAST_JIT: dict = {}
_SCALAR: dict = {}


def _scalar(model: Model) -> Model:
    """``models.scalarized(model)``, one per model (so its compiled Jacobians are reused)."""
    if model not in _SCALAR:
        _SCALAR[model] = scalarized(model)
    return _SCALAR[model]


def trace_outputs(H: np.ndarray, k: int) -> np.ndarray:
    """The shared kernel of a full (n k x n k) output Gram (row i k + b): (1/k) sum_b H_(ib),(jb),
    shape (n x n): the form H_shared ⊗ I_k is exact when the outputs' Gram blocks are equal and the
    cross-output blocks vanish (the infinite-width NTK; neural-tangents' ``trace_axes``)."""
    H = np.asarray(H)
    na, nb = H.shape[0] // k, H.shape[1] // k
    return np.einsum("ibjb->ij", H.reshape(na, k, nb, k)) / k


def _jit_fast(fn):
    if fn not in _FAST_JIT:
        _FAST_JIT[fn] = jax.jit(fn)
    return _FAST_JIT[fn]


def spectrum(H: np.ndarray) -> dict:
    """lambda_min, lambda_max and condition number kappa of a symmetric PSD matrix."""
    lam = np.linalg.eigvalsh(np.asarray(H, np.float64))
    lo, hi = float(lam[0]), float(lam[-1])
    return {"lambda_min": lo, "lambda_max": hi, "kappa": hi / lo if lo > 0 else float("inf")}


def kernel_drift(H: np.ndarray, H0: np.ndarray) -> float:
    """||H - H0||_F / ||H0||_F."""
    return float(np.linalg.norm(H - H0) / np.linalg.norm(H0))


# --------------------------------------------------------------------------- infinite width
def _relu_expectations(S: np.ndarray, d1: np.ndarray, d2: np.ndarray):
    """For (u, v) ~ N(0, [[q1, S], [S, q2]]): E[relu(u) relu(v)] and E[relu'(u) relu'(v)]
    (arc-cosine kernels of degree 1 and 0; Cho & Saul 2009):
    sqrt(q1 q2) (sin t + (pi - t) cos t) / (2 pi) and (pi - t) / (2 pi), cos t = S / sqrt(q1 q2)."""
    norm = np.sqrt(np.outer(d1, d2))
    safe = np.where(norm > 0, norm, 1.0)
    cos = np.clip(np.where(norm > 0, S / safe, 0.0), -1.0, 1.0)
    t = np.arccos(cos)
    return norm * (np.sin(t) + (np.pi - t) * cos) / (2 * np.pi), (np.pi - t) / (2 * np.pi)


def mlp_kernels(X1, X2=None, depth: int = 1, W_std: float = 1.0, b_std: float | None = None):
    """Infinite-width (NNGP, NTK) of a ReLU MLP in NTK parameterisation, float64.

    The network is neural-tangents' ``stax.serial([Dense(w, W_std, b_std), Relu()] * depth,
    Dense(1, W_std, b_std))``: z_{l+1} = W_std / sqrt(fan_in) h_l W + b_std b, W, b ~ N(0, 1)
    (``models.ntk_mlp``). Recursion (Jacot et al. 2018; Lee et al. 2019):
    Sigma_1 = W_std^2 x.x' / d + b_std^2, Theta_1 = Sigma_1, and per hidden layer
    Sigma_{l+1} = W_std^2 E[relu relu](Sigma_l) + b_std^2,
    Theta_{l+1} = Sigma_{l+1} + W_std^2 E[relu' relu'](Sigma_l) Theta_l.
    Returns (Sigma_{depth+1}, Theta_{depth+1}), each n1 x n2 (X2=None means X1).

    The paper model's H∞ (``models.paper_hinf``: only the first layer trained, w ~ N(0, I)) is
    the first-layer part of the depth-1 NTK rescaled by d: H∞ = d (Theta - Sigma) at W_std = 1,
    b_std = 0 (Theta - Sigma is the gradient wrt the first layer's weights, whose NTK scaling
    1/sqrt(d) the paper model does not have).

    Checked against neural-tangents 0.6.5 (``tests/data/nt_reference.npz``, made by
    ``tools/make_nt_reference.py``): agreement to 1e-10 relative on generic inputs; for
    (numerically) parallel inputs arccos near 1 turns round-off of 1e-16 into ~1e-8 in either
    library. With X2 = None the diagonal is exact (cos = 1 is not recomputed).
    """
    b2 = 0.0 if b_std is None else float(b_std) ** 2
    w2 = float(W_std) ** 2
    X1 = np.asarray(X1, np.float64)
    X2 = X1 if X2 is None else np.asarray(X2, np.float64)
    d = X1.shape[1]
    S = w2 * (X1 @ X2.T) / d + b2
    q1 = w2 * np.sum(X1 * X1, axis=1) / d + b2
    q2 = w2 * np.sum(X2 * X2, axis=1) / d + b2
    same = X2 is X1
    if same:  # the diagonal is exactly q (cos = 1): arccos near 1 would turn 1e-16 into 1e-8
        np.fill_diagonal(S, q1)
    T = S.copy()
    for _ in range(depth):
        E, Ed = _relu_expectations(S, q1, q2)
        S = w2 * E + b2
        T = S + w2 * Ed * T
        q1 = w2 * q1 / 2 + b2  # E[relu(u)^2] = q / 2
        q2 = q1 if same else w2 * q2 / 2 + b2
        if same:
            np.fill_diagonal(S, q1)
    return S, T


def paper_kernels(X1, X2=None, init_std: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Infinite-width (NNGP, NTK) of the paper model (``models.paper_apply``), float64, n1 x n2:
    f(x) = m^{-1/2} sum_r a_r relu(w_r . x), w_r ~ N(0, init_std^2 I_d), a_r = +-1 (E a_r^2 = 1), no
    biases, NTK parametrisation (the 1/sqrt(m) readout), one output (k outputs: the same kernels
    times I_k, a_r per output).

    NNGP (covariance of f at initialisation, the same at every width):
    K(x, x') = E[relu(w.x) relu(w.x')] = init_std^2 |x||x'| (sin t + (pi - t) cos t) / (2 pi), the
    arc-cosine kernel of degree 1 (Cho & Saul 2009), cos t = x.x' / (|x||x'|).
    NTK with only the first layer W trained (the paper model's ``Model``): x.x' (pi - t) / (2 pi), the
    degree-0 kernel, independent of init_std (= ``models.paper_hinf``). Training only the readout a
    instead gives the NNGP as the NTK (an ensemble's ``get="nngp"``)."""
    X1 = np.asarray(X1, np.float64)
    X2 = X1 if X2 is None else np.asarray(X2, np.float64)
    s2 = float(init_std) ** 2
    G = X1 @ X2.T
    q1 = s2 * np.sum(X1 * X1, 1)
    E, Ed = _relu_expectations(s2 * G, q1, s2 * np.sum(X2 * X2, 1))
    if X2 is X1:  # the diagonal is exact (t = 0): arccos near 1 would turn 1e-16 into 1e-8
        np.fill_diagonal(E, q1 / 2)
        np.fill_diagonal(Ed, 0.5)
    return E, G * Ed
