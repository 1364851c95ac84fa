"""``ddtool plugin new NAME``: scaffold an installable plugin distribution (see :mod:`ddtoolbox.scaffold`)."""

from __future__ import annotations

from ... import hookimpl


def setup(p, pm) -> None:
    p.add_argument("action", choices=("new",), help="new: write a plugin distribution into ./NAME")
    p.add_argument("name", help="the plugin's name: lower-case words joined by - or _ (e.g. my-plugin)")
    p.add_argument("--dir", default=".", help="folder to create NAME in (default: the current folder)")


def run(args, pm) -> None:
    from ...scaffold import identifier, new_plugin

    folder = new_plugin(args.name, args.dir)
    ident = identifier(args.name)
    print(f"wrote {folder}: the plugin '{ident}' (distribution ddtoolbox-{args.name}), one option "
          f"(--{args.name.replace('_', '-')}-factor) and one hook, with its tests\n"
          f"next: cd {folder} && pytest, then pip install -e . to make --plugin {ident} known to ddtool")


@hookimpl
def register_commands(register):
    register("plugin", setup=setup, run=run, help="plugin new NAME: scaffold a plugin distribution with its tests",
             description="Write NAME/ with setup.cfg (an entry point in the group ddtoolbox), an options dataclass, "
                         "one hook and a test suite that uses ddtoolbox's pytest fixtures; 'cd NAME && pytest' passes "
                         "at once.")
