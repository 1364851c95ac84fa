"""The ``ddtool`` pytest fixture: run the command line in-process and capture what it prints.

Loaded as a pytest plugin with :mod:`ddtoolbox.testing` (whose toy dataset and buffer it is meant
for)::

    def test_help(ddtool):
        r = ddtool("distill", "--help")
        assert r.code == 0 and "--ipc" in r.out
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import pytest

from . import main


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(*argv) -> CliResult:
    """Run ``ddtool`` in this process and capture what it prints."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:   # --help and --version exit through argparse
            code = exc.code if isinstance(exc.code, int) else 0
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def ddtool():
    return run_cli
