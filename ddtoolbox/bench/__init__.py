"""Benchmark grids: run a datasets x IPCs x methods spec and render the results table (``ddtool bench``).

See :mod:`ddtoolbox.bench.spec` for the spec format, :mod:`.runner` for how cells are run and
resumed, and :mod:`.report` for the table and plot.
"""

from __future__ import annotations
