"""Reference values from neural-tangents 0.6.5's ``predict`` module, for ``tests/test_predict.py``.

Like ``tools/make_nt_reference.py`` (the kernels), this runs in a *separate*, pinned environment and
imports only numpy, jax and neural_tangents (not ntkdyn). Environment (Python 3.11; the install line
used to make the stored file):

    python3.11 -m venv /tmp/ntenv
    /tmp/ntenv/bin/pip install "jax==0.4.38" "jaxlib==0.4.38" "tensorflow-cpu==2.18.1" \\
        "tensorflow==2.18.1" "tf2jax==0.3.7" "neural-tangents==0.6.5"

(``tensorflow==2.18.1`` pinned beside ``tensorflow-cpu``, or pip pulls tensorflow 2.21.) Then, from the
repo root:

    /tmp/ntenv/bin/python tools/make_nt_predict_reference.py   # writes tests/data/nt_predict_reference.npz

What is stored (float64, jax x64 enabled); n = 6 training and 3 test points in d = 4, k = 3 outputs:

* ``x_train``, ``x_test``, ``y_train`` (n, k), ``fx_train_0``, ``fx_test_0`` (the initial outputs) and
  the analytic kernels of ``stax.serial(Dense(512, W_std, b_std), Relu(), Dense(k, W_std, b_std))``
  (``W_std``, ``b_std`` stored): ``nngp_tt``/``ntk_tt`` (train-train), ``nngp_xt``/``ntk_xt``
  (test-train), ``nngp_xx`` (test-test).
* ``gd_mse_*``: ``predict.gradient_descent_mse(ntk_tt, y_train, lr, diag_reg)`` (shared kernel,
  trace_axes=(-1,)) at times ``t_nt``: ``gd_mse_train``, ``gd_mse_test`` (len(t), n|n_test, k), for
  ``gd_mse_diag_reg`` (relative, nt's default) and learning rate ``gd_mse_lr``.
* ``full_*``: the same with a full (n, n, k, k) Gram ``full_k_tt`` (and ``full_k_xt``, a random PSD
  matrix over (point, output) pairs) and trace_axes=().
* ``ens_{nngp,ntk}_{reg}_{train,test}_{mean,cov}``: ``predict.gradient_descent_mse_ensemble(kernel_fn,
  x_train, y_train, lr, diag_reg)`` at times ``t_nt``, get = nngp | ntk, reg = 0 (diag_reg 0) | 1
  (``ens_diag_reg``); train moments (x_test=None) and test moments, compute_cov=True.
* ``mom_{train,test}``: ``predict.gradient_descent(loss, ntk_tt, y_train, lr, momentum)`` with
  loss = 0.5 * sum((f - y)^2), ``mom_lr``, ``mom_momentum``, at ``t_nt``.
* ``ce_{train,test}``: ``predict.gradient_descent(softmax cross-entropy summed over points, ntk_tt,
  y_onehot, lr)`` (no momentum), ``ce_y``, ``ce_lr``, at ``t_nt``.
* ``versions``: the library versions that made the file.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, os.pardir, "tests", "data", "nt_predict_reference.npz")
N, NT, D, K = 6, 3, 4, 3


def main() -> None:
    rng = np.random.default_rng(20261202)
    out: dict[str, np.ndarray] = {}
    x_train = rng.standard_normal((N, D))
    x_test = rng.standard_normal((NT, D))
    y_train = rng.standard_normal((N, K))
    fx_train_0 = 0.3 * rng.standard_normal((N, K))
    fx_test_0 = 0.3 * rng.standard_normal((NT, K))
    W_std, b_std = 1.3, 0.2
    _, _, kernel_fn = stax.serial(stax.Dense(512, W_std, b_std), stax.Relu(), stax.Dense(K, W_std, b_std))
    ktt = kernel_fn(x_train, None, ("nngp", "ntk"))
    kxt = kernel_fn(x_test, x_train, ("nngp", "ntk"))
    out.update(
        x_train=x_train,
        x_test=x_test,
        y_train=y_train,
        fx_train_0=fx_train_0,
        fx_test_0=fx_test_0,
        W_std=np.float64(W_std),
        b_std=np.float64(b_std),
        nngp_tt=np.asarray(ktt.nngp),
        ntk_tt=np.asarray(ktt.ntk),
        nngp_xt=np.asarray(kxt.nngp),
        ntk_xt=np.asarray(kxt.ntk),
        nngp_xx=np.asarray(kernel_fn(x_test, None, "nngp")),
    )
    t_nt = np.array([0.0, 0.7, 3.0, 25.0])
    out["t_nt"] = t_nt

    # gradient_descent_mse, shared kernel (trace_axes=(-1,)), with diag_reg
    lr, diag_reg = 0.9, 0.05
    fn = nt.predict.gradient_descent_mse(ktt.ntk, y_train, learning_rate=lr, diag_reg=diag_reg)
    tr, te = fn(t_nt, fx_train_0, fx_test_0, kxt.ntk)
    out.update(
        gd_mse_lr=np.float64(lr),
        gd_mse_diag_reg=np.float64(diag_reg),
        gd_mse_train=np.asarray(tr),
        gd_mse_test=np.asarray(te),
    )

    # full Gram over (point, output) pairs, trace_axes=()
    Phi = rng.standard_normal(((N + NT) * K, 40)) / np.sqrt(40)
    G = (Phi @ Phi.T).reshape(N + NT, K, N + NT, K).transpose(0, 2, 1, 3)
    k_tt, k_xt = G[:N, :N], G[N:, :N]
    fn = nt.predict.gradient_descent_mse(k_tt, y_train, learning_rate=lr, diag_reg=diag_reg, trace_axes=())
    tr, te = fn(t_nt, fx_train_0, fx_test_0, k_xt)
    out.update(full_k_tt=k_tt, full_k_xt=k_xt, full_train=np.asarray(tr), full_test=np.asarray(te))

    # gradient_descent_mse_ensemble, NNGP and NTK, mean and covariance, with and without diag_reg
    ens_reg = 0.1
    out["ens_diag_reg"] = np.float64(ens_reg)
    out["ens_lr"] = np.float64(lr)
    for tag, reg in (("0", 0.0), ("1", ens_reg)):
        fn = nt.predict.gradient_descent_mse_ensemble(
            kernel_fn, x_train, y_train, learning_rate=lr, diag_reg=reg
        )
        for where, xt in (("train", None), ("test", x_test)):
            res = fn(t_nt, xt, ("nngp", "ntk"), compute_cov=True)
            for get in ("nngp", "ntk"):
                g = getattr(res, get)
                out[f"ens_{get}_{tag}_{where}_mean"] = np.asarray(g.mean)
                out[f"ens_{get}_{tag}_{where}_cov"] = np.asarray(g.covariance)

    # gradient_descent with momentum (heavy-ball ODE), squared loss without normalisation
    mom_lr, momentum = 0.4, 0.8

    def sq(f, y):
        return 0.5 * jnp.sum((f - y) ** 2)

    fn = nt.predict.gradient_descent(sq, ktt.ntk, y_train, learning_rate=mom_lr, momentum=momentum)
    tr, te = fn(t_nt, fx_train_0, fx_test_0, kxt.ntk)
    out.update(
        mom_lr=np.float64(mom_lr),
        mom_momentum=np.float64(momentum),
        mom_train=np.asarray(tr),
        mom_test=np.asarray(te),
    )

    # gradient_descent with softmax cross-entropy (flow, no closed form)
    ce_y = np.eye(K)[rng.integers(0, K, N)]

    def ce(f, y):
        return jnp.sum(jax.nn.logsumexp(f, axis=-1) - jnp.sum(y * f, axis=-1))

    ce_lr = 1.5
    fn = nt.predict.gradient_descent(ce, ktt.ntk, ce_y, learning_rate=ce_lr)
    tr, te = fn(t_nt, fx_train_0, fx_test_0, kxt.ntk)
    out.update(ce_y=ce_y, ce_lr=np.float64(ce_lr), ce_train=np.asarray(tr), ce_test=np.asarray(te))

    import jaxlib

    out["versions"] = np.array(
        [
            f"neural-tangents {nt.__version__}",
            f"jax {jax.__version__}",
            f"jaxlib {jaxlib.__version__}",
            f"numpy {np.__version__}",
        ]
    )
    np.savez(OUT, **out)
    print(f"wrote {os.path.normpath(OUT)}: {len(out)} arrays")


if __name__ == "__main__":
    main()
