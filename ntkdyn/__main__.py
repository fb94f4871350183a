"""``python -m ntkdyn CONFIG [...]``: the command line (``ntkdyn.run.main``)."""

import sys

from ntkdyn.run import main

sys.exit(main())
