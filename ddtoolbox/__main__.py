"""``ddtool`` (the console script) and ``python -m ddtoolbox``: start-up that a signal cannot turn
into a traceback, nor be lost in.

Importing the command line takes seconds (torch). A KeyboardInterrupt raised in that time would
print a traceback, or vanish inside a library's ``try: import ... except:`` and let the command
run on. So a SIGINT or SIGTERM during start-up is only noted; once the imports are done the
command stops with one line and exit 130 / 143 like every other stop. A second one stops at once.
"""

import os
import signal
import sys

_received = []


def _note(signum, frame):
    if _received:       # the user insists: leave now, still in one line
        _leave(signum)
    _received.append(signum)


def _leave(signum):
    sys.stderr.write(f"ddtool: interrupted by {signal.Signals(signum).name} while starting\n")
    sys.stderr.flush()
    os._exit(128 + signum)


def main() -> int:
    previous = {sig: signal.signal(sig, _note) for sig in (signal.SIGINT, signal.SIGTERM)}
    from ddtoolbox.cli import main as run

    for sig, handler in previous.items():
        signal.signal(sig, handler)
    if _received:
        _leave(_received[0])
    return run()


if __name__ == "__main__":
    sys.exit(main())
