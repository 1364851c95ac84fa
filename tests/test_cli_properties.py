"""Property-based command lines: generated flag values for ddtool's subcommands each end in exit 0
(the values happened to be valid), 2 (one line naming the problem) or 3 (one line: a run
diverged); never 1 (an internal error) and never a traceback (issue 23).

Each case is a small working command line (toy data, tiny networks) with one to three of the
command's flags replaced by generated values: empty, blank, non-numbers, NaN, infinities, huge and
negative numbers, relative paths, names of nothing. Numbers stay small where they would size the
work, so a case that is valid runs in well under a second.

``DDTOOL_HYPOTHESIS=thorough`` runs 400 cases per command (the default: 12, to keep the suite quick);
the number tried is printed with ``-s``.
"""

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddtoolbox.cli import build_parser, manager
from ddtoolbox.cli.testing import run_cli
from ddtoolbox.testing import TOY_BUFFER, TOY_DISTILL, TOY_NAME

THOROUGH = os.environ.get("DDTOOL_HYPOTHESIS") == "thorough"
CASES = 400 if THOROUGH else 12
TINY = ("--device", "cpu", "--quiet", "--threads", "1")

#: flags left alone: they only change where output goes or what is shown, or would need a GPU or a launch
SKIP = {"--help", "-h", "--version", "--device", "--dist-backend", "--dist-timeout", "--threads", "--quiet"}

VALUE = st.one_of(
    st.sampled_from(["", " ", "nan", "inf", "-inf", "1e30", "-1", "0", "1", "2", "0.5", "1e-9", "abc", "no:cpd",
                     "sub/x", "sub", "x.json", "mtt", "datm", "ConvNet", TOY_NAME, "cpd", "true", "--", "-"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=6),
    st.integers(-3, 3).map(str),
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(repr),
)


def base(command: str, folder: Path) -> list[str]:
    """A small command line that works, for the generated flags to change."""
    if command == "buffer":
        return ["buffer", "--dataset", TOY_NAME, "--out", str(folder / "b"), *TOY_BUFFER[:-4], "--epochs", "1",
                "--num-experts", "1", *TINY]
    if command == "distill":
        return ["distill", "--dataset", TOY_NAME, "--buffer", str(folder.parent / "buffer"), "--out",
                str(folder / "d"), "--iterations", "1", "--eval-epochs", "1", "--eval-runs", "1", *TOY_DISTILL, *TINY]
    if command == "eval":
        return ["eval", "--random-ipc", "1", "--dataset", TOY_NAME, "--runs", "1", "--epochs", "1", "--width", "8",
                "--json", str(folder / "e.json"), *TINY]
    if command == "train-full":
        return ["train-full", "--dataset", TOY_NAME, "--epochs", "1", "--width", "8", "--full-results",
                str(folder / "full.json"), *TINY]
    return [command]


def flags_of(command: str) -> list:
    parser = build_parser(manager()).commands[command]
    return [a for a in parser._actions if a.option_strings and not set(a.option_strings) & SKIP]


SMALL_INT = {"--epochs", "--train-epochs", "--num-experts", "--iterations", "--syn-steps", "--eval-epochs",
             "--eval-runs", "--runs", "--ipc", "--random-ipc", "--batch-size", "--eval-batch", "--batch-syn",
             "--width", "--depth", "--expert-epochs", "--max-start-epoch", "--eval-every", "--train-subset",
             "--dae-every", "--label-experts", "--snapshot-every", "--checkpoint-every"}

TRIED = {}


@pytest.fixture(scope="module")
def shared(toy_buffer):
    """A folder holding the toy buffer (as ``buffer``), for the distill cases."""
    folder = Path(tempfile.mkdtemp(prefix="ddtool-props-"))
    (folder / "buffer").symlink_to(toy_buffer)
    return folder


@pytest.mark.parametrize("command", ["buffer", "distill", "eval", "train-full", "presets", "plugins", "bench",
                                     "report"])
def test_generated_flag_values_end_in_0_2_or_3_with_one_line(command, shared, toy_dataset, monkeypatch):
    actions = flags_of(command)
    monkeypatch.chdir(shared)

    @settings(max_examples=CASES, deadline=None, derandomize=not THOROUGH,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(data=st.data())
    def case(data):
        chosen = [actions[i] for i in data.draw(st.lists(st.integers(0, len(actions) - 1), min_size=1, max_size=3,
                                                          unique=True))]
        with tempfile.TemporaryDirectory(dir=shared) as tmp:
            folder = Path(tmp)
            argv = base(command, folder)
            if command in ("bench", "report"):
                argv.append(data.draw(st.sampled_from(["", "spec.toml", str(folder), "nope"])))
            for action in chosen:
                flag = action.option_strings[-1] if action.option_strings[-1].startswith("--") else \
                    action.option_strings[0]
                if action.nargs == 0:
                    argv.append(flag)
                    continue
                value = data.draw(VALUE)
                if flag in SMALL_INT and value.lstrip("-").isdigit():
                    value = str(max(-3, min(3, int(value))))
                argv += [flag, value]
            os.chdir(folder)              # relative paths land in the case's own folder
            try:
                r = run_cli(*argv)
            finally:
                os.chdir(shared)
            TRIED[command] = TRIED.get(command, 0) + 1
            assert r.code in (0, 2, 3), (argv, r.code, r.err)
            assert "Traceback" not in r.err, (argv, r.err)
            if r.code != 0:
                lines = [line for line in r.err.splitlines() if line.strip() and "warning:" not in line]
                assert len(lines) == 1, (argv, r.err)

    case()
    print(f"\n{command}: {TRIED.get(command, 0)} generated command lines, all clean")
