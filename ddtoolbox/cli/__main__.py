"""``python -m ddtoolbox.cli``: the same as ``ddtool`` (``python -m ddtoolbox`` also guards its start-up)."""

import sys

from . import main

sys.exit(main())
