"""Trajectory matchers. Each is registered through the ``register_matchers`` hook."""

from .base import Matcher

__all__ = ["Matcher"]
