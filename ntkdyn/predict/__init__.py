"""Kernel-regime predictions in neural-tangents' shape: a kernel, targets and hyperparameters in, a
prediction function of the step (discrete methods) or of the ODE time (limits) out.

Conventions (every function here):

* **Kernel.** ``k_train_train`` is the raw NTK H = J J^T of the network outputs (no loss scale, as in
  neural-tangents and ``ntkdyn.ntk``): either shared across the k outputs, shape (n, n) (the traced
  form H ⊗ I_k, exact for infinite-width kernels), or the full Gram over (point, output) pairs, shape
  (n k, n k) with row index i k + a, or neural-tangents' (n, n, k, k) layout (converted). The
  test-train kernel ``k_test_train`` is (n_test, n), (n_test k, n k) or (n_test, n, k, k) alike.
* **Targets.** ``y_train`` of shape (n, k), or (n,) for one output (then the predictions are (n,)).
* **Loss.** Squared: L = (c/2) ||f - y||_F^2 summed over all n k entries, c = ``loss_scale``
  (``models.loss_scale``: half_sum 1, mse 2/n, half_mse 1/n). Other losses: ``loss_scale`` times the
  sum over points of a per-point loss (``LOSSES``).
* **Learning rate.** ``eta`` is the step of gradient descent on the parameters, theta <- theta - eta
  grad L, which moves the outputs by f <- f - eta H grad_f L (exact for the linearised network); for
  squared losses the dynamics kernel is K = c H (``theory``).
* **Time.** Discrete predictors are called with ``step=`` (updates, integers). Limits are called
  with ``t=``, the ODE time of ``optimizers.LimitODE``: t = k eta (first order: gradient flow) and
  t = k sqrt(eta) (second order: heavy ball, NAG-C); ``predictor.time_step`` is the time of one update.
  The two are separate keyword-only arguments so that a step count is never read as a time.
* **diag_reg** is relative, as neural-tangents' default (``diag_reg_absolute_scale=False``): the
  training kernel becomes H + diag_reg * mean(diag H) I (mean over the diagonal of the 2-D kernel);
  the test-train kernel is unchanged. It is exactly the NTK of the network with one extra trainable
  parameter b_ia per training output, f_a(x_i) + sqrt(r) b_ia, b(0) = 0, r = diag_reg * mean(diag H)
  (tested that way: ``tests/test_predict.py``, ``tests/test_ensemble.py``).

neural-tangents' conventions (``predict`` of neural-tangents 0.6.5), and how they map here:

* ``gradient_descent_mse`` hard-codes L = 1/(2N) ||f - y||^2 with N = ``y_train.size`` (points x
  outputs, even for a shared kernel), so its ``learning_rate`` lr is ntkdyn's c N eta, and its time
  t_nt (steps, may be fractional) is ntkdyn's ODE time t = lr t_nt / (c N). The two coincide
  (t = t_nt, lr = 1, its default) only for c = 1/N, i.e. ``half_mse`` over all entries.
* ``gradient_descent(loss, ..., learning_rate=lr)`` takes the user's loss (no 1/N): eta = lr and
  t = lr t_nt. With ``momentum=m`` it integrates f'' + (1 - m)/sqrt(lr) f' + H grad L = 0 in time
  sqrt(lr) t_nt: the heavy-ball ODE here with eta = lr, beta = m, t = sqrt(lr) t_nt.
* ``diag_reg`` as above; neural-tangents' ``diag_reg_absolute_scale=True`` is ``diag_reg`` divided by
  mean(diag H) here.
"""

from ntkdyn.predict._core import LOSSES, Gaussian, LossName, Prediction, add_diag_reg
from ntkdyn.predict.ensemble import (
    EnsemblePredictor,
    Get,
    gradient_descent_mse_ensemble,
    gradient_flow_mse_ensemble,
)
from ntkdyn.predict.losses import LossFlowPredictor, RecurrencePredictor, gradient_descent, gradient_flow
from ntkdyn.predict.mse import (
    DiscretePredictor,
    FlowPredictor,
    gradient_descent_mse,
    gradient_flow_mse,
    heavy_ball_flow_mse,
    heavy_ball_mse,
    limit_ode_mse,
    linear_method_mse,
    nag_c_flow_mse,
    nesterov_mse,
)

__all__ = [
    "LOSSES",
    "DiscretePredictor",
    "EnsemblePredictor",
    "FlowPredictor",
    "Gaussian",
    "Get",
    "LossFlowPredictor",
    "LossName",
    "Prediction",
    "RecurrencePredictor",
    "add_diag_reg",
    "gradient_descent",
    "gradient_descent_mse",
    "gradient_descent_mse_ensemble",
    "gradient_flow",
    "gradient_flow_mse",
    "gradient_flow_mse_ensemble",
    "heavy_ball_flow_mse",
    "heavy_ball_mse",
    "limit_ode_mse",
    "linear_method_mse",
    "nag_c_flow_mse",
    "nesterov_mse",
]
