"""Matchers: the lifecycle (:mod:`.base`) and trajectory matching (:mod:`.trajectory`).

Each concrete matcher is registered through the ``register_matchers`` hook; MTT is the built-in
one (:mod:`ddtoolbox.builtin.mtt`).
"""

from .base import Matcher, MatcherContext
from .trajectory import TrajectoryMatcher

__all__ = ["Matcher", "MatcherContext", "TrajectoryMatcher"]
