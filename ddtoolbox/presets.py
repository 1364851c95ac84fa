"""Published hyper-parameter settings as named presets.

A preset is a TOML file shipped inside a plugin's package::

    description = "EDF on ImageNette, IPC 10 (paper Table 8)"
    [distill]
    matcher = "datm"
    plugins = ["cpd", "dae"]
    syn_steps = 40
    ...

Keys are option destinations (``syn_steps`` for ``--syn-steps``). A preset fills the defaults of
the subcommand's parser, so every flag given on the command line still wins. TOML is read with the
standard library and holds only plain values, so a preset file cannot run code.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from .errors import UsageError


def register_folder(register, folder, prefix: str) -> None:
    """Register every ``*.toml`` under ``folder`` as ``prefix/<relative path without .toml>``."""
    folder = Path(folder)
    for path in sorted(folder.rglob("*.toml")):
        name = f"{prefix}/{path.relative_to(folder).with_suffix('').as_posix()}"
        values = read_preset(path)
        description = values.pop("description", "")
        register(name, values, description)


def read_preset(path) -> dict:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"preset file {path} cannot be read ({exc}); fix or reinstall the plugin that ships it") from exc
    unknown = [k for k, v in data.items() if k != "description" and not isinstance(v, dict)]
    if unknown:
        raise UsageError(f"preset file {path} has top-level keys {unknown}; put options under [distill], [buffer] or [eval]")
    return data


def check_preset(name: str, values: dict, parsers: dict) -> None:
    """Every key must be an option of its subcommand: a typo in a preset must not pass silently."""
    for command, options in values.items():
        if command not in parsers:
            raise UsageError(f"preset '{name}' has a section [{command}]; known sections: {', '.join(parsers)}")
        plugins = options.get("plugins", [])
        if not (isinstance(plugins, list) and all(isinstance(p, str) for p in plugins)):
            raise UsageError(f"preset '{name}' [{command}] plugins must be a list of plugin names, not {plugins!r}")
        dests = {a.dest for a in parsers[command]._actions}
        bad = sorted(set(options) - dests)
        if bad:
            raise UsageError(f"preset '{name}' sets unknown {command} option(s) {', '.join(bad)}")
        for key, value in options.items():
            if key != "plugins":
                _check_value(name, command, parsers[command], key, value)


def _check_value(name: str, command: str, parser, key: str, value) -> None:
    """A preset's value must be one its flag accepts, checked when the preset is read: a flag given
    on the command line replaces it, so it may never reach the settings' own checks."""
    import argparse

    actions = [a for a in parser._actions if a.dest == key and a.option_strings]
    if not actions:
        return
    action = actions[0]
    where = f"preset '{name}' [{command}] {key} = {value!r}"
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise UsageError(f"{where}: {action.option_strings[0]} is a switch; use true or false")
        return
    many = action.nargs in ("+", "*") or isinstance(action, argparse._AppendAction)
    values = value if many and isinstance(value, list) else [value]
    for v in values:
        if isinstance(v, (list, dict)):
            raise UsageError(f"{where}: {action.option_strings[0]} takes one value, not a {type(v).__name__}")
        try:
            converted = action.type(v) if action.type is not None else v
        except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
            raise UsageError(f"{where}: {action.option_strings[0]} {exc}") from None
        if action.choices is not None and converted not in action.choices:
            raise UsageError(f"{where}: {action.option_strings[0]} must be one of "
                             f"{', '.join(map(str, action.choices))}")


def as_flags(values: dict, parser=None) -> list[str]:
    """Option destinations and values as command-line flags (``{"syn_steps": 20}`` -> ``--syn-steps 20``).

    With ``parser``, each destination becomes the option string that parser really has (``train_epochs``
    is ``--epochs`` for some commands); without, underscores simply become dashes.
    """
    spelled = {}
    for a in (parser._actions if parser else ()):
        if a.option_strings and a.dest not in spelled:   # a switch's first flag, not its 'off' twin
            spelled[a.dest] = a.option_strings
    flags = []
    for key, value in values.items():
        flag = next((o for o in spelled.get(key, ()) if o.startswith("--")), "--" + key.replace("_", "-"))
        if key == "plugins":
            flags += [x for v in value for x in ("--plugin", str(v))]
        elif value is True:
            flags.append(flag)
        elif isinstance(value, list):
            flags += [flag, *map(str, value)]
        elif value is not False and value is not None:
            flags += [flag, str(value)]
    return flags
