"""Setup: a validated config -> data, model and parameters, the initial error, the kernels (H0,
H∞) and the eigenpairs of K = c H the predictions use, and the held-out set where there is one.
No training and no file output here.

Two solvers (theory.solver; ``auto``: krylov when n > ``config.schema.KRYLOV_AUTO_N`` = 4096):
``eigen`` decomposes K (``theory.eigen``: lam, V, coef = V^T e0); ``krylov`` never does: K = c H is
built in tiles (``largen.gram_tiled``; stored float32 when n > ``FLOAT32_STORAGE_N``, with the bound
on the error that adds), lambda_min and lambda_max come from Lanczos (``largen.extreme_eigenvalues``)
and the faces predict by products with K (``Setup.krylov``, ``KrylovSetup``).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ntkdyn import checks, largen, models, ntk, theory
from ntkdyn import data as data_mod
from ntkdyn.config import Config, ConfigError
from ntkdyn.config.schema import KRYLOV_AUTO_N, resolve_solver

# Krylov path: K is stored in float32 above this many points (n^2 * 4 bytes instead of 8: 4.3 GB
# instead of 8.6 GB at n = 32,768); each entry then carries a relative rounding error <= 2^-24.
FLOAT32_STORAGE_N = 8192
EXTREMES_MAX_ITER = 300  # Lanczos steps for lambda_min / lambda_max (largen.extreme_eigenvalues)
# ... above KRYLOV_AUTO_N points: a product with K (n^2 entries read) then costs about one training step
# of the paper model at width 1024 (measured at n = 8192: 300 steps took 0.9x the three optimizers'
# training), so the extremes get fewer: lambda_max converges in ~20-40 steps; lambda_min of a dense
# low end does not converge in either budget and stays an upper bound (flagged: extremes_converged).
EXTREMES_MAX_ITER_LARGE = 60


def extremes_max_iter(n: int) -> int:
    """Lanczos steps of the extremes for n points (``EXTREMES_MAX_ITER``, ``EXTREMES_MAX_ITER_LARGE``
    above ``config.schema.KRYLOV_AUTO_N``)."""
    return EXTREMES_MAX_ITER if n <= KRYLOV_AUTO_N else EXTREMES_MAX_ITER_LARGE


ODE_MAX_ITER = 800  # Krylov dimension cap of the ODE solutions (largen.ode_lanczos)
ODE_RTOL = 1e-10  # relative tolerance of the ODE solutions' a-posteriori estimate (largen.ode_lanczos)


@dataclasses.dataclass(frozen=True)
class KrylovSetup:
    """What the Krylov path (theory.solver krylov) predicts from, in place of K's eigenpairs.

    ``K``: c H (H0 or Hinf per theory.kernel), n x n in ``storage`` (float64 or float32; the same array
    as ``Setup.H0`` / ``Setup.Hinf`` when c = 1); ``storage_error_bound``: a bound on ||E||_2 of that
    storage and of the products with it, K_stored = K + E (float32: |E_ij| <= 2^-24 |K_ij|) and each
    product fl(K_stored x) = (K_stored + F) x with |F| <= rho |K_stored| (``largen.matvec``'s float32
    tiles, rho = ``largen.product_error_coefficient(n)`` ~ 257 * 2^-24), so the K every product acts
    with is within (2^-24 + rho (1 + 2^-24)) ||K||_F of K in the 2-norm; float64: 0); ``extremes``:
    lambda_min / lambda_max by Lanczos with their residuals; ``K_cross``: c H(X_test, X)
    with a held-out set, else None. ``basis(e0)``: the run's one ``largen.KrylovBasis`` of (K, e0),
    made on first use and shared by every Krylov face of every optimizer (capacity ``ODE_MAX_ITER``)."""

    K: np.ndarray
    storage: str
    storage_error_bound: float
    extremes: largen.ExtremeEigenvalues
    K_cross: np.ndarray | None = None
    _bases: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def basis(self, e0: np.ndarray) -> largen.KrylovBasis:
        b = self._bases.get("e0")
        if b is None or b.e0.shape != np.shape(e0) or not np.array_equal(b.e0, e0):
            b = self._bases["e0"] = largen.KrylovBasis(self.K, e0, capacity=ODE_MAX_ITER)
        return b

    @property
    def lambda_min(self) -> float:
        return self.extremes.lambda_min

    @property
    def lambda_max(self) -> float:
        return self.extremes.lambda_max


@dataclasses.dataclass
class Setup:
    """Everything shared by the optimizers of one run."""

    X: np.ndarray
    y: np.ndarray
    model: models.Model
    params: Any
    consts: Any
    c: float  # loss scale: L = (c/2)||e||^2, K = c H
    e0: np.ndarray
    H0: np.ndarray
    Hinf: np.ndarray | None
    # eigen: the eigenvalues of K = c H_pred (ascending), eigenvectors V and coef = V^T e0.
    # krylov: lam = (lambda_min, lambda_max) by Lanczos, V None, coef = (0, 0): the least-squares
    # floor L* (e0's part in K's null space) is not resolved without the eigenbasis and is taken as 0,
    # exact when K is nonsingular (lambda_min > n eps lambda_max; the faces check this).
    lam: np.ndarray
    V: np.ndarray | None
    coef: np.ndarray
    times: dict[str, float]
    # held-out set (data.test or test_data=), None without one
    X_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    e0_test: np.ndarray | None = None  # f(X_test; theta_0) - y_test
    H_test: np.ndarray | None = None  # H(X_test, X) of theory.kernel (H0: empirical at theta_0, or Hinf)
    c_test: float | None = None  # loss scale on the held-out set (models.loss_scale(loss, n_test))
    test_map: np.ndarray | None = None  # theory.held_out_map: K_x K^+ in K's eigenbasis (eigen only)
    solver: str = "eigen"  # the solver resolved from theory.solver: eigen | krylov
    krylov: KrylovSetup | None = None  # krylov only
    # k = model.outputs (docs/outputs.md). k > 1: y is (n, k); e0, e0_test, coef and the modes are the
    # row-major flattening (index i k + b), lam and V those of the (n k x n k) K = c H_pred, H0 the full
    # output Gram (n k x n k), Hinf the shared (n x n) kernel. H_pred: the raw kernel the predictions
    # use in ntkdyn.predict's layout: shared (n x n; traced, K = c H_pred ⊗ I_k) or full (n k x n k);
    # H_test likewise (n_test x n or n_test k x n k).
    outputs: int = 1
    H_pred: np.ndarray | None = None

    @property
    def K(self) -> np.ndarray:
        """K = c H: eigen: V diag(lam) V^T; krylov: the stored array (float32 where stored so)."""
        if self.krylov is not None:
            return self.krylov.K
        assert self.V is not None  # the eigen path
        return (self.V * self.lam) @ self.V.T

    @property
    def no_eigenbasis(self) -> str | None:
        """None on the eigen path; on the Krylov path the reason a face that needs K's eigenbasis
        (and has no Krylov form) does not apply, for that face's ``applies`` to return."""
        if self.solver != "krylov":
            return None
        return (
            f"needs K's eigenbasis: theory.solver resolved to krylov (n = {self.X.shape[0]}), which "
            "predicts by products with K only; set theory.solver: eigen to compute it"
        )


def jax_dtype(cfg: Config):
    return jnp.float64 if cfg.dtype == "float64" else jnp.float32


def load_data(cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of a validated config (``config.validate`` fills data.n and data.normalize). npz: all
    points unless data.n is smaller (then a random subset drawn with the run's seed); mnist: the
    first data.n images (the released notebook's preprocessing, ``data.mnist``).

    Args:
        cfg: a validated ``Config`` (its ``data`` section and ``seed``).
    Returns:
        X (n, d) and y (n,), float64 numpy arrays.
    Raises:
        ValueError: a data file that does not hold data.n points or cannot be read.
    """
    return data_mod.load(cfg)


def load_test_data(cfg: Config) -> tuple[np.ndarray, np.ndarray] | None:
    """(X_test, y_test) of a validated config's ``data.test``, or None without one: sphere: new
    points of the same distribution and target function (``data.sphere_test``); digits, npz, mnist:
    the points after the data.n training ones, or those of ``data.test.path`` (``data.digits_test``,
    ``npz_test``, ``mnist_test``). Disjoint from the training points; normalised as they are.

    Args:
        cfg: a validated ``Config``.
    Returns:
        X_test (n_test, d) and y_test (n_test,) float64 numpy arrays, or None.
    Raises:
        ValueError: a data file that does not hold the points asked for.
    """
    return data_mod.load_held_out(cfg)


def kernel_rtol(cfg: Config, n: int) -> float:
    """rtol of K's numerical null space (``theory.null_modes``): n eps of the dtype K was computed in."""
    return n * float(np.finfo(cfg.dtype if cfg.theory.kernel == "H0" else "float64").eps)


def build_model(cfg: Config, d: int):
    """(Model, params, consts) initialised from ``cfg.seed`` (or ``model.init_params``)."""
    m = cfg.model
    dtype = jax_dtype(cfg)
    key = jax.random.PRNGKey(cfg.seed)
    k = m.outputs or 1  # config.outputs: k outputs (one-hot targets)
    # validate fills width, depth, W_std and b_std (MODEL_DEFAULTS) for the models they apply to
    if m.name == "paper":
        assert m.width is not None
        model = models.PAPER if k == 1 else dataclasses.replace(models.PAPER, outputs=k)
        params, consts = models.paper_init(key, d, m.width, m.init_std or 1.0, dtype, k)
    elif m.name == "released":
        assert m.width is not None
        model = models.RELEASED
        params, consts = models.released_init(key, d, m.width, m.init_std, dtype, m.init or "notebook")
    elif m.name == "mlp":
        width, depth, W_std, b_std = m.width, m.depth, m.W_std, m.b_std
        assert width is not None and depth is not None and W_std is not None and b_std is not None
        module = models.ntk_mlp(key, d, width, depth, W_std, b_std, dtype, k)
        model, params, consts = models.from_flax(module, "half_sum", "mlp", k)
        model = dataclasses.replace(
            model,
            hinf=lambda X: ntk.mlp_kernels(X, None, depth, W_std, b_std)[1],
            # the closed form is for one output; k outputs: the Jacobian path of ntk.gram
            fast_gram=ntk.mlp_fast_gram(W_std, b_std) if k == 1 else None,
        )
    else:
        assert m.module is not None  # validate: required for model.name flax
        module = models.load_factory(m.module)(key, d, **(m.kwargs or {}))
        model, params, consts = models.from_flax(module, "half_sum", "flax", k)
    if m.loss is not None:
        model = dataclasses.replace(model, loss=m.loss)
    if m.init_params:
        params, consts = models.load_params(m.init_params, params, consts)
    return model, params, consts


def prepare(
    cfg: Config,
    data: tuple[np.ndarray, np.ndarray] | None = None,
    built=None,
    test: tuple[np.ndarray, np.ndarray] | None = None,
) -> Setup:
    """Data, model, initial error and kernels. ``data`` and ``built`` (from ``load_data`` and
    ``build_model``) may be given when the caller has already loaded them to check the input.

    Args:
        cfg: a validated ``Config``; data: (X, y) or None (``load_data(cfg)``); built: (Model,
            params, consts) or None (``build_model``); test: a held-out set (X_test, y_test) or
            None (``load_test_data(cfg)``: data.test's points, or none).
    Returns:
        ``Setup``: X, y, model, params, consts, loss scale c, e0 = f(X; theta_0) - y, H0, Hinf, the
        ascending eigenpairs (lam, V) of K = c H (H0 or Hinf per theory.kernel), coef = V^T e0, times;
        on the Krylov path (theory.solver, module docstring) instead lam = (lambda_min, lambda_max),
        V None and ``krylov`` (K stored, its extremes; Hinf only with theory.kernel Hinf);
        with a held-out set also X_test, y_test, e0_test, the cross kernel H_test = H(X_test, X) of
        the same source, c_test and test_map = K_x K^+ (``theory.held_out_map``).

    Float64 (the theory's kernels and eigenvectors) is switched on inside this call only
    (``jax.enable_x64``); the model and data are built in the config's ``dtype``.

    Raises:
        ValueError: a held-out set whose points do not have the training points' dimension.
    """
    with jax.enable_x64(True):
        return _prepare(cfg, data, built, test)


def _prepare(cfg: Config, data, built, test) -> Setup:
    times = {}
    t = time.perf_counter()
    X, y = data if data is not None else load_data(cfg)
    test = test if test is not None else load_test_data(cfg)
    times["data"] = time.perf_counter() - t
    check_solver(cfg, X.shape[0])
    t = time.perf_counter()
    checks.check_memory(cfg, 1, X, built[1] if built is not None else None)
    model, params, consts = built if built is not None else build_model(cfg, X.shape[1])
    X_test, y_test = test if test is not None else (None, None)
    checks.check_inputs(cfg, X, y, X_test, y_test, (model, params, consts))
    dtype = jax_dtype(cfg)
    Xj, yj = jnp.asarray(X, dtype), jnp.asarray(y, dtype)
    e0 = np.asarray(model.apply(params, consts, Xj) - yj, np.float64)
    times["model"] = time.perf_counter() - t
    t = time.perf_counter()
    c = models.loss_scale(model.loss, X.shape[0])
    if check_solver(cfg, X.shape[0]) == "krylov":
        if model.outputs > 1 or not models.is_squared(model.loss):
            raise ConfigError(
                f"theory.solver: resolves to krylov for n = {X.shape[0]} (auto: krylov when n > "
                f"{KRYLOV_AUTO_N}), which takes one output and a squared loss; set theory.solver: eigen"
            )
        setup = _krylov_setup(cfg, X, y, (model, params, consts), Xj, c, e0, times)
        return setup if test is None else with_held_out(cfg, setup, *test)
    H0 = ntk.gram(model, params, consts, Xj)
    Hinf = model.hinf(X) if model.hinf is not None else None
    H = H0
    if cfg.theory.kernel == "Hinf":
        assert Hinf is not None  # validate: Hinf for models with an H∞ only
        H = Hinf
    k = model.outputs
    if k > 1:
        H = output_kernel(cfg, H0, Hinf, k)
        lam, V = output_eigen(c * H, k, X.shape[0])
        e0 = e0.reshape(-1)
    else:
        lam, V = theory.eigen(c * H)
    times["kernels"] = time.perf_counter() - t
    setup = Setup(X, y, model, params, consts, c, e0, H0, Hinf, lam, V, V.T @ e0, times, outputs=k, H_pred=H)
    return setup if test is None else with_held_out(cfg, setup, *test)


def output_kernel(cfg: Config, H0: np.ndarray, Hinf: np.ndarray | None, k: int) -> np.ndarray:
    """The raw kernel of a k-output run in ``ntkdyn.predict``'s layout (theory.kernel_outputs):
    traced, the shared (n x n) H∞ or trace of H0 over the outputs (``ntk.trace_outputs``); full, H0
    itself (n k x n k)."""
    if cfg.theory.kernel_outputs == "full":
        return H0
    if cfg.theory.kernel == "Hinf":
        assert Hinf is not None  # validate: Hinf for models with an H∞ only
        return np.asarray(Hinf, np.float64)
    return ntk.trace_outputs(H0, k)


def output_eigen(K: np.ndarray, k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Ascending eigenpairs of the (n k x n k) dynamics kernel of a k-output run: K full, its own;
    K shared (n x n), those of K ⊗ I_k: each eigenvalue k times, eigenvectors V ⊗ I_k (column
    a k + b: mode a of K on output b), so coef = (V^T E0) flattened row-major."""
    if K.shape[0] == n * k:
        return theory.eigen(K)
    lam, V = theory.eigen(K)
    return np.repeat(lam, k), np.kron(V, np.eye(k))


def check_solver(cfg: Config, n: int) -> str:
    """The solver of ``cfg`` for n training points (``config.schema.resolve_solver``). Raises
    ConfigError before any compute where the Krylov path cannot serve the config: the control view
    (``control:``) reads K's eigenbasis."""
    solver = resolve_solver(cfg.theory.solver, n)
    if solver == "krylov" and getattr(cfg, "control", None) is not None:
        raise ConfigError(
            f"control: the control view needs K's eigenbasis, but theory.solver {cfg.theory.solver!r} "
            f"resolves to krylov for n = {n} (auto: krylov when n > {KRYLOV_AUTO_N}); set theory.solver: "
            "eigen or remove control"
        )
    return solver


def storage_dtype(n: int) -> str:
    """The dtype the Krylov path stores K in: float32 when n > ``FLOAT32_STORAGE_N``, else float64."""
    return "float32" if n > FLOAT32_STORAGE_N else "float64"


def hinf_tile(cfg: Config, model: models.Model, X: np.ndarray) -> largen.Tile | None:
    """Tiles of the model's H∞ (paper: ``largen.hinf_tile``; mlp: ``largen.mlp_hinf_tile``), None for
    a model whose H∞ has no tiled form."""
    m = cfg.model
    if model.hinf is None:
        return None
    if m.name == "paper":
        return largen.hinf_tile(X)
    if m.name == "mlp":
        assert m.depth is not None and m.W_std is not None and m.b_std is not None  # validate fills them
        return largen.mlp_hinf_tile(X, m.depth, m.W_std, m.b_std)
    return None


def _krylov_setup(cfg: Config, X, y, built, Xj, c: float, e0: np.ndarray, times: dict) -> Setup:
    """The Krylov path's setup (module docstring): H0 by tiles (empirical NTK at theta_0; kept for the
    kernel drift), H∞ by tiles only when theory.kernel is Hinf, K = c H in ``storage_dtype(n)``, the
    extreme eigenvalues by Lanczos started from e0 in the run's one ``largen.KrylovBasis`` of (K, e0)
    (kept in ``KrylovSetup``, so the faces reuse those products; a random start seeded by ``cfg.seed``
    where e0 = 0). Times: kernels (the Gram tiles) and eigen (Lanczos)."""
    model, params, consts = built
    n = X.shape[0]
    t = time.perf_counter()
    dtype = storage_dtype(n)
    H0 = largen.gram_tiled(largen.empirical_tile(model, params, consts, Xj), n, dtype=dtype)
    Hinf = None
    if cfg.theory.kernel == "Hinf":
        tile = hinf_tile(cfg, model, X)
        Hinf = largen.gram_tiled(tile, n, dtype=dtype) if tile is not None else _dense(model.hinf(X), dtype)
    H = H0
    if cfg.theory.kernel == "Hinf":
        assert Hinf is not None  # validate: Hinf for models with an H∞ only
        H = Hinf
    K = H if c == 1.0 else (c * H).astype(dtype, copy=False)
    # storage (|E| <= u|K|) plus every float32 product's backward error (|F| <= rho |K|, largen.matvec)
    rho = largen.product_error_coefficient(n)
    bound = (
        (largen.U32 + rho * (1 + largen.U32)) * largen.spectral_norm_bound(K) if dtype == "float32" else 0.0
    )
    times["kernels"] = time.perf_counter() - t
    t = time.perf_counter()
    # the extremes from the run's one Krylov basis of (K, e0): the faces reuse these products
    basis = largen.KrylovBasis(K, e0, capacity=ODE_MAX_ITER)
    ext = largen.extreme_eigenvalues(K, 1, 1, max_iter=extremes_max_iter(n), seed=cfg.seed, basis=basis)
    times["eigen"] = time.perf_counter() - t
    lam = np.array([ext.lambda_min, ext.lambda_max])
    kry = KrylovSetup(K, dtype, float(bound), ext)
    kry._bases["e0"] = basis
    return Setup(
        X,
        y,
        model,
        params,
        consts,
        c,
        e0,
        H0,
        Hinf,
        lam,
        None,
        np.zeros(2),
        times,
        solver="krylov",
        krylov=kry,
    )


def _dense(H: np.ndarray, dtype: str) -> np.ndarray:
    return np.asarray(H, np.float64).astype(dtype, copy=False)


def with_held_out(cfg: Config, setup: Setup, X_test: np.ndarray, y_test: np.ndarray) -> Setup:
    """``setup`` with its held-out set: e0_test = f(X_test; theta_0) - y_test (training dtype), the
    cross kernel H_test = H(X_test, X) of theory.kernel (H0: ``ntk.cross_gram`` at theta_0; Hinf: the
    off-diagonal block of the model's H∞ on [X; X_test]), c_test and test_map (``theory.held_out_map``
    over the modes of K above ``kernel_rtol``)."""
    t = time.perf_counter()
    X_test, y_test = np.asarray(X_test, np.float64), np.asarray(y_test, np.float64)
    n, d = setup.X.shape
    k = setup.outputs
    want = (X_test.shape[0],) if k == 1 else (X_test.shape[0], k)
    if X_test.ndim != 2 or X_test.shape[1] != d or y_test.shape != want:
        raise ValueError(
            f"test_data: expected X_test (n_test, {d}) and y_test {('n_test',) if k == 1 else ('n_test', k)} "
            f"to match the training X and y, got {X_test.shape} and {y_test.shape}"
        )
    dtype = jax_dtype(cfg)
    Xj = jnp.asarray(X_test, dtype)
    f0 = setup.model.apply(setup.params, setup.consts, Xj)
    e0_test = np.asarray(f0 - jnp.asarray(y_test, dtype), np.float64).reshape(-1)
    if cfg.theory.kernel == "Hinf":
        both = np.concatenate([setup.X, X_test])
        tile = hinf_tile(cfg, setup.model, both) if setup.krylov is not None else None
        if tile is not None:  # the cross block only: no (n + n_test)^2 array on the Krylov path
            H_test = tile(slice(n, both.shape[0]), slice(0, n))
        else:
            assert setup.model.hinf is not None  # validate: Hinf for models with an H∞ only
            H_test = setup.model.hinf(both)[n:, :n]
    else:
        H_test = ntk.cross_gram(setup.model, setup.params, setup.consts, Xj, jnp.asarray(setup.X, dtype))
        if k > 1 and cfg.theory.kernel_outputs == "traced":
            H_test = ntk.trace_outputs(H_test, k)
    c_test = models.loss_scale(setup.model.loss, X_test.shape[0])
    test_map, krylov = None, setup.krylov
    if krylov is not None:  # no K^+: the faces carry the cross kernel through their recurrences
        krylov = dataclasses.replace(krylov, K_cross=setup.c * np.asarray(H_test, np.float64))
    else:
        assert setup.V is not None  # the eigen path
        null = theory.null_modes(setup.lam, kernel_rtol(cfg, setup.lam.size))
        H_flat = H_test if k == 1 or H_test.shape[1] == n * k else np.kron(H_test, np.eye(k))
        test_map = theory.held_out_map(setup.c * H_flat, setup.lam, setup.V, null)
    times = {**setup.times, "held_out": time.perf_counter() - t}
    return dataclasses.replace(
        setup,
        X_test=X_test,
        y_test=y_test,
        e0_test=e0_test,
        H_test=H_test,
        c_test=c_test,
        test_map=test_map,
        krylov=krylov,
        times=times,
    )
