"""Errors a user can fix, and warnings a run goes on after.

The CLI turns a :class:`UsageError` into one line on stderr and exit status 2, with no traceback.
Raise it (never ``SystemExit``) for any problem caused by the user's input: a wrong path, an unknown
name, a bad value, a file that does not match the run. The message must say what is wrong *and*
what to do about it.

A plugin that finds something worth knowing but not worth stopping for calls :func:`warn`: one
line on stderr, said once per command however often it happens.
"""

from __future__ import annotations

import os
import sys

#: set to 1 to see the full traceback of a plugin's or ddtoolbox's own error instead of one line
DEBUG_ENV = "DDTOOL_DEBUG"


class UsageError(Exception):
    """A problem with the user's input; the message names the problem and the fix."""


class PluginError(UsageError):
    """A plugin failed; the message names the plugin and the hook that raised.

    ``plugin`` and ``hook`` say where; the original exception is the ``__cause__``.
    """

    def __init__(self, message: str, plugin: str | None = None, hook: str | None = None):
        super().__init__(message)
        self.plugin = plugin
        self.hook = hook


class Stopped(Exception):
    """A run stopped before its end in a way that is not a mistake in the input.

    ``exit_code`` is what ``ddtool`` exits with; the message (one line) says what happened and
    how to go on.
    """

    exit_code = 1


class Interrupted(Stopped):
    """SIGINT or SIGTERM: the current iteration was finished and a checkpoint written (exit 130 / 143)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + int(signum)


class Signalled(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived where a command stops at once (``signum`` says which). A
    KeyboardInterrupt, so whatever cleans up after Ctrl-C cleans up after SIGTERM too; a command
    that keeps something resumable turns it into :class:`Interrupted`, naming how to go on."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)


def signal_number(exc: BaseException) -> int:
    """The signal a KeyboardInterrupt stands for: its ``signum``, else SIGINT (2)."""
    return getattr(exc, "signum", 2)


class Diverged(Stopped):
    """An update made the run's numbers non-finite or absurd; the last good state is the checkpoint (exit 3)."""

    exit_code = 3


def one_line(text) -> str:
    """``text`` with line breaks and other control characters escaped, so a message that quotes a
    user's value (a name from a hand-edited file, say) stays one line."""
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
                   for ch in str(text))


def brief(text, limit: int = 120) -> str:
    """The first line of ``text`` (e.g. an exception from torch), cut at a word boundary to ``limit``."""
    line = (str(text).strip().splitlines() or [""])[0].strip()
    if len(line) <= limit:
        return line
    cut = line[:limit].rsplit(" ", 1)[0].rstrip(",;:")
    return (cut if len(cut) > limit // 2 else line[:limit]) + " ..."


def debugging() -> bool:
    """Whether ``DDTOOL_DEBUG`` asks for full tracebacks."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


_warned: set[str] = set()


def warn(message: str) -> None:
    """Print ``ddtool: warning: MESSAGE`` on stderr, once per distinct message per command or run.

    For plugins and the core alike: a setting that is allowed but probably wrong, a gradient that
    was missing, an option that is ignored. Say what happened and what to do, in one line.
    """
    if message in _warned:
        return
    _warned.add(message)
    print(f"ddtool: warning: {one_line(message)}", file=sys.stderr)


def forget_warnings() -> None:
    """Start a new scope for :func:`warn` (each command and each run says its warnings again)."""
    _warned.clear()
