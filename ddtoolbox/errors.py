"""Errors a user can fix.

The CLI turns a :class:`UsageError` into one line on stderr and exit status 2, with no traceback.
Raise it (never ``SystemExit``) for any problem caused by the user's input: a wrong path, an unknown
name, a bad value, a file that does not match the run. The message must say what is wrong *and*
what to do about it.
"""


class UsageError(Exception):
    """A problem with the user's input; the message names the problem and the fix."""


class PluginError(UsageError):
    """A plugin failed; the message names the plugin and the hook that raised."""
