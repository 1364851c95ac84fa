"""``ddtool select``: options -> :class:`ddtoolbox.selection.SelectSettings` -> a coreset set."""

from __future__ import annotations

from ... import hookimpl
from ...selection import SelectSettings
from ..parsing import add_plugin_option, add_settings


def setup(p, pm) -> None:
    add_plugin_option(p, hidden=True)
    add_settings(p, SelectSettings)


def run(args, pm) -> None:
    from ...selection import select_coreset

    select_coreset(SelectSettings.from_namespace(args), report=print)


@hookimpl
def register_commands(register):
    register("select", setup=setup, run=run,
             help="choose IPC real images per class (random, herding, k-center, forgetting): a coreset baseline",
             description="Choose IPC real training images per class with a coreset rule and write them as a set "
                         "that 'ddtool eval', 'report' and 'bench' take like a distilled synthetic.pt. herding and "
                         "kcenter rank images by a trained network's penultimate features (--buffer or --network); "
                         "forgetting trains a network and keeps the most forgotten images. See docs/coresets.md.")
