"""Every hook through the real call path (one named test per hook) and the contract around them:
per-plugin options, state and cache, the end hook on failure, warnings, blocking, tracing, debugging."""

import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch

import ddtoolbox
from ddtoolbox.cli.testing import run_cli
from ddtoolbox.distillation import distill
from ddtoolbox.errors import PluginError, UsageError
from ddtoolbox.plugins import PluginManager
from ddtoolbox.testing import TOY_DISTILL, toy_config

ROOT = Path(__file__).resolve().parents[1]

PROBE = '''
"""A probe plugin that uses every run hook, options, state, cache and warn()."""
from dataclasses import dataclass

import torch

from ddtoolbox import hookimpl, warn
from ddtoolbox.builtin.mtt import MTT
from ddtoolbox.options import Settings, integer, option, positive_int

EVENTS = []


class Probed(MTT):
    """MTT under another name, to see a registered matcher used."""
    name = "probed"


@dataclass(kw_only=True)
class Options(Settings):
    probe_every: int = option(1, "probe option (default 1)", type=positive_int)
    probe_fail_at: int = option(-1, "raise in on_iteration at this iteration (default never)", type=integer)
    probe_zero_weights: bool = option(False, "return all-zero loss weights")


@hookimpl
def add_options(command):
    return Options if command == "distill" else None


@hookimpl
def register_matchers(register):
    register(Probed)


@hookimpl
def register_trainers(register):
    def factory(options):
        def step(model, optimizer, images, labels, loss_fn):
            EVENTS.append("trainer-step")
            optimizer.zero_grad()
            loss = loss_fn(model(images), labels)
            loss.backward()
            optimizer.step()
            return loss.detach()
        return step
    register("probe-sgd", factory, "SGD that counts its steps")


@hookimpl
def register_presets(register):
    register("probe/two", {"distill": {"iterations": 2, "probe_every": 7, "plugins": ["probe_plugin"]}}, "two its")


@hookimpl
def register_commands(register):
    def setup(parser, manager):
        parser.add_argument("--shout", action="store_true")

    def run(args, manager):
        print("PROBE" if args.shout else "probe", sorted(manager.matchers))

    register("probe", setup=setup, run=run, help="a probe command")


@hookimpl
def on_run_start(run, options, state, cache):
    state["count"] = 0
    state["grad_mass"] = torch.zeros((), dtype=torch.float64)
    cache["handle"] = object()
    EVENTS.append(("start", options.probe_every, run.iteration))


@hookimpl
def on_loss_vector(run, num, den, options):
    EVENTS.append(("loss_vector", run.iteration, tuple(num.shape) == tuple(den.shape)))
    return torch.zeros_like(num) if options.probe_zero_weights else None


@hookimpl
def on_pixel_grad(run, grad, images, state):
    state["grad_mass"] = state["grad_mass"] + grad.abs().sum().double()


@hookimpl
def on_iteration(run, record, options, state, cache):
    state["count"] += 1
    record["probe_count"] = state["count"]
    assert "handle" in cache
    if run.iteration == options.probe_fail_at:
        raise RuntimeError("probe failure")
    warn("probe says hello")


@hookimpl
def on_run_end(run, exception, state, cache):
    EVENTS.append(("end", type(exception).__name__ if exception is not None else None, state.get("count")))
    cache.clear()
'''


@pytest.fixture
def probe(tmp_path, monkeypatch):
    (tmp_path / "probe_plugin.py").write_text(PROBE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "probe_plugin"
    sys.modules.pop("probe_plugin", None)


def events(probe):
    return sys.modules[probe].EVENTS


def _cli_distill(toy_dataset, toy_buffer, out, *extra):
    return run_cli("distill", "--dataset", toy_dataset, "--buffer", toy_buffer, "--out", out, *TOY_DISTILL, *extra)


# ---------------------------------------------------------------------------- set-up hooks


def test_hook_register_matchers(probe, toy_buffer, tmp_path):
    run = distill(toy_config(toy_buffer, tmp_path, matcher="probed"), plugins=[probe])
    assert type(run.matcher).__name__ == "Probed" and run.plugins == [probe]


def test_hook_register_trainers(probe, toy_dataset, tmp_path):
    r = run_cli("buffer", "--dataset", toy_dataset, "--out", tmp_path / "b", "--num-experts", "1", "--epochs", "1",
                "--width", "4", "--device", "cpu", "--quiet", "--trainer", "probe-sgd", "--plugin", probe)
    assert r.code == 0, r.err
    assert events(probe).count("trainer-step") == 160 // 256 + 1


def test_hook_register_presets(probe, toy_dataset, toy_buffer, tmp_path):
    r = _cli_distill(toy_dataset, toy_buffer, tmp_path, "--preset", "probe/two", "--plugin", probe)
    assert r.code == 0, r.err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["iterations"] == 2 and metrics["options"][probe]["probe_every"] == 7


def test_hook_register_commands(probe):
    r = run_cli("probe", "--shout", "--plugin", probe)
    assert r.code == 0, r.err
    assert r.out.startswith("PROBE") and "probed" in r.out and "mtt" in r.out
    assert "a probe command" in run_cli("--help", "--plugin", probe).out


def test_hook_add_options(probe, toy_dataset, toy_buffer, tmp_path):
    help_text = run_cli("distill", "--help", "--plugin", probe).out
    assert "plugin probe_plugin" in help_text and "--probe-every" in help_text and "--probe-fail-at" in help_text
    r = _cli_distill(toy_dataset, toy_buffer, tmp_path, "--plugin", probe, "--probe-every", "0")
    assert r.code == 2 and r.err.count("\n") == 1 and "--probe-every" in r.err
    with pytest.raises(UsageError, match="--probe-every must be at least 1"):
        distill(toy_config(toy_buffer, tmp_path), plugins=[probe], options={"probe_every": 0})
    with pytest.raises(UsageError, match="unknown distill plugin option.*probe_evry"):
        distill(toy_config(toy_buffer, tmp_path), plugins=[probe], options={"probe_evry": 2})


# ---------------------------------------------------------------------------- run hooks


def test_hook_on_run_start(probe, toy_buffer, tmp_path):
    run = distill(toy_config(toy_buffer, tmp_path, iterations=3), plugins=[probe], options={"probe_every": 4})
    assert events(probe)[0] == ("start", 4, -1)             # its own options, before iteration 0
    assert isinstance(run.options[probe], sys.modules[probe].Options)


def test_hook_on_loss_vector(probe, toy_buffer, tmp_path):
    distill(toy_config(toy_buffer, tmp_path, iterations=3), plugins=[probe])
    assert [e for e in events(probe) if e[0] == "loss_vector"] == [("loss_vector", i, True) for i in range(3)]


def test_hook_on_loss_vector_weights_that_keep_nothing_are_named_and_asked_once(probe, toy_buffer, tmp_path):
    with pytest.raises(PluginError, match="probe_plugin keep no element"):
        distill(toy_config(toy_buffer, tmp_path), plugins=[probe], options={"probe_zero_weights": True})
    assert len([e for e in events(probe) if e[0] == "loss_vector"]) == 1


def test_hook_on_pixel_grad(probe, toy_buffer, tmp_path):
    run = distill(toy_config(toy_buffer, tmp_path, iterations=2), plugins=[probe])
    assert run.state[probe]["grad_mass"].item() > 0


def test_hook_on_iteration(probe, toy_dataset, toy_buffer, tmp_path):
    r = _cli_distill(toy_dataset, toy_buffer, tmp_path, "--plugin", probe, "--iterations", "3")
    assert r.code == 0, r.err
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert [h["probe_count"] for h in history] == [1, 2, 3]
    assert {"iteration", "loss", "syn_lr", "skipped", "expert", "start_epoch"} <= set(history[0])
    assert r.err.count("ddtool: warning: probe says hello") == 1      # warn(): once per command


def test_hook_on_run_end(probe, toy_buffer, tmp_path):
    distill(toy_config(toy_buffer, tmp_path / "ok", iterations=2), plugins=[probe])
    assert events(probe)[-1] == ("end", None, 2)
    with pytest.raises(PluginError, match="plugin 'probe_plugin' failed in hook on_iteration.*probe failure"):
        distill(toy_config(toy_buffer, tmp_path / "bad", iterations=4), plugins=[probe], options={"probe_fail_at": 1})
    assert events(probe)[-1] == ("end", "PluginError", 2)           # it ran, and saw the error
    assert not (tmp_path / "bad" / "synthetic.pt").exists()


def test_end_hook_errors_while_failing_do_not_hide_the_cause(tmp_path, monkeypatch, toy_buffer):
    (tmp_path / "end_breaks.py").write_text(
        "from ddtoolbox import hookimpl\n"
        "@hookimpl\ndef on_iteration(run):\n    raise KeyError('first')\n"
        "@hookimpl\ndef on_run_end(run):\n    raise ValueError('second')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(PluginError, match="first"):
            distill(toy_config(toy_buffer, tmp_path / "o"), plugins=["end_breaks"])
    finally:
        sys.modules.pop("end_breaks", None)


# ---------------------------------------------------------------------------- the second pass: more hooks and handles


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    """``plugin_module(name, source)`` writes a plugin module and makes it importable by ``name``."""
    folder = tmp_path / "modules"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    names = []

    def make(name, source):
        (folder / f"{name}.py").write_text(source)
        names.append(name)
        return name

    yield make
    for name in names:
        sys.modules.pop(name, None)


def test_hook_on_iteration_start(plugin_module, toy_buffer, tmp_path):
    name = plugin_module("starts", (
        "from ddtoolbox import hookimpl\n"
        "@hookimpl\ndef on_iteration_start(run, state):\n"
        "    state['seen'] = state.get('seen', []) + [run.iteration]\n"
        "    assert run.record == {'iteration': run.iteration} and run.segment == {}\n"
        "    assert run.loss != run.loss or run.iteration > 0      # nothing of this iteration computed yet\n"
        "    run.log(started=run.iteration, drawn=int(torch.randint(1000, (), generator=run.generator)))\n"
        "import torch\n"))
    plain = distill(toy_config(toy_buffer, tmp_path / "plain", iterations=3))
    run = distill(toy_config(toy_buffer, tmp_path / "hooked", iterations=3), plugins=[name])
    assert run.state[name]["seen"] == [0, 1, 2]
    assert [h["started"] for h in run.history] == [0, 1, 2] and all("loss" in h for h in run.history)
    # drawing from run.generator leaves every other draw of the run alone: the same images, bit for bit
    assert torch.equal(run.images, plain.images)


LABEL_SMOOTHING = '''
import torch.nn.functional as F
from ddtoolbox import hookimpl

CALLS = []

@hookimpl
def on_inner_loss(run, loss_fn):
    def smoothed(logits, targets):
        CALLS.append(run.iteration)
        return F.cross_entropy(logits, targets, label_smoothing=0.1)
    return smoothed
'''


def test_hook_on_inner_loss(plugin_module, toy_buffer, tmp_path):
    smooth = plugin_module("smooth", LABEL_SMOOTHING)
    same = plugin_module("same", "from ddtoolbox import hookimpl\n@hookimpl\ndef on_inner_loss(loss_fn):\n"
                                 "    return lambda logits, targets: loss_fn(logits, targets)\n")
    plain = distill(toy_config(toy_buffer, tmp_path / "plain", iterations=2))
    wrapped = distill(toy_config(toy_buffer, tmp_path / "same", iterations=2), plugins=[same])
    assert torch.equal(wrapped.images, plain.images)          # a wrapper that changes nothing changes nothing
    smoothed = distill(toy_config(toy_buffer, tmp_path / "smooth", iterations=2), plugins=[smooth])
    assert sys.modules[smooth].CALLS == [0, 0, 0, 1, 1, 1]    # every student step of the unroll (syn_steps 3)
    assert not torch.equal(smoothed.images, plain.images)
    # chained: 'same' wraps whatever 'smooth' returned or the other way round; the smoothing stays in force
    both = distill(toy_config(toy_buffer, tmp_path / "both", iterations=2), plugins=[smooth, same])
    assert torch.equal(both.images, smoothed.images)
    bad = plugin_module("bad_loss", "from ddtoolbox import hookimpl\n@hookimpl\ndef on_inner_loss():\n    return 3\n")
    with pytest.raises(PluginError, match="plugin 'bad_loss' returned int from on_inner_loss"):
        distill(toy_config(toy_buffer, tmp_path / "bad"), plugins=[bad])


def test_hook_matcher_after_update(plugin_module, toy_buffer, tmp_path):
    name = plugin_module("inner_step", (
        "import torch\nfrom ddtoolbox import hookimpl\nfrom ddtoolbox.builtin.mtt import MTT\n"
        "class Stepping(MTT):\n    name = 'stepping'\n"
        "    def start(self, run):\n        super().start(run)\n        self.steps, self.seen = 0, None\n"
        "    def after_update(self, run):\n        self.steps += 1\n        self.seen = run.images.detach().clone()\n"
        "    def state_dict(self):\n        return {'steps': self.steps}\n"
        "@hookimpl\ndef register_matchers(register):\n    register(Stepping)\n"))
    plain = distill(toy_config(toy_buffer, tmp_path / "plain", iterations=3))
    run = distill(toy_config(toy_buffer, tmp_path / "run", matcher="stepping", iterations=3), plugins=[name])
    assert run.matcher.steps == 3
    assert torch.equal(run.matcher.seen, run.images.detach())   # it saw the updated images of the last iteration
    assert torch.equal(run.images, plain.images)


def test_hook_run_optimisers(plugin_module, toy_buffer, tmp_path):
    name = plugin_module("frozen", (
        "from ddtoolbox import hookimpl\n"
        "@hookimpl\ndef on_run_start(run, state):\n"
        "    state['kinds'] = sorted(run.optimisers)\n"
        "    state['image_lr'] = run.optimisers['images'].param_groups[0]['lr']\n"
        "    run.optimisers['images'].param_groups[0]['lr'] = 0.0      # a schedule that freezes the images\n"))
    run = distill(toy_config(toy_buffer, tmp_path, iterations=2), plugins=[name])
    assert run.state[name] == {"kinds": ["images", "lr"], "image_lr": 10.0}
    first = torch.load(tmp_path / "synthetic.pt", weights_only=True)
    initial = distill(toy_config(toy_buffer, tmp_path / "zero", iterations=0))
    assert torch.equal(first["images"], initial.images.detach())   # lr 0: the images never moved
    assert run.syn_lr.item() != initial.syn_lr.item()              # the lr's optimiser still stepped


def test_hook_run_generator_is_checkpointed(plugin_module, toy_buffer, tmp_path):
    source = ("import os, signal, torch\nfrom ddtoolbox import hookimpl\n"
              "@hookimpl\ndef on_iteration(run, record):\n"
              "    record['draw'] = torch.rand((), generator=run.generator).item()\n"
              "    if os.environ.get('STOP_AT') == str(run.iteration):\n"
              "        os.kill(os.getpid(), signal.SIGTERM)\n")
    name = plugin_module("draws", source)
    whole = distill(toy_config(toy_buffer, tmp_path / "whole", iterations=4), plugins=[name])
    from ddtoolbox.distillation import resume_settings
    from ddtoolbox.errors import Interrupted

    os.environ["STOP_AT"] = "1"
    try:
        with pytest.raises(Interrupted, match=r"SIGTERM after iteration 1 \(2 of 4 done"):
            distill(toy_config(toy_buffer, tmp_path / "cut", iterations=4, checkpoint_every=0), plugins=[name])
    finally:
        del os.environ["STOP_AT"]
    config, plugins, options = resume_settings(tmp_path / "cut")
    resumed = distill(config, plugins, options)
    assert [h["draw"] for h in resumed.history] == [h["draw"] for h in whole.history]
    assert torch.equal(resumed.images, whole.images)


def test_hook_run_augment_pair(toy_buffer, tmp_path):
    run = distill(toy_config(toy_buffer, tmp_path, iterations=0))
    real = run.train_set.images[:6]
    syn = run.images.detach()[:2]
    state = torch.get_rng_state()
    real_aug, syn_aug, params = run.augment_pair(real, real[:2].clone())
    assert torch.equal(real_aug[:2], syn_aug)               # one draw: image i of each batch, the same transform
    again = run.augment_pair(real, real[:2].clone(), params)
    assert torch.equal(again[0], real_aug) and torch.equal(again[1], syn_aug) and again[2] is params
    torch.set_rng_state(state)
    assert torch.equal(run.augment(real)[0], real_aug)      # exactly one DSA draw, on the larger batch
    real_params, syn_params = params
    assert real_params.group == syn_params.group
    small, big, _ = run.augment_pair(real[:2].clone(), real)   # the synthetic batch may be the larger one
    assert torch.equal(small, big[:2])
    run.augment = None                                      # --no-dsa
    out = run.augment_pair(real, syn)
    assert out[0] is real and out[1] is syn and out[2] is None


def test_a_tensor_in_the_record_names_the_plugin_and_the_key(plugin_module, toy_dataset, toy_buffer, tmp_path):
    name = plugin_module("tensor_logger", "import torch\nfrom ddtoolbox import hookimpl\n"
                                          "@hookimpl\ndef on_iteration(record):\n    record['vec'] = torch.zeros(3)\n")
    r = _cli_distill(toy_dataset, toy_buffer, tmp_path, "--plugin", name, "--iterations", "2")
    assert r.code == 2 and r.err.count("\n") == 1, r.err
    assert "plugin 'tensor_logger' put a tensor of shape (3,) into the iteration record under 'vec'" in r.err
    assert "hook on_iteration" in r.err and ".tolist()" in r.err


# ---------------------------------------------------------------------------- state, identity, blocking


def test_state_round_trips_through_a_weights_only_load(toy_buffer, tmp_path):
    """What plugins keep in run.state is what a checkpoint can save and load back safely."""
    run = distill(toy_config(toy_buffer, tmp_path, matcher="datm", iterations=2), plugins=["cpd", "dae"],
                  options={"cpd_alpha": 0.25, "dae_every": 1})
    assert set(run.state["dae"]) == {"maps", "weights", "maps_iteration"}
    assert run.cache["dae"] == {}                                    # released by on_run_end
    path = tmp_path / "state.pt"
    torch.save(run.state, path)
    back = torch.load(path, weights_only=True)
    assert torch.equal(back["dae"]["maps"], run.state["dae"]["maps"]) and back["dae"]["maps_iteration"] == 1


def test_run_is_hashable_and_compared_by_identity(toy_buffer, tmp_path):
    run = distill(toy_config(toy_buffer, tmp_path, iterations=0))
    assert {run: 1}[run] == 1 and run != distill(toy_config(toy_buffer, tmp_path / "b", iterations=0))


def test_blocked_plugin_keeps_its_options_accepted_and_says_so_once(toy_dataset, toy_buffer, tmp_path):
    plain = _cli_distill(toy_dataset, toy_buffer, tmp_path / "plain", "--iterations", "2")
    blocked = _cli_distill(toy_dataset, toy_buffer, tmp_path / "blocked", "--iterations", "2", "--plugin", "cpd",
                           "--cpd-alpha", "0.25", "--plugin", "no:cpd")
    assert plain.code == 0 and blocked.code == 0, blocked.err
    warnings = [line for line in blocked.err.splitlines() if "warning" in line]
    assert len([w for w in warnings if "--plugin no:cpd" in w and "--plugin cpd" in w]) == 1
    assert len([w for w in warnings if "cpd_alpha" in w or "--cpd-alpha" in w]) == 1
    a = torch.load(tmp_path / "plain" / "synthetic.pt", weights_only=True)
    b = torch.load(tmp_path / "blocked" / "synthetic.pt", weights_only=True)
    assert torch.equal(a["images"], b["images"]) and b["meta"]["plugins"] == ["mtt"]


# ---------------------------------------------------------------------------- tracing and debugging


def test_trace_names_every_hook_of_a_real_run_in_a_few_bytes(monkeypatch, toy_dataset, toy_buffer, tmp_path):
    monkeypatch.setenv("DDTOOL_TRACE_HOOKS", "1")
    r = _cli_distill(toy_dataset, toy_buffer, tmp_path, "--matcher", "datm", "--plugin", "cpd", "--plugin", "dae",
                     "--cpd-alpha", "0.25", "--iterations", "2")
    assert r.code == 0, r.err
    for hook, plugin in [("register_matchers", "mtt"), ("register_matchers", "datm"), ("register_trainers", "sgd"),
                         ("register_presets", "datm"), ("register_commands", "ddtool.distill"),
                         ("add_options", "cpd"), ("on_run_start", "dae"), ("on_loss_vector", "cpd"),
                         ("on_pixel_grad", "dae"), ("on_iteration", "dae"), ("on_run_end", "dae")]:
        assert f"ddtool: hook {hook} -> {plugin}(" in r.err, (hook, plugin)
    assert r.err.count("hook on_loss_vector -> cpd(") == 2
    assert len(r.err.encode()) < 20_000
    assert "tensor(" not in r.err and "Tensor[float32](" in r.err       # shapes, never contents
    assert all(len(line) <= 300 for line in r.err.splitlines())
    assert re.search(r"^ddtool: hook on_loss_vector -> cpd\(run=Run\(iteration=0.*num=Tensor\[float32\]\(\d+,\).*"
                     r"= Tensor\[float32\]\(\d+,\) \[[\d.]+ ms\]$", r.err, re.M)


BROKEN = "from ddtoolbox import hookimpl\n@hookimpl\ndef on_iteration(run):\n    raise ValueError('boom')\n"


def test_a_plugin_bug_is_one_line_and_debug_shows_the_traceback(tmp_path, monkeypatch, toy_dataset, toy_buffer):
    (tmp_path / "broken_plugin.py").write_text(BROKEN)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        r = _cli_distill(toy_dataset, toy_buffer, tmp_path / "o", "--plugin", "broken_plugin")
        assert r.code == 2 and r.err.count("\n") == 1
        assert "plugin 'broken_plugin' failed in hook on_iteration" in r.err and "DDTOOL_DEBUG=1" in r.err
        monkeypatch.setenv("DDTOOL_DEBUG", "1")
        with pytest.raises(ValueError, match="boom"):   # another --out: the failed run left its starting checkpoint
            _cli_distill(toy_dataset, toy_buffer, tmp_path / "o2", "--plugin", "broken_plugin")
    finally:
        sys.modules.pop("broken_plugin", None)


def test_an_internal_error_is_one_line_unless_debugging(monkeypatch, toy_dataset, toy_buffer, tmp_path):
    import ddtoolbox.distillation as distillation

    def broken(*args, **kwargs):
        raise ZeroDivisionError("internal")

    monkeypatch.setattr(distillation, "save_run", broken)
    r = _cli_distill(toy_dataset, toy_buffer, tmp_path, "--iterations", "1")
    assert r.code == 1 and r.err.count("\n") == 1
    assert "internal error" in r.err and "ZeroDivisionError" in r.err and "DDTOOL_DEBUG=1" in r.err
    monkeypatch.setenv("DDTOOL_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):      # another --out: the failed run left its starting checkpoint
        _cli_distill(toy_dataset, toy_buffer, tmp_path / "again", "--iterations", "1")


# ---------------------------------------------------------------------------- the Python API


def test_the_python_example_in_the_plugin_guide_runs(monkeypatch, toy_dataset, toy_buffer, tmp_path):
    """docs/plugins.md's Python example, run as written on the toy data (the sizes shrunk to the toy buffer's)."""
    guide = (ROOT / "docs" / "plugins.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", guide, re.S) if "distill(DistillConfig(" in b]
    assert blocks, "docs/plugins.md has no Python example of distill(config, plugins=...)"
    real, real_eval = ddtoolbox.DistillConfig, ddtoolbox.EvalSettings
    toy = toy_config(toy_buffer, tmp_path / "unused").as_dict()

    def sized_for_the_toy(**given):
        out = given.get("out", "runs")
        return real(**{**given, **{k: toy[k] for k in ("dataset", "buffer", "ipc", "syn_steps", "expert_epochs",
                                                       "max_start_epoch", "device", "quiet")},
                       "iterations": 2, "out": str(tmp_path / out)})

    def evaluated_on_the_toy(**given):
        return real_eval(**{**given, "synthetic": str(tmp_path / given["synthetic"]), "eval_epochs": 2,
                            "device": "cpu", "quiet": True})

    monkeypatch.setattr(ddtoolbox, "DistillConfig", sized_for_the_toy)
    monkeypatch.setattr(ddtoolbox, "EvalSettings", evaluated_on_the_toy)
    namespace = {}
    exec(compile(blocks[0], "docs/plugins.md", "exec"), namespace)
    run = namespace["run"]
    assert isinstance(run, ddtoolbox.Run) and run.history and (Path(run.config.out) / "synthetic.pt").exists()
    assert {"cpd", "dae"} <= set(run.plugins)


def test_distill_from_python_without_a_parser(toy_buffer, tmp_path):
    run = distill(toy_config(toy_buffer, tmp_path, matcher="datm", iterations=2), plugins=["cpd"],
                  options={"cpd_alpha": 0.5}, manager=PluginManager())
    assert run.plugins == ["cpd", "datm"] and run.options["cpd"].cpd_alpha == 0.5
    assert "cpd_full_loss" in run.history[-1]
    with pytest.raises(UsageError, match="--ipc must be at least 1"):
        toy_config(toy_buffer, tmp_path, ipc=0)


# ---------------------------------------------------------------------------- plugins that do not fit


@pytest.mark.parametrize("source, words", [
    ("@hookimpl\ndef on_iteration(run, recrod):\n    pass\n", "recrod"),                 # an argument the spec lacks
    ("@hookimpl\ndef on_iteraton(run):\n    pass\n", "on_iteraton"),                     # a hook that does not exist
])
def test_a_plugin_that_does_not_fit_the_hooks_is_named_in_one_line(tmp_path, monkeypatch, source, words):
    (tmp_path / "misfit_plugin.py").write_text("from ddtoolbox import hookimpl\n" + source)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        r = run_cli("plugins", "--plugin", "misfit_plugin")
    finally:
        sys.modules.pop("misfit_plugin", None)
    assert r.code == 2 and r.err.count("\n") == 1
    assert "plugin 'misfit_plugin' does not fit" in r.err and words in r.err


def test_an_option_without_default_is_required_only_when_its_plugin_runs(tmp_path, monkeypatch, toy_dataset,
                                                                          toy_buffer):
    (tmp_path / "needy_plugin.py").write_text(
        "from dataclasses import dataclass\nfrom ddtoolbox import hookimpl\n"
        "from ddtoolbox.options import Settings, option\n"
        "@dataclass(kw_only=True)\nclass Needs(Settings):\n    needy_path: str = option(help='required')\n"
        "@hookimpl\ndef add_options(command):\n    return Needs if command == 'distill' else None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        plain = _cli_distill(toy_dataset, toy_buffer, tmp_path / "a", "--iterations", "1")
        assert plain.code == 0, plain.err                   # not imported: not in the way
        needy = _cli_distill(toy_dataset, toy_buffer, tmp_path / "b", "--iterations", "1", "--plugin", "needy_plugin")
        assert needy.code == 2 and "--needy-path is required" in needy.err
    finally:
        sys.modules.pop("needy_plugin", None)


def test_python_callers_get_their_thread_count(probe, toy_buffer, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(sys.modules.get(probe) or __import__(probe), "EVENTS", seen)
    before = torch.get_num_threads()
    distill(toy_config(toy_buffer, tmp_path, iterations=1, threads=2), plugins=[probe])
    assert torch.get_num_threads() == before
    import ddtoolbox.runtime as runtime

    calls = []
    real = runtime.cpu_threads

    def spy(n):
        calls.append(n)
        return real(n)

    monkeypatch.setattr(runtime, "cpu_threads", spy)
    distill(toy_config(toy_buffer, tmp_path / "b", iterations=1, threads=3), plugins=[probe])
    assert calls == [3]


def test_dae_on_a_matcher_without_a_buffer_says_what_to_use(toy_dataset, tmp_path):
    r = run_cli("distill", "--matcher", "dm", "--dataset", toy_dataset, "--out", tmp_path, "--ipc", "1", "--width", "8",
                "--iterations", "1", "--device", "cpu", "--quiet", "--plugin", "dae")
    assert r.code == 2 and "--dae-model expert uses a buffer expert" in r.err and "--dae-weights" in r.err
