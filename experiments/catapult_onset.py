"""The catapult's onset at larger widths than ``catapult --quick`` reaches, for GD, HB (beta = 0.9)
and NAG-SC (beta = 0.9): the sharpness drop 1 - lambda_max(K)_end / lambda_0 and the loss spike
max_k L_k / L_0 just below and just above the predicted onset (eta / eta_crit = 0.5, 0.96, 1.04),
network only, 200 steps, seed 0, m = 256, 1024, 4096. The same model, data, methods and trainer as
``catapult.py`` (imported from it); a catapult by its rule is a drop above 2 %. Not a study of
``run_all.py``: it prints one line per width (about 3 minutes of CPU in all).

    PYTHONPATH=. python experiments/catapult_onset.py
"""

import sys
import time

import _two_layer as T
import catapult as K
import numpy as np

METHODS = ("gd", "hb_0.9", "nag_sc_0.9")
RATIOS = (0.5, 0.96, 1.04)
WIDTHS = (256, 1024, 4096)
STEPS, EVERY = 200, 20


def main() -> int:
    for m in WIDTHS:
        t = time.perf_counter()
        pb = T.problem(K.ACT, m, [0])
        rows = [(label, r) for label in METHODS for r in RATIOS]
        eta = np.array([r * K.limit_of(label) for label, r in rows]) / pb.lam0[0]
        hyper = {
            "eta": eta,
            "beta": [K.METHODS[label][1] for label, _ in rows],
            "nesterov": [int(K.METHODS[label][0] == "nag") for label, _ in rows],
        }
        tr = T.trajectories(pb, K.make_tx, hyper, [0] * len(rows), [0] * len(rows), STEPS, EVERY)
        lam = tr.lam_max(pb.c)
        cells = [
            f"{label}@{r:g}: drop {100 * (1 - lam[j, -1] / pb.lam0[0]):.1f}% "
            f"spike {np.nanmax(tr.loss[j]) / tr.loss[j, 0]:.3g}{' DIV' if tr.diverged_at[j] >= 0 else ''}"
            for j, (label, r) in enumerate(rows)
        ]
        print(m, f"{time.perf_counter() - t:.0f}s", " ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
