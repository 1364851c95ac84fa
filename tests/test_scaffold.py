"""``ddtool plugin new NAME``: the scaffold is an installable distribution whose own tests pass."""

import configparser
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ddtoolbox.cli.testing import run_cli
from ddtoolbox.scaffold import files


@pytest.fixture
def scaffold(tmp_path, monkeypatch):
    r = run_cli("plugin", "new", "my-demo", "--dir", tmp_path)
    assert r.code == 0, r.err
    folder = tmp_path / "my-demo"
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.syspath_prepend(str(folder / "tests"))
    yield folder
    for name in ("my_demo", "test_my_demo"):
        sys.modules.pop(name, None)


def test_the_scaffold_is_a_distribution_with_an_entry_point(scaffold):
    assert sorted(str(p.relative_to(scaffold)) for p in scaffold.rglob("*") if p.is_file()) == \
        ["README.md", "my_demo/__init__.py", "pyproject.toml", "setup.cfg", "tests/test_my_demo.py"]
    cfg = configparser.ConfigParser()
    cfg.read(scaffold / "setup.cfg")
    assert cfg["metadata"]["name"] == "ddtoolbox-my-demo"
    assert cfg["options.entry_points"]["ddtoolbox"].strip() == "my_demo = my_demo"
    module = importlib.import_module("my_demo")
    options = module.add_options("distill")
    assert options.__name__ == "MyDemoOptions" and options().my_demo_factor == 1.0
    assert module.add_options("buffer") is None
    help_text = run_cli("distill", "--help", "--plugin", "my_demo").out
    assert "--my-demo-factor" in help_text


def test_the_scaffolds_own_tests_pass(scaffold, toy_buffer, toy_dataset, ddtool, tmp_path):
    """Its test functions, called with this session's fixtures (the same ones its pytest run gets)."""
    tests = importlib.import_module("test_my_demo")
    names = [n for n in dir(tests) if n.startswith("test_")]
    assert len(names) == 3
    fixtures = {"toy_buffer": toy_buffer, "toy_dataset": toy_dataset, "ddtool": ddtool}
    for i, name in enumerate(names):
        fn = getattr(tests, name)
        args = {k: v for k, v in fixtures.items() if k in fn.__code__.co_varnames[:fn.__code__.co_argcount]}
        out = tmp_path / f"t{i}"
        out.mkdir()
        fn(tmp_path=out, **args)


@pytest.mark.slow
def test_plugin_new_then_pytest_passes_in_the_new_folder(tmp_path):
    """What a new author does: ddtool plugin new demo && cd demo && pytest (a fresh process, ~10-20 s)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    made = subprocess.run([sys.executable, "-m", "ddtoolbox.cli", "plugin", "new", "demo"], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=tmp_path / "demo",
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "3 passed" in r.stdout


@pytest.mark.parametrize("name, words", [
    ("My-Plugin", "lower-case"), ("2fast", "starting with a letter"), ("json", "shadow the module 'json'"),
    ("class", "shadow"), ("a--b", "lower-case"),
])
def test_a_bad_name_is_one_line(name, words, tmp_path):
    r = run_cli("plugin", "new", name, "--dir", tmp_path)
    assert r.code == 2 and r.err.count("\n") == 1 and words in r.err, r.err
    assert not any(tmp_path.iterdir())


def test_an_existing_folder_is_not_overwritten(tmp_path):
    (tmp_path / "demo").mkdir()
    r = run_cli("plugin", "new", "demo", "--dir", tmp_path)
    assert r.code == 2 and "already exists" in r.err
    assert not any((tmp_path / "demo").iterdir())


def test_every_template_compiles():
    for rel, text in files("some_plugin").items():
        if rel.endswith(".py"):
            compile(text, rel, "exec")
