"""``ddtool plugin new NAME``: a new plugin distribution that installs, runs and passes its own tests.

A plugin author's first hour goes into packaging, not into the method: the entry point group, the
options dataclass, how a test gets a buffer. The scaffold answers all of it with a working example
(one ``distill`` option and one run hook) that its own test suite exercises through ddtoolbox's
fixtures, so the author starts from green and changes one thing at a time.

The layout, for ``ddtool plugin new my-plugin``::

    my-plugin/
      pyproject.toml, setup.cfg     distribution ddtoolbox-my-plugin; entry point my_plugin = my_plugin
      my_plugin/__init__.py         MyPluginOptions (--my-plugin-factor) and an on_pixel_grad hook
      tests/test_my_plugin.py       runs with plain 'pytest' in the folder, installed or not
      README.md

The module, the entry point and the plugin's name are one identifier, so ``--plugin my_plugin`` means
the same installed and uninstalled (docs/plugins.md, "Package it").
"""

from __future__ import annotations

import keyword
import re
import string
import sys
from pathlib import Path

from .errors import UsageError
from .io import atomic_write

NAME = re.compile(r"^[a-z][a-z0-9]*([-_][a-z0-9]+)*$")
#: names a plugin module must not take: they would shadow what the scaffold's tests import
RESERVED = {"ddtoolbox", "test", "tests", "torch", "pytest", "setup", "conftest"}

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"
"""

SETUP_CFG = """\
[metadata]
name = ddtoolbox-$name
version = 0.1.0
description = $title: a ddtoolbox plugin

[options]
packages = find:
python_requires = >=3.11
install_requires =
    ddtoolbox

[options.packages.find]
include = $ident, $ident.*

[options.extras_require]
test =
    pytest>=7

# The entry point makes the installed plugin known to ddtool; its name is the plugin's name
# (--plugin $ident, the key in metrics.json's "options"), the same as the module's.
[options.entry_points]
ddtoolbox =
    $ident = $ident

[tool:pytest]
testpaths = tests
# the tests import the plugin from this folder, so they pass installed or not
pythonpath = .
"""

MODULE = '''\
"""$title: a ddtoolbox plugin (made by 'ddtool plugin new $name').

It multiplies the gradient of the synthetic images by --$flag-factor before every update, which
is a stand-in for your method: replace on_pixel_grad with the hooks you need (docs/plugins.md lists
them all: on_run_start, on_iteration_start, on_inner_loss, on_loss_vector, on_pixel_grad,
on_iteration, on_run_end, and register_matchers for a new matcher).
"""

from dataclasses import dataclass

from ddtoolbox import UsageError, hookimpl
from ddtoolbox.options import Settings, option, positive_float

__version__ = "0.1.0"


@dataclass(kw_only=True)
class ${cls}Options(Settings):
    """$title's distill options: prefixed with the plugin's name, as every plugin's options share
    one command line."""

    ${ident}_factor: float = option(1.0, "$name: gradient factor (default 1: no change)", type=positive_float)

    def check(self):
        if self.${ident}_factor > 100:
            raise UsageError(f"--$flag-factor {self.${ident}_factor:g} would blow up the images; use at most 100")


@hookimpl
def add_options(command):
    # called for every command (distill, buffer); this plugin has distill options only
    return ${cls}Options if command == "distill" else None


@hookimpl
def on_pixel_grad(run, grad, options, state):
    # the gradient of the matching loss w.r.t. the synthetic images: change it in place
    if grad is not None:
        grad.mul_(options.${ident}_factor)
    state["updates"] = state.get("updates", 0) + 1      # saved in checkpoints: plain values only
'''

TEST = '''\
"""$title's tests: real distillations on ddtoolbox's toy data (the toy_buffer, toy_dataset and ddtool
fixtures come with ddtoolbox), a second or two each."""

import torch

from ddtoolbox import distill
from ddtoolbox.testing import TOY_DISTILL, toy_config


def test_factor_one_changes_nothing(toy_buffer, tmp_path):
    plain = distill(toy_config(toy_buffer, tmp_path / "plain"))
    mine = distill(toy_config(toy_buffer, tmp_path / "mine"), plugins=["$ident"])
    assert torch.equal(plain.images, mine.images)
    assert mine.state["$ident"]["updates"] == 2          # toy_config runs 2 iterations


def test_a_factor_changes_the_images(toy_buffer, tmp_path):
    plain = distill(toy_config(toy_buffer, tmp_path / "plain"))
    mine = distill(toy_config(toy_buffer, tmp_path / "mine"), plugins=["$ident"], options={"${ident}_factor": 3.0})
    assert not torch.equal(plain.images, mine.images)


def test_the_command_line_takes_the_option_and_refuses_a_bad_value(ddtool, toy_dataset, toy_buffer, tmp_path):
    ok = ddtool("distill", "--dataset", toy_dataset, "--buffer", toy_buffer, "--out", tmp_path / "ok",
                "--iterations", "1", *TOY_DISTILL, "--plugin", "$ident", "--$flag-factor", "2")
    assert ok.code == 0, ok.err
    bad = ddtool("distill", "--dataset", toy_dataset, "--buffer", toy_buffer, "--out", tmp_path / "bad",
                 "--iterations", "1", *TOY_DISTILL, "--plugin", "$ident", "--$flag-factor", "1000")
    assert bad.code == 2 and bad.err.count("\\n") == 1 and "--$flag-factor" in bad.err
'''

README = """\
# ddtoolbox-$name

$title: a ddtoolbox plugin, made by `ddtool plugin new $name`.

```bash
pip install -e .            # installs the entry point: ddtool now knows --plugin $ident
pytest                      # its tests, on ddtoolbox's toy data (also without installing)
ddtool distill --plugin $ident --$flag-factor 2 --buffer runs/buffer --out runs/$ident
ddtool plugins              # lists $ident with its options
```

Start from `$ident/__init__.py`; the hooks are described in ddtoolbox's docs/plugins.md.
"""


def identifier(name: str) -> str:
    return name.replace("-", "_")


def check_name(name: str) -> str:
    """The plugin's identifier for ``name``, or a UsageError saying what a name may be."""
    if not NAME.match(name):
        raise UsageError(f"plugin name '{name}' must be lower-case letters and digits, words joined by - or _, "
                         f"starting with a letter (e.g. my-plugin)")
    ident = identifier(name)
    if keyword.iskeyword(ident) or ident in RESERVED or ident in sys.stdlib_module_names:
        raise UsageError(f"plugin name '{name}' would shadow the module '{ident}'; choose another, e.g. "
                         f"{ident}-plugin")
    return ident


def files(name: str) -> dict[str, str]:
    """Path (relative to the new folder) -> content of every file the scaffold writes."""
    ident = check_name(name)
    values = {"name": name, "ident": ident, "flag": name.replace("_", "-"),
              "cls": "".join(part.capitalize() for part in re.split(r"[-_]", name)),
              "title": " ".join(part.capitalize() for part in re.split(r"[-_]", name))}
    fill = lambda text: string.Template(text).substitute(values)   # noqa: E731
    return {"pyproject.toml": fill(PYPROJECT), "setup.cfg": fill(SETUP_CFG), f"{ident}/__init__.py": fill(MODULE),
            f"tests/test_{ident}.py": fill(TEST), "README.md": fill(README)}


def new_plugin(name: str, parent=".") -> Path:
    """Write the plugin distribution ``name`` into ``parent/name``; refuse a folder that exists."""
    folder = Path(parent) / name
    content = files(name)
    if folder.exists():
        raise UsageError(f"{folder} already exists; choose another name or remove it")
    for rel, text in content.items():
        atomic_write(folder / rel, lambda fh, text=text: fh.write(text.encode()))
    return folder
