"""Finding, loading and calling plugins.

Installed plugins are entry points in the group ``ddtoolbox`` (the built-in MTT matcher is one,
so the path third parties use is the path the core itself uses). ``--plugin NAME`` activates an
installed plugin by entry-point name or imports a module by dotted path; ``--plugin no:NAME``
keeps an installed plugin from being loaded at all, like pytest's ``-p no:NAME``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import types
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import pluggy

from . import hookspecs
from .errors import PluginError, UsageError

ENTRY_POINT_GROUP = "ddtoolbox"
RUN_HOOKS = ("on_run_start", "on_loss_vector", "on_pixel_grad", "on_iteration", "on_run_end")
TRACE_ENV = "DDTOOL_TRACE_HOOKS"


@dataclass
class Registered:
    """Something a plugin registered (a matcher or a trainer), remembering which plugin did."""

    name: str
    obj: object
    plugin: str
    description: str


def first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0].strip() if (text or "").strip() else ""


def split_plugin_args(values) -> tuple[list[str], set[str]]:
    """Split ``--plugin`` values into names to activate and ``no:NAME`` names to block."""
    active, blocked = [], set()
    for value in values or ():
        if value.startswith("no:"):
            blocked.add(value[3:])
        elif value not in active:
            active.append(value)
    return active, blocked


@dataclass
class PluginManager:
    """A pluggy manager with ddtoolbox's loading rules, registries and error reporting."""

    blocked: set[str] = field(default_factory=set)

    def __post_init__(self):
        self.pm = pluggy.PluginManager("ddtoolbox")
        self.pm.add_hookspecs(hookspecs)
        if os.environ.get(TRACE_ENV):
            self.pm.trace.root.setwriter(sys.stderr.write)
            self.pm.enable_tracing()
        self.installed: list[str] = []
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in self.blocked or self.pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must not look like a core bug
                raise UsageError(
                    f"installed plugin '{ep.name}' ({ep.value}) failed to load: {exc!r}; "
                    f"fix or uninstall it, or skip it with --plugin no:{ep.name}"
                ) from exc
            if self.pm.is_registered(plugin):
                continue
            self.pm.register(plugin, name=ep.name)
            self.installed.append(ep.name)
        self.matchers = self._collect("register_matchers", self._matcher_entry)
        self.trainers = self._collect("register_trainers", self._trainer_entry)
        self.presets = self._collect("register_presets", self._preset_entry)

    # ------------------------------------------------------------------ loading

    def load(self, value: str) -> str:
        """Make ``value`` (an installed plugin name or a module path) available; return its name."""
        if self.pm.has_plugin(value):
            return value
        if value in self.blocked:
            raise UsageError(f"plugin '{value}' is both requested and blocked with no:{value}")
        try:
            module = importlib.import_module(value)
        except ModuleNotFoundError as exc:
            if exc.name and value.startswith(exc.name):
                known = ", ".join(sorted(self.installed)) or "none"
                raise UsageError(
                    f"unknown plugin '{value}': not an installed plugin (installed: {known}) "
                    f"and not an importable module; install it or check the name"
                ) from exc
            raise UsageError(f"plugin module '{value}' failed to import: {exc}") from exc
        except Exception as exc:
            raise UsageError(f"plugin module '{value}' failed to import: {exc!r}") from exc
        if not self.pm.is_registered(module):
            self.pm.register(module, name=value)
            self.matchers.update(self._collect("register_matchers", self._matcher_entry, [value]))
            self.trainers.update(self._collect("register_trainers", self._trainer_entry, [value]))
            self.presets.update(self._collect("register_presets", self._preset_entry, [value]))
        return self.pm.get_name(module)

    def plugin_names(self) -> list[str]:
        return [name for name, _ in self.pm.list_name_plugin()]

    def description(self, name: str) -> str:
        return first_line(getattr(self.pm.get_plugin(name), "__doc__", None))

    # ------------------------------------------------------------------ registries

    def _collect(self, hook_name, make_entry, only=None) -> dict[str, Registered]:
        found: dict[str, Registered] = {}
        registry = hook_name.replace("register_", "")
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            if only is not None and impl.plugin_name not in only:
                continue

            def register(*args, _plugin=impl.plugin_name, **kwargs):
                entry = make_entry(_plugin, *args, **kwargs)
                previous = found.get(entry.name) or getattr(self, registry, {}).get(entry.name)
                if previous is not None and previous.obj is not entry.obj and previous.plugin != _plugin:
                    raise UsageError(
                        f"'{entry.name}' is registered by both plugin '{previous.plugin}' and "
                        f"plugin '{_plugin}'; uninstall one or block it with --plugin no:NAME"
                    )
                found[entry.name] = entry

            self._call_impl(impl, hook_name, register=register)
        return found

    @staticmethod
    def _matcher_entry(plugin, matcher_class):
        name = getattr(matcher_class, "name", None)
        if not name:
            raise UsageError(f"plugin '{plugin}' registered a matcher without a 'name' attribute")
        desc = getattr(matcher_class, "description", None) or first_line(matcher_class.__doc__)
        return Registered(name, matcher_class, plugin, desc)

    @staticmethod
    def _trainer_entry(plugin, name, step_factory, description=""):
        return Registered(name, step_factory, plugin, description or first_line(step_factory.__doc__))

    @staticmethod
    def _preset_entry(plugin, name, values, description=""):
        if not isinstance(values, dict) or not all(isinstance(v, dict) for v in values.values()):
            raise UsageError(f"plugin '{plugin}' registered preset '{name}' whose values are not a dict of dicts per subcommand")
        return Registered(name, values, plugin, description)

    def preset(self, name: str) -> Registered:
        if name not in self.presets:
            known = ", ".join(sorted(self.presets)) or "none installed"
            raise UsageError(f"unknown preset '{name}'; available: {known} (see 'ddtool presets')")
        return self.presets[name]

    def matcher(self, name: str) -> Registered:
        if name not in self.matchers:
            known = ", ".join(sorted(self.matchers)) or "none (is ddtoolbox installed? pip install -e .)"
            raise UsageError(f"unknown matcher '{name}'; available: {known}")
        return self.matchers[name]

    def trainer(self, name: str) -> Registered:
        if name not in self.trainers:
            known = ", ".join(sorted(self.trainers)) or "none"
            raise UsageError(f"unknown trainer '{name}'; available: {known}")
        return self.trainers[name]

    # ------------------------------------------------------------------ options

    def add_options(self, command: str, parser: argparse.ArgumentParser) -> None:
        """Give every installed plugin its own argument group on ``parser``."""
        for impl in reversed(self.pm.hook.add_options.get_hookimpls()):
            group = parser.add_argument_group(f"plugin {impl.plugin_name}")
            self._call_impl(impl, "add_options", command=command, parser=group)

    def options_of(self, plugin: str, command: str) -> list[str]:
        """The option strings a plugin adds to ``command`` (for ``ddtool plugins``)."""
        return [a.option_strings[-1] for a in self._actions_of(plugin, command)]

    def option_values(self, plugin: str, command: str, args: argparse.Namespace) -> dict:
        """``{dest: value}`` of the options ``plugin`` adds to ``command``, as parsed into ``args``."""
        return {a.dest: getattr(args, a.dest) for a in self._actions_of(plugin, command) if hasattr(args, a.dest)}

    def _actions_of(self, plugin: str, command: str) -> list[argparse.Action]:
        parser = argparse.ArgumentParser(add_help=False)
        for impl in self.pm.hook.add_options.get_hookimpls():
            if impl.plugin_name == plugin:
                self._call_impl(impl, "add_options", command=command, parser=parser)
        return [a for a in parser._actions if a.option_strings]

    def _call_impl(self, impl, hook_name, **kwargs):
        try:
            return impl.function(**{k: kwargs[k] for k in impl.argnames})
        except UsageError:
            raise
        except Exception as exc:
            raise PluginError(f"plugin '{impl.plugin_name}' failed in hook {hook_name}: {exc!r}") from exc

    # ------------------------------------------------------------------ run hooks

    def run_hooks(self, active: list[str]) -> RunHooks:
        """Hook callers that reach only the ``active`` plugins."""
        inactive = [p for n, p in self.pm.list_name_plugin() if n not in active]
        return RunHooks(self.pm, {name: self.pm.subset_hook_caller(name, inactive) for name in RUN_HOOKS})


class RunHooks:
    """Calls the run hooks on the active plugins and names the plugin when one raises."""

    def __init__(self, pm: pluggy.PluginManager, callers: dict):
        self._pm = pm
        self._callers = callers

    def __getattr__(self, hook_name):
        caller = self._callers[hook_name]

        def call(**kwargs):
            try:
                return caller(**kwargs)
            except Exception as exc:
                plugin = self._culprit(caller, exc)
                if plugin is None:
                    raise
                if isinstance(exc, UsageError):
                    raise UsageError(f"plugin '{plugin}': {exc}") from exc
                raise PluginError(f"plugin '{plugin}' failed in hook {hook_name}: {exc}") from exc

        return call

    def results(self, hook_name, **kwargs) -> list[tuple[str, object]]:
        """Call a hook's implementations in pluggy's order; return ``(plugin, result)`` pairs.

        Unlike a plain hook call this keeps the ``None`` results, so each result can be traced
        to the plugin that returned it.
        """
        pairs = []
        for impl in reversed(self._callers[hook_name].get_hookimpls()):
            try:
                pairs.append((impl.plugin_name, impl.function(**{k: kwargs[k] for k in impl.argnames})))
            except UsageError as exc:
                raise UsageError(f"plugin '{impl.plugin_name}': {exc}") from exc
            except Exception as exc:
                raise PluginError(f"plugin '{impl.plugin_name}' failed in hook {hook_name}: {exc!r}") from exc
        return pairs

    @staticmethod
    def _culprit(caller, exc) -> str | None:
        """The plugin whose hook function is on the traceback of ``exc``."""
        codes = {impl.function.__code__: impl.plugin_name for impl in caller.get_hookimpls()
                 if isinstance(impl.function, types.FunctionType)}
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code in codes:
                return codes[tb.tb_frame.f_code]
            tb = tb.tb_next
        return None
