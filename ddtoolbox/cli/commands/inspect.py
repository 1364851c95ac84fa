"""``ddtool plugins`` and ``ddtool presets``: what is installed and what the published settings are."""

from __future__ import annotations

import json

from ... import hookimpl
from ...plugins import OPTION_COMMANDS
from ..parsing import add_plugin_option, build_parser


def setup_plugins(p, pm) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_plugin_option(p, hidden=True)


def run_plugins(args, pm) -> None:
    from ...models import list_models

    rows = []
    for name in pm.plugin_names():
        matchers = [m.name for m in pm.matchers.values() if m.plugin == name]
        trainers = [t.name for t in pm.trainers.values() if t.plugin == name]
        commands = [c.name for c in pm.commands.values() if c.plugin == name]
        options = {c: pm.options_of(name, c) for c in OPTION_COMMANDS}
        rows.append({"plugin": name, "description": pm.description(name), "matchers": matchers,
                     "trainers": trainers, "commands": commands, "options": {c: o for c, o in options.items() if o}})
    if args.json:
        print(json.dumps({"plugins": rows, "models": list_models()}, indent=2))
        return
    print("matchers:")
    for m in sorted(pm.matchers.values(), key=lambda m: m.name):
        print(f"  {m.name:<10} {m.description}  [plugin {m.plugin}]")
    print("trainers:")
    for t in sorted(pm.trainers.values(), key=lambda t: t.name):
        print(f"  {t.name:<10} {t.description}  [plugin {t.plugin}]")
    print("plugins:")
    width = max([10] + [len(r["plugin"]) for r in rows])   # names longer than 10 ("tensorboard") keep the column
    for r in rows:
        print(f"  {r['plugin']:<{width}} {r['description']}")
        for command, opts in r["options"].items():
            print(f"  {'':<{width}}   {command} options: {' '.join(opts)}")
        if r["commands"]:
            print(f"  {'':<{width}}   commands: {' '.join(r['commands'])}")
    print(f"models: {', '.join(list_models())}")


def setup_presets(p, pm) -> None:
    p.add_argument("--show", default=None, metavar="NAME", help="print one preset as ddtool options")
    add_plugin_option(p, hidden=True)


def run_presets(args, pm) -> None:
    from ...presets import as_flags, check_preset

    parsers = build_parser(pm).commands
    if args.show:
        entry = pm.preset(args.show)
        check_preset(entry.name, entry.obj, parsers)
        print(f"{entry.name}: {entry.description}  [plugin {entry.plugin}]")
        for command, values in entry.obj.items():
            print(f"  ddtool {command} {' '.join(as_flags(values, parsers[command]))}")
        return
    if not pm.presets:
        print("no presets installed (the ddtoolbox-datm and ddtoolbox-edf plugins ship the published ones)")
    for entry in sorted(pm.presets.values(), key=lambda e: e.name):
        print(f"  {entry.name:<28} {entry.description}  [plugin {entry.plugin}]")


@hookimpl
def register_commands(register):
    register("plugins", setup=setup_plugins, run=run_plugins, help="list matchers, trainers, plugins and their options")
    register("presets", setup=setup_presets, run=run_presets, help="list the published settings that --preset accepts")
