"""The plugin machinery: entry points, module paths, blocking, activation, error attribution."""

import json
import sys
import textwrap

import pytest
import torch

from ddtoolbox.errors import UsageError, forget_warnings
from ddtoolbox.plugins import PluginManager, split_plugin_args
from ddtoolbox.testing import TOY_DISTILL
from ddtoolbox.buffer import Buffer

REWEIGHT_PLUGIN = '''
"""Out-of-tree test plugin: scales the gradient of the first image by ten."""
from dataclasses import dataclass

from ddtoolbox import hookimpl
from ddtoolbox.options import Settings, option, positive_float

CALLS = []

@dataclass(kw_only=True)
class Options(Settings):
    reweight_factor: float = option(10.0, "gradient factor", type=positive_float)

@hookimpl
def add_options(command):
    return Options if command == "distill" else None

@hookimpl
def on_pixel_grad(run, grad, options):
    CALLS.append(run.iteration)
    grad[0].mul_(options.reweight_factor)
'''


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """A plugin 'reweight' installed the way pip installs one: a module plus dist-info entry point."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "reweight_plugin.py").write_text(REWEIGHT_PLUGIN)
    dist = site / "ddtool_reweight-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ddtool-reweight\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ddtoolbox]\nreweight = reweight_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    yield "reweight"
    sys.modules.pop("reweight_plugin", None)


def _distill(ddtool, toy_dataset, toy_buffer, out, *extra, iterations=3):
    r = ddtool("distill", "--dataset", toy_dataset, "--buffer", toy_buffer, "--out", out,
               "--iterations", str(iterations), *TOY_DISTILL, *extra)
    assert r.code == 0, r.err
    return torch.load(out / "synthetic.pt", weights_only=True)


def test_entry_point_plugin_changes_the_result_only_when_active(installed_plugin, ddtool, toy_dataset, toy_buffer, tmp_path):
    base = _distill(ddtool, toy_dataset, toy_buffer, tmp_path / "base")
    installed = _distill(ddtool, toy_dataset, toy_buffer, tmp_path / "installed")
    active = _distill(ddtool, toy_dataset, toy_buffer, tmp_path / "active", "--plugin", installed_plugin)
    assert torch.equal(base["images"], installed["images"]), "an installed but inactive plugin changed the result"
    assert not torch.equal(base["images"], active["images"])
    assert sys.modules["reweight_plugin"].CALLS == [0, 1, 2]
    assert active["meta"]["plugins"] == ["reweight", "mtt"]
    # after one iteration only image 0 differs: the plugin scaled only its gradient
    base1 = _distill(ddtool, toy_dataset, toy_buffer, tmp_path / "base1", iterations=1)
    active1 = _distill(ddtool, toy_dataset, toy_buffer, tmp_path / "active1", "--plugin", installed_plugin, iterations=1)
    assert not torch.equal(base1["images"][0], active1["images"][0])
    assert torch.equal(base1["images"][1:], active1["images"][1:])


def test_plugin_options_are_listed_and_parsed(installed_plugin, ddtool, toy_dataset, toy_buffer, tmp_path):
    r = ddtool("plugins")
    assert r.code == 0
    assert "reweight" in r.out and "--reweight-factor" in r.out
    one = _distill(ddtool, toy_dataset, toy_buffer, tmp_path / "one", "--plugin", "reweight", "--reweight-factor", "1")
    base = _distill(ddtool, toy_dataset, toy_buffer, tmp_path / "base")
    assert torch.equal(one["images"], base["images"])


def test_blocked_plugin_is_not_loaded(installed_plugin):
    pm = PluginManager(blocked={"reweight"})
    assert "reweight" not in pm.plugin_names()
    assert "reweight" in PluginManager().plugin_names()


def test_an_installed_plugin_that_implements_no_hook_is_warned_about(tmp_path, monkeypatch, capsys):
    """As when a scaffold's folder 'gm/' in the current folder hides the installed package 'gm'."""
    site = tmp_path / "site"
    (site / "hollow").mkdir(parents=True)
    (site / "hollow" / "__init__.py").write_text("")                     # the package, without its hooks
    dist = site / "ddtool_hollow-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ddtool-hollow\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ddtoolbox]\nhollow = hollow\n")
    monkeypatch.syspath_prepend(str(site))
    forget_warnings()
    try:
        PluginManager()
    finally:
        sys.modules.pop("hollow", None)
    err = capsys.readouterr().err
    assert "installed plugin 'hollow' (hollow) implements none of ddtoolbox's hooks" in err
    assert "a folder named 'hollow' in the current folder" in err


def test_module_path_plugin(tmp_path, monkeypatch, ddtool, toy_dataset, toy_buffer):
    (tmp_path / "by_path_plugin.py").write_text(REWEIGHT_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        out = _distill(ddtool, toy_dataset, toy_buffer, tmp_path / "o", "--plugin", "by_path_plugin", "--reweight-factor", "3")
        assert out["meta"]["plugins"][0] == "by_path_plugin"
    finally:
        sys.modules.pop("by_path_plugin", None)


def test_failing_hook_is_named(tmp_path, monkeypatch, ddtool, toy_dataset, toy_buffer):
    (tmp_path / "broken_plugin.py").write_text(textwrap.dedent('''
        from ddtoolbox import hookimpl
        @hookimpl
        def on_iteration(run):
            raise ValueError("boom")
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        r = ddtool("distill", "--dataset", toy_dataset, "--buffer", toy_buffer, "--out", tmp_path / "o",
                   "--iterations", "2", *TOY_DISTILL, "--plugin", "broken_plugin")
    finally:
        sys.modules.pop("broken_plugin", None)
    assert r.code == 2
    assert "broken_plugin" in r.err and "on_iteration" in r.err and "boom" in r.err
    assert "Traceback" not in r.err
    assert not (tmp_path / "o" / "synthetic.pt").exists()


def test_bad_loss_weights_are_attributed(tmp_path, monkeypatch, ddtool, toy_dataset, toy_buffer):
    (tmp_path / "badweights_plugin.py").write_text(textwrap.dedent('''
        import torch
        from ddtoolbox import hookimpl
        @hookimpl
        def on_loss_vector(num, den):
            return torch.ones(3)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        r = ddtool("distill", "--dataset", toy_dataset, "--buffer", toy_buffer, "--out", tmp_path / "o",
                   "--iterations", "1", *TOY_DISTILL, "--plugin", "badweights_plugin")
    finally:
        sys.modules.pop("badweights_plugin", None)
    assert r.code == 2 and "badweights_plugin" in r.err and "shape" in r.err


def test_duplicate_matcher_names_are_refused(tmp_path, monkeypatch):
    (tmp_path / "dup_matcher.py").write_text(textwrap.dedent('''
        from ddtoolbox import hookimpl
        from ddtoolbox.builtin.mtt import MTT
        class Other(MTT):
            name = "mtt"
        @hookimpl
        def register_matchers(register):
            register(Other)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(UsageError, match="both plugin 'mtt' and plugin 'dup_matcher'"):
            PluginManager().load("dup_matcher")
    finally:
        sys.modules.pop("dup_matcher", None)


def test_unknown_plugin_message_lists_installed():
    with pytest.raises(UsageError, match="unknown plugin 'nope'.*installed: .*mtt"):
        PluginManager().load("nope")


def test_split_plugin_args():
    assert split_plugin_args(["a", "no:b", "a", "c"]) == (["a", "c"], {"b"})




LIFECYCLE_PLUGIN = '''
from ddtoolbox import hookimpl
from ddtoolbox.errors import UsageError
EVENTS = []

@hookimpl
def on_run_start(run):
    if run.config.ipc == 3:
        raise UsageError("--ipc 3 is not supported by this plugin")
    EVENTS.append(("start", run.iteration, run.images.shape[0]))

@hookimpl
def on_iteration(run):
    EVENTS.append(("iteration", run.iteration))

@hookimpl
def on_run_end(run, exception):
    EVENTS.append(("end", (run.out_dir / "synthetic.pt").exists(), type(exception).__name__))

@hookimpl
def register_trainers(register):
    def halving_sgd(options):
        """SGD at half the lr, to see that the registered step is the one used."""
        def step(model, optimizer, images, labels, loss_fn):
            for group in optimizer.param_groups:
                group["lr"] = group.setdefault("initial_lr", group["lr"]) / 2
            optimizer.zero_grad()
            loss = loss_fn(model(images), labels)
            loss.backward()
            optimizer.step()
            EVENTS.append(("trainer-step",))
            return loss.detach()
        return step
    register("halving", halving_sgd, "SGD at half the lr")

@hookimpl
def register_presets(register):
    register("lifecycle/short", {"distill": {"iterations": 2, "syn_steps": 2, "plugins": ["lifecycle_plugin"]},
                                 "eval": {"eval_runs": 3, "eval_epochs": 1},
                                 "buffer": {"num_experts": 1, "train_epochs": 1, "width": 4}},
             "two short iterations")
    register("lifecycle/broken", {"distill": {"iterations": 2, "no_such_option": 1}}, "names an unknown option")
'''


@pytest.fixture
def lifecycle(tmp_path, monkeypatch):
    (tmp_path / "lifecycle_plugin.py").write_text(LIFECYCLE_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "lifecycle_plugin"
    sys.modules.pop("lifecycle_plugin", None)


def test_run_start_and_end_bracket_the_iterations(lifecycle, ddtool, toy_dataset, toy_buffer, tmp_path):
    _distill(ddtool, toy_dataset, toy_buffer, tmp_path / "o", "--plugin", lifecycle, iterations=2)
    events = sys.modules[lifecycle].EVENTS
    assert events == [("start", -1, 8), ("iteration", 0), ("iteration", 1), ("end", True, "NoneType")]


def test_run_start_can_refuse_options(lifecycle, ddtool, toy_dataset, toy_buffer, tmp_path):
    r = ddtool("distill", "--dataset", toy_dataset, "--buffer", toy_buffer, "--out", tmp_path / "o",
               "--iterations", "1", *TOY_DISTILL, "--ipc", "3", "--plugin", lifecycle)
    assert r.code == 2 and "plugin 'lifecycle_plugin': --ipc 3" in r.err
    # the run existed, so the end hook ran and saw the error; nothing was written
    assert sys.modules[lifecycle].EVENTS == [("end", False, "UsageError")]


def test_registered_trainer_is_used_by_buffer(lifecycle, ddtool, toy_dataset, tmp_path):
    r = ddtool("buffer", "--dataset", toy_dataset, "--out", tmp_path / "b", "--num-experts", "1", "--epochs", "1",
               "--width", "4", "--device", "cpu", "--quiet", "--trainer", "halving", "--plugin", lifecycle)
    assert r.code == 0, r.err
    assert sys.modules[lifecycle].EVENTS.count(("trainer-step",)) == 160 // 256 + 1
    assert Buffer.open(tmp_path / "b").meta["trainer"] == "halving"
    assert "halving" in ddtool("plugins", "--plugin", lifecycle).out


def test_preset_fills_options_and_flags_win(lifecycle, ddtool, toy_dataset, toy_buffer, tmp_path):
    common = ("distill", "--dataset", toy_dataset, "--buffer", toy_buffer, *TOY_DISTILL, "--plugin", lifecycle)
    r = ddtool(*common, "--out", tmp_path / "a", "--preset", "lifecycle/short")
    assert r.code == 0, r.err
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["config"]["iterations"] == 2  # from the preset
    assert metrics["config"]["syn_steps"] == 3  # the preset says 2, but TOY_DISTILL passes --syn-steps 3
    r = ddtool(*common, "--out", tmp_path / "b", "--preset", "lifecycle/short", "--iterations", "1")
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["config"]["iterations"] == 1
    r = ddtool(*common, "--out", tmp_path / "c", "--preset", "lifecycle/broken")
    assert r.code == 2 and "no_such_option" in r.err
    listing = ddtool("presets", "--plugin", lifecycle).out
    assert "lifecycle/short" in listing and "two short iterations" in listing


def test_preset_sections_fill_buffer_and_eval_too(lifecycle, ddtool, toy_dataset, tmp_path):
    r = ddtool("buffer", "--dataset", toy_dataset, "--out", tmp_path / "b", "--device", "cpu", "--quiet",
               "--plugin", lifecycle, "--preset", "lifecycle/short")
    assert r.code == 0, r.err
    meta = Buffer.open(tmp_path / "b").meta
    assert (len(meta["experts"]), meta["model_options"]["width"]) == (1, 4)
    common = ("eval", "--random-ipc", "1", "--dataset", toy_dataset, "--width", "4", "--device", "cpu", "--quiet",
              "--plugin", lifecycle, "--preset", "lifecycle/short")
    r = ddtool(*common, "--json", tmp_path / "a.json")
    assert r.code == 0, r.err
    assert len(json.loads((tmp_path / "a.json").read_text())["runs"]) == 3       # from the preset
    r = ddtool(*common, "--runs", "2", "--json", tmp_path / "b.json")
    assert len(json.loads((tmp_path / "b.json").read_text())["runs"]) == 2       # the flag wins
