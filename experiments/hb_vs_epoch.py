"""Heavy ball, loss vs iteration on log-y axes (released notebook's first figure), on digits.

    python experiments/hb_vs_epoch.py [--quick] [--seed 0] --out DIR

HB with beta in {0.2, 0.5, 0.8}; the released notebook's setting (its init: first-layer bias
U(-1/sqrt d, 1/sqrt d); MSE; lr 1e-4; 5000 steps; digits n = 600, pixels / 16, digit target; see
_epoch.py) and the paper model at eta = 1 / lambda_max(K); kernel-regime recurrence and ODE
overlays; a rate table and computed verdicts in DIR/verdicts.json (see experiments/README.md).
"""

import sys

import _common as C
import _epoch


def main(argv=None) -> int:
    _epoch.run("hb", C.parse_args(__doc__.split("\n")[0], argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
