"""Heavy ball: loss after a fixed number of steps vs width, kernel drift and deviation from the
kernel-regime prediction vs width (log-log, with the m^(-1/2) reference slope).

    python experiments/hb_width.py [--quick] [--seed 0] --out DIR

HB with beta in {0, 0.6, 0.9} (the released notebook's width sweep: m = 2000 ... 8000, 200 epochs,
lr 5e-5), released-code model and paper model, averaged over initialisation seeds.
"""

import sys

import _common as C
import _width


def main(argv=None) -> int:
    _width.run("hb", C.parse_args(__doc__.split("\n")[0], argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
