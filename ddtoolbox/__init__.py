"""ddtoolbox: dataset distillation by trajectory matching, built from plugins.

Plugin authors need only :data:`hookimpl`; see ``docs/plugins.md`` and ``ddtoolbox.hookspecs``.
"""

import pluggy

__version__ = "0.1.0"

#: Marker for plugin hook implementations: ``@hookimpl def on_iteration(run): ...``
hookimpl = pluggy.HookimplMarker("ddtoolbox")

__all__ = ["hookimpl", "__version__"]
