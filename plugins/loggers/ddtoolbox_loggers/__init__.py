"""Loggers for ddtoolbox runs: TensorBoard (``--plugin tensorboard``) and W&B (``--plugin wandb``).

Two real-world examples of plugins built on the public run hooks only: ``on_run_start`` opens the
logger, ``on_iteration`` sends the iteration's ``metrics.json`` record (and, every N iterations, a
picture of the synthetic images), ``on_run_end`` sends the final images and closes it, also when
the run fails. Neither changes a result: they read the run, never write it, and any random numbers
the logging libraries draw are drawn from saved and restored generator states.
"""

__version__ = "0.1.0"
