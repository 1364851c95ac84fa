"""``python -m ddtoolbox.cli``: the same as ``ddtool`` (what ``ddtool bench`` runs its cells with)."""

import sys

from . import main

sys.exit(main())
