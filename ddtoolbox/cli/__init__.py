"""``ddtool``: the command line, a thin layer that parses options and calls library functions.

Every subcommand is registered through the ``register_commands`` hook, ddtool's own (the modules
under :mod:`ddtoolbox.cli.commands`) exactly like a plugin's, so nothing outside this package
imports it. Exit status: 0 done; 2 a usage or input error (one line on stderr); 3 a run diverged (its last good
state kept as the checkpoint); 4 under torchrun, another rank was lost (every rank stops; the line
says how to continue); 130 / 143 interrupted by SIGINT / SIGTERM (what was kept and how to go on in
one line); 1 an internal error. ``DDTOOL_DEBUG=1`` shows the traceback of plugin and internal errors.
"""

from __future__ import annotations

import os
import signal
import sys

from .. import parallel
from ..errors import Stopped, UsageError, debugging, forget_warnings, one_line, signal_number
from ..io import USER_ERRNOS, os_fix, os_reason
from ..plugins import PluginManager, split_plugin_args
from .commands import BUILTIN
from ..runtime import cpu_threads, restore_signals, stop_at_once_on_signals
from .parsing import Parser, apply_preset, build_parser


def _pre_parse(argv):
    """``--plugin`` and ``--preset``, read before the full parser exists (plugins add options)."""
    pre = Parser(prog="ddtool", add_help=False)      # its errors are one line too
    pre.add_argument("command", nargs="?")
    pre.add_argument("--plugin", "-p", dest="plugins", action="append", default=[])
    pre.add_argument("--preset", default=None)
    known, _ = pre.parse_known_args(argv)
    if any(not p.strip() or p.strip() == "no:" for p in known.plugins):
        raise UsageError("--plugin is empty; give a plugin's name or module path (or no:NAME to block one)")
    active, blocked = split_plugin_args(known.plugins)
    return known.command, known.preset, active, blocked


def given_options(parser, argv) -> set[str]:
    """The option destinations the command line names explicitly (not defaults, not a preset's)."""
    if parser is None:
        return set()
    given = set()
    for action in parser._actions:
        for flag in action.option_strings:
            if any(tok == flag or tok.startswith(flag + "=") for tok in argv):
                given.add(action.dest)
    return given


def refuse_empty(parser, args) -> None:
    """An empty value (``--out ''``, ``--devices ''``) is a mistake, never a request for a default:
    ``--out ''`` would write into the current folder, ``--devices ''`` mean "the default device"."""
    if parser is None:
        return
    for action in parser._actions:
        if action.dest in ("help", "plugins") or getattr(action, "allow_empty", False) or (
                action.option_strings and action.dest not in args.given):
            continue
        value = getattr(args, action.dest, None)
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and not v.strip() for v in values):
            name = action.option_strings[0] if action.option_strings else (action.metavar or action.dest).upper()
            raise UsageError(f"{name} is empty; give a value" + ("" if not action.option_strings else
                                                                   " (leave the option out for its default)"))


#: the commands that spread their work over the processes of a torchrun launch
MULTI_PROCESS = ("buffer", "distill", "eval")


def manager(blocked=()) -> PluginManager:
    """A plugin manager that also knows ddtool's own commands."""
    return PluginManager(blocked=set(blocked), builtins=BUILTIN)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    forget_warnings()
    handlers = stop_at_once_on_signals()
    try:
        return _main(argv)
    finally:
        restore_signals(handlers)


def _main(argv) -> int:
    try:
        command, preset, requested, blocked = _pre_parse(argv)
        pm = manager(blocked)
        active = pm.activate(requested)   # module paths may add options, so load them first
        parser = build_parser(pm)
        if preset and command in parser.commands:
            active += apply_preset(pm, parser, command, preset, active)
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        args.plugins = active
        args.given = given_options(parser.commands.get(command), argv)
        refuse_empty(parser.commands.get(command), args)
        if command not in MULTI_PROCESS and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UsageError(f"'ddtool {command}' runs as one process; start it without torchrun (only "
                             f"{', '.join(MULTI_PROCESS)} spread over several)")
        with cpu_threads(getattr(args, "threads", None)):
            args.func(args, pm)
        return 0
    except UsageError as exc:
        if debugging() and exc.__cause__ is not None:
            raise
        if parallel.is_main() or not _every_rank(exc):
            print(f"ddtool: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except Stopped as exc:
        if isinstance(exc, parallel.RankLost):
            return _rank_lost(exc, argv)
        print(f"ddtool: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:    # stopped at once, where nothing resumable was being written
        signum = signal_number(exc)
        print(f"ddtool: interrupted by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:  # output piped into 'head' and the like: stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        if debugging() or exc.errno not in USER_ERRNOS:
            return _internal(exc)
        where = f"{exc.filename}: " if exc.filename else ""
        if exc.filename2:
            where = f"{exc.filename} -> {exc.filename2}: "
        print(f"ddtool: error: cannot use {where}{os_reason(exc)}; {os_fix(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        if parallel.lost_peer(exc):
            return _rank_lost(exc, argv)
        return _internal(exc)


def _rank_lost(exc: BaseException, argv) -> int:
    """A rank of a torchrun launch lost its peers: one line saying so, and how to go on (exit 4)."""
    command = argv[0] if argv else "COMMAND"
    rest = " ".join(a for a in argv[1:] if a != "--resume")
    again = {"distill": f"ddtool distill --resume {rest}", "buffer": f"ddtool buffer --resume {rest}"}.get(
        command, f"ddtool {command} {rest}")
    seen = str(exc) if isinstance(exc, parallel.RankLost) else \
        (f"rank {os.environ.get('RANK', parallel.rank())} of {os.environ.get('WORLD_SIZE', parallel.world())}: "
         f"{one_line(exc)[:160]}; another rank has probably died or "
         f"hung (torchrun's summary names it)")
    print(f"ddtool: {one_line(seen)}; every rank stops; continue with: torchrun ... {again.strip()}", file=sys.stderr)
    return parallel.RankLost.exit_code


def _internal(exc: Exception) -> int:
    """A bug (ddtoolbox's or a plugin's): one line, or the traceback with ``DDTOOL_DEBUG=1``."""
    if debugging():
        raise exc
    print(f"ddtool: internal error: {one_line(repr(exc))}{_origin(exc)}; please report it (DDTOOL_DEBUG=1 shows the "
          f"traceback)", file=sys.stderr)
    return 1


def _every_rank(exc: BaseException | None) -> bool:
    """Whether every rank raised this error alike (also when a plugin's wrapper re-raised it)."""
    while exc is not None:
        if isinstance(exc, parallel.EveryRank):
            return True
        exc = exc.__cause__
    return False


def _origin(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f" at {os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}" if tb is not None else ""


if __name__ == "__main__":
    sys.exit(main())
