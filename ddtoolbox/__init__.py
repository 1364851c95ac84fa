"""ddtoolbox: dataset distillation by trajectory matching, built from plugins.

The public surface, for plugin authors and Python users alike (see ``docs/plugins.md``)::

    from ddtoolbox import hookimpl, Run, Matcher, TrajectoryMatcher, MatcherContext
    from ddtoolbox import UsageError, warn
    from ddtoolbox import DistillConfig, BufferConfig, EvalSettings, distill, train_buffer, evaluate_synthetic
    from ddtoolbox import load_set, SyntheticSet

Every name is imported on first use, so ``import ddtoolbox`` stays cheap.
"""

import importlib

__version__ = "0.1.0"

#: ``hookimpl``, the marker for plugin hook implementations (``@hookimpl def on_iteration(run, record): ...``),
#: is made on first use too: ``import ddtoolbox`` imports nothing, so ``ddtool`` guards its start-up
#: against signals from its first moment (:mod:`ddtoolbox.__main__`)

_LAZY = {
    "Run": "ddtoolbox.distillation", "distill": "ddtoolbox.distillation",
    "Matcher": "ddtoolbox.matchers", "MatcherContext": "ddtoolbox.matchers",
    "TrajectoryMatcher": "ddtoolbox.matchers",
    "UsageError": "ddtoolbox.errors", "PluginError": "ddtoolbox.errors", "warn": "ddtoolbox.errors",
    "DistillConfig": "ddtoolbox.config", "BufferConfig": "ddtoolbox.config", "EvalSettings": "ddtoolbox.config",
    "train_buffer": "ddtoolbox.experts", "evaluate_synthetic": "ddtoolbox.evaluate",
    "load_set": "ddtoolbox.sets", "SyntheticSet": "ddtoolbox.sets",
}

__all__ = ["hookimpl", "__version__", *_LAZY]


def __getattr__(name):
    if name == "hookimpl":
        import pluggy

        globals()["hookimpl"] = pluggy.HookimplMarker("ddtoolbox")
        return globals()["hookimpl"]
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ddtoolbox' has no attribute {name!r}")
