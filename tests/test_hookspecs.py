"""The hook specs are the plugin author's manual: each must be documented, guided and tested."""

import inspect
import re
from pathlib import Path

import pytest

from ddtoolbox import hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
         if hasattr(fn, "ddtoolbox_spec")]


def test_the_product_hooks_exist():
    assert {"on_loss_vector", "on_pixel_grad", "on_iteration", "register_matchers", "add_options"} <= set(HOOKS)


@pytest.mark.parametrize("name", HOOKS)
def test_every_argument_is_documented(name):
    fn = getattr(hookspecs, name)
    doc = inspect.getdoc(fn) or ""
    assert len(doc) > 80, f"{name} needs a real docstring"
    for arg in inspect.signature(fn).parameters:
        assert re.search(rf":param [\w.]*\s*{arg}:", doc), f"{name}: argument '{arg}' lacks a :param: entry"


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_is_in_the_plugin_guide_with_its_full_signature(name):
    """As datasette does: the guide shows each hook exactly as the spec declares it."""
    signature = f"`{name}({', '.join(inspect.signature(getattr(hookspecs, name)).parameters)})`"
    assert signature in (ROOT / "docs" / "plugins.md").read_text(), f"docs/plugins.md lacks {signature}"


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_has_a_named_test_of_its_own(name):
    """tests/test_hooks.py calls each hook through the real path in a test named after it."""
    assert re.search(rf"^def test_hook_{name}\(", (ROOT / "tests" / "test_hooks.py").read_text(), re.M), name


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_is_exercised_by_a_test(name):
    """A hook nobody tests is a hook that silently stops being called."""
    sources = [p.read_text() for p in ROOT.glob("tests/test_*.py") if p.name != "test_hookspecs.py"]
    sources += [p.read_text() for p in ROOT.glob("plugins/*/tests/test_*.py")]
    assert any(re.search(rf"def {name}\(", s) or f"hook.{name}(" in s for s in sources), f"no test implements {name}"
