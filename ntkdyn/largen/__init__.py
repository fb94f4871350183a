"""Kernel-regime predictions at large n without an eigendecomposition (issue 18 §1).

Everything acts on the dynamics kernel K = c H (n x n, symmetric PSD; numpy or jax, float64 or float32
storage) and the initial error e0 = u0 - y only through products K x, so a prediction costs O(n^2) per
product instead of the O(n^3) of ``theory.eigen``. Loss convention as in ``ntkdyn.theory``:
L = (c / 2) ||e||^2 (c from ``models.loss_scale``).

* **Kernels in tiles** (``gram_tiled`` with ``hinf_tile`` / ``empirical_tile``): the lower triangle of
  the Gram in square tiles, each computed in float64 and stored into one preallocated n x n array of
  the requested dtype (mirrored: the result is exactly symmetric). Peak memory: the result plus one
  tile and its temporaries. Storing float32 perturbs K by E with |E_ij| <= 2^-24 |K_ij|
  (``float32_storage_bound`` turns that into a bound on the predicted loss).
* **Extreme eigenvalues** (``extreme_eigenvalues``): Lanczos with full reorthogonalisation; Ritz values
  with explicitly computed residuals ||K y - theta y|| (an eigenvalue of K lies within that distance of
  theta) and the Kato-Temple bound r^2 / gap.
* **Discrete recurrences** (``discrete_matvec``, ``discrete_matvec_batch``): the method's state-space
  recurrence X_k = T_k X_{k-1} + u_k (K e_{k-1}) of ``ntkdyn.optimizers`` in the output space, one
  product with K per step; exact (no truncation), round-off only.
* **Recurrences in the Krylov space** (``discrete_lanczos``): e_k = p_k(K) e0 with the method's
  recurrence polynomial evaluated on the Ritz values (exact once m > k; a-posteriori estimate before).
  A ``KrylovBasis`` of (K, e0) is shared by every recurrence and ODE solution of a run, so all
  optimizers' faces together cost max(m) products with K.
* **ODE solutions** (``ode_lanczos``, ``lanczos_function``): e(t) = f_t(K) e0 for the limiting ODEs
  (exp(-tK) e0, the damped oscillator, the Bessel solution of NAG-C), f_t(K) e0 ~= ||e0|| V_m f_t(T_m) e_1
  on the Krylov space of (K, e0), with m chosen adaptively until the a-posteriori estimate
  ||e_m(t) - e_{m+d}(t)|| <= rtol ||e_{m+d}(t)|| + atol ||e0|| holds at every time. The
  high-resolution ODEs (``odes.HighResODE``) are matrix functions too and go the same way.
* Both give the squared gradient norm c e^T K e and, with the cross kernel K_x = c H(X_test, X), the
  held-out errors (the recurrence through the parameters' coefficients, W_k = T_k W_{k-1} + u_k e_{k-1};
  the ODE through g_t(K) = (f_t(K) - I) K^+ in the same Krylov space), without K's pseudo-inverse.
* **Regimes** (``regime_from_extremes``): the asymptotic regime, rate, horizon and stability of a
  fixed-step method from lambda_min and lambda_max only.

Every prediction returns a ``LargeNPrediction`` (frozen) that records how it was made.

Modules: ``_types`` (results, checks, ``matvec``: float32 K in float32 tiles, its error
``product_error_coefficient``), ``kernels`` (tiles, float32 storage bound), ``krylov``
(Lanczos, extreme eigenvalues, matrix functions), ``recurrence`` (discrete recurrences, regimes from the
extreme eigenvalues). Every public name is importable from ``ntkdyn.largen``.
"""

from ntkdyn.largen._types import (
    METHODS,
    PRODUCT_COLS,
    STORAGE_DTYPES,
    U32,
    ExtremeEigenvalues,
    KrylovAction,
    LargeNPrediction,
    Method,
    Tile,
    matvec,
    product_error_coefficient,
)
from ntkdyn.largen.kernels import (
    drift_tiled,
    empirical_tile,
    float32_storage_bound,
    gram_tiled,
    hinf_tile,
    mlp_hinf_tile,
    spectral_norm_bound,
)
from ntkdyn.largen.krylov import (
    KrylovBasis,
    discrete_lanczos,
    extreme_eigenvalues,
    lanczos_function,
    ode_lanczos,
)
from ntkdyn.largen.recurrence import discrete_matvec, discrete_matvec_batch, regime_from_extremes

__all__ = [
    "ExtremeEigenvalues",
    "KrylovAction",
    "KrylovBasis",
    "LargeNPrediction",
    "METHODS",
    "Method",
    "PRODUCT_COLS",
    "STORAGE_DTYPES",
    "Tile",
    "U32",
    "discrete_lanczos",
    "discrete_matvec",
    "discrete_matvec_batch",
    "drift_tiled",
    "empirical_tile",
    "extreme_eigenvalues",
    "float32_storage_bound",
    "gram_tiled",
    "hinf_tile",
    "lanczos_function",
    "matvec",
    "mlp_hinf_tile",
    "ode_lanczos",
    "product_error_coefficient",
    "regime_from_extremes",
    "spectral_norm_bound",
]
