"""NAG with vanishing damping, loss vs iteration on log-log axes (released notebook's second
figure), on digits.

    python experiments/nag_vs_epoch.py [--quick] [--seed 0] --out DIR

NAG-C with beta_k = (k-1)/(k+r-1), r in {2, 3, 6, 8} (the notebook's d), in torch form (momentum
set before each step, velocity from step 2, as the notebook runs it); the released notebook's
setting (its init, MSE, lr 1e-4, 5000 steps, digits n = 600, pixels / 16; see _epoch.py) and the
paper model at eta = 0.1 / lambda_max(K); verdicts over windows that start at
the Bessel-envelope onset of the slowest mode and end before the predicted crossover to the
linear tail. Why a window: "NAG-C is sublinear" holds for the eta -> 0 limit e'' + (r/t) e' + K e = 0
(loss ~ t^-r). At a fixed eta the discrete recurrence on a mode h = eta lam has |z|^2 -> 1 - h as
beta_k -> 1, so its loss envelope is ~ k^-r (1 - h)^k: a power law until the crossover
k* = r / -log(1 - eta lam_min) (``theory.nag_c_crossover_step``), linear after it.
"""

import sys

import _common as C
import _epoch


def main(argv=None) -> int:
    _epoch.run("nag", C.parse_args(__doc__.split("\n")[0], argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
