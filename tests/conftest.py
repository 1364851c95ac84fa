"""Fixtures come from ddtoolbox.testing (a pytest plugin installed with ddtoolbox)."""
