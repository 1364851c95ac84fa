"""What a plugin's own subcommand needs to behave like ddtool's: the common flags, honoured.

Every ddtool command takes ``--seed``, ``--device``, ``--threads``, ``--quiet`` and ``--data-root``.
A command a plugin adds with ``register_commands`` gets them in two lines::

    from ddtoolbox.command import add_common_options, common_options

    def setup(parser, manager):
        parser.add_argument("folder")
        add_common_options(parser)

    def run(args, manager):
        with common_options(args) as ctx:      # seeded, on ctx.device, with --threads threads
            ...

The plugin contract forbids importing :mod:`ddtoolbox.cli`, so this lives outside it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .config import CommonSettings
from .options import add_arguments
from .runtime import cpu_threads, resolve_device, seed_everything

__all__ = ["CommandContext", "add_common_options", "common_options"]

#: the common settings that only matter to commands spread over torchrun's processes
MULTI_PROCESS_ONLY = ("dist_backend", "dist_timeout")


@dataclass(frozen=True)
class CommandContext:
    """The common settings of one command, applied."""

    settings: CommonSettings      #: ``seed``, ``device``, ``data_root``, ``quiet``, ``threads``
    device: torch.device          #: ``--device`` resolved (``auto``: CUDA when available)
    generator: torch.Generator    #: a CPU generator seeded with ``--seed``, for the command's own draws
    progress: bool                #: show progress bars (``not --quiet``)


def add_common_options(parser) -> None:
    """Add ``--seed``, ``--device``, ``--data-root``, ``--quiet`` and ``--threads`` (group "common"),
    with ddtool's own help texts and checks."""
    add_arguments(parser, CommonSettings, skip=MULTI_PROCESS_ONLY)


@contextlib.contextmanager
def common_options(args):
    """Inside: every generator seeded with ``--seed``, torch on ``--threads`` threads, and a
    :class:`CommandContext` with the resolved device. A bad ``--device`` is one line and exit 2."""
    settings = CommonSettings.from_namespace(args)
    device = resolve_device(settings.device)
    with cpu_threads(settings.threads):
        generator = seed_everything(settings.seed)
        yield CommandContext(settings=settings, device=device, generator=generator, progress=not settings.quiet)
