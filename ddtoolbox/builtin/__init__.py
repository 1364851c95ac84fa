"""The built-in plugins (the ``mtt`` matcher, the ``sgd`` trainer), installed by entry point like any other."""
