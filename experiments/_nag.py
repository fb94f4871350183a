"""What the four NAG-C studies share: their two digits problems, Nesterov's r and the window of
NAG-C's power-law phase.

Problem A (``nag_exponents``, ``nag_gradient_norms``, and the tuned methods of ``nag_restart``): the
paper model on digits, n = ``SIZES[mode]["n"]``, width ``"width"``, float32, ``"steps"`` steps.
Problem B (``nag_crossover``, ``nag_restart``): a smaller digits problem in float64, n = ``"b_n"``,
width ``"b_width"``.
"""

from __future__ import annotations

import _common as C

SIZES = {
    "full": {"n": 600, "width": 3000, "steps": 3000, "b_n": 150, "b_width": 2048},
    "quick": {"n": 200, "width": 1024, "steps": 1000, "b_n": 60, "b_width": 1024},
}
ETA_FACTOR_A = 0.1  # problem A: eta = ETA_FACTOR_A / lambda_max(K)
R_B = 3.0  # Nesterov's r


def power_law_window(eta: float, lam_min: float, r: float, T: int) -> list[float]:
    """Steps [max(Bessel onset of the slowest mode, T/10), min(T, k*/10)] of a NAG-C run of T steps:
    after the slowest mode's Bessel envelope has set in (``_common.bessel_onset``) and well before the
    crossover k* = r / -log(1 - eta lam_min) to the linear tail (``_common.crossover_step``)."""
    onset = C.bessel_onset(eta, lam_min, r)
    ks = C.crossover_step(eta, lam_min, r)
    return [max(onset, 0.1 * T), min(float(T), 0.1 * ks) if ks else float(T)]
