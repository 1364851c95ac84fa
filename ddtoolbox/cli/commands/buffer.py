"""``ddtool buffer``: options -> :class:`ddtoolbox.BufferConfig` -> :func:`ddtoolbox.train_buffer`."""

from __future__ import annotations

from ... import hookimpl
from ...config import BufferConfig
from ..parsing import add_plugin_option, add_preset_option, add_settings
from ...runtime import stops_resumably


def setup(p, pm) -> None:
    add_plugin_option(p, hidden=True)
    add_preset_option(p)
    add_settings(p, BufferConfig, pm, "buffer")


def run(args, pm) -> None:
    from ...experts import train_buffer
    from ...parallel import is_main

    config = BufferConfig.from_namespace(args)
    with stops_resumably(lambda name: f"{name}: buffer stopped; its finished experts and epochs are kept in "
                                      f"{config.out}; continue with the same command and --resume"):
        buf = train_buffer(config, options=pm.option_values("buffer", args), manager=pm)
    accs = [e["test_accuracy"] for e in buf.meta["experts"]]
    if is_main():
        print(f"buffer: {buf.num_experts} experts, final test accuracy {min(accs) * 100:.2f}-{max(accs) * 100:.2f}%, "
              f"in {buf.path}")


@hookimpl
def register_commands(register):
    register("buffer", setup=setup, run=run, help="train expert networks and save their trajectories")
