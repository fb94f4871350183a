"""NAG-C (r = 3): loss after a fixed number of steps vs width, averaged over 10 seeds (the released
notebook's NAG width sweep), with kernel drift and deviation from the kernel-regime prediction vs
width (log-log, with the m^(-1/2) reference slope).

    python experiments/nag_width.py [--quick] [--seed 0] --out DIR
"""

import sys

import _common as C
import _width


def main(argv=None) -> int:
    _width.run("nag", C.parse_args(__doc__.split("\n")[0], argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
