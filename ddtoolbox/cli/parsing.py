"""Building ``ddtool``'s parser from the registered commands, and the option plumbing they share.

Nothing here computes anything: options become settings objects and plugin option values, and
those go to the library functions.
"""

from __future__ import annotations

import argparse

from .. import __version__
from ..errors import PluginError, UsageError, warn
from ..options import add_arguments

#: ddtool's own commands in the order ``ddtool --help`` lists them; plugins' commands follow
ORDER = ("demo", "buffer", "distill", "select", "eval", "report", "export", "train-full", "bench-speed", "bench",
         "presets", "plugins", "plugin", "data", "compdd")


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line, like every other ddtool error.

    Abbreviated options are not accepted: a flag means exactly what it spells, which is what
    ``--resume`` needs to tell a given flag from a default.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser(pm) -> Parser:
    """The whole ``ddtool`` parser: one subparser per registered command (``parser.commands``)."""
    parser = Parser(prog="ddtool", description="Dataset distillation by trajectory matching, with plugins.")
    parser.add_argument("--version", action="version", version=f"ddtoolbox {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    rank = {name: i for i, name in enumerate(ORDER)}
    for name in sorted(pm.commands, key=lambda n: (rank.get(n, len(ORDER)), n)):
        entry = pm.commands[name]
        setup, run, description = entry.obj
        p = sub.add_parser(name, help=entry.description, description=description or entry.description)
        pm.call_user(entry.plugin, f"the setup of command {name}", setup, p, pm)
        if not any(a.dest == "plugins" for a in p._actions):   # --plugin is read before parsing, for every command
            add_plugin_option(p, hidden=True)
        p.set_defaults(func=run)
    parser.commands = dict(sub.choices)
    return parser


# ---------------------------------------------------------------------------- shared options


def add_plugin_option(p, hidden: bool = False) -> None:
    p.add_argument("--plugin", "-p", dest="plugins", action="append", default=[], metavar="NAME",
                   help=argparse.SUPPRESS if hidden else
                   "activate a plugin by name or module path; no:NAME blocks an installed one (repeatable)")


def add_preset_option(p) -> None:
    p.add_argument("--preset", default=None, metavar="NAME",
                   help="fill options from a published setting (see 'ddtool presets'); explicit flags win")


def add_settings(p, cls, pm=None, command: str | None = None, skip=()) -> None:
    """Flags for the settings class ``cls``, plus the installed plugins' options for ``command``
    (each in a group titled after its plugin) and, hidden, the options of blocked plugins."""
    add_arguments(p, cls, skip=skip)
    if pm is None or command is None:
        return
    for plugin, options_cls in pm.option_classes(command).items():
        _add_plugin_group(p, plugin, options_cls, f"plugin {plugin}")
    for plugin, options_cls in pm.blocked_option_classes(command).items():
        group = p.add_argument_group(f"blocked plugin {plugin}")
        before = len(p._actions)
        _add_plugin_group(group, plugin, options_cls, None)
        for action in p._actions[before:]:
            action.help = argparse.SUPPRESS


def _add_plugin_group(p, plugin, options_cls, title) -> None:
    try:
        add_arguments(p, options_cls, title=title, require=False)
    except argparse.ArgumentError as exc:
        raise PluginError(f"plugin '{plugin}' declares an option that is already taken: {exc}; rename it with "
                          f"the plugin's name as prefix", plugin, "add_options") from exc


def apply_preset(pm, parser, command: str, name: str, active: list[str]) -> list[str]:
    """Make a preset's values the defaults of ``command``; return the plugins it activates."""
    from ..presets import check_preset

    entry = pm.preset(name)
    check_preset(entry.name, entry.obj, parser.commands)
    values = dict(entry.obj.get(command, {}))
    plugins = []
    for p in values.pop("plugins", []):
        if p in pm.blocked:
            warn(f"plugin '{p}' is blocked (--plugin no:{p}); ignoring it in preset {name}")
        elif pm.load(p) not in active:
            plugins.append(pm.load(p))
    parser.commands[command].set_defaults(**values)
    return plugins
