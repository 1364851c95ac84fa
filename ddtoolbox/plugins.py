"""Finding, loading and calling plugins.

Installed plugins are entry points in the group ``ddtoolbox`` (the built-in MTT matcher is one,
so the path third parties use is the path the core itself uses). A plugin named in a run (by
``--plugin NAME`` or ``distill(..., plugins=[...])``) is loaded by entry-point name or imported by
dotted module path; a blocked name (``--plugin no:NAME``) is never registered, like pytest's
``-p no:NAME``.

Every hook call, set-up and run alike, goes through :meth:`PluginManager.call`: it calls each
implementation itself (pluggy's order: last registered first, ``tryfirst``/``trylast`` honoured),
hands each plugin its own ``options``, ``state`` and ``cache`` where the hook has them, names the plugin when
one fails, and is what ``DDTOOL_TRACE_HOOKS=1`` prints. Hook wrappers are not supported.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import pluggy

from . import hookspecs
from .errors import PluginError, UsageError, brief, debugging, warn
from .options import flag_of, option_fields

ENTRY_POINT_GROUP = "ddtoolbox"
RUN_HOOKS = ("on_run_start", "on_iteration_start", "on_inner_loss", "on_loss_vector", "on_pixel_grad", "on_iteration",
             "on_run_end")
#: set to 1 to print every hook call: hook, plugin, argument summaries, result and time
TRACE_ENV = "DDTOOL_TRACE_HOOKS"
#: the commands whose options plugins may add to (distill: the run's plugins; buffer: the trainer)
OPTION_COMMANDS = ("buffer", "distill")
TRACE_LINE = 300


@dataclass
class Registered:
    """Something a plugin registered (a matcher, a trainer, a preset, a command), remembering which plugin did."""

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


# ---------------------------------------------------------------------------- tracing


def summarise(value, depth: int = 0) -> str:
    """A short description of a hook argument: shapes and types, never tensor contents."""
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        dtype = str(value.dtype).replace("torch.", "")
        device = getattr(value, "device", None)
        where = f"@{device}" if device is not None and str(device) != "cpu" else ""
        return f"{type(value).__name__}[{dtype}{where}]{tuple(shape)}"
    if value is None or isinstance(value, (bool, int)):
        return repr(value)
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, dict):
        if depth or len(value) > 6:
            return f"dict({len(value)} keys)"
        return "{" + ", ".join(f"{k}: {summarise(v, 1)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__}({len(value)})"
    brief = getattr(value, "trace_summary", None)
    if callable(brief):
        return brief()
    if callable(value):
        return getattr(value, "__name__", type(value).__name__)
    return type(value).__name__


def trace(hook: str, plugin: str, args: str, result, seconds: float) -> None:
    """One line on stderr: ``ddtool: hook NAME -> PLUGIN(arguments) = result [time]``."""
    line = f"ddtool: hook {hook} -> {plugin}({args}) = {summarise(result)} [{seconds * 1000:.1f} ms]"
    if len(line) > TRACE_LINE:
        line = line[:TRACE_LINE - 3] + "..."
    print(line, file=sys.stderr)


# ---------------------------------------------------------------------------- the manager


@dataclass
class PluginManager:
    """A pluggy manager with ddtoolbox's loading rules, registries, options and one hook-call path.

    :param blocked: names never to register (``--plugin no:NAME``).
    :param builtins: ``(name, module)`` pairs registered before the entry points and left out of
        :meth:`plugin_names` (the CLI's own commands are registered so).
    """

    blocked: set[str] = field(default_factory=set)
    builtins: tuple = ()

    def __post_init__(self):
        self.blocked = set(self.blocked)
        self.pm = pluggy.PluginManager("ddtoolbox")
        self.pm.add_hookspecs(hookspecs)
        self.builtin_names = set()
        for name, module in self.builtins:
            self.pm.register(module, name=name)
            self.builtin_names.add(name)
        self.installed: list[str] = []
        self._blocked_entry_points = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in self.blocked:
                self._blocked_entry_points[ep.name] = ep
                continue
            if self.pm.has_plugin(ep.name):
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
            self._register(plugin, ep.name, f"--plugin no:{ep.name} skips it")
            self.installed.append(ep.name)
            if not self.pm.get_hookcallers(plugin):
                top = ep.value.split(":")[0].split(".")[0]
                warn(f"installed plugin '{ep.name}' ({ep.value}) implements none of ddtoolbox's hooks, so it adds "
                     f"nothing; check its entry point, and whether a folder named '{top}' in the current folder "
                     f"hides the installed package")
        self.matchers: dict[str, Registered] = {}
        self.trainers: dict[str, Registered] = {}
        self.presets: dict[str, Registered] = {}
        self.commands: dict[str, Registered] = {}
        self._option_classes: dict[str, dict] = {}
        self._collect_registrations()

    # ------------------------------------------------------------------ the one call path

    def _register(self, plugin, name: str, fix: str) -> None:
        """Register ``plugin``, turning pluggy's checks into one-line errors that name it: a hook
        implementation with an argument the spec lacks, or a function marked as a hook that is none."""
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            raise UsageError(f"plugin '{name}' does not fit ddtoolbox's hooks: {brief(' '.join(str(exc).split()), 300)} (see "
                             f"ddtoolbox.hookspecs for the hooks and their arguments); {fix}") from exc

    def call(self, hook_name: str, only=None, per_plugin=None, chain: str | None = None, after=None,
             **kwargs) -> list[tuple[str, object]]:
        """Call ``hook_name`` on each implementation (of the plugins in ``only``, if given).

        :param per_plugin: ``per_plugin(plugin) -> dict`` of extra arguments for that plugin alone
            (a run's ``options`` and ``state``).
        :param chain: the argument a non-``None`` result replaces for the plugins called after
            (``on_inner_loss`` hands each plugin the previous one's ``loss_fn``).
        :param after: ``after(plugin)`` runs after each implementation (the run's record check).
        :return: ``(plugin, result)`` pairs in call order, ``None`` results included.

        A :class:`UsageError` from a plugin is re-raised with the plugin's name; any other exception
        becomes a :class:`PluginError` naming the plugin and the hook, unless ``DDTOOL_DEBUG`` is set,
        in which case it propagates unchanged with its traceback.
        """
        tracing = bool(os.environ.get(TRACE_ENV))
        pairs = []
        for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
            plugin = impl.plugin_name
            if only is not None and plugin not in only:
                continue
            given = dict(kwargs, **(per_plugin(plugin) if per_plugin else {}))
            args = {k: given[k] for k in impl.argnames if k in given}
            described = ", ".join(f"{k}={summarise(v)}" for k, v in args.items()) if tracing else ""
            start = time.perf_counter()
            result = self.call_user(plugin, f"hook {hook_name}", impl.function, **args)
            if tracing:
                trace(hook_name, plugin, described, result, time.perf_counter() - start)
            if after is not None:
                after(plugin)
            if chain is not None and result is not None:
                kwargs[chain] = result
            pairs.append((plugin, result))
        return pairs

    def call_user(self, plugin: str, what: str, fn, *args, **kwargs):
        """Call plugin code that is not a hook (a matcher's method, a trainer factory) with the same reporting."""
        try:
            return fn(*args, **kwargs)
        except PluginError:
            raise
        except UsageError as exc:
            if debugging():
                raise
            raise UsageError(f"plugin '{plugin}': {exc}") from exc
        except Exception as exc:
            if debugging():
                raise
            raise PluginError(f"plugin '{plugin}' failed in {what}: {exc!r} (DDTOOL_DEBUG=1 shows the traceback)",
                              plugin, what) from exc

    # ------------------------------------------------------------------ loading

    def load(self, value: str) -> str:
        """Make ``value`` (an installed plugin name or a module path) available; return its name."""
        if self.pm.has_plugin(value):
            return value
        if value in self.blocked:
            raise UsageError(f"plugin '{value}' is blocked with --plugin no:{value}")
        try:
            module = importlib.import_module(value)
        except ModuleNotFoundError as exc:
            if exc.name and value.startswith(exc.name):
                known = ", ".join(sorted(self.installed)) or "none"
                raise UsageError(
                    f"unknown plugin '{value}': not an installed plugin (installed: {known}) "
                    f"and not an importable module; install it, check the name, or for a module file in "
                    f"this folder run with PYTHONPATH=."
                ) from exc
            raise UsageError(f"plugin module '{value}' failed to import: {exc}") from exc
        except Exception as exc:
            raise UsageError(f"plugin module '{value}' failed to import: {exc!r}") from exc
        if not self.pm.is_registered(module):
            self._register(module, value, "fix the module")
            if not self.pm.get_hookcallers(module):     # e.g. --plugin os.path: importable, but no plugin
                self.pm.unregister(module)
                raise UsageError(f"module '{value}' is not a ddtoolbox plugin: it implements none of ddtoolbox's "
                                 f"hooks (see ddtoolbox.hookspecs); check the name ('ddtool plugins' lists the "
                                 f"installed ones)")
            self._collect_registrations([value])
            self._option_classes.clear()
        return self.pm.get_name(module)

    def activate(self, names) -> list[str]:
        """Load the plugins a run names; a blocked one is left out, with a warning that says so."""
        active = []
        for value in names or ():
            if value in self.blocked:
                warn(f"plugin '{value}' is blocked (--plugin no:{value}); ignoring --plugin {value}")
                continue
            name = self.load(value)
            if name not in active:
                active.append(name)
        return active

    def plugin_names(self) -> list[str]:
        return [name for name, _ in self.pm.list_name_plugin() if name not in self.builtin_names]

    def description(self, name: str) -> str:
        return first_line(getattr(self.pm.get_plugin(name), "__doc__", None))

    # ------------------------------------------------------------------ registries

    def _collect_registrations(self, only=None) -> None:
        self._collect("register_matchers", self.matchers, self._matcher_entry, only)
        self._collect("register_trainers", self.trainers, self._trainer_entry, only)
        self._collect("register_presets", self.presets, self._preset_entry, only)
        self._collect("register_commands", self.commands, self._command_entry, only)

    def _collect(self, hook_name, registry: dict, make_entry, only) -> None:
        found: dict[str, Registered] = {}
        current = {"plugin": None}

        def register(*args, **kwargs):
            plugin = current["plugin"]
            entry = make_entry(plugin, *args, **kwargs)
            previous = found.get(entry.name) or registry.get(entry.name)
            if previous is not None and previous.obj is not entry.obj and previous.plugin != plugin:
                raise UsageError(
                    f"'{entry.name}' is registered by both plugin '{previous.plugin}' and "
                    f"plugin '{plugin}'; uninstall one or block it with --plugin no:NAME"
                )
            found[entry.name] = entry

        def per_plugin(plugin):
            current["plugin"] = plugin
            return {}

        self.call(hook_name, only=only, per_plugin=per_plugin, register=register)
        registry.update(found)

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

    @staticmethod
    def _command_entry(plugin, name, *, setup, run, help="", description=None):
        return Registered(name, (setup, run, description), plugin, help)

    def _lookup(self, registry: dict, what: str, name: str, hint: str) -> Registered:
        if name not in registry:
            known = ", ".join(sorted(registry)) or hint
            module = (f"; a plugin module that is not installed is loaded with --plugin MODULE (in a preset or "
                      f"spec: plugins = [\"MODULE\"])" if what in ("matcher", "trainer") else "")
            raise UsageError(f"unknown {what} '{name}'; available: {known}{module}")
        return registry[name]

    def preset(self, name: str) -> Registered:
        return self._lookup(self.presets, "preset", name, "none installed (see 'ddtool presets')")

    def matcher(self, name: str) -> Registered:
        return self._lookup(self.matchers, "matcher", name, "none (is ddtoolbox installed? pip install -e .)")

    def trainer(self, name: str) -> Registered:
        return self._lookup(self.trainers, "trainer", name, "none")

    # ------------------------------------------------------------------ options

    def option_classes(self, command: str) -> dict[str, type]:
        """``{plugin: options class}`` of the installed plugins that declare options for ``command``."""
        if command not in self._option_classes:
            classes = {}
            for plugin, cls in self.call("add_options", command=command):
                if cls is None:
                    continue
                if not (isinstance(cls, type) and dataclasses.is_dataclass(cls) and option_fields(cls)):
                    raise PluginError(f"plugin '{plugin}' returned {cls!r} from add_options; return a dataclass "
                                      f"whose fields are declared with ddtoolbox.options.option (or None)",
                                      plugin, "add_options")
                classes[plugin] = cls
            self._option_classes[command] = classes
        return self._option_classes[command]

    def blocked_option_classes(self, command: str) -> dict[str, type]:
        """The options blocked installed plugins would add: accepted and ignored, so an ablation's
        command line can block a plugin without dropping its flags."""
        classes = {}
        for name, ep in self._blocked_entry_points.items():
            try:
                module = ep.load()
                cls = module.add_options(command=command) if hasattr(module, "add_options") else None
            except Exception:  # a broken plugin is the usual reason to block it
                continue
            if isinstance(cls, type) and dataclasses.is_dataclass(cls):
                classes[name] = cls
        return classes

    def options_of(self, plugin: str, command: str) -> list[str]:
        """The flags a plugin adds to ``command`` (for ``ddtool plugins``)."""
        cls = self.option_classes(command).get(plugin)
        if cls is None:
            return []
        return [info.flags[0] if info.flags else "--" + f.name.replace("_", "-") for f, info in option_fields(cls)]

    def option_values(self, command: str, namespace) -> dict:
        """``{field: value}`` of the plugin options a parsed ``namespace`` sets, for :meth:`plugin_options`:
        those given on the command line or differing from their defaults (a preset's). Left out,
        an option keeps its default, so only what a user set reaches the check that its plugin runs.

        Options of blocked plugins are passed only when given (which then says once that they are
        ignored).
        """
        values = {}
        given = getattr(namespace, "given", None) or set()     # the flags the command line names (ddtool's main)
        for options_cls in self.option_classes(command).values():
            for f, _ in option_fields(options_cls):
                if hasattr(namespace, f.name):
                    value = getattr(namespace, f.name)
                    default = _default_of(f)
                    if f.name in given or default is dataclasses.MISSING or value != default:
                        values[f.name] = value
        for options_cls in self.blocked_option_classes(command).values():
            for f in dataclasses.fields(options_cls):
                default = f.default if f.default is not dataclasses.MISSING else (
                    f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
                if hasattr(namespace, f.name) and getattr(namespace, f.name) != default:
                    values[f.name] = getattr(namespace, f.name)
        return values

    def plugin_options(self, command: str, values: dict, active) -> dict[str, object]:
        """Each active plugin's options object for ``command``, made from ``{field: value}``.

        A value for an installed plugin that is not active is an error naming the flag that
        activates it (an ablation row that silently ran without its module is a wrong result);
        values for blocked plugins (``--plugin no:NAME``) are ignored with a warning; any other key
        is an error naming it.
        """
        classes = self.option_classes(command)
        owner = {f.name: plugin for plugin, cls in classes.items() for f in dataclasses.fields(cls)}
        blocked = {f.name: plugin for plugin, cls in self.blocked_option_classes(command).items()
                   for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in values if k not in owner and k not in blocked)
        ignored = sorted(k for k in values if k in blocked and k not in owner)
        for plugin in sorted({blocked[k] for k in ignored}):
            flags = ", ".join("--" + k.replace("_", "-") for k in ignored if blocked[k] == plugin)
            warn(f"plugin '{plugin}' is blocked (--plugin no:{plugin}); ignoring {flags}")
        if unknown:
            known = ", ".join(sorted(owner)) or "none"
            raise UsageError(f"unknown {command} plugin option(s) {', '.join(unknown)}; the installed plugins' "
                             f"options are: {known}")
        idle = [k for k in values if k in owner and owner[k] not in active]
        if idle:
            plugin = owner[idle[0]]
            field_ = next(f for f, _ in option_fields(classes[plugin]) if f.name == idle[0])
            flag = flag_of(field_, field_.metadata["ddtoolbox"])
            raise UsageError(f"{flag} is an option of plugin '{plugin}', which this {command} run does not use; add "
                             f"{self._activation(plugin, command)}, or pass --plugin no:{plugin} to ignore its options "
                             f"on purpose")
        out = {}
        for plugin, cls in classes.items():
            if plugin not in active:
                continue
            mine = {k: v for k, v in values.items() if owner.get(k) == plugin}
            out[plugin] = self.call_user(plugin, "its options", cls, **mine)
        return out

    def _activation(self, plugin: str, command: str) -> str:
        """The flag that makes ``plugin`` part of a ``command`` run: its matcher, its trainer, or --plugin."""
        registry = {"distill": (self.matchers, "--matcher"), "buffer": (self.trainers, "--trainer")}.get(command)
        if registry is not None:
            for name, entry in registry[0].items():
                if entry.plugin == plugin:
                    return f"{registry[1]} {name}"
        return f"--plugin {plugin}"

    # ------------------------------------------------------------------ run hooks

    def run_hooks(self, active: list[str]) -> RunHooks:
        """Hook callers that reach only the ``active`` plugins, each with its own options and state."""
        return RunHooks(self, list(active))


def _default_of(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


class RunHooks:
    """Calls the run hooks on a run's active plugins: ``hooks.on_iteration(run=run, record=record)``.

    Each implementation may also take ``options`` (its plugin's options object, or ``None``),
    ``state`` (its plugin's ``run.state[plugin]`` dict) and ``cache`` (``run.cache[plugin]``).
    """

    def __init__(self, manager: PluginManager, active: list[str]):
        self._manager = manager
        self.active = active

    def results(self, hook_name: str, run, chain: str | None = None, **kwargs) -> list[tuple[str, object]]:
        def per_plugin(plugin):
            return {"options": run.options.get(plugin), "state": run.state.setdefault(plugin, {}),
                    "cache": run.cache.setdefault(plugin, {})}

        def after(plugin):
            check_record(run.record, plugin, f"hook {hook_name}")

        return self._manager.call(hook_name, only=self.active, per_plugin=per_plugin, chain=chain, after=after,
                                  run=run, **kwargs)

    def __getattr__(self, hook_name):
        if hook_name not in RUN_HOOKS:
            raise AttributeError(hook_name)

        def call(run, **kwargs):
            self.results(hook_name, run, **kwargs)

        return call


def _plain(value) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return getattr(value, "numel", None) is not None and value.numel() == 1   # a one-number tensor is written as it


def check_record(record: dict | None, plugin: str, where: str) -> None:
    """An iteration's record must stay writable to ``metrics.json``: say which plugin broke it, and where,
    at once, rather than as an internal error when the file is written."""
    if not record:
        return
    for key, value in record.items():
        if not _plain(value):
            shown = (f"a tensor of shape {tuple(value.shape)}" if hasattr(value, "shape")
                     else f"a {type(value).__name__}")
            raise PluginError(f"plugin '{plugin}' put {shown} into the iteration record under '{key}' ({where}); "
                              f"metrics.json holds numbers, strings, booleans, None and lists or dicts of them: "
                              f"log value.item() or value.tolist()", plugin, where)
