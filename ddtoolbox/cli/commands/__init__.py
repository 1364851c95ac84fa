"""ddtool's own subcommands, one module per job, each registered through ``register_commands``."""

from . import bench, buffer, data, demo, distill, evaluation, export, inspect, report, scaffold, select, speed

#: ``(plugin name, module)`` pairs the CLI registers before the installed plugins
BUILTIN = tuple((f"ddtool.{m.__name__.rsplit('.', 1)[-1]}", m)
                for m in (demo, buffer, distill, evaluation, report, speed, bench, inspect, data, select, export,
                          scaffold))
